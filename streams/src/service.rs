//! [`StreamService`]: records ImageStreamMappings and answers every tag question from the streams' tag histories.
//! All writes are compare-and-swap transactions on the metadata store, retried on conflict, so concurrent pushes
//! to one stream never lose a history event.

use std::sync::Arc;

use chrono::Utc;
use names::{Digest, RepositoryName, TagName};
use storage_backends::meta::{decode, encode};
use storage_backends::{keys, Expect, MetadataStore, MetadataStoreExt, StoreError, Txn};

use crate::model::{Image, ImageStream, NamedTagEventList, ObjectMeta, TagEvent};

/// How often a write is retried after losing a compare-and-swap race before giving up.
const MAX_RETRIES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("image stream {0} does not exist")]
    StreamNotFound(RepositoryName),
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
    store: Arc<dyn MetadataStore>,
    public_host: String,
}

impl StreamService {
    pub fn new(store: Arc<dyn MetadataStore>, public_host: impl Into<String>) -> Self {
        StreamService { store, public_host: public_host.into() }
    }

    pub fn public_host(&self) -> &str {
        &self.public_host
    }

    /// `<public-host>/<ns>/<stream>@<digest>`: how a pushed image is referred to.
    pub fn image_reference(&self, repo: &RepositoryName, digest: &Digest) -> String {
        format!("{}/{repo}@{digest}", self.public_host)
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

    /// Records that `image` was pushed to `repo` (by `tag`, or by digest when `tag` is `None`), together with the
    /// caller's `extra` writes (manifest links, referrers) in one transaction. By tag: the stream is created if
    /// missing when `may_create_stream`, and the image goes on top of the tag's history unless it is already there.
    /// By digest: only the Image is created. Returns [`StreamError::StreamNotFound`] when the stream is missing
    /// and may not be created.
    #[tracing::instrument(skip(self, image, extra), fields(image = %image.metadata.name))]
    pub async fn record_mapping(
        &self,
        repo: &RepositoryName,
        tag: Option<&TagName>,
        image: &Image,
        extra: Vec<(String, Vec<u8>)>,
        may_create_stream: bool,
    ) -> Result<MappingOutcome, StreamError> {
        let digest = image.digest().ok_or_else(|| StoreError::Corrupt {
            key: keys::image(&Digest::sha256_of(b"")),
            reason: "image name is not a digest".into(),
        })?;
        let image_key = keys::image(&digest);
        for _ in 0..MAX_RETRIES {
            let mut txn = Txn::new();
            for (k, v) in &extra {
                txn = txn.put(k.clone(), v.clone());
            }
            let created_image = self.store.get(&image_key).await?.is_none();
            if created_image {
                txn = txn.expect(image_key.clone(), Expect::Absent).put(image_key.clone(), encode(image));
            }
            let mut outcome = MappingOutcome { created_stream: false, created_image, new_event: false };
            if let Some(tag) = tag {
                let stream_key = keys::imagestream(repo);
                let generation = match self.store.get_json::<ImageStream>(&stream_key).await? {
                    Some((stream, _)) => {
                        txn = txn.expect(stream_key.clone(), Expect::Present);
                        stream.metadata.generation.unwrap_or(1)
                    }
                    None if may_create_stream => {
                        let stream = self.new_stream(repo);
                        txn = txn.expect(stream_key.clone(), Expect::Absent).put(stream_key.clone(), encode(&stream));
                        outcome.created_stream = true;
                        1
                    }
                    None => return Err(StreamError::StreamNotFound(repo.clone())),
                };
                let tag_key = keys::istag(repo, tag);
                let (mut history, expect) = match self.store.get_json::<NamedTagEventList>(&tag_key).await? {
                    Some((h, v)) => (h, Expect::Version(v)),
                    None => {
                        (NamedTagEventList { tag: tag.to_string(), items: vec![], conditions: vec![] }, Expect::Absent)
                    }
                };
                if history.items.first().map(|e| &e.image) != Some(&digest) {
                    history.items.insert(
                        0,
                        TagEvent {
                            created: Utc::now(),
                            docker_image_reference: self.image_reference(repo, &digest),
                            image: digest.clone(),
                            generation,
                        },
                    );
                    txn = txn.expect(tag_key.clone(), expect).put(tag_key, encode(&history));
                    outcome.new_event = true;
                }
            }
            if txn.is_empty() {
                return Ok(outcome);
            }
            match self.store.commit(txn).await {
                Ok(_) => return Ok(outcome),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StreamError::Contention(repo.to_string()))
    }

    fn new_stream(&self, repo: &RepositoryName) -> ImageStream {
        ImageStream {
            kind: "ImageStream".into(),
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
        let Some((mut stream, mut version)) = self.store.get_json::<ImageStream>(&keys::imagestream(repo)).await?
        else {
            return Ok(None);
        };
        let mut tags = Vec::new();
        let prefix = keys::istags_of(repo);
        let mut after: Option<String> = None;
        loop {
            let page = self.store.list(&prefix, after.as_deref(), 1000).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (k, v) in page {
                version = version.max(v.version);
                tags.push(decode::<NamedTagEventList>(&k, &v.value)?);
            }
        }
        let repo_ref = format!("{}/{repo}", self.public_host);
        stream.metadata.resource_version = version.to_string();
        stream.status.docker_image_repository = repo_ref.clone();
        stream.status.public_docker_image_repository = Some(repo_ref);
        stream.status.tags = tags;
        Ok(Some(stream))
    }

    /// The digest a tag points at now.
    pub async fn resolve_tag(&self, repo: &RepositoryName, tag: &TagName) -> Result<Option<Digest>, StreamError> {
        let history = self.store.get_json::<NamedTagEventList>(&keys::istag(repo, tag)).await?;
        Ok(history.and_then(|(h, _)| h.items.into_iter().next().map(|e| e.image)))
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
        let rows = self.store.list(&prefix, after.as_deref(), n).await?;
        Ok(rows.into_iter().filter_map(|(k, _)| k.strip_prefix(&prefix).and_then(|t| t.parse().ok())).collect())
    }

    /// Deletes an image stream tag (its history and its spec entry). Returns whether it existed.
    pub async fn delete_tag(&self, repo: &RepositoryName, tag: &TagName) -> Result<bool, StreamError> {
        let tag_key = keys::istag(repo, tag);
        let stream_key = keys::imagestream(repo);
        for _ in 0..MAX_RETRIES {
            let history = self.store.get(&tag_key).await?;
            let stream = self.store.get_json::<ImageStream>(&stream_key).await?;
            let mut txn = Txn::new();
            let mut existed = false;
            if let Some(h) = history {
                txn = txn.expect(tag_key.clone(), Expect::Version(h.version)).delete(tag_key.clone());
                existed = true;
            }
            if let Some((mut s, v)) = stream {
                let before = s.spec.tags.len();
                s.spec.tags.retain(|t| t.name != tag.as_str());
                if s.spec.tags.len() != before {
                    s.metadata.generation = Some(s.metadata.generation.unwrap_or(1) + 1);
                    txn = txn.expect(stream_key.clone(), Expect::Version(v)).put(stream_key.clone(), encode(&s));
                    existed = true;
                }
            }
            if txn.is_empty() {
                return Ok(existed);
            }
            match self.store.commit(txn).await {
                Ok(_) => return Ok(existed),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StreamError::Contention(repo.to_string()))
    }

    /// Removes every history event of `repo` that names `digest` (the manifest was deleted from the repository)
    /// and applies the caller's `deletes` in the same transaction. Tags left without events disappear.
    pub async fn forget_image(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        deletes: Vec<String>,
    ) -> Result<(), StreamError> {
        let prefix = keys::istags_of(repo);
        for _ in 0..MAX_RETRIES {
            let mut txn = Txn::new();
            for k in &deletes {
                txn = txn.delete(k.clone());
            }
            let mut after: Option<String> = None;
            loop {
                let page = self.store.list_json::<NamedTagEventList>(&prefix, after.as_deref(), 1000).await?;
                let Some((last, _, _)) = page.last() else { break };
                after = Some(last.clone());
                for (key, mut h, v) in page {
                    let before = h.items.len();
                    h.items.retain(|e| &e.image != digest);
                    if h.items.len() == before {
                        continue;
                    }
                    txn = txn.expect(key.clone(), Expect::Version(v));
                    txn = if h.items.is_empty() { txn.delete(key) } else { txn.put(key, encode(&h)) };
                }
            }
            if txn.is_empty() {
                return Ok(());
            }
            match self.store.commit(txn).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StreamError::Contention(repo.to_string()))
    }

    /// Image streams (repositories) in lexical order, after `last`, at most `n`.
    pub async fn list_repositories(&self, last: Option<&str>, n: usize) -> Result<Vec<RepositoryName>, StreamError> {
        let after = last.map(|l| format!("{}{l}", keys::IMAGESTREAMS));
        let rows = self.store.list(keys::IMAGESTREAMS, after.as_deref(), n).await?;
        Ok(rows.into_iter().filter_map(|(k, _)| keys::repository_of_imagestream_key(&k)).collect())
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
        assert_eq!(Some(&items[0].image), y.digest().as_ref());
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
