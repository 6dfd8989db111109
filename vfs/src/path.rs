//! Path resolution beneath a directory, as wasmtime resolves paths on
//! Linux: the kernel's lookup with `RESOLVE_BENEATH` (`openat2`) for whole
//! paths, and cap-std's split into a parent directory and a last component
//! for the calls that act on that component (`mkdirat`, `unlinkat`,
//! `renameat`, …). Matching both is what makes every errno the one
//! `wasmtime run` gives, trailing slashes and `.` included.

use alloc::vec::Vec;

use crate::tree::{Ino, Kind, Tree};
use crate::Errno;

/// Symlinks followed in one resolution before `ELOOP` (Linux's limit).
const MAX_SYMLINKS: usize = 40;
/// Longest path accepted.
pub const MAX_PATH: usize = 4096;
/// Longest name of one directory entry.
pub const MAX_NAME: usize = 255;

/// What a path resolved to.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolved {
    /// An existing inode.
    Exists(Ino),
    /// Nothing, under `name` in directory `dir` (where it could be
    /// created).
    Missing {
        /// The directory the last component would be in.
        dir: Ino,
        /// The last component.
        name: Vec<u8>,
    },
}

/// A resolution in progress: the directories from the base to where it
/// stands (so `..` never leaves the base), and the symlinks followed.
pub struct Walk<'t> {
    tree: &'t Tree,
    stack: Vec<Ino>,
    links: usize,
}

/// The last component of a path as the kernel classifies it.
enum Last<'p> {
    Name(&'p [u8]),
    Dot,
    DotDot,
}

impl<'t> Walk<'t> {
    /// A walk from directory `base`.
    pub fn new(tree: &'t Tree, base: Ino) -> Walk<'t> {
        Walk {
            tree,
            stack: alloc::vec![base],
            links: 0,
        }
    }

    fn here(&self) -> Ino {
        *self.stack.last().expect("never empty")
    }

    /// Walks every component of `path` but the last, following symlinks;
    /// returns the last and whether slashes follow it.
    fn parent<'p>(&mut self, path: &'p [u8]) -> Result<(Last<'p>, bool), Errno> {
        check(path)?;
        if path[0] == b'/' {
            // Beneath the base, an absolute path is an escape.
            return Err(Errno::Perm);
        }
        let trimmed = trim_slashes(path);
        let trailing = trimmed.len() < path.len();
        let mut parts = trimmed.split(|&b| b == b'/').filter(|p| !p.is_empty());
        let mut last = parts.next().ok_or(Errno::Noent)?;
        for next in parts {
            self.enter(last)?;
            last = next;
        }
        Ok((
            match last {
                b"." => Last::Dot,
                b".." => Last::DotDot,
                name => Last::Name(name),
            },
            trailing,
        ))
    }

    /// Steps into the directory `component` names.
    fn enter(&mut self, component: &[u8]) -> Result<(), Errno> {
        match component {
            b"." => Ok(()),
            b".." => self.up(),
            name => {
                let child = self.child(name)?.ok_or(Errno::Noent)?;
                let dir = match &self.tree.get(child).kind {
                    Kind::Symlink(target) => match self.follow(target, false)? {
                        Resolved::Exists(ino) => ino,
                        Resolved::Missing { .. } => return Err(Errno::Noent),
                    },
                    _ => child,
                };
                if !self.tree.get(dir).is_dir() {
                    return Err(Errno::Notdir);
                }
                if dir != self.here() {
                    self.stack.push(dir);
                }
                Ok(())
            }
        }
    }

    fn up(&mut self) -> Result<(), Errno> {
        if self.stack.len() == 1 {
            return Err(Errno::Perm);
        }
        self.stack.pop();
        Ok(())
    }

    fn child(&self, name: &[u8]) -> Result<Option<Ino>, Errno> {
        if name.len() > MAX_NAME {
            return Err(Errno::Nametoolong);
        }
        Ok(self.tree.get(self.here()).entries()?.get(name).copied())
    }

    /// Resolves a symlink's `target` from where the walk stands.
    fn follow(&mut self, target: &[u8], create: bool) -> Result<Resolved, Errno> {
        self.links += 1;
        if self.links > MAX_SYMLINKS {
            return Err(Errno::Loop);
        }
        self.resolve(target, true, create)
    }

    /// Resolves all of `path`, following a symlink in the last component if
    /// `follow` (or if a slash follows it). With `create` (`O_CREAT`), a
    /// last name with a slash after it is `EISDIR`, as the kernel answers.
    pub fn resolve(&mut self, path: &[u8], follow: bool, create: bool) -> Result<Resolved, Errno> {
        let (last, trailing) = self.parent(path)?;
        let name = match last {
            Last::Dot => return Ok(Resolved::Exists(self.here())),
            Last::DotDot => {
                self.up()?;
                return Ok(Resolved::Exists(self.here()));
            }
            Last::Name(name) => name,
        };
        if create && trailing {
            return Err(Errno::Isdir);
        }
        let Some(child) = self.child(name)? else {
            return Ok(Resolved::Missing {
                dir: self.here(),
                name: name.to_vec(),
            });
        };
        let found = match &self.tree.get(child).kind {
            Kind::Symlink(target) if follow || trailing => self.follow(target, create)?,
            _ => Resolved::Exists(child),
        };
        if trailing {
            match found {
                Resolved::Exists(ino) if !self.tree.get(ino).is_dir() => return Err(Errno::Notdir),
                Resolved::Missing { .. } => return Err(Errno::Noent),
                _ => {}
            }
        }
        Ok(found)
    }

    /// The existing inode `path` names (`ENOENT` if none).
    pub fn existing(&mut self, path: &[u8], follow: bool) -> Result<Ino, Errno> {
        match self.resolve(path, follow, false)? {
            Resolved::Exists(ino) => Ok(ino),
            Resolved::Missing { .. } => Err(Errno::Noent),
        }
    }

    /// The directory `path` names, following symlinks, as cap-std opens a
    /// parent directory (`O_DIRECTORY`); the empty path is the base.
    pub fn directory(&mut self, path: &[u8]) -> Result<Ino, Errno> {
        if path.is_empty() {
            return Ok(self.here());
        }
        let ino = self.existing(path, true)?;
        if !self.tree.get(ino).is_dir() {
            return Err(Errno::Notdir);
        }
        Ok(ino)
    }
}

fn trim_slashes(path: &[u8]) -> &[u8] {
    let end = path.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    &path[..end]
}

/// `ENOENT` for an empty path, `ENAMETOOLONG` past [`MAX_PATH`], `EINVAL`
/// for a NUL byte (no C string can hold it).
fn check(path: &[u8]) -> Result<(), Errno> {
    if path.is_empty() {
        return Err(Errno::Noent);
    }
    if path.len() > MAX_PATH {
        return Err(Errno::Nametoolong);
    }
    if path.contains(&0) {
        return Err(Errno::Inval);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use alloc::collections::BTreeMap;

    use super::*;
    use crate::tree::Data;

    /// root/{a/{f, up -> .., out -> ../.., abs -> /etc, self -> self}, l -> a/f, fs -> a/f/}
    fn tree() -> (Tree, Ino, Ino, Ino) {
        let mut t = Tree::new(1 << 20);
        let dir = |parent| Kind::Dir {
            entries: BTreeMap::new(),
            parent,
        };
        let root = t.add(dir(0), 0, 0);
        let a = t.add(dir(root), 0, 0);
        let f = t.add(Kind::File(Data::Static(b"x")), 0, 0);
        let link = |t: &mut Tree, parent: Ino, name: &[u8], target: &[u8]| {
            let l = t.add(Kind::Symlink(target.to_vec()), 0, 0);
            t.entries_mut(parent).unwrap().insert(name.to_vec(), l);
        };
        t.entries_mut(root).unwrap().insert(b"a".to_vec(), a);
        t.entries_mut(a).unwrap().insert(b"f".to_vec(), f);
        link(&mut t, a, b"up", b"..");
        link(&mut t, a, b"out", b"../..");
        link(&mut t, a, b"abs", b"/etc");
        link(&mut t, a, b"self", b"self");
        link(&mut t, root, b"l", b"a/f");
        link(&mut t, root, b"fs", b"a/f/");
        (t, root, a, f)
    }

    fn ino(t: &Tree, base: Ino, path: &str, follow: bool) -> Result<Ino, Errno> {
        Walk::new(t, base).existing(path.as_bytes(), follow)
    }

    #[test]
    fn resolves_inside_the_base() {
        let (t, root, a, f) = tree();
        assert_eq!(ino(&t, root, "a/f", false), Ok(f));
        assert_eq!(ino(&t, root, "./a//./f", false), Ok(f));
        assert_eq!(ino(&t, root, "a/../a/f", false), Ok(f));
        assert_eq!(ino(&t, root, ".", false), Ok(root));
        assert_eq!(ino(&t, root, "a/", false), Ok(a));
        assert_eq!(ino(&t, root, "l", true), Ok(f));
        assert_eq!(ino(&t, root, "a/up/a/f", false), Ok(f));
        assert_eq!(
            Walk::new(&t, root).resolve(b"a/new", false, false),
            Ok(Resolved::Missing {
                dir: a,
                name: b"new".to_vec()
            })
        );
        // Without follow the final symlink itself is found.
        assert_ne!(ino(&t, root, "l", false), Ok(f));
    }

    #[test]
    fn never_escapes_the_base() {
        let (t, root, a, _) = tree();
        assert_eq!(ino(&t, root, "..", false), Err(Errno::Perm));
        assert_eq!(ino(&t, root, "a/../..", false), Err(Errno::Perm));
        assert_eq!(ino(&t, a, "../a", false), Err(Errno::Perm), "relative to a");
        assert_eq!(ino(&t, root, "/a", false), Err(Errno::Perm));
        assert_eq!(ino(&t, root, "a/out/x", false), Err(Errno::Perm));
        assert_eq!(ino(&t, root, "a/abs", true), Err(Errno::Perm));
        assert_eq!(ino(&t, a, "up", true), Err(Errno::Perm), "a symlink to ..");
    }

    #[test]
    fn errors_are_the_kernel_s() {
        let (t, root, _, _) = tree();
        assert_eq!(ino(&t, root, "", false), Err(Errno::Noent));
        assert_eq!(ino(&t, root, "nope/x", false), Err(Errno::Noent));
        assert_eq!(ino(&t, root, "a/f/x", false), Err(Errno::Notdir));
        assert_eq!(ino(&t, root, "a/f/", false), Err(Errno::Notdir));
        assert_eq!(ino(&t, root, "a/self", true), Err(Errno::Loop));
        assert_eq!(ino(&t, root, "a\0", false), Err(Errno::Inval));
        assert_eq!(
            ino(&t, root, "fs", true),
            Err(Errno::Notdir),
            "a target's slash"
        );
        let long = "x".repeat(MAX_NAME + 1);
        assert_eq!(ino(&t, root, &long, false), Err(Errno::Nametoolong));
        // Creating through a trailing slash is EISDIR, even in a target.
        let mut w = Walk::new(&t, root);
        assert_eq!(w.resolve(b"new/", true, true), Err(Errno::Isdir));
        assert_eq!(
            Walk::new(&t, root).resolve(b"fs", true, true),
            Err(Errno::Isdir)
        );
    }
}
