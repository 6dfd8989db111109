//! One wisp micro-VM.
//!
//! A [`Vm`] is a KVM VM with one vCPU and no devices but a virtqueue
//! channel. The host builds the whole machine state itself (page tables,
//! descriptor tables, registers), loads the guest agent and a precompiled
//! wasm module, and enters the agent at ring 3. [`Vm::boot`] runs the agent
//! until it reports ready; [`Vm::invoke`] sends one request and serves the
//! guest's port writes until the module exits, traps, faults or times out.
//!
//! A ready VM can be written to a snapshot ([`Vm::snapshot`]); an [`Image`]
//! of it restores VMs copy-on-write ([`Vm::restore`], or
//! [`Vm::restore_in`] a pre-created [`Shell`]) and [`Vm::reset`] returns a
//! used one to the snapshot's state in place.
//!
//! The guest is untrusted: every value it hands the host is validated and
//! every failure is an [`Error`] for that run only.

mod arch;
mod channel;
mod error;
mod files;
/// Test-only entry points for the fuzz targets in `fuzz/`; not an API.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod io;
mod kvm;
mod loader;
mod memory;
mod pagemap;
pub mod seccomp;
mod shell;
mod timer;
mod vm;

pub use error::{Blame, ConfigError, DescriptorProblem, Error, FilesError, ProtocolError, Result};
pub use files::{Files, FilesBuilder, SCRATCH_DIR};
pub use io::{refuse_fs_call, BufferIo, GuestIo};
pub use kvm::{
    assume_guest_cpu_features, guest_cpu_features, has_sync_regs, open_kvm,
    probe_guest_cpu_features,
};
pub use loader::AGENT_ELF;
pub use shell::Shell;
pub use vm::{
    compat, BootTimings, Capture, Image, Invocation, Outcome, Prefault, RestoreTimings, Vm,
    VmConfig, WorkingSet, INIT_STDERR_TAIL,
};
pub use wisp_abi::boot::TestMode;
pub use wisp_snapshot::{FileStamp, MemoryCheck};
