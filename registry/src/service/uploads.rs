//! Upload sessions: start, append chunks, report progress, finish with digest verification, cancel. A session is a
//! metadata record (repository, bytes received, saved hash state) written with compare-and-swap, so a chunked
//! upload may continue on another process or replica; its bytes go, chunk after chunk, into one staging object
//! (written only under the upload's lock) that becomes a blob by a rename, only after the digest matched.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;
use names::{Algorithm, Digest, DigestHasher, RepositoryName, UploadId};
use storage_backends::meta::encode;
use storage_backends::{keys, Expect, MetadataStoreExt, StoreError, Txn, UploadLock};

use super::blobs::BlobLink;
use super::{Registry, RegistryError};

/// A blob upload in progress.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct UploadSession {
    pub repository: RepositoryName,
    /// Bytes received so far.
    pub size: u64,
    /// The hash state after `size` bytes (see [`DigestHasher::save`]), hex-encoded.
    pub hash_state: String,
    pub started: DateTime<Utc>,
}

/// Where a chunk claims to start (`Content-Range`), when the client said.
pub type ChunkStart = Option<u64>;

impl UploadSession {
    /// A chunk must start where the upload ends (when the client says where it starts).
    fn check_start(&self, start: ChunkStart) -> Result<(), RegistryError> {
        match start {
            Some(start) if start != self.size => Err(RegistryError::RangeInvalid { have: self.size, start }),
            _ => Ok(()),
        }
    }

    fn hasher(&self) -> Result<DigestHasher, RegistryError> {
        hex::decode(&self.hash_state)
            .ok()
            .and_then(|b| DigestHasher::restore(&b))
            .ok_or_else(|| RegistryError::Internal("upload session holds an unreadable hash state".into()))
    }
}

impl Registry {
    /// Opens a new upload session for `repo`.
    pub async fn start_upload(&self, repo: &RepositoryName) -> Result<UploadId, RegistryError> {
        let id = UploadId::random();
        let session = UploadSession {
            repository: repo.clone(),
            size: 0,
            hash_state: hex::encode(DigestHasher::new(Algorithm::Sha256).save()),
            started: Utc::now(),
        };
        let key = keys::upload(id);
        // Sessions are written lazily: they describe staged bytes that are not durable before the commit either.
        self.meta.commit(Txn::new().expect(key.clone(), Expect::Absent).put(key, encode(&session)).lazy()).await?;
        Ok(id)
    }

    /// The session `id` of `repo` with its version.
    pub async fn upload_session(
        &self,
        repo: &RepositoryName,
        id: UploadId,
    ) -> Result<(UploadSession, u64), RegistryError> {
        match self.meta.get_json::<UploadSession>(&keys::upload(id)).await? {
            Some((s, v)) if &s.repository == repo => Ok((s, v)),
            _ => Err(RegistryError::UploadUnknown(id)),
        }
    }

    /// Takes the lock on upload `id`'s staged bytes and reads the session under it. A chunk racing another one
    /// for the same upload (in this process or another sharing the data directory) loses with 416.
    async fn lock_session(
        &self,
        repo: &RepositoryName,
        id: UploadId,
        start: ChunkStart,
    ) -> Result<(UploadLock, UploadSession, u64), RegistryError> {
        // Check the session belongs to `repo` before touching its staging area.
        let (session, _) = self.upload_session(repo, id).await?;
        let Some(lock) = self.blobs.lock_upload(id).await? else {
            return Err(RegistryError::RangeInvalid { have: session.size, start: start.unwrap_or(session.size) });
        };
        match self.upload_session(repo, id).await {
            Ok((session, version)) => {
                session.check_start(start)?;
                Ok((lock, session, version))
            }
            Err(e) => {
                // Finished or cancelled meanwhile: nothing will use the staging area again.
                drop(lock);
                self.blobs.abort_upload(id).await;
                Err(e)
            }
        }
    }

    /// Appends a chunk. `start` is the chunk's first byte offset from `Content-Range`, when given; it must equal
    /// the bytes received so far. Returns the new size.
    #[tracing::instrument(skip(self, body))]
    pub async fn append_chunk<S, E>(
        &self,
        repo: &RepositoryName,
        id: UploadId,
        start: ChunkStart,
        body: S,
    ) -> Result<u64, RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let (mut lock, mut session, version) = self.lock_session(repo, id, start).await?;
        let mut hasher = session.hasher()?;
        let written = lock.write_at(session.size, body, &mut hasher, None).await?;
        if written == 0 {
            return Ok(session.size);
        }
        lock.write_back();
        session.size += written;
        session.hash_state = hex::encode(hasher.save());
        let key = keys::upload(id);
        let txn = Txn::new().expect(key.clone(), Expect::Version(version)).put(key, encode(&session)).lazy();
        match self.meta.commit(txn).await {
            Ok(_) => Ok(session.size),
            Err(StoreError::Conflict { .. }) => {
                // The session changed under the lock: it was cancelled or finished elsewhere.
                let have = self.upload_session(repo, id).await?.0.size;
                Err(RegistryError::RangeInvalid { have, start: start.unwrap_or(have) })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Finishes an upload: appends the optional last chunk, verifies `digest`, makes the blob visible in the
    /// repository and closes the session. On a digest mismatch the session and its bytes are discarded.
    #[tracing::instrument(skip(self, body))]
    pub async fn finish_upload<S, E>(
        &self,
        repo: &RepositoryName,
        id: UploadId,
        digest: &Digest,
        start: ChunkStart,
        body: S,
    ) -> Result<(), RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let (mut lock, mut session, version) = self.lock_session(repo, id, start).await?;
        // Hash with the client's algorithm from the start when nothing was received yet.
        let mut hasher = if session.size == 0 { DigestHasher::new(digest.algorithm()) } else { session.hasher()? };
        session.size += lock.write_at(session.size, body, &mut hasher, None).await?;
        let actual = if hasher.algorithm() == digest.algorithm() {
            hasher.finish()
        } else {
            lock.hash(session.size, digest.algorithm()).await?
        };
        let key = keys::upload(id);
        if &actual != digest {
            drop(lock);
            self.close_session(id, Some(version)).await;
            return Err(RegistryError::DigestMismatch { expected: digest.clone(), actual });
        }
        // Claim the session first so two finishers cannot both commit.
        let claim = Txn::new().expect(key.clone(), Expect::Version(version)).delete(key).lazy();
        match self.meta.commit(claim).await {
            Ok(_) => {}
            Err(StoreError::Conflict { .. }) => return Err(RegistryError::UploadUnknown(id)),
            Err(e) => return Err(e.into()),
        }
        if self.blobs.stat(digest).await?.is_some() {
            drop(lock);
            self.blobs.abort_upload(id).await;
        } else {
            lock.commit(session.size, digest).await?;
        }
        let link =
            Txn::new().put(keys::blob_link(repo, digest), encode(&BlobLink { size: session.size, upstream: None }));
        self.meta.commit(link).await?;
        Ok(())
    }

    /// Cancels an upload and discards what it received.
    pub async fn cancel_upload(&self, repo: &RepositoryName, id: UploadId) -> Result<(), RegistryError> {
        let (_, version) = self.upload_session(repo, id).await?;
        self.close_session(id, Some(version)).await;
        Ok(())
    }

    async fn close_session(&self, id: UploadId, version: Option<u64>) {
        let key = keys::upload(id);
        let txn = Txn::new().expect(key.clone(), version.map_or(Expect::Present, Expect::Version)).delete(key).lazy();
        if let Err(e) = self.meta.commit(txn).await {
            tracing::debug!(upload = %id, error = %e, "upload session already gone");
        }
        self.blobs.abort_upload(id).await;
    }
}
