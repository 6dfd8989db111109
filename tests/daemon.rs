//! The daemon end to end: a real `wisp serve` on a temporary socket,
//! driven over HTTP.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use common::daemon::{block_on, code, deploy, invoke, Daemon};
use hyper::Method;
use wisp::api::{FunctionConfig, FunctionInfo, FunctionList};
use wisp::client::{Client, Connection};

async fn info(client: &Client, name: &str) -> FunctionInfo {
    let r = client
        .request(Method::GET, &format!("/v1/functions/{name}"), Bytes::new())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn deploy_invoke_update_under_load_then_delete() {
    let daemon = Daemon::start();
    let client = daemon.client();
    block_on(async {
        // Nothing reserved and no demand seen yet: the pool manager keeps
        // no instance ready, so the first invocation must restore one.
        let config = FunctionConfig {
            reserved: 0,
            ..FunctionConfig::default()
        };
        let r = deploy(&client, "greet", &common::example("hello.wat"), config).await;
        assert_eq!(r.status, 201, "{r:?}");
        let first: FunctionInfo = serde_json::from_slice(&r.body).unwrap();
        assert_eq!((first.name.as_str(), first.version), ("greet", 1));
        assert_eq!(first.instances.ready, 0, "{first:?}");

        let r = invoke(&client, "greet", b"").await;
        assert_eq!(r.status, 200);
        assert_eq!(&r.body[..], b"hello, world!\n");
        assert_eq!(r.header("x-wisp-exit-code"), Some("0"));
        assert_eq!(r.header("x-wisp-start"), Some("cold"), "{r:?}");
        let stats = info(&client, "greet").await.stats;
        assert_eq!((stats.cold, stats.warm), (1, 0), "{stats:?}");
        for h in ["x-wisp-queue-us", "x-wisp-restore-us", "x-wisp-run-us"] {
            assert!(r.header(h).unwrap().parse::<u64>().is_ok(), "{h}");
        }

        // Eight clients invoke without pause while the function is updated
        // to a module with different output: every invocation must succeed,
        // answering with one version or the other.
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let mut clients = Vec::new();
        for _ in 0..8 {
            let socket = daemon.socket.clone();
            let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
            clients.push(tokio::spawn(async move {
                let mut conn = Connection::open(&socket).await.unwrap();
                let mut seen_new = false;
                while !stop.load(Ordering::Acquire) {
                    let r = conn
                        .send(Method::POST, "/v1/functions/greet/invoke", Bytes::new())
                        .await
                        .unwrap();
                    assert_eq!(
                        r.status, 200,
                        "an invocation failed during the update: {r:?}"
                    );
                    match &r.body[..] {
                        b"hello, world!\n" => assert!(!seen_new, "went back to the old version"),
                        b"to stdout\n" => seen_new = true,
                        other => panic!("unexpected output {other:?}"),
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                seen_new
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let fixture = common::fixture("exit_code.wat");
        let r = deploy(&client, "greet", &fixture, FunctionConfig::default()).await;
        assert_eq!(r.status, 200, "{r:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Release);
        for c in clients {
            assert!(c.await.unwrap(), "a client never saw the new version");
        }
        assert!(done.load(Ordering::Relaxed) > 50);
        let updated = info(&client, "greet").await;
        assert_eq!(updated.version, 2);

        let r = client
            .request(Method::DELETE, "/v1/functions/greet", Bytes::new())
            .await
            .unwrap();
        assert_eq!(r.status, 204);
        let r = invoke(&client, "greet", b"").await;
        assert_eq!((r.status, code(&r).as_str()), (404, "function_not_found"));
        let r = client
            .request(Method::GET, "/metrics", Bytes::new())
            .await
            .unwrap();
        let metrics = String::from_utf8_lossy(&r.body).into_owned();
        assert!(
            !metrics.contains(r#"wisp_ready_instances{function="greet"}"#),
            "a deleted function keeps its gauges: {metrics}"
        );
        let r = client
            .request(Method::GET, "/v1/functions", Bytes::new())
            .await
            .unwrap();
        let list: FunctionList = serde_json::from_slice(&r.body).unwrap();
        assert!(list.functions.is_empty());
    });
}

#[test]
fn bad_requests_get_json_errors_with_stable_codes() {
    let daemon = Daemon::start();
    let client = daemon.client();
    block_on(async {
        let put = |path: &'static str, body: &'static [u8]| {
            client.request(Method::PUT, path, Bytes::from_static(body))
        };
        let r = put("/v1/functions/f", b"{not json").await.unwrap();
        assert_eq!((r.status, code(&r).as_str()), (400, "invalid_json"));
        let r = put("/v1/functions/Bad.Name", b"{}").await.unwrap();
        assert_eq!((r.status, code(&r).as_str()), (400, "invalid_name"));
        let r = put("/v1/functions/f", br#"{"module_base64": "!!!"}"#)
            .await
            .unwrap();
        assert_eq!(
            (r.status, code(&r).as_str()),
            (400, "invalid_module_encoding")
        );
        let r = put(
            "/v1/functions/f",
            br#"{"module_base64": "AGFzbQ==", "memory_mib": 3}"#,
        )
        .await
        .unwrap();
        assert_eq!((r.status, code(&r).as_str()), (400, "invalid_config"));
        // "garbage" in base64: not wasm.
        let r = put("/v1/functions/f", br#"{"module_base64": "Z2FyYmFnZQ=="}"#)
            .await
            .unwrap();
        assert_eq!((r.status, code(&r).as_str()), (422, "invalid_module"));
        assert!(r.error().unwrap().error.message.contains("invalid module"));

        let r = invoke(&client, "nope", b"").await;
        assert_eq!((r.status, code(&r).as_str()), (404, "function_not_found"));

        let r = deploy(
            &client,
            "echo",
            &common::fixture("echo.wat"),
            FunctionConfig::default(),
        )
        .await;
        assert_eq!(r.status, 201);
        let big = vec![b'x'; (6 << 20) + 1];
        let r = invoke(&client, "echo", &big).await;
        assert_eq!((r.status, code(&r).as_str()), (413, "body_too_large"));
        let r = invoke(&client, "echo", b"still works").await;
        assert_eq!(&r.body[..], b"still works");

        let r = client
            .request(Method::GET, "/v2/nothing", Bytes::new())
            .await
            .unwrap();
        assert_eq!((r.status, code(&r).as_str()), (404, "not_found"));
        let r = client
            .request(Method::PATCH, "/v1/functions/echo", Bytes::new())
            .await
            .unwrap();
        assert_eq!((r.status, code(&r).as_str()), (405, "method_not_allowed"));
    });
}

#[test]
fn function_failures_are_clear_responses_and_discard_the_instance() {
    let daemon = Daemon::start();
    let client = daemon.client();
    block_on(async {
        let config = FunctionConfig {
            timeout_ms: 300,
            ..FunctionConfig::default()
        };
        assert_eq!(
            deploy(&client, "spin", &common::fixture("spin.wat"), config)
                .await
                .status,
            201
        );
        let r = invoke(&client, "spin", b"").await;
        assert_eq!((r.status, code(&r).as_str()), (504, "function_timeout"));

        // trap.wat traps with `unreachable` when it has no argument.
        let r = deploy(
            &client,
            "trap",
            &common::fixture("trap.wat"),
            FunctionConfig::default(),
        )
        .await;
        assert_eq!(r.status, 201);
        let r = invoke(&client, "trap", b"").await;
        assert_eq!((r.status, code(&r).as_str()), (502, "function_trapped"));
        assert!(r.error().unwrap().error.message.contains("unreachable"));
        assert_eq!(
            info(&client, "trap").await.instances.ready,
            0,
            "a trapped instance must not be pooled"
        );
        let stats = info(&client, "trap").await.stats;
        assert_eq!((stats.invocations, stats.errors), (1, 1));

        // Exit codes and stderr come back in headers.
        let r = deploy(
            &client,
            "exit",
            &common::fixture("exit_code.wat"),
            FunctionConfig::default(),
        )
        .await;
        assert_eq!(r.status, 201);
        let r = invoke(&client, "exit", b"").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-wisp-exit-code"), Some("0"));
        assert_eq!(&r.body[..], b"to stdout\n");
        let stderr = base64::engine::general_purpose::STANDARD
            .decode(r.header("x-wisp-stderr").unwrap())
            .unwrap();
        assert_eq!(stderr, b"to stderr\n");

        let r = client
            .request(Method::GET, "/metrics", Bytes::new())
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&r.body).into_owned();
        assert!(
            text.contains(r#"wisp_errors_total{function="spin",kind="function_timeout"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"wisp_errors_total{function="trap",kind="function_trapped"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("wisp_invocation_duration_seconds_bucket"),
            "{text}"
        );
        assert!(text.contains("wisp_host_memory_bytes"), "{text}");
    });
}

#[test]
fn the_concurrency_limit_queues_then_sheds_with_429() {
    let daemon = Daemon::start();
    let client = daemon.client();
    block_on(async {
        let config = FunctionConfig {
            concurrency: 2,
            ..FunctionConfig::default()
        };
        assert_eq!(
            deploy(&client, "slow", &common::fixture("sleep.wat"), config)
                .await
                .status,
            201
        );
        // Watch the busy count while 8 clients call at once: 2 run, 2 wait
        // (the queue holds as many as the limit), 4 are refused.
        let watching = Arc::new(AtomicBool::new(true));
        let watcher = {
            let (client, watching) = (client.clone(), Arc::clone(&watching));
            tokio::spawn(async move {
                let mut max_busy = 0;
                while watching.load(Ordering::Acquire) {
                    max_busy = max_busy.max(info(&client, "slow").await.instances.busy);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                max_busy
            })
        };
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { invoke(&client, "slow", b"").await })
            })
            .collect();
        let mut statuses = BTreeMap::new();
        for call in calls {
            let r = call.await.unwrap();
            *statuses.entry(r.status).or_insert(0) += 1;
            match r.status {
                200 => assert_eq!(&r.body[..], b"slept\n"),
                429 => {
                    assert_eq!(code(&r), "concurrency_limit");
                    assert_eq!(r.header("retry-after"), Some("1"));
                }
                other => panic!("unexpected status {other}: {r:?}"),
            }
        }
        watching.store(false, Ordering::Release);
        let max_busy = watcher.await.unwrap();
        assert_eq!(statuses, BTreeMap::from([(200, 4), (429, 4)]));
        assert!(
            max_busy <= 2,
            "{max_busy} invocations ran at once with a limit of 2"
        );
        assert_eq!(info(&client, "slow").await.stats.rejected, 4);
    });
}

#[test]
fn functions_survive_kill_9_without_being_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(dir.path());
    let client = daemon.client();
    let env = BTreeMap::from([("GREETING".to_string(), "hi".to_string())]);
    block_on(async {
        let config = FunctionConfig {
            env: env.clone(),
            ..FunctionConfig::default()
        };
        assert_eq!(
            deploy(&client, "args", &common::fixture("args_env.wat"), config)
                .await
                .status,
            201
        );
        assert_eq!(
            deploy(
                &client,
                "hello",
                &common::example("hello.wat"),
                FunctionConfig::default()
            )
            .await
            .status,
            201
        );
    });
    let snapshot = daemon.state.join("functions/hello/v1/manifest.json");
    let made = std::fs::metadata(&snapshot).unwrap().modified().unwrap();
    daemon.kill();

    let daemon = Daemon::start_in(dir.path());
    let client = daemon.client();
    block_on(async {
        let r = invoke(&client, "hello", b"").await;
        assert_eq!(&r.body[..], b"hello, world!\n");
        let r = invoke(&client, "args", b"").await;
        let out = String::from_utf8_lossy(&r.body).into_owned();
        assert!(out.contains("GREETING=hi"), "{out}");
        assert_eq!(info(&client, "args").await.config.env, env);
    });
    assert_eq!(
        std::fs::metadata(&snapshot).unwrap().modified().unwrap(),
        made,
        "a valid snapshot must not be rebuilt"
    );

    // A corrupted snapshot is rebuilt from the stored module on restart.
    daemon.kill();
    let memory = dir.path().join("state/functions/hello/v1/state.bin");
    let mut bytes = std::fs::read(&memory).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&memory, bytes).unwrap();
    let daemon = Daemon::start_in(dir.path());
    block_on(async {
        let r = invoke(&daemon.client(), "hello", b"").await;
        assert_eq!(&r.body[..], b"hello, world!\n");
    });
}

#[test]
fn a_host_over_its_memory_budget_sheds_load_with_429() {
    // Room for two running instances: each is charged its 128 MiB of
    // guest memory and 1.5 MiB more while it runs.
    let daemon = Daemon::start_with(&["--memory-budget", "300M"]);
    let client = daemon.client();
    block_on(async {
        let r = deploy(
            &client,
            "slow",
            &common::fixture("sleep.wat"),
            FunctionConfig::default(),
        )
        .await;
        assert_eq!(r.status, 201, "{r:?}");
        let calls: Vec<_> = (0..6)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { invoke(&client, "slow", b"").await })
            })
            .collect();
        let (mut ok, mut shed) = (0, 0);
        for call in calls {
            let r = call.await.unwrap();
            match r.status {
                200 => ok += 1,
                429 => {
                    assert_eq!(code(&r), "memory_budget");
                    assert!(r.header("retry-after").is_some());
                    shed += 1;
                }
                other => panic!("unexpected status {other}: {r:?}"),
            }
        }
        assert!((1..=2).contains(&ok), "{ok} ran with room for 2");
        assert_eq!(ok + shed, 6);
        // Once the load is gone (and the used instances are reset, after
        // their responses) the function serves again.
        let t0 = std::time::Instant::now();
        let mut r = invoke(&client, "slow", b"").await;
        while r.status == 429 && t0.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            r = invoke(&client, "slow", b"").await;
        }
        assert_eq!(r.status, 200, "{r:?}");
    });
}

/// Reads from `stream` until the server closes it (or `limit` passes);
/// true if it was closed.
fn closed_within(stream: &mut std::os::unix::net::UnixStream, limit: Duration) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an error response before closing is fine
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn slow_and_flooding_clients_cannot_starve_the_daemon() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    // A client that never finishes its headers is cut off.
    let daemon = Daemon::start_with(&["--header-timeout", "300ms"]);
    let mut slow = UnixStream::connect(&daemon.socket).unwrap();
    slow.write_all(b"POST /v1/functions/hello/invoke HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert!(
        closed_within(&mut slow, Duration::from_secs(5)),
        "a stalled request kept its connection"
    );
    drop(daemon);

    // Idle connections last (10 s header timeout), so only the limit can
    // close the ninth.
    let daemon = Daemon::start_with(&["--max-connections", "8"]);
    let client = daemon.client();
    block_on(async {
        let r = deploy(
            &client,
            "hello",
            &common::example("hello.wat"),
            FunctionConfig::default(),
        )
        .await;
        assert_eq!(r.status, 201);
    });
    // With all 8 connections taken, a new one is closed at once... The
    // daemon may not have seen the deploy's connection close yet (on a
    // busy machine): until all 8 stay open, it still counts it.
    let mut idle: Vec<UnixStream> = Vec::new();
    for _ in 0..50 {
        idle = (0..8)
            .map(|_| UnixStream::connect(&daemon.socket).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        if idle
            .iter_mut()
            .all(|s| !closed_within(s, Duration::from_millis(1)))
        {
            break;
        }
        idle.clear();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(idle.len(), 8, "the daemon never held 8 connections open");
    let mut extra = UnixStream::connect(&daemon.socket).unwrap();
    assert!(closed_within(&mut extra, Duration::from_secs(2)));
    // ...until idle ones time out or go away; then service resumes.
    drop(idle);
    std::thread::sleep(Duration::from_millis(100));
    block_on(async {
        let r = invoke(&client, "hello", b"").await;
        assert_eq!(&r.body[..], b"hello, world!\n");
    });
}

#[test]
fn the_daemon_can_drop_root_and_still_serve() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // The unprivileged user must be able to reach the state directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let daemon = Daemon::start_in_with(dir.path(), &["--user", "nobody"]);
    // The socket is bound before privileges are dropped; a served request
    // means they have been.
    let client = daemon.client();
    block_on(async {
        let r = client
            .request(Method::GET, "/healthz", Bytes::new())
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    });
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|id| id == "65534"),
        "the daemon still runs as {uid_line}"
    );
    block_on(async {
        let r = deploy(
            &client,
            "hello",
            &common::example("hello.wat"),
            FunctionConfig::default(),
        )
        .await;
        assert_eq!(r.status, 201, "{r:?}");
        let r = invoke(&client, "hello", b"").await;
        assert_eq!(&r.body[..], b"hello, world!\n");
    });
}

/// Replaces the snapshot of `name` (version 1) in a stopped daemon's state
/// with one of `module` booted in `mode`: the only way a test gets a
/// misbehaving guest into the daemon, which has no test modes of its own.
fn plant_hostile_snapshot(state: &std::path::Path, name: &str, module: &std::path::Path) {
    use wisp_vmm::{TestMode, Vm, VmConfig};
    let artifact = wisp::compile::Compiler::new(None)
        .unwrap()
        .compile(&std::fs::read(module).unwrap())
        .unwrap();
    let config = VmConfig {
        test_mode: TestMode::UnknownKindAfterRequest,
        ..VmConfig::default()
    };
    let mut vm = Vm::boot(config, &artifact).unwrap();
    let dir = state.join("functions").join(name).join("v1");
    assert!(dir.is_dir(), "no snapshot at {}", dir.display());
    vm.snapshot(&dir, name, None).unwrap();
}

#[test]
fn guests_failing_in_every_way_leave_other_functions_alone() {
    let dir = tempfile::tempdir().unwrap();
    let functions = [
        (
            "good",
            common::example("hello.wat"),
            FunctionConfig::default(),
        ),
        (
            "hostile",
            common::example("hello.wat"),
            FunctionConfig::default(),
        ),
        (
            "trap",
            common::fixture("trap.wat"),
            FunctionConfig::default(),
        ),
        (
            "spin",
            common::fixture("spin.wat"),
            FunctionConfig {
                timeout_ms: 200,
                ..FunctionConfig::default()
            },
        ),
        (
            "flood",
            common::fixture("flood.wat"),
            FunctionConfig::default(),
        ),
        (
            "hog",
            common::fixture("memory_hog.wat"),
            FunctionConfig {
                memory_mib: 32,
                ..FunctionConfig::default()
            },
        ),
    ];
    {
        let daemon = Daemon::start_in(dir.path());
        let client = daemon.client();
        block_on(async {
            for (name, module, config) in &functions {
                let r = deploy(&client, name, module, config.clone()).await;
                assert_eq!(r.status, 201, "{name}: {r:?}");
            }
        });
        daemon.kill();
    }
    // `hostile` comes back from a snapshot whose agent breaks the channel
    // protocol in the middle of every invocation.
    plant_hostile_snapshot(&dir.path().join("state"), "hostile", &functions[1].1);
    let daemon = Daemon::start_in(dir.path());
    let client = daemon.client();
    block_on(async {
        let expect = |name: &str| match name {
            "hostile" => (502, "function_crashed"),
            "trap" => (502, "function_trapped"),
            "spin" => (504, "function_timeout"),
            "flood" => (502, "function_output_limit"),
            "hog" => (502, "function_out_of_memory"),
            _ => (200, ""),
        };
        let calls: Vec<_> = (0..4)
            .flat_map(|round| functions.iter().map(move |(name, _, _)| (round, *name)))
            .chain((0..40).map(|round| (round, "good")))
            .map(|(round, name)| {
                let client = client.clone();
                tokio::spawn(async move { (round, name, invoke(&client, name, b"").await) })
            })
            .collect();
        for call in calls {
            let (round, name, r) = call.await.unwrap();
            match expect(name) {
                (200, _) => assert_eq!(
                    (r.status, &r.body[..]),
                    (200, &b"hello, world!\n"[..]),
                    "{name} #{round}"
                ),
                (status, error) => {
                    assert_eq!(
                        (r.status, code(&r).as_str()),
                        (status, error),
                        "{name} #{round}"
                    )
                }
            }
            if name == "hostile" {
                let message = r.error().unwrap().error.message;
                assert!(message.contains("protocol violation"), "{message}");
            }
        }
        let good = info(&client, "good").await;
        assert_eq!((good.stats.invocations, good.stats.errors), (44, 0));
    });
}
