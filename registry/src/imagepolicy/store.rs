//! The image policy objects in the metadata store (`imageconfig/<resource>/<name>`): create, read, replace,
//! patch and delete with compare-and-swap on their versions (a version is the object's `resourceVersion`), the
//! `Image` `cluster` seeded from `allowedRegistriesForImport` of the configuration, and watches. Called by the
//! HTTP edge (`http::config_api`) and by [`super::ImagePolicy`], which caches the [`super::Policy`] they make.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::Value;
use storage_backends::meta::{encode, Expect};
use storage_backends::{keys, MetadataStore, MetadataStoreExt, StoreError, Txn};
use streams::objects::PatchKind;
use streams::watch::EventType;

use super::model::{self, Kind, Object, RegistryLocation, CLUSTER};

/// What can go wrong with a policy object, in API terms.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{} \"{name}\" not found", kind.qualified())]
    NotFound { kind: Kind, name: String },
    #[error("{} \"{name}\" already exists", kind.qualified())]
    AlreadyExists { kind: Kind, name: String },
    #[error("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your \
             changes to the latest version and try again", kind.qualified())]
    Conflict { kind: Kind, name: String },
    #[error("{} \"{name}\" is invalid: {message}", kind.qualified())]
    Invalid { kind: Kind, name: String, message: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A watch's events: the type and the object (for `DELETED`, its last metadata).
pub type PolicyWatch = BoxStream<'static, Result<(EventType, Object), PolicyError>>;

/// The stored objects, shared by every replica through the metadata store.
#[derive(Clone)]
pub struct PolicyStore {
    meta: Arc<dyn MetadataStore>,
    /// `allowedRegistriesForImport` of the configuration: the `cluster` object's first value.
    seed: Vec<String>,
    /// The registry's own host, shown as `status.internalRegistryHostname`.
    internal_host: String,
}

impl PolicyStore {
    pub fn new(meta: Arc<dyn MetadataStore>, seed: Vec<String>, internal_host: String) -> PolicyStore {
        PolicyStore { meta, seed, internal_host }
    }

    pub fn meta(&self) -> &Arc<dyn MetadataStore> {
        &self.meta
    }

    /// The `cluster` object's spec when none is stored: the configuration's `allowedRegistriesForImport`.
    pub fn seed_spec(&self) -> Value {
        let allowed: Vec<RegistryLocation> =
            self.seed.iter().map(|d| RegistryLocation { domain_name: d.clone(), insecure: false }).collect();
        serde_json::to_value(model::ImageSpec { allowed_registries_for_import: allowed, ..Default::default() })
            .unwrap_or_default()
    }

    /// Stores the `cluster` object with the seed spec unless one is stored (every start calls this; the first
    /// replica wins, and an administrator's edits are never overwritten).
    pub async fn seed(&self) -> Result<(), StoreError> {
        let key = keys::image_config(Kind::Image.resource(), CLUSTER);
        if self.meta.get_latest(&key).await?.is_some() {
            return Ok(());
        }
        let o = fresh(Kind::Image, CLUSTER, self.seed_spec(), Default::default(), Default::default());
        match self.meta.commit(Txn::new().expect(key.clone(), Expect::Absent).put(key, encode(&o))).await {
            Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every stored object of every kind (what a [`super::Policy`] is made from).
    pub async fn all(&self) -> Result<Vec<(Kind, Object)>, StoreError> {
        let mut out = Vec::new();
        for kind in Kind::ALL {
            for (o, _) in self.meta.list_all_json::<Object>(&keys::image_configs(kind.resource())).await? {
                out.push((kind, o));
            }
        }
        Ok(out)
    }

    /// Adds what is computed on read: `apiVersion`, `kind`, `resourceVersion`, and the `Image`'s status.
    fn shown(&self, kind: Kind, mut o: Object, version: u64) -> Object {
        o.api_version = kind.api_version().into();
        o.kind = kind.kind().into();
        o.metadata.resource_version = version.to_string();
        if kind == Kind::Image {
            let external = o.spec.get("externalRegistryHostnames").cloned().unwrap_or(Value::Array(vec![]));
            o.status = serde_json::json!({
                "internalRegistryHostname": self.internal_host,
                "externalRegistryHostnames": external,
            });
        }
        o
    }

    /// The objects of `kind` and the store's revision (the list's `resourceVersion`).
    pub async fn list(&self, kind: Kind) -> Result<(Vec<Object>, u64), PolicyError> {
        let revision = self.meta.revision().await?;
        let items = self.meta.list_all(&keys::image_configs(kind.resource())).await?;
        let mut out = Vec::new();
        for (key, v) in items {
            let o: Object = storage_backends::meta::decode(&key, &v.value)?;
            out.push(self.shown(kind, o, v.version));
        }
        Ok((out, revision))
    }

    pub async fn get(&self, kind: Kind, name: &str) -> Result<Object, PolicyError> {
        let not_found = || PolicyError::NotFound { kind, name: name.to_owned() };
        if !model::valid_name(name) {
            return Err(not_found());
        }
        let key = keys::image_config(kind.resource(), name);
        match self.meta.get_latest_json::<Object>(&key).await? {
            Some((o, v)) => Ok(self.shown(kind, o, v)),
            None if kind == Kind::Image && name == CLUSTER => {
                // Not seeded yet (a store written by an older version): the seed is what is in force.
                let o = fresh(kind, CLUSTER, self.seed_spec(), Default::default(), Default::default());
                Ok(self.shown(kind, o, 0))
            }
            None => Err(not_found()),
        }
    }

    /// Creates an object sent by a client.
    pub async fn create(&self, kind: Kind, input: Object) -> Result<Object, PolicyError> {
        let name = input.metadata.name.clone();
        check_kind(kind, &input)?;
        let spec = model::validate(kind, &name, &input.spec).map_err(|m| invalid(kind, &name, m))?;
        let key = keys::image_config(kind.resource(), &name);
        let o = fresh(kind, &name, spec, input.metadata.labels, input.metadata.annotations);
        match self.meta.commit(Txn::new().expect(key.clone(), Expect::Absent).put(key, encode(&o))).await {
            Ok(rev) => Ok(self.shown(kind, o, rev)),
            Err(StoreError::Conflict { .. }) => Err(PolicyError::AlreadyExists { kind, name }),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces an object's spec, labels and annotations; a `resourceVersion` in `input` must be the stored one.
    pub async fn replace(&self, kind: Kind, name: &str, input: Object) -> Result<Object, PolicyError> {
        check_kind(kind, &input)?;
        if !input.metadata.name.is_empty() && input.metadata.name != name {
            return Err(PolicyError::BadRequest(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                input.metadata.name
            )));
        }
        let spec = model::validate(kind, name, &input.spec).map_err(|m| invalid(kind, name, m))?;
        let key = keys::image_config(kind.resource(), name);
        let (current, version) = match self.meta.get_latest_json::<Object>(&key).await? {
            Some(found) => found,
            None if kind == Kind::Image && name == CLUSTER => {
                let o = fresh(kind, CLUSTER, self.seed_spec(), Default::default(), Default::default());
                self.meta.commit(Txn::new().expect(key.clone(), Expect::Absent).put(key.clone(), encode(&o))).await?;
                self.meta
                    .get_latest_json::<Object>(&key)
                    .await?
                    .ok_or_else(|| PolicyError::Conflict { kind, name: name.to_owned() })?
            }
            None => return Err(PolicyError::NotFound { kind, name: name.to_owned() }),
        };
        let expected = match input.metadata.resource_version.as_str() {
            "" => version,
            rv => rv.parse().map_err(|_| PolicyError::Conflict { kind, name: name.to_owned() })?,
        };
        let mut next = current.clone();
        if next.spec != spec {
            next.metadata.generation = Some(next.metadata.generation.unwrap_or(1) + 1);
        }
        next.spec = spec;
        next.metadata.labels = input.metadata.labels;
        next.metadata.annotations = input.metadata.annotations;
        next.status = Value::Null;
        match self.meta.commit(Txn::new().expect(key.clone(), Expect::Version(expected)).put(key, encode(&next))).await
        {
            Ok(rev) => Ok(self.shown(kind, next, rev)),
            Err(StoreError::Conflict { .. }) => Err(PolicyError::Conflict { kind, name: name.to_owned() }),
            Err(e) => Err(e.into()),
        }
    }

    /// Applies a merge or strategic merge patch (lists are replaced whole: these kinds have no keyed lists).
    /// Without a `resourceVersion` in the patch, a concurrent write makes it try again on the new object.
    pub async fn patch(&self, kind: Kind, name: &str, patch: &Value, how: PatchKind) -> Result<Object, PolicyError> {
        let pinned = patch.pointer("/metadata/resourceVersion").is_some();
        for _ in 0..5 {
            let current = self.get(kind, name).await?;
            let mut doc = serde_json::to_value(&current).unwrap_or_default();
            streams::objects::apply_patch(&mut doc, patch, how);
            let next: Object = serde_json::from_value(doc)
                .map_err(|e| PolicyError::BadRequest(format!("the patched object is not valid: {e}")))?;
            match self.replace(kind, name, next).await {
                Err(PolicyError::Conflict { .. }) if !pinned => continue,
                other => return other,
            }
        }
        Err(PolicyError::Conflict { kind, name: name.to_owned() })
    }

    pub async fn delete(&self, kind: Kind, name: &str) -> Result<Object, PolicyError> {
        if kind == Kind::Image {
            return Err(PolicyError::NotAllowed(
                "images.config.openshift.io \"cluster\" cannot be deleted; edit its spec instead".into(),
            ));
        }
        let current = self.get(kind, name).await?;
        let key = keys::image_config(kind.resource(), name);
        let version: u64 = current.metadata.resource_version.parse().unwrap_or(0);
        match self.meta.commit(Txn::new().expect(key.clone(), Expect::Version(version)).delete(key)).await {
            Ok(_) => Ok(current),
            Err(StoreError::Conflict { .. }) => Err(PolicyError::Conflict { kind, name: name.to_owned() }),
            Err(e) => Err(e.into()),
        }
    }

    /// Watches the objects of `kind` (one name when given) from `since` (`None`/0: every current object comes
    /// as `ADDED`; else objects changed or deleted since then first, then the store's change feed).
    pub fn watch(&self, kind: Kind, name: Option<String>, since: Option<u64>) -> PolicyWatch {
        let this = self.clone();
        let prefix = keys::image_configs(kind.resource());
        let feed = self.meta.subscribe();
        struct State {
            feed: tokio::sync::broadcast::Receiver<storage_backends::KvEvent>,
            queue: std::collections::VecDeque<(EventType, Object)>,
            known: BTreeMap<String, Object>,
            started: bool,
        }
        let state = State { feed, queue: Default::default(), known: BTreeMap::new(), started: false };
        let wanted = move |n: &str| name.as_deref().is_none_or(|w| w == n);
        futures::stream::unfold(Some(state), move |state| {
            let (this, prefix, wanted) = (this.clone(), prefix.clone(), wanted.clone());
            async move {
                let mut s = state?;
                loop {
                    if let Some(e) = s.queue.pop_front() {
                        return Some((Ok(e), Some(s)));
                    }
                    if !s.started {
                        s.started = true;
                        let since = since.filter(|v| *v > 0);
                        let current = match this.list(kind).await {
                            Ok((items, _)) => items,
                            Err(e) => return Some((Err(e), None)),
                        };
                        if let Some(since) = since {
                            match this.meta.deleted_since(&prefix, since).await {
                                Ok(gone) => {
                                    for (key, v) in gone {
                                        let n = key.trim_start_matches(&prefix).to_owned();
                                        if wanted(&n) && !current.iter().any(|o| o.metadata.name == n) {
                                            let mut o = skeleton(kind, &n);
                                            o.metadata.resource_version = v.version.to_string();
                                            s.queue.push_back((EventType::Deleted, o));
                                        }
                                    }
                                }
                                Err(e) => return Some((Err(e.into()), None)),
                            }
                        }
                        for o in current.into_iter().filter(|o| wanted(&o.metadata.name)) {
                            let rv: u64 = o.metadata.resource_version.parse().unwrap_or(0);
                            s.known.insert(o.metadata.name.clone(), o.clone());
                            match since {
                                None => s.queue.push_back((EventType::Added, o)),
                                Some(since) if rv > since => s.queue.push_back((EventType::Modified, o)),
                                Some(_) => {}
                            }
                        }
                        continue;
                    }
                    let ev = match s.feed.recv().await {
                        Ok(ev) => ev,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            // Fell behind: report every current object again as modified.
                            match this.list(kind).await {
                                Ok((items, _)) => {
                                    for o in items.into_iter().filter(|o| wanted(&o.metadata.name)) {
                                        s.known.insert(o.metadata.name.clone(), o.clone());
                                        s.queue.push_back((EventType::Modified, o));
                                    }
                                }
                                Err(e) => return Some((Err(e), None)),
                            }
                            continue;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    };
                    let Some(n) = ev.key.strip_prefix(&prefix).map(str::to_owned) else { continue };
                    if !wanted(&n) {
                        continue;
                    }
                    match ev.value {
                        None => {
                            let mut o = s.known.remove(&n).unwrap_or_else(|| skeleton(kind, &n));
                            o.metadata.resource_version = ev.revision.to_string();
                            s.queue.push_back((EventType::Deleted, o));
                        }
                        Some(bytes) => {
                            let Ok(o) = serde_json::from_slice::<Object>(&bytes) else { continue };
                            let o = this.shown(kind, o, ev.revision);
                            let t = if s.known.contains_key(&n) { EventType::Modified } else { EventType::Added };
                            s.known.insert(n, o.clone());
                            s.queue.push_back((t, o));
                        }
                    }
                }
            }
        })
        .boxed()
    }
}

fn invalid(kind: Kind, name: &str, message: String) -> PolicyError {
    PolicyError::Invalid { kind, name: name.to_owned(), message }
}

/// A sent object's `apiVersion` and `kind`, when given, must be those of the route.
fn check_kind(kind: Kind, input: &Object) -> Result<(), PolicyError> {
    let ok_version = input.api_version.is_empty() || input.api_version == kind.api_version();
    let ok_kind = input.kind.is_empty() || input.kind == kind.kind();
    if ok_version && ok_kind {
        return Ok(());
    }
    Err(PolicyError::BadRequest(format!(
        "the object is {} {}, this route serves {} {}",
        input.api_version,
        input.kind,
        kind.api_version(),
        kind.kind()
    )))
}

fn skeleton(kind: Kind, name: &str) -> Object {
    let mut o = Object { api_version: kind.api_version().into(), kind: kind.kind().into(), ..Object::default() };
    o.metadata.name = name.to_owned();
    o
}

/// A new object as stored: server-set metadata, the canonical spec.
fn fresh(
    kind: Kind,
    name: &str,
    spec: Value,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
) -> Object {
    let mut o = skeleton(kind, name);
    o.metadata.uid = uuid::Uuid::new_v4().to_string();
    o.metadata.creation_timestamp = Some(Utc::now());
    o.metadata.generation = Some(1);
    o.metadata.labels = labels;
    o.metadata.annotations = annotations;
    o.spec = spec;
    o
}
