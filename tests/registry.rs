//! Images from OCI registries end to end, against the CNCF distribution
//! registry (Debian's `docker-registry`) started on 127.0.0.1 by each
//! test: `wisp image push` and `pull` keep digests, skopeo copies what wisp
//! exports and wisp pulls what skopeo copies, deploying by a registry
//! reference pulls on first use and records the digest, a registry serving
//! wrong bytes leaves nothing in the store, and a killed pull leaves no
//! image and resumes.

mod common;

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::daemon::{block_on, Daemon};
use hyper::Method;
use serde_json::json;
use wisp_images::Store;

/// Fails the test loudly if `binary` (from Debian's `package`) is missing:
/// these tests must not pass by running nothing.
fn require(binary: &str, package: &str) -> PathBuf {
    let path = PathBuf::from(binary);
    if !path.exists() {
        panic!(
            "\n\n*** {binary} is missing: install Debian's `{package}` package \
             (scripts/test installs it). ***\n\n"
        );
    }
    path
}

/// A `docker-registry serve` on a free loopback port, storing in a
/// temporary directory; killed when dropped.
struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    host: String,
    /// Its storage root.
    storage: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let binary = require("/usr/bin/docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
                storage.display()
            ),
        )
        .unwrap();
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting docker-registry");
        let start = Instant::now();
        while TcpStream::connect(&host).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "docker-registry did not listen on {host}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Registry {
            child,
            host,
            storage,
            _dir: dir,
        }
    }

    /// The stored bytes of blob `digest` (`sha256:<hex>`).
    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wisp(args: &[&str]) -> Output {
    common::run(args, b"")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `wisp` and expects success; returns stdout, trimmed.
fn ok(args: &[&str]) -> String {
    common::ok(args).trim().to_string()
}

/// Builds `examples/hello.wat` with `files` bytes of files into `store`
/// as `tag`; returns the digest.
fn build(dir: &Path, store: &Path, tag: &str, files: usize) -> String {
    let files_dir = dir.join(format!("files-{files}"));
    fs::create_dir_all(files_dir.join("conf")).unwrap();
    fs::write(files_dir.join("conf/app.toml"), b"greeting = \"hi\"\n").unwrap();
    // Incompressible-looking bytes, so the layer is as large as asked.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..files)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(files_dir.join("big.bin"), data).unwrap();
    ok(&[
        "image",
        "build",
        s(&common::example("hello.wat")),
        "--files",
        s(&files_dir),
        "-t",
        tag,
        "--store",
        s(store),
    ])
}

/// The store holds no image and no blob (what a failed pull must leave),
/// and no pull's staging directory but those `keep` allows.
fn assert_empty(store: &Path) {
    let opened = Store::open(store).unwrap();
    assert!(opened.index().unwrap().is_empty(), "no image recorded");
    assert!(opened.blobs().list().unwrap().is_empty(), "no blob stored");
}

/// `PUT /v1/functions/{name}` of `{"image": reference}`, answered within
/// 120 s (a first deploy pulls).
fn deploy(daemon: &Daemon, name: &str, reference: &str) -> wisp::client::Response {
    common::daemon::deploy_image(&daemon.socket, name, reference, Duration::from_secs(120))
}

#[test]
fn push_pull_and_skopeo_keep_digests() {
    let skopeo = require("/usr/bin/skopeo", "skopeo");
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let digest = build(dir.path(), &a, "hello:1", 4096);
    let remote = format!("{}/team/hello:1", registry.host);
    assert_eq!(
        ok(&["image", "push", "hello:1", &remote, "--store", s(&a)]),
        digest
    );
    // A second push finds every blob there.
    let out = wisp(&["image", "push", "hello:1", &remote, "--store", s(&a)]);
    assert!(
        common::stderr(&out).contains("0 blob(s), 0 B; 3 already there"),
        "{}",
        common::stderr(&out)
    );

    // Pulled into another store: the same digest, tagged HOST/REPO:TAG,
    // the same files.
    let b = dir.path().join("b");
    assert_eq!(ok(&["image", "pull", &remote, "--store", s(&b)]), digest);
    let pulled = Store::open(&b).unwrap().open_image(&remote).unwrap();
    assert_eq!(pulled.digest().to_string(), digest);
    assert_eq!(
        pulled.files().unwrap(),
        Store::open(&a)
            .unwrap()
            .open_image("hello:1")
            .unwrap()
            .files()
            .unwrap()
    );
    let layer_types: Vec<String> = pulled
        .manifest()
        .layers()
        .iter()
        .map(|l| l.media_type().to_string())
        .collect();
    assert_eq!(
        layer_types,
        ["application/wasm", "application/vnd.oci.image.layer.v1.tar"],
        "the CNCF wasm artifact's layer types"
    );
    let out = wisp(&["image", "pull", &remote, "--store", s(&b)]);
    assert!(
        common::stderr(&out).contains("is up to date"),
        "{}",
        common::stderr(&out)
    );
    // By digest: untagged, found by its digest.
    let by_digest = format!("{}/team/hello@{digest}", registry.host);
    let c = dir.path().join("c");
    assert_eq!(ok(&["image", "pull", &by_digest, "--store", s(&c)]), digest);
    Store::open(&c)
        .unwrap()
        .open_image(&digest)
        .unwrap()
        .verify()
        .unwrap();

    // What wisp exports, skopeo copies unchanged to the registry, and wisp
    // pulls it with the same digest; what skopeo copies out of the
    // registry, wisp imports with the same digest.
    let layout = dir.path().join("layout");
    ok(&[
        "image",
        "export",
        "hello:1",
        "-o",
        s(&layout),
        "--store",
        s(&a),
    ]);
    let copied = format!("{}/skopeo/hello:2", registry.host);
    let skopeo_copy = |from: &str, to: &str| {
        let out = Command::new(&skopeo)
            .args([
                "copy",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                from,
                to,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy {from} {to}: {}",
            common::stderr(&out)
        );
    };
    skopeo_copy(
        &format!("oci:{}:hello:1", s(&layout)),
        &format!("docker://{copied}"),
    );
    let d = dir.path().join("d");
    assert_eq!(ok(&["image", "pull", &copied, "--store", s(&d)]), digest);
    let back = dir.path().join("back");
    skopeo_copy(
        &format!("docker://{remote}"),
        &format!("oci:{}:hello:3", s(&back)),
    );
    let e = dir.path().join("e");
    assert_eq!(ok(&["image", "import", s(&back), "--store", s(&e)]), digest);

    // Refused: a tag the registry lacks, a local name as a push target, a
    // registry nobody listens on.
    let out = wisp(&[
        "image",
        "pull",
        &format!("{}/team/hello:nope", registry.host),
        "--store",
        s(&b),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        common::stderr(&out).contains("has no image"),
        "{}",
        common::stderr(&out)
    );
    let out = wisp(&["image", "push", "hello:1", "hello:2", "--store", s(&a)]);
    assert!(
        common::stderr(&out).contains("names no registry host"),
        "{}",
        common::stderr(&out)
    );
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = wisp(&[
        "image",
        "pull",
        &format!("127.0.0.1:{closed}/x:1"),
        "--store",
        s(&b),
    ]);
    assert!(
        common::stderr(&out).contains("unreachable"),
        "{}",
        common::stderr(&out)
    );
}

#[test]
fn a_registry_serving_wrong_bytes_leaves_nothing_in_the_store() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    build(dir.path(), &a, "hello:1", 100_000);
    let remote = format!("{}/team/tampered:1", registry.host);
    ok(&["image", "push", "hello:1", &remote, "--store", s(&a)]);
    // Flip one byte of the file layer in the registry's storage: it still
    // serves it under its old digest.
    let image = Store::open(&a).unwrap().open_image("hello:1").unwrap();
    let layer = image.file_layers()[0].digest().to_string();
    let path = registry.blob_path(&layer);
    let mut bytes = fs::read(&path).unwrap();
    bytes[5000] ^= 0xff;
    fs::write(&path, bytes).unwrap();

    let b = dir.path().join("b");
    let out = wisp(&["image", "pull", &remote, "--store", s(&b)]);
    let stderr = common::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&layer) && stderr.contains("does not match its digest"),
        "{stderr}"
    );
    assert_empty(&b);
    let staged: Vec<_> = fs::read_dir(b.join("tmp"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    assert!(staged.is_empty(), "no staging directory kept: {staged:?}");

    // Through the daemon: a 502 with its own code, and nothing deployed.
    let daemon = Daemon::start();
    let r = deploy(&daemon, "tampered", &remote);
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(common::daemon::code(&r), "registry_digest_mismatch");
    assert_empty(&daemon.state.join("images"));
}

#[test]
fn deploy_by_registry_reference_pulls_on_first_use_and_records_the_digest() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let digest = build(dir.path(), &a, "hello:1", 4096);
    let remote = format!("{}/team/fn:1", registry.host);
    ok(&["image", "push", "hello:1", &remote, "--store", s(&a)]);

    let daemon = Daemon::start();
    let socket = daemon.socket.clone();
    // Cold: not in the daemon's store yet. Through the CLI.
    common::deploy_greet_from_image(&socket, &remote, &digest);
    let store = Store::open(&daemon.state.join("images")).unwrap();
    assert_eq!(store.pins().unwrap()["greet"].to_string(), digest);

    // The tag moves in the registry: the next deploy resolves it again and
    // records the new digest; by digest, the old image is deployed.
    let moved = build(dir.path(), &a, "hello:2", 8192);
    assert_ne!(moved, digest);
    ok(&["image", "push", "hello:2", &remote, "--store", s(&a)]);
    let r = deploy(&daemon, "greet", &remote);
    assert_eq!(r.status, 200, "{r:?}");
    let info: wisp::api::FunctionInfo = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(info.image.unwrap().digest, moved);
    let pinned = format!("{}/team/fn@{digest}", registry.host);
    let r = deploy(&daemon, "pinned", &pinned);
    assert_eq!(r.status, 201, "{r:?}");
    let info: wisp::api::FunctionInfo = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(info.image.unwrap().digest, digest);

    // Refused with stable codes, nothing deployed.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (reference, status, code) in [
        (
            format!("{}/team/fn:nope", registry.host),
            422,
            "image_not_found",
        ),
        (
            format!("{}/team/none:1", registry.host),
            422,
            "image_not_found",
        ),
        (
            format!("127.0.0.1:{closed}/team/fn:1"),
            502,
            "registry_unreachable",
        ),
        (
            format!("{}/Team/fn:1", registry.host),
            400,
            "invalid_image_reference",
        ),
        (
            format!("{}/team/fn@sha256:12", registry.host),
            400,
            "invalid_image_reference",
        ),
    ] {
        let r = deploy(&daemon, "refused", &reference);
        assert_eq!(
            (r.status, common::daemon::code(&r).as_str()),
            (status, code),
            "{reference}: {r:?}"
        );
    }
    let r = block_on(
        daemon
            .client()
            .request(Method::GET, "/v1/functions/refused", Bytes::new()),
    )
    .unwrap();
    assert_eq!(r.status, 404);
}

#[test]
fn a_killed_pull_leaves_no_image_and_the_next_resumes() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let digest = build(dir.path(), &a, "hello:1", 96 << 20);
    let remote = format!("{}/team/big:1", registry.host);
    ok(&["image", "push", "hello:1", &remote, "--store", s(&a)]);

    let b = dir.path().join("b");
    let mut child = common::wisp()
        .args(["image", "pull", &remote, "--store", s(&b)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once a blob is verified and staged, while the large layer
    // streams.
    let staged = b
        .join("tmp")
        .join(format!("pull-{}", digest.trim_start_matches("sha256:")));
    let start = Instant::now();
    loop {
        let blobs = fs::read_dir(staged.join("blobs/sha256"))
            .map(|d| {
                d.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0);
        if blobs >= 1 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pull ended before it could be killed"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no blob was staged"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_empty(&b);
    // `image ls` sees a consistent, empty store.
    ok(&["image", "ls", "--store", s(&b)]);

    let out = wisp(&["image", "pull", &remote, "--store", s(&b)]);
    let stderr = common::stderr(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(common::stdout(&out).trim(), digest);
    assert!(stderr.contains("kept from an interrupted pull"), "{stderr}");
    assert!(
        !staged.exists(),
        "the staging directory is removed once imported"
    );
    Store::open(&b)
        .unwrap()
        .open_image(&remote)
        .unwrap()
        .verify()
        .unwrap();

    // A blob cut off half way is continued with a range request; one whose
    // leftover bytes are wrong is fetched again from its start.
    let source = Store::open(&a).unwrap();
    let layer = source.open_image("hello:1").unwrap().file_layers()[0]
        .digest()
        .to_string();
    let whole = fs::read(
        source
            .blobs()
            .path(&wisp_images::Digest::parse(&layer).unwrap()),
    )
    .unwrap();
    let half = whole.len() / 2;
    for (name, leftover, resumed) in [
        ("c", whole[..half].to_vec(), true),
        ("d", vec![0x5a; half], false),
    ] {
        let store = dir.path().join(name);
        let staging = store
            .join("tmp")
            .join(format!("pull-{}", digest.trim_start_matches("sha256:")))
            .join("blobs/sha256");
        fs::create_dir_all(&staging).unwrap();
        let partial = format!(".partial-{}", layer.trim_start_matches("sha256:"));
        fs::write(staging.join(partial), &leftover).unwrap();
        let out = wisp(&["image", "pull", &remote, "--store", s(&store)]);
        let stderr = common::stderr(&out);
        assert!(out.status.success(), "{name}: {stderr}");
        assert_eq!(common::stdout(&out).trim(), digest);
        let kept = format!(
            "{:.1} MiB of a partial one kept",
            half as f64 / f64::from(1 << 20)
        );
        assert_eq!(
            stderr.contains(&kept),
            resumed,
            "{name}: `{kept}` in {stderr}"
        );
        Store::open(&store)
            .unwrap()
            .open_image(&remote)
            .unwrap()
            .verify()
            .unwrap();
    }
}

#[test]
fn a_pulling_deploy_leaves_the_daemon_answering() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let digest = build(dir.path(), &a, "hello:1", 96 << 20);
    let remote = format!("{}/team/large:1", registry.host);
    ok(&["image", "push", "hello:1", &remote, "--store", s(&a)]);

    let daemon = Daemon::start();
    let client = daemon.client();
    let body = Bytes::from(serde_json::to_vec(&json!({ "image": remote })).unwrap());
    let (worst, polls, r) = block_on(async {
        let deploy = client.request(Method::PUT, "/v1/functions/large", body);
        tokio::pin!(deploy);
        let (mut worst, mut polls) = (Duration::ZERO, 0);
        loop {
            tokio::select! {
                r = &mut deploy => return (worst, polls, r.unwrap()),
                () = tokio::time::sleep(Duration::from_millis(20)) => {
                    let t0 = Instant::now();
                    let h = daemon
                        .client()
                        .request(Method::GET, "/healthz", Bytes::new())
                        .await
                        .unwrap();
                    assert_eq!(h.status, 200);
                    worst = worst.max(t0.elapsed());
                    polls += 1;
                }
            }
        }
    });
    eprintln!("/healthz during the deploy: {polls} polls, the slowest {worst:?}");
    assert_eq!(r.status, 201, "{r:?}");
    let info: wisp::api::FunctionInfo = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(info.image.unwrap().digest, digest);
    assert!(
        polls >= 3,
        "the deploy ended before /healthz was asked ({polls} polls)"
    );
    // Generous for a 2-core machine also busy pulling and booting; a
    // blocked runtime would take the whole pull.
    assert!(
        worst < Duration::from_millis(250),
        "/healthz took {worst:?} during the pull"
    );
}
