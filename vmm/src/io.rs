//! Where an invocation's stdin comes from and its output goes.

use std::io;

/// The host end of the module's standard streams.
pub trait GuestIo {
    /// Reads stdin; `Ok(0)` means end of file. May block.
    fn read_stdin(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Whether `read_stdin` would return without blocking. When true the
    /// host sends stdin ahead of the guest asking, saving VM exits.
    fn stdin_ready(&mut self) -> bool {
        false
    }

    /// Takes a chunk the module wrote to stdout.
    fn write_stdout(&mut self, data: &[u8]) -> io::Result<()>;

    /// Takes a chunk the module wrote to stderr.
    fn write_stderr(&mut self, data: &[u8]) -> io::Result<()>;

    /// Performs an operation on a host directory (`wisp_abi::hostfs`):
    /// `call` is the guest's request, exactly as it sent it (untrusted);
    /// the reply goes into `reply`, and its length is returned. Without
    /// host directories every call fails with `EBADF`.
    fn fs_call(&mut self, call: &[u8], reply: &mut [u8]) -> usize {
        let _ = call;
        refuse_fs_call(reply)
    }
}

/// The reply to a filesystem call where no host directory is mapped:
/// `EBADF`, as for any handle that does not exist. Returns its length.
pub fn refuse_fs_call(reply: &mut [u8]) -> usize {
    wisp_abi::hostfs::encode_reply_header(reply, EBADF, 0);
    wisp_abi::hostfs::REPLY_HEADER
}

/// WASI's `EBADF`.
const EBADF: u16 = 8;

/// In-memory streams: stdin from a buffer (owned, or borrowed so a caller
/// can replay it), output collected.
#[derive(Debug, Default, Clone)]
pub struct BufferIo<S = Vec<u8>> {
    stdin: S,
    pos: usize,
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: Vec<u8>,
}

impl BufferIo {
    /// Streams with empty stdin.
    pub fn new() -> BufferIo {
        BufferIo::with_stdin(Vec::new())
    }
}

impl<S: AsRef<[u8]>> BufferIo<S> {
    /// Streams whose stdin holds `stdin`.
    pub fn with_stdin(stdin: S) -> BufferIo<S> {
        BufferIo {
            stdin,
            pos: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }
}

impl<S: AsRef<[u8]>> GuestIo for BufferIo<S> {
    fn read_stdin(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.stdin.as_ref()[self.pos..];
        let n = buf.len().min(rest.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }

    fn stdin_ready(&mut self) -> bool {
        true
    }

    fn write_stdout(&mut self, data: &[u8]) -> io::Result<()> {
        self.stdout.extend_from_slice(data);
        Ok(())
    }

    fn write_stderr(&mut self, data: &[u8]) -> io::Result<()> {
        self.stderr.extend_from_slice(data);
        Ok(())
    }
}
