//! The WASI calls on files and directories, served by the in-memory
//! filesystem (`wisp_vfs`) for every fd from 3 up, or forwarded to the
//! host for descriptors it serves (`remote`). The stdio fds keep the
//! answers a terminal or pipe gives (`ESPIPE`, `ENOTDIR`, …).

use wasmtime::{Caller, Linker, Result};
use wisp_abi::wasi::MODULE;

use wisp_abi::hostfs::{Call, Op};
use wisp_vfs::Vfs;

use super::remote;
use super::{with, Ctx, Errno, Mem};

type C<'a> = Caller<'a, Ctx>;

/// A descriptor the filesystem serves, or the error a stdio fd (or a
/// negative number) gets for this operation.
fn fs_fd(ctx: &Ctx, fd: i32, on_stdio: Errno) -> Result<u32, Errno> {
    match fd {
        3.. => Ok(fd as u32),
        _ if ctx.stdio_fd(fd).is_some() => Err(on_stdio),
        _ => Err(Errno::Badf),
    }
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

/// `fd_read`/`fd_pread` on a file: fills the iovecs in order, stopping at
/// the end of the file.
pub(super) fn read(
    mem: &mut Mem<'_>,
    ctx: &mut Ctx,
    fd: u32,
    iovs: i32,
    count: i32,
    offset: Option<u64>,
    nread: i32,
) -> Result<(), Errno> {
    let iovecs = mem.iovecs(iovs, count)?;
    if let Some(host) = host_of(ctx, fd) {
        let total = remote_read(mem, ctx, host, &iovecs, offset)?;
        return mem.write_u32(nread, len32(total)?);
    }
    if iovecs.is_empty() {
        // Still an error on a descriptor that cannot read.
        ctx.fs.pread(fd, &mut [], 0)?;
    }
    let mut total: usize = 0;
    for (ptr, len) in iovecs {
        let dst = mem.slice_mut(ptr, len)?;
        let n = match offset {
            Some(at) => ctx.fs.pread(fd, dst, at.saturating_add(total as u64))?,
            None => ctx.fs.read(fd, dst)?,
        };
        total += n;
        if n < len as usize {
            break;
        }
    }
    mem.write_u32(nread, len32(total)?)
}

/// `fd_write`/`fd_pwrite` on a file.
pub(super) fn write(
    mem: &mut Mem<'_>,
    ctx: &mut Ctx,
    fd: u32,
    iovs: i32,
    count: i32,
    offset: Option<u64>,
    nwritten: i32,
) -> Result<(), Errno> {
    let iovecs = mem.iovecs(iovs, count)?;
    if let Some(host) = host_of(ctx, fd) {
        let total = remote_write(mem, ctx, host, &iovecs, offset)?;
        return mem.write_u32(nwritten, len32(total)?);
    }
    let fs = ctx.fs_now();
    if iovecs.is_empty() {
        // Still an error on a descriptor that cannot write.
        fs.write(fd, &[])?;
    }
    let mut total: usize = 0;
    for (ptr, len) in iovecs {
        let src = mem.slice(ptr, len)?;
        total += match offset {
            Some(at) => fs.pwrite(fd, src, at.saturating_add(total as u64))?,
            None => fs.write(fd, src)?,
        };
    }
    mem.write_u32(nwritten, len32(total)?)
}

/// Reads a host file into the iovecs, a message at a time, stopping at its
/// end; returns the bytes read.
fn remote_read(
    mem: &mut Mem<'_>,
    ctx: &mut Ctx,
    host: u32,
    iovecs: &[(i32, u32)],
    offset: Option<u64>,
) -> Result<usize, Errno> {
    let mut total = 0usize;
    for &(ptr, len) in iovecs {
        let mut filled = 0usize;
        while filled < len as usize {
            let at = offset.map(|o| o.saturating_add(total as u64));
            let data = remote::read(ctx, host, len as usize - filled, at)?;
            let dst = mem.slice_mut(ptr.wrapping_add(filled as i32), data.len() as u32)?;
            dst.copy_from_slice(&data);
            filled += data.len();
            total += data.len();
            if data.is_empty() {
                return Ok(total);
            }
        }
    }
    Ok(total)
}

/// Writes the iovecs to a host file, a message at a time; returns the
/// bytes written.
fn remote_write(
    mem: &Mem<'_>,
    ctx: &mut Ctx,
    host: u32,
    iovecs: &[(i32, u32)],
    offset: Option<u64>,
) -> Result<usize, Errno> {
    let mut total = 0usize;
    if iovecs.is_empty() {
        remote::write(ctx, host, &[], offset)?;
    }
    for &(ptr, len) in iovecs {
        let src = mem.slice(ptr, len)?;
        for chunk in src.chunks(remote::CHUNK) {
            let at = offset.map(|o| o.saturating_add(total as u64));
            let n = remote::write(ctx, host, chunk, at)?;
            total += n;
            if n < chunk.len() {
                return Ok(total);
            }
        }
    }
    Ok(total)
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

/// Defines the fd and path functions of the filesystem.
pub fn add_to_linker(linker: &mut Linker<Ctx>) -> Result<()> {
    linker.func_wrap(
        MODULE,
        "fd_prestat_get",
        |mut c: C<'_>, fd: i32, out: i32| {
            with(&mut c, |m, cx| {
                let name = cx.fs.prestat(fs_fd(cx, fd, Errno::Badf)?)?;
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
                let name = cx.fs.prestat(fs_fd(cx, fd, Errno::Badf)?)?;
                let dst = m.slice_mut(path, len as u32)?;
                if dst.len() < name.len() {
                    return Err(Errno::Nametoolong);
                }
                dst[..name.len()].copy_from_slice(name);
                Ok(())
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_pread",
        |mut c: C<'_>, fd: i32, iovs: i32, n: i32, offset: i64, out: i32| {
            with(&mut c, |m, cx| {
                let fd = fs_fd(cx, fd, Errno::Spipe)?;
                read(m, cx, fd, iovs, n, Some(offset as u64), out)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_pwrite",
        |mut c: C<'_>, fd: i32, iovs: i32, n: i32, offset: i64, out: i32| {
            with(&mut c, |m, cx| {
                let fd = fs_fd(cx, fd, Errno::Spipe)?;
                write(m, cx, fd, iovs, n, Some(offset as u64), out)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_seek",
        |mut c: C<'_>, fd: i32, delta: i64, whence: i32, out: i32| {
            with(&mut c, |m, cx| {
                let fd = fs_fd(cx, fd, Errno::Spipe)?;
                let whence = u8::try_from(whence).map_err(|_| Errno::Inval)?;
                let pos = match host_of(cx, fd) {
                    Some(host) => {
                        let mut c = Call::new(Op::Seek, host);
                        (c.a, c.flags) = (delta as u64, u32::from(whence));
                        remote::call(cx, &c)?.0
                    }
                    None => cx.fs.seek(fd, delta, whence)?,
                };
                m.write_u64(out, pos)
            })
        },
    )?;
    linker.func_wrap(MODULE, "fd_tell", |mut c: C<'_>, fd: i32, out: i32| {
        with(&mut c, |m, cx| {
            let fd = fs_fd(cx, fd, Errno::Spipe)?;
            let pos = match host_of(cx, fd) {
                Some(host) => {
                    let mut c = Call::new(Op::Seek, host);
                    c.flags = 1;
                    remote::call(cx, &c)?.0
                }
                None => cx.fs.seek(fd, 0, 1)?,
            };
            m.write_u64(out, pos)
        })
    })?;
    linker.func_wrap(
        MODULE,
        "fd_advise",
        |mut c: C<'_>, fd: i32, _: i64, _: i64, advice: i32| {
            with(&mut c, |_, cx| {
                let fd = fs_fd(cx, fd, Errno::Spipe)?;
                if !(0..=5).contains(&advice) {
                    return Err(Errno::Inval);
                }
                if cx.fs.foreign(fd).is_some() {
                    return Ok(());
                }
                cx.fs.check(fd)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_allocate",
        |mut c: C<'_>, fd: i32, _: i64, _: i64| {
            // As wasmtime does: preallocation is not offered.
            with(&mut c, |_, cx| {
                let fd = fs_fd(cx, fd, Errno::Notsup)?;
                if cx.fs.foreign(fd).is_none() {
                    cx.fs.check(fd)?;
                }
                Err(Errno::Notsup)
            })
        },
    )?;
    for name in ["fd_sync", "fd_datasync"] {
        linker.func_wrap(MODULE, name, |mut c: C<'_>, fd: i32| {
            with(&mut c, |_, cx| {
                let fd = fs_fd(cx, fd, Errno::Inval)?;
                match host_of(cx, fd) {
                    Some(host) => remote::simple(cx, Op::Sync, host),
                    None => cx.fs.check(fd),
                }
            })
        })?;
    }
    linker.func_wrap(
        MODULE,
        "fd_fdstat_set_rights",
        |mut c: C<'_>, fd: i32, base: i64, inheriting: i64| {
            with(&mut c, |_, cx| {
                let fd = fs_fd(cx, fd, Errno::Notcapable)?;
                cx.fs.set_rights(fd, base as u64, inheriting as u64)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_filestat_set_size",
        |mut c: C<'_>, fd: i32, size: i64| {
            with(&mut c, |_, cx| {
                let fd = fs_fd(cx, fd, Errno::Inval)?;
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
            with(&mut c, |_, cx| {
                let fd = fs_fd(cx, fd, Errno::Inval)?;
                if let Some(host) = host_of(cx, fd) {
                    let mut c = Call::new(Op::SetTimes, host);
                    (c.a, c.b, c.c) = (atim as u64, mtim as u64, u64::from(flags as u16));
                    return remote::call(cx, &c).map(|_| ());
                }
                cx.fs_now()
                    .set_times(fd, atim as u64, mtim as u64, flags as u16)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_readdir",
        |mut c: C<'_>, fd: i32, buf: i32, len: i32, cookie: i64, out: i32| {
            with(&mut c, |m, cx| {
                let fd = fs_fd(cx, fd, Errno::Notdir)?;
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
            let from = fs_fd(cx, fd, Errno::Notsup)?;
            let to = fs_fd(cx, to, Errno::Notsup)?;
            match cx.fs.renumber(from, to)? {
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
            with(&mut c, |m, cx| {
                let dir = fs_fd(cx, fd, Errno::Notdir)?;
                let path = m.slice(path, path_len as u32)?;
                if let Some(host_dir) = cx.fs.foreign(dir).cloned() {
                    let foreign = remote::open(
                        cx,
                        &host_dir,
                        lookup as u32,
                        path,
                        oflags as u16,
                        base as u64,
                        inheriting as u64,
                        flags as u16,
                    )?;
                    let host = foreign.host;
                    let opened = match cx.fs.add_foreign(foreign) {
                        Ok(fd) => fd,
                        Err(e) => {
                            remote::simple(cx, Op::Close, host)?;
                            return Err(e);
                        }
                    };
                    return m.write_u32(out, opened);
                }
                let opened = cx.fs_now().open(
                    dir,
                    lookup as u32,
                    path,
                    oflags as u16,
                    base as u64,
                    inheriting as u64,
                    flags as u16,
                )?;
                m.write_u32(out, opened)
            })
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
            move |mut c: C<'_>, fd: i32, path: i32, len: i32| {
                with(&mut c, |m, cx| {
                    let dir = fs_fd(cx, fd, Errno::Notdir)?;
                    let path = m.slice(path, len as u32)?;
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
        |mut c: C<'_>, fd: i32, lookup: i32, path: i32, len: i32, out: i32| {
            with(&mut c, |m, cx| {
                let dir = fs_fd(cx, fd, Errno::Notdir)?;
                let path = m.slice(path, len as u32)?;
                let stat = match host_of(cx, dir) {
                    Some(host) => {
                        let mut c = Call::new(Op::PathFilestat, host);
                        (c.flags, c.s1) = (lookup as u32, path);
                        let (_, bytes) = remote::call(cx, &c)?;
                        <[u8; 64]>::try_from(bytes.as_slice()).map_err(|_| Errno::Io)?
                    }
                    None => cx.fs.path_filestat(dir, lookup as u32, path)?.to_bytes(),
                };
                m.slice_mut(out, 64)?.copy_from_slice(&stat);
                Ok(())
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_filestat_set_times",
        |mut c: C<'_>,
         fd: i32,
         lookup: i32,
         path: i32,
         len: i32,
         atim: i64,
         mtim: i64,
         flags: i32| {
            with(&mut c, |m, cx| {
                let dir = fs_fd(cx, fd, Errno::Notdir)?;
                let path = m.slice(path, len as u32)?;
                if let Some(host) = host_of(cx, dir) {
                    let mut c = Call::new(Op::PathSetTimes, host);
                    (c.flags, c.s1) = (lookup as u32, path);
                    (c.a, c.b, c.c) = (atim as u64, mtim as u64, u64::from(flags as u16));
                    return remote::call(cx, &c).map(|_| ());
                }
                cx.fs_now().path_set_times(
                    dir,
                    lookup as u32,
                    path,
                    atim as u64,
                    mtim as u64,
                    flags as u16,
                )
            })
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
            with(&mut c, |m, cx| {
                let dir = fs_fd(cx, fd, Errno::Notdir)?;
                let new_dir = fs_fd(cx, new_fd, Errno::Notdir)?;
                let (old, new) = (m.slice(old, old_len as u32)?, m.slice(new, new_len as u32)?);
                if let Some((h, h2)) = host_pair(cx, dir, new_dir)? {
                    return two_paths(cx, Op::Link, h, h2, lookup as u32, old, new);
                }
                cx.fs_now().link(dir, lookup as u32, old, new_dir, new)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_rename",
        |mut c: C<'_>, fd: i32, old: i32, old_len: i32, new_fd: i32, new: i32, new_len: i32| {
            with(&mut c, |m, cx| {
                let dir = fs_fd(cx, fd, Errno::Notdir)?;
                let new_dir = fs_fd(cx, new_fd, Errno::Notdir)?;
                let (old, new) = (m.slice(old, old_len as u32)?, m.slice(new, new_len as u32)?);
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
        |mut c: C<'_>, target: i32, target_len: i32, fd: i32, path: i32, len: i32| {
            with(&mut c, |m, cx| {
                let dir = fs_fd(cx, fd, Errno::Notdir)?;
                let (target, path) = (
                    m.slice(target, target_len as u32)?,
                    m.slice(path, len as u32)?,
                );
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
        |mut c: C<'_>, fd: i32, path: i32, len: i32, buf: i32, buf_len: i32, out: i32| {
            with(&mut c, |m, cx| {
                let dir = fs_fd(cx, fd, Errno::Notdir)?;
                // The path is copied out: the target is written into the
                // same linear memory.
                let path = m.slice(path, len as u32)?.to_vec();
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
