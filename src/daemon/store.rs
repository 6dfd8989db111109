//! Where the daemon keeps its state: the registry database, the modules
//! as uploaded (content-addressed), each function version's snapshot, and
//! the image store (images deployed by reference, their pins, and the
//! compiled-artifact cache).
//!
//! ```text
//! STATE/wisp.db                       registry (SQLite)
//! STATE/modules/<sha256>.wasm         modules as deployed
//! STATE/functions/<name>/v<version>/  snapshots
//! STATE/images/                       image store (`wisp_images`): images, pins, compiled artifacts
//! ```

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The state directory's layout.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    /// Creates the directories under `root` if needed.
    pub fn open(root: &Path) -> io::Result<Store> {
        for dir in ["modules", "functions", "images"] {
            fs::create_dir_all(root.join(dir))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    /// The registry database.
    pub fn registry_path(&self) -> PathBuf {
        self.root.join("wisp.db")
    }

    /// The image store (which also caches compiled artifacts).
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    /// Where a function's snapshots live.
    pub fn function_dir(&self, name: &str) -> PathBuf {
        self.root.join("functions").join(name)
    }

    /// Where a version's snapshot lives.
    pub fn snapshot_dir(&self, name: &str, version: u64) -> PathBuf {
        self.function_dir(name).join(format!("v{version}"))
    }

    fn module_path(&self, sha256: &str) -> PathBuf {
        self.root.join("modules").join(format!("{sha256}.wasm"))
    }

    /// Stores module bytes (durably, atomically) and returns their SHA-256.
    pub fn put_module(&self, bytes: &[u8]) -> io::Result<String> {
        let sha = hex(&Sha256::digest(bytes));
        let path = self.module_path(&sha);
        if !path.exists() {
            let mut tmp = tempfile::NamedTempFile::new_in(self.root.join("modules"))?;
            tmp.write_all(bytes)?;
            tmp.as_file().sync_all()?;
            tmp.persist(&path).map_err(|e| e.error)?;
        }
        Ok(sha)
    }

    /// Reads a stored module, checking it still hashes to its name.
    pub fn get_module(&self, sha256: &str) -> io::Result<Vec<u8>> {
        let bytes = fs::read(self.module_path(sha256))?;
        if hex(&Sha256::digest(&bytes)) != sha256 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("stored module {sha256} is corrupt"),
            ));
        }
        Ok(bytes)
    }

    /// Removes snapshots and modules that no live function refers to:
    /// leftovers of a crash between writing them and the registry commit,
    /// or of deleted and replaced versions.
    pub fn collect_garbage(&self, live_snapshots: &[PathBuf], live_modules: &[String]) {
        let live: HashSet<&Path> = live_snapshots.iter().map(PathBuf::as_path).collect();
        for function in read_dirs(&self.root.join("functions")) {
            for version in read_dirs(&function) {
                if !live.contains(version.as_path()) {
                    let _ = fs::remove_dir_all(&version);
                }
            }
            let _ = fs::remove_dir(&function); // only if now empty
        }
        let modules: HashSet<PathBuf> = live_modules.iter().map(|m| self.module_path(m)).collect();
        for entry in read_dirs(&self.root.join("modules")) {
            if !modules.contains(&entry) {
                let _ = fs::remove_file(&entry);
            }
        }
    }
}

fn read_dirs(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_content_addressed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let sha = store.put_module(b"(module)").unwrap();
        assert_eq!(sha.len(), 64);
        assert_eq!(store.put_module(b"(module)").unwrap(), sha);
        assert_eq!(store.get_module(&sha).unwrap(), b"(module)");
        fs::write(store.module_path(&sha), b"tampered").unwrap();
        store.get_module(&sha).unwrap_err();
    }

    #[test]
    fn garbage_collection_keeps_only_live_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let live = store.snapshot_dir("f", 2);
        let dead = store.snapshot_dir("f", 1);
        let gone = store.snapshot_dir("g", 1);
        for d in [&live, &dead, &gone] {
            fs::create_dir_all(d).unwrap();
        }
        let keep = store.put_module(b"keep").unwrap();
        let drop = store.put_module(b"drop").unwrap();
        store.collect_garbage(std::slice::from_ref(&live), std::slice::from_ref(&keep));
        assert!(live.exists());
        assert!(!dead.exists() && !gone.exists());
        assert!(!gone.parent().unwrap().exists());
        store.get_module(&keep).unwrap();
        store.get_module(&drop).unwrap_err();
    }
}
