//! The `guest_channel` program format: op codes, and [`Program`], which
//! writes programs for the seeds and the tests.

use wisp_abi::msg::Kind;

use super::KINDS;

/// Op codes of a [`guest_channel`](super::guest_channel) program (the byte is taken modulo
/// `COUNT`); operands as read by `Fuzz::step` (`channel.rs`).
pub(super) mod op {
    pub const DESC: u8 = 0;
    pub const POST: u8 = 1;
    pub const AVAIL_IDX: u8 = 2;
    pub const SEND: u8 = 3;
    pub const POST_RX: u8 = 4;
    pub const POKE: u8 = 5;
    pub const FILL: u8 = 6;
    pub const WRITE_MSG: u8 = 7;
    pub const DRAIN: u8 = 8;
    pub const PUSH: u8 = 9;
    pub const FEED: u8 = 10;
    pub const CHECK: u8 = 11;
    pub const COUNT: u8 = 12;
}

/// Builds [`guest_channel`](super::guest_channel) programs: the fuzzer's seeds and the tests'.
pub struct Program(Vec<u8>);

/// Which phase a [`Program::drain`] consumes messages in.
#[derive(Clone, Copy, Debug)]
pub enum DrainAs {
    /// Booting.
    Boot,
    /// Serving a request.
    Invoke,
    /// Salvaging output after a stopped run.
    Salvage,
}

impl Program {
    /// Rings at `rx`/`tx` (free-running positions), an output limit of
    /// `2 * limit` bytes and the host's stdin.
    pub fn new(rx: u16, tx: u16, limit: u16, stdin: &[u8]) -> Program {
        let mut p = Vec::new();
        p.extend_from_slice(&rx.to_le_bytes());
        p.extend_from_slice(&tx.to_le_bytes());
        p.extend_from_slice(&limit.to_le_bytes());
        let stdin = &stdin[..stdin.len().min(255)];
        p.push(stdin.len() as u8);
        p.extend_from_slice(stdin);
        Program(p)
    }

    fn payload(mut self, payload: &[u8]) -> Program {
        assert!(
            payload.len() < 0xf0,
            "inline payloads are shorter than 240 bytes"
        );
        self.0.push(payload.len() as u8);
        self.0.extend_from_slice(payload);
        self
    }

    /// Posts rx buffer `slot` as the agent does.
    pub fn post_rx(mut self, slot: u8) -> Program {
        self.0.extend([op::POST_RX, slot]);
        self
    }

    /// Queues a message in tx buffer `slot` as the agent does.
    pub fn send(mut self, slot: u8, kind: Kind, payload: &[u8]) -> Program {
        self.0.extend([
            op::SEND,
            slot,
            KINDS.iter().position(|&k| k == kind).unwrap_or(0) as u8,
        ]);
        let mut p = self.payload(payload);
        p.0.push(1);
        p
    }

    /// Queues `n` bytes of output `byte` in tx buffer `slot`.
    pub fn send_big(mut self, slot: u8, kind: Kind, byte: u8, n: u16) -> Program {
        assert!(byte >= 0xf0);
        self.0.extend([
            op::SEND,
            slot,
            KINDS.iter().position(|&k| k == kind).unwrap_or(0) as u8,
            byte,
        ]);
        self.0.extend_from_slice(&n.to_le_bytes());
        self.0.push(1);
        self
    }

    /// Writes descriptor `index` of rx (`tx = false`) or tx, with raw
    /// fields.
    pub fn desc(
        mut self,
        tx: bool,
        index: u8,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) -> Program {
        self.0.extend([op::DESC, u8::from(tx), index, 5]);
        self.0.extend_from_slice(&addr.to_le_bytes());
        self.0.push(2);
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.push(0x80);
        self.0.extend_from_slice(&flags.to_le_bytes());
        self.0.extend_from_slice(&next.to_le_bytes());
        self
    }

    /// Makes descriptor `head` available in rx or tx.
    pub fn post(mut self, tx: bool, head: u16) -> Program {
        self.0.extend([op::POST, u8::from(tx), 0x80]);
        self.0.extend_from_slice(&head.to_le_bytes());
        self
    }

    /// Sets the avail index of rx or tx.
    pub fn avail_idx(mut self, tx: bool, idx: u16) -> Program {
        self.0.extend([op::AVAIL_IDX, u8::from(tx)]);
        self.0.extend_from_slice(&idx.to_le_bytes());
        self
    }

    /// Writes up to 255 raw bytes at any address.
    pub fn poke(mut self, addr: u64, bytes: &[u8]) -> Program {
        let bytes = &bytes[..bytes.len().min(255)];
        self.0.extend([op::POKE, 5]);
        self.0.extend_from_slice(&addr.to_le_bytes());
        self.0.push(bytes.len() as u8);
        self.0.extend_from_slice(bytes);
        self
    }

    /// Writes a message (header and inline payload) at any address.
    pub fn write_msg(mut self, addr: u64, kind: Kind, payload: &[u8]) -> Program {
        self.0.extend([op::WRITE_MSG, 5]);
        self.0.extend_from_slice(&addr.to_le_bytes());
        self.0
            .push(KINDS.iter().position(|&k| k == kind).unwrap_or(0) as u8);
        self.payload(payload)
    }

    /// The host drains tx.
    pub fn drain(mut self, phase: DrainAs) -> Program {
        self.0.extend([op::DRAIN, phase as u8]);
        self
    }

    /// The host pushes one stdin chunk (or EOF).
    pub fn push_stdin(mut self) -> Program {
        self.0.extend([op::PUSH, 0]);
        self
    }

    /// The host pushes a request.
    pub fn push_request(mut self, args: &[&[u8]], env: &[&[u8]]) -> Program {
        self.0.extend([op::PUSH, 2, args.len() as u8]);
        for a in args {
            self = self.payload(a);
        }
        self.0.push(env.len() as u8);
        for e in env {
            self = self.payload(e);
        }
        self
    }

    /// The host feeds stdin while buffers are posted.
    pub fn feed(mut self, block: bool) -> Program {
        self.0.extend([op::FEED, u8::from(block)]);
        self
    }

    /// The host's snapshot and host-write bookkeeping is checked.
    pub fn check(mut self) -> Program {
        self.0.push(op::CHECK);
        self
    }

    /// The encoded program.
    pub fn bytes(self) -> Vec<u8> {
        self.0
    }
}
