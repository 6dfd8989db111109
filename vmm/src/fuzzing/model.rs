//! An independent model of the channel's rules (docs/ABI.md, "The
//! channel"): what the host must do with the next available entry, and
//! which tx messages are well formed. The host's every step is checked
//! against it.

use wisp_abi::layout::QUEUE_SIZE;
use wisp_abi::msg::HEADER_LEN;

use super::guest::{Guest, Queue, AREA, BUF, F_INDIRECT, F_NEXT, F_WRITE};
use super::KINDS;

/// What the ABI says the host must do with the next available entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Entry {
    /// Nothing is available.
    Empty,
    /// A valid descriptor to take.
    Valid { head: u16, addr: u64, len: u32 },
    /// A protocol violation: the host must fail, without taking anything.
    Invalid,
}

/// The model: the available entry of `queue` at `next_avail`, by the ABI.
pub(super) fn entry(g: &Guest, queue: &Queue, next_avail: u16) -> Entry {
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
pub(super) fn tx_message(g: &Guest, addr: u64, len: u32) -> Option<(u32, Vec<u8>)> {
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
