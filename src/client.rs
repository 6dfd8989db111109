//! A client of the daemon's HTTP API over its Unix socket, used by the CLI
//! subcommands, the tests and the load benchmark.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{HeaderMap, Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use crate::api::ErrorBody;

/// A response, fully read.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Response {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    /// The `{error: {code, message}}` body of an error response.
    pub fn error(&self) -> Option<ErrorBody> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Fails with the server's message unless the status is 2xx.
    pub fn ok(self) -> Result<Response> {
        if (200..300).contains(&self.status) {
            return Ok(self);
        }
        match self.error() {
            Some(e) => anyhow::bail!(
                "{} ({}, HTTP {})",
                e.error.message,
                e.error.code,
                self.status
            ),
            None => anyhow::bail!(
                "HTTP {}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            ),
        }
    }
}

/// A connection idle for longer than this may have been closed by the
/// server meanwhile; before reusing it the runtime gets one turn to
/// deliver that close (see [`Connection`]). Back-to-back requests skip it.
const IDLE_CHECK_AFTER: Duration = Duration::from_millis(5);

/// A keep-alive HTTP/1.1 connection to the daemon that reconnects when the
/// daemon has closed it, as hyper-util's client pool does: the daemon
/// closes a connection idle for its `--header-timeout` (10 s), and a
/// benchmark or a scheduler may well keep one longer than that.
///
/// A request is sent again on a new connection only when it cannot have
/// reached the daemon: the connection was found closed before sending, or
/// hyper handed the request back unsent
/// ([`hyper::client::conn::TrySendError::take_message`]), and then once.
/// A request that was written, even in part — the connection
/// failed while writing it or before the response — is an error, not a
/// second try: an invocation must not run twice unasked.
///
/// The close must be noticed before writing, not after: a runtime that
/// was not running while the connection sat idle (a single-threaded one
/// outside `block_on`, as `wisp-bench` uses) has not yet read the EOF and
/// would write into the closed socket (`Broken pipe`). So a connection
/// idle for a while first yields once, which lets the runtime poll its
/// I/O driver and hyper see the close, and then hands the request back
/// unsent if it closed meanwhile.
///
/// Hand-rolled rather than `hyper_util::client::legacy::Client` with a
/// Unix-socket connector: that pool has the same retry rule (it too
/// retries only a request hyper hands back) but not the yield, needs
/// absolute URIs and a connector service, and would pool connections
/// where callers (the burst, the load benchmark) want one connection per
/// client, opened beforehand.
pub struct Connection {
    socket: PathBuf,
    /// `None` once the connection failed; the next request reconnects.
    sender: Option<SendRequest<Full<Bytes>>>,
    /// When the last response was read.
    idle_since: Instant,
}

/// An HTTP/1.1 connection to `socket`.
async fn connect(socket: &Path) -> Result<SendRequest<Full<Bytes>>> {
    let stream = UnixStream::connect(socket).await.with_context(|| {
        format!(
            "cannot connect to the wisp daemon at {} (is `wisp serve` running?)",
            socket.display()
        )
    })?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake with the daemon")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

impl Connection {
    /// Connects to the daemon's socket.
    pub async fn open(socket: &Path) -> Result<Connection> {
        Ok(Connection {
            socket: socket.to_path_buf(),
            sender: Some(connect(socket).await?),
            idle_since: Instant::now(),
        })
    }

    /// A sender ready for a request: the open connection if the daemon has
    /// not closed it, else a new one (and `fresh` set).
    async fn ready(&mut self, fresh: &mut bool) -> Result<&mut SendRequest<Full<Bytes>>> {
        let mut open = self.sender.take();
        if let Some(sender) = &mut open {
            if self.idle_since.elapsed() >= IDLE_CHECK_AFTER {
                tokio::task::yield_now().await;
            }
            if sender.ready().await.is_err() {
                open = None;
            }
        }
        let sender = match open {
            Some(sender) => sender,
            None => {
                *fresh = true;
                let mut sender = connect(&self.socket).await?;
                sender
                    .ready()
                    .await
                    .context("the daemon closed a new connection")?;
                sender
            }
        };
        Ok(self.sender.insert(sender))
    }

    /// Sends one request and reads the whole response, on a new connection
    /// if the daemon closed this one (see [`Connection`]).
    pub async fn send(&mut self, method: Method, path: &str, body: Bytes) -> Result<Response> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "wisp")
            .body(Full::new(body))
            .context("building the request")?;
        let mut fresh = false;
        let response = loop {
            let sent = self
                .ready(&mut fresh)
                .await?
                .try_send_request(request)
                .await;
            match sent {
                Ok(response) => break response,
                Err(mut e) => {
                    self.sender = None;
                    match e.take_message() {
                        // Never written: safe to send on a new connection,
                        // unless this one was new already.
                        Some(unsent) if !fresh => request = unsent,
                        _ => {
                            return Err(anyhow::Error::new(e.into_error())
                                .context("sending the request to the daemon"))
                        }
                    }
                }
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = match response.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => {
                self.sender = None;
                return Err(anyhow::Error::new(e).context("reading the daemon's response"));
            }
        };
        self.idle_since = Instant::now();
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// A client that opens a connection per request (so it never meets a
/// connection the daemon closed while idle).
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client of the daemon at `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
        }
    }

    /// Sends one request.
    pub async fn request(&self, method: Method, path: &str, body: Bytes) -> Result<Response> {
        Connection::open(&self.socket)
            .await?
            .send(method, path, body)
            .await
    }
}
