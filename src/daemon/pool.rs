//! A function's instances: restored VMs kept ready, the concurrency slots
//! and the bounded queue in front of them, and the demand estimate the
//! pool manager sizes the ready set from.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::instance::Instance;

/// Why a request was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// All concurrency slots busy and the queue full.
    QueueFull,
    /// The function is being deleted or replaced.
    Draining,
}

/// Weight of the newest sample in the demand estimate (sampled every pool
/// manager tick, 100 ms): a burst is followed within a few hundred ms, a
/// lull forgotten over a few seconds.
const DEMAND_ALPHA: f64 = 0.3;

/// The instances and admission state of one function version.
pub struct Pool {
    ready: Mutex<Vec<Instance>>,
    slots: Arc<Semaphore>,
    max_queue: u64,
    queued: AtomicU64,
    busy: AtomicU64,
    /// Requests seen since the last demand sample (admitted or not).
    arrivals: AtomicU64,
    demand: Mutex<f64>,
    last_used: Mutex<Instant>,
    draining: AtomicBool,
}

/// A held concurrency slot; the pool counts the request busy until it is
/// dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    pool: Arc<Pool>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pool.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind;
    // carrying on is safe.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    /// A pool admitting `concurrency` invocations at once and queueing up to
    /// `max_queue` more.
    pub fn new(concurrency: u32, max_queue: u64) -> Arc<Pool> {
        Arc::new(Pool {
            ready: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(concurrency as usize)),
            max_queue,
            queued: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            arrivals: AtomicU64::new(0),
            demand: Mutex::new(0.0),
            last_used: Mutex::new(Instant::now()),
            draining: AtomicBool::new(false),
        })
    }

    /// Waits for a concurrency slot, or refuses at once if the queue is full.
    pub async fn admit(self: &Arc<Self>) -> Result<Slot, Rejection> {
        self.arrivals.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_used) = Instant::now();
        if self.draining.load(Ordering::Acquire) {
            return Err(Rejection::Draining);
        }
        let permit = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // Count ourselves in the queue first, so concurrent arrivals
                // cannot all squeeze past the bound.
                let before = self.queued.fetch_add(1, Ordering::AcqRel);
                if before >= self.max_queue {
                    self.queued.fetch_sub(1, Ordering::AcqRel);
                    return Err(Rejection::QueueFull);
                }
                let permit = Arc::clone(&self.slots).acquire_owned().await;
                self.queued.fetch_sub(1, Ordering::AcqRel);
                permit.map_err(|_| Rejection::Draining)?
            }
        };
        self.busy.fetch_add(1, Ordering::AcqRel);
        Ok(Slot {
            _permit: permit,
            pool: Arc::clone(self),
        })
    }

    /// A ready instance, if there is one (the most recently used: its
    /// pages are the likeliest to be in the CPU caches).
    pub fn take(&self) -> Option<Instance> {
        lock(&self.ready).pop()
    }

    /// Returns an instance to the ready set unless the set already holds
    /// `max_ready` or the pool is draining; otherwise it is dropped.
    pub fn put(&self, instance: Instance, max_ready: usize) {
        if self.draining.load(Ordering::Acquire) {
            return;
        }
        let mut ready = lock(&self.ready);
        if ready.len() < max_ready {
            ready.push(instance);
        }
    }

    /// Whether [`Pool::put`] would keep another instance.
    pub fn has_room(&self, max_ready: usize) -> bool {
        !self.draining.load(Ordering::Acquire) && lock(&self.ready).len() < max_ready
    }

    /// Drops ready instances beyond `keep`, oldest first; returns how many.
    pub fn trim(&self, keep: usize) -> usize {
        // Dropped outside the lock: dropping a VM takes system calls.
        let dropped: Vec<Instance> = {
            let mut ready = lock(&self.ready);
            let excess = ready.len().saturating_sub(keep);
            ready.drain(..excess).collect()
        };
        dropped.len()
    }

    /// Ready instances.
    pub fn ready(&self) -> usize {
        lock(&self.ready).len()
    }

    /// Invocations holding a slot.
    pub fn busy(&self) -> u64 {
        self.busy.load(Ordering::Acquire)
    }

    /// Requests waiting for a slot.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }

    /// Refuses new requests and drops the ready instances; in-flight ones
    /// finish.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        self.slots.close();
        lock(&self.ready).clear();
    }

    /// Folds the concurrency seen since the last call into the demand
    /// estimate (an EWMA of busy + queued, or of arrivals if higher) and
    /// returns it.
    pub fn sample_demand(&self) -> f64 {
        let arrivals = self.arrivals.swap(0, Ordering::AcqRel) as f64;
        let now = (self.busy() + self.queued()) as f64;
        let sample = now.max(arrivals.min(1.0));
        let mut demand = lock(&self.demand);
        *demand = DEMAND_ALPHA * sample + (1.0 - DEMAND_ALPHA) * *demand;
        *demand
    }

    /// Seconds since a request last arrived.
    pub fn idle_secs(&self) -> f64 {
        lock(&self.last_used).elapsed().as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admission_bounds_concurrency_and_queue() {
        let pool = Pool::new(2, 1);
        let a = pool.admit().await.unwrap();
        let _b = pool.admit().await.unwrap();
        assert_eq!(pool.busy(), 2);
        // Third waits in the queue; fourth is refused.
        let waiting = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { pool.admit().await.map(|_| ()) }
        });
        while pool.queued() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.admit().await.err(), Some(Rejection::QueueFull));
        drop(a);
        assert_eq!(waiting.await.unwrap(), Ok(()));
        assert_eq!(pool.queued(), 0);
        pool.drain();
        assert_eq!(pool.admit().await.err(), Some(Rejection::Draining));
    }

    #[test]
    fn demand_follows_load_and_decays() {
        let pool = Pool::new(10, 10);
        pool.busy.store(10, Ordering::Release);
        let mut d = 0.0;
        for _ in 0..20 {
            d = pool.sample_demand();
        }
        assert!(d > 9.9, "{d}");
        pool.busy.store(0, Ordering::Release);
        for _ in 0..20 {
            d = pool.sample_demand();
        }
        assert!(d < 0.01, "{d}");
    }
}
