//! Opening a snapshot: everything is verified before it is handed out.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::manifest::{hex, MANIFEST_FILE, MEMORY_FILE, STATE_FILE};
use crate::memory::{self, Extent, PAGE_SIZE};
use crate::{Compat, CpuFeatures, Error, Manifest};

/// An opened, fully verified snapshot.
#[derive(Debug)]
pub struct Snapshot {
    dir: PathBuf,
    manifest: Manifest,
    state: Vec<u8>,
    memory: File,
}

impl Snapshot {
    /// Opens the snapshot at `dir` and verifies all of it before returning:
    /// the manifest's magic and format version; that it was built by
    /// `expect`; that `host_cpu` has all the CPU features it may use; every
    /// section's bounds and checksum; and the memory file's length, extents,
    /// checksum and that it holds no data outside its extents.
    ///
    /// The memory file stays open (read-only) for [`Snapshot::memory_file`].
    pub fn open(dir: &Path, expect: &Compat, host_cpu: &CpuFeatures) -> Result<Snapshot, Error> {
        Snapshot::open_checking(dir, expect, host_cpu, MemoryCheck::Full)
    }

    /// [`Snapshot::open`], with the memory file's data checked as `check`
    /// says: everything else is verified all the same.
    pub fn open_checking(
        dir: &Path,
        expect: &Compat,
        host_cpu: &CpuFeatures,
        check: MemoryCheck,
    ) -> Result<Snapshot, Error> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let text = fs::read_to_string(&manifest_path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound(dir.to_path_buf()),
            _ => Error::io("reading", &manifest_path)(e),
        })?;
        let manifest = Manifest::parse(&text, &manifest_path)?;
        manifest.compat.check(expect)?;
        let missing = manifest.cpu.missing_on(host_cpu);
        if !missing.is_empty() {
            return Err(Error::MissingCpuFeatures(missing));
        }

        let state_path = dir.join(STATE_FILE);
        let state = fs::read(&state_path).map_err(Error::io("reading", &state_path))?;
        check_sections(&manifest, &state)?;
        let memory = open_memory(dir, &manifest, check)?;
        Ok(Snapshot {
            dir: dir.to_path_buf(),
            manifest,
            state,
            memory,
        })
    }

    /// Decodes the section named `name`.
    pub fn section<T: DeserializeOwned>(&self, name: &str) -> Result<T, Error> {
        let entry = self
            .manifest
            .sections
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| Error::MissingSection(name.to_string()))?;
        // In bounds: checked by `open`.
        let bytes = &self.state[entry.offset as usize..(entry.offset + entry.len) as usize];
        let decode_error = |message: String| Error::Decode {
            section: name.to_string(),
            message,
        };
        let (value, rest) =
            postcard::take_from_bytes(bytes).map_err(|e| decode_error(e.to_string()))?;
        if !rest.is_empty() {
            return Err(decode_error(format!(
                "{} bytes left over after the value",
                rest.len()
            )));
        }
        Ok(value)
    }

    /// The guest memory file, open read-only: [`Snapshot::memory_size`]
    /// bytes, the page at guest-physical address `a` at offset `a`. Pages
    /// outside [`Manifest::memory`]'s extents are holes (zero).
    pub fn memory_file(&self) -> &File {
        &self.memory
    }

    /// The guest memory's size in bytes.
    pub fn memory_size(&self) -> u64 {
        self.manifest.memory.size
    }

    /// The pages to populate eagerly on restore: sorted, non-overlapping,
    /// within guest memory.
    pub fn working_set(&self) -> &[Extent] {
        &self.manifest.memory.working_set
    }

    /// The note set with [`crate::Builder::meta`] under `key`.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.manifest.meta.get(key).map(String::as_str)
    }

    /// The whole manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The snapshot's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// How much of a snapshot's memory data [`Snapshot::open_checking`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryCheck {
    /// Every data page against the checksum, and every hole for stray
    /// data: what [`Snapshot::open`] does.
    Full,
    /// Nothing of the data if the memory file is still the one `stamp`
    /// describes (a full check passed on it earlier), else [`Full`]: for
    /// a cache that opens the same snapshot again and again. The file's
    /// length and extents are checked either way.
    ///
    /// [`Full`]: MemoryCheck::Full
    UnlessUnchanged(FileStamp),
}

/// What identifies a file's contents without reading them: its device and
/// inode, its length, and its change time, which every write to the file
/// moves and no call can set back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileStamp {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// `st_size`.
    pub len: u64,
    /// `st_ctime` in nanoseconds since the epoch.
    pub ctime_ns: i128,
}

impl FileStamp {
    /// The stamp of the open `file`.
    pub fn of(file: &File) -> io::Result<FileStamp> {
        file.metadata().map(|m| FileStamp::from_metadata(&m))
    }

    /// The stamp of the snapshot memory file in `dir` (taken before a
    /// check, so that a change during it is a change after it).
    pub fn of_memory_in(dir: &Path) -> io::Result<FileStamp> {
        fs::metadata(dir.join(MEMORY_FILE)).map(|m| FileStamp::from_metadata(&m))
    }

    fn from_metadata(m: &fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.size(),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }
}

/// Checks that section names are unique and every section lies within
/// `state` with the recorded checksum.
fn check_sections(manifest: &Manifest, state: &[u8]) -> Result<(), Error> {
    let mut names = BTreeSet::new();
    for s in &manifest.sections {
        if !names.insert(s.name.as_str()) {
            return Err(Error::DuplicateSection(s.name.clone()));
        }
        let end = s
            .offset
            .checked_add(s.len)
            .filter(|&end| end <= state.len() as u64)
            .ok_or_else(|| Error::Truncated {
                what: format!("{STATE_FILE} (section `{}`)", s.name),
            })?;
        let bytes = &state[s.offset as usize..end as usize];
        if hex(xxhash_rust::xxh3::xxh3_64(bytes)) != s.xxh3 {
            return Err(Error::Checksum {
                what: format!("section `{}`", s.name),
            });
        }
    }
    Ok(())
}

/// Opens the memory file and checks it against the manifest.
fn open_memory(dir: &Path, manifest: &Manifest, check: MemoryCheck) -> Result<File, Error> {
    let m = &manifest.memory;
    if m.file != MEMORY_FILE {
        return Err(Error::Corrupt(format!(
            "the memory file is {:?}, not {MEMORY_FILE:?}",
            m.file
        )));
    }
    if !m.size.is_multiple_of(PAGE_SIZE) {
        return Err(Error::Corrupt(format!(
            "the memory size {} is not a whole number of pages",
            m.size
        )));
    }
    memory::check_extents(&m.extents, m.size, "memory extent").map_err(Error::Corrupt)?;
    memory::check_extents(&m.working_set, m.size, "working-set extent").map_err(Error::Corrupt)?;

    let path = dir.join(MEMORY_FILE);
    let file = File::open(&path).map_err(Error::io("opening", &path))?;
    let len = file
        .metadata()
        .map_err(Error::io("inspecting", &path))?
        .len();
    if len < m.size {
        return Err(Error::Truncated {
            what: format!("the memory file ({len} of {} bytes)", m.size),
        });
    }
    if len > m.size {
        return Err(Error::Corrupt(format!(
            "the memory file is {len} bytes, not {}",
            m.size
        )));
    }
    if let MemoryCheck::UnlessUnchanged(stamp) = check {
        if FileStamp::of(&file).is_ok_and(|now| now == stamp) {
            return Ok(file);
        }
    }
    let sum = memory::checksum_file(&file, &m.extents).map_err(Error::io("reading", &path))?;
    if hex(sum) != m.xxh3 {
        return Err(Error::Checksum {
            what: "guest memory".into(),
        });
    }
    if let Some(off) =
        memory::stray_data(&file, m.size, &m.extents).map_err(Error::io("reading", &path))?
    {
        return Err(Error::Corrupt(format!(
            "the memory file has data at offset {off:#x}, outside its recorded extents"
        )));
    }
    Ok(file)
}
