//! `wisp-bench` end to end, shrunk: every scenario runs against a real
//! daemon with real micro-VMs, and the results it writes must hold up.
//!
//! It measures the `wisp` binary beside `wisp-bench`, which cargo builds
//! only with its own package: `cargo test --workspace` builds both, while
//! this test run alone measures whichever `wisp` was built last.

use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

/// Held by each test that measures: two benchmarks at once on a 2-core
/// host disturb each other past what the checks allow (a warm series saw
/// 5 of 30 invocations find both reserved instances still resetting while
/// the handler benchmark deployed Python beside it).
static MEASURING: Mutex<()> = Mutex::new(());

#[test]
fn bench_runs_every_scenario_and_writes_its_results() {
    require_kvm();
    let _alone = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let (results, stdout) = bench(
        &out,
        &[
            "--runs",
            "30",
            "--process-runs",
            "3",
            "--touch-mib",
            "64",
            "--burst",
            "50",
            "--burst-duration",
            "300ms",
            "--density",
            "20",
            // Whatever this host has, CI machines have neither.
            "--without",
            "wasmtime",
            "--without",
            "crun",
            // The same build as its own baseline: the rows exist, side by side.
            "--baseline",
            &wisp().to_string_lossy(),
        ],
    );
    assert_eq!(results["machine"]["cores"].as_u64().unwrap() as usize, {
        std::thread::available_parallelism().unwrap().get()
    });
    assert_ne!(results["machine"]["kvm"], "unknown", "/dev/kvm works here");

    let series = results["series"].as_array().unwrap();
    let find = |scenario: &str| {
        series
            .iter()
            .find(|s| s["scenario"] == scenario && s["function"] == "hello")
            .unwrap_or_else(|| panic!("no `{scenario}` series in {stdout}"))
    };
    // How each sample started, as the daemon's `x-wisp-start` said; "none"
    // for what is not a daemon invocation.
    for (scenario, runs, start) in [
        ("wisp cold", 30, "cold"),
        ("wisp warm", 30, "warm"),
        ("baseline cold", 30, "cold"),
        ("baseline warm", 30, "warm"),
        ("wisp fresh boot", 3, "none"),
        ("native fork/exec", 3, "none"),
        ("wisp run (first)", 3, "none"),
        ("wisp run (cached)", 3, "none"),
    ] {
        let samples = find(scenario)["samples"].as_array().unwrap();
        assert_eq!(samples.len(), runs, "{scenario}");
        let mut unlike = 0;
        for s in samples {
            assert_eq!(s["ok"], true, "{scenario}: {s}");
            assert!(s["latency_us"].as_u64().unwrap() > 0, "{scenario}: {s}");
            let kind = s["start"]
                .as_str()
                .unwrap_or_else(|| panic!("{scenario}: {s}"));
            if kind != start {
                // Only a warm request may start otherwise: cold, when it
                // finds both reserved instances still being reset.
                assert!(
                    scenario.ends_with(" warm") && kind == "cold",
                    "{scenario}: {s}"
                );
                unlike += 1;
            }
        }
        assert!(
            unlike <= runs / 10,
            "{scenario}: {unlike} of {runs} samples did not start {start}"
        );
    }
    // The memory toucher: its own rows, at most 20 invocations each.
    for (scenario, runs) in [("wisp cold", 20), ("wisp warm", 20), ("wisp fresh boot", 3)] {
        let touch = series
            .iter()
            .find(|s| s["scenario"] == scenario && s["function"] == "touch")
            .unwrap_or_else(|| panic!("no `{scenario}` touch series in {stdout}"));
        let samples = touch["samples"].as_array().unwrap();
        assert_eq!(samples.len(), runs, "{scenario} touch");
        assert!(samples.iter().all(|s| s["ok"] == true), "{touch}");
    }
    assert!(series
        .iter()
        .all(|s| s["scenario"] != "wasmtime run" && s["scenario"] != "crun container"));
    // Without --functions-dir the realistic function is skipped, loudly.
    assert!(stdout.contains("skipped transform"), "{stdout}");

    let burst = &results["burst"];
    assert_eq!(burst["clients"], 50);
    let requests = burst["series"]["samples"].as_array().unwrap();
    assert!(
        requests.len() >= 50,
        "every client sent at least one request"
    );
    assert!(requests.iter().all(|s| s["ok"] == true));
    assert!(!burst["pool"].as_array().unwrap().is_empty());

    let density = &results["density"];
    assert_eq!(density["requested"], 20);
    assert_eq!(density["ready"], 20);
    assert_eq!(density["invocations_ok"], 20);

    // One CSV line per sample, plus the header.
    let csv = std::fs::read_to_string(out.join("samples.csv")).unwrap();
    let samples: usize = series
        .iter()
        .map(|s| s["samples"].as_array().unwrap().len())
        .sum::<usize>()
        + requests.len();
    assert_eq!(csv.lines().count(), samples + 1);
    assert!(csv
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("wisp cold,hello,0,"));

    for table_line in [
        "p50 ms",
        "wisp cold",
        "wisp warm",
        "targets:",
        "density: 20 of 20",
        "baseline: wisp cold hello p50",
        "baseline: wisp warm hello p50",
    ] {
        assert!(stdout.contains(table_line), "{table_line} in {stdout}");
    }
    let summary = std::fs::read_to_string(out.join("summary.txt")).unwrap();
    assert!(summary.contains("wisp fresh boot"));
}

#[test]
fn bench_measures_python_and_javascript_handlers() {
    require_kvm();
    let _alone = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let runtimes = root.join("target/runtimes");
    // Fetched and built once, cached in target/runtimes (as the runtime
    // tests and scripts/bench-coldstart do).
    let status = Command::new(root.join("scripts/build-runtimes"))
        .arg("--out")
        .arg(&runtimes)
        .env("WISP", wisp())
        .status()
        .unwrap();
    assert!(status.success(), "scripts/build-runtimes failed: {status}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let (results, stdout) = bench(
        &out,
        &[
            "--runs",
            "10",
            "--process-runs",
            "2",
            "--touch-mib",
            "0",
            "--burst",
            "0",
            "--density",
            "0",
            "--density-python",
            "5",
            "--without",
            "wasmtime",
            "--without",
            "crun",
            "--without",
            "cli",
            "--runtimes",
            &runtimes.to_string_lossy(),
        ],
    );
    let series = results["series"].as_array().unwrap();
    // scripts/test installs python3; node is measured only where installed.
    for (scenario, function, runs) in [
        ("wisp cold", "python", 10),
        ("wisp warm", "python", 10),
        ("wisp fresh boot", "python", 2),
        ("python3 process", "python", 2),
        ("wisp cold", "javascript", 10),
        ("wisp warm", "javascript", 10),
        ("wisp fresh boot", "javascript", 2),
    ] {
        let found = series
            .iter()
            .find(|s| s["scenario"] == scenario && s["function"] == function)
            .unwrap_or_else(|| panic!("no `{scenario}` {function} series in {stdout}"));
        let samples = found["samples"].as_array().unwrap();
        assert_eq!(samples.len(), runs, "{scenario} {function}");
        // Every answer was checked against the transform's expected JSON.
        assert!(samples.iter().all(|s| s["ok"] == true), "{found}");
    }
    let density = &results["python_density"];
    assert_eq!(density["ready"], 5, "{stdout}");
    assert_eq!(density["invocations_ok"], 20, "{stdout}");
    for line in [
        "Python handler cold p50 <= 5 ms",
        "JavaScript handler cold p50 <= 2 ms",
        "density of Python: 5 of 5",
    ] {
        assert!(stdout.contains(line), "{line} in {stdout}");
    }
}

#[test]
fn bench_rejects_bad_inputs_before_measuring() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    for (args, message) in [
        (
            ["--functions-dir", "/nonexistent/functions"],
            "/nonexistent/functions/payload.json",
        ),
        (
            ["--wasmtime", "/nonexistent/wasmtime"],
            "--wasmtime /nonexistent/wasmtime: no such program",
        ),
        (
            ["--wisp", "/nonexistent/wisp"],
            "--wisp /nonexistent/wisp: no such program",
        ),
        (
            ["--touch-mib", "5000"],
            "invalid value '5000' for '--touch-mib <TOUCH_MIB>'",
        ),
        (
            ["--baseline", "/nonexistent/wisp"],
            "--baseline /nonexistent/wisp: no such program",
        ),
    ] {
        let out = dir.path().join("results");
        let output = Command::new(env!("CARGO_BIN_EXE_wisp-bench"))
            .args(args)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        // 2 is clap's status for a command line it refuses itself.
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(matches!(output.status.code(), Some(1 | 2)), "{stderr}");
        assert!(
            stderr.contains("error:") && stderr.contains(message),
            "{stderr}"
        );
        assert!(!out.exists(), "nothing is written for a bad command line");
    }
}

/// Fails the test loudly if KVM is not usable here: the benchmark boots
/// real micro-VMs.
/// The `wisp` binary beside `wisp-bench`.
fn wisp() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_BIN_EXE_wisp-bench")).with_file_name("wisp")
}

/// Runs `wisp-bench ARGS --out OUT`, which must succeed: its results and
/// what it printed.
fn bench(out: &std::path::Path, args: &[&str]) -> (Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_wisp-bench"))
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let results = serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap());
    (results.unwrap(), stdout)
}

fn require_kvm() {
    if let Err(e) = wisp_bench::harness::kvm_usable() {
        panic!("\n\n*** /dev/kvm is not usable ({e}): this test boots real micro-VMs. ***\n\n");
    }
}
