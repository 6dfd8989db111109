//! Bringing the daemon's functions back when it starts: every registered
//! version from its snapshot (with the aliases and the rollouts), or rebuilt from its stored module when the
//! snapshot is unusable; image pins made to match the registry; files no
//! function refers to removed.

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::{info, warn};
use wisp_images::Digest;
use wisp_vmm::Image;

use super::function::Function;
use super::host::{lock, Host};
use super::images::version_pin;
use super::registry::Record;
use super::routes::Deployed;

impl Host {
    /// Brings back every registered version, the aliases and rollouts.
    pub(super) fn recover(&self) -> anyhow::Result<()> {
        let (records, aliases) = {
            let registry = lock(&self.registry);
            (registry.versions()?, registry.aliases()?)
        };
        // Every registered version keeps its files, even one that cannot
        // be brought back now.
        let live_dirs: Vec<_> = records.iter().map(|r| r.snapshot_dir.clone()).collect();
        let live_modules: Vec<_> = records.iter().map(|r| r.module_sha256.clone()).collect();
        self.reconcile_pins(&records);
        let mut deployed: BTreeMap<String, Deployed> = BTreeMap::new();
        for record in records {
            let function = match Image::open(&record.snapshot_dir) {
                Ok(image) => Ok(Function::from_record(&record, Arc::new(image))),
                Err(e) => {
                    warn!(function = %record.name, version = record.version, error = %super::error::chain(&e), "snapshot unusable; rebuilding it");
                    self.rebuild(&record)
                }
            };
            match function {
                Ok(function) => {
                    info!(function = %record.name, version = record.version, "restored");
                    deployed
                        .entry(record.name.clone())
                        .or_default()
                        .versions
                        .insert(record.version, Arc::new(function));
                }
                Err(e) => {
                    warn!(function = %record.name, version = record.version, error = %e.message, "cannot bring the version back; it stays registered")
                }
            }
        }
        for alias in aliases {
            if let Some(d) = deployed.get_mut(&alias.function) {
                d.aliases.insert(alias.alias, alias.routing);
            }
        }
        for (name, d) in deployed {
            self.set_deployed(&name, d);
        }
        self.store.collect_garbage(&live_dirs, &live_modules);
        self.recover_rollouts()?;
        Ok(())
    }

    /// Makes the image store's pins match the registry: every version
    /// deployed from an image pins it, and the function's own pin holds
    /// its newest version's (a crash may have come between the registry
    /// write and the pin); a pin of no such function or version goes.
    fn reconcile_pins(&self, records: &[Record]) {
        let pins = match self.images.pins() {
            Ok(pins) => pins,
            Err(e) => {
                warn!(error = %e, "reading the image pins");
                return;
            }
        };
        let mut wanted = BTreeMap::new();
        // Records come by name, then version: the newest version's image
        // is the last one pinned under the function's name.
        for record in records {
            let Some(digest) = record
                .image
                .as_ref()
                .and_then(|i| Digest::parse(&i.digest).ok())
            else {
                continue;
            };
            wanted.insert(version_pin(&record.name, record.version), digest.clone());
            wanted.insert(record.name.clone(), digest);
        }
        for (pin, digest) in &wanted {
            if pins.get(pin) != Some(digest) {
                if let Err(e) = self.images.pin(pin, digest) {
                    warn!(pin, error = %e, "pinning an image");
                }
            }
        }
        for pin in pins.keys().filter(|p| !wanted.contains_key(*p)) {
            if let Err(e) = self.images.unpin(pin) {
                warn!(pin, error = %e, "removing a stale image pin");
            }
        }
    }
}
