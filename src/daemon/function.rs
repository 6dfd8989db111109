//! One deployed version of a function: its settings, its snapshot, its pool
//! and its statistics.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wisp_vmm::{Image, Invocation, VmConfig};

use super::pool::Pool;
use super::registry::Record;
use crate::api::{
    FunctionConfig, FunctionImage, FunctionInfo, FunctionStats, InstanceCounts, Latency,
    VersionInfo,
};
use crate::runtimes::{Runtime, EXIT_HANDLER_ERROR};
use crate::stats::Summary;

/// Most stdout + stderr bytes an invocation may produce.
pub const MAX_OUTPUT: u64 = 6 << 20;
/// Latency samples kept for `GET /v1/functions/{name}`.
const LATENCY_WINDOW: usize = 1024;

/// A deployed function version.
pub struct Function {
    /// Its name.
    pub name: String,
    /// Its number.
    pub version: u64,
    /// Its settings.
    pub config: FunctionConfig,
    /// How many instances its pool keeps, from its settings and the
    /// aliases that route to it (see [`super::routes::Deployed::size_pools`]).
    pub sizing: Sizing,
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
    /// What every invocation passes the module.
    pub invocation: Invocation,
    /// Whether it is a handler on a language runtime: its stdin then
    /// starts with a line of request context.
    pub on_runtime: bool,
}

/// A version's pool size: set whenever the aliases change, read by
/// every invocation and pool manager tick.
pub struct Sizing {
    reserved: AtomicU32,
    max_ready: AtomicU32,
}

impl Sizing {
    /// Instances kept ready even when idle.
    pub fn reserved(&self) -> usize {
        self.reserved.load(Ordering::Relaxed) as usize
    }

    /// Most instances kept ready.
    pub fn max_ready(&self) -> usize {
        self.max_ready.load(Ordering::Relaxed) as usize
    }

    /// Sets both.
    pub fn set(&self, reserved: u32, max_ready: u32) {
        self.reserved.store(reserved, Ordering::Relaxed);
        self.max_ready.store(max_ready, Ordering::Relaxed);
    }
}

/// Counters and recent latencies of a function.
#[derive(Default)]
pub struct Stats {
    invocations: AtomicU64,
    cold: AtomicU64,
    warm: AtomicU64,
    errors: AtomicU64,
    nonzero_exits: AtomicU64,
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

    /// Records a run that exited with a code other than 0: the function
    /// failing on its own terms, which a rollout counts as an error.
    pub fn nonzero_exit(&self) {
        self.nonzero_exits.fetch_add(1, Ordering::Relaxed);
    }

    /// Invocations that ran and, of those, failures (errors and non-zero
    /// exits): what a rollout compares.
    pub fn outcomes(&self) -> (u64, u64) {
        (
            self.invocations.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed) + self.nonzero_exits.load(Ordering::Relaxed),
        )
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
    /// The request id a runtime's handler saw (none for a wasm module).
    pub request_id: Option<String>,
}

impl Completed {
    /// Whether a handler on a runtime raised: the body is its error
    /// document.
    pub fn handler_raised(&self) -> bool {
        self.request_id.is_some() && self.exit_code == EXIT_HANDLER_ERROR
    }
}

/// What a function's instances see as `argv` (its name) and environment;
/// for a handler on a runtime, what its bootstrap boots with.
pub fn invocation(name: &str, config: &FunctionConfig) -> Invocation {
    let runtime = config.runtime.as_deref().map(Runtime::find);
    if let (Some(Ok(runtime)), Some(handler)) = (runtime, &config.handler) {
        return runtime.boot_invocation(handler, &config.env);
    }
    Invocation {
        args: vec![name.as_bytes().to_vec()],
        env: config
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}").into_bytes())
            .collect(),
    }
}

impl Function {
    /// The version `record` describes, around its opened snapshot.
    pub fn from_record(record: &Record, image: Arc<Image>) -> Function {
        let config = record.config.clone();
        Function {
            invocation: invocation(&record.name, &config),
            on_runtime: config.runtime.is_some(),
            name: record.name.clone(),
            version: record.version,
            pool: Pool::new(config.concurrency, u64::from(config.concurrency)),
            sizing: Sizing {
                reserved: AtomicU32::new(config.reserved),
                max_ready: AtomicU32::new(config.max_ready),
            },
            config,
            module_sha256: record.module_sha256.clone(),
            source_image: record.image.clone(),
            deployed_at: record.deployed_at,
            image,
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

    /// For a handler on a runtime, the stdin of one request with `body`
    /// (a line of context first) and the request id its handler sees;
    /// `None` for a wasm module, whose stdin is the body.
    pub fn runtime_request(&self, body: &[u8]) -> Option<(Vec<u8>, String)> {
        if !self.on_runtime {
            return None;
        }
        let id = crate::runtimes::request_id();
        let context = crate::runtimes::RequestContext {
            request_id: &id,
            function_name: &self.name,
            function_version: self.version,
            memory_limit_in_mb: self.config.memory_mib,
            deadline_ms: Some(crate::runtimes::deadline_ms(Duration::from_millis(
                self.config.timeout_ms,
            ))),
        };
        Some((context.stdin(body), id))
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
            instances: self.instances(),
            stats: self.stats.snapshot(),
            versions: Vec::new(),
            aliases: Vec::new(),
            rollout: None,
        }
    }

    /// What `GET /v1/functions/{name}/versions` shows of it; `aliases`
    /// route to it.
    pub fn version_info(&self, aliases: Vec<String>) -> VersionInfo {
        VersionInfo {
            version: self.version,
            module_sha256: self.module_sha256.clone(),
            image: self.source_image.clone(),
            config: self.config.clone(),
            deployed_at: self.deployed_at,
            aliases,
            instances: self.instances(),
            stats: self.stats.snapshot(),
        }
    }

    fn instances(&self) -> InstanceCounts {
        InstanceCounts {
            ready: self.pool.ready() as u64,
            busy: self.pool.busy(),
            queued: self.pool.queued(),
        }
    }
}
