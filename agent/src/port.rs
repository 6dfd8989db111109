//! Port I/O: the agent's only way to reach the host. Each `out` is a VM exit.

use core::arch::asm;

/// Writes a 32-bit value to `port`.
pub fn out32(port: u16, value: u32) {
    // SAFETY: the agent runs with IOPL 3, so `out` is permitted at ring 3; it
    // touches no memory and the host resumes us after handling it.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    };
}
