//! The files image: read-only directories the host places in guest memory
//! at boot, which the agent serves as preopened WASI directories. Being in
//! guest memory, they are part of every snapshot, and reading them costs no
//! exit.
//!
//! Layout (little-endian, every record 8-byte aligned):
//!
//! ```text
//! header   magic u64 = FILES_MAGIC | version u32 = 2 | mounts u32
//! mount    path_len u32 | entries u32 | flags u32 | 0 u32
//!          | path bytes                                    (pad to 8)
//! entry    kind u8 | 0 u8×3 | path_len u32 | data_len u64
//!          | path bytes | data bytes                         (pad to 8)
//! ```
//!
//! A mount's path is the guest directory name (e.g. `/data`). A mount with
//! [`MOUNT_HOST`] in its flags has no entries: it is a host directory
//! (`wisp run --dir`), served by the host over [`crate::hostfs`], whose
//! handle is its index among such mounts. An entry's path
//! is relative to its mount, `/`-separated, without `.`/`..` or empty
//! components; a parent directory comes before what it contains. A file's
//! data is its contents; a symlink's data is its target.
//!
//! Writing and reading are allocation-free: the host writes through a sink
//! closure, the agent iterates records in place.

/// `b"WISPFILE"` as a little-endian integer.
pub const FILES_MAGIC: u64 = u64::from_le_bytes(*b"WISPFILE");
/// Version of the layout.
pub const FILES_VERSION: u32 = 2;
/// Mount flag: a host directory, not files in guest memory.
pub const MOUNT_HOST: u32 = 1;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory (data empty).
    Dir,
    /// A regular file (data = contents).
    File,
    /// A symbolic link (data = target).
    Symlink,
}

impl EntryKind {
    fn code(self) -> u8 {
        match self {
            EntryKind::Dir => 0,
            EntryKind::File => 1,
            EntryKind::Symlink => 2,
        }
    }

    fn from_code(code: u8) -> Option<EntryKind> {
        match code {
            0 => Some(EntryKind::Dir),
            1 => Some(EntryKind::File),
            2 => Some(EntryKind::Symlink),
            _ => None,
        }
    }
}

/// A malformed files image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilesError(pub &'static str);

impl core::fmt::Display for FilesError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "malformed files image: {}", self.0)
    }
}

fn pad(len: usize) -> usize {
    (8 - len % 8) % 8
}

const ZEROS: [u8; 8] = [0; 8];

/// Writes the header of an image with `mounts` mounts.
pub fn write_header(out: &mut impl FnMut(&[u8]), mounts: u32) {
    out(&FILES_MAGIC.to_le_bytes());
    out(&FILES_VERSION.to_le_bytes());
    out(&mounts.to_le_bytes());
}

/// Writes a mount record with `flags`; its `entries` entries must follow.
pub fn write_mount(out: &mut impl FnMut(&[u8]), path: &[u8], entries: u32, flags: u32) {
    out(&(path.len() as u32).to_le_bytes());
    out(&entries.to_le_bytes());
    out(&flags.to_le_bytes());
    out(&0u32.to_le_bytes());
    out(path);
    out(&ZEROS[..pad(path.len())]);
}

/// Writes one entry of the current mount.
pub fn write_entry(out: &mut impl FnMut(&[u8]), kind: EntryKind, path: &[u8], data: &[u8]) {
    out(&[kind.code(), 0, 0, 0]);
    out(&(path.len() as u32).to_le_bytes());
    out(&(data.len() as u64).to_le_bytes());
    out(path);
    out(data);
    out(&ZEROS[..pad(path.len() + data.len())]);
}

/// A cursor over the image's bytes.
#[derive(Clone)]
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FilesError> {
        if n > self.bytes.len() {
            return Err(FilesError("truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, FilesError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, FilesError> {
        let lo = u64::from(self.u32()?);
        let hi = u64::from(self.u32()?);
        Ok(lo | hi << 32)
    }

    fn len(&mut self) -> Result<usize, FilesError> {
        usize::try_from(self.u64()?).map_err(|_| FilesError("length too large"))
    }
}

/// The mounts of an image, in order.
pub struct Mounts<'a> {
    reader: Reader<'a>,
    left: u32,
    /// Entries of the previous mount not yet skipped.
    pending: Option<Entries<'a>>,
}

/// Reads an image's header.
pub fn mounts(bytes: &[u8]) -> Result<Mounts<'_>, FilesError> {
    let mut reader = Reader { bytes };
    if reader.u64()? != FILES_MAGIC {
        return Err(FilesError("bad magic"));
    }
    if reader.u32()? != FILES_VERSION {
        return Err(FilesError("unknown version"));
    }
    let left = reader.u32()?;
    Ok(Mounts {
        reader,
        left,
        pending: None,
    })
}

/// One mounted directory.
pub struct Mount<'a> {
    /// Its guest path, e.g. `/data`.
    pub path: &'a [u8],
    /// [`MOUNT_HOST`] or 0.
    pub flags: u32,
    /// What it contains.
    pub entries: Entries<'a>,
}

impl<'a> Iterator for Mounts<'a> {
    type Item = Result<Mount<'a>, FilesError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Skip whatever the caller did not read of the previous mount.
        if let Some(previous) = self.pending.take() {
            let mut previous = previous;
            for entry in previous.by_ref() {
                if let Err(e) = entry {
                    return Some(Err(e));
                }
            }
            self.reader = previous.reader;
        }
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mount = (|| {
            let path_len = self.reader.u32()? as usize;
            let count = self.reader.u32()?;
            let flags = self.reader.u32()?;
            self.reader.u32()?;
            let path = self.reader.take(path_len)?;
            self.reader.take(pad(path_len))?;
            Ok((path, count, flags))
        })();
        match mount {
            Ok((path, count, flags)) => {
                let entries = Entries {
                    reader: self.reader.clone(),
                    left: count,
                };
                self.pending = Some(entries.clone());
                Some(Ok(Mount {
                    path,
                    flags,
                    entries,
                }))
            }
            Err(e) => {
                self.left = 0;
                Some(Err(e))
            }
        }
    }
}

/// The entries of one mount, in order.
#[derive(Clone)]
pub struct Entries<'a> {
    reader: Reader<'a>,
    left: u32,
}

/// One file, directory or symlink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// What it is.
    pub kind: EntryKind,
    /// Its path relative to the mount.
    pub path: &'a [u8],
    /// Contents (file) or target (symlink).
    pub data: &'a [u8],
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>, FilesError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let entry = (|| {
            let head = self.reader.take(4)?;
            let kind = EntryKind::from_code(head[0]).ok_or(FilesError("bad entry kind"))?;
            let path_len = self.reader.u32()? as usize;
            let data_len = self.reader.len()?;
            let path = self.reader.take(path_len)?;
            let data = self.reader.take(data_len)?;
            self.reader.take(pad(path_len + data_len))?;
            Ok(Entry { kind, path, data })
        })();
        if entry.is_err() {
            self.left = 0;
        }
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    fn image() -> Vec<u8> {
        let mut out = Vec::new();
        let mut sink = |b: &[u8]| out.extend_from_slice(b);
        write_header(&mut sink, 2);
        write_mount(&mut sink, b"/data", 3, 0);
        write_entry(&mut sink, EntryKind::Dir, b"sub", b"");
        write_entry(&mut sink, EntryKind::File, b"sub/a.txt", b"hello");
        write_entry(&mut sink, EntryKind::Symlink, b"link", b"sub/a.txt");
        write_mount(&mut sink, b"/etc/app", 1, 0);
        write_entry(&mut sink, EntryKind::File, b"config", b"x=1\n");
        out
    }

    #[test]
    fn round_trip_and_skipping_unread_entries() {
        let bytes = image();
        assert_eq!(bytes.len() % 8, 0);
        let mut mounts = mounts(&bytes).unwrap();
        let data = mounts.next().unwrap().unwrap();
        assert_eq!(data.path, b"/data");
        let entries: Vec<Entry<'_>> = data.entries.map(Result::unwrap).collect();
        assert_eq!(
            entries[1],
            Entry {
                kind: EntryKind::File,
                path: b"sub/a.txt",
                data: b"hello"
            }
        );
        assert_eq!(entries[2].kind, EntryKind::Symlink);
        // The second mount is found whether or not the first was read.
        let etc = mounts.next().unwrap().unwrap();
        assert_eq!((etc.path, etc.flags), (&b"/etc/app"[..], 0));
        assert_eq!(etc.entries.count(), 1);
        assert!(mounts.next().is_none());

        let mut skipping = super::mounts(&bytes).unwrap();
        skipping.next().unwrap().unwrap();
        assert_eq!(skipping.next().unwrap().unwrap().path, b"/etc/app");
    }

    #[test]
    fn malformed_images_are_errors() {
        let bytes = image();
        assert_eq!(mounts(&bytes[..4]).err(), Some(FilesError("truncated")));
        let mut bad = bytes.clone();
        bad[0] ^= 1;
        assert_eq!(mounts(&bad).err(), Some(FilesError("bad magic")));
        // Cut inside the first file's data: every later read fails cleanly.
        for cut in 16..bytes.len() {
            let result: Result<Vec<_>, _> = mounts(&bytes[..cut])
                .unwrap()
                .map(|m| m.and_then(|m| m.entries.collect::<Result<Vec<_>, _>>()))
                .collect();
            assert!(result.is_err(), "cut at {cut}");
        }
        let mut kind = bytes.clone();
        kind[16 + 16 + 8] = 9; // first entry's kind
        let first = mounts(&kind).unwrap().next().unwrap().unwrap();
        assert_eq!(
            first.entries.clone().next().unwrap().err(),
            Some(FilesError("bad entry kind"))
        );
    }
}
