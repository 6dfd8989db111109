//! The image store: an OCI image layout on local disk, plus pins and the
//! artifact cache.
//!
//! ```text
//! <root>/oci-layout                    {"imageLayoutVersion": "1.0.0"}
//! <root>/index.json                    the images; tags in org.opencontainers.image.ref.name
//! <root>/blobs/sha256/<hex>            manifests, configs, layers, compiled artifacts
//! <root>/pins/<function>               the manifest digest a deployed function uses
//! <root>/artifacts/<module>/<key>.json compiled-artifact cache entries
//! <root>/tmp/, <root>/quarantine/      partial writes; corrupt blobs moved aside
//! <root>/lock                          held (flock) by whoever changes the store
//! ```
//!
//! Readers need no lock (every file appears by an atomic rename); every
//! change — adding blobs and the references to them, pins, garbage
//! collection — holds the lock, so the collector never sees blobs whose
//! reference is not written yet. Taking the lock waits at most the store's
//! lock timeout ([`crate::limits::DEFAULT_LOCK_TIMEOUT`], or
//! `WISP_IMAGE_LOCK_TIMEOUT`), then fails with [`Error::Busy`]: a stuck
//! holder never wedges the daemon or another command forever.
//!
//! Every file of the store is opened without blocking and must be a
//! regular file (see `fsx`): the directory is trusted no more than an
//! import.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, MediaType, ANNOTATION_REF_NAME};

use crate::blobs::{sync_dir, Access, BlobStore};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::fsx::{open_regular_for_lock, read_regular};
use crate::image::{write_image, write_layered, Image};
use crate::layer::FileTree;
use crate::limits::{Limits, DEFAULT_LOCK_TIMEOUT, LOCK_TIMEOUT_ENV, MAX_JSON_BYTES};
use crate::reference::{Reference, Tag};

/// An image store rooted in a directory.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
    blobs: BlobStore,
    lock_timeout: Duration,
}

/// The store's lock; released when dropped.
pub struct StoreLock {
    _file: File,
}

/// One image of `index.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The manifest's digest.
    pub digest: Digest,
    /// The manifest's size.
    pub size: u64,
    /// Its tag, if it has one.
    pub tag: Option<Tag>,
}

/// An image as `wisp image ls` shows it.
#[derive(Clone, Debug)]
pub struct ImageSummary {
    /// Its tag, if any.
    pub tag: Option<Tag>,
    /// The manifest digest.
    pub digest: Digest,
    /// Manifest, config and layers, in bytes (as the manifest says).
    pub size: u64,
    /// Number of layers (module and file layers).
    pub layers: usize,
    /// Last use (the manifest blob's modification time).
    pub last_used: Option<SystemTime>,
    /// Functions pinning it.
    pub pinned_by: Vec<String>,
    /// What is wrong with it (a corrupt or missing blob), if anything.
    pub problem: Option<String>,
}

/// What [`Store::remove`] did.
#[derive(Clone, Debug, Default)]
pub struct Removed {
    /// The tags (or untagged digests) removed from the index.
    pub references: Vec<String>,
    /// Blobs deleted because nothing references them any more.
    pub blobs: usize,
    /// Bytes those blobs held.
    pub bytes: u64,
}

/// Whether `name` can be a pin: a wisp function name, or
/// `function@version` for one version of it.
fn valid_pin_name(name: &str) -> bool {
    let (function, version) = match name.split_once('@') {
        Some((function, version)) => (function, Some(version)),
        None => (name, None),
    };
    (1..=63).contains(&function.len())
        && function
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && function.as_bytes()[0].is_ascii_alphanumeric()
        && version
            .is_none_or(|v| (1..=20).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()))
}

/// Fails unless `name` can be a pin.
fn check_pin_name(name: &str) -> Result<()> {
    if valid_pin_name(name) {
        Ok(())
    } else {
        Err(Error::InvalidPinName(name.to_string()))
    }
}

/// How [`Store::build_on`] keeps the image it builds.
#[derive(Clone, Copy, Debug)]
pub enum KeepAs<'a> {
    /// Under a tag in the index.
    Tag(&'a Tag),
    /// Pinned for a function (as a deploy pins the image it uses), without
    /// an index entry: it goes with the function.
    Pin(&'a str),
}

/// Most bytes of a pin file (a digest and a newline).
const MAX_PIN_BYTES: u64 = 1024;

/// The lock timeout `WISP_IMAGE_LOCK_TIMEOUT` sets (its value, if set),
/// else the default.
fn lock_timeout_setting(value: Option<String>) -> Result<Duration> {
    match value {
        Some(value) => humantime::parse_duration(value.trim()).map_err(|e| Error::InvalidSetting {
            name: LOCK_TIMEOUT_ENV,
            value,
            reason: format!("not a duration such as `500ms` or `30s` ({e})"),
        }),
        None => Ok(DEFAULT_LOCK_TIMEOUT),
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("a file in a directory");
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .ctx(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .ctx(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .ctx(|| format!("writing {}", path.display()))?;
    sync_dir(dir);
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the store in `root`. Its lock timeout is
    /// `WISP_IMAGE_LOCK_TIMEOUT` if set, else
    /// [`crate::limits::DEFAULT_LOCK_TIMEOUT`].
    pub fn open(root: &Path) -> Result<Store> {
        let lock_timeout = lock_timeout_setting(std::env::var(LOCK_TIMEOUT_ENV).ok())?;
        let blobs = BlobStore::open(root)?;
        for dir in ["pins", "artifacts"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).ctx(|| format!("creating {}", path.display()))?;
        }
        let store = Store {
            root: root.to_path_buf(),
            blobs,
            lock_timeout,
        };
        let layout = root.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !store.index_path().exists() {
            let _lock = store.lock()?;
            if !store.index_path().exists() {
                store.write_index(&[])?;
            }
        }
        Ok(store)
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Its blobs.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn pins_dir(&self) -> PathBuf {
        self.root.join("pins")
    }

    /// The same store, waiting at most `timeout` for its lock.
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Store {
        self.lock_timeout = timeout;
        self
    }

    /// How long a change waits for the lock.
    pub fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// Takes the store's lock, waiting at most the lock timeout; then
    /// [`Error::Busy`]. The wait polls (`flock` with `LOCK_NB`) rather
    /// than blocks, so it is bounded; the lock is released when the
    /// [`StoreLock`] drops, or when its holder dies.
    pub fn lock(&self) -> Result<StoreLock> {
        /// The longest pause between two tries: short against the time a
        /// change holds the lock, long enough not to spin.
        const MAX_PAUSE: Duration = Duration::from_millis(20);
        let path = self.root.join("lock");
        let file = open_regular_for_lock(&path)?;
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(StoreLock { _file: file }),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => {
                    return Err(e).ctx(|| format!("locking {}", path.display()))
                }
            }
            let waited = start.elapsed();
            if waited >= self.lock_timeout {
                return Err(Error::Busy {
                    root: self.root.clone(),
                    waited,
                });
            }
            std::thread::sleep(pause.min(self.lock_timeout - waited));
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// The images of `index.json`.
    pub fn index(&self) -> Result<Vec<IndexEntry>> {
        let path = self.index_path();
        let bytes = read_regular(&path, MAX_JSON_BYTES)?;
        let index = ImageIndex::from_reader(&bytes[..]).map_err(|e| {
            Error::InvalidImage(format!("{} is not an OCI index: {e}", path.display()))
        })?;
        index
            .manifests()
            .iter()
            .map(|d| {
                let tag = d
                    .annotations()
                    .as_ref()
                    .and_then(|a| a.get(ANNOTATION_REF_NAME))
                    .and_then(|r| Tag::parse(r).ok());
                Ok(IndexEntry {
                    digest: Digest::from_oci(d.digest())?,
                    size: d.size(),
                    tag,
                })
            })
            .collect()
    }

    /// Replaces `index.json` (the caller holds the lock).
    pub(crate) fn replace_index(&self, entries: &[IndexEntry]) -> Result<()> {
        self.write_index(entries)
    }

    fn write_index(&self, entries: &[IndexEntry]) -> Result<()> {
        let manifests: Vec<Descriptor> = entries
            .iter()
            .map(|e| {
                let mut d = Descriptor::new(MediaType::ImageManifest, e.size, e.digest.to_oci());
                if let Some(tag) = &e.tag {
                    d.set_annotations(Some(HashMap::from([(
                        ANNOTATION_REF_NAME.to_string(),
                        tag.to_string(),
                    )])));
                }
                d
            })
            .collect();
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(manifests)
            .build()
            .map_err(|e| Error::InvalidImage(format!("building index.json: {e}")))?;
        let bytes = serde_json::to_vec_pretty(&index).expect("serialisable");
        write_atomic(&self.index_path(), &bytes)
    }

    /// Records image `digest` in the index, under `tag` if given (moving
    /// the tag from another image) or untagged (if not already there).
    /// The caller holds the lock.
    pub(crate) fn record(&self, digest: &Digest, size: u64, tag: Option<&Tag>) -> Result<()> {
        let mut entries = self.index()?;
        match tag {
            Some(tag) => {
                entries.retain(|e| e.tag.as_ref() != Some(tag));
                // An untagged entry of the same image is now redundant.
                entries.retain(|e| !(e.digest == *digest && e.tag.is_none()));
                entries.push(IndexEntry {
                    digest: digest.clone(),
                    size,
                    tag: Some(tag.clone()),
                });
            }
            None => {
                if !entries.iter().any(|e| e.digest == *digest) {
                    entries.push(IndexEntry {
                        digest: digest.clone(),
                        size,
                        tag: None,
                    });
                }
            }
        }
        entries.sort_by(|a, b| (&a.tag, &a.digest).cmp(&(&b.tag, &b.digest)));
        self.write_index(&entries)
    }

    /// Tags the stored image `digest` as `tag` (moving the tag from another
    /// image), under the store's lock: how a pull of an image already here
    /// records the tag it was pulled by.
    pub fn tag(&self, digest: &Digest, tag: &Tag) -> Result<()> {
        let _lock = self.lock()?;
        let image = self.image(digest)?;
        self.record(digest, image.descriptor().size(), Some(tag))
    }

    /// Finds the image `reference` names: a tag in the index, a digest
    /// whose manifest is stored, or a unique digest prefix among the
    /// indexed and pinned images.
    pub fn resolve(&self, reference: &str) -> Result<Digest> {
        let parsed = Reference::parse(reference)?;
        let prefix = match &parsed {
            Reference::Tag(tag) => {
                if let Some(e) = self
                    .index()?
                    .into_iter()
                    .find(|e| e.tag.as_ref() == Some(tag))
                {
                    return Ok(e.digest);
                }
                // Hex digits without a tag may be a short digest, as `ls`
                // prints them.
                if !reference.contains(':') && reference.len() >= 4 {
                    reference.to_string()
                } else {
                    return Err(Error::NotFound(reference.to_string()));
                }
            }
            Reference::Digest(d) => {
                return if self.blobs.contains(d) {
                    Ok(d.clone())
                } else {
                    Err(Error::NotFound(reference.to_string()))
                }
            }
            Reference::Prefix(p) => p.clone(),
        };
        let known: BTreeSet<Digest> = self
            .index()?
            .into_iter()
            .map(|e| e.digest)
            .chain(self.pins()?.into_values())
            .filter(|d| d.hex().starts_with(&prefix))
            .collect();
        match known.len() {
            1 => Ok(known.into_iter().next().expect("one")),
            0 => Err(Error::NotFound(reference.to_string())),
            _ => Err(Error::Ambiguous {
                reference: reference.to_string(),
                candidates: known.iter().map(|d| d.short().to_string()).collect(),
            }),
        }
    }

    /// Opens image `digest` for use (its last use is now).
    pub fn image(&self, digest: &Digest) -> Result<Image> {
        Image::load(&self.blobs, digest, Access::Use)
    }

    /// Resolves `reference` and opens the image for use.
    pub fn open_image(&self, reference: &str) -> Result<Image> {
        self.image(&self.resolve(reference)?)
    }

    /// Builds an image from a binary wasm `module` and, optionally, the
    /// files under `files` (one tar layer, read within
    /// [`crate::limits::Limits::DEFAULT`]), and records it under `tag`.
    pub fn build(&self, module: &[u8], files: Option<&Path>, tag: Option<&Tag>) -> Result<Image> {
        let tree = match files {
            Some(dir) => FileTree::from_dir(dir, &Limits::DEFAULT)?,
            None => FileTree::new(),
        };
        self.build_tree(module, &tree, tag)
    }

    /// Builds an image from `module` and a file tree; see [`Store::build`].
    /// The layer written is checked as an imported one would be before the
    /// image is recorded (a refused one leaves unreferenced blobs, which
    /// garbage collection removes).
    pub fn build_tree(&self, module: &[u8], files: &FileTree, tag: Option<&Tag>) -> Result<Image> {
        let _lock = self.lock()?;
        let (digest, size) = write_image(&self.blobs, module, files)?;
        let image = Image::load(&self.blobs, &digest, Access::Use)?;
        image.check_files()?;
        self.record(&digest, size, tag)?;
        Ok(image)
    }

    /// Builds an image of `base`'s layers (the same blobs) and `files` as
    /// one more tar layer on top, with `annotations` in its manifest, and
    /// keeps it as `keep` says, under the same lock (so a concurrent
    /// collection never sees it unreferenced). The new layer is checked
    /// with the base's as [`Store::build_tree`] does.
    pub fn build_on(
        &self,
        base: &Image,
        files: &FileTree,
        annotations: &BTreeMap<String, String>,
        keep: KeepAs<'_>,
    ) -> Result<Image> {
        if let KeepAs::Pin(function) = keep {
            check_pin_name(function)?;
        }
        let _lock = self.lock()?;
        let (digest, size) = write_layered(&self.blobs, base, files, annotations)?;
        let image = Image::load(&self.blobs, &digest, Access::Use)?;
        image.check_files()?;
        match keep {
            KeepAs::Tag(tag) => self.record(&digest, size, Some(tag))?,
            KeepAs::Pin(function) => self.write_pin(function, &digest)?,
        }
        Ok(image)
    }

    /// Removes the image `reference` names: a tag removes that tag, a
    /// digest every tag of the image. Blobs no longer referenced by any
    /// image, pin or cached artifact are deleted. A pinned image is
    /// refused.
    pub fn remove(&self, reference: &str) -> Result<Removed> {
        let _lock = self.lock()?;
        let digest = self.resolve(reference)?;
        let pinned_by: Vec<String> = self
            .pins()?
            .into_iter()
            .filter(|(_, d)| *d == digest)
            .map(|(f, _)| f)
            .collect();
        if !pinned_by.is_empty() {
            return Err(Error::Pinned {
                reference: reference.to_string(),
                functions: pinned_by,
            });
        }
        let by_tag = match Reference::parse(reference)? {
            Reference::Tag(tag) => self
                .index()?
                .iter()
                .any(|e| e.tag.as_ref() == Some(&tag))
                .then_some(tag),
            _ => None,
        };
        let mut entries = self.index()?;
        let mut removed = Removed::default();
        entries.retain(|e| {
            let hit = match &by_tag {
                Some(tag) => e.tag.as_ref() == Some(tag),
                None => e.digest == digest,
            };
            if hit {
                removed.references.push(
                    e.tag
                        .as_ref()
                        .map_or_else(|| e.digest.to_string(), Tag::to_string),
                );
            }
            !hit
        });
        if removed.references.is_empty() {
            // A stored manifest that no tag names (e.g. a tag moved away).
            removed.references.push(digest.to_string());
        }
        self.write_index(&entries)?;
        // Delete what only this image used.
        let candidates = match Image::load(&self.blobs, &digest, Access::Look) {
            Ok(image) => image.blob_digests(),
            Err(_) => vec![digest.clone()],
        };
        let live = crate::gc::reachable(self)?.blobs;
        for d in candidates {
            if !live.contains(&d) {
                let freed = self.blobs.remove(&d)?;
                if freed > 0 {
                    removed.blobs += 1;
                    removed.bytes += freed;
                }
            }
        }
        Ok(removed)
    }

    /// Pins image `digest` for `function`, replacing its previous pin.
    pub fn pin(&self, function: &str, digest: &Digest) -> Result<()> {
        check_pin_name(function)?;
        let _lock = self.lock()?;
        self.write_pin(function, digest)
    }

    /// Writes `function`'s pin; the caller holds the lock.
    fn write_pin(&self, function: &str, digest: &Digest) -> Result<()> {
        write_atomic(
            &self.pins_dir().join(function),
            format!("{digest}\n").as_bytes(),
        )
    }

    /// Removes `function`'s pin, if any.
    pub fn unpin(&self, function: &str) -> Result<()> {
        check_pin_name(function)?;
        let _lock = self.lock()?;
        let path = self.pins_dir().join(function);
        match fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&self.pins_dir());
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).ctx(|| format!("removing {}", path.display())),
        }
    }

    /// Every pin: function → manifest digest. Unreadable pin files are
    /// errors (a garbage collection must not run without knowing them).
    pub fn pins(&self) -> Result<BTreeMap<String, Digest>> {
        let dir = self.pins_dir();
        let mut out = BTreeMap::new();
        for entry in fs::read_dir(&dir).ctx(|| format!("listing {}", dir.display()))? {
            let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !valid_pin_name(&name) {
                continue; // a temporary file
            }
            let bytes = read_regular(&entry.path(), MAX_PIN_BYTES)?;
            let text = String::from_utf8_lossy(&bytes);
            out.insert(name, Digest::parse(text.trim())?);
        }
        Ok(out)
    }

    /// Every image, one row per tag (and one per untagged or only-pinned
    /// image), each checked blob by blob.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        let pins = self.pins()?;
        let mut rows: Vec<(Option<Tag>, Digest)> = self
            .index()?
            .into_iter()
            .map(|e| (e.tag, e.digest))
            .collect();
        for d in pins.values() {
            if !rows.iter().any(|(_, r)| r == d) {
                rows.push((None, d.clone()));
            }
        }
        rows.dedup();
        Ok(rows
            .into_iter()
            .map(|(tag, digest)| {
                let pinned_by = pins
                    .iter()
                    .filter(|(_, d)| **d == digest)
                    .map(|(f, _)| f.clone())
                    .collect();
                let last_used = self.blobs.last_used(&digest);
                let (size, layers, problem) = match Image::load(&self.blobs, &digest, Access::Look)
                {
                    Ok(image) => (
                        image.size(),
                        image.manifest().layers().len(),
                        image.verify().err().map(|e| e.to_string()),
                    ),
                    Err(e) => (0, 0, Some(e.to_string())),
                };
                ImageSummary {
                    tag,
                    digest,
                    size,
                    layers,
                    last_used,
                    pinned_by,
                    problem,
                }
            })
            .collect())
    }

    /// Bytes held by blobs.
    pub fn size(&self) -> Result<u64> {
        Ok(self.blobs.list()?.iter().map(|b| b.size).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULE: &[u8] = b"\0asm\x01\0\0\0";

    fn tag(s: &str) -> Tag {
        Tag::parse(s).unwrap()
    }

    #[test]
    fn tagging_a_stored_image_moves_the_tag() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.build(MODULE, None, None).unwrap();
        let b = store
            .build(b"\0asm\x01\0\0\0\0", None, Some(&tag("r.io/x:1")))
            .unwrap();
        store.tag(a.digest(), &tag("r.io/x:1")).unwrap();
        assert_eq!(store.resolve("r.io/x:1").unwrap(), *a.digest());
        // As a build moving a tag does: b loses it (and gc may take it).
        assert!(!store
            .index()
            .unwrap()
            .iter()
            .any(|e| e.digest == *b.digest()));
        let missing = Digest::of(b"nothing");
        assert!(matches!(
            store.tag(&missing, &tag("r.io/x:2")),
            Err(Error::MissingBlob(_) | Error::NotFound(_))
        ));
    }

    #[test]
    fn tags_resolve_move_and_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(dir.path().join("oci-layout").is_file());
        assert!(store.index().unwrap().is_empty());
        let a = store.build(MODULE, None, Some(&tag("app:1"))).unwrap();
        assert_eq!(store.resolve("app:1").unwrap(), *a.digest());
        assert_eq!(store.resolve(&a.digest().to_string()).unwrap(), *a.digest());
        assert_eq!(store.resolve(a.digest().short()).unwrap(), *a.digest());
        assert!(matches!(store.resolve("app:2"), Err(Error::NotFound(_))));
        assert!(matches!(store.resolve("app"), Err(Error::NotFound(_))));
        // The same image under a second tag; then the tag moves.
        store.build(MODULE, None, Some(&tag("app"))).unwrap();
        assert_eq!(store.index().unwrap().len(), 2);
        let files = tempfile::tempdir().unwrap();
        fs::write(files.path().join("f"), b"f").unwrap();
        let b = store
            .build(MODULE, Some(files.path()), Some(&tag("app:1")))
            .unwrap();
        assert_ne!(a.digest(), b.digest());
        assert_eq!(store.resolve("app:1").unwrap(), *b.digest());
        assert_eq!(store.resolve("app:latest").unwrap(), *a.digest());
        // Removing a tag keeps the module the other image shares.
        let removed = store.remove("app:1").unwrap();
        assert_eq!(removed.references, ["app:1"]);
        assert_eq!(removed.blobs, 3, "manifest, config, file layer");
        store.open_image("app").unwrap().module().unwrap();
        let removed = store.remove(&a.digest().to_string()).unwrap();
        assert_eq!(removed.references, ["app:latest"]);
        assert!(store.blobs().list().unwrap().is_empty());
    }

    #[test]
    fn pins_protect_images_from_removal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.build(MODULE, None, Some(&tag("app:1"))).unwrap();
        store.pin("fn-a", a.digest()).unwrap();
        assert_eq!(store.pins().unwrap()["fn-a"], *a.digest());
        let err = store.remove("app:1").unwrap_err();
        assert!(err.to_string().contains("fn-a"), "{err}");
        for bad in ["../x", "fn-a@", "fn-a@x1", "@1", "fn-a@1@2"] {
            assert!(
                matches!(store.pin(bad, a.digest()), Err(Error::InvalidPinName(_))),
                "{bad}"
            );
        }
        // A version's pin keeps the image as well.
        store.pin("fn-a@12", a.digest()).unwrap();
        let rows = store.list().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].pinned_by, ["fn-a", "fn-a@12"]);
        assert!(rows[0].problem.is_none());
        store.unpin("fn-a").unwrap();
        store.unpin("fn-a").unwrap();
        let err = store.remove("app:1").unwrap_err();
        assert!(err.to_string().contains("fn-a@12"), "{err}");
        store.unpin("fn-a@12").unwrap();
        store.remove("app:1").unwrap();
    }

    #[test]
    fn list_reports_a_corrupt_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.build(MODULE, None, Some(&tag("app:1"))).unwrap();
        let module = store.blobs().path(&a.module_digest());
        fs::write(&module, b"\0asm\x01\0\0\x01").unwrap();
        let rows = store.list().unwrap();
        let problem = rows[0].problem.as_deref().unwrap();
        assert!(
            problem.contains("corrupt") && problem.contains(a.module_digest().hex()),
            "{problem}"
        );
        assert!(matches!(
            store.open_image("app:1").unwrap().module(),
            Err(Error::MissingBlob(_))
        ));
    }

    #[test]
    fn a_held_lock_is_waited_for_a_bounded_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path())
            .unwrap()
            .with_lock_timeout(Duration::from_millis(200));
        assert_eq!(
            Store::open(dir.path()).unwrap().lock_timeout(),
            DEFAULT_LOCK_TIMEOUT
        );
        let held = store.lock().unwrap();
        // Another holder (flock locks belong to open files, so this is as
        // another process would be) times out with `Busy`, for every change.
        let t0 = Instant::now();
        let err = store.build(MODULE, None, Some(&tag("app:1"))).unwrap_err();
        let waited = t0.elapsed();
        assert!(matches!(err, Error::Busy { .. }), "{err}");
        assert!(
            err.to_string().contains("another wisp process")
                && err
                    .to_string()
                    .contains(&dir.path().join("lock").display().to_string()),
            "{err}"
        );
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert!(matches!(
            store.pin("f", &Digest::of(b"x")),
            Err(Error::Busy { .. })
        ));
        assert!(matches!(store.remove("app:1"), Err(Error::Busy { .. })));
        // Released, it is taken at once.
        let waiter = {
            let store = store.clone().with_lock_timeout(Duration::from_secs(30));
            std::thread::spawn(move || {
                let t0 = Instant::now();
                store.build(MODULE, None, Some(&tag("app:1"))).unwrap();
                t0.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        drop(held);
        let waited = waiter.join().unwrap();
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        store.resolve("app:1").unwrap();
    }

    #[test]
    fn the_lock_timeout_is_a_setting() {
        assert_eq!(lock_timeout_setting(None).unwrap(), DEFAULT_LOCK_TIMEOUT);
        assert_eq!(
            lock_timeout_setting(Some(" 250ms".into())).unwrap(),
            Duration::from_millis(250)
        );
        let err = lock_timeout_setting(Some("soon".into())).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("WISP_IMAGE_LOCK_TIMEOUT=\"soon\": not a duration"),
            "{err}"
        );
    }

    #[test]
    fn store_files_that_are_not_regular_never_block() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let image = store.build(MODULE, None, Some(&tag("app:1"))).unwrap();
        let fifo = |path: &Path| {
            fs::remove_file(path).unwrap();
            nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        };
        let t0 = Instant::now();
        // The lock file: refused at once, not waited on.
        fifo(&dir.path().join("lock"));
        let err = store.pin("f", image.digest()).unwrap_err();
        assert!(
            matches!(err, Error::NotRegularFile { kind: "a FIFO", .. }),
            "{err}"
        );
        fs::remove_file(dir.path().join("lock")).unwrap();
        // A pin, the index, a blob.
        store.pin("f", image.digest()).unwrap();
        fifo(&dir.path().join("pins/f"));
        assert!(matches!(store.pins(), Err(Error::NotRegularFile { .. })));
        fs::remove_file(dir.path().join("pins/f")).unwrap();
        fifo(&store.blobs().path(&image.module_digest()));
        let rows = store.list().unwrap();
        let problem = rows[0].problem.as_deref().unwrap();
        assert!(
            problem.contains("is a FIFO, not a regular file"),
            "{problem}"
        );
        assert!(matches!(
            store.image(image.digest()).unwrap().module(),
            Err(Error::NotRegularFile { .. })
        ));
        fifo(&dir.path().join("index.json"));
        assert!(matches!(store.index(), Err(Error::NotRegularFile { .. })));
        assert!(t0.elapsed() < Duration::from_secs(5), "nothing blocked");
    }
}
