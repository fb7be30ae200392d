//! Access control at the HTTP edge: reading credentials (`Authorization: Basic` with an API token as password,
//! `Bearer` with a registry JWT or an API token), turning an OCI [`Endpoint`] into what it needs, answering
//! refusals (401 with the `WWW-Authenticate: Bearer realm=…,service=…,scope=…` challenge, or 403; OCI bodies that
//! name no repository), the token endpoint (`/openshift/token`, also `/v2/token`: Docker token spec GET and the
//! OAuth2 POST form), and the guard in front of the image stream API.
//!
//! `oci::dispatch` calls [`authorize`] first, before any lookup, so a refused request about an existing
//! repository looks exactly like one about a missing repository. Decisions are made by [`auth::AuthService`].

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use auth::{AuthError, Caller, Credentials, Need, Scope, Verdict};
use names::RepositoryName;
use serde_json::json;
use storage_backends::StoreError;

use super::endpoint::Endpoint;
use super::errors::{ApiError, ErrorCode};
use crate::metrics::Refusal;
use crate::service::{Registry, RegistryError};

/// What the caller may do beyond the request it was authorized for.
pub struct Decision {
    pub caller: Caller,
    /// The request may create the stream it pushes into (`create imagestreams`); only computed for manifest PUTs
    /// and upload starts.
    pub may_create_stream: bool,
}

/// The credentials of a request.
pub fn credentials(req: &HttpRequest) -> Result<Credentials, AuthError> {
    let header = match req.headers().get(actix_web::http::header::AUTHORIZATION) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| AuthError::InvalidCredentials)?),
    };
    Credentials::from_header(header)
}

/// Authenticates a request (anonymous when it has no credentials), once: the caller is left in the request's
/// extensions, where a later call (and the audit log) finds it, and its name for the request log
/// ([`super::request_log::LoggedUser`]).
pub async fn caller(req: &HttpRequest, reg: &Registry) -> Result<Caller, AuthError> {
    if let Some(known) = req.extensions().get::<Caller>() {
        return Ok(known.clone());
    }
    let authenticated = match credentials(req) {
        Ok(creds) => reg.auth.authenticate(&creds).await,
        Err(e) => Err(e),
    };
    let caller = match authenticated {
        Ok(caller) => caller,
        Err(e @ AuthError::Store(_)) => return Err(e),
        Err(e) => {
            refused(req, Refusal::InvalidCredentials);
            return Err(e);
        }
    };
    req.extensions_mut().insert(super::request_log::LoggedUser(caller.identity.name()));
    req.extensions_mut().insert(caller.clone());
    Ok(caller)
}

/// Marks `req` as refused for `reason`: the request log middleware counts it
/// (`tributary_auth_refusals_total{reason}`). Every refusal for credentials or rights calls it once.
pub fn refused(req: &HttpRequest, reason: Refusal) {
    req.extensions_mut().insert(reason);
}

mod guard;

pub use guard::{parsed, stream_api_guard, KubeRequest, Parsed, StreamApiTarget};

/// `<scheme>://<host>/openshift/token`, as the client reached us.
fn realm(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}/openshift/token", info.scheme(), info.host())
}

/// The challenge of a 401, which sends the client to the token endpoint; several scopes go space-separated into one `scope` parameter, as distribution writes them.
fn challenge(req: &HttpRequest, reg: &Registry, scopes: &[Scope], error: Option<&str>) -> String {
    let mut value = format!("Bearer realm=\"{}\",service=\"{}\"", realm(req), reg.auth.service());
    if !scopes.is_empty() {
        let scopes: Vec<String> = scopes.iter().map(Scope::to_string).collect();
        value.push_str(&format!(",scope=\"{}\"", scopes.join(" ")));
    }
    if let Some(error) = error {
        value.push_str(&format!(",error=\"{error}\""));
    }
    value
}

/// 403, the same for every repository whether it exists or not.
fn denied() -> ApiError {
    ApiError::new(ErrorCode::Denied)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::from(RegistryError::Internal(e.to_string()))
}

/// The token endpoint's answer when the metadata store fails: 503 when it is unreachable, else 500.
fn token_store_error(e: StoreError) -> HttpResponse {
    if matches!(e, StoreError::Unavailable(_)) {
        tracing::error!(cause = %e, "metadata store unavailable in the token endpoint");
        token_error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, "temporarily_unavailable")
    } else {
        tracing::error!(cause = %e, "internal error in the token endpoint");
        token_error(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Unknown, "server_error")
    }
}

/// What an OCI request needs.
pub fn need_of(endpoint: &Endpoint, method: &Method) -> Need {
    let read = method == Method::GET || method == Method::HEAD;
    match endpoint {
        Endpoint::Base => Need::Login,
        Endpoint::Catalog => Need::Catalog,
        Endpoint::Tags(r) | Endpoint::Referrers(r, _) => Need::Pull(r.clone()),
        Endpoint::Manifest(r, _) | Endpoint::Blob(r, _) if read => Need::Pull(r.clone()),
        Endpoint::Manifest(r, _) | Endpoint::Blob(r, _) if method == Method::DELETE => Need::Delete(r.clone()),
        Endpoint::Manifest(r, _) | Endpoint::Blob(r, _) | Endpoint::StartUpload(r) | Endpoint::Upload(r, _) => {
            Need::Push(r.clone())
        }
    }
}

/// The source repository of a cross-repository mount (`POST …/blobs/uploads/?mount=…&from=<repo>`), if any.
fn mount_source(req: &HttpRequest, endpoint: &Endpoint) -> Option<RepositoryName> {
    if !matches!(endpoint, Endpoint::StartUpload(_)) || req.method() != Method::POST {
        return None;
    }
    let pairs = form_pairs(req.query_string().as_bytes());
    param(&pairs, "mount")?;
    param(&pairs, "from")?.parse().ok()
}

/// The scopes a 401 asks for: the request's own, and for a mount the source's pull scope too, so that one token
/// covers the whole request (as distribution asks).
fn challenge_scopes(need: &Need, mount_from: Option<&RepositoryName>) -> Vec<Scope> {
    let from = mount_from.map(|r| Need::Pull(r.clone()));
    std::iter::once(need).chain(from.as_ref()).filter_map(Need::scope).collect()
}

/// Authorizes an OCI request, before anything is looked up.
pub async fn authorize(req: &HttpRequest, reg: &Registry, endpoint: &Endpoint) -> Result<Decision, ApiError> {
    let need = need_of(endpoint, req.method());
    let scopes = challenge_scopes(&need, mount_source(req, endpoint).as_ref());
    let refuse = |error: Option<&str>| {
        ApiError::new(ErrorCode::Unauthorized).header("WWW-Authenticate", challenge(req, reg, &scopes, error))
    };
    let caller = match caller(req, reg).await {
        Ok(c) => c,
        Err(AuthError::Store(e)) => return Err(ApiError::from(RegistryError::from(e))),
        Err(_) => return Err(refuse(Some("invalid_token"))),
    };
    match reg.auth.check(&caller, &need).await.map_err(internal)? {
        Verdict::Allow => {}
        Verdict::Unauthenticated => {
            refused(req, Refusal::Unauthenticated);
            return Err(refuse(None));
        }
        Verdict::InsufficientScope => {
            refused(req, Refusal::InsufficientScope);
            return Err(refuse(Some("insufficient_scope")));
        }
        Verdict::Denied => {
            refused(req, Refusal::Denied);
            return Err(denied());
        }
    }
    let creates = matches!(
        (endpoint, req.method()),
        (Endpoint::Manifest(..), &Method::PUT) | (Endpoint::StartUpload(_), &Method::POST)
    );
    let may_create_stream = match (&need, creates) {
        (Need::Push(repo), true) => {
            let may = reg.auth.may_create_stream(&caller, repo).await.map_err(internal)?;
            // Blobs and manifests go only into streams that exist or that the caller may create.
            if !may && !reg.streams.stream_exists(repo).await.map_err(RegistryError::from)? {
                refused(req, Refusal::Denied);
                return Err(denied());
            }
            may
        }
        _ => false,
    };
    Ok(Decision { caller, may_create_stream })
}

impl Decision {
    /// Whether the caller may pull `from`, the source of a cross-repository mount into `repo`. A caller whose
    /// roles allow it but whose token lacks the scope gets the 401 challenge naming both scopes (as distribution
    /// asks for `repository:<from>:pull` with the push scope), so that its client fetches a token that covers the
    /// mount; a caller without the rights gets `false` (an ordinary upload, never a hint about `from`).
    pub async fn may_mount_from(
        &self,
        req: &HttpRequest,
        reg: &Registry,
        repo: &RepositoryName,
        from: &RepositoryName,
    ) -> Result<bool, ApiError> {
        match reg.auth.check(&self.caller, &Need::Pull(from.clone())).await.map_err(internal)? {
            Verdict::Allow => Ok(true),
            Verdict::InsufficientScope => {
                let scopes = challenge_scopes(&Need::Push(repo.clone()), Some(from));
                let value = challenge(req, reg, &scopes, Some("insufficient_scope"));
                Err(ApiError::new(ErrorCode::Unauthorized).header("WWW-Authenticate", value))
            }
            Verdict::Unauthenticated | Verdict::Denied => Ok(false),
        }
    }
}

/// One catalog page of the repositories the caller may pull: after `last`, at most `n`, and whether more follow.
pub async fn catalog_page(
    reg: &Registry,
    decision: &Decision,
    last: Option<&str>,
    n: usize,
) -> Result<(Vec<RepositoryName>, bool), ApiError> {
    let mut out = Vec::new();
    let mut cursor = last.map(str::to_owned);
    let batch = n.clamp(100, 1000);
    loop {
        let (repos, more) = reg.catalog(cursor.as_deref(), batch).await?;
        cursor = repos.last().map(|r| r.to_string());
        for repo in reg.auth.pullable(&decision.caller, repos).await.map_err(internal)? {
            if out.len() == n {
                return Ok((out, true));
            }
            out.push(repo);
        }
        if !more || cursor.is_none() {
            return Ok((out, false));
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The token endpoint

/// Registers `/openshift/token` and `/v2/token` (before the `/v2/{tail}` OCI route).
pub fn configure(cfg: &mut web::ServiceConfig) {
    for path in ["/openshift/token", "/v2/token"] {
        cfg.route(path, web::get().to(token_get)).route(path, web::post().to(token_post));
    }
}

fn token_error(status: StatusCode, code: ErrorCode, oauth_error: &str) -> HttpResponse {
    let (wire, message, _) = code.row();
    HttpResponse::build(status).json(json!({
        "errors": [{"code": wire, "message": message}],
        "error": oauth_error,
    }))
}

fn form_pairs(text: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(text).into_owned().collect()
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Issues a token for `creds` and the requested scopes.
async fn issue(
    req: &HttpRequest,
    reg: &Registry,
    creds: Credentials,
    pairs: &[(String, String)],
    refresh_token: Option<&str>,
) -> HttpResponse {
    if param(pairs, "service").is_some_and(|s| s != reg.auth.service()) {
        return token_error(StatusCode::BAD_REQUEST, ErrorCode::Unsupported, "invalid_request");
    }
    let caller = match reg.auth.authenticate(&creds).await {
        Ok(c) => c,
        Err(AuthError::Store(e)) => return token_store_error(e),
        Err(_) => {
            refused(req, Refusal::InvalidCredentials);
            return token_error(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, "invalid_grant");
        }
    };
    let scopes = Scope::parse_all(pairs.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.as_str()));
    match reg.auth.issue(&caller, &scopes).await {
        Ok(t) => {
            let mut body = json!({
                "token": t.token,
                "access_token": t.token,
                "expires_in": t.expires_in,
                "issued_at": t.issued_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            });
            if let Some(r) = refresh_token {
                body["refresh_token"] = json!(r);
            }
            HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(body)
        }
        Err(AuthError::Store(e)) => token_store_error(e),
        Err(_) => {
            refused(req, Refusal::InvalidCredentials);
            token_error(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, "invalid_grant")
        }
    }
}

/// `GET /openshift/token?service=…&scope=…`: Basic credentials (any user, an API token as the password), an API
/// token as Bearer, or none for an anonymous token.
async fn token_get(req: HttpRequest, reg: web::Data<Registry>) -> HttpResponse {
    let creds = match credentials(&req) {
        Ok(c) => c,
        Err(_) => {
            refused(&req, Refusal::InvalidCredentials);
            return token_error(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, "invalid_grant");
        }
    };
    let pairs = form_pairs(req.query_string().as_bytes());
    issue(&req, &reg, creds, &pairs, None).await
}

/// `POST /openshift/token` with an OAuth2 form: `grant_type=password` (`username`, `password` = an API token) or
/// `grant_type=refresh_token` (`refresh_token` = an API token), `service`, `scope` (space-separated), `client_id`,
/// `access_type=offline` to get the refresh token back.
async fn token_post(req: HttpRequest, body: web::Bytes, reg: web::Data<Registry>) -> HttpResponse {
    let pairs = form_pairs(&body);
    let secret = match param(&pairs, "grant_type") {
        Some("password") => param(&pairs, "password"),
        Some("refresh_token") => param(&pairs, "refresh_token"),
        _ => return token_error(StatusCode::BAD_REQUEST, ErrorCode::Unsupported, "unsupported_grant_type"),
    };
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return token_error(StatusCode::BAD_REQUEST, ErrorCode::Unsupported, "invalid_request");
    };
    let offline =
        param(&pairs, "access_type") == Some("offline") || param(&pairs, "grant_type") == Some("refresh_token");
    let creds = Credentials::Bearer(secret.to_owned());
    issue(&req, &reg, creds, &pairs, offline.then_some(secret)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_of_endpoints() {
        let repo: RepositoryName = "ns/app".parse().unwrap();
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let table = [
            ("GET", "/v2/", Need::Login),
            ("GET", "/v2/_catalog", Need::Catalog),
            ("GET", "/v2/ns/app/tags/list", Need::Pull(repo.clone())),
            ("HEAD", "/v2/ns/app/manifests/v1", Need::Pull(repo.clone())),
            ("PUT", "/v2/ns/app/manifests/v1", Need::Push(repo.clone())),
            ("DELETE", "/v2/ns/app/manifests/v1", Need::Delete(repo.clone())),
            ("GET", &format!("/v2/ns/app/blobs/{d}"), Need::Pull(repo.clone())),
            ("DELETE", &format!("/v2/ns/app/blobs/{d}"), Need::Delete(repo.clone())),
            ("POST", "/v2/ns/app/blobs/uploads/", Need::Push(repo.clone())),
            ("GET", "/v2/ns/app/blobs/uploads/0b4a7e0e-1d2c-4e0f-9d3a-2f1e5c6b7a80", Need::Push(repo.clone())),
            ("GET", &format!("/v2/ns/app/referrers/{d}"), Need::Pull(repo.clone())),
        ];
        for (method, path, want) in table {
            let endpoint = Endpoint::parse(path).unwrap();
            assert_eq!(need_of(&endpoint, &method.parse().unwrap()), want, "{method} {path}");
        }
    }
}
