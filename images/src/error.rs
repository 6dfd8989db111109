//! The crate's error type.

use std::path::PathBuf;
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
    /// A file layer holding something wisp refuses (an absolute path, a
    /// `..` component, a device node) or that is not a readable tar.
    #[error("file layer: {0}")]
    InvalidLayer(String),
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
    /// A name that cannot be a pin (pins are named after functions).
    #[error("invalid function name `{0}` for a pin")]
    InvalidPinName(String),
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
