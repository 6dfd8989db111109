//! Saving and restoring the vCPU's architectural state for snapshots.
//!
//! The guest runs at ring 3 without interrupts, timers or devices, so its
//! whole CPU state is the general registers, the system registers, the
//! FPU/SSE/AVX state (XSAVE), XCR0 and a few MSRs.

use kvm_bindings::{kvm_msr_entry, kvm_regs, kvm_sregs, kvm_xcrs, kvm_xsave, Msrs};
use kvm_ioctls::{SyncReg, VcpuFd};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// MSRs the guest's execution depends on beyond what the system registers
/// carry (EFER and the FS/GS bases are in `kvm_sregs`): the page attribute
/// table, which decides the memory type of every guest mapping. The guest
/// uses no `syscall`, no TSC deadline and no APIC, so nothing else matters.
const SAVED_MSRS: [u32; 1] = [
    0x277, // IA32_PAT
];

/// A vCPU's state at a point where it is stopped between instructions.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    regs: kvm_regs,
    sregs: kvm_sregs,
    xsave: kvm_xsave,
    xcrs: kvm_xcrs,
    msrs: Vec<kvm_msr_entry>,
}

impl VcpuState {
    /// Reads the state of `vcpu`. Any port I/O the vCPU exited for must have
    /// been completed first (see `Vm::quiesce`): until then KVM's copy of
    /// RIP and the registers may not reflect the finished instruction.
    pub fn save(vcpu: &VcpuFd) -> Result<VcpuState> {
        let entries: Vec<kvm_msr_entry> = SAVED_MSRS
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs =
            Msrs::from_entries(&entries).map_err(|_| Error::CpuState("too many MSRs to save"))?;
        let read = vcpu.get_msrs(&mut msrs).map_err(Error::kvm("GET_MSRS"))?;
        if read != entries.len() {
            return Err(Error::CpuState("KVM could not read every saved MSR"));
        }
        Ok(VcpuState {
            regs: vcpu.get_regs().map_err(Error::kvm("GET_REGS"))?,
            sregs: vcpu.get_sregs().map_err(Error::kvm("GET_SREGS"))?,
            xsave: vcpu.get_xsave().map_err(Error::kvm("GET_XSAVE"))?,
            xcrs: vcpu.get_xcrs().map_err(Error::kvm("GET_XCRS"))?,
            msrs: msrs.as_slice().to_vec(),
        })
    }

    /// Loads the state guest code can change back into `vcpu`, which was
    /// restored from this state before: registers, system registers
    /// (segments, CR2, CPL after a fault) and the FPU/SSE/AVX state. XCR0
    /// and MSRs are skipped: `xsetbv` and `wrmsr` are privileged, and the
    /// only ring-0 code, the fault stubs, writes neither.
    ///
    /// Every vCPU ioctl costs a `vcpu_load`, ~10 µs on the PVM hosts
    /// measured (it reads host MSRs, which traps to their hypervisor), so
    /// with `KVM_CAP_SYNC_REGS` the registers and system registers are
    /// queued in the vCPU's run structure instead, and KVM loads them at
    /// the next `KVM_RUN` before anything else: one ioctl instead of three,
    /// and no run to complete the last exit's port I/O first, which KVM
    /// then finds no longer at RIP and drops (hardware KVM's fast path
    /// checks that RIP; PVM emulates the `out` whole before it exits).
    /// Without the capability the caller must have quiesced the vCPU.
    pub fn reload(&self, vcpu: &mut VcpuFd) -> Result<()> {
        if crate::kvm::has_sync_regs() {
            let queued = vcpu.sync_regs_mut();
            queued.regs = self.regs;
            queued.sregs = self.sregs;
            vcpu.set_sync_dirty_reg(SyncReg::Register);
            vcpu.set_sync_dirty_reg(SyncReg::SystemRegister);
        } else {
            vcpu.set_sregs(&self.sregs)
                .map_err(Error::kvm("SET_SREGS"))?;
            vcpu.set_regs(&self.regs).map_err(Error::kvm("SET_REGS"))?;
        }
        // SAFETY: as in `restore`.
        unsafe { vcpu.set_xsave(&self.xsave) }.map_err(Error::kvm("SET_XSAVE"))
    }

    /// Loads this state into `vcpu`, whose CPUID is already set.
    pub fn restore(&self, vcpu: &VcpuFd) -> Result<()> {
        // System registers first: XSAVE and XCR0 are only valid once
        // CR4.OSXSAVE is set.
        vcpu.set_sregs(&self.sregs)
            .map_err(Error::kvm("SET_SREGS"))?;
        if self.xcrs.nr_xcrs > 0 {
            vcpu.set_xcrs(&self.xcrs).map_err(Error::kvm("SET_XCRS"))?;
        }
        // SAFETY: the buffer is a full 4 KiB `kvm_xsave` obtained from
        // KVM_GET_XSAVE on a vCPU of this design, whose XCR0 never enables
        // the AMX components, the only ones that need a larger buffer.
        unsafe { vcpu.set_xsave(&self.xsave) }.map_err(Error::kvm("SET_XSAVE"))?;
        let msrs = Msrs::from_entries(&self.msrs)
            .map_err(|_| Error::CpuState("too many MSRs to restore"))?;
        let written = vcpu.set_msrs(&msrs).map_err(Error::kvm("SET_MSRS"))?;
        if written != self.msrs.len() {
            return Err(Error::CpuState("KVM could not write every saved MSR"));
        }
        vcpu.set_regs(&self.regs).map_err(Error::kvm("SET_REGS"))
    }
}
