//! End to end through containerd: Debian's `containerd`, started here with
//! a private root, state, socket and config, runs wasm images with
//! `ctr run --runtime io.containerd.wisp.v1`, which starts the real
//! `containerd-shim-wisp-v1`, which runs each module with `wisp run` in a
//! micro-VM. Checks output, args, env, bind mounts, exit codes, kill of a
//! looping module, and that deleted containers leave no shim, no VM and no
//! bundle behind. Needs /dev/kvm, root (containerd mounts snapshots) and
//! the `containerd` package (scripts/test installs it); without them it
//! fails saying what is missing.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::oci::{sha, Layout};
use serde_json::json;

const RUNTIME: &str = "io.containerd.wisp.v1";
const NAMESPACE: &str = "wisp-test";
const IMAGE: &str = "docker.io/library/wisp-containerd-test:1";

/// A private containerd; dropping it kills it and every shim it started
/// (their `wisp run` children die with them) and unmounts what they left.
struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Containerd {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `ctr --address SOCK --namespace wisp-test ARGS`.
    fn ctr(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(self.socket())
            .args(["--namespace", NAMESPACE])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn ctr_output(&self, args: &[&str]) -> Output {
        self.ctr(args).output().expect("running ctr")
    }

    /// Pids of the shims this containerd started (their command line
    /// names its socket).
    fn shims(&self) -> Vec<i32> {
        let sock = self.socket().display().to_string();
        processes()
            .into_iter()
            .filter(|(_, cmdline)| {
                cmdline
                    .iter()
                    .any(|a| a.contains("containerd-shim-wisp-v1"))
                    && cmdline.contains(&sock)
            })
            .map(|(pid, _)| pid)
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in self.shims() {
            // SAFETY: kill has no memory effects.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for mount in mounts_under(self.dir.path()).into_iter().rev() {
            if let Ok(path) = std::ffi::CString::new(mount) {
                // SAFETY: umount2 reads the NUL-terminated path, alive for the call.
                unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

/// (pid, command line) of every process.
fn processes() -> Vec<(i32, Vec<String>)> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let raw = fs::read(e.path().join("cmdline")).ok()?;
            let args = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Some((pid, args))
        })
        .collect()
}

/// Processes running `exe` that hold /dev/kvm open: live micro-VMs.
fn vms_of(exe: &Path) -> Vec<i32> {
    let exe = exe.canonicalize().unwrap();
    processes()
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|pid| fs::read_link(format!("/proc/{pid}/exe")).ok().as_deref() == Some(&*exe))
        .filter(|pid| {
            fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten()
                    .any(|fd| fs::read_link(fd.path()).is_ok_and(|t| t == Path::new("/dev/kvm")))
            })
        })
        .collect()
}

/// Mount points under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&prefix))
        .collect()
}

/// Fails loudly if `tool` is not on PATH.
fn require_tool(tool: &str) {
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .any(|d| d.join(tool).is_file());
    assert!(
        found,
        "\n\n*** `{tool}` is not installed: this test runs Debian's containerd. ***\n\
         *** Install it with `apt-get install containerd` (scripts/test does). ***\n\n"
    );
}

/// Builds the shim (another package of the workspace, whose binary no
/// test target asks cargo for) and returns its path, beside `wisp`. With
/// the workspace's binaries, not `-p containerd-shim-wisp`: under
/// `cargo test --workspace` (scripts/test) every library it needs is
/// already built with the workspace's unified features, so this only
/// links it, where a build of the one package would resolve features
/// anew and recompile its dependencies.
fn build_shim() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--workspace", "--bins"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("running cargo");
    assert!(status.success(), "building containerd-shim-wisp failed");
    let shim = Path::new(env!("CARGO_BIN_EXE_wisp")).with_file_name("containerd-shim-wisp-v1");
    assert!(shim.is_file(), "{} was not built", shim.display());
    shim
}

/// Starts a private containerd that finds the shim on its PATH.
fn start_containerd(shim: &Path) -> Containerd {
    let dir = tempfile::Builder::new()
        .prefix("wisp-ctd-")
        .tempdir_in("/tmp")
        .unwrap();
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(shim, bin.join("containerd-shim-wisp-v1")).unwrap();
    let d = dir.path().display();
    // The CRI plugin is off: this containerd serves ctr only, and would
    // otherwise look for CNI plugins.
    let config = format!(
        "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
         disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
         [grpc]\n  address = \"{d}/containerd.sock\"\n\
         [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
         [debug]\n  address = \"{d}/debug.sock\"\n"
    );
    fs::write(dir.path().join("config.toml"), config).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let log = fs::File::create(dir.path().join("containerd.log")).unwrap();
    let child = Command::new("containerd")
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .env("PATH", path)
        .env(
            "WISP_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("wisp-cache"),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting containerd");
    let ctd = Containerd { dir, child };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ctd.ctr_output(&["version"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "containerd did not come up; its log:\n{}",
            fs::read_to_string(ctd.dir.path().join("containerd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ctd
}

/// An uncompressed tar of `entries` (path, content), mode 0755.
fn tar(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

/// An OCI image whose one layer holds the test modules, entrypoint
/// `/hello.wasm`, as an archive `ctr images import` takes.
fn wasm_image(dir: &Path) -> PathBuf {
    let module = |name: &str, path: PathBuf| (name.to_string(), wat::parse_file(path).unwrap());
    let modules = [
        module("hello.wasm", common::example("hello.wat")),
        module("exit_code.wasm", common::fixture("exit_code.wat")),
        module("spin.wasm", common::fixture("spin.wat")),
        module("args_env.wasm", common::fixture("args_env.wat")),
        module("read_data.wasm", common::fixture("read_data.wat")),
    ];
    let entries: Vec<(&str, Vec<u8>)> = modules
        .iter()
        .map(|(n, b)| (n.as_str(), b.clone()))
        .collect();
    let layer_bytes = tar(&entries);
    let mut layout = Layout::new(&dir.join("layout"));
    let layer = layout.blob("application/vnd.oci.image.layer.v1.tar", &layer_bytes);
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Entrypoint": ["/hello.wasm"] },
        // containerd unpacks a layer only against its diff id.
        "rootfs": { "type": "layers", "diff_ids": [sha(&layer_bytes)] }
    });
    layout.image(&config, &[layer], Some(IMAGE));
    let archive = dir.join("image.tar");
    layout.tar(&archive);
    archive
}

/// A CNCF wasm artifact (`application/wasm` layer, wasm config).
fn wasm_artifact(dir: &Path) -> PathBuf {
    let mut layout = Layout::new(&dir.join("artifact"));
    let hello = wat::parse_file(common::example("hello.wat")).unwrap();
    common::oci::wasm_artifact(
        &mut layout,
        &hello,
        "application/vnd.oci.image.layer.v1.tar",
        &tar(&[]),
        "docker.io/library/wisp-artifact:1",
    );
    let archive = dir.join("artifact.tar");
    layout.tar(&archive);
    archive
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `ctr run --rm --runtime wisp IMAGE ID [ARGS]`.
fn run(ctd: &Containerd, extra: &[&str], id: &str, args: &[&str]) -> Output {
    let mut argv = vec!["run", "--rm", "--runtime", RUNTIME];
    argv.extend_from_slice(extra);
    argv.extend_from_slice(&[IMAGE, id]);
    argv.extend_from_slice(args);
    ctd.ctr_output(&argv)
}

#[test]
fn containerd_runs_wasm_images_through_the_wisp_shim() {
    common::require_kvm();
    require_tool("containerd");
    require_tool("ctr");
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root: containerd mounts snapshots"
    );
    let shim = build_shim();
    let wisp = PathBuf::from(env!("CARGO_BIN_EXE_wisp"));
    let ctd = start_containerd(&shim);
    let work = tempfile::tempdir().unwrap();

    let archive = wasm_image(work.path());
    let out = ctd.ctr_output(&["images", "import", archive.to_str().unwrap()]);
    assert!(out.status.success(), "import: {}", text(&out.stderr));

    // The entrypoint, its output on containerd's stdout FIFO.
    let out = run(&ctd, &[], "hello", &[]);
    assert_eq!(
        text(&out.stdout),
        "hello, world!\n",
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));

    // A command replaces the entrypoint: args[0] names the module.
    let out = run(&ctd, &[], "hello-bob", &["/hello.wasm", "bob"]);
    assert_eq!(text(&out.stdout), "hello, bob!\n", "{}", text(&out.stderr));

    // The exit code, and stderr on its own FIFO.
    let out = run(&ctd, &[], "exit3", &["/exit_code.wasm", "3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "to stdout\n");
    assert!(
        text(&out.stderr).contains("to stderr"),
        "{}",
        text(&out.stderr)
    );

    // Args and the container's env (and nothing of the shim's).
    let out = run(
        &ctd,
        &["--env", "GREETING=hi there"],
        "env",
        &["/args_env.wasm", "one", "two words"],
    );
    let printed = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(printed.contains("one\ntwo words\n"), "{printed}");
    assert!(printed.contains("GREETING=hi there\n"), "{printed}");
    assert!(!printed.contains("WISP_CACHE_DIR"), "{printed}");

    // A bind mount is the module's preopened directory.
    let data = work.path().join("data");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("in.txt"), "from the host\n").unwrap();
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:rw",
        data.display()
    );
    let out = run(&ctd, &["--mount", &mount], "mount", &["/read_data.wasm"]);
    assert_eq!(
        text(&out.stdout),
        "from the host\n",
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));

    // Kill of a looping module: its VM ends, wait reports the signal.
    let looping = ctd
        .ctr(&[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            IMAGE,
            "spin",
            "/spin.wasm",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while vms_of(&wisp).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the looping module's VM never appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let state = text(&ctd.ctr_output(&["tasks", "ls"]).stdout);
    assert!(
        state
            .lines()
            .any(|l| l.starts_with("spin") && l.contains("RUNNING")),
        "{state}"
    );
    // ctr's default signal, SIGTERM, as the kubelet sends first.
    let out = ctd.ctr_output(&["tasks", "kill", "spin"]);
    assert!(out.status.success(), "kill: {}", text(&out.stderr));
    let out = looping.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(128 + 15), "{}", text(&out.stderr));
    // (What the module wrote before is not checked: the guest batches its
    // output, and a VM killed from outside never flushes it; `wisp run`
    // killed by hand behaves the same.)
    assert!(
        vms_of(&wisp).is_empty(),
        "the killed module's VM is still alive"
    );

    // The wasm artifact: containerd 1.6 cannot unpack it into a snapshot
    // (its config has no diff ids, its layer is no tar), so importing
    // fails, and so does `ctr run` of its blobs imported without
    // unpacking, before any shim starts (docs/CONTAINERD.md).
    let artifact = wasm_artifact(work.path());
    let artifact = artifact.to_str().unwrap();
    let mismatched = "mismatched image rootfs and manifest layers";
    let out = ctd.ctr_output(&["images", "import", "--all-platforms", artifact]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(mismatched),
        "{}",
        text(&out.stderr)
    );
    let out = ctd.ctr_output(&[
        "images",
        "import",
        "--all-platforms",
        "--no-unpack",
        artifact,
    ]);
    assert!(
        out.status.success(),
        "artifact import: {}",
        text(&out.stderr)
    );
    let out = ctd.ctr_output(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "docker.io/library/wisp-artifact:1",
        "artifact",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(mismatched),
        "{}",
        text(&out.stderr)
    );

    // Nothing is left: no shim, no VM, no bundle, no mount.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(ctd.shims().is_empty() && vms_of(&wisp).is_empty()) {
        assert!(
            Instant::now() < deadline,
            "left behind: shims {:?}, VMs {:?}",
            ctd.shims(),
            vms_of(&wisp)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let bundles = ctd
        .state()
        .join("io.containerd.runtime.v2.task")
        .join(NAMESPACE);
    let left: Vec<_> = fs::read_dir(&bundles)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "bundles left in {}: {left:?}",
        bundles.display()
    );
    let rootfs_mounts: Vec<_> = mounts_under(ctd.dir.path())
        .into_iter()
        .filter(|m| m.contains("io.containerd.runtime.v2.task"))
        .collect();
    assert!(rootfs_mounts.is_empty(), "mounts left: {rootfs_mounts:?}");
    let containers = text(&ctd.ctr_output(&["containers", "ls", "-q"]).stdout);
    assert!(
        containers.trim().is_empty(),
        "containers left: {containers}"
    );
}
