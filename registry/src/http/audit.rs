//! What the audit log says about a request: an actix middleware ([`audit_request`], wrapped around the app by
//! [`super::serve_with`]) that writes one JSON record to the [`AuditLog`] for every write (blob upload finished,
//! manifest push, manifest/blob delete, upload cancelled, every create/update/delete of the stream API — tags,
//! image streams, mappings, imports, secrets — and every change through the access-control API: namespaces, users,
//! service accounts, tokens created or revoked, role bindings, the read-only switch), whatever its outcome, and for
//! every refusal (401, 403) of any request.
//!
//! A record holds `time`, `who` (`kind`: user, serviceaccount, anonymous or unauthenticated for credentials that
//! did not authenticate; `name`; `token`: the API token id when one was used; `via`: token, jwt, open),
//! `client` (the address [`super::client_addr`] resolved), `action`, `method`, `namespace`, `stream`, `tag`,
//! `digest` when they apply, `status`, `outcome` (ok, refused, failed) and `reason` (the OCI error code, or the
//! status's reason). Nothing here parses a path: the OCI [`Endpoint`], the stream API's
//! [`super::auth::StreamApiTarget`] and the access-control API's matched route come from where they were parsed;
//! handlers may add what only they know with [`note`].

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest};
use auth::{Caller, Identity, Verb, Via};
use names::Reference;
use serde_json::{json, Map, Value};

use super::auth::StreamApiTarget;
use super::endpoint::Endpoint;
use super::errors::ApiError;
use crate::audit::AuditLog;

/// Details a handler adds to its request's audit record (a created token's id, a role binding's subject, …).
#[derive(Debug, Default, Clone)]
struct Notes(Map<String, Value>);

/// Adds `key: value` to the audit record of `req` (if one is written).
pub fn note(req: &HttpRequest, key: &str, value: impl Into<Value>) {
    let mut ext = req.extensions_mut();
    match ext.get_mut::<Notes>() {
        Some(notes) => {
            notes.0.insert(key.to_owned(), value.into());
        }
        None => {
            let mut notes = Notes::default();
            notes.0.insert(key.to_owned(), value.into());
            ext.insert(notes);
        }
    }
}

/// What a request did, as far as the audit log cares.
#[derive(Debug, Default)]
struct Target {
    action: String,
    /// Whether the request writes: audited whatever its outcome (otherwise only refusals are).
    write: bool,
    namespace: Option<String>,
    stream: Option<String>,
    tag: Option<String>,
    digest: Option<String>,
}

fn oci_target(endpoint: &Endpoint, method: &Method, status: StatusCode) -> Target {
    let (action, write, repo, reference) = match (endpoint, method) {
        (Endpoint::Manifest(repo, r), &Method::PUT) => ("push manifest", true, Some(repo), Some(r.clone())),
        (Endpoint::Manifest(repo, r), &Method::DELETE) => ("delete manifest", true, Some(repo), Some(r.clone())),
        (Endpoint::Manifest(repo, r), _) => ("pull manifest", false, Some(repo), Some(r.clone())),
        (Endpoint::Blob(repo, d), &Method::DELETE) => {
            ("delete blob", true, Some(repo), Some(Reference::Digest(d.clone())))
        }
        (Endpoint::Blob(repo, d), _) => ("pull blob", false, Some(repo), Some(Reference::Digest(d.clone()))),
        // A POST answered 202 only opened a session; 201 finished a monolithic upload or a mount.
        (Endpoint::StartUpload(repo), &Method::POST) => ("push blob", status != StatusCode::ACCEPTED, Some(repo), None),
        (Endpoint::StartUpload(repo), _) => ("start upload", false, Some(repo), None),
        (Endpoint::Upload(repo, _), &Method::PUT) => ("push blob", true, Some(repo), None),
        (Endpoint::Upload(repo, _), &Method::DELETE) => ("cancel upload", true, Some(repo), None),
        (Endpoint::Upload(repo, _), _) => ("upload chunk", false, Some(repo), None),
        (Endpoint::Tags(repo), _) => ("list tags", false, Some(repo), None),
        (Endpoint::Referrers(repo, d), _) => ("list referrers", false, Some(repo), Some(Reference::Digest(d.clone()))),
        (Endpoint::Catalog, _) => ("catalog", false, None, None),
        (Endpoint::Base, _) => ("login", false, None, None),
    };
    let (tag, digest) = match reference {
        Some(Reference::Tag(t)) => (Some(t.to_string()), None),
        Some(Reference::Digest(d)) => (None, Some(d.to_string())),
        None => (None, None),
    };
    Target {
        action: action.to_owned(),
        write,
        namespace: repo.map(|r| r.namespace().to_string()),
        stream: repo.map(|r| r.stream().to_string()),
        tag,
        digest,
    }
}

fn verb_name(verb: Verb) -> (&'static str, bool) {
    match verb {
        Verb::Get => ("get", false),
        Verb::List => ("list", false),
        Verb::Watch => ("watch", false),
        Verb::Create => ("create", true),
        Verb::Update => ("update", true),
        Verb::Delete => ("delete", true),
    }
}

fn stream_api_target(t: &StreamApiTarget) -> Target {
    let (verb, write) = verb_name(t.verb);
    Target {
        action: format!("{verb} {}", t.resource_name),
        write,
        namespace: t.namespace.as_ref().map(|n| n.to_string()),
        stream: t.repo.as_ref().map(|r| r.stream().to_string()),
        tag: t.tag.clone(),
        digest: None,
    }
}

fn who(req: &HttpRequest) -> Value {
    let ext = req.extensions();
    let Some(Caller { identity, via }) = ext.get::<Caller>() else {
        let kind = if req.headers().contains_key(actix_web::http::header::AUTHORIZATION) {
            "unauthenticated"
        } else {
            "anonymous"
        };
        return json!({"kind": kind});
    };
    let mut who = match identity {
        Identity::Anonymous => json!({"kind": "anonymous"}),
        Identity::User { name, .. } => json!({"kind": "user", "name": name.to_string()}),
        Identity::ServiceAccount { namespace, name } => {
            json!({"kind": "serviceaccount", "namespace": namespace.to_string(), "name": name.to_string()})
        }
    };
    match via {
        Via::ApiToken(id) => {
            who["token"] = json!(id.to_string());
            who["via"] = json!("token");
        }
        Via::Jwt { .. } => who["via"] = json!("jwt"),
        Via::Open => who["via"] = json!("open"),
        Via::Anonymous => {}
    }
    who
}

/// The target of a request, from whichever part of the edge parsed it.
fn target_of(res: &ServiceResponse<impl MessageBody>) -> Target {
    let req = res.request();
    let status = res.status();
    if let Some(Ok(endpoint)) = Endpoint::of_request(req) {
        return oci_target(&endpoint, req.method(), status);
    }
    if let Some(t) = req.extensions().get::<StreamApiTarget>() {
        return stream_api_target(t);
    }
    if let Some((action, write)) = super::admin_api::audit_action(req) {
        let info = req.match_info();
        return Target { action, write, namespace: info.get("ns").map(str::to_owned), ..Target::default() };
    }
    Target { action: req.match_pattern().unwrap_or_else(|| "unmatched".to_owned()), ..Target::default() }
}

fn outcome(res: &ServiceResponse<impl MessageBody>) -> (&'static str, Option<String>) {
    let status = res.status();
    let outcome = match status.as_u16() {
        401 | 403 => "refused",
        s if s < 400 => "ok",
        _ => "failed",
    };
    if outcome == "ok" {
        return (outcome, None);
    }
    let oci = res.response().error().and_then(|e| e.as_error::<ApiError>()).map(|e| e.code.row().0.to_owned());
    (outcome, Some(oci.unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned())))
}

/// The record for a finished request, `None` when it is neither a write nor a refusal.
fn record(res: &ServiceResponse<impl MessageBody>) -> Option<Value> {
    let status = res.status();
    let refused = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
    let target = target_of(res);
    if !target.write && !refused {
        return None;
    }
    let req = res.request();
    let (outcome, reason) = outcome(res);
    let mut r = Map::new();
    r.insert("time".into(), json!(crate::audit::now()));
    r.insert("who".into(), who(req));
    let client = super::client_addr::client_addr(req).map(|a| a.ip.to_string());
    r.insert("client".into(), json!(client));
    r.insert("action".into(), json!(target.action));
    r.insert("method".into(), json!(req.method().as_str()));
    let digest = target.digest.or_else(|| {
        // What a push stored, as the answer names it.
        let header = res.headers().get("docker-content-digest")?;
        (status.is_success()).then(|| header.to_str().ok().map(str::to_owned)).flatten()
    });
    for (key, value) in
        [("namespace", target.namespace), ("stream", target.stream), ("tag", target.tag), ("digest", digest)]
    {
        if let Some(v) = value {
            r.insert(key.into(), json!(v));
        }
    }
    if let Some(Notes(notes)) = req.extensions().get::<Notes>() {
        for (k, v) in notes {
            r.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    r.insert("status".into(), json!(status.as_u16()));
    r.insert("outcome".into(), json!(outcome));
    if let Some(reason) = reason {
        r.insert("reason".into(), json!(reason));
    }
    Some(Value::Object(r))
}

/// Writes the audit record of each request that is a write or a refusal (see the module documentation).
pub async fn audit_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let log = req.app_data::<web::Data<AuditLog>>().filter(|l| l.is_on()).cloned();
    let res = next.call(req).await?;
    if let Some(log) = log {
        if let Some(line) = record(&res) {
            log.record(line);
        }
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_writes_and_reads() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let e = |p: &str| Endpoint::parse(p).unwrap();
        let t = oci_target(&e("/v2/ns/app/manifests/v1"), &Method::PUT, StatusCode::CREATED);
        assert_eq!(
            (t.action.as_str(), t.write, t.namespace.as_deref(), t.stream.as_deref()),
            ("push manifest", true, Some("ns"), Some("app"))
        );
        assert_eq!(t.tag.as_deref(), Some("v1"));
        let t = oci_target(&e(&format!("/v2/ns/app/blobs/{d}")), &Method::DELETE, StatusCode::ACCEPTED);
        assert_eq!((t.action.as_str(), t.write, t.digest.as_deref()), ("delete blob", true, Some(d)));
        assert!(!oci_target(&e("/v2/ns/app/blobs/uploads/"), &Method::POST, StatusCode::ACCEPTED).write);
        assert!(oci_target(&e("/v2/ns/app/blobs/uploads/"), &Method::POST, StatusCode::CREATED).write);
        assert!(!oci_target(&e("/v2/ns/app/manifests/v1"), &Method::GET, StatusCode::OK).write);
    }
}
