//! File layers: OCI tar layers (`application/vnd.oci.image.layer.v1.tar`,
//! gzip accepted on import) holding a function's files, and the in-memory
//! tree they unpack to.
//!
//! Paths in a layer must be relative and stay inside the image: an
//! absolute path or a `..` component is refused, never resolved. Layers
//! stack as OCI specifies: a later layer replaces earlier entries, and
//! whiteouts (`.wh.NAME`, `.wh..wh..opq`) delete them. The tars wisp
//! writes are reproducible: entries sorted, owner 0, modification time 0.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// One file of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative, normalised, without `..`.
    pub path: PathBuf,
    /// What it is.
    pub kind: FileKind,
}

/// What a [`FileEntry`] is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file: its content and permission bits.
    File(Vec<u8>, u32),
    /// A directory.
    Dir,
    /// A symbolic link and its target, as stored (a consumer must resolve
    /// it inside the image's tree).
    Symlink(PathBuf),
}

/// Normalises a path found in a layer: `./` and leading `/`-less
/// components are kept, `.` dropped; `..` and absolute paths are refused.
/// `None` for the root itself.
pub fn normalize(path: &Path) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                return Err(Error::InvalidLayer(format!(
                    "entry `{}` has a `..` component: paths must stay inside the image",
                    path.display()
                )))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(Error::InvalidLayer(format!(
                    "entry `{}` is an absolute path: paths must be relative to the image root",
                    path.display()
                )))
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// A directory tree built from layers, by path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileTree {
    entries: BTreeMap<PathBuf, FileKind>,
}

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

impl FileTree {
    /// An empty tree.
    pub fn new() -> FileTree {
        FileTree::default()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry at `path`.
    pub fn get(&self, path: &Path) -> Option<&FileKind> {
        self.entries.get(path)
    }

    /// Adds (or replaces) an entry.
    pub fn insert(&mut self, path: PathBuf, kind: FileKind) {
        if kind != FileKind::Dir {
            // A file replacing a directory replaces its contents too.
            self.remove_tree(&path);
        }
        self.entries.insert(path, kind);
    }

    /// Removes `path` and everything under it; returns what `path` was.
    pub fn remove_tree(&mut self, path: &Path) -> Option<FileKind> {
        let under: Vec<PathBuf> = self
            .entries
            .range(path.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(path))
            .map(|(p, _)| p.clone())
            .collect();
        let mut removed = None;
        for p in under {
            let kind = self.entries.remove(&p);
            if p == path {
                removed = kind;
            }
        }
        removed
    }

    /// Regular files whose name ends in `suffix`.
    pub fn files_ending_with(&self, suffix: &str) -> Vec<PathBuf> {
        self.entries
            .iter()
            .filter(|(p, k)| {
                matches!(k, FileKind::File(..))
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.ends_with(suffix))
            })
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Applies a tar layer (gzip-compressed if `gzip`) on top of the tree.
    pub fn apply_layer(&mut self, reader: impl Read, gzip: bool) -> Result<()> {
        if gzip {
            self.apply_tar(flate2::read::GzDecoder::new(reader))
        } else {
            self.apply_tar(reader)
        }
    }

    fn apply_tar(&mut self, reader: impl Read) -> Result<()> {
        let bad = |e: io::Error| Error::InvalidLayer(format!("not a readable tar: {e}"));
        let mut archive = tar::Archive::new(reader);
        // Whiteouts apply to the layers below; the layer's own entries go
        // on top once it is read.
        let mut added: Vec<(PathBuf, FileKind)> = Vec::new();
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let raw = entry.path().map_err(bad)?.into_owned();
            let Some(path) = normalize(&raw)? else {
                continue;
            };
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if name == OPAQUE {
                let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
                let children: Vec<PathBuf> = self
                    .entries
                    .keys()
                    .filter(|p| p.starts_with(&dir) && **p != dir)
                    .cloned()
                    .collect();
                for p in children {
                    self.entries.remove(&p);
                }
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT) {
                self.remove_tree(&path.with_file_name(hidden));
                continue;
            }
            let header = entry.header();
            let mode = header.mode().unwrap_or(0o644) & 0o7777;
            let kind = match header.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mut data = Vec::with_capacity(entry.size() as usize);
                    entry.read_to_end(&mut data).map_err(bad)?;
                    FileKind::File(data, mode)
                }
                tar::EntryType::Directory => FileKind::Dir,
                tar::EntryType::Symlink => {
                    let target = entry.link_name().map_err(bad)?.ok_or_else(|| {
                        Error::InvalidLayer(format!("symlink `{}` has no target", raw.display()))
                    })?;
                    FileKind::Symlink(target.into_owned())
                }
                tar::EntryType::Link => {
                    let target = entry.link_name().map_err(bad)?.ok_or_else(|| {
                        Error::InvalidLayer(format!("hard link `{}` has no target", raw.display()))
                    })?;
                    let target = normalize(&target)?.unwrap_or_default();
                    let found = added
                        .iter()
                        .rev()
                        .find(|(p, _)| *p == target)
                        .map(|(_, k)| k)
                        .or_else(|| self.entries.get(&target));
                    match found {
                        Some(kind @ FileKind::File(..)) => kind.clone(),
                        _ => {
                            return Err(Error::InvalidLayer(format!(
                            "hard link `{}` points to `{}`, which is not an earlier regular file",
                            raw.display(),
                            target.display()
                        )))
                        }
                    }
                }
                // PAX and GNU long-name records are consumed by `tar`.
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
                other => {
                    return Err(Error::InvalidLayer(format!(
                    "entry `{}` is a {other:?}: only files, directories and links are supported",
                    raw.display()
                )))
                }
            };
            added.push((path, kind));
        }
        for (path, kind) in added {
            self.insert(path, kind);
        }
        Ok(())
    }

    /// Reads a directory on disk (not following symlinks). Sockets, FIFOs
    /// and devices are refused.
    pub fn from_dir(dir: &Path) -> Result<FileTree> {
        let mut tree = FileTree::new();
        let meta = fs::metadata(dir).ctx(|| format!("reading {}", dir.display()))?;
        if !meta.is_dir() {
            return Err(Error::InvalidLayer(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        tree.add_dir(dir, Path::new(""))?;
        Ok(tree)
    }

    fn add_dir(&mut self, dir: &Path, rel: &Path) -> Result<()> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .ctx(|| format!("reading {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .ctx(|| format!("reading {}", dir.display()))?;
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let rel = rel.join(&name);
            let meta = fs::symlink_metadata(&path).ctx(|| format!("reading {}", path.display()))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                self.entries.insert(rel.clone(), FileKind::Dir);
                self.add_dir(&path, &rel)?;
            } else if ft.is_file() {
                let data = fs::read(&path).ctx(|| format!("reading {}", path.display()))?;
                let mode = meta.permissions().mode() & 0o777;
                self.entries.insert(rel, FileKind::File(data, mode));
            } else if ft.is_symlink() {
                let target = fs::read_link(&path).ctx(|| format!("reading {}", path.display()))?;
                self.entries.insert(rel, FileKind::Symlink(target));
            } else {
                return Err(Error::InvalidLayer(format!(
                    "{} is not a regular file, directory or symlink",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    /// Writes the tree as a reproducible tar (sorted, owner 0, time 0).
    pub fn write_tar(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut builder = tar::Builder::new(out);
        for (path, kind) in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            match kind {
                FileKind::File(data, mode) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(data.len() as u64);
                    builder.append_data(&mut header, path, &data[..])?;
                }
                FileKind::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(0o755);
                    header.set_size(0);
                    builder.append_data(&mut header, path, io::empty())?;
                }
                FileKind::Symlink(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    builder.append_link(&mut header, path, target)?;
                }
            }
        }
        builder.finish()
    }

    /// The entries, sorted by path, with every parent directory present.
    pub fn into_entries(mut self) -> Vec<FileEntry> {
        let parents: Vec<PathBuf> = self
            .entries
            .keys()
            .flat_map(|p| {
                p.ancestors()
                    .skip(1)
                    .map(Path::to_path_buf)
                    .collect::<Vec<_>>()
            })
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        for p in parents {
            self.entries.entry(p).or_insert(FileKind::Dir);
        }
        self.entries
            .into_iter()
            .map(|(path, kind)| FileEntry { path, kind })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, ty, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*ty);
            h.set_mode(0o644);
            if *ty == tar::EntryType::Symlink || *ty == tar::EntryType::Link {
                h.set_size(0);
                h.set_link_name(std::str::from_utf8(data).unwrap()).unwrap();
                // `set_path` refuses `..`; write the raw name for hostile cases.
                let name = path.as_bytes();
                h.as_old_mut().name[..name.len()].copy_from_slice(name);
                h.set_cksum();
                b.append(&h, io::empty()).unwrap();
            } else {
                h.set_size(data.len() as u64);
                let name = path.as_bytes();
                h.as_old_mut().name[..name.len()].copy_from_slice(name);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn layers_stack_with_whiteouts() {
        let mut t = FileTree::new();
        let base = tar_of(&[
            ("etc/", tar::EntryType::Directory, b""),
            ("etc/a.conf", tar::EntryType::Regular, b"a"),
            ("etc/b.conf", tar::EntryType::Regular, b"b"),
            ("./lib/x", tar::EntryType::Regular, b"x"),
            ("lib/y", tar::EntryType::Link, b"lib/x"),
            ("cur", tar::EntryType::Symlink, b"etc/a.conf"),
        ]);
        t.apply_layer(&base[..], false).unwrap();
        assert_eq!(
            t.get(Path::new("lib/y")),
            Some(&FileKind::File(b"x".to_vec(), 0o644))
        );
        let top = tar_of(&[
            ("etc/.wh.a.conf", tar::EntryType::Regular, b""),
            ("lib/.wh..wh..opq", tar::EntryType::Regular, b""),
            ("lib/z", tar::EntryType::Regular, b"z"),
            ("etc/b.conf", tar::EntryType::Regular, b"B"),
        ]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&top).unwrap();
        t.apply_layer(&gz.finish().unwrap()[..], true).unwrap();
        let paths: Vec<String> = t
            .clone()
            .into_entries()
            .iter()
            .map(|e| e.path.display().to_string())
            .collect();
        assert_eq!(paths, ["cur", "etc", "etc/b.conf", "lib", "lib/z"]);
        assert_eq!(
            t.get(Path::new("etc/b.conf")),
            Some(&FileKind::File(b"B".to_vec(), 0o644))
        );
    }

    #[test]
    fn escaping_paths_are_refused() {
        for (path, ty, data) in [
            ("../evil", tar::EntryType::Regular, &b"x"[..]),
            ("a/../../evil", tar::EntryType::Regular, b"x"),
            ("/etc/passwd", tar::EntryType::Regular, b"x"),
            ("dev", tar::EntryType::Char, b""),
            ("h", tar::EntryType::Link, b"missing"),
        ] {
            let tar = tar_of(&[(path, ty, data)]);
            let err = FileTree::new().apply_layer(&tar[..], false).unwrap_err();
            assert!(matches!(err, Error::InvalidLayer(_)), "{path}: {err}");
        }
        assert!(FileTree::new().apply_layer(&b"garbage"[..], true).is_err());
    }

    #[test]
    fn directories_round_trip_reproducibly() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("conf/deep")).unwrap();
        fs::write(dir.path().join("conf/deep/x.txt"), b"deep").unwrap();
        fs::write(dir.path().join("run.sh"), b"#!").unwrap();
        fs::set_permissions(dir.path().join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("conf/deep/x.txt", dir.path().join("link")).unwrap();
        let long = "n".repeat(150);
        fs::write(dir.path().join(&long), b"long name").unwrap();
        let tree = FileTree::from_dir(dir.path()).unwrap();
        let mut a = Vec::new();
        tree.write_tar(&mut a).unwrap();
        let mut b = Vec::new();
        FileTree::from_dir(dir.path())
            .unwrap()
            .write_tar(&mut b)
            .unwrap();
        assert_eq!(a, b, "reproducible");
        let mut back = FileTree::new();
        back.apply_layer(&a[..], false).unwrap();
        assert_eq!(back, tree);
        let entries = back.into_entries();
        assert!(entries.contains(&FileEntry {
            path: "run.sh".into(),
            kind: FileKind::File(b"#!".to_vec(), 0o755)
        }));
        assert!(entries.contains(&FileEntry {
            path: "link".into(),
            kind: FileKind::Symlink("conf/deep/x.txt".into())
        }));
        assert!(entries.iter().any(|e| e.path == Path::new(&long)));
    }

    #[test]
    fn normalize_rules() {
        assert_eq!(normalize(Path::new("./a/./b")).unwrap(), Some("a/b".into()));
        assert_eq!(normalize(Path::new("./")).unwrap(), None);
        assert!(normalize(Path::new("/a")).is_err());
        assert!(normalize(Path::new("a/../b")).is_err());
    }
}
