//! OpenShift's `image.openshift.io/v1` object shapes, as stored and as served (camelCase JSON; the Docker image
//! metadata keeps Docker's PascalCase keys, as OpenShift does).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use names::Digest;
use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "image.openshift.io/v1";

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image stream: metadata and spec are stored together; `status.tags` is assembled from the per-tag
/// histories when the stream is read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageStream {
    #[serde(default = "ImageStream::kind")]
    pub kind: String,
    #[serde(default = "api_version")]
    pub api_version: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ImageStreamSpec,
    #[serde(default)]
    pub status: ImageStreamStatus,
}

fn api_version() -> String {
    API_VERSION.to_owned()
}

/// `image.openshift.io/v1`, the default `apiVersion` of objects read without one.
pub fn default_api_version() -> String {
    api_version()
}

impl ImageStream {
    pub fn kind() -> String {
        "ImageStream".to_owned()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageStreamSpec {
    #[serde(default)]
    pub lookup_policy: ImageLookupPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_image_repository: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<TagReference>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageLookupPolicy {
    #[serde(default)]
    pub local: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagReference {
    /// The tag; in an `ImageStreamTag`'s `tag` it may be left out (the object's name says it).
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<ObjectReference>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub reference: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default)]
    pub import_policy: TagImportPolicy,
    #[serde(default)]
    pub reference_policy: TagReferencePolicy,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagImportPolicy {
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub scheduled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagReferencePolicy {
    #[serde(rename = "type")]
    pub kind: String,
}

impl Default for TagReferencePolicy {
    fn default() -> Self {
        TagReferencePolicy { kind: "Source".to_owned() }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageStreamStatus {
    #[serde(default)]
    pub docker_image_repository: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_docker_image_repository: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<NamedTagEventList>,
}

/// One tag's history: `items[0]` is what the tag points at now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamedTagEventList {
    pub tag: String,
    #[serde(default)]
    pub items: Vec<TagEvent>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<TagEventCondition>,
}

/// One entry of a tag's history. `image` is the image's digest; it is `None` (`""` on the wire, as in OpenShift)
/// only for a `--reference` tag to an external image named without a digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagEvent {
    pub created: DateTime<Utc>,
    pub docker_image_reference: String,
    #[serde(default, with = "optional_digest")]
    pub image: Option<Digest>,
    pub generation: i64,
    /// Who pushed, tagged or imported it (the caller's name; absent when nobody is known, as in histories
    /// written before it was recorded). A Tributary extension of OpenShift's `TagEvent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// What a stored [`NamedTagEventList`] points at now (`items[0].image`), read without decoding the history behind
/// it: resolving a tag is the first step of every pull.
#[derive(Debug, Default, Deserialize)]
pub struct TagHead {
    #[serde(default)]
    items: HeadOfItems,
}

impl TagHead {
    pub fn image(self) -> Option<Digest> {
        self.items.0
    }
}

#[derive(Debug, Default)]
struct HeadOfItems(Option<Digest>);

impl<'de> Deserialize<'de> for HeadOfItems {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct First {
            #[serde(default, with = "optional_digest")]
            image: Option<Digest>,
        }
        struct Items;
        impl<'de> serde::de::Visitor<'de> for Items {
            type Value = HeadOfItems;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of tag events")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<HeadOfItems, A::Error> {
                let first = seq.next_element::<First>()?;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(HeadOfItems(first.and_then(|f| f.image)))
            }
        }
        d.deserialize_seq(Items)
    }
}

/// `Option<Digest>` as a string that is empty for `None`.
mod optional_digest {
    use names::Digest;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Digest>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&d.to_string()),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Digest>, D::Error> {
        let text = Option::<String>::deserialize(d)?.unwrap_or_default();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagEventCondition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub generation: i64,
}

/// An image, named by its manifest digest. Immutable once created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    #[serde(default = "Image::kind")]
    pub kind: String,
    #[serde(default = "api_version")]
    pub api_version: String,
    pub metadata: ObjectMeta,
    pub docker_image_reference: String,
    #[serde(default)]
    pub docker_image_metadata: DockerImageMetadata,
    #[serde(default = "Image::metadata_version")]
    pub docker_image_metadata_version: String,
    pub docker_image_manifest_media_type: String,
    #[serde(default)]
    pub docker_image_layers: Vec<ImageLayer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_image_config: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub docker_image_manifests: Vec<ImageManifest>,
}

impl Image {
    pub fn kind() -> String {
        "Image".to_owned()
    }
    fn metadata_version() -> String {
        "1.0".to_owned()
    }
    /// The image's digest (its name).
    pub fn digest(&self) -> Option<Digest> {
        self.metadata.name.parse().ok()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageLayer {
    pub name: Digest,
    pub size: u64,
    pub media_type: String,
}

/// One platform-specific manifest of an image index / manifest list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub digest: Digest,
    pub media_type: String,
    pub manifest_size: u64,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

/// `dockerImageMetadata`: the image config, in Docker's key names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerImageMetadata {
    #[serde(default = "DockerImageMetadata::kind")]
    pub kind: String,
    #[serde(rename = "apiVersion", default = "DockerImageMetadata::version")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub author: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<DockerConfig>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub architecture: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
    #[serde(default)]
    pub size: u64,
}

impl DockerImageMetadata {
    fn kind() -> String {
        "DockerImage".to_owned()
    }
    fn version() -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// `ImageStreamTag`: one tag of a stream, named `<stream>:<tag>`: its spec entry (`tag`), the stream's lookup
/// policy, and the image the tag points at now. Never stored; assembled from the stream and the tag's history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageStreamTag {
    #[serde(default = "ImageStreamTag::kind")]
    pub kind: String,
    #[serde(default = "api_version")]
    pub api_version: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub tag: Option<TagReference>,
    #[serde(default)]
    pub generation: i64,
    #[serde(default)]
    pub lookup_policy: ImageLookupPolicy,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<TagEventCondition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
}

impl ImageStreamTag {
    pub fn kind() -> String {
        "ImageStreamTag".to_owned()
    }
}

/// `ImageStreamImage`: an image of a stream, named `<stream>@<digest or unique digest prefix>`. Exists for every
/// image in the stream's tag histories; never defined by hand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageStreamImage {
    #[serde(default = "ImageStreamImage::kind")]
    pub kind: String,
    #[serde(default = "api_version")]
    pub api_version: String,
    pub metadata: ObjectMeta,
    pub image: Image,
}

impl ImageStreamImage {
    pub fn kind() -> String {
        "ImageStreamImage".to_owned()
    }
}

/// `ImageStreamMapping`: "this image is now `tag` of stream `metadata.name`" (what a push records).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageStreamMapping {
    #[serde(default = "ImageStreamMapping::kind")]
    pub kind: String,
    #[serde(default = "api_version")]
    pub api_version: String,
    pub metadata: ObjectMeta,
    pub image: Image,
    pub tag: String,
}

impl ImageStreamMapping {
    pub fn kind() -> String {
        "ImageStreamMapping".to_owned()
    }
}

/// `metadata` of a list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListMeta {
    #[serde(default)]
    pub resource_version: String,
    /// The token for the next page of a list read in pages (`limit`); absent on the last page.
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
    /// How many items the pages after this one hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_item_count: Option<u64>,
}

/// A Kubernetes list (`ImageStreamList`, `ImageStreamTagList`, `ImageList`): the items as of `resourceVersion`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectList<T> {
    pub kind: String,
    pub api_version: String,
    pub metadata: ListMeta,
    pub items: Vec<T>,
}

impl<T> ObjectList<T> {
    /// A list of `kind` items (`kind` without the `List` suffix) at `revision`.
    pub fn new(item_kind: &str, revision: u64, items: Vec<T>) -> Self {
        ObjectList {
            kind: format!("{item_kind}List"),
            api_version: API_VERSION.to_owned(),
            metadata: ListMeta { resource_version: revision.to_string(), ..ListMeta::default() },
            items,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(image: Option<&str>) -> TagEvent {
        TagEvent {
            created: Utc::now(),
            docker_image_reference: "example.com/a/b".into(),
            image: image.map(|d| d.parse().unwrap()),
            generation: 1,
            by: None,
        }
    }

    #[test]
    fn tag_head_is_the_first_event_image() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let head = |items: Vec<TagEvent>| {
            let list = NamedTagEventList { tag: "v1".into(), items, conditions: vec![] };
            serde_json::from_slice::<TagHead>(&serde_json::to_vec(&list).unwrap()).unwrap().image()
        };
        assert_eq!(head(vec![event(Some(&a)), event(Some(&b))]), Some(a.parse().unwrap()));
        assert_eq!(head(vec![event(None), event(Some(&b))]), None);
        assert_eq!(head(vec![]), None);
        assert_eq!(serde_json::from_str::<TagHead>(r#"{"tag":"v1"}"#).unwrap().image(), None);
    }
}
