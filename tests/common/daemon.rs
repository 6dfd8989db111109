//! A real `wisp serve` in a temporary directory, for tests that talk to
//! the daemon over its socket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use hyper::Method;
use wisp::api::{DeployRequest, FunctionConfig};
use wisp::client::{Client, Response};

/// A running daemon; killed when dropped.
pub struct Daemon {
    child: Child,
    /// Its socket.
    pub socket: PathBuf,
    /// Its state directory.
    pub state: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Daemon {
    /// Starts a daemon with a fresh state directory.
    pub fn start() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let mut daemon = Daemon::start_in(dir.path());
        daemon._dir = Some(dir);
        daemon
    }

    /// Starts a daemon with a fresh state directory and extra `serve` flags.
    pub fn start_with(flags: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let mut daemon = Daemon::spawn(dir.path(), flags);
        daemon._dir = Some(dir);
        daemon
    }

    /// Starts a daemon on the state in `dir` (which outlives it).
    pub fn start_in(dir: &Path) -> Daemon {
        Daemon::spawn(dir, &[])
    }

    fn spawn(dir: &Path, flags: &[&str]) -> Daemon {
        super::require_kvm();
        let socket = dir.join("wisp.sock");
        let state = dir.join("state");
        let child = Command::new(env!("CARGO_BIN_EXE_wisp"))
            .args(["serve", "--socket"])
            .arg(&socket)
            .arg("--state-dir")
            .arg(&state)
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wisp serve");
        let daemon = Daemon {
            child,
            socket,
            state,
            _dir: None,
        };
        let t0 = Instant::now();
        while std::os::unix::net::UnixStream::connect(&daemon.socket).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    /// Kills the daemon with SIGKILL and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A client of this daemon.
    pub fn client(&self) -> Client {
        Client::new(&self.socket)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A deploy request for a fixture (or example) module.
pub fn deploy_request(module: &Path, config: FunctionConfig) -> Bytes {
    let bytes = std::fs::read(module).unwrap();
    let request = DeployRequest {
        module_base64: base64::engine::general_purpose::STANDARD.encode(bytes),
        config,
    };
    Bytes::from(serde_json::to_vec(&request).unwrap())
}

/// Runs `f` on a fresh single-threaded runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// `PUT /v1/functions/{name}` with `module` and `config`.
pub async fn deploy(
    client: &Client,
    name: &str,
    module: &Path,
    config: FunctionConfig,
) -> Response {
    client
        .request(
            Method::PUT,
            &format!("/v1/functions/{name}"),
            deploy_request(module, config),
        )
        .await
        .unwrap()
}

/// `POST /v1/functions/{name}/invoke` with `stdin`.
pub async fn invoke(client: &Client, name: &str, stdin: &[u8]) -> Response {
    client
        .request(
            Method::POST,
            &format!("/v1/functions/{name}/invoke"),
            Bytes::copy_from_slice(stdin),
        )
        .await
        .unwrap()
}

/// The error code of an error response.
pub fn code(response: &Response) -> String {
    response
        .error()
        .unwrap_or_else(|| panic!("not a JSON error: {response:?}"))
        .error
        .code
}
