//! Online garbage collection of stored content nothing references: blobs at their content-addressed paths, the
//! objects of chunked S3 uploads with their location records (`blob-objects/*`) and small manifests' bytes
//! (`manifest-content/*`), while pushes, pulls, tags and mounts go on. [`Collector::sweep`] is the library API:
//! the background task ([`crate::background::spawn_gc`], lease `gc`), the admin API (`POST …/gc`) and
//! `adm prune images` ([`prune`]) call it; [`guard`] is the other half of the protocol, which every writer of a repository link
//! follows. Calls `storage_backends` and reads `streams`' Images; knows nothing of HTTP.
//!
//! A sweep:
//! 1. clears tombstones older than [`STALE_TOMBSTONE`] (a sweep that died) and leaves alone digests another
//!    sweep is deleting now;
//! 2. marks ([`mark`]): every digest referenced by a repository link, an Image, a referenced manifest, and every
//!    live upload session;
//! 3. takes stock of the content: the blob store's listing (streamed), the location records, the stored
//!    manifests; every digest stored and not referenced is unreferenced. The first sweep to see it so records the
//!    time (`gc/candidates/<digest>`); it becomes deletable once that is older than the grace period *and* its
//!    objects were last written before the grace period (a record cleared when it is referenced again);
//! 4. deletes (unless a dry run): writes a tombstone `gc/deleting/<digest>` for each deletable digest, then marks
//!    again from scratch. A digest referenced now is kept (its tombstone removed). Otherwise its object's last
//!    modification is read again (a push that rewrote the bytes keeps it), its metadata (`manifest-content`,
//!    `blob-objects`) is deleted by compare-and-swap on the versions the second mark read (a push that stored the
//!    manifest again since wins), then its objects, then the tombstone.
//!
//! Why nothing acknowledged is lost: a link to a digest is written only in a transaction that expects its
//! tombstone absent ([`guard::commit_guarded`]), so a link either committed before the tombstone (and the second
//! mark, which starts after the tombstone committed, sees it) or waits until the sweep is done and then checks that
//! the content is still there (re-writing it when the writer holds the bytes). A manifest PUT stores its bytes in
//! the same transaction as its link (the compare-and-swap above), or, when large, checks after its commit
//! ([`guard::settle`]). An upload's bytes are published at the content path (with a fresh modification time)
//! before its link: the grace period covers the time between. The guard alone does not cover a writer that found
//! the content stored, then committed its link after a whole sweep deleted it (tombstone written and cleared in
//! between): an upload of content stored already therefore links while it still holds its own copy, checks again
//! and publishes its copy when the content is gone (`BlobStore::finish_upload_linked`); a mount checks the
//! content after its commit and takes the link back when it is gone (`Registry::commit_linking`).

pub mod evict;
pub mod guard;
mod mark;
pub mod prune;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use names::{Digest, UploadId};
use storage_backends::blobs::ObjectLocation;
use storage_backends::content::ContentName;
use storage_backends::meta::encode;
use storage_backends::{
    keys, BlobError, BlobStore, Expect, MetadataStore, MetadataStoreExt, StoreError, Txn, Versioned,
};

/// The default grace period: content is deleted only after it has been unreferenced this long.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);
/// The default interval between sweeps.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);
/// A tombstone older than this was left by a sweep that died; sweeps and writers may clear it.
pub const STALE_TOMBSTONE: Duration = Duration::from_secs(5 * 60);
/// Most digests one sweep deletes (the rest go at the next one), so that its tombstones stay short-lived.
pub const MAX_DELETIONS: usize = 20_000;
/// Deletions in flight at once (S3 requests).
const PARALLEL: usize = 16;
/// Digests deleted between two clearings of tombstones.
const CHUNK: usize = 480;
/// Writes per transaction (etcd takes 128 operations; a cleared digest is two).
const BATCH: usize = 60;

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// Something GC must read to know what is referenced could not be read: nothing was deleted.
    #[error("cannot read {0}: nothing deleted")]
    Unreadable(String),
    #[error("metadata store: {0}")]
    Store(#[from] StoreError),
    #[error("blob store: {0}")]
    Blobs(#[from] BlobError),
}

/// What a sweep should do.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Content is deleted only after it has been unreferenced (and unwritten) this long. Zero: at once (for
    /// `adm prune`, which has just removed the references itself).
    pub grace: Duration,
    /// Only report what would go; write nothing (not even the candidates' first-seen times).
    pub dry_run: bool,
    /// Only these digests may be deleted (the rest is marked as usual but left alone); `None`: every digest.
    pub only: Option<HashSet<Digest>>,
    /// Most digests deleted by this sweep.
    pub max_deletions: usize,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions { grace: DEFAULT_GRACE, dry_run: false, only: None, max_deletions: MAX_DELETIONS }
    }
}

/// One digest's content deleted (or that a dry run would delete).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Freed {
    pub digest: Digest,
    /// `blob` (an object in the blob store) or `manifest` (bytes in the metadata store).
    pub kind: String,
    pub size: u64,
}

/// What a sweep found and did. `deleted` lists what went (a dry run: what would go now).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    pub dry_run: bool,
    pub grace_seconds: u64,
    /// Stored digests (objects, location records, manifests' bytes) looked at.
    pub stored: usize,
    /// Digests something references (stored or not).
    pub referenced: usize,
    /// Stored and referenced by nothing.
    pub unreferenced: usize,
    /// Unreferenced, waiting for the grace period (or left for another sweep), and their bytes.
    pub waiting: usize,
    pub waiting_bytes: u64,
    pub deleted: Vec<Freed>,
    /// Objects of chunked uploads that neither a location record nor a live session names, deleted.
    pub orphans_deleted: usize,
    /// Deletable at the first mark but referenced again (or rewritten) by the time of deletion: kept.
    pub kept_at_recheck: Vec<Digest>,
    pub bytes_freed: u64,
    /// Deletions that failed (left for the next sweep).
    pub errors: Vec<String>,
    pub duration_ms: u64,
}

/// The candidate record: when a sweep first saw the digest unreferenced.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    first_seen: DateTime<Utc>,
}

/// A tombstone: a sweep is deleting the digest since `at`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Tombstone {
    pub at: DateTime<Utc>,
}

/// Everything stored under one digest.
#[derive(Debug, Default, Clone)]
struct Stored {
    /// The object at the content-addressed path: size, last modification.
    object: Option<(u64, DateTime<Utc>)>,
    /// The location record, its version, and its object's last modification (if listed).
    location: Option<(ObjectLocation, u64, Option<DateTime<Utc>>)>,
    /// `manifest-content/<digest>`: size, version.
    manifest: Option<(u64, u64)>,
}

impl Stored {
    fn size(&self) -> u64 {
        let object = self.object.map(|(s, _)| s);
        let location = self.location.as_ref().map(|(l, _, _)| l.size);
        let manifest = self.manifest.map(|(s, _)| s);
        object.into_iter().chain(location).chain(manifest).max().unwrap_or(0)
    }
    fn kind(&self) -> &'static str {
        if self.object.is_some() || self.location.is_some() {
            "blob"
        } else {
            "manifest"
        }
    }
    /// The newest write of its objects.
    fn modified(&self) -> Option<DateTime<Utc>> {
        let object = self.object.map(|(_, m)| m);
        object.into_iter().chain(self.location.as_ref().and_then(|(_, _, m)| *m)).max()
    }
}

/// The garbage collector over one registry's stores. Cheap to clone.
#[derive(Clone)]
pub struct Collector {
    meta: Arc<dyn MetadataStore>,
    blobs: BlobStore,
}

impl Collector {
    pub fn new(meta: Arc<dyn MetadataStore>, blobs: BlobStore) -> Collector {
        Collector { meta, blobs }
    }

    /// One sweep (see the module documentation). An error means the sweep stopped before deleting anything it
    /// could not vouch for; deletions that fail one by one are in [`SweepReport::errors`].
    #[tracing::instrument(skip(self, options), fields(dry_run = options.dry_run, grace = ?options.grace))]
    pub async fn sweep(&self, options: &SweepOptions) -> Result<SweepReport, GcError> {
        let started = std::time::Instant::now();
        let now = Utc::now();
        let grace = chrono::Duration::from_std(options.grace).unwrap_or(chrono::Duration::MAX);
        let mut report =
            SweepReport { dry_run: options.dry_run, grace_seconds: options.grace.as_secs(), ..Default::default() };

        let busy = self.tombstones(now, options.dry_run).await?;
        let marks = mark::mark(&*self.meta, &self.blobs).await?;
        report.referenced = marks.referenced.len();
        let (mut stored, uploaded) = self.inventory(&marks).await?;
        let candidates = self.candidates().await?;
        report.stored = stored.len();

        let mut record = Vec::new();
        let mut forget = Vec::new();
        let mut deletable = Vec::new();
        for digest in candidates.keys() {
            if marks.referenced.contains(digest) || !stored.contains_key(digest) {
                forget.push(digest.clone());
            }
        }
        // Another sweep deletes these now: unreferenced ones are left to it, and reported as waiting (they are still
        // stored; a caller sweeping until nothing waits must not stop before that sweep is done).
        for digest in &busy {
            if let Some(item) = stored.remove(digest) {
                if !marks.referenced.contains(digest) {
                    report.unreferenced += 1;
                    report.waiting += 1;
                    report.waiting_bytes += item.size();
                }
            }
        }
        for (digest, item) in &stored {
            if marks.referenced.contains(digest) {
                continue;
            }
            report.unreferenced += 1;
            if options.only.as_ref().is_some_and(|only| !only.contains(digest)) {
                continue;
            }
            let first_seen = match candidates.get(digest) {
                Some(at) => *at,
                None => {
                    record.push(digest.clone());
                    now
                }
            };
            let written_since = item.modified().is_some_and(|m| now - m < grace);
            if now - first_seen >= grace && !written_since && deletable.len() < options.max_deletions {
                deletable.push(digest.clone());
            } else {
                report.waiting += 1;
                report.waiting_bytes += item.size();
            }
        }
        // Objects of chunked uploads nobody names, left by an upload that died between completing and recording.
        let named: HashSet<&str> =
            stored.values().filter_map(|s| s.location.as_ref().map(|l| l.0.path.as_str())).collect();
        let orphans: Vec<(UploadId, String)> = uploaded
            .into_iter()
            .filter(|(id, (path, modified))| {
                !named.contains(path.as_str()) && !marks.sessions.contains(id) && now - *modified >= grace
            })
            .map(|(id, (path, _))| (id, path))
            .collect();

        if options.dry_run {
            for digest in &deletable {
                let item = &stored[digest];
                report.deleted.push(Freed { digest: digest.clone(), kind: item.kind().into(), size: item.size() });
                report.bytes_freed += item.size();
            }
            report.orphans_deleted = orphans.len();
            report.duration_ms = started.elapsed().as_millis() as u64;
            return Ok(report);
        }

        let first_seen = encode(&Candidate { first_seen: now });
        let mut writes: Vec<Txn> = Vec::new();
        for d in &record {
            writes.push(Txn::new().put(keys::gc_candidate(d), first_seen.clone()));
        }
        for d in &forget {
            writes.push(Txn::new().delete(keys::gc_candidate(d)));
        }
        self.write_batches(writes).await?;

        if !deletable.is_empty() || !orphans.is_empty() {
            self.delete(deletable, orphans, &mut report).await?;
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        if !report.deleted.is_empty() || report.orphans_deleted > 0 {
            tracing::info!(
                items = report.deleted.len(),
                bytes = report.bytes_freed,
                orphans = report.orphans_deleted,
                kept = report.kept_at_recheck.len(),
                waiting = report.waiting,
                ms = report.duration_ms,
                "garbage collected"
            );
        }
        Ok(report)
    }

    /// The digests other sweeps are deleting now; stale tombstones (of a sweep that died) are cleared.
    async fn tombstones(&self, now: DateTime<Utc>, dry_run: bool) -> Result<HashSet<Digest>, GcError> {
        let stale = chrono::Duration::from_std(STALE_TOMBSTONE).unwrap_or(chrono::Duration::MAX);
        let mut busy = HashSet::new();
        for (key, Versioned { value: tombstone, version }) in self.meta.list_all(keys::GC_DELETING).await? {
            let Some(digest) = keys::digest_of_key(&key) else { continue };
            let tombstone: Tombstone = storage_backends::meta::decode(&key, &tombstone)?;
            if now - tombstone.at > stale && !dry_run {
                let txn = Txn::new().expect(key.clone(), Expect::Version(version)).delete(key.clone());
                match self.meta.commit(txn).await {
                    Ok(_) => {
                        tracing::warn!(%digest, at = %tombstone.at, "cleared the stale tombstone of a sweep that died")
                    }
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            } else {
                busy.insert(digest);
            }
        }
        Ok(busy)
    }

    /// When each candidate was first seen unreferenced.
    async fn candidates(&self) -> Result<HashMap<Digest, DateTime<Utc>>, GcError> {
        let mut out = HashMap::new();
        for (key, Versioned { value, .. }) in self.meta.list_all(keys::GC_CANDIDATES).await? {
            let Some(digest) = keys::digest_of_key(&key) else { continue };
            let c: Candidate = storage_backends::meta::decode(&key, &value)?;
            out.insert(digest, c.first_seen);
        }
        Ok(out)
    }

    /// Everything stored, by digest, and the objects of chunked uploads by upload (path, last modification).
    #[allow(clippy::type_complexity)]
    async fn inventory(
        &self,
        marks: &mark::Marks,
    ) -> Result<(HashMap<Digest, Stored>, HashMap<UploadId, (String, DateTime<Utc>)>), GcError> {
        let mut stored: HashMap<Digest, Stored> = HashMap::new();
        let mut uploaded = HashMap::new();
        let mut listing = self.blobs.list_content();
        while let Some(object) = listing.try_next().await? {
            match object.name {
                ContentName::Blob(d) => stored.entry(d).or_default().object = Some((object.size, object.last_modified)),
                ContentName::Uploaded(id) => {
                    uploaded.insert(id, (object.path, object.last_modified));
                }
            }
        }
        let by_path: HashMap<&str, DateTime<Utc>> = uploaded.values().map(|(p, m)| (p.as_str(), *m)).collect();
        for (digest, location, version) in self.blobs.list_locations().await? {
            let modified = by_path.get(location.path.as_str()).copied();
            stored.entry(digest).or_default().location = Some((location, version, modified));
        }
        for (digest, (size, version)) in &marks.manifests {
            stored.entry(digest.clone()).or_default().manifest = Some((*size, *version));
        }
        Ok((stored, uploaded))
    }

    /// Commits single-key writes `BATCH` to a transaction.
    async fn write_batches(&self, writes: Vec<Txn>) -> Result<(), GcError> {
        let mut writes = writes.into_iter().peekable();
        while writes.peek().is_some() {
            let txn = writes.by_ref().take(BATCH).fold(Txn::new(), |mut t, w| {
                t.puts.extend(w.puts);
                t.deletes.extend(w.deletes);
                t
            });
            self.meta.commit(txn).await?;
        }
        Ok(())
    }

    /// The deletion phase: tombstones, a second mark, then each digest's deletion (see the module documentation).
    async fn delete(
        &self,
        deletable: Vec<Digest>,
        orphans: Vec<(UploadId, String)>,
        report: &mut SweepReport,
    ) -> Result<(), GcError> {
        let wanted = deletable.len();
        let tombstoned = self.write_tombstones(deletable).await?;
        // Those another sweep is deleting right now are left to it.
        report.waiting += wanted - tombstoned.len();
        // From here on every tombstone must go, whatever happens: clear them before returning an error.
        let checked = async {
            let marks = mark::mark(&*self.meta, &self.blobs).await?;
            let (stored, _) = self.inventory(&marks).await?;
            Ok::<_, GcError>((marks, stored))
        }
        .await;
        let (marks, stored) = match checked {
            Ok(found) => found,
            Err(e) => {
                self.clear_tombstones(&tombstoned).await;
                return Err(e);
            }
        };
        // A chunk of digests at a time: deleted (in parallel), then their tombstones and candidate records cleared
        // in a few transactions, so that a writer waiting for one of them waits for its chunk only.
        for chunk in tombstoned.chunks(CHUNK) {
            let mut jobs = Vec::with_capacity(chunk.len());
            for digest in chunk {
                let item = stored.get(digest).cloned();
                let referenced = marks.referenced.contains(digest);
                jobs.push(self.delete_one(digest.clone(), item, referenced));
            }
            let outcomes: Vec<(Digest, Outcome)> =
                futures::stream::iter(jobs).buffer_unordered(PARALLEL).collect().await;
            let clear =
                chunk.iter().map(|d| Txn::new().delete(keys::gc_deleting(d)).delete(keys::gc_candidate(d))).collect();
            if let Err(e) = self.write_batches(clear).await {
                tracing::warn!(error = %e, "could not clear GC tombstones; they go stale in {STALE_TOMBSTONE:?}");
            }
            for (digest, outcome) in outcomes {
                match outcome {
                    Outcome::Deleted(freed) => {
                        report.bytes_freed += freed.size;
                        report.deleted.push(freed);
                    }
                    Outcome::Kept => report.kept_at_recheck.push(digest),
                    Outcome::Failed(e) => report.errors.push(format!("{digest}: {e}")),
                }
            }
        }
        // Orphaned upload objects: still named by no record and no session?
        let named: HashSet<&str> =
            stored.values().filter_map(|s| s.location.as_ref().map(|l| l.0.path.as_str())).collect();
        for (id, path) in orphans {
            if named.contains(path.as_str()) || marks.sessions.contains(&id) {
                continue;
            }
            match self.blobs.delete_object(&path).await {
                Ok(()) => report.orphans_deleted += 1,
                Err(e) => report.errors.push(format!("{path}: {e}")),
            }
        }
        Ok(())
    }

    /// Writes the tombstones of `digests`; a digest whose tombstone exists already (another sweep) is left out.
    async fn write_tombstones(&self, digests: Vec<Digest>) -> Result<Vec<Digest>, GcError> {
        let value = encode(&Tombstone { at: Utc::now() });
        let mut written = Vec::new();
        for chunk in digests.chunks(BATCH) {
            let mut batch: Vec<&Digest> = chunk.iter().collect();
            while !batch.is_empty() {
                let txn = batch.iter().fold(Txn::new(), |t, d| {
                    t.expect(keys::gc_deleting(d), Expect::Absent).put(keys::gc_deleting(d), value.clone())
                });
                match self.meta.commit(txn).await {
                    Ok(_) => {
                        written.extend(batch.into_iter().cloned());
                        break;
                    }
                    Err(StoreError::Conflict { key }) => batch.retain(|d| keys::gc_deleting(d) != key),
                    Err(e) => {
                        self.clear_tombstones(&written).await;
                        return Err(e.into());
                    }
                }
            }
        }
        Ok(written)
    }

    /// Removes tombstones (best effort: a stale one is cleared by the next sweep or a waiting writer).
    async fn clear_tombstones(&self, digests: &[Digest]) {
        for chunk in digests.chunks(BATCH) {
            let txn = chunk.iter().fold(Txn::new(), |t, d| t.delete(keys::gc_deleting(d)));
            if let Err(e) = self.meta.commit(txn).await {
                tracing::warn!(error = %e, "could not clear GC tombstones; they go stale in {STALE_TOMBSTONE:?}");
            }
        }
    }

    /// Deletes one tombstoned digest unless it is referenced again or was rewritten (its tombstone is cleared by
    /// the caller).
    async fn delete_one(&self, digest: Digest, item: Option<Stored>, referenced: bool) -> (Digest, Outcome) {
        let outcome = match (referenced, item) {
            (true, _) => Outcome::Kept,
            // Nothing stored any more (deleted by someone else).
            (false, None) => Outcome::Kept,
            (false, Some(item)) => match self.delete_stored(&digest, &item).await {
                Ok(true) => {
                    Outcome::Deleted(Freed { digest: digest.clone(), kind: item.kind().into(), size: item.size() })
                }
                Ok(false) => Outcome::Kept,
                Err(e) => Outcome::Failed(e.to_string()),
            },
        };
        (digest, outcome)
    }

    /// Deletes what is stored under `digest` (`false`: kept, a writer got there first).
    async fn delete_stored(&self, digest: &Digest, item: &Stored) -> Result<bool, GcError> {
        // A push that wrote the bytes again since the first listing keeps them.
        if item.object.is_some() {
            let path = storage_backends::paths::blob(digest);
            if let Some(modified) = self.blobs.object_modified(path.as_ref()).await? {
                // Compared to the second: S3 answers HEAD with a date that has no fraction.
                if item.object.is_some_and(|(_, listed)| modified.timestamp() > listed.timestamp()) {
                    return Ok(false);
                }
            }
        }
        let mut txn = Txn::new();
        if let Some((_, version)) = item.manifest {
            let key = keys::manifest_content(digest);
            txn = txn.expect(key.clone(), Expect::Version(version)).delete(key);
        }
        if let Some((_, version, _)) = &item.location {
            let key = keys::blob_object(digest);
            txn = txn.expect(key.clone(), Expect::Version(*version)).delete(key);
        }
        if !txn.is_empty() {
            match self.meta.commit(txn).await {
                Ok(_) => {}
                Err(StoreError::Conflict { .. }) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        if let Some((location, _, _)) = &item.location {
            self.blobs.delete_object(&location.path).await?;
        }
        self.blobs.delete_content(digest).await?;
        Ok(true)
    }
}

enum Outcome {
    Deleted(Freed),
    Kept,
    Failed(String),
}
