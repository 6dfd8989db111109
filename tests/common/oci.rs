//! OCI image layouts and tar layers written by hand, so that the tests can
//! give `wisp image import` (and the store) exactly the bytes they mean,
//! hostile ones included.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest as _, Sha256};

/// `sha256:<hex>` of `bytes`.
pub fn sha(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// An OCI image layout written by hand: blobs and an index.
pub struct Layout {
    /// Its directory.
    pub root: PathBuf,
    manifests: Vec<serde_json::Value>,
}

impl Layout {
    /// An empty layout in `root` (created).
    pub fn new(root: &Path) -> Layout {
        fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        fs::write(
            root.join("oci-layout"),
            br#"{"imageLayoutVersion": "1.0.0"}"#,
        )
        .unwrap();
        Layout {
            root: root.to_path_buf(),
            manifests: Vec::new(),
        }
    }

    /// Where the blob of `digest` (`sha256:<hex>`) lives.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// Stores a blob; returns its descriptor.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> serde_json::Value {
        let digest = sha(bytes);
        fs::write(self.blob_path(&digest), bytes).unwrap();
        json!({ "mediaType": media_type, "digest": digest, "size": bytes.len() })
    }

    /// Stores a manifest and lists it in the index under `ref_name`;
    /// returns its digest.
    pub fn manifest(&mut self, manifest: serde_json::Value, ref_name: Option<&str>) -> String {
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let mut d = self.blob("application/vnd.oci.image.manifest.v1+json", &bytes);
        if let Some(r) = ref_name {
            d["annotations"] = json!({ "org.opencontainers.image.ref.name": r });
        }
        self.manifests.push(d.clone());
        let index = json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": self.manifests });
        fs::write(
            self.root.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
        d["digest"].as_str().unwrap().to_string()
    }

    /// Stores an image manifest of `layers` with `config` (an image
    /// configuration) and lists it under `ref_name`; returns its digest.
    pub fn image(
        &mut self,
        config: &serde_json::Value,
        layers: &[serde_json::Value],
        ref_name: Option<&str>,
    ) -> String {
        let config = self.blob(
            "application/vnd.oci.image.config.v1+json",
            &serde_json::to_vec(config).unwrap(),
        );
        self.manifest(
            json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config,
                "layers": layers
            }),
            ref_name,
        )
    }

    /// The tar form of the layout, at `path`.
    pub fn tar(&self, path: &Path) {
        let mut b = tar::Builder::new(fs::File::create(path).unwrap());
        b.append_dir_all(".", &self.root).unwrap();
        b.finish().unwrap();
    }
}

/// A gzipped tar layer of `entries` (path, content).
pub fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// A plain OCI image: a gzipped tar layer holding `entries`, a config
/// with `entrypoint`.
pub fn plain_image(
    layout: &mut Layout,
    entries: &[(&str, &[u8])],
    entrypoint: Option<&str>,
) -> String {
    let layer = layout.blob(
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &tar_gz(entries),
    );
    let mut config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Env": ["PATH=/"] },
        "rootfs": { "type": "layers", "diff_ids": [] }
    });
    if let Some(e) = entrypoint {
        config["config"]["Entrypoint"] = json!([e]);
    }
    layout.image(&config, &[layer], Some("plain:1"))
}

/// A tar of hand-made entries: `data` is the content, or the link target
/// of a link. Names are written raw into the header, so hostile ones
/// (`../x`, absolute) are kept as given.
pub fn raw_tar(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, ty, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*ty);
        h.set_mode(0o644);
        let name = path.as_bytes();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        let link = matches!(ty, tar::EntryType::Symlink | tar::EntryType::Link);
        if link {
            h.set_link_name_literal(data).unwrap();
        }
        h.set_size(if link { 0 } else { data.len() as u64 });
        h.set_cksum();
        b.append(&h, if link { &[][..] } else { *data }).unwrap();
    }
    b.into_inner().unwrap()
}

/// A CNCF wasm artifact: `module` and one file layer of `media_type`
/// holding `layer`, tagged `ref_name`. Returns the manifest's digest.
pub fn wasm_artifact(
    layout: &mut Layout,
    module: &[u8],
    media_type: &str,
    layer: &[u8],
    ref_name: &str,
) -> String {
    let module = layout.blob("application/wasm", module);
    let files = layout.blob(media_type, layer);
    let config = layout.blob(
        "application/vnd.wasm.config.v0+json",
        &serde_json::to_vec(&json!({
            "architecture": "wasm",
            "os": "wasip1",
            "layerDigests": [module["digest"], files["digest"]]
        }))
        .unwrap(),
    );
    layout.manifest(
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": [module, files]
        }),
        Some(ref_name),
    )
}

/// Writes an image of `module` and the tar file layer `layer` straight
/// into `store`'s blobs, behind import's back (as a damaged or tampered
/// store would hold it); returns its manifest digest, `sha256:<hex>`.
pub fn plant_image(store: &wisp_images::Store, module: &[u8], layer: &[u8]) -> String {
    let put = |bytes: &[u8]| {
        let (digest, size) = store.blobs().put(bytes).unwrap();
        json!({ "digest": digest.to_string(), "size": size })
    };
    let mut module = put(module);
    module["mediaType"] = json!("application/wasm");
    let mut files = put(layer);
    files["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar");
    let mut config = put(br#"{"architecture":"wasm","os":"wasip1"}"#);
    config["mediaType"] = json!("application/vnd.wasm.config.v0+json");
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": [module, files]
    });
    put(&serde_json::to_vec(&manifest).unwrap())["digest"]
        .as_str()
        .unwrap()
        .to_string()
}
