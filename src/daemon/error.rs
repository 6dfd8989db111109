//! API errors — an HTTP status, a stable code and a readable message,
//! rendered as `{"error": {"code", "message"}}` — and the one place where
//! every failure the daemon meets (a VM's, the image store's, the disk's,
//! the compiler's) becomes one. Decisions are made on error types and
//! their [`Blame`], never on message text.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use wisp_images::Error as ImageError;
use wisp_registry::Error as RegistryError;
use wisp_vmm::{Blame, Error as VmError, Outcome};

use crate::api::{ErrorBody, ErrorDetail};
use crate::compile::CompileError;

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// Seconds for a `Retry-After` header (429s, 503s).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 400 `invalid_config`: settings out of range, or that no instance
    /// could run with on this host.
    pub fn invalid_config(message: impl Into<String>) -> ApiError {
        ApiError::bad_request("invalid_config", message)
    }

    /// 404 for an unknown function.
    pub fn no_function(name: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "function_not_found",
            format!("no function named `{name}` is deployed"),
        )
    }

    /// 429 with a `Retry-After` of one second.
    pub fn too_many(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        }
    }

    /// 429 `memory_budget`: instances would exceed the host's budget.
    pub fn memory_budget() -> ApiError {
        ApiError::too_many(
            "memory_budget",
            "the host's memory budget for instances is exhausted",
        )
    }

    /// 503 `host_overloaded` with a `Retry-After` of one second: the host is
    /// out of a resource for new VMs right now.
    pub fn overloaded(message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "host_overloaded", message)
        }
    }

    /// 500: the daemon failed.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// Whether the request was refused for capacity (429/503) rather than
    /// failed.
    pub fn is_rejection(&self) -> bool {
        self.status == StatusCode::TOO_MANY_REQUESTS
            || self.status == StatusCode::SERVICE_UNAVAILABLE
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// An error and its causes, `: `-separated, as one line.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Why an invocation did not complete.
#[derive(Debug)]
pub enum Failure {
    /// The module trapped: wasmtime's description, and the stderr it wrote.
    Trapped {
        /// The trap and its wasm backtrace.
        message: String,
        /// What the module wrote to stderr before.
        stderr: Vec<u8>,
    },
    /// The VM failed: the function's fault, the host's, or exhaustion, as
    /// [`VmError::blame`] tells.
    Vm(VmError),
    /// No memory budget left for the instance.
    NoMemory,
}

/// The response for a failed invocation of `name`.
pub fn invocation_error(name: &str, failure: Failure) -> ApiError {
    let bad_gateway = |code, message| ApiError::new(StatusCode::BAD_GATEWAY, code, message);
    let e = match failure {
        Failure::Trapped { message, stderr } => {
            let tail = &stderr[stderr.len().saturating_sub(1024)..];
            let mut message = format!("`{name}` trapped: {}", message.trim_end());
            if !tail.is_empty() {
                message += &format!("; stderr: {}", String::from_utf8_lossy(tail).trim_end());
            }
            return bad_gateway("function_trapped", message);
        }
        Failure::NoMemory => return ApiError::memory_budget(),
        Failure::Vm(e) => e,
    };
    match (&e, e.blame()) {
        (VmError::Timeout(limit), _) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "function_timeout",
            format!("`{name}` ran past its timeout of {} ms", limit.as_millis()),
        ),
        (VmError::OutOfMemory(message), _) => bad_gateway(
            "function_out_of_memory",
            format!("{message} (raise memory_mib)"),
        ),
        (VmError::OutputLimit(limit), _) => bad_gateway(
            "function_output_limit",
            format!("`{name}` wrote more than {limit} bytes of output"),
        ),
        (_, Blame::Guest) => bad_gateway(
            "function_crashed",
            format!("`{name}` crashed its instance: {}", chain(&e)),
        ),
        (_, Blame::Exhausted) => ApiError::overloaded(format!(
            "the host cannot start another instance now: {}",
            chain(&e)
        )),
        (_, Blame::Host | Blame::Caller) => {
            ApiError::internal(format!("running `{name}`: {}", chain(&e)))
        }
    }
}

/// The response for a deploy whose boot to ready failed: the module's (or
/// its settings') fault is a 422, exhaustion a 503, the host's a 500.
pub fn boot_error(e: VmError) -> ApiError {
    match (&e, e.blame()) {
        (VmError::Timeout(limit), _) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "init_timeout",
            format!(
                "the module did not get ready (instantiation and wisp_init) within init_timeout_ms = {}",
                limit.as_millis()
            ),
        ),
        (_, Blame::Guest) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_module",
            format!("the module cannot start: {}", chain(&e)),
        ),
        (_, Blame::Caller) => ApiError::invalid_config(chain(&e)),
        (_, Blame::Exhausted) => {
            ApiError::overloaded(format!("booting the module: {}", chain(&e)))
        }
        (_, Blame::Host) => ApiError::internal(format!("booting the module: {}", chain(&e))),
    }
}

/// The response for a handler on a runtime whose boot to its first event
/// failed: the handler did not load (its import raised, a syntax error, no
/// such function), in the interpreter's words.
pub fn handler_error(e: VmError) -> ApiError {
    match e {
        VmError::EndedDuringInit { outcome, stderr } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_handler",
            format!(
                "the handler did not load ({}): {}",
                match outcome {
                    Outcome::Exited(code) => format!("exit status {code}"),
                    Outcome::Trapped(trap) => format!("the runtime trapped: {trap}"),
                },
                stderr.trim_end()
            ),
        ),
        e => boot_error(e),
    }
}

/// The response for a module the compiler refused.
pub fn compile_error(e: CompileError) -> ApiError {
    match e {
        CompileError::Engine(_) => ApiError::internal(e.to_string()),
        e => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_module",
            e.to_string(),
        ),
    }
}

/// A failure to write state: a full disk is `507 insufficient_storage`
/// (the previous version keeps serving), anything else a 500.
pub fn storage_error(what: &str, e: &(dyn std::error::Error + 'static)) -> ApiError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cause {
        let disk_full = err.downcast_ref::<std::io::Error>().is_some_and(|io| {
            io.raw_os_error() == Some(libc::ENOSPC) || io.kind() == std::io::ErrorKind::StorageFull
        }) || err
            .downcast_ref::<rusqlite::Error>()
            .is_some_and(|db| db.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull));
        if disk_full {
            return ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                format!("{what}: the state directory's disk is full; nothing was changed"),
            );
        }
        cause = err.source();
    }
    ApiError::internal(format!("{what}: {}", chain(e)))
}

/// Maps an image-store failure of a deploy by image.
pub fn image_error(e: &ImageError) -> ApiError {
    match e {
        ImageError::InvalidReference { .. } | ImageError::Ambiguous { .. } => {
            ApiError::bad_request("invalid_image_reference", e.to_string())
        }
        ImageError::NotFound(reference) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "image_not_found",
            format!("no image `{reference}` in the daemon's image store (STATE/images): build or import it there first"),
        ),
        ImageError::Corrupt { .. }
        | ImageError::MissingBlob(_)
        | ImageError::NotRegularFile { .. } => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "image_corrupt",
            format!("{}; nothing was deployed", chain(e)),
        ),
        ImageError::InvalidImage(_) | ImageError::NotWasm(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_module",
            chain(e),
        ),
        // What the image holds, not the store's state: the client's to fix.
        ImageError::InvalidLayer { .. } | ImageError::InvalidFile { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_image",
            format!("{}; nothing was deployed", chain(e)),
        ),
        ImageError::Busy { .. } => ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "image_store_busy",
                format!("{}; nothing was deployed", chain(e)),
            )
        },
        e => storage_error("the image store", e),
    }
}

/// A registry's error, by whose it is to fix: a bad reference is the
/// client's (400), an image the registry lacks is `image_not_found` (422,
/// as for the local store), and a registry that cannot be reached, refuses
/// the daemon's credentials, serves bytes that do not match their digest
/// or breaks the protocol is a bad gateway (502), each with its own code.
pub fn registry_error(e: &RegistryError) -> ApiError {
    let gateway = |code| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            code,
            format!("{}; nothing was deployed", chain(e)),
        )
    };
    match e {
        RegistryError::InvalidReference { .. } => {
            ApiError::bad_request("invalid_image_reference", e.to_string())
        }
        RegistryError::NotFound { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "image_not_found",
            chain(e),
        ),
        RegistryError::Unreachable { .. } => gateway("registry_unreachable"),
        RegistryError::Denied { .. } => gateway("registry_denied"),
        RegistryError::Mismatch { .. } => gateway("registry_digest_mismatch"),
        RegistryError::Protocol { .. } => gateway("registry_error"),
        RegistryError::Unsupported(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_image",
            format!("{}; nothing was deployed", chain(e)),
        ),
        RegistryError::Image(image) => image_error(image),
        RegistryError::Credentials { .. } | RegistryError::Io { .. } => {
            storage_error("pulling the image", e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use wisp_vmm::{ConfigError, ProtocolError};

    fn errno(n: i32) -> std::io::Error {
        std::io::Error::from_raw_os_error(n)
    }

    #[test]
    fn exhaustion_is_503_with_retry_after() {
        for n in [libc::ENOMEM, libc::EMFILE, libc::ENFILE] {
            let e = invocation_error(
                "f",
                Failure::Vm(VmError::MapMemory {
                    mib: 128,
                    source: Box::new(errno(n)),
                }),
            );
            assert_eq!(
                (e.status, e.code, e.retry_after),
                (StatusCode::SERVICE_UNAVAILABLE, "host_overloaded", Some(1))
            );
            assert!(e.is_rejection());
        }
    }

    #[test]
    fn the_guests_failures_are_502s_and_the_hosts_500s() {
        let e = invocation_error("f", Failure::Vm(VmError::Protocol(ProtocolError::Halted)));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_GATEWAY, "function_crashed")
        );
        let e = invocation_error("f", Failure::Vm(VmError::Timeout(Duration::from_millis(5))));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::GATEWAY_TIMEOUT, "function_timeout")
        );
        let e = invocation_error("f", Failure::Vm(VmError::ReadSnapshot(errno(libc::EIO))));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        );
        let e = invocation_error("f", Failure::NoMemory);
        assert_eq!(
            (e.status, e.code),
            (StatusCode::TOO_MANY_REQUESTS, "memory_budget")
        );
    }

    #[test]
    fn a_boot_that_cannot_fit_its_settings_is_invalid_config() {
        let e = boot_error(VmError::Config(ConfigError::TooSmall {
            mem_mib: 16,
            module_kib: 30_000,
            files_kib: 0,
        }));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "invalid_config")
        );
        let e = boot_error(VmError::Timeout(Duration::from_secs(10)));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::UNPROCESSABLE_ENTITY, "init_timeout")
        );
    }

    #[test]
    fn messages_carry_the_whole_chain_once() {
        let e = VmError::MapMemory {
            mib: 64,
            source: Box::new(errno(libc::ENOMEM)),
        };
        let text = chain(&e);
        assert!(
            text.starts_with("mapping 64 MiB of guest memory: "),
            "{text}"
        );
        assert_eq!(text.matches("os error 12").count(), 1, "{text}");
    }
}
