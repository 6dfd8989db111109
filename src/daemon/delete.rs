//! `DELETE /v1/functions/{name}`: stop admitting, let in-flight
//! invocations finish, then forget the function — every version, alias
//! and rollout in the registry (but not its last version number, which is
//! never reused), snapshots, image pin, metrics.
//!
//! Like a deploy, a delete runs to its end even if its client goes away,
//! and its blocking steps (the registry, files, the image store's lock)
//! run on blocking threads, never on the async runtime's workers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::error::{storage_error, ApiError};
use super::function::Function;
use super::host::{lock, Host};
use super::images::is_version_pin_of;
use super::routes::Deployed;

/// How often a delete looks whether the in-flight invocations finished.
const DRAIN_POLL: Duration = Duration::from_millis(5);
/// Time in-flight invocations get beyond their timeout.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

impl Host {
    /// Deletes `name` after its in-flight invocations finish.
    pub async fn delete(self: &Arc<Self>, name: &str) -> Result<(), ApiError> {
        let host = Arc::clone(self);
        let name = name.to_string();
        tokio::spawn(async move {
            let guard = host.deploy_lock(&name);
            let _guard = guard.lock().await;
            let deployed = host
                .functions
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name)
                .ok_or_else(|| ApiError::no_function(&name))?;
            host.rollouts.remove(&name);
            for function in deployed.versions.values() {
                drain(function).await;
            }
            let worker = Arc::clone(&host);
            tokio::task::spawn_blocking(move || worker.forget(&name, &deployed))
                .await
                .map_err(|e| ApiError::internal(format!("delete worker: {e}")))?
        })
        .await
        .map_err(|e| ApiError::internal(format!("delete task: {e}")))?
    }

    /// The blocking end of a delete: the registry rows, the snapshots, the
    /// image pin and the metrics.
    fn forget(&self, name: &str, deployed: &Deployed) -> Result<(), ApiError> {
        lock(&self.registry)
            .write(|w| w.remove_function(name))
            .map_err(|e| storage_error("removing the function from the registry", &e))?;
        let _ = std::fs::remove_dir_all(self.store.function_dir(name));
        let version_pins = self.images.pins().map(|pins| {
            pins.into_keys()
                .filter(|p| is_version_pin_of(p, name))
                .collect::<Vec<_>>()
        });
        let pins = std::iter::once(name.to_string()).chain(version_pins.unwrap_or_default());
        for pin in pins {
            if let Err(e) = self.images.unpin(&pin) {
                warn!(function = name, pin, error = %e, "removing an image pin");
            }
        }
        self.metrics.forget(name);
        for v in deployed.versions.keys() {
            self.metrics.forget_version(name, *v);
        }
        info!(function = name, "deleted");
        Ok(())
    }
}

/// Stops `function` admitting and waits (bounded by its timeout and a
/// grace period) for its in-flight invocations.
async fn drain(function: &Arc<Function>) {
    // Dropping its ready instances tears VMs down: not on a runtime worker.
    let draining = Arc::clone(function);
    let _ = tokio::task::spawn_blocking(move || draining.pool.drain()).await;
    let limit = Duration::from_millis(function.config.timeout_ms) + DRAIN_GRACE;
    let t0 = Instant::now();
    while function.pool.busy() > 0 || function.pool.queued() > 0 {
        if t0.elapsed() > limit {
            warn!(
                function = %function.name,
                "in-flight invocations outlived the drain limit"
            );
            return;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}
