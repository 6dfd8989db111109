//! The exit loop: runs the vCPU and serves the agent's port writes until
//! the guest reaches the end of a phase, fails, or runs out of time.

use std::time::Duration;

use kvm_ioctls::VcpuExit;
use wisp_abi::layout::{
    EXCEPTION_STACK_BOTTOM, EXCEPTION_STACK_TOP, FAULT_VECTORS, PANIC_MSG_ADDR, PANIC_MSG_MAX,
};
use wisp_abi::msg::Kind;
use wisp_abi::ports;

use super::{lossy, Outcome, Vm};
use crate::arch;
use crate::error::{Error, ProtocolError, Result};
use crate::io::GuestIo;
use crate::memory;
use crate::timer::Deadline;

/// What a run is waiting for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Phase {
    /// Booting: the agent ends it with `Ready`.
    Boot,
    /// Serving a request: the agent ends it with the module's outcome.
    Invoke,
}

impl Phase {
    /// What the VM is doing in this phase, for messages.
    fn doing(self) -> &'static str {
        match self {
            Phase::Boot => "booting",
            Phase::Invoke => "serving a request",
        }
    }
}

fn bad_payload(kind: Kind, payload: &[u8]) -> Error {
    ProtocolError::BadPayload {
        kind,
        len: payload.len(),
    }
    .into()
}

/// How a phase ended.
pub(super) enum Stop {
    Ready,
    Done(Outcome),
}

impl Vm {
    /// Runs the vCPU until the guest reaches the end of `phase`. If the run
    /// is stopped (timeout, fault, panic), the output the guest published
    /// before that is still delivered.
    pub(super) fn run(
        &mut self,
        phase: Phase,
        io: &mut dyn GuestIo,
        deadline: Option<&Deadline>,
    ) -> Result<Stop> {
        self.epoch += 1;
        let result = self.run_until_stop(phase, io, deadline);
        if let Err(
            Error::Timeout(_)
            | Error::GuestFault { .. }
            | Error::AgentPanic(_)
            | Error::TripleFault,
        ) = result
        {
            self.salvage_output(io);
        }
        result
    }

    /// Delivers output messages still in the tx queue of a stopped guest,
    /// ignoring everything else; best effort, as the guest may be broken.
    fn salvage_output(&mut self, io: &mut dyn GuestIo) {
        let limit = self.config.max_output;
        let output_bytes = &mut self.output_bytes;
        let _ = self
            .channel
            .drain_tx(&self.mem, |kind, payload| match kind {
                Kind::Stdout | Kind::Stderr => {
                    deliver_output(io, kind, payload, output_bytes, limit)
                }
                _ => Ok(()),
            });
    }

    fn run_until_stop(
        &mut self,
        phase: Phase,
        io: &mut dyn GuestIo,
        deadline: Option<&Deadline>,
    ) -> Result<Stop> {
        loop {
            let (port, value) = match self.shell.vcpu.run() {
                Ok(VcpuExit::IoOut(port, data)) => {
                    check_width(port, data.len())?;
                    let mut v = [0u8; 4];
                    let n = data.len().min(4);
                    v[..n].copy_from_slice(&data[..n]);
                    (port, u32::from_le_bytes(v))
                }
                Ok(VcpuExit::Intr) => {
                    check_deadline(deadline)?;
                    continue;
                }
                Ok(VcpuExit::Shutdown) => return Err(Error::TripleFault),
                Ok(VcpuExit::MmioRead(addr, _) | VcpuExit::MmioWrite(addr, _)) => {
                    return Err(ProtocolError::UnbackedAccess(addr).into())
                }
                Ok(VcpuExit::IoIn(port, _)) => return Err(ProtocolError::PortRead(port).into()),
                Ok(VcpuExit::Hlt) => return Err(ProtocolError::Halted.into()),
                Ok(VcpuExit::InternalError) => return Err(ProtocolError::Emulation.into()),
                Ok(VcpuExit::FailEntry(reason, _)) => {
                    return Err(ProtocolError::EntryFailed(reason).into())
                }
                Ok(other) => return Err(ProtocolError::UnexpectedExit(format!("{other:?}")).into()),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    check_deadline(deadline)?;
                    continue;
                }
                Err(e) => {
                    return Err(Error::Kvm {
                        op: "RUN",
                        source: e,
                    })
                }
            };
            match port {
                ports::NOTIFY => {
                    if let Some(stop) = self.on_notify(phase, io, deadline)? {
                        return Ok(stop);
                    }
                }
                ports::FAULT => return Err(self.fault(value as u8)),
                ports::PANIC => {
                    let len = u64::from(value).min(PANIC_MSG_MAX) as usize;
                    let text = memory::read(&self.mem, PANIC_MSG_ADDR, len)
                        .map(|b| lossy(&b))
                        .unwrap_or_default();
                    return Err(Error::AgentPanic(text));
                }
                other => return Err(ProtocolError::UnknownPort(other).into()),
            }
            check_deadline(deadline)?;
        }
    }

    /// Serves a notify: consumes the guest's messages, then answers a
    /// stdin request or a sleep.
    fn on_notify(
        &mut self,
        phase: Phase,
        io: &mut dyn GuestIo,
        deadline: Option<&Deadline>,
    ) -> Result<Option<Stop>> {
        let mut stop = None;
        let mut wants_stdin = false;
        let mut fs_calls: Vec<Vec<u8>> = Vec::new();
        let mut sleep = Duration::ZERO;
        let max_output = self.config.max_output;
        let output_bytes = &mut self.output_bytes;
        self.channel.drain_tx(&self.mem, |kind, payload| {
            if stop.is_some() {
                return Err(ProtocolError::AfterFinal(kind).into());
            }
            match kind {
                Kind::Ready if phase == Phase::Boot => stop = Some(Stop::Ready),
                Kind::Stdout | Kind::Stderr => {
                    deliver_output(io, kind, payload, output_bytes, max_output)?
                }
                Kind::StdinRequest => wants_stdin = true,
                Kind::FsCall if phase == Phase::Invoke => fs_calls.push(payload.to_vec()),
                Kind::Sleep => {
                    let ns: [u8; 8] = payload.try_into().map_err(|_| bad_payload(kind, payload))?;
                    sleep = Duration::from_nanos(u64::from_le_bytes(ns));
                }
                Kind::Exit => {
                    let code: [u8; 4] =
                        payload.try_into().map_err(|_| bad_payload(kind, payload))?;
                    stop = Some(Stop::Done(Outcome::Exited(i32::from_le_bytes(code))));
                }
                Kind::Trap => stop = Some(Stop::Done(Outcome::Trapped(lossy(payload)))),
                Kind::Error => return Err(Error::Module(lossy(payload))),
                Kind::OutOfMemory => return Err(Error::OutOfMemory(lossy(payload))),
                other => {
                    return Err(ProtocolError::Unexpected {
                        kind: other,
                        phase: phase.doing(),
                    }
                    .into())
                }
            }
            Ok(())
        })?;
        if stop.is_some() {
            return Ok(stop);
        }
        for call in fs_calls {
            let answered = self.channel.push_rx(&self.mem, |buf| {
                if buf.len() < wisp_abi::hostfs::REPLY_HEADER {
                    return Err(ProtocolError::RxTooSmall("a filesystem reply").into());
                }
                Ok((Kind::FsReply, io.fs_call(&call, buf)))
            })?;
            if !answered {
                return Err(ProtocolError::NoRxBuffer("a filesystem reply").into());
            }
        }
        if !sleep.is_zero() {
            std::thread::sleep(deadline.map_or(sleep, |d| sleep.min(d.remaining())));
            check_deadline(deadline)?;
        }
        if wants_stdin {
            self.feed_stdin(io, true, deadline)?;
        }
        Ok(None)
    }

    /// Fills posted rx buffers with stdin. Blocks for the first chunk only
    /// if `block` (the guest asked); otherwise sends what is ready.
    pub(super) fn feed_stdin(
        &mut self,
        io: &mut dyn GuestIo,
        mut block: bool,
        deadline: Option<&Deadline>,
    ) -> Result<()> {
        while self.channel.rx_available(&self.mem)? {
            if !self.stdin_done && !block && !io.stdin_ready() {
                break;
            }
            block = false;
            let done = &mut self.stdin_done;
            self.channel.push_rx(&self.mem, |buf| {
                if *done {
                    return Ok((Kind::StdinEof, 0));
                }
                let n = loop {
                    match io.read_stdin(buf) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                            check_deadline(deadline)?
                        }
                        Err(e) => return Err(Error::Input(e)),
                    }
                };
                *done = n == 0;
                Ok(if n == 0 {
                    (Kind::StdinEof, 0)
                } else {
                    (Kind::Stdin, n)
                })
            })?;
            if self.stdin_done {
                break;
            }
        }
        Ok(())
    }

    /// Builds the error for an exception the guest reported on the fault
    /// port, from the interrupt frame on the exception stack.
    fn fault(&self, vector: u8) -> Error {
        if u64::from(vector) >= FAULT_VECTORS {
            return ProtocolError::BadFaultVector(vector).into();
        }
        let regs = match self.shell.vcpu.get_regs() {
            Ok(r) => r,
            Err(source) => {
                return Error::Kvm {
                    op: "GET_REGS",
                    source,
                }
            }
        };
        let has_code = arch::EXCEPTIONS_WITH_ERROR_CODE.contains(&vector);
        let frame_len = if has_code { 16 } else { 8 };
        // The frame must be on the exception stack; anything else means the
        // guest wrote the fault port itself.
        if regs.rsp < EXCEPTION_STACK_BOTTOM || regs.rsp + frame_len > EXCEPTION_STACK_TOP {
            return ProtocolError::ForgedFault(regs.rsp).into();
        }
        let frame = match memory::read(&self.mem, regs.rsp, frame_len as usize) {
            Ok(f) => f,
            Err(_) => return ProtocolError::ForgedFault(regs.rsp).into(),
        };
        let word =
            |i: usize| u64::from_le_bytes(frame[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        let (error_code, rip) = if has_code {
            (word(0), word(1))
        } else {
            (0, word(0))
        };
        let fault_addr =
            (vector == 14).then(|| self.shell.vcpu.get_sregs().map(|s| s.cr2).unwrap_or(0));
        Error::GuestFault {
            vector,
            name: arch::exception_name(vector),
            error_code,
            rip,
            fault_addr,
        }
    }
}

/// Writes one output message to `io`, enforcing the output limit: output up
/// to the limit is delivered, the rest ends the run.
pub(crate) fn deliver_output(
    io: &mut dyn GuestIo,
    kind: Kind,
    payload: &[u8],
    total: &mut u64,
    limit: u64,
) -> Result<()> {
    let room = limit.saturating_sub(*total);
    let take = payload
        .len()
        .min(usize::try_from(room).unwrap_or(usize::MAX));
    *total += take as u64;
    let written = if kind == Kind::Stdout {
        io.write_stdout(&payload[..take])
    } else {
        io.write_stderr(&payload[..take])
    };
    written.map_err(Error::Output)?;
    if take < payload.len() {
        return Err(Error::OutputLimit(limit));
    }
    Ok(())
}

/// Fails unless a write to one of the ABI's ports has that port's width
/// (`bytes` is the size of the access times its count, for string I/O).
/// Unknown ports are refused by the caller.
fn check_width(port: u16, bytes: usize) -> Result<()> {
    let width = match port {
        ports::NOTIFY | ports::PANIC => 4,
        ports::FAULT => 1,
        _ => return Ok(()),
    };
    if bytes != width {
        return Err(ProtocolError::PortWidth {
            port,
            width: bytes,
            expected: width,
        }
        .into());
    }
    Ok(())
}

fn check_deadline(deadline: Option<&Deadline>) -> Result<()> {
    match deadline {
        Some(d) if d.expired() => Err(Error::Timeout(d.limit())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1-byte write to `NOTIFY` used to be taken as a notify.
    #[test]
    fn ports_take_their_own_width_only() {
        check_width(ports::NOTIFY, 4).unwrap();
        check_width(ports::PANIC, 4).unwrap();
        check_width(ports::FAULT, 1).unwrap();
        for (port, bytes) in [
            (ports::NOTIFY, 1),
            (ports::NOTIFY, 2),
            (ports::PANIC, 8),
            (ports::FAULT, 4),
        ] {
            assert!(
                matches!(
                    check_width(port, bytes),
                    Err(Error::Protocol(ProtocolError::PortWidth { width, .. })) if width == bytes
                ),
                "{port:#x} with {bytes} bytes"
            );
        }
    }
}
