//! Load benchmark of the daemon: `wisp serve` under 1 to 1000 concurrent
//! keep-alive clients invoking a trivial function, pooled (warm) and
//! restored for every request (cold).
//!
//! `cargo bench --bench load [-- --seconds S]` (default 3 s per level for
//! the warm function, 2 s for the cold one, each after a 0.5 s warm-up).
//! The daemon boots real micro-VMs, so it needs `/dev/kvm`.
//!
//! Every response is checked: 200 with `hello, world!\n` and an
//! `x-wisp-start` header, or 429 (deliberate load shedding). Anything else —
//! another status, a wrong body, a broken connection, a request that takes
//! longer than 10 s — is an error, reported loudly, and the benchmark exits
//! non-zero at the end.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use wisp::api::{self, DeployRequest, FunctionConfig};
use wisp::client::{Client, Connection, Response};
use wisp::stats::Summary;
use wisp_bench::daemon_process::DaemonProcess;
use wisp_bench::harness::require_kvm;

/// Concurrent clients per level.
const LEVELS: [usize; 4] = [1, 16, 256, 1000];
/// Default measured seconds per level.
const WARM_SECONDS: f64 = 3.0;
const COLD_SECONDS: f64 = 2.0;
/// Requests before the measured window, not counted (except errors).
const WARMUP: Duration = Duration::from_millis(500);
/// A request taking longer than this is an error (the daemon is stuck).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the daemon may take to listen.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// The throughput target for warm invocations.
const TARGET_PER_SEC: f64 = 15_000.0;
/// Client runtime worker threads.
const CLIENT_THREADS: usize = 2;
/// What hello prints.
const HELLO: &[u8] = b"hello, world!\n";
/// Distinct error messages kept per level.
const ERROR_EXAMPLES: usize = 5;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `--seconds S` from the command line (cargo passes other flags such as
/// `--bench`, which are ignored).
fn seconds_arg() -> Option<f64> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == "--seconds")?;
    match args.get(i + 1).and_then(|v| v.parse::<f64>().ok()) {
        Some(s) if s > 0.0 && s.is_finite() => Some(s),
        _ => {
            eprintln!("--seconds needs a positive number");
            std::process::exit(2);
        }
    }
}

/// The daemon under test, with what the report needs from it.
struct Daemon(DaemonProcess);

impl Daemon {
    fn start() -> Daemon {
        match DaemonProcess::start(Path::new(env!("CARGO_BIN_EXE_wisp")), None, &[]) {
            Ok(process) => Daemon(process),
            Err(e) => {
                eprintln!("*** {e}");
                std::process::exit(1);
            }
        }
    }

    fn pid(&self) -> u32 {
        self.0.pid()
    }

    /// Exits loudly (the guard kills the daemon) if it is no longer running.
    fn check_alive(&mut self) {
        if let Some(status) = self.0.exited() {
            eprintln!("*** the daemon exited ({status}); its log ends with: ***");
            eprintln!("{}", self.log_tail(20));
            std::process::exit(1);
        }
    }

    /// The last `n` lines of the daemon's log.
    fn log_tail(&self, n: usize) -> String {
        let log = self.0.log_text();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The daemon's soft `RLIMIT_NOFILE`, as `/proc` shows it.
    fn open_files_limit(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/limits", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))
            .and_then(|l| l.split_whitespace().next().map(str::to_string))
            .unwrap_or_else(|| "unknown".to_string())
    }

    /// Warning and error lines of the daemon's log.
    fn log_problems(&self) -> Vec<String> {
        self.0
            .log_text()
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .map(str::to_string)
            .collect()
    }
}

/// Waits until the daemon answers `/healthz`.
async fn wait_ready(daemon: &mut Daemon) {
    let client = daemon.0.client();
    let t0 = Instant::now();
    loop {
        if let Ok(r) = client
            .request(Method::GET, "/healthz", Bytes::new())
            .await
            .and_then(Response::ok)
        {
            assert_eq!(r.status, 200);
            return;
        }
        daemon.check_alive();
        if t0.elapsed() > STARTUP_TIMEOUT {
            eprintln!(
                "*** the daemon did not listen on {} within {STARTUP_TIMEOUT:?}; its log: ***\n{}",
                daemon.0.socket().display(),
                daemon.log_tail(20)
            );
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn deploy(socket: &Path, name: &str, config: FunctionConfig) {
    let module = std::fs::read(root().join("examples/hello.wat")).expect("examples/hello.wat");
    let request = DeployRequest::module(&module, config);
    let body = serde_json::to_vec(&request).expect("deploy request");
    Client::new(socket)
        .request(
            Method::PUT,
            &format!("/v1/functions/{name}"),
            Bytes::from(body),
        )
        .await
        .and_then(Response::ok)
        .unwrap_or_else(|e| {
            eprintln!("*** deploying {name} failed: {e:#} ***");
            std::process::exit(1);
        });
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Warm,
    Cold,
    /// 429: shed by the daemon.
    Shed,
    /// Anything else.
    Error,
}

/// One request.
struct Sample {
    start: Instant,
    done: Instant,
    kind: Kind,
    /// `x-wisp-queue-us` + `x-wisp-restore-us` + `x-wisp-run-us`: the time
    /// the daemon accounts for (successes only).
    accounted: Option<Duration>,
}

impl Sample {
    fn latency(&self) -> Duration {
        self.done - self.start
    }
}

/// What one client task saw.
#[derive(Default)]
struct ClientResult {
    samples: Vec<Sample>,
    errors: Vec<String>,
}

impl ClientResult {
    fn error(&mut self, start: Instant, message: String) {
        self.samples.push(Sample {
            start,
            done: Instant::now(),
            kind: Kind::Error,
            accounted: None,
        });
        if self.errors.len() < ERROR_EXAMPLES {
            self.errors.push(message);
        }
    }
}

fn header_us(r: &Response, name: &str) -> Option<Duration> {
    r.header(name)?.parse().ok().map(Duration::from_micros)
}

/// Classifies a response: `Err` with a description if it is an error.
fn classify(r: &Response) -> Result<Kind, String> {
    match r.status {
        200 => {}
        429 => return Ok(Kind::Shed),
        status => {
            return Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&r.body).trim_end()
            ))
        }
    }
    if r.body != HELLO {
        return Err(format!(
            "HTTP 200 with the wrong body {:?}",
            String::from_utf8_lossy(&r.body)
        ));
    }
    if r.header(api::HEADER_EXIT_CODE) != Some("0") {
        return Err(format!(
            "HTTP 200 with {}: {:?}",
            api::HEADER_EXIT_CODE,
            r.header(api::HEADER_EXIT_CODE)
        ));
    }
    match r.header(api::HEADER_START) {
        Some("warm") => Ok(Kind::Warm),
        Some("cold") => Ok(Kind::Cold),
        other => Err(format!("HTTP 200 with {}: {other:?}", api::HEADER_START)),
    }
}

/// One client: invocations back to back on its connection until `end`.
async fn client(socket: PathBuf, mut conn: Connection, path: String, end: Instant) -> ClientResult {
    let mut result = ClientResult::default();
    loop {
        let start = Instant::now();
        if start >= end {
            return result;
        }
        let response = tokio::time::timeout(
            REQUEST_TIMEOUT,
            conn.send(Method::POST, &path, Bytes::new()),
        )
        .await;
        let failure = match response {
            Ok(Ok(r)) => {
                let done = Instant::now();
                match classify(&r) {
                    Ok(kind) => {
                        let accounted = [
                            api::HEADER_QUEUE_US,
                            api::HEADER_RESTORE_US,
                            api::HEADER_RUN_US,
                        ]
                        .iter()
                        .map(|h| header_us(&r, h))
                        .sum::<Option<Duration>>();
                        result.samples.push(Sample {
                            start,
                            done,
                            kind,
                            accounted,
                        });
                        if kind == Kind::Shed {
                            // Honour Retry-After, as a real client would.
                            let secs = r
                                .header("retry-after")
                                .and_then(|s| s.parse().ok())
                                .unwrap_or(1);
                            let until = (done + Duration::from_secs(secs)).min(end);
                            tokio::time::sleep_until(until.into()).await;
                        }
                        continue;
                    }
                    Err(message) => {
                        result.error(start, message);
                        continue;
                    }
                }
            }
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => format!("no response within {REQUEST_TIMEOUT:?}"),
        };
        // The connection is unusable: record the error and reconnect.
        result.error(start, failure);
        loop {
            match Connection::open(&socket).await {
                Ok(c) => {
                    conn = c;
                    break;
                }
                Err(e) => {
                    let start = Instant::now();
                    if start >= end {
                        return result;
                    }
                    result.error(start, format!("reconnecting: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// CPU time (user + system) of process `pid`, or of this process.
fn cpu_time(pid: Option<u32>) -> Duration {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let Ok(stat) = std::fs::read_to_string(path) else {
        return Duration::ZERO;
    };
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// The results of one concurrency level.
struct Level {
    clients: usize,
    /// Requests started in the measured window.
    requests: usize,
    /// 200s completed in the measured window, per second.
    ok_per_sec: f64,
    warm: Option<Summary>,
    cold: Option<Summary>,
    /// Median of the time the daemon accounts for (queue + restore + run).
    accounted_p50: Option<Duration>,
    shed: usize,
    /// Errors at any time (warm-up included).
    errors: usize,
    error_examples: Vec<String>,
    /// Cores used in the measured window.
    daemon_cores: f64,
    client_cores: f64,
}

async fn run_level(
    socket: &Path,
    daemon_pid: u32,
    function: &str,
    clients: usize,
    measure: Duration,
) -> Level {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        match Connection::open(socket).await {
            Ok(c) => conns.push(c),
            Err(e) => {
                eprintln!(
                    "*** ERROR: opening connection {} of {clients}: {e:#} ***",
                    conns.len() + 1
                );
                std::process::exit(1);
            }
        }
    }
    let path = format!("/v1/functions/{function}/invoke");
    let t0 = Instant::now();
    let window_start = t0 + WARMUP;
    let window_end = window_start + measure;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|conn| tokio::spawn(client(socket.to_path_buf(), conn, path.clone(), window_end)))
        .collect();
    tokio::time::sleep_until(window_start.into()).await;
    let (daemon0, self0) = (cpu_time(Some(daemon_pid)), cpu_time(None));
    tokio::time::sleep_until(window_end.into()).await;
    let (daemon1, self1) = (cpu_time(Some(daemon_pid)), cpu_time(None));

    let mut samples = Vec::new();
    let mut error_examples: Vec<String> = Vec::new();
    for task in tasks {
        let result = task.await.expect("client task");
        samples.extend(result.samples);
        for e in result.errors {
            if error_examples.len() < ERROR_EXAMPLES && !error_examples.contains(&e) {
                error_examples.push(e);
            }
        }
    }
    let errors = samples.iter().filter(|s| s.kind == Kind::Error).count();
    let ok_in_window = samples
        .iter()
        .filter(|s| matches!(s.kind, Kind::Warm | Kind::Cold))
        .filter(|s| s.done >= window_start && s.done < window_end)
        .count();
    // Latencies of the requests started in the window (those in flight at
    // its end were waited for), so long requests are not under-counted.
    let measured: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.start >= window_start && s.start < window_end)
        .collect();
    let latencies = |kind| {
        let l: Vec<Duration> = measured
            .iter()
            .filter(|s| s.kind == kind)
            .map(|s| s.latency())
            .collect();
        Summary::of(&l)
    };
    let accounted: Vec<Duration> = measured.iter().filter_map(|s| s.accounted).collect();
    let secs = measure.as_secs_f64();
    Level {
        clients,
        requests: measured.len(),
        ok_per_sec: ok_in_window as f64 / secs,
        warm: latencies(Kind::Warm),
        cold: latencies(Kind::Cold),
        accounted_p50: Summary::of(&accounted).map(|s| s.p50),
        shed: measured.iter().filter(|s| s.kind == Kind::Shed).count(),
        errors,
        error_examples,
        daemon_cores: (daemon1.saturating_sub(daemon0)).as_secs_f64() / secs,
        client_cores: (self1.saturating_sub(self0)).as_secs_f64() / secs,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `n p50 p99` columns of a latency summary.
fn latency_cols(s: &Option<Summary>) -> String {
    match s {
        Some(s) => format!("{:>7} {:>8.3} {:>8.3}", s.count, ms(s.p50), ms(s.p99)),
        None => format!("{:>7} {:>8} {:>8}", 0, "-", "-"),
    }
}

fn print_header() {
    println!(
        "  {:>7} {:>8} {:>9} | {:>7} {:>8} {:>8} | {:>7} {:>8} {:>8} | {:>8} | {:>6} {:>6} | {:>6} {:>6}",
        "clients",
        "requests",
        "ok/s",
        "warm n",
        "p50 ms",
        "p99 ms",
        "cold n",
        "p50 ms",
        "p99 ms",
        "daemon",
        "429",
        "errors",
        "daemon",
        "client"
    );
    println!(
        "  {:>7} {:>8} {:>9} | {:>25} | {:>25} | {:>8} | {:>13} | {:>13}",
        "", "", "", "", "", "p50 ms", "", "CPU cores"
    );
}

fn print_row(l: &Level) {
    let errors = if l.errors > 0 {
        format!("{}!!", l.errors)
    } else {
        "0".to_string()
    };
    println!(
        "  {:>7} {:>8} {:>9.0} | {} | {} | {:>8} | {:>6} {:>6} | {:>6.2} {:>6.2}",
        l.clients,
        l.requests,
        l.ok_per_sec,
        latency_cols(&l.warm),
        latency_cols(&l.cold),
        l.accounted_p50
            .map_or("-".to_string(), |d| format!("{:.3}", ms(d))),
        l.shed,
        errors,
        l.daemon_cores,
        l.client_cores,
    );
    if l.errors > 0 {
        let banner = format!(
            "  *** {} ERROR(S) with {} clients (not 429s): ***",
            l.errors, l.clients
        );
        println!("{banner}");
        for e in &l.error_examples {
            println!("  ***   {e}");
        }
    }
}

fn main() -> ExitCode {
    require_kvm();
    let seconds = seconds_arg();
    let warm_measure = Duration::from_secs_f64(seconds.unwrap_or(WARM_SECONDS));
    let cold_measure = Duration::from_secs_f64(seconds.unwrap_or(COLD_SECONDS));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(CLIENT_THREADS)
        .enable_all()
        .build()
        .expect("client runtime");

    let mut daemon = Daemon::start();
    runtime.block_on(wait_ready(&mut daemon));
    let socket = daemon.0.socket().to_path_buf();
    let functions = [
        (
            "hello-warm",
            "pooled instances, reset between invocations",
            FunctionConfig::default(),
            warm_measure,
        ),
        (
            "hello-cold",
            "max_ready 0: every invocation restores a fresh instance",
            FunctionConfig {
                max_ready: 0,
                ..FunctionConfig::default()
            },
            cold_measure,
        ),
    ];
    for (name, _, config, _) in &functions {
        runtime.block_on(deploy(&socket, name, config.clone()));
    }

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "wisp load benchmark: `wisp serve` (pid {}) invoking examples/hello.wat",
        daemon.pid()
    );
    println!(
        "clients: {CLIENT_THREADS}-thread tokio runtime, one keep-alive connection per client, \
         requests back to back ({:.1} s warm-up per level, not counted)",
        WARMUP.as_secs_f64()
    );
    println!(
        "NOTE: the daemon and the clients share this machine's {cores} cores: \
         client CPU is taken from the daemon"
    );
    println!(
        "daemon open-file limit (soft): {}",
        daemon.open_files_limit()
    );
    println!(
        "columns: ok/s = 200s completed per second of the window; warm/cold = latency \
         (send to body read) split by x-wisp-start;\n         daemon p50 = x-wisp-queue-us + \
         restore-us + run-us (what the daemon accounts for); CPU = cores used by the daemon \
         and by the clients"
    );

    let mut total_errors = 0;
    let mut best_warm: Option<(f64, usize)> = None;
    let mut errors_at_1000 = Vec::new();
    for (name, what, _, measure) in &functions {
        println!();
        println!("{name} ({what}), {:.1} s per level", measure.as_secs_f64());
        print_header();
        for clients in LEVELS {
            let level = runtime.block_on(run_level(&socket, daemon.pid(), name, clients, *measure));
            daemon.check_alive();
            print_row(&level);
            total_errors += level.errors;
            if *name == "hello-warm" && best_warm.is_none_or(|(best, _)| level.ok_per_sec > best) {
                best_warm = Some((level.ok_per_sec, clients));
            }
            if clients == 1000 {
                errors_at_1000.push((*name, level.errors));
            }
        }
    }

    let problems = daemon.log_problems();
    if !problems.is_empty() {
        println!();
        println!(
            "daemon log: {} warning/error line(s), e.g.:",
            problems.len()
        );
        for line in problems.iter().take(5) {
            println!("  {line}");
        }
    }

    println!();
    let (best, at) = best_warm.unwrap_or((0.0, 0));
    println!(
        "best warm throughput: {best:.0} invocations/s at {at} clients; target >= {TARGET_PER_SEC:.0}/s: {} ({:.0}% of target)",
        if best >= TARGET_PER_SEC { "MET" } else { "NOT MET" },
        100.0 * best / TARGET_PER_SEC
    );
    let at_1000: Vec<String> = errors_at_1000
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    if errors_at_1000.iter().all(|(_, n)| *n == 0) {
        println!("1000 concurrent clients: no errors other than 429");
    } else {
        println!(
            "*** 1000 concurrent clients: ERRORS other than 429 ({}) ***",
            at_1000.join(", ")
        );
    }
    if total_errors > 0 {
        eprintln!("*** {total_errors} error(s) other than 429 in total: FAILED ***");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
