//! Webhooks: every configured URL is POSTed a JSON event whenever a stream tag changes (what it points at, or
//! that it was deleted), which is how builds and deployments get told. Events come from the metadata store's
//! change feed ([`streams::watch::tag_change`]); each URL gets them in order from its own queue, each retried
//! with exponential backoff until the receiver answers 2xx or the attempts run out. Delivery is at least once
//! while the process runs; a queue that overflows drops its oldest events, with a warning. Started by
//! `tributary serve` (setting `webhooks`, `TRIBUTARY_WEBHOOKS`); tests start it with [`spawn`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use names::{RepositoryName, TagName};
use serde::Serialize;
use storage_backends::{keys, KvEvent, MetadataStore};
use streams::watch::{tag_change, TagChange};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Mutex, Notify};

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

/// One URL's queue.
struct Queue {
    events: Mutex<VecDeque<TagNotification>>,
    ready: Notify,
}

impl Queue {
    async fn push(&self, url: &url::Url, n: TagNotification) {
        let mut q = self.events.lock().await;
        if q.len() >= QUEUE_LIMIT {
            q.pop_front();
            tracing::warn!(%url, "webhook queue full: dropped the oldest event");
        }
        q.push_back(n);
        self.ready.notify_one();
    }

    async fn pop(&self) -> TagNotification {
        loop {
            if let Some(n) = self.events.lock().await.pop_front() {
                return n;
            }
            self.ready.notified().await;
        }
    }
}

/// Delivers one notification, retrying; returns whether the receiver took it.
async fn deliver(http: &reqwest::Client, url: &url::Url, n: &TagNotification, retry: Retry) -> bool {
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
        }
    }
    tracing::error!(%url, namespace = %n.namespace, stream = %n.image_stream, tag = %n.tag, "webhook event given up");
    false
}

/// Starts notifying `urls` of tag changes in `meta`, on the current tokio runtime. Returns at once; the tasks
/// run until the runtime stops.
pub fn spawn(meta: Arc<dyn MetadataStore>, urls: Vec<url::Url>, retry: Retry) {
    if urls.is_empty() {
        return;
    }
    let mut feed = meta.subscribe();
    let queues: Vec<(url::Url, Arc<Queue>)> = urls
        .into_iter()
        .map(|u| (u, Arc::new(Queue { events: Mutex::new(VecDeque::new()), ready: Notify::new() })))
        .collect();
    let http = reqwest::Client::new();
    for (url, queue) in &queues {
        let (url, queue, http) = (url.clone(), queue.clone(), http.clone());
        tokio::spawn(async move {
            loop {
                let n = queue.pop().await;
                deliver(&http, &url, &n, retry).await;
            }
        });
    }
    tokio::spawn(async move {
        // Learn where every tag points now; changes committed meanwhile are on the feed (subscribed first).
        let mut seen = Seen::new();
        for change in scan(meta.as_ref()).await {
            notification(&mut seen, change);
        }
        loop {
            let changes = match feed.recv().await {
                Ok(ev) => tag_change(&ev).into_iter().collect::<Vec<_>>(),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "webhooks fell behind the change feed; catching up from the store");
                    feed = feed.resubscribe();
                    let now = scan(meta.as_ref()).await;
                    let present: std::collections::BTreeSet<_> =
                        now.iter().map(|c| (c.repo.clone(), c.tag.clone())).collect();
                    let gone: Vec<TagChange> = seen
                        .keys()
                        .filter(|k| !present.contains(*k))
                        .map(|(repo, tag)| TagChange {
                            repo: repo.clone(),
                            tag: tag.clone(),
                            current: None,
                            revision: 0,
                        })
                        .collect();
                    now.into_iter().chain(gone).collect()
                }
                Err(RecvError::Closed) => return,
            };
            for change in changes {
                if let Some(n) = notification(&mut seen, change) {
                    for (url, queue) in &queues {
                        queue.push(url, n.clone()).await;
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use names::Digest;
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
            }),
            revision: 7,
        }
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
