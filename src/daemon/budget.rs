//! The host-wide memory budget for instances: a restore, a run or a
//! deploy's boot is refused (the request gets 429) rather than letting
//! instances exhaust the host.
//!
//! What is charged bounds what instances can really use. An idle instance
//! is charged what it holds: a base for KVM and bookkeeping plus the pages
//! it wrote (shared snapshot pages are not its own). A running instance,
//! and a deploy's VM while it boots, may touch every page of guest memory,
//! so for as long as it runs it is charged the base plus all of guest
//! memory; afterwards it is charged what it holds again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What an instance is charged beyond the pages it writes: KVM's kernel
/// structures and the host's bookkeeping. Measured here: ~0.5 MiB for an
/// idle 128 MiB instance (docs/SNAPSHOT.md) and ~10 MiB for a 4 GiB one
/// (KVM's per-VM memory grows with guest memory), so 1 MiB plus 1/256 of
/// guest memory, which covers both.
pub fn instance_base_bytes(mem_size: u64) -> u64 {
    (1 << 20) + mem_size / 256
}

/// Bytes of host memory charged to one holder (an instance, a booting VM),
/// returned to the budget when dropped.
#[derive(Debug)]
pub struct Charge {
    bytes: u64,
    budget: Arc<MemoryBudget>,
}

impl Charge {
    /// Bytes charged.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Grows the charge to `bytes` if the budget has room for the
    /// difference; false (nothing changed) otherwise. Never shrinks.
    pub fn try_grow(&mut self, bytes: u64) -> bool {
        if bytes <= self.bytes {
            return true;
        }
        if !self.budget.try_charge(bytes - self.bytes) {
            return false;
        }
        self.bytes = bytes;
        true
    }

    /// Sets the charge to `bytes`, whether or not they fit: for memory
    /// already in use.
    pub fn set(&mut self, bytes: u64) {
        if bytes > self.bytes {
            self.budget.force_charge(bytes - self.bytes);
        } else {
            self.budget.release(self.bytes - bytes);
        }
        self.bytes = bytes;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// Bytes of host memory instances may use, and what they use now.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// A charge of `bytes`, if they fit.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Option<Charge> {
        self.try_charge(bytes).then(|| Charge {
            bytes,
            budget: Arc::clone(self),
        })
    }

    /// Charges `bytes` if they fit; false (and nothing charged) otherwise.
    fn try_charge(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// Charges `bytes` whether or not they fit (memory already in use).
    fn force_charge(&self, bytes: u64) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Returns `bytes` to the budget.
    fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether more is charged than allowed (possible after force charges).
    pub fn over(&self) -> bool {
        self.used() > self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_charge_grows_with_guest_memory() {
        assert_eq!(instance_base_bytes(128 << 20), (1 << 20) + (512 << 10));
        assert_eq!(instance_base_bytes(4 << 30), 17 << 20);
    }

    #[test]
    fn charges_grow_within_the_limit_and_go_back_when_dropped() {
        let budget = MemoryBudget::new(100);
        let mut a = budget.reserve(10).unwrap();
        assert!(a.try_grow(90));
        assert!(budget.reserve(11).is_none());
        assert!(!a.try_grow(101));
        assert_eq!(a.bytes(), 90);
        a.set(20);
        assert_eq!(budget.used(), 20);
        let b = budget.reserve(80).unwrap();
        a.set(30);
        assert!(budget.over());
        drop(a);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn charges_stop_at_the_limit() {
        let budget = MemoryBudget::new(10);
        assert!(budget.try_charge(6));
        assert!(!budget.try_charge(5));
        assert!(budget.try_charge(4));
        assert_eq!(budget.used(), 10);
        budget.release(7);
        assert_eq!(budget.used(), 3);
        budget.force_charge(20);
        assert!(budget.over());
        budget.release(100);
        assert_eq!(budget.used(), 0);
    }
}
