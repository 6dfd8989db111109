//! How wasmtime (cap-std, on Linux) takes a path apart for the calls that
//! act on its last component (`mkdirat`, `unlinkat`, `renameat`,
//! `linkat`, `symlinkat`, `readlinkat`, `utimensat` without following):
//! the directory part, opened first, and the last component. The guest's
//! filesystem (`wisp-vfs`) and the host's directories split paths with
//! these, so both give the errno wasmtime gives for `d/`, `d/.`, `..` or
//! `/f`.

use crate::wasi::Errno;

/// The last component of a split path: a name, or the directory itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base<'p> {
    /// A name in the directory.
    Name(&'p [u8]),
    /// `.`: the directory itself (what a trailing `/` or `/.` names).
    Dot,
}

/// One component of a path as Rust's `Path::components` gives them on
/// Unix: a leading `/`, a leading `.`, then the names and `..`, with
/// empty components and other `.`s dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Component<'p> {
    Root,
    CurDir,
    ParentDir,
    /// A name, and where it starts in the path.
    Normal(&'p [u8], usize),
}

/// The components of `path` (see [`Component`]), in order.
fn components(path: &[u8]) -> impl Iterator<Item = Component<'_>> {
    let first = if path.first() == Some(&b'/') {
        Some(Component::Root)
    } else if path == b"." || path.starts_with(b"./") {
        Some(Component::CurDir)
    } else {
        None
    };
    let mut at = 0;
    let rest = path.split(|&b| b == b'/').filter_map(move |part| {
        let start = at;
        at += part.len() + 1;
        match part {
            b"" | b"." => None,
            b".." => Some(Component::ParentDir),
            name => Some(Component::Normal(name, start)),
        }
    });
    first.into_iter().chain(rest)
}

/// The single name `path` is, as Rust's `Path` sees it (`f`, `f/`, `f/.`),
/// if it is one: wasmtime then looks it up with `fstatat` directly, with
/// no trailing-slash semantics.
pub fn single_name(path: &[u8]) -> Option<&[u8]> {
    let mut all = components(path);
    match (all.next(), all.next()) {
        (Some(Component::Normal(name, _)), None) => Some(name),
        _ => None,
    }
}

/// Splits `path` as cap-std's `open_parent` does: the directory part (to
/// be opened; empty for the starting directory) and the last component. A
/// path ending in `/` or `/.` names the directory itself (its last
/// component is `.`); so does one ending in `..`. The empty path is
/// `ENOENT`.
pub fn split_parent(path: &[u8]) -> Result<(&[u8], Base<'_>), Errno> {
    if path.is_empty() {
        return Err(Errno::Noent);
    }
    if !(path.ends_with(b"/") || path.ends_with(b"/.")) {
        match components(path).last() {
            Some(Component::Normal(name, at)) => {
                return Ok((strip_trailing_slashes(&path[..at]), Base::Name(name)))
            }
            Some(Component::CurDir) => return Ok((b"", Base::Dot)),
            _ => {}
        }
    }
    Ok((path, Base::Dot))
}

/// `path` without trailing slashes, unless that leaves nothing but `/`:
/// how wasmtime (cap-std's `strip_dir_suffix`) reads the paths of
/// `path_create_directory` and `path_rename`, whose trailing slashes mean
/// "a directory", not "its `.`".
pub fn strip_trailing_slashes(path: &[u8]) -> &[u8] {
    let mut end = path.len();
    while end > 1 && path[end - 1] == b'/' {
        end -= 1;
    }
    &path[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_as_cap_std_splits_them() {
        let name = |n: &'static str| Base::Name(n.as_bytes());
        assert_eq!(split_parent(b"a/b"), Ok((&b"a"[..], name("b"))));
        assert_eq!(split_parent(b"b"), Ok((&b""[..], name("b"))));
        assert_eq!(split_parent(b"a//b"), Ok((&b"a"[..], name("b"))));
        assert_eq!(split_parent(b"a/"), Ok((&b"a/"[..], Base::Dot)));
        assert_eq!(split_parent(b"a/."), Ok((&b"a/."[..], Base::Dot)));
        assert_eq!(split_parent(b"."), Ok((&b""[..], Base::Dot)));
        assert_eq!(split_parent(b".."), Ok((&b".."[..], Base::Dot)));
        assert_eq!(split_parent(b"a/.."), Ok((&b"a/.."[..], Base::Dot)));
        assert_eq!(split_parent(b"./b"), Ok((&b"."[..], name("b"))));
        assert_eq!(split_parent(b"/b"), Ok((&b"/"[..], name("b"))), "absolute");
        assert_eq!(split_parent(b"//b"), Ok((&b"/"[..], name("b"))));
        assert_eq!(split_parent(b""), Err(Errno::Noent));
    }

    #[test]
    fn single_names_are_rust_s() {
        assert_eq!(single_name(b"f"), Some(&b"f"[..]));
        assert_eq!(single_name(b"f/."), Some(&b"f"[..]));
        assert_eq!(single_name(b"f//"), Some(&b"f"[..]));
        assert_eq!(single_name(b"./f"), None);
        assert_eq!(single_name(b"a/f"), None);
        assert_eq!(single_name(b"/f"), None);
        assert_eq!(single_name(b".."), None);
        assert_eq!(single_name(b""), None);
    }

    #[test]
    fn only_trailing_slashes_are_stripped() {
        assert_eq!(strip_trailing_slashes(b"a//"), b"a");
        assert_eq!(strip_trailing_slashes(b"a/."), b"a/.");
        assert_eq!(strip_trailing_slashes(b"/"), b"/");
        assert_eq!(strip_trailing_slashes(b"//"), b"/");
    }
}
