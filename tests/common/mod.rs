//! Helpers shared by the integration tests. They boot real micro-VMs, so
//! they need `/dev/kvm`; without it they fail loudly rather than pass.

#![allow(dead_code)] // each test binary uses a different subset

pub mod daemon;
pub mod oci;
pub mod openapi;
pub mod raw;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// Fails the test with a loud explanation if KVM is not usable here.
pub fn require_kvm() {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        panic!(
            "\n\n*** /dev/kvm is not usable ({e}). ***\n\
             *** wisp's integration tests boot real micro-VMs and cannot run without KVM. ***\n\
             *** Run them on a host with KVM (or PVM) and read/write access to /dev/kvm. ***\n\n"
        );
    }
}

/// Path of a test fixture module.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Path of an example module (`examples/`).
pub fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// A `wisp` command whose compile cache is private to the test run.
pub fn wisp() -> Command {
    require_kvm();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wisp"));
    cmd.env(
        "WISP_CACHE_DIR",
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("wisp-cache"),
    );
    cmd
}

/// Runs `wisp` with no input and expects success; returns its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args, b"");
    assert!(
        out.status.success(),
        "wisp {args:?} failed ({:?}):\n{}{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Runs `wisp` with `args`, feeding `stdin`, and collects its output.
pub fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = wisp()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wisp");
    let mut pipe = child.stdin.take().expect("stdin pipe");
    let input = stdin.to_vec();
    // Write from another thread so a module that writes before reading
    // cannot deadlock the test on a full pipe.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for wisp");
    writer.join().expect("stdin writer");
    out
}

/// `wisp run <fixture> args...` with empty stdin.
pub fn run_fixture(name: &str, args: &[&str]) -> Output {
    let path = fixture(name);
    let mut all = vec!["run", path.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    run(&all, b"")
}

/// Stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `tests/<dir>/<name>.<ext>` built into a wasm32-wasi program by
/// `compile(source, output)`, once per test binary; fails loudly, with
/// `hint`, if that cannot be done.
fn wasi_build(
    dir: &str,
    name: &str,
    ext: &str,
    hint: &str,
    compile: impl FnOnce(
        &std::path::Path,
        &std::path::Path,
    ) -> std::io::Result<std::process::ExitStatus>,
) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(dir)
        .join(format!("{name}.{ext}"));
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("wasi-programs")
        .join(dir)
        .join(format!("{name}.wasm"));
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if built.contains(&out) {
        return out;
    }
    std::fs::create_dir_all(out.parent().expect("a parent")).expect("create the output dir");
    match compile(&source, &out) {
        Ok(status) if status.success() => {}
        other => panic!(
            "\n\n*** cannot compile {} for wasm32-wasi ({other:?}). ***\n*** {hint} ***\n\n",
            source.display()
        ),
    }
    built.push(out.clone());
    out
}

/// `tests/<dir>/<name>.c` built with Debian's clang-14 and wasi-libc.
fn c_program(dir: &str, name: &str) -> PathBuf {
    wasi_build(
        dir,
        name,
        "c",
        "These tests run real C programs: install Debian's clang-14 lld-14 wasi-libc \
         libclang-rt-14-dev-wasm32 (.ci/run does).",
        |source, out| {
            Command::new("clang-14")
                .args([
                    "--target=wasm32-wasi",
                    "--sysroot=/usr",
                    "-O2",
                    "-Wall",
                    "-Werror",
                    "-o",
                ])
                .arg(out)
                .arg(source)
                .status()
        },
    )
}

/// The C test program `tests/wasi/<name>.c`.
pub fn wasi_program(name: &str) -> PathBuf {
    c_program("wasi", name)
}

/// The conformance program `tests/conformance/<name>.c`.
pub fn conformance_program(name: &str) -> PathBuf {
    c_program("conformance", name)
}

/// The Rust test program `tests/wasi/<name>.rs`, built with Debian's rustc
/// (`/usr/bin/rustc` with `libstd-rust-dev-wasm32`: rustup cannot add
/// targets here), or `$WISP_WASI_RUSTC`.
pub fn wasi_rust_program(name: &str) -> PathBuf {
    let rustc = std::env::var("WISP_WASI_RUSTC").unwrap_or_else(|_| "/usr/bin/rustc".into());
    wasi_build(
        "wasi",
        name,
        "rs",
        "These tests run real Rust programs: install Debian's rustc and \
         libstd-rust-dev-wasm32 (.ci/run does), or set WISP_WASI_RUSTC.",
        |source, out| {
            Command::new(&rustc)
                .args(["--edition", "2021", "--target", "wasm32-wasi", "-O"])
                .args(["-C", "strip=debuginfo", "-D", "warnings", "-o"])
                .arg(out)
                .arg(source)
                .status()
        },
    )
}

/// Imports the language runtimes (`wisp/python:3.12`, `wisp/javascript:…`)
/// into the image store `store`, running `scripts/build-runtimes` with this
/// build's `wisp`. The script fetches and builds them once (cached in
/// `target/runtimes`) and installs what it needs on a fresh Debian machine;
/// one test at a time runs it.
pub fn install_runtimes(store: &std::path::Path) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(root.join("scripts/build-runtimes"))
        .arg("--store")
        .arg(store)
        .env("WISP", env!("CARGO_BIN_EXE_wisp"))
        .status()
        .expect("running scripts/build-runtimes");
    assert!(status.success(), "scripts/build-runtimes failed: {status}");
}

/// Deploys `hello` from the image `reference` as function `greet` through
/// the CLI on `socket`, and checks what a user sees: the digest in the
/// deploy's report, the greeting, and the reference and digest that
/// `wisp inspect` records.
pub fn deploy_greet_from_image(socket: &std::path::Path, reference: &str, digest: &str) {
    let socket = socket.to_str().expect("utf-8 path");
    let out = run(
        &["deploy", "greet", "--image", reference, "--socket", socket],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(digest), "{}", stderr(&out));
    let out = run(&["invoke", "greet", "--socket", socket], b"");
    assert_eq!(stdout(&out), "hello, world!\n", "{}", stderr(&out));
    let out = run(&["inspect", "greet", "--socket", socket], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let info: wisp::api::FunctionInfo = serde_json::from_slice(&out.stdout).unwrap();
    let image = info.image.expect("an image");
    assert_eq!(
        (image.reference.as_str(), image.digest.as_str()),
        (reference, digest)
    );
}
