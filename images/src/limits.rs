//! Every bound the image store puts on what it reads, in one place.
//!
//! An image's files are unpacked into the host's memory at deploy and then
//! placed in the guest's memory (at most 4 GiB, shared with the module's
//! own heap), so a layer that unpacks to more than a guest could hold is
//! useless and, unbounded, lets one image take the daemon's memory. Every
//! bound is checked while the bytes stream in, before they are kept.

use std::time::Duration;

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
