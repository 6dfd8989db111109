//! Opening files that may not be what their name promises — store files
//! someone may have replaced, the sources of an import — without ever
//! blocking: a FIFO opened for reading blocks until a writer comes, one
//! opened for writing until a reader does, and a device may do anything.
//!
//! Every open here passes `O_NONBLOCK` (which makes the open of a FIFO
//! return at once, and has no effect on regular files), then checks with
//! `fstat` that it got a regular file before a byte is read or written.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::{fcntl, FcntlArg, OFlag};

use crate::error::{Error, IoContext, Result};

/// What a non-regular file is, for messages.
fn kind(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else {
        "something else"
    }
}

/// Opens `path` with `options` plus `O_NONBLOCK | O_NOCTTY` and checks it
/// is a regular file.
fn open_checked(path: &Path, options: &mut OpenOptions, what: &str) -> Result<File> {
    let file = match options
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            // A FIFO without a reader (opened for writing) or a socket
            // fails with ENXIO, a directory opened for writing with
            // EISDIR: say what it is rather than that.
            if let Ok(meta) = std::fs::metadata(path) {
                if !meta.is_file() {
                    return Err(Error::NotRegularFile {
                        path: path.to_path_buf(),
                        kind: kind(meta.file_type()),
                    });
                }
            }
            return Err(e).ctx(|| format!("{what} {}", path.display()));
        }
    };
    let meta = file
        .metadata()
        .ctx(|| format!("{what} {}", path.display()))?;
    if !meta.is_file() {
        return Err(Error::NotRegularFile {
            path: path.to_path_buf(),
            kind: kind(meta.file_type()),
        });
    }
    // Reads of a regular file ignore O_NONBLOCK; clear it anyway, so the
    // file is exactly what `File::open` would have returned.
    let flags = fcntl(&file, FcntlArg::F_GETFL)
        .map_err(io::Error::from)
        .ctx(|| format!("{what} {}", path.display()))?;
    let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
    fcntl(&file, FcntlArg::F_SETFL(flags))
        .map_err(io::Error::from)
        .ctx(|| format!("{what} {}", path.display()))?;
    Ok(file)
}

/// Opens `path` for reading; anything but a regular file is
/// [`Error::NotRegularFile`], never a blocked open. A missing file is an
/// [`Error::Io`] of kind `NotFound` (see [`is_not_found`]).
pub(crate) fn open_regular(path: &Path) -> Result<File> {
    open_checked(path, OpenOptions::new().read(true), "opening")
}

/// Opens (creating it if needed) `path` for writing without truncating it,
/// as [`open_regular`] does for reading: the store's lock file.
pub(crate) fn open_regular_for_lock(path: &Path) -> Result<File> {
    open_checked(
        path,
        OpenOptions::new().write(true).create(true).truncate(false),
        "opening",
    )
}

/// Reads the regular file `path` whole; more than `max` bytes is
/// [`Error::InvalidImage`] (these are JSON documents and small records read
/// whole, so their size is bounded before they are read).
pub(crate) fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>> {
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .ctx(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > max {
        return Err(Error::InvalidImage(format!(
            "{} is larger than {max} bytes, the most wisp reads of such a file",
            path.display()
        )));
    }
    Ok(bytes)
}

/// Whether `e` says a file does not exist.
pub(crate) fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
}

/// Opens the directory `path` (to fsync it) without blocking on whatever
/// may be there instead.
pub(crate) fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_DIRECTORY | OFlag::O_NONBLOCK).bits())
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn fifos_sockets_and_directories_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let socket = dir.path().join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let t0 = Instant::now();
        for (path, what) in [
            (&fifo, "a FIFO"),
            (&socket, "a socket"),
            (&dir.path().to_path_buf(), "a directory"),
        ] {
            for result in [
                open_regular(path).map(drop),
                open_regular_for_lock(path).map(drop),
                read_regular(path, 10).map(drop),
            ] {
                match result {
                    Err(Error::NotRegularFile { kind, .. }) => assert_eq!(kind, what),
                    other => panic!("{}: {other:?}", path.display()),
                }
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "nothing blocked");
        let char_dev = Path::new("/dev/null");
        assert!(matches!(
            read_regular(char_dev, 10),
            Err(Error::NotRegularFile {
                kind: "a character device",
                ..
            })
        ));
    }

    #[test]
    fn regular_files_read_normally_and_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read_regular(&path, 10).unwrap(), b"0123456789");
        let err = read_regular(&path, 9).unwrap_err();
        assert!(err.to_string().contains("larger than 9 bytes"), "{err}");
        let f = open_regular(&path).unwrap();
        let flags = OFlag::from_bits_truncate(fcntl(&f, FcntlArg::F_GETFL).unwrap());
        assert!(!flags.contains(OFlag::O_NONBLOCK));
        assert!(is_not_found(
            &open_regular(&dir.path().join("missing")).unwrap_err()
        ));
    }
}
