//! `wisp-bench`: the operator benchmark ([`wisp_bench::coldstart`]), a
//! program of its own so that the `wisp` binary links neither charts nor
//! progress bars. `scripts/bench-coldstart` builds what it measures and
//! runs it.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use clap::{Parser, ValueEnum};
use wisp_bench::coldstart::{self, plot, Alternative, Plan};

/// Measure cold, warm, fresh-boot, burst and density against a private
/// daemon, and the same functions through the alternatives.
#[derive(Parser)]
#[command(name = "wisp-bench")]
struct BenchArgs {
    /// Results directory [default: ./wisp-bench-<unix time>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The `wisp` binary to measure [default: the one beside this program].
    #[arg(long)]
    wisp: Option<PathBuf>,
    /// Invocations per daemon scenario (cold, warm).
    #[arg(long, default_value_t = 2000)]
    runs: usize,
    /// Invocations per fresh boot and per process-per-invocation
    /// alternative.
    #[arg(long, default_value_t = 200)]
    process_runs: usize,
    /// Clients released at once in the burst scenario (0 skips it).
    #[arg(long, default_value_t = 1000)]
    burst: usize,
    /// How long the burst clients keep invoking.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    burst_duration: Duration,
    /// Ready instances in the density scenario (0 skips it).
    #[arg(long, default_value_t = 1000)]
    density: u32,
    /// What `scripts/build-bench-functions` built: the realistic function
    /// (JSON transform), native twins, payload and OCI bundles.
    #[arg(long)]
    functions_dir: Option<PathBuf>,
    /// The `wasmtime` CLI [default: from PATH or ~/.cargo/bin].
    #[arg(long)]
    wasmtime: Option<PathBuf>,
    /// Leave out an alternative (repeatable).
    #[arg(long, value_enum)]
    without: Vec<Alternative>,
    /// Measure wisp's daemon scenarios only, none of the alternatives.
    #[arg(long, conflicts_with = "without")]
    no_alternatives: bool,
    /// MiB the `touch` function writes, a byte per 4 KiB page, cold, warm,
    /// freshly booted and through the alternatives (0 leaves it out).
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u32).range(0..=i64::from(coldstart::MAX_TOUCH_MIB)))]
    touch_mib: u32,
    /// Another `wisp` binary (say, the build before a change): its daemon's
    /// cold and warm scenarios run beside this one's, alternating, as the
    /// `baseline cold` and `baseline warm` rows.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// `scripts/build-runtimes`' output directory (`target/runtimes`):
    /// Python and JavaScript handlers are measured too, cold, warm, booted
    /// fresh and as a `python3`/`node` process per invocation.
    #[arg(long)]
    runtimes: Option<PathBuf>,
    /// Ready instances of the Python handler in its density scenario
    /// (needs --runtimes; 0 skips it).
    #[arg(long, default_value_t = 500)]
    density_python: u32,
}

fn main() -> ExitCode {
    run(BenchArgs::parse()).unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}

/// Runs the benchmark, prints the table and writes results and charts.
fn run(args: BenchArgs) -> Result<ExitCode> {
    wisp_bench::harness::require_kvm();
    let plan = Plan {
        wisp: wisp_binary(args.wisp)?,
        touch_mib: args.touch_mib,
        baseline: match args.baseline {
            Some(b) if !b.is_file() => anyhow::bail!("--baseline {}: no such program", b.display()),
            b => b,
        },
        out: args
            .out
            .unwrap_or_else(|| coldstart::default_out(Path::new("."))),
        runs: args.runs.max(1),
        process_runs: args.process_runs.max(1),
        burst_clients: args.burst,
        burst_duration: args.burst_duration,
        density: args.density,
        runtimes: args.runtimes,
        density_python: args.density_python,
        functions_dir: args.functions_dir,
        wasmtime: args.wasmtime,
        without: if args.no_alternatives {
            Alternative::value_variants().to_vec()
        } else {
            args.without
        },
    };
    let report = coldstart::run(&plan)?;
    println!("{}", report.render());
    report.write(&plan.out)?;
    let charts = match plot::write(&report, &plan.out) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("warning: no charts: {e:#}");
            Vec::new()
        }
    };
    println!(
        "results: {} (results.json, samples.csv, summary.txt{})",
        plan.out.display(),
        charts
            .iter()
            .filter_map(|p| p.file_name())
            .map(|n| format!(", {}", n.to_string_lossy()))
            .collect::<String>()
    );
    let failures: usize = report.series.iter().map(|s| s.failures()).sum::<usize>()
        + report.burst.as_ref().map_or(0, |b| b.series.failures());
    if failures > 0 {
        eprintln!("error: {failures} invocations failed (see the errors in results.json)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The `wisp` binary to measure: `--wisp`, else the one built or installed
/// beside this program (cargo puts both in one directory).
fn wisp_binary(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(wisp) = given {
        ensure!(wisp.is_file(), "--wisp {}: no such program", wisp.display());
        return Ok(wisp);
    }
    let beside = std::env::current_exe()
        .context("finding the wisp-bench binary")?
        .with_file_name("wisp");
    ensure!(
        beside.is_file(),
        "no `wisp` beside this program ({}): build it (cargo build --release --workspace) or give --wisp",
        beside.display()
    );
    Ok(beside)
}
