//! The daemon's shared state: the deployed functions, the registry, the
//! stores, the compiler, the pre-created shells, the memory budget and the
//! invocation threads. What is done with it lives next door, one file a
//! job: [`super::deploy`], [`super::invoke`], [`super::delete`],
//! [`super::recovery`], [`super::pool_manager`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use tracing::{info, warn};
use wisp_images::{ArtifactCache, Store as ImageStore};
use wisp_vmm::{Image, Shell};

use super::budget::MemoryBudget;
use super::function::Function;
use super::invokers::Invokers;
use super::metrics::Metrics;
use super::registry::Registry;
use super::rollout::Rollouts;
use super::routes::Deployed;
use super::store::Store;
use crate::compile::Compiler;
use crate::seccomp::{invocation_filter, Seccomp};

/// Bytes of recently used compiled artifacts kept in memory.
const ARTIFACT_MEMORY: u64 = 256 << 20;

/// Most shells that keep guest RAM registered for one snapshot image: as
/// many cold starts of one function at once skip registering memory; the
/// rest of the shells stay empty for other functions.
const KEPT_PER_IMAGE: usize = 4;

/// Daemon-wide knobs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Host memory instances may use, in bytes (see [`MemoryBudget`]).
    pub memory_budget: u64,
    /// Empty VMs (shells) kept pre-created for cold starts.
    pub shells: usize,
    /// A function idle this long shrinks to its reserved instances.
    pub idle_timeout: Duration,
    /// Invocations running at once across all functions (each holds a
    /// thread, also while the function sleeps). More than a few per core
    /// only adds contention: with 240 instead of 16 on 2 cores, cold starts
    /// fell from ~2000/s to ~530/s at 256 clients (mm lock contention).
    pub invocation_threads: usize,
    /// The invocation threads' seccomp filter.
    pub seccomp: Seccomp,
    /// Versions no alias routes to kept per function; older ones are
    /// deleted, snapshots included.
    pub keep_versions: usize,
}

impl Settings {
    /// The default number of invocation threads: 8 per core, at least 16.
    pub fn default_invocation_threads() -> usize {
        (std::thread::available_parallelism().map_or(2, |n| n.get()) * 8).max(16)
    }
}

/// The daemon.
pub struct Host {
    /// Each function's kept versions and aliases.
    pub(super) functions: RwLock<HashMap<String, Arc<Deployed>>>,
    /// One lock per function name: deploys and deletes of a name run one
    /// at a time.
    deploys: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub(super) registry: Mutex<Registry>,
    pub(super) store: Store,
    pub(super) images: ImageStore,
    /// The client of the OCI registries deploys pull from.
    pub(super) oci: wisp_registry::Registry,
    pub(super) compiler: Compiler,
    shells: Mutex<Vec<Shell>>,
    pub(super) settings: Settings,
    pub(super) budget: Arc<MemoryBudget>,
    /// Invocation threads not running an invocation.
    pub(super) workers: Arc<tokio::sync::Semaphore>,
    /// The invocation threads.
    pub(super) invokers: Invokers,
    /// Exported metrics.
    pub metrics: Metrics,
    /// The rollouts the daemon drives.
    pub(super) rollouts: Rollouts,
}

/// Locks `m`, carrying on after a panic elsewhere: what these mutexes guard
/// stays consistent between statements.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Host {
    /// Opens the state in `store`, bringing back every registered function
    /// (rebuilding snapshots that are unusable).
    ///
    /// Call it after privileges are dropped: the invocation threads it
    /// starts may not change their credentials any more.
    pub fn open(store: Store, settings: Settings) -> anyhow::Result<Arc<Host>> {
        let registry = Registry::open(&store.registry_path())?;
        let images = ImageStore::open(&store.images_dir())?;
        let compiler =
            Compiler::with_cache(Some(ArtifactCache::new(images.clone(), ARTIFACT_MEMORY)))?;
        let invokers = start_invokers(&settings)?;
        let host = Arc::new(Host {
            functions: RwLock::new(HashMap::new()),
            deploys: Mutex::new(HashMap::new()),
            registry: Mutex::new(registry),
            store,
            images,
            oci: wisp_registry::Registry::new(wisp_registry::Options::from_env()),
            compiler,
            shells: Mutex::new(Vec::new()),
            budget: MemoryBudget::new(settings.memory_budget),
            workers: Arc::new(tokio::sync::Semaphore::new(
                settings.invocation_threads.max(1),
            )),
            invokers,
            settings,
            metrics: Metrics::default(),
            rollouts: Rollouts::default(),
        });
        host.recover()?;
        Ok(host)
    }

    /// The versions and aliases of `name`.
    pub(super) fn deployed(&self, name: &str) -> Option<Arc<Deployed>> {
        self.functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Replaces what `name` has (removes it if `deployed` has no version),
    /// sizing the pools from the new aliases; the versions it no longer
    /// has stop admitting and drop their ready instances.
    pub(super) fn set_deployed(&self, name: &str, deployed: Deployed) {
        deployed.size_pools();
        for f in deployed.versions.values() {
            f.pool.trim(f.sizing.max_ready());
        }
        let old = {
            let mut functions = self.functions.write().unwrap_or_else(|e| e.into_inner());
            if deployed.versions.is_empty() {
                functions.remove(name)
            } else {
                functions.insert(name.to_string(), Arc::new(deployed.clone()))
            }
        };
        for (v, f) in old.iter().flat_map(|o| o.versions.iter()) {
            if !deployed.versions.contains_key(v) {
                f.pool.drain();
            }
        }
    }

    /// Every kept version of every function, by name and number.
    pub(super) fn all(&self) -> Vec<Arc<Function>> {
        let functions = self.functions.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = functions
            .values()
            .flat_map(|d| d.versions.values().cloned())
            .collect();
        drop(functions);
        all.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
        all
    }

    /// The lock that serialises deploys and deletes of `name`.
    pub(super) fn deploy_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(lock(&self.deploys).entry(name.to_string()).or_default())
    }

    /// Runs `change` on a blocking thread under `name`'s deploy lock, in a
    /// task of its own: it completes even if the client goes away. `what`
    /// names it in an internal error.
    pub(super) async fn change<T: Send + 'static>(
        self: &Arc<Self>,
        name: &str,
        what: &'static str,
        change: impl FnOnce(&Host) -> Result<T, super::error::ApiError> + Send + 'static,
    ) -> Result<T, super::error::ApiError> {
        use super::error::ApiError;
        let host = Arc::clone(self);
        let name = name.to_string();
        tokio::spawn(async move {
            let guard = host.deploy_lock(&name);
            let _guard = guard.lock().await;
            tokio::task::spawn_blocking(move || change(&host))
                .await
                .map_err(|e| ApiError::internal(format!("{what} worker: {e}")))?
        })
        .await
        .map_err(|e| ApiError::internal(format!("{what} task: {e}")))?
    }

    /// A pre-created shell for a restore of `image`, if one is left: one
    /// that keeps guest RAM registered for `image` (the restore then skips
    /// registering memory), else one that keeps none, else any (the
    /// restore unregisters what it keeps first).
    pub(super) fn take_shell(&self, image: &Image) -> Option<Shell> {
        let mut shells = lock(&self.shells);
        let at = shells
            .iter()
            .rposition(|s| s.holds_memory_for(image))
            .or_else(|| shells.iter().rposition(|s| !s.holds_memory()))?;
        Some(shells.swap_remove(at))
    }

    /// Keeps `shell` for a later cold start if fewer than `--shells` are
    /// kept; otherwise it is dropped.
    pub(super) fn keep_shell(&self, shell: Shell) {
        let mut shells = lock(&self.shells);
        if shells.len() < self.settings.shells {
            shells.push(shell);
        }
    }

    /// Keeps `shell`, which last held an instance of `image`, as
    /// [`Host::keep_shell`] does; with its guest RAM still registered
    /// unless [`KEPT_PER_IMAGE`] shells keep some for `image` already.
    pub(super) fn keep_used_shell(&self, mut shell: Shell, image: &Image) {
        let kept = lock(&self.shells)
            .iter()
            .filter(|s| s.holds_memory_for(image))
            .count();
        if kept >= KEPT_PER_IMAGE {
            if let Err(e) = shell.forget_memory() {
                warn!(error = %super::error::chain(&e), "unregistering a used VM's memory failed; dropped");
                return;
            }
        }
        self.keep_shell(shell);
    }

    /// Shells missing from the `--shells` kept.
    pub(super) fn shells_missing(&self) -> usize {
        self.settings
            .shells
            .saturating_sub(lock(&self.shells).len())
    }

    /// Whether a used VM should become a shell (fewer than `--shells` are
    /// kept).
    pub(super) fn wants_shell(&self) -> bool {
        self.shells_missing() > 0
    }

    /// `GET /v1/functions/{name}`.
    pub fn get(&self, name: &str) -> Result<crate::api::FunctionInfo, super::error::ApiError> {
        self.deployed(name)
            .and_then(|d| self.info(&d))
            .ok_or_else(|| super::error::ApiError::no_function(name))
    }

    /// `GET /v1/functions`.
    pub fn list(&self) -> Vec<crate::api::FunctionInfo> {
        let mut all: Vec<_> = self
            .functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| {
            a.primary()
                .map(|f| &f.name)
                .cmp(&b.primary().map(|f| &f.name))
        });
        all.iter().filter_map(|d| self.info(d)).collect()
    }

    /// A function as the API shows it: its `live` version with every
    /// version, alias and its latest rollout.
    fn info(&self, deployed: &Deployed) -> Option<crate::api::FunctionInfo> {
        let primary = deployed.primary()?;
        let mut info = primary.info("ready");
        info.versions = deployed.versions.keys().copied().collect();
        info.aliases = deployed.alias_infos();
        info.rollout = self.rollouts.latest(&primary.name);
        Some(info)
    }

    /// The metrics exposition, with gauges refreshed.
    pub fn metrics_text(&self) -> String {
        self.metrics.refresh(&self.all(), &self.budget);
        self.metrics.encode()
    }
}

/// Starts the invocation threads, filtered as `settings.seccomp` says.
fn start_invokers(settings: &Settings) -> anyhow::Result<Invokers> {
    let filter = invocation_filter(settings.seccomp)?;
    if filter.is_some() {
        // What a VM thread does once per process, done before the filter
        // forbids it (opening /dev/kvm, installing a signal handler).
        wisp_vmm::seccomp::prepare()?;
    }
    let invokers = Invokers::start(settings.invocation_threads, filter)?;
    match settings.seccomp {
        Seccomp::Off => warn!(
            threads = settings.invocation_threads,
            "seccomp off: invocation threads are not filtered"
        ),
        mode => info!(
            threads = settings.invocation_threads,
            seccomp = mode.as_str(),
            "invocation threads filtered by seccomp ({})",
            if mode == Seccomp::Kill {
                "calls off the list fail; a call reaching beyond the VMs kills the daemon"
            } else {
                "calls off the list are allowed and logged to the kernel audit log"
            }
        ),
    }
    Ok(invokers)
}
