//! The `wisp` command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use wisp::compile::{default_cache_dir, Compiler};
use wisp::stdio::ProcessStdio;
use wisp::units::parse_size;
use wisp_vmm::{Error as VmError, Invocation, Outcome, Vm, VmConfig};

/// Run functions in KVM micro-VMs.
#[derive(Parser)]
#[command(name = "wisp", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a WASI command module in a fresh micro-VM.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Set an environment variable for the module (`NAME=VALUE`, or `NAME`
    /// to pass the host's value through).
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Wall-clock limit, e.g. `500ms`, `5s`, `2m` (no limit by default).
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Guest memory, e.g. `64M`, `1G` (a multiple of 2 MiB).
    #[arg(long, default_value = "128M", value_parser = parse_size)]
    memory: u64,
    /// Most bytes of stdout + stderr the module may write.
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    max_output: u64,
    /// Print where the time went (compile, VM create, load, init, run) to stderr.
    #[arg(long)]
    timings: bool,
    /// Do not read or write the compiled-module cache.
    #[arg(long)]
    no_cache: bool,
    /// The module: a `.wasm` binary or `.wat` text.
    module: PathBuf,
    /// Arguments passed to the module (after its name as argv[0]).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// Exit status for a wasm trap, as `wasmtime run` uses (128 + SIGABRT).
const EXIT_TRAP: u8 = 134;
/// Exit status for a timeout, as timeout(1) uses.
const EXIT_TIMEOUT: u8 = 124;

fn env_entries(specs: &[String]) -> Result<Vec<Vec<u8>>> {
    specs
        .iter()
        .map(|spec| match spec.split_once('=') {
            Some(("", _)) => bail!("--env `{spec}`: empty variable name"),
            Some(_) => Ok(spec.clone().into_bytes()),
            None => {
                let value = std::env::var(spec)
                    .with_context(|| format!("--env {spec}: not set on the host"))?;
                Ok(format!("{spec}={value}").into_bytes())
            }
        })
        .collect()
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn run(args: RunArgs) -> Result<ExitCode> {
    let t0 = Instant::now();
    let env = env_entries(&args.env)?;
    let module = std::fs::read(&args.module)
        .with_context(|| format!("cannot read {}", args.module.display()))?;
    let compiler = Compiler::new(if args.no_cache {
        None
    } else {
        default_cache_dir()
    })?;
    let artifact = compiler.load_or_compile(&module)?;
    let t_compile = t0.elapsed();

    let config = VmConfig {
        mem_size: args.memory,
        timeout: args.timeout,
        max_output: args.max_output,
        ..VmConfig::default()
    };
    let mut vm = Vm::boot(config, &artifact)?;
    let boot = vm.boot_timings();
    let mut argv = vec![args.module.to_string_lossy().into_owned().into_bytes()];
    argv.extend(args.args.into_iter().map(String::into_bytes));
    let t_run = Instant::now();
    let outcome = vm.invoke(&Invocation { args: argv, env }, &mut ProcessStdio);
    let run = t_run.elapsed();
    drop(vm);
    if args.timings {
        eprintln!(
            "wisp: compile/cache {} | vm create {} | load {} | agent init {} | run {} | total {}",
            ms(t_compile),
            ms(boot.create),
            ms(boot.load),
            ms(boot.init),
            ms(run),
            ms(t0.elapsed())
        );
    }
    match outcome {
        Ok(Outcome::Exited(code)) => Ok(ExitCode::from(code as u8)),
        Ok(Outcome::Trapped(message)) => {
            eprintln!("error: {}", message.trim_end());
            Ok(ExitCode::from(EXIT_TRAP))
        }
        Err(e @ VmError::Timeout(_)) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(EXIT_TIMEOUT))
        }
        Err(e) => Err(e.into()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
