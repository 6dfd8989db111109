//! Credentials from the docker-style `config.json` that docker, podman,
//! skopeo, oras and containerd's tools share: `$DOCKER_CONFIG/config.json`,
//! else `~/.docker/config.json`. Its `auths` map a registry (`HOST[:PORT]`,
//! optionally with a scheme and path, as `https://index.docker.io/v1/`) to
//! a base64 `auth` of `user:password`, or to `username` and `password`.
//! Credential helpers (`credsStore`, `credHelpers`) and identity tokens are
//! not run: such a registry is reached anonymously.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use crate::error::{Error, Result};

/// The most of a `config.json` read: credentials are a few lines.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
struct Login {
    username: String,
    password: String,
}

/// The credentials of a `config.json`, by registry host.
#[derive(Clone, Default)]
pub struct Credentials {
    logins: BTreeMap<String, Login>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets themselves.
        f.debug_struct("Credentials")
            .field("registries", &self.logins.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Where the credentials are: `$DOCKER_CONFIG/config.json`, else
/// `$HOME/.docker/config.json`; `None` without either variable.
pub fn config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// The registry host an `auths` key names: `https://index.docker.io/v1/`
/// is `index.docker.io`, `127.0.0.1:5000` itself.
fn key_host(key: &str) -> &str {
    let rest = key.split_once("://").map_or(key, |(_, rest)| rest);
    rest.split('/').next().unwrap_or_default()
}

/// The host docker files a registry's credentials under: Docker Hub's are
/// under `index.docker.io`, whatever the reference called it.
fn canonical_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "registry-1.docker.io" => "index.docker.io",
        other => other,
    }
}

impl Credentials {
    /// Reads the credentials at [`config_path`]; none if there is no such
    /// file. A file that is not a `config.json` is an error, not anonymous
    /// access the user did not ask for.
    pub fn load() -> Result<Credentials> {
        match config_path() {
            Some(path) => Credentials::from_file(&path),
            None => Ok(Credentials::default()),
        }
    }

    /// Reads the credentials of `path`; none if it does not exist.
    pub fn from_file(path: &Path) -> Result<Credentials> {
        use std::io::Read;
        let bad = |reason: String| Error::Credentials {
            path: path.to_path_buf(),
            reason,
        };
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Credentials::default()),
            Err(e) => return Err(bad(e.to_string())),
        };
        let mut text = Vec::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(|e| bad(e.to_string()))?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(bad(format!("larger than {MAX_CONFIG_BYTES} bytes")));
        }
        Credentials::parse(&text).map_err(bad)
    }

    /// Parses a `config.json`'s text.
    fn parse(text: &[u8]) -> Result<Credentials, String> {
        let config: ConfigFile =
            serde_json::from_slice(text).map_err(|e| format!("not a docker config.json: {e}"))?;
        let mut logins = BTreeMap::new();
        for (key, entry) in config.auths {
            let login = match (entry.auth.filter(|a| !a.is_empty()), entry.username) {
                (Some(auth), _) => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .map_err(|e| format!("auths.\"{key}\".auth is not base64: {e}"))?;
                    let decoded = String::from_utf8(decoded)
                        .map_err(|_| format!("auths.\"{key}\".auth is not UTF-8"))?;
                    let (username, password) = decoded.split_once(':').ok_or_else(|| {
                        format!("auths.\"{key}\".auth is not base64 of `user:password`")
                    })?;
                    Login {
                        username: username.to_string(),
                        password: password.to_string(),
                    }
                }
                (None, Some(username)) => Login {
                    username,
                    password: entry.password.unwrap_or_default(),
                },
                // An entry a credential helper fills in, or an identity
                // token: nothing wisp can send.
                (None, None) => continue,
            };
            logins.insert(key_host(&key).to_string(), login);
        }
        Ok(Credentials { logins })
    }

    /// What to send to `registry` (`HOST[:PORT]` as a reference names it):
    /// its login if the file has one, else nothing (anonymous access, and
    /// a token the registry hands out to anyone).
    pub fn for_registry(&self, registry: &str) -> RegistryAuth {
        match self.logins.get(canonical_host(registry)) {
            Some(l) => RegistryAuth::Basic(l.username.clone(), l.password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }
}

/// A digest of what `auth` sends, to tell clients given other credentials
/// apart without keeping the secret itself as a key.
pub(crate) fn fingerprint(auth: &RegistryAuth) -> String {
    use sha2::{Digest as _, Sha256};
    let text = match auth {
        RegistryAuth::Anonymous => return String::new(),
        RegistryAuth::Basic(user, password) => format!("basic\0{user}\0{password}"),
        RegistryAuth::Bearer(token) => format!("bearer\0{token}"),
    };
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(c: &Credentials, registry: &str) -> Option<(String, String)> {
        match c.for_registry(registry) {
            RegistryAuth::Basic(u, p) => Some((u, p)),
            _ => None,
        }
    }

    #[test]
    fn auths_in_both_spellings() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3:cret");
        let text = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{auth}"}},
                "127.0.0.1:5000": {{"username": "bob", "password": "pw"}},
                "ghcr.io": {{}},
                "http://reg.example.org:8443/": {{"auth": "{auth}"}}
            }}, "credsStore": "desktop"}}"#
        );
        let c = Credentials::parse(text.as_bytes()).unwrap();
        let alice = Some(("alice".to_string(), "s3:cret".to_string()));
        assert_eq!(basic(&c, "docker.io"), alice);
        assert_eq!(basic(&c, "reg.example.org:8443"), alice);
        assert_eq!(
            basic(&c, "127.0.0.1:5000"),
            Some(("bob".into(), "pw".into()))
        );
        assert_eq!(basic(&c, "ghcr.io"), None, "an empty entry is anonymous");
        assert_eq!(basic(&c, "127.0.0.1:5001"), None);
        assert!(!format!("{c:?}").contains("pw"), "Debug shows no secret");
    }

    #[test]
    fn bad_files_are_errors_and_a_missing_one_is_anonymous() {
        for (text, problem) in [
            ("not json", "not a docker config.json"),
            (r#"{"auths":{"r":{"auth":"%%%"}}}"#, "not base64"),
            (
                r#"{"auths":{"r":{"auth":"bm9jb2xvbg=="}}}"#,
                "user:password",
            ),
        ] {
            let err = Credentials::parse(text.as_bytes()).err().unwrap();
            assert!(err.contains(problem), "{text}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let c = Credentials::from_file(&dir.path().join("config.json")).unwrap();
        assert!(matches!(c.for_registry("x"), RegistryAuth::Anonymous));
        std::fs::write(dir.path().join("config.json"), "[").unwrap();
        let err = Credentials::from_file(&dir.path().join("config.json")).unwrap_err();
        assert!(matches!(err, Error::Credentials { .. }), "{err}");
        assert_eq!(Credentials::parse(b"{}").unwrap().logins.len(), 0);
    }

    #[test]
    fn keys_name_hosts() {
        assert_eq!(key_host("https://index.docker.io/v1/"), "index.docker.io");
        assert_eq!(key_host("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(key_host("http://h:1/x"), "h:1");
    }
}
