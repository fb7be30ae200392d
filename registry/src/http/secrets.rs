//! Pull secrets over HTTP, as Kubernetes serves them (`/api/v1/namespaces/{ns}/secrets[/{name}]`, `v1` `Secret`
//! objects of type `kubernetes.io/dockerconfigjson`), so that `kubectl create secret docker-registry` and
//! `tributary create secret docker-registry` both work. Access is checked by `auth::stream_api_guard` (resource
//! `secrets`: `edit` and `admin` may, `view` may not). The work is in `service::secrets`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use names::Namespace;
use serde_json::{json, Value};

use super::admin_api::status;
use crate::service::secrets::{PullSecret, SecretError};
use crate::service::{Registry, RegistryError};

const BASE: &str = "/api/v1/namespaces/{ns}/secrets";

/// Registers the routes; must come before the legacy image API's catch-all under `/api/v1`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(BASE, web::get().to(list))
        .route(BASE, web::post().to(create))
        .route(&format!("{BASE}/{{name}}"), web::get().to(get))
        .route(&format!("{BASE}/{{name}}"), web::delete().to(delete));
}

fn error(e: &SecretError) -> HttpResponse {
    match e {
        SecretError::NotFound(_) => status(404, "NotFound", e.to_string()),
        SecretError::AlreadyExists(_) => status(409, "AlreadyExists", e.to_string()),
        SecretError::Invalid { .. } => status(422, "Invalid", e.to_string()),
        SecretError::Registry(RegistryError::Internal(cause)) => {
            tracing::error!(%cause, "internal error in the secrets API");
            status(500, "InternalError", "internal error".into())
        }
        SecretError::Registry(other) => status(400, "BadRequest", other.to_string()),
    }
}

fn namespace(ns: &str) -> Result<Namespace, String> {
    ns.parse().map_err(|e: names::NameError| e.to_string())
}

async fn list(path: web::Path<String>, reg: web::Data<Registry>) -> HttpResponse {
    let ns = match namespace(&path) {
        Ok(ns) => ns,
        Err(m) => return status(400, "BadRequest", m),
    };
    match reg.list_secrets(&ns).await {
        Ok(secrets) => {
            let rv = secrets.iter().map(|(_, v)| *v).max().unwrap_or(0);
            let items: Vec<Value> = secrets.iter().map(|(s, v)| s.to_kube(*v)).collect();
            HttpResponse::Ok().json(json!({
                "kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()}, "items": items,
            }))
        }
        Err(e) => error(&e),
    }
}

async fn create(path: web::Path<String>, body: web::Bytes, reg: web::Data<Registry>) -> HttpResponse {
    let ns = match namespace(&path) {
        Ok(ns) => ns,
        Err(m) => return status(400, "BadRequest", m),
    };
    let doc: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return status(400, "BadRequest", format!("the request body is not valid: {e}")),
    };
    let secret = match PullSecret::from_kube(&ns, &doc) {
        Ok(s) => s,
        Err(e) => return error(&e),
    };
    match reg.create_secret(secret.clone()).await {
        Ok(rev) => HttpResponse::build(StatusCode::CREATED).json(secret.to_kube(rev)),
        Err(e) => error(&e),
    }
}

async fn get(path: web::Path<(String, String)>, reg: web::Data<Registry>) -> HttpResponse {
    let (ns, name) = path.into_inner();
    let ns = match namespace(&ns) {
        Ok(ns) => ns,
        Err(m) => return status(400, "BadRequest", m),
    };
    match reg.get_secret(&ns, &name).await {
        Ok((s, v)) => HttpResponse::Ok().json(s.to_kube(v)),
        Err(e) => error(&e),
    }
}

async fn delete(path: web::Path<(String, String)>, reg: web::Data<Registry>) -> HttpResponse {
    let (ns, name) = path.into_inner();
    let ns = match namespace(&ns) {
        Ok(ns) => ns,
        Err(m) => return status(400, "BadRequest", m),
    };
    match reg.delete_secret(&ns, &name).await {
        Ok(()) => HttpResponse::Ok().json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": name, "kind": "secrets"}, "code": 200,
        })),
        Err(e) => error(&e),
    }
}
