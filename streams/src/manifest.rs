//! Reading manifests: OCI image manifest, OCI image index, Docker schema-2 manifest and Docker manifest list, into
//! one [`ParsedManifest`]; and turning a manifest plus its config blob into an [`Image`]. Pure functions.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use names::Digest;
use serde::{Deserialize, Serialize};

use crate::model::{DockerConfig, DockerImageMetadata, Image, ImageLayer, ImageManifest, ObjectMeta};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// Layer media types whose blobs live at the descriptor's `urls`, not in registries: OCI's non-distributable
/// layers and Docker's foreign layers (Windows base images). A manifest may name them without the registry holding
/// them; the registry serves one only if a client pushed it.
pub const FOREIGN_LAYERS: [&str; 4] = [
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// Whether a layer of `media_type` is one of the [`FOREIGN_LAYERS`].
pub fn is_foreign_layer(media_type: &str) -> bool {
    FOREIGN_LAYERS.contains(&media_type)
}

/// The manifest media types this registry stores.
pub const SUPPORTED: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid: {0}")]
    Invalid(String),
    #[error("manifest media type {0:?} is not supported")]
    Unsupported(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A content descriptor as it appears in manifests and in the referrers index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ManifestKind {
    /// An image manifest: a config blob and layers.
    Image { config: Descriptor, layers: Vec<Descriptor> },
    /// An index or manifest list: child manifests.
    Index { manifests: Vec<Descriptor> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParsedManifest {
    pub media_type: String,
    pub kind: ManifestKind,
    pub subject: Option<Descriptor>,
    /// `artifactType`, or for image manifests without one the config's media type (as the referrers API wants).
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: String,
    size: i64,
    platform: Option<Platform>,
    artifact_type: Option<String>,
    annotations: Option<BTreeMap<String, String>>,
}

impl RawDescriptor {
    fn parse(self, what: &str) -> Result<Descriptor, ManifestError> {
        let digest = self.digest.parse::<Digest>().map_err(|e| ManifestError::Invalid(format!("{what}: {e}")))?;
        let size = u64::try_from(self.size).map_err(|_| ManifestError::Invalid(format!("{what}: negative size")))?;
        let media_type =
            self.media_type.ok_or_else(|| ManifestError::Invalid(format!("{what}: descriptor without mediaType")))?;
        Ok(Descriptor {
            media_type,
            digest,
            size,
            platform: self.platform,
            artifact_type: self.artifact_type,
            annotations: self.annotations,
        })
    }
}

/// Parses manifest bytes sent with `content_type` (the request's Content-Type, if any).
/// The body's own `mediaType`, when present, must agree with the Content-Type.
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, ManifestError> {
    let raw: RawManifest =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Invalid(format!("not a JSON manifest: {e}")))?;
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream");
    let media_type = match (header, raw.media_type.as_deref()) {
        (Some(h), Some(b)) if h != b => {
            return Err(ManifestError::Invalid(format!("Content-Type {h} does not match mediaType {b} of the body")))
        }
        (Some(h), _) => h.to_owned(),
        (None, Some(b)) => b.to_owned(),
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, None) => OCI_MANIFEST.to_owned(),
    };
    if !SUPPORTED.contains(&media_type.as_str()) {
        return Err(ManifestError::Unsupported(media_type));
    }
    if raw.schema_version != Some(2) {
        return Err(ManifestError::Invalid("schemaVersion must be 2".into()));
    }
    let subject = raw.subject.map(|s| s.parse("subject")).transpose()?;
    let kind = match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => {
            if raw.manifests.is_some() {
                return Err(ManifestError::Invalid("an image manifest has no `manifests`".into()));
            }
            let config = raw.config.ok_or_else(|| ManifestError::Invalid("missing config".into()))?.parse("config")?;
            let layers = raw
                .layers
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .map(|(i, l)| l.parse(&format!("layers[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            if media_type == DOCKER_MANIFEST && layers.is_empty() {
                return Err(ManifestError::Invalid("a Docker image manifest needs at least one layer".into()));
            }
            ManifestKind::Image { config, layers }
        }
        _ => {
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(ManifestError::Invalid("an index has no `config` or `layers`".into()));
            }
            let manifests = raw
                .manifests
                .ok_or_else(|| ManifestError::Invalid("missing manifests".into()))?
                .into_iter()
                .enumerate()
                .map(|(i, m)| m.parse(&format!("manifests[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            ManifestKind::Index { manifests }
        }
    };
    let artifact_type = raw.artifact_type.or_else(|| match &kind {
        ManifestKind::Image { config, .. } if media_type == OCI_MANIFEST => Some(config.media_type.clone()),
        _ => None,
    });
    Ok(ParsedManifest { media_type, kind, subject, artifact_type, annotations: raw.annotations })
}

impl ParsedManifest {
    /// Blobs this manifest needs in the repository (config first, then layers), without [`FOREIGN_LAYERS`]: those
    /// are neither required at push, nor copied by import, nor pulled through.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        match &self.kind {
            ManifestKind::Image { config, layers } => {
                std::iter::once(config).chain(layers.iter().filter(|l| !is_foreign_layer(&l.media_type))).collect()
            }
            ManifestKind::Index { .. } => Vec::new(),
        }
    }
    /// Manifests this manifest needs in the repository.
    pub fn children(&self) -> &[Descriptor] {
        match &self.kind {
            ManifestKind::Index { manifests } => manifests,
            ManifestKind::Image { .. } => &[],
        }
    }
}

#[derive(Deserialize, Default)]
struct RawConfig {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: String,
    created: Option<DateTime<Utc>>,
    #[serde(default)]
    author: String,
    config: Option<DockerConfig>,
}

/// Builds the Image for a manifest. `config` is the config blob's bytes for image manifests (ignored when it is
/// not a Docker/OCI image config, as for artifacts). `reference` is the image's `dockerImageReference`.
pub fn image_from(
    digest: &Digest,
    parsed: &ParsedManifest,
    config: Option<&[u8]>,
    reference: String,
    now: DateTime<Utc>,
) -> Image {
    let mut metadata = DockerImageMetadata::default();
    let mut layers = Vec::new();
    let mut manifests = Vec::new();
    let mut config_digest = None;
    match &parsed.kind {
        ManifestKind::Image { config: cfg, layers: ls } => {
            let raw: RawConfig = config.and_then(|b| serde_json::from_slice(b).ok()).unwrap_or_default();
            metadata = DockerImageMetadata {
                id: cfg.digest.to_string(),
                created: raw.created,
                author: raw.author,
                config: raw.config,
                architecture: raw.architecture,
                os: raw.os,
                variant: raw.variant,
                size: cfg.size + ls.iter().map(|l| l.size).sum::<u64>(),
                ..DockerImageMetadata::default()
            };
            metadata.kind = "DockerImage".into();
            metadata.api_version = "1.0".into();
            config_digest = Some(cfg.digest.to_string());
            layers = ls
                .iter()
                .map(|l| ImageLayer { name: l.digest.clone(), size: l.size, media_type: l.media_type.clone() })
                .collect();
        }
        ManifestKind::Index { manifests: ms } => {
            metadata.kind = "DockerImage".into();
            metadata.api_version = "1.0".into();
            manifests = ms
                .iter()
                .map(|m| {
                    let p = m.platform.clone().unwrap_or(Platform {
                        architecture: String::new(),
                        os: String::new(),
                        variant: None,
                    });
                    ImageManifest {
                        digest: m.digest.clone(),
                        media_type: m.media_type.clone(),
                        manifest_size: m.size,
                        architecture: p.architecture,
                        os: p.os,
                        variant: p.variant.unwrap_or_default(),
                    }
                })
                .collect();
        }
    }
    Image {
        kind: "Image".into(),
        api_version: crate::model::API_VERSION.into(),
        metadata: ObjectMeta {
            name: digest.to_string(),
            uid: uuid::Uuid::new_v4().to_string(),
            creation_timestamp: Some(now),
            ..ObjectMeta::default()
        },
        docker_image_reference: reference,
        docker_image_metadata: metadata,
        docker_image_metadata_version: "1.0".into(),
        docker_image_manifest_media_type: parsed.media_type.clone(),
        docker_image_layers: layers,
        docker_image_config: config_digest,
        docker_image_manifests: manifests,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> String {
        Digest::sha256_of(s.as_bytes()).to_string()
    }

    #[test]
    fn oci_manifest_and_image() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":10}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":5}}]}}"#,
            d("c"),
            d("l")
        );
        let p = parse(m.as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(p.blobs().len(), 2);
        assert_eq!(p.artifact_type.as_deref(), Some("application/vnd.oci.image.config.v1+json"));
        let cfg = br#"{"architecture":"amd64","os":"linux","created":"2024-01-02T03:04:05Z","author":"me",
            "config":{"Cmd":["/bin/sh"],"Env":["A=1"],"WorkingDir":"/w","User":"1001","Labels":{"k":"v"},
            "ExposedPorts":{"8080/tcp":{}},"Entrypoint":["/e"]}}"#;
        let dig = Digest::sha256_of(m.as_bytes());
        let img = image_from(&dig, &p, Some(cfg), "h/ns/a@x".into(), Utc::now());
        let md = &img.docker_image_metadata;
        assert_eq!((md.architecture.as_str(), md.os.as_str(), md.size), ("amd64", "linux", 15));
        let c = md.config.as_ref().unwrap();
        assert_eq!(c.cmd.as_deref(), Some(&["/bin/sh".to_string()][..]));
        assert_eq!(c.working_dir, "/w");
        let json = serde_json::to_value(&img).unwrap();
        assert_eq!(json["dockerImageMetadata"]["Config"]["Entrypoint"][0], "/e");
        assert_eq!(json["dockerImageLayers"][0]["size"], 5);
    }

    #[test]
    fn foreign_layers_are_not_required() {
        let layer = |mt: &str, s: &str| {
            format!(r#"{{"mediaType":"{mt}","digest":"{}","size":5,"urls":["https://x/y"]}}"#, d(s))
        };
        let layers: Vec<String> = FOREIGN_LAYERS
            .iter()
            .enumerate()
            .map(|(i, mt)| layer(mt, &i.to_string()))
            .chain([layer("application/vnd.oci.image.layer.v1.tar+gzip", "own")])
            .collect();
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":10}},
            "layers":[{}]}}"#,
            d("c"),
            layers.join(",")
        );
        let p = parse(m.as_bytes(), Some(OCI_MANIFEST)).unwrap();
        let wanted: Vec<String> = p.blobs().iter().map(|b| b.digest.to_string()).collect();
        assert_eq!(wanted, [d("c"), d("own")]);
    }

    #[test]
    fn rejects_lies_and_garbage() {
        assert!(matches!(parse(b"not json", None), Err(ManifestError::Invalid(_))));
        let idx = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
        assert!(parse(idx.as_bytes(), Some(OCI_MANIFEST)).is_err(), "content type disagrees with body");
        assert!(parse(idx.as_bytes(), Some(OCI_INDEX)).is_ok());
        let bad_digest = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"sha256:zz","size":1}}]}}"#
        );
        assert!(parse(bad_digest.as_bytes(), Some(OCI_INDEX)).is_err());
        assert!(matches!(parse(b"{}", Some("application/x-foo")), Err(ManifestError::Unsupported(_))));
        assert!(parse(br#"{"schemaVersion":1}"#, Some(OCI_MANIFEST)).is_err());
    }
}
