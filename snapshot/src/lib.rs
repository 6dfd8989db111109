//! The on-disk format of a wisp micro-VM snapshot.
//!
//! A snapshot is a directory holding three files:
//!
//! - `manifest.json` ([`Manifest`]): human-readable; what built the snapshot
//!   ([`Compat`]), the CPU features its code may use ([`CpuFeatures`]), and
//!   where everything else is, with xxh3-64 checksums;
//! - `state.bin`: named sections, each one component's state serialized
//!   with postcard (each VMM component persists its own state, as in
//!   Firecracker's `persist` pattern);
//! - `memory`: the guest memory as a sparse file, exactly as long as guest
//!   memory; only pages that are not all zero are written (merged into
//!   [`Extent`]s), everything else is a hole.
//!
//! [`Builder`] writes a snapshot atomically (a temporary directory renamed
//! into place once complete and fsynced); [`Snapshot::open`] verifies all
//! of one before handing it out. A snapshot is never repaired: every error
//! about one says it must be recreated.
//!
//! ```no_run
//! # fn main() -> Result<(), wisp_snapshot::Error> {
//! use std::path::Path;
//! use wisp_snapshot::{Builder, Compat, CpuFeatures, Snapshot};
//!
//! let compat = Compat {
//!     wisp_version: "0.1.0".into(),
//!     wasmtime_version: "48.0.8".into(),
//!     abi_version: 1,
//!     agent_hash: "0123abcd".into(),
//! };
//! let guest_memory = vec![0u8; 16 << 20];
//! let mut b = Builder::new(Path::new("/var/lib/wisp/hello"))?;
//! b.section("vcpu", &[0u64; 18])?;
//! b.memory(&guest_memory)?;
//! b.commit(&compat, &CpuFeatures::host())?;
//!
//! let snap = Snapshot::open(Path::new("/var/lib/wisp/hello"), &compat, &CpuFeatures::host())?;
//! let regs: [u64; 18] = snap.section("vcpu")?;
//! # Ok(())
//! # }
//! ```

mod builder;
mod cpu;
mod error;
mod manifest;
mod memory;
mod snapshot;

pub use builder::Builder;
pub use cpu::CpuFeatures;
pub use error::Error;
pub use manifest::{
    Compat, Manifest, MemoryEntry, SectionEntry, FORMAT_VERSION, MAGIC, MANIFEST_FILE, MEMORY_FILE,
    STATE_FILE,
};
pub use memory::{cache_in_huge_folios, Extent, PAGE_SIZE};
pub use snapshot::{FileStamp, MemoryCheck, Snapshot};

#[cfg(test)]
mod testutil {
    use std::path::Path;

    use crate::Compat;

    /// A [`Compat`] for tests.
    pub fn compat() -> Compat {
        Compat {
            wisp_version: "0.1.0".into(),
            wasmtime_version: "48.0.8".into(),
            abi_version: 1,
            agent_hash: "0123456789abcdef".into(),
        }
    }

    /// The sorted names in directory `dir`.
    pub fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}
