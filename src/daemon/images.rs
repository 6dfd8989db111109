//! The daemon's use of its image store: a deploy by reference resolves,
//! pins and reads an image; its files become the guest's root.

use wisp_images::{Digest, FileEntry, FileKind, Store as ImageStore};
use wisp_vmm::{Error as VmError, Files, FilesBuilder, FilesError};

use super::error::{image_error, ApiError};
use crate::api::FunctionImage;

/// The guest path an image's files are mounted at.
pub const IMAGE_FILES_DIR: &str = "/";

/// Resolves `reference` in `images`, pins it for function `name` and reads
/// its module and files (checked).
pub fn image_module(
    images: &ImageStore,
    name: &str,
    reference: &str,
) -> Result<(Vec<u8>, Files, FunctionImage), ApiError> {
    let digest = images.resolve(reference).map_err(|e| image_error(&e))?;
    images.pin(name, &digest).map_err(|e| image_error(&e))?;
    let module = images
        .image(&digest)
        .and_then(|image| image.module())
        .map_err(|e| image_error(&e))?;
    let files = image_files(images, &digest)?;
    Ok((
        module,
        files,
        FunctionImage {
            reference: reference.to_string(),
            digest: digest.to_string(),
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
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
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
