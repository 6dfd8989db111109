//! Guest physical memory map. The guest runs on identity page tables, so
//! guest virtual and guest physical addresses are the same numbers.
//!
//! ```text
//! 0x0000_0000  4 KiB   not mapped: catches null pointers
//! 0x0000_1000  4 KiB   GDT                        ┐
//! 0x0000_2000  4 KiB   IDT                        │ supervisor-only pages,
//! 0x0000_3000  4 KiB   TSS                        │ built by the host
//! 0x0000_4000  4 KiB   exception stubs (code)     │
//! 0x0000_5000  8 KiB   exception stack            │
//! 0x0000_8000  28 KiB  page tables                ┘
//! 0x0001_0000  4 KiB   boot info (host → agent, read-only to the agent)
//! 0x0001_1000  4 KiB   panic message (agent → host)
//! 0x0002_0000  8 KiB   virtqueue rings (rx, tx)
//! 0x0010_0000  1 MiB   channel buffers (rx, then tx)
//! 0x0020_0000  …       agent ELF (linked here), then the module artifact,
//!                      then the heap
//! mem_size - STACK_SIZE … mem_size   agent stack
//! ```
//!
//! The first 2 MiB are mapped with 4 KiB pages so the system structures can
//! be supervisor-only and page 0 unmapped; everything above uses 2 MiB pages,
//! which keeps shadow-paging faults on PVM hosts to a minimum.

/// Size of a small page.
pub const PAGE_SIZE: u64 = 0x1000;
/// Size of a large page; guest memory is always a multiple of this.
pub const LARGE_PAGE_SIZE: u64 = 0x20_0000;

/// Global descriptor table.
pub const GDT_ADDR: u64 = 0x1000;
/// Interrupt descriptor table (vectors 0..32 are filled).
pub const IDT_ADDR: u64 = 0x2000;
/// 64-bit task state segment (RSP0 and IST1 point at the exception stack).
pub const TSS_ADDR: u64 = 0x3000;
/// Ring-0 exception stubs, [`FAULT_STUB_SIZE`] bytes per vector.
pub const FAULT_STUBS_ADDR: u64 = 0x4000;
/// Bytes per exception stub.
pub const FAULT_STUB_SIZE: u64 = 8;
/// Number of exception vectors that get a stub.
pub const FAULT_VECTORS: u64 = 32;
/// Lowest address of the exception stack.
pub const EXCEPTION_STACK_BOTTOM: u64 = 0x5000;
/// Top of the exception stack (the CPU pushes the interrupt frame below it).
pub const EXCEPTION_STACK_TOP: u64 = 0x7000;
/// Root page table (PML4).
pub const PML4_ADDR: u64 = 0x8000;
/// The one page-directory-pointer table (covers 512 GiB).
pub const PDPT_ADDR: u64 = 0x9000;
/// Page directories, one per GiB of guest memory, up to [`MAX_MEM_SIZE`].
pub const PD_ADDR: u64 = 0xA000;
/// Page table for the first 2 MiB (4 KiB pages).
pub const PT_LOW_ADDR: u64 = 0xE000;

/// Boot record written by the host; see [`crate::boot::BootInfo`].
pub const BOOT_INFO_ADDR: u64 = 0x1_0000;
/// Where the agent writes a panic message before writing
/// [`crate::ports::PANIC`].
pub const PANIC_MSG_ADDR: u64 = 0x1_1000;
/// Longest panic message the host reads.
pub const PANIC_MSG_MAX: u64 = PAGE_SIZE;

/// Entries per virtqueue.
pub const QUEUE_SIZE: u16 = 16;
/// Host→guest queue (requests, stdin): descriptor table.
pub const RX_DESC_ADDR: u64 = 0x2_0000;
/// Host→guest queue: available ring.
pub const RX_AVAIL_ADDR: u64 = 0x2_0400;
/// Host→guest queue: used ring.
pub const RX_USED_ADDR: u64 = 0x2_0800;
/// Guest→host queue (output, results): descriptor table.
pub const TX_DESC_ADDR: u64 = 0x2_1000;
/// Guest→host queue: available ring.
pub const TX_AVAIL_ADDR: u64 = 0x2_1400;
/// Guest→host queue: used ring.
pub const TX_USED_ADDR: u64 = 0x2_1800;

/// Size of each channel buffer; one message fits in one buffer.
pub const CHANNEL_BUF_SIZE: u64 = 0x1_0000;
/// Buffers per direction.
pub const CHANNEL_BUFS: u64 = 8;
/// First host→guest buffer; buffer `i` is at `RX_BUF_ADDR + i * CHANNEL_BUF_SIZE`.
pub const RX_BUF_ADDR: u64 = 0x10_0000;
/// First guest→host buffer.
pub const TX_BUF_ADDR: u64 = RX_BUF_ADDR + CHANNEL_BUFS * CHANNEL_BUF_SIZE;

/// Where the agent ELF is linked and loaded.
pub const AGENT_BASE: u64 = 0x20_0000;
/// The 2 MiB block at [`AGENT_BASE`] holds the agent's code and read-only
/// data and nothing else (`agent/linker.ld` starts its writable data on
/// the next block): nothing writes it after the load, so a restored VM
/// has it mapped read-only and whole, `(start, length)`.
pub const AGENT_CODE_BLOCK: (u64, u64) = (AGENT_BASE, LARGE_PAGE_SIZE);
/// The agent's stack occupies the top of guest memory.
pub const STACK_SIZE: u64 = 0x40_0000;

/// Smallest guest memory the host accepts.
pub const MIN_MEM_SIZE: u64 = 16 << 20;
/// Largest guest memory the page tables can map (one page directory per GiB).
pub const MAX_MEM_SIZE: u64 = 4 << 30;

/// Segment selectors of the GDT the host builds.
pub mod selectors {
    /// Ring-0 64-bit code (exception stubs).
    pub const KERNEL_CODE: u16 = 0x08;
    /// Ring-0 data.
    pub const KERNEL_DATA: u16 = 0x10;
    /// Ring-3 data (with RPL 3).
    pub const USER_DATA: u16 = 0x18 | 3;
    /// Ring-3 64-bit code (with RPL 3).
    pub const USER_CODE: u16 = 0x20 | 3;
    /// Task state segment.
    pub const TSS: u16 = 0x28;
}

/// Rounds `value` up to a multiple of `align` (a power of two).
pub const fn align_up(value: u64, align: u64) -> u64 {
    (value + align - 1) & !(align - 1)
}

// The regions must not overlap: checked at compile time, so a layout edit
// that breaks this does not build.
const _: () = {
    assert!(FAULT_STUBS_ADDR + FAULT_STUB_SIZE * FAULT_VECTORS <= EXCEPTION_STACK_BOTTOM);
    assert!(EXCEPTION_STACK_TOP <= PML4_ADDR);
    assert!(PD_ADDR + (MAX_MEM_SIZE >> 30) * PAGE_SIZE <= PT_LOW_ADDR);
    assert!(PT_LOW_ADDR + PAGE_SIZE <= BOOT_INFO_ADDR);
    assert!(RX_USED_ADDR + 6 + 8 * QUEUE_SIZE as u64 <= TX_DESC_ADDR);
    assert!(TX_USED_ADDR + 6 + 8 * QUEUE_SIZE as u64 <= RX_BUF_ADDR);
    assert!(QUEUE_SIZE as u64 >= CHANNEL_BUFS);
    assert!(TX_BUF_ADDR + CHANNEL_BUFS * CHANNEL_BUF_SIZE == AGENT_BASE);
    assert!(AGENT_BASE.is_multiple_of(LARGE_PAGE_SIZE));
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_up_rounds() {
        assert_eq!(align_up(0, 4096), 0);
        assert_eq!(align_up(1, 4096), 4096);
        assert_eq!(align_up(4096, 4096), 4096);
    }
}
