//! WASI preview 1 (`wasi_snapshot_preview1`) for command modules.
//!
//! Stdio goes over the channel, clocks come from [`Clock`], randomness
//! from a per-invocation ChaCha stream seeded by the host. Files and
//! directories are served by the in-memory filesystem ([`fs`]): the
//! scratch `/tmp` and the read-only directories the host placed in guest
//! memory, or forwarded to the host ([`remote`]). The descriptor table
//! (stdio included, so stdio can be closed and renumbered) is the
//! filesystem's. Every function is defined so that any preview-1 module
//! links; each answers as `wasmtime run` does, errno for errno
//! (`tests/conformance.rs`); pointers from the module are bounds-checked
//! against its linear memory (`EFAULT`).

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
use wisp_vfs::{FdKind, Stdio as Std, Vfs};

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
    /// The descriptor table: stdio, files and directories.
    pub fs: Vfs,
    /// The TSC rate, while the module's first read of stdin is still to
    /// report `Ready` (`crate::ready`).
    pub ready_at_read: Option<u64>,
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
            ready_at_read: None,
        }
    }

    /// What `fd` is (`EBADF` if nothing).
    fn kind(&self, fd: i32) -> Result<FdKind, Errno> {
        self.fs.kind(fd as u32)
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

    /// The first non-empty buffer of an iovec array (or an empty one):
    /// wasmtime reads and writes only that one per call, a short count
    /// the caller loops on.
    pub(crate) fn first_buffer(&self, iovs: i32, count: i32) -> Result<(i32, u32), Errno> {
        Ok(self
            .iovecs(iovs, count)?
            .into_iter()
            .find(|&(_, len)| len > 0)
            .unwrap_or((0, 0)))
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

/// Traps unless `ok`: an argument whose type does not define its value
/// (flags with undefined bits, an enum out of range) is no errno but a
/// trap, as wasmtime traps on it before the call looks at anything else.
pub(crate) fn defined(ok: bool, what: &'static str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(wasmtime::Error::msg(what))
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

/// Clock `id` now. The CPU-time clocks are `EBADF`, as wasmtime answers
/// (it has none); an undefined id is `EINVAL`.
fn clock_now(ctx: &Ctx, id: i32) -> Result<u64, Errno> {
    match id {
        0 => Ok(ctx.clock.realtime_ns()),
        1 => Ok(ctx.clock.monotonic_ns()),
        2 | 3 => Err(Errno::Badf),
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
    let (ptr, len) = mem.first_buffer(iovs, count)?;
    let stream = match ctx.kind(fd)? {
        FdKind::Stdio(Std::Out) => Stream::Stdout,
        FdKind::Stdio(Std::Err) => Stream::Stderr,
        FdKind::File => return fs::write(mem, ctx, fd as u32, (ptr, len), None, nwritten),
        FdKind::Stdio(Std::In) | FdKind::Dir => return Err(Errno::Badf),
    };
    let data = mem.slice(ptr, len)?;
    ctx.stdio.write(&mut ctx.channel, &ctx.clock, stream, data);
    mem.write_u32(nwritten, len)
}

fn fd_read(
    mem: &mut Mem<'_>,
    ctx: &mut Ctx,
    fd: i32,
    iovs: i32,
    count: i32,
    nread: i32,
) -> Result<(), Errno> {
    let (ptr, len) = mem.first_buffer(iovs, count)?;
    match ctx.kind(fd)? {
        FdKind::Stdio(Std::In) => {}
        FdKind::File => return fs::read(mem, ctx, fd as u32, (ptr, len), None, nread),
        FdKind::Stdio(_) | FdKind::Dir => return Err(Errno::Badf),
    }
    crate::ready::before_stdin(ctx);
    let dst = mem.slice_mut(ptr, len)?;
    let n = ctx.stdio.read(&mut ctx.channel, dst);
    mem.write_u32(nread, n as u32)
}

fn fd_fdstat_get(mem: &mut Mem<'_>, ctx: &mut Ctx, fd: i32, out: i32) -> Result<(), Errno> {
    let stat = ctx.fs.fdstat(fd as u32)?;
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
        let stat = remote::filestat(ctx, host)?;
        mem.slice_mut(out, 64)?.copy_from_slice(&stat);
        return Ok(());
    }
    let stat = ctx.fs.filestat(fd as u32)?;
    mem.slice_mut(out, 64)?.copy_from_slice(&stat.to_bytes());
    Ok(())
}

/// Subscription and event layouts of `poll_oneoff`.
const SUBSCRIPTION_SIZE: i32 = 48;
const EVENT_SIZE: i32 = 32;
const EVENTTYPE_CLOCK: u8 = 0;
const EVENTTYPE_FD_READ: u8 = 1;
const EVENTTYPE_FD_WRITE: u8 = 2;
/// `subclockflags`: the timeout is an absolute time (the only bit).
const SUBSCRIPTION_CLOCK_ABSTIME: u16 = 1;
/// `eventrwflags`: the peer hung up (for a file, read at its end).
const EVENT_HANGUP: u16 = 1;

/// What one subscription waits for.
enum Wait {
    /// A clock, this many ns from now.
    Clock(u64),
    /// Stdin to have data or end.
    Stdin,
    /// A file, always ready; `hangup` if reading it is at its end.
    File { hangup: bool },
    /// Stdout or stderr, always ready.
    Output,
}

struct Subscription {
    userdata: u64,
    kind: u8,
    wait: Wait,
}

/// Reads subscription `i`, with the errors wasmtime gives for it:
/// `EINVAL` for an undefined type, clock or flag, or a CPU-time clock;
/// `EBADF` for a descriptor that is not stdin (to read), stdout or stderr
/// (to write), or a file.
fn subscription(mem: &Mem<'_>, ctx: &mut Ctx, s: i32) -> Result<Subscription, Errno> {
    let userdata = mem.read_u64(s)?;
    let kind = mem.slice(s + 8, 1)?[0];
    let wait = match kind {
        EVENTTYPE_CLOCK => {
            let id = mem.read_u32(s + 16)?;
            let timeout = mem.read_u64(s + 24)?;
            let flags = mem.slice(s + 40, 2)?;
            let flags = u16::from_le_bytes([flags[0], flags[1]]);
            if id > 3 || flags & !SUBSCRIPTION_CLOCK_ABSTIME != 0 {
                return Err(Errno::Inval);
            }
            let now = match id {
                0 | 1 => clock_now(ctx, id as i32)?,
                _ => return Err(Errno::Inval),
            };
            Wait::Clock(if flags & SUBSCRIPTION_CLOCK_ABSTIME != 0 {
                timeout.saturating_sub(now)
            } else {
                timeout
            })
        }
        EVENTTYPE_FD_READ | EVENTTYPE_FD_WRITE => {
            let fd = mem.read_u32(s + 16)?;
            match (kind, ctx.fs.kind(fd)?) {
                (EVENTTYPE_FD_READ, FdKind::Stdio(Std::In)) => Wait::Stdin,
                (EVENTTYPE_FD_WRITE, FdKind::Stdio(Std::Out | Std::Err)) => Wait::Output,
                (EVENTTYPE_FD_READ, FdKind::File) => Wait::File {
                    hangup: fs::remaining(ctx, fd)? == 0,
                },
                (EVENTTYPE_FD_WRITE, FdKind::File) => Wait::File { hangup: false },
                _ => return Err(Errno::Badf),
            }
        }
        _ => return Err(Errno::Inval),
    };
    Ok(Subscription {
        userdata,
        kind,
        wait,
    })
}

/// Sleeps in the host for `ns`.
fn sleep(ctx: &mut Ctx, ns: u64) {
    if ns > 0 {
        ctx.channel.send(Kind::Sleep, &ns.to_le_bytes());
        ctx.stdio.notified();
        ctx.channel.notify();
    }
}

/// `poll_oneoff`, answering as wasmtime does: files and stdout/stderr
/// are always ready (`nbytes` 1, a file read at its end flagged hung up),
/// stdin when it has data or has ended, a clock at its deadline. What is
/// ready at once is reported, in subscription order; a clock whose
/// deadline has passed is not ready at once (wasmtime yields first), only
/// if nothing else is. A lone relative clock, whatever the clock, is a
/// plain sleep, whose event says `nbytes` 1.
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
    let bytes = |size: i32| (count as u32).checked_mul(size as u32).ok_or(Errno::Fault);
    mem.range(subs, bytes(SUBSCRIPTION_SIZE)?)?;
    mem.range(events, bytes(EVENT_SIZE)?)?;
    if count == 1 && mem.slice(subs + 8, 1)?[0] == EVENTTYPE_CLOCK {
        let (id, flags) = (mem.read_u32(subs + 16)?, mem.slice(subs + 40, 2)?);
        if id <= 3 && flags == [0, 0] {
            let timeout = mem.read_u64(subs + 24)?;
            sleep(ctx, timeout);
            let userdata = mem.read_u64(subs)?;
            write_event(mem, events, userdata, EVENTTYPE_CLOCK, 1, 0)?;
            return mem.write_u32(nevents, 1);
        }
    }
    let mut all = Vec::new();
    for i in 0..count {
        all.push(subscription(mem, ctx, subs + i * SUBSCRIPTION_SIZE)?);
    }
    if all.iter().any(|sub| matches!(sub.wait, Wait::Stdin)) {
        crate::ready::before_stdin(ctx);
    }
    let start = ctx.clock.monotonic_ns();
    let ready = |ctx: &Ctx, sub: &Subscription, at_once: bool| match sub.wait {
        Wait::Clock(0) => !at_once,
        Wait::Clock(ns) => ctx.clock.monotonic_ns().saturating_sub(start) >= ns,
        Wait::Stdin => {
            let (avail, eof) = ctx.stdio.stdin_ready();
            avail > 0 || eof
        }
        Wait::File { .. } | Wait::Output => true,
    };
    let at_once = all.iter().any(|sub| ready(ctx, sub, true));
    if !at_once && !all.iter().any(|sub| ready(ctx, sub, false)) {
        if all.iter().any(|sub| matches!(sub.wait, Wait::Stdin)) {
            // Blocks in the host until input or its end arrives (the host
            // cannot wait for stdin and a clock at once).
            ctx.stdio.refill(&mut ctx.channel);
        } else {
            let earliest = all
                .iter()
                .filter_map(|sub| match sub.wait {
                    Wait::Clock(ns) => Some(ns),
                    _ => None,
                })
                .min()
                .unwrap_or(0);
            let waited = ctx.clock.monotonic_ns().saturating_sub(start);
            sleep(ctx, earliest.saturating_sub(waited));
        }
    }
    let mut n = 0;
    for sub in &all {
        if !ready(ctx, sub, at_once) {
            continue;
        }
        let (nbytes, flags) = match sub.wait {
            Wait::Clock(_) => (0, 0),
            Wait::File { hangup: true } => (1, EVENT_HANGUP),
            _ => (1, 0),
        };
        write_event(
            mem,
            events + n * EVENT_SIZE,
            sub.userdata,
            sub.kind,
            nbytes,
            flags,
        )?;
        n += 1;
    }
    mem.write_u32(nevents, n as u32)
}

/// Writes one `event` record at `at`.
fn write_event(
    mem: &mut Mem<'_>,
    at: i32,
    userdata: u64,
    kind: u8,
    nbytes: u64,
    flags: u16,
) -> Result<(), Errno> {
    let buf = mem.slice_mut(at, EVENT_SIZE as u32)?;
    buf.fill(0);
    buf[0..8].copy_from_slice(&userdata.to_le_bytes());
    buf[10] = kind;
    buf[16..24].copy_from_slice(&nbytes.to_le_bytes());
    buf[24..26].copy_from_slice(&flags.to_le_bytes());
    Ok(())
}

/// Defines every `wasi_snapshot_preview1` function in `linker`.
pub fn add_to_linker(linker: &mut Linker<Ctx>) -> Result<()> {
    type C<'a> = Caller<'a, Ctx>;
    const FDFLAGS: i32 = wisp_vfs::fdflags::ALL as i32;

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
    const CLOCKID: &str = "clock id out of range";
    linker.func_wrap(
        MODULE,
        "clock_res_get",
        |mut c: C<'_>, id: i32, out: i32| {
            defined((0..=3).contains(&id), CLOCKID)?;
            Ok(with(&mut c, |m, cx| {
                clock_now(cx, id)?;
                m.write_u64(out, 1)
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "clock_time_get",
        |mut c: C<'_>, id: i32, _precision: i64, out: i32| {
            defined((0..=3).contains(&id), CLOCKID)?;
            Ok(with(&mut c, |m, cx| {
                let now = clock_now(cx, id)?;
                m.write_u64(out, now)
            }))
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
        with(&mut c, |_, cx| match cx.fs.close(fd as u32)? {
            Some(host) => remote::simple(cx, wisp_abi::hostfs::Op::Close, host),
            None => Ok(()),
        })
    })?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_set_flags",
        |mut c: C<'_>, fd: i32, flags: i32| {
            defined(flags & !FDFLAGS == 0, "undefined fdflags")?;
            Ok(with(&mut c, |_, cx| {
                cx.fs.set_flags(fd as u32, flags as u16)
            }))
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
    // Signals 0 to 30 exist (and cannot be raised here, nor in wasmtime).
    linker.func_wrap(MODULE, "proc_raise", |signal: i32| -> Result<i32> {
        defined((0..=30).contains(&signal), "signal out of range")?;
        Ok(Errno::Notsup as i32)
    })?;
    linker.func_wrap(MODULE, "sched_yield", || 0i32)?;

    fs::add_to_linker(linker)?;

    /// No descriptor is a socket: `ENOTSOCK` for an open one, `EBADF`
    /// otherwise, as wasmtime answers (after trapping on flags it does not
    /// define).
    fn not_a_socket(c: &Caller<'_, Ctx>, fd: i32, flags: i32, defined_flags: i32) -> Result<i32> {
        defined(flags & !defined_flags == 0, "undefined socket flags")?;
        Ok(match c.data().fs.kind(fd as u32) {
            Ok(_) => Errno::Notsock as i32,
            Err(e) => e as i32,
        })
    }
    /// `riflags`: RECV_PEEK | RECV_WAITALL.
    const RIFLAGS: i32 = 3;
    /// `sdflags`: RD | WR.
    const SDFLAGS: i32 = 3;
    linker.func_wrap(
        MODULE,
        "sock_accept",
        |c: C<'_>, fd: i32, flags: i32, _: i32| not_a_socket(&c, fd, flags, FDFLAGS),
    )?;
    linker.func_wrap(
        MODULE,
        "sock_recv",
        |c: C<'_>, fd: i32, _: i32, _: i32, flags: i32, _: i32, _: i32| {
            not_a_socket(&c, fd, flags, RIFLAGS)
        },
    )?;
    // `siflags` has no bits to check.
    linker.func_wrap(
        MODULE,
        "sock_send",
        |c: C<'_>, fd: i32, _: i32, _: i32, _: i32, _: i32| not_a_socket(&c, fd, 0, 0),
    )?;
    linker.func_wrap(MODULE, "sock_shutdown", |c: C<'_>, fd: i32, how: i32| {
        not_a_socket(&c, fd, how, SDFLAGS)
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
