//! One deployed version of a function: its settings, its snapshot, its pool
//! and its statistics.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wisp_vmm::{Image, Invocation, VmConfig};

use super::pool::Pool;
use super::registry::Record;
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
    /// What every invocation passes the module.
    pub invocation: Invocation,
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

/// What a function's instances see as `argv` (its name) and environment.
pub fn invocation(name: &str, config: &FunctionConfig) -> Invocation {
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
            name: record.name.clone(),
            version: record.version,
            pool: Pool::new(config.concurrency, u64::from(config.concurrency)),
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
