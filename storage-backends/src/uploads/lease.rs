//! The writer's claim on an upload session ([`Lease`]): claimed, renewed and released by compare-and-swap on the
//! session record, so one writer at a time appends across replicas. Used by the upload operations ([`super`]) and
//! the multipart writer ([`crate::multipart`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use names::UploadId;

use super::{ChunkStart, UploadSession, WriterClaim};
use crate::blobs::{BlobError, BlobStore};
use crate::meta::{encode, MetadataStore, MetadataStoreExt};
use crate::multipart::StagedUpload;
use crate::{keys, Expect, StoreError, Txn};

/// A claim on one session, from [`Lease::claim`]; or a detached one (a write without a session, such as
/// pull-through, where nothing is to be claimed). Dropping it without [`Lease::release`] or [`Lease::close`]
/// leaves the claim to expire.
pub(crate) struct Lease {
    held: Option<Held>,
}

struct Held {
    meta: Arc<dyn MetadataStore>,
    key: String,
    session: UploadSession,
    version: u64,
    duration: Duration,
    /// When to renew (a third of the lease after the last write of the claim).
    renew_at: Instant,
}

fn until(duration: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::seconds(30))
}

impl Lease {
    pub(crate) fn detached() -> Lease {
        Lease { held: None }
    }

    /// Claims session `id` for writing a chunk that starts at `start`. [`BlobError::RangeInvalid`] when the chunk
    /// does not start where the upload ends or another writer's claim is live.
    pub(super) async fn claim(store: &BlobStore, id: UploadId, start: ChunkStart) -> Result<Lease, BlobError> {
        let meta = store.meta()?.clone();
        let key = keys::upload(id);
        // A refusal is confirmed on the store's latest copy first: the chunk before this one may have gone
        // through another replica a moment ago, and this replica's copy may not have it yet.
        let mut latest = false;
        loop {
            let read: Option<(UploadSession, u64)> =
                if latest { meta.get_latest_json(&key).await? } else { meta.get_json(&key).await? };
            let Some((mut session, version)) = read else {
                if !std::mem::replace(&mut latest, true) {
                    continue;
                }
                return Err(BlobError::UploadUnknown(id));
            };
            let have = session.size;
            if session.busy() || start.is_some_and(|s| s != have) {
                if !std::mem::replace(&mut latest, true) {
                    continue;
                }
                return Err(BlobError::RangeInvalid { have, start: start.unwrap_or(have) });
            }
            session.writer = Some(WriterClaim { id: UploadId::random().to_string(), until: until(store.lease) });
            session.touched = Some(Utc::now());
            let txn = Txn::new().expect(key.clone(), Expect::Version(version)).put(key.clone(), encode(&session));
            match meta.commit(txn.lazy()).await {
                Ok(version) => {
                    let held = Held {
                        meta,
                        key,
                        session,
                        version,
                        duration: store.lease,
                        renew_at: Instant::now() + store.lease / 3,
                    };
                    return Ok(Lease { held: Some(held) });
                }
                // Someone wrote the session meanwhile (a writer claimed it, or finished): look again.
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The session as claimed (and as changed by [`Lease::record`]).
    pub(super) fn session(&self) -> Option<&UploadSession> {
        self.held.as_ref().map(|h| &h.session)
    }

    /// Renews the claim when a third of it has passed, so that it has at least two thirds left after this returns
    /// (the multipart writer calls it before every part it uploads). [`BlobError::LeaseLost`] when the session
    /// changed under the claim: the claim expired and another writer took over, or the upload was closed.
    pub(crate) async fn keep(&mut self) -> Result<(), BlobError> {
        match &self.held {
            Some(h) if Instant::now() >= h.renew_at => self.record(|_| {}).await,
            _ => Ok(()),
        }
    }

    /// Changes the session under the claim (and renews the claim); a no-op when detached.
    pub(crate) async fn record(&mut self, change: impl FnOnce(&mut UploadSession)) -> Result<(), BlobError> {
        let Some(h) = &mut self.held else { return Ok(()) };
        let mut next = h.session.clone();
        change(&mut next);
        next.touched = Some(Utc::now());
        if let Some(w) = &mut next.writer {
            w.until = until(h.duration);
        }
        let renew_at = Instant::now() + h.duration / 3;
        let txn = Txn::new().expect(h.key.clone(), Expect::Version(h.version)).put(h.key.clone(), encode(&next));
        match h.meta.commit(txn.lazy()).await {
            Ok(version) => {
                h.session = next;
                h.version = version;
                h.renew_at = renew_at;
                Ok(())
            }
            Err(StoreError::Conflict { .. }) => Err(BlobError::LeaseLost),
            Err(e) => Err(e.into()),
        }
    }

    /// Records the new state and lets go of the claim, in one CAS.
    pub(super) async fn release(
        mut self,
        size: u64,
        hash_state: String,
        staged: StagedUpload,
    ) -> Result<(), BlobError> {
        self.record(|s| {
            s.size = size;
            s.hash_state = hash_state;
            s.staged = staged;
            s.writer = None;
        })
        .await
    }

    /// Lets go of the claim, leaving the session as it was (after a failed write). Best effort: otherwise the
    /// claim expires.
    pub(super) async fn abandon(mut self) {
        if let Err(e) = self.record(|s| s.writer = None).await {
            tracing::debug!(error = %e, "could not release an upload claim");
        }
    }

    /// Deletes the session (the upload is finished or discarded). `false` when it was gone or taken over.
    pub(super) async fn close(self) -> Result<bool, BlobError> {
        let Some(h) = self.held else { return Ok(true) };
        let txn = Txn::new().expect(h.key.clone(), Expect::Version(h.version)).delete(h.key);
        match h.meta.commit(txn.lazy()).await {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
