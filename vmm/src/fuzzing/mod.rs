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
//!
//! One file per concern:
//!
//! - `input.rs`: the fuzzer's bytes as typed operands;
//! - `guest.rs`: the guest's side of memory (queues, descriptors);
//! - `model.rs`: the ABI model every host step is checked against;
//! - `exit_loop.rs`: the exit loop's handlers and fills, as `vm/run.rs`;
//! - `channel.rs`: one `guest_channel` run and the guest's moves in it;
//! - `host_steps.rs`: the host's steps in it, each checked;
//! - `program.rs` and `seeds.rs`: the program format, and the seeds;
//! - `messages.rs`: the `messages` target;
//! - `tests.rs`: both targets on pseudo-random and regression inputs.

mod channel;
mod exit_loop;
mod guest;
mod host_steps;
mod input;
mod messages;
mod model;
mod program;
mod seeds;
#[cfg(test)]
mod tests;

use wisp_abi::msg::Kind;

pub use channel::guest_channel;
pub use messages::messages;
pub use program::{DrainAs, Program};
pub use seeds::seeds;

/// The message kinds a program picks from by index (see
/// [`Program::send`]): `Kind::ALL` without the host-directory kinds, which
/// the model does not cover. The order is part of the seed corpus's
/// encoding, so a new kind fails to compile here until it is placed.
const KINDS: [Kind; 12] = {
    let mut kinds = [Kind::Ready; 12];
    let (mut i, mut n) = (0, 0);
    while i < Kind::ALL.len() {
        if !matches!(Kind::ALL[i], Kind::FsCall | Kind::FsReply) {
            kinds[n] = Kind::ALL[i];
            n += 1;
        }
        i += 1;
    }
    kinds
};
