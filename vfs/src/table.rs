//! The descriptor table and the WASI operations on it. Descriptors 0-2 are
//! the agent's stdio; the table hands out 3 and up: the preopened
//! directories first, in mount order, then whatever the module opens.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::path::{resolve, Found};
use crate::tree::{Data, Ino, Kind, Tree};
use crate::{fdflags, fstflags, oflags, rights, Errno, LOOKUP_SYMLINK_FOLLOW};

/// The first descriptor the table hands out.
const FIRST_FD: u32 = 3;
/// Most descriptors open at once.
const MAX_FDS: usize = 1024;

/// A mounted directory tree.
struct Mount {
    /// The name the module sees (`fd_prestat_dir_name`).
    name: Vec<u8>,
    writable: bool,
}

/// An open descriptor.
#[derive(Clone)]
struct Handle {
    ino: Ino,
    /// Mount whose preopen this is, for `fd_prestat_*`.
    preopen: Option<usize>,
    rights: u64,
    inheriting: u64,
    flags: u16,
    pos: u64,
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

/// `*_filestat_get`'s answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// Device (one for the whole tree).
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// `filetype`.
    pub filetype: u8,
    /// Hard links.
    pub nlink: u64,
    /// Size in bytes (entries, for a directory).
    pub size: u64,
    /// Access, modification and status-change times, ns since the epoch.
    pub atim: u64,
    /// Modification time.
    pub mtim: u64,
    /// Status-change time.
    pub ctim: u64,
}

impl FileStat {
    /// The 64-byte `filestat` record.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0..8].copy_from_slice(&self.dev.to_le_bytes());
        b[8..16].copy_from_slice(&self.ino.to_le_bytes());
        b[16] = self.filetype;
        b[24..32].copy_from_slice(&self.nlink.to_le_bytes());
        b[32..40].copy_from_slice(&self.size.to_le_bytes());
        b[40..48].copy_from_slice(&self.atim.to_le_bytes());
        b[48..56].copy_from_slice(&self.mtim.to_le_bytes());
        b[56..64].copy_from_slice(&self.ctim.to_le_bytes());
        b
    }
}

/// Writes `fd_readdir` records for `entries` (name, inode, filetype) into
/// `out`, skipping the first `cookie`; a record's cookie is its index + 1.
/// The last record may be cut short, as WASI specifies. Returns the bytes
/// used: fewer than `out.len()` means the listing ended.
pub fn write_dirents<'a>(
    entries: impl Iterator<Item = (&'a [u8], u64, u8)>,
    cookie: u64,
    out: &mut [u8],
) -> usize {
    let mut used = 0;
    let skip = usize::try_from(cookie).unwrap_or(usize::MAX);
    for (index, (name, ino, filetype)) in entries.enumerate().skip(skip) {
        let mut record = [0u8; 24];
        record[0..8].copy_from_slice(&(index as u64 + 1).to_le_bytes());
        record[8..16].copy_from_slice(&ino.to_le_bytes());
        record[16..20].copy_from_slice(&(name.len() as u32).to_le_bytes());
        record[20] = filetype;
        for part in [&record[..], name] {
            let n = part.len().min(out.len() - used);
            out[used..used + n].copy_from_slice(&part[..n]);
            used += n;
        }
        if used == out.len() {
            break;
        }
    }
    used
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
    /// `fdflags`.
    pub flags: u16,
    /// Rights of the descriptor.
    pub rights: u64,
    /// Rights of what it opens.
    pub inheriting: u64,
    /// The guest path, for a preopened directory.
    pub preopen: Option<Vec<u8>>,
}

/// The filesystem and its descriptors.
pub struct Vfs {
    tree: Tree,
    mounts: Vec<Mount>,
    fds: BTreeMap<u32, Handle>,
    foreign: BTreeMap<u32, Foreign>,
    now: u64,
}

impl Default for Vfs {
    fn default() -> Self {
        Vfs::new(u64::MAX)
    }
}

impl Vfs {
    /// An empty filesystem; owned file data may take `budget` bytes.
    pub fn new(budget: u64) -> Vfs {
        Vfs {
            tree: Tree::new(budget),
            mounts: Vec::new(),
            fds: BTreeMap::new(),
            foreign: BTreeMap::new(),
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
        self.insert(Handle {
            ino: root,
            preopen: Some(mount),
            rights: rights::DIRECTORY,
            inheriting: rights::INHERITABLE,
            flags: 0,
            pos: 0,
        })
    }

    /// Adds `path` (relative, parents first) under the preopen `fd`, whatever
    /// the mount's writability: this is how images are filled.
    pub fn add(&mut self, fd: u32, path: &[u8], kind: DirEntryKind) -> Result<(), Errno> {
        let base = self.dir(fd, 0)?;
        let found = resolve(&self.tree, base, path, false)?;
        let name = found.name.ok_or(Errno::Exist)?;
        if found.ino.is_some() {
            return Err(Errno::Exist);
        }
        match kind {
            DirEntryKind::Dir => {
                self.new_dir(found.parent, name);
            }
            DirEntryKind::File(bytes) => {
                self.link_new(found.parent, name, Kind::File(Data::Static(bytes)));
            }
            DirEntryKind::Symlink(target) => {
                self.link_new(found.parent, name, Kind::Symlink(target.to_vec()));
            }
        }
        Ok(())
    }

    /// The lowest free descriptor.
    fn free_fd(&self) -> Result<u32, Errno> {
        if self.fds.len() + self.foreign.len() >= MAX_FDS {
            return Err(Errno::Mfile);
        }
        Ok((FIRST_FD..)
            .find(|fd| !self.is_open(*fd))
            .expect("fewer than MAX_FDS are open"))
    }

    fn insert(&mut self, handle: Handle) -> Result<u32, Errno> {
        let fd = self.free_fd()?;
        self.tree.get_mut(handle.ino).open += 1;
        self.fds.insert(fd, handle);
        Ok(fd)
    }

    /// Gives a descriptor to something the host serves.
    pub fn add_foreign(&mut self, foreign: Foreign) -> Result<u32, Errno> {
        let fd = self.free_fd()?;
        self.foreign.insert(fd, foreign);
        Ok(fd)
    }

    /// What the host serves behind `fd`, if it does.
    pub fn foreign(&self, fd: u32) -> Option<&Foreign> {
        self.foreign.get(&fd)
    }

    fn handle(&self, fd: u32) -> Result<&Handle, Errno> {
        self.fds.get(&fd).ok_or(Errno::Badf)
    }

    /// The directory behind `fd`, if it has `right`.
    fn dir(&self, fd: u32, right: u64) -> Result<Ino, Errno> {
        let h = self.handle(fd)?;
        if !self.tree.get(h.ino).is_dir() {
            return Err(Errno::Notdir);
        }
        if h.rights & right != right {
            return Err(Errno::Notcapable);
        }
        Ok(h.ino)
    }

    /// The file behind `fd`, if it has `right` (`EBADF` otherwise, as for
    /// a read on a write-only descriptor).
    fn file(&self, fd: u32, right: u64) -> Result<&Handle, Errno> {
        let h = self.handle(fd)?;
        match self.tree.get(h.ino).kind {
            Kind::File(_) => {}
            Kind::Dir { .. } => return Err(Errno::Isdir),
            Kind::Symlink(_) => return Err(Errno::Badf),
        }
        if h.rights & right != right {
            return Err(Errno::Badf);
        }
        Ok(h)
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

    /// `fd_prestat_get` / `fd_prestat_dir_name`: the preopen's name.
    pub fn prestat(&self, fd: u32) -> Result<&[u8], Errno> {
        if let Some(f) = self.foreign.get(&fd) {
            return f.preopen.as_deref().ok_or(Errno::Badf);
        }
        let mount = self.handle(fd)?.preopen.ok_or(Errno::Badf)?;
        Ok(&self.mounts[mount].name)
    }

    /// Whether `fd` is open here.
    pub fn is_open(&self, fd: u32) -> bool {
        self.fds.contains_key(&fd) || self.foreign.contains_key(&fd)
    }

    /// `fd_close`; for a foreign descriptor, returns the host handle to
    /// close.
    pub fn close(&mut self, fd: u32) -> Result<Option<u32>, Errno> {
        if let Some(f) = self.foreign.remove(&fd) {
            return Ok(Some(f.host));
        }
        let h = self.fds.remove(&fd).ok_or(Errno::Badf)?;
        self.tree.get_mut(h.ino).open -= 1;
        self.tree.release(h.ino);
        Ok(None)
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
        if let Some(f) = self.foreign.remove(&from) {
            self.foreign.insert(to, f);
        } else {
            let h = self.fds.remove(&from).expect("checked above");
            self.fds.insert(to, h);
        }
        Ok(displaced)
    }

    /// `fd_fdstat_get`.
    pub fn fdstat(&self, fd: u32) -> Result<FdStat, Errno> {
        if let Some(f) = self.foreign.get(&fd) {
            return Ok(FdStat {
                filetype: f.filetype,
                flags: f.flags,
                rights: f.rights,
                inheriting: f.inheriting,
            });
        }
        let h = self.handle(fd)?;
        Ok(FdStat {
            filetype: self.tree.get(h.ino).filetype(),
            flags: h.flags,
            rights: h.rights,
            inheriting: h.inheriting,
        })
    }

    /// `fd_fdstat_set_flags`: only `APPEND` changes anything in memory.
    pub fn set_flags(&mut self, fd: u32, flags: u16) -> Result<(), Errno> {
        let known =
            fdflags::APPEND | fdflags::DSYNC | fdflags::NONBLOCK | fdflags::RSYNC | fdflags::SYNC;
        if flags & !known != 0 {
            return Err(Errno::Inval);
        }
        if let Some(f) = self.foreign.get_mut(&fd) {
            f.flags = flags;
            return Ok(());
        }
        let h = self.fds.get_mut(&fd).ok_or(Errno::Badf)?;
        h.flags = flags;
        Ok(())
    }

    /// `fd_fdstat_set_rights`: rights can only be dropped.
    pub fn set_rights(&mut self, fd: u32, base: u64, inheriting: u64) -> Result<(), Errno> {
        if let Some(f) = self.foreign.get_mut(&fd) {
            if base & !f.rights != 0 || inheriting & !f.inheriting != 0 {
                return Err(Errno::Notcapable);
            }
            f.rights = base;
            f.inheriting = inheriting;
            return Ok(());
        }
        let h = self.fds.get_mut(&fd).ok_or(Errno::Badf)?;
        if base & !h.rights != 0 || inheriting & !h.inheriting != 0 {
            return Err(Errno::Notcapable);
        }
        h.rights = base;
        h.inheriting = inheriting;
        Ok(())
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

    /// `fd_filestat_get`.
    pub fn filestat(&self, fd: u32) -> Result<FileStat, Errno> {
        Ok(self.stat(self.handle(fd)?.ino))
    }

    /// `path_filestat_get`.
    pub fn path_filestat(&self, fd: u32, lookup: u32, path: &[u8]) -> Result<FileStat, Errno> {
        let found = self.lookup(fd, rights::PATH_FILESTAT_GET, path, lookup)?;
        Ok(self.stat(found.ino.ok_or(Errno::Noent)?))
    }

    fn lookup(&self, fd: u32, right: u64, path: &[u8], lookup: u32) -> Result<Found, Errno> {
        let base = self.dir(fd, right)?;
        resolve(&self.tree, base, path, lookup & LOOKUP_SYMLINK_FOLLOW != 0)
    }

    /// `fd_filestat_set_size`.
    pub fn set_size(&mut self, fd: u32, size: u64) -> Result<(), Errno> {
        let ino = self.file(fd, rights::FD_FILESTAT_SET_SIZE)?.ino;
        self.writable(ino)?;
        let size = usize::try_from(size).map_err(|_| Errno::Fbig)?;
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
        if flags & (fstflags::ATIM | fstflags::ATIM_NOW) == fstflags::ATIM | fstflags::ATIM_NOW
            || flags & (fstflags::MTIM | fstflags::MTIM_NOW) == fstflags::MTIM | fstflags::MTIM_NOW
            || flags & !0xf != 0
        {
            return Err(Errno::Inval);
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

    /// `fd_filestat_set_times`.
    pub fn set_times(&mut self, fd: u32, atim: u64, mtim: u64, flags: u16) -> Result<(), Errno> {
        let ino = self.handle(fd)?.ino;
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
        let found = self.lookup(fd, rights::PATH_FILESTAT_SET_TIMES, path, lookup)?;
        self.set_times_of(found.ino.ok_or(Errno::Noent)?, atim, mtim, flags)
    }

    // --- data --------------------------------------------------------------

    /// `fd_read` into one buffer; 0 at end of file.
    pub fn read(&mut self, fd: u32, dst: &mut [u8]) -> Result<usize, Errno> {
        let h = self.file(fd, rights::FD_READ)?;
        let (ino, pos) = (h.ino, h.pos);
        let n = self.read_at(ino, dst, pos);
        self.fds.get_mut(&fd).expect("checked").pos = pos + n as u64;
        Ok(n)
    }

    /// `fd_pread` into one buffer.
    pub fn pread(&mut self, fd: u32, dst: &mut [u8], offset: u64) -> Result<usize, Errno> {
        let ino = self.file(fd, rights::FD_READ | rights::FD_SEEK)?.ino;
        Ok(self.read_at(ino, dst, offset))
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
        let h = self.file(fd, rights::FD_WRITE)?;
        let (ino, append, pos) = (h.ino, h.flags & fdflags::APPEND != 0, h.pos);
        let at = if append {
            self.tree.get(ino).size()
        } else {
            pos
        };
        let n = self.write_at(ino, src, at)?;
        self.fds.get_mut(&fd).expect("checked").pos = at + n as u64;
        Ok(n)
    }

    /// `fd_pwrite` of one buffer; the position does not move.
    pub fn pwrite(&mut self, fd: u32, src: &[u8], offset: u64) -> Result<usize, Errno> {
        let ino = self.file(fd, rights::FD_WRITE | rights::FD_SEEK)?.ino;
        self.write_at(ino, src, offset)
    }

    fn write_at(&mut self, ino: Ino, src: &[u8], offset: u64) -> Result<usize, Errno> {
        self.writable(ino)?;
        if src.is_empty() {
            return Ok(0);
        }
        let start = usize::try_from(offset).map_err(|_| Errno::Fbig)?;
        let end = start.checked_add(src.len()).ok_or(Errno::Fbig)?;
        let v = self.tree.file_mut(ino, end)?;
        v[start..end].copy_from_slice(src);
        self.modified(ino);
        Ok(src.len())
    }

    /// `fd_seek`: `whence` 0 = set, 1 = current, 2 = end.
    pub fn seek(&mut self, fd: u32, delta: i64, whence: u8) -> Result<u64, Errno> {
        let right = if delta == 0 && whence == 1 {
            rights::FD_TELL
        } else {
            rights::FD_SEEK
        };
        let h = self
            .file(fd, right)
            .map_err(|e| if e == Errno::Isdir { Errno::Badf } else { e })?;
        let base = match whence {
            0 => 0,
            1 => h.pos,
            2 => self.tree.get(h.ino).size(),
            _ => return Err(Errno::Inval),
        };
        let pos = base.checked_add_signed(delta).ok_or(Errno::Inval)?;
        if pos > i64::MAX as u64 {
            return Err(Errno::Inval);
        }
        self.fds.get_mut(&fd).expect("checked").pos = pos;
        Ok(pos)
    }

    /// `fd_advise`, `fd_sync`, `fd_datasync`: nothing to do in memory, but
    /// the descriptor must be valid.
    pub fn check(&self, fd: u32) -> Result<(), Errno> {
        self.handle(fd).map(|_| ())
    }

    /// `fd_readdir`: writes `dirent` records from `cookie` into `out` and
    /// returns the bytes used; fewer than `out.len()` means the end. The
    /// last record may be cut short, as WASI specifies.
    pub fn readdir(&self, fd: u32, cookie: u64, out: &mut [u8]) -> Result<usize, Errno> {
        let h = self.handle(fd)?;
        let inode = self.tree.get(h.ino);
        let Kind::Dir { entries, parent } = &inode.kind else {
            return Err(Errno::Notdir);
        };
        if h.rights & rights::FD_READDIR == 0 {
            return Err(Errno::Notcapable);
        }
        let dots = [(&b"."[..], h.ino), (&b".."[..], *parent)];
        let all = dots
            .into_iter()
            .chain(entries.iter().map(|(n, &i)| (n.as_slice(), i)))
            .map(|(name, ino)| (name, ino as u64 + 1, self.tree.get(ino).filetype()));
        Ok(write_dirents(all, cookie, out))
    }

    // --- paths -------------------------------------------------------------

    /// `path_open`: returns the new descriptor.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        &mut self,
        fd: u32,
        lookup: u32,
        path: &[u8],
        oflags: u16,
        rights_base: u64,
        rights_inheriting: u64,
        flags: u16,
    ) -> Result<u32, Errno> {
        let dir_handle = self.handle(fd)?.clone();
        let found = self.lookup(fd, rights::PATH_OPEN, path, lookup)?;
        let create = oflags & oflags::CREAT != 0;
        let ino = match found.ino {
            Some(_) if create && oflags & oflags::EXCL != 0 => return Err(Errno::Exist),
            Some(ino) => ino,
            None if create => {
                if found.trailing_slash || oflags & oflags::DIRECTORY != 0 {
                    return Err(Errno::Isdir);
                }
                if dir_handle.rights & rights::PATH_CREATE_FILE == 0 {
                    return Err(Errno::Notcapable);
                }
                self.writable(found.parent)?;
                let name = found.name.ok_or(Errno::Exist)?;
                self.link_new(found.parent, name, Kind::File(Data::Owned(Vec::new())))
            }
            None => return Err(Errno::Noent),
        };
        let wants_write = rights_base & rights::WRITING != 0 || oflags & oflags::TRUNC != 0;
        let file_rights = match &self.tree.get(ino).kind {
            Kind::Symlink(_) => return Err(Errno::Loop),
            Kind::Dir { .. } => {
                if wants_write {
                    return Err(Errno::Isdir);
                }
                rights::DIRECTORY
            }
            Kind::File(_) => {
                if oflags & oflags::DIRECTORY != 0 {
                    return Err(Errno::Notdir);
                }
                if wants_write {
                    self.writable(ino)?;
                }
                rights::FILE
            }
        };
        if oflags & oflags::TRUNC != 0 {
            self.tree.set_len(ino, 0)?;
            self.modified(ino);
        }
        self.insert(Handle {
            ino,
            preopen: None,
            rights: rights_base & file_rights & dir_handle.inheriting,
            inheriting: rights_inheriting & dir_handle.inheriting,
            flags,
            pos: 0,
        })
    }

    /// `path_create_directory`.
    pub fn create_dir(&mut self, fd: u32, path: &[u8]) -> Result<(), Errno> {
        let found = self.lookup(fd, rights::PATH_CREATE_DIRECTORY, path, 0)?;
        if found.ino.is_some() {
            return Err(Errno::Exist);
        }
        self.writable(found.parent)?;
        let name = found.name.ok_or(Errno::Exist)?;
        self.new_dir(found.parent, name);
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

    /// `path_remove_directory`.
    pub fn remove_dir(&mut self, fd: u32, path: &[u8]) -> Result<(), Errno> {
        let found = self.lookup(fd, rights::PATH_REMOVE_DIRECTORY, path, 0)?;
        let ino = found.ino.ok_or(Errno::Noent)?;
        let name = found.name.ok_or(Errno::Inval)?;
        let entries = self.tree.get(ino).entries()?;
        if !entries.is_empty() {
            return Err(Errno::Notempty);
        }
        self.writable(ino)?;
        self.unlink_entry(found.parent, &name, ino);
        self.tree.get_mut(found.parent).nlink -= 1;
        Ok(())
    }

    /// `path_unlink_file`.
    pub fn unlink(&mut self, fd: u32, path: &[u8]) -> Result<(), Errno> {
        let found = self.lookup(fd, rights::PATH_UNLINK_FILE, path, 0)?;
        let ino = found.ino.ok_or(Errno::Noent)?;
        let name = found.name.ok_or(Errno::Isdir)?;
        if self.tree.get(ino).is_dir() {
            return Err(Errno::Isdir);
        }
        if found.trailing_slash {
            return Err(Errno::Notdir);
        }
        self.writable(ino)?;
        self.unlink_entry(found.parent, &name, ino);
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

    /// `path_rename`.
    pub fn rename(&mut self, fd: u32, old: &[u8], new_fd: u32, new: &[u8]) -> Result<(), Errno> {
        let from = self.lookup(fd, rights::PATH_RENAME_SOURCE, old, 0)?;
        let to = self.lookup(new_fd, rights::PATH_RENAME_TARGET, new, 0)?;
        let ino = from.ino.ok_or(Errno::Noent)?;
        let (Some(from_name), Some(to_name)) = (from.name, to.name) else {
            return Err(Errno::Inval);
        };
        let moving_dir = self.tree.get(ino).is_dir();
        if (from.trailing_slash || to.trailing_slash) && !moving_dir {
            return Err(Errno::Notdir);
        }
        if self.tree.get(ino).mount != self.tree.get(to.parent).mount {
            return Err(Errno::Xdev);
        }
        self.writable(ino)?;
        if to.ino == Some(ino) {
            return Ok(());
        }
        if moving_dir && self.tree.is_ancestor(ino, to.parent) {
            return Err(Errno::Inval);
        }
        if let Some(existing) = to.ino {
            match (moving_dir, self.tree.get(existing).entries()) {
                (true, Ok(e)) if !e.is_empty() => return Err(Errno::Notempty),
                (true, Err(_)) => return Err(Errno::Notdir),
                (false, Ok(_)) => return Err(Errno::Isdir),
                _ => {}
            }
            self.unlink_entry(to.parent, &to_name, existing);
            if moving_dir {
                self.tree.get_mut(to.parent).nlink -= 1;
            }
        }
        self.tree
            .entries_mut(from.parent)
            .expect("parent is a directory")
            .remove(&from_name);
        self.touch_dir(from.parent);
        self.tree
            .entries_mut(to.parent)
            .expect("parent is a directory")
            .insert(to_name, ino);
        self.touch_dir(to.parent);
        if moving_dir {
            self.tree.get_mut(from.parent).nlink -= 1;
            self.tree.get_mut(to.parent).nlink += 1;
            if let Kind::Dir { parent, .. } = &mut self.tree.get_mut(ino).kind {
                *parent = to.parent;
            }
        }
        let now = self.now;
        self.tree.get_mut(ino).ctim = now;
        Ok(())
    }

    /// `path_symlink`: `path` becomes a symlink to the relative `target`
    /// (stored as given; resolution keeps it inside).
    pub fn symlink(&mut self, target: &[u8], fd: u32, path: &[u8]) -> Result<(), Errno> {
        let found = self.lookup(fd, rights::PATH_SYMLINK, path, 0)?;
        // It could never be followed.
        if target.first() == Some(&b'/') {
            return Err(Errno::Perm);
        }
        if found.ino.is_some() {
            return Err(Errno::Exist);
        }
        if found.trailing_slash {
            return Err(Errno::Noent);
        }
        self.writable(found.parent)?;
        let name = found.name.ok_or(Errno::Exist)?;
        self.link_new(found.parent, name, Kind::Symlink(target.to_vec()));
        Ok(())
    }

    /// `path_readlink`: copies the target into `out` (cut to fit); returns
    /// the bytes written.
    pub fn readlink(&self, fd: u32, path: &[u8], out: &mut [u8]) -> Result<usize, Errno> {
        let found = self.lookup(fd, rights::PATH_READLINK, path, 0)?;
        let ino = found.ino.ok_or(Errno::Noent)?;
        let Kind::Symlink(target) = &self.tree.get(ino).kind else {
            return Err(Errno::Inval);
        };
        let n = target.len().min(out.len());
        out[..n].copy_from_slice(&target[..n]);
        Ok(n)
    }

    /// `path_link`: a hard link `new` to the file `old`.
    pub fn link(
        &mut self,
        fd: u32,
        lookup: u32,
        old: &[u8],
        new_fd: u32,
        new: &[u8],
    ) -> Result<(), Errno> {
        let from = self.lookup(fd, rights::PATH_LINK_SOURCE, old, lookup)?;
        let to = self.lookup(new_fd, rights::PATH_LINK_TARGET, new, 0)?;
        let ino = from.ino.ok_or(Errno::Noent)?;
        if self.tree.get(ino).is_dir() {
            return Err(Errno::Perm);
        }
        if to.ino.is_some() {
            return Err(Errno::Exist);
        }
        if self.tree.get(ino).mount != self.tree.get(to.parent).mount {
            return Err(Errno::Xdev);
        }
        self.writable(to.parent)?;
        let name = to.name.ok_or(Errno::Exist)?;
        self.tree
            .entries_mut(to.parent)
            .expect("parent is a directory")
            .insert(name, ino);
        self.touch_dir(to.parent);
        let now = self.now;
        let inode = self.tree.get_mut(ino);
        inode.nlink += 1;
        inode.ctim = now;
        Ok(())
    }
}
