//! HTTP client for the registry under test: request building, `Location` resolution,
//! response capture and the Docker bearer-token flow (`WWW-Authenticate: Bearer realm=…`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;
use url::Url;

/// User name sent with Basic auth to a token realm when `--token` is given.
pub const TOKEN_USER: &str = "tributary";

/// A client bound to one registry base URL.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    auth: Mutex<AuthCache>,
}

#[derive(Default)]
struct AuthCache {
    /// Bearer tokens obtained from the realm, keyed by the challenge's scope string.
    by_scope: HashMap<String, String>,
    /// Last scope that worked for a repository (or other path key).
    scope_for_key: HashMap<String, String>,
}

impl Client {
    /// Builds a client for `base` (e.g. `http://127.0.0.1:5000`). `token` is sent as a bearer
    /// token and used as the Basic-auth password against a token realm.
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Self> {
        let mut base = Url::parse(base).with_context(|| format!("invalid registry URL {base:?}"))?;
        if !matches!(base.scheme(), "http" | "https") {
            bail!("registry URL must be http(s), got {base}");
        }
        base.set_query(None);
        base.set_fragment(None);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("tributary-conformance/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building HTTP client")?;
        Ok(Self { http, base, token, auth: Mutex::new(AuthCache::default()) })
    }

    /// The registry base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// `host[:port]` of the registry, as it appears in image references.
    pub fn host_port(&self) -> String {
        let host = self.base.host_str().unwrap_or_default();
        match self.base.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        }
    }

    /// Resolves an absolute path (`/v2/...`) or a (possibly relative) `Location` value.
    pub fn resolve(&self, location: &str) -> anyhow::Result<Url> {
        self.base.join(location).with_context(|| format!("cannot resolve URL {location:?}"))
    }

    /// Starts a request to `path_or_url` (absolute path, relative or absolute URL).
    pub fn request(&self, method: Method, path_or_url: &str) -> Request<'_> {
        let url = self.resolve(path_or_url);
        Request { client: self, method, url, headers: HeaderMap::new(), body: None }
    }

    pub fn get(&self, path: &str) -> Request<'_> {
        self.request(Method::GET, path)
    }
    pub fn head(&self, path: &str) -> Request<'_> {
        self.request(Method::HEAD, path)
    }
    pub fn put(&self, path: &str) -> Request<'_> {
        self.request(Method::PUT, path)
    }
    pub fn post(&self, path: &str) -> Request<'_> {
        self.request(Method::POST, path)
    }
    pub fn patch(&self, path: &str) -> Request<'_> {
        self.request(Method::PATCH, path)
    }
    pub fn delete(&self, path: &str) -> Request<'_> {
        self.request(Method::DELETE, path)
    }

    fn bearer_for(&self, key: &str) -> Option<String> {
        let cache = self.auth.lock().expect("auth cache poisoned");
        cache.scope_for_key.get(key).and_then(|scope| cache.by_scope.get(scope)).cloned().or_else(|| self.token.clone())
    }

    async fn execute(&self, req: &Request<'_>, url: &Url, bearer: Option<&str>) -> anyhow::Result<Response> {
        let mut builder = self.http.request(req.method.clone(), url.clone()).headers(req.headers.clone());
        if let Some(b) = bearer {
            builder = builder.bearer_auth(b);
        }
        match &req.body {
            Some(body) => builder = builder.body(body.clone()),
            // Always send an explicit length for bodiless writes.
            None if matches!(req.method, Method::POST | Method::PUT | Method::PATCH)
                && !req.headers.contains_key(reqwest::header::CONTENT_LENGTH) =>
            {
                builder = builder.header(reqwest::header::CONTENT_LENGTH, "0");
            }
            None => {}
        }
        let resp = builder.send().await.with_context(|| format!("{} {url}", req.method))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let final_url = resp.url().clone();
        let body = resp.bytes().await.with_context(|| format!("reading body of {} {url}", req.method))?;
        Ok(Response { method: req.method.clone(), url: final_url, status, headers, body })
    }

    /// Performs the token flow for a Bearer challenge and returns the new token.
    pub async fn fetch_token(&self, challenge: &Challenge) -> anyhow::Result<String> {
        let mut realm = Url::parse(&challenge.realm)
            .or_else(|_| self.base.join(&challenge.realm))
            .with_context(|| format!("invalid token realm {:?}", challenge.realm))?;
        {
            let mut q = realm.query_pairs_mut();
            if let Some(service) = &challenge.service {
                q.append_pair("service", service);
            }
            if let Some(scope) = &challenge.scope {
                for s in scope.split(' ').filter(|s| !s.is_empty()) {
                    q.append_pair("scope", s);
                }
            }
        }
        let mut builder = self.http.get(realm.clone());
        if let Some(t) = &self.token {
            builder = builder.basic_auth(TOKEN_USER, Some(t));
        }
        let resp = builder.send().await.with_context(|| format!("token request to {realm}"))?;
        let status = resp.status();
        let body = resp.bytes().await.context("reading token response")?;
        if !status.is_success() {
            bail!("token realm {realm} answered {status}: {}", snippet(&body));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).context("token response is not JSON")?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| anyhow!("token response has no `token`/`access_token`"))
    }
}

/// A request under construction. Bodies are kept as `Bytes` so they can be re-sent after an
/// auth challenge.
pub struct Request<'a> {
    client: &'a Client,
    method: Method,
    url: anyhow::Result<Url>,
    headers: HeaderMap,
    body: Option<Bytes>,
}

impl Request<'_> {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            self.headers.insert(n, v);
        }
        self
    }

    pub fn content_type(self, value: &str) -> Self {
        self.header("Content-Type", value)
    }

    pub fn accept(self, value: &str) -> Self {
        self.header("Accept", value)
    }

    /// Appends a query parameter (keeps whatever query the URL already has, e.g. upload state).
    pub fn query(mut self, key: &str, value: &str) -> Self {
        if let Ok(url) = &mut self.url {
            url.query_pairs_mut().append_pair(key, value);
        }
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sends the request, answering one Bearer challenge with the token flow if needed.
    pub async fn send(self) -> anyhow::Result<Response> {
        let url = match &self.url {
            Ok(u) => u.clone(),
            Err(e) => bail!("{e:#}"),
        };
        let client = self.client;
        let key = auth_key(url.path());
        let bearer = client.bearer_for(&key);
        let resp = client.execute(&self, &url, bearer.as_deref()).await?;
        if resp.status != 401 {
            return Ok(resp);
        }
        let Some(challenge) = resp.header("www-authenticate").and_then(Challenge::parse) else {
            return Ok(resp);
        };
        let scope_key = challenge.scope.clone().unwrap_or_default();
        let cached = client.auth.lock().expect("auth cache poisoned").by_scope.get(&scope_key).cloned();
        let token = match cached {
            Some(t) if Some(&t) != bearer.as_ref() => t,
            _ => client
                .fetch_token(&challenge)
                .await
                .with_context(|| format!("answering auth challenge for {} {}", self.method, url.path()))?,
        };
        {
            let mut cache = client.auth.lock().expect("auth cache poisoned");
            cache.by_scope.insert(scope_key.clone(), token.clone());
            cache.scope_for_key.insert(key, scope_key);
        }
        client.execute(&self, &url, Some(&token)).await
    }
}

/// Groups requests for auth caching: the repository name for `/v2/<name>/…`, else the path.
fn auth_key(path: &str) -> String {
    if let Some(rest) = path.strip_prefix("/v2/") {
        for marker in ["/blobs/", "/manifests/", "/tags/", "/referrers/"] {
            if let Some(i) = rest.rfind(marker) {
                return rest[..i].to_string();
            }
        }
    }
    if path.starts_with("/apis/") {
        return "/apis/".to_string();
    }
    path.to_string()
}

/// A parsed `WWW-Authenticate: Bearer …` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

impl Challenge {
    /// Parses a Bearer challenge; `None` for other schemes or a missing realm.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let (scheme, rest) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_auth_params(rest);
        Some(Self {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        })
    }
}

fn parse_auth_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next().is_none() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), val.trim().to_string());
    }
    out
}

/// A fully-read response.
#[derive(Debug, Clone)]
pub struct Response {
    pub method: Method,
    pub url: Url,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The parsed `{"errors":[…]}` body.
#[derive(Debug, Clone)]
pub struct ErrorBody {
    pub codes: Vec<String>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The header value or an error naming it.
    pub fn require_header(&self, name: &str) -> anyhow::Result<&str> {
        self.header(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| anyhow!("missing {name} header ({})", self.describe()))
    }

    /// `Content-Type` without parameters.
    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type").map(|v| v.split(';').next().unwrap_or_default().trim())
    }

    /// One-line summary of status and error codes (or a body snippet) for failure messages.
    pub fn describe(&self) -> String {
        let mut s = format!("{} {} -> {}", self.method, self.url.path(), self.status);
        if self.status >= 400 {
            match self.error_body() {
                Ok(e) => {
                    let _ = write!(s, " {}", e.codes.join(","));
                }
                Err(_) if !self.body.is_empty() => {
                    let _ = write!(s, " {:?}", snippet(&self.body));
                }
                Err(_) => {}
            }
        }
        s
    }

    /// Fails unless the status is `want`.
    pub fn expect_status(&self, want: u16) -> anyhow::Result<()> {
        if self.status != want {
            bail!("expected {want}, got {}", self.describe());
        }
        Ok(())
    }

    /// Parses the body as the spec's error envelope, validating its shape.
    pub fn error_body(&self) -> anyhow::Result<ErrorBody> {
        let v: serde_json::Value = serde_json::from_slice(&self.body)
            .map_err(|e| anyhow!("error body is not JSON ({e}): {:?}", snippet(&self.body)))?;
        let errors = v
            .get("errors")
            .and_then(|e| e.as_array())
            .ok_or_else(|| anyhow!("error body lacks an `errors` array: {}", snippet(&self.body)))?;
        if errors.is_empty() {
            bail!("error body has an empty `errors` array");
        }
        let mut codes = Vec::new();
        for e in errors {
            let code = e
                .get("code")
                .and_then(|c| c.as_str())
                .ok_or_else(|| anyhow!("error entry lacks a string `code`: {e}"))?;
            if !e.get("message").is_some_and(|m| m.is_string()) {
                bail!("error entry {code} lacks a string `message`: {e}");
            }
            codes.push(code.to_string());
        }
        Ok(ErrorBody { codes })
    }

    /// Fails unless the status is one of `statuses` and (for non-HEAD requests) the body is a
    /// well-formed error envelope containing one of `codes`.
    pub fn expect_error(&self, statuses: &[u16], codes: &[&str]) -> anyhow::Result<()> {
        let want = || {
            let s: Vec<String> = statuses.iter().map(u16::to_string).collect();
            format!("{} {}", s.join("/"), codes.join("/"))
        };
        if !statuses.contains(&self.status) {
            bail!("expected {}, got {}", want(), self.describe());
        }
        if self.method == Method::HEAD {
            return Ok(());
        }
        let body = self.error_body().with_context(|| format!("{} (expected {})", self.describe(), want()))?;
        if !body.codes.iter().any(|c| codes.contains(&c.as_str())) {
            bail!("expected {}, got {} {}", want(), self.status, body.codes.join(","));
        }
        Ok(())
    }

    /// Body parsed as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .map_err(|e| anyhow!("{}: body is not JSON ({e}): {:?}", self.describe(), snippet(&self.body)))
    }

    /// `Location` resolved against the request URL.
    pub fn location(&self) -> anyhow::Result<Url> {
        let loc = self.require_header("location")?;
        self.url.join(loc).with_context(|| format!("unparseable Location {loc:?}"))
    }
}

/// First bytes of a body, lossily decoded, for messages.
pub fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(160)]);
    s.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge_with_commas_in_scope() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://auth.example/token");
        assert_eq!(c.service.as_deref(), Some("registry.example"));
        assert_eq!(c.scope.as_deref(), Some("repository:a/b:pull,push"));
        assert!(Challenge::parse("Basic realm=\"x\"").is_none());
    }

    #[test]
    fn auth_key_uses_repository() {
        assert_eq!(auth_key("/v2/ns/s/blobs/uploads/abc"), "ns/s");
        assert_eq!(auth_key("/v2/ns/s/manifests/v1"), "ns/s");
        assert_eq!(auth_key("/v2/"), "/v2/");
    }
}
