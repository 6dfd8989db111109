//! Test-only entry points for the fuzz targets in `fuzz/` (see
//! `fuzz/README.md`) and for replaying their inputs in this crate's tests.
//! **Not part of the API**: compiled only for tests or with the `fuzzing`
//! feature, hidden from the docs, free to change. Nothing here needs
//! `/dev/kvm`.
//!
//! [`guest_channel`] plays a hostile guest against the real host end of the
//! channel ([`HostChannel`]). Its input is a small program: ops that write
//! descriptors, ring indices, message buffers or raw bytes anywhere in guest
//! memory (host-owned pages included), interleaved with the host's
//! `drain_tx`, `push_rx` and `rx_available` as the exit loop calls them
//! (`vm/run.rs`). Every host step is checked against an independent model of
//! the ABI (docs/ABI.md, "The channel"):
//!
//! - the host takes an available entry iff it is valid: a single descriptor
//!   of the queue's direction (no `NEXT`, no `INDIRECT`), wholly inside the
//!   queue's buffer area and at most one buffer long, holding a well-formed
//!   message (tx) or room for a header (rx); anything else ends the
//!   exchange with `Error::Protocol`, never a panic;
//! - a payload handed over is exactly the `len` bytes the guest wrote after
//!   the header of that descriptor's buffer;
//! - the host writes guest memory only in the used rings and inside the rx
//!   descriptor it fills, and reports every write (`take_host_writes`);
//! - one `drain_tx`, or one stdin-feeding loop, handles at most
//!   `QUEUE_SIZE` entries whatever the ring indices say;
//! - output is delivered up to the limit exactly (the real `deliver_output`).
//!
//! Any disagreement panics, which the fuzzer reports as a crash.
//!
//! [`messages`] runs `wisp_abi::msg`'s decoders on arbitrary bytes and
//! checks them against the encoders.

use std::cell::RefCell;

use vm_memory::{Bytes, GuestAddress};
use wisp_abi::layout::*;
use wisp_abi::msg::{self, DecodeError, Kind, HEADER_LEN, SEED_LEN};

use crate::channel::{ChannelState, HostChannel};
use crate::error::{ConfigError, Error, ProtocolError, Result};
use crate::io::{BufferIo, GuestIo};
use crate::memory::{self, GuestRam};
use crate::vm::deliver_output;

/// Guest memory of the fuzzed VM: the smallest a VM can have.
const MEM_SIZE: u64 = MIN_MEM_SIZE;
const BUF: u64 = CHANNEL_BUF_SIZE;
/// Bytes of one direction's buffers.
const AREA: u64 = CHANNEL_BUFS * CHANNEL_BUF_SIZE;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;
/// Ops per input, so that no input is slow.
const MAX_OPS: usize = 128;
/// On the first run and then every this many, all of guest memory is
/// checked for writes the host made but did not report.
const FULL_CHECK_EVERY: u64 = 4096;
/// The ring pages (what `take_host_writes` always reports).
const RING_PAGES: (u64, u64) = (RX_DESC_ADDR, 2 * PAGE_SIZE);

const KINDS: [Kind; 12] = [
    Kind::Ready,
    Kind::Stdout,
    Kind::Stderr,
    Kind::StdinRequest,
    Kind::Exit,
    Kind::Trap,
    Kind::Error,
    Kind::OutOfMemory,
    Kind::Sleep,
    Kind::Request,
    Kind::Stdin,
    Kind::StdinEof,
];

/// The fuzzer's bytes, read front to back; reads past the end give zeroes.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n.min(self.0.len()));
        self.0 = tail;
        head
    }

    /// A guest address, biased towards the interesting regions: around the
    /// rx or tx buffers (one buffer either side), the ring pages, the
    /// host-built system pages, the end of memory, or any `u64`.
    fn addr(&mut self) -> u64 {
        let sel = self.u8();
        match sel % 6 {
            0 => self.near(RX_BUF_ADDR),
            1 => self.near(TX_BUF_ADDR),
            2 => RX_DESC_ADDR + u64::from(self.u16()) % (2 * PAGE_SIZE),
            3 => u64::from(self.u32()) % RX_DESC_ADDR,
            4 => MEM_SIZE.wrapping_sub(u64::from(self.u16())),
            _ => self.u64(),
        }
    }

    /// An address from one buffer below `base` to two past its 8 buffers.
    fn near(&mut self, base: u64) -> u64 {
        let slot = u64::from(self.u8() % 10);
        base - BUF + slot * BUF + u64::from(self.u16())
    }

    /// A descriptor length: small, around one buffer, tiny, or any `u32`.
    fn len(&mut self) -> u32 {
        let sel = self.u8();
        match sel % 4 {
            0 => u32::from(self.u16()),
            1 => BUF as u32 - 32 + u32::from(sel >> 2),
            2 => self.u32(),
            _ => u32::from(self.u8()),
        }
    }

    /// Descriptor flags: combinations of NEXT, WRITE and INDIRECT, or any.
    fn flags(&mut self) -> u16 {
        let sel = self.u8();
        if sel & 0x80 != 0 {
            self.u16()
        } else {
            u16::from(sel & 7)
        }
    }

    /// A descriptor index as the avail ring carries it: mostly in range.
    fn head(&mut self) -> u16 {
        let sel = self.u8();
        if sel & 0x80 != 0 {
            self.u16()
        } else {
            u16::from(sel) % QUEUE_SIZE
        }
    }

    /// A message kind field: mostly a known kind.
    fn kind(&mut self) -> u32 {
        let sel = self.u8();
        if sel < 0xf0 {
            KINDS[usize::from(sel) % KINDS.len()] as u32
        } else {
            self.u32()
        }
    }

    /// A payload: inline bytes, or up to 64 KiB of one repeated byte.
    fn payload(&mut self) -> Vec<u8> {
        let sel = self.u8();
        if sel >= 0xf0 {
            vec![sel; usize::from(self.u16())]
        } else {
            self.bytes(usize::from(sel)).to_vec()
        }
    }
}

/// Op codes of a [`guest_channel`] program (the byte is taken modulo
/// `COUNT`); operands as read by [`Fuzz::step`].
mod op {
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

/// A split virtqueue's place in guest memory.
#[derive(Clone, Copy, Debug)]
struct Queue {
    desc: u64,
    avail: u64,
    used: u64,
    bufs: u64,
    /// rx: the device writes the buffers.
    device_writes: bool,
}

const RX: Queue = Queue {
    desc: RX_DESC_ADDR,
    avail: RX_AVAIL_ADDR,
    used: RX_USED_ADDR,
    bufs: RX_BUF_ADDR,
    device_writes: true,
};

const TX: Queue = Queue {
    desc: TX_DESC_ADDR,
    avail: TX_AVAIL_ADDR,
    used: TX_USED_ADDR,
    bufs: TX_BUF_ADDR,
    device_writes: false,
};

/// A split-ring descriptor.
#[derive(Clone, Copy, Debug)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

impl Desc {
    fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.flags.to_le_bytes());
        b[14..].copy_from_slice(&self.next.to_le_bytes());
        b
    }
}

/// Guest memory, with every range the guest side wrote.
struct Guest {
    mem: GuestRam,
    written: Vec<(u64, u64)>,
}

impl Guest {
    /// Writes what fits in memory (the guest cannot write elsewhere).
    fn write(&mut self, addr: u64, data: &[u8]) {
        self.written.push((addr, data.len() as u64));
        let _ = self.mem.write_slice(data, GuestAddress(addr));
    }

    fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        memory::read(&self.mem, addr, len).ok()
    }

    /// Reads a field at a fixed address of the layout.
    fn fixed<const N: usize>(&self, addr: u64) -> [u8; N] {
        let mut b = [0u8; N];
        self.mem
            .read_slice(&mut b, GuestAddress(addr))
            .expect("the layout's fixed addresses are in guest memory");
        b
    }

    fn u16(&self, addr: u64) -> u16 {
        u16::from_le_bytes(self.fixed(addr))
    }

    fn u32(&self, addr: u64) -> u32 {
        u32::from_le_bytes(self.fixed(addr))
    }

    fn set_u16(&mut self, addr: u64, value: u16) {
        self.write(addr, &value.to_le_bytes());
    }

    fn desc(&self, queue: &Queue, index: u16) -> Desc {
        let b: [u8; 16] = self.fixed(queue.desc + u64::from(index) * 16);
        Desc {
            addr: u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            len: u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")),
            flags: u16::from_le_bytes([b[12], b[13]]),
            next: u16::from_le_bytes([b[14], b[15]]),
        }
    }

    /// What a driver does to make descriptor `head` available.
    fn post(&mut self, queue: &Queue, head: u16) {
        let idx = self.u16(queue.avail + 2);
        let slot = queue.avail + 4 + u64::from(idx % QUEUE_SIZE) * 2;
        self.set_u16(slot, head);
        self.set_u16(queue.avail + 2, idx.wrapping_add(1));
    }

    /// Used-ring element `n` (free-running) as `(id, len)`.
    fn used(&self, queue: &Queue, n: u16) -> (u32, u32) {
        let e = queue.used + 4 + u64::from(n % QUEUE_SIZE) * 8;
        (self.u32(e), self.u32(e + 4))
    }

    /// Zeroes `(addr, len)`, clamped to memory.
    fn zero(&self, (addr, len): (u64, u64)) {
        let zeroes = [0u8; 4096];
        let mut at = addr.min(MEM_SIZE);
        let end = addr.saturating_add(len).min(MEM_SIZE);
        while at < end {
            let n = (end - at).min(zeroes.len() as u64);
            memory::write(&self.mem, at, &zeroes[..n as usize]).expect("inside memory");
            at += n;
        }
    }
}

/// What the ABI says the host must do with the next available entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    /// Nothing is available.
    Empty,
    /// A valid descriptor to take.
    Valid { head: u16, addr: u64, len: u32 },
    /// A protocol violation: the host must fail, without taking anything.
    Invalid,
}

/// The model: the available entry of `queue` at `next_avail`, by the ABI.
fn entry(g: &Guest, queue: &Queue, next_avail: u16) -> Entry {
    let pending = g.u16(queue.avail + 2).wrapping_sub(next_avail);
    if pending == 0 {
        return Entry::Empty;
    }
    if pending > QUEUE_SIZE {
        return Entry::Invalid;
    }
    let head = g.u16(queue.avail + 4 + u64::from(next_avail % QUEUE_SIZE) * 2);
    if head >= QUEUE_SIZE {
        return Entry::Invalid;
    }
    let d = g.desc(queue, head);
    let direction = if queue.device_writes { F_WRITE } else { 0 };
    if d.flags & (F_NEXT | F_WRITE | F_INDIRECT) != direction {
        return Entry::Invalid;
    }
    let end = d.addr.checked_add(u64::from(d.len));
    let inside = d.addr >= queue.bufs && end.is_some_and(|e| e <= queue.bufs + AREA);
    if !inside || u64::from(d.len) > BUF || (queue.device_writes && (d.len as usize) < HEADER_LEN) {
        return Entry::Invalid;
    }
    Entry::Valid {
        head,
        addr: d.addr,
        len: d.len,
    }
}

/// The model: the message in a valid tx buffer, `None` if malformed.
fn tx_message(g: &Guest, addr: u64, len: u32) -> Option<(u32, Vec<u8>)> {
    if (len as usize) < HEADER_LEN {
        return None;
    }
    let kind = g.u32(addr);
    let n = g.u32(addr + 4);
    if !KINDS.iter().any(|&k| k as u32 == kind) || u64::from(n) + 8 != u64::from(len) {
        return None;
    }
    Some((kind, g.read(addr + 8, n as usize)?))
}

/// Who consumes tx messages, as in `vm/run.rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `on_notify` while booting.
    Boot,
    /// `on_notify` while serving a request.
    Invoke,
    /// `salvage_output` after a stopped run.
    Salvage,
}

/// What a [`HostChannel::push_rx`] fill writes, as `vm/` does.
enum Fill {
    /// `feed_stdin`: a chunk of stdin, or EOF once it is exhausted.
    Stdin,
    /// `invoke`: a request.
    Request(Vec<Vec<u8>>, Vec<Vec<u8>>),
}

/// What a run did (for the tests: are the seeds exercising anything?).
#[derive(Debug, Default)]
#[cfg_attr(not(test), allow(dead_code))]
struct Report {
    delivered: usize,
    pushed: usize,
    rejected: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// One run: guest memory, the host's channel and the exit loop's state.
struct Fuzz<'a> {
    input: Input<'a>,
    g: Guest,
    ch: HostChannel,
    io: BufferIo,
    output: u64,
    limit: u64,
    stdin_done: bool,
    /// What `take_host_writes` returned so far.
    host_writes: Vec<(u64, u64)>,
    report: Report,
}

impl<'a> Fuzz<'a> {
    fn new(data: &'a [u8], mem: GuestRam) -> Fuzz<'a> {
        let mut input = Input(data);
        let mut g = Guest {
            mem,
            written: Vec::new(),
        };
        // Where each queue is in its ring, as a restored snapshot may be:
        // any position, with the guest's indices agreeing.
        let (rx, tx) = (input.u16(), input.u16());
        let mut ch = HostChannel::new().expect("the ABI's queues are valid");
        ch.restore(&ChannelState {
            rx_next_avail: rx,
            rx_next_used: rx,
            tx_next_avail: tx,
            tx_next_used: tx,
        });
        for (queue, idx) in [(RX, rx), (TX, tx)] {
            g.set_u16(queue.avail + 2, idx);
            g.set_u16(queue.used + 2, idx);
        }
        let limit = u64::from(input.u16()) * 2;
        let n = usize::from(input.u8());
        let io = BufferIo::with_stdin(input.bytes(n).to_vec());
        Fuzz {
            input,
            g,
            ch,
            io,
            output: 0,
            limit,
            stdin_done: false,
            host_writes: Vec::new(),
            report: Report::default(),
        }
    }

    fn run(&mut self) {
        for _ in 0..MAX_OPS {
            if self.input.is_empty() {
                break;
            }
            self.step();
        }
    }

    fn queue(&mut self) -> Queue {
        if self.input.u8() & 1 == 0 {
            RX
        } else {
            TX
        }
    }

    fn step(&mut self) {
        match self.input.u8() % op::COUNT {
            op::DESC => {
                let queue = self.queue();
                let index = u16::from(self.input.u8()) % QUEUE_SIZE;
                let desc = Desc {
                    addr: self.input.addr(),
                    len: self.input.len(),
                    flags: self.input.flags(),
                    next: self.input.u16(),
                };
                self.g
                    .write(queue.desc + u64::from(index) * 16, &desc.to_bytes());
            }
            op::POST => {
                let queue = self.queue();
                let head = self.input.head();
                self.g.post(&queue, head);
            }
            op::AVAIL_IDX => {
                let queue = self.queue();
                let idx = self.input.u16();
                self.g.set_u16(queue.avail + 2, idx);
            }
            op::SEND => {
                // What the agent's `Channel::send` does, with a header that
                // may lie about the length.
                let slot = u16::from(self.input.u8()) % CHANNEL_BUFS as u16;
                let kind = self.input.kind();
                let payload = self.input.payload();
                let declared = match self.input.u8() % 4 {
                    0 => self.input.u32(),
                    _ => payload.len() as u32,
                };
                let addr = TX_BUF_ADDR + u64::from(slot) * BUF;
                self.write_msg(addr, kind, declared, &payload);
                let desc = Desc {
                    addr,
                    len: (HEADER_LEN + payload.len()) as u32,
                    flags: 0,
                    next: 0,
                };
                self.g
                    .write(TX_DESC_ADDR + u64::from(slot) * 16, &desc.to_bytes());
                self.g.post(&TX, slot);
            }
            op::POST_RX => {
                // What the agent's `Channel::init` does for one buffer.
                let slot = u16::from(self.input.u8()) % CHANNEL_BUFS as u16;
                let desc = Desc {
                    addr: RX_BUF_ADDR + u64::from(slot) * BUF,
                    len: BUF as u32,
                    flags: F_WRITE,
                    next: 0,
                };
                self.g
                    .write(RX_DESC_ADDR + u64::from(slot) * 16, &desc.to_bytes());
                self.g.post(&RX, slot);
            }
            op::POKE => {
                let addr = self.input.addr();
                let n = usize::from(self.input.u8());
                let bytes = self.input.bytes(n);
                self.g.write(addr, bytes);
            }
            op::FILL => {
                let addr = self.input.addr();
                let n = usize::from(self.input.u16());
                let byte = self.input.u8();
                self.g.write(addr, &vec![byte; n]);
            }
            op::WRITE_MSG => {
                let addr = self.input.addr();
                let kind = self.input.kind();
                let payload = self.input.payload();
                self.write_msg(addr, kind, payload.len() as u32, &payload);
            }
            op::DRAIN => {
                let phase =
                    [Phase::Boot, Phase::Invoke, Phase::Salvage][usize::from(self.input.u8() % 3)];
                self.drain(phase);
            }
            op::PUSH => {
                let fill = match self.input.u8() % 3 {
                    0 | 1 => Fill::Stdin,
                    _ => {
                        let list = |input: &mut Input<'_>| {
                            let n = input.u8() % 5;
                            (0..n).map(|_| input.payload()).collect::<Vec<_>>()
                        };
                        let args = list(&mut self.input);
                        let env = list(&mut self.input);
                        Fill::Request(args, env)
                    }
                };
                self.push(fill);
            }
            op::FEED => {
                let block = self.input.u8() & 1 != 0;
                self.feed(block);
            }
            _ => self.check(),
        }
    }

    fn write_msg(&mut self, addr: u64, kind: u32, declared: u32, payload: &[u8]) {
        let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
        bytes.extend_from_slice(&kind.to_le_bytes());
        bytes.extend_from_slice(&declared.to_le_bytes());
        bytes.extend_from_slice(payload);
        self.g.write(addr, &bytes);
    }

    /// `on_notify` (or `salvage_output`): drains tx, checking each message
    /// against the model, then feeds stdin if asked.
    fn drain(&mut self, phase: Phase) {
        let before = self.ch.save();
        let mut heads: Vec<u16> = Vec::new();
        let mut handler_failed = false;
        let mut stop = false;
        let mut wants_stdin = false;
        let g = &self.g;
        let io = &mut self.io;
        let output = &mut self.output;
        let limit = self.limit;
        let result = self.ch.drain_tx(&g.mem, |kind, payload| {
            let k = heads.len();
            assert!(
                k < usize::from(QUEUE_SIZE),
                "drain_tx handed over more than a queue's worth of messages"
            );
            let at = before.tx_next_avail.wrapping_add(k as u16);
            let Entry::Valid { head, addr, len } = entry(g, &TX, at) else {
                panic!(
                    "drain_tx handed over {kind:?} from tx entry {at}, which the ABI \
                     rejects: {:?}",
                    entry(g, &TX, at)
                );
            };
            let Some((model_kind, model_payload)) = tx_message(g, addr, len) else {
                panic!("drain_tx handed over {kind:?} from a malformed message at {addr:#x}+{len}");
            };
            assert_eq!(kind as u32, model_kind, "message kind");
            assert!(
                payload == model_payload.as_slice(),
                "the payload is not the {} bytes after the header at {addr:#x}",
                model_payload.len()
            );
            heads.push(head);
            let r = on_message(
                phase,
                &mut stop,
                &mut wants_stdin,
                io,
                output,
                limit,
                kind,
                payload,
            );
            handler_failed = r.is_err();
            r
        });
        self.report.delivered += heads.len();
        let after = self.ch.save();
        let n = heads.len() as u16;
        let used = after.tx_next_used.wrapping_sub(before.tx_next_used);
        let taken = after.tx_next_avail.wrapping_sub(before.tx_next_avail);
        assert_eq!(
            used,
            n - u16::from(handler_failed),
            "tx buffers returned to the guest"
        );
        assert!(
            used <= taken && taken <= n + 1,
            "tx entries taken: {taken} for {n} messages"
        );
        for (i, &head) in heads.iter().take(usize::from(used)).enumerate() {
            let e = self.g.used(&TX, before.tx_next_used.wrapping_add(i as u16));
            assert_eq!(e, (u32::from(head), 0), "tx used element {i}");
        }
        if used > 0 {
            assert_eq!(self.g.u16(TX.used + 2), after.tx_next_used, "tx used index");
        }
        match result {
            Ok(()) => {
                assert!(!handler_failed);
                assert_eq!(
                    entry(&self.g, &TX, after.tx_next_avail),
                    Entry::Empty,
                    "drain_tx returned with tx entries left"
                );
            }
            Err(e) if !handler_failed => {
                // The host refused the entry after the last message: the
                // ABI must agree that it is invalid.
                let next = before.tx_next_avail.wrapping_add(n);
                let valid = match entry(&self.g, &TX, next) {
                    Entry::Valid { addr, len, .. } => tx_message(&self.g, addr, len).is_some(),
                    Entry::Empty => panic!("drain_tx failed with nothing left: {e}"),
                    Entry::Invalid => false,
                };
                assert!(!valid, "drain_tx rejected a valid tx entry {next}: {e}");
                assert!(matches!(e, Error::Protocol(_)), "not a protocol error: {e}");
                self.report.rejected += 1;
            }
            Err(_) => {}
        }
        if phase == Phase::Invoke && wants_stdin && !stop && !handler_failed {
            self.feed(true);
        }
    }

    /// One `push_rx`, checked against the model. `None` if it failed.
    fn push(&mut self, fill: Fill) -> Option<bool> {
        let before = self.ch.save();
        let expect = entry(&self.g, &RX, before.rx_next_avail);
        // The descriptor's bytes and 16 on either side, to check that the
        // host writes nothing but the message.
        let window = match expect {
            Entry::Valid { addr, len, .. } => Some(
                self.g
                    .read(addr - 16, len as usize + 32)
                    .expect("rx buffers are in memory"),
            ),
            _ => None,
        };
        let mut filled: Option<(usize, Kind, Vec<u8>)> = None;
        let mut fill_failed = false;
        let io = &mut self.io;
        let stdin_done = &mut self.stdin_done;
        let result = self.ch.push_rx(&self.g.mem, |buf| {
            assert!(
                matches!(expect, Entry::Valid { .. }),
                "push_rx filled rx entry {}, which the ABI rejects: {expect:?}",
                before.rx_next_avail
            );
            let r = fill_rx(&fill, buf, io, stdin_done);
            match &r {
                Ok((kind, n)) => filled = Some((buf.len(), *kind, buf[..*n].to_vec())),
                Err(_) => fill_failed = true,
            }
            r
        });
        let after = self.ch.save();
        match (expect, &result) {
            (Entry::Empty, Ok(false)) => {
                assert_eq!(after, before);
                Some(false)
            }
            (Entry::Valid { head, addr, len }, Ok(true)) => {
                let (room, kind, payload) = filled.expect("push_rx called the fill");
                assert_eq!(room, len as usize - HEADER_LEN, "room offered to the fill");
                let total = HEADER_LEN + payload.len();
                let mut expected = window.expect("read above");
                expected[16..20].copy_from_slice(&(kind as u32).to_le_bytes());
                expected[20..24].copy_from_slice(&(payload.len() as u32).to_le_bytes());
                expected[16 + HEADER_LEN..16 + total].copy_from_slice(&payload);
                let now = self
                    .g
                    .read(addr - 16, len as usize + 32)
                    .expect("in memory");
                assert!(
                    now == expected,
                    "push_rx wrote guest memory other than its message at {addr:#x}"
                );
                assert_eq!(after.rx_next_avail, before.rx_next_avail.wrapping_add(1));
                assert_eq!(after.rx_next_used, before.rx_next_used.wrapping_add(1));
                assert_eq!(
                    self.g.used(&RX, before.rx_next_used),
                    (u32::from(head), total as u32),
                    "rx used element"
                );
                assert_eq!(self.g.u16(RX.used + 2), after.rx_next_used, "rx used index");
                let writes = self.ch.take_host_writes();
                assert!(
                    writes.contains(&(addr, total as u64)),
                    "push_rx did not report its write at {addr:#x}+{total}: {writes:?}"
                );
                self.host_writes.extend(writes);
                // The guest's view: one valid message.
                let buf = &now[16..16 + len as usize];
                let (got_kind, got_payload) = msg::decode(buf).expect("the guest can decode it");
                assert_eq!((got_kind, got_payload), (kind, payload.as_slice()));
                if let Fill::Request(args, env) = &fill {
                    let req = msg::decode_request(got_payload).expect("a valid request");
                    assert!(req.args.iter().eq(args.iter().map(Vec::as_slice)));
                    assert!(req.env.iter().eq(env.iter().map(Vec::as_slice)));
                }
                self.report.pushed += 1;
                Some(true)
            }
            (Entry::Valid { .. }, Err(_)) if fill_failed => None,
            (Entry::Invalid, Err(Error::Protocol(_))) => {
                assert!(filled.is_none() && !fill_failed);
                assert_eq!(after.rx_next_used, before.rx_next_used);
                self.report.rejected += 1;
                None
            }
            (expect, result) => {
                panic!("push_rx: the ABI says {expect:?}, the host returned {result:?}")
            }
        }
    }

    /// `feed_stdin`: fills rx buffers while the guest has some posted.
    fn feed(&mut self, mut block: bool) {
        for round in 0..=QUEUE_SIZE {
            let available = self
                .ch
                .rx_available(&self.g.mem)
                .expect("rx_available reads a fixed address");
            let model = self.g.u16(RX.avail + 2) != self.ch.save().rx_next_avail;
            assert_eq!(available, model, "rx_available");
            if !available {
                return;
            }
            assert!(
                round < QUEUE_SIZE,
                "feeding stdin did not stop after a queue's worth of rx buffers"
            );
            if !self.stdin_done && !block && !self.io.stdin_ready() {
                return;
            }
            block = false;
            match self.push(Fill::Stdin) {
                Some(true) => {}
                Some(false) => panic!(
                    "push_rx found no buffer right after rx_available saw one: feed_stdin \
                     would never end"
                ),
                None => return,
            }
            if self.stdin_done {
                return;
            }
        }
    }

    /// Snapshot state and host-write bookkeeping.
    fn check(&mut self) {
        let state = self.ch.save();
        self.ch.restore(&state);
        assert_eq!(self.ch.save(), state);
        let writes = self.ch.take_host_writes();
        assert!(writes.contains(&RING_PAGES), "ring pages not reported");
        for &(addr, len) in &writes {
            let end = addr + len;
            assert!(
                (addr >= RX_BUF_ADDR && end <= RX_BUF_ADDR + AREA) || (addr, len) == RING_PAGES,
                "host write outside the rx buffers and rings: {addr:#x}+{len}"
            );
        }
        self.host_writes.extend(writes);
    }

    /// Returns guest memory to all zeroes and checks (sometimes) that
    /// nothing else was written.
    fn finish(mut self, runs: u64) -> (GuestRam, Report) {
        self.host_writes.extend(self.ch.take_host_writes());
        for &range in self.g.written.iter().chain(&self.host_writes) {
            self.g.zero(range);
        }
        if runs.is_multiple_of(FULL_CHECK_EVERY) {
            let mut chunk = vec![0u8; 1 << 20];
            for at in (0..MEM_SIZE).step_by(chunk.len()) {
                self.g
                    .mem
                    .read_slice(&mut chunk, GuestAddress(at))
                    .expect("inside memory");
                if let Some(i) = chunk.iter().position(|&b| b != 0) {
                    panic!(
                        "the host wrote guest memory at {:#x} without reporting it",
                        at + i as u64
                    );
                }
            }
        }
        self.report.stdout = std::mem::take(&mut self.io.stdout);
        self.report.stderr = std::mem::take(&mut self.io.stderr);
        (self.g.mem, self.report)
    }
}

/// The handler of `on_notify` (or `salvage_output`), as in `vm/run.rs`.
#[allow(clippy::too_many_arguments)]
fn on_message(
    phase: Phase,
    stop: &mut bool,
    wants_stdin: &mut bool,
    io: &mut BufferIo,
    output: &mut u64,
    limit: u64,
    kind: Kind,
    payload: &[u8],
) -> Result<()> {
    if phase == Phase::Salvage {
        return match kind {
            Kind::Stdout | Kind::Stderr => deliver(io, kind, payload, output, limit),
            _ => Ok(()),
        };
    }
    if *stop {
        return Err(ProtocolError::AfterFinal(kind).into());
    }
    match kind {
        Kind::Ready if phase == Phase::Boot => *stop = true,
        Kind::Stdout | Kind::Stderr => deliver(io, kind, payload, output, limit)?,
        Kind::StdinRequest => *wants_stdin = true,
        Kind::Sleep => {
            let _: [u8; 8] = payload.try_into().map_err(|_| bad_payload(kind, payload))?;
        }
        Kind::Exit => {
            let _: [u8; 4] = payload.try_into().map_err(|_| bad_payload(kind, payload))?;
            *stop = true;
        }
        Kind::Trap => *stop = true,
        Kind::Error => return Err(Error::Module(String::from_utf8_lossy(payload).into())),
        Kind::OutOfMemory => {
            return Err(Error::OutOfMemory(String::from_utf8_lossy(payload).into()))
        }
        other => {
            return Err(ProtocolError::Unexpected {
                kind: other,
                phase: if phase == Phase::Boot {
                    "booting"
                } else {
                    "serving a request"
                },
            }
            .into())
        }
    }
    Ok(())
}

fn bad_payload(kind: Kind, payload: &[u8]) -> Error {
    ProtocolError::BadPayload {
        kind,
        len: payload.len(),
    }
    .into()
}

/// The real `deliver_output`, checked: exactly the output up to the limit.
fn deliver(
    io: &mut BufferIo,
    kind: Kind,
    payload: &[u8],
    output: &mut u64,
    limit: u64,
) -> Result<()> {
    let before = *output;
    let room = limit.saturating_sub(before);
    let r = deliver_output(io, kind, payload, output, limit);
    assert_eq!(*output - before, (payload.len() as u64).min(room));
    assert!(*output <= limit.max(before));
    assert_eq!((io.stdout.len() + io.stderr.len()) as u64, *output);
    match &r {
        Ok(()) => assert!(payload.len() as u64 <= room),
        Err(Error::OutputLimit(l)) => assert!(*l == limit && payload.len() as u64 > room),
        Err(e) => panic!("deliver_output: {e}"),
    }
    r
}

/// The fills of `vm/`: `feed_stdin`'s and `invoke`'s.
fn fill_rx(
    fill: &Fill,
    buf: &mut [u8],
    io: &mut BufferIo,
    stdin_done: &mut bool,
) -> Result<(Kind, usize)> {
    match fill {
        Fill::Stdin => {
            if *stdin_done {
                return Ok((Kind::StdinEof, 0));
            }
            let n = io.read_stdin(buf).map_err(Error::Input)?;
            *stdin_done = n == 0;
            Ok(if n == 0 {
                (Kind::StdinEof, 0)
            } else {
                (Kind::Stdin, n)
            })
        }
        Fill::Request(args, env) => {
            let n = msg::encode_request(buf, 1, &[7; SEED_LEN], args, env).map_err(|_| {
                ConfigError::RequestTooLarge {
                    needed: msg::request_len(args, env),
                    limit: buf.len(),
                }
            })?;
            Ok((Kind::Request, n))
        }
    }
}

thread_local! {
    /// Guest memory, reused across runs (and zeroed after each).
    static MEMORY: RefCell<Option<(GuestRam, u64)>> = const { RefCell::new(None) };
}

fn run(data: &[u8]) -> Report {
    let (mem, runs) = MEMORY
        .with(|m| m.borrow_mut().take())
        .unwrap_or_else(|| (memory::create(MEM_SIZE).expect("map guest memory"), 0));
    let mut fuzz = Fuzz::new(data, mem);
    fuzz.run();
    let (mem, report) = fuzz.finish(runs);
    MEMORY.with(|m| *m.borrow_mut() = Some((mem, runs + 1)));
    report
}

/// Runs a hostile-guest program (see the module docs) against the host end
/// of the channel; panics if the host breaks the ABI.
pub fn guest_channel(data: &[u8]) {
    run(data);
}

/// Checks `wisp_abi::msg` on arbitrary bytes: decoding never panics,
/// classifies errors correctly and agrees with the encoders.
pub fn messages(data: &[u8]) {
    check_decode(data);
    check_request(data);
    if let Ok((_, payload)) = msg::decode(data) {
        check_request(payload);
    }
    check_encode(data);
}

fn check_decode(data: &[u8]) {
    let field = |i: usize| u32::from_le_bytes(data[i..i + 4].try_into().expect("4 bytes"));
    match msg::decode(data) {
        Ok((kind, payload)) => {
            let len = field(4) as usize;
            assert_eq!(kind as u32, field(0));
            assert_eq!(payload.len(), len);
            assert!(std::ptr::eq(payload, &data[HEADER_LEN..HEADER_LEN + len]));
            let mut header = [0u8; HEADER_LEN];
            assert_eq!(msg::encode_header(&mut header, kind, len), HEADER_LEN + len);
            assert_eq!(header, data[..HEADER_LEN]);
        }
        Err(DecodeError::Truncated) => assert!(data.len() < HEADER_LEN),
        Err(DecodeError::UnknownKind(k)) => {
            assert_eq!(k, field(0));
            assert!(Kind::from_u32(k).is_none());
        }
        Err(DecodeError::BadLength(len)) => {
            assert_eq!(len, field(4));
            assert!(HEADER_LEN + len as usize > data.len());
        }
        Err(e) => panic!("decode: {e:?}"),
    }
}

fn check_request(payload: &[u8]) {
    let Ok(req) = msg::decode_request(payload) else {
        return;
    };
    let args: Vec<&[u8]> = req.args.iter().collect();
    let env: Vec<&[u8]> = req.env.iter().collect();
    for (list, items) in [(&req.args, &args), (&req.env, &env)] {
        assert_eq!(list.len(), items.len());
        assert_eq!(list.is_empty(), items.is_empty());
        assert_eq!(
            list.total_bytes(),
            items.iter().map(|s| s.len()).sum::<usize>()
        );
    }
    // The encoding is canonical: re-encoding gives the same bytes, and one
    // byte less does not fit.
    let mut buf = vec![0u8; payload.len()];
    let n = msg::encode_request(&mut buf, req.realtime_ns, &req.seed, &args, &env)
        .expect("a decoded request re-encodes in as many bytes");
    assert_eq!(&buf[..n], payload);
    assert!(msg::encode_request(&mut buf[..n - 1], 0, &req.seed, &args, &env).is_err());
}

fn check_encode(data: &[u8]) {
    let mut input = Input(data);
    let cap = usize::from(input.u16());
    let realtime_ns = input.u64();
    let mut seed = [0u8; SEED_LEN];
    let s = input.bytes(SEED_LEN);
    seed[..s.len()].copy_from_slice(s);
    let list = |input: &mut Input<'_>| {
        let n = input.u8() % 8;
        (0..n)
            .map(|_| {
                let len = usize::from(input.u8() % 64);
                input.bytes(len).to_vec()
            })
            .collect::<Vec<_>>()
    };
    let args = list(&mut input);
    let env = list(&mut input);
    let need = 8 + SEED_LEN + 8 + args.iter().chain(&env).map(|s| 4 + s.len()).sum::<usize>();
    let mut buf = vec![0u8; cap];
    match msg::encode_request(&mut buf, realtime_ns, &seed, &args, &env) {
        Ok(n) => {
            assert_eq!(n, need);
            let req = msg::decode_request(&buf[..n]).expect("an encoded request decodes");
            assert_eq!((req.realtime_ns, req.seed), (realtime_ns, seed));
            assert!(req.args.iter().eq(args.iter().map(Vec::as_slice)));
            assert!(req.env.iter().eq(env.iter().map(Vec::as_slice)));
        }
        Err(msg::Overflow) => assert!(need > cap),
    }
}

/// Builds [`guest_channel`] programs: the fuzzer's seeds and the tests'.
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

/// Seed inputs for the `guest_channel` target: an agent's normal exchanges
/// and a few classic attacks, each a valid program.
pub fn seeds() -> Vec<Vec<u8>> {
    let boot = || {
        (0..CHANNEL_BUFS as u8).fold(
            Program::new(0, 0, 0x8000, b"stdin data\n"),
            Program::post_rx,
        )
    };
    let mut seeds = vec![
        // Boot, request, hello world, exit.
        boot()
            .send(0, Kind::Ready, b"")
            .drain(DrainAs::Boot)
            .push_request(&[b"prog", b"arg"], &[b"K=V"])
            .send(1, Kind::Stdout, b"hello\n")
            .send(2, Kind::Stderr, b"oops\n")
            .send(3, Kind::Exit, &0i32.to_le_bytes())
            .drain(DrainAs::Invoke)
            .check()
            .bytes(),
        // Reading stdin to EOF.
        boot()
            .send(0, Kind::StdinRequest, b"")
            .drain(DrainAs::Invoke)
            .send(0, Kind::StdinRequest, b"")
            .drain(DrainAs::Invoke)
            .feed(false)
            .send(1, Kind::Sleep, &5u64.to_le_bytes())
            .send(2, Kind::Trap, b"unreachable")
            .drain(DrainAs::Invoke)
            .bytes(),
        // Output past the limit, then salvage.
        Program::new(0xfff0, 0xfffe, 100, b"")
            .send_big(0, Kind::Stdout, 0xf5, 150)
            .send_big(1, Kind::Stderr, 0xf6, 60000)
            .drain(DrainAs::Invoke)
            .send(2, Kind::Stdout, b"more")
            .drain(DrainAs::Salvage)
            .check()
            .bytes(),
        // A descriptor chain looping on itself.
        Program::new(0, 0, 100, b"")
            .desc(true, 0, TX_BUF_ADDR, 64, F_NEXT, 0)
            .write_msg(TX_BUF_ADDR, Kind::Stdout, b"x")
            .post(true, 0)
            .drain(DrainAs::Invoke)
            .bytes(),
        // An indirect table in the host-built page tables.
        Program::new(0, 0, 100, b"")
            .desc(true, 0, PML4_ADDR, 16, F_INDIRECT, 0)
            .post(true, 0)
            .drain(DrainAs::Invoke)
            .bytes(),
        // An rx descriptor over the tx rings; a huge avail index.
        Program::new(0, 0, 100, b"")
            .desc(false, 0, TX_DESC_ADDR, 0x1000, F_WRITE, 0)
            .post(false, 0)
            .push_stdin()
            .avail_idx(true, 0x8000)
            .drain(DrainAs::Invoke)
            .bytes(),
        // Output appended to a message the host has not consumed.
        Program::new(0, 0, 0x100, b"")
            .send(0, Kind::Stdout, b"ab")
            .poke(TX_BUF_ADDR + 4, &4u32.to_le_bytes())
            .poke(TX_BUF_ADDR + 10, b"cd")
            .desc(true, 0, TX_BUF_ADDR, 12, 0, 0)
            .drain(DrainAs::Invoke)
            .bytes(),
        // A valid descriptor reached through an indirect one (the table is
        // the ring's own): the ABI has no indirect descriptors.
        Program::new(0, 0, 100, b"")
            .send(1, Kind::Stdout, b"hi")
            .desc(true, 0, TX_DESC_ADDR + 16, 16, F_INDIRECT, 0)
            .post(true, 0)
            .drain(DrainAs::Invoke)
            .bytes(),
    ];
    seeds.push(boot().avail_idx(false, 40).feed(true).bytes());
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_exercise_the_channel() {
        let reports: Vec<Report> = seeds().iter().map(|s| run(s)).collect();
        assert_eq!(reports[0].stdout, b"hello\n");
        assert_eq!(reports[0].stderr, b"oops\n");
        assert_eq!(reports[0].delivered, 4);
        assert_eq!(reports[0].pushed, 1);
        assert_eq!(
            reports[1].pushed, 4,
            "a chunk and EOF, then EOF for each request"
        );
        assert_eq!(reports[2].stdout.len(), 150);
        assert_eq!(reports[2].stderr.len(), 50, "up to the limit exactly");
        assert_eq!(reports[6].stdout, b"abcd");
        assert_eq!(reports[7].stdout, b"hi");
        for i in [3, 4, 5, 7] {
            let r = &reports[i];
            assert!(r.rejected > 0, "seed {i} is an attack the host must reject");
        }
    }

    #[test]
    fn random_programs_keep_the_invariants() {
        // A cheap stand-in for the fuzzer: deterministic pseudo-random
        // programs, plus every seed with one byte flipped.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let data: Vec<u8> = (0..256)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            guest_channel(&data);
            messages(&data);
        }
        for seed in seeds() {
            for i in 0..seed.len() {
                let mut s = seed.clone();
                s[i] ^= 0x5a;
                guest_channel(&s);
            }
        }
    }

    /// Every input kept under `fuzz/regressions/<target>/` still passes.
    #[test]
    fn fuzz_regressions() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
        for (target, f) in [
            ("guest_channel", guest_channel as fn(&[u8])),
            ("messages", messages),
        ] {
            let Ok(entries) = std::fs::read_dir(dir.join(target)) else {
                continue;
            };
            for e in entries {
                let path = e.expect("read the regressions directory").path();
                f(&std::fs::read(&path).expect("read a regression input"));
            }
        }
    }

    /// Writes [`seeds`] to `fuzz/seeds/guest_channel/` (run with
    /// `--ignored` after changing them).
    #[test]
    #[ignore]
    fn write_seed_corpus() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/guest_channel");
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in seeds().iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), s).unwrap();
        }
    }
}
