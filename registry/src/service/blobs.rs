//! Blobs as seen through a repository: a blob is served from `ns/stream` only when it is linked there (pushed,
//! mounted, or part of an image recorded in the stream).

use std::ops::Range;

use names::{Digest, RepositoryName};
use storage_backends::meta::encode;
use storage_backends::{keys, ByteStream, MetadataStoreExt, Txn};

use super::{Registry, RegistryError};

/// A repository's record of a blob it holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BlobLink {
    pub size: u64,
}

/// A blob read: the stream, the byte range served, the total size.
pub struct BlobRead {
    pub body: ByteStream,
    pub range: Range<u64>,
    pub total: u64,
}

impl Registry {
    /// Size of `digest` if the repository holds it. The link records the size of the verified content (content is
    /// deleted only after its links), so no storage round trip is needed.
    pub async fn blob_size(&self, repo: &RepositoryName, digest: &Digest) -> Result<u64, RegistryError> {
        match self.meta.get_json::<BlobLink>(&keys::blob_link(repo, digest)).await? {
            Some((link, _)) => Ok(link.size),
            None => Err(RegistryError::BlobUnknown(digest.clone())),
        }
    }

    /// Streams a blob of the repository, whole or the given range (already validated against the size).
    pub async fn read_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<BlobRead, RegistryError> {
        if self.meta.get(&keys::blob_link(repo, digest)).await?.is_none() {
            return Err(RegistryError::BlobUnknown(digest.clone()));
        }
        let (body, range, total) =
            self.blobs.read(digest, range).await?.ok_or_else(|| RegistryError::BlobUnknown(digest.clone()))?;
        Ok(BlobRead { body, range, total })
    }

    /// Links a stored blob into a repository.
    pub async fn link_blob(&self, repo: &RepositoryName, digest: &Digest, size: u64) -> Result<(), RegistryError> {
        let txn = Txn::new().put(keys::blob_link(repo, digest), encode(&BlobLink { size }));
        self.meta.commit(txn).await?;
        Ok(())
    }

    /// Mounts `digest` from `from` into `repo` when `from` holds it. Returns whether it was mounted.
    pub async fn mount_blob(
        &self,
        repo: &RepositoryName,
        from: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        match self.blob_size(from, digest).await {
            Ok(size) => {
                self.link_blob(repo, digest, size).await?;
                Ok(Some(size))
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
