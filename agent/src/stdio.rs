//! The module's stdin, stdout and stderr, carried over the channel.
//!
//! Output is published on the channel as it is written, coalesced into
//! buffer-sized messages, so a chatty module costs a handful of exits, not
//! one per `fd_write`. The host takes it at the next exit: when buffers run
//! out, when the module blocks on stdin or sleeps, when [`FLUSH_AFTER_NS`]
//! passed since the oldest unsent byte (so long-running modules still
//! stream), at exit — or when the run is stopped (timeout, fault), so
//! output written before then is never lost.

use alloc::vec::Vec;

use wisp_abi::msg::Kind;

use crate::channel::{Channel, Incoming};
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
            Incoming::FsReply(_) => crate::rt::fatal("a filesystem reply nobody asked for"),
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
    /// the same exit). Published output goes out in the same exit, so
    /// prompts appear.
    pub fn refill(&mut self, ch: &mut Channel) {
        while self.stdin_pos == self.stdin.len() && !self.stdin_eof {
            ch.send(Kind::StdinRequest, &[]);
            self.notified();
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

    /// Publishes output; exits to the host if output has waited too long.
    pub fn write(&mut self, ch: &mut Channel, clock: &Clock, stream: Stream, data: &[u8]) {
        let kind = match stream {
            Stream::Stdout => Kind::Stdout,
            Stream::Stderr => Kind::Stderr,
        };
        ch.append(kind, data);
        let now = clock.monotonic_ns();
        let oldest = *self.oldest_unsent_ns.get_or_insert(now);
        if now.saturating_sub(oldest) >= FLUSH_AFTER_NS {
            self.notified();
            ch.notify();
        }
    }

    /// Records that the host is about to take all published output.
    pub fn notified(&mut self) {
        self.oldest_unsent_ns = None;
    }
}
