//! What hostile but ordinary use of the daemon once did to it, each now a
//! regression test: a held image-store lock wedging the async runtime,
//! deploys abandoned by their clients coming back after a restart, a
//! memory budget that did not bound memory, settings that could never run,
//! exhaustion answered as a 500, and init limits the docs did not match.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::daemon::{block_on, code, deploy, deploy_request, invoke, listed, Daemon};
use hyper::Method;
use wisp::api::{FunctionConfig, FunctionInfo};
use wisp::client::Client;

/// How long `/healthz` may take while the daemon is busy elsewhere.
const HEALTHY: Duration = Duration::from_millis(100);

async fn healthz(client: &Client) -> Duration {
    let t0 = Instant::now();
    let r = client
        .request(Method::GET, "/healthz", Bytes::new())
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    t0.elapsed()
}

async fn get(client: &Client, name: &str) -> Option<FunctionInfo> {
    let r = client
        .request(Method::GET, &format!("/v1/functions/{name}"), Bytes::new())
        .await
        .unwrap();
    (r.status == 200).then(|| serde_json::from_slice(&r.body).unwrap())
}

/// Holds the image store's lock (as a slow `wisp image import` would)
/// until dropped.
fn hold_store_lock(daemon: &Daemon) -> std::fs::File {
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(daemon.state.join("images/lock"))
        .unwrap();
    lock.lock().unwrap();
    lock
}

/// Two deletes waiting for a held image-store lock once blocked the async
/// runtime's worker threads: `/healthz` and every invoke timed out.
#[test]
fn deletes_waiting_for_the_store_lock_block_nothing_else() {
    let daemon = Daemon::start();
    let client = daemon.client();
    block_on(async {
        for name in ["hello", "gone-1", "gone-2"] {
            let r = deploy(
                &client,
                name,
                &common::example("hello.wat"),
                FunctionConfig::default(),
            )
            .await;
            assert_eq!(r.status, 201, "{r:?}");
        }
        let lock = hold_store_lock(&daemon);
        let deletes: Vec<_> = ["gone-1", "gone-2"]
            .into_iter()
            .map(|name| {
                let client = client.clone();
                tokio::spawn(async move {
                    client
                        .request(
                            Method::DELETE,
                            &format!("/v1/functions/{name}"),
                            Bytes::new(),
                        )
                        .await
                        .unwrap()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        for _ in 0..20 {
            let took = healthz(&client).await;
            assert!(
                took < HEALTHY,
                "/healthz took {took:?} behind the store lock"
            );
            let r = invoke(&client, "hello", b"").await;
            assert_eq!(r.status, 200, "{r:?}");
        }
        assert!(
            deletes.iter().all(|d| !d.is_finished()),
            "the deletes did not wait for the lock"
        );
        drop(lock);
        for d in deletes {
            assert_eq!(d.await.unwrap().status, 204);
        }
        assert!(get(&client, "gone-1").await.is_none());
    });
}

/// Sends a deploy and hangs up before the daemon answers.
fn abandon_deploy(daemon: &Daemon, name: &str, config: FunctionConfig) {
    use std::io::Write;
    let body = deploy_request(&common::fixture("slow_init.wat"), config);
    let mut stream = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    write!(
        stream,
        "PUT /v1/functions/{name} HTTP/1.1\r\nhost: wisp\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body).unwrap();
    // The boot's init takes 1.5 s: hang up in the middle of it.
    std::thread::sleep(Duration::from_millis(500));
    drop(stream);
}

/// A deploy whose client went away during a slow `wisp_init` was written to
/// the registry but never activated, and came back after a restart. Now it
/// runs to its end: the running daemon and a restarted one serve the same
/// version the registry has.
#[test]
fn an_abandoned_deploy_is_what_the_registry_says() {
    let state = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(state.path());
    let client = daemon.client();
    block_on(async {
        let r = deploy(
            &client,
            "slow",
            &common::fixture("slow_init.wat"),
            FunctionConfig::default(),
        )
        .await;
        assert_eq!(r.status, 201, "{r:?}");
    });
    abandon_deploy(&daemon, "slow", FunctionConfig::default());
    abandon_deploy(&daemon, "fresh", FunctionConfig::default());
    let served = block_on(async {
        let t0 = Instant::now();
        loop {
            let slow = get(&client, "slow").await.map(|f| f.version);
            let fresh = get(&client, "fresh").await.map(|f| f.version);
            if slow == Some(2) && fresh == Some(1) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "abandoned deploys not served: slow {slow:?}, fresh {fresh:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let r = invoke(&client, "fresh", b"").await;
        assert_eq!(r.status, 200, "{r:?}");
        listed(&client).await
    });
    daemon.kill();
    let daemon = Daemon::start_in(state.path());
    let after = block_on(listed(&daemon.client()));
    assert_eq!(after, served, "a restart changed what serves");
}

/// Three concurrent invocations that each touch 600 MiB all ran under a
/// 1 GiB budget (the daemon peaked at 1.8 GiB). A running instance is now
/// charged all of its guest memory: one runs, the others get 429.
#[test]
fn the_memory_budget_bounds_running_instances() {
    let daemon = Daemon::start_with(&["--memory-budget", "1G"]);
    let client = daemon.client();
    let (mut statuses, peak_kib) = block_on(async {
        let config = FunctionConfig {
            memory_mib: 640,
            timeout_ms: 60_000,
            ..FunctionConfig::default()
        };
        let r = deploy(&client, "hog", &common::fixture("touch_memory.wat"), config).await;
        assert_eq!(r.status, 201, "{r:?}");
        let calls: Vec<_> = (0..3)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { invoke(&client, "hog", b"").await })
            })
            .collect();
        let mut statuses = Vec::new();
        for call in calls {
            let r = call.await.unwrap();
            if r.status == 429 {
                assert_eq!(code(&r), "memory_budget");
                assert_eq!(r.header("retry-after"), Some("1"));
            } else {
                assert_eq!((r.status, &r.body[..]), (200, &b"touched 600 MiB\n"[..]));
            }
            statuses.push(r.status);
        }
        // Once the run is over (and its instance reset, after the
        // response), the memory is there again for a client that retries.
        let t0 = Instant::now();
        let mut r = invoke(&client, "hog", b"").await;
        while r.status == 429 && t0.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            r = invoke(&client, "hog", b"").await;
        }
        assert_eq!(r.status, 200, "{r:?}");
        (statuses, vm_hwm_kib(daemon.pid()))
    });
    statuses.sort();
    assert_eq!(statuses[0], 200, "{statuses:?}");
    assert!(statuses.contains(&429), "all ran at once: {statuses:?}");
    assert!(
        peak_kib < 1_300 * 1024,
        "the daemon peaked at {peak_kib} KiB under a 1 GiB budget"
    );
}

/// The daemon's peak resident size, from /proc.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    wisp_bench::procfs::proc_kib(&status, "VmHWM").unwrap()
}

/// Settings that could never run are refused at deploy with a 400, and
/// nothing is registered.
#[test]
fn settings_that_cannot_run_are_refused_at_deploy() {
    let daemon = Daemon::start_with(&["--memory-budget", "4G"]);
    let client = daemon.client();
    block_on(async {
        let mut huge_env = FunctionConfig::default();
        huge_env.env.insert("BIG".into(), "x".repeat(70_000));
        let mut nul_env = FunctionConfig::default();
        nul_env.env.insert("NUL".into(), "a\0b".into());
        let reserved = FunctionConfig {
            memory_mib: 4096,
            reserved: 10,
            max_ready: 10,
            ..FunctionConfig::default()
        };
        let init = FunctionConfig {
            init_timeout_ms: 0,
            ..FunctionConfig::default()
        };
        for (what, config) in [
            ("env over the request buffer", huge_env),
            ("a NUL in an env value", nul_env),
            ("reserved beyond the budget", reserved),
            ("init_timeout_ms 0", init),
        ] {
            let r = deploy(&client, "f", &common::example("hello.wat"), config).await;
            assert_eq!(
                (r.status, code(&r).as_str()),
                (400, "invalid_config"),
                "{what}: {r:?}"
            );
        }
        assert!(get(&client, "f").await.is_none());
    });
}

/// `init_timeout_ms` limits a deploy's boot (it was a fixed 10 s), and
/// clocks run in `wisp_init` (they read 0, so a wait there never ended).
#[test]
fn init_has_its_own_limit_and_running_clocks() {
    let daemon = Daemon::start();
    let client = daemon.client();
    block_on(async {
        let t0 = Instant::now();
        let r = deploy(
            &client,
            "slow",
            &common::fixture("slow_init.wat"),
            FunctionConfig {
                init_timeout_ms: 300,
                ..FunctionConfig::default()
            },
        )
        .await;
        assert_eq!(
            (r.status, code(&r).as_str()),
            (422, "init_timeout"),
            "{r:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        let r = deploy(
            &client,
            "slow",
            &common::fixture("slow_init.wat"),
            FunctionConfig::default(),
        )
        .await;
        assert_eq!(r.status, 201, "{r:?}");
        let r = invoke(&client, "slow", b"").await;
        assert_eq!(
            (r.status, &r.body[..]),
            (200, &b"ready, wall clock in init: yes\n"[..])
        );
    });
}

/// Out of address space for guest memory (`mmap` fails with ENOMEM): the
/// host is exhausted, so the answer is 503 with `Retry-After`, not a 500.
#[test]
fn exhaustion_is_503_with_retry_after() {
    let daemon = Daemon::start_with(&["--shells", "0"]);
    let client = daemon.client();
    block_on(async {
        let config = FunctionConfig {
            memory_mib: 2048,
            max_ready: 0,
            ..FunctionConfig::default()
        };
        let r = deploy(&client, "big", &common::example("hello.wat"), config).await;
        assert_eq!(r.status, 201, "{r:?}");
        let pid = daemon.pid() as libc::pid_t;
        let old = set_address_space(pid, vm_size(daemon.pid()) + (512 << 20));
        let r = invoke(&client, "big", b"").await;
        set_address_space(pid, old);
        assert_eq!(
            (r.status, code(&r).as_str()),
            (503, "host_overloaded"),
            "{r:?}"
        );
        assert_eq!(r.header("retry-after"), Some("1"));
        let r = invoke(&client, "big", b"").await;
        assert_eq!(r.status, 200, "{r:?}");
    });
}

/// The process's virtual size in bytes.
fn vm_size(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    wisp_bench::procfs::proc_kib(&status, "VmSize").unwrap() << 10
}

/// Sets `pid`'s soft RLIMIT_AS to `bytes`; returns the old soft limit.
fn set_address_space(pid: libc::pid_t, bytes: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reads `new` and writes `old`, both valid.
    let rc = unsafe {
        let new = libc::rlimit {
            rlim_cur: bytes,
            rlim_max: libc::RLIM_INFINITY,
        };
        libc::prlimit(pid, libc::RLIMIT_AS, &new, &mut old)
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    old.rlim_cur
}
