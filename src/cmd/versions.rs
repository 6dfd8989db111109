//! The subcommands for versions, aliases and rollouts: `wisp versions`,
//! `wisp alias`, `wisp rollout`; and how `wisp ls` shows aliases.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Args;
use hyper::Method;
use wisp::api::{
    self, AdditionalVersion, AliasInfo, AliasRouting, RolloutInfo, RolloutRequest, RolloutState,
    VersionList,
};
use wisp::client::Client;

use super::client::SocketArg;

#[derive(Args)]
pub struct VersionsArgs {
    /// Function name.
    name: String,
    #[command(flatten)]
    socket: SocketArg,
}

#[derive(Args)]
pub struct AliasArgs {
    /// Function name.
    name: String,
    /// Alias name (`live` is where unqualified invocations go).
    alias: String,
    /// The version it routes to.
    #[arg(required_unless_present = "rm")]
    version: Option<u64>,
    /// Send `--weight` percent of the alias's invocations to this version
    /// instead.
    #[arg(long, requires = "weight")]
    additional: Option<u64>,
    /// Percent (0-100) of the invocations `--additional` takes.
    #[arg(long, requires = "additional")]
    weight: Option<u32>,
    /// Instances kept ready for the alias, split by the versions' shares.
    #[arg(long)]
    reserved: Option<u32>,
    /// Most instances kept ready for the alias, split the same way.
    #[arg(long)]
    max_ready: Option<u32>,
    /// Delete the alias instead.
    #[arg(long, conflicts_with_all = ["version", "additional"])]
    rm: bool,
    #[command(flatten)]
    socket: SocketArg,
}

#[derive(Args)]
pub struct RolloutArgs {
    /// Function name.
    name: String,
    /// The version to move to (starts a rollout).
    #[arg(long, required_unless_present_any = ["status", "cancel"])]
    to: Option<u64>,
    /// The alias to move.
    #[arg(long, default_value = api::LIVE_ALIAS)]
    alias: String,
    /// Percent of the traffic the new version takes at each step.
    #[arg(long, value_delimiter = ',', default_value = "5,25,50,100")]
    steps: Vec<u32>,
    /// How long each step lasts, e.g. `30s`.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// How far the new version's failure rate may exceed the old one's,
    /// e.g. `1%` (or a fraction, `0.01`).
    #[arg(long, default_value = "1%", value_parser = parse_rate)]
    max_error_rate: f64,
    /// Invocations of the new version a step needs before it is judged.
    #[arg(long, default_value_t = 0)]
    min_invocations: u64,
    /// Return once started instead of following the rollout to its end.
    #[arg(long)]
    no_wait: bool,
    /// Show the latest rollout instead.
    #[arg(long, conflicts_with_all = ["to", "cancel"])]
    status: bool,
    /// Cancel the running rollout (its alias goes back).
    #[arg(long, conflicts_with = "to")]
    cancel: bool,
    #[command(flatten)]
    socket: SocketArg,
}

/// `1%` as 0.01; a bare number is a fraction.
fn parse_rate(text: &str) -> Result<f64, String> {
    let (number, scale) = match text.strip_suffix('%') {
        Some(n) => (n, 100.0),
        None => (text, 1.0),
    };
    let rate = number
        .trim()
        .parse::<f64>()
        .map_err(|e| format!("`{text}`: {e}"))?
        / scale;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("`{text}` is not a rate from 0% to 100%"))
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Sends a request and fails with the daemon's message unless it is 2xx.
fn call(socket: &PathBuf, method: Method, path: &str, body: Bytes) -> Result<Bytes> {
    let client = Client::new(socket);
    Ok(runtime()?
        .block_on(client.request(method, path, body))?
        .ok()?
        .body)
}

/// How `wisp ls` and `wisp versions` show an alias's routing: `7` or
/// `7:90%,8:10%`.
pub fn routing_text(routing: &AliasRouting) -> String {
    match routing.additional {
        Some(a) => format!(
            "{}:{}%,{}:{}%",
            routing.version,
            100 - a.weight.min(100),
            a.version,
            a.weight
        ),
        None => routing.version.to_string(),
    }
}

/// `live=7:90%,8:10% canary=8`.
pub fn aliases_text(aliases: &[AliasInfo]) -> String {
    aliases
        .iter()
        .map(|a| format!("{}={}", a.name, routing_text(&a.routing)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line for a rollout.
pub fn rollout_text(r: &RolloutInfo) -> String {
    let mut text = format!(
        "{} {}: {} -> {}, step {}/{} ({}%)",
        r.state.as_str(),
        r.alias,
        r.from,
        r.to,
        r.step + 1,
        r.steps.len(),
        r.steps.get(r.step).copied().unwrap_or(0)
    );
    if let Some(w) = r.window {
        text += &format!(
            ", new {}/{} failed, old {}/{}",
            w.to_errors, w.to_invocations, w.from_errors, w.from_invocations
        );
    }
    if let Some(reason) = &r.reason {
        text += &format!(": {reason}");
    }
    text
}

/// `wisp versions`.
pub fn versions(args: VersionsArgs) -> Result<ExitCode> {
    let path = format!("/v1/functions/{}/versions", args.name);
    let body = call(&args.socket.socket, Method::GET, &path, Bytes::new())?;
    let list: VersionList = serde_json::from_slice(&body)?;
    println!(
        "{:>7} {:<20} {:>6} {:>5} {:>12} {:>7} {:>9} MODULE",
        "VERSION", "ALIASES", "READY", "BUSY", "INVOCATIONS", "ERRORS", "P50 MS"
    );
    for v in list.versions {
        let aliases = if v.aliases.is_empty() {
            "-".to_string()
        } else {
            v.aliases.join(",")
        };
        println!(
            "{:>7} {:<20} {:>6} {:>5} {:>12} {:>7} {:>9.3} {}",
            v.version,
            aliases,
            v.instances.ready,
            v.instances.busy,
            v.stats.invocations,
            v.stats.errors,
            v.stats.latency_ms.p50,
            &v.module_sha256[..v.module_sha256.len().min(12)]
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `wisp alias`.
pub fn alias(args: AliasArgs) -> Result<ExitCode> {
    let path = format!("/v1/functions/{}/aliases/{}", args.name, args.alias);
    if args.rm {
        call(&args.socket.socket, Method::DELETE, &path, Bytes::new())?;
        eprintln!("wisp: alias {} of {} deleted", args.alias, args.name);
        return Ok(ExitCode::SUCCESS);
    }
    let routing = AliasRouting {
        version: args.version.context("give the version")?,
        additional: args
            .additional
            .zip(args.weight)
            .map(|(version, weight)| AdditionalVersion { version, weight }),
        reserved: args.reserved,
        max_ready: args.max_ready,
    };
    let body = Bytes::from(serde_json::to_vec(&routing)?);
    let body = call(&args.socket.socket, Method::PUT, &path, body)?;
    let info: AliasInfo = serde_json::from_slice(&body)?;
    eprintln!(
        "wisp: {} {} -> {}",
        args.name,
        info.name,
        routing_text(&info.routing)
    );
    Ok(ExitCode::SUCCESS)
}

/// How often `wisp rollout` looks at a rollout it follows.
const FOLLOW: Duration = Duration::from_millis(500);

/// `wisp rollout`: starts a rollout and follows it to its end (exit 0 if
/// it completed, 1 otherwise); or shows or cancels one.
pub fn rollout(args: RolloutArgs) -> Result<ExitCode> {
    let path = format!("/v1/functions/{}/rollout", args.name);
    let socket = &args.socket.socket;
    let show = |body: Bytes| -> Result<RolloutInfo> {
        let info: RolloutInfo = serde_json::from_slice(&body)?;
        eprintln!("wisp: {} rollout {}", args.name, rollout_text(&info));
        Ok(info)
    };
    if args.status {
        show(call(socket, Method::GET, &path, Bytes::new())?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.cancel {
        show(call(socket, Method::DELETE, &path, Bytes::new())?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let interval_ms = u64::try_from(args.interval.as_millis()).unwrap_or(u64::MAX);
    let request = RolloutRequest {
        to: args.to.context("give --to")?,
        alias: args.alias.clone(),
        steps: args.steps.clone(),
        interval_ms,
        max_error_rate: args.max_error_rate,
        min_invocations: args.min_invocations,
    };
    let body = Bytes::from(serde_json::to_vec(&request)?);
    let mut info = show(call(socket, Method::POST, &path, body)?)?;
    if args.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    let mut step = info.step;
    while info.state == RolloutState::Running {
        std::thread::sleep(FOLLOW);
        let body = call(socket, Method::GET, &path, Bytes::new())?;
        info = serde_json::from_slice(&body)?;
        if info.step != step || info.state != RolloutState::Running {
            step = info.step;
            eprintln!("wisp: {} rollout {}", args.name, rollout_text(&info));
        }
    }
    Ok(if info.state == RolloutState::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_take_percent_or_fractions() {
        assert_eq!(parse_rate("1%").unwrap(), 0.01);
        assert_eq!(parse_rate("0.05").unwrap(), 0.05);
        parse_rate("150%").unwrap_err();
        parse_rate("x").unwrap_err();
    }

    #[test]
    fn splits_read_as_shares() {
        let r = AliasRouting {
            additional: Some(AdditionalVersion {
                version: 8,
                weight: 10,
            }),
            ..AliasRouting::to(7)
        };
        assert_eq!(routing_text(&r), "7:90%,8:10%");
        assert_eq!(routing_text(&AliasRouting::to(3)), "3");
    }
}
