//! A module file given to `wisp run`, and its SHA-256, which keys the
//! snapshot cache ([`crate::run_cache::Key`]).
//!
//! Hashing the module on every run costs what the run itself costs when
//! the module is large (~1 ms per MiB here) and was ~0.3 ms of a cached
//! `hello` (reading 140 KiB into fresh memory, then hashing it). So the
//! digest of a file is recorded under the cache root, by device and inode,
//! with the file's [`FileStamp`] (length and change time, which every write
//! moves and no call sets back), and a later run whose file has the same
//! stamp takes the recorded digest without reading the file.
//!
//! A file's change time has the resolution of the kernel's coarse clock:
//! two writes in one tick leave the same stamp. So, as git does with its
//! index ("racily clean" entries), a digest is recorded only for a file
//! unchanged for [`SETTLED`]: a write after it is recorded moves the change
//! time past the recorded one. The bytes read when a snapshot is built are
//! checked against the digest, so a file rewritten between the lookup and
//! the read is an error, never a snapshot filed under the old contents.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wisp_vmm::FileStamp;

use crate::run_cache::replace_file;

/// Where digests are recorded, under the cache root.
const DIGESTS: &str = "digests";

/// Most digests recorded; recording one more removes the oldest.
const MAX_DIGESTS: usize = 1024;

/// How long a file must have been left unchanged before its digest is
/// recorded (see the module docs).
const SETTLED: Duration = Duration::from_secs(2);

/// What is recorded of a file.
#[derive(Serialize, Deserialize)]
struct Recorded {
    stamp: FileStamp,
    /// SHA-256 of its contents.
    sha256: [u8; 32],
}

/// A module file and the SHA-256 of its contents.
pub struct ModuleFile {
    path: PathBuf,
    file: fs::File,
    sha256: [u8; 32],
    /// Its contents, if they were read to hash them.
    bytes: Option<Vec<u8>>,
}

impl ModuleFile {
    /// Opens `path` and finds its digest: recorded under `root` for this
    /// very file, or computed (and recorded, once the file has settled).
    /// Without `root`, always computed.
    pub fn open(path: &Path, root: Option<&Path>) -> io::Result<ModuleFile> {
        let mut file = fs::File::open(path)?;
        let stamp = FileStamp::of(&file)?;
        let known = root.and_then(|root| recorded(root, &stamp));
        let (sha256, bytes) = match known {
            Some(sha256) => (sha256, None),
            None => {
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes)?;
                let sha256: [u8; 32] = Sha256::digest(&bytes).into();
                if let Some(root) = root {
                    record(root, &stamp, &sha256);
                }
                (sha256, Some(bytes))
            }
        };
        Ok(ModuleFile {
            path: path.to_path_buf(),
            file,
            sha256,
            bytes,
        })
    }

    /// The SHA-256 of the file's contents.
    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }

    /// The file's contents, read now if the digest was recorded; an error
    /// if they are not the ones the digest is of (the file changed since).
    pub fn into_bytes(mut self) -> io::Result<Vec<u8>> {
        if let Some(bytes) = self.bytes {
            return Ok(bytes);
        }
        let mut bytes = Vec::new();
        self.file.read_to_end(&mut bytes)?;
        if <[u8; 32]>::from(Sha256::digest(&bytes)) != self.sha256 {
            return Err(io::Error::other(format!(
                "{} changed while wisp read it; run again",
                self.path.display()
            )));
        }
        Ok(bytes)
    }
}

/// The name of the record of a file with `stamp`, in [`DIGESTS`].
fn record_name(stamp: &FileStamp) -> String {
    format!("{}-{}.json", stamp.dev, stamp.ino)
}

/// The record's file for a file with `stamp`.
fn record_path(root: &Path, stamp: &FileStamp) -> PathBuf {
    root.join(DIGESTS).join(record_name(stamp))
}

/// The digest recorded for the file with `stamp`, if it is that file's.
fn recorded(root: &Path, stamp: &FileStamp) -> Option<[u8; 32]> {
    let bytes = fs::read(record_path(root, stamp)).ok()?;
    let recorded: Recorded = serde_json::from_slice(&bytes).ok()?;
    (recorded.stamp == *stamp).then_some(recorded.sha256)
}

/// Records `sha256` for the file with `stamp` if it has settled. Best
/// effort: written whole or not at all (staged, then renamed).
fn record(root: &Path, stamp: &FileStamp, sha256: &[u8; 32]) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    if stamp.ctime_ns > now - SETTLED.as_nanos() as i128 {
        return;
    }
    let dir = root.join(DIGESTS);
    if fs::create_dir_all(&dir).is_err() {
        return;
    }
    let recorded = Recorded {
        stamp: *stamp,
        sha256: *sha256,
    };
    let Ok(bytes) = serde_json::to_vec(&recorded) else {
        return;
    };
    if replace_file(&dir, &record_name(stamp), &bytes) {
        trim(&dir);
    }
}

/// Removes the oldest records beyond [`MAX_DIGESTS`].
fn trim(dir: &Path) {
    let Ok(list) = fs::read_dir(dir) else {
        return;
    };
    let mut records: Vec<(SystemTime, PathBuf)> = list
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if records.len() <= MAX_DIGESTS {
        return;
    }
    records.sort();
    for (_, path) in &records[..records.len() - MAX_DIGESTS] {
        let _ = fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `contents` to `name` in `dir`.
    fn write(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, contents).unwrap();
        path
    }

    /// A module file `contents` left unchanged for [`SETTLED`], opened
    /// once (which records it) with the cache root `root`: the file's path.
    fn recorded_module(root: &Path, dir: &Path, contents: &[u8]) -> PathBuf {
        let path = write(dir, "m.wasm", contents);
        std::thread::sleep(SETTLED + Duration::from_millis(100));
        let first = ModuleFile::open(&path, Some(root)).unwrap();
        assert!(first.bytes.is_some(), "hashed the first time");
        path
    }

    #[test]
    fn a_fresh_file_is_hashed_every_time_and_not_recorded() {
        let root = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "m.wasm", b"one");
        let module = ModuleFile::open(&path, Some(root.path())).unwrap();
        assert_eq!(module.sha256(), &<[u8; 32]>::from(Sha256::digest(b"one")));
        assert_eq!(module.into_bytes().unwrap(), b"one");
        // Changed just now: nothing recorded, so a rewrite of the same
        // length in the same clock tick cannot be mistaken for it.
        assert!(!root.path().join(DIGESTS).exists());
        fs::write(&path, b"two").unwrap();
        let module = ModuleFile::open(&path, Some(root.path())).unwrap();
        assert_eq!(module.sha256(), &<[u8; 32]>::from(Sha256::digest(b"two")));
    }

    #[test]
    fn a_settled_file_is_recorded_and_a_change_is_seen() {
        let root = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = recorded_module(root.path(), dir.path(), b"first");
        let stamp = FileStamp::of(&fs::File::open(&path).unwrap()).unwrap();
        assert!(record_path(root.path(), &stamp).is_file());
        // Recorded: not read again, and the bytes, read on demand, match.
        let again = ModuleFile::open(&path, Some(root.path())).unwrap();
        assert!(again.bytes.is_none(), "taken from the record");
        assert_eq!(again.sha256(), &<[u8; 32]>::from(Sha256::digest(b"first")));
        assert_eq!(again.into_bytes().unwrap(), b"first");
        // Rewritten in place, same length: the change time moved.
        fs::write(&path, b"other").unwrap();
        let changed = ModuleFile::open(&path, Some(root.path())).unwrap();
        assert_eq!(
            changed.sha256(),
            &<[u8; 32]>::from(Sha256::digest(b"other"))
        );
    }

    #[test]
    fn bytes_that_no_longer_match_the_digest_are_an_error() {
        let root = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = recorded_module(root.path(), dir.path(), b"first");
        let module = ModuleFile::open(&path, Some(root.path())).unwrap();
        assert!(module.bytes.is_none());
        // Rewritten between the digest and the read.
        fs::write(&path, b"later").unwrap();
        let err = module.into_bytes().unwrap_err();
        assert!(
            err.to_string().contains("changed while wisp read it"),
            "{err}"
        );
    }

    #[test]
    fn a_damaged_record_is_ignored() {
        let root = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "m.wasm", b"first");
        let stamp = FileStamp::of(&fs::File::open(&path).unwrap()).unwrap();
        fs::create_dir_all(root.path().join(DIGESTS)).unwrap();
        for bad in [
            "not json".to_string(),
            format!(
                "{{\"stamp\":{},\"sha256\":[1,2]}}",
                serde_json::to_string(&stamp).unwrap()
            ),
        ] {
            fs::write(record_path(root.path(), &stamp), bad).unwrap();
            let module = ModuleFile::open(&path, Some(root.path())).unwrap();
            assert_eq!(module.sha256(), &<[u8; 32]>::from(Sha256::digest(b"first")));
        }
    }

    #[test]
    fn records_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..MAX_DIGESTS + 5 {
            fs::write(dir.path().join(format!("{i}.json")), b"{}").unwrap();
        }
        trim(dir.path());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), MAX_DIGESTS);
    }
}
