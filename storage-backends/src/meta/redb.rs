//! The embedded metadata store: [`RedbStore`], one redb file in the data directory, written by one group-committing
//! thread, with in-process leases. Built by the registry's startup (and tests); everything else sees it as a
//! [`MetadataStore`].

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use ::redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use async_trait::async_trait;
use tokio::sync::broadcast;

use super::lease::{Leadership, LocalLeases};
use super::{Expect, KvEvent, MetadataStore, StoreError, Txn, Versioned};
use crate::keys;

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
    leases: Arc<LocalLeases>,
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
        Ok(RedbStore { db, events, committer, leases: Arc::default() })
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
fn counter(meta: &impl ::redb::ReadableTable<&'static str, u64>, name: &str) -> Result<u64, StoreError> {
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
fn prune_tombstones(w: &::redb::WriteTransaction, cutoff: i64) -> Result<(), StoreError> {
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
        w.set_durability(::redb::Durability::None).map_err(backend)?;
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
            for (prefix, since) in &txn.prefix_checks {
                let mut newer = false;
                for item in kv.range(prefix.as_str()..).map_err(backend)? {
                    let (k, v) = item.map_err(backend)?;
                    if !k.value().starts_with(prefix.as_str()) {
                        break;
                    }
                    if split(k.value(), v.value())?.version > *since {
                        newer = true;
                        break;
                    }
                }
                if newer {
                    results.push(Err(StoreError::Conflict { key: prefix.clone() }));
                    continue 'txns;
                }
            }
            revision += 1;
            // Single deletes and every key under a deleted prefix, each once, in key order.
            let mut gone: BTreeSet<String> = txn.deletes.iter().cloned().collect();
            for prefix in &txn.delete_prefixes {
                for item in kv.range(prefix.as_str()..).map_err(backend)? {
                    let (k, _) = item.map_err(backend)?;
                    if !k.value().starts_with(prefix.as_str()) {
                        break;
                    }
                    gone.insert(k.value().to_owned());
                }
            }
            for key in &gone {
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
        txn.check_limits()?;
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

    fn elect(&self, name: &str) -> Leadership {
        self.leases.elect(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::suite;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redb_passes_the_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("meta.redb")).unwrap();
        suite::run_all(Arc::new(store.clone()), Arc::new(store)).await;
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
