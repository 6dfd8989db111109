//! Every bound the image store puts on what it reads, in one place.
//!
//! An image's files are unpacked into the host's memory at deploy and then
//! placed in the guest's memory (at most 4 GiB, shared with the module's
//! own heap), so a layer that unpacks to more than a guest could hold is
//! useless and, unbounded, lets one image take the daemon's memory. Every
//! bound is checked while the bytes stream in, before they are kept.

use std::time::Duration;

/// Most bytes an image's file layers may unpack to, summed over its layers:
/// the uncompressed tar streams, headers included (so it also bounds long
/// names and PAX records). A quarter of the largest guest, which leaves the
/// module room to run; far more than the configs, assets and language
/// runtimes images carry (CPython's standard library is ~60 MiB).
pub const MAX_UNPACKED_BYTES: u64 = 1 << 30;

/// Most tar entries an image's file layers may hold, summed over its
/// layers (whiteouts and directories count). Each costs host memory and a
/// guest inode however small it is; CPython's standard library has ~10,000
/// files.
pub const MAX_ENTRIES: u64 = 100_000;

/// Most bytes of an entry's path (Linux's `PATH_MAX`): what a real file
/// system holds, and it bounds the work each entry costs (its ancestors are
/// looked up).
pub const MAX_PATH_BYTES: usize = 4096;

/// Most a compressed layer may expand: uncompressed bytes per compressed
/// byte consumed. Real layers compress 2-10:1; deflate cannot exceed
/// ~1032:1, which only runs of one byte (a decompression bomb) reach.
pub const MAX_EXPANSION_RATIO: u64 = 100;

/// Uncompressed bytes a compressed layer may produce before the ratio is
/// checked: small layers (an empty tar is 10 KiB of zeros that compress to
/// a few dozen bytes) legitimately exceed any ratio.
pub const EXPANSION_GRACE_BYTES: u64 = 1 << 20;

/// Most bytes of a JSON document read from a layout or the store (index,
/// manifest, config, `oci-layout`): the OCI distribution spec lets
/// registries refuse manifests over 4 MiB, and these are read whole.
pub const MAX_JSON_BYTES: u64 = 4 << 20;

/// How long an operation that changes the store waits for its lock before
/// failing with [`crate::Error::Busy`] (`WISP_IMAGE_LOCK_TIMEOUT` overrides
/// it). Changes take milliseconds, imports of large images seconds: a lock
/// held longer is a stuck process, and a bounded wait keeps it from
/// wedging every other user of the store.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment variable that overrides [`DEFAULT_LOCK_TIMEOUT`]
/// (`500ms`, `2s`, `1m`: a `humantime` duration).
pub const LOCK_TIMEOUT_ENV: &str = "WISP_IMAGE_LOCK_TIMEOUT";

/// The bounds an image's file layers are unpacked under. [`Limits::DEFAULT`]
/// is what the store uses; smaller ones are for tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// See [`MAX_UNPACKED_BYTES`].
    pub max_unpacked_bytes: u64,
    /// See [`MAX_ENTRIES`].
    pub max_entries: u64,
    /// See [`MAX_EXPANSION_RATIO`].
    pub max_expansion_ratio: u64,
    /// See [`EXPANSION_GRACE_BYTES`].
    pub expansion_grace_bytes: u64,
}

impl Limits {
    /// The documented defaults.
    pub const DEFAULT: Limits = Limits {
        max_unpacked_bytes: MAX_UNPACKED_BYTES,
        max_entries: MAX_ENTRIES,
        max_expansion_ratio: MAX_EXPANSION_RATIO,
        expansion_grace_bytes: EXPANSION_GRACE_BYTES,
    };
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::DEFAULT
    }
}
