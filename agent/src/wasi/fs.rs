//! The WASI calls on files and directories, served by the in-memory
//! filesystem (`wisp_vfs`) for every fd from 3 up. The stdio fds keep the
//! answers a terminal or pipe gives (`ESPIPE`, `ENOTDIR`, …).

use wasmtime::{Caller, Linker, Result};
use wisp_abi::wasi::MODULE;

use wisp_vfs::Vfs;

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
    let fs = ctx.fs_now();
    let iovecs = mem.iovecs(iovs, count)?;
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
                let pos = cx.fs.seek(fd, delta, whence)?;
                m.write_u64(out, pos)
            })
        },
    )?;
    linker.func_wrap(MODULE, "fd_tell", |mut c: C<'_>, fd: i32, out: i32| {
        with(&mut c, |m, cx| {
            let fd = fs_fd(cx, fd, Errno::Spipe)?;
            let pos = cx.fs.seek(fd, 0, 1)?;
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
                cx.fs.check(fs_fd(cx, fd, Errno::Notsup)?)?;
                Err(Errno::Notsup)
            })
        },
    )?;
    for name in ["fd_sync", "fd_datasync"] {
        linker.func_wrap(MODULE, name, |mut c: C<'_>, fd: i32| {
            with(&mut c, |_, cx| cx.fs.check(fs_fd(cx, fd, Errno::Inval)?))
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
                let used = cx
                    .fs
                    .readdir(fd, cookie as u64, m.slice_mut(buf, len as u32)?)?;
                m.write_u32(out, len32(used)?)
            })
        },
    )?;
    linker.func_wrap(MODULE, "fd_renumber", |mut c: C<'_>, fd: i32, to: i32| {
        with(&mut c, |_, cx| {
            let from = fs_fd(cx, fd, Errno::Notsup)?;
            let to = fs_fd(cx, to, Errno::Notsup)?;
            cx.fs.renumber(from, to)
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
    let path_ops: [(&str, PathOp); 3] = [
        ("path_create_directory", Vfs::create_dir),
        ("path_remove_directory", Vfs::remove_dir),
        ("path_unlink_file", Vfs::unlink),
    ];
    for (name, op) in path_ops {
        linker.func_wrap(
            MODULE,
            name,
            move |mut c: C<'_>, fd: i32, path: i32, len: i32| {
                with(&mut c, |m, cx| {
                    let dir = fs_fd(cx, fd, Errno::Notdir)?;
                    op(cx.fs_now(), dir, m.slice(path, len as u32)?)
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
                let stat = cx
                    .fs
                    .path_filestat(dir, lookup as u32, m.slice(path, len as u32)?)?;
                m.slice_mut(out, 64)?.copy_from_slice(&stat.to_bytes());
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
                let n = cx
                    .fs
                    .readlink(dir, &path, m.slice_mut(buf, buf_len as u32)?)?;
                m.write_u32(out, len32(n)?)
            })
        },
    )?;
    Ok(())
}
