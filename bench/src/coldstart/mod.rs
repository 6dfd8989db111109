//! The operator benchmark behind `wisp-bench` and `scripts/bench-coldstart`:
//! wisp's cold, warm, fresh-boot, burst and density scenarios against a
//! real daemon, and the same functions through the alternatives a user
//! would otherwise pick (a native process, `wasmtime run`, a `crun`
//! container, wisp's own CLI), one process per invocation, in the same run.
//!
//! - [`daemon`]: the scenarios that talk to `wisp serve`;
//! - [`fresh`]: booting a VM per invocation with no snapshot;
//! - [`process`]: the process-per-invocation alternatives;
//! - [`report`], [`plot`]: the table, CSV/JSON and charts;
//! - [`machine`]: the host's facts, recorded with the results.

pub mod cli;
pub mod daemon;
pub mod fresh;
pub mod handlers;
pub mod machine;
pub mod plot;
pub mod process;
pub mod report;
pub mod series;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::ValueEnum;

use self::daemon::{BenchDaemon, Function};
use self::process::{find_program, ProcessRun};
use self::report::{
    Report, Skipped, BASELINE_COLD, BASELINE_WARM, COLD, ECHO, NATIVE, WARM, WARM_SPLIT,
    WARM_UNALIASED, WASMTIME,
};
use self::series::{Series, Start};

/// The trivial function: wisp's example.
const HELLO_WAT: &[u8] = include_bytes!("../../../examples/hello.wat");
/// What it prints.
const HELLO_OUT: &[u8] = b"hello, world!\n";

/// What to run and how much.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The `wisp` binary (the daemon and the CLI alternative).
    pub wisp: PathBuf,
    /// Where results go.
    pub out: PathBuf,
    /// Invocations per daemon scenario (cold, warm).
    pub runs: usize,
    /// Invocations per process-per-invocation alternative and fresh boot.
    pub process_runs: usize,
    /// Concurrent clients of the burst (0: no burst).
    pub burst_clients: usize,
    /// How long the burst lasts.
    pub burst_duration: Duration,
    /// Ready instances for the density scenario (0: none).
    pub density: u32,
    /// Ready instances of the Python handler for its density scenario (0:
    /// none; needs `runtimes`).
    pub density_python: u32,
    /// Built by `scripts/build-bench-functions`: the realistic function,
    /// native twins, the payload and container bundles. Without it only
    /// the trivial function runs, against `/bin/echo` as the native process.
    pub functions_dir: Option<PathBuf>,
    /// `wasmtime` CLI, if not on `PATH`.
    pub wasmtime: Option<PathBuf>,
    /// Alternatives left out.
    pub without: Vec<Alternative>,
    /// MiB the `touch` function writes, one byte per page (0: no `touch`).
    pub touch_mib: u32,
    /// Another `wisp` build (say, the one before a change) whose daemon's
    /// cold and warm scenarios run beside `wisp`'s, in the same run.
    pub baseline: Option<PathBuf>,
    /// `scripts/build-runtimes`' output (its OCI layouts of the runtime
    /// images): with it, Python and JavaScript handlers are measured too.
    pub runtimes: Option<PathBuf>,
}

/// The ways to run a function other than wisp's daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Alternative {
    /// A native process per invocation (fork/exec).
    Native,
    /// `wasmtime run` per invocation.
    Wasmtime,
    /// A `crun` container per invocation.
    Crun,
    /// `wisp run` per invocation: a process, and a VM restored from its
    /// snapshot cache (and the first runs, which fill it).
    Cli,
}

impl Alternative {
    /// Its row label in the results.
    pub fn label(self) -> &'static str {
        match self {
            Alternative::Native => NATIVE,
            Alternative::Wasmtime => WASMTIME,
            Alternative::Crun => "crun container",
            Alternative::Cli => cli::CACHED,
        }
    }
}

/// Fresh boots of a handler: each starts the interpreter and imports the
/// handler (a quarter of a second for Python), so fewer samples.
const FRESH_HANDLER_RUNS: usize = 30;

/// Guest memory of the trivial function.
const HELLO_MIB: u32 = 16;
/// Guest memory of the realistic function.
const TRANSFORM_MIB: u32 = 64;

/// Invocations per scenario of the `touch` function: each writes
/// hundreds of MiB, so a few dozen samples give its p50.
const TOUCH_RUNS: usize = 20;
/// Most MiB `--touch-mib` may ask for (its VM has a third more memory).
pub const MAX_TOUCH_MIB: u32 = 3000;

/// A function that grows its linear memory by `mib` MiB and writes one byte
/// in each 4 KiB page of it: what a function that really uses memory costs
/// (first touches of pages, in a restored, reset or fresh VM alike).
fn touch(mib: u32) -> Function {
    let pages = mib * 16;
    let end = 65536 + (u64::from(mib) << 20);
    let wat = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "touched\n")
  (func (export "_start") (local $at i32)
    (if (i32.eq (memory.grow (i32.const {pages})) (i32.const -1)) (then unreachable))
    (local.set $at (i32.const 65536))
    (loop $touch
      (i32.store8 (local.get $at) (i32.const 1))
      (local.set $at (i32.add (local.get $at) (i32.const 4096)))
      (br_if $touch (i32.lt_u (local.get $at) (i32.const {end}))))
    (i32.store (i32.const 16) (i32.const 0))
    (i32.store (i32.const 20) (i32.const 8))
    (if (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24))
      (then unreachable))))"#
    );
    Function {
        label: "touch".into(),
        module: wat.into_bytes(),
        handler: None,
        input: Bytes::new(),
        expected: Bytes::from_static(b"touched\n"),
        // Room for the agent and the module beside the touched memory.
        memory_mib: (mib + mib / 3 + 32).next_multiple_of(2),
        max_runs: TOUCH_RUNS,
    }
}

/// The functions to measure, with what each must answer.
fn functions(plan: &Plan) -> Result<(Vec<Function>, Skipped)> {
    let mut functions = vec![Function {
        label: "hello".into(),
        module: HELLO_WAT.to_vec(),
        handler: None,
        input: Bytes::new(),
        expected: Bytes::from_static(HELLO_OUT),
        memory_mib: HELLO_MIB,
        max_runs: usize::MAX,
    }];
    if plan.touch_mib > 0 {
        functions.push(touch(plan.touch_mib));
    }
    let mut skipped = Vec::new();
    let Some(dir) = &plan.functions_dir else {
        skipped.push((
            "transform".to_string(),
            "no --functions-dir (scripts/build-bench-functions builds it)".to_string(),
        ));
        return Ok((functions, skipped));
    };
    let read = |name: &str| {
        std::fs::read(dir.join(name)).with_context(|| format!("{}", dir.join(name).display()))
    };
    let payload = read("payload.json")?;
    // The expected answer is the native build's, so every alternative,
    // wisp included, is checked against the same reference.
    let expected = std::process::Command::new(dir.join("transform"))
        .stdin(std::fs::File::open(dir.join("payload.json"))?)
        .output()
        .context("running the native transform for the reference answer")?;
    anyhow::ensure!(
        expected.status.success(),
        "the native transform failed on the payload"
    );
    functions.push(Function {
        label: "transform".into(),
        module: read("transform.wasm")?,
        handler: None,
        input: Bytes::from(payload),
        expected: Bytes::from(expected.stdout),
        memory_mib: TRANSFORM_MIB,
        max_runs: usize::MAX,
    });
    Ok((functions, skipped))
}

/// Runs the whole benchmark and writes its results into `plan.out`.
pub fn run(plan: &Plan) -> Result<Report> {
    let (mut functions, mut skipped) = functions(plan)?;
    if let Some(wasmtime) = plan.wasmtime.as_ref().filter(|w| !w.is_file()) {
        anyhow::bail!("--wasmtime {}: no such program", wasmtime.display());
    }
    std::fs::create_dir_all(&plan.out)
        .with_context(|| format!("creating {}", plan.out.display()))?;
    let mut report = Report {
        machine: machine::Machine::detect(),
        series: Vec::new(),
        burst: None,
        density: None,
        python_density: None,
        skipped: Vec::new(),
    };
    let daemon_dir = plan.out.join("daemon");
    std::fs::create_dir_all(&daemon_dir)?;
    let flags = daemon_flags(plan);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut daemon = BenchDaemon::start(&plan.wisp, &daemon_dir, &flags)?;
    let store = daemon_dir.join("state").join("images");
    if let Some(runtimes) = &plan.runtimes {
        functions.extend(handlers::functions(
            &plan.wisp,
            runtimes,
            &store,
            &plan.out,
            &mut skipped,
        )?);
    }
    let mut baseline = match &plan.baseline {
        Some(wisp) => {
            let dir = plan.out.join("baseline");
            std::fs::create_dir_all(&dir)?;
            let daemon = BenchDaemon::start(wisp, &dir, &flags)
                .with_context(|| format!("starting the baseline {}", wisp.display()))?;
            Some(daemon)
        }
        None => None,
    };

    for f in &functions {
        let mut daemons = vec![(&mut daemon, [COLD, WARM])];
        // (A baseline build may predate handlers.)
        if let Some(baseline) = baseline.as_mut().filter(|_| f.handler.is_none()) {
            daemons.push((baseline, [BASELINE_COLD, BASELINE_WARM]));
        }
        for (daemon, _) in &mut daemons {
            deploy_cold_and_warm(daemon, f)?;
        }
        // Scenario by scenario, each daemon in turn, so that a drift of
        // the machine lands on both builds alike.
        for (which, start) in [(0, Some(Start::Cold)), (1, None)] {
            for (daemon, labels) in &mut daemons {
                let name = format!("{}-{}", f.label, ["cold", "warm"][which]);
                // A warm request can find both instances still being reset
                // (they are reset after the response is sent) and start
                // cold: that is what a client sees, so it is counted, not
                // failed, and reported.
                let series = daemon.series(labels[which], &name, f, plan.runs, start);
                report.series.push(series);
            }
        }
        for (daemon, _) in &mut daemons {
            daemon.delete(&format!("{}-cold", f.label))?;
            daemon.delete(&format!("{}-warm", f.label))?;
        }
        match &f.handler {
            None => {
                // Right after the warm series, on this build only (a
                // baseline may predate aliases).
                report.series.extend(warm_split(&mut daemon, f, plan.runs)?);
                report.series.push(fresh::fresh_boot(f, plan.process_runs)?);
            }
            Some(code) => {
                let runs = plan.process_runs.min(FRESH_HANDLER_RUNS);
                report
                    .series
                    .push(handlers::fresh_boot(f, code, &store, runs)?);
            }
        }
    }

    for f in &functions {
        if let Some(code) = &f.handler {
            // A handler's native alternative is its interpreter.
            if plan.without.contains(&Alternative::Native) {
                continue;
            }
            let stdin = write_input(plan, f)?;
            let native = handlers::native(f, code).map(|run| ProcessRun { stdin, ..run });
            match native.map(|run| run.series(&f.label, plan.process_runs)) {
                Ok(Ok(series)) => report.series.push(series),
                Ok(Err(why)) | Err(why) => skipped.push((format!("process / {}", f.label), why)),
            }
            continue;
        }
        for alternative in alternatives(plan, f, &mut skipped)? {
            match alternative.series(&f.label, plan.process_runs.min(f.max_runs)) {
                Ok(series) => report.series.push(series),
                Err(why) => skipped.push((format!("{} / {}", alternative.scenario, f.label), why)),
            }
            if alternative.scenario == cli::CACHED {
                let first = cli::first_runs(
                    &alternative,
                    &f.label,
                    &plan.out,
                    plan.process_runs.min(f.max_runs),
                );
                report.series.push(first);
            }
        }
    }

    if plan.burst_clients > 0 {
        let f = &functions[0];
        daemon.deploy("bench-burst", f, 0, plan.burst_clients as u32)?;
        let socket = daemon_dir.join("wisp.sock");
        report.burst = Some(daemon::burst(
            &socket,
            "bench-burst",
            f,
            plan.burst_clients,
            plan.burst_duration,
        )?);
        daemon.delete("bench-burst")?;
    }
    if plan.density > 0 {
        match daemon::density(&mut daemon, &functions[0], plan.density) {
            Ok(d) => report.density = Some(d),
            Err(e) => skipped.push(("density".to_string(), format!("{e:#}"))),
        }
    }
    let python = functions.iter().find(|f| f.label == "python");
    if let Some(python) = python.filter(|_| plan.density_python > 0) {
        match daemon::density(&mut daemon, python, plan.density_python) {
            Ok(d) => report.python_density = Some(d),
            Err(e) => skipped.push(("density of Python".to_string(), format!("{e:#}"))),
        }
    }
    report.skipped = skipped;
    Ok(report)
}

/// How the benchmark's daemons run: with a memory budget that has room for
/// every scenario. The daemon refuses a deploy whose `reserved` instances
/// could not all run at once within its budget (each is charged its guest
/// memory and a little more while it runs), so the density scenario's
/// thousand hello instances need 18 MiB of budget each, although idle they
/// hold under 1 MiB.
fn daemon_flags(plan: &Plan) -> Vec<String> {
    const BASE_MIB: u64 = 8 << 10;
    let density_mib = (u64::from(plan.density) * u64::from(HELLO_MIB + 2))
        .max(u64::from(plan.density_python) * u64::from(handlers::HANDLER_MIB + 2));
    let budget = BASE_MIB.max(density_mib + (4 << 10));
    vec!["--memory-budget".into(), format!("{budget}M")]
}

/// Deploys `f` as `<label>-cold` (no pool: every invocation restores) and
/// `<label>-warm` (two pooled instances), then makes a few untimed cold
/// invocations, so first-touch page-cache costs of a just-written snapshot
/// don't land in the measured samples.
fn deploy_cold_and_warm(daemon: &mut BenchDaemon, f: &Function) -> Result<()> {
    let cold = format!("{}-cold", f.label);
    daemon.deploy(&cold, f, 0, 0)?;
    daemon.deploy(&format!("{}-warm", f.label), f, 2, 2)?;
    let _ = daemon.series(COLD, &cold, f, 10, Some(Start::Cold));
    Ok(())
}

/// The warm scenario through `live` split 90/10 between two versions of
/// `f`, each with two pooled instances (the split's shares of them, rounded
/// up: two and one), and beside it the same function unaliased with two:
/// the two run in alternating blocks of [`SPLIT_BLOCK`] invocations, so
/// the split's cost is not a drift of the machine between two series.
fn warm_split(daemon: &mut BenchDaemon, f: &Function, runs: usize) -> Result<[Series; 2]> {
    let split = format!("{}-split", f.label);
    let unaliased = format!("{}-unaliased", f.label);
    daemon.deploy(&unaliased, f, 2, 2)?;
    daemon.deploy(&split, f, 2, 2)?;
    daemon.deploy(&split, f, 2, 2)?;
    daemon.put_alias(
        &split,
        "live",
        &serde_json::json!({"version": 1, "additional": {"version": 2, "weight": 10}}),
    )?;
    let pair = [(WARM_UNALIASED, &unaliased), (WARM_SPLIT, &split)];
    for (scenario, name) in pair {
        let _ = daemon.series(scenario, name, f, 20, None);
    }
    let mut out = pair.map(|(scenario, _)| Series::new(scenario, &f.label));
    let runs = runs.min(f.max_runs);
    for done in (0..runs).step_by(SPLIT_BLOCK) {
        let n = SPLIT_BLOCK.min(runs - done);
        for (series, (scenario, name)) in out.iter_mut().zip(pair) {
            series.append(daemon.series(scenario, name, f, n, None));
        }
    }
    daemon.delete(&split)?;
    daemon.delete(&unaliased)?;
    Ok(out)
}

/// Invocations per block of the split scenario and its unaliased twin.
const SPLIT_BLOCK: usize = 50;

/// The process-per-invocation alternatives for `f` that this host has;
/// the others are added to `skipped` with the reason.
fn alternatives(plan: &Plan, f: &Function, skipped: &mut Skipped) -> Result<Vec<ProcessRun>> {
    let input = write_input(plan, f)?;
    let mut runs = Vec::new();
    for alternative in Alternative::value_variants() {
        if plan.without.contains(alternative) {
            continue;
        }
        let run = match alternative {
            Alternative::Native => native(plan, f),
            Alternative::Wasmtime => wasmtime(plan, f)?,
            Alternative::Crun => crun(plan, f),
            Alternative::Cli => Ok(wisp_cli(plan, f)?),
        };
        match run {
            Ok(mut run) => {
                run.stdin = input.clone();
                run.expected = f.expected.to_vec();
                runs.push(run);
            }
            Err(why) => skipped.push((format!("{} / {}", alternative.label(), f.label), why)),
        }
    }
    // The usual reference for a process spawn, a dynamically linked
    // /bin/echo, beside hello's static native twin.
    let has_twin = runs
        .iter()
        .any(|r| r.scenario == NATIVE && r.program != Path::new(ECHO_PROGRAM));
    if f.label == "hello" && has_twin {
        let mut echo = ProcessRun::new(ECHO, ECHO_PROGRAM, &["hello, world!"]);
        echo.expected = f.expected.to_vec();
        runs.push(echo);
    }
    Ok(runs)
}

/// `/bin/echo`, the fallback native hello and a reference of its own.
const ECHO_PROGRAM: &str = "/bin/echo";

/// A native process running the same logic (`/bin/echo` for hello when
/// no native build is given).
fn native(plan: &Plan, f: &Function) -> Result<ProcessRun, String> {
    let built = plan.functions_dir.as_deref().map(|d| d.join(&f.label));
    match built.filter(|p| p.is_file()) {
        Some(native) => Ok(ProcessRun::new(NATIVE, native, &[])),
        None if f.label == "hello" => Ok(ProcessRun::new(NATIVE, ECHO_PROGRAM, &["hello, world!"])),
        None => Err("no native build in --functions-dir".into()),
    }
}

/// `wasmtime run` of the module compiled ahead of time (its best case).
fn wasmtime(plan: &Plan, f: &Function) -> Result<Result<ProcessRun, String>> {
    let Some(wasmtime) = plan.wasmtime.clone().or_else(|| find_program("wasmtime")) else {
        return Ok(Err(
            "no `wasmtime` on PATH (cargo install --locked wasmtime-cli)".into(),
        ));
    };
    let module = write_module(plan, f)?;
    let cwasm = plan.out.join(format!("{}.cwasm", f.label));
    let status = std::process::Command::new(&wasmtime)
        .arg("compile")
        .arg(&module)
        .arg("-o")
        .arg(&cwasm)
        .status()
        .with_context(|| format!("{} compile", wasmtime.display()))?;
    if !status.success() {
        return Ok(Err(format!("wasmtime compile failed: {status}")));
    }
    let cwasm = cwasm.to_string_lossy().into_owned();
    Ok(Ok(ProcessRun::new(
        WASMTIME,
        &wasmtime,
        &["run", "--allow-precompiled", &cwasm],
    )))
}

/// A `crun` container per invocation, from the bundle built for `f`.
fn crun(plan: &Plan, f: &Function) -> Result<ProcessRun, String> {
    let crun = find_program("crun").ok_or("no `crun` on PATH (apt-get install crun)")?;
    let bundle = plan
        .functions_dir
        .as_deref()
        .map(|d| d.join(format!("bundle-{}", f.label)))
        .filter(|b| b.join("config.json").is_file())
        .ok_or("no OCI bundle in --functions-dir")?;
    let state = plan.out.join("crun-state").to_string_lossy().into_owned();
    let bundle = bundle.to_string_lossy().into_owned();
    let mut run = ProcessRun::new(
        Alternative::Crun.label(),
        crun,
        &[
            "--root",
            &state,
            // No cgroup per container: crun's cheapest configuration.
            "--cgroup-manager=disabled",
            "run",
            "--bundle",
            &bundle,
            "wisp-bench-ID",
        ],
    );
    run.unique_placeholder = Some("ID");
    Ok(run)
}

/// wisp's own CLI: a process per invocation, restored from its snapshot
/// cache (which the series' untimed first run fills).
fn wisp_cli(plan: &Plan, f: &Function) -> Result<ProcessRun> {
    let module = write_module(plan, f)?.to_string_lossy().into_owned();
    let memory = format!("{}M", f.memory_mib);
    let mut run = ProcessRun::new(
        cli::CACHED,
        &plan.wisp,
        &["run", "--memory", &memory, &module],
    );
    let cache = plan.out.join("cache").to_string_lossy().into_owned();
    run.env = vec![("WISP_CACHE_DIR".into(), cache)];
    Ok(run)
}

/// Writes `f`'s module into the output directory for the CLIs to read.
fn write_module(plan: &Plan, f: &Function) -> Result<PathBuf> {
    let ext = if f.module.starts_with(b"\0asm") {
        "wasm"
    } else {
        "wat"
    };
    let path = plan.out.join(format!("{}.{ext}", f.label));
    std::fs::write(&path, &f.module).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Writes `f`'s input into a file for processes' stdin (`None` if empty).
fn write_input(plan: &Plan, f: &Function) -> Result<Option<PathBuf>> {
    if f.input.is_empty() {
        return Ok(None);
    }
    let path = plan.out.join(format!("{}.input", f.label));
    std::fs::write(&path, &f.input).with_context(|| format!("writing {}", path.display()))?;
    Ok(Some(path))
}

/// The default results directory: `wisp-bench-<unix time>` under `base`.
pub fn default_out(base: &Path) -> PathBuf {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    base.join(format!("wisp-bench-{now}"))
}
