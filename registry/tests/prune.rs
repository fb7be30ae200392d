//! `adm prune images` (`registry::gc::prune`) on a real server over the filesystem and redb: a dry run lists the
//! tag-history items beyond `--keep-tag-revisions`, their images and their unique layers with sizes and changes
//! nothing; `--confirm` removes exactly that list, the kept images still pull completely (digests verified) and
//! the bytes under the blob directory drop by what was reported. `--keep-younger-than` protects recent items;
//! `--prune-over-size-limit` with a keep flag is refused (tests/limitranges.rs prunes with it); only a
//! cluster-admin may prune; the scheduled pruner (`[prune]`) prunes on its own; an image another tag still names
//! is kept; `--all=false` keeps imported and pulled-through images and prunes pushed ones. The same dry run and
//! `--confirm` on S3 (moto) and etcd free the bucket by what was reported (skipped without `moto_server` and
//! `etcd` unless `TRIBUTARY_E2E_REQUIRED=1`).

use std::collections::BTreeSet;
use std::time::Duration;

use names::Digest;
use registry::testing::TestRegistry;
use reqwest::StatusCode;
use serde_json::{json, Value};

mod common;

use common::harness::{body_lines, bytes_under, digests, reported_blob_bytes, Harness, TOKEN};
use common::{Fake, OCI_MANIFEST};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_lists_what_confirm_removes_and_the_space_is_freed() {
    let h = Harness::start().await;
    let shared = vec![b's'; 3000];
    let mut revisions = Vec::new();
    for i in 0..5u8 {
        let unique = vec![b'a' + i; 1000 + 100 * i as usize];
        revisions.push(h.push("ns/app", "latest", &[shared.clone(), unique]).await);
    }
    let other = h.push("ns/app", "stable", &[shared.clone(), vec![b'z'; 700]]).await;
    assert_eq!(h.history_len("ns/app", "latest").await, 5);
    let blob_dir = h.reg.data_dir().join("blobs");
    let disk_before = bytes_under(&blob_dir);

    // The dry run: the two oldest items, their images, their unique layers and configs.
    let options = json!({"keepTagRevisions": 3, "keepYoungerThanSeconds": 0});
    let (status, dry) = h.prune(options.clone()).await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["dryRun"], json!(true));
    let old: BTreeSet<String> = revisions[..2].iter().map(|p| p.manifest.to_string()).collect();
    assert_eq!(digests(&dry, "tagEvents", "image"), old, "{dry:#}");
    assert!(dry["tagEvents"].as_array().unwrap().iter().all(|e| e["repository"] == "ns/app" && e["tag"] == "latest"));
    assert_eq!(digests(&dry, "images", "digest"), old);
    let mut expected: BTreeSet<String> = old.clone();
    for p in &revisions[..2] {
        expected.extend(p.blobs.iter().map(|d| d.to_string()));
    }
    expected.remove(&Digest::sha256_of(&shared).to_string());
    assert_eq!(digests(&dry, "blobs", "digest"), expected, "the shared layer stays: {dry:#}");
    let layer_sizes: u64 = dry["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["digest"] == json!(revisions[0].blobs[2]) || b["digest"] == json!(revisions[1].blobs[2]))
        .map(|b| b["size"].as_u64().unwrap())
        .sum();
    assert_eq!(layer_sizes, 1000 + 1100, "layer sizes: {dry:#}");

    // Nothing changed.
    assert_eq!(h.history_len("ns/app", "latest").await, 5);
    assert_eq!(bytes_under(&blob_dir), disk_before);
    for p in revisions.iter().chain([&other]) {
        h.pull("ns/app", p).await;
    }

    // The CLI: a dry run, then --confirm removing the same list.
    let flags = ["adm", "prune", "images", "--keep-tag-revisions=3", "--keep-younger-than=0"];
    let dry_text = h.cli(&flags).unwrap();
    println!("--- dry run\n{dry_text}");
    assert!(dry_text.starts_with("Dry run enabled"), "{dry_text}");
    let would = format!("Would delete {} objects, freeing {} bytes", 2 + 2 + expected.len(), dry["bytesFreed"]);
    assert!(dry_text.trim_end().ends_with(&would), "{dry_text}");
    let confirm_text = h.cli(&[&flags[..], &["--confirm"]].concat()).unwrap();
    println!("--- confirm\n{confirm_text}");
    assert_eq!(body_lines(&confirm_text), body_lines(&dry_text), "the same list");
    let deleted = format!("Deleted {} objects, freed {} bytes", 2 + 2 + expected.len(), dry["bytesFreed"]);
    assert!(confirm_text.trim_end().ends_with(&deleted), "{confirm_text}");
    for d in &expected {
        assert!(confirm_text.contains(d.as_str()), "{d} in {confirm_text}");
    }

    // The history keeps 3; the pruned manifests are gone; the kept images pull completely.
    assert_eq!(h.history_len("ns/app", "latest").await, 3);
    for p in &revisions[..2] {
        let (status, _) = h.get(&format!("/v2/ns/app/manifests/{}", p.manifest)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{}", p.manifest);
        let (status, _) = h.get(&format!("/v2/ns/app/blobs/{}", p.blobs[2])).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{}", p.blobs[2]);
    }
    for p in revisions[2..].iter().chain([&other]) {
        h.pull("ns/app", p).await;
    }
    // The blob directory shrank by the blobs' reported bytes (the manifests' bytes live in the metadata store).
    let blob_bytes = reported_blob_bytes(&dry);
    assert_eq!(disk_before - bytes_under(&blob_dir), blob_bytes);

    // Again: nothing left to prune.
    let (_, again) = h.prune(json!({"keepTagRevisions": 3, "keepYoungerThanSeconds": 0, "confirm": true})).await;
    assert_eq!(again["deletedObjects"], json!(0), "{again:#}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_younger_than_protects_recent_items() {
    let h = Harness::start().await;
    let mut pushed = Vec::new();
    for i in 0..2u8 {
        pushed.push(h.push("ns/young", "t", &[vec![b'o' + i; 500]]).await);
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for i in 0..2u8 {
        pushed.push(h.push("ns/young", "t", &[vec![b'r' + i; 500]]).await);
    }
    // The default hour protects every item.
    let (_, dry) = h.prune(json!({"keepTagRevisions": 1})).await;
    assert_eq!(dry["tagEvents"], json!([]), "{dry:#}");
    // Two seconds: only the two older items go, though keeping one revision would allow three.
    let (_, dry) = h.prune(json!({"keepTagRevisions": 1, "keepYoungerThanSeconds": 2, "namespace": "ns"})).await;
    let old: BTreeSet<String> = pushed[..2].iter().map(|p| p.manifest.to_string()).collect();
    assert_eq!(digests(&dry, "tagEvents", "image"), old, "{dry:#}");
    assert_eq!(digests(&dry, "images", "digest"), old, "{dry:#}");
    let (_, done) = h.prune(json!({"keepTagRevisions": 1, "keepYoungerThanSeconds": 2, "confirm": true})).await;
    assert_eq!(digests(&done, "images", "digest"), old, "{done:#}");
    assert_eq!(h.history_len("ns/young", "t").await, 2);
    // Another namespace's prune touches nothing here.
    let (_, other) =
        h.prune(json!({"keepTagRevisions": 1, "keepYoungerThanSeconds": 0, "namespace": "elsewhere"})).await;
    assert_eq!((other["tagEvents"].clone(), other["images"].clone()), (json!([]), json!([])), "{other:#}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals() {
    let h = Harness::start().await;
    let (status, body) = h.prune(json!({"pruneOverSizeLimit": true, "keepTagRevisions": 2})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("cannot be combined"), "{body}");
    // Alone it is taken (tests/limitranges.rs prunes with it); without LimitRanges nothing is over a limit.
    h.push("ns/app", "t", &[vec![b'o'; 5000]]).await;
    h.push("ns/app", "t", &[vec![b'p'; 5000]]).await;
    let (status, body) = h.prune(json!({"pruneOverSizeLimit": true, "confirm": true})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["deletedObjects"], json!(0), "{body:#}");
    let err = h.cli(&["adm", "prune", "images", "--prune-over-size-limit", "--keep-younger-than=1h"]).unwrap_err();
    assert!(err.contains("cannot be combined"), "{err}");

    let anonymous = h.http.post(h.url("/apis/tributary.dev/v1/prune/images")).json(&json!({"confirm": true}));
    assert_eq!(anonymous.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let r = h.http.post(h.url("/apis/tributary.dev/v1/users")).bearer_auth(TOKEN).json(&json!({"name": "bob"}));
    assert_eq!(r.send().await.unwrap().status(), StatusCode::CREATED);
    let owner = json!({"owner": {"kind": "User", "name": "bob"}});
    let r = h.http.post(h.url("/apis/tributary.dev/v1/tokens")).bearer_auth(TOKEN).json(&owner);
    let bob: Value = r.send().await.unwrap().json().await.unwrap();
    let r = h.http.post(h.url("/apis/tributary.dev/v1/prune/images")).bearer_auth(bob["token"].as_str().unwrap());
    assert_eq!(r.json(&json!({})).send().await.unwrap().status(), StatusCode::FORBIDDEN);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_pruner_prunes_on_its_own() {
    let builder =
        TestRegistry::builder().with_admin_token(TOKEN).with_prune(Duration::from_millis(500), 1, Duration::ZERO);
    let h = Harness::on(builder.start()).await;
    let mut pushed = Vec::new();
    for i in 0..3u8 {
        pushed.push(h.push("ns/sched", "t", &[vec![b'k' + i; 300]]).await);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while h.history_len("ns/sched", "t").await > 1 {
        assert!(std::time::Instant::now() < deadline, "the scheduled pruner did not run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its images go as well (the same run, once the history was edited).
    for p in &pushed[..2] {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while h.get(&format!("/v2/ns/sched/manifests/{}", p.manifest)).await.0 != StatusCode::NOT_FOUND {
            assert!(std::time::Instant::now() < deadline, "{} still served", p.manifest);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    h.pull("ns/sched", &pushed[2]).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_another_tag_still_names_is_kept() {
    let h = Harness::start().await;
    let mut pushed = Vec::new();
    for i in 0..4u8 {
        pushed.push(h.push("ns/app", "latest", &[vec![b'p' + i; 400]]).await);
    }
    // The oldest image is also tagged `pinned`, in another stream of the namespace.
    let (status, bytes) = h.get(&format!("/v2/ns/app/manifests/{}", pushed[0].manifest)).await;
    assert_eq!(status, StatusCode::OK);
    for b in &pushed[0].blobs {
        let (_, blob) = h.get(&format!("/v2/ns/app/blobs/{b}")).await;
        h.put_blob("ns/pins", &blob).await;
    }
    let r = h.http.put(h.url("/v2/ns/pins/manifests/pinned")).bearer_auth(TOKEN).header("Content-Type", OCI_MANIFEST);
    assert_eq!(r.body(bytes).send().await.unwrap().status(), StatusCode::CREATED);

    let (_, done) = h.prune(json!({"keepTagRevisions": 1, "keepYoungerThanSeconds": 0, "confirm": true})).await;
    let all_but_newest: BTreeSet<String> = pushed[..3].iter().map(|p| p.manifest.to_string()).collect();
    assert_eq!(digests(&done, "tagEvents", "image"), all_but_newest, "{done:#}");
    let gone: BTreeSet<String> = pushed[1..3].iter().map(|p| p.manifest.to_string()).collect();
    assert_eq!(digests(&done, "images", "digest"), gone, "the pinned image stays: {done:#}");
    assert!(!done.to_string().contains(&pushed[0].blobs[1].to_string()), "its layer stays: {done:#}");
    h.pull("ns/pins", &pushed[0]).await;
    h.pull("ns/app", &pushed[3]).await;
    // A kept Image keeps its manifest links everywhere, ns/app's too.
    let (status, _) = h.get(&format!("/v2/ns/app/manifests/{}", pushed[0].manifest)).await;
    assert_eq!(status, StatusCode::OK, "the Image is kept, so is its manifest link in ns/app");
    h.stop().await;
}

/// `--all=false` through the CLI: of two tags' old revisions, the one pushed here goes and the imported one (its
/// layer pulled through and cached here) stays, still pullable; with `--all` (the default) it goes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_false_keeps_imported_and_pulled_through_images() {
    let h = Harness::start().await;
    let fake = Fake::start();
    let pushed =
        [h.push("ns/mixed", "local", &[vec![b'l'; 600]]).await, h.push("ns/mixed", "local", &[vec![b'm'; 600]]).await];
    // Two imports of the upstream's tag, which moves in between; the first image's layer is pulled through.
    let import = |h: &Harness| {
        let from = format!("{}/lib/app:1", fake.host);
        h.cli(&["import-image", "mixed:remote", "--from", &from, "--insecure", "--confirm", "-n", "ns"]).unwrap()
    };
    let first_layer = vec![b'u'; 700];
    let first_digest = Digest::sha256_of(&first_layer);
    let first = fake.image("lib/app", "1", first_layer.clone(), &first_digest, Duration::ZERO);
    import(&h);
    let (status, body) = h.get(&format!("/v2/ns/mixed/blobs/{first_digest}")).await;
    assert_eq!((status, body.len()), (StatusCode::OK, first_layer.len()), "pulled through");
    let second_layer = vec![b'v'; 700];
    let second = fake.image("lib/app", "1", second_layer.clone(), &Digest::sha256_of(&second_layer), Duration::ZERO);
    import(&h);
    assert_eq!((h.history_len("ns/mixed", "local").await, h.history_len("ns/mixed", "remote").await), (2, 2));

    let flags = ["adm", "prune", "images", "--keep-tag-revisions=1", "--keep-younger-than=0", "-o", "json"];
    let run = |extra: &[&str]| -> serde_json::Value {
        serde_json::from_str(&h.cli(&[&flags[..], extra].concat()).unwrap()).unwrap()
    };
    let only_pushed: BTreeSet<String> = BTreeSet::from([pushed[0].manifest.to_string()]);
    let dry = run(&["--all=false"]);
    assert_eq!(digests(&dry, "tagEvents", "image"), only_pushed, "{dry:#}");
    assert_eq!(digests(&dry, "images", "digest"), only_pushed, "{dry:#}");
    let done = run(&["--all=false", "--confirm"]);
    assert_eq!(
        (done["tagEvents"].clone(), done["images"].clone(), done["blobs"].clone()),
        (dry["tagEvents"].clone(), dry["images"].clone(), dry["blobs"].clone()),
        "the dry run listed what --confirm removed"
    );
    assert_eq!((h.history_len("ns/mixed", "local").await, h.history_len("ns/mixed", "remote").await), (1, 2));
    let (status, _) = h.get(&format!("/v2/ns/mixed/manifests/{}", pushed[0].manifest)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h.get(&format!("/v2/ns/mixed/manifests/{first}")).await;
    assert_eq!(status, StatusCode::OK, "the imported image stays with --all=false");
    let (status, body) = h.get(&format!("/v2/ns/mixed/blobs/{first_digest}")).await;
    assert_eq!((status, Digest::sha256_of(&body)), (StatusCode::OK, first_digest.clone()), "its cached layer too");

    // --all (the default): the imported revision goes, with its cached layer.
    let all = run(&["--confirm"]);
    assert_eq!(digests(&all, "tagEvents", "image"), BTreeSet::from([first.to_string()]), "{all:#}");
    assert_eq!(digests(&all, "images", "digest"), BTreeSet::from([first.to_string()]), "{all:#}");
    assert!(digests(&all, "blobs", "digest").contains(&first_digest.to_string()), "{all:#}");
    assert_eq!(h.history_len("ns/mixed", "remote").await, 1);
    let (status, _) = h.get(&format!("/v2/ns/mixed/manifests/{second}")).await;
    assert_eq!(status, StatusCode::OK);
    h.pull("ns/mixed", &pushed[1]).await;
    h.stop().await;
}

/// A dry run, then `--confirm`, on S3 (moto) and etcd: the same list, and the bucket holds exactly the reported
/// blob bytes fewer afterwards; the kept images pull completely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_on_s3_and_etcd_frees_the_bucket() {
    use registry::config::storage::{Blobs, Metadata, Storage};
    use storage_backends::testing::etcd::EtcdServer;
    use storage_backends::testing::s3::{S3Server, BUCKET};

    let Some(etcd) = EtcdServer::start() else { return };
    let Some(s3) = S3Server::start() else { return };
    let storage = Storage {
        blobs: Blobs::S3(s3.config(BUCKET, Some("prune"))),
        metadata: Metadata::Etcd(etcd.config("/prune/")),
    };
    let h = Harness::on(TestRegistry::builder().with_admin_token(TOKEN).with_storage(storage).start()).await;
    let shared = vec![b's'; 64 * 1024];
    let mut revisions = Vec::new();
    for i in 0..4u8 {
        let unique = vec![b'a' + i; 100 * 1024 + i as usize];
        revisions.push(h.push("ns/app", "latest", &[shared.clone(), unique]).await);
    }
    let (objects_before, bytes_before) = s3.stored(BUCKET, Some("prune"));
    assert!(bytes_before >= 4 * 100 * 1024 + 64 * 1024, "{objects_before} objects, {bytes_before} bytes");

    let flags = ["adm", "prune", "images", "--keep-tag-revisions=2", "--keep-younger-than=0"];
    let dry_text = h.cli(&flags).unwrap();
    println!("--- dry run on s3+etcd\n{dry_text}");
    assert!(dry_text.starts_with("Dry run enabled"), "{dry_text}");
    assert_eq!(s3.stored(BUCKET, Some("prune")), (objects_before, bytes_before), "a dry run changes nothing");
    let (_, dry) = h.prune(json!({"keepTagRevisions": 2, "keepYoungerThanSeconds": 0})).await;
    let old: BTreeSet<String> = revisions[..2].iter().map(|p| p.manifest.to_string()).collect();
    assert_eq!(digests(&dry, "images", "digest"), old, "{dry:#}");
    let blob_bytes = reported_blob_bytes(&dry);
    let unique: u64 = revisions[..2]
        .iter()
        .map(|p| p.blobs[2].clone())
        .map(|d| {
            dry["blobs"].as_array().unwrap().iter().find(|b| b["digest"] == json!(d)).expect("unique layer listed")
                ["size"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(unique, 2 * 100 * 1024 + 1, "{dry:#}");

    let confirm_text = h.cli(&[&flags[..], &["--confirm"]].concat()).unwrap();
    println!("--- confirm on s3+etcd\n{confirm_text}");
    assert_eq!(body_lines(&confirm_text), body_lines(&dry_text), "the same list");
    let (objects_after, bytes_after) = s3.stored(BUCKET, Some("prune"));
    let blob_count = dry["blobs"].as_array().unwrap().iter().filter(|b| b["kind"] == "blob").count();
    assert_eq!(bytes_before - bytes_after, blob_bytes, "the bucket lost exactly the reported blob bytes");
    assert_eq!(objects_before - objects_after, blob_count);
    println!("bucket: {objects_before} objects / {bytes_before} bytes before, {objects_after} / {bytes_after} after");
    assert_eq!(h.history_len("ns/app", "latest").await, 2);
    for p in &revisions[..2] {
        let (status, _) = h.get(&format!("/v2/ns/app/manifests/{}", p.manifest)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    for p in &revisions[2..] {
        h.pull("ns/app", p).await;
    }
    h.stop().await;
    drop((s3, etcd));
}
