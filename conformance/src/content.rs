//! In-memory test content: random blobs, real JSON image configs, OCI/Docker manifests,
//! indexes/lists and referrer artifacts, with their sha256/sha512 digests.

use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256, Sha512};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Accept header listing every manifest type the runner pushes.
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(data)))
}

/// Short random lowercase hex string (for repository names and tags).
pub fn rand_id(len: usize) -> String {
    let mut s = uuid::Uuid::new_v4().simple().to_string();
    s.truncate(len.min(32));
    s
}

/// `n` pseudo-random bytes (sha256 in counter mode over a fresh UUID seed).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let seed = uuid::Uuid::new_v4();
    let mut out = Vec::with_capacity(n + 32);
    let mut counter = 0u64;
    while out.len() < n {
        let mut h = Sha256::new();
        h.update(seed.as_bytes());
        h.update(counter.to_le_bytes());
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(n);
    out
}

/// A digest that (with overwhelming probability) names nothing in any registry.
pub fn unknown_digest() -> String {
    sha256(&random_bytes(64))
}

/// A blob with its media type (used when it appears in a descriptor).
#[derive(Debug, Clone)]
pub struct Blob {
    pub data: Bytes,
    pub digest: String,
    pub media_type: String,
}

impl Blob {
    pub fn new(data: impl Into<Bytes>, media_type: &str) -> Self {
        let data = data.into();
        Self { digest: sha256(&data), data, media_type: media_type.to_string() }
    }

    /// Same content, addressed by its sha512 digest.
    pub fn with_sha512(mut self) -> Self {
        self.digest = sha512(&self.data);
        self
    }

    pub fn random(size: usize, media_type: &str) -> Self {
        Self::new(random_bytes(size), media_type)
    }

    pub fn size(&self) -> usize {
        self.data.len()
    }

    pub fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size()})
    }
}

/// A manifest (image manifest, index, list or artifact) as pushed.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub body: Bytes,
    pub digest: String,
    pub media_type: String,
    /// Blobs the manifest references (config first), to push before it.
    pub blobs: Vec<Blob>,
    /// Child manifests (indexes/lists), to push before it.
    pub children: Vec<Manifest>,
    /// The `artifactType` a referrers listing must report for it, if it has a subject.
    pub artifact_type: Option<String>,
    pub annotations: Value,
}

impl Manifest {
    pub fn from_value(value: &Value, media_type: &str, blobs: Vec<Blob>, children: Vec<Manifest>) -> Self {
        let body = Bytes::from(serde_json::to_vec(value).expect("serializing manifest"));
        Self::from_bytes(body, media_type, blobs, children, value)
    }

    fn from_bytes(body: Bytes, media_type: &str, blobs: Vec<Blob>, children: Vec<Manifest>, value: &Value) -> Self {
        let artifact_type = value
            .get("artifactType")
            .and_then(Value::as_str)
            .or_else(|| value.pointer("/config/mediaType").and_then(Value::as_str))
            .map(str::to_string);
        let annotations = value.get("annotations").cloned().unwrap_or(Value::Null);
        Self {
            digest: sha256(&body),
            body,
            media_type: media_type.to_string(),
            blobs,
            children,
            artifact_type,
            annotations,
        }
    }

    pub fn size(&self) -> usize {
        self.body.len()
    }

    pub fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size()})
    }

    /// Same manifest, addressed by its sha512 digest.
    pub fn with_sha512(mut self) -> Self {
        self.digest = sha512(&self.body);
        self
    }

    /// Layers (non-config blobs).
    pub fn layers(&self) -> &[Blob] {
        self.blobs.get(1..).unwrap_or_default()
    }

    pub fn config(&self) -> Option<&Blob> {
        self.blobs.first()
    }
}

/// What goes into an image config.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub architecture: String,
    pub os: String,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub labels: Value,
}

impl ImageSpec {
    /// amd64/linux with a unique Cmd, Env and Labels.
    pub fn unique() -> Self {
        let id = rand_id(12);
        Self {
            architecture: "amd64".into(),
            os: "linux".into(),
            cmd: vec!["/bin/sh".into(), "-c".into(), format!("echo conformance-{id}")],
            env: vec!["PATH=/usr/local/bin:/usr/bin:/bin".into(), format!("CONFORMANCE_ID={id}")],
            labels: json!({"io.tributary.conformance": id, "org.opencontainers.image.title": "conformance"}),
        }
    }

    fn with_platform(arch: &str) -> Self {
        let mut s = Self::unique();
        s.architecture = arch.to_string();
        s
    }
}

/// A real JSON image config for `layers` (uncompressed, so diff_ids are the layer digests).
pub fn image_config(spec: &ImageSpec, layers: &[Blob], media_type: &str) -> Blob {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    let history: Vec<Value> =
        layers.iter().map(|_| json!({"created": "2024-01-01T00:00:00Z", "created_by": "conformance"})).collect();
    let cfg = json!({
        "architecture": spec.architecture,
        "os": spec.os,
        "created": "2024-01-01T00:00:00Z",
        "config": {
            "Cmd": spec.cmd,
            "Env": spec.env,
            "Labels": spec.labels,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    });
    Blob::new(serde_json::to_vec(&cfg).expect("serializing config"), media_type)
}

/// An OCI image with `layer_sizes.len()` random layers.
pub fn oci_image(spec: &ImageSpec, layer_sizes: &[usize]) -> Manifest {
    let layers: Vec<Blob> = layer_sizes.iter().map(|&n| Blob::random(n, OCI_LAYER)).collect();
    oci_image_from(spec, layers)
}

/// An OCI image over the given layers.
pub fn oci_image_from(spec: &ImageSpec, layers: Vec<Blob>) -> Manifest {
    let config = image_config(spec, &layers, OCI_CONFIG);
    let v = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
    });
    let mut blobs = vec![config];
    blobs.extend(layers);
    Manifest::from_value(&v, OCI_MANIFEST, blobs, vec![])
}

/// A small, unique OCI image (one 1 KiB-ish layer).
pub fn small_image() -> Manifest {
    oci_image(&ImageSpec::unique(), &[1024 + (random_bytes(1)[0] as usize)])
}

/// A Docker schema2 image.
pub fn docker_image(spec: &ImageSpec, layer_sizes: &[usize]) -> Manifest {
    let layers: Vec<Blob> = layer_sizes.iter().map(|&n| Blob::random(n, DOCKER_LAYER)).collect();
    let config = image_config(spec, &layers, DOCKER_CONFIG);
    let v = json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": config.descriptor(),
        "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
    });
    let mut blobs = vec![config];
    blobs.extend(layers);
    Manifest::from_value(&v, DOCKER_MANIFEST, blobs, vec![])
}

fn platform_list(children: &[Manifest], archs: &[&str]) -> Vec<Value> {
    children
        .iter()
        .zip(archs)
        .map(|(c, arch)| {
            let mut d = c.descriptor();
            d["platform"] = json!({"architecture": arch, "os": "linux"});
            d
        })
        .collect()
}

/// An OCI index over two fresh single-platform images (amd64, arm64).
pub fn oci_index() -> Manifest {
    let archs = ["amd64", "arm64"];
    let children: Vec<Manifest> =
        archs.iter().map(|a| oci_image(&ImageSpec::with_platform(a), &[512 + random_bytes(1)[0] as usize])).collect();
    let v = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": platform_list(&children, &archs),
    });
    Manifest::from_value(&v, OCI_INDEX, vec![], children)
}

/// A Docker manifest list over two fresh schema2 images (amd64, arm64).
pub fn docker_list() -> Manifest {
    let archs = ["amd64", "arm64"];
    let children: Vec<Manifest> = archs
        .iter()
        .map(|a| docker_image(&ImageSpec::with_platform(a), &[512 + random_bytes(1)[0] as usize]))
        .collect();
    let v = json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": platform_list(&children, &archs),
    });
    Manifest::from_value(&v, DOCKER_LIST, vec![], children)
}

/// The OCI empty JSON blob `{}`.
pub fn empty_json() -> Blob {
    Blob::new(&b"{}"[..], OCI_EMPTY)
}

/// How an artifact declares its type.
pub enum ArtifactKind<'a> {
    /// `artifactType` field with an empty config.
    Field(&'a str),
    /// No `artifactType`; the config descriptor's media type carries it.
    ConfigMediaType(&'a str),
}

/// An OCI artifact manifest whose `subject` is `subject`.
pub fn artifact(subject: &Value, kind: ArtifactKind<'_>, note: &str) -> Manifest {
    let layer = Blob::new(random_bytes(64 + random_bytes(1)[0] as usize), "application/vnd.conformance.layer");
    let annotations = json!({"org.opencontainers.conformance.note": note});
    let (config, v) = match kind {
        ArtifactKind::Field(t) => {
            let config = empty_json();
            let v = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": t,
                "config": config.descriptor(),
                "layers": [layer.descriptor()],
                "subject": subject,
                "annotations": annotations,
            });
            (config, v)
        }
        ArtifactKind::ConfigMediaType(t) => {
            let config = Blob::new(serde_json::to_vec(&json!({"note": note})).expect("json"), t);
            let v = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config.descriptor(),
                "layers": [layer.descriptor()],
                "subject": subject,
                "annotations": annotations,
            });
            (config, v)
        }
    };
    Manifest::from_value(&v, OCI_MANIFEST, vec![config, layer], vec![])
}

/// An OCI index artifact with `artifactType` and a `subject`, listing `children`.
pub fn index_artifact(subject: &Value, artifact_type: &str, children: Vec<Manifest>, note: &str) -> Manifest {
    let v = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": artifact_type,
        "manifests": children.iter().map(Manifest::descriptor).collect::<Vec<_>>(),
        "subject": subject,
        "annotations": {"org.opencontainers.conformance.note": note},
    });
    Manifest::from_value(&v, OCI_INDEX, vec![], children)
}

/// An OCI image manifest padded (via an annotation) to exactly `target` bytes.
pub fn padded_manifest(base: &Manifest, target: usize) -> Manifest {
    let mut v: Value = serde_json::from_slice(&base.body).expect("own manifest is JSON");
    v["annotations"] = json!({"org.opencontainers.conformance.padding": ""});
    let overhead = serde_json::to_vec(&v).expect("json").len();
    let pad = target.saturating_sub(overhead);
    v["annotations"]["org.opencontainers.conformance.padding"] = Value::String("a".repeat(pad));
    let m = Manifest::from_value(&v, OCI_MANIFEST, base.blobs.clone(), vec![]);
    debug_assert_eq!(m.size(), target.max(overhead));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_prefixed_hex() {
        assert_eq!(sha256(b""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert!(sha512(b"").starts_with("sha512:cf83e1357eefb8bd"));
        assert_eq!(empty_json().digest, "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
    }

    #[test]
    fn padding_hits_target_size() {
        let m = padded_manifest(&small_image(), 4 * 1024 * 1024);
        assert_eq!(m.size(), 4 * 1024 * 1024);
    }

    #[test]
    fn random_bytes_differ() {
        assert_ne!(random_bytes(32), random_bytes(32));
        assert_eq!(random_bytes(100).len(), 100);
    }
}
