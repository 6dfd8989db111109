//! Python and JavaScript handlers through the daemon (docs/RUNTIMES.md):
//! real interpreters, snapshotted after the handler's import, on runtime
//! images `scripts/build-runtimes` makes. One daemon for the whole file, so
//! each runtime's interpreter is compiled once.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use hyper::Method;
use serde_json::{json, Value};
use wisp::api::{DeployRequest, FunctionConfig, HEADER_FUNCTION_ERROR, HEADER_REQUEST_ID};
use wisp::client::Response;

use common::daemon::{block_on, code, invoke, Daemon};

/// The daemon of this file, with the runtimes imported into its store.
fn daemon() -> Arc<Daemon> {
    static SHARED: Mutex<Weak<Daemon>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(daemon) = shared.upgrade() {
        return daemon;
    }
    let daemon = Arc::new(Daemon::start());
    common::install_runtimes(&daemon.state.join("images"));
    *shared = Arc::downgrade(&daemon);
    daemon
}

fn code_dir(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

async fn deploy(daemon: &Daemon, name: &str, runtime: &str, handler: &str, dir: &str) -> Response {
    deploy_with(
        daemon,
        name,
        runtime,
        handler,
        dir,
        FunctionConfig::default(),
    )
    .await
}

async fn deploy_with(
    daemon: &Daemon,
    name: &str,
    runtime: &str,
    handler: &str,
    dir: &str,
    config: FunctionConfig,
) -> Response {
    let code = wisp::runtimes::code_tar(&code_dir(dir)).unwrap();
    let config = FunctionConfig {
        runtime: Some(runtime.into()),
        handler: Some(handler.into()),
        ..config
    };
    let request = DeployRequest::code(&code, config);
    daemon
        .client()
        .request(
            Method::PUT,
            &format!("/v1/functions/{name}"),
            Bytes::from(serde_json::to_vec(&request).unwrap()),
        )
        .await
        .unwrap()
}

/// The SHA-256 of `text`, hex.
fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deploys `handler` and checks that the deploy succeeded.
async fn deploy_ok(daemon: &Daemon, name: &str, runtime: &str, handler: &str, dir: &str) {
    assert_deployed(&deploy(daemon, name, runtime, handler, dir).await);
}

fn ok_json(response: &Response) -> Value {
    assert_eq!(response.status, 200, "{response:?}");
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&response.body)))
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.header(name)
}

/// The tail of the function's stderr the response carries.
fn stderr(response: &Response) -> String {
    use base64::Engine as _;
    let tail = header(response, "x-wisp-stderr").unwrap_or("");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(tail)
        .unwrap();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn assert_deployed(response: &Response) {
    assert!(
        [200, 201].contains(&response.status),
        "{}",
        String::from_utf8_lossy(&response.body)
    );
}

#[test]
fn python_handlers_take_json_and_return_json_or_text() {
    let daemon = daemon();
    block_on(async {
        deploy_ok(
            &daemon,
            "py-echo",
            "python3.12",
            "handlers.echo",
            "tests/runtimes/python",
        )
        .await;
        let r = invoke(&daemon.client(), "py-echo", br#"{"a": [1, 2]}"#).await;
        let body = ok_json(&r);
        assert_eq!(body["event"], json!({"a": [1, 2]}));
        assert_eq!(body["function"], "py-echo");
        assert_eq!(body["request_id"], header(&r, HEADER_REQUEST_ID).unwrap());
        assert!(body["remaining_ms"].as_i64().unwrap() > 20_000, "{body}");
        // Not JSON: the raw body, as a string.
        let body = ok_json(&invoke(&daemon.client(), "py-echo", b"not json").await);
        assert_eq!(body["event"], "not json");

        deploy_ok(
            &daemon,
            "py-text",
            "python3.12",
            "handlers.text",
            "tests/runtimes/python",
        )
        .await;
        let r = invoke(&daemon.client(), "py-text", b"7").await;
        assert_eq!(r.body.as_ref(), b"plain 7", "a str is the body as it is");
        // No body: `None`.
        let r = invoke(&daemon.client(), "py-text", b"").await;
        assert_eq!(r.body.as_ref(), b"plain None");

        deploy_ok(
            &daemon,
            "py-raw",
            "python3.12",
            "handlers.raw",
            "tests/runtimes/python",
        )
        .await;
        let r = invoke(&daemon.client(), "py-raw", b"\xff\xfe\x00").await;
        assert_eq!(
            (r.status, r.body.as_ref()),
            (200, &b"\x00\xfe\xff"[..]),
            "bytes in, bytes out"
        );
    });
}

#[test]
fn python_handlers_import_shipped_packages_and_read_shipped_files() {
    let daemon = daemon();
    block_on(async {
        deploy_ok(
            &daemon,
            "py-files",
            "python3.12",
            "handlers.files",
            "tests/runtimes/python",
        )
        .await;
        let body = ok_json(&invoke(&daemon.client(), "py-files", br#"{"name": "wisp"}"#).await);
        assert_eq!(body["at_import"], json!({"shipped": true}));
        assert_eq!(body["per_request"], json!({"shipped": true}));
        assert_eq!(body["greeting"], "hello, wisp");

        // The example: json, re, datetime, hashlib, base64 and a data file.
        deploy_ok(
            &daemon,
            "py-words",
            "python3.12",
            "stdlib.handler",
            "examples/python",
        )
        .await;
        let text = "Snapshots make the cold starts cheap";
        let body = ok_json(
            &invoke(
                &daemon.client(),
                "py-words",
                json!({"text": text}).to_string().as_bytes(),
            )
            .await,
        );
        assert_eq!(
            body["words"],
            json!(["snapshots", "cold", "starts", "cheap"])
        );
        assert_eq!(body["sha256"], sha256_hex(text));
        assert_eq!(
            body["base64"],
            "U25hcHNob3RzIG1ha2UgdGhlIGNvbGQgc3RhcnRzIGNoZWFw"
        );
    });
}

#[test]
fn every_invocation_starts_from_the_snapshot_with_its_own_clock_and_randomness() {
    let daemon = daemon();
    block_on(async {
        let config = FunctionConfig {
            reserved: 1,
            ..FunctionConfig::default()
        };
        let r = deploy_with(
            &daemon,
            "py-state",
            "python3.12",
            "handlers.state",
            "tests/runtimes/python",
            config,
        )
        .await;
        assert_deployed(&r);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let mut seen = Vec::new();
        for _ in 0..3 {
            let r = invoke(&daemon.client(), "py-state", b"").await;
            let stderr = stderr(&r);
            assert!(
                stderr.contains("counter is 1"),
                "print goes to the log: {stderr}"
            );
            seen.push(ok_json(&r));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        for body in &seen {
            assert_eq!(body["counter"], 1, "module state does not leak: {body}");
            let at = body["now"].as_f64().unwrap();
            assert!(
                (now - at).abs() < 30.0 && at - body["imported_at"].as_f64().unwrap() >= 1.0,
                "{body}"
            );
            assert_eq!(
                body["import_random"], seen[0]["import_random"],
                "import-time values are shared"
            );
        }
        for key in ["random", "urandom"] {
            let values: std::collections::BTreeSet<String> =
                seen.iter().map(|b| b[key].to_string()).collect();
            assert_eq!(
                values.len(),
                seen.len(),
                "{key} differs between restores: {seen:?}"
            );
        }
    });
}

#[test]
fn an_exception_is_an_error_document_not_a_trap() {
    let daemon = daemon();
    block_on(async {
        deploy_ok(
            &daemon,
            "py-fail",
            "python3.12",
            "handlers.fail",
            "tests/runtimes/python",
        )
        .await;
        let r = invoke(&daemon.client(), "py-fail", br#"{"what": "luck"}"#).await;
        assert_eq!(header(&r, HEADER_FUNCTION_ERROR), Some("Unhandled"));
        assert_eq!(header(&r, "x-wisp-exit-code"), Some("70"));
        let body = ok_json(&r);
        assert_eq!(body["errorType"], "ValueError");
        assert_eq!(body["errorMessage"], "no luck");
        assert_eq!(body["requestId"], header(&r, HEADER_REQUEST_ID).unwrap());
        let trace = body["stackTrace"].to_string();
        assert!(
            trace.contains("handlers.py") && trace.contains("in fail"),
            "{trace}"
        );
        // The instance serves again.
        let r = invoke(&daemon.client(), "py-fail", br#"{"what": "more"}"#).await;
        assert_eq!(ok_json(&r)["errorMessage"], "no more");
    });
}

#[test]
fn a_handler_past_its_timeout_is_stopped() {
    let daemon = daemon();
    block_on(async {
        let config = FunctionConfig {
            timeout_ms: 300,
            ..FunctionConfig::default()
        };
        let r = deploy_with(
            &daemon,
            "py-spin",
            "python3.12",
            "handlers.spin",
            "tests/runtimes/python",
            config,
        )
        .await;
        assert_deployed(&r);
        let r = invoke(&daemon.client(), "py-spin", b"{}").await;
        assert_eq!((r.status, code(&r).as_str()), (504, "function_timeout"));
    });
}

#[test]
fn a_handler_past_the_output_limit_is_stopped() {
    let daemon = daemon();
    block_on(async {
        deploy_ok(
            &daemon,
            "py-flood",
            "python3.12",
            "handlers.flood",
            "tests/runtimes/python",
        )
        .await;
        let r = invoke(&daemon.client(), "py-flood", b"{}").await;
        assert_eq!(
            (r.status, code(&r).as_str()),
            (502, "function_output_limit")
        );
    });
}

#[test]
fn the_examples_run_as_their_comments_say() {
    let daemon = daemon();
    block_on(async {
        let items = json!({"items": [{"name": "b", "price": 2}, {"name": "a", "price": 1}]});
        for (name, runtime, handler, dir) in [
            ("transform", "python3.12", "app.handler", "examples/python"),
            (
                "transform-js",
                "javascript",
                "index.handler",
                "examples/javascript",
            ),
        ] {
            assert_deployed(&deploy(&daemon, name, runtime, handler, dir).await);
            let r = invoke(&daemon.client(), name, items.to_string().as_bytes()).await;
            let body = ok_json(&r);
            assert_eq!(
                body["items"],
                json!([{"name": "a", "price": 1}, {"name": "b", "price": 2}]),
                "{name}"
            );
            assert_eq!(body["total"], 3, "{name}: {body}");
            assert_eq!(body["function"], name);
            let id = header(&r, HEADER_REQUEST_ID).unwrap();
            assert!(stderr(&r).contains(id), "{name} logs its request id");
        }

        deploy_ok(
            &daemon,
            "words-js",
            "javascript",
            "stdlib.handler",
            "examples/javascript",
        )
        .await;
        let text = "Snapshots make the cold starts cheap";
        let r = invoke(
            &daemon.client(),
            "words-js",
            json!({"text": text}).to_string().as_bytes(),
        )
        .await;
        let body = ok_json(&r);
        assert_eq!(
            body["words"],
            json!(["snapshots", "cold", "starts", "cheap"])
        );
        assert_eq!(body["length"], text.len());
        assert_eq!(body["sha256"], sha256_hex(text));
        assert_eq!(
            body["base64"],
            "U25hcHNob3RzIG1ha2UgdGhlIGNvbGQgc3RhcnRzIGNoZWFw"
        );
        let year: u32 = body["at"].as_str().unwrap()[..4].parse().unwrap();
        assert!(year >= 2024, "the clock is current: {body}");
    });
}

#[test]
fn an_update_serves_the_old_version_until_the_new_snapshot_is_ready() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let daemon = daemon();
    block_on(async {
        let dir = "tests/runtimes/python";
        deploy_ok(&daemon, "py-update", "python3.12", "handlers.text", dir).await;
        // A handler that does not load is refused and the old one serves.
        let r = deploy(
            &daemon,
            "py-update",
            "python3.12",
            "app.handler",
            "tests/runtimes/python-broken",
        )
        .await;
        assert_eq!((r.status, code(&r).as_str()), (422, "invalid_handler"));
        let r = invoke(&daemon.client(), "py-update", b"7").await;
        assert_eq!(r.body.as_ref(), b"plain 7");

        // Clients invoke without pause while the function is updated to
        // another handler: every invocation succeeds, with the old answer
        // until the new version is ready, never going back.
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..2)
            .map(|_| {
                let (client, stop) = (daemon.client(), Arc::clone(&stop));
                tokio::spawn(async move {
                    let (mut old, mut new) = (0, 0);
                    while !stop.load(Ordering::Acquire) {
                        let r = invoke(&client, "py-update", b"7").await;
                        assert_eq!(r.status, 200, "{r:?}");
                        match r.body.as_ref() {
                            b"plain 7" => {
                                assert_eq!(new, 0, "went back to the old version");
                                old += 1;
                            }
                            b"7" => new += 1,
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                    (old, new)
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let r = deploy(&daemon, "py-update", "python3.12", "handlers.raw", dir).await;
        assert_eq!(r.status, 200, "{r:?}");
        let r = invoke(&daemon.client(), "py-update", b"7").await;
        assert_eq!(r.body.as_ref(), b"7", "the new version serves once ready");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        stop.store(true, Ordering::Release);
        for client in clients {
            let (old, new) = client.await.unwrap();
            assert!(old > 0 && new > 0, "old {old}, new {new}");
        }
    });
}

#[test]
fn bad_handlers_and_missing_runtimes_are_refused_at_deploy() {
    let daemon = daemon();
    block_on(async {
        let cases = [
            (
                "python3.12",
                "handlers.nothere",
                "tests/runtimes/python",
                "invalid_handler",
                "has no function `nothere`",
            ),
            (
                "python3.12",
                "missing.handler",
                "tests/runtimes/python",
                "invalid_handler",
                "No module named 'missing'",
            ),
            (
                "python3.12",
                "app.handler",
                "tests/runtimes/python-broken",
                "invalid_handler",
                "SyntaxError",
            ),
            (
                "python3.12",
                "nodot",
                "tests/runtimes/python",
                "invalid_handler",
                "MODULE.FUNCTION",
            ),
            (
                "cobol",
                "app.handler",
                "tests/runtimes/python",
                "runtime_not_found",
                "unknown runtime",
            ),
        ];
        for (runtime, handler, dir, expected, words) in cases {
            let r = deploy(&daemon, "py-bad", runtime, handler, dir).await;
            assert_eq!(
                (r.status, code(&r).as_str()),
                (422, expected),
                "{handler}: {r:?}"
            );
            let message = r.error().unwrap().error.message;
            assert!(message.contains(words), "{handler}: {message}");
        }
        assert!(common::daemon::listed(&daemon.client())
            .await
            .iter()
            .all(|(n, _)| n != "py-bad"));
    });
}

#[test]
fn javascript_handlers_take_json_throw_documents_and_start_fresh() {
    let daemon = daemon();
    block_on(async {
        deploy_ok(
            &daemon,
            "js-echo",
            "javascript",
            "handlers.echo",
            "tests/runtimes/javascript",
        )
        .await;
        let body = ok_json(&invoke(&daemon.client(), "js-echo", br#"{"x": 1}"#).await);
        assert_eq!(body["event"], json!({"x": 1}));
        assert_eq!(body["shout"], "HI!");

        deploy_ok(
            &daemon,
            "js-state",
            "javascript",
            "handlers.state",
            "tests/runtimes/javascript",
        )
        .await;
        let a = ok_json(&invoke(&daemon.client(), "js-state", b"").await);
        let b = ok_json(&invoke(&daemon.client(), "js-state", b"").await);
        assert_eq!(
            (a["counter"].clone(), b["counter"].clone()),
            (json!(1), json!(1))
        );
        assert_ne!(a["random"], b["random"]);
        assert_eq!(a["import_random"], b["import_random"]);

        deploy_ok(
            &daemon,
            "js-fail",
            "javascript",
            "handlers.fail",
            "tests/runtimes/javascript",
        )
        .await;
        let r = invoke(&daemon.client(), "js-fail", br#"{"what": "luck"}"#).await;
        assert_eq!(header(&r, HEADER_FUNCTION_ERROR), Some("Unhandled"));
        let body = ok_json(&r);
        assert_eq!(
            (body["errorType"].as_str(), body["errorMessage"].as_str()),
            (Some("TypeError"), Some("no luck"))
        );

        let r = deploy(
            &daemon,
            "js-bad",
            "javascript",
            "handlers.nothere",
            "tests/runtimes/javascript",
        )
        .await;
        assert_eq!((r.status, code(&r).as_str()), (422, "invalid_handler"));

        // A syntax error: refused at deploy with QuickJS's words.
        let r = deploy(
            &daemon,
            "js-bad",
            "javascript",
            "index.handler",
            "tests/runtimes/javascript-broken",
        )
        .await;
        assert_eq!(
            (r.status, code(&r).as_str()),
            (422, "invalid_handler"),
            "{r:?}"
        );
        let message = r.error().unwrap().error.message;
        assert!(message.contains("SyntaxError"), "{message}");
        assert!(common::daemon::listed(&daemon.client())
            .await
            .iter()
            .all(|(n, _)| n != "js-bad"));
    });
}

/// `wisp image build --runtime`: the runtime's layers (the same blobs) and
/// the code on top, the handler recorded in the image, so a deploy of it
/// names neither runtime nor handler; bad input is refused clearly.
#[test]
fn a_handler_image_shares_its_runtime_layers_and_deploys_by_reference() {
    let daemon = daemon();
    let store = daemon.state.join("images");
    let build = |args: &[&str]| {
        common::wisp()
            .args(["image", "build", "--store"])
            .arg(&store)
            .args(args)
            .output()
            .unwrap()
    };
    let out = build(&[
        "--runtime",
        "python3.12",
        "--handler",
        "handlers.echo",
        &code_dir("tests/runtimes/python").to_string_lossy(),
        "-t",
        "py-image:1",
    ]);
    assert!(out.status.success(), "{out:?}");

    let images = wisp_images::Store::open(&store).unwrap();
    let image = |reference: &str| images.image(&images.resolve(reference).unwrap()).unwrap();
    let (runtime, built) = (image("wisp/python:3.12"), image("py-image:1"));
    let base = runtime.manifest().layers();
    let layers = built.manifest().layers();
    assert_eq!(
        layers.len(),
        base.len() + 1,
        "the runtime's layers and the code"
    );
    assert_eq!(&layers[..base.len()], &base[..], "the same blobs");

    block_on(async {
        let request = serde_json::to_vec(&json!({"image": "py-image:1"})).unwrap();
        let r = daemon
            .client()
            .request(Method::PUT, "/v1/functions/py-image", Bytes::from(request))
            .await
            .unwrap();
        assert_deployed(&r);
        let r = invoke(&daemon.client(), "py-image", br#"{"a": 1}"#).await;
        let body = ok_json(&r);
        assert_eq!(body["event"], json!({"a": 1}));
        assert_eq!(body["function"], "py-image");
    });

    for (args, words) in [
        (
            vec!["--runtime", "cobol", "--handler", "app.handler"],
            "unknown runtime",
        ),
        (
            vec!["--runtime", "python3.12", "--handler", "nodot"],
            "MODULE.FUNCTION",
        ),
        (vec!["--runtime", "python3.12"], "--handler"),
    ] {
        let mut args = args;
        args.extend(["tests/runtimes/python", "-t", "py-bad:1"]);
        let out = build(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(words),
            "{args:?}: {stderr}"
        );
    }
    let empty = tempfile::tempdir().unwrap();
    let out = common::wisp()
        .args(["image", "build", "--store"])
        .arg(empty.path())
        .args(["--runtime", "javascript", "--handler", "index.handler"])
        .arg(code_dir("tests/runtimes/javascript"))
        .args(["-t", "js:1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("scripts/build-runtimes"),
        "{stderr}"
    );
}

/// `wisp run --runtime`: what one run of `handler` in `dir` printed and
/// how it exited.
struct Ran {
    status: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

fn wisp_run(
    store: &Path,
    cache: &Path,
    runtime: &str,
    handler: &str,
    dir: &str,
    event: &[u8],
) -> Ran {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["run", "--timings", "--store"])
        .arg(store)
        .args(["--runtime", runtime, "--handler", handler])
        .arg(code_dir(dir))
        .env("WISP_CACHE_DIR", cache)
        .env_remove("WISP_RUN_CACHE_SIZE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(event).unwrap();
    let out = child.wait_with_output().unwrap();
    Ran {
        status: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn wisp_run_runs_a_handler_from_a_cached_snapshot() {
    common::require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("images");
    common::install_runtimes(&store);
    let cache = dir.path().join("cache");
    let run = |runtime: &str, handler: &str, code: &str, event: &[u8]| {
        wisp_run(&store, &cache, runtime, handler, code, event)
    };
    let items = br#"{"items": [{"name": "b", "price": 2}, {"name": "a", "price": 1}]}"#;
    for start in ["wisp: created", "wisp: cached"] {
        let ran = run("python3.12", "app.handler", "examples/python", items);
        assert_eq!(ran.status, Some(0), "{}", ran.stderr);
        let body: Value = serde_json::from_slice(&ran.stdout).unwrap();
        assert_eq!(body["total"], 3, "{body}");
        assert_eq!(body["items"][0]["name"], "a");
        assert!(ran.stderr.contains(start), "{}", ran.stderr);
    }

    // Two runs restored from one snapshot: fresh state, their own
    // randomness, the import's values shared.
    let runs: Vec<Value> = (0..3)
        .map(|_| {
            let ran = run("python3.12", "handlers.state", "tests/runtimes/python", b"");
            assert_eq!(ran.status, Some(0), "{}", ran.stderr);
            assert!(ran.stderr.contains("counter is 1"), "{}", ran.stderr);
            serde_json::from_slice(&ran.stdout).unwrap()
        })
        .collect();
    assert!(runs
        .iter()
        .all(|r| r["counter"] == 1 && r["import_random"] == runs[0]["import_random"]));
    assert_ne!(runs[1]["random"], runs[2]["random"], "{runs:?}");
    assert_ne!(runs[1]["urandom"], runs[2]["urandom"], "{runs:?}");

    // An exception: its document on stdout, exit status 70.
    let ran = run(
        "python3.12",
        "handlers.fail",
        "tests/runtimes/python",
        br#"{"what": "luck"}"#,
    );
    assert_eq!(ran.status, Some(70), "{}", ran.stderr);
    let body: Value = serde_json::from_slice(&ran.stdout).unwrap();
    assert_eq!(
        (body["errorType"].as_str(), body["errorMessage"].as_str()),
        (Some("ValueError"), Some("no luck"))
    );

    // A handler that does not load: the interpreter's words, status 1.
    let ran = run(
        "python3.12",
        "app.handler",
        "tests/runtimes/python-broken",
        b"{}",
    );
    assert_eq!(ran.status, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("SyntaxError"), "{}", ran.stderr);

    let ran = run(
        "javascript",
        "handlers.echo",
        "tests/runtimes/javascript",
        br#"{"x": 1}"#,
    );
    assert_eq!(ran.status, Some(0), "{}", ran.stderr);
    let body: Value = serde_json::from_slice(&ran.stdout).unwrap();
    assert_eq!(body["event"], json!({"x": 1}));
}
