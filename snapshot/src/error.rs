//! The errors of writing and opening a snapshot.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong writing or opening a snapshot.
///
/// Messages are meant for a user at a terminal. Every error found while
/// opening a snapshot says that the snapshot has to be recreated: nothing in
/// a snapshot can be repaired in place.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `"reading"` or `"creating"`.
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// There is no snapshot at the given directory.
    #[error("no snapshot at {} (manifest.json missing)", .0.display())]
    NotFound(PathBuf),

    /// The manifest is not a wisp snapshot manifest.
    #[error("{} is not a wisp snapshot ({reason}): recreate the snapshot", path.display())]
    NotASnapshot {
        /// The manifest's path.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },

    /// The snapshot uses a format version this build does not read.
    #[error(
        "snapshot format version {found} is not supported (this build reads version \
         {supported}): recreate the snapshot"
    )]
    Version {
        /// The snapshot's format version.
        found: u32,
        /// The one this build reads ([`crate::FORMAT_VERSION`]).
        supported: u32,
    },

    /// The snapshot was made by a different build (see [`crate::Compat`]).
    #[error(
        "snapshot was made by {} {found}, this is {expected}: recreate the snapshot",
        crate::manifest::compat_label(field)
    )]
    Incompatible {
        /// The [`crate::Compat`] field that differs, e.g. `"wasmtime_version"`.
        field: &'static str,
        /// The snapshot's value.
        found: String,
        /// This build's value.
        expected: String,
    },

    /// The snapshot's code may use CPU features this host lacks.
    #[error(
        "snapshot needs CPU features this host lacks ({}): recreate the snapshot on this host",
        .0.join(", ")
    )]
    MissingCpuFeatures(Vec<String>),

    /// A checksum does not match: the data changed after it was written.
    #[error("checksum mismatch in {what}: the snapshot is corrupt, recreate it")]
    Checksum {
        /// What was checked, e.g. "section `vcpu`" or "guest memory".
        what: String,
    },

    /// A file is shorter than the manifest says.
    #[error("{what} is truncated: the snapshot is corrupt, recreate it")]
    Truncated {
        /// The file, e.g. `"state.bin"`.
        what: String,
    },

    /// The snapshot is inconsistent in some other way.
    #[error("the snapshot is corrupt ({0}): recreate it")]
    Corrupt(String),

    /// A section the caller asked for is not in the snapshot.
    #[error("snapshot has no section `{0}`: it was made by a different build, recreate it")]
    MissingSection(String),

    /// Two sections have the same name.
    #[error("section `{0}` appears more than once in the snapshot: recreate it")]
    DuplicateSection(String),

    /// The [`crate::Builder`] was used wrongly (bad memory length, no memory
    /// image, working set out of range, refusing to replace a non-snapshot
    /// directory…). This is a bug in the caller, not a property of a
    /// snapshot on disk.
    #[error("cannot write snapshot: {0}")]
    Invalid(String),

    /// A section's value could not be serialized.
    #[error("encoding snapshot state: {0}")]
    Encode(String),

    /// A section's payload does not decode as the requested type.
    #[error(
        "decoding snapshot section `{section}`: {message}: the snapshot does not match this \
         build, recreate it"
    )]
    Decode {
        /// The section's name.
        section: String,
        /// The decoder's message.
        message: String,
    },
}

impl Error {
    /// An [`Error::Io`] for `op` on `path`.
    pub(crate) fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
        move |source| Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_well() {
        let e = Error::Incompatible {
            field: "wasmtime_version",
            found: "47.0.0".into(),
            expected: "48.0.8".into(),
        };
        assert_eq!(
            e.to_string(),
            "snapshot was made by wasmtime 47.0.0, this is 48.0.8: recreate the snapshot"
        );
        let e = Error::io("reading", Path::new("/x/manifest.json"))(io::Error::from(
            io::ErrorKind::NotFound,
        ));
        assert!(e.to_string().starts_with("reading /x/manifest.json: "));
        let e = Error::Checksum {
            what: "section `vcpu`".into(),
        };
        assert_eq!(
            e.to_string(),
            "checksum mismatch in section `vcpu`: the snapshot is corrupt, recreate it"
        );
        let e = Error::MissingCpuFeatures(vec!["avx2".into(), "bmi2".into()]);
        assert!(e.to_string().contains("(avx2, bmi2)"));
    }
}
