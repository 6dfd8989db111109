//! Read-only directories for the guest: the host collects them (from host
//! directories, or an image's file layers) into a files image
//! (`wisp_abi::files`) that the loader places in guest memory, where the
//! agent mounts them as preopened WASI directories.

use std::collections::BTreeSet;
use std::path::{Component, Path};
use std::sync::Arc;

use wisp_abi::files::{self, EntryKind};

use crate::error::{Error, FilesError, Result};

/// The guest path the agent always mounts as writable scratch space.
pub const SCRATCH_DIR: &str = "/tmp";

/// One directory mounted in the guest, with everything under it.
#[derive(Clone, Debug, Default)]
struct Mount {
    guest_path: String,
    /// A host directory served over `wisp_abi::hostfs`, not files.
    host: bool,
    entries: Vec<(String, EntryKind, Vec<u8>)>,
}

/// Collects read-only directories for the guest.
#[derive(Clone, Debug, Default)]
pub struct FilesBuilder {
    mounts: Vec<Mount>,
}

/// An encoded files image, cheap to clone.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Files(Arc<Vec<u8>>);

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Files({} bytes)", self.0.len())
    }
}

impl Files {
    /// The encoded image (empty when there are no files).
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether there are no files.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Checks a guest mount point: absolute, normalised, not the scratch dir.
fn check_guest_path(path: &str) -> Result<()> {
    let bad = |why: &'static str| {
        Err(FilesError::GuestPath {
            path: path.to_string(),
            why,
        }
        .into())
    };
    if !path.starts_with('/') {
        return bad("must be absolute");
    }
    if path != "/"
        && (path.ends_with('/')
            || path
                .split('/')
                .skip(1)
                .any(|c| c.is_empty() || c == "." || c == ".."))
    {
        return bad("must be normalised (no empty, `.` or `..` components, no trailing `/`)");
    }
    if path == SCRATCH_DIR {
        return bad("is the writable scratch directory every invocation gets");
    }
    Ok(())
}

/// Checks a path inside a mount: relative, normalised, UTF-8 free-form.
fn check_entry_path(path: &str) -> Result<()> {
    if path.is_empty()
        || path.starts_with('/')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(FilesError::EntryPath(path.to_string()).into());
    }
    Ok(())
}

impl FilesBuilder {
    /// Nothing mounted yet.
    pub fn new() -> FilesBuilder {
        FilesBuilder::default()
    }

    /// Starts a new mount at `guest_path`; entries added next go under it.
    pub fn mount(&mut self, guest_path: &str) -> Result<&mut Self> {
        check_guest_path(guest_path)?;
        if self.mounts.iter().any(|m| m.guest_path == guest_path) {
            return Err(FilesError::MountedTwice(guest_path.to_string()).into());
        }
        self.mounts.push(Mount {
            guest_path: guest_path.to_string(),
            host: false,
            entries: Vec::new(),
        });
        Ok(self)
    }

    /// Announces a host directory at `guest_path`, served by the host's
    /// `GuestIo::fs_call` as handle number *n* for the *n*th such mount.
    pub fn host_mount(&mut self, guest_path: &str) -> Result<&mut Self> {
        self.mount(guest_path)?;
        self.mounts.last_mut().expect("just added").host = true;
        Ok(self)
    }

    fn current(&mut self) -> Result<&mut Mount> {
        match self.mounts.last_mut() {
            Some(m) if !m.host => Ok(m),
            Some(m) => Err(FilesError::HostMount(m.guest_path.clone()).into()),
            None => Err(FilesError::NoMount.into()),
        }
    }

    /// Adds a directory to the current mount (parents first).
    pub fn dir(&mut self, path: &str) -> Result<&mut Self> {
        check_entry_path(path)?;
        self.current()?
            .entries
            .push((path.into(), EntryKind::Dir, Vec::new()));
        Ok(self)
    }

    /// Adds a file to the current mount.
    pub fn file(&mut self, path: &str, contents: Vec<u8>) -> Result<&mut Self> {
        check_entry_path(path)?;
        self.current()?
            .entries
            .push((path.into(), EntryKind::File, contents));
        Ok(self)
    }

    /// Adds a symlink to the current mount.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self> {
        check_entry_path(path)?;
        self.current()?
            .entries
            .push((path.into(), EntryKind::Symlink, target.as_bytes().to_vec()));
        Ok(self)
    }

    /// Mounts a copy of host directory `host` at `guest_path`: its files,
    /// directories and symlinks (kept as links, not followed), read now.
    /// Anything else (sockets, devices) is an error.
    pub fn host_dir(&mut self, host: &Path, guest_path: &str) -> Result<&mut Self> {
        let meta = std::fs::metadata(host).map_err(|e| io_error(host, e))?;
        if !meta.is_dir() {
            return Err(FilesError::NotADirectory(host.display().to_string()).into());
        }
        self.mount(guest_path)?;
        self.walk(host, host)?;
        Ok(self)
    }

    fn walk(&mut self, root: &Path, dir: &Path) -> Result<()> {
        let mut children: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| io_error(dir, e))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .map_err(|e| io_error(dir, e))?;
        children.sort();
        for path in children {
            let rel = relative(root, &path)?;
            let meta = std::fs::symlink_metadata(&path).map_err(|e| io_error(&path, e))?;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).map_err(|e| io_error(&path, e))?;
                let target = target
                    .to_str()
                    .ok_or_else(|| FilesError::NotUtf8(target.display().to_string()))?;
                self.symlink(&rel, target)?;
            } else if meta.is_dir() {
                self.dir(&rel)?;
                self.walk(root, &path)?;
            } else if meta.is_file() {
                let contents = std::fs::read(&path).map_err(|e| io_error(&path, e))?;
                self.file(&rel, contents)?;
            } else {
                return Err(FilesError::Unsupported(path.display().to_string()).into());
            }
        }
        Ok(())
    }

    /// Encodes the image (empty if nothing was mounted). Parents are
    /// created for entries whose directories were not listed.
    pub fn build(&self) -> Files {
        if self.mounts.is_empty() {
            return Files::default();
        }
        let mut out = Vec::new();
        let mut sink = |b: &[u8]| out.extend_from_slice(b);
        files::write_header(&mut sink, self.mounts.len() as u32);
        for mount in &self.mounts {
            let mut listed: BTreeSet<&str> = BTreeSet::new();
            let mut entries: Vec<(String, EntryKind, &[u8])> = Vec::new();
            for (path, kind, data) in &mount.entries {
                // Implied parents first.
                let mut at = 0;
                while let Some(i) = path[at..].find('/') {
                    let parent = &path[..at + i];
                    if listed.insert(parent) {
                        entries.push((parent.to_string(), EntryKind::Dir, &[]));
                    }
                    at += i + 1;
                }
                if listed.insert(path) {
                    entries.push((path.clone(), *kind, data));
                }
            }
            let flags = if mount.host { files::MOUNT_HOST } else { 0 };
            files::write_mount(
                &mut sink,
                mount.guest_path.as_bytes(),
                entries.len() as u32,
                flags,
            );
            for (path, kind, data) in entries {
                files::write_entry(&mut sink, kind, path.as_bytes(), data);
            }
        }
        Files(Arc::new(out))
    }
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    FilesError::Io {
        path: path.display().to_string(),
        source,
    }
    .into()
}

/// `path` relative to `root`, `/`-separated, UTF-8.
fn relative(root: &Path, path: &Path) -> Result<String> {
    // `path` comes from walking `root`, so it is always beneath it.
    let rel = path.strip_prefix(root).unwrap_or(path);
    let parts: Option<Vec<&str>> = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    parts
        .map(|p| p.join("/"))
        .ok_or_else(|| FilesError::NotUtf8(path.display().to_string()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_directories_are_encoded_with_parents_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/f.txt"), b"hi").unwrap();
        std::os::unix::fs::symlink("a/b/f.txt", dir.path().join("link")).unwrap();
        let mut builder = FilesBuilder::new();
        builder.host_dir(dir.path(), "/data").unwrap();
        builder
            .mount("/etc/app")
            .unwrap()
            .file("x/y", b"1".to_vec())
            .unwrap();
        let files = builder.build();
        let mut mounts = files::mounts(files.bytes()).unwrap();
        let data = mounts.next().unwrap().unwrap();
        assert_eq!(data.path, b"/data");
        let entries: Vec<_> = data
            .entries
            .map(|e| {
                let e = e.unwrap();
                (
                    String::from_utf8(e.path.to_vec()).unwrap(),
                    e.kind,
                    e.data.to_vec(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                ("a".into(), EntryKind::Dir, vec![]),
                ("a/b".into(), EntryKind::Dir, vec![]),
                ("a/b/f.txt".into(), EntryKind::File, b"hi".to_vec()),
                ("link".into(), EntryKind::Symlink, b"a/b/f.txt".to_vec()),
            ]
        );
        let app = mounts.next().unwrap().unwrap();
        let paths: Vec<_> = app.entries.map(|e| e.unwrap().path.to_vec()).collect();
        assert_eq!(
            paths,
            vec![b"x".to_vec(), b"x/y".to_vec()],
            "implied parent"
        );
        assert!(FilesBuilder::new().build().is_empty());
    }

    #[test]
    fn bad_paths_are_refused() {
        let mut b = FilesBuilder::new();
        for bad in ["data", "/tmp", "/a/../b", "/a/", "//a"] {
            assert!(b.mount(bad).is_err(), "{bad}");
        }
        assert!(b.file("x", vec![]).is_err(), "no mount yet");
        b.mount("/d").unwrap();
        assert!(b.mount("/d").is_err(), "twice");
        for bad in ["", "/x", "a/../b", "a//b", "./a"] {
            assert!(b.file(bad, vec![]).is_err(), "{bad}");
        }
        FilesBuilder::new()
            .host_dir(Path::new("/nonexistent"), "/x")
            .unwrap_err();
    }
}
