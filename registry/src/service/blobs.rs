//! Blobs as seen through a repository: a blob is served from `ns/stream` only when it is linked there (pushed,
//! mounted, or part of an image recorded in the stream). A link may name an upstream (a layer of an imported
//! image): such a blob is fetched from there on first read and kept ([`super::pullthrough`]).

use std::ops::Range;

use names::{Digest, RepositoryName};
use storage_backends::meta::encode;
use storage_backends::{keys, ByteStream, MetadataStoreExt, Txn};

use super::pullthrough::Joined;
use super::{Registry, RegistryError};
use crate::upstream::{ExternalRef, Source, UpstreamError};

/// A repository's record of a blob it holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BlobLink {
    pub size: u64,
    /// Where the blob comes from when it is not stored yet (a layer of an imported image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamLink>,
}

/// The external repository a linked blob can be fetched from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UpstreamLink {
    /// `registry/repository` (as in a tag event's `dockerImageReference`, without the digest).
    pub repository: String,
    /// Whether the source may be reached over plain http or unverified TLS.
    #[serde(default)]
    pub insecure: bool,
    /// The mirror (`host/repository`) that served the image this blob belongs to, tried first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
}

impl UpstreamLink {
    /// The linked repository, as written when the link was made.
    pub fn repository(&self) -> Result<ExternalRef, RegistryError> {
        self.repository.parse().map_err(|e: UpstreamError| RegistryError::Internal(e.to_string()))
    }
}

/// A blob read: the stream, the byte range served, the total size.
pub struct BlobRead {
    pub body: ByteStream,
    pub range: Range<u64>,
    pub total: u64,
}

impl Registry {
    async fn blob_link(&self, repo: &RepositoryName, digest: &Digest) -> Result<BlobLink, RegistryError> {
        match self.meta.get_json_confirmed::<BlobLink>(&keys::blob_link(repo, digest)).await? {
            Some((link, _)) => Ok(link),
            None => Err(RegistryError::BlobUnknown(digest.clone())),
        }
    }

    /// Size of `digest` if the repository holds it (stored, or linked to an upstream that has it). The link
    /// records the size of the verified content (content is deleted only after its links), so no storage round
    /// trip is needed.
    pub async fn blob_size(&self, repo: &RepositoryName, digest: &Digest) -> Result<u64, RegistryError> {
        Ok(self.blob_link(repo, digest).await?.size)
    }

    /// Where `digest` of the external repository `from` is fetched from for `repo`: with the credentials of
    /// `repo`'s namespace's pull secrets.
    pub(crate) async fn upstream_source(
        &self,
        repo: &RepositoryName,
        from: &ExternalRef,
        digest: &Digest,
        insecure: bool,
    ) -> Result<Source, RegistryError> {
        let reference = from.at_digest(digest);
        let by_host = self.pull_credentials(repo.namespace()).await?;
        let credentials =
            by_host.get(&super::secrets::registry_host(reference.registry())).cloned().unwrap_or_default();
        Ok(Source::new(reference, credentials, insecure).with_mirror_credentials(by_host))
    }

    /// Where a client may fetch `digest` from directly (a presigned S3 URL, with `storage.s3.redirect`), when the
    /// repository holds it and it is stored; `None` when the registry serves the bytes itself.
    pub async fn blob_redirect(&self, repo: &RepositoryName, digest: &Digest) -> Result<Option<String>, RegistryError> {
        if !self.blobs.redirects() {
            return Ok(None);
        }
        let link = self.blob_link(repo, digest).await?;
        let url = self.blobs.presigned_get(digest, link.upstream.is_some()).await?.map(String::from);
        if url.is_some() && link.upstream.is_some() {
            self.pull_clock.pulled(&self.meta, digest);
        }
        Ok(url)
    }

    /// Streams a blob of the repository, whole or the given range (already validated against the size). A blob
    /// linked to an upstream and not stored yet is pulled through.
    pub async fn read_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<BlobRead, RegistryError> {
        let link = self.blob_link(repo, digest).await?;
        if let Some((body, range, total)) = self.blobs.read(digest, range.clone()).await? {
            // A pull-through cache hit: a blob linked to an upstream, already stored here.
            if let Some(from) = link.upstream.as_ref().and_then(|u| u.repository().ok()) {
                self.metrics.pullthrough_hit(from.registry());
                self.pull_clock.pulled(&self.meta, digest);
            }
            return Ok(BlobRead { body, range, total });
        }
        let Some(upstream) = &link.upstream else { return Err(RegistryError::BlobUnknown(digest.clone())) };
        let from = upstream.repository()?;
        let mut source = self.upstream_source(repo, &from, digest, upstream.insecure).await?;
        source.prefer = upstream.mirror.clone();
        let joined =
            self.pullthrough.fetch(&self.upstreams, &self.blobs, source, digest, link.size, range.is_none()).await;
        self.metrics.pullthrough_miss(from.registry(), joined.is_ok());
        self.pull_clock.pulled(&self.meta, digest);
        let joined = joined.map_err(RegistryError::Upstream)?;
        match joined {
            Joined::Streaming(body) => Ok(BlobRead { body, range: 0..link.size, total: link.size }),
            Joined::Local => {
                let (body, range, total) =
                    self.blobs.read(digest, range).await?.ok_or_else(|| RegistryError::BlobUnknown(digest.clone()))?;
                Ok(BlobRead { body, range, total })
            }
        }
    }

    /// Links a blob into a repository (guarded against garbage collection: [`Registry::commit_linking`];
    /// [`RegistryError::BlobUnknown`] when a link without upstream finds the content collected).
    pub async fn link_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        link: &BlobLink,
    ) -> Result<(), RegistryError> {
        let txn = Txn::new().put(keys::blob_link(repo, digest), encode(link));
        // A link that names an upstream does not need the content: it is fetched again when gone.
        self.commit_linking(txn, std::slice::from_ref(digest), link.upstream.is_none()).await?;
        Ok(())
    }

    /// Mounts `digest` from `from` into `repo` when `from` holds it (its link is copied, upstream included).
    /// Returns the size when it was mounted.
    pub async fn mount_blob(
        &self,
        repo: &RepositoryName,
        from: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        match self.blob_size(from, digest).await {
            Ok(size) => {
                let mut link = self.blob_link(from, digest).await?;
                link.size = size;
                match self.link_blob(repo, digest, &link).await {
                    Ok(()) => Ok(Some(size)),
                    // Garbage collected meanwhile: the client uploads it.
                    Err(RegistryError::BlobUnknown(_)) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Err(RegistryError::BlobUnknown(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes a blob from a repository. The content stays for other repositories that hold it.
    pub async fn delete_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<(), RegistryError> {
        let key = keys::blob_link(repo, digest);
        if self.meta.get(&key).await?.is_none() {
            return Err(RegistryError::BlobUnknown(digest.clone()));
        }
        self.meta.commit(Txn::new().delete(key)).await?;
        Ok(())
    }
}
