//! wisp: run WebAssembly functions in KVM micro-VMs.
//!
//! This crate is the host program: the CLI, the daemon and its client. The
//! micro-VM itself is `wisp-vmm`; the guest is `agent/`; their contract is
//! `wisp-abi`.

pub mod api;
pub mod client;
pub mod compile;
pub mod daemon;
pub mod guest_cpu;
pub mod hostfs;
pub mod module_file;
pub mod run_cache;
pub mod run_report;
pub mod runtimes;
pub mod seccomp;
pub mod stats;
pub mod stdio;
pub mod units;
