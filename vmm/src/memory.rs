//! Guest RAM: one anonymous mapping at guest physical address 0.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use wisp_abi::layout::{LARGE_PAGE_SIZE, MAX_MEM_SIZE, MIN_MEM_SIZE};

use crate::error::{Error, Result};

/// The guest's RAM.
pub type GuestRam = GuestMemoryMmap<()>;

/// Checks a requested guest memory size.
pub fn validate_size(size: u64) -> Result<()> {
    if !(MIN_MEM_SIZE..=MAX_MEM_SIZE).contains(&size) {
        return Err(Error::Config(format!(
            "memory size {} MiB is outside {}..={} MiB",
            size >> 20,
            MIN_MEM_SIZE >> 20,
            MAX_MEM_SIZE >> 20
        )));
    }
    if !size.is_multiple_of(LARGE_PAGE_SIZE) {
        return Err(Error::Config(format!(
            "memory size {size} is not a multiple of 2 MiB"
        )));
    }
    Ok(())
}

/// Maps `size` bytes of zeroed guest RAM.
pub fn create(size: u64) -> Result<GuestRam> {
    validate_size(size)?;
    let mem = GuestRam::from_ranges(&[(GuestAddress(0), size as usize)])
        .map_err(|e| Error::Memory(format!("mapping {} MiB: {e}", size >> 20)))?;
    for region in mem.iter() {
        // Host huge pages under the guest's 2 MiB mappings make first
        // touches far cheaper on shadow-paging hosts. Advisory: failure
        // (THP disabled) only costs speed.
        // SAFETY: the range is exactly this region's live mapping.
        unsafe {
            libc::madvise(
                region.as_ptr().cast(),
                region.len() as usize,
                libc::MADV_HUGEPAGE,
            );
        }
    }
    Ok(mem)
}

/// Writes `data` at `addr`, failing if any byte falls outside RAM.
pub fn write(mem: &GuestRam, addr: u64, data: &[u8]) -> Result<()> {
    mem.write_slice(data, GuestAddress(addr))
        .map_err(|e| Error::Memory(format!("writing {} bytes at {addr:#x}: {e}", data.len())))
}

/// Reads `len` bytes at `addr`, failing if any byte falls outside RAM.
pub fn read(
    mem: &GuestRam,
    addr: u64,
    len: usize,
) -> std::result::Result<Vec<u8>, vm_memory::GuestMemoryError> {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(addr))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_validated() {
        assert!(validate_size(64 << 20).is_ok());
        assert!(validate_size(1 << 20).is_err());
        assert!(validate_size((64 << 20) + 4096).is_err());
        assert!(validate_size(8 << 30).is_err());
    }

    #[test]
    fn reads_and_writes_are_bounds_checked() {
        let mem = create(16 << 20).unwrap();
        write(&mem, 0x1000, b"abc").unwrap();
        assert_eq!(read(&mem, 0x1000, 3).unwrap(), b"abc");
        assert!(write(&mem, (16 << 20) - 1, b"ab").is_err());
        assert!(read(&mem, u64::MAX - 1, 4).is_err());
    }
}
