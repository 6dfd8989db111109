//! A real `wisp serve` in a temporary directory, for tests that talk to
//! the daemon over its socket.

use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use wisp::api::{DeployRequest, FunctionConfig};
use wisp::client::{Client, Response};
use wisp_bench::daemon_process::DaemonProcess;

/// A running daemon; killed when dropped, its log printed if the test
/// failed.
pub struct Daemon {
    process: Option<DaemonProcess>,
    /// Its socket.
    pub socket: std::path::PathBuf,
    /// Its state directory.
    pub state: std::path::PathBuf,
}

impl Daemon {
    /// Starts a daemon with a fresh state directory.
    pub fn start() -> Daemon {
        Daemon::spawn(None, &[])
    }

    /// Starts a daemon with a fresh state directory and extra `serve` flags.
    pub fn start_with(flags: &[&str]) -> Daemon {
        Daemon::spawn(None, flags)
    }

    /// Starts a daemon on the state in `dir` (which outlives it).
    pub fn start_in(dir: &Path) -> Daemon {
        Daemon::spawn(Some(dir), &[])
    }

    /// Starts a daemon on the state in `dir` with extra `serve` flags.
    pub fn start_in_with(dir: &Path, flags: &[&str]) -> Daemon {
        Daemon::spawn(Some(dir), flags)
    }

    /// Starts a daemon on the state in `dir` with `env` added to its
    /// environment.
    pub fn start_in_with_env(dir: &Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn_with_env(Some(dir), &[], env)
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, DaemonProcess::pid)
    }

    fn spawn(dir: Option<&Path>, flags: &[&str]) -> Daemon {
        Daemon::spawn_with_env(dir, flags, &[])
    }

    fn spawn_with_env(dir: Option<&Path>, flags: &[&str], env: &[(&str, &str)]) -> Daemon {
        super::require_kvm();
        let binary = Path::new(env!("CARGO_BIN_EXE_wisp"));
        let process = DaemonProcess::start_with_env(binary, dir, flags, env)
            .unwrap_or_else(|e| panic!("{e}"));
        Daemon {
            socket: process.socket().to_path_buf(),
            state: process.state_dir().to_path_buf(),
            process: Some(process),
        }
    }

    /// Kills the daemon with SIGKILL and waits for it.
    pub fn kill(mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }

    /// A client of this daemon.
    pub fn client(&self) -> Client {
        Client::new(&self.socket)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            if std::thread::panicking() {
                eprintln!("--- wisp serve log ---\n{}", process.log_text());
            }
        }
    }
}

/// A daemon shared by the tests of one binary that run at the same time:
/// started by the first to ask, killed when the last holder lets go. Tests
/// on it must not depend on what others deploy, so each uses function
/// names of its own.
pub fn shared() -> Arc<Daemon> {
    static SHARED: Mutex<Weak<Daemon>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(daemon) = shared.upgrade() {
        return daemon;
    }
    let daemon = Arc::new(Daemon::start());
    *shared = Arc::downgrade(&daemon);
    daemon
}

/// A deploy request for a fixture (or example) module.
pub fn deploy_request(module: &Path, config: FunctionConfig) -> Bytes {
    let bytes = std::fs::read(module).unwrap();
    let request = DeployRequest::module(&bytes, config);
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

/// `PUT /v1/functions/{name}` of `{"image": reference}` on the daemon at
/// `socket`, which must be answered within `within`.
pub fn deploy_image(socket: &Path, name: &str, reference: &str, within: Duration) -> Response {
    let client = Client::new(socket);
    let body = serde_json::to_vec(&serde_json::json!({ "image": reference })).unwrap();
    block_on(async {
        tokio::time::timeout(
            within,
            client.request(
                Method::PUT,
                &format!("/v1/functions/{name}"),
                Bytes::from(body),
            ),
        )
        .await
        .expect("the deploy was answered")
        .unwrap()
    })
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

/// `GET /v1/functions`: each served function's name and version.
pub async fn listed(client: &Client) -> std::collections::BTreeSet<(String, u64)> {
    let r = client
        .request(Method::GET, "/v1/functions", Bytes::new())
        .await
        .unwrap();
    let list: wisp::api::FunctionList = serde_json::from_slice(&r.body).unwrap();
    list.functions
        .into_iter()
        .map(|f| (f.name, f.version))
        .collect()
}

/// The error code of an error response.
pub fn code(response: &Response) -> String {
    response
        .error()
        .unwrap_or_else(|| panic!("not a JSON error: {response:?}"))
        .error
        .code
}
