//! `wisp serve`: run the daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, ValueEnum};
use wisp::daemon::server::ConnectionLimits;
use wisp::daemon::{self, ServeConfig, Settings};
use wisp::seccomp::Seccomp;
use wisp::units::parse_size;

/// Log output format.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Unix socket to listen on.
    #[arg(long, env = "WISP_SOCKET", default_value = daemon::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Also listen on this TCP address (the API has no authentication:
    /// only on trusted networks).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// Registry, modules, snapshots and compile cache.
    #[arg(long, env = "WISP_STATE_DIR", default_value = daemon::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Host memory all instances together may use, e.g. `8G`.
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    memory_budget: u64,
    /// Empty VMs kept pre-created for cold starts.
    #[arg(long, default_value_t = 64)]
    shells: usize,
    /// An idle function shrinks to its reserved instances after this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Invocations running at once across all functions (default: 8 per
    /// core, at least 16). A sleeping function holds one.
    #[arg(long)]
    invocation_threads: Option<usize>,
    /// Most client connections open at once; more are closed on accept.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Time a client has to send a request's headers; also how long an
    /// idle keep-alive connection is kept open.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    header_timeout: Duration,
    /// Time a client has to send a request's body (408 after it).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    body_timeout: Duration,
    /// Run as this user once `/dev/kvm` is open and the socket bound; the
    /// state directory is given to it (e.g. `--user wisp`).
    #[arg(long)]
    user: Option<String>,
    /// What a system call outside the invocation threads' seccomp
    /// allow-list does: `kill` the daemon, `log` it to the kernel audit
    /// log and allow it, or `off` (no filter).
    #[arg(long, env = "WISP_SECCOMP", value_enum, default_value_t = Seccomp::Kill)]
    seccomp: Seccomp,
    /// Versions no alias routes to kept per function; older ones are
    /// deleted with their snapshots.
    #[arg(long, default_value_t = 5)]
    keep_versions: usize,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// Runs the daemon until SIGINT/SIGTERM.
pub fn run(args: ServeArgs) -> Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WISP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let config = ServeConfig {
        socket: args.socket,
        listen: args.listen,
        state_dir: args.state_dir,
        settings: Settings {
            memory_budget: args.memory_budget,
            shells: args.shells,
            idle_timeout: args.idle_timeout,
            invocation_threads: args
                .invocation_threads
                .unwrap_or_else(Settings::default_invocation_threads),
            seccomp: args.seccomp,
            keep_versions: args.keep_versions,
        },
        user: args.user,
        limits: ConnectionLimits {
            max_connections: args.max_connections.max(1),
            header_timeout: args.header_timeout,
            body_timeout: args.body_timeout,
            ..ConnectionLimits::default()
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Deploys, recovery and file I/O; invocations have threads of
        // their own.
        .max_blocking_threads(32)
        .build()?;
    runtime.block_on(daemon::serve(config))?;
    Ok(ExitCode::SUCCESS)
}
