//! The store's one watch over its key prefix ([`watch_loop`]): publishes etcd's events to the change feed in
//! revision order, keeps [`super::EtcdStore`]'s read cache true, and resumes after the last revision seen when the
//! watch breaks. Started by [`super::EtcdStore::connect`].

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use tokio::sync::{mpsc, watch};

use super::{header_revision, Cached, Shared};
use crate::keys;
use crate::meta::{KvEvent, StoreError, Versioned};

/// Follows the prefix for the life of the store: publishes events in revision order, keeps the cache true, and
/// starts again after the last revision seen when the watch breaks.
pub(super) async fn watch_loop(
    client: Client,
    shared: Arc<Shared>,
    published: watch::Sender<u64>,
    mut progress: mpsc::Receiver<()>,
) {
    loop {
        let error = watch_once(&client, &shared, &published, &mut progress).await;
        {
            let mut state = shared.lock();
            state.live = false;
            shared.cache.clear();
        }
        tracing::warn!(error = %error, "etcd watch broke; watching again");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One watch stream, until it fails (or etcd compacted past it).
async fn watch_once(
    client: &Client,
    shared: &Shared,
    published: &watch::Sender<u64>,
    progress: &mut mpsc::Receiver<()>,
) -> StoreError {
    let err = |e: &dyn std::fmt::Display| StoreError::Backend(format!("etcd at {}: {e}", shared.endpoints));
    let from = shared.lock().applied + 1;
    let options = WatchOptions::new().with_prefix().with_start_revision(from as i64).with_progress_notify();
    let mut stream = match client.watch_client().watch(shared.prefix.clone(), Some(options)).await {
        Ok(stream) => stream,
        Err(e) => return err(&e),
    };
    loop {
        let response = tokio::select! {
            message = stream.message() => match message {
                Ok(Some(response)) => response,
                Ok(None) => return err(&"the watch stream closed"),
                Err(e) => return err(&e),
            },
            Some(()) = progress.recv() => {
                if let Err(e) = stream.request_progress().await {
                    return err(&e);
                }
                continue;
            }
        };
        if response.compact_revision() > 0 {
            // Events between our last revision and the compaction are gone: start over from now, with no cache.
            let mut kv = client.kv_client();
            let now = kv.get(shared.prefix.clone(), Some(GetOptions::new().with_count_only())).await;
            let now = match now {
                Ok(r) => header_revision(r.header()),
                Err(e) => return err(&e),
            };
            tracing::warn!(from, compacted = response.compact_revision(), now, "etcd compacted past the watch");
            let mut state = shared.lock();
            state.applied = state.applied.max(now);
            let _ = published.send(state.applied);
            return err(&"compacted");
        }
        if response.canceled() {
            return err(&format!("watch canceled: {}", response.cancel_reason()));
        }
        if response.created() {
            let mut state = shared.lock();
            shared.cache.clear();
            state.live = true;
            continue;
        }
        let mut state = shared.lock();
        let mut events = Vec::with_capacity(response.events().len());
        let mut upto = header_revision(response.header());
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let Some(key) = shared.strip(kv.key()) else { continue };
            let revision = kv.mod_revision() as u64;
            upto = revision;
            let value = match event.event_type() {
                EventType::Put => Some(kv.value().to_vec()),
                EventType::Delete => None,
            };
            if shared.cache.get(key).is_some_and(|c| c.at < revision) {
                let now = value.clone().map(|value| Versioned { value, version: revision });
                shared.cache.insert(key.to_owned(), Cached { value: now, at: revision });
            }
            if !keys::is_unwatched(key) {
                events.push(KvEvent { key: key.to_owned(), value, revision });
            }
        }
        state.applied = state.applied.max(upto);
        let applied = state.applied;
        drop(state);
        for event in events {
            let _ = shared.events.send(event);
        }
        let _ = published.send(applied);
    }
}
