//! Pushing: a stored image's blobs (those the registry lacks) and then its
//! manifest, byte for byte, so it keeps its digest there.

use wisp_images::blobs::Access;
use wisp_images::image::OCI_MANIFEST;
use wisp_images::{Digest, Store};

use crate::error::{classify, Error, Result};
use crate::{blocking, Registry, RegistryRef};

/// What a push sent.
#[derive(Clone, Debug)]
pub struct Pushed {
    /// The image's manifest digest, the same in the registry.
    pub digest: Digest,
    /// Blobs uploaded.
    pub blobs_pushed: usize,
    /// Blobs the registry already had.
    pub blobs_present: usize,
    /// Bytes uploaded.
    pub bytes_pushed: u64,
}

impl Registry {
    /// Pushes the stored image `local` (a store reference) to `target`.
    pub async fn push(&self, store: &Store, local: &str, target: &RegistryRef) -> Result<Pushed> {
        let (s, l) = (store.clone(), local.to_string());
        let (digest, manifest, blobs) = blocking(move || {
            let image = s.open_image(&l)?;
            let manifest = s.blobs().read(image.digest(), Access::Look)?;
            let blobs: Vec<Digest> = image.blob_digests().into_iter().skip(1).collect();
            Ok((image.digest().clone(), manifest, blobs))
        })
        .await?;
        if let Some(pinned) = target.digest() {
            if pinned != digest {
                return Err(Error::InvalidReference {
                    reference: target.to_string(),
                    reason: format!("it pins {pinned}, but {local} is {digest}"),
                });
            }
        }
        let (client, auth) = self.client(target)?;
        let registry = target.registry();
        let fail = |e| classify(e, registry, &target.to_string());
        client
            .store_auth_if_needed(target.oci().resolve_registry(), &auth)
            .await;
        let mut pushed = Pushed {
            digest: digest.clone(),
            blobs_pushed: 0,
            blobs_present: 0,
            bytes_pushed: 0,
        };
        for blob in blobs {
            if client
                .blob_exists(target.oci(), &blob.to_string())
                .await
                .map_err(fail)?
            {
                pushed.blobs_present += 1;
                continue;
            }
            let s = store.clone();
            let b = blob.clone();
            // Read (and checked) whole: the store's blobs are bounded by
            // the image limits, and oci-client uploads from memory.
            let data = blocking(move || Ok(s.blobs().read(&b, Access::Look)?)).await?;
            pushed.bytes_pushed += data.len() as u64;
            client
                .push_blob(target.oci(), data, &blob.to_string())
                .await
                .map_err(fail)?;
            pushed.blobs_pushed += 1;
        }
        let media_type = serde_json::from_slice::<serde_json::Value>(&manifest)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_string))
            .unwrap_or_else(|| OCI_MANIFEST.to_string());
        let content_type = http::HeaderValue::from_str(&media_type).map_err(|_| {
            Error::Unsupported(format!("manifest {digest} has media type {media_type:?}"))
        })?;
        client
            .push_manifest_raw(target.oci(), manifest, content_type)
            .await
            .map_err(fail)?;
        Ok(pushed)
    }
}
