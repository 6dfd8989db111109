//! The thread that runs guest code (`wisp-vcpu`), and how `wisp run`'s
//! main thread works with it: it makes the VM's empty shell (unless the
//! main thread gets there first), confines itself with seccomp, then runs
//! the jobs it is sent.

use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use wisp::seccomp::{run_filter, Seccomp};
use wisp_vmm::seccomp::Filter;
use wisp_vmm::{Error as VmError, Shell};

use crate::cmd::{ms, DEFAULT_MEMORY};

/// How the vCPU thread got ready, for `--timings`.
pub(super) struct Prepared {
    /// Making its empty VM and registering its memory (not waiting for
    /// its orders in between), if it made them.
    shell: Option<Duration>,
    /// Confining itself.
    confine: Duration,
    /// When it was ready, since wisp started.
    ready_at: Duration,
}

impl std::fmt::Display for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.shell {
            Some(shell) => write!(f, "vCPU thread: shell {} + ", ms(shell))?,
            None => write!(f, "vCPU thread: ")?,
        }
        write!(
            f,
            "confine {} (ready at {})",
            ms(self.confine),
            ms(self.ready_at)
        )
    }
}

type Job = Box<dyn FnOnce(&Prepared) + Send>;

/// The empty VM the vCPU thread makes first.
type Made = Result<Shell, VmError>;

/// What the vCPU thread is told once the arguments are parsed.
pub(super) struct Orders {
    /// The seccomp mode to confine the thread in.
    pub(super) seccomp: Seccomp,
    /// The guest memory size the run asks for, if it knows it before it
    /// finds its snapshot: the thread registers it with KVM ahead
    /// ([`Shell::register_memory`]) if the orders came while it made the
    /// VM, else it registers the default size and then this one instead
    /// if it differs.
    pub(super) memory: Option<u64>,
}

/// The thread that runs guest code (`wisp-vcpu`). It makes an empty VM
/// (a shell: KVM's VM and vCPU, and guest memory once it knows the size)
/// for the main thread to restore into or to send back for a boot,
/// confines itself with `wisp run`'s seccomp filter, then runs the jobs it
/// is sent: no VM is ever booted or run on a thread that could open files
/// or start processes.
///
/// The shell is made by whichever thread gets to it first. The new thread
/// often starts late: on the hosts measured, waking the idle CPU it is
/// placed on ([`Placement`]) took 0.1–2.6 ms, median ~1 ms, in which the
/// main thread parsed the arguments and found its snapshot, then waited
/// for the shell. A main thread that needs the shell before the vCPU
/// thread has begun it makes it itself; the vCPU thread then only
/// confines itself, side by side with the restore.
pub(super) struct VcpuThread {
    jobs: mpsc::Sender<Job>,
    shell: mpsc::Receiver<Made>,
    /// Set by the first thread to begin making the shell.
    claimed: Arc<AtomicBool>,
    /// Its [`Orders`], once known.
    orders: mpsc::SyncSender<Orders>,
    /// The guest memory size of its orders, for a shell made here.
    memory: Option<u64>,
    /// The seccomp mode of its orders.
    seccomp: Option<Seccomp>,
    /// The thread's filter, compiled by whichever thread needs it or is
    /// idle first: this one while it waits for the shell, else the vCPU
    /// thread as it confines itself (~0.08 ms either way).
    filter: Arc<Compiled>,
    /// Why the thread could not confine itself, if it could not.
    failure: Arc<Mutex<Option<String>>>,
}

/// A filter compiled once for both threads (`None`: no filter), or why it
/// did not compile.
type Compiled = OnceLock<Result<Option<Filter>, String>>;

impl VcpuThread {
    /// Starts the thread; `origin` is when wisp started, for `--timings`.
    /// It makes the shell unless the main thread has begun it, waits for
    /// its orders ([`VcpuThread::order`]) and confines itself by them; it
    /// ends if it never gets them.
    pub(super) fn spawn(origin: Instant) -> std::io::Result<VcpuThread> {
        let (jobs, incoming) = mpsc::channel::<Job>();
        let (made, shell) = mpsc::sync_channel::<Made>(1);
        let (orders_tx, orders_rx) = mpsc::sync_channel::<Orders>(1);
        let failure = Arc::new(Mutex::new(None));
        let failed = Arc::clone(&failure);
        let filter = Arc::new(Compiled::new());
        let compiled = Arc::clone(&filter);
        let claimed = Arc::new(AtomicBool::new(false));
        let claim = Arc::clone(&claimed);
        let placement = Placement::away_from_here();
        let (placed, moved) = mpsc::sync_channel::<()>(1);
        let all_cpus = placement.as_ref().map(|p| p.all);
        let thread = std::thread::Builder::new()
            .name("wisp-vcpu".into())
            .spawn(move || {
                if let Some(all) = &all_cpus {
                    // Moved (or not, if that failed): free to go anywhere
                    // again from here on.
                    let _ = moved.recv();
                    set_affinity(0, all);
                }
                // The shell first, unless the main thread has begun it:
                // the main thread restores into it, while nothing needs
                // the filter before the first job.
                let t = Instant::now();
                let vm = (!claim.swap(true, Ordering::AcqRel)).then(Shell::without_cpuid);
                // Memory of the size the orders give if they came while
                // the VM was made, else of the size most runs use, ahead.
                let early = orders_rx.try_recv().ok();
                let ahead = early.as_ref().map_or(Some(DEFAULT_MEMORY), |o| o.memory);
                let vm = vm.map(|vm| {
                    vm.map(|mut shell| {
                        if let Some(size) = ahead {
                            register_best_effort(&mut shell, size);
                        }
                        shell
                    })
                });
                let made_vm = t.elapsed();
                let Some(orders) = early.or_else(|| orders_rx.recv().ok()) else {
                    return;
                };
                let t = Instant::now();
                let shell = vm.map(|vm| {
                    let vm = vm.map(|mut shell| {
                        if let Some(size) = orders.memory.filter(|&s| Some(s) != ahead) {
                            register_best_effort(&mut shell, size);
                        }
                        shell
                    });
                    let _ = made.send(vm);
                    made_vm + t.elapsed()
                });
                let t = Instant::now();
                if let Err(e) = confine(orders.seccomp, &compiled) {
                    if let Ok(mut slot) = failed.lock() {
                        *slot = Some(format!("{e:#}"));
                    }
                    return;
                }
                let prepared = Prepared {
                    shell,
                    confine: t.elapsed(),
                    ready_at: origin.elapsed(),
                };
                for job in incoming {
                    job(&prepared);
                }
            })?;
        if let Some(placement) = &placement {
            let tid = thread.as_pthread_t();
            // SAFETY: `tid` is the live thread just spawned (it waits on
            // `moved` before it could end); the set is a valid cpu_set_t.
            unsafe {
                libc::pthread_setaffinity_np(tid, size_of::<libc::cpu_set_t>(), &placement.away);
            }
            let _ = placed.send(());
        }
        Ok(VcpuThread {
            jobs,
            shell,
            claimed,
            orders: orders_tx,
            memory: None,
            seccomp: None,
            filter,
            failure,
        })
    }

    /// Gives the thread its orders: it finishes its shell by them, then
    /// confines itself before it runs any job.
    pub(super) fn order(&mut self, orders: Orders) {
        self.memory = orders.memory;
        self.seccomp = Some(orders.seccomp);
        let _ = self.orders.send(orders);
    }

    /// The shell: made here if the thread has not begun it (with how long
    /// that took), else the thread's (waiting for it). There is only one.
    pub(super) fn take_shell(&self) -> Result<(Shell, Option<Duration>)> {
        if !self.claimed.swap(true, Ordering::AcqRel) {
            let t = Instant::now();
            let mut shell = Shell::without_cpuid()?;
            if let Some(size) = self.memory {
                register_best_effort(&mut shell, size);
            }
            return Ok((shell, Some(t.elapsed())));
        }
        let made = match self.shell.try_recv() {
            Ok(made) => Ok(made),
            // Idle until the shell comes, before the thread compiles its
            // filter (it does once it has sent the shell): compile it here.
            Err(mpsc::TryRecvError::Empty) => {
                if let Some(mode) = self.seccomp {
                    compile(&self.filter, mode);
                }
                self.shell.recv().map_err(|_| ())
            }
            Err(mpsc::TryRecvError::Disconnected) => Err(()),
        };
        match made {
            Ok(made) => Ok((made?, None)),
            Err(()) => bail!("the vCPU thread made no VM: its shell was taken, or it panicked"),
        }
    }

    /// Sends `f` to the thread; [`Pending::wait`] returns what it returned.
    pub(super) fn submit<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Prepared) -> R + Send + 'static,
    ) -> Pending<'_, R> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |prepared| {
            let _ = tx.send(f(prepared));
        });
        let _ = self.jobs.send(job);
        Pending { rx, thread: self }
    }
}

/// Registers `size` bytes of guest memory with `shell`'s VM ahead, if it
/// can: a size no VM can have fails again, and is reported, where the VM's
/// memory is made.
fn register_best_effort(shell: &mut Shell, size: u64) {
    let _ = shell.register_memory(size);
}

/// Where the vCPU thread starts. The scheduler of the hosts measured often
/// queues a new thread on its parent's CPU and leaves it there while the
/// parent runs, though another CPU is idle: the thread then made its VM
/// and confined itself only once the main thread waited for it, one after
/// the other instead of side by side (~0.5 ms of a cached `wisp run`). So
/// it starts on another CPU than this thread's, when the process may use
/// one, and takes back the process's whole set as it starts.
struct Placement {
    /// The CPUs the process may use.
    all: libc::cpu_set_t,
    /// Those, but the one this thread is on.
    away: libc::cpu_set_t,
}

impl Placement {
    /// `None` when the process may use only the CPU this thread is on (or
    /// the kernel does not say).
    fn away_from_here() -> Option<Placement> {
        // SAFETY: an all-zero cpu_set_t is a valid, empty set.
        let mut all: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: the kernel writes at most `size_of` bytes into `all`.
        let got = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut all) };
        // SAFETY: no arguments.
        let here = unsafe { libc::sched_getcpu() };
        let here = usize::try_from(here).ok().filter(|_| got == 0)?;
        let mut away = all;
        // SAFETY: CPU_CLR and CPU_COUNT only touch the set they are given
        // (CPU_CLR ignores CPUs beyond its size).
        let others = unsafe {
            libc::CPU_CLR(here, &mut away);
            libc::CPU_COUNT(&away)
        };
        (others > 0).then_some(Placement { all, away })
    }
}

/// Sets the CPUs thread `tid` (0: the calling one) may run on. Best effort:
/// a failure only costs the placement.
fn set_affinity(tid: libc::pid_t, cpus: &libc::cpu_set_t) {
    // SAFETY: the kernel reads `size_of` bytes from `cpus`.
    unsafe {
        libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), cpus);
    }
}

/// A job sent to the vCPU thread.
pub(super) struct Pending<'a, R> {
    rx: mpsc::Receiver<R>,
    thread: &'a VcpuThread,
}

impl<R> Pending<'_, R> {
    /// Waits for the job's result, starting the process that will tear
    /// the VM down meanwhile (see [`crate::cmd::teardown`]).
    pub(super) fn wait(self) -> Result<R> {
        crate::cmd::teardown::prepare();
        if let Ok(r) = self.rx.recv() {
            return Ok(r);
        }
        let why = self.thread.failure.lock().ok().and_then(|mut f| f.take());
        match why {
            Some(why) => bail!("confining the vCPU thread: {why}"),
            None => bail!("the vCPU thread panicked"),
        }
    }
}

/// Confines the calling thread with `wisp run`'s filter for `mode` (from
/// `filter`, compiled there if it is not yet), after doing what the filter
/// forbids and VMs need (opening `/dev/kvm`): no guest code has run yet.
fn confine(mode: Seccomp, filter: &Compiled) -> Result<()> {
    let filter = compile(filter, mode)
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    wisp_vmm::seccomp::prepare_to_restore()?;
    if let Some(filter) = filter {
        wisp_vmm::seccomp::apply(filter)?;
    }
    Ok(())
}

/// `wisp run`'s filter for `mode`, compiled into `filter` unless it was
/// (or is being: this waits) already.
fn compile(filter: &Compiled, mode: Seccomp) -> &Result<Option<Filter>, String> {
    filter.get_or_init(|| run_filter(mode).map_err(|e| format!("{e:#}")))
}
