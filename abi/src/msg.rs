//! Messages carried over the channel's virtqueues.
//!
//! Each buffer holds exactly one message: an 8-byte header (`kind: u32`,
//! `len: u32`, little-endian) followed by `len` payload bytes. Payload
//! encodings are fixed-width little-endian integers and length-prefixed byte
//! strings. The host decodes guest-written messages with [`decode`] and
//! [`Reader`], which bound every length by the bytes actually present.

/// Bytes of the message header.
pub const HEADER_LEN: usize = 8;

/// Length of the per-invocation random seed.
pub const SEED_LEN: usize = 32;

/// What a message is. Guest→host kinds are below `0x100`, host→guest above.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Guest→host: the agent is initialised and the module instantiated; it
    /// waits for a request. This is the point a snapshot captures. No payload.
    Ready = 0x01,
    /// Guest→host: bytes the module wrote to fd 1.
    Stdout = 0x02,
    /// Guest→host: bytes the module wrote to fd 2.
    Stderr = 0x03,
    /// Guest→host: the module is blocked reading fd 0; fill the rx queue with
    /// [`Kind::Stdin`] / [`Kind::StdinEof`]. No payload.
    StdinRequest = 0x04,
    /// Guest→host: the module exited; payload is the `i32` exit code.
    Exit = 0x05,
    /// Guest→host: the module trapped; payload is a UTF-8 description.
    Trap = 0x06,
    /// Guest→host: the agent could not run the module (link error, bad
    /// artifact, out of memory…); payload is a UTF-8 description.
    Error = 0x07,
    /// Guest→host: the module needed more memory than the VM has; payload is
    /// a UTF-8 description.
    OutOfMemory = 0x08,
    /// Guest→host: the module is idle until a deadline (`poll_oneoff` on a
    /// clock); payload is the `u64` nanoseconds to wait. The host sleeps
    /// (bounded by the invocation's timeout) instead of the guest spinning.
    Sleep = 0x09,
    /// Guest→host: an operation on a host directory
    /// ([`crate::hostfs::Call`]); answered by one [`Kind::FsReply`] in the
    /// same exit.
    FsCall = 0x0A,
    /// Host→guest: an invocation; payload encoded by [`encode_request`].
    Request = 0x101,
    /// Host→guest: stdin bytes.
    Stdin = 0x102,
    /// Host→guest: stdin is at end of file. No payload.
    StdinEof = 0x103,
    /// Host→guest: the answer to a [`Kind::FsCall`] (see [`crate::hostfs`]).
    FsReply = 0x104,
}

impl Kind {
    /// Every kind, in the order of their values.
    pub const ALL: [Kind; 14] = [
        Kind::Ready,
        Kind::Stdout,
        Kind::Stderr,
        Kind::StdinRequest,
        Kind::Exit,
        Kind::Trap,
        Kind::Error,
        Kind::OutOfMemory,
        Kind::Sleep,
        Kind::FsCall,
        Kind::Request,
        Kind::Stdin,
        Kind::StdinEof,
        Kind::FsReply,
    ];

    /// Decodes a header's kind field.
    pub fn from_u32(value: u32) -> Option<Kind> {
        Some(match value {
            0x01 => Kind::Ready,
            0x02 => Kind::Stdout,
            0x03 => Kind::Stderr,
            0x04 => Kind::StdinRequest,
            0x05 => Kind::Exit,
            0x06 => Kind::Trap,
            0x07 => Kind::Error,
            0x08 => Kind::OutOfMemory,
            0x09 => Kind::Sleep,
            0x0A => Kind::FsCall,
            0x101 => Kind::Request,
            0x102 => Kind::Stdin,
            0x103 => Kind::StdinEof,
            0x104 => Kind::FsReply,
            _ => return None,
        })
    }
}

/// Why a message could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the header or a field needs.
    Truncated,
    /// The header's kind is not a [`Kind`].
    UnknownKind(u32),
    /// The header's length exceeds the buffer.
    BadLength(u32),
    /// Bytes left over after the last field.
    TrailingBytes,
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Truncated => write!(f, "message truncated"),
            DecodeError::UnknownKind(kind) => write!(f, "unknown message kind {kind:#x}"),
            DecodeError::BadLength(len) => write!(f, "message length {len} exceeds its buffer"),
            DecodeError::TrailingBytes => write!(f, "trailing bytes after message fields"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Splits a buffer into its message kind and payload.
pub fn decode(buf: &[u8]) -> Result<(Kind, &[u8]), DecodeError> {
    let mut r = Reader::new(buf);
    let kind = r.u32()?;
    let len = r.u32()?;
    let kind = Kind::from_u32(kind).ok_or(DecodeError::UnknownKind(kind))?;
    let payload = r
        .bytes(len as usize)
        .map_err(|_| DecodeError::BadLength(len))?;
    Ok((kind, payload))
}

/// Writes a header for a `len`-byte payload at the start of `buf` and
/// returns the total message length. `buf` must hold at least
/// [`HEADER_LEN`] bytes.
pub fn encode_header(buf: &mut [u8], kind: Kind, len: usize) -> usize {
    buf[..4].copy_from_slice(&(kind as u32).to_le_bytes());
    buf[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    HEADER_LEN + len
}

/// A bounds-checked cursor over a payload.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Takes the next `len` bytes.
    pub fn bytes(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if len > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(len);
        self.buf = tail;
        Ok(head)
    }

    /// Takes a little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Takes a little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.bytes(8)?);
        Ok(u64::from_le_bytes(a))
    }

    /// Takes a `u32`-length-prefixed byte string.
    pub fn string(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        self.bytes(len)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

/// A bounds-checked cursor that writes into a buffer.
pub struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

/// The buffer is too small for what was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overflow;

impl<'a> Writer<'a> {
    /// Starts writing at the beginning of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, data: &[u8]) -> Result<(), Overflow> {
        let end = self.pos.checked_add(data.len()).ok_or(Overflow)?;
        self.buf
            .get_mut(self.pos..end)
            .ok_or(Overflow)?
            .copy_from_slice(data);
        self.pos = end;
        Ok(())
    }

    /// Appends a little-endian `u32`.
    pub fn u32(&mut self, v: u32) -> Result<(), Overflow> {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends a little-endian `u64`.
    pub fn u64(&mut self, v: u64) -> Result<(), Overflow> {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends a `u32`-length-prefixed byte string.
    pub fn string(&mut self, s: &[u8]) -> Result<(), Overflow> {
        let len = u32::try_from(s.len()).map_err(|_| Overflow)?;
        self.u32(len)?;
        self.bytes(s)
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.pos
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }
}

/// An invocation as the host sends it. Strings are raw bytes (WASI passes
/// them through without requiring UTF-8); env entries are `KEY=VALUE`.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// Wall-clock time when the host sent the request, in ns since the epoch.
    pub realtime_ns: u64,
    /// Fresh entropy for `random_get`; never reused across invocations.
    pub seed: [u8; SEED_LEN],
    /// `argv`, including `argv[0]`.
    pub args: StrList<'a>,
    /// The environment.
    pub env: StrList<'a>,
}

/// A decoded, already validated list of length-prefixed strings.
#[derive(Clone, Copy, Debug)]
pub struct StrList<'a> {
    count: u32,
    bytes: &'a [u8],
}

impl<'a> StrList<'a> {
    /// Number of strings.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Total bytes of all strings (without prefixes).
    pub fn total_bytes(&self) -> usize {
        self.bytes.len() - 4 * self.count as usize
    }

    /// The strings in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut r = Reader::new(self.bytes);
        // Validated by `take`, so `string` cannot fail here.
        (0..self.count).map_while(move |_| r.string().ok())
    }

    fn take(r: &mut Reader<'a>) -> Result<StrList<'a>, DecodeError> {
        let count = r.u32()?;
        let start = r.buf;
        for _ in 0..count {
            r.string()?;
        }
        let used = start.len() - r.buf.len();
        Ok(StrList {
            count,
            bytes: &start[..used],
        })
    }
}

/// Most bytes a [`Kind::Request`] payload may take: one channel buffer,
/// less the message header.
pub const MAX_REQUEST: usize = crate::layout::CHANNEL_BUF_SIZE as usize - HEADER_LEN;

/// Bytes [`encode_request`] writes for `args` and `env` (saturating, so a
/// caller can compare it with [`MAX_REQUEST`] whatever it is given).
pub fn request_len<A: AsRef<[u8]>, E: AsRef<[u8]>>(args: &[A], env: &[E]) -> usize {
    // A count, then each string with its length prefix.
    fn list<S: AsRef<[u8]>>(strings: &[S]) -> usize {
        strings
            .iter()
            .fold(4usize, |n, s| n.saturating_add(4 + s.as_ref().len()))
    }
    (8 + SEED_LEN)
        .saturating_add(list(args))
        .saturating_add(list(env))
}

/// Encodes a [`Kind::Request`] payload into `buf` (the caller writes the
/// header) and returns its length.
pub fn encode_request<A, E>(
    buf: &mut [u8],
    realtime_ns: u64,
    seed: &[u8; SEED_LEN],
    args: &[A],
    env: &[E],
) -> Result<usize, Overflow>
where
    A: AsRef<[u8]>,
    E: AsRef<[u8]>,
{
    let mut w = Writer::new(buf);
    w.u64(realtime_ns)?;
    w.bytes(seed)?;
    w.u32(u32::try_from(args.len()).map_err(|_| Overflow)?)?;
    for a in args {
        w.string(a.as_ref())?;
    }
    w.u32(u32::try_from(env.len()).map_err(|_| Overflow)?)?;
    for e in env {
        w.string(e.as_ref())?;
    }
    Ok(w.len())
}

/// Decodes a [`Kind::Request`] payload.
pub fn decode_request(payload: &[u8]) -> Result<Request<'_>, DecodeError> {
    let mut r = Reader::new(payload);
    let realtime_ns = r.u64()?;
    let mut seed = [0u8; SEED_LEN];
    seed.copy_from_slice(r.bytes(SEED_LEN)?);
    let args = StrList::take(&mut r)?;
    let env = StrList::take(&mut r)?;
    r.finish()?;
    Ok(Request {
        realtime_ns,
        seed,
        args,
        env,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip() {
        let mut buf = [0u8; 256];
        let seed = [7u8; SEED_LEN];
        let (header, body) = buf.split_at_mut(HEADER_LEN);
        let n = encode_request(body, 42, &seed, &["prog", "a b"], &["K=V"]).unwrap();
        let total = encode_header(header, Kind::Request, n);
        let (kind, payload) = decode(&buf[..total]).unwrap();
        assert_eq!(kind, Kind::Request);
        let req = decode_request(payload).unwrap();
        assert_eq!(req.realtime_ns, 42);
        assert_eq!(req.seed, seed);
        let args: [&[u8]; 2] = [b"prog", b"a b"];
        assert!(req.args.iter().eq(args.iter().copied()));
        assert_eq!(req.args.total_bytes(), 7);
        assert!(req.env.iter().eq([&b"K=V"[..]].iter().copied()));
    }

    #[test]
    fn request_overflow_is_an_error() {
        let mut buf = [0u8; 40];
        let seed = [0u8; SEED_LEN];
        assert_eq!(
            encode_request(&mut buf, 0, &seed, &["x"; 10], &[""; 0]),
            Err(Overflow)
        );
    }

    #[test]
    fn hostile_lengths_are_rejected() {
        // Header claims more payload than the buffer holds.
        let mut buf = [0u8; 16];
        encode_header(&mut buf, Kind::Stdout, 100);
        assert_eq!(decode(&buf), Err(DecodeError::BadLength(100)));
        // Unknown kind.
        buf[..4].copy_from_slice(&0xdead_u32.to_le_bytes());
        assert_eq!(decode(&buf), Err(DecodeError::UnknownKind(0xdead)));
        // A string count far beyond the payload.
        let mut payload = [0u8; 8 + SEED_LEN + 4];
        payload[8 + SEED_LEN..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_request(&payload).unwrap_err(),
            DecodeError::Truncated
        );
        // Too short for a header.
        assert_eq!(decode(&[1, 0, 0]), Err(DecodeError::Truncated));
    }

    #[test]
    fn request_len_is_what_encoding_writes() {
        let mut buf = [0u8; 512];
        let args: [&[u8]; 2] = [b"fn", b"arg one"];
        let env: [&[u8]; 3] = [b"A=1", b"B=", b"LONGER=value"];
        let n = encode_request(&mut buf, 7, &[1; SEED_LEN], &args, &env).unwrap();
        assert_eq!(request_len(&args, &env), n);
        let none: [&[u8]; 0] = [];
        let n = encode_request(&mut buf, 7, &[1; SEED_LEN], &none, &none).unwrap();
        assert_eq!(request_len(&none, &none), n);
    }
}
