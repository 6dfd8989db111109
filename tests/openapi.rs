//! The daemon against `openapi.yaml`: a real `wisp serve` is driven through
//! every documented operation and every status code that can be reached
//! deterministically, and each response is checked against the spec — the
//! operation exists for the method and path template, the status is
//! documented for it, the content type matches, the documented required
//! headers are there and valid, and a JSON body validates against the
//! documented schema. At the end every operation in the spec must have been
//! exercised.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use common::daemon::Daemon;
use hyper::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use wisp::api::{DeployRequest, FunctionConfig, FunctionInfo, FunctionList};
use wisp::client::{Client, Connection, Response};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The HTTP methods an OpenAPI path item may have operations for.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

// ---------------------------------------------------------------------------
// The daemon

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

// ---------------------------------------------------------------------------
// The spec

/// `openapi.yaml`, and what the test has exercised of it.
struct Spec {
    doc: Value,
    /// (path template, METHOD) of every checked operation response.
    operations: Mutex<BTreeSet<(String, String)>>,
    /// (path template, METHOD, status) of every checked operation response.
    statuses: Mutex<BTreeSet<(String, String, String)>>,
    /// Every error code seen in a response.
    codes: Mutex<BTreeSet<String>>,
}

impl Spec {
    fn load() -> Spec {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
        let text = std::fs::read_to_string(path).expect("read openapi.yaml");
        let doc: Value = serde_yaml_ng::from_str(&text).expect("openapi.yaml is not valid YAML");
        Spec {
            doc,
            operations: Mutex::default(),
            statuses: Mutex::default(),
            codes: Mutex::default(),
        }
    }

    /// Follows `$ref`s (local JSON pointers) to the object they name.
    fn resolve<'a>(&'a self, mut value: &'a Value) -> &'a Value {
        while let Some(r) = value.get("$ref").and_then(Value::as_str) {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("openapi.yaml: non-local $ref {r}"));
            value = self
                .doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("openapi.yaml: dangling $ref {r}"));
        }
        value
    }

    /// A JSON Schema 2020-12 validator for `schema`, its `$ref`s resolved
    /// against the spec's `components`.
    fn validator(&self, schema: &Value) -> jsonschema::Validator {
        let root = json!({
            "components": self.doc["components"],
            "allOf": [schema],
        });
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&root)
            .unwrap_or_else(|e| panic!("openapi.yaml: invalid schema {schema}: {e}"))
    }

    fn errors(&self, schema: &Value, instance: &Value) -> Vec<String> {
        self.validator(schema)
            .iter_errors(instance)
            .map(|e| format!("{e} (at `{}`)", e.instance_path))
            .collect()
    }

    fn assert_valid(&self, schema: &Value, instance: &Value, what: &str) {
        let errors = self.errors(schema, instance);
        assert!(
            errors.is_empty(),
            "{what}: does not match the spec:\n  {}\ninstance: {}",
            errors.join("\n  "),
            lossy(instance.to_string().as_bytes())
        );
    }

    fn assert_invalid(&self, schema: &Value, instance: &Value, what: &str) {
        assert!(
            !self.errors(schema, instance).is_empty(),
            "{what}: the spec's schema accepts {}, which the daemon refuses",
            lossy(instance.to_string().as_bytes())
        );
    }

    fn schema(name: &str) -> Value {
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    fn paths(&self) -> &serde_json::Map<String, Value> {
        self.doc["paths"].as_object().expect("openapi.yaml: paths")
    }

    /// Every (path template, METHOD) the spec has an operation for.
    fn all_operations(&self) -> BTreeSet<(String, String)> {
        let mut all = BTreeSet::new();
        for (template, item) in self.paths() {
            for method in METHODS {
                if item.get(method).is_some() {
                    all.insert((template.clone(), method.to_ascii_uppercase()));
                }
            }
        }
        all
    }

    /// Every (path template, METHOD, status) the spec documents.
    fn all_statuses(&self) -> BTreeSet<(String, String, String)> {
        let mut all = BTreeSet::new();
        for (template, method) in self.all_operations() {
            let op = &self.doc["paths"][&template][method.to_ascii_lowercase()];
            for status in op["responses"].as_object().expect("responses").keys() {
                all.insert((template.clone(), method.clone(), status.clone()));
            }
        }
        all
    }

    /// The path template `path` matches (the most literal one if several
    /// do); a parameter matches one non-empty segment.
    fn template(&self, path: &str) -> Option<String> {
        let path = path.split('?').next().unwrap_or_default();
        let segments: Vec<&str> = path.split('/').collect();
        self.paths()
            .keys()
            .filter_map(|template| {
                let parts: Vec<&str> = template.split('/').collect();
                if parts.len() != segments.len() {
                    return None;
                }
                let mut literal = 0;
                for (part, segment) in parts.iter().zip(&segments) {
                    if part.starts_with('{') && part.ends_with('}') {
                        if segment.is_empty() {
                            return None;
                        }
                    } else if part == segment {
                        literal += 1;
                    } else {
                        return None;
                    }
                }
                Some((literal, template))
            })
            .max()
            .map(|(_, template)| template.clone())
    }

    /// Checks a response to `method path` against the spec's operation.
    fn check(&self, method: &Method, path: &str, r: &Response) {
        let what = format!("{method} {path} → {}", r.status);
        let template = self
            .template(path)
            .unwrap_or_else(|| panic!("{what}: the spec has no such path"));
        let op = &self.doc["paths"][&template][method.as_str().to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "{what}: the spec has no {method} operation on {template}"
        );
        let status = r.status.to_string();
        let responses = &op["responses"];
        let response = [
            status.clone(),
            format!("{}XX", r.status / 100),
            "default".to_string(),
        ]
        .iter()
        .find_map(|key| responses.get(key))
        .unwrap_or_else(|| {
            panic!(
                "{what}: status not documented for {method} {template}; body: {}",
                lossy(&r.body)
            )
        });
        self.check_response(&what, self.resolve(response), r);
        let method = method.to_string();
        lock(&self.operations).insert((template.clone(), method.clone()));
        lock(&self.statuses).insert((template, method, status));
    }

    /// Checks headers, content type and body against a Response object.
    fn check_response(&self, what: &str, response: &Value, r: &Response) {
        if let Some(headers) = response.get("headers").and_then(Value::as_object) {
            for (name, header) in headers {
                let header = self.resolve(header);
                match r.header(name) {
                    None => assert!(
                        !header["required"].as_bool().unwrap_or(false),
                        "{what}: required header `{name}` missing; headers: {:?}",
                        r.headers
                    ),
                    Some(value) => {
                        let schema = &header["schema"];
                        let instance = if schema["type"] == "integer" {
                            value.parse::<i64>().map(Value::from).unwrap_or_else(|_| {
                                panic!("{what}: header `{name}: {value}` is not an integer")
                            })
                        } else {
                            Value::from(value)
                        };
                        self.assert_valid(schema, &instance, &format!("{what}: header `{name}`"));
                    }
                }
            }
        }
        let content = response
            .get("content")
            .and_then(Value::as_object)
            .filter(|c| !c.is_empty());
        let Some(content) = content else {
            assert!(
                r.body.is_empty(),
                "{what}: documented without content, but the body is {}",
                lossy(&r.body)
            );
            return;
        };
        let actual = r
            .header("content-type")
            .unwrap_or_else(|| panic!("{what}: no Content-Type"));
        let (key, media) = content
            .iter()
            .find(|(key, _)| media_matches(key, actual))
            .unwrap_or_else(|| {
                panic!(
                    "{what}: Content-Type `{actual}` is not one of {:?}",
                    content.keys().collect::<Vec<_>>()
                )
            });
        let essence = media_type(key).0;
        if essence == "application/json" || essence.ends_with("+json") {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
                panic!("{what}: the body is not JSON ({e}): {}", lossy(&r.body))
            });
            if let Some(schema) = media.get("schema") {
                self.assert_valid(schema, &body, &format!("{what}: body"));
            }
            if let Some(code) = body.pointer("/error/code").and_then(Value::as_str) {
                lock(&self.codes).insert(code.to_string());
            }
        } else if let Some(schema) = media.get("schema") {
            if schema["type"] == "string" {
                let text = std::str::from_utf8(&r.body)
                    .unwrap_or_else(|e| panic!("{what}: the body is not text: {e}"));
                self.assert_valid(schema, &Value::from(text), &format!("{what}: body"));
            }
        }
    }

    /// Checks a 404 for a path the spec does not have against
    /// `components/responses/NotFound`.
    fn check_not_found(&self, method: &Method, path: &str, r: &Response) {
        let what = format!("{method} {path} → {}", r.status);
        assert_eq!(self.template(path), None, "{what}: the path is in the spec");
        assert_eq!(r.status, 404, "{what}: {}", lossy(&r.body));
        self.check_response(&what, &self.doc["components"]["responses"]["NotFound"], r);
        assert_eq!(error_code(r), "not_found", "{what}");
    }

    /// Checks a 405 for a method a spec path has no operation for against
    /// `components/responses/MethodNotAllowed`, and that `Allow` lists the
    /// path's operations.
    fn check_method_not_allowed(&self, method: &Method, path: &str, r: &Response) {
        let what = format!("{method} {path} → {}", r.status);
        let template = self
            .template(path)
            .unwrap_or_else(|| panic!("{what}: the path is not in the spec"));
        let item = &self.doc["paths"][&template];
        assert!(
            item.get(method.as_str().to_ascii_lowercase()).is_none(),
            "{what}: the spec has this operation"
        );
        assert_eq!(r.status, 405, "{what}: {}", lossy(&r.body));
        self.check_response(
            &what,
            &self.doc["components"]["responses"]["MethodNotAllowed"],
            r,
        );
        assert_eq!(error_code(r), "method_not_allowed", "{what}");
        let allowed: BTreeSet<String> = r
            .header("allow")
            .unwrap_or_default()
            .split(',')
            .map(|m| m.trim().to_ascii_uppercase())
            .filter(|m| !m.is_empty())
            .collect();
        let mut documented: BTreeSet<String> = METHODS
            .iter()
            .filter(|m| item.get(**m).is_some())
            .map(|m| m.to_ascii_uppercase())
            .collect();
        if documented.contains("GET") {
            documented.insert("HEAD".into());
        }
        assert_eq!(
            allowed, documented,
            "{what}: Allow does not list the spec's operations on {template}"
        );
    }

    /// A documented request body limit (`x-body-limit`).
    fn body_limit(&self, template: &str, method: &str) -> usize {
        self.doc["paths"][template][method]["requestBody"]["x-body-limit"]
            .as_u64()
            .unwrap_or_else(|| panic!("no x-body-limit on {method} {template}")) as usize
    }

    /// The schema of the `{name}` parameter.
    fn name_schema(&self) -> Value {
        self.resolve(&self.doc["components"]["parameters"]["FunctionName"])["schema"].clone()
    }

    /// The spec's own consistency: every `$ref` resolves and every schema
    /// compiles.
    fn self_check(&self) {
        assert_eq!(self.doc["openapi"], "3.1.0");
        fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
            match v {
                Value::Object(m) => {
                    if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                        out.push(r);
                    }
                    m.values().for_each(|v| refs(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&self.doc, &mut all);
        for r in all {
            let pointer = r.strip_prefix('#').unwrap_or(r);
            assert!(
                self.doc.pointer(pointer).is_some(),
                "openapi.yaml: dangling $ref {r}"
            );
        }
        for name in self.doc["components"]["schemas"]
            .as_object()
            .expect("components.schemas")
            .keys()
        {
            self.validator(&Spec::schema(name));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A media type's essence and its parameters, lower-cased.
fn media_type(text: &str) -> (String, BTreeMap<String, String>) {
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let params = parts
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_ascii_lowercase(),
            ))
        })
        .collect();
    (essence, params)
}

/// Whether an actual Content-Type satisfies a spec media type: the same
/// essence, with every parameter the spec names.
fn media_matches(spec: &str, actual: &str) -> bool {
    let (spec_essence, spec_params) = media_type(spec);
    let (essence, params) = media_type(actual);
    spec_essence == essence && spec_params.iter().all(|(k, v)| params.get(k) == Some(v))
}

fn lossy(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match text.char_indices().nth(500) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.into_owned(),
    }
}

fn error_code(r: &Response) -> String {
    r.error()
        .unwrap_or_else(|| panic!("not an error body: {}", lossy(&r.body)))
        .error
        .code
}

fn module(name: &str) -> Vec<u8> {
    std::fs::read(common::fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn hello() -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello.wat"))
        .expect("examples/hello.wat")
}

/// A deploy request body, as the Rust client type serialises it.
fn deploy_body(module: &[u8], config: FunctionConfig) -> Value {
    serde_json::to_value(DeployRequest::module(module, config)).expect("serialise DeployRequest")
}

fn config(f: impl FnOnce(&mut FunctionConfig)) -> FunctionConfig {
    let mut c = FunctionConfig::default();
    f(&mut c);
    c
}

fn info(r: &Response) -> FunctionInfo {
    serde_json::from_slice(&r.body).expect("a FunctionInfo body")
}

// ---------------------------------------------------------------------------
// The client

/// Requests whose responses are checked against the spec.
struct Api<'a> {
    client: Client,
    spec: &'a Spec,
}

impl<'a> Api<'a> {
    fn new(daemon: &Daemon, spec: &'a Spec) -> Api<'a> {
        Api {
            client: Client::new(&daemon.socket),
            spec,
        }
    }

    /// Sends a request (on a new connection) without checking the response.
    async fn raw(&self, method: &Method, path: &str, body: impl Into<Bytes>) -> Response {
        self.client
            .request(method.clone(), path, body.into())
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
    }

    /// Sends a request of a documented operation; expects `status`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
        status: u16,
    ) -> Response {
        let r = self.raw(&method, path, body).await;
        self.spec.check(&method, path, &r);
        assert_eq!(
            r.status,
            status,
            "{method} {path}: expected {status}, got {}: {}",
            r.status,
            lossy(&r.body)
        );
        r
    }

    /// Like [`Api::call`], expecting an error with `code`.
    async fn fail(
        &self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
        status: u16,
        code: &str,
    ) -> Response {
        let r = self.call(method.clone(), path, body, status).await;
        assert_eq!(error_code(&r), code, "{method} {path}");
        r
    }

    /// Deploys `body` (which must match `DeployRequest`) as `name`.
    async fn deploy(&self, name: &str, body: &Value, status: u16) -> FunctionInfo {
        self.spec.assert_valid(
            &Spec::schema("DeployRequest"),
            body,
            &format!("deploy request for {name}"),
        );
        let path = format!("/v1/functions/{name}");
        let r = self
            .call(
                Method::PUT,
                &path,
                serde_json::to_vec(body).unwrap(),
                status,
            )
            .await;
        let info = info(&r);
        assert_eq!(info.name, name);
        assert_eq!(info.state, "ready");
        info
    }

    /// A deploy the daemon refuses with `status` and `code`; `schema_too`
    /// says the spec's DeployRequest schema refuses it as well.
    async fn bad_deploy(&self, name: &str, body: &[u8], status: u16, code: &str, schema_too: bool) {
        if schema_too {
            let value: Value = serde_json::from_slice(body).expect("a JSON body");
            self.spec.assert_invalid(
                &Spec::schema("DeployRequest"),
                &value,
                &format!("deploy request for {name}"),
            );
        }
        let path = format!("/v1/functions/{name}");
        self.fail(Method::PUT, &path, body.to_vec(), status, code)
            .await;
    }

    async fn invoke(&self, name: &str, stdin: impl Into<Bytes>, status: u16) -> Response {
        self.call(
            Method::POST,
            &format!("/v1/functions/{name}/invoke"),
            stdin,
            status,
        )
        .await
    }

    async fn get(&self, name: &str) -> FunctionInfo {
        info(
            &self
                .call(Method::GET, &format!("/v1/functions/{name}"), "", 200)
                .await,
        )
    }
}

// ---------------------------------------------------------------------------
// The tests

#[test]
fn daemon_matches_the_openapi_spec() {
    let spec = Spec::load();
    spec.self_check();
    let daemon = Daemon::start();
    let t0 = Instant::now();
    runtime().block_on(exercise(&daemon, &spec));
    exercise_raw(&daemon, &spec);

    let exercised = lock(&spec.operations).clone();
    let missing: Vec<_> = spec
        .all_operations()
        .difference(&exercised)
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "operations never exercised: {missing:?}"
    );

    // Every documented status but the host's own failures (500, 503 when
    // it runs out of resources, 507 on a full disk — tests/crash.rs) and
    // 408 (a 30 s body deadline; tests/http_edges.rs) was seen.
    let seen = lock(&spec.statuses).clone();
    let unseen: Vec<_> = spec
        .all_statuses()
        .difference(&seen)
        .filter(|(_, _, status)| !["408", "500", "503", "507"].contains(&status.as_str()))
        .cloned()
        .collect();
    assert!(
        unseen.is_empty(),
        "documented statuses never seen: {unseen:?}"
    );

    // Every stable error code but those needing a broken guest or host (or
    // a tiny memory budget: see the next test) was seen.
    let codes = lock(&spec.codes).clone();
    let documented: BTreeSet<String> = spec.doc["components"]["schemas"]["Error"]["properties"]
        ["error"]["properties"]["code"]["enum"]
        .as_array()
        .expect("Error code enum")
        .iter()
        .map(|c| c.as_str().expect("code").to_string())
        .collect();
    let unreached: BTreeSet<String> = [
        "function_crashed",
        "internal",
        "memory_budget",
        "host_overloaded",
        "insufficient_storage",
        "request_timeout",
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
    eprintln!(
        "openapi: {} operations, {} (operation, status) pairs, {} error codes checked in {:?}",
        exercised.len(),
        seen.len(),
        codes.len(),
        t0.elapsed()
    );
}

/// What only a raw socket can send: malformed bodies (an operation's 400)
/// and requests hyper cannot parse (JSON errors of no operation).
fn exercise_raw(daemon: &Daemon, spec: &Spec) {
    let send =
        |request: &[u8]| common::raw::parse(&common::raw::exchange(&daemon.socket, request).0);
    let chunked = |method: &str, path: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: wisp\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n"
        )
    };
    for (method, path) in [
        (Method::PUT, "/v1/functions/hello"),
        (Method::POST, "/v1/functions/hello/invoke"),
    ] {
        let r = send(chunked(method.as_str(), path).as_bytes());
        spec.check(&method, path, &r);
        assert_eq!((r.status, error_code(&r).as_str()), (400, "invalid_body"));
    }
    let many_headers: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    for (request, component, status, code) in [
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
        let what = format!("{component} → {}", r.status);
        assert_eq!(r.status, status, "{what}: {}", lossy(&r.body));
        spec.check_response(&what, &spec.doc["components"]["responses"][component], &r);
        assert_eq!(error_code(&r), code, "{what}");
    }
}

async fn exercise(daemon: &Daemon, spec: &Spec) {
    let api = Api::new(daemon, spec);
    let hello = hello();

    // Health and an empty list.
    let r = api.call(Method::GET, "/healthz", "", 200).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap(),
        json!({"status": "ok"})
    );
    let r = api.call(Method::GET, "/v1/functions", "", 200).await;
    let list: FunctionList = serde_json::from_slice(&r.body).unwrap();
    assert!(list.functions.is_empty());

    // Deploy (201), with every setting defaulted.
    let created = api
        .deploy(
            "hello",
            &json!({ "module_base64": B64.encode(&hello) }),
            201,
        )
        .await;
    assert_eq!(created.version, 1);
    assert_eq!(created.config, FunctionConfig::default());
    assert_eq!(
        created.module_sha256,
        format!("{:x}", Sha256::digest(&hello))
    );

    // Update (200): a new version with the new settings.
    let settings = config(|c| {
        c.memory_mib = 64;
        c.timeout_ms = 5000;
        c.concurrency = 8;
        c.max_ready = 4;
        c.reserved = 1;
        c.env.insert("GREETING".into(), "hi".into());
    });
    let updated = api
        .deploy("hello", &deploy_body(&hello, settings.clone()), 200)
        .await;
    assert_eq!(updated.version, 2);
    assert_eq!(updated.config, settings);

    // Invoke (200): stdout is the body, the x-wisp-* headers are there.
    for _ in 0..2 {
        let r = api.invoke("hello", "ignored stdin", 200).await;
        assert_eq!(&r.body[..], b"hello, world!\n");
        assert_eq!(r.header("x-wisp-exit-code"), Some("0"));
        assert_eq!(r.header("x-wisp-stderr"), None);
    }

    // A non-zero exit is still a 200; stderr comes back base64.
    api.deploy(
        "exit",
        &deploy_body(&module("api_exit.wat"), FunctionConfig::default()),
        201,
    )
    .await;
    let r = api.invoke("exit", "", 200).await;
    assert_eq!(&r.body[..], b"out\n");
    assert_eq!(r.header("x-wisp-exit-code"), Some("3"));
    let stderr = B64
        .decode(r.header("x-wisp-stderr").expect("x-wisp-stderr"))
        .expect("x-wisp-stderr is base64");
    assert_eq!(stderr, b"err\n");

    // Get and list.
    let got = api.get("hello").await;
    assert_eq!(got.version, 2);
    assert_eq!(got.config, settings);
    assert_eq!(got.stats.invocations, 2);
    assert_eq!(got.stats.cold + got.stats.warm, 2);
    let r = api.call(Method::GET, "/v1/functions", "", 200).await;
    let list: FunctionList = serde_json::from_slice(&r.body).unwrap();
    let names: Vec<_> = list.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["exit", "hello"]);

    // Every GET also answers HEAD.
    for path in [
        "/healthz",
        "/v1/functions",
        "/v1/functions/hello",
        "/metrics",
    ] {
        let r = api.raw(&Method::HEAD, path, "").await;
        assert_eq!(r.status, 200, "HEAD {path}");
        assert!(r.body.is_empty(), "HEAD {path}");
    }

    // 404 for an unknown function, on every operation that names one.
    let nope = "/v1/functions/nope";
    api.fail(Method::GET, nope, "", 404, "function_not_found")
        .await;
    api.fail(Method::DELETE, nope, "", 404, "function_not_found")
        .await;
    api.fail(
        Method::POST,
        "/v1/functions/nope/invoke",
        "",
        404,
        "function_not_found",
    )
    .await;
    // ... and for names a deploy would refuse.
    api.fail(
        Method::GET,
        "/v1/functions/No-Such",
        "",
        404,
        "function_not_found",
    )
    .await;

    // 404 for paths the daemon does not serve.
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
        spec.check_not_found(&method, path, &r);
    }

    // 405 for methods a path does not take.
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
        spec.check_method_not_allowed(&method, path, &r);
    }

    // 400 invalid_name: the name is checked first, before the body.
    let name_schema = spec.name_schema();
    let long = "a".repeat(64);
    for name in ["Hello", "-x", "_x", "a.b", "héllo", long.as_str()] {
        spec.assert_invalid(&name_schema, &Value::from(name), "the name parameter");
        let path = format!("/v1/functions/{}", percent_encode(name));
        api.fail(Method::PUT, &path, "not json", 400, "invalid_name")
            .await;
    }
    let longest = "a".repeat(63);
    for name in ["a", "0", "a-b_c", longest.as_str()] {
        spec.assert_valid(&name_schema, &Value::from(name), "the name parameter");
    }

    // 400 invalid_json.
    let m = B64.encode(&hello);
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
        api.bad_deploy(
            "x",
            &serde_json::to_vec(&body).unwrap(),
            400,
            "invalid_json",
            true,
        )
        .await;
    }

    // 400 invalid_module_encoding (checked before the settings).
    for body in [
        json!({ "module_base64": "not base64!" }),
        json!({ "module_base64": "AGFzbQ" }),
        json!({ "module_base64": "not base64!", "memory_mib": 17 }),
    ] {
        api.bad_deploy(
            "x",
            &serde_json::to_vec(&body).unwrap(),
            400,
            "invalid_module_encoding",
            false,
        )
        .await;
    }

    // 400 invalid_config; the schema refuses each too, but for reserved >
    // max_ready, which it cannot express.
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
    for (change, schema_too) in cases {
        let body = deploy_body(&hello, config(change));
        api.bad_deploy(
            "x",
            &serde_json::to_vec(&body).unwrap(),
            400,
            "invalid_config",
            schema_too,
        )
        .await;
    }
    let body = json!({ "module_base64": m, "env": { "": "x" } });
    api.bad_deploy(
        "x",
        &serde_json::to_vec(&body).unwrap(),
        400,
        "invalid_config",
        true,
    )
    .await;

    // 422 invalid_module: not a module, a non-WASI import, a failing init.
    let not_wasi = b"(module (import \"env\" \"f\" (func)) (func (export \"_start\")))";
    for module in [
        &b"\x00\x01garbage"[..],
        &b"(module"[..],
        &not_wasi[..],
        &module("init_trap.wat")[..],
    ] {
        let body = deploy_body(module, FunctionConfig::default());
        spec.assert_valid(&Spec::schema("DeployRequest"), &body, "deploy request");
        api.fail(
            Method::PUT,
            "/v1/functions/bad",
            serde_json::to_vec(&body).unwrap(),
            422,
            "invalid_module",
        )
        .await;
    }
    exercise_images(&api, daemon, &hello).await;

    // A refused deploy leaves nothing behind, and an update refused leaves
    // the old version serving.
    api.fail(
        Method::GET,
        "/v1/functions/bad",
        "",
        404,
        "function_not_found",
    )
    .await;
    let body = deploy_body(b"(module", FunctionConfig::default());
    api.fail(
        Method::PUT,
        "/v1/functions/hello",
        serde_json::to_vec(&body).unwrap(),
        422,
        "invalid_module",
    )
    .await;
    assert_eq!(api.get("hello").await.version, 2);

    // 413: one byte over each documented body limit; at the limit, fine.
    let invoke_limit = spec.body_limit("/v1/functions/{name}/invoke", "post");
    assert_eq!(invoke_limit, 6 << 20);
    api.fail(
        Method::POST,
        "/v1/functions/hello/invoke",
        vec![b'x'; invoke_limit + 1],
        413,
        "body_too_large",
    )
    .await;
    let r = api.invoke("hello", vec![b'x'; invoke_limit], 200).await;
    assert_eq!(&r.body[..], b"hello, world!\n");
    let deploy_limit = spec.body_limit("/v1/functions/{name}", "put");
    assert_eq!(deploy_limit, 64 << 20);
    api.fail(
        Method::PUT,
        "/v1/functions/big",
        vec![b' '; deploy_limit + 1],
        413,
        "body_too_large",
    )
    .await;
    // Exactly at the limit the body is read (and is not a request).
    api.fail(
        Method::PUT,
        "/v1/functions/big",
        vec![b' '; deploy_limit],
        400,
        "invalid_json",
    )
    .await;

    // 502 and 504: the function's failures.
    api.deploy(
        "trap",
        &deploy_body(&module("trap.wat"), FunctionConfig::default()),
        201,
    )
    .await;
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

    let hog = config(|c| c.memory_mib = 32);
    api.deploy("hog", &deploy_body(&module("memory_hog.wat"), hog), 201)
        .await;
    api.fail(
        Method::POST,
        "/v1/functions/hog/invoke",
        "",
        502,
        "function_out_of_memory",
    )
    .await;

    api.deploy(
        "flood",
        &deploy_body(&module("flood.wat"), FunctionConfig::default()),
        201,
    )
    .await;
    api.fail(
        Method::POST,
        "/v1/functions/flood/invoke",
        "",
        502,
        "function_output_limit",
    )
    .await;

    let spin = config(|c| c.timeout_ms = 200);
    api.deploy("spin", &deploy_body(&module("spin.wat"), spin), 201)
        .await;
    let t0 = Instant::now();
    api.fail(
        Method::POST,
        "/v1/functions/spin/invoke",
        "",
        504,
        "function_timeout",
    )
    .await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(5),
        "{took:?}"
    );

    // 429 concurrency_limit: one slot, one queue place; six at once on
    // their own connections while the first sleeps 500 ms.
    let slow = config(|c| c.concurrency = 1);
    api.deploy("slow", &deploy_body(&module("api_sleep.wat"), slow), 201)
        .await;
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
        spec.check(&Method::POST, path, &r);
        match r.status {
            200 => ok.push(r),
            429 => {
                assert_eq!(error_code(&r), "concurrency_limit");
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

    // Metrics: OpenMetrics text with what happened above.
    let r = api.call(Method::GET, "/metrics", "", 200).await;
    let text = std::str::from_utf8(&r.body).unwrap();
    assert!(text.ends_with("# EOF\n"), "{}", lossy(&r.body));
    for needle in [
        "wisp_invocations_total{function=\"hello\"",
        "kind=\"function_trapped\"",
        "kind=\"function_timeout\"",
        "kind=\"concurrency_limit\"",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }

    // Delete (204), then it is gone.
    api.call(Method::DELETE, "/v1/functions/hello", "", 204)
        .await;
    api.fail(
        Method::GET,
        "/v1/functions/hello",
        "",
        404,
        "function_not_found",
    )
    .await;
    api.fail(
        Method::POST,
        "/v1/functions/hello/invoke",
        "",
        404,
        "function_not_found",
    )
    .await;
    api.fail(
        Method::DELETE,
        "/v1/functions/hello",
        "",
        404,
        "function_not_found",
    )
    .await;
    let r = api.call(Method::GET, "/v1/functions", "", 200).await;
    let list: FunctionList = serde_json::from_slice(&r.body).unwrap();
    assert!(list.functions.iter().all(|f| f.name != "hello"));
    // Deployed again, it is new (201), its versions counted afresh.
    let again = api
        .deploy(
            "hello",
            &deploy_body(&hello, FunctionConfig::default()),
            201,
        )
        .await;
    assert_eq!(again.version, 1);
}

/// Deploys by image reference: the 201, and the 400, 422 and 500 codes
/// images add.
async fn exercise_images(api: &Api<'_>, daemon: &Daemon, hello: &[u8]) {
    let images = wisp_images::Store::open(&daemon.state.join("images")).expect("image store");
    let tag = |s: &str| wisp_images::Tag::parse(s).unwrap();
    let wasm = wat::parse_bytes(hello).unwrap().into_owned();
    let image = images
        .build(&wasm, None, Some(&tag("hello-img:1")))
        .expect("build an image");
    let deployed = api
        .deploy("from-image", &json!({ "image": "hello-img:1" }), 201)
        .await;
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

    let m = B64.encode(hello);
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
        api.bad_deploy(
            "x",
            &serde_json::to_vec(&body).unwrap(),
            400,
            code,
            schema_too,
        )
        .await;
    }
    let body = json!({ "image": "nope:1" });
    spec_valid(api, &body);
    api.fail(
        Method::PUT,
        "/v1/functions/x",
        serde_json::to_vec(&body).unwrap(),
        422,
        "image_not_found",
    )
    .await;

    // A flipped byte in the module blob: refused, nothing deployed, the
    // blob quarantined, no pin left behind.
    let other = wat::parse_bytes(&module("api_exit.wat"))
        .unwrap()
        .into_owned();
    let broken = images.build(&other, None, Some(&tag("broken:1"))).unwrap();
    let path = images.blobs().path(&broken.module_digest());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let r = api
        .fail(
            Method::PUT,
            "/v1/functions/broken",
            serde_json::to_vec(&json!({ "image": "broken:1" })).unwrap(),
            500,
            "image_corrupt",
        )
        .await;
    let message = r.error().unwrap().error.message;
    assert!(
        message.contains(&broken.module_digest().to_string()),
        "{message}"
    );
    api.fail(
        Method::GET,
        "/v1/functions/broken",
        "",
        404,
        "function_not_found",
    )
    .await;
    assert!(!images.pins().unwrap().contains_key("broken"));

    // Deleting the function drops its pin.
    api.call(Method::DELETE, "/v1/functions/from-image", "", 204)
        .await;
    assert!(images.pins().unwrap().is_empty());
}

fn spec_valid(api: &Api<'_>, body: &Value) {
    api.spec
        .assert_valid(&Spec::schema("DeployRequest"), body, "deploy request");
}

/// 429 memory_budget: a daemon whose instance budget holds no instance.
#[test]
fn memory_budget_refusal_matches_the_spec() {
    let spec = Spec::load();
    let daemon = Daemon::start_with(&["--memory-budget", "0"]);
    runtime().block_on(async {
        let api = Api::new(&daemon, &spec);
        api.deploy(
            "hello",
            &deploy_body(&hello(), FunctionConfig::default()),
            201,
        )
        .await;
        let r = api
            .fail(
                Method::POST,
                "/v1/functions/hello/invoke",
                "",
                429,
                "memory_budget",
            )
            .await;
        assert_eq!(r.header("retry-after"), Some("1"));
        let info = api.get("hello").await;
        assert_eq!((info.stats.invocations, info.stats.rejected), (0, 1));
    });
}

/// A name that is not UTF-8 once percent-decoded should get the API's
/// error JSON like any other bad name.
#[test]
fn undecodable_names_get_error_json() {
    let spec = Spec::load();
    let daemon = Daemon::start();
    runtime().block_on(async {
        let api = Api::new(&daemon, &spec);
        for (method, path) in [
            (Method::GET, "/v1/functions/%FF"),
            (Method::DELETE, "/v1/functions/%FF"),
            (Method::PUT, "/v1/functions/%FF"),
            (Method::POST, "/v1/functions/%FF/invoke"),
        ] {
            let r = api.raw(&method, path, "{}").await;
            spec.check(&method, path, &r);
        }
    });
}

/// Percent-encodes everything but unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
