//! The multipart side of the staging seam (S3, and the in-memory store of tests): an upload's bytes become the
//! parts of one multipart upload of the object store. Parts are [`crate::blobs::DEFAULT_PART_SIZE`] (8 MiB) for
//! the first 1,000, then double every 1,000 parts (so the 10,000-part limit is past 8 TiB); only the last part may
//! be smaller. Client chunks of any size are gathered into parts; the bytes after the last full part (the tail)
//! are kept between requests as small objects under `uploads/<id>/` (one per request that left bytes, merged into
//! one past [`MAX_TAIL_OBJECTS`]), never in one process's memory, so the next chunk may arrive at another replica.
//! A request thus writes only its own bytes; the tail is read back once, when it becomes part of a part. What is staged (multipart id, part ETags and sizes, the tail) is recorded
//! in the upload session ([`StagedUpload`]); memory per writer is one part being gathered and up to
//! [`PARTS_IN_FLIGHT`] being uploaded (parts go up concurrently: one S3 request at a time leaves the link idle
//! between parts, and a slow-to-write store at a fraction of its speed).
//!
//! Part numbers are the index in the session's part list: a writer uploads part `n` only under a live claim on
//! the session (renewed before every part, so that it has two thirds of the lease left, and while a part is in
//! flight), and a part a failed writer uploaded past the session's list is simply uploaded again by the next.
//! Should a writer outlive its claim anyway (cut off from the metadata store but not from S3 while a part is on
//! its way), completion fails on S3's ETag check of every part rather than publishing other bytes.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use names::{DigestHasher, UploadId};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::task::JoinHandle;

use crate::blobs::{BlobError, BlobStore};
use crate::mapped::Gathered;
use crate::paths;
use crate::uploads::Lease;

/// S3's largest part.
const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;

/// Parts of the same size come in runs of this many; each run's parts are twice the previous run's.
const PARTS_PER_SIZE: usize = 1000;

/// Parts of one writer uploaded at the same time (each in its own task), while the next is gathered. A failed
/// part cancels the ones after it, so that the recorded parts are always the first `n`. Four, as moto's own best
/// put: with two, pushes reached 75–83% of moto's speed, with four 92–99% (`bench --only s3`, figures in
/// bench/README.md); a writer then holds up to five parts (40 MiB of 8 MiB parts), and `tests/s3_measure.rs`
/// bounds the RSS growth of a 256 MiB push at 64 MiB.
pub const PARTS_IN_FLIGHT: usize = 4;

/// A tail made of more objects than this is merged into one when the next request saves it.
pub const MAX_TAIL_OBJECTS: usize = 16;

/// The size of part `index` (from 0) for parts of `base` bytes at first.
pub fn part_size(base: u64, index: usize) -> u64 {
    let doublings = (index / PARTS_PER_SIZE).min(30) as u32;
    base.saturating_mul(1 << doublings).min(MAX_PART)
}

/// What a multipart store holds of an upload, as recorded in its session.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StagedUpload {
    /// The multipart upload, once its first part is on its way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipart: Option<MultipartUpload>,
    /// The parts uploaded, in order (part `i` has S3 part number `i + 1`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<StagedPart>,
    /// The bytes after the last part, in order: one object per request that left some.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tail: Vec<StagedTail>,
}

impl StagedUpload {
    pub fn is_empty(&self) -> bool {
        self.multipart.is_none() && self.parts.is_empty() && self.tail.is_empty()
    }

    /// Bytes in the parts.
    pub fn parts_size(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MultipartUpload {
    /// The object it completes into.
    pub target: String,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StagedPart {
    pub etag: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StagedTail {
    pub object: String,
    pub size: u64,
}

type InFlight = JoinHandle<Result<PartId, object_store::Error>>;

/// One writer's multipart appends: resumes from the session's state, gathers parts, uploads up to
/// [`PARTS_IN_FLIGHT`] of them in the background while the next is gathered.
pub(crate) struct Appender {
    store: Arc<dyn ObjectStore>,
    mp: Arc<dyn MultipartStore>,
    /// The upload whose tail this writes; `None` for a one-shot write (pull-through) that keeps no tail.
    id: Option<UploadId>,
    target: Path,
    base: u64,
    /// The parts recorded and uploaded (its `tail` is unused: see `segments`).
    state: StagedUpload,
    /// Tail objects not yet in a part (the session's, then this writer's), in order; then come the bytes of `buf`.
    segments: Vec<StagedTail>,
    /// Tail objects this writer folded into parts (obsolete once the new state is recorded).
    consumed: Vec<Path>,
    /// Bytes received by this writer and not yet in a part nor in a tail object.
    buf: Gathered,
    /// Parts on their way, in part order, with their sizes.
    in_flight: VecDeque<(InFlight, u64)>,
    /// This writer created the multipart upload without a session to record it in: it aborts it on failure.
    owned: bool,
}

impl Appender {
    /// Resumes from `state` (the session's). The tail stays where it is until a part needs it.
    pub(crate) async fn resume(
        store: &BlobStore,
        mp: Arc<dyn MultipartStore>,
        id: Option<UploadId>,
        target: Path,
        state: &StagedUpload,
    ) -> Result<Appender, BlobError> {
        let base = store.part_size;
        let mut state = state.clone();
        let segments = std::mem::take(&mut state.tail);
        let room = part_size(base, state.parts.len()).saturating_sub(segments.iter().map(|t| t.size).sum());
        Ok(Appender {
            store: store.store().clone(),
            mp,
            id,
            target,
            base,
            state,
            segments,
            consumed: Vec::new(),
            buf: Gathered::with_capacity(room as usize),
            in_flight: VecDeque::new(),
            owned: false,
        })
    }

    /// Bytes gathered for the next part: the tail objects' and `buf`'s.
    fn pending(&self) -> u64 {
        self.segments.iter().map(|t| t.size).sum::<u64>() + self.buf.len() as u64
    }

    /// The gathered bytes in memory (tail objects read back, then `buf`); the tail objects become obsolete.
    async fn gather(&mut self) -> Result<Bytes, BlobError> {
        if self.segments.is_empty() {
            let next = Gathered::with_capacity(self.next_part_size() as usize);
            return Ok(std::mem::replace(&mut self.buf, next).freeze());
        }
        let mut out = Gathered::with_capacity(self.pending() as usize);
        let mut found = self.state.parts_size();
        let expected = found + self.pending();
        for t in std::mem::take(&mut self.segments) {
            let path = Path::from(&*t.object);
            let bytes = match self.store.get(&path).await {
                Ok(r) => r.bytes().await?,
                Err(object_store::Error::NotFound { .. }) => Bytes::new(),
                Err(e) => return Err(e.into()),
            };
            found += bytes.len() as u64;
            if bytes.len() as u64 != t.size {
                return Err(BlobError::StagingLost { expected, found });
            }
            out.extend_from_slice(&bytes);
            self.consumed.push(path);
        }
        out.extend_from_slice(self.buf.as_slice());
        self.buf = Gathered::with_capacity(self.next_part_size() as usize);
        Ok(out.freeze())
    }

    fn next_part_size(&self) -> u64 {
        part_size(self.base, self.state.parts.len() + self.in_flight.len())
    }

    /// Streams `body` in, feeding `hasher`; stops with [`BlobError::TooLarge`] past `limit` bytes. Full parts are
    /// uploaded as they fill; the rest stays gathered for [`Appender::save_tail`] or [`Appender::complete`].
    pub(crate) async fn write<S, E>(
        &mut self,
        mut body: S,
        hasher: &mut DigestHasher,
        limit: Option<u64>,
        lease: &mut Lease,
    ) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut written = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| BlobError::Body(e.to_string()))?;
            written += chunk.len() as u64;
            if let Some(l) = limit.filter(|l| written > *l) {
                return Err(BlobError::TooLarge(l));
            }
            hasher.update(&chunk);
            lease.keep().await?;
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let room = self.next_part_size().saturating_sub(self.pending()) as usize;
                let take = room.min(rest.len());
                self.buf.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if self.pending() >= self.next_part_size() {
                    self.send_part(lease).await?;
                }
            }
        }
        self.settle(lease).await?;
        Ok(written)
    }

    /// Creates the multipart upload on first use and records it in the session at once (so that it is aborted
    /// with the upload even if this writer dies).
    async fn multipart(&mut self, lease: &mut Lease) -> Result<String, BlobError> {
        if let Some(m) = &self.state.multipart {
            return Ok(m.id.clone());
        }
        let id = self.mp.create_multipart(&self.target).await?;
        let upload = MultipartUpload { target: self.target.to_string(), id: id.clone() };
        if let Err(e) = lease.record(|s| s.staged.multipart = Some(upload.clone())).await {
            let _ = self.mp.abort_multipart(&self.target, &id).await;
            return Err(e);
        }
        self.owned = self.id.is_none();
        self.state.multipart = Some(upload);
        Ok(id)
    }

    /// Uploads the gathered part in the background (once fewer than [`PARTS_IN_FLIGHT`] are on their way).
    async fn send_part(&mut self, lease: &mut Lease) -> Result<(), BlobError> {
        let multipart_id = self.multipart(lease).await?;
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.settle_one(lease).await?;
        }
        lease.keep().await?;
        let size = self.next_part_size() as usize;
        let data = self.gather().await?;
        let index = self.state.parts.len() + self.in_flight.len();
        let (mp, target) = (self.mp.clone(), self.target.clone());
        let len = data.len() as u64;
        debug_assert_eq!(data.len(), size);
        let task =
            tokio::spawn(async move { mp.put_part(&target, &multipart_id, index, PutPayload::from(data)).await });
        self.in_flight.push_back((task, len));
        Ok(())
    }

    /// Waits for every part in flight and adds them to the state.
    async fn settle(&mut self, lease: &mut Lease) -> Result<(), BlobError> {
        while !self.in_flight.is_empty() {
            self.settle_one(lease).await?;
        }
        Ok(())
    }

    /// Waits for the oldest part in flight and adds it to the state, renewing the claim meanwhile (a large part on
    /// a slow link may take longer than the lease). When it failed, the parts after it are cancelled and dropped:
    /// the state only ever holds the first parts, in order.
    async fn settle_one(&mut self, lease: &mut Lease) -> Result<(), BlobError> {
        let Some((mut task, size)) = self.in_flight.pop_front() else { return Ok(()) };
        let mut finished = false;
        let part = loop {
            tokio::select! {
                done = &mut task => {
                    finished = true;
                    break done.map_err(|e| BlobError::Io(std::io::Error::other(e))).and_then(|r| Ok(r?));
                }
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {
                    if let Err(e) = lease.keep().await {
                        break Err(e);
                    }
                }
            }
        };
        match part {
            Ok(part) => {
                self.state.parts.push(StagedPart { etag: part.content_id, size });
                Ok(())
            }
            Err(e) => {
                // Cancelled and waited for: none of them may land after this writer lets go of its claim.
                if !finished {
                    task.abort();
                    let _ = task.await;
                }
                for (later, _) in self.in_flight.drain(..) {
                    later.abort();
                    let _ = later.await;
                }
                Err(e)
            }
        }
    }

    /// Stores the bytes this writer gathered as a new tail object (merging the tail into one object when it has
    /// grown past [`MAX_TAIL_OBJECTS`]). Returns the state to record and the tail objects it makes obsolete (to
    /// delete once the state is recorded).
    pub(crate) async fn save_tail(mut self, lease: &mut Lease) -> Result<(StagedUpload, Vec<Path>), BlobError> {
        self.settle(lease).await?;
        if !self.buf.is_empty() {
            let id = self.id.ok_or_else(|| BlobError::Config("a one-shot multipart write keeps no tail".into()))?;
            let bytes = if self.segments.len() >= MAX_TAIL_OBJECTS {
                self.gather().await?
            } else {
                std::mem::take(&mut self.buf).freeze()
            };
            let start = self.state.parts_size() + self.segments.iter().map(|t| t.size).sum::<u64>();
            let path = paths::upload_tail(id, start);
            let size = bytes.len() as u64;
            self.store.put(&path, PutPayload::from(bytes)).await?;
            self.segments.push(StagedTail { object: path.to_string(), size });
        }
        self.state.tail = self.segments;
        Ok((self.state, self.consumed))
    }

    /// Makes the target object: the gathered bytes become the last part and the multipart upload completes (or,
    /// when no part was uploaded, one plain PUT writes them). The caller has verified the digest. Nothing is
    /// copied: the cost is S3's completion, whatever the size.
    pub(crate) async fn complete(mut self, lease: &mut Lease) -> Result<(), BlobError> {
        self.settle(lease).await?;
        let data = self.gather().await?;
        if self.state.parts.is_empty() {
            if let Some(m) = self.state.multipart.take() {
                // Created by a writer that failed before its first part was recorded: a plain PUT is simpler.
                let _ = self.mp.abort_multipart(&self.target, &m.id).await;
            }
            self.store.put(&self.target, PutPayload::from(data)).await?;
            return Ok(());
        }
        if !data.is_empty() {
            lease.keep().await?;
            let id = self.multipart(lease).await?;
            let index = self.state.parts.len();
            let size = data.len() as u64;
            let part = self.mp.put_part(&self.target, &id, index, PutPayload::from(data)).await?;
            self.state.parts.push(StagedPart { etag: part.content_id, size });
        }
        let id = self.multipart(lease).await?;
        let parts = self.state.parts.iter().map(|p| PartId { content_id: p.etag.clone() }).collect();
        self.mp.complete_multipart(&self.target, &id, parts).await?;
        Ok(())
    }

    /// Waits for the parts in flight, if any, and records nothing: a writer that failed stops touching the
    /// multipart upload before its claim is released.
    pub(crate) async fn stop(mut self) {
        for (task, _) in self.in_flight.drain(..) {
            let _ = task.await;
        }
    }

    /// The state this writer got to (for discarding everything it and earlier writers staged).
    pub(crate) async fn into_state(mut self) -> StagedUpload {
        let _ = self.settle(&mut Lease::detached()).await;
        let mut state = self.state;
        state.tail = self.segments;
        state
    }

    /// Aborts the multipart upload when no session records it (a failed one-shot write).
    pub(crate) async fn discard_unrecorded(mut self) {
        let _ = self.settle(&mut Lease::detached()).await;
        if let (true, Some(m)) = (self.owned, &self.state.multipart) {
            if let Err(e) = self.mp.abort_multipart(&self.target, &m.id).await {
                tracing::warn!(target = %self.target, error = %e, "could not abort a multipart upload");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_so_that_ten_thousand_hold_a_large_layer() {
        let base = 8 * 1024 * 1024;
        assert_eq!(part_size(base, 0), base);
        assert_eq!(part_size(base, 999), base);
        assert_eq!(part_size(base, 1000), 2 * base);
        let total: u64 = (0..10_000).map(|i| part_size(base, i)).sum();
        assert!(total > 5 * (1 << 40), "10,000 parts hold more than 5 TiB: {total}");
        assert!((0..10_000).all(|i| part_size(base, i) <= MAX_PART));
    }
}
