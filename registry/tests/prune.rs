//! `adm prune images` (`registry::gc::prune`) on a real server over the filesystem and redb: a dry run lists the
//! tag-history items beyond `--keep-tag-revisions`, their images and their unique layers with sizes and changes
//! nothing; `--confirm` removes exactly that list, the kept images still pull completely (digests verified) and
//! the bytes under the blob directory drop by what was reported. `--keep-younger-than` protects recent items;
//! `--prune-over-size-limit` is refused (with the keep flags: as a combination error); only a cluster-admin may
//! prune; the scheduled pruner (`[prune]`) prunes on its own; an image another tag still names is kept.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use names::Digest;
use registry::testing::TestRegistry;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use storage_backends::keys;

const TOKEN: &str = "prune-admin-secret-token";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// One pushed image: its manifest's digest and its blobs (config first).
struct Pushed {
    manifest: Digest,
    blobs: Vec<Digest>,
}

struct Harness {
    reg: TestRegistry,
    http: Client,
}

impl Harness {
    async fn start() -> Harness {
        Harness::on(TestRegistry::builder().with_admin_token(TOKEN).start()).await
    }

    async fn on(reg: TestRegistry) -> Harness {
        let h = Harness { reg, http: Client::new() };
        let r = h.http.post(h.url("/apis/tributary.dev/v1/namespaces")).bearer_auth(TOKEN).json(&json!({"name": "ns"}));
        assert_eq!(r.send().await.unwrap().status(), StatusCode::CREATED);
        h
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.reg.url())
    }

    async fn put_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        let r = self.http.post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}"))).bearer_auth(TOKEN);
        assert_eq!(r.body(bytes.to_vec()).send().await.unwrap().status(), StatusCode::CREATED);
        d
    }

    /// Pushes an image of `layers` (each its bytes) by `tag`.
    async fn push(&self, repo: &str, tag: &str, layers: &[Vec<u8>]) -> Pushed {
        let config = json!({"architecture": "amd64", "os": "linux", "tag": tag, "n": layers.len(),
            "first": Digest::sha256_of(layers.last().unwrap()).to_string()})
        .to_string();
        let c = self.put_blob(repo, config.as_bytes()).await;
        let mut blobs = vec![c.clone()];
        let mut descriptors = Vec::new();
        for l in layers {
            let d = self.put_blob(repo, l).await;
            descriptors
                .push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": l.len()}));
            blobs.push(d);
        }
        let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
            "layers": descriptors})
        .to_string();
        let r = self
            .http
            .put(self.url(&format!("/v2/{repo}/manifests/{tag}")))
            .bearer_auth(TOKEN)
            .header("Content-Type", OCI_MANIFEST)
            .body(manifest.clone());
        assert_eq!(r.send().await.unwrap().status(), StatusCode::CREATED);
        Pushed { manifest: Digest::sha256_of(manifest.as_bytes()), blobs }
    }

    /// GET `path`: its status and body.
    async fn get(&self, path: &str) -> (StatusCode, Vec<u8>) {
        let r = self.http.get(self.url(path)).bearer_auth(TOKEN).header("Accept", OCI_MANIFEST).send().await.unwrap();
        (r.status(), r.bytes().await.unwrap().to_vec())
    }

    /// Pulls an image completely by digest, every digest verified.
    async fn pull(&self, repo: &str, image: &Pushed) {
        let (status, body) = self.get(&format!("/v2/{repo}/manifests/{}", image.manifest)).await;
        assert_eq!(status, StatusCode::OK, "manifest {}", image.manifest);
        assert_eq!(Digest::sha256_of(&body), image.manifest);
        for b in &image.blobs {
            let (status, body) = self.get(&format!("/v2/{repo}/blobs/{b}")).await;
            assert_eq!(status, StatusCode::OK, "blob {b} of {}", image.manifest);
            assert_eq!(&Digest::sha256_of(&body), b);
        }
    }

    async fn prune(&self, body: Value) -> (StatusCode, Value) {
        let r = self.http.post(self.url("/apis/tributary.dev/v1/prune/images")).bearer_auth(TOKEN).json(&body);
        let r = r.send().await.unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    async fn history_len(&self, repo: &str, tag: &str) -> usize {
        let key = keys::istag(&repo.parse().unwrap(), &tag.parse().unwrap());
        let v = self.reg.registry().meta.get_latest(&key).await.unwrap().expect("history");
        serde_json::from_slice::<Value>(&v.value).unwrap()["items"].as_array().unwrap().len()
    }

    /// Runs `tributary ARGS` with the administrator's token: stdout, or the failure's stderr.
    fn cli(&self, args: &[&str]) -> Result<String, String> {
        let o = tokio::task::block_in_place(|| {
            std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
                .args(args)
                .args(["--server", &self.reg.url(), "--token", TOKEN])
                .env("TRIBUTARY_CLIENT_CONFIG", self.reg.data_dir().join("no-client-config"))
                .output()
                .expect("run tributary")
        });
        let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        if o.status.success() {
            Ok(out.into_owned())
        } else {
            Err(err.into_owned())
        }
    }

    async fn stop(self) {
        tokio::task::block_in_place(|| drop(self.reg));
    }
}

/// Bytes of every file under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| if e.path().is_dir() { bytes_under(&e.path()) } else { e.metadata().map_or(0, |m| m.len()) })
                .sum()
        })
        .unwrap_or(0)
}

fn digests(v: &Value, field: &str, key: &str) -> BTreeSet<String> {
    v[field].as_array().unwrap().iter().map(|i| i[key].as_str().unwrap().to_owned()).collect()
}

/// The lines between the dry-run banner and the summary.
fn body_lines(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| !l.starts_with("Dry run") && !l.starts_with("Would delete") && !l.starts_with("Deleted "))
        .filter(|l| !l.is_empty())
        .collect()
}

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
    let blob_bytes: u64 = dry["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["kind"] == "blob")
        .map(|b| b["size"].as_u64().unwrap())
        .sum();
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
    let (status, body) = h.prune(json!({"pruneOverSizeLimit": true})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("not supported"), "{body}");
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
