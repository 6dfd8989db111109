//! `wisp run`'s cache of ready snapshots: a module booted to ready once is
//! restored on every later run instead of compiled, booted and initialised
//! again.
//!
//! A snapshot of a module at ready is a pure function of what went into the
//! boot: the module's bytes, the guest memory size, the files image
//! (`--files` contents and `--dir` mount points), the wisp build (whose
//! agent, wasmtime and compiler configuration are inside it) and the CPU. A
//! [`Key`] hashes all of them; anything else — arguments, environment,
//! stdin, clocks, the random seed, the host directories behind `--dir` —
//! comes with each invocation, so a restored VM runs the program exactly as
//! a fresh boot would.
//!
//! Entries live under `CACHE/snapshots/<key>/`, each a snapshot directory
//! (`wisp_snapshot`'s format, checksummed throughout; the memory data is
//! checked in full once per version of its file, see [`open_entry`]). They are written in
//! a private staging directory and renamed into place, so a concurrent run
//! sees a whole entry or none; two runs that build the same entry at once
//! keep whichever renames first. An entry that does not open — corrupt,
//! truncated, from another build — is removed and rebuilt, never used.
//! After each write, entries are evicted least recently used first (a hit
//! marks its entry used) until the cache fits its bound.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use wisp_vmm::{FileStamp, Image, Invocation, MemoryCheck, WorkingSet};

/// The default bound on the cache's size on disk.
pub const DEFAULT_MAX_BYTES: u64 = 512 << 20;

/// The cache's directory under the cache root.
const SNAPSHOTS: &str = "snapshots";
/// Staging directories and entries being removed, inside [`SNAPSHOTS`].
const STAGING: &str = ".tmp";
/// Staging left by a run that died is removed after this long.
const STALE: Duration = Duration::from_secs(3600);

/// In an entry: the [`FileStamp`] of its memory file when a full check of
/// its data last passed.
const VERIFIED: &str = "verified.json";

/// In an entry: what a run learned to copy ahead ([`KeptWorkingSet`]),
/// which restores then do ([`wisp_vmm::Prefault::WorkingSet`]) instead of
/// the guest faulting those pages in one by one.
const WORKING_SET: &str = "working-set.json";

/// A learned working set as an entry keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeptWorkingSet {
    /// Pages written in the snapshot's data, as runs of `(first page,
    /// count)`.
    written: Vec<(u64, u64)>,
    /// 2 MiB blocks touched so much that restores copy them whole.
    hot: Vec<u64>,
}

/// Opens the snapshot in `entry`. Its memory data (~1 MiB for a small
/// module, 71 MiB for a Python handler) is checksummed in full only if
/// the memory file is not the one a full check passed on before, as
/// [`VERIFIED`] records: its inode, length and change time, which any
/// write moves. Everything else is verified on every open.
fn open_entry(entry: &Path) -> Result<Image, wisp_vmm::Error> {
    let stamp_path = entry.join(VERIFIED);
    let verified: Option<FileStamp> = fs::read(&stamp_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let before = FileStamp::of_memory_in(entry).ok();
    let check = verified.map_or(MemoryCheck::Full, MemoryCheck::UnlessUnchanged);
    let image = Image::open_checking(entry, check)?;
    // A full check ran unless the file was the verified one; record what it
    // checked (as it was before, so a change during the check is seen next
    // time). Best effort: without it the next open checks in full again.
    if let Some(before) = before.filter(|b| verified != Some(*b)) {
        if let Ok(bytes) = serde_json::to_vec(&before) {
            replace_file(entry, VERIFIED, &bytes);
        }
    }
    // A hint: one that does not parse or fit is ignored.
    let kept: Option<KeptWorkingSet> = fs::read(entry.join(WORKING_SET))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    if let Some(kept) = kept {
        let _ = image.learn_kept(&WorkingSet {
            read: Vec::new(),
            written: kept.written,
            hot: kept.hot,
        });
    }
    Ok(image)
}

/// Writes `bytes` to `name` in `dir` whole or not at all (staged under a
/// name of this process's, then renamed), so concurrent runs never read
/// half of it. Best effort: whether it was written.
pub(crate) fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> bool {
    let staged = dir.join(format!(".{name}.{}", std::process::id()));
    let written = fs::write(&staged, bytes).is_ok() && fs::rename(&staged, dir.join(name)).is_ok();
    if !written {
        let _ = fs::remove_file(&staged);
    }
    written
}

/// Why the cache could not store an entry.
#[derive(Debug, thiserror::Error)]
pub enum RunCacheError {
    /// A file system operation on the cache failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// To what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The snapshot could not be written, or did not open once written.
    #[error("the snapshot for the cache")]
    Snapshot(#[source] wisp_vmm::Error),
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RunCacheError {
    let path = path.to_path_buf();
    move |source| RunCacheError::Io { op, path, source }
}

/// What a cached snapshot is made from, hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key(String);

impl Key {
    /// The key of the snapshot of the module whose bytes (`.wasm` or
    /// `.wat`) have SHA-256 `module_sha256`, booted with `mem_size` bytes
    /// of guest memory and the files image `files`, by this wisp build on
    /// this CPU.
    pub fn new(module_sha256: &[u8; 32], mem_size: u64, files: &[u8]) -> Key {
        Key::hashed(&[
            ("module", module_sha256),
            ("memory", &mem_size.to_le_bytes()),
            ("files", &Sha256::digest(files)),
        ])
    }

    /// The key of the snapshot of a handler on a language runtime: the
    /// runtime's image (by digest, which names its module and files), the
    /// handler's `code` (a tar), `mem_size` and what the bootstrap boots
    /// with (`boot`: the handler and environment), by this wisp build on
    /// this CPU. It needs no read of the interpreter's module.
    pub fn handler(runtime_image: &str, code: &[u8], mem_size: u64, boot: &Invocation) -> Key {
        let memory = mem_size.to_le_bytes();
        let code = Sha256::digest(code);
        let mut fields: Vec<(&str, &[u8])> = vec![
            ("kind", b"handler"),
            ("runtime-image", runtime_image.as_bytes()),
            ("memory", &memory),
            ("code", &code),
        ];
        fields.extend(boot.args.iter().map(|a| ("arg", a.as_slice())));
        fields.extend(boot.env.iter().map(|e| ("env", e.as_slice())));
        Key::hashed(&fields)
    }

    /// `fields`, then what makes a snapshot usable (this build, the CPU),
    /// hashed.
    fn hashed(fields: &[(&str, &[u8])]) -> Key {
        let compat = wisp_vmm::compat();
        let cpu = wisp_vmm::guest_cpu_features();
        let mut h = Sha256::new();
        let mut field = |name: &str, value: &[u8]| {
            h.update(name.as_bytes());
            h.update((value.len() as u64).to_le_bytes());
            h.update(value);
        };
        field("format", b"wisp-run-snapshot-1");
        for (name, value) in fields {
            field(name, value);
        }
        field("build", build_id().as_bytes());
        field("wisp", compat.wisp_version.as_bytes());
        field("wasmtime", compat.wasmtime_version.as_bytes());
        field("abi", &compat.abi_version.to_le_bytes());
        field("agent", compat.agent_hash.as_bytes());
        field("cpu-vendor", cpu.vendor.as_bytes());
        for feature in &cpu.features {
            field("cpu-feature", feature.as_bytes());
        }
        // Guest clocks run from the TSC at the rate the boot measured: a
        // cache shared by machines of another model must not be used.
        field("cpu-brand", &cpu_brand());
        Key(hex(&h.finalize()[..16]))
    }

    /// The key as the entry's directory name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The CPU's brand string (CPUID leaves 0x8000_0002..=4).
fn cpu_brand() -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    {
        (0x8000_0002u32..=0x8000_0004)
            .flat_map(|leaf| {
                let r = core::arch::x86_64::__cpuid(leaf);
                [r.eax, r.ebx, r.ecx, r.edx]
            })
            .flat_map(u32::to_le_bytes)
            .collect()
    }
    #[cfg(not(target_arch = "x86_64"))]
    Vec::new()
}

/// This executable's GNU build ID (the linker's hash of it), else its
/// size and modification time: what tells one wisp build from another.
pub fn build_id() -> String {
    let exe = Path::new("/proc/self/exe");
    let id = loaded_build_id().or_else(|| fs::File::open(exe).ok().and_then(|f| elf_build_id(&f)));
    if let Some(id) = id {
        return hex(&id);
    }
    match fs::metadata(exe) {
        Ok(m) => {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("size {} mtime {mtime}", m.len())
        }
        Err(_) => "unknown".to_string(),
    }
}

/// This executable's `NT_GNU_BUILD_ID` note, from its notes as loaded in
/// memory: no file to open and read on every `wisp run`.
fn loaded_build_id() -> Option<Vec<u8>> {
    /// Looks in the first object, the executable ([`libc::dl_iterate_phdr`]
    /// visits it first), then stops.
    unsafe extern "C" fn in_executable(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        found: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `info` is the loader's description of a loaded object,
        // valid during this call; `found` is the `Option` passed below.
        // Its program headers are `dlpi_phnum` entries at `dlpi_phdr`, and
        // a PT_NOTE segment lies, loaded, `p_memsz` bytes from `p_vaddr`
        // plus the object's load address.
        unsafe {
            let info = &*info;
            let found = &mut *found.cast::<Option<Vec<u8>>>();
            let headers = std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum));
            for header in headers.iter().filter(|h| h.p_type == libc::PT_NOTE) {
                let at = (info.dlpi_addr + header.p_vaddr) as *const u8;
                let notes = std::slice::from_raw_parts(at, header.p_memsz as usize);
                if let Some(id) = build_id_note(notes) {
                    *found = Some(id);
                    break;
                }
            }
        }
        1
    }
    let mut found: Option<Vec<u8>> = None;
    // SAFETY: the callback only reads the loader's headers and writes
    // `found`, which outlives the call.
    unsafe {
        libc::dl_iterate_phdr(Some(in_executable), (&raw mut found).cast());
    }
    found
}

/// The `NT_GNU_BUILD_ID` note of a 64-bit little-endian ELF file, read from
/// its program headers (notes sit at the start of the file).
fn elf_build_id(file: &fs::File) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    const PT_NOTE: u32 = 4;
    let mut head = vec![0u8; 8192];
    let n = file.read_at(&mut head, 0).ok()?;
    let head = &head[..n];
    if head.len() < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |b: &[u8], o: usize| Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |b: &[u8], o: usize| Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(head, 32)?).ok()?;
    let phentsize = usize::from(u16_at(head, 54)?);
    let phnum = usize::from(u16_at(head, 56)?);
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(head, ph)? != PT_NOTE {
            continue;
        }
        let offset = usize::try_from(u64_at(head, ph + 8)?).ok()?;
        let size = usize::try_from(u64_at(head, ph + 32)?).ok()?;
        if let Some(id) = build_id_note(head.get(offset..offset.checked_add(size)?)?) {
            return Some(id);
        }
    }
    None
}

/// The GNU build ID among ELF `notes`, if they hold one.
fn build_id_note(notes: &[u8]) -> Option<Vec<u8>> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let u32_at = |o: usize| Some(u32::from_le_bytes(notes.get(o..o + 4)?.try_into().ok()?));
    let mut pos = 0;
    while pos + 12 <= notes.len() {
        let namesz = u32_at(pos)? as usize;
        let descsz = u32_at(pos + 4)? as usize;
        let kind = u32_at(pos + 8)?;
        let desc = pos + 12 + namesz.next_multiple_of(4);
        let name = notes.get(pos + 12..pos + 12 + namesz)?;
        if kind == NT_GNU_BUILD_ID && name == b"GNU\0" {
            return notes.get(desc..desc + descsz).map(<[u8]>::to_vec);
        }
        pos = desc + descsz.next_multiple_of(4);
    }
    None
}

/// What a lookup found.
pub enum Lookup {
    /// A verified snapshot, ready to restore.
    Hit(Arc<Image>),
    /// No entry.
    Miss,
    /// An entry that did not open (why): it has been removed.
    Unusable(wisp_vmm::Error),
}

/// The snapshot cache in a directory.
#[derive(Clone, Debug)]
pub struct RunCache {
    dir: PathBuf,
    max_bytes: u64,
}

impl RunCache {
    /// The cache under `root` (the compile cache's directory), bounded to
    /// `max_bytes` on disk. Nothing is created until an entry is stored.
    pub fn new(root: &Path, max_bytes: u64) -> RunCache {
        RunCache {
            dir: root.join(SNAPSHOTS),
            max_bytes,
        }
    }

    /// The directory of `key`'s entry.
    pub fn entry(&self, key: &Key) -> PathBuf {
        self.dir.join(key.as_str())
    }

    /// Opens and verifies `key`'s entry. One that exists but does not open
    /// is removed.
    pub fn get(&self, key: &Key) -> Lookup {
        let entry = self.entry(key);
        match open_entry(&entry) {
            Ok(image) => Lookup::Hit(Arc::new(image)),
            Err(wisp_vmm::Error::Snapshot(wisp_snapshot::Error::NotFound(_))) => Lookup::Miss,
            Err(e) => {
                self.remove(&entry);
                Lookup::Unusable(e)
            }
        }
    }

    /// Records in `key`'s entry the working set its image learned from a
    /// run ([`wisp_vmm::Vm::learn_working_set`]), for later runs' restores
    /// to copy ahead. Best effort.
    pub fn keep_working_set(&self, key: &Key, image: &Image) {
        let set = image.working_set();
        if set.is_empty() {
            return;
        }
        let kept = KeptWorkingSet {
            written: set.written.clone(),
            hot: set.hot.clone(),
        };
        if let Ok(bytes) = serde_json::to_vec(&kept) {
            replace_file(&self.entry(key), WORKING_SET, &bytes);
        }
    }

    /// Marks `key`'s entry as just used, for eviction. Best effort.
    pub fn touch(&self, key: &Key) {
        if let Ok(dir) = fs::File::open(self.entry(key)) {
            let _ = dir.set_modified(SystemTime::now());
        }
    }

    /// Stores a snapshot that `write` writes into the directory it is
    /// given (which must not exist yet), then evicts down to the bound.
    /// Returns the stored entry, opened; if another run stored the same key
    /// meanwhile, that one.
    pub fn insert(
        &self,
        key: &Key,
        write: impl FnOnce(&Path) -> Result<(), wisp_vmm::Error>,
    ) -> Result<Arc<Image>, RunCacheError> {
        let staging_root = self.dir.join(STAGING);
        fs::create_dir_all(&staging_root).map_err(io_error("creating", &staging_root))?;
        let staging = unique_dir(&staging_root, "new")?;
        let result = self.insert_from(key, &staging, write);
        let _ = fs::remove_dir_all(&staging);
        let image = result?;
        self.evict();
        Ok(image)
    }

    fn insert_from(
        &self,
        key: &Key,
        staging: &Path,
        write: impl FnOnce(&Path) -> Result<(), wisp_vmm::Error>,
    ) -> Result<Arc<Image>, RunCacheError> {
        let built = staging.join("snapshot");
        write(&built).map_err(RunCacheError::Snapshot)?;
        let entry = self.entry(key);
        // rename(2) puts a directory in place only if nothing (or an empty
        // directory) is there: a run that stored the same key first wins.
        match fs::rename(&built, &entry) {
            Ok(()) => {}
            Err(e) if entry.exists() => {
                if let Lookup::Hit(image) = self.get(key) {
                    return Ok(image);
                }
                return Err(io_error("storing", &entry)(e));
            }
            Err(e) => return Err(io_error("storing", &entry)(e)),
        }
        open_entry(&entry)
            .map(Arc::new)
            .map_err(RunCacheError::Snapshot)
    }

    /// Removes `entry`: renamed aside first, so no run ever opens half of
    /// it. Best effort.
    fn remove(&self, entry: &Path) {
        let staging_root = self.dir.join(STAGING);
        let _ = fs::create_dir_all(&staging_root);
        if let Ok(aside) = unique_dir(&staging_root, "old") {
            let _ = fs::remove_dir(&aside);
            if fs::rename(entry, &aside).is_ok() {
                let _ = fs::remove_dir_all(&aside);
            }
        }
    }

    /// The entries, most recently used first: (directory, bytes on disk).
    pub fn entries(&self) -> Vec<(PathBuf, u64)> {
        let Ok(list) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut entries: Vec<(PathBuf, SystemTime, u64)> = list
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| {
                let used = e.metadata().ok()?.modified().ok()?;
                Some((e.path(), used, disk_usage(&e.path())))
            })
            .collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.1));
        entries.into_iter().map(|(p, _, size)| (p, size)).collect()
    }

    /// Removes the least recently used entries until the rest fit the
    /// bound, and staging that runs which died left behind. Best effort:
    /// another run may be evicting at the same time.
    pub fn evict(&self) {
        let mut total = 0u64;
        for (entry, size) in self.entries() {
            total = total.saturating_add(size);
            if total > self.max_bytes {
                self.remove(&entry);
            }
        }
        let staging_root = self.dir.join(STAGING);
        let Ok(list) = fs::read_dir(&staging_root) else {
            return;
        };
        for dir in list.flatten() {
            let stale = dir
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE);
            if stale {
                let _ = fs::remove_dir_all(dir.path());
            }
        }
    }
}

/// A new directory `parent/<kind>-<pid>-<nanos>`.
fn unique_dir(parent: &Path, kind: &str) -> Result<PathBuf, RunCacheError> {
    loop {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = parent.join(format!("{kind}-{}-{nanos}", std::process::id()));
        match fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_error("creating", &path)(e)),
        }
    }
}

/// Bytes the files directly in `dir` take on disk (a snapshot's memory file
/// is sparse: its holes take nothing).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::read_dir(dir)
        .map(|list| {
            list.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_change_with_every_input() {
        let module = Sha256::digest(b"(module)").into();
        let base = Key::new(&module, 64 << 20, b"");
        assert_eq!(base, Key::new(&module, 64 << 20, b""));
        assert_eq!(base.as_str().len(), 32);
        let other = Sha256::digest(b"(module) ").into();
        assert_ne!(base, Key::new(&other, 64 << 20, b""));
        assert_ne!(base, Key::new(&module, 128 << 20, b""));
        assert_ne!(base, Key::new(&module, 64 << 20, b"files"));
    }

    #[test]
    fn this_binary_has_a_build_id() {
        // Debian's toolchain links with --build-id; the fallback would
        // still tell builds apart.
        let id = build_id();
        assert!(!id.is_empty() && id != "unknown", "{id}");
        assert_eq!(id, build_id());
    }

    #[test]
    fn elf_notes_are_parsed_and_garbage_is_not() {
        let exe = fs::File::open("/proc/self/exe").unwrap();
        let id = elf_build_id(&exe).expect("a build ID note");
        assert!(id.len() >= 8, "{id:?}");
        assert_eq!(
            loaded_build_id(),
            Some(id.clone()),
            "the loaded notes say the same"
        );
        let garbage = tempfile::tempfile().unwrap();
        std::os::unix::fs::FileExt::write_all_at(&garbage, b"\x7fELF\x02\x01junk", 0).unwrap();
        assert_eq!(elf_build_id(&garbage), None);
    }

    #[test]
    fn eviction_keeps_the_most_recently_used_within_the_bound() {
        let root = tempfile::tempdir().unwrap();
        let cache = RunCache::new(root.path(), 3 * 4096);
        let now = SystemTime::now();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let dir = cache.dir.join(name);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("memory"), vec![1u8; 4096]).unwrap();
            let used = now - Duration::from_secs(10 * (3 - i as u64));
            fs::File::open(&dir).unwrap().set_modified(used).unwrap();
        }
        // "a" is the oldest but was just used.
        fs::File::open(cache.dir.join("a"))
            .unwrap()
            .set_modified(now)
            .unwrap();
        let cache = RunCache::new(root.path(), 2 * 4096);
        cache.evict();
        let left: Vec<String> = cache
            .entries()
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["a", "c"]);
        assert!(fs::read_dir(cache.dir.join(STAGING))
            .unwrap()
            .next()
            .is_none());
    }
}
