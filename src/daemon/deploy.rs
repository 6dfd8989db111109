//! `PUT /v1/functions/{name}`: checking a deploy, compiling, booting to
//! ready on an invocation thread, snapshotting, registering the new
//! version and moving `live` to it.
//!
//! A deploy runs to its end once the daemon has its request, even if the
//! client goes away: it is a task of its own, and the registry is written
//! and the version activated together, on one thread, with nothing to
//! cancel between them. What the registry says is what serves.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};
use wisp_images::Digest;
use wisp_vmm::{Files, Image, Prefault, Vm, VmConfig};

use super::budget::instance_base_bytes;
use super::error::{
    boot_error, compile_error, handler_error, image_error, registry_error, storage_error, ApiError,
};
use super::function::{invocation, Function, MAX_OUTPUT};
use super::host::{lock, Host};
use super::images::{image_files, image_module, runtime_image, version_pin};
use super::registry::Record;
use crate::api::{
    AliasRouting, FunctionConfig, FunctionImage, FunctionInfo, LIVE_ALIAS, MAX_TIMEOUT_MS,
};
use crate::runtimes::{Runtime, RuntimeError};
use wisp_registry::{names_registry, RegistryRef};

/// What a deploy runs.
pub enum Source {
    /// A module as uploaded (`.wasm` or `.wat`).
    Module(Vec<u8>),
    /// An image in the daemon's image store, by reference; or, for a
    /// reference naming a registry host, pulled from that registry first.
    Image(String),
    /// An image pulled from a registry for this deploy: the reference as
    /// given and the digest it resolved to, which the function records.
    Pulled {
        /// The registry reference, as the request gave it.
        reference: String,
        /// The stored image's manifest digest.
        digest: Digest,
    },
    /// A handler's code (a tar), on the runtime its settings name.
    Code(Vec<u8>),
}

/// A checked function name: `[a-z0-9][a-z0-9_-]{0,62}`, so it is safe as a
/// path component and a metric label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionName(String);

impl FunctionName {
    /// Checks `name`.
    pub fn parse(name: &str) -> Result<FunctionName, ApiError> {
        let ok = (1..=63).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && name.as_bytes()[0].is_ascii_alphanumeric();
        if ok {
            Ok(FunctionName(name.to_string()))
        } else {
            Err(ApiError::bad_request(
                "invalid_name",
                format!("invalid function name `{name}`: use 1-63 of a-z, 0-9, `-`, `_`, starting with a letter or digit"),
            ))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a function's settings on their own and against a host whose
/// memory budget is `budget` bytes: each must be in range, the request
/// built from them must fit the guest's buffer, and the reserved instances
/// must be able to run at once within the budget.
pub fn validate_config(name: &str, c: &FunctionConfig, budget: u64) -> Result<(), ApiError> {
    let bad = |m: String| Err(ApiError::invalid_config(m));
    if !(16..=4096).contains(&c.memory_mib) || !c.memory_mib.is_multiple_of(2) {
        return bad(format!(
            "memory_mib {} must be an even number from 16 to 4096",
            c.memory_mib
        ));
    }
    for (field, value) in [
        ("timeout_ms", c.timeout_ms),
        ("init_timeout_ms", c.init_timeout_ms),
    ] {
        if !(1..=MAX_TIMEOUT_MS).contains(&value) {
            return bad(format!(
                "{field} {value} must be from 1 to {MAX_TIMEOUT_MS}"
            ));
        }
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
    if let Some(k) = c.env.iter().find(|(_, v)| v.contains('\0')).map(|e| e.0) {
        return bad(format!(
            "environment variable `{k}` contains a NUL byte, which WASI strings cannot hold"
        ));
    }
    function_runtime(c)?;
    if let Err(e) = invocation(name, c).check() {
        return bad(format!("env: {}", super::error::chain(&e)));
    }
    let mem = u64::from(c.memory_mib) << 20;
    let running = instance_base_bytes(mem) + mem;
    let mib = |bytes: u64| bytes >> 20;
    if running > budget {
        return bad(format!(
            "memory_mib {}: a running instance is charged {} MiB, more than the host's memory budget of {} MiB",
            c.memory_mib,
            mib(running),
            mib(budget)
        ));
    }
    if u64::from(c.reserved) * running > budget {
        return bad(format!(
            "reserved {} instances of memory_mib {} cannot run at once within the host's memory budget of {} MiB (each is charged {} MiB while it runs)",
            c.reserved,
            c.memory_mib,
            mib(budget),
            mib(running)
        ));
    }
    Ok(())
}

/// `config` with the runtime and handler an image's annotations name
/// (`wisp image build --runtime`) when it names neither itself; checked.
fn with_image_handler(
    config: FunctionConfig,
    handler: Option<(String, String)>,
) -> Result<FunctionConfig, ApiError> {
    let config = match handler {
        Some((runtime, handler)) if config.runtime.is_none() && config.handler.is_none() => {
            FunctionConfig {
                runtime: Some(runtime),
                handler: Some(handler),
                ..config
            }
        }
        _ => config,
    };
    function_runtime(&config)?;
    Ok(config)
}

/// The runtime a function's settings name, checked with its handler;
/// `None` for a wasm module.
pub fn function_runtime(c: &FunctionConfig) -> Result<Option<&'static Runtime>, ApiError> {
    let refused = |e: RuntimeError| {
        let code = match e {
            RuntimeError::Unknown(_) => "runtime_not_found",
            RuntimeError::BadHandler { .. } => "invalid_handler",
        };
        ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            code,
            e.to_string(),
        )
    };
    match (&c.runtime, &c.handler) {
        (None, None) => Ok(None),
        (Some(name), Some(handler)) => {
            let runtime = Runtime::find(name).map_err(refused)?;
            runtime.check_handler(handler).map_err(refused)?;
            Ok(Some(runtime))
        }
        (Some(_), None) => Err(ApiError::invalid_config(
            "a `runtime` needs a `handler`, e.g. app.handler",
        )),
        (None, Some(_)) => Err(ApiError::invalid_config(
            "a `handler` needs a `runtime`, e.g. python3.12",
        )),
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Host {
    /// Deploys a new version of `name` and moves `live` to it once it is
    /// ready (true if the function is new). The old version serves until
    /// then, and is kept.
    pub async fn deploy(
        self: &Arc<Self>,
        name: FunctionName,
        config: FunctionConfig,
        source: Source,
    ) -> Result<(FunctionInfo, bool), ApiError> {
        validate_config(name.as_str(), &config, self.budget.limit())?;
        let host = Arc::clone(self);
        // A task of its own: if the client goes away, the deploy still
        // ends with the registry and the serving version agreeing.
        tokio::spawn(async move {
            // Pulled before the function's deploy lock is taken, on the
            // async runtime (its store work on blocking threads), so a slow
            // registry holds up neither another deploy nor `/healthz`.
            let source = match source {
                Source::Image(reference) if names_registry(&reference) => {
                    let digest = host.pull(&reference).await?;
                    Source::Pulled { reference, digest }
                }
                source => source,
            };
            let guard = host.deploy_lock(name.as_str());
            let _guard = guard.lock().await;
            let worker = Arc::clone(&host);
            tokio::task::spawn_blocking(move || worker.build_and_activate(name, config, source))
                .await
                .map_err(|e| ApiError::internal(format!("deploy worker: {e}")))?
        })
        .await
        .map_err(|e| ApiError::internal(format!("deploy task: {e}")))?
    }

    /// Pulls the image of registry reference `reference` into the image
    /// store (only its manifest, to resolve a tag, if the image is already
    /// stored) and returns its digest: a tag is resolved once per deploy.
    async fn pull(&self, reference: &str) -> Result<Digest, ApiError> {
        let parsed = RegistryRef::parse_explicit(reference).map_err(|e| registry_error(&e))?;
        let pulled = self
            .oci
            .pull(&self.images, &parsed)
            .await
            .map_err(|e| registry_error(&e))?;
        info!(
            image = %parsed,
            digest = %pulled.digest,
            fetched_bytes = pulled.fetched_bytes,
            already_stored = pulled.already_stored,
            "pulled"
        );
        Ok(pulled.digest)
    }

    /// The blocking part of a deploy: builds the version, registers it and
    /// makes it current.
    fn build_and_activate(
        &self,
        name: FunctionName,
        config: FunctionConfig,
        source: Source,
    ) -> Result<(FunctionInfo, bool), ApiError> {
        let (function, record) = self.build(name.as_str(), config, source)?;
        let created = self.activate(function, &record)?;
        info!(function = %record.name, version = record.version, "deployed");
        Ok((self.get(&record.name)?, created))
    }

    /// Builds and registers a version. An image is pinned for the function
    /// before its module is read (so a concurrent `wisp image gc` keeps
    /// it); a failed deploy puts the previous pin back, and a deploy from a
    /// module drops the pin of a previous image.
    fn build(
        &self,
        name: &str,
        config: FunctionConfig,
        source: Source,
    ) -> Result<(Arc<Function>, Record), ApiError> {
        let from_image = !matches!(source, Source::Module(_));
        let previous = self
            .images
            .pins()
            .map_err(|e| image_error(&e))?
            .remove(name);
        let result = match source {
            Source::Module(module) => {
                self.build_module(name, config, &module, Files::default(), None)
            }
            Source::Image(reference) => {
                self.build_image(name, config, &reference, reference.clone())
            }
            Source::Pulled { reference, digest } => {
                self.build_image(name, config, &digest.to_string(), reference)
            }
            Source::Code(code) => function_runtime(&config)
                .and_then(|runtime| {
                    runtime.ok_or_else(|| ApiError::invalid_config("code_base64 needs a `runtime`"))
                })
                .and_then(|runtime| runtime_image(&self.images, name, runtime, &code))
                .and_then(|(module, files, image)| {
                    self.build_module(name, config, &module, files, Some(image))
                }),
        };
        let restore = match (&result, from_image) {
            (Err(_), true) => Some(previous),
            (Ok(_), false) if previous.is_some() => Some(None),
            _ => None,
        };
        let restored = match restore {
            Some(Some(digest)) => self.images.pin(name, &digest),
            Some(None) => self.images.unpin(name),
            None => Ok(()),
        };
        if let Err(e) = restored {
            warn!(function = %name, error = %e, "updating the image pin");
        }
        result
    }

    /// Builds from the stored image `stored` (a reference into the image
    /// store), recording `reference` as what the deploy named.
    fn build_image(
        &self,
        name: &str,
        config: FunctionConfig,
        stored: &str,
        reference: String,
    ) -> Result<(Arc<Function>, Record), ApiError> {
        let image = image_module(&self.images, name, stored)?;
        let config = with_image_handler(config, image.handler)?;
        let recorded = FunctionImage {
            reference,
            ..image.image
        };
        self.build_module(name, config, &image.module, image.files, Some(recorded))
    }

    /// Stores the module, compiles and snapshots the next version.
    fn build_module(
        &self,
        name: &str,
        config: FunctionConfig,
        module: &[u8],
        files: Files,
        source_image: Option<FunctionImage>,
    ) -> Result<(Arc<Function>, Record), ApiError> {
        let sha = self
            .store
            .put_module(module)
            .map_err(|e| storage_error("storing the module", &e))?;
        // Numbers are never reused: the registry keeps each name's last.
        let version = lock(&self.registry)
            .next_version(name)
            .map_err(|e| storage_error("reading the registry", &e))?;
        let image = self.snapshot(name, version, &config, module, files)?;
        let record = Record {
            name: name.to_string(),
            version,
            config,
            module_sha256: sha,
            image: source_image,
            snapshot_dir: self.store.snapshot_dir(name, version),
            deployed_at: now_unix(),
        };
        let function = Arc::new(Function::from_record(&record, image));
        Ok((function, record))
    }

    /// Compiles, boots to ready with `files` and snapshots a module; the
    /// version's snapshot directory is replaced. The booting VM is charged
    /// all of its guest memory, as a running instance is.
    pub(super) fn snapshot(
        &self,
        name: &str,
        version: u64,
        config: &FunctionConfig,
        module: &[u8],
        files: Files,
    ) -> Result<Arc<Image>, ApiError> {
        let artifact = self
            .compiler
            .load_or_compile(module)
            .map_err(compile_error)?;
        let mem_size = u64::from(config.memory_mib) << 20;
        let wanted = instance_base_bytes(mem_size) + mem_size;
        let _charge = self.budget.reserve(wanted).ok_or_else(|| {
            warn!(
                function = name,
                wanted,
                used = self.budget.used(),
                limit = self.budget.limit(),
                "no room in the memory budget for a deploy's boot"
            );
            ApiError::memory_budget()
        })?;
        let vm_config = VmConfig {
            mem_size,
            timeout: Some(Duration::from_millis(config.timeout_ms)),
            boot_timeout: Duration::from_millis(config.init_timeout_ms),
            max_output: MAX_OUTPUT,
            files,
            // A handler on a runtime: snapshotted once it is imported.
            run_to_first_read: config.runtime.is_some().then(|| invocation(name, config)),
            ..VmConfig::default()
        };
        let runtime = config.runtime.is_some();
        let mut vm = self.boot_filtered(vm_config, artifact)?.map_err(|e| {
            if runtime {
                handler_error(e)
            } else {
                boot_error(e)
            }
        })?;
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
            .map_err(|e| storage_error("reopening the snapshot", &e))
    }

    /// Boots a module to ready on an invocation thread: its instantiation
    /// and `wisp_init` are guest code, so they run under the same seccomp
    /// filter as invocations. The VM comes back to this (unfiltered) thread
    /// to be snapshotted. Takes an invocation thread's permit when there is
    /// a runtime to wait on, so invocations still start at once.
    fn boot_filtered(
        &self,
        config: VmConfig,
        artifact: Vec<u8>,
    ) -> Result<wisp_vmm::Result<Vm>, ApiError> {
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
            .map_err(|_| ApiError::internal("the boot worker stopped"))
    }

    /// Registers `function` and moves `live` to it, in one transaction
    /// (a rollout of `live` is cancelled in it too); restores its reserved
    /// instances, swaps it in and applies the retention limit. Returns true
    /// if the function had no version.
    fn activate(&self, function: Arc<Function>, record: &Record) -> Result<bool, ApiError> {
        let name = record.name.as_str();
        let mut deployed = self
            .deployed(name)
            .map(|d| (*d).clone())
            .unwrap_or_default();
        let created = deployed.versions.is_empty();
        // The alias keeps its pool settings; its split ends.
        let live = AliasRouting {
            additional: None,
            ..deployed
                .aliases
                .get(LIVE_ALIAS)
                .cloned()
                .unwrap_or_else(|| AliasRouting::to(record.version))
        };
        let live = AliasRouting {
            version: record.version,
            ..live
        };
        let cancelled = self.rollouts.cancel_of_alias(
            name,
            LIVE_ALIAS,
            format!(
                "version {} was deployed and `live` moved to it",
                record.version
            ),
        );
        lock(&self.registry)
            .write(|w| {
                w.put_version(record)?;
                w.put_alias(name, LIVE_ALIAS, &live)?;
                match &cancelled {
                    Some(rollout) => w.put_rollout(name, rollout),
                    None => Ok(()),
                }
            })
            .map_err(|e| storage_error("registering the version", &e))?;
        if let Some(digest) = record
            .image
            .as_ref()
            .and_then(|i| Digest::parse(&i.digest).ok())
        {
            if let Err(e) = self.images.pin(&version_pin(name, record.version), &digest) {
                warn!(function = %name, version = record.version, error = %e, "pinning the version's image");
            }
        }
        if let Some(rollout) = cancelled {
            self.rollouts.set(name, rollout);
        }
        deployed
            .versions
            .insert(record.version, Arc::clone(&function));
        deployed.aliases.insert(LIVE_ALIAS.to_string(), live);
        deployed.size_pools();
        for _ in 0..function.sizing.reserved() {
            match self.restore(&function, Prefault::None) {
                Ok(Some(instance)) => function.pool.put(instance, function.sizing.max_ready()),
                Ok(None) => break,
                Err(e) => warn!(function = %name, error = %e, "restoring a reserved instance"),
            }
        }
        self.set_deployed(name, deployed);
        self.retain(name);
        Ok(created)
    }

    /// A function registered before from its record, re-snapshotted from
    /// its stored module and (if it had one) its pinned image's files.
    pub(super) fn rebuild(&self, record: &Record) -> Result<Function, ApiError> {
        let module = self
            .store
            .get_module(&record.module_sha256)
            .map_err(|e| storage_error("reading the stored module", &e))?;
        let files = match &record.image {
            Some(image) => {
                let digest = Digest::parse(&image.digest).map_err(|e| image_error(&e))?;
                image_files(&self.images, &digest)?
            }
            None => Files::default(),
        };
        let image = self.snapshot(&record.name, record.version, &record.config, &module, files)?;
        Ok(Function::from_record(record, image))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: u64 = 4 << 30;

    fn check(config: &FunctionConfig) -> Result<(), String> {
        validate_config("f", config, BUDGET).map_err(|e| e.message)
    }

    #[test]
    fn names_are_checked_once_by_type() {
        FunctionName::parse("hello-1_x").unwrap();
        for bad in ["", "-x", "Upper", "a/b", &"x".repeat(64)] {
            let e = FunctionName::parse(bad).unwrap_err();
            assert_eq!(e.code, "invalid_name", "{bad}");
        }
    }

    #[test]
    fn env_that_no_request_can_carry_is_refused() {
        let mut config = FunctionConfig::default();
        config.env.insert("BIG".into(), "x".repeat(70_000));
        assert!(check(&config).unwrap_err().contains("request buffer"));
        let mut config = FunctionConfig::default();
        config.env.insert("NUL".into(), "a\0b".into());
        assert!(check(&config).unwrap_err().contains("NUL"));
        let mut config = FunctionConfig::default();
        config.env.insert("FITS".into(), "x".repeat(60_000));
        check(&config).unwrap();
    }

    #[test]
    fn settings_must_fit_the_memory_budget() {
        let config = FunctionConfig {
            memory_mib: 4096,
            ..FunctionConfig::default()
        };
        assert!(check(&config).unwrap_err().contains("memory budget"));
        let config = FunctionConfig {
            memory_mib: 1024,
            reserved: 10,
            ..FunctionConfig::default()
        };
        assert!(check(&config).unwrap_err().contains("reserved 10"));
        let config = FunctionConfig {
            memory_mib: 1024,
            reserved: 3,
            ..FunctionConfig::default()
        };
        check(&config).unwrap();
    }

    #[test]
    fn init_timeout_is_bounded() {
        for bad in [0, MAX_TIMEOUT_MS + 1] {
            let config = FunctionConfig {
                init_timeout_ms: bad,
                ..FunctionConfig::default()
            };
            assert!(check(&config).unwrap_err().contains("init_timeout_ms"));
        }
    }
}
