//! Upload sessions as seen through a repository: start, append chunks, report progress, finish with digest
//! verification, cancel. The sessions themselves (bytes received, hash state, the one writer's claim, what is
//! staged) live in `storage_backends::uploads`, so a chunked upload may continue on another replica; this module
//! checks that a session belongs to the repository it is addressed through and links the finished blob there.

use bytes::Bytes;
use futures::Stream;
use names::{Digest, RepositoryName, UploadId};
use storage_backends::meta::encode;
use storage_backends::{keys, FinishError, Txn};
pub use storage_backends::{ChunkStart, UploadSession};

use super::blobs::BlobLink;
use super::{Registry, RegistryError};

impl Registry {
    /// Opens a new upload session for `repo`, owned by `owner` (the caller's name): only the same caller may use it.
    pub async fn start_upload(&self, repo: &RepositoryName, owner: &str) -> Result<UploadId, RegistryError> {
        let id = self.blobs.start_upload_for(repo, Some(owner.to_owned())).await?;
        self.metrics.upload_started();
        Ok(id)
    }

    /// The session `id` of `repo` with its version, when `caller` may use it. A session of another repository or
    /// another caller is answered as unknown, exactly like a missing one.
    pub async fn upload_session(
        &self,
        repo: &RepositoryName,
        id: UploadId,
        caller: &str,
    ) -> Result<(UploadSession, u64), RegistryError> {
        match self.blobs.upload_session(id).await? {
            Some((s, v)) if &s.repository == repo && s.owner.as_deref().is_none_or(|o| o == caller) => Ok((s, v)),
            _ => Err(RegistryError::UploadUnknown(id)),
        }
    }

    /// Appends a chunk. `start` is the chunk's first byte offset from `Content-Range`, when given; it must equal
    /// the bytes received so far. Returns the new size. A chunk racing another one for the same upload (on any
    /// replica) loses with 416.
    #[tracing::instrument(skip(self, body))]
    pub async fn append_chunk<S, E>(
        &self,
        repo: &RepositoryName,
        id: UploadId,
        caller: &str,
        start: ChunkStart,
        body: S,
    ) -> Result<u64, RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.upload_session(repo, id, caller).await?;
        Ok(self.blobs.append_upload(id, start, body).await?)
    }

    /// Finishes an upload: appends the optional last chunk, verifies `digest`, makes the blob visible in the
    /// repository and closes the session. On a digest mismatch the session and its bytes are discarded.
    #[tracing::instrument(skip(self, body))]
    pub async fn finish_upload<S, E>(
        &self,
        repo: &RepositoryName,
        id: UploadId,
        caller: &str,
        digest: &Digest,
        start: ChunkStart,
        body: S,
    ) -> Result<(), RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.upload_session(repo, id, caller).await?;
        let link = |size| async move {
            let txn = Txn::new().put(keys::blob_link(repo, digest), encode(&BlobLink { size, upstream: None }));
            // The store publishes its own copy again when a sweep took the content meanwhile (`false`).
            self.commit_linking(txn, std::slice::from_ref(digest), false).await.map(drop)
        };
        match self.blobs.finish_upload_linked(id, digest, start, body, link).await {
            Ok(size) => {
                self.metrics.upload_finished(size);
                Ok(())
            }
            Err(FinishError::Blob(e)) => Err(e.into()),
            Err(FinishError::Link(RegistryError::BlobUnknown(d))) => Err(RegistryError::UploadInvalid(format!(
                "{d} was garbage collected while the upload finished; push it again"
            ))),
            Err(FinishError::Link(e)) => Err(e),
        }
    }

    /// Cancels an upload and discards what it received.
    pub async fn cancel_upload(&self, repo: &RepositoryName, id: UploadId, caller: &str) -> Result<(), RegistryError> {
        self.upload_session(repo, id, caller).await?;
        self.blobs.cancel_upload(id).await?;
        self.metrics.upload_cancelled();
        Ok(())
    }
}
