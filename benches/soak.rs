//! Soak test of the daemon: a long run of invocations mixing warm, cold,
//! trapping and timing-out functions and one whose interleaved output
//! drives the allocator of the (seccomp-filtered) invocation threads, then
//! a check that the mix was what it claims (counted from `x-wisp-start`)
//! and that the daemon's host resources — resident memory, open files, KVM
//! VMs, threads — went back to where they were.
//!
//! `cargo bench --bench soak [-- --invocations N]` (default 1,000,000; CI
//! runs a shorter one). Exits non-zero on any unexpected response or leak.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use wisp::api::{DeployRequest, FunctionConfig};
use wisp::client::Connection;
use wisp_bench::daemon_process::DaemonProcess;
use wisp_bench::harness::{count_arg, require_kvm};
use wisp_bench::procfs::proc_kib;

/// Concurrent clients.
const CLIENTS: usize = 32;
/// Idle pools shrink after this, so resources settle between phases.
const IDLE_TIMEOUT: &str = "1s";
/// Time for pools to shrink and idle threads to exit before measuring.
const SETTLE: Duration = Duration::from_secs(12);
/// Longest wait for the daemon to get back to its baseline after the run.
const RECOVERY: Duration = Duration::from_secs(45);

/// One kind of invocation in the mix: per 100 invocations, `share` go to
/// `function`, expecting `status` (and a body that `body_ok` accepts when
/// 200), started as `start` says.
struct Kind {
    function: &'static str,
    module: &'static str,
    config: FunctionConfig,
    share: u64,
    status: u16,
    body_ok: fn(&[u8]) -> bool,
    start: Start,
}

/// How a kind's successful invocations must start (`x-wisp-start`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Every one cold (no pool).
    Cold,
    /// Nearly every one warm: a few may find the pool empty for a moment.
    MostlyWarm,
    /// Not checked (errors have no such header).
    Any,
}

/// Most cold starts a `MostlyWarm` kind may have, as a share of its calls.
const MAX_COLD_IN_WARM: f64 = 0.05;

fn hello(body: &[u8]) -> bool {
    body == b"hello, world!\n"
}

fn interleaved(body: &[u8]) -> bool {
    body.len() == 1_000_000 && body.iter().all(|&b| b == b'o')
}

fn kinds() -> Vec<Kind> {
    vec![
        Kind {
            function: "warm",
            module: "examples/hello.wat",
            config: FunctionConfig::default(),
            share: 89,
            status: 200,
            body_ok: hello,
            start: Start::MostlyWarm,
        },
        Kind {
            function: "cold",
            module: "examples/hello.wat",
            config: FunctionConfig {
                max_ready: 0,
                ..FunctionConfig::default()
            },
            share: 7,
            status: 200,
            body_ok: hello,
            start: Start::Cold,
        },
        Kind {
            function: "trap",
            module: "tests/fixtures/trap.wat",
            config: FunctionConfig::default(),
            share: 2,
            status: 502,
            body_ok: |_| true,
            start: Start::Any,
        },
        Kind {
            function: "timeout",
            module: "tests/fixtures/spin.wat",
            config: FunctionConfig {
                timeout_ms: 50,
                ..FunctionConfig::default()
            },
            share: 1,
            status: 504,
            body_ok: |_| true,
            start: Start::Any,
        },
        Kind {
            function: "interleave",
            module: "tests/fixtures/interleave.wat",
            config: FunctionConfig::default(),
            share: 1,
            status: 200,
            body_ok: interleaved,
            // At 1% its predicted demand rounds to a small pool: many of
            // its calls find it busy and start cold.
            start: Start::Any,
        },
    ]
}

/// The daemon's host resources, from /proc.
#[derive(Clone, Copy, Debug)]
struct Resources {
    rss_kib: u64,
    fds: usize,
    vms: usize,
    threads: u64,
}

fn resources(pid: u32) -> Resources {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let links: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    // KVM's per-VM kernel workers (kvm-nx-lpage-recovery) show up as tasks
    // of the process once a VM has run; they live as long as the VM (or the
    // shell it became), so count only the daemon's own threads.
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|comm| !comm.starts_with("kvm-"))
                })
                .count() as u64
        })
        .unwrap_or(0);
    Resources {
        rss_kib: proc_kib(&status, "VmRSS").unwrap_or(0),
        fds: links.len(),
        vms: links
            .iter()
            .filter(|l| l.to_string_lossy() == "anon_inode:kvm-vm")
            .count(),
        threads,
    }
}

fn print(label: &str, r: Resources) {
    println!(
        "{label:<8} RSS {:>8} KiB | open files {:>5} | KVM VMs {:>4} | threads {:>4}",
        r.rss_kib, r.fds, r.vms, r.threads
    );
}

async fn deploy(socket: &Path, kind: &Kind) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let module = std::fs::read(root.join(kind.module)).expect("module");
    let request = DeployRequest::module(&module, kind.config.clone());
    let body = Bytes::from(serde_json::to_vec(&request).expect("json"));
    let mut conn = Connection::open(socket).await.expect("connect");
    let r = conn
        .send(
            Method::PUT,
            &format!("/v1/functions/{}", kind.function),
            body,
        )
        .await
        .expect("deploy");
    assert_eq!(r.status, 201, "deploying {}: {r:?}", kind.function);
}

/// What one kind's invocations did.
#[derive(Default)]
struct Count {
    calls: AtomicU64,
    cold: AtomicU64,
    warm: AtomicU64,
}

/// What a run did: unexpected responses, and per kind (in [`kinds`]
/// order) how many calls it got and how they started.
struct Tally {
    unexpected: AtomicU64,
    kinds: Vec<Count>,
}

impl Tally {
    fn new(kinds: usize) -> Tally {
        Tally {
            unexpected: AtomicU64::new(0),
            kinds: (0..kinds).map(|_| Count::default()).collect(),
        }
    }

    /// The ways the run's mix differs from what `kinds` asks for.
    fn mix_errors(&self, kinds: &[Kind], total: u64) -> Vec<String> {
        let mut errors = Vec::new();
        for (kind, count) in kinds.iter().zip(&self.kinds) {
            let calls = count.calls.load(Ordering::Relaxed);
            let (cold, warm) = (
                count.cold.load(Ordering::Relaxed),
                count.warm.load(Ordering::Relaxed),
            );
            // Slots are spread exactly: each kind gets its share of every
            // 100 invocations, give or take the last partial hundred.
            let expected = total * kind.share / 100;
            if calls.abs_diff(expected) > kind.share {
                errors.push(format!(
                    "{}: {calls} calls, expected {expected}",
                    kind.function
                ));
            }
            let bad_start = match kind.start {
                Start::Cold => warm > 0,
                Start::MostlyWarm => cold as f64 > MAX_COLD_IN_WARM * calls as f64,
                Start::Any => false,
            };
            if bad_start {
                errors.push(format!(
                    "{}: {cold} cold and {warm} warm starts",
                    kind.function
                ));
            }
        }
        errors
    }

    fn print(&self, kinds: &[Kind], total: u64) {
        for (kind, count) in kinds.iter().zip(&self.kinds) {
            let calls = count.calls.load(Ordering::Relaxed);
            println!(
                "  {:<11} {:>9} calls ({:>5.1}%), {:>9} cold, {:>9} warm, expecting HTTP {}",
                kind.function,
                calls,
                100.0 * calls as f64 / total.max(1) as f64,
                count.cold.load(Ordering::Relaxed),
                count.warm.load(Ordering::Relaxed),
                kind.status
            );
        }
    }
}

/// Runs `total` invocations from [`CLIENTS`] clients and counts what
/// happened.
async fn run(socket: &Path, kinds: Arc<Vec<Kind>>, total: u64) -> Tally {
    let next = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Tally::new(kinds.len()));
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (socket, kinds) = (socket.to_path_buf(), Arc::clone(&kinds));
        let (next, tally, done) = (Arc::clone(&next), Arc::clone(&tally), Arc::clone(&done));
        clients.push(tokio::spawn(async move {
            let mut conn = Connection::open(&socket).await.expect("connect");
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                // Spread each kind evenly over every 100 invocations.
                let slot = (i * 37) % 100;
                let mut acc = 0;
                let k = kinds
                    .iter()
                    .position(|k| {
                        acc += k.share;
                        slot < acc
                    })
                    .expect("shares sum to 100");
                let (kind, count) = (&kinds[k], &tally.kinds[k]);
                count.calls.fetch_add(1, Ordering::Relaxed);
                let path = format!("/v1/functions/{}/invoke", kind.function);
                let ok = match conn.send(Method::POST, &path, Bytes::new()).await {
                    Ok(r) => {
                        match r.header(wisp::api::HEADER_START) {
                            Some("cold") => count.cold.fetch_add(1, Ordering::Relaxed),
                            Some("warm") => count.warm.fetch_add(1, Ordering::Relaxed),
                            _ => 0,
                        };
                        r.status == kind.status && (r.status != 200 || (kind.body_ok)(&r.body))
                    }
                    Err(_) => {
                        conn = Connection::open(&socket).await.expect("reconnect");
                        false
                    }
                };
                if !ok && tally.unexpected.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!(
                        "*** unexpected response from {} (invocation {i})",
                        kind.function
                    );
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let total_usize = total as usize;
    let t0 = Instant::now();
    let mut last_report = Instant::now();
    while done.load(Ordering::Relaxed) < total_usize {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            let n = done.load(Ordering::Relaxed);
            eprintln!(
                "  {n:>9} / {total} invocations, {:.0}/s",
                n as f64 / t0.elapsed().as_secs_f64()
            );
        }
    }
    for c in clients {
        c.await.expect("client");
    }
    Arc::into_inner(tally).expect("every client is done")
}

fn main() -> ExitCode {
    require_kvm();
    let total = count_arg("--invocations", 1_000_000) as u64;
    let daemon = match DaemonProcess::start(
        Path::new(env!("CARGO_BIN_EXE_wisp")),
        None,
        &["--idle-timeout", IDLE_TIMEOUT],
    ) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("*** {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let kinds = Arc::new(kinds());
    let socket = daemon.socket().to_path_buf();
    let mix: Vec<String> = kinds
        .iter()
        .map(|k| format!("{}% {}", k.share, k.function))
        .collect();
    println!(
        "wisp soak: {total} invocations from {CLIENTS} clients: {}",
        mix.join(", ")
    );
    runtime.block_on(async {
        for kind in kinds.iter() {
            deploy(&socket, kind).await;
        }
        // Warm up every path once, then let the pools settle.
        run(&socket, Arc::clone(&kinds), 1000).await;
    });
    std::thread::sleep(SETTLE);
    let before = resources(daemon.pid());
    let t0 = Instant::now();
    let tally = runtime.block_on(run(&socket, Arc::clone(&kinds), total));
    let elapsed = t0.elapsed();
    let unexpected = tally.unexpected.load(Ordering::Relaxed);
    let during = resources(daemon.pid());
    // Idle instances, shells and blocking threads go away on timers; wait
    // (bounded) until everything is back, measuring every second.
    let recovered = |r: &Resources| leaks(&before, r).is_empty();
    let t_end = Instant::now();
    let mut after = resources(daemon.pid());
    while !recovered(&after) && t_end.elapsed() < RECOVERY {
        std::thread::sleep(Duration::from_secs(1));
        after = resources(daemon.pid());
    }
    println!(
        "{total} invocations in {:.1} s ({:.0}/s), {unexpected} unexpected responses",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    tally.print(&kinds, total);
    let mix_errors = tally.mix_errors(&kinds, total);
    for e in &mix_errors {
        eprintln!("*** the mix is off: {e} ***");
    }
    print("before", before);
    print("at end", during);
    println!(
        "after    (back {:.0} s after the run)",
        t_end.elapsed().as_secs_f64()
    );
    print("after", after);

    let leaked = leaks(&before, &after);
    for what in &leaked {
        eprintln!("*** LEAK: {what} did not return to its baseline within {RECOVERY:?} ***");
    }
    if daemon_alive(&daemon) && unexpected == 0 && mix_errors.is_empty() && leaked.is_empty() {
        println!("no leaks: the daemon is back at its baseline");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What in `now` is above its baseline (small slack for file descriptors
/// and threads; the allocator keeps some freed memory, a leak grows with N).
fn leaks(before: &Resources, now: &Resources) -> Vec<&'static str> {
    let mut leaked = Vec::new();
    if now.fds > before.fds + 2 {
        leaked.push("open files");
    }
    if now.vms > before.vms {
        leaked.push("KVM VMs");
    }
    if now.threads > before.threads + 2 {
        leaked.push("threads");
    }
    if now.rss_kib > before.rss_kib + before.rss_kib / 4 + 16 * 1024 {
        leaked.push("resident memory");
    }
    leaked
}

fn daemon_alive(daemon: &DaemonProcess) -> bool {
    let alive = Path::new(&format!("/proc/{}", daemon.pid())).exists();
    if !alive {
        eprintln!("*** the daemon died ***\n{}", daemon.log_text());
    }
    alive
}
