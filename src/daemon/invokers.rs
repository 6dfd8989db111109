//! The invocation threads: a fixed set of threads, named `wisp-invoke`,
//! that run guest code and nothing else. Each installs the invocation
//! seccomp filter ([`crate::seccomp`]) before taking its first job; jobs
//! (invocations, and deploys' boots to ready) arrive through a queue.
//! Compiling, writing snapshots and recovery keep running on the async
//! runtime's blocking threads, which stay unfiltered.
//!
//! The handoff is what `tokio::task::spawn_blocking` does for an idle
//! thread (a queue under a mutex and a condition variable), so it costs
//! the warm path nothing extra.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Arc, Condvar, Mutex};

use anyhow::{anyhow, Context, Result};
use tracing::error;
use wisp_vmm::seccomp::Filter;

/// The name of every invocation thread (as `/proc/<pid>/task/*/comm` shows).
pub const THREAD_NAME: &str = "wisp-invoke";

/// The nice value of the invocation threads, relative to the daemon's
/// others: when guest code saturates the cores, the threads that answer
/// HTTP (`/healthz` included) and keep the pools still get the CPU first,
/// so a busy host never looks dead. Among invocations nothing changes; on
/// a host shared with other busy processes, guest code yields to them too.
/// Measured with `tests/hostile_mix.rs` on 2 loaded cores: `/healthz` p99
/// 120-160 ms and worst 176-235 ms at nice 0, p99 34-63 ms and worst
/// 61-84 ms at nice 5.
pub const NICE: libc::c_int = 5;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    ready: Condvar,
}

/// The invocation threads.
pub struct Invokers {
    queue: Arc<Queue>,
}

impl Invokers {
    /// Starts `threads` threads, each filtered with `filter` (if any) before
    /// it runs anything; fails if any could not start or filter itself.
    pub fn start(threads: usize, filter: Option<Filter>) -> Result<Invokers> {
        let queue = Arc::new(Queue::default());
        let filter = filter.map(Arc::new);
        let (started, reports) = mpsc::channel();
        for _ in 0..threads.max(1) {
            let (queue, filter, started) = (Arc::clone(&queue), filter.clone(), started.clone());
            std::thread::Builder::new()
                .name(THREAD_NAME.into())
                .spawn(move || {
                    lower_priority();
                    if let Some(filter) = filter {
                        let applied = wisp_vmm::seccomp::apply(&filter);
                        let failed = applied.is_err();
                        let _ = started.send(applied);
                        if failed {
                            return;
                        }
                    } else {
                        let _ = started.send(Ok(()));
                    }
                    drop(started);
                    work(&queue);
                })
                .context("starting an invocation thread")?;
        }
        drop(started);
        for report in reports {
            report.map_err(|e| anyhow!("filtering an invocation thread: {e}"))?;
        }
        Ok(Invokers { queue })
    }

    /// Runs `job` on an invocation thread. Callers bound how many are
    /// outstanding to the number of threads, so a job starts at once.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) {
        self.queue
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(Box::new(job));
        self.queue.ready.notify_one();
    }
}

/// Gives this thread the nice value [`NICE`] (best effort: a failure only
/// costs the control plane's precedence, and is logged).
fn lower_priority() {
    // SAFETY: plain system calls on this thread's own id.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE)
    };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "lowering an invocation thread's priority");
    }
}

/// An invocation thread's life: take a job, run it, forever. A job that
/// panics is logged and the thread goes on (whatever it held was dropped
/// while unwinding, so its caller gets an error rather than a hang).
fn work(queue: &Queue) {
    loop {
        let job = {
            let mut jobs = queue.jobs.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                match jobs.pop_front() {
                    Some(job) => break job,
                    None => jobs = queue.ready.wait(jobs).unwrap_or_else(|e| e.into_inner()),
                }
            }
        };
        if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
            error!("an invocation panicked; its request failed");
        }
    }
}
