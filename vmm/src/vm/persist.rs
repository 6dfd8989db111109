//! Snapshots of a ready VM, and VMs restored or reset from one.
//!
//! Each component saves its own state into a section of the snapshot
//! (`vm`, `vcpu`, `channel`); guest memory goes to a sparse file that
//! restores map copy-on-write. The `working_set` section lists the pages a
//! sample invocation touched right after the snapshot point, if one ran
//! (see [`super::working_set`]).

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_cpuid_entry2, CpuId};
use serde::{Deserialize, Serialize};
use wisp_abi::layout::{AGENT_CODE_BLOCK, LARGE_PAGE_SIZE, PAGE_SIZE};
use wisp_snapshot::{Builder, Compat, Extent, MemoryCheck, Snapshot};

use super::working_set::{self, WorkingSet};
use super::{Invocation, Slots, State, Vm, VmConfig};
use crate::arch::VcpuState;
use crate::channel::{ChannelState, HostChannel};
use crate::error::{ConfigError, Error, ProtocolError, Result};
use crate::io::BufferIo;
use crate::kvm::{self, guest_cpu_features};
use crate::memory::{self, GuestRam, Populate};
use crate::shell::{KeptMemory, Owner, Shell};

const VM_SECTION: &str = "vm";
const VCPU_SECTION: &str = "vcpu";
const CHANNEL_SECTION: &str = "channel";
const WORKING_SET_SECTION: &str = "working_set";
/// Output the module wrote while it was being instantiated and nobody took
/// (snapshots made for `wisp run`'s cache keep it, to replay on restore).
/// Snapshots from before it existed lack it: none.
const INIT_OUTPUT_SECTION: &str = "init_output";
/// The CPUID the guest booted with, given to every VM restored into a shell
/// without one. Snapshots from before it existed lack it: KVM's.
const CPUID_SECTION: &str = "cpuid";
/// The working set's hot blocks ([`WorkingSet::hot`]). Snapshots from
/// before it existed lack it: none.
const HOT_BLOCKS_SECTION: &str = "hot_blocks";
/// Metadata key: the name the module was snapshotted under (`argv[0]`).
const META_MODULE: &str = "module";

/// Pages the dirty log may hold, under manual protection, before a reset
/// write-protects them again (see [`Vm::reset`]). Copying a page back
/// costs well under a microsecond; the write fault it saves, an exit.
const REPROTECT_ABOVE: u64 = 512;

/// How a restore prepares guest memory before the guest runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefault {
    /// Nothing: every page is faulted in when the guest first touches it.
    None,
    /// Pre-fault the image's working set (recorded in the snapshot, or
    /// learned from a VM restored from it: [`Vm::learn_working_set`]):
    /// written pages are copied first, then pages only read are mapped
    /// from the page cache.
    WorkingSet,
    /// Copy all of the snapshot's data into fresh anonymous memory backed by
    /// transparent huge pages (no sharing between instances).
    CopyToHugePages,
}

#[derive(Serialize, Deserialize)]
struct VmSection {
    mem_size: u64,
}

/// What the module wrote during boot, as a snapshot keeps it.
#[derive(Clone, Default, Serialize, Deserialize)]
struct InitOutput {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl InitOutput {
    fn of(io: &BufferIo) -> InitOutput {
        InitOutput {
            stdout: io.stdout.clone(),
            stderr: io.stderr.clone(),
        }
    }

    fn to_io(&self) -> BufferIo {
        let mut io = BufferIo::new();
        io.stdout.clone_from(&self.stdout);
        io.stderr.clone_from(&self.stderr);
        io
    }
}

/// A ready VM's state, saved by [`Vm::capture`] on the thread that runs
/// the VM, so that [`Vm::write_snapshot`] can write it out on another (one
/// allowed to create files) without running the vCPU there.
pub struct Capture {
    vcpu: VcpuState,
    channel: ChannelState,
    init_output: InitOutput,
    cpuid: Vec<kvm_cpuid_entry2>,
    /// The VM's run count when captured: its memory must not have changed.
    epoch: u64,
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
    /// `memory` mapped read-only for resets, once the first VM restored
    /// from it is reset (`wisp run`'s VMs never are).
    view: std::sync::OnceLock<memory::FileView>,
    /// Learned from the first VM that teaches it, if the snapshot records
    /// no working set.
    learned: std::sync::OnceLock<WorkingSet>,
    /// Unique in this process (see [`Image::id`]).
    id: u64,
    mem_size: u64,
    vcpu: VcpuState,
    channel: ChannelState,
    working_set: WorkingSet,
    /// Runs of pages holding data in the memory file.
    data: Vec<(u64, u64)>,
    /// Which 2 MiB blocks hold data; the others get anonymous memory.
    blocks: memory::Blocks,
    module: Option<String>,
    /// Delivered with the first invocation of every VM restored from it.
    init_output: InitOutput,
    /// The guest's CPUID, if the snapshot records it.
    cpuid: Option<CpuId>,
}

/// A new [`Image::id`].
fn next_image_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
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
    /// Pages of the image's working set copied or mapped ahead
    /// ([`Prefault::WorkingSet`]).
    pub pages_ahead: u64,
}

impl Image {
    /// Opens and verifies the snapshot in `dir`: format, versions, CPU
    /// features, checksums of every section and of the memory data.
    pub fn open(dir: &Path) -> Result<Image> {
        Image::open_checking(dir, MemoryCheck::Full)
    }

    /// [`Image::open`], with the memory data checked as `check` says
    /// (see [`MemoryCheck`]): for a cache that opens the same snapshot on
    /// every run.
    pub fn open_checking(dir: &Path, check: MemoryCheck) -> Result<Image> {
        let snap = Snapshot::open_checking(dir, &compat(), guest_cpu_features(), check)?;
        let vm: VmSection = snap.section(VM_SECTION)?;
        let mut working_set: WorkingSet = snap.section(WORKING_SET_SECTION)?;
        working_set.hot = match snap.section(HOT_BLOCKS_SECTION) {
            Err(wisp_snapshot::Error::MissingSection(_)) => Vec::new(),
            other => other?,
        };
        let init_output = match snap.section(INIT_OUTPUT_SECTION) {
            Err(wisp_snapshot::Error::MissingSection(_)) => InitOutput::default(),
            other => other?,
        };
        let cpuid = match snap.section::<Vec<kvm_cpuid_entry2>>(CPUID_SECTION) {
            Err(wisp_snapshot::Error::MissingSection(_)) => None,
            Ok(entries) => Some(CpuId::from_entries(&entries).map_err(|_| {
                Error::Snapshot(wisp_snapshot::Error::Corrupt(
                    "too many CPUID entries".into(),
                ))
            })?),
            Err(e) => return Err(e.into()),
        };
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
        let blocks = memory::Blocks::of(&data, vm.mem_size);
        // A sample invocation ran before the data's blocks were known: a
        // block without data gets fresh memory anyway, and must not also be
        // copied into (its slot would overlap the hole's).
        working_set.hot.retain(|&b| blocks.has_data(b));
        Ok(Image {
            memory: Arc::new(memory),
            view: std::sync::OnceLock::new(),
            learned: std::sync::OnceLock::new(),
            id: next_image_id(),
            mem_size: vm.mem_size,
            vcpu: snap.section(VCPU_SECTION)?,
            channel: snap.section(CHANNEL_SECTION)?,
            working_set,
            blocks,
            data,
            module: snap.meta(META_MODULE).map(str::to_owned),
            init_output,
            cpuid,
        })
    }

    /// The memory file mapped read-only, for resets.
    fn view(&self) -> Result<&memory::FileView> {
        if let Some(view) = self.view.get() {
            return Ok(view);
        }
        let view = memory::FileView::map(&self.memory, self.mem_size)?;
        Ok(self.view.get_or_init(|| view))
    }

    /// A number no other image opened by this process has: what a shell
    /// records of the image its memory was restored from.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The name the module was snapshotted under.
    pub fn module_name(&self) -> Option<&str> {
        self.module.as_deref()
    }

    /// Guest memory size of VMs restored from this image.
    pub fn mem_size(&self) -> u64 {
        self.mem_size
    }

    /// The working set restores pre-fault: the recorded one, else the
    /// learned one, else none.
    pub fn working_set(&self) -> &WorkingSet {
        match self.learned.get() {
            Some(learned) if self.working_set.is_empty() => learned,
            _ => &self.working_set,
        }
    }

    /// Whether restores have a working set to pre-fault.
    pub(super) fn has_working_set(&self) -> bool {
        !self.working_set().is_empty()
    }

    /// Keeps `learned` as the working set, unless there is one or it is
    /// empty; whether it was kept.
    pub(super) fn learn(&self, learned: WorkingSet) -> bool {
        !self.has_working_set() && !learned.is_empty() && self.learned.set(learned).is_ok()
    }

    /// Learns a working set that a VM restored from this snapshot learned
    /// ([`Vm::learn_working_set`]), for a caller that kept it from an
    /// earlier process (`wisp run`'s cache): its written pages and hot
    /// blocks, bounded as a learned set is; pages only read are ignored.
    /// A set outside guest memory, or with too many hot blocks, is
    /// refused. Whether the set was kept (not if the image has one
    /// already).
    pub fn learn_kept(&self, kept: &WorkingSet) -> Result<bool> {
        kept.check(self.mem_size)?;
        let mut touched = memory::TouchedPages {
            read: Vec::new(),
            written: kept.written.clone(),
        };
        // Hot blocks stay hot: taken as written whole.
        touched.written.extend(
            kept.hot
                .iter()
                .map(|&b| (b * memory::BLOCK_PAGES, memory::BLOCK_PAGES)),
        );
        Ok(self.learn(WorkingSet::learned(&touched, &self.blocks)))
    }

    /// Which 2 MiB blocks hold data.
    pub(super) fn blocks(&self) -> &memory::Blocks {
        &self.blocks
    }

    /// The byte ranges a resettable VM has registered read-only: the
    /// agent's code block ([`AGENT_CODE_BLOCK`]), if it holds data, is not
    /// among the `hot` ranges copied whole, and KVM takes read-only slots.
    fn read_only_blocks(&self, hot: &[(u64, u64)]) -> Vec<(u64, u64)> {
        let (start, len) = AGENT_CODE_BLOCK;
        let copied = hot.iter().any(|&(s, l)| s < start + len && start < s + l);
        let usable = kvm::has_readonly_mem()
            && start + len <= self.mem_size
            && self.blocks.has_data(start / LARGE_PAGE_SIZE)
            && !copied;
        if usable {
            vec![(start, len)]
        } else {
            Vec::new()
        }
    }

    /// Maps fresh guest memory holding the snapshot's contents: the file,
    /// copy-on-write, where it has data, and anonymous memory (huge pages,
    /// as a fresh VM has) over large runs of 2 MiB blocks where it has none,
    /// so that memory the snapshot never used costs a restored VM no more
    /// to touch than a fresh one. `ws` is the working set the restore
    /// pre-faults ([`Prefault::WorkingSet`]), read once for all of it;
    /// `whole` are the ranges whose blocks the file's mapping may map whole
    /// (see [`memory::map_file_over`]).
    fn map_memory(&self, how: Prefault, ws: &WorkingSet, whole: &[(u64, u64)]) -> Result<GuestRam> {
        let mem = match how {
            Prefault::CopyToHugePages => memory::create(self.mem_size)?,
            Prefault::None | Prefault::WorkingSet => {
                let mem = memory::reserve(self.mem_size)?;
                self.map_memory_over(&mem, how, ws, whole)?;
                return Ok(mem);
            }
        };
        self.prepare(&mem, how, ws)?;
        Ok(mem)
    }

    /// Maps the snapshot over `mem`, guest RAM of this image's size, fresh
    /// or kept by a shell (see [`Image::map_memory`]; not for huge-page
    /// copies).
    fn map_memory_over(
        &self,
        mem: &GuestRam,
        how: Prefault,
        ws: &WorkingSet,
        whole: &[(u64, u64)],
    ) -> Result<()> {
        memory::map_file_over(mem, &self.memory, whole)?;
        memory::anonymous_over(mem, &self.blocks.anonymous_ranges())?;
        self.prepare(mem, how, ws)
    }

    /// Brings memory that reads as the snapshot file (or as zeroes, for
    /// huge-page copies) to the snapshot's contents and pre-faults it.
    fn prepare(&self, mem: &GuestRam, how: Prefault, ws: &WorkingSet) -> Result<()> {
        match how {
            Prefault::None => Ok(()),
            Prefault::WorkingSet => {
                self.copy_hot_blocks(mem, ws)?;
                // Writes first: copying a page not yet mapped replaces
                // nothing, so no VM's MMU notifier hears of it.
                memory::populate(mem, &ws.written, Populate::Write)?;
                memory::populate(mem, &ws.read, Populate::Read)
            }
            Prefault::CopyToHugePages => self.copy_data(mem),
        }
    }

    fn copy_data(&self, mem: &GuestRam) -> Result<()> {
        memory::copy_from_file(mem, &self.memory, &self.data)
    }

    /// Puts fresh memory (huge pages) over the hot blocks of `ws` and
    /// copies the snapshot's data there, so KVM maps each with one fault.
    fn copy_hot_blocks(&self, mem: &GuestRam, ws: &WorkingSet) -> Result<()> {
        if ws.hot.is_empty() {
            return Ok(());
        }
        let ranges = ws.hot_ranges();
        memory::anonymous_over(mem, &ranges)?;
        let data = memory::intersect_runs(&self.data, &memory::page_runs(&ranges));
        memory::copy_from_file(mem, &self.memory, &data)
    }
}

impl Vm {
    /// Writes a snapshot of this ready VM to `dir` (atomically replacing
    /// anything there). `module` is recorded as the module's name. With a
    /// `sample` invocation, a VM is restored from the new snapshot and runs
    /// it once (output discarded) to record the working set.
    ///
    /// Output the module wrote during boot and nobody took (with
    /// [`Vm::take_init_output`]) is part of the snapshot: every VM restored
    /// from it delivers that output with its first invocation, as this VM
    /// would.
    pub fn snapshot(
        &mut self,
        dir: &Path,
        module: &str,
        sample: Option<&Invocation>,
    ) -> Result<()> {
        let capture = self.capture()?;
        self.write_snapshot(capture, dir, module, sample)
    }

    /// Stops this ready VM between two instructions and saves the vCPU and
    /// channel state a snapshot needs: the part of [`Vm::snapshot`] that
    /// must happen on the thread that runs the VM.
    pub fn capture(&mut self) -> Result<Capture> {
        if self.state != State::Ready {
            return Err(Error::AlreadyUsed {
                restored: self.image.is_some(),
            });
        }
        self.quiesce()?;
        Ok(Capture {
            vcpu: VcpuState::save(&self.shell.vcpu)?,
            channel: self.channel.save(),
            init_output: InitOutput::of(&self.init_output),
            cpuid: self
                .shell
                .cpuid
                .as_ref()
                .map(|c| c.as_slice().to_vec())
                .unwrap_or_default(),
            epoch: self.epoch,
        })
    }

    /// Writes the snapshot `capture` saved of this VM, as [`Vm::snapshot`]
    /// does; any thread may call it (it runs no guest code unless there is
    /// a `sample`). Refused if the VM ran since the capture.
    pub fn write_snapshot(
        &self,
        capture: Capture,
        dir: &Path,
        module: &str,
        sample: Option<&Invocation>,
    ) -> Result<()> {
        if self.state != State::Ready || capture.epoch != self.epoch {
            return Err(Error::NotCaptured);
        }
        let mem_size = self.config.mem_size;
        let mut builder = Builder::new(dir)?;
        builder.section(VM_SECTION, &VmSection { mem_size })?;
        builder.section(VCPU_SECTION, &capture.vcpu)?;
        builder.section(CHANNEL_SECTION, &capture.channel)?;
        builder.section(INIT_OUTPUT_SECTION, &capture.init_output)?;
        if !capture.cpuid.is_empty() {
            builder.section(CPUID_SECTION, &capture.cpuid)?;
        }
        // Only pages the VM holds can differ from zero (or from the
        // snapshot it was restored from): the rest is never read, so a
        // large, mostly untouched guest memory costs nothing here.
        let candidates: Vec<Extent> = self
            .data_pages()?
            .into_iter()
            .map(|(start_page, pages)| Extent { start_page, pages })
            .collect();
        // SAFETY: `&self` is held for the whole call and the VM is stopped:
        // nothing runs the vCPU or writes guest memory (both take `&mut
        // self`) while the slice lives.
        let mem = unsafe { memory::as_slice(&self.mem) };
        builder.memory_within(mem, &candidates)?;
        // So that restores map the agent's code whole (see
        // `read_only_blocks`).
        wisp_snapshot::cache_in_huge_folios(&builder.memory_file()?, &[AGENT_CODE_BLOCK]);
        let working_set = match sample {
            None => WorkingSet::default(),
            Some(invocation) => {
                let file = builder.memory_file()?;
                let image = Image {
                    memory: Arc::new(file),
                    view: std::sync::OnceLock::new(),
                    learned: std::sync::OnceLock::new(),
                    id: next_image_id(),
                    mem_size,
                    vcpu: capture.vcpu,
                    channel: capture.channel,
                    working_set: WorkingSet::default(),
                    data: Vec::new(),
                    // Where the data is is not known yet: keep the file
                    // mapping everywhere.
                    blocks: memory::Blocks::all_data(mem_size),
                    module: None,
                    init_output: InitOutput::default(),
                    cpuid: None,
                };
                working_set::record(image, &self.config, invocation)?
            }
        };
        builder.section(WORKING_SET_SECTION, &working_set)?;
        if !working_set.hot.is_empty() {
            builder.section(HOT_BLOCKS_SECTION, &working_set.hot)?;
        }
        builder.meta(META_MODULE, module);
        builder.commit(&compat(), guest_cpu_features())?;
        Ok(())
    }

    /// Runs of guest pages that may hold data: those present in this
    /// process's page tables and, for a restored VM, the snapshot's. All of
    /// them if the page tables cannot be read: a process that is no longer
    /// dumpable (a daemon that dropped root) may not open its own
    /// `/proc/self/pagemap`.
    fn data_pages(&self) -> Result<Vec<(u64, u64)>> {
        let touched = match memory::touched_pages(&self.mem) {
            Ok(touched) => touched,
            Err(Error::Pagemap(_)) => return Ok(vec![(0, self.config.mem_size / PAGE_SIZE)]),
            Err(e) => return Err(e),
        };
        let mut runs = touched.read;
        runs.extend(touched.written);
        if let Some(image) = &self.image {
            runs.extend_from_slice(&image.data);
        }
        Ok(memory::merge_runs(runs))
    }

    /// Bytes of guest memory in use: for a VM restored from a snapshot, the
    /// snapshot's pages that hold data and the pages the guest wrote since;
    /// for a booted VM, the pages it touched that hold data. Where fresh
    /// anonymous memory backs the guest (a booted VM, a snapshot's blocks
    /// without data) the host hands out 2 MiB huge pages, so many more
    /// pages are present than the guest used: there only pages holding
    /// data count. Pages only read from the snapshot's holes are zero and
    /// not counted. A VM never gives memory back during an invocation, so
    /// after one this is its peak. Reads `/proc/self/pagemap`.
    pub fn memory_in_use(&self) -> Result<u64> {
        let touched = memory::touched_pages(&self.mem)?;
        // SAFETY: `&self` is held for the whole call: nothing runs the vCPU
        // or writes guest memory while the slice lives.
        let mem = unsafe { memory::as_slice(&self.mem) };
        let holding_data = |runs: &[(u64, u64)]| {
            runs.iter()
                .flat_map(|&(start, count)| start..start + count)
                .filter(|&page| {
                    let at = (page * PAGE_SIZE) as usize;
                    mem[at..at + PAGE_SIZE as usize].iter().any(|&b| b != 0)
                })
                .count() as u64
        };
        let pages = match &self.image {
            Some(image) => {
                // Written pages over the snapshot's data are private copies
                // of its pages: in use, whatever they hold now. Blocks
                // copied whole are present whole: there, as in the holes,
                // pages beyond the snapshot's data count if they hold any.
                let outside = memory::subtract_runs(&touched.written, &self.copied);
                let in_copied = memory::intersect_runs(&touched.written, &self.copied);
                let (mut copies, holes) = image.blocks.split(&outside);
                copies.extend_from_slice(&image.data);
                let mut unshared: Vec<(u64, u64)> =
                    holes.into_iter().flat_map(|(_, runs)| runs).collect();
                unshared.extend(memory::subtract_runs(&in_copied, &image.data));
                let copied: u64 = memory::merge_runs(copies).iter().map(|r| r.1).sum();
                copied + holding_data(&unshared)
            }
            None => {
                let mut runs = touched.written;
                runs.extend(touched.read);
                holding_data(&memory::merge_runs(runs))
            }
        };
        Ok(pages * PAGE_SIZE)
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
    pub fn restore_in(mut shell: Shell, image: &Arc<Image>, mut config: VmConfig) -> Result<Vm> {
        config.mem_size = image.mem_size;
        // For a VM that can be reset, KVM logs the pages the guest writes,
        // so a reset restores only those; except in the large holes, which
        // the guest touches as fast as a fresh VM's memory without the log,
        // and in the hot blocks copied ahead, which KVM could not map whole
        // under the log: a reset copies those back whole. The working set
        // is read once, so the slots, the copies and what the VM records of
        // them agree even if another VM teaches the image one meanwhile.
        let ws = image.working_set();
        let hot = match config.prefault {
            Prefault::WorkingSet => ws.hot_ranges(),
            Prefault::None | Prefault::CopyToHugePages => Vec::new(),
        };
        // Where KVM does not log writes, it maps a block whole where the
        // host does: all of a VM that is never reset, the code of one that
        // is (read-only to the guest).
        let (slots, whole) = if config.resettable {
            let code = image.read_only_blocks(&hot);
            let slots = Slots::around(
                image.mem_size,
                &image.blocks.anonymous_ranges(),
                &hot,
                &code,
            );
            (slots, code)
        } else {
            let all = vec![(0, image.mem_size)];
            (Slots::single(image.mem_size, false), all)
        };
        let t0 = Instant::now();
        let kept = match config.prefault {
            // Fresh huge pages, never the kept ones.
            Prefault::CopyToHugePages => shell.forget_memory().map(|()| None)?,
            Prefault::None | Prefault::WorkingSet => shell.reuse_memory(Some(image.id), &slots)?,
        };
        let (mem, attached) = match kept {
            Some(mem) => {
                image.map_memory_over(&mem, config.prefault, ws, &whole)?;
                (mem, true)
            }
            None => (image.map_memory(config.prefault, ws, &whole)?, false),
        };
        let t1 = Instant::now();
        if shell.cpuid.is_none() {
            match &image.cpuid {
                // The guest's own, as it booted. Should this KVM refuse it
                // (another kernel since), it gets the one KVM supports.
                Some(cpuid) => {
                    if shell.set_cpuid(cpuid.clone()).is_err() {
                        shell.ensure_cpuid()?;
                    }
                }
                None => shell.ensure_cpuid()?,
            }
        }
        if attached {
            // The slots are the kept ones: only their log is stale.
            slots.clear_log(&shell)?;
        } else {
            slots.attach(&shell, &mem)?;
        }
        image.vcpu.restore(&shell.vcpu)?;
        let mut channel = HostChannel::new()?;
        channel.restore(&image.channel);
        let pages_ahead = match config.prefault {
            Prefault::WorkingSet => ws.pages_ahead(),
            Prefault::None | Prefault::CopyToHugePages => 0,
        };
        let mut vm = Vm::assemble(shell, (mem, slots), channel, config);
        // Copied whole: private to this VM.
        let copied = memory::page_runs(&hot);
        vm.note_written(&copied);
        vm.copied = copied;
        vm.init_output = image.init_output.to_io();
        vm.image = Some(Arc::clone(image));
        vm.restore_timings = RestoreTimings {
            shell: Duration::ZERO,
            memory: t1 - t0,
            state: t1.elapsed(),
            pages_ahead,
        };
        Ok(vm)
    }

    /// Returns a restored VM to its snapshot's state, whatever its last
    /// invocation did: the pages the guest wrote (KVM's dirty log) and the
    /// host wrote (the channel's record) are copied back from the snapshot
    /// file where it has data, and zeroed (or, for a block mostly written,
    /// dropped) where it has none; what the guest touched in the large
    /// holes, which KVM does not log, is dropped; then the vCPU and channel
    /// state are reloaded. Pages only read stay mapped, with KVM's mappings
    /// of them, so the next invocation does not fault them in again; so do
    /// pages written, under manual protection, up to [`REPROTECT_ABOVE`].
    pub fn reset(&mut self) -> Result<()> {
        let image = self.image.clone().ok_or(Error::NotRestored("be reset"))?;
        if !self.config.resettable {
            return Err(ConfigError::NotResettable.into());
        }
        let t0 = Instant::now();
        if !kvm::has_sync_regs() {
            // Finish whatever port I/O the last exit left pending, so KVM
            // does not complete it on top of the state loaded below.
            self.quiesce()?;
        }
        let dirty = self.slots.dirty_pages(&self.shell)?;
        self.note_written(&dirty);
        let mut written = dirty.clone();
        written.extend(memory::page_runs(&self.channel.take_host_writes()));
        let (data, holes) = image.blocks.split(&memory::merge_runs(written));
        let view = image.view()?;
        view.copy_into(&self.mem, &data)?;
        view.copy_into(&self.mem, &self.copied)?;
        let dropped = memory::clear_holes(&self.mem, &holes)?;
        for &(start, pages) in &dropped {
            self.note_dropped(start, pages);
        }
        memory::drop_runs(&self.mem, &self.slots.touched_unlogged(&self.mem)?)?;
        // Under manual protection the log keeps growing: pages logged once
        // are copied back at every reset without costing the guest an exit
        // each time it writes them again. Past a bound, copying back pages
        // the guest may no longer write costs more than those exits: then
        // the log starts over.
        let logged: u64 = dirty.iter().map(|r| r.1).sum();
        if logged > REPROTECT_ABOVE {
            self.slots.reprotect(&self.shell, &dirty)?;
        } else {
            // Dropped pages hold nothing to copy back any more.
            self.slots.reprotect(&self.shell, &dropped)?;
        }
        let t1 = Instant::now();
        image.vcpu.reload(&mut self.shell.vcpu)?;
        self.channel.restore(&image.channel);
        self.state = State::Ready;
        self.epoch += 1;
        self.output_bytes = 0;
        self.stdin_done = false;
        self.init_output = image.init_output.to_io();
        self.restore_timings = RestoreTimings {
            shell: Duration::ZERO,
            memory: t1 - t0,
            state: t1.elapsed(),
            pages_ahead: 0,
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

    /// Bytes present now in the guest memory KVM does not log (the large
    /// holes of a resettable VM), which a reset drops: a check for tests
    /// that touches there take the fast path and go back to the host.
    #[doc(hidden)]
    pub fn unlogged_resident_bytes(&self) -> Result<u64> {
        let runs = self.slots.touched_unlogged(&self.mem)?;
        Ok(runs.iter().map(|r| r.1).sum::<u64>() * PAGE_SIZE)
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

    /// Records the page `runs` as written: private to this VM.
    fn note_written(&mut self, runs: &[(u64, u64)]) {
        let words = (self.config.mem_size / PAGE_SIZE).div_ceil(64) as usize;
        self.written.resize(words, 0);
        for &(start, pages) in runs {
            for page in start..start + pages {
                if let Some(word) = self.written.get_mut((page / 64) as usize) {
                    *word |= 1 << (page % 64);
                }
            }
        }
    }

    /// Gives guest memory back to the host and returns the VM as a shell,
    /// ready to be restored into again: much cheaper than destroying the
    /// VM and creating another (KVM's VM creation and teardown take the
    /// process-wide mm locks). The released RAM stays registered with KVM
    /// for a restore of the same snapshot, which maps the snapshot over it
    /// and skips registering memory; a restore of another image
    /// unregisters it first ([`Shell::forget_memory`]). Every piece of
    /// vCPU state a restore depends on is loaded by it; the pending port
    /// I/O of the last exit is completed here so it cannot land on the
    /// next restore's state.
    pub fn into_shell(mut self) -> Result<Shell> {
        self.quiesce()?;
        memory::release(&self.mem)?;
        let Vm {
            mut shell,
            mem,
            slots,
            image,
            ..
        } = self;
        shell.kept = Some(KeptMemory {
            mem,
            slots,
            owner: image.map_or(Owner::Booted, |i| Owner::Image(i.id)),
        });
        Ok(shell)
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
