//! Identity page tables: 4 KiB pages for the first 2 MiB (so page 0 can be
//! absent and the system structures supervisor-only), 2 MiB pages above.
//!
//! Accessed/dirty bits are preset so neither the CPU nor a shadow-paging
//! hypervisor has to set them on first use.

use wisp_abi::layout::*;

use crate::error::Result;
use crate::memory::{self, GuestRam};

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const ACCESSED: u64 = 1 << 5;
const DIRTY: u64 = 1 << 6;
const HUGE: u64 = 1 << 7;

const TABLE: u64 = PRESENT | WRITABLE | USER | ACCESSED;
const USER_RW: u64 = PRESENT | WRITABLE | USER | ACCESSED | DIRTY;
const USER_RO: u64 = PRESENT | USER | ACCESSED;
const KERNEL_RW: u64 = PRESENT | WRITABLE | ACCESSED | DIRTY;

/// Attributes of the 4 KiB page at `addr` within the first 2 MiB.
fn low_page_flags(addr: u64) -> u64 {
    match addr {
        0 => 0, // null guard
        a if a < BOOT_INFO_ADDR => KERNEL_RW,
        a if a < PANIC_MSG_ADDR => USER_RO, // boot info
        _ => USER_RW,
    }
}

/// The page-table bytes for `mem_size` bytes of RAM, as `(address, bytes)`.
pub fn page_tables(mem_size: u64) -> Vec<(u64, Vec<u8>)> {
    let gib = mem_size.div_ceil(1 << 30);
    let large_pages = mem_size / LARGE_PAGE_SIZE;
    let table = |entries: &mut dyn Iterator<Item = u64>| -> Vec<u8> {
        let mut bytes = vec![0u8; PAGE_SIZE as usize];
        for (i, e) in entries.enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&e.to_le_bytes());
        }
        bytes
    };
    let mut out = vec![
        (PML4_ADDR, table(&mut std::iter::once(PDPT_ADDR | TABLE))),
        (
            PDPT_ADDR,
            table(&mut (0..gib).map(|i| (PD_ADDR + i * PAGE_SIZE) | TABLE)),
        ),
        (
            PT_LOW_ADDR,
            table(&mut (0..512).map(|i| {
                let addr = i * PAGE_SIZE;
                let flags = low_page_flags(addr);
                if flags == 0 {
                    0
                } else {
                    addr | flags
                }
            })),
        ),
    ];
    for g in 0..gib {
        let first = g * 512;
        let last = (first + 512).min(large_pages);
        out.push((
            PD_ADDR + g * PAGE_SIZE,
            table(&mut (first..last).map(|k| {
                if k == 0 {
                    PT_LOW_ADDR | TABLE
                } else {
                    (k * LARGE_PAGE_SIZE) | USER_RW | HUGE
                }
            })),
        ));
    }
    out
}

/// Writes the page tables for `mem_size` bytes of RAM into guest memory.
pub fn write_page_tables(mem: &GuestRam, mem_size: u64) -> Result<()> {
    for (addr, bytes) in page_tables(mem_size) {
        memory::write(mem, addr, &bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tables: &[(u64, Vec<u8>)], table: u64, index: usize) -> u64 {
        let bytes = &tables.iter().find(|(a, _)| *a == table).unwrap().1;
        u64::from_le_bytes(bytes[index * 8..index * 8 + 8].try_into().unwrap())
    }

    #[test]
    fn maps_exactly_the_guest_memory() {
        let size = 64 << 20;
        let t = page_tables(size);
        assert_eq!(entry(&t, PML4_ADDR, 0) & !0xfff, PDPT_ADDR);
        assert_eq!(entry(&t, PDPT_ADDR, 0) & !0xfff, PD_ADDR);
        assert_eq!(entry(&t, PDPT_ADDR, 1), 0);
        // 32 large pages: the first points at the 4 KiB table.
        assert_eq!(entry(&t, PD_ADDR, 0) & !0xfff, PT_LOW_ADDR);
        assert_eq!(
            entry(&t, PD_ADDR, 31),
            (31 * LARGE_PAGE_SIZE) | USER_RW | HUGE
        );
        assert_eq!(entry(&t, PD_ADDR, 32), 0);
    }

    #[test]
    fn low_pages_protect_system_structures() {
        let t = page_tables(16 << 20);
        assert_eq!(entry(&t, PT_LOW_ADDR, 0), 0, "page 0 must be unmapped");
        let gdt = entry(&t, PT_LOW_ADDR, (GDT_ADDR / PAGE_SIZE) as usize);
        assert_eq!(gdt & USER, 0, "GDT must be supervisor-only");
        let boot = entry(&t, PT_LOW_ADDR, (BOOT_INFO_ADDR / PAGE_SIZE) as usize);
        assert_eq!(
            boot & (USER | WRITABLE),
            USER,
            "boot info is read-only to the agent"
        );
        let buf = entry(&t, PT_LOW_ADDR, (RX_BUF_ADDR / PAGE_SIZE) as usize);
        assert_eq!(buf & (USER | WRITABLE), USER | WRITABLE);
    }

    #[test]
    fn covers_more_than_one_gib() {
        let t = page_tables(3 << 30);
        assert_ne!(entry(&t, PDPT_ADDR, 2), 0);
        assert_eq!(entry(&t, PDPT_ADDR, 3), 0);
        assert_eq!(
            entry(&t, PD_ADDR + 2 * PAGE_SIZE, 511),
            ((3 << 30) - LARGE_PAGE_SIZE) | USER_RW | HUGE
        );
    }
}
