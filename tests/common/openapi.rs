//! `openapi.yaml` as a test oracle: [`Spec`] checks a daemon's responses
//! against the documented operations (method and path template, status,
//! content type, required headers, JSON body schema) and records what was
//! exercised; [`Api`] sends requests and checks each answer; [`Covers`]
//! is what one test declares it exercises, so that the tests together can
//! be checked to cover the whole spec.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use bytes::Bytes;
use hyper::Method;
use serde_json::{json, Value};
use wisp::api::{DeployRequest, FunctionConfig, FunctionInfo, FunctionList};
use wisp::client::{Client, Response};

use super::daemon::{code as error_code, Daemon};

/// The HTTP methods an OpenAPI path item may have operations for.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// What one test exercises of the spec: every `"METHOD /template status"`
/// it gets a checked response for, and every error code among them. A
/// test checks at its end that this is exactly what it saw
/// ([`Api::assert_exercised`]), and the tests' declarations together must
/// cover the spec.
pub struct Covers {
    /// `"METHOD /template status"`, e.g. `"PUT /v1/functions/{name} 201"`.
    pub statuses: &'static [&'static str],
    /// Error codes, e.g. `"invalid_json"`.
    pub codes: &'static [&'static str],
}

/// `openapi.yaml`, and what a test has exercised of it.
pub struct Spec {
    /// The parsed document.
    pub doc: Value,
    /// (path template, METHOD, status) of every checked operation response.
    statuses: Mutex<BTreeSet<(String, String, String)>>,
    /// Every error code seen in a response.
    codes: Mutex<BTreeSet<String>>,
}

impl Spec {
    /// Reads `openapi.yaml`.
    pub fn load() -> Spec {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
        let text = std::fs::read_to_string(path).expect("read openapi.yaml");
        let doc: Value = serde_yaml_ng::from_str(&text).expect("openapi.yaml is not valid YAML");
        Spec {
            doc,
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

    /// Asserts that `instance` matches `schema`.
    pub fn assert_valid(&self, schema: &Value, instance: &Value, what: &str) {
        let errors = self.errors(schema, instance);
        assert!(
            errors.is_empty(),
            "{what}: does not match the spec:\n  {}\ninstance: {}",
            errors.join("\n  "),
            lossy(instance.to_string().as_bytes())
        );
    }

    /// Asserts that `schema` refuses `instance`.
    pub fn assert_invalid(&self, schema: &Value, instance: &Value, what: &str) {
        assert!(
            !self.errors(schema, instance).is_empty(),
            "{what}: the spec's schema accepts {}, which the daemon refuses",
            lossy(instance.to_string().as_bytes())
        );
    }

    /// A `$ref` to the component schema `name`.
    pub fn schema(name: &str) -> Value {
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    fn paths(&self) -> &serde_json::Map<String, Value> {
        self.doc["paths"].as_object().expect("openapi.yaml: paths")
    }

    /// Every (path template, METHOD) the spec has an operation for.
    pub fn all_operations(&self) -> BTreeSet<(String, String)> {
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
    pub fn all_statuses(&self) -> BTreeSet<(String, String, String)> {
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
    pub fn check(&self, method: &Method, path: &str, r: &Response) {
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
        lock(&self.statuses).insert((template, method.to_string(), status));
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
                assert!(
                    self.documented_codes().contains(code),
                    "{what}: undocumented error code `{code}`"
                );
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

    /// The error codes `components/schemas/Error` lists.
    pub fn documented_codes(&self) -> BTreeSet<String> {
        self.doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]
            ["enum"]
            .as_array()
            .expect("openapi.yaml: the Error code enum")
            .iter()
            .map(|c| c.as_str().expect("a code").to_string())
            .collect()
    }

    /// Asserts that the responses checked so far are exactly `covers`.
    pub fn assert_exercised(&self, covers: &Covers) {
        let seen: BTreeSet<String> = lock(&self.statuses)
            .iter()
            .map(|(template, method, status)| format!("{method} {template} {status}"))
            .collect();
        let declared: BTreeSet<String> = covers.statuses.iter().map(|s| s.to_string()).collect();
        assert_eq!(seen, declared, "statuses seen (left) and declared (right)");
        let codes = lock(&self.codes).clone();
        let declared: BTreeSet<String> = covers.codes.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            codes, declared,
            "error codes seen (left) and declared (right)"
        );
    }

    /// Checks `r` against `components/responses/<component>`: for replies
    /// of no operation, such as the HTTP layer's own errors.
    pub fn check_component(&self, component: &str, r: &Response) {
        let what = format!("{component} → {}", r.status);
        self.check_response(&what, &self.doc["components"]["responses"][component], r);
    }

    /// Checks a 404 for a path the spec does not have against
    /// `components/responses/NotFound`.
    pub fn check_not_found(&self, method: &Method, path: &str, r: &Response) {
        let what = format!("{method} {path} → {}", r.status);
        assert_eq!(self.template(path), None, "{what}: the path is in the spec");
        assert_eq!(r.status, 404, "{what}: {}", lossy(&r.body));
        self.check_response(&what, &self.doc["components"]["responses"]["NotFound"], r);
        assert_eq!(error_code(r), "not_found", "{what}");
    }

    /// Checks a 405 for a method a spec path has no operation for against
    /// `components/responses/MethodNotAllowed`, and that `Allow` lists the
    /// path's operations.
    pub fn check_method_not_allowed(&self, method: &Method, path: &str, r: &Response) {
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
    pub fn body_limit(&self, template: &str, method: &str) -> usize {
        self.doc["paths"][template][method]["requestBody"]["x-body-limit"]
            .as_u64()
            .unwrap_or_else(|| panic!("no x-body-limit on {method} {template}")) as usize
    }

    /// The schema of the `{name}` parameter.
    pub fn name_schema(&self) -> Value {
        self.resolve(&self.doc["components"]["parameters"]["FunctionName"])["schema"].clone()
    }

    /// The spec's own consistency: every `$ref` resolves and every schema
    /// compiles.
    pub fn self_check(&self) {
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

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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

/// At most 500 characters of `body`, as text.
pub fn lossy(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match text.char_indices().nth(500) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.into_owned(),
    }
}

/// A fixture module's bytes.
pub fn module(name: &str) -> Vec<u8> {
    std::fs::read(super::fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `examples/hello.wat`.
pub fn hello() -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello.wat"))
        .expect("examples/hello.wat")
}

/// A deploy request body, as the Rust client type serialises it.
pub fn deploy_body(module: &[u8], config: FunctionConfig) -> Value {
    serde_json::to_value(DeployRequest::module(module, config)).expect("serialise DeployRequest")
}

/// The default settings, changed by `f`.
pub fn config(f: impl FnOnce(&mut FunctionConfig)) -> FunctionConfig {
    let mut c = FunctionConfig::default();
    f(&mut c);
    c
}

/// A `FunctionInfo` body.
pub fn info(r: &Response) -> FunctionInfo {
    serde_json::from_slice(&r.body).expect("a FunctionInfo body")
}

/// Runs `test` with a client of `daemon`, then checks that its responses
/// exercised exactly `covers`.
pub fn exercise(daemon: &Daemon, covers: &Covers, test: impl AsyncFnOnce(&Api)) {
    let api = Api::new(daemon);
    super::daemon::block_on(test(&api));
    api.assert_exercised(covers);
}

/// Requests to a daemon whose responses are checked against the spec.
pub struct Api {
    client: Client,
    /// The spec, with what this client's responses exercised of it.
    pub spec: Spec,
}

impl Api {
    /// A client of `daemon`, with the spec loaded.
    pub fn new(daemon: &Daemon) -> Api {
        Api {
            client: Client::new(&daemon.socket),
            spec: Spec::load(),
        }
    }

    /// Asserts that this client's responses exercised exactly `covers`.
    pub fn assert_exercised(&self, covers: &Covers) {
        self.spec.assert_exercised(covers);
    }

    /// Sends a request (on a new connection) without checking the response.
    pub async fn raw(&self, method: &Method, path: &str, body: impl Into<Bytes>) -> Response {
        self.client
            .request(method.clone(), path, body.into())
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
    }

    /// Sends a request of a documented operation; expects `status`.
    pub async fn call(
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
    pub async fn fail(
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
    pub async fn deploy(&self, name: &str, body: &Value, status: u16) -> FunctionInfo {
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
    pub async fn bad_deploy(
        &self,
        name: &str,
        body: &[u8],
        status: u16,
        code: &str,
        schema_too: bool,
    ) {
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

    /// `POST /v1/functions/{name}/invoke` with `stdin`; expects `status`.
    pub async fn invoke(&self, name: &str, stdin: impl Into<Bytes>, status: u16) -> Response {
        self.call(
            Method::POST,
            &format!("/v1/functions/{name}/invoke"),
            stdin,
            status,
        )
        .await
    }

    /// `GET /v1/functions/{name}`.
    pub async fn get(&self, name: &str) -> FunctionInfo {
        info(
            &self
                .call(Method::GET, &format!("/v1/functions/{name}"), "", 200)
                .await,
        )
    }

    /// `GET /v1/functions`.
    pub async fn list(&self) -> FunctionList {
        let r = self.call(Method::GET, "/v1/functions", "", 200).await;
        serde_json::from_slice(&r.body).expect("a FunctionList body")
    }

    /// `GET /metrics`: OpenMetrics text, which ends with `# EOF`.
    pub async fn metrics(&self) -> String {
        let r = self.call(Method::GET, "/metrics", "", 200).await;
        let text = String::from_utf8(r.body.to_vec()).expect("metrics are UTF-8");
        assert!(text.ends_with("# EOF\n"), "{}", lossy(&r.body));
        text
    }

    /// `HEAD path` (which the spec leaves implicit for every GET): 200 and
    /// no body.
    pub async fn head(&self, path: &str) {
        let r = self.raw(&Method::HEAD, path, "").await;
        assert_eq!(r.status, 200, "HEAD {path}");
        assert!(r.body.is_empty(), "HEAD {path}");
    }
}

/// Percent-encodes everything but unreserved characters.
pub fn percent_encode(text: &str) -> String {
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
