//! The CLI's streams: the module's stdio is the process's stdio.

use std::io::{self, Read, Write};

use wisp_vmm::GuestIo;

use crate::hostfs::FsThread;

/// Passes stdin through and streams output as it arrives. Stdin is read
/// only when the module asks for it (never ahead, though that would save a
/// VM exit): the process's stdin may be shared with a shell loop or the next
/// command of a pipeline, which must find what the module did not read.
/// Calls on host directories (`--dir`) go to their thread.
#[derive(Default)]
pub struct ProcessStdio {
    /// Where host directory calls are served, if any are mapped.
    pub dirs: Option<FsThread>,
    /// What the module reads before the process's stdin: a handler's line
    /// of request context (docs/RUNTIMES.md).
    pub before_stdin: io::Cursor<Vec<u8>>,
    /// Bytes written to stdout so far.
    pub stdout_bytes: u64,
    /// Bytes written to stderr so far.
    pub stderr_bytes: u64,
}

impl GuestIo for ProcessStdio {
    fn fs_call(&mut self, call: &[u8], reply: &mut [u8]) -> usize {
        match &self.dirs {
            Some(dirs) => dirs.call(call, reply),
            None => wisp_vmm::refuse_fs_call(reply),
        }
    }

    fn read_stdin(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.before_stdin.read(buf)? {
            0 => io::stdin().lock().read(buf),
            n => Ok(n),
        }
    }

    fn write_stdout(&mut self, data: &[u8]) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(data)?;
        out.flush()?;
        self.stdout_bytes += data.len() as u64;
        Ok(())
    }

    fn write_stderr(&mut self, data: &[u8]) -> io::Result<()> {
        io::stderr().lock().write_all(data)?;
        self.stderr_bytes += data.len() as u64;
        Ok(())
    }
}
