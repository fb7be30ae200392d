//! `tributary adm registries-conf` (a `containers-registries.conf(5)` file from the registry's image policy
//! objects, read through the API) and `tributary adm migrate icsp FILE…` (ImageContentSourcePolicy YAML rewritten
//! as ImageDigestMirrorSet YAML, as `oc adm migrate icsp` does). Called by `cli`; calls the API and
//! [`registry::imagepolicy`].

use std::path::{Path, PathBuf};

use anyhow::Context;
use registry::imagepolicy::model::{Kind, Object};
use registry::imagepolicy::{registries_conf, Policy};
use serde::Deserialize;
use serde_json::{json, Value};

use super::client::Client;

/// Every policy object the registry holds, read through the API.
async fn objects(client: &Client) -> anyhow::Result<Vec<(Kind, Object)>> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        let path = format!("/apis/{}/{}/{}", kind.group(), kind.version(), kind.resource());
        let list = client.get_path(&path).await.with_context(|| format!("listing {}", kind.qualified()))?;
        for item in list["items"].as_array().into_iter().flatten() {
            out.push((kind, serde_json::from_value(item.clone())?));
        }
    }
    Ok(out)
}

/// Writes registries.conf for the registry's policy to `output` (stdout when `None`).
pub async fn registries_conf(client: &Client, output: Option<&Path>) -> anyhow::Result<()> {
    let text = registries_conf::render(&Policy::from_objects(&objects(client).await?));
    match output {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// The ImageDigestMirrorSet an ImageContentSourcePolicy document becomes: the API version and kind changed,
/// `spec.repositoryDigestMirrors` renamed `spec.imageDigestMirrors`, the rest as it was.
pub fn icsp_to_idms(doc: &Value) -> anyhow::Result<Value> {
    let kind = doc["kind"].as_str().unwrap_or_default();
    anyhow::ensure!(kind == "ImageContentSourcePolicy", "not an ImageContentSourcePolicy (kind {kind:?})");
    let mut out = doc.clone();
    out["apiVersion"] = json!("config.openshift.io/v1");
    out["kind"] = json!("ImageDigestMirrorSet");
    if let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut) {
        if let Some(mirrors) = spec.remove("repositoryDigestMirrors") {
            spec.insert("imageDigestMirrors".into(), mirrors);
        }
    }
    Ok(out)
}

/// Converts every ImageContentSourcePolicy in `files` (YAML, several documents each allowed) and writes each as
/// `imagedigestmirrorset_<name>.<n>.yaml` under `dest`.
pub fn migrate_icsp(files: &[PathBuf], dest: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    for file in files {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for document in serde_norway::Deserializer::from_str(&text) {
            let doc = Value::deserialize(document).with_context(|| format!("{}: not YAML", file.display()))?;
            if doc.is_null() {
                continue;
            }
            let idms = icsp_to_idms(&doc).with_context(|| file.display().to_string())?;
            let name = idms["metadata"]["name"].as_str().unwrap_or("unnamed");
            let unique = uuid::Uuid::new_v4().as_u128() % 10_u128.pow(19);
            let path = dest.join(format!("imagedigestmirrorset_{name}.{unique}.yaml"));
            std::fs::write(&path, super::yaml::to_yaml(&idms))
                .with_context(|| format!("writing {}", path.display()))?;
            println!("wrote ImageDigestMirrorSet to {}", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icsp_becomes_idms() {
        let icsp: Value = serde_norway::from_str(
            "apiVersion: operator.openshift.io/v1alpha1\nkind: ImageContentSourcePolicy\nmetadata:\n  name: ubi8repo\n\
             spec:\n  repositoryDigestMirrors:\n  - mirrors:\n    - example.io/example/ubi-minimal\n    source: registry.access.redhat.com/ubi8/ubi-minimal\n",
        )
        .unwrap();
        let idms = icsp_to_idms(&icsp).unwrap();
        assert_eq!(idms["apiVersion"], "config.openshift.io/v1");
        assert_eq!(idms["kind"], "ImageDigestMirrorSet");
        assert_eq!(idms["metadata"]["name"], "ubi8repo");
        assert_eq!(idms["spec"]["imageDigestMirrors"][0]["mirrors"][0], "example.io/example/ubi-minimal");
        assert!(idms["spec"].get("repositoryDigestMirrors").is_none());
        let back: Value = serde_norway::from_str(&crate::cli::yaml::to_yaml(&idms)).unwrap();
        assert_eq!(back, idms, "the YAML written reads back the same");
        assert!(icsp_to_idms(&json!({"kind": "ImageStream"})).is_err());
    }
}
