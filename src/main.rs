//! The `wisp` command.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run functions in KVM micro-VMs.
#[derive(Parser)]
#[command(name = "wisp", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a WASI command module in a fresh micro-VM, or restore one from a
    /// snapshot and run it.
    Run(cmd::run::RunArgs),
    /// Create snapshots of ready micro-VMs.
    #[command(subcommand)]
    Snapshot(cmd::snapshot::SnapshotCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => cmd::run::run(args),
        Command::Snapshot(command) => cmd::snapshot::run(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
