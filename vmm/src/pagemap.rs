//! This process's page tables, as `/proc/self/pagemap` shows them: which
//! pages of guest memory are present.
//!
//! The file is opened once, early: a process that dropped root is no
//! longer dumpable and may not open its own pagemap, and a filtered VM
//! thread may not open files at all. Its `PAGEMAP_SCAN` ioctl (Linux 6.7)
//! returns the present ranges of a mapping while skipping page tables that
//! hold nothing, so finding what a guest touched in a large, mostly
//! untouched hole costs next to nothing; without it, `mincore` fills a byte
//! per page.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::sync::OnceLock;

use wisp_abi::layout::PAGE_SIZE;

/// `PAGEMAP_SCAN`: `_IOWR('f', 16, struct pm_scan_arg)` (`<linux/fs.h>`).
pub(crate) const PAGEMAP_SCAN: u64 = 0xc060_6610;
/// `PAGE_IS_PRESENT`, a page category of `PAGEMAP_SCAN`.
const PAGE_IS_PRESENT: u64 = 1 << 3;

/// `struct pm_scan_arg`.
#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `struct page_region`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// The process's pagemap, if it could be opened.
fn file() -> Option<&'static File> {
    static PAGEMAP: OnceLock<Option<File>> = OnceLock::new();
    PAGEMAP
        .get_or_init(|| File::open("/proc/self/pagemap").ok())
        .as_ref()
}

/// Opens the pagemap now, while the process may (before dropping root or
/// filtering threads). Failure is not an error: the callers fall back.
pub(crate) fn open() {
    let _ = file();
}

/// Reads the raw pagemap entries (one `u64` per page) of `pages` pages from
/// host address `addr`. Never opens a file (threads under seccomp call it):
/// if the pagemap could not be opened, neither could it be now.
pub(crate) fn entries(addr: u64, pages: u64) -> std::io::Result<Vec<u8>> {
    let mut raw = vec![0u8; pages as usize * 8];
    let file = file().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "/proc/self/pagemap could not be opened",
        )
    })?;
    file.read_exact_at(&mut raw, addr / PAGE_SIZE * 8)?;
    Ok(raw)
}

/// The present pages of the host range `[addr, addr + len)`, as
/// `(first page, count)` runs numbered from `addr`; `None` if
/// `PAGEMAP_SCAN` is unavailable (an older kernel, or no pagemap).
pub(crate) fn present(addr: u64, len: u64) -> Option<std::io::Result<Vec<(u64, u64)>>> {
    let file = file()?;
    let mut regions = [PageRegion::default(); 64];
    let mut runs = Vec::new();
    let (mut at, end) = (addr, addr + len);
    while at < end {
        let mut arg = PmScanArg {
            size: size_of::<PmScanArg>() as u64,
            start: at,
            end,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            category_mask: PAGE_IS_PRESENT,
            return_mask: PAGE_IS_PRESENT,
            ..PmScanArg::default()
        };
        // SAFETY: `arg` is a valid pm_scan_arg of the size it says; `vec`
        // points at `vec_len` page_regions the kernel may fill, which live
        // across the call; the range is only read.
        let n = unsafe { libc::ioctl(file.as_raw_fd(), PAGEMAP_SCAN as _, &mut arg) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                // Not this kernel's: let the caller fall back.
                Some(libc::ENOTTY | libc::EINVAL) if runs.is_empty() && at == addr => None,
                _ => Some(Err(e)),
            };
        }
        for region in &regions[..n as usize] {
            let (first, count) = (
                (region.start - addr) / PAGE_SIZE,
                (region.end - region.start) / PAGE_SIZE,
            );
            // A run cut where one call's vector filled goes on in the next.
            match runs.last_mut() {
                Some((s, c)) if *s + *c == first => *c += count,
                _ => runs.push((first, count)),
            }
        }
        if arg.walk_end <= at {
            break;
        }
        at = arg.walk_end;
    }
    Some(Ok(runs))
}
