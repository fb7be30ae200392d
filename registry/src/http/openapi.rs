//! The OpenAPI documents kubectl reads to validate what it sends (`/openapi/v2`, `/openapi/v3`), built from one
//! set of schemas, and the unknown-field check (`fieldValidation`) that walks an object against them. Routed by
//! [`super::kube`]; `streams_api` calls [`unknown_fields`].

use actix_web::http::header::ACCEPT;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};
use streams::ObjectKind;

use super::kube::ApiVersion;
use super::status::{self, Reason};

// ---------------------------------------------------------------------------------------------------------------
// OpenAPI

/// The schemas of the objects kubectl may send, keyed as Kubernetes names them. Open enough that any
/// OpenShift-shaped object validates; typed where kubectl's validation would catch a mistake.
fn definitions() -> Value {
    let string = json!({"type": "string"});
    let boolean = json!({"type": "boolean"});
    let int = json!({"type": "integer", "format": "int64"});
    let map = json!({"type": "object", "additionalProperties": {"type": "string"}});
    let any_object = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    let gvk = |kind: &str| {
        let gvks: Vec<Value> =
            ApiVersion::ALL.iter().map(|v| json!({"group": v.group(), "version": "v1", "kind": kind})).collect();
        Value::Array(gvks)
    };
    let object_meta = json!({
        "type": "object",
        "properties": {
            "name": string, "generateName": string, "namespace": string, "uid": string,
            "resourceVersion": string, "generation": int, "creationTimestamp": string, "deletionTimestamp": string,
            "labels": map, "annotations": map, "finalizers": {"type": "array", "items": string},
            "ownerReferences": {"type": "array", "items": any_object}, "managedFields": {"type": "array", "items": any_object},
            "selfLink": string,
        },
    });
    let object_ref = json!({
        "type": "object", "required": ["kind", "name"],
        "properties": {"kind": string, "name": string, "namespace": string},
    });
    let tag_ref = json!({
        "type": "object", "required": ["name"],
        "properties": {
            "name": string, "annotations": map, "from": object_ref, "reference": boolean, "generation": int,
            "importPolicy": {"type": "object", "properties": {"insecure": boolean, "scheduled": boolean, "importMode": string}},
            "referencePolicy": {"type": "object", "properties": {"type": string}},
        },
    });
    let meta_ref = json!({"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"});
    let tag_ref_ref = json!({"$ref": "#/definitions/com.github.openshift.api.image.v1.TagReference"});
    json!({
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": object_meta,
        "com.github.openshift.api.image.v1.TagReference": tag_ref,
        "com.github.openshift.api.image.v1.ImageStream": {
            "type": "object",
            "properties": {
                "apiVersion": string, "kind": string, "metadata": meta_ref,
                "spec": {"type": "object", "properties": {
                    "lookupPolicy": {"type": "object", "properties": {"local": boolean}},
                    "dockerImageRepository": string,
                    "tags": {"type": "array", "items": tag_ref_ref,
                             "x-kubernetes-patch-merge-key": "name", "x-kubernetes-patch-strategy": "merge",
                             "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
                }},
                "status": any_object,
            },
            "x-kubernetes-group-version-kind": gvk("ImageStream"),
        },
        "com.github.openshift.api.image.v1.ImageStreamTag": {
            "type": "object",
            "properties": {
                "apiVersion": string, "kind": string, "metadata": meta_ref, "tag": tag_ref_ref,
                "generation": int, "lookupPolicy": {"type": "object", "properties": {"local": boolean}},
                "conditions": {"type": "array", "items": any_object}, "image": any_object,
            },
            "x-kubernetes-group-version-kind": gvk("ImageStreamTag"),
        },
        "com.github.openshift.api.image.v1.ImageStreamImage": {
            "type": "object",
            "properties": {"apiVersion": string, "kind": string, "metadata": meta_ref, "image": any_object},
            "x-kubernetes-group-version-kind": gvk("ImageStreamImage"),
        },
        "com.github.openshift.api.image.v1.ImageStreamMapping": {
            "type": "object", "required": ["image", "tag"],
            "properties": {"apiVersion": string, "kind": string, "metadata": meta_ref, "image": any_object, "tag": string},
            "x-kubernetes-group-version-kind": gvk("ImageStreamMapping"),
        },
        "com.github.openshift.api.image.v1.Image": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
            "properties": {"apiVersion": string, "kind": string, "metadata": meta_ref},
            "x-kubernetes-group-version-kind": gvk("Image"),
        },
        LIMIT_RANGE: limit_range_schema(&meta_ref),
    })
}

/// The fields of a sent `LimitRange` (or patch of one) that its schema does not know, as dotted paths.
pub fn limit_range_unknown_fields(object: &Value) -> Vec<String> {
    unknown_fields_in(&definitions(), LIMIT_RANGE, object)
}

/// The schema key of `v1` `LimitRange` (served under `/api/v1` only; see `super::limitranges`).
const LIMIT_RANGE: &str = "io.k8s.api.core.v1.LimitRange";

/// `v1` `LimitRange`: `spec.limits[]` of a `type` and resource → quantity maps (a quantity is a string or a
/// number, as Kubernetes takes it).
fn limit_range_schema(meta_ref: &Value) -> Value {
    let string = json!({"type": "string"});
    let quantities = json!({"type": "object", "additionalProperties": {"x-kubernetes-int-or-string": true}});
    let mut item = serde_json::Map::new();
    item.insert("type".into(), string.clone());
    for list in crate::service::limitranges::LISTS {
        item.insert(list.into(), quantities.clone());
    }
    json!({
        "type": "object",
        "properties": {
            "apiVersion": string, "kind": string, "metadata": meta_ref,
            "spec": {"type": "object", "properties": {"limits": {"type": "array", "items": {
                "type": "object", "required": ["type"], "properties": item}}}},
        },
        "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "LimitRange"}],
    })
}

/// The fields of `object` (a `kind` sent by a client) that its schema does not know, as dotted paths.
pub fn unknown_fields(kind: ObjectKind, object: &Value) -> Vec<String> {
    unknown_fields_in(&definitions(), &format!("com.github.openshift.api.image.v1.{}", kind.kind()), object)
}

/// The fields of `object` that the schema `key` of `defs` does not know, as dotted paths.
pub fn unknown_fields_in(defs: &Value, key: &str, object: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(schema) = defs.get(key) {
        walk_unknown(defs, schema, object, "", &mut out);
    }
    out
}

fn walk_unknown(defs: &Value, schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => defs.get(r.trim_start_matches("#/definitions/")).unwrap_or(&Value::Null),
        None => schema,
    };
    match value {
        Value::Object(fields) => {
            if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
                return;
            }
            if let Some(extra) = schema.get("additionalProperties") {
                for (k, v) in fields {
                    walk_unknown(defs, extra, v, &format!("{path}{k}."), out);
                }
                return;
            }
            let Some(props) = schema.get("properties").and_then(Value::as_object) else { return };
            // `$patch`, `$setElementOrder/tags` …: strategic merge patch directives, not fields.
            for (k, v) in fields.iter().filter(|(k, _)| !k.starts_with('$')) {
                match props.get(k) {
                    Some(p) => walk_unknown(defs, p, v, &format!("{path}{k}."), out),
                    None => out.push(format!("{path}{k}")),
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    walk_unknown(defs, item, v, &format!("{}[{i}].", path.trim_end_matches('.')), out);
                }
            }
        }
        _ => {}
    }
}

/// Does the client take JSON (kubectl asks for OpenAPI v2 in protobuf only, and falls back when refused)?
fn takes_json(req: &HttpRequest) -> bool {
    let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    accept.is_empty() || accept.contains("json") || accept.contains("*/*")
}

pub(super) async fn v2(req: HttpRequest) -> HttpResponse {
    if !takes_json(&req) {
        return status::failure(Reason::NotAcceptable, "only application/json is served");
    }
    HttpResponse::Ok().json(json!({
        "swagger": "2.0",
        "info": {"title": "Tributary", "version": env!("CARGO_PKG_VERSION")},
        "paths": {},
        "definitions": definitions(),
    }))
}

pub(super) async fn v3_root() -> HttpResponse {
    let mut paths = json!({
        "apis/image.openshift.io/v1": {"serverRelativeURL": "/openapi/v3/apis/image.openshift.io/v1"},
        "api/v1": {"serverRelativeURL": "/openapi/v3/api/v1"},
    });
    for gv in super::config_api::GROUP_VERSIONS {
        paths[format!("apis/{gv}")] = json!({"serverRelativeURL": format!("/openapi/v3/apis/{gv}")});
    }
    HttpResponse::Ok().json(json!({"paths": paths}))
}

/// OpenAPI v3 for the image API at `version`: the schemas, and for each resource the operations with the query parameters the
/// server honours (kubectl looks for `fieldValidation` to decide whether the server validates).
pub(super) async fn v3(version: ApiVersion) -> HttpResponse {
    let mut schemas = definitions();
    if let Some(obj) = schemas.as_object_mut() {
        for (_, v) in obj.iter_mut() {
            rewrite_refs(v);
        }
    }
    let param = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string"}});
    let body = |kind: &str| json!({"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/com.github.openshift.api.image.v1.{kind}")}}}});
    let mut paths = serde_json::Map::new();
    for (resource, kind) in [("imagestreams", "ImageStream"), ("imagestreamtags", "ImageStreamTag")] {
        // kubectl finds the PATCH operation of a kind by this extension and looks for `fieldValidation` on it.
        let op = |action: &str, with_body: bool| {
            let mut o = json!({
                "parameters": [param("fieldValidation"), param("fieldManager"), param("dryRun")],
                "responses": {"200": body(kind)},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": {"group": version.group(), "version": "v1", "kind": kind},
            });
            if with_body {
                o["requestBody"] = body(kind);
            }
            if action == "patch" {
                // kubectl sends a strategic merge patch when the PATCH operation offers it.
                let schema = body(kind)["content"]["application/json"].clone();
                o["requestBody"] = json!({"content": {
                    "application/merge-patch+json": schema,
                    "application/strategic-merge-patch+json": schema,
                }});
            }
            o
        };
        paths.insert(
            format!("{}/namespaces/{{namespace}}/{resource}", version.base()),
            json!({"get": op("list", false), "post": op("post", true)}),
        );
        paths.insert(
            format!("{}/namespaces/{{namespace}}/{resource}/{{name}}", version.base()),
            json!({"get": op("get", false), "put": op("put", true), "patch": op("patch", true),
                   "delete": op("delete", false)}),
        );
    }
    if version == ApiVersion::Legacy {
        // LimitRanges (the server checks `fieldValidation`: see `super::limitranges`).
        let body = json!({"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{LIMIT_RANGE}")}}}});
        let op = |action: &str| {
            let mut o = json!({"parameters": [param("fieldValidation"), param("fieldManager"), param("dryRun")],
                "responses": {"200": body.clone()}, "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": {"group": "", "version": "v1", "kind": "LimitRange"}});
            match action {
                "post" | "put" => o["requestBody"] = body.clone(),
                "patch" => {
                    let schema = body["content"]["application/json"].clone();
                    o["requestBody"] = json!({"content": {"application/merge-patch+json": schema,
                                                          "application/strategic-merge-patch+json": schema}});
                }
                _ => {}
            }
            o
        };
        let base = "/api/v1/namespaces/{namespace}/limitranges";
        paths.insert(base.to_owned(), json!({"get": op("list"), "post": op("post")}));
        paths.insert(
            format!("{base}/{{name}}"),
            json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}),
        );
    }
    HttpResponse::Ok().json(json!({
        "openapi": "3.0.0",
        "info": {"title": "Tributary", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

pub(super) fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                match (k.as_str(), x) {
                    ("$ref", Value::String(s)) => *s = s.replace("#/definitions/", "#/components/schemas/"),
                    (_, x) => rewrite_refs(x),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}
