//! The HTTP API: routes, request parsing and responses. Handlers are thin;
//! the work is in [`Host`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::deploy::{FunctionName, Source};
use super::error::{registry_error, ApiError};
use super::host::Host;
use super::routes::Qualifier;
use crate::api::{
    self, AliasInfo, AliasList, AliasRouting, DeployRequest, FunctionList, RolloutInfo,
    RolloutRequest, VersionList,
};

/// Largest deploy body (a base64 module and settings).
pub const MAX_DEPLOY_BODY: usize = 64 << 20;
/// Largest invocation body (the function's stdin).
pub const MAX_INVOKE_BODY: usize = 6 << 20;
/// Largest alias or rollout body.
pub const MAX_SMALL_BODY: usize = 64 << 10;

/// What the handlers share.
#[derive(Clone)]
struct Api {
    host: Arc<Host>,
    /// Time a client has to send a request body.
    body_timeout: Duration,
}

impl FromRef<Api> for Arc<Host> {
    fn from_ref(api: &Api) -> Arc<Host> {
        Arc::clone(&api.host)
    }
}

/// The API's routes over `host`; a request body must arrive within
/// `body_timeout`.
pub fn router(host: Arc<Host>, body_timeout: Duration) -> Router {
    Router::new()
        .route(
            "/v1/functions/{name}",
            get(get_function).put(deploy).delete(delete),
        )
        .route("/v1/functions/{name}/invoke", post(invoke))
        .route("/v1/functions/{name}/versions", get(versions))
        .route(
            "/v1/functions/{name}/versions/{version}",
            axum::routing::delete(delete_version),
        )
        .route("/v1/functions/{name}/aliases", get(aliases))
        .route(
            "/v1/functions/{name}/aliases/{alias}",
            get(get_alias).put(put_alias).delete(delete_alias),
        )
        .route(
            "/v1/functions/{name}/rollout",
            get(get_rollout).post(start_rollout).delete(cancel_rollout),
        )
        .route("/v1/functions", get(list))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(Api { host, body_timeout })
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

/// The `{name}` of the path. A name that does not even decode (invalid
/// UTF-8) cannot be deployed: 400 for a deploy, 404 otherwise.
fn name(path: Result<Path<String>, PathRejection>, deploying: bool) -> Result<String, ApiError> {
    match path {
        Ok(Path(name)) => Ok(name),
        Err(e) if deploying => Err(ApiError::bad_request("invalid_name", e.body_text())),
        Err(e) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "function_not_found",
            format!("no such function: {}", e.body_text()),
        )),
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    /// Over the route's limit, declared (`Content-Length`) or as sent.
    #[error("the request body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    /// Not valid HTTP/1.1 framing (e.g. a bad chunk size), or cut short.
    #[error("the request body is malformed: {0}")]
    Malformed(String),
    /// Not all there in time.
    #[error("the request body did not arrive within {0:?}")]
    TimedOut(Duration),
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> ApiError {
        let (status, code) = match e {
            BodyError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            BodyError::Malformed(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            BodyError::TimedOut(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// Reads a body of at most `limit` bytes within `timeout`.
async fn read_body(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, BodyError> {
    // hyper has parsed `Content-Length` into the size hint. An oversized
    // length is refused before the body is polled: polling would wait for
    // bytes that may never come and, for `Expect: 100-continue`, make
    // hyper send `100 Continue` first.
    if hyper::body::Body::size_hint(&body).lower() > limit as u64 {
        return Err(BodyError::TooLarge { limit });
    }
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(BodyError::TooLarge { limit }),
        // Anything else is hyper's: framing it could not decode, or a
        // connection closed mid-body.
        Ok(Err(e)) => Err(BodyError::Malformed(error_chain(&*e))),
        Err(_) => Err(BodyError::TimedOut(timeout)),
    }
}

/// `error` and its sources, `: `-separated.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let more = e.to_string();
        if !text.ends_with(&more) {
            text = format!("{text}: {more}");
        }
        source = e.source();
    }
    text
}

async fn deploy(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = FunctionName::parse(&name(path, true)?)?;
    let body = read_body(body, MAX_DEPLOY_BODY, api.body_timeout).await?;
    let request: DeployRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("invalid deploy request: {e}"))
    })?;
    let needs_code = || {
        ApiError::invalid_config(
            "a `runtime` deploys a handler's code: give `code_base64`, not `module_base64` or `image`",
        )
    };
    let source = match (request.module_base64, request.image, request.code_base64) {
        (Some(_), None, None) | (None, Some(_), None) if request.config.runtime.is_some() => {
            return Err(needs_code())
        }
        (None, None, Some(code)) => Source::Code(decode_base64(
            &code,
            "code_base64",
            "invalid_code_encoding",
        )?),
        (Some(module), None, None) => Source::Module(decode_base64(
            &module,
            "module_base64",
            "invalid_module_encoding",
        )?),
        (None, Some(reference), None) => {
            // A reference naming a registry host is pulled from it;
            // any other names the daemon's image store.
            if wisp_registry::names_registry(&reference) {
                wisp_registry::RegistryRef::parse_explicit(&reference)
                    .map_err(|e| registry_error(&e))?;
            } else {
                wisp_images::Reference::parse(&reference)
                    .map_err(|e| ApiError::bad_request("invalid_image_reference", e.to_string()))?;
            }
            Source::Image(reference)
        }
        (None, None, None) => {
            return Err(ApiError::bad_request(
                "invalid_json",
                "invalid deploy request: give `module_base64`, `image` or `code_base64`",
            ))
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_json",
                "invalid deploy request: give one of `module_base64`, `image` and `code_base64`",
            ))
        }
    };
    let (info, created) = api.host.deploy(name, request.config, source).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(info)).into_response())
}

/// The query of an invocation.
#[derive(serde::Deserialize)]
struct InvokeQuery {
    /// An alias or a version number; `live` if absent.
    qualifier: Option<String>,
}

/// The bytes of request field `field`, or a 400 `code` if it is not
/// base64.
fn decode_base64(value: &str, field: &str, code: &'static str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(value.as_bytes())
        .map_err(|e| ApiError::bad_request(code, format!("{field} is not base64: {e}")))
}

async fn invoke(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<InvokeQuery>, QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = name(path, false)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let qualifier = Qualifier::parse(query.qualifier.as_deref());
    let stdin = read_body(body, MAX_INVOKE_BODY, api.body_timeout).await?;
    let invoked = api.host.invoke(&name, &qualifier, stdin).await?;
    let run = invoked.run;
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set(api::HEADER_EXIT_CODE, run.exit_code.to_string());
    if let Some(id) = &run.request_id {
        set(api::HEADER_REQUEST_ID, id.clone());
    }
    if run.handler_raised() {
        set(api::HEADER_FUNCTION_ERROR, "Unhandled".into());
    }
    set(
        api::HEADER_START,
        if run.cold { "cold" } else { "warm" }.into(),
    );
    set(api::HEADER_QUEUE_US, invoked.queue.as_micros().to_string());
    set(api::HEADER_RESTORE_US, run.restore.as_micros().to_string());
    set(api::HEADER_RUN_US, run.run.as_micros().to_string());
    set(api::HEADER_VERSION, invoked.version.to_string());
    if let Some(alias) = invoked.alias {
        set(api::HEADER_ALIAS, alias);
    }
    if !run.stderr.is_empty() {
        let tail = &run.stderr[run.stderr.len().saturating_sub(api::STDERR_TAIL)..];
        set(
            api::HEADER_STDERR,
            base64::engine::general_purpose::STANDARD.encode(tail),
        );
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok((StatusCode::OK, headers, run.stdout).into_response())
}

async fn get_function(
    State(host): State<Arc<Host>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    Ok(Json(host.get(&name(path, false)?)?).into_response())
}

async fn list(State(host): State<Arc<Host>>) -> Json<FunctionList> {
    Json(FunctionList {
        functions: host.list(),
    })
}

async fn delete(
    State(host): State<Arc<Host>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    host.delete(&name(path, false)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The `{name}` and a second segment of a path, 404 if they do not decode.
fn name_and(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), ApiError> {
    path.map(|Path(p)| p).map_err(|e| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such resource: {}", e.body_text()),
        )
    })
}

async fn versions(
    State(host): State<Arc<Host>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<VersionList>, ApiError> {
    Ok(Json(VersionList {
        versions: host.versions(&name(path, false)?)?,
    }))
}

async fn delete_version(
    State(host): State<Arc<Host>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let (name, version) = name_and(path)?;
    let version = version.parse::<u64>().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "version_not_found",
            format!("`{version}` is not a version number"),
        )
    })?;
    host.delete_version(&name, version).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn aliases(
    State(host): State<Arc<Host>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<AliasList>, ApiError> {
    let name = name(path, false)?;
    let function = host.get(&name)?;
    Ok(Json(AliasList {
        aliases: function.aliases,
    }))
}

async fn get_alias(
    State(host): State<Arc<Host>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<AliasInfo>, ApiError> {
    let (name, alias) = name_and(path)?;
    Ok(Json(host.alias(&name, &alias)?))
}

async fn put_alias(
    State(api): State<Api>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let (name, alias) = name_and(path)?;
    let body = read_body(body, MAX_SMALL_BODY, api.body_timeout).await?;
    let routing: AliasRouting = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid alias: {e}")))?;
    let (info, created) = api.host.put_alias(&name, &alias, routing).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(info)).into_response())
}

async fn delete_alias(
    State(host): State<Arc<Host>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let (name, alias) = name_and(path)?;
    host.delete_alias(&name, &alias).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn start_rollout(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = name(path, false)?;
    let body = read_body(body, MAX_SMALL_BODY, api.body_timeout).await?;
    let request: RolloutRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid rollout: {e}")))?;
    let info = api.host.start_rollout(&name, request).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn get_rollout(
    State(host): State<Arc<Host>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<RolloutInfo>, ApiError> {
    Ok(Json(host.rollout(&name(path, false)?)?))
}

async fn cancel_rollout(
    State(host): State<Arc<Host>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<RolloutInfo>, ApiError> {
    Ok(Json(host.cancel_rollout(&name(path, false)?).await?))
}

async fn metrics(State(host): State<Arc<Host>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        host.metrics_text(),
    )
        .into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}
