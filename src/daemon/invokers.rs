//! The invocation threads: a fixed set of threads, named `wisp-invoke`,
//! that run guest code and nothing else. Each installs the invocation
//! seccomp filter ([`crate::seccomp`]) before taking its first job; jobs
//! (invocations, and deploys' boots to ready) arrive through a queue.
//! Compiling, writing snapshots and recovery keep running on the async
//! runtime's blocking threads, which stay unfiltered.
//!
//! The handoff is a queue under a mutex and a condition variable, as in
//! `tokio::task::spawn_blocking`, with one difference that halves a warm
//! invocation on the hosts measured: waking a sleeping thread costs tens of
//! microseconds there (a warm hello ran in ~50 µs, and two wake-ups, to
//! the invocation thread and back to the HTTP task, took ~100 µs more).
//! So one idle invocation thread at a time polls the queue for [`POLL`]
//! before it sleeps, and the HTTP task of the only invocation in flight
//! polls for its result while the job runs ([`wait_for`]). Both are
//! bounded, and neither happens while other invocations keep the cores
//! busy.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

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

/// How long an idle invocation thread polls for the next job before it
/// sleeps: a client that sends its next request as soon as it has the last
/// response (a scheduler's loop) finds a thread awake.
pub const POLL: Duration = Duration::from_micros(200);

/// How long the HTTP task of the only invocation in flight polls for its
/// result before it sleeps: about a warm run of a small function, and a
/// warm Python handler's.
pub const POLL_RESULT: Duration = Duration::from_micros(600);

/// How long that task polls for a job that has not started: a job that no
/// thread took by then waits for a core, which polling would only keep
/// from it (say, while the pool manager restores instances).
pub const POLL_START: Duration = Duration::from_micros(50);

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    ready: Condvar,
    /// Jobs waiting, readable without the lock (by the polling thread).
    queued: AtomicUsize,
    /// Whether a thread is polling for jobs; at most one does.
    polling: AtomicBool,
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
        let queue = &self.queue;
        {
            let mut jobs = queue.jobs.lock().unwrap_or_else(|e| e.into_inner());
            jobs.push_back(Box::new(job));
            queue.queued.store(jobs.len(), Ordering::SeqCst);
        }
        // Pairs with the fence in `next_job`: either the polling thread
        // sees this job, or this sees that nobody polls and wakes a thread.
        fence(Ordering::SeqCst);
        if !queue.polling.load(Ordering::SeqCst) {
            queue.ready.notify_one();
        }
    }
}

/// Set by a job when an invocation thread starts running it.
#[derive(Clone, Default)]
pub struct Started(Arc<AtomicBool>);

impl Started {
    /// Records that the job is running.
    pub fn mark(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_marked(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Waits for an invocation's result; `None` if its sender was dropped.
/// With `poll` (no other invocation is in flight, so a core should be
/// free), polls for it for up to [`POLL_RESULT`] first, which saves the
/// wake-up of this task, but only while the job runs: if it has not
/// started within [`POLL_START`], it is waiting for a core, and this task
/// sleeps at once to give it one.
pub async fn wait_for<T>(
    mut rx: tokio::sync::oneshot::Receiver<T>,
    poll: Option<&Started>,
) -> Option<T> {
    use tokio::sync::oneshot::error::TryRecvError;
    if let Some(started) = poll {
        let t0 = Instant::now();
        loop {
            match rx.try_recv() {
                Ok(value) => return Some(value),
                Err(TryRecvError::Closed) => return None,
                Err(TryRecvError::Empty) => {}
            }
            let waited = t0.elapsed();
            if waited >= POLL_RESULT || (waited >= POLL_START && !started.is_marked()) {
                break;
            }
            spin();
        }
    }
    rx.await.ok()
}

/// A short busy wait between two polls.
fn spin() {
    for _ in 0..32 {
        std::hint::spin_loop();
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
        let job = next_job(queue);
        if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
            error!("an invocation panicked; its request failed");
        }
    }
}

/// Takes the next job: polls for it for up to [`POLL`] if no other thread
/// is polling, then sleeps until one is submitted.
fn next_job(queue: &Queue) -> Job {
    if queue.queued.load(Ordering::SeqCst) == 0
        && queue
            .polling
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    {
        let until = Instant::now() + POLL;
        while queue.queued.load(Ordering::Relaxed) == 0 && Instant::now() < until {
            spin();
        }
        queue.polling.store(false, Ordering::SeqCst);
        // Pairs with the fence in `submit` (see there).
        fence(Ordering::SeqCst);
    }
    let mut jobs = queue.jobs.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some(job) = jobs.pop_front() {
            queue.queued.store(jobs.len(), Ordering::SeqCst);
            if !jobs.is_empty() {
                // Jobs submitted while a thread polled woke nobody: pass
                // them on, so none waits behind this one for a thread.
                queue.ready.notify_one();
            }
            return job;
        }
        jobs = queue.ready.wait(jobs).unwrap_or_else(|e| e.into_inner());
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    fn run_all(invokers: &Invokers, jobs: usize, gap: Duration) {
        let (done, finished) = mpsc::channel();
        for i in 0..jobs {
            let done = done.clone();
            invokers.submit(move || done.send(i).unwrap());
            std::thread::sleep(gap);
        }
        let mut seen: Vec<usize> = (0..jobs)
            .map(|_| finished.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..jobs).collect::<Vec<_>>());
    }

    /// Jobs submitted while a thread polls, just as its poll ends, and long
    /// after every thread went to sleep all run: no wake-up is lost.
    #[test]
    fn every_job_runs_whether_threads_poll_or_sleep() {
        let invokers = Invokers::start(3, None).unwrap();
        run_all(&invokers, 200, Duration::ZERO);
        for gap_us in [50, 150, 200, 250, 400] {
            run_all(&invokers, 20, Duration::from_micros(gap_us));
        }
        run_all(&invokers, 3, POLL * 20);
    }

    /// Two jobs submitted while a thread polls (so neither wakes a
    /// sleeping thread) run at once: the second does not wait for the
    /// first to finish.
    #[test]
    fn jobs_submitted_during_a_poll_do_not_queue_behind_each_other() {
        let invokers = Invokers::start(2, None).unwrap();
        for round in 0..20 {
            // The thread that runs this polls for POLL once it is done.
            run_all(&invokers, 1, Duration::ZERO);
            let both = Arc::new(std::sync::Barrier::new(2));
            let (done, finished) = mpsc::channel();
            for _ in 0..2 {
                let (both, done) = (Arc::clone(&both), done.clone());
                invokers.submit(move || {
                    both.wait();
                    done.send(()).unwrap();
                });
            }
            for _ in 0..2 {
                finished
                    .recv_timeout(Duration::from_secs(5))
                    .unwrap_or_else(|_| panic!("round {round}: the second job never started"));
            }
        }
    }

    #[test]
    fn at_most_one_thread_polls_and_none_once_idle() {
        let invokers = Invokers::start(4, None).unwrap();
        run_all(&invokers, 50, Duration::ZERO);
        std::thread::sleep(POLL * 10);
        assert!(!invokers.queue.polling.load(Ordering::SeqCst));
        assert_eq!(invokers.queue.queued.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_result_arrives_polled_or_awaited() {
        let started = Started::default();
        started.mark();
        let unstarted = Started::default();
        for poll in [Some(&started), Some(&unstarted), None] {
            let (tx, rx) = tokio::sync::oneshot::channel();
            tx.send(7).unwrap();
            assert_eq!(wait_for(rx, poll).await, Some(7));
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                std::thread::sleep(POLL_RESULT * 2);
                tx.send(8).unwrap();
            });
            assert_eq!(wait_for(rx, poll).await, Some(8));
            let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
            drop(tx);
            assert_eq!(wait_for(rx, poll).await, None);
        }
    }

    /// A job that has not started is not polled for past `POLL_START`,
    /// one that runs for up to `POLL_RESULT`: the time the first poll of
    /// the wait holds its thread.
    #[test]
    fn polling_stops_early_for_a_job_that_has_not_started() {
        let held = |started: &Started| {
            let (_tx, rx) = tokio::sync::oneshot::channel::<u8>();
            let mut wait = std::pin::pin!(wait_for(rx, Some(started)));
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let t0 = Instant::now();
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            t0.elapsed()
        };
        // The least of a few, so a preempted poll on a loaded machine
        // cannot fail the test.
        let unstarted = (0..5).map(|_| held(&Started::default())).min().unwrap();
        assert!(
            unstarted >= POLL_START && unstarted < POLL_RESULT,
            "{unstarted:?}"
        );
        let running = Started::default();
        running.mark();
        assert!(held(&running) >= POLL_RESULT);
    }
}
