//! The guest filesystem as real programs see it: C (`tests/wasi/*.c`,
//! Debian's clang and wasi-libc) and Rust `std::fs` (`tests/wasi/*.rs`,
//! Debian's rustc for wasm32-wasi), run in wisp and compared with what
//! `wasmtime run` does on the same program and directory. The expected outputs (`tests/wasi/*.expected`) were produced
//! by `wasmtime run`; where the wasmtime CLI is installed the tests also
//! run it live and check that it still agrees (`WISP_UPDATE_EXPECTED=1`
//! rewrites the files from it).

mod common;

use common::daemon::Daemon;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use wisp::compile::Compiler;
use wisp_vmm::{BufferIo, FilesBuilder, Image, Invocation, Outcome, Vm, VmConfig};

/// The tree `read_tree` walks: nested directories, a symlink, an empty
/// file and a file bigger than any read buffer.
fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("etc/app")).unwrap();
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::fs::write(root.join("config.json"), br#"{"greeting": "hello"}"#).unwrap();
    std::fs::write(root.join("etc/app/empty"), b"").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(root.join("etc/app/blob.bin"), big).unwrap();
    std::os::unix::fs::symlink("etc/app/blob.bin", root.join("blob-link")).unwrap();
    std::os::unix::fs::symlink("../app", root.join("etc/app/self-up")).unwrap();
    dir
}

/// `wisp run` of a C test program with `flags` before it and `args` after.
fn wisp(program: &Path, flags: &[&str], args: &[&str]) -> Output {
    let mut all: Vec<&str> = vec!["run"];
    all.extend_from_slice(flags);
    all.push(program.to_str().unwrap());
    all.extend_from_slice(args);
    common::run(&all, b"")
}

/// `wasmtime run`, if the CLI is installed.
fn wasmtime(program: &Path, dir: (&Path, &str), args: &[&str]) -> Option<Output> {
    let wasmtime = wisp_bench::coldstart::process::find_program("wasmtime")?;
    let output = Command::new(wasmtime)
        .arg("run")
        .arg("--dir")
        .arg(format!("{}::{}", dir.0.display(), dir.1))
        .arg(program)
        .args(args)
        .output()
        .unwrap();
    Some(output)
}

fn expected_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/wasi")
        .join(format!("{name}.expected"))
}

/// Checks wisp's output against the recorded `wasmtime run` output, and
/// against a live `wasmtime run` where there is one.
fn assert_same_as_wasmtime(name: &str, wisp_out: &Output, live: Option<Output>) {
    let wisp_text = String::from_utf8_lossy(&wisp_out.stdout).into_owned();
    assert!(
        wisp_out.status.success(),
        "{name} failed in wisp: {}\n{wisp_text}",
        String::from_utf8_lossy(&wisp_out.stderr)
    );
    let path = expected_path(name);
    if let Some(live) = &live {
        let text = String::from_utf8_lossy(&live.stdout).into_owned();
        assert!(
            live.status.success(),
            "{name} failed in wasmtime: {}",
            String::from_utf8_lossy(&live.stderr)
        );
        if std::env::var_os("WISP_UPDATE_EXPECTED").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        assert_eq!(
            text,
            std::fs::read_to_string(&path).unwrap(),
            "wasmtime no longer gives {}",
            path.display()
        );
        eprintln!("{name}: compared live with `wasmtime run`");
    } else {
        eprintln!("{name}: no wasmtime CLI here; compared with its recorded output");
    }
    let expected = std::fs::read_to_string(&path).unwrap();
    for (i, (got, want)) in wisp_text.lines().zip(expected.lines()).enumerate() {
        assert_eq!(got, want, "{name} line {}: wisp and wasmtime differ", i + 1);
    }
    assert_eq!(
        wisp_text.lines().count(),
        expected.lines().count(),
        "{name}: {wisp_text}"
    );
}

#[test]
fn file_and_directory_operations_match_wasmtime() {
    common::require_kvm();
    let program = common::wasi_program("fs_ops");
    let out = wisp(&program, &[], &["/tmp"]);
    let scratch = tempfile::tempdir().unwrap();
    let live = wasmtime(&program, (scratch.path(), "/tmp"), &["/tmp"]);
    assert_same_as_wasmtime("fs_ops", &out, live);
}

#[test]
fn rust_std_fs_matches_wasmtime() {
    common::require_kvm();
    let program = common::wasi_rust_program("fs_std");
    let out = wisp(&program, &[], &["/tmp"]);
    let scratch = tempfile::tempdir().unwrap();
    let live = wasmtime(&program, (scratch.path(), "/tmp"), &["/tmp"]);
    assert_same_as_wasmtime("fs_std", &out, live);
}

#[test]
fn host_directories_match_wasmtime_and_change_the_host() {
    common::require_kvm();
    for (name, program) in [
        ("fs_ops", common::wasi_program("fs_ops")),
        ("fs_std", common::wasi_rust_program("fs_std")),
    ] {
        let host = tempfile::tempdir().unwrap();
        let dir = format!("{}::/work", host.path().display());
        let out = wisp(&program, &["--dir", &dir], &["/work"]);
        // The recorded output is wasmtime's with --dir on a directory too.
        assert_same_as_wasmtime(name, &out, None);
        // What the module did is on the host.
        assert!(host.path().join("a.txt").is_file(), "{name}");
        if name == "fs_ops" {
            assert_eq!(
                std::fs::read_link(host.path().join("up")).unwrap(),
                Path::new("../../etc/passwd")
            );
            assert_eq!(
                std::fs::read_dir(host.path().join("many")).unwrap().count(),
                40
            );
            let g = std::fs::metadata(host.path().join("g")).unwrap();
            assert_eq!(std::os::unix::fs::MetadataExt::nlink(&g), 2);
        } else {
            assert_eq!(
                std::fs::read_to_string(host.path().join("log")).unwrap(),
                "one\ntwo\n"
            );
        }
    }
}

#[test]
fn host_directories_are_the_only_host_files_reachable() {
    let program = common::wasi_program("read_tree");
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"not for the guest").unwrap();
    let shared = outside.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("visible"), b"ok").unwrap();
    std::os::unix::fs::symlink("../secret", shared.join("leak")).unwrap();
    let dir = format!("{}::/shared", shared.display());
    let out = wisp(&program, &["--dir", &dir], &["/shared"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("visible 2 bytes"), "{text}");
    // The symlink is listed, but reading through it is refused.
    assert!(text.contains("leak -> ../secret (reads 0 bytes"), "{text}");
}

#[test]
fn bad_dir_arguments_are_clear_errors() {
    let program = common::wasi_program("read_tree");
    for (flag, message) in [
        ("/nonexistent/dir::/data", "/nonexistent/dir"),
        ("relative-dir", "give HOST::GUEST"),
        ("/tmp::data", "must be absolute"),
    ] {
        let out = wisp(&program, &["--dir", flag], &["/data"]);
        assert_eq!(out.status.code(), Some(1), "{flag}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("error: ") && err.contains(message),
            "{flag}: {err}"
        );
    }
}

#[test]
fn read_only_files_match_wasmtime_and_refuse_changes() {
    common::require_kvm();
    let program = common::wasi_program("read_tree");
    let data = data_dir();
    let files = format!("{}::/data", data.path().display());
    let out = wisp(&program, &["--files", &files], &["/data"]);
    let live = wasmtime(&program, (data.path(), "/data"), &["/data"]);
    assert_same_as_wasmtime("read_tree", &out, live);

    let out = wisp(&program, &["--files", &files], &["/data", "--try-write"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for attempt in [
        "create",
        "mkdir",
        "open for writing",
        "unlink",
        "truncate",
        "rename",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(attempt))
            .unwrap_or_else(|| panic!("no `{attempt}` line in {text}"));
        assert!(line.ends_with("Read-only file system"), "{line}");
    }
    assert!(text.contains("read still works         ok"), "{text}");
    // Nothing on the host changed.
    assert!(!data.path().join("new-file").exists());
    assert_eq!(
        std::fs::read(data.path().join("config.json")).unwrap(),
        br#"{"greeting": "hello"}"#
    );
}

#[test]
fn bad_files_arguments_are_clear_errors() {
    let program = common::wasi_program("read_tree");
    for (flag, message) in [
        ("/nonexistent/dir::/data", "/nonexistent/dir"),
        ("relative-dir", "give HOST::GUEST"),
        ("/tmp::data", "must be absolute"),
        ("/tmp::/tmp", "scratch directory"),
    ] {
        let out = wisp(&program, &["--files", flag], &["/data"]);
        assert_eq!(out.status.code(), Some(1), "{flag}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("error: ") && err.contains(message),
            "{flag}: {err}"
        );
    }
}

/// Boots `program` with `files`, snapshots it and restores one instance.
fn restored(program: &Path, files: FilesBuilder, mem: u64) -> (tempfile::TempDir, Vm) {
    common::require_kvm();
    let artifact = Compiler::new(None)
        .unwrap()
        .compile(&std::fs::read(program).unwrap())
        .unwrap();
    let config = VmConfig {
        mem_size: mem,
        files: files.build(),
        ..VmConfig::default()
    };
    let mut vm = Vm::boot(config, &artifact).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snap");
    vm.snapshot(&dir, "program", None).unwrap();
    let image = Arc::new(Image::open(&dir).unwrap());
    let vm = Vm::restore(
        &image,
        VmConfig {
            mem_size: mem,
            ..VmConfig::default()
        },
    )
    .unwrap();
    (tmp, vm)
}

fn invoke(vm: &mut Vm, args: &[&str]) -> String {
    let mut io = BufferIo::new();
    let invocation = Invocation {
        args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
        env: vec![],
    };
    let outcome = vm.invoke(&invocation, &mut io).unwrap();
    let out = String::from_utf8_lossy(&io.stdout).into_owned();
    assert_eq!(
        outcome,
        Outcome::Exited(0),
        "{out}{}",
        String::from_utf8_lossy(&io.stderr)
    );
    out
}

#[test]
fn scratch_files_are_gone_after_a_reset() {
    let program = common::wasi_program("scratch");
    let (_tmp, mut vm) = restored(&program, FilesBuilder::new(), 64 << 20);
    for round in 0..3 {
        let out = invoke(&mut vm, &["scratch", &format!("round {round}")]);
        assert_eq!(out, "absent: No such file or directory\n", "round {round}");
        vm.reset().unwrap();
        assert_eq!(vm.first_difference_from_snapshot().unwrap(), None);
    }
}

#[test]
fn filling_the_scratch_space_is_an_error_for_the_module_only() {
    let program = common::wasi_program("scratch");
    let (_tmp, mut vm) = restored(&program, FilesBuilder::new(), 64 << 20);
    let out = invoke(&mut vm, &["scratch", "fill"]);
    assert!(
        out.contains("filled more than 8 MiB, then: No space left on device"),
        "{out}"
    );
    assert!(out.ends_with("remove: ok\n"), "{out}");
    vm.reset().unwrap();
    assert_eq!(
        invoke(&mut vm, &["scratch"]),
        "absent: No such file or directory\n"
    );
}

#[test]
fn files_in_the_snapshot_are_read_after_every_restore() {
    let program = common::wasi_program("read_tree");
    let data = data_dir();
    let mut files = FilesBuilder::new();
    files.host_dir(data.path(), "/data").unwrap();
    let (_tmp, mut vm) = restored(&program, files, 64 << 20);
    let first = invoke(&mut vm, &["read_tree", "/data"]);
    assert!(first.contains("etc/app/blob.bin 300000 bytes"), "{first}");
    vm.reset().unwrap();
    // The host directory can change or vanish: the snapshot has its copy.
    drop(data);
    assert_eq!(invoke(&mut vm, &["read_tree", "/data"]), first);
}

#[test]
fn an_image_s_files_are_the_deployed_function_s_root() {
    let program = common::wasi_program("read_tree");
    let data = data_dir();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(dir.path());
    let store = daemon.state.join("images");
    let socket = daemon.socket.to_str().unwrap().to_string();
    let cli = |args: &[&str]| {
        let out = common::run(args, b"");
        assert!(out.status.success(), "{args:?}: {}", common::stderr(&out));
        common::stdout(&out)
    };
    cli(&[
        "image",
        "build",
        program.to_str().unwrap(),
        "--files",
        data.path().to_str().unwrap(),
        "-t",
        "tree:1",
        "--store",
        store.to_str().unwrap(),
    ]);
    cli(&[
        "deploy",
        "tree",
        "--image",
        "tree:1",
        "--reserved",
        "1",
        "--socket",
        &socket,
    ]);
    // Warm and cold starts both see the files, as wasmtime does with --dir.
    let expected = std::fs::read_to_string(expected_path("read_tree")).unwrap();
    for _ in 0..3 {
        assert_eq!(cli(&["invoke", "tree", "--socket", &socket]), expected);
    }
    // Rebuilt from the image after its snapshot is lost.
    drop(daemon);
    std::fs::remove_dir_all(dir.path().join("state/functions")).unwrap();
    let daemon = Daemon::start_in(dir.path());
    let socket = daemon.socket.to_str().unwrap().to_string();
    assert_eq!(cli(&["invoke", "tree", "--socket", &socket]), expected);
}
