//! Garbage collection.
//!
//! Roots are the images of `index.json`, the pinned images (those deployed
//! functions use) and the compiled-artifact cache entries; a blob reachable
//! from none of them is garbage and is always removed. Under a size budget
//! the collector then evicts, least recently used first, whole unpinned
//! images (their tags go) and artifact entries, until the blobs fit. A
//! pinned image, every blob it references and its module's current
//! artifacts are never evicted; if they alone exceed the budget the report
//! says so.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::time::{Duration, SystemTime};

use crate::artifacts::{entries, ArtifactKey};
use crate::blobs::Access;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::store::Store;

/// Temporary files older than this are leftovers of a crash.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// What to collect.
#[derive(Clone, Debug, Default)]
pub struct GcOptions {
    /// Evict unpinned images and artifacts, least recently used first,
    /// until the blobs take at most this many bytes.
    pub max_size: Option<u64>,
    /// This build's artifact key: artifacts of pinned modules under another
    /// key are no longer protected. `None` protects them all.
    pub current_key: Option<ArtifactKey>,
}

/// What a collection did.
#[derive(Clone, Debug, Default)]
pub struct GcReport {
    /// Blobs deleted, with their sizes.
    pub removed: Vec<(Digest, u64)>,
    /// Images evicted for the budget (their tags, or digests).
    pub evicted_images: Vec<String>,
    /// Artifact entries evicted for the budget.
    pub evicted_artifacts: usize,
    /// Bytes of blobs before and after.
    pub size_before: u64,
    /// Bytes of blobs after.
    pub size_after: u64,
    /// Bytes of quarantined blobs and stale temporary files deleted.
    pub scratch_freed: u64,
    /// Whether the budget could not be met (pinned content exceeds it).
    pub over_budget: bool,
    /// Images skipped because their manifest is unreadable.
    pub problems: Vec<String>,
}

impl GcReport {
    /// Bytes freed (blobs and scratch files).
    pub fn freed(&self) -> u64 {
        self.removed.iter().map(|(_, s)| s).sum::<u64>() + self.scratch_freed
    }
}

/// The blobs reachable from the roots.
pub(crate) struct Reachable {
    pub blobs: HashSet<Digest>,
    pub problems: Vec<String>,
}

/// Computes what the roots reach. A pinned image whose manifest cannot be
/// read is an error: its layers are unknown, so nothing may be collected.
pub(crate) fn reachable(store: &Store) -> Result<Reachable> {
    let mut blobs = HashSet::new();
    let mut problems = Vec::new();
    let pins = store.pins()?;
    let pinned: BTreeSet<&Digest> = pins.values().collect();
    let indexed: BTreeSet<Digest> = store.index()?.into_iter().map(|e| e.digest).collect();
    for d in pinned.iter().copied().chain(indexed.iter()) {
        if !blobs.insert(d.clone()) {
            continue;
        }
        match Image::load(store.blobs(), d, Access::Look) {
            Ok(image) => blobs.extend(image.blob_digests()),
            Err(e) if pinned.contains(d) => {
                return Err(Error::InvalidImage(format!(
                    "cannot collect garbage: pinned image {d} is unreadable ({e}); re-import it"
                )))
            }
            Err(e) => problems.push(format!("image {d}: {e}")),
        }
    }
    for e in entries(store)? {
        if let Ok(d) = Digest::parse(&e.entry.artifact) {
            blobs.insert(d);
        }
    }
    Ok(Reachable { blobs, problems })
}

/// Deletes every blob not in `live`; returns them.
fn sweep(store: &Store, live: &HashSet<Digest>) -> Result<Vec<(Digest, u64)>> {
    let mut removed = Vec::new();
    for blob in store.blobs().list()? {
        if !live.contains(&blob.digest) {
            let freed = store.blobs().remove(&blob.digest)?;
            removed.push((blob.digest, freed));
        }
    }
    Ok(removed)
}

/// Deletes quarantined blobs and stale temporary files; returns the bytes.
fn clean_scratch(store: &Store) -> u64 {
    let mut freed = 0;
    let now = SystemTime::now();
    for (dir, all) in [
        (store.blobs().quarantine_dir(), true),
        (store.blobs().tmp_dir(), false),
    ] {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            let stale = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > STALE_TMP);
            if (all || stale) && meta.is_file() && fs::remove_file(entry.path()).is_ok() {
                freed += meta.len();
            } else if stale && meta.is_dir() {
                // A registry pull's staging directory (`tmp/pull-*`) that
                // no pull has touched for an hour: an abandoned pull.
                freed += dir_size(&entry.path());
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    freed
}

/// The bytes of the files under `dir` (a pull's staging directory).
fn dir_size(dir: &std::path::Path) -> u64 {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok().map(|m| (e.path(), m)))
        .map(|(path, m)| if m.is_dir() { dir_size(&path) } else { m.len() })
        .sum()
}

/// An eviction candidate.
enum Candidate {
    Image(Digest),
    Artifact(std::path::PathBuf),
}

/// Collects garbage in `store` (holding its lock).
pub fn collect(store: &Store, options: &GcOptions) -> Result<GcReport> {
    let _lock = store.lock()?;
    let mut report = GcReport {
        size_before: store.size()?,
        scratch_freed: clean_scratch(store),
        ..GcReport::default()
    };
    let live = reachable(store)?;
    report.problems = live.problems;
    report.removed = sweep(store, &live.blobs)?;
    let mut size = store.size()?;

    if let Some(max) = options.max_size.filter(|max| size > *max) {
        let pins = store.pins()?;
        let pinned: BTreeSet<Digest> = pins.into_values().collect();
        let pinned_modules: BTreeSet<String> = pinned
            .iter()
            .filter_map(|d| Image::load(store.blobs(), d, Access::Look).ok())
            .map(|i| i.module_digest().to_string())
            .collect();
        let mut candidates: Vec<(SystemTime, u8, Candidate)> = Vec::new();
        let mut seen = BTreeSet::new();
        for e in store.index()? {
            if !pinned.contains(&e.digest) && seen.insert(e.digest.clone()) {
                let used = store
                    .blobs()
                    .last_used(&e.digest)
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                candidates.push((used, 1, Candidate::Image(e.digest)));
            }
        }
        for a in entries(store)? {
            let protected = pinned_modules.contains(&a.entry.module)
                && options
                    .current_key
                    .as_ref()
                    .is_none_or(|k| *k == a.entry.key);
            if !protected {
                // Artifacts go first at equal age: they are rebuilt, not
                // re-imported.
                candidates.push((a.last_used, 0, Candidate::Artifact(a.path)));
            }
        }
        candidates.sort_by_key(|(used, rank, _)| (*used, *rank));
        for (_, _, candidate) in candidates {
            if size <= max {
                break;
            }
            match candidate {
                Candidate::Image(digest) => {
                    let mut entries = store.index()?;
                    let before = entries.len();
                    let mut names = Vec::new();
                    entries.retain(|e| {
                        if e.digest == digest {
                            names.push(
                                e.tag
                                    .as_ref()
                                    .map_or_else(|| digest.to_string(), |t| t.to_string()),
                            );
                        }
                        e.digest != digest
                    });
                    if entries.len() != before {
                        store.replace_index(&entries)?;
                        report.evicted_images.extend(names);
                    }
                }
                Candidate::Artifact(path) => {
                    if fs::remove_file(&path).is_ok() {
                        report.evicted_artifacts += 1;
                    }
                }
            }
            let live = reachable(store)?;
            report.removed.extend(sweep(store, &live.blobs)?);
            size = store.size()?;
        }
        report.over_budget = size > max;
    }
    report.size_after = size;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::ArtifactCache;
    use crate::reference::Tag;
    use std::sync::Arc;

    fn module(n: u8, pad: usize) -> Vec<u8> {
        // A custom section pads the module to the size wanted.
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.push(0);
        let body_len = 2 + pad;
        assert!(body_len < 128 * 128);
        m.push((body_len as u8 & 0x7f) | 0x80);
        m.push((body_len >> 7) as u8);
        m.extend_from_slice(&[1, n]);
        m.extend(std::iter::repeat_n(n, pad));
        m
    }

    fn age(store: &Store, d: &Digest, secs: u64) {
        let f = fs::File::open(store.blobs().path(d)).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn abandoned_pull_staging_goes_a_fresh_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tmp = store.blobs().tmp_dir();
        for name in ["pull-old", "pull-new"] {
            fs::create_dir_all(tmp.join(name).join("blobs/sha256")).unwrap();
            fs::write(tmp.join(name).join("blobs/sha256/x"), b"12345").unwrap();
        }
        let old = fs::File::open(tmp.join("pull-old")).unwrap();
        old.set_modified(SystemTime::now() - 2 * STALE_TMP).unwrap();
        let report = collect(&store, &GcOptions::default()).unwrap();
        assert_eq!(report.scratch_freed, 5);
        assert!(!tmp.join("pull-old").exists());
        assert!(
            tmp.join("pull-new/blobs/sha256/x").exists(),
            "a pull may be using it"
        );
    }

    #[test]
    fn unreferenced_blobs_go_and_pinned_images_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tag = |s: &str| Tag::parse(s).unwrap();
        let a = store
            .build(&module(1, 100), None, Some(&tag("a:1")))
            .unwrap();
        let b = store
            .build(&module(2, 100), None, Some(&tag("b:1")))
            .unwrap();
        store.pin("f", b.digest()).unwrap();
        // b's tag moves away: pinned, it stays whole.
        store
            .build(&module(3, 100), None, Some(&tag("b:1")))
            .unwrap();
        let (orphan, _) = store.blobs().put(b"orphan").unwrap();
        fs::write(store.blobs().quarantine_dir().join("x.1"), b"bad").unwrap();
        let report = collect(&store, &GcOptions::default()).unwrap();
        assert_eq!(report.removed, vec![(orphan.clone(), 6)]);
        assert_eq!(report.scratch_freed, 3);
        for d in a.blob_digests().iter().chain(&b.blob_digests()) {
            store.blobs().verify(d).unwrap();
        }
        // Unpinned, b is unreferenced (no tag) and goes.
        store.unpin("f").unwrap();
        let report = collect(&store, &GcOptions::default()).unwrap();
        assert!(report.removed.iter().any(|(d, _)| d == b.digest()));
        assert!(!store.blobs().contains(&b.module_digest()));
        store.blobs().verify(&a.module_digest()).unwrap();
    }

    #[test]
    fn a_budget_evicts_least_recently_used_first_never_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tag = |s: &str| Tag::parse(s).unwrap();
        let old = store
            .build(&module(1, 4000), None, Some(&tag("old:1")))
            .unwrap();
        let mid = store
            .build(&module(2, 4000), None, Some(&tag("mid:1")))
            .unwrap();
        let new = store
            .build(&module(3, 4000), None, Some(&tag("new:1")))
            .unwrap();
        let pinned = store
            .build(&module(4, 4000), None, Some(&tag("pinned:1")))
            .unwrap();
        store.pin("f", pinned.digest()).unwrap();
        age(&store, old.digest(), 4000);
        age(&store, mid.digest(), 3000);
        age(&store, new.digest(), 1000);
        age(&store, pinned.digest(), 9000); // oldest, but pinned
        let cache = ArtifactCache::new(store.clone(), 0);
        let key = ArtifactKey {
            engine: "e".into(),
            cpu: "c".into(),
            wisp: "w".into(),
        };
        let art = cache
            .put(&mid.module_digest(), &key, Arc::new(vec![9; 3000]))
            .unwrap();
        age(&store, &art, 3500);
        let pinned_art = cache
            .put(&pinned.module_digest(), &key, Arc::new(vec![8; 3000]))
            .unwrap();
        age(&store, &pinned_art, 9000);

        let total = store.size().unwrap();
        // Room for all but about two images: old goes, then the artifact
        // (3500 s), then mid.
        let report = collect(
            &store,
            &GcOptions {
                max_size: Some(total - 9000),
                current_key: Some(key.clone()),
            },
        )
        .unwrap();
        assert_eq!(report.evicted_images, ["old:1", "mid:1"]);
        assert_eq!(report.evicted_artifacts, 1);
        assert!(!report.over_budget);
        assert!(report.size_after <= total - 9000);
        assert!(store.resolve("new:1").is_ok() && store.resolve("pinned:1").is_ok());
        assert!(store.resolve("old:1").is_err() && store.resolve("mid:1").is_err());
        store.blobs().verify(&pinned_art).unwrap();
        // A budget of zero keeps exactly what is pinned.
        let report = collect(
            &store,
            &GcOptions {
                max_size: Some(0),
                current_key: Some(key.clone()),
            },
        )
        .unwrap();
        assert!(report.over_budget);
        assert_eq!(report.evicted_images, ["new:1"]);
        for d in pinned.blob_digests() {
            store.blobs().verify(&d).unwrap();
        }
        store.blobs().verify(&pinned_art).unwrap();
        // Under another key the pinned module's old artifact may go.
        let other = ArtifactKey {
            engine: "e2".into(),
            ..key
        };
        let report = collect(
            &store,
            &GcOptions {
                max_size: Some(0),
                current_key: Some(other),
            },
        )
        .unwrap();
        assert_eq!(report.evicted_artifacts, 1);
        assert!(!store.blobs().contains(&pinned_art));
        store.open_image("pinned:1").unwrap().module().unwrap();
    }

    #[test]
    fn an_unreadable_pinned_manifest_stops_collection() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.build(&module(1, 10), None, None).unwrap();
        store.pin("f", a.digest()).unwrap();
        fs::write(store.blobs().path(a.digest()), b"{}").unwrap();
        let err = collect(&store, &GcOptions::default()).unwrap_err();
        assert!(err.to_string().contains("pinned image"), "{err}");
        store.blobs().verify(&a.module_digest()).unwrap();
    }
}
