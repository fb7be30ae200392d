//! Content discovery: tag listing (lexical order, `n`/`last`, `Link` pagination), the optional
//! `/v2/_catalog`, and the referrers API (`subject`, `OCI-Subject`, `artifactType` filtering).

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use super::expect_eq;
use crate::client::{Client, Response};
use crate::content::{self, ArtifactKind, Manifest, OCI_INDEX};
use crate::ops::{self, is_sorted, next_link, string_array, tags_of};
use crate::{skip, Group};

const TYPE_A: &str = "application/vnd.conformance.type-a";
const TYPE_B: &str = "application/vnd.conformance.type-b";
/// Pushed in this (unsorted) order. All lowercase, so byte-wise and case-insensitive lexical
/// order agree (the spec says "lexical order (i.e. case-insensitive alphanumeric order)");
/// `v10` < `v2` catches natural-sort implementations, the punctuation catches locale sorts.
const TAGS: &[&str] = &["v2", "latest", "alpha_1", "1.0", "v10", "alpha.1", "alpha-1"];

pub async fn run(g: Group<'_>) {
    let c = g.client();
    let repo = g.ctx.repo("discovery");
    let repo = repo.as_str();
    let mut sorted: Vec<String> = TAGS.iter().map(|s| s.to_string()).collect();
    sorted.sort();
    let sorted = &sorted;
    let tags_url = format!("/v2/{repo}/tags/list");
    let tags_url = tags_url.as_str();

    let setup = g
        .check("tags-setup", async {
            let m = content::small_image();
            ops::push_content(c, repo, &m).await?;
            for t in TAGS {
                ops::put_manifest(c, repo, t, &m).await?.expect_status(201).with_context(|| format!("tag {t}"))?;
            }
            Ok(())
        })
        .await;

    g.check_with("tags-list", setup, "tags-setup", |_| async move {
        let resp = c.get(tags_url).send().await?;
        resp.expect_status(200)?;
        let v = resp.json()?;
        expect_eq("name", v.get("name").and_then(Value::as_str).unwrap_or_default(), repo)?;
        let mut got = string_array(&v, "tags")?;
        got.sort();
        expect_eq("tags", &got, sorted)
    })
    .await;
    g.check_with("tags-list-sorted", setup, "tags-setup", |_| async move {
        let got = ops::list_tags(c, repo).await?;
        expect_eq("tag order", &got, sorted)
    })
    .await;
    let first_page = g
        .check_with("tags-pagination-n", setup, "tags-setup", |_| async move {
            let resp = c.get(tags_url).query("n", "3").send().await?;
            resp.expect_status(200)?;
            expect_eq("tags with n=3", &tags_of(&resp)?, &sorted[..3].to_vec())?;
            Ok(resp)
        })
        .await;
    g.check_with("tags-pagination-link", first_page.as_ref(), "tags-pagination-n", |resp| async move {
        let next = next_link(resp)?.ok_or_else(|| anyhow::anyhow!("no Link header on a partial page"))?;
        let q: BTreeMap<String, String> = next.query_pairs().into_owned().collect();
        expect_eq("n in Link", q.get("n").map(String::as_str), Some("3"))?;
        if !q.contains_key("last") {
            bail!("Link target has no `last` parameter: {next}");
        }
        let page = c.get(next.as_str()).send().await?;
        page.expect_status(200)?;
        expect_eq("tags on the linked page", &tags_of(&page)?, &sorted[3..6].to_vec())
    })
    .await;
    g.check_with("tags-pagination-walk", setup, "tags-setup", |_| async move {
        let all = walk(c, tags_url, 3, "tags").await?;
        expect_eq("tags collected by following Link", &all, sorted)
    })
    .await;
    g.check_with("tags-last", setup, "tags-setup", |_| async move {
        let resp = c.get(tags_url).query("last", &sorted[2]).send().await?;
        resp.expect_status(200)?;
        expect_eq("tags after last", &tags_of(&resp)?, &sorted[3..].to_vec())
    })
    .await;
    g.check_with("tags-n-last", setup, "tags-setup", |_| async move {
        let resp = c.get(tags_url).query("n", "2").query("last", &sorted[3]).send().await?;
        resp.expect_status(200)?;
        expect_eq("tags with n=2 after last", &tags_of(&resp)?, &sorted[4..6].to_vec())
    })
    .await;

    g.check_with("catalog", setup, "tags-setup", |_| async move {
        let all = walk(c, "/v2/_catalog", 100, "repositories").await?;
        if !all.iter().any(|r| r == repo) {
            bail!("catalog ({} repositories) does not list {repo}", all.len());
        }
        if !is_sorted(&all) {
            bail!("catalog is not in lexical order");
        }
        Ok(())
    })
    .await;
    g.check_with("catalog-pagination", setup, "tags-setup", |_| async move {
        let resp = c.get("/v2/_catalog").query("n", "1").send().await?;
        catalog_unsupported(&resp)?;
        resp.expect_status(200)?;
        let first = string_array(&resp.json()?, "repositories")?;
        if first.len() != 1 {
            bail!("n=1 returned {} repositories", first.len());
        }
        let next = next_link(&resp)?.ok_or_else(|| anyhow::anyhow!("no Link header with n=1"))?;
        let page = c.get(next.as_str()).send().await?;
        page.expect_status(200)?;
        let second = string_array(&page.json()?, "repositories")?;
        match second.first() {
            Some(r) if second.len() == 1 && *r > first[0] => Ok(()),
            _ => bail!("page after {:?} was {second:?}, want one repository sorting after it", first[0]),
        }
    })
    .await;

    referrers(g, c, repo).await;
}

/// 404/401/403 or UNSUPPORTED on the catalog means "not offered": SKIP.
fn catalog_unsupported(resp: &Response) -> anyhow::Result<()> {
    let unsupported = resp.error_body().is_ok_and(|e| e.codes.iter().any(|c| c == "UNSUPPORTED"));
    if matches!(resp.status, 401 | 403 | 404) || unsupported {
        return Err(skip(format!("catalog not offered ({})", resp.describe())));
    }
    Ok(())
}

/// Follows `Link: rel="next"` from `path?n=<n>`, collecting the `field` arrays.
async fn walk(c: &Client, path: &str, n: usize, field: &str) -> anyhow::Result<Vec<String>> {
    let mut url = c.resolve(path)?;
    url.query_pairs_mut().append_pair("n", &n.to_string());
    let mut all = Vec::new();
    for _ in 0..200 {
        let resp = c.get(url.as_str()).send().await?;
        if field == "repositories" {
            catalog_unsupported(&resp)?;
        }
        resp.expect_status(200)?;
        let page = string_array(&resp.json()?, field)?;
        if page.len() > n {
            bail!("page has {} entries, more than n={n}", page.len());
        }
        all.extend(page);
        match next_link(&resp)? {
            Some(next) => url = next,
            None => return Ok(all),
        }
    }
    bail!("still paginating after 200 pages")
}

struct Referrers {
    subject: Manifest,
    artifacts: Vec<Manifest>,
    put_responses: Vec<Response>,
}

async fn referrers(g: Group<'_>, c: &Client, repo: &str) {
    let setup = g
        .check("referrers-setup", async {
            let subject = content::small_image();
            ops::push_manifest(c, repo, Some("subject"), &subject).await.context("pushing subject")?;
            let sd = subject.descriptor();
            let child = content::small_image();
            let artifacts = vec![
                content::artifact(&sd, ArtifactKind::Field(TYPE_A), "a-field"),
                content::artifact(&sd, ArtifactKind::ConfigMediaType(TYPE_B), "b-config"),
                content::index_artifact(&sd, TYPE_A, vec![child], "a-index"),
            ];
            let mut put_responses = Vec::new();
            for a in &artifacts {
                ops::push_content(c, repo, a).await?;
                let resp = ops::put_manifest(c, repo, &a.digest, a).await?;
                resp.expect_status(201).with_context(|| format!("pushing referrer {}", a.digest))?;
                put_responses.push(resp);
            }
            Ok(Referrers { subject, artifacts, put_responses })
        })
        .await;
    let setup = setup.as_ref();

    g.check_with("subject-header", setup, "referrers-setup", |r| async move {
        for resp in &r.put_responses {
            let got = resp.header("oci-subject");
            expect_eq("OCI-Subject on PUT of a manifest with subject", got, Some(r.subject.digest.as_str()))?;
        }
        Ok(())
    })
    .await;
    g.check_with("referrers-list", setup, "referrers-setup", |r| async move {
        let resp = get_referrers(c, repo, &r.subject.digest, None).await?;
        expect_index_of(&resp, &r.artifacts.iter().collect::<Vec<_>>())
    })
    .await;
    g.check_with("referrers-filter", setup, "referrers-setup", |r| async move {
        let resp = get_referrers(c, repo, &r.subject.digest, Some(TYPE_A)).await?;
        resp.expect_status(200)?;
        expect_eq("OCI-Filters-Applied", resp.header("oci-filters-applied"), Some("artifactType"))?;
        let want: Vec<&Manifest> = r.artifacts.iter().filter(|a| a.artifact_type.as_deref() == Some(TYPE_A)).collect();
        expect_index_of(&resp, &want)
    })
    .await;
    g.check("referrers-empty", async {
        let resp = get_referrers(c, repo, &content::unknown_digest(), None).await?;
        expect_index_of(&resp, &[])
    })
    .await;
    g.check("referrers-missing-subject", async {
        let absent = content::small_image();
        let a = content::artifact(&absent.descriptor(), ArtifactKind::Field(TYPE_B), "dangling");
        ops::push_content(c, repo, &a).await?;
        let put = ops::put_manifest(c, repo, &a.digest, &a).await?;
        put.expect_status(201).context("PUT of a referrer whose subject does not exist")?;
        expect_eq("OCI-Subject", put.header("oci-subject"), Some(absent.digest.as_str()))?;
        let resp = get_referrers(c, repo, &absent.digest, None).await?;
        expect_index_of(&resp, &[&a])
    })
    .await;
}

async fn get_referrers(c: &Client, repo: &str, digest: &str, artifact_type: Option<&str>) -> anyhow::Result<Response> {
    let mut req = c.get(&format!("/v2/{repo}/referrers/{digest}"));
    if let Some(t) = artifact_type {
        req = req.query("artifactType", t);
    }
    req.send().await
}

/// A 200 OCI index whose `manifests` are exactly the descriptors of `want` (any order), each
/// with mediaType, size, artifactType and annotations.
fn expect_index_of(resp: &Response, want: &[&Manifest]) -> anyhow::Result<()> {
    resp.expect_status(200)?;
    expect_eq("Content-Type", resp.content_type(), Some(OCI_INDEX))?;
    let v = resp.json()?;
    expect_eq("schemaVersion", v.get("schemaVersion"), Some(&json!(2)))?;
    expect_eq("mediaType", v.get("mediaType").and_then(Value::as_str), Some(OCI_INDEX))?;
    let got = v.get("manifests").and_then(Value::as_array).context("index has no `manifests` array")?;
    let mut by_digest: BTreeMap<&str, &Value> = BTreeMap::new();
    for d in got {
        let digest = d.get("digest").and_then(Value::as_str).context("descriptor without digest")?;
        if by_digest.insert(digest, d).is_some() {
            bail!("descriptor {digest} listed twice");
        }
    }
    let want_digests: Vec<&str> = want.iter().map(|m| m.digest.as_str()).collect();
    let got_digests: Vec<&str> = by_digest.keys().copied().collect();
    let mut want_sorted = want_digests.clone();
    want_sorted.sort();
    expect_eq("referrer digests", &got_digests, &want_sorted)?;
    for m in want {
        let d = by_digest[m.digest.as_str()];
        let what = |f: &str| format!("{f} of referrer {}", m.digest);
        expect_eq(&what("mediaType"), d.get("mediaType").and_then(Value::as_str), Some(m.media_type.as_str()))?;
        expect_eq(&what("size"), d.get("size").and_then(Value::as_u64), Some(m.size() as u64))?;
        expect_eq(&what("artifactType"), d.get("artifactType").and_then(Value::as_str), m.artifact_type.as_deref())?;
        if !m.annotations.is_null() {
            expect_eq(&what("annotations"), d.get("annotations"), Some(&m.annotations))?;
        }
    }
    Ok(())
}
