//! The host side of the channel: two virtio split virtqueues driven with the
//! `virtio-queue` crate, the host acting as the device.
//!
//! Everything here reads guest-written memory, so everything is checked:
//! descriptors must be single (no chain, no indirect table), of the right
//! direction, and lie inside their queue's buffer area (`wisp_abi::layout`);
//! a message header's length must be its descriptor's, less the header. A
//! violation is a [`ProtocolError`] that ends the run.

use serde::{Deserialize, Serialize};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress};
use wisp_abi::layout::*;
use wisp_abi::msg::{self, Kind, HEADER_LEN};

use crate::error::{DescriptorProblem, Error, ProtocolError, Result};
use crate::memory::GuestRam;

/// Largest message (header included).
const BUF: usize = CHANNEL_BUF_SIZE as usize;

/// A broken ring (vm-memory or virtio-queue refused an access).
fn queue_error(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Protocol(ProtocolError::Queue(Box::new(e)))
}

fn descriptor(queue: &'static str, head: u16, problem: DescriptorProblem) -> Error {
    Error::Protocol(ProtocolError::Descriptor {
        queue,
        head,
        problem,
    })
}

/// Host ends of the rx (host→guest) and tx (guest→host) queues.
pub struct HostChannel {
    rx: Queue,
    tx: Queue,
    scratch: Vec<u8>,
    /// Guest memory the host wrote since the last [`HostChannel::take_host_writes`],
    /// as `(address, length)`: KVM's dirty log sees only the guest's writes.
    host_writes: Vec<(u64, u64)>,
}

/// The ring pages, which the host writes (used rings) on every exchange.
const RING_PAGES: (u64, u64) = (
    RX_DESC_ADDR,
    align_up(TX_USED_ADDR + 1, PAGE_SIZE) - RX_DESC_ADDR,
);

fn queue(desc: u64, avail: u64, used: u64) -> Result<Queue> {
    let mut q = Queue::new(QUEUE_SIZE).map_err(queue_error)?;
    q.try_set_desc_table_address(GuestAddress(desc))
        .map_err(queue_error)?;
    q.try_set_avail_ring_address(GuestAddress(avail))
        .map_err(queue_error)?;
    q.try_set_used_ring_address(GuestAddress(used))
        .map_err(queue_error)?;
    q.set_size(QUEUE_SIZE);
    q.set_ready(true);
    Ok(q)
}

/// The channel's state for a snapshot. The rings and buffers are in guest
/// memory; the device side only adds where it is in each ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelState {
    pub(crate) rx_next_avail: u16,
    pub(crate) rx_next_used: u16,
    pub(crate) tx_next_avail: u16,
    pub(crate) tx_next_used: u16,
}

/// Checks that a descriptor lies wholly inside `[base, base + CHANNEL_BUFS *
/// CHANNEL_BUF_SIZE)` and is at most one buffer long.
fn check_buffer(addr: GuestAddress, len: u32, base: u64, queue: &'static str) -> Result<()> {
    let inside = addr.0.checked_add(u64::from(len)).is_some_and(|end| {
        addr.0 >= base
            && end <= base + CHANNEL_BUFS * CHANNEL_BUF_SIZE
            && u64::from(len) <= CHANNEL_BUF_SIZE
    });
    if !inside {
        return Err(Error::Protocol(ProtocolError::OutsideBuffers {
            queue,
            addr: addr.0,
            len,
        }));
    }
    Ok(())
}

/// Fails if descriptor `head` of the table at `table` is indirect.
/// `virtio-queue` follows an indirect descriptor transparently, to a table
/// anywhere in guest memory (host-built pages included) of up to 64 Ki
/// entries; the ABI has no indirect descriptors, so the host refuses them.
fn check_direct(mem: &GuestRam, table: u64, head: u16, queue: &'static str) -> Result<()> {
    let desc: Descriptor = mem
        .read_obj(GuestAddress(table + u64::from(head) * 16))
        .map_err(queue_error)?;
    if desc.refers_to_indirect_table() {
        return Err(descriptor(queue, head, DescriptorProblem::Indirect));
    }
    Ok(())
}

impl HostChannel {
    /// Queues at the fixed addresses of the ABI, in their reset state.
    pub fn new() -> Result<HostChannel> {
        Ok(HostChannel {
            rx: queue(RX_DESC_ADDR, RX_AVAIL_ADDR, RX_USED_ADDR)?,
            tx: queue(TX_DESC_ADDR, TX_AVAIL_ADDR, TX_USED_ADDR)?,
            scratch: vec![0; BUF],
            host_writes: Vec::new(),
        })
    }

    /// Where the device side is in each ring.
    pub fn save(&self) -> ChannelState {
        ChannelState {
            rx_next_avail: self.rx.next_avail(),
            rx_next_used: self.rx.next_used(),
            tx_next_avail: self.tx.next_avail(),
            tx_next_used: self.tx.next_used(),
        }
    }

    /// Puts the device side back where `state` was.
    pub fn restore(&mut self, state: &ChannelState) {
        self.rx.set_next_avail(state.rx_next_avail);
        self.rx.set_next_used(state.rx_next_used);
        self.tx.set_next_avail(state.tx_next_avail);
        self.tx.set_next_used(state.tx_next_used);
    }

    /// The guest memory the host has written since the last call (message
    /// buffers and the ring pages), so a reset can restore exactly that.
    pub fn take_host_writes(&mut self) -> Vec<(u64, u64)> {
        let mut writes = std::mem::take(&mut self.host_writes);
        writes.push(RING_PAGES);
        writes
    }

    /// Consumes every message the guest queued, in order, handing each to
    /// `handle`, and returns the buffers to the guest.
    pub fn drain_tx(
        &mut self,
        mem: &GuestRam,
        mut handle: impl FnMut(Kind, &[u8]) -> Result<()>,
    ) -> Result<()> {
        loop {
            let chain = {
                let mut iter = self.tx.iter(mem).map_err(queue_error)?;
                iter.next()
            };
            let Some(mut chain) = chain else {
                return Ok(());
            };
            let head = chain.head_index();
            let desc = chain
                .next()
                .ok_or_else(|| descriptor("tx", head, DescriptorProblem::Empty))?;
            check_direct(mem, TX_DESC_ADDR, head, "tx")?;
            if desc.has_next() || desc.is_write_only() {
                return Err(descriptor(
                    "tx",
                    head,
                    DescriptorProblem::NotSingle("device-readable"),
                ));
            }
            check_buffer(desc.addr(), desc.len(), TX_BUF_ADDR, "tx")?;
            let len = desc.len() as usize;
            mem.read_slice(&mut self.scratch[..len], desc.addr())
                .map_err(queue_error)?;
            let (kind, payload) = msg::decode(&self.scratch[..len])
                .map_err(|e| Error::Protocol(ProtocolError::Message(e)))?;
            if HEADER_LEN + payload.len() != len {
                return Err(Error::Protocol(ProtocolError::LengthMismatch {
                    kind,
                    message: HEADER_LEN + payload.len(),
                    descriptor: len,
                }));
            }
            handle(kind, payload)?;
            self.tx.add_used(mem, head, 0).map_err(queue_error)?;
        }
    }

    /// Writes one message into the next buffer the guest posted. Returns
    /// `false` if no buffer is posted. `fill` writes the payload into the
    /// slice it is given and returns the message kind and payload length.
    pub fn push_rx(
        &mut self,
        mem: &GuestRam,
        fill: impl FnOnce(&mut [u8]) -> Result<(Kind, usize)>,
    ) -> Result<bool> {
        let chain = {
            let mut iter = self.rx.iter(mem).map_err(queue_error)?;
            iter.next()
        };
        let Some(mut chain) = chain else {
            return Ok(false);
        };
        let head = chain.head_index();
        let desc = chain
            .next()
            .ok_or_else(|| descriptor("rx", head, DescriptorProblem::Empty))?;
        check_direct(mem, RX_DESC_ADDR, head, "rx")?;
        if desc.has_next() || !desc.is_write_only() {
            return Err(descriptor(
                "rx",
                head,
                DescriptorProblem::NotSingle("device-writable"),
            ));
        }
        check_buffer(desc.addr(), desc.len(), RX_BUF_ADDR, "rx")?;
        let room = desc.len() as usize;
        if room < HEADER_LEN {
            return Err(Error::Protocol(ProtocolError::RxTooSmall(
                "a message header",
            )));
        }
        let (kind, n) = fill(&mut self.scratch[HEADER_LEN..room])?;
        // `fill` is host code (e.g. a GuestIo); never trust it to stay
        // inside the guest's buffer either.
        if n > room - HEADER_LEN {
            return Err(Error::Input(std::io::Error::other(format!(
                "{n} bytes produced for a {}-byte buffer",
                room - HEADER_LEN
            ))));
        }
        let total = msg::encode_header(&mut self.scratch, kind, n);
        mem.write_slice(&self.scratch[..total], desc.addr())
            .map_err(queue_error)?;
        self.host_writes.push((desc.addr().0, total as u64));
        self.rx
            .add_used(mem, head, total as u32)
            .map_err(queue_error)?;
        Ok(true)
    }

    /// Whether the guest has an rx buffer posted.
    pub fn rx_available(&self, mem: &GuestRam) -> Result<bool> {
        let avail = self
            .rx
            .avail_idx(mem, std::sync::atomic::Ordering::Acquire)
            .map_err(queue_error)?;
        Ok(avail.0 != self.rx.next_avail())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory;

    const F_WRITE: u16 = 2;
    const F_INDIRECT: u16 = 4;

    fn set_desc(mem: &GuestRam, table: u64, index: u16, addr: u64, len: u32, flags: u16) {
        let desc = Descriptor::new(addr, len, flags, 0);
        mem.write_obj(desc, GuestAddress(table + u64::from(index) * 16))
            .unwrap();
    }

    fn post(mem: &GuestRam, avail: u64, head: u16) {
        let idx: u16 = mem.read_obj(GuestAddress(avail + 2)).unwrap();
        let slot = avail + 4 + u64::from(idx % QUEUE_SIZE) * 2;
        mem.write_obj(head, GuestAddress(slot)).unwrap();
        mem.write_obj(idx.wrapping_add(1), GuestAddress(avail + 2))
            .unwrap();
    }

    /// Found by the `guest_channel` fuzz target
    /// (fuzz/regressions/guest_channel/indirect-rx-descriptor): an indirect
    /// descriptor whose table is the ring's own descriptor table made the
    /// host take a descriptor the guest never made available.
    #[test]
    fn indirect_descriptors_are_rejected() {
        let mem = memory::create(MIN_MEM_SIZE).unwrap();
        let mut ch = HostChannel::new().unwrap();

        // tx: a valid Stdout message behind descriptor 1, reached only
        // through descriptor 0, indirect, whose table starts at entry 1.
        memory::write(&mem, TX_BUF_ADDR, &[2, 0, 0, 0, 2, 0, 0, 0, b'h', b'i']).unwrap();
        set_desc(&mem, TX_DESC_ADDR, 1, TX_BUF_ADDR, 10, 0);
        set_desc(&mem, TX_DESC_ADDR, 0, TX_DESC_ADDR + 16, 16, F_INDIRECT);
        post(&mem, TX_AVAIL_ADDR, 0);
        let mut delivered = 0;
        let r = ch.drain_tx(&mem, |_, _| {
            delivered += 1;
            Ok(())
        });
        assert!(
            matches!(
                r,
                Err(Error::Protocol(ProtocolError::Descriptor {
                    queue: "tx",
                    head: 0,
                    ..
                }))
            ),
            "{r:?}"
        );
        assert_eq!(delivered, 0);

        // rx: the host would write a message through the indirect table.
        set_desc(&mem, RX_DESC_ADDR, 0, RX_BUF_ADDR, 64, F_WRITE);
        set_desc(&mem, RX_DESC_ADDR, 1, RX_DESC_ADDR, 16, F_INDIRECT);
        post(&mem, RX_AVAIL_ADDR, 1);
        assert!(ch.rx_available(&mem).unwrap());
        let r = ch.push_rx(&mem, |_| Ok((Kind::StdinEof, 0)));
        assert!(
            matches!(
                r,
                Err(Error::Protocol(ProtocolError::Descriptor {
                    queue: "rx",
                    head: 1,
                    ..
                }))
            ),
            "{r:?}"
        );
        assert_eq!(memory::read(&mem, RX_BUF_ADDR, 8).unwrap(), [0; 8]);
    }

    /// A header that claims less than its descriptor holds used to be
    /// accepted, the rest ignored; the two must agree.
    #[test]
    fn header_and_descriptor_lengths_must_agree() {
        let mem = memory::create(MIN_MEM_SIZE).unwrap();
        let mut ch = HostChannel::new().unwrap();
        memory::write(
            &mem,
            TX_BUF_ADDR,
            &[2, 0, 0, 0, 2, 0, 0, 0, b'h', b'i', b'!'],
        )
        .unwrap();
        set_desc(&mem, TX_DESC_ADDR, 0, TX_BUF_ADDR, 11, 0);
        post(&mem, TX_AVAIL_ADDR, 0);
        let r = ch.drain_tx(&mem, |_, _| panic!("nothing may be delivered"));
        assert!(
            matches!(
                &r,
                Err(Error::Protocol(ProtocolError::LengthMismatch {
                    kind: Kind::Stdout,
                    message: 10,
                    descriptor: 11
                }))
            ),
            "{r:?}"
        );
    }

    #[test]
    fn direct_descriptors_still_work() {
        let mem = memory::create(MIN_MEM_SIZE).unwrap();
        let mut ch = HostChannel::new().unwrap();
        memory::write(&mem, TX_BUF_ADDR, &[2, 0, 0, 0, 2, 0, 0, 0, b'h', b'i']).unwrap();
        set_desc(&mem, TX_DESC_ADDR, 3, TX_BUF_ADDR, 10, 0);
        post(&mem, TX_AVAIL_ADDR, 3);
        let mut got = Vec::new();
        ch.drain_tx(&mem, |kind, payload| {
            got.push((kind, payload.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(got, [(Kind::Stdout, b"hi".to_vec())]);

        set_desc(&mem, RX_DESC_ADDR, 2, RX_BUF_ADDR, 64, F_WRITE);
        post(&mem, RX_AVAIL_ADDR, 2);
        assert!(ch.push_rx(&mem, |_| Ok((Kind::StdinEof, 0))).unwrap());
        assert_eq!(
            memory::read(&mem, RX_BUF_ADDR, 8).unwrap(),
            [0x03, 0x01, 0, 0, 0, 0, 0, 0]
        );
    }
}
