//! The wire side of upstream registries: a small OCI distribution client on reqwest, built with the [`guard`]
//! rules (resolver, redirect policy, IP-literal check) and the operator's timeouts. Reads manifests (bounded by the
//! manifest limit), blobs (streamed), tag lists; follows Docker token auth (Basic or Bearer challenges, tokens
//! cached per registry, scope and credentials). Every answer it buffers is bounded, and so is what of an
//! upstream's error text it passes on. Only `upstream` (its parent) calls it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use url::Url;

use super::guard::{refused_in, GuardedResolver, Outbound, Refused, Rules};
use super::Credentials;

/// Largest token-endpoint answer read.
pub const MAX_TOKEN_BYTES: usize = 1024 * 1024;
/// Largest error body read from an upstream.
pub const MAX_ERROR_BYTES: usize = 64 * 1024;
/// Most of an upstream's error text passed on to a user.
pub const MAX_ERROR_TEXT: usize = 1024;
/// Largest page of a tag list read.
pub const MAX_TAGS_PAGE_BYTES: usize = 4 * 1024 * 1024;
/// Most tag-list pages followed.
const MAX_TAG_PAGES: usize = 100;

/// What went wrong on the wire, before `upstream` says it in its own terms.
#[derive(Debug)]
pub enum WireError {
    /// The outbound rules refused the address or a redirect.
    Refused(Refused),
    /// No answer: connection, TLS or timeout (worth another transport for an insecure source).
    Transport(String),
    /// A timeout after the connection was made.
    Timeout(String),
    /// An error status, with the upstream's OCI code and (truncated) message.
    Status { status: StatusCode, code: String, message: String },
    /// An answer larger than its bound.
    TooLarge(String),
    /// An answer that is not what the protocol says.
    Invalid(String),
}

impl WireError {
    fn of(e: reqwest::Error, what: &str) -> WireError {
        if let Some(refused) = refused_in(&e) {
            return WireError::Refused(refused);
        }
        let text = truncate(&format!("{what}: {}", chain(&e)));
        if e.is_connect() {
            WireError::Transport(text)
        } else if e.is_timeout() {
            WireError::Timeout(text)
        } else if e.is_redirect() || e.is_decode() || e.is_body() {
            WireError::Invalid(text)
        } else {
            WireError::Transport(text)
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// At most [`MAX_ERROR_TEXT`] bytes of `s` (on a character boundary), marked when cut.
pub fn truncate(s: &str) -> String {
    if s.len() <= MAX_ERROR_TEXT {
        return s.to_owned();
    }
    let mut end = MAX_ERROR_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (truncated)", &s[..end])
}

/// How a client reaches registries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// https with verified certificates.
    Https,
    /// https without certificate verification (insecure sources).
    HttpsUnverified,
    /// plain http (insecure sources).
    Http,
}

type TokenKey = (String, String, Credentials);

/// One reqwest client with the rules, for one [`Scheme`].
pub struct RegistryClient {
    http: reqwest::Client,
    rules: Arc<Rules>,
    scheme: Scheme,
    /// Bound on a whole buffered answer.
    answer_timeout: Duration,
    tokens: Mutex<HashMap<TokenKey, (String, Instant)>>,
}

impl RegistryClient {
    /// A client for `scheme`; `roots` are trusted besides the system's (`additionalTrustedCA` of one host).
    pub fn new(
        scheme: Scheme,
        rules: Arc<Rules>,
        outbound: &Outbound,
        roots: &[reqwest::Certificate],
    ) -> Result<RegistryClient, String> {
        let mut builder = reqwest::Client::builder();
        for root in roots {
            builder = builder.add_root_certificate(root.clone());
        }
        let http = builder
            .user_agent(concat!("tributary/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(outbound.connect_timeout)
            .read_timeout(outbound.read_timeout)
            .danger_accept_invalid_certs(scheme == Scheme::HttpsUnverified)
            // A proxy would resolve names itself, past the resolver's rules.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver(rules.clone())))
            .redirect(rules.redirect_policy())
            .build()
            .map_err(|e| format!("building the upstream client: {e}"))?;
        Ok(RegistryClient { http, rules, scheme, answer_timeout: outbound.read_timeout * 4, tokens: Mutex::default() })
    }

    /// `<scheme>://<api host>/v2/<repository>/<rest>`; Docker Hub's API lives at `registry-1.docker.io`.
    fn url(&self, registry: &str, repository: &str, rest: &str) -> Result<Url, WireError> {
        let host = if registry == "docker.io" { "registry-1.docker.io" } else { registry };
        let scheme = if self.scheme == Scheme::Http { "http" } else { "https" };
        format!("{scheme}://{host}/v2/{repository}/{rest}")
            .parse()
            .map_err(|e| WireError::Invalid(format!("{registry}/{repository}: {e}")))
    }

    /// Sends a GET to `url` (with `accept`), answering an auth challenge once; returns a success answer or the
    /// upstream's error.
    async fn get(
        &self,
        registry: &str,
        repository: &str,
        credentials: &Credentials,
        url: Url,
        accept: Option<&str>,
    ) -> Result<Response, WireError> {
        self.rules.check_url(&url).map_err(WireError::Refused)?;
        let scope = format!("repository:{repository}:pull");
        let key = (registry.to_owned(), scope.clone(), credentials.clone());
        let cached = {
            let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
            tokens.get(&key).filter(|(_, until)| *until > Instant::now()).map(|(t, _)| t.clone())
        };
        let what = format!("{registry}/{repository}");
        let send = |auth: Option<String>| {
            let mut req = self.http.get(url.clone());
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            if let Some(a) = auth {
                req = req.header(AUTHORIZATION, a);
            }
            self.head_within(req, &what)
        };
        let first = send(cached.clone()).await?;
        let resp = if first.status() == StatusCode::UNAUTHORIZED {
            let challenge = first.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let auth = match challenge {
                Some(c) => self.answer_challenge(&c, &scope, credentials, &what).await?,
                None => None,
            };
            match auth {
                Some((header, ttl)) => {
                    let until = Instant::now() + ttl;
                    self.tokens.lock().unwrap_or_else(|e| e.into_inner()).insert(key, (header.clone(), until));
                    send(Some(header)).await?
                }
                None => first,
            }
        } else {
            first
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.error_of(resp, &what).await)
    }

    /// The `Authorization` value a challenge asks for (and how long to keep it), or `None` when there is nothing
    /// to answer with.
    async fn answer_challenge(
        &self,
        challenge: &str,
        scope: &str,
        credentials: &Credentials,
        what: &str,
    ) -> Result<Option<(String, Duration)>, WireError> {
        let (kind, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let basic = match credentials {
            Credentials::Basic { username, password } => {
                use base64::Engine as _;
                let raw = format!("{username}:{password}");
                Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw)))
            }
            Credentials::Anonymous => None,
        };
        if kind.eq_ignore_ascii_case("basic") {
            return Ok(basic.map(|b| (b, Duration::from_secs(300))));
        }
        if !kind.eq_ignore_ascii_case("bearer") {
            return Ok(None);
        }
        let params = challenge_params(params);
        let realm = params
            .get("realm")
            .ok_or_else(|| WireError::Invalid(format!("{what}: a Bearer challenge without realm")))?;
        let mut realm: Url =
            realm.parse().map_err(|e| WireError::Invalid(format!("{what}: token realm {realm:?}: {e}")))?;
        {
            let mut q = realm.query_pairs_mut();
            if let Some(service) = params.get("service") {
                q.append_pair("service", service);
            }
            q.append_pair("scope", params.get("scope").map(String::as_str).unwrap_or(scope));
        }
        self.rules.check_url(&realm).map_err(WireError::Refused)?;
        let mut req = self.http.get(realm.clone());
        if let Some(b) = &basic {
            req = req.header(AUTHORIZATION, b);
        }
        let token_what = format!("{what}: token endpoint {}", realm.host_str().unwrap_or_default());
        let resp = self.head_within(req, &token_what).await?;
        if !resp.status().is_success() {
            return Err(self.error_of(resp, &token_what).await);
        }
        let body = self.read_bounded(resp, MAX_TOKEN_BYTES, &token_what).await?;
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let t: Token = serde_json::from_slice(&body)
            .map_err(|e| WireError::Invalid(format!("{token_what}: not a token answer: {e}")))?;
        let token = t
            .token
            .or(t.access_token)
            .ok_or_else(|| WireError::Invalid(format!("{token_what}: an answer without a token")))?;
        // Kept a little shorter than the upstream says (60 s when it says nothing, as the token spec's default).
        let ttl = Duration::from_secs(t.expires_in.unwrap_or(60).saturating_sub(10).max(1));
        Ok(Some((format!("Bearer {token}"), ttl)))
    }

    /// Sends `req` and waits for the answer's head, at most the answer timeout.
    async fn head_within(&self, req: reqwest::RequestBuilder, what: &str) -> Result<Response, WireError> {
        match tokio::time::timeout(self.answer_timeout, req.send()).await {
            Ok(r) => r.map_err(|e| WireError::of(e, what)),
            Err(_) => Err(WireError::Timeout(format!("{what}: no answer within {} s", self.answer_timeout.as_secs()))),
        }
    }

    /// An error answer: its status, and the first OCI error's code and message (bounded and truncated).
    async fn error_of(&self, resp: Response, what: &str) -> WireError {
        let status = resp.status();
        let body = match self.read_bounded(resp, MAX_ERROR_BYTES, what).await {
            Ok(b) => b,
            Err(WireError::TooLarge(_)) => Bytes::new(),
            Err(e) => return e,
        };
        let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        let first = parsed.as_ref().and_then(|v| v.pointer("/errors/0"));
        let code = first.and_then(|e| e.get("code")).and_then(|c| c.as_str()).unwrap_or_default().to_owned();
        let message = match first.and_then(|e| e.get("message")).and_then(|m| m.as_str()) {
            Some(m) => m.to_owned(),
            None => String::from_utf8_lossy(&body).trim().to_owned(),
        };
        WireError::Status { status, code: truncate(&code), message: truncate(&format!("{what}: {message}")) }
    }

    /// Reads a whole answer of at most `limit` bytes within the answer timeout.
    async fn read_bounded(&self, resp: Response, limit: usize, what: &str) -> Result<Bytes, WireError> {
        let too_large = || WireError::TooLarge(format!("{what}: the answer is larger than {limit} bytes"));
        if resp.content_length().is_some_and(|l| l > limit as u64) {
            return Err(too_large());
        }
        let read = async {
            let mut buf = BytesMut::new();
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| WireError::of(e, what))?;
                if buf.len() + chunk.len() > limit {
                    return Err(too_large());
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(buf.freeze())
        };
        match tokio::time::timeout(self.answer_timeout, read).await {
            Ok(r) => r,
            Err(_) => Err(WireError::Timeout(format!(
                "{what}: no complete answer within {} s",
                self.answer_timeout.as_secs()
            ))),
        }
    }

    /// A manifest's bytes (at most `limit`).
    pub async fn manifest(
        &self,
        registry: &str,
        repository: &str,
        reference: &str,
        credentials: &Credentials,
        accept: &str,
        limit: usize,
    ) -> Result<Bytes, WireError> {
        let url = self.url(registry, repository, &format!("manifests/{reference}"))?;
        let resp = self.get(registry, repository, credentials, url, Some(accept)).await?;
        let what = format!("{registry}/{repository}:{reference}: manifest");
        self.read_bounded(resp, limit, &what).await
    }

    /// A blob's answer, to stream (the read timeout bounds every silence).
    pub async fn blob(
        &self,
        registry: &str,
        repository: &str,
        digest: &names::Digest,
        credentials: &Credentials,
    ) -> Result<Response, WireError> {
        let url = self.url(registry, repository, &format!("blobs/{digest}"))?;
        self.get(registry, repository, credentials, url, None).await
    }

    /// Every tag, following `Link` pages.
    pub async fn tags(
        &self,
        registry: &str,
        repository: &str,
        credentials: &Credentials,
    ) -> Result<Vec<String>, WireError> {
        let mut url = self.url(registry, repository, "tags/list")?;
        let mut out = Vec::new();
        let what = format!("{registry}/{repository}: tag list");
        for _ in 0..MAX_TAG_PAGES {
            let resp = self.get(registry, repository, credentials, url.clone(), None).await?;
            let next = resp
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| l.split(';').next())
                .map(|l| l.trim().trim_start_matches('<').trim_end_matches('>').to_owned());
            let body = self.read_bounded(resp, MAX_TAGS_PAGE_BYTES, &what).await?;
            #[derive(serde::Deserialize)]
            struct Tags {
                tags: Option<Vec<String>>,
            }
            let page: Tags = serde_json::from_slice(&body).map_err(|e| WireError::Invalid(format!("{what}: {e}")))?;
            out.extend(page.tags.unwrap_or_default());
            match next {
                Some(n) => url = url.join(&n).map_err(|e| WireError::Invalid(format!("{what}: Link {n:?}: {e}")))?,
                None => return Ok(out),
            }
        }
        Ok(out)
    }
}

/// `realm="…",service="…",scope="…"` into a map (values may hold commas inside their quotes).
fn challenge_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = match after.strip_prefix('"') {
            Some(quoted) => match quoted.split_once('"') {
                Some((v, t)) => (v, t),
                None => (quoted, ""),
            },
            None => after.split_once(',').unwrap_or((after, "")),
        };
        out.insert(key, value.to_owned());
        rest = tail.trim_start().trim_start_matches(',');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let p = challenge_params(r#"realm="https://auth.io/token",service="reg",scope="repository:a/b:pull,push""#);
        assert_eq!(p["realm"], "https://auth.io/token");
        assert_eq!(p["service"], "reg");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
    }

    #[test]
    fn error_text_is_truncated() {
        let long = "é".repeat(2000);
        let t = truncate(&long);
        assert!(t.len() < MAX_ERROR_TEXT + 20 && t.ends_with("(truncated)"));
        assert_eq!(truncate("short"), "short");
    }
}
