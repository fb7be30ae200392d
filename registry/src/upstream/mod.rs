//! External registries, for import and pull-through (callers: `service::import`, `service::manifests` and
//! `service::pullthrough`). One client per transport ([`http`]), built with the outbound rules ([`guard`]); the
//! `allowedRegistriesForImport` check; plain http or unverified TLS only for a source marked insecure; upstream
//! failures as one typed [`UpstreamError`] that keeps what the client needs to know (a 429 stays a 429, a refusal
//! by the rules says which rule).

pub mod guard;
mod http;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use names::Digest;
use streams::manifest::SUPPORTED;

pub use guard::Outbound;
use guard::{Refused, Rules};
use http::{RegistryClient, Scheme, WireError};

/// An external image reference (`quay.io/ns/app:1.0`, `registry:5000/a/b@sha256:…`, `python:3.6`), normalised as
/// Docker does (`python` is `docker.io/library/python:latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRef(oci_client::Reference);

impl std::str::FromStr for ExternalRef {
    type Err = UpstreamError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || s.contains("://") {
            return Err(UpstreamError::InvalidReference(format!("{s:?} is not an image reference")));
        }
        s.parse::<oci_client::Reference>()
            .map(ExternalRef)
            .map_err(|e| UpstreamError::InvalidReference(format!("{s:?}: {e}")))
    }
}

impl std::fmt::Display for ExternalRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.whole())
    }
}

impl ExternalRef {
    /// The registry host (`docker.io`, `localhost:5000`).
    pub fn registry(&self) -> &str {
        self.0.registry()
    }

    /// The repository path within the registry (`library/python`).
    pub fn repository(&self) -> &str {
        self.0.repository()
    }

    pub fn tag(&self) -> Option<&str> {
        self.0.tag()
    }

    pub fn digest(&self) -> Option<&str> {
        self.0.digest()
    }

    /// `registry/repository` (what a tag event's pull spec starts with).
    pub fn repository_ref(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// The same repository at `digest`.
    pub fn at_digest(&self, digest: &Digest) -> ExternalRef {
        ExternalRef(oci_client::Reference::with_digest(
            self.registry().to_owned(),
            self.repository().to_owned(),
            digest.to_string(),
        ))
    }

    /// The same repository at `tag`.
    pub fn at_tag(&self, tag: &str) -> ExternalRef {
        ExternalRef(oci_client::Reference::with_tag(
            self.registry().to_owned(),
            self.repository().to_owned(),
            tag.to_owned(),
        ))
    }
}

/// Everything that can go wrong talking to an upstream, in the terms a client or a tag condition needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0}")]
    InvalidReference(String),
    #[error("registry {0} is not in allowedRegistriesForImport")]
    NotAllowed(String),
    /// The outbound rules refused an address or a redirect (link-local, unspecified, private with
    /// `outbound-deny-private`, or a redirect outside `allowedRegistriesForImport`).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    TooManyRequests(String),
    /// Could not reach the upstream, or it failed (5xx, broken connection, TLS).
    #[error("{0}")]
    Unavailable(String),
    /// The upstream sent content that is not what was asked for (bad manifest, digest mismatch).
    #[error("{0}")]
    Invalid(String),
}

impl UpstreamError {
    /// The `reason` of a tag condition, as OpenShift writes them.
    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamError::InvalidReference(_) | UpstreamError::Invalid(_) => "InvalidImage",
            UpstreamError::NotAllowed(_) | UpstreamError::Refused(_) => "Forbidden",
            UpstreamError::NotFound(_) => "NotFound",
            UpstreamError::Unauthorized(_) => "Unauthorized",
            UpstreamError::TooManyRequests(_) => "TooManyRequests",
            UpstreamError::Unavailable(_) => "InternalError",
        }
    }

    /// The HTTP status an API answer about this failure carries.
    pub fn status(&self) -> u16 {
        match self {
            UpstreamError::InvalidReference(_) | UpstreamError::Invalid(_) => 422,
            UpstreamError::NotAllowed(_) | UpstreamError::Refused(_) => 403,
            UpstreamError::NotFound(_) => 404,
            UpstreamError::Unauthorized(_) => 401,
            UpstreamError::TooManyRequests(_) => 429,
            UpstreamError::Unavailable(_) => 503,
        }
    }
}

/// Credentials for one upstream registry.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
        }
    }
}

/// Where to fetch from and how: the reference, the credentials (from the namespace's pull secrets), and whether
/// the source may be reached insecurely (the stream's `openshift.io/image.insecureRepository` annotation or the
/// tag's `importPolicy.insecure`).
#[derive(Debug, Clone)]
pub struct Source {
    pub reference: ExternalRef,
    pub credentials: Credentials,
    pub insecure: bool,
}

/// A manifest as fetched: its bytes and digest (verified against the bytes and any digest asked for).
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Bytes,
    pub digest: Digest,
}

/// A blob body as fetched, not yet verified: callers check digest and size before they keep or finish it.
pub struct FetchedBlob {
    pub length: Option<u64>,
    pub body: BoxStream<'static, Result<Bytes, std::io::Error>>,
}

/// The upstream side of Tributary: the rules, one client per transport, and which insecure registries speak only
/// plain http. Cheap to share behind an `Arc`.
pub struct Upstreams {
    rules: Arc<Rules>,
    clients: HashMap<Scheme, RegistryClient>,
    /// Largest manifest read from an upstream: the limit pushes have.
    max_manifest_bytes: usize,
    /// Insecure registries found not to speak https: reached over plain http from then on.
    plain_http: Mutex<HashMap<String, bool>>,
}

impl Upstreams {
    /// `allowed` is `allowedRegistriesForImport` (registry hosts, `*.domain`; empty: all).
    pub fn new(allowed: Vec<String>, outbound: &Outbound, max_manifest_bytes: usize) -> anyhow::Result<Upstreams> {
        // reqwest is built without a TLS provider of its own: use ring, as the server does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rules = Rules::new(outbound, allowed);
        let mut clients = HashMap::new();
        for scheme in [Scheme::Https, Scheme::HttpsUnverified, Scheme::Http] {
            let client = RegistryClient::new(scheme, rules.clone(), outbound).map_err(anyhow::Error::msg)?;
            clients.insert(scheme, client);
        }
        Ok(Upstreams { rules, clients, max_manifest_bytes, plain_http: Mutex::default() })
    }

    /// Refuses registries outside `allowedRegistriesForImport` (an empty list allows every registry).
    pub fn check_allowed(&self, reference: &ExternalRef) -> Result<(), UpstreamError> {
        let host = reference.registry();
        if self.rules.registry_allowed(host) {
            Ok(())
        } else {
            Err(UpstreamError::NotAllowed(host.to_owned()))
        }
    }

    /// The transports to try for `source`, in order.
    fn transports(&self, source: &Source) -> Vec<Scheme> {
        if !source.insecure {
            return vec![Scheme::Https];
        }
        let known_plain = self
            .plain_http
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(source.reference.registry())
            .copied()
            .unwrap_or(false);
        if known_plain {
            vec![Scheme::Http]
        } else {
            vec![Scheme::HttpsUnverified, Scheme::Http]
        }
    }

    /// Runs `op` with a client for `source`, falling back from https to http for an insecure source whose
    /// registry cannot be reached over https.
    async fn run<'a, T, F, Fut>(&'a self, source: &Source, op: F) -> Result<T, UpstreamError>
    where
        F: Fn(&'a RegistryClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, WireError>>,
    {
        self.check_allowed(&source.reference)?;
        let transports = self.transports(source);
        let mut last = None;
        for (i, scheme) in transports.iter().enumerate() {
            let Some(client) = self.clients.get(scheme) else { continue };
            match op(client).await {
                Ok(v) => {
                    if *scheme == Scheme::Http {
                        self.plain_http
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(source.reference.registry().to_owned(), true);
                    }
                    return Ok(v);
                }
                Err(WireError::Transport(m)) if i + 1 < transports.len() => last = Some(WireError::Transport(m)),
                Err(e) => return Err(classify(e, source)),
            }
        }
        Err(last.map(|e| classify(e, source)).unwrap_or_else(|| UpstreamError::Unavailable("no transport".into())))
    }

    /// Fetches the manifest `source.reference` names (by tag or digest), in any media type Tributary stores, of at
    /// most the manifest limit.
    pub async fn manifest(&self, source: &Source) -> Result<FetchedManifest, UpstreamError> {
        let r = &source.reference;
        let reference = r.digest().or(r.tag()).unwrap_or("latest");
        let accept = SUPPORTED.join(", ");
        let (accept, limit) = (accept.as_str(), self.max_manifest_bytes);
        let bytes = self
            .run(source, |c| c.manifest(r.registry(), r.repository(), reference, &source.credentials, accept, limit))
            .await?;
        let mismatch = || UpstreamError::Invalid(format!("{} answered a manifest of another digest", source.reference));
        let digest = match source.reference.digest() {
            Some(asked) => {
                let asked: Digest = asked.parse().map_err(|_| mismatch())?;
                if Digest::of(asked.algorithm(), &bytes) != asked {
                    return Err(mismatch());
                }
                asked
            }
            None => Digest::sha256_of(&bytes),
        };
        Ok(FetchedManifest { bytes, digest })
    }

    /// Starts fetching blob `digest` of `source`'s repository.
    pub async fn blob(&self, source: &Source, digest: &Digest) -> Result<FetchedBlob, UpstreamError> {
        let r = &source.reference;
        let resp = self.run(source, |c| c.blob(r.registry(), r.repository(), digest, &source.credentials)).await?;
        let length = resp.content_length();
        let body = resp.bytes_stream().map(|chunk| chunk.map_err(std::io::Error::other)).boxed();
        Ok(FetchedBlob { length, body })
    }

    /// Every tag of `source`'s repository.
    pub async fn tags(&self, source: &Source) -> Result<Vec<String>, UpstreamError> {
        let r = &source.reference;
        self.run(source, |c| c.tags(r.registry(), r.repository(), &source.credentials)).await
    }
}

/// Says a wire failure in the terms Tributary tells its clients.
fn classify(e: WireError, source: &Source) -> UpstreamError {
    let at = &source.reference;
    match e {
        WireError::Refused(Refused(m)) => UpstreamError::Refused(format!("{at}: {m}")),
        WireError::TooLarge(m) | WireError::Invalid(m) => UpstreamError::Invalid(format!("{at}: {m}")),
        WireError::Timeout(m) => UpstreamError::Unavailable(format!("{at}: timed out: {m}")),
        WireError::Transport(m) if !source.insecure => UpstreamError::Unavailable(format!(
            "{at}: {m}; if the registry speaks plain http or has an untrusted certificate, mark the stream \
             (annotation openshift.io/image.insecureRepository: \"true\") or the tag (importPolicy.insecure) insecure"
        )),
        WireError::Transport(m) => UpstreamError::Unavailable(format!("{at}: {m}")),
        WireError::Status { status, code, message } => {
            let text = format!("{at}: {message}");
            match (status.as_u16(), code.to_ascii_uppercase().as_str()) {
                (429, _) | (_, "TOOMANYREQUESTS") => UpstreamError::TooManyRequests(text),
                (404, _) | (_, "MANIFEST_UNKNOWN" | "BLOB_UNKNOWN" | "NAME_UNKNOWN") => UpstreamError::NotFound(text),
                (401 | 403, _) | (_, "UNAUTHORIZED" | "DENIED") => UpstreamError::Unauthorized(format!(
                    "{at}: the registry refused the credentials (or their absence): {message}"
                )),
                (s, _) => UpstreamError::Unavailable(format!("{at}: HTTP {s}: {message}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalise_like_docker() {
        let r: ExternalRef = "python:3.6".parse().unwrap();
        assert_eq!((r.registry(), r.repository(), r.tag()), ("docker.io", "library/python", Some("3.6")));
        let r: ExternalRef = "localhost:5000/a/b".parse().unwrap();
        assert_eq!((r.registry(), r.repository(), r.tag()), ("localhost:5000", "a/b", Some("latest")));
        let d = Digest::sha256_of(b"x");
        assert_eq!(r.at_digest(&d).to_string(), format!("localhost:5000/a/b@{d}"));
        assert!("http://x/y".parse::<ExternalRef>().is_err());
        assert!("".parse::<ExternalRef>().is_err());
        assert!("a//b:c".parse::<ExternalRef>().is_err());
        assert!("a/b:bad tag".parse::<ExternalRef>().is_err());
    }

    #[test]
    fn allowed_registries() {
        let o = Outbound::default();
        let all = Upstreams::new(vec![], &o, 1024).unwrap();
        let some = Upstreams::new(vec!["quay.io".into(), "*.example.com".into()], &o, 1024).unwrap();
        let r = |s: &str| s.parse::<ExternalRef>().unwrap();
        assert!(all.check_allowed(&r("evil.io/x")).is_ok());
        assert!(some.check_allowed(&r("quay.io/x")).is_ok());
        assert!(some.check_allowed(&r("reg.example.com/x")).is_ok());
        assert_eq!(some.check_allowed(&r("evil.io/x")), Err(UpstreamError::NotAllowed("evil.io".into())));
        assert!(some.check_allowed(&r("python")).is_err(), "docker.io is not in the list");
    }
}
