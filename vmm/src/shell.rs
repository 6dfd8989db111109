//! An empty micro-VM: a KVM VM and its one vCPU, with no memory yet.
//!
//! Creating a VM and a vCPU is most of a restore's fixed cost (~0.5 ms
//! here), and neither depends on the function, so shells can be made ahead
//! of time and filled with a snapshot's memory and vCPU state when needed.

use kvm_ioctls::{VcpuFd, VmFd};

use crate::arch;
use crate::error::{Error, Result};
use crate::kvm;

/// A VM with one vCPU whose CPUID is set, and no guest memory.
pub struct Shell {
    pub(crate) vcpu: VcpuFd,
    // Dropped after the vCPU.
    pub(crate) vm: VmFd,
}

impl Shell {
    /// Creates the VM and its vCPU.
    pub fn new() -> Result<Shell> {
        let kvm = kvm::kvm()?;
        let vm = kvm.create_vm().map_err(Error::kvm("CREATE_VM"))?;
        // Intel needs a TSS region for real-mode emulation; we never run in
        // real mode, and other hosts reject or ignore it, so failure is fine.
        let _ = vm.set_tss_address(0xfffb_d000);
        let vcpu = vm.create_vcpu(0).map_err(Error::kvm("CREATE_VCPU"))?;
        arch::set_cpuid(kvm, &vcpu)?;
        Ok(Shell { vcpu, vm })
    }
}
