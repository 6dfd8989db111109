//! The shim's errors, and the ttrpc status codes containerd reads from
//! them (`NotFound` and `FailedPrecondition` are what its task service
//! maps to errdefs).

use containerd_shim::protos::ttrpc;
use thiserror::Error;

/// Why a request to the shim failed.
#[derive(Debug, Error)]
pub enum ShimError {
    /// A file or system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What the shim was doing.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is not a runtime spec the shim can read.
    #[error("reading config.json: {0}")]
    Spec(#[source] serde_json::Error),
    /// The process has no args to name the module, and the rootfs has
    /// not exactly one `.wasm` file at its top.
    #[error("the container's process has no args and its image not exactly one .wasm file at the top: give an entrypoint or command naming the module")]
    NoModule,
    /// args[0] or its symlinks lead out of the rootfs.
    #[error("the module path {0:?} leaves the container's root filesystem")]
    Escape(String),
    /// A terminal was requested.
    #[error("wisp containers have no terminal (run without -t/--tty)")]
    Terminal,
    /// An exec process was requested.
    #[error("wisp containers run one module: exec is not supported")]
    Exec,
    /// No container of that id in this shim.
    #[error("container {0} not found")]
    NotFound(String),
    /// A container of that id already exists.
    #[error("container {0} already exists")]
    Exists(String),
    /// The request does not fit the container's state.
    #[error("container {id} is {state}: cannot {action}")]
    State {
        /// The container.
        id: String,
        /// Its state.
        state: &'static str,
        /// What was asked.
        action: &'static str,
    },
    /// Mounting or unmounting the rootfs failed.
    #[error("rootfs: {0}")]
    Rootfs(String),
    /// The `wisp` binary is nowhere the shim looks.
    #[error("cannot find the `wisp` binary next to the shim ({0}) or on PATH")]
    NoWisp(String),
}

impl ShimError {
    /// An [`ShimError::Io`] of `source` while doing `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> ShimError {
        ShimError::Io {
            what: what.into(),
            source,
        }
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> ttrpc::Error {
        let code = match &e {
            ShimError::NotFound(_) => ttrpc::Code::NOT_FOUND,
            ShimError::Exists(_) => ttrpc::Code::ALREADY_EXISTS,
            ShimError::State { .. } => ttrpc::Code::FAILED_PRECONDITION,
            ShimError::Exec | ShimError::Terminal => ttrpc::Code::UNIMPLEMENTED,
            ShimError::Spec(_) | ShimError::NoModule | ShimError::Escape(_) => {
                ttrpc::Code::INVALID_ARGUMENT
            }
            ShimError::Io { .. } | ShimError::Rootfs(_) | ShimError::NoWisp(_) => {
                ttrpc::Code::INTERNAL
            }
        };
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, e.to_string()))
    }
}
