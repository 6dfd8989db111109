//! wisp: run WebAssembly functions in KVM micro-VMs.
//!
//! This crate is the host program: the CLI (and, later, the daemon). The
//! micro-VM itself is `wisp-vmm`; the guest is `agent/`; their contract is
//! `wisp-abi`.

pub mod bench;
pub mod compile;
pub mod stats;
pub mod stdio;
pub mod units;
