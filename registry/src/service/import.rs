//! Importing external images, the network half (the domain half is `streams::import`): `import-image`, the
//! `imagestreamimports` API, spec tags `from.kind: DockerImage`, `spec.dockerImageRepository`, and scheduled
//! re-imports. An import fetches the manifest (for a manifest list: one platform's image, or with
//! `PreserveOriginal` the list and every image) and each image config from the upstream, stores those, links the
//! layers to the upstream for pull-through ([`super::blobs::UpstreamLink`]), and records the tag event with the
//! source by digest. Layers are not copied at import: the first pull brings them. A failure becomes the tag's
//! `ImportSuccess=False` condition with the upstream's message; the tag's images stay.
//! [`spawn_controller`] is the background loop that imports new spec tags and re-imports scheduled ones.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use names::{Digest, Namespace, RepositoryName, StreamName, TagName};
use storage_backends::meta::encode;
use storage_backends::{keys, Leadership, StoreError};
use streams::import::{
    self, ImageImportStatus, ImageStreamImport, ImportMode, ImportStatus, RepositoryImportStatus, TagImport,
};
use streams::manifest::{self, Descriptor, ManifestKind, ParsedManifest};
use streams::model::{Image, TagImportPolicy, TagReferencePolicy};
use streams::{ObjectKind, StreamError};

use super::blobs::{BlobLink, UpstreamLink};
use super::manifests::ManifestLink;
use super::{Registry, RegistryError};
use crate::background::{stopped, LeaderTask};
use crate::upstream::{ExternalRef, FetchedManifest, Served, Source, UpstreamError};

/// Largest image config fetched at import.
const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// The shortest scheduled import interval accepted.
pub const MIN_SCHEDULED_INTERVAL: Duration = Duration::from_secs(5);

/// Import settings (`allowedRegistriesForImport` lives with [`crate::upstream::Upstreams`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSettings {
    /// How often tags with `importPolicy.scheduled` are imported again (at least [`MIN_SCHEDULED_INTERVAL`]).
    pub scheduled_interval: Duration,
    /// At most this many tags are imported from a repository (`--all`, `spec.dockerImageRepository`).
    pub max_tags_per_repository: usize,
}

impl Default for ImportSettings {
    fn default() -> Self {
        ImportSettings { scheduled_interval: Duration::from_secs(15 * 60), max_tags_per_repository: 50 }
    }
}

/// One lock per stream, held while its imports run, so that the API's import and the controller's reaction to
/// the spec change it wrote do not fetch the same image twice (the second one finds nothing due), also when they
/// run on different replicas: the lock is the store's lease `import/<ns>/<stream>`. It only saves work: should
/// two imports of a tag overlap anyway (a holder's lease lost mid-import), recording one is idempotent.
#[derive(Default)]
pub struct ImportLocks;

impl ImportLocks {
    async fn lock(&self, meta: &dyn storage_backends::MetadataStore, repo: &RepositoryName) -> Leadership {
        let mut lease = meta.elect(&format!("import/{repo}"));
        lease.acquired().await;
        lease
    }
}

/// An image fetched from an upstream, not yet stored: what to store and link, and the Image(s) to record.
/// Manifests (named by a [`Link::Manifest`]) go to the metadata store with the record; configs to the blob store.
struct Fetched {
    image: Image,
    /// With `PreserveOriginal`: the list's images and their pull specs.
    children: Vec<(Image, String)>,
    /// Manifests and configs to store, by digest.
    contents: Vec<(Digest, Bytes)>,
    /// Manifest and blob links for the repository.
    links: Vec<Link>,
    /// Where the top manifest came from (a mirror, after failed attempts…).
    served: Served,
}

/// A link an import writes into the repository.
enum Link {
    Manifest(Digest, ManifestLink),
    Blob(Digest, BlobLink),
}

/// The outcome of importing one tag, as the API reports it.
pub struct TagOutcome {
    pub tag: TagName,
    pub result: Result<Imported, UpstreamError>,
}

/// An image imported (or only fetched): the image, a kept manifest list's images, and where it came from.
pub struct Imported {
    pub image: Image,
    pub children: Vec<Image>,
    pub served: Served,
}

impl TagOutcome {
    fn status(&self) -> ImageImportStatus {
        match &self.result {
            Ok(i) => ImageImportStatus {
                status: ImportStatus { message: i.served.describe(), ..ImportStatus::success() },
                image: Some(i.image.clone()),
                tag: self.tag.to_string(),
                manifests: i.children.clone(),
            },
            Err(e) => ImageImportStatus {
                status: ImportStatus::failure(e.reason(), e.to_string(), e.status()),
                image: None,
                tag: self.tag.to_string(),
                manifests: Vec::new(),
            },
        }
    }
}

fn internal(e: impl std::fmt::Display) -> UpstreamError {
    UpstreamError::Unavailable(format!("internal error: {e}"))
}

impl Registry {
    /// Where to fetch `from` for a stream of `ns`: the reference, the namespace's credentials for its registry.
    async fn source(&self, ns: &Namespace, from: &str, insecure: bool) -> Result<Source, UpstreamError> {
        let reference: ExternalRef = from.parse()?;
        self.upstreams.check_allowed(&reference).await?;
        let by_host = self.pull_credentials(ns).await.map_err(internal)?;
        let credentials =
            by_host.get(&super::secrets::registry_host(reference.registry())).cloned().unwrap_or_default();
        Ok(Source::new(reference, credentials, insecure).with_mirror_credentials(by_host))
    }

    /// Fetches the image `source` names, as `mode` says for manifest lists.
    async fn fetch(&self, source: &Source, mode: ImportMode) -> Result<Fetched, UpstreamError> {
        let top = self.upstreams.manifest(source).await?;
        let served = top.served.clone();
        // What a mirror served, its blobs and child manifests are asked of it first.
        let source = &Source { prefer: served.mirror.then(|| served.by.clone()), ..source.clone() };
        let parsed = parse(&top, source)?;
        let fetched = match &parsed.kind {
            ManifestKind::Image { .. } => self.fetch_image(source, top, parsed).await,
            ManifestKind::Index { manifests } if mode == ImportMode::Legacy => {
                let child = manifests
                    .iter()
                    .find(|m| m.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == "amd64"))
                    .or_else(|| manifests.first())
                    .ok_or_else(|| UpstreamError::Invalid(format!("{}: an empty manifest list", source.reference)))?;
                self.fetch_child(source, &child.digest).await.map(|(f, _)| f)
            }
            ManifestKind::Index { manifests } => {
                let (mut children, mut contents, mut links) = (Vec::new(), Vec::new(), Vec::new());
                for child in manifests {
                    let (f, pull_spec) = self.fetch_child(source, &child.digest).await?;
                    children.push((f.image, pull_spec));
                    contents.extend(f.contents);
                    links.extend(f.links);
                }
                let reference = source.reference.at_digest(&top.digest).to_string();
                let image = manifest::image_from(&top.digest, &parsed, None, reference, Utc::now());
                links.push(manifest_link(&top, &parsed));
                contents.push((top.digest.clone(), top.bytes));
                Ok(Fetched { image, children, contents, links, served: Served::default() })
            }
        };
        fetched.map(|f| Fetched { served, ..f })
    }

    /// Fetches image `digest` of a manifest list (lists inside lists are refused); also returns its pull spec.
    async fn fetch_child(&self, source: &Source, digest: &Digest) -> Result<(Fetched, String), UpstreamError> {
        let child = Source { reference: source.reference.at_digest(digest), ..source.clone() };
        let fetched = self.upstreams.manifest(&child).await?;
        let parsed = parse(&fetched, &child)?;
        if !matches!(parsed.kind, ManifestKind::Image { .. }) {
            return Err(UpstreamError::Invalid(format!("{}: nested manifest lists", source.reference)));
        }
        Ok((self.fetch_image(source, fetched, parsed).await?, child.reference.to_string()))
    }

    /// Fetches an image manifest's config; the layers are linked to the upstream, not fetched.
    async fn fetch_image(
        &self,
        source: &Source,
        fetched: FetchedManifest,
        parsed: ParsedManifest,
    ) -> Result<Fetched, UpstreamError> {
        let ManifestKind::Image { config, .. } = &parsed.kind else {
            return Err(UpstreamError::Invalid("not an image manifest".into()));
        };
        let upstream = UpstreamLink {
            repository: source.reference.repository_ref(),
            insecure: source.insecure,
            mirror: source.prefer.clone(),
        };
        let mut contents = Vec::new();
        let mut config_bytes = None;
        if config.size <= MAX_CONFIG_BYTES {
            let bytes = self.fetch_small_blob(source, config).await?;
            config_bytes = Some(bytes.clone());
            contents.push((config.digest.clone(), bytes));
        }
        // Foreign layers are left out: they are never served from here.
        let blobs: BTreeMap<&Digest, u64> = parsed.blobs().into_iter().map(|d| (&d.digest, d.size)).collect();
        let mut links: Vec<Link> = blobs
            .into_iter()
            .map(|(d, size)| Link::Blob(d.clone(), BlobLink { size, upstream: Some(upstream.clone()) }))
            .collect();
        links.push(manifest_link(&fetched, &parsed));
        let reference = source.reference.at_digest(&fetched.digest).to_string();
        let image = manifest::image_from(&fetched.digest, &parsed, config_bytes.as_deref(), reference, Utc::now());
        contents.push((fetched.digest.clone(), fetched.bytes));
        Ok(Fetched { image, children: Vec::new(), contents, links, served: Served::default() })
    }

    /// Fetches a small blob (an image config) whole, verifying its digest and size.
    async fn fetch_small_blob(&self, source: &Source, d: &Descriptor) -> Result<Bytes, UpstreamError> {
        let blob_source = Source { reference: source.reference.at_digest(&d.digest), ..source.clone() };
        let mut body = self.upstreams.blob(&blob_source, &d.digest).await?.body;
        let mut buf = Vec::with_capacity(d.size as usize);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| UpstreamError::Unavailable(format!("{}: {e}", blob_source.reference)))?;
            if buf.len() + chunk.len() > d.size as usize {
                return Err(UpstreamError::Invalid(format!(
                    "{}: larger than its descriptor says",
                    blob_source.reference
                )));
            }
            buf.extend_from_slice(&chunk);
        }
        let actual = Digest::of(d.digest.algorithm(), &buf);
        if actual != d.digest || buf.len() as u64 != d.size {
            return Err(UpstreamError::Invalid(format!("{}: the upstream sent {actual}", blob_source.reference)));
        }
        Ok(Bytes::from(buf))
    }

    /// Stores what was fetched and records it under `tag` of `repo`.
    async fn store(&self, repo: &RepositoryName, tag: &TagName, fetched: &Fetched) -> Result<(), UpstreamError> {
        let manifests: Vec<&Digest> =
            fetched.links.iter().filter_map(|l| if let Link::Manifest(d, _) = l { Some(d) } else { None }).collect();
        let mut extra: Vec<(String, Vec<u8>)> = Vec::new();
        for (digest, bytes) in &fetched.contents {
            if manifests.contains(&digest) {
                extra.extend(self.keep_manifest(digest, bytes).await.map_err(internal)?);
            } else {
                self.blobs.put_verified(digest, bytes.clone()).await.map_err(internal)?;
            }
        }
        // Blob links first, a bounded number per transaction (a many-platform index links hundreds of layers);
        // the manifests' links go with the image and the tag, so an imported manifest appears all at once.
        let mut blob_links = Vec::new();
        for link in &fetched.links {
            match link {
                Link::Manifest(d, l) => extra.push((keys::manifest_link(repo, d), encode(l))),
                Link::Blob(d, l) => blob_links.push((keys::blob_link(repo, d), encode(l))),
            }
        }
        self.commit_links(blob_links).await.map_err(internal)?;
        let reference = fetched.image.docker_image_reference.clone();
        self.streams
            .record_import(repo, tag, &fetched.image, reference, &fetched.children, extra)
            .await
            .map_err(internal)?;
        for (digest, bytes) in &fetched.contents {
            if manifests.contains(&digest) {
                self.settle_large_manifest(digest, bytes).await.map_err(internal)?;
            }
        }
        Ok(())
    }

    /// Imports `from` into `repo:tag` now; on failure records the tag's condition. Returns the image and, for a
    /// kept manifest list, its images.
    pub async fn import_tag(
        &self,
        repo: &RepositoryName,
        tag: &TagName,
        from: &str,
        insecure: bool,
        mode: ImportMode,
    ) -> Result<Imported, UpstreamError> {
        let result: Result<Imported, UpstreamError> = async {
            let source = self.source(repo.namespace(), from, insecure).await?;
            let fetched = self.fetch(&source, mode).await?;
            self.store(repo, tag, &fetched).await?;
            Ok(imported(fetched))
        }
        .await;
        self.metrics.import(match &result {
            Ok(_) => "success",
            Err(e) => e.reason(),
        });
        if let Err(e) = &result {
            tracing::info!(%repo, %tag, from, error = %e, "import failed");
            if let Err(store) =
                self.streams.record_import_failure(repo, tag, e.reason(), &e.to_string(), Utc::now()).await
            {
                tracing::error!(%repo, %tag, error = %store, "could not record an import failure");
            }
        }
        result
    }

    /// Fetches without storing (an `ImageStreamImport` with `import: false`).
    async fn peek(
        &self,
        ns: &Namespace,
        from: &str,
        insecure: bool,
        mode: ImportMode,
    ) -> Result<Imported, UpstreamError> {
        let source = self.source(ns, from, insecure).await?;
        let fetched = self.fetch(&source, mode).await?;
        Ok(imported(fetched))
    }

    /// The tags of the repository `from` names, sorted, at most the configured number.
    async fn upstream_tags(&self, ns: &Namespace, from: &str, insecure: bool) -> Result<Vec<String>, UpstreamError> {
        let source = self.source(ns, from, insecure).await?;
        let mut tags = self.upstreams.tags(&source).await?;
        tags.sort();
        tags.truncate(self.imports.max_tags_per_repository);
        Ok(tags)
    }

    /// Serves an `ImageStreamImport`: with `spec.import`, writes the spec tags (creating the stream when missing)
    /// and imports them; without, only fetches. The answer carries each image's status and the stream.
    pub async fn import_stream(
        &self,
        ns: &Namespace,
        mut isi: ImageStreamImport,
    ) -> Result<ImageStreamImport, StreamError> {
        let bad = |m: String| StreamError::Invalid {
            kind: ObjectKind::ImageStream,
            name: isi.metadata.name.clone(),
            message: m,
        };
        let stream: StreamName = isi.metadata.name.parse().map_err(|e| bad(format!("metadata.name: {e}")))?;
        let repo = RepositoryName::new(ns.clone(), stream.clone());
        let _importing = self.import_locks.lock(self.meta.as_ref(), &repo).await;
        let existing = self.streams.get_stream(&repo).await?;
        let stream_insecure = existing.as_ref().is_some_and(import::insecure_stream);
        // Which tags, from where.
        let mut wanted: Vec<(TagName, String, TagImportPolicy, TagReferencePolicy)> = Vec::new();
        for (i, image) in isi.spec.images.iter().enumerate() {
            if image.from.kind != streams::refs::KIND_DOCKER_IMAGE {
                return Err(bad(format!("spec.images[{i}].from.kind: only DockerImage can be imported")));
            }
            let reference: ExternalRef =
                image.from.name.parse().map_err(|e: UpstreamError| bad(format!("spec.images[{i}].from.name: {e}")))?;
            let tag_name = match &image.to {
                Some(to) if !to.name.is_empty() => to.name.clone(),
                _ => reference.tag().unwrap_or("latest").to_owned(),
            };
            let tag: TagName = tag_name.parse().map_err(|e| bad(format!("spec.images[{i}].to.name: {e}")))?;
            wanted.push((tag, image.from.name.clone(), image.import_policy.clone(), image.reference_policy.clone()));
        }
        let mut repository_status = None;
        if let Some(r) = &isi.spec.repository {
            if r.from.kind != streams::refs::KIND_DOCKER_IMAGE {
                return Err(bad("spec.repository.from.kind: only DockerImage can be imported".into()));
            }
            let reference: ExternalRef =
                r.from.name.parse().map_err(|e: UpstreamError| bad(format!("spec.repository.from.name: {e}")))?;
            let insecure = stream_insecure || r.import_policy.insecure;
            match self.upstream_tags(ns, &reference.repository_ref(), insecure).await {
                Ok(tags) => {
                    for t in tags {
                        let Ok(tag) = t.parse::<TagName>() else { continue };
                        let from = reference.at_tag(&t).to_string();
                        wanted.push((tag, from, r.import_policy.clone(), r.reference_policy.clone()));
                    }
                    repository_status =
                        Some(RepositoryImportStatus { status: ImportStatus::success(), ..Default::default() });
                }
                Err(e) => {
                    repository_status = Some(RepositoryImportStatus {
                        status: ImportStatus::failure(e.reason(), e.to_string(), e.status()),
                        ..Default::default()
                    })
                }
            }
        }
        let from_repository = isi.spec.images.len();
        let mut statuses = Vec::new();
        if isi.spec.import {
            let spec_tags = wanted
                .iter()
                .map(|(tag, from, policy, refpol)| import::spec_tag_for(tag, from, policy, refpol))
                .collect();
            self.streams.set_import_spec(ns, &stream, spec_tags, true).await?;
        }
        for (tag, from, policy, _) in &wanted {
            let insecure = stream_insecure || policy.insecure;
            let mode: ImportMode = policy.import_mode.as_deref().unwrap_or("").parse().map_err(bad)?;
            let result = if isi.spec.import {
                self.import_tag(&repo, tag, from, insecure, mode).await
            } else {
                self.peek(ns, from, insecure, mode).await
            };
            statuses.push(TagOutcome { tag: tag.clone(), result }.status());
        }
        let repo_images = statuses.split_off(from_repository.min(statuses.len()));
        if let Some(r) = &mut repository_status {
            r.images = repo_images;
        }
        isi.status.images = statuses;
        isi.status.repository = repository_status;
        if isi.spec.import {
            isi.status.import = self.streams.get_stream(&repo).await?;
        }
        isi.kind = ImageStreamImport::kind();
        isi.api_version = streams::model::default_api_version();
        Ok(isi)
    }

    /// Imports what `repo` is waiting for: spec tags whose generation is newer than their last import, and a
    /// `spec.dockerImageRepository` never imported. Returns the scheduled tags (for the controller's timetable).
    pub async fn import_due(&self, repo: &RepositoryName) -> Result<Vec<TagImport>, StreamError> {
        if !self.streams.wants_imports(repo).await? {
            return Ok(Vec::new());
        }
        let _importing = self.import_locks.lock(self.meta.as_ref(), repo).await;
        let Some(stream) = self.streams.get_stream(repo).await? else { return Ok(Vec::new()) };
        let stream = &stream;
        for t in import::imports_due(stream) {
            let _ = self.import_tag(repo, &t.tag, &t.from, t.insecure, t.mode).await;
        }
        if let Some(from) = import::repository_import_due(stream) {
            let insecure = import::insecure_stream(stream);
            match self.upstream_tags(repo.namespace(), &from, insecure).await {
                Ok(tags) => {
                    for t in tags {
                        let (Ok(tag), Ok(reference)) = (t.parse::<TagName>(), from.parse::<ExternalRef>()) else {
                            continue;
                        };
                        let from_tag = reference.at_tag(&t).to_string();
                        let _ = self.import_tag(repo, &tag, &from_tag, insecure, ImportMode::Legacy).await;
                    }
                }
                Err(e) => tracing::info!(%repo, from, error = %e, "repository import failed"),
            }
            if let Err(e) = self.streams.mark_repository_checked(repo, Utc::now()).await {
                tracing::error!(%repo, error = %e, "could not record the repository import");
            }
        }
        Ok(import::importable_tags(stream).into_iter().map(|(t, _)| t).filter(|t| t.scheduled).collect())
    }

    /// A scheduled re-import of one tag (the controller's timetable says it is time).
    pub async fn import_scheduled(&self, repo: &RepositoryName, t: &TagImport) {
        let _importing = self.import_locks.lock(self.meta.as_ref(), repo).await;
        let _ = self.import_tag(repo, &t.tag, &t.from, t.insecure, t.mode).await;
    }
}

fn imported(f: Fetched) -> Imported {
    Imported { image: f.image, children: f.children.into_iter().map(|(i, _)| i).collect(), served: f.served }
}

fn parse(fetched: &FetchedManifest, source: &Source) -> Result<ParsedManifest, UpstreamError> {
    manifest::parse(&fetched.bytes, None).map_err(|e| UpstreamError::Invalid(format!("{}: {e}", source.reference)))
}

/// The manifest link for a fetched manifest.
fn manifest_link(fetched: &FetchedManifest, parsed: &ParsedManifest) -> Link {
    Link::Manifest(fetched.digest.clone(), ManifestLink::of(parsed, fetched.bytes.len() as u64, None))
}

// ---------------------------------------------------------------------------------------------------------------
// The controller

/// Starts the import controller on the current runtime, on whichever replica holds the lease `imports`
/// ([`crate::background`]): a first pass over every stream, then every stream change (from the store's change
/// feed) is looked at for due imports, and scheduled tags are imported again every
/// [`ImportSettings::scheduled_interval`]. A replica that becomes leader starts with the first pass (so nothing
/// due is missed) and a fresh timetable (a scheduled tag is next imported an interval after the takeover).
pub fn spawn_controller(registry: Registry) -> LeaderTask {
    let meta = registry.meta.clone();
    LeaderTask::spawn(meta, IMPORTS_LEASE, move |mut stopping| {
        let registry = registry.clone();
        async move {
            tokio::select! {
                _ = controller(registry) => {}
                _ = stopped(&mut stopping) => {}
            }
        }
    })
}

/// The lease of the import controller.
pub const IMPORTS_LEASE: &str = "imports";

async fn controller(reg: Registry) {
    let mut feed = reg.meta.subscribe();
    let mut timetable: HashMap<(RepositoryName, TagName), (tokio::time::Instant, TagImport)> = HashMap::new();
    let interval = reg.imports.scheduled_interval;
    let mut pending: Vec<RepositoryName> = Vec::new();
    let mut rescan = true;
    let mut paused = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        if rescan {
            rescan = false;
            let mut after: Option<String> = None;
            loop {
                let page = match reg.streams.list_repositories(after.as_deref(), 1000).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(error = %e, "import controller: listing streams");
                        break;
                    }
                };
                let Some(last) = page.last() else { break };
                after = Some(last.to_string());
                pending.extend(page);
            }
        }
        pending.sort();
        pending.dedup();
        if !pending.is_empty() && reg.read_only.is_on().await.unwrap_or(true) {
            // Read-only: nothing is imported; everything is looked at again once writes are accepted.
            pending.clear();
            paused = true;
        }
        for repo in std::mem::take(&mut pending) {
            let scheduled = match reg.import_due(&repo).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(%repo, error = %e, "import controller: reading a stream");
                    continue;
                }
            };
            timetable.retain(|(r, t), _| r != &repo || scheduled.iter().any(|s| &s.tag == t));
            for s in scheduled {
                let next = tokio::time::Instant::now() + interval;
                timetable.entry((repo.clone(), s.tag.clone())).and_modify(|(_, t)| *t = s.clone()).or_insert((next, s));
            }
        }
        tokio::select! {
            event = feed.recv() => match event {
                Ok(e) => {
                    if let Some(repo) = keys::repository_of_imagestream_key(&e.key) {
                        pending.push(repo);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => rescan = true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                let now = tokio::time::Instant::now();
                let due: Vec<(RepositoryName, TagName)> =
                    timetable.iter().filter(|(_, (at, _))| *at <= now).map(|(k, _)| k.clone()).collect();
                if reg.read_only.is_on().await.unwrap_or(true) {
                    // Read-only: scheduled imports wait (they are due again once writes are accepted).
                    paused = true;
                    continue;
                }
                rescan |= std::mem::take(&mut paused);
                for key in due {
                    let Some((at, t)) = timetable.get_mut(&key) else { continue };
                    *at = now + interval;
                    let t = t.clone();
                    reg.import_scheduled(&key.0, &t).await;
                }
            }
        }
    }
}

impl From<StoreError> for UpstreamError {
    fn from(e: StoreError) -> Self {
        internal(e)
    }
}

impl From<RegistryError> for UpstreamError {
    fn from(e: RegistryError) -> Self {
        internal(e)
    }
}
