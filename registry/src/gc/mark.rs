//! The mark phase of garbage collection: every digest something still references, found by scanning each root
//! prefix of the metadata store once, a page at a time (no round trip per blob): repository links
//! (`links/*/blobs/*`, `links/*/manifests/*`), Images (`images/*`: the manifest, its config, layers and an index's
//! children), live upload sessions (`uploads/*`, which protect what their finishing writes), and what every
//! referenced manifest references in turn (config, layers, blobs, index children, subject), read from the
//! manifests' bytes (`manifest-content/*`, or the blob store for the few large ones). Called by [`super::sweep`]
//! only. A root it cannot read (a corrupt Image, an unparseable referenced manifest, a store error) is an error:
//! nothing may be deleted on a partial mark.

use std::collections::{HashMap, HashSet};

use names::{Digest, UploadId};
use storage_backends::{keys, BlobStore, MetadataStore, MetadataStoreExt};
use streams::model::Image;

use super::GcError;

/// Keys read per page of a listing.
const PAGE: usize = 1000;
/// Manifests (values up to 16 KiB) read per page: at most 1.6 MiB an answer, well under gRPC's 4 MiB.
const MANIFEST_PAGE: usize = 100;

/// What the mark found.
#[derive(Debug, Default)]
pub(crate) struct Marks {
    /// Every digest something references.
    pub referenced: HashSet<Digest>,
    /// Upload sessions alive now.
    pub sessions: HashSet<UploadId>,
    /// Every `manifest-content/<digest>` entry: its size and version.
    pub manifests: HashMap<Digest, (u64, u64)>,
}

/// What a manifest references: blobs (config, layers) and manifests (index children, subject).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ManifestRefs {
    pub blobs: Vec<Digest>,
    pub manifests: Vec<Digest>,
}

/// The references of a manifest's bytes, of any schema (OCI and Docker images and indexes, artifacts, schema 1),
/// read leniently: whichever of the known fields are present. Bytes that are not JSON, or a digest field that is
/// not a digest, are an error (the manifest's references cannot be known).
pub(crate) fn references(bytes: &[u8]) -> Result<ManifestRefs, String> {
    use serde_json::Value;
    let v: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let digest = |d: &Value| -> Result<Option<Digest>, String> {
        match d {
            Value::Null => Ok(None),
            Value::String(s) => s.parse().map(Some).map_err(|e: names::NameError| e.to_string()),
            other => Err(format!("a digest field holds {other}")),
        }
    };
    let mut refs = ManifestRefs::default();
    let each = |field: &str, key: &str, out: &mut Vec<Digest>| -> Result<(), String> {
        if let Some(items) = v.get(field).and_then(Value::as_array) {
            for item in items {
                out.extend(digest(item.get(key).unwrap_or(&Value::Null))?);
            }
        }
        Ok(())
    };
    each("layers", "digest", &mut refs.blobs)?;
    each("blobs", "digest", &mut refs.blobs)?;
    each("fsLayers", "blobSum", &mut refs.blobs)?;
    each("manifests", "digest", &mut refs.manifests)?;
    if let Some(config) = v.get("config") {
        refs.blobs.extend(digest(config.get("digest").unwrap_or(&Value::Null))?);
    }
    if let Some(subject) = v.get("subject") {
        refs.manifests.extend(digest(subject.get("digest").unwrap_or(&Value::Null))?);
    }
    Ok(refs)
}

/// Scans every root (see the module documentation).
pub(crate) async fn mark(meta: &dyn MetadataStore, blobs: &BlobStore) -> Result<Marks, GcError> {
    let mut marks = Marks::default();
    // Manifests whose references must be followed.
    let mut expand: Vec<Digest> = Vec::new();

    let mut after: Option<String> = None;
    loop {
        tokio::task::yield_now().await;
        let page = meta.list_keys("links/", after.as_deref(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.clone());
        for key in page {
            let Some((rest, d)) = key.rsplit_once('/') else { continue };
            let Ok(digest) = d.parse::<Digest>() else {
                return Err(GcError::Unreadable(format!("{key}: not a digest")));
            };
            if rest.ends_with("/manifests") {
                expand.push(digest.clone());
            }
            marks.referenced.insert(digest);
        }
    }

    let mut after: Option<String> = None;
    loop {
        let page = meta.list_json::<Image>(keys::IMAGES, after.as_deref(), PAGE).await?;
        let Some((last, _, _)) = page.last() else { break };
        after = Some(last.clone());
        for (key, image, _) in page {
            let digest = keys::digest_of_key(&key).ok_or_else(|| GcError::Unreadable(key.clone()))?;
            if let Some(config) = &image.docker_image_config {
                let config = config.parse().map_err(|_| GcError::Unreadable(format!("{key}: config {config}")))?;
                marks.referenced.insert(config);
            }
            marks.referenced.extend(image.docker_image_layers.into_iter().map(|l| l.name));
            for child in image.docker_image_manifests {
                marks.referenced.insert(child.digest.clone());
                expand.push(child.digest);
            }
            marks.referenced.insert(digest.clone());
            expand.push(digest);
        }
    }

    let mut after: Option<String> = None;
    loop {
        let page = meta.list_keys(keys::UPLOADS, after.as_deref(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.clone());
        marks.sessions.extend(page.iter().filter_map(|k| k.strip_prefix(keys::UPLOADS)?.parse::<UploadId>().ok()));
    }

    // Every stored manifest's references, read once (a parse failure matters only if the manifest is referenced).
    let mut refs: HashMap<Digest, Result<ManifestRefs, String>> = HashMap::new();
    let mut after: Option<String> = None;
    loop {
        tokio::task::yield_now().await;
        let page = meta.list("manifest-content/", after.as_deref(), MANIFEST_PAGE).await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (key, value) in page {
            let Some(digest) = keys::digest_of_key(&key) else { continue };
            marks.manifests.insert(digest.clone(), (value.value.len() as u64, value.version));
            refs.insert(digest, references(&value.value));
        }
    }

    let mut expanded: HashSet<Digest> = HashSet::new();
    while let Some(digest) = expand.pop() {
        if !expanded.insert(digest.clone()) {
            continue;
        }
        let found = match refs.remove(&digest) {
            Some(Ok(r)) => r,
            Some(Err(e)) => return Err(GcError::Unreadable(format!("manifest {digest}: {e}"))),
            // A large manifest (in the blob store), or one not stored yet (pulled through on first read).
            None => match blobs.read_all(&digest).await? {
                Some(bytes) => {
                    references(&bytes).map_err(|e| GcError::Unreadable(format!("manifest {digest}: {e}")))?
                }
                None => ManifestRefs::default(),
            },
        };
        marks.referenced.extend(found.blobs);
        for m in found.manifests {
            marks.referenced.insert(m.clone());
            expand.push(m);
        }
    }
    Ok(marks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_of_every_schema() {
        let d = |s: &str| Digest::sha256_of(s.as_bytes());
        let image = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{}"}},"layers":[{{"digest":"{}"}}],"subject":{{"digest":"{}"}}}}"#,
            d("c"),
            d("l"),
            d("s")
        );
        assert_eq!(
            references(image.as_bytes()).unwrap(),
            ManifestRefs { blobs: vec![d("l"), d("c")], manifests: vec![d("s")] }
        );
        let index = format!(r#"{{"manifests":[{{"digest":"{}"}},{{"digest":"{}"}}]}}"#, d("a"), d("b"));
        assert_eq!(references(index.as_bytes()).unwrap().manifests, vec![d("a"), d("b")]);
        let v1 = format!(r#"{{"schemaVersion":1,"fsLayers":[{{"blobSum":"{}"}}]}}"#, d("x"));
        assert_eq!(references(v1.as_bytes()).unwrap().blobs, vec![d("x")]);
        assert!(references(b"not json").is_err());
        assert!(references(br#"{"layers":[{"digest":"sha256:nope"}]}"#).is_err());
    }
}
