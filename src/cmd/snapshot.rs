//! `wisp snapshot`: boot a module to ready and write a snapshot of it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use wisp_vmm::{Image, Invocation, Vm, VmConfig};

use super::{argv, env_entries, module_name, ms, VmArgs};

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Boot a module to ready (instantiated, `wisp_init` export run) and
    /// write a snapshot that `wisp run --snapshot` restores.
    Create(CreateArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// The module, a `.wasm` binary or `.wat` text.
    module: PathBuf,
    /// Directory to write the snapshot to (replaced atomically if it exists).
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
    #[command(flatten)]
    vm: VmArgs,
    /// Do not run a sample invocation to record the pages a restore should
    /// pre-fault.
    #[arg(long)]
    no_working_set: bool,
    /// An environment variable for the sample invocation (`NAME=VALUE` or
    /// `NAME`).
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Arguments for the sample invocation.
    #[arg(last = true)]
    args: Vec<String>,
}

/// Runs a `wisp snapshot` subcommand.
pub fn run(command: SnapshotCommand) -> Result<ExitCode> {
    match command {
        SnapshotCommand::Create(args) => create(args),
    }
}

fn create(args: CreateArgs) -> Result<ExitCode> {
    let t0 = Instant::now();
    let artifact = args.vm.compile(&args.module)?;
    let config = VmConfig {
        mem_size: args.vm.memory(),
        files: args.vm.files()?,
        ..VmConfig::default()
    };
    let mut vm = Vm::boot(config, &artifact)?;
    // What the module printed while initialising belongs to this run, not
    // to every restore.
    let init = vm.take_init_output();
    std::io::stdout().write_all(&init.stdout)?;
    std::io::stderr().write_all(&init.stderr)?;

    let name = module_name(&args.module);
    let sample = Invocation {
        args: argv(&name, &args.args),
        env: env_entries(&args.env)?,
    };
    let sample = (!args.no_working_set).then_some(&sample);
    vm.snapshot(&args.output, &name, sample)
        .with_context(|| format!("writing the snapshot to {}", args.output.display()))?;
    drop(vm);
    let image = Image::open(&args.output)
        .with_context(|| format!("verifying the snapshot in {}", args.output.display()))?;
    let (read, written) = image.working_set().page_counts();
    eprintln!(
        "wisp: snapshot of {name} written to {} in {} ({} MiB guest memory, working set {read} read + {written} written pages)",
        args.output.display(),
        ms(t0.elapsed()),
        image.mem_size() >> 20,
    );
    Ok(ExitCode::SUCCESS)
}
