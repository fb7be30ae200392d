//! Pull-through cache eviction: when the bytes of blobs that are only a cache (every repository link to them names
//! an upstream, so a later pull fetches them again: pulled-through and imported layers) exceed `[cache]
//! max-size-mb`, the least recently pulled go first until the cache is under its low-water mark. A blob that any
//! link without an upstream references (a local push, a mount of a pushed blob) is never evicted; links stay, only
//! the bytes go. Deletion follows the collector's protocol (tombstone, a second scan of the links, a last look at
//! the object's modification time), so a push that links the blob meanwhile wins. Pull times are recorded by
//! [`PullClock`] (`gc/pulled/<digest>`, at most once per [`RECORD_EVERY`] per digest and replica). Called by the background
//! task ([`crate::background::spawn_cache_eviction`]) and tests; knows nothing of HTTP.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use names::Digest;
use storage_backends::content::ContentName;
use storage_backends::meta::encode;
use storage_backends::{keys, MetadataStore, MetadataStoreExt, Txn};

use super::{Collector, GcError};
use crate::service::blobs::BlobLink;

/// How often one replica records the pull of one digest at most (a hot layer costs one lazy write per period).
pub const RECORD_EVERY: Duration = Duration::from_secs(5);
/// Digests whose last record a replica remembers; beyond this it forgets them all (and records again).
const REMEMBERED: usize = 100_000;
/// Keys read per page of a listing.
const PAGE: usize = 1000;

/// The cache's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Eviction starts when the cached bytes exceed this.
    pub max_bytes: u64,
    /// ... and goes on until they are at most this.
    pub low_water_bytes: u64,
    /// Objects written more recently than this are left alone (a push may be about to link them).
    pub grace: Duration,
}

/// What an eviction pass found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvictReport {
    /// Cached blobs stored (before eviction) and their bytes.
    pub cached: usize,
    pub cached_bytes: u64,
    /// Evicted blobs, oldest pull first, and their bytes.
    pub evicted: Vec<Digest>,
    pub evicted_bytes: u64,
    /// Chosen, but referenced by a local link (or rewritten) by the time of deletion: kept.
    pub kept_at_recheck: usize,
    pub errors: Vec<String>,
}

/// The pull time of a cached blob, as recorded.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Pulled {
    at: DateTime<Utc>,
}

/// Records when cached blobs are pulled, throttled per replica (see the module documentation).
#[derive(Default)]
pub struct PullClock {
    last: Mutex<HashMap<Digest, Instant>>,
}

impl PullClock {
    /// Records that `digest` was pulled now, in the background, unless this replica did within [`RECORD_EVERY`].
    pub fn pulled(&self, meta: &Arc<dyn MetadataStore>, digest: &Digest) {
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if last.get(digest).is_some_and(|at| now.duration_since(*at) < RECORD_EVERY) {
                return;
            }
            if last.len() >= REMEMBERED {
                last.clear();
            }
            last.insert(digest.clone(), now);
        }
        let (meta, key) = (meta.clone(), keys::gc_pulled(digest));
        let value = encode(&Pulled { at: Utc::now() });
        tokio::spawn(async move {
            if let Err(e) = meta.commit(Txn::new().put(key, value).lazy()).await {
                tracing::debug!(error = %e, "could not record a cache pull");
            }
        });
    }
}

/// A cached blob that may be evicted.
struct Cached {
    digest: Digest,
    size: u64,
    modified: DateTime<Utc>,
    pulled: DateTime<Utc>,
}

/// The digests every blob link names, split into those some link without an upstream references (`local`) and
/// the rest (`cached`).
async fn scan_links(meta: &dyn MetadataStore) -> Result<(HashSet<Digest>, HashSet<Digest>), GcError> {
    let (mut local, mut upstream) = (HashSet::new(), HashSet::new());
    let mut after: Option<String> = None;
    loop {
        let page = meta.list("links/", after.as_deref(), PAGE).await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (key, value) in page {
            let Some((rest, d)) = key.rsplit_once('/') else { continue };
            if !rest.ends_with("/blobs") {
                continue;
            }
            let digest: Digest = d.parse().map_err(|_| GcError::Unreadable(format!("{key}: not a digest")))?;
            let link: BlobLink = storage_backends::meta::decode(&key, &value.value)?;
            match link.upstream {
                Some(_) => upstream.insert(digest),
                None => local.insert(digest),
            };
        }
    }
    let cached = upstream.difference(&local).cloned().collect();
    Ok((local, cached))
}

impl Collector {
    /// One eviction pass (see the module documentation).
    #[tracing::instrument(skip(self))]
    pub async fn evict(&self, limits: &CacheLimits) -> Result<EvictReport, GcError> {
        let mut report = EvictReport::default();
        let now = Utc::now();
        let busy = self.tombstones(now, false).await?;
        let (_, cached) = scan_links(&*self.meta).await?;
        let mut pulled: HashMap<Digest, DateTime<Utc>> = HashMap::new();
        for (key, value) in self.meta.list_all(keys::GC_PULLED).await? {
            let Some(digest) = keys::digest_of_key(&key) else { continue };
            if let Ok(p) = storage_backends::meta::decode::<Pulled>(&key, &value.value) {
                pulled.insert(digest, p.at);
            }
        }
        let mut stored = Vec::new();
        let mut listing = self.blobs.list_content();
        while let Some(object) = listing.try_next().await? {
            if let ContentName::Blob(digest) = object.name {
                if cached.contains(&digest) {
                    let at = pulled.get(&digest).copied().unwrap_or(object.last_modified);
                    stored.push(Cached { digest, size: object.size, modified: object.last_modified, pulled: at });
                }
            }
        }
        report.cached = stored.len();
        report.cached_bytes = stored.iter().map(|c| c.size).sum();
        // Records of blobs no longer cached (evicted, deleted, or now pushed) go.
        let present: HashSet<&Digest> = stored.iter().map(|c| &c.digest).collect();
        let stale: Vec<Txn> =
            pulled.keys().filter(|d| !present.contains(d)).map(|d| Txn::new().delete(keys::gc_pulled(d))).collect();
        if report.cached_bytes <= limits.max_bytes {
            self.write_batches(stale).await?;
            return Ok(report);
        }
        // Least recently pulled first; the same second: the smaller digest first (a stable order).
        stored.sort_by(|a, b| a.pulled.cmp(&b.pulled).then_with(|| a.digest.cmp(&b.digest)));
        let grace = chrono::Duration::from_std(limits.grace).unwrap_or(chrono::Duration::MAX);
        let mut left = report.cached_bytes;
        let mut chosen = Vec::new();
        for c in &stored {
            if left <= limits.low_water_bytes {
                break;
            }
            if busy.contains(&c.digest) || now - c.modified < grace {
                continue;
            }
            left -= c.size;
            chosen.push(c);
        }
        let digests: Vec<Digest> = chosen.iter().map(|c| c.digest.clone()).collect();
        let tombstoned: HashSet<Digest> = self.write_tombstones(digests).await?.into_iter().collect();
        // A link without an upstream written before the tombstones is seen now; one written after waits for them.
        let rescanned = scan_links(&*self.meta).await;
        let mut cleared = Vec::new();
        for c in chosen.into_iter().filter(|c| tombstoned.contains(&c.digest)) {
            cleared.push(c.digest.clone());
            let still_cached = matches!(&rescanned, Ok((local, _)) if !local.contains(&c.digest));
            if !still_cached {
                report.kept_at_recheck += 1;
                continue;
            }
            let path = storage_backends::paths::blob(&c.digest);
            match self.blobs.object_modified(path.as_ref()).await {
                // Rewritten since the listing (compared to the second: S3 dates have no fraction).
                Ok(Some(m)) if m.timestamp() > c.modified.timestamp() => {
                    report.kept_at_recheck += 1;
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    report.errors.push(format!("{}: {e}", c.digest));
                    continue;
                }
            }
            match self.blobs.delete_content(&c.digest).await {
                Ok(()) => {
                    report.evicted_bytes += c.size;
                    report.evicted.push(c.digest.clone());
                }
                Err(e) => report.errors.push(format!("{}: {e}", c.digest)),
            }
        }
        let clear = cleared
            .iter()
            .map(|d| {
                let txn = Txn::new().delete(keys::gc_deleting(d));
                if report.evicted.contains(d) {
                    txn.delete(keys::gc_pulled(d))
                } else {
                    txn
                }
            })
            .chain(stale)
            .collect();
        if let Err(e) = self.write_batches(clear).await {
            tracing::warn!(error = %e, "could not clear eviction tombstones; they go stale in {:?}", super::STALE_TOMBSTONE);
        }
        rescanned?;
        if !report.evicted.is_empty() {
            tracing::info!(
                blobs = report.evicted.len(),
                bytes = report.evicted_bytes,
                cached_bytes = report.cached_bytes,
                "evicted from the pull-through cache"
            );
        }
        Ok(report)
    }
}
