//! The crate's error type.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::digest::Digest;

/// Why an image-store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The filesystem failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// A stored blob no longer hashes to its name. It has been moved to the
    /// store's quarantine; the image (or artifact) must be imported (or
    /// rebuilt) again.
    #[error("stored blob {digest} is corrupt (its content no longer matches its digest); it was quarantined: re-import the image (or rebuild the artifact)")]
    Corrupt {
        /// The blob's name.
        digest: Digest,
    },
    /// A blob an image refers to is not in the store.
    #[error("blob {0} is missing from the store: re-import the image")]
    MissingBlob(Digest),
    /// Content being imported does not match the digest (or size) it was
    /// announced with.
    #[error("{what}: expected {expected}, got {actual}")]
    Mismatch {
        /// Which content.
        what: String,
        /// What the descriptor said.
        expected: String,
        /// What the content is.
        actual: String,
    },
    /// No image matches the reference.
    #[error("no image `{0}` in the store")]
    NotFound(String),
    /// A digest prefix matches several images.
    #[error("`{reference}` matches several images ({}): give more of the digest", .candidates.join(", "))]
    Ambiguous {
        /// The prefix as given.
        reference: String,
        /// The digests it matches.
        candidates: Vec<String>,
    },
    /// A reference that is neither `name[:tag]` nor a digest.
    #[error("invalid image reference `{reference}`: {reason}")]
    InvalidReference {
        /// As given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A digest that is not `sha256:<64 lowercase hex>`.
    #[error("invalid digest `{0}`: wisp stores only sha256:<64 lowercase hex digits>")]
    InvalidDigest(String),
    /// A module that is not a binary WebAssembly module.
    #[error("not a WebAssembly module: {0}")]
    NotWasm(String),
    /// A manifest, index, config or layout that wisp cannot use.
    #[error("{0}")]
    InvalidImage(String),
    /// A file layer wisp refuses: an entry it may not hold, a stream that
    /// is not a whole tar, or a bound of [`crate::limits`] exceeded. Checked
    /// at import and build, and again whenever the layer is read.
    #[error("file layer {layer}: {}{problem}", entry_prefix(.entry.as_deref()))]
    InvalidLayer {
        /// The layer's digest.
        layer: Digest,
        /// The offending entry, as the tar names it (`None` when the
        /// stream as a whole is at fault).
        entry: Option<PathBuf>,
        /// What is wrong.
        problem: LayerProblem,
    },
    /// A file under the directory `wisp image build --files` was given
    /// that an image cannot hold.
    #[error("{}: {problem}", .path.display())]
    InvalidFile {
        /// The file on the host.
        path: PathBuf,
        /// What is wrong.
        problem: LayerProblem,
    },
    /// A file wisp was to read (a store file, or a source of an import) is
    /// not a regular file. It is refused before a byte is read, so a FIFO
    /// or a device can never block an import or the daemon.
    #[error("{} is {kind}, not a regular file", .path.display())]
    NotRegularFile {
        /// The file.
        path: PathBuf,
        /// What it is instead (`a FIFO`, `a directory`, ...).
        kind: &'static str,
    },
    /// The store's lock stayed held by someone else for longer than the
    /// store's lock timeout.
    #[error("the image store {} is busy: another wisp process has held its lock ({}) for {waited:.1?}; try again later", .root.display(), .root.join("lock").display())]
    Busy {
        /// The store's directory.
        root: PathBuf,
        /// How long this operation waited.
        waited: Duration,
    },
    /// A setting read from the environment that wisp cannot use.
    #[error("{name}={value:?}: {reason}")]
    InvalidSetting {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The image is in use by deployed functions.
    #[error("image {reference} is pinned by deployed function(s) {}: delete or redeploy them first", .functions.join(", "))]
    Pinned {
        /// The image.
        reference: String,
        /// The functions that use it.
        functions: Vec<String>,
    },
    /// The destination of an export already exists.
    #[error("{} already exists and is not an empty directory", .0.display())]
    Exists(PathBuf),
    /// A name that cannot be a pin (pins are named after functions, or
    /// `function@version`).
    #[error("invalid function name `{0}` for a pin")]
    InvalidPinName(String),
}

/// What is wrong with one entry of a file layer (or one file of a
/// directory being built into an image), or with a layer's stream as a
/// whole. Part of [`Error::InvalidLayer`] and [`Error::InvalidFile`], which
/// say where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayerProblem {
    /// A `..` component: it could reach outside the image.
    #[error("has a `..` component: paths must stay inside the image")]
    ParentDir,
    /// A name longer than [`crate::limits::MAX_PATH_BYTES`].
    #[error("has a path longer than {limit} bytes")]
    PathTooLong {
        /// The bound.
        limit: usize,
    },
    /// A name (or link target) that is not UTF-8: WASI paths are strings.
    #[error("has a name or link target that is not UTF-8")]
    NotUtf8,
    /// A non-directory entry naming the image's root.
    #[error("names the image root, which can only be a directory")]
    Root,
    /// A character or block device.
    #[error("is a device node: an image holds only files, directories and links")]
    Device,
    /// A FIFO.
    #[error("is a FIFO: an image holds only files, directories and links")]
    Fifo,
    /// A socket.
    #[error("is a socket: an image holds only files, directories and links")]
    Socket,
    /// A GNU sparse file (old GNU or PAX format).
    #[error("is a GNU sparse file, which wisp does not unpack: write the layer without --sparse")]
    Sparse,
    /// Another tar entry type (contiguous files are read as regular ones).
    #[error("has tar entry type {:?}, which an image cannot hold", char::from(*.0))]
    UnsupportedType(u8),
    /// A hard link whose target is not an earlier regular file of the image.
    #[error("is a hard link to `{}`, which is not an earlier regular file of the image", .0.display())]
    HardLink(PathBuf),
    /// A link with no target.
    #[error("is a link without a target")]
    NoLinkTarget,
    /// An entry under a file or a symlink.
    #[error("is under `{}`, which is not a directory", .0.display())]
    ParentNotDir(PathBuf),
    /// A whiteout (`.wh.NAME`) hiding no possible name (`.wh.`, `.wh..`,
    /// `.wh..wh.x` other than the opaque marker).
    #[error("is a whiteout of no valid name")]
    BadWhiteout,
    /// A file named like a whiteout, in a directory being built into an
    /// image: it would vanish when the layer is unpacked.
    #[error("has a name starting with `.wh.`, which OCI layers reserve for whiteouts")]
    ReservedName,
    /// Not a tar (or not gzip where gzip was announced), or damaged.
    #[error("is not a readable tar ({0})")]
    NotTar(String),
    /// The tar ends inside an entry's data.
    #[error("is truncated: the tar ends {read} bytes into its {declared} bytes of data")]
    Truncated {
        /// The size its header declares.
        declared: u64,
        /// The bytes there were.
        read: u64,
    },
    /// The image's files would unpack to more than the bound.
    #[error("takes the image past {limit} bytes unpacked (the most an image's files may take)")]
    TooLarge {
        /// The bound.
        limit: u64,
    },
    /// The image would hold more entries than the bound.
    #[error("takes the image past {limit} entries (the most an image may hold)")]
    TooManyEntries {
        /// The bound.
        limit: u64,
    },
    /// A compressed layer expanding more than the bound: a decompression
    /// bomb.
    #[error("expands more than {limit}:1 ({unpacked} bytes from {compressed} compressed): refused as a decompression bomb")]
    Expansion {
        /// The bound.
        limit: u64,
        /// Bytes out when it was refused.
        unpacked: u64,
        /// Compressed bytes in by then.
        compressed: u64,
    },
    /// Not a directory (the root of `--files`).
    #[error("is not a directory")]
    NotADirectory,
}

fn entry_prefix(entry: Option<&Path>) -> String {
    entry.map_or_else(String::new, |p| format!("entry `{}`: ", p.display()))
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a context to an I/O error.
pub(crate) trait IoContext<T> {
    /// Wraps the error with `context()`.
    fn ctx<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context().into(),
            source,
        })
    }
}

impl Error {
    /// Whether the error is a full disk.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::Io { source, .. }
            if source.raw_os_error() == Some(28) || source.kind() == std::io::ErrorKind::StorageFull)
    }
}
