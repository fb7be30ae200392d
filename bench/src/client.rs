//! The registry client the workloads drive: one keep-alive `reqwest` client per server, speaking only the OCI
//! distribution API, with the same request flow for both registries (so a figure means the same thing on each).
//! Every request to Tributary carries the admin token; a refused one fails loudly.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use crate::content::Blob;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// A client bound to one registry.
#[derive(Clone)]
pub struct Client {
    name: &'static str,
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// What a blob pull measured.
pub struct Pull {
    pub bytes: u64,
    /// From sending the request to the first body bytes.
    pub first_byte: Duration,
}

impl Client {
    /// `name` prefixes error messages. Idle connections are dropped after 3 s, before a server's keep-alive
    /// timeout (actix: 5 s) can close one just as a request goes out on it.
    pub fn new(name: &'static str, base: &str, token: Option<String>) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(600))
            .build()?;
        Ok(Client { name, http, base: base.to_owned(), token })
    }

    /// The same client presenting a registry token (a JWT from Tributary's token endpoint, for `scope`) instead of
    /// the API token: what docker, podman and skopeo send with every request after the token dance.
    pub async fn with_registry_token(&self, scope: &str) -> anyhow::Result<Client> {
        let api_token = self.token.as_deref().context("a registry token needs the API token")?;
        let req = self
            .http
            .get(self.url("/openshift/token"))
            .query(&[("service", "tributary"), ("scope", scope)])
            .basic_auth("bench", Some(api_token));
        let resp = self.send("token", req, StatusCode::OK).await?;
        let body: serde_json::Value = resp.json().await?;
        let jwt = body["token"].as_str().context("the token endpoint answered without a token")?;
        Ok(Client { token: Some(jwt.to_owned()), ..self.clone() })
    }

    /// An absolute URL for a path or a `Location` (absolute or relative).
    fn url(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            format!("{}{location}", self.base)
        }
    }

    fn request(&self, method: Method, location: &str) -> RequestBuilder {
        let r = self.http.request(method, self.url(location));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends and checks the status; the error names the request and quotes the body.
    /// A request without a body (or with a cloneable one) is sent a second time when the connection failed.
    async fn send(&self, what: &str, req: RequestBuilder, want: StatusCode) -> anyhow::Result<Response> {
        let retry = req.try_clone();
        let resp = match (req.send().await, retry) {
            (Ok(r), _) => r,
            (Err(e), Some(again)) if e.is_request() || e.is_connect() => {
                again.send().await.with_context(|| format!("{what} on {} (sent twice)", self.name))?
            }
            (Err(e), _) => return Err(anyhow::Error::new(e).context(format!("{what} on {}", self.name))),
        };
        if resp.status() == want {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let hint = if status == StatusCode::UNAUTHORIZED && self.token.is_some() {
            " (the server refused the admin token)"
        } else {
            ""
        };
        bail!(
            "{what} on {}: expected {want}, got {status}{hint}: {}",
            self.name,
            body.chars().take(300).collect::<String>()
        )
    }

    fn location(resp: &Response) -> anyhow::Result<String> {
        resp.headers()
            .get("Location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .context("response without Location")
    }

    fn with_digest(location: &str, digest: &str) -> String {
        let sep = if location.contains('?') { '&' } else { '?' };
        format!("{location}{sep}digest={digest}")
    }

    /// The status of a plain `GET path` (with the client's token).
    pub async fn status_of(&self, path: &str) -> anyhow::Result<u16> {
        let resp = self.request(Method::GET, path).send().await.with_context(|| format!("{} GET {path}", self.name))?;
        Ok(resp.status().as_u16())
    }

    /// Creates a namespace through Tributary's administration API (with access control on, pushes need one).
    /// An existing namespace is fine, and so is a server without that API.
    pub async fn create_namespace(&self, ns: &str) -> anyhow::Result<()> {
        let req =
            self.request(Method::POST, "/apis/tributary.dev/v1/namespaces").json(&serde_json::json!({"name": ns}));
        let resp = req.send().await.context("create namespace")?;
        match resp.status() {
            StatusCode::CREATED | StatusCode::CONFLICT | StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
                Ok(())
            }
            status => {
                let body = resp.text().await.unwrap_or_default();
                bail!("create namespace {ns}: got {status}: {}", body.chars().take(300).collect::<String>())
            }
        }
    }

    /// `POST /v2/<repo>/blobs/uploads/`: the upload's location.
    pub async fn start_upload(&self, repo: &str) -> anyhow::Result<String> {
        let req = self.request(Method::POST, &format!("/v2/{repo}/blobs/uploads/")).header("Content-Length", "0");
        let resp = self.send("start upload", req, StatusCode::ACCEPTED).await?;
        Self::location(&resp)
    }

    /// Monolithic push as distribution 2.8 supports it: `POST`, then `PUT ?digest=` with the whole body.
    pub async fn push_monolithic(&self, repo: &str, blob: &Blob) -> anyhow::Result<()> {
        let location = self.start_upload(repo).await?;
        let req = self
            .request(Method::PUT, &Self::with_digest(&location, &blob.digest))
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", blob.size.to_string())
            .body(blob.body(0, blob.size));
        self.send("monolithic PUT", req, StatusCode::CREATED).await?;
        Ok(())
    }

    /// Chunked push: `POST`, a `PATCH` per chunk with `Content-Range`, then `PUT ?digest=` with no body.
    /// Returns the number of requests made.
    pub async fn push_chunked(&self, repo: &str, blob: &Blob, chunk: u64) -> anyhow::Result<u64> {
        Ok(self.push_chunked_timed(repo, blob, chunk).await?.0)
    }

    /// [`Client::push_chunked`], also returning how long the closing `PUT` took (the finish of the upload).
    pub async fn push_chunked_timed(&self, repo: &str, blob: &Blob, chunk: u64) -> anyhow::Result<(u64, Duration)> {
        let mut location = self.start_upload(repo).await?;
        let mut requests = 1;
        let mut at = 0;
        while at < blob.size {
            let end = (at + chunk).min(blob.size);
            let req = self
                .request(Method::PATCH, &location)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Range", format!("{at}-{}", end - 1))
                .header("Content-Length", (end - at).to_string())
                .body(blob.body(at, end));
            let resp = self.send("PATCH chunk", req, StatusCode::ACCEPTED).await?;
            location = Self::location(&resp)?;
            requests += 1;
            at = end;
        }
        let req = self.request(Method::PUT, &Self::with_digest(&location, &blob.digest)).header("Content-Length", "0");
        let start = Instant::now();
        self.send("closing PUT", req, StatusCode::CREATED).await?;
        Ok((requests + 1, start.elapsed()))
    }

    /// A small blob pushed whole (configs, layers of test images).
    pub async fn push_bytes(&self, repo: &str, data: Bytes) -> anyhow::Result<String> {
        use sha2::Digest as _;
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&data)));
        let location = self.start_upload(repo).await?;
        let req = self
            .request(Method::PUT, &Self::with_digest(&location, &digest))
            .header("Content-Type", "application/octet-stream")
            .body(data);
        self.send("small blob PUT", req, StatusCode::CREATED).await?;
        Ok(digest)
    }

    /// Cross-repository mount; fails unless the registry mounted it (201).
    pub async fn mount(&self, repo: &str, from: &str, digest: &str) -> anyhow::Result<()> {
        let req = self
            .request(Method::POST, &format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"))
            .header("Content-Length", "0");
        self.send("mount", req, StatusCode::CREATED).await?;
        Ok(())
    }

    /// Pulls a blob, counting bytes and timing the first one. With `verify`, checks the digest too (slower).
    pub async fn pull(&self, repo: &str, digest: &str, verify: bool) -> anyhow::Result<Pull> {
        use sha2::Digest as _;
        let start = Instant::now();
        let req = self.request(Method::GET, &format!("/v2/{repo}/blobs/{digest}"));
        let mut resp = self.send("blob GET", req, StatusCode::OK).await?;
        let mut first_byte = None;
        let mut bytes = 0u64;
        let mut hasher = verify.then(sha2::Sha256::new);
        while let Some(chunk) = resp.chunk().await.with_context(|| format!("reading a blob body from {}", self.name))? {
            first_byte.get_or_insert_with(|| start.elapsed());
            bytes += chunk.len() as u64;
            if let Some(h) = &mut hasher {
                h.update(&chunk);
            }
        }
        if let Some(h) = hasher {
            let got = format!("sha256:{}", hex::encode(h.finalize()));
            if got != digest {
                bail!("pulled blob hashes to {got}, expected {digest}");
            }
        }
        Ok(Pull { bytes, first_byte: first_byte.unwrap_or_else(|| start.elapsed()) })
    }

    /// `POST` JSON to an admin API path (`/apis/tributary.dev/v1/…`); the JSON answer.
    pub async fn admin_post(&self, path: &str, body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let req = self.request(Method::POST, path).json(&body);
        let resp = self.send("admin POST", req, StatusCode::OK).await?;
        Ok(resp.json().await?)
    }

    pub async fn put_manifest(&self, repo: &str, reference: &str, body: Bytes) -> anyhow::Result<()> {
        let req = self
            .request(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("Content-Type", OCI_MANIFEST)
            .body(body);
        self.send("manifest PUT", req, StatusCode::CREATED).await?;
        Ok(())
    }

    /// `GET` a manifest; returns its size.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> anyhow::Result<usize> {
        let req =
            self.request(Method::GET, &format!("/v2/{repo}/manifests/{reference}")).header("Accept", ACCEPT_MANIFESTS);
        let resp = self.send("manifest GET", req, StatusCode::OK).await?;
        Ok(resp.bytes().await?.len())
    }

    /// `GET` a manifest, giving up after `limit`; returns how long it took (at least `limit` when it gave up).
    pub async fn time_manifest(&self, repo: &str, reference: &str, limit: Duration) -> Duration {
        let start = Instant::now();
        let req = self
            .request(Method::GET, &format!("/v2/{repo}/manifests/{reference}"))
            .header("Accept", ACCEPT_MANIFESTS)
            .timeout(limit);
        match req.send().await {
            Ok(r) if r.status() == StatusCode::OK => {
                let _ = r.bytes().await;
                start.elapsed()
            }
            _ => start.elapsed().max(limit),
        }
    }

    /// Tributary only: imports `from` into `ns/stream:tag` (`imagestreamimports`, insecure source allowed).
    pub async fn import(&self, ns: &str, stream: &str, tag: &str, from: &str) -> anyhow::Result<()> {
        let body = serde_json::json!({"metadata": {"name": stream}, "spec": {"import": true, "images": [
            {"from": {"kind": "DockerImage", "name": from}, "to": {"name": tag}, "importPolicy": {"insecure": true}}]}});
        let req = self
            .request(Method::POST, &format!("/apis/image.openshift.io/v1/namespaces/{ns}/imagestreamimports"))
            .json(&body);
        let resp = self.send("import", req, StatusCode::CREATED).await?;
        let answer: serde_json::Value = resp.json().await?;
        let status = &answer["status"]["images"][0]["status"];
        if status["status"] != "Success" {
            bail!("importing {from} into {}: {}", self.name, status["message"]);
        }
        Ok(())
    }

    /// The whole tags list (one request, no `n`); returns the number of tags.
    pub async fn tags(&self, repo: &str) -> anyhow::Result<usize> {
        #[derive(serde::Deserialize)]
        struct Tags {
            tags: Option<Vec<String>>,
        }
        let req = self.request(Method::GET, &format!("/v2/{repo}/tags/list"));
        let resp = self.send("tags list", req, StatusCode::OK).await?;
        let tags: Tags = resp.json().await?;
        Ok(tags.tags.map_or(0, |t| t.len()))
    }

    /// One catalog page at `location` (`/v2/_catalog?n=…` or a `Link` target): its names and the next page.
    pub async fn catalog_page(&self, location: &str) -> anyhow::Result<(Vec<String>, Option<String>)> {
        #[derive(serde::Deserialize)]
        struct Catalog {
            repositories: Vec<String>,
        }
        let resp = self.send("catalog", self.request(Method::GET, location), StatusCode::OK).await?;
        let next = resp
            .headers()
            .get("Link")
            .and_then(|v| v.to_str().ok())
            .and_then(|l| Some(l.split_once('<')?.1.split_once('>')?.0.to_owned()));
        let page: Catalog = resp.json().await?;
        Ok((page.repositories, next))
    }
}
