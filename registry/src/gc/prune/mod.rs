//! `adm prune images`, OpenShift's `oc adm prune images` over Tributary's stores: removes tag-history items beyond
//! the keep limits or, with `--prune-over-size-limit`, over their namespace's image size limit ([`keep`]; a tag
//! left without items goes), then the Images no remaining history item (or kept image) needs, their manifest links and the
//! blob links no remaining image of the repository needs, and finally hands the digests left unreferenced to a
//! [`super::Collector::sweep`] with no grace and `only` those digests, so that the GC protocol (tombstones, the
//! re-check) decides what really goes while pushes go on. Called by the admin API (`POST …/prune/images`) and the
//! scheduled pruner ([`crate::background::spawn_prune`]); knows nothing of HTTP.
//!
//! The plan is computed the same way for a dry run and a confirmed run, so a dry run lists exactly what a
//! confirmed run at the same moment removes. History edits are compare-and-swap on each tag's version (retried
//! on fresh data); an Image and its links are deleted in one transaction that expects the links' versions and no
//! tag history changed since the plan was re-checked, so a concurrent tag of a pruned image keeps it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use names::{Digest, Namespace, RepositoryName};
use storage_backends::meta::{decode, encode};
use storage_backends::{keys, BlobStore, Expect, MetadataStore, MetadataStoreExt, StoreError, Txn, Versioned};
use streams::model::{Image, NamedTagEventList};

use self::keep::{is_local, Rules};
use super::{Collector, Freed, GcError, SweepOptions};
use crate::service::limitranges::{image_limits, ImageLimit};

mod keep;
mod request;

pub use request::{
    PruneOptions, PruneReport, PruneRequest, PruneRequestError, PrunedImage, PrunedLink, PrunedTagEvent,
    DEFAULT_KEEP_TAG_REVISIONS, DEFAULT_KEEP_YOUNGER_THAN,
};

/// Attempts at a compare-and-swap before giving up on one tag or image (left for the next run).
const ATTEMPTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error(transparent)]
    Gc(#[from] GcError),
    #[error("metadata store: {0}")]
    Store(#[from] StoreError),
}

/// A repository's links: digest → (size, subject, version).
#[derive(Debug, Default, Clone)]
struct RepoLinks {
    manifests: HashMap<Digest, (u64, Option<Digest>, u64)>,
    blobs: HashMap<Digest, (u64, u64)>,
}

/// Everything the plan is computed from, read from the store.
struct Snapshot {
    /// The store's revision before the reads: a change after it is newer than the snapshot.
    revision: u64,
    histories: BTreeMap<String, (NamedTagEventList, u64)>,
    links: BTreeMap<RepositoryName, RepoLinks>,
    images: HashMap<Digest, (Image, u64)>,
    /// Every namespace's image size limit (read only for `--prune-over-size-limit`).
    limits: BTreeMap<Namespace, ImageLimit>,
}

/// The pruner over one registry's stores. Cheap to clone.
#[derive(Clone)]
pub struct Pruner {
    meta: Arc<dyn MetadataStore>,
    blobs: BlobStore,
    collector: Collector,
    /// `<public-host>/` (the configured host, and the image policy's `externalRegistryHostnames[0]` when set): how
    /// the tag events and Images of images pushed here begin.
    local_prefixes: Vec<String>,
}

impl Pruner {
    pub fn new(meta: Arc<dyn MetadataStore>, blobs: BlobStore, collector: Collector, public_hosts: &[&str]) -> Pruner {
        let local_prefixes = public_hosts.iter().map(|h| format!("{h}/")).collect();
        Pruner { meta, blobs, collector, local_prefixes }
    }

    /// One prune (see the module documentation).
    #[tracing::instrument(skip(self, options), fields(confirm = options.confirm))]
    pub async fn prune(&self, options: &PruneOptions) -> Result<PruneReport, PruneError> {
        let started = std::time::Instant::now();
        let now = Utc::now();
        let cutoff = now - chrono::Duration::from_std(options.keep_younger_than).unwrap_or(chrono::Duration::MAX);
        let mut report = PruneReport { dry_run: !options.confirm, ..Default::default() };

        let mut snapshot = self.snapshot(options).await?;
        let rules = Rules {
            options,
            cutoff,
            local_prefixes: &self.local_prefixes,
            images: &snapshot.images,
            limits: &snapshot.limits,
        };
        if options.confirm {
            report.tag_events = self.edit_histories(&snapshot.histories, &rules).await?;
        } else {
            // The plan for Images and links below works on the histories as they would be.
            let mut edited = BTreeMap::new();
            for (key, (history, version)) in &snapshot.histories {
                let (kept, gone) = rules.split(key, history);
                report.tag_events.extend(gone);
                if !kept.items.is_empty() {
                    edited.insert(key.clone(), (kept, *version));
                }
            }
            snapshot.histories = edited;
        }
        // The plan for Images and links, on the histories as edited (a dry run: as they would be).
        let mut snapshot = if options.confirm { self.snapshot(options).await? } else { snapshot };
        // Digests the deletions leave unreferenced (the sweep re-checks each, so a union over attempts is safe).
        let mut unreferenced: BTreeMap<Digest, (String, u64)> = BTreeMap::new();
        for attempt in 0.. {
            let plan = self.plan_images(&snapshot, options, cutoff);
            unreferenced.extend(plan.unreferenced.clone());
            if !options.confirm {
                report.images = plan.images;
                report.links = plan.links.into_iter().map(|(l, _)| l).collect();
                break;
            }
            if self.delete_images(&plan, snapshot.revision, &mut report).await? {
                break;
            }
            if attempt == ATTEMPTS {
                report.errors.push("tag histories kept changing; some images are left for the next run".into());
                break;
            }
            snapshot = self.snapshot(options).await?;
        }

        if options.confirm {
            if !unreferenced.is_empty() {
                let sweep = self
                    .collector
                    .sweep(&SweepOptions {
                        grace: Duration::ZERO,
                        dry_run: false,
                        only: Some(unreferenced.keys().cloned().collect()),
                        max_deletions: super::MAX_DELETIONS,
                    })
                    .await?;
                report.blobs = sweep.deleted;
                report.kept_at_recheck.extend(sweep.kept_at_recheck);
                report.errors.extend(sweep.errors);
            }
        } else {
            // What the sweep would find stored: a blob (an object) or a manifest's bytes (in the metadata store);
            // a pulled-through layer never fetched has nothing to free.
            for (digest, (_, size)) in unreferenced {
                let kind = if self.blobs.exists_now(&digest).await.map_err(GcError::from)? {
                    "blob"
                } else if self.meta.get_latest(&keys::manifest_content(&digest)).await?.is_some() {
                    "manifest"
                } else {
                    continue;
                };
                report.blobs.push(Freed { digest, kind: kind.into(), size });
            }
        }
        // One order for a dry run and a confirmed run.
        report.tag_events.sort_by(|a, b| (&a.repository, &a.tag, b.created).cmp(&(&b.repository, &b.tag, a.created)));
        report.images.sort_by(|a, b| a.digest.cmp(&b.digest));
        report.links.sort_by(|a, b| {
            (&a.repository, a.kind != "manifest", &a.digest).cmp(&(&b.repository, b.kind != "manifest", &b.digest))
        });
        report.blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
        report.bytes_freed = report.blobs.iter().map(|f| f.size).sum();
        report.deleted_objects = report.tag_events.len() + report.images.len() + report.blobs.len();
        report.duration_ms = started.elapsed().as_millis() as u64;
        if options.confirm && report.deleted_objects > 0 {
            tracing::info!(
                tag_events = report.tag_events.len(),
                images = report.images.len(),
                blobs = report.blobs.len(),
                bytes = report.bytes_freed,
                "pruned images"
            );
        }
        Ok(report)
    }

    /// Removes the prunable items of every history, compare-and-swap on its version, retried on fresh data; a
    /// history left without items is deleted (the tag goes, as `oc` drops a tag without items).
    async fn edit_histories(
        &self,
        histories: &BTreeMap<String, (NamedTagEventList, u64)>,
        rules: &Rules<'_>,
    ) -> Result<Vec<PrunedTagEvent>, PruneError> {
        let mut removed = Vec::new();
        for (key, (history, version)) in histories {
            let (mut history, mut version) = (history.clone(), *version);
            for attempt in 0.. {
                let (kept, gone) = rules.split(key, &history);
                if gone.is_empty() {
                    break;
                }
                let txn = Txn::new().expect(key.clone(), Expect::Version(version));
                let txn = match kept.items.is_empty() && kept.conditions.is_empty() {
                    true => txn.delete(key.clone()),
                    false => txn.put(key.clone(), encode(&kept)),
                };
                match self.meta.commit(txn).await {
                    Ok(_) => {
                        removed.extend(gone);
                        break;
                    }
                    Err(StoreError::Conflict { .. }) if attempt < ATTEMPTS => match self.meta.get_latest(key).await? {
                        Some(v) => (history, version) = (decode(key, &v.value)?, v.version),
                        None => break,
                    },
                    Err(StoreError::Conflict { .. }) => {
                        tracing::warn!(%key, "prune: the tag kept changing; its history is left for the next run");
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(removed)
    }

    /// Reads every tag history, repository link and Image (and with `--prune-over-size-limit`, every image limit).
    async fn snapshot(&self, options: &PruneOptions) -> Result<Snapshot, PruneError> {
        let revision = self.meta.revision().await?;
        let mut histories = BTreeMap::new();
        for (key, Versioned { value, version }) in self.meta.list_all(keys::ISTAGS).await? {
            histories.insert(key.clone(), (decode::<NamedTagEventList>(&key, &value)?, version));
        }
        let mut links: BTreeMap<RepositoryName, RepoLinks> = BTreeMap::new();
        for (key, Versioned { value, version }) in self.meta.list_all("links/").await? {
            let Some((rest, digest)) = key.strip_prefix("links/").and_then(|k| k.rsplit_once('/')) else { continue };
            let Some((repo, kind)) = rest.rsplit_once('/') else { continue };
            let (Ok(repo), Ok(digest)) = (repo.parse::<RepositoryName>(), digest.parse::<Digest>()) else { continue };
            let v: serde_json::Value = decode(&key, &value)?;
            let size = v["size"].as_u64().unwrap_or(0);
            let entry = links.entry(repo).or_default();
            match kind {
                "manifests" => {
                    let subject = v["subject"].as_str().and_then(|s| s.parse().ok());
                    entry.manifests.insert(digest, (size, subject, version));
                }
                "blobs" => {
                    entry.blobs.insert(digest, (size, version));
                }
                _ => {}
            }
        }
        let mut images = HashMap::new();
        for (key, Versioned { value, version }) in self.meta.list_all(keys::IMAGES).await? {
            let Some(digest) = keys::digest_of_key(&key) else { continue };
            images.insert(digest, (decode::<Image>(&key, &value)?, version));
        }
        let limits = match options.prune_over_size_limit {
            true => image_limits(&*self.meta).await?,
            false => BTreeMap::new(),
        };
        Ok(Snapshot { revision, histories, links, images, limits })
    }
}

/// The Images and links to delete, and the digests left unreferenced after (kind, size).
struct ImagePlan {
    images: Vec<PrunedImage>,
    /// Per image: its transaction's links (with versions).
    links: Vec<(PrunedLink, u64)>,
    image_versions: HashMap<Digest, u64>,
    /// The subject of a pruned manifest link, whose referrers entry goes with it.
    subjects: HashMap<(RepositoryName, Digest), Digest>,
    unreferenced: BTreeMap<Digest, (String, u64)>,
}

/// What an Image references directly: its config and layers.
fn parts(image: &Image) -> impl Iterator<Item = Digest> + '_ {
    let config = image.docker_image_config.as_ref().and_then(|c| c.parse::<Digest>().ok());
    config.into_iter().chain(image.docker_image_layers.iter().map(|l| l.name.clone()))
}

impl Pruner {
    fn plan_images(&self, s: &Snapshot, options: &PruneOptions, cutoff: DateTime<Utc>) -> ImagePlan {
        // Kept: what a remaining history names, what is young or without a known age, imported (unless --all),
        // with --namespace linked outside it or not in it; then index children and referrers of kept images.
        let mut kept: HashSet<Digest> =
            s.histories.values().flat_map(|(h, _)| h.items.iter().filter_map(|i| i.image.clone())).collect();
        // With --namespace: the manifests linked in it, and those linked in another namespace.
        let (mut inside, mut outside) = (HashSet::new(), HashSet::new());
        if let Some(ns) = &options.namespace {
            for (repo, l) in &s.links {
                let set = if repo.namespace() == ns { &mut inside } else { &mut outside };
                set.extend(l.manifests.keys());
            }
        }
        for (digest, (image, _)) in &s.images {
            let created = image.metadata.creation_timestamp.or(image.docker_image_metadata.created);
            // With --prune-over-size-limit no age protects an Image no stream references (as in `oc`).
            let young = !options.prune_over_size_limit && created.is_none_or(|c| c >= cutoff);
            let imported = !options.all && !is_local(&self.local_prefixes, &image.docker_image_reference);
            let not_ours = options.namespace.is_some() && (!inside.contains(digest) || outside.contains(digest));
            if young || imported || not_ours {
                kept.insert(digest.clone());
            }
        }
        loop {
            let before = kept.len();
            for (digest, (image, _)) in &s.images {
                if kept.contains(digest) {
                    kept.extend(image.docker_image_manifests.iter().map(|m| m.digest.clone()));
                }
            }
            for l in s.links.values() {
                for (digest, (_, subject, _)) in &l.manifests {
                    if subject.as_ref().is_some_and(|s| kept.contains(s)) {
                        kept.insert(digest.clone());
                    }
                }
            }
            if kept.len() == before {
                break;
            }
        }
        let pruned: BTreeMap<&Digest, &(Image, u64)> = s.images.iter().filter(|(d, _)| !kept.contains(*d)).collect();

        let mut links = Vec::new();
        let mut subjects = HashMap::new();
        for (repo, l) in &s.links {
            let mut gone_blobs: HashSet<Digest> = HashSet::new();
            let mut any = false;
            for (digest, (_, subject, version)) in &l.manifests {
                if let Some((image, _)) = pruned.get(digest) {
                    any = true;
                    if let Some(subject) = subject {
                        subjects.insert((repo.clone(), digest.clone()), subject.clone());
                    }
                    let link = PrunedLink { repository: repo.clone(), kind: "manifest".into(), digest: digest.clone() };
                    links.push((link, *version));
                    gone_blobs.extend(parts(image));
                }
            }
            if !any {
                continue;
            }
            // Blobs a remaining manifest of the repository needs stay linked; a manifest without an Image may
            // need any of them.
            let mut needed: HashSet<Digest> = HashSet::new();
            let mut unknown = false;
            for digest in l.manifests.keys().filter(|d| !pruned.contains_key(d)) {
                match s.images.get(digest) {
                    Some((image, _)) => needed.extend(parts(image)),
                    None => unknown = true,
                }
            }
            if unknown {
                continue;
            }
            let mut blobs: Vec<_> = gone_blobs.into_iter().filter(|b| !needed.contains(b)).collect();
            blobs.sort();
            for digest in blobs {
                if let Some((_, version)) = l.blobs.get(&digest) {
                    links.push((PrunedLink { repository: repo.clone(), kind: "blob".into(), digest }, *version));
                }
            }
        }

        // Left unreferenced: pruned images and their parts that no remaining link or kept Image names.
        let gone_links: HashSet<(&RepositoryName, &str, &Digest)> =
            links.iter().map(|(l, _)| (&l.repository, l.kind.as_str(), &l.digest)).collect();
        let mut still: HashSet<&Digest> = HashSet::new();
        let mut sizes: HashMap<&Digest, u64> = HashMap::new();
        for (repo, l) in &s.links {
            for (d, (size, _, _)) in &l.manifests {
                sizes.insert(d, *size);
                if !gone_links.contains(&(repo, "manifest", d)) {
                    still.insert(d);
                }
            }
            for (d, (size, _)) in &l.blobs {
                sizes.insert(d, *size);
                if !gone_links.contains(&(repo, "blob", d)) {
                    still.insert(d);
                }
            }
        }
        let mut kept_parts: HashSet<Digest> = HashSet::new();
        for (digest, (image, _)) in &s.images {
            if kept.contains(digest) {
                kept_parts.extend(parts(image));
                kept_parts.extend(image.docker_image_manifests.iter().map(|m| m.digest.clone()));
            }
        }
        let mut unreferenced = BTreeMap::new();
        let mut images = Vec::new();
        let mut image_versions = HashMap::new();
        for (digest, (image, version)) in &pruned {
            let size = if image.docker_image_metadata.size > 0 {
                image.docker_image_metadata.size
            } else {
                sizes.get(digest).copied().unwrap_or(0)
            };
            images.push(PrunedImage { digest: (*digest).clone(), size });
            image_versions.insert((*digest).clone(), *version);
            let manifest = std::iter::once(((*digest).clone(), "manifest"));
            for (d, kind) in manifest.chain(parts(image).map(|d| (d, "blob"))) {
                if still.contains(&d) || kept_parts.contains(&d) || kept.contains(&d) {
                    continue;
                }
                let size = sizes
                    .get(&d)
                    .copied()
                    .or_else(|| image.docker_image_layers.iter().find(|l| l.name == d).map(|l| l.size));
                unreferenced.insert(d, (kind.to_owned(), size.unwrap_or(0)));
            }
        }
        ImagePlan { images, links, image_versions, subjects, unreferenced }
    }

    /// Deletes the plan's Images with their manifest links (one transaction per Image, expecting the versions
    /// read and no tag history changed since the snapshot), then the blob links (expecting no manifest of their
    /// repository linked since). `false`: something changed; re-plan on fresh data.
    async fn delete_images(
        &self,
        plan: &ImagePlan,
        revision: u64,
        report: &mut PruneReport,
    ) -> Result<bool, PruneError> {
        let link_key = |l: &PrunedLink| match l.kind.as_str() {
            "manifest" => keys::manifest_link(&l.repository, &l.digest),
            _ => keys::blob_link(&l.repository, &l.digest),
        };
        for image in &plan.images {
            let key = keys::image(&image.digest);
            let mut txn = Txn::new()
                .expect_prefix_unchanged(keys::ISTAGS, revision)
                .expect(key.clone(), Expect::Version(plan.image_versions[&image.digest]))
                .delete(key);
            let mine: Vec<&(PrunedLink, u64)> =
                plan.links.iter().filter(|(l, _)| l.kind == "manifest" && l.digest == image.digest).collect();
            for (link, version) in &mine {
                let k = link_key(link);
                txn = txn.expect(k.clone(), Expect::Version(*version)).delete(k);
                if let Some(subject) = plan.subjects.get(&(link.repository.clone(), link.digest.clone())) {
                    txn = txn.delete(keys::referrer(&link.repository, subject, &link.digest));
                }
            }
            match self.meta.commit(txn).await {
                Ok(_) => {
                    report.images.push(image.clone());
                    report.links.extend(mine.into_iter().map(|(l, _)| l.clone()));
                }
                Err(StoreError::Conflict { .. }) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        let mut by_repo: BTreeMap<&RepositoryName, Vec<&(PrunedLink, u64)>> = BTreeMap::new();
        for l in plan.links.iter().filter(|(l, _)| l.kind == "blob") {
            by_repo.entry(&l.0.repository).or_default().push(l);
        }
        for (repo, links) in by_repo {
            for chunk in links.chunks(super::BATCH) {
                let prefix = format!("{}manifests/", keys::links_of(repo));
                let mut txn = Txn::new().expect_prefix_unchanged(prefix, revision);
                for (link, version) in chunk {
                    let k = link_key(link);
                    txn = txn.expect(k.clone(), Expect::Version(*version)).delete(k);
                }
                match self.meta.commit(txn).await {
                    Ok(_) => report.links.extend(chunk.iter().map(|(l, _)| l.clone())),
                    Err(StoreError::Conflict { .. }) => return Ok(false),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(true)
    }
}
