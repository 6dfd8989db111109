//! The WASI interface the agent provides to modules, and what both the
//! guest's filesystem (`wisp-vfs`) and the host's directories
//! (`wisp run --dir`) must agree on: errno numbers, flags, rights, open
//! modes, the `filestat` and `dirent` records.
//!
//! The host checks a module's imports against this list before it compiles
//! it, so an unsupported import is a clear error on the host rather than a
//! failed instantiation inside the guest. The `all_imports` integration
//! test instantiates a module importing every one of them in a real VM.

/// The import module of WASI preview 1.
pub const MODULE: &str = "wasi_snapshot_preview1";

/// The optional export `() -> ()` the agent calls once after instantiation
/// and before reporting ready, so its effects are in every snapshot and every
/// invocation starts from them. Clocks and randomness read inside it are
/// those of boot time and are the same for every restore.
pub const INIT_EXPORT: &str = "wisp_init";

/// Every `wasi_snapshot_preview1` function the agent defines, sorted.
pub const FUNCTIONS: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "environ_get",
    "environ_sizes_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_dir_name",
    "fd_prestat_get",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "random_get",
    "sched_yield",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// Whether the agent provides the function `name` of import module `module`.
pub fn provides(module: &str, name: &str) -> bool {
    module == MODULE && FUNCTIONS.binary_search(&name).is_ok()
}

/// WASI errno values: the ones the guest's filesystem, the host's
/// directories or the agent answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Errno {
    /// Permission denied.
    Acces = 2,
    /// Resource unavailable, try again.
    Again = 6,
    /// Connection already in progress.
    Already = 7,
    /// Bad file descriptor.
    Badf = 8,
    /// Device or resource busy.
    Busy = 10,
    /// File exists.
    Exist = 20,
    /// Bad address.
    Fault = 21,
    /// File too large.
    Fbig = 22,
    /// Illegal byte sequence (a path that is not UTF-8).
    Ilseq = 25,
    /// Operation in progress.
    Inprogress = 26,
    /// Interrupted function.
    Intr = 27,
    /// Invalid argument.
    Inval = 28,
    /// I/O error (and any errno the host sent that is not listed here).
    Io = 29,
    /// Is a directory.
    Isdir = 31,
    /// Too many levels of symbolic links.
    Loop = 32,
    /// Too many open files.
    Mfile = 33,
    /// Too many links.
    Mlink = 34,
    /// Filename too long.
    Nametoolong = 37,
    /// No such file or directory.
    Noent = 44,
    /// Not enough space.
    Nomem = 48,
    /// No space left (the scratch budget is used up).
    Nospc = 51,
    /// Not a directory.
    Notdir = 54,
    /// Directory not empty.
    Notempty = 55,
    /// Not a socket.
    Notsock = 57,
    /// Not supported.
    Notsup = 58,
    /// Value too large.
    Overflow = 61,
    /// Operation not permitted.
    Perm = 63,
    /// Broken pipe.
    Pipe = 64,
    /// Read-only file system.
    Rofs = 69,
    /// Invalid seek.
    Spipe = 70,
    /// Cross-device link.
    Xdev = 75,
}

impl Errno {
    /// Every errno of the enum.
    const ALL: [Errno; 31] = [
        Errno::Acces,
        Errno::Again,
        Errno::Already,
        Errno::Badf,
        Errno::Busy,
        Errno::Exist,
        Errno::Fault,
        Errno::Fbig,
        Errno::Ilseq,
        Errno::Inprogress,
        Errno::Intr,
        Errno::Inval,
        Errno::Io,
        Errno::Isdir,
        Errno::Loop,
        Errno::Mfile,
        Errno::Mlink,
        Errno::Nametoolong,
        Errno::Noent,
        Errno::Nomem,
        Errno::Nospc,
        Errno::Notdir,
        Errno::Notempty,
        Errno::Notsock,
        Errno::Notsup,
        Errno::Overflow,
        Errno::Perm,
        Errno::Pipe,
        Errno::Rofs,
        Errno::Spipe,
        Errno::Xdev,
    ];

    /// The errno with WASI number `raw` (from the host); unlisted ones are
    /// `EIO`.
    pub fn from_raw(raw: u16) -> Errno {
        Errno::ALL
            .into_iter()
            .find(|e| *e as u16 == raw)
            .unwrap_or(Errno::Io)
    }
}

/// `filetype` values.
pub mod filetype {
    /// Unknown (also stdio that is not a terminal, as wasmtime reports it).
    pub const UNKNOWN: u8 = 0;
    /// Character device.
    pub const CHARACTER_DEVICE: u8 = 2;
    /// Directory.
    pub const DIRECTORY: u8 = 3;
    /// Regular file.
    pub const REGULAR_FILE: u8 = 4;
    /// Symbolic link.
    pub const SYMBOLIC_LINK: u8 = 7;
}

/// `oflags` bits of `path_open`.
pub mod oflags {
    /// Create the file if it does not exist.
    pub const CREAT: u16 = 1;
    /// Fail unless it is a directory.
    pub const DIRECTORY: u16 = 2;
    /// With `CREAT`: fail if it exists.
    pub const EXCL: u16 = 4;
    /// Truncate to size 0.
    pub const TRUNC: u16 = 8;
    /// Every defined bit.
    pub const ALL: u16 = CREAT | DIRECTORY | EXCL | TRUNC;
}

/// `fdflags` bits.
pub mod fdflags {
    /// Writes go to the end of the file.
    pub const APPEND: u16 = 1;
    /// Synchronous data writes.
    pub const DSYNC: u16 = 2;
    /// Non-blocking.
    pub const NONBLOCK: u16 = 4;
    /// Synchronous reads.
    pub const RSYNC: u16 = 8;
    /// Synchronous writes.
    pub const SYNC: u16 = 16;
    /// Every defined bit.
    pub const ALL: u16 = APPEND | DSYNC | NONBLOCK | RSYNC | SYNC;
    /// The synchronous-I/O flags, which wasmtime does not offer.
    pub const SYNCS: u16 = DSYNC | RSYNC | SYNC;
}

/// `lookupflags`: follow a symlink in the final path component (the only
/// defined bit).
pub const LOOKUP_SYMLINK_FOLLOW: u32 = 1;

/// `fstflags` bits of the `*_set_times` calls.
pub mod fstflags {
    /// Set the access time to the given value.
    pub const ATIM: u16 = 1;
    /// Set the access time to now.
    pub const ATIM_NOW: u16 = 2;
    /// Set the modification time to the given value.
    pub const MTIM: u16 = 4;
    /// Set the modification time to now.
    pub const MTIM_NOW: u16 = 8;
    /// Every defined bit.
    pub const ALL: u16 = ATIM | ATIM_NOW | MTIM | MTIM_NOW;
}

/// `rights` bits. Preview 1 defines them, but neither wasmtime nor wisp
/// enforces them: a descriptor can do what its open mode (read, write)
/// and its kind allow. `fd_fdstat_get` reports them as wasmtime does.
pub mod rights {
    /// fd_datasync.
    pub const FD_DATASYNC: u64 = 1 << 0;
    /// fd_read.
    pub const FD_READ: u64 = 1 << 1;
    /// fd_seek.
    pub const FD_SEEK: u64 = 1 << 2;
    /// fd_fdstat_set_flags.
    pub const FD_FDSTAT_SET_FLAGS: u64 = 1 << 3;
    /// fd_sync.
    pub const FD_SYNC: u64 = 1 << 4;
    /// fd_tell.
    pub const FD_TELL: u64 = 1 << 5;
    /// fd_write.
    pub const FD_WRITE: u64 = 1 << 6;
    /// fd_advise.
    pub const FD_ADVISE: u64 = 1 << 7;
    /// fd_allocate.
    pub const FD_ALLOCATE: u64 = 1 << 8;
    /// path_create_directory.
    pub const PATH_CREATE_DIRECTORY: u64 = 1 << 9;
    /// path_open with CREAT.
    pub const PATH_CREATE_FILE: u64 = 1 << 10;
    /// path_link source.
    pub const PATH_LINK_SOURCE: u64 = 1 << 11;
    /// path_link target.
    pub const PATH_LINK_TARGET: u64 = 1 << 12;
    /// path_open.
    pub const PATH_OPEN: u64 = 1 << 13;
    /// fd_readdir.
    pub const FD_READDIR: u64 = 1 << 14;
    /// path_readlink.
    pub const PATH_READLINK: u64 = 1 << 15;
    /// path_rename source.
    pub const PATH_RENAME_SOURCE: u64 = 1 << 16;
    /// path_rename target.
    pub const PATH_RENAME_TARGET: u64 = 1 << 17;
    /// path_filestat_get.
    pub const PATH_FILESTAT_GET: u64 = 1 << 18;
    /// path_filestat_set_size.
    pub const PATH_FILESTAT_SET_SIZE: u64 = 1 << 19;
    /// path_filestat_set_times.
    pub const PATH_FILESTAT_SET_TIMES: u64 = 1 << 20;
    /// fd_filestat_get.
    pub const FD_FILESTAT_GET: u64 = 1 << 21;
    /// fd_filestat_set_size.
    pub const FD_FILESTAT_SET_SIZE: u64 = 1 << 22;
    /// fd_filestat_set_times.
    pub const FD_FILESTAT_SET_TIMES: u64 = 1 << 23;
    /// path_symlink.
    pub const PATH_SYMLINK: u64 = 1 << 24;
    /// path_remove_directory.
    pub const PATH_REMOVE_DIRECTORY: u64 = 1 << 25;
    /// path_unlink_file.
    pub const PATH_UNLINK_FILE: u64 = 1 << 26;
    /// poll_oneoff on the fd.
    pub const POLL_FD_READWRITE: u64 = 1 << 27;
    /// sock_shutdown.
    pub const SOCK_SHUTDOWN: u64 = 1 << 28;
    /// sock_accept.
    pub const SOCK_ACCEPT: u64 = 1 << 29;
    /// Every defined right; a call given any other bit traps.
    pub const ALL: u64 = (1 << 30) - 1;

    /// What a preopened directory reports (wasmtime's fixed set).
    pub const PREOPEN: u64 = PATH_CREATE_DIRECTORY
        | PATH_CREATE_FILE
        | PATH_LINK_SOURCE
        | PATH_LINK_TARGET
        | PATH_OPEN
        | FD_READDIR
        | PATH_READLINK
        | PATH_RENAME_SOURCE
        | PATH_RENAME_TARGET
        | PATH_SYMLINK
        | PATH_REMOVE_DIRECTORY
        | PATH_UNLINK_FILE
        | PATH_FILESTAT_GET
        | PATH_FILESTAT_SET_TIMES
        | FD_FILESTAT_GET
        | FD_FILESTAT_SET_TIMES;
    /// What a preopened directory reports as inheritable.
    pub const PREOPEN_INHERITING: u64 = PREOPEN
        | FD_DATASYNC
        | FD_READ
        | FD_SEEK
        | FD_FDSTAT_SET_FLAGS
        | FD_SYNC
        | FD_TELL
        | FD_WRITE
        | FD_ADVISE
        | FD_ALLOCATE
        | FD_FILESTAT_GET
        | FD_FILESTAT_SET_SIZE
        | FD_FILESTAT_SET_TIMES
        | POLL_FD_READWRITE;

    /// The rights `fd_fdstat_get` reports (as base and as inheriting) for
    /// a descriptor opened by `path_open`: everything its kind and open
    /// mode allow.
    pub fn of_opened(directory: bool, mode: super::OpenMode) -> u64 {
        let mut rights = ALL;
        if directory {
            rights &= !(FD_SEEK | FD_FILESTAT_SET_SIZE | PATH_FILESTAT_SET_SIZE);
        }
        if !mode.read {
            rights &= !(FD_READ | FD_READDIR);
        }
        if !mode.write {
            rights &= !FD_WRITE;
        }
        rights
    }
}

/// Whether a descriptor `path_open` makes may read and write: what the
/// host's `open` is asked for, and what `fd_read`/`fd_write` then allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenMode {
    /// Opened for reading.
    pub read: bool,
    /// Opened for writing.
    pub write: bool,
}

impl OpenMode {
    /// The mode of `path_open` with `oflags` and `rights`, as wasmtime
    /// decides it: writing with `FD_WRITE`, `CREAT` or `TRUNC`; reading
    /// with `FD_READ`, and also without `FD_WRITE` (so that the open
    /// itself succeeds). Directories are never writable.
    pub fn of(oflags: u16, rights: u64) -> OpenMode {
        let write_right = rights & rights::FD_WRITE != 0;
        OpenMode {
            read: rights & rights::FD_READ != 0 || !write_right,
            write: write_right || oflags & (oflags::CREAT | oflags::TRUNC) != 0,
        }
    }
}

/// The error `path_open` answers for `oflags` and `fdflags` before it
/// looks at the path, as wasmtime checks them: undefined bits are
/// `EINVAL`, the synchronous-I/O flags `ENOTSUP`, and `DIRECTORY` with
/// `CREAT`, `EXCL` or `TRUNC` `EINVAL`.
pub fn open_flags_error(oflags: u16, fdflags: u16) -> Option<Errno> {
    if oflags & !oflags::ALL != 0 || fdflags & !fdflags::ALL != 0 {
        return Some(Errno::Inval);
    }
    if fdflags & fdflags::SYNCS != 0 {
        return Some(Errno::Notsup);
    }
    if oflags & oflags::DIRECTORY != 0
        && oflags & (oflags::CREAT | oflags::EXCL | oflags::TRUNC) != 0
    {
        return Some(Errno::Inval);
    }
    None
}

/// `EINVAL` for `fstflags` with undefined bits, or asking for a time to be
/// both given and now.
pub fn check_fstflags(flags: u16) -> Result<(), Errno> {
    use fstflags::*;
    if flags & !ALL != 0
        || flags & (ATIM | ATIM_NOW) == ATIM | ATIM_NOW
        || flags & (MTIM | MTIM_NOW) == MTIM | MTIM_NOW
    {
        return Err(Errno::Inval);
    }
    Ok(())
}

/// `*_filestat_get`'s answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// Device.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// `filetype`.
    pub filetype: u8,
    /// Hard links.
    pub nlink: u64,
    /// Size in bytes (entries, for a directory).
    pub size: u64,
    /// Access time, ns since the epoch.
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
        if used == out.len() {
            break;
        }
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
    }
    used
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_sorted_and_complete() {
        assert!(
            FUNCTIONS.windows(2).all(|w| w[0] < w[1]),
            "FUNCTIONS must be sorted for binary_search"
        );
        // All 46 functions of the preview-1 snapshot.
        assert_eq!(FUNCTIONS.len(), 46);
        assert!(provides(MODULE, "fd_write"));
        assert!(!provides(MODULE, "fd_frobnicate"));
        assert!(!provides("env", "fd_write"));
    }

    #[test]
    fn errnos_round_trip_and_unknown_ones_are_eio() {
        for e in Errno::ALL {
            assert_eq!(Errno::from_raw(e as u16), e);
        }
        assert_eq!(Errno::from_raw(0), Errno::Io);
        assert_eq!(Errno::from_raw(76), Errno::Io);
        assert_eq!(Errno::from_raw(u16::MAX), Errno::Io);
    }

    #[test]
    fn open_modes_are_wasmtime_s() {
        let mode = |oflags, rights| {
            let m = OpenMode::of(oflags, rights);
            (m.read, m.write)
        };
        assert_eq!(mode(0, 0), (true, false), "nothing asked: read");
        assert_eq!(mode(0, rights::FD_WRITE), (false, true));
        assert_eq!(mode(0, rights::FD_READ | rights::FD_WRITE), (true, true));
        assert_eq!(mode(oflags::CREAT, rights::FD_READ), (true, true));
        assert_eq!(mode(oflags::TRUNC, 0), (true, true));
        assert_eq!(mode(oflags::CREAT, rights::FD_WRITE), (false, true));
        assert_eq!(
            mode(0, rights::ALL & !rights::FD_WRITE),
            (true, false),
            "other writing rights do not make it writable"
        );
        let dir = rights::of_opened(true, OpenMode::of(0, 0));
        assert_eq!(dir & (rights::FD_WRITE | rights::FD_SEEK), 0);
        assert_ne!(dir & rights::FD_READDIR, 0);
        let write_only = rights::of_opened(false, OpenMode::of(0, rights::FD_WRITE));
        assert_eq!(write_only & (rights::FD_READ | rights::FD_READDIR), 0);
        assert_ne!(write_only & rights::FD_SEEK, 0);
    }

    #[test]
    fn dirents_are_cut_at_the_buffer_and_resume_at_cookies() {
        let entries = [(&b"."[..], 1, 3), (&b".."[..], 2, 3), (&b"file"[..], 9, 4)];
        let mut out = [0u8; 200];
        let n = write_dirents(entries.into_iter(), 0, &mut out);
        assert_eq!(n, 3 * 24 + 1 + 2 + 4);
        assert_eq!(out[0..8], 1u64.to_le_bytes(), "the first cookie");
        assert_eq!(&out[24 + 1 + 24 + 2 + 24..n], b"file");
        let n = write_dirents(entries.into_iter(), 2, &mut out);
        assert_eq!((n, out[0]), (24 + 4, 3), "from cookie 2");
        let mut small = [0u8; 30];
        assert_eq!(write_dirents(entries.into_iter(), 0, &mut small), 30);
        assert_eq!(write_dirents(entries.into_iter(), 3, &mut out), 0);
        assert_eq!(write_dirents(entries.into_iter(), u64::MAX, &mut out), 0);
    }
}
