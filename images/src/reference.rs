//! Image references: `name[:tag]` (the tag defaults to `latest`), a full
//! digest `sha256:<hex>`, or (for people at a prompt) a unique prefix of a
//! digest's hex digits.

use std::fmt;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// How an image is named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    /// `name:tag`.
    Tag(Tag),
    /// `sha256:<hex>`.
    Digest(Digest),
    /// 4 to 63 hex digits (optionally after `sha256:`) starting a digest.
    Prefix(String),
}

/// A `name:tag` reference.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag {
    /// The repository name, e.g. `hello` or `example.org/team/app`.
    pub name: String,
    /// The tag, e.g. `latest` or `v1.2`.
    pub tag: String,
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
            Reference::Prefix(p) => f.write_str(p),
        }
    }
}

fn invalid(reference: &str, reason: impl Into<String>) -> Error {
    Error::InvalidReference {
        reference: reference.to_string(),
        reason: reason.into(),
    }
}

/// One path component of a name: `[a-z0-9]+([._-][a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    !c.is_empty()
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && c.as_bytes()[0].is_ascii_alphanumeric()
        && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
}

impl Tag {
    /// Parses `name[:tag]`. Names are `/`-separated components of
    /// lowercase letters, digits and single `.`, `_` or `-` separators, at
    /// most 255 characters (the first component may carry a registry
    /// `:port`); tags are `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    pub fn parse(s: &str) -> Result<Tag> {
        // The tag follows the last `:` unless a `/` comes after it (then
        // the `:` was a registry port).
        let (name, tag) = match s.rfind(':') {
            Some(i) if !s[i..].contains('/') => (&s[..i], &s[i + 1..]),
            _ => (s, "latest"),
        };
        if name.is_empty() {
            return Err(invalid(s, "the name is empty"));
        }
        if name.len() > 255 {
            return Err(invalid(s, "the name is longer than 255 characters"));
        }
        for (i, component) in name.split('/').enumerate() {
            let component = match (i, component.split_once(':')) {
                (0, Some((host, port)))
                    if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    host
                }
                _ => component,
            };
            if !valid_component(component) {
                return Err(invalid(
                    s,
                    format!("name component `{component}` must be lowercase letters and digits, separated by single `.`, `_` or `-`"),
                ));
            }
        }
        let tag_ok = (1..=128).contains(&tag.len())
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            && (tag.as_bytes()[0].is_ascii_alphanumeric() || tag.as_bytes()[0] == b'_');
        if !tag_ok {
            return Err(invalid(
                s,
                format!("tag `{tag}` must be 1-128 of A-Z, a-z, 0-9, `_`, `.`, `-`, not starting with `.` or `-`"),
            ));
        }
        Ok(Tag {
            name: name.to_string(),
            tag: tag.to_string(),
        })
    }
}

impl Reference {
    /// Parses a reference (see the module docs).
    pub fn parse(s: &str) -> Result<Reference> {
        if let Some(rest) = s.strip_prefix("sha256:") {
            return if rest.len() == 64 {
                Digest::parse(s).map(Reference::Digest)
            } else if is_hex_prefix(rest) {
                Ok(Reference::Prefix(rest.to_string()))
            } else {
                Err(invalid(
                    s,
                    "a digest is sha256: and 64 lowercase hex digits (or at least 4 of them)",
                ))
            };
        }
        match Tag::parse(s) {
            Ok(tag) => Ok(Reference::Tag(tag)),
            // A bare hex string that is no valid name is a digest prefix
            // (hex that is a valid name is taken as a name).
            Err(e) => {
                if is_hex_prefix(s) {
                    Ok(Reference::Prefix(s.to_string()))
                } else {
                    Err(e)
                }
            }
        }
    }
}

fn is_hex_prefix(s: &str) -> bool {
    (4..64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &str) -> (String, String) {
        let t = Tag::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        (t.name, t.tag)
    }

    #[test]
    fn names_and_tags() {
        assert_eq!(tag("hello"), ("hello".into(), "latest".into()));
        assert_eq!(tag("hello:v1.2"), ("hello".into(), "v1.2".into()));
        assert_eq!(
            tag("example.org/team/my-app:1_0"),
            ("example.org/team/my-app".into(), "1_0".into())
        );
        assert_eq!(
            tag("localhost:5000/app"),
            ("localhost:5000/app".into(), "latest".into())
        );
        assert_eq!(
            tag("localhost:5000/app:x"),
            ("localhost:5000/app".into(), "x".into())
        );
        for bad in [
            "", ":x", "Hello", "a//b", "a/", "-a", "a-", "a:", "a:-x", "a:.x", "a b", "a:b:c",
            "../x",
        ] {
            assert!(Tag::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Tag::parse("a:b").unwrap().to_string(), "a:b");
    }

    #[test]
    fn digests_and_prefixes() {
        let d = Digest::of(b"x");
        assert_eq!(
            Reference::parse(&d.to_string()).unwrap(),
            Reference::Digest(d.clone())
        );
        assert_eq!(
            Reference::parse(&format!("sha256:{}", d.short())).unwrap(),
            Reference::Prefix(d.short().to_string())
        );
        // Hex that is also a valid name is a name.
        assert!(matches!(
            Reference::parse("abcd").unwrap(),
            Reference::Tag(_)
        ));
        Reference::parse("sha256:xyz").unwrap_err();
        Reference::parse("sha256:ab").unwrap_err();
        assert!(matches!(
            Reference::parse("Bad Ref").unwrap_err(),
            Error::InvalidReference { .. }
        ));
    }
}
