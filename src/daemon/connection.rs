//! One client connection: hyper serves it, and the replies hyper would
//! write itself, with an empty body, become JSON errors like every other.
//!
//! hyper answers a request it cannot parse on its own, before any route
//! sees it: `400` for a malformed request line or header, `431` for a head
//! over its size or header-count limit, `414` for an overlong target — an
//! empty body and `connection: close` — and it offers no hook to change
//! that reply. (A request whose head does not arrive within the header
//! timeout gets no reply at all: the connection is just closed.) So:
//!
//! - the connection's IO is wrapped in [`ReplyGuard`], which holds back a
//!   write that is exactly such a reply instead of sending it;
//! - the connection is polled without hyper's shutdown, so the IO comes
//!   back when it ends ([`serve_connection`]);
//! - if it ended with a parse error, the held bytes were hyper's reply and
//!   a JSON one of the same status is sent instead; if it ended with the
//!   header timeout while part of a request had arrived, a JSON `408`;
//! - then the connection is closed for writing and lingers a little, so a
//!   client still sending a refused body reads its reply (`linger`).
//!
//! Why this is sound: hyper writes its reply after the read that brought
//! the unparsable bytes, writes nothing after it, and ends the connection
//! with the parse error in the same poll. Anything hyper reads or writes
//! after a held write shows that it was not such a reply (a response body
//! can hold any bytes), so the guard sends it before going on; and at the
//! end, held bytes are replaced only when hyper reports a parse error.
//! Nothing is parsed here but hyper's own output, with `httparse` (hyper's
//! parser).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::http::StatusCode;
use axum::Router;
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tracing::debug;

/// Longest head hyper's own error reply can have (status line,
/// `connection`, `content-length`, `date`); anything longer is not one.
const MAX_HYPER_REPLY: usize = 256;

/// Longest a JSON error reply may take to write once hyper is done, so a
/// client that stops reading cannot hold its connection slot.
const FINAL_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest a closed connection waits for its client to stop sending.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Most a closed connection reads and drops while it waits: enough for a
/// body somewhat over the largest limit (64 MiB), not for one that would
/// never end.
const LINGER_BYTES: u64 = 128 << 20;

/// A request hyper refused before any route saw it, answered with the
/// API's JSON error instead of hyper's empty body.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A malformed request line or header (hyper's `400`).
    #[error("the request is not valid HTTP/1.1: {0}")]
    BadRequest(String),
    /// Too many header fields or too large a head (hyper's `431`).
    #[error("the request head is too large: at most 100 header fields and about 400 KiB")]
    HeadersTooLarge,
    /// A request target over 64 KiB (hyper's `414`).
    #[error("the request target is too long: at most 65534 bytes")]
    UriTooLong,
    /// Part of a request head arrived, but not all of it in time.
    #[error("the request head did not arrive within {0:?}")]
    HeaderTimeout(Duration),
}

impl ProtocolError {
    /// The error for hyper's reply of `status` to `error`, or `None` if
    /// that is not one of hyper's statuses.
    fn from_hyper_reply(status: StatusCode, error: &hyper::Error) -> Option<ProtocolError> {
        match status {
            StatusCode::BAD_REQUEST => Some(ProtocolError::BadRequest(error.to_string())),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => Some(ProtocolError::HeadersTooLarge),
            StatusCode::URI_TOO_LONG => Some(ProtocolError::UriTooLong),
            _ => None,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ProtocolError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProtocolError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProtocolError::UriTooLong => StatusCode::URI_TOO_LONG,
            ProtocolError::HeaderTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            ProtocolError::BadRequest(_) => "bad_request",
            ProtocolError::HeadersTooLarge => "headers_too_large",
            ProtocolError::UriTooLong => "uri_too_long",
            ProtocolError::HeaderTimeout(_) => "request_timeout",
        }
    }

    /// The whole reply, closing the connection. Written by hand because
    /// hyper has finished with the connection by then; it is one fixed
    /// shape, the same as a route's error but for the `date` header.
    pub fn reply(&self) -> Vec<u8> {
        let body = serde_json::json!({
            "error": { "code": self.code(), "message": self.to_string() }
        })
        .to_string();
        let status = self.status();
        let mut reply = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or_default(),
            body.len()
        )
        .into_bytes();
        reply.extend_from_slice(body.as_bytes());
        reply
    }
}

/// The status of `buf` if it is exactly a reply hyper writes on its own to
/// a request it cannot parse: a complete head and nothing else, status
/// 400, 414 or 431, `content-length: 0` and `connection: close`. The
/// routes never answer these statuses without a body.
fn hyper_reply_status(buf: &[u8]) -> Option<StatusCode> {
    if buf.len() > MAX_HYPER_REPLY || !buf.starts_with(b"HTTP/1.") {
        return None;
    }
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut head = httparse::Response::new(&mut headers);
    match head.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len == buf.len() => {}
        _ => return None,
    }
    let status = StatusCode::from_u16(head.code?).ok()?;
    let header = |name: &str| {
        head.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let is_hyper_reply = matches!(
        status,
        StatusCode::BAD_REQUEST
            | StatusCode::URI_TOO_LONG
            | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    ) && header("content-length") == Some(b"0")
        && header("connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
    is_hyper_reply.then_some(status)
}

/// Bytes written by hyper but not yet sent.
struct Held {
    bytes: Vec<u8>,
    sent: usize,
    /// Set while the bytes may be hyper's own error reply.
    hyper_reply: Option<StatusCode>,
}

/// The connection's IO, holding back a write that may be hyper's own
/// error reply until it is clear whether it was (see the module docs).
pub struct ReplyGuard<IO> {
    io: IO,
    held: Option<Held>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> ReplyGuard<IO> {
    /// Wraps a connection's IO.
    pub fn new(io: IO) -> ReplyGuard<IO> {
        ReplyGuard { io, held: None }
    }

    /// Sends what is held, if anything.
    fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(held) = &mut self.held {
            while held.sent < held.bytes.len() {
                let n = ready!(Pin::new(&mut self.io).poll_write(cx, &held.bytes[held.sent..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                held.sent += n;
            }
            self.held = None;
        }
        Poll::Ready(Ok(()))
    }

    /// Holds `buf` instead of writing it if it may be hyper's reply.
    fn hold(&mut self, buf: &[u8], cx: &mut Context<'_>) -> bool {
        let Some(status) = hyper_reply_status(buf) else {
            return false;
        };
        self.held = Some(Held {
            bytes: buf.to_vec(),
            sent: 0,
            hyper_reply: Some(status),
        });
        // If hyper goes on instead of ending the connection, it polls the
        // IO again, which sends the held bytes; the wake makes sure it is
        // polled.
        cx.waker().wake_by_ref();
        true
    }

    /// Replaces hyper's held reply, if that is what is held, with the JSON
    /// error for `error`.
    fn answer_parse_error(&mut self, error: &hyper::Error) {
        let Some(held) = &mut self.held else { return };
        let Some(json) = held
            .hyper_reply
            .and_then(|status| ProtocolError::from_hyper_reply(status, error))
        else {
            return;
        };
        debug!(status = %json.status(), error = %error, "answering a request hyper could not parse");
        *held = Held {
            bytes: json.reply(),
            sent: 0,
            hyper_reply: None,
        };
    }

    /// Sends `error`'s reply (nothing may be held: hyper wrote nothing).
    fn answer(&mut self, error: &ProtocolError) {
        if self.held.is_none() {
            self.held = Some(Held {
                bytes: error.reply(),
                sent: 0,
                hyper_reply: None,
            });
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for ReplyGuard<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_release(cx))?;
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ReplyGuard<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_release(cx))?;
        if this.hold(buf, cx) {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_release(cx))?;
        // hyper's reply is a head alone: one buffer.
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next()) {
            if this.hold(only, cx) {
                return Poll::Ready(Ok(only.len()));
            }
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Held bytes stay held: hyper flushes its reply before it reports
        // the error that tells what they are.
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_release(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// Serves one connection with `builder` until it ends, or until `shutdown`
/// completes and its in-flight request (if any) is answered; then sends
/// the JSON reply to a request hyper refused, if any, and closes it.
pub async fn serve_connection<IO>(
    builder: &http1::Builder,
    io: IO,
    app: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = TowerToHyperService::new(app);
    // Boxed so the service's future is `Unpin`, as polling without
    // shutdown requires.
    let service = hyper::service::service_fn(move |request| Box::pin(app.call(request)));
    let mut conn = builder.serve_connection(TokioIo::new(ReplyGuard::new(io)), service);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut draining = false;
    let result = std::future::poll_fn(|cx| {
        if !draining && shutdown.as_mut().poll(cx).is_ready() {
            draining = true;
            Pin::new(&mut conn).graceful_shutdown();
        }
        conn.poll_without_shutdown(cx)
    })
    .await;
    let parts = conn.into_parts();
    let mut io = parts.io.into_inner();
    match &result {
        Err(e) if e.is_parse() => io.answer_parse_error(e),
        // Only if part of a request came: an idle keep-alive connection is
        // closed without a word, or a client sending its next request just
        // then would read the 408 as the answer to it.
        Err(e) if e.is_timeout() && !parts.read_buf.iter().all(u8::is_ascii_whitespace) => {
            io.answer(&ProtocolError::HeaderTimeout(header_timeout))
        }
        Err(e) => debug!(error = %e, "connection ended with an error"),
        Ok(()) => {}
    }
    // Sends whatever is held, then closes (what hyper would have done).
    match tokio::time::timeout(FINAL_WRITE_TIMEOUT, io.shutdown()).await {
        Ok(Ok(())) => linger(&mut io).await,
        Ok(Err(e)) => debug!(error = %e, "closing a connection"),
        Err(_) => debug!("a client did not take the end of its connection in time"),
    }
}

/// Reads and drops what the client still sends after the connection was
/// closed for writing, until it closes too, for at most [`LINGER_TIME`]
/// and [`LINGER_BYTES`]. A request refused before its body was read (413
/// for its `Content-Length`) leaves the client still writing that body:
/// were the socket closed at once, its next write would fail (`Broken
/// pipe`, or a TCP reset that can discard the reply) before it read the
/// 413. This is nginx's lingering close.
async fn linger(io: &mut (impl AsyncRead + Unpin)) {
    let (mut rest, mut sink) = ((&mut *io).take(LINGER_BYTES), tokio::io::sink());
    let _ = tokio::time::timeout(LINGER_TIME, tokio::io::copy(&mut rest, &mut sink)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_only_hyper_s_own_error_replies() {
        let reply = |status: &str, headers: &str| {
            format!("HTTP/1.1 {status}\r\n{headers}\r\n").into_bytes()
        };
        let hyper_headers =
            "connection: close\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 14:16:26 GMT\r\n";
        for (status, code) in [
            ("400 Bad Request", StatusCode::BAD_REQUEST),
            (
                "431 Request Header Fields Too Large",
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ),
            ("414 URI Too Long", StatusCode::URI_TOO_LONG),
        ] {
            assert_eq!(
                hyper_reply_status(&reply(status, hyper_headers)),
                Some(code)
            );
        }
        for not in [
            // Other statuses, and the routes' own errors, which have bodies.
            reply("404 Not Found", hyper_headers),
            reply(
                "400 Bad Request",
                "connection: close\r\ncontent-length: 51\r\n",
            ),
            reply("400 Bad Request", "content-length: 0\r\n"),
            // A head with a body after it, or only part of a head.
            [reply("400 Bad Request", hyper_headers), b"{}".to_vec()].concat(),
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n".to_vec(),
            b"hello".to_vec(),
        ] {
            assert_eq!(
                hyper_reply_status(&not),
                None,
                "{:?}",
                String::from_utf8_lossy(&not)
            );
        }
    }

    #[test]
    fn a_protocol_error_reply_is_a_json_error() {
        let reply = ProtocolError::HeadersTooLarge.reply();
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut head = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(len) = head.parse(&reply).unwrap() else {
            panic!("incomplete")
        };
        assert_eq!(head.code, Some(431));
        let body: crate::api::ErrorBody = serde_json::from_slice(&reply[len..]).unwrap();
        assert_eq!(body.error.code, "headers_too_large");
        let length = head
            .headers
            .iter()
            .find(|h| h.name == "content-length")
            .unwrap();
        assert_eq!(length.value, (reply.len() - len).to_string().as_bytes());
    }
}
