//! The fuzzer's bytes as typed operands, biased towards the values that
//! reach interesting code (addresses near the buffers and rings, lengths
//! around one buffer, known message kinds).

use wisp_abi::layout::{PAGE_SIZE, QUEUE_SIZE, RX_BUF_ADDR, RX_DESC_ADDR, TX_BUF_ADDR};

use super::guest::{BUF, MEM_SIZE};
use super::KINDS;

/// The fuzzer's bytes, read front to back; reads past the end give zeroes.
pub(super) struct Input<'a>(pub(super) &'a [u8]);

impl<'a> Input<'a> {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    pub(super) fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub(super) fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub(super) fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    pub(super) fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n.min(self.0.len()));
        self.0 = tail;
        head
    }

    /// A guest address, biased towards the interesting regions: around the
    /// rx or tx buffers (one buffer either side), the ring pages, the
    /// host-built system pages, the end of memory, or any `u64`.
    pub(super) fn addr(&mut self) -> u64 {
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
    pub(super) fn near(&mut self, base: u64) -> u64 {
        let slot = u64::from(self.u8() % 10);
        base - BUF + slot * BUF + u64::from(self.u16())
    }

    /// A descriptor length: small, around one buffer, tiny, or any `u32`.
    pub(super) fn len(&mut self) -> u32 {
        let sel = self.u8();
        match sel % 4 {
            0 => u32::from(self.u16()),
            1 => BUF as u32 - 32 + u32::from(sel >> 2),
            2 => self.u32(),
            _ => u32::from(self.u8()),
        }
    }

    /// Descriptor flags: combinations of NEXT, WRITE and INDIRECT, or any.
    pub(super) fn flags(&mut self) -> u16 {
        let sel = self.u8();
        if sel & 0x80 != 0 {
            self.u16()
        } else {
            u16::from(sel & 7)
        }
    }

    /// A descriptor index as the avail ring carries it: mostly in range.
    pub(super) fn head(&mut self) -> u16 {
        let sel = self.u8();
        if sel & 0x80 != 0 {
            self.u16()
        } else {
            u16::from(sel) % QUEUE_SIZE
        }
    }

    /// A message kind field: mostly a known kind.
    pub(super) fn kind(&mut self) -> u32 {
        let sel = self.u8();
        if sel < 0xf0 {
            KINDS[usize::from(sel) % KINDS.len()] as u32
        } else {
            self.u32()
        }
    }

    /// A payload: inline bytes, or up to 64 KiB of one repeated byte.
    pub(super) fn payload(&mut self) -> Vec<u8> {
        let sel = self.u8();
        if sel >= 0xf0 {
            vec![sel; usize::from(self.u16())]
        } else {
            self.bytes(usize::from(sel)).to_vec()
        }
    }
}
