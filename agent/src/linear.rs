//! The module's linear memory, in place at the bottom of the guest heap
//! ([`crate::heap`]): it grows without moving or copying, into whatever
//! the allocator has not taken, so a module can use nearly all of the VM's
//! memory. (A heap allocation grown by `realloc` needed the old and the new
//! size at once, and stopped at half the heap.)
//!
//! Only the first memory the module defines gets this place; any other
//! (multi-memory modules) is an ordinary allocation.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use wasmtime::{LinearMemory, MemoryCreator, MemoryType};

use crate::heap;

/// Whether the in-place memory is taken.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Why a memory could not grow: the VM has no room for it.
#[derive(Debug)]
pub struct NoRoom {
    /// The size asked for, in bytes.
    pub desired: usize,
    /// The room there is, in bytes.
    pub room: usize,
}

impl core::fmt::Display for NoRoom {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "no room for {} of linear memory ({} free)",
            crate::limits::Size(self.desired as u64),
            crate::limits::Size(self.room as u64)
        )
    }
}

impl core::error::Error for NoRoom {}

/// The memory at the bottom of the heap.
struct InPlace {
    base: usize,
    size: usize,
}

// SAFETY: the region [base, base + size) belongs to this memory alone (the
// allocator never claims below the linear memory's end) and is zero where
// nothing wrote it: guest memory starts zeroed, and restores reset it.
unsafe impl LinearMemory for InPlace {
    fn byte_size(&self) -> usize {
        self.size
    }

    fn byte_capacity(&self) -> usize {
        // Growth past the current size is not promised (the allocator may
        // take the space), so wasmtime asks through `grow_to` each time.
        self.size
    }

    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        let end = self.base.checked_add(new_size);
        if !end.is_some_and(heap::grow_linear_to) {
            return Err(wasmtime::Error::new(NoRoom {
                desired: new_size,
                room: heap::linear_room(),
            }));
        }
        self.size = self.size.max(new_size);
        Ok(())
    }

    fn as_ptr(&self) -> *mut u8 {
        self.base as *mut u8
    }
}

/// A memory that is an ordinary allocation, moved when it grows.
struct Allocated(Vec<u8>);

// SAFETY: the vector's buffer is owned by this memory and zero-filled up
// to its length.
unsafe impl LinearMemory for Allocated {
    fn byte_size(&self) -> usize {
        self.0.len()
    }

    fn byte_capacity(&self) -> usize {
        self.0.capacity()
    }

    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        let more = new_size.saturating_sub(self.0.len());
        self.0.try_reserve_exact(more).map_err(|_| {
            wasmtime::Error::new(NoRoom {
                desired: new_size,
                room: heap::linear_room(),
            })
        })?;
        self.0.resize(new_size.max(self.0.len()), 0);
        Ok(())
    }

    fn as_ptr(&self) -> *mut u8 {
        self.0.as_ptr().cast_mut()
    }
}

/// Makes the module's memories: the first in place, the rest allocated.
pub struct Creator;

// SAFETY: every memory returned is zero-filled, owned by its instance and
// never touched by anything else while it lives.
unsafe impl MemoryCreator for Creator {
    fn new_memory(
        &self,
        _ty: MemoryType,
        minimum: usize,
        _maximum: Option<usize>,
        reserved_size_in_bytes: Option<usize>,
        guard_size_in_bytes: usize,
    ) -> Result<Box<dyn LinearMemory>, String> {
        // The engine configuration asks for neither (wisp_engine::config).
        if reserved_size_in_bytes.is_some_and(|r| r > 0) || guard_size_in_bytes > 0 {
            return Err("a memory reservation or guard was asked for".into());
        }
        if !TAKEN.swap(true, Ordering::Relaxed) {
            let mut memory = InPlace {
                base: heap::bottom(),
                size: 0,
            };
            memory.grow_to(minimum).map_err(|e| alloc::format!("{e}"))?;
            return Ok(Box::new(memory));
        }
        let mut memory = Allocated(Vec::new());
        memory.grow_to(minimum).map_err(|e| alloc::format!("{e}"))?;
        Ok(Box::new(memory))
    }
}
