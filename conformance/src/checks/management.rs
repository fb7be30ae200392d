//! Content management: deleting tags (manifest stays reachable by digest), manifests by digest,
//! and blobs, plus 404s for deleting unknown content.

use anyhow::{bail, Context as _};

use super::expect_eq;
use crate::content::{self, Blob, ACCEPT_ALL, OCI_LAYER};
use crate::{ops, Group};

pub async fn run(g: Group<'_>) {
    let c = g.client();
    let repo = g.ctx.repo("manage");
    let repo = repo.as_str();
    let image = content::small_image();
    let image = &image;
    let other = content::small_image();
    let other = &other;
    let manifest_url = |r: &str| format!("/v2/{repo}/manifests/{r}");

    let setup = g
        .check("setup", async {
            ops::push_manifest(c, repo, Some("keep"), image).await?;
            ops::put_manifest(c, repo, "drop", image).await?.expect_status(201).context("second tag")?;
            ops::push_manifest(c, repo, Some("other"), other).await?;
            Ok(())
        })
        .await;

    let deleted_tag = g
        .check_with("delete-tag", setup, "setup", |_| async move {
            let resp = c.delete(&manifest_url("drop")).send().await?;
            resp.expect_status(202)
        })
        .await;
    g.check_with("delete-tag-gone", deleted_tag, "delete-tag", |_| async move {
        let tags = ops::list_tags(c, repo).await?;
        if tags.iter().any(|t| t == "drop") {
            bail!("deleted tag still listed: {tags:?}");
        }
        if !tags.iter().any(|t| t == "keep") {
            bail!("deleting tag `drop` also removed tag `keep`: {tags:?}");
        }
        let resp = c.get(&manifest_url("drop")).accept(ACCEPT_ALL).send().await?;
        resp.expect_error(&[404], &["MANIFEST_UNKNOWN"]).context("GET deleted tag")
    })
    .await;
    g.check_with("delete-tag-keeps-manifest", deleted_tag, "delete-tag", |_| async move {
        let resp = c.get(&manifest_url(&image.digest)).accept(ACCEPT_ALL).send().await?;
        resp.expect_status(200).context("GET by digest after deleting a tag")?;
        if resp.body != image.body {
            bail!("manifest bytes changed");
        }
        Ok(())
    })
    .await;

    let deleted = g
        .check_with("delete-manifest-by-digest", setup, "setup", |_| async move {
            let resp = c.delete(&manifest_url(&other.digest)).send().await?;
            resp.expect_status(202)
        })
        .await;
    g.check_with("delete-manifest-gone", deleted, "delete-manifest-by-digest", |_| async move {
        let resp = c.get(&manifest_url(&other.digest)).accept(ACCEPT_ALL).send().await?;
        resp.expect_error(&[404], &["MANIFEST_UNKNOWN"])?;
        let head = c.head(&manifest_url(&other.digest)).accept(ACCEPT_ALL).send().await?;
        expect_eq("HEAD status after delete", &head.status, &404)
    })
    .await;

    let blob = Blob::random(2048, OCI_LAYER);
    let blob = &blob;
    let blob_url = format!("/v2/{repo}/blobs/{}", blob.digest);
    let blob_url = blob_url.as_str();
    let deleted_blob = g
        .check("delete-blob", async {
            ops::push_blob(c, repo, blob).await.context("setup")?;
            let resp = c.delete(blob_url).send().await?;
            resp.expect_status(202)
        })
        .await;
    g.check_with("delete-blob-gone", deleted_blob, "delete-blob", |_| async move {
        let resp = c.get(blob_url).send().await?;
        resp.expect_error(&[404], &["BLOB_UNKNOWN"])
    })
    .await;

    g.check("delete-unknown-manifest", async {
        let resp = c.delete(&manifest_url(&content::unknown_digest())).send().await?;
        resp.expect_error(&[404], &["MANIFEST_UNKNOWN"])
    })
    .await;
    g.check("delete-unknown-blob", async {
        let resp = c.delete(&format!("/v2/{repo}/blobs/{}", content::unknown_digest())).send().await?;
        resp.expect_error(&[404], &["BLOB_UNKNOWN"])
    })
    .await;
}
