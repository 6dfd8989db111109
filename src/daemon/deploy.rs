//! `PUT /v1/functions/{name}`: checking a deploy, compiling, booting to
//! ready on an invocation thread, snapshotting, registering and making the
//! new version current.
//!
//! A deploy runs to its end once the daemon has its request, even if the
//! client goes away: it is a task of its own, and the registry is written
//! and the version activated together, on one thread, with nothing to
//! cancel between them. What the registry says is what serves.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};
use wisp_images::Digest;
use wisp_vmm::{Files, Image, Vm, VmConfig};

use super::budget::instance_base_bytes;
use super::error::{boot_error, compile_error, image_error, storage_error, ApiError};
use super::function::{invocation, Function, MAX_OUTPUT};
use super::host::{lock, Host};
use super::images::{image_files, image_module};
use super::registry::Record;
use crate::api::{FunctionConfig, FunctionImage, FunctionInfo, MAX_TIMEOUT_MS};

/// What a deploy runs.
pub enum Source {
    /// A module as uploaded (`.wasm` or `.wat`).
    Module(Vec<u8>),
    /// An image in the daemon's image store, by reference.
    Image(String),
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

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Host {
    /// Deploys or updates `name` and returns it once ready (true if it is
    /// new). The old version serves until the new one is ready.
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

    /// The blocking part of a deploy: builds the version, registers it and
    /// makes it current.
    fn build_and_activate(
        &self,
        name: FunctionName,
        config: FunctionConfig,
        source: Source,
    ) -> Result<(FunctionInfo, bool), ApiError> {
        let function = self.build(name.as_str(), config, source)?;
        let created = self.activate(Arc::clone(&function));
        info!(function = %function.name, version = function.version, "deployed");
        Ok((function.info("ready"), created))
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
    ) -> Result<Arc<Function>, ApiError> {
        let from_image = matches!(source, Source::Image(_));
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
                image_module(&self.images, name, &reference).and_then(|(module, files, image)| {
                    self.build_module(name, config, &module, files, Some(image))
                })
            }
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

    /// Stores the module, compiles, snapshots, registers and restores the
    /// reserved instances.
    fn build_module(
        &self,
        name: &str,
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
            .version(name)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .unwrap_or(0)
            + 1;
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
        lock(&self.registry)
            .upsert(&record)
            .map_err(|e| storage_error("registering the function", &e))?;
        let function = Arc::new(Function::from_record(&record, image));
        let max_ready = function.config.max_ready as usize;
        for _ in 0..function.config.reserved {
            match self.restore(&function) {
                Ok(Some(instance)) => function.pool.put(instance, max_ready),
                Ok(None) => break,
                Err(e) => warn!(function = %name, error = %e, "restoring a reserved instance"),
            }
        }
        Ok(function)
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
        let _charge = self
            .budget
            .reserve(instance_base_bytes(mem_size) + mem_size)
            .ok_or_else(ApiError::memory_budget)?;
        let vm_config = VmConfig {
            mem_size,
            timeout: Some(Duration::from_millis(config.timeout_ms)),
            boot_timeout: Duration::from_millis(config.init_timeout_ms),
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
            .map_err(|e| storage_error("reopening the snapshot", &e))
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

    /// Makes `function` the current version; the old one drains and its
    /// snapshot goes. Returns true if there was none.
    fn activate(&self, function: Arc<Function>) -> bool {
        let old = self
            .functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(function.name.clone(), Arc::clone(&function));
        let Some(old) = old else {
            return true;
        };
        old.pool.drain();
        // Running instances keep their private mapping of the old files;
        // nothing new will open them.
        if old.version != function.version {
            let _ = std::fs::remove_dir_all(self.store.snapshot_dir(&old.name, old.version));
        }
        false
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
