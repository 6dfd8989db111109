//! Keeps the module's memory growth inside the VM, with a clear error.
//!
//! The linear memory grows in place into the part of the guest heap the
//! allocator has not taken ([`crate::heap`]). A grow beyond that ends the
//! invocation as out-of-memory (reported to the host as such) rather than
//! as an obscure trap or an allocator panic.

use wasmtime::{Error, ResourceLimiter, Result};

use crate::heap;

/// A byte count, written for people: `512 KiB`, `68 MiB`, `4 GiB`,
/// `16 EiB`.
#[derive(Clone, Copy, Debug)]
pub struct Size(pub u64);

impl core::fmt::Display for Size {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        const UNITS: [&str; 7] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        let mut unit = 0;
        while unit + 1 < UNITS.len() && self.0 >> (10 * (unit + 1)) > 0 {
            unit += 1;
        }
        let shift = 10 * unit;
        let whole = self.0 >> shift;
        // The first decimal, rounded down: the remainder is below 2^60.
        let tenths = ((self.0 & ((1u64 << shift) - 1)) * 10) >> shift;
        if unit == 0 || tenths == 0 {
            write!(f, "{whole} {}", UNITS[unit])
        } else {
            write!(f, "{whole}.{tenths} {}", UNITS[unit])
        }
    }
}

/// The error that marks an out-of-memory end of invocation.
#[derive(Debug)]
pub struct OutOfMemory {
    /// Linear-memory size the module asked for.
    pub desired: u64,
    /// Room for linear memory when it asked.
    pub room: u64,
    /// The VM's memory.
    pub mem_size: u64,
}

impl core::fmt::Display for OutOfMemory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "out of memory: the module asked for {} of linear memory; this VM's {} of memory has room for {}",
            Size(self.desired),
            Size(self.mem_size),
            Size(self.room)
        )
    }
}

impl core::error::Error for OutOfMemory {}

/// Resource limits of one store.
pub struct Limits {
    heap: usize,
    mem_size: u64,
    desired: usize,
}

impl Limits {
    /// Limits for a VM of `mem_size` bytes whose heap is `heap` bytes.
    pub fn new(mem_size: u64, heap: usize) -> Limits {
        Limits {
            heap,
            mem_size,
            desired: 0,
        }
    }

    fn out_of_memory(&self, desired: usize) -> Error {
        Error::new(OutOfMemory {
            desired: desired as u64,
            room: heap::linear_room() as u64,
            mem_size: self.mem_size,
        })
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
        if desired > heap::linear_room() {
            return Err(self.out_of_memory(desired));
        }
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: Error) -> Result<()> {
        // The allocator took the room meanwhile (a second memory, or the
        // runtime's own data): still the VM's memory limit, not a bug.
        Err(self.out_of_memory(self.desired))
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
