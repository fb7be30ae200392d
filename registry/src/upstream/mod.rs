//! External registries, for import and pull-through (callers: `service::import` and `service::pullthrough`).
//! One `oci-client` client per (registry, credentials, transport), reused so its token cache works; the
//! `allowedRegistriesForImport` check; plain http or unverified TLS only for a source marked insecure; upstream
//! failures as one typed [`UpstreamError`] that keeps what the client needs to know (a 429 stays a 429).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use names::Digest;
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use streams::manifest::SUPPORTED;

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
            UpstreamError::NotAllowed(_) => "Forbidden",
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
            UpstreamError::NotAllowed(_) => 403,
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

impl Credentials {
    fn auth(&self) -> RegistryAuth {
        match self {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => RegistryAuth::Basic(username.clone(), password.clone()),
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

/// How a client reaches a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Transport {
    /// https with verified certificates: the only transport for a source not marked insecure.
    Https,
    /// https without certificate verification (insecure sources).
    HttpsUnverified,
    /// plain http (insecure sources whose registry does not speak https).
    Http,
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

/// The upstream side of Tributary: settings and the client pool. Cheap to share behind an `Arc`.
pub struct Upstreams {
    /// `allowedRegistriesForImport`: registry hosts (`quay.io`, `localhost:5000`, `*.example.com`); empty: all.
    allowed: Vec<String>,
    clients: Mutex<HashMap<(String, Transport, Credentials), Arc<Client>>>,
    /// Insecure registries found not to speak https: reached over plain http from then on.
    plain_http: Mutex<HashMap<String, bool>>,
}

impl Upstreams {
    pub fn new(allowed: Vec<String>) -> Upstreams {
        // reqwest is built without a TLS provider of its own: use ring, as the server does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Upstreams { allowed, clients: Mutex::default(), plain_http: Mutex::default() }
    }

    /// Refuses registries outside `allowedRegistriesForImport` (an empty list allows every registry).
    pub fn check_allowed(&self, reference: &ExternalRef) -> Result<(), UpstreamError> {
        let host = reference.registry();
        let allowed = self.allowed.is_empty()
            || self.allowed.iter().any(|a| match a.strip_prefix("*.") {
                Some(domain) => host.ends_with(&format!(".{domain}")),
                None => a == host,
            });
        if allowed {
            Ok(())
        } else {
            Err(UpstreamError::NotAllowed(host.to_owned()))
        }
    }

    fn client(&self, registry: &str, transport: Transport, credentials: &Credentials) -> Arc<Client> {
        let key = (registry.to_owned(), transport, credentials.clone());
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(key)
            .or_insert_with(|| {
                let config = ClientConfig {
                    protocol: match transport {
                        Transport::Http => ClientProtocol::Http,
                        Transport::Https | Transport::HttpsUnverified => ClientProtocol::Https,
                    },
                    accept_invalid_certificates: transport == Transport::HttpsUnverified,
                    connect_timeout: Some(Duration::from_secs(10)),
                    read_timeout: Some(Duration::from_secs(60)),
                    user_agent: concat!("tributary/", env!("CARGO_PKG_VERSION")),
                    ..ClientConfig::default()
                };
                Arc::new(Client::new(config))
            })
            .clone()
    }

    /// The transports to try for `source`, in order.
    fn transports(&self, source: &Source) -> Vec<Transport> {
        if !source.insecure {
            return vec![Transport::Https];
        }
        let known_plain = self
            .plain_http
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(source.reference.registry())
            .copied()
            .unwrap_or(false);
        if known_plain {
            vec![Transport::Http]
        } else {
            vec![Transport::HttpsUnverified, Transport::Http]
        }
    }

    /// Runs `op` with a client for `source`, falling back from https to http for an insecure source whose
    /// registry cannot be reached over https.
    async fn run<T, F, Fut>(&self, source: &Source, op: F) -> Result<T, UpstreamError>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = Result<T, OciDistributionError>>,
    {
        self.check_allowed(&source.reference)?;
        let transports = self.transports(source);
        let mut last = None;
        for (i, transport) in transports.iter().enumerate() {
            let client = self.client(source.reference.registry(), *transport, &source.credentials);
            match op(client).await {
                Ok(v) => {
                    if *transport == Transport::Http {
                        self.plain_http
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(source.reference.registry().to_owned(), true);
                    }
                    return Ok(v);
                }
                Err(e) if i + 1 < transports.len() && is_transport_failure(&e) => last = Some(e),
                Err(e) => return Err(classify(e, source)),
            }
        }
        Err(last.map(|e| classify(e, source)).unwrap_or_else(|| UpstreamError::Unavailable("no transport".into())))
    }

    /// Fetches the manifest `source.reference` names (by tag or digest), in any media type Tributary stores.
    pub async fn manifest(&self, source: &Source) -> Result<FetchedManifest, UpstreamError> {
        let reference = &source.reference.0;
        let auth = source.credentials.auth();
        let auth = &auth;
        let (bytes, _) =
            self.run(source, |c| async move { c.pull_manifest_raw(reference, auth, &SUPPORTED).await }).await?;
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
        let reference = &source.reference.0;
        let auth = source.credentials.auth();
        let (auth, d) = (&auth, digest.to_string());
        let d = d.as_str();
        // Asked as the range `0-`: a registry that honours it answers 206, which oci-client passes through
        // without hashing; the caller verifies every blob itself, so hashing twice would only cost CPU.
        let response = self
            .run(source, |c| async move {
                c.store_auth_if_needed(reference.resolve_registry(), auth).await;
                c.pull_blob_stream_partial(reference, d, 0, None).await
            })
            .await?;
        let sized = match response {
            BlobResponse::Full(s) | BlobResponse::Partial(s) => s,
        };
        Ok(FetchedBlob { length: sized.content_length, body: sized.stream })
    }

    /// Every tag of `source`'s repository.
    pub async fn tags(&self, source: &Source) -> Result<Vec<String>, UpstreamError> {
        let reference = &source.reference.0;
        let auth = source.credentials.auth();
        let auth = &auth;
        let list = self.run(source, |c| async move { c.list_tags(reference, auth, None, None).await }).await?;
        Ok(list.tags)
    }
}

/// Whether `e` is a failure to talk to the registry at all (worth another transport), not an answer from it.
fn is_transport_failure(e: &OciDistributionError) -> bool {
    matches!(e, OciDistributionError::RequestError(_))
}

/// Maps an oci-client error to what Tributary tells its clients.
fn classify(e: OciDistributionError, source: &Source) -> UpstreamError {
    let at = &source.reference;
    match e {
        OciDistributionError::ImageManifestNotFoundError(m) => UpstreamError::NotFound(format!("{at}: {m}")),
        OciDistributionError::UnauthorizedError { .. } | OciDistributionError::AuthenticationFailure(_) => {
            UpstreamError::Unauthorized(format!("{at}: the registry refused the credentials (or their absence)"))
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let first = envelope.errors.first();
            let code = first.map(|e| format!("{:?}", e.code)).unwrap_or_default().to_uppercase();
            let message = first.map(|e| e.message.clone()).unwrap_or_default();
            let text = format!("{at}: {message}");
            match code.as_str() {
                c if c.contains("TOOMANYREQUESTS") => UpstreamError::TooManyRequests(text),
                c if c.contains("UNKNOWN") => UpstreamError::NotFound(text),
                c if c.contains("UNAUTHORIZED") || c.contains("DENIED") => UpstreamError::Unauthorized(text),
                _ => UpstreamError::Unavailable(text),
            }
        }
        OciDistributionError::ServerError { code, message, .. } => {
            let text = format!("{at}: HTTP {code}: {}", message.trim());
            match code {
                404 => UpstreamError::NotFound(text),
                401 | 403 => UpstreamError::Unauthorized(text),
                429 => UpstreamError::TooManyRequests(text),
                _ => UpstreamError::Unavailable(text),
            }
        }
        OciDistributionError::DigestError(d) => UpstreamError::Invalid(format!("{at}: {d}")),
        OciDistributionError::RequestError(r) if !source.insecure => UpstreamError::Unavailable(format!(
            "{at}: {}; if the registry speaks plain http or has an untrusted certificate, mark the stream \
             (annotation openshift.io/image.insecureRepository: \"true\") or the tag (importPolicy.insecure) insecure",
            error_chain(&r)
        )),
        OciDistributionError::RequestError(r) => UpstreamError::Unavailable(format!("{at}: {}", error_chain(&r))),
        other => UpstreamError::Unavailable(format!("{at}: {other}")),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
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
        let all = Upstreams::new(vec![]);
        let some = Upstreams::new(vec!["quay.io".into(), "*.example.com".into()]);
        let r = |s: &str| s.parse::<ExternalRef>().unwrap();
        assert!(all.check_allowed(&r("evil.io/x")).is_ok());
        assert!(some.check_allowed(&r("quay.io/x")).is_ok());
        assert!(some.check_allowed(&r("reg.example.com/x")).is_ok());
        assert_eq!(some.check_allowed(&r("evil.io/x")), Err(UpstreamError::NotAllowed("evil.io".into())));
        assert!(some.check_allowed(&r("python")).is_err(), "docker.io is not in the list");
    }
}
