//! The blob store: content named by its SHA-256 under
//! `<root>/blobs/sha256/<hex>`, exactly as in an OCI image layout.
//!
//! Blobs are written to a temporary file in `<root>/tmp`, fsynced and
//! renamed into place, so a blob is either whole or absent. Every read
//! hashes the content again (while streaming it); content that no longer
//! matches its name is moved to `<root>/quarantine` and reported as
//! [`Error::Corrupt`], never returned. A read that is a *use* (deploying,
//! exporting, compiling) also sets the blob's modification time, which the
//! garbage collector takes as its last use.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::digest::{Digest, HashingReader, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::fsx::{is_not_found, open_dir, open_regular};

/// The blobs of a store.
#[derive(Clone, Debug)]
pub struct BlobStore {
    root: PathBuf,
}

/// Whether a read counts as a use of the blob (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A use: the blob's last-use time is set.
    Use,
    /// A look (listing, verifying, collecting garbage): nothing changes.
    Look,
}

/// A stored blob as listed.
#[derive(Clone, Debug)]
pub struct BlobInfo {
    /// Its name.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Its last use (modification time).
    pub last_used: SystemTime,
}

impl BlobStore {
    /// The blobs under `root` (an OCI layout's root); creates the
    /// directories if needed.
    pub fn open(root: &Path) -> Result<BlobStore> {
        for dir in ["blobs/sha256", "tmp", "quarantine"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).ctx(|| format!("creating {}", path.display()))?;
        }
        Ok(BlobStore {
            root: root.to_path_buf(),
        })
    }

    /// Where blob `d` lives.
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// The directory for temporary files (same filesystem as the blobs).
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The quarantine directory.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    /// Whether blob `d` is present (not whether it is intact).
    pub fn contains(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    /// Its size on disk, if present.
    pub fn size(&self, d: &Digest) -> Option<u64> {
        fs::metadata(self.path(d)).ok().map(|m| m.len())
    }

    /// Its last use, if present.
    pub fn last_used(&self, d: &Digest) -> Option<SystemTime> {
        fs::metadata(self.path(d)).and_then(|m| m.modified()).ok()
    }

    /// Stores `bytes`; returns their digest and size.
    pub fn put(&self, bytes: &[u8]) -> Result<(Digest, u64)> {
        self.put_with(None, |w| w.write_all(bytes))
    }

    /// Stores what `reader` yields; if `expected` is given, the content
    /// must have that digest and size, else nothing is stored.
    pub fn put_reader(
        &self,
        reader: &mut dyn Read,
        expected: Option<(&Digest, u64)>,
    ) -> Result<(Digest, u64)> {
        self.put_with(expected, |w| io::copy(reader, w).map(|_| ()))
    }

    /// Stores what `write` writes; see [`BlobStore::put_reader`] for
    /// `expected`. The blob appears atomically (temporary file, fsync,
    /// rename, fsync of the directory); an existing blob of the same name
    /// is replaced, which also heals a corrupt one.
    pub fn put_with(
        &self,
        expected: Option<(&Digest, u64)>,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(Digest, u64)> {
        let tmp = tempfile::NamedTempFile::new_in(self.tmp_dir())
            .ctx(|| format!("creating a temporary file in {}", self.tmp_dir().display()))?;
        let mut w = HashingWriter::new(io::BufWriter::new(tmp));
        write(&mut w).ctx(|| "writing a blob")?;
        let (digest, size, buffered) = w.finish();
        let tmp = buffered
            .into_inner()
            .map_err(|e| e.into_error())
            .ctx(|| "writing a blob")?;
        if let Some((want, want_size)) = expected {
            if *want != digest || want_size != size {
                return Err(Error::Mismatch {
                    what: format!("blob {want}"),
                    expected: format!("{want} ({want_size} bytes)"),
                    actual: format!("{digest} ({size} bytes)"),
                });
            }
        }
        tmp.as_file().sync_all().ctx(|| "syncing a blob")?;
        let path = self.path(&digest);
        tmp.persist(&path)
            .map_err(|e| e.error)
            .ctx(|| format!("storing {}", path.display()))?;
        sync_dir(path.parent().expect("blobs/sha256"));
        Ok((digest, size))
    }

    /// Reads blob `d` whole, checking its content.
    pub fn read(&self, d: &Digest, access: Access) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.stream(d, access, &mut out)?;
        Ok(out)
    }

    /// Checks blob `d` without keeping its content; returns its size.
    pub fn verify(&self, d: &Digest) -> Result<u64> {
        self.stream(d, Access::Look, &mut io::sink())
    }

    /// Streams blob `d` into `out`, checking its content. On a mismatch
    /// `out` has received bad bytes: the caller must discard them; the blob
    /// is quarantined and [`Error::Corrupt`] returned.
    pub fn stream(&self, d: &Digest, access: Access, out: &mut dyn Write) -> Result<u64> {
        let path = self.path(d);
        self.read_with(d, access, |r| {
            io::copy(r, out).ctx(|| format!("reading {}", path.display()))
        })
    }

    /// Gives blob `d`'s content to `read` as a stream, then checks it:
    /// whatever `read` left unread is hashed too. On a mismatch the blob is
    /// quarantined and [`Error::Corrupt`] returned whatever `read` returned
    /// (it read bad bytes). A blob that is not a regular file is
    /// [`Error::NotRegularFile`], before a byte is read.
    pub fn read_with<T>(
        &self,
        d: &Digest,
        access: Access,
        read: impl FnOnce(&mut dyn Read) -> Result<T>,
    ) -> Result<T> {
        let path = self.path(d);
        let file = match open_regular(&path) {
            Ok(f) => f,
            Err(e) if is_not_found(&e) => return Err(Error::MissingBlob(d.clone())),
            Err(e) => return Err(e),
        };
        let mut r = HashingReader::new(io::BufReader::new(&file));
        let result = read(&mut r);
        io::copy(&mut r, &mut io::sink()).ctx(|| format!("reading {}", path.display()))?;
        let (actual, _) = r.finish();
        if actual != *d {
            self.quarantine(d);
            return Err(Error::Corrupt { digest: d.clone() });
        }
        if access == Access::Use && result.is_ok() {
            // Best effort: the last use only orders garbage collection.
            let _ = file.set_modified(SystemTime::now());
        }
        result
    }

    /// Marks blob `d` as used now.
    pub fn touch(&self, d: &Digest) {
        if let Ok(f) = open_regular(&self.path(d)) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// Moves blob `d` out of the store into the quarantine directory.
    pub fn quarantine(&self, d: &Digest) {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.as_nanos());
        let to = self.quarantine_dir().join(format!("{}.{nanos}", d.hex()));
        if fs::rename(self.path(d), &to).is_err() {
            let _ = fs::remove_file(self.path(d));
        }
    }

    /// Removes blob `d`; returns the bytes freed.
    pub fn remove(&self, d: &Digest) -> Result<u64> {
        let path = self.path(d);
        let size = fs::metadata(&path).map_or(0, |m| m.len());
        match fs::remove_file(&path) {
            Ok(()) => Ok(size),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e).ctx(|| format!("removing {}", path.display())),
        }
    }

    /// Every stored blob (files with other names are ignored).
    pub fn list(&self) -> Result<Vec<BlobInfo>> {
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).ctx(|| format!("listing {}", dir.display()))? {
            let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
            let Some(digest) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            out.push(BlobInfo {
                digest,
                size: meta.len(),
                last_used: meta.modified().unwrap_or(UNIX_EPOCH),
            });
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }
}

/// Makes a rename in `dir` durable (best effort).
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = open_dir(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        (dir, blobs)
    }

    #[test]
    fn blobs_are_named_by_content_and_read_back() {
        let (_dir, blobs) = store();
        let (d, size) = blobs.put(b"hello").unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        assert_eq!(size, 5);
        assert!(blobs
            .path(&d)
            .ends_with(format!("blobs/sha256/{}", d.hex())));
        assert_eq!(blobs.read(&d, Access::Look).unwrap(), b"hello");
        assert_eq!(blobs.put(b"hello").unwrap().0, d);
        assert_eq!(blobs.list().unwrap().len(), 1);
        assert_eq!(fs::read_dir(blobs.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn a_flipped_byte_is_caught_and_quarantined() {
        let (_dir, blobs) = store();
        let (d, _) = blobs.put(&vec![1u8; 10_000]).unwrap();
        let mut bytes = fs::read(blobs.path(&d)).unwrap();
        bytes[5000] ^= 0x01;
        fs::write(blobs.path(&d), &bytes).unwrap();
        match blobs.read(&d, Access::Use) {
            Err(Error::Corrupt { digest }) => assert_eq!(digest, d),
            other => panic!("{other:?}"),
        }
        assert!(!blobs.contains(&d));
        assert_eq!(fs::read_dir(blobs.quarantine_dir()).unwrap().count(), 1);
        assert!(matches!(blobs.verify(&d), Err(Error::MissingBlob(_))));
        // Storing it again heals it.
        blobs.put(&vec![1u8; 10_000]).unwrap();
        assert_eq!(blobs.verify(&d).unwrap(), 10_000);
    }

    #[test]
    fn expected_digests_are_enforced() {
        let (_dir, blobs) = store();
        let want = Digest::of(b"right");
        let err = blobs
            .put_reader(&mut &b"wrong"[..], Some((&want, 5)))
            .unwrap_err();
        assert!(matches!(err, Error::Mismatch { .. }), "{err}");
        assert!(!blobs.contains(&want));
        assert!(blobs.list().unwrap().is_empty());
        let err = blobs
            .put_reader(&mut &b"right"[..], Some((&want, 6)))
            .unwrap_err();
        assert!(matches!(err, Error::Mismatch { .. }), "{err}");
        blobs
            .put_reader(&mut &b"right"[..], Some((&want, 5)))
            .unwrap();
        assert!(blobs.contains(&want));
    }

    #[test]
    fn uses_set_the_last_use_and_looks_do_not() {
        let (_dir, blobs) = store();
        let (d, _) = blobs.put(b"x").unwrap();
        let old = SystemTime::now() - std::time::Duration::from_secs(3600);
        File::open(blobs.path(&d))
            .unwrap()
            .set_modified(old)
            .unwrap();
        blobs.read(&d, Access::Look).unwrap();
        assert_eq!(blobs.last_used(&d).unwrap(), old);
        blobs.read(&d, Access::Use).unwrap();
        assert!(blobs.last_used(&d).unwrap() > old);
    }

    #[test]
    fn a_partial_read_is_checked_whole() {
        let (_dir, blobs) = store();
        let (d, _) = blobs.put(&vec![3u8; 100_000]).unwrap();
        // The reader stops early, or fails: the rest is hashed anyway.
        let head = blobs
            .read_with(&d, Access::Look, |r| {
                let mut head = [0u8; 4];
                r.read_exact(&mut head).ctx(|| "reading")?;
                Ok(head)
            })
            .unwrap();
        assert_eq!(head, [3; 4]);
        let mut bytes = fs::read(blobs.path(&d)).unwrap();
        bytes[99_999] ^= 1;
        fs::write(blobs.path(&d), &bytes).unwrap();
        let err = blobs
            .read_with(&d, Access::Use, |_| -> Result<()> {
                Err(Error::InvalidImage(
                    "what the bad bytes made the reader say".into(),
                ))
            })
            .unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(!blobs.contains(&d), "quarantined");
    }

    #[test]
    fn a_blob_that_is_not_a_regular_file_is_refused_at_once() {
        let (_dir, blobs) = store();
        let (d, _) = blobs.put(b"x").unwrap();
        fs::remove_file(blobs.path(&d)).unwrap();
        nix::unistd::mkfifo(&blobs.path(&d), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(matches!(
            blobs.read(&d, Access::Use),
            Err(Error::NotRegularFile { kind: "a FIFO", .. })
        ));
        blobs.touch(&d);
        // Storing it again replaces it.
        blobs.put(b"x").unwrap();
        assert_eq!(blobs.read(&d, Access::Use).unwrap(), b"x");
    }
}
