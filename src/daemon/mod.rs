//! `wisp serve`: the per-host daemon. Schedulers talk HTTP/1.1 + JSON to it
//! over a Unix socket (TCP only if asked); it keeps a registry of deployed
//! functions with their snapshots and a pool of restored instances per
//! function.
//!
//! A request travels: [`server`] (the socket, connection limits) →
//! [`connection`] (one HTTP/1.1 connection) → [`http`] (routes, parsing) → one job's file → the [`invokers`] (the
//! seccomp-filtered threads that run guest code) → a VM → back.
//!
//! - [`host`]: the shared state every job works on
//! - [`deploy`], [`invoke`], [`delete`]: the API's jobs, one file each
//! - [`routes`], [`versions`], [`rollout`]: which version serves a
//!   request, versions and aliases, gradual rollouts
//! - [`recovery`]: bringing functions back at start
//! - [`pool_manager`]: keeping instances ready between requests
//! - [`function`], [`pool`], [`instance`]: a function version, its
//!   admission and ready set, one restored VM
//! - [`budget`]: what instances may use of host memory
//! - [`images`]: deploying from the image store
//! - [`registry`], [`store`]: what survives a restart
//! - [`error`]: API errors, and how every failure becomes one
//! - [`metrics`], [`cgroups`], [`privileges`]

pub mod budget;
pub mod cgroups;
pub mod connection;
pub mod delete;
pub mod deploy;
pub mod error;
pub mod function;
pub mod host;
pub mod http;
pub mod images;
pub mod instance;
pub mod invoke;
pub mod invokers;
pub mod metrics;
pub mod pool;
pub mod pool_manager;
pub mod privileges;
pub mod recovery;
pub mod registry;
pub mod rollout;
pub mod routes;
pub mod server;
pub mod store;
pub mod versions;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tracing::info;

pub use deploy::Source;
pub use host::{Host, Settings};
use store::Store;

/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/wisp/wisp.sock";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/wisp";
/// Default image store: the daemon's, `DEFAULT_STATE_DIR/images` (what
/// `wisp image` uses unless told otherwise).
pub const DEFAULT_IMAGE_DIR: &str = "/var/lib/wisp/images";

/// Where and how the daemon serves.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The Unix socket to listen on.
    pub socket: PathBuf,
    /// Also listen on TCP here (only if asked: the API has no auth).
    pub listen: Option<SocketAddr>,
    /// Registry, modules and snapshots.
    pub state_dir: PathBuf,
    /// Pool and budget settings.
    pub settings: Settings,
    /// Connection limits.
    pub limits: server::ConnectionLimits,
    /// Run as this user after opening `/dev/kvm` and binding the socket.
    pub user: Option<String>,
}

/// Binds `path`, replacing a stale socket file but never a live daemon's.
fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another daemon is listening on {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    // Owner and group only: whoever can connect can run code.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("shutting down");
}

/// Raises the soft limit on open files to the hard limit: every instance
/// holds two (its VM and vCPU) and every connection one.
fn raise_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// Warns if the state directory is on tmpfs: snapshots are sparse, and
/// reading a hole of a tmpfs file through a private mapping allocates a
/// page, so a full tmpfs would kill the daemon with SIGBUS mid-invocation.
fn warn_if_tmpfs(dir: &Path) {
    if let Ok(fs) = nix::sys::statfs::statfs(dir) {
        if fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC {
            tracing::warn!(
                state = %dir.display(),
                "the state directory is on tmpfs: if it fills up, restored instances fault; use a disk-backed filesystem"
            );
        }
    }
}

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn serve(config: ServeConfig) -> Result<()> {
    raise_file_limit();
    let store = Store::open(&config.state_dir)
        .with_context(|| format!("opening the state directory {}", config.state_dir.display()))?;
    warn_if_tmpfs(&config.state_dir);
    cgroups::log_support(&cgroups::detect());
    let unix = bind_unix(&config.socket)?;
    let tcp = match config.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?,
        ),
        None => None,
    };
    if let Some(user) = &config.user {
        // KVM stays usable through the open handle; nothing else needs root.
        wisp_vmm::open_kvm()?;
        privileges::drop_to(user, &[&config.state_dir, &config.socket])?;
        info!(user = %user, "dropped privileges");
    }
    let settings = config.settings.clone();
    let host = tokio::task::spawn_blocking(move || Host::open(store, settings)).await??;
    host.start_pool_manager()
        .context("starting the pool manager")?;
    host.resume_rollouts();
    let app = http::router(Arc::clone(&host), config.limits.body_timeout);

    info!(socket = %config.socket.display(), state = %config.state_dir.display(), "listening");
    let limits = config.limits;
    let unix_server = server::serve(unix, app.clone(), limits, shutdown_signal());
    match tcp {
        Some(tcp) => {
            info!(addr = ?tcp.local_addr().ok(), "also listening on TCP");
            let tcp_server = server::serve(tcp, app, limits, shutdown_signal());
            tokio::join!(unix_server, tcp_server);
        }
        None => unix_server.await,
    }
    let _ = std::fs::remove_file(&config.socket);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_image_store_is_the_default_daemons() {
        let state = Store::open(&tempfile::tempdir().unwrap().path().join("s")).unwrap();
        assert!(state.images_dir().ends_with("images"));
        assert_eq!(
            Path::new(DEFAULT_IMAGE_DIR),
            Path::new(DEFAULT_STATE_DIR).join("images")
        );
    }
}
