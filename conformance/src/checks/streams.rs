//! Tributary image streams (auto-detected via `GET /apis/image.openshift.io/v1`; a target whose `Server` header
//! names Tributary fails every check when the API is missing, any other registry skips them): two-component
//! names only, ImageStream `status.tags` history on push/delete, Image objects with metadata from
//! the config blob, and per-repository blob isolation until mounted.

use anyhow::{anyhow, bail, Context as _};
use serde_json::Value;

use super::{expect_blob, expect_eq};
use crate::client::Client;
use crate::content::{self, Blob, ImageSpec, ACCEPT_ALL, OCI_LAYER, OCI_MANIFEST};
use crate::{ops, Group};

pub const API: &str = "/apis/image.openshift.io/v1";

/// Every check of this group, for the "no image stream API" skip.
pub const CHECKS: &[&str] = &[
    "name-one-component-manifest",
    "name-one-component-upload",
    "name-three-component-manifest",
    "name-three-component-upload",
    "push-tag-status",
    "push-same-digest",
    "push-new-image-on-top",
    "tags-match-status",
    "delete-tag",
    "delete-tag-gone-from-tags",
    "delete-tag-gone-from-status",
    "delete-tag-digest-pullable",
    "push-by-digest-image",
    "image-layers",
    "image-metadata",
    "image-config-cmd",
    "push-by-digest-no-tag",
    "blob-isolation",
    "blob-mount-grants-access",
];

/// The `Server` header of `GET /v2/` when it names Tributary (`tributary/<version>`), which always serves the
/// image stream API.
pub async fn tributary_version(c: &Client) -> Option<String> {
    let resp = c.get("/v2/").send().await.ok()?;
    resp.header("server").filter(|s| s.to_ascii_lowercase().starts_with("tributary/")).map(str::to_owned)
}

pub async fn run(g: Group<'_>) {
    let c = g.client();
    let missing = match c.get(API).send().await {
        Ok(r) if r.status == 200 => None,
        Ok(r) => Some(format!("GET {API} answered {}", r.status)),
        Err(e) => Some(format!("GET {API} failed: {e:#}")),
    };
    if let Some(why) = missing {
        // Another registry simply lacks the API; Tributary without it is broken.
        match tributary_version(c).await {
            Some(server) => {
                for check in CHECKS {
                    g.fail(check, &format!("the target is {server} but has no image stream API: {why}"));
                }
            }
            None => g.skip_all(CHECKS, "registry has no image stream API"),
        }
        return;
    }
    let ns = g.ctx.config.namespace.as_str();
    let stream = format!("stream-{}", content::rand_id(10));
    let stream = stream.as_str();
    let repo = format!("{ns}/{stream}");
    let repo = repo.as_str();

    names(g, c, ns).await;

    let x = content::small_image();
    let y = content::small_image();
    let (x, y) = (&x, &y);
    let pushed = g
        .check("push-tag-status", async {
            ops::push_manifest(c, repo, Some("v1"), x).await?;
            ops::put_manifest(c, repo, "stable", x).await?.expect_status(201).context("tagging stable")?;
            let is = get_stream(c, ns, stream).await?;
            expect_eq("metadata.name", is.pointer("/metadata/name").and_then(Value::as_str), Some(stream))?;
            expect_eq("metadata.namespace", is.pointer("/metadata/namespace").and_then(Value::as_str), Some(ns))?;
            let items = tag_items(&is, "v1")?.ok_or_else(|| anyhow!("status.tags has no `v1`"))?;
            expect_eq("number of v1 items", &items.len(), &1)?;
            check_item(&items[0], &c.host_port(), repo, &x.digest)
        })
        .await;
    let same = g
        .check_with("push-same-digest", pushed, "push-tag-status", |_| async move {
            ops::put_manifest(c, repo, "v1", x).await?.expect_status(201).context("re-pushing v1")?;
            expect_eq("v1 history after re-push", &history(c, ns, stream, "v1").await?, &vec![x.digest.clone()])
        })
        .await;
    let on_top = g
        .check_with("push-new-image-on-top", same, "push-same-digest", |_| async move {
            ops::push_manifest(c, repo, Some("v1"), y).await?;
            let want = vec![y.digest.clone(), x.digest.clone()];
            expect_eq("v1 history (newest first)", &history(c, ns, stream, "v1").await?, &want)
        })
        .await;
    g.check_with("tags-match-status", pushed, "push-tag-status", |_| async move {
        let mut tags = ops::list_tags(c, repo).await?;
        tags.sort();
        let is = get_stream(c, ns, stream).await?;
        let mut status_tags = Vec::new();
        for t in status_tags_of(&is)? {
            let name = t.get("tag").and_then(Value::as_str).context("status tag without `tag`")?;
            if t.get("items").and_then(Value::as_array).is_some_and(|i| !i.is_empty()) {
                status_tags.push(name.to_string());
            }
        }
        status_tags.sort();
        expect_eq("tags list vs status.tags with items", &tags, &status_tags)
    })
    .await;

    let deleted = g
        .check_with("delete-tag", on_top, "push-new-image-on-top", |_| async move {
            c.delete(&format!("/v2/{repo}/manifests/v1")).send().await?.expect_status(202)
        })
        .await;
    g.check_with("delete-tag-gone-from-tags", deleted, "delete-tag", |_| async move {
        let tags = ops::list_tags(c, repo).await?;
        if tags.iter().any(|t| t == "v1") || !tags.iter().any(|t| t == "stable") {
            bail!("tags after deleting v1: {tags:?}, want `stable` without `v1`");
        }
        Ok(())
    })
    .await;
    g.check_with("delete-tag-gone-from-status", deleted, "delete-tag", |_| async move {
        let is = get_stream(c, ns, stream).await?;
        if let Some(t) = status_tags_of(&is)?.iter().find(|t| t.get("tag").and_then(Value::as_str) == Some("v1")) {
            bail!("status.tags still has v1: {t}");
        }
        Ok(())
    })
    .await;
    g.check_with("delete-tag-digest-pullable", deleted, "delete-tag", |_| async move {
        let resp = c.get(&format!("/v2/{repo}/manifests/{}", y.digest)).accept(ACCEPT_ALL).send().await?;
        resp.expect_status(200)?;
        if resp.body != y.body {
            bail!("manifest bytes differ");
        }
        Ok(())
    })
    .await;

    let spec = ImageSpec::unique();
    let z = content::oci_image(&spec, &[3000, 1000]);
    let (spec, z) = (&spec, &z);
    let image = g
        .check("push-by-digest-image", async {
            ops::push_manifest(c, repo, None, z).await?;
            let img = get_image(c, &z.digest).await?;
            expect_eq("metadata.name", img.pointer("/metadata/name").and_then(Value::as_str), Some(z.digest.as_str()))?;
            expect_eq(
                "dockerImageManifestMediaType",
                img.get("dockerImageManifestMediaType").and_then(Value::as_str),
                Some(OCI_MANIFEST),
            )?;
            Ok(img)
        })
        .await;
    let image = image.as_ref();
    g.check_with("image-layers", image, "push-by-digest-image", |img| async move {
        let layers = img.get("dockerImageLayers").and_then(Value::as_array).context("no dockerImageLayers array")?;
        expect_eq("number of dockerImageLayers", &layers.len(), &z.layers().len())?;
        for (got, want) in layers.iter().zip(z.layers()) {
            expect_eq("layer name", got.get("name").and_then(Value::as_str), Some(want.digest.as_str()))?;
            expect_eq("layer size", got.get("size").and_then(Value::as_u64), Some(want.size() as u64))?;
            expect_eq("layer mediaType", got.get("mediaType").and_then(Value::as_str), Some(want.media_type.as_str()))?;
        }
        Ok(())
    })
    .await;
    g.check_with("image-metadata", image, "push-by-digest-image", |img| async move {
        let meta = img.get("dockerImageMetadata").context("no dockerImageMetadata")?;
        expect_eq("Architecture", meta.get("Architecture").and_then(Value::as_str), Some(spec.architecture.as_str()))?;
        expect_eq("Os", meta.get("Os").and_then(Value::as_str), Some(spec.os.as_str()))
    })
    .await;
    g.check_with("image-config-cmd", image, "push-by-digest-image", |img| async move {
        let cmd = img.pointer("/dockerImageMetadata/Config/Cmd").context("no dockerImageMetadata.Config.Cmd")?;
        expect_eq("Config.Cmd", cmd, &serde_json::json!(spec.cmd))
    })
    .await;
    g.check_with("push-by-digest-no-tag", image, "push-by-digest-image", |_| async move {
        let is = get_stream(c, ns, stream).await?;
        for t in status_tags_of(&is)? {
            for item in t.get("items").and_then(Value::as_array).into_iter().flatten() {
                if item.get("image").and_then(Value::as_str) == Some(z.digest.as_str()) {
                    bail!("image pushed by digest appears under tag {}", t.get("tag").unwrap_or(&Value::Null));
                }
            }
        }
        let tags = ops::list_tags(c, repo).await?;
        if tags.iter().any(|t| t != "stable") {
            bail!("unexpected tags after a push by digest: {tags:?}");
        }
        Ok(())
    })
    .await;

    isolation(g, c, ns, repo).await;
}

async fn names(g: Group<'_>, c: &Client, ns: &str) {
    let one = format!("solo-{}", content::rand_id(8));
    let three = format!("{ns}/deep-{}/x", content::rand_id(8));
    for (label, name) in [("one", one.as_str()), ("three", three.as_str())] {
        g.check(&format!("name-{label}-component-manifest"), async {
            let m = content::small_image();
            let resp = ops::put_manifest(c, name, "v1", &m).await?;
            resp.expect_error(&[400], &["NAME_INVALID"])
        })
        .await;
        g.check(&format!("name-{label}-component-upload"), async {
            let resp = c.post(&format!("/v2/{name}/blobs/uploads/")).send().await?;
            resp.expect_error(&[400], &["NAME_INVALID"])
        })
        .await;
    }
}

async fn isolation(g: Group<'_>, c: &Client, ns: &str, repo: &str) {
    let other = format!("{ns}/stream-{}", content::rand_id(10));
    let other = other.as_str();
    let blob = Blob::random(1800, OCI_LAYER);
    let blob = &blob;
    let url = format!("/v2/{other}/blobs/{}", blob.digest);
    let url = url.as_str();
    let isolated = g
        .check("blob-isolation", async {
            ops::push_manifest(c, other, Some("v1"), &content::small_image()).await.context("setup: second stream")?;
            ops::push_blob(c, repo, blob).await.context("setup: blob in first stream")?;
            c.get(url).send().await?.expect_error(&[404], &["BLOB_UNKNOWN"])
        })
        .await;
    g.check_with("blob-mount-grants-access", isolated, "blob-isolation", |_| async move {
        let post = c
            .post(&format!("/v2/{other}/blobs/uploads/"))
            .query("mount", &blob.digest)
            .query("from", repo)
            .send()
            .await?;
        post.expect_status(201).context("mount")?;
        expect_blob(&c.get(url).send().await?, blob)
    })
    .await;
}

async fn get_stream(c: &Client, ns: &str, stream: &str) -> anyhow::Result<Value> {
    let resp = c.get(&format!("{API}/namespaces/{ns}/imagestreams/{stream}")).send().await?;
    resp.expect_status(200).context("GET imagestream")?;
    let v = resp.json()?;
    expect_eq("kind", v.get("kind").and_then(Value::as_str), Some("ImageStream"))?;
    Ok(v)
}

async fn get_image(c: &Client, digest: &str) -> anyhow::Result<Value> {
    let resp = c.get(&format!("{API}/images/{digest}")).send().await?;
    resp.expect_status(200).context("GET image")?;
    let v = resp.json()?;
    expect_eq("kind", v.get("kind").and_then(Value::as_str), Some("Image"))?;
    Ok(v)
}

fn status_tags_of(is: &Value) -> anyhow::Result<Vec<Value>> {
    match is.pointer("/status/tags") {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(a)) => Ok(a.clone()),
        Some(other) => bail!("status.tags is not an array: {other}"),
    }
}

/// Items of status tag `tag`, `None` if the tag is absent.
fn tag_items(is: &Value, tag: &str) -> anyhow::Result<Option<Vec<Value>>> {
    let Some(t) = status_tags_of(is)?.into_iter().find(|t| t.get("tag").and_then(Value::as_str) == Some(tag)) else {
        return Ok(None);
    };
    match t.get("items") {
        None | Some(Value::Null) => Ok(Some(vec![])),
        Some(Value::Array(a)) => Ok(Some(a.clone())),
        Some(other) => bail!("items of {tag} is not an array: {other}"),
    }
}

/// Image digests of a status tag's items, newest first.
async fn history(c: &Client, ns: &str, stream: &str, tag: &str) -> anyhow::Result<Vec<String>> {
    let is = get_stream(c, ns, stream).await?;
    let items = tag_items(&is, tag)?.ok_or_else(|| anyhow!("status.tags has no `{tag}`"))?;
    items
        .iter()
        .map(|i| i.get("image").and_then(Value::as_str).map(str::to_string).context("item without `image`"))
        .collect()
}

/// A TagEvent for `digest`: image, `<host>/<ns>/<stream>@digest`, created, generation.
fn check_item(item: &Value, host_hint: &str, repo: &str, digest: &str) -> anyhow::Result<()> {
    expect_eq("items[0].image", item.get("image").and_then(Value::as_str), Some(digest))?;
    let reference = item.get("dockerImageReference").and_then(Value::as_str).context("no dockerImageReference")?;
    let suffix = format!("/{repo}@{digest}");
    let host = reference
        .strip_suffix(&suffix)
        .ok_or_else(|| anyhow!("dockerImageReference {reference:?} does not end with {suffix:?}"))?;
    if host.is_empty() || host.contains('/') {
        bail!("dockerImageReference {reference:?} has no registry host (expected e.g. {host_hint})");
    }
    if item.get("created").and_then(Value::as_str).is_none_or(str::is_empty) {
        bail!("item has no `created` timestamp: {item}");
    }
    if !item.get("generation").is_some_and(|g| g.is_i64() || g.is_u64()) {
        bail!("item has no integer `generation`: {item}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stream() -> Value {
        json!({
            "kind": "ImageStream",
            "status": {"tags": [
                {"tag": "v1", "items": [
                    {"image": "sha256:bb", "dockerImageReference": "reg.example:5000/ns/s@sha256:bb",
                     "created": "2024-01-01T00:00:00Z", "generation": 2},
                    {"image": "sha256:aa", "dockerImageReference": "reg.example:5000/ns/s@sha256:aa",
                     "created": "2024-01-01T00:00:00Z", "generation": 1}
                ]},
                {"tag": "empty", "items": null}
            ]}
        })
    }

    #[test]
    fn reads_tag_items() {
        let is = stream();
        assert_eq!(tag_items(&is, "v1").unwrap().unwrap().len(), 2);
        assert_eq!(tag_items(&is, "empty").unwrap().unwrap().len(), 0);
        assert!(tag_items(&is, "nope").unwrap().is_none());
    }

    #[test]
    fn validates_tag_event() {
        let items = tag_items(&stream(), "v1").unwrap().unwrap();
        check_item(&items[0], "h", "ns/s", "sha256:bb").unwrap();
        assert!(check_item(&items[0], "h", "ns/s", "sha256:aa").is_err());
        assert!(check_item(&items[0], "h", "ns/other", "sha256:bb").is_err());
        let mut no_host = items[0].clone();
        no_host["dockerImageReference"] = json!("/ns/s@sha256:bb");
        assert!(check_item(&no_host, "h", "ns/s", "sha256:bb").is_err());
        let mut no_gen = items[0].clone();
        no_gen.as_object_mut().unwrap().remove("generation");
        assert!(check_item(&no_gen, "h", "ns/s", "sha256:bb").is_err());
    }
}
