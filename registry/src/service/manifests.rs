//! Manifests, tags and referrers. A manifest PUT by tag records an ImageStreamMapping through
//! [`streams::StreamService`]: tags are the stream's tag histories and nothing else. An image larger than its
//! namespace's LimitRange allows ([`super::limitranges`]) is refused before anything is recorded.

use bytes::Bytes;
use chrono::Utc;
use names::{Digest, Reference, RepositoryName, TagName};
use storage_backends::meta::encode;
use storage_backends::{keys, MetadataStoreExt, Txn};
use streams::manifest::{self, Descriptor, ManifestError, ManifestKind, ParsedManifest, DOCKER_LIST, OCI_INDEX};

use super::blobs::{BlobLink, UpstreamLink};
use super::{Registry, RegistryError};
use crate::upstream::{ExternalRef, UpstreamError};

/// A repository's record of a manifest it holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestLink {
    pub media_type: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Digest>,
    /// Where the manifest comes from when its bytes are not stored yet (a child of a manifest list that was
    /// pulled through).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamLink>,
}

impl ManifestLink {
    /// The link of `parsed`, `size` bytes long, whose bytes come from `upstream` when they are not stored.
    pub fn of(parsed: &ParsedManifest, size: u64, upstream: Option<UpstreamLink>) -> ManifestLink {
        ManifestLink {
            media_type: parsed.media_type.clone(),
            size,
            subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
            upstream,
        }
    }
}

/// A manifest as served.
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

/// The result of a manifest PUT.
pub struct PutManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

/// Largest image config read to fill an Image's metadata.
const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// Manifests up to this size keep their bytes in the metadata store, in the transaction that records them (one
/// write instead of two); larger ones go to the blob store first. The metadata store takes small values only
/// (etcd: 1.5 MiB a request), and an import records an index and all its children in one transaction.
pub const MANIFEST_IN_METADATA: usize = 16 * 1024;

/// Most writes put in one transaction by [`Registry::commit_links`] (etcd takes 128 operations a transaction).
const LINKS_PER_TXN: usize = 100;

impl Registry {
    /// Where a verified manifest's bytes go: a small one becomes a write for the caller's transaction (returned);
    /// a large one is stored in the blob store now, before anything refers to it.
    pub(crate) async fn keep_manifest(
        &self,
        digest: &Digest,
        bytes: &Bytes,
    ) -> Result<Option<(String, Vec<u8>)>, RegistryError> {
        if bytes.len() <= MANIFEST_IN_METADATA {
            return Ok(Some((keys::manifest_content(digest), bytes.to_vec())));
        }
        self.blobs.put_verified(digest, bytes.clone()).await?;
        Ok(None)
    }

    /// After a manifest kept in the blob store was linked: a garbage-collection sweep that marked before the link
    /// was committed may have deleted its bytes; wait for it and store them again. (Small manifests' bytes are
    /// written in the link's transaction, which a sweep's compare-and-swap delete loses to.)
    pub(crate) async fn settle_large_manifest(&self, digest: &Digest, bytes: &Bytes) -> Result<(), RegistryError> {
        if bytes.len() <= MANIFEST_IN_METADATA {
            return Ok(());
        }
        crate::gc::guard::settle(&*self.meta, digest).await.map_err(|e| RegistryError::Internal(e.to_string()))?;
        if !self.blobs.exists_now(digest).await? {
            self.blobs.put_verified(digest, bytes.clone()).await?;
        }
        Ok(())
    }

    /// Writes repository links (of blobs and manifests, naming their upstream) a bounded number per transaction,
    /// guarded against garbage collection. Links may be written ahead of the manifest or image that needs them: a
    /// link alone only lets the repository serve content.
    pub(crate) async fn commit_links(&self, links: Vec<(String, Vec<u8>)>) -> Result<(), RegistryError> {
        let mut links = links.into_iter().peekable();
        while links.peek().is_some() {
            let batch: Vec<_> = links.by_ref().take(LINKS_PER_TXN).collect();
            let digests: Vec<Digest> = batch.iter().filter_map(|(k, _)| keys::digest_of_key(k)).collect();
            let txn = batch.into_iter().fold(Txn::new(), |t, (k, v)| t.put(k, v));
            // These links name their upstream: content collected meanwhile is fetched again.
            self.commit_linking(txn, &digests, false).await?;
        }
        Ok(())
    }

    /// Stores a manifest under a tag or its digest, after validating it and everything it references.
    #[tracing::instrument(skip(self, bytes))]
    pub async fn put_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
        may_create_stream: bool,
    ) -> Result<PutManifest, RegistryError> {
        if bytes.len() > self.max_manifest_bytes {
            return Err(RegistryError::ManifestTooLarge(self.max_manifest_bytes));
        }
        let digest = match reference {
            Reference::Digest(d) => {
                let actual = Digest::of(d.algorithm(), &bytes);
                if &actual != d {
                    return Err(RegistryError::DigestMismatch { expected: d.clone(), actual });
                }
                actual
            }
            Reference::Tag(_) => Digest::sha256_of(&bytes),
        };
        let parsed = manifest::parse(&bytes, content_type).map_err(|e| match e {
            ManifestError::Invalid(m) => RegistryError::ManifestInvalid(m),
            ManifestError::Unsupported(m) => RegistryError::ManifestInvalid(format!("unsupported media type {m}")),
        })?;
        self.check_references(repo, &parsed).await?;
        let config = match &parsed.kind {
            ManifestKind::Image { config, .. } if config.size <= MAX_CONFIG_BYTES => {
                self.blobs.read_all(&config.digest).await?
            }
            _ => None,
        };
        let image = manifest::image_from(
            &digest,
            &parsed,
            config.as_deref(),
            self.streams.image_reference(repo, &digest),
            Utc::now(),
        );
        // An image over its namespace's LimitRange is refused (an index is not limited by its own size).
        if let ManifestKind::Image { .. } = parsed.kind {
            if let Some(limit) = self.image_limits.of(repo.namespace()).await? {
                let size = image.docker_image_metadata.size;
                if limit.exceeded_by(size) {
                    let namespace = repo.namespace().clone();
                    return Err(RegistryError::ImageTooLarge { size, namespace, limit: Box::new(limit) });
                }
            }
        }
        let link = ManifestLink::of(&parsed, bytes.len() as u64, None);
        let subject = link.subject.clone();
        let mut extra = vec![(keys::manifest_link(repo, &digest), encode(&link))];
        extra.extend(self.keep_manifest(&digest, &bytes).await?);
        if let Some(subject) = &subject {
            let descriptor = Descriptor {
                media_type: parsed.media_type.clone(),
                digest: digest.clone(),
                size: bytes.len() as u64,
                platform: None,
                artifact_type: parsed.artifact_type.clone(),
                annotations: parsed.annotations.clone(),
            };
            extra.push((keys::referrer(repo, subject, &digest), encode(&descriptor)));
        }
        let tag = match reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        };
        self.streams.record_mapping(repo, tag, &image, extra, may_create_stream).await?;
        self.settle_large_manifest(&digest, &bytes).await?;
        Ok(PutManifest { digest, subject })
    }

    /// Every blob and child manifest must already be in the repository; sizes must match what is stored.
    async fn check_references(&self, repo: &RepositoryName, parsed: &ParsedManifest) -> Result<(), RegistryError> {
        for blob in parsed.blobs() {
            match self.blob_size(repo, &blob.digest).await {
                Ok(size) if size == blob.size => {}
                Ok(size) => {
                    return Err(RegistryError::ManifestInvalid(format!(
                        "descriptor of {} says {} bytes, the blob has {size}",
                        blob.digest, blob.size
                    )))
                }
                Err(RegistryError::BlobUnknown(d)) => return Err(RegistryError::ManifestBlobUnknown(d)),
                Err(e) => return Err(e),
            }
        }
        for child in parsed.children() {
            match self.meta.get_json_confirmed::<ManifestLink>(&keys::manifest_link(repo, &child.digest)).await? {
                Some((link, _)) if link.size == child.size => {}
                Some((link, _)) => {
                    return Err(RegistryError::ManifestInvalid(format!(
                        "descriptor of {} says {} bytes, the manifest has {}",
                        child.digest, child.size, link.size
                    )))
                }
                None => return Err(RegistryError::ManifestBlobUnknown(child.digest.clone())),
            }
        }
        Ok(())
    }

    /// Resolves a reference to a digest of the repository.
    pub async fn resolve(&self, repo: &RepositoryName, reference: &Reference) -> Result<Digest, RegistryError> {
        match reference {
            Reference::Tag(tag) => self.streams.resolve_tag(repo, tag).await?.ok_or(RegistryError::ManifestUnknown),
            Reference::Digest(d) => Ok(d.clone()),
        }
    }

    /// Reads a manifest by tag or digest. `accept` lists the media types the client takes; an index a client
    /// cannot take is answered with its linux/amd64 manifest, when the repository holds one.
    pub async fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        accept: &[String],
    ) -> Result<StoredManifest, RegistryError> {
        let digest = self.resolve(repo, reference).await?;
        let stored = match self.load_manifest(repo, &digest).await {
            Err(RegistryError::ManifestUnknown) => {
                let tag = match reference {
                    Reference::Tag(t) => Some(t),
                    Reference::Digest(_) => None,
                };
                self.pull_manifest_through(repo, tag, &digest).await?
            }
            other => other?,
        };
        let is_index = stored.media_type == OCI_INDEX || stored.media_type == DOCKER_LIST;
        let takes = |mt: &str| accept.iter().any(|a| a == mt || a == "*/*");
        if is_index && !accept.is_empty() && !takes(&stored.media_type) {
            if let Ok(parsed) = manifest::parse(&stored.bytes, Some(&stored.media_type)) {
                let default = parsed
                    .children()
                    .iter()
                    .find(|c| c.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == "amd64"));
                if let Some(child) = default {
                    if takes(&child.media_type) {
                        return self.load_manifest(repo, &child.digest).await;
                    }
                }
            }
        }
        Ok(stored)
    }

    async fn load_manifest(&self, repo: &RepositoryName, digest: &Digest) -> Result<StoredManifest, RegistryError> {
        let (link, _) = self
            .meta
            .get_json_confirmed::<ManifestLink>(&keys::manifest_link(repo, digest))
            .await?
            .ok_or(RegistryError::ManifestUnknown)?;
        let bytes = match (self.manifest_bytes(digest).await?, &link.upstream) {
            (Some(bytes), _) => bytes,
            (None, Some(upstream)) => {
                return self.fetch_manifest(repo, &upstream.repository()?, digest, upstream.insecure).await;
            }
            (None, None) => return Err(RegistryError::ManifestUnknown),
        };
        Ok(StoredManifest { digest: digest.clone(), media_type: link.media_type, bytes })
    }

    /// A manifest's bytes: from the metadata store, or from the blob store where older versions kept them.
    pub(crate) async fn manifest_bytes(&self, digest: &Digest) -> Result<Option<Bytes>, RegistryError> {
        let key = keys::manifest_content(digest);
        if let Some(v) = self.meta.get(&key).await? {
            return Ok(Some(Bytes::from(v.value)));
        }
        if let Some(large) = self.blobs.read_all(digest).await? {
            return Ok(Some(large));
        }
        // Neither: perhaps a small manifest another replica stored a moment ago, confirmed on the latest copy
        // (only now, so that large manifests cost no extra round trip).
        Ok(self.meta.get_latest(&key).await?.map(|v| Bytes::from(v.value)))
    }

    /// A manifest the stream names (through a tag event pointing at an external pull spec, e.g. a
    /// `--reference` tag) but this registry does not hold: fetched from that source, verified, kept.
    async fn pull_manifest_through(
        &self,
        repo: &RepositoryName,
        tag: Option<&TagName>,
        digest: &Digest,
    ) -> Result<StoredManifest, RegistryError> {
        let (pull_spec, insecure) =
            self.streams.pull_source(repo, tag, digest).await?.ok_or(RegistryError::ManifestUnknown)?;
        let from: ExternalRef = pull_spec.parse().map_err(|_| RegistryError::ManifestUnknown)?;
        self.fetch_manifest(repo, &from, digest, insecure).await
    }

    /// Fetches manifest `digest` from the external repository of `from`, stores it, and links it into `repo` with
    /// what it references (blobs and child manifests, to be pulled through in turn).
    async fn fetch_manifest(
        &self,
        repo: &RepositoryName,
        from: &ExternalRef,
        digest: &Digest,
        insecure: bool,
    ) -> Result<StoredManifest, RegistryError> {
        let source = self.upstream_source(repo, from, digest, insecure).await?;
        let fetched = self.upstreams.manifest(&source).await.map_err(|e| match e {
            UpstreamError::NotFound(_) => RegistryError::ManifestUnknown,
            other => RegistryError::Upstream(other),
        })?;
        let parsed = manifest::parse(&fetched.bytes, None)
            .map_err(|e| RegistryError::Upstream(UpstreamError::Invalid(format!("{}: {e}", source.reference))))?;
        let mirror = fetched.served.mirror.then(|| fetched.served.by.clone());
        let upstream = UpstreamLink { repository: source.reference.repository_ref(), insecure, mirror };
        let mut links = Vec::new();
        for b in parsed.blobs() {
            let link = BlobLink { size: b.size, upstream: Some(upstream.clone()) };
            links.push((keys::blob_link(repo, &b.digest), encode(&link)));
        }
        for child in parsed.children() {
            let link = ManifestLink {
                media_type: child.media_type.clone(),
                size: child.size,
                subject: None,
                upstream: Some(upstream.clone()),
            };
            links.push((keys::manifest_link(repo, &child.digest), encode(&link)));
        }
        self.commit_links(links).await?;
        // The manifest's own link last, with (or after) its bytes: once it is linked, it can be served.
        let link = ManifestLink::of(&parsed, fetched.bytes.len() as u64, Some(upstream));
        let mut txn = Txn::new().put(keys::manifest_link(repo, digest), encode(&link));
        if let Some((key, value)) = self.keep_manifest(digest, &fetched.bytes).await? {
            txn = txn.put(key, value);
        }
        self.commit_linking(txn, std::slice::from_ref(digest), false).await?;
        self.settle_large_manifest(digest, &fetched.bytes).await?;
        Ok(StoredManifest { digest: digest.clone(), media_type: parsed.media_type, bytes: fetched.bytes })
    }

    /// Deletes by tag (only the tag leaves the stream) or by digest (the manifest leaves the repository and every
    /// tag history of the stream).
    pub async fn delete_manifest(&self, repo: &RepositoryName, reference: &Reference) -> Result<(), RegistryError> {
        match reference {
            Reference::Tag(tag) => {
                if self.streams.delete_tag(repo, tag).await? {
                    Ok(())
                } else {
                    Err(RegistryError::ManifestUnknown)
                }
            }
            Reference::Digest(digest) => {
                let key = keys::manifest_link(repo, digest);
                let (link, _) =
                    self.meta.get_json::<ManifestLink>(&key).await?.ok_or(RegistryError::ManifestUnknown)?;
                let mut deletes = vec![key];
                if let Some(subject) = &link.subject {
                    deletes.push(keys::referrer(repo, subject, digest));
                }
                self.streams.forget_image(repo, digest, deletes).await?;
                Ok(())
            }
        }
    }

    /// Tags of the repository after `last`, at most `n`, and whether more follow.
    pub async fn list_tags(
        &self,
        repo: &RepositoryName,
        last: Option<&str>,
        n: usize,
    ) -> Result<(Vec<TagName>, bool), RegistryError> {
        let mut tags = self.streams.list_tags(repo, last, n.saturating_add(1)).await?;
        if tags.is_empty() && last.is_none() && !self.streams.stream_exists(repo).await? {
            return Err(RegistryError::NameUnknown(repo.clone()));
        }
        let more = tags.len() > n;
        tags.truncate(n);
        Ok((tags, more))
    }

    /// Repositories after `last`, at most `n`, and whether more follow.
    pub async fn catalog(&self, last: Option<&str>, n: usize) -> Result<(Vec<RepositoryName>, bool), RegistryError> {
        let mut repos = self.streams.list_repositories(last, n.saturating_add(1)).await?;
        let more = repos.len() > n;
        repos.truncate(n);
        Ok((repos, more))
    }

    /// Manifests of the repository whose subject is `subject`, optionally only those of `artifact_type`.
    pub async fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, RegistryError> {
        let all = self.meta.list_all_json::<Descriptor>(&keys::referrers_of(repo, subject)).await?;
        Ok(all
            .into_iter()
            .map(|(d, _)| d)
            .filter(|d| artifact_type.is_none_or(|t| d.artifact_type.as_deref() == Some(t)))
            .collect())
    }
}
