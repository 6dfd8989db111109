//! Registry references, `[HOST[:PORT]/]REPOSITORY[:TAG][@sha256:HEX]`, as
//! docker, skopeo and containerd spell them, and how wisp tells them from
//! the names of its local store (`name:tag`, `sha256:…`).

use std::fmt;
use std::net::IpAddr;

use wisp_images::{Digest, Tag};

use crate::error::{Error, Result};

/// A reference to an image in a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryRef {
    inner: oci_client::Reference,
}

/// Whether the first `/`-separated component of `s` names a registry host
/// — it holds a `.` or a `:` (`example.org`, `127.0.0.1:5000`) or is
/// `localhost` — as docker decides. Such a reference is a registry's; any
/// other (`hello:1`, `team/app:2`, `sha256:…`) names the local store, so a
/// deploy never reaches a registry by accident.
pub fn names_registry(s: &str) -> bool {
    match s.split_once('/') {
        Some((host, _)) => host.contains('.') || host.contains(':') || host == "localhost",
        None => false,
    }
}

impl RegistryRef {
    /// Parses a reference. Without a registry host it is Docker Hub's
    /// (`alpine` is `docker.io/library/alpine:latest`), as docker pulls.
    pub fn parse(s: &str) -> Result<RegistryRef> {
        let inner: oci_client::Reference = s.parse().map_err(|e| Error::InvalidReference {
            reference: s.to_string(),
            reason: format!("{e}"),
        })?;
        if inner.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(Error::InvalidReference {
                reference: s.to_string(),
                reason: "repository names are lowercase".into(),
            });
        }
        if let Some(d) = inner.digest() {
            Digest::parse(d).map_err(|_| Error::InvalidReference {
                reference: s.to_string(),
                reason: format!("digest `{d}`: wisp stores only sha256:<64 lowercase hex digits>"),
            })?;
        }
        Ok(RegistryRef { inner })
    }

    /// Parses a reference that must name its registry host (see
    /// [`names_registry`]): what a deploy's `image` must be to be pulled.
    pub fn parse_explicit(s: &str) -> Result<RegistryRef> {
        if !names_registry(s) {
            return Err(Error::InvalidReference {
                reference: s.to_string(),
                reason: "it names no registry host (e.g. `registry.example.org/team/fn:1`)".into(),
            });
        }
        RegistryRef::parse(s)
    }

    /// The registry as the reference names it (`docker.io`,
    /// `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The repository within it (`team/fn`).
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag, if the reference has one.
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The manifest digest, if the reference pins one.
    pub fn digest(&self) -> Option<Digest> {
        self.inner.digest().and_then(|d| Digest::parse(d).ok())
    }

    /// The same repository at manifest `digest`.
    pub fn with_digest(&self, digest: &Digest) -> RegistryRef {
        RegistryRef {
            inner: oci_client::Reference::with_digest(
                self.registry().to_string(),
                self.repository().to_string(),
                digest.to_string(),
            ),
        }
    }

    /// The same repository at `tag`.
    pub fn with_tag(&self, tag: &str) -> RegistryRef {
        RegistryRef {
            inner: oci_client::Reference::with_tag(
                self.registry().to_string(),
                self.repository().to_string(),
                tag.to_string(),
            ),
        }
    }

    /// The local store's tag for an image pulled by this reference:
    /// `HOST/REPOSITORY:TAG`, as docker names pulled images. A reference
    /// by digest alone gets none (the image is found by its digest).
    pub fn local_tag(&self) -> Option<Tag> {
        if self.inner.digest().is_some() && self.inner.tag().is_none() {
            return None;
        }
        let tag = self.inner.tag().unwrap_or("latest");
        Tag::parse(&format!("{}/{}:{tag}", self.registry(), self.repository())).ok()
    }

    /// Whether the registry is on this machine (`localhost`, `127.0.0.0/8`,
    /// `::1`): such a registry is reached over plain HTTP, as docker treats
    /// loopback registries as insecure ones.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(self.registry())
    }

    pub(crate) fn oci(&self) -> &oci_client::Reference {
        &self.inner
    }
}

/// Whether `registry` (`HOST[:PORT]`, `[V6]:PORT`) is this machine.
fn is_loopback_host(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        registry.split(':').next().unwrap_or_default()
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.whole())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_references_are_told_from_local_ones() {
        for r in [
            "127.0.0.1:5000/team/fn:1",
            "localhost/fn",
            "ghcr.io/o/fn@sha256:aa",
            "registry.example.org/fn",
        ] {
            assert!(names_registry(r), "{r}");
        }
        for r in [
            "hello:1",
            "hello",
            "team/app:2",
            "sha256:0123456789abcdef",
            "0123abcd",
        ] {
            assert!(!names_registry(r), "{r}");
        }
        RegistryRef::parse_explicit("hello:1").unwrap_err();
    }

    #[test]
    fn parts_and_local_tags() {
        let r = RegistryRef::parse("127.0.0.1:5000/team/fn:1").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "team/fn");
        assert_eq!(r.tag(), Some("1"));
        assert_eq!(r.digest(), None);
        assert_eq!(
            r.local_tag().unwrap().to_string(),
            "127.0.0.1:5000/team/fn:1"
        );
        assert!(r.is_loopback());
        let d = Digest::of(b"x");
        let pinned = RegistryRef::parse(&format!("localhost:5000/fn@{d}")).unwrap();
        assert_eq!(pinned.digest(), Some(d.clone()));
        assert_eq!(pinned.local_tag(), None);
        assert_eq!(
            r.with_digest(&d).to_string(),
            format!("127.0.0.1:5000/team/fn@{d}")
        );
        let hub = RegistryRef::parse("alpine").unwrap();
        assert_eq!(hub.registry(), "docker.io");
        assert_eq!(hub.repository(), "library/alpine");
        assert_eq!(
            hub.local_tag().unwrap().to_string(),
            "docker.io/library/alpine:latest"
        );
        assert!(!hub.is_loopback());
    }

    #[test]
    fn bad_references_are_refused() {
        for bad in [
            "UPPER/x:1",
            "h.org/x@sha512:aa",
            "h.org/x@sha256:zz",
            "h.org/x:",
        ] {
            assert!(
                matches!(RegistryRef::parse(bad), Err(Error::InvalidReference { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "example.org",
            "10.0.0.1:5000",
            "[fe80::1]:5000",
            "localhost.example.org",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
