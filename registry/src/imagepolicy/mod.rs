//! Cluster-wide image policy: the `Image` object `cluster` (`image.config.openshift.io`) and the mirror sets
//! (ImageDigestMirrorSet, ImageTagMirrorSet, ImageContentSourcePolicy) — their shapes ([`model`]), their storage
//! in the metadata store ([`store`]), what they mean for a fetch ([`rules`]) and the `registries.conf` they make
//! for container tools ([`registries_conf`]). [`ImagePolicy`] keeps the policy in force in memory, kept true by
//! the store's change feed, so that every replica applies an edit at once, without restart. Called by `upstream`
//! (every fetch from an external registry), the HTTP edge and the CLI; calls only the metadata store.

pub mod model;
pub mod registries_conf;
pub mod rules;
pub mod store;

use std::sync::Arc;

use storage_backends::{keys, StoreError};
use tokio::sync::broadcast;

use crate::service::cached::{About, FeedCached};

pub use rules::{Endpoint, Plan, Policy};
pub use store::{PolicyError, PolicyStore};

/// Told each policy freshly read from the store.
type Listener = Box<dyn Fn(&Policy) + Send + Sync>;

/// Any change to a policy object drops the cached policy.
const ABOUT: About<Arc<Policy>> = |event| event.key.starts_with(keys::IMAGE_CONFIG).then_some(None);

/// The policy in force, cached. Cheap to share (`Arc`).
pub struct ImagePolicy {
    store: Option<PolicyStore>,
    listeners: Vec<Listener>,
    /// Without a store (unit tests): this policy, always.
    fixed: Arc<Policy>,
    cached: FeedCached<Arc<Policy>>,
}

impl ImagePolicy {
    /// The policy of the objects in `store`.
    pub fn new(store: PolicyStore) -> ImagePolicy {
        let cached = FeedCached::new(Some(store.meta().subscribe()), ABOUT);
        ImagePolicy { store: Some(store), listeners: Vec::new(), fixed: Arc::default(), cached }
    }

    /// Calls `listener` with every policy read from the store (after each change, any replica's, once someone
    /// asks for the policy: [`ImagePolicy::follow`] asks at every change).
    pub fn with_listener(mut self, listener: impl Fn(&Policy) + Send + Sync + 'static) -> ImagePolicy {
        self.listeners.push(Box::new(listener));
        self
    }

    /// Reads the policy now and after every change to the policy objects, so that the listeners hear of an edit
    /// at once, whether or not a fetch needs the policy. Runs until the store's change feed ends.
    pub async fn follow(&self) {
        let Some(store) = &self.store else { return };
        let mut feed = store.meta().subscribe();
        loop {
            if let Err(e) = self.current().await {
                tracing::warn!(error = %e, "reading the image policy");
            }
            loop {
                match feed.recv().await {
                    Ok(e) if e.key.starts_with(keys::IMAGE_CONFIG) => break,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    }

    /// Always `policy` (tests of the upstream client).
    pub fn fixed(policy: Policy) -> ImagePolicy {
        ImagePolicy {
            store: None,
            listeners: Vec::new(),
            fixed: Arc::new(policy),
            cached: FeedCached::new(None, ABOUT),
        }
    }

    pub fn store(&self) -> Option<&PolicyStore> {
        self.store.as_ref()
    }

    /// The policy in force now: from memory, or read from the store after a change (any replica's).
    pub async fn current(&self) -> Result<Arc<Policy>, StoreError> {
        let Some(store) = &self.store else { return Ok(self.fixed.clone()) };
        self.cached
            .get_or_load(|| async {
                let mut objects = store.all().await?;
                if !objects.iter().any(|(k, _)| *k == model::Kind::Image) {
                    let mut seeded = model::Object { spec: store.seed_spec(), ..Default::default() };
                    seeded.metadata.name = model::CLUSTER.into();
                    objects.push((model::Kind::Image, seeded));
                }
                let policy = Arc::new(Policy::from_objects(&objects));
                for listener in &self.listeners {
                    listener(&policy);
                }
                Ok(policy)
            })
            .await
    }
}
