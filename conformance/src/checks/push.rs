//! Push workflow: POST+PUT, single-POST and streamed uploads, chunked PATCH uploads (Range,
//! status, 416 on out-of-order chunks), cancel, digest mismatch, cross-repo mount, and manifest
//! PUTs (tag/digest, missing blob, sha512, 4 MiB, OCI index, Docker list and schema2).

use anyhow::{bail, Context as _};
use url::Url;

use super::{expect_blob, expect_blob_created, expect_eq, expect_manifest, expect_manifest_created};
use crate::client::{Client, Response};
use crate::content::{self, random_bytes, Blob, ImageSpec, Manifest, ACCEPT_ALL, OCI_LAYER};
use crate::{ops, Group};

/// A registry-advertised minimum chunk size is honoured up to this many bytes.
const MAX_CHUNK: usize = 16 * 1024 * 1024;

pub async fn run(g: Group<'_>) {
    let c = g.client();
    let repo = g.ctx.repo("push");
    let repo = repo.as_str();
    let uploads = format!("/v2/{repo}/blobs/uploads/");
    let uploads = uploads.as_str();

    g.check("post-put-upload", async {
        let blob = Blob::random(3000, OCI_LAYER);
        let post = c.post(uploads).send().await?;
        post.expect_status(202).context("POST upload")?;
        let loc = post.location()?;
        let put = c
            .put(loc.as_str())
            .query("digest", &blob.digest)
            .content_type("application/octet-stream")
            .body(blob.data.clone())
            .send()
            .await?;
        expect_blob_created(&put, &blob.digest).context("PUT upload")?;
        expect_blob(&get_blob(c, repo, &blob.digest).await?, &blob)
    })
    .await;

    g.check("monolithic-post", async {
        let blob = Blob::random(2000, OCI_LAYER);
        let post = c
            .post(uploads)
            .query("digest", &blob.digest)
            .content_type("application/octet-stream")
            .body(blob.data.clone())
            .send()
            .await?;
        if post.status == 202 {
            bail!("registry answered 202 (no single-POST upload support), want 201");
        }
        expect_blob_created(&post, &blob.digest)?;
        expect_blob(&get_blob(c, repo, &blob.digest).await?, &blob)
    })
    .await;

    g.check("streamed-patch", async {
        let blob = Blob::random(5000, OCI_LAYER);
        let post = c.post(uploads).send().await?;
        post.expect_status(202).context("POST upload")?;
        let patch = c
            .patch(post.location()?.as_str())
            .content_type("application/octet-stream")
            .body(blob.data.clone())
            .send()
            .await?;
        patch.expect_status(202).context("PATCH without Content-Range")?;
        let put = c.put(patch.location()?.as_str()).query("digest", &blob.digest).send().await?;
        expect_blob_created(&put, &blob.digest).context("closing PUT")?;
        expect_blob(&get_blob(c, repo, &blob.digest).await?, &blob)
    })
    .await;

    chunked(g, c, repo, uploads).await;

    g.check("upload-cancel", async {
        let post = c.post(uploads).send().await?;
        post.expect_status(202).context("POST upload")?;
        let loc = post.location()?;
        let chunk = random_bytes(100);
        let patch = patch_chunk(c, &loc, &chunk, 0).await?;
        patch.expect_status(202).context("PATCH")?;
        let loc = patch.location()?;
        let del = c.delete(loc.as_str()).send().await?;
        del.expect_status(204).context("DELETE upload")?;
        let status = c.get(loc.as_str()).send().await?;
        status.expect_error(&[404], &["BLOB_UPLOAD_UNKNOWN"]).context("upload status after cancel")
    })
    .await;

    g.check("digest-mismatch", async {
        let real = Blob::random(1500, OCI_LAYER);
        let claimed = content::sha256(&random_bytes(1500));
        let post = c.post(uploads).send().await?;
        post.expect_status(202).context("POST upload")?;
        let put = c
            .put(post.location()?.as_str())
            .query("digest", &claimed)
            .content_type("application/octet-stream")
            .body(real.data.clone())
            .send()
            .await?;
        put.expect_error(&[400], &["DIGEST_INVALID"])?;
        for d in [&claimed, &real.digest] {
            let head = c.head(&format!("/v2/{repo}/blobs/{d}")).send().await?;
            if head.status != 404 {
                bail!("blob {d} visible after rejected upload: {}", head.describe());
            }
        }
        Ok(())
    })
    .await;

    let mount_repo = g.ctx.repo("push-mount");
    let mount_repo = mount_repo.as_str();
    g.check("mount", async {
        let blob = Blob::random(2500, OCI_LAYER);
        ops::push_blob(c, repo, &blob).await.context("setup: pushing blob to source repo")?;
        let post = c
            .post(&format!("/v2/{mount_repo}/blobs/uploads/"))
            .query("mount", &blob.digest)
            .query("from", repo)
            .send()
            .await?;
        expect_blob_created(&post, &blob.digest)?;
        expect_blob(&get_blob(c, mount_repo, &blob.digest).await?, &blob).context("GET mounted blob")
    })
    .await;

    g.check("mount-fallback", async {
        let blob = Blob::random(1200, OCI_LAYER);
        let post = c
            .post(&format!("/v2/{mount_repo}/blobs/uploads/"))
            .query("mount", &blob.digest)
            .query("from", repo)
            .send()
            .await?;
        post.expect_status(202).context("mount of a blob the source lacks")?;
        let put = c
            .put(post.location()?.as_str())
            .query("digest", &blob.digest)
            .content_type("application/octet-stream")
            .body(blob.data.clone())
            .send()
            .await?;
        expect_blob_created(&put, &blob.digest).context("completing the fallback upload session")?;
        expect_blob(&get_blob(c, mount_repo, &blob.digest).await?, &blob)
    })
    .await;

    g.check("manifest-put-by-tag", async {
        let m = content::small_image();
        ops::push_content(c, repo, &m).await.context("setup")?;
        let resp = ops::put_manifest(c, repo, "by-tag", &m).await?;
        expect_manifest_created(&resp, &m.digest)?;
        let get = c.get(&format!("/v2/{repo}/manifests/by-tag")).accept(ACCEPT_ALL).send().await?;
        expect_manifest(&get, &m)
    })
    .await;

    g.check("manifest-put-by-digest", async {
        let m = content::small_image();
        ops::push_content(c, repo, &m).await.context("setup")?;
        let resp = ops::put_manifest(c, repo, &m.digest, &m).await?;
        expect_manifest_created(&resp, &m.digest)?;
        let get = c.get(&format!("/v2/{repo}/manifests/{}", m.digest)).accept(ACCEPT_ALL).send().await?;
        expect_manifest(&get, &m)
    })
    .await;

    g.check("manifest-blob-unknown", async {
        let m = content::small_image();
        // Push only the config: the layer stays unknown to the registry.
        ops::push_blob(c, repo, &m.blobs[0]).await.context("setup")?;
        let resp = ops::put_manifest(c, repo, "missing-blob", &m).await?;
        resp.expect_error(&[400], &["MANIFEST_BLOB_UNKNOWN"])?;
        let get = c.head(&format!("/v2/{repo}/manifests/{}", m.digest)).accept(ACCEPT_ALL).send().await?;
        if get.status != 404 {
            bail!("rejected manifest is visible: {}", get.describe());
        }
        Ok(())
    })
    .await;

    g.check("blob-sha512", async {
        let blob = Blob::random(3333, OCI_LAYER).with_sha512();
        let post = c.post(uploads).send().await?;
        post.expect_status(202).context("POST upload")?;
        let put = c
            .put(post.location()?.as_str())
            .query("digest", &blob.digest)
            .content_type("application/octet-stream")
            .body(blob.data.clone())
            .send()
            .await?;
        put.expect_status(201).context("PUT with sha512 digest")?;
        put.location()?;
        let dcd = put.require_header("docker-content-digest")?;
        if dcd != blob.digest && dcd != content::sha256(&blob.data) {
            bail!("Docker-Content-Digest {dcd} names neither the sha512 nor the sha256 of the blob");
        }
        expect_blob(&get_blob(c, repo, &blob.digest).await?, &blob).context("GET by sha512 digest")
    })
    .await;

    g.check("manifest-sha512-layer", async {
        let layer = Blob::random(2222, OCI_LAYER).with_sha512();
        let m = content::oci_image_from(&ImageSpec::unique(), vec![layer]);
        ops::push_content(c, repo, &m).await.context("setup: pushing sha512 layer")?;
        let resp = ops::put_manifest(c, repo, "sha512-layer", &m).await?;
        expect_manifest_created(&resp, &m.digest)
    })
    .await;

    g.check("manifest-put-sha512-reference", async {
        let m = content::small_image().with_sha512();
        ops::push_content(c, repo, &m).await.context("setup")?;
        let resp = ops::put_manifest(c, repo, &m.digest, &m).await?;
        expect_manifest_created(&resp, &m.digest)?;
        let get = c.get(&format!("/v2/{repo}/manifests/{}", m.digest)).accept(ACCEPT_ALL).send().await?;
        get.expect_status(200).context("GET by sha512 reference")?;
        if get.body != m.body {
            bail!("GET by sha512 reference returned different bytes");
        }
        Ok(())
    })
    .await;

    g.check("manifest-4mib", async {
        let base = content::small_image();
        ops::push_content(c, repo, &base).await.context("setup")?;
        let m = content::padded_manifest(&base, 4 * 1024 * 1024);
        let resp = ops::put_manifest(c, repo, "big", &m).await?;
        expect_manifest_created(&resp, &m.digest).context("PUT of a 4 MiB manifest")?;
        let get = c.get(&format!("/v2/{repo}/manifests/{}", m.digest)).accept(ACCEPT_ALL).send().await?;
        expect_manifest(&get, &m)
    })
    .await;

    g.check("oci-index", async { push_and_get(c, repo, "index", &content::oci_index()).await }).await;
    g.check("docker-manifest-list", async { push_and_get(c, repo, "list", &content::docker_list()).await }).await;
    g.check("docker-schema2", async {
        push_and_get(c, repo, "schema2", &content::docker_image(&ImageSpec::unique(), &[1500, 600])).await
    })
    .await;
}

/// Pushes children/blobs, PUTs `m` at `tag`, then GETs it back by tag and digest.
async fn push_and_get(c: &Client, repo: &str, tag: &str, m: &Manifest) -> anyhow::Result<()> {
    ops::push_content(c, repo, m).await.context("setup: pushing referenced content")?;
    let resp = ops::put_manifest(c, repo, tag, m).await?;
    expect_manifest_created(&resp, &m.digest)?;
    for reference in [tag, m.digest.as_str()] {
        let get = c.get(&format!("/v2/{repo}/manifests/{reference}")).accept(&m.media_type).send().await?;
        expect_manifest(&get, m).with_context(|| format!("GET {reference}"))?;
    }
    Ok(())
}

async fn get_blob(c: &Client, repo: &str, digest: &str) -> anyhow::Result<Response> {
    c.get(&format!("/v2/{repo}/blobs/{digest}")).send().await
}

/// PATCHes `chunk` at `offset` with Content-Range/Content-Length.
async fn patch_chunk(c: &Client, loc: &Url, chunk: &[u8], offset: usize) -> anyhow::Result<Response> {
    let range = format!("{offset}-{}", offset + chunk.len() - 1);
    c.patch(loc.as_str())
        .content_type("application/octet-stream")
        .header("Content-Range", &range)
        .header("Content-Length", &chunk.len().to_string())
        .body(chunk.to_vec())
        .send()
        .await
}

/// A 202 chunk response with Location and `Range: 0-<end>`; returns the next Location.
fn expect_chunk_accepted(resp: &Response, end: usize) -> anyhow::Result<Url> {
    resp.expect_status(202)?;
    let loc = resp.location()?;
    expect_eq("Range", resp.require_header("range")?, format!("0-{end}").as_str())?;
    Ok(loc)
}

/// Starts an upload and returns (Location, chunk size honouring OCI-Chunk-Min-Length).
async fn start_chunked(c: &Client, uploads: &str) -> anyhow::Result<(Url, usize)> {
    let post = c.post(uploads).header("Content-Length", "0").send().await?;
    post.expect_status(202).context("POST upload")?;
    let min = post.header("oci-chunk-min-length").and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(0);
    Ok((post.location()?, min.clamp(4096, MAX_CHUNK)))
}

async fn chunked(g: Group<'_>, c: &Client, repo: &str, uploads: &str) {
    // Scenario 1: two PATCHed chunks, a status GET in between, closed by a bodiless PUT.
    let started = g
        .check("chunked-first-patch", async {
            let (loc, size) = start_chunked(c, uploads).await?;
            let blob = Blob::random(size * 2 + size / 2, OCI_LAYER);
            let resp = patch_chunk(c, &loc, &blob.data[..size], 0).await?;
            let loc = expect_chunk_accepted(&resp, size - 1)?;
            Ok((loc, size, blob))
        })
        .await;
    let status = g
        .check_with("chunked-status", started, "chunked-first-patch", |(loc, size, blob)| async move {
            let resp = c.get(loc.as_str()).send().await?;
            resp.expect_status(204)?;
            expect_eq("Range", resp.require_header("range")?, format!("0-{}", size - 1).as_str())?;
            let loc = resp.location()?;
            Ok((loc, size, blob))
        })
        .await;
    let second = g
        .check_with("chunked-second-patch", status, "chunked-status", |(loc, size, blob)| async move {
            let resp = patch_chunk(c, &loc, &blob.data[size..], size).await?;
            let loc = expect_chunk_accepted(&resp, blob.size() - 1)?;
            Ok((loc, blob))
        })
        .await;
    g.check_with("chunked-put-without-body", second, "chunked-second-patch", |(loc, blob)| async move {
        let put = c.put(loc.as_str()).query("digest", &blob.digest).send().await?;
        expect_blob_created(&put, &blob.digest)?;
        expect_blob(&get_blob(c, repo, &blob.digest).await?, &blob)
    })
    .await;

    // Scenario 2: the final chunk travels in the closing PUT.
    g.check("chunked-put-final-chunk", async {
        let (loc, size) = start_chunked(c, uploads).await?;
        let blob = Blob::random(size + size / 3, OCI_LAYER);
        let resp = patch_chunk(c, &loc, &blob.data[..size], 0).await?;
        let loc = expect_chunk_accepted(&resp, size - 1).context("first PATCH")?;
        let rest = &blob.data[size..];
        let put = c
            .put(loc.as_str())
            .query("digest", &blob.digest)
            .content_type("application/octet-stream")
            .header("Content-Range", &format!("{size}-{}", blob.size() - 1))
            .header("Content-Length", &rest.len().to_string())
            .body(rest.to_vec())
            .send()
            .await?;
        expect_blob_created(&put, &blob.digest).context("PUT with final chunk")?;
        expect_blob(&get_blob(c, repo, &blob.digest).await?, &blob)
    })
    .await;

    g.check("chunked-out-of-order", async {
        let (loc, size) = start_chunked(c, uploads).await?;
        let data = random_bytes(size * 2);
        let resp = patch_chunk(c, &loc, &data[size..], size).await?;
        resp.expect_status(416).context("PATCH of a second chunk first")
    })
    .await;

    g.check("chunked-repeated-chunk", async {
        let (loc, size) = start_chunked(c, uploads).await?;
        let data = random_bytes(size * 2);
        let resp = patch_chunk(c, &loc, &data[..size], 0).await?;
        let loc = expect_chunk_accepted(&resp, size - 1).context("first PATCH")?;
        let again = patch_chunk(c, &loc, &data[..size], 0).await?;
        again.expect_status(416).context("repeating the first chunk")?;
        let status = c.get(loc.as_str()).send().await?;
        status.expect_status(204).context("status after 416")?;
        expect_eq("Range after 416", status.require_header("range")?, format!("0-{}", size - 1).as_str())
    })
    .await;
}
