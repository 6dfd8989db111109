//! The CLI's streams: the module's stdio is the process's stdio.

use std::io::{self, Read, Write};

use wisp_vmm::GuestIo;

/// Passes stdin through and streams output as it arrives.
pub struct ProcessStdio;

impl GuestIo for ProcessStdio {
    fn read_stdin(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        io::stdin().lock().read(buf)
    }

    fn stdin_ready(&mut self) -> bool {
        let mut fd = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe {
            libc::poll(&mut fd, 1, 0) == 1 && fd.revents & (libc::POLLIN | libc::POLLHUP) != 0
        }
    }

    fn write_stdout(&mut self, data: &[u8]) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(data)?;
        out.flush()
    }

    fn write_stderr(&mut self, data: &[u8]) -> io::Result<()> {
        io::stderr().lock().write_all(data)
    }
}
