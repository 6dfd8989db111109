//! Raw HTTP/1.1 over the daemon's socket, for requests a well-behaved
//! client never sends (malformed, oversized, stalled) and for seeing
//! exactly what comes back on the wire.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::HeaderMap;
use wisp::client::Response;

/// A connection whose reads give up after `timeout`.
pub fn connect(socket: &Path, timeout: Duration) -> UnixStream {
    let stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream
}

/// Reads until the server closes the connection or the read timeout
/// passes; everything received, and whether it was closed.
pub fn read_to_close(stream: &mut UnixStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (out, true),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (out, false)
            }
            Err(e) => panic!("reading the reply: {e}"),
        }
    }
}

/// Sends `request` on a new connection and reads until the server closes
/// it (at most 30 s): what came back and how long it took.
pub fn exchange(socket: &Path, request: &[u8]) -> (Vec<u8>, Duration) {
    let t0 = Instant::now();
    let mut stream = connect(socket, Duration::from_secs(30));
    // The server may answer and close before taking all of it.
    let _ = stream.write_all(request);
    let (reply, closed) = read_to_close(&mut stream);
    assert!(
        closed,
        "the server kept the connection open; got {:?}",
        String::from_utf8_lossy(&reply)
    );
    (reply, t0.elapsed())
}

/// The first response in `bytes` (after any `100 Continue`), with its
/// body as framed by `Content-Length` (or everything that follows).
pub fn parse(bytes: &[u8]) -> Response {
    let mut rest = bytes;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut head = httparse::Response::new(&mut headers);
        let len = match head.parse(rest) {
            Ok(httparse::Status::Complete(len)) => len,
            other => panic!(
                "not an HTTP response ({other:?}): {:?}",
                String::from_utf8_lossy(bytes)
            ),
        };
        let status = head.code.expect("a status");
        let mut map = HeaderMap::new();
        for h in head.headers.iter() {
            map.append(
                HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(h.value).unwrap(),
            );
        }
        let body = &rest[len..];
        if status == 100 {
            rest = body;
            continue;
        }
        let body = match map
            .get("content-length")
            .map(|v| v.to_str().unwrap().parse::<usize>().unwrap())
        {
            Some(n) => &body[..n.min(body.len())],
            None => body,
        };
        return Response {
            status,
            headers: map,
            body: Bytes::copy_from_slice(body),
        };
    }
}
