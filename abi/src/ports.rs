//! I/O ports the agent writes with `out` (each write is one VM exit).
//!
//! The guest runs at ring 3 with IOPL 3, so `out` is allowed there and
//! always traps to the host. No port is ever read with `in`.

/// "The channel has work": the host drains the guest→host queue and, if the
/// guest asked for input, fills the host→guest queue before resuming.
/// The 32-bit value written is ignored.
pub const NOTIFY: u16 = 0x10;

/// Written by the ring-0 exception stubs: the 8-bit value is the exception
/// vector. The interrupt frame is on the exception stack at the guest's RSP.
pub const FAULT: u16 = 0x11;

/// The agent panicked or hit an unrecoverable error. The 32-bit value is the
/// length of a UTF-8 message the agent wrote at
/// [`crate::layout::PANIC_MSG_ADDR`] (at most [`crate::layout::PANIC_MSG_MAX`]).
pub const PANIC: u16 = 0x12;
