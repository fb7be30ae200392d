//! Read-only mode: whether the registry refuses every write now. Two sources: the configuration (`read-only`,
//! `--read-only`, `TRIBUTARY_READ_ONLY`), a floor that the run-time switch cannot lift, and the run-time switch an
//! administrator sets through the admin API (`PUT /apis/tributary.dev/v1/readonly`), stored in the metadata store
//! under `settings/read-only` so that every replica sharing the store follows it.
//!
//! The flag is read on every write request, so it is kept in memory and kept true by the store's change feed (as
//! the access-control cache is): a check applies what the feed holds (another replica's switch arrives within
//! milliseconds) and reads the store only when nothing is known yet (at start, after the feed fell behind). The
//! HTTP edge gates on it where requests are parsed (`http::oci::dispatch`, `http::streams_api::dispatch`), the
//! import controller and the upload purge skip their work while it is on.

use std::sync::Arc;

use super::cached::{About, FeedCached};
use chrono::{DateTime, Utc};
use storage_backends::meta::encode;
use storage_backends::{keys, MetadataStore, MetadataStoreExt, StoreError, Txn};

/// What is stored under [`keys::READ_ONLY`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadOnlySwitch {
    pub read_only: bool,
    /// Who switched it last.
    pub changed_by: String,
    pub changed: DateTime<Utc>,
}

/// Where the answer of [`ReadOnly::status`] comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadOnlyStatus {
    /// Whether writes are refused now (the configuration's floor or the switch).
    pub read_only: bool,
    /// Read-only from the configuration: the switch cannot lift it.
    pub config: bool,
    /// The run-time switch, as last set (absent: never set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switch: Option<ReadOnlySwitch>,
}

/// The registry's read-only state. Cheap to share (`Arc`).
pub struct ReadOnly {
    floor: bool,
    meta: Arc<dyn MetadataStore>,
    switch: FeedCached<bool>,
}

/// The message every refused write carries.
pub const REFUSAL: &str = "the registry is read-only: writes are refused until an administrator turns read-only mode \
                           off (tributary adm read-only off)";

impl ReadOnly {
    /// `floor`: read-only from the configuration.
    pub fn new(meta: Arc<dyn MetadataStore>, floor: bool) -> ReadOnly {
        let about: About<bool> = |event| {
            (event.key == keys::READ_ONLY).then(|| match &event.value {
                None => Some(false),
                Some(v) => serde_json::from_slice::<ReadOnlySwitch>(v).ok().map(|s| s.read_only),
            })
        };
        ReadOnly { floor, switch: FeedCached::new(Some(meta.subscribe()), about), meta }
    }

    /// Whether writes are refused now. Costs no store round trip once the switch is known.
    pub async fn is_on(&self) -> Result<bool, StoreError> {
        if self.floor {
            return Ok(true);
        }
        self.switch.get_or_load(|| async { Ok(self.read_switch().await?.is_some_and(|s| s.read_only)) }).await
    }

    async fn read_switch(&self) -> Result<Option<ReadOnlySwitch>, StoreError> {
        Ok(self.meta.get_json::<ReadOnlySwitch>(keys::READ_ONLY).await?.map(|(s, _)| s))
    }

    /// The state as the admin API shows it (read from the store).
    pub async fn status(&self) -> Result<ReadOnlyStatus, StoreError> {
        let switch = self.meta.get_latest_json::<ReadOnlySwitch>(keys::READ_ONLY).await?.map(|(s, _)| s);
        let read_only = self.floor || switch.as_ref().is_some_and(|s| s.read_only);
        Ok(ReadOnlyStatus { read_only, config: self.floor, switch })
    }

    /// Sets the run-time switch (every replica follows within its feed's delay). Turning it off while the
    /// configuration says read-only is [`SwitchError::ConfigFloor`]: the floor stays and nothing is written.
    pub async fn set(&self, on: bool, by: &str) -> Result<ReadOnlyStatus, SwitchError> {
        if self.floor && !on {
            return Err(SwitchError::ConfigFloor);
        }
        let switch = ReadOnlySwitch { read_only: on, changed_by: by.to_owned(), changed: Utc::now() };
        self.meta.commit(Txn::new().put(keys::READ_ONLY, encode(&switch))).await?;
        tracing::warn!(read_only = on, by, "read-only mode switched");
        Ok(self.status().await?)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error(
        "the registry is read-only by its configuration (read-only = true, --read-only or TRIBUTARY_READ_ONLY); \
         restart it without that setting to accept writes"
    )]
    ConfigFloor,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage_backends::MemoryStore;

    #[tokio::test]
    async fn the_switch_is_followed_and_the_floor_holds() {
        let meta: Arc<dyn MetadataStore> = Arc::new(MemoryStore::new());
        let a = ReadOnly::new(meta.clone(), false);
        let b = ReadOnly::new(meta.clone(), false);
        assert!(!a.is_on().await.unwrap() && !b.is_on().await.unwrap());
        a.set(true, "admin").await.unwrap();
        assert!(a.is_on().await.unwrap() && b.is_on().await.unwrap(), "both handles follow the switch");
        let floor = ReadOnly::new(meta.clone(), true);
        b.set(false, "admin").await.unwrap();
        assert!(!a.is_on().await.unwrap());
        assert!(floor.is_on().await.unwrap(), "the configuration's floor holds");
        assert!(matches!(floor.set(false, "admin").await, Err(SwitchError::ConfigFloor)));
        let status = floor.status().await.unwrap();
        assert!(status.read_only && status.config && status.switch.is_some_and(|s| !s.read_only));
    }
}
