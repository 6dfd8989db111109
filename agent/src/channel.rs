//! The guest side of the channel: a minimal virtio split-virtqueue driver.
//!
//! Two queues at fixed addresses (`wisp_abi::layout`): `rx` carries
//! host→guest messages into buffers the agent posts, `tx` carries
//! guest→host messages. The host handles a notify synchronously inside the
//! VM exit, so when `notify` returns every posted tx buffer has been consumed
//! and any requested rx data is in the used ring: no interrupts, no waiting.
//!
//! Output is published eagerly: [`Channel::append`] grows the last
//! published message while the host has not consumed it (the host reads the
//! rings only while this single vCPU is stopped in an exit, so it always sees
//! a consistent message). Published output therefore reaches the host at the
//! next exit of any kind, even one that ends the run (timeout, fault).

use alloc::vec::Vec;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{fence, Ordering};

use wisp_abi::layout::*;
use wisp_abi::msg::{self, Kind, HEADER_LEN};
use wisp_abi::ports;

use crate::port;

const VIRTQ_DESC_F_WRITE: u16 = 2;

/// Largest payload one message can carry.
pub const MAX_PAYLOAD: usize = CHANNEL_BUF_SIZE as usize - HEADER_LEN;

/// One split virtqueue as the driver sees it.
struct Queue {
    desc: u64,
    avail: u64,
    used: u64,
    /// Next free slot in the available ring (free-running).
    avail_idx: u16,
    /// Next used-ring entry to consume (free-running).
    last_used: u16,
}

impl Queue {
    const fn new(desc: u64, avail: u64, used: u64) -> Self {
        Queue {
            desc,
            avail,
            used,
            avail_idx: 0,
            last_used: 0,
        }
    }

    fn set_desc(&mut self, index: u16, addr: u64, len: u32, flags: u16) {
        let d = self.desc + u64::from(index) * 16;
        // SAFETY: the descriptor table lies in the agent-owned ring page; index
        // is below QUEUE_SIZE (callers pass buffer numbers < CHANNEL_BUFS).
        unsafe {
            write_volatile(d as *mut u64, addr);
            write_volatile((d + 8) as *mut u32, len);
            write_volatile((d + 12) as *mut u16, flags);
            write_volatile((d + 14) as *mut u16, 0);
        }
    }

    /// Makes descriptor `index` available to the host.
    fn push_avail(&mut self, index: u16) {
        let slot = self.avail + 4 + u64::from(self.avail_idx % QUEUE_SIZE) * 2;
        self.avail_idx = self.avail_idx.wrapping_add(1);
        // SAFETY: the available ring lies in the agent-owned ring page.
        unsafe {
            write_volatile(slot as *mut u16, index);
            fence(Ordering::Release);
            write_volatile((self.avail + 2) as *mut u16, self.avail_idx);
        }
    }

    /// Takes the next used entry: `(descriptor index, bytes written)`.
    fn pop_used(&mut self) -> Option<(u16, u32)> {
        // SAFETY: the used ring lies in the agent-owned ring page; the host
        // only writes it while this vCPU is stopped in a VM exit.
        let idx = unsafe { read_volatile((self.used + 2) as *const u16) };
        if idx == self.last_used {
            return None;
        }
        fence(Ordering::Acquire);
        let e = self.used + 4 + u64::from(self.last_used % QUEUE_SIZE) * 8;
        self.last_used = self.last_used.wrapping_add(1);
        // SAFETY: as above.
        let (id, len) = unsafe {
            (
                read_volatile(e as *const u32),
                read_volatile((e + 4) as *const u32),
            )
        };
        Some((id as u16, len))
    }
}

/// A message received from the host.
pub enum Incoming<'a> {
    /// An invocation request (payload still encoded).
    Request(&'a [u8]),
    /// Stdin bytes.
    Stdin(&'a [u8]),
    /// Stdin is exhausted.
    StdinEof,
    /// The host's answer to a filesystem call.
    FsReply(&'a [u8]),
}

/// The channel to the host.
pub struct Channel {
    rx: Queue,
    tx: Queue,
    /// tx buffers not currently posted.
    free_tx: Vec<u16>,
    /// The last published tx message, still unconsumed, that output of the
    /// same kind may be appended to: `(descriptor, kind, total length)`.
    open: Option<(u16, Kind, usize)>,
}

fn buf(base: u64, index: u16) -> *mut u8 {
    (base + u64::from(index) * CHANNEL_BUF_SIZE) as *mut u8
}

impl Channel {
    /// Lays out both queues and posts every rx buffer.
    pub fn init() -> Channel {
        let mut ch = Channel {
            rx: Queue::new(RX_DESC_ADDR, RX_AVAIL_ADDR, RX_USED_ADDR),
            tx: Queue::new(TX_DESC_ADDR, TX_AVAIL_ADDR, TX_USED_ADDR),
            free_tx: (0..CHANNEL_BUFS as u16).rev().collect(),
            open: None,
        };
        for i in 0..CHANNEL_BUFS as u16 {
            ch.rx.set_desc(
                i,
                buf(RX_BUF_ADDR, i) as u64,
                CHANNEL_BUF_SIZE as u32,
                VIRTQ_DESC_F_WRITE,
            );
            ch.rx.push_avail(i);
        }
        ch
    }

    /// Queues one message; notifies first if every tx buffer is in flight.
    pub fn send(&mut self, kind: Kind, payload: &[u8]) {
        let payload = &payload[..payload.len().min(MAX_PAYLOAD)];
        if self.free_tx.is_empty() {
            self.notify();
        }
        let Some(index) = self.free_tx.pop() else {
            crate::rt::fatal("host did not return tx buffers");
        };
        let b = buf(TX_BUF_ADDR, index);
        // SAFETY: tx buffer `index` is owned by the agent (not posted) and is
        // CHANNEL_BUF_SIZE bytes, which fits a header and MAX_PAYLOAD bytes.
        let len = unsafe {
            let out = core::slice::from_raw_parts_mut(b, CHANNEL_BUF_SIZE as usize);
            let n = msg::encode_header(out, kind, payload.len());
            out[HEADER_LEN..n].copy_from_slice(payload);
            n
        };
        self.tx.set_desc(index, b as u64, len as u32, 0);
        self.tx.push_avail(index);
        self.open = Some((index, kind, len));
    }

    /// Publishes `data` as `kind` output, extending the last unconsumed
    /// message when it is of the same kind and has room, so many small
    /// writes become few messages (and few exits).
    pub fn append(&mut self, kind: Kind, mut data: &[u8]) {
        while !data.is_empty() {
            match self.open {
                Some((index, open_kind, len))
                    if open_kind == kind && len < CHANNEL_BUF_SIZE as usize =>
                {
                    let n = data.len().min(CHANNEL_BUF_SIZE as usize - len);
                    let b = buf(TX_BUF_ADDR, index);
                    // SAFETY: buffer `index` is published but unconsumed; the
                    // host reads it only while this vCPU is stopped, so we
                    // may extend it. `len + n` stays within the buffer.
                    unsafe {
                        core::ptr::copy_nonoverlapping(data.as_ptr(), b.add(len), n);
                        let out = core::slice::from_raw_parts_mut(b, HEADER_LEN);
                        msg::encode_header(out, kind, len + n - HEADER_LEN);
                    }
                    self.tx.set_desc(index, b as u64, (len + n) as u32, 0);
                    self.open = Some((index, kind, len + n));
                    data = &data[n..];
                }
                _ => {
                    let n = data.len().min(MAX_PAYLOAD);
                    self.send(kind, &data[..n]);
                    data = &data[n..];
                }
            }
        }
    }

    /// Exits to the host, which consumes all queued messages (and answers
    /// a stdin request) before resuming us.
    pub fn notify(&mut self) {
        port::out32(ports::NOTIFY, 0);
        self.open = None;
        while let Some((index, _)) = self.tx.pop_used() {
            if u64::from(index) < CHANNEL_BUFS {
                self.free_tx.push(index);
            }
        }
    }

    /// Hands the next host message to `f`, then re-posts its buffer.
    pub fn recv<R>(&mut self, f: impl FnOnce(Incoming<'_>) -> R) -> Option<R> {
        let (index, len) = self.rx.pop_used()?;
        if u64::from(index) >= CHANNEL_BUFS || u64::from(len) > CHANNEL_BUF_SIZE {
            crate::rt::fatal("host returned a bad rx descriptor");
        }
        // SAFETY: rx buffer `index` was filled by the host and is not posted
        // again until after `f` returns; `len` was bounded above.
        let data = unsafe { core::slice::from_raw_parts(buf(RX_BUF_ADDR, index), len as usize) };
        let result = match msg::decode(data) {
            Ok((Kind::Request, payload)) => f(Incoming::Request(payload)),
            Ok((Kind::Stdin, payload)) => f(Incoming::Stdin(payload)),
            Ok((Kind::StdinEof, _)) => f(Incoming::StdinEof),
            Ok((Kind::FsReply, payload)) => f(Incoming::FsReply(payload)),
            _ => crate::rt::fatal("host sent a malformed message"),
        };
        self.rx.push_avail(index);
        Some(result)
    }
}
