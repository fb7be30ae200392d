//! Pull secrets over HTTP, as Kubernetes serves them (`/api/v1/namespaces/{ns}/secrets[/{name}]`, `v1` `Secret`
//! objects of type `kubernetes.io/dockerconfigjson`), so that `kubectl create secret docker-registry` and
//! `tributary create secret docker-registry` both work. Access is checked by `auth::stream_api_guard` (resource
//! `secrets`: `edit` and `admin` may, `view` may not). The work is in `service::secrets`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use names::Namespace;
use serde_json::{json, Value};

use super::status::{self, Reason};
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
        SecretError::NotFound(_) => status::failure(Reason::NotFound, e.to_string()),
        SecretError::AlreadyExists(_) => status::failure(Reason::AlreadyExists, e.to_string()),
        SecretError::Invalid { .. } => status::failure(Reason::Invalid, e.to_string()),
        SecretError::Registry(RegistryError::Internal(cause)) => {
            tracing::error!(%cause, "internal error in the secrets API");
            status::failure(Reason::InternalError, "internal error")
        }
        SecretError::Registry(other) => status::failure(Reason::BadRequest, other.to_string()),
    }
}

/// A handler's outcome: the answer, or the `Status` refusing the request.
type Answer = Result<HttpResponse, HttpResponse>;

fn answer(a: Answer) -> HttpResponse {
    a.unwrap_or_else(|refusal| refusal)
}

/// Runs `f` in the namespace the path names (a bad name is refused with 400).
async fn in_namespace<F, Fut>(ns: &str, f: F) -> HttpResponse
where
    F: FnOnce(Namespace) -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    match ns.parse::<Namespace>() {
        Ok(ns) => answer(f(ns).await),
        Err(e) => status::failure(Reason::BadRequest, e.to_string()),
    }
}

async fn list(path: web::Path<String>, reg: web::Data<Registry>) -> HttpResponse {
    in_namespace(&path, |ns| async move {
        let secrets = reg.list_secrets(&ns).await.map_err(|e| error(&e))?;
        let rv = secrets.iter().map(|(_, v)| *v).max().unwrap_or(0);
        let items: Vec<Value> = secrets.iter().map(|(s, v)| s.to_kube(*v)).collect();
        Ok(HttpResponse::Ok().json(json!({
            "kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()}, "items": items,
        })))
    })
    .await
}

async fn create(path: web::Path<String>, body: web::Bytes, reg: web::Data<Registry>) -> HttpResponse {
    in_namespace(&path, |ns| async move {
        let doc: Value = serde_json::from_slice(&body)
            .map_err(|e| status::failure(Reason::BadRequest, format!("the request body is not valid: {e}")))?;
        let secret = PullSecret::from_kube(&ns, &doc).map_err(|e| error(&e))?;
        let rev = reg.create_secret(secret.clone()).await.map_err(|e| error(&e))?;
        Ok(HttpResponse::build(StatusCode::CREATED).json(secret.to_kube(rev)))
    })
    .await
}

async fn get(path: web::Path<(String, String)>, reg: web::Data<Registry>) -> HttpResponse {
    let (ns, name) = path.into_inner();
    in_namespace(&ns, |ns| async move {
        let (s, v) = reg.get_secret(&ns, &name).await.map_err(|e| error(&e))?;
        Ok(HttpResponse::Ok().json(s.to_kube(v)))
    })
    .await
}

async fn delete(path: web::Path<(String, String)>, reg: web::Data<Registry>) -> HttpResponse {
    let (ns, name) = path.into_inner();
    in_namespace(&ns, |ns| async move {
        reg.delete_secret(&ns, &name).await.map_err(|e| error(&e))?;
        Ok(status::success(StatusCode::OK, Some(status::Details { name: &name, group: "", resource: "secrets" })))
    })
    .await
}
