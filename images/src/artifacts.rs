//! The compiled-artifact cache: native code derived from a module for this
//! host, kept in two levels — a byte-bounded in-memory LRU of recently used
//! artifacts in front of blobs on disk.
//!
//! An artifact is only valid for the compiler and CPU that made it, so
//! entries are keyed by `(module digest, ArtifactKey)`, where the key names
//! the compiler's compatibility fingerprint (wasmtime version and
//! configuration, target flags), the host's CPU features and the wisp
//! version. Another key is a miss, so a changed version or CPU rebuilds the
//! artifact instead of loading a mismatched one. Entries live in
//! `<root>/artifacts/<module hex>/<key id>.json`, naming the artifact blob;
//! the blob is checked on every read like any other, and a corrupt one is
//! quarantined and rebuilt.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::blobs::Access;
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::fsx::{is_not_found, read_regular};
use crate::limits::MAX_JSON_BYTES;
use crate::store::{write_atomic, Store};

/// What an artifact is compatible with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactKey {
    /// The compiler's compatibility fingerprint (wasmtime version,
    /// configuration and target flags).
    pub engine: String,
    /// The host CPU features the code may use (vendor and features).
    pub cpu: String,
    /// The wisp version.
    pub wisp: String,
}

impl ArtifactKey {
    /// A short stable name for the key (16 hex digits of its SHA-256).
    pub fn id(&self) -> String {
        let text = format!("{}\n{}\n{}", self.engine, self.cpu, self.wisp);
        Digest::of(text.as_bytes()).hex()[..16].to_string()
    }
}

/// A cache entry as stored on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactEntry {
    /// The module the artifact was compiled from.
    pub module: String,
    /// What it is compatible with.
    pub key: ArtifactKey,
    /// The artifact blob.
    pub artifact: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Where an artifact came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The in-memory cache.
    Memory,
    /// A checked blob on disk.
    Disk,
    /// Built now (a miss, or a corrupt entry replaced).
    Built,
}

/// The result of [`ArtifactCache::get_or_build`].
#[derive(Debug)]
pub struct Lookup {
    /// The artifact.
    pub artifact: Arc<Vec<u8>>,
    /// Where it came from.
    pub source: Source,
    /// A cache problem that did not fail the call: a corrupt entry that was
    /// rebuilt, or a failure to store the new artifact.
    pub problem: Option<Error>,
}

/// A memory entry's key: the module and the artifact key's id.
type MemoryKey = (Digest, String);

/// The in-memory level: an LRU bounded by bytes.
#[derive(Default)]
struct Memory {
    budget: u64,
    used: u64,
    tick: u64,
    entries: HashMap<MemoryKey, (Arc<Vec<u8>>, u64)>,
}

impl Memory {
    fn get(&mut self, k: &MemoryKey) -> Option<Arc<Vec<u8>>> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(k).map(|(a, t)| {
            *t = tick;
            Arc::clone(a)
        })
    }

    fn put(&mut self, k: MemoryKey, artifact: Arc<Vec<u8>>) {
        let size = artifact.len() as u64;
        if size > self.budget {
            return;
        }
        if let Some((old, _)) = self.entries.remove(&k) {
            self.used -= old.len() as u64;
        }
        while self.used + size > self.budget {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone())
                .expect("used > 0 means entries");
            let (a, _) = self.entries.remove(&oldest).expect("present");
            self.used -= a.len() as u64;
        }
        self.tick += 1;
        self.used += size;
        self.entries.insert(k, (artifact, self.tick));
    }
}

/// The two-level artifact cache over a [`Store`].
pub struct ArtifactCache {
    store: Store,
    memory: Mutex<Memory>,
}

impl ArtifactCache {
    /// A cache over `store` keeping up to `memory_budget` bytes of
    /// recently used artifacts in memory.
    pub fn new(store: Store, memory_budget: u64) -> ArtifactCache {
        ArtifactCache {
            store,
            memory: Mutex::new(Memory {
                budget: memory_budget,
                ..Memory::default()
            }),
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn entry_path(&self, module: &Digest, key: &ArtifactKey) -> PathBuf {
        self.store
            .root()
            .join("artifacts")
            .join(module.hex())
            .join(format!("{}.json", key.id()))
    }

    /// The cached artifact of `module` for `key`: from memory, else from
    /// disk (checked). `Ok(None)` is a miss; a corrupt blob is
    /// quarantined, its entry dropped, and reported as [`Error::Corrupt`].
    pub fn get(
        &self,
        module: &Digest,
        key: &ArtifactKey,
    ) -> Result<Option<(Arc<Vec<u8>>, Source)>> {
        let mk = (module.clone(), key.id());
        if let Some(a) = self.memory().get(&mk) {
            return Ok(Some((a, Source::Memory)));
        }
        let path = self.entry_path(module, key);
        let entry: ArtifactEntry = match read_regular(&path, MAX_JSON_BYTES) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(e) => e,
                Err(_) => {
                    let _ = fs::remove_file(&path);
                    return Ok(None);
                }
            },
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        if entry.key != *key || entry.module != module.to_string() {
            return Ok(None);
        }
        let blob = Digest::parse(&entry.artifact)?;
        match self.store.blobs().read(&blob, Access::Use) {
            Ok(bytes) => {
                let a = Arc::new(bytes);
                self.memory().put(mk, Arc::clone(&a));
                Ok(Some((a, Source::Disk)))
            }
            Err(Error::MissingBlob(_)) => {
                let _ = fs::remove_file(&path);
                Ok(None)
            }
            Err(e @ Error::Corrupt { .. }) => {
                let _ = fs::remove_file(&path);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Stores `artifact` as the artifact of `module` for `key`.
    pub fn put(
        &self,
        module: &Digest,
        key: &ArtifactKey,
        artifact: Arc<Vec<u8>>,
    ) -> Result<Digest> {
        self.memory()
            .put((module.clone(), key.id()), Arc::clone(&artifact));
        let _lock = self.store.lock()?;
        let (blob, size) = self.store.blobs().put(&artifact)?;
        let entry = ArtifactEntry {
            module: module.to_string(),
            key: key.clone(),
            artifact: blob.to_string(),
            size,
        };
        let path = self.entry_path(module, key);
        let dir = path.parent().expect("artifacts/<module>");
        fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        write_atomic(
            &path,
            &serde_json::to_vec_pretty(&entry).expect("serialisable"),
        )?;
        Ok(blob)
    }

    /// The artifact of `module` for `key`, built by `build` on a miss (or
    /// in place of a corrupt entry) and stored. Cache failures never fail
    /// the call; they are reported in [`Lookup::problem`].
    pub fn get_or_build<E>(
        &self,
        module: &Digest,
        key: &ArtifactKey,
        build: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Lookup, E> {
        let problem = match self.get(module, key) {
            Ok(Some((artifact, source))) => {
                return Ok(Lookup {
                    artifact,
                    source,
                    problem: None,
                })
            }
            Ok(None) => None,
            Err(e) => Some(e),
        };
        let artifact = Arc::new(build()?);
        let stored = self.put(module, key, Arc::clone(&artifact)).err();
        Ok(Lookup {
            artifact,
            source: Source::Built,
            problem: problem.or(stored),
        })
    }

    /// Forgets the in-memory level (e.g. to measure the disk level).
    pub fn clear_memory(&self) {
        let mut m = self.memory();
        m.entries.clear();
        m.used = 0;
    }
}

/// One entry on disk, with where it is and when its artifact was last used.
#[derive(Clone, Debug)]
pub(crate) struct StoredEntry {
    pub path: PathBuf,
    pub entry: ArtifactEntry,
    pub last_used: SystemTime,
}

/// Every readable entry of `store`'s artifact cache; unreadable ones are
/// removed.
pub(crate) fn entries(store: &Store) -> Result<Vec<StoredEntry>> {
    let dir = store.root().join("artifacts");
    let mut out = Vec::new();
    for module in fs::read_dir(&dir).ctx(|| format!("listing {}", dir.display()))? {
        let module = module.ctx(|| format!("listing {}", dir.display()))?.path();
        let Ok(files) = fs::read_dir(&module) else {
            continue;
        };
        for file in files.flatten() {
            let path = file.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let parsed = read_regular(&path, MAX_JSON_BYTES)
                .ok()
                .and_then(|b| serde_json::from_slice::<ArtifactEntry>(&b).ok())
                .filter(|e| Digest::parse(&e.artifact).is_ok());
            match parsed {
                Some(entry) => {
                    let last_used = Digest::parse(&entry.artifact)
                        .ok()
                        .and_then(|d| store.blobs().last_used(&d))
                        .unwrap_or(SystemTime::UNIX_EPOCH);
                    out.push(StoredEntry {
                        path,
                        entry,
                        last_used,
                    });
                }
                None => {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        let _ = fs::remove_dir(&module); // only if empty
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(engine: &str) -> ArtifactKey {
        ArtifactKey {
            engine: engine.into(),
            cpu: "GenuineIntel sse2,avx2".into(),
            wisp: "0.1.0".into(),
        }
    }

    fn build(n: &std::cell::Cell<u32>, bytes: &[u8]) -> Result<Vec<u8>, ()> {
        n.set(n.get() + 1);
        Ok(bytes.to_vec())
    }

    #[test]
    fn memory_then_disk_then_rebuild_on_a_key_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let cache = ArtifactCache::new(store.clone(), 1 << 20);
        let module = Digest::of(b"module");
        let builds = std::cell::Cell::new(0);
        let l = cache
            .get_or_build(&module, &key("a"), || build(&builds, b"code-a"))
            .unwrap();
        assert_eq!((l.source, builds.get()), (Source::Built, 1));
        let l = cache
            .get_or_build(&module, &key("a"), || build(&builds, b"x"))
            .unwrap();
        assert_eq!(
            (l.source, &l.artifact[..]),
            (Source::Memory, &b"code-a"[..])
        );
        // A fresh cache on the same store: from disk.
        let cache2 = ArtifactCache::new(store.clone(), 1 << 20);
        let l = cache2
            .get_or_build(&module, &key("a"), || build(&builds, b"x"))
            .unwrap();
        assert_eq!((l.source, &l.artifact[..]), (Source::Disk, &b"code-a"[..]));
        // Another engine (or CPU, or wisp version): a miss.
        let l = cache2
            .get_or_build(&module, &key("b"), || build(&builds, b"code-b"))
            .unwrap();
        assert_eq!((l.source, builds.get()), (Source::Built, 2));
        let other_cpu = ArtifactKey {
            cpu: "GenuineIntel sse2".into(),
            ..key("a")
        };
        assert!(cache2.get(&module, &other_cpu).unwrap().is_none());
        assert_eq!(entries(&store).unwrap().len(), 2);
    }

    #[test]
    fn a_corrupt_artifact_is_rebuilt_never_returned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let cache = ArtifactCache::new(store.clone(), 0);
        let module = Digest::of(b"module");
        let blob = cache
            .put(&module, &key("a"), Arc::new(b"native code".to_vec()))
            .unwrap();
        let path = store.blobs().path(&blob);
        let mut bytes = fs::read(&path).unwrap();
        bytes[3] ^= 0x20;
        fs::write(&path, bytes).unwrap();
        assert!(matches!(
            cache.get(&module, &key("a")),
            Err(Error::Corrupt { .. })
        ));
        let builds = std::cell::Cell::new(0);
        let l = cache
            .get_or_build(&module, &key("a"), || build(&builds, b"native code"))
            .unwrap();
        assert_eq!((l.source, builds.get()), (Source::Built, 1));
        assert!(
            l.problem.is_none(),
            "the corrupt entry was dropped at the first get"
        );
        assert_eq!(
            &cache.get(&module, &key("a")).unwrap().unwrap().0[..],
            b"native code"
        );
    }

    #[test]
    fn memory_is_an_lru_bounded_by_bytes() {
        let mut m = Memory {
            budget: 10,
            ..Memory::default()
        };
        let k = |s: &str| (Digest::of(s.as_bytes()), String::new());
        m.put(k("a"), Arc::new(vec![0; 4]));
        m.put(k("b"), Arc::new(vec![0; 4]));
        assert!(m.get(&k("a")).is_some()); // b is now the oldest
        m.put(k("c"), Arc::new(vec![0; 4]));
        assert!(m.get(&k("b")).is_none());
        assert!(m.get(&k("a")).is_some() && m.get(&k("c")).is_some());
        assert_eq!(m.used, 8);
        m.put(k("huge"), Arc::new(vec![0; 11]));
        assert!(m.get(&k("huge")).is_none());
    }
}
