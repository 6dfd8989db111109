//! The contract between the wisp host (`wisp-vmm`) and the guest agent.
//!
//! Everything both sides must agree on lives here and nowhere else: where
//! things sit in guest memory ([`layout`]), which I/O ports mean what
//! ([`ports`]), the boot record the host leaves for the agent ([`boot`]) and
//! the messages carried over the virtqueue channel ([`msg`]).
//!
//! The crate is `no_std` and allocation-free so the freestanding agent can use
//! it. Decoding never trusts its input: the host decodes what an untrusted
//! guest wrote, so every length is bounds-checked and every error is a value.
#![no_std]

pub mod boot;
pub mod cpu;
pub mod files;
pub mod hostfs;
pub mod layout;
pub mod msg;
pub mod paths;
pub mod ports;
pub mod wasi;

/// Version of this contract. The host refuses to run an agent built against a
/// different version (the agent reports it in its boot handshake).
pub const ABI_VERSION: u32 = 5;
