//! [`MemoryStore`]: the whole [`MetadataStore`] contract in process memory (revisions, CAS, listing, the feed,
//! tombstones, compaction, leases), for unit tests of the seams above the store. Nothing durable; not for serving.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::lease::{Leadership, LocalLeases};
use super::{KvEvent, MetadataStore, StoreError, Txn, Versioned};
use crate::keys;

/// An in-memory metadata store; clones share one state (two clones are two handles of one store).
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<KvEvent>,
    leases: Arc<LocalLeases>,
}

#[derive(Default)]
struct State {
    kv: BTreeMap<String, Versioned>,
    /// Deleted keys ([`keys::keeps_tombstone`]) with their last value; the version is the deleting revision.
    tombstones: BTreeMap<String, Versioned>,
    revision: u64,
    /// Deletions at or before this revision may have been forgotten.
    compacted: u64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore { state: Arc::default(), events: broadcast::channel(4096).0, leases: Arc::default() }
    }

    /// Forgets the deletions at or before `revision`, as etcd's compaction (or redb's pruning) does: a
    /// [`MetadataStore::deleted_since`] from before it fails with [`StoreError::Compacted`].
    pub fn compact(&self, revision: u64) {
        let mut state = self.lock();
        state.tombstones.retain(|_, t| t.version > revision);
        state.compacted = state.compacted.max(revision);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The entries of `map` whose key starts with `prefix`, in order.
fn under<'m>(
    map: &'m BTreeMap<String, Versioned>,
    prefix: &'m str,
) -> impl Iterator<Item = (&'m String, &'m Versioned)> {
    map.range::<str, _>((Bound::Included(prefix), Bound::Unbounded)).take_while(move |(k, _)| k.starts_with(prefix))
}

#[async_trait]
impl MetadataStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self.lock().kv.get(key).cloned())
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Versioned)>, StoreError> {
        let state = self.lock();
        let rows = under(&state.kv, prefix)
            .filter(|(k, _)| start_after.is_none_or(|s| k.as_str() > s))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(rows)
    }

    async fn commit(&self, txn: Txn) -> Result<u64, StoreError> {
        txn.check_limits()?;
        // Events are sent under the lock, so the feed is in revision order and complete when commit returns.
        let mut state = self.lock();
        for (key, expect) in &txn.checks {
            if !expect.holds(state.kv.get(key).map(|v| v.version)) {
                return Err(StoreError::Conflict { key: key.clone() });
            }
        }
        for (prefix, since) in &txn.prefix_checks {
            if under(&state.kv, prefix).any(|(_, v)| v.version > *since) {
                return Err(StoreError::Conflict { key: prefix.clone() });
            }
        }
        state.revision += 1;
        let revision = state.revision;
        // Single deletes and every key under a deleted prefix, each once, in key order.
        let mut gone: BTreeSet<String> = txn.deletes.iter().cloned().collect();
        for prefix in &txn.delete_prefixes {
            gone.extend(under(&state.kv, prefix).map(|(k, _)| k.clone()));
        }
        for key in gone {
            if let Some(last) = state.kv.remove(&key).filter(|_| keys::keeps_tombstone(&key)) {
                state.tombstones.insert(key.clone(), Versioned { value: last.value, version: revision });
            }
            if !keys::is_unwatched(&key) {
                let _ = self.events.send(KvEvent { key, value: None, revision });
            }
        }
        for (key, value) in txn.puts {
            state.tombstones.remove(&key);
            if !keys::is_unwatched(&key) {
                let _ = self.events.send(KvEvent { key: key.clone(), value: Some(value.clone()), revision });
            }
            state.kv.insert(key, Versioned { value, version: revision });
        }
        Ok(revision)
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        Ok(self.lock().revision)
    }

    fn subscribe(&self) -> broadcast::Receiver<KvEvent> {
        self.events.subscribe()
    }

    async fn deleted_since(&self, prefix: &str, since: u64) -> Result<Vec<(String, Versioned)>, StoreError> {
        let state = self.lock();
        if since < state.compacted {
            return Err(StoreError::Compacted { since, compacted: state.compacted });
        }
        let rows = under(&state.tombstones, prefix)
            .filter(|(_, t)| t.version > since)
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        Ok(rows)
    }

    fn elect(&self, name: &str) -> Leadership {
        self.leases.elect(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::suite;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_passes_the_suite() {
        let store = MemoryStore::new();
        suite::run_all(Arc::new(store.clone()), Arc::new(store)).await;
    }

    #[tokio::test]
    async fn compacted_deletions_make_older_revisions_too_old() {
        let store = MemoryStore::new();
        let created = store.commit(Txn::new().put("istags/ns/s/t", b"h".to_vec())).await.unwrap();
        let gone = store.commit(Txn::new().delete("istags/ns/s/t")).await.unwrap();
        store.compact(gone);
        assert!(matches!(
            store.deleted_since("istags/", created).await,
            Err(StoreError::Compacted { since, compacted }) if since == created && compacted == gone
        ));
        assert!(store.deleted_since("istags/", gone).await.unwrap().is_empty());
    }
}
