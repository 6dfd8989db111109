//! The daemon when the machine misbehaves: killed with SIGKILL during
//! invocations and at each point of a deploy (caught from its state
//! directory), and a full disk.
//! Nothing deployed may be lost and no half-written snapshot may be used.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::daemon::{block_on, code, deploy, invoke, Daemon};
use nix::sys::signal::Signal;
use sha2::Digest as _;
use wisp::api::{DeployRequest, FunctionConfig, FunctionInfo};
use wisp::client::Connection;

/// Leftover temporary snapshot directories under the state directory.
fn temp_dirs(state: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for function in std::fs::read_dir(state.join("functions"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for entry in std::fs::read_dir(function.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                found.push(name);
            }
        }
    }
    found
}

#[test]
fn kill_9_during_invocations_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(dir.path());
    let socket = daemon.socket.clone();
    block_on(async {
        let r = deploy(
            &daemon.client(),
            "hello",
            &common::example("hello.wat"),
            FunctionConfig::default(),
        )
        .await;
        assert_eq!(r.status, 201);
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..16)
            .map(|_| {
                let (socket, stop) = (socket.clone(), Arc::clone(&stop));
                tokio::spawn(async move {
                    let Ok(mut conn) = Connection::open(&socket).await else {
                        return;
                    };
                    while !stop.load(Ordering::Acquire) {
                        let path = "/v1/functions/hello/invoke";
                        if conn
                            .send(hyper::Method::POST, path, bytes::Bytes::new())
                            .await
                            .is_err()
                        {
                            return; // the daemon died under us, as intended
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        daemon.kill();
        stop.store(true, Ordering::Release);
        for c in clients {
            c.await.unwrap();
        }
    });
    let daemon = Daemon::start_in(dir.path());
    block_on(async {
        let r = invoke(&daemon.client(), "hello", b"").await;
        assert_eq!(&r.body[..], b"hello, world!\n");
    });
}

/// Where an update of `f` to version `version` stands, read from the state
/// directory (layout in `src/daemon/store.rs`) and the registry. The
/// phases come in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// The new module is stored; its artifact is not cached yet.
    Compiling,
    /// The artifact is cached; no snapshot directory yet.
    Booting,
    /// The snapshot's temporary directory exists.
    WritingSnapshot,
    /// The snapshot is in place; the registry still has the old version.
    Snapshotted,
    /// The registry has the new version.
    Registered,
}

/// An update in flight: its module and the version it will get.
struct Update {
    module: Vec<u8>,
    sha256: String,
    version: u64,
}

impl Update {
    /// `exit_code.wat` made unique with a custom section naming `attempt`,
    /// so that no earlier attempt's stored module or cached artifact can
    /// be mistaken for this one's.
    fn new(attempt: usize, version: u64) -> Update {
        let mut module = wat::parse_file(common::fixture("exit_code.wat")).unwrap();
        let name = b"attempt";
        let payload = attempt.to_le_bytes();
        // Custom section: id 0, size, name length, name, payload (sizes
        // below 128 are one LEB128 byte).
        module.extend([0, (1 + name.len() + payload.len()) as u8, name.len() as u8]);
        module.extend_from_slice(name);
        module.extend_from_slice(&payload);
        let sha256 = format!("{:x}", sha2::Sha256::digest(&module));
        Update {
            module,
            sha256,
            version,
        }
    }

    /// The phase the state shows, `None` before the daemon stored the
    /// module and when the registry cannot be read this instant.
    fn phase(&self, state: &Path) -> Option<Phase> {
        self.phase_with(state, registered_version(state)?)
    }

    /// The phase a restart will find, with the daemon stopped: as
    /// [`Update::phase`], but with the registry as recovery reads it.
    fn phase_at_restart(&self, state: &Path) -> Option<Phase> {
        self.phase_with(state, version_at_restart(state)?)
    }

    fn phase_with(&self, state: &Path, registered: u64) -> Option<Phase> {
        if registered >= self.version {
            return Some(Phase::Registered);
        }
        let function = state.join("functions/f");
        if function.join(format!("v{}", self.version)).is_dir() {
            return Some(Phase::Snapshotted);
        }
        let temp = format!(".v{}.tmp-", self.version);
        if names(&function).iter().any(|n| n.starts_with(&temp)) {
            return Some(Phase::WritingSnapshot);
        }
        let artifacts = state.join("images/artifacts").join(&self.sha256);
        if names(&artifacts).iter().any(|n| n.ends_with(".json")) {
            return Some(Phase::Booting);
        }
        let module = state.join(format!("modules/{}.wasm", self.sha256));
        module.exists().then_some(Phase::Compiling)
    }
}

/// The names in `dir` (none if it does not exist).
fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The version of `f` the registry has committed as `live` (0 if none); `None` if
/// the database cannot be read this instant (a stopped writer can hold
/// it). Read-only, so that looking cannot change what the daemon finds.
fn registered_version(state: &Path) -> Option<u64> {
    let db = rusqlite::Connection::open_with_flags(
        state.join("wisp.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .ok()?;
    let version: Option<i64> = db
        .query_row(
            "SELECT version FROM aliases WHERE name = 'f' AND alias = 'live'",
            [],
            |r| r.get(0),
        )
        .ok();
    Some(version.unwrap_or(0) as u64)
}

/// The version of `f` a restarted daemon will find. A commit the daemon
/// wrote to the write-ahead log but had not yet published in its shared
/// index is invisible to [`registered_version`], yet recovery replays it;
/// so the database and its log are copied, without the index, and opened
/// there, where SQLite rebuilds the index from the log as recovery does.
fn version_at_restart(state: &Path) -> Option<u64> {
    let copy = tempfile::tempdir().ok()?;
    std::fs::copy(state.join("wisp.db"), copy.path().join("wisp.db")).ok()?;
    let wal = state.join("wisp.db-wal");
    if wal.exists() {
        std::fs::copy(&wal, copy.path().join("wisp.db-wal")).ok()?;
    }
    registered_version(copy.path())
}

/// Waits until every thread of the daemon has stopped: `kill` returns
/// before they do, and a thread inside a system call (a write, a rename)
/// finishes it first. False if one has not within a second: a thread can
/// sit in uninterruptible sleep on something a stopped thread must do.
fn wait_stopped(daemon: &Daemon) -> bool {
    let tasks = format!("/proc/{}/task", daemon.pid());
    for _ in 0..10_000 {
        let stopped = names(Path::new(&tasks)).iter().all(|tid| {
            let stat = std::fs::read_to_string(format!("{tasks}/{tid}/stat")).unwrap_or_default();
            // The state follows the command name's closing parenthesis.
            stat.rsplit_once(')')
                .is_none_or(|(_, rest)| rest.trim_start().starts_with('T'))
        });
        if stopped {
            return true;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    false
}

/// Sends `sig` to the daemon's process.
fn signal(daemon: &Daemon, sig: Signal) {
    let pid = nix::unistd::Pid::from_raw(daemon.pid() as i32);
    nix::sys::signal::kill(pid, sig).expect("signal the daemon");
}

/// Sends `update` and kills the daemon with SIGKILL once the state shows
/// `phase`: polled, then confirmed with the daemon stopped (SIGSTOP), so
/// the state at the kill is the one seen. Gives the daemon back if the
/// update got past `phase` first; true if the kill landed.
fn kill_at(daemon: &mut Option<Daemon>, update: &Update, phase: Phase) -> bool {
    let d = daemon.take().unwrap();
    let socket = d.socket.clone();
    let request = DeployRequest::module(&update.module, FunctionConfig::default());
    let sender = std::thread::spawn(move || {
        block_on(async {
            let client = wisp::client::Client::new(&socket);
            let body = bytes::Bytes::from(serde_json::to_vec(&request).unwrap());
            let _ = client
                .request(hyper::Method::PUT, "/v1/functions/f", body)
                .await;
        })
    });
    let caught = loop {
        let seen = update.phase(&d.state);
        if seen == Some(phase) {
            signal(&d, Signal::SIGSTOP);
            if wait_stopped(&d) && update.phase_at_restart(&d.state) == Some(phase) {
                break true;
            }
            signal(&d, Signal::SIGCONT);
            break false;
        }
        if seen > Some(phase) || sender.is_finished() {
            break false;
        }
        std::thread::sleep(Duration::from_micros(100));
    };
    if caught {
        d.kill();
    } else {
        *daemon = Some(d);
    }
    sender.join().unwrap();
    caught
}

/// (Re)deploys hello as `f` and returns its version.
fn deploy_hello(daemon: &Daemon) -> u64 {
    block_on(async {
        let r = deploy(
            &daemon.client(),
            "f",
            &common::example("hello.wat"),
            FunctionConfig::default(),
        )
        .await;
        assert!(r.status == 200 || r.status == 201, "{r:?}");
        serde_json::from_slice::<FunctionInfo>(&r.body)
            .unwrap()
            .version
    })
}

#[test]
fn kill_9_during_a_deploy_leaves_the_old_or_the_new_version() {
    use Phase::*;
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Some(Daemon::start_in(dir.path()));
    let mut old = deploy_hello(daemon.as_ref().unwrap());
    let mut attempt = 0;
    // Each point of an update, the output that must answer after the
    // kill and a restart, and the version the function must have.
    for (phase, want) in [
        (Compiling, "old"),
        (Booting, "old"),
        (WritingSnapshot, "old"),
        (Snapshotted, "old"),
        (Registered, "new"),
    ] {
        // The phases last milliseconds: poll until one is caught.
        let update = loop {
            attempt += 1;
            assert!(
                attempt <= 100,
                "never caught the daemon in {phase:?}: that kill point was not reached"
            );
            let update = Update::new(attempt, old + 1);
            if kill_at(&mut daemon, &update, phase) {
                break update;
            }
            // Missed: the update went through; back to the old version.
            old = deploy_hello(daemon.as_ref().unwrap());
        };
        let restarted = Daemon::start_in(dir.path());
        let (body, version) = block_on(async {
            let r = invoke(&restarted.client(), "f", b"").await;
            assert_eq!(r.status, 200, "after a kill in {phase:?}: {r:?}");
            let r2 = restarted
                .client()
                .request(hyper::Method::GET, "/v1/functions/f", bytes::Bytes::new())
                .await
                .unwrap();
            let info: FunctionInfo = serde_json::from_slice(&r2.body).unwrap();
            (r.body, info.version)
        });
        let got = match &body[..] {
            b"hello, world!\n" => ("old", old),
            b"to stdout\n" => ("new", update.version),
            other => panic!("after a kill in {phase:?}: unexpected output {other:?}"),
        };
        assert_eq!(got, (want, version), "after a kill in {phase:?}");
        assert!(
            temp_dirs(&restarted.state).is_empty(),
            "temporary snapshot directories left after a kill in {phase:?}: {:?}",
            temp_dirs(&restarted.state)
        );
        let orphan = restarted
            .state
            .join(format!("functions/f/v{}", update.version));
        assert_eq!(
            orphan.exists(),
            want == "new",
            "after a kill in {phase:?}: the unregistered snapshot must be gone, the registered one kept"
        );
        eprintln!("killed in {phase:?} (attempt {attempt}): {want} version serves");
        old = deploy_hello(&restarted);
        daemon = Some(restarted);
    }
}

/// A small ext4 filesystem (a loop-mounted image) at `dir`, unmounted when
/// dropped. Not tmpfs: reading a hole of a tmpfs file through a private
/// mapping allocates, so a full tmpfs cannot back snapshots at all.
struct SmallDisk {
    dir: std::path::PathBuf,
    _image: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(dir: &Path, mib: u32) -> SmallDisk {
        let images = tempfile::tempdir().unwrap();
        let image = images.path().join("disk.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(u64::from(mib) << 20)
            .unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let run = |cmd: &mut Command| {
            let status = cmd.status().map_err(|e| e.to_string());
            assert!(
                matches!(status, Ok(s) if s.success()),
                "\n\n*** {cmd:?} failed ({status:?}): the disk-full test needs mkfs.ext4 and root (loop mounts). ***\n\n"
            );
        };
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(dir));
        SmallDisk {
            dir: dir.to_path_buf(),
            _image: images,
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

#[test]
fn a_full_disk_fails_the_deploy_clearly_and_keeps_the_old_version() {
    let dir = tempfile::tempdir().unwrap();
    // The state directory is the small disk; the socket and log are not.
    let disk = SmallDisk::mount(&dir.path().join("state"), 64);
    let daemon = Daemon::start_in(dir.path());
    let client = daemon.client();
    block_on(async {
        let r = deploy(
            &client,
            "f",
            &common::example("hello.wat"),
            FunctionConfig::default(),
        )
        .await;
        assert_eq!(r.status, 201, "{r:?}");
    });
    // Fill the disk.
    let filler = disk.dir.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "count=128", "status=none"])
        .arg(format!("of={}", filler.display()))
        .status();
    block_on(async {
        let r = deploy(
            &client,
            "f",
            &common::fixture("exit_code.wat"),
            FunctionConfig::default(),
        )
        .await;
        assert_eq!(
            (r.status, code(&r).as_str()),
            (507, "insufficient_storage"),
            "{r:?}"
        );
        let r = invoke(&client, "f", b"").await;
        assert_eq!(
            &r.body[..],
            b"hello, world!\n",
            "the old version must keep serving"
        );
    });
    // With space again, the update goes through.
    std::fs::remove_file(&filler).unwrap();
    block_on(async {
        let r = deploy(
            &client,
            "f",
            &common::fixture("exit_code.wat"),
            FunctionConfig::default(),
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
        let r = invoke(&client, "f", b"").await;
        assert_eq!(&r.body[..], b"to stdout\n");
    });
    drop(daemon);
}
