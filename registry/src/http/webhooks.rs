//! Webhooks: every configured URL is POSTed a JSON event whenever a stream tag changes (what it points at, or
//! that it was deleted), which is how builds and deployments get told. Events come from the metadata store's
//! change feed ([`streams::watch::tag_change`]); each URL gets them in order from its own queue, each retried
//! with exponential backoff until the receiver answers 2xx or the attempts run out.
//!
//! Delivery survives restarts: the store keeps a cursor (`webhooks/cursor`), the revision up to which every change
//! was handed to every URL (delivered or given up). At start, every tag changed after it is reported as it is now
//! (`MODIFIED`), and every tag deleted after it (the store's tombstones) as `DELETED`, then the feed is followed:
//! at least once, with a tag's changes while stopped reported as its latest state. A queue that overflows drops its
//! oldest events, with a warning. Started by `tributary serve` (setting `webhooks`, `TRIBUTARY_WEBHOOKS`); tests
//! start it with [`spawn`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use names::{RepositoryName, TagName};
use serde::Serialize;
use storage_backends::meta::{decode, encode};
use storage_backends::{keys, Expect, KvEvent, MetadataStore, StoreError, Txn};
use streams::watch::{tag_change, TagChange};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{watch, Mutex, Notify};
use tokio::task::JoinHandle;

use crate::background::{stopped, LeaderTask};
use crate::metrics::WebhookMetrics;

/// How deliveries are retried.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    pub timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 10,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Most events a URL's queue holds before it drops the oldest.
const QUEUE_LIMIT: usize = 10_000;

/// The body POSTed for one tag change.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TagNotification {
    pub kind: &'static str,
    pub api_version: &'static str,
    /// `MODIFIED` (the tag points at something new) or `DELETED`.
    #[serde(rename = "type")]
    pub change: &'static str,
    pub namespace: String,
    pub image_stream: String,
    pub tag: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_image_reference: Option<String>,
    pub resource_version: String,
    pub timestamp: String,
}

/// What a tag pointed at when last reported: (image, reference).
type Seen = BTreeMap<(RepositoryName, TagName), (Option<String>, String)>;

/// The notification for a change, unless the tag points where it already did (a rewrite of the same event).
fn notification(seen: &mut Seen, change: TagChange) -> Option<TagNotification> {
    let key = (change.repo.clone(), change.tag.clone());
    let now =
        change.current.as_ref().map(|e| (e.image.as_ref().map(|d| d.to_string()), e.docker_image_reference.clone()));
    let kind = match (&now, seen.get(&key)) {
        (None, None) => return None,
        (None, Some(_)) => {
            seen.remove(&key);
            "DELETED"
        }
        (Some(n), Some(before)) if n == before => return None,
        (Some(n), _) => {
            seen.insert(key, n.clone());
            "MODIFIED"
        }
    };
    let (image, reference) = now.map(|(i, r)| (i, Some(r))).unwrap_or((None, None));
    Some(TagNotification {
        kind: "ImageStreamTagEvent",
        api_version: "tributary.dev/v1",
        change: kind,
        namespace: change.repo.namespace().to_string(),
        image_stream: change.repo.stream().to_string(),
        tag: change.tag.to_string(),
        image,
        docker_image_reference: reference,
        resource_version: change.revision.to_string(),
        timestamp: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// Every tag history now, as changes (to learn where tags point, or to catch up after falling behind).
async fn scan(meta: &dyn MetadataStore) -> Vec<TagChange> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = match meta.list(keys::ISTAGS, after.as_deref(), 1000).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(cause = %e, "webhooks: could not read the tags");
                return out;
            }
        };
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        out.extend(
            page.into_iter()
                .filter_map(|(key, v)| tag_change(&KvEvent { key, value: Some(v.value), revision: v.version })),
        );
    }
    out
}

/// One URL's queue, in revision order. The front stays until it was handled (delivered or given up), so that the
/// cursor never passes an event still being retried.
struct Queue {
    events: Mutex<VecDeque<(u64, TagNotification)>>,
    ready: Notify,
}

impl Queue {
    fn new() -> Queue {
        Queue { events: Mutex::new(VecDeque::new()), ready: Notify::new() }
    }

    async fn push(&self, url: &url::Url, revision: u64, n: TagNotification) {
        let mut q = self.events.lock().await;
        if q.len() >= QUEUE_LIMIT {
            q.pop_front();
            tracing::warn!(%url, "webhook queue full: dropped the oldest event");
        }
        q.push_back((revision, n));
        self.ready.notify_one();
    }

    async fn front(&self) -> TagNotification {
        loop {
            if let Some((_, n)) = self.events.lock().await.front() {
                return n.clone();
            }
            self.ready.notified().await;
        }
    }

    async fn handled(&self) {
        self.events.lock().await.pop_front();
    }

    /// The revision up to which this URL has handled everything, given that the dispatcher has queued everything
    /// up to `observed`.
    async fn progress(&self, observed: u64) -> u64 {
        // The least pending revision (start-up catch-up and the feed may interleave out of order).
        match self.events.lock().await.iter().map(|(r, _)| *r).min() {
            Some(revision) => revision.saturating_sub(1),
            None => observed,
        }
    }
}

/// Delivers one notification, retrying; returns whether the receiver took it.
async fn deliver(
    http: &reqwest::Client,
    url: &url::Url,
    n: &TagNotification,
    retry: Retry,
    metrics: &WebhookMetrics,
) -> bool {
    let mut backoff = retry.first_backoff;
    for attempt in 1..=retry.attempts {
        match http.post(url.clone()).timeout(retry.timeout).json(n).send().await {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) => tracing::warn!(%url, status = r.status().as_u16(), attempt, "webhook refused the event"),
            Err(e) => tracing::warn!(%url, cause = %e, attempt, "webhook unreachable"),
        }
        if attempt < retry.attempts {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(retry.max_backoff);
            metrics.retry();
        }
    }
    tracing::error!(%url, namespace = %n.namespace, stream = %n.image_stream, tag = %n.tag, "webhook event given up");
    false
}

/// Aborts its tasks when dropped: a leader's delivery tasks go with its term.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// The changes to report after revision `cursor`, in revision order: tags written since (as they are now) and
/// tags deleted since. Fills `seen` with where every other tag points. Used at start (from the stored cursor) and
/// when the feed was missed (from the last revision queued).
async fn catch_up(meta: &dyn MetadataStore, cursor: Option<u64>, seen: &mut Seen) -> Vec<TagChange> {
    let now = scan(meta).await;
    let Some(cursor) = cursor else {
        for change in now {
            notification(seen, change);
        }
        return Vec::new();
    };
    let present: BTreeSet<(RepositoryName, TagName)> = now.iter().map(|c| (c.repo.clone(), c.tag.clone())).collect();
    let (old, mut changed): (Vec<TagChange>, Vec<TagChange>) = now.into_iter().partition(|c| c.revision <= cursor);
    for change in old {
        notification(seen, change);
    }
    match meta.deleted_since(keys::ISTAGS, cursor).await {
        Ok(deleted) => {
            for (key, last) in deleted {
                let Some((repo, tag)) = keys::istag_of_key(&key) else { continue };
                if present.contains(&(repo.clone(), tag.clone())) {
                    continue;
                }
                // It pointed somewhere before (whatever it was): its deletion is news.
                seen.insert((repo.clone(), tag.clone()), (None, String::new()));
                changed.push(TagChange { repo, tag, current: None, revision: last.version });
            }
        }
        Err(StoreError::Compacted { .. }) => {
            tracing::warn!(cursor, "webhooks were stopped too long: tags deleted meanwhile are not reported")
        }
        Err(e) => tracing::warn!(cause = %e, "webhooks: could not read the deleted tags"),
    }
    changed.sort_by_key(|c| c.revision);
    changed
}

/// Queues the notification of each change that is news (see [`notification`]) for every URL.
async fn fan_out(queues: &[(url::Url, Arc<Queue>)], seen: &mut Seen, changes: Vec<TagChange>) {
    for change in changes {
        let revision = change.revision.max(1);
        if let Some(n) = notification(seen, change) {
            for (url, queue) in queues {
                queue.push(url, revision, n.clone()).await;
            }
        }
    }
}

/// The lease of webhook delivery.
pub const WEBHOOKS_LEASE: &str = "webhooks";

/// Starts notifying `urls` of tag changes in `meta`, on the current tokio runtime, from where the last run left
/// off, on whichever replica holds the lease [`WEBHOOKS_LEASE`] ([`crate::background`]). Returns at once; the
/// deliveries run until the returned task is stopped or dropped, or the runtime stops. Without URLs this replica
/// does not campaign (a replica configured without them never holds up delivery).
pub fn spawn(meta: Arc<dyn MetadataStore>, urls: Vec<url::Url>, retry: Retry) -> LeaderTask {
    spawn_counted(meta, urls, retry, WebhookMetrics::default())
}

/// [`spawn`], counting deliveries and retries into `metrics` (what `tributary serve` runs).
pub fn spawn_counted(
    meta: Arc<dyn MetadataStore>,
    urls: Vec<url::Url>,
    retry: Retry,
    metrics: WebhookMetrics,
) -> LeaderTask {
    if urls.is_empty() {
        return LeaderTask::idle(WEBHOOKS_LEASE);
    }
    let store = meta.clone();
    LeaderTask::spawn(meta, WEBHOOKS_LEASE, move |stopping| {
        relay(store.clone(), urls.clone(), retry, metrics.clone(), stopping)
    })
}

/// One leader's term of delivery: from the stored cursor, until asked to stop (the cursor is saved first) or the
/// cursor was moved by someone else (another replica that believed itself the holder: this one steps down and
/// the next term starts from what is stored). The cursor is only written with a compare-and-swap on the version
/// this term read or last wrote, so two overlapping holders never both advance it unnoticed.
async fn relay(
    meta: Arc<dyn MetadataStore>,
    urls: Vec<url::Url>,
    retry: Retry,
    metrics: WebhookMetrics,
    mut stopping: watch::Receiver<bool>,
) {
    // Subscribed first: changes committed after the cursor was read are on the feed.
    let mut feed = meta.subscribe();
    let (cursor, mut expect) = match meta.get(keys::WEBHOOK_CURSOR).await {
        Ok(None) => (None, Expect::Absent),
        Ok(Some(v)) => match decode::<u64>(keys::WEBHOOK_CURSOR, &v.value) {
            Ok(c) => (Some(c), Expect::Version(v.version)),
            Err(e) => {
                tracing::warn!(cause = %e, "webhooks: the stored cursor is unreadable; starting from now");
                (None, Expect::Version(v.version))
            }
        },
        Err(e) => {
            tracing::warn!(cause = %e, "webhooks: could not read the cursor; stepping down");
            return;
        }
    };
    let queues: Vec<(url::Url, Arc<Queue>)> = urls.into_iter().map(|u| (u, Arc::new(Queue::new()))).collect();
    let http = reqwest::Client::new();
    // Told each time a URL has handled an event, so that the cursor follows promptly.
    let progressed = Arc::new(Notify::new());
    let mut tasks = Tasks(Vec::new());
    for (url, queue) in &queues {
        let (url, queue, http, progressed) = (url.clone(), queue.clone(), http.clone(), progressed.clone());
        let metrics = metrics.clone();
        tasks.0.push(tokio::spawn(async move {
            loop {
                let n = queue.front().await;
                let delivered = deliver(&http, &url, &n, retry, &metrics).await;
                metrics.delivery(delivered);
                queue.handled().await;
                progressed.notify_one();
            }
        }));
    }
    // Everything up to `observed` has been queued; 0 until the start-up catch-up is queued.
    let observed = Arc::new(AtomicU64::new(0));
    {
        let (meta, queues, observed) = (meta.clone(), queues.clone(), observed.clone());
        tasks.0.push(tokio::spawn(async move {
            let start = meta.revision().await.unwrap_or(0);
            let mut seen = Seen::new();
            let missed = catch_up(meta.as_ref(), cursor, &mut seen).await;
            fan_out(&queues, &mut seen, missed).await;
            observed.store(start.max(1), Ordering::Release);
            loop {
                let (changes, revision) = match feed.recv().await {
                    Ok(ev) => (tag_change(&ev).into_iter().collect::<Vec<_>>(), ev.revision),
                    Err(RecvError::Lagged(missed)) => {
                        // As after a restart: from the last revision fully queued.
                        tracing::warn!(missed, "webhooks fell behind the change feed; catching up from the store");
                        feed = feed.resubscribe();
                        let revision = meta.revision().await.unwrap_or(0);
                        let from = observed.load(Ordering::Acquire);
                        let changes = catch_up(meta.as_ref(), Some(from), &mut seen).await;
                        (changes, revision)
                    }
                    Err(RecvError::Closed) => return,
                };
                fan_out(&queues, &mut seen, changes).await;
                observed.fetch_max(revision, Ordering::AcqRel);
            }
        }));
    }
    // The cursor: saved whenever a URL made progress (or every 500 ms), and once more when asked to stop.
    let mut saved = cursor.unwrap_or(0);
    loop {
        let stop = tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => false,
            _ = progressed.notified() => false,
            _ = stopped(&mut stopping) => true,
        };
        let seen = observed.load(Ordering::Acquire);
        if seen != 0 {
            let mut cursor = seen;
            for (_, q) in &queues {
                cursor = cursor.min(q.progress(seen).await);
            }
            if cursor > saved {
                let txn = Txn::new().expect(keys::WEBHOOK_CURSOR, expect).put(keys::WEBHOOK_CURSOR, encode(&cursor));
                match meta.commit(txn.lazy()).await {
                    Ok(revision) => {
                        saved = cursor;
                        expect = Expect::Version(revision);
                    }
                    Err(StoreError::Conflict { .. }) => {
                        tracing::warn!(
                            cursor,
                            "webhooks: another replica moved the cursor (two holders overlapped); stepping down"
                        );
                        return;
                    }
                    Err(e) => tracing::warn!(cause = %e, "webhooks: could not save the cursor"),
                }
            }
        }
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use names::Digest;
    use storage_backends::MetadataStoreExt;
    use streams::model::TagEvent;

    fn change(tag: &str, image: Option<&str>) -> TagChange {
        TagChange {
            repo: "ns/app".parse().unwrap(),
            tag: tag.parse().unwrap(),
            current: image.map(|i| TagEvent {
                created: Utc::now(),
                docker_image_reference: format!("h/ns/app@{}", Digest::sha256_of(i.as_bytes())),
                image: Some(Digest::sha256_of(i.as_bytes())),
                generation: 1,
                by: None,
            }),
            revision: 7,
        }
    }

    /// Runs one term of delivery to a URL nobody listens on; the cursor is stored once the term has started.
    async fn term(meta: &Arc<dyn MetadataStore>) -> (JoinHandle<()>, watch::Sender<bool>) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url: url::Url = format!("http://127.0.0.1:{port}/hook").parse().unwrap();
        let retry = Retry { attempts: 1, ..Retry::default() };
        let (stop, stopping) = watch::channel(false);
        let term = tokio::spawn(relay(meta.clone(), vec![url], retry, WebhookMetrics::default(), stopping));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while meta.get(keys::WEBHOOK_CURSOR).await.unwrap().is_none() {
            assert!(tokio::time::Instant::now() < deadline, "the cursor was never saved");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (term, stop)
    }

    #[tokio::test]
    async fn a_cursor_moved_by_another_holder_makes_this_one_step_down() {
        let meta: Arc<dyn MetadataStore> = Arc::new(storage_backends::MemoryStore::new());
        let (mut term, _stop) = term(&meta).await;
        // Another replica that believes it holds the lease saves its own cursor.
        meta.commit(Txn::new().put(keys::WEBHOOK_CURSOR, encode(&1_000_000u64))).await.unwrap();
        // Any change moves this term's cursor: its compare-and-swap fails, and it stops delivering.
        meta.commit(Txn::new().put("namespaces/ns", b"{}".to_vec())).await.unwrap();
        tokio::time::timeout(Duration::from_secs(3), &mut term).await.expect("stepped down").unwrap();
        let stored = meta.get_json::<u64>(keys::WEBHOOK_CURSOR).await.unwrap().unwrap().0;
        assert_eq!(stored, 1_000_000, "the other holder's cursor is not overwritten");
    }

    #[tokio::test]
    async fn an_undisturbed_holder_keeps_its_cursor_moving_and_saves_it_when_stopped() {
        let meta: Arc<dyn MetadataStore> = Arc::new(storage_backends::MemoryStore::new());
        let (mut term, stop) = term(&meta).await;
        let revision = meta.commit(Txn::new().put("namespaces/ns", b"{}".to_vec())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!term.is_finished(), "still delivering");
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(3), &mut term).await.expect("stopped").unwrap();
        let stored = meta.get_json::<u64>(keys::WEBHOOK_CURSOR).await.unwrap().unwrap().0;
        assert_eq!(stored, revision, "the cursor reached the last change");
    }

    #[test]
    fn only_real_moves_are_notified() {
        let mut seen = Seen::new();
        let n = notification(&mut seen, change("v1", Some("a"))).unwrap();
        assert_eq!((n.change, n.tag.as_str(), n.resource_version.as_str()), ("MODIFIED", "v1", "7"));
        assert!(notification(&mut seen, change("v1", Some("a"))).is_none(), "the same image again is no news");
        assert_eq!(notification(&mut seen, change("v1", Some("b"))).unwrap().change, "MODIFIED");
        assert_eq!(notification(&mut seen, change("v1", None)).unwrap().change, "DELETED");
        assert!(notification(&mut seen, change("v1", None)).is_none());
        let body = serde_json::to_value(notification(&mut seen, change("v2", Some("c"))).unwrap()).unwrap();
        assert_eq!(body["type"], "MODIFIED");
        assert_eq!(body["imageStream"], "app");
        assert_eq!(body["kind"], "ImageStreamTagEvent");
    }
}
