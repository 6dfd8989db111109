//! The scenarios run against a real `wisp serve`: cold and warm
//! invocations, a burst of concurrent clients, and instance density.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hyper::Method;
use serde::Serialize;

use wisp::api::{self, DeployRequest, FunctionConfig, FunctionInfo};
use wisp::client::{Connection, Response};

use super::series::{measure, progress, Sample, Series, Start};
use crate::daemon_process::DaemonProcess;
use crate::procfs::proc_kib;

/// A request taking longer than this is an error (the daemon is stuck).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A deploy may first compile its module: a language runtime's
/// interpreter takes about half a minute on a 2-core machine.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(600);

/// A daemon under test with a keep-alive connection for sequential
/// requests, driven from a single-threaded runtime so a request costs no
/// cross-thread wake-up on the client side.
pub struct BenchDaemon {
    process: DaemonProcess,
    runtime: tokio::runtime::Runtime,
    conn: Connection,
}

/// A function to deploy and invoke.
#[derive(Clone, Debug)]
pub struct Function {
    /// Label in the results (`hello`, `transform`).
    pub label: String,
    /// The module, `.wasm` or `.wat` (empty for a handler).
    pub module: Vec<u8>,
    /// A handler on a language runtime, deployed as code instead.
    pub handler: Option<HandlerCode>,
    /// The request body (its stdin).
    pub input: Bytes,
    /// What it must answer.
    pub expected: Bytes,
    /// Guest memory.
    pub memory_mib: u32,
    /// At most this many invocations per scenario: a heavy function's
    /// rows need fewer samples than a trivial one's.
    pub max_runs: usize,
}

/// A handler deployed as code on a runtime (docs/RUNTIMES.md).
#[derive(Clone, Debug)]
pub struct HandlerCode {
    /// The runtime (`python3.12`).
    pub runtime: String,
    /// `MODULE.FUNCTION`.
    pub handler: String,
    /// The code's directory.
    pub dir: std::path::PathBuf,
    /// The code as the tar a deploy sends.
    pub code_tar: Vec<u8>,
}

impl BenchDaemon {
    /// Starts `binary serve` in `dir` with `flags`.
    pub fn start(binary: &Path, dir: &Path, flags: &[&str]) -> Result<BenchDaemon> {
        let process = DaemonProcess::start(binary, Some(dir), flags).map_err(anyhow::Error::msg)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let conn = runtime.block_on(Connection::open(process.socket()))?;
        Ok(BenchDaemon {
            process,
            runtime,
            conn,
        })
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn request(&mut self, method: Method, path: &str, body: Bytes) -> Result<Response> {
        self.request_within(REQUEST_TIMEOUT, method, path, body)
    }

    fn request_within(
        &mut self,
        timeout: Duration,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Response> {
        let conn = &mut self.conn;
        self.runtime.block_on(async {
            tokio::time::timeout(timeout, conn.send(method, path, body))
                .await
                .context("no response from the daemon")?
        })
    }

    /// Deploys `function` as `name` with `reserved`/`max_ready` instances.
    pub fn deploy(
        &mut self,
        name: &str,
        function: &Function,
        reserved: u32,
        max_ready: u32,
    ) -> Result<()> {
        // Only the settings the benchmark chooses, the rest left to the
        // daemon's defaults: so a `--baseline` build from before a setting
        // existed accepts the request too.
        let mut request = serde_json::json!({
            "memory_mib": function.memory_mib,
            "reserved": reserved,
            "max_ready": max_ready,
        });
        match &function.handler {
            Some(code) => {
                let code_request = DeployRequest::code(&code.code_tar, FunctionConfig::default());
                request["code_base64"] = code_request.code_base64.into();
                request["runtime"] = code.runtime.clone().into();
                request["handler"] = code.handler.clone().into();
            }
            None => {
                let module = DeployRequest::module(&function.module, FunctionConfig::default());
                request["module_base64"] = module.module_base64.into();
            }
        }
        self.request_within(
            DEPLOY_TIMEOUT,
            Method::PUT,
            &format!("/v1/functions/{name}"),
            Bytes::from(serde_json::to_vec(&request)?),
        )?
        .ok()
        .with_context(|| format!("deploying {name}"))?;
        Ok(())
    }

    /// Points `name`'s `alias` as `routing` (an `AliasRouting`) says.
    pub fn put_alias(
        &mut self,
        name: &str,
        alias: &str,
        routing: &serde_json::Value,
    ) -> Result<()> {
        self.request(
            Method::PUT,
            &format!("/v1/functions/{name}/aliases/{alias}"),
            Bytes::from(serde_json::to_vec(routing)?),
        )?
        .ok()
        .with_context(|| format!("setting {name}'s alias {alias}"))?;
        Ok(())
    }

    /// Deletes `name`.
    pub fn delete(&mut self, name: &str) -> Result<()> {
        self.request(
            Method::DELETE,
            &format!("/v1/functions/{name}"),
            Bytes::new(),
        )?
        .ok()
        .with_context(|| format!("deleting {name}"))?;
        Ok(())
    }

    /// What the daemon reports about `name`.
    pub fn info(&mut self, name: &str) -> Result<FunctionInfo> {
        let r = self
            .request(Method::GET, &format!("/v1/functions/{name}"), Bytes::new())?
            .ok()?;
        Ok(serde_json::from_slice(&r.body)?)
    }

    /// Invokes `name` `runs` times back to back on one connection; every
    /// answer must be `function.expected`, and start as `want` if given.
    pub fn series(
        &mut self,
        scenario: &str,
        name: &str,
        function: &Function,
        runs: usize,
        want: Option<Start>,
    ) -> Series {
        let path = format!("/v1/functions/{name}/invoke");
        measure(
            scenario,
            &function.label,
            runs.min(function.max_runs),
            || {
                let response = self
                    .request(Method::POST, &path, function.input.clone())
                    .map_err(|e| format!("{e:#}"))?;
                let start = check(&response, &function.expected)?;
                if let Some(want) = want.filter(|&w| w != start) {
                    return Err(format!(
                        "started {} instead of {}",
                        start.as_str(),
                        want.as_str()
                    ));
                }
                Ok(start)
            },
        )
    }

    /// Bytes of memory the daemon process has resident.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        proc_kib(&status, "VmRSS").unwrap_or(0)
    }
}

/// Checks one invocation's response: 200, exit code 0, the expected body.
fn check(r: &Response, expected: &[u8]) -> Result<Start, String> {
    if r.status != 200 {
        return Err(format!(
            "HTTP {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body).trim_end()
        ));
    }
    if r.header(api::HEADER_EXIT_CODE) != Some("0") {
        return Err(format!("exit code {:?}", r.header(api::HEADER_EXIT_CODE)));
    }
    if r.body != expected {
        return Err(format!(
            "answered {} bytes, not the {} expected",
            r.body.len(),
            expected.len()
        ));
    }
    match r.header(api::HEADER_START) {
        Some("cold") => Ok(Start::Cold),
        Some("warm") => Ok(Start::Warm),
        other => Err(format!("{}: {other:?}", api::HEADER_START)),
    }
}

/// What the burst scenario saw.
#[derive(Clone, Debug, Serialize)]
pub struct Burst {
    /// Concurrent clients, all released at once.
    pub clients: usize,
    /// Every request, `at_us` from the release.
    pub series: Series,
    /// The function's ready instances, admitted requests (running, or
    /// waiting for an invocation thread) and requests queued over its
    /// concurrency limit, sampled every 50 ms: `(ms since release, ready,
    /// busy, queued)` as `GET /v1/functions/{name}` reports them.
    pub pool: Vec<(u64, u64, u64, u64)>,
}

/// `clients` connections, opened beforehand, all send their first request
/// at the same instant and keep invoking `name` back to back for
/// `duration`; a poller records how the pool manager catches up.
pub fn burst(
    socket: &Path,
    name: &str,
    function: &Function,
    clients: usize,
    duration: Duration,
) -> Result<Burst> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(burst_async(socket, name, function, clients, duration))
}

async fn burst_async(
    socket: &Path,
    name: &str,
    function: &Function,
    clients: usize,
    duration: Duration,
) -> Result<Burst> {
    let mut conns = Vec::with_capacity(clients);
    for i in 0..clients {
        conns.push(
            Connection::open(socket)
                .await
                .with_context(|| format!("opening connection {} of {clients}", i + 1))?,
        );
    }
    let bar = progress(
        &format!("burst {clients} / {}", function.label),
        duration.as_millis() as u64,
    );
    let release = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let path = format!("/v1/functions/{name}/invoke");
    let t0 = Instant::now() + Duration::from_millis(100);
    let end = t0 + duration;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let (release, path, function) = (release.clone(), path.clone(), function.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut errors = Vec::new();
                release.wait().await;
                tokio::time::sleep_until(t0.into()).await;
                loop {
                    let start = Instant::now();
                    if start >= end {
                        break;
                    }
                    let result = tokio::time::timeout(
                        REQUEST_TIMEOUT,
                        conn.send(Method::POST, &path, function.input.clone()),
                    )
                    .await;
                    // A transport failure leaves the connection unusable.
                    let (outcome, broken) = match result {
                        Ok(Ok(r)) => (check(&r, &function.expected), false),
                        Ok(Err(e)) => (Err(format!("{e:#}")), true),
                        Err(_) => (Err(format!("no response within {REQUEST_TIMEOUT:?}")), true),
                    };
                    samples.push(Sample {
                        at_us: start.saturating_duration_since(t0).as_micros() as u64,
                        latency_us: start.elapsed().as_micros() as u64,
                        ok: outcome.is_ok(),
                        start: outcome.clone().unwrap_or(Start::None),
                    });
                    if let Err(e) = outcome {
                        errors.push(e);
                    }
                    if broken {
                        break;
                    }
                }
                (samples, errors)
            })
        })
        .collect();
    let poll = {
        let socket = socket.to_path_buf();
        let info_path = format!("/v1/functions/{name}");
        tokio::spawn(async move {
            let mut pool = Vec::new();
            let mut conn = Connection::open(&socket).await.ok();
            let mut tick = tokio::time::interval_at(t0.into(), Duration::from_millis(50));
            while Instant::now() < end + Duration::from_millis(500) {
                tick.tick().await;
                let Some(c) = conn.as_mut() else { break };
                let Ok(r) = c.send(Method::GET, &info_path, Bytes::new()).await else {
                    break;
                };
                if let Ok(info) = serde_json::from_slice::<FunctionInfo>(&r.body) {
                    let i = info.instances;
                    pool.push((t0.elapsed().as_millis() as u64, i.ready, i.busy, i.queued));
                }
            }
            pool
        })
    };
    release.wait().await;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
        bar.set_position(t0.elapsed().as_millis().min(duration.as_millis()) as u64);
    }
    bar.finish_and_clear();
    let mut series = Series::new(&format!("wisp burst {clients}"), &function.label);
    for task in tasks {
        let (samples, errors) = task.await?;
        series.samples.extend(samples);
        for e in errors {
            series.note_error(e);
        }
    }
    series.samples.sort_by_key(|s| s.at_us);
    series.wall_us = duration.as_micros() as u64;
    let pool = poll.await?;
    Ok(Burst {
        clients,
        series,
        pool,
    })
}

/// What the density scenario measured.
#[derive(Clone, Debug, Serialize)]
pub struct Density {
    /// Ready instances asked for.
    pub requested: u32,
    /// Ready instances the daemon reported.
    pub ready: u64,
    /// Time to deploy with that many reserved instances, in ms.
    pub deploy_ms: u64,
    /// Host memory used per idle instance (restored, not yet invoked: the
    /// fall of `MemAvailable`, which counts KVM's kernel memory too), in KiB.
    /// An instance that ran holds more: the pages it wrote, until reset.
    pub host_kib_per_instance: u64,
    /// Growth of the daemon's resident memory per instance, in KiB.
    pub rss_kib_per_instance: u64,
    /// Guest memory each instance has, in MiB.
    pub guest_mib: u32,
    /// Invocations of the dense function that answered correctly
    /// (proof that the instances work, not only exist).
    pub invocations_ok: usize,
}

/// Deploys `function` with `count` reserved instances and measures what
/// they cost the host; deletes it afterwards.
pub fn density(daemon: &mut BenchDaemon, function: &Function, count: u32) -> Result<Density> {
    let name = "bench-density";
    let available = || {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        proc_kib(&meminfo, "MemAvailable").unwrap_or(0)
    };
    let (host0, rss0) = (available(), daemon.rss_kib());
    let t = Instant::now();
    daemon.deploy(name, function, count, count)?;
    let deploy_ms = t.elapsed().as_millis() as u64;
    let info = daemon.info(name)?;
    let ready = info.instances.ready;
    let (host1, rss1) = (available(), daemon.rss_kib());
    if ready == 0 {
        bail!("no instance became ready");
    }
    let check = daemon.series("density check", name, function, 20, Some(Start::Warm));
    daemon.delete(name)?;
    Ok(Density {
        requested: count,
        ready,
        deploy_ms,
        host_kib_per_instance: host0.saturating_sub(host1) / ready,
        rss_kib_per_instance: rss1.saturating_sub(rss0) / ready,
        guest_mib: function.memory_mib,
        invocations_ok: check.samples.iter().filter(|s| s.ok).count(),
    })
}
