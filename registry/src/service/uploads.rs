//! Upload sessions: start, append chunks, report progress, finish with digest verification, cancel. A session is a
//! metadata record (repository, bytes received, staged parts, saved hash state) written with compare-and-swap, so
//! a chunked upload may continue on another process or replica; its bytes are staged objects that become a blob
//! only after the digest matched.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;
use names::{Algorithm, Digest, DigestHasher, RepositoryName, UploadId};
use storage_backends::meta::encode;
use storage_backends::{keys, paths, Expect, MetadataStoreExt, StoreError, Txn};

use super::blobs::BlobLink;
use super::{Registry, RegistryError};

/// A blob upload in progress.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct UploadSession {
    pub repository: RepositoryName,
    /// Bytes received so far.
    pub size: u64,
    /// Staged part names, in order.
    pub parts: Vec<String>,
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
            parts: Vec::new(),
            hash_state: hex::encode(DigestHasher::new(Algorithm::Sha256).save()),
            started: Utc::now(),
        };
        let key = keys::upload(id);
        self.meta.commit(Txn::new().expect(key.clone(), Expect::Absent).put(key, encode(&session))).await?;
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
        let (mut session, version) = self.upload_session(repo, id).await?;
        session.check_start(start)?;
        let mut hasher = session.hasher()?;
        let part = paths::new_part_name(session.size);
        let written = self.blobs.write_part(id, &part, body, &mut hasher, None).await?;
        if written == 0 {
            return Ok(session.size);
        }
        session.size += written;
        session.parts.push(part.clone());
        session.hash_state = hex::encode(hasher.save());
        let key = keys::upload(id);
        let txn = Txn::new().expect(key.clone(), Expect::Version(version)).put(key, encode(&session));
        match self.meta.commit(txn).await {
            Ok(_) => Ok(session.size),
            Err(StoreError::Conflict { .. }) => {
                // Another chunk for the same offset won the race; ours is not part of the upload.
                self.blobs.delete_part(id, &part).await;
                let have = self.upload_session(repo, id).await?.0.size;
                Err(RegistryError::RangeInvalid { have, start: start.unwrap_or(have - written) })
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
        let (mut session, version) = self.upload_session(repo, id).await?;
        session.check_start(start)?;
        // Hash with the client's algorithm from the start when nothing was received yet.
        let mut hasher = if session.size == 0 { DigestHasher::new(digest.algorithm()) } else { session.hasher()? };
        let part = paths::new_part_name(session.size);
        let written = self.blobs.write_part(id, &part, body, &mut hasher, None).await?;
        if written > 0 {
            session.parts.push(part);
            session.size += written;
        }
        let actual = if hasher.algorithm() == digest.algorithm() {
            hasher.finish()
        } else {
            self.blobs.hash_parts(id, &session.parts, digest.algorithm()).await?
        };
        let key = keys::upload(id);
        if &actual != digest {
            self.close_session(id, Some(version)).await;
            return Err(RegistryError::DigestMismatch { expected: digest.clone(), actual });
        }
        // Claim the session first so two finishers cannot both commit.
        let claim = Txn::new().expect(key.clone(), Expect::Version(version)).delete(key);
        match self.meta.commit(claim).await {
            Ok(_) => {}
            Err(StoreError::Conflict { .. }) => return Err(RegistryError::UploadUnknown(id)),
            Err(e) => return Err(e.into()),
        }
        if self.blobs.stat(digest).await?.is_some() {
            self.blobs.abort_upload(id).await;
        } else {
            self.blobs.commit_upload(id, &session.parts, digest).await?;
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
        let txn = Txn::new().expect(key.clone(), version.map_or(Expect::Present, Expect::Version)).delete(key);
        if let Err(e) = self.meta.commit(txn).await {
            tracing::debug!(upload = %id, error = %e, "upload session already gone");
        }
        self.blobs.abort_upload(id).await;
    }
}
