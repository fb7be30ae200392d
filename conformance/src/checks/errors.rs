//! Error semantics: invalid repository names, invalid/mismatched digests, malformed manifests
//! malformed manifest references (404 to read, 400 to write) and unknown upload sessions, each with a JSON `{"errors":[{code,message}]}` body.

use anyhow::Context as _;

use crate::content::{self, random_bytes, Blob, Manifest, ACCEPT_ALL, OCI_LAYER, OCI_MANIFEST};
use crate::{ops, Group};

pub async fn run(g: Group<'_>) {
    let c = g.client();
    let repo = g.ctx.repo("errors");
    let repo = repo.as_str();
    let bad_repo = format!("{}/Bad{}", g.ctx.config.namespace, content::rand_id(6).to_uppercase());
    let bad_repo = bad_repo.as_str();

    g.check("name-invalid-upload", async {
        let resp = c.post(&format!("/v2/{bad_repo}/blobs/uploads/")).send().await?;
        resp.expect_error(&[400, 404], &["NAME_INVALID", "NAME_UNKNOWN"])?;
        name_code_matches_status(&resp)
    })
    .await;
    g.check("name-invalid-manifest", async {
        let m = content::small_image();
        let resp = ops::put_manifest(c, bad_repo, "v1", &m).await?;
        resp.expect_error(&[400, 404], &["NAME_INVALID", "NAME_UNKNOWN"])?;
        name_code_matches_status(&resp)
    })
    .await;

    let setup = g
        .check("setup", async {
            ops::push_blob(c, repo, &Blob::random(256, OCI_LAYER)).await.context("creating repository")
        })
        .await;

    g.check("digest-invalid", async {
        let post = ops::start_upload(c, repo).await?;
        post.expect_status(202).context("POST upload")?;
        let put = c
            .put(post.location()?.as_str())
            .query("digest", "sha256:not-a-valid-digest")
            .content_type("application/octet-stream")
            .body(random_bytes(64))
            .send()
            .await?;
        put.expect_error(&[400], &["DIGEST_INVALID"])
    })
    .await;
    g.check("manifest-digest-mismatch", async {
        let m = content::small_image();
        ops::push_content(c, repo, &m).await.context("setup")?;
        let wrong = content::unknown_digest();
        let resp = ops::put_manifest(c, repo, &wrong, &m).await?;
        resp.expect_error(&[400], &["DIGEST_INVALID"])
    })
    .await;
    g.check("manifest-invalid-json", async {
        let m = raw_manifest(b"{\"schemaVersion\": 2, \"mediaType\": ");
        let resp = ops::put_manifest(c, repo, "broken", &m).await?;
        resp.expect_error(&[400], &["MANIFEST_INVALID"])
    })
    .await;
    g.check("manifest-invalid-schema", async {
        let body = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":"nope","layers":{{}}}}"#);
        let resp = ops::put_manifest(c, repo, "malformed", &raw_manifest(body.as_bytes())).await?;
        resp.expect_error(&[400], &["MANIFEST_INVALID"])
    })
    .await;

    // A reference no manifest can have: reading it is asking for an unknown manifest (404), writing it is a bad
    // tag (400), as distribution answers and the official suites check.
    let invalid = format!("/v2/{repo}/manifests/.INVALID_MANIFEST_NAME");
    let invalid = invalid.as_str();
    g.check_with("manifest-get-invalid-reference", setup, "setup", |_| async move {
        c.get(invalid).accept(ACCEPT_ALL).send().await?.expect_error(&[404], &["MANIFEST_UNKNOWN"])
    })
    .await;
    g.check_with("manifest-head-invalid-reference", setup, "setup", |_| async move {
        c.head(invalid).accept(ACCEPT_ALL).send().await?.expect_status(404)
    })
    .await;
    g.check_with("manifest-put-invalid-tag", setup, "setup", |_| async move {
        let m = content::small_image();
        ops::push_content(c, repo, &m).await.context("pushing the image's blobs")?;
        let resp = ops::put_manifest(c, repo, ".INVALID_MANIFEST_NAME", &m).await?;
        resp.expect_error(&[400], &["TAG_INVALID", "MANIFEST_INVALID"])
    })
    .await;

    let unknown = format!("/v2/{repo}/blobs/uploads/{}", uuid::Uuid::new_v4());
    let unknown = unknown.as_str();
    g.check_with("upload-unknown-get", setup, "setup", |_| async move {
        c.get(unknown).send().await?.expect_error(&[404], &["BLOB_UPLOAD_UNKNOWN"])
    })
    .await;
    g.check_with("upload-unknown-patch", setup, "setup", |_| async move {
        let resp = c
            .patch(unknown)
            .content_type("application/octet-stream")
            .header("Content-Range", "0-15")
            .body(random_bytes(16))
            .send()
            .await?;
        resp.expect_error(&[404], &["BLOB_UPLOAD_UNKNOWN"])
    })
    .await;
    g.check_with("upload-unknown-put", setup, "setup", |_| async move {
        let data = random_bytes(16);
        let resp = c
            .put(unknown)
            .query("digest", &content::sha256(&data))
            .content_type("application/octet-stream")
            .body(data)
            .send()
            .await?;
        resp.expect_error(&[404], &["BLOB_UPLOAD_UNKNOWN"])
    })
    .await;
}

/// NAME_INVALID goes with 400 and NAME_UNKNOWN with 404.
fn name_code_matches_status(resp: &crate::client::Response) -> anyhow::Result<()> {
    let codes = resp.error_body()?.codes;
    let want = if resp.status == 400 { "NAME_INVALID" } else { "NAME_UNKNOWN" };
    if !codes.iter().any(|c| c == want) {
        anyhow::bail!("status {} carries {codes:?}, want {want}", resp.status);
    }
    Ok(())
}

fn raw_manifest(body: &[u8]) -> Manifest {
    Manifest {
        body: bytes::Bytes::copy_from_slice(body),
        digest: content::sha256(body),
        media_type: OCI_MANIFEST.to_string(),
        blobs: vec![],
        children: vec![],
        artifact_type: None,
        annotations: serde_json::Value::Null,
    }
}
