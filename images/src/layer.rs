//! File layers: OCI tar layers (`application/vnd.oci.image.layer.v1.tar`,
//! gzip accepted on import) holding a function's files, the in-memory tree
//! they unpack to, and the checks every layer passes.
//!
//! A layer is checked whenever it is read — at import, at build, and each
//! time the daemon reads an image's files, since the store on disk is
//! trusted no more than an import — by one walker, [`Unpacker`], which
//! reads the tar as it streams in and keeps (or, to only check, counts)
//! what it may hold:
//!
//! - regular files, directories, symlinks (their targets kept as written;
//!   the guest resolves them inside the image), and hard links to an
//!   earlier regular file of the same image, which get that file's content;
//! - paths inside the image: a leading `/` is stripped, as containerd and
//!   Docker do, so `/etc/app.toml` is `etc/app.toml`; a `..` component is
//!   refused wherever it is, even where it would stay inside;
//! - UTF-8 names of at most [`MAX_PATH_BYTES`] bytes, none under a file or
//!   a symlink.
//!
//! Devices, FIFOs, GNU sparse files (old GNU and PAX formats) and other
//! entry types are refused, as are bytes that are not a whole tar (a header
//! that does not check, data cut short). GNU and PAX long names and link
//! names are read by `tar`. The bounds of [`crate::limits`] — unpacked
//! bytes, entries, the expansion of a gzip layer — are enforced on the
//! stream, so a layer past them is refused having produced at most the
//! bound. Every refusal is an [`Error::InvalidLayer`] naming the layer and
//! the entry.
//!
//! Layers stack as OCI specifies: a later layer replaces earlier entries,
//! and whiteouts (`.wh.NAME`) and opaque markers (`.wh..wh..opq`) delete
//! what *lower* layers hold, never an entry of their own layer. Within one
//! layer a later entry of a path replaces an earlier one, as extracting the
//! tar would. The tars wisp writes are reproducible: entries sorted, owner
//! 0, modification time 0.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::digest::Digest;
use crate::error::{Error, IoContext, LayerProblem, Result};
use crate::fsx::open_regular;
use crate::limits::{Limits, MAX_PATH_BYTES};

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

/// Normalises a path found in a layer: `.` components and a leading `/`
/// are dropped (as containerd does); a `..` component is refused. `None`
/// for the root itself.
pub fn normalize(path: &Path) -> Result<Option<PathBuf>, LayerProblem> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::Normal(part) => out.push(part),
            Component::ParentDir => return Err(LayerProblem::ParentDir),
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

/// Bytes of a file's content reserved before it is read: the header's size
/// is the layer's word, not a fact, until the bytes are there.
const PREALLOCATE: u64 = 1 << 20;

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
        let removed = self.entries.remove(path);
        self.remove_children(path);
        removed
    }

    /// Removes everything under `dir` (the whole tree for the root, ``).
    fn remove_children(&mut self, dir: &Path) {
        // Paths order component by component, so a directory's descendants
        // follow it without a gap.
        let under: Vec<PathBuf> = self
            .entries
            .range(dir.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(dir))
            .filter(|(p, _)| p.as_path() != dir)
            .map(|(p, _)| p.clone())
            .collect();
        for p in under {
            self.entries.remove(&p);
        }
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

    /// Reads a directory on disk (not following symlinks) within `limits`
    /// (its files' bytes and its entries). FIFOs, sockets, devices, names
    /// that are not UTF-8 and names starting with `.wh.` (an OCI whiteout,
    /// which would vanish when the layer is unpacked) are refused.
    pub fn from_dir(dir: &Path, limits: &Limits) -> Result<FileTree> {
        let mut tree = FileTree::new();
        let meta = fs::metadata(dir).ctx(|| format!("reading {}", dir.display()))?;
        if !meta.is_dir() {
            return Err(Error::InvalidFile {
                path: dir.to_path_buf(),
                problem: LayerProblem::NotADirectory,
            });
        }
        let mut used = DirBudget {
            limits,
            entries: 0,
            bytes: 0,
        };
        tree.add_dir(dir, Path::new(""), &mut used)?;
        Ok(tree)
    }

    fn add_dir(&mut self, dir: &Path, rel: &Path, used: &mut DirBudget<'_>) -> Result<()> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .ctx(|| format!("reading {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .ctx(|| format!("reading {}", dir.display()))?;
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let rel = rel.join(&name);
            let bad = |problem| Error::InvalidFile {
                path: path.clone(),
                problem,
            };
            used.entries += 1;
            if used.entries > used.limits.max_entries {
                return Err(bad(LayerProblem::TooManyEntries {
                    limit: used.limits.max_entries,
                }));
            }
            let Some(name) = name.to_str() else {
                return Err(bad(LayerProblem::NotUtf8));
            };
            if name.starts_with(WHITEOUT) {
                return Err(bad(LayerProblem::ReservedName));
            }
            if rel.as_os_str().len() > MAX_PATH_BYTES {
                return Err(bad(LayerProblem::PathTooLong {
                    limit: MAX_PATH_BYTES,
                }));
            }
            let meta = fs::symlink_metadata(&path).ctx(|| format!("reading {}", path.display()))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                self.entries.insert(rel.clone(), FileKind::Dir);
                self.add_dir(&path, &rel, used)?;
            } else if ft.is_file() {
                // Opened without blocking and checked again: it may have
                // been swapped for a FIFO since it was listed.
                let file = open_regular(&path)?;
                let mode = file
                    .metadata()
                    .ctx(|| format!("reading {}", path.display()))?
                    .permissions()
                    .mode()
                    & 0o777;
                let room = used.limits.max_unpacked_bytes.saturating_sub(used.bytes);
                let mut data = Vec::new();
                file.take(room.saturating_add(1))
                    .read_to_end(&mut data)
                    .ctx(|| format!("reading {}", path.display()))?;
                if data.len() as u64 > room {
                    return Err(bad(LayerProblem::TooLarge {
                        limit: used.limits.max_unpacked_bytes,
                    }));
                }
                used.bytes += data.len() as u64;
                self.entries.insert(rel, FileKind::File(data, mode));
            } else if ft.is_symlink() {
                let target = fs::read_link(&path).ctx(|| format!("reading {}", path.display()))?;
                if target.to_str().is_none() {
                    return Err(bad(LayerProblem::NotUtf8));
                }
                self.entries.insert(rel, FileKind::Symlink(target));
            } else if ft.is_fifo() {
                return Err(bad(LayerProblem::Fifo));
            } else if ft.is_socket() {
                return Err(bad(LayerProblem::Socket));
            } else {
                return Err(bad(LayerProblem::Device));
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

/// What a directory being read by [`FileTree::from_dir`] has used so far.
struct DirBudget<'a> {
    limits: &'a Limits,
    entries: u64,
    bytes: u64,
}

/// Unpacks an image's file layers, lowest first, into a [`FileTree`],
/// checking every entry and the bounds as the bytes stream in (see the
/// module docs). The bounds hold for the image: they are summed over its
/// layers.
#[derive(Debug)]
pub struct Unpacker {
    tree: FileTree,
    limits: Limits,
    keep_data: bool,
    /// Each regular file's size (also when its content is not kept), for
    /// hard links to it.
    sizes: HashMap<PathBuf, u64>,
    /// Uncompressed tar bytes read, all layers.
    stream_bytes: u64,
    /// Bytes of file content, hard-linked copies included.
    file_bytes: u64,
    entries: u64,
}

impl Unpacker {
    /// An unpacker that keeps the files' content.
    pub fn new(limits: Limits) -> Unpacker {
        Unpacker::with(limits, true)
    }

    /// An unpacker that only checks: every byte is read and counted, but
    /// the tree's regular files are left empty.
    pub fn checker(limits: Limits) -> Unpacker {
        Unpacker::with(limits, false)
    }

    fn with(limits: Limits, keep_data: bool) -> Unpacker {
        Unpacker {
            tree: FileTree::new(),
            limits,
            keep_data,
            sizes: HashMap::new(),
            stream_bytes: 0,
            file_bytes: 0,
            entries: 0,
        }
    }

    /// The tree so far.
    pub fn tree(&self) -> &FileTree {
        &self.tree
    }

    /// The tree.
    pub fn into_tree(self) -> FileTree {
        self.tree
    }

    /// Applies the tar layer `layer` (gzip-compressed if `gzip`), read from
    /// `reader`, on top of the tree. On an error the tree is left partly
    /// changed: drop it.
    pub fn apply(&mut self, layer: &Digest, reader: impl Read, gzip: bool) -> Result<()> {
        let room = self
            .limits
            .max_unpacked_bytes
            .saturating_sub(self.stream_bytes);
        let mut stream = LayerStream::new(reader, gzip, room, self.limits);
        let upper = self.walk(layer, &mut stream)?;
        self.stream_bytes += stream.out;
        // The layer's own entries go on top once whiteouts have applied to
        // the layers below.
        for (path, kind) in upper.entries {
            self.tree.insert(path, kind);
        }
        Ok(())
    }

    /// Counts `size` more bytes of file content against the bound.
    fn charge(&mut self, size: u64) -> Result<(), LayerProblem> {
        match self.file_bytes.checked_add(size) {
            Some(total) if total <= self.limits.max_unpacked_bytes => {
                self.file_bytes = total;
                Ok(())
            }
            _ => Err(LayerProblem::TooLarge {
                limit: self.limits.max_unpacked_bytes,
            }),
        }
    }

    /// Reads one layer: whiteouts apply to the tree at once; the layer's
    /// entries are returned, to go on top.
    fn walk<R: Read>(&mut self, layer: &Digest, stream: &mut LayerStream<R>) -> Result<FileTree> {
        let fail = |entry: Option<&Path>, problem| Error::InvalidLayer {
            layer: layer.clone(),
            entry: entry.map(Path::to_path_buf),
            problem,
        };
        let mut upper = FileTree::new();
        let mut archive = tar::Archive::new(stream);
        let mut last: Option<PathBuf> = None;
        let entries = archive
            .entries()
            .map_err(|e| fail(None, stream_problem(e, None)))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| fail(None, stream_problem(e, last.as_deref())))?;
            let raw = PathBuf::from(OsStr::from_bytes(&entry.path_bytes()));
            last = Some(raw.clone());
            let at = |problem| fail(Some(&raw), problem);
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                return Err(at(LayerProblem::TooManyEntries {
                    limit: self.limits.max_entries,
                }));
            }
            let ty = entry.header().entry_type();
            if ty.is_pax_global_extensions() {
                // Archive-wide metadata (mtimes, comments): nothing wisp keeps.
                continue;
            }
            if raw.as_os_str().len() > MAX_PATH_BYTES {
                return Err(at(LayerProblem::PathTooLong {
                    limit: MAX_PATH_BYTES,
                }));
            }
            if raw.to_str().is_none() {
                return Err(at(LayerProblem::NotUtf8));
            }
            // Before anything reads its data: `tar` would expand the holes.
            if ty.is_gnu_sparse() || is_pax_sparse(&mut entry).map_err(at)? {
                return Err(at(LayerProblem::Sparse));
            }
            let path = match normalize(&raw).map_err(at)? {
                Some(path) => path,
                None if ty.is_dir() => continue,
                None => return Err(at(LayerProblem::Root)),
            };
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name == OPAQUE {
                self.tree
                    .remove_children(path.parent().unwrap_or(Path::new("")));
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT) {
                if hidden.is_empty()
                    || hidden == "."
                    || hidden == ".."
                    || hidden.starts_with(WHITEOUT)
                {
                    return Err(at(LayerProblem::BadWhiteout));
                }
                self.tree.remove_tree(&path.with_file_name(hidden));
                continue;
            }
            let lookup = |p: &Path| upper.get(p).or_else(|| self.tree.get(p));
            if let Some(parent) = path
                .ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty())
                .find(|a| lookup(a).is_some_and(|k| *k != FileKind::Dir))
            {
                return Err(at(LayerProblem::ParentNotDir(parent.to_path_buf())));
            }
            let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
            let kind = match ty {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let size = entry.size();
                    self.charge(size).map_err(at)?;
                    let mut data = Vec::new();
                    let mut content = (&mut entry).take(size);
                    let read = if self.keep_data {
                        data.reserve(size.min(PREALLOCATE) as usize);
                        content.read_to_end(&mut data).map(|n| n as u64)
                    } else {
                        io::copy(&mut content, &mut io::sink())
                    }
                    .map_err(|e| at(stream_problem(e, None)))?;
                    if read < size {
                        return Err(at(LayerProblem::Truncated {
                            declared: size,
                            read,
                        }));
                    }
                    self.sizes.insert(path.clone(), size);
                    FileKind::File(data, mode)
                }
                tar::EntryType::Directory => FileKind::Dir,
                tar::EntryType::Symlink => FileKind::Symlink(link_target(&entry).map_err(at)?),
                tar::EntryType::Link => {
                    let target = link_target(&entry).map_err(at)?;
                    let target = normalize(&target).map_err(at)?.unwrap_or_default();
                    let linked = match lookup(&target) {
                        Some(file @ FileKind::File(..)) => file.clone(),
                        _ => return Err(at(LayerProblem::HardLink(target))),
                    };
                    // A copy in the guest: it costs its bytes again.
                    let size = self.sizes.get(&target).copied().unwrap_or(0);
                    self.charge(size).map_err(at)?;
                    self.sizes.insert(path.clone(), size);
                    linked
                }
                t if t.is_character_special() || t.is_block_special() => {
                    return Err(at(LayerProblem::Device))
                }
                t if t.is_fifo() => return Err(at(LayerProblem::Fifo)),
                other => return Err(at(LayerProblem::UnsupportedType(other.as_byte()))),
            };
            upper.insert(path, kind);
        }
        Ok(upper)
    }
}

/// A link's target: present, UTF-8, of bounded length.
fn link_target<R: Read>(entry: &tar::Entry<'_, R>) -> Result<PathBuf, LayerProblem> {
    let target = entry
        .link_name_bytes()
        .filter(|t| !t.is_empty())
        .ok_or(LayerProblem::NoLinkTarget)?;
    if target.len() > MAX_PATH_BYTES {
        return Err(LayerProblem::PathTooLong {
            limit: MAX_PATH_BYTES,
        });
    }
    let target = std::str::from_utf8(&target).map_err(|_| LayerProblem::NotUtf8)?;
    Ok(PathBuf::from(target))
}

/// Whether PAX records describe the entry as a GNU sparse file (formats
/// 0.0 to 1.0 put their map in `GNU.sparse.*` records on a regular entry).
fn is_pax_sparse<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<bool, LayerProblem> {
    let bad = |e: io::Error| stream_problem(e, None);
    let Some(extensions) = entry.pax_extensions().map_err(bad)? else {
        return Ok(false);
    };
    for extension in extensions {
        if extension
            .map_err(bad)?
            .key_bytes()
            .starts_with(b"GNU.sparse.")
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A bound the stream hit, carried through `tar` inside an `io::Error`.
#[derive(Debug)]
struct Exceeded(LayerProblem);

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Exceeded {}

/// What an I/O error of a layer's stream means: a bound it hit, or a
/// stream that is not a (whole) tar.
pub(crate) fn stream_problem(e: io::Error, after: Option<&Path>) -> LayerProblem {
    if let Some(Exceeded(problem)) = e.get_ref().and_then(|e| e.downcast_ref::<Exceeded>()) {
        return problem.clone();
    }
    match after {
        Some(p) => LayerProblem::NotTar(format!("after entry `{}`: {e}", p.display())),
        None => LayerProblem::NotTar(e.to_string()),
    }
}

/// A reader that counts the bytes it passes on (the compressed bytes a
/// gzip decoder has consumed).
struct Counted<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

enum Source<R: Read> {
    Plain(R),
    // Every member, as gunzip and containerd read it (a layer may be
    // several gzip streams end to end). Buffered here rather than inside
    // the decoder, so that what it consumed is what was read less what is
    // still buffered.
    Gzip(Box<flate2::bufread::MultiGzDecoder<io::BufReader<Counted<R>>>>),
}

/// The bytes of a tar on their way to the tar reader: gunzipped if need
/// be, counted, and cut off at a bound on the bytes out and, for gzip, on
/// the expansion.
pub(crate) struct LayerStream<R: Read> {
    source: Source<R>,
    /// Bytes out so far.
    out: u64,
    /// Most bytes out.
    room: u64,
    limits: Limits,
}

impl<R: Read> LayerStream<R> {
    /// `reader`'s tar (gzip-compressed if `gzip`), of at most `room` bytes
    /// uncompressed, expanding at most as `limits` allow.
    pub(crate) fn new(reader: R, gzip: bool, room: u64, limits: Limits) -> LayerStream<R> {
        let source = if gzip {
            Source::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(
                io::BufReader::new(Counted {
                    inner: reader,
                    count: 0,
                }),
            )))
        } else {
            Source::Plain(reader)
        };
        LayerStream {
            source,
            out: 0,
            room,
            limits,
        }
    }
}

impl<R: Read> Read for LayerStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Ask for at most one byte past the bound, so a stream over it is
        // refused having produced no more.
        let ask = self.room.saturating_sub(self.out).saturating_add(1);
        let len = buf.len().min(usize::try_from(ask).unwrap_or(usize::MAX));
        let buf = &mut buf[..len];
        let n = match &mut self.source {
            Source::Plain(r) => r.read(buf)?,
            Source::Gzip(r) => r.read(buf)?,
        };
        self.out += n as u64;
        if self.out > self.room {
            return Err(io::Error::other(Exceeded(LayerProblem::TooLarge {
                limit: self.limits.max_unpacked_bytes,
            })));
        }
        if let Source::Gzip(r) = &self.source {
            let buffered = r.get_ref();
            let compressed = buffered.get_ref().count - buffered.buffer().len() as u64;
            if self.out > self.limits.expansion_grace_bytes
                && self.out > compressed.saturating_mul(self.limits.max_expansion_ratio)
            {
                return Err(io::Error::other(Exceeded(LayerProblem::Expansion {
                    limit: self.limits.max_expansion_ratio,
                    unpacked: self.out,
                    compressed,
                })));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{EXPANSION_GRACE_BYTES, MAX_EXPANSION_RATIO};
    use tar::EntryType as T;

    /// One entry of a hand-made tar: `data` is the content, or the link
    /// target of a link. Names are written raw, hostile ones included
    /// (`set_path` would refuse them).
    fn tar_of(entries: &[(&str, T, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, ty, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*ty);
            h.set_mode(0o640);
            let name = path.as_bytes();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            if *ty == T::Symlink || *ty == T::Link {
                h.set_size(0);
                h.set_link_name_literal(data).unwrap();
                h.set_cksum();
                b.append(&h, io::empty()).unwrap();
            } else {
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    /// Unpacks plain tar layers with `limits`, each named by its digest.
    fn unpack_with(limits: Limits, layers: &[&[u8]]) -> Result<FileTree> {
        let mut u = Unpacker::new(limits);
        for layer in layers {
            u.apply(&Digest::of(layer), *layer, false)?;
        }
        Ok(u.into_tree())
    }

    fn unpack(layers: &[&[u8]]) -> Result<FileTree> {
        unpack_with(Limits::DEFAULT, layers)
    }

    fn file(data: &[u8], mode: u32) -> Option<&'static FileKind> {
        Some(Box::leak(Box::new(FileKind::File(data.to_vec(), mode))))
    }

    /// The problem of a refused layer, checking the error names the layer
    /// and `entry`.
    fn refused(err: Error, layer: &[u8], entry: Option<&str>) -> LayerProblem {
        let text = err.to_string();
        match err {
            Error::InvalidLayer {
                layer: d,
                entry: e,
                problem,
            } => {
                assert_eq!(d, Digest::of(layer), "{text}");
                assert!(text.contains(&d.to_string()), "{text}");
                assert_eq!(e.as_deref(), entry.map(Path::new), "{text}");
                if let Some(entry) = entry {
                    assert!(text.contains(&format!("entry `{entry}`")), "{text}");
                }
                problem
            }
            other => panic!("not a layer refusal: {other:?}"),
        }
    }

    #[test]
    fn layers_stack_with_whiteouts() {
        let base = tar_of(&[
            ("etc/", T::Directory, b""),
            ("etc/a.conf", T::Regular, b"a"),
            ("etc/b.conf", T::Regular, b"b"),
            ("./lib/x", T::Regular, b"x"),
            ("lib/old", T::Regular, b"old"),
            ("cur", T::Symlink, b"etc/a.conf"),
        ]);
        let top = tar_of(&[
            ("etc/.wh.a.conf", T::Regular, b""),
            ("lib/.wh..wh..opq", T::Regular, b""),
            ("lib/z", T::Regular, b"z"),
            ("etc/b.conf", T::Regular, b"B"),
            // A whiteout hides what layers below hold, never an entry of
            // its own layer, wherever it comes.
            ("new", T::Regular, b"n"),
            (".wh.new", T::Regular, b""),
        ]);
        let mut u = Unpacker::new(Limits::DEFAULT);
        u.apply(&Digest::of(&base), &base[..], false).unwrap();
        u.apply(&Digest::of(&top), &gzip(&top)[..], true).unwrap();
        let t = u.into_tree();
        let paths: Vec<String> = t
            .clone()
            .into_entries()
            .iter()
            .map(|e| e.path.display().to_string())
            .collect();
        assert_eq!(paths, ["cur", "etc", "etc/b.conf", "lib", "lib/z", "new"]);
        assert_eq!(t.get(Path::new("etc/b.conf")), file(b"B", 0o640));
    }

    #[test]
    fn hard_links_to_earlier_files_get_their_content() {
        let base = tar_of(&[("lib/x", T::Regular, b"x")]);
        let mut top = tar_of(&[
            ("lib/y", T::Link, b"lib/x"),    // a lower layer's file
            ("lib/abs", T::Link, b"/lib/x"), // a leading `/` is stripped
            ("lib/w", T::Regular, b"w"),
            ("lib/v", T::Link, b"./lib/w"), // this layer's, earlier
            ("lib/u", T::Link, b"lib/v"),   // a link to a link
        ]);
        let tree = unpack(&[&base, &top]).unwrap();
        for (path, data) in [
            ("lib/y", b"x"),
            ("lib/abs", b"x"),
            ("lib/v", b"w"),
            ("lib/u", b"w"),
        ] {
            assert_eq!(tree.get(Path::new(path)), file(data, 0o640), "{path}");
        }
        // Anything else is refused, naming the link and its target.
        top = tar_of(&[("etc/", T::Directory, b""), ("s", T::Symlink, b"lib/x")]);
        for (link, target) in [
            (&b"/etc/passwd"[..], "etc/passwd"), // a host file
            (b"later", "later"),                 // not earlier
            (b"etc", "etc"),                     // a directory
            (b"s", "s"),                         // a symlink
        ] {
            let layer = tar_of(&[("h", T::Link, link), ("later", T::Regular, b"l")]);
            let err = unpack(&[&base, &top, &layer]).unwrap_err();
            assert_eq!(
                refused(err, &layer, Some("h")),
                LayerProblem::HardLink(target.into())
            );
        }
        let layer = tar_of(&[("h", T::Link, b"../lib/x")]);
        let err = unpack(&[&base, &layer]).unwrap_err();
        assert_eq!(refused(err, &layer, Some("h")), LayerProblem::ParentDir);
        let layer = tar_of(&[("h", T::Link, b"")]);
        let err = unpack(&[&layer]).unwrap_err();
        assert_eq!(refused(err, &layer, Some("h")), LayerProblem::NoLinkTarget);
    }

    #[test]
    fn every_refused_kind_names_the_layer_and_the_entry() {
        let mut sparse = tar::Header::new_gnu();
        sparse.set_entry_type(T::GNUSparse);
        sparse.set_size(512);
        sparse.set_mode(0o644);
        sparse.set_path("holes").unwrap();
        let gnu = sparse.as_gnu_mut().unwrap();
        gnu.set_real_size(1 << 40);
        gnu.sparse[0].set_offset((1 << 40) - 512);
        gnu.sparse[0].set_length(512);
        sparse.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&sparse, &[7u8; 512][..]).unwrap();
        let gnu_sparse = b.into_inner().unwrap();

        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([
            ("GNU.sparse.major", &b"1"[..]),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", b"holes"),
            ("GNU.sparse.realsize", b"1099511627776"),
        ])
        .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        b.append_data(&mut h, "GNUSparseFile.0/holes", &b"1\n0"[..])
            .unwrap();
        let pax_sparse = b.into_inner().unwrap();

        let cases: Vec<(Vec<u8>, Option<&str>, LayerProblem)> = vec![
            (
                tar_of(&[("../evil", T::Regular, b"x")]),
                Some("../evil"),
                LayerProblem::ParentDir,
            ),
            (
                tar_of(&[("a/../../evil", T::Regular, b"x")]),
                Some("a/../../evil"),
                LayerProblem::ParentDir,
            ),
            (
                tar_of(&[("a/..", T::Directory, b"")]),
                Some("a/.."),
                LayerProblem::ParentDir,
            ),
            (
                tar_of(&[("tty", T::Char, b"")]),
                Some("tty"),
                LayerProblem::Device,
            ),
            (
                tar_of(&[("sda", T::Block, b"")]),
                Some("sda"),
                LayerProblem::Device,
            ),
            (
                tar_of(&[("pipe", T::Fifo, b"")]),
                Some("pipe"),
                LayerProblem::Fifo,
            ),
            (
                tar_of(&[("vol", T::new(b'V'), b"")]),
                Some("vol"),
                LayerProblem::UnsupportedType(b'V'),
            ),
            (gnu_sparse, Some("holes"), LayerProblem::Sparse),
            (
                pax_sparse,
                Some("GNUSparseFile.0/holes"),
                LayerProblem::Sparse,
            ),
            (
                tar_of(&[("f", T::Regular, b"x"), ("f/g", T::Regular, b"y")]),
                Some("f/g"),
                LayerProblem::ParentNotDir("f".into()),
            ),
            (
                tar_of(&[("s", T::Symlink, b"/etc"), ("s/passwd", T::Regular, b"y")]),
                Some("s/passwd"),
                LayerProblem::ParentNotDir("s".into()),
            ),
            (
                tar_of(&[("d/.wh..", T::Regular, b"")]),
                Some("d/.wh.."),
                LayerProblem::BadWhiteout,
            ),
            (
                tar_of(&[(".wh.", T::Regular, b"")]),
                Some(".wh."),
                LayerProblem::BadWhiteout,
            ),
            (
                tar_of(&[("d/.wh..wh.x", T::Regular, b"")]),
                Some("d/.wh..wh.x"),
                LayerProblem::BadWhiteout,
            ),
            (
                tar_of(&[("./", T::Regular, b"x")]),
                Some("./"),
                LayerProblem::Root,
            ),
            (
                tar_of(&[("s", T::Symlink, b"")]),
                Some("s"),
                LayerProblem::NoLinkTarget,
            ),
        ];
        for (layer, entry, problem) in cases {
            let err = unpack(&[&layer]).unwrap_err();
            assert_eq!(refused(err, &layer, entry), problem, "{entry:?}");
        }
        // Not UTF-8 (Latin-1 `café`): named lossily.
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..4].copy_from_slice(b"caf\xe9");
        h.set_size(0);
        h.set_cksum();
        let layer = h.as_bytes().to_vec();
        let err = unpack(&[&layer]).unwrap_err();
        assert!(err.to_string().contains("entry `caf\u{fffd}`"), "{err}");
        assert!(
            matches!(
                err,
                Error::InvalidLayer {
                    problem: LayerProblem::NotUtf8,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn bytes_that_are_not_a_whole_tar_are_refused() {
        for garbage in [&b"garbage"[..], &[0x55; 4096][..]] {
            let err = unpack(&[garbage]).unwrap_err();
            assert!(
                matches!(refused(err, garbage, None), LayerProblem::NotTar(_)),
                "{garbage:?}"
            );
        }
        let err = Unpacker::new(Limits::DEFAULT)
            .apply(&Digest::of(b"x"), &b"not gzip at all"[..], true)
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidLayer {
                    problem: LayerProblem::NotTar(_),
                    ..
                }
            ),
            "{err}"
        );
        // Cut inside a file's data, and inside a header.
        let whole = tar_of(&[("a", T::Regular, b"a"), ("big", T::Regular, &[1; 5000])]);
        let cut = &whole[..512 * 3 + 100];
        let err = unpack(&[cut]).unwrap_err();
        assert_eq!(
            refused(err, cut, Some("big")),
            LayerProblem::Truncated {
                declared: 5000,
                read: 100
            }
        );
        let cut = &whole[..512 * 2 + 100];
        let err = unpack(&[cut]).unwrap_err();
        match refused(err, cut, None) {
            LayerProblem::NotTar(why) => assert!(why.contains("after entry `a`"), "{why}"),
            other => panic!("{other:?}"),
        }
        // ... and gzip cut short.
        let gz = gzip(&whole);
        let cut = &gz[..gz.len() / 2];
        let mut u = Unpacker::new(Limits::DEFAULT);
        let err = u.apply(&Digest::of(cut), cut, true).unwrap_err();
        assert!(matches!(err, Error::InvalidLayer { .. }), "{err}");
    }

    #[test]
    fn every_member_of_a_gzip_layer_is_read() {
        // Two gzip streams end to end (`cat a.gz b.gz`), split inside the
        // second entry's data.
        let whole = tar_of(&[("a", T::Regular, b"a"), ("b", T::Regular, &[2; 3000])]);
        let mut layer = gzip(&whole[..2000]);
        layer.extend(gzip(&whole[2000..]));
        let mut u = Unpacker::new(Limits::DEFAULT);
        u.apply(&Digest::of(&layer), &layer[..], true).unwrap();
        assert_eq!(u.tree().get(Path::new("b")), file(&[2; 3000], 0o640));
    }

    #[test]
    fn long_names_and_link_names_are_read_in_both_formats() {
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(120));
        let target = format!("{}/{}", "t".repeat(150), "x");
        // GNU: `L` and `K` records, as `tar::Builder` writes for a GNU header.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"long"[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(T::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "link", &target).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(T::Link);
        h.set_size(0);
        b.append_link(&mut h, "hard", &long).unwrap();
        let gnu = b.into_inner().unwrap();
        // PAX: `path` and `linkpath` records.
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("path", long.as_bytes())])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(4);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &b"long"[..]).unwrap();
        b.append_pax_extensions([("path", &b"hard"[..]), ("linkpath", long.as_bytes())])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(T::Link);
        h.set_size(0);
        h.set_cksum();
        b.append(&h, io::empty()).unwrap();
        let pax = b.into_inner().unwrap();
        for layer in [gnu, pax] {
            let tree = unpack(&[&layer]).unwrap();
            assert_eq!(tree.get(Path::new(&long)), file(b"long", 0o644));
            assert_eq!(tree.get(Path::new("hard")), file(b"long", 0o644));
        }
        let tree = unpack(&[&gnu_with_symlink(&target)]).unwrap();
        assert_eq!(
            tree.get(Path::new("link")),
            Some(&FileKind::Symlink(target.into()))
        );
        // A name longer than a path can be is refused.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        b.append_data(&mut h, "n/".repeat(2100), io::empty())
            .unwrap();
        let layer = b.into_inner().unwrap();
        let err = unpack(&[&layer]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidLayer {
                    problem: LayerProblem::PathTooLong { .. },
                    ..
                }
            ),
            "{err}"
        );
    }

    fn gnu_with_symlink(target: &str) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(T::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "link", target).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn absolute_paths_are_stripped_and_later_entries_win() {
        let base = tar_of(&[
            ("/etc/app.toml", T::Regular, b"1"),
            ("/etc/app.toml", T::Regular, b"2"),
            ("dir/sub/x", T::Regular, b"x"),
        ]);
        let top = tar_of(&[("dir", T::Regular, b"now a file")]);
        let tree = unpack(&[&base, &top]).unwrap();
        assert_eq!(tree.get(Path::new("etc/app.toml")), file(b"2", 0o640));
        let paths: Vec<_> = tree.into_entries().into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            [
                Path::new("dir"),
                Path::new("etc"),
                Path::new("etc/app.toml")
            ]
        );
    }

    #[test]
    fn entries_are_bounded_over_the_image() {
        let limits = Limits {
            max_entries: 3,
            ..Limits::DEFAULT
        };
        let a = tar_of(&[("a", T::Regular, b""), ("b", T::Regular, b"")]);
        let b = tar_of(&[("c", T::Regular, b""), ("d", T::Regular, b"")]);
        unpack_with(limits, &[&a]).unwrap();
        let err = unpack_with(limits, &[&a, &b]).unwrap_err();
        assert_eq!(
            refused(err, &b, Some("d")),
            LayerProblem::TooManyEntries { limit: 3 }
        );
    }

    #[test]
    fn unpacked_bytes_are_bounded_before_they_are_read() {
        let limits = Limits {
            max_unpacked_bytes: 64 << 10,
            ..Limits::DEFAULT
        };
        // A header declaring 1 TiB with no data behind it: refused for its
        // size, not read (it would be `Truncated` if it were).
        let mut h = tar::Header::new_gnu();
        h.set_size(1 << 40);
        h.set_path("huge").unwrap();
        h.set_cksum();
        let huge = h.as_bytes().to_vec();
        for limits in [limits, Limits::DEFAULT] {
            let err = unpack_with(limits, &[&huge]).unwrap_err();
            assert_eq!(
                refused(err, &huge, Some("huge")),
                LayerProblem::TooLarge {
                    limit: limits.max_unpacked_bytes
                }
            );
        }
        // Summed over layers, and hard-linked copies count.
        let a = tar_of(&[("a", T::Regular, &[1; 30 << 10])]);
        let b = tar_of(&[("b", T::Regular, &[2; 30 << 10])]);
        unpack_with(limits, &[&a, &b]).unwrap();
        let err = unpack_with(limits, &[&a, &b, &a]).unwrap_err();
        assert!(matches!(
            refused(err, &a, Some("a")),
            LayerProblem::TooLarge { .. }
        ));
        let links = tar_of(&[("l1", T::Link, b"a"), ("l2", T::Link, b"a")]);
        let err = unpack_with(limits, &[&a, &links]).unwrap_err();
        assert!(matches!(
            refused(err, &links, Some("l2")),
            LayerProblem::TooLarge { .. }
        ));
        // Metadata counts too: a long name the size of the bound is cut
        // off as it streams.
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("comment", &vec![b'x'; 100 << 10][..])])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        b.append_data(&mut h, "f", io::empty()).unwrap();
        let layer = b.into_inner().unwrap();
        let err = unpack_with(limits, &[&layer]).unwrap_err();
        assert!(matches!(
            refused(err, &layer, None),
            LayerProblem::TooLarge { .. }
        ));
        unpack(&[&layer]).unwrap();
    }

    #[test]
    fn a_decompression_bomb_is_refused_early() {
        // 64 MiB of zeros in one file compress about a thousand to one.
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::best(),
        ));
        let mut h = tar::Header::new_gnu();
        h.set_size(64 << 20);
        b.append_data(&mut h, "zeros", io::repeat(0).take(64 << 20))
            .unwrap();
        let bomb = b.into_inner().unwrap().finish().unwrap();
        assert!(bomb.len() < 1 << 20, "{}", bomb.len());
        let mut u = Unpacker::checker(Limits::DEFAULT);
        let err = u.apply(&Digest::of(&bomb), &bomb[..], true).unwrap_err();
        match refused(err, &bomb, Some("zeros")) {
            LayerProblem::Expansion {
                limit,
                unpacked,
                compressed,
            } => {
                assert_eq!(limit, MAX_EXPANSION_RATIO);
                // Refused right past the grace: what it produced is bounded.
                assert!(unpacked <= EXPANSION_GRACE_BYTES + (64 << 10), "{unpacked}");
                assert!(compressed < unpacked / limit);
            }
            other => panic!("{other:?}"),
        }
        // Small layers are under the grace whatever their ratio: an empty
        // tar is 10 KiB of zeros.
        let empty = gzip(&tar::Builder::new(Vec::new()).into_inner().unwrap());
        let mut u = Unpacker::new(Limits::DEFAULT);
        u.apply(&Digest::of(&empty), &empty[..], true).unwrap();
        assert!(u.tree().is_empty());
    }

    #[test]
    fn a_checker_keeps_no_content_but_counts_it() {
        // 4.5 KiB of tar holding 6000 bytes of content.
        let layer = tar_of(&[("a", T::Regular, &[1; 3000]), ("b", T::Link, b"a")]);
        let mut u = Unpacker::checker(Limits {
            max_unpacked_bytes: 5999,
            ..Limits::DEFAULT
        });
        let err = u.apply(&Digest::of(&layer), &layer[..], false).unwrap_err();
        assert!(matches!(
            refused(err, &layer, Some("b")),
            LayerProblem::TooLarge { .. }
        ));
        let mut u = Unpacker::checker(Limits::DEFAULT);
        u.apply(&Digest::of(&layer), &layer[..], false).unwrap();
        assert_eq!(u.tree().get(Path::new("b")), file(b"", 0o640));
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
        let tree = FileTree::from_dir(dir.path(), &Limits::DEFAULT).unwrap();
        let mut a = Vec::new();
        tree.write_tar(&mut a).unwrap();
        let mut b = Vec::new();
        FileTree::from_dir(dir.path(), &Limits::DEFAULT)
            .unwrap()
            .write_tar(&mut b)
            .unwrap();
        assert_eq!(a, b, "reproducible");
        let back = unpack(&[&a]).unwrap();
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
    fn directories_with_what_an_image_cannot_hold_are_refused() {
        let problem = |setup: &dyn Fn(&Path), limits: Limits| {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("ok"), b"12345").unwrap();
            setup(dir.path());
            match FileTree::from_dir(dir.path(), &limits) {
                Err(Error::InvalidFile { path, problem }) => {
                    assert!(path.starts_with(dir.path()), "{}", path.display());
                    problem
                }
                other => panic!("{other:?}"),
            }
        };
        let d = Limits::DEFAULT;
        let fifo =
            |p: &Path| nix::unistd::mkfifo(&p.join("pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(problem(&fifo, d), LayerProblem::Fifo);
        let socket = |p: &Path| {
            std::mem::forget(std::os::unix::net::UnixListener::bind(p.join("sock")).unwrap())
        };
        assert_eq!(problem(&socket, d), LayerProblem::Socket);
        let whiteout = |p: &Path| fs::write(p.join(".wh.ok"), b"").unwrap();
        assert_eq!(problem(&whiteout, d), LayerProblem::ReservedName);
        let not_utf8 = |p: &Path| fs::write(p.join(OsStr::from_bytes(b"\xff")), b"").unwrap();
        assert_eq!(problem(&not_utf8, d), LayerProblem::NotUtf8);
        let none = |_: &Path| {};
        let small = Limits {
            max_unpacked_bytes: 4,
            ..d
        };
        assert_eq!(problem(&none, small), LayerProblem::TooLarge { limit: 4 });
        let two = |p: &Path| fs::write(p.join("two"), b"").unwrap();
        let one = Limits {
            max_entries: 1,
            ..d
        };
        assert_eq!(
            problem(&two, one),
            LayerProblem::TooManyEntries { limit: 1 }
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(
            FileTree::from_dir(file.path(), &d),
            Err(Error::InvalidFile {
                problem: LayerProblem::NotADirectory,
                ..
            })
        ));
    }

    #[test]
    fn normalize_rules() {
        assert_eq!(normalize(Path::new("./a/./b")).unwrap(), Some("a/b".into()));
        assert_eq!(normalize(Path::new("./")).unwrap(), None);
        assert_eq!(normalize(Path::new("/a//b/")).unwrap(), Some("a/b".into()));
        assert_eq!(normalize(Path::new("/")).unwrap(), None);
        assert_eq!(normalize(Path::new("a/../b")), Err(LayerProblem::ParentDir));
        assert_eq!(normalize(Path::new("..")), Err(LayerProblem::ParentDir));
    }
}
