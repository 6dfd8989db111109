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
/// Response header of a runtime function (docs/RUNTIMES.md): `Unhandled`
/// when the handler raised; the body is then the error document.
pub const HEADER_FUNCTION_ERROR: &str = "x-wisp-function-error";
/// Response header of a runtime function: the request id its handler saw.
pub const HEADER_REQUEST_ID: &str = "x-wisp-request-id";
/// Most stderr bytes returned in [`HEADER_STDERR`].
pub const STDERR_TAIL: usize = 4096;
/// Response header: the version that answered an invocation.
pub const HEADER_VERSION: &str = "x-wisp-version";
/// Response header: the alias an invocation went through (absent when it
/// named a version).
pub const HEADER_ALIAS: &str = "x-wisp-alias";
/// The alias a deploy points at its new version and an invocation without
/// a qualifier goes through.
pub const LIVE_ALIAS: &str = "live";
/// A rollout's steps when the request gives none: percentages of the
/// traffic the new version takes, one per interval.
pub const DEFAULT_ROLLOUT_STEPS: [u32; 4] = [5, 25, 50, 100];
/// A rollout's step length when the request gives none, in milliseconds.
pub const DEFAULT_ROLLOUT_INTERVAL_MS: u64 = 30_000;
/// How much the new version's error rate may exceed the old one's before
/// a rollout is rolled back, when the request does not say (1%).
pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.01;

/// `PUT /v1/functions/{name}`: deploy or update a function, from a module,
/// from an image in the daemon's image store, or from a handler's code on
/// a language runtime (exactly one of the three).
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
    /// A handler's code for `runtime` (a tar, gzip-compressed or not),
    /// base64: it becomes the function's `/var/task`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_base64: Option<String>,
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
    /// The language runtime of a handler deployed as code (`python3.12`,
    /// `javascript`; docs/RUNTIMES.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// The handler a runtime calls, `MODULE.FUNCTION` (`app.handler`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
}

impl DeployRequest {
    /// A request deploying `module` with `config`.
    pub fn module(module: &[u8], config: FunctionConfig) -> DeployRequest {
        use base64::Engine as _;
        DeployRequest {
            module_base64: Some(base64::engine::general_purpose::STANDARD.encode(module)),
            image: None,
            code_base64: None,
            config,
        }
    }

    /// A request deploying the image `reference` with `config`.
    pub fn image(reference: &str, config: FunctionConfig) -> DeployRequest {
        DeployRequest {
            module_base64: None,
            image: Some(reference.to_string()),
            code_base64: None,
            config,
        }
    }

    /// A request deploying a handler's `code` (a tar) on the runtime and
    /// with the handler `config` names.
    pub fn code(code: &[u8], config: FunctionConfig) -> DeployRequest {
        use base64::Engine as _;
        DeployRequest {
            module_base64: None,
            image: None,
            code_base64: Some(base64::engine::general_purpose::STANDARD.encode(code)),
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
            runtime: None,
            handler: None,
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
    /// Every version kept, oldest first.
    #[serde(default)]
    pub versions: Vec<u64>,
    /// Every alias, by name.
    #[serde(default)]
    pub aliases: Vec<AliasInfo>,
    /// The latest rollout, running or finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutInfo>,
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

/// Where an alias sends traffic: `PUT /v1/functions/{name}/aliases/{alias}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AliasRouting {
    /// The version that takes the traffic `additional` does not.
    pub version: u64,
    /// A second version taking `weight` percent of the traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional: Option<AdditionalVersion>,
    /// Instances kept ready for the alias's traffic, split between its
    /// versions by their shares; absent, each version's own `reserved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved: Option<u32>,
    /// Most instances kept ready for the alias's traffic, split the same
    /// way; absent, each version's own `max_ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ready: Option<u32>,
}

impl AliasRouting {
    /// All traffic to `version`, pools sized by the version's settings.
    pub fn to(version: u64) -> AliasRouting {
        AliasRouting {
            version,
            additional: None,
            reserved: None,
            max_ready: None,
        }
    }
}

/// The second version of a split alias and its share.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdditionalVersion {
    /// The version.
    pub version: u64,
    /// Percent of the alias's invocations it takes, 0 to 100.
    pub weight: u32,
}

/// An alias as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AliasInfo {
    /// Its name.
    pub name: String,
    /// Where it sends traffic.
    #[serde(flatten)]
    pub routing: AliasRouting,
}

/// `GET /v1/functions/{name}/aliases`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AliasList {
    /// Every alias, by name.
    pub aliases: Vec<AliasInfo>,
}

/// One kept version of a function.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VersionInfo {
    /// Its number.
    pub version: u64,
    /// SHA-256 of the module, hex.
    pub module_sha256: String,
    /// The image it was deployed from, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<FunctionImage>,
    /// Its settings.
    pub config: FunctionConfig,
    /// When it became ready (Unix seconds).
    pub deployed_at: u64,
    /// The aliases that send it traffic (or may: a weight of 0 counts).
    pub aliases: Vec<String>,
    /// Instance counts.
    pub instances: InstanceCounts,
    /// Invocation statistics since the daemon started.
    pub stats: FunctionStats,
}

/// `GET /v1/functions/{name}/versions`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VersionList {
    /// Every kept version, oldest first.
    pub versions: Vec<VersionInfo>,
}

/// `POST /v1/functions/{name}/rollout`: move an alias to another version
/// step by step, rolling back if the new version fails more than the old.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    /// The version to move to.
    pub to: u64,
    /// The alias to move.
    #[serde(default = "live_alias")]
    pub alias: String,
    /// Percent of the alias's traffic the new version takes at each step,
    /// increasing, ending at 100.
    #[serde(default = "default_steps")]
    pub steps: Vec<u32>,
    /// How long each step lasts, in milliseconds.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// How far the new version's error rate may exceed the old one's, as
    /// a fraction (0.01 is one percentage point).
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: f64,
    /// Invocations of the new version a step needs before it is judged;
    /// a step with fewer lasts longer.
    #[serde(default)]
    pub min_invocations: u64,
}

fn live_alias() -> String {
    LIVE_ALIAS.to_string()
}

fn default_steps() -> Vec<u32> {
    DEFAULT_ROLLOUT_STEPS.to_vec()
}

fn default_interval_ms() -> u64 {
    DEFAULT_ROLLOUT_INTERVAL_MS
}

fn default_max_error_rate() -> f64 {
    DEFAULT_MAX_ERROR_RATE
}

/// Where a rollout stands.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// The daemon is moving traffic step by step.
    Running,
    /// The alias sends all traffic to the new version.
    Completed,
    /// The new version failed more than allowed; the alias is back on the
    /// old one.
    Failed,
    /// Stopped by a request or a deploy; the alias is back on the old
    /// version, or on the deployed one.
    Cancelled,
    /// Could not go on after a restart (a version could not be brought
    /// back); the alias is on a version that could.
    Interrupted,
}

impl RolloutState {
    /// The name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Completed => "completed",
            RolloutState::Failed => "failed",
            RolloutState::Cancelled => "cancelled",
            RolloutState::Interrupted => "interrupted",
        }
    }

    /// The state named `text`.
    pub fn parse(text: &str) -> Option<RolloutState> {
        [
            RolloutState::Running,
            RolloutState::Completed,
            RolloutState::Failed,
            RolloutState::Cancelled,
            RolloutState::Interrupted,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// A rollout as recorded and shown.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RolloutInfo {
    /// The alias it moves.
    pub alias: String,
    /// The version the alias served before.
    pub from: u64,
    /// The version it moves to.
    pub to: u64,
    /// Percent of the traffic `to` takes at each step.
    pub steps: Vec<u32>,
    /// Length of a step, in milliseconds.
    pub interval_ms: u64,
    /// Largest excess of `to`'s error rate over `from`'s.
    pub max_error_rate: f64,
    /// Invocations of `to` a step needs before it is judged.
    pub min_invocations: u64,
    /// The step reached (an index into `steps`).
    pub step: usize,
    /// Where it stands.
    pub state: RolloutState,
    /// Why it ended, unless it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it started (Unix seconds).
    pub started_at: u64,
    /// When it last changed (Unix seconds).
    pub updated_at: u64,
    /// The current step's invocations so far, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<RolloutWindow>,
}

/// What a running rollout has seen of its versions so far: `to` in the
/// current step, `from` since the rollout started (or the daemon did).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RolloutWindow {
    /// Invocations of `from`.
    pub from_invocations: u64,
    /// Of those, errors.
    pub from_errors: u64,
    /// Invocations of `to`.
    pub to_invocations: u64,
    /// Of those, errors.
    pub to_errors: u64,
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
