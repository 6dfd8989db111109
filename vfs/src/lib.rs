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
//! do. Rights are reported as wasmtime reports them but, as there, not
//! enforced: a descriptor may do what its open mode and kind allow.
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

pub use table::{DirEntryKind, FdKind, FdStat, Foreign, Stdio, Vfs};
/// The WASI definitions the filesystem shares with the host's directories.
pub use wisp_abi::wasi::{
    fdflags, filetype, fstflags, oflags, rights, write_dirents, Errno, FileStat, OpenMode,
    LOOKUP_SYMLINK_FOLLOW,
};
