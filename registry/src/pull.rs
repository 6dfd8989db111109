//! Pulling: manifest, staging layout, verified blobs, import. See the
//! crate docs for what is checked when, and what an interrupted pull
//! leaves.

use std::fs::TryLockError;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::BlobResponse;
use oci_client::manifest::OciDescriptor;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use wisp_images::image::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use wisp_images::limits::{MAX_JSON_BYTES, MAX_UNPACKED_BYTES};
use wisp_images::{oci, Digest, Store, Tag};

use crate::error::{classify, io, io_stream_error, Error, Result};
use crate::{blocking, Registry, RegistryRef};

/// The manifest types a pull asks for.
const MANIFEST_TYPES: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// The largest blob a pull downloads: an image's files are bounded by
/// [`MAX_UNPACKED_BYTES`] and its module by the same, so a larger blob is
/// refused before a byte of it is fetched.
const MAX_BLOB_BYTES: u64 = MAX_UNPACKED_BYTES;

/// How often a pull waiting for another pull of the same image looks.
const LOCK_POLL: Duration = Duration::from_millis(50);

/// What a pull stored.
#[derive(Clone, Debug)]
pub struct Pulled {
    /// The image's manifest digest in the store (what a deploy records).
    pub digest: Digest,
    /// The manifest digest in the registry (of the platform's manifest
    /// when the reference named an index); it differs from `digest` when
    /// a plain OCI image was converted.
    pub source_digest: Digest,
    /// The local tag it got (`HOST/REPOSITORY:TAG`), if it was pulled by
    /// tag.
    pub tag: Option<Tag>,
    /// Whether it was converted from a plain OCI image.
    pub converted: bool,
    /// Whether every blob was already stored (only the manifest was read).
    pub already_stored: bool,
    /// Blobs downloaded by this pull.
    pub fetched_blobs: usize,
    /// Their bytes.
    pub fetched_bytes: u64,
    /// Blobs an earlier, interrupted pull had already verified.
    pub resumed_blobs: usize,
    /// Bytes of partly downloaded blobs an interrupted pull left, which
    /// this one continued (and verified) instead of fetching again.
    pub resumed_bytes: u64,
}

/// What filling a staging directory did.
struct Staged {
    fetched_blobs: usize,
    fetched_bytes: u64,
    resumed_blobs: usize,
    resumed_bytes: u64,
}

/// A manifest as fetched: its bytes and their digest.
struct Fetched {
    bytes: bytes::Bytes,
    digest: Digest,
}

/// The `mediaType` a manifest or index declares, if any.
fn declared_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let head: Head = serde_json::from_slice(bytes).ok()?;
    match head.media_type {
        Some(t) => Some(t),
        // An OCI index may omit its type; it is the one with `manifests`.
        None if head.manifests.is_some() => Some(OCI_INDEX.to_string()),
        None => None,
    }
}

impl Registry {
    /// Fetches the manifest `reference` names, checked against the digest
    /// it pins (or `expected`, a descriptor's digest and size).
    async fn manifest(
        &self,
        client: &oci_client::Client,
        auth: &oci_client::secrets::RegistryAuth,
        reference: &RegistryRef,
        expected: Option<(&Digest, u64)>,
    ) -> Result<Fetched> {
        let registry = reference.registry();
        let (bytes, _) = client
            .pull_manifest_raw(reference.oci(), auth, MANIFEST_TYPES)
            .await
            .map_err(|e| classify(e, registry, &reference.to_string()))?;
        if bytes.len() as u64 > MAX_JSON_BYTES {
            return Err(Error::Unsupported(format!(
                "the manifest of {reference} is {} bytes, more than the {MAX_JSON_BYTES} wisp reads",
                bytes.len()
            )));
        }
        // Hashed here, not taken from the registry's Docker-Content-Digest.
        let digest = Digest::of(&bytes);
        let want = expected
            .map(|(d, size)| (d.clone(), Some(size)))
            .or_else(|| reference.digest().map(|d| (d, None)));
        if let Some((want, size)) = want {
            if want != digest || size.is_some_and(|s| s != bytes.len() as u64) {
                return Err(Error::Mismatch {
                    registry: registry.to_string(),
                    what: format!("the manifest of {reference}"),
                    expected: want.to_string(),
                    actual: format!("{digest} ({} bytes)", bytes.len()),
                });
            }
        }
        Ok(Fetched { bytes, digest })
    }

    /// Pulls the image `reference` names into `store` (see the crate docs).
    pub async fn pull(&self, store: &Store, reference: &RegistryRef) -> Result<Pulled> {
        // A digest is immutable: a stored image by that digest is the one
        // the registry would serve, so the registry is not asked at all.
        if let Some(digest) = reference.digest() {
            if let Some(pulled) = already_stored(store, &digest, None).await? {
                return Ok(pulled);
            }
        }
        let (client, auth) = self.client(reference)?;
        let registry = reference.registry().to_string();
        let top = self.manifest(&client, &auth, reference, None).await?;
        let manifest = match declared_media_type(&top.bytes).as_deref() {
            Some(OCI_INDEX | DOCKER_MANIFEST_LIST) => {
                let index =
                    ImageIndex::from_reader(&top.bytes[..]).map_err(|e| Error::Protocol {
                        registry: registry.clone(),
                        detail: format!("index {} is not an OCI index: {e}", top.digest),
                    })?;
                let chosen = oci::wasm_platform(&index, &top.digest.to_string())?;
                let digest = Digest::from_oci(chosen.digest())?;
                let child = reference.with_digest(&digest);
                self.manifest(&client, &auth, &child, Some((&digest, chosen.size())))
                    .await?
            }
            _ => top,
        };
        let parsed = ImageManifest::from_reader(&manifest.bytes[..]).map_err(|e| {
            Error::Unsupported(format!(
                "{reference}: manifest {} is not an OCI image manifest: {e}",
                manifest.digest
            ))
        })?;
        let tag = reference.local_tag();
        if let Some(pulled) = already_stored(store, &manifest.digest, tag.as_ref()).await? {
            return Ok(pulled);
        }
        let tmp = store.blobs().tmp_dir();
        let staging = tmp.join(format!("pull-{}", manifest.digest.hex()));
        // One pull of a manifest at a time: a second waits, then finds the
        // image stored by the first.
        let _lock = lock(&tmp.join(format!("pull-{}.lock", manifest.digest.hex()))).await?;
        if let Some(pulled) = already_stored(store, &manifest.digest, tag.as_ref()).await? {
            return Ok(pulled);
        }
        let result = self
            .fill_staging(&client, reference, &staging, &manifest, &parsed)
            .await;
        let result = match result {
            Ok(staged) => {
                let (s, dir, t) = (store.clone(), staging.clone(), tag.clone());
                blocking(move || Ok(oci::import(&s, &dir, t.as_ref())?))
                    .await
                    .and_then(|imported| {
                        let one = imported.into_iter().next().ok_or_else(|| {
                            Error::Unsupported(format!("{reference}: the pull imported no image"))
                        })?;
                        Ok(Pulled {
                            digest: one.digest,
                            source_digest: manifest.digest.clone(),
                            tag: one.tag,
                            converted: one.converted,
                            already_stored: false,
                            fetched_blobs: staged.fetched_blobs,
                            fetched_bytes: staged.fetched_bytes,
                            resumed_blobs: staged.resumed_blobs,
                            resumed_bytes: staged.resumed_bytes,
                        })
                    })
            }
            Err(e) => Err(e),
        };
        // What failed for want of a connection is kept to resume from;
        // wrong bytes, or an image the store refused, are not worth a
        // second look.
        let keep = matches!(
            result,
            Err(Error::Unreachable { .. } | Error::Protocol { .. })
        );
        if !keep {
            let _ = tokio::fs::remove_dir_all(&staging).await;
        }
        result
    }

    /// Writes the staging layout of `manifest`: its blobs (verified; those
    /// already there are kept, partial ones resumed), `oci-layout` and an
    /// `index.json` naming it.
    async fn fill_staging(
        &self,
        client: &oci_client::Client,
        reference: &RegistryRef,
        staging: &Path,
        manifest: &Fetched,
        parsed: &ImageManifest,
    ) -> Result<Staged> {
        let blobs = staging.join("blobs/sha256");
        tokio::fs::create_dir_all(&blobs)
            .await
            .map_err(io(format!("creating {}", blobs.display())))?;
        let (mut fetched, mut bytes, mut resumed, mut resumed_bytes) = (0, 0, 0, 0);
        for d in std::iter::once(parsed.config()).chain(parsed.layers()) {
            let digest = Digest::from_oci(d.digest())?;
            let dest = blobs.join(digest.hex());
            if tokio::fs::try_exists(&dest).await.unwrap_or(false) {
                resumed += 1;
                continue;
            }
            let got = fetch_blob(client, reference, d, &digest, &dest).await?;
            bytes += got.fetched;
            resumed_bytes += got.resumed;
            fetched += 1;
        }
        let media_type =
            declared_media_type(&manifest.bytes).unwrap_or_else(|| OCI_MANIFEST.into());
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": media_type,
                "digest": manifest.digest.to_string(),
                "size": manifest.bytes.len(),
            }],
        });
        for (name, content) in [
            (blobs.join(manifest.digest.hex()), manifest.bytes.to_vec()),
            (
                staging.join("oci-layout"),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            (staging.join("index.json"), index.to_string().into_bytes()),
        ] {
            tokio::fs::write(&name, content)
                .await
                .map_err(io(format!("writing {}", name.display())))?;
        }
        Ok(Staged {
            fetched_blobs: fetched,
            fetched_bytes: bytes,
            resumed_blobs: resumed,
            resumed_bytes,
        })
    }
}

/// The image `digest` if the store holds it and every blob of it (tagging
/// it `tag`): then nothing needs fetching.
async fn already_stored(
    store: &Store,
    digest: &Digest,
    tag: Option<&Tag>,
) -> Result<Option<Pulled>> {
    let (s, d, t) = (store.clone(), digest.clone(), tag.cloned());
    blocking(move || {
        let Ok(image) = s.image(&d) else {
            return Ok(None);
        };
        if !image.blob_digests().iter().all(|b| s.blobs().contains(b)) {
            return Ok(None);
        }
        if let Some(t) = &t {
            s.tag(&d, t)?;
        }
        Ok(Some(Pulled {
            digest: d.clone(),
            source_digest: d,
            tag: t,
            converted: false,
            already_stored: true,
            fetched_blobs: 0,
            fetched_bytes: 0,
            resumed_blobs: 0,
            resumed_bytes: 0,
        }))
    })
    .await
}

/// Takes the lock file `path` (created if needed), waiting for another
/// holder; released when the file is dropped, or its holder dies.
async fn lock(path: &Path) -> Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io(format!("opening {}", path.display())))?;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) => tokio::time::sleep(LOCK_POLL).await,
            Err(TryLockError::Error(e)) => {
                return Err(io(format!("locking {}", path.display()))(e))
            }
        }
    }
}

/// What was downloaded of one blob: the bytes fetched now, and those an
/// interrupted pull had left that were used.
struct BlobFetch {
    fetched: u64,
    resumed: u64,
}

/// Downloads blob `d` (`digest`) to `dest`: streamed into
/// `.partial-<hex>` beside it, hashed and counted as it comes, and renamed
/// to `dest` only if both match. A partial file an interrupted pull left
/// is resumed with an HTTP range request (its bytes hashed first); if the
/// registry ignores the range, or the whole does not match, the blob is
/// fetched again from its start once before wrong bytes are an error.
async fn fetch_blob(
    client: &oci_client::Client,
    reference: &RegistryRef,
    d: &Descriptor,
    digest: &Digest,
    dest: &Path,
) -> Result<BlobFetch> {
    let what = format!("blob {digest}");
    let expected = d.size();
    if expected > MAX_BLOB_BYTES {
        return Err(Error::Unsupported(format!(
            "{reference}: {what} is {expected} bytes, more than the {MAX_BLOB_BYTES} an image may hold"
        )));
    }
    let dir: PathBuf = dest.parent().map_or_else(PathBuf::new, Path::to_path_buf);
    // The pull's lock makes this file ours alone.
    let partial = dir.join(format!(".partial-{}", digest.hex()));
    let first = download(client, reference, d, digest, &partial, true).await;
    let got = match first {
        Err(Error::Mismatch { .. }) if first_was_resumed(&partial) => {
            download(client, reference, d, digest, &partial, false).await?
        }
        other => other?,
    };
    tokio::fs::rename(&partial, dest).await.map_err(io(format!(
        "renaming {} to {}",
        partial.display(),
        dest.display()
    )))?;
    Ok(got)
}

/// Whether a mismatch may come from bytes an earlier pull left (then the
/// file is still there: [`download`] removes it only when it started from
/// nothing).
fn first_was_resumed(partial: &Path) -> bool {
    partial.exists()
}

/// One download of blob `d` into `partial`, resuming what it holds if
/// `resume`; see [`fetch_blob`]. On a mismatch a partial file that held
/// nothing before is removed; one that did is left for the caller to retry
/// from its start.
async fn download(
    client: &oci_client::Client,
    reference: &RegistryRef,
    d: &Descriptor,
    digest: &Digest,
    partial: &Path,
    resume: bool,
) -> Result<BlobFetch> {
    let registry = reference.registry();
    let what = format!("blob {digest}");
    let expected = d.size();
    let layer = OciDescriptor {
        media_type: d.media_type().to_string(),
        digest: digest.to_string(),
        size: i64::try_from(expected).unwrap_or(i64::MAX),
        ..OciDescriptor::default()
    };
    let held = match tokio::fs::metadata(partial).await {
        Ok(m) if resume && m.len() < expected => m.len(),
        _ => 0,
    };
    let (mut hasher, mut size) = if held > 0 {
        let path = partial.to_path_buf();
        blocking(move || hash_prefix(&path, held)).await?
    } else {
        (Sha256::new(), 0)
    };
    let mut stream = if size > 0 {
        match client
            .pull_blob_stream_partial(reference.oci(), &layer, size, None)
            .await
            .map_err(|e| classify(e, registry, &what))?
        {
            BlobResponse::Partial(stream) => stream,
            // The registry sent it whole: start again.
            BlobResponse::Full(stream) => {
                (hasher, size) = (Sha256::new(), 0);
                stream
            }
        }
    } else {
        client
            .pull_blob_stream(reference.oci(), &layer)
            .await
            .map_err(|e| classify(e, registry, &what))?
    };
    let resumed = size;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(partial)
        .map_err(io(format!("opening {}", partial.display())))?;
    // Cut to what was hashed: anything past it (a larger leftover, or a
    // restart) is fetched again.
    file.set_len(size)
        .map_err(io(format!("truncating {}", partial.display())))?;
    let mut out = tokio::fs::File::from_std(file);
    out.seek(std::io::SeekFrom::Start(size))
        .await
        .map_err(io(format!("seeking in {}", partial.display())))?;
    let mut out = tokio::io::BufWriter::new(out);
    let mismatch = |actual: String| Error::Mismatch {
        registry: registry.to_string(),
        what: what.clone(),
        expected: format!("{digest} ({expected} bytes)"),
        actual,
    };
    let result = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| io_stream_error(e, registry, &what))?;
            size += chunk.len() as u64;
            if size > expected {
                return Err(mismatch(format!("more than {expected} bytes")));
            }
            hasher.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(io(format!("writing {}", partial.display())))?;
        }
        out.flush()
            .await
            .map_err(io(format!("writing {}", partial.display())))?;
        let actual = Digest::from_hex(&format!("{:x}", hasher.clone().finalize()))?;
        if actual != *digest || size != expected {
            return Err(mismatch(format!("{actual} ({size} bytes)")));
        }
        out.get_ref()
            .sync_all()
            .await
            .map_err(io(format!("syncing {}", partial.display())))
    }
    .await;
    match result {
        Ok(()) => Ok(BlobFetch {
            fetched: size - resumed,
            resumed,
        }),
        Err(e) => {
            // Wrong bytes from a fresh start are the registry's: nothing of
            // them is kept. A lost connection keeps what came, to resume.
            if matches!(e, Error::Mismatch { .. }) && resumed == 0 {
                let _ = tokio::fs::remove_file(partial).await;
            }
            Err(e)
        }
    }
}

/// The SHA-256 state and length of the first `len` bytes of `path`.
fn hash_prefix(path: &Path, len: u64) -> Result<(Sha256, u64)> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(io(format!("opening {}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut reader = std::io::BufReader::new(file).take(len);
    let mut buf = vec![0u8; 64 << 10];
    let mut read = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(io(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        read += n as u64;
    }
    Ok((hasher, read))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_and_indexes_are_told_apart() {
        assert_eq!(
            declared_media_type(br#"{"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#)
                .as_deref(),
            Some(OCI_MANIFEST)
        );
        assert_eq!(
            declared_media_type(br#"{"schemaVersion":2,"manifests":[]}"#).as_deref(),
            Some(OCI_INDEX)
        );
        assert_eq!(
            declared_media_type(br#"{"schemaVersion":2,"layers":[]}"#),
            None
        );
        assert_eq!(declared_media_type(b"not json"), None);
    }
}
