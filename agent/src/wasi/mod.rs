//! WASI preview 1 (`wasi_snapshot_preview1`) for command modules.
//!
//! Stdio (fds 0-2) goes over the channel, clocks come from [`Clock`],
//! randomness from a per-invocation ChaCha stream seeded by the host. Every
//! other descriptor is served by the in-memory filesystem ([`fs`]): the
//! scratch `/tmp` and the read-only directories the host placed in guest
//! memory. Every function is defined so that any preview-1 module links;
//! pointers from the module are bounds-checked against its linear memory
//! (`EFAULT`).

mod fs;
mod remote;

use alloc::vec::Vec;

use rand_chacha::ChaCha12Rng;
use rand_core::{RngCore, SeedableRng};
use wasmtime::{Caller, Extern, Linker, Result};
use wisp_abi::msg::Kind;

use crate::channel::Channel;
use crate::clock::Clock;
use crate::stdio::{Stdio, Stream};

use wisp_abi::wasi::MODULE;

pub use wisp_vfs::Errno;
use wisp_vfs::{filetype, rights, Vfs};

/// `proc_exit` unwinds out of wasm with this error; the runner turns it into
/// the invocation's exit code.
#[derive(Debug)]
pub struct ProcExit(pub i32);

impl core::fmt::Display for ProcExit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "exit with code {}", self.0)
    }
}

impl core::error::Error for ProcExit {}

/// Per-invocation WASI state; the wasmtime store's data.
pub struct Ctx {
    /// The channel to the host.
    pub channel: Channel,
    /// Buffered stdio.
    pub stdio: Stdio,
    /// `argv`, without NUL terminators.
    pub args: Vec<Vec<u8>>,
    /// `KEY=VALUE` entries, without NUL terminators.
    pub env: Vec<Vec<u8>>,
    /// This invocation's time.
    pub clock: Clock,
    /// `random_get`'s source.
    pub rng: ChaCha12Rng,
    /// Linear-memory and table limits.
    pub limits: crate::limits::Limits,
    /// Files and directories: every fd from 3 up.
    pub fs: Vfs,
    closed: [bool; 3],
}

impl Ctx {
    /// A context with no invocation yet (the state a snapshot captures).
    pub fn new(channel: Channel, limits: crate::limits::Limits, fs: Vfs) -> Ctx {
        Ctx {
            channel,
            stdio: Stdio::default(),
            args: Vec::new(),
            env: Vec::new(),
            clock: Clock::default(),
            rng: ChaCha12Rng::from_seed([0; 32]),
            limits,
            fs,
            closed: [false; 3],
        }
    }

    fn stdio_fd(&self, fd: i32) -> Option<usize> {
        usize::try_from(fd)
            .ok()
            .filter(|&fd| fd < 3 && !self.closed[fd])
    }

    /// The error for an operation only sockets support: `err` for an open
    /// fd, `EBADF` for anything else.
    fn not_a_socket(&self, fd: i32, err: Errno) -> Errno {
        if self.stdio_fd(fd).is_some() || self.fs.is_open(fd as u32) {
            err
        } else {
            Errno::Badf
        }
    }

    /// Sets the filesystem's clock to now, for the times it records.
    fn fs_now(&mut self) -> &mut Vfs {
        let now = self.clock.realtime_ns();
        self.fs.set_now(now);
        &mut self.fs
    }
}

/// Bounds-checked view of the module's linear memory.
pub(crate) struct Mem<'a>(&'a mut [u8]);

impl Mem<'_> {
    pub(crate) fn range(&self, ptr: i32, len: u32) -> Result<core::ops::Range<usize>, Errno> {
        let start = ptr as u32 as usize;
        let end = start.checked_add(len as usize).ok_or(Errno::Fault)?;
        if end > self.0.len() {
            return Err(Errno::Fault);
        }
        Ok(start..end)
    }

    pub(crate) fn slice(&self, ptr: i32, len: u32) -> Result<&[u8], Errno> {
        let r = self.range(ptr, len)?;
        Ok(&self.0[r])
    }

    pub(crate) fn slice_mut(&mut self, ptr: i32, len: u32) -> Result<&mut [u8], Errno> {
        let r = self.range(ptr, len)?;
        Ok(&mut self.0[r])
    }

    pub(crate) fn read_u32(&self, ptr: i32) -> Result<u32, Errno> {
        let b = self.slice(ptr, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn read_u64(&self, ptr: i32) -> Result<u64, Errno> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.slice(ptr, 8)?);
        Ok(u64::from_le_bytes(a))
    }

    pub(crate) fn write_u32(&mut self, ptr: i32, v: u32) -> Result<(), Errno> {
        self.slice_mut(ptr, 4)?.copy_from_slice(&v.to_le_bytes());
        Ok(())
    }

    pub(crate) fn write_u64(&mut self, ptr: i32, v: u64) -> Result<(), Errno> {
        self.slice_mut(ptr, 8)?.copy_from_slice(&v.to_le_bytes());
        Ok(())
    }

    /// The `(ptr, len)` pairs of an iovec array.
    pub(crate) fn iovecs(&self, iovs: i32, count: i32) -> Result<Vec<(i32, u32)>, Errno> {
        let count = u32::try_from(count).map_err(|_| Errno::Inval)?;
        self.range(iovs, count.checked_mul(8).ok_or(Errno::Fault)?)?;
        (0..count)
            .map(|i| {
                let at = iovs.wrapping_add((i * 8) as i32);
                Ok((
                    self.read_u32(at)? as i32,
                    self.read_u32(at.wrapping_add(4))?,
                ))
            })
            .collect()
    }
}

/// Runs `f` with the module's memory and the context; maps the outcome to
/// an errno.
pub(crate) fn with(
    caller: &mut Caller<'_, Ctx>,
    f: impl FnOnce(&mut Mem<'_>, &mut Ctx) -> Result<(), Errno>,
) -> i32 {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return Errno::Fault as i32;
    };
    let (data, ctx) = memory.data_and_store_mut(caller);
    match f(&mut Mem(data), ctx) {
        Ok(()) => 0,
        Err(e) => e as i32,
    }
}

fn strings_sizes(
    list: &[Vec<u8>],
    mem: &mut Mem<'_>,
    count_ptr: i32,
    size_ptr: i32,
) -> Result<(), Errno> {
    let bytes: usize = list.iter().map(|s| s.len() + 1).sum();
    mem.write_u32(
        count_ptr,
        u32::try_from(list.len()).map_err(|_| Errno::Overflow)?,
    )?;
    mem.write_u32(size_ptr, u32::try_from(bytes).map_err(|_| Errno::Overflow)?)
}

fn strings_get(list: &[Vec<u8>], mem: &mut Mem<'_>, ptrs: i32, buf: i32) -> Result<(), Errno> {
    let mut at = buf as u32;
    for (i, s) in list.iter().enumerate() {
        mem.write_u32(ptrs.wrapping_add((i * 4) as i32), at)?;
        let len = u32::try_from(s.len()).map_err(|_| Errno::Overflow)?;
        let dst = mem.slice_mut(at as i32, len + 1)?;
        dst[..s.len()].copy_from_slice(s);
        dst[s.len()] = 0;
        at = at.checked_add(len + 1).ok_or(Errno::Fault)?;
    }
    Ok(())
}

fn clock_now(ctx: &Ctx, id: i32) -> Result<u64, Errno> {
    match id {
        0 => Ok(ctx.clock.realtime_ns()),
        1 => Ok(ctx.clock.monotonic_ns()),
        // Process and thread CPU time: the invocation is the process.
        2 | 3 => Ok(ctx.clock.elapsed_ns()),
        _ => Err(Errno::Inval),
    }
}

fn fd_write(
    mem: &mut Mem<'_>,
    ctx: &mut Ctx,
    fd: i32,
    iovs: i32,
    count: i32,
    nwritten: i32,
) -> Result<(), Errno> {
    let stream = match ctx.stdio_fd(fd) {
        Some(1) => Stream::Stdout,
        Some(2) => Stream::Stderr,
        Some(_) => return Err(Errno::Badf),
        None if fd >= 3 => return fs::write(mem, ctx, fd as u32, iovs, count, None, nwritten),
        None => return Err(Errno::Badf),
    };
    let mut total: u32 = 0;
    for (ptr, len) in mem.iovecs(iovs, count)? {
        let data = mem.slice(ptr, len)?;
        ctx.stdio.write(&mut ctx.channel, &ctx.clock, stream, data);
        total = total.saturating_add(len);
    }
    mem.write_u32(nwritten, total)
}

fn fd_read(
    mem: &mut Mem<'_>,
    ctx: &mut Ctx,
    fd: i32,
    iovs: i32,
    count: i32,
    nread: i32,
) -> Result<(), Errno> {
    if fd >= 3 {
        return fs::read(mem, ctx, fd as u32, iovs, count, None, nread);
    }
    if ctx.stdio_fd(fd) != Some(0) {
        return Err(Errno::Badf);
    }
    let mut total: u32 = 0;
    for (ptr, len) in mem.iovecs(iovs, count)? {
        let dst = mem.slice_mut(ptr, len)?;
        let n = ctx.stdio.read(&mut ctx.channel, dst);
        total = total.saturating_add(n as u32);
        // Stop at a short read: never block for more once data arrived.
        if n < len as usize {
            break;
        }
    }
    mem.write_u32(nread, total)
}

fn fd_fdstat_get(mem: &mut Mem<'_>, ctx: &mut Ctx, fd: i32, out: i32) -> Result<(), Errno> {
    let stat = if fd >= 3 {
        ctx.fs.fdstat(fd as u32)?
    } else {
        let stdio = ctx.stdio_fd(fd).ok_or(Errno::Badf)?;
        wisp_vfs::FdStat {
            filetype: filetype::CHARACTER_DEVICE,
            flags: 0,
            rights: if stdio == 0 {
                rights::FD_READ | rights::POLL_FD_READWRITE
            } else {
                rights::FD_WRITE | rights::POLL_FD_READWRITE
            },
            inheriting: 0,
        }
    };
    let buf = mem.slice_mut(out, 24)?;
    buf.fill(0);
    buf[0] = stat.filetype;
    buf[2..4].copy_from_slice(&stat.flags.to_le_bytes());
    buf[8..16].copy_from_slice(&stat.rights.to_le_bytes());
    buf[16..24].copy_from_slice(&stat.inheriting.to_le_bytes());
    Ok(())
}

fn fd_filestat_get(mem: &mut Mem<'_>, ctx: &mut Ctx, fd: i32, out: i32) -> Result<(), Errno> {
    if let Some(host) = ctx.fs.foreign(fd as u32).map(|f| f.host) {
        let (_, stat) = remote::on_path(ctx, wisp_abi::hostfs::Op::Filestat, host, &[])?;
        let out = mem.slice_mut(out, 64)?;
        if stat.len() != out.len() {
            return Err(Errno::Io);
        }
        out.copy_from_slice(&stat);
        return Ok(());
    }
    let stat = if fd >= 3 {
        ctx.fs.filestat(fd as u32)?
    } else {
        ctx.stdio_fd(fd).ok_or(Errno::Badf)?;
        wisp_vfs::FileStat {
            dev: 0,
            ino: 0,
            filetype: filetype::CHARACTER_DEVICE,
            nlink: 1,
            size: 0,
            atim: 0,
            mtim: 0,
            ctim: 0,
        }
    };
    mem.slice_mut(out, 64)?.copy_from_slice(&stat.to_bytes());
    Ok(())
}

/// Subscription and event layouts of `poll_oneoff`.
const SUBSCRIPTION_SIZE: i32 = 48;
const EVENT_SIZE: i32 = 32;
const EVENTTYPE_CLOCK: u8 = 0;
const EVENTTYPE_FD_READ: u8 = 1;
const EVENTTYPE_FD_WRITE: u8 = 2;

struct Event {
    userdata: u64,
    error: u16,
    kind: u8,
    nbytes: u64,
    hangup: bool,
}

fn poll_oneoff(
    mem: &mut Mem<'_>,
    ctx: &mut Ctx,
    subs: i32,
    events: i32,
    count: i32,
    nevents: i32,
) -> Result<(), Errno> {
    if count <= 0 {
        return Err(Errno::Inval);
    }
    mem.range(
        subs,
        (count as u32)
            .checked_mul(SUBSCRIPTION_SIZE as u32)
            .ok_or(Errno::Fault)?,
    )?;
    mem.range(
        events,
        (count as u32)
            .checked_mul(EVENT_SIZE as u32)
            .ok_or(Errno::Fault)?,
    )?;

    let mut ready: Vec<Event> = Vec::new();
    let mut earliest: Option<(u64, u64)> = None; // (relative ns, userdata)
    let mut wants_stdin: Option<u64> = None;
    for i in 0..count {
        let s = subs + i * SUBSCRIPTION_SIZE;
        let userdata = mem.read_u64(s)?;
        let tag = mem.slice(s + 8, 1)?[0];
        match tag {
            EVENTTYPE_CLOCK => {
                let id = mem.read_u32(s + 16)? as i32;
                let timeout = mem.read_u64(s + 24)?;
                let abstime = mem.slice(s + 40, 2)?[0] & 1 != 0;
                let now = clock_now(ctx, id)?;
                let rel = if abstime {
                    timeout.saturating_sub(now)
                } else {
                    timeout
                };
                if earliest.is_none_or(|(best, _)| rel < best) {
                    earliest = Some((rel, userdata));
                }
            }
            EVENTTYPE_FD_READ | EVENTTYPE_FD_WRITE => {
                let fd = mem.read_u32(s + 16)? as i32;
                let event = |error: u16, nbytes: u64, hangup: bool| Event {
                    userdata,
                    error,
                    kind: tag,
                    nbytes,
                    hangup,
                };
                match (tag, ctx.stdio_fd(fd)) {
                    (EVENTTYPE_FD_READ, Some(0)) => {
                        let (avail, eof) = ctx.stdio.stdin_ready();
                        if avail > 0 || eof {
                            ready.push(event(0, avail as u64, eof));
                        } else {
                            wants_stdin = Some(userdata);
                        }
                    }
                    (EVENTTYPE_FD_WRITE, Some(1 | 2)) => ready.push(event(0, 0, false)),
                    // Files in memory are always ready.
                    (_, None) if fd >= 3 && ctx.fs.is_open(fd as u32) => {
                        ready.push(event(0, 0, false))
                    }
                    _ => ready.push(event(Errno::Badf as u16, 0, false)),
                }
            }
            _ => return Err(Errno::Inval),
        }
    }

    if ready.is_empty() {
        match (wants_stdin, earliest) {
            (Some(userdata), _) => {
                // Blocks in the host until input or EOF arrives.
                ctx.stdio.refill(&mut ctx.channel);
                let (avail, eof) = ctx.stdio.stdin_ready();
                ready.push(Event {
                    userdata,
                    error: 0,
                    kind: EVENTTYPE_FD_READ,
                    nbytes: avail as u64,
                    hangup: eof,
                });
            }
            (None, Some((rel, userdata))) => {
                if rel > 0 {
                    ctx.channel.send(Kind::Sleep, &rel.to_le_bytes());
                    ctx.stdio.notified();
                    ctx.channel.notify();
                }
                ready.push(Event {
                    userdata,
                    error: 0,
                    kind: EVENTTYPE_CLOCK,
                    nbytes: 0,
                    hangup: false,
                });
            }
            (None, None) => return Err(Errno::Inval),
        }
    }

    for (i, e) in ready.iter().enumerate() {
        let at = events + i as i32 * EVENT_SIZE;
        let buf = mem.slice_mut(at, EVENT_SIZE as u32)?;
        buf.fill(0);
        buf[0..8].copy_from_slice(&e.userdata.to_le_bytes());
        buf[8..10].copy_from_slice(&e.error.to_le_bytes());
        buf[10] = e.kind;
        buf[16..24].copy_from_slice(&e.nbytes.to_le_bytes());
        buf[24] = u8::from(e.hangup);
    }
    mem.write_u32(nevents, ready.len() as u32)
}

/// Defines every `wasi_snapshot_preview1` function in `linker`.
pub fn add_to_linker(linker: &mut Linker<Ctx>) -> Result<()> {
    type C<'a> = Caller<'a, Ctx>;

    linker.func_wrap(
        MODULE,
        "args_sizes_get",
        |mut c: C<'_>, count: i32, size: i32| {
            with(&mut c, |m, cx| strings_sizes(&cx.args, m, count, size))
        },
    )?;
    linker.func_wrap(MODULE, "args_get", |mut c: C<'_>, ptrs: i32, buf: i32| {
        with(&mut c, |m, cx| strings_get(&cx.args, m, ptrs, buf))
    })?;
    linker.func_wrap(
        MODULE,
        "environ_sizes_get",
        |mut c: C<'_>, count: i32, size: i32| {
            with(&mut c, |m, cx| strings_sizes(&cx.env, m, count, size))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "environ_get",
        |mut c: C<'_>, ptrs: i32, buf: i32| {
            with(&mut c, |m, cx| strings_get(&cx.env, m, ptrs, buf))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "clock_res_get",
        |mut c: C<'_>, id: i32, out: i32| {
            with(&mut c, |m, cx| {
                clock_now(cx, id)?;
                m.write_u64(out, 1)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "clock_time_get",
        |mut c: C<'_>, id: i32, _precision: i64, out: i32| {
            with(&mut c, |m, cx| {
                let now = clock_now(cx, id)?;
                m.write_u64(out, now)
            })
        },
    )?;
    linker.func_wrap(MODULE, "random_get", |mut c: C<'_>, buf: i32, len: i32| {
        with(&mut c, |m, cx| {
            cx.rng.fill_bytes(m.slice_mut(buf, len as u32)?);
            Ok(())
        })
    })?;
    linker.func_wrap(
        MODULE,
        "fd_write",
        |mut c: C<'_>, fd: i32, iovs: i32, n: i32, out: i32| {
            with(&mut c, |m, cx| fd_write(m, cx, fd, iovs, n, out))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_read",
        |mut c: C<'_>, fd: i32, iovs: i32, n: i32, out: i32| {
            with(&mut c, |m, cx| fd_read(m, cx, fd, iovs, n, out))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_get",
        |mut c: C<'_>, fd: i32, out: i32| with(&mut c, |m, cx| fd_fdstat_get(m, cx, fd, out)),
    )?;
    linker.func_wrap(
        MODULE,
        "fd_filestat_get",
        |mut c: C<'_>, fd: i32, out: i32| with(&mut c, |m, cx| fd_filestat_get(m, cx, fd, out)),
    )?;
    linker.func_wrap(MODULE, "fd_close", |mut c: C<'_>, fd: i32| {
        with(&mut c, |_, cx| {
            if fd >= 3 {
                if let Some(host) = cx.fs.close(fd as u32)? {
                    return remote::simple(cx, wisp_abi::hostfs::Op::Close, host);
                }
                return Ok(());
            }
            let fd = cx.stdio_fd(fd).ok_or(Errno::Badf)?;
            cx.closed[fd] = true;
            Ok(())
        })
    })?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_set_flags",
        |mut c: C<'_>, fd: i32, flags: i32| {
            with(&mut c, |_, cx| {
                if fd >= 3 {
                    return cx.fs.set_flags(fd as u32, flags as u16);
                }
                cx.stdio_fd(fd).ok_or(Errno::Badf)?;
                if flags == 0 {
                    Ok(())
                } else {
                    Err(Errno::Notsup)
                }
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "poll_oneoff",
        |mut c: C<'_>, subs: i32, events: i32, n: i32, out: i32| {
            with(&mut c, |m, cx| poll_oneoff(m, cx, subs, events, n, out))
        },
    )?;
    linker.func_wrap(MODULE, "proc_exit", |_: C<'_>, code: i32| -> Result<()> {
        Err(wasmtime::Error::new(ProcExit(code)))
    })?;
    linker.func_wrap(MODULE, "proc_raise", |_: i32| Errno::Notsup as i32)?;
    linker.func_wrap(MODULE, "sched_yield", || 0i32)?;

    fs::add_to_linker(linker)?;

    fn deny(c: &mut Caller<'_, Ctx>, fd: i32, err: Errno) -> i32 {
        c.data().not_a_socket(fd, err) as i32
    }
    // No sockets exist.
    linker.func_wrap(
        MODULE,
        "sock_accept",
        |mut c: C<'_>, fd: i32, _: i32, _: i32| deny(&mut c, fd, Errno::Notsup),
    )?;
    linker.func_wrap(
        MODULE,
        "sock_recv",
        |mut c: C<'_>, fd: i32, _: i32, _: i32, _: i32, _: i32, _: i32| {
            deny(&mut c, fd, Errno::Notsup)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_send",
        |mut c: C<'_>, fd: i32, _: i32, _: i32, _: i32, _: i32| deny(&mut c, fd, Errno::Notsup),
    )?;
    linker.func_wrap(MODULE, "sock_shutdown", |mut c: C<'_>, fd: i32, _: i32| {
        deny(&mut c, fd, Errno::Notsup)
    })?;
    Ok(())
}

/// An invocation request, copied out of the channel buffer.
pub struct Invocation {
    args: Vec<Vec<u8>>,
    env: Vec<Vec<u8>>,
    realtime_ns: u64,
    seed: [u8; wisp_abi::msg::SEED_LEN],
}

impl From<&wisp_abi::msg::Request<'_>> for Invocation {
    fn from(req: &wisp_abi::msg::Request<'_>) -> Self {
        Invocation {
            args: req.args.iter().map(<[u8]>::to_vec).collect(),
            env: req.env.iter().map(<[u8]>::to_vec).collect(),
            realtime_ns: req.realtime_ns,
            seed: req.seed,
        }
    }
}

impl Ctx {
    /// Installs a request's arguments, environment, clock and entropy.
    pub fn begin(&mut self, inv: Invocation, tsc_khz: u64) {
        self.args = inv.args;
        self.env = inv.env;
        self.clock = Clock::start(inv.realtime_ns, tsc_khz);
        self.rng = ChaCha12Rng::from_seed(inv.seed);
    }
}
