//! [`StreamService`]: records ImageStreamMappings and answers every tag question from the streams' tag histories.
//! All writes are compare-and-swap transactions on the metadata store, retried on conflict, so concurrent pushes
//! and tag updates to one stream never lose a history event. A stream is read into memory ([`Loaded`]), changed
//! by the pure rules of [`crate::rules`], and written back expecting every key it writes to be unchanged (one
//! transaction, or a chain guarded by the stream key when too many tags change: [`crate::plan`]). The API's
//! object operations live in [`crate::objects`], watches in [`crate::watch`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use chrono::Utc;
use names::{Digest, RepositoryName, TagName};
use storage_backends::meta::{decode, encode};
use storage_backends::{keys, Expect, MetadataStore, MetadataStoreExt, StoreError, Txn};

use crate::model::{Image, ImageStream, NamedTagEventList, ObjectMeta, TagEvent, TagEventCondition, TagHead};
use crate::plan::{orphan_plan, Write};
use crate::rules::{self, StreamState};

/// How often a write is retried after losing a compare-and-swap race before giving up.
pub(crate) const MAX_RETRIES: usize = 64;

/// The kinds of objects errors name (as Kubernetes does: `imagestreams.image.openshift.io "app" not found`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    ImageStream,
    ImageStreamTag,
    ImageStreamImage,
    ImageStreamMapping,
    Image,
}

impl ObjectKind {
    /// The resource (plural, lower case): `imagestreams`.
    pub fn resource(self) -> &'static str {
        match self {
            ObjectKind::ImageStream => "imagestreams",
            ObjectKind::ImageStreamTag => "imagestreamtags",
            ObjectKind::ImageStreamImage => "imagestreamimages",
            ObjectKind::ImageStreamMapping => "imagestreammappings",
            ObjectKind::Image => "images",
        }
    }

    /// The kind: `ImageStream`.
    pub fn kind(self) -> &'static str {
        match self {
            ObjectKind::ImageStream => "ImageStream",
            ObjectKind::ImageStreamTag => "ImageStreamTag",
            ObjectKind::ImageStreamImage => "ImageStreamImage",
            ObjectKind::ImageStreamMapping => "ImageStreamMapping",
            ObjectKind::Image => "Image",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.image.openshift.io", self.resource())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A push into a stream that does not exist and may not be created.
    #[error("image stream {0} does not exist")]
    StreamNotFound(RepositoryName),
    #[error("{kind} \"{name}\" not found")]
    NotFound { kind: ObjectKind, name: String },
    #[error("{kind} \"{name}\" already exists")]
    AlreadyExists { kind: ObjectKind, name: String },
    /// The `resourceVersion` a client sent is not the current one.
    #[error(
        "Operation cannot be fulfilled on {kind} \"{name}\": the object has been modified; please apply your \
         changes to the latest version and try again"
    )]
    Conflict { kind: ObjectKind, name: String },
    #[error("{} \"{name}\" is invalid: {message}", kind.kind())]
    Invalid { kind: ObjectKind, name: String, message: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("too much contention on {0}; try again")]
    Contention(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What recording a mapping changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappingOutcome {
    pub created_stream: bool,
    pub created_image: bool,
    pub new_event: bool,
}

#[derive(Clone)]
pub struct StreamService {
    pub(crate) store: Arc<dyn MetadataStore>,
    /// The host given at start (`--public-host`).
    configured_host: String,
    /// The host written into references now: the configured one, or what the image policy says
    /// (`externalRegistryHostnames[0]`), set by the registry as the policy changes ([`StreamService::set_public_host`]).
    public_host: Arc<std::sync::RwLock<String>>,
}

/// One stream as read from the store, with the version of every key read: the stream key (metadata and
/// spec) and the histories loaded (all of them, or the ones an operation needs).
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    pub repo: RepositoryName,
    pub stream: Option<(ImageStream, u64)>,
    pub histories: BTreeMap<TagName, (NamedTagEventList, u64)>,
    /// The conditions of failed imports, by tag (kept beside the histories; see [`crate::import`]).
    pub conditions: BTreeMap<TagName, (Vec<TagEventCondition>, u64)>,
    /// The store's revision before the first read: a strict write expects nothing of the stream written since
    /// (0 when not read: [`StreamService::load_tags`] saves pushes that round trip).
    pub read_at: u64,
}

impl Loaded {
    /// The stream's `resourceVersion`: the newest version among its keys.
    pub fn resource_version(&self) -> u64 {
        let s = self.stream.as_ref().map(|(_, v)| *v).unwrap_or(0);
        let h = self.histories.values().map(|(_, v)| *v).fold(s, u64::max);
        self.conditions.values().map(|(_, v)| *v).fold(h, u64::max)
    }

    /// The stream in memory, to change. `stream` replaces the stored metadata and spec when given.
    pub fn state(&self, stream: Option<ImageStream>) -> Option<StreamState> {
        let stream = stream.or_else(|| self.stream.as_ref().map(|(s, _)| s.clone()))?;
        Some(StreamState {
            repo: self.repo.clone(),
            stream,
            histories: self.histories.iter().map(|(t, (h, _))| (t.clone(), h.clone())).collect(),
        })
    }
}

/// A stream as stored: metadata and spec; the status and `resourceVersion` are assembled when read.
pub(crate) fn stored(stream: &ImageStream) -> ImageStream {
    let mut s = stream.clone();
    s.metadata.resource_version = String::new();
    s.status = Default::default();
    s
}

/// Gives an attempt's future its type, so that `?` inside the async block knows its error type.
pub(crate) async fn attempt<T>(f: impl std::future::Future<Output = Result<T, StreamError>>) -> Result<T, StreamError> {
    f.await
}

/// Runs `$body` (an attempt that reads, decides and commits) until its commit wins the compare-and-swap, at
/// most [`MAX_RETRIES`] times.
macro_rules! retry_on_conflict {
    ($what:expr, $body:block) => {{
        let mut outcome = None;
        for _ in 0..$crate::service::MAX_RETRIES {
            match $crate::service::attempt(async $body).await {
                Err($crate::service::StreamError::Store(storage_backends::StoreError::Conflict { .. })) => continue,
                other => {
                    outcome = Some(other);
                    break;
                }
            }
        }
        outcome.unwrap_or_else(|| Err($crate::service::StreamError::Contention($what.to_string())))
    }};
}
pub(crate) use retry_on_conflict;

impl StreamService {
    pub fn new(store: Arc<dyn MetadataStore>, public_host: impl Into<String>) -> Self {
        let configured_host = public_host.into();
        StreamService { store, public_host: Arc::new(std::sync::RwLock::new(configured_host.clone())), configured_host }
    }

    /// The host written into `dockerImageReference`s now.
    pub fn public_host(&self) -> String {
        self.public_host.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The host given at start (`--public-host`), whatever the image policy says.
    pub fn configured_host(&self) -> &str {
        &self.configured_host
    }

    /// Writes `host` into references from now on (every clone of this service), or the configured host again
    /// with `None`.
    pub fn set_public_host(&self, host: Option<&str>) {
        let host = host.unwrap_or(&self.configured_host);
        let mut current = self.public_host.write().unwrap_or_else(|e| e.into_inner());
        if *current != host {
            *current = host.to_owned();
        }
    }

    /// Whether `reference` names this registry (under the host in force or the configured one).
    pub fn is_local_reference(&self, reference: &str) -> bool {
        let under = |host: &str| reference.strip_prefix(host).is_some_and(|rest| rest.starts_with('/'));
        under(&self.public_host()) || under(&self.configured_host)
    }

    /// `<public-host>/<ns>/<stream>@<digest>`: how a pushed image is referred to.
    pub fn image_reference(&self, repo: &RepositoryName, digest: &Digest) -> String {
        format!("{}/{repo}@{digest}", self.public_host())
    }

    /// `<public-host>/<ns>/<stream>`: where the stream is pulled from and pushed to.
    pub fn repository_reference(&self, repo: &RepositoryName) -> String {
        format!("{}/{repo}", self.public_host())
    }

    pub async fn get_image(&self, digest: &Digest) -> Result<Option<Image>, StreamError> {
        Ok(self.store.get_json::<Image>(&keys::image(digest)).await?.map(|(mut img, v)| {
            img.metadata.resource_version = v.to_string();
            img
        }))
    }

    pub async fn stream_exists(&self, repo: &RepositoryName) -> Result<bool, StreamError> {
        Ok(self.store.get(&keys::imagestream(repo)).await?.is_some())
    }

    /// Reads the stream key and every history of `repo`.
    pub(crate) async fn load(&self, repo: &RepositoryName) -> Result<Loaded, StreamError> {
        let read_at = self.store.revision().await?;
        let stream = self.store.get_json::<ImageStream>(&keys::imagestream(repo)).await?;
        let mut histories = BTreeMap::new();
        let prefix = keys::istags_of(repo);
        let mut after: Option<String> = None;
        loop {
            let page = self.store.list(&prefix, after.as_deref(), 1000).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (k, v) in page {
                let Some((_, tag)) = keys::istag_of_key(&k) else { continue };
                histories.insert(tag, (decode::<NamedTagEventList>(&k, &v.value)?, v.version));
            }
        }
        let mut conditions = BTreeMap::new();
        for (k, v) in self.store.list(&keys::import_conditions_of(repo), None, 10_000).await? {
            if let Some((_, tag)) = keys::import_conditions_of_key(&k) {
                conditions.insert(tag, (decode::<Vec<TagEventCondition>>(&k, &v.value)?, v.version));
            }
        }
        Ok(Loaded { repo: repo.clone(), stream, histories, conditions, read_at })
    }

    /// Reads the stream key and the histories of `tags` only.
    pub(crate) async fn load_tags(
        &self,
        repo: &RepositoryName,
        stream: Option<(ImageStream, u64)>,
        tags: &BTreeSet<TagName>,
    ) -> Result<Loaded, StreamError> {
        // Not read for a strict write (which needs every key: `load`); 0 makes a strict plan of it always conflict.
        let read_at = 0;
        let mut histories = BTreeMap::new();
        let mut conditions = BTreeMap::new();
        for tag in tags {
            if let Some(h) = self.store.get_json::<NamedTagEventList>(&keys::istag(repo, tag)).await? {
                histories.insert(tag.clone(), h);
            }
            if let Some(c) = self.store.get_json::<Vec<TagEventCondition>>(&keys::import_conditions(repo, tag)).await? {
                conditions.insert(tag.clone(), c);
            }
        }
        Ok(Loaded { repo: repo.clone(), stream, histories, conditions, read_at })
    }

    /// The stream as served: `resourceVersion` and `status` (pull specs, the tag histories) filled in.
    pub(crate) fn assemble(&self, loaded: &Loaded) -> Option<ImageStream> {
        let (mut stream, _) = loaded.stream.clone()?;
        let repo_ref = self.repository_reference(&loaded.repo);
        stream.metadata.resource_version = loaded.resource_version().to_string();
        stream.metadata.namespace = Some(loaded.repo.namespace().to_string());
        stream.status.docker_image_repository = repo_ref.clone();
        stream.status.public_docker_image_repository = Some(repo_ref);
        let mut tags: BTreeMap<&TagName, NamedTagEventList> = loaded
            .histories
            .iter()
            .filter(|(_, (h, _))| !h.items.is_empty())
            .map(|(t, (h, _))| (t, h.clone()))
            .collect();
        for (tag, (conditions, _)) in &loaded.conditions {
            let entry = tags.entry(tag).or_insert_with(|| NamedTagEventList {
                tag: tag.to_string(),
                items: Vec::new(),
                conditions: Vec::new(),
            });
            entry.conditions = conditions.clone();
        }
        stream.status.tags = tags.into_values().collect();
        Some(stream)
    }

    /// The manifest and blob links that make `copies` (images of other streams) pullable from `target`.
    pub(crate) async fn link_copies(
        &self,
        target: &RepositoryName,
        copies: &[(RepositoryName, Digest)],
    ) -> Result<Vec<(String, Vec<u8>)>, StreamError> {
        let mut puts = Vec::new();
        let mut seen = BTreeSet::new();
        for (source, digest) in copies {
            let mut stack = vec![digest.clone()];
            while let Some(d) = stack.pop() {
                if !seen.insert((source.clone(), d.clone())) {
                    continue;
                }
                let Some(link) = self.store.get(&keys::manifest_link(source, &d)).await? else { continue };
                puts.push((keys::manifest_link(target, &d), link.value));
                let Some(image) = self.get_image(&d).await? else { continue };
                let blobs = image
                    .docker_image_config
                    .as_deref()
                    .and_then(|c| c.parse::<Digest>().ok())
                    .into_iter()
                    .chain(image.docker_image_layers.iter().map(|l| l.name.clone()));
                for blob in blobs {
                    if let Some(b) = self.store.get(&keys::blob_link(source, &blob)).await? {
                        puts.push((keys::blob_link(target, &blob), b.value));
                    }
                }
                stack.extend(image.docker_image_manifests.iter().map(|m| m.digest.clone()));
            }
        }
        Ok(puts)
    }

    /// Records that `image` was pushed to `repo` (by `tag`, or by digest when `tag` is `None`), together with the
    /// caller's `extra` writes (manifest links, referrers) in one transaction. By tag: the stream is created if
    /// missing when `may_create_stream`, the image goes on top of the tag's history unless it is already there,
    /// and every tag tracking that tag follows it in the same transaction. By digest: only the Image is created.
    /// Returns [`StreamError::StreamNotFound`] when the stream is missing and may not be created.
    #[tracing::instrument(skip(self, image, extra), fields(image = %image.metadata.name))]
    pub async fn record_mapping(
        &self,
        repo: &RepositoryName,
        tag: Option<&TagName>,
        image: &Image,
        extra: Vec<(String, Vec<u8>)>,
        may_create_stream: bool,
    ) -> Result<MappingOutcome, StreamError> {
        let reference = image.digest().map(|d| self.image_reference(repo, &d)).unwrap_or_default();
        self.map_image(repo, tag, image, reference, extra, may_create_stream).await
    }

    /// [`StreamService::record_mapping`] with the tag event's `dockerImageReference` given.
    pub(crate) async fn map_image(
        &self,
        repo: &RepositoryName,
        tag: Option<&TagName>,
        image: &Image,
        reference: String,
        extra: Vec<(String, Vec<u8>)>,
        may_create_stream: bool,
    ) -> Result<MappingOutcome, StreamError> {
        let digest = image.digest().ok_or_else(|| StreamError::Invalid {
            kind: ObjectKind::Image,
            name: image.metadata.name.clone(),
            message: "metadata.name: an image is named by its digest".into(),
        })?;
        let image_key = keys::image(&digest);
        retry_on_conflict!(repo, {
            let mut txn = Txn::new();
            for (k, v) in &extra {
                txn = txn.put(k.clone(), v.clone());
            }
            let created_image = self.store.get(&image_key).await?.is_none();
            let image_write =
                Write { key: image_key.clone(), expect: Some(Expect::Absent), value: Some(encode(image)) };
            let mut outcome = MappingOutcome { created_stream: false, created_image, new_event: false };
            let Some(tag) = tag else {
                if created_image {
                    txn = image_write.add_to(txn);
                }
                if !txn.is_empty() {
                    self.store.commit(txn).await?;
                }
                return Ok(outcome);
            };
            let stored = self.store.get_json::<ImageStream>(&keys::imagestream(repo)).await?;
            let stream = match &stored {
                Some((s, _)) => s.clone(),
                None if may_create_stream => {
                    outcome.created_stream = true;
                    self.new_stream(repo)
                }
                None => return Err(StreamError::StreamNotFound(repo.clone())),
            };
            let closure = rules::tracking_closure(repo, &stream, tag);
            let before = self.load_tags(repo, stored, &closure).await?;
            let Some(mut state) = before.state(Some(stream)) else { unreachable!("a stream was given") };
            let event = TagEvent {
                created: Utc::now(),
                docker_image_reference: reference.clone(),
                image: Some(digest.clone()),
                generation: state.stream.metadata.generation.unwrap_or(1),
                by: crate::actor::current(),
            };
            outcome.new_event = rules::tag_event(&mut state, tag, event).contains(tag);
            let mut plan = before.plan(txn, &state, false);
            // The image goes before any tag names it.
            if created_image {
                plan.leading.insert(0, image_write);
            }
            self.commit_plan(plan).await?;
            Ok(outcome)
        })
    }

    pub(crate) fn new_stream(&self, repo: &RepositoryName) -> ImageStream {
        ImageStream {
            kind: ImageStream::kind(),
            api_version: crate::model::API_VERSION.into(),
            metadata: ObjectMeta {
                name: repo.stream().to_string(),
                namespace: Some(repo.namespace().to_string()),
                uid: uuid::Uuid::new_v4().to_string(),
                generation: Some(1),
                creation_timestamp: Some(Utc::now()),
                ..ObjectMeta::default()
            },
            ..ImageStream::default()
        }
    }

    /// The stream with its status assembled from the tag histories; `None` when it does not exist.
    pub async fn get_stream(&self, repo: &RepositoryName) -> Result<Option<ImageStream>, StreamError> {
        Ok(self.assemble(&self.load(repo).await?))
    }

    /// The digest a tag points at now (tracking tags move with what they track, in the same transaction, so
    /// this is always the top of the tag's own history).
    pub async fn resolve_tag(&self, repo: &RepositoryName, tag: &TagName) -> Result<Option<Digest>, StreamError> {
        let head = self.store.get_json_confirmed::<TagHead>(&keys::istag(repo, tag)).await?;
        Ok(head.and_then(|(h, _)| h.image()))
    }

    /// Tags that point at an image, in lexical order, after `last`, at most `n`.
    pub async fn list_tags(
        &self,
        repo: &RepositoryName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<TagName>, StreamError> {
        let prefix = keys::istags_of(repo);
        let after = last.map(|l| format!("{prefix}{l}"));
        let rows = self.store.list_keys(&prefix, after.as_deref(), n).await?;
        Ok(rows.into_iter().filter_map(|k| k.strip_prefix(&prefix).and_then(|t| t.parse().ok())).collect())
    }

    /// Deletes an image stream tag: its history and its spec entry (a spec change: the generation goes up).
    /// Returns whether it existed.
    pub async fn delete_tag(&self, repo: &RepositoryName, tag: &TagName) -> Result<bool, StreamError> {
        retry_on_conflict!(repo, {
            let stored = self.store.get_json::<ImageStream>(&keys::imagestream(repo)).await?;
            let before = self.load_tags(repo, stored, &BTreeSet::from([tag.clone()])).await?;
            let Some(mut state) = before.state(None) else {
                return Ok(!before.histories.is_empty());
            };
            let existed_spec = state.stream.spec.tags.iter().any(|t| t.name == tag.as_str());
            let existed = state.histories.remove(tag).is_some() | existed_spec;
            if existed_spec {
                state.stream.spec.tags.retain(|t| t.name != tag.as_str());
                state.stream.metadata.generation = Some(state.stream.metadata.generation.unwrap_or(1) + 1);
            }
            self.commit_plan(before.plan(Txn::new(), &state, false)).await?;
            Ok(existed)
        })
    }

    /// Removes every history event of `repo` that names `digest` (the manifest was deleted from the repository)
    /// and applies the caller's `deletes` in the same transaction. Tags left without events disappear.
    pub async fn forget_image(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        deletes: Vec<String>,
    ) -> Result<(), StreamError> {
        retry_on_conflict!(repo, {
            let txn = deletes.iter().fold(Txn::new(), |t, k| t.delete(k.clone()));
            let before = self.load(repo).await?;
            let mut after = before.clone();
            for (h, _) in after.histories.values_mut() {
                h.items.retain(|e| e.image.as_ref() != Some(digest));
            }
            let plan = match after.state(None) {
                Some(state) => before.plan(txn, &state, false),
                None => {
                    // Histories without a stream (should not happen): clean them up directly.
                    let histories = after.histories.into_iter().map(|(t, (h, _))| (t, h)).collect();
                    let mut plan = orphan_plan(&before, &histories);
                    plan.trailing =
                        txn.deletes.into_iter().map(|key| Write { key, expect: None, value: None }).collect();
                    plan
                }
            };
            self.commit_plan(plan).await?;
            Ok(())
        })
    }

    /// Image streams (repositories) in lexical order, after `last`, at most `n`.
    pub async fn list_repositories(&self, last: Option<&str>, n: usize) -> Result<Vec<RepositoryName>, StreamError> {
        let after = last.map(|l| format!("{}{l}", keys::IMAGESTREAMS));
        let rows = self.store.list_keys(keys::IMAGESTREAMS, after.as_deref(), n).await?;
        Ok(rows.into_iter().filter_map(|k| keys::repository_of_imagestream_key(&k)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{self, OCI_MANIFEST};
    use storage_backends::RedbStore;

    fn image(seed: &str) -> Image {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[]}}"#,
            Digest::sha256_of(seed.as_bytes())
        );
        let parsed = manifest::parse(m.as_bytes(), None).unwrap();
        manifest::image_from(&Digest::sha256_of(m.as_bytes()), &parsed, None, String::new(), Utc::now())
    }

    async fn service() -> (StreamService, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("m.redb")).unwrap();
        (StreamService::new(Arc::new(store), "reg.example:5000"), dir)
    }

    #[tokio::test]
    async fn push_history_and_delete() {
        let (svc, _dir) = service().await;
        let repo: RepositoryName = "ns/app".parse().unwrap();
        let v1: TagName = "v1".parse().unwrap();
        let (x, y) = (image("x"), image("y"));
        let o = svc.record_mapping(&repo, Some(&v1), &x, vec![], true).await.unwrap();
        assert!(o.created_stream && o.created_image && o.new_event);
        let again = svc.record_mapping(&repo, Some(&v1), &x, vec![], true).await.unwrap();
        assert!(!again.new_event && !again.created_image);
        svc.record_mapping(&repo, Some(&v1), &y, vec![], true).await.unwrap();
        let s = svc.get_stream(&repo).await.unwrap().unwrap();
        let items = &s.status.tags[0].items;
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].image, y.digest());
        assert_eq!(items[1].docker_image_reference, format!("reg.example:5000/ns/app@{}", x.metadata.name));
        assert_eq!(svc.resolve_tag(&repo, &v1).await.unwrap(), y.digest());
        assert_eq!(svc.list_tags(&repo, None, 10).await.unwrap(), vec![v1.clone()]);
        svc.forget_image(&repo, &y.digest().unwrap(), vec![]).await.unwrap();
        assert_eq!(svc.resolve_tag(&repo, &v1).await.unwrap(), x.digest());
        assert!(svc.delete_tag(&repo, &v1).await.unwrap());
        assert!(svc.list_tags(&repo, None, 10).await.unwrap().is_empty());
        assert_eq!(svc.list_repositories(None, 10).await.unwrap(), vec![repo]);
    }

    #[tokio::test]
    async fn no_create_without_permission_and_by_digest_only_image() {
        let (svc, _dir) = service().await;
        let repo: RepositoryName = "ns/app".parse().unwrap();
        let x = image("x");
        let err = svc.record_mapping(&repo, Some(&"v1".parse().unwrap()), &x, vec![], false).await;
        assert!(matches!(err, Err(StreamError::StreamNotFound(_))));
        svc.record_mapping(&repo, None, &x, vec![], false).await.unwrap();
        assert!(!svc.stream_exists(&repo).await.unwrap());
        assert!(svc.get_image(&x.digest().unwrap()).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn concurrent_pushes_lose_no_event() {
        let (svc, _dir) = service().await;
        let repo: RepositoryName = "ns/app".parse().unwrap();
        let tag: TagName = "latest".parse().unwrap();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let (svc, repo, tag) = (svc.clone(), repo.clone(), tag.clone());
            tasks.push(tokio::spawn(async move {
                svc.record_mapping(&repo, Some(&tag), &image(&i.to_string()), vec![], true).await.unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let s = svc.get_stream(&repo).await.unwrap().unwrap();
        assert_eq!(s.status.tags[0].items.len(), 16);
    }
}
