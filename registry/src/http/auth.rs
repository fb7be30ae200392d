//! Access control at the HTTP edge: reading credentials (`Authorization: Basic` with an API token as password,
//! `Bearer` with a registry JWT or an API token), turning an OCI [`Endpoint`] into what it needs, answering
//! refusals (401 with the `WWW-Authenticate: Bearer realm=…,service=…,scope=…` challenge, or 403; OCI bodies that
//! name no repository), the token endpoint (`/openshift/token`, also `/v2/token`: Docker token spec GET and the
//! OAuth2 POST form), and the guard in front of the image stream API.
//!
//! `oci::dispatch` calls [`authorize`] first, before any lookup, so a refused request about an existing
//! repository looks exactly like one about a missing repository. Decisions are made by [`auth::AuthService`].

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use auth::{AuthError, Caller, Credentials, Need, Resource, Scope, Verb, Verdict};
use names::{Namespace, RepositoryName};
use serde_json::json;
use storage_backends::StoreError;

use super::admin_api::auth_status;
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

// ---------------------------------------------------------------------------------------------------------------
// The image stream API guard

/// What a stream API request names and needs, as the guard parsed it from the path: the verb, the resource (its
/// kind for access control, and the path segment as written), the namespace (none: cluster-wide), the object name
/// and, when it names one, the repository and tag. Left in the request's extensions for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamApiTarget {
    pub verb: Verb,
    pub resource: Resource,
    /// `imagestreams`, `imagestreamtags`, `imagestreamimports`, `secrets`, …
    pub resource_name: String,
    pub namespace: Option<Namespace>,
    pub repo: Option<RepositoryName>,
    /// The `TAG` of `imagestreamtags/NAME:TAG`.
    pub tag: Option<String>,
    /// The object name as the path gives it.
    pub name: Option<String>,
}

/// A request of one of the Kubernetes-style APIs, parsed once, by the parser its handler dispatches on: the guard
/// authorizes it from this and leaves it in the request's extensions, where the handler takes it
/// ([`parsed`]), so the two can never disagree about what a request names.
#[derive(Debug, Clone)]
pub enum KubeRequest {
    /// The image stream API (`/apis/image.openshift.io/v1/…`, `/api/v1/…`).
    Streams(super::streams_api::ApiRequest),
    /// The image configuration API (`config.openshift.io`, `operator.openshift.io`).
    Policy(super::config_api::PolicyRequest),
    /// Pull secrets (`/api/v1/namespaces/{ns}/secrets[/{name}]`).
    Secrets(super::secrets::SecretsRequest),
}

/// What the parser made of a Kubernetes-style API path: the request, or why it names nothing (the handler answers
/// that: 404 or 400, which say nothing about stored objects, so no access check comes first).
pub type Parsed = Result<KubeRequest, String>;

/// Parses a request of one of the Kubernetes-style APIs; `None` for every other path and for API discovery (open
/// to all).
fn parse_kube(path: &str, query: &str) -> Option<Parsed> {
    if let Some(parsed) = super::secrets::SecretsRequest::parse(path) {
        return Some(parsed.map(KubeRequest::Secrets));
    }
    if let Some(parsed) = super::config_api::PolicyRequest::parse(path, query) {
        return Some(parsed.map(KubeRequest::Policy));
    }
    let (version, rest) = super::kube::ApiVersion::of_path(path)?;
    if rest.is_empty() || rest == "watch" {
        return None;
    }
    Some(
        super::streams_api::ApiRequest::parse(rest, query)
            .map(|api| KubeRequest::Streams(super::streams_api::ApiRequest { version, ..api })),
    )
}

/// The request the guard parsed, for the handler (parsed here when no guard ran, as in unit tests).
pub fn parsed(req: &HttpRequest) -> Option<Parsed> {
    if let Some(p) = req.extensions().get::<Parsed>() {
        return Some(p.clone());
    }
    parse_kube(req.path(), req.query_string())
}

/// The verb of a request: by method, and for reads whether it watches or names one object.
fn verb_of(method: &Method, watch: bool, named: bool) -> Verb {
    match *method {
        Method::GET | Method::HEAD if watch => Verb::Watch,
        Method::GET | Method::HEAD if named => Verb::Get,
        Method::GET | Method::HEAD => Verb::List,
        Method::POST => Verb::Create,
        Method::PUT | Method::PATCH => Verb::Update,
        _ => Verb::Delete,
    }
}

/// What a parsed request needs: one arm per route, no catch-all.
fn target_of(request: &KubeRequest, method: &Method) -> StreamApiTarget {
    use super::streams_api::Route;
    match request {
        KubeRequest::Streams(api) => {
            let ns_of = |repo: &RepositoryName| Some(repo.namespace().clone());
            let (resource, resource_name, namespace, repo, tag, name) = match &api.route {
                Route::Streams(ns) => (Resource::ImageStreams, "imagestreams", ns.clone(), None, None, None),
                Route::Stream(r) => {
                    let name = Some(r.stream().to_string());
                    (Resource::ImageStreams, "imagestreams", ns_of(r), Some(r.clone()), None, name)
                }
                Route::Tags(ns) => (Resource::ImageStreams, "imagestreamtags", ns.clone(), None, None, None),
                Route::Tag(r, t) => {
                    let name = Some(format!("{}:{t}", r.stream()));
                    (Resource::ImageStreams, "imagestreamtags", ns_of(r), Some(r.clone()), Some(t.to_string()), name)
                }
                Route::StreamImage(r, id) => {
                    let name = Some(format!("{}@{id}", r.stream()));
                    (Resource::ImageStreams, "imagestreamimages", ns_of(r), Some(r.clone()), None, name)
                }
                Route::Mappings(ns) => {
                    (Resource::ImageStreams, "imagestreammappings", Some(ns.clone()), None, None, None)
                }
                Route::Imports(ns) => {
                    (Resource::ImageStreams, "imagestreamimports", Some(ns.clone()), None, None, None)
                }
                Route::Images => (Resource::Images, "images", None, None, None, None),
                Route::Image(d) => (Resource::Images, "images", None, None, None, Some(d.to_string())),
            };
            // A watch of one object names it in `fieldSelector`, not the path: still a watch.
            let named = name.is_some() && !matches!(api.route, Route::Streams(_) | Route::Tags(_));
            StreamApiTarget {
                verb: verb_of(method, api.watch, named),
                resource,
                resource_name: resource_name.to_owned(),
                namespace,
                repo,
                tag,
                name,
            }
        }
        KubeRequest::Policy(p) => StreamApiTarget {
            verb: verb_of(method, p.watch, p.name.is_some()),
            resource: Resource::ImageConfig,
            resource_name: p.kind.resource().to_owned(),
            namespace: None,
            repo: None,
            tag: None,
            name: p.name.clone(),
        },
        KubeRequest::Secrets(s) => StreamApiTarget {
            verb: verb_of(method, false, s.name.is_some()),
            resource: Resource::Secrets,
            resource_name: "secrets".to_owned(),
            namespace: Some(s.namespace.clone()),
            repo: None,
            tag: None,
            name: s.name.clone(),
        },
    }
}

/// Middleware in front of the image stream API (`/apis/image.openshift.io/v1/...`, and its legacy twin under
/// `/api/v1/...`): every route there, present
/// and future, is checked by method (GET = get/list/watch, POST = create, PUT/PATCH = update, DELETE = delete) on
/// `imagestreams` in the route's namespace, or on cluster-scoped `images`/all-namespace lists.
pub async fn stream_api_guard<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(parsed) = parse_kube(req.path(), req.query_string()) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    req.extensions_mut().insert(parsed.clone());
    let Ok(request) = parsed else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let target = target_of(&request, req.method());
    req.extensions_mut().insert(target.clone());
    let StreamApiTarget { verb, resource, namespace: ns, repo, .. } = target;
    let Some(reg) = req.app_data::<web::Data<Registry>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let refusal = match caller(req.request(), &reg).await {
        Err(e) => Some(auth_status(&e)),
        Ok(caller) => match reg.auth.check_stream_api(&caller, verb, resource, ns.as_ref(), repo.as_ref()).await {
            Ok(Verdict::Allow) => None,
            Ok(verdict @ (Verdict::Unauthenticated | Verdict::InsufficientScope)) => {
                let reason = match verdict {
                    Verdict::InsufficientScope => Refusal::InsufficientScope,
                    _ => Refusal::Unauthenticated,
                };
                refused(req.request(), reason);
                Some(auth_status(&AuthError::Unauthenticated))
            }
            Ok(Verdict::Denied) => {
                refused(req.request(), Refusal::Denied);
                Some(auth_status(&AuthError::Forbidden))
            }
            Err(e) => Some(auth_status(&AuthError::Store(e))),
        },
    };
    match refusal {
        None => Ok(next.call(req).await?.map_into_left_body()),
        Some(resp) => Ok(req.into_response(resp).map_into_right_body()),
    }
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

    #[test]
    fn stream_api_needs() {
        let ns: Namespace = "team".parse().unwrap();
        let app: RepositoryName = "team/app".parse().unwrap();
        let need = |m: &Method, path: &str, q: &str| parse_kube(path, q)?.ok().map(|r| target_of(&r, m));
        let p = |m: &str, path: &str, q: &str| {
            need(&m.parse().unwrap(), path, q).map(|t| (t.verb, t.resource, t.namespace, t.repo))
        };
        assert_eq!(p("GET", "/apis/image.openshift.io/v1", ""), None);
        assert_eq!(p("GET", "/apis/config.openshift.io/v1", ""), None, "discovery is open");
        assert_eq!(
            p("PATCH", "/apis/config.openshift.io/v1/images/cluster", ""),
            Some((Verb::Update, Resource::ImageConfig, None, None))
        );
        assert_eq!(
            p("GET", "/apis/operator.openshift.io/v1alpha1/imagecontentsourcepolicies", "watch=true"),
            Some((Verb::Watch, Resource::ImageConfig, None, None))
        );
        assert_eq!(
            p("GET", "/apis/image.openshift.io/v1/namespaces/team/imagestreams/app", ""),
            Some((Verb::Get, Resource::ImageStreams, Some(ns.clone()), Some(app.clone())))
        );
        assert_eq!(
            p("PUT", "/apis/image.openshift.io/v1/namespaces/team/imagestreamtags/app:v1", ""),
            Some((Verb::Update, Resource::ImageStreams, Some(ns.clone()), Some(app.clone())))
        );
        assert_eq!(
            p("GET", "/apis/image.openshift.io/v1/namespaces/team/imagestreams", "watch=true"),
            Some((Verb::Watch, Resource::ImageStreams, Some(ns.clone()), None))
        );
        assert_eq!(
            p("GET", "/apis/image.openshift.io/v1/watch/namespaces/team/imagestreams", ""),
            Some((Verb::Watch, Resource::ImageStreams, Some(ns.clone()), None))
        );
        assert_eq!(
            p("GET", "/apis/image.openshift.io/v1/watch/namespaces/team/imagestreams/app", ""),
            Some((Verb::Watch, Resource::ImageStreams, Some(ns.clone()), Some(app.clone())))
        );
        assert_eq!(
            p("POST", "/apis/image.openshift.io/v1/namespaces/team/imagestreamimports", ""),
            Some((Verb::Create, Resource::ImageStreams, Some(ns), None))
        );
        assert_eq!(
            p("GET", &format!("/apis/image.openshift.io/v1/images/{}", names::Digest::sha256_of(b"x")), ""),
            Some((Verb::Get, Resource::Images, None, None))
        );
        assert_eq!(
            p("GET", "/apis/image.openshift.io/v1/imagestreams", ""),
            Some((Verb::List, Resource::ImageStreams, None, None))
        );
        assert_eq!(p("GET", "/apis/other/v1/x", ""), None);
        let tag = need(&Method::PUT, "/apis/image.openshift.io/v1/namespaces/team/imagestreamtags/app:v1", "").unwrap();
        assert_eq!(
            (tag.resource_name.as_str(), tag.tag.as_deref(), tag.name.as_deref()),
            ("imagestreamtags", Some("v1"), Some("app:v1"))
        );
    }
}
