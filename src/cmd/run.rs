//! `wisp run`: one module run in one micro-VM, booted fresh or restored
//! from a snapshot.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use wisp::hostfs::{FsThread, HostDirs};
use wisp::seccomp::{run_filter, Seccomp};
use wisp::stdio::ProcessStdio;
use wisp_vmm::{Error as VmError, Image, Invocation, Outcome, Vm, VmConfig};

use super::{argv, env_entries, module_name, ms, VmArgs};

/// Exit status for a wasm trap, as `wasmtime run` uses (128 + SIGABRT).
const EXIT_TRAP: u8 = 134;
/// Exit status for a timeout, as timeout(1) uses.
const EXIT_TIMEOUT: u8 = 124;

#[derive(Args)]
pub struct RunArgs {
    /// Set an environment variable for the module (`NAME=VALUE`, or `NAME`
    /// to pass the host's value through).
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Wall-clock limit, e.g. `500ms`, `5s`, `2m` (no limit by default).
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Most bytes of stdout + stderr the module may write.
    #[arg(long, default_value = "64M", value_parser = wisp::units::parse_size)]
    max_output: u64,
    /// Print where the time went to stderr.
    #[arg(long)]
    timings: bool,
    /// What a system call outside the vCPU thread's seccomp allow-list
    /// does: `kill` wisp, `log` it to the kernel audit log, or `off`.
    #[arg(long, env = "WISP_SECCOMP", value_enum, default_value_t = Seccomp::Kill)]
    seccomp: Seccomp,
    #[command(flatten)]
    vm: VmArgs,
    /// Map host directory HOST read-write at GUEST (an absolute guest
    /// path; default: HOST itself if absolute), as `wasmtime run --dir`:
    /// every path is resolved on the host beneath HOST. Repeatable.
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    dirs: Vec<String>,
    /// Restore this snapshot (made by `wisp snapshot create`) instead of
    /// booting; every positional argument is then an argument of the module.
    #[arg(long, value_name = "DIR")]
    snapshot: Option<PathBuf>,
    /// The module, a `.wasm` binary or `.wat` text, then its arguments
    /// (after its name as argv[0]).
    #[arg(
        value_name = "MODULE [ARGS]",
        required_unless_present = "snapshot",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    command: Vec<String>,
}

/// Runs `wisp run` and maps the module's end to the process's exit status.
pub fn run(args: RunArgs) -> Result<ExitCode> {
    let env = env_entries(&args.env)?;
    let outcome = match &args.snapshot {
        Some(dir) => run_snapshot(&args, dir.clone(), env)?,
        None => run_fresh(&args, env)?,
    };
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
        Err(e @ VmError::OutOfMemory(_)) => {
            eprintln!("error: {e} (raise --memory)");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

fn config(args: &RunArgs, mem_size: u64) -> Result<VmConfig> {
    let mut files = args.vm.files_builder()?;
    for (_, guest) in host_dirs(args)? {
        files
            .host_mount(&guest)
            .with_context(|| format!("--dir {guest}"))?;
    }
    Ok(VmConfig {
        mem_size,
        timeout: args.timeout,
        max_output: args.max_output,
        files: files.build(),
        ..VmConfig::default()
    })
}

/// The `--dir` mappings as (host, guest) paths.
fn host_dirs(args: &RunArgs) -> Result<Vec<(PathBuf, String)>> {
    args.dirs
        .iter()
        .map(|spec| match spec.split_once("::") {
            Some((host, guest)) => Ok((PathBuf::from(host), guest.to_string())),
            None if spec.starts_with('/') => Ok((PathBuf::from(spec), spec.clone())),
            None => bail!("--dir {spec}: give HOST::GUEST for a relative host path"),
        })
        .collect()
}

/// The streams of a run, with a thread serving its `--dir` directories.
fn process_stdio(args: &RunArgs) -> Result<ProcessStdio> {
    let dirs = host_dirs(args)?;
    if dirs.is_empty() {
        return Ok(ProcessStdio::default());
    }
    let hosts: Vec<PathBuf> = dirs.into_iter().map(|(host, _)| host).collect();
    let served = HostDirs::open(&hosts).context("--dir")?;
    Ok(ProcessStdio {
        dirs: Some(FsThread::start(served)?),
    })
}

/// Runs `invocation` in `vm` with this process's stdio, then tears the VM
/// down; returns the outcome and the run and teardown times.
fn invoke_once(
    mut vm: Vm,
    invocation: &Invocation,
    mut stdio: ProcessStdio,
) -> (Result<Outcome, VmError>, Duration, Duration) {
    let t_run = Instant::now();
    let outcome = vm.invoke(invocation, &mut stdio);
    let run = t_run.elapsed();
    let t_teardown = Instant::now();
    drop(vm);
    (outcome, run, t_teardown.elapsed())
}

/// Runs `f` on a thread of its own (`wisp-vcpu`), confined by `wisp run`'s
/// seccomp filter for `mode` before it starts: the VM is booted or
/// restored, run and dropped there, so guest code never runs on a thread
/// that could open files or start processes.
fn on_vcpu_thread<R: Send + 'static>(
    mode: Seccomp,
    f: impl FnOnce() -> Result<R, VmError> + Send + 'static,
) -> Result<R> {
    let filter = run_filter(mode)?;
    if filter.is_some() {
        wisp_vmm::seccomp::prepare()?;
    }
    let thread = std::thread::Builder::new()
        .name("wisp-vcpu".into())
        .spawn(move || {
            if let Some(filter) = &filter {
                wisp_vmm::seccomp::apply(filter)?;
            }
            f()
        })?;
    Ok(thread
        .join()
        .map_err(|_| anyhow!("the vCPU thread panicked"))??)
}

/// Compiles (or takes from the cache), boots and runs.
fn run_fresh(args: &RunArgs, env: Vec<Vec<u8>>) -> Result<Result<Outcome, VmError>> {
    let Some((module, rest)) = args.command.split_first() else {
        bail!("give a module to run, or --snapshot DIR");
    };
    let t0 = Instant::now();
    let artifact = args.vm.compile(module.as_ref())?;
    let t_compile = t0.elapsed();
    let invocation = Invocation {
        args: argv(&module_name(module.as_ref()), rest),
        env,
    };
    let config = config(args, args.vm.memory())?;
    let stdio = process_stdio(args)?;
    let (boot, (outcome, run, teardown)) = on_vcpu_thread(args.seccomp, move || {
        let vm = Vm::boot(config, &artifact)?;
        Ok((vm.boot_timings(), invoke_once(vm, &invocation, stdio)))
    })?;
    if args.timings {
        eprintln!(
            "wisp: compile/cache {} | vm create {} | load {} | agent init {} | run {} | teardown {} | total {}",
            ms(t_compile),
            ms(boot.create),
            ms(boot.load),
            ms(boot.init),
            ms(run),
            ms(teardown),
            ms(t0.elapsed())
        );
    }
    Ok(outcome)
}

/// Opens a snapshot, restores a VM from it and runs.
fn run_snapshot(
    args: &RunArgs,
    dir: PathBuf,
    env: Vec<Vec<u8>>,
) -> Result<Result<Outcome, VmError>> {
    if args.vm.memory.is_some() {
        bail!("--memory cannot be used with --snapshot: the snapshot fixes the guest memory");
    }
    if !args.vm.files.is_empty() {
        bail!("--files cannot be used with --snapshot: the snapshot holds its files");
    }
    if !args.dirs.is_empty() {
        bail!("--dir cannot be used with --snapshot: a snapshot's directories are fixed when it is made");
    }
    let t0 = Instant::now();
    let image = Arc::new(Image::open(&dir)?);
    let t_open = t0.elapsed();
    let invocation = Invocation {
        args: argv(image.module_name().unwrap_or("module"), &args.command),
        env,
    };
    let config = config(args, image.mem_size())?;
    let ((restore, parts), (outcome, run, teardown)) = on_vcpu_thread(args.seccomp, move || {
        let t_restore = Instant::now();
        let vm = Vm::restore(&image, config)?;
        let restore = t_restore.elapsed();
        let parts = vm.restore_timings();
        Ok((
            (restore, parts),
            invoke_once(vm, &invocation, ProcessStdio::default()),
        ))
    })?;
    if args.timings {
        eprintln!(
            "wisp: open+verify {} | restore {} (vm {} + memory {} + state {}) | run {} | teardown {} | total {}",
            ms(t_open),
            ms(restore),
            ms(parts.shell),
            ms(parts.memory),
            ms(parts.state),
            ms(run),
            ms(teardown),
            ms(t0.elapsed())
        );
    }
    Ok(outcome)
}
