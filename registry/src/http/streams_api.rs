//! The image stream REST API under `/apis/image.openshift.io/v1/`, in OpenShift's shapes:
//!
//! ```text
//! [watch/]namespaces/{ns}/imagestreams[/{name}]          list (watch) create | get replace patch delete
//! [watch/]namespaces/{ns}/imagestreamtags[/{name}:{tag}] list (watch) create | get replace patch delete
//! namespaces/{ns}/imagestreamimages/{name}@{id}          get (id: a digest or a unique prefix of its hex)
//! namespaces/{ns}/imagestreammappings                    create
//! namespaces/{ns}/imagestreamimports                     create (import from external registries)
//! [watch/]imagestreams, [watch/]imagestreamtags          list (watch) over every namespace
//! images[/{digest}]                                      list | get (cluster-scoped)
//! ```
//! A request is parsed into an [`ApiRequest`] first (one [`Route`] and the query), then dispatched with one
//! `match`. Access is checked in front of every route by `auth::stream_api_guard` (the verb from the method,
//! `imagestreams` in the route's namespace); [`authorize_sources`] adds the one check the guard cannot make: a
//! spec tag copying from another namespace needs `get` there. Discovery, OpenAPI, tables, `Status` bodies and
//! the watch wire format are in [`super::kube`]. The work is done by [`streams::StreamService`].

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::http::header::CONTENT_TYPE;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use auth::{Resource, Verb, Verdict};
use names::{Digest, Namespace, RepositoryName, StreamName, TagName};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use streams::model::{ImageStream, ImageStreamMapping, ImageStreamTag, ObjectList, ObjectMeta, TagReference};
use streams::objects::PatchKind;
use streams::pages::PageRequest;
use streams::refs::{ImageId, IsImageName, IsTagName, TagSource};
use streams::watch::{WatchScope, Watched};
use streams::{ObjectKind, StreamError};

use super::kube::{self, ApiVersion};
use super::status::{self, Reason};
use crate::service::Registry;

const NO_SUCH_RESOURCE: &str = "the server could not find the requested resource";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(kube::configure);
    for version in ApiVersion::ALL {
        cfg.route(&format!("{}/{{tail:.*}}", version.base()), web::to(dispatch));
    }
}

/// What a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `imagestreams` of a namespace, or of all (`None`).
    Streams(Option<Namespace>),
    Stream(RepositoryName),
    /// `imagestreamtags` of a namespace, or of all (`None`).
    Tags(Option<Namespace>),
    Tag(RepositoryName, TagName),
    StreamImage(RepositoryName, ImageId),
    Mappings(Namespace),
    Imports(Namespace),
    Images,
    Image(Digest),
}

/// A parsed request: the route, whether it is a watch, and the query parameters the API honours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    pub route: Route,
    /// Which path the request came by; objects answered carry its `apiVersion`.
    pub version: ApiVersion,
    pub watch: bool,
    pub resource_version: Option<u64>,
    /// `fieldSelector=metadata.name=…`
    pub name: Option<String>,
    pub labels: Vec<LabelTerm>,
    pub timeout: Option<Duration>,
    pub field_validation: FieldValidation,
    /// `limit`, `continue` and `search` (a substring of the name): a page of a namespace's streams, or of one
    /// stream's tags ([`super::stream_pages`]).
    pub page: Option<PageRequest>,
}

/// `fieldValidation`: what to do with fields of a sent object that its schema does not know (kubectl sends
/// `Strict` when the OpenAPI document says the server validates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

/// One term of a `labelSelector`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelTerm {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

impl LabelTerm {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            LabelTerm::Equals(k, v) => labels.get(k) == Some(v),
            LabelTerm::NotEquals(k, v) => labels.get(k) != Some(v),
            LabelTerm::Exists(k) => labels.contains_key(k),
            LabelTerm::Absent(k) => !labels.contains_key(k),
        }
    }
}

fn parse_labels(selector: &str) -> Result<Vec<LabelTerm>, String> {
    let mut out = Vec::new();
    for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let t = if let Some((k, v)) = term.split_once("!=") {
            LabelTerm::NotEquals(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            LabelTerm::Equals(k.trim().into(), v.trim().into())
        } else if let Some(k) = term.strip_prefix('!') {
            LabelTerm::Absent(k.trim().into())
        } else if term.contains([' ', '(', ')']) {
            return Err(format!("label selector {term:?}: only =, ==, !=, KEY and !KEY are supported"));
        } else {
            LabelTerm::Exists(term.into())
        };
        out.push(t);
    }
    Ok(out)
}

fn parse_name<T: std::str::FromStr>(s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| e.to_string())
}

impl ApiRequest {
    /// Parses the path below `/apis/image.openshift.io/v1/` and the query string.
    pub fn parse(tail: &str, query: &str) -> Result<ApiRequest, String> {
        let mut segments: Vec<&str> = tail.trim_matches('/').split('/').collect();
        let mut watch = false;
        if segments.first() == Some(&"watch") {
            watch = true;
            segments.remove(0);
        }
        let route = match segments.as_slice() {
            ["namespaces", ns, resource, rest @ ..] => {
                let ns: Namespace = parse_name(ns)?;
                match (*resource, rest) {
                    ("imagestreams", []) => Route::Streams(Some(ns)),
                    ("imagestreams", [name]) => Route::Stream(RepositoryName::new(ns, parse_name::<StreamName>(name)?)),
                    ("imagestreamtags", []) => Route::Tags(Some(ns)),
                    ("imagestreamtags", [name]) => {
                        let n: IsTagName = parse_name(name)?;
                        Route::Tag(RepositoryName::new(ns, n.stream), n.tag)
                    }
                    ("imagestreamimages", [name]) => {
                        let n: IsImageName = parse_name(name)?;
                        Route::StreamImage(RepositoryName::new(ns, n.stream), n.id)
                    }
                    ("imagestreammappings", []) => Route::Mappings(ns),
                    ("imagestreamimports", []) => Route::Imports(ns),
                    _ => return Err(format!("{NO_SUCH_RESOURCE} ({tail})")),
                }
            }
            ["imagestreams"] => Route::Streams(None),
            ["imagestreamtags"] => Route::Tags(None),
            ["images"] => Route::Images,
            ["images", digest] => Route::Image(parse_name(digest)?),
            _ => return Err(format!("{NO_SUCH_RESOURCE} ({tail})")),
        };
        let mut request = ApiRequest {
            route,
            version: ApiVersion::default(),
            watch,
            resource_version: None,
            name: None,
            labels: Vec::new(),
            timeout: None,
            field_validation: FieldValidation::default(),
            page: None,
        };
        let mut page = super::stream_pages::PageQuery::default();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "watch" => request.watch |= v == "true" || v == "1",
                "resourceVersion" if !v.is_empty() => {
                    request.resource_version =
                        Some(v.parse().map_err(|_| format!("resourceVersion {v:?} is not one of this server's"))?)
                }
                "fieldSelector" => {
                    for term in v.split(',').filter(|t| !t.is_empty()) {
                        let (field, value) = term
                            .split_once("==")
                            .or_else(|| term.split_once('='))
                            .ok_or_else(|| format!("field selector {term:?}: only FIELD=VALUE is supported"))?;
                        match field {
                            "metadata.name" => request.name = Some(value.to_owned()),
                            "metadata.namespace" => {}
                            other => return Err(format!("field label not supported: {other}")),
                        }
                    }
                }
                "labelSelector" => request.labels = parse_labels(&v)?,
                "dryRun" if !v.is_empty() => return Err("dryRun is not supported by this server".into()),
                "fieldValidation" => {
                    request.field_validation = match v.as_ref() {
                        "Ignore" => FieldValidation::Ignore,
                        "Warn" | "" => FieldValidation::Warn,
                        "Strict" => FieldValidation::Strict,
                        other => return Err(format!("fieldValidation {other:?} is not Ignore, Warn or Strict")),
                    }
                }
                "timeoutSeconds" => {
                    request.timeout = Some(Duration::from_secs(v.parse().map_err(|_| "timeoutSeconds: not a number")?))
                }
                "limit" | "continue" | "search" | "tag" | "historyLimit" => page.set(&k, &v)?,
                _ => {}
            }
        }
        request.page = page.into_request()?;
        Ok(request)
    }

    pub(super) fn selects(&self, meta: &ObjectMeta) -> bool {
        self.name.as_ref().is_none_or(|n| *n == meta.name) && self.labels.iter().all(|t| t.matches(&meta.labels))
    }
}

/// An answer that ends a request early (a refusal), boxed to keep `Result`s small.
pub struct Refusal(Box<HttpResponse>);

impl From<HttpResponse> for Refusal {
    fn from(r: HttpResponse) -> Self {
        Refusal(Box::new(r))
    }
}

impl From<Refusal> for HttpResponse {
    fn from(r: Refusal) -> Self {
        *r.0
    }
}

pub(super) fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(bytes).map_err(|e| kube::bad_request(format!("the request body is not valid: {e}")).into())
}

/// A sent object (or patch) of `kind`, checked against its schema as `fieldValidation` asks: unknown fields
/// refuse the request (`Strict`) or come back as warnings (`Warn`).
fn checked<T: DeserializeOwned>(api: &ApiRequest, kind: ObjectKind, doc: Value) -> Result<(T, Vec<String>), Refusal> {
    let unknown = match api.field_validation {
        FieldValidation::Ignore => Vec::new(),
        FieldValidation::Warn | FieldValidation::Strict => kube::unknown_fields(kind, &doc),
    };
    if api.field_validation == FieldValidation::Strict && !unknown.is_empty() {
        let fields: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
        return Err(kube::bad_request(format!("strict decoding error: {}", fields.join(", "))).into());
    }
    let value = serde_json::from_value(doc)
        .map_err(|e| Refusal::from(kube::bad_request(format!("the request body is not valid: {e}"))))?;
    Ok((value, unknown.into_iter().map(|f| format!("unknown field \"{f}\"")).collect()))
}

/// Adds `Warning` headers, as the Kubernetes API server does.
pub(super) fn with_warnings(mut resp: HttpResponse, warnings: &[String]) -> HttpResponse {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "'"));
        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&text) {
            resp.headers_mut().append(actix_web::http::header::WARNING, v);
        }
    }
    resp
}

fn respond<T: Serialize>(code: StatusCode, result: Result<T, StreamError>) -> HttpResponse {
    match result {
        Ok(v) => HttpResponse::build(code).json(v),
        Err(e) => kube::error(&e),
    }
}

pub(super) fn list_response<T: Serialize>(
    req: &HttpRequest,
    api: &ApiRequest,
    list: Result<ObjectList<T>, StreamError>,
    meta: impl Fn(&T) -> &ObjectMeta,
    table: impl Fn(&str, &[T]) -> Value,
) -> HttpResponse {
    let mut list = match list {
        Ok(l) => l,
        Err(e) => return kube::error(&e),
    };
    list.items.retain(|i| api.selects(meta(i)));
    if kube::wants_table(req) {
        kube::json_response(StatusCode::OK, &table(&list.metadata.resource_version, &list.items), true)
    } else {
        kube::json_response(StatusCode::OK, &serde_json::to_value(&list).unwrap_or(Value::Null), false)
    }
}

fn object_response<T: Serialize>(
    req: &HttpRequest,
    result: Result<T, StreamError>,
    table: impl Fn(&T) -> Value,
) -> HttpResponse {
    match result {
        Ok(o) if kube::wants_table(req) => kube::json_response(StatusCode::OK, &table(&o), true),
        other => respond(StatusCode::OK, other),
    }
}

/// Access control the guard cannot do from the path alone: a spec tag whose source is a stream of another
/// namespace copies from there, so the caller must be allowed to `get` that stream. The single hook for it.
async fn authorize_sources(
    req: &HttpRequest,
    reg: &Registry,
    here: &RepositoryName,
    tags: &[TagReference],
) -> Result<(), HttpResponse> {
    let sources: Vec<RepositoryName> = tags
        .iter()
        .filter_map(|t| t.from.as_ref().and_then(|f| TagSource::parse(f).ok()))
        .filter_map(|s| s.repository(here))
        .filter(|r| r.namespace() != here.namespace())
        .collect();
    if sources.is_empty() {
        return Ok(());
    }
    let caller = super::auth::caller(req, reg).await.map_err(|e| super::admin_api::auth_status(&e))?;
    for source in sources {
        let verdict = reg
            .auth
            .check_stream_api(&caller, Verb::Get, Resource::ImageStreams, Some(source.namespace()), Some(&source))
            .await
            .map_err(|e| kube::error(&StreamError::Store(e)))?;
        if verdict != Verdict::Allow {
            super::auth::refused(req, crate::metrics::Refusal::Denied);
            return Err(status::failure(
                Reason::Forbidden,
                format!("cannot get imagestreams in namespace {} to tag from {source}", source.namespace()),
            ));
        }
    }
    Ok(())
}

/// How a PATCH body is to be read: JSON merge patch, or a strategic merge patch (what `kubectl apply` sends, as
/// the OpenAPI document offers it; `spec.tags` merges by name); JSON patch and server-side apply are refused.
pub(super) fn patch_body(req: &HttpRequest, bytes: &[u8]) -> Result<(Value, PatchKind), Refusal> {
    let content_type = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "application/merge-patch+json" | "application/json" => Ok((body(bytes)?, PatchKind::Merge)),
        "application/strategic-merge-patch+json" => Ok((body(bytes)?, PatchKind::Strategic)),
        other => Err(status::failure(
            Reason::UnsupportedMediaType,
            format!(
                "the body of the request was in an unknown format ({other}); accepted: application/merge-patch+json, \
                 application/strategic-merge-patch+json"
            ),
        )
        .into()),
    }
}

async fn dispatch(req: HttpRequest, bytes: web::Bytes, reg: web::Data<Registry>) -> HttpResponse {
    // Parsed once, by the access guard, which authorized exactly this.
    let api = match super::auth::parsed(&req) {
        Some(Ok(super::auth::KubeRequest::Streams(a))) => a,
        Some(Err(m)) if !m.starts_with(NO_SUCH_RESOURCE) => return kube::bad_request(m),
        Some(Err(m)) => return status::failure(Reason::NotFound, m),
        _ => return status::failure(Reason::NotFound, format!("{NO_SUCH_RESOURCE} ({})", req.path())),
    };
    let version = api.version;
    // Read-only mode: every write (create, replace, patch, delete, mappings, imports) is refused here, once, with
    // 405 MethodNotAllowed (the OCI routes answer 405 UNSUPPORTED too); access was checked by the guard before.
    let reads = req.method() == Method::GET || req.method() == Method::HEAD;
    if !reads {
        match reg.check_writable().await {
            Ok(()) => {}
            Err(crate::service::RegistryError::ReadOnly) => {
                let m = crate::service::readonly::REFUSAL.to_owned();
                return status::failure(Reason::MethodNotAllowed, m);
            }
            Err(e) => {
                tracing::error!(cause = %e, "reading the read-only switch");
                return status::failure(Reason::InternalError, "internal error");
            }
        }
    }
    let resp = match handle(&req, &api, &bytes, &reg).await {
        Ok(r) | Err(r) => r,
    };
    if version == ApiVersion::Group || api.watch {
        return resp;
    }
    relabel(resp, version).await
}

/// Rewrites the `apiVersion` of the objects in a (small, JSON) answer for the legacy path.
async fn relabel(resp: HttpResponse, version: ApiVersion) -> HttpResponse {
    let (resp, body) = resp.into_parts();
    let Ok(bytes) = actix_web::body::to_bytes(body).await else {
        return status::failure(Reason::InternalError, "internal error");
    };
    let bytes = match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut doc) => {
            version.relabel(&mut doc);
            serde_json::to_vec(&doc).map(web::Bytes::from).unwrap_or(bytes)
        }
        Err(_) => bytes,
    };
    resp.set_body(actix_web::body::BoxBody::new(bytes))
}

async fn handle(
    req: &HttpRequest,
    api: &ApiRequest,
    bytes: &[u8],
    reg: &Registry,
) -> Result<HttpResponse, HttpResponse> {
    let svc = &reg.streams;
    let method = req.method().clone();
    let table = kube::wants_table(req);
    Ok(match (&method, &api.route) {
        (&Method::GET, Route::Streams(ns)) if api.watch => {
            let scope = WatchScope { namespace: ns.clone(), name: api.name.clone() };
            kube::watch_response(
                svc.watch(Watched::ImageStreams, scope, api.resource_version),
                table,
                api.timeout,
                api.version,
            )
        }
        (&Method::GET, Route::Stream(repo)) if api.watch => {
            let scope = WatchScope { namespace: Some(repo.namespace().clone()), name: Some(repo.stream().to_string()) };
            kube::watch_response(
                svc.watch(Watched::ImageStreams, scope, api.resource_version),
                table,
                api.timeout,
                api.version,
            )
        }
        (&Method::GET, Route::Tags(ns)) if api.watch => {
            let scope = WatchScope { namespace: ns.clone(), name: api.name.clone() };
            kube::watch_response(
                svc.watch(Watched::ImageStreamTags, scope, api.resource_version),
                table,
                api.timeout,
                api.version,
            )
        }
        (&Method::GET, Route::Tag(repo, tag)) if api.watch => {
            let scope = WatchScope {
                namespace: Some(repo.namespace().clone()),
                name: Some(format!("{}:{tag}", repo.stream())),
            };
            kube::watch_response(
                svc.watch(Watched::ImageStreamTags, scope, api.resource_version),
                table,
                api.timeout,
                api.version,
            )
        }
        (_, _) if api.watch => return Err(status::failure(Reason::MethodNotAllowed, "watch is not supported here")),
        (&Method::GET, Route::Streams(Some(ns))) if api.page.is_some() => {
            super::stream_pages::streams(req, api, svc, ns).await
        }
        (&Method::GET, Route::Stream(repo)) if api.page.is_some() => super::stream_pages::stream(api, svc, repo).await,
        (&Method::GET, Route::Streams(ns)) => {
            list_response(req, api, svc.list_streams(ns.as_ref()).await, |s| &s.metadata, kube::stream_table)
        }
        (&Method::POST, Route::Streams(Some(ns))) => {
            let (input, warnings): (ImageStream, _) = checked(api, ObjectKind::ImageStream, body(bytes)?)?;
            let here = RepositoryName::new(ns.clone(), parse_name(&input.metadata.name).map_err(kube::bad_request)?);
            super::audit::note(req, "stream", here.stream().to_string());
            authorize_sources(req, reg, &here, &input.spec.tags).await?;
            with_warnings(respond(StatusCode::CREATED, svc.create_stream(ns, input).await), &warnings)
        }
        (&Method::GET, Route::Stream(repo)) => {
            let found = svc.get_stream(repo).await.and_then(|s| {
                s.ok_or_else(|| StreamError::NotFound {
                    kind: ObjectKind::ImageStream,
                    name: repo.stream().to_string(),
                })
            });
            object_response(req, found, |s| kube::stream_table(&s.metadata.resource_version, std::slice::from_ref(s)))
        }
        (&Method::PUT, Route::Stream(repo)) => {
            let (input, warnings): (ImageStream, _) = checked(api, ObjectKind::ImageStream, body(bytes)?)?;
            authorize_sources(req, reg, repo, &input.spec.tags).await?;
            with_warnings(respond(StatusCode::OK, svc.replace_stream(repo, input).await), &warnings)
        }
        (&Method::PATCH, Route::Stream(repo)) => {
            let (patch, kind) = patch_body(req, bytes)?;
            let (_, warnings): (Value, _) = checked(api, ObjectKind::ImageStream, patch.clone())?;
            let tags: Vec<TagReference> =
                serde_json::from_value(patch.pointer("/spec/tags").cloned().unwrap_or(Value::Array(vec![])))
                    .unwrap_or_default();
            authorize_sources(req, reg, repo, &tags).await?;
            with_warnings(respond(StatusCode::OK, svc.patch_stream(repo, &patch, kind).await), &warnings)
        }
        (&Method::DELETE, Route::Stream(repo)) => match svc.delete_stream(repo).await {
            Ok(_) => kube::success(StatusCode::OK, repo.stream().as_str(), ObjectKind::ImageStream),
            Err(e) => kube::error(&e),
        },
        (&Method::GET, Route::Tags(ns)) => {
            list_response(req, api, svc.list_istags(ns.as_ref()).await, |t| &t.metadata, kube::tag_table)
        }
        (&Method::POST, Route::Tags(Some(ns))) => {
            let (input, warnings): (ImageStreamTag, _) = checked(api, ObjectKind::ImageStreamTag, body(bytes)?)?;
            let name: IsTagName = parse_name(&input.metadata.name).map_err(kube::bad_request)?;
            super::audit::note(req, "stream", name.stream.to_string());
            super::audit::note(req, "tag", name.tag.to_string());
            let here = RepositoryName::new(ns.clone(), name.stream);
            authorize_sources(req, reg, &here, input.tag.as_slice()).await?;
            with_warnings(respond(StatusCode::CREATED, svc.create_istag(ns, input).await), &warnings)
        }
        (&Method::GET, Route::Tag(repo, tag)) => object_response(req, svc.get_istag(repo, tag).await, |t| {
            kube::tag_table(&t.metadata.resource_version, std::slice::from_ref(t))
        }),
        (&Method::PUT, Route::Tag(repo, tag)) => {
            let (input, warnings): (ImageStreamTag, _) = checked(api, ObjectKind::ImageStreamTag, body(bytes)?)?;
            authorize_sources(req, reg, repo, input.tag.as_slice()).await?;
            with_warnings(respond(StatusCode::OK, svc.replace_istag(repo, tag, input).await), &warnings)
        }
        (&Method::PATCH, Route::Tag(repo, tag)) => {
            let (patch, kind) = patch_body(req, bytes)?;
            let (_, warnings): (Value, _) = checked(api, ObjectKind::ImageStreamTag, patch.clone())?;
            let current = svc.get_istag(repo, tag).await.map_err(|e| kube::error(&e))?;
            let mut doc = serde_json::to_value(&current).unwrap_or(Value::Null);
            let rv = current.metadata.resource_version.clone();
            streams::objects::apply_patch(&mut doc, &patch, kind);
            let mut patched: ImageStreamTag =
                serde_json::from_value(doc).map_err(|e| kube::bad_request(e.to_string()))?;
            if patch.pointer("/metadata/resourceVersion").is_none() {
                patched.metadata.resource_version = rv;
            }
            authorize_sources(req, reg, repo, patched.tag.as_slice()).await?;
            with_warnings(respond(StatusCode::OK, svc.replace_istag(repo, tag, patched).await), &warnings)
        }
        (&Method::DELETE, Route::Tag(repo, tag)) => match svc.delete_istag(repo, tag).await {
            Ok(()) => kube::success(StatusCode::OK, &format!("{}:{tag}", repo.stream()), ObjectKind::ImageStreamTag),
            Err(e) => kube::error(&e),
        },
        (&Method::GET, Route::StreamImage(repo, id)) => respond(StatusCode::OK, svc.get_isimage(repo, id).await),
        (&Method::POST, Route::Mappings(ns)) => {
            let (mapping, _): (ImageStreamMapping, _) = checked(api, ObjectKind::ImageStreamMapping, body(bytes)?)?;
            let name = mapping.metadata.name.clone();
            super::audit::note(req, "stream", name.clone());
            match svc.create_mapping(ns, mapping).await {
                Ok(()) => kube::success(StatusCode::CREATED, &name, ObjectKind::ImageStreamMapping),
                Err(e) => kube::error(&e),
            }
        }
        (&Method::POST, Route::Imports(ns)) => {
            let isi: streams::import::ImageStreamImport = body(bytes)?;
            super::audit::note(req, "stream", isi.metadata.name.clone());
            respond(StatusCode::CREATED, reg.import_stream(ns, isi).await)
        }
        (&Method::GET, Route::Images) => {
            list_response(req, api, svc.list_images().await, |i| &i.metadata, kube::image_table)
        }
        (&Method::GET, Route::Image(digest)) => {
            let found = svc.get_image(digest).await.and_then(|i| {
                i.ok_or_else(|| StreamError::NotFound { kind: ObjectKind::Image, name: digest.to_string() })
            });
            object_response(req, found, |i| kube::image_table(&i.metadata.resource_version, std::slice::from_ref(i)))
        }
        (m, r) => status::failure(
            Reason::MethodNotAllowed,
            format!("the server does not allow this method on the requested resource ({m} {r:?})"),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        let ns: Namespace = "team".parse().unwrap();
        let app: RepositoryName = "team/app".parse().unwrap();
        let d = Digest::sha256_of(b"x");
        let p = |tail: &str, q: &str| ApiRequest::parse(tail, q);
        let image_path = format!("images/{d}");
        let table: Vec<(&str, &str, Route, bool)> = vec![
            ("namespaces/team/imagestreams", "", Route::Streams(Some(ns.clone())), false),
            ("namespaces/team/imagestreams", "watch=true", Route::Streams(Some(ns.clone())), true),
            ("watch/namespaces/team/imagestreams", "", Route::Streams(Some(ns.clone())), true),
            ("namespaces/team/imagestreams/app", "", Route::Stream(app.clone()), false),
            ("watch/namespaces/team/imagestreams/app", "", Route::Stream(app.clone()), true),
            ("namespaces/team/imagestreamtags", "", Route::Tags(Some(ns.clone())), false),
            ("namespaces/team/imagestreamtags/app:v1", "", Route::Tag(app.clone(), "v1".parse().unwrap()), false),
            (
                "namespaces/team/imagestreamimages/app@3a335d7",
                "",
                Route::StreamImage(app.clone(), "3a335d7".parse().unwrap()),
                false,
            ),
            ("namespaces/team/imagestreammappings", "", Route::Mappings(ns.clone()), false),
            ("imagestreams", "watch=1", Route::Streams(None), true),
            ("imagestreamtags", "", Route::Tags(None), false),
            ("images", "", Route::Images, false),
            (&image_path, "", Route::Image(d.clone()), false),
        ];
        for (tail, q, route, watch) in table {
            let r = p(tail, q).unwrap_or_else(|e| panic!("{tail}: {e}"));
            assert_eq!((r.route, r.watch), (route, watch), "{tail}?{q}");
        }
        for bad in [
            "namespaces/Team/imagestreams",
            "namespaces/team/imagestreamtags/app",
            "namespaces/team/imagestreamimages/app@zz",
            "namespaces/team/pods",
            "images/sha256:nothex",
            "namespaces/team/imagestreams/app/status/x",
        ] {
            assert!(p(bad, "").is_err(), "{bad}");
        }
        let r = p(
            "namespaces/team/imagestreams",
            "resourceVersion=42&fieldSelector=metadata.name%3Dapp&labelSelector=a%3Db,!c&timeoutSeconds=5",
        )
        .unwrap();
        assert_eq!(r.resource_version, Some(42));
        assert_eq!(r.name.as_deref(), Some("app"));
        assert_eq!(r.labels, vec![LabelTerm::Equals("a".into(), "b".into()), LabelTerm::Absent("c".into())]);
        assert_eq!(r.timeout, Some(Duration::from_secs(5)));
        assert!(p("imagestreams", "fieldSelector=spec.x%3D1").is_err());
        assert!(p("imagestreams", "labelSelector=a+in+(b)").is_err());
        assert!(p("imagestreams", "resourceVersion=abc").is_err());
        assert!(p("namespaces/team/imagestreams", "dryRun=All").is_err(), "a dry run must not write");
    }

    #[test]
    fn selectors_select() {
        let r = ApiRequest::parse("imagestreams", "labelSelector=a%3D1,b!%3D2,c").unwrap();
        let mut meta = ObjectMeta { name: "x".into(), ..ObjectMeta::default() };
        meta.labels = BTreeMap::from([("a".into(), "1".into()), ("c".into(), "".into())]);
        assert!(r.selects(&meta));
        meta.labels.insert("b".into(), "2".into());
        assert!(!r.selects(&meta));
    }
}
