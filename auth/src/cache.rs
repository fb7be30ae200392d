//! [`RecordCache`]: the access-control records every request reads (token records, users, service accounts,
//! namespaces, role bindings), decoded once and kept true by the metadata store's change feed. Only
//! [`crate::service::AuthService`] reads through it, and only on the request path; writes (compare-and-swap) always
//! read the store.
//!
//! Freshness: the store publishes a commit's changes before the commit returns, and every lookup first applies what
//! the feed holds, so a caller sees its own writes (a revoked token fails on the very next request) and, with a
//! shared store, other replicas' writes as soon as their events arrive. A read that raced a change to any cached
//! record is answered but not kept; a feed that fell behind empties the cache; a closed feed turns it off.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use storage_backends::meta::KvEvent;
use storage_backends::{MetadataStore, MetadataStoreExt, StoreError};
use tokio::sync::broadcast::{self, error::TryRecvError};

/// Key prefixes whose records may be cached; changes under any other prefix do not concern the cache.
const CACHED: &[&str] =
    &["tokens/", "token-hashes/", "users/", "serviceaccounts/", "namespaces/", "rolebindings/", "clusterrolebindings/"];

/// Entries kept at most; past it the cache starts over. Bounds what callers presenting many different (e.g.
/// made-up) tokens can make it hold.
const MAX_ENTRIES: usize = 16_384;

type Shared = Arc<dyn Any + Send + Sync>;

pub(crate) struct RecordCache {
    state: Mutex<State>,
}

struct State {
    /// `None` once the feed closed: nothing is cached any more.
    feed: Option<broadcast::Receiver<KvEvent>>,
    /// Counts changes to cached prefixes; a read that saw it move while it ran is not kept.
    epoch: u64,
    /// What was read, decoded, by key: a record under its key (`None`: absent), or the `Vec` of every record under
    /// a prefix under that prefix. A prefix ends in `/` and a record key never does, so the two cannot collide.
    entries: HashMap<String, Option<Shared>>,
}

impl State {
    /// Applies every change the feed holds: a changed key drops its record and every listing it belongs to.
    fn catch_up(&mut self) {
        let Some(mut feed) = self.feed.take() else { return };
        loop {
            match feed.try_recv() {
                Ok(event) => {
                    if !CACHED.iter().any(|p| event.key.starts_with(p)) {
                        continue;
                    }
                    self.epoch += 1;
                    self.entries.remove(&event.key);
                    for (i, _) in event.key.match_indices('/') {
                        self.entries.remove(&event.key[..=i]);
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Lagged(_)) => self.forget(),
                Err(TryRecvError::Closed) => {
                    self.forget();
                    return;
                }
            }
        }
        self.feed = Some(feed);
    }

    fn forget(&mut self) {
        self.epoch += 1;
        self.entries.clear();
    }
}

impl RecordCache {
    pub(crate) fn new(meta: &dyn MetadataStore) -> RecordCache {
        let state = State { feed: Some(meta.subscribe()), epoch: 0, entries: HashMap::new() };
        RecordCache { state: Mutex::new(state) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a cache: after a panic elsewhere it is still sound to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many changes to cached records were seen so far (the feed applied first), or `None` when the feed closed
    /// and nothing may be remembered. Something worked out from cached records while this did not move is still
    /// true; read it before the records.
    pub(crate) fn epoch(&self) -> Option<u64> {
        let mut s = self.lock();
        s.catch_up();
        s.feed.is_some().then_some(s.epoch)
    }

    /// The entry under `key` as a `T`, else `read` it and keep it, unless a change to a cached record raced the
    /// read.
    async fn read_through<T: Send + Sync + 'static>(
        &self,
        key: &str,
        read: impl std::future::Future<Output = Result<Option<T>, StoreError>>,
    ) -> Result<Option<Arc<T>>, StoreError> {
        debug_assert!(CACHED.iter().any(|p| key.starts_with(p)), "{key} is not under a cached prefix");
        let epoch = {
            let mut s = self.lock();
            s.catch_up();
            match s.entries.get(key) {
                Some(None) => return Ok(None),
                Some(Some(hit)) => {
                    if let Ok(hit) = hit.clone().downcast::<T>() {
                        return Ok(Some(hit));
                    }
                }
                None => {}
            }
            s.epoch
        };
        let read = read.await?.map(Arc::new);
        let mut s = self.lock();
        s.catch_up();
        if s.feed.is_some() && s.epoch == epoch {
            if s.entries.len() >= MAX_ENTRIES {
                s.entries.clear();
            }
            s.entries.insert(key.to_owned(), read.clone().map(|v| v as Shared));
        }
        Ok(read)
    }

    /// The record under `key`, decoded as `T`.
    pub(crate) async fn get<T: DeserializeOwned + Send + Sync + 'static>(
        &self,
        meta: &dyn MetadataStore,
        key: &str,
    ) -> Result<Option<Arc<T>>, StoreError> {
        self.read_through(key, async { Ok(meta.get_json::<T>(key).await?.map(|(v, _)| v)) }).await
    }

    /// Every record under `prefix` (which ends in `/`), decoded as `T`, in key order.
    pub(crate) async fn list<T: DeserializeOwned + Send + Sync + 'static>(
        &self,
        meta: &dyn MetadataStore,
        prefix: &str,
    ) -> Result<Arc<Vec<T>>, StoreError> {
        debug_assert!(prefix.ends_with('/'), "{prefix}");
        let read = async { Ok(Some(meta.list_all_json::<T>(prefix).await?.into_iter().map(|(v, _)| v).collect())) };
        Ok(self.read_through::<Vec<T>>(prefix, read).await?.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage_backends::meta::encode;
    use storage_backends::{RedbStore, Txn};

    async fn put(meta: &RedbStore, key: &str, value: &str) {
        meta.commit(Txn::new().put(key, encode(&value.to_owned()))).await.unwrap();
    }

    #[tokio::test]
    async fn sees_every_committed_change_on_the_next_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let meta = RedbStore::open(&dir.path().join("meta.redb")).unwrap();
        let cache = RecordCache::new(&meta);
        assert_eq!(cache.get::<String>(&meta, "users/alice").await.unwrap(), None);
        put(&meta, "users/alice", "one").await;
        assert_eq!(cache.get::<String>(&meta, "users/alice").await.unwrap().as_deref(), Some(&"one".to_owned()));
        put(&meta, "users/alice", "two").await;
        assert_eq!(cache.get::<String>(&meta, "users/alice").await.unwrap().as_deref(), Some(&"two".to_owned()));
        meta.commit(Txn::new().delete("users/alice")).await.unwrap();
        assert_eq!(cache.get::<String>(&meta, "users/alice").await.unwrap(), None);

        put(&meta, "rolebindings/ns/a", "a").await;
        assert_eq!(*cache.list::<String>(&meta, "rolebindings/ns/").await.unwrap(), vec!["a".to_owned()]);
        put(&meta, "rolebindings/ns/b", "b").await;
        put(&meta, "rolebindings/other/c", "c").await;
        assert_eq!(*cache.list::<String>(&meta, "rolebindings/ns/").await.unwrap(), vec!["a".to_owned(), "b".into()]);
        meta.commit(Txn::new().delete("rolebindings/ns/a")).await.unwrap();
        assert_eq!(*cache.list::<String>(&meta, "rolebindings/ns/").await.unwrap(), vec!["b".to_owned()]);
    }

    #[tokio::test]
    async fn a_feed_that_fell_behind_empties_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let meta = RedbStore::open(&dir.path().join("meta.redb")).unwrap();
        let cache = RecordCache::new(&meta);
        put(&meta, "users/alice", "one").await;
        assert!(cache.get::<String>(&meta, "users/alice").await.unwrap().is_some());
        // alice changes, then more changes than the feed buffers, none looked up in between: the event for alice
        // is lost to the cache.
        put(&meta, "users/alice", "two").await;
        for i in 0..5_000 {
            put(&meta, &format!("imagestreams/ns/s{i}"), "x").await;
        }
        assert_eq!(cache.get::<String>(&meta, "users/alice").await.unwrap().as_deref(), Some(&"two".to_owned()));
    }
}
