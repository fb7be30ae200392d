//! Watching image streams and image stream tags (Kubernetes watch semantics: `ADDED`, `MODIFIED`, `DELETED`),
//! and the tag changes that webhooks report. Both read the metadata store's change feed
//! ([`storage_backends::MetadataStore::subscribe`]); a [`Watch`] subscribes before it reads the current state,
//! so no change falls between the two.
//!
//! The store keeps no history of old revisions, only tombstones of deleted streams and tag histories
//! ([`storage_backends::MetadataStore::deleted_since`]): a watch from an older `resourceVersion` first reports,
//! in revision order, every object deleted since then as `DELETED` and every object changed since then as
//! `MODIFIED`, then follows the feed. A `resourceVersion` older than the pruned tombstones is refused with
//! [`StoreError::Compacted`] (410 `Expired`: list again), as Kubernetes does after etcd's compaction. A watch that
//! falls behind the feed compares the current state with what it reported and catches up.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use names::{Namespace, RepositoryName, TagName};
use serde::Serialize;
use storage_backends::meta::decode;
use storage_backends::{keys, KvEvent, StoreError};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::Receiver;

use crate::model::{ImageStream, ImageStreamTag, NamedTagEventList, ObjectMeta, TagEvent, API_VERSION};
use crate::service::{Loaded, StreamError, StreamService};

/// What a watch reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// The object of a watch event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum WatchObject {
    Stream(Box<ImageStream>),
    Tag(Box<ImageStreamTag>),
}

impl WatchObject {
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            WatchObject::Stream(s) => &s.metadata,
            WatchObject::Tag(t) => &t.metadata,
        }
    }

    /// The object reduced to its kind and metadata: what a `DELETED` event carries.
    fn skeleton(&self) -> WatchObject {
        match self {
            WatchObject::Stream(s) => WatchObject::Stream(Box::new(ImageStream {
                kind: s.kind.clone(),
                api_version: s.api_version.clone(),
                metadata: s.metadata.clone(),
                ..ImageStream::default()
            })),
            WatchObject::Tag(t) => WatchObject::Tag(Box::new(ImageStreamTag {
                kind: t.kind.clone(),
                api_version: t.api_version.clone(),
                metadata: t.metadata.clone(),
                ..ImageStreamTag::default()
            })),
        }
    }
}

/// One watch event: `{"type": …, "object": …}` on the wire.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WatchEvent {
    #[serde(rename = "type")]
    pub kind: EventType,
    pub object: WatchObject,
}

/// The resource watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    ImageStreams,
    ImageStreamTags,
}

/// Which objects: a namespace (all when `None`) and optionally one name (`fieldSelector=metadata.name=…`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchScope {
    pub namespace: Option<Namespace>,
    pub name: Option<String>,
}

impl WatchScope {
    fn covers(&self, repo: &RepositoryName) -> bool {
        self.namespace.as_ref().is_none_or(|ns| ns == repo.namespace())
    }
}

type ObjectKey = (RepositoryName, Option<TagName>);

/// A running watch; [`Watch::next`] yields its events.
pub struct Watch {
    service: StreamService,
    what: Watched,
    scope: WatchScope,
    feed: Receiver<KvEvent>,
    since: Option<u64>,
    started: bool,
    /// What was reported of each object: its `resourceVersion` and skeleton.
    known: BTreeMap<ObjectKey, (u64, WatchObject)>,
    queue: VecDeque<WatchEvent>,
}

/// The stream a metadata key belongs to, if it is a stream, tag history or import conditions key.
fn repository_of_key(key: &str) -> Option<RepositoryName> {
    keys::repository_of_imagestream_key(key)
        .or_else(|| keys::istag_of_key(key).map(|(r, _)| r))
        .or_else(|| keys::import_conditions_of_key(key).map(|(r, _)| r))
}

impl StreamService {
    /// Starts watching `what` in `scope`. `since`: the `resourceVersion` the client has seen (`None` or 0: it
    /// has seen nothing, and every current object comes as `ADDED`).
    pub fn watch(&self, what: Watched, scope: WatchScope, since: Option<u64>) -> Watch {
        Watch {
            service: self.clone(),
            what,
            scope,
            feed: self.store.subscribe(),
            since: since.filter(|s| *s > 0),
            started: false,
            known: BTreeMap::new(),
            queue: VecDeque::new(),
        }
    }

    /// The watched objects of one loaded stream, with their `resourceVersion`s.
    async fn watched_objects(
        &self,
        what: Watched,
        scope: &WatchScope,
        loaded: &Loaded,
    ) -> Result<Vec<(ObjectKey, u64, WatchObject)>, StreamError> {
        let mut out = Vec::new();
        match what {
            Watched::ImageStreams => {
                if let Some(s) = self.assemble(loaded) {
                    let rv = loaded.resource_version();
                    out.push(((loaded.repo.clone(), None), rv, WatchObject::Stream(Box::new(s))));
                }
            }
            Watched::ImageStreamTags => {
                let Some((stream, _)) = &loaded.stream else { return Ok(out) };
                let mut tags: BTreeSet<TagName> = loaded.histories.keys().cloned().collect();
                tags.extend(stream.spec.tags.iter().filter_map(|t| t.name.parse().ok()));
                for tag in tags {
                    let wanted = format!("{}:{tag}", loaded.repo.stream());
                    if scope.name.as_ref().is_some_and(|n| *n != wanted) {
                        continue;
                    }
                    if let Some(t) = self.istag_of(loaded, &tag).await? {
                        let rv = t.metadata.resource_version.parse().unwrap_or(0);
                        out.push(((loaded.repo.clone(), Some(tag)), rv, WatchObject::Tag(Box::new(t))));
                    }
                }
            }
        }
        out.retain(|(_, _, o)| scope.name.as_ref().is_none_or(|n| *n == o.metadata().name));
        Ok(out)
    }
}

impl Watch {
    /// The next event; `None` when the store's feed has closed (the server is stopping).
    pub async fn next(&mut self) -> Option<Result<WatchEvent, StreamError>> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(Ok(e));
            }
            if !self.started {
                self.started = true;
                if let Err(e) = self.initial().await {
                    return Some(Err(e));
                }
                continue;
            }
            let mut repos = BTreeSet::new();
            match self.feed.recv().await {
                Ok(ev) => repos.extend(repository_of_key(&ev.key)),
                Err(RecvError::Lagged(_)) => {
                    if let Err(e) = self.resync().await {
                        return Some(Err(e));
                    }
                    continue;
                }
                Err(RecvError::Closed) => return None,
            }
            // Take what else has arrived, so that one transaction (or a burst) is reported once per object.
            for _ in 0..1024 {
                match self.feed.try_recv() {
                    Ok(ev) => repos.extend(repository_of_key(&ev.key)),
                    Err(TryRecvError::Lagged(_)) => {
                        repos.clear();
                        if let Err(e) = self.resync().await {
                            return Some(Err(e));
                        }
                        break;
                    }
                    Err(_) => break,
                }
            }
            repos.retain(|r| self.scope.covers(r));
            for repo in repos {
                if let Err(e) = self.refresh(&repo).await {
                    return Some(Err(e));
                }
            }
        }
    }

    async fn snapshot(&self) -> Result<Vec<(ObjectKey, u64, WatchObject)>, StreamError> {
        let mut out = Vec::new();
        for loaded in self.service.load_many(self.scope.namespace.as_ref()).await? {
            out.extend(self.service.watched_objects(self.what, &self.scope, &loaded).await?);
        }
        Ok(out)
    }

    async fn initial(&mut self) -> Result<(), StreamError> {
        let current = self.snapshot().await?;
        let Some(since) = self.since else {
            for (key, rv, object) in current {
                self.known.insert(key, (rv, object.skeleton()));
                self.queue.push_back(WatchEvent { kind: EventType::Added, object });
            }
            return Ok(());
        };
        let present: BTreeSet<&ObjectKey> = current.iter().map(|(k, _, _)| k).collect();
        let mut events: Vec<(u64, WatchEvent)> = self
            .deleted_since(since)
            .await?
            .into_iter()
            .filter(|(key, _)| !present.contains(key))
            .map(|(_, (rv, object))| (rv, WatchEvent { kind: EventType::Deleted, object }))
            .collect();
        for (key, rv, object) in current {
            self.known.insert(key, (rv, object.skeleton()));
            if rv > since {
                events.push((rv, WatchEvent { kind: EventType::Modified, object }));
            }
        }
        events.sort_by_key(|(rv, _)| *rv);
        self.queue.extend(events.into_iter().map(|(_, e)| e));
        Ok(())
    }

    /// The watched objects of the scope deleted after revision `since`, as `DELETED` events carry them (kind and
    /// metadata, `resourceVersion` the deleting revision): streams by their tombstones; tags by their histories'
    /// tombstones and by the spec tags of deleted streams.
    async fn deleted_since(&self, since: u64) -> Result<BTreeMap<ObjectKey, (u64, WatchObject)>, StreamError> {
        let store = &self.service.store;
        let ns = self.scope.namespace.as_ref();
        let mut out: BTreeMap<ObjectKey, (u64, WatchObject)> = BTreeMap::new();
        let mut put = |key: ObjectKey, rv: u64, object: WatchObject| {
            if self.scope.name.as_ref().is_none_or(|n| *n == object.metadata().name) {
                let newer = out.get(&key).is_none_or(|(seen, _)| rv > *seen);
                if newer {
                    out.insert(key, (rv, object));
                }
            }
        };
        let streams = ns.map(keys::imagestreams_in).unwrap_or_else(|| keys::IMAGESTREAMS.to_owned());
        for (key, last) in store.deleted_since(&streams, since).await? {
            let Some(repo) = keys::repository_of_imagestream_key(&key) else { continue };
            let stream = decode::<ImageStream>(&key, &last.value).unwrap_or_default();
            match self.what {
                Watched::ImageStreams => {
                    let mut metadata = stream.metadata;
                    metadata.name = repo.stream().to_string();
                    metadata.namespace = Some(repo.namespace().to_string());
                    metadata.resource_version = last.version.to_string();
                    let skeleton = ImageStream {
                        kind: ImageStream::kind(),
                        api_version: API_VERSION.into(),
                        metadata,
                        ..Default::default()
                    };
                    put((repo, None), last.version, WatchObject::Stream(Box::new(skeleton)));
                }
                Watched::ImageStreamTags => {
                    for tag in stream.spec.tags.iter().filter_map(|t| t.name.parse::<TagName>().ok()) {
                        let skeleton = tag_skeleton(&repo, &tag, last.version);
                        put((repo.clone(), Some(tag)), last.version, skeleton);
                    }
                }
            }
        }
        if self.what == Watched::ImageStreamTags {
            let histories = ns.map(keys::istags_in).unwrap_or_else(|| keys::ISTAGS.to_owned());
            for (key, last) in store.deleted_since(&histories, since).await? {
                let Some((repo, tag)) = keys::istag_of_key(&key) else { continue };
                let skeleton = tag_skeleton(&repo, &tag, last.version);
                put((repo, Some(tag)), last.version, skeleton);
            }
        }
        Ok(out)
    }

    /// Reports the difference between `current` (the objects of `among`, or of the whole scope) and what was
    /// reported before.
    fn report(&mut self, current: Vec<(ObjectKey, u64, WatchObject)>, among: Option<&RepositoryName>) {
        let present: BTreeSet<ObjectKey> = current.iter().map(|(k, _, _)| k.clone()).collect();
        let gone: Vec<ObjectKey> =
            self.known.keys().filter(|k| among.is_none_or(|r| &k.0 == r) && !present.contains(*k)).cloned().collect();
        for (key, rv, object) in current {
            let kind = match self.known.get(&key) {
                None => EventType::Added,
                Some((seen, _)) if rv > *seen => EventType::Modified,
                Some(_) => continue,
            };
            self.known.insert(key, (rv, object.skeleton()));
            self.queue.push_back(WatchEvent { kind, object });
        }
        for key in gone {
            if let Some((_, object)) = self.known.remove(&key) {
                self.queue.push_back(WatchEvent { kind: EventType::Deleted, object });
            }
        }
    }

    async fn refresh(&mut self, repo: &RepositoryName) -> Result<(), StreamError> {
        let loaded = self.service.load(repo).await?;
        let current = self.service.watched_objects(self.what, &self.scope, &loaded).await?;
        self.report(current, Some(repo));
        Ok(())
    }

    async fn resync(&mut self) -> Result<(), StreamError> {
        self.feed = self.feed.resubscribe();
        let current = self.snapshot().await?;
        self.report(current, None);
        Ok(())
    }
}

/// What a `DELETED` event says of an image stream tag.
fn tag_skeleton(repo: &RepositoryName, tag: &TagName, rv: u64) -> WatchObject {
    WatchObject::Tag(Box::new(ImageStreamTag {
        kind: ImageStreamTag::kind(),
        api_version: API_VERSION.into(),
        metadata: ObjectMeta {
            name: format!("{}:{tag}", repo.stream()),
            namespace: Some(repo.namespace().to_string()),
            resource_version: rv.to_string(),
            ..ObjectMeta::default()
        },
        ..ImageStreamTag::default()
    }))
}

/// Whether a watch failed because its `resourceVersion` is older than the deletions the store remembers.
pub fn is_expired(e: &StreamError) -> bool {
    matches!(e, StreamError::Store(StoreError::Compacted { .. }))
}

/// A change of one tag's history, as webhooks report it.
#[derive(Debug, Clone, PartialEq)]
pub struct TagChange {
    pub repo: RepositoryName,
    pub tag: TagName,
    /// What the tag points at now; `None` when the tag was deleted.
    pub current: Option<TagEvent>,
    pub revision: u64,
}

/// The tag change a metadata change is, if it is one (a tag history written or deleted).
pub fn tag_change(ev: &KvEvent) -> Option<TagChange> {
    let (repo, tag) = keys::istag_of_key(&ev.key)?;
    let current = match &ev.value {
        Some(bytes) => decode::<NamedTagEventList>(&ev.key, bytes).ok()?.items.into_iter().next(),
        None => None,
    };
    Some(TagChange { repo, tag, current, revision: ev.revision })
}
