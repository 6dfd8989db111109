//! Bringing the daemon's functions back when it starts: every registered
//! version from its snapshot, or rebuilt from its stored module when the
//! snapshot is unusable; image pins made to match the registry; files no
//! function refers to removed.

use std::sync::Arc;

use tracing::{info, warn};
use wisp_images::Digest;
use wisp_vmm::Image;

use super::function::Function;
use super::host::{lock, Host};
use super::registry::Record;

impl Host {
    /// Brings back every registered function.
    pub(super) fn recover(&self) -> anyhow::Result<()> {
        let records = lock(&self.registry).list()?;
        // Every registered function keeps its files, even one that cannot
        // be brought back now.
        let live_dirs: Vec<_> = records.iter().map(|r| r.snapshot_dir.clone()).collect();
        let live_modules: Vec<_> = records.iter().map(|r| r.module_sha256.clone()).collect();
        self.reconcile_pins(&records);
        for record in records {
            let function = match Image::open(&record.snapshot_dir) {
                Ok(image) => Ok(Function::from_record(&record, Arc::new(image))),
                Err(e) => {
                    warn!(function = %record.name, error = %super::error::chain(&e), "snapshot unusable; rebuilding it");
                    self.rebuild(&record)
                }
            };
            match function {
                Ok(function) => {
                    info!(function = %record.name, version = record.version, "restored");
                    self.functions
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(record.name, Arc::new(function));
                }
                Err(e) => {
                    warn!(function = %record.name, error = %e.message, "cannot bring the function back; it stays registered")
                }
            }
        }
        self.store.collect_garbage(&live_dirs, &live_modules);
        Ok(())
    }

    /// Makes the image store's pins match the registry: a function deployed
    /// from an image pins it (a crash may have come between the two
    /// writes); a pin of no such function goes.
    fn reconcile_pins(&self, records: &[Record]) {
        let pins = match self.images.pins() {
            Ok(pins) => pins,
            Err(e) => {
                warn!(error = %e, "reading the image pins");
                return;
            }
        };
        for record in records {
            let Some(digest) = record
                .image
                .as_ref()
                .and_then(|i| Digest::parse(&i.digest).ok())
            else {
                continue;
            };
            if pins.get(&record.name) != Some(&digest) {
                if let Err(e) = self.images.pin(&record.name, &digest) {
                    warn!(function = %record.name, error = %e, "pinning its image");
                }
            }
        }
        for name in pins.keys() {
            if !records.iter().any(|r| r.name == *name && r.image.is_some()) {
                if let Err(e) = self.images.unpin(name) {
                    warn!(function = %name, error = %e, "removing a stale image pin");
                }
            }
        }
    }
}
