//! x86-64 machine state the host builds for the agent: identity page
//! tables, descriptor tables with ring-0 fault stubs, and the vCPU's
//! registers for a direct entry into 64-bit ring 3.

mod gdt;
mod paging;
mod persist;
mod regs;

pub use gdt::{exception_name, write_system_tables, EXCEPTIONS_WITH_ERROR_CODE};
pub use paging::write_page_tables;
pub use persist::VcpuState;
pub use regs::{configure_vcpu, guest_xcr0, supported_cpuid};
