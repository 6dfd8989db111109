//! `POST /v1/functions/{name}/invoke`, top to bottom: admission (the
//! function's concurrency slot, then an invocation thread), the run on
//! that thread (a ready instance or a cold restore, charged to the memory
//! budget), the response, and then — off the response path — the used
//! instance reset into the pool or recycled as a shell.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{info, warn};
use wisp_vmm::{Blame, BufferIo, Error as VmError, Outcome, Prefault, Vm, VmConfig};

use super::error::{invocation_error, ApiError, Failure};
use super::function::{Completed, Function};
use super::host::Host;
use super::instance::Instance;
use super::metrics::Routed;
use super::pool::{Rejection, Slot};
use super::routes::{Chosen, Qualifier};

/// What an invocation returned, with its queueing time.
pub struct Invoked {
    /// The completed run.
    pub run: Completed,
    /// Time waiting for a concurrency slot and an invocation thread.
    pub queue: Duration,
    /// The version that answered.
    pub version: u64,
    /// The alias the request went through, unless it named a version.
    pub alias: Option<String>,
}

/// What a run on an invocation thread came to.
struct Execution {
    /// How the invocation ended.
    result: Result<Completed, Failure>,
    /// Whether it ran (or would have run) on a freshly restored instance.
    cold: bool,
    /// The used instance, if it may serve again once reset.
    instance: Option<Instance>,
}

impl Execution {
    fn failed(failure: Failure, cold: bool) -> Execution {
        Execution {
            result: Err(failure),
            cold,
            instance: None,
        }
    }
}

impl Host {
    /// Runs the version of `name` that `qualifier` routes to with `stdin`.
    pub async fn invoke(
        self: &Arc<Self>,
        name: &str,
        qualifier: &Qualifier,
        stdin: Bytes,
    ) -> Result<Invoked, ApiError> {
        let t0 = Instant::now();
        let (Chosen { function, alias }, slot) = self.admit(name, qualifier).await?;
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
        let started = super::invokers::Started::default();
        let running = started.clone();
        self.invokers.submit(move || {
            running.mark();
            let exec = host.execute(&worker, &stdin);
            let _ = tx.send((exec.result, exec.cold));
            // Off the response path, still holding the slot.
            if let Some(mut instance) = exec.instance {
                if exec.cold {
                    // The first cold start teaches the image the pages its
                    // invocations write (a no-op once it knows them).
                    instance.vm().learn_working_set();
                }
                host.put_back(&worker, instance);
            }
            drop(slot);
            drop(worker_permit);
        });
        // Alone: no other invocation (or reset) holds a thread, so polling
        // for the result takes a core nobody else wants.
        let alone = self.workers.available_permits() + 1 >= self.settings.invocation_threads.max(1);
        let (result, cold) = super::invokers::wait_for(rx, alone.then_some(&started))
            .await
            .ok_or_else(|| ApiError::internal("the invocation worker stopped"))?;
        let latency = t0.elapsed();
        if let Ok(run) = &result {
            if let (Some(id), false) = (&run.request_id, run.stderr.is_empty()) {
                // A runtime's log (print, console.log), by request.
                info!(function = %name, request_id = %id, log = %String::from_utf8_lossy(&run.stderr), "function log");
            }
        }
        let result = result.map_err(|failure| invocation_error(name, failure));
        let routed = Routed {
            version: function.version,
            alias: alias.as_deref(),
        };
        match &result {
            Err(e) if e.is_rejection() => {
                function.stats.reject();
                self.metrics.rejected(name, e.code);
            }
            result => {
                function.stats.record(cold, result.is_ok(), latency);
                self.metrics.ran(name, cold, latency);
                let outcome = match result {
                    Ok(run) if run.exit_code != 0 => {
                        function.stats.nonzero_exit();
                        "nonzero_exit"
                    }
                    Ok(_) => "ok",
                    Err(e) => {
                        self.metrics.failed(name, e.code);
                        e.code
                    }
                };
                self.metrics.ran_version(name, routed, outcome);
            }
        }
        result.map(|run| Invoked {
            run,
            queue,
            version: function.version,
            alias,
        })
    }

    /// Takes a concurrency slot of the version `qualifier` routes to. A
    /// deploy or a delete may drain the version chosen; then the choice is
    /// made again, and fails only if it still lands on a drained version.
    async fn admit(&self, name: &str, qualifier: &Qualifier) -> Result<(Chosen, Slot), ApiError> {
        loop {
            let chosen = self
                .deployed(name)
                .ok_or_else(|| ApiError::no_function(name))?
                .choose(name, qualifier)?;
            let function = &chosen.function;
            match function.pool.admit().await {
                Ok(slot) => return Ok((chosen, slot)),
                Err(Rejection::Draining) => {
                    let moved = self.deployed(name).is_some_and(|d| {
                        d.versions
                            .get(&function.version)
                            .is_none_or(|f| !Arc::ptr_eq(f, function))
                    });
                    if moved {
                        continue;
                    }
                    return Err(ApiError::no_function(name));
                }
                Err(Rejection::QueueFull) => {
                    function.stats.reject();
                    self.metrics.rejected(name, "concurrency_limit");
                    return Err(ApiError::too_many(
                        "concurrency_limit",
                        format!(
                            "`{name}` is at its concurrency limit of {} with a full queue",
                            function.config.concurrency
                        ),
                    ));
                }
            }
        }
    }

    /// Runs one invocation on this invocation thread: on a ready instance
    /// if there is one, else on a freshly restored one. A failure of the
    /// host (never of the function, its settings or exhaustion) is retried
    /// once on a fresh instance.
    fn execute(&self, function: &Function, body: &[u8]) -> Execution {
        let request = function.runtime_request(body);
        let (stdin, request_id) = match &request {
            Some((stdin, id)) => (stdin.as_slice(), Some(id)),
            None => (body, None),
        };
        let mut retried = false;
        loop {
            let t0 = Instant::now();
            let taken = if retried { None } else { function.pool.take() };
            let (mut instance, cold) = match taken {
                Some(instance) => (instance, false),
                None => match self.restore(function, Prefault::WorkingSet) {
                    Ok(Some(instance)) => (instance, true),
                    Ok(None) => return Execution::failed(Failure::NoMemory, true),
                    Err(e) if !retried && e.blame() == Blame::Host => {
                        retried = true;
                        continue;
                    }
                    Err(e) => return Execution::failed(Failure::Vm(e), true),
                },
            };
            if !self.charge_for_run(&mut instance) {
                if !cold {
                    // Untouched: it can still serve someone else.
                    function.pool.put(instance, function.sizing.max_ready());
                }
                return Execution::failed(Failure::NoMemory, cold);
            }
            let restore = if cold { t0.elapsed() } else { Duration::ZERO };
            // Borrowed stdin: a retry replays the same request body.
            let mut io = BufferIo::with_stdin(stdin);
            let t_run = Instant::now();
            let outcome = instance.vm().invoke(&function.invocation, &mut io);
            let run = t_run.elapsed();
            // A trapped or failed instance is dropped, never pooled.
            return match outcome {
                Ok(Outcome::Exited(exit_code)) => Execution {
                    result: Ok(Completed {
                        exit_code,
                        stdout: io.stdout,
                        stderr: io.stderr,
                        cold,
                        restore,
                        run,
                        request_id: request_id.cloned(),
                    }),
                    cold,
                    instance: Some(instance),
                },
                Ok(Outcome::Trapped(message)) => Execution::failed(
                    Failure::Trapped {
                        message,
                        stderr: io.stderr,
                    },
                    cold,
                ),
                Err(e) if !retried && e.blame() == Blame::Host => {
                    retried = true;
                    continue;
                }
                Err(e) => Execution::failed(Failure::Vm(e), cold),
            };
        }
    }

    /// Charges `instance` all of its guest memory for a run. If the budget
    /// is short, idle instances beyond every function's reserved ones are
    /// dropped first to make room.
    fn charge_for_run(&self, instance: &mut Instance) -> bool {
        if instance.charge_for_run() {
            return true;
        }
        let mut freed = 0;
        for f in self.all() {
            freed += f.pool.trim(f.sizing.reserved());
        }
        freed > 0 && instance.charge_for_run()
    }

    /// Restores a new instance of `function` into a pre-created shell (or a
    /// new VM), charging the memory budget; `None` if the budget is
    /// exhausted. A request waiting for it wants [`Prefault::WorkingSet`]:
    /// the pages invocations of `function` write are copied in one pass
    /// before the guest runs (once a cold start has taught the image which
    /// they are, see `invoke`). Instances kept ready for later want
    /// [`Prefault::None`], holding no private page until they are used.
    pub(super) fn restore(
        &self,
        function: &Function,
        prefault: Prefault,
    ) -> Result<Option<Instance>, VmError> {
        let Some(charge) = Instance::reserve(&self.budget, function.image.mem_size()) else {
            return Ok(None);
        };
        let config = VmConfig {
            prefault,
            ..function.vm_config()
        };
        let vm = match self.take_shell(&function.image) {
            Some(shell) => Vm::restore_in(shell, &function.image, config)?,
            None => Vm::restore(&function.image, config)?,
        };
        Ok(Some(Instance::new(vm, charge)))
    }

    /// Returns a used instance: reset into the pool if it has room (charged
    /// then for what it holds), otherwise its VM becomes a shell for the
    /// next cold start (cheaper than destroying it and creating another).
    fn put_back(&self, function: &Function, mut instance: Instance) {
        let max_ready = function.sizing.max_ready();
        if function.pool.has_room(max_ready) {
            match instance.vm().reset() {
                Ok(()) => {
                    instance.recharge();
                    function.pool.put(instance, max_ready);
                }
                Err(e) => {
                    warn!(function = %function.name, error = %super::error::chain(&e), "reset failed; instance dropped")
                }
            }
        } else if self.wants_shell() {
            match instance.into_shell() {
                Ok(shell) => self.keep_used_shell(shell, &function.image),
                Err(e) => warn!(error = %super::error::chain(&e), "recycling a VM failed; dropped"),
            }
        }
    }
}
