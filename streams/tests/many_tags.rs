//! Streams with many tags against the store's transaction limits (128 writes and 128 checks, as etcd has): a
//! stream with 1,000 tags is taggable, updatable and deletable, and changes that move hundreds of tags at once
//! (a spec change, a push tracked by many tags, forgetting an image many tags point at) apply whole. Each runs on
//! the embedded store; the 1,000-tag scenario and the spec change also on a real etcd (skipped without the
//! binary unless `TRIBUTARY_E2E_REQUIRED=1`).

use std::sync::Arc;

use chrono::Utc;
use names::{Digest, Namespace, RepositoryName, TagName};
use storage_backends::testing::etcd::EtcdServer;
use storage_backends::{keys, MetadataStore, RedbStore};
use streams::manifest::{self, OCI_MANIFEST};
use streams::model::{Image, ImageStream, ImageStreamTag, ObjectMeta, ObjectReference, TagReference};
use streams::{StreamError, StreamService};

fn image(seed: &str) -> Image {
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[]}}"#,
        Digest::sha256_of(format!("c{seed}").as_bytes()),
    );
    let parsed = manifest::parse(m.as_bytes(), None).unwrap();
    manifest::image_from(&Digest::sha256_of(m.as_bytes()), &parsed, None, String::new(), Utc::now())
}

fn digest(img: &Image) -> Digest {
    img.digest().unwrap()
}

fn repo(s: &str) -> RepositoryName {
    s.parse().unwrap()
}

fn tag(s: &str) -> TagName {
    s.parse().unwrap()
}

fn ns() -> Namespace {
    "ns".parse().unwrap()
}

fn spec_tag(name: &str, kind: &str, from: &str) -> TagReference {
    TagReference {
        name: name.into(),
        from: Some(ObjectReference { kind: kind.into(), name: from.into(), namespace: None }),
        ..TagReference::default()
    }
}

fn istag(name: &str, t: TagReference) -> ImageStreamTag {
    ImageStreamTag {
        metadata: ObjectMeta { name: name.into(), ..ObjectMeta::default() },
        tag: Some(t),
        ..ImageStreamTag::default()
    }
}

async fn push(svc: &StreamService, r: &RepositoryName, t: &str, img: &Image) {
    svc.record_mapping(r, Some(&tag(t)), img, vec![], true).await.unwrap();
}

fn redb() -> (Arc<dyn MetadataStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Arc::new(RedbStore::open(&dir.path().join("m.redb")).unwrap()), dir)
}

fn etcd() -> Option<EtcdServer> {
    let server = EtcdServer::start();
    if server.is_none() {
        eprintln!("SKIPPED: no etcd binary");
    }
    server
}

/// 1,000 tags: tag, alias, a strict replace, a stale one, delete; no operation needs a transaction whose size
/// grows with the tag count.
async fn thousand_tags(store: Arc<dyn MetadataStore>) {
    let svc = StreamService::new(store.clone(), "reg.example:5000");
    let big = repo("ns/big");
    let img = image("big");
    for i in 0..1000 {
        push(&svc, &big, &format!("t{i:04}"), &img).await;
    }
    // A permanent tag and an alias.
    svc.create_istag(&ns(), istag("big:copy", spec_tag("", "ImageStreamTag", "big:t0007"))).await.unwrap();
    let mut alias = spec_tag("", "ImageStreamTag", "big:t0008");
    alias.reference = false;
    svc.create_istag(&ns(), istag("big:latest", alias)).await.unwrap();
    assert_eq!(svc.resolve_tag(&big, &tag("copy")).await.unwrap(), Some(digest(&img)));
    let s = svc.get_stream(&big).await.unwrap().unwrap();
    assert_eq!(s.status.tags.len(), 1002);
    // An update conditional on the whole object's resourceVersion, then one that is stale.
    let mut labelled = s.clone();
    labelled.metadata.labels.insert("size".into(), "big".into());
    let updated = svc.replace_stream(&big, labelled).await.unwrap();
    assert_eq!(updated.metadata.labels["size"], "big");
    push(&svc, &big, "t0500", &image("newer")).await;
    let mut stale = updated.clone();
    stale.metadata.labels.insert("size".into(), "stale".into());
    assert!(matches!(svc.replace_stream(&big, stale).await, Err(StreamError::Conflict { .. })));
    // Deleting the stream takes every tag with it.
    let revision = store.revision().await.unwrap();
    svc.delete_stream(&big).await.unwrap();
    assert!(svc.get_stream(&big).await.unwrap().is_none());
    assert!(store.list_keys(&keys::istags_of(&big), None, 10).await.unwrap().is_empty());
    let deleted = store.deleted_since(&keys::istags_of(&big), revision).await.unwrap();
    assert_eq!(deleted.len(), 1002, "a watch from before the deletion learns of every tag");
}

/// A stream with 1,000 tags is taggable, updatable (conditionally on its whole resourceVersion) and deletable:
/// no operation needs a transaction whose size grows with the tag count (the store refuses transactions of more
/// than 128 operations, as etcd does).
#[tokio::test]
async fn a_stream_with_a_thousand_tags_stays_manageable() {
    let (store, _dir) = redb();
    thousand_tags(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_a_thousand_tags_stays_manageable_on_etcd() {
    let Some(etcd) = etcd() else { return };
    thousand_tags(Arc::new(etcd.connect("/reg/").await)).await;
}

/// One spec change adding 300 tags that point somewhere at once, conditional on the resourceVersion: every tag
/// gets its event, the generation goes up once, and every tag's event carries it.
async fn spec_change_moving_hundreds_of_tags(store: Arc<dyn MetadataStore>) {
    let svc = StreamService::new(store.clone(), "reg.example:5000");
    let app = repo("ns/app");
    let empty: ImageStream = serde_json::from_value(serde_json::json!({"metadata": {"name": "app"}})).unwrap();
    let created = svc.create_stream(&ns(), empty).await.unwrap();
    let mut wanted = created.clone();
    for i in 0..300 {
        let mut t = spec_tag(&format!("r{i:03}"), "DockerImage", &format!("quay.io/x/y:{i}"));
        t.reference = true;
        wanted.spec.tags.push(t);
    }
    let revision = store.revision().await.unwrap();
    let updated = svc.replace_stream(&app, wanted).await.unwrap();
    assert_eq!(updated.metadata.generation, Some(2));
    assert_eq!(updated.spec.tags.len(), 300);
    assert_eq!(updated.status.tags.len(), 300);
    assert!(updated.status.tags.iter().all(|h| h.items.len() == 1 && h.items[0].generation == 2));
    let r123 = updated.status.tags.iter().find(|h| h.tag == "r123").unwrap();
    assert_eq!(r123.items[0].docker_image_reference, "quay.io/x/y:123");
    assert!(store.revision().await.unwrap() > revision);
    // The same change again is no change: nothing is added, the generation stays.
    let again = svc.replace_stream(&app, updated.clone()).await.unwrap();
    assert_eq!(again.metadata.generation, Some(2));
    assert!(again.status.tags.iter().all(|h| h.items.len() == 1));
}

#[tokio::test]
async fn a_spec_change_moving_hundreds_of_tags_applies_whole() {
    let (store, _dir) = redb();
    spec_change_moving_hundreds_of_tags(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_change_moving_hundreds_of_tags_applies_whole_on_etcd() {
    let Some(etcd) = etcd() else { return };
    spec_change_moving_hundreds_of_tags(Arc::new(etcd.connect("/reg/").await)).await;
}

/// A push to a tag that 150 others track moves them all.
#[tokio::test]
async fn a_push_tracked_by_hundreds_of_tags_moves_them_all() {
    let (store, _dir) = redb();
    let svc = StreamService::new(store, "reg.example:5000");
    let app = repo("ns/app");
    push(&svc, &app, "src", &image("a")).await;
    let mut s = svc.get_stream(&app).await.unwrap().unwrap();
    s.metadata.resource_version.clear();
    for i in 0..150 {
        s.spec.tags.push(spec_tag(&format!("f{i:03}"), "ImageStreamTag", "app:src"));
    }
    svc.replace_stream(&app, s).await.unwrap();
    assert_eq!(svc.resolve_tag(&app, &tag("f149")).await.unwrap(), Some(digest(&image("a"))));
    let b = image("b");
    push(&svc, &app, "src", &b).await;
    for i in 0..150 {
        assert_eq!(svc.resolve_tag(&app, &tag(&format!("f{i:03}"))).await.unwrap(), Some(digest(&b)), "f{i:03}");
    }
}

/// Forgetting an image that 300 tags point at: tags with an older image go back to it, the rest disappear.
#[tokio::test]
async fn forgetting_an_image_hundreds_of_tags_point_at() {
    let (store, _dir) = redb();
    let svc = StreamService::new(store.clone(), "reg.example:5000");
    let app = repo("ns/app");
    let (old, gone) = (image("old"), image("gone"));
    for i in 0..300 {
        if i % 2 == 0 {
            push(&svc, &app, &format!("t{i:03}"), &old).await;
        }
        push(&svc, &app, &format!("t{i:03}"), &gone).await;
    }
    svc.forget_image(&app, &digest(&gone), vec![keys::manifest_link(&app, &digest(&gone))]).await.unwrap();
    let tags = svc.list_tags(&app, None, 1000).await.unwrap();
    assert_eq!(tags.len(), 150);
    for t in tags {
        assert_eq!(svc.resolve_tag(&app, &t).await.unwrap(), Some(digest(&old)), "{t}");
    }
    let s = svc.get_stream(&app).await.unwrap().unwrap();
    assert!(s.status.tags.iter().all(|h| h.items.iter().all(|e| e.image != Some(digest(&gone)))));
}
