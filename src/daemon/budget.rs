//! The host-wide memory budget for instances: a restore is refused (the
//! request gets 429) rather than letting instances exhaust the host.

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

    /// Charges `bytes` if they fit; false (and nothing charged) otherwise.
    pub fn try_charge(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// Charges `bytes` whether or not they fit (memory already in use).
    pub fn force_charge(&self, bytes: u64) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Returns `bytes` to the budget.
    pub fn release(&self, bytes: u64) {
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
