//! The module's stdin, stdout and stderr, carried over the channel.
//!
//! Output is staged and sent in buffer-sized messages so a chatty module
//! costs a handful of exits, not one per `fd_write`; it is flushed when a
//! buffer fills, when the module blocks on stdin or sleeps, when
//! [`FLUSH_AFTER_NS`] passed since the oldest unsent byte (so long-running
//! modules still stream), and at exit.

use alloc::vec::Vec;

use wisp_abi::msg::Kind;

use crate::channel::{Channel, Incoming, MAX_PAYLOAD};
use crate::clock::Clock;

/// Longest time output may sit unsent while the module keeps running.
pub const FLUSH_AFTER_NS: u64 = 20_000_000;

/// Which output stream.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// fd 1.
    Stdout,
    /// fd 2.
    Stderr,
}

/// Buffered standard streams.
#[derive(Default)]
pub struct Stdio {
    stdin: Vec<u8>,
    stdin_pos: usize,
    stdin_eof: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Clock reading when the oldest unsent output byte was written.
    oldest_unsent_ns: Option<u64>,
}

impl Stdio {
    /// Appends host-provided stdin data (from the request burst or a refill).
    pub fn accept(&mut self, msg: Incoming<'_>) {
        match msg {
            Incoming::Stdin(data) => {
                if self.stdin_pos == self.stdin.len() {
                    self.stdin.clear();
                    self.stdin_pos = 0;
                }
                self.stdin.extend_from_slice(data);
            }
            Incoming::StdinEof => self.stdin_eof = true,
            Incoming::Request(_) => crate::rt::fatal("second request during an invocation"),
        }
    }

    /// Takes every pending rx message into the stdin buffer.
    pub fn drain(&mut self, ch: &mut Channel) {
        while ch.recv(|m| self.accept(m)).is_some() {}
    }

    /// Bytes of stdin available without asking the host, and whether the
    /// stream has ended.
    pub fn stdin_ready(&self) -> (usize, bool) {
        (self.stdin.len() - self.stdin_pos, self.stdin_eof)
    }

    /// Asks the host for more stdin and waits for it (the host answers within
    /// the same exit). Pending output goes out first, so prompts appear.
    pub fn refill(&mut self, ch: &mut Channel) {
        while self.stdin_pos == self.stdin.len() && !self.stdin_eof {
            self.queue_output(ch);
            ch.send(Kind::StdinRequest, &[]);
            ch.notify();
            self.drain(ch);
        }
    }

    /// Reads stdin into `dst`, blocking on the host if nothing is buffered.
    /// Returns 0 only at end of file.
    pub fn read(&mut self, ch: &mut Channel, dst: &mut [u8]) -> usize {
        if dst.is_empty() {
            return 0;
        }
        self.refill(ch);
        let n = dst.len().min(self.stdin.len() - self.stdin_pos);
        dst[..n].copy_from_slice(&self.stdin[self.stdin_pos..self.stdin_pos + n]);
        self.stdin_pos += n;
        n
    }

    /// Stages output; sends full buffers and stale output.
    pub fn write(&mut self, ch: &mut Channel, clock: &Clock, stream: Stream, data: &[u8]) {
        let buf = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        buf.extend_from_slice(data);
        let full = buf.len() >= MAX_PAYLOAD;
        let now = clock.monotonic_ns();
        let oldest = *self.oldest_unsent_ns.get_or_insert(now);
        if full || now.saturating_sub(oldest) >= FLUSH_AFTER_NS {
            self.flush(ch);
        }
    }

    /// Queues all staged output as messages without notifying.
    pub fn queue_output(&mut self, ch: &mut Channel) {
        for (kind, buf) in [(Kind::Stdout, &mut self.stdout), (Kind::Stderr, &mut self.stderr)] {
            for chunk in buf.chunks(MAX_PAYLOAD) {
                ch.send(kind, chunk);
            }
            buf.clear();
        }
        self.oldest_unsent_ns = None;
    }

    /// Sends all staged output to the host now.
    pub fn flush(&mut self, ch: &mut Channel) {
        self.queue_output(ch);
        ch.notify();
    }
}
