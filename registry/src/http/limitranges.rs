//! LimitRanges over HTTP, as Kubernetes serves them (`/api/v1/namespaces/{ns}/limitranges[/{name}]`, `v1`
//! `LimitRange` objects: create, get, list, update, patch, delete; tables for `kubectl get`), so that
//! `kubectl create -f limitrange.yaml` and `kubectl get limits` work. Access is checked by
//! `auth::stream_api_guard` (resource `limitranges`: every namespaced role reads them, only cluster-admin writes
//! them, as in OpenShift). The work is in `service::limitranges`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use names::Namespace;
use serde_json::{json, Value};

use super::kube;
use super::status::{self, Details, Reason};
use super::streams_api::{body, patch_body, with_warnings, Refusal};
use crate::service::limitranges::{LimitRange, LimitRangeError};
use crate::service::{Registry, RegistryError};

const BASE: &str = "/api/v1/namespaces/{ns}/limitranges";

/// Registers the routes; must come before the legacy image API's catch-all under `/api/v1`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let one = format!("{BASE}/{{name}}");
    cfg.route(BASE, web::get().to(list))
        .route(BASE, web::post().to(create))
        .route(&one, web::get().to(get))
        .route(&one, web::put().to(replace))
        .route(&one, web::patch().to(patch))
        .route(&one, web::delete().to(delete));
}

fn details(name: &str) -> Details<'_> {
    Details { name, group: "", resource: "limitranges" }
}

/// The answer for a LimitRange error: one row per error. Internal causes are logged here, once, and not sent.
fn error(e: &LimitRangeError) -> HttpResponse {
    match e {
        LimitRangeError::NotFound(name) => status::failure_about(Reason::NotFound, e.to_string(), details(name)),
        LimitRangeError::AlreadyExists(name) => {
            status::failure_about(Reason::AlreadyExists, e.to_string(), details(name))
        }
        LimitRangeError::Conflict(name) => status::failure_about(Reason::Conflict, e.to_string(), details(name)),
        LimitRangeError::Invalid { name, causes } => {
            // As Kubernetes answers: the kind and a cause per field, which kubectl prints.
            let mut body = status::object(Reason::Invalid, e.to_string(), Some(details(name)));
            body["details"]["kind"] = json!("LimitRange");
            body["details"]["causes"] = causes
                .iter()
                .map(|(field, message)| json!({"reason": "FieldValueInvalid", "message": message, "field": field}))
                .collect();
            HttpResponse::build(Reason::Invalid.status_code()).json(body)
        }
        LimitRangeError::BadRequest(m) => status::failure(Reason::BadRequest, m.clone()),
        LimitRangeError::Registry(RegistryError::Unavailable(cause)) => {
            tracing::error!(%cause, "metadata store unavailable in the LimitRange API");
            status::failure(Reason::ServiceUnavailable, "the metadata store is unavailable; try again")
        }
        LimitRangeError::Registry(RegistryError::ReadOnly) => {
            status::failure(Reason::MethodNotAllowed, crate::service::readonly::REFUSAL)
        }
        LimitRangeError::Registry(cause) => {
            tracing::error!(%cause, "internal error in the LimitRange API");
            status::failure(Reason::InternalError, "internal error")
        }
    }
}

/// A parsed LimitRange request: the namespace, and the object's name when the path names one. Parsed once, by
/// the access guard ([`super::auth::parsed`]), for the guard and the handlers alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitRangesRequest {
    pub namespace: Namespace,
    pub name: Option<String>,
}

impl LimitRangesRequest {
    /// Parses `/api/v1/namespaces/{ns}/limitranges[/{name}]`; `None` for any other path.
    pub fn parse(path: &str) -> Option<Result<LimitRangesRequest, String>> {
        let parsed = super::secrets::core_path(path, "limitranges")?;
        Some(parsed.map(|(namespace, name)| LimitRangesRequest { namespace, name }))
    }
}

/// A handler's outcome: the answer, or the `Status` refusing the request.
type Answer = Result<HttpResponse, HttpResponse>;

/// Runs `f` on the request the guard parsed (a bad namespace is refused with 400).
async fn with_request<F, Fut>(req: &HttpRequest, f: F) -> HttpResponse
where
    F: FnOnce(LimitRangesRequest) -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    match super::auth::parsed(req) {
        Some(Ok(super::auth::KubeRequest::LimitRanges(r))) => f(r).await.unwrap_or_else(|refusal| refusal),
        Some(Err(e)) => status::failure(Reason::BadRequest, e),
        _ => status::failure(Reason::NotFound, "the server could not find the requested resource"),
    }
}

/// Writes are refused while the registry is read-only (as every Kubernetes-style API here does).
async fn writable(reg: &Registry) -> Result<(), HttpResponse> {
    reg.check_writable().await.map_err(|e| error(&LimitRangeError::Registry(e)))
}

/// The unknown fields of a sent object or patch, as `fieldValidation` asks (kubectl sends `Strict`; unset is
/// `Warn`, as in Kubernetes): a 400 naming them, or the warnings to send. `dryRun` is refused: nothing here could
/// honour it.
fn checked(req: &HttpRequest, doc: &Value) -> Result<Vec<String>, Refusal> {
    let mut validation = String::from("Warn");
    for (k, v) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
        match k.as_ref() {
            "dryRun" if !v.is_empty() => {
                return Err(status::failure(Reason::BadRequest, "dryRun is not supported by this server").into());
            }
            "fieldValidation" => validation = v.into_owned(),
            _ => {}
        }
    }
    if validation == "Ignore" {
        return Ok(Vec::new());
    }
    let unknown: Vec<String> =
        super::openapi::limit_range_unknown_fields(doc).into_iter().map(|f| format!("unknown field \"{f}\"")).collect();
    if validation == "Strict" && !unknown.is_empty() {
        let message = format!("strict decoding error: {}", unknown.join(", "));
        return Err(status::failure(Reason::BadRequest, message).into());
    }
    Ok(unknown)
}

/// The name a route with `{name}` always has.
fn named(r: &LimitRangesRequest) -> Result<&str, Refusal> {
    let unnamed = || status::failure(Reason::MethodNotAllowed, "a LimitRange's name is required").into();
    r.name.as_deref().ok_or_else(unnamed)
}

/// `kubectl get limits`' columns (Kubernetes': the name and when it was created).
fn table(rv: &str, items: &[(LimitRange, u64)]) -> Value {
    let rows: Vec<Value> = items
        .iter()
        .map(|(lr, v)| {
            let meta = lr.to_kube(*v)["metadata"].clone();
            let created = lr.created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            json!({"cells": [lr.name.as_str(), created],
                   "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}})
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
        "columnDefinitions": [
            {"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0},
            {"name": "Created At", "type": "date", "format": "", "description": "", "priority": 0},
        ],
        "rows": rows,
    })
}

fn object(req: &HttpRequest, code: StatusCode, lr: &LimitRange, version: u64) -> HttpResponse {
    if kube::wants_table(req) {
        return kube::json_response(code, &table(&version.to_string(), &[(lr.clone(), version)]), true);
    }
    HttpResponse::build(code).json(lr.to_kube(version))
}

async fn list(req: HttpRequest, reg: web::Data<Registry>) -> HttpResponse {
    let (req, reg) = (&req, &reg);
    with_request(req, |r| async move {
        let items = reg.list_limit_ranges(&r.namespace).await.map_err(|e| error(&e))?;
        let rv = match items.iter().map(|(_, v)| *v).max() {
            Some(v) => v,
            None => reg.meta.revision().await.map_err(|e| error(&e.into()))?,
        };
        if kube::wants_table(req) {
            return Ok(kube::json_response(StatusCode::OK, &table(&rv.to_string(), &items), true));
        }
        let kube_items: Vec<Value> = items.iter().map(|(lr, v)| lr.to_kube(*v)).collect();
        Ok(HttpResponse::Ok().json(json!({
            "kind": "LimitRangeList", "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()},
            "items": kube_items,
        })))
    })
    .await
}

async fn create(req: HttpRequest, bytes: web::Bytes, reg: web::Data<Registry>) -> HttpResponse {
    let (req, reg, bytes) = (&req, &reg, &bytes);
    with_request(req, |r| async move {
        writable(reg).await?;
        let doc: Value = body(bytes).map_err(HttpResponse::from)?;
        let warnings = checked(req, &doc).map_err(HttpResponse::from)?;
        let lr = LimitRange::from_kube(&r.namespace, &doc).map_err(|e| error(&e))?;
        let rev = reg.create_limit_range(lr.clone()).await.map_err(|e| error(&e))?;
        Ok(with_warnings(object(req, StatusCode::CREATED, &lr, rev), &warnings))
    })
    .await
}

async fn get(req: HttpRequest, reg: web::Data<Registry>) -> HttpResponse {
    let (req, reg) = (&req, &reg);
    with_request(req, |r| async move {
        let (lr, v) =
            reg.get_limit_range(&r.namespace, named(&r).map_err(HttpResponse::from)?).await.map_err(|e| error(&e))?;
        Ok(object(req, StatusCode::OK, &lr, v))
    })
    .await
}

async fn replace(req: HttpRequest, bytes: web::Bytes, reg: web::Data<Registry>) -> HttpResponse {
    let (req, reg, bytes) = (&req, &reg, &bytes);
    with_request(req, |r| async move {
        writable(reg).await?;
        let doc: Value = body(bytes).map_err(HttpResponse::from)?;
        let warnings = checked(req, &doc).map_err(HttpResponse::from)?;
        let (lr, v) = reg
            .replace_limit_range(&r.namespace, named(&r).map_err(HttpResponse::from)?, &doc)
            .await
            .map_err(|e| error(&e))?;
        Ok(with_warnings(object(req, StatusCode::OK, &lr, v), &warnings))
    })
    .await
}

async fn patch(req: HttpRequest, bytes: web::Bytes, reg: web::Data<Registry>) -> HttpResponse {
    let (req, reg, bytes) = (&req, &reg, &bytes);
    with_request(req, |r| async move {
        writable(reg).await?;
        let (patch, how) = patch_body(req, bytes).map_err(HttpResponse::from)?;
        // A patch is not a whole object (kubectl apply's has no name): only its fields are checked.
        let warnings = checked(req, &patch).map_err(HttpResponse::from)?;
        let (lr, v) = reg
            .patch_limit_range(&r.namespace, named(&r).map_err(HttpResponse::from)?, &patch, how)
            .await
            .map_err(|e| error(&e))?;
        Ok(with_warnings(object(req, StatusCode::OK, &lr, v), &warnings))
    })
    .await
}

async fn delete(req: HttpRequest, reg: web::Data<Registry>) -> HttpResponse {
    let (req, reg) = (&req, &reg);
    with_request(req, |r| async move {
        writable(reg).await?;
        let name = named(&r).map_err(HttpResponse::from)?;
        reg.delete_limit_range(&r.namespace, name).await.map_err(|e| error(&e))?;
        Ok(status::success(StatusCode::OK, Some(details(name))))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        let ns: Namespace = "team".parse().unwrap();
        let p = LimitRangesRequest::parse;
        assert_eq!(
            p("/api/v1/namespaces/team/limitranges"),
            Some(Ok(LimitRangesRequest { namespace: ns.clone(), name: None }))
        );
        assert_eq!(
            p("/api/v1/namespaces/team/limitranges/images"),
            Some(Ok(LimitRangesRequest { namespace: ns, name: Some("images".into()) }))
        );
        assert!(matches!(p("/api/v1/namespaces/Bad_Name/limitranges"), Some(Err(_))));
        for other in ["/api/v1/namespaces/team/secrets", "/api/v1/namespaces/team/limitranges/a/b", "/v2/"] {
            assert_eq!(p(other), None, "{other}");
        }
    }

    #[test]
    fn every_error_has_its_status() {
        let invalid = LimitRangeError::Invalid { name: "l".into(), causes: vec![("f".into(), "m".into())] };
        let table: Vec<(LimitRangeError, u16)> = vec![
            (LimitRangeError::NotFound("l".into()), 404),
            (LimitRangeError::AlreadyExists("l".into()), 409),
            (LimitRangeError::Conflict("l".into()), 409),
            (invalid, 422),
            (LimitRangeError::BadRequest("b".into()), 400),
            (LimitRangeError::Registry(RegistryError::Unavailable("etcd".into())), 503),
            (LimitRangeError::Registry(RegistryError::ReadOnly), 405),
            (LimitRangeError::Registry(RegistryError::Internal("x".into())), 500),
        ];
        for (e, code) in table {
            assert_eq!(error(&e).status().as_u16(), code, "{e}");
        }
    }
}
