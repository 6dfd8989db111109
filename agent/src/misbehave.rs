//! Deliberate protocol violations, selected by the host's test-only
//! `TestMode`, so the host's defences can be tested against a real guest.
//!
//! Most modes write the rings and buffers directly rather than through
//! [`Channel`], the way a hostile guest would; the agent never recovers
//! from them, so the channel's own bookkeeping going stale does not matter.

use alloc::vec;
use core::arch::asm;
use core::ptr::{read_volatile, write_volatile};

use wisp_abi::boot::{BootInfo, TestMode};
use wisp_abi::layout::*;
use wisp_abi::msg::Kind;
use wisp_abi::ports;

use crate::channel::{Channel, MAX_PAYLOAD};
use crate::port;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;

/// Writes descriptor `index` of the table at `table`.
fn set_desc(table: u64, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let d = table + u64::from(index) * 16;
    // SAFETY: the descriptor tables are agent-owned ring memory and index
    // is below QUEUE_SIZE.
    unsafe {
        write_volatile(d as *mut u64, addr);
        write_volatile((d + 8) as *mut u32, len);
        write_volatile((d + 12) as *mut u16, flags);
        write_volatile((d + 14) as *mut u16, next);
    }
}

/// Makes `head` available in the ring at `avail`, after what is there.
fn publish(avail: u64, head: u16) {
    // SAFETY: the available rings are agent-owned ring memory.
    unsafe {
        let idx = read_volatile((avail + 2) as *const u16);
        write_volatile(
            (avail + 4 + u64::from(idx % QUEUE_SIZE) * 2) as *mut u16,
            head,
        );
        write_volatile((avail + 2) as *mut u16, idx.wrapping_add(1));
    }
}

/// Writes a message header (and `payload`) at `addr` in a tx buffer.
fn write_message(addr: u64, kind: u32, len: u32, payload: &[u8]) {
    // SAFETY: callers pass the start of an agent-owned tx buffer, which is
    // far larger than a header and the short payloads used here.
    unsafe {
        write_volatile(addr as *mut u32, kind);
        write_volatile((addr + 4) as *mut u32, len);
        for (i, b) in payload.iter().enumerate() {
            write_volatile((addr + 8 + i as u64) as *mut u8, *b);
        }
    }
}

/// Queues tx descriptor 0 over tx buffer 0 with a `len`-byte descriptor
/// and a header saying `kind`, `header_len`; then notifies.
fn send_raw(kind: u32, header_len: u32, desc_len: u32, payload: &[u8]) {
    write_message(TX_BUF_ADDR, kind, header_len, payload);
    set_desc(TX_DESC_ADDR, 0, TX_BUF_ADDR, desc_len, 0, 0);
    publish(TX_AVAIL_ADDR, 0);
    notify();
}

fn notify() {
    port::out32(ports::NOTIFY, 0);
}

fn out8(port: u16, value: u8) {
    // SAFETY: IOPL 3 permits `out` at ring 3; it touches no memory.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack)) };
}

/// Rewrites rx descriptor 0, the first the host fills, then asks for
/// stdin so the host writes through it.
fn rx_through(channel: &mut Channel, addr: u64, len: u32, flags: u16, next: u16) {
    set_desc(RX_DESC_ADDR, 0, addr, len, flags, next);
    channel.send(Kind::StdinRequest, &[]);
    channel.notify();
}

/// Misbehaves as `mode` asks; returns only for modes that misbehave later
/// (or not at all).
pub fn run(mode: TestMode, boot: &BootInfo, channel: &mut Channel) {
    match mode {
        TestMode::None | TestMode::UnknownKindAfterRequest => return,
        TestMode::BogusPort => port::out32(0x3f8, 0x41),
        TestMode::BogusPointer | TestMode::BogusLength => {
            channel.send(Kind::Stdout, b"x");
            // Rewrite the descriptor the message went out on (tx buffer 0).
            let (addr, len) = if mode == TestMode::BogusPointer {
                (0xdead_0000_0000u64, 16u32)
            } else {
                (TX_BUF_ADDR, CHANNEL_BUF_SIZE as u32 * 64)
            };
            // SAFETY: descriptor 0 of the tx table is agent-owned memory; the
            // whole point is to hand the host a lie.
            unsafe {
                write_volatile(TX_DESC_ADDR as *mut u64, addr);
                write_volatile((TX_DESC_ADDR + 8) as *mut u32, len);
            }
            channel.notify();
        }
        TestMode::PageFault => {
            // SAFETY: page 0 is unmapped; this faults by design (the host's
            // test expects the fault address 8).
            #[allow(clippy::manual_dangling_ptr)]
            let _ = unsafe { read_volatile(8 as *const u64) };
        }
        // SAFETY: `hlt` at ring 3 raises #GP by design.
        TestMode::PrivilegedInstruction => unsafe { asm!("hlt") },
        TestMode::Spin => loop {
            core::hint::spin_loop();
        },
        TestMode::PortWidth => out8(ports::NOTIFY, 0),
        TestMode::PortRead => {
            let _value: u32;
            // SAFETY: IOPL 3 permits `in` at ring 3; the host ends the run.
            unsafe {
                asm!("in eax, dx", in("dx") ports::NOTIFY, out("eax") _value, options(nomem, nostack))
            };
        }
        TestMode::ForgedFault => out8(ports::FAULT, 14),
        TestMode::FaultBadVector => out8(ports::FAULT, 200),
        TestMode::PanicHugeLength => {
            // SAFETY: the panic page is the agent's to write.
            unsafe { core::ptr::write_bytes(PANIC_MSG_ADDR as *mut u8, b'A', PAGE_SIZE as usize) };
            port::out32(ports::PANIC, u32::MAX);
        }
        TestMode::DescriptorLoop => {
            write_message(TX_BUF_ADDR, Kind::Stdout as u32, 1, b"x");
            set_desc(TX_DESC_ADDR, 0, TX_BUF_ADDR, 9, F_NEXT, 1);
            set_desc(TX_DESC_ADDR, 1, TX_BUF_ADDR, 9, F_NEXT, 0);
            publish(TX_AVAIL_ADDR, 0);
            notify();
        }
        TestMode::IndirectDescriptor => {
            // Buffer 1 holds a one-entry table pointing at a valid message
            // in buffer 0.
            let table = TX_BUF_ADDR + CHANNEL_BUF_SIZE;
            write_message(TX_BUF_ADDR, Kind::Stdout as u32, 1, b"x");
            set_desc(table, 0, TX_BUF_ADDR, 9, 0, 0);
            set_desc(TX_DESC_ADDR, 0, table, 16, F_INDIRECT, 0);
            publish(TX_AVAIL_ADDR, 0);
            notify();
        }
        TestMode::AvailIndexJump => {
            channel.send(Kind::Stdout, b"x");
            // SAFETY: the tx available ring is agent-owned ring memory.
            unsafe {
                let idx = (TX_AVAIL_ADDR + 2) as *mut u16;
                write_volatile(idx, read_volatile(idx).wrapping_add(1000));
            }
            notify();
        }
        TestMode::TxOverlapsRing => {
            set_desc(TX_DESC_ADDR, 0, TX_DESC_ADDR, 64, 0, 0);
            publish(TX_AVAIL_ADDR, 0);
            notify();
        }
        TestMode::RxDescriptorLoop => {
            rx_through(channel, RX_BUF_ADDR, 4096, F_WRITE | F_NEXT, 0);
        }
        TestMode::RxIntoRing => rx_through(channel, RX_DESC_ADDR, 4096, F_WRITE, 0),
        TestMode::RxIntoPageTables => rx_through(channel, PML4_ADDR, 4096, F_WRITE, 0),
        TestMode::RxIntoBootInfo => rx_through(channel, BOOT_INFO_ADDR, 4096, F_WRITE, 0),
        TestMode::RxIntoModule => rx_through(channel, boot.module_addr, 4096, F_WRITE, 0),
        TestMode::RxHugeLength => rx_through(channel, RX_BUF_ADDR, u32::MAX, F_WRITE, 0),
        TestMode::UnknownKind => send_raw(0x77, 1, 9, b"x"),
        TestMode::HeaderLongerThanDescriptor => {
            send_raw(Kind::Stdout as u32, 100, 9, b"x");
        }
        TestMode::HeaderShorterThanDescriptor => {
            send_raw(Kind::Stdout as u32, 0, 16, b"xxxxxxxx");
        }
        TestMode::TruncatedHeader => send_raw(Kind::Stdout as u32, 0, 4, &[]),
        TestMode::TruncatedExit => send_raw(Kind::Exit as u32, 2, 10, &[7, 0]),
        TestMode::WrongDirection => send_raw(Kind::Request as u32, 0, 8, &[]),
        TestMode::OversizedOutput => {
            let chunk = vec![b'o'; MAX_PAYLOAD];
            for _ in 0..16 {
                channel.send(Kind::Stdout, &chunk);
            }
            channel.notify();
        }
        TestMode::MessageAfterExit => {
            channel.send(Kind::Exit, &0i32.to_le_bytes());
            channel.send(Kind::Stdout, b"late");
            channel.notify();
        }
        TestMode::SleepForever => {
            channel.send(Kind::Sleep, &u64::MAX.to_le_bytes());
            channel.notify();
        }
    };
    crate::rt::fatal("misbehaviour was not stopped by the host");
}

/// Misbehaves, for modes that act once a request has arrived.
pub fn after_request(mode: TestMode) {
    if mode == TestMode::UnknownKindAfterRequest {
        // Every tx buffer came back with the exchange that delivered the
        // request, so descriptor 0 and buffer 0 are free.
        send_raw(0x77, 1, 9, b"x");
        crate::rt::fatal("misbehaviour was not stopped by the host");
    }
}
