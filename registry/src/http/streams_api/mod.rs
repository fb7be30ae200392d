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

use actix_web::http::header::CONTENT_TYPE;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use auth::{Resource, Verb, Verdict};
use names::RepositoryName;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use streams::model::{Image, ImageStream, ImageStreamMapping, ImageStreamTag, ObjectList, ObjectMeta, TagReference};
use streams::objects::PatchKind;
use streams::refs::{IsTagName, TagSource};
use streams::watch::{WatchScope, Watched};
use streams::{ObjectKind, StreamError};

mod request;

use request::{parse_name, NO_SUCH_RESOURCE};
pub use request::{ApiRequest, FieldValidation, Route};

use super::kube::{self, ApiVersion};
use super::status::{self, Reason};
use crate::service::{Registry, RegistryError};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(kube::configure);
    for version in ApiVersion::ALL {
        cfg.route(&format!("{}/{{tail:.*}}", version.base()), web::to(dispatch));
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
        Some(Ok(super::auth::KubeRequest::Streams(a))) => *a,
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
    // Tag events a write makes name the caller the guard authenticated.
    let handled = if reads {
        handle(&req, &api, &bytes, &reg).await
    } else {
        let who = req.extensions().get::<auth::Caller>().map(|c| c.identity.name()).unwrap_or_default();
        streams::actor::acting_as(who, handle(&req, &api, &bytes, &reg)).await
    };
    let resp = match handled {
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

/// A mapping of an image larger than its namespace's LimitRange allows is refused with 403 `Forbidden` (as
/// OpenShift's `openshift.io/ImageLimitRange` admission refuses it; a manifest PUT is refused the same way with
/// `DENIED`). An index is not limited by its own size.
async fn over_image_limit(reg: &Registry, ns: &names::Namespace, image: &Image) -> Option<HttpResponse> {
    if !image.docker_image_manifests.is_empty() {
        return None;
    }
    let size = image.docker_image_metadata.size;
    match reg.image_limits.of(ns).await {
        Ok(Some(limit)) if limit.exceeded_by(size) => {
            let e = RegistryError::ImageTooLarge { size, namespace: ns.clone(), limit: Box::new(limit) };
            Some(status::failure(Reason::Forbidden, e.to_string()))
        }
        Ok(_) => None,
        Err(e) => Some(kube::error(&StreamError::Store(e))),
    }
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
            if let Some(refusal) = over_image_limit(reg, ns, &mapping.image).await {
                return Ok(refusal);
            }
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
