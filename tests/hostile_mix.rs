//! The hostile mix of issue 12, all at once against one daemon in `kill`
//! mode: output interleaving, large stdin, memory-heavy functions at the
//! budget's edge, deletes under a held image-store lock, abandoned
//! deploys and bad images — while a well-behaved function is invoked and
//! `/healthz` polled throughout. The daemon must stay up, `/healthz` answer
//! within 100 ms at the 99th percentile and never stall (500 ms), every
//! well-behaved invocation return 200, and
//! afterwards the registry, the pools and the disk agree.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::daemon::{code, deploy, deploy_request, invoke, listed, Daemon};
use hyper::Method;
use wisp::api::FunctionConfig;
use wisp::client::Client;

/// How long the mix runs.
const MIX: Duration = Duration::from_secs(12);
/// The 99th percentile of `/healthz` allowed.
const HEALTHY: Duration = Duration::from_millis(100);
/// The slowest `/healthz` allowed: a stall, not a delay. On this 2-core
/// PVM host, with the mix and the test's own threads competing for both
/// cores, single checks have taken 68-191 ms while the p99 stayed 17-38 ms.
const STALLED: Duration = Duration::from_millis(500);

fn small(memory_mib: u32) -> FunctionConfig {
    FunctionConfig {
        memory_mib,
        ..FunctionConfig::default()
    }
}

/// Evaluates `$step` (an async block's body) until `$stop` is set; the
/// values it gave, in order. (A macro: async closures in spawned tasks
/// trip over `Send` bounds.)
macro_rules! until {
    ($stop:expr, $step:block) => {{
        let mut out = Vec::new();
        while !$stop.load(Ordering::Relaxed) {
            out.push($step);
        }
        out
    }};
}

#[test]
fn the_hostile_mix_leaves_the_daemon_whole() {
    // The budget has room for one hog (1 GiB, charged ~1028 MiB while it
    // runs) and everything else at its peak (~760 MiB: hello instances
    // charged in full while they reset, six at once seen on a slow host,
    // interleave, stdin, three abandoned deploys and a victim booting, at
    // ~33 MiB each, and what idle instances hold), but not for two hogs:
    // the second is refused, and the well-behaved tenant never is.
    let daemon = Daemon::start_with(&["--memory-budget", "1792M", "--seccomp", "kill"]);
    let client = daemon.client();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for (name, module, config) in [
            ("hello", common::example("hello.wat"), small(64)),
            ("interleave", common::fixture("interleave.wat"), small(32)),
            ("stdin", common::fixture("count_stdin.wat"), small(32)),
            (
                "hog",
                common::fixture("touch_memory.wat"),
                FunctionConfig {
                    timeout_ms: 60_000,
                    ..small(1024)
                },
            ),
        ] {
            let r = deploy(&client, name, &module, config).await;
            assert_eq!(r.status, 201, "{name}: {r:?}");
        }
    });

    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let (health, hello, others) = runtime.block_on(async {
        let spawn = |f: std::pin::Pin<
            Box<dyn std::future::Future<Output = Vec<String>> + Send>,
        >| { tokio::spawn(f) };
        // The daemon's health, every 20 ms.
        let health = {
            let (client, stop) = (client.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                until!(stop, {
                    let t = Instant::now();
                    let r = client.request(Method::GET, "/healthz", Bytes::new()).await;
                    let took = t.elapsed();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    (r.map(|r| r.status).ok(), took)
                })
            })
        };
        // The well-behaved tenant.
        let hello = {
            let (client, stop) = (client.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                until!(stop, {
                    let r = invoke(&client, "hello", b"").await;
                    (r.status, r.body == b"hello, world!\n"[..])
                })
            })
        };
        let mut others = Vec::new();
        // Interleaved stdout and stderr.
        let (c, s) = (client.clone(), Arc::clone(&stop));
        others.push(spawn(Box::pin(async move {
            until!(s, {
                let r = invoke(&c, "interleave", b"").await;
                check(
                    r.status == 200 && r.body.len() == 1_000_000,
                    "interleave",
                    &r,
                )
            })
        })));
        // 5 MiB of stdin, under the 6 MiB limit.
        let (c, s) = (client.clone(), Arc::clone(&stop));
        others.push(spawn(Box::pin(async move {
            let input = vec![b'x'; 5 << 20];
            until!(s, {
                let r = invoke(&c, "stdin", &input).await;
                check(
                    r.status == 200 && r.body == format!("{}\n", 5 << 20).as_bytes(),
                    "stdin",
                    &r,
                )
            })
        })));
        // Two memory-heavy callers at the budget's edge: one runs, or 429.
        for _ in 0..2 {
            let (c, s) = (client.clone(), Arc::clone(&stop));
            others.push(spawn(Box::pin(async move {
                until!(s, {
                    let r = invoke(&c, "hog", b"").await;
                    let ok = r.status == 200 || (r.status == 429 && code(&r) == "memory_budget");
                    if r.status == 429 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    check(ok, "hog", &r)
                })
            })));
        }
        // Deletes while the image store's lock is held.
        let (c, s, state) = (client.clone(), Arc::clone(&stop), daemon.state.clone());
        others.push(spawn(Box::pin(async move {
            let mut n = 0;
            until!(s, {
                n += 1;
                let name = format!("victim-{n}");
                let r = deploy(&c, &name, &common::example("hello.wat"), small(32)).await;
                assert_eq!(r.status, 201, "deploying {name}: {r:?}");
                let lock = {
                    let state = state.clone();
                    tokio::task::spawn_blocking(move || hold_store_lock(&state))
                        .await
                        .unwrap()
                };
                let delete = {
                    let c = c.clone();
                    let path = format!("/v1/functions/{name}");
                    tokio::spawn(async move {
                        c.request(Method::DELETE, &path, Bytes::new())
                            .await
                            .unwrap()
                    })
                };
                tokio::time::sleep(Duration::from_millis(500)).await;
                drop(lock);
                let r = delete.await.unwrap();
                check(r.status == 204, "delete", &r)
            })
        })));
        // Deploys whose clients hang up mid-init.
        let (socket, s) = (daemon.socket.clone(), Arc::clone(&stop));
        others.push(spawn(Box::pin(async move {
            let mut n = 0;
            until!(s, {
                n += 1;
                let socket = socket.clone();
                tokio::task::spawn_blocking(move || {
                    abandon_deploy(&socket, &format!("abandoned-{}", n % 3))
                })
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
                String::new()
            })
        })));
        // Bad images: refused at import, and as planted in the store.
        let (c, s, state) = (client.clone(), Arc::clone(&stop), daemon.state.clone());
        others.push(spawn(Box::pin(async move {
            until!(s, {
                let problem = bad_images(&c, &state).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                problem
            })
        })));

        tokio::time::sleep(MIX).await;
        stop.store(true, Ordering::Relaxed);
        let health = health.await.unwrap();
        let hello = hello.await.unwrap();
        let mut problems = Vec::new();
        for o in others {
            problems.extend(o.await.unwrap().into_iter().filter(|p| !p.is_empty()));
        }
        (health, hello, problems)
    });
    eprintln!("hostile mix ran {:?}", t0.elapsed());

    // The daemon stayed up, healthy and fair to the well-behaved tenant.
    assert!(
        std::path::Path::new(&format!("/proc/{}", daemon.pid())).exists(),
        "the daemon died"
    );
    let slowest = health.iter().map(|h| h.1).max().unwrap();
    assert!(
        health.iter().all(|h| h.0 == Some(200)),
        "/healthz failed: {health:?}"
    );
    assert!(hello.len() > 20, "only {} hello invocations", hello.len());
    assert!(
        hello.iter().all(|h| *h == (200, true)),
        "well-behaved invocations failed: {:?}",
        hello
            .iter()
            .filter(|h| **h != (200, true))
            .collect::<Vec<_>>()
    );
    assert!(
        others.is_empty(),
        "hostile calls answered wrongly: {others:#?}"
    );
    let mut took: Vec<Duration> = health.iter().map(|h| h.1).collect();
    took.sort();
    let p99 = took[took.len() * 99 / 100];
    eprintln!(
        "{} health checks (p50 {:?}, p99 {p99:?}, slowest {slowest:?}), {} hello invocations",
        health.len(),
        took[took.len() / 2],
        hello.len()
    );
    assert!(p99 < HEALTHY, "/healthz p99 was {p99:?}");
    assert!(slowest < STALLED, "/healthz took {slowest:?} at worst");

    // Afterwards the registry, the pools and the disk agree.
    runtime.block_on(async {
        // Abandoned deploys still finishing.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let listed = listed(&client).await;
        let live = registry(
            &daemon.state,
            "SELECT name, version FROM aliases WHERE alias = 'live'",
        );
        assert_eq!(listed, live, "served (left) and registered as live (right)");
        let registered = registry(&daemon.state, "SELECT name, version FROM versions");
        let on_disk = snapshots_on_disk(&daemon.state);
        assert_eq!(registered, on_disk, "registered (left) and on disk (right)");
        for (name, _) in &listed {
            let info: wisp::api::FunctionInfo = serde_json::from_slice(
                &client
                    .request(Method::GET, &format!("/v1/functions/{name}"), Bytes::new())
                    .await
                    .unwrap()
                    .body,
            )
            .unwrap();
            assert_eq!(
                (info.instances.busy, info.instances.queued),
                (0, 0),
                "{name}"
            );
            assert!(
                info.instances.ready <= u64::from(info.config.max_ready),
                "{name}"
            );
        }
        let metrics = client
            .request(Method::GET, "/metrics", Bytes::new())
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&metrics.body);
        let gauge = |kind: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with(&format!("wisp_host_memory_bytes{{kind=\"{kind}\"}}")))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or_else(|| panic!("no {kind} gauge in:\n{text}"))
        };
        assert!(
            gauge("budget_used") <= gauge("budget_limit"),
            "over budget at rest:\n{text}"
        );
    });
}

/// An empty string if `ok`, else a description of `r`.
fn check(ok: bool, what: &str, r: &wisp::client::Response) -> String {
    if ok {
        String::new()
    } else {
        format!(
            "{what}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body[..r.body.len().min(300)])
        )
    }
}

/// Holds the image store's lock until dropped.
fn hold_store_lock(state: &std::path::Path) -> std::fs::File {
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(state.join("images/lock"))
        .unwrap();
    lock.lock().unwrap();
    lock
}

/// Sends a deploy of a function whose init takes 1.5 s and hangs up in the
/// middle of it.
fn abandon_deploy(socket: &std::path::Path, name: &str) {
    let body = deploy_request(&common::fixture("slow_init.wat"), small(32));
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return;
    };
    let _ = write!(
        stream,
        "PUT /v1/functions/{name} HTTP/1.1\r\nhost: wisp\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(&body);
    std::thread::sleep(Duration::from_millis(400));
}

/// `wisp image import` of a layout whose layer escapes its root must fail,
/// and a deploy of such an image planted in the store must be a 422.
async fn bad_images(client: &Client, state: &std::path::Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let hello = wat::parse_file(common::example("hello.wat")).unwrap();
    let layer = common::oci::raw_tar(&[("../escape", tar::EntryType::Regular, b"x")]);
    let mut layout = common::oci::Layout::new(dir.path());
    common::oci::wasm_artifact(
        &mut layout,
        &hello,
        "application/vnd.oci.image.layer.v1.tar",
        &layer,
        "bad:1",
    );
    let (store_dir, layout_dir) = (state.join("images"), dir.path().to_path_buf());
    let (imported, planted) = tokio::task::spawn_blocking(move || {
        let out = common::wisp()
            .args(["image", "import", "--store"])
            .arg(&store_dir)
            .arg(&layout_dir)
            .output()
            .unwrap();
        let store = wisp_images::Store::open(&store_dir).unwrap();
        (
            out.status.success(),
            common::oci::plant_image(&store, &hello, &layer),
        )
    })
    .await
    .unwrap();
    if imported {
        return "a layer escaping its root was imported".into();
    }
    let body = serde_json::to_vec(&serde_json::json!({ "image": planted })).unwrap();
    let r = client
        .request(Method::PUT, "/v1/functions/bad-image", body.into())
        .await
        .unwrap();
    // 503 while another part of the mix holds the store's lock.
    let ok = (r.status == 422 && code(&r) == "invalid_image")
        || (r.status == 503 && code(&r) == "image_store_busy");
    check(ok, "bad image deploy", &r)
}

/// What the registry database holds (read-only): `query`'s (name,
/// version) rows.
fn registry(state: &std::path::Path, query: &str) -> BTreeSet<(String, u64)> {
    let db = rusqlite::Connection::open_with_flags(
        state.join("wisp.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = db.prepare(query).unwrap();
    stmt.query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The snapshot directories on disk, as (function, version).
fn snapshots_on_disk(state: &std::path::Path) -> BTreeSet<(String, u64)> {
    let mut found = BTreeSet::new();
    for function in std::fs::read_dir(state.join("functions"))
        .unwrap()
        .flatten()
    {
        for version in std::fs::read_dir(function.path()).unwrap().flatten() {
            let name = function.file_name().to_string_lossy().into_owned();
            let v = version.file_name().to_string_lossy().into_owned();
            let v = v.strip_prefix('v').and_then(|v| v.parse().ok());
            found.insert((name, v.unwrap_or(u64::MAX)));
        }
    }
    found
}
