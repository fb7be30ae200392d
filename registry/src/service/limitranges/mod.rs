//! LimitRanges: a namespace's `v1` `LimitRange` objects (`spec.limits[]`, each a `type` and resource → quantity
//! maps), kept as given with every quantity validated, stored through the `MetadataStore` seam; and the one limit
//! Tributary enforces from them, `openshift.io/Image` `max.storage` ([`ImageLimit`]: the largest image a namespace
//! takes, the smallest such limit when several say so). Served by `http::limitranges`; read by the manifest PUT
//! ([`super::manifests`], through the cached [`ImageLimits`]) and by the pruner (`crate::gc::prune`, through
//! [`image_limits`]). Knows nothing of HTTP.

pub mod quantity;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use names::Namespace;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use storage_backends::meta::{decode, encode};
use storage_backends::{keys, Expect, MetadataStore, MetadataStoreExt, StoreError, Txn};
use streams::patch::PatchKind;

use self::quantity::{Quantity, SYNTAX};
use super::cached::{About, FeedCached};
use super::{Registry, RegistryError};

/// The limit type whose `max.storage` caps the size of an image (OpenShift's `imagev1.LimitTypeImage`).
pub const IMAGE_LIMIT_TYPE: &str = "openshift.io/Image";
/// The resource of an image's size.
pub const STORAGE: &str = "storage";
/// The resource lists a limit may carry (`LimitRangeItem`'s fields besides `type`).
pub const LISTS: [&str; 5] = ["max", "min", "default", "defaultRequest", "maxLimitRequestRatio"];

/// A LimitRange's name: a DNS-1123 subdomain.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LimitRangeName(String);
names::string_newtype!(LimitRangeName);

impl std::str::FromStr for LimitRangeName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        super::secrets::check_subdomain("limitrange", s)?;
        Ok(LimitRangeName(s.to_owned()))
    }
}

/// A stored LimitRange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitRange {
    pub name: LimitRangeName,
    pub namespace: Namespace,
    pub uid: String,
    pub created: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    pub limits: Vec<LimitRangeItem>,
}

/// One `spec.limits[]` item: its type and its resource lists ([`LISTS`]: list → resource → quantity).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitRangeItem {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub lists: BTreeMap<String, BTreeMap<String, Quantity>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LimitRangeError {
    #[error("limitranges \"{0}\" not found")]
    NotFound(String),
    #[error("limitranges \"{0}\" already exists")]
    AlreadyExists(String),
    #[error(
        "Operation cannot be fulfilled on limitranges \"{0}\": the object has been modified; please apply your \
         changes to the latest version and try again"
    )]
    Conflict(String),
    /// What is wrong, field by field (the field's path, and what is wrong with it).
    #[error("LimitRange \"{name}\" is invalid: {}", causes_text(causes))]
    Invalid { name: String, causes: Vec<(String, String)> },
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Causes as Kubernetes writes them in a message: `field: what`, several in brackets.
fn causes_text(causes: &[(String, String)]) -> String {
    let each: Vec<String> = causes.iter().map(|(field, what)| format!("{field}: {what}")).collect();
    match each.len() {
        1 => each.into_iter().next().unwrap_or_default(),
        _ => format!("[{}]", each.join(", ")),
    }
}

impl From<StoreError> for LimitRangeError {
    fn from(e: StoreError) -> Self {
        LimitRangeError::Registry(e.into())
    }
}

impl LimitRange {
    /// The object in Kubernetes' shape (`v1` `LimitRange`).
    pub fn to_kube(&self, resource_version: u64) -> Value {
        let mut metadata = json!({
            "name": self.name, "namespace": self.namespace, "uid": self.uid,
            "resourceVersion": resource_version.to_string(), "creationTimestamp": self.created,
        });
        if !self.labels.is_empty() {
            metadata["labels"] = json!(self.labels);
        }
        if !self.annotations.is_empty() {
            metadata["annotations"] = json!(self.annotations);
        }
        json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": metadata, "spec": {"limits": self.limits}})
    }

    /// Reads a `LimitRange` as a client sends it, into namespace `ns`: every quantity is checked (malformed or
    /// negative: [`LimitRangeError::Invalid`], every cause named); fields a limit does not have are dropped.
    pub fn from_kube(ns: &Namespace, doc: &Value) -> Result<LimitRange, LimitRangeError> {
        let raw_name = doc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        let invalid = |field: &str, what: String| LimitRangeError::Invalid {
            name: raw_name.to_owned(),
            causes: vec![(field.to_owned(), what)],
        };
        if let Some(kind) = doc.get("kind").and_then(Value::as_str).filter(|k| *k != "LimitRange") {
            return Err(LimitRangeError::BadRequest(format!("a LimitRange is expected here, not a {kind}")));
        }
        if let Some(other) = doc.pointer("/metadata/namespace").and_then(Value::as_str) {
            if other != ns.as_str() {
                return Err(LimitRangeError::BadRequest(format!(
                    "the namespace of the provided object ({other}) does not match the namespace sent on the \
                     request ({ns})"
                )));
            }
        }
        let name: LimitRangeName = match raw_name {
            "" => return Err(invalid("metadata.name", "Required value: name is required".into())),
            n => n.parse().map_err(|m| invalid("metadata.name", format!("Invalid value: \"{n}\": {m}")))?,
        };
        let strings = |field: &str| -> Result<BTreeMap<String, String>, LimitRangeError> {
            match doc.pointer(&format!("/metadata/{field}")) {
                None | Some(Value::Null) => Ok(BTreeMap::new()),
                Some(v) => serde_json::from_value(v.clone())
                    .map_err(|e| LimitRangeError::BadRequest(format!("metadata.{field}: {e}"))),
            }
        };
        let (labels, annotations) = (strings("labels")?, strings("annotations")?);
        let items = match doc.pointer("/spec/limits") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(items)) => &items[..],
            Some(_) => return Err(LimitRangeError::BadRequest("spec.limits: expected an array".into())),
        };
        let mut causes = Vec::new();
        let mut limits = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("spec.limits[{i}]");
            let kind = match item.get("type").and_then(Value::as_str) {
                Some(k) if !k.is_empty() => k.to_owned(),
                _ => {
                    causes.push((format!("{at}.type"), "Required value".to_owned()));
                    String::new()
                }
            };
            let mut lists = BTreeMap::new();
            for list in LISTS {
                let Some(given) = item.get(list).filter(|v| !v.is_null()) else { continue };
                let Some(given) = given.as_object() else {
                    causes.push((
                        format!("{at}.{list}"),
                        format!("Invalid value: {given}: expected resource: quantity pairs"),
                    ));
                    continue;
                };
                let mut quantities = BTreeMap::new();
                for (resource, value) in given {
                    let text = match value {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        other => other.to_string(),
                    };
                    match text.parse::<Quantity>() {
                        Ok(q) if q.is_negative() => causes.push((
                            format!("{at}.{list}[{resource}]"),
                            format!("Invalid value: \"{text}\": must be greater than or equal to 0"),
                        )),
                        Ok(q) => {
                            quantities.insert(resource.clone(), q);
                        }
                        Err(_) => causes
                            .push((format!("{at}.{list}[{resource}]"), format!("Invalid value: \"{text}\": {SYNTAX}"))),
                    }
                }
                lists.insert(list.to_owned(), quantities);
            }
            limits.push(LimitRangeItem { kind, lists });
        }
        if !causes.is_empty() {
            return Err(LimitRangeError::Invalid { name: raw_name.to_owned(), causes });
        }
        Ok(LimitRange {
            name,
            namespace: ns.clone(),
            uid: uuid::Uuid::new_v4().to_string(),
            created: Utc::now(),
            labels,
            annotations,
            limits,
        })
    }

    /// This LimitRange's smallest `openshift.io/Image` `max.storage`, if it sets one.
    pub fn image_limit(&self) -> Option<ImageLimit> {
        self.limits
            .iter()
            .filter(|l| l.kind == IMAGE_LIMIT_TYPE)
            .filter_map(|l| l.lists.get("max")?.get(STORAGE))
            .map(|q| ImageLimit { bytes: q.floor_units(), quantity: q.clone(), limit_range: self.name.to_string() })
            .min_by_key(|l| l.bytes)
    }
}

/// The largest image a namespace takes: the smallest `openshift.io/Image` `max.storage` of its LimitRanges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLimit {
    /// The quantity in whole bytes (rounded down: a size exceeds the quantity exactly when it exceeds this).
    pub bytes: u64,
    /// As written in the LimitRange.
    pub quantity: Quantity,
    /// The LimitRange that sets it.
    pub limit_range: String,
}

impl ImageLimit {
    /// Whether an image of `size` bytes is over the limit.
    pub fn exceeded_by(&self, size: u64) -> bool {
        size > self.bytes
    }
}

/// Every namespace's image limit, read from the store now.
pub async fn image_limits(meta: &dyn MetadataStore) -> Result<BTreeMap<Namespace, ImageLimit>, StoreError> {
    let mut out: BTreeMap<Namespace, ImageLimit> = BTreeMap::new();
    for (key, v) in meta.list_all(keys::LIMIT_RANGES).await? {
        let lr: LimitRange = decode(&key, &v.value)?;
        let Some(limit) = lr.image_limit() else { continue };
        match out.get(&lr.namespace) {
            Some(known) if known.bytes <= limit.bytes => {}
            _ => {
                out.insert(lr.namespace.clone(), limit);
            }
        }
    }
    Ok(out)
}

/// Every namespace's image limit, cached until the change feed reports a LimitRange written (on any replica) or
/// this replica writes one. What the manifest PUT asks, without a store round trip once loaded.
pub struct ImageLimits {
    meta: Arc<dyn MetadataStore>,
    cached: FeedCached<Arc<BTreeMap<Namespace, ImageLimit>>>,
}

impl ImageLimits {
    pub fn new(meta: Arc<dyn MetadataStore>) -> ImageLimits {
        let about: About<Arc<BTreeMap<Namespace, ImageLimit>>> =
            |event| event.key.starts_with(keys::LIMIT_RANGES).then_some(None);
        ImageLimits { cached: FeedCached::new(Some(meta.subscribe()), about), meta }
    }

    /// `ns`'s image limit, if it has one.
    pub async fn of(&self, ns: &Namespace) -> Result<Option<ImageLimit>, StoreError> {
        let all = self.cached.get_or_load(|| async { Ok(Arc::new(image_limits(&*self.meta).await?)) }).await?;
        Ok(all.get(ns).cloned())
    }

    /// Drops the cache (a LimitRange was written through this replica; the feed may tell later).
    pub fn forget(&self) {
        self.cached.forget();
    }
}

impl Registry {
    pub async fn create_limit_range(&self, lr: LimitRange) -> Result<u64, LimitRangeError> {
        let key = keys::limit_range(&lr.namespace, lr.name.as_str());
        let txn = Txn::new().expect(key.clone(), Expect::Absent).put(key, encode(&lr));
        let result = self.meta.commit(txn).await;
        self.image_limits.forget();
        match result {
            Ok(rev) => Ok(rev),
            Err(StoreError::Conflict { .. }) => Err(LimitRangeError::AlreadyExists(lr.name.into())),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get_limit_range(&self, ns: &Namespace, name: &str) -> Result<(LimitRange, u64), LimitRangeError> {
        self.meta
            .get_latest_json::<LimitRange>(&keys::limit_range(ns, name))
            .await?
            .ok_or_else(|| LimitRangeError::NotFound(name.into()))
    }

    pub async fn list_limit_ranges(&self, ns: &Namespace) -> Result<Vec<(LimitRange, u64)>, LimitRangeError> {
        Ok(self.meta.list_all_json::<LimitRange>(&keys::limit_ranges_in(ns)).await?)
    }

    /// Replaces `name` with the object `doc` (a PUT): compare-and-swap on the `resourceVersion` it carries, or
    /// on the stored one when it carries none (an unconditional update, as Kubernetes allows for LimitRanges).
    /// The uid and creation time stay.
    pub async fn replace_limit_range(
        &self,
        ns: &Namespace,
        name: &str,
        doc: &Value,
    ) -> Result<(LimitRange, u64), LimitRangeError> {
        let mut next = LimitRange::from_kube(ns, doc)?;
        if next.name.as_str() != name {
            return Err(LimitRangeError::BadRequest(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                next.name
            )));
        }
        let (current, version) = self.get_limit_range(ns, name).await?;
        let expected = match doc.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
            None | Some("") => version,
            Some(rv) => rv.parse().map_err(|_| LimitRangeError::Conflict(name.into()))?,
        };
        (next.uid, next.created) = (current.uid, current.created);
        let key = keys::limit_range(ns, name);
        let txn = Txn::new().expect(key.clone(), Expect::Version(expected)).put(key, encode(&next));
        let result = self.meta.commit(txn).await;
        self.image_limits.forget();
        match result {
            Ok(rev) => Ok((next, rev)),
            Err(StoreError::Conflict { .. }) => Err(LimitRangeError::Conflict(name.into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Applies a merge or strategic merge patch (`spec.limits` has no merge key: it is replaced whole, as in
    /// Kubernetes). Without a `resourceVersion` in the patch, a concurrent write makes it try again.
    pub async fn patch_limit_range(
        &self,
        ns: &Namespace,
        name: &str,
        patch: &Value,
        how: PatchKind,
    ) -> Result<(LimitRange, u64), LimitRangeError> {
        let pinned = patch.pointer("/metadata/resourceVersion").is_some();
        for _ in 0..5 {
            let (current, version) = self.get_limit_range(ns, name).await?;
            let mut doc = current.to_kube(version);
            streams::patch::apply_patch(&mut doc, patch, how);
            match self.replace_limit_range(ns, name, &doc).await {
                Err(LimitRangeError::Conflict(_)) if !pinned => continue,
                other => return other,
            }
        }
        Err(LimitRangeError::Conflict(name.into()))
    }

    pub async fn delete_limit_range(&self, ns: &Namespace, name: &str) -> Result<LimitRange, LimitRangeError> {
        let key = keys::limit_range(ns, name);
        let (current, version) = self.get_limit_range(ns, name).await?;
        let result = self.meta.commit(Txn::new().expect(key.clone(), Expect::Version(version)).delete(key)).await;
        self.image_limits.forget();
        match result {
            Ok(_) => Ok(current),
            Err(StoreError::Conflict { .. }) => Err(LimitRangeError::Conflict(name.into())),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns() -> Namespace {
        "team".parse().unwrap()
    }

    #[test]
    fn limit_ranges_round_trip_and_give_the_smallest_image_limit() {
        let doc = json!({
            "apiVersion": "v1", "kind": "LimitRange",
            "metadata": {"name": "images", "labels": {"a": "b"}},
            "spec": {"limits": [
                {"type": "openshift.io/Image", "max": {"storage": "1Gi"}},
                {"type": "openshift.io/Image", "max": {"storage": "140Mi"}, "unknownField": 1},
                {"type": "Container", "max": {"cpu": "2", "memory": 1000}, "default": {"cpu": "500m"},
                 "maxLimitRequestRatio": {"cpu": "10"}},
                {"type": "openshift.io/ImageStream", "max": {"openshift.io/image-tags": "20"}},
            ]},
        });
        let lr = LimitRange::from_kube(&ns(), &doc).unwrap();
        let limit = lr.image_limit().unwrap();
        assert_eq!((limit.bytes, limit.quantity.as_str(), limit.limit_range.as_str()), (140 << 20, "140Mi", "images"));
        assert!(limit.exceeded_by((140 << 20) + 1) && !limit.exceeded_by(140 << 20));
        let kube = lr.to_kube(9);
        assert_eq!(kube["metadata"]["resourceVersion"], "9");
        assert_eq!(kube["spec"]["limits"][2]["max"], json!({"cpu": "2", "memory": "1000"}), "numbers kept as text");
        assert_eq!(kube["spec"]["limits"][2]["maxLimitRequestRatio"], json!({"cpu": "10"}));
        assert!(kube["spec"]["limits"][1].get("unknownField").is_none());
        let again = LimitRange::from_kube(&ns(), &kube).unwrap();
        assert_eq!(again.limits, lr.limits, "round trip");
        assert_eq!(again.labels, lr.labels);
        let stored: LimitRange = serde_json::from_slice(&encode(&lr)).unwrap();
        assert_eq!(stored, lr);
        let none = LimitRange::from_kube(
            &ns(),
            &json!({"metadata": {"name": "cpu"}, "spec": {"limits": [
            {"type": "Container", "max": {"storage": "1"}}, {"type": "openshift.io/Image", "min": {"storage": "1"}}]}}),
        );
        assert_eq!(none.unwrap().image_limit(), None);
    }

    #[test]
    fn bad_limit_ranges_are_invalid_with_every_cause() {
        let doc = |limits: Value| json!({"metadata": {"name": "l"}, "spec": {"limits": limits}});
        let message = |d: Value| match LimitRange::from_kube(&ns(), &d) {
            Err(e @ LimitRangeError::Invalid { .. }) => e.to_string(),
            other => panic!("{other:?}"),
        };
        let m = message(doc(json!([{"type": "openshift.io/Image", "max": {"storage": "1Gx"}}])));
        assert_eq!(
            m,
            format!("LimitRange \"l\" is invalid: spec.limits[0].max[storage]: Invalid value: \"1Gx\": {SYNTAX}")
        );
        let m = message(doc(json!([{"type": "openshift.io/Image", "max": {"storage": "-1Mi"}}, {"max": {}}])));
        assert!(m.contains("[spec.limits[0].max[storage]: Invalid value: \"-1Mi\": must be greater than or equal to 0, spec.limits[1].type: Required value]"), "{m}");
        assert!(message(json!({"metadata": {"name": "Bad_Name"}})).contains("metadata.name"));
        assert!(message(json!({"metadata": {}})).contains("Required value"));
        let other_ns = json!({"metadata": {"name": "l", "namespace": "other"}});
        assert!(matches!(LimitRange::from_kube(&ns(), &other_ns), Err(LimitRangeError::BadRequest(_))));
    }
}
