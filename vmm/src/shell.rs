//! An empty micro-VM: a KVM VM and its one vCPU, with no memory yet.
//!
//! Creating a VM and a vCPU is most of a restore's fixed cost (~0.5 ms
//! here), and neither depends on the function, so shells can be made ahead
//! of time and filled with a snapshot's memory and vCPU state when needed.

use kvm_bindings::CpuId;
use kvm_ioctls::{VcpuFd, VmFd};

use crate::arch;
use crate::error::{Error, Result};
use crate::kvm;

/// A VM with one vCPU, and no guest memory.
pub struct Shell {
    pub(crate) vcpu: VcpuFd,
    // Dropped after the vCPU.
    pub(crate) vm: VmFd,
    /// The CPUID the vCPU was given, once it has one.
    pub(crate) cpuid: Option<CpuId>,
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
        let vcpu = vm.create_vcpu(0).map_err(Error::kvm("CREATE_VCPU"))?;
        Ok(Shell {
            vcpu,
            vm,
            cpuid: None,
        })
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
