//! The metadata store: a small key-value contract with compare-and-swap on per-key versions, atomic multi-key
//! transactions, ordered prefix listing, a change feed, tombstones of deleted watched keys (so a watch from an
//! older revision learns of deletions) and leases for work that must run on one replica at a time. This module
//! owns the contract ([`MetadataStore`], its types, its limits); `streams`, `auth` and `registry` call it. Its
//! implementations: the embedded [`RedbStore`] ([`redb`]), [`EtcdStore`] for scale-out ([`etcd`]) and the
//! in-process [`MemoryStore`] for tests ([`memory`]); every one passes the same [`suite`]. JSON conveniences live in
//! [`MetadataStoreExt`]. Keys are `/`-separated strings built by [`crate::keys`]; values are opaque bytes.
//!
//! Versions are store-wide revisions (as in etcd): every committed transaction gets a higher revision than any
//! before it (the next one, except on etcd, whose revisions other prefixes share) and every key it writes carries
//! that revision as its version. A writer reads a value with its version, then commits with
//! `Expect::Version(v)`; if anyone wrote the key in between the commit fails with [`StoreError::Conflict`] and the
//! writer retries on fresh data. No write is ever lost silently.
//!
//! Every backend refuses what etcd would refuse ([`MAX_TXN_OPS`], [`MAX_VALUE_BYTES`], [`MAX_TXN_BYTES`]) with
//! [`StoreError::TooLarge`] before touching anything, so tests on the embedded store catch it.
//!
//! Prefix operations let a transaction cover any number of keys in one operation each: [`Txn::delete_prefix`]
//! (etcd's range delete) and [`Txn::expect_prefix_unchanged`] (etcd's range compare). The rule a caller must know:
//! a prefix check looks at the keys that exist when it runs, so it sees every put under the prefix since the
//! revision given but not a deletion. A caller that must notice deletions too guards them with a key it checks
//! by version: every deleter of a key under the prefix also writes (or deletes) that guard key in the same
//! transaction (the streams crate uses the stream's own key).

pub mod etcd;
pub mod lease;
pub mod memory;
pub mod redb;
pub mod suite;

pub use self::etcd::{EtcdConfig, EtcdStore};
pub use self::lease::Leadership;
pub use self::memory::MemoryStore;
pub use self::redb::{RedbStore, TOMBSTONE_RETENTION};

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::broadcast;

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

impl Expect {
    /// Whether a key at version `have` (`None`: absent) meets this expectation.
    pub fn holds(self, have: Option<u64>) -> bool {
        match (self, have) {
            (Expect::Absent, None) | (Expect::Present, Some(_)) => true,
            (Expect::Version(want), Some(have)) => want == have,
            _ => false,
        }
    }
}

/// An atomic set of checks and writes. Deletes (single and by prefix) apply before puts.
#[derive(Debug, Default, Clone)]
pub struct Txn {
    pub checks: Vec<(String, Expect)>,
    /// `(prefix, since)`: no key under `prefix` may have a version above `since` (see
    /// [`Txn::expect_prefix_unchanged`]).
    pub prefix_checks: Vec<(String, u64)>,
    pub puts: Vec<(String, Vec<u8>)>,
    pub deletes: Vec<String>,
    /// Every key starting with one of these is deleted (see [`Txn::delete_prefix`]).
    pub delete_prefixes: Vec<String>,
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
    /// Deletes every key starting with `prefix`, however many, as one write toward [`MAX_TXN_OPS`]. Each key
    /// deleted is on the feed and (if [`crate::keys::keeps_tombstone`] names it) in
    /// [`MetadataStore::deleted_since`] exactly as a single delete would put it. A transaction may not also put a
    /// key under a prefix it deletes (etcd refuses that; [`StoreError::InvalidTxn`]).
    pub fn delete_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.delete_prefixes.push(prefix.into());
        self
    }
    /// Requires that no key under `prefix` has a version above `since` (nothing under it was written after that
    /// revision), as one check toward [`MAX_TXN_OPS`]; an empty prefix holds. Only keys present when the
    /// transaction runs are looked at: a key deleted after `since` does not fail the check (etcd's range compare
    /// cannot see it), so callers that must notice deletions guard them with a key checked by version (see the
    /// module documentation). A failure is [`StoreError::Conflict`] naming `prefix`.
    pub fn expect_prefix_unchanged(mut self, prefix: impl Into<String>, since: u64) -> Self {
        self.prefix_checks.push((prefix.into(), since));
        self
    }
    /// Marks the transaction [`Txn::lazy`].
    pub fn lazy(mut self) -> Self {
        self.lazy = true;
        self
    }
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty() && self.delete_prefixes.is_empty()
    }
    /// How many writes (puts, deletes, prefix deletes) it holds, toward [`MAX_TXN_OPS`].
    pub fn writes(&self) -> usize {
        self.puts.len() + self.deletes.len() + self.delete_prefixes.len()
    }
    /// How many checks (by key and by prefix) it holds, toward [`MAX_TXN_OPS`].
    pub fn check_count(&self) -> usize {
        self.checks.len() + self.prefix_checks.len()
    }
    /// Its size in bytes toward [`MAX_TXN_BYTES`]: every key, prefix and value.
    pub fn bytes(&self) -> usize {
        self.puts.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
            + self.deletes.iter().chain(&self.delete_prefixes).map(String::len).sum::<usize>()
            + self.checks.iter().map(|(k, _)| k.len()).sum::<usize>()
            + self.prefix_checks.iter().map(|(k, _)| k.len()).sum::<usize>()
    }
    /// Whether `key` is under one of the prefixes the transaction deletes.
    pub fn deletes_by_prefix(&self, key: &str) -> bool {
        self.delete_prefixes.iter().any(|p| key.starts_with(p.as_str()))
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
    /// The store cannot be reached now (etcd down or not answering in time); nothing was written. Retry later.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// Deletions after the revision asked about are no longer all known (their tombstones were pruned).
    #[error("too old resource version: {since} ({compacted})")]
    Compacted { since: u64, compacted: u64 },
    /// The transaction exceeds a limit every backend enforces (see [`MAX_TXN_OPS`]); nothing was written.
    #[error("transaction too large: {what} is {size}, at most {max}")]
    TooLarge { what: &'static str, size: usize, max: usize },
    /// The transaction contradicts itself (it puts a key under a prefix it deletes); nothing was written.
    #[error("invalid transaction: {0}")]
    InvalidTxn(String),
}

/// Most puts plus deletes (a prefix delete counts one) in one transaction, and separately most checks (a prefix
/// check counts one): etcd's `--max-txn-ops` default.
pub const MAX_TXN_OPS: usize = 128;
/// Largest value of one put (etcd refuses requests over 1.5 MiB; large bytes belong in the blob store).
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Most bytes of keys and values in one transaction, leaving room under etcd's 1.5 MiB request limit.
pub const MAX_TXN_BYTES: usize = 1400 * 1024;

impl Txn {
    /// [`StoreError::TooLarge`] when the transaction exceeds a limit, [`StoreError::InvalidTxn`] when it puts a key
    /// under a prefix it deletes; every backend calls it before anything else.
    pub fn check_limits(&self) -> Result<(), StoreError> {
        let too_large = |what, size, max| Err(StoreError::TooLarge { what, size, max });
        let writes = self.writes();
        if writes > MAX_TXN_OPS {
            return too_large("the number of puts and deletes", writes, MAX_TXN_OPS);
        }
        if self.check_count() > MAX_TXN_OPS {
            return too_large("the number of checks", self.check_count(), MAX_TXN_OPS);
        }
        if let Some(big) = self.puts.iter().map(|(_, v)| v.len()).max().filter(|&n| n > MAX_VALUE_BYTES) {
            return too_large("a value's size in bytes", big, MAX_VALUE_BYTES);
        }
        let bytes = self.bytes();
        if bytes > MAX_TXN_BYTES {
            return too_large("the transaction's size in bytes", bytes, MAX_TXN_BYTES);
        }
        if let Some((key, _)) = self.puts.iter().find(|(k, _)| self.deletes_by_prefix(k)) {
            return Err(StoreError::InvalidTxn(format!("{key} is put under a prefix the transaction deletes")));
        }
        Ok(())
    }
}

/// The metadata store contract. Implementations must make [`MetadataStore::commit`] atomic and durable when it
/// returns `Ok`, must refuse a transaction over the limits ([`Txn::check_limits`]) before touching anything, and
/// must publish each committed change on [`MetadataStore::subscribe`] in revision order *before* `commit` returns
/// (a cache kept true by the feed then never serves a value older than the caller's own write).
#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// Reads one key. A handle sees its own commits at once; with replicas sharing a store (etcd), another
    /// replica's commit once this handle's feed has carried it (milliseconds; a conflicting commit also refreshes
    /// the keys it checked, so a compare-and-swap retry reads fresh data).
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;
    /// Reads one key as the store has it now, whichever replica wrote it last (on etcd a read of etcd itself,
    /// which also refreshes this handle's cache). For a decision that would refuse a client on what may be an
    /// older copy: an upload's offset continued through another replica a moment ago, say.
    async fn get_latest(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.get(key).await
    }
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
    /// Applies a transaction atomically; returns the new revision. Either every put and delete (single or by
    /// prefix) applies or none does (a failed check gives [`StoreError::Conflict`] naming a key whose check failed,
    /// or the prefix of a failed prefix check; a transaction over the limits [`StoreError::TooLarge`]).
    async fn commit(&self, txn: Txn) -> Result<u64, StoreError>;
    /// The latest committed revision.
    async fn revision(&self) -> Result<u64, StoreError>;
    /// A feed of changes committed from now on (except keys [`crate::keys::is_unwatched`] names).
    fn subscribe(&self) -> broadcast::Receiver<KvEvent>;
    /// Keys under `prefix` (of those [`crate::keys::keeps_tombstone`] names) deleted after revision `since` and not
    /// written since, each with its last value; the version is the revision that deleted it. A watch from an old
    /// revision learns of deletions this way. [`StoreError::Compacted`] when such deletions are no longer all
    /// known.
    async fn deleted_since(&self, prefix: &str, since: u64) -> Result<Vec<(String, Versioned)>, StoreError>;
    /// Campaigns for the lease `name` (work that must run on one replica at a time: imports, webhooks, GC). At
    /// most one [`Leadership`] of a name holds it across every handle and replica of the store; dropping it
    /// releases the lease, and a holder that loses it (its replica stalled or lost the store) campaigns again.
    /// Must be called inside a tokio runtime (the campaign runs as a task).
    fn elect(&self, name: &str) -> Leadership;
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
    /// [`MetadataStoreExt::get_json`], with an absence confirmed on the latest copy: for reads whose "not found"
    /// refuses a client (a blob, manifest or tag another replica recorded a moment ago). Costs a round trip to a
    /// shared store only when the key is missing.
    async fn get_json_confirmed<T: DeserializeOwned + Send>(&self, key: &str) -> Result<Option<(T, u64)>, StoreError> {
        match self.get_json(key).await? {
            Some(found) => Ok(Some(found)),
            None => self.get_latest_json(key).await,
        }
    }
    /// [`MetadataStore::get_latest`], decoded.
    async fn get_latest_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, u64)>, StoreError> {
        match self.get_latest(key).await? {
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
    /// Every key under `prefix` with its value and version, read a page at a time.
    async fn list_all(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.list(prefix, after.as_deref(), 1000).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            out.extend(page);
        }
        Ok(out)
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
