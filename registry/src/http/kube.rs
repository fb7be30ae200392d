//! What makes the image stream API a Kubernetes API for `kubectl`: the discovery documents (`/api`, `/apis`,
//! `/apis/image.openshift.io[/v1]`, `/version`), the routes of the OpenAPI documents ([`super::openapi`]), `Status` answers (one row per [`StreamError`]), server-side tables
//! (`Accept: application/json;as=Table;…`, the columns `oc get` shows), and the watch wire format (one JSON
//! event per line). `streams_api` calls this; the routes here are open to all (discovery, as in Kubernetes).

use std::time::Duration;

use actix_web::http::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::{json, Value};
use streams::model::{Image, ImageStream, ImageStreamTag, ObjectMeta};
use streams::watch::{Watch, WatchEvent, WatchObject};
use streams::{ObjectKind, StreamError};

use super::openapi;
pub use super::openapi::unknown_fields;
use super::status::{self, Details, Reason};

pub const GROUP: &str = "image.openshift.io";
pub const GROUP_VERSION: &str = "image.openshift.io/v1";

/// Where the image API is served: its group (`/apis/image.openshift.io/v1`), or the legacy core version
/// (`/api/v1`, `apiVersion: v1`) that OpenShift 3 documents and the seeds' examples still use. The same
/// objects and handlers; only the path and the `apiVersion` written on the objects differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiVersion {
    #[default]
    Group,
    Legacy,
}

impl ApiVersion {
    pub const ALL: [ApiVersion; 2] = [ApiVersion::Group, ApiVersion::Legacy];

    /// The path prefix of the version's resources.
    pub fn base(self) -> &'static str {
        match self {
            ApiVersion::Group => "/apis/image.openshift.io/v1",
            ApiVersion::Legacy => "/api/v1",
        }
    }

    /// What objects served here carry as `apiVersion`.
    pub fn api_version(self) -> &'static str {
        match self {
            ApiVersion::Group => GROUP_VERSION,
            ApiVersion::Legacy => "v1",
        }
    }

    pub(super) fn group(self) -> &'static str {
        match self {
            ApiVersion::Group => GROUP,
            ApiVersion::Legacy => "",
        }
    }

    /// The version a request path is under, with the rest of the path (`None`: neither).
    pub fn of_path(path: &str) -> Option<(ApiVersion, &str)> {
        ApiVersion::ALL.into_iter().find_map(|v| {
            let rest = path.strip_prefix(v.base())?;
            (rest.is_empty() || rest.starts_with('/')).then(|| (v, rest.trim_start_matches('/')))
        })
    }

    /// Writes this version's `apiVersion` on an image API object, or on each item of a list of them.
    pub fn relabel(self, doc: &mut Value) {
        if self == ApiVersion::Group {
            return;
        }
        let one = |o: &mut Value| {
            if o.get("apiVersion").and_then(Value::as_str) == Some(GROUP_VERSION) {
                o["apiVersion"] = json!(self.api_version());
            }
        };
        one(doc);
        if let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut) {
            items.iter_mut().for_each(one);
        }
    }
}

/// Registers the discovery and OpenAPI routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api", web::get().to(core_versions))
        .route("/api/v1", web::get().to(legacy_resources))
        .route("/api/v1/namespaces/{ns}/events", web::get().to(no_events))
        .route("/apis", web::get().to(groups))
        .route("/apis/image.openshift.io", web::get().to(group))
        .route("/apis/image.openshift.io/v1", web::get().to(resources))
        .route("/version", web::get().to(version))
        .route("/openapi/v2", web::get().to(openapi::v2))
        .route("/openapi/v3", web::get().to(openapi::v3_root))
        .route("/openapi/v3/apis/image.openshift.io/v1", web::get().to(|| openapi::v3(ApiVersion::Group)))
        .route("/openapi/v3/api/v1", web::get().to(|| openapi::v3(ApiVersion::Legacy)));
}

// ---------------------------------------------------------------------------------------------------------------
// Status answers

/// What a `Status` about an image API object names: the object, in this group.
pub fn details(name: &str, kind: ObjectKind) -> Details<'_> {
    Details { name, group: GROUP, resource: kind.resource() }
}

/// A `Status` success (what a delete or a mapping answers).
pub fn success(code: StatusCode, name: &str, kind: ObjectKind) -> HttpResponse {
    status::success(code, Some(details(name, kind)))
}

/// The answer for a stream error: one row per error. Internal causes are logged here, once, and not sent.
pub fn error(e: &StreamError) -> HttpResponse {
    match e {
        StreamError::NotFound { kind, name } => {
            status::failure_about(Reason::NotFound, e.to_string(), details(name, *kind))
        }
        StreamError::StreamNotFound(repo) => status::failure_about(
            Reason::NotFound,
            format!("{} \"{}\" not found", ObjectKind::ImageStream, repo.stream()),
            details(repo.stream().as_str(), ObjectKind::ImageStream),
        ),
        StreamError::AlreadyExists { kind, name } => {
            status::failure_about(Reason::AlreadyExists, e.to_string(), details(name, *kind))
        }
        StreamError::Conflict { kind, name } => {
            status::failure_about(Reason::Conflict, e.to_string(), details(name, *kind))
        }
        StreamError::Invalid { kind, name, .. } => {
            status::failure_about(Reason::Invalid, e.to_string(), details(name, *kind))
        }
        StreamError::BadRequest(m) => status::failure(Reason::BadRequest, m.clone()),
        StreamError::Contention(_) => {
            let mut resp = status::failure(Reason::TooManyRequests, e.to_string());
            resp.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from_static(super::errors::RETRY_AFTER_SECS),
            );
            resp
        }
        StreamError::Store(cause @ storage_backends::StoreError::Unavailable(_)) => {
            tracing::error!(%cause, "metadata store unavailable in the image stream API");
            status::failure(Reason::ServiceUnavailable, "the metadata store is unavailable; try again")
        }
        StreamError::Store(cause) => {
            tracing::error!(%cause, "internal error in the image stream API");
            status::failure(Reason::InternalError, "internal error")
        }
    }
}

pub fn bad_request(message: impl Into<String>) -> HttpResponse {
    status::failure(Reason::BadRequest, message)
}

// ---------------------------------------------------------------------------------------------------------------
// Discovery

async fn core_versions(req: HttpRequest) -> HttpResponse {
    let host = req.connection_info().host().to_owned();
    HttpResponse::Ok().json(json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
    }))
}

async fn legacy_resources() -> HttpResponse {
    HttpResponse::Ok().json(resource_list(ApiVersion::Legacy))
}

/// `kubectl describe` asks for the object's events; there are none.
async fn no_events() -> HttpResponse {
    HttpResponse::Ok().json(json!({"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": []}))
}

fn group_doc() -> Value {
    let v = json!({"groupVersion": GROUP_VERSION, "version": "v1"});
    json!({"name": GROUP, "versions": [v.clone()], "preferredVersion": v})
}

async fn groups() -> HttpResponse {
    let mut all = vec![group_doc()];
    all.extend(super::config_api::group_docs());
    HttpResponse::Ok().json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": all}))
}

async fn group() -> HttpResponse {
    let mut g = group_doc();
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    HttpResponse::Ok().json(g)
}

/// The resources of the image API at `version`, with the verbs served and `oc`'s short names.
pub fn resource_list(version: ApiVersion) -> Value {
    let r = |name: &str, singular: &str, kind: &str, namespaced: bool, verbs: &[&str], short: &[&str]| {
        let mut v = json!({"name": name, "singularName": singular, "namespaced": namespaced, "kind": kind,
                           "verbs": verbs});
        // Short names belong to the group: the same names under the core version would make kubectl warn that
        // `is` is ambiguous (and pick the legacy path, which has priority).
        if !short.is_empty() && version == ApiVersion::Group {
            v["shortNames"] = json!(short);
        }
        v
    };
    let all = ["create", "delete", "get", "list", "patch", "update", "watch"];
    let mut list = json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": version.api_version(),
        "resources": [
            r("imagestreams", "imagestream", "ImageStream", true, &all, &["is"]),
            r("imagestreamtags", "imagestreamtag", "ImageStreamTag", true, &all, &["istag"]),
            r("imagestreamimages", "imagestreamimage", "ImageStreamImage", true, &["get"], &["isimage"]),
            r("imagestreammappings", "imagestreammapping", "ImageStreamMapping", true, &["create"], &[]),
            r("imagestreamimports", "imagestreamimport", "ImageStreamImport", true, &["create"], &[]),
            r("images", "image", "Image", false, &["get", "list"], &[]),
        ],
    });
    if version == ApiVersion::Legacy {
        if let Some(resources) = list["resources"].as_array_mut() {
            resources.push(r("secrets", "secret", "Secret", true, &["create", "delete", "get", "list"], &[]));
            let verbs = ["create", "delete", "get", "list", "patch", "update"];
            let mut limits = r("limitranges", "limitrange", "LimitRange", true, &verbs, &[]);
            // Kubernetes' short name; no image API resource has it, so it is not ambiguous here.
            limits["shortNames"] = json!(["limits"]);
            resources.push(limits);
        }
    }
    list
}

async fn resources() -> HttpResponse {
    HttpResponse::Ok().json(resource_list(ApiVersion::Group))
}

async fn version() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "major": "1", "minor": "32",
        "gitVersion": concat!("v1.32.0+tributary-", env!("CARGO_PKG_VERSION")),
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "", "compiler": "rustc", "platform": "linux/amd64",
    }))
}

// ---------------------------------------------------------------------------------------------------------------
// Tables

/// Whether the client asked for a server-side table (`kubectl get` does).
pub fn wants_table(req: &HttpRequest) -> bool {
    req.headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split(',').next())
        .is_some_and(|first| first.contains("as=Table"))
}

/// "2 minutes ago", as `oc` says it.
pub fn ago(t: DateTime<Utc>) -> String {
    let secs = (Utc::now() - t).num_seconds().max(0);
    let (n, unit) = match secs {
        s if s < 60 => return "Less than a minute ago".into(),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s if s < 86_400 * 30 => (s / 86_400, "day"),
        s if s < 86_400 * 365 => (s / (86_400 * 30), "month"),
        s => (s / (86_400 * 365), "year"),
    };
    match n {
        1 if unit == "hour" => "About an hour ago".into(),
        1 => format!("1 {unit} ago"),
        n => format!("{n} {unit}s ago"),
    }
}

fn partial_metadata(meta: &ObjectMeta) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
}

fn columns(names: &[&str]) -> Value {
    Value::Array(
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                json!({"name": n, "type": "string", "format": if i == 0 { "name" } else { "" },
                       "description": "", "priority": 0})
            })
            .collect(),
    )
}

/// A table of rows (cells, object metadata) with the given columns.
pub(super) fn table(resource_version: &str, names: &[&str], rows: Vec<(Vec<String>, &ObjectMeta)>) -> Value {
    let rows: Vec<Value> =
        rows.into_iter().map(|(cells, meta)| json!({"cells": cells, "object": partial_metadata(meta)})).collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns(names), "rows": rows,
    })
}

const STREAM_COLUMNS: [&str; 4] = ["Name", "Image Repository", "Tags", "Updated"];
/// Shown by `kubectl get -o wide` only (priority 1): the tag count and the newest tag event's time (RFC 3339), which
/// the web console reads instead of every tag's history.
const STREAM_WIDE_COLUMNS: [&str; 2] = ["Tag Count", "Updated At"];
const TAG_COLUMNS: [&str; 3] = ["Name", "Image Reference", "Updated"];
const IMAGE_COLUMNS: [&str; 2] = ["Name", "Image Reference"];

fn stream_row(s: &ImageStream) -> Vec<String> {
    let mut tags: Vec<(&str, DateTime<Utc>)> =
        s.status.tags.iter().filter_map(|t| t.items.first().map(|e| (t.tag.as_str(), e.created))).collect();
    tags.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let names: Vec<&str> = tags.iter().map(|(t, _)| *t).collect();
    let shown = match names.len() {
        0 => String::new(),
        n if n <= 4 => names.join(","),
        n => format!("{} + {} more...", names[..3].join(","), n - 3),
    };
    let updated = tags.first().map(|(_, t)| ago(*t)).unwrap_or_default();
    vec![s.metadata.name.clone(), s.status.public_docker_image_repository.clone().unwrap_or_default(), shown, updated]
}

fn tag_row(t: &ImageStreamTag) -> Vec<String> {
    let reference = t.image.as_ref().map(|i| i.docker_image_reference.clone()).unwrap_or_default();
    let updated = t.metadata.creation_timestamp.map(ago).unwrap_or_default();
    vec![t.metadata.name.clone(), reference, updated]
}

fn image_row(i: &Image) -> Vec<String> {
    vec![i.metadata.name.clone(), i.docker_image_reference.clone()]
}

pub fn stream_table(rv: &str, items: &[ImageStream]) -> Value {
    let rows = items
        .iter()
        .map(|s| {
            let mut cells = stream_row(s);
            let newest = s.status.tags.iter().filter_map(|t| t.items.first()).map(|e| e.created).max();
            cells.push(s.status.tags.len().to_string());
            cells.push(newest.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default());
            (cells, &s.metadata)
        })
        .collect();
    let mut t = table(rv, &STREAM_COLUMNS, rows);
    if let Some(cols) = t["columnDefinitions"].as_array_mut() {
        for name in STREAM_WIDE_COLUMNS {
            cols.push(json!({"name": name, "type": "string", "format": "", "description": "", "priority": 1}));
        }
    }
    t
}

pub fn tag_table(rv: &str, items: &[ImageStreamTag]) -> Value {
    table(rv, &TAG_COLUMNS, items.iter().map(|t| (tag_row(t), &t.metadata)).collect())
}

pub fn image_table(rv: &str, items: &[Image]) -> Value {
    table(rv, &IMAGE_COLUMNS, items.iter().map(|i| (image_row(i), &i.metadata)).collect())
}

fn watch_object_table(object: &WatchObject) -> Value {
    match object {
        WatchObject::Stream(s) => stream_table(&s.metadata.resource_version, std::slice::from_ref(s)),
        WatchObject::Tag(t) => tag_table(&t.metadata.resource_version, std::slice::from_ref(t)),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Watch

/// One watch event on the wire: `{"type", "object"}` and a newline; the object as a table when asked.
fn event_line(e: &WatchEvent, as_table: bool, version: ApiVersion) -> web::Bytes {
    let body = if as_table {
        json!({"type": e.kind, "object": watch_object_table(&e.object)})
    } else {
        let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
        if let Some(o) = v.get_mut("object") {
            version.relabel(o);
        }
        v
    };
    let mut line = serde_json::to_vec(&body).unwrap_or_default();
    line.push(b'\n');
    web::Bytes::from(line)
}

/// One line of a watch as it reaches the wire helper: an event already serialised, or the end of the watch.
pub enum WatchLine {
    Event(web::Bytes),
    /// The client's `resourceVersion` predates what the store remembers (410 `Expired`: list again).
    Expired(String),
    /// The store failed; logged by the caller.
    Failed,
}

/// Streams a watch's events until the client leaves, the server stops, or `timeout` passes. A `resourceVersion`
/// older than the store remembers ends the watch with an `ERROR` event carrying a 410 `Expired` `Status`, a store
/// failure with a 500 one, as Kubernetes does.
pub fn watch_response(watch: Watch, as_table: bool, timeout: Option<Duration>, version: ApiVersion) -> HttpResponse {
    let lines = futures::stream::unfold(watch, move |mut watch| async move {
        let line = match watch.next().await? {
            Ok(e) => WatchLine::Event(event_line(&e, as_table, version)),
            Err(e) if streams::watch::is_expired(&e) => WatchLine::Expired(e.to_string()),
            Err(e) => {
                tracing::error!(cause = %e, "watch failed");
                WatchLine::Failed
            }
        };
        Some((line, watch))
    });
    lines_response(lines.boxed_local(), as_table, timeout)
}

/// The wire side of any watch: one JSON line per event, an `ERROR` `Status` line ending it on expiry or failure.
pub fn lines_response(
    lines: futures::stream::LocalBoxStream<'static, WatchLine>,
    as_table: bool,
    timeout: Option<Duration>,
) -> HttpResponse {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let events = futures::stream::unfold(Some(lines), move |state| async move {
        let mut lines = state?;
        let next = match deadline {
            Some(d) => tokio::time::timeout_at(d, lines.next()).await.ok()?,
            None => lines.next().await,
        };
        let status = |reason: Reason, message: String| {
            let event = json!({"type": "ERROR", "object": status::object(reason, message, None)});
            let mut line = serde_json::to_vec(&event).unwrap_or_default();
            line.push(b'\n');
            web::Bytes::from(line)
        };
        match next? {
            WatchLine::Event(line) => Some((Ok::<_, actix_web::Error>(line), Some(lines))),
            WatchLine::Expired(m) => Some((Ok(status(Reason::Expired, m)), None)),
            WatchLine::Failed => Some((Ok(status(Reason::InternalError, "internal error".into())), None)),
        }
    });
    let content_type = if as_table { "application/json;as=Table;v=v1;g=meta.k8s.io" } else { "application/json" };
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, HeaderValue::from_static(content_type)))
        .insert_header(("Cache-Control", "no-cache, private"))
        .streaming(events.boxed_local())
}

/// JSON with the table content type when it is a table.
pub fn json_response(code: StatusCode, body: &Value, as_table: bool) -> HttpResponse {
    let content_type = if as_table { "application/json;as=Table;v=v1;g=meta.k8s.io" } else { "application/json" };
    HttpResponse::build(code).insert_header((CONTENT_TYPE, content_type)).json(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_oc() {
        let now = Utc::now();
        assert_eq!(ago(now), "Less than a minute ago");
        assert_eq!(ago(now - chrono::Duration::minutes(2)), "2 minutes ago");
        assert_eq!(ago(now - chrono::Duration::minutes(61)), "About an hour ago");
        assert_eq!(ago(now - chrono::Duration::days(3)), "3 days ago");
    }

    #[test]
    fn every_error_has_its_status() {
        let table: Vec<(StreamError, u16, &str)> = vec![
            (StreamError::NotFound { kind: ObjectKind::ImageStream, name: "a".into() }, 404, "NotFound"),
            (StreamError::StreamNotFound("ns/a".parse().unwrap()), 404, "NotFound"),
            (StreamError::AlreadyExists { kind: ObjectKind::ImageStreamTag, name: "a:b".into() }, 409, "AlreadyExists"),
            (StreamError::Conflict { kind: ObjectKind::ImageStream, name: "a".into() }, 409, "Conflict"),
            (
                StreamError::Invalid { kind: ObjectKind::ImageStream, name: "a".into(), message: "m".into() },
                422,
                "Invalid",
            ),
            (StreamError::BadRequest("x".into()), 400, "BadRequest"),
            (StreamError::Contention("x".into()), 429, "TooManyRequests"),
            (StreamError::Store(storage_backends::StoreError::Backend("disk".into())), 500, "InternalError"),
            (StreamError::Store(storage_backends::StoreError::Unavailable("etcd".into())), 503, "ServiceUnavailable"),
        ];
        for (e, code, _reason) in table {
            let resp = error(&e);
            assert_eq!(resp.status().as_u16(), code, "{e}");
            assert_eq!(resp.headers().contains_key("retry-after"), code == 429, "{e}: Retry-After only on 429");
        }
        assert_eq!(
            StreamError::NotFound { kind: ObjectKind::ImageStream, name: "a".into() }.to_string(),
            "imagestreams.image.openshift.io \"a\" not found"
        );
    }
}
