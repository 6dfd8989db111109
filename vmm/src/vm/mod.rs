//! A micro-VM's life: build, boot to ready, serve one invocation.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use vm_memory::{GuestAddress, GuestMemoryBackend};
use wisp_abi::boot::TestMode;
use wisp_abi::layout::{
    EXCEPTION_STACK_BOTTOM, EXCEPTION_STACK_TOP, FAULT_VECTORS, PANIC_MSG_ADDR, PANIC_MSG_MAX,
};
use wisp_abi::msg::{self, Kind, SEED_LEN};
use wisp_abi::ports;

use crate::arch;
use crate::channel::HostChannel;
use crate::error::{Error, Result};
use crate::io::{BufferIo, GuestIo};
use crate::kvm;
use crate::loader;
use crate::memory::{self, GuestRam};
use crate::timer::Deadline;

/// Limits and knobs of one VM.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// Guest memory in bytes (a multiple of 2 MiB, 16 MiB..=4 GiB).
    pub mem_size: u64,
    /// Wall-clock limit of an invocation; `None` for no limit.
    pub timeout: Option<Duration>,
    /// Wall-clock limit of booting to ready.
    pub boot_timeout: Duration,
    /// Most stdout + stderr bytes an invocation may write.
    pub max_output: u64,
    /// Deliberate guest misbehaviour, for testing the host's defences.
    #[doc(hidden)]
    pub test_mode: TestMode,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            mem_size: 128 << 20,
            timeout: None,
            boot_timeout: Duration::from_secs(10),
            max_output: 64 << 20,
            test_mode: TestMode::None,
        }
    }
}

/// One request: what the module sees as `argv` and its environment.
#[derive(Clone, Debug, Default)]
pub struct Invocation {
    /// `argv`, including `argv[0]`.
    pub args: Vec<Vec<u8>>,
    /// `KEY=VALUE` entries.
    pub env: Vec<Vec<u8>>,
}

/// How the module ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `proc_exit` or a return from `_start` (code 0).
    Exited(i32),
    /// A wasm trap, with wasmtime's description (and wasm backtrace).
    Trapped(String),
}

/// Where the time of [`Vm::boot`] went.
#[derive(Clone, Copy, Debug, Default)]
pub struct BootTimings {
    /// KVM VM, memory and vCPU creation.
    pub create: Duration,
    /// Writing page tables, descriptor tables, agent, module and registers.
    pub load: Duration,
    /// The agent's initialisation up to ready (engine, module, instance).
    pub init: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Boot,
    Invoke,
}

enum Stop {
    Ready,
    Done(Outcome),
}

#[derive(PartialEq, Eq)]
enum State {
    Ready,
    Used,
}

/// A booted micro-VM, ready for one invocation.
pub struct Vm {
    vcpu: VcpuFd,
    // Keeps the VM alive; declared after the vCPU so it is dropped later.
    _vm: VmFd,
    mem: GuestRam,
    channel: HostChannel,
    config: VmConfig,
    state: State,
    /// Output the module wrote while it was being instantiated.
    init_output: BufferIo,
    output_bytes: u64,
    stdin_done: bool,
    timings: BootTimings,
}

fn random_seed() -> Result<[u8; SEED_LEN]> {
    let mut seed = [0u8; SEED_LEN];
    // SAFETY: seed is valid for SEED_LEN bytes.
    let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), SEED_LEN, 0) };
    if n != SEED_LEN as isize {
        return Err(Error::Input(std::io::Error::last_os_error()));
    }
    Ok(seed)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Vm {
    /// Builds a VM for `artifact` (a module precompiled by the host's
    /// wasmtime with the shared configuration) and runs the agent until the
    /// module is instantiated and waiting for a request.
    pub fn boot(config: VmConfig, artifact: &[u8]) -> Result<Vm> {
        memory::validate_size(config.mem_size)?;
        let t0 = Instant::now();
        let kvm = kvm::kvm()?;
        let vm = kvm.create_vm().map_err(Error::kvm("CREATE_VM"))?;
        // Intel needs a TSS region for real-mode emulation; we never run in
        // real mode, and other hosts reject or ignore it, so failure is fine.
        let _ = vm.set_tss_address(0xfffb_d000);
        let mem = memory::create(config.mem_size)?;
        let host_addr = mem
            .get_host_address(GuestAddress(0))
            .map_err(|e| Error::Memory(e.to_string()))?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: config.mem_size,
            userspace_addr: host_addr as u64,
        };
        // SAFETY: the region is a live mapping of exactly memory_size bytes
        // owned by `mem`, which the Vm keeps until after the VM fd is closed.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(Error::kvm("SET_USER_MEMORY_REGION"))?;
        let vcpu = vm.create_vcpu(0).map_err(Error::kvm("CREATE_VCPU"))?;
        let t1 = Instant::now();

        arch::write_page_tables(&mem, config.mem_size)?;
        arch::write_system_tables(&mem)?;
        let placement = loader::load(
            &mem,
            config.mem_size,
            artifact,
            config.test_mode,
            kvm::tsc_khz(&vcpu),
        )?;
        arch::configure_vcpu(kvm, &vcpu, placement.entry, placement.stack_top)?;
        let t2 = Instant::now();

        let mut vm = Vm {
            vcpu,
            _vm: vm,
            mem,
            channel: HostChannel::new()?,
            state: State::Ready,
            init_output: BufferIo::default(),
            output_bytes: 0,
            stdin_done: false,
            timings: BootTimings::default(),
            config,
        };
        let deadline = Deadline::arm(vm.config.boot_timeout).map_err(Error::Timer)?;
        let mut init_output = std::mem::take(&mut vm.init_output);
        let stop = vm.run(Phase::Boot, &mut init_output, Some(&deadline))?;
        vm.init_output = init_output;
        if let Stop::Done(outcome) = stop {
            return Err(Error::Module(format!(
                "the module ended while it was being instantiated: {outcome:?}"
            )));
        }
        vm.timings = BootTimings {
            create: t1 - t0,
            load: t2 - t1,
            init: t2.elapsed(),
        };
        Ok(vm)
    }

    /// Where the time of [`Vm::boot`] went.
    pub fn boot_timings(&self) -> BootTimings {
        self.timings
    }

    /// Runs the module's `_start` for `invocation`, streaming its stdio
    /// through `io`. A VM serves one invocation.
    pub fn invoke(&mut self, invocation: &Invocation, io: &mut dyn GuestIo) -> Result<Outcome> {
        if self.state != State::Ready {
            return Err(Error::Config("this VM already served an invocation".into()));
        }
        self.state = State::Used;
        if !self.init_output.stdout.is_empty() || !self.init_output.stderr.is_empty() {
            io.write_stdout(&self.init_output.stdout)
                .map_err(Error::Output)?;
            io.write_stderr(&self.init_output.stderr)
                .map_err(Error::Output)?;
        }

        let realtime_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seed = random_seed()?;
        let posted = self.channel.push_rx(&self.mem, |buf| {
            let n = msg::encode_request(buf, realtime_ns, &seed, &invocation.args, &invocation.env)
                .map_err(|_| {
                    Error::Config(
                        "arguments and environment exceed the 64 KiB request buffer".into(),
                    )
                })?;
            Ok((Kind::Request, n))
        })?;
        if !posted {
            return Err(Error::Protocol(
                "the guest posted no buffer for the request".into(),
            ));
        }
        let deadline = self
            .config
            .timeout
            .map(Deadline::arm)
            .transpose()
            .map_err(Error::Timer)?;
        self.feed_stdin(io, false, deadline.as_ref())?;
        match self.run(Phase::Invoke, io, deadline.as_ref())? {
            Stop::Done(outcome) => Ok(outcome),
            Stop::Ready => Err(Error::Protocol("the guest reported ready twice".into())),
        }
    }

    /// Runs the vCPU until the guest reaches the end of `phase`. If the run
    /// is stopped (timeout, fault, panic), the output the guest published
    /// before that is still delivered.
    fn run(
        &mut self,
        phase: Phase,
        io: &mut dyn GuestIo,
        deadline: Option<&Deadline>,
    ) -> Result<Stop> {
        let result = self.run_until_stop(phase, io, deadline);
        if let Err(
            Error::Timeout(_)
            | Error::GuestFault { .. }
            | Error::AgentPanic(_)
            | Error::TripleFault,
        ) = result
        {
            self.salvage_output(io);
        }
        result
    }

    /// Delivers output messages still in the tx queue of a stopped guest,
    /// ignoring everything else; best effort, as the guest may be broken.
    fn salvage_output(&mut self, io: &mut dyn GuestIo) {
        let limit = self.config.max_output;
        let output_bytes = &mut self.output_bytes;
        let _ = self
            .channel
            .drain_tx(&self.mem, |kind, payload| match kind {
                Kind::Stdout | Kind::Stderr => {
                    deliver_output(io, kind, payload, output_bytes, limit)
                }
                _ => Ok(()),
            });
    }

    fn run_until_stop(
        &mut self,
        phase: Phase,
        io: &mut dyn GuestIo,
        deadline: Option<&Deadline>,
    ) -> Result<Stop> {
        loop {
            let (port, value) = match self.vcpu.run() {
                Ok(VcpuExit::IoOut(port, data)) => {
                    let mut v = [0u8; 4];
                    let n = data.len().min(4);
                    v[..n].copy_from_slice(&data[..n]);
                    (port, u32::from_le_bytes(v))
                }
                Ok(VcpuExit::Intr) => {
                    check_deadline(deadline)?;
                    continue;
                }
                Ok(VcpuExit::Shutdown) => return Err(Error::TripleFault),
                Ok(VcpuExit::MmioRead(addr, _) | VcpuExit::MmioWrite(addr, _)) => {
                    return Err(Error::Protocol(format!(
                        "access to unbacked guest-physical address {addr:#x}"
                    )))
                }
                Ok(VcpuExit::IoIn(port, _)) => {
                    return Err(Error::Protocol(format!("read from I/O port {port:#x}")))
                }
                Ok(VcpuExit::Hlt) => return Err(Error::Protocol("the guest halted".into())),
                Ok(VcpuExit::InternalError) => {
                    return Err(Error::Protocol(
                        "KVM could not emulate a guest instruction (internal error)".into(),
                    ))
                }
                Ok(VcpuExit::FailEntry(reason, _)) => {
                    return Err(Error::Protocol(format!(
                        "KVM failed to enter the guest (reason {reason:#x})"
                    )))
                }
                Ok(other) => return Err(Error::Protocol(format!("unexpected VM exit {other:?}"))),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    check_deadline(deadline)?;
                    continue;
                }
                Err(e) => {
                    return Err(Error::Kvm {
                        op: "RUN",
                        source: e,
                    })
                }
            };
            match port {
                ports::NOTIFY => {
                    if let Some(stop) = self.on_notify(phase, io, deadline)? {
                        return Ok(stop);
                    }
                }
                ports::FAULT => return Err(self.fault(value as u8)),
                ports::PANIC => {
                    let len = u64::from(value).min(PANIC_MSG_MAX) as usize;
                    let text = memory::read(&self.mem, PANIC_MSG_ADDR, len)
                        .map(|b| lossy(&b))
                        .unwrap_or_default();
                    return Err(Error::AgentPanic(text));
                }
                other => {
                    return Err(Error::Protocol(format!(
                        "write to unknown I/O port {other:#x}"
                    )))
                }
            }
            check_deadline(deadline)?;
        }
    }

    /// Serves a notify: consumes the guest's messages, then answers a
    /// stdin request or a sleep.
    fn on_notify(
        &mut self,
        phase: Phase,
        io: &mut dyn GuestIo,
        deadline: Option<&Deadline>,
    ) -> Result<Option<Stop>> {
        let mut stop = None;
        let mut wants_stdin = false;
        let mut sleep = Duration::ZERO;
        let max_output = self.config.max_output;
        let output_bytes = &mut self.output_bytes;
        self.channel.drain_tx(&self.mem, |kind, payload| {
            if stop.is_some() {
                return Err(Error::Protocol(format!("{kind:?} after the final message")));
            }
            match kind {
                Kind::Ready if phase == Phase::Boot => stop = Some(Stop::Ready),
                Kind::Stdout | Kind::Stderr => {
                    deliver_output(io, kind, payload, output_bytes, max_output)?
                }
                Kind::StdinRequest => wants_stdin = true,
                Kind::Sleep => {
                    let ns: [u8; 8] = payload
                        .try_into()
                        .map_err(|_| Error::Protocol("bad sleep message".into()))?;
                    sleep = Duration::from_nanos(u64::from_le_bytes(ns));
                }
                Kind::Exit => {
                    let code: [u8; 4] = payload
                        .try_into()
                        .map_err(|_| Error::Protocol("bad exit message".into()))?;
                    stop = Some(Stop::Done(Outcome::Exited(i32::from_le_bytes(code))));
                }
                Kind::Trap => stop = Some(Stop::Done(Outcome::Trapped(lossy(payload)))),
                Kind::Error => return Err(Error::Module(lossy(payload))),
                Kind::OutOfMemory => return Err(Error::OutOfMemory(lossy(payload))),
                other => {
                    return Err(Error::Protocol(format!(
                        "unexpected {other:?} message in {phase:?}"
                    )))
                }
            }
            Ok(())
        })?;
        if stop.is_some() {
            return Ok(stop);
        }
        if !sleep.is_zero() {
            std::thread::sleep(deadline.map_or(sleep, |d| sleep.min(d.remaining())));
            check_deadline(deadline)?;
        }
        if wants_stdin {
            self.feed_stdin(io, true, deadline)?;
        }
        Ok(None)
    }

    /// Fills posted rx buffers with stdin. Blocks for the first chunk only
    /// if `block` (the guest asked); otherwise sends what is ready.
    fn feed_stdin(
        &mut self,
        io: &mut dyn GuestIo,
        mut block: bool,
        deadline: Option<&Deadline>,
    ) -> Result<()> {
        while self.channel.rx_available(&self.mem)? {
            if !self.stdin_done && !block && !io.stdin_ready() {
                break;
            }
            block = false;
            let done = &mut self.stdin_done;
            self.channel.push_rx(&self.mem, |buf| {
                if *done {
                    return Ok((Kind::StdinEof, 0));
                }
                let n = loop {
                    match io.read_stdin(buf) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                            check_deadline(deadline)?
                        }
                        Err(e) => return Err(Error::Input(e)),
                    }
                };
                *done = n == 0;
                Ok(if n == 0 {
                    (Kind::StdinEof, 0)
                } else {
                    (Kind::Stdin, n)
                })
            })?;
            if self.stdin_done {
                break;
            }
        }
        Ok(())
    }

    /// Builds the error for an exception the guest reported on the fault
    /// port, from the interrupt frame on the exception stack.
    fn fault(&self, vector: u8) -> Error {
        if u64::from(vector) >= FAULT_VECTORS {
            return Error::Protocol(format!("fault port written with bad vector {vector}"));
        }
        let regs = match self.vcpu.get_regs() {
            Ok(r) => r,
            Err(source) => {
                return Error::Kvm {
                    op: "GET_REGS",
                    source,
                }
            }
        };
        let has_code = arch::EXCEPTIONS_WITH_ERROR_CODE.contains(&vector);
        let frame_len = if has_code { 16 } else { 8 };
        // The frame must be on the exception stack; anything else means the
        // guest wrote the fault port itself.
        if regs.rsp < EXCEPTION_STACK_BOTTOM || regs.rsp + frame_len > EXCEPTION_STACK_TOP {
            return Error::Protocol(format!(
                "fault port written outside an exception (rsp {:#x})",
                regs.rsp
            ));
        }
        let frame = match memory::read(&self.mem, regs.rsp, frame_len as usize) {
            Ok(f) => f,
            Err(e) => return Error::Protocol(e.to_string()),
        };
        let word =
            |i: usize| u64::from_le_bytes(frame[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        let (error_code, rip) = if has_code {
            (word(0), word(1))
        } else {
            (0, word(0))
        };
        let fault_addr = (vector == 14).then(|| self.vcpu.get_sregs().map(|s| s.cr2).unwrap_or(0));
        Error::GuestFault {
            vector,
            name: arch::exception_name(vector),
            error_code,
            rip,
            fault_addr,
        }
    }
}

/// Writes one output message to `io`, enforcing the output limit: output up
/// to the limit is delivered, the rest ends the run.
fn deliver_output(
    io: &mut dyn GuestIo,
    kind: Kind,
    payload: &[u8],
    total: &mut u64,
    limit: u64,
) -> Result<()> {
    let room = limit.saturating_sub(*total);
    let take = payload
        .len()
        .min(usize::try_from(room).unwrap_or(usize::MAX));
    *total += take as u64;
    let written = if kind == Kind::Stdout {
        io.write_stdout(&payload[..take])
    } else {
        io.write_stderr(&payload[..take])
    };
    written.map_err(Error::Output)?;
    if take < payload.len() {
        return Err(Error::OutputLimit(limit));
    }
    Ok(())
}

fn check_deadline(deadline: Option<&Deadline>) -> Result<()> {
    match deadline {
        Some(d) if d.expired() => Err(Error::Timeout(d.limit())),
        _ => Ok(()),
    }
}
