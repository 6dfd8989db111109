//! One deployed version of a function: its snapshot, its pool and its
//! statistics, and how an invocation runs on it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wisp_vmm::{BufferIo, Error as VmError, Image, Invocation, Outcome, Shell, Vm, VmConfig};

use super::budget::MemoryBudget;
use super::pool::{Instance, Pool};
use crate::api::{
    FunctionConfig, FunctionImage, FunctionInfo, FunctionStats, InstanceCounts, Latency,
};
use crate::stats::Summary;

/// Most stdout + stderr bytes an invocation may produce.
pub const MAX_OUTPUT: u64 = 6 << 20;
/// Latency samples kept for `GET /v1/functions/{name}`.
const LATENCY_WINDOW: usize = 1024;

/// A deployed function version.
pub struct Function {
    /// Its name.
    pub name: String,
    /// Deployment counter.
    pub version: u64,
    /// Its settings.
    pub config: FunctionConfig,
    /// SHA-256 of the module, hex.
    pub module_sha256: String,
    /// The image it was deployed from, if it was.
    pub source_image: Option<FunctionImage>,
    /// When it became ready (Unix seconds).
    pub deployed_at: u64,
    /// The snapshot instances are restored from.
    pub image: Arc<Image>,
    /// Its instances and admission state.
    pub pool: Arc<Pool>,
    /// Its counters.
    pub stats: Stats,
    invocation: Invocation,
}

/// Counters and recent latencies of a function.
#[derive(Default)]
pub struct Stats {
    invocations: AtomicU64,
    cold: AtomicU64,
    warm: AtomicU64,
    errors: AtomicU64,
    rejected: AtomicU64,
    latencies: Mutex<VecDeque<Duration>>,
}

impl Stats {
    /// Records a finished invocation.
    pub fn record(&self, cold: bool, ok: bool, latency: Duration) {
        self.invocations.fetch_add(1, Ordering::Relaxed);
        if cold { &self.cold } else { &self.warm }.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut window = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
        if window.len() == LATENCY_WINDOW {
            window.pop_front();
        }
        window.push_back(latency);
    }

    /// Records a refused request.
    pub fn reject(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> FunctionStats {
        let window: Vec<Duration> = self
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        FunctionStats {
            invocations: self.invocations.load(Ordering::Relaxed),
            cold: self.cold.load(Ordering::Relaxed),
            warm: self.warm.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            latency_ms: Summary::of(&window)
                .map(|s| Latency {
                    p50: ms(s.p50),
                    p99: ms(s.p99),
                })
                .unwrap_or_default(),
        }
    }
}

/// How an invocation ended, when the function ran to an exit.
pub struct Completed {
    /// The module's exit code.
    pub exit_code: i32,
    /// Its stdout.
    pub stdout: Vec<u8>,
    /// Its stderr.
    pub stderr: Vec<u8>,
    /// Whether the instance was restored for this request.
    pub cold: bool,
    /// Time spent restoring (zero when warm).
    pub restore: Duration,
    /// Time the function ran.
    pub run: Duration,
}

/// Why an invocation did not complete.
#[derive(Debug)]
pub enum Failure {
    /// The module trapped; its description, and the stderr it wrote.
    Trapped(String, Vec<u8>),
    /// It ran past its timeout.
    Timeout(Duration),
    /// It needed more memory than its VM has.
    OutOfMemory(String),
    /// It wrote more than the output limit.
    OutputLimit(u64),
    /// The guest misbehaved or could not run the module.
    Crashed(String),
    /// No memory budget left for a new instance.
    NoMemory,
    /// The host is out of a resource for new instances (file descriptors,
    /// kernel memory).
    Overloaded(String),
    /// The host failed (KVM, memory mapping), even after a retry.
    Internal(String),
}

/// The result of [`Function::execute`].
pub struct Execution {
    /// How the invocation ended.
    pub result: Result<Completed, Failure>,
    /// Whether it ran (or would have run) on a freshly restored instance.
    pub cold: bool,
    /// The used instance, if it may serve again once reset.
    pub instance: Option<Instance>,
}

/// Whether a VM error means the host ran out of a resource (too many open
/// files, no kernel memory): new instances cannot be made right now.
fn is_exhaustion(e: &VmError) -> bool {
    match e {
        VmError::Kvm { source, .. } | VmError::KvmUnavailable(source) => matches!(
            source.errno(),
            libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN
        ),
        _ => false,
    }
}

/// Whether a VM error is the host's fault rather than the function's: the
/// invocation is then retried once on a fresh instance.
fn is_host_failure(e: &VmError) -> bool {
    matches!(
        e,
        VmError::KvmUnavailable(_)
            | VmError::Kvm { .. }
            | VmError::Memory(_)
            | VmError::Timer(_)
            | VmError::Snapshot(_)
            | VmError::Config(_)
            | VmError::Load(_)
    )
}

impl Function {
    /// A function version around its opened snapshot.
    pub fn new(
        name: String,
        version: u64,
        config: FunctionConfig,
        module_sha256: String,
        source_image: Option<FunctionImage>,
        deployed_at: u64,
        image: Arc<Image>,
    ) -> Function {
        let env = config
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}").into_bytes())
            .collect();
        let pool = Pool::new(config.concurrency, u64::from(config.concurrency));
        Function {
            invocation: Invocation {
                args: vec![name.clone().into_bytes()],
                env,
            },
            name,
            version,
            config,
            module_sha256,
            source_image,
            deployed_at,
            image,
            pool,
            stats: Stats::default(),
        }
    }

    /// The VM settings of its instances.
    pub fn vm_config(&self) -> VmConfig {
        VmConfig {
            mem_size: self.image.mem_size(),
            timeout: Some(Duration::from_millis(self.config.timeout_ms)),
            max_output: MAX_OUTPUT,
            ..VmConfig::default()
        }
    }

    /// Restores a new instance into `shell` (or a new VM), charging the
    /// memory budget; `None` if the budget is exhausted.
    pub fn restore(
        &self,
        shell: Option<Shell>,
        budget: &Arc<MemoryBudget>,
    ) -> Result<Option<Instance>, VmError> {
        let Some(reservation) = Instance::reserve(budget, self.image.mem_size()) else {
            return Ok(None);
        };
        let vm = match shell {
            Some(shell) => Vm::restore_in(shell, &self.image, self.vm_config())?,
            None => Vm::restore(&self.image, self.vm_config())?,
        };
        Ok(Some(reservation.into_instance(vm)))
    }

    /// Runs one invocation with `stdin`: on a ready instance if there is
    /// one, else on a freshly restored one (from `shells`). Returns the
    /// result and, if it may serve again, the used instance (to be reset).
    pub fn execute(
        &self,
        stdin: &[u8],
        shells: &dyn Fn() -> Option<Shell>,
        budget: &Arc<MemoryBudget>,
    ) -> Execution {
        let mut retried = false;
        let failed = |failure, cold| Execution {
            result: Err(failure),
            cold,
            instance: None,
        };
        loop {
            let t0 = Instant::now();
            let (mut instance, cold) = match (!retried).then(|| self.pool.take()).flatten() {
                Some(instance) => (instance, false),
                None => match self.restore(shells(), budget) {
                    Ok(Some(instance)) => (instance, true),
                    Ok(None) => return failed(Failure::NoMemory, true),
                    Err(e) if is_exhaustion(&e) => {
                        return failed(Failure::Overloaded(e.to_string()), true)
                    }
                    Err(e) if !retried && is_host_failure(&e) => {
                        retried = true;
                        continue;
                    }
                    Err(e) => return failed(Failure::Internal(e.to_string()), true),
                },
            };
            let restore = if cold { t0.elapsed() } else { Duration::ZERO };
            // Borrowed stdin: a retry replays the same request body.
            let mut io = BufferIo::with_stdin(stdin);
            let t_run = Instant::now();
            let outcome = instance.vm().invoke(&self.invocation, &mut io);
            let run = t_run.elapsed();
            // A trapped or failed instance is discarded, never pooled.
            let failure = match outcome {
                Ok(Outcome::Exited(exit_code)) => {
                    return Execution {
                        result: Ok(Completed {
                            exit_code,
                            stdout: io.stdout,
                            stderr: io.stderr,
                            cold,
                            restore,
                            run,
                        }),
                        cold,
                        instance: Some(instance),
                    }
                }
                Ok(Outcome::Trapped(message)) => Failure::Trapped(message, io.stderr),
                Err(VmError::Timeout(limit)) => Failure::Timeout(limit),
                Err(VmError::OutOfMemory(m)) => Failure::OutOfMemory(m),
                Err(VmError::OutputLimit(limit)) => Failure::OutputLimit(limit),
                Err(e) if !retried && is_host_failure(&e) => {
                    retried = true;
                    continue;
                }
                Err(e) if is_host_failure(&e) => Failure::Internal(e.to_string()),
                Err(e) => Failure::Crashed(e.to_string()),
            };
            return failed(failure, cold);
        }
    }

    /// What `GET /v1/functions/{name}` shows.
    pub fn info(&self, state: &str) -> FunctionInfo {
        FunctionInfo {
            name: self.name.clone(),
            version: self.version,
            state: state.into(),
            module_sha256: self.module_sha256.clone(),
            image: self.source_image.clone(),
            config: self.config.clone(),
            deployed_at: self.deployed_at,
            instances: InstanceCounts {
                ready: self.pool.ready() as u64,
                busy: self.pool.busy(),
                queued: self.pool.queued(),
            },
            stats: self.stats.snapshot(),
        }
    }
}
