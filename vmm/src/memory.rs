//! Guest RAM: one mapping at guest physical address 0 — anonymous for a
//! fresh boot, or a snapshot's memory file mapped copy-on-write for a
//! restore.

use std::fs::File;
use std::os::fd::AsRawFd;
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

/// `size` bytes of guest RAM that hold nothing yet: anonymous, not
/// populated, not reserved against overcommit. A restore maps a snapshot
/// over it ([`map_file_over`]), so the guest RAM itself keeps no reference
/// to the file: a shell that keeps the RAM registered after its VM is done
/// ([`crate::Shell`]) holds no snapshot open.
pub fn reserve(size: u64) -> Result<GuestRam> {
    validate_size(size)?;
    let region = MmapRegionBuilder::new(size as usize)
        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
        .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE)
        .build()
        .map_err(|e| Error::MapMemory {
            mib: size >> 20,
            source: mmap_cause(e),
        })?;
    let region = GuestRegionMmap::new(region, GuestAddress(0))
        .ok_or(Error::OutOfRange { addr: 0, len: size })?;
    GuestRam::from_regions(vec![region]).map_err(|e| Error::MapSnapshot(Box::new(e)))
}

/// Maps a snapshot's memory `file` (exactly as long as `mem`) over all of
/// `mem`, copy-on-write: pages the guest only reads are shared with every
/// other instance through the page cache; its writes go to private copies.
/// The file must never change while mapped (snapshots are immutable: a
/// new one replaces the directory, it is never rewritten in place).
/// Whatever `mem` held is replaced: its pages are freed and KVM's mappings
/// of them dropped (the kernel tells every VM's MMU notifier).
/// In the byte ranges `whole`, a 2 MiB block the guest only reads is
/// mapped by one entry where the page cache holds it as a huge folio, and
/// KVM then maps it whole too (where its slot does not log writes; see
/// the snapshot crate's `cache_in_huge_folios`). Elsewhere the file is
/// mapped 4 KiB at a time: there slots log writes, which KVM maps 4 KiB at
/// a time anyway, and a write to a block mapped whole would unmap all of
/// it first (copy-on-write splits the mapping), and KVM's mappings of
/// every page of it with it.
pub fn map_file_over(mem: &GuestRam, file: &File, whole: &[(u64, u64)]) -> Result<()> {
    let (base, size) = host_range(mem);
    // SAFETY: the range is exactly this region's live mapping, which the
    // region unmaps when dropped; replacing its pages invalidates no Rust
    // reference (guest memory is only accessed through vm-memory's
    // volatile API). The file outlives nothing here: the mapping holds its
    // own reference.
    let mapped = unsafe {
        libc::mmap(
            base.cast(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
            file.as_raw_fd(),
            0,
        )
    };
    if mapped == libc::MAP_FAILED {
        return Err(Error::MapSnapshot(
            Box::new(std::io::Error::last_os_error()),
        ));
    }
    // Advisory: without it, blocks are mapped as the kernel's defaults say.
    let _ = madvise(mem, 0, size as u64, libc::MADV_NOHUGEPAGE);
    for &(offset, len) in whole {
        let _ = madvise(mem, offset, len, libc::MADV_HUGEPAGE);
    }
    Ok(())
}

/// Gives all of `mem`'s pages back to the host and drops any file mapped
/// over it: it reads as zeroes again, and holds nothing.
pub fn release(mem: &GuestRam) -> Result<()> {
    let (_, size) = host_range(mem);
    anonymous_over(mem, &[(0, size as u64)])
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

/// Pages in a 2 MiB block.
pub const BLOCK_PAGES: u64 = LARGE_PAGE_SIZE / PAGE_SIZE;

/// Page runs `(first page, page count)`.
pub type PageRuns = Vec<(u64, u64)>;

/// Per block without snapshot data, `(block, pages written in it)`.
pub type HoleWrites = Vec<(u64, PageRuns)>;

/// The smallest run of blocks without data that a restore puts anonymous
/// memory over (see [`Blocks::anonymous_ranges`]).
pub const MIN_ANONYMOUS_HOLE: u64 = 16 << 20;

/// Which 2 MiB blocks of a snapshot's memory hold data. A block without
/// any is backed by fresh anonymous memory in a restored VM (see
/// [`anonymous_over`]): the guest's first touches of it then cost what a
/// fresh VM's do (one transparent huge page for the block) instead of a
/// host page fault per 4 KiB page through the file mapping.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blocks {
    data: Vec<bool>,
}

impl Blocks {
    /// The blocks of `mem_size` bytes of memory whose data lies in the
    /// page runs `data`. Runs past the end are ignored.
    pub fn of(data: &[(u64, u64)], mem_size: u64) -> Blocks {
        let count = mem_size.div_ceil(LARGE_PAGE_SIZE) as usize;
        let mut blocks = vec![false; count];
        for &(start, pages) in data {
            let end = start.saturating_add(pages);
            let (first, last) = (start / BLOCK_PAGES, end.div_ceil(BLOCK_PAGES));
            for block in first..last.min(count as u64) {
                blocks[block as usize] = true;
            }
        }
        Blocks { data: blocks }
    }

    /// Every block counted as holding data (nothing is put over it).
    pub fn all_data(mem_size: u64) -> Blocks {
        Blocks {
            data: vec![true; mem_size.div_ceil(LARGE_PAGE_SIZE) as usize],
        }
    }

    /// Whether `block` holds data (a block past the end counts as not).
    pub fn has_data(&self, block: u64) -> bool {
        self.data.get(block as usize).copied().unwrap_or(false)
    }

    /// How many blocks there are.
    pub fn count(&self) -> u64 {
        self.data.len() as u64
    }

    /// The ranges of blocks without data worth putting fresh anonymous
    /// memory over at restore: those of at least [`MIN_ANONYMOUS_HOLE`].
    ///
    /// Replacing part of a mapping is not free: the kernel calls the MMU
    /// notifier of every KVM VM in the process (the daemon keeps dozens of
    /// shells and pooled instances), which cost a restore of a 16 MiB
    /// function ~100 µs. A small hole left file-backed reads as zeroes
    /// just the same; only its first touches cost more.
    pub fn anonymous_ranges(&self) -> Vec<(u64, u64)> {
        let mut holes = self.holes();
        holes.retain(|&(_, len)| len >= MIN_ANONYMOUS_HOLE);
        holes
    }

    /// The blocks without data, as merged `(first byte, length)` ranges.
    pub fn holes(&self) -> Vec<(u64, u64)> {
        let mut holes: Vec<(u64, u64)> = Vec::new();
        for (block, _) in self.data.iter().enumerate().filter(|b| !*b.1) {
            let start = block as u64 * LARGE_PAGE_SIZE;
            match holes.last_mut() {
                Some((s, len)) if *s + *len == start => *len += LARGE_PAGE_SIZE,
                _ => holes.push((start, LARGE_PAGE_SIZE)),
            }
        }
        holes
    }

    /// Splits page runs into those in blocks with data and, per block
    /// without, `(block, pages written in it)`.
    pub fn split(&self, runs: &[(u64, u64)]) -> (PageRuns, HoleWrites) {
        let (mut data, mut holes): (PageRuns, HoleWrites) = (Vec::new(), Vec::new());
        for &(start, pages) in runs {
            let mut page = start;
            let end = start + pages;
            while page < end {
                let block = page / BLOCK_PAGES;
                let stop = end.min((block + 1) * BLOCK_PAGES);
                let run = (page, stop - page);
                if self.data.get(block as usize).copied().unwrap_or(true) {
                    data.push(run);
                } else {
                    match holes.last_mut() {
                        Some((b, runs)) if *b == block => runs.push(run),
                        _ => holes.push((block, vec![run])),
                    }
                }
                page = stop;
            }
        }
        (data, holes)
    }
}

/// Puts fresh anonymous memory over the byte `ranges` of `mem` (replacing
/// what was mapped there), asking for transparent huge pages: the ranges
/// read as zeroes, and the guest's first touch of a 2 MiB block populates
/// it whole.
pub fn anonymous_over(mem: &GuestRam, ranges: &[(u64, u64)]) -> Result<()> {
    let (base, size) = host_range(mem);
    for &(offset, len) in ranges {
        if offset.checked_add(len).is_none_or(|end| end > size as u64) {
            return Err(Error::OutOfRange { addr: offset, len });
        }
        // SAFETY: the range lies inside this live mapping (checked above),
        // which the VM owns; replacing its pages with zeroed anonymous ones
        // invalidates no Rust reference (guest memory is only accessed
        // through vm-memory's volatile API), and the mapping's owner unmaps
        // the whole range, these pages included, when it is dropped.
        let mapped = unsafe {
            libc::mmap(
                base.add(offset as usize).cast(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if mapped == libc::MAP_FAILED {
            return Err(Error::MapMemory {
                mib: len >> 20,
                source: Box::new(std::io::Error::last_os_error()),
            });
        }
        // Advisory: without huge pages it only costs speed.
        let _ = madvise(mem, offset, len, libc::MADV_HUGEPAGE);
    }
    Ok(())
}

/// Brings the written pages of snapshot holes back to zero, block by
/// block: a block mostly written is dropped whole (its huge page goes back
/// to the host; the next touch takes a fresh zeroed one, as in a fresh
/// VM), a block barely written has just those pages zeroed, so they stay
/// resident for the next invocation. Returns the page runs dropped.
pub fn clear_holes(mem: &GuestRam, holes: &[(u64, PageRuns)]) -> Result<PageRuns> {
    const ZEROES: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];
    let mut dropped = Vec::new();
    for (block, runs) in holes {
        let written: u64 = runs.iter().map(|r| r.1).sum();
        if written * 2 >= BLOCK_PAGES {
            madvise(
                mem,
                block * LARGE_PAGE_SIZE,
                LARGE_PAGE_SIZE,
                libc::MADV_DONTNEED,
            )?;
            dropped.push((block * BLOCK_PAGES, BLOCK_PAGES));
            continue;
        }
        for &(start, pages) in runs {
            for page in start..start + pages {
                write(mem, page * PAGE_SIZE, &ZEROES)?;
            }
        }
    }
    Ok(dropped)
}

/// Runs of pages in the byte range `(offset, len)` of `mem` that are
/// present: in anonymous memory, the ones something touched. Asks
/// `PAGEMAP_SCAN`, which skips empty page tables, else `mincore`.
pub fn resident_runs(mem: &GuestRam, offset: u64, len: u64) -> Result<PageRuns> {
    let (base, size) = host_range(mem);
    if offset.checked_add(len).is_none_or(|end| end > size as u64)
        || !offset.is_multiple_of(PAGE_SIZE)
    {
        return Err(Error::OutOfRange { addr: offset, len });
    }
    let addr = base as u64 + offset;
    let first = offset / PAGE_SIZE;
    if let Some(runs) = crate::pagemap::present(addr, len) {
        let runs = runs.map_err(Error::Pagemap)?;
        return Ok(runs.into_iter().map(|(p, n)| (first + p, n)).collect());
    }
    mincore_runs(addr, len, first)
}

/// [`resident_runs`] by `mincore` over the host range `[addr, addr + len)`,
/// numbering pages from `first`. The range must lie in a live mapping.
fn mincore_runs(addr: u64, len: u64, first: u64) -> Result<PageRuns> {
    let mut vec = vec![0u8; len.div_ceil(PAGE_SIZE) as usize];
    // SAFETY: the caller passes a range inside a live mapping, and `vec`
    // has a byte for each of its pages; mincore only writes `vec`.
    let rc = unsafe { libc::mincore(addr as *mut libc::c_void, len as usize, vec.as_mut_ptr()) };
    if rc != 0 {
        return Err(Error::Mincore(std::io::Error::last_os_error()));
    }
    let mut runs = Vec::new();
    // Mostly zeroes: skip them eight at a time.
    for (chunk, bytes) in vec.chunks(8).enumerate() {
        if bytes.iter().all(|&b| b & 1 == 0) {
            continue;
        }
        for (i, _) in bytes.iter().enumerate().filter(|(_, &b)| b & 1 != 0) {
            push_run(&mut runs, first + (chunk * 8 + i) as u64);
        }
    }
    Ok(runs)
}

/// Gives page `runs` of anonymous memory back to the host: they read as
/// zeroes again, and the next touch takes a fresh (huge) page.
pub fn drop_runs(mem: &GuestRam, runs: &[(u64, u64)]) -> Result<()> {
    for &(start, count) in runs {
        madvise(
            mem,
            start * PAGE_SIZE,
            count * PAGE_SIZE,
            libc::MADV_DONTNEED,
        )?;
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
    let raw = crate::pagemap::entries(base as u64, pages).map_err(Error::Pagemap)?;
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

/// The pages of runs `from` that are in none of runs `without`, as merged
/// runs.
pub fn subtract_runs(from: &[(u64, u64)], without: &[(u64, u64)]) -> PageRuns {
    let without = merge_runs(without.to_vec());
    let mut left = Vec::new();
    for (start, count) in merge_runs(from.to_vec()) {
        let mut at = start;
        let end = start + count;
        // Runs of `without` that end after `at` and start before `end`.
        let first = without.partition_point(|&(s, c)| s + c <= at);
        for &(s, c) in &without[first..] {
            if s >= end {
                break;
            }
            if s > at {
                left.push((at, s - at));
            }
            at = at.max(s + c);
        }
        if at < end {
            left.push((at, end - at));
        }
    }
    left
}

/// The pages in both runs `a` and runs `b`, as merged runs.
pub fn intersect_runs(a: &[(u64, u64)], b: &[(u64, u64)]) -> PageRuns {
    subtract_runs(a, &subtract_runs(a, b))
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
/// read as zeroes), returning them to the snapshot's contents. The kernel
/// copies straight from the page cache into guest RAM: one copy, and into
/// anonymous memory that asked for huge pages, one huge page per block.
pub fn copy_from_file(mem: &GuestRam, file: &File, runs: &[(u64, u64)]) -> Result<()> {
    let (base, size) = host_range(mem);
    for &(start, count) in runs {
        let (offset, len) = (start * PAGE_SIZE, count * PAGE_SIZE);
        if offset.checked_add(len).is_none_or(|end| end > size as u64) {
            return Err(Error::OutOfRange { addr: offset, len });
        }
        // SAFETY: the range lies inside this live, writable mapping
        // (checked above), which the caller's VM owns and whose vCPU is
        // not running; the kernel writes it as it would any read buffer,
        // and no Rust reference into guest memory exists (it is only
        // accessed through vm-memory's volatile API).
        let buf =
            unsafe { std::slice::from_raw_parts_mut(base.add(offset as usize), len as usize) };
        file.read_exact_at(buf, offset)
            .map_err(Error::ReadSnapshot)?;
    }
    Ok(())
}

/// A snapshot's memory file mapped read-only and shared, once per
/// snapshot: a reset copies pages back from it with a `memcpy` per run of
/// pages instead of a `pread` each (a system call, several µs on the hosts
/// measured, and a reset copies a dozen runs after a small invocation).
pub struct FileView {
    region: vm_memory::mmap::MmapRegion<()>,
}

impl FileView {
    /// Maps `size` bytes of `file`, which must never change while mapped
    /// (as for [`map_file_over`]).
    pub fn map(file: &Arc<File>, size: u64) -> Result<FileView> {
        let region = MmapRegionBuilder::new(size as usize)
            .with_file_offset(FileOffset::from_arc(Arc::clone(file), 0))
            .with_mmap_prot(libc::PROT_READ)
            .with_mmap_flags(libc::MAP_SHARED | libc::MAP_NORESERVE)
            .build()
            .map_err(|e| Error::MapSnapshot(mmap_cause(e)))?;
        Ok(FileView { region })
    }

    /// Overwrites `runs` of guest pages with the same pages of the file
    /// (holes read as zeroes), returning them to the snapshot's contents.
    pub fn copy_into(&self, mem: &GuestRam, runs: &[(u64, u64)]) -> Result<()> {
        let (base, size) = host_range(mem);
        let limit = size.min(self.region.size()) as u64;
        for &(start, count) in runs {
            let (offset, len) = (start * PAGE_SIZE, count * PAGE_SIZE);
            if offset.checked_add(len).is_none_or(|end| end > limit) {
                return Err(Error::OutOfRange { addr: offset, len });
            }
            // SAFETY: both ranges lie inside live mappings (checked above),
            // distinct ones, so they cannot overlap; the caller holds the VM
            // whose RAM this is, so its vCPU is not running.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.region.as_ptr().add(offset as usize),
                    base.add(offset as usize),
                    len as usize,
                );
            }
        }
        Ok(())
    }
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

/// All of guest RAM as bytes, for reading it in place (writing a
/// snapshot) rather than copying it.
///
/// # Safety
///
/// Nothing may write guest memory while the slice lives: the vCPU must not
/// run and the host must not write it. (KVM writes guest memory only inside
/// `KVM_RUN`: the guest has no devices, and at ring 3 it cannot enable
/// kvmclock, steal time or any other area KVM updates on its own.)
pub unsafe fn as_slice(mem: &GuestRam) -> &[u8] {
    let (base, size) = host_range(mem);
    // SAFETY: the mapping is readable, `size` bytes long and lives as long
    // as `mem` is borrowed; the caller guarantees nothing writes it
    // meanwhile.
    unsafe { std::slice::from_raw_parts(base, size) }
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
    fn runs_subtract() {
        let from = [(0, 10), (20, 5), (40, 10)];
        assert_eq!(
            subtract_runs(&from, &[(2, 3), (8, 14), (45, 100)]),
            vec![(0, 2), (5, 3), (22, 3), (40, 5)]
        );
        assert_eq!(subtract_runs(&from, &[]), from.to_vec());
        assert_eq!(subtract_runs(&from, &[(0, 100)]), vec![]);
        // What is left of a run, intersected: the pages in both.
        assert_eq!(intersect_runs(&from, &[(5, 20)]), vec![(5, 5), (20, 5)]);
    }

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
    fn blocks_without_data_are_the_holes() {
        // 16 MiB: data in block 0, pages 600..700 (blocks 1), and block 5.
        let blocks = Blocks::of(
            &[(0, 10), (600, 100), (5 * 512 + 3, 1), (9999, 5)],
            16 << 20,
        );
        assert_eq!(blocks.holes(), vec![(2 << 21, 3 << 21), (6 << 21, 2 << 21)]);
        let (data, holes) = blocks.split(&[(5, 10), (1020, 10), (2 * 512, 3), (3 * 512 - 1, 2)]);
        assert_eq!(data, vec![(5, 10), (1020, 4)]);
        assert_eq!(
            holes,
            vec![
                (2, vec![(1024, 6), (1024, 3), (1535, 1)]),
                (3, vec![(1536, 1)])
            ]
        );
        assert!(Blocks::all_data(16 << 20).holes().is_empty());
        // Only holes of 16 MiB or more are worth a replaced mapping.
        let blocks = Blocks::of(&[(0, 1), (20 * BLOCK_PAGES, 1)], 64 << 20);
        assert_eq!(
            blocks.holes(),
            vec![(2 << 20, 38 << 20), (42 << 20, 22 << 20)]
        );
        assert_eq!(blocks.anonymous_ranges(), blocks.holes());
        let blocks = Blocks::of(&[(0, 1), (4 * BLOCK_PAGES, 1)], 16 << 20);
        assert_eq!(
            blocks.holes(),
            vec![(2 << 20, 6 << 20), (10 << 20, 6 << 20)]
        );
        assert!(blocks.anonymous_ranges().is_empty());
    }

    #[test]
    fn anonymous_memory_over_holes_reads_zero_and_clears() {
        let mem = create(16 << 20).unwrap();
        write(&mem, 4 << 20, b"data").unwrap();
        anonymous_over(&mem, &[(4 << 20, 2 << 20)]).unwrap();
        assert_eq!(read(&mem, 4 << 20, 4).unwrap(), [0; 4]);
        write(&mem, (4 << 20) + 8192, b"x").unwrap();
        let dropped = clear_holes(&mem, &[(2, vec![(1026, 1)])]).unwrap();
        assert!(dropped.is_empty());
        assert_eq!(read(&mem, (4 << 20) + 8192, 1).unwrap(), [0]);
        write(&mem, 4 << 20, &[1; 2 << 20]).unwrap();
        let dropped = clear_holes(&mem, &[(2, vec![(1024, 512)])]).unwrap();
        assert_eq!(dropped, vec![(1024, 512)]);
        assert_eq!(read(&mem, 4 << 20, 8).unwrap(), [0; 8]);
        assert!(anonymous_over(&mem, &[(15 << 20, 2 << 20)]).is_err());
    }

    #[test]
    fn touched_anonymous_pages_are_found_and_dropped() {
        let mem = create(16 << 20).unwrap();
        anonymous_over(&mem, &[(4 << 20, 8 << 20)]).unwrap();
        assert!(resident_runs(&mem, 4 << 20, 8 << 20).unwrap().is_empty());
        write(&mem, (6 << 20) + 5, b"x").unwrap();
        let runs = resident_runs(&mem, 4 << 20, 8 << 20).unwrap();
        // A 4 KiB page, or its whole huge page if the host gave one.
        assert!(runs == [(1536, 1)] || runs == [(1536, 512)], "{runs:?}");
        // The fallback without PAGEMAP_SCAN sees the same.
        let (base, _) = host_range(&mem);
        let by_mincore = mincore_runs(base as u64 + (4 << 20), 8 << 20, 1024).unwrap();
        assert_eq!(by_mincore, runs);
        drop_runs(&mem, &runs).unwrap();
        assert!(resident_runs(&mem, 4 << 20, 8 << 20).unwrap().is_empty());
        assert_eq!(read(&mem, (6 << 20) + 5, 1).unwrap(), [0]);
        resident_runs(&mem, 15 << 20, 2 << 20).unwrap_err();
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
