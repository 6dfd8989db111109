//! The WASI calls on files and directories, served by the in-memory
//! filesystem (`wisp_vfs`), or forwarded to the host for descriptors it
//! serves (`remote`). Each checks what wasmtime checks, in its order:
//! flags with undefined bits (`EINVAL`), then the descriptor (path calls
//! need a directory, file calls a file: `EBADF` otherwise), then the
//! path (`EILSEQ` unless UTF-8).

use wasmtime::{Caller, Linker, Result};
use wisp_abi::wasi::{check_fstflags, open_flags_error, MODULE};

use wisp_abi::hostfs::{Call, Op};
use wisp_vfs::{FdKind, Vfs};

use super::remote;
use super::{defined, with, Ctx, Errno, Mem};

type C<'a> = Caller<'a, Ctx>;

/// The directory behind `fd`, for a path call (`EBADF` for anything else).
fn dir_fd(ctx: &Ctx, fd: i32) -> Result<u32, Errno> {
    match ctx.fs.kind(fd as u32)? {
        FdKind::Dir => Ok(fd as u32),
        _ => Err(Errno::Badf),
    }
}

/// The file behind `fd` (`EBADF` for stdio and directories).
fn file_fd(ctx: &Ctx, fd: i32) -> Result<u32, Errno> {
    match ctx.fs.kind(fd as u32)? {
        FdKind::File => Ok(fd as u32),
        _ => Err(Errno::Badf),
    }
}

/// A path the module passed: wasmtime reads it as a string, so it must be
/// UTF-8.
fn path<'m>(mem: &'m Mem<'_>, ptr: i32, len: i32) -> Result<&'m [u8], Errno> {
    let bytes = mem.slice(ptr, len as u32)?;
    core::str::from_utf8(bytes).map_err(|_| Errno::Ilseq)?;
    Ok(bytes)
}

/// Traps unless `lookupflags` has only its one bit, `SYMLINK_FOLLOW`.
fn lookupflags(flags: i32) -> Result<u32> {
    defined(flags as u32 <= 1, "undefined lookupflags")?;
    Ok(flags as u32)
}

/// Traps unless `fstflags` has only defined bits.
fn fstflags(flags: i32) -> Result<u16> {
    use wisp_abi::wasi::fstflags::ALL;
    defined(flags as u32 & !u32::from(ALL) == 0, "undefined fstflags")?;
    Ok(flags as u16)
}

/// The host handle behind `fd`, if the host serves it.
fn host_of(ctx: &Ctx, fd: u32) -> Option<u32> {
    ctx.fs.foreign(fd).map(|f| f.host)
}

/// The host handles behind two directory descriptors: both the host's,
/// both the guest's (`None`), or `EXDEV`.
fn host_pair(ctx: &Ctx, a: u32, b: u32) -> Result<Option<(u32, u32)>, Errno> {
    match (host_of(ctx, a), host_of(ctx, b)) {
        (Some(a), Some(b)) => Ok(Some((a, b))),
        (None, None) => Ok(None),
        _ => Err(Errno::Xdev),
    }
}

/// A call on host directory `h` with two strings.
fn two_paths(
    ctx: &mut Ctx,
    op: Op,
    h: u32,
    h2: u32,
    flags: u32,
    s1: &[u8],
    s2: &[u8],
) -> Result<(), Errno> {
    let mut c = Call::new(op, h);
    (c.h2, c.flags, c.s1, c.s2) = (h2, flags, s1, s2);
    remote::call(ctx, &c).map(|_| ())
}

fn len32(n: usize) -> Result<u32, Errno> {
    u32::try_from(n).map_err(|_| Errno::Overflow)
}

/// `fd_read`/`fd_pread` of file `fd` into one buffer, at `offset` or (for
/// `None`) the position, which then moves.
pub(super) fn read(
    mem: &mut Mem<'_>,
    ctx: &mut Ctx,
    fd: u32,
    (ptr, len): (i32, u32),
    offset: Option<u64>,
    nread: i32,
) -> Result<(), Errno> {
    let n = match ctx.fs.foreign(fd).map(|f| (f.host, f.pos)) {
        Some((host, pos)) => {
            let at = offset.unwrap_or(pos);
            let mut filled = 0usize;
            loop {
                let data = remote::read(
                    ctx,
                    host,
                    len as usize - filled,
                    at.saturating_add(filled as u64),
                )?;
                let dst = mem.slice_mut(ptr.wrapping_add(filled as i32), len32(data.len())?)?;
                dst.copy_from_slice(&data);
                filled += data.len();
                if data.is_empty() || filled == len as usize {
                    break;
                }
            }
            if offset.is_none() {
                ctx.fs.foreign_mut(fd).ok_or(Errno::Badf)?.pos = at + filled as u64;
            }
            filled
        }
        None => {
            let dst = mem.slice_mut(ptr, len)?;
            match offset {
                Some(at) => ctx.fs.pread(fd, dst, at)?,
                None => ctx.fs.read(fd, dst)?,
            }
        }
    };
    mem.write_u32(nread, len32(n)?)
}

/// `fd_write`/`fd_pwrite` of one buffer to file `fd`, at `offset` or (for
/// `None`) the position, which then moves; with `APPEND`, at the end.
pub(super) fn write(
    mem: &mut Mem<'_>,
    ctx: &mut Ctx,
    fd: u32,
    (ptr, len): (i32, u32),
    offset: Option<u64>,
    nwritten: i32,
) -> Result<(), Errno> {
    let src = mem.slice(ptr, len)?;
    let n = match ctx.fs.foreign(fd).map(|f| (f.host, f.pos, f.append)) {
        Some((host, pos, append)) => {
            let at = offset.unwrap_or(pos);
            let mut total = 0usize;
            let mut end = at;
            // An empty write still reaches the host: it fails there on a
            // descriptor not open for writing.
            for chunk in src
                .chunks(remote::CHUNK)
                .chain(src.is_empty().then_some(src))
            {
                let (n, new_end) =
                    remote::write(ctx, host, chunk, at.saturating_add(total as u64), append)?;
                total += n;
                end = new_end;
                if n < chunk.len() {
                    break;
                }
            }
            if offset.is_none() {
                ctx.fs.foreign_mut(fd).ok_or(Errno::Badf)?.pos = end;
            }
            total
        }
        None => {
            let fs = ctx.fs_now();
            match offset {
                Some(at) => fs.pwrite(fd, src, at)?,
                None => fs.write(fd, src)?,
            }
        }
    };
    mem.write_u32(nwritten, len32(n)?)
}

/// Bytes between the position of file `fd` and its end (for
/// `poll_oneoff`).
pub(super) fn remaining(ctx: &mut Ctx, fd: u32) -> Result<u64, Errno> {
    match ctx.fs.foreign(fd).map(|f| (f.host, f.pos)) {
        Some((host, pos)) => Ok(remote::size(ctx, host)?.saturating_sub(pos)),
        None => ctx.fs.remaining(fd),
    }
}

/// `fd_seek`, `whence` checked to be 0, 1 or 2.
fn seek(ctx: &mut Ctx, fd: i32, delta: i64, whence: u8) -> Result<u64, Errno> {
    let fd = fd as u32;
    let Some((host, pos)) = ctx.fs.foreign(fd).map(|f| (f.host, f.pos)) else {
        return ctx.fs.seek(fd, delta, whence);
    };
    if ctx.fs.kind(fd)? != FdKind::File {
        return Err(Errno::Badf);
    }
    let pos = match whence {
        0 => u64::try_from(delta).map_err(|_| Errno::Inval)?,
        1 => pos.checked_add_signed(delta).ok_or(Errno::Inval)?,
        _ => remote::size(ctx, host)?
            .checked_add_signed(delta)
            .ok_or(Errno::Inval)?,
    };
    ctx.fs.foreign_mut(fd).ok_or(Errno::Badf)?.pos = pos;
    Ok(pos)
}

/// `fd_readdir` of a host directory: as many records as fit in `out`,
/// asked for a message at a time; returns the bytes used.
fn remote_readdir(
    ctx: &mut Ctx,
    host: u32,
    mut cookie: u64,
    out: &mut [u8],
) -> Result<usize, Errno> {
    let most = remote::CHUNK;
    let mut used = 0;
    loop {
        let want = (out.len() - used).min(most);
        let mut c = Call::new(Op::Readdir, host);
        (c.a, c.b) = (cookie, want as u64);
        let (_, data) = remote::call(ctx, &c)?;
        let data = &data[..data.len().min(want)];
        out[used..used + data.len()].copy_from_slice(data);
        if data.len() < want || used + data.len() == out.len() {
            return Ok(used + data.len());
        }
        // A full message but room left: keep the whole records, and go on
        // from the cookie after the last of them.
        let mut at = 0;
        let mut next = None;
        while at + 24 <= data.len() {
            let namlen =
                u32::from_le_bytes(data[at + 16..at + 20].try_into().unwrap_or_default()) as usize;
            if at + 24 + namlen > data.len() {
                break;
            }
            next = Some(u64::from_le_bytes(
                data[at..at + 8].try_into().unwrap_or_default(),
            ));
            at += 24 + namlen;
        }
        let Some(next) = next else {
            return Ok(used + data.len());
        };
        used += at;
        cookie = next;
    }
}

/// `path_open`, its arguments checked (see `add_to_linker`).
#[allow(clippy::too_many_arguments)]
fn path_open(
    m: &mut Mem<'_>,
    cx: &mut Ctx,
    fd: i32,
    lookup: u32,
    (ptr, len): (i32, i32),
    oflags: u16,
    (base, inheriting): (u64, u64),
    flags: u16,
    out: i32,
) -> Result<(), Errno> {
    let path = path(m, ptr, len)?;
    match cx.fs.kind(fd as u32)? {
        FdKind::Dir => {}
        FdKind::File => return Err(Errno::Notdir),
        FdKind::Stdio(_) => return Err(Errno::Badf),
    }
    if let Some(e) = open_flags_error(oflags, flags) {
        return Err(e);
    }
    let dir = fd as u32;
    let Some(host) = host_of(cx, dir) else {
        let opened = cx
            .fs_now()
            .open(dir, lookup, path, oflags, base, inheriting, flags)?;
        return m.write_u32(out, opened);
    };
    let foreign = remote::open(cx, host, lookup, path, oflags, base, flags)?;
    let host = foreign.host;
    let opened = match cx.fs.add_foreign(foreign) {
        Ok(fd) => fd,
        Err(e) => {
            remote::simple(cx, Op::Close, host)?;
            return Err(e);
        }
    };
    m.write_u32(out, opened)
}

/// Defines the fd and path functions of the filesystem.
pub fn add_to_linker(linker: &mut Linker<Ctx>) -> Result<()> {
    linker.func_wrap(
        MODULE,
        "fd_prestat_get",
        |mut c: C<'_>, fd: i32, out: i32| {
            with(&mut c, |m, cx| {
                let name = cx.fs.prestat(fd as u32)?;
                let buf = m.slice_mut(out, 8)?;
                buf.fill(0); // tag 0: a directory
                buf[4..8].copy_from_slice(&len32(name.len())?.to_le_bytes());
                Ok(())
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_prestat_dir_name",
        |mut c: C<'_>, fd: i32, path: i32, len: i32| {
            with(&mut c, |m, cx| {
                cx.fs.kind(fd as u32)?;
                // What is open but no preopen is `ENOTDIR` here, as in
                // wasmtime.
                let name = cx.fs.prestat(fd as u32).map_err(|_| Errno::Notdir)?;
                if name.len() > len as u32 as usize {
                    return Err(Errno::Nametoolong);
                }
                m.slice_mut(path, len32(name.len())?)?.copy_from_slice(name);
                Ok(())
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_pread",
        |mut c: C<'_>, fd: i32, iovs: i32, n: i32, offset: i64, out: i32| {
            with(&mut c, |m, cx| {
                let buf = m.first_buffer(iovs, n)?;
                match cx.fs.kind(fd as u32)? {
                    FdKind::File => read(m, cx, fd as u32, buf, Some(offset as u64), out),
                    FdKind::Stdio(wisp_vfs::Stdio::In) => Err(Errno::Spipe),
                    _ => Err(Errno::Badf),
                }
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_pwrite",
        |mut c: C<'_>, fd: i32, iovs: i32, n: i32, offset: i64, out: i32| {
            with(&mut c, |m, cx| {
                let buf = m.first_buffer(iovs, n)?;
                match cx.fs.kind(fd as u32)? {
                    FdKind::File => write(m, cx, fd as u32, buf, Some(offset as u64), out),
                    FdKind::Stdio(wisp_vfs::Stdio::Out | wisp_vfs::Stdio::Err) => Err(Errno::Spipe),
                    _ => Err(Errno::Badf),
                }
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_seek",
        |mut c: C<'_>, fd: i32, delta: i64, whence: i32, out: i32| {
            defined((0..=2).contains(&whence), "whence out of range")?;
            Ok(with(&mut c, |m, cx| {
                let pos = seek(cx, fd, delta, whence as u8)?;
                m.write_u64(out, pos)
            }))
        },
    )?;
    linker.func_wrap(MODULE, "fd_tell", |mut c: C<'_>, fd: i32, out: i32| {
        with(&mut c, |m, cx| {
            let pos = match cx.fs.foreign(fd as u32) {
                Some(f) if f.filetype != wisp_vfs::filetype::DIRECTORY => f.pos,
                Some(_) => return Err(Errno::Badf),
                None => cx.fs.tell(fd as u32)?,
            };
            m.write_u64(out, pos)
        })
    })?;
    linker.func_wrap(
        MODULE,
        "fd_advise",
        |mut c: C<'_>, fd: i32, _: i64, _: i64, advice: i32| {
            defined((0..=5).contains(&advice), "advice out of range")?;
            // Advice changes nothing in memory; the host's page cache is
            // not the guest's to steer.
            Ok(with(&mut c, |_, cx| file_fd(cx, fd).map(|_| ())))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_allocate",
        |mut c: C<'_>, fd: i32, _: i64, _: i64| {
            // As wasmtime does: preallocation is not offered.
            with(&mut c, |_, cx| {
                file_fd(cx, fd)?;
                Err(Errno::Notsup)
            })
        },
    )?;
    for name in ["fd_sync", "fd_datasync"] {
        linker.func_wrap(MODULE, name, |mut c: C<'_>, fd: i32| {
            with(&mut c, |_, cx| {
                let fd = file_fd(cx, fd)?;
                match host_of(cx, fd) {
                    Some(host) => remote::simple(cx, Op::Sync, host),
                    None => Ok(()),
                }
            })
        })?;
    }
    linker.func_wrap(
        MODULE,
        "fd_fdstat_set_rights",
        |mut c: C<'_>, fd: i32, base: i64, inheriting: i64| {
            let all = wisp_abi::wasi::rights::ALL;
            defined((base | inheriting) as u64 & !all == 0, "undefined rights")?;
            Ok(with(&mut c, |_, cx| {
                cx.fs.set_rights(fd as u32, base as u64, inheriting as u64)
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_filestat_set_size",
        |mut c: C<'_>, fd: i32, size: i64| {
            with(&mut c, |_, cx| {
                let fd = file_fd(cx, fd)?;
                if let Some(host) = host_of(cx, fd) {
                    let mut c = Call::new(Op::SetSize, host);
                    c.a = size as u64;
                    return remote::call(cx, &c).map(|_| ());
                }
                cx.fs_now().set_size(fd, size as u64)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_filestat_set_times",
        |mut c: C<'_>, fd: i32, atim: i64, mtim: i64, flags: i32| {
            let flags = fstflags(flags)?;
            Ok(with(&mut c, |_, cx| {
                check_fstflags(flags)?;
                let fd = fd as u32;
                if let FdKind::Stdio(_) = cx.fs.kind(fd)? {
                    return Err(Errno::Badf);
                }
                if let Some(host) = host_of(cx, fd) {
                    let mut c = Call::new(Op::SetTimes, host);
                    (c.a, c.b, c.c) = (atim as u64, mtim as u64, u64::from(flags));
                    return remote::call(cx, &c).map(|_| ());
                }
                cx.fs_now().set_times(fd, atim as u64, mtim as u64, flags)
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_readdir",
        |mut c: C<'_>, fd: i32, buf: i32, len: i32, cookie: i64, out: i32| {
            with(&mut c, |m, cx| {
                let fd = dir_fd(cx, fd)?;
                let used = match host_of(cx, fd) {
                    Some(host) => {
                        remote_readdir(cx, host, cookie as u64, m.slice_mut(buf, len as u32)?)?
                    }
                    None => cx
                        .fs
                        .readdir(fd, cookie as u64, m.slice_mut(buf, len as u32)?)?,
                };
                m.write_u32(out, len32(used)?)
            })
        },
    )?;
    linker.func_wrap(MODULE, "fd_renumber", |mut c: C<'_>, fd: i32, to: i32| {
        with(&mut c, |_, cx| {
            match cx.fs.renumber(fd as u32, to as u32)? {
                Some(host) => remote::simple(cx, Op::Close, host),
                None => Ok(()),
            }
        })
    })?;

    linker.func_wrap(
        MODULE,
        "path_open",
        |mut c: C<'_>,
         fd: i32,
         lookup: i32,
         path: i32,
         path_len: i32,
         oflags: i32,
         base: i64,
         inheriting: i64,
         flags: i32,
         out: i32| {
            use wisp_abi::wasi::{fdflags, oflags as of, rights};
            let lookup = lookupflags(lookup)?;
            defined(oflags as u32 & !u32::from(of::ALL) == 0, "undefined oflags")?;
            defined(
                (base | inheriting) as u64 & !rights::ALL == 0,
                "undefined rights",
            )?;
            defined(
                flags as u32 & !u32::from(fdflags::ALL) == 0,
                "undefined fdflags",
            )?;
            let rights = (base as u64, inheriting as u64);
            Ok(with(&mut c, |m, cx| {
                path_open(
                    m,
                    cx,
                    fd,
                    lookup,
                    (path, path_len),
                    oflags as u16,
                    rights,
                    flags as u16,
                    out,
                )
            }))
        },
    )?;
    // The calls that take a directory and one path and return nothing.
    type PathOp = fn(&mut Vfs, u32, &[u8]) -> Result<(), Errno>;
    let path_ops: [(&str, PathOp, Op); 3] = [
        ("path_create_directory", Vfs::create_dir, Op::Mkdir),
        ("path_remove_directory", Vfs::remove_dir, Op::Rmdir),
        ("path_unlink_file", Vfs::unlink, Op::Unlink),
    ];
    for (name, op, remote_op) in path_ops {
        linker.func_wrap(
            MODULE,
            name,
            move |mut c: C<'_>, fd: i32, ptr: i32, len: i32| {
                with(&mut c, |m, cx| {
                    let dir = dir_fd(cx, fd)?;
                    let path = path(m, ptr, len)?;
                    match host_of(cx, dir) {
                        Some(host) => remote::on_path(cx, remote_op, host, path).map(|_| ()),
                        None => op(cx.fs_now(), dir, path),
                    }
                })
            },
        )?;
    }
    linker.func_wrap(
        MODULE,
        "path_filestat_get",
        |mut c: C<'_>, fd: i32, lookup: i32, ptr: i32, len: i32, out: i32| {
            let lookup = lookupflags(lookup)?;
            Ok(with(&mut c, |m, cx| {
                let dir = dir_fd(cx, fd)?;
                let path = path(m, ptr, len)?;
                let stat = match host_of(cx, dir) {
                    Some(host) => {
                        let mut c = Call::new(Op::PathFilestat, host);
                        (c.flags, c.s1) = (lookup, path);
                        let (_, bytes) = remote::call(cx, &c)?;
                        <[u8; 64]>::try_from(bytes.as_slice()).map_err(|_| Errno::Io)?
                    }
                    None => cx.fs.path_filestat(dir, lookup, path)?.to_bytes(),
                };
                m.slice_mut(out, 64)?.copy_from_slice(&stat);
                Ok(())
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_filestat_set_times",
        |mut c: C<'_>,
         fd: i32,
         lookup: i32,
         ptr: i32,
         len: i32,
         atim: i64,
         mtim: i64,
         flags: i32| {
            let lookup = lookupflags(lookup)?;
            let flags = fstflags(flags)?;
            Ok(with(&mut c, |m, cx| {
                check_fstflags(flags)?;
                let dir = dir_fd(cx, fd)?;
                let path = path(m, ptr, len)?;
                if let Some(host) = host_of(cx, dir) {
                    let mut c = Call::new(Op::PathSetTimes, host);
                    (c.flags, c.s1) = (lookup, path);
                    (c.a, c.b, c.c) = (atim as u64, mtim as u64, u64::from(flags));
                    return remote::call(cx, &c).map(|_| ());
                }
                cx.fs_now()
                    .path_set_times(dir, lookup, path, atim as u64, mtim as u64, flags)
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_link",
        |mut c: C<'_>,
         fd: i32,
         lookup: i32,
         old: i32,
         old_len: i32,
         new_fd: i32,
         new: i32,
         new_len: i32| {
            let lookup = lookupflags(lookup)?;
            Ok(with(&mut c, |m, cx| {
                let dir = dir_fd(cx, fd)?;
                let new_dir = dir_fd(cx, new_fd)?;
                let (old, new) = (path(m, old, old_len)?, path(m, new, new_len)?);
                // Hard links to what a symlink points at are refused, as
                // wasmtime refuses them.
                if lookup != 0 {
                    return Err(Errno::Inval);
                }
                if let Some((h, h2)) = host_pair(cx, dir, new_dir)? {
                    return two_paths(cx, Op::Link, h, h2, 0, old, new);
                }
                cx.fs_now().link(dir, old, new_dir, new)
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_rename",
        |mut c: C<'_>, fd: i32, old: i32, old_len: i32, new_fd: i32, new: i32, new_len: i32| {
            with(&mut c, |m, cx| {
                let dir = dir_fd(cx, fd)?;
                let new_dir = dir_fd(cx, new_fd)?;
                let (old, new) = (path(m, old, old_len)?, path(m, new, new_len)?);
                if let Some((h, h2)) = host_pair(cx, dir, new_dir)? {
                    return two_paths(cx, Op::Rename, h, h2, 0, old, new);
                }
                cx.fs_now().rename(dir, old, new_dir, new)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_symlink",
        |mut c: C<'_>, target: i32, target_len: i32, fd: i32, ptr: i32, len: i32| {
            with(&mut c, |m, cx| {
                let dir = dir_fd(cx, fd)?;
                let (target, path) = (path(m, target, target_len)?, path(m, ptr, len)?);
                if let Some(host) = host_of(cx, dir) {
                    return two_paths(cx, Op::Symlink, host, 0, 0, target, path);
                }
                cx.fs_now().symlink(target, dir, path)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_readlink",
        |mut c: C<'_>, fd: i32, ptr: i32, len: i32, buf: i32, buf_len: i32, out: i32| {
            with(&mut c, |m, cx| {
                let dir = dir_fd(cx, fd)?;
                // The path is copied out: the target is written into the
                // same linear memory.
                let path = path(m, ptr, len)?.to_vec();
                let n = match host_of(cx, dir) {
                    Some(host) => {
                        let mut c = Call::new(Op::Readlink, host);
                        (c.a, c.s1) = (u64::from(buf_len as u32), &path);
                        let (_, target) = remote::call(cx, &c)?;
                        let dst = m.slice_mut(buf, buf_len as u32)?;
                        let n = target.len().min(dst.len());
                        dst[..n].copy_from_slice(&target[..n]);
                        n
                    }
                    None => cx
                        .fs
                        .readlink(dir, &path, m.slice_mut(buf, buf_len as u32)?)?,
                };
                m.write_u32(out, len32(n)?)
            })
        },
    )?;
    Ok(())
}
