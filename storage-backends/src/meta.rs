//! The metadata store: a small key-value contract with compare-and-swap on per-key versions, atomic multi-key
//! transactions, ordered prefix listing, a change feed, and tombstones of deleted watched keys (so a watch from an
//! older revision learns of deletions). [`MetadataStore`] is the required trait, implemented by the embedded
//! [`RedbStore`] (an etcd implementation for scale-out is designed for, not built yet); JSON conveniences live in
//! [`MetadataStoreExt`]. Keys are `/`-separated strings built by the calling crate; values are opaque bytes.
//!
//! Versions are store-wide revisions (as in etcd): every committed transaction gets the next revision and every
//! key it writes carries that revision as its version. A writer reads a value with its version, then commits with
//! `Expect::Version(v)`; if anyone wrote the key in between the commit fails with [`StoreError::Conflict`] and the
//! writer retries on fresh data. No write is ever lost silently.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::keys;

/// What a transaction requires of a key before it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The key must not exist.
    Absent,
    /// The key must exist.
    Present,
    /// The key must exist with exactly this version.
    Version(u64),
}

/// An atomic set of checks and writes.
#[derive(Debug, Default, Clone)]
pub struct Txn {
    pub checks: Vec<(String, Expect)>,
    pub puts: Vec<(String, Vec<u8>)>,
    pub deletes: Vec<String>,
    /// The store may acknowledge before the writes are durable: a crash may lose them (together with every later
    /// lazy transaction, never out of order), and the next durable commit makes them durable too. For records
    /// that describe data not yet durable either, such as upload sessions of staged bytes.
    pub lazy: bool,
}

impl Txn {
    pub fn new() -> Self {
        Txn::default()
    }
    pub fn expect(mut self, key: impl Into<String>, expect: Expect) -> Self {
        self.checks.push((key.into(), expect));
        self
    }
    pub fn put(mut self, key: impl Into<String>, value: Vec<u8>) -> Self {
        self.puts.push((key.into(), value));
        self
    }
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.deletes.push(key.into());
        self
    }
    /// Marks the transaction [`Txn::lazy`].
    pub fn lazy(mut self) -> Self {
        self.lazy = true;
        self
    }
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }
}

/// A value with the version it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub version: u64,
}

/// One change, as published on the change feed after its transaction committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEvent {
    pub key: String,
    /// The new value, or `None` when the key was deleted.
    pub value: Option<Vec<u8>>,
    pub revision: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A transaction's check failed: someone else changed `key` first. Retry on fresh data.
    #[error("conflicting update of {key}")]
    Conflict { key: String },
    #[error("stored value under {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("metadata store: {0}")]
    Backend(String),
    /// Deletions after the revision asked about are no longer all known (their tombstones were pruned).
    #[error("too old resource version: {since} ({compacted})")]
    Compacted { since: u64, compacted: u64 },
}

/// The metadata store contract. Implementations must make [`MetadataStore::commit`] atomic and durable when it
/// returns `Ok`, and must publish each committed change on [`MetadataStore::subscribe`] in revision order.
#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;
    /// Keys starting with `prefix`, in byte order, strictly after `start_after` when given, at most `limit`.
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Versioned)>, StoreError>;
    /// Only the keys of [`MetadataStore::list`]; implementations override it to skip copying values.
    async fn list_keys(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self.list(prefix, start_after, limit).await?.into_iter().map(|(k, _)| k).collect())
    }
    /// Applies a transaction atomically; returns the new revision.
    async fn commit(&self, txn: Txn) -> Result<u64, StoreError>;
    /// The latest committed revision.
    async fn revision(&self) -> Result<u64, StoreError>;
    /// A feed of changes committed from now on (except keys [`keys::is_unwatched`] names).
    fn subscribe(&self) -> broadcast::Receiver<KvEvent>;
    /// Keys under `prefix` (of those [`keys::keeps_tombstone`] names) deleted after revision `since` and not
    /// written since, each with its last value; the version is the revision that deleted it. A watch from an old
    /// revision learns of deletions this way. [`StoreError::Compacted`] when such deletions are no longer all
    /// known.
    async fn deleted_since(&self, prefix: &str, since: u64) -> Result<Vec<(String, Versioned)>, StoreError>;
}

/// JSON conveniences over any [`MetadataStore`].
#[async_trait]
pub trait MetadataStoreExt: MetadataStore {
    async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, u64)>, StoreError> {
        match self.get(key).await? {
            None => Ok(None),
            Some(v) => Ok(Some((decode(key, &v.value)?, v.version))),
        }
    }
    async fn list_json<T: DeserializeOwned>(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, T, u64)>, StoreError> {
        let rows = self.list(prefix, start_after, limit).await?;
        rows.into_iter().map(|(k, v)| decode(&k, &v.value).map(|t| (k, t, v.version))).collect()
    }
    /// Every value under `prefix` with its version, read a page at a time.
    async fn list_all_json<T: DeserializeOwned + Send>(&self, prefix: &str) -> Result<Vec<(T, u64)>, StoreError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.list_json::<T>(prefix, after.as_deref(), 500).await?;
            let Some((last, _, _)) = page.last() else { break };
            after = Some(last.clone());
            out.extend(page.into_iter().map(|(_, v, version)| (v, version)));
        }
        Ok(out)
    }
}

impl<S: MetadataStore + ?Sized> MetadataStoreExt for S {}

/// Decodes a JSON value read from `key`.
pub fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { key: key.to_owned(), reason: e.to_string() })
}

/// Encodes a value for storage.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|e| unreachable!("metadata values always serialize: {e}"))
}

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
/// Deleted keys ([`keys::keeps_tombstone`]): revision of the deletion, its time (unix seconds), the last value.
const TOMBSTONES: TableDefinition<&str, &[u8]> = TableDefinition::new("tombstones");
/// The newest revision whose tombstones were pruned: deletions after it are all known.
const COMPACTED: &str = "compacted";
/// How long a deletion is remembered. A watch from a revision older than the pruned deletions gets
/// [`StoreError::Compacted`] (HTTP 410, and Kubernetes clients list again), as with etcd's compaction.
pub const TOMBSTONE_RETENTION: std::time::Duration = std::time::Duration::from_secs(3600);
/// Memory redb may keep as its page cache (its default is 1 GiB, which lets the server's RSS grow with the number of
/// tags and repositories). Pages beyond it are read again from the file, which the OS caches. 8 MiB holds a
/// 10,000-tag listing (4 MiB did not: its p50 doubled); 16 MiB added 15 MiB of RSS at 100,000 tags for nothing
/// the benchmark could see.
const CACHE_BYTES: usize = 8 * 1024 * 1024;

/// The embedded metadata store: one redb file in the data directory.
///
/// Writes go through one committer thread that practises group commit: it takes every transaction waiting, applies
/// them in order inside one redb write transaction (each checked against the state the earlier ones left; a
/// transaction whose check fails writes nothing and gets [`StoreError::Conflict`]), and makes them durable with a
/// single fsync before any caller hears back (none when every transaction of the batch is [`Txn::lazy`]). A crash
/// at any point leaves all or none of a batch's writes.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    events: broadcast::Sender<KvEvent>,
    committer: Arc<Committer>,
}

/// The committer thread's queue; dropping the last handle stops the thread and waits for it, so the database file
/// is closed when the last [`RedbStore`] goes.
struct Committer {
    queue: Option<std::sync::mpsc::Sender<Pending>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type CommitResult = Result<u64, StoreError>;

struct Pending {
    txn: Txn,
    reply: tokio::sync::oneshot::Sender<CommitResult>,
}

/// Most transactions folded into one durable commit.
const MAX_BATCH: usize = 512;

fn backend<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn split(key: &str, raw: &[u8]) -> Result<Versioned, StoreError> {
    if raw.len() < 8 {
        return Err(StoreError::Corrupt { key: key.to_owned(), reason: "short record".into() });
    }
    let (v, value) = raw.split_at(8);
    let version = u64::from_be_bytes(v.try_into().unwrap_or_default());
    Ok(Versioned { value: value.to_vec(), version })
}

impl RedbStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_retention(path, TOMBSTONE_RETENTION)
    }

    /// [`RedbStore::open`], remembering deletions for `retention` (tests shorten it).
    pub fn open_with_retention(path: &Path, retention: std::time::Duration) -> Result<Self, StoreError> {
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(backend)?;
        {
            txn.open_table(KV).map_err(backend)?;
            txn.open_table(META).map_err(backend)?;
            txn.open_table(TOMBSTONES).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;
        let db = Arc::new(db);
        let (events, _) = broadcast::channel(4096);
        let (committer, queue) = std::sync::mpsc::channel::<Pending>();
        let (thread_db, thread_events) = (db.clone(), events.clone());
        let thread = std::thread::Builder::new()
            .name("redb-committer".into())
            .spawn(move || committer_loop(&thread_db, &thread_events, &queue, retention))
            .map_err(backend)?;
        let committer = Arc::new(Committer { queue: Some(committer), thread: Some(thread) });
        Ok(RedbStore { db, events, committer })
    }
}

impl RedbStore {
    /// Visits keys starting with `prefix`, in order, strictly after `start_after`, at most `limit` of them.
    fn scan<T>(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        mut row: impl FnMut(&str, &[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let r = self.db.begin_read().map_err(backend)?;
        let kv = r.open_table(KV).map_err(backend)?;
        let start = match start_after {
            Some(s) if s.starts_with(prefix) => s,
            Some(s) if s > prefix => return Ok(Vec::new()),
            _ => prefix,
        };
        let mut out = Vec::new();
        for item in kv.range(start..).map_err(backend)? {
            let (k, v) = item.map_err(backend)?;
            let key = k.value();
            if !key.starts_with(prefix) || out.len() >= limit {
                break;
            }
            if start_after.is_some_and(|s| key <= s) {
                continue;
            }
            out.push(row(key, v.value())?);
        }
        Ok(out)
    }
}

/// Runs until every [`RedbStore`] handle is dropped.
fn committer_loop(
    db: &Database,
    events: &broadcast::Sender<KvEvent>,
    queue: &std::sync::mpsc::Receiver<Pending>,
    retention: std::time::Duration,
) {
    // Tombstones are pruned inside a batch's write transaction, at most once a minute.
    let prune_every = retention.min(std::time::Duration::from_secs(60));
    let mut next_prune = std::time::Instant::now() + prune_every;
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let prune = (std::time::Instant::now() >= next_prune).then(|| {
            next_prune = std::time::Instant::now() + prune_every;
            unix_now() - retention.as_secs() as i64
        });
        match apply_batch(db, batch.iter().map(|p| &p.txn), prune) {
            Ok((results, published)) => {
                for e in published {
                    let _ = events.send(e);
                }
                for (p, r) in batch.into_iter().zip(results) {
                    let _ = p.reply.send(r);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "metadata commit failed");
                for p in batch {
                    let _ = p.reply.send(Err(StoreError::Backend(e.to_string())));
                }
            }
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A counter of the `meta` table ([`REVISION`], [`COMPACTED`]); 0 until first written.
fn counter(meta: &impl redb::ReadableTable<&'static str, u64>, name: &str) -> Result<u64, StoreError> {
    Ok(meta.get(name).map_err(backend)?.map(|g| g.value()).unwrap_or(0))
}

/// A tombstone's record: the deleting revision, the time, the last value.
fn tombstone(revision: u64, value: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(16 + value.len());
    raw.extend_from_slice(&revision.to_be_bytes());
    raw.extend_from_slice(&unix_now().to_be_bytes());
    raw.extend_from_slice(value);
    raw
}

/// Reads a tombstone's record: (revision, unix seconds, last value).
fn read_tombstone<'r>(key: &str, raw: &'r [u8]) -> Result<(u64, i64, &'r [u8]), StoreError> {
    if raw.len() < 16 {
        return Err(StoreError::Corrupt { key: key.to_owned(), reason: "short tombstone".into() });
    }
    let (head, value) = raw.split_at(16);
    let revision = u64::from_be_bytes(head[..8].try_into().unwrap_or_default());
    let at = i64::from_be_bytes(head[8..].try_into().unwrap_or_default());
    Ok((revision, at, value))
}

/// Drops tombstones from before `cutoff` (unix seconds) and raises the compacted revision past them.
fn prune_tombstones(w: &redb::WriteTransaction, cutoff: i64) -> Result<(), StoreError> {
    let mut tombs = w.open_table(TOMBSTONES).map_err(backend)?;
    let mut meta = w.open_table(META).map_err(backend)?;
    let mut compacted = counter(&meta, COMPACTED)?;
    let mut old = Vec::new();
    for item in tombs.iter().map_err(backend)? {
        let (k, v) = item.map_err(backend)?;
        let (revision, at, _) = read_tombstone(k.value(), v.value())?;
        if at < cutoff {
            old.push(k.value().to_owned());
            compacted = compacted.max(revision);
        }
    }
    for key in &old {
        tombs.remove(key.as_str()).map_err(backend)?;
    }
    if !old.is_empty() {
        meta.insert(COMPACTED, compacted).map_err(backend)?;
    }
    Ok(())
}

/// Applies `txns` in order in one write transaction and commits it (pruning tombstones from before `prune`, if
/// given). Returns each transaction's result and the events of those that applied.
fn apply_batch<'a>(
    db: &Database,
    txns: impl Iterator<Item = &'a Txn> + Clone,
    prune: Option<i64>,
) -> Result<(Vec<CommitResult>, Vec<KvEvent>), StoreError> {
    let mut w = db.begin_write().map_err(backend)?;
    if txns.clone().all(|t| t.lazy) {
        w.set_durability(redb::Durability::None).map_err(backend)?;
    }
    if let Some(cutoff) = prune {
        prune_tombstones(&w, cutoff)?;
    }
    let mut results = Vec::new();
    let mut events = Vec::new();
    {
        let mut kv = w.open_table(KV).map_err(backend)?;
        let mut meta = w.open_table(META).map_err(backend)?;
        let mut tombs = w.open_table(TOMBSTONES).map_err(backend)?;
        let mut revision = counter(&meta, REVISION)?;
        'txns: for txn in txns {
            for (key, expect) in &txn.checks {
                let current = match kv.get(key.as_str()).map_err(backend)? {
                    Some(raw) => Some(split(key, raw.value())?.version),
                    None => None,
                };
                let ok = match (expect, current) {
                    (Expect::Absent, None) | (Expect::Present, Some(_)) => true,
                    (Expect::Version(want), Some(have)) => *want == have,
                    _ => false,
                };
                if !ok {
                    results.push(Err(StoreError::Conflict { key: key.clone() }));
                    continue 'txns;
                }
            }
            revision += 1;
            for key in &txn.deletes {
                let last = kv.remove(key.as_str()).map_err(backend)?;
                if let Some(last) = last.filter(|_| keys::keeps_tombstone(key)) {
                    let last = split(key, last.value())?;
                    tombs.insert(key.as_str(), tombstone(revision, &last.value).as_slice()).map_err(backend)?;
                }
                if !keys::is_unwatched(key) {
                    events.push(KvEvent { key: key.clone(), value: None, revision });
                }
            }
            for (key, value) in &txn.puts {
                let mut raw = Vec::with_capacity(8 + value.len());
                raw.extend_from_slice(&revision.to_be_bytes());
                raw.extend_from_slice(value);
                kv.insert(key.as_str(), raw.as_slice()).map_err(backend)?;
                if keys::keeps_tombstone(key) {
                    tombs.remove(key.as_str()).map_err(backend)?;
                }
                if !keys::is_unwatched(key) {
                    events.push(KvEvent { key: key.clone(), value: Some(value.clone()), revision });
                }
            }
            results.push(Ok(revision));
        }
        meta.insert(REVISION, revision).map_err(backend)?;
    }
    w.commit().map_err(backend)?;
    Ok((results, events))
}

#[async_trait]
impl MetadataStore for RedbStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let r = self.db.begin_read().map_err(backend)?;
        let kv = r.open_table(KV).map_err(backend)?;
        match kv.get(key).map_err(backend)? {
            Some(raw) => Ok(Some(split(key, raw.value())?)),
            None => Ok(None),
        }
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Versioned)>, StoreError> {
        self.scan(prefix, start_after, limit, |key, raw| Ok((key.to_owned(), split(key, raw)?)))
    }

    async fn list_keys(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.scan(prefix, start_after, limit, |key, _| Ok(key.to_owned()))
    }

    async fn commit(&self, txn: Txn) -> Result<u64, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let queue = self.committer.queue.as_ref().ok_or_else(|| backend("the committer thread stopped"))?;
        queue.send(Pending { txn, reply }).map_err(|_| backend("the committer thread stopped"))?;
        answer.await.map_err(|_| backend("the committer thread stopped"))?
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        let r = self.db.begin_read().map_err(backend)?;
        let meta = r.open_table(META).map_err(backend)?;
        counter(&meta, REVISION)
    }

    fn subscribe(&self) -> broadcast::Receiver<KvEvent> {
        self.events.subscribe()
    }

    async fn deleted_since(&self, prefix: &str, since: u64) -> Result<Vec<(String, Versioned)>, StoreError> {
        let r = self.db.begin_read().map_err(backend)?;
        let meta = r.open_table(META).map_err(backend)?;
        let compacted = counter(&meta, COMPACTED)?;
        if since < compacted {
            return Err(StoreError::Compacted { since, compacted });
        }
        let tombs = r.open_table(TOMBSTONES).map_err(backend)?;
        let mut out = Vec::new();
        for item in tombs.range(prefix..).map_err(backend)? {
            let (k, v) = item.map_err(backend)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            let (revision, _, last) = read_tombstone(key, v.value())?;
            if revision > since {
                out.push((key.to_owned(), Versioned { value: last.to_vec(), version: revision }));
            }
        }
        Ok(out)
    }
}

/// The shared behaviour suite every [`MetadataStore`] implementation must pass.
pub mod suite {
    use super::*;

    pub async fn run(store: &dyn MetadataStore) {
        let mut feed = store.subscribe();
        assert!(store.get("a/1").await.unwrap().is_none());
        let r1 = store.commit(Txn::new().expect("a/1", Expect::Absent).put("a/1", b"one".to_vec())).await.unwrap();
        let got = store.get("a/1").await.unwrap().unwrap();
        assert_eq!((got.value.as_slice(), got.version), (&b"one"[..], r1));
        // A second create of the same key conflicts and changes nothing.
        let err = store.commit(Txn::new().expect("a/1", Expect::Absent).put("a/1", b"x".to_vec())).await;
        assert!(matches!(err, Err(StoreError::Conflict { .. })));
        // CAS on the right version wins, on a stale one loses.
        let r2 = store.commit(Txn::new().expect("a/1", Expect::Version(r1)).put("a/1", b"two".to_vec())).await.unwrap();
        assert!(r2 > r1);
        let stale = store.commit(Txn::new().expect("a/1", Expect::Version(r1)).put("a/1", b"bad".to_vec())).await;
        assert!(matches!(stale, Err(StoreError::Conflict { .. })));
        assert_eq!(store.get("a/1").await.unwrap().unwrap().value, b"two");
        // Multi-key atomicity: a failing check writes nothing.
        let failed =
            store.commit(Txn::new().expect("a/9", Expect::Present).put("a/2", b"no".to_vec()).delete("a/1")).await;
        assert!(failed.is_err());
        assert!(store.get("a/2").await.unwrap().is_none());
        assert!(store.get("a/1").await.unwrap().is_some());
        // Listing: ordered, prefix-bounded, paginated.
        let mut txn = Txn::new();
        for k in ["a/3", "a/2", "b/1", "a0"] {
            txn = txn.put(k, k.as_bytes().to_vec());
        }
        store.commit(txn).await.unwrap();
        let keys = |rows: Vec<(String, Versioned)>| rows.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(keys(store.list("a/", None, 10).await.unwrap()), ["a/1", "a/2", "a/3"]);
        assert_eq!(store.list_keys("a/", Some("a/1"), 10).await.unwrap(), ["a/2", "a/3"]);
        assert_eq!(keys(store.list("a/", Some("a/1"), 1).await.unwrap()), ["a/2"]);
        assert_eq!(keys(store.list("a/", Some("a/3"), 10).await.unwrap()), Vec::<String>::new());
        // Deletes.
        store.commit(Txn::new().expect("a/1", Expect::Present).delete("a/1")).await.unwrap();
        assert!(store.get("a/1").await.unwrap().is_none());
        assert!(store.revision().await.unwrap() >= r2);
        // The feed saw the first write first.
        let first = feed.recv().await.unwrap();
        assert_eq!((first.key.as_str(), first.revision), ("a/1", r1));
        // Deletions of watched objects are remembered with their last value, until the key is written again.
        let before = store.revision().await.unwrap();
        let txn = Txn::new().put("imagestreams/ns/x", b"x1".to_vec()).put("imagestreams/ns/y", b"y1".to_vec());
        store.commit(txn).await.unwrap();
        let gone = store.commit(Txn::new().delete("imagestreams/ns/x").delete("imagestreams/ns/y")).await.unwrap();
        store.commit(Txn::new().put("imagestreams/ns/y", b"y2".to_vec())).await.unwrap();
        let deleted = store.deleted_since("imagestreams/ns/", before).await.unwrap();
        assert_eq!(deleted, [("imagestreams/ns/x".to_owned(), Versioned { value: b"x1".to_vec(), version: gone })]);
        assert!(store.deleted_since("imagestreams/ns/", gone).await.unwrap().is_empty());
        assert!(store.deleted_since("imagestreams/other/", before).await.unwrap().is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn redb_passes_the_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("meta.redb")).unwrap();
        suite::run(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn group_commit_keeps_each_transaction_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("meta.redb")).unwrap();
        // 64 writers race to create the same key and 64 write their own: exactly one creator wins.
        let mut tasks = Vec::new();
        for i in 0..128u32 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    store
                        .commit(Txn::new().expect("shared", Expect::Absent).put("shared", i.to_be_bytes().to_vec()))
                        .await
                } else {
                    store.commit(Txn::new().put(format!("own/{i:03}"), i.to_be_bytes().to_vec())).await
                }
            }));
        }
        let mut winners = 0;
        let mut revisions = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(r) => {
                    revisions.push(r);
                    if i % 2 == 0 {
                        winners += 1;
                    }
                }
                Err(StoreError::Conflict { .. }) => assert_eq!(i % 2, 0),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(winners, 1);
        revisions.sort();
        revisions.dedup();
        assert_eq!(revisions.len(), 65, "every applied transaction has its own revision");
        assert_eq!(store.list("own/", None, 1000).await.unwrap().len(), 64);
    }

    #[tokio::test]
    async fn pruned_deletions_make_older_revisions_too_old() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open_with_retention(&dir.path().join("meta.redb"), std::time::Duration::ZERO).unwrap();
        let created = store.commit(Txn::new().put("istags/ns/s/t", b"h".to_vec())).await.unwrap();
        let gone = store.commit(Txn::new().delete("istags/ns/s/t")).await.unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        // The next commit prunes (retention zero), forgetting the deletion at `gone`.
        let later = store.commit(Txn::new().put("other", b"o".to_vec())).await.unwrap();
        assert!(matches!(
            store.deleted_since("istags/", created).await,
            Err(StoreError::Compacted { since, compacted }) if since == created && compacted == gone
        ));
        assert!(store.deleted_since("istags/", later).await.unwrap().is_empty());
        assert!(store.deleted_since("istags/", gone).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn redb_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            store.commit(Txn::new().put("k", b"v".to_vec())).await.unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.get("k").await.unwrap().unwrap().value, b"v");
        assert_eq!(store.revision().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn lazy_commits_are_visible_at_once_checked_like_others_and_kept_on_a_clean_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            let v = store.commit(Txn::new().expect("s", Expect::Absent).put("s", b"1".to_vec()).lazy()).await.unwrap();
            assert_eq!(store.get("s").await.unwrap().unwrap().value, b"1");
            let stale = Txn::new().expect("s", Expect::Version(v - 1)).put("s", b"x".to_vec()).lazy();
            assert!(matches!(store.commit(stale).await, Err(StoreError::Conflict { .. })));
            store.commit(Txn::new().expect("s", Expect::Version(v)).put("s", b"2".to_vec()).lazy()).await.unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.get("s").await.unwrap().unwrap().value, b"2");
    }
}
