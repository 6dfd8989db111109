//! Snapshots of a ready VM, and VMs restored or reset from one.
//!
//! Each component saves its own state into a section of the snapshot
//! (`vm`, `vcpu`, `channel`); guest memory goes to a sparse file that
//! restores map copy-on-write. The `working_set` section lists the pages a
//! sample invocation touched right after the snapshot point, so a restore
//! can pre-fault exactly those (the REAP idea) instead of taking a host page
//! fault for each inside the guest.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wisp_abi::layout::PAGE_SIZE;
use wisp_snapshot::{Builder, Compat, CpuFeatures, Snapshot};

use super::{attach_memory, Invocation, State, Vm, VmConfig, MEMORY_SLOT};
use crate::arch::VcpuState;
use crate::channel::{ChannelState, HostChannel};
use crate::error::{Error, ProtocolError, Result};
use crate::io::BufferIo;
use crate::memory::{self, GuestRam, Populate};
use crate::shell::Shell;

const VM_SECTION: &str = "vm";
const VCPU_SECTION: &str = "vcpu";
const CHANNEL_SECTION: &str = "channel";
const WORKING_SET_SECTION: &str = "working_set";
/// Metadata key: the name the module was snapshotted under (`argv[0]`).
const META_MODULE: &str = "module";

/// The longest a working-set sample invocation may run.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a restore prepares guest memory before the guest runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefault {
    /// Nothing: every page is faulted in when the guest first touches it.
    None,
    /// Pre-fault the snapshot's recorded working set: pages that were only
    /// read are mapped from the page cache, written ones copied.
    WorkingSet,
    /// Copy all of the snapshot's data into fresh anonymous memory backed by
    /// transparent huge pages (no sharing between instances).
    CopyToHugePages,
}

/// Pages a sample invocation touched after the snapshot point, as runs of
/// `(first page, page count)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkingSet {
    /// Pages only read.
    pub read: Vec<(u64, u64)>,
    /// Pages written.
    pub written: Vec<(u64, u64)>,
}

impl WorkingSet {
    /// Total pages (read, written).
    pub fn page_counts(&self) -> (u64, u64) {
        let sum = |runs: &[(u64, u64)]| runs.iter().map(|r| r.1).sum();
        (sum(&self.read), sum(&self.written))
    }

    fn check(&self, mem_size: u64) -> Result<()> {
        let pages = mem_size / PAGE_SIZE;
        let bad = self
            .read
            .iter()
            .chain(&self.written)
            .any(|&(start, count)| start.checked_add(count).is_none_or(|end| end > pages));
        if bad {
            return Err(Error::Snapshot(wisp_snapshot::Error::Corrupt(
                "working set outside guest memory".into(),
            )));
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct VmSection {
    mem_size: u64,
}

/// What a snapshot must match to be loaded by this build.
pub fn compat() -> Compat {
    Compat {
        wisp_version: env!("CARGO_PKG_VERSION").into(),
        wasmtime_version: env!("WISP_AGENT_WASMTIME_VERSION").into(),
        abi_version: wisp_abi::ABI_VERSION,
        agent_hash: env!("WISP_AGENT_HASH").into(),
    }
}

/// A verified snapshot held open, from which any number of VMs are
/// restored; share it with an `Arc`.
pub struct Image {
    memory: Arc<File>,
    mem_size: u64,
    vcpu: VcpuState,
    channel: ChannelState,
    working_set: WorkingSet,
    /// Runs of pages holding data in the memory file.
    data: Vec<(u64, u64)>,
    /// Which 2 MiB blocks hold data; the others get anonymous memory.
    blocks: memory::Blocks,
    module: Option<String>,
}

/// Where the time of a restore went.
#[derive(Clone, Copy, Debug, Default)]
pub struct RestoreTimings {
    /// Creating the VM and vCPU (zero with a pre-created shell).
    pub shell: Duration,
    /// Mapping guest memory and pre-faulting it.
    pub memory: Duration,
    /// Registering memory with KVM and loading the vCPU and channel state.
    pub state: Duration,
}

impl Image {
    /// Opens and verifies the snapshot in `dir`: format, versions, CPU
    /// features, checksums of every section and of the memory data.
    pub fn open(dir: &Path) -> Result<Image> {
        let snap = Snapshot::open(dir, &compat(), &CpuFeatures::host())?;
        let vm: VmSection = snap.section(VM_SECTION)?;
        let working_set: WorkingSet = snap.section(WORKING_SET_SECTION)?;
        if vm.mem_size != snap.memory_size() {
            return Err(Error::Snapshot(wisp_snapshot::Error::Corrupt(format!(
                "the vm section says {} bytes of memory, the memory file has {}",
                vm.mem_size,
                snap.memory_size()
            ))));
        }
        memory::validate_size(vm.mem_size)?;
        working_set.check(vm.mem_size)?;
        let memory = snap
            .memory_file()
            .try_clone()
            .map_err(|e| Error::MapSnapshot(Box::new(e)))?;
        let data: Vec<(u64, u64)> = snap
            .manifest()
            .memory
            .extents
            .iter()
            .map(|e| (e.start_page, e.pages))
            .collect();
        Ok(Image {
            memory: Arc::new(memory),
            mem_size: vm.mem_size,
            vcpu: snap.section(VCPU_SECTION)?,
            channel: snap.section(CHANNEL_SECTION)?,
            working_set,
            blocks: memory::Blocks::of(&data, vm.mem_size),
            data,
            module: snap.meta(META_MODULE).map(str::to_owned),
        })
    }

    /// The name the module was snapshotted under.
    pub fn module_name(&self) -> Option<&str> {
        self.module.as_deref()
    }

    /// Guest memory size of VMs restored from this image.
    pub fn mem_size(&self) -> u64 {
        self.mem_size
    }

    /// The recorded working set.
    pub fn working_set(&self) -> &WorkingSet {
        &self.working_set
    }

    /// Maps fresh guest memory holding the snapshot's contents: the file,
    /// copy-on-write, where it has data, and anonymous memory (huge pages,
    /// as a fresh VM has) over the 2 MiB blocks where it has none, so that
    /// memory the snapshot never used costs a restored VM no more to touch
    /// than a fresh one.
    fn map_memory(&self, how: Prefault) -> Result<GuestRam> {
        let mem = match how {
            Prefault::CopyToHugePages => memory::create(self.mem_size)?,
            Prefault::None | Prefault::WorkingSet => {
                let mem = memory::map_private(&self.memory, self.mem_size)?;
                memory::anonymous_over(&mem, &self.blocks.holes())?;
                mem
            }
        };
        self.prepare(&mem, how)?;
        Ok(mem)
    }

    /// Brings memory that reads as the snapshot file (or as zeroes, for
    /// huge-page copies) to the snapshot's contents and pre-faults it.
    fn prepare(&self, mem: &GuestRam, how: Prefault) -> Result<()> {
        match how {
            Prefault::None => Ok(()),
            Prefault::WorkingSet => {
                memory::populate(mem, &self.working_set.read, Populate::Read)?;
                memory::populate(mem, &self.working_set.written, Populate::Write)
            }
            Prefault::CopyToHugePages => self.copy_data(mem),
        }
    }

    fn copy_data(&self, mem: &GuestRam) -> Result<()> {
        memory::copy_from_file(mem, &self.memory, &self.data)
    }
}

impl Vm {
    /// Writes a snapshot of this ready VM to `dir` (atomically replacing
    /// anything there). `module` is recorded as the module's name. With a
    /// `sample` invocation, a VM is restored from the new snapshot and runs
    /// it once (output discarded) to record the working set.
    ///
    /// Output the module wrote during boot is not part of the snapshot:
    /// take it first with [`Vm::take_init_output`].
    pub fn snapshot(
        &mut self,
        dir: &Path,
        module: &str,
        sample: Option<&Invocation>,
    ) -> Result<()> {
        if self.state != State::Ready {
            return Err(Error::AlreadyUsed {
                restored: self.image.is_some(),
            });
        }
        self.quiesce()?;
        let vcpu = VcpuState::save(&self.shell.vcpu)?;
        let channel = self.channel.save();
        let mem_size = self.config.mem_size;

        let mut builder = Builder::new(dir)?;
        builder.section(VM_SECTION, &VmSection { mem_size })?;
        builder.section(VCPU_SECTION, &vcpu)?;
        builder.section(CHANNEL_SECTION, &channel)?;
        builder.memory(&memory::contents(&self.mem)?)?;
        let working_set = match sample {
            None => WorkingSet::default(),
            Some(invocation) => {
                let file = builder.memory_file()?;
                let image = Image {
                    memory: Arc::new(file),
                    mem_size,
                    vcpu,
                    channel,
                    working_set: WorkingSet::default(),
                    data: Vec::new(),
                    // Where the data is is not known yet: keep the file
                    // mapping everywhere.
                    blocks: memory::Blocks::all_data(mem_size),
                    module: None,
                };
                record_working_set(image, &self.config, invocation)?
            }
        };
        builder.section(WORKING_SET_SECTION, &working_set)?;
        builder.meta(META_MODULE, module);
        builder.commit(&compat(), &CpuFeatures::host())?;
        Ok(())
    }

    /// Restores a VM from `image` in a new shell.
    pub fn restore(image: &Arc<Image>, config: VmConfig) -> Result<Vm> {
        let t0 = Instant::now();
        let shell = Shell::new()?;
        let shell_time = t0.elapsed();
        let mut vm = Vm::restore_in(shell, image, config)?;
        vm.restore_timings.shell = shell_time;
        Ok(vm)
    }

    /// Restores a VM from `image` into a pre-created `shell`. The VM's memory
    /// size is the snapshot's; `config.mem_size` is ignored.
    pub fn restore_in(shell: Shell, image: &Arc<Image>, mut config: VmConfig) -> Result<Vm> {
        config.mem_size = image.mem_size;
        let t0 = Instant::now();
        let mem = image.map_memory(config.prefault)?;
        let t1 = Instant::now();
        // KVM logs the pages the guest writes, so a reset restores only those.
        attach_memory(&shell, &mem, true)?;
        image.vcpu.restore(&shell.vcpu)?;
        let mut channel = HostChannel::new()?;
        channel.restore(&image.channel);
        let mut vm = Vm::assemble(shell, mem, channel, config);
        vm.image = Some(Arc::clone(image));
        vm.restore_timings = RestoreTimings {
            shell: Duration::ZERO,
            memory: t1 - t0,
            state: t1.elapsed(),
        };
        Ok(vm)
    }

    /// Returns a restored VM to its snapshot's state, whatever its last
    /// invocation did: the pages the guest wrote (KVM's dirty log) and the
    /// host wrote (the channel's record) are copied back from the snapshot
    /// file where it has data, and zeroed (or, for a block mostly written,
    /// dropped) where it has none; then the vCPU and channel state are
    /// reloaded. Pages only read stay mapped, with KVM's mappings of them,
    /// so the next invocation does not fault them in again.
    pub fn reset(&mut self) -> Result<()> {
        let image = self.image.clone().ok_or(Error::NotRestored("be reset"))?;
        let t0 = Instant::now();
        // Finish whatever port I/O the last exit left pending, so KVM does
        // not complete it on top of the state loaded below.
        self.quiesce()?;
        let bitmap = self
            .shell
            .vm
            .get_dirty_log(MEMORY_SLOT, self.config.mem_size as usize)
            .map_err(Error::kvm("GET_DIRTY_LOG"))?;
        self.note_written(&bitmap);
        let mut written = memory::bitmap_runs(&bitmap);
        written.extend(memory::page_runs(&self.channel.take_host_writes()));
        let (data, holes) = image.blocks.split(&memory::merge_runs(written));
        memory::copy_from_file(&self.mem, &image.memory, &data)?;
        for (start, pages) in memory::clear_holes(&self.mem, &holes)? {
            self.note_dropped(start, pages);
        }
        let t1 = Instant::now();
        image.vcpu.reload(&self.shell.vcpu)?;
        self.channel.restore(&image.channel);
        self.state = State::Ready;
        self.output_bytes = 0;
        self.stdin_done = false;
        self.init_output = BufferIo::new();
        self.restore_timings = RestoreTimings {
            shell: Duration::ZERO,
            memory: t1 - t0,
            state: t1.elapsed(),
        };
        Ok(())
    }

    /// The first guest page that differs from the snapshot, if any: a
    /// check for tests that a reset left nothing behind. Reads all of guest
    /// memory.
    #[doc(hidden)]
    pub fn first_difference_from_snapshot(&self) -> Result<Option<u64>> {
        let image = self
            .image
            .as_ref()
            .ok_or(Error::NotRestored("be compared with its snapshot"))?;
        memory::first_difference(&self.mem, &image.memory)
    }

    /// Guest pages written since the restore (at the last reset): they stay
    /// private to this VM, so this approximates its host memory beyond the
    /// shared snapshot pages.
    pub fn private_bytes(&self) -> u64 {
        let pages: u32 = self.written.iter().map(|w| w.count_ones()).sum();
        u64::from(pages) * PAGE_SIZE
    }

    /// Forgets `pages` pages from `start` as written: they went back to the
    /// host.
    fn note_dropped(&mut self, start: u64, pages: u64) {
        for page in start..start + pages {
            if let Some(word) = self.written.get_mut((page / 64) as usize) {
                *word &= !(1 << (page % 64));
            }
        }
    }

    fn note_written(&mut self, bitmap: &[u64]) {
        if self.written.len() < bitmap.len() {
            self.written.resize(bitmap.len(), 0);
        }
        for (acc, bits) in self.written.iter_mut().zip(bitmap) {
            *acc |= bits;
        }
    }

    /// Detaches guest memory and returns the empty VM, ready to be restored
    /// into again: much cheaper than destroying the VM and creating another
    /// (KVM's VM creation and teardown take the process-wide mm locks).
    /// Every piece of vCPU state a restore depends on is loaded by it; the
    /// pending port I/O of the last exit is completed here so it cannot
    /// land on the next restore's state.
    pub fn into_shell(mut self) -> Result<Shell> {
        self.quiesce()?;
        super::detach_memory(&self.shell)?;
        Ok(self.shell)
    }

    /// Where the time of the last restore or reset went.
    pub fn restore_timings(&self) -> RestoreTimings {
        self.restore_timings
    }

    /// Completes any port I/O the vCPU exited for, without running guest
    /// code, so the vCPU state KVM reports is between two instructions.
    fn quiesce(&mut self) -> Result<()> {
        let vcpu = &mut self.shell.vcpu;
        vcpu.set_kvm_immediate_exit(1);
        let outcome = vcpu.run().map(|exit| format!("{exit:?}"));
        vcpu.set_kvm_immediate_exit(0);
        match outcome {
            Err(e) if e.errno() == libc::EINTR => Ok(()),
            Err(source) => Err(Error::Kvm { op: "RUN", source }),
            Ok(exit) => {
                Err(ProtocolError::UnexpectedExit(format!("{exit} while being paused")).into())
            }
        }
    }
}

/// Restores a VM from a just-written snapshot without pre-faulting, runs
/// `invocation` in it, and returns the pages it touched.
fn record_working_set(
    image: Image,
    config: &VmConfig,
    invocation: &Invocation,
) -> Result<WorkingSet> {
    let config = VmConfig {
        prefault: Prefault::None,
        timeout: Some(
            config
                .timeout
                .map_or(SAMPLE_TIMEOUT, |t| t.min(SAMPLE_TIMEOUT)),
        ),
        ..config.clone()
    };
    let mut vm = Vm::restore(&Arc::new(image), config)?;
    // Whatever the sample's outcome, the pages it touched are the ones a
    // real invocation will start with.
    let _ = vm.invoke(invocation, &mut BufferIo::new());
    let touched = memory::touched_pages(&vm.mem)?;
    Ok(WorkingSet {
        read: touched.read,
        written: touched.written,
    })
}
