//! Deliberate protocol violations, selected by the host's test-only
//! `TestMode`, so the host's defences can be tested against a real guest.

use core::arch::asm;

use wisp_abi::boot::TestMode;
use wisp_abi::layout::{CHANNEL_BUF_SIZE, TX_DESC_ADDR};
use wisp_abi::msg::Kind;

use crate::channel::Channel;
use crate::port;

/// Misbehaves as `mode` asks; returns only for [`TestMode::None`].
pub fn run(mode: TestMode, channel: &mut Channel) {
    match mode {
        TestMode::None => return,
        TestMode::BogusPort => port::out32(0x3f8, 0x41),
        TestMode::BogusPointer | TestMode::BogusLength => {
            channel.send(Kind::Stdout, b"x");
            // Rewrite the descriptor the message went out on (tx buffer 0).
            let (addr, len) = if mode == TestMode::BogusPointer {
                (0xdead_0000_0000u64, 16u32)
            } else {
                (wisp_abi::layout::TX_BUF_ADDR, CHANNEL_BUF_SIZE as u32 * 64)
            };
            // SAFETY: descriptor 0 of the tx table is agent-owned memory; the
            // whole point is to hand the host a lie.
            unsafe {
                core::ptr::write_volatile(TX_DESC_ADDR as *mut u64, addr);
                core::ptr::write_volatile((TX_DESC_ADDR + 8) as *mut u32, len);
            }
            channel.notify();
        }
        TestMode::PageFault => {
            // SAFETY: page 0 is unmapped; this faults by design (the host's
            // test expects the fault address 8).
            #[allow(clippy::manual_dangling_ptr)]
            let _ = unsafe { core::ptr::read_volatile(8 as *const u64) };
        }
        // SAFETY: `hlt` at ring 3 raises #GP by design.
        TestMode::PrivilegedInstruction => unsafe { asm!("hlt") },
        TestMode::Spin => loop {
            core::hint::spin_loop();
        },
    };
    crate::rt::fatal("misbehaviour was not stopped by the host");
}
