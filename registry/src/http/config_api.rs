//! The image policy API, cluster-scoped, for cluster administrators only (the guard in [`super::auth`] checks
//! `imageconfig` on every route here):
//!
//! ```text
//! /apis/config.openshift.io/v1/[watch/]images[/cluster]                  get list watch replace patch (create: 409)
//! /apis/config.openshift.io/v1/[watch/]imagedigestmirrorsets[/{name}]    list watch create | get replace patch delete
//! /apis/config.openshift.io/v1/[watch/]imagetagmirrorsets[/{name}]       the same
//! /apis/operator.openshift.io/v1alpha1/[watch/]imagecontentsourcepolicies[/{name}]   the same
//! ```
//! with their discovery documents and OpenAPI v3 schemas, so that `kubectl get|edit|apply` work as on OpenShift.
//! Status bodies, tables, patches and the watch wire format come from [`super::kube`] and [`super::streams_api`];
//! the objects live in [`crate::imagepolicy::PolicyStore`].

use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use serde_json::{json, Value};

use super::kube::{self, WatchLine};
use super::status::{self, Details, Reason};
use super::streams_api::{body, patch_body, with_warnings, Refusal};
use crate::imagepolicy::model::{Kind, Object, CONFIG_GROUP};
use crate::imagepolicy::{PolicyError, PolicyStore};
use crate::service::Registry;

/// The group versions served here.
pub const GROUP_VERSIONS: [&str; 2] = ["config.openshift.io/v1", "operator.openshift.io/v1alpha1"];

pub fn configure(cfg: &mut web::ServiceConfig) {
    for gv in GROUP_VERSIONS {
        let (group, _) = gv.split_once('/').unwrap_or((gv, ""));
        cfg.route(&format!("/apis/{group}"), web::get().to(move || async move { group_response(group) }))
            .route(&format!("/apis/{gv}"), web::get().to(move || async move { resources_response(gv) }))
            .route(&format!("/openapi/v3/apis/{gv}"), web::get().to(move || async move { openapi_v3(gv) }))
            .route(&format!("/apis/{gv}/{{tail:.*}}"), web::to(dispatch));
    }
}

/// The `APIGroup` documents of the groups served here (for `/apis`).
pub fn group_docs() -> Vec<Value> {
    GROUP_VERSIONS
        .iter()
        .map(|gv| {
            let (group, version) = gv.split_once('/').unwrap_or((gv, ""));
            let v = json!({"groupVersion": gv, "version": version});
            json!({"name": group, "versions": [v.clone()], "preferredVersion": v})
        })
        .collect()
}

fn group_response(group: &str) -> HttpResponse {
    let mut doc = group_docs().into_iter().find(|g| g["name"] == group).unwrap_or(Value::Null);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    HttpResponse::Ok().json(doc)
}

fn kinds_of(gv: &str) -> Vec<Kind> {
    Kind::ALL.into_iter().filter(|k| format!("{}/{}", k.group(), k.version()) == gv).collect()
}

fn resources_response(gv: &str) -> HttpResponse {
    let resources: Vec<Value> = kinds_of(gv)
        .into_iter()
        .map(|k| {
            let verbs: &[&str] = match k {
                Kind::Image => &["get", "list", "patch", "update", "watch"],
                _ => &["create", "delete", "get", "list", "patch", "update", "watch"],
            };
            let mut r = json!({"name": k.resource(), "singularName": k.singular(), "namespaced": false,
                               "kind": k.kind(), "verbs": verbs});
            if !k.short_names().is_empty() {
                r["shortNames"] = json!(k.short_names());
            }
            r
        })
        .collect();
    HttpResponse::Ok()
        .json(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

// ---------------------------------------------------------------------------------------------------------------
// Schemas

/// The schemas of the policy kinds (what kubectl validates against, and the unknown-field check).
fn definitions() -> Value {
    let string = json!({"type": "string"});
    let strings = json!({"type": "array", "items": {"type": "string"}});
    let meta = json!({"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"});
    let any = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    let mirrors = |with_policy: bool| {
        let mut props = json!({"source": string, "mirrors": strings});
        if with_policy {
            props["mirrorSourcePolicy"] =
                json!({"type": "string", "enum": ["AllowContactingSource", "NeverContactSource"]});
        }
        json!({"type": "array", "items": {"type": "object", "required": ["source"], "properties": props}})
    };
    let object = |kind: Kind, spec: Value| {
        json!({"type": "object", "properties": {"apiVersion": string, "kind": string, "metadata": meta,
                "spec": {"type": "object", "properties": spec}, "status": any},
               "x-kubernetes-group-version-kind": [{"group": kind.group(), "version": kind.version(), "kind": kind.kind()}]})
    };
    let image_spec = json!({
        "allowedRegistriesForImport": {"type": "array", "items": {"type": "object", "properties": {
            "domainName": string, "insecure": {"type": "boolean"}}}},
        "additionalTrustedCA": {"type": "object", "properties": {
            "name": string, "data": {"type": "object", "additionalProperties": string}}},
        "externalRegistryHostnames": strings,
        "registrySources": {"type": "object", "properties": {"allowedRegistries": strings, "blockedRegistries": strings,
            "insecureRegistries": strings, "containerRuntimeSearchRegistries": strings}},
    });
    let mut defs = json!({
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": {"type": "object", "properties": {
            "name": string, "uid": string, "resourceVersion": string, "generation": {"type": "integer"},
            "creationTimestamp": string, "labels": {"type": "object", "additionalProperties": string},
            "annotations": {"type": "object", "additionalProperties": string},
            "managedFields": {"type": "array", "items": any}}},
    });
    for kind in Kind::ALL {
        let spec = match kind {
            Kind::Image => image_spec.clone(),
            Kind::ImageDigestMirrorSet => json!({"imageDigestMirrors": mirrors(true)}),
            Kind::ImageTagMirrorSet => json!({"imageTagMirrors": mirrors(true)}),
            Kind::ImageContentSourcePolicy => json!({"repositoryDigestMirrors": mirrors(false)}),
        };
        defs[schema_key(kind)] = object(kind, spec);
    }
    defs
}

fn schema_key(kind: Kind) -> String {
    let group = if kind.group() == CONFIG_GROUP { "config" } else { "operator" };
    format!("com.github.openshift.api.{group}.{}.{}", kind.version(), kind.kind())
}

fn openapi_v3(gv: &str) -> HttpResponse {
    let param = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string"}});
    let mut paths = serde_json::Map::new();
    for kind in kinds_of(gv) {
        let body = json!({"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", schema_key(kind))}}}});
        let op = |action: &str| {
            let mut o = json!({"parameters": [param("fieldValidation"), param("fieldManager"), param("dryRun")],
                "responses": {"200": body.clone()}, "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": {"group": kind.group(), "version": kind.version(), "kind": kind.kind()}});
            if matches!(action, "post" | "put") {
                o["requestBody"] = body.clone();
            }
            if action == "patch" {
                // Merge patches only (as for custom resources): lists are replaced whole.
                o["requestBody"] =
                    json!({"content": {"application/merge-patch+json": body["content"]["application/json"]}});
            }
            o
        };
        let base = format!("/apis/{gv}/{}", kind.resource());
        paths.insert(base.clone(), json!({"get": op("list"), "post": op("post")}));
        paths.insert(
            format!("{base}/{{name}}"),
            json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}),
        );
    }
    HttpResponse::Ok().json(json!({"openapi": "3.0.0", "info": {"title": "Tributary", "version": crate::VERSION},
        "paths": paths, "components": {"schemas": definitions()}}))
}

// ---------------------------------------------------------------------------------------------------------------
// Requests

/// A parsed request: the kind, the object name, and the query parameters honoured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRequest {
    pub kind: Kind,
    pub name: Option<String>,
    pub watch: bool,
    pub resource_version: Option<u64>,
    pub timeout: Option<Duration>,
    pub strict: bool,
}

impl PolicyRequest {
    /// Parses `/apis/<group>/<version>/[watch/]<resource>[/<name>]` and the query.
    pub fn parse(path: &str, query: &str) -> Option<Result<PolicyRequest, String>> {
        let gv = GROUP_VERSIONS.iter().find(|gv| path.starts_with(&format!("/apis/{gv}/")))?;
        let rest = &path[format!("/apis/{gv}/").len()..];
        let (rest, mut watch) = match rest.strip_prefix("watch/") {
            Some(r) => (r, true),
            None => (rest, false),
        };
        let (group, _) = gv.split_once('/').unwrap_or((gv, ""));
        let mut parts = rest.trim_end_matches('/').split('/');
        let resource = parts.next().unwrap_or("");
        let name = parts.next().map(str::to_owned);
        let kind = match (Kind::of(group, resource), parts.next()) {
            (Some(k), None) => k,
            _ => return Some(Err(format!("the server could not find the requested resource ({path})"))),
        };
        let mut r = PolicyRequest { kind, name, watch, resource_version: None, timeout: None, strict: false };
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "watch" => watch |= v == "true" || v == "1",
                "resourceVersion" if !v.is_empty() => match v.parse() {
                    Ok(rv) => r.resource_version = Some(rv),
                    Err(_) => return Some(Err(format!("resourceVersion {v:?} is not one of this server's"))),
                },
                "timeoutSeconds" => match v.parse() {
                    Ok(s) => r.timeout = Some(Duration::from_secs(s)),
                    Err(_) => return Some(Err("timeoutSeconds: not a number".into())),
                },
                "fieldSelector" => match v.split_once('=') {
                    Some(("metadata.name", n)) => r.name = Some(n.trim_start_matches('=').to_owned()),
                    _ if v.is_empty() => {}
                    _ => return Some(Err(format!("field selector {v:?}: only metadata.name=NAME is supported"))),
                },
                "dryRun" if !v.is_empty() => return Some(Err("dryRun is not supported by this server".into())),
                "fieldValidation" => r.strict = v == "Strict",
                _ => {}
            }
        }
        r.watch = watch;
        Some(Ok(r))
    }
}

/// The answer for a policy error: one row per error. Internal causes are logged here, once, and not sent.
pub fn error(e: &PolicyError) -> HttpResponse {
    let with = |reason, kind: &Kind, name: &str| {
        status::failure_about(reason, e.to_string(), Details { name, group: kind.group(), resource: kind.resource() })
    };
    match e {
        PolicyError::NotFound { kind, name } => with(Reason::NotFound, kind, name),
        PolicyError::AlreadyExists { kind, name } => with(Reason::AlreadyExists, kind, name),
        PolicyError::Conflict { kind, name } => with(Reason::Conflict, kind, name),
        PolicyError::Invalid { kind, name, .. } => with(Reason::Invalid, kind, name),
        PolicyError::BadRequest(m) => kube::bad_request(m.clone()),
        PolicyError::NotAllowed(m) => status::failure(Reason::MethodNotAllowed, m.clone()),
        PolicyError::Store(cause @ storage_backends::StoreError::Unavailable(_)) => {
            tracing::error!(%cause, "metadata store unavailable in the image policy API");
            status::failure(Reason::ServiceUnavailable, "the metadata store is unavailable; try again")
        }
        PolicyError::Store(cause) => {
            tracing::error!(%cause, "internal error in the image policy API");
            status::failure(Reason::InternalError, "internal error")
        }
    }
}

fn respond(code: StatusCode, result: Result<Object, PolicyError>) -> HttpResponse {
    match result {
        Ok(o) => HttpResponse::build(code).json(o),
        Err(e) => error(&e),
    }
}

fn table(rv: &str, items: &[Object]) -> Value {
    let rows = items
        .iter()
        .map(|o| {
            (
                vec![o.metadata.name.clone(), o.metadata.creation_timestamp.map(kube::ago).unwrap_or_default()],
                &o.metadata,
            )
        })
        .collect();
    kube::table(rv, &["Name", "Created"], rows)
}

/// A sent object, refused with the unknown fields named when the client asked for strict validation.
fn sent(api: &PolicyRequest, bytes: &[u8]) -> Result<(Object, Vec<String>), Refusal> {
    let doc: Value = body(bytes)?;
    let unknown = unknown_fields(api, &doc)?;
    let o = serde_json::from_value(doc)
        .map_err(|e| Refusal::from(kube::bad_request(format!("the request body is not valid: {e}"))))?;
    Ok((o, unknown))
}

/// The warnings for the fields of `doc` (a whole object or a patch) the schema does not know; with strict field
/// validation, a 400 instead.
fn unknown_fields(api: &PolicyRequest, doc: &Value) -> Result<Vec<String>, Refusal> {
    let unknown: Vec<String> = super::openapi::unknown_fields_in(&definitions(), &schema_key(api.kind), doc)
        .into_iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if api.strict && !unknown.is_empty() {
        return Err(kube::bad_request(format!("strict decoding error: {}", unknown.join(", "))).into());
    }
    Ok(unknown)
}

async fn dispatch(req: HttpRequest, bytes: web::Bytes, reg: web::Data<Registry>) -> HttpResponse {
    // Parsed once, by the access guard, which authorized exactly this.
    let api = match super::auth::parsed(&req) {
        Some(Ok(super::auth::KubeRequest::Policy(a))) => a,
        Some(Err(m)) if !m.starts_with("the server could not find") => return kube::bad_request(m),
        Some(Err(m)) => return status::failure(Reason::NotFound, m),
        _ => return status::failure(Reason::NotFound, "the server could not find the requested resource"),
    };
    let Some(store) = reg.policy.store() else {
        return status::failure(Reason::InternalError, "internal error");
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        if let Err(crate::service::RegistryError::ReadOnly) = reg.check_writable().await {
            return status::failure(Reason::MethodNotAllowed, crate::service::readonly::REFUSAL.to_owned());
        }
    }
    match handle(&req, &api, &bytes, store).await {
        Ok(r) | Err(r) => r,
    }
}

async fn handle(
    req: &HttpRequest,
    api: &PolicyRequest,
    bytes: &[u8],
    store: &PolicyStore,
) -> Result<HttpResponse, HttpResponse> {
    let as_table = kube::wants_table(req);
    let kind = api.kind;
    let path_name = if api.watch { None } else { api.name.clone() };
    Ok(match (req.method().clone(), path_name) {
        (Method::GET, _) if api.watch => {
            let lines = store.watch(kind, api.name.clone(), api.resource_version).map(move |e| match e {
                Ok((t, o)) => {
                    let object = if as_table {
                        table(&o.metadata.resource_version, std::slice::from_ref(&o))
                    } else {
                        serde_json::to_value(&o).unwrap_or_default()
                    };
                    let mut line = serde_json::to_vec(&json!({"type": t, "object": object})).unwrap_or_default();
                    line.push(b'\n');
                    WatchLine::Event(web::Bytes::from(line))
                }
                Err(PolicyError::Store(e @ storage_backends::StoreError::Compacted { .. })) => {
                    WatchLine::Expired(e.to_string())
                }
                Err(e) => {
                    tracing::error!(cause = %e, "image policy watch failed");
                    WatchLine::Failed
                }
            });
            kube::lines_response(lines.boxed_local(), as_table, api.timeout)
        }
        (Method::GET, None) => match store.list(kind).await {
            Ok((items, rv)) if as_table => kube::json_response(StatusCode::OK, &table(&rv.to_string(), &items), true),
            Ok((items, rv)) => kube::json_response(
                StatusCode::OK,
                &json!({"kind": format!("{}List", kind.kind()), "apiVersion": kind.api_version(),
                        "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
                false,
            ),
            Err(e) => error(&e),
        },
        (Method::GET, Some(name)) => match store.get(kind, &name).await {
            Ok(o) if as_table => kube::json_response(
                StatusCode::OK,
                &table(&o.metadata.resource_version, std::slice::from_ref(&o)),
                true,
            ),
            other => respond(StatusCode::OK, other),
        },
        (Method::POST, None) => {
            let (o, warnings) = sent(api, bytes).map_err(HttpResponse::from)?;
            with_warnings(respond(StatusCode::CREATED, store.create(kind, o).await), &warnings)
        }
        (Method::PUT, Some(name)) => {
            let (o, warnings) = sent(api, bytes).map_err(HttpResponse::from)?;
            with_warnings(respond(StatusCode::OK, store.replace(kind, &name, o).await), &warnings)
        }
        (Method::PATCH, Some(name)) => {
            let (patch, how) = patch_body(req, bytes).map_err(HttpResponse::from)?;
            // A patch is not a whole object (kubectl apply's has no name): only its fields are checked here, the
            // patched object when it is stored.
            let warnings = unknown_fields(api, &patch).map_err(HttpResponse::from)?;
            with_warnings(respond(StatusCode::OK, store.patch(kind, &name, &patch, how).await), &warnings)
        }
        (Method::DELETE, Some(name)) => match store.delete(kind, &name).await {
            Ok(_) => status::success(
                StatusCode::OK,
                Some(Details { name: &name, group: kind.group(), resource: kind.resource() }),
            ),
            Err(e) => error(&e),
        },
        (m, _) => {
            status::failure(Reason::MethodNotAllowed, format!("the server does not allow {m} on {}", kind.qualified()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        let p = |path: &str, q: &str| PolicyRequest::parse(path, q).unwrap();
        let r = p("/apis/config.openshift.io/v1/images/cluster", "").unwrap();
        assert_eq!((r.kind, r.name.as_deref(), r.watch), (Kind::Image, Some("cluster"), false));
        let r = p("/apis/config.openshift.io/v1/watch/imagedigestmirrorsets", "resourceVersion=7").unwrap();
        assert_eq!((r.kind, r.watch, r.resource_version), (Kind::ImageDigestMirrorSet, true, Some(7)));
        let r = p("/apis/operator.openshift.io/v1alpha1/imagecontentsourcepolicies", "watch=1").unwrap();
        assert_eq!((r.kind, r.watch), (Kind::ImageContentSourcePolicy, true));
        assert!(p("/apis/config.openshift.io/v1/imagecontentsourcepolicies", "").is_err(), "wrong group");
        assert!(p("/apis/config.openshift.io/v1/images/cluster/status/x", "").is_err());
        assert!(p("/apis/config.openshift.io/v1/images", "dryRun=All").is_err());
        assert!(PolicyRequest::parse("/apis/image.openshift.io/v1/images", "").is_none());
    }
}
