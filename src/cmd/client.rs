//! The subcommands that talk to a running daemon: deploy, invoke, ls,
//! inspect, rm.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use base64::Engine as _;
use bytes::Bytes;
use clap::Args;
use hyper::Method;
use wisp::api::{self, DeployRequest, FunctionConfig, FunctionInfo, FunctionList};
use wisp::client::Client;
use wisp::daemon::DEFAULT_SOCKET;

/// The daemon to talk to.
#[derive(Args)]
pub struct SocketArg {
    /// The daemon's Unix socket.
    #[arg(long, env = "WISP_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Args)]
pub struct DeployArgs {
    /// Function name (a-z, 0-9, `-`, `_`).
    name: String,
    /// The module, `.wasm` or `.wat`; with `--runtime`, the handler's code
    /// (a directory, or one file).
    #[arg(required_unless_present = "image", conflicts_with = "image")]
    module: Option<PathBuf>,
    /// Deploy a handler on this language runtime (`python3.12`,
    /// `javascript`; docs/RUNTIMES.md): MODULE is then its code.
    #[arg(long, requires = "handler", conflicts_with = "image")]
    runtime: Option<String>,
    /// The handler the runtime calls, `MODULE.FUNCTION` (`app.handler`).
    #[arg(long, requires = "runtime")]
    handler: Option<String>,
    /// Deploy an image from the daemon's image store instead (`name:tag`,
    /// `sha256:<hex>` or a digest prefix; see `wisp image`), or from an OCI
    /// registry, which the daemon pulls it from
    /// (`HOST[:PORT]/REPOSITORY[:TAG|@sha256:HEX]`).
    #[arg(long, value_name = "REF")]
    image: Option<String>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = api::DEFAULT_MEMORY_MIB)]
    memory_mib: u32,
    /// Invocation timeout in milliseconds.
    #[arg(long, default_value_t = api::DEFAULT_TIMEOUT_MS)]
    timeout_ms: u64,
    /// Limit of the deploy's boot to ready (instantiation and `wisp_init`)
    /// in milliseconds.
    #[arg(long, default_value_t = api::DEFAULT_INIT_TIMEOUT_MS)]
    init_timeout_ms: u64,
    /// An environment variable, `NAME=VALUE` (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Most concurrent invocations.
    #[arg(long, default_value_t = api::DEFAULT_CONCURRENCY)]
    concurrency: u32,
    /// Instances kept ready even when idle.
    #[arg(long, default_value_t = 0)]
    reserved: u32,
    /// Most instances kept ready.
    #[arg(long, default_value_t = api::DEFAULT_MAX_READY)]
    max_ready: u32,
    #[command(flatten)]
    socket: SocketArg,
}

#[derive(Args)]
pub struct InvokeArgs {
    /// Function name.
    name: String,
    /// Which version: an alias (default `live`) or a version number.
    #[arg(long, short = 'q')]
    qualifier: Option<String>,
    /// Print how the daemon served it (cold or warm start, queue, restore
    /// and run times) to stderr.
    #[arg(long)]
    timings: bool,
    #[command(flatten)]
    socket: SocketArg,
}

#[derive(Args)]
pub struct NameArgs {
    /// Function name.
    name: String,
    #[command(flatten)]
    socket: SocketArg,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `wisp deploy`.
pub fn deploy(args: DeployArgs) -> Result<ExitCode> {
    let module = match &args.module {
        Some(path) if args.runtime.is_some() => Some(
            wisp::runtimes::code_tar(path)
                .with_context(|| format!("cannot pack {}", path.display()))?,
        ),
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?)
        }
        None => None,
    };
    let mut env = BTreeMap::new();
    for spec in &args.env {
        let (k, v) = spec
            .split_once('=')
            .with_context(|| format!("--env `{spec}`: expected NAME=VALUE"))?;
        env.insert(k.to_string(), v.to_string());
    }
    let config = FunctionConfig {
        memory_mib: args.memory_mib,
        timeout_ms: args.timeout_ms,
        init_timeout_ms: args.init_timeout_ms,
        env,
        concurrency: args.concurrency,
        reserved: args.reserved,
        max_ready: args.max_ready,
        runtime: args.runtime.clone(),
        handler: args.handler.clone(),
    };
    let request = match (&module, &args.image) {
        (Some(code), _) if config.runtime.is_some() => DeployRequest::code(code, config),
        (Some(module), _) => DeployRequest::module(module, config),
        (None, Some(image)) => DeployRequest::image(image, config),
        (None, None) => unreachable!("clap requires one"),
    };
    let client = Client::new(args.socket.socket);
    let path = format!("/v1/functions/{}", args.name);
    let body = Bytes::from(serde_json::to_vec(&request)?);
    let response = runtime()?
        .block_on(client.request(Method::PUT, &path, body))?
        .ok()?;
    let info: FunctionInfo = serde_json::from_slice(&response.body)?;
    match &info.image {
        Some(image) => eprintln!(
            "wisp: {} version {} is ready (image {} {})",
            info.name, info.version, image.reference, image.digest
        ),
        None => eprintln!("wisp: {} version {} is ready", info.name, info.version),
    }
    Ok(ExitCode::SUCCESS)
}

/// `wisp invoke`: stdin to the function, its stdout to ours, its exit code
/// as ours.
pub fn invoke(args: InvokeArgs) -> Result<ExitCode> {
    let mut stdin = Vec::new();
    std::io::stdin().read_to_end(&mut stdin)?;
    let client = Client::new(args.socket.socket);
    let path = match &args.qualifier {
        Some(q) => format!("/v1/functions/{}/invoke?qualifier={q}", args.name),
        None => format!("/v1/functions/{}/invoke", args.name),
    };
    let response = runtime()?
        .block_on(client.request(Method::POST, &path, Bytes::from(stdin)))?
        .ok()?;
    std::io::stdout().write_all(&response.body)?;
    if let Some(stderr) = response.header(api::HEADER_STDERR) {
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(stderr) {
            std::io::stderr().write_all(&bytes)?;
        }
    }
    if args.timings {
        let header = |name| response.header(name).unwrap_or("?");
        eprintln!(
            "wisp: version {} | {} start | queue {} us | restore {} us | run {} us",
            header(api::HEADER_VERSION),
            header(api::HEADER_START),
            header(api::HEADER_QUEUE_US),
            header(api::HEADER_RESTORE_US),
            header(api::HEADER_RUN_US)
        );
    }
    let code: i32 = response
        .header(api::HEADER_EXIT_CODE)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok(ExitCode::from(code as u8))
}

/// `wisp ls`.
pub fn ls(args: SocketArg) -> Result<ExitCode> {
    let client = Client::new(args.socket);
    let response = runtime()?
        .block_on(client.request(Method::GET, "/v1/functions", Bytes::new()))?
        .ok()?;
    let list: FunctionList = serde_json::from_slice(&response.body)?;
    println!(
        "{:<24} {:>7} {:>8} {:>6} {:>5} {:>6} {:>12} {:>9} {:>9}  ALIASES",
        "NAME", "VERSION", "VERSIONS", "READY", "BUSY", "MEMORY", "INVOCATIONS", "P50 MS", "P99 MS"
    );
    for f in list.functions {
        let rollout = f
            .rollout
            .as_ref()
            .filter(|r| r.state == api::RolloutState::Running)
            .map(|r| format!("  [rollout {}]", super::versions::rollout_text(r)))
            .unwrap_or_default();
        println!(
            "{:<24} {:>7} {:>8} {:>6} {:>5} {:>5}M {:>12} {:>9.3} {:>9.3}  {}{rollout}",
            f.name,
            f.version,
            f.versions.len(),
            f.instances.ready,
            f.instances.busy,
            f.config.memory_mib,
            f.stats.invocations,
            f.stats.latency_ms.p50,
            f.stats.latency_ms.p99,
            super::versions::aliases_text(&f.aliases)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `wisp inspect`.
pub fn inspect(args: NameArgs) -> Result<ExitCode> {
    let client = Client::new(args.socket.socket);
    let path = format!("/v1/functions/{}", args.name);
    let response = runtime()?
        .block_on(client.request(Method::GET, &path, Bytes::new()))?
        .ok()?;
    let info: FunctionInfo = serde_json::from_slice(&response.body)?;
    print_json(&info)?;
    Ok(ExitCode::SUCCESS)
}

/// `wisp rm`.
pub fn rm(args: NameArgs) -> Result<ExitCode> {
    let client = Client::new(args.socket.socket);
    let path = format!("/v1/functions/{}", args.name);
    runtime()?
        .block_on(client.request(Method::DELETE, &path, Bytes::new()))?
        .ok()?;
    eprintln!("wisp: {} deleted", args.name);
    Ok(ExitCode::SUCCESS)
}
