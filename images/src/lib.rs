//! wisp's image store: content-addressed layers on local disk.
//!
//! A function image is an OCI image manifest listing a WebAssembly module
//! layer and optional file layers (configs, assets, a language runtime's
//! library), stored in an OCI image layout directory so that export is a
//! copy. Every blob is named by its SHA-256, written atomically and hashed
//! again on every read; a corrupt blob is quarantined and reported, never
//! used. Compiled code derived from a module is cached per host beside the
//! images, keyed so that another compiler or CPU rebuilds it. Pins record
//! the images deployed functions use, and garbage collection (with an
//! optional size budget, least recently used first) never removes them.
//!
//! - [`blobs`]: the blob store
//! - [`digest`], [`reference`]: names
//! - [`image`]: the image model and media types; [`layer`]: file layers
//!   and the checks they pass; [`limits`]: every bound, in one place
//! - [`store`]: the index of tagged images, pins, the lock
//! - [`oci`]: OCI image layout import and export (directory and tar)
//! - [`artifacts`]: the compiled-artifact cache (memory and disk)
//! - [`gc`]: garbage collection
#![forbid(unsafe_code)]

pub mod artifacts;
pub mod blobs;
pub mod digest;
pub mod error;
mod fsx;
pub mod gc;
pub mod image;
pub mod layer;
pub mod limits;
pub mod oci;
pub mod reference;
pub mod store;

pub use artifacts::{ArtifactCache, ArtifactKey, Lookup, Source};
pub use digest::Digest;
pub use error::{Error, LayerProblem, Result};
pub use gc::{GcOptions, GcReport};
pub use image::Image;
pub use layer::{FileEntry, FileKind, FileTree, Unpacker};
pub use limits::Limits;
pub use reference::{Reference, Tag};
pub use store::{ImageSummary, KeepAs, Store};
