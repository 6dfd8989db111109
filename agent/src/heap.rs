//! The global allocator: talc over the heap range the host gives in the boot
//! record. The guest is single-threaded; the spin lock is never contended.

use talc::source::Manual;
use talc::TalcLock;

#[global_allocator]
static ALLOCATOR: TalcLock<spinning_top::RawSpinlock, Manual> = TalcLock::new(Manual);

/// Hands the heap to the allocator. Called once, before any allocation.
pub fn init(start: u64, end: u64) {
    let size = end.saturating_sub(start) as usize;
    // SAFETY: the host reserves [start, end) for the heap: mapped, writable
    // and used by nothing else (wisp_abi::layout).
    let claimed = unsafe { ALLOCATOR.lock().claim(start as *mut u8, size) };
    if claimed.is_none() {
        crate::rt::fatal("heap too small to claim");
    }
}
