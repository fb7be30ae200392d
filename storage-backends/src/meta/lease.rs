//! Leases for work that must run on one replica at a time: the [`Leadership`] handle every
//! [`super::MetadataStore::elect`] returns, [`LocalLeases`] (the in-process leases of the embedded and memory
//! stores) and the etcd campaign. Only the store implementations build these; callers hold a [`Leadership`].

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Semaphore};

/// A campaign for a named lease. [`Leadership::is_leader`] says whether it is held now; the campaign goes on in
/// the background (after losing the lease it campaigns again) until the handle is dropped, which releases it
/// (or [`Leadership::resign`]ed, which also waits until the release is done).
pub struct Leadership {
    held: watch::Receiver<bool>,
    /// Set by [`Leadership::abandon`]: the lease is no longer held as far as this handle is concerned.
    abandoned: bool,
    campaign: Campaign,
}

/// What releases a backend's lease (etcd: revokes it); bounded in time by the backend.
pub type Release = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Stops the campaign task when the [`Leadership`] goes, then runs the backend's release (if any).
struct Campaign {
    task: tokio::task::JoinHandle<()>,
    release: Option<Release>,
}

impl Drop for Campaign {
    fn drop(&mut self) {
        self.task.abort();
        if let (Some(release), Ok(runtime)) = (self.release.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(release());
        }
    }
}

impl Leadership {
    /// A leadership whose campaign `task` reports on `held`; `release` runs after the task is aborted on drop.
    pub fn new(held: watch::Receiver<bool>, task: tokio::task::JoinHandle<()>, release: Option<Release>) -> Self {
        Leadership { held, abandoned: false, campaign: Campaign { task, release } }
    }

    /// Whether this handle holds the lease now.
    pub fn is_leader(&self) -> bool {
        !self.abandoned && *self.held.borrow()
    }

    /// Waits until this handle holds the lease.
    pub async fn acquired(&mut self) {
        if self.abandoned || self.held.wait_for(|held| *held).await.is_err() {
            // The campaign ended (abandoned, or a panic): the lease is never held again.
            std::future::pending::<()>().await;
        }
    }

    /// Stops campaigning and keeping the lease alive without releasing it, as a killed process would: another
    /// candidate gets the lease when it expires. This handle is no longer the leader from now on. For tests of
    /// failover.
    pub fn abandon(&mut self) {
        self.campaign.task.abort();
        self.campaign.release = None;
        self.abandoned = true;
    }

    /// Waits until this handle no longer holds the lease (returns at once when it does not).
    pub async fn lost(&mut self) {
        if self.abandoned {
            return;
        }
        let _ = self.held.wait_for(|held| !*held).await;
    }

    /// Stops campaigning and releases the lease, returning once the release is done (etcd: revoked, so another
    /// candidate takes over at once rather than after the TTL). Dropping the handle releases it too, without
    /// waiting.
    pub async fn resign(mut self) {
        self.campaign.task.abort();
        if let Some(release) = self.campaign.release.take() {
            release().await;
        }
    }
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership").field("is_leader", &self.is_leader()).finish()
    }
}

/// In-process leases: one holder per name among the handles sharing this value (clones of one store).
#[derive(Default)]
pub struct LocalLeases {
    names: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl LocalLeases {
    /// Campaigns for `name`: held from when the previous holder of the name drops its [`Leadership`].
    pub fn elect(&self, name: &str) -> Leadership {
        let gate = {
            let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
            names.entry(name.to_owned()).or_insert_with(|| Arc::new(Semaphore::new(1))).clone()
        };
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            // The permit lives as long as this task, which the Leadership aborts on drop.
            let Ok(_permit) = gate.acquire_owned().await else { return };
            let _ = tx.send(true);
            std::future::pending::<()>().await;
        });
        Leadership::new(rx, task, None)
    }
}

/// Campaigns for the etcd lease whose holder key is `key` (`<prefix>leases/<name>`): the key is created, only when
/// absent, attached to an etcd lease of `ttl` seconds that a background task keeps alive, with a random holder id as
/// its value. Someone else's key is watched until it goes (released, or deleted by etcd when its lease expired);
/// a holder whose keep-alive fails or whose key disappears reports the loss and campaigns again. Dropping the
/// [`Leadership`] revokes the lease, which deletes the key at once.
pub(super) fn etcd_elect(client: etcd_client::Client, key: String, ttl: i64) -> Leadership {
    let (held, rx) = watch::channel(false);
    let lease = Arc::new(Mutex::new(None::<i64>));
    let task = tokio::spawn(etcd_campaign(client.clone(), key, ttl, held, lease.clone()));
    let release: Release = Box::new(move || {
        let id = lease.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut leases = client.lease_client();
        Box::pin(async move {
            if let Some(id) = id {
                let _ = tokio::time::timeout(Duration::from_secs(5), leases.revoke(id)).await;
            }
        })
    });
    Leadership::new(rx, task, Some(release))
}

async fn etcd_campaign(
    client: etcd_client::Client,
    key: String,
    ttl: i64,
    held: watch::Sender<bool>,
    lease: Arc<Mutex<Option<i64>>>,
) {
    let holder = uuid::Uuid::new_v4().to_string();
    loop {
        let result = etcd_hold_once(&client, &key, ttl, &holder, &held, &lease).await;
        let _ = held.send(false);
        let id = lease.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(id) = id {
            let _ = tokio::time::timeout(Duration::from_secs(5), client.lease_client().revoke(id)).await;
        }
        if let Err(e) = result {
            tracing::warn!(key, error = %e, "etcd lease campaign failed; trying again");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// One round: returns when the lease was lost (or was someone else's and went).
async fn etcd_hold_once(
    client: &etcd_client::Client,
    key: &str,
    ttl: i64,
    holder: &str,
    held: &watch::Sender<bool>,
    lease: &Mutex<Option<i64>>,
) -> Result<(), etcd_client::Error> {
    use etcd_client::{Compare, CompareOp, EventType, PutOptions, TxnOp, WatchOptions};
    // The lease lives at least `ttl` from when etcd last heard of it: from before the grant was asked for, then
    // from when each answered keep-alive was sent.
    let asked = tokio::time::Instant::now();
    let id = client.lease_client().grant(ttl, None).await?.id();
    *lease.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
    let create = etcd_client::Txn::new().when([Compare::version(key, CompareOp::Equal, 0)]).and_then([TxnOp::put(
        key,
        holder,
        Some(PutOptions::new().with_lease(id)),
    )]);
    let response = client.kv_client().txn(create).await?;
    let revision = response.header().map(|h| h.revision()).unwrap_or(0);
    let gone =
        |r: &etcd_client::WatchResponse| r.canceled() || r.events().iter().any(|e| e.event_type() == EventType::Delete);
    let mut watch =
        client.watch_client().watch(key, Some(WatchOptions::new().with_start_revision(revision + 1))).await?;
    if !response.succeeded() {
        // Held elsewhere: wait until the key goes (or a while, then look again).
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(r)) = watch.message().await {
                if gone(&r) {
                    return;
                }
            }
        })
        .await;
        return Ok(());
    }
    let _ = held.send(true);
    let (mut keeper, mut answers) = client.lease_client().keep_alive(id).await?;
    let period = Duration::from_millis((ttl as u64 * 1000 / 3).max(100));
    let mut tick = tokio::time::interval(period);
    // Give up two thirds of the TTL after the last keep-alive etcd answered was sent, before etcd could expire
    // the lease (it counts from when it received that keep-alive, later still), so two holders never overlap.
    let margin = period * 2;
    let mut alive_since = asked;
    let mut sent: VecDeque<tokio::time::Instant> = VecDeque::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(alive_since + margin) => {
                tracing::warn!(key, "etcd lease not renewed in time; leadership lost");
                return Ok(());
            }
            _ = tick.tick() => {
                if sent.len() < 16 {
                    sent.push_back(tokio::time::Instant::now());
                }
                keeper.keep_alive().await?;
            }
            answer = answers.message() => match answer? {
                Some(a) if a.ttl() > 0 => {
                    // Answers come in the order of the requests.
                    if let Some(at) = sent.pop_front() {
                        alive_since = alive_since.max(at);
                    }
                }
                _ => return Ok(()),
            },
            message = watch.message() => match message? {
                Some(r) if !gone(&r) => {}
                _ => return Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_abandoned_lease_is_no_longer_held_and_another_candidate_gets_it() {
        let leases = LocalLeases::default();
        let mut first = leases.elect("work");
        tokio::time::timeout(Duration::from_secs(5), first.acquired()).await.expect("the only candidate leads");
        let mut second = leases.elect("work");
        tokio::task::yield_now().await;
        assert!(first.is_leader() && !second.is_leader());
        first.abandon();
        assert!(!first.is_leader(), "an abandoned handle does not claim the lease");
        tokio::time::timeout(Duration::from_secs(1), first.lost()).await.expect("lost() returns at once");
        tokio::time::timeout(Duration::from_secs(5), second.acquired()).await.expect("the other candidate leads");
        assert!(futures::FutureExt::now_or_never(first.acquired()).is_none(), "never held again");
    }

    #[tokio::test]
    async fn resigning_hands_the_lease_over() {
        let leases = LocalLeases::default();
        let mut first = leases.elect("work");
        first.acquired().await;
        let mut second = leases.elect("work");
        first.resign().await;
        tokio::time::timeout(Duration::from_secs(5), second.acquired()).await.expect("the other candidate leads");
    }
}
