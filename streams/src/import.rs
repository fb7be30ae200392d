//! Importing external images into streams, the domain half (the network half is the registry's `service::import`):
//! the `ImageStreamImport` object, which spec tags are due for an import ([`imports_due`], as OpenShift decides
//! it from generations), and how an import's outcome is written: a tag event whose `dockerImageReference` is the
//! source by digest ([`StreamService::record_import`]), or, on failure, an `ImportSuccess=False` condition beside
//! the tag's history that never touches its images ([`StreamService::record_import_failure`]).

use chrono::{DateTime, Utc};
use names::{Namespace, RepositoryName, StreamName, TagName};
use serde::{Deserialize, Serialize};
use storage_backends::meta::encode;
use storage_backends::{keys, Expect, MetadataStoreExt, Txn};

use crate::model::{
    Image, ImageStream, ObjectMeta, ObjectReference, TagEventCondition, TagImportPolicy, TagReference,
    TagReferencePolicy,
};
use crate::refs::KIND_DOCKER_IMAGE;
use crate::service::{retry_on_conflict, MappingOutcome, ObjectKind, StreamError, StreamService};

/// The stream annotation that lets every tag of the stream be imported over plain http or unverified TLS.
pub const INSECURE_REPOSITORY: &str = "openshift.io/image.insecureRepository";
/// The stream annotation recording when `spec.dockerImageRepository` was last imported.
pub const REPOSITORY_CHECK: &str = "openshift.io/image.dockerRepositoryCheck";
/// The condition type an import failure writes.
pub const IMPORT_SUCCESS: &str = "ImportSuccess";

/// `importPolicy.importMode`: what an import of a manifest list keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImportMode {
    /// One image: the list's entry for the registry's platform (linux/amd64).
    #[default]
    Legacy,
    /// The list itself and every image it names.
    PreserveOriginal,
}

impl std::str::FromStr for ImportMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "Legacy" => Ok(ImportMode::Legacy),
            "PreserveOriginal" => Ok(ImportMode::PreserveOriginal),
            other => Err(format!("import mode {other:?}: use Legacy or PreserveOriginal")),
        }
    }
}

impl ImportMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ImportMode::Legacy => "Legacy",
            ImportMode::PreserveOriginal => "PreserveOriginal",
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The ImageStreamImport object

/// `ImageStreamImport`: a request to import images into a stream (`spec`), answered with what was imported
/// (`status`). Never stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageStreamImport {
    #[serde(default = "ImageStreamImport::kind")]
    pub kind: String,
    #[serde(default = "crate::model::default_api_version")]
    pub api_version: String,
    pub metadata: ObjectMeta,
    pub spec: ImageStreamImportSpec,
    #[serde(default)]
    pub status: ImageStreamImportStatus,
}

impl ImageStreamImport {
    pub fn kind() -> String {
        "ImageStreamImport".to_owned()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageStreamImportSpec {
    /// Whether to change the stream (spec tags and status), or only look (`false`: a dry run that fetches).
    #[serde(default)]
    pub import: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepositoryImportSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageImportSpec>,
}

/// Import every tag of a repository (`import-image --all`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryImportSpec {
    pub from: ObjectReference,
    #[serde(default)]
    pub import_policy: TagImportPolicy,
    #[serde(default)]
    pub reference_policy: TagReferencePolicy,
    #[serde(default)]
    pub include_manifest: bool,
}

/// Import one image under a tag (`to.name`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageImportSpec {
    pub from: ObjectReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<LocalObjectReference>,
    #[serde(default)]
    pub import_policy: TagImportPolicy,
    #[serde(default)]
    pub reference_policy: TagReferencePolicy,
    #[serde(default)]
    pub include_manifest: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LocalObjectReference {
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageStreamImportStatus {
    /// The stream after the import (when `spec.import`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<ImageStream>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepositoryImportStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageImportStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryImportStatus {
    pub status: ImportStatus,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageImportStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_tags: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageImportStatus {
    pub status: ImportStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tag: String,
    /// With `PreserveOriginal`, the images of the manifest list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<Image>,
}

/// A Kubernetes `Status` in short: `Success`, or `Failure` with the reason and the upstream's message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportStatus {
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub code: u16,
}

fn is_zero(c: &u16) -> bool {
    *c == 0
}

impl ImportStatus {
    pub fn success() -> ImportStatus {
        ImportStatus { status: "Success".into(), ..ImportStatus::default() }
    }

    pub fn failure(reason: &str, message: impl Into<String>, code: u16) -> ImportStatus {
        ImportStatus { status: "Failure".into(), message: message.into(), reason: reason.into(), code }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Which tags are due

/// One spec tag to import: where from, how, and at which spec generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagImport {
    pub tag: TagName,
    pub from: String,
    pub insecure: bool,
    pub mode: ImportMode,
    pub scheduled: bool,
    pub generation: i64,
}

/// Whether every tag of `stream` may be reached insecurely (its `insecureRepository` annotation).
pub fn insecure_stream(stream: &ImageStream) -> bool {
    stream.metadata.annotations.get(INSECURE_REPOSITORY).is_some_and(|v| v == "true")
}

/// The importable spec tags of `stream` (an external `DockerImage` that is not a `--reference`), with `due`
/// telling whether each is waiting for an import: its spec generation is newer than both the top event of its
/// history and its last failure, as OpenShift decides it. `stream` is an assembled stream (status filled in).
pub fn importable_tags(stream: &ImageStream) -> Vec<(TagImport, bool)> {
    let stream_generation = stream.metadata.generation.unwrap_or(1);
    let insecure = insecure_stream(stream);
    let mut out = Vec::new();
    for spec in &stream.spec.tags {
        let Some(from) = spec.from.as_ref().filter(|f| f.kind == KIND_DOCKER_IMAGE) else { continue };
        if spec.reference {
            continue;
        }
        let Ok(tag) = spec.name.parse::<TagName>() else { continue };
        let generation = spec.generation.unwrap_or(stream_generation);
        let status = stream.status.tags.iter().find(|t| t.tag == spec.name);
        let imported = status.and_then(|s| s.items.first()).is_some_and(|e| e.generation >= generation);
        let failed = status.is_some_and(|s| s.conditions.iter().any(|c| c.generation >= generation));
        let import = TagImport {
            tag,
            from: from.name.clone(),
            insecure: insecure || spec.import_policy.insecure,
            mode: spec.import_policy.import_mode.as_deref().unwrap_or("").parse().unwrap_or_default(),
            scheduled: spec.import_policy.scheduled,
            generation,
        };
        out.push((import, !imported && !failed));
    }
    out
}

/// The spec tags of `stream` waiting for an import.
pub fn imports_due(stream: &ImageStream) -> Vec<TagImport> {
    importable_tags(stream).into_iter().filter(|(_, due)| *due).map(|(t, _)| t).collect()
}

/// Whether `spec.dockerImageRepository` is set and has not been imported yet.
pub fn repository_import_due(stream: &ImageStream) -> Option<String> {
    let repo = stream.spec.docker_image_repository.as_deref().unwrap_or("").trim();
    (!repo.is_empty() && !stream.metadata.annotations.contains_key(REPOSITORY_CHECK)).then(|| repo.to_owned())
}

/// The spec tag an import of `from` into `tag` writes (`import-image`, the `imagestreamimports` API).
pub fn spec_tag_for(
    tag: &TagName,
    from: &str,
    policy: &TagImportPolicy,
    reference_policy: &TagReferencePolicy,
) -> TagReference {
    TagReference {
        name: tag.to_string(),
        annotations: None,
        from: Some(ObjectReference { kind: KIND_DOCKER_IMAGE.into(), name: from.to_owned(), namespace: None }),
        reference: false,
        // Generation 0 asks for a new import even when the spec tag is unchanged (OpenShift's convention).
        generation: Some(0),
        import_policy: policy.clone(),
        reference_policy: reference_policy.clone(),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Writing outcomes

impl StreamService {
    /// Puts the spec tags of an import into `repo`'s spec, creating the stream when missing and
    /// `may_create`. Returns the stream as stored.
    pub async fn set_import_spec(
        &self,
        ns: &Namespace,
        stream: &StreamName,
        tags: Vec<TagReference>,
        may_create: bool,
    ) -> Result<ImageStream, StreamError> {
        let repo = RepositoryName::new(ns.clone(), stream.clone());
        // The spec edit is applied to the stream as read inside the write's compare-and-swap retries, so a
        // concurrent spec change is never overwritten.
        self.write_spec(&repo, false, |_, current| {
            let mut wanted = match current {
                Some(s) => s.clone(),
                None if may_create => self.new_stream(&repo),
                None => {
                    return Err(StreamError::NotFound { kind: ObjectKind::ImageStream, name: stream.to_string() });
                }
            };
            for t in &tags {
                match wanted.spec.tags.iter_mut().find(|s| s.name == t.name) {
                    Some(slot) => *slot = t.clone(),
                    None => wanted.spec.tags.push(t.clone()),
                }
            }
            Ok(wanted)
        })
        .await
    }

    /// Records an imported image under `tag`: the Image (and, for a kept manifest list, its `children`) is
    /// created if new, the caller's `extra` writes (manifest and blob links) go in the same transaction, and a
    /// tag event pointing at `reference` (the source by digest) goes on top of the history unless the same image
    /// is already there. A previous failure's conditions are cleared.
    pub async fn record_import(
        &self,
        repo: &RepositoryName,
        tag: &TagName,
        image: &Image,
        reference: String,
        children: &[(Image, String)],
        extra: Vec<(String, Vec<u8>)>,
    ) -> Result<MappingOutcome, StreamError> {
        for (child, child_ref) in children {
            self.map_image(repo, None, child, child_ref.clone(), Vec::new(), false).await?;
        }
        let outcome = self.map_image(repo, Some(tag), image, reference, extra, true).await?;
        let key = keys::import_conditions(repo, tag);
        if let Some(v) = self.store.get(&key).await? {
            let mut txn = Txn::new().expect(key.clone(), Expect::Version(v.version)).delete(key);
            // A deletion under the stream's prefixes rewrites the stream key, which strict writes check (see
            // `crate::plan`); the stream's resourceVersion goes up with its status.
            let stream_key = keys::imagestream(repo);
            if let Some(s) = self.store.get(&stream_key).await? {
                txn = txn.expect(stream_key.clone(), Expect::Version(s.version)).put(stream_key, s.value);
            }
            let _ = self.store.commit(txn).await;
        }
        Ok(outcome)
    }

    /// Records a failed import of `tag`: an `ImportSuccess=False` condition with the upstream's message, at the
    /// spec tag's generation. The tag's history (its images) is left as it was.
    pub async fn record_import_failure(
        &self,
        repo: &RepositoryName,
        tag: &TagName,
        reason: &str,
        message: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StreamError> {
        retry_on_conflict!(repo, {
            let stored = self.store.get_json::<ImageStream>(&keys::imagestream(repo)).await?;
            let Some((stream, _)) = stored else { return Ok(()) };
            let generation = stream
                .spec
                .tags
                .iter()
                .find(|t| t.name == tag.as_str())
                .and_then(|t| t.generation)
                .unwrap_or(stream.metadata.generation.unwrap_or(1));
            let key = keys::import_conditions(repo, tag);
            let previous = self.store.get_json::<Vec<TagEventCondition>>(&key).await?;
            let transition = previous
                .as_ref()
                .and_then(|(c, _)| c.first())
                .filter(|c| c.message == message)
                .and_then(|c| c.last_transition_time)
                .unwrap_or(now);
            let conditions = vec![TagEventCondition {
                kind: IMPORT_SUCCESS.into(),
                status: "False".into(),
                last_transition_time: Some(transition),
                reason: reason.to_owned(),
                message: message.to_owned(),
                generation,
            }];
            if previous.as_ref().is_some_and(|(c, _)| *c == conditions) {
                return Ok(());
            }
            let expect = match &previous {
                Some((_, v)) => Expect::Version(*v),
                None => Expect::Absent,
            };
            self.store.commit(Txn::new().expect(key.clone(), expect).put(key, encode(&conditions))).await?;
            Ok(())
        })
    }

    /// Notes on the stream that its `spec.dockerImageRepository` was imported at `when`.
    pub async fn mark_repository_checked(&self, repo: &RepositoryName, when: DateTime<Utc>) -> Result<(), StreamError> {
        retry_on_conflict!(repo, {
            let Some((mut stream, v)) = self.store.get_json::<ImageStream>(&keys::imagestream(repo)).await? else {
                return Ok(());
            };
            stream.metadata.annotations.insert(REPOSITORY_CHECK.into(), when.to_rfc3339());
            let key = keys::imagestream(repo);
            self.store.commit(Txn::new().expect(key.clone(), Expect::Version(v)).put(key, encode(&stream))).await?;
            Ok(())
        })
    }

    /// Where an image of `repo` can be fetched from when this registry does not hold it: the external pull spec
    /// of the tag event naming it (the top of `tag`'s history, or any event with image `digest`), and whether
    /// the source may be reached insecurely. `None` when the image is local or unknown here.
    pub async fn pull_source(
        &self,
        repo: &RepositoryName,
        tag: Option<&TagName>,
        digest: &names::Digest,
    ) -> Result<Option<(String, bool)>, StreamError> {
        let loaded = self.load(repo).await?;
        let Some(stream) = self.assemble(&loaded) else { return Ok(None) };
        let found = stream.status.tags.iter().find_map(|h| {
            if tag.is_some_and(|t| t.as_str() != h.tag) {
                return None;
            }
            let events: Vec<_> =
                if tag.is_some() { h.items.iter().take(1).collect() } else { h.items.iter().collect() };
            events
                .into_iter()
                .find(|e| e.image.as_ref() == Some(digest) && !self.is_local_reference(&e.docker_image_reference))
                .map(|e| (h.tag.clone(), e.docker_image_reference.clone()))
        });
        Ok(found.map(|(tag, reference)| {
            let tag_insecure = stream.spec.tags.iter().any(|t| t.name == tag && t.import_policy.insecure);
            (reference, tag_insecure || insecure_stream(&stream))
        }))
    }

    /// Whether `repo`'s spec asks for imports at all (an external spec tag that is not a reference, or a
    /// `dockerImageRepository`): a read of the stream key alone, so that the import controller can pass over the
    /// many streams that never import without loading their histories.
    pub async fn wants_imports(&self, repo: &RepositoryName) -> Result<bool, StreamError> {
        let Some((stream, _)) = self.store.get_json::<ImageStream>(&keys::imagestream(repo)).await? else {
            return Ok(false);
        };
        let external_tag = stream
            .spec
            .tags
            .iter()
            .any(|t| !t.reference && t.from.as_ref().is_some_and(|f| f.kind == KIND_DOCKER_IMAGE));
        Ok(external_tag || repository_import_due(&stream).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NamedTagEventList, TagEvent};

    fn stream_with(tags: Vec<TagReference>, status: Vec<NamedTagEventList>) -> ImageStream {
        let mut s = ImageStream::default();
        s.metadata.generation = Some(3);
        s.spec.tags = tags;
        s.status.tags = status;
        s
    }

    fn external(name: &str, from: &str, generation: i64) -> TagReference {
        let mut t =
            spec_tag_for(&name.parse().unwrap(), from, &TagImportPolicy::default(), &TagReferencePolicy::default());
        t.generation = Some(generation);
        t
    }

    fn event(generation: i64) -> TagEvent {
        TagEvent {
            created: Utc::now(),
            docker_image_reference: "x".into(),
            image: Some(names::Digest::sha256_of(b"i")),
            generation,
            by: None,
        }
    }

    #[test]
    fn due_follows_generations() {
        let mut reference = external("ref", "quay.io/a/b:1", 2);
        reference.reference = true;
        let s = stream_with(
            vec![
                external("new", "quay.io/a/b:1", 3),
                external("done", "quay.io/a/b:2", 2),
                external("stale", "quay.io/a/b:3", 3),
                external("failed", "quay.io/a/b:4", 3),
                reference,
            ],
            vec![
                NamedTagEventList { tag: "done".into(), items: vec![event(2)], conditions: vec![] },
                NamedTagEventList { tag: "stale".into(), items: vec![event(2)], conditions: vec![] },
                NamedTagEventList {
                    tag: "failed".into(),
                    items: vec![],
                    conditions: vec![TagEventCondition {
                        kind: IMPORT_SUCCESS.into(),
                        status: "False".into(),
                        last_transition_time: None,
                        reason: "NotFound".into(),
                        message: "gone".into(),
                        generation: 3,
                    }],
                },
            ],
        );
        let due: Vec<String> = imports_due(&s).into_iter().map(|t| t.tag.to_string()).collect();
        assert_eq!(due, vec!["new", "stale"]);
        assert_eq!(importable_tags(&s).len(), 4, "a --reference tag is never imported");
    }

    #[test]
    fn insecure_and_modes() {
        let mut s = stream_with(vec![external("a", "r:5000/x:1", 1)], vec![]);
        assert!(!imports_due(&s)[0].insecure);
        s.metadata.annotations.insert(INSECURE_REPOSITORY.into(), "true".into());
        assert!(imports_due(&s)[0].insecure);
        s.spec.tags[0].import_policy.import_mode = Some("PreserveOriginal".into());
        assert_eq!(imports_due(&s)[0].mode, ImportMode::PreserveOriginal);
        assert!("Sometimes".parse::<ImportMode>().is_err());
        s.spec.docker_image_repository = Some("quay.io/a/b".into());
        assert_eq!(repository_import_due(&s).as_deref(), Some("quay.io/a/b"));
        s.metadata.annotations.insert(REPOSITORY_CHECK.into(), "2026-01-01T00:00:00Z".into());
        assert_eq!(repository_import_due(&s), None);
    }
}
