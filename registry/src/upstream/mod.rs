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

use crate::imagepolicy::{self as policy, ImagePolicy, Policy};
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

    /// The same tag or digest in another repository (`host/repository`, a mirror's).
    pub fn in_repository(&self, repository: &str) -> Result<ExternalRef, UpstreamError> {
        let text = match (self.digest(), self.tag()) {
            (Some(d), _) => format!("{repository}@{d}"),
            (None, Some(t)) => format!("{repository}:{t}"),
            (None, None) => repository.to_owned(),
        };
        text.parse()
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
    /// The image policy forbids it; the text names the rule.
    #[error("{0}")]
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
    /// The same kind of failure, saying `message`.
    pub fn with_message(&self, message: String) -> UpstreamError {
        match self {
            UpstreamError::InvalidReference(_) => UpstreamError::InvalidReference(message),
            UpstreamError::NotAllowed(_) => UpstreamError::NotAllowed(message),
            UpstreamError::Refused(_) => UpstreamError::Refused(message),
            UpstreamError::NotFound(_) => UpstreamError::NotFound(message),
            UpstreamError::Unauthorized(_) => UpstreamError::Unauthorized(message),
            UpstreamError::TooManyRequests(_) => UpstreamError::TooManyRequests(message),
            UpstreamError::Unavailable(_) => UpstreamError::Unavailable(message),
            UpstreamError::Invalid(_) => UpstreamError::Invalid(message),
        }
    }

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

    /// The code of the `Status` an import answers about this failure, agreeing with [`Self::reason`] as OpenShift
    /// writes it (an unreachable registry: `InternalError`, 500, "Internal error occurred: …").
    pub fn status(&self) -> u16 {
        match self {
            UpstreamError::InvalidReference(_) | UpstreamError::Invalid(_) => 422,
            UpstreamError::NotAllowed(_) | UpstreamError::Refused(_) => 403,
            UpstreamError::NotFound(_) => 404,
            UpstreamError::Unauthorized(_) => 401,
            UpstreamError::TooManyRequests(_) => 429,
            UpstreamError::Unavailable(_) => 500,
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

/// Where to fetch from and how: the reference, the credentials (from the namespace's pull secrets, for the
/// source's registry), whether the source may be reached insecurely (the stream's
/// `openshift.io/image.insecureRepository` annotation or the tag's `importPolicy.insecure`), and the repository
/// that served the image's manifest (`host/repository`, a mirror's), tried first for its blobs, and locations
/// (`host/repository`) not to try again: they sent bytes that did not verify. A mirror on another host than the
/// source's gets `mirror_credentials` for its host (the namespace's pull secrets), else none.
#[derive(Debug, Clone)]
pub struct Source {
    pub reference: ExternalRef,
    pub credentials: Credentials,
    pub insecure: bool,
    pub prefer: Option<String>,
    pub skip: Vec<String>,
    pub mirror_credentials: Arc<HashMap<String, Credentials>>,
}

impl Source {
    pub fn new(reference: ExternalRef, credentials: Credentials, insecure: bool) -> Source {
        Source { reference, credentials, insecure, prefer: None, skip: Vec::new(), mirror_credentials: Arc::default() }
    }

    /// The credentials of the namespace's pull secrets by registry host (lowercase), for mirrors.
    pub fn with_mirror_credentials(mut self, by_host: HashMap<String, Credentials>) -> Source {
        self.mirror_credentials = Arc::new(by_host);
        self
    }
}

/// Which registry answered a fetch, and what was tried before it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Served {
    /// `host/repository` that answered.
    pub by: String,
    /// Whether that was a mirror.
    pub mirror: bool,
    /// Earlier attempts that failed, each `repository: why`.
    pub failed: Vec<String>,
}

impl Served {
    /// `served by mirror m.io/app (after …)`, or nothing when the source answered at first try.
    pub fn describe(&self) -> String {
        let mut out = if self.mirror { format!("served by mirror {}", self.by) } else { String::new() };
        if !self.failed.is_empty() {
            if out.is_empty() {
                out = format!("served by the source {}", self.by);
            }
            out.push_str(&format!(" after: {}", self.failed.join("; ")));
        }
        out
    }
}

/// A manifest as fetched: its bytes and digest (verified against the bytes and any digest asked for).
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Bytes,
    pub digest: Digest,
    pub served: Served,
}

/// A blob body as fetched, not yet verified: callers check digest and size before they keep or finish it.
pub struct FetchedBlob {
    pub length: Option<u64>,
    pub body: BoxStream<'static, Result<Bytes, std::io::Error>>,
    pub served: Served,
}

/// The upstream side of Tributary: the rules, the image policy (allowed, blocked and insecure registries,
/// trusted CAs, mirrors), one client per transport (and per host with its own CA), and which insecure
/// registries speak only plain http. Cheap to share behind an `Arc`.
pub struct Upstreams {
    rules: Arc<Rules>,
    outbound: Outbound,
    policy: Arc<ImagePolicy>,
    metrics: Arc<crate::metrics::Metrics>,
    clients: HashMap<Scheme, Arc<RegistryClient>>,
    /// https clients that also trust a host's `additionalTrustedCA`, by host and bundle.
    ca_clients: Mutex<HashMap<(String, String), Arc<RegistryClient>>>,
    /// Largest manifest read from an upstream: the limit pushes have.
    max_manifest_bytes: usize,
    /// Insecure registries found not to speak https: reached over plain http from then on.
    plain_http: Mutex<HashMap<String, bool>>,
}

impl Upstreams {
    /// Fetches under `policy` (allowed registries, mirrors, …) and the outbound rules.
    pub fn new(
        policy: Arc<ImagePolicy>,
        outbound: &Outbound,
        max_manifest_bytes: usize,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> anyhow::Result<Upstreams> {
        // reqwest is built without a TLS provider of its own: use ring, as the server does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rules = Rules::new(outbound, Vec::new());
        let mut clients = HashMap::new();
        for scheme in [Scheme::Https, Scheme::HttpsUnverified, Scheme::Http] {
            let client = RegistryClient::new(scheme, rules.clone(), outbound, &[]).map_err(anyhow::Error::msg)?;
            clients.insert(scheme, Arc::new(client));
        }
        Ok(Upstreams {
            rules,
            outbound: outbound.clone(),
            policy,
            metrics,
            clients,
            ca_clients: Mutex::default(),
            max_manifest_bytes,
            plain_http: Mutex::default(),
        })
    }

    /// The image policy in force (read through its cache).
    async fn policy(&self) -> Result<Arc<Policy>, UpstreamError> {
        let policy =
            self.policy.current().await.map_err(|e| UpstreamError::Unavailable(format!("image policy: {e}")))?;
        let mut redirects: Vec<String> =
            policy.image.allowed_registries_for_import.iter().map(|l| l.domain_name.clone()).collect();
        if !redirects.is_empty() {
            redirects.extend(policy.mirror_hosts());
        }
        self.rules.set_allowed(redirects);
        Ok(policy)
    }

    /// Refuses registries outside `allowedRegistriesForImport` (an empty list allows every registry).
    pub async fn check_allowed(&self, reference: &ExternalRef) -> Result<(), UpstreamError> {
        self.policy().await?.check_import(reference.registry()).map_err(UpstreamError::NotAllowed)
    }

    /// The transports to try for `host`, in order.
    fn transports(&self, host: &str, insecure: bool) -> Vec<Scheme> {
        if !insecure {
            return vec![Scheme::Https];
        }
        let known_plain = self.plain_http.lock().unwrap_or_else(|e| e.into_inner()).get(host).copied().unwrap_or(false);
        if known_plain {
            vec![Scheme::Http]
        } else {
            vec![Scheme::HttpsUnverified, Scheme::Http]
        }
    }

    /// The client for `scheme` to `host`: verified https trusts the host's `additionalTrustedCA` too.
    fn client(&self, scheme: Scheme, host: &str, policy: &Policy) -> Result<Arc<RegistryClient>, UpstreamError> {
        let ca = match (scheme, policy.trusted_ca(host)) {
            (Scheme::Https, Some(ca)) => ca,
            _ => {
                return self
                    .clients
                    .get(&scheme)
                    .cloned()
                    .ok_or_else(|| UpstreamError::Unavailable("no transport".into()))
            }
        };
        let key = (host.to_ascii_lowercase(), ca.to_owned());
        let mut cache = self.ca_clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get(&key) {
            return Ok(c.clone());
        }
        let roots = reqwest::Certificate::from_pem_bundle(ca.as_bytes())
            .map_err(|e| UpstreamError::Unavailable(format!("additionalTrustedCA for {host}: {e}")))?;
        let client = RegistryClient::new(scheme, self.rules.clone(), &self.outbound, &roots)
            .map(Arc::new)
            .map_err(UpstreamError::Unavailable)?;
        cache.insert(key, client.clone());
        Ok(client)
    }

    /// Runs `op` against one registry (`reference`'s), falling back from https to http for an insecure one that
    /// cannot be reached over https.
    async fn run_one<T, F, Fut>(
        &self,
        reference: &ExternalRef,
        credentials: &Credentials,
        insecure: bool,
        mirror: bool,
        policy: &Policy,
        op: &F,
    ) -> Result<T, UpstreamError>
    where
        F: Fn(Arc<RegistryClient>, ExternalRef, Credentials) -> Fut,
        Fut: std::future::Future<Output = Result<T, WireError>>,
    {
        let host = reference.registry();
        let transports = self.transports(host, insecure);
        let mut last = None;
        for (i, scheme) in transports.iter().enumerate() {
            let client = self.client(*scheme, host, policy)?;
            match op(client, reference.clone(), credentials.clone()).await {
                Ok(v) => {
                    if *scheme == Scheme::Http {
                        self.plain_http.lock().unwrap_or_else(|e| e.into_inner()).insert(host.to_owned(), true);
                    }
                    return Ok(v);
                }
                Err(WireError::Transport(m)) if i + 1 < transports.len() => last = Some(WireError::Transport(m)),
                Err(e) => return Err(classify(e, reference, insecure, mirror)),
            }
        }
        Err(last
            .map(|e| classify(e, reference, insecure, mirror))
            .unwrap_or_else(|| UpstreamError::Unavailable("no transport".into())))
    }

    /// Runs `op` for `source` where the image policy sends it: its mirrors in order (digest mirrors when
    /// `by_digest`, tag mirrors otherwise; the preferred repository first), then the source unless
    /// `NeverContactSource`; registries `registrySources` forbids, and `source.skip`, are skipped. The first answer wins; a failure
    /// of the source, or of every mirror when the source is not contacted, lists every attempt.
    async fn run<T, F, Fut>(&self, source: &Source, by_digest: bool, op: F) -> Result<(T, Served), UpstreamError>
    where
        F: Fn(Arc<RegistryClient>, ExternalRef, Credentials) -> Fut,
        Fut: std::future::Future<Output = Result<T, WireError>>,
    {
        let policy = self.policy().await?;
        let r = &source.reference;
        policy.check_import(r.registry()).map_err(UpstreamError::NotAllowed)?;
        let mut plan = policy.plan(r.registry(), r.repository(), by_digest);
        if let Some(prefer) = &source.prefer {
            plan.endpoints.retain(|e| &e.repository != prefer);
            plan.endpoints.insert(0, policy::Endpoint { repository: prefer.clone(), mirror: true });
        }
        plan.endpoints.retain(|e| !source.skip.contains(&e.repository));
        let mut failed: Vec<String> = Vec::new();
        let mut last: Option<UpstreamError> = None;
        for endpoint in &plan.endpoints {
            let reference = r.in_repository(&endpoint.repository)?;
            let (host, repository) = (reference.registry().to_owned(), reference.repository().to_owned());
            if let Err(why) = policy.check_contact(&host, &repository) {
                failed.push(format!("{}: {why}", endpoint.repository));
                last = Some(UpstreamError::NotAllowed(why));
                continue;
            }
            let insecure = (!endpoint.mirror && source.insecure) || policy.insecure(&host, &repository);
            let credentials = if host == r.registry() {
                source.credentials.clone()
            } else {
                source.mirror_credentials.get(&host.to_ascii_lowercase()).cloned().unwrap_or_default()
            };
            let result = self.run_one(&reference, &credentials, insecure, endpoint.mirror, &policy, &op).await;
            self.metrics.upstream_fetch(r.registry(), &host, endpoint.mirror, result.is_ok());
            match result {
                Ok(v) => {
                    let served = Served { by: endpoint.repository.clone(), mirror: endpoint.mirror, failed };
                    if endpoint.mirror || !served.failed.is_empty() {
                        tracing::info!(source = %r, served_by = %served.by, mirror = served.mirror,
                                       failed = ?served.failed, "fetched through the image policy's mirrors");
                    }
                    return Ok((v, served));
                }
                Err(e) => {
                    failed.push(format!("{}: {e}", endpoint.repository));
                    last = Some(e);
                }
            }
        }
        let mut message = failed.join("; ");
        if plan.source_skipped {
            message.push_str(&format!(
                "; the source {} was not contacted (mirrorSourcePolicy NeverContactSource)",
                r.repository_ref()
            ));
        }
        Err(match last {
            Some(e) if failed.len() == 1 && !plan.source_skipped => e,
            Some(e) => e.with_message(format!("every location failed: {message}")),
            None => UpstreamError::Unavailable(format!("nowhere to fetch {r} from: {message}")),
        })
    }

    /// Fetches the manifest `source.reference` names (by tag or digest), in any media type Tributary stores, of at
    /// most the manifest limit. A digest is verified whichever registry answered.
    pub async fn manifest(&self, source: &Source) -> Result<FetchedManifest, UpstreamError> {
        let r = &source.reference;
        let reference = r.digest().or(r.tag()).unwrap_or("latest").to_owned();
        let accept = SUPPORTED.join(", ");
        let limit = self.max_manifest_bytes;
        let asked: Option<Digest> = match r.digest() {
            Some(d) => Some(d.parse().map_err(|_| UpstreamError::InvalidReference(format!("{r}: bad digest")))?),
            None => None,
        };
        // Each answer is checked against the digest asked for before it counts: a mirror (or source) that sends
        // other bytes is a failed attempt, and the next location is tried.
        let (bytes, served) = self
            .run(source, asked.is_some(), |c, at, creds| {
                let (reference, accept, asked) = (reference.clone(), accept.clone(), asked.clone());
                async move {
                    let bytes = c.manifest(at.registry(), at.repository(), &reference, &creds, &accept, limit).await?;
                    match asked {
                        Some(d) if Digest::of(d.algorithm(), &bytes) != d => {
                            Err(WireError::Invalid(format!("{at} answered a manifest of another digest")))
                        }
                        _ => Ok(bytes),
                    }
                }
            })
            .await?;
        let digest = asked.unwrap_or_else(|| Digest::sha256_of(&bytes));
        Ok(FetchedManifest { bytes, digest, served })
    }

    /// Starts fetching blob `digest` of `source`'s repository (a by-digest fetch: digest mirrors apply).
    pub async fn blob(&self, source: &Source, digest: &Digest) -> Result<FetchedBlob, UpstreamError> {
        let (resp, served) = self
            .run(source, true, |c, at, creds| {
                let digest = digest.clone();
                async move { c.blob(at.registry(), at.repository(), &digest, &creds).await }
            })
            .await?;
        let length = resp.content_length();
        let body = resp.bytes_stream().map(|chunk| chunk.map_err(std::io::Error::other)).boxed();
        Ok(FetchedBlob { length, body, served })
    }

    /// Every tag of `source`'s repository (a by-tag fetch: tag mirrors apply).
    pub async fn tags(&self, source: &Source) -> Result<Vec<String>, UpstreamError> {
        let (tags, _) = self
            .run(source, false, |c, at, creds| async move { c.tags(at.registry(), at.repository(), &creds).await })
            .await?;
        Ok(tags)
    }
}

/// Says a wire failure in the terms Tributary tells its clients (`mirror`: `at` is a mirror, made insecure only by
/// the image policy).
fn classify(e: WireError, at: &ExternalRef, insecure: bool, mirror: bool) -> UpstreamError {
    match e {
        WireError::Refused(Refused(m)) => UpstreamError::Refused(format!("{at}: {m}")),
        WireError::TooLarge(m) | WireError::Invalid(m) => UpstreamError::Invalid(format!("{at}: {m}")),
        WireError::Timeout(m) => UpstreamError::Unavailable(format!("{at}: timed out: {m}")),
        WireError::Transport(m) if !insecure && mirror => UpstreamError::Unavailable(format!(
            "{at}: {m}; if this mirror speaks plain http or has an untrusted certificate, list its host in the image \
             policy's registrySources.insecureRegistries or give its CA in additionalTrustedCA"
        )),
        WireError::Transport(m) if !insecure => UpstreamError::Unavailable(format!(
            "{at}: {m}; if the registry speaks plain http or has an untrusted certificate, mark the stream \
             (annotation openshift.io/image.insecureRepository: \"true\") or the tag (importPolicy.insecure) insecure, \
             or give its CA in the image policy's additionalTrustedCA"
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

    #[tokio::test]
    async fn allowed_registries() {
        let o = Outbound::default();
        let metrics = Arc::new(crate::metrics::Metrics::new(Default::default()));
        let with = |allowed: &[&str]| {
            let spec = serde_json::json!({"allowedRegistriesForImport":
                allowed.iter().map(|d| serde_json::json!({"domainName": d})).collect::<Vec<_>>()});
            let mut o = crate::imagepolicy::model::Object { spec, ..Default::default() };
            o.metadata.name = "cluster".into();
            Arc::new(ImagePolicy::fixed(Policy::from_objects(&[(crate::imagepolicy::model::Kind::Image, o)])))
        };
        let all = Upstreams::new(with(&[]), &o, 1024, metrics.clone()).unwrap();
        let some = Upstreams::new(with(&["quay.io", "*.example.com"]), &o, 1024, metrics).unwrap();
        let r = |s: &str| s.parse::<ExternalRef>().unwrap();
        assert!(all.check_allowed(&r("evil.io/x")).await.is_ok());
        assert!(some.check_allowed(&r("quay.io/x")).await.is_ok());
        assert!(some.check_allowed(&r("reg.example.com/x")).await.is_ok());
        let refused = some.check_allowed(&r("evil.io/x")).await.unwrap_err();
        assert!(
            matches!(&refused, UpstreamError::NotAllowed(m) if m.contains("evil.io is not in allowedRegistriesForImport"))
        );
        assert!(some.check_allowed(&r("python")).await.is_err(), "docker.io is not in the list");
    }
}
