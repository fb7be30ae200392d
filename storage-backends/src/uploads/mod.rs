//! Upload sessions and their one writer at a time, over the staging seam ([`crate::staging`] for local files,
//! [`crate::multipart`] for multipart stores). A session is a metadata record (`uploads/<id>`: repository, bytes
//! received, saved hash state, the writer's lease, and what is staged: multipart id, part ETags and sizes, the
//! tail object), so any replica sharing the two stores can continue or finish an upload another one started.
//!
//! One writer at a time, across replicas, by compare-and-swap on the session: a writer claims it by writing
//! `writer: {id, until}` at the version it read (refused while another claim is live: the caller answers 416),
//! renews the claim (a CAS again) while a long body streams, and clears it with the final CAS that records the new
//! size, hash state and staging state. A dead writer's claim expires after the lease ([`crate::blobs::DEFAULT_LEASE`])
//! and another replica continues from the session's size. What a failed writer staged past the session's size is
//! never used: the next writer overwrites it (a local file is truncated, a multipart part number is uploaded again).
//!
//! Called by the registry's upload service (which checks the repository and links the blob); never calls HTTP.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt, TryStreamExt};
use names::{Algorithm, Digest, DigestHasher, RepositoryName, UploadId};
use object_store::path::Path;
use object_store::ObjectStoreExt;

use crate::blobs::{BlobError, BlobStore, Staging};
use crate::meta::{encode, MetadataStoreExt};
use crate::multipart::{Appender, StagedUpload};
use crate::{keys, paths, Expect, StoreError, Txn};

mod lease;
pub(crate) use lease::Lease;

/// A blob upload in progress.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct UploadSession {
    pub repository: RepositoryName,
    /// Bytes received so far.
    pub size: u64,
    /// The hash state after `size` bytes (see [`DigestHasher::save`]), hex-encoded.
    pub hash_state: String,
    pub started: DateTime<Utc>,
    /// When a writer last claimed, renewed or released the session (absent in sessions written before it was
    /// recorded: then `started`). [`crate::purge`] removes sessions untouched for longer than its TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub touched: Option<DateTime<Utc>>,
    /// Who started the upload (the caller's name, as access control knows it); only they may continue, finish or
    /// cancel it. Absent in sessions started without one (and in those written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The writer appending right now, if its claim is live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<WriterClaim>,
    /// What a multipart store holds of the `size` bytes (empty for local staging files).
    #[serde(default, skip_serializing_if = "StagedUpload::is_empty")]
    pub staged: StagedUpload,
}

/// A writer's claim on a session: valid until `until` (wall clock) unless renewed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WriterClaim {
    pub id: String,
    pub until: DateTime<Utc>,
}

/// Where a chunk claims to start (`Content-Range`), when the client said.
pub type ChunkStart = Option<u64>;

/// Why [`BlobStore::finish_upload_linked`] failed: the upload itself, or the caller's link (`X`).
#[derive(Debug)]
pub enum FinishError<X> {
    Blob(BlobError),
    Link(X),
}

impl UploadSession {
    /// The hasher after the session's bytes.
    pub fn hasher(&self) -> Result<DigestHasher, BlobError> {
        hex::decode(&self.hash_state)
            .ok()
            .and_then(|b| DigestHasher::restore(&b))
            .ok_or_else(|| BlobError::Config("upload session holds an unreadable hash state".into()))
    }

    /// Whether another writer's claim is live now.
    pub fn busy(&self) -> bool {
        self.writer.as_ref().is_some_and(|w| w.until > Utc::now())
    }

    /// When the session was last written by a writer (or started).
    pub fn last_touched(&self) -> DateTime<Utc> {
        self.touched.unwrap_or(self.started).max(self.started)
    }
}

/// One writer's side of the staging seam.
enum Writer {
    Local(crate::staging::UploadLock),
    Multipart(Appender),
}

impl Writer {
    /// Waits for whatever this writer still has in flight, recording nothing (before letting go of the claim).
    async fn stop(self) {
        if let Writer::Multipart(app) = self {
            app.stop().await;
        }
    }

    async fn open(store: &BlobStore, id: UploadId, session: &UploadSession, target: Path) -> Result<Writer, BlobError> {
        match store.staging() {
            Staging::Local(_) => match store.lock_upload(id).await? {
                Some(lock) => Ok(Writer::Local(lock)),
                // A writer in a process whose claim expired, still writing: it will lose its final CAS.
                None => Err(BlobError::RangeInvalid { have: session.size, start: session.size }),
            },
            Staging::Multipart(mp) => {
                Ok(Writer::Multipart(Appender::resume(store, mp.clone(), Some(id), target, &session.staged).await?))
            }
        }
    }

    async fn write<S, E>(
        &mut self,
        offset: u64,
        body: S,
        hasher: &mut DigestHasher,
        limit: Option<u64>,
        lease: &mut Lease,
    ) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        match self {
            Writer::Local(lock) => lock.write_at(offset, body, hasher, limit, lease).await,
            Writer::Multipart(app) => app.write(body, hasher, limit, lease).await,
        }
    }
}

/// A body whose bytes are not there: for finishing with no last chunk.
pub fn no_body() -> futures::stream::Empty<Result<Bytes, std::io::Error>> {
    futures::stream::empty()
}

impl BlobStore {
    /// Opens a new upload session for `repository`.
    pub async fn start_upload(&self, repository: &RepositoryName) -> Result<UploadId, BlobError> {
        self.start_upload_for(repository, None).await
    }

    /// Opens a new upload session for `repository`, owned by `owner` ([`UploadSession::owner`]).
    pub async fn start_upload_for(
        &self,
        repository: &RepositoryName,
        owner: Option<String>,
    ) -> Result<UploadId, BlobError> {
        let id = UploadId::random();
        let session = UploadSession {
            repository: repository.clone(),
            size: 0,
            hash_state: hex::encode(DigestHasher::new(Algorithm::Sha256).save()),
            started: Utc::now(),
            touched: None,
            owner,
            writer: None,
            staged: StagedUpload::default(),
        };
        let key = keys::upload(id);
        // Sessions are written lazily: they describe staged bytes that are not durable before the commit either.
        self.meta()?.commit(Txn::new().expect(key.clone(), Expect::Absent).put(key, encode(&session)).lazy()).await?;
        Ok(id)
    }

    /// Session `id` with its version, when it exists.
    pub async fn upload_session(&self, id: UploadId) -> Result<Option<(UploadSession, u64)>, BlobError> {
        // The latest copy: a status request must report chunks that went through other replicas a moment ago.
        Ok(self.meta()?.get_latest_json::<UploadSession>(&keys::upload(id)).await?)
    }

    /// Appends a chunk. `start` is the chunk's first byte offset from `Content-Range`, when given; it must equal
    /// the bytes received so far. Returns the new size. A chunk racing another writer of the same upload (on any
    /// replica) is refused with [`BlobError::RangeInvalid`]; a chunk that fails halfway changes nothing.
    pub async fn append_upload<S, E>(&self, id: UploadId, start: ChunkStart, body: S) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut lease = Lease::claim(self, id, start).await?;
        let session = lease.session().cloned().ok_or(BlobError::LeaseLost)?;
        let mut hasher = session.hasher()?;
        let target = session.staged.multipart.as_ref().map_or_else(|| paths::uploaded(id), |m| Path::from(&*m.target));
        let mut writer = match Writer::open(self, id, &session, target).await {
            Ok(w) => w,
            Err(e) => {
                lease.abandon().await;
                return Err(e);
            }
        };
        let written = match writer.write(session.size, body, &mut hasher, None, &mut lease).await {
            Ok(n) => n,
            Err(e) => {
                // A part still on its way must land before the claim goes: the next writer uploads the same
                // part number, and a late PUT of this one would replace its bytes.
                writer.stop().await;
                lease.abandon().await;
                return Err(e);
            }
        };
        if written == 0 {
            lease.abandon().await;
            return Ok(session.size);
        }
        let size = session.size + written;
        let hash_state = hex::encode(hasher.save());
        let had = session.size;
        match writer {
            Writer::Local(mut lock) => {
                lock.write_back();
                lease.release(size, hash_state, StagedUpload::default()).await.map_err(|e| lost(e, had))?;
            }
            Writer::Multipart(app) => {
                let (staged, obsolete) = match app.save_tail(&mut lease).await {
                    Ok(saved) => saved,
                    Err(e) => {
                        lease.abandon().await;
                        return Err(e);
                    }
                };
                let new: Vec<Path> = staged
                    .tail
                    .iter()
                    .filter(|t| !session.staged.tail.contains(t))
                    .map(|t| Path::from(&*t.object))
                    .collect();
                match lease.release(size, hash_state, staged).await {
                    Ok(()) => self.delete_all_quietly(obsolete).await,
                    Err(e) => {
                        self.delete_all_quietly(new).await;
                        return Err(lost(e, had));
                    }
                }
            }
        }
        Ok(size)
    }

    async fn delete_all_quietly(&self, paths: Vec<Path>) {
        for p in paths {
            self.delete_quietly(Some(p)).await;
        }
    }

    async fn delete_quietly(&self, path: Option<Path>) {
        if let Some(p) = path {
            if let Err(e) = self.store().delete(&p).await {
                tracing::warn!(object = %p, error = %e, "could not remove an obsolete upload tail");
            }
        }
    }

    /// Finishes upload `id`: appends the optional last chunk, verifies `digest` and makes the blob visible; then
    /// the session is gone. On a digest mismatch the session and its bytes are discarded and nothing is visible.
    /// Returns the blob's size. Finishing never copies the bytes: a local file is renamed into place, a multipart
    /// upload is completed where it was written (and, unless that is the content-addressed path because the
    /// digest was known before the first byte, a location record names it).
    pub async fn finish_upload<S, E>(
        &self,
        id: UploadId,
        digest: &Digest,
        start: ChunkStart,
        body: S,
    ) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let nothing = |_| async { Ok::<(), std::convert::Infallible>(()) };
        self.finish_upload_linked(id, digest, start, body, nothing).await.map_err(|e| match e {
            FinishError::Blob(e) => e,
            FinishError::Link(never) => match never {},
        })
    }

    /// [`Self::finish_upload`], then `link(size)` (the caller's commit of the reference that keeps the blob, such
    /// as a repository link), run at the one moment that keeps it safe from a garbage-collection sweep: after the
    /// bytes are published, or, when the content was stored already, while this upload still holds its own copy.
    /// Then the content is checked again and, when a sweep deleted it between that check and the link, this
    /// upload's copy is published in its place: an acknowledged upload never names missing content. When `link`
    /// fails the blob may be visible (it was published), but nothing of the caller's is.
    pub async fn finish_upload_linked<S, E, L, F, X>(
        &self,
        id: UploadId,
        digest: &Digest,
        start: ChunkStart,
        body: S,
        link: L,
    ) -> Result<u64, FinishError<X>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
        L: FnOnce(u64) -> F,
        F: std::future::Future<Output = Result<(), X>>,
    {
        let blob = FinishError::Blob;
        let mut lease = Lease::claim(self, id, start).await.map_err(blob)?;
        let session = lease.session().cloned().ok_or(FinishError::Blob(BlobError::LeaseLost))?;
        // Hash with the client's algorithm from the start when nothing was received yet.
        let fresh = session.size == 0 && session.staged.is_empty();
        let mut hasher =
            if session.size == 0 { DigestHasher::new(digest.algorithm()) } else { session.hasher().map_err(blob)? };
        let target = match &session.staged.multipart {
            Some(m) => Path::from(&*m.target),
            // The digest is known before the first byte: straight to the content-addressed path.
            None if fresh => paths::blob(digest),
            None => paths::uploaded(id),
        };
        let mut writer = match Writer::open(self, id, &session, target.clone()).await {
            Ok(w) => w,
            Err(e) => {
                lease.abandon().await;
                return Err(blob(e));
            }
        };
        let written = match writer.write(session.size, body, &mut hasher, None, &mut lease).await {
            Ok(n) => n,
            Err(e) => {
                if let Writer::Multipart(app) = writer {
                    app.discard_unrecorded().await;
                }
                lease.abandon().await;
                return Err(blob(e));
            }
        };
        let size = session.size + written;
        let hashed = (hasher.algorithm() == digest.algorithm()).then(|| hasher.finish());
        if let Some(actual) = hashed.as_ref().filter(|a| *a != digest) {
            self.discard(writer, lease, id).await;
            return Err(blob(BlobError::DigestMismatch { expected: digest.clone(), actual: actual.clone(), size }));
        }
        let stored = match self.stat(digest).await {
            Ok(stored) => stored.is_some(),
            Err(e) => {
                lease.abandon().await;
                return Err(blob(e));
            }
        };
        if stored {
            // Linked while this upload still holds its bytes: a sweep that deleted the content after the check
            // above (its tombstone gone by the time the link committed) is answered by publishing them.
            if let Err(e) = link(size).await {
                self.discard(writer, lease, id).await;
                return Err(FinishError::Link(e));
            }
            match self.stat(digest).await {
                Ok(Some(_)) => {
                    self.discard(writer, lease, id).await;
                    return Ok(size);
                }
                Ok(None) => {
                    tracing::warn!(%digest, "content collected while an upload of it finished: storing it again");
                }
                Err(e) => {
                    self.discard(writer, lease, id).await;
                    return Err(blob(e));
                }
            }
            return self
                .publish_and_close(writer, lease, id, digest, &target, hashed.is_some(), size)
                .await
                .map_err(blob);
        }
        self.publish_and_close(writer, lease, id, digest, &target, hashed.is_some(), size).await.map_err(blob)?;
        // Published just now (a fresh modification time): a sweep keeps it for its grace period.
        link(size).await.map_err(FinishError::Link)?;
        Ok(size)
    }

    /// [`Self::publish`], then the session is closed: returns the size, or [`BlobError::DigestMismatch`] when the
    /// bytes hash to another digest (nothing visible); on an error the claim is released for a retry.
    #[allow(clippy::too_many_arguments)]
    async fn publish_and_close(
        &self,
        writer: Writer,
        mut lease: Lease,
        id: UploadId,
        digest: &Digest,
        target: &Path,
        verified: bool,
        size: u64,
    ) -> Result<u64, BlobError> {
        match self.publish(writer, &mut lease, digest, target, verified, size).await {
            Ok(outcome) => {
                self.close_and_clean(lease, id, &StagedUpload::default()).await;
                match outcome {
                    None => Ok(size),
                    Some(actual) => Err(BlobError::DigestMismatch { expected: digest.clone(), actual, size }),
                }
            }
            Err(e) => {
                lease.abandon().await;
                Err(e)
            }
        }
    }

    /// Makes the `size` bytes `writer` staged visible as `digest` (already verified when `verified`, else checked
    /// here: then the other digest is returned and nothing is visible).
    async fn publish(
        &self,
        writer: Writer,
        lease: &mut Lease,
        digest: &Digest,
        target: &Path,
        verified: bool,
        size: u64,
    ) -> Result<Option<Digest>, BlobError> {
        match writer {
            Writer::Local(lock) => {
                if !verified {
                    let actual = lock.hash(size, digest.algorithm()).await?;
                    if &actual != digest {
                        return Ok(Some(actual));
                    }
                }
                lock.commit(size, digest).await?;
            }
            Writer::Multipart(app) => {
                app.complete(lease).await?;
                if !verified {
                    // The upload's own object is never served by itself: hashing it there shows nothing.
                    let actual = self.hash_object(target, digest.algorithm()).await?;
                    if &actual != digest {
                        self.delete_quietly(Some(target.clone())).await;
                        return Ok(Some(actual));
                    }
                }
                if target != &paths::blob(digest) && !self.record_location(digest, target, size).await? {
                    // Another upload of the same content was recorded first.
                    self.delete_quietly(Some(target.clone())).await;
                }
            }
        }
        Ok(None)
    }

    /// Hashes a whole object with `algorithm`.
    async fn hash_object(&self, path: &Path, algorithm: Algorithm) -> Result<Digest, BlobError> {
        let mut hasher = DigestHasher::new(algorithm);
        let mut s = self.store().get(path).await?.into_stream();
        while let Some(chunk) = s.next().await {
            hasher.update(&chunk?);
        }
        Ok(hasher.finish())
    }

    /// Drops what `writer` holds and closes the session with everything it staged.
    async fn discard(&self, writer: Writer, lease: Lease, id: UploadId) {
        let staged = match writer {
            Writer::Local(lock) => {
                drop(lock);
                StagedUpload::default()
            }
            Writer::Multipart(app) => app.into_state().await,
        };
        self.close_and_clean(lease, id, &staged).await;
    }

    /// Deletes the session and what it staged.
    async fn close_and_clean(&self, lease: Lease, id: UploadId, staged: &StagedUpload) {
        if let Err(e) = lease.close().await {
            tracing::warn!(upload = %id, error = %e, "could not delete an upload session");
        }
        self.clean_staging(id, staged).await;
    }

    /// Cancels an upload and discards what it received (a writer still appending loses its claim).
    pub async fn cancel_upload(&self, id: UploadId) -> Result<(), BlobError> {
        let meta = self.meta()?;
        let key = keys::upload(id);
        let Some((session, version)) = meta.get_json::<UploadSession>(&key).await? else {
            return Err(BlobError::UploadUnknown(id));
        };
        match meta.commit(Txn::new().expect(key.clone(), Expect::Version(version)).delete(key).lazy()).await {
            Ok(_) => {}
            Err(StoreError::Conflict { .. }) => {
                // Changed meanwhile (a chunk was recorded, or the upload finished): try on what is there now.
                return Box::pin(self.cancel_upload(id)).await;
            }
            Err(e) => return Err(e.into()),
        }
        self.clean_staging(id, &session.staged).await;
        Ok(())
    }

    /// Removes what upload `id` staged: its multipart upload (aborted) and everything under `uploads/<id>/`.
    /// Best effort: leftovers are invisible and only cost space.
    pub(crate) async fn clean_staging(&self, id: UploadId, staged: &StagedUpload) {
        if let (Some(m), Staging::Multipart(mp)) = (&staged.multipart, self.staging()) {
            if let Err(e) = mp.abort_multipart(&Path::from(&*m.target), &m.id).await {
                tracing::debug!(upload = %id, error = %e, "could not abort a multipart upload");
            }
        }
        if let Some(root) = self.local_root() {
            let dir = root.join(paths::upload_dir(id).as_ref());
            let _ = tokio::task::spawn_blocking(move || crate::staging::remove_dir(&dir)).await;
            return;
        }
        let dir = paths::upload_dir(id);
        let locations = self.store().list(Some(&dir)).map_ok(|m| m.location).boxed();
        let mut deleted = self.store().delete_stream(locations);
        while let Some(r) = deleted.next().await {
            if let Err(e) = r {
                tracing::warn!(upload = %id, error = %e, "could not remove a staged upload object");
            }
        }
    }

    /// Stores a body whose digest is known before its first byte (pull-through): streamed to the
    /// content-addressed path and made visible only once exactly `size` bytes arrived and matched `digest`.
    /// More bytes stop at [`BlobError::TooLarge`]; fewer or other bytes are [`BlobError::DigestMismatch`].
    pub async fn put_stream<S, E>(&self, digest: &Digest, size: u64, body: S) -> Result<(), BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.put_stream_then(digest, size, body, || {}).await
    }

    /// [`BlobStore::put_stream`], calling `verified` as soon as every byte arrived and matched `digest` and
    /// `size`, before the blob is made durable and visible (a local sync and rename, or completing the multipart
    /// upload): a caller streaming the same bytes elsewhere may let its last ones go then, without waiting for
    /// the disk. `verified` is not called when the bytes do not verify; the store may still fail after it.
    pub async fn put_stream_then<S, E>(
        &self,
        digest: &Digest,
        size: u64,
        body: S,
        verified: impl FnOnce(),
    ) -> Result<(), BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut hasher = DigestHasher::new(digest.algorithm());
        let mut lease = Lease::detached();
        match self.staging() {
            Staging::Local(_) => {
                let id = UploadId::random();
                let mut lock = self.lock_upload(id).await?.ok_or(BlobError::LeaseLost)?;
                let written = lock.write_at(0, body, &mut hasher, Some(size), &mut lease).await;
                match written.and_then(|n| verify(digest, hasher, n, size)) {
                    Ok(()) => {
                        verified();
                        lock.commit(size, digest).await
                    }
                    Err(e) => {
                        drop(lock);
                        self.clean_staging(id, &StagedUpload::default()).await;
                        Err(e)
                    }
                }
            }
            Staging::Multipart(mp) => {
                let target = paths::blob(digest);
                let mut app = Appender::resume(self, mp.clone(), None, target, &StagedUpload::default()).await?;
                let written = app.write(body, &mut hasher, Some(size), &mut lease).await;
                match written.and_then(|n| verify(digest, hasher, n, size)) {
                    Ok(()) => {
                        verified();
                        app.complete(&mut lease).await
                    }
                    Err(e) => {
                        app.discard_unrecorded().await;
                        Err(e)
                    }
                }
            }
        }
    }
}

/// A lost claim, as the client hears it: the chunk was not taken (416, with the size the session had).
fn lost(e: BlobError, had: u64) -> BlobError {
    match e {
        BlobError::LeaseLost => BlobError::RangeInvalid { have: had, start: had },
        e => e,
    }
}

/// Whether `n` bytes hashed by `hasher` are blob `digest` of `size` bytes (a digest that matches fewer bytes than
/// announced is not the blob).
fn verify(digest: &Digest, hasher: DigestHasher, n: u64, size: u64) -> Result<(), BlobError> {
    match hasher.finish() {
        actual if &actual == digest && n == size => Ok(()),
        actual => Err(BlobError::DigestMismatch { expected: digest.clone(), actual, size: n }),
    }
}
