//! Writing a snapshot: everything goes into a temporary directory that is
//! swapped into place once complete and on disk.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::manifest::{hex, MANIFEST_FILE, MEMORY_FILE, STATE_FILE};
use crate::memory::{self, Extent, PAGE_SIZE};
use crate::{
    Compat, CpuFeatures, Error, Manifest, MemoryEntry, SectionEntry, FORMAT_VERSION, MAGIC,
};

/// Writes a snapshot to a directory `DIR`.
///
/// Everything goes into a fresh temporary directory next to `DIR` (same
/// parent, named `.DIR.tmp-<pid>-<nanos>`); every file is fsynced, the
/// manifest last, then the temporary directory, and only then does
/// [`Builder::commit`] move it into place. So a crash at any point never
/// leaves a `DIR` whose manifest refers to partial data. Dropping a `Builder`
/// without committing removes its temporary directory.
#[derive(Debug)]
pub struct Builder {
    dir: PathBuf,
    tmp: PathBuf,
    /// Whether `tmp` is still ours to remove on drop.
    armed: bool,
    state: File,
    state_len: u64,
    sections: Vec<SectionEntry>,
    memory: Option<MemoryEntry>,
    working_set: Vec<Extent>,
    meta: BTreeMap<String, String>,
}

impl Builder {
    /// Starts a snapshot that [`Builder::commit`] will put at `dir`.
    ///
    /// `dir`'s parent must exist; `dir` need not. If it exists it must be a
    /// snapshot (or an empty directory), which the commit replaces: any
    /// other directory or file is refused rather than deleted.
    pub fn new(dir: &Path) -> Result<Builder, Error> {
        let (parent, name) = split(dir)?;
        check_replaceable(dir)?;
        let tmp = fresh_dir(parent, &name, "tmp")?;
        let state_path = tmp.join(STATE_FILE);
        let state = match File::create_new(&state_path) {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(Error::io("creating", &state_path)(e));
            }
        };
        Ok(Builder {
            dir: dir.to_path_buf(),
            tmp,
            armed: true,
            state,
            state_len: 0,
            sections: Vec::new(),
            memory: None,
            working_set: Vec::new(),
            meta: BTreeMap::new(),
        })
    }

    /// Adds a section named `name` holding `value`, serialized with postcard.
    /// Each name may be used once.
    pub fn section<T: Serialize>(&mut self, name: &str, value: &T) -> Result<(), Error> {
        if self.sections.iter().any(|s| s.name == name) {
            return Err(Error::DuplicateSection(name.to_string()));
        }
        let bytes = postcard::to_stdvec(value)
            .map_err(|e| Error::Encode(format!("section `{name}`: {e}")))?;
        self.state
            .write_all(&bytes)
            .map_err(Error::io("writing", &self.tmp.join(STATE_FILE)))?;
        let len = bytes.len() as u64;
        self.sections.push(SectionEntry {
            name: name.to_string(),
            offset: self.state_len,
            len,
            xxh3: hex(xxhash_rust::xxh3::xxh3_64(&bytes)),
        });
        self.state_len += len;
        Ok(())
    }

    /// Writes the guest memory image `mem` (a whole number of pages) as a
    /// sparse file: only the pages that are not all zero are written, and
    /// recorded as extents with their checksum. Must be called exactly once
    /// (this or [`Builder::memory_within`]).
    pub fn memory(&mut self, mem: &[u8]) -> Result<(), Error> {
        let pages = mem.len() as u64 / PAGE_SIZE;
        let all = Extent {
            start_page: 0,
            pages,
        };
        self.memory_within(mem, &[all][..usize::from(pages > 0)])
    }

    /// Like [`Builder::memory`], for an image of which only the pages in
    /// `candidates` (in any order, possibly overlapping) can be non-zero,
    /// such as the pages a VM has touched: the rest of `mem` is taken to be
    /// zero and never read, so memory nobody touched is not faulted in.
    pub fn memory_within(&mut self, mem: &[u8], candidates: &[Extent]) -> Result<(), Error> {
        if self.memory.is_some() {
            return Err(Error::Invalid(
                "the guest memory image was given twice".into(),
            ));
        }
        let size = mem.len() as u64;
        if !size.is_multiple_of(PAGE_SIZE) {
            return Err(Error::Invalid(format!(
                "guest memory is {size} bytes, not a multiple of the {PAGE_SIZE}-byte page"
            )));
        }
        let candidates = memory::normalize(candidates.to_vec());
        memory::check_extents(&candidates, size, "candidate extent").map_err(Error::Invalid)?;
        let path = self.tmp.join(MEMORY_FILE);
        let extents = memory::nonzero_extents_within(mem, &candidates);
        let write = || -> io::Result<()> {
            let file = File::create_new(&path)?;
            file.set_len(size)?;
            memory::write_extents(&file, mem, &extents)?;
            file.sync_all()
        };
        write().map_err(Error::io("writing", &path))?;
        self.memory = Some(MemoryEntry {
            file: MEMORY_FILE.to_string(),
            size,
            xxh3: hex(memory::checksum_mem(mem, &extents)),
            extents,
            working_set: Vec::new(),
        });
        Ok(())
    }

    /// Opens the memory file written by [`Builder::memory`] read-only, e.g.
    /// to restore a VM from it before committing (to record a working set).
    /// The file is complete and never written again.
    pub fn memory_file(&self) -> Result<File, Error> {
        if self.memory.is_none() {
            return Err(Error::Invalid(
                "the guest memory image has not been written yet".into(),
            ));
        }
        let path = self.tmp.join(MEMORY_FILE);
        File::open(&path).map_err(Error::io("opening", &path))
    }

    /// Sets the pages to populate eagerly on restore. They may come in any
    /// order and overlap (they are sorted and merged); [`Builder::commit`]
    /// checks that they lie within guest memory.
    pub fn working_set(&mut self, pages: Vec<Extent>) {
        self.working_set = pages;
    }

    /// Sets a free-form note, readable with [`crate::Snapshot::meta`].
    pub fn meta(&mut self, key: &str, value: &str) {
        self.meta.insert(key.to_string(), value.to_string());
    }

    /// Writes the manifest and moves the snapshot into place, replacing any
    /// snapshot already there. [`Builder::memory`] must have been called.
    ///
    /// If `DIR` exists it is first renamed aside, then the new snapshot is
    /// renamed to `DIR` and the parent directory fsynced, and only then is
    /// the old snapshot removed (best effort: a failure to remove it leaves
    /// a `.DIR.old-*` directory behind but does not fail the commit).
    pub fn commit(mut self, compat: &Compat, cpu: &CpuFeatures) -> Result<(), Error> {
        let mut memory = self.memory.take().ok_or_else(|| {
            Error::Invalid("no guest memory image (Builder::memory was not called)".into())
        })?;
        memory.working_set = memory::normalize(std::mem::take(&mut self.working_set));
        memory::check_extents(&memory.working_set, memory.size, "working-set extent")
            .map_err(Error::Invalid)?;
        self.state
            .sync_all()
            .map_err(Error::io("syncing", &self.tmp.join(STATE_FILE)))?;

        let manifest = Manifest {
            magic: MAGIC.to_string(),
            format_version: FORMAT_VERSION,
            compat: compat.clone(),
            cpu: cpu.clone(),
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            meta: std::mem::take(&mut self.meta),
            sections: std::mem::take(&mut self.sections),
            memory,
        };
        let mut json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::Encode(format!("manifest: {e}")))?;
        json.push(b'\n');
        let path = self.tmp.join(MANIFEST_FILE);
        let write = || -> io::Result<()> {
            let mut file = File::create_new(&path)?;
            file.write_all(&json)?;
            file.sync_all()
        };
        write().map_err(Error::io("writing", &path))?;
        sync_dir(&self.tmp)?;
        self.swap_into_place()
    }

    /// Moves the complete temporary directory to `DIR`.
    fn swap_into_place(&mut self) -> Result<(), Error> {
        let (parent, name) = split(&self.dir)?;
        check_replaceable(&self.dir)?;
        let old = match fs::symlink_metadata(&self.dir) {
            Ok(_) => {
                let old = fresh_name(parent, &name, "old");
                fs::rename(&self.dir, &old).map_err(Error::io("moving aside", &self.dir))?;
                Some(old)
            }
            Err(_) => None,
        };
        if let Err(e) = fs::rename(&self.tmp, &self.dir) {
            if let Some(old) = &old {
                let _ = fs::rename(old, &self.dir);
            }
            return Err(Error::io("renaming", &self.tmp)(e));
        }
        self.armed = false;
        sync_dir(parent)?;
        if let Some(old) = old {
            let _ = fs::remove_dir_all(old);
        }
        Ok(())
    }
}

impl Drop for Builder {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// `dir`'s parent (`.` for a bare name) and final component.
fn split(dir: &Path) -> Result<(&Path, String), Error> {
    let name = dir
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("{} does not name a directory", dir.display())))?;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((parent, name.to_string_lossy().into_owned()))
}

/// Refuses to replace anything at `dir` but a snapshot or an empty directory.
fn check_replaceable(dir: &Path) -> Result<(), Error> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("inspecting", dir)(e)),
    };
    let replaceable = meta.is_dir()
        && (dir.join(MANIFEST_FILE).exists()
            || fs::read_dir(dir)
                .map_err(Error::io("reading", dir))?
                .next()
                .is_none());
    if replaceable {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{} exists and is not a snapshot; refusing to replace it",
            dir.display()
        )))
    }
}

/// `parent/.name.kind-<pid>-<nanos>`.
fn fresh_name(parent: &Path, name: &str, kind: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    parent.join(format!(".{name}.{kind}-{}-{nanos}", std::process::id()))
}

/// Creates a new directory named by [`fresh_name`].
fn fresh_dir(parent: &Path, name: &str, kind: &str) -> Result<PathBuf, Error> {
    loop {
        let path = fresh_name(parent, name, kind);
        match fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("creating", &path)(e)),
        }
    }
}

/// Makes a directory's entries durable.
fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("syncing", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{compat, entries};

    fn page_mem(pages: usize) -> Vec<u8> {
        let mut mem = vec![0u8; pages * PAGE_SIZE as usize];
        mem[0] = 1;
        mem
    }

    #[test]
    fn dropping_without_commit_leaves_nothing() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("snap");
        let mut b = Builder::new(&dir).unwrap();
        b.section("a", &1u32).unwrap();
        b.memory(&page_mem(4)).unwrap();
        assert_eq!(entries(parent.path()).len(), 1, "the temp dir exists");
        drop(b);
        assert!(entries(parent.path()).is_empty());
    }

    #[test]
    fn commit_leaves_only_the_snapshot() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("snap");
        let mut b = Builder::new(&dir).unwrap();
        b.memory(&page_mem(4)).unwrap();
        b.commit(&compat(), &CpuFeatures::host()).unwrap();
        assert_eq!(entries(parent.path()), ["snap"]);
        assert_eq!(entries(&dir), ["manifest.json", "memory", "state.bin"]);
    }

    #[test]
    fn builder_misuse_is_an_error() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("snap");
        let mut b = Builder::new(&dir).unwrap();
        b.section("a", &1u8).unwrap();
        assert!(matches!(b.section("a", &2u8), Err(Error::DuplicateSection(n)) if n == "a"));
        assert!(matches!(b.memory(&[0u8; 100]), Err(Error::Invalid(_))));
        b.memory(&page_mem(4)).unwrap();
        assert!(matches!(b.memory(&page_mem(4)), Err(Error::Invalid(_))));
        b.working_set(vec![Extent {
            start_page: 3,
            pages: 2,
        }]);
        assert!(matches!(
            b.commit(&compat(), &CpuFeatures::host()),
            Err(Error::Invalid(_))
        ));
        assert!(entries(parent.path()).is_empty());

        let b = Builder::new(&dir).unwrap();
        assert!(matches!(
            b.commit(&compat(), &CpuFeatures::host()),
            Err(Error::Invalid(_))
        ));
        assert!(entries(parent.path()).is_empty());
    }

    #[test]
    fn memory_within_writes_only_candidate_pages() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("snap");
        let p = PAGE_SIZE as usize;
        let mut mem = page_mem(8);
        mem[5 * p] = 9;
        let mut b = Builder::new(&dir).unwrap();
        let outside = Extent {
            start_page: 7,
            pages: 2,
        };
        assert!(matches!(
            b.memory_within(&mem, &[outside]),
            Err(Error::Invalid(_))
        ));
        let first = Extent {
            start_page: 0,
            pages: 2,
        };
        b.memory_within(&mem, &[first]).unwrap();
        b.commit(&compat(), &CpuFeatures::host()).unwrap();
        let snap = crate::Snapshot::open(&dir, &compat(), &CpuFeatures::host()).unwrap();
        // Page 5 was not a candidate: a hole, read as zero.
        assert_eq!(
            snap.manifest().memory.extents,
            [Extent {
                start_page: 0,
                pages: 1
            }]
        );
    }

    #[test]
    fn refuses_to_replace_what_is_not_a_snapshot() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("precious");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("thesis.tex"), "…").unwrap();
        assert!(matches!(Builder::new(&dir), Err(Error::Invalid(_))));
        fs::write(parent.path().join("file"), "").unwrap();
        assert!(matches!(
            Builder::new(&parent.path().join("file")),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            Builder::new(&parent.path().join("missing/snap")),
            Err(Error::Io { .. })
        ));
        // An empty directory may be filled.
        let empty = parent.path().join("empty");
        fs::create_dir(&empty).unwrap();
        let mut b = Builder::new(&empty).unwrap();
        b.memory(&page_mem(1)).unwrap();
        b.commit(&compat(), &CpuFeatures::host()).unwrap();
        assert!(empty.join(MANIFEST_FILE).exists());
    }
}
