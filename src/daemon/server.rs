//! The accept loop: HTTP/1.1 connections served with limits that a
//! hostile or broken client cannot get around — a cap on open connections,
//! a deadline for request headers (slowloris), and graceful shutdown that
//! lets in-flight requests finish. Each connection is served by
//! [`super::connection`], which also makes hyper's own error replies JSON.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use axum::Router;
use hyper_util::rt::TokioTimer;
use tokio::sync::{watch, Semaphore};
use tracing::warn;

use super::connection::serve_connection;

/// Connection limits.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Most connections open at once; more are closed on accept.
    pub max_connections: usize,
    /// Time a client has to send a request's headers; also how long an
    /// idle keep-alive connection is kept (hyper starts the same timer
    /// when it waits for the next request).
    pub header_timeout: Duration,
    /// Time a client has to send a request's body once a route reads it.
    pub body_timeout: Duration,
    /// Time in-flight requests get to finish at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then waits (up to
/// the grace period) for open requests.
pub async fn serve<L: Listener>(
    mut listener: L,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopping) = watch::channel(());
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (io, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            warn!(
                limit = limits.max_connections,
                "connection limit reached; closing a new connection"
            );
            drop(io);
            continue;
        };
        let (builder, app, mut stopping) = (Arc::clone(&builder), app.clone(), stopping.clone());
        tokio::spawn(async move {
            // Either a signal or the sender going away means stop.
            let stop = async move {
                let _ = stopping.changed().await;
            };
            serve_connection(&builder, io, app, limits.header_timeout, stop).await;
            drop(slot);
        });
    }
    let _ = stop.send(());
    // Every connection holds a slot until it has ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.shutdown_grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        warn!("requests still running after the shutdown grace period");
    }
}
