//! Host directories (`wisp run --dir`): the guest forwards every operation
//! on them to the host in one [`crate::msg::Kind::FsCall`] message and
//! waits for the [`crate::msg::Kind::FsReply`], in the same VM exit. The
//! host resolves every path itself, confined to the directory handle it is
//! relative to, and trusts nothing in a call: handles are looked up in its
//! own table, lengths are bounded by the message.
//!
//! A call is a 48-byte header, then two byte strings:
//!
//! ```text
//! op u8 | 0 u8×3 | h u32 | h2 u32 | flags u32 | a u64 | b u64 | c u64
//!       | len1 u32 | len2 u32 | s1 | s2
//! ```
//!
//! and a reply an errno (WASI's numbering, 0 for success), a value and
//! bytes: `errno u16 | 0 u16 | 0 u32 | value u64 | data`. What the fields
//! mean per operation is on [`Op`].

/// Bytes of a call's header.
pub const CALL_HEADER: usize = 48;
/// Bytes of a reply's header.
pub const REPLY_HEADER: usize = 16;

/// [`Op::Write`] flag: write at the end of the file, whatever the offset.
pub const WRITE_APPEND: u32 = 1;

/// The operations. `h`/`h2` are host handles (directories or files),
/// `path` is `s1` unless said otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// `path_open`: `h` dir, `flags` lookupflags, `a` oflags | fdflags << 16,
    /// `b` rights. Value: the new handle | filetype << 32.
    Open = 1,
    /// `fd_close` of `h`.
    Close,
    /// `fd_read`/`fd_pread`: `a` most bytes, `b` offset (the guest keeps
    /// the position). Data: what was read.
    Read,
    /// `fd_write`/`fd_pwrite` of `s1`: `b` offset, or the end of the file
    /// if `flags` has [`WRITE_APPEND`]. Value: bytes written; data: the
    /// offset after them, 8 bytes.
    Write,
    /// `fd_filestat_get`. Data: the 64-byte filestat.
    Filestat,
    /// `path_filestat_get`: `flags` lookupflags. Data: the filestat.
    PathFilestat,
    /// `fd_filestat_set_size`: `a` size.
    SetSize,
    /// `fd_filestat_set_times`: `a` atim, `b` mtim, `c` fstflags.
    SetTimes,
    /// `path_filestat_set_times`: `flags` lookupflags, `a` atim, `b` mtim,
    /// `c` fstflags.
    PathSetTimes,
    /// `fd_readdir`: `a` cookie, `b` buffer length. Data: dirent records.
    Readdir,
    /// `path_create_directory`.
    Mkdir,
    /// `path_remove_directory`.
    Rmdir,
    /// `path_unlink_file`.
    Unlink,
    /// `path_rename`: `s1` in `h` to `s2` in `h2`.
    Rename,
    /// `path_symlink`: `s2` in `h` becomes a link to `s1`.
    Symlink,
    /// `path_readlink`: `a` buffer length. Data: the target.
    Readlink,
    /// `path_link`: `s1` in `h` (`flags` lookupflags) to `s2` in `h2`.
    Link,
    /// `fd_sync`/`fd_datasync`.
    Sync,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        use Op::*;
        const ALL: [Op; 18] = [
            Open,
            Close,
            Read,
            Write,
            Filestat,
            PathFilestat,
            SetSize,
            SetTimes,
            PathSetTimes,
            Readdir,
            Mkdir,
            Rmdir,
            Unlink,
            Rename,
            Symlink,
            Readlink,
            Link,
            Sync,
        ];
        ALL.into_iter().find(|op| *op as u8 == v)
    }
}

/// One call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call<'a> {
    /// What to do.
    pub op: Op,
    /// The handle it is on.
    pub h: u32,
    /// A second handle (rename, link).
    pub h2: u32,
    /// Small flags (lookupflags, whence).
    pub flags: u32,
    /// First number.
    pub a: u64,
    /// Second number.
    pub b: u64,
    /// Third number.
    pub c: u64,
    /// First byte string (a path, or data to write).
    pub s1: &'a [u8],
    /// Second byte string (a second path).
    pub s2: &'a [u8],
}

impl<'a> Call<'a> {
    /// A call of `op` on `h` with everything else zero.
    pub fn new(op: Op, h: u32) -> Call<'a> {
        Call {
            op,
            h,
            h2: 0,
            flags: 0,
            a: 0,
            b: 0,
            c: 0,
            s1: &[],
            s2: &[],
        }
    }

    /// Bytes [`Call::encode`] writes.
    pub fn len(&self) -> usize {
        CALL_HEADER + self.s1.len() + self.s2.len()
    }

    /// Whether the call carries no strings.
    pub fn is_empty(&self) -> bool {
        self.s1.is_empty() && self.s2.is_empty()
    }

    /// Writes the call into `out` (at least [`Call::len`] bytes).
    pub fn encode(&self, out: &mut [u8]) -> Option<usize> {
        let len = self.len();
        let out = out.get_mut(..len)?;
        out[..4].copy_from_slice(&[self.op as u8, 0, 0, 0]);
        out[4..8].copy_from_slice(&self.h.to_le_bytes());
        out[8..12].copy_from_slice(&self.h2.to_le_bytes());
        out[12..16].copy_from_slice(&self.flags.to_le_bytes());
        out[16..24].copy_from_slice(&self.a.to_le_bytes());
        out[24..32].copy_from_slice(&self.b.to_le_bytes());
        out[32..40].copy_from_slice(&self.c.to_le_bytes());
        out[40..44].copy_from_slice(&(self.s1.len() as u32).to_le_bytes());
        out[44..48].copy_from_slice(&(self.s2.len() as u32).to_le_bytes());
        out[48..48 + self.s1.len()].copy_from_slice(self.s1);
        out[48 + self.s1.len()..].copy_from_slice(self.s2);
        Some(len)
    }

    /// Reads a call a guest sent: `None` if it is malformed.
    pub fn decode(bytes: &'a [u8]) -> Option<Call<'a>> {
        let head = bytes.get(..CALL_HEADER)?;
        let u32_at =
            |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let u64_at = |i: usize| u64::from(u32_at(i)) | u64::from(u32_at(i + 4)) << 32;
        let (len1, len2) = (u32_at(40) as usize, u32_at(44) as usize);
        let rest = &bytes[CALL_HEADER..];
        if rest.len() != len1.checked_add(len2)? {
            return None;
        }
        Some(Call {
            op: Op::from_u8(head[0])?,
            h: u32_at(4),
            h2: u32_at(8),
            flags: u32_at(12),
            a: u64_at(16),
            b: u64_at(24),
            c: u64_at(32),
            s1: &rest[..len1],
            s2: &rest[len1..],
        })
    }
}

/// Writes a reply header into `out[..REPLY_HEADER]`.
pub fn encode_reply_header(out: &mut [u8], errno: u16, value: u64) {
    out[..REPLY_HEADER].fill(0);
    out[..2].copy_from_slice(&errno.to_le_bytes());
    out[8..16].copy_from_slice(&value.to_le_bytes());
}

/// Splits a reply into errno, value and data; `None` if it is malformed.
pub fn decode_reply(bytes: &[u8]) -> Option<(u16, u64, &[u8])> {
    let head = bytes.get(..REPLY_HEADER)?;
    let errno = u16::from_le_bytes([head[0], head[1]]);
    let mut value = [0u8; 8];
    value.copy_from_slice(&head[8..16]);
    Some((errno, u64::from_le_bytes(value), &bytes[REPLY_HEADER..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_round_trip_and_malformed_ones_are_refused() {
        let call = Call {
            op: Op::Rename,
            h: 3,
            h2: 4,
            flags: 1,
            a: u64::MAX,
            b: 7,
            c: 9,
            s1: b"old",
            s2: b"dir/new",
        };
        let mut buf = [0u8; 128];
        let n = call.encode(&mut buf).unwrap();
        assert_eq!(Call::decode(&buf[..n]), Some(call));
        assert_eq!(call.encode(&mut buf[..n - 1]), None);
        assert_eq!(Call::decode(&buf[..n - 1]), None, "truncated string");
        assert_eq!(Call::decode(&buf[..20]), None, "truncated header");
        let mut bad = buf;
        bad[0] = 200;
        assert_eq!(Call::decode(&bad[..n]), None, "unknown op");
        let mut huge = buf;
        huge[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Call::decode(&huge[..n]), None, "lengths disagree");
    }

    #[test]
    fn replies_round_trip() {
        let mut buf = [0u8; 20];
        encode_reply_header(&mut buf, 44, 123);
        buf[16..].copy_from_slice(b"data");
        assert_eq!(decode_reply(&buf), Some((44, 123, &b"data"[..])));
        assert_eq!(decode_reply(&buf[..10]), None);
    }
}
