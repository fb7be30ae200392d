//! The image stream rules end to end over a real metadata store: tracking tags follow pushes in the same
//! transaction, permanent tags stay, rollback, `tag -d` versus deleting the image stream tag, generations,
//! optimistic concurrency, merge patches, image stream images by prefix, mappings, concurrent tag updates, and
//! watches.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use names::{Digest, Namespace, RepositoryName, TagName};
use serde_json::json;
use storage_backends::{keys, MetadataStore, RedbStore, Txn};
use streams::manifest::{self, OCI_MANIFEST};
use streams::model::{
    Image, ImageStream, ImageStreamMapping, ImageStreamTag, ObjectMeta, ObjectReference, TagReference,
};
use streams::objects::PatchKind;
use streams::watch::{EventType, WatchObject, WatchScope, Watched};
use streams::{StreamError, StreamService};

fn image(seed: &str) -> Image {
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":3}}]}}"#,
        Digest::sha256_of(format!("c{seed}").as_bytes()),
        Digest::sha256_of(format!("l{seed}").as_bytes()),
    );
    let parsed = manifest::parse(m.as_bytes(), None).unwrap();
    manifest::image_from(&Digest::sha256_of(m.as_bytes()), &parsed, None, String::new(), Utc::now())
}

fn digest(img: &Image) -> Digest {
    img.digest().unwrap()
}

struct Env {
    svc: StreamService,
    store: Arc<RedbStore>,
    _dir: tempfile::TempDir,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(&dir.path().join("m.redb")).unwrap());
    Env { svc: StreamService::new(store.clone(), "reg.example:5000"), store, _dir: dir }
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

fn spec_tag(kind: &str, from: &str) -> TagReference {
    TagReference {
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

async fn history(svc: &StreamService, r: &RepositoryName, t: &str) -> Vec<Digest> {
    let s = svc.get_stream(r).await.unwrap().unwrap();
    s.status
        .tags
        .iter()
        .find(|h| h.tag == t)
        .map(|h| h.items.iter().filter_map(|e| e.image.clone()).collect())
        .unwrap_or_default()
}

async fn push(svc: &StreamService, r: &RepositoryName, t: &str, img: &Image) {
    svc.record_mapping(r, Some(&tag(t)), img, vec![], true).await.unwrap();
}

#[tokio::test]
async fn tracking_follows_permanent_stays_rollback_returns() {
    let Env { svc, .. } = env();
    let app = repo("ns/app");
    let (a, b, c) = (image("a"), image("b"), image("c"));
    push(&svc, &app, "v1", &a).await;
    svc.create_istag(&ns(), istag("app:latest", spec_tag("ImageStreamTag", "app:v1"))).await.unwrap();
    let da = digest(&a);
    let short = &da.hex()[..7];
    svc.create_istag(&ns(), istag("app:static", spec_tag("ImageStreamImage", &format!("app@{short}")))).await.unwrap();
    svc.create_istag(&ns(), istag("app:stable", spec_tag("ImageStreamTag", "latest"))).await.unwrap();
    for t in ["latest", "static", "stable"] {
        assert_eq!(svc.resolve_tag(&app, &tag(t)).await.unwrap(), Some(digest(&a)), "{t}");
    }
    // A push to v1 moves the tracking tags (transitively) at once; the permanent one stays.
    push(&svc, &app, "v1", &b).await;
    assert_eq!(svc.resolve_tag(&app, &tag("latest")).await.unwrap(), Some(digest(&b)));
    assert_eq!(svc.resolve_tag(&app, &tag("stable")).await.unwrap(), Some(digest(&b)));
    assert_eq!(svc.resolve_tag(&app, &tag("static")).await.unwrap(), Some(digest(&a)));
    assert_eq!(history(&svc, &app, "stable").await, vec![digest(&b), digest(&a)]);
    push(&svc, &app, "v1", &c).await;
    assert_eq!(history(&svc, &app, "v1").await, vec![digest(&c), digest(&b), digest(&a)]);
    // Rollback: tag an older image of the history; it goes on top, the history keeps the rest.
    let mut v1 = svc.get_istag(&app, &tag("v1")).await.unwrap();
    v1.tag = Some(spec_tag("ImageStreamImage", &format!("app@{}", digest(&a))));
    svc.replace_istag(&app, &tag("v1"), v1).await.unwrap();
    assert_eq!(history(&svc, &app, "v1").await, vec![digest(&a), digest(&c), digest(&b), digest(&a)]);
    assert_eq!(
        svc.resolve_tag(&app, &tag("latest")).await.unwrap(),
        Some(digest(&a)),
        "the alias follows the rollback"
    );
    // The ImageStreamTag shows the image the tag points at, with its spec and the stream's generation.
    let latest = svc.get_istag(&app, &tag("latest")).await.unwrap();
    assert_eq!(latest.image.unwrap().metadata.name, digest(&a).to_string());
    assert_eq!(latest.tag.unwrap().from.unwrap().name, "app:v1");
    // ImageStreamImages exist for every image of the stream, by digest or a unique prefix.
    for img in [&a, &b, &c] {
        let id = digest(img).hex()[..10].parse().unwrap();
        let isi = svc.get_isimage(&app, &id).await.unwrap();
        assert_eq!(isi.image.metadata.name, digest(img).to_string());
        assert_eq!(isi.metadata.name, format!("app@{}", &digest(img).hex()[..10]));
    }
    let missing = Digest::sha256_of(b"none").to_string().parse().unwrap();
    assert!(matches!(svc.get_isimage(&app, &missing).await, Err(StreamError::NotFound { .. })));
}

#[tokio::test]
async fn cross_stream_alias_is_a_copy_and_links_follow() {
    let Env { svc, store, .. } = env();
    let base = repo("ns/base");
    let app = repo("ns/app");
    let a = image("a");
    let d = digest(&a);
    let layer = a.docker_image_layers[0].name.clone();
    let links = vec![
        (keys::manifest_link(&base, &d), b"{}".to_vec()),
        (keys::blob_link(&base, &layer), b"{\"size\":3}".to_vec()),
    ];
    svc.record_mapping(&base, Some(&tag("v1")), &a, links, true).await.unwrap();
    svc.create_istag(&ns(), istag("app:v1", spec_tag("ImageStreamTag", "base:v1"))).await.unwrap();
    assert_eq!(svc.resolve_tag(&app, &tag("v1")).await.unwrap(), Some(d.clone()));
    assert!(store.get(&keys::manifest_link(&app, &d)).await.unwrap().is_some(), "the manifest is linked in");
    assert!(store.get(&keys::blob_link(&app, &layer)).await.unwrap().is_some(), "its layers too");
    // Another stream's tag is copied, not tracked.
    push(&svc, &base, "v1", &image("b")).await;
    assert_eq!(svc.resolve_tag(&app, &tag("v1")).await.unwrap(), Some(d));
    // Naming a stream or tag that does not exist is invalid.
    let err = svc.create_istag(&ns(), istag("app:v2", spec_tag("ImageStreamTag", "nope:v1"))).await;
    assert!(matches!(err, Err(StreamError::Invalid { .. })), "{err:?}");
}

#[tokio::test]
async fn tag_d_edits_the_spec_delete_istag_removes_both_and_generations_move() {
    let Env { svc, .. } = env();
    let app = repo("ns/app");
    let a = image("a");
    push(&svc, &app, "v1", &a).await;
    let s = svc.get_stream(&app).await.unwrap().unwrap();
    assert_eq!(s.metadata.generation, Some(1));
    svc.create_istag(&ns(), istag("app:latest", spec_tag("ImageStreamTag", "app:v1"))).await.unwrap();
    let s = svc.get_stream(&app).await.unwrap().unwrap();
    assert_eq!(s.metadata.generation, Some(2));
    assert_eq!(s.spec.tags[0].generation, Some(2));
    assert_eq!(s.status.tags.iter().find(|t| t.tag == "latest").unwrap().items[0].generation, 2);
    // A push records the stream's generation in its event, and does not change the generation.
    push(&svc, &app, "v2", &image("b")).await;
    let s = svc.get_stream(&app).await.unwrap().unwrap();
    assert_eq!(s.metadata.generation, Some(2));
    assert_eq!(s.status.tags.iter().find(|t| t.tag == "v2").unwrap().items[0].generation, 2);
    // `tag -d`: the spec loses the tag, the status keeps it (and docker pull still gets it).
    let mut edited = s.clone();
    edited.spec.tags.clear();
    let s = svc.replace_stream(&app, edited).await.unwrap();
    assert_eq!(s.metadata.generation, Some(3));
    assert!(s.spec.tags.is_empty());
    assert_eq!(svc.resolve_tag(&app, &tag("latest")).await.unwrap(), Some(digest(&a)));
    // Deleting the image stream tag removes its history too.
    let rv_before: u64 = s.metadata.resource_version.parse().unwrap();
    svc.delete_istag(&app, &tag("latest")).await.unwrap();
    assert_eq!(svc.resolve_tag(&app, &tag("latest")).await.unwrap(), None);
    assert!(matches!(svc.get_istag(&app, &tag("latest")).await, Err(StreamError::NotFound { .. })));
    let s = svc.get_stream(&app).await.unwrap().unwrap();
    assert!(s.metadata.resource_version.parse::<u64>().unwrap() > rv_before, "resourceVersion never goes back");
    assert!(matches!(svc.delete_istag(&app, &tag("latest")).await, Err(StreamError::NotFound { .. })));
    // Labels do not move the generation.
    let mut labelled = s.clone();
    labelled.metadata.labels.insert("team".into(), "a".into());
    let s = svc.replace_stream(&app, labelled).await.unwrap();
    assert_eq!(s.metadata.generation, Some(3));
    assert_eq!(s.metadata.labels["team"], "a");
}

#[tokio::test]
async fn resource_versions_guard_updates_and_patches() {
    let Env { svc, .. } = env();
    let app = repo("ns/app");
    let input: ImageStream = serde_json::from_value(json!({
        "metadata": {"name": "app", "labels": {"a": "1"}},
        "spec": {"tags": [{"name": "ext", "reference": true,
                           "from": {"kind": "DockerImage", "name": "quay.io/x/y:1"}}]}
    }))
    .unwrap();
    let created = svc.create_stream(&ns(), input.clone()).await.unwrap();
    assert!(matches!(svc.create_stream(&ns(), input).await, Err(StreamError::AlreadyExists { .. })));
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.status.tags[0].items[0].docker_image_reference, "quay.io/x/y:1");
    assert_eq!(created.status.tags[0].items[0].image, None);
    // A stale resourceVersion loses.
    push(&svc, &app, "v1", &image("a")).await;
    let mut stale = created.clone();
    stale.spec.lookup_policy.local = true;
    assert!(matches!(svc.replace_stream(&app, stale).await, Err(StreamError::Conflict { .. })));
    let fresh = svc.get_stream(&app).await.unwrap().unwrap();
    let patched = svc
        .patch_stream(
            &app,
            &json!({"metadata": {"labels": {"a": null, "b": "2"}}, "spec": {"lookupPolicy": {"local": true}}}),
            PatchKind::Merge,
        )
        .await
        .unwrap();
    assert!(patched.spec.lookup_policy.local);
    assert_eq!(patched.metadata.labels.get("a"), None);
    assert_eq!(patched.metadata.generation, Some(2));
    let stale_patch = json!({"metadata": {"resourceVersion": fresh.metadata.resource_version}, "spec": {"lookupPolicy": {"local": false}}});
    assert!(matches!(svc.patch_stream(&app, &stale_patch, PatchKind::Merge).await, Err(StreamError::Conflict { .. })));
    let bad = json!({"spec": {"tags": [{"name": "x", "from": {"kind": "Pod", "name": "p"}}]}});
    assert!(matches!(svc.patch_stream(&app, &bad, PatchKind::Merge).await, Err(StreamError::Invalid { .. })));
    // Delete: the stream and its tags are gone.
    svc.delete_stream(&app).await.unwrap();
    assert!(svc.get_stream(&app).await.unwrap().is_none());
    assert_eq!(svc.resolve_tag(&app, &tag("v1")).await.unwrap(), None);
    assert!(matches!(svc.delete_stream(&app).await, Err(StreamError::NotFound { .. })));
}

#[tokio::test]
async fn mappings_and_images() {
    let Env { svc, .. } = env();
    let mut img = image("m");
    img.docker_image_reference = format!("elsewhere.example/lib/m@{}", digest(&img));
    let mapping = ImageStreamMapping {
        kind: "ImageStreamMapping".into(),
        api_version: "image.openshift.io/v1".into(),
        metadata: ObjectMeta { name: "app".into(), ..ObjectMeta::default() },
        image: img.clone(),
        tag: "v1".into(),
    };
    assert!(matches!(svc.create_mapping(&ns(), mapping.clone()).await, Err(StreamError::NotFound { .. })));
    let empty: ImageStream = serde_json::from_value(json!({"metadata": {"name": "app"}})).unwrap();
    svc.create_stream(&ns(), empty).await.unwrap();
    svc.create_mapping(&ns(), mapping).await.unwrap();
    let s = svc.get_stream(&repo("ns/app")).await.unwrap().unwrap();
    assert_eq!(s.status.tags[0].items[0].docker_image_reference, img.docker_image_reference);
    let images = svc.list_images().await.unwrap();
    assert_eq!(images.kind, "ImageList");
    assert_eq!(images.items.len(), 1);
    let tags = svc.list_istags(Some(&ns())).await.unwrap();
    assert_eq!(tags.items.iter().map(|t| t.metadata.name.as_str()).collect::<Vec<_>>(), ["app:v1"]);
    let streams = svc.list_streams(None).await.unwrap();
    assert_eq!((streams.kind.as_str(), streams.items.len()), ("ImageStreamList", 1));
}

/// Several clients tag different images into one tag at once, while pushes land on another tag tracked by a
/// third: every tag event of every client is in the histories afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_tag_updates_lose_no_history_event() {
    let Env { svc, .. } = env();
    let app = repo("ns/app");
    let images: Vec<Image> = (0..12).map(|i| image(&format!("img{i}"))).collect();
    for (i, img) in images.iter().enumerate() {
        push(&svc, &app, &format!("src{i}"), img).await;
    }
    svc.create_istag(&ns(), istag("app:follow", spec_tag("ImageStreamTag", "app:pushed"))).await.unwrap();
    let mut tasks = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let (svc2, app2, d) = (svc.clone(), app.clone(), digest(img));
        tasks.push(tokio::spawn(async move {
            let (svc, app) = (svc2, app2);
            // Each client: read, edit, write back, retrying on 409 as kubectl and `tributary tag` do.
            loop {
                let mut is = svc.get_stream(&app).await.unwrap().unwrap();
                is.spec.tags.retain(|t| t.name != "target");
                let mut t = spec_tag("ImageStreamImage", &format!("app@{d}"));
                t.name = "target".into();
                is.spec.tags.push(t);
                match svc.replace_stream(&app, is).await {
                    Ok(_) => break,
                    Err(StreamError::Conflict { .. }) => continue,
                    Err(e) => panic!("client {i}: {e}"),
                }
            }
        }));
        let (svc, app, img) = (svc.clone(), app.clone(), img.clone());
        tasks.push(tokio::spawn(async move { push(&svc, &app, "pushed", &img).await }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all: std::collections::BTreeSet<Digest> = images.iter().map(digest).collect();
    for t in ["target", "pushed", "follow"] {
        let h: std::collections::BTreeSet<Digest> = history(&svc, &app, t).await.into_iter().collect();
        assert_eq!(h, all, "every event of {t} is in its history");
    }
    assert_eq!(history(&svc, &app, "pushed").await.len(), images.len());
}

async fn next(w: &mut streams::watch::Watch) -> (EventType, String) {
    let e = tokio::time::timeout(Duration::from_secs(5), w.next()).await.expect("an event in time").unwrap().unwrap();
    let name = match &e.object {
        WatchObject::Stream(s) => s.metadata.name.clone(),
        WatchObject::Tag(t) => t.metadata.name.clone(),
    };
    (e.kind, name)
}

#[tokio::test]
async fn watches_report_every_change() {
    let Env { svc, store, .. } = env();
    let app = repo("ns/app");
    push(&svc, &app, "v1", &image("a")).await;
    push(&svc, &repo("other/x"), "v1", &image("x")).await;
    let scope = WatchScope { namespace: Some(ns()), name: None };
    let mut w = svc.watch(Watched::ImageStreams, scope.clone(), None);
    assert_eq!(next(&mut w).await, (EventType::Added, "app".into()));
    let since = svc.revision().await.unwrap();
    let mut tags = svc.watch(Watched::ImageStreamTags, scope.clone(), Some(since));
    push(&svc, &app, "v1", &image("b")).await;
    assert_eq!(next(&mut w).await, (EventType::Modified, "app".into()));
    assert_eq!(next(&mut tags).await, (EventType::Modified, "app:v1".into()));
    push(&svc, &app, "v2", &image("b")).await;
    assert_eq!(next(&mut w).await, (EventType::Modified, "app".into()));
    assert_eq!(next(&mut tags).await, (EventType::Added, "app:v2".into()));
    // Another namespace is not seen; unrelated keys are not either.
    push(&svc, &repo("other/x"), "v1", &image("y")).await;
    store.commit(Txn::new().put("uploads/x", b"{}".to_vec())).await.unwrap();
    svc.delete_istag(&app, &tag("v2")).await.unwrap();
    // (The stream key changed too, so app:v1 may be reported as modified first.)
    let mut e = next(&mut tags).await;
    if e == (EventType::Modified, "app:v1".into()) {
        e = next(&mut tags).await;
    }
    assert_eq!(e, (EventType::Deleted, "app:v2".into()));
    assert_eq!(next(&mut w).await, (EventType::Modified, "app".into()));
    // A watch from an older resourceVersion first reports what changed since.
    let mut late = svc.watch(Watched::ImageStreams, scope.clone(), Some(since));
    assert_eq!(next(&mut late).await, (EventType::Modified, "app".into()));
    svc.delete_stream(&app).await.unwrap();
    assert_eq!(next(&mut w).await, (EventType::Deleted, "app".into()));
    assert_eq!(next(&mut late).await, (EventType::Deleted, "app".into()));
    // A watch that starts after the deletions, from before them, learns of them (in revision order: app:v2 went
    // with its tag, app:v1 with the stream).
    let mut after = svc.watch(Watched::ImageStreams, scope.clone(), Some(since));
    assert_eq!(next(&mut after).await, (EventType::Deleted, "app".into()));
    let mut after = svc.watch(Watched::ImageStreamTags, scope.clone(), Some(since));
    assert_eq!(next(&mut after).await, (EventType::Deleted, "app:v2".into()));
    assert_eq!(next(&mut after).await, (EventType::Deleted, "app:v1".into()));
    let now = svc.revision().await.unwrap();
    let mut quiet = svc.watch(Watched::ImageStreamTags, scope.clone(), Some(now));
    assert!(tokio::time::timeout(Duration::from_millis(200), quiet.next()).await.is_err(), "nothing happened since");
    // One name only.
    let one = WatchScope { namespace: Some(ns()), name: Some("b".into()) };
    let mut w = svc.watch(Watched::ImageStreams, one, None);
    push(&svc, &repo("ns/a"), "v1", &image("a")).await;
    push(&svc, &repo("ns/b"), "v1", &image("a")).await;
    assert_eq!(next(&mut w).await, (EventType::Added, "b".into()));
}

#[tokio::test]
async fn a_watch_from_before_forgotten_deletions_is_expired() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open_with_retention(&dir.path().join("m.redb"), Duration::ZERO).unwrap());
    let svc = StreamService::new(store.clone(), "reg.example:5000");
    let app = repo("ns/app");
    push(&svc, &app, "v1", &image("a")).await;
    let since = svc.revision().await.unwrap();
    svc.delete_stream(&app).await.unwrap();
    // A commit a second later prunes the tombstones (retention zero).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    push(&svc, &repo("ns/other"), "v1", &image("b")).await;
    let scope = WatchScope { namespace: Some(ns()), name: None };
    let mut w = svc.watch(Watched::ImageStreams, scope.clone(), Some(since));
    let e = w.next().await.unwrap().unwrap_err();
    assert!(streams::watch::is_expired(&e), "{e}");
    // From now on is fine.
    let now = svc.revision().await.unwrap();
    let mut w = svc.watch(Watched::ImageStreams, scope, Some(now));
    assert!(tokio::time::timeout(Duration::from_millis(200), w.next()).await.is_err());
}
