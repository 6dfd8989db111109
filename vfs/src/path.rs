//! Path resolution, confined to the directory a path is relative to.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::tree::{Ino, Kind, Tree};
use crate::Errno;

/// Symlinks followed in one resolution before `ELOOP` (Linux's limit).
const MAX_SYMLINKS: usize = 40;
/// Longest path accepted.
pub const MAX_PATH: usize = 4096;
/// Longest name of one directory entry.
pub const MAX_NAME: usize = 255;

/// Where a path leads.
#[derive(Debug, PartialEq, Eq)]
pub struct Found {
    /// The directory holding the final component.
    pub parent: Ino,
    /// The final component, or `None` when the path ends in `.` or `..`
    /// (it names a directory but no entry of `parent` that could be
    /// created, removed or renamed).
    pub name: Option<Vec<u8>>,
    /// What the path names, if it exists.
    pub ino: Option<Ino>,
    /// The path ended in `/`: it must name a directory.
    pub trailing_slash: bool,
}

/// Resolves `path` relative to directory `base`. Symlinks in the middle are
/// followed; in the final component only if `follow`. `..` never leaves
/// `base`, and absolute paths or symlink targets are refused, with `EPERM`
/// as wasmtime's capability-based directories answer.
pub fn resolve(tree: &Tree, base: Ino, path: &[u8], follow: bool) -> Result<Found, Errno> {
    if path.is_empty() {
        return Err(Errno::Noent);
    }
    if path.len() > MAX_PATH {
        return Err(Errno::Nametoolong);
    }
    if path.contains(&0) {
        return Err(Errno::Inval);
    }
    if path[0] == b'/' {
        return Err(Errno::Perm);
    }
    let trailing_slash = path.ends_with(b"/");
    let mut stack: Vec<Ino> = alloc::vec![base];
    let mut parts: VecDeque<Vec<u8>> = components(path)?;
    let mut links = 0;
    // A path of only slashes and dots names `base` itself.
    let mut found = Found {
        parent: base,
        name: None,
        ino: Some(base),
        trailing_slash,
    };
    while let Some(part) = parts.pop_front() {
        let last = parts.is_empty();
        let here = *stack.last().expect("never empty");
        match part.as_slice() {
            b"." => {
                tree.get(here).entries()?;
                found = dir_itself(&stack, trailing_slash);
                continue;
            }
            b".." => {
                tree.get(here).entries()?;
                if stack.len() == 1 {
                    return Err(Errno::Perm);
                }
                stack.pop();
                found = dir_itself(&stack, trailing_slash);
                continue;
            }
            _ => {}
        }
        let child = tree.get(here).entries()?.get(&part).copied();
        let Some(child) = child else {
            if last {
                return Ok(Found {
                    parent: here,
                    name: Some(part),
                    ino: None,
                    trailing_slash,
                });
            }
            return Err(Errno::Noent);
        };
        if let Kind::Symlink(target) = &tree.get(child).kind {
            if !last || follow || trailing_slash {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Errno::Loop);
                }
                if target.first() == Some(&b'/') {
                    return Err(Errno::Perm);
                }
                if target.is_empty() {
                    return Err(Errno::Noent);
                }
                for p in components(target)?.into_iter().rev() {
                    parts.push_front(p);
                }
                continue;
            }
        }
        if last {
            found = Found {
                parent: here,
                name: Some(part),
                ino: Some(child),
                trailing_slash,
            };
        } else if tree.get(child).is_dir() {
            stack.push(child);
        } else {
            return Err(Errno::Notdir);
        }
    }
    if trailing_slash {
        if let Some(ino) = found.ino {
            if !tree.get(ino).is_dir() {
                return Err(Errno::Notdir);
            }
        }
    }
    Ok(found)
}

/// The directory on top of `stack`, named by `.` or `..`.
fn dir_itself(stack: &[Ino], trailing_slash: bool) -> Found {
    let here = *stack.last().expect("never empty");
    Found {
        parent: if stack.len() > 1 {
            stack[stack.len() - 2]
        } else {
            here
        },
        name: None,
        ino: Some(here),
        trailing_slash,
    }
}

/// The non-empty components of `path`, each at most [`MAX_NAME`] bytes.
fn components(path: &[u8]) -> Result<VecDeque<Vec<u8>>, Errno> {
    path.split(|&b| b == b'/')
        .filter(|p| !p.is_empty())
        .map(|p| {
            if p.len() > MAX_NAME {
                Err(Errno::Nametoolong)
            } else {
                Ok(p.to_vec())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use alloc::collections::BTreeMap;

    use super::*;
    use crate::tree::Data;

    /// root/{a/{f, up -> .., out -> ../.., abs -> /etc, self -> self}, l -> a/f}
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
        (t, root, a, f)
    }

    fn ino(t: &Tree, base: Ino, path: &str, follow: bool) -> Result<Option<Ino>, Errno> {
        resolve(t, base, path.as_bytes(), follow).map(|f| f.ino)
    }

    #[test]
    fn resolves_inside_the_base() {
        let (t, root, a, f) = tree();
        assert_eq!(ino(&t, root, "a/f", false), Ok(Some(f)));
        assert_eq!(ino(&t, root, "./a//./f", false), Ok(Some(f)));
        assert_eq!(ino(&t, root, "a/../a/f", false), Ok(Some(f)));
        assert_eq!(ino(&t, root, ".", false), Ok(Some(root)));
        assert_eq!(ino(&t, root, "a/", false), Ok(Some(a)));
        assert_eq!(ino(&t, root, "l", true), Ok(Some(f)));
        assert_eq!(ino(&t, root, "a/up/a/f", false), Ok(Some(f)));
        let new = resolve(&t, root, b"a/new", false).unwrap();
        assert_eq!(
            (new.parent, new.name.as_deref(), new.ino),
            (a, Some(&b"new"[..]), None)
        );
        // Without follow the final symlink itself is found.
        assert_ne!(ino(&t, root, "l", false), Ok(Some(f)));
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
        assert_eq!(
            ino(&t, a, "up", true),
            Err(Errno::Perm),
            "a symlink to .. of the base"
        );
    }

    #[test]
    fn errors_are_posix_ones() {
        let (t, root, _, _) = tree();
        assert_eq!(ino(&t, root, "", false), Err(Errno::Noent));
        assert_eq!(ino(&t, root, "nope/x", false), Err(Errno::Noent));
        assert_eq!(ino(&t, root, "a/f/x", false), Err(Errno::Notdir));
        assert_eq!(ino(&t, root, "a/f/", false), Err(Errno::Notdir));
        assert_eq!(ino(&t, root, "a/self", true), Err(Errno::Loop));
        assert_eq!(ino(&t, root, "a\0", false), Err(Errno::Inval));
        let long = "x".repeat(MAX_NAME + 1);
        assert_eq!(ino(&t, root, &long, false), Err(Errno::Nametoolong));
    }
}
