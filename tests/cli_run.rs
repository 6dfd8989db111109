//! `wisp run` end to end: each test boots a real micro-VM through the CLI.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{fixture, run, run_fixture, stderr, stdout};
use serde_json::Value;

fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn hello_greets_world_and_its_argument() {
    let out = run(&["run", &example("hello.wat")], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello, world!\n");
    let out = run(&["run", &example("hello.wat"), "wisp"], b"");
    assert_eq!(stdout(&out), "hello, wisp!\n");
}

#[test]
fn args_and_env_reach_the_module() {
    let path = fixture("args_env.wat");
    let out = run(
        &[
            "run",
            "--env",
            "GREETING=hi there",
            "--env",
            "EMPTY=",
            path.to_str().unwrap(),
            "one",
            "--two",
            "three four",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = format!(
        "{}\none\n--two\nthree four\nGREETING=hi there\nEMPTY=\n",
        path.display()
    );
    assert_eq!(stdout(&out), expected);
}

#[test]
fn env_passthrough_takes_the_hosts_value() {
    let path = fixture("args_env.wat");
    let out = common::wisp()
        .env("WISP_TEST_VALUE", "from host")
        .args(["run", "--env", "WISP_TEST_VALUE", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        stdout(&out).ends_with("WISP_TEST_VALUE=from host\n"),
        "{}",
        stdout(&out)
    );
    let out = run(
        &[
            "run",
            "--env",
            "WISP_SURELY_UNSET_VARIABLE",
            path.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("WISP_SURELY_UNSET_VARIABLE: not set on the host"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn one_mebibyte_of_stdin_round_trips() {
    let input: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let out = run(&["run", fixture("echo.wat").to_str().unwrap()], &input);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout.len(), input.len());
    assert!(out.stdout == input, "echoed bytes differ");
}

#[test]
fn empty_stdin_is_end_of_file() {
    let out = run(&["run", fixture("echo.wat").to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn exit_codes_and_both_streams_come_back() {
    for code in [0, 1, 42, 125] {
        let out = run_fixture("exit_code.wat", &[&code.to_string()]);
        assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
        assert_eq!(stdout(&out), "to stdout\n");
        assert_eq!(stderr(&out), "to stderr\n");
    }
}

#[test]
fn each_trap_is_named() {
    let cases = [
        ("unreachable", "unreachable"),
        ("oob", "out of bounds memory access"),
        ("div_zero", "integer divide by zero"),
        ("stack_overflow", "call stack exhausted"),
        ("indirect_null", "uninitialized element"),
    ];
    for (arg, message) in cases {
        let out = run_fixture("trap.wat", &[arg]);
        assert_eq!(out.status.code(), Some(134), "{arg}: {}", stderr(&out));
        assert_eq!(
            stdout(&out),
            "before trap\n",
            "{arg}: output before the trap is kept"
        );
        let err = stderr(&out);
        assert!(err.starts_with("error: "), "{arg}: {err}");
        assert!(
            err.contains(message),
            "{arg}: expected `{message}` in {err}"
        );
    }
}

#[test]
fn timeout_stops_a_spinning_module() {
    let path = fixture("spin.wat");
    let started = std::time::Instant::now();
    let out = run(&["run", "--timeout", "300ms", path.to_str().unwrap()], b"");
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    assert_eq!(stdout(&out), "spinning\n");
    assert!(
        stderr(&out).contains("timed out after 300ms"),
        "{}",
        stderr(&out)
    );
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
}

#[test]
fn growing_past_the_memory_cap_is_out_of_memory() {
    let path = fixture("memory_hog.wat");
    let out = run(&["run", "--memory", "32M", path.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.starts_with("error: out of memory"), "{err}");
    assert!(err.contains("raise --memory"), "{err}");
}

/// The MiB a module asked for when it ran out of memory, from the
/// "asked for N MiB" of the message.
fn asked_mib(err: &str) -> f64 {
    let after = err
        .split("asked for ")
        .nth(1)
        .unwrap_or_else(|| panic!("no size in: {err}"));
    let mut words = after.split_whitespace();
    let n: f64 = words.next().unwrap().parse().unwrap();
    match words.next().unwrap() {
        "MiB" => n,
        "GiB" => n * 1024.0,
        other => panic!("unexpected unit {other} in: {err}"),
    }
}

/// Linear memory grows in place into nearly all of the VM: it used to be
/// an allocation grown by copying, which stopped at about half.
#[test]
fn linear_memory_grows_to_nine_tenths_of_the_vm() {
    let path = fixture("memory_hog.wat");
    for (memory, mib) in [("1G", 1024.0), ("4G", 4096.0)] {
        let out = run(&["run", "--memory", memory, path.to_str().unwrap()], b"");
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.starts_with("error: out of memory"), "{err}");
        let asked = asked_mib(&err);
        assert!(
            asked >= 0.9 * mib,
            "at --memory {memory} the module got only {asked} MiB: {err}"
        );
        assert!(
            err.contains(&format!("this VM's {} GiB of memory", mib as u64 / 1024)),
            "{err}"
        );
    }
}

/// A memory64 module's out-of-memory message gives its size as asked.
#[test]
fn a_memory64_grow_is_reported_at_its_size() {
    let path = fixture("memory64_grow.wat");
    let out = run(&["run", path.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("asked for 16 TiB of linear memory"), "{err}");
}

#[test]
fn output_beyond_the_limit_is_cut_off() {
    let path = fixture("flood.wat");
    let out = run(
        &[
            "run",
            "--max-output",
            "1M",
            "--timeout",
            "20s",
            path.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("output limit of 1048576 bytes exceeded"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        out.stdout.len(),
        1 << 20,
        "output up to the limit is delivered"
    );
    assert!(out.stdout.iter().all(|&b| b == b'x'));
}

/// Runs a self-checking fixture, which exits with the number of the first
/// check that failed.
fn assert_checks_pass(fixture: &str) {
    let out = run_fixture(fixture, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{fixture}: failed check {:?}: {}",
        out.status.code(),
        stderr(&out)
    );
}

#[test]
fn clocks_randomness_and_sleep_work() {
    assert_checks_pass("clock_random.wat");
}

#[test]
fn filesystem_calls_are_confined_and_stdio_is_not_a_file() {
    assert_checks_pass("fs_denied.wat");
}

#[test]
fn every_wasi_function_the_abi_lists_links() {
    let out = run_fixture("all_imports.wat", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn fib_computes_in_the_guest() {
    let out = run_fixture("fib.wat", &["25"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "75025\n");
}

/// Bad input: one clear `error:` line and exit status 1.
fn assert_one_line_error(args: &[&str], input: &[u8], expected: &str) {
    let out = run(args, input);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
    assert!(
        err.starts_with("error: ") && err.contains(expected),
        "{args:?}: expected `{expected}` in {err}"
    );
    assert!(out.stdout.is_empty());
}

/// A malformed flag: a usage error (status 2, as clap and wasmtime do) whose
/// first line names the problem.
fn assert_usage_error(args: &[&str], expected: &str) {
    let out = run(args, b"");
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    let err = stderr(&out);
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error: ") && first.contains(expected),
        "{args:?}: expected `{expected}` in {err}"
    );
}

#[test]
fn bad_input_gets_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.wasm");
    assert_one_line_error(&["run", missing.to_str().unwrap()], b"", "cannot read");

    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x01\0\0\0\x99garbage").unwrap();
    assert_one_line_error(&["run", garbage.to_str().unwrap()], b"", "invalid module");

    let unsupported = dir.path().join("unsupported.wat");
    std::fs::write(
        &unsupported,
        r#"(module (import "env" "host_fn" (func)) (func (export "_start")))"#,
    )
    .unwrap();
    assert_one_line_error(
        &["run", unsupported.to_str().unwrap()],
        b"",
        "unsupported import `env::host_fn`",
    );

    let no_start = dir.path().join("reactor.wat");
    std::fs::write(&no_start, r#"(module (func (export "handle")))"#).unwrap();
    assert_one_line_error(
        &["run", no_start.to_str().unwrap()],
        b"",
        "no `_start` export",
    );

    let hello = example("hello.wat");
    assert_one_line_error(&["run", "--memory", "3M", &hello], b"", "memory");
    assert_usage_error(&["run", "--memory", "lots", &hello], "`lots` is not a size");
    assert_usage_error(&["run", "--timeout", "soon", &hello], "soon");
    assert_usage_error(&["run"], "required");
    assert_one_line_error(&["run", "--env", "=x", &hello], b"", "empty variable name");
}

#[test]
fn second_run_uses_the_compile_cache() {
    let dir = tempfile::tempdir().unwrap();
    // A module unique to this test so the cache starts cold.
    let module = dir.path().join("unique.wat");
    std::fs::write(
        &module,
        format!(
            r#"(module (func (export "_start")) (func (export "id{}")))"#,
            std::process::id()
        ),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let go = || {
        common::wisp()
            .env("WISP_CACHE_DIR", &cache)
            .args(["run", module.to_str().unwrap()])
            .output()
            .unwrap()
    };
    assert!(go().status.success());
    // The cache is an image store: one artifact entry naming one blob.
    let entries: Vec<_> = std::fs::read_dir(cache.join("artifacts"))
        .unwrap()
        .flatten()
        .flat_map(|module| std::fs::read_dir(module.path()).unwrap().flatten())
        .map(|e| e.path())
        .collect();
    assert_eq!(entries.len(), 1, "one artifact cached: {entries:?}");
    assert_eq!(
        std::fs::read_dir(cache.join("blobs/sha256"))
            .unwrap()
            .count(),
        1
    );
    let entry = entries[0].clone();
    let before = std::fs::metadata(&entry).unwrap().modified().unwrap();
    assert!(go().status.success());
    assert_eq!(
        std::fs::metadata(&entry).unwrap().modified().unwrap(),
        before,
        "cache entry was not rewritten"
    );
}

#[test]
fn stdin_the_module_does_not_read_is_left_for_the_next_command() {
    common::require_kvm();
    let hello = common::example("hello.wat");
    let script = format!(
        "printf 'one\\ntwo\\n' | {{ \"$WISP\" run {}; cat; }}",
        hello.display()
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("WISP", env!("CARGO_BIN_EXE_wisp"))
        .env(
            "WISP_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("wisp-cache"),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello, world!\none\ntwo\n");
}

#[test]
fn exit_codes_outside_wasi_never_read_as_success() {
    // 256 and 512 are 0 modulo 256: as a raw status they would read as
    // success. As `wasmtime run`, anything from 126 up exits with 1.
    for code in [126u32, 256, 512] {
        let out = run_fixture("exit_code.wat", &[&code.to_string()]);
        assert_eq!(out.status.code(), Some(1), "{code}: {}", stderr(&out));
        assert_eq!(stdout(&out), "to stdout\n");
        let err = stderr(&out);
        assert!(err.starts_with("to stderr\n"), "{code}: {err}");
        assert!(
            err.contains(&format!("error: the module exited with status {code}")),
            "{code}: {err}"
        );
    }
}

/// A `wisp` command with a cache directory of its own.
fn wisp_with_cache(cache: &Path) -> Command {
    let mut cmd = common::wisp();
    cmd.env("WISP_CACHE_DIR", cache)
        .env_remove("WISP_RUN_CACHE_SIZE")
        .stdin(Stdio::null());
    cmd
}

/// Runs `wisp run --report R ARGS` with the cache in `cache`; returns the
/// output and the report, checked against its JSON Schema.
fn run_reported(cache: &Path, args: &[&str]) -> (Output, Value) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let out = wisp_with_cache(cache)
        .arg("run")
        .arg("--report")
        .arg(&report)
        .args(args)
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("no report ({e}): {}", stderr(&out)));
    let value: Value = serde_json::from_str(&text).unwrap();
    check_schema(&value);
    (out, value)
}

fn check_schema(report: &Value) {
    let schema: Value =
        serde_json::from_str(include_str!("../docs/run-report.schema.json")).unwrap();
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&schema)
        .unwrap();
    let errors: Vec<String> = validator
        .iter_errors(report)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?} in {report:#}");
}

/// The snapshot cache's entries.
fn cache_entries(cache: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(cache.join("snapshots")) {
        Ok(list) => list
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_second_run_restores_from_the_snapshot_cache() {
    let cache = tempfile::tempdir().unwrap();
    let hello = example("hello.wat");
    let (out, first) = run_reported(cache.path(), &[&hello, "first"]);
    assert_eq!(stdout(&out), "hello, first!\n", "{}", stderr(&out));
    assert_eq!(first["start"], "created");
    let (out, second) = run_reported(cache.path(), &[&hello, "second"]);
    assert_eq!(stdout(&out), "hello, second!\n", "{}", stderr(&out));
    assert_eq!(second["start"], "cached");
    assert_eq!(cache_entries(cache.path()).len(), 1);
    let out = wisp_with_cache(cache.path())
        .args(["run", "--timings", &hello])
        .output()
        .unwrap();
    assert!(
        stderr(&out).starts_with("wisp: cached |"),
        "{}",
        stderr(&out)
    );
    // Nothing is left of the writing: no staging directory.
    let staging = cache.path().join("snapshots/.tmp");
    assert!(
        std::fs::read_dir(&staging).map_or(true, |mut d| d.next().is_none()),
        "left in {}",
        staging.display()
    );
}

/// The VM's shell is made by whichever of `wisp run`'s threads gets to it
/// first; on one CPU the main thread often finds the vCPU thread not yet
/// started and makes it itself. Either way the run is the same, and the
/// `--timings` line says which thread made it, once.
#[test]
fn the_shell_is_made_by_one_thread_or_the_other() {
    use std::os::unix::process::CommandExt;
    let cache = tempfile::tempdir().unwrap();
    let hello = example("hello.wat");
    let (out, _) = run_reported(cache.path(), &[&hello]);
    assert_eq!(stdout(&out), "hello, world!\n", "{}", stderr(&out));
    for memory in ["128M", "64M"] {
        for _ in 0..4 {
            let mut cmd = wisp_with_cache(cache.path());
            cmd.args(["run", "--timings", "--memory", memory, &hello]);
            // SAFETY: sched_setaffinity on the child's own thread between
            // fork and exec, with a set built before the fork.
            unsafe {
                cmd.pre_exec(|| {
                    let mut one: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(0, &mut one);
                    libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &one);
                    Ok(())
                });
            }
            let out = cmd.output().unwrap();
            assert_eq!(stdout(&out), "hello, world!\n", "{}", stderr(&out));
            let err = stderr(&out);
            let by_main = err.matches("(main thread)").count();
            let by_vcpu = err.matches("vCPU thread: shell").count();
            assert_eq!(by_main + by_vcpu, 1, "{err}");
            assert!(err.contains("| vCPU thread: "), "{err}");
        }
    }
}

#[test]
fn no_cache_boots_fresh_and_stores_nothing() {
    let cache = tempfile::tempdir().unwrap();
    let (out, report) = run_reported(cache.path(), &["--no-cache", &example("hello.wat")]);
    assert_eq!(stdout(&out), "hello, world!\n");
    assert_eq!(report["start"], "fresh");
    assert!(cache_entries(cache.path()).is_empty());
    let (_, report) = run_reported(cache.path(), &["--cache-size", "0", &example("hello.wat")]);
    assert_eq!(report["start"], "fresh");
    assert!(cache_entries(cache.path()).is_empty());
    // Not even the module's digest.
    assert!(!cache.path().join("digests").exists());
}

#[test]
fn the_cache_key_covers_module_memory_and_files() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("hello.wat");
    std::fs::copy(example("hello.wat"), &module).unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    std::fs::write(files.join("conf"), "one").unwrap();
    let files_arg = format!("{}::/conf", files.display());
    let start = |args: &[&str]| {
        let (out, report) = run_reported(cache.path(), args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        report["start"].as_str().unwrap().to_string()
    };
    let m = path(&module);
    assert_eq!(start(&[m]), "created");
    assert_eq!(start(&[m]), "cached");
    assert_eq!(start(&["--memory", "64M", m]), "created");
    assert_eq!(start(&["--files", &files_arg, m]), "created");
    assert_eq!(start(&["--files", &files_arg, m]), "cached");
    std::fs::write(files.join("conf"), "two").unwrap();
    assert_eq!(start(&["--files", &files_arg, m]), "created");
    std::fs::write(
        &module,
        format!(
            "{}\n;; changed\n",
            std::fs::read_to_string(&module).unwrap()
        ),
    )
    .unwrap();
    assert_eq!(start(&[m]), "created");
    assert_eq!(cache_entries(cache.path()).len(), 5);
}

#[test]
fn a_module_rewritten_in_place_never_gets_the_old_snapshot() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("greet.wat");
    let hello = std::fs::read_to_string(example("hello.wat")).unwrap();
    std::fs::write(&module, &hello).unwrap();
    let run = |expected: &str, start: &str| {
        let (out, report) = run_reported(cache.path(), &[path(&module)]);
        assert_eq!(stdout(&out), expected, "{}", stderr(&out));
        assert_eq!(report["start"], start);
    };
    // Settled (unchanged for 2 s): its digest is recorded and reused.
    std::thread::sleep(std::time::Duration::from_millis(2200));
    run("hello, world!\n", "created");
    assert!(cache.path().join("digests").read_dir().unwrap().count() > 0);
    run("hello, world!\n", "cached");
    // Rewritten in place, same length, same inode.
    let howdy = hello.replace("\"hello, \"", "\"howdy, \"");
    assert_eq!(howdy.len(), hello.len());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&module)
        .unwrap()
        .write_all(howdy.as_bytes())
        .unwrap();
    run("howdy, world!\n", "created");
    run("howdy, world!\n", "cached");
}

#[test]
fn concurrent_first_runs_succeed_and_leave_one_entry() {
    let cache = tempfile::tempdir().unwrap();
    let hello = example("hello.wat");
    let children: Vec<_> = (0..4)
        .map(|i| {
            wisp_with_cache(cache.path())
                .args(["run", &hello, &format!("run{i}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), format!("hello, run{i}!\n"));
    }
    assert_eq!(cache_entries(cache.path()).len(), 1);
    let (_, report) = run_reported(cache.path(), &[&hello]);
    assert_eq!(report["start"], "cached");
}

#[test]
fn a_corrupt_cache_entry_is_rebuilt_never_used() {
    let cache = tempfile::tempdir().unwrap();
    let module = fixture("init_state.wat");
    let (_, report) = run_reported(cache.path(), &[path(&module)]);
    assert_eq!(report["start"], "created");
    let entry = cache_entries(cache.path()).pop().unwrap();
    // The full check of the memory data that passed is recorded, so later
    // runs skip it while the file is unchanged.
    assert!(entry.join("verified.json").is_file());
    // A flipped byte in the vCPU state, one in the memory data (written in
    // place: the file's change time moves past the recorded one), then a
    // truncated memory file.
    let damage: [&dyn Fn(&Path); 3] = [
        &|entry| {
            let state = entry.join("state.bin");
            let mut bytes = std::fs::read(&state).unwrap();
            bytes[10] ^= 0x40;
            std::fs::write(&state, bytes).unwrap();
        },
        &|entry| {
            use std::os::unix::fs::FileExt;
            let manifest: Value =
                serde_json::from_slice(&std::fs::read(entry.join("manifest.json")).unwrap())
                    .unwrap();
            let page = manifest["memory"]["extents"][0]["start_page"]
                .as_u64()
                .unwrap();
            let memory = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(entry.join("memory"))
                .unwrap();
            let mut byte = [0u8];
            memory.read_exact_at(&mut byte, page * 4096 + 100).unwrap();
            // The change time has a clock's resolution: make sure it moves.
            std::thread::sleep(std::time::Duration::from_millis(20));
            memory
                .write_all_at(&[byte[0] ^ 0x40], page * 4096 + 100)
                .unwrap();
        },
        &|entry| {
            let memory = std::fs::OpenOptions::new()
                .write(true)
                .open(entry.join("memory"))
                .unwrap();
            memory.set_len(4096).unwrap();
        },
    ];
    for damage in damage {
        damage(&entry);
        let (out, report) = run_reported(cache.path(), &[path(&module)]);
        assert_eq!(stdout(&out), "g=42 mem=INIT pages=1\n", "{}", stderr(&out));
        assert_eq!(report["start"], "rebuilt");
        let (out, report) = run_reported(cache.path(), &[path(&module)]);
        assert_eq!(stdout(&out), "g=42 mem=INIT pages=1\n");
        assert_eq!(report["start"], "cached");
    }
}

/// Pages a cached run's restore copied ahead, from its `--timings` line.
fn pages_ahead(cache: &Path, module: &str) -> u64 {
    let out = wisp_with_cache(cache)
        .args(["run", "--timings", module])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "hello, world!\n", "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.starts_with("wisp: cached |"), "{err}");
    let at = err.find(" pages ahead").unwrap_or_else(|| panic!("{err}"));
    err[..at].rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn the_first_run_teaches_later_ones_the_pages_to_copy_ahead() {
    let cache = tempfile::tempdir().unwrap();
    let hello = example("hello.wat");
    let (out, report) = run_reported(cache.path(), &[&hello]);
    assert_eq!(stdout(&out), "hello, world!\n", "{}", stderr(&out));
    assert_eq!(report["start"], "created");
    let entry = cache_entries(cache.path()).pop().unwrap();
    let hint = entry.join("working-set.json");
    let set: Value = serde_json::from_slice(&std::fs::read(&hint).unwrap()).unwrap();
    let runs: Vec<(u64, u64)> = serde_json::from_value(set["written"].clone()).unwrap();
    let hot: Vec<u64> = serde_json::from_value(set["hot"].clone()).unwrap();
    // Whole 2 MiB blocks, and pages written outside them.
    let pages: u64 = runs.iter().map(|r| r.1).sum::<u64>() + hot.len() as u64 * 512;
    // The agent's stack and the module's memory at least.
    assert!(pages > 0, "{set}");
    assert_eq!(pages_ahead(cache.path(), &hello), pages);
    assert_eq!(pages_ahead(cache.path(), &hello), pages);
    // A hint that does not parse, names pages or blocks outside guest
    // memory, or too many blocks, is ignored; so is a missing one. The run
    // is the same.
    for bad in [
        "not json",
        r#"{"written": [[4294967295, 2]], "hot": []}"#,
        r#"{"written": [], "hot": [64]}"#,
        r#"{"written": [], "hot": [1, 2, 3, 4, 5, 6, 7, 8, 9]}"#,
    ] {
        std::fs::write(&hint, bad).unwrap();
        assert_eq!(pages_ahead(cache.path(), &hello), 0, "{bad}");
    }
    std::fs::remove_file(&hint).unwrap();
    assert_eq!(pages_ahead(cache.path(), &hello), 0);
}

#[test]
fn the_cache_evicts_the_least_recently_used_beyond_its_bound() {
    let cache = tempfile::tempdir().unwrap();
    let run_with_bound = |bound: &str, module: &Path| {
        let (out, report) = run_reported(cache.path(), &["--cache-size", bound, path(module)]);
        assert!(out.status.success(), "{}", stderr(&out));
        report["start"].as_str().unwrap().to_string()
    };
    let (a, b) = (example_path("hello.wat"), fixture("echo.wat"));
    assert_eq!(run_with_bound("1G", &a), "created");
    let one: u64 = disk_usage(&cache_entries(cache.path())[0]);
    // Room for one entry and a half: adding a second evicts the first.
    let bound = (one * 3 / 2).to_string();
    assert_eq!(run_with_bound(&bound, &b), "created");
    let left = cache_entries(cache.path());
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(run_with_bound(&bound, &b), "cached");
    assert_eq!(run_with_bound(&bound, &a), "created");
}

fn example_path(name: &str) -> PathBuf {
    common::example(name)
}

fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().blocks() * 512)
        .sum()
}

#[test]
fn cached_runs_get_their_own_arguments_environment_stdin_clock_and_randomness() {
    let cache = tempfile::tempdir().unwrap();
    let args_env = fixture("args_env.wat");
    for (arg, value) in [("one", "1"), ("two", "2")] {
        let out = wisp_with_cache(cache.path())
            .args(["run", "--env", &format!("V={value}"), path(&args_env), arg])
            .output()
            .unwrap();
        assert_eq!(
            stdout(&out),
            format!("{}\n{arg}\nV={value}\n", args_env.display()),
            "{}",
            stderr(&out)
        );
    }
    let echo = fixture("echo.wat");
    for input in ["first input", "second"] {
        let mut child = wisp_with_cache(cache.path())
            .args(["run", path(&echo)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        assert_eq!(stdout(&child.wait_with_output().unwrap()), input);
    }
    // Clocks move and randomness differs per run (the fixture checks
    // both), restored or not.
    for _ in 0..2 {
        let out = wisp_with_cache(cache.path())
            .args(["run", path(&fixture("clock_random.wat"))])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
}

#[test]
fn output_written_during_init_comes_with_every_run() {
    let cache = tempfile::tempdir().unwrap();
    for start in ["created", "cached"] {
        let (out, report) = run_reported(cache.path(), &[path(&fixture("init_output.wat"))]);
        assert_eq!(stdout(&out), "init\nstart\n", "{}", stderr(&out));
        assert_eq!(report["start"], start);
        assert_eq!(report["stdout_bytes"], 11);
    }
}

#[test]
fn host_directories_are_per_run_even_when_cached() {
    let cache = tempfile::tempdir().unwrap();
    let reader = fixture("read_data.wat");
    for (content, start) in [("from a", "created"), ("from b", "cached")] {
        let data = tempfile::tempdir().unwrap();
        std::fs::write(data.path().join("in.txt"), content).unwrap();
        let dir = format!("{}::/data", data.path().display());
        let (out, report) = run_reported(cache.path(), &["--dir", &dir, path(&reader)]);
        assert_eq!(stdout(&out), content, "{}", stderr(&out));
        assert_eq!(report["start"], start);
    }
}

#[test]
fn the_report_says_how_each_run_ended() {
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path();
    let (out, r) = run_reported(c, &[path(&fixture("exit_code.wat")), "3"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(r["ended"], "exit");
    assert_eq!(r["exit_code"], 3);
    assert_eq!(r["status"], 3);
    assert_eq!(r["message"], Value::Null);
    assert_eq!(r["stdout_bytes"], 10);
    assert_eq!(r["stderr_bytes"], 10);
    assert!(r["wall_time_ms"].as_f64().unwrap() > 0.0);
    assert!(r["peak_memory_bytes"].as_u64().unwrap() > 0);
    assert_eq!(r["module"], path(&fixture("exit_code.wat")));

    let (out, r) = run_reported(c, &[path(&fixture("exit_code.wat")), "512"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        (r["ended"].as_str(), r["exit_code"].as_u64()),
        (Some("exit"), Some(512))
    );
    assert_eq!(r["status"], 1);

    let (out, r) = run_reported(c, &[path(&fixture("trap.wat")), "div_zero"]);
    assert_eq!(out.status.code(), Some(134));
    assert_eq!(r["ended"], "trap");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("integer divide by zero"),
        "{r}"
    );
    assert_eq!(r["exit_code"], Value::Null);
    assert_eq!(r["stdout_bytes"], 12);

    let (out, r) = run_reported(c, &["--timeout", "200ms", path(&fixture("spin.wat"))]);
    assert_eq!(out.status.code(), Some(124));
    assert_eq!(
        (r["ended"].as_str(), r["status"].as_u64()),
        (Some("timeout"), Some(124))
    );
    assert!(r["wall_time_ms"].as_f64().unwrap() >= 200.0, "{r}");

    let (out, r) = run_reported(c, &["--memory", "32M", path(&fixture("memory_hog.wat"))]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(r["ended"], "out_of_memory");
    // Linear memory grows in place, and the module writes one word per
    // MiB it grows: what holds data stays small, and within the VM.
    let peak = r["peak_memory_bytes"].as_u64().unwrap();
    assert!((1 << 20..=32 << 20).contains(&peak), "{peak}");

    let (out, r) = run_reported(
        c,
        &[
            "--max-output",
            "64K",
            "--timeout",
            "20s",
            path(&fixture("flood.wat")),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(r["ended"], "output_limit");
    assert_eq!(r["stdout_bytes"], 65536);

    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x01\0\0\0\x99garbage").unwrap();
    let (out, r) = run_reported(c, &[path(&garbage)]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(r["ended"], "invalid_module");
    assert!(
        r["message"].as_str().unwrap().contains("invalid module"),
        "{r}"
    );
    assert_eq!(
        (r["start"].clone(), r["peak_memory_bytes"].clone()),
        (Value::Null, Value::Null)
    );

    let no_start = dir.path().join("reactor.wat");
    std::fs::write(&no_start, r#"(module (func (export "handle")))"#).unwrap();
    let (_, r) = run_reported(c, &[path(&no_start)]);
    assert_eq!(r["ended"], "invalid_module", "{r}");

    let (out, r) = run_reported(c, &[path(&dir.path().join("missing.wasm"))]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(r["ended"], "error");
    assert!(
        r["message"].as_str().unwrap().contains("cannot read"),
        "{r}"
    );
}

#[test]
fn peak_memory_counts_what_the_module_touched() {
    let cache = tempfile::tempdir().unwrap();
    let peak = |module: &str| {
        let (out, r) = run_reported(cache.path(), &[path(&fixture(module))]);
        assert!(out.status.success(), "{}", stderr(&out));
        r["peak_memory_bytes"].as_u64().unwrap()
    };
    let idle = peak("echo.wat");
    let busy = peak("touch_16m.wat");
    // 16 MiB, give or take the few pages the two modules' runs differ by.
    assert!(
        busy + 16 * 4096 >= idle + (16 << 20),
        "idle {idle}, busy {busy}"
    );
    assert!(busy < idle + (24 << 20), "idle {idle}, busy {busy}");
    // The same, to a few pages, whether the snapshot was just made or
    // cached long ago.
    let again = peak("touch_16m.wat");
    assert!(again.abs_diff(busy) <= 16 * 4096, "{busy} then {again}");
}

#[test]
fn an_unwritable_report_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("missing/report.json");
    let out = common::wisp()
        .args(["run", "--report", path(&report), &example("hello.wat")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "hello, world!\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("error: writing the report"),
        "{}",
        stderr(&out)
    );
}
