//! Upload purging: removes upload sessions nobody has touched for longer than a TTL, with what they staged (local
//! staging files; on multipart stores the multipart upload aborted and the tail objects deleted), and staged
//! objects under `uploads/` that no session names any more (what a crash between closing a session and cleaning
//! its staging leaves). Called by the registry's background work on the replica holding the `uploads` lease
//! (`registry::background`), and by the blob suite.
//!
//! A session is purged only when no writer's claim on it is live and it was last touched (claimed, renewed,
//! released: [`UploadSession::last_touched`]) before the cutoff, and then by a compare-and-swap delete at the
//! version read: a writer that claims it meanwhile wins and the session stays. A writer whose claim had expired
//! and that still streams loses its final compare-and-swap, as it would to any other writer.
//!
//! Orphaned multipart uploads (created on S3 but named by no session) cannot be found here: `object_store` has no
//! call for S3's ListMultipartUploads. Every multipart upload is recorded in its session the moment it is created
//! ([`crate::multipart`]), so purging through sessions aborts all but those whose abort failed after the session
//! was deleted; for those, a bucket lifecycle rule (`AbortIncompleteMultipartUpload`) is the backstop.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use names::UploadId;
use object_store::path::Path;

use crate::blobs::{BlobError, BlobStore};
use crate::meta::MetadataStoreExt;
use crate::multipart::StagedUpload;
use crate::uploads::UploadSession;
use crate::{Expect, StoreError, Txn};

/// Sessions read per page of the listing.
const PAGE: usize = 500;

/// What one purge removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Upload sessions removed with their staged data.
    pub sessions: Vec<UploadId>,
    /// Bytes those sessions had received.
    pub bytes: u64,
    /// Staged objects' folders (`uploads/<id>/`) that no session named, removed.
    pub orphans: Vec<UploadId>,
}

impl BlobStore {
    /// Removes every upload session untouched for longer than `ttl` (and not claimed by a live writer) with its
    /// staged data, then every staging folder older than `ttl` that no session names. Sessions touched since they
    /// were read are left alone.
    pub async fn purge_uploads(&self, ttl: Duration) -> Result<PurgeReport, BlobError> {
        let cutoff = Utc::now() - chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let mut report = PurgeReport::default();
        self.purge_sessions(cutoff, &mut report).await?;
        self.purge_orphans(cutoff, &mut report).await?;
        Ok(report)
    }

    async fn purge_sessions(&self, cutoff: DateTime<Utc>, report: &mut PurgeReport) -> Result<(), BlobError> {
        let meta = self.meta()?.clone();
        let mut after: Option<String> = None;
        loop {
            let page = meta.list_json::<UploadSession>(crate::keys::UPLOADS, after.as_deref(), PAGE).await?;
            let Some((last, _, _)) = page.last() else { break };
            after = Some(last.clone());
            for (key, session, version) in page {
                if session.busy() || session.last_touched() >= cutoff {
                    continue;
                }
                let Some(id) = key.strip_prefix(crate::keys::UPLOADS).and_then(|id| id.parse::<UploadId>().ok()) else {
                    continue;
                };
                let txn = Txn::new().expect(key.clone(), Expect::Version(version)).delete(key);
                match meta.commit(txn.lazy()).await {
                    Ok(_) => {}
                    // Touched meanwhile (a writer claimed it, or it finished): not idle.
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
                self.clean_staging(id, &session.staged).await;
                tracing::info!(upload = %id, repository = %session.repository, bytes = session.size,
                    touched = %session.last_touched(), "purged an idle upload");
                report.sessions.push(id);
                report.bytes += session.size;
            }
        }
        Ok(())
    }

    async fn purge_orphans(&self, cutoff: DateTime<Utc>, report: &mut PurgeReport) -> Result<(), BlobError> {
        // The newest object of each upload's staging folder.
        let mut newest: HashMap<UploadId, DateTime<Utc>> = HashMap::new();
        let mut listing = self.store().list(Some(&Path::from("uploads")));
        while let Some(object) = listing.try_next().await? {
            let Some(id) = object.location.parts().nth(1).and_then(|p| p.as_ref().parse::<UploadId>().ok()) else {
                continue;
            };
            let at = newest.entry(id).or_insert(object.last_modified);
            *at = (*at).max(object.last_modified);
        }
        let meta = self.meta()?.clone();
        for (id, at) in newest {
            if at >= cutoff {
                continue;
            }
            // A session written a moment ago on another replica counts: read the latest copy.
            if meta.get_latest(&crate::keys::upload(id)).await?.is_some() {
                continue;
            }
            self.clean_staging(id, &StagedUpload::default()).await;
            tracing::info!(upload = %id, "removed staged data no upload session names");
            report.orphans.push(id);
        }
        Ok(())
    }
}
