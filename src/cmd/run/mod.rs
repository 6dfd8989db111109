//! `wisp run`: one module run in one micro-VM — restored from `wisp run`'s
//! own snapshot cache once the module has run before, else booted (and its
//! snapshot cached), or restored from a snapshot given with `--snapshot`.
//!
//! Guest code runs only on the `wisp-vcpu` thread ([`vcpu_thread`]), which
//! makes an empty VM (unless this thread needs it first) and confines
//! itself with seccomp, while this thread finds the snapshot (and restores
//! the VM from it: host work, no guest instruction) or compiles the module.
//! When the run is over the process exits without tearing the VM down: the
//! kernel frees guest memory and the KVM VM with the process anyway.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use wisp::compile::{default_cache_dir, CompileError};
use wisp::daemon::DEFAULT_IMAGE_DIR;
use wisp::hostfs::{FsThread, HostDirs};
use wisp::module_file::ModuleFile;
use wisp::run_cache::{Key, Lookup, RunCache, DEFAULT_MAX_BYTES};
use wisp::run_report::{
    exit_status, Ending, RunReport, Start, EXIT_FAILURE, FORMAT, MAX_EXIT_CODE,
};
use wisp::seccomp::Seccomp;
use wisp::stdio::ProcessStdio;
use wisp_vmm::{
    Error as VmError, Image, Invocation, Outcome, Prefault, RestoreTimings, Shell, Vm, VmConfig,
};

mod vcpu_thread;

use vcpu_thread::{Orders, Prepared, VcpuThread};

use super::run_handler::load_error;
use super::{argv, env_entries, module_name, ms, VmArgs};
use wisp::runtimes::local::LocalHandler;

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
    /// Write a JSON report of the run to FILE: how it ended, its exit code,
    /// wall time, peak guest memory and output sizes (README, "Running a
    /// module").
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Most disk space the cache of ready snapshots may take (least
    /// recently used ones are evicted); `0` caches none.
    #[arg(
        long,
        env = "WISP_RUN_CACHE_SIZE",
        default_value_t = DEFAULT_MAX_BYTES,
        value_parser = wisp::units::parse_size,
        hide_default_value = true,
        value_name = "SIZE [default: 512M]"
    )]
    cache_size: u64,
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
    /// Run a Python or JavaScript handler on this language runtime
    /// (`python3.12`, `javascript`; docs/RUNTIMES.md): MODULE is then the
    /// handler's code (a directory or one file) and stdin its event.
    #[arg(long, requires = "handler", conflicts_with_all = ["snapshot", "dirs", "files"])]
    runtime: Option<String>,
    /// The handler the runtime calls, `MODULE.FUNCTION` (`app.handler`).
    #[arg(long, requires = "runtime")]
    handler: Option<String>,
    /// The image store holding the runtime images (`scripts/build-runtimes
    /// --store DIR`); the daemon's by default.
    #[arg(long, env = "WISP_IMAGE_DIR", default_value = DEFAULT_IMAGE_DIR)]
    store: PathBuf,
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

/// A run that reached a VM: how the module ended, and what the report and
/// `--timings` need.
struct Ran {
    outcome: Result<Outcome, VmError>,
    start: Start,
    /// The VM, kept (never dropped) until the process exits.
    vm: Option<Vm>,
    stdout_bytes: u64,
    stderr_bytes: u64,
    /// The `--timings` line, without the total.
    timings: String,
}

/// What `wisp run` starts before its arguments are parsed: the vCPU thread,
/// which makes its VM while clap works (~0.2 ms each).
pub struct EarlyStart {
    /// When wisp started.
    origin: Instant,
    vcpu: VcpuThread,
}

impl EarlyStart {
    /// Starts the vCPU thread if this process is a `wisp run` (its first
    /// argument is `run`), else nothing.
    pub fn if_running() -> Option<EarlyStart> {
        let running = std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new("run"));
        running
            .then(EarlyStart::now)
            .and_then(|started| started.ok())
    }

    /// Starts the vCPU thread now.
    fn now() -> std::io::Result<EarlyStart> {
        let origin = Instant::now();
        VcpuThread::spawn(origin).map(|vcpu| EarlyStart { origin, vcpu })
    }
}

impl RunArgs {
    /// `wisp run`'s arguments parsed without the rest of the command line
    /// interface, which clap would build first; `None` if they are not
    /// valid (or ask for help), for the whole interface to parse and
    /// report as usual.
    pub fn parse_alone() -> Option<RunArgs> {
        use clap::{Command, FromArgMatches};
        let command = RunArgs::augment_args(Command::new("run"));
        let matches = command
            .try_get_matches_from(std::env::args_os().skip(1))
            .ok()?;
        RunArgs::from_arg_matches(&matches).ok()
    }
}

/// Runs `wisp run`, maps the module's end to the process's exit status and
/// exits with it. `early` is what started before the arguments were
/// parsed, if anything did.
pub fn run(args: RunArgs, early: Option<EarlyStart>) -> ! {
    // Not started yet (or starting failed, which trying again reports).
    let early = early.map_or_else(EarlyStart::now, Ok);
    let started = early.as_ref().map_or_else(|_| Instant::now(), |e| e.origin);
    let result = early
        .map_err(anyhow::Error::from)
        .and_then(|early| execute(&args, early));
    let wall = started.elapsed();
    let (ending, status, exit_code, message) = classify(&result);
    match (&result, &message) {
        (Ok(ran), _) if args.timings => {
            eprintln!("wisp: {} | total {}", ran.timings, ms(wall));
        }
        _ => {}
    }
    if let Some(message) = &message {
        eprintln!("error: {message}");
    }
    let mut status = status;
    let ran = result.ok();
    if let Some(path) = &args.report {
        let report = RunReport {
            format: FORMAT,
            module: args
                .snapshot
                .as_ref()
                .map(|d| d.display().to_string())
                .or_else(|| args.command.first().cloned()),
            ended: ending,
            exit_code,
            status,
            message: match (ending, &ran) {
                // The trap's own text, not the line printed for it.
                (
                    Ending::Trap,
                    Some(Ran {
                        outcome: Ok(Outcome::Trapped(m)),
                        ..
                    }),
                ) => Some(m.trim_end().to_string()),
                _ => message.clone(),
            },
            wall_time_ms: wall.as_secs_f64() * 1e3,
            peak_memory_bytes: ran
                .as_ref()
                .and_then(|r| r.vm.as_ref())
                .and_then(|vm| vm.memory_in_use().ok()),
            stdout_bytes: ran.as_ref().map_or(0, |r| r.stdout_bytes),
            stderr_bytes: ran.as_ref().map_or(0, |r| r.stderr_bytes),
            start: ran.as_ref().map(|r| r.start),
        };
        if let Err(e) = report.write(path) {
            eprintln!("error: writing the report to {}: {e}", path.display());
            if status == 0 {
                status = EXIT_FAILURE;
            }
        }
    }
    // Exit without dropping anything: the kernel frees the VM, its guest
    // memory, the threads and the mappings, and tearing them down first
    // would only delay the exit; `teardown::exit` has that done after the
    // exit status is out. Output is already out (the guest's writes are
    // flushed as they come; stderr is unbuffered).
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let holds_vm = ran.as_ref().is_some_and(|r| r.vm.is_some());
    super::teardown::exit(i32::from(status), holds_vm)
}

/// The ending, exit status, the module's exit code and the error line of a
/// run.
fn classify(result: &Result<Ran>) -> (Ending, u8, Option<u32>, Option<String>) {
    let ran = match result {
        Ok(ran) => ran,
        Err(e) => {
            let invalid = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<CompileError>(),
                    Some(CompileError::Invalid(_) | CompileError::UnsupportedImport { .. })
                ) || matches!(c.downcast_ref::<VmError>(), Some(VmError::Module(_)))
            });
            let ending = if invalid {
                Ending::InvalidModule
            } else {
                Ending::Error
            };
            return (ending, EXIT_FAILURE, None, Some(format!("{e:#}")));
        }
    };
    match &ran.outcome {
        Ok(Outcome::Exited(code)) => {
            // WASI's exit code is a u32; the agent passes it as an i32.
            let code = *code as u32;
            let status = exit_status(code);
            let message = (code != u32::from(status)).then(|| {
                format!(
                    "the module exited with status {code}, outside WASI's 0..={MAX_EXIT_CODE} (as `wasmtime run`, wisp exits with {status})"
                )
            });
            (Ending::Exit, status, Some(code), message)
        }
        Ok(Outcome::Trapped(message)) => (
            Ending::Trap,
            Ending::Trap.status(),
            None,
            Some(message.trim_end().to_string()),
        ),
        Err(e) => {
            let ending = Ending::of_error(e);
            let mut message = chain(e);
            if ending == Ending::OutOfMemory {
                message.push_str(" (raise --memory)");
            }
            (ending, ending.status(), None, Some(message))
        }
    }
}

/// `e` and its causes, as anyhow's `{:#}` prints a chain.
fn chain(e: &VmError) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Finds or builds the VM and runs the module in it, on the vCPU thread
/// `early` started (its `origin` is when wisp started, for `--timings`).
fn execute(args: &RunArgs, early: EarlyStart) -> Result<Ran> {
    let EarlyStart { origin, mut vcpu } = early;
    // The thread finishes its shell and confines itself (it has made its
    // VM by now, or is making it) while this one works. A snapshot
    // directory fixes its own memory size.
    vcpu.order(Orders {
        seccomp: args.seccomp,
        memory: args.snapshot.is_none().then(|| args.vm.memory()),
    });
    if let Some(root) = default_cache_dir() {
        wisp::guest_cpu::recall(&root);
    }
    let env = env_entries(&args.env)?;
    if let Some(dir) = &args.snapshot {
        return run_snapshot(args, &vcpu, dir, env);
    }
    let Some((module, rest)) = args.command.split_first() else {
        bail!("give a module to run, or --snapshot DIR");
    };
    let path = Path::new(module);
    if let (Some(runtime), Some(handler)) = (&args.runtime, &args.handler) {
        if !rest.is_empty() {
            bail!("--runtime takes one path, the handler's code; the event is stdin");
        }
        let handler = LocalHandler::open(runtime, handler, path, &args.store, &env)?;
        let mem_size = args.vm.memory();
        let mut stdio = process_stdio(args)?;
        stdio.before_stdin = std::io::Cursor::new(handler.context_line(mem_size, args.timeout));
        let config = VmConfig {
            files: handler.files()?,
            run_to_first_read: Some(handler.boot.clone()),
            ..config(args, mem_size)?
        };
        let run = Cached {
            key: handler.key(mem_size),
            name: handler.snapshot_name(),
            invocation: handler.boot.clone(),
            config,
            stdio,
        };
        return run_cached(args, &vcpu, origin, run, || handler.module()).map_err(load_error);
    }
    let module = ModuleFile::open(path, cache_root(args).as_deref())
        .with_context(|| format!("cannot read {}", path.display()))?;
    let invocation = Invocation {
        args: argv(&module_name(path), rest),
        env,
    };
    let config = config(args, args.vm.memory())?;
    let run = Cached {
        key: Key::new(module.sha256(), config.mem_size, config.files.bytes()),
        name: module_name(path),
        invocation,
        config,
        stdio: process_stdio(args)?,
    };
    run_cached(args, &vcpu, origin, run, || Ok(module.into_bytes()?))
}

/// The cache root, unless `args` turn the snapshot cache off: nothing is
/// stored then, not even a module's digest.
fn cache_root(args: &RunArgs) -> Option<PathBuf> {
    default_cache_dir().filter(|_| !args.vm.no_cache && args.cache_size > 0)
}

/// A run that restores its VM from `wisp run`'s cache when it can.
struct Cached {
    /// What its snapshot is made from.
    key: Key,
    /// The snapshot's module name.
    name: String,
    invocation: Invocation,
    config: VmConfig,
    stdio: ProcessStdio,
}

/// Restores `run`'s VM from the cache, or compiles `module` and boots it
/// (caching its snapshot) when the cache has none or is off.
fn run_cached(
    args: &RunArgs,
    vcpu: &VcpuThread,
    origin: Instant,
    run: Cached,
    module: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<Ran> {
    let Cached {
        key,
        name,
        invocation,
        config,
        stdio,
    } = run;
    let cache = cache_root(args).map(|root| RunCache::new(&root, args.cache_size));
    let Some(cache) = cache else {
        let artifact = args.vm.compile_bytes(&module()?)?;
        return run_booted(vcpu, artifact, config, invocation, stdio, None);
    };
    let t_lookup = Instant::now();
    let start = match cache.get(&key) {
        Lookup::Hit(image) => {
            let lookup = format!(
                "lookup {} (done at {})",
                ms(t_lookup.elapsed()),
                ms(origin.elapsed())
            );
            let (shell, made) = vcpu.take_shell()?;
            let (vm, restored) = restore(shell, &image, config)?;
            let pending = vcpu.submit(invoke_job(vm, Start::Cached, invocation, stdio, false));
            cache.touch(&key);
            let mut ran = pending.wait()?;
            ran.timings = format!(
                "cached | {lookup} | {}{restored} | {}",
                made_here(made),
                ran.timings
            );
            return Ok(ran);
        }
        Lookup::Miss => Start::Created,
        Lookup::Unusable(_) => Start::Rebuilt,
    };
    let artifact = args.vm.compile_bytes(&module()?)?;
    let store = Store {
        cache,
        key,
        name,
        start,
    };
    run_booted(vcpu, artifact, config, invocation, stdio, Some(store))
}

/// Where a booted VM's snapshot goes.
struct Store {
    cache: RunCache,
    key: Key,
    name: String,
    start: Start,
}

/// Boots the module and runs it: in a VM restored from the snapshot stored
/// in the cache (so the first run is the same as every later one), or in
/// the booted VM itself without a cache or if storing failed.
fn run_booted(
    vcpu: &VcpuThread,
    artifact: Vec<u8>,
    config: VmConfig,
    invocation: Invocation,
    stdio: ProcessStdio,
    store: Option<Store>,
) -> Result<Ran> {
    let capture = store.is_some();
    let boot_config = config.clone();
    let (shell, made) = vcpu.take_shell()?;
    let (vm, snapshot, boot) = vcpu
        .submit(move |_: &Prepared| {
            let mut vm = Vm::boot_in(shell, boot_config, &artifact)?;
            let snapshot = if capture { Some(vm.capture()?) } else { None };
            let boot = vm.boot_timings();
            Ok::<_, VmError>((vm, snapshot, boot))
        })
        .wait()??;
    let booted = format!(
        "{}boot {} (memory {} + load {} + agent init {})",
        made_here(made),
        ms(boot.create + boot.load + boot.init),
        ms(boot.create),
        ms(boot.load),
        ms(boot.init)
    );
    let (Some(store), Some(snapshot)) = (store, snapshot) else {
        let mut ran = vcpu
            .submit(invoke_job(vm, Start::Fresh, invocation, stdio, false))
            .wait()?;
        ran.timings = format!("fresh | {booted} | {}", ran.timings);
        return Ok(ran);
    };
    let t_store = Instant::now();
    let stored = store.cache.insert(&store.key, |dir| {
        vm.write_snapshot(snapshot, dir, &store.name, None)
    });
    let stored_in = t_store.elapsed();
    match stored {
        Ok(image) => {
            let (vm, restored) = restore(vm.into_shell()?, &image, config)?;
            // The first run teaches the entry what later ones copy ahead.
            let mut ran = vcpu
                .submit(invoke_job(vm, store.start, invocation, stdio, true))
                .wait()?;
            store.cache.keep_working_set(&store.key, &image);
            ran.timings = format!(
                "{} | {booted} | snapshot {} | {restored} | {}",
                if store.start == Start::Rebuilt {
                    "rebuilt"
                } else {
                    "created"
                },
                ms(stored_in),
                ran.timings
            );
            Ok(ran)
        }
        Err(e) => {
            // The run does not depend on the cache: it goes on in the
            // booted VM.
            let mut ran = vcpu
                .submit(invoke_job(vm, Start::Fresh, invocation, stdio, false))
                .wait()?;
            ran.timings = format!("fresh (not cached: {e:#}) | {booted} | {}", ran.timings);
            Ok(ran)
        }
    }
}

/// A job that runs `invocation` in `vm`, which was booted or restored
/// (`start` says how), with this process's stdio; with `learn`, teaches
/// the image of a restored VM the pages the run wrote
/// ([`Vm::learn_working_set`]).
fn invoke_job(
    mut vm: Vm,
    start: Start,
    invocation: Invocation,
    mut stdio: ProcessStdio,
    learn: bool,
) -> impl FnOnce(&Prepared) -> Ran + Send + 'static {
    move |prepared| {
        let (outcome, run) = invoke(&mut vm, &invocation, &mut stdio);
        if learn {
            vm.learn_working_set();
        }
        Ran {
            outcome,
            start,
            vm: Some(vm),
            stdout_bytes: stdio.stdout_bytes,
            stderr_bytes: stdio.stderr_bytes,
            timings: format!("{prepared} | run {}", ms(run)),
        }
    }
}

/// The `--timings` text of a shell the main thread made (see
/// [`VcpuThread`]), if it made it.
fn made_here(took: Option<Duration>) -> String {
    took.map(|t| format!("shell {} (main thread) | ", ms(t)))
        .unwrap_or_default()
}

/// Restores a VM from `image` into `shell`, with the `--timings` text of
/// it. Host work only: no guest instruction runs before the VM is handed
/// to the vCPU thread.
fn restore(shell: Shell, image: &Arc<Image>, config: VmConfig) -> Result<(Vm, String), VmError> {
    let t0 = Instant::now();
    let vm = Vm::restore_in(shell, image, config)?;
    let RestoreTimings {
        memory,
        state,
        pages_ahead,
        ..
    } = vm.restore_timings();
    let text = format!(
        "restore {} (memory {}, {pages_ahead} pages ahead + state {})",
        ms(t0.elapsed()),
        ms(memory),
        ms(state)
    );
    Ok((vm, text))
}

/// Runs `invocation` in `vm` with this process's stdio.
fn invoke(
    vm: &mut Vm,
    invocation: &Invocation,
    stdio: &mut ProcessStdio,
) -> (Result<Outcome, VmError>, Duration) {
    let t = Instant::now();
    let outcome = vm.invoke(invocation, stdio);
    (outcome, t.elapsed())
}

/// Opens a snapshot, restores a VM from it and runs.
fn run_snapshot(args: &RunArgs, vcpu: &VcpuThread, dir: &Path, env: Vec<Vec<u8>>) -> Result<Ran> {
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
    let image = Arc::new(Image::open(dir)?);
    let open = t0.elapsed();
    let invocation = Invocation {
        args: argv(image.module_name().unwrap_or("module"), &args.command),
        env,
    };
    let config = config(args, image.mem_size())?;
    let stdio = ProcessStdio::default();
    let (shell, made) = vcpu.take_shell()?;
    let (vm, restored) = restore(shell, &image, config)?;
    let mut ran = vcpu
        .submit(invoke_job(vm, Start::Snapshot, invocation, stdio, false))
        .wait()?;
    ran.timings = format!(
        "snapshot | open+verify {} | {}{restored} | {}",
        ms(open),
        made_here(made),
        ran.timings
    );
    Ok(ran)
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
        // One invocation, never reset: no dirty log to keep.
        resettable: false,
        // What a cache entry's first run wrote, if it recorded that.
        prefault: Prefault::WorkingSet,
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
        ..ProcessStdio::default()
    })
}
