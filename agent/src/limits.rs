//! Keeps the module's memory growth inside the VM, with a clear error.
//!
//! Linear memory lives on the agent heap, so the heap size bounds it. A grow
//! beyond that, or one the allocator cannot satisfy, ends the invocation as
//! out-of-memory (reported to the host as such) rather than as an obscure
//! trap or an allocator panic.

use wasmtime::{Error, ResourceLimiter, Result};

/// The error that marks an out-of-memory end of invocation.
#[derive(Debug)]
pub struct OutOfMemory {
    /// Linear-memory size the module asked for.
    pub desired: usize,
    /// The guest heap, which bounds it.
    pub heap: usize,
}

impl core::fmt::Display for OutOfMemory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "out of memory: the module grew its linear memory to {} MiB, more than the VM's {} MiB heap can hold",
            self.desired >> 20,
            self.heap >> 20
        )
    }
}

impl core::error::Error for OutOfMemory {}

/// Resource limits of one store.
pub struct Limits {
    heap: usize,
    desired: usize,
}

impl Limits {
    /// Limits for a heap of `heap` bytes.
    pub fn new(heap: usize) -> Limits {
        Limits { heap, desired: 0 }
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        self.desired = desired;
        if desired > self.heap {
            return Err(Error::new(OutOfMemory {
                desired,
                heap: self.heap,
            }));
        }
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: Error) -> Result<()> {
        // The allocator could not find room (the heap also holds the
        // runtime's own data): still the VM's memory limit, not a bug.
        Err(Error::new(OutOfMemory {
            desired: self.desired,
            heap: self.heap,
        }))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool> {
        Ok(maximum.is_none_or(|max| desired <= max) && desired <= self.heap / 8)
    }
}
