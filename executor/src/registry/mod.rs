//! Registries: base images pulled into the local store, images pushed from it, through
//! the `oci-client` crate (OCI distribution: token and basic auth, chunked uploads,
//! cross-repository mounts). kiln is synchronous, so a [`Registry`] owns a small tokio
//! runtime and blocks on it; progress comes back as [`Transfer`]s on the calling thread.
//!
//! - [`auth`]: credentials from Docker's and podman's files and helpers; `kiln login`.
//! - `pull`: manifest (an index picks this platform's), config, layers in parallel into
//!   the store's blobs, each verified against its digest while it streams.
//! - `push`: blobs the registry lacks (HEAD first; a mount from the repository the blob
//!   was pulled from when on the same registry), then the manifest.
//!
//! Plain http only for loopback hosts and hosts named with `--insecure-registry`, as
//! Docker decides.

pub mod auth;
mod pull;
mod push;

use std::collections::HashMap;
use std::sync::Mutex;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;

pub use auth::{AuthError, AuthFiles, Credentials};
pub use pull::{Fetched, Pulled};
pub use push::Pushed;

use crate::store::ImageStoreError;

/// OCI and Docker manifest media types.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Why a pull or push failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid reference {reference:?}: {source}")]
    Reference {
        reference: String,
        #[source]
        source: oci_client::ParseError,
    },
    /// `why` is the error with its causes (the client's own text hides them).
    #[error("{reference}: {why}")]
    Distribution {
        reference: String,
        why: String,
        #[source]
        source: Box<oci_client::errors::OciDistributionError>,
    },
    #[error(
        "{reference}: blob {digest} does not match its digest (got {actual}); nothing was stored"
    )]
    Digest {
        reference: String,
        digest: String,
        actual: String,
    },
    #[error("{reference}: blob {digest} is {actual} bytes, its descriptor says {expected}")]
    Size {
        reference: String,
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("{reference}: {media_type} is not an image manifest or index")]
    NotAnImage {
        reference: String,
        media_type: String,
    },
    #[error("{reference}: the image index has no manifest for {platform} (it has: {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("{reference}: {what} is not valid: {source}")]
    Json {
        reference: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{reference}: writing {digest}: {source}")]
    Io {
        reference: String,
        digest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the registry client: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the registry client's worker failed")]
    Worker,
    /// The build was cancelled mid-transfer (Ctrl-C, SIGTERM): nothing half-fetched is
    /// kept.
    #[error("{reference}: cancelled")]
    Cancelled { reference: String },
    #[error(transparent)]
    Store(#[from] ImageStoreError),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// What a build or `kiln pull`/`push` knows of registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// `--insecure-registry HOST[:PORT]`: plain http (loopback hosts always are).
    pub insecure: Vec<String>,
    /// Where credentials are read from and `kiln login` writes.
    pub auth: AuthFiles,
    /// How many blobs download or upload at once.
    pub parallel: usize,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure: Vec::new(),
            auth: AuthFiles::from_env(),
            parallel: 3,
        }
    }
}

/// One blob moving to or from a registry.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    pub action: TransferAction,
    pub digest: String,
    /// Bytes moved so far, and the blob's size.
    pub done: u64,
    pub total: u64,
    /// The last report of this blob: done (or, with `skipped`, not needed: already there).
    pub finished: bool,
    pub skipped: bool,
    /// Pushed by a cross-repository mount (no bytes sent).
    pub mounted: bool,
    pub seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferAction {
    Pull,
    Push,
}

/// A registry client for one build or command.
pub struct Registry {
    opts: RegistryOptions,
    runtime: tokio::runtime::Runtime,
    clients: Mutex<HashMap<String, oci_client::Client>>,
    /// Checked between the chunks of a pull (a build's token; never set otherwise).
    cancel: crate::CancelToken,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("insecure", &self.opts.insecure)
            .finish()
    }
}

/// Parses `reference` with Docker's rules (`busybox` → `docker.io/library/busybox:latest`).
pub fn parse_reference(reference: &str) -> Result<Reference, RegistryError> {
    reference
        .parse::<Reference>()
        .map_err(|source| RegistryError::Reference {
            reference: reference.to_string(),
            source,
        })
}

/// Whether `host` (`name[:port]`) is a loopback address.
fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Registry {
    pub fn new(opts: RegistryOptions) -> Result<Registry, RegistryError> {
        // rustls needs one process-wide crypto provider; kiln uses ring (already in the
        // tree for ADD's downloads). Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kiln-registry")
            .enable_all()
            .build()
            .map_err(RegistryError::Runtime)?;
        Ok(Registry {
            opts,
            runtime,
            clients: Mutex::new(HashMap::new()),
            cancel: crate::CancelToken::new(),
        })
    }

    /// The same client, stopping its transfers when `cancel` is cancelled.
    pub fn cancelled_by(mut self, cancel: crate::CancelToken) -> Registry {
        self.cancel = cancel;
        self
    }

    pub fn options(&self) -> &RegistryOptions {
        &self.opts
    }

    /// Whether `host` is spoken to in plain http.
    pub fn plain_http(&self, host: &str) -> bool {
        is_loopback(host) || self.opts.insecure.iter().any(|h| h == host)
    }

    /// The client for `reference`'s registry (one per host, so each has its protocol).
    fn client(&self, reference: &Reference) -> oci_client::Client {
        let host = reference.resolve_registry().to_string();
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        clients
            .entry(host.clone())
            .or_insert_with(|| {
                let protocol = if self.plain_http(&host) {
                    ClientProtocol::Http
                } else {
                    ClientProtocol::Https
                };
                oci_client::Client::new(ClientConfig {
                    protocol,
                    max_concurrent_download: self.opts.parallel,
                    max_concurrent_upload: self.opts.parallel,
                    connect_timeout: Some(std::time::Duration::from_secs(30)),
                    read_timeout: Some(std::time::Duration::from_secs(120)),
                    ..Default::default()
                })
            })
            .clone()
    }

    /// The credentials for `reference`'s registry.
    fn auth(&self, reference: &Reference) -> Result<RegistryAuth, RegistryError> {
        Ok(match self.opts.auth.lookup(reference.registry())? {
            Some(c) => RegistryAuth::Basic(c.username, c.secret),
            None => RegistryAuth::Anonymous,
        })
    }

    /// Runs `work` on the runtime while this thread hands its transfers to `on_transfer`.
    fn drive<T: Send>(
        &self,
        on_transfer: &mut dyn FnMut(Transfer),
        work: impl FnOnce(std::sync::mpsc::Sender<Transfer>) -> T + Send,
    ) -> Result<T, RegistryError> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            let worker = s.spawn(move || work(tx));
            for t in rx {
                on_transfer(t);
            }
            worker.join().map_err(|_| RegistryError::Worker)
        })
    }
}

fn distribution(
    reference: &Reference,
) -> impl FnOnce(oci_client::errors::OciDistributionError) -> RegistryError + '_ {
    move |e| {
        let mut why = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            let text = c.to_string();
            if !why.contains(&text) {
                why = format!("{why}: {text}");
            }
            cause = c.source();
        }
        RegistryError::Distribution {
            reference: reference.whole(),
            why,
            source: Box::new(e),
        }
    }
}

fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_plain_http() {
        for h in [
            "127.0.0.1:5000",
            "localhost",
            "localhost:80",
            "[::1]:5000",
            "127.3.2.1",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "docker.io",
            "10.0.0.1:5000",
            "registry.example:443",
            "[2001:db8::1]:5000",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn references_follow_docker_rules() {
        let r = parse_reference("busybox").unwrap();
        assert_eq!(r.whole(), "docker.io/library/busybox:latest");
        assert_eq!(r.resolve_registry(), "index.docker.io");
        let r = parse_reference("127.0.0.1:5000/a/b:1").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "a/b");
        assert!(parse_reference("Upper/Case").is_err());
    }
}
