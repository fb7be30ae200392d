//! OCI distribution handlers: one entry point parses the [`Endpoint`] and dispatches with one `match`.

use std::collections::HashMap;

use actix_web::body::SizedStream;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use names::{Digest, Reference, RepositoryName, UploadId};
use serde_json::json;
use streams::manifest::OCI_INDEX;

use super::auth::Decision;
use super::endpoint::Endpoint;
use super::errors::{ApiError, ErrorCode};
use super::ranges;
use crate::service::{Registry, RegistryError};

type Answer = Result<HttpResponse, ApiError>;

const API_VERSION_HEADER: (&str, &str) = ("Docker-Distribution-API-Version", "registry/2.0");

/// Default and largest page size for the tags list and the catalog.
const MAX_PAGE: usize = 10_000;

fn query(req: &HttpRequest) -> HashMap<String, String> {
    web::Query::<HashMap<String, String>>::from_query(req.query_string()).map(|q| q.into_inner()).unwrap_or_default()
}

fn unsupported() -> ApiError {
    ApiError::new(ErrorCode::Unsupported)
}

/// The one OCI entry point.
pub async fn dispatch(req: HttpRequest, payload: web::Payload, registry: web::Data<Registry>) -> Answer {
    let method = req.method().clone();
    let endpoint = Endpoint::of_request(&req)
        .unwrap_or(Err(super::endpoint::EndpointError::NotFound))
        .map_err(|e| ApiError::of_endpoint(e, &method))?;
    let q = query(&req);
    let reg = registry.get_ref();
    let decision = super::auth::authorize(&req, reg, &endpoint).await?;
    // The caller's name, for the routes that record it (upload owners, tag events): not built for reads.
    let who = || decision.caller.identity.name();
    // Read-only mode: every write is refused here, once, after authorization (a caller who may not write hears
    // that first), before any handler runs.
    if endpoint.is_write(&method) {
        reg.check_writable().await?;
    }
    let answer = match (endpoint, method) {
        (Endpoint::Base, Method::GET | Method::HEAD) => Ok(HttpResponse::Ok().json(json!({}))),
        (Endpoint::Catalog, Method::GET) => catalog(reg, &decision, &q).await,
        (Endpoint::Tags(repo), Method::GET) => tags(reg, &repo, &q).await,
        (Endpoint::Manifest(repo, r), Method::GET) => get_manifest(reg, &req, &repo, &r, false).await,
        (Endpoint::Manifest(repo, r), Method::HEAD) => get_manifest(reg, &req, &repo, &r, true).await,
        (Endpoint::Manifest(repo, r), Method::PUT) => {
            // The tag event a push makes names the pusher.
            let put = put_manifest(reg, &req, &repo, &r, payload, decision.may_create_stream);
            streams::actor::acting_as(who(), put).await
        }
        (Endpoint::Manifest(repo, r), Method::DELETE) => {
            reg.delete_manifest(&repo, &r).await?;
            Ok(HttpResponse::Accepted().finish())
        }
        (Endpoint::Blob(repo, d), Method::GET) => get_blob(reg, &req, &repo, &d, false).await,
        (Endpoint::Blob(repo, d), Method::HEAD) => get_blob(reg, &req, &repo, &d, true).await,
        (Endpoint::Blob(repo, d), Method::DELETE) => {
            reg.delete_blob(&repo, &d).await?;
            Ok(HttpResponse::Accepted().finish())
        }
        (Endpoint::StartUpload(repo), Method::POST) => start_upload(reg, &decision, &req, &repo, &q, payload).await,
        (Endpoint::Upload(repo, id), Method::GET) => upload_status(reg, &repo, id, &who()).await,
        (Endpoint::Upload(repo, id), Method::PATCH) => patch_upload(reg, &req, &repo, id, &who(), payload).await,
        (Endpoint::Upload(repo, id), Method::PUT) => finish_upload(reg, &req, &repo, id, &who(), &q, payload).await,
        (Endpoint::Upload(repo, id), Method::DELETE) => {
            reg.cancel_upload(&repo, id, &who()).await?;
            Ok(HttpResponse::NoContent().finish())
        }
        (Endpoint::Referrers(repo, d), Method::GET) => referrers(reg, &repo, &d, &q).await,
        (
            Endpoint::Base
            | Endpoint::Catalog
            | Endpoint::Tags(_)
            | Endpoint::Manifest(..)
            | Endpoint::Blob(..)
            | Endpoint::StartUpload(_)
            | Endpoint::Upload(..)
            | Endpoint::Referrers(..),
            _,
        ) => Err(unsupported()),
    };
    answer.map(|mut r| {
        r.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("docker-distribution-api-version"),
            actix_web::http::header::HeaderValue::from_static(API_VERSION_HEADER.1),
        );
        r
    })
}

/// Reads `n` and `last` of a paginated list.
fn page(q: &HashMap<String, String>) -> Result<(usize, Option<String>), ApiError> {
    let n = match q.get("n") {
        None => MAX_PAGE,
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| {
                ApiError::new(ErrorCode::Unsupported).status(StatusCode::BAD_REQUEST).message("n must be a number")
            })?
            .min(MAX_PAGE),
    };
    Ok((n, q.get("last").cloned()))
}

fn next_link(path: &str, last: Option<&String>, n: usize) -> String {
    let last = last.map(|l| url::form_urlencoded::byte_serialize(l.as_bytes()).collect::<String>()).unwrap_or_default();
    format!("<{path}?last={last}&n={n}>; rel=\"next\"")
}

async fn catalog(reg: &Registry, decision: &Decision, q: &HashMap<String, String>) -> Answer {
    let (n, last) = page(q)?;
    let (repos, more) = super::auth::catalog_page(reg, decision, last.as_deref(), n).await?;
    let names: Vec<String> = repos.iter().map(|r| r.to_string()).collect();
    let mut resp = HttpResponse::Ok();
    if more {
        resp.insert_header(("Link", next_link("/v2/_catalog", names.last(), n)));
    }
    Ok(resp.json(json!({ "repositories": names })))
}

async fn tags(reg: &Registry, repo: &RepositoryName, q: &HashMap<String, String>) -> Answer {
    let (n, last) = page(q)?;
    let (tags, more) = reg.list_tags(repo, last.as_deref(), n).await?;
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    let mut resp = HttpResponse::Ok();
    if more {
        resp.insert_header(("Link", next_link(&format!("/v2/{repo}/tags/list"), tags.last(), n)));
    }
    Ok(resp.json(json!({ "name": repo.to_string(), "tags": tags })))
}

fn accept_list(req: &HttpRequest) -> Vec<String> {
    req.headers()
        .get_all("Accept")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.split(';').next().unwrap_or("").trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

async fn get_manifest(
    reg: &Registry,
    req: &HttpRequest,
    repo: &RepositoryName,
    reference: &Reference,
    head: bool,
) -> Answer {
    let m = reg.get_manifest(repo, reference, &accept_list(req)).await?;
    if !head {
        reg.metrics.manifest_pulled();
    }
    let mut resp = HttpResponse::Ok();
    resp.insert_header(("Content-Type", m.media_type.as_str()))
        .insert_header(("Docker-Content-Digest", m.digest.to_string()))
        .insert_header(("ETag", format!("\"{}\"", m.digest)));
    if head {
        let len = m.bytes.len() as u64;
        Ok(resp.body(SizedStream::new(len, futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>())))
    } else {
        Ok(resp.body(m.bytes))
    }
}

/// Reads a body of at most `limit` bytes; `None` when it is larger.
async fn read_limited(mut payload: web::Payload, limit: usize) -> Result<Option<bytes::Bytes>, ApiError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::from(RegistryError::Body(e.to_string())))?;
        if buf.len() + chunk.len() > limit {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(buf.freeze()))
}

async fn put_manifest(
    reg: &Registry,
    req: &HttpRequest,
    repo: &RepositoryName,
    reference: &Reference,
    payload: web::Payload,
    may_create_stream: bool,
) -> Answer {
    let declared =
        req.headers().get("Content-Length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|l| l > reg.max_manifest_bytes) {
        return Err(RegistryError::ManifestTooLarge(reg.max_manifest_bytes).into());
    }
    let Some(bytes) = read_limited(payload, reg.max_manifest_bytes).await? else {
        return Err(RegistryError::ManifestTooLarge(reg.max_manifest_bytes).into());
    };
    let content_type = req.headers().get("Content-Type").and_then(|v| v.to_str().ok());
    let put = reg.put_manifest(repo, reference, content_type, bytes, may_create_stream).await?;
    reg.metrics.manifest_pushed();
    let mut resp = HttpResponse::Created();
    resp.insert_header(("Location", format!("/v2/{repo}/manifests/{}", put.digest)))
        .insert_header(("Docker-Content-Digest", put.digest.to_string()));
    if let Some(subject) = put.subject {
        resp.insert_header(("OCI-Subject", subject.to_string()));
    }
    Ok(resp.finish())
}

async fn get_blob(reg: &Registry, req: &HttpRequest, repo: &RepositoryName, digest: &Digest, head: bool) -> Answer {
    let range_header = req.headers().get("Range").and_then(|v| v.to_str().ok());
    if head {
        let size = reg.blob_size(repo, digest).await?;
        let mut resp = HttpResponse::Ok();
        blob_headers(&mut resp, digest);
        return Ok(resp.body(SizedStream::new(size, futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>())));
    }
    if let Some(url) = reg.blob_redirect(repo, digest).await? {
        // S3 serves the bytes (and the client's Range) itself, as distribution's S3 redirect does.
        return Ok(HttpResponse::TemporaryRedirect()
            .insert_header(("Location", url))
            .insert_header(("Docker-Content-Digest", digest.to_string()))
            .finish());
    }
    let range = match range_header {
        Some(h) => {
            let size = reg.blob_size(repo, digest).await?;
            Some(ranges::blob_range(h, size).ok_or(RegistryError::RangeNotSatisfiable { size })?)
        }
        None => None,
    };
    let read = reg.read_blob(repo, digest, range.clone()).await?;
    let len = read.range.end - read.range.start;
    let mut resp = if range.is_some() { HttpResponse::PartialContent() } else { HttpResponse::Ok() };
    blob_headers(&mut resp, digest);
    if range.is_some() {
        resp.insert_header((
            "Content-Range",
            format!("bytes {}-{}/{}", read.range.start, read.range.end - 1, read.total),
        ));
    }
    Ok(resp.body(SizedStream::new(len, read.body)))
}

fn blob_headers(resp: &mut actix_web::HttpResponseBuilder, digest: &Digest) {
    resp.insert_header(("Content-Type", "application/octet-stream"))
        .insert_header(("Docker-Content-Digest", digest.to_string()))
        .insert_header(("ETag", format!("\"{digest}\"")))
        .insert_header(("Accept-Ranges", "bytes"));
}

fn upload_location(repo: &RepositoryName, id: UploadId) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

fn range_value(size: u64) -> String {
    if size == 0 {
        "0-0".to_owned()
    } else {
        format!("0-{}", size - 1)
    }
}

fn upload_accepted(repo: &RepositoryName, id: UploadId, size: u64) -> HttpResponse {
    HttpResponse::Accepted()
        .insert_header(("Location", upload_location(repo, id)))
        .insert_header(("Range", range_value(size)))
        .insert_header(("Docker-Upload-UUID", id.to_string()))
        .insert_header(("Content-Length", "0"))
        .finish()
}

fn blob_created(repo: &RepositoryName, digest: &Digest) -> HttpResponse {
    HttpResponse::Created()
        .insert_header(("Location", format!("/v2/{repo}/blobs/{digest}")))
        .insert_header(("Docker-Content-Digest", digest.to_string()))
        .finish()
}

fn digest_param(q: &HashMap<String, String>, name: &str) -> Result<Option<Digest>, ApiError> {
    q.get(name)
        .map(|d| d.parse::<Digest>().map_err(|e| ApiError::new(ErrorCode::DigestInvalid).message(e.to_string())))
        .transpose()
}

async fn start_upload(
    reg: &Registry,
    decision: &Decision,
    req: &HttpRequest,
    repo: &RepositoryName,
    q: &HashMap<String, String>,
    payload: web::Payload,
) -> Answer {
    let who = decision.caller.identity.name();
    if let Some(mount) = digest_param(q, "mount")? {
        let from = q.get("from").and_then(|f| f.parse::<RepositoryName>().ok());
        if let Some(from) = from {
            // Mount only from where the caller may pull; otherwise an ordinary upload, never a leak.
            if decision.may_mount_from(req, reg, repo, &from).await?
                && reg.mount_blob(repo, &from, &mount).await?.is_some()
            {
                return Ok(blob_created(repo, &mount));
            }
        }
        let id = reg.start_upload(repo, &who).await?;
        return Ok(upload_accepted(repo, id, 0));
    }
    let id = reg.start_upload(repo, &who).await?;
    match digest_param(q, "digest")? {
        Some(digest) => {
            let start = content_range_start(req)?;
            if let Err(e) = reg.finish_upload(repo, id, &who, &digest, start, payload).await {
                // A monolithic push leaves no session for its client to resume: what it staged goes now (a full
                // disk gets its room back at once), not when abandoned uploads are purged.
                match reg.cancel_upload(repo, id, &who).await {
                    Ok(()) | Err(RegistryError::UploadUnknown(_)) => {}
                    Err(c) => tracing::warn!(upload = %id, error = %c, "could not discard a failed push's upload"),
                }
                return Err(e.into());
            }
            Ok(blob_created(repo, &digest))
        }
        None => Ok(upload_accepted(repo, id, 0)),
    }
}

async fn upload_status(reg: &Registry, repo: &RepositoryName, id: UploadId, who: &str) -> Answer {
    let (session, _) = reg.upload_session(repo, id, who).await?;
    Ok(HttpResponse::NoContent()
        .insert_header(("Location", upload_location(repo, id)))
        .insert_header(("Range", range_value(session.size)))
        .insert_header(("Docker-Upload-UUID", id.to_string()))
        .finish())
}

/// The start offset of a `Content-Range: <start>-<end>` header (also accepting a `bytes ` prefix).
fn content_range_start(req: &HttpRequest) -> Result<Option<u64>, ApiError> {
    let Some(v) = req.headers().get("Content-Range") else { return Ok(None) };
    let bad = || ApiError::new(ErrorCode::RangeInvalid).message("Content-Range must be <start>-<end>");
    let (start, end) = v.to_str().ok().and_then(ranges::chunk_range).ok_or_else(bad)?;
    if let Some(len) =
        req.headers().get("Content-Length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
    {
        if len != end - start + 1 {
            return Err(ApiError::new(ErrorCode::SizeInvalid).message("Content-Length does not match Content-Range"));
        }
    }
    Ok(Some(start))
}

async fn patch_upload(
    reg: &Registry,
    req: &HttpRequest,
    repo: &RepositoryName,
    id: UploadId,
    who: &str,
    payload: web::Payload,
) -> Answer {
    let start = content_range_start(req)?;
    let size = reg.append_chunk(repo, id, who, start, payload).await?;
    Ok(upload_accepted(repo, id, size))
}

async fn finish_upload(
    reg: &Registry,
    req: &HttpRequest,
    repo: &RepositoryName,
    id: UploadId,
    who: &str,
    q: &HashMap<String, String>,
    payload: web::Payload,
) -> Answer {
    let digest = digest_param(q, "digest")?
        .ok_or_else(|| ApiError::new(ErrorCode::DigestInvalid).message("the digest query parameter is required"))?;
    let start = content_range_start(req)?;
    reg.finish_upload(repo, id, who, &digest, start, payload).await?;
    Ok(blob_created(repo, &digest))
}

async fn referrers(reg: &Registry, repo: &RepositoryName, subject: &Digest, q: &HashMap<String, String>) -> Answer {
    let artifact_type = q.get("artifactType").map(String::as_str);
    let manifests = reg.referrers(repo, subject, artifact_type).await?;
    let mut resp = HttpResponse::Ok();
    resp.insert_header(("Content-Type", OCI_INDEX));
    if artifact_type.is_some() {
        resp.insert_header(("OCI-Filters-Applied", "artifactType"));
    }
    let body = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    Ok(resp.body(serde_json::to_vec(&body).unwrap_or_default()))
}
