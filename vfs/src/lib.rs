//! The guest's filesystem: an in-memory tree of directories, files and
//! symlinks with WASI preview 1 semantics, and the descriptor table that
//! serves it.
//!
//! The agent mounts the read-only directories the host placed in guest
//! memory (`wisp_abi::files`) — their file contents are borrowed in place,
//! never copied — and a writable scratch `/tmp`. Everything a module writes
//! lives in the agent's heap, so resetting the VM to its snapshot discards
//! it: no state survives an invocation.
//!
//! Every path is resolved here, confined to the directory descriptor it is
//! relative to: absolute paths, `..` above that directory and symlinks
//! leading out of it fail with `EPERM`, and creating a symlink with an
//! absolute target is refused, as wasmtime's capability-based directories
//! do; a descriptor without the right for an operation gets `ENOTCAPABLE`.
//!
//! `no_std` + `alloc`, so it runs in the agent and is unit-tested on the
//! host.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod path;
mod table;
mod tree;

#[cfg(test)]
mod tests;

pub use table::{write_dirents, DirEntryKind, FdStat, FileStat, Foreign, Vfs};

/// WASI errno values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Errno {
    /// Permission denied.
    Acces = 2,
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
    /// No space left (the scratch budget is used up).
    Nospc = 51,
    /// Not a directory.
    Notdir = 54,
    /// Directory not empty.
    Notempty = 55,
    /// Not supported.
    Notsup = 58,
    /// Value too large.
    Overflow = 61,
    /// Operation not permitted.
    Perm = 63,
    /// Read-only file system.
    Rofs = 69,
    /// Invalid seek.
    Spipe = 70,
    /// Cross-device link.
    Xdev = 75,
    /// Capabilities insufficient.
    Notcapable = 76,
}

impl Errno {
    /// The errno with WASI number `raw` (from the host); unlisted ones are
    /// `EIO`.
    pub fn from_raw(raw: u16) -> Errno {
        use Errno::*;
        const ALL: [Errno; 24] = [
            Acces,
            Badf,
            Busy,
            Exist,
            Fault,
            Fbig,
            Inval,
            Io,
            Isdir,
            Loop,
            Mfile,
            Mlink,
            Nametoolong,
            Noent,
            Nospc,
            Notdir,
            Notempty,
            Notsup,
            Overflow,
            Perm,
            Rofs,
            Spipe,
            Xdev,
            Notcapable,
        ];
        ALL.into_iter().find(|e| *e as u16 == raw).unwrap_or(Io)
    }
}

/// `filetype` values.
pub mod filetype {
    /// Unknown.
    pub const UNKNOWN: u8 = 0;
    /// Character device (stdio).
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
}

/// `fdflags` bits.
pub mod fdflags {
    /// Writes go to the end of the file.
    pub const APPEND: u16 = 1;
    /// Synchronous data writes (no-op in memory).
    pub const DSYNC: u16 = 2;
    /// Non-blocking (no-op: nothing here blocks).
    pub const NONBLOCK: u16 = 4;
    /// Synchronous reads (no-op in memory).
    pub const RSYNC: u16 = 8;
    /// Synchronous writes (no-op in memory).
    pub const SYNC: u16 = 16;
}

/// `lookupflags`: follow a symlink in the final path component.
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
}

/// `rights` bits.
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

    /// What a regular file descriptor can be given.
    pub const FILE: u64 = FD_DATASYNC
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
    /// What a directory descriptor can be given.
    pub const DIRECTORY: u64 = FD_FDSTAT_SET_FLAGS
        | FD_SYNC
        | FD_DATASYNC
        | PATH_CREATE_DIRECTORY
        | PATH_CREATE_FILE
        | PATH_LINK_SOURCE
        | PATH_LINK_TARGET
        | PATH_OPEN
        | FD_READDIR
        | PATH_READLINK
        | PATH_RENAME_SOURCE
        | PATH_RENAME_TARGET
        | PATH_FILESTAT_GET
        | PATH_FILESTAT_SET_SIZE
        | PATH_FILESTAT_SET_TIMES
        | FD_FILESTAT_GET
        | FD_FILESTAT_SET_TIMES
        | PATH_SYMLINK
        | PATH_REMOVE_DIRECTORY
        | PATH_UNLINK_FILE;
    /// What may be inherited by what a directory opens.
    pub const INHERITABLE: u64 = FILE | DIRECTORY;
    /// Writing rights: a descriptor with any of them wants write access.
    pub const WRITING: u64 = FD_WRITE | FD_ALLOCATE | FD_FILESTAT_SET_SIZE | FD_DATASYNC;
}
