//! The access-control API the `tributary` CLI talks to, under `/apis/tributary.dev/v1/` (JSON in and out; errors
//! are Kubernetes `Status` objects; credentials as everywhere: `Authorization: Bearer <API token>` or Basic with
//! the token as password):
//!
//! ```text
//! GET    /apis/tributary.dev/v1/whoami                                 who the credentials belong to
//! GET    /apis/tributary.dev/v1/namespaces                             namespaces the caller can see
//! POST   /apis/tributary.dev/v1/namespaces                {"name"}     new project; the caller becomes its admin
//! GET    /apis/tributary.dev/v1/users                                  (cluster-admin)
//! POST   /apis/tributary.dev/v1/users                     {"name","groups"}
//! GET    /apis/tributary.dev/v1/namespaces/{ns}/serviceaccounts
//! POST   /apis/tributary.dev/v1/namespaces/{ns}/serviceaccounts {"name"}
//! GET    /apis/tributary.dev/v1/tokens                                 tokens the caller may manage, no secrets
//! POST   /apis/tributary.dev/v1/tokens                    {"owner": Subject, "expiresInSeconds"?, "description"?}
//! DELETE /apis/tributary.dev/v1/tokens/{id}                            revoke
//! GET    /apis/tributary.dev/v1/namespaces/{ns}/rolebindings
//! POST   /apis/tributary.dev/v1/namespaces/{ns}/rolebindings/add    {"role", "subject": Subject}
//! POST   /apis/tributary.dev/v1/namespaces/{ns}/rolebindings/remove {"role", "subject": Subject}
//! GET    /apis/tributary.dev/v1/readonly                               read-only mode (any authenticated caller)
//! PUT    /apis/tributary.dev/v1/readonly                  {"readOnly"} switch it (cluster-admin; every replica
//!                                                                      follows; 409 when the configuration sets it)
//! POST   /apis/tributary.dev/v1/gc              {"confirm"?, "graceSeconds"?} one garbage-collection sweep
//!                                                                      (cluster-admin): a dry run unless confirm,
//!                                                                      answered with what it freed (would free)
//! POST   /apis/tributary.dev/v1/prune/images    {"keepTagRevisions"?, "keepYoungerThanSeconds"?, "all"?,
//!                                                "namespace"?, "pruneOverSizeLimit"?, "confirm"?}
//!                                                                      `oc adm prune images` (cluster-admin): a dry
//!                                                                      run unless confirm, answered with the report
//! ```
//! A `Subject` is `{"kind":"User","name"}`, `{"kind":"ServiceAccount","namespace","name"}` or
//! `{"kind":"Group","name"}`. Permission checks live in [`auth::AuthService`]; this module only translates.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use auth::{AuthError, Caller, GroupName, Role, ServiceAccountName, Subject, TokenId, UserName};
use names::Namespace;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use storage_backends::StoreError;

use super::audit::note;
use super::auth::caller;
use super::status::{self, Reason};
use crate::service::Registry;

pub const BASE: &str = "/apis/tributary.dev/v1";

/// The `Status` answer for an access-control error; one row per error. Store failures are logged here, once.
pub fn auth_status(e: &AuthError) -> HttpResponse {
    match e {
        AuthError::Unauthenticated => status::failure(Reason::Unauthorized, "authentication required"),
        AuthError::InvalidCredentials => status::failure(Reason::Unauthorized, e.to_string()),
        AuthError::Forbidden => status::failure(Reason::Forbidden, "access denied"),
        AuthError::NotFound(_) => status::failure(Reason::NotFound, e.to_string()),
        AuthError::AlreadyExists(_) => status::failure(Reason::AlreadyExists, e.to_string()),
        AuthError::Invalid(_) => status::failure(Reason::BadRequest, e.to_string()),
        AuthError::Store(cause @ StoreError::Unavailable(_)) => {
            tracing::error!(%cause, "metadata store unavailable in the access-control API");
            status::failure(Reason::ServiceUnavailable, "the metadata store is unavailable; try again")
        }
        AuthError::Store(cause) => {
            tracing::error!(%cause, "internal error in the access-control API");
            status::failure(Reason::InternalError, "internal error")
        }
    }
}

type Answer = Result<HttpResponse, AuthError>;

fn bad(e: impl std::fmt::Display) -> AuthError {
    AuthError::Invalid(e.to_string())
}

fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AuthError> {
    serde_json::from_slice(bytes).map_err(bad)
}

fn namespace(s: &str) -> Result<Namespace, AuthError> {
    s.parse().map_err(bad)
}

async fn who(req: &HttpRequest, reg: &Registry) -> Result<Caller, AuthError> {
    caller(req, reg).await
}

fn items<T: serde::Serialize>(kind: &str, items: Vec<T>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"kind": kind, "apiVersion": "tributary.dev/v1", "items": items}))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    let r = |p: &str| format!("{BASE}{p}");
    cfg.route(&r("/whoami"), web::get().to(whoami))
        .route(&r("/namespaces"), web::get().to(list_namespaces))
        .route(&r("/namespaces"), web::post().to(create_namespace))
        .route(&r("/users"), web::get().to(list_users))
        .route(&r("/users"), web::post().to(create_user))
        .route(&r("/namespaces/{ns}/serviceaccounts"), web::get().to(list_service_accounts))
        .route(&r("/namespaces/{ns}/serviceaccounts"), web::post().to(create_service_account))
        .route(&r("/tokens"), web::get().to(list_tokens))
        .route(&r("/tokens"), web::post().to(create_token))
        .route(&r("/tokens/{id}"), web::delete().to(delete_token))
        .route(&r("/namespaces/{ns}/rolebindings"), web::get().to(list_role_bindings))
        .route(&r("/namespaces/{ns}/rolebindings/{action}"), web::post().to(edit_role_binding))
        .route(&r("/readonly"), web::get().to(get_read_only))
        .route(&r("/readonly"), web::put().to(put_read_only))
        .route(&r("/gc"), web::post().to(post_gc))
        .route(&r("/prune/images"), web::post().to(post_prune_images));
}

/// The audit log's name for a request to this API, and whether it is a write; `None` outside it. Reads the route
/// actix matched (and its `{action}`), never the raw path.
pub fn audit_action(req: &HttpRequest) -> Option<(String, bool)> {
    let pattern = req.match_pattern()?;
    let route = pattern.strip_prefix(BASE)?;
    let method = req.method();
    if method == actix_web::http::Method::GET || method == actix_web::http::Method::HEAD {
        return Some((format!("get {}", route.trim_start_matches('/')), false));
    }
    let action = match route {
        "/namespaces" => "create namespace".to_owned(),
        "/users" => "create user".to_owned(),
        "/namespaces/{ns}/serviceaccounts" => "create serviceaccount".to_owned(),
        "/tokens" => "create token".to_owned(),
        "/tokens/{id}" => "revoke token".to_owned(),
        "/namespaces/{ns}/rolebindings/{action}" => {
            format!("{} rolebinding", req.match_info().get("action").unwrap_or("change"))
        }
        "/readonly" => "set read-only".to_owned(),
        other => format!("{} {}", method.as_str().to_ascii_lowercase(), other.trim_start_matches('/')),
    };
    Some((action, true))
}

/// The handler's answer; a refusal is marked for the metrics ([`super::auth::refused`]).
fn answer(req: &HttpRequest, a: Answer) -> HttpResponse {
    a.unwrap_or_else(|e| {
        match e {
            AuthError::Unauthenticated => super::auth::refused(req, crate::metrics::Refusal::Unauthenticated),
            AuthError::Forbidden => super::auth::refused(req, crate::metrics::Refusal::Denied),
            _ => {}
        }
        auth_status(&e)
    })
}

async fn whoami(req: HttpRequest, reg: web::Data<Registry>) -> HttpResponse {
    answer(
        &req,
        async {
            let caller = who(&req, &reg).await?;
            if caller.identity.is_anonymous() && caller.via != auth::Via::Open {
                return Err(AuthError::Unauthenticated);
            }
            Ok(HttpResponse::Ok().json(reg.auth.whoami(&caller)))
        }
        .await,
    )
}

#[derive(Deserialize)]
struct NameBody {
    name: String,
}

async fn list_namespaces(req: HttpRequest, reg: web::Data<Registry>) -> HttpResponse {
    answer(
        &req,
        async {
            let caller = who(&req, &reg).await?;
            Ok(items("NamespaceList", reg.auth.list_namespaces(&caller).await?))
        }
        .await,
    )
}

async fn create_namespace(req: HttpRequest, bytes: web::Bytes, reg: web::Data<Registry>) -> HttpResponse {
    answer(
        &req,
        async {
            let caller = who(&req, &reg).await?;
            let ns = namespace(&body::<NameBody>(&bytes)?.name)?;
            note(&req, "namespace", ns.to_string());
            let created = reg.auth.create_namespace(&caller, &ns).await?;
            Ok(HttpResponse::Created().json(created))
        }
        .await,
    )
}

#[derive(Deserialize)]
struct UserBody {
    name: UserName,
    #[serde(default)]
    groups: Vec<GroupName>,
}

async fn list_users(req: HttpRequest, reg: web::Data<Registry>) -> HttpResponse {
    answer(
        &req,
        async {
            let caller = who(&req, &reg).await?;
            Ok(items("UserList", reg.auth.list_users(&caller).await?))
        }
        .await,
    )
}

async fn create_user(req: HttpRequest, bytes: web::Bytes, reg: web::Data<Registry>) -> HttpResponse {
    answer(
        &req,
        async {
            let caller = who(&req, &reg).await?;
            let b = body::<UserBody>(&bytes)?;
            note(&req, "user", b.name.to_string());
            Ok(HttpResponse::Created().json(reg.auth.create_user(&caller, &b.name, b.groups).await?))
        }
        .await,
    )
}

async fn list_service_accounts(req: HttpRequest, path: web::Path<String>, reg: web::Data<Registry>) -> HttpResponse {
    answer(
        &req,
        async {
            let caller = who(&req, &reg).await?;
            let ns = namespace(&path)?;
            Ok(items("ServiceAccountList", reg.auth.list_service_accounts(&caller, &ns).await?))
        }
        .await,
    )
}

async fn create_service_account(
    req: HttpRequest,
    path: web::Path<String>,
    bytes: web::Bytes,
    reg: web::Data<Registry>,
) -> HttpResponse {
    answer(
        &req,
        async {
            let caller = who(&req, &reg).await?;
            let ns = namespace(&path)?;
            let name: ServiceAccountName = body::<NameBody>(&bytes)?.name.parse().map_err(bad)?;
            note(&req, "serviceaccount", name.to_string());
            let sa = reg.auth.create_service_account(&caller, &ns, &name).await?;
            Ok(HttpResponse::Created().json(sa))
        }
        .await,
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenBody {
    owner: Subject,
    #[serde(default)]
    expires_in_seconds: Option<i64>,
    #[serde(default)]
    description: Option<String>,
}

async fn list_tokens(req: HttpRequest, reg: web::Data<Registry>) -> HttpResponse {
    answer(
        &req,
        async {
            let caller = who(&req, &reg).await?;
            Ok(items("TokenList", reg.auth.list_tokens(&caller).await?))
        }
        .await,
    )
}

async fn create_token(req: HttpRequest, bytes: web::Bytes, reg: web::Data<Registry>) -> HttpResponse {
    answer(
        &req,
        async {
            let caller = who(&req, &reg).await?;
            let b = body::<TokenBody>(&bytes)?;
            let ttl = b.expires_in_seconds.map(chrono::Duration::seconds);
            note(&req, "owner", b.owner.to_string());
            let (info, secret) = reg.auth.create_token(&caller, &b.owner, ttl, b.description).await?;
            note(&req, "token", info.id.to_string());
            let mut out = serde_json::to_value(&info).map_err(bad)?;
            out["token"] = json!(secret);
            Ok(HttpResponse::Created().insert_header(("Cache-Control", "no-store")).json(out))
        }
        .await,
    )
}

async fn delete_token(req: HttpRequest, path: web::Path<String>, reg: web::Data<Registry>) -> HttpResponse {
    answer(
        &req,
        async {
            let caller = who(&req, &reg).await?;
            let id: TokenId = path.parse().map_err(bad)?;
            note(&req, "token", id.to_string());
            reg.auth.delete_token(&caller, &id).await?;
            Ok(status::success(StatusCode::OK, None))
        }
        .await,
    )
}

#[derive(Deserialize)]
struct BindingBody {
    role: Role,
    subject: Subject,
}

async fn list_role_bindings(req: HttpRequest, path: web::Path<String>, reg: web::Data<Registry>) -> HttpResponse {
    answer(
        &req,
        async {
            let caller = who(&req, &reg).await?;
            let ns = namespace(&path)?;
            Ok(items("RoleBindingList", reg.auth.list_role_bindings(&caller, &ns).await?))
        }
        .await,
    )
}

async fn edit_role_binding(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    bytes: web::Bytes,
    reg: web::Data<Registry>,
) -> HttpResponse {
    answer(
        &req,
        async {
            let caller = who(&req, &reg).await?;
            let (ns, action) = path.into_inner();
            let ns = namespace(&ns)?;
            let b = body::<BindingBody>(&bytes)?;
            note(&req, "role", b.role.to_string());
            note(&req, "subject", b.subject.to_string());
            let changed = match action.as_str() {
                "add" => reg.auth.add_role(&caller, &ns, b.role, &b.subject).await?,
                "remove" => {
                    let removed = reg.auth.remove_role(&caller, &ns, b.role, &b.subject).await?;
                    if !removed {
                        return Err(AuthError::NotFound(format!("binding of {} to {}", b.role, b.subject)));
                    }
                    true
                }
                _ => return Err(AuthError::NotFound("action (use add or remove)".into())),
            };
            Ok(HttpResponse::Ok().json(json!({"role": b.role, "subject": b.subject, "changed": changed})))
        }
        .await,
    )
}

fn read_only_answer(status: crate::service::readonly::ReadOnlyStatus) -> HttpResponse {
    let mut body = serde_json::to_value(status).unwrap_or_default();
    body["kind"] = json!("ReadOnly");
    body["apiVersion"] = json!("tributary.dev/v1");
    HttpResponse::Ok().json(body)
}

async fn get_read_only(req: HttpRequest, reg: web::Data<Registry>) -> HttpResponse {
    answer(
        &req,
        async {
            let caller = who(&req, &reg).await?;
            if caller.identity.is_anonymous() && caller.via != auth::Via::Open {
                return Err(AuthError::Unauthenticated);
            }
            Ok(read_only_answer(reg.read_only.status().await?))
        }
        .await,
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadOnlyBody {
    read_only: bool,
}

async fn put_read_only(req: HttpRequest, bytes: web::Bytes, reg: web::Data<Registry>) -> HttpResponse {
    use crate::service::readonly::SwitchError;
    answer(
        &req,
        async {
            let caller = who(&req, &reg).await?;
            reg.auth.require_cluster_admin(&caller).await?;
            let input: ReadOnlyBody = body(&bytes)?;
            note(&req, "readOnly", input.read_only);
            let by = reg.auth.whoami(&caller).name;
            match reg.read_only.set(input.read_only, &by).await {
                Ok(status) => Ok(read_only_answer(status)),
                Err(e @ SwitchError::ConfigFloor) => Ok(status::failure(Reason::Conflict, e.to_string())),
                Err(SwitchError::Store(e)) => Err(e.into()),
            }
        }
        .await,
    )
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GcBody {
    /// Delete; without it a dry run.
    #[serde(default)]
    confirm: bool,
    /// The grace period (default: the configured one).
    grace_seconds: Option<u64>,
}

async fn post_gc(req: HttpRequest, bytes: web::Bytes, reg: web::Data<Registry>) -> HttpResponse {
    answer(
        &req,
        async {
            let caller = who(&req, &reg).await?;
            reg.auth.require_cluster_admin(&caller).await?;
            let input: GcBody = if bytes.is_empty() { GcBody::default() } else { body(&bytes)? };
            if input.confirm && reg.read_only.is_on().await? {
                return Ok(status::failure(Reason::Conflict, crate::service::readonly::REFUSAL.to_string()));
            }
            let options = crate::gc::SweepOptions {
                grace: input.grace_seconds.map(std::time::Duration::from_secs).unwrap_or(reg.gc_grace),
                dry_run: !input.confirm,
                ..Default::default()
            };
            let collector = reg.collector();
            let outcome = crate::housekeeping::run_to_completion(async move { collector.sweep(&options).await }).await;
            crate::background::record_gc_sweep(&reg.metrics, &outcome);
            match outcome {
                Ok(report) => {
                    let mut body = serde_json::to_value(report).unwrap_or_default();
                    body["kind"] = json!("GarbageCollection");
                    body["apiVersion"] = json!("tributary.dev/v1");
                    Ok(HttpResponse::Ok().json(body))
                }
                Err(e) => {
                    tracing::error!(error = %e, "garbage collection through the admin API failed");
                    Ok(status::failure(Reason::InternalError, e.to_string()))
                }
            }
        }
        .await,
    )
}

async fn post_prune_images(req: HttpRequest, bytes: web::Bytes, reg: web::Data<Registry>) -> HttpResponse {
    use crate::gc::prune::PruneRequest;
    answer(
        &req,
        async {
            let caller = who(&req, &reg).await?;
            reg.auth.require_cluster_admin(&caller).await?;
            let input: PruneRequest = if bytes.is_empty() { PruneRequest::default() } else { body(&bytes)? };
            let options = input.resolve().map_err(bad)?;
            if options.confirm && reg.read_only.is_on().await? {
                return Ok(status::failure(Reason::Conflict, crate::service::readonly::REFUSAL.to_string()));
            }
            let pruner = reg.pruner();
            match crate::housekeeping::run_to_completion(async move { pruner.prune(&options).await }).await {
                Ok(report) => {
                    if !report.dry_run {
                        reg.metrics.prune_run(report.deleted_objects as u64, report.bytes_freed);
                    }
                    let mut body = serde_json::to_value(report).unwrap_or_default();
                    body["kind"] = json!("ImagePrune");
                    body["apiVersion"] = json!("tributary.dev/v1");
                    Ok(HttpResponse::Ok().json(body))
                }
                Err(e) => {
                    tracing::error!(error = %e, "pruning images through the admin API failed");
                    Ok(status::failure(Reason::InternalError, "internal error"))
                }
            }
        }
        .await,
    )
}
