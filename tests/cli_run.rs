//! `wisp run` end to end: each test boots a real micro-VM through the CLI.

mod common;

use common::{fixture, run, run_fixture, stderr, stdout};

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
    for code in [0, 1, 42, 255] {
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
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("WISP", env!("CARGO_BIN_EXE_wisp"))
        .env(
            "WISP_CACHE_DIR",
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("wisp-cache"),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello, world!\none\ntwo\n");
}
