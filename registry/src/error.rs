//! What can go wrong talking to a registry, sorted by whose it is to fix:
//! the reference (the caller's), the registry (unreachable, refusing,
//! serving wrong bytes) or the local store.

use std::path::PathBuf;

use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};

/// A registry operation's error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reference is not a valid registry reference.
    #[error("invalid registry reference `{reference}`: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// Why it is refused.
        reason: String,
    },
    /// The docker-style `config.json` could not be used.
    #[error("credentials in {}: {reason}", .path.display())]
    Credentials {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry could not be reached, or the connection was lost.
    #[error("registry {registry} is unreachable: {detail}")]
    Unreachable {
        /// The registry's host (and port).
        registry: String,
        /// What the connection said.
        detail: String,
    },
    /// The registry has no such repository, tag or manifest.
    #[error("registry {registry} has no image `{reference}`: {detail}")]
    NotFound {
        /// The registry's host (and port).
        registry: String,
        /// The reference asked for.
        reference: String,
        /// What the registry said.
        detail: String,
    },
    /// The registry refused the credentials (or their absence).
    #[error("registry {registry} refused access (check the credentials in $DOCKER_CONFIG/config.json or ~/.docker/config.json): {detail}")]
    Denied {
        /// The registry's host (and port).
        registry: String,
        /// What the registry said.
        detail: String,
    },
    /// The registry served content that does not match its digest or size:
    /// nothing of it is kept.
    #[error("registry {registry} served {what} whose content does not match its digest: expected {expected}, got {actual}; nothing of it was stored")]
    Mismatch {
        /// The registry's host (and port).
        registry: String,
        /// Which content.
        what: String,
        /// What the descriptor said.
        expected: String,
        /// What came.
        actual: String,
    },
    /// The registry answered something else the distribution spec does
    /// not allow, or failed (a 5xx).
    #[error("registry {registry}: {detail}")]
    Protocol {
        /// The registry's host (and port).
        registry: String,
        /// What happened.
        detail: String,
    },
    /// The image is not one wisp can store (its manifest's type, its
    /// layers, its size).
    #[error("{0}")]
    Unsupported(String),
    /// The local image store refused the image or failed.
    #[error(transparent)]
    Image(#[from] wisp_images::Error),
    /// Reading or writing a local file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Sorts an `oci-client` error for `registry` (doing `what` to
/// `reference`) into the variants above.
pub(crate) fn classify(e: OciDistributionError, registry: &str, reference: &str) -> Error {
    let registry = registry.to_string();
    let not_found = |detail: String| Error::NotFound {
        registry: registry.clone(),
        reference: reference.to_string(),
        detail,
    };
    match e {
        OciDistributionError::RequestError(r) if r.is_connect() || r.is_timeout() => {
            Error::Unreachable {
                registry,
                detail: chain(&r),
            }
        }
        OciDistributionError::RequestError(r) if r.is_request() || r.is_body() => {
            Error::Unreachable {
                registry,
                detail: format!("the connection failed: {}", chain(&r)),
            }
        }
        OciDistributionError::IoError(e) => io_stream_error(e, &registry, reference),
        OciDistributionError::UnauthorizedError { url } => Error::Denied {
            registry,
            detail: format!("401 Unauthorized for {url}"),
        },
        OciDistributionError::AuthenticationFailure(detail) => Error::Denied { registry, detail },
        OciDistributionError::ImageManifestNotFoundError(detail) => not_found(detail),
        OciDistributionError::RegistryError { envelope, url } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let detail = format!("{envelope} ({url})");
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                not_found(detail)
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                Error::Denied { registry, detail }
            } else {
                Error::Protocol { registry, detail }
            }
        }
        OciDistributionError::ServerError { code, url, message } => {
            let detail = format!("HTTP {code} for {url}: {}", message.trim());
            match code {
                404 => not_found(detail),
                401 | 403 => Error::Denied { registry, detail },
                _ => Error::Protocol { registry, detail },
            }
        }
        OciDistributionError::DigestError(d) => digest_mismatch(&d, &registry, reference),
        e => Error::Protocol {
            registry,
            detail: e.to_string(),
        },
    }
}

/// Sorts an error of a blob's byte stream: `oci-client` reports a digest
/// that does not match as an I/O error wrapping its digest error.
pub(crate) fn io_stream_error(e: std::io::Error, registry: &str, what: &str) -> Error {
    let inner = e.get_ref();
    if let Some(d) = inner.and_then(|i| i.downcast_ref::<DigestError>()) {
        return digest_mismatch(d, registry, what);
    }
    Error::Unreachable {
        registry: registry.to_string(),
        detail: format!("the connection failed while reading {what}: {}", chain(&e)),
    }
}

/// `oci-client`'s own check of a digest, as a [`Error::Mismatch`].
fn digest_mismatch(d: &DigestError, registry: &str, what: &str) -> Error {
    let (expected, actual) = match d {
        DigestError::VerificationError { expected, actual } => (expected.clone(), actual.clone()),
        other => ("a valid digest".to_string(), other.to_string()),
    };
    Error::Mismatch {
        registry: registry.to_string(),
        what: what.to_string(),
        expected,
        actual,
    }
}

/// An error and its sources, `: `-separated (reqwest's own message is
/// only "error sending request").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_answers_are_sorted_by_whose_they_are_to_fix() {
        let server = |code: u16| OciDistributionError::ServerError {
            code,
            url: "http://r/v2/x/manifests/1".into(),
            message: "no".into(),
        };
        assert!(matches!(
            classify(server(404), "r", "r/x:1"),
            Error::NotFound { .. }
        ));
        assert!(matches!(
            classify(server(403), "r", "r/x:1"),
            Error::Denied { .. }
        ));
        assert!(matches!(
            classify(server(500), "r", "r/x:1"),
            Error::Protocol { .. }
        ));
        let envelope: oci_client::errors::OciEnvelope = serde_json::from_str(
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        )
        .unwrap();
        let e = classify(
            OciDistributionError::RegistryError {
                envelope,
                url: "u".into(),
            },
            "r",
            "r/x:1",
        );
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
        let e = classify(
            OciDistributionError::UnauthorizedError { url: "u".into() },
            "r",
            "r/x:1",
        );
        assert!(matches!(e, Error::Denied { .. }), "{e}");
    }

    #[test]
    fn a_digest_error_in_a_stream_is_a_mismatch() {
        let d = DigestError::VerificationError {
            expected: "sha256:aa".into(),
            actual: "sha256:bb".into(),
        };
        let e = io_stream_error(std::io::Error::other(d), "r", "blob sha256:aa");
        assert!(
            matches!(&e, Error::Mismatch { expected, actual, .. } if expected == "sha256:aa" && actual == "sha256:bb"),
            "{e}"
        );
        let e = io_stream_error(std::io::Error::other("reset"), "r", "blob");
        assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    }
}
