//! Guest RAM: one mapping at guest physical address 0 — anonymous for a
//! fresh boot, or a snapshot's memory file mapped copy-on-write for a
//! restore.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use vm_memory::mmap::{FromRangesError, MmapRegionBuilder, MmapRegionError};
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};
use wisp_abi::layout::{LARGE_PAGE_SIZE, MAX_MEM_SIZE, MIN_MEM_SIZE, PAGE_SIZE};

use crate::error::{Cause, ConfigError, Error, Result};

/// The guest's RAM.
pub type GuestRam = GuestMemoryMmap<()>;

/// Checks a requested guest memory size.
pub fn validate_size(size: u64) -> Result<()> {
    if !(MIN_MEM_SIZE..=MAX_MEM_SIZE).contains(&size) {
        return Err(ConfigError::MemorySize {
            mib: size >> 20,
            min: MIN_MEM_SIZE >> 20,
            max: MAX_MEM_SIZE >> 20,
        }
        .into());
    }
    if !size.is_multiple_of(LARGE_PAGE_SIZE) {
        return Err(ConfigError::MemoryAlignment(size).into());
    }
    Ok(())
}

/// Maps `size` bytes of zeroed guest RAM.
pub fn create(size: u64) -> Result<GuestRam> {
    validate_size(size)?;
    let mem = GuestRam::from_ranges(&[(GuestAddress(0), size as usize)]).map_err(|e| {
        Error::MapMemory {
            mib: size >> 20,
            source: match e {
                FromRangesError::MmapRegion(e) => mmap_cause(e),
                e => Box::new(e),
            },
        }
    })?;
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

/// Maps a snapshot's memory `file` (exactly `size` bytes) as guest RAM,
/// copy-on-write: pages the guest only reads are shared with every other
/// instance through the page cache; its writes go to private copies. The
/// file must never change while mapped (snapshots are immutable: a new one
/// replaces the directory, it is never rewritten in place).
pub fn map_private(file: &Arc<File>, size: u64) -> Result<GuestRam> {
    validate_size(size)?;
    let region = MmapRegionBuilder::new(size as usize)
        .with_file_offset(FileOffset::from_arc(Arc::clone(file), 0))
        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
        .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
        .build()
        .map_err(|e| Error::MapSnapshot(mmap_cause(e)))?;
    let region = GuestRegionMmap::new(region, GuestAddress(0))
        .ok_or(Error::OutOfRange { addr: 0, len: size })?;
    GuestRam::from_regions(vec![region]).map_err(|e| Error::MapSnapshot(Box::new(e)))
}

/// The OS error of a failed `mmap` itself (so its errno can tell
/// exhaustion), else the error as it is.
fn mmap_cause(e: MmapRegionError) -> Cause {
    match e {
        MmapRegionError::Mmap(os) => Box::new(os),
        e => Box::new(e),
    }
}

/// The one region's host address and length.
fn host_range(mem: &GuestRam) -> (*mut u8, usize) {
    // Every GuestRam here has exactly one region, at guest address 0.
    let region = mem.iter().next().expect("guest RAM has one region");
    (region.as_ptr(), region.len() as usize)
}

fn madvise(mem: &GuestRam, offset: u64, len: u64, advice: libc::c_int) -> Result<()> {
    let (base, size) = host_range(mem);
    let end = offset.checked_add(len).filter(|&e| e <= size as u64);
    if end.is_none() {
        return Err(Error::OutOfRange { addr: offset, len });
    }
    // SAFETY: the range lies inside this live mapping (checked above). The
    // advice values used here only drop private pages back to the file's
    // contents or pre-fault pages; neither invalidates any Rust reference
    // (guest memory is only accessed through vm-memory's volatile API).
    let rc = unsafe { libc::madvise(base.add(offset as usize).cast(), len as usize, advice) };
    if rc != 0 {
        return Err(Error::Madvise {
            advice,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// How [`populate`] pre-faults pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Populate {
    /// Map the page-cache pages read-only (shared, no copy).
    Read,
    /// Make private copies now, as a guest write would.
    Write,
}

/// Pre-faults `pages` (start page, page count) in the host's page tables so
/// the guest's first touch of them costs a shadow-page fill rather than a
/// host page fault.
pub fn populate(mem: &GuestRam, pages: &[(u64, u64)], how: Populate) -> Result<()> {
    let advice = match how {
        Populate::Read => libc::MADV_POPULATE_READ,
        Populate::Write => libc::MADV_POPULATE_WRITE,
    };
    for &(start, count) in pages {
        madvise(mem, start * PAGE_SIZE, count * PAGE_SIZE, advice)?;
    }
    Ok(())
}

/// Pages of guest RAM present in this process's page tables, split by
/// whether they are still the file's pages or private copies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TouchedPages {
    /// Runs of pages mapped from the file (read, never written).
    pub read: Vec<(u64, u64)>,
    /// Runs of private (written) pages.
    pub written: Vec<(u64, u64)>,
}

/// Appends page `page` to a list of (start, count) runs.
fn push_run(runs: &mut Vec<(u64, u64)>, page: u64) {
    match runs.last_mut() {
        Some((start, count)) if *start + *count == page => *count += 1,
        _ => runs.push((page, 1)),
    }
}

/// Reads `/proc/self/pagemap` for the mapping: bit 63 is "present", bit 61
/// "file page or shared anonymous" (clear for a private copy).
pub fn touched_pages(mem: &GuestRam) -> Result<TouchedPages> {
    const PRESENT: u64 = 1 << 63;
    const FILE_OR_SHARED: u64 = 1 << 61;
    let (base, size) = host_range(mem);
    let pages = size as u64 / PAGE_SIZE;
    let file = File::open("/proc/self/pagemap").map_err(Error::Pagemap)?;
    let mut raw = vec![0u8; pages as usize * 8];
    file.read_exact_at(&mut raw, base as u64 / PAGE_SIZE * 8)
        .map_err(Error::Pagemap)?;
    let mut touched = TouchedPages::default();
    for (page, entry) in raw.chunks_exact(8).enumerate() {
        let entry = u64::from_le_bytes(entry.try_into().expect("8-byte chunk"));
        if entry & PRESENT == 0 {
            continue;
        }
        let runs = if entry & FILE_OR_SHARED != 0 {
            &mut touched.read
        } else {
            &mut touched.written
        };
        push_run(runs, page as u64);
    }
    Ok(touched)
}

/// Sorts `(first page, count)` runs and merges overlapping or adjacent ones.
pub fn merge_runs(mut runs: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    runs.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(runs.len());
    for (start, count) in runs {
        match merged.last_mut() {
            Some((s, c)) if start <= *s + *c => *c = (*c).max(start + count - *s),
            _ => merged.push((start, count)),
        }
    }
    merged
}

/// The pages covering byte ranges `(address, length)`, as merged runs.
pub fn page_runs(ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let runs = ranges
        .iter()
        .filter(|r| r.1 > 0)
        .map(|&(addr, len)| {
            let first = addr / PAGE_SIZE;
            (first, (addr + len).div_ceil(PAGE_SIZE) - first)
        })
        .collect();
    merge_runs(runs)
}

/// The set bits of a KVM dirty bitmap (bit `i` = page `i`), as runs.
pub fn bitmap_runs(bitmap: &[u64]) -> Vec<(u64, u64)> {
    let mut runs = Vec::new();
    for (word_index, &word) in bitmap.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            let bit = u64::from(bits.trailing_zeros());
            push_run(&mut runs, word_index as u64 * 64 + bit);
            bits &= bits - 1;
        }
    }
    runs
}

/// Overwrites `runs` of guest pages with the same pages of `file` (holes
/// read as zeroes), returning them to the snapshot's contents.
pub fn copy_from_file(mem: &GuestRam, file: &File, runs: &[(u64, u64)]) -> Result<()> {
    let mut buf = Vec::new();
    for &(start, count) in runs {
        buf.resize((count * PAGE_SIZE) as usize, 0);
        file.read_exact_at(&mut buf, start * PAGE_SIZE)
            .map_err(Error::ReadSnapshot)?;
        write(mem, start * PAGE_SIZE, &buf)?;
    }
    Ok(())
}

/// The first page where guest RAM differs from `file`, if any.
pub fn first_difference(mem: &GuestRam, file: &File) -> Result<Option<u64>> {
    const CHUNK: usize = 1 << 20;
    let (_, size) = host_range(mem);
    let mut ours = vec![0u8; CHUNK];
    let mut theirs = vec![0u8; CHUNK];
    for offset in (0..size).step_by(CHUNK) {
        let len = CHUNK.min(size - offset);
        mem.read_slice(&mut ours[..len], GuestAddress(offset as u64))
            .map_err(|_| Error::OutOfRange {
                addr: offset as u64,
                len: len as u64,
            })?;
        file.read_exact_at(&mut theirs[..len], offset as u64)
            .map_err(Error::ReadSnapshot)?;
        if ours[..len] != theirs[..len] {
            let i = (0..len).find(|&i| ours[i] != theirs[i]).unwrap_or(0);
            return Ok(Some((offset + i) as u64 / PAGE_SIZE));
        }
    }
    Ok(None)
}

/// Copies all of guest RAM out (for writing a snapshot).
pub fn contents(mem: &GuestRam) -> Result<Vec<u8>> {
    let (_, size) = host_range(mem);
    let mut out = vec![0u8; size];
    mem.read_slice(&mut out, GuestAddress(0))
        .map_err(|_| Error::OutOfRange {
            addr: 0,
            len: size as u64,
        })?;
    Ok(out)
}

/// Writes `data` at `addr`, failing if any byte falls outside RAM.
pub fn write(mem: &GuestRam, addr: u64, data: &[u8]) -> Result<()> {
    mem.write_slice(data, GuestAddress(addr))
        .map_err(|_| Error::OutOfRange {
            addr,
            len: data.len() as u64,
        })
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
    fn runs_merge_and_come_from_bitmaps_and_byte_ranges() {
        assert_eq!(
            merge_runs(vec![(10, 2), (0, 3), (3, 1), (11, 5)]),
            vec![(0, 4), (10, 6)]
        );
        assert_eq!(
            bitmap_runs(&[0b1011, 1 << 63, 1]),
            vec![(0, 2), (3, 1), (127, 2)]
        );
        assert_eq!(
            page_runs(&[(0x1000, 1), (0x1fff, 2), (0x5000, 0), (0x8000, 0x2000)]),
            vec![(1, 2), (8, 2)]
        );
    }

    #[test]
    fn sizes_are_validated() {
        validate_size(64 << 20).unwrap();
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
        read(&mem, u64::MAX - 1, 4).unwrap_err();
    }
}
