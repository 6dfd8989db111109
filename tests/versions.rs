//! Versions, aliases and rollouts against a real daemon booting real VMs:
//! numbering that survives deletes, version deletes refused while aliased,
//! retention with its snapshots, a weighted split followed statistically,
//! rollouts that complete or roll back, and a rollout that outlives
//! `kill -9`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::daemon::{block_on, code, deploy, Daemon};
use hyper::Method;
use serde_json::{json, Value};
use sha2::Digest as _;
use wisp::api::{FunctionConfig, RolloutInfo, RolloutState, VersionList};
use wisp::client::{Client, Connection, Response};

async fn send(client: &Client, method: Method, path: &str, body: Value) -> Response {
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    client.request(method, path, body).await.unwrap()
}

/// Deploys `module` as `name` and returns the version it got.
async fn deploy_version(client: &Client, name: &str, module: &Path) -> u64 {
    let r = deploy(client, name, module, FunctionConfig::default()).await;
    assert!(r.status == 200 || r.status == 201, "{r:?}");
    let info: wisp::api::FunctionInfo = serde_json::from_slice(&r.body).unwrap();
    info.version
}

fn hello() -> std::path::PathBuf {
    common::example("hello.wat")
}

/// Invokes `name` through `qualifier` and returns the answering version.
async fn invoke_version(conn: &mut Connection, name: &str, qualifier: Option<&str>) -> u64 {
    let path = match qualifier {
        Some(q) => format!("/v1/functions/{name}/invoke?qualifier={q}"),
        None => format!("/v1/functions/{name}/invoke"),
    };
    let r = conn.send(Method::POST, &path, Bytes::new()).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    r.header("x-wisp-version").unwrap().parse().unwrap()
}

async fn versions(client: &Client, name: &str) -> Vec<u64> {
    let r = send(
        client,
        Method::GET,
        &format!("/v1/functions/{name}/versions"),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let list: VersionList = serde_json::from_slice(&r.body).unwrap();
    list.versions.iter().map(|v| v.version).collect()
}

fn snapshot_dirs(state: &Path, name: &str) -> Vec<String> {
    let mut dirs: Vec<String> = std::fs::read_dir(state.join("functions").join(name))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn numbers_are_never_reused_and_every_version_can_be_invoked() {
    let daemon = Daemon::start();
    block_on(async {
        let client = daemon.client();
        for expected in 1..=3 {
            assert_eq!(deploy_version(&client, "num", &hello()).await, expected);
        }
        assert_eq!(versions(&client, "num").await, [1, 2, 3]);
        let mut conn = Connection::open(&daemon.socket).await.unwrap();
        // No qualifier: `live`, the newest deploy.
        assert_eq!(invoke_version(&mut conn, "num", None).await, 3);
        assert_eq!(invoke_version(&mut conn, "num", Some("1")).await, 1);
        assert_eq!(invoke_version(&mut conn, "num", Some("live")).await, 3);
        let r = conn
            .send(
                Method::POST,
                "/v1/functions/num/invoke?qualifier=9",
                Bytes::new(),
            )
            .await
            .unwrap();
        assert_eq!((r.status, code(&r)), (404, "version_not_found".into()));
        let r = conn
            .send(
                Method::POST,
                "/v1/functions/num/invoke?qualifier=nope",
                Bytes::new(),
            )
            .await
            .unwrap();
        assert_eq!((r.status, code(&r)), (404, "alias_not_found".into()));
        // Deleted and deployed again: numbering goes on.
        let r = send(&client, Method::DELETE, "/v1/functions/num", Value::Null).await;
        assert_eq!(r.status, 204);
        assert!(snapshot_dirs(&daemon.state, "num").is_empty());
        assert_eq!(deploy_version(&client, "num", &hello()).await, 4);
    });
}

#[test]
fn numbering_and_aliases_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(dir.path());
    block_on(async {
        let client = daemon.client();
        deploy_version(&client, "keep", &hello()).await;
        deploy_version(&client, "keep", &hello()).await;
        let r = send(
            &client,
            Method::PUT,
            "/v1/functions/keep/aliases/stable",
            json!({"version": 1}),
        )
        .await;
        assert_eq!(r.status, 201, "{r:?}");
    });
    daemon.kill();
    let daemon = Daemon::start_in(dir.path());
    block_on(async {
        let client = daemon.client();
        let mut conn = Connection::open(&daemon.socket).await.unwrap();
        assert_eq!(invoke_version(&mut conn, "keep", Some("stable")).await, 1);
        assert_eq!(invoke_version(&mut conn, "keep", None).await, 2);
        assert_eq!(deploy_version(&client, "keep", &hello()).await, 3);
    });
}

#[test]
fn deleting_an_aliased_version_is_refused_with_409() {
    let daemon = Daemon::start();
    block_on(async {
        let client = daemon.client();
        deploy_version(&client, "del", &hello()).await;
        deploy_version(&client, "del", &hello()).await;
        let r = send(
            &client,
            Method::PUT,
            "/v1/functions/del/aliases/canary",
            json!({"version": 1}),
        )
        .await;
        assert_eq!(r.status, 201, "{r:?}");
        for v in [1, 2] {
            let r = send(
                &client,
                Method::DELETE,
                &format!("/v1/functions/del/versions/{v}"),
                Value::Null,
            )
            .await;
            assert_eq!((r.status, code(&r)), (409, "version_aliased".into()), "{v}");
        }
        assert_eq!(snapshot_dirs(&daemon.state, "del"), ["v1", "v2"]);
        let r = send(
            &client,
            Method::DELETE,
            "/v1/functions/del/aliases/live",
            Value::Null,
        )
        .await;
        assert_eq!((r.status, code(&r)), (409, "live_alias_required".into()));
        let r = send(
            &client,
            Method::DELETE,
            "/v1/functions/del/aliases/canary",
            Value::Null,
        )
        .await;
        assert_eq!(r.status, 204, "{r:?}");
        let r = send(
            &client,
            Method::DELETE,
            "/v1/functions/del/versions/1",
            Value::Null,
        )
        .await;
        assert_eq!(r.status, 204, "{r:?}");
        assert_eq!(versions(&client, "del").await, [2]);
        assert_eq!(snapshot_dirs(&daemon.state, "del"), ["v2"]);
        // An alias cannot name a missing version.
        let r = send(
            &client,
            Method::PUT,
            "/v1/functions/del/aliases/canary",
            json!({"version": 2, "additional": {"version": 1, "weight": 5}}),
        )
        .await;
        assert_eq!((r.status, code(&r)), (404, "version_not_found".into()));
    });
}

#[test]
fn retention_deletes_old_unaliased_versions_and_their_snapshots() {
    let daemon = Daemon::start_with(&["--keep-versions", "1"]);
    block_on(async {
        let client = daemon.client();
        deploy_version(&client, "ret", &hello()).await;
        let r = send(
            &client,
            Method::PUT,
            "/v1/functions/ret/aliases/pinned",
            json!({"version": 1}),
        )
        .await;
        assert_eq!(r.status, 201, "{r:?}");
        for _ in 2..=5 {
            deploy_version(&client, "ret", &hello()).await;
        }
        // 1 is aliased, 5 is live, 4 is the one unaliased version kept.
        assert_eq!(versions(&client, "ret").await, [1, 4, 5]);
        assert_eq!(snapshot_dirs(&daemon.state, "ret"), ["v1", "v4", "v5"]);
        // Moving the alias away makes 1 unaliased, and the oldest.
        let r = send(
            &client,
            Method::PUT,
            "/v1/functions/ret/aliases/pinned",
            json!({"version": 5}),
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(versions(&client, "ret").await, [4, 5]);
        assert_eq!(snapshot_dirs(&daemon.state, "ret"), ["v4", "v5"]);
    });
}

/// Invokes `name` (no qualifier) `n` times over `clients` connections and
/// counts the answering versions.
async fn spread(socket: &Path, name: &str, n: usize, clients: usize) -> BTreeMap<u64, usize> {
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let (socket, name) = (socket.to_path_buf(), name.to_string());
            let share = n / clients + usize::from(i < n % clients);
            tokio::spawn(async move {
                let mut conn = Connection::open(&socket).await.unwrap();
                let mut seen = BTreeMap::new();
                for _ in 0..share {
                    *seen
                        .entry(invoke_version(&mut conn, &name, None).await)
                        .or_insert(0) += 1;
                }
                seen
            })
        })
        .collect();
    let mut total = BTreeMap::new();
    for t in tasks {
        for (v, c) in t.await.unwrap() {
            *total.entry(v).or_insert(0) += c;
        }
    }
    total
}

#[test]
fn a_90_10_split_follows_its_weights() {
    let daemon = Daemon::start();
    block_on(async {
        let client = daemon.client();
        deploy_version(&client, "split", &hello()).await;
        deploy_version(&client, "split", &hello()).await;
        let r = send(
            &client,
            Method::PUT,
            "/v1/functions/split/aliases/live",
            json!({"version": 1, "additional": {"version": 2, "weight": 10}}),
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
        let n = 2000;
        let seen = spread(&daemon.socket, "split", n, 4).await;
        assert_eq!(seen.values().sum::<usize>(), n);
        // Binomial(2000, 0.1): mean 200, sigma 13.4; 4 sigma either way.
        let to_2 = seen.get(&2).copied().unwrap_or(0) as f64;
        let sigma = (n as f64 * 0.1 * 0.9).sqrt();
        assert!(
            (to_2 - 200.0).abs() <= 4.0 * sigma,
            "version 2 answered {to_2} of {n}: {seen:?}"
        );
        // The metrics say the same, by version and alias.
        let r = send(&client, Method::GET, "/metrics", Value::Null).await;
        let text = String::from_utf8_lossy(&r.body);
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("wisp_version_invocations_total{")
                    && l.contains("function=\"split\"")
                    && l.contains("version=\"2\"")
                    && l.contains("alias=\"live\"")
                    && l.contains("outcome=\"ok\"")
            })
            .unwrap_or_else(|| panic!("no version 2 series in\n{text}"));
        let counted: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert_eq!(counted, to_2);
        // Each version has its own pool, sized by its share.
        let r = send(
            &client,
            Method::GET,
            "/v1/functions/split/versions",
            Value::Null,
        )
        .await;
        let list: VersionList = serde_json::from_slice(&r.body).unwrap();
        let (v1, v2) = (&list.versions[0], &list.versions[1]);
        assert_eq!(
            (v1.aliases.clone(), v2.aliases.clone()),
            (vec!["live".to_string()], vec!["live".to_string()])
        );
        assert_eq!(v1.stats.invocations + v2.stats.invocations, n as u64);
    });
}

/// Keeps invoking `name` until `stop`, counting non-200 answers as fine:
/// a trapping version answers 502.
fn load(socket: &Path, name: &str, stop: &Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    let (socket, name, stop) = (socket.to_path_buf(), name.to_string(), Arc::clone(stop));
    tokio::spawn(async move {
        let mut conn = Connection::open(&socket).await.unwrap();
        let path = format!("/v1/functions/{name}/invoke");
        let mut sent = 0;
        while !stop.load(Ordering::Acquire) {
            if conn.send(Method::POST, &path, Bytes::new()).await.is_err() {
                break; // the daemon was killed
            }
            sent += 1;
        }
        sent
    })
}

/// Deploys `hello` and then `second` as `name`, and points `live` back at
/// the first; returns the second's version.
async fn two_versions_live_on_first(client: &Client, name: &str, second: &Path) -> u64 {
    deploy_version(client, name, &hello()).await;
    let to = deploy_version(client, name, second).await;
    let r = send(
        client,
        Method::PUT,
        &format!("/v1/functions/{name}/aliases/live"),
        json!({"version": 1}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    to
}

/// Starts a rollout of `name` as `request` says.
async fn start_rollout(client: &Client, name: &str, request: Value) -> RolloutInfo {
    let r = send(
        client,
        Method::POST,
        &format!("/v1/functions/{name}/rollout"),
        request,
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    serde_json::from_slice(&r.body).unwrap()
}

async fn rollout(client: &Client, name: &str) -> RolloutInfo {
    let r = send(
        client,
        Method::GET,
        &format!("/v1/functions/{name}/rollout"),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    serde_json::from_slice(&r.body).unwrap()
}

/// Waits (at most `limit`) for `name`'s rollout to leave `running`.
async fn finished(client: &Client, name: &str, limit: Duration) -> RolloutInfo {
    let t0 = Instant::now();
    loop {
        let info = rollout(client, name).await;
        if info.state != RolloutState::Running {
            return info;
        }
        assert!(t0.elapsed() < limit, "still running: {info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn live(client: &Client, name: &str) -> Value {
    let r = send(
        client,
        Method::GET,
        &format!("/v1/functions/{name}/aliases/live"),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn a_rollout_to_a_version_that_traps_a_fifth_of_the_time_is_rolled_back() {
    let daemon = Daemon::start();
    block_on(async {
        let client = daemon.client();
        let to =
            two_versions_live_on_first(&client, "bad", &common::fixture("trap_fifth.wat")).await;
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..2).map(|_| load(&daemon.socket, "bad", &stop)).collect();
        start_rollout(
            &client,
            "bad",
            json!({"to": to, "steps": [25, 50, 100], "interval_ms": 300,
                   "max_error_rate": 0.05, "min_invocations": 60}),
        )
        .await;
        let info = finished(&client, "bad", Duration::from_secs(60)).await;
        stop.store(true, Ordering::Release);
        for c in clients {
            c.await.unwrap();
        }
        assert_eq!(info.state, RolloutState::Failed, "{info:?}");
        assert_eq!(info.step, 0, "{info:?}");
        let reason = info.reason.unwrap();
        assert!(reason.contains(&format!("version {to} failed")), "{reason}");
        assert_eq!(
            live(&client, "bad").await,
            json!({"name": "live", "version": 1})
        );
        let mut conn = Connection::open(&daemon.socket).await.unwrap();
        for _ in 0..20 {
            assert_eq!(invoke_version(&mut conn, "bad", None).await, 1);
        }
    });
}

#[test]
fn a_rollout_to_a_healthy_version_completes() {
    let daemon = Daemon::start();
    block_on(async {
        let client = daemon.client();
        two_versions_live_on_first(&client, "good", &hello()).await;
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..2)
            .map(|_| load(&daemon.socket, "good", &stop))
            .collect();
        let t0 = Instant::now();
        let started = start_rollout(
            &client,
            "good",
            json!({"to": 2, "steps": [5, 25, 50, 100], "interval_ms": 200,
                   "max_error_rate": 0.01, "min_invocations": 5}),
        )
        .await;
        assert_eq!((started.from, started.to, started.step), (1, 2, 0));
        // A second rollout while one runs is refused.
        let r = send(
            &client,
            Method::POST,
            "/v1/functions/good/rollout",
            json!({"to": 2}),
        )
        .await;
        assert_eq!((r.status, code(&r)), (409, "rollout_running".into()));
        let info = finished(&client, "good", Duration::from_secs(60)).await;
        stop.store(true, Ordering::Release);
        let mut sent = 0;
        for c in clients {
            sent += c.await.unwrap();
        }
        assert_eq!(info.state, RolloutState::Completed, "{info:?}");
        assert_eq!(info.step, 3);
        // Three steps of at least 200 ms each.
        assert!(t0.elapsed() >= Duration::from_millis(600));
        assert!(sent > 0);
        assert_eq!(
            live(&client, "good").await,
            json!({"name": "live", "version": 2})
        );
        let r = send(&client, Method::GET, "/v1/functions/good", Value::Null).await;
        let f: wisp::api::FunctionInfo = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(f.version, 2);
        assert_eq!(f.rollout.unwrap().state, RolloutState::Completed);
    });
}

#[test]
fn kill_9_mid_rollout_resumes_from_the_recorded_step() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(dir.path());
    block_on(async {
        let client = daemon.client();
        two_versions_live_on_first(&client, "crash", &hello()).await;
        // The first step outlasts the kill and restart.
        start_rollout(
            &client,
            "crash",
            json!({"to": 2, "steps": [10, 100], "interval_ms": 3000}),
        )
        .await;
    });
    daemon.kill();
    let daemon = Daemon::start_in(dir.path());
    block_on(async {
        let client = daemon.client();
        let info = rollout(&client, "crash").await;
        assert_eq!(
            (info.state, info.step),
            (RolloutState::Running, 0),
            "{info:?}"
        );
        assert_eq!(
            live(&client, "crash").await,
            json!({"name": "live", "version": 1, "additional": {"version": 2, "weight": 10}})
        );
        let info = finished(&client, "crash", Duration::from_secs(30)).await;
        assert_eq!(info.state, RolloutState::Completed, "{info:?}");
        assert_eq!(
            live(&client, "crash").await,
            json!({"name": "live", "version": 2})
        );
    });
}

#[test]
fn kill_9_mid_rollout_with_a_version_lost_is_interrupted_and_routes_to_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(dir.path());
    block_on(async {
        let client = daemon.client();
        two_versions_live_on_first(&client, "lost", &common::fixture("echo.wat")).await;
        start_rollout(
            &client,
            "lost",
            json!({"to": 2, "steps": [50, 100], "interval_ms": 60000}),
        )
        .await;
    });
    let state = daemon.state.clone();
    daemon.kill();
    // Version 2 cannot come back: its snapshot and its module are gone.
    std::fs::remove_dir_all(state.join("functions/lost/v2")).unwrap();
    let echo = std::fs::read(common::fixture("echo.wat")).unwrap();
    let sha: String = sha2::Sha256::digest(&echo)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::remove_file(state.join("modules").join(format!("{sha}.wasm"))).unwrap();
    let daemon = Daemon::start_in(dir.path());
    block_on(async {
        let client = daemon.client();
        let info = rollout(&client, "lost").await;
        assert_eq!(info.state, RolloutState::Interrupted, "{info:?}");
        assert!(info.reason.unwrap().contains("version 2"));
        assert_eq!(
            live(&client, "lost").await,
            json!({"name": "live", "version": 1})
        );
        let mut conn = Connection::open(&daemon.socket).await.unwrap();
        for _ in 0..20 {
            assert_eq!(invoke_version(&mut conn, "lost", None).await, 1);
        }
    });
}
