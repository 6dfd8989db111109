//! The guest memory file: a sparse file holding only the non-zero pages,
//! the extents that say where they are, and their checksum.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

/// The granularity of the memory file: 4 KiB guest pages.
pub const PAGE_SIZE: u64 = 4096;

/// A run of `pages` consecutive guest pages starting at page `start_page`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Extent {
    /// The first page's number (its guest-physical address / [`PAGE_SIZE`]).
    pub start_page: u64,
    /// How many pages the run has (at least one).
    pub pages: u64,
}

impl Extent {
    /// The page after the last one (saturating).
    pub fn end_page(&self) -> u64 {
        self.start_page.saturating_add(self.pages)
    }

    /// The run's byte offset in guest memory and in the memory file.
    pub fn offset(&self) -> u64 {
        self.start_page.saturating_mul(PAGE_SIZE)
    }

    /// The run's length in bytes.
    pub fn len(&self) -> u64 {
        self.pages.saturating_mul(PAGE_SIZE)
    }

    /// Whether the run has no pages (never true of a valid extent).
    pub fn is_empty(&self) -> bool {
        self.pages == 0
    }
}

static ZERO_PAGE: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];

/// The runs of non-zero pages in `mem`, whose length is a multiple of
/// [`PAGE_SIZE`].
#[cfg(test)]
pub(crate) fn nonzero_extents(mem: &[u8]) -> Vec<Extent> {
    let all = Extent {
        start_page: 0,
        pages: mem.len() as u64 / PAGE_SIZE,
    };
    nonzero_extents_within(mem, &[all])
}

/// The runs of non-zero pages of `mem` among `candidates` (sorted,
/// non-overlapping, within `mem`); pages outside them are not read.
pub(crate) fn nonzero_extents_within(mem: &[u8], candidates: &[Extent]) -> Vec<Extent> {
    let mut extents: Vec<Extent> = Vec::new();
    for run in candidates {
        let bytes = &mem[run.offset() as usize..(run.offset() + run.len()) as usize];
        for (page, bytes) in (run.start_page..).zip(bytes.chunks_exact(PAGE_SIZE as usize)) {
            // A slice comparison is a memcmp: fast even in debug builds.
            if bytes == ZERO_PAGE {
                continue;
            }
            match extents.last_mut() {
                Some(last) if last.end_page() == page => last.pages += 1,
                _ => extents.push(Extent {
                    start_page: page,
                    pages: 1,
                }),
            }
        }
    }
    extents
}

/// Sorts `extents` and merges those that overlap or touch.
pub(crate) fn normalize(mut extents: Vec<Extent>) -> Vec<Extent> {
    extents.retain(|e| !e.is_empty());
    extents.sort_unstable();
    let mut merged: Vec<Extent> = Vec::with_capacity(extents.len());
    for e in extents {
        match merged.last_mut() {
            Some(last) if e.start_page <= last.end_page() => {
                last.pages = last.pages.max(e.end_page() - last.start_page);
            }
            _ => merged.push(e),
        }
    }
    merged
}

/// Checks that `extents` are non-empty, sorted, non-overlapping and within
/// `size` bytes of memory; the error names them as `what`.
pub(crate) fn check_extents(extents: &[Extent], size: u64, what: &str) -> Result<(), String> {
    let pages = size / PAGE_SIZE;
    let mut prev_end = 0;
    for (i, e) in extents.iter().enumerate() {
        if e.is_empty() {
            return Err(format!("{what} {i} is empty"));
        }
        if e.start_page
            .checked_add(e.pages)
            .is_none_or(|end| end > pages)
        {
            return Err(format!(
                "{what} {i} (pages {}+{}) is beyond the {pages} pages of memory",
                e.start_page, e.pages
            ));
        }
        if i > 0 && e.start_page < prev_end {
            return Err(format!("{what} {i} is out of order or overlaps"));
        }
        prev_end = e.end_page();
    }
    Ok(())
}

/// Writes the extents of `mem` into `file`, which must already be
/// `mem.len()` bytes long and all hole.
pub(crate) fn write_extents(file: &File, mem: &[u8], extents: &[Extent]) -> io::Result<()> {
    for e in extents {
        let (off, len) = (e.offset() as usize, e.len() as usize);
        file.write_all_at(&mem[off..off + len], e.offset())?;
    }
    Ok(())
}

/// Host huge-page size: what a block of guest memory is mapped by.
const HUGE_PAGE: u64 = 2 << 20;

/// Puts the byte `ranges` of `file` (2 MiB blocks, 2 MiB-aligned) back in
/// the page cache as huge folios, best effort. Pages cached as `write`
/// left them are small folios, which a mapping of the file can only map
/// 4 KiB at a time, and so can KVM: a guest reading a block of code then
/// takes a fault for every page it reads (~50 for wisp's agent alone). A
/// huge folio is mapped whole by the first read of a block nobody writes,
/// and KVM maps it with one fault. So the ranges' clean pages are dropped
/// and read back through a mapping that asks for huge pages (the kernel's
/// readahead then allocates them); a file system without large folios
/// just reads them back as they were. Call it once the file is synced.
pub fn cache_in_huge_folios(file: &File, ranges: &[(u64, u64)]) {
    let fd = file.as_raw_fd();
    let Ok(size) = file.metadata().map(|m| m.len()) else {
        return;
    };
    for &(start, len) in ranges {
        let len = len.min(size.saturating_sub(start));
        if len == 0 || !start.is_multiple_of(HUGE_PAGE) {
            continue;
        }
        let (Ok(offset), Ok(count)) = (libc::off_t::try_from(start), usize::try_from(len)) else {
            continue;
        };
        // SAFETY: advice on a descriptor; no memory is involved.
        unsafe {
            libc::posix_fadvise(fd, offset, count as libc::off_t, libc::POSIX_FADV_DONTNEED);
        }
        // SAFETY: a new read-only shared mapping of the range, which no
        // Rust reference points into; it is only populated (a populate
        // past the end of a shrunk file fails with an error, it raises no
        // signal) and unmapped below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                count,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                offset,
            )
        };
        if base == libc::MAP_FAILED {
            continue;
        }
        // SAFETY: advice on, then the unmapping of, exactly the mapping
        // made above.
        unsafe {
            libc::madvise(base, count, libc::MADV_HUGEPAGE);
            libc::madvise(base, count, libc::MADV_POPULATE_READ);
            libc::munmap(base, count);
        }
    }
}

/// The xxh3-64 of the extents' bytes of `mem`, in order.
pub(crate) fn checksum_mem(mem: &[u8], extents: &[Extent]) -> u64 {
    let mut hasher = Xxh3::new();
    for e in extents {
        let off = e.offset() as usize;
        hasher.update(&mem[off..off + e.len() as usize]);
    }
    hasher.digest()
}

/// The xxh3-64 of the extents' bytes of `file`, in order, read with pread.
pub(crate) fn checksum_file(file: &File, extents: &[Extent]) -> io::Result<u64> {
    // Small enough to stay in the CPU's cache and to cost few page faults
    // of its own: a restore reads the checksum of every snapshot it opens.
    const CHUNK: u64 = 64 << 10;
    let total: u64 = extents.iter().map(Extent::len).sum();
    let mut buf = vec![0u8; total.min(CHUNK) as usize];
    let mut hasher = Xxh3::new();
    for e in extents {
        let (mut off, end) = (e.offset(), e.offset() + e.len());
        while off < end {
            let n = (end - off).min(CHUNK) as usize;
            file.read_exact_at(&mut buf[..n], off)?;
            hasher.update(&buf[..n]);
            off += n as u64;
        }
    }
    Ok(hasher.digest())
}

/// `lseek(fd, offset, whence)`; `None` when there is no data (or hole) at
/// or after `offset` (`ENXIO`).
fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
    // SAFETY: lseek only moves the file offset of a descriptor `file` owns
    // and keeps open for the call; it touches no memory. Nothing else reads
    // through this descriptor's offset (all I/O here is pread/pwrite).
    let r = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if r >= 0 {
        return Ok(Some(r as u64));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENXIO) => Ok(None),
        _ => Err(err),
    }
}

/// The data regions (`[start, end)` byte ranges) of `file`, `size` bytes
/// long, as the filesystem reports them with `SEEK_DATA`/`SEEK_HOLE`.
fn data_regions(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut regions = Vec::new();
    let mut pos = 0;
    while pos < size {
        let Some(start) = seek(file, pos, libc::SEEK_DATA)? else {
            break;
        };
        let end = seek(file, start, libc::SEEK_HOLE)?
            .unwrap_or(size)
            .min(size);
        if end <= start {
            break;
        }
        regions.push((start, end));
        pos = end;
    }
    Ok(regions)
}

/// The offset of the first non-zero byte of `file` (`size` bytes long)
/// outside `extents` (sorted, in range), if any.
///
/// Only the ranges the filesystem reports as data are read, and those
/// outside the extents must be zero (a filesystem may allocate in blocks
/// larger than a page). If the filesystem does not report holes at all (the
/// whole file is one data region although the extents do not cover it) the
/// check is skipped: it would mean reading all of guest memory.
pub(crate) fn stray_data(file: &File, size: u64, extents: &[Extent]) -> io::Result<Option<u64>> {
    let regions = data_regions(file, size)?;
    let covered: u64 = extents.iter().map(Extent::len).sum();
    if regions == [(0, size)] && covered < size {
        return Ok(None);
    }
    let mut buf = Vec::new();
    for (start, end) in regions {
        for (gap_start, gap_end) in gaps(start, end, extents) {
            buf.resize((gap_end - gap_start).min(1 << 20) as usize, 0);
            let mut off = gap_start;
            while off < gap_end {
                let n = ((gap_end - off) as usize).min(buf.len());
                file.read_exact_at(&mut buf[..n], off)?;
                if let Some(i) = buf[..n].iter().position(|&b| b != 0) {
                    return Ok(Some(off + i as u64));
                }
                off += n as u64;
            }
        }
    }
    Ok(None)
}

/// The parts of the byte range `[start, end)` not covered by `extents`
/// (sorted, non-overlapping).
fn gaps(start: u64, end: u64, extents: &[Extent]) -> Vec<(u64, u64)> {
    let mut gaps = Vec::new();
    let mut pos = start;
    for e in extents {
        if pos >= end {
            break;
        }
        let (e_start, e_end) = (e.offset(), e.offset() + e.len());
        if e_end <= pos {
            continue;
        }
        if e_start > pos {
            gaps.push((pos, e_start.min(end)));
        }
        pos = pos.max(e_end);
    }
    if pos < end {
        gaps.push((pos, end));
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(start_page: u64, pages: u64) -> Extent {
        Extent { start_page, pages }
    }

    #[test]
    fn extents_merge_contiguous_nonzero_pages() {
        let p = PAGE_SIZE as usize;
        let mut mem = vec![0u8; 10 * p];
        for page in [1, 2, 3, 6, 9] {
            mem[page * p + 17] = 1;
        }
        mem[5 * p - 1] = 0xff; // last byte of page 4
        assert_eq!(nonzero_extents(&mem), [ext(1, 4), ext(6, 1), ext(9, 1)]);
        assert!(nonzero_extents(&vec![0u8; 4 * p]).is_empty());
    }

    #[test]
    fn only_candidate_pages_are_read() {
        let p = PAGE_SIZE as usize;
        let mut mem = vec![0u8; 10 * p];
        for page in [1, 2, 5, 6, 9] {
            mem[page * p] = 1;
        }
        // Pages 5 and 9 are non-zero but not candidates: left out.
        assert_eq!(
            nonzero_extents_within(&mem, &[ext(0, 3), ext(6, 2)]),
            [ext(1, 2), ext(6, 1)]
        );
        // Runs that touch across candidates merge.
        assert_eq!(
            nonzero_extents_within(&mem, &[ext(4, 2), ext(6, 1)]),
            [ext(5, 2)]
        );
    }

    #[test]
    fn normalize_sorts_and_merges() {
        assert_eq!(
            normalize(vec![ext(8, 2), ext(0, 1), ext(1, 2), ext(9, 5), ext(20, 0)]),
            [ext(0, 3), ext(8, 6)]
        );
    }

    #[test]
    fn check_extents_rejects_bad_runs() {
        let size = 16 * PAGE_SIZE;
        check_extents(&[ext(0, 1), ext(1, 15)], size, "extent").unwrap();
        assert!(check_extents(&[ext(0, 0)], size, "extent").is_err());
        assert!(check_extents(&[ext(15, 2)], size, "extent").is_err());
        assert!(check_extents(&[ext(u64::MAX, 2)], size, "extent").is_err());
        assert!(check_extents(&[ext(4, 2), ext(5, 1)], size, "extent").is_err());
        assert!(check_extents(&[ext(4, 2), ext(1, 1)], size, "extent").is_err());
    }

    #[test]
    fn gaps_are_the_uncovered_parts() {
        let p = PAGE_SIZE;
        let extents = [ext(1, 2), ext(5, 1)];
        assert_eq!(
            gaps(0, 8 * p, &extents),
            [(0, p), (3 * p, 5 * p), (6 * p, 8 * p)]
        );
        assert_eq!(gaps(p, 3 * p, &extents), []);
        assert_eq!(gaps(2 * p, 4 * p, &extents), [(3 * p, 4 * p)]);
    }

    #[test]
    fn sparse_file_round_trip() {
        let p = PAGE_SIZE as usize;
        let mut mem = vec![0u8; 64 * p];
        mem[3 * p..5 * p].fill(0xab);
        mem[40 * p + 100] = 7;
        let extents = nonzero_extents(&mem);
        let file = tempfile::tempfile().unwrap();
        file.set_len(mem.len() as u64).unwrap();
        write_extents(&file, &mem, &extents).unwrap();
        assert_eq!(
            checksum_file(&file, &extents).unwrap(),
            checksum_mem(&mem, &extents)
        );
        assert_eq!(stray_data(&file, mem.len() as u64, &extents).unwrap(), None);
        let mut back = vec![0u8; mem.len()];
        file.read_exact_at(&mut back, 0).unwrap();
        assert!(back == mem);

        file.write_all_at(&[1], 20 * p as u64 + 5).unwrap();
        assert_eq!(
            stray_data(&file, mem.len() as u64, &extents).unwrap(),
            Some(20 * p as u64 + 5)
        );
    }
}
