//! `manifest.json`: what a snapshot holds and what built it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cpu::CpuFeatures;
use crate::memory::Extent;
use crate::Error;

/// The value of [`Manifest::magic`].
pub const MAGIC: &str = "wisp-snapshot";

/// The snapshot format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The manifest's file name inside a snapshot directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The section payloads' file name inside a snapshot directory.
pub const STATE_FILE: &str = "state.bin";

/// The guest memory's file name inside a snapshot directory.
pub const MEMORY_FILE: &str = "memory";

/// The contents of `manifest.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Always [`MAGIC`].
    pub magic: String,
    /// The format of the snapshot ([`FORMAT_VERSION`] when written by this build).
    pub format_version: u32,
    /// What built the snapshot.
    pub compat: Compat,
    /// The CPU features the snapshot's code may use.
    pub cpu: CpuFeatures,
    /// When the snapshot was committed, in seconds since the Unix epoch.
    pub created_unix: u64,
    /// Free-form key/value notes (e.g. the module's path).
    pub meta: BTreeMap<String, String>,
    /// The sections of `state.bin`, in file order.
    pub sections: Vec<SectionEntry>,
    /// The guest memory file.
    pub memory: MemoryEntry,
}

/// What built the snapshot. Loading requires exact equality of every field.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Compat {
    /// The version of wisp.
    pub wisp_version: String,
    /// The version of wasmtime that compiled the snapshot's code.
    pub wasmtime_version: String,
    /// The host/guest ABI version (`wisp_abi::ABI_VERSION`).
    pub abi_version: u32,
    /// A hash of the guest agent binary.
    pub agent_hash: String,
}

/// One named section of `state.bin`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SectionEntry {
    /// The section's name, unique in the snapshot.
    pub name: String,
    /// Where its payload starts in `state.bin`.
    pub offset: u64,
    /// Its payload's length in bytes.
    pub len: u64,
    /// The xxh3-64 of its payload, as 16 lowercase hex digits.
    pub xxh3: String,
}

/// The guest memory file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MemoryEntry {
    /// Its file name inside the snapshot directory ([`MEMORY_FILE`]).
    pub file: String,
    /// The guest memory's size in bytes, which is also the file's length.
    pub size: u64,
    /// The runs of pages that hold data, sorted and non-overlapping; every
    /// other page is zero and a hole in the file.
    pub extents: Vec<Extent>,
    /// The xxh3-64 of the extents' bytes in order, as 16 lowercase hex digits.
    pub xxh3: String,
    /// The pages to populate eagerly on restore, sorted and non-overlapping.
    pub working_set: Vec<Extent>,
}

/// Formats an xxh3-64 checksum as it appears in the manifest.
pub(crate) fn hex(sum: u64) -> String {
    format!("{sum:016x}")
}

/// The words [`Error::Incompatible`] uses for a [`Compat`] field.
pub(crate) fn compat_label(field: &str) -> &str {
    match field {
        "wisp_version" => "wisp",
        "wasmtime_version" => "wasmtime",
        "abi_version" => "ABI version",
        "agent_hash" => "agent build",
        other => other,
    }
}

impl Compat {
    /// Checks that `self` (a snapshot's) equals `expected` (this build's),
    /// field by field.
    pub fn check(&self, expected: &Compat) -> Result<(), Error> {
        let fields: [(&'static str, String, String); 4] = [
            (
                "wisp_version",
                self.wisp_version.clone(),
                expected.wisp_version.clone(),
            ),
            (
                "wasmtime_version",
                self.wasmtime_version.clone(),
                expected.wasmtime_version.clone(),
            ),
            (
                "abi_version",
                self.abi_version.to_string(),
                expected.abi_version.to_string(),
            ),
            (
                "agent_hash",
                self.agent_hash.clone(),
                expected.agent_hash.clone(),
            ),
        ];
        match fields.into_iter().find(|(_, found, exp)| found != exp) {
            Some((field, found, expected)) => Err(Error::Incompatible {
                field,
                found,
                expected,
            }),
            None => Ok(()),
        }
    }
}

impl Manifest {
    /// Parses a manifest read from `path`, checking its magic and format
    /// version before its structure (a newer format may be shaped
    /// differently, and deserves [`Error::Version`], not a parse error).
    pub(crate) fn parse(text: &str, path: &Path) -> Result<Manifest, Error> {
        let not_a_snapshot = |reason: String| Error::NotASnapshot {
            path: path.to_path_buf(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| not_a_snapshot(format!("invalid JSON: {e}")))?;
        match value.get("magic").and_then(|m| m.as_str()) {
            Some(MAGIC) => {}
            Some(other) => return Err(not_a_snapshot(format!("magic is {other:?}"))),
            None => return Err(not_a_snapshot("no magic".into())),
        }
        let found = value
            .get("format_version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| not_a_snapshot("no format_version".into()))?;
        if found != u64::from(FORMAT_VERSION) {
            return Err(Error::Version {
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported: FORMAT_VERSION,
            });
        }
        serde_json::from_value(value).map_err(|e| not_a_snapshot(format!("bad manifest: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::compat;

    #[test]
    fn compat_reports_the_first_differing_field() {
        compat().check(&compat()).unwrap();
        let mut other = compat();
        other.abi_version += 1;
        match compat().check(&other) {
            Err(Error::Incompatible {
                field: "abi_version",
                found,
                expected,
            }) => {
                assert_eq!(found, compat().abi_version.to_string());
                assert_eq!(expected, other.abi_version.to_string());
            }
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn parse_checks_magic_then_version() {
        let p = Path::new("m.json");
        assert!(matches!(
            Manifest::parse("not json", p),
            Err(Error::NotASnapshot { .. })
        ));
        assert!(matches!(
            Manifest::parse(r#"{"magic":"other","format_version":1}"#, p),
            Err(Error::NotASnapshot { .. })
        ));
        assert!(matches!(
            Manifest::parse(r#"{"magic":"wisp-snapshot","format_version":2,"x":[]}"#, p),
            Err(Error::Version {
                found: 2,
                supported: 1
            })
        ));
        assert!(matches!(
            Manifest::parse(r#"{"magic":"wisp-snapshot","format_version":1}"#, p),
            Err(Error::NotASnapshot { .. })
        ));
    }
}
