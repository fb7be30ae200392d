//! Pull secrets over HTTP, as Kubernetes serves them (`/api/v1/namespaces/{ns}/secrets[/{name}]`, `v1` `Secret`
//! objects of type `kubernetes.io/dockerconfigjson`), so that `kubectl create secret docker-registry` and
//! `tributary create secret docker-registry` both work. Access is checked by `auth::stream_api_guard` (resource
//! `secrets`: `edit` and `admin` may, `view` may not). The work is in `service::secrets`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
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

/// Parses `/api/v1/namespaces/{ns}/{resource}[/{name}]`, the paths of the namespaced core (`v1`) resources
/// Tributary serves (secrets, limitranges): the namespace and the object's name when the path names one; `None`
/// for any other path, `Some(Err)` for a bad namespace.
pub fn core_path(path: &str, resource: &str) -> Option<Result<(Namespace, Option<String>), String>> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let (ns, rest) = rest.split_once('/')?;
    let name = match rest.strip_prefix(resource)? {
        "" | "/" => None,
        tail => Some(tail.strip_prefix('/')?),
    };
    if name.is_some_and(|n| n.is_empty() || n.contains('/')) {
        return None;
    }
    Some(ns.parse::<Namespace>().map(|ns| (ns, name.map(str::to_owned))).map_err(|e| e.to_string()))
}

/// A parsed secrets request: the namespace, and the secret's name when the path names one. Parsed once, by the
/// access guard ([`super::auth::parsed`]), for the guard and the handlers alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretsRequest {
    pub namespace: Namespace,
    pub name: Option<String>,
}

impl SecretsRequest {
    /// Parses `/api/v1/namespaces/{ns}/secrets[/{name}]`; `None` for any other path.
    pub fn parse(path: &str) -> Option<Result<SecretsRequest, String>> {
        let parsed = core_path(path, "secrets")?;
        Some(parsed.map(|(namespace, name)| SecretsRequest { namespace, name }))
    }
}

/// A handler's outcome: the answer, or the `Status` refusing the request.
type Answer = Result<HttpResponse, HttpResponse>;

/// Runs `f` on the request the guard parsed (a bad namespace is refused with 400).
async fn with_request<F, Fut>(req: &HttpRequest, f: F) -> HttpResponse
where
    F: FnOnce(SecretsRequest) -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    match super::auth::parsed(req) {
        Some(Ok(super::auth::KubeRequest::Secrets(r))) => f(r).await.unwrap_or_else(|refusal| refusal),
        Some(Err(e)) => status::failure(Reason::BadRequest, e),
        _ => status::failure(Reason::NotFound, "the server could not find the requested resource"),
    }
}

async fn list(req: HttpRequest, reg: web::Data<Registry>) -> HttpResponse {
    with_request(&req, |r| async move {
        let secrets = reg.list_secrets(&r.namespace).await.map_err(|e| error(&e))?;
        let rv = secrets.iter().map(|(_, v)| *v).max().unwrap_or(0);
        let items: Vec<Value> = secrets.iter().map(|(s, v)| s.to_kube(*v)).collect();
        Ok(HttpResponse::Ok().json(json!({
            "kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()}, "items": items,
        })))
    })
    .await
}

async fn create(req: HttpRequest, body: web::Bytes, reg: web::Data<Registry>) -> HttpResponse {
    with_request(&req, |r| async move {
        let doc: Value = serde_json::from_slice(&body)
            .map_err(|e| status::failure(Reason::BadRequest, format!("the request body is not valid: {e}")))?;
        let secret = PullSecret::from_kube(&r.namespace, &doc).map_err(|e| error(&e))?;
        let rev = reg.create_secret(secret.clone()).await.map_err(|e| error(&e))?;
        Ok(HttpResponse::build(StatusCode::CREATED).json(secret.to_kube(rev)))
    })
    .await
}

/// The refusal of a request without the secret's name (which a route with `{name}` always has).
fn unnamed() -> HttpResponse {
    status::failure(Reason::MethodNotAllowed, "a secret's name is required")
}

async fn get(req: HttpRequest, reg: web::Data<Registry>) -> HttpResponse {
    with_request(&req, |r| async move {
        let (s, v) =
            reg.get_secret(&r.namespace, r.name.as_deref().ok_or_else(unnamed)?).await.map_err(|e| error(&e))?;
        Ok(HttpResponse::Ok().json(s.to_kube(v)))
    })
    .await
}

async fn delete(req: HttpRequest, reg: web::Data<Registry>) -> HttpResponse {
    with_request(&req, |r| async move {
        let name = r.name.as_deref().ok_or_else(unnamed)?;
        reg.delete_secret(&r.namespace, name).await.map_err(|e| error(&e))?;
        Ok(status::success(StatusCode::OK, Some(status::Details { name, group: "", resource: "secrets" })))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        let ns: Namespace = "team".parse().unwrap();
        let p = |path: &str| SecretsRequest::parse(path);
        assert_eq!(
            p("/api/v1/namespaces/team/secrets"),
            Some(Ok(SecretsRequest { namespace: ns.clone(), name: None }))
        );
        assert_eq!(
            p("/api/v1/namespaces/team/secrets/pull"),
            Some(Ok(SecretsRequest { namespace: ns, name: Some("pull".into()) }))
        );
        assert!(matches!(p("/api/v1/namespaces/Bad_Name/secrets"), Some(Err(_))));
        for other in ["/api/v1/namespaces/team/imagestreams", "/api/v1/namespaces/team/secrets/a/b", "/v2/"] {
            assert_eq!(p(other), None, "{other}");
        }
    }
}
