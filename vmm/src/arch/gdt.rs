//! GDT, IDT, TSS and the ring-0 exception stubs.
//!
//! The stubs are the only guest code that runs at ring 0. Each one reports
//! its vector on [`wisp_abi::ports::FAULT`] and halts; the host reads the
//! interrupt frame from the exception stack and ends the run.

use wisp_abi::layout::*;
use wisp_abi::ports;

use crate::error::Result;
use crate::memory::{self, GuestRam};

/// Vectors for which the CPU pushes an error code.
pub const EXCEPTIONS_WITH_ERROR_CODE: [u8; 10] = [8, 10, 11, 12, 13, 14, 17, 21, 29, 30];

/// Mnemonic of an exception vector.
pub fn exception_name(vector: u8) -> &'static str {
    match vector {
        0 => "#DE divide error",
        1 => "#DB debug",
        2 => "NMI",
        3 => "#BP breakpoint",
        4 => "#OF overflow",
        5 => "#BR bound range",
        6 => "#UD invalid opcode",
        7 => "#NM device not available",
        8 => "#DF double fault",
        10 => "#TS invalid TSS",
        11 => "#NP segment not present",
        12 => "#SS stack fault",
        13 => "#GP general protection",
        14 => "#PF page fault",
        16 => "#MF x87 error",
        17 => "#AC alignment check",
        18 => "#MC machine check",
        19 => "#XM SIMD exception",
        20 => "#VE virtualization exception",
        21 => "#CP control protection",
        _ => "reserved exception",
    }
}

/// GDT entries in selector order (see `wisp_abi::layout::selectors`).
fn gdt() -> [u64; 7] {
    let tss_limit = TSS_BYTES as u64 - 1;
    let base = TSS_ADDR;
    let tss_low = (tss_limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x8b << 40) // present, 64-bit TSS (busy, as TR is loaded)
        | (((tss_limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    [
        0,
        0x00af_9b00_0000_ffff, // 0x08 kernel code, 64-bit
        0x00cf_9300_0000_ffff, // 0x10 kernel data
        0x00cf_f300_0000_ffff, // 0x18 user data, DPL 3
        0x00af_fb00_0000_ffff, // 0x20 user code, 64-bit, DPL 3
        tss_low,               // 0x28 TSS, low half
        base >> 32,            // TSS, high half
    ]
}

/// Number of bytes of the GDT.
pub(crate) const GDT_BYTES: u16 = 7 * 8;
/// Number of bytes of the IDT.
pub(crate) const IDT_BYTES: u16 = (FAULT_VECTORS * 16) as u16;

/// One 64-bit interrupt gate to the stub for `vector`, on IST 1.
fn idt_gate(vector: u64) -> [u8; 16] {
    let offset = FAULT_STUBS_ADDR + vector * FAULT_STUB_SIZE;
    let low = (offset & 0xffff)
        | (u64::from(selectors::KERNEL_CODE) << 16)
        | (1 << 32) // IST 1
        | (0x8e << 40) // present, DPL 0, interrupt gate
        | (((offset >> 16) & 0xffff) << 48);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&low.to_le_bytes());
    out[8..].copy_from_slice(&(offset >> 32).to_le_bytes());
    out
}

/// `mov al, vector; out FAULT, al; hlt; jmp hlt` — 8 bytes.
fn fault_stub(vector: u8) -> [u8; 8] {
    const _: () = assert!(ports::FAULT < 0x100, "the stub uses the imm8 form of out");
    [
        0xb0,
        vector,
        0xe6,
        ports::FAULT as u8,
        0xf4,
        0xeb,
        0xfd,
        0x90,
    ]
}

/// Size of the TSS proper (before the I/O permission bitmap).
const TSS_HEADER_BYTES: usize = 104;
/// Ports covered by the I/O permission bitmap: every port below this one
/// is allowed, all others fault.
const IO_BITMAP_PORTS: usize = 0x400;
/// TSS with its I/O bitmap and the mandatory all-ones terminator byte.
pub(crate) const TSS_BYTES: usize = TSS_HEADER_BYTES + IO_BITMAP_PORTS / 8 + 1;
const _: () = assert!(TSS_ADDR + TSS_BYTES as u64 <= FAULT_STUBS_ADDR);

/// The TSS: exception stack pointers and an I/O permission bitmap.
///
/// IOPL 3 alone lets ring 3 use `out` on hardware KVM, but PVM runs the
/// guest with the host's IOPL 0 and emulates each trapped `out`, consulting
/// only the TSS bitmap — so the bitmap is what makes port I/O work there.
fn tss() -> [u8; TSS_BYTES] {
    let mut t = [0u8; TSS_BYTES];
    t[4..12].copy_from_slice(&EXCEPTION_STACK_TOP.to_le_bytes()); // RSP0
    t[36..44].copy_from_slice(&EXCEPTION_STACK_TOP.to_le_bytes()); // IST1
    t[102..104].copy_from_slice(&(TSS_HEADER_BYTES as u16).to_le_bytes());
    // Bitmap bytes stay zero (allowed); the terminator must be all ones.
    t[TSS_BYTES - 1] = 0xff;
    t
}

/// Writes the GDT, IDT, TSS and fault stubs into guest memory.
pub fn write_system_tables(mem: &GuestRam) -> Result<()> {
    let gdt: Vec<u8> = gdt().iter().flat_map(|e| e.to_le_bytes()).collect();
    memory::write(mem, GDT_ADDR, &gdt)?;
    let idt: Vec<u8> = (0..FAULT_VECTORS).flat_map(idt_gate).collect();
    memory::write(mem, IDT_ADDR, &idt)?;
    memory::write(mem, TSS_ADDR, &tss())?;
    let stubs: Vec<u8> = (0..FAULT_VECTORS as u8).flat_map(fault_stub).collect();
    memory::write(mem, FAULT_STUBS_ADDR, &stubs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stubs_fit_their_slots() {
        assert_eq!(fault_stub(14).len() as u64, FAULT_STUB_SIZE);
        assert_eq!(fault_stub(14)[1], 14);
    }

    #[test]
    fn gates_point_at_stubs() {
        let g = idt_gate(3);
        let low = u64::from_le_bytes(g[..8].try_into().unwrap());
        let offset = (low & 0xffff) | (((low >> 48) & 0xffff) << 16);
        assert_eq!(offset, FAULT_STUBS_ADDR + 3 * FAULT_STUB_SIZE);
        assert_eq!((low >> 16) & 0xffff, u64::from(selectors::KERNEL_CODE));
    }

    #[test]
    fn selectors_match_descriptors() {
        let g = gdt();
        // DPL of the user segments is 3.
        assert_eq!((g[(selectors::USER_CODE >> 3) as usize] >> 45) & 3, 3);
        assert_eq!((g[(selectors::USER_DATA >> 3) as usize] >> 45) & 3, 3);
        assert_eq!(GDT_BYTES as usize, g.len() * 8);
    }
}
