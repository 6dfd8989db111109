//! The daemon's HTTP API types, shared by the server (`daemon`) and the CLI
//! client (`client`). `openapi.yaml` at the repository root describes the
//! same shapes for other clients.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Default per-function concurrency limit.
pub const DEFAULT_CONCURRENCY: u32 = 1000;
/// Default guest memory, in MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 128;
/// Default invocation timeout, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Default limit of a deploy's boot to ready (instantiation and
/// `wisp_init`), in milliseconds: AWS Lambda's init phase has the same.
pub const DEFAULT_INIT_TIMEOUT_MS: u64 = 10_000;
/// Longest `timeout_ms` and `init_timeout_ms`: 15 minutes.
pub const MAX_TIMEOUT_MS: u64 = 15 * 60 * 1000;
/// Default most ready instances kept per function.
pub const DEFAULT_MAX_READY: u32 = 64;

/// Response header: the module's exit code.
pub const HEADER_EXIT_CODE: &str = "x-wisp-exit-code";
/// Response header: `cold` (restored for this request) or `warm` (pooled).
pub const HEADER_START: &str = "x-wisp-start";
/// Response header: microseconds waiting for a concurrency slot.
pub const HEADER_QUEUE_US: &str = "x-wisp-queue-us";
/// Response header: microseconds restoring the instance (0 when warm).
pub const HEADER_RESTORE_US: &str = "x-wisp-restore-us";
/// Response header: microseconds running the function.
pub const HEADER_RUN_US: &str = "x-wisp-run-us";
/// Response header: the last 4 KiB of stderr, base64.
pub const HEADER_STDERR: &str = "x-wisp-stderr";
/// Most stderr bytes returned in [`HEADER_STDERR`].
pub const STDERR_TAIL: usize = 4096;

/// `PUT /v1/functions/{name}`: deploy or update a function, from a module
/// or from an image in the daemon's image store (exactly one of the two).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The module (`.wasm` binary or `.wat` text), base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_base64: Option<String>,
    /// An image in the daemon's image store: `name:tag`, `sha256:<hex>` or
    /// a unique digest prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Function settings; omitted fields take their defaults.
    #[serde(flatten)]
    pub config: FunctionConfig,
}

/// A function's settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct FunctionConfig {
    /// Guest memory in MiB (even, 16..=4096).
    pub memory_mib: u32,
    /// Wall-clock limit of one invocation, in milliseconds.
    pub timeout_ms: u64,
    /// Wall-clock limit of booting to ready at deploy (instantiation and
    /// the `wisp_init` export), in milliseconds.
    pub init_timeout_ms: u64,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Most invocations running at once; more wait in a bounded queue.
    pub concurrency: u32,
    /// Instances kept ready even when idle.
    pub reserved: u32,
    /// Most instances kept ready.
    pub max_ready: u32,
}

impl DeployRequest {
    /// A request deploying `module` with `config`.
    pub fn module(module: &[u8], config: FunctionConfig) -> DeployRequest {
        use base64::Engine as _;
        DeployRequest {
            module_base64: Some(base64::engine::general_purpose::STANDARD.encode(module)),
            image: None,
            config,
        }
    }

    /// A request deploying the image `reference` with `config`.
    pub fn image(reference: &str, config: FunctionConfig) -> DeployRequest {
        DeployRequest {
            module_base64: None,
            image: Some(reference.to_string()),
            config,
        }
    }
}

impl Default for FunctionConfig {
    fn default() -> Self {
        FunctionConfig {
            memory_mib: DEFAULT_MEMORY_MIB,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            init_timeout_ms: DEFAULT_INIT_TIMEOUT_MS,
            env: BTreeMap::new(),
            concurrency: DEFAULT_CONCURRENCY,
            reserved: 0,
            max_ready: DEFAULT_MAX_READY,
        }
    }
}

/// A deployed function as `GET /v1/functions/{name}` reports it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FunctionInfo {
    /// Its name.
    pub name: String,
    /// Deployment counter, from 1.
    pub version: u64,
    /// `ready`, or `draining` while it is being deleted.
    pub state: String,
    /// SHA-256 of the module, hex.
    pub module_sha256: String,
    /// The image it was deployed from, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<FunctionImage>,
    /// Its settings.
    pub config: FunctionConfig,
    /// When this version became ready (Unix seconds).
    pub deployed_at: u64,
    /// Instance counts.
    pub instances: InstanceCounts,
    /// Invocation statistics since the daemon started.
    pub stats: FunctionStats,
}

/// The image a function was deployed from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FunctionImage {
    /// The reference as given in the deploy request.
    pub reference: String,
    /// The image's manifest digest, `sha256:<hex>` (pinned while deployed).
    pub digest: String,
}

/// How many instances a function has.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceCounts {
    /// Restored and waiting for a request.
    pub ready: u64,
    /// Serving a request now.
    pub busy: u64,
    /// Requests waiting for a concurrency slot.
    pub queued: u64,
}

/// Invocation statistics of a function.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct FunctionStats {
    /// Invocations that ran (any outcome).
    pub invocations: u64,
    /// Of those, started on a freshly restored instance.
    pub cold: u64,
    /// Of those, started on a pooled instance.
    pub warm: u64,
    /// Invocations that ended in an error (trap, timeout, …).
    pub errors: u64,
    /// Invocations refused with 429.
    pub rejected: u64,
    /// End-to-end latency of recent invocations, in milliseconds.
    pub latency_ms: Latency,
}

/// Latency percentiles.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// `GET /v1/functions`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FunctionList {
    /// Every deployed function, by name.
    pub functions: Vec<FunctionInfo>,
}

/// The body of every error response.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A stable code and a readable message.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    /// Machine-readable, stable (e.g. `function_not_found`).
    pub code: String,
    /// For people.
    pub message: String,
}
