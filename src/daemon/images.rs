//! The daemon's use of its image store: a deploy by reference resolves,
//! pins and reads an image; its files become the guest's root.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use wisp_images::{
    Digest, Error as ImageError, FileEntry, FileKind, KeepAs, Limits, Store as ImageStore,
};
use wisp_vmm::{Error as VmError, Files, FilesBuilder, FilesError};

use super::error::{image_error, ApiError};
use crate::api::FunctionImage;
use crate::runtimes::{code_layer, unpack_code, Runtime, HANDLER_ANNOTATION, RUNTIME_ANNOTATION};

/// The guest path an image's files are mounted at.
pub const IMAGE_FILES_DIR: &str = "/";

/// The pin that keeps the image of version `version` of `function` for as
/// long as the version is kept, so a retained version can always be
/// rebuilt from its image's files. (The pin named after the function alone
/// follows its newest deploy, and covers a deploy in progress.)
pub fn version_pin(function: &str, version: u64) -> String {
    format!("{function}@{version}")
}

/// Whether `pin` is a version pin of `function`.
pub fn is_version_pin_of(pin: &str, function: &str) -> bool {
    pin.split_once('@').is_some_and(|(f, _)| f == function)
}

/// An image deployed by reference: its module and files, what the
/// function records of it, and the runtime and handler its annotations
/// name (`wisp image build --runtime`), if any.
pub struct ImageModule {
    /// The module (checked against its digest).
    pub module: Vec<u8>,
    /// Its files, for the guest.
    pub files: Files,
    /// The reference and the digest it resolved to.
    pub image: FunctionImage,
    /// `(runtime, handler)` from its annotations.
    pub handler: Option<(String, String)>,
}

/// Resolves `reference` in `images`, pins it for function `name` and reads
/// its module and files (checked).
pub fn image_module(
    images: &ImageStore,
    name: &str,
    reference: &str,
) -> Result<ImageModule, ApiError> {
    let digest = images.resolve(reference).map_err(|e| image_error(&e))?;
    images.pin(name, &digest).map_err(|e| image_error(&e))?;
    let image = images.image(&digest).map_err(|e| image_error(&e))?;
    let module = image.module().map_err(|e| image_error(&e))?;
    let handler = image
        .annotation(RUNTIME_ANNOTATION)
        .zip(image.annotation(HANDLER_ANNOTATION))
        .map(|(r, h)| (r.to_string(), h.to_string()));
    let files = image_files(images, &digest)?;
    Ok(ImageModule {
        module,
        files,
        image: FunctionImage {
            reference: reference.to_string(),
            digest: digest.to_string(),
        },
        handler,
    })
}

/// Builds function `name`'s image from `runtime`'s image in `images` and
/// the handler's `code` (a tar) at `/var/task`, pins it for the function,
/// and reads its module and files. The runtime's layers are the same blobs
/// for every function that uses it.
pub fn runtime_image(
    images: &ImageStore,
    name: &str,
    runtime: &Runtime,
    code: &[u8],
) -> Result<(Vec<u8>, Files, FunctionImage), ApiError> {
    // The request's own bytes first: a bad tar is the caller's to fix
    // whether or not the runtime is installed.
    let code = unpack_code(code, Limits::default()).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_code",
            format!("code_base64: {}", super::error::chain(&e)),
        )
    })?;
    let base = images
        .resolve(runtime.image)
        .and_then(|digest| images.image(&digest))
        .map_err(|e| match e {
            ImageError::NotFound(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "runtime_not_found",
                format!(
                    "runtime `{}` is not installed: its image `{}` is not in the daemon's image store (run scripts/build-runtimes --store STATE_DIR/images)",
                    runtime.name, runtime.image
                ),
            ),
            e => image_error(&e),
        })?;
    let image = images
        .build_on(
            &base,
            &code_layer(code),
            &BTreeMap::new(),
            KeepAs::Pin(name),
        )
        .map_err(|e| image_error(&e))?;
    let module = image.module().map_err(|e| image_error(&e))?;
    let files = image_files(images, image.digest())?;
    Ok((
        module,
        files,
        FunctionImage {
            reference: runtime.image.to_string(),
            digest: image.digest().to_string(),
        },
    ))
}

/// An image's files, for the guest: mounted read-only at `/`.
pub fn image_files(images: &ImageStore, digest: &Digest) -> Result<Files, ApiError> {
    let entries = images
        .image(digest)
        .and_then(|image| image.files())
        .map_err(|e| image_error(&e))?;
    guest_files(&entries).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_module",
            format!(
                "the image's files cannot be given to a guest: {}",
                super::error::chain(&e)
            ),
        )
    })
}

/// Lays an image's files out for the guest, read-only at
/// [`IMAGE_FILES_DIR`]; no files, no mount.
pub fn guest_files(entries: &[FileEntry]) -> Result<Files, VmError> {
    if entries.is_empty() {
        return Ok(Files::default());
    }
    fn utf8(p: &std::path::Path) -> Result<&str, VmError> {
        p.to_str()
            .ok_or_else(|| FilesError::NotUtf8(p.display().to_string()).into())
    }
    let mut builder = FilesBuilder::new();
    builder.mount(IMAGE_FILES_DIR)?;
    for entry in entries {
        let path = utf8(&entry.path)?;
        match &entry.kind {
            FileKind::Dir => builder.dir(path)?,
            FileKind::File(data, _mode) => builder.file(path, data.clone())?,
            FileKind::Symlink(target) => builder.symlink(path, utf8(target)?)?,
        };
    }
    Ok(builder.build())
}
