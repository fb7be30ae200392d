//! Building-block registry operations used by check setup: uploading blobs, pushing manifests
//! (with their blobs and children), listing tags and walking `Link` pagination.

use anyhow::{anyhow, bail, Context as _};
use serde_json::Value;

use crate::client::{Client, Response};
use crate::content::{Blob, Manifest};

/// Starts an upload session; returns the POST response (expected 202 with `Location`).
pub async fn start_upload(c: &Client, repo: &str) -> anyhow::Result<Response> {
    c.post(&format!("/v2/{repo}/blobs/uploads/")).send().await
}

/// Uploads a blob with POST + monolithic PUT, addressed by `blob.digest`.
pub async fn push_blob(c: &Client, repo: &str, blob: &Blob) -> anyhow::Result<()> {
    let post = start_upload(c, repo).await?;
    post.expect_status(202).context("starting blob upload")?;
    let loc = post.location()?;
    let put = c
        .put(loc.as_str())
        .query("digest", &blob.digest)
        .content_type("application/octet-stream")
        .body(blob.data.clone())
        .send()
        .await?;
    put.expect_status(201).with_context(|| format!("uploading blob {}", blob.digest))
}

/// PUTs a manifest body at `reference` (tag or digest) without pushing its content.
pub async fn put_manifest(c: &Client, repo: &str, reference: &str, m: &Manifest) -> anyhow::Result<Response> {
    c.put(&format!("/v2/{repo}/manifests/{reference}")).content_type(&m.media_type).body(m.body.clone()).send().await
}

/// Pushes a manifest's blobs and children (children by digest), then the manifest itself at
/// `reference` (its digest when `None`), expecting 201.
pub async fn push_manifest(c: &Client, repo: &str, reference: Option<&str>, m: &Manifest) -> anyhow::Result<Response> {
    push_content(c, repo, m).await?;
    let reference = reference.unwrap_or(&m.digest);
    let resp = put_manifest(c, repo, reference, m).await?;
    resp.expect_status(201).with_context(|| format!("pushing manifest {} as {reference}", m.digest))?;
    Ok(resp)
}

/// Pushes what a manifest references: its blobs, then its children (recursively).
pub fn push_content<'a>(
    c: &'a Client,
    repo: &'a str,
    m: &'a Manifest,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send + 'a>> {
    Box::pin(async move {
        for b in &m.blobs {
            push_blob(c, repo, b).await?;
        }
        for child in &m.children {
            push_manifest(c, repo, None, child).await?;
        }
        Ok(())
    })
}

/// `GET /v2/<repo>/tags/list` (all tags, no pagination parameters).
pub async fn list_tags(c: &Client, repo: &str) -> anyhow::Result<Vec<String>> {
    let resp = c.get(&format!("/v2/{repo}/tags/list")).send().await?;
    resp.expect_status(200).context("listing tags")?;
    tags_of(&resp)
}

/// The `tags` array of a tags-list response (`null` counts as empty).
pub fn tags_of(resp: &Response) -> anyhow::Result<Vec<String>> {
    let v = resp.json()?;
    string_array(&v, "tags")
}

/// A string array field (`null`/missing = empty).
pub fn string_array(v: &Value, field: &str) -> anyhow::Result<Vec<String>> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| t.as_str().map(str::to_string).ok_or_else(|| anyhow!("non-string entry in `{field}`: {t}")))
            .collect(),
        Some(other) => bail!("`{field}` is not an array: {other}"),
    }
}

/// The target of a `Link: <…>; rel="next"` header, resolved against the response URL.
pub fn next_link(resp: &Response) -> anyhow::Result<Option<url::Url>> {
    let Some(link) = resp.header("link") else { return Ok(None) };
    for part in link.split(',') {
        let part = part.trim();
        let Some((target, params)) = part.strip_prefix('<').and_then(|p| p.split_once('>')) else { continue };
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        if is_next {
            return resp.url.join(target).map(Some).with_context(|| format!("bad Link target {target:?}"));
        }
    }
    bail!("Link header without rel=\"next\": {link:?}")
}

/// Lexical (byte-wise) sortedness.
pub fn is_sorted(v: &[String]) -> bool {
    v.windows(2).all(|w| w[0] <= w[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_link_header() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("link", "</v2/a/b/tags/list?n=2&last=x>; rel=\"next\"".parse().unwrap());
        let resp = Response {
            method: reqwest::Method::GET,
            url: url::Url::parse("http://r.example/v2/a/b/tags/list?n=2").unwrap(),
            status: 200,
            headers,
            body: bytes::Bytes::new(),
        };
        let next = next_link(&resp).unwrap().unwrap();
        assert_eq!(next.as_str(), "http://r.example/v2/a/b/tags/list?n=2&last=x");
    }
}
