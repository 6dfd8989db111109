//! The daemon's state and operations: the deployed functions, deploying,
//! invoking, deleting, recovering after a restart, and the pool manager
//! that keeps instances ready.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use bytes::Bytes;
use tracing::{info, warn};
use wisp_vmm::{Error as VmError, Files, FilesBuilder, Image, Shell, Vm, VmConfig};

use super::budget::MemoryBudget;
use super::error::ApiError;
use super::function::{Completed, Failure, Function, MAX_OUTPUT};
use super::invokers::Invokers;
use super::metrics::{
    resident_bytes, FunctionLabels, InvocationLabels, KindLabels, MemoryLabels, Metrics,
};
use super::pool::Rejection;
use super::registry::{Record, Registry};
use super::store::Store;
use crate::api::{FunctionConfig, FunctionImage, FunctionInfo};
use crate::compile::{CompileError, Compiler};
use crate::seccomp::{invocation_filter, Seccomp};
use wisp_images::{ArtifactCache, Digest, Error as ImageError, Store as ImageStore};

/// Bytes of recently used compiled artifacts kept in memory.
const ARTIFACT_MEMORY: u64 = 256 << 20;

/// What a deploy runs.
pub enum Source {
    /// A module as uploaded (`.wasm` or `.wat`).
    Module(Vec<u8>),
    /// An image in the daemon's image store, by reference.
    Image(String),
}

/// Daemon-wide knobs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Host memory instances may use, in bytes.
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
}

impl Settings {
    /// The default number of invocation threads: 8 per core, at least 16.
    pub fn default_invocation_threads() -> usize {
        (std::thread::available_parallelism().map_or(2, |n| n.get()) * 8).max(16)
    }
}

/// How often the pool manager runs.
const TICK: Duration = Duration::from_millis(100);
/// Most shells the pool manager creates per tick.
const SHELLS_PER_TICK: usize = 32;
/// Most instances the pool manager restores for one function per tick.
const RESTORES_PER_TICK: usize = 8;
/// Headroom over the predicted concurrency.
const DEMAND_HEADROOM: f64 = 1.25;

/// What an invocation returned, with its queueing time.
pub struct Invoked {
    /// The completed run.
    pub run: Completed,
    /// Time waiting for a concurrency slot.
    pub queue: Duration,
}

/// The daemon.
pub struct Host {
    functions: RwLock<HashMap<String, Arc<Function>>>,
    deploys: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    registry: Mutex<Registry>,
    store: Store,
    images: ImageStore,
    compiler: Compiler,
    shells: Mutex<Vec<Shell>>,
    settings: Settings,
    budget: Arc<MemoryBudget>,
    /// Invocation threads not running an invocation.
    workers: Arc<tokio::sync::Semaphore>,
    /// The invocation threads.
    invokers: Invokers,
    /// Exported metrics.
    pub metrics: Metrics,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Checks a function name: `[a-z0-9][a-z0-9_-]{0,62}`, so it is safe as a
/// path component and a metric label.
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_name",
            format!("invalid function name `{name}`: use 1-63 of a-z, 0-9, `-`, `_`, starting with a letter or digit"),
        ))
    }
}

/// Checks a function's settings.
pub fn validate_config(c: &FunctionConfig) -> Result<(), ApiError> {
    let bad = |m: String| Err(ApiError::bad_request("invalid_config", m));
    if !(16..=4096).contains(&c.memory_mib) || !c.memory_mib.is_multiple_of(2) {
        return bad(format!(
            "memory_mib {} must be an even number from 16 to 4096",
            c.memory_mib
        ));
    }
    if !(1..=15 * 60 * 1000).contains(&c.timeout_ms) {
        return bad(format!(
            "timeout_ms {} must be from 1 to 900000",
            c.timeout_ms
        ));
    }
    if !(1..=100_000).contains(&c.concurrency) {
        return bad(format!(
            "concurrency {} must be from 1 to 100000",
            c.concurrency
        ));
    }
    if c.max_ready > 10_000 || c.reserved > c.max_ready {
        return bad(format!(
            "reserved {} and max_ready {} must satisfy reserved <= max_ready <= 10000",
            c.reserved, c.max_ready
        ));
    }
    if let Some(k) = c
        .env
        .keys()
        .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
    {
        return bad(format!("invalid environment variable name `{k}`"));
    }
    Ok(())
}

/// A failure to write state: a full disk is `507 insufficient_storage`
/// (the previous version keeps serving), anything else a 500.
fn storage_error(what: &str, e: &(dyn std::error::Error + 'static)) -> ApiError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cause {
        let disk_full = err.downcast_ref::<std::io::Error>().is_some_and(|io| {
            io.raw_os_error() == Some(libc::ENOSPC) || io.kind() == std::io::ErrorKind::StorageFull
        }) || err
            .downcast_ref::<rusqlite::Error>()
            .is_some_and(|db| db.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull));
        if disk_full {
            return ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                format!("{what}: the state directory's disk is full; nothing was changed"),
            );
        }
        cause = err.source();
    }
    ApiError::internal(format!("{what}: {e}"))
}

/// Maps an image-store failure of a deploy by image.
fn image_error(e: &ImageError) -> ApiError {
    match e {
        ImageError::InvalidReference { .. } | ImageError::Ambiguous { .. } => {
            ApiError::bad_request("invalid_image_reference", e.to_string())
        }
        ImageError::NotFound(reference) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "image_not_found",
            format!("no image `{reference}` in the daemon's image store (STATE/images): build or import it there first"),
        ),
        ImageError::Corrupt { .. }
        | ImageError::MissingBlob(_)
        | ImageError::NotRegularFile { .. } => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "image_corrupt",
            format!("{e}; nothing was deployed"),
        ),
        ImageError::InvalidImage(_) | ImageError::NotWasm(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_module",
            e.to_string(),
        ),
        // What the image holds, not the store's state: the client's to fix.
        ImageError::InvalidLayer { .. } | ImageError::InvalidFile { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_image",
            format!("{e}; nothing was deployed"),
        ),
        ImageError::Busy { .. } => ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "image_store_busy",
                format!("{e}; nothing was deployed"),
            )
        },
        e => storage_error("the image store", e),
    }
}

/// Maps a boot failure: the module's fault is a 422, the host's a 500.
fn boot_error(e: VmError) -> ApiError {
    match e {
        VmError::Module(_)
        | VmError::OutOfMemory(_)
        | VmError::Timeout(_)
        | VmError::GuestFault { .. }
        | VmError::AgentPanic(_)
        | VmError::Protocol(_)
        | VmError::TripleFault
        | VmError::OutputLimit(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_module",
            format!("the module cannot start: {e}"),
        ),
        e => ApiError::internal(format!("booting the module: {e}")),
    }
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
            compiler,
            shells: Mutex::new(Vec::new()),
            budget: MemoryBudget::new(settings.memory_budget),
            workers: Arc::new(tokio::sync::Semaphore::new(
                settings.invocation_threads.max(1),
            )),
            invokers,
            settings,
            metrics: Metrics::default(),
        });
        host.recover()?;
        Ok(host)
    }

    fn recover(&self) -> anyhow::Result<()> {
        let records = lock(&self.registry).list()?;
        // Every registered function keeps its files, even one that cannot
        // be brought back now.
        let live_dirs: Vec<_> = records.iter().map(|r| r.snapshot_dir.clone()).collect();
        let live_modules: Vec<_> = records.iter().map(|r| r.module_sha256.clone()).collect();
        self.reconcile_pins(&records);
        for record in records {
            let function = match Image::open(&record.snapshot_dir) {
                Ok(image) => Ok(self.function_from(&record, Arc::new(image))),
                Err(e) => {
                    warn!(function = %record.name, error = %e, "snapshot unusable; rebuilding it");
                    self.rebuild(&record)
                }
            };
            match function {
                Ok(function) => {
                    info!(function = %record.name, version = record.version, "restored");
                    self.functions
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(record.name, Arc::new(function));
                }
                Err(e) => {
                    warn!(function = %record.name, error = %e.message, "cannot bring the function back; it stays registered")
                }
            }
        }
        self.store.collect_garbage(&live_dirs, &live_modules);
        Ok(())
    }

    /// Makes the image store's pins match the registry: a function deployed
    /// from an image pins it (a crash may have come between the two
    /// writes); a pin of no such function goes.
    fn reconcile_pins(&self, records: &[Record]) {
        let pins = match self.images.pins() {
            Ok(pins) => pins,
            Err(e) => {
                warn!(error = %e, "reading the image pins");
                return;
            }
        };
        for record in records {
            let Some(digest) = record
                .image
                .as_ref()
                .and_then(|i| Digest::parse(&i.digest).ok())
            else {
                continue;
            };
            if pins.get(&record.name) != Some(&digest) {
                if let Err(e) = self.images.pin(&record.name, &digest) {
                    warn!(function = %record.name, error = %e, "pinning its image");
                }
            }
        }
        for name in pins.keys() {
            if !records.iter().any(|r| r.name == *name && r.image.is_some()) {
                if let Err(e) = self.images.unpin(name) {
                    warn!(function = %name, error = %e, "removing a stale image pin");
                }
            }
        }
    }

    fn function_from(&self, record: &Record, image: Arc<Image>) -> Function {
        Function::new(
            record.name.clone(),
            record.version,
            record.config.clone(),
            record.module_sha256.clone(),
            record.image.clone(),
            record.deployed_at,
            image,
        )
    }

    /// Rebuilds a snapshot from the stored module (compile cache first)
    /// and, for a function deployed from an image, the image's files.
    fn rebuild(&self, record: &Record) -> Result<Function, ApiError> {
        let module = self
            .store
            .get_module(&record.module_sha256)
            .map_err(|e| ApiError::internal(format!("reading the stored module: {e}")))?;
        let files = match &record.image {
            Some(image) => {
                let digest = Digest::parse(&image.digest).map_err(|e| image_error(&e))?;
                self.image_files(&digest)?
            }
            None => Files::default(),
        };
        let image = self.snapshot(&record.name, record.version, &record.config, &module, files)?;
        Ok(self.function_from(record, image))
    }

    /// Compiles, boots to ready with `files` and snapshots a module; the
    /// version's snapshot directory is replaced.
    fn snapshot(
        &self,
        name: &str,
        version: u64,
        config: &FunctionConfig,
        module: &[u8],
        files: Files,
    ) -> Result<Arc<Image>, ApiError> {
        let artifact = self.compiler.load_or_compile(module).map_err(|e| match e {
            CompileError::Engine(_) => ApiError::internal(e.to_string()),
            e => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_module",
                e.to_string(),
            ),
        })?;
        let vm_config = VmConfig {
            mem_size: u64::from(config.memory_mib) << 20,
            timeout: Some(Duration::from_millis(config.timeout_ms)),
            max_output: MAX_OUTPUT,
            files,
            ..VmConfig::default()
        };
        let mut vm = self.boot_filtered(vm_config, artifact)?;
        let init = vm.take_init_output();
        if !init.stderr.is_empty() {
            info!(function = name, stderr = %String::from_utf8_lossy(&init.stderr), "init output");
        }
        let dir = self.store.snapshot_dir(name, version);
        // A leftover directory (a crash mid-deploy) is replaced outright.
        let _ = std::fs::remove_dir_all(&dir);
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| storage_error(&format!("creating {}", parent.display()), &e))?;
        }
        vm.snapshot(&dir, name, None)
            .map_err(|e| storage_error("writing the snapshot", &e))?;
        drop(vm);
        Image::open(&dir)
            .map(Arc::new)
            .map_err(|e| ApiError::internal(format!("reopening the snapshot: {e}")))
    }

    /// Boots a module to ready on an invocation thread: its instantiation
    /// and `wisp_init` are guest code, so they run under the same seccomp
    /// filter as invocations. The VM comes back to this (unfiltered) thread
    /// to be snapshotted. Takes an invocation thread's permit when there is
    /// a runtime to wait on, so invocations still start at once.
    fn boot_filtered(&self, config: VmConfig, artifact: Vec<u8>) -> Result<Vm, ApiError> {
        let _permit = tokio::runtime::Handle::try_current()
            .ok()
            .and_then(|runtime| {
                runtime
                    .block_on(Arc::clone(&self.workers).acquire_owned())
                    .ok()
            });
        let (tx, rx) = std::sync::mpsc::channel();
        self.invokers.submit(move || {
            let _ = tx.send(Vm::boot(config, &artifact));
        });
        rx.recv()
            .map_err(|_| ApiError::internal("the boot worker stopped"))?
            .map_err(boot_error)
    }

    /// The current version of `name`.
    fn function(&self, name: &str) -> Option<Arc<Function>> {
        self.functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    fn all(&self) -> Vec<Arc<Function>> {
        let mut all: Vec<_> = self
            .functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    fn deploy_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(lock(&self.deploys).entry(name.to_string()).or_default())
    }

    /// Deploys or updates `name` and returns it once ready (true if it is
    /// new). The old version serves until the new one is ready.
    pub async fn deploy(
        self: &Arc<Self>,
        name: String,
        config: FunctionConfig,
        source: Source,
    ) -> Result<(FunctionInfo, bool), ApiError> {
        validate_name(&name)?;
        validate_config(&config)?;
        let guard = self.deploy_lock(&name);
        let _guard = guard.lock().await;
        let host = Arc::clone(self);
        let function = tokio::task::spawn_blocking(move || host.build(name, config, source))
            .await
            .map_err(|e| ApiError::internal(format!("deploy worker: {e}")))??;
        let created = self.activate(Arc::clone(&function));
        info!(function = %function.name, version = function.version, "deployed");
        Ok((function.info("ready"), created))
    }

    /// The blocking part of a deploy. An image is pinned for the function
    /// before its module is read (so a concurrent `wisp image gc` keeps
    /// it); a failed deploy puts the previous pin back, and a deploy from a
    /// module drops the pin of a previous image.
    fn build(
        &self,
        name: String,
        config: FunctionConfig,
        source: Source,
    ) -> Result<Arc<Function>, ApiError> {
        let from_image = matches!(source, Source::Image(_));
        let previous = self
            .images
            .pins()
            .map_err(|e| image_error(&e))?
            .remove(&name);
        let result = match source {
            Source::Module(module) => {
                self.build_module(name.clone(), config, &module, Files::default(), None)
            }
            Source::Image(reference) => {
                self.image_module(&name, &reference)
                    .and_then(|(module, files, image)| {
                        self.build_module(name.clone(), config, &module, files, Some(image))
                    })
            }
        };
        let restore = match (&result, from_image) {
            (Err(_), true) => Some(previous),
            (Ok(_), false) if previous.is_some() => Some(None),
            _ => None,
        };
        let restored = match restore {
            Some(Some(digest)) => self.images.pin(&name, &digest),
            Some(None) => self.images.unpin(&name),
            None => Ok(()),
        };
        if let Err(e) = restored {
            warn!(function = %name, error = %e, "updating the image pin");
        }
        result
    }

    /// Resolves `reference` in the image store, pins it for `name` and
    /// reads its module and files (checked).
    fn image_module(
        &self,
        name: &str,
        reference: &str,
    ) -> Result<(Vec<u8>, Files, FunctionImage), ApiError> {
        let digest = self
            .images
            .resolve(reference)
            .map_err(|e| image_error(&e))?;
        self.images
            .pin(name, &digest)
            .map_err(|e| image_error(&e))?;
        let module = self
            .images
            .image(&digest)
            .and_then(|image| image.module())
            .map_err(|e| image_error(&e))?;
        let files = self.image_files(&digest)?;
        Ok((
            module,
            files,
            FunctionImage {
                reference: reference.to_string(),
                digest: digest.to_string(),
            },
        ))
    }

    /// An image's files, for the guest: mounted read-only at `/`.
    fn image_files(&self, digest: &Digest) -> Result<Files, ApiError> {
        let entries = self
            .images
            .image(digest)
            .and_then(|image| image.files())
            .map_err(|e| image_error(&e))?;
        guest_files(&entries).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_module",
                format!("the image's files cannot be given to a guest: {e}"),
            )
        })
    }

    /// Stores the module, compiles, snapshots, registers and restores the
    /// reserved instances.
    fn build_module(
        &self,
        name: String,
        config: FunctionConfig,
        module: &[u8],
        files: Files,
        source_image: Option<FunctionImage>,
    ) -> Result<Arc<Function>, ApiError> {
        let sha = self
            .store
            .put_module(module)
            .map_err(|e| storage_error("storing the module", &e))?;
        let version = lock(&self.registry)
            .version(&name)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .unwrap_or(0)
            + 1;
        let image = self.snapshot(&name, version, &config, module, files)?;
        let record = Record {
            name: name.clone(),
            version,
            config: config.clone(),
            module_sha256: sha,
            image: source_image,
            snapshot_dir: self.store.snapshot_dir(&name, version),
            deployed_at: now_unix(),
        };
        lock(&self.registry)
            .upsert(&record)
            .map_err(|e| storage_error("registering the function", &e))?;
        let function = Arc::new(self.function_from(&record, image));
        for _ in 0..config.reserved {
            match function.restore(self.take_shell(), &self.budget) {
                Ok(Some(instance)) => function.pool.put(instance, config.max_ready as usize),
                Ok(None) => break,
                Err(e) => warn!(function = %name, error = %e, "restoring a reserved instance"),
            }
        }
        Ok(function)
    }

    /// Makes `function` the current version; the old one drains. Returns
    /// true if there was none.
    fn activate(&self, function: Arc<Function>) -> bool {
        let old = self
            .functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(function.name.clone(), Arc::clone(&function));
        match old {
            Some(old) => {
                old.pool.drain();
                // Running instances keep their private mapping of the old
                // files; nothing new will open them.
                if old.version != function.version {
                    let _ =
                        std::fs::remove_dir_all(self.store.snapshot_dir(&old.name, old.version));
                }
                false
            }
            None => true,
        }
    }

    /// Runs `name` with `stdin`.
    pub async fn invoke(self: &Arc<Self>, name: &str, stdin: Bytes) -> Result<Invoked, ApiError> {
        let t0 = Instant::now();
        // An update may drain the version we looked up; take the new one.
        let (function, slot) = loop {
            let function = self
                .function(name)
                .ok_or_else(|| ApiError::no_function(name))?;
            match function.pool.admit().await {
                Ok(slot) => break (function, slot),
                Err(Rejection::Draining) => {
                    if self
                        .function(name)
                        .is_some_and(|f| !Arc::ptr_eq(&f, &function))
                    {
                        continue;
                    }
                    return Err(ApiError::no_function(name));
                }
                Err(Rejection::QueueFull) => {
                    function.stats.reject();
                    self.metrics
                        .rejections
                        .get_or_create(&KindLabels {
                            function: name.to_string(),
                            kind: "concurrency_limit",
                        })
                        .inc();
                    return Err(ApiError::too_many(
                        "concurrency_limit",
                        format!(
                            "`{name}` is at its concurrency limit of {} with a full queue",
                            function.config.concurrency
                        ),
                    ));
                }
            }
        };
        // Wait for an invocation thread here, so the wait shows in the
        // queue time and a submitted job starts at once.
        let worker_permit = Arc::clone(&self.workers)
            .acquire_owned()
            .await
            .map_err(|_| ApiError::internal("the daemon is shutting down"))?;
        let queue = t0.elapsed();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let host = Arc::clone(self);
        let worker = Arc::clone(&function);
        self.invokers.submit(move || {
            let exec = worker.execute(&stdin, &|| host.take_shell(), &host.budget);
            let _ = tx.send((exec.result, exec.cold));
            // Off the response path, still holding the slot: reset the
            // instance for the pool, or recycle its VM as a shell.
            if let Some(instance) = exec.instance {
                host.put_back(&worker, instance);
            }
            drop(slot);
            drop(worker_permit);
        });
        let (result, cold) = rx
            .await
            .map_err(|_| ApiError::internal("the invocation worker stopped"))?;
        let latency = t0.elapsed();
        let labels = FunctionLabels {
            function: name.to_string(),
        };
        self.metrics
            .latency
            .get_or_create(&labels)
            .observe(latency.as_secs_f64());
        match result {
            Ok(run) => {
                function.stats.record(cold, true, latency);
                self.count(name, cold);
                Ok(Invoked { run, queue })
            }
            Err(failure) => {
                let error = failure_error(name, failure);
                if error.status == StatusCode::TOO_MANY_REQUESTS
                    || error.status == StatusCode::SERVICE_UNAVAILABLE
                {
                    function.stats.reject();
                    self.metrics
                        .rejections
                        .get_or_create(&KindLabels {
                            function: name.to_string(),
                            kind: error.code,
                        })
                        .inc();
                } else {
                    function.stats.record(cold, false, latency);
                    self.count(name, cold);
                    self.metrics
                        .errors
                        .get_or_create(&KindLabels {
                            function: name.to_string(),
                            kind: error.code,
                        })
                        .inc();
                }
                Err(error)
            }
        }
    }

    /// Returns a used instance: reset into the pool if it has room,
    /// otherwise its VM becomes a shell for the next cold start (cheaper
    /// than destroying it and creating another).
    fn put_back(&self, function: &Function, mut instance: super::pool::Instance) {
        let max_ready = function.config.max_ready as usize;
        if function.pool.has_room(max_ready) {
            match instance.vm().reset() {
                Ok(()) => {
                    instance.recharge();
                    function.pool.put(instance, max_ready);
                }
                Err(e) => {
                    warn!(function = %function.name, error = %e, "reset failed; instance dropped")
                }
            }
        } else if lock(&self.shells).len() < self.settings.shells {
            match instance.into_shell() {
                Ok(shell) => lock(&self.shells).push(shell),
                Err(e) => warn!(error = %e, "recycling a VM failed; dropped"),
            }
        }
    }

    fn count(&self, name: &str, cold: bool) {
        self.metrics
            .invocations
            .get_or_create(&InvocationLabels {
                function: name.to_string(),
                start: if cold { "cold" } else { "warm" },
            })
            .inc();
    }

    /// A pre-created shell, if one is left.
    fn take_shell(&self) -> Option<Shell> {
        lock(&self.shells).pop()
    }

    /// `GET /v1/functions/{name}`.
    pub fn get(&self, name: &str) -> Result<FunctionInfo, ApiError> {
        self.function(name)
            .map(|f| f.info("ready"))
            .ok_or_else(|| ApiError::no_function(name))
    }

    /// `GET /v1/functions`.
    pub fn list(&self) -> Vec<FunctionInfo> {
        self.all().iter().map(|f| f.info("ready")).collect()
    }

    /// Deletes `name` after its in-flight invocations finish.
    pub async fn delete(self: &Arc<Self>, name: &str) -> Result<(), ApiError> {
        let guard = self.deploy_lock(name);
        let _guard = guard.lock().await;
        let function = self
            .functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .ok_or_else(|| ApiError::no_function(name))?;
        function.pool.drain();
        let limit = Duration::from_millis(function.config.timeout_ms) + Duration::from_secs(5);
        let t0 = Instant::now();
        while function.pool.busy() > 0 || function.pool.queued() > 0 {
            if t0.elapsed() > limit {
                warn!(
                    function = name,
                    "in-flight invocations outlived the drain limit"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        lock(&self.registry)
            .remove(name)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let _ = std::fs::remove_dir_all(self.store.snapshot_dir(name, function.version));
        let _ = std::fs::remove_dir(self.store.function_dir(name)); // if empty
        if let Err(e) = self.images.unpin(name) {
            warn!(function = name, error = %e, "removing the image pin");
        }
        let labels = FunctionLabels {
            function: name.to_string(),
        };
        self.metrics.ready.remove(&labels);
        self.metrics.busy.remove(&labels);
        info!(function = name, "deleted");
        Ok(())
    }

    /// The metrics exposition, with gauges refreshed.
    pub fn metrics_text(&self) -> String {
        for f in self.all() {
            let labels = FunctionLabels {
                function: f.name.clone(),
            };
            self.metrics
                .ready
                .get_or_create(&labels)
                .set(f.pool.ready() as i64);
            self.metrics
                .busy
                .get_or_create(&labels)
                .set(f.pool.busy() as i64);
        }
        let gauge = |kind, value: u64| {
            self.metrics
                .memory
                .get_or_create(&MemoryLabels { kind })
                .set(value as i64)
        };
        gauge("budget_used", self.budget.used());
        gauge("budget_limit", self.budget.limit());
        gauge("resident", resident_bytes());
        self.metrics.encode()
    }

    /// Starts the pool manager on its own thread: every tick it tops up the
    /// pre-created shells and sizes each function's ready set to its
    /// predicted demand. Its work is blocking (KVM ioctls, page copies); on
    /// a thread of its own it also does not keep the runtime's idle
    /// blocking threads alive by waking them in turn.
    pub fn start_pool_manager(self: &Arc<Self>) -> std::io::Result<()> {
        let host = Arc::clone(self);
        std::thread::Builder::new()
            .name("wisp-pool".into())
            .spawn(move || loop {
                let t0 = Instant::now();
                host.maintain_once();
                std::thread::sleep(TICK.saturating_sub(t0.elapsed()));
            })
            .map(|_| ())
    }

    fn maintain_once(&self) {
        let missing = self
            .settings
            .shells
            .saturating_sub(lock(&self.shells).len());
        for _ in 0..missing.min(SHELLS_PER_TICK) {
            match Shell::new() {
                Ok(shell) => lock(&self.shells).push(shell),
                Err(e) => {
                    warn!(error = %e, "creating a shell");
                    break;
                }
            }
        }
        for f in self.all() {
            let demand = f.pool.sample_demand();
            let reserved = f.config.reserved as usize;
            let max_ready = f.config.max_ready as usize;
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
                    match f.restore(self.take_shell(), &self.budget) {
                        Ok(Some(instance)) => f.pool.put(instance, max_ready),
                        Ok(None) => break,
                        Err(e) => {
                            warn!(function = %f.name, error = %e, "restoring an instance");
                            break;
                        }
                    }
                }
            } else if ready > want_ready && idle {
                f.pool.trim(want_ready);
            }
        }
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
                "a forbidden system call kills the daemon"
            } else {
                "forbidden system calls are allowed and logged to the kernel audit log"
            }
        ),
    }
    Ok(invokers)
}

/// The response for a failed invocation.
fn failure_error(name: &str, failure: Failure) -> ApiError {
    let bad_gateway = |code, message| ApiError::new(StatusCode::BAD_GATEWAY, code, message);
    match failure {
        Failure::Trapped(message, stderr) => {
            let tail = &stderr[stderr.len().saturating_sub(1024)..];
            let mut message = format!("`{name}` trapped: {}", message.trim_end());
            if !tail.is_empty() {
                message += &format!("; stderr: {}", String::from_utf8_lossy(tail).trim_end());
            }
            bad_gateway("function_trapped", message)
        }
        Failure::Timeout(limit) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "function_timeout",
            format!("`{name}` ran past its timeout of {} ms", limit.as_millis()),
        ),
        Failure::OutOfMemory(message) => bad_gateway(
            "function_out_of_memory",
            format!("{message} (raise memory_mib)"),
        ),
        Failure::OutputLimit(limit) => bad_gateway(
            "function_output_limit",
            format!("`{name}` wrote more than {limit} bytes of output"),
        ),
        Failure::Crashed(message) => bad_gateway(
            "function_crashed",
            format!("`{name}` crashed its instance: {message}"),
        ),
        Failure::NoMemory => ApiError::too_many(
            "memory_budget",
            "the host's memory budget for instances is exhausted",
        ),
        Failure::Overloaded(message) => ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "host_overloaded",
                format!("the host cannot start another instance now: {message}"),
            )
        },
        Failure::Internal(message) => ApiError::internal(message),
    }
}

/// The guest path an image's files are mounted at.
pub const IMAGE_FILES_DIR: &str = "/";

/// Lays an image's files out for the guest, read-only at
/// [`IMAGE_FILES_DIR`]; no files, no mount.
pub fn guest_files(entries: &[wisp_images::FileEntry]) -> Result<Files, VmError> {
    if entries.is_empty() {
        return Ok(Files::default());
    }
    let mut builder = FilesBuilder::new();
    builder.mount(IMAGE_FILES_DIR)?;
    for entry in entries {
        let path = entry.path.to_str().ok_or_else(|| {
            VmError::Config(format!("{}: the name is not UTF-8", entry.path.display()))
        })?;
        match &entry.kind {
            wisp_images::FileKind::Dir => builder.dir(path)?,
            wisp_images::FileKind::File(data, _mode) => builder.file(path, data.clone())?,
            wisp_images::FileKind::Symlink(target) => {
                let target = target.to_str().ok_or_else(|| {
                    VmError::Config(format!(
                        "{}: the link target is not UTF-8",
                        entry.path.display()
                    ))
                })?;
                builder.symlink(path, target)?
            }
        };
    }
    Ok(builder.build())
}
