//! wisp's OCI distribution client: the outermost level of the code cache.
//!
//! [`Registry::pull`] fetches an image from a registry into the local
//! image store ([`wisp_images::Store`]) and [`Registry::push`] sends a
//! stored image to one, through `oci-client` (the ORAS project's client
//! for the distribution API: auth challenges and tokens, chunked uploads,
//! manifest negotiation), byte for byte so digests survive the trip.
//!
//! A pull is checked and atomic:
//! - the manifest is hashed and, for a reference by digest, must be that
//!   digest; an index is narrowed to its wasm platform as an import does;
//! - every blob is downloaded into a staging layout in the store's
//!   `tmp/pull-<manifest>/`, hashed and counted as it streams (more bytes
//!   than the descriptor says stop it at once), and renamed to its digest
//!   only once both match; a registry serving wrong bytes is
//!   [`Error::Mismatch`] and the staging directory is removed whole;
//! - the staging layout is then imported ([`wisp_images::oci::import`]),
//!   which checks every blob again and every file layer, and records the
//!   image only once all of it is stored: a pull killed at any point
//!   leaves no image referenced, and the next pull of the same manifest
//!   resumes from the blobs already verified in the staging directory and
//!   continues a partly downloaded one with a range request (fetching it
//!   again from its start if the registry ignores ranges or the whole does
//!   not match); `wisp image gc` removes a staging directory abandoned for
//!   an hour;
//! - an image whose manifest and blobs are already stored is not fetched
//!   again: only the manifest is (to resolve a tag).
//!
//! Registries on this machine (`localhost`, `127.0.0.0/8`, `::1`) are
//! reached over plain HTTP, as docker treats them; others over HTTPS unless
//! listed in [`PLAIN_HTTP_ENV`] or asked with [`Options::plain_http`].
//! Credentials come from docker's `config.json` ([`auth`]).
#![forbid(unsafe_code)]

pub mod auth;
pub mod error;
mod pull;
mod push;
pub mod reference;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};

pub use auth::Credentials;
pub use error::{Error, Result};
pub use pull::Pulled;
pub use push::Pushed;
pub use reference::{names_registry, RegistryRef};

/// Registries (`HOST[:PORT]`, comma-separated) to reach over plain HTTP
/// besides the loopback ones, for the CLI and the daemon alike.
pub const PLAIN_HTTP_ENV: &str = "WISP_REGISTRY_PLAIN_HTTP";

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a read may wait for bytes: a registry that stalls mid-blob is
/// given up (and the pull resumes next time) rather than hung on.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// How to reach registries. Credentials are not among them: docker's
/// `config.json` is read at each operation, so a new login needs no
/// daemon restart.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Reach every registry over plain HTTP (`--plain-http`).
    pub plain_http: bool,
    /// Registries to reach over plain HTTP besides the loopback ones.
    pub plain_http_registries: Vec<String>,
}

impl Options {
    /// The options of the environment: [`PLAIN_HTTP_ENV`].
    pub fn from_env() -> Options {
        Options {
            plain_http: false,
            plain_http_registries: std::env::var(PLAIN_HTTP_ENV)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }

    /// Whether `reference`'s registry is reached over plain HTTP.
    pub fn uses_plain_http(&self, reference: &RegistryRef) -> bool {
        self.plain_http
            || reference.is_loopback()
            || self
                .plain_http_registries
                .iter()
                .any(|r| r == reference.registry())
    }
}

/// The most `oci-client`s a [`Registry`] keeps: past it they are all
/// dropped, so deploys naming ever new registries cannot grow it.
const MAX_CLIENTS: usize = 64;

/// What an `oci-client` is kept for: a registry, whether it is reached over
/// plain HTTP, and a digest of the credentials it was given (it keeps them,
/// and the tokens they got).
type ClientKey = (String, bool, String);

/// A client of OCI distribution registries. It keeps one `oci-client` per
/// registry (and protocol and credentials), with its connections and
/// tokens: building one loads the system's root certificates, tens of
/// milliseconds a warm deploy should not pay.
#[derive(Clone, Default)]
pub struct Registry {
    options: Options,
    clients: Arc<Mutex<HashMap<ClientKey, oci_client::Client>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A client with `options`.
    pub fn new(options: Options) -> Registry {
        Registry {
            options,
            clients: Arc::default(),
        }
    }

    /// An `oci-client` for `reference`'s registry, and what to send it
    /// (from docker's `config.json`, read now).
    fn client(
        &self,
        reference: &RegistryRef,
    ) -> Result<(oci_client::Client, oci_client::secrets::RegistryAuth)> {
        let auth = Credentials::load()?.for_registry(reference.registry());
        let plain = self.options.uses_plain_http(reference);
        let key = (
            reference.registry().to_string(),
            plain,
            auth::fingerprint(&auth),
        );
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok((client.clone(), auth));
        }
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        // reqwest is built without a default TLS provider (see
        // Cargo.toml); the first client installs ring's. Installing it
        // again fails harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = ClientConfig {
            protocol: if plain {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            // wisp picks an index's platform itself (as an import does).
            platform_resolver: None,
            user_agent: concat!("wisp/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let client = oci_client::Client::new(config);
        clients.insert(key, client.clone());
        Ok((client, auth))
    }
}

/// Runs store work (file locks, hashing, copies) off the async runtime's
/// threads, so a pull in the daemon never stalls its other requests.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| error::io("a blocking task of the pull")(std::io::Error::other(e)))?
}
