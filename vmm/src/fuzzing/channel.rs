//! The `guest_channel` target: one run of a hostile-guest program. The
//! guest's moves (writing descriptors, rings, messages, raw bytes) are
//! here; the host's steps, each checked against the model, are in
//! `host_steps.rs`.

use std::cell::RefCell;

use vm_memory::{Bytes, GuestAddress};
use wisp_abi::layout::{
    CHANNEL_BUFS, QUEUE_SIZE, RX_BUF_ADDR, RX_DESC_ADDR, TX_BUF_ADDR, TX_DESC_ADDR,
};
use wisp_abi::msg::HEADER_LEN;

use super::exit_loop::{Fill, Phase};
use super::guest::{Desc, Guest, Queue, BUF, F_WRITE, MEM_SIZE, RX, TX};
use super::input::Input;
use super::program::op;
use crate::channel::{ChannelState, HostChannel};
use crate::io::BufferIo;
use crate::memory::{self, GuestRam};

/// Ops per input, so that no input is slow.
const MAX_OPS: usize = 128;
/// On the first run and then every this many, all of guest memory is
/// checked for writes the host made but did not report.
const FULL_CHECK_EVERY: u64 = 4096;

/// What a run did (for the tests: are the seeds exercising anything?).
#[derive(Debug, Default)]
#[cfg_attr(not(test), allow(dead_code))]
pub(super) struct Report {
    pub(super) delivered: usize,
    pub(super) pushed: usize,
    pub(super) rejected: usize,
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: Vec<u8>,
}

/// One run: guest memory, the host's channel and the exit loop's state.
pub(super) struct Fuzz<'a> {
    input: Input<'a>,
    pub(super) g: Guest,
    pub(super) ch: HostChannel,
    pub(super) io: BufferIo,
    pub(super) output: u64,
    pub(super) limit: u64,
    pub(super) stdin_done: bool,
    /// What `take_host_writes` returned so far.
    pub(super) host_writes: Vec<(u64, u64)>,
    pub(super) report: Report,
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

thread_local! {
    /// Guest memory, reused across runs (and zeroed after each).
    static MEMORY: RefCell<Option<(GuestRam, u64)>> = const { RefCell::new(None) };
}

/// One run of `data`, on this thread's guest memory.
pub(super) fn run(data: &[u8]) -> Report {
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
