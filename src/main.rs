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
    /// Run the daemon: an HTTP API on a Unix socket for deploying and
    /// invoking functions.
    Serve(cmd::serve::ServeArgs),
    /// Deploy or update a function on the daemon.
    Deploy(cmd::client::DeployArgs),
    /// Invoke a function on the daemon: stdin in, stdout out.
    Invoke(cmd::client::InvokeArgs),
    /// List the daemon's functions.
    Ls(cmd::client::SocketArg),
    /// Show a function's settings, instances and statistics.
    Inspect(cmd::client::NameArgs),
    /// Delete a function (after its in-flight invocations).
    Rm(cmd::client::NameArgs),
    /// List a function's versions, with their aliases, instances and
    /// statistics.
    Versions(cmd::versions::VersionsArgs),
    /// Create, move, split (`--additional V --weight W`) or delete (`--rm`)
    /// an alias of a function.
    Alias(cmd::versions::AliasArgs),
    /// Move an alias to another version step by step, rolling back if the
    /// new version fails more than the old; or show (`--status`) or cancel
    /// (`--cancel`) the rollout.
    Rollout(cmd::versions::RolloutArgs),
    /// Build, import, export, list, remove and garbage-collect function
    /// images (a module and its files, as OCI images) in a local store.
    #[command(subcommand)]
    Image(cmd::image::ImageCommand),
}

fn main() -> ExitCode {
    // Before anything else: `wisp run`'s start-up is what CI pays per job.
    let early = cmd::run::EarlyStart::if_running();
    if early.is_some() {
        if let Some(args) = cmd::run::RunArgs::parse_alone() {
            cmd::run::run(args, early);
        }
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => cmd::run::run(args, early),
        Command::Snapshot(command) => cmd::snapshot::run(command),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Deploy(args) => cmd::client::deploy(args),
        Command::Invoke(args) => cmd::client::invoke(args),
        Command::Ls(args) => cmd::client::ls(args),
        Command::Inspect(args) => cmd::client::inspect(args),
        Command::Rm(args) => cmd::client::rm(args),
        Command::Versions(args) => cmd::versions::versions(args),
        Command::Alias(args) => cmd::versions::alias(args),
        Command::Rollout(args) => cmd::versions::rollout(args),
        Command::Image(command) => cmd::image::run(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
