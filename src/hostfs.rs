//! Host directories for `wisp run --dir HOST[::GUEST]`, read-write: the
//! guest forwards each operation on them (`wisp_abi::hostfs`), and this
//! serves it with `cap-std`, which resolves every path beneath the
//! directory handle it is relative to (no escape through `..`, absolute
//! paths or symlinks), as wasmtime does.
//!
//! The calls are served on a thread of their own ([`FsThread`]): the vCPU
//! thread's seccomp filter allows no file system calls, so it only passes
//! the guest's bytes along and copies the answer back.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, UNIX_EPOCH};

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt, OsMetadataExt};
use cap_std::fs::{Dir, File, FileExt, Metadata, OpenOptions};
use wisp_abi::hostfs::{encode_reply_header, Call, Op, REPLY_HEADER, WRITE_APPEND};
use wisp_abi::paths::{split_parent, strip_trailing_slashes, Base};
use wisp_abi::wasi::{
    check_fstflags, filetype, fstflags, oflags, open_flags_error, write_dirents, Errno, FileStat,
    OpenMode, LOOKUP_SYMLINK_FOLLOW,
};

/// Most handles open at once.
const MAX_HANDLES: usize = 1024;

/// WASI's errno for a host error, as wasmtime maps them. cap-std refuses
/// an escape with `PermissionDenied` and no OS error: `EPERM`, as
/// wasmtime answers. Where wasmtime answers `EIO` for an error WASI has
/// a name for (`EROFS`, on a read-only mount), the name is kept (README,
/// "Conformance with `wasmtime run`").
fn wasi_errno(e: &io::Error) -> Errno {
    let Some(code) = e.raw_os_error() else {
        return match e.kind() {
            io::ErrorKind::PermissionDenied => Errno::Perm,
            io::ErrorKind::NotFound => Errno::Noent,
            io::ErrorKind::AlreadyExists => Errno::Exist,
            io::ErrorKind::InvalidInput => Errno::Inval,
            _ => Errno::Io,
        };
    };
    match code {
        libc::EPERM => Errno::Perm,
        libc::ENOENT => Errno::Noent,
        libc::EBADF => Errno::Badf,
        libc::EACCES => Errno::Acces,
        libc::EBUSY => Errno::Busy,
        libc::EEXIST => Errno::Exist,
        libc::EXDEV => Errno::Xdev,
        libc::ENOTDIR => Errno::Notdir,
        libc::EISDIR => Errno::Isdir,
        libc::EINVAL => Errno::Inval,
        libc::EMFILE | libc::ENFILE => Errno::Mfile,
        libc::EFBIG => Errno::Fbig,
        libc::ENOSPC | libc::EDQUOT => Errno::Nospc,
        libc::ESPIPE => Errno::Spipe,
        libc::EROFS => Errno::Rofs,
        libc::EMLINK => Errno::Mlink,
        libc::ENAMETOOLONG => Errno::Nametoolong,
        libc::ENOTEMPTY => Errno::Notempty,
        libc::ELOOP => Errno::Loop,
        libc::EOPNOTSUPP => Errno::Notsup,
        libc::EOVERFLOW => Errno::Overflow,
        libc::EPIPE => Errno::Pipe,
        libc::ENOMEM => Errno::Nomem,
        libc::EILSEQ => Errno::Ilseq,
        libc::EALREADY => Errno::Already,
        libc::EINPROGRESS => Errno::Inprogress,
        libc::EINTR => Errno::Intr,
        _ => Errno::Io,
    }
}

/// An open host directory or file.
enum Handle {
    Dir(Dir),
    File(File),
}

/// The host directories of one run and what the guest opened in them.
pub struct HostDirs {
    handles: Vec<Option<Handle>>,
}

type Reply = Result<(u64, usize), Errno>;

impl HostDirs {
    /// Opens `dirs`; the guest knows them as handles 0, 1, … in order.
    pub fn open(dirs: &[PathBuf]) -> anyhow::Result<HostDirs> {
        let mut handles = Vec::new();
        for dir in dirs {
            let opened = Dir::open_ambient_dir(dir, cap_std::ambient_authority())
                .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
            handles.push(Some(Handle::Dir(opened)));
        }
        Ok(HostDirs { handles })
    }

    /// Serves one call exactly as the guest sent it; writes the reply into
    /// `reply` and returns its length.
    pub fn serve(&mut self, call: &[u8], reply: &mut [u8]) -> usize {
        if reply.len() < REPLY_HEADER {
            return 0;
        }
        let (head, data) = reply.split_at_mut(REPLY_HEADER);
        let result = match Call::decode(call) {
            Some(call) => self.dispatch(&call, data),
            None => Err(Errno::Inval),
        };
        match result {
            Ok((value, n)) => {
                encode_reply_header(head, 0, value);
                REPLY_HEADER + n
            }
            Err(e) => {
                encode_reply_header(head, e as u16, 0);
                REPLY_HEADER
            }
        }
    }

    fn get(&self, h: u32) -> Result<&Handle, Errno> {
        self.handles
            .get(h as usize)
            .and_then(Option::as_ref)
            .ok_or(Errno::Badf)
    }

    fn dir(&self, h: u32) -> Result<&Dir, Errno> {
        match self.get(h)? {
            Handle::Dir(d) => Ok(d),
            Handle::File(_) => Err(Errno::Notdir),
        }
    }

    fn file(&self, h: u32) -> Result<&File, Errno> {
        match self.get(h)? {
            Handle::File(f) => Ok(f),
            Handle::Dir(_) => Err(Errno::Isdir),
        }
    }

    fn insert(&mut self, handle: Handle) -> Result<u32, Errno> {
        if let Some(i) = self.handles.iter().position(Option::is_none) {
            self.handles[i] = Some(handle);
            return Ok(i as u32);
        }
        if self.handles.len() >= MAX_HANDLES {
            return Err(Errno::Mfile);
        }
        self.handles.push(Some(handle));
        Ok(self.handles.len() as u32 - 1)
    }

    fn dispatch(&mut self, c: &Call<'_>, out: &mut [u8]) -> Reply {
        let io = |e: io::Error| wasi_errno(&e);
        let done = Ok((0, 0));
        match c.op {
            Op::Open => self.open_at(c),
            Op::Close => match self.handles.get_mut(c.h as usize).and_then(Option::take) {
                Some(_) => done,
                None => Err(Errno::Badf),
            },
            Op::Read => {
                let file = self.file(c.h)?;
                let n = (c.a as usize).min(out.len());
                Ok((0, file.read_at(&mut out[..n], c.b).map_err(io)?))
            }
            Op::Write => {
                let file = self.file(c.h)?;
                let at = if c.flags & WRITE_APPEND != 0 {
                    file.metadata().map_err(io)?.len()
                } else {
                    c.b
                };
                let written = file.write_at(c.s1, at).map_err(io)?;
                let end = at.saturating_add(written as u64);
                put(out, &end.to_le_bytes()).map(|(_, n)| (written as u64, n))
            }
            Op::Filestat => {
                let meta = match self.get(c.h)? {
                    Handle::File(f) => f.metadata(),
                    Handle::Dir(d) => d.dir_metadata(),
                };
                put(out, &filestat(&meta.map_err(io)?))
            }
            Op::PathFilestat => {
                let (dir, path) = (self.dir(c.h)?, path(c.s1)?);
                let meta = if c.flags & LOOKUP_SYMLINK_FOLLOW != 0 {
                    dir.metadata(path)
                } else {
                    dir.symlink_metadata(path)
                };
                put(out, &filestat(&meta.map_err(io)?))
            }
            Op::SetSize => {
                self.file(c.h)?.set_len(c.a).map_err(io)?;
                done
            }
            Op::SetTimes => {
                let (atime, mtime) = times(c.a, c.b, c.c)?;
                match self.get(c.h)? {
                    Handle::File(f) => fs_set_times::SetTimes::set_times(f, atime, mtime),
                    Handle::Dir(d) => fs_set_times::SetTimes::set_times(d, atime, mtime),
                }
                .map_err(io)?;
                done
            }
            Op::PathSetTimes => {
                let (dir, path) = (self.dir(c.h)?, path(c.s1)?);
                let (atime, mtime) = times(c.a, c.b, c.c)?;
                let (atime, mtime) = (atime.map(cap_time), mtime.map(cap_time));
                if c.flags & LOOKUP_SYMLINK_FOLLOW != 0 {
                    DirExt::set_times(dir, path, atime, mtime)
                } else {
                    dir.set_symlink_times(path, atime, mtime)
                }
                .map_err(io)?;
                done
            }
            Op::Readdir => {
                let room = (c.b as usize).min(out.len());
                let n = readdir(self.dir(c.h)?, c.a, &mut out[..room])?;
                Ok((0, n))
            }
            Op::Mkdir => self.dir(c.h)?.create_dir(path(c.s1)?).map_err(io).and(done),
            Op::Rmdir => self.dir(c.h)?.remove_dir(path(c.s1)?).map_err(io).and(done),
            Op::Unlink => self
                .dir(c.h)?
                .remove_file(path(c.s1)?)
                .map_err(io)
                .and(done),
            Op::Rename => {
                let (from, to) = (self.dir(c.h)?, self.dir(c.h2)?);
                rename(from, c.s1, to, c.s2)?;
                done
            }
            Op::Symlink => {
                let target = path(c.s1)?;
                if target.is_absolute() {
                    // It could only ever lead out of the directory.
                    return Err(Errno::Perm);
                }
                self.dir(c.h)?.symlink(target, path(c.s2)?).map_err(io)?;
                done
            }
            Op::Readlink => {
                let target = self.dir(c.h)?.read_link(path(c.s1)?).map_err(io)?;
                let bytes = target.as_os_str().as_bytes();
                let n = bytes.len().min(c.a as usize).min(out.len());
                out[..n].copy_from_slice(&bytes[..n]);
                Ok((0, n))
            }
            Op::Link => {
                let (from, to) = (self.dir(c.h)?, self.dir(c.h2)?);
                if c.flags != 0 {
                    // Following the source is refused, as wasmtime does.
                    return Err(Errno::Inval);
                }
                from.hard_link(path(c.s1)?, to, path(c.s2)?).map_err(io)?;
                done
            }
            Op::Sync => {
                self.file(c.h)
                    .map_err(|_| Errno::Badf)?
                    .sync_all()
                    .map_err(io)?;
                done
            }
        }
    }

    /// `path_open` beneath directory `c.h`, as wasmtime opens: the mode
    /// from the rights asked for ([`OpenMode::of`]), appending left to
    /// each write.
    fn open_at(&mut self, c: &Call<'_>) -> Reply {
        let dir = self.dir(c.h)?;
        let path = path(c.s1)?;
        let (oflags, flags) = ((c.a & 0xffff) as u16, ((c.a >> 16) & 0xffff) as u16);
        if let Some(e) = open_flags_error(oflags, flags) {
            return Err(e);
        }
        let mode = OpenMode::of(oflags, c.b);
        let mut options = OpenOptions::new();
        options
            .read(mode.read)
            .write(mode.write)
            .truncate(oflags & oflags::TRUNC != 0)
            .follow(if c.flags & LOOKUP_SYMLINK_FOLLOW != 0 {
                FollowSymlinks::Yes
            } else {
                FollowSymlinks::No
            });
        if oflags & oflags::CREAT != 0 {
            if oflags & oflags::EXCL != 0 {
                options.create_new(true);
            } else {
                options.create(true);
            }
        }
        let file = dir.open_with(path, &options).map_err(|e| wasi_errno(&e))?;
        let meta = file.metadata().map_err(|e| wasi_errno(&e))?;
        let (handle, filetype) = if meta.is_dir() {
            (
                Handle::Dir(Dir::from_std_file(file.into_std())),
                filetype::DIRECTORY,
            )
        } else if oflags & oflags::DIRECTORY != 0 {
            return Err(Errno::Notdir);
        } else {
            (Handle::File(file), filetype_of(&meta))
        };
        let h = self.insert(handle)?;
        Ok((u64::from(h) | u64::from(filetype) << 32, 0))
    }
}

/// `path_rename` as wasmtime's cap-std renames: a trailing slash on either
/// path requires the source to be a directory (a symlink is not followed
/// for that, as `renameat` does not follow it on Linux), and a last
/// component that is `.` (`d/.`, `./`) is `EBUSY` once its directory
/// opened.
fn rename(from: &Dir, old: &[u8], to: &Dir, new: &[u8]) -> Result<(), Errno> {
    let io = |e: io::Error| wasi_errno(&e);
    let requires_dir = old.ends_with(b"/") || new.ends_with(b"/");
    let (old, new) = (strip_trailing_slashes(old), strip_trailing_slashes(new));
    let mut dot = false;
    for (dir, p) in [(from, old), (to, new)] {
        // Both directories are opened first, for their errors (a path
        // leading out or nowhere), as cap-std does.
        let (parent, base) = split_parent(p)?;
        if !parent.is_empty() {
            dir.open_dir(path(parent)?).map_err(io)?;
        }
        dot |= base == Base::Dot;
    }
    if dot {
        return Err(Errno::Busy);
    }
    let (old, new) = (path(old)?, path(new)?);
    if requires_dir && !from.symlink_metadata(old).map_err(io)?.is_dir() {
        return Err(Errno::Notdir);
    }
    from.rename(old, to, new).map_err(io)
}

/// A guest path as a host path; NUL bytes are refused.
fn path(bytes: &[u8]) -> Result<&Path, Errno> {
    if bytes.contains(&0) {
        return Err(Errno::Inval);
    }
    if bytes.is_empty() {
        return Err(Errno::Noent);
    }
    Ok(Path::new(OsStr::from_bytes(bytes)))
}

/// Copies `bytes` to the reply's data.
fn put(out: &mut [u8], bytes: &[u8]) -> Reply {
    let out = out.get_mut(..bytes.len()).ok_or(Errno::Overflow)?;
    out.copy_from_slice(bytes);
    Ok((0, bytes.len()))
}

fn filetype_of(meta: &Metadata) -> u8 {
    let t = meta.file_type();
    if t.is_dir() {
        filetype::DIRECTORY
    } else if t.is_file() {
        filetype::REGULAR_FILE
    } else if t.is_symlink() {
        filetype::SYMBOLIC_LINK
    } else {
        filetype::UNKNOWN
    }
}

fn nanos(secs: i64, nsec: i64) -> u64 {
    (secs.max(0) as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(nsec.max(0) as u64)
}

/// The `filestat` record of `meta`. The device is 1, as wasmtime reports
/// it for every file.
fn filestat(meta: &Metadata) -> [u8; 64] {
    FileStat {
        dev: 1,
        ino: meta.ino(),
        filetype: filetype_of(meta),
        nlink: meta.nlink(),
        size: meta.len(),
        atim: nanos(meta.atime(), meta.atime_nsec()),
        mtim: nanos(meta.mtime(), meta.mtime_nsec()),
        ctim: nanos(meta.ctime(), meta.ctime_nsec()),
    }
    .to_bytes()
}

/// The `fstflags` of a set-times call as the times to set.
fn times(
    atim: u64,
    mtim: u64,
    flags: u64,
) -> Result<
    (
        Option<fs_set_times::SystemTimeSpec>,
        Option<fs_set_times::SystemTimeSpec>,
    ),
    Errno,
> {
    use fstflags::*;
    let flags = u16::try_from(flags).map_err(|_| Errno::Inval)?;
    check_fstflags(flags)?;
    let pick = |given: u16, now: u16, at: u64| match (flags & given != 0, flags & now != 0) {
        (true, true) => Err(Errno::Inval),
        (true, false) => Ok(Some(fs_set_times::SystemTimeSpec::Absolute(
            UNIX_EPOCH + Duration::from_nanos(at),
        ))),
        (false, true) => Ok(Some(fs_set_times::SystemTimeSpec::SymbolicNow)),
        (false, false) => Ok(None),
    };
    Ok((pick(ATIM, ATIM_NOW, atim)?, pick(MTIM, MTIM_NOW, mtim)?))
}

fn cap_time(t: fs_set_times::SystemTimeSpec) -> cap_fs_ext::SystemTimeSpec {
    match t {
        fs_set_times::SystemTimeSpec::SymbolicNow => cap_fs_ext::SystemTimeSpec::SymbolicNow,
        fs_set_times::SystemTimeSpec::Absolute(t) => {
            cap_fs_ext::SystemTimeSpec::Absolute(cap_std::time::SystemTime::from_std(t))
        }
    }
}

/// `fd_readdir` records from `cookie` into `out`: `.` and `..` (both
/// with the directory's inode number, as wasmtime gives them), then the
/// entries sorted by name (so cookies stay valid between calls).
fn readdir(dir: &Dir, cookie: u64, out: &mut [u8]) -> Result<usize, Errno> {
    let io = |e: io::Error| wasi_errno(&e);
    let mut entries: Vec<(Vec<u8>, u64, u8)> = Vec::new();
    for entry in dir.entries().map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().as_bytes().to_vec();
        let meta = entry.metadata().map_err(io)?;
        entries.push((name, meta.ino(), filetype_of(&meta)));
    }
    entries.sort();
    let ino = dir.dir_metadata().map_err(io)?.ino();
    let dots = [
        (&b"."[..], ino, filetype::DIRECTORY),
        (&b".."[..], ino, filetype::DIRECTORY),
    ];
    let all = dots
        .into_iter()
        .chain(entries.iter().map(|(n, ino, t)| (n.as_slice(), *ino, *t)));
    Ok(write_dirents(all, cookie, out))
}

/// A request to the file-system thread: the guest's call, the most bytes
/// its reply may take, and where to send the reply.
type Request = (Vec<u8>, usize, mpsc::Sender<Vec<u8>>);

/// The thread that serves host directories, and how to reach it.
pub struct FsThread {
    requests: mpsc::Sender<Request>,
}

impl FsThread {
    /// Starts serving `dirs` on a thread of its own (named `wisp-fs`).
    pub fn start(mut dirs: HostDirs) -> anyhow::Result<FsThread> {
        let (requests, incoming) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("wisp-fs".into())
            .spawn(move || {
                for (call, room, reply_to) in incoming {
                    let mut reply = vec![0u8; room];
                    let n = dirs.serve(&call, &mut reply);
                    reply.truncate(n);
                    let _ = reply_to.send(reply);
                }
            })?;
        Ok(FsThread { requests })
    }

    /// Serves one call on the thread; the reply goes into `reply`.
    pub fn call(&self, call: &[u8], reply: &mut [u8]) -> usize {
        let (tx, rx) = mpsc::channel();
        let answer = self
            .requests
            .send((call.to_vec(), reply.len(), tx))
            .ok()
            .and_then(|()| rx.recv().ok());
        match answer {
            Some(bytes) => {
                let n = bytes.len().min(reply.len());
                reply[..n].copy_from_slice(&bytes[..n]);
                n
            }
            None => {
                encode_reply_header(reply, Errno::Io as u16, 0);
                REPLY_HEADER
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(dirs: &mut HostDirs, c: &Call<'_>) -> (u16, u64, Vec<u8>) {
        let mut buf = vec![0u8; c.len()];
        c.encode(&mut buf).unwrap();
        let mut reply = vec![0u8; 4096];
        let n = dirs.serve(&buf, &mut reply);
        let (e, v, d) = wisp_abi::hostfs::decode_reply(&reply[..n]).unwrap();
        (e, v, d.to_vec())
    }

    #[test]
    fn paths_stay_beneath_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("inside")).unwrap();
        std::fs::write(tmp.path().join("secret"), b"no").unwrap();
        std::os::unix::fs::symlink("../secret", tmp.path().join("inside/up")).unwrap();
        let mut dirs = HostDirs::open(&[tmp.path().join("inside")]).unwrap();
        for p in [&b"../secret"[..], b"/etc/passwd", b"up"] {
            let mut c = Call::new(Op::Open, 0);
            (c.flags, c.s1, c.b) = (1, p, wisp_abi::wasi::rights::FD_READ);
            assert_eq!(
                call(&mut dirs, &c).0,
                Errno::Perm as u16,
                "{}",
                String::from_utf8_lossy(p)
            );
        }
        let mut c = Call::new(Op::Symlink, 0);
        (c.s1, c.s2) = (b"/etc/passwd", b"abs");
        assert_eq!(call(&mut dirs, &c).0, Errno::Perm as u16);
        // Garbage and unknown handles are errors, not panics.
        let mut reply = [0u8; 64];
        let n = dirs.serve(b"\x01garbage", &mut reply);
        assert_eq!(
            wisp_abi::hostfs::decode_reply(&reply[..n]).unwrap().0,
            Errno::Inval as u16
        );
        assert_eq!(
            call(&mut dirs, &Call::new(Op::Close, 99)).0,
            Errno::Badf as u16
        );
        assert_eq!(
            call(&mut dirs, &Call::new(Op::Read, 0)).0,
            Errno::Isdir as u16
        );
    }

    #[test]
    fn random_calls_never_panic_or_leave_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let inside = tmp.path().join("inside");
        std::fs::create_dir(&inside).unwrap();
        let mut dirs = HostDirs::open(std::slice::from_ref(&inside)).unwrap();
        // xorshift: deterministic, no dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let names: [&[u8]; 6] = [b"a", b"d/x", b"..", b"../escape", b"/abs", b"d"];
        let mut reply = vec![0u8; 70_000];
        for _ in 0..20_000 {
            let r = next();
            let mut c = Call::new(Op::Open, (r % 4) as u32);
            c.op = [
                Op::Open,
                Op::Write,
                Op::Read,
                Op::Mkdir,
                Op::Rename,
                Op::Symlink,
                Op::Link,
                Op::Unlink,
                Op::Rmdir,
                Op::Readdir,
                Op::Close,
                Op::Sync,
                Op::SetSize,
            ][(r >> 8) as usize % 13];
            (c.h2, c.flags) = ((r >> 16) as u32 % 4, (r >> 20) as u32 % 3);
            c.a = next() % 5000;
            c.b = if r >> 30 & 1 == 1 {
                u64::MAX
            } else {
                next() % 3
            };
            (c.s1, c.s2) = (names[(r >> 24) as usize % 6], names[(r >> 28) as usize % 6]);
            let mut buf = vec![0u8; c.len()];
            c.encode(&mut buf).unwrap();
            // Sometimes cut the call short, as a hostile guest might.
            let len = if r % 7 == 0 {
                (r as usize >> 3) % buf.len()
            } else {
                buf.len()
            };
            let n = dirs.serve(&buf[..len], &mut reply);
            assert!(n >= REPLY_HEADER && n <= reply.len());
        }
        // Whatever happened inside, nothing appeared next to it.
        let outside: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(outside.len(), 1, "only `inside` is in the parent");
    }

    #[test]
    fn files_are_created_written_and_read() {
        let tmp = tempfile::tempdir().unwrap();
        let mut dirs = HostDirs::open(&[tmp.path().to_path_buf()]).unwrap();
        let mut open = Call::new(Op::Open, 0);
        open.a = u64::from(oflags::CREAT);
        open.b = wisp_abi::wasi::rights::FD_READ | wisp_abi::wasi::rights::FD_WRITE;
        open.s1 = b"f.txt";
        let (e, v, _) = call(&mut dirs, &open);
        assert_eq!(e, 0);
        let h = v as u32;
        assert_eq!((v >> 32) as u8, filetype::REGULAR_FILE);
        let mut w = Call::new(Op::Write, h);
        (w.b, w.s1) = (0, b"hello");
        let (e, n, end) = call(&mut dirs, &w);
        assert_eq!((e, n, end), (0, 5, 5u64.to_le_bytes().to_vec()));
        // Appending writes at the end whatever the offset, and says where
        // it ended.
        (w.b, w.s1, w.flags) = (1, b"!!", WRITE_APPEND);
        assert_eq!(call(&mut dirs, &w).2, 7u64.to_le_bytes());
        let mut r = Call::new(Op::Read, h);
        (r.a, r.b) = (100, 1);
        assert_eq!(call(&mut dirs, &r).2, b"ello!!");
        assert_eq!(std::fs::read(tmp.path().join("f.txt")).unwrap(), b"hello!!");
        // A directory opened with a right to write is refused by the host
        // (EISDIR), one without it is a directory handle.
        let mut open_dir = Call::new(Op::Open, 0);
        (open_dir.s1, open_dir.b) = (b".", wisp_abi::wasi::rights::FD_WRITE);
        assert_eq!(call(&mut dirs, &open_dir).0, Errno::Isdir as u16);
        open_dir.b = wisp_abi::wasi::rights::ALL & !wisp_abi::wasi::rights::FD_WRITE;
        let (e, v, _) = call(&mut dirs, &open_dir);
        assert_eq!((e, (v >> 32) as u8), (0, filetype::DIRECTORY));
        assert_eq!(call(&mut dirs, &Call::new(Op::Close, h)).0, 0);
        assert_eq!(
            call(&mut dirs, &Call::new(Op::Close, h)).0,
            Errno::Badf as u16
        );
    }
}
