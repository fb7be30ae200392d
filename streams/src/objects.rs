//! The image stream API's object operations, in OpenShift's shapes: image streams (list, get, create, replace,
//! merge-patch, delete), image stream tags (`<stream>:<tag>`: list, get, create, replace, delete), image stream
//! images (`<stream>@<id>`), image stream mappings and images. Every spec write goes through [`write_spec`]
//! (read, [`rules::apply_spec`], compare-and-swap writes committed by [`crate::plan`], retried). Called by the
//! registry's HTTP edge with typed names; no HTTP here. The patch functions live in [`crate::patch`] (re-exported).
//!
//! [`write_spec`]: StreamService::write_spec

use std::collections::BTreeMap;

use chrono::Utc;
use names::{Digest, Namespace, RepositoryName, StreamName, TagName};
use serde_json::Value;
use storage_backends::meta::decode;
use storage_backends::{keys, Expect, MetadataStoreExt, Txn};

pub use crate::patch::{apply_patch, merge_patch, strategic_merge, PatchKind, KEYED_LISTS};

use crate::model::{
    Image, ImageStream, ImageStreamImage, ImageStreamMapping, ImageStreamTag, NamedTagEventList, ObjectList,
    ObjectMeta, TagReference,
};
use crate::refs::{ImageId, IsTagName};
use crate::rules::{self, StreamState, REFERENCE_LOCAL};
use crate::service::{retry_on_conflict, stored, Loaded, ObjectKind, StreamError, StreamService};

fn invalid(kind: ObjectKind, name: &str, message: impl Into<String>) -> StreamError {
    StreamError::Invalid { kind, name: name.to_owned(), message: message.into() }
}

fn not_found(kind: ObjectKind, name: impl Into<String>) -> StreamError {
    StreamError::NotFound { kind, name: name.into() }
}

/// The namespace of an object sent to `ns` must be `ns` or left out.
fn check_namespace(meta: &ObjectMeta, ns: &Namespace) -> Result<(), StreamError> {
    match meta.namespace.as_deref() {
        Some(n) if !n.is_empty() && n != ns.as_str() => Err(StreamError::BadRequest(
            "the namespace of the provided object does not match the namespace sent on the request".into(),
        )),
        _ => Ok(()),
    }
}

/// The metadata users may set: labels and annotations. The rest (uid, creation time, generation) is the server's.
fn user_metadata(into: &mut ObjectMeta, from: &ObjectMeta) {
    into.labels = from.labels.clone();
    into.annotations = from.annotations.clone();
}

impl StreamService {
    /// The store's current revision (a list's `resourceVersion`, where a watch starts).
    pub async fn revision(&self) -> Result<u64, StreamError> {
        Ok(self.store.revision().await?)
    }

    /// Every stream of `ns` (or of every namespace), read with two prefix scans.
    pub(crate) async fn load_many(&self, ns: Option<&Namespace>) -> Result<Vec<Loaded>, StreamError> {
        let (stream_prefix, tag_prefix) = match ns {
            Some(ns) => (keys::imagestreams_in(ns), keys::istags_in(ns)),
            None => (keys::IMAGESTREAMS.to_owned(), keys::ISTAGS.to_owned()),
        };
        let read_at = self.store.revision().await?;
        let mut loaded: BTreeMap<RepositoryName, Loaded> = BTreeMap::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.store.list_json::<ImageStream>(&stream_prefix, after.as_deref(), 1000).await?;
            let Some((last, _, _)) = page.last() else { break };
            after = Some(last.clone());
            for (k, s, v) in page {
                let Some(repo) = keys::repository_of_imagestream_key(&k) else { continue };
                let (histories, conditions) = (BTreeMap::new(), BTreeMap::new());
                loaded.insert(repo.clone(), Loaded { repo, stream: Some((s, v)), histories, conditions, read_at });
            }
        }
        let mut after: Option<String> = None;
        loop {
            let page = self.store.list(&tag_prefix, after.as_deref(), 1000).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (k, v) in page {
                let Some((repo, tag)) = keys::istag_of_key(&k) else { continue };
                if let Some(l) = loaded.get_mut(&repo) {
                    l.histories.insert(tag, (decode::<NamedTagEventList>(&k, &v.value)?, v.version));
                }
            }
        }
        Ok(loaded.into_values().collect())
    }

    /// Image streams of `ns` (every namespace when `None`), as of the returned list's `resourceVersion`.
    pub async fn list_streams(&self, ns: Option<&Namespace>) -> Result<ObjectList<ImageStream>, StreamError> {
        let revision = self.revision().await?;
        let items = self.load_many(ns).await?.iter().filter_map(|l| self.assemble(l)).collect();
        Ok(ObjectList::new("ImageStream", revision, items))
    }

    /// The other streams a spec names as tag sources, read.
    async fn load_sources(
        &self,
        repo: &RepositoryName,
        stream: &ImageStream,
    ) -> Result<BTreeMap<RepositoryName, StreamState>, StreamError> {
        let mut out = BTreeMap::new();
        for source in rules::other_sources(repo, stream) {
            if let Some(state) = self.load(&source).await?.state(None) {
                out.insert(source, state);
            }
        }
        Ok(out)
    }

    /// The one way specs are written: `edit` gets the stream as read (`None` when missing) and returns the
    /// metadata and spec wanted; the rules turn that into generations and tag events; one transaction writes it
    /// all, expecting what was read (with `strict`, every key of the stream). Retried when another writer wins.
    pub(crate) async fn write_spec(
        &self,
        repo: &RepositoryName,
        strict: bool,
        edit: impl Fn(&Loaded, Option<&ImageStream>) -> Result<ImageStream, StreamError>,
    ) -> Result<ImageStream, StreamError> {
        retry_on_conflict!(repo, {
            let before = self.load(repo).await?;
            let current = self.assemble(&before);
            let wanted = stored(&edit(&before, current.as_ref())?);
            let Some(mut state) = before.state(Some(wanted)) else { unreachable!("a stream was given") };
            let sources = self.load_sources(repo, &state.stream).await?;
            let old = before.stream.as_ref().map(|(s, _)| s);
            let outcome = rules::apply_spec(old, &mut state, &sources, Utc::now())
                .map_err(|e| invalid(ObjectKind::ImageStream, repo.stream().as_str(), e.0))?;
            let mut txn = Txn::new();
            for (k, v) in self.link_copies(repo, &outcome.copies).await? {
                txn = txn.put(k, v);
            }
            self.commit_plan(before.plan(txn, &state, strict)).await?;
            Ok(())
        })?;
        self.get_stream(repo).await?.ok_or_else(|| not_found(ObjectKind::ImageStream, repo.stream().as_str()))
    }

    /// Creates an image stream (`POST imagestreams`); its spec tags are applied at once.
    pub async fn create_stream(&self, ns: &Namespace, input: ImageStream) -> Result<ImageStream, StreamError> {
        check_namespace(&input.metadata, ns)?;
        let name: StreamName = input
            .metadata
            .name
            .parse()
            .map_err(|e| invalid(ObjectKind::ImageStream, &input.metadata.name, format!("metadata.name: {e}")))?;
        let repo = RepositoryName::new(ns.clone(), name);
        self.write_spec(&repo, false, |_, current| {
            if current.is_some() {
                return Err(StreamError::AlreadyExists {
                    kind: ObjectKind::ImageStream,
                    name: repo.stream().to_string(),
                });
            }
            let mut s = self.new_stream(&repo);
            user_metadata(&mut s.metadata, &input.metadata);
            s.spec = input.spec.clone();
            Ok(s)
        })
        .await
    }

    /// Replaces an image stream's labels, annotations and spec (`PUT`). A non-empty `resourceVersion` must be
    /// the current one, else [`StreamError::Conflict`].
    pub async fn replace_stream(&self, repo: &RepositoryName, input: ImageStream) -> Result<ImageStream, StreamError> {
        check_namespace(&input.metadata, repo.namespace())?;
        let name = repo.stream().as_str();
        if !input.metadata.name.is_empty() && input.metadata.name != name {
            return Err(StreamError::BadRequest(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                input.metadata.name
            )));
        }
        let precondition = !input.metadata.resource_version.is_empty();
        self.write_spec(repo, precondition, |_, current| {
            let current = current.ok_or_else(|| not_found(ObjectKind::ImageStream, name))?;
            if precondition && input.metadata.resource_version != current.metadata.resource_version {
                return Err(StreamError::Conflict { kind: ObjectKind::ImageStream, name: name.to_owned() });
            }
            let mut s = stored(current);
            user_metadata(&mut s.metadata, &input.metadata);
            s.spec = input.spec.clone();
            Ok(s)
        })
        .await
    }

    /// Applies a JSON merge patch to an image stream (`PATCH`, `application/merge-patch+json`). A
    /// `metadata.resourceVersion` in the patch is a precondition.
    pub async fn patch_stream(
        &self,
        repo: &RepositoryName,
        patch: &Value,
        kind: PatchKind,
    ) -> Result<ImageStream, StreamError> {
        let name = repo.stream().as_str();
        let precondition = patch.pointer("/metadata/resourceVersion").is_some_and(|v| !v.is_null());
        self.write_spec(repo, precondition, |_, current| {
            let current = current.ok_or_else(|| not_found(ObjectKind::ImageStream, name))?;
            let mut doc = serde_json::to_value(current).map_err(|e| StreamError::BadRequest(e.to_string()))?;
            apply_patch(&mut doc, patch, kind);
            let patched: ImageStream = serde_json::from_value(doc)
                .map_err(|e| StreamError::BadRequest(format!("the patch does not give an ImageStream: {e}")))?;
            if patched.metadata.name != name {
                return Err(invalid(ObjectKind::ImageStream, name, "metadata.name: cannot be changed"));
            }
            if patched.metadata.resource_version != current.metadata.resource_version {
                return Err(StreamError::Conflict { kind: ObjectKind::ImageStream, name: name.to_owned() });
            }
            let mut s = stored(current);
            user_metadata(&mut s.metadata, &patched.metadata);
            s.spec = patched.spec;
            Ok(s)
        })
        .await
    }

    /// Deletes an image stream with all its tags, and the repository's manifest and blob links. Images stay
    /// (they are cluster-scoped). Returns the stream as it was. One transaction however many tags: the stream key
    /// (compare-and-swapped) and prefix deletes of the repository's tag histories, import conditions, links and
    /// referrers, so a tag pushed meanwhile (its push expects the stream key as it was) goes too.
    pub async fn delete_stream(&self, repo: &RepositoryName) -> Result<ImageStream, StreamError> {
        retry_on_conflict!(repo, {
            let before = self.load(repo).await?;
            let last =
                self.assemble(&before).ok_or_else(|| not_found(ObjectKind::ImageStream, repo.stream().as_str()))?;
            let version = before.stream.as_ref().map_or(0, |(_, v)| *v);
            let key = keys::imagestream(repo);
            let txn = Txn::new()
                .expect(key.clone(), Expect::Version(version))
                .delete(key)
                .delete_prefix(keys::istags_of(repo))
                .delete_prefix(keys::import_conditions_of(repo))
                .delete_prefix(keys::links_of(repo))
                .delete_prefix(keys::referrers_in(repo));
            self.store.commit(txn).await?;
            Ok(last)
        })
    }

    /// The `ImageStreamTag` for `tag` of a loaded stream, if the tag is in the spec or has a history.
    pub(crate) async fn istag_of(&self, loaded: &Loaded, tag: &TagName) -> Result<Option<ImageStreamTag>, StreamError> {
        let Some((stream, stream_version)) = &loaded.stream else { return Ok(None) };
        let spec = stream.spec.tags.iter().find(|t| t.name == tag.as_str()).cloned();
        let history = loaded.histories.get(tag);
        if spec.is_none() && history.is_none_or(|(h, _)| h.items.is_empty()) {
            return Ok(None);
        }
        let top = history.and_then(|(h, _)| h.items.first());
        let mut image = match top.and_then(|e| e.image.as_ref()) {
            Some(d) => self.get_image(d).await?,
            None => None,
        };
        if let (Some(img), Some(event)) = (&mut image, top) {
            let local = spec.as_ref().is_some_and(|t| t.reference_policy.kind == REFERENCE_LOCAL);
            img.docker_image_reference = match (&event.image, local) {
                (Some(d), true) => self.image_reference(&loaded.repo, d),
                _ => event.docker_image_reference.clone(),
            };
        }
        let version = history.map(|(_, v)| *v).unwrap_or(0).max(*stream_version);
        Ok(Some(ImageStreamTag {
            kind: ImageStreamTag::kind(),
            api_version: crate::model::API_VERSION.into(),
            metadata: ObjectMeta {
                name: format!("{}:{tag}", loaded.repo.stream()),
                namespace: Some(loaded.repo.namespace().to_string()),
                uid: stream.metadata.uid.clone(),
                resource_version: version.to_string(),
                creation_timestamp: top.map(|e| e.created).or(stream.metadata.creation_timestamp),
                ..ObjectMeta::default()
            },
            tag: spec,
            generation: stream.metadata.generation.unwrap_or(1),
            lookup_policy: stream.spec.lookup_policy.clone(),
            conditions: loaded.conditions.get(tag).map(|(c, _)| c.clone()).unwrap_or_default(),
            image,
        }))
    }

    pub async fn get_istag(&self, repo: &RepositoryName, tag: &TagName) -> Result<ImageStreamTag, StreamError> {
        let loaded = self.load(repo).await?;
        self.istag_of(&loaded, tag)
            .await?
            .ok_or_else(|| not_found(ObjectKind::ImageStreamTag, format!("{}:{tag}", repo.stream())))
    }

    /// Image stream tags of `ns` (every namespace when `None`): every tag in a spec or with a history.
    pub async fn list_istags(&self, ns: Option<&Namespace>) -> Result<ObjectList<ImageStreamTag>, StreamError> {
        let revision = self.revision().await?;
        let mut items = Vec::new();
        for loaded in self.load_many(ns).await? {
            let Some((stream, _)) = &loaded.stream else { continue };
            let mut tags: Vec<TagName> = loaded.histories.keys().cloned().collect();
            tags.extend(stream.spec.tags.iter().filter_map(|t| t.name.parse().ok()));
            tags.sort();
            tags.dedup();
            for tag in tags {
                if let Some(istag) = self.istag_of(&loaded, &tag).await? {
                    items.push(istag);
                }
            }
        }
        Ok(ObjectList::new("ImageStreamTag", revision, items))
    }

    /// Creates an image stream tag (`POST imagestreamtags`, `tag` required): a new spec tag, applied at once;
    /// the stream is created when missing. A tag already in the spec or with a history is
    /// [`StreamError::AlreadyExists`].
    pub async fn create_istag(&self, ns: &Namespace, input: ImageStreamTag) -> Result<ImageStreamTag, StreamError> {
        check_namespace(&input.metadata, ns)?;
        let name: IsTagName =
            input.metadata.name.parse().map_err(|e| {
                invalid(ObjectKind::ImageStreamTag, &input.metadata.name, format!("metadata.name: {e}"))
            })?;
        let repo = RepositoryName::new(ns.clone(), name.stream.clone());
        let mut tag_ref = input
            .tag
            .clone()
            .ok_or_else(|| invalid(ObjectKind::ImageStreamTag, &input.metadata.name, "tag: Required value"))?;
        tag_ref.name = name.tag.to_string();
        self.write_spec(&repo, false, |loaded, current| {
            let mut s = match current {
                Some(c) => stored(c),
                None => self.new_stream(&repo),
            };
            let in_spec = s.spec.tags.iter().any(|t| t.name == name.tag.as_str());
            if in_spec || loaded.histories.contains_key(&name.tag) {
                return Err(StreamError::AlreadyExists { kind: ObjectKind::ImageStreamTag, name: name.to_string() });
            }
            s.spec.tags.push(tag_ref.clone());
            if current.is_none() || input.lookup_policy.local {
                s.spec.lookup_policy = input.lookup_policy.clone();
            }
            Ok(s)
        })
        .await?;
        self.get_istag(&repo, &name.tag).await
    }

    /// Replaces an image stream tag (`PUT`): its spec tag when `tag` is given (applied at once, so tagging an
    /// image from the history again makes it current), and the stream's lookup policy. A non-empty
    /// `resourceVersion` must be the tag's current one.
    pub async fn replace_istag(
        &self,
        repo: &RepositoryName,
        tag: &TagName,
        input: ImageStreamTag,
    ) -> Result<ImageStreamTag, StreamError> {
        check_namespace(&input.metadata, repo.namespace())?;
        let name = format!("{}:{tag}", repo.stream());
        if !input.metadata.name.is_empty() && input.metadata.name != name {
            return Err(StreamError::BadRequest(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                input.metadata.name
            )));
        }
        let precondition = !input.metadata.resource_version.is_empty();
        self.write_spec(repo, precondition, |loaded, current| {
            let current = current.ok_or_else(|| not_found(ObjectKind::ImageStreamTag, &name))?;
            let (stream, stream_version) =
                loaded.stream.as_ref().ok_or_else(|| not_found(ObjectKind::ImageStreamTag, &name))?;
            let in_spec = stream.spec.tags.iter().any(|t| t.name == tag.as_str());
            let history_version = loaded.histories.get(tag).map(|(_, v)| *v);
            if !in_spec && history_version.is_none() {
                return Err(not_found(ObjectKind::ImageStreamTag, &name));
            }
            let version = history_version.unwrap_or(0).max(*stream_version).to_string();
            if precondition && input.metadata.resource_version != version {
                return Err(StreamError::Conflict { kind: ObjectKind::ImageStreamTag, name: name.clone() });
            }
            let mut s = stored(current);
            if let Some(t) = &input.tag {
                let t = TagReference { name: tag.to_string(), ..t.clone() };
                match s.spec.tags.iter_mut().find(|x| x.name == tag.as_str()) {
                    Some(existing) => *existing = t,
                    None => s.spec.tags.push(t),
                }
            }
            s.spec.lookup_policy = input.lookup_policy.clone();
            Ok(s)
        })
        .await?;
        self.get_istag(repo, tag).await
    }

    /// Deletes an image stream tag: its spec entry and its history (unlike `tag -d`, which edits the spec only).
    pub async fn delete_istag(&self, repo: &RepositoryName, tag: &TagName) -> Result<(), StreamError> {
        if self.delete_tag(repo, tag).await? {
            Ok(())
        } else {
            Err(not_found(ObjectKind::ImageStreamTag, format!("{}:{tag}", repo.stream())))
        }
    }

    /// The image of a stream that `id` (a digest or a unique prefix of its hex) names, as an
    /// `ImageStreamImage` named `<stream>@<id>` as asked.
    pub async fn get_isimage(&self, repo: &RepositoryName, id: &ImageId) -> Result<ImageStreamImage, StreamError> {
        let name = format!("{}@{id}", repo.stream());
        let loaded = self.load(repo).await?;
        let state = loaded.state(None).ok_or_else(|| not_found(ObjectKind::ImageStreamImage, &name))?;
        let found: Vec<(Digest, String)> = state
            .images_matching(|d| id.matches(d))
            .into_iter()
            .map(|(d, e)| (d, e.docker_image_reference.clone()))
            .collect();
        let (digest, reference) = match found.as_slice() {
            [one] => one.clone(),
            [] => return Err(not_found(ObjectKind::ImageStreamImage, &name)),
            _ => return Err(StreamError::BadRequest(format!("{id} names more than one image of {}", repo.stream()))),
        };
        let mut image = self.get_image(&digest).await?.ok_or_else(|| not_found(ObjectKind::ImageStreamImage, &name))?;
        image.docker_image_reference = reference;
        Ok(ImageStreamImage {
            kind: ImageStreamImage::kind(),
            api_version: crate::model::API_VERSION.into(),
            metadata: ObjectMeta {
                name,
                namespace: Some(repo.namespace().to_string()),
                uid: image.metadata.uid.clone(),
                resource_version: loaded.resource_version().to_string(),
                creation_timestamp: image.metadata.creation_timestamp,
                ..ObjectMeta::default()
            },
            image,
        })
    }

    /// Records an `ImageStreamMapping`: the image is created if new and goes on top of the tag's history (its
    /// `dockerImageReference` becomes the event's), tracking tags following. The stream must exist.
    pub async fn create_mapping(&self, ns: &Namespace, mapping: ImageStreamMapping) -> Result<(), StreamError> {
        check_namespace(&mapping.metadata, ns)?;
        let kind = ObjectKind::ImageStreamMapping;
        let stream: StreamName = mapping
            .metadata
            .name
            .parse()
            .map_err(|e| invalid(kind, &mapping.metadata.name, format!("metadata.name: {e}")))?;
        let tag: TagName =
            mapping.tag.parse().map_err(|e| invalid(kind, &mapping.metadata.name, format!("tag: {e}")))?;
        mapping
            .image
            .metadata
            .name
            .parse::<Digest>()
            .map_err(|e| invalid(kind, &mapping.metadata.name, format!("image.metadata.name: {e}")))?;
        if mapping.image.docker_image_reference.is_empty() {
            return Err(invalid(kind, &mapping.metadata.name, "image.dockerImageReference: Required value"));
        }
        let repo = RepositoryName::new(ns.clone(), stream);
        let mut image = mapping.image.clone();
        image.kind = Image::kind();
        image.api_version = crate::model::API_VERSION.into();
        image.metadata.namespace = None;
        image.metadata.resource_version = String::new();
        if image.metadata.uid.is_empty() {
            image.metadata.uid = uuid::Uuid::new_v4().to_string();
        }
        image.metadata.creation_timestamp.get_or_insert_with(Utc::now);
        let reference = image.docker_image_reference.clone();
        match self.map_image(&repo, Some(&tag), &image, reference, Vec::new(), false).await {
            Err(StreamError::StreamNotFound(_)) => Err(not_found(ObjectKind::ImageStream, repo.stream().as_str())),
            other => other.map(|_| ()),
        }
    }

    /// Every image (cluster-scoped), as of the list's `resourceVersion`.
    pub async fn list_images(&self) -> Result<ObjectList<Image>, StreamError> {
        let revision = self.revision().await?;
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.store.list_json::<Image>(keys::IMAGES, after.as_deref(), 1000).await?;
            let Some((last, _, _)) = page.last() else { break };
            after = Some(last.clone());
            items.extend(page.into_iter().map(|(_, mut img, v)| {
                img.metadata.resource_version = v.to_string();
                img
            }));
        }
        Ok(ObjectList::new("Image", revision, items))
    }
}
