//! Descriptors the host serves (directories mapped with `wisp run --dir`,
//! and what is opened in them): each operation is one `FsCall` message
//! and its `FsReply`, in one VM exit (`wisp_abi::hostfs`).

use alloc::vec;
use alloc::vec::Vec;

use wisp_abi::hostfs::{self, Call, Op};
use wisp_abi::msg::Kind;
use wisp_vfs::{fdflags, filetype, Errno, Foreign, OpenMode};

use super::Ctx;
use crate::channel::{Incoming, MAX_PAYLOAD};

/// Most bytes one read or write moves (what fits in a message).
pub const CHUNK: usize = MAX_PAYLOAD - hostfs::CALL_HEADER;

/// Sends `call` and waits for the answer: its value and data.
pub fn call(ctx: &mut Ctx, call: &Call<'_>) -> Result<(u64, Vec<u8>), Errno> {
    let mut buf = vec![0u8; call.len()];
    if call.len() > MAX_PAYLOAD || call.encode(&mut buf).is_none() {
        return Err(Errno::Nametoolong);
    }
    // Take any stdin already delivered, so its rx buffers are free for the
    // reply.
    ctx.stdio.drain(&mut ctx.channel);
    ctx.channel.send(Kind::FsCall, &buf);
    ctx.stdio.notified();
    ctx.channel.notify();
    let mut reply = None;
    let Ctx { channel, stdio, .. } = ctx;
    while let Some(got) = channel.recv(|m| match m {
        Incoming::FsReply(bytes) => Some(bytes.to_vec()),
        other => {
            stdio.accept(other);
            None
        }
    }) {
        reply = got.or(reply);
    }
    let reply = reply.unwrap_or_else(|| crate::rt::fatal("no reply to a filesystem call"));
    let (errno, value, data) = hostfs::decode_reply(&reply)
        .unwrap_or_else(|| crate::rt::fatal("malformed filesystem reply"));
    if errno != 0 {
        return Err(Errno::from_raw(errno));
    }
    Ok((value, data.to_vec()))
}

/// A call with no strings or numbers beyond its handle.
pub fn simple(ctx: &mut Ctx, op: Op, host: u32) -> Result<(), Errno> {
    call(ctx, &Call::new(op, host)).map(|_| ())
}

/// A call on a directory with one path.
pub fn on_path(ctx: &mut Ctx, op: Op, dir: u32, path: &[u8]) -> Result<(u64, Vec<u8>), Errno> {
    let mut c = Call::new(op, dir);
    c.s1 = path;
    call(ctx, &c)
}

/// Reads up to `len` bytes (at most a message's worth) at `offset`.
pub fn read(ctx: &mut Ctx, host: u32, len: usize, offset: u64) -> Result<Vec<u8>, Errno> {
    let mut c = Call::new(Op::Read, host);
    c.a = len.min(MAX_PAYLOAD - hostfs::REPLY_HEADER) as u64;
    c.b = offset;
    call(ctx, &c).map(|(_, data)| data)
}

/// Writes `data` (at most [`CHUNK`] bytes) at `offset`, or at the end of
/// the file when `append`; returns the bytes written and where they ended.
pub fn write(
    ctx: &mut Ctx,
    host: u32,
    data: &[u8],
    offset: u64,
    append: bool,
) -> Result<(usize, u64), Errno> {
    let mut c = Call::new(Op::Write, host);
    c.s1 = &data[..data.len().min(CHUNK)];
    c.b = offset;
    c.flags = u32::from(append) * hostfs::WRITE_APPEND;
    let (n, end) = call(ctx, &c)?;
    let end = <[u8; 8]>::try_from(end.as_slice()).map_err(|_| Errno::Io)?;
    Ok((n as usize, u64::from_le_bytes(end)))
}

/// The 64-byte `filestat` of host handle `host`.
pub fn filestat(ctx: &mut Ctx, host: u32) -> Result<[u8; 64], Errno> {
    let (_, stat) = call(ctx, &Call::new(Op::Filestat, host))?;
    <[u8; 64]>::try_from(stat.as_slice()).map_err(|_| Errno::Io)
}

/// The size of host file `host`.
pub fn size(ctx: &mut Ctx, host: u32) -> Result<u64, Errno> {
    let stat = filestat(ctx, host)?;
    Ok(u64::from_le_bytes(
        stat[32..40].try_into().unwrap_or_default(),
    ))
}

/// Opens `path` in host directory `dir`; returns the new foreign
/// descriptor's description.
#[allow(clippy::too_many_arguments)]
pub fn open(
    ctx: &mut Ctx,
    dir: u32,
    lookup: u32,
    path: &[u8],
    oflags: u16,
    rights: u64,
    flags: u16,
) -> Result<Foreign, Errno> {
    let mut c = Call::new(Op::Open, dir);
    c.flags = lookup;
    c.a = u64::from(oflags) | u64::from(flags) << 16;
    c.b = rights;
    c.s1 = path;
    let (value, _) = call(ctx, &c)?;
    let filetype = (value >> 32) as u8;
    let dir = filetype == filetype::DIRECTORY;
    Ok(Foreign {
        host: value as u32,
        filetype,
        mode: if dir {
            OpenMode {
                read: true,
                write: false,
            }
        } else {
            OpenMode::of(oflags, rights)
        },
        append: !dir && flags & fdflags::APPEND != 0,
        nonblock: !dir && flags & fdflags::NONBLOCK != 0,
        pos: 0,
        preopen: None,
    })
}
