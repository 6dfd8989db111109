//! The daemon against `openapi.yaml`: a real `wisp serve` is driven through
//! every documented operation and every status code that can be reached
//! deterministically, one test per operation and per kind of error, and
//! each response is checked against the spec (`tests/common/openapi.rs`).
//! Each test declares what it exercises ([`Covers`]) and checks at its end
//! that it saw exactly that; `the_tests_together_cover_the_spec` checks
//! that the declarations add up to every operation, status and error code
//! in the spec.
//!
//! Most tests share one daemon (`common::daemon::shared`), each with
//! function names of its own; those that need a daemon to themselves (an
//! exact list, another budget) start one.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use common::daemon::{code, shared, Daemon};
use common::openapi::{
    config, deploy_body, exercise, hello, lossy, module, percent_encode, Covers, Spec,
};
use hyper::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use wisp::api::FunctionConfig;
use wisp::client::Connection;

const B64: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::STANDARD;

/// Every test's declaration, for `the_tests_together_cover_the_spec`.
const ALL: [&Covers; 28] = [
    &HEALTHZ,
    &LIST,
    &DEPLOY,
    &GET,
    &INVOKE,
    &DELETE,
    &METRICS,
    &UNKNOWN_FUNCTIONS,
    &UNKNOWN_PATHS,
    &OTHER_METHODS,
    &BAD_NAMES,
    &BAD_JSON,
    &BAD_MODULE_ENCODING,
    &BAD_CONFIG,
    &BAD_MODULES,
    &REFUSED_DEPLOYS,
    &BODY_LIMITS,
    &FUNCTION_FAILURES,
    &CONCURRENCY_LIMIT,
    &MEMORY_BUDGET,
    &DEPLOY_FROM_IMAGE,
    &BAD_IMAGES,
    &BAD_HANDLER_DEPLOYS,
    &UNDECODABLE_NAMES,
    &RAW_REQUESTS,
    &VERSIONS,
    &ALIASES,
    &ROLLOUTS,
];

#[test]
fn the_spec_is_consistent() {
    Spec::load().self_check();
}

#[test]
fn the_tests_together_cover_the_spec() {
    let spec = Spec::load();
    let declared: BTreeSet<(String, String, String)> = ALL
        .iter()
        .flat_map(|c| c.statuses)
        .map(|s| {
            let parts: Vec<&str> = s.split(' ').collect();
            let [method, template, status] = parts[..] else {
                panic!("`{s}` is not \"METHOD /template status\"");
            };
            (template.into(), method.into(), status.into())
        })
        .collect();
    let documented = spec.all_statuses();
    let undocumented: Vec<_> = declared.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "declared statuses the spec lacks: {undocumented:?}"
    );

    let operations: BTreeSet<(String, String)> = declared
        .iter()
        .map(|(template, method, _)| (template.clone(), method.clone()))
        .collect();
    let missing: Vec<_> = spec
        .all_operations()
        .difference(&operations)
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "operations never exercised: {missing:?}"
    );

    // Every documented status but the host's own failures (500, 503 when
    // it runs out of resources, 507 on a full disk — tests/crash.rs) and
    // 408 (a 30 s body deadline).
    let unseen: Vec<_> = documented
        .difference(&declared)
        .filter(|(_, _, status)| !["408", "500", "503", "507"].contains(&status.as_str()))
        .collect();
    assert!(
        unseen.is_empty(),
        "documented statuses never seen: {unseen:?}"
    );

    // Every stable error code but those needing a broken guest or host.
    let codes: BTreeSet<String> = ALL
        .iter()
        .flat_map(|c| c.codes)
        .map(|c| c.to_string())
        .collect();
    let documented = spec.documented_codes();
    let unreached: BTreeSet<String> = [
        "function_crashed",
        "internal",
        "host_overloaded",
        // A lock held past the daemon's 30 s timeout: tests/images.rs.
        "image_store_busy",
        "insufficient_storage",
        "request_timeout",
        // A version registered but not brought back at start.
        "version_unavailable",
        // A registry that refuses, serves wrong bytes or breaks the
        // protocol: tests/registry.rs runs a real one.
        "registry_denied",
        "registry_digest_mismatch",
        "registry_error",
    ]
    .map(String::from)
    .into();
    let unseen: Vec<_> = documented
        .difference(&codes)
        .filter(|c| !unreached.contains(*c))
        .collect();
    assert!(unseen.is_empty(), "error codes never seen: {unseen:?}");
    let undocumented: Vec<_> = codes.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "undocumented error codes: {undocumented:?}"
    );
}

// ---------------------------------------------------------------------------
// The operations

const HEALTHZ: Covers = Covers {
    statuses: &["GET /healthz 200"],
    codes: &[],
};

#[test]
fn healthz() {
    exercise(&shared(), &HEALTHZ, async |api| {
        let r = api.call(Method::GET, "/healthz", "", 200).await;
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body, json!({"status": "ok"}));
        api.head("/healthz").await;
    });
}

const LIST: Covers = Covers {
    statuses: &["GET /v1/functions 200", "PUT /v1/functions/{name} 201"],
    codes: &[],
};

#[test]
fn list() {
    // A daemon of its own: the list must be exactly what this test made.
    exercise(&Daemon::start(), &LIST, async |api| {
        assert!(api.list().await.functions.is_empty());
        for name in ["hello", "exit"] {
            let body = deploy_body(&hello(), FunctionConfig::default());
            api.deploy(name, &body, 201).await;
        }
        let list = api.list().await;
        let names: Vec<_> = list.functions.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["exit", "hello"], "sorted by name");
        api.head("/v1/functions").await;
    });
}

/// Settings other than the defaults, for updates.
fn settings() -> FunctionConfig {
    config(|c| {
        c.memory_mib = 64;
        c.timeout_ms = 5000;
        c.concurrency = 8;
        c.max_ready = 4;
        c.reserved = 1;
        c.env.insert("GREETING".into(), "hi".into());
    })
}

const DEPLOY: Covers = Covers {
    statuses: &[
        "PUT /v1/functions/{name} 201",
        "PUT /v1/functions/{name} 200",
    ],
    codes: &[],
};

#[test]
fn deploy() {
    let hello = hello();
    exercise(&shared(), &DEPLOY, async |api| {
        // New (201), with every setting defaulted.
        let body = json!({ "module_base64": B64.encode(&hello) });
        let created = api.deploy("deployed", &body, 201).await;
        assert_eq!(created.version, 1);
        assert_eq!(created.config, FunctionConfig::default());
        assert_eq!(
            created.module_sha256,
            format!("{:x}", Sha256::digest(&hello))
        );
        // Update (200): a new version with the new settings.
        let updated = api
            .deploy("deployed", &deploy_body(&hello, settings()), 200)
            .await;
        assert_eq!(updated.version, 2);
        assert_eq!(updated.config, settings());
    });
}

const GET: Covers = Covers {
    statuses: &[
        "PUT /v1/functions/{name} 201",
        "PUT /v1/functions/{name} 200",
        "POST /v1/functions/{name}/invoke 200",
        "GET /v1/functions/{name} 200",
    ],
    codes: &[],
};

#[test]
fn get() {
    exercise(&shared(), &GET, async |api| {
        api.deploy(
            "got",
            &deploy_body(&hello(), FunctionConfig::default()),
            201,
        )
        .await;
        api.deploy("got", &deploy_body(&hello(), settings()), 200)
            .await;
        for _ in 0..2 {
            api.invoke("got", "", 200).await;
        }
        let got = api.get("got").await;
        assert_eq!(got.version, 2);
        assert_eq!(got.config, settings());
        assert_eq!(got.stats.invocations, 2);
        assert_eq!(got.stats.cold + got.stats.warm, 2);
        api.head("/v1/functions/got").await;
    });
}

const INVOKE: Covers = Covers {
    statuses: &[
        "PUT /v1/functions/{name} 201",
        "POST /v1/functions/{name}/invoke 200",
    ],
    codes: &[],
};

#[test]
fn invoke() {
    exercise(&shared(), &INVOKE, async |api| {
        // Stdout is the body; the x-wisp-* headers are there (the spec
        // check requires them).
        api.deploy(
            "invoked",
            &deploy_body(&hello(), FunctionConfig::default()),
            201,
        )
        .await;
        for _ in 0..2 {
            let r = api.invoke("invoked", "ignored stdin", 200).await;
            assert_eq!(&r.body[..], b"hello, world!\n");
            assert_eq!(r.header("x-wisp-exit-code"), Some("0"));
            assert_eq!(r.header("x-wisp-stderr"), None);
        }
        // A non-zero exit is still a 200; stderr comes back base64.
        let exit = deploy_body(&module("api_exit.wat"), FunctionConfig::default());
        api.deploy("exits", &exit, 201).await;
        let r = api.invoke("exits", "", 200).await;
        assert_eq!(&r.body[..], b"out\n");
        assert_eq!(r.header("x-wisp-exit-code"), Some("3"));
        let stderr = B64
            .decode(r.header("x-wisp-stderr").expect("x-wisp-stderr"))
            .expect("x-wisp-stderr is base64");
        assert_eq!(stderr, b"err\n");
    });
}

const DELETE: Covers = Covers {
    statuses: &[
        "PUT /v1/functions/{name} 201",
        "DELETE /v1/functions/{name} 204",
        "GET /v1/functions/{name} 404",
        "POST /v1/functions/{name}/invoke 404",
        "DELETE /v1/functions/{name} 404",
        "GET /v1/functions 200",
    ],
    codes: &["function_not_found"],
};

#[test]
fn delete() {
    let body = deploy_body(&hello(), FunctionConfig::default());
    exercise(&shared(), &DELETE, async |api| {
        api.deploy("deleted", &body, 201).await;
        api.call(Method::DELETE, "/v1/functions/deleted", "", 204)
            .await;
        // Gone for every operation.
        let gone = "function_not_found";
        let path = "/v1/functions/deleted";
        api.fail(Method::GET, path, "", 404, gone).await;
        api.fail(Method::POST, "/v1/functions/deleted/invoke", "", 404, gone)
            .await;
        api.fail(Method::DELETE, path, "", 404, gone).await;
        let list = api.list().await;
        assert!(list.functions.iter().all(|f| f.name != "deleted"));
        // Deployed again, it is new (201), and its versions go on from
        // the last one: a number is never given twice.
        let again = api.deploy("deleted", &body, 201).await;
        assert_eq!(again.version, 2);
    });
}

const METRICS: Covers = Covers {
    statuses: &[
        "PUT /v1/functions/{name} 201",
        "POST /v1/functions/{name}/invoke 200",
        "GET /metrics 200",
    ],
    codes: &[],
};

#[test]
fn metrics() {
    exercise(&shared(), &METRICS, async |api| {
        api.deploy(
            "counted",
            &deploy_body(&hello(), FunctionConfig::default()),
            201,
        )
        .await;
        api.invoke("counted", "", 200).await;
        // OpenMetrics text (`Api::metrics` checks the `# EOF`).
        let text = api.metrics().await;
        let needle = "wisp_invocations_total{function=\"counted\"";
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
        api.head("/metrics").await;
    });
}

// ---------------------------------------------------------------------------
// The error cases

const UNKNOWN_FUNCTIONS: Covers = Covers {
    statuses: &[
        "GET /v1/functions/{name} 404",
        "DELETE /v1/functions/{name} 404",
        "POST /v1/functions/{name}/invoke 404",
    ],
    codes: &["function_not_found"],
};

/// 404 for an unknown function, on every operation that names one.
#[test]
fn unknown_functions_are_404() {
    exercise(&shared(), &UNKNOWN_FUNCTIONS, async |api| {
        let gone = "function_not_found";
        api.fail(Method::GET, "/v1/functions/nope", "", 404, gone)
            .await;
        api.fail(Method::DELETE, "/v1/functions/nope", "", 404, gone)
            .await;
        api.fail(Method::POST, "/v1/functions/nope/invoke", "", 404, gone)
            .await;
        // ... and for names a deploy would refuse.
        api.fail(Method::GET, "/v1/functions/No-Such", "", 404, gone)
            .await;
    });
}

const UNKNOWN_PATHS: Covers = Covers {
    statuses: &[],
    codes: &["not_found"],
};

/// 404 for paths the daemon does not serve.
#[test]
fn unknown_paths_are_404() {
    exercise(&shared(), &UNKNOWN_PATHS, async |api| {
        for (method, path) in [
            (Method::GET, "/"),
            (Method::GET, "/nope"),
            (Method::GET, "/v1"),
            (Method::GET, "/v1/functions/"),
            (Method::GET, "/v1/functions/hello/"),
            (Method::POST, "/v1/functions/hello/run"),
            (Method::GET, "/v1/functions/hello/invoke/more"),
            (Method::GET, "/healthz/"),
        ] {
            let r = api.raw(&method, path, "").await;
            api.spec.check_not_found(&method, path, &r);
        }
    });
}

const OTHER_METHODS: Covers = Covers {
    statuses: &[],
    codes: &["method_not_allowed"],
};

/// 405 for methods a path does not take, with `Allow`.
#[test]
fn other_methods_are_405() {
    exercise(&shared(), &OTHER_METHODS, async |api| {
        for (method, path) in [
            (Method::POST, "/healthz"),
            (Method::PUT, "/metrics"),
            (Method::DELETE, "/v1/functions"),
            (Method::POST, "/v1/functions"),
            (Method::PATCH, "/v1/functions/hello"),
            (Method::POST, "/v1/functions/hello"),
            (Method::GET, "/v1/functions/hello/invoke"),
            (Method::PUT, "/v1/functions/hello/invoke"),
        ] {
            let r = api.raw(&method, path, "").await;
            api.spec.check_method_not_allowed(&method, path, &r);
        }
    });
}

const BAD_NAMES: Covers = Covers {
    statuses: &["PUT /v1/functions/{name} 400"],
    codes: &["invalid_name"],
};

/// 400 invalid_name: the name is checked first, before the body; the
/// spec's name schema agrees on what is a name.
#[test]
fn bad_names_are_400() {
    let long = "a".repeat(64);
    let longest = "a".repeat(63);
    exercise(&shared(), &BAD_NAMES, async |api| {
        let name_schema = api.spec.name_schema();
        for name in ["Hello", "-x", "_x", "a.b", "héllo", long.as_str()] {
            api.spec
                .assert_invalid(&name_schema, &Value::from(name), "the name parameter");
            let path = format!("/v1/functions/{}", percent_encode(name));
            api.fail(Method::PUT, &path, "not json", 400, "invalid_name")
                .await;
        }
        for name in ["a", "0", "a-b_c", longest.as_str()] {
            api.spec
                .assert_valid(&name_schema, &Value::from(name), "the name parameter");
        }
    });
}

const BAD_JSON: Covers = Covers {
    statuses: &["PUT /v1/functions/{name} 400"],
    codes: &["invalid_json"],
};

/// 400 invalid_json: not JSON, or not a DeployRequest (which the spec's
/// schema refuses too).
#[test]
fn bad_json_is_400() {
    let m = B64.encode(hello());
    exercise(&shared(), &BAD_JSON, async |api| {
        api.bad_deploy("x", b"not json", 400, "invalid_json", false)
            .await;
        api.bad_deploy("x", b"", 400, "invalid_json", false).await;
        for body in [
            json!({}),
            json!([]),
            json!({ "module_base64": m, "bogus": 1 }),
            json!({ "module_base64": m, "config": {} }),
            json!({ "module_base64": m, "memory_mib": "64" }),
            json!({ "module_base64": m, "memory_mib": -2 }),
            json!({ "module_base64": m, "memory_mib": 64.5 }),
            json!({ "module_base64": m, "timeout_ms": null }),
            json!({ "module_base64": m, "env": { "A": 1 } }),
            json!({ "module_base64": 5 }),
        ] {
            let body = serde_json::to_vec(&body).unwrap();
            api.bad_deploy("x", &body, 400, "invalid_json", true).await;
        }
    });
}

const BAD_MODULE_ENCODING: Covers = Covers {
    statuses: &["PUT /v1/functions/{name} 400"],
    codes: &["invalid_module_encoding"],
};

/// 400 invalid_module_encoding, checked before the settings.
#[test]
fn bad_module_encoding_is_400() {
    exercise(&shared(), &BAD_MODULE_ENCODING, async |api| {
        for body in [
            json!({ "module_base64": "not base64!" }),
            json!({ "module_base64": "AGFzbQ" }),
            json!({ "module_base64": "not base64!", "memory_mib": 17 }),
        ] {
            let body = serde_json::to_vec(&body).unwrap();
            api.bad_deploy("x", &body, 400, "invalid_module_encoding", false)
                .await;
        }
    });
}

const BAD_HANDLER_DEPLOYS: Covers = Covers {
    statuses: &[
        "PUT /v1/functions/{name} 400",
        "PUT /v1/functions/{name} 422",
        "GET /v1/functions/{name} 404",
    ],
    codes: &[
        "invalid_code_encoding",
        "invalid_config",
        "runtime_not_found",
        "invalid_handler",
        "invalid_code",
        "function_not_found",
    ],
};

/// The 400 and 422 codes of a handler deployed as code on a runtime
/// (docs/RUNTIMES.md) that a daemon without runtimes installed can reach;
/// tests/runtimes.rs covers the handlers that do not load.
#[test]
fn bad_handler_deploys_are_refused() {
    let code = wisp::runtimes::code_tar(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/runtimes/python"
    )))
    .unwrap();
    let code = B64.encode(code);
    let m = B64.encode(hello());
    exercise(&shared(), &BAD_HANDLER_DEPLOYS, async |api| {
        for (body, status, code, schema_too) in [
            (
                json!({ "runtime": "python3.12", "handler": "app.handler", "code_base64": "not base64!" }),
                400,
                "invalid_code_encoding",
                false,
            ),
            (
                json!({ "runtime": "python3.12", "code_base64": code }),
                400,
                "invalid_config",
                true,
            ),
            (
                json!({ "runtime": "python3.12", "handler": "app.handler", "module_base64": m }),
                400,
                "invalid_config",
                false,
            ),
            (
                json!({ "runtime": "cobol", "handler": "app.handler", "code_base64": code }),
                422,
                "runtime_not_found",
                true,
            ),
            (
                json!({ "runtime": "python3.12", "handler": "nodot", "code_base64": code }),
                422,
                "invalid_handler",
                true,
            ),
            (
                json!({ "runtime": "python3.12", "handler": "app.handler", "code_base64": B64.encode("not a tar") }),
                422,
                "invalid_code",
                false,
            ),
        ] {
            let body = serde_json::to_vec(&body).unwrap();
            api.bad_deploy("py-refused", &body, status, code, schema_too)
                .await;
        }
        // A well-formed deploy on a runtime whose image this daemon's
        // store does not hold.
        let body =
            json!({ "runtime": "python3.12", "handler": "handlers.echo", "code_base64": code });
        api.spec
            .assert_valid(&Spec::schema("DeployRequest"), &body, "deploy request");
        let body = serde_json::to_vec(&body).unwrap();
        let r = api
            .fail(
                Method::PUT,
                "/v1/functions/py-refused",
                body,
                422,
                "runtime_not_found",
            )
            .await;
        let message = r.error().unwrap().error.message;
        assert!(message.contains("scripts/build-runtimes"), "{message}");
        api.fail(
            Method::GET,
            "/v1/functions/py-refused",
            "",
            404,
            "function_not_found",
        )
        .await;
    });
}

const BAD_CONFIG: Covers = Covers {
    statuses: &["PUT /v1/functions/{name} 400"],
    codes: &["invalid_config"],
};

/// 400 invalid_config; the schema refuses each too, but for reserved >
/// max_ready, which it cannot express.
#[test]
fn bad_config_is_400() {
    type Change = fn(&mut FunctionConfig);
    let cases: [(Change, bool); 9] = [
        (|c| c.memory_mib = 17, true),
        (|c| c.memory_mib = 8, true),
        (|c| c.memory_mib = 4098, true),
        (|c| c.timeout_ms = 0, true),
        (|c| c.timeout_ms = 900_001, true),
        (|c| c.concurrency = 0, true),
        (|c| c.max_ready = 10_001, true),
        (
            |c| {
                c.reserved = 3;
                c.max_ready = 2;
            },
            false,
        ),
        (
            |c| {
                c.env.insert("A=B".into(), "x".into());
            },
            true,
        ),
    ];
    let mut bodies: Vec<(Value, bool)> = cases
        .into_iter()
        .map(|(change, schema_too)| (deploy_body(&hello(), config(change)), schema_too))
        .collect();
    let m = B64.encode(hello());
    bodies.push((json!({ "module_base64": m, "env": { "": "x" } }), true));
    exercise(&shared(), &BAD_CONFIG, async |api| {
        for (body, schema_too) in bodies {
            let body = serde_json::to_vec(&body).unwrap();
            api.bad_deploy("x", &body, 400, "invalid_config", schema_too)
                .await;
        }
    });
}

const BAD_MODULES: Covers = Covers {
    statuses: &["PUT /v1/functions/{name} 422"],
    codes: &["invalid_module", "init_timeout"],
};

/// 422 invalid_module: not a module, a non-WASI import, a failing init —
/// in requests the schema accepts; 422 init_timeout: a `wisp_init` slower
/// than `init_timeout_ms`.
#[test]
fn bad_modules_are_422() {
    let not_wasi = b"(module (import \"env\" \"f\" (func)) (func (export \"_start\")))";
    exercise(&shared(), &BAD_MODULES, async |api| {
        for module in [
            &b"\x00\x01garbage"[..],
            &b"(module"[..],
            &not_wasi[..],
            &module("init_trap.wat")[..],
        ] {
            let body = deploy_body(module, FunctionConfig::default());
            api.spec
                .assert_valid(&Spec::schema("DeployRequest"), &body, "deploy request");
            let body = serde_json::to_vec(&body).unwrap();
            api.fail(
                Method::PUT,
                "/v1/functions/bad",
                body,
                422,
                "invalid_module",
            )
            .await;
        }
        let slow = FunctionConfig {
            init_timeout_ms: 100,
            ..FunctionConfig::default()
        };
        let body = deploy_body(&module("slow_init.wat"), slow);
        api.spec
            .assert_valid(&Spec::schema("DeployRequest"), &body, "deploy request");
        let body = serde_json::to_vec(&body).unwrap();
        api.fail(Method::PUT, "/v1/functions/bad", body, 422, "init_timeout")
            .await;
    });
}

const REFUSED_DEPLOYS: Covers = Covers {
    statuses: &[
        "PUT /v1/functions/{name} 201",
        "PUT /v1/functions/{name} 200",
        "PUT /v1/functions/{name} 422",
        "GET /v1/functions/{name} 404",
        "GET /v1/functions/{name} 200",
    ],
    codes: &["invalid_module", "function_not_found"],
};

/// A refused deploy leaves nothing behind, and a refused update leaves the
/// old version serving.
#[test]
fn refused_deploys_change_nothing() {
    let broken = serde_json::to_vec(&deploy_body(b"(module", FunctionConfig::default())).unwrap();
    exercise(&shared(), &REFUSED_DEPLOYS, async |api| {
        let path = "/v1/functions/refused";
        api.fail(Method::PUT, path, broken.clone(), 422, "invalid_module")
            .await;
        api.fail(Method::GET, path, "", 404, "function_not_found")
            .await;

        api.deploy(
            "kept",
            &deploy_body(&hello(), FunctionConfig::default()),
            201,
        )
        .await;
        api.deploy("kept", &deploy_body(&hello(), settings()), 200)
            .await;
        let path = "/v1/functions/kept";
        api.fail(Method::PUT, path, broken, 422, "invalid_module")
            .await;
        assert_eq!(api.get("kept").await.version, 2);
    });
}

const BODY_LIMITS: Covers = Covers {
    statuses: &[
        "PUT /v1/functions/{name} 201",
        "POST /v1/functions/{name}/invoke 413",
        "POST /v1/functions/{name}/invoke 200",
        "PUT /v1/functions/{name} 413",
        "PUT /v1/functions/{name} 400",
    ],
    codes: &["body_too_large", "invalid_json"],
};

/// 413: one byte over each documented body limit; at the limit, read.
#[test]
fn bodies_over_the_limit_are_413() {
    exercise(&shared(), &BODY_LIMITS, async |api| {
        api.deploy(
            "limited",
            &deploy_body(&hello(), FunctionConfig::default()),
            201,
        )
        .await;
        let invoke_limit = api.spec.body_limit("/v1/functions/{name}/invoke", "post");
        assert_eq!(invoke_limit, 6 << 20);
        let path = "/v1/functions/limited/invoke";
        let over = vec![b'x'; invoke_limit + 1];
        api.fail(Method::POST, path, over, 413, "body_too_large")
            .await;
        let r = api.invoke("limited", vec![b'x'; invoke_limit], 200).await;
        assert_eq!(&r.body[..], b"hello, world!\n");

        let deploy_limit = api.spec.body_limit("/v1/functions/{name}", "put");
        assert_eq!(deploy_limit, 64 << 20);
        let path = "/v1/functions/big";
        let over = vec![b' '; deploy_limit + 1];
        api.fail(Method::PUT, path, over, 413, "body_too_large")
            .await;
        // Exactly at the limit the body is read (and is not a request).
        let at = vec![b' '; deploy_limit];
        api.fail(Method::PUT, path, at, 400, "invalid_json").await;
    });
}

const FUNCTION_FAILURES: Covers = Covers {
    statuses: &[
        "PUT /v1/functions/{name} 201",
        "POST /v1/functions/{name}/invoke 502",
        "POST /v1/functions/{name}/invoke 504",
        "GET /v1/functions/{name} 200",
        "GET /metrics 200",
    ],
    codes: &[
        "function_trapped",
        "function_out_of_memory",
        "function_output_limit",
        "function_timeout",
    ],
};

/// 502 and 504: the function's failures, counted by kind in the stats
/// and the metrics.
#[test]
fn function_failures_are_502_and_504() {
    exercise(&shared(), &FUNCTION_FAILURES, async |api| {
        let trap = deploy_body(&module("trap.wat"), FunctionConfig::default());
        api.deploy("trap", &trap, 201).await;
        let r = api
            .fail(
                Method::POST,
                "/v1/functions/trap/invoke",
                "",
                502,
                "function_trapped",
            )
            .await;
        let message = r.error().unwrap().error.message;
        assert!(message.contains("unreachable"), "{message}");
        let trap = api.get("trap").await;
        assert_eq!((trap.stats.invocations, trap.stats.errors), (1, 1));

        let hog = deploy_body(&module("memory_hog.wat"), config(|c| c.memory_mib = 32));
        api.deploy("hog", &hog, 201).await;
        let path = "/v1/functions/hog/invoke";
        api.fail(Method::POST, path, "", 502, "function_out_of_memory")
            .await;

        let flood = deploy_body(&module("flood.wat"), FunctionConfig::default());
        api.deploy("flood", &flood, 201).await;
        let path = "/v1/functions/flood/invoke";
        api.fail(Method::POST, path, "", 502, "function_output_limit")
            .await;

        let spin = deploy_body(&module("spin.wat"), config(|c| c.timeout_ms = 200));
        api.deploy("spin", &spin, 201).await;
        let t0 = Instant::now();
        let path = "/v1/functions/spin/invoke";
        api.fail(Method::POST, path, "", 504, "function_timeout")
            .await;
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(5),
            "{took:?}"
        );

        let text = api.metrics().await;
        for needle in [
            "function=\"trap\",kind=\"function_trapped\"",
            "function=\"spin\",kind=\"function_timeout\"",
        ] {
            assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
        }
    });
}

const CONCURRENCY_LIMIT: Covers = Covers {
    statuses: &[
        "PUT /v1/functions/{name} 201",
        "POST /v1/functions/{name}/invoke 200",
        "POST /v1/functions/{name}/invoke 429",
        "GET /v1/functions/{name} 200",
        "GET /metrics 200",
    ],
    codes: &["concurrency_limit"],
};

/// 429 concurrency_limit: one slot, one queue place; six at once on their
/// own connections while the first sleeps 500 ms.
#[test]
fn concurrency_limit_is_429() {
    let daemon = shared();
    exercise(&daemon, &CONCURRENCY_LIMIT, async |api| {
        let slow = deploy_body(&module("api_sleep.wat"), config(|c| c.concurrency = 1));
        api.deploy("slow", &slow, 201).await;
        let path = "/v1/functions/slow/invoke";
        let mut connections = Vec::new();
        for _ in 0..6 {
            connections.push(Connection::open(&daemon.socket).await.expect("connect"));
        }
        let tasks: Vec<_> = connections
            .into_iter()
            .map(|mut c| {
                tokio::spawn(async move {
                    c.send(Method::POST, path, Bytes::new())
                        .await
                        .expect("invoke slow")
                })
            })
            .collect();
        let mut ok = Vec::new();
        let mut refused = 0;
        for task in tasks {
            let r = task.await.expect("invocation task");
            api.spec.check(&Method::POST, path, &r);
            match r.status {
                200 => ok.push(r),
                429 => {
                    assert_eq!(code(&r), "concurrency_limit");
                    assert_eq!(r.header("retry-after"), Some("1"));
                    refused += 1;
                }
                status => panic!("slow: unexpected {status}: {}", lossy(&r.body)),
            }
        }
        assert_eq!(
            (ok.len(), refused),
            (2, 4),
            "one runs, one queues, four refused"
        );
        for r in &ok {
            assert_eq!(&r.body[..], b"awake\n");
        }
        let queued_us: Vec<u64> = ok
            .iter()
            .map(|r| r.header("x-wisp-queue-us").unwrap().parse().unwrap())
            .collect();
        assert!(
            queued_us.iter().any(|&us| us >= 300_000),
            "the queued request waited for the first: {queued_us:?}"
        );
        let slow = api.get("slow").await;
        assert_eq!((slow.stats.invocations, slow.stats.rejected), (2, 4));
        assert_eq!((slow.instances.busy, slow.instances.queued), (0, 0));
        let text = api.metrics().await;
        let needle = "function=\"slow\",kind=\"concurrency_limit\"";
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    });
}

const MEMORY_BUDGET: Covers = Covers {
    statuses: &[
        "PUT /v1/functions/{name} 201",
        "PUT /v1/functions/{name} 429",
        "POST /v1/functions/{name}/invoke 429",
        "GET /v1/functions/{name} 200",
    ],
    codes: &["memory_budget"],
};

/// 429 memory_budget: a run, and a deploy's boot, are each charged all of
/// their guest memory; a daemon with room for one running instance of
/// 256 MiB refuses a second while the first runs.
#[test]
fn memory_budget_refusal_matches_the_spec() {
    let daemon = Daemon::start_with(&["--memory-budget", "400M"]);
    exercise(&daemon, &MEMORY_BUDGET, async |api| {
        let big = FunctionConfig {
            memory_mib: 256,
            ..FunctionConfig::default()
        };
        let sleeper = deploy_body(&module("api_sleep.wat"), big.clone());
        api.deploy("sleeper", &sleeper, 201).await;
        api.deploy("hello", &deploy_body(&hello(), big.clone()), 201)
            .await;
        // The sleeper runs for 500 ms, charged its 256 MiB meanwhile.
        let client = daemon.client();
        let running = tokio::spawn(async move {
            client
                .request(Method::POST, "/v1/functions/sleeper/invoke", Bytes::new())
                .await
                .unwrap()
        });
        while api.get("sleeper").await.instances.busy == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let path = "/v1/functions/hello/invoke";
        let r = api.fail(Method::POST, path, "", 429, "memory_budget").await;
        assert_eq!(r.header("retry-after"), Some("1"));
        let info = api.get("hello").await;
        assert_eq!((info.stats.invocations, info.stats.rejected), (0, 1));
        let body = serde_json::to_vec(&deploy_body(&hello(), big)).unwrap();
        let r = api
            .fail(
                Method::PUT,
                "/v1/functions/hello-2",
                body,
                429,
                "memory_budget",
            )
            .await;
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(running.await.unwrap().status, 200);
    });
}

const UNDECODABLE_NAMES: Covers = Covers {
    statuses: &[
        "GET /v1/functions/{name} 404",
        "DELETE /v1/functions/{name} 404",
        "PUT /v1/functions/{name} 400",
        "POST /v1/functions/{name}/invoke 404",
    ],
    codes: &["function_not_found", "invalid_name"],
};

/// A name that is not UTF-8 once percent-decoded gets the API's error
/// JSON like any other bad name.
#[test]
fn undecodable_names_get_error_json() {
    exercise(&shared(), &UNDECODABLE_NAMES, async |api| {
        for (method, path) in [
            (Method::GET, "/v1/functions/%FF"),
            (Method::DELETE, "/v1/functions/%FF"),
            (Method::PUT, "/v1/functions/%FF"),
            (Method::POST, "/v1/functions/%FF/invoke"),
        ] {
            let r = api.raw(&method, path, "{}").await;
            api.spec.check(&method, path, &r);
        }
    });
}

// ---------------------------------------------------------------------------
// Images

const DEPLOY_FROM_IMAGE: Covers = Covers {
    statuses: &[
        "PUT /v1/functions/{name} 201",
        "POST /v1/functions/{name}/invoke 200",
        "PUT /v1/functions/{name} 200",
        "DELETE /v1/functions/{name} 204",
    ],
    codes: &[],
};

/// Deploying by image reference pins the image for the function until it
/// is deleted.
#[test]
fn deploy_from_an_image() {
    let daemon = shared();
    let images = wisp_images::Store::open(&daemon.state.join("images")).expect("image store");
    let tag = wisp_images::Tag::parse("hello-img:1").unwrap();
    let wasm = wat::parse_bytes(&hello()).unwrap().into_owned();
    let image = images
        .build(&wasm, None, Some(&tag))
        .expect("build an image");
    exercise(&daemon, &DEPLOY_FROM_IMAGE, async |api| {
        let body = json!({ "image": "hello-img:1" });
        let deployed = api.deploy("from-image", &body, 201).await;
        let source = deployed.image.expect("FunctionInfo.image");
        assert_eq!(source.reference, "hello-img:1");
        assert_eq!(source.digest, image.digest().to_string());
        assert_eq!(deployed.module_sha256, image.module_digest().hex());
        assert_eq!(images.pins().unwrap()["from-image"], *image.digest());
        let r = api.invoke("from-image", "", 200).await;
        assert_eq!(&r.body[..], b"hello, world!\n");
        // By digest prefix too (an update: 200).
        let body = json!({ "image": image.digest().short() });
        api.deploy("from-image", &body, 200).await;

        // Deleting the function drops its pin.
        api.call(Method::DELETE, "/v1/functions/from-image", "", 204)
            .await;
        assert!(!images.pins().unwrap().contains_key("from-image"));
    });
}

const BAD_IMAGES: Covers = Covers {
    statuses: &[
        "PUT /v1/functions/{name} 400",
        "PUT /v1/functions/{name} 422",
        "PUT /v1/functions/{name} 500",
        "PUT /v1/functions/{name} 502",
        "GET /v1/functions/{name} 404",
    ],
    codes: &[
        "invalid_json",
        "invalid_image_reference",
        "image_not_found",
        "registry_unreachable",
        "image_corrupt",
        "invalid_image",
        "function_not_found",
    ],
};

/// The 400, 422, 500 and 502 codes images add.
#[test]
fn bad_image_deploys_are_refused() {
    let daemon = shared();
    let m = B64.encode(hello());
    exercise(&daemon, &BAD_IMAGES, async |api| {
        for (body, code, schema_too) in [
            (
                json!({ "image": "hello-img:1", "module_base64": m }),
                "invalid_json",
                true,
            ),
            (json!({ "image": 1 }), "invalid_json", true),
            (json!({ "image": "" }), "invalid_image_reference", true),
            (
                json!({ "image": "Not A Ref" }),
                "invalid_image_reference",
                false,
            ),
            (
                json!({ "image": "sha256:zz" }),
                "invalid_image_reference",
                false,
            ),
        ] {
            let body = serde_json::to_vec(&body).unwrap();
            api.bad_deploy("x", &body, 400, code, schema_too).await;
        }
        let body = json!({ "image": "nope:1" });
        api.spec
            .assert_valid(&Spec::schema("DeployRequest"), &body, "deploy request");
        let body = serde_json::to_vec(&body).unwrap();
        api.fail(Method::PUT, "/v1/functions/x", body, 422, "image_not_found")
            .await;
        // A registry reference whose registry nobody listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let body = serde_json::to_vec(&json!({ "image": format!("127.0.0.1:{closed}/team/fn:1") }))
            .unwrap();
        api.fail(
            Method::PUT,
            "/v1/functions/x",
            body,
            502,
            "registry_unreachable",
        )
        .await;

        // A flipped byte in the module blob: refused, nothing deployed,
        // the blob quarantined, no pin left behind.
        let images = wisp_images::Store::open(&daemon.state.join("images")).expect("image store");
        let tag = wisp_images::Tag::parse("broken:1").unwrap();
        let wasm = wat::parse_bytes(&module("api_exit.wat"))
            .unwrap()
            .into_owned();
        let broken = images.build(&wasm, None, Some(&tag)).unwrap();
        let blob = images.blobs().path(&broken.module_digest());
        let mut bytes = std::fs::read(&blob).unwrap();
        bytes[10] ^= 0x01;
        std::fs::write(&blob, bytes).unwrap();
        let body = serde_json::to_vec(&json!({ "image": "broken:1" })).unwrap();
        let path = "/v1/functions/broken";
        let r = api
            .fail(Method::PUT, path, body, 500, "image_corrupt")
            .await;
        let message = r.error().unwrap().error.message;
        let digest = broken.module_digest().to_string();
        assert!(message.contains(&digest), "{message}");
        api.fail(Method::GET, path, "", 404, "function_not_found")
            .await;
        assert!(!images.pins().unwrap().contains_key("broken"));

        // A file layer escaping the image, in a store written behind
        // import's back: refused as the daemon reads it, nothing deployed.
        let layer = common::oci::raw_tar(&[("../escape", tar::EntryType::Regular, b"x")]);
        let planted = common::oci::plant_image(&images, &wasm, &layer);
        let body = serde_json::to_vec(&json!({ "image": planted })).unwrap();
        let r = api
            .fail(
                Method::PUT,
                "/v1/functions/bad-layer",
                body,
                422,
                "invalid_image",
            )
            .await;
        let message = r.error().unwrap().error.message;
        assert!(message.contains("entry `../escape`"), "{message}");
    });
}

const RAW_REQUESTS: Covers = Covers {
    statuses: &[
        "PUT /v1/functions/{name} 400",
        "POST /v1/functions/{name}/invoke 400",
    ],
    codes: &[
        "invalid_body",
        "bad_request",
        "headers_too_large",
        "uri_too_long",
    ],
};

/// What only a raw socket can send: malformed bodies (an operation's 400)
/// and requests hyper cannot parse (JSON errors of no operation).
#[test]
fn raw_requests_get_json_errors() {
    let daemon = shared();
    exercise(&daemon, &RAW_REQUESTS, async |api| {
        let send =
            |request: &[u8]| common::raw::parse(&common::raw::exchange(&daemon.socket, request).0);
        for (method, path) in [
            (Method::PUT, "/v1/functions/raw"),
            (Method::POST, "/v1/functions/raw/invoke"),
        ] {
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: wisp\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n"
            );
            let r = send(request.as_bytes());
            api.spec.check(&method, path, &r);
            assert_eq!((r.status, code(&r).as_str()), (400, "invalid_body"));
        }
        let many_headers: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        for (request, component, status, error) in [
            (
                "GET /healthz HTTP/1.1\r\nHost: wisp\r\nno colon\r\n\r\n".to_string(),
                "BadRequest",
                400,
                "bad_request",
            ),
            (
                format!("GET /healthz HTTP/1.1\r\nHost: wisp\r\n{many_headers}\r\n"),
                "HeadersTooLarge",
                431,
                "headers_too_large",
            ),
            (
                format!("GET /{} HTTP/1.1\r\nHost: wisp\r\n\r\n", "a".repeat(65535)),
                "UriTooLong",
                414,
                "uri_too_long",
            ),
        ] {
            let r = send(request.as_bytes());
            assert_eq!(r.status, status, "{component}: {}", lossy(&r.body));
            api.spec.check_component(component, &r);
            assert_eq!(code(&r), error, "{component}");
        }
    });
}

// ---------------------------------------------------------------------------
// Versions, aliases and rollouts

const VERSIONS: Covers = Covers {
    statuses: &[
        "PUT /v1/functions/{name} 201",
        "PUT /v1/functions/{name} 200",
        "GET /v1/functions/{name}/versions 200",
        "GET /v1/functions/{name}/versions 404",
        "DELETE /v1/functions/{name}/versions/{version} 204",
        "DELETE /v1/functions/{name}/versions/{version} 404",
        "DELETE /v1/functions/{name}/versions/{version} 409",
        "PUT /v1/functions/{name}/aliases/{alias} 201",
        "POST /v1/functions/{name}/invoke 200",
        "POST /v1/functions/{name}/invoke 400",
        "POST /v1/functions/{name}/invoke 404",
        "GET /v1/functions/{name} 200",
    ],
    codes: &[
        "function_not_found",
        "version_not_found",
        "alias_not_found",
        "version_aliased",
        "invalid_query",
    ],
};

/// Versions: listed, invoked by number, deleted unless aliased.
#[test]
fn versions() {
    let body = deploy_body(&hello(), FunctionConfig::default());
    exercise(&shared(), &VERSIONS, async |api| {
        api.deploy("versioned", &body, 201).await;
        api.deploy("versioned", &body, 200).await;
        let r = api
            .call(Method::GET, "/v1/functions/versioned/versions", "", 200)
            .await;
        let list: wisp::api::VersionList = serde_json::from_slice(&r.body).unwrap();
        let numbers: Vec<u64> = list.versions.iter().map(|v| v.version).collect();
        assert_eq!(numbers, [1, 2]);
        assert_eq!(list.versions[1].aliases, ["live"]);
        let got = api.get("versioned").await;
        assert_eq!((got.version, got.versions), (2, vec![1, 2]));
        // Invoked by number, by alias and by default.
        for (query, version, alias) in [
            ("?qualifier=1", "1", None),
            ("?qualifier=live", "2", Some("live")),
            ("", "2", Some("live")),
        ] {
            let path = format!("/v1/functions/versioned/invoke{query}");
            let r = api.call(Method::POST, &path, "", 200).await;
            assert_eq!(r.header("x-wisp-version"), Some(version), "{query}");
            assert_eq!(r.header("x-wisp-alias"), alias, "{query}");
        }
        let invoke = "/v1/functions/versioned/invoke";
        api.fail(
            Method::POST,
            &format!("{invoke}?qualifier=7"),
            "",
            404,
            "version_not_found",
        )
        .await;
        api.fail(
            Method::POST,
            &format!("{invoke}?qualifier=beta"),
            "",
            404,
            "alias_not_found",
        )
        .await;
        api.fail(
            Method::POST,
            &format!("{invoke}?qualifier=1&qualifier=2"),
            "",
            400,
            "invalid_query",
        )
        .await;
        // An aliased version stays; an unaliased one goes, once.
        let aliased = json!({"version": 1});
        api.call(
            Method::PUT,
            "/v1/functions/versioned/aliases/old",
            aliased.to_string(),
            201,
        )
        .await;
        for v in [1, 2] {
            let path = format!("/v1/functions/versioned/versions/{v}");
            api.fail(Method::DELETE, &path, "", 409, "version_aliased")
                .await;
        }
        api.deploy("versioned", &body, 200).await;
        let path = "/v1/functions/versioned/versions/2";
        api.call(Method::DELETE, path, "", 204).await;
        api.fail(Method::DELETE, path, "", 404, "version_not_found")
            .await;
        api.fail(
            Method::DELETE,
            "/v1/functions/versioned/versions/x",
            "",
            404,
            "version_not_found",
        )
        .await;
        api.fail(
            Method::DELETE,
            "/v1/functions/nope/versions/1",
            "",
            404,
            "function_not_found",
        )
        .await;
        api.fail(
            Method::GET,
            "/v1/functions/nope/versions",
            "",
            404,
            "function_not_found",
        )
        .await;
    });
}

const ALIASES: Covers = Covers {
    statuses: &[
        "PUT /v1/functions/{name} 201",
        "PUT /v1/functions/{name} 200",
        "PUT /v1/functions/{name}/aliases/{alias} 201",
        "PUT /v1/functions/{name}/aliases/{alias} 200",
        "PUT /v1/functions/{name}/aliases/{alias} 400",
        "PUT /v1/functions/{name}/aliases/{alias} 404",
        "PUT /v1/functions/{name}/aliases/{alias} 413",
        "GET /v1/functions/{name}/aliases/{alias} 200",
        "GET /v1/functions/{name}/aliases/{alias} 404",
        "GET /v1/functions/{name}/aliases 200",
        "GET /v1/functions/{name}/aliases 404",
        "DELETE /v1/functions/{name}/aliases/{alias} 204",
        "DELETE /v1/functions/{name}/aliases/{alias} 404",
        "DELETE /v1/functions/{name}/aliases/{alias} 409",
        "GET /v1/functions/{name} 200",
    ],
    codes: &[
        "function_not_found",
        "version_not_found",
        "alias_not_found",
        "invalid_alias",
        "invalid_json",
        "live_alias_required",
        "body_too_large",
    ],
};

/// Aliases: created, moved, split, listed, refused and deleted.
#[test]
fn aliases() {
    let body = deploy_body(&hello(), FunctionConfig::default());
    exercise(&shared(), &ALIASES, async |api| {
        api.deploy("aliased", &body, 201).await;
        api.deploy("aliased", &body, 200).await;
        let path = "/v1/functions/aliased/aliases/canary";
        let split =
            json!({"version": 1, "additional": {"version": 2, "weight": 10}, "reserved": 1});
        api.spec
            .assert_valid(&Spec::schema("AliasRouting"), &split, "a split");
        let r = api.call(Method::PUT, path, split.to_string(), 201).await;
        let info: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(info["name"], "canary");
        assert_eq!(info["additional"]["weight"], 10);
        let moved = json!({"version": 2});
        api.call(Method::PUT, path, moved.to_string(), 200).await;
        let r = api.call(Method::GET, path, "", 200).await;
        let info: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(info, json!({"name": "canary", "version": 2}));
        let r = api
            .call(Method::GET, "/v1/functions/aliased/aliases", "", 200)
            .await;
        let list: wisp::api::AliasList = serde_json::from_slice(&r.body).unwrap();
        let names: Vec<_> = list.aliases.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["canary", "live"]);
        assert_eq!(api.get("aliased").await.aliases, list.aliases);
        // Refused.
        for (bad, code) in [
            (
                json!({"version": 1, "additional": {"version": 2, "weight": 101}}),
                "invalid_alias",
            ),
            (
                json!({"version": 1, "additional": {"version": 1, "weight": 5}}),
                "invalid_alias",
            ),
            (
                json!({"version": 1, "reserved": 5, "max_ready": 2}),
                "invalid_alias",
            ),
            (json!({"version": 1, "bogus": 1}), "invalid_json"),
            (
                json!({"additional": {"version": 1, "weight": 5}}),
                "invalid_json",
            ),
        ] {
            api.fail(Method::PUT, path, bad.to_string(), 400, code)
                .await;
        }
        api.fail(Method::PUT, path, "not json", 400, "invalid_json")
            .await;
        api.fail(
            Method::PUT,
            "/v1/functions/aliased/aliases/12",
            moved.to_string(),
            400,
            "invalid_alias",
        )
        .await;
        api.fail(
            Method::PUT,
            path,
            json!({"version": 9}).to_string(),
            404,
            "version_not_found",
        )
        .await;
        api.fail(
            Method::PUT,
            "/v1/functions/nope/aliases/canary",
            moved.to_string(),
            404,
            "function_not_found",
        )
        .await;
        let limit = api
            .spec
            .body_limit("/v1/functions/{name}/aliases/{alias}", "put");
        assert_eq!(limit, 64 << 10);
        api.fail(
            Method::PUT,
            path,
            vec![b' '; limit + 1],
            413,
            "body_too_large",
        )
        .await;
        api.fail(
            Method::GET,
            "/v1/functions/aliased/aliases/beta",
            "",
            404,
            "alias_not_found",
        )
        .await;
        api.fail(
            Method::GET,
            "/v1/functions/nope/aliases",
            "",
            404,
            "function_not_found",
        )
        .await;
        // Deleted; `live` stays.
        api.call(Method::DELETE, path, "", 204).await;
        api.fail(Method::DELETE, path, "", 404, "alias_not_found")
            .await;
        api.fail(
            Method::DELETE,
            "/v1/functions/aliased/aliases/live",
            "",
            409,
            "live_alias_required",
        )
        .await;
    });
}

const ROLLOUTS: Covers = Covers {
    statuses: &[
        "PUT /v1/functions/{name} 201",
        "PUT /v1/functions/{name} 200",
        "PUT /v1/functions/{name}/aliases/{alias} 200",
        "PUT /v1/functions/{name}/aliases/{alias} 201",
        "POST /v1/functions/{name}/rollout 201",
        "POST /v1/functions/{name}/rollout 400",
        "POST /v1/functions/{name}/rollout 404",
        "POST /v1/functions/{name}/rollout 409",
        "POST /v1/functions/{name}/rollout 413",
        "GET /v1/functions/{name}/rollout 200",
        "GET /v1/functions/{name}/rollout 404",
        "DELETE /v1/functions/{name}/rollout 200",
        "DELETE /v1/functions/{name}/rollout 404",
        "DELETE /v1/functions/{name}/rollout 409",
        "GET /v1/functions/{name}/aliases/{alias} 200",
    ],
    codes: &[
        "function_not_found",
        "version_not_found",
        "alias_not_found",
        "rollout_not_found",
        "invalid_rollout",
        "invalid_alias",
        "invalid_json",
        "rollout_running",
        "alias_split",
        "already_there",
        "rollout_not_running",
        "body_too_large",
    ],
};

/// Rollouts: started, shown, refused and cancelled (tests/versions.rs
/// drives them to their end under load).
#[test]
fn rollouts() {
    let body = deploy_body(&hello(), FunctionConfig::default());
    exercise(&shared(), &ROLLOUTS, async |api| {
        let path = "/v1/functions/rolled/rollout";
        api.deploy("rolled", &body, 201).await;
        api.fail(Method::GET, path, "", 404, "rollout_not_found")
            .await;
        api.fail(Method::DELETE, path, "", 404, "rollout_not_found")
            .await;
        api.deploy("rolled", &body, 200).await;
        let live = "/v1/functions/rolled/aliases/live";
        api.call(Method::PUT, live, json!({"version": 1}).to_string(), 200)
            .await;
        // Refused before anything moves.
        for (bad, status, code) in [
            (json!({"to": 2, "steps": [50]}), 400, "invalid_rollout"),
            (
                json!({"to": 2, "steps": [50, 25, 100]}),
                400,
                "invalid_rollout",
            ),
            (json!({"to": 2, "interval_ms": 0}), 400, "invalid_rollout"),
            (
                json!({"to": 2, "max_error_rate": 2.0}),
                400,
                "invalid_rollout",
            ),
            (json!({"to": 2, "alias": "12"}), 400, "invalid_alias"),
            (json!({"to": 2, "bogus": 1}), 400, "invalid_json"),
            (json!({"to": 9}), 404, "version_not_found"),
            (json!({"to": 2, "alias": "beta"}), 404, "alias_not_found"),
            (json!({"to": 1}), 409, "already_there"),
        ] {
            api.fail(Method::POST, path, bad.to_string(), status, code)
                .await;
        }
        let limit = api.spec.body_limit("/v1/functions/{name}/rollout", "post");
        api.fail(
            Method::POST,
            path,
            vec![b' '; limit + 1],
            413,
            "body_too_large",
        )
        .await;
        api.fail(
            Method::POST,
            "/v1/functions/nope/rollout",
            json!({"to": 2}).to_string(),
            404,
            "function_not_found",
        )
        .await;
        let split = json!({"version": 1, "additional": {"version": 2, "weight": 5}});
        api.call(
            Method::PUT,
            "/v1/functions/rolled/aliases/canary",
            split.to_string(),
            201,
        )
        .await;
        let request = json!({"to": 2, "alias": "canary"});
        api.fail(Method::POST, path, request.to_string(), 409, "alias_split")
            .await;
        // A long first step, cancelled.
        let request = json!({"to": 2, "steps": [10, 100], "interval_ms": 600000});
        api.spec
            .assert_valid(&Spec::schema("RolloutRequest"), &request, "a rollout");
        let r = api.call(Method::POST, path, request.to_string(), 201).await;
        let started: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            (&started["state"], &started["step"]),
            (&json!("running"), &json!(0))
        );
        let r = api.call(Method::GET, live, "", 200).await;
        let routing: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(routing["additional"], json!({"version": 2, "weight": 10}));
        api.fail(
            Method::POST,
            path,
            json!({"to": 2}).to_string(),
            409,
            "rollout_running",
        )
        .await;
        let r = api.call(Method::GET, path, "", 200).await;
        let shown: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(shown["state"], "running");
        let r = api.call(Method::DELETE, path, "", 200).await;
        let cancelled: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(cancelled["state"], "cancelled");
        let r = api.call(Method::GET, live, "", 200).await;
        let routing: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(routing, json!({"name": "live", "version": 1}));
        api.fail(Method::DELETE, path, "", 409, "rollout_not_running")
            .await;
        // One step of 100: done at once.
        let r = api
            .call(
                Method::POST,
                path,
                json!({"to": 2, "steps": [100]}).to_string(),
                201,
            )
            .await;
        let done: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(done["state"], "completed");
    });
}
