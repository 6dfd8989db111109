//! The guest heap, shared from opposite ends: the module's linear memory
//! grows up from the bottom ([`crate::linear`]), and the allocator (talc)
//! takes heaps from the top down as it needs them. Neither has a fixed
//! share: a module can grow its memory into nearly all of the VM, and
//! `/tmp` files or the runtime's own data can take what the module does not
//! use. Pages neither side touched stay untouched, so they cost the host
//! nothing and are holes in a snapshot.
//!
//! The guest is single-threaded, so the two boundaries are plain atomics;
//! the spin lock around the allocator is never contended.

use core::alloc::Layout;
use core::sync::atomic::{AtomicUsize, Ordering};

use talc::base::binning::Binning;
use talc::base::{Talc, CHUNK_UNIT};
use talc::source::Source;
use talc::TalcLock;

/// Bytes of the first allocator heap, claimed at boot (the runtime's start
/// needs a few MiB; more comes on demand).
const FIRST_HEAP: usize = 16 << 20;
/// The least the allocator takes when it needs more.
const MORE_HEAP: usize = 4 << 20;
/// Alignment of every allocator heap (and so of the linear memory's top).
const HEAP_ALIGN: usize = 64 << 10;

/// The lowest address the allocator has claimed.
static ALLOCATOR_LOW: AtomicUsize = AtomicUsize::new(0);
/// One past the last byte of the module's linear memory; the bottom of the
/// heap before there is one.
static LINEAR_END: AtomicUsize = AtomicUsize::new(0);
/// The bottom of the heap: where the linear memory starts.
static BOTTOM: AtomicUsize = AtomicUsize::new(0);

/// Takes heaps for talc from the top of the guest heap down, never below
/// the linear memory's end.
#[derive(Debug)]
pub struct Downward;

// SAFETY: `acquire` touches only `talc` and the atomics above, never the
// global allocator.
unsafe impl Source for Downward {
    fn acquire<B: Binning>(talc: &mut Talc<Self, B>, layout: Layout) -> Result<(), ()> {
        let needed = layout
            .size()
            .checked_add(layout.align() + 4 * CHUNK_UNIT + 4096)
            .ok_or(())?
            .max(MORE_HEAP)
            .next_multiple_of(HEAP_ALIGN);
        let low = ALLOCATOR_LOW.load(Ordering::Relaxed);
        let base = low.checked_sub(needed).ok_or(())?;
        if base < LINEAR_END.load(Ordering::Relaxed) {
            return Err(());
        }
        // SAFETY: [base, low) lies between the linear memory's end and the
        // allocator's lowest heap: nothing uses it, and the linear memory
        // never grows past ALLOCATOR_LOW, which now moves down to `base`.
        unsafe { talc.claim(base as *mut u8, needed) }.ok_or(())?;
        ALLOCATOR_LOW.store(base, Ordering::Relaxed);
        Ok(())
    }
}

#[global_allocator]
static ALLOCATOR: TalcLock<spinning_top::RawSpinlock, Downward> = TalcLock::new(Downward);

/// Hands the heap `[start, end)` out: its top to the allocator, the rest to
/// the linear memory. Called once, before any allocation.
pub fn init(start: u64, end: u64) {
    let (start, end) = (start as usize, end as usize);
    let bottom = start.next_multiple_of(HEAP_ALIGN);
    let first = end
        .saturating_sub(FIRST_HEAP.min(end.saturating_sub(bottom) / 2))
        .next_multiple_of(HEAP_ALIGN)
        .min(end);
    BOTTOM.store(bottom, Ordering::Relaxed);
    LINEAR_END.store(bottom, Ordering::Relaxed);
    ALLOCATOR_LOW.store(first, Ordering::Relaxed);
    // SAFETY: the host reserves [start, end) for the heap: mapped, writable
    // and used by nothing else (wisp_abi::layout); the allocator gets its
    // top, [first, end).
    let claimed = unsafe { ALLOCATOR.lock().claim(first as *mut u8, end - first) };
    if claimed.is_none() {
        crate::rt::fatal("heap too small to claim");
    }
}

/// Where the linear memory starts.
pub fn bottom() -> usize {
    BOTTOM.load(Ordering::Relaxed)
}

/// Moves the linear memory's end to `end` if the allocator has not taken
/// that far down; false (nothing changed) otherwise.
pub fn grow_linear_to(end: usize) -> bool {
    if end > ALLOCATOR_LOW.load(Ordering::Relaxed) {
        return false;
    }
    LINEAR_END.store(
        end.max(LINEAR_END.load(Ordering::Relaxed)),
        Ordering::Relaxed,
    );
    true
}

/// The most the linear memory could hold now: from the bottom to the
/// allocator's lowest heap.
pub fn linear_room() -> usize {
    ALLOCATOR_LOW.load(Ordering::Relaxed) - bottom()
}
