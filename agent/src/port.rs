//! Port I/O: the agent's only way to reach the host. Each `out` is a VM exit.

use core::arch::asm;

/// Writes a 32-bit value to `port`.
pub fn out32(port: u16, value: u32) {
    // SAFETY: the agent runs with IOPL 3, so `out` is permitted at ring 3,
    // and the host resumes us after handling it. While it does, the host
    // reads and writes our memory (the rings, the buffers, the panic
    // page), so the asm is not `nomem`: that would let the compiler move a
    // message's stores after the exit that publishes it, or keep values
    // the host changed in registers across it.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack, preserves_flags))
    };
}
