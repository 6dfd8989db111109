//! The host's steps of a `guest_channel` run, as the exit loop takes them
//! (`drain_tx`, `push_rx`, `rx_available`, snapshot state), each checked
//! against the model and the guest memory around it.

use wisp_abi::layout::{PAGE_SIZE, QUEUE_SIZE, RX_BUF_ADDR, RX_DESC_ADDR};
use wisp_abi::msg::{self, Kind, HEADER_LEN};

use super::channel::Fuzz;
use super::exit_loop::{fill_rx, on_message, Fill, Phase};
use super::guest::{AREA, RX, TX};
use super::model::{entry, tx_message, Entry};
use crate::error::Error;
use crate::io::GuestIo;

/// The ring pages (what `take_host_writes` always reports).
const RING_PAGES: (u64, u64) = (RX_DESC_ADDR, 2 * PAGE_SIZE);

impl Fuzz<'_> {
    /// `on_notify` (or `salvage_output`): drains tx, checking each message
    /// against the model, then feeds stdin if asked.
    pub(super) fn drain(&mut self, phase: Phase) {
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
    pub(super) fn push(&mut self, fill: Fill) -> Option<bool> {
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
    pub(super) fn feed(&mut self, mut block: bool) {
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
    pub(super) fn check(&mut self) {
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
}
