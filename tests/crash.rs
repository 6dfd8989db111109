//! The daemon when the machine misbehaves: killed with SIGKILL during
//! invocations and during deploys (snapshot writes), and a full disk.
//! Nothing deployed may be lost and no half-written snapshot may be used.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::daemon::{block_on, code, deploy, invoke, Daemon};
use wisp::api::FunctionConfig;
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

#[test]
fn kill_9_during_a_deploy_leaves_the_old_or_the_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(dir.path());
    block_on(async {
        let r = deploy(
            &daemon.client(),
            "f",
            &common::example("hello.wat"),
            FunctionConfig::default(),
        )
        .await;
        assert_eq!(r.status, 201);
    });
    let mut daemon = Some(daemon);
    let mut outcomes = std::collections::BTreeSet::new();
    // Kill at different points of an update: compiling, booting, writing
    // the snapshot, registering.
    for delay_ms in [2, 10, 25, 40, 60, 80, 120, 200] {
        let d = daemon.take().unwrap();
        let socket = d.socket.clone();
        let update = std::thread::spawn(move || {
            block_on(async {
                let client = wisp::client::Client::new(&socket);
                let module = common::fixture("exit_code.wat");
                let _ = client
                    .request(
                        hyper::Method::PUT,
                        "/v1/functions/f",
                        common::daemon::deploy_request(&module, FunctionConfig::default()),
                    )
                    .await;
            })
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        d.kill();
        update.join().unwrap();
        let restarted = Daemon::start_in(dir.path());
        let body = block_on(async {
            let r = invoke(&restarted.client(), "f", b"").await;
            assert_eq!(r.status, 200, "after a kill at {delay_ms} ms: {r:?}");
            r.body
        });
        match &body[..] {
            b"hello, world!\n" => outcomes.insert("old"),
            b"to stdout\n" => outcomes.insert("new"),
            other => panic!("after a kill at {delay_ms} ms: unexpected output {other:?}"),
        };
        assert!(
            temp_dirs(&restarted.state).is_empty(),
            "temporary snapshot directories left after a restart: {:?}",
            temp_dirs(&restarted.state)
        );
        // Back to the old version for the next round.
        block_on(async {
            let r = deploy(
                &restarted.client(),
                "f",
                &common::example("hello.wat"),
                FunctionConfig::default(),
            )
            .await;
            assert!(r.status == 200 || r.status == 201, "{r:?}");
        });
        daemon = Some(restarted);
    }
    assert!(!outcomes.is_empty());
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
