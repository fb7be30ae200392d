//! Image-change triggers, the pure part: the `image.openshift.io/triggers` annotation's schema (as the seeds give
//! it: `from.kind` `ImageStreamTag`, `from.name` `stream:tag`, optional `from.namespace`, `fieldPath`, `paused`),
//! its validation, and the JSON Patch that brings an object's triggered fields to their tags' pull specs.
//! Used by the controller ([`super::controller`]) and the `set triggers` verb; no I/O here.

use names::{Namespace, RepositoryName, StreamName, TagName};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

use super::jsonpath::{FieldPath, PathError};
use super::lookup::NamespaceMap;

/// The annotation that carries an object's triggers.
pub const TRIGGERS_ANNOTATION: &str = "image.openshift.io/triggers";

/// One trigger as written in the annotation (the wire form; see [`Trigger`] for the checked one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectFieldTrigger {
    pub from: TriggerSource,
    pub field_path: String,
    /// `true`, or OpenShift's string `"true"`/`"false"`.
    #[serde(default, deserialize_with = "bool_or_string", skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// `from` of a trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerSource {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

fn bool_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        Bool(bool),
        Text(String),
    }
    match B::deserialize(d)? {
        B::Bool(b) => Ok(b),
        B::Text(t) => match t.as_str() {
            "true" => Ok(true),
            "false" | "" => Ok(false),
            other => Err(serde::de::Error::custom(format!("paused: {other:?} is neither true nor false"))),
        },
    }
}

/// A checked trigger: the stream tag it follows (in Kubernetes terms: the namespace of `from`, else the object's)
/// and the field it sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// The Kubernetes namespace of the ImageStreamTag.
    pub namespace: String,
    pub stream: StreamName,
    pub tag: TagName,
    pub field: FieldPath,
    pub paused: bool,
}

impl Trigger {
    /// The Tributary stream the trigger follows, through the namespace mapping.
    pub fn repository(&self, map: &NamespaceMap) -> Option<RepositoryName> {
        map.tributary(&self.namespace).map(|ns: Namespace| RepositoryName::new(ns, self.stream.clone()))
    }

    /// `ns/stream:tag`, for messages.
    pub fn source(&self) -> String {
        format!("{}/{}:{}", self.namespace, self.stream, self.tag)
    }
}

/// Why an annotation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    #[error("annotation {TRIGGERS_ANNOTATION} is not a JSON list of triggers: {0}")]
    NotJson(String),
    #[error("trigger {index}: from.kind is {kind:?}; only ImageStreamTag is supported")]
    Kind { index: usize, kind: String },
    #[error("trigger {index}: from.name {name:?} is not STREAM:TAG")]
    Name { index: usize, name: String },
    #[error("trigger {index}: {error}")]
    FieldPath { index: usize, error: PathError },
}

/// Parses and checks an annotation's value; `object_namespace` is the default of `from.namespace`.
pub fn parse_triggers(annotation: &str, object_namespace: &str) -> Result<Vec<Trigger>, TriggerError> {
    let raw: Vec<ObjectFieldTrigger> =
        serde_json::from_str(annotation).map_err(|e| TriggerError::NotJson(e.to_string()))?;
    raw.into_iter().enumerate().map(|(index, t)| check(index, t, object_namespace)).collect()
}

fn check(index: usize, t: ObjectFieldTrigger, object_namespace: &str) -> Result<Trigger, TriggerError> {
    if t.from.kind != "ImageStreamTag" {
        return Err(TriggerError::Kind { index, kind: t.from.kind });
    }
    let bad_name = || TriggerError::Name { index, name: t.from.name.clone() };
    let (stream, tag) = t.from.name.split_once(':').ok_or_else(bad_name)?;
    let (stream, tag) = (stream.parse().map_err(|_| bad_name())?, tag.parse().map_err(|_| bad_name())?);
    let field = t.field_path.parse().map_err(|error| TriggerError::FieldPath { index, error })?;
    let namespace = t.from.namespace.filter(|n| !n.is_empty()).unwrap_or_else(|| object_namespace.to_owned());
    Ok(Trigger { namespace, stream, tag, field, paused: t.paused })
}

/// What a trigger could not do on an object (reported as an Event, never fatal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The stream or the tag does not exist, or the tag points at no image.
    TagNotFound { source: String },
    /// The field path selects nothing in the object.
    Field(PathError),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::TagNotFound { source } => write!(f, "image stream tag {source} not found or has no image"),
            Problem::Field(e) => write!(f, "{e}"),
        }
    }
}

/// The JSON Patch operations that bring `object`'s triggered fields up to date, and the problems met.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// JSON Patch operations (`test` of the old value before each `replace`, so a concurrent edit fails the patch
    /// rather than being overwritten).
    pub ops: Vec<Value>,
    pub problems: Vec<Problem>,
}

/// Plans the patch for `object` under `triggers`; `pull_spec` gives a trigger's tag's current pull spec by
/// digest (`None`: no such tag or no image). Paused triggers are left alone.
pub fn plan(object: &Value, triggers: &[Trigger], pull_spec: impl Fn(&Trigger) -> Option<String>) -> Plan {
    let mut out = Plan::default();
    for t in triggers.iter().filter(|t| !t.paused) {
        let Some(spec) = pull_spec(t) else {
            out.problems.push(Problem::TagNotFound { source: t.source() });
            continue;
        };
        match t.field.resolve(object) {
            Ok((_, Some(current))) if current.as_str() == Some(spec.as_str()) => {}
            Ok((pointer, Some(current))) => {
                out.ops.push(json!({"op": "test", "path": pointer, "value": current}));
                out.ops.push(json!({"op": "replace", "path": pointer, "value": spec}));
            }
            Ok((pointer, None)) => out.ops.push(json!({"op": "add", "path": pointer, "value": spec})),
            Err(e) => out.problems.push(Problem::Field(e)),
        }
    }
    out
}

/// The annotation's value for `triggers` (what `set triggers` writes).
pub fn annotation_value(triggers: &[ObjectFieldTrigger]) -> String {
    serde_json::to_string(triggers).expect("triggers serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"[{"from":{"kind":"ImageStreamTag","name":"example:latest"},"fieldPath":"spec.template.spec.containers[?(@.name='web')].image"}]"#;

    fn deployment(image: &str) -> Value {
        json!({"metadata": {"namespace": "app"}, "spec": {"template": {"spec": {"containers": [
            {"name": "side", "image": "nginx"}, {"name": "web", "image": image}]}}}})
    }

    #[test]
    fn the_seed_annotation_parses() {
        let t = parse_triggers(SEED, "app").unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].namespace.as_str(), t[0].stream.as_str(), t[0].tag.as_str()), ("app", "example", "latest"));
        assert!(!t[0].paused);
        assert_eq!(t[0].source(), "app/example:latest");
    }

    #[test]
    fn the_seed_schema_with_namespace_and_string_paused() {
        let text = r#"[{"from":{"kind":"ImageStreamTag","name":"example:latest","namespace":"myapp"},
            "fieldPath":"spec.template.spec.containers[?(@.name='web')].image","paused":"true"},
            {"from":{"kind":"ImageStreamTag","name":"b:1"},"fieldPath":"spec.containers[0].image","paused":false}]"#;
        let t = parse_triggers(text, "app").unwrap();
        assert_eq!((t[0].namespace.as_str(), t[0].paused), ("myapp", true));
        assert_eq!((t[1].namespace.as_str(), t[1].paused), ("app", false));
    }

    #[test]
    fn malformed_annotations_say_what_is_wrong() {
        let cases = [
            ("not json", "not a JSON list"),
            (r#"{"from":{}}"#, "not a JSON list"),
            (
                r#"[{"from":{"kind":"DockerImage","name":"a:b"},"fieldPath":"spec.containers[0].image"}]"#,
                "only ImageStreamTag",
            ),
            (
                r#"[{"from":{"kind":"ImageStreamTag","name":"nocolon"},"fieldPath":"spec.containers[0].image"}]"#,
                "not STREAM:TAG",
            ),
            (
                r#"[{"from":{"kind":"ImageStreamTag","name":"Bad Name:x"},"fieldPath":"spec.containers[0].image"}]"#,
                "not STREAM:TAG",
            ),
            (
                r#"[{"from":{"kind":"ImageStreamTag","name":"a:b"},"fieldPath":"spec.replicas"}]"#,
                "does not name a container",
            ),
            (
                r#"[{"from":{"kind":"ImageStreamTag","name":"a:b"},"fieldPath":"spec.containers[0].image","paused":"maybe"}]"#,
                "neither true nor false",
            ),
        ];
        for (text, says) in cases {
            let e = parse_triggers(text, "ns").unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn an_out_of_date_field_is_tested_then_replaced() {
        let t = parse_triggers(SEED, "app").unwrap();
        let spec = "reg.example:5000/app/example@sha256:aaaa".to_owned();
        let p = plan(&deployment("example:latest"), &t, |_| Some(spec.clone()));
        assert_eq!(
            p.ops,
            vec![
                json!({"op": "test", "path": "/spec/template/spec/containers/1/image", "value": "example:latest"}),
                json!({"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": spec}),
            ]
        );
        assert!(p.problems.is_empty());
        // The patch applies, and afterwards there is nothing left to do.
        let mut d = deployment("example:latest");
        json_patch::patch(&mut d, &serde_json::from_value::<json_patch::Patch>(json!(p.ops)).unwrap()).unwrap();
        assert_eq!(d["spec"]["template"]["spec"]["containers"][1]["image"], json!(spec));
        assert_eq!(plan(&d, &t, |_| Some(spec.clone())), Plan::default());
        // A concurrent change of the field makes the `test` fail instead of being overwritten.
        let mut moved = deployment("someone/else:1");
        let stale = serde_json::from_value::<json_patch::Patch>(json!(p.ops)).unwrap();
        assert!(json_patch::patch(&mut moved, &stale).is_err());
    }

    #[test]
    fn paused_triggers_and_missing_tags() {
        let mut t = parse_triggers(SEED, "app").unwrap();
        assert_eq!(
            plan(&deployment("x"), &t, |_| None).problems,
            vec![Problem::TagNotFound { source: "app/example:latest".into() }]
        );
        t[0].paused = true;
        assert_eq!(plan(&deployment("x"), &t, |_| Some("y".into())), Plan::default());
    }

    #[test]
    fn a_missing_container_is_a_problem_not_a_patch() {
        let t = parse_triggers(
            r#"[{"from":{"kind":"ImageStreamTag","name":"a:b"},"fieldPath":"spec.template.spec.containers[?(@.name='db')].image"}]"#,
            "app",
        )
        .unwrap();
        let p = plan(&deployment("x"), &t, |_| Some("y".into()));
        assert!(p.ops.is_empty());
        assert!(matches!(&p.problems[..], [Problem::Field(PathError::NoMatch { .. })]));
    }

    #[test]
    fn what_set_triggers_writes_reads_back() {
        let written = annotation_value(&[ObjectFieldTrigger {
            from: TriggerSource {
                kind: "ImageStreamTag".into(),
                name: "example:latest".into(),
                namespace: None,
                api_version: None,
            },
            field_path: FieldPath::container_image("spec.template.spec", "web").to_string(),
            paused: false,
        }]);
        assert_eq!(
            written,
            r#"[{"from":{"kind":"ImageStreamTag","name":"example:latest"},"fieldPath":"spec.template.spec.containers[?(@.name=='web')].image"}]"#
        );
        assert_eq!(parse_triggers(&written, "app").unwrap(), parse_triggers(SEED, "app").unwrap());
    }
}
