//! The image model: a function image is an OCI image manifest whose config
//! is a wasm config (`application/vnd.wasm.config.v0+json`, the CNCF wasm
//! OCI artifact convention) and whose layers are exactly one wasm module
//! (`application/wasm`, or the older wasm-to-oci
//! `application/vnd.wasm.content.layer.v1+wasm` as imported) and any
//! number of file layers (OCI tar layers, gzip allowed).
//!
//! Compiled code is not part of an image: it is derived per host and kept
//! in the artifact cache ([`crate::artifacts`]), so an image's digest is the
//! same on every host.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use oci_spec::image::{Descriptor, ImageManifest, ImageManifestBuilder, MediaType};
use serde::{Deserialize, Serialize};

use crate::blobs::{Access, BlobStore};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::layer::{FileEntry, FileTree, Unpacker};
use crate::limits::{Limits, MAX_JSON_BYTES};

/// The media type wisp writes for a wasm module layer: the CNCF wasm OCI
/// artifact spec's, which containerd's and runwasi's wasm shims look for.
pub const WASM_LAYER: &str = "application/wasm";
/// The same as [`WASM_LAYER`], by the spec's name for it.
pub const WASM_LAYER_CNCF: &str = WASM_LAYER;
/// The older wasm-to-oci module layer type (accepted on import, so images
/// built by earlier wisp versions and wasm-to-oci still load).
pub const WASM_LAYER_LEGACY: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// The media type of a wasm image's config.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// An uncompressed OCI tar layer: how wisp stores files.
pub const TAR_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// A gzip-compressed OCI tar layer (accepted on import).
pub const TAR_GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Docker's gzip-compressed tar layer (accepted on import).
pub const DOCKER_TAR_GZIP_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker's uncompressed tar layer (accepted on import).
pub const DOCKER_TAR_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// The OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker's image manifest (the same JSON shape; accepted on import).
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker's manifest list (accepted on import).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// A plain OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker's image config (accepted on import).
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Whether `media_type` is a wasm module layer.
pub fn is_wasm_layer(media_type: &str) -> bool {
    media_type == WASM_LAYER || media_type == WASM_LAYER_LEGACY
}

/// Whether `media_type` is a tar layer, and whether it is gzipped; `None`
/// if it is not a layer wisp can unpack.
pub fn tar_layer_gzip(media_type: &str) -> Option<bool> {
    match media_type {
        TAR_LAYER | DOCKER_TAR_LAYER => Some(false),
        TAR_GZIP_LAYER | DOCKER_TAR_GZIP_LAYER => Some(true),
        _ => None,
    }
}

/// The wasm config blob (CNCF wasm OCI artifact convention). wisp writes
/// no creation time, so building the same module and files gives the same
/// digest.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    /// Always `wasm`.
    pub architecture: String,
    /// `wasip1` for WASI preview 1 modules.
    pub os: String,
    /// The digests of the layers, in order.
    pub layer_digests: Vec<String>,
}

/// Checks that `module` is a binary core WebAssembly module.
pub fn check_module(module: &[u8]) -> Result<()> {
    match module {
        [0, b'a', b's', b'm', 1, 0, 0, 0, ..] => Ok(()),
        [0, b'a', b's', b'm', _, _, 1, 0, ..] => Err(Error::NotWasm(
            "it is a WebAssembly component; wisp runs WASI preview 1 core modules".into(),
        )),
        _ => Err(Error::NotWasm(
            "it does not start with the binary magic `\\0asm` version 1 (text `.wat` must be converted first)".into(),
        )),
    }
}

/// A function image in a store.
#[derive(Clone, Debug)]
pub struct Image {
    digest: Digest,
    manifest: ImageManifest,
    manifest_size: u64,
    blobs: BlobStore,
}

impl Image {
    /// Loads the manifest `digest` from `blobs` (checking it).
    pub(crate) fn load(blobs: &BlobStore, digest: &Digest, access: Access) -> Result<Image> {
        let bytes = blobs.read_with(digest, access, |r| {
            let mut bytes = Vec::new();
            r.take(MAX_JSON_BYTES + 1)
                .read_to_end(&mut bytes)
                .ctx(|| format!("reading manifest {digest}"))?;
            if bytes.len() as u64 > MAX_JSON_BYTES {
                return Err(Error::InvalidImage(format!(
                    "manifest {digest} is larger than {MAX_JSON_BYTES} bytes"
                )));
            }
            Ok(bytes)
        })?;
        let manifest = ImageManifest::from_reader(&bytes[..]).map_err(|e| {
            Error::InvalidImage(format!(
                "manifest {digest} is not an OCI image manifest: {e}"
            ))
        })?;
        let image = Image {
            digest: digest.clone(),
            manifest,
            manifest_size: bytes.len() as u64,
            blobs: blobs.clone(),
        };
        image.check()?;
        Ok(image)
    }

    /// Checks the manifest is a wasm function image.
    pub(crate) fn check(&self) -> Result<()> {
        check_wasm_manifest(&self.manifest, &self.digest.to_string())
    }

    /// The manifest's digest: the image's identity.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The OCI manifest.
    pub fn manifest(&self) -> &ImageManifest {
        &self.manifest
    }

    /// The manifest descriptor (for an index).
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            MediaType::ImageManifest,
            self.manifest_size,
            self.digest.to_oci(),
        )
    }

    /// The value of the manifest annotation `key`, if it has one.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.manifest
            .annotations()
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    }

    /// The module layer.
    pub fn module_layer(&self) -> &Descriptor {
        self.manifest
            .layers()
            .iter()
            .find(|l| is_wasm_layer(l.media_type().as_ref()))
            .expect("checked at load")
    }

    /// The module's digest (the key of its compiled artifacts).
    pub fn module_digest(&self) -> Digest {
        Digest::from_oci(self.module_layer().digest()).expect("checked at load")
    }

    /// The file layers, in order.
    pub fn file_layers(&self) -> Vec<&Descriptor> {
        self.manifest
            .layers()
            .iter()
            .filter(|l| !is_wasm_layer(l.media_type().as_ref()))
            .collect()
    }

    /// Every blob of the image: manifest, config, layers.
    pub fn blob_digests(&self) -> Vec<Digest> {
        let mut out = vec![self.digest.clone()];
        out.extend(
            std::iter::once(self.manifest.config())
                .chain(self.manifest.layers())
                .filter_map(|d| Digest::from_oci(d.digest()).ok()),
        );
        out
    }

    /// Bytes of the manifest, config and layers.
    pub fn size(&self) -> u64 {
        self.manifest_size
            + self.manifest.config().size()
            + self.manifest.layers().iter().map(|l| l.size()).sum::<u64>()
    }

    /// The module's bytes (checked).
    pub fn module(&self) -> Result<Vec<u8>> {
        self.blobs.read(&self.module_digest(), Access::Use)
    }

    /// The image's files: its file layers unpacked in order (later layers
    /// and whiteouts win), sorted by path, every parent directory listed.
    /// Each layer is streamed from its blob and checked as it is read (see
    /// [`crate::layer`]): a layer wisp refuses is [`Error::InvalidLayer`].
    pub fn files(&self) -> Result<Vec<FileEntry>> {
        let mut unpacker = Unpacker::new(Limits::DEFAULT);
        self.unpack(&mut unpacker, Access::Use)?;
        Ok(unpacker.into_tree().into_entries())
    }

    /// Checks the file layers as [`Image::files`] does, keeping nothing.
    pub fn check_files(&self) -> Result<()> {
        self.unpack(&mut Unpacker::checker(Limits::DEFAULT), Access::Look)
    }

    fn unpack(&self, unpacker: &mut Unpacker, access: Access) -> Result<()> {
        for layer in self.file_layers() {
            let digest = Digest::from_oci(layer.digest())?;
            let gzip = tar_layer_gzip(layer.media_type().as_ref()).expect("checked at load");
            self.blobs
                .read_with(&digest, access, |r| unpacker.apply(&digest, r, gzip))?;
        }
        Ok(())
    }

    /// Checks every blob of the image, and that its file layers are layers
    /// wisp accepts; returns the first problem.
    pub fn verify(&self) -> Result<()> {
        let file_layers: Vec<Digest> = self
            .file_layers()
            .iter()
            .filter_map(|l| Digest::from_oci(l.digest()).ok())
            .collect();
        for d in self.blob_digests() {
            if !file_layers.contains(&d) {
                self.blobs.verify(&d)?;
            }
        }
        // Hashes the layers while it checks them.
        self.check_files()
    }
}

/// Checks that `manifest` is a wasm function image: one wasm layer, tar
/// file layers, SHA-256 digests.
pub(crate) fn check_wasm_manifest(manifest: &ImageManifest, what: &str) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidImage(format!("image {what}: {m}")));
    let wasm = manifest
        .layers()
        .iter()
        .filter(|l| is_wasm_layer(l.media_type().as_ref()))
        .count();
    if wasm != 1 {
        return bad(format!(
            "has {wasm} wasm module layers ({WASM_LAYER} or {WASM_LAYER_LEGACY}); exactly one is needed"
        ));
    }
    for layer in manifest.layers() {
        let ty = layer.media_type().to_string();
        if !is_wasm_layer(&ty) && tar_layer_gzip(&ty).is_none() {
            return bad(format!(
                "layer {} has media type {ty}; only wasm and tar (optionally gzip) layers are supported",
                layer.digest()
            ));
        }
    }
    for d in std::iter::once(manifest.config()).chain(manifest.layers()) {
        Digest::from_oci(d.digest())?;
    }
    Ok(())
}

/// Writes the blobs of an image made of `module` and `files` (one tar
/// layer, absent if there are no files) and returns its manifest's digest
/// and size. Reproducible: the same inputs give the same digest.
pub(crate) fn write_image(
    blobs: &BlobStore,
    module: &[u8],
    files: &FileTree,
) -> Result<(Digest, u64)> {
    check_module(module)?;
    let (module_digest, module_size) = blobs.put(module)?;
    let module_layer = Descriptor::new(
        MediaType::Other(WASM_LAYER.into()),
        module_size,
        module_digest.to_oci(),
    );
    write_manifest(blobs, vec![module_layer], files, &BTreeMap::new())
}

/// Writes the blobs of an image made of `base`'s layers (shared, not
/// copied: the same blobs) and `files` on top as one more tar layer, with
/// `annotations` in its manifest, and returns the manifest's digest and
/// size. Reproducible as [`write_image`].
pub(crate) fn write_layered(
    blobs: &BlobStore,
    base: &Image,
    files: &FileTree,
    annotations: &BTreeMap<String, String>,
) -> Result<(Digest, u64)> {
    write_manifest(blobs, base.manifest.layers().clone(), files, annotations)
}

/// Adds a tar layer of `files` (if any) to `layers`, then writes the wasm
/// config and the manifest.
fn write_manifest(
    blobs: &BlobStore,
    mut layers: Vec<Descriptor>,
    files: &FileTree,
    annotations: &BTreeMap<String, String>,
) -> Result<(Digest, u64)> {
    if !files.is_empty() {
        let (d, size) = blobs.put_with(None, |w| files.write_tar(w))?;
        layers.push(Descriptor::new(MediaType::ImageLayer, size, d.to_oci()));
    }
    let config = WasmConfig {
        architecture: "wasm".into(),
        os: "wasip1".into(),
        layer_digests: layers.iter().map(|l| l.digest().to_string()).collect(),
    };
    let config_bytes = serde_json::to_vec(&config).expect("serialisable");
    let (config_digest, config_size) = blobs.put(&config_bytes)?;
    let mut manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::Other(WASM_CONFIG.into()),
            config_size,
            config_digest.to_oci(),
        ))
        .layers(layers)
        .build()
        .map_err(|e| Error::InvalidImage(format!("building the manifest: {e}")))?;
    if !annotations.is_empty() {
        manifest.set_annotations(Some(
            annotations.clone().into_iter().collect::<HashMap<_, _>>(),
        ));
    }
    let bytes = serde_json::to_vec(&manifest).expect("serialisable");
    blobs.put(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_checked() {
        check_module(b"\0asm\x01\0\0\0").unwrap();
        assert!(matches!(check_module(b"(module)"), Err(Error::NotWasm(_))));
        let err = check_module(b"\0asm\x0d\0\x01\0").unwrap_err();
        assert!(err.to_string().contains("component"), "{err}");
    }

    #[test]
    fn images_are_reproducible_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        let module = b"\0asm\x01\0\0\0".to_vec();
        let mut files = FileTree::new();
        files.insert(
            "etc/app.toml".into(),
            crate::layer::FileKind::File(b"x=1".to_vec(), 0o644),
        );
        let (d1, _) = write_image(&blobs, &module, &files).unwrap();
        let (d2, _) = write_image(&blobs, &module, &files).unwrap();
        assert_eq!(d1, d2);
        let image = Image::load(&blobs, &d1, Access::Look).unwrap();
        assert_eq!(image.module().unwrap(), module);
        assert_eq!(image.module_digest(), Digest::of(&module));
        assert_eq!(image.file_layers().len(), 1);
        let files = image.files().unwrap();
        assert_eq!(files.len(), 2, "{files:?}");
        assert_eq!(files[0].path, std::path::Path::new("etc"));
        image.verify().unwrap();
        assert_eq!(image.blob_digests().len(), 4);
        // Without files: one layer only.
        let (d3, _) = write_image(&blobs, &module, &FileTree::new()).unwrap();
        let bare = Image::load(&blobs, &d3, Access::Look).unwrap();
        assert!(bare.file_layers().is_empty());
        assert!(bare.files().unwrap().is_empty());
    }

    #[test]
    fn layered_images_share_their_base_and_carry_annotations() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        let module = b"\0asm\x01\0\0\0".to_vec();
        let mut lower = FileTree::new();
        lower.insert(
            "opt/a".into(),
            crate::layer::FileKind::File(b"lower".to_vec(), 0o644),
        );
        let (base, _) = write_image(&blobs, &module, &lower).unwrap();
        let base = Image::load(&blobs, &base, Access::Look).unwrap();
        let mut upper = FileTree::new();
        upper.insert(
            "opt/a".into(),
            crate::layer::FileKind::File(b"upper".to_vec(), 0o644),
        );
        let notes = BTreeMap::from([("io.example.k".to_string(), "v".to_string())]);
        let (d1, _) = write_layered(&blobs, &base, &upper, &notes).unwrap();
        let (d2, _) = write_layered(&blobs, &base, &upper, &notes).unwrap();
        assert_eq!(d1, d2, "reproducible");
        let image = Image::load(&blobs, &d1, Access::Look).unwrap();
        assert_eq!(image.module_digest(), base.module_digest());
        assert_eq!(image.file_layers().len(), 2);
        assert_eq!(image.file_layers()[0], base.file_layers()[0]);
        assert_eq!(image.annotation("io.example.k"), Some("v"));
        assert_eq!(image.annotation("io.example.other"), None);
        assert_eq!(base.annotation("io.example.k"), None);
        let files = image.files().unwrap();
        let a = files.iter().find(|f| f.path.ends_with("a")).unwrap();
        assert!(matches!(&a.kind, crate::layer::FileKind::File(data, _) if data == b"upper"));
    }
}
