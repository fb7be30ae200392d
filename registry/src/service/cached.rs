//! A value read from the metadata store and cached in memory until the change feed says it changed
//! ([`FeedCached`]): what every replica checks on hot paths without a store round trip (the read-only switch,
//! the image policy). An event about the value either carries the new value or drops the cache; a lagging or
//! closed feed drops it too (closed: every later read goes to the store). Used by [`super::readonly`],
//! [`super::limitranges`] and `crate::imagepolicy`.

use std::future::Future;
use std::sync::{Mutex, MutexGuard};

use storage_backends::KvEvent;
use tokio::sync::broadcast::{self, error::TryRecvError};

/// What a feed event means for the cached value: `None`, nothing; `Some(Some(v))`, it is now `v`;
/// `Some(None)`, it changed (read it again).
pub type About<T> = fn(&KvEvent) -> Option<Option<T>>;

/// A cached value kept true by the change feed (see the module documentation).
pub struct FeedCached<T> {
    state: Mutex<State<T>>,
    about: About<T>,
}

struct State<T> {
    /// `None` once the feed closed (or without one): every read goes to the store.
    feed: Option<broadcast::Receiver<KvEvent>>,
    known: Option<T>,
    /// Counts changes seen; a load that raced one is not kept.
    epoch: u64,
}

impl<T> State<T> {
    fn catch_up(&mut self, about: About<T>) {
        let Some(mut feed) = self.feed.take() else { return };
        loop {
            match feed.try_recv() {
                Ok(event) => {
                    if let Some(now) = about(&event) {
                        self.epoch += 1;
                        self.known = now;
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Lagged(_)) => {
                    self.epoch += 1;
                    self.known = None;
                }
                Err(TryRecvError::Closed) => {
                    self.known = None;
                    return;
                }
            }
        }
        self.feed = Some(feed);
    }
}

impl<T: Clone> FeedCached<T> {
    /// Nothing cached yet; `feed` (from `MetadataStore::subscribe`, taken before the first read) keeps it true.
    pub fn new(feed: Option<broadcast::Receiver<KvEvent>>, about: About<T>) -> FeedCached<T> {
        FeedCached { state: Mutex::new(State { feed, known: None, epoch: 0 }), about }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the cached value (it was written through this replica; the feed may report it later), so that the
    /// next read loads it again.
    pub fn forget(&self) {
        let mut s = self.lock();
        s.epoch += 1;
        s.known = None;
    }

    /// The value: the cached one, else `load`'s, which is kept unless a change arrived while it loaded.
    pub async fn get_or_load<F, Fut, E>(&self, load: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let epoch = {
            let mut s = self.lock();
            s.catch_up(self.about);
            if let Some(known) = &s.known {
                return Ok(known.clone());
            }
            s.epoch
        };
        let value = load().await?;
        let mut s = self.lock();
        s.catch_up(self.about);
        if s.feed.is_some() && s.epoch == epoch {
            s.known = Some(value.clone());
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, value: Option<&[u8]>) -> KvEvent {
        KvEvent { key: key.into(), value: value.map(<[u8]>::to_vec), revision: 1 }
    }

    #[tokio::test]
    async fn cached_until_the_feed_says_otherwise() {
        let (tx, rx) = broadcast::channel(4);
        let about: About<u32> = |e| (e.key == "k").then(|| e.value.as_ref().map(|v| v.len() as u32));
        let cache = FeedCached::new(Some(rx), about);
        let load = |n: u32| move || async move { Ok::<_, ()>(n) };
        assert_eq!(cache.get_or_load(load(1)).await, Ok(1));
        assert_eq!(cache.get_or_load(load(2)).await, Ok(1), "cached");
        tx.send(event("other", None)).unwrap();
        assert_eq!(cache.get_or_load(load(3)).await, Ok(1), "not about it");
        tx.send(event("k", Some(b"abcde"))).unwrap();
        assert_eq!(cache.get_or_load(load(4)).await, Ok(5), "the event's value");
        tx.send(event("k", None)).unwrap();
        assert_eq!(cache.get_or_load(load(6)).await, Ok(6), "dropped: loaded again");
        drop(tx);
        assert_eq!(cache.get_or_load(load(7)).await, Ok(7), "feed closed: always loaded");
        assert_eq!(cache.get_or_load(load(8)).await, Ok(8));
    }
}
