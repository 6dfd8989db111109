//! A handler on a runtime outside the daemon, as the daemon runs it: the
//! runtime's image from an image store, the code at `/var/task`, the
//! bootstrap's invocation and each request's context line. `wisp run
//! --runtime` snapshots it at the first read and caches that; the
//! benchmark also boots it fresh, without a snapshot, for reference.

use std::path::Path;
use std::time::Duration;

use super::{code_layer, code_tar, deadline_ms, request_id, unpack_code, RequestContext, Runtime};
use crate::daemon::images::guest_files;
use crate::run_cache::Key;
use anyhow::{Context, Result};
use wisp_images::{FileTree, Image, Limits, Store};
use wisp_vmm::{Files, Invocation};

/// A handler to run: its runtime's image and its code.
pub struct LocalHandler {
    runtime: &'static Runtime,
    image: Image,
    code: Vec<u8>,
    name: String,
    /// What the bootstrap boots with: the handler and the environment.
    pub boot: Invocation,
}

impl LocalHandler {
    /// Finds `runtime`'s image in the store at `store` and reads the code
    /// at `path` (a directory or one file).
    pub fn open(
        runtime: &str,
        handler: &str,
        path: &Path,
        store: &Path,
        env: &[Vec<u8>],
    ) -> Result<LocalHandler> {
        let runtime = Runtime::find(runtime)?;
        runtime.check_handler(handler)?;
        let images =
            Store::open(store).with_context(|| format!("the image store {}", store.display()))?;
        let image = images.open_image(runtime.image).with_context(|| {
            format!(
                "runtime `{}` is not installed in {store} (run scripts/build-runtimes --store {store})",
                runtime.name,
                store = store.display()
            )
        })?;
        let code = code_tar(path).with_context(|| format!("reading {}", path.display()))?;
        let mut boot = runtime.boot_invocation(handler, &Default::default());
        // The user's variables (never WISP_*, which name the handler).
        boot.env.splice(
            0..0,
            env.iter().filter(|e| !e.starts_with(b"WISP_")).cloned(),
        );
        let name = std::fs::canonicalize(path)
            .ok()
            .as_deref()
            .and_then(Path::file_stem)
            .map_or_else(|| "handler".into(), |n| n.to_string_lossy().into_owned());
        Ok(LocalHandler {
            runtime,
            image,
            code,
            name,
            boot,
        })
    }

    /// The key of its cached snapshot in a VM of `mem_size` bytes.
    pub fn key(&self, mem_size: u64) -> Key {
        Key::handler(
            &self.image.digest().to_string(),
            &self.code,
            mem_size,
            &self.boot,
        )
    }

    /// The interpreter's module (checked against its digest as it is
    /// read): only a boot needs it.
    pub fn module(&self) -> Result<Vec<u8>> {
        Ok(self.image.module()?)
    }

    /// The guest's read-only root: the runtime's files and the code at
    /// `/var/task`.
    pub fn files(&self) -> Result<Files> {
        let mut tree = FileTree::new();
        for entry in self.image.files()? {
            tree.insert(entry.path, entry.kind);
        }
        let code = unpack_code(&self.code, Limits::default())?;
        for entry in code_layer(code).into_entries() {
            tree.insert(entry.path, entry.kind);
        }
        Ok(guest_files(&tree.into_entries())?)
    }

    /// The line of request context the bootstrap reads before the event.
    pub fn context_line(&self, mem_size: u64, timeout: Option<Duration>) -> Vec<u8> {
        RequestContext {
            request_id: &request_id(),
            function_name: &self.name,
            function_version: 0,
            memory_limit_in_mb: (mem_size >> 20) as u32,
            deadline_ms: timeout.map(deadline_ms),
        }
        .stdin(b"")
    }

    /// The snapshot's name in the cache: the runtime's.
    pub fn snapshot_name(&self) -> String {
        self.runtime.name.to_string()
    }
}
