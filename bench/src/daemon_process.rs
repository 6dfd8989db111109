//! A `wisp serve` run as a child process on a private socket and state
//! directory: what the benchmarks and the integration tests use to get a
//! real daemon. Killed when dropped.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use wisp::client::Client;

/// How long a daemon may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running daemon child process.
pub struct DaemonProcess {
    child: Child,
    socket: PathBuf,
    state_dir: PathBuf,
    log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl DaemonProcess {
    /// Starts `binary serve` with extra `flags`, its socket, state and log
    /// in `dir` (a fresh temporary directory if `None`), and waits until it
    /// answers requests. The error carries the daemon's log.
    pub fn start(
        binary: &Path,
        dir: Option<&Path>,
        flags: &[&str],
    ) -> Result<DaemonProcess, String> {
        DaemonProcess::start_with_env(binary, dir, flags, &[])
    }

    /// Like [`DaemonProcess::start`], with `env` added to the daemon's
    /// environment.
    pub fn start_with_env(
        binary: &Path,
        dir: Option<&Path>,
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> Result<DaemonProcess, String> {
        let tmp = match dir {
            Some(_) => None,
            None => Some(tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?),
        };
        let root = dir.or(tmp.as_ref().map(|t| t.path())).expect("a directory");
        let socket = root.join("wisp.sock");
        let state_dir = root.join("state");
        let log = root.join("daemon.log");
        let log_file = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(binary)
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(&state_dir)
            .args(flags)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let mut daemon = DaemonProcess {
            child,
            socket,
            state_dir,
            log,
            _tmp: tmp,
        };
        let t0 = Instant::now();
        while !answers(&daemon.socket, START_TIMEOUT) {
            if let Some(status) = daemon.exited() {
                return Err(format!(
                    "wisp serve exited ({status}) before answering:\n{}",
                    daemon.log_text()
                ));
            }
            if t0.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "wisp serve did not answer within {START_TIMEOUT:?}:\n{}",
                    daemon.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(daemon)
    }

    /// Its socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Its state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// A client of it.
    pub fn client(&self) -> Client {
        Client::new(&self.socket)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Everything it logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills it with SIGKILL and waits for it.
    pub fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the daemon on `socket` answers `GET /healthz` within `timeout`.
/// Accepting a connection is not enough: the daemon binds its socket
/// before it brings its functions back (and fixes the image pins), and
/// answers only after.
fn answers(socket: &Path, timeout: Duration) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let mut head = [0u8; 12];
    stream.set_read_timeout(Some(timeout)).is_ok()
        && stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: wisp\r\nconnection: close\r\n\r\n")
            .is_ok()
        && stream.read_exact(&mut head).is_ok()
        && &head == b"HTTP/1.1 200"
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
