//! The guest's side of memory: where the queues are, what a descriptor
//! looks like, and a guest memory that remembers every range the guest
//! side wrote (so a run can zero exactly those afterwards).

use vm_memory::{Bytes, GuestAddress};
use wisp_abi::layout::{
    CHANNEL_BUFS, CHANNEL_BUF_SIZE, MIN_MEM_SIZE, QUEUE_SIZE, RX_AVAIL_ADDR, RX_BUF_ADDR,
    RX_DESC_ADDR, RX_USED_ADDR, TX_AVAIL_ADDR, TX_BUF_ADDR, TX_DESC_ADDR, TX_USED_ADDR,
};

use crate::memory::{self, GuestRam};

/// Guest memory of the fuzzed VM: the smallest a VM can have.
pub(super) const MEM_SIZE: u64 = MIN_MEM_SIZE;
/// Bytes of one channel buffer.
pub(super) const BUF: u64 = CHANNEL_BUF_SIZE;
/// Bytes of one direction's buffers.
pub(super) const AREA: u64 = CHANNEL_BUFS * CHANNEL_BUF_SIZE;
/// Descriptor flags (virtio's): chained, device-writable, indirect.
pub(super) const F_NEXT: u16 = 1;
pub(super) const F_WRITE: u16 = 2;
pub(super) const F_INDIRECT: u16 = 4;

/// A split virtqueue's place in guest memory.
#[derive(Clone, Copy, Debug)]
pub(super) struct Queue {
    pub(super) desc: u64,
    pub(super) avail: u64,
    pub(super) used: u64,
    pub(super) bufs: u64,
    /// rx: the device writes the buffers.
    pub(super) device_writes: bool,
}

pub(super) const RX: Queue = Queue {
    desc: RX_DESC_ADDR,
    avail: RX_AVAIL_ADDR,
    used: RX_USED_ADDR,
    bufs: RX_BUF_ADDR,
    device_writes: true,
};

pub(super) const TX: Queue = Queue {
    desc: TX_DESC_ADDR,
    avail: TX_AVAIL_ADDR,
    used: TX_USED_ADDR,
    bufs: TX_BUF_ADDR,
    device_writes: false,
};

/// A split-ring descriptor.
#[derive(Clone, Copy, Debug)]
pub(super) struct Desc {
    pub(super) addr: u64,
    pub(super) len: u32,
    pub(super) flags: u16,
    pub(super) next: u16,
}

impl Desc {
    pub(super) fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.flags.to_le_bytes());
        b[14..].copy_from_slice(&self.next.to_le_bytes());
        b
    }
}

/// Guest memory, with every range the guest side wrote.
pub(super) struct Guest {
    pub(super) mem: GuestRam,
    pub(super) written: Vec<(u64, u64)>,
}

impl Guest {
    /// Writes what fits in memory (the guest cannot write elsewhere).
    pub(super) fn write(&mut self, addr: u64, data: &[u8]) {
        self.written.push((addr, data.len() as u64));
        let _ = self.mem.write_slice(data, GuestAddress(addr));
    }

    pub(super) fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        memory::read(&self.mem, addr, len).ok()
    }

    /// Reads a field at a fixed address of the layout.
    pub(super) fn fixed<const N: usize>(&self, addr: u64) -> [u8; N] {
        let mut b = [0u8; N];
        self.mem
            .read_slice(&mut b, GuestAddress(addr))
            .expect("the layout's fixed addresses are in guest memory");
        b
    }

    pub(super) fn u16(&self, addr: u64) -> u16 {
        u16::from_le_bytes(self.fixed(addr))
    }

    pub(super) fn u32(&self, addr: u64) -> u32 {
        u32::from_le_bytes(self.fixed(addr))
    }

    pub(super) fn set_u16(&mut self, addr: u64, value: u16) {
        self.write(addr, &value.to_le_bytes());
    }

    pub(super) fn desc(&self, queue: &Queue, index: u16) -> Desc {
        let b: [u8; 16] = self.fixed(queue.desc + u64::from(index) * 16);
        Desc {
            addr: u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            len: u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")),
            flags: u16::from_le_bytes([b[12], b[13]]),
            next: u16::from_le_bytes([b[14], b[15]]),
        }
    }

    /// What a driver does to make descriptor `head` available.
    pub(super) fn post(&mut self, queue: &Queue, head: u16) {
        let idx = self.u16(queue.avail + 2);
        let slot = queue.avail + 4 + u64::from(idx % QUEUE_SIZE) * 2;
        self.set_u16(slot, head);
        self.set_u16(queue.avail + 2, idx.wrapping_add(1));
    }

    /// Used-ring element `n` (free-running) as `(id, len)`.
    pub(super) fn used(&self, queue: &Queue, n: u16) -> (u32, u32) {
        let e = queue.used + 4 + u64::from(n % QUEUE_SIZE) * 8;
        (self.u32(e), self.u32(e + 4))
    }

    /// Zeroes `(addr, len)`, clamped to memory.
    pub(super) fn zero(&self, (addr, len): (u64, u64)) {
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
