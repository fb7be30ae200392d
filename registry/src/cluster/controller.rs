//! The image-change trigger controller: watches the cluster's Pods and workloads ([`super::lookup::POD_KINDS`])
//! with the `kube` crate, keeps those annotated `image.openshift.io/triggers`, and patches each triggered field to
//! its stream tag's pull spec by digest — when the object is listed or changes (so anything out of date at start
//! is brought up to date), and whenever the tag moves (from the metadata store's change feed). Paused triggers are
//! left alone. A malformed annotation or a trigger whose tag does not exist becomes a Warning Event on the object
//! and a log line, never an error of the controller.
//!
//! Runs on the replica holding the lease [`TRIGGERS_LEASE`] ([`spawn_triggers`], started by
//! [`crate::background::spawn_background`] when `[cluster] triggers` is on).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::stream::{select_all, BoxStream};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use super::lookup::{PodKind, POD_KINDS};
use super::triggers::{parse_triggers, plan, Problem, Trigger, TRIGGERS_ANNOTATION};
use crate::background::{stopped, LeaderTask};
use crate::service::Registry;

/// The lease of the trigger controller.
pub const TRIGGERS_LEASE: &str = "triggers";

/// The field manager of the controller's patches and the reporter of its Events.
pub const MANAGER: &str = "tributary-image-triggers";

/// Pause before trying again after the cluster could not be reached.
const CONNECT_RETRY: Duration = Duration::from_secs(10);

/// Runs the controller while this replica holds [`TRIGGERS_LEASE`]; idle unless `[cluster] triggers` is on.
pub fn spawn_triggers(registry: Registry) -> LeaderTask {
    if !registry.cluster.triggers {
        return LeaderTask::idle(TRIGGERS_LEASE);
    }
    LeaderTask::spawn(registry.meta.clone(), TRIGGERS_LEASE, move |mut stopping| {
        let registry = registry.clone();
        async move {
            match super::client::connect(registry.cluster.kubeconfig.as_deref()).await {
                Ok(client) => Controller::new(registry, client).run(stopping).await,
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "image triggers: cannot reach the cluster; trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(CONNECT_RETRY) => {}
                        _ = stopped(&mut stopping) => {}
                    }
                }
            }
        }
    })
}

/// An object with triggers, as last seen.
struct Tracked {
    kind: &'static PodKind,
    object: DynamicObject,
    triggers: Vec<Trigger>,
}

type Key = (&'static str, String, String);

/// The watch events of one kind, tagged with it.
type KindEvents = BoxStream<'static, (&'static PodKind, Result<Event<DynamicObject>, watcher::Error>)>;

fn key_of(kind: &'static PodKind, o: &DynamicObject) -> Key {
    (kind.kind, o.namespace().unwrap_or_default(), o.name_any())
}

/// The controller's state: the annotated objects and what was already reported about each.
pub struct Controller {
    registry: Registry,
    client: Client,
    recorder: Recorder,
    tracked: HashMap<Key, Tracked>,
    /// Problems reported per object uid (reported again only after they went away and came back).
    reported: HashMap<String, HashSet<String>>,
    /// Keys listed since each kind's watch (re)started.
    relisting: HashMap<&'static str, HashSet<Key>>,
}

fn api_resource(kind: &PodKind) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(kind.group, kind.version, kind.kind), kind.plural)
}

impl Controller {
    pub fn new(registry: Registry, client: Client) -> Controller {
        let reporter = Reporter { controller: MANAGER.into(), instance: std::env::var("HOSTNAME").ok() };
        let recorder = Recorder::new(client.clone(), reporter);
        Controller {
            registry,
            client,
            recorder,
            tracked: HashMap::new(),
            reported: HashMap::new(),
            relisting: HashMap::new(),
        }
    }

    /// Follows the cluster's objects and the stream tags until `stopping` turns true (or the store closes).
    pub async fn run(mut self, mut stopping: watch::Receiver<bool>) {
        let mut feed = self.registry.meta.subscribe();
        let watches: Vec<KindEvents> = POD_KINDS
            .iter()
            .map(|kind| {
                let api = Api::<DynamicObject>::all_with(self.client.clone(), &api_resource(kind));
                watcher::watcher(api, watcher::Config::default())
                    .default_backoff()
                    .into_stream()
                    .map(move |e| (kind, e))
                    .boxed()
            })
            .collect();
        let mut objects = select_all(watches);
        tracing::info!("image triggers: watching the cluster");
        loop {
            tokio::select! {
                _ = stopped(&mut stopping) => return,
                next = objects.next() => match next {
                    Some((kind, Ok(event))) => self.object_event(kind, event).await,
                    Some((kind, Err(e))) => tracing::warn!(kind = kind.kind, error = %e, "image triggers: watch failed; retrying"),
                    None => return,
                },
                change = feed.recv() => match change {
                    Ok(ev) => {
                        if let Some(change) = streams::watch::tag_change(&ev) {
                            self.tag_moved(&change.repo, change.tag.as_str()).await;
                        }
                    }
                    Err(RecvError::Lagged(_)) => self.reconcile_all().await,
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }

    async fn object_event(&mut self, kind: &'static PodKind, event: Event<DynamicObject>) {
        match event {
            Event::Init => {
                self.relisting.insert(kind.kind, HashSet::new());
            }
            Event::InitApply(o) => {
                self.relisting.entry(kind.kind).or_default().insert(key_of(kind, &o));
                self.seen(kind, o).await;
            }
            Event::InitDone => {
                let listed = self.relisting.remove(kind.kind).unwrap_or_default();
                self.tracked.retain(|k, _| k.0 != kind.kind || listed.contains(k));
            }
            Event::Apply(o) => self.seen(kind, o).await,
            Event::Delete(o) => {
                self.tracked.remove(&key_of(kind, &o));
                if let Some(uid) = o.uid() {
                    self.reported.remove(&uid);
                }
            }
        }
    }

    /// An object was listed or changed: track it if annotated, and bring it up to date.
    async fn seen(&mut self, kind: &'static PodKind, object: DynamicObject) {
        let key = key_of(kind, &object);
        let Some(text) = object.annotations().get(TRIGGERS_ANNOTATION).cloned() else {
            self.tracked.remove(&key);
            return;
        };
        match parse_triggers(&text, &key.1) {
            Ok(triggers) => {
                let tracked = Tracked { kind, object, triggers };
                self.reconcile(&tracked).await;
                self.tracked.insert(key, tracked);
            }
            Err(e) => {
                self.tracked.remove(&key);
                self.report(kind, &object, "InvalidImageTrigger", vec![e.to_string()]).await;
            }
        }
    }

    /// Stream tag `repo:tag` moved: reconcile every object with a trigger on it.
    async fn tag_moved(&mut self, repo: &names::RepositoryName, tag: &str) {
        let map = &self.registry.cluster.namespaces;
        let keys: Vec<Key> = self
            .tracked
            .iter()
            .filter(|(_, t)| {
                t.triggers.iter().any(|tr| tr.tag.as_str() == tag && tr.repository(map).as_ref() == Some(repo))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(t) = self.tracked.remove(&k) {
                self.reconcile(&t).await;
                self.tracked.insert(k, t);
            }
        }
    }

    async fn reconcile_all(&mut self) {
        let all: Vec<Key> = self.tracked.keys().cloned().collect();
        for k in all {
            if let Some(t) = self.tracked.remove(&k) {
                self.reconcile(&t).await;
                self.tracked.insert(k, t);
            }
        }
    }

    /// Patches `t`'s triggered fields that are out of date; reports the problems.
    async fn reconcile(&mut self, t: &Tracked) {
        let mut specs = HashMap::new();
        for (i, trigger) in t.triggers.iter().enumerate().filter(|(_, tr)| !tr.paused) {
            specs.insert(i, self.pull_spec(trigger).await);
        }
        let object = match serde_json::to_value(&t.object) {
            Ok(v) => v,
            Err(e) => return tracing::warn!(error = %e, "image triggers: object not serializable"),
        };
        let index = |tr: &Trigger| t.triggers.iter().position(|x| std::ptr::eq(x, tr));
        let planned = plan(&object, &t.triggers, |tr| index(tr).and_then(|i| specs.get(&i).cloned().flatten()));
        let problems: Vec<String> = planned.problems.iter().map(Problem::to_string).collect();
        let reason = if planned.problems.iter().any(|p| matches!(p, Problem::Field(_))) {
            "InvalidImageTrigger"
        } else {
            "ImageStreamTagNotFound"
        };
        self.report(t.kind, &t.object, reason, problems).await;
        if planned.ops.is_empty() {
            return;
        }
        let (ns, name) = (t.object.namespace().unwrap_or_default(), t.object.name_any());
        let patch: json_patch::Patch = match serde_json::from_value(serde_json::Value::Array(planned.ops)) {
            Ok(p) => p,
            Err(e) => return tracing::warn!(error = %e, "image triggers: patch not well-formed"),
        };
        let api = Api::<DynamicObject>::namespaced_with(self.client.clone(), &ns, &api_resource(t.kind));
        let params = PatchParams { field_manager: Some(MANAGER.into()), ..PatchParams::default() };
        match api.patch(&name, &params, &Patch::<()>::Json(patch)).await {
            Ok(_) => tracing::info!(kind = t.kind.kind, namespace = ns, name, "image triggers: updated the image"),
            // A `test` that failed: the object changed meanwhile; its watch event brings it back here.
            Err(kube::Error::Api(e)) if e.code == 422 || e.code == 409 || e.code == 404 => {
                tracing::debug!(kind = t.kind.kind, namespace = ns, name, error = %e, "image triggers: object changed; will retry")
            }
            Err(e) => {
                tracing::warn!(kind = t.kind.kind, namespace = ns, name, error = %e, "image triggers: patch failed")
            }
        }
    }

    /// The pull spec by digest of the tag a trigger follows; `None` when it does not exist or has no image.
    async fn pull_spec(&self, t: &Trigger) -> Option<String> {
        let repo = t.repository(&self.registry.cluster.namespaces)?;
        match self.registry.streams.resolve_tag(&repo, &t.tag).await {
            Ok(d) => d.map(|d| self.registry.streams.image_reference(&repo, &d)),
            Err(e) => {
                tracing::warn!(stream = %repo, error = %e, "image triggers: reading the tag failed");
                None
            }
        }
    }

    /// Reports `problems` of an object as Warning Events and log lines, each once until it goes away.
    async fn report(&mut self, kind: &PodKind, o: &DynamicObject, reason: &str, problems: Vec<String>) {
        let uid = o.uid().unwrap_or_default();
        let now: HashSet<String> = problems.into_iter().collect();
        let before = self.reported.insert(uid, now.clone()).unwrap_or_default();
        for problem in now.difference(&before) {
            let (ns, name) = (o.namespace().unwrap_or_default(), o.name_any());
            tracing::warn!(kind = kind.kind, namespace = ns, name, reason, problem, "image triggers");
            let reference = ObjectReference {
                api_version: Some(kind.api_version()),
                kind: Some(kind.kind.into()),
                name: Some(name),
                namespace: Some(ns),
                uid: o.uid(),
                resource_version: o.resource_version(),
                field_path: None,
            };
            let event = KubeEvent {
                type_: EventType::Warning,
                reason: reason.into(),
                note: Some(problem.chars().take(1000).collect()),
                action: "ImageTrigger".into(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&event, &reference).await {
                tracing::warn!(error = %e, "image triggers: could not publish an Event");
            }
        }
    }
}
