//! [`EtcdStore`]: the [`MetadataStore`] contract over etcd for scale-out (every replica connects to one etcd
//! cluster; etcd's revisions are the store's). Built by the registry's startup from [`EtcdConfig`]; everything else
//! sees a [`MetadataStore`]. It owns one background watch over its key prefix that feeds
//! [`MetadataStore::subscribe`] and keeps a read cache of [`MetadataStore::get`] true.
//!
//! - versions are etcd `mod_revision`s; [`Expect::Absent`] compares `version == 0`, [`Expect::Present`]
//!   `version > 0`, [`Expect::Version`] `mod_revision == v`; `commit` returns the transaction's header revision.
//! - a prefix check is a range compare `mod_revision < since + 1` over the prefix, a prefix delete a range delete:
//!   one operation each, however many keys. The watch reports a range delete as one event per key, which keeps
//!   the feed, the cache and `deleted_since` exactly as for single deletes.
//! - the feed is published before `commit` returns: a commit waits (at most [`PUBLISH_WAIT`]) until the watch has
//!   passed its revision, asking etcd for a progress notification when no event of ours marks it.
//! - a `get` is answered from a cache when the watch is live; an entry enters the cache only when no event newer
//!   than the read was applied already, and each watch event updates its key's entry.
//! - `deleted_since` reads etcd's history (a watch from `since + 1` with previous values); [`StoreError::Compacted`]
//!   when etcd compacted it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, SortOrder, SortTarget, TxnOp,
    TxnOpResponse, WatchOptions, WatchResponse,
};
use tokio::sync::{broadcast, mpsc, watch};

use super::lease::Leadership;
use super::{Expect, KvEvent, MetadataStore, StoreError, Txn, Versioned};
use crate::keys;

mod config;
mod feed;

pub use config::EtcdConfig;
use feed::watch_loop;

/// How long a history scan waits for etcd's first answer before asking where the watch stands, and then between
/// answers ([`EtcdStore::deleted_since`]).
const HISTORY_FIRST_QUIET: Duration = Duration::from_millis(1500);
const HISTORY_QUIET: Duration = Duration::from_millis(200);

/// Longest wait to connect, or for one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a commit waits for the watch to publish it; then it warns and returns anyway.
pub const PUBLISH_WAIT: Duration = Duration::from_secs(5);
/// Entries of the read cache.
const CACHE_ENTRIES: usize = 16 * 1024;

/// The etcd metadata store; clones share one connection, one watch and one cache (a second [`EtcdStore::connect`]
/// is another replica).
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    shared: Arc<Shared>,
    /// The revision up to which the watch has published everything.
    published: watch::Receiver<u64>,
    /// Asks the watch for a progress notification (a commit waiting with no event of ours to mark its revision).
    progress: mpsc::Sender<()>,
    _watch: Arc<AbortOnDrop>,
}

/// What the watch task and the handles share.
struct Shared {
    prefix: String,
    endpoints: String,
    lease_ttl: i64,
    events: broadcast::Sender<KvEvent>,
    /// Key (without the prefix) → its value (or absence) as read at a revision.
    cache: quick_cache::sync::Cache<String, Cached>,
    /// Changes of the cache and of the watch state happen under this lock, so a read never caches a value older
    /// than an event already applied.
    state: Mutex<WatchState>,
}

#[derive(Clone)]
struct Cached {
    value: Option<Versioned>,
    /// The revision the value is known true at.
    at: u64,
}

struct WatchState {
    /// Every event up to this revision has been applied to the cache (and published on the feed right after).
    applied: u64,
    /// The watch is running: while it is not, nothing keeps the cache true and reads bypass it.
    live: bool,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl EtcdStore {
    /// Connects (bounded by a few seconds), checks that the cluster answers, and starts the watch from the current
    /// revision. [`StoreError::Backend`] naming the endpoints when etcd cannot be reached.
    pub async fn connect(config: &EtcdConfig) -> Result<EtcdStore, StoreError> {
        let endpoints = config.endpoints.join(",");
        let fail = |reason: String| StoreError::Backend(format!("etcd at {endpoints}: {reason}"));
        if config.endpoints.is_empty() {
            return Err(fail("no endpoints configured".into()));
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
        match (&config.username, &config.password) {
            (Some(user), Some(password)) => options = options.with_user(user.clone(), password.clone()),
            (None, None) => {}
            _ => return Err(fail("username and password go together".into())),
        }
        if config.ca_file.is_none() && config.endpoints.iter().any(|e| e.starts_with("https://")) {
            return Err(fail("https endpoints need ca-file (the CA that signed etcd's certificate)".into()));
        }
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).map_err(|e| fail(format!("reading the CA file {}: {e}", ca.display())))?;
            let tls = etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(pem));
            options = options.with_tls(tls);
        }
        let client = tokio::time::timeout(REQUEST_TIMEOUT, Client::connect(&config.endpoints, Some(options)))
            .await
            .map_err(|_| fail("timed out connecting".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let shared = Arc::new(Shared {
            prefix: config.prefix.clone(),
            endpoints: endpoints.clone(),
            lease_ttl: config.lease_ttl_secs.max(1) as i64,
            events: broadcast::channel(4096).0,
            cache: quick_cache::sync::Cache::new(CACHE_ENTRIES),
            state: Mutex::new(WatchState { applied: 0, live: false }),
        });
        // The cluster answers (or the error says why not), and the feed starts after the current revision.
        let mut kv = client.kv_client();
        let probe = kv.get(config.prefix.clone(), Some(GetOptions::new().with_count_only()));
        let current = tokio::time::timeout(REQUEST_TIMEOUT, probe)
            .await
            .map_err(|_| fail("timed out waiting for an answer".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let current = header_revision(current.header());
        shared.lock().applied = current;
        let (published_tx, published) = watch::channel(current);
        let (progress, progress_rx) = mpsc::channel(1);
        let task = tokio::spawn(watch_loop(client.clone(), shared.clone(), published_tx, progress_rx));
        Ok(EtcdStore { client, shared, published, progress, _watch: Arc::new(AbortOnDrop(task)) })
    }

    /// The etcd client, for what the contract does not cover (tests compact the history with it).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The full etcd key of a store key.
    pub fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.shared.prefix)
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Backend(format!("etcd at {}: {e}", self.shared.endpoints))
    }

    /// An etcd client error: [`StoreError::Unavailable`] when etcd could not be reached or did not answer (the
    /// request may be retried later), else [`StoreError::Backend`].
    fn client_err(&self, e: etcd_client::Error) -> StoreError {
        use etcd_client::Error as E;
        let unreachable = match &e {
            E::IoError(_) | E::TransportError(_) => true,
            E::GRpcStatus(s) => match s.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => true,
                // A status the client made up from a broken connection (etcd itself never sent it).
                tonic::Code::Unknown => std::error::Error::source(s).is_some(),
                _ => false,
            },
            _ => false,
        };
        if unreachable {
            StoreError::Unavailable(format!("etcd at {}: {e}", self.shared.endpoints))
        } else {
            self.err(e)
        }
    }

    /// Runs one etcd request, bounded by [`REQUEST_TIMEOUT`].
    async fn call<T>(
        &self,
        request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Ok(result) => result.map_err(|e| self.client_err(e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "etcd at {}: no answer within {REQUEST_TIMEOUT:?}",
                self.shared.endpoints
            ))),
        }
    }

    /// Waits until the watch has published everything up to `revision`, at most [`PUBLISH_WAIT`].
    async fn wait_published(&self, revision: u64) {
        let mut published = self.published.clone();
        let deadline = tokio::time::Instant::now() + PUBLISH_WAIT;
        let mut poll = Duration::from_millis(20);
        while *published.borrow_and_update() < revision {
            match tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + poll), published.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!(revision, "etcd watch has not published a commit in time");
                    return;
                }
                Ok(Err(_)) => return,
                // No event of ours marks this revision yet: ask etcd where the watch stands.
                Err(_) => {
                    let _ = self.progress.try_send(());
                    poll = Duration::from_millis(100);
                }
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn strip<'k>(&self, key: &'k [u8]) -> Option<&'k str> {
        std::str::from_utf8(key).ok()?.strip_prefix(self.prefix.as_str())
    }
}

/// The end of the etcd range of keys starting with `prefix`.
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn versioned(kv: &etcd_client::KeyValue) -> Versioned {
    Versioned { value: kv.value().to_vec(), version: kv.mod_revision() as u64 }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> u64 {
    header.map(|h| h.revision()).unwrap_or(0).max(0) as u64
}

#[async_trait]
impl MetadataStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        if self.shared.lock().live {
            if let Some(hit) = self.shared.cache.get(key) {
                return Ok(hit.value);
            }
        }
        self.get_latest(key).await
    }

    async fn get_latest(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let mut kv = self.client.kv_client();
        let response = self.call(kv.get(self.full_key(key), None)).await?;
        let read_at = header_revision(response.header());
        let value = response.kvs().first().map(versioned);
        let state = self.shared.lock();
        // An event newer than the read may have been applied already: then the value is returned, not cached.
        if state.live && state.applied <= read_at {
            self.shared.cache.insert(key.to_owned(), Cached { value: value.clone(), at: read_at });
        }
        Ok(value)
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Versioned)>, StoreError> {
        let rows = self.range(prefix, start_after, limit, false).await?;
        Ok(rows.iter().filter_map(|kv| Some((self.shared.strip(kv.key())?.to_owned(), versioned(kv)))).collect())
    }

    async fn list_keys(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let rows = self.range(prefix, start_after, limit, true).await?;
        Ok(rows.iter().filter_map(|kv| Some(self.shared.strip(kv.key())?.to_owned())).collect())
    }

    async fn commit(&self, txn: Txn) -> Result<u64, StoreError> {
        txn.check_limits()?;
        let mut compares: Vec<Compare> = txn
            .checks
            .iter()
            .map(|(key, expect)| {
                let key = self.full_key(key);
                match expect {
                    Expect::Absent => Compare::version(key, CompareOp::Equal, 0),
                    Expect::Present => Compare::version(key, CompareOp::Greater, 0),
                    Expect::Version(v) => Compare::mod_revision(key, CompareOp::Equal, *v as i64),
                }
            })
            .collect();
        // A range compare holds when every key of the range passes (and when the range is empty).
        compares.extend(txn.prefix_checks.iter().map(|(prefix, since)| {
            let since = i64::try_from(*since).unwrap_or(i64::MAX - 1);
            Compare::mod_revision(self.full_key(prefix), CompareOp::Less, since + 1).with_prefix()
        }));
        // etcd refuses a key twice among a transaction's writes: a delete then a put of one key is the put, and a
        // delete under a deleted prefix is the prefix's.
        let mut writes: BTreeMap<&str, Option<&[u8]>> = BTreeMap::new();
        for key in txn.deletes.iter().filter(|k| !txn.deletes_by_prefix(k)) {
            writes.insert(key, None);
        }
        for (key, value) in &txn.puts {
            writes.insert(key, Some(value));
        }
        let mut ops: Vec<TxnOp> = txn
            .delete_prefixes
            .iter()
            .map(|prefix| TxnOp::delete(self.full_key(prefix), Some(DeleteOptions::new().with_prefix())))
            .collect();
        ops.extend(writes.iter().map(|(key, value)| match value {
            Some(value) => TxnOp::put(self.full_key(key), value.to_vec(), None),
            None => TxnOp::delete(self.full_key(key), None),
        }));
        let has_writes = !ops.is_empty();
        // On failure, read the checked keys in the same transaction to name one whose check failed (for a prefix:
        // its most recently written key).
        let mut reads: Vec<TxnOp> = txn.checks.iter().map(|(key, _)| TxnOp::get(self.full_key(key), None)).collect();
        reads.extend(txn.prefix_checks.iter().map(|(prefix, _)| {
            let newest = GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Mod, SortOrder::Descend)
                .with_limit(1)
                .with_keys_only();
            TxnOp::get(self.full_key(prefix), Some(newest))
        }));
        let request = etcd_client::Txn::new().when(compares).and_then(ops).or_else(reads);
        let mut kv = self.client.kv_client();
        let response = self.call(kv.txn(request)).await?;
        let revision = header_revision(response.header());
        if !response.succeeded() {
            let current: Vec<Option<u64>> = response
                .op_responses()
                .iter()
                .map(|r| match r {
                    TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.mod_revision() as u64),
                    _ => None,
                })
                .collect();
            // A read from this replica's cache may have been behind: the retry reads from etcd.
            {
                let _state = self.shared.lock();
                for (key, _) in &txn.checks {
                    self.shared.cache.remove(key);
                }
                if !txn.prefix_checks.is_empty() {
                    let stale = |k: &String| txn.prefix_checks.iter().any(|(p, _)| k.starts_with(p.as_str()));
                    self.shared.cache.retain(|k, _| !stale(k));
                }
            }
            let (single, by_prefix) = current.split_at(txn.checks.len().min(current.len()));
            let failed_single = txn.checks.iter().zip(single).find(|((_, expect), have)| !expect.holds(**have));
            let failed_prefix =
                txn.prefix_checks.iter().zip(by_prefix).find(|((_, since), newest)| newest.is_some_and(|n| n > *since));
            // Nothing failed in the reads only when the state moved on between the checks and the reads.
            let key = failed_single
                .map(|((key, _), _)| key)
                .or(failed_prefix.map(|((prefix, _), _)| prefix))
                .or(txn.checks.first().map(|(key, _)| key))
                .or(txn.prefix_checks.first().map(|(prefix, _)| prefix))
                .cloned()
                .unwrap_or_default();
            return Err(StoreError::Conflict { key });
        }
        if has_writes {
            self.wait_published(revision).await;
        }
        Ok(revision)
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        let mut kv = self.client.kv_client();
        let response = self.call(kv.get(self.shared.prefix.clone(), Some(GetOptions::new().with_count_only()))).await?;
        Ok(header_revision(response.header()))
    }

    fn subscribe(&self) -> broadcast::Receiver<KvEvent> {
        self.shared.events.subscribe()
    }

    async fn deleted_since(&self, prefix: &str, since: u64) -> Result<Vec<(String, Versioned)>, StoreError> {
        let current = self.revision().await?;
        if since >= current {
            return Ok(Vec::new());
        }
        let options = WatchOptions::new().with_prefix().with_start_revision(since as i64 + 1).with_prev_key();
        let mut watch_client = self.client.watch_client();
        let mut stream = self.call(watch_client.watch(self.full_key(prefix), Some(options))).await?;
        // Each key's last event: Some((last value, revision)) for a deletion, None for a write.
        let mut last: BTreeMap<String, Option<Versioned>> = BTreeMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut seen = since;
        // etcd 3.4 answers a progress request at once with its current revision, even while this (unsynced)
        // watcher's history is still being read out: asked too early, it ends the scan with events missing (seen
        // under load in CI). So the first answer gets a long quiet window; once history has started to arrive, a
        // short one.
        let mut quiet = HISTORY_FIRST_QUIET;
        while seen < current {
            let message = tokio::time::timeout(quiet, stream.message()).await;
            let response: WatchResponse = match message {
                Ok(Ok(Some(response))) => response,
                Ok(Ok(None)) => return Err(self.err("the history watch closed")),
                Ok(Err(e)) => return Err(self.err(e)),
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(self.err("timed out reading the history"));
                }
                Err(_) => {
                    // Nothing under the prefix since: ask where the watch stands.
                    stream.request_progress().await.map_err(|e| self.err(e))?;
                    continue;
                }
            };
            if response.compact_revision() > 0 {
                return Err(StoreError::Compacted { since, compacted: response.compact_revision() as u64 });
            }
            if response.canceled() {
                return Err(self.err(format!("history watch canceled: {}", response.cancel_reason())));
            }
            if response.created() {
                continue;
            }
            quiet = HISTORY_QUIET;
            if response.events().is_empty() {
                seen = seen.max(header_revision(response.header()));
                continue;
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                seen = seen.max(kv.mod_revision() as u64);
                let Some(key) = self.shared.strip(kv.key()).filter(|k| keys::keeps_tombstone(k)) else { continue };
                let gone = match event.event_type() {
                    EventType::Delete => Some(Versioned {
                        value: event.prev_kv().map(|p| p.value().to_vec()).unwrap_or_default(),
                        version: kv.mod_revision() as u64,
                    }),
                    EventType::Put => None,
                };
                last.insert(key.to_owned(), gone);
            }
        }
        Ok(last.into_iter().filter_map(|(k, gone)| Some((k, gone?))).collect())
    }

    fn elect(&self, name: &str) -> Leadership {
        super::lease::etcd_elect(self.client.clone(), self.full_key(&keys::lease(name)), self.shared.lease_ttl)
    }
}

impl EtcdStore {
    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        keys_only: bool,
    ) -> Result<Vec<etcd_client::KeyValue>, StoreError> {
        let start = match start_after {
            Some(s) if s.starts_with(prefix) => format!("{}\0", self.full_key(s)),
            Some(s) if s > prefix => return Ok(Vec::new()),
            _ => self.full_key(prefix),
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut options = GetOptions::new().with_range(range_end(&self.full_key(prefix))).with_limit(limit as i64);
        if keys_only {
            options = options.with_keys_only();
        }
        let mut kv = self.client.kv_client();
        let mut response = self.call(kv.get(start, Some(options))).await?;
        Ok(response.take_kvs())
    }
}

#[cfg(test)]
mod tests;
