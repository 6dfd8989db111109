//! A micro-VM's life: build or restore, boot to ready, serve an invocation,
//! reset.
//!
//! `mod.rs` assembles VMs and serves requests; `run.rs` is the exit loop;
//! `persist.rs` snapshots a ready VM and restores or resets one from it;
//! `working_set.rs` records or learns the pages restores pre-fault.

mod persist;
mod run;
mod slots;
mod working_set;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wisp_abi::boot::{ReadyAt, TestMode};
use wisp_abi::msg::{self, Kind, SEED_LEN};

use crate::arch;
use crate::channel::HostChannel;
use crate::error::{ConfigError, Error, ProtocolError, Result};
use crate::files::Files;
use crate::io::{BufferIo, GuestIo};
use crate::kvm;
use crate::loader;
use crate::memory::{self, GuestRam};
use crate::shell::Shell;
use crate::timer::Deadline;
pub use persist::{compat, Capture, Image, Prefault, RestoreTimings};
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use run::deliver_output;
use run::{Phase, Stop};
pub(crate) use slots::Slots;
pub use working_set::WorkingSet;

/// Most bytes of boot-time stderr an [`Error::EndedDuringInit`] carries.
pub const INIT_STDERR_TAIL: usize = 4096;

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
    /// How a restore prepares guest memory. `None` by default: on the PVM
    /// hosts measured (docs/SNAPSHOT.md) pre-faulting costs more than the
    /// guest's own faults save.
    pub prefault: Prefault,
    /// Read-only directories placed in guest memory and mounted by the
    /// agent (besides the scratch `/tmp` it always has).
    pub files: Files,
    /// `Some`: boot runs the module's `_start` with this invocation and
    /// the VM is ready — the snapshot point — at the module's first read
    /// of stdin, so what it does before (an interpreter starting and
    /// importing a handler) is never repeated. Each invocation's clock,
    /// entropy and stdin are then delivered to that read; its arguments
    /// and environment are ignored (the module has read them at boot).
    /// `None` (the default): ready once the module is instantiated.
    pub run_to_first_read: Option<Invocation>,
    /// Whether a restored VM can be [reset](Vm::reset): KVM then logs the
    /// pages the guest writes, so a reset restores only those. A VM that
    /// serves one invocation does without the log (and the write faults
    /// that keep it). True by default.
    pub resettable: bool,
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
            prefault: Prefault::None,
            files: Files::default(),
            run_to_first_read: None,
            resettable: true,
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

impl Invocation {
    /// Bytes the request message takes in the guest's receive buffer.
    pub fn request_len(&self) -> usize {
        msg::request_len(&self.args, &self.env)
    }

    /// Fails unless the request fits the guest's receive buffer, so a
    /// caller can refuse such an invocation before any VM sees it.
    pub fn check(&self) -> Result<()> {
        let (needed, limit) = (self.request_len(), msg::MAX_REQUEST);
        if needed > limit {
            return Err(ConfigError::RequestTooLarge { needed, limit }.into());
        }
        Ok(())
    }
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

#[derive(PartialEq, Eq)]
enum State {
    Ready,
    Used,
}

/// A micro-VM: booted fresh or restored from a snapshot, it serves one
/// invocation at a time; a restored VM can be [reset](Vm::reset) to its
/// snapshot and serve another.
pub struct Vm {
    shell: Shell,
    mem: GuestRam,
    /// How `mem` is registered with KVM.
    slots: Slots,
    /// The snapshot this VM was restored from, for [`Vm::reset`].
    image: Option<std::sync::Arc<Image>>,
    channel: HostChannel,
    config: VmConfig,
    state: State,
    /// Output the module wrote while it was being instantiated.
    init_output: BufferIo,
    output_bytes: u64,
    stdin_done: bool,
    timings: BootTimings,
    restore_timings: RestoreTimings,
    /// Union of KVM's dirty bitmaps over the resets of a restored VM.
    written: Vec<u64>,
    /// Runs of pages a restore copied whole into huge pages (the image's
    /// hot blocks): private to this VM, and copied back whole by a reset.
    copied: memory::PageRuns,
    /// How many times the vCPU ran or the VM was reset: a [`Capture`] is
    /// only good for the epoch it was taken in.
    epoch: u64,
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
    /// A VM in the ready state from its parts.
    fn assemble(
        shell: Shell,
        (mem, slots): (GuestRam, Slots),
        channel: HostChannel,
        config: VmConfig,
    ) -> Vm {
        Vm {
            shell,
            mem,
            slots,
            image: None,
            channel,
            config,
            state: State::Ready,
            init_output: BufferIo::new(),
            output_bytes: 0,
            stdin_done: false,
            timings: BootTimings::default(),
            restore_timings: RestoreTimings::default(),
            written: Vec::new(),
            copied: Vec::new(),
            epoch: 0,
        }
    }

    /// Builds a VM for `artifact` (a module precompiled by the host's
    /// wasmtime with the shared configuration) and runs the agent until the
    /// module is instantiated and waiting for a request.
    pub fn boot(config: VmConfig, artifact: &[u8]) -> Result<Vm> {
        memory::validate_size(config.mem_size)?;
        let t0 = Instant::now();
        let shell = Shell::new()?;
        Vm::boot_from(shell, t0, config, artifact)
    }

    /// Like [`Vm::boot`], in a pre-created `shell` (one that never ran):
    /// its creation is then not part of [`BootTimings::create`].
    pub fn boot_in(shell: Shell, config: VmConfig, artifact: &[u8]) -> Result<Vm> {
        memory::validate_size(config.mem_size)?;
        Vm::boot_from(shell, Instant::now(), config, artifact)
    }

    fn boot_from(mut shell: Shell, t0: Instant, config: VmConfig, artifact: &[u8]) -> Result<Vm> {
        shell.ensure_cpuid()?;
        let slots = Slots::single(config.mem_size, false);
        let mem = match shell.reuse_memory(None, &slots)? {
            // Registered ahead, never used: made fresh memory in place.
            Some(mem) => {
                memory::anonymous_over(&mem, &[(0, config.mem_size)])?;
                mem
            }
            None => {
                let mem = memory::create(config.mem_size)?;
                slots.attach(&shell, &mem)?;
                mem
            }
        };
        let t1 = Instant::now();

        arch::write_page_tables(&mem, config.mem_size)?;
        arch::write_system_tables(&mem)?;
        let placement = loader::load(
            &mem,
            config.mem_size,
            artifact,
            config.files.bytes(),
            config.test_mode,
            if config.run_to_first_read.is_some() {
                ReadyAt::FirstRead
            } else {
                ReadyAt::Instantiated
            },
            kvm::tsc_khz(&shell.vcpu),
        )?;
        arch::configure_vcpu(
            kvm::kvm()?,
            &shell.vcpu,
            placement.entry,
            placement.stack_top,
        )?;
        let t2 = Instant::now();

        let mut vm = Vm::assemble(shell, (mem, slots), HostChannel::new()?, config);
        let deadline = Deadline::arm(vm.config.boot_timeout).map_err(Error::Timer)?;
        vm.run_to_ready(&deadline)?;
        if let Some(invocation) = vm.config.run_to_first_read.take() {
            vm.post_request(&invocation)?;
            vm.run_to_ready(&deadline)?;
            vm.config.run_to_first_read = Some(invocation);
        }
        vm.timings = BootTimings {
            create: t1 - t0,
            load: t2 - t1,
            init: t2.elapsed(),
        };
        Ok(vm)
    }

    /// Runs a booting VM to its next `Ready`, collecting its output.
    fn run_to_ready(&mut self, deadline: &Deadline) -> Result<()> {
        let mut init_output = std::mem::take(&mut self.init_output);
        let stop = self.run(Phase::Boot, &mut init_output, Some(deadline));
        self.init_output = init_output;
        match stop? {
            Stop::Ready => Ok(()),
            Stop::Done(outcome) => {
                let stderr = &self.init_output.stderr;
                let tail = &stderr[stderr.len().saturating_sub(INIT_STDERR_TAIL)..];
                Err(Error::EndedDuringInit {
                    outcome,
                    stderr: lossy(tail),
                })
            }
        }
    }

    /// Writes a request for `invocation`, with the time now and a fresh
    /// seed, into the guest's receive queue.
    fn post_request(&mut self, invocation: &Invocation) -> Result<()> {
        let realtime_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seed = random_seed()?;
        let posted = self.channel.push_rx(&self.mem, |buf| {
            let n = msg::encode_request(buf, realtime_ns, &seed, &invocation.args, &invocation.env)
                .map_err(|_| ConfigError::RequestTooLarge {
                    needed: invocation.request_len(),
                    limit: buf.len(),
                })?;
            Ok((Kind::Request, n))
        })?;
        if !posted {
            return Err(ProtocolError::NoRxBuffer("the request").into());
        }
        Ok(())
    }

    /// Output the module wrote during boot (in its init export), which would
    /// otherwise be delivered with the first invocation.
    pub fn take_init_output(&mut self) -> BufferIo {
        std::mem::take(&mut self.init_output)
    }

    /// Where the time of [`Vm::boot`] went.
    pub fn boot_timings(&self) -> BootTimings {
        self.timings
    }

    /// Bytes of guest memory.
    pub fn mem_size(&self) -> u64 {
        self.config.mem_size
    }

    /// Runs the module's `_start` for `invocation`, streaming its stdio
    /// through `io`. A VM serves one invocation.
    pub fn invoke(&mut self, invocation: &Invocation, io: &mut dyn GuestIo) -> Result<Outcome> {
        if self.state != State::Ready {
            return Err(Error::AlreadyUsed {
                restored: self.image.is_some(),
            });
        }
        self.state = State::Used;
        if !self.init_output.stdout.is_empty() || !self.init_output.stderr.is_empty() {
            io.write_stdout(&self.init_output.stdout)
                .map_err(Error::Output)?;
            io.write_stderr(&self.init_output.stderr)
                .map_err(Error::Output)?;
        }

        self.post_request(invocation)?;
        let deadline = self
            .config
            .timeout
            .map(Deadline::arm)
            .transpose()
            .map_err(Error::Timer)?;
        self.feed_stdin(io, false, deadline.as_ref())?;
        match self.run(Phase::Invoke, io, deadline.as_ref())? {
            Stop::Done(outcome) => Ok(outcome),
            Stop::Ready => Err(ProtocolError::ReadyTwice.into()),
        }
    }
}
