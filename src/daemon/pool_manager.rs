//! The pool manager: a thread that, every tick, tops up the pre-created
//! shells and sizes each function's ready set to its predicted demand
//! (reserved + an EWMA of recent concurrency, with headroom, up to
//! `max_ready`), shrinking idle functions and trimming when the memory
//! budget is over.
//!
//! A panic in a tick is caught and logged and the next tick runs; if every
//! tick of [`MAX_PANICKING_TICKS`] in a row panics, the daemon exits so
//! that its supervisor restarts it, rather than serving on without pools.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, warn};
use wisp_vmm::{Prefault, Shell};

use super::host::Host;

/// How often the pool manager runs.
const TICK: Duration = Duration::from_millis(100);
/// Most shells the pool manager creates per tick.
const SHELLS_PER_TICK: usize = 32;
/// Most instances the pool manager restores for one function per tick.
const RESTORES_PER_TICK: usize = 8;
/// Headroom over the predicted concurrency.
const DEMAND_HEADROOM: f64 = 1.25;
/// Panicking ticks in a row after which the daemon gives up.
const MAX_PANICKING_TICKS: u32 = 50;
/// Exit status when the pool manager gives up (EX_SOFTWARE).
const GAVE_UP: i32 = 70;

impl Host {
    /// Starts the pool manager on its own thread. Its work is blocking (KVM
    /// ioctls, page copies); on a thread of its own it also does not keep
    /// the runtime's idle blocking threads alive by waking them in turn.
    pub fn start_pool_manager(self: &Arc<Self>) -> std::io::Result<()> {
        let host = Arc::clone(self);
        std::thread::Builder::new()
            .name("wisp-pool".into())
            .spawn(move || {
                supervise(TICK, MAX_PANICKING_TICKS, || host.maintain_once());
                error!("the pool manager keeps panicking; exiting so that the daemon is restarted");
                std::process::exit(GAVE_UP);
            })
            .map(|_| ())
    }

    /// One tick.
    fn maintain_once(&self) {
        for _ in 0..self.shells_missing().min(SHELLS_PER_TICK) {
            match Shell::new() {
                Ok(shell) => self.keep_shell(shell),
                Err(e) => {
                    warn!(error = %super::error::chain(&e), "creating a shell");
                    break;
                }
            }
        }
        let mut shrank = false;
        for f in self.all() {
            let demand = f.pool.sample_demand();
            let reserved = f.sizing.reserved();
            let max_ready = f.sizing.max_ready();
            let busy = f.pool.busy() as usize;
            let idle = f.pool.idle_secs() > self.settings.idle_timeout.as_secs_f64();
            let predicted = (demand * DEMAND_HEADROOM).ceil() as usize;
            let target = if idle {
                reserved
            } else {
                predicted.max(reserved)
            }
            .min(max_ready);
            let want_ready = target.saturating_sub(busy).max(reserved);
            let ready = f.pool.ready();
            if self.budget.over() {
                f.pool.trim(reserved);
            } else if ready < want_ready {
                for _ in 0..(want_ready - ready).min(RESTORES_PER_TICK) {
                    match self.restore(&f, Prefault::None) {
                        Ok(Some(instance)) => f.pool.put(instance, max_ready),
                        Ok(None) => break,
                        Err(e) => {
                            warn!(function = %f.name, error = %super::error::chain(&e), "restoring an instance");
                            break;
                        }
                    }
                }
            } else if ready > want_ready && idle {
                f.pool.trim(want_ready);
                shrank = true;
            }
        }
        if shrank {
            release_freed_heap();
        }
    }
}

/// Gives the C allocator's free memory back to the host once a function's
/// pool has shrunk after a burst: the invocation threads' allocator arenas
/// otherwise keep what they freed (the soak saw ~20 MiB stay resident after
/// 32 concurrent clients), and only `malloc_trim` returns it.
fn release_freed_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes the allocator's own locks and releases only
    // memory no allocation uses.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs `tick` every `period`, catching and logging its panics; returns
/// once `give_up` ticks in a row have panicked.
fn supervise(period: Duration, give_up: u32, mut tick: impl FnMut()) {
    let mut panicking = 0;
    while panicking < give_up {
        let t0 = Instant::now();
        match std::panic::catch_unwind(AssertUnwindSafe(&mut tick)) {
            Ok(()) => panicking = 0,
            Err(panic) => {
                panicking += 1;
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                error!(panic = %what, in_a_row = panicking, "the pool manager panicked; carrying on");
            }
        }
        std::thread::sleep(period.saturating_sub(t0.elapsed()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_tick_is_survived_and_endless_panics_give_up() {
        // Panics on every third tick: runs on; stop it by panicking for good.
        let mut n = 0;
        supervise(Duration::ZERO, 3, || {
            n += 1;
            if n % 3 == 0 && n < 30 {
                panic!("tick {n}");
            }
            if n >= 30 {
                panic!("for good");
            }
        });
        // 29 ticks, 9 of them panicking, then 3 in a row.
        assert_eq!(n, 32);
    }
}
