//! A client of the daemon's HTTP API over its Unix socket, used by the CLI
//! subcommands, the tests and the load benchmark.

use std::path::{Path, PathBuf};

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

/// One keep-alive HTTP/1.1 connection to the daemon.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    /// Connects to the daemon's socket.
    pub async fn open(socket: &Path) -> Result<Connection> {
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
        Ok(Connection { sender })
    }

    /// Sends one request and reads the whole response.
    pub async fn send(&mut self, method: Method, path: &str, body: Bytes) -> Result<Response> {
        self.sender
            .ready()
            .await
            .context("the daemon closed the connection")?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "wisp")
            .body(Full::new(body))
            .context("building the request")?;
        let response = self
            .sender
            .send_request(request)
            .await
            .context("sending the request to the daemon")?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading the daemon's response")?
            .to_bytes();
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// A client that opens a connection per request.
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
