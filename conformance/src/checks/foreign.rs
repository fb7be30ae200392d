//! Manifests whose layers live elsewhere: OCI non-distributable layers (`…layer.nondistributable.v1.tar`,
//! `+gzip`, `+zstd`) and Docker foreign layers (Windows base images), each with `urls` and never pushed. The
//! registry accepts such a manifest without those blobs, serves it by tag and digest (GET and HEAD), lists its tag,
//! and answers 404 for the absent layer itself.

use anyhow::Context as _;
use serde_json::{json, Value};

use super::{expect_eq, expect_manifest, expect_manifest_created};
use crate::content::{self, Blob, ImageSpec, Manifest, DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, OCI_CONFIG};
use crate::content::{ACCEPT_ALL, OCI_LAYER, OCI_MANIFEST};
use crate::{ops, Group};

/// The OCI non-distributable layer media types.
pub const NONDISTRIBUTABLE: [&str; 3] = [
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

/// Docker's foreign layer media type.
pub const DOCKER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// An image whose config and `pushed` layer are pushed as usual and whose `absent` layers are described only.
struct Image {
    manifest: Manifest,
    absent: Vec<String>,
}

/// The descriptor of a layer that is never pushed: random digest and size, with `urls`.
fn absent_layer(media_type: &str) -> (Value, String) {
    let digest = content::sha256(&content::random_bytes(32));
    let url = format!("https://layers.example.com/blobs/{digest}");
    (json!({"mediaType": media_type, "digest": digest, "size": 12345, "urls": [url]}), digest)
}

fn image(manifest_type: &str, config_type: &str, layer_type: &str, absent_types: &[&str]) -> Image {
    let pushed = Blob::random(512, layer_type);
    let config = content::image_config(&ImageSpec::unique(), std::slice::from_ref(&pushed), config_type);
    let (absent_descriptors, absent): (Vec<Value>, Vec<String>) = absent_types.iter().map(|t| absent_layer(t)).unzip();
    let mut layers = absent_descriptors;
    layers.push(pushed.descriptor());
    let v = json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": config.descriptor(),
        "layers": layers,
    });
    Image { manifest: Manifest::from_value(&v, manifest_type, vec![config, pushed], vec![]), absent }
}

pub async fn run(g: Group<'_>) {
    let c = g.client();
    let oci = image(OCI_MANIFEST, OCI_CONFIG, OCI_LAYER, &NONDISTRIBUTABLE);
    let docker = image(DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER, &[DOCKER_FOREIGN]);
    for (prefix, img) in [("nondistributable", &oci), ("docker-foreign", &docker)] {
        let repo = g.ctx.repo(prefix);
        let repo = repo.as_str();
        let m = &img.manifest;
        let pushed = g
            .check(&format!("{prefix}-put"), async {
                ops::push_content(c, repo, m).await.context("pushing config and the distributable layer")?;
                let resp = ops::put_manifest(c, repo, "v1", m).await?;
                expect_manifest_created(&resp, &m.digest)
            })
            .await;
        let what = format!("{prefix}-put");
        for (check, reference, head) in
            [("get-by-tag", "v1", false), ("get-by-digest", m.digest.as_str(), false), ("head-by-tag", "v1", true)]
        {
            g.check_with(&format!("{prefix}-{check}"), pushed, &what, |_| async move {
                let path = format!("/v2/{repo}/manifests/{reference}");
                let req = if head { c.head(&path) } else { c.get(&path) };
                expect_manifest(&req.accept(ACCEPT_ALL).send().await?, m)
            })
            .await;
        }
        g.check_with(&format!("{prefix}-tags-list"), pushed, &what, |_| async move {
            expect_eq("tags", ops::list_tags(c, repo).await?, vec!["v1".to_string()])
        })
        .await;
        g.check_with(&format!("{prefix}-absent-layer-404"), pushed, &what, |_| async move {
            for digest in &img.absent {
                let path = format!("/v2/{repo}/blobs/{digest}");
                c.get(&path).send().await?.expect_error(&[404], &["BLOB_UNKNOWN"]).context("GET")?;
                c.head(&path).send().await?.expect_status(404).context("HEAD")?;
            }
            Ok(())
        })
        .await;
    }
}
