//! The descriptor table and the WASI operations on it. Descriptors 0-2 are
//! the agent's stdio; the table hands out 3 and up: the preopened
//! directories first, in mount order, then whatever the module opens.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use wisp_abi::wasi::{
    check_fstflags, fdflags, filetype, fstflags, oflags, open_flags_error, rights, write_dirents,
    Errno, FileStat, OpenMode, LOOKUP_SYMLINK_FOLLOW,
};

use wisp_abi::paths::{single_name, split_parent, strip_trailing_slashes, Base};

use crate::path::{Resolved, Walk, MAX_NAME, MAX_PATH};
use crate::tree::{Data, Ino, Kind, Tree};

/// Directories are open for reading only.
const DIR_MODE: OpenMode = OpenMode {
    read: true,
    write: false,
};

/// Most descriptors open at once (stdio included).
const MAX_FDS: usize = 1024;

/// A mounted directory tree.
struct Mount {
    /// The name the module sees (`fd_prestat_dir_name`).
    name: Vec<u8>,
    writable: bool,
}

/// An open file or directory of the in-memory tree.
#[derive(Clone)]
struct Handle {
    ino: Ino,
    /// Mount whose preopen this is, for `fd_prestat_*`.
    preopen: Option<usize>,
    mode: OpenMode,
    /// `fdflags::APPEND` (files only).
    append: bool,
    /// `fdflags::NONBLOCK` (files only; nothing here blocks).
    nonblock: bool,
    pos: u64,
}

/// One of the standard streams, which the agent serves itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stdio {
    /// Standard input (fd 0 at start).
    In,
    /// Standard output (fd 1 at start).
    Out,
    /// Standard error (fd 2 at start).
    Err,
}

/// What a descriptor number stands for.
#[derive(Clone)]
enum Entry {
    Local(Handle),
    Foreign(Foreign),
    Stdio(Stdio),
}

/// `fd_fdstat_get`'s answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdStat {
    /// `filetype`.
    pub filetype: u8,
    /// `fdflags`.
    pub flags: u16,
    /// Rights of the descriptor.
    pub rights: u64,
    /// Rights of what it opens.
    pub inheriting: u64,
}

/// What a new directory entry is (for images being mounted).
pub enum DirEntryKind {
    /// A directory.
    Dir,
    /// A file whose bytes live in guest memory for the VM's life.
    File(&'static [u8]),
    /// A symlink.
    Symlink(&'static [u8]),
}

/// A descriptor served by the host (a directory mapped with `--dir`, or
/// what was opened in one): the agent forwards its operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Foreign {
    /// The host's handle.
    pub host: u32,
    /// `filetype`.
    pub filetype: u8,
    /// Whether it was opened to read and to write.
    pub mode: OpenMode,
    /// `fdflags::APPEND`: writes go to the end of the file.
    pub append: bool,
    /// `fdflags::NONBLOCK`, reported back only.
    pub nonblock: bool,
    /// The position `fd_read`/`fd_write` use; the host reads and writes at
    /// explicit offsets.
    pub pos: u64,
    /// The guest path, for a preopened directory.
    pub preopen: Option<Vec<u8>>,
}

impl Foreign {
    /// A preopened host directory named `path`.
    pub fn preopen(host: u32, path: &[u8]) -> Foreign {
        Foreign {
            host,
            filetype: filetype::DIRECTORY,
            mode: OpenMode {
                read: true,
                write: false,
            },
            append: false,
            nonblock: false,
            pos: 0,
            preopen: Some(path.to_vec()),
        }
    }
}

/// What a descriptor is, for the calls that treat kinds differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdKind {
    /// A standard stream.
    Stdio(Stdio),
    /// A directory (here or the host's).
    Dir,
    /// A regular file, symlink or other non-directory (here or the host's).
    File,
}

/// The answer to the descriptor-level checks every call makes first.
fn kind_of(entry: &Entry, tree: &Tree) -> FdKind {
    match entry {
        Entry::Stdio(s) => FdKind::Stdio(*s),
        Entry::Local(h) if tree.get(h.ino).is_dir() => FdKind::Dir,
        Entry::Foreign(f) if f.filetype == filetype::DIRECTORY => FdKind::Dir,
        _ => FdKind::File,
    }
}

/// The filesystem and its descriptors.
pub struct Vfs {
    tree: Tree,
    mounts: Vec<Mount>,
    fds: BTreeMap<u32, Entry>,
    /// Numbers given back by `fd_close` and `fd_renumber`, reused highest
    /// first, as wasmtime does.
    free: BTreeSet<u32>,
    now: u64,
}

impl Default for Vfs {
    fn default() -> Self {
        Vfs::new(u64::MAX)
    }
}

impl Vfs {
    /// A filesystem with only the standard streams (fds 0-2); owned file
    /// data may take `budget` bytes.
    pub fn new(budget: u64) -> Vfs {
        let mut fds = BTreeMap::new();
        fds.insert(0, Entry::Stdio(Stdio::In));
        fds.insert(1, Entry::Stdio(Stdio::Out));
        fds.insert(2, Entry::Stdio(Stdio::Err));
        Vfs {
            tree: Tree::new(budget),
            mounts: Vec::new(),
            fds,
            free: BTreeSet::new(),
            now: 0,
        }
    }

    /// Changes the budget for owned file data (scratch files).
    pub fn set_budget(&mut self, budget: u64) {
        self.tree.set_budget(budget);
    }

    /// Sets the time that new or changed inodes get, ns since the epoch.
    pub fn set_now(&mut self, now: u64) {
        self.now = now;
    }

    /// Mounts an empty directory as a preopen named `name`; returns its
    /// descriptor.
    pub fn mount(&mut self, name: &[u8], writable: bool) -> Result<u32, Errno> {
        let mount = self.mounts.len();
        let root = self.tree.add(
            Kind::Dir {
                entries: BTreeMap::new(),
                parent: 0,
            },
            mount,
            self.now,
        );
        let inode = self.tree.get_mut(root);
        inode.nlink = 2;
        if let Kind::Dir { parent, .. } = &mut inode.kind {
            *parent = root;
        }
        self.mounts.push(Mount {
            name: name.to_vec(),
            writable,
        });
        self.insert_local(Handle {
            ino: root,
            preopen: Some(mount),
            mode: DIR_MODE,
            append: false,
            nonblock: false,
            pos: 0,
        })
    }

    /// Adds `path` (relative, parents first) under the preopen `fd`, whatever
    /// the mount's writability: this is how images are filled.
    pub fn add(&mut self, fd: u32, path: &[u8], kind: DirEntryKind) -> Result<(), Errno> {
        let (parent, name) = match self.walk(fd)?.resolve(path, false, false)? {
            Resolved::Missing { dir, name } => (dir, name),
            Resolved::Exists(_) => return Err(Errno::Exist),
        };
        match kind {
            DirEntryKind::Dir => {
                self.new_dir(parent, name);
            }
            DirEntryKind::File(bytes) => {
                self.link_new(parent, name, Kind::File(Data::Static(bytes)));
            }
            DirEntryKind::Symlink(target) => {
                self.link_new(parent, name, Kind::Symlink(target.to_vec()));
            }
        }
        Ok(())
    }

    /// The number a new descriptor gets: the highest one given back, else
    /// one past the highest open.
    fn insert(&mut self, entry: Entry) -> Result<u32, Errno> {
        if self.fds.len() >= MAX_FDS {
            return Err(Errno::Mfile);
        }
        let fd = match self.free.pop_last() {
            Some(fd) => fd,
            None => match self.fds.last_key_value() {
                Some((&last, _)) => last.checked_add(1).ok_or(Errno::Mfile)?,
                None => 0,
            },
        };
        self.fds.insert(fd, entry);
        Ok(fd)
    }

    fn insert_local(&mut self, handle: Handle) -> Result<u32, Errno> {
        let ino = handle.ino;
        let fd = self.insert(Entry::Local(handle))?;
        self.tree.get_mut(ino).open += 1;
        Ok(fd)
    }

    /// Gives a descriptor to something the host serves.
    pub fn add_foreign(&mut self, foreign: Foreign) -> Result<u32, Errno> {
        self.insert(Entry::Foreign(foreign))
    }

    /// What the host serves behind `fd`, if it does.
    pub fn foreign(&self, fd: u32) -> Option<&Foreign> {
        match self.fds.get(&fd) {
            Some(Entry::Foreign(f)) => Some(f),
            _ => None,
        }
    }

    /// The host's descriptor behind `fd`, to move its position.
    pub fn foreign_mut(&mut self, fd: u32) -> Option<&mut Foreign> {
        match self.fds.get_mut(&fd) {
            Some(Entry::Foreign(f)) => Some(f),
            _ => None,
        }
    }

    /// The standard stream behind `fd`, if it is one.
    pub fn stdio(&self, fd: u32) -> Option<Stdio> {
        match self.fds.get(&fd) {
            Some(Entry::Stdio(s)) => Some(*s),
            _ => None,
        }
    }

    /// What kind of descriptor `fd` is (`EBADF` if none).
    pub fn kind(&self, fd: u32) -> Result<FdKind, Errno> {
        self.fds
            .get(&fd)
            .map(|e| kind_of(e, &self.tree))
            .ok_or(Errno::Badf)
    }

    fn handle(&self, fd: u32) -> Result<&Handle, Errno> {
        match self.fds.get(&fd) {
            Some(Entry::Local(h)) => Ok(h),
            _ => Err(Errno::Badf),
        }
    }

    fn handle_mut(&mut self, fd: u32) -> Result<&mut Handle, Errno> {
        match self.fds.get_mut(&fd) {
            Some(Entry::Local(h)) => Ok(h),
            _ => Err(Errno::Badf),
        }
    }

    /// The directory behind `fd`: `EBADF` for anything else, as wasmtime
    /// answers for path calls on files and stdio.
    fn dir(&self, fd: u32) -> Result<Ino, Errno> {
        let h = self.handle(fd)?;
        if !self.tree.get(h.ino).is_dir() {
            return Err(Errno::Badf);
        }
        Ok(h.ino)
    }

    /// The file behind `fd` (`EBADF` for a directory or stdio).
    fn file(&self, fd: u32) -> Result<&Handle, Errno> {
        let h = self.handle(fd)?;
        match self.tree.get(h.ino).kind {
            Kind::File(_) => Ok(h),
            _ => Err(Errno::Badf),
        }
    }

    fn writable(&self, ino: Ino) -> Result<(), Errno> {
        if self.mounts[self.tree.get(ino).mount].writable {
            Ok(())
        } else {
            Err(Errno::Rofs)
        }
    }

    /// Links a new inode into `parent` under `name`.
    fn link_new(&mut self, parent: Ino, name: Vec<u8>, kind: Kind) -> Ino {
        let mount = self.tree.get(parent).mount;
        let ino = self.tree.add(kind, mount, self.now);
        self.tree
            .entries_mut(parent)
            .expect("parent is a directory")
            .insert(name, ino);
        self.touch_dir(parent);
        ino
    }

    fn touch_dir(&mut self, dir: Ino) {
        let now = self.now;
        let inode = self.tree.get_mut(dir);
        inode.mtim = now;
        inode.ctim = now;
    }

    // --- descriptors -------------------------------------------------------

    /// `fd_prestat_get` / `fd_prestat_dir_name`: the preopen's name
    /// (`EBADF` for anything else).
    pub fn prestat(&self, fd: u32) -> Result<&[u8], Errno> {
        match self.fds.get(&fd) {
            Some(Entry::Foreign(f)) => f.preopen.as_deref().ok_or(Errno::Badf),
            Some(Entry::Local(Handle {
                preopen: Some(mount),
                ..
            })) => Ok(&self.mounts[*mount].name),
            _ => Err(Errno::Badf),
        }
    }

    /// Whether `fd` is open.
    pub fn is_open(&self, fd: u32) -> bool {
        self.fds.contains_key(&fd)
    }

    /// `fd_close`; for a foreign descriptor, returns the host handle to
    /// close.
    pub fn close(&mut self, fd: u32) -> Result<Option<u32>, Errno> {
        let entry = self.fds.remove(&fd).ok_or(Errno::Badf)?;
        self.free.insert(fd);
        Ok(match entry {
            Entry::Foreign(f) => Some(f.host),
            Entry::Local(h) => {
                self.tree.get_mut(h.ino).open -= 1;
                self.tree.release(h.ino);
                None
            }
            Entry::Stdio(_) => None,
        })
    }

    /// `fd_renumber`: `from` takes the place of `to`, which is closed (its
    /// host handle, if foreign, is returned to be closed too).
    pub fn renumber(&mut self, from: u32, to: u32) -> Result<Option<u32>, Errno> {
        if !self.is_open(from) || !self.is_open(to) {
            return Err(Errno::Badf);
        }
        if from == to {
            return Ok(None);
        }
        let displaced = self.close(to)?;
        let entry = self.fds.remove(&from).expect("checked above");
        self.free.insert(from);
        self.free.remove(&to);
        self.fds.insert(to, entry);
        Ok(displaced)
    }

    /// `fd_fdstat_get`, with the rights wasmtime reports: fixed sets for
    /// stdio and preopens, otherwise what the kind and open mode allow.
    pub fn fdstat(&self, fd: u32) -> Result<FdStat, Errno> {
        let stat = |filetype, flags, rights, inheriting| FdStat {
            filetype,
            flags,
            rights,
            inheriting,
        };
        let file_flags = |append: bool, nonblock: bool| {
            (if append { fdflags::APPEND } else { 0 })
                | if nonblock { fdflags::NONBLOCK } else { 0 }
        };
        Ok(match self.fds.get(&fd).ok_or(Errno::Badf)? {
            // Stdio is never a terminal here: a pipe's answers.
            Entry::Stdio(Stdio::In) => stat(filetype::UNKNOWN, 0, rights::FD_READ, rights::FD_READ),
            Entry::Stdio(_) => stat(filetype::UNKNOWN, 0, rights::FD_WRITE, rights::FD_WRITE),
            Entry::Local(Handle {
                preopen: Some(_), ..
            }) => stat(
                filetype::DIRECTORY,
                0,
                rights::PREOPEN,
                rights::PREOPEN_INHERITING,
            ),
            Entry::Foreign(f) if f.preopen.is_some() => stat(
                filetype::DIRECTORY,
                0,
                rights::PREOPEN,
                rights::PREOPEN_INHERITING,
            ),
            Entry::Local(h) => {
                let inode = self.tree.get(h.ino);
                let r = rights::of_opened(inode.is_dir(), h.mode);
                let flags = if inode.is_dir() {
                    0
                } else {
                    file_flags(h.append, h.nonblock)
                };
                stat(inode.filetype(), flags, r, r)
            }
            Entry::Foreign(f) => {
                let dir = f.filetype == filetype::DIRECTORY;
                let r = rights::of_opened(dir, f.mode);
                let flags = if dir {
                    0
                } else {
                    file_flags(f.append, f.nonblock)
                };
                stat(f.filetype, flags, r, r)
            }
        })
    }

    /// `fd_fdstat_set_flags`: files only (`EBADF` otherwise); `APPEND` and
    /// `NONBLOCK` can change, the synchronous flags are refused with
    /// `EINVAL`, as wasmtime does.
    pub fn set_flags(&mut self, fd: u32, flags: u16) -> Result<(), Errno> {
        if flags & !fdflags::ALL != 0 {
            return Err(Errno::Inval);
        }
        if self.kind(fd)? != FdKind::File {
            return Err(Errno::Badf);
        }
        if flags & fdflags::SYNCS != 0 {
            return Err(Errno::Inval);
        }
        let (append, nonblock) = (flags & fdflags::APPEND != 0, flags & fdflags::NONBLOCK != 0);
        match self.fds.get_mut(&fd) {
            Some(Entry::Local(h)) => (h.append, h.nonblock) = (append, nonblock),
            Some(Entry::Foreign(f)) => (f.append, f.nonblock) = (append, nonblock),
            _ => unreachable!("a file"),
        }
        Ok(())
    }

    /// `fd_fdstat_set_rights`: rights are not enforced, so they cannot be
    /// changed either: `ENOTSUP` for a file or directory, `EBADF` for stdio
    /// or nothing, as wasmtime answers.
    pub fn set_rights(&mut self, fd: u32, base: u64, inheriting: u64) -> Result<(), Errno> {
        if (base | inheriting) & !rights::ALL != 0 {
            return Err(Errno::Inval);
        }
        match self.kind(fd)? {
            FdKind::Stdio(_) => Err(Errno::Badf),
            _ => Err(Errno::Notsup),
        }
    }

    fn stat(&self, ino: Ino) -> FileStat {
        let i = self.tree.get(ino);
        FileStat {
            dev: 1,
            ino: ino as u64 + 1,
            filetype: i.filetype(),
            nlink: i.nlink,
            size: i.size(),
            atim: i.atim,
            mtim: i.mtim,
            ctim: i.ctim,
        }
    }

    /// `fd_filestat_get` (stdio: zeros, as a pipe is reported).
    pub fn filestat(&self, fd: u32) -> Result<FileStat, Errno> {
        if self.stdio(fd).is_some() {
            return Ok(FileStat {
                dev: 0,
                ino: 0,
                filetype: filetype::UNKNOWN,
                nlink: 0,
                size: 0,
                atim: 0,
                mtim: 0,
                ctim: 0,
            });
        }
        Ok(self.stat(self.handle(fd)?.ino))
    }

    /// `path_filestat_get`. Not following symlinks, a path that is a
    /// single name to Rust's `Path` (`f`, `f/`, `f/.`) is looked up as that
    /// name, trailing slash or not, as wasmtime does (with `fstatat`).
    pub fn path_filestat(&self, fd: u32, lookup: u32, path: &[u8]) -> Result<FileStat, Errno> {
        let follow = lookup & LOOKUP_SYMLINK_FOLLOW != 0;
        let ino = match single_name(path) {
            Some(name) if !follow => {
                check_path(path)?;
                self.entry(self.dir(fd)?, name)?.ok_or(Errno::Noent)?
            }
            _ => self.walk(fd)?.existing(path, follow)?,
        };
        Ok(self.stat(ino))
    }

    /// A resolution beneath directory `fd`.
    fn walk(&self, fd: u32) -> Result<Walk<'_>, Errno> {
        Ok(Walk::new(&self.tree, self.dir(fd)?))
    }

    /// What `name` is in directory `dir`.
    fn entry(&self, dir: Ino, name: &[u8]) -> Result<Option<Ino>, Errno> {
        if name.len() > MAX_NAME {
            return Err(Errno::Nametoolong);
        }
        Ok(self.tree.get(dir).entries()?.get(name).copied())
    }

    /// The directory holding `path`'s last component, and that component,
    /// as cap-std's `open_parent` finds them (see [`split_parent`]).
    fn open_parent<'p>(&self, fd: u32, path: &'p [u8]) -> Result<(Ino, Base<'p>), Errno> {
        check_path(path)?;
        let (dir, base) = split_parent(path)?;
        let dir = self.walk(fd)?.directory(dir)?;
        if let Base::Name(name) = &base {
            if name.len() > MAX_NAME {
                return Err(Errno::Nametoolong);
            }
        }
        Ok((dir, base))
    }

    /// The inode `path` names, opened without `O_CREAT` the way the kernel
    /// opens it (see [`Vfs::open_checks`]).
    fn open_existing(&self, fd: u32, path: &[u8], follow: bool, write: bool) -> Result<Ino, Errno> {
        let ino = self.walk(fd)?.existing(path, follow)?;
        self.open_checks(ino, write)?;
        Ok(ino)
    }

    /// `fd_filestat_set_size`: files opened for writing (`EINVAL`
    /// otherwise, as `ftruncate` answers).
    pub fn set_size(&mut self, fd: u32, size: u64) -> Result<(), Errno> {
        let h = self.file(fd)?;
        let ino = h.ino;
        if !h.mode.write {
            return Err(Errno::Inval);
        }
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s <= i64::MAX as usize)
            .ok_or(Errno::Inval)?;
        self.tree.set_len(ino, size)?;
        self.modified(ino);
        Ok(())
    }

    fn modified(&mut self, ino: Ino) {
        let now = self.now;
        let i = self.tree.get_mut(ino);
        i.mtim = now;
        i.ctim = now;
    }

    fn set_times_of(&mut self, ino: Ino, atim: u64, mtim: u64, flags: u16) -> Result<(), Errno> {
        check_fstflags(flags)?;
        if flags == 0 {
            // Both times left as they are: `utimensat` changes nothing and
            // checks nothing, not even a read-only mount.
            return Ok(());
        }
        self.writable(ino)?;
        let now = self.now;
        let i = self.tree.get_mut(ino);
        if flags & fstflags::ATIM != 0 {
            i.atim = atim;
        } else if flags & fstflags::ATIM_NOW != 0 {
            i.atim = now;
        }
        if flags & fstflags::MTIM != 0 {
            i.mtim = mtim;
        } else if flags & fstflags::MTIM_NOW != 0 {
            i.mtim = now;
        }
        i.ctim = now;
        Ok(())
    }

    /// `fd_filestat_set_times` (files and directories; `EBADF` for stdio,
    /// and for a preopen: wasmtime holds those as `O_PATH` descriptors,
    /// whose times `futimens` cannot set).
    pub fn set_times(&mut self, fd: u32, atim: u64, mtim: u64, flags: u16) -> Result<(), Errno> {
        check_fstflags(flags)?;
        let h = self.handle(fd)?;
        if h.preopen.is_some() {
            return Err(Errno::Badf);
        }
        let ino = h.ino;
        self.set_times_of(ino, atim, mtim, flags)
    }

    /// `path_filestat_set_times`.
    pub fn path_set_times(
        &mut self,
        fd: u32,
        lookup: u32,
        path: &[u8],
        atim: u64,
        mtim: u64,
        flags: u16,
    ) -> Result<(), Errno> {
        check_fstflags(flags)?;
        let ino = if lookup & LOOKUP_SYMLINK_FOLLOW != 0 {
            // wasmtime opens the path to write, then (a directory) to read.
            match self.open_existing(fd, path, true, true) {
                Err(Errno::Isdir) => self.open_existing(fd, path, true, false)?,
                other => other?,
            }
        } else {
            match self.open_parent(fd, path)? {
                (dir, Base::Dot) => dir,
                (dir, Base::Name(name)) => self.entry(dir, name)?.ok_or(Errno::Noent)?,
            }
        };
        self.set_times_of(ino, atim, mtim, flags)
    }

    // --- data ---------------------------------------------------------------

    /// `fd_read` into one buffer; 0 at end of file. A file not opened for
    /// reading, or a directory, is `EBADF`.
    pub fn read(&mut self, fd: u32, dst: &mut [u8]) -> Result<usize, Errno> {
        let h = self.file(fd)?;
        if !h.mode.read {
            return Err(Errno::Badf);
        }
        let (ino, pos) = (h.ino, h.pos);
        let n = self.read_at(ino, dst, pos);
        self.handle_mut(fd)?.pos = pos + n as u64;
        Ok(n)
    }

    /// `fd_pread` into one buffer.
    pub fn pread(&mut self, fd: u32, dst: &mut [u8], offset: u64) -> Result<usize, Errno> {
        let h = self.file(fd)?;
        if !h.mode.read {
            return Err(Errno::Badf);
        }
        Ok(self.read_at(h.ino, dst, offset))
    }

    fn read_at(&self, ino: Ino, dst: &mut [u8], offset: u64) -> usize {
        let Kind::File(data) = &self.tree.get(ino).kind else {
            return 0;
        };
        let bytes = data.bytes();
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let n = dst.len().min(bytes.len() - start);
        dst[..n].copy_from_slice(&bytes[start..start + n]);
        n
    }

    /// `fd_write` of one buffer (at the end with `APPEND`).
    pub fn write(&mut self, fd: u32, src: &[u8]) -> Result<usize, Errno> {
        let h = self.file(fd)?;
        let (ino, pos) = (h.ino, h.pos);
        let at = self.write_offset(fd, pos)?;
        let n = self.write_at(ino, src, at)?;
        // Appending leaves the position at the end, as wasmtime does.
        self.handle_mut(fd)?.pos = at + n as u64;
        Ok(n)
    }

    /// `fd_pwrite` of one buffer; the position does not move. With
    /// `APPEND` the data goes to the end whatever the offset, as on Linux
    /// and in wasmtime.
    pub fn pwrite(&mut self, fd: u32, src: &[u8], offset: u64) -> Result<usize, Errno> {
        let ino = self.file(fd)?.ino;
        let at = self.write_offset(fd, offset)?;
        self.write_at(ino, src, at)
    }

    /// Where a write to `fd` asked at `offset` goes; `EBADF` if it was
    /// not opened for writing.
    fn write_offset(&self, fd: u32, offset: u64) -> Result<u64, Errno> {
        let h = self.file(fd)?;
        if !h.mode.write {
            return Err(Errno::Badf);
        }
        Ok(if h.append {
            self.tree.get(h.ino).size()
        } else {
            offset
        })
    }

    fn write_at(&mut self, ino: Ino, src: &[u8], offset: u64) -> Result<usize, Errno> {
        self.writable(ino)?;
        if src.is_empty() {
            return Ok(0);
        }
        let start = usize::try_from(offset)
            .ok()
            .filter(|o| *o <= i64::MAX as usize)
            .ok_or(Errno::Inval)?;
        let end = start.checked_add(src.len()).ok_or(Errno::Fbig)?;
        let v = self.tree.file_mut(ino, end)?;
        v[start..end].copy_from_slice(src);
        self.modified(ino);
        Ok(src.len())
    }

    /// `fd_seek`: `whence` 0 = set, 1 = current, 2 = end. Positions are
    /// any `u64` the arithmetic reaches without going below zero, as in
    /// wasmtime.
    pub fn seek(&mut self, fd: u32, delta: i64, whence: u8) -> Result<u64, Errno> {
        if whence > 2 {
            return Err(Errno::Inval);
        }
        let h = self.seekable(fd)?;
        let pos = match whence {
            0 => u64::try_from(delta).map_err(|_| Errno::Inval)?,
            1 => h.pos.checked_add_signed(delta).ok_or(Errno::Inval)?,
            _ => self
                .tree
                .get(h.ino)
                .size()
                .checked_add_signed(delta)
                .ok_or(Errno::Inval)?,
        };
        self.handle_mut(fd)?.pos = pos;
        Ok(pos)
    }

    /// `fd_tell`.
    pub fn tell(&self, fd: u32) -> Result<u64, Errno> {
        Ok(self.seekable(fd)?.pos)
    }

    /// Bytes between the position of file `fd` and its end.
    pub fn remaining(&self, fd: u32) -> Result<u64, Errno> {
        let h = self.file(fd)?;
        Ok(self.tree.get(h.ino).size().saturating_sub(h.pos))
    }

    /// A file that can be sought: `ESPIPE` for stdio, `EBADF` for anything
    /// else that is not a file.
    fn seekable(&self, fd: u32) -> Result<&Handle, Errno> {
        if self.stdio(fd).is_some() {
            return Err(Errno::Spipe);
        }
        self.file(fd)
    }

    /// `fd_readdir`: writes `dirent` records from `cookie` into `out` and
    /// returns the bytes used; fewer than `out.len()` means the end. The
    /// last record may be cut short, as WASI specifies.
    pub fn readdir(&self, fd: u32, cookie: u64, out: &mut [u8]) -> Result<usize, Errno> {
        let ino = self.dir(fd)?;
        let Kind::Dir { entries, parent } = &self.tree.get(ino).kind else {
            unreachable!("a directory")
        };
        let dots = [(&b"."[..], ino), (&b".."[..], *parent)];
        let all = dots
            .into_iter()
            .chain(entries.iter().map(|(n, &i)| (n.as_slice(), i)))
            .map(|(name, ino)| (name, ino as u64 + 1, self.tree.get(ino).filetype()));
        Ok(write_dirents(all, cookie, out))
    }

    // --- paths -------------------------------------------------------------

    /// `path_open`: returns the new descriptor. The open mode comes from
    /// the rights asked for ([`OpenMode::of`]); asking for rights a
    /// descriptor cannot have is no error, as in wasmtime. The path is
    /// opened as the kernel opens it: `O_EXCL` follows no symlink, a
    /// dangling one is followed to create its target, a directory cannot
    /// be opened to write or created over.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        &mut self,
        fd: u32,
        lookup: u32,
        path: &[u8],
        oflags: u16,
        rights_base: u64,
        _rights_inheriting: u64,
        flags: u16,
    ) -> Result<u32, Errno> {
        match self.kind(fd)? {
            FdKind::Dir => {}
            FdKind::File => return Err(Errno::Notdir),
            FdKind::Stdio(_) => return Err(Errno::Badf),
        }
        if let Some(e) = open_flags_error(oflags, flags) {
            return Err(e);
        }
        let mode = OpenMode::of(oflags, rights_base);
        let (create, excl) = (oflags & oflags::CREAT != 0, oflags & oflags::EXCL != 0);
        let follow = lookup & LOOKUP_SYMLINK_FOLLOW != 0 && !(create && excl);
        let found = self.walk(fd)?.resolve(path, follow, create)?;
        let ino = match found {
            Resolved::Missing { dir, name } if create => {
                self.writable(dir)?;
                self.link_new(dir, name, Kind::File(Data::Owned(Vec::new())))
            }
            Resolved::Missing { .. } => return Err(Errno::Noent),
            Resolved::Exists(ino) => {
                let is_dir = self.tree.get(ino).is_dir();
                if create && excl {
                    return Err(Errno::Exist);
                }
                if create && is_dir {
                    return Err(Errno::Isdir);
                }
                self.open_checks(ino, mode.write)?;
                ino
            }
        };
        let dir = self.tree.get(ino).is_dir();
        if !dir && oflags & oflags::TRUNC != 0 {
            self.tree.set_len(ino, 0)?;
            self.modified(ino);
        }
        if !dir && oflags & oflags::DIRECTORY != 0 {
            return Err(Errno::Notdir);
        }
        self.insert_local(Handle {
            ino,
            preopen: None,
            mode: if dir { DIR_MODE } else { mode },
            append: !dir && flags & fdflags::APPEND != 0,
            nonblock: !dir && flags & fdflags::NONBLOCK != 0,
            pos: 0,
        })
    }

    /// What the kernel checks opening an existing `ino`: `ELOOP` for a
    /// symlink, `EISDIR` for a directory to write, `EROFS` for a file to
    /// write on a read-only mount.
    fn open_checks(&self, ino: Ino, write: bool) -> Result<(), Errno> {
        match self.tree.get(ino).kind {
            Kind::Symlink(_) => Err(Errno::Loop),
            Kind::Dir { .. } if write => Err(Errno::Isdir),
            Kind::File(_) if write => self.writable(ino),
            _ => Ok(()),
        }
    }

    /// `path_create_directory`: `mkdirat` of the last component, trailing
    /// slashes stripped first.
    pub fn create_dir(&mut self, fd: u32, path: &[u8]) -> Result<(), Errno> {
        let (dir, base) = self.open_parent(fd, strip_trailing_slashes(path))?;
        let Base::Name(name) = base else {
            return Err(Errno::Exist);
        };
        if self.entry(dir, name)?.is_some() {
            return Err(Errno::Exist);
        }
        self.writable(dir)?;
        self.new_dir(dir, name.to_vec());
        Ok(())
    }

    /// Links a new empty directory into `parent`.
    fn new_dir(&mut self, parent: Ino, name: Vec<u8>) -> Ino {
        let dir = self.link_new(
            parent,
            name,
            Kind::Dir {
                entries: BTreeMap::new(),
                parent,
            },
        );
        // Links: its entry and its own `.`; the parent gains a `..`.
        self.tree.get_mut(dir).nlink = 2;
        self.tree.get_mut(parent).nlink += 1;
        dir
    }

    /// `path_remove_directory`: `rmdir` of the last component (`.`, what a
    /// trailing slash leaves, is `EINVAL`).
    pub fn remove_dir(&mut self, fd: u32, path: &[u8]) -> Result<(), Errno> {
        let (dir, base) = self.open_parent(fd, path)?;
        let Base::Name(name) = base else {
            return Err(Errno::Inval);
        };
        self.writable(dir)?;
        let ino = self.entry(dir, name)?.ok_or(Errno::Noent)?;
        if !self.tree.get(ino).entries()?.is_empty() {
            return Err(Errno::Notempty);
        }
        self.unlink_entry(dir, name, ino);
        self.tree.get_mut(dir).nlink -= 1;
        Ok(())
    }

    /// `path_unlink_file`: `unlink` of the last component.
    pub fn unlink(&mut self, fd: u32, path: &[u8]) -> Result<(), Errno> {
        let (dir, base) = self.open_parent(fd, path)?;
        let Base::Name(name) = base else {
            return Err(Errno::Isdir);
        };
        self.writable(dir)?;
        let ino = self.entry(dir, name)?.ok_or(Errno::Noent)?;
        if self.tree.get(ino).is_dir() {
            return Err(Errno::Isdir);
        }
        self.unlink_entry(dir, name, ino);
        Ok(())
    }

    fn unlink_entry(&mut self, parent: Ino, name: &[u8], ino: Ino) {
        self.tree
            .entries_mut(parent)
            .expect("parent is a directory")
            .remove(name);
        self.touch_dir(parent);
        let now = self.now;
        let inode = self.tree.get_mut(ino);
        inode.nlink -= 1;
        inode.ctim = now;
        if inode.is_dir() {
            inode.nlink = 0;
        }
        self.tree.release(ino);
    }

    /// `path_rename`, as `renameat` of the two last components: a trailing
    /// slash on either path requires the source to be a directory (a
    /// symlink is not followed for it), `.` is `EBUSY`.
    pub fn rename(&mut self, fd: u32, old: &[u8], new_fd: u32, new: &[u8]) -> Result<(), Errno> {
        let requires_dir = old.ends_with(b"/") || new.ends_with(b"/");
        let (from_dir, from) = self.open_parent(fd, strip_trailing_slashes(old))?;
        let (to_dir, to) = self.open_parent(new_fd, strip_trailing_slashes(new))?;
        if self.tree.get(from_dir).mount != self.tree.get(to_dir).mount {
            return Err(Errno::Xdev);
        }
        let (Base::Name(from), Base::Name(to)) = (from, to) else {
            return Err(Errno::Busy);
        };
        self.writable(from_dir)?;
        let ino = self.entry(from_dir, from)?.ok_or(Errno::Noent)?;
        let moving_dir = self.tree.get(ino).is_dir();
        if requires_dir && !moving_dir {
            return Err(Errno::Notdir);
        }
        let existing = self.entry(to_dir, to)?;
        if moving_dir && self.tree.is_ancestor(ino, to_dir) {
            return Err(Errno::Inval);
        }
        if let Some(existing) = existing {
            if existing == ino {
                return Ok(());
            }
            if self.tree.is_ancestor(existing, from_dir) {
                return Err(Errno::Notempty);
            }
            match (moving_dir, self.tree.get(existing).entries()) {
                (true, Ok(e)) if !e.is_empty() => return Err(Errno::Notempty),
                (true, Err(_)) => return Err(Errno::Notdir),
                (false, Ok(_)) => return Err(Errno::Isdir),
                _ => {}
            }
            self.unlink_entry(to_dir, to, existing);
            if moving_dir {
                self.tree.get_mut(to_dir).nlink -= 1;
            }
        }
        self.tree
            .entries_mut(from_dir)
            .expect("parent is a directory")
            .remove(from);
        self.touch_dir(from_dir);
        self.tree
            .entries_mut(to_dir)
            .expect("parent is a directory")
            .insert(to.to_vec(), ino);
        self.touch_dir(to_dir);
        if moving_dir {
            self.tree.get_mut(from_dir).nlink -= 1;
            self.tree.get_mut(to_dir).nlink += 1;
            if let Kind::Dir { parent, .. } = &mut self.tree.get_mut(ino).kind {
                *parent = to_dir;
            }
        }
        let now = self.now;
        self.tree.get_mut(ino).ctim = now;
        Ok(())
    }

    /// `path_symlink`: `path` becomes a symlink to the relative `target`
    /// (stored as given; resolution keeps it inside).
    pub fn symlink(&mut self, target: &[u8], fd: u32, path: &[u8]) -> Result<(), Errno> {
        // It could never be followed.
        if target.first() == Some(&b'/') {
            return Err(Errno::Perm);
        }
        let (dir, base) = self.open_parent(fd, path)?;
        let Base::Name(name) = base else {
            return Err(Errno::Exist);
        };
        if self.entry(dir, name)?.is_some() {
            return Err(Errno::Exist);
        }
        if target.is_empty() {
            return Err(Errno::Noent);
        }
        check_path(target)?;
        self.writable(dir)?;
        self.link_new(dir, name.to_vec(), Kind::Symlink(target.to_vec()));
        Ok(())
    }

    /// `path_readlink`: copies the target into `out` (cut to fit); returns
    /// the bytes written.
    pub fn readlink(&self, fd: u32, path: &[u8], out: &mut [u8]) -> Result<usize, Errno> {
        let (dir, base) = self.open_parent(fd, path)?;
        let Base::Name(name) = base else {
            return Err(Errno::Inval);
        };
        let ino = self.entry(dir, name)?.ok_or(Errno::Noent)?;
        let Kind::Symlink(target) = &self.tree.get(ino).kind else {
            return Err(Errno::Inval);
        };
        let n = target.len().min(out.len());
        out[..n].copy_from_slice(&target[..n]);
        Ok(n)
    }

    /// `path_link`: a hard link `new` to `old`, no symlink followed, as
    /// `linkat` of the two last components.
    pub fn link(&mut self, fd: u32, old: &[u8], new_fd: u32, new: &[u8]) -> Result<(), Errno> {
        let (from_dir, from) = self.open_parent(fd, old)?;
        let (to_dir, to) = self.open_parent(new_fd, new)?;
        let ino = match from {
            Base::Dot => from_dir,
            Base::Name(name) => self.entry(from_dir, name)?.ok_or(Errno::Noent)?,
        };
        let Base::Name(name) = to else {
            return Err(Errno::Exist);
        };
        if self.entry(to_dir, name)?.is_some() {
            return Err(Errno::Exist);
        }
        self.writable(to_dir)?;
        if self.tree.get(ino).mount != self.tree.get(to_dir).mount {
            return Err(Errno::Xdev);
        }
        if self.tree.get(ino).is_dir() {
            return Err(Errno::Perm);
        }
        self.tree
            .entries_mut(to_dir)
            .expect("parent is a directory")
            .insert(name.to_vec(), ino);
        self.touch_dir(to_dir);
        let now = self.now;
        let inode = self.tree.get_mut(ino);
        inode.nlink += 1;
        inode.ctim = now;
        Ok(())
    }
}

/// What the kernel refuses in any path before looking it up: a NUL byte
/// (`EINVAL`) or more than [`MAX_PATH`] bytes.
fn check_path(path: &[u8]) -> Result<(), Errno> {
    if path.contains(&0) {
        return Err(Errno::Inval);
    }
    if path.len() > MAX_PATH {
        return Err(Errno::Nametoolong);
    }
    Ok(())
}
