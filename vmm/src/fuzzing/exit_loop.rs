//! The exit loop's message handlers and rx fills, as `vm/run.rs` has them,
//! with the real `deliver_output` checked on every call: what the host
//! does with what it drains and what it writes into rx.

use wisp_abi::msg::{self, Kind, SEED_LEN};

use crate::error::{ConfigError, Error, ProtocolError, Result};
use crate::io::{BufferIo, GuestIo};
use crate::vm::deliver_output;

/// Who consumes tx messages, as in `vm/run.rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// `on_notify` while booting.
    Boot,
    /// `on_notify` while serving a request.
    Invoke,
    /// `salvage_output` after a stopped run.
    Salvage,
}

/// What a [`HostChannel::push_rx`](crate::channel::HostChannel::push_rx) fill writes, as `vm/` does.
pub(super) enum Fill {
    /// `feed_stdin`: a chunk of stdin, or EOF once it is exhausted.
    Stdin,
    /// `invoke`: a request.
    Request(Vec<Vec<u8>>, Vec<Vec<u8>>),
}

/// The handler of `on_notify` (or `salvage_output`), as in `vm/run.rs`.
#[allow(clippy::too_many_arguments)]
pub(super) fn on_message(
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
pub(super) fn fill_rx(
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
