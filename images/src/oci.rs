//! OCI image layout import and export, as a directory or its tar form.
//!
//! Export writes a standard layout (`oci-layout`, `index.json` with the
//! tag in `org.opencontainers.image.ref.name`, `blobs/sha256/…`) holding
//! the image's blobs byte for byte, so digests survive the round trip. The
//! destination appears atomically: a directory is filled beside it and
//! renamed, a tar written to a temporary file and renamed.
//!
//! Import accepts
//! - wasm artifacts following the CNCF convention (config
//!   `application/vnd.wasm.config.v0+json`, a layer
//!   `application/wasm` or `application/vnd.wasm.content.layer.v1+wasm`),
//!   plus optional tar file layers: stored as they are, digests kept;
//! - plain OCI (or Docker) images whose tar layers hold a `.wasm` file and
//!   other files: the module is the file the config's Entrypoint or Cmd
//!   names, else the only `.wasm` file; the rest become one file layer of
//!   a new wasm image.
//!
//! Every blob read from the source is checked against its descriptor, and
//! every file layer as [`crate::layer`] describes, within the bounds of
//! [`crate::limits`] (a wasm artifact's layers once stored, as the daemon
//! will read them; a plain image's as they are unpacked). Every source file
//! must be a regular file, opened without blocking. Nothing becomes
//! visible until the whole import succeeded: on failure the blobs it added
//! are removed and the index is untouched.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageIndexBuilder, ImageManifest, MediaType,
    ANNOTATION_REF_NAME,
};

use crate::blobs::{sync_dir, Access};
use crate::digest::{Digest, HashingReader};
use crate::error::{Error, IoContext, Result};
use crate::fsx::{is_not_found, open_regular, read_regular};
use crate::image::{
    check_module, check_wasm_manifest, is_wasm_layer, tar_layer_gzip, write_image, Image,
    DOCKER_CONFIG, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST,
    WASM_CONFIG,
};
use crate::layer::{normalize, stream_problem, FileKind, FileTree, LayerStream, Unpacker};
use crate::limits::{Limits, MAX_ENTRIES, MAX_JSON_BYTES};
use crate::reference::{Reference, Tag};
use crate::store::Store;

/// What an export wrote.
#[derive(Clone, Debug)]
pub struct Exported {
    /// The image's manifest digest.
    pub digest: Digest,
    /// The tag written as its `ref.name`, if any.
    pub tag: Option<Tag>,
    /// Blobs written.
    pub blobs: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// One image an import stored.
#[derive(Clone, Debug)]
pub struct Imported {
    /// Its manifest digest in the store.
    pub digest: Digest,
    /// Its tag, if it got one.
    pub tag: Option<Tag>,
    /// The manifest digest in the source (differs from `digest` when a
    /// plain OCI image was converted).
    pub source_digest: Digest,
    /// Whether it was converted from a plain OCI image.
    pub converted: bool,
}

/// Whether `path` names the tar form (by its extension).
fn is_tar_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("tar"))
}

fn layout_index(tag: Option<&Tag>, image: &Image) -> Vec<u8> {
    let mut d = image.descriptor();
    if let Some(tag) = tag {
        d.set_annotations(Some(
            [(ANNOTATION_REF_NAME.to_string(), tag.to_string())].into(),
        ));
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![d])
        .build()
        .expect("a complete index");
    serde_json::to_vec_pretty(&index).expect("serialisable")
}

const LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Exports the image `reference` names to `dest`: a directory, or the tar
/// form if `dest` ends in `.tar`. A directory destination must not exist
/// or be empty; a tar file is replaced.
pub fn export(store: &Store, reference: &str, dest: &Path) -> Result<Exported> {
    let digest = store.resolve(reference)?;
    let image = store.image(&digest)?;
    let tag = match Reference::parse(reference)? {
        Reference::Tag(t) if store.index()?.iter().any(|e| e.tag.as_ref() == Some(&t)) => Some(t),
        _ => {
            let tags: Vec<Tag> = store
                .index()?
                .into_iter()
                .filter(|e| e.digest == digest)
                .filter_map(|e| e.tag)
                .collect();
            (tags.len() == 1).then(|| tags[0].clone())
        }
    };
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let index = layout_index(tag.as_ref(), &image);
    let mut out = Exported {
        digest: digest.clone(),
        tag,
        blobs: 0,
        bytes: 0,
    };
    if is_tar_path(dest) {
        if dest.is_dir() {
            return Err(Error::Exists(dest.to_path_buf()));
        }
        let tmp = tempfile::Builder::new()
            .prefix(".wisp-export-")
            .tempfile_in(&parent)
            .ctx(|| format!("creating a temporary file in {}", parent.display()))?;
        let mut tar = tar::Builder::new(BufWriter::new(tmp));
        let file_header = |size: u64| {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_size(size);
            h
        };
        let dir_header = || {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_mtime(0);
            h.set_size(0);
            h
        };
        let write = |e: io::Error| Error::Io {
            context: format!("writing {}", dest.display()),
            source: e,
        };
        tar.append_data(&mut file_header(LAYOUT.len() as u64), "oci-layout", LAYOUT)
            .map_err(write)?;
        tar.append_data(
            &mut file_header(index.len() as u64),
            "index.json",
            &index[..],
        )
        .map_err(write)?;
        for dir in ["blobs", "blobs/sha256"] {
            tar.append_data(&mut dir_header(), dir, io::empty())
                .map_err(write)?;
        }
        for d in image.blob_digests() {
            let path = store.blobs().path(&d);
            let file = match open_regular(&path) {
                Ok(f) => f,
                Err(e) if is_not_found(&e) => return Err(Error::MissingBlob(d.clone())),
                Err(e) => return Err(e),
            };
            let size = file
                .metadata()
                .ctx(|| format!("reading {}", path.display()))?
                .len();
            let mut reader = HashingReader::new(BufReader::new(file));
            tar.append_data(
                &mut file_header(size),
                format!("blobs/sha256/{}", d.hex()),
                &mut reader,
            )
            .map_err(write)?;
            if reader.finish().0 != d {
                store.blobs().quarantine(&d);
                return Err(Error::Corrupt { digest: d });
            }
            store.blobs().touch(&d);
            out.blobs += 1;
            out.bytes += size;
        }
        let tmp = tar
            .into_inner()
            .map_err(write)?
            .into_inner()
            .map_err(|e| write(e.into_error()))?;
        tmp.as_file().sync_all().map_err(write)?;
        tmp.persist(dest).map_err(|e| write(e.error))?;
        sync_dir(&parent);
    } else {
        if dest.exists()
            && !(dest.is_dir()
                && fs::read_dir(dest)
                    .ctx(|| format!("reading {}", dest.display()))?
                    .next()
                    .is_none())
        {
            return Err(Error::Exists(dest.to_path_buf()));
        }
        let tmp = tempfile::Builder::new()
            .prefix(".wisp-export-")
            .tempdir_in(&parent)
            .ctx(|| format!("creating a temporary directory in {}", parent.display()))?;
        let blobs_dir = tmp.path().join("blobs/sha256");
        fs::create_dir_all(&blobs_dir).ctx(|| format!("creating {}", blobs_dir.display()))?;
        let put = |name: &Path, bytes: &[u8]| -> Result<()> {
            let mut f = File::create(name).ctx(|| format!("creating {}", name.display()))?;
            f.write_all(bytes)
                .and_then(|()| f.sync_all())
                .ctx(|| format!("writing {}", name.display()))
        };
        put(&tmp.path().join("oci-layout"), LAYOUT)?;
        put(&tmp.path().join("index.json"), &index)?;
        for d in image.blob_digests() {
            let path = blobs_dir.join(d.hex());
            let mut f =
                BufWriter::new(File::create(&path).ctx(|| format!("creating {}", path.display()))?);
            out.bytes += store.blobs().stream(&d, Access::Use, &mut f)?;
            f.into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| f.sync_all())
                .ctx(|| format!("writing {}", path.display()))?;
            out.blobs += 1;
        }
        sync_dir(&blobs_dir);
        let kept = tmp.keep();
        if let Err(e) = fs::rename(&kept, dest) {
            let _ = fs::remove_dir_all(&kept);
            return Err(e).ctx(|| format!("moving the export to {}", dest.display()));
        }
        sync_dir(&parent);
    }
    Ok(out)
}

/// An OCI layout being imported (a directory, or a tar unpacked into one).
struct Layout {
    root: PathBuf,
    _unpacked: Option<tempfile::TempDir>,
}

impl Layout {
    fn open(store: &Store, src: &Path) -> Result<Layout> {
        let meta = fs::metadata(src).ctx(|| format!("reading {}", src.display()))?;
        let layout = if meta.is_dir() {
            Layout {
                root: src.to_path_buf(),
                _unpacked: None,
            }
        } else {
            let dir = tempfile::Builder::new()
                .prefix("import-")
                .tempdir_in(store.blobs().tmp_dir())
                .ctx(|| "creating a temporary directory")?;
            unpack_layout_tar(src, dir.path())?;
            Layout {
                root: dir.path().to_path_buf(),
                _unpacked: Some(dir),
            }
        };
        let marker = layout.root.join("oci-layout");
        let text = read_regular(&marker, MAX_JSON_BYTES).map_err(|e| {
            if is_not_found(&e) {
                Error::InvalidImage(format!(
                    "{} is not an OCI image layout (it has no oci-layout file)",
                    src.display()
                ))
            } else {
                e
            }
        })?;
        let version = serde_json::from_slice::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["imageLayoutVersion"].as_str().map(str::to_string));
        if version.is_none() {
            return Err(Error::InvalidImage(format!(
                "{}: oci-layout has no imageLayoutVersion",
                src.display()
            )));
        }
        Ok(layout)
    }

    fn blob_path(&self, d: &Descriptor) -> Result<PathBuf> {
        let digest = Digest::from_oci(d.digest())?;
        Ok(self.root.join("blobs/sha256").join(digest.hex()))
    }

    /// Opens a blob: a regular file, opened without blocking.
    fn open_blob(&self, d: &Descriptor) -> Result<File> {
        let digest = Digest::from_oci(d.digest())?;
        open_regular(&self.blob_path(d)?).map_err(|e| {
            if is_not_found(&e) {
                Error::InvalidImage(format!("the layout lacks blob {digest}"))
            } else {
                e
            }
        })
    }

    /// Gives a blob's content to `read` as a stream, then checks it against
    /// its descriptor (what `read` left unread is hashed too); a mismatch
    /// wins over what `read` returned, which read the wrong bytes.
    fn read_with<T>(
        &self,
        d: &Descriptor,
        read: impl FnOnce(&mut dyn Read) -> Result<T>,
    ) -> Result<T> {
        let digest = Digest::from_oci(d.digest())?;
        let file = self.open_blob(d)?;
        let mut r = HashingReader::new(BufReader::new(file));
        let result = read(&mut r);
        io::copy(&mut r, &mut io::sink()).ctx(|| format!("reading layout blob {digest}"))?;
        let (actual, size) = r.finish();
        if actual != digest || size != d.size() {
            return Err(Error::Mismatch {
                what: format!("layout blob {digest}"),
                expected: format!("{digest} ({} bytes)", d.size()),
                actual: format!("{actual} ({size} bytes)"),
            });
        }
        result
    }

    /// Reads a JSON blob (an index, a manifest, a config) whole, checking
    /// it against its descriptor; over [`MAX_JSON_BYTES`] is refused
    /// before it is read.
    fn read(&self, d: &Descriptor) -> Result<Vec<u8>> {
        if d.size() > MAX_JSON_BYTES {
            return Err(Error::InvalidImage(format!(
                "blob {} is {} bytes, more than the {MAX_JSON_BYTES} wisp reads of a manifest, index or config",
                d.digest(),
                d.size()
            )));
        }
        self.read_with(d, |r| {
            let mut bytes = Vec::new();
            r.take(MAX_JSON_BYTES)
                .read_to_end(&mut bytes)
                .ctx(|| format!("reading layout blob {}", d.digest()))?;
            Ok(bytes)
        })
    }

    fn index(&self) -> Result<ImageIndex> {
        let path = self.root.join("index.json");
        let bytes = read_regular(&path, MAX_JSON_BYTES).map_err(|e| {
            if is_not_found(&e) {
                Error::InvalidImage("the OCI layout has no index.json".into())
            } else {
                e
            }
        })?;
        ImageIndex::from_reader(&bytes[..])
            .map_err(|e| Error::InvalidImage(format!("index.json is not an OCI index: {e}")))
    }
}

/// Unpacks the tar form of a layout (gzip allowed) into `dir`, refusing
/// entries that would land outside it, more than [`MAX_ENTRIES`] entries,
/// and a gzip stream expanding past [`Limits::max_expansion_ratio`] (its
/// blobs are checked later, as those of a layout directory).
fn unpack_layout_tar(src: &Path, dir: &Path) -> Result<()> {
    let mut file = open_regular(src)?;
    let mut magic = [0u8; 2];
    let gzip = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    file.rewind().ctx(|| format!("reading {}", src.display()))?;
    let reader = LayerStream::new(BufReader::new(file), gzip, u64::MAX, Limits::DEFAULT);
    let bad = |e: io::Error| {
        Error::InvalidImage(format!(
            "{} is neither an OCI layout directory nor a readable tar of one: {}",
            src.display(),
            stream_problem(e, None)
        ))
    };
    let mut archive = tar::Archive::new(reader);
    let mut entries = 0u64;
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        entries += 1;
        if entries > MAX_ENTRIES {
            return Err(Error::InvalidImage(format!(
                "{} holds more than {MAX_ENTRIES} entries; an OCI layout holds a few blobs",
                src.display()
            )));
        }
        let raw = entry.path().map_err(bad)?.into_owned();
        let Some(rel) = normalize(&raw).map_err(|problem| {
            Error::InvalidImage(format!(
                "{}: entry `{}` {problem}",
                src.display(),
                raw.display()
            ))
        })?
        else {
            continue;
        };
        let path = dir.join(&rel);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir_all(&path).ctx(|| format!("creating {}", path.display()))?
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(p) = path.parent() {
                    fs::create_dir_all(p).ctx(|| format!("creating {}", p.display()))?;
                }
                let mut f = File::create(&path).ctx(|| format!("creating {}", path.display()))?;
                io::copy(&mut entry, &mut f).map_err(bad)?;
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            other => {
                return Err(Error::InvalidImage(format!(
                "{}: entry `{}` is a {other:?}; an OCI layout tar holds only files and directories",
                src.display(),
                raw.display()
            )))
            }
        }
    }
    Ok(())
}

/// The manifests an index names, with their `ref.name`: manifests as they
/// are, nested indexes narrowed to their wasm platform (or their only
/// manifest).
fn targets(layout: &Layout, index: &ImageIndex) -> Result<Vec<(Descriptor, Option<String>)>> {
    let mut out = Vec::new();
    for d in index.manifests() {
        let name = d
            .annotations()
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_REF_NAME))
            .cloned();
        match d.media_type().as_ref() {
            OCI_MANIFEST | DOCKER_MANIFEST => out.push((d.clone(), name)),
            OCI_INDEX | DOCKER_MANIFEST_LIST => {
                let nested = ImageIndex::from_reader(&layout.read(d)?[..]).map_err(|e| {
                    Error::InvalidImage(format!("index {} is not an OCI index: {e}", d.digest()))
                })?;
                let what = d.digest().to_string();
                out.push((wasm_platform(&nested, &what)?.clone(), name));
            }
            other => {
                return Err(Error::InvalidImage(format!(
                    "index.json lists {} of media type {other}, which is not an image manifest",
                    d.digest()
                )))
            }
        }
    }
    Ok(out)
}

/// The manifest of `index` (named `what` in errors) that wisp runs: its
/// only `wasm`/`wasi*` platform, else its only manifest. Pulls choose from
/// a registry's index as imports do from a layout's.
pub fn wasm_platform<'a>(index: &'a ImageIndex, what: &str) -> Result<&'a Descriptor> {
    let wasm: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|m| {
            m.platform().as_ref().is_some_and(|p| {
                p.architecture().to_string() == "wasm" || p.os().to_string().starts_with("wasi")
            })
        })
        .collect();
    match (wasm.as_slice(), index.manifests().as_slice()) {
        ([one], _) => Ok(one),
        ([], [one]) => Ok(one),
        _ => Err(Error::InvalidImage(format!(
            "index {what} lists {} platforms and no single wasm one",
            index.manifests().len()
        ))),
    }
}

/// Picks the module of a plain image: what Entrypoint or Cmd names, else
/// the only `.wasm` file.
fn choose_module(tree: &FileTree, config: Option<&ImageConfiguration>) -> Result<PathBuf> {
    let cfg = config.and_then(|c| c.config().as_ref());
    let workdir = cfg
        .and_then(|c| c.working_dir().clone())
        .unwrap_or_default();
    let hint = cfg
        .into_iter()
        .flat_map(|c| {
            c.entrypoint()
                .iter()
                .flatten()
                .chain(c.cmd().iter().flatten())
        })
        .find(|a| a.ends_with(".wasm"));
    if let Some(hint) = hint {
        let full = if hint.starts_with('/') {
            PathBuf::from(hint.trim_start_matches('/'))
        } else {
            Path::new(workdir.trim_start_matches('/')).join(hint)
        };
        let path = normalize(&full)
            .map_err(|problem| {
                Error::InvalidImage(format!(
                    "the image config's Entrypoint/Cmd `{hint}` {problem}"
                ))
            })?
            .unwrap_or_default();
        return match tree.get(&path) {
            Some(FileKind::File(..)) => Ok(path),
            _ => Err(Error::InvalidImage(format!(
                "the image config's Entrypoint/Cmd names `{hint}`, which is not a file in the image"
            ))),
        };
    }
    let found = tree.files_ending_with(".wasm");
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::InvalidImage(
            "the image has no .wasm file (and its config names none)".into(),
        )),
        many => Err(Error::InvalidImage(format!(
            "the image has several .wasm files ({}) and its config's Entrypoint/Cmd names none of them",
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The tag an imported image gets: the one asked for, else its `ref.name`
/// (a bare tag is prefixed with the source's file stem).
fn tag_for(asked: Option<&Tag>, ref_name: Option<&str>, src: &Path) -> Option<Tag> {
    if let Some(t) = asked {
        return Some(t.clone());
    }
    let name = ref_name?;
    if name.contains(':') || name.contains('/') {
        return Tag::parse(name).ok();
    }
    let stem = src.file_stem()?.to_str()?.to_ascii_lowercase();
    Tag::parse(&format!("{stem}:{name}")).ok()
}

/// Imports the OCI layout at `src` (a directory, or its tar form, gzip
/// allowed). With `tag`, the layout must hold exactly one image, which gets
/// that tag; without, each image keeps the tag its `ref.name` gives.
pub fn import(store: &Store, src: &Path, tag: Option<&Tag>) -> Result<Vec<Imported>> {
    let layout = Layout::open(store, src)?;
    let index = layout.index()?;
    let targets = targets(&layout, &index)?;
    if targets.is_empty() {
        return Err(Error::InvalidImage(format!(
            "{} holds no image",
            src.display()
        )));
    }
    if tag.is_some() && targets.len() != 1 {
        return Err(Error::InvalidImage(format!(
            "{} holds {} images; a tag can name only one",
            src.display(),
            targets.len()
        )));
    }
    let _lock = store.lock()?;
    let before: std::collections::HashSet<Digest> = store
        .blobs()
        .list()?
        .into_iter()
        .map(|b| b.digest)
        .collect();
    let result = (|| {
        let mut stored = Vec::new();
        for (desc, ref_name) in &targets {
            let source_digest = Digest::from_oci(desc.digest())?;
            let bytes = layout.read(desc)?;
            let manifest = ImageManifest::from_reader(&bytes[..]).map_err(|e| {
                Error::InvalidImage(format!(
                    "manifest {source_digest} is not an image manifest: {e}"
                ))
            })?;
            let config_type = manifest.config().media_type().to_string();
            let artifact_type = manifest.artifact_type().as_ref().map(|t| t.to_string());
            let wasm = config_type == WASM_CONFIG
                || artifact_type.as_deref() == Some(WASM_CONFIG)
                || manifest
                    .layers()
                    .iter()
                    .any(|l| is_wasm_layer(l.media_type().as_ref()));
            let (digest, size, converted) = if wasm {
                check_wasm_manifest(&manifest, &source_digest.to_string())?;
                for d in std::iter::once(manifest.config()).chain(manifest.layers()) {
                    let digest = Digest::from_oci(d.digest())?;
                    let mut f = layout.open_blob(d)?;
                    store
                        .blobs()
                        .put_reader(&mut BufReader::new(&mut f), Some((&digest, d.size())))?;
                    if is_wasm_layer(d.media_type().as_ref()) {
                        store.blobs().read_with(&digest, Access::Look, |r| {
                            let mut head = Vec::new();
                            r.take(8)
                                .read_to_end(&mut head)
                                .ctx(|| format!("reading blob {digest}"))?;
                            check_module(&head)
                        })?;
                    }
                }
                let (digest, size) = store.blobs().put(&bytes)?;
                // The file layers are stored as they are, so they are
                // checked as the daemon will read them (streamed from the
                // store, within the bounds) before the image is recorded.
                Image::load(store.blobs(), &digest, Access::Look)?.check_files()?;
                (digest, size, false)
            } else if config_type == OCI_CONFIG || config_type == DOCKER_CONFIG {
                let config = ImageConfiguration::from_reader(&layout.read(manifest.config())?[..])
                    .map_err(|e| {
                        Error::InvalidImage(format!("the image config is not an OCI config: {e}"))
                    })?;
                let mut unpacker = Unpacker::new(Limits::DEFAULT);
                for layer in manifest.layers() {
                    let ty = layer.media_type().to_string();
                    let gzip = tar_layer_gzip(&ty).ok_or_else(|| {
                        Error::InvalidImage(format!(
                            "layer {} has media type {ty}; only tar and tar+gzip layers can be imported",
                            layer.digest()
                        ))
                    })?;
                    let digest = Digest::from_oci(layer.digest())?;
                    layout.read_with(layer, |r| unpacker.apply(&digest, r, gzip))?;
                }
                let mut tree = unpacker.into_tree();
                let path = choose_module(&tree, Some(&config))?;
                let Some(FileKind::File(module, _)) = tree.remove_tree(&path) else {
                    unreachable!("choose_module returns a file");
                };
                let (digest, size) = write_image(store.blobs(), &module, &tree)?;
                (digest, size, true)
            } else {
                return Err(Error::InvalidImage(format!(
                    "manifest {source_digest} is neither a wasm artifact (config {WASM_CONFIG} or a wasm layer) nor an OCI image (config {OCI_CONFIG}): its config is {config_type}"
                )));
            };
            let tag = tag_for(tag, ref_name.as_deref(), src);
            store.record(&digest, size, tag.as_ref())?;
            stored.push(Imported {
                digest,
                tag,
                source_digest,
                converted,
            });
        }
        Ok(stored)
    })();
    if result.is_err() {
        for blob in store.blobs().list().unwrap_or_default() {
            if !before.contains(&blob.digest) {
                let _ = store.blobs().remove(&blob.digest);
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{TAR_GZIP_LAYER, TAR_LAYER, WASM_LAYER_CNCF};

    const MODULE: &[u8] = b"\0asm\x01\0\0\0";

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        (dir, store)
    }

    fn tag(s: &str) -> Tag {
        Tag::parse(s).unwrap()
    }

    #[test]
    fn export_then_import_keeps_digests_in_both_forms() {
        let (dir, a) = store();
        let files = dir.path().join("files");
        fs::create_dir_all(files.join("etc")).unwrap();
        fs::write(files.join("etc/app.toml"), b"x = 1").unwrap();
        let image = a.build(MODULE, Some(&files), Some(&tag("app:1"))).unwrap();
        for dest in ["out", "out.tar"] {
            let dest = dir.path().join(dest);
            let exported = export(&a, "app:1", &dest).unwrap();
            assert_eq!(exported.digest, *image.digest());
            assert_eq!(exported.blobs, 4);
            let b = Store::open(
                &dir.path()
                    .join(format!("b-{}", dest.display().to_string().len())),
            )
            .unwrap();
            let imported = import(&b, &dest, None).unwrap();
            assert_eq!(imported.len(), 1);
            assert_eq!(imported[0].digest, *image.digest());
            assert_eq!(imported[0].tag, Some(tag("app:1")));
            assert!(!imported[0].converted);
            let back = b.open_image("app:1").unwrap();
            assert_eq!(back.blob_digests(), image.blob_digests());
            assert_eq!(back.files().unwrap(), image.files().unwrap());
            // A second export to the same directory is refused.
            if !is_tar_path(&dest) {
                assert!(matches!(export(&a, "app:1", &dest), Err(Error::Exists(_))));
            }
        }
        assert_eq!(
            fs::read_dir(dir.path())
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(".wisp"))
                .count(),
            0,
            "no temporary files left"
        );
    }

    #[test]
    fn a_corrupt_blob_is_not_exported() {
        let (dir, a) = store();
        let image = a.build(MODULE, None, Some(&tag("app:1"))).unwrap();
        fs::write(a.blobs().path(&image.module_digest()), b"\0asm\x01\0\0\x02").unwrap();
        for dest in ["x", "x.tar"] {
            let err = export(&a, "app:1", &dir.path().join(dest)).unwrap_err();
            assert!(
                matches!(err, Error::Corrupt { .. } | Error::MissingBlob(_)),
                "{err}"
            );
            assert!(!dir.path().join(dest).exists());
        }
    }

    #[test]
    fn a_failed_import_leaves_nothing() {
        let (dir, a) = store();
        a.build(MODULE, None, Some(&tag("app:1"))).unwrap();
        let out = dir.path().join("out");
        export(&a, "app:1", &out).unwrap();
        // Damage the module blob in the layout.
        let blobs: Vec<_> = fs::read_dir(out.join("blobs/sha256"))
            .unwrap()
            .flatten()
            .collect();
        for b in &blobs {
            if fs::read(b.path()).unwrap() == MODULE {
                fs::write(b.path(), b"\0asm\x01\0\0\x09").unwrap();
            }
        }
        let (_d2, b) = store();
        let err = import(&b, &out, None).unwrap_err();
        assert!(matches!(err, Error::Mismatch { .. }), "{err}");
        assert!(b.blobs().list().unwrap().is_empty());
        assert!(b.index().unwrap().is_empty());
        let err = import(&b, &dir.path().join("nowhere"), None).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        let err = import(&b, dir.path(), None).unwrap_err();
        assert!(err.to_string().contains("not an OCI image layout"), "{err}");
    }

    #[test]
    fn modules_of_plain_images_are_found() {
        let mut tree = FileTree::new();
        tree.insert(
            "app/main.wasm".into(),
            FileKind::File(MODULE.to_vec(), 0o644),
        );
        assert_eq!(
            choose_module(&tree, None).unwrap(),
            Path::new("app/main.wasm")
        );
        tree.insert(
            "lib/other.wasm".into(),
            FileKind::File(MODULE.to_vec(), 0o644),
        );
        let err = choose_module(&tree, None).unwrap_err();
        assert!(err.to_string().contains("several .wasm"), "{err}");
        let config: ImageConfiguration = serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": ["main.wasm"], "WorkingDir": "/app"},
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .unwrap();
        assert_eq!(
            choose_module(&tree, Some(&config)).unwrap(),
            Path::new("app/main.wasm")
        );
    }

    #[test]
    fn tags_come_from_ref_names() {
        let src = Path::new("/x/hello.tar");
        assert_eq!(tag_for(None, Some("a:b"), src), Some(tag("a:b")));
        assert_eq!(tag_for(None, Some("v1"), src), Some(tag("hello:v1")));
        assert_eq!(
            tag_for(Some(&tag("c:d")), Some("a:b"), src),
            Some(tag("c:d"))
        );
        assert_eq!(tag_for(None, None, src), None);
        assert_eq!(tag_for(None, Some("Not Valid:"), src), None);
    }

    /// A layout at `root` holding one wasm image whose file layer is
    /// `layer` (a tar, gzipped if `gzip`).
    fn layout_with_layer(root: &Path, layer: &[u8], gzip: bool) -> Digest {
        let blobs = root.join("blobs/sha256");
        fs::create_dir_all(&blobs).unwrap();
        fs::write(root.join("oci-layout"), LAYOUT).unwrap();
        let put = |bytes: &[u8]| {
            let d = Digest::of(bytes);
            fs::write(blobs.join(d.hex()), bytes).unwrap();
            serde_json::json!({ "digest": d.to_string(), "size": bytes.len() })
        };
        let mut module = put(MODULE);
        module["mediaType"] = WASM_LAYER_CNCF.into();
        let mut files = put(layer);
        files["mediaType"] = if gzip { TAR_GZIP_LAYER } else { TAR_LAYER }.into();
        let mut config = put(br#"{"architecture":"wasm","os":"wasip1"}"#);
        config["mediaType"] = WASM_CONFIG.into();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": config, "layers": [module, files]
        }))
        .unwrap();
        let mut desc = put(&manifest);
        desc["mediaType"] = OCI_MANIFEST.into();
        let index = serde_json::json!({ "schemaVersion": 2, "manifests": [desc] });
        fs::write(root.join("index.json"), index.to_string()).unwrap();
        Digest::of(layer)
    }

    #[test]
    fn bad_layers_are_refused_at_import_and_leave_nothing() {
        let (dir, store) = store();
        let mut evil = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.as_old_mut().name[..9].copy_from_slice(b"../x.conf");
        h.set_cksum();
        evil.append(&h, &b"x"[..]).unwrap();
        let evil = evil.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let mut bomb = tar::Builder::new(&mut gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(16 << 20);
        bomb.append_data(&mut h, "zeros", io::repeat(0).take(16 << 20))
            .unwrap();
        bomb.finish().unwrap();
        drop(bomb);
        let bomb = gz.finish().unwrap();
        for (name, layer, gzip, entry, problem) in [
            ("evil", &evil, false, "../x.conf", "`..` component"),
            ("bomb", &bomb, true, "zeros", "decompression bomb"),
        ] {
            let root = dir.path().join(name);
            let layer_digest = layout_with_layer(&root, layer, gzip);
            let err = import(&store, &root, None).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(&err, Error::InvalidLayer { layer, .. } if *layer == layer_digest),
                "{text}"
            );
            assert!(
                text.contains(&format!("entry `{entry}`")) && text.contains(problem),
                "{text}"
            );
            assert!(store.blobs().list().unwrap().is_empty(), "{name}");
            assert!(store.index().unwrap().is_empty());
        }
    }

    #[test]
    fn fifos_in_a_layout_fail_at_once_and_leave_nothing() {
        let (dir, store) = store();
        let tar = tar::Builder::new(Vec::new()).into_inner().unwrap();
        let t0 = std::time::Instant::now();
        for (i, victim) in ["layer", "oci-layout", "index.json", "tar"]
            .iter()
            .enumerate()
        {
            let root = dir.path().join(format!("layout{i}"));
            let layer = layout_with_layer(&root, &tar, false);
            let path = match *victim {
                "layer" => root.join("blobs/sha256").join(layer.hex()),
                "tar" => dir.path().join("layout.tar"),
                name => root.join(name),
            };
            let _ = fs::remove_file(&path);
            nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
            let src = if *victim == "tar" { &path } else { &root };
            match import(&store, src, None) {
                Err(Error::NotRegularFile { path: p, kind }) => {
                    assert_eq!((p, kind), (path, "a FIFO"))
                }
                other => panic!("{victim}: {other:?}"),
            }
            assert!(store.blobs().list().unwrap().is_empty(), "{victim}");
            assert!(store.index().unwrap().is_empty());
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(5));
        // The same layout, whole, imports.
        let root = dir.path().join("whole");
        layout_with_layer(&root, &tar, false);
        import(&store, &root, None).unwrap();
    }
}
