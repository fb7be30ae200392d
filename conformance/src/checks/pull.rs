//! Pull workflow: `GET /v2/`, manifest GET/HEAD by tag and digest, blob GET/HEAD, Range
//! requests, and 404 MANIFEST_UNKNOWN / BLOB_UNKNOWN for unknown content.

use anyhow::bail;

use super::{expect_blob, expect_eq, expect_manifest};
use crate::content::{self, unknown_digest, ACCEPT_ALL};
use crate::{ops, Group};

pub async fn run(g: Group<'_>) {
    let c = g.client();
    let repo = g.ctx.repo("pull");
    let tag = "pull-v1";
    let image = content::oci_image(&content::ImageSpec::unique(), &[4096, 777]);

    g.check("base-api", async {
        let resp = c.get("/v2/").send().await?;
        resp.expect_status(200)
    })
    .await;

    let setup = g.check("setup", async { ops::push_manifest(c, &repo, Some(tag), &image).await.map(|_| ()) }).await;
    let ready = setup.map(|_| ());
    let manifests = format!("/v2/{repo}/manifests");
    let blobs = format!("/v2/{repo}/blobs");
    let layer = &image.blobs[1];

    g.check_with("manifest-get-by-tag", ready, "setup", |_| async {
        let resp = c.get(&format!("{manifests}/{tag}")).accept(ACCEPT_ALL).send().await?;
        expect_manifest(&resp, &image)
    })
    .await;
    g.check_with("manifest-get-by-digest", ready, "setup", |_| async {
        let resp = c.get(&format!("{manifests}/{}", image.digest)).accept(ACCEPT_ALL).send().await?;
        expect_manifest(&resp, &image)
    })
    .await;
    g.check_with("manifest-head-by-tag", ready, "setup", |_| async {
        let resp = c.head(&format!("{manifests}/{tag}")).accept(ACCEPT_ALL).send().await?;
        expect_manifest(&resp, &image)
    })
    .await;
    g.check_with("manifest-head-by-digest", ready, "setup", |_| async {
        let resp = c.head(&format!("{manifests}/{}", image.digest)).accept(ACCEPT_ALL).send().await?;
        expect_manifest(&resp, &image)
    })
    .await;
    g.check_with("blob-get", ready, "setup", |_| async {
        for b in &image.blobs {
            let resp = c.get(&format!("{blobs}/{}", b.digest)).send().await?;
            expect_blob(&resp, b)?;
        }
        Ok(())
    })
    .await;
    g.check_with("blob-head", ready, "setup", |_| async {
        let resp = c.head(&format!("{blobs}/{}", layer.digest)).send().await?;
        resp.expect_status(200)?;
        expect_eq("Content-Length", resp.require_header("content-length")?, layer.size().to_string().as_str())?;
        if let Some(d) = resp.header("docker-content-digest") {
            expect_eq("Docker-Content-Digest", d, layer.digest.as_str())?;
        }
        if !resp.body.is_empty() {
            bail!("HEAD response has a body");
        }
        Ok(())
    })
    .await;
    g.check_with("blob-range", ready, "setup", |_| async {
        let (start, end) = (100usize, 1123usize);
        let resp =
            c.get(&format!("{blobs}/{}", layer.digest)).header("Range", &format!("bytes={start}-{end}")).send().await?;
        resp.expect_status(206)?;
        let want_cr = format!("bytes {start}-{end}/{}", layer.size());
        expect_eq("Content-Range", resp.require_header("content-range")?, want_cr.as_str())?;
        if resp.body[..] != layer.data[start..=end] {
            bail!("range body differs from bytes {start}-{end} of the blob ({} bytes received)", resp.body.len());
        }
        Ok(())
    })
    .await;
    g.check("manifest-unknown-tag", async {
        let resp = c.get(&format!("{manifests}/nosuchtag-{}", content::rand_id(6))).accept(ACCEPT_ALL).send().await?;
        resp.expect_error(&[404], &["MANIFEST_UNKNOWN"])
    })
    .await;
    g.check("manifest-unknown-digest", async {
        let resp = c.get(&format!("{manifests}/{}", unknown_digest())).accept(ACCEPT_ALL).send().await?;
        resp.expect_error(&[404], &["MANIFEST_UNKNOWN"])
    })
    .await;
    g.check("manifest-head-unknown", async {
        let resp = c.head(&format!("{manifests}/{}", unknown_digest())).accept(ACCEPT_ALL).send().await?;
        resp.expect_status(404)
    })
    .await;
    g.check("blob-unknown", async {
        let resp = c.get(&format!("{blobs}/{}", unknown_digest())).send().await?;
        resp.expect_error(&[404], &["BLOB_UNKNOWN"])
    })
    .await;
    g.check("blob-head-unknown", async {
        let resp = c.head(&format!("{blobs}/{}", unknown_digest())).send().await?;
        resp.expect_status(404)
    })
    .await;
}
