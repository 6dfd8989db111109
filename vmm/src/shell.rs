//! An empty micro-VM: a KVM VM and its one vCPU, with no memory yet.
//!
//! Creating a VM and a vCPU is most of a restore's fixed cost (~0.5 ms
//! here), and neither depends on the function, so shells can be made ahead
//! of time and filled with a snapshot's memory and vCPU state when needed.

use kvm_bindings::{
    kvm_enable_cap, CpuId, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, KVM_CAP_SPLIT_IRQCHIP,
    KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
};
use kvm_ioctls::{VcpuFd, VmFd};

use crate::arch;
use crate::error::{Error, Result};
use crate::kvm;
use crate::memory::{self, GuestRam};
use crate::vm::{Image, Slots};

/// A VM with one vCPU, and no guest memory in use: none at all, the
/// released RAM of the VM that used it last, still registered with KVM
/// (see [`Shell::holds_memory_for`]), or RAM registered ahead of any VM
/// ([`Shell::register_memory`]).
pub struct Shell {
    pub(crate) vcpu: VcpuFd,
    // Dropped after the vCPU.
    pub(crate) vm: VmFd,
    /// The CPUID the vCPU was given, once it has one.
    pub(crate) cpuid: Option<CpuId>,
    /// Whether KVM's dirty log is under manual protection here: reading it
    /// neither clears it nor write-protects the pages again, so a page the
    /// guest rewrites on every invocation costs one exit, not one per
    /// invocation (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2).
    pub(crate) manual_dirty_log: bool,
    /// Guest RAM left registered by the last VM, its pages given back;
    /// dropped (unmapped) after the VM fd is closed.
    pub(crate) kept: Option<KeptMemory>,
}

/// Guest RAM registered with KVM and kept in a shell, none of its pages
/// present: registering memory costs a restore more than mapping it
/// (slots' bookkeeping and a grace period each), so a restore that may
/// reuse it maps the snapshot over this RAM instead and keeps its slots.
pub(crate) struct KeptMemory {
    /// Released: it holds no page and maps no file.
    pub(crate) mem: GuestRam,
    pub(crate) slots: Slots,
    /// Which restores may reuse it.
    pub(crate) owner: Owner,
}

/// Which restores may reuse a shell's kept memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Any image's: no guest has run in it ([`Shell::register_memory`]).
    Nobody,
    /// Only restores of the image it was restored from, by [`Image::id`],
    /// so KVM state a guest may have left behind it (shadow copies of its
    /// page tables, which it cannot write, are not dropped with the
    /// memory) carries nothing between functions that a reset would not
    /// carry between invocations.
    Image(u64),
    /// None: a booted VM's, which the next restore unregisters.
    Booted,
}

impl KeptMemory {
    /// Whether a VM laid out as `slots` may use this memory: restored
    /// from image `image` (by [`Image::id`]), or booted (`None`).
    fn reusable_for(&self, image: Option<u64>, slots: &Slots) -> bool {
        let owned = match (self.owner, image) {
            (Owner::Nobody, _) => true,
            (Owner::Image(owner), Some(id)) => owner == id,
            (Owner::Image(_), None) | (Owner::Booted, _) => false,
        };
        owned && self.slots == *slots
    }
}

impl Shell {
    /// Creates the VM and its vCPU, with the CPUID KVM supports.
    pub fn new() -> Result<Shell> {
        let mut shell = Shell::without_cpuid()?;
        shell.set_cpuid(arch::supported_cpuid(kvm::kvm()?)?.clone())?;
        Ok(shell)
    }

    /// Creates the VM and its vCPU without giving the vCPU a CPUID yet:
    /// a restore gives it its snapshot's (the one the guest booted with),
    /// a boot the one KVM supports. Saves asking KVM what it supports, a
    /// slow ioctl on PVM hosts (the host kernel runs `cpuid` for every
    /// leaf), in a process that only restores.
    pub fn without_cpuid() -> Result<Shell> {
        let kvm = kvm::kvm()?;
        let vm = kvm.create_vm().map_err(Error::kvm("CREATE_VM"))?;
        // Intel needs a TSS region for real-mode emulation; we never run in
        // real mode, and other hosts reject or ignore it, so failure is fine.
        let _ = vm.set_tss_address(0xfffb_d000);
        // The guest takes no interrupts, but a vCPU without KVM's local
        // APIC flips a kernel-wide static key (`kvm_has_noapic_vcpu`) as
        // the first such vCPU is made and the last destroyed: a text patch
        // with IPIs to every CPU, ~0.15 ms each way here, on every `wisp
        // run`. With a split IRQ chip (APIC in KVM, no PIC or IOAPIC, whose
        // full in-kernel variant makes closing a VM ~16 ms) creating the
        // vCPU takes ~0.04 ms instead of ~0.2. Refused by a KVM without
        // it, which then keeps the old cost.
        let split_irqchip = kvm_enable_cap {
            cap: KVM_CAP_SPLIT_IRQCHIP,
            // IOAPIC routes; none are used.
            args: [0, 0, 0, 0],
            ..Default::default()
        };
        let _ = vm.enable_cap(&split_irqchip);
        let vcpu = vm.create_vcpu(0).map_err(Error::kvm("CREATE_VCPU"))?;
        let manual = kvm_enable_cap {
            cap: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
            // Protection on, without KVM_DIRTY_LOG_INITIALLY_SET: a new
            // slot starts with an empty log.
            args: [u64::from(KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE), 0, 0, 0],
            ..Default::default()
        };
        // A KVM without it logs the classic way; resets work either way.
        let manual_dirty_log = vm.enable_cap(&manual).is_ok();
        Ok(Shell {
            vcpu,
            vm,
            cpuid: None,
            manual_dirty_log,
            kept: None,
        })
    }

    /// Registers `mem_size` bytes of guest RAM with KVM ahead (in place of
    /// any kept), laid out as a restore without a dirty log (of a VM that
    /// is never reset) or a boot lays it out: a restore of any snapshot of
    /// that size then only maps the snapshot over it. For a process that
    /// makes its shell while it still looks for the snapshot.
    pub fn register_memory(&mut self, mem_size: u64) -> Result<()> {
        self.forget_memory()?;
        let mem = memory::reserve(mem_size)?;
        let slots = Slots::single(mem_size, false);
        slots.attach(self, &mem)?;
        self.kept = Some(KeptMemory {
            mem,
            slots,
            owner: Owner::Nobody,
        });
        Ok(())
    }

    /// Whether this shell keeps registered guest RAM that a restore of
    /// `image` reuses because the last VM in it was restored from `image`.
    pub fn holds_memory_for(&self, image: &Image) -> bool {
        self.kept
            .as_ref()
            .is_some_and(|k| k.owner == Owner::Image(image.id()))
    }

    /// Whether this shell keeps registered guest RAM (of any image).
    pub fn holds_memory(&self) -> bool {
        self.kept.is_some()
    }

    /// Unregisters and unmaps the guest RAM the last VM left, if any: a
    /// restore of another image into this shell would do it first.
    pub fn forget_memory(&mut self) -> Result<()> {
        if let Some(kept) = self.kept.take() {
            kept.slots.detach(self)?;
        }
        Ok(())
    }

    /// The kept memory, still registered as `slots`, if a VM laid out so
    /// may use it: restored from image `image` (by [`Image::id`]) or booted
    /// (`None`). Any other kept memory is unregistered.
    pub(crate) fn reuse_memory(
        &mut self,
        image: Option<u64>,
        slots: &Slots,
    ) -> Result<Option<GuestRam>> {
        match self.kept.take() {
            Some(kept) if kept.reusable_for(image, slots) => Ok(Some(kept.mem)),
            kept => {
                self.kept = kept;
                self.forget_memory().map(|()| None)
            }
        }
    }

    /// Gives the vCPU `cpuid`.
    pub(crate) fn set_cpuid(&mut self, cpuid: CpuId) -> Result<()> {
        self.vcpu
            .set_cpuid2(&cpuid)
            .map_err(Error::kvm("SET_CPUID2"))?;
        self.cpuid = Some(cpuid);
        Ok(())
    }

    /// Gives the vCPU the CPUID KVM supports, unless it has one.
    pub(crate) fn ensure_cpuid(&mut self) -> Result<()> {
        if self.cpuid.is_none() {
            self.set_cpuid(arch::supported_cpuid(kvm::kvm()?)?.clone())?;
        }
        Ok(())
    }
}
