//! Image lookup as a mutating admission webhook (`admission.k8s.io/v1` AdmissionReview, answered with a JSON
//! Patch): in Pods and the pod templates of the workload kinds ([`super::lookup::POD_KINDS`]), a single-segment
//! image `name:tag`, `name` (`:latest`) or `name@sha256:…` whose stream exists in the Tributary namespace of the
//! object's namespace, with lookup on for the stream (`spec.lookupPolicy.local`) or the resource (the annotation
//! `alpha.image.policy.openshift.io/resolve-names: '*'` on the object or its pod template), becomes the pull spec
//! by digest; everything else is left alone. Served at [`ADMISSION_PATH`] when `[cluster] admission` is on
//! ([`configure`]); registered on the API server by `tributary adm admission-config` ([`super::webhook_config`]).
//!
//! Never blocks admission when unsure: a store error or an answer that would take longer than [`DEADLINE`] admits
//! the object unchanged with a warning, as `failurePolicy: Ignore` does when Tributary cannot be reached at all.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;
use names::{Digest, Namespace, StreamName, TagName};
use serde_json::{json, Value};

use super::lookup::{repository, NamespaceMap, PodKind, StreamFacts, RESOLVE_NAMES_ANNOTATION};
use crate::service::Registry;

/// Where the API server sends AdmissionReviews.
pub const ADMISSION_PATH: &str = "/admission/image-lookup";

/// How long resolving may take before the object is admitted unchanged (the webhook configuration gives the API
/// server's own timeout, which is longer).
pub const DEADLINE: Duration = Duration::from_secs(3);

/// A single-segment image reference: what image lookup may resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShortRef {
    Tag(StreamName, TagName),
    Digest(StreamName, Digest),
}

impl ShortRef {
    /// `name:tag`, `name` or `name@sha256:…` with no registry or path; anything else is `None`.
    pub fn parse(image: &str) -> Option<ShortRef> {
        if image.contains('/') {
            return None;
        }
        if let Some((name, digest)) = image.split_once('@') {
            return Some(ShortRef::Digest(name.parse().ok()?, digest.parse().ok()?));
        }
        let (name, tag) = image.split_once(':').unwrap_or((image, "latest"));
        Some(ShortRef::Tag(name.parse().ok()?, tag.parse().ok()?))
    }

    pub fn stream(&self) -> &StreamName {
        match self {
            ShortRef::Tag(s, _) | ShortRef::Digest(s, _) => s,
        }
    }
}

/// One image field of a pod spec that lookup may rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageField {
    pub pointer: String,
    pub image: String,
    pub short: ShortRef,
}

const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// The single-segment images of `object`'s pod spec (containers, init and ephemeral containers).
pub fn image_fields(kind: &PodKind, object: &Value) -> Vec<ImageField> {
    let spec_at = kind.pod_spec_pointer();
    let Some(spec) = object.pointer(&spec_at) else { return Vec::new() };
    let mut out = Vec::new();
    for list in CONTAINER_LISTS {
        let Some(containers) = spec.get(list).and_then(Value::as_array) else { continue };
        for (i, c) in containers.iter().enumerate() {
            let Some(image) = c.get("image").and_then(Value::as_str) else { continue };
            if let Some(short) = ShortRef::parse(image) {
                out.push(ImageField { pointer: format!("{spec_at}/{list}/{i}/image"), image: image.to_owned(), short });
            }
        }
    }
    out
}

/// Whether the resource turned lookup on for itself: the annotation on the object or on its pod template.
pub fn resource_opts_in(kind: &PodKind, object: &Value) -> bool {
    let on = |meta: Option<&Value>| {
        meta.and_then(|m| m.pointer(&format!("/annotations/{}", RESOLVE_NAMES_ANNOTATION.replace('/', "~1"))))
            .and_then(Value::as_str)
            == Some("*")
    };
    on(object.get("metadata")) || on(kind.template_metadata_pointer().and_then(|p| object.pointer(&p)))
}

/// The JSON Patch that resolves `object`'s images, given the facts of the streams they name (absent: no such
/// stream).
pub fn plan_lookup(kind: &PodKind, object: &Value, facts: &BTreeMap<StreamName, StreamFacts>) -> Vec<Value> {
    let resource_on = resource_opts_in(kind, object);
    let mut ops = Vec::new();
    for field in image_fields(kind, object) {
        let Some(stream) = facts.get(field.short.stream()) else { continue };
        if !(resource_on || stream.lookup_local) {
            continue;
        }
        let spec = match &field.short {
            ShortRef::Tag(_, tag) => stream.tags.get(tag.as_str()),
            ShortRef::Digest(_, digest) => stream.images.get(digest),
        };
        if let Some(spec) = spec {
            ops.push(json!({"op": "replace", "path": field.pointer, "value": spec}));
        }
    }
    ops
}

/// Reads the facts of every stream `fields` name in Tributary namespace `ns`.
async fn read_facts(
    reg: &Registry,
    ns: &Namespace,
    fields: &[ImageField],
) -> Result<BTreeMap<StreamName, StreamFacts>, streams::StreamError> {
    let mut facts = BTreeMap::new();
    for f in fields {
        let name = f.short.stream();
        if facts.contains_key(name) {
            continue;
        }
        let Some(repo) = repository(ns, name.as_str()) else { continue };
        if let Some(found) = StreamFacts::read(&reg.streams, &repo).await? {
            facts.insert(name.clone(), found);
        }
    }
    Ok(facts)
}

/// Answers one admission request: allowed, with a patch when something resolved; allowed unchanged with a warning
/// when Tributary could not tell in time.
pub async fn review(reg: &Registry, map: &NamespaceMap, req: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let response = AdmissionResponse::from(req);
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return response;
    }
    let (Some(kind), Some(object), Some(k8s_ns)) =
        (PodKind::of(&req.kind.group, &req.kind.kind), req.object.as_ref(), req.namespace.as_deref())
    else {
        return response;
    };
    let Some(ns) = map.tributary(k8s_ns) else { return response };
    let Ok(object) = serde_json::to_value(object) else { return response };
    let fields = image_fields(kind, &object);
    if fields.is_empty() {
        return response;
    }
    let facts = match tokio::time::timeout(DEADLINE, read_facts(reg, &ns, &fields)).await {
        Ok(Ok(facts)) => facts,
        outcome => {
            let why = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {}s", DEADLINE.as_secs()),
            };
            tracing::warn!(namespace = k8s_ns, name = req.name, error = why, "image lookup: admitted unchanged");
            let mut response = response;
            response.warnings = Some(vec![format!("tributary image lookup skipped: {why}")]);
            return response;
        }
    };
    let ops = plan_lookup(kind, &object, &facts);
    if ops.is_empty() {
        return response;
    }
    tracing::info!(namespace = k8s_ns, kind = kind.kind, name = req.name, images = ops.len(), "image lookup resolved");
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops)).expect("patch operations are well-formed");
    response.with_patch(patch).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "image lookup: patch not serializable; admitted unchanged");
        AdmissionResponse::from(req)
    })
}

/// `POST /admission/image-lookup`: an AdmissionReview in, an AdmissionReview out. A body that is no
/// AdmissionReview with a request gets 400 with a Kubernetes `Status`.
async fn handle(reg: web::Data<Registry>, body: web::Bytes) -> HttpResponse {
    let bad = |message: String| {
        HttpResponse::BadRequest().json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": "BadRequest", "code": 400,
        }))
    };
    let review_in: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad(format!("not an admission.k8s.io/v1 AdmissionReview: {e}")),
    };
    let req: AdmissionRequest<DynamicObject> = match review_in.try_into() {
        Ok(r) => r,
        Err(_) => return bad("the AdmissionReview has no request".into()),
    };
    let answer = review(&reg, &reg.cluster.namespaces, &req).await;
    HttpResponse::Ok().json(answer.into_review())
}

/// Registers [`ADMISSION_PATH`] when `[cluster] admission` is on. Outside `/apis` and `/v2`: the API server sends
/// no credentials (reach it only from the API server; see the README).
pub fn configure(cfg: &mut web::ServiceConfig, enabled: bool) {
    if enabled {
        cfg.route(ADMISSION_PATH, web::post().to(handle));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(lookup_local: bool) -> BTreeMap<StreamName, StreamFacts> {
        let digest: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let spec = format!("reg:5000/app/ruby@{digest}");
        let f = StreamFacts {
            lookup_local,
            tags: [("2.5".to_owned(), spec.clone())].into(),
            images: [(digest, spec)].into(),
        };
        [("ruby".parse().unwrap(), f)].into()
    }

    fn deployment(annotated: bool) -> Value {
        let annotations = if annotated { json!({RESOLVE_NAMES_ANNOTATION: "*"}) } else { json!({}) };
        json!({"metadata": {"name": "d"}, "spec": {"template": {"metadata": {"annotations": annotations}, "spec": {
        "initContainers": [{"name": "i", "image": "ruby:2.5"}],
        "containers": [
            {"name": "web", "image": "ruby:2.5"},
            {"name": "hub", "image": "docker.io/library/ruby:2.5"},
            {"name": "other", "image": "python:3"},
            {"name": "gone", "image": "ruby:9"},
        ]}}}})
    }

    #[test]
    fn short_references() {
        let d = format!("sha256:{}", "b".repeat(64));
        assert!(
            matches!(ShortRef::parse("ruby:2.5"), Some(ShortRef::Tag(s, t)) if s.as_str() == "ruby" && t.as_str() == "2.5")
        );
        assert!(matches!(ShortRef::parse("ruby"), Some(ShortRef::Tag(_, t)) if t.as_str() == "latest"));
        assert!(matches!(ShortRef::parse(&format!("ruby@{d}")), Some(ShortRef::Digest(..))));
        for long in ["library/ruby:2.5", "docker.io/ruby", "reg:5000/ns/ruby@sha256:x", "Ruby:2.5", "ruby@sha256:zz"] {
            assert_eq!(ShortRef::parse(long), None, "{long}");
        }
    }

    #[test]
    fn stream_lookup_resolves_short_names_of_existing_tags_only() {
        let kind = PodKind::named("deploy").unwrap();
        let ops = plan_lookup(kind, &deployment(false), &facts(true));
        let spec = format!("reg:5000/app/ruby@sha256:{}", "a".repeat(64));
        assert_eq!(
            ops,
            vec![
                json!({"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": spec}),
                json!({"op": "replace", "path": "/spec/template/spec/initContainers/0/image", "value": spec}),
            ]
        );
    }

    #[test]
    fn without_lookup_on_the_stream_the_resource_annotation_turns_it_on() {
        let kind = PodKind::named("deploy").unwrap();
        assert!(plan_lookup(kind, &deployment(false), &facts(false)).is_empty());
        assert_eq!(plan_lookup(kind, &deployment(true), &facts(false)).len(), 2);
        assert!(plan_lookup(kind, &deployment(true), &BTreeMap::new()).is_empty(), "no stream: untouched");
    }

    #[test]
    fn pods_cronjobs_and_digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let pod = json!({"metadata": {"annotations": {RESOLVE_NAMES_ANNOTATION: "*"}}, "spec": {
            "containers": [{"name": "a", "image": format!("ruby@{d}")}],
            "ephemeralContainers": [{"name": "dbg", "image": "ruby:2.5"}]}});
        let ops = plan_lookup(PodKind::named("pod").unwrap(), &pod, &facts(false));
        let paths: Vec<&str> = ops.iter().map(|o| o["path"].as_str().unwrap()).collect();
        assert_eq!(paths, ["/spec/containers/0/image", "/spec/ephemeralContainers/0/image"]);
        let unknown =
            json!({"spec": {"containers": [{"name": "a", "image": format!("ruby@sha256:{}", "c".repeat(64))}]}});
        assert!(
            plan_lookup(PodKind::named("pod").unwrap(), &unknown, &facts(true)).is_empty(),
            "digest not in the stream"
        );
        let cj = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "ruby:2.5"}]}}}}}});
        let ops = plan_lookup(PodKind::named("cj").unwrap(), &cj, &facts(true));
        assert_eq!(ops[0]["path"], "/spec/jobTemplate/spec/template/spec/containers/0/image");
    }
}
