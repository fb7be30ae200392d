//! Garbage collection under load, in the shape of zot's GC stress test, through the real HTTP server: pushers
//! (8 at once, hundreds of images sharing layers, small blobs), taggers and deleters (tag delete, manifest delete
//! by digest, stream delete) run while the background collector sweeps every 200 ms with a one-second grace
//! period. Pushers also upload and unlink junk, part of it layers they push again (and reference) a few seconds
//! later, so sweeps race pushes of the very content they delete. At the end every acknowledged image that was not deleted pulls
//! completely with every digest verified, and after the grace period every blob that no link or Image references
//! is gone from the disk / the bucket. Runs on filesystem+redb, and on S3+etcd (real moto and etcd servers;
//! skipped without them unless `TRIBUTARY_E2E_REQUIRED=1`).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use names::Digest;
use registry::config::storage::{Blobs, Metadata, Storage};
use registry::testing::TestRegistry;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use storage_backends::content::ContentName;
use storage_backends::testing::etcd::EtcdServer;
use storage_backends::testing::s3::{S3Server, BUCKET};
use storage_backends::{keys, MetadataStore};
use tokio::sync::Mutex;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const PUSHERS: usize = 8;
const IMAGES_PER_PUSHER: usize = 25;
const REPOS: usize = 6;
const SHARED_LAYERS: usize = 16;
const INTERVAL: Duration = Duration::from_millis(200);
const GRACE: Duration = Duration::from_secs(1);

/// A small deterministic generator (no extra dependency).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `size` bytes of content named by `seed`.
fn content(seed: &str, size: usize) -> Vec<u8> {
    let mut rng = Rng(Digest::sha256_of(seed.as_bytes())
        .hex()
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
        | 1);
    (0..size).map(|_| rng.next() as u8).collect()
}

/// The layer pusher `pusher` references in its image `i` (and uploads as junk eight images before).
fn recycled(pusher: usize, i: usize) -> Vec<u8> {
    content(&format!("recycled-{pusher}-{i}"), 2048 + (i % 7) * 100)
}

/// An acknowledged image: where it is tagged and what it is made of.
#[derive(Clone, Debug)]
struct Pushed {
    repo: String,
    tag: String,
    manifest: Digest,
    blobs: Vec<Digest>,
}

#[derive(Default)]
struct Counts {
    images: AtomicU64,
    tags: AtomicU64,
    tag_deletes: AtomicU64,
    manifest_deletes: AtomicU64,
    stream_deletes: AtomicU64,
    upload_retries: AtomicU64,
    push_retries: AtomicU64,
    junk: AtomicU64,
    junk_bytes: AtomicU64,
}

struct World {
    url: String,
    http: Client,
    /// Per repository: its acknowledged images, under a lock held across each write so that the bookkeeping
    /// follows the registry's order.
    repos: Vec<Mutex<Vec<Pushed>>>,
    shared: Vec<Vec<u8>>,
    counts: Counts,
    /// Digests uploaded only as junk (never part of an acknowledged image).
    junk: std::sync::Mutex<BTreeMap<Digest, u64>>,
    used: std::sync::Mutex<HashSet<Digest>>,
}

impl World {
    fn url(&self, p: &str) -> String {
        format!("{}{p}", self.url)
    }

    /// Uploads `bytes` into `repo` (monolithic POST; or a mount from `from` first), retried when the upload loses
    /// to a sweep of the same content (answered as an invalid upload: the client pushes again).
    async fn upload(&self, repo: &str, bytes: &[u8], from: Option<&str>) -> Digest {
        let d = Digest::sha256_of(bytes);
        if let Some(from) = from {
            let r = self.http.post(self.url(&format!("/v2/{repo}/blobs/uploads/?mount={d}&from={from}"))).send();
            let r = r.await.unwrap();
            if r.status() == StatusCode::CREATED {
                return d;
            }
            assert_eq!(r.status(), StatusCode::ACCEPTED, "mount of {d}");
            let location = r.headers()["location"].to_str().unwrap().to_owned();
            let sep = if location.contains('?') { '&' } else { '?' };
            let r = self.http.put(self.url(&format!("{location}{sep}digest={d}"))).body(bytes.to_vec()).send();
            let r = r.await.unwrap();
            if r.status() == StatusCode::CREATED {
                return d;
            }
            self.counts.upload_retries.fetch_add(1, Ordering::Relaxed);
        }
        for attempt in 0..5 {
            let r = self.http.post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}"))).body(bytes.to_vec());
            let r = r.send().await.unwrap();
            if r.status() == StatusCode::CREATED {
                return d;
            }
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            assert!(attempt < 4 && status.is_client_error(), "upload of {d} to {repo}: {status} {body}");
            self.counts.upload_retries.fetch_add(1, Ordering::Relaxed);
        }
        unreachable!()
    }

    async fn push(&self, pusher: usize, i: usize, rng: &mut Rng) {
        let repo_ix = rng.below(REPOS);
        let repo = format!("ns/r{repo_ix}");
        let from = format!("ns/r{}", (repo_ix + 1) % REPOS);
        let shared = [rng.below(SHARED_LAYERS), rng.below(SHARED_LAYERS)];
        let reused = &recycled(pusher, i);
        let unique = content(&format!("unique-{pusher}-{i}"), 1024 + rng.below(3072));
        let config =
            json!({"architecture": "amd64", "os": "linux", "config": {"Env": [format!("P={pusher}-{i}")]}}).to_string();
        let tag = format!("p{pusher}-{i}");
        // A deleter may delete the stream (its links) between the uploads and the manifest: then push again.
        for attempt in 0.. {
            let mut layers = Vec::new();
            for s in shared {
                let bytes = &self.shared[s];
                layers.push((self.upload(&repo, bytes, Some(&from)).await, bytes.len()));
            }
            layers.push((self.upload(&repo, reused, None).await, reused.len()));
            layers.push((self.upload(&repo, &unique, None).await, unique.len()));
            let c = self.upload(&repo, config.as_bytes(), None).await;
            let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
                "layers": layers.iter().map(|(d, size)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": d, "size": size})).collect::<Vec<_>>()})
            .to_string();
            let m = Digest::sha256_of(manifest.as_bytes());
            let mut images = self.repos[repo_ix].lock().await;
            let r = self
                .http
                .put(self.url(&format!("/v2/{repo}/manifests/{tag}")))
                .header("Content-Type", OCI_MANIFEST)
                .body(manifest)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            if status == StatusCode::BAD_REQUEST && body.contains("MANIFEST_BLOB_UNKNOWN") && attempt < 3 {
                self.counts.push_retries.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            assert_eq!(status, StatusCode::CREATED, "manifest {repo}:{tag}: {body}");
            let mut blobs: Vec<Digest> = layers.into_iter().map(|(d, _)| d).collect();
            blobs.push(c);
            self.used.lock().unwrap().extend(blobs.iter().cloned());
            images.push(Pushed { repo: repo.clone(), tag: tag.clone(), manifest: m, blobs });
            break;
        }
        self.counts.images.fetch_add(1, Ordering::Relaxed);

        // Garbage, in a repository no image uses: every other image, a one-off blob, or the layer this pusher
        // references eight images later, is uploaded and unlinked again; sweeps then race the later push of it.
        if i.is_multiple_of(2) {
            let junk = if rng.below(2) == 0 {
                recycled(pusher, i + 8)
            } else {
                content(&format!("junk-{pusher}-{i}"), 512 + rng.below(2048))
            };
            let d = self.upload("ns/junk", &junk, None).await;
            let r = self.http.delete(self.url(&format!("/v2/ns/junk/blobs/{d}"))).send().await.unwrap();
            assert!(r.status() == StatusCode::ACCEPTED || r.status() == StatusCode::NOT_FOUND, "{}", r.status());
            self.junk.lock().unwrap().insert(d, junk.len() as u64);
            self.counts.junk.fetch_add(1, Ordering::Relaxed);
            self.counts.junk_bytes.fetch_add(junk.len() as u64, Ordering::Relaxed);
        }
    }

    /// Tags an acknowledged image again under a new tag of its repository.
    async fn tag(&self, n: usize, rng: &mut Rng) {
        let repo_ix = rng.below(REPOS);
        let mut images = self.repos[repo_ix].lock().await;
        if images.is_empty() {
            return;
        }
        let image = images[rng.below(images.len())].clone();
        let r = self.http.get(self.url(&format!("/v2/{}/manifests/{}", image.repo, image.manifest)));
        let r = r.header("Accept", OCI_MANIFEST).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}@{}", image.repo, image.manifest);
        let bytes = r.bytes().await.unwrap();
        let tag = format!("t{n}");
        let put = self.http.put(self.url(&format!("/v2/{}/manifests/{tag}", image.repo)));
        let r = put.header("Content-Type", OCI_MANIFEST).body(bytes).send().await.unwrap();
        let status = r.status();
        assert_eq!(status, StatusCode::CREATED, "tag {tag}: {}", r.text().await.unwrap_or_default());
        images.push(Pushed { tag, ..image });
        self.counts.tags.fetch_add(1, Ordering::Relaxed);
    }

    /// Deletes a tag, a manifest by digest (every tag of it goes) or, now and then, a whole stream.
    async fn delete(&self, n: usize, rng: &mut Rng) {
        // Streams are deleted in the last repository only, so that most images survive to be verified.
        let repo_ix = if n % 30 == 29 { REPOS - 1 } else { rng.below(REPOS) };
        let repo = format!("ns/r{repo_ix}");
        let mut images = self.repos[repo_ix].lock().await;
        if n % 30 == 29 {
            let r = self
                .http
                .delete(self.url(&format!("/apis/image.openshift.io/v1/namespaces/ns/imagestreams/r{repo_ix}")));
            let status = r.send().await.unwrap().status();
            assert!(status == StatusCode::OK || status == StatusCode::NOT_FOUND, "stream delete: {status}");
            images.clear();
            self.counts.stream_deletes.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if images.is_empty() {
            return;
        }
        let victim = images[rng.below(images.len())].clone();
        if n.is_multiple_of(2) {
            let r = self.http.delete(self.url(&format!("/v2/{repo}/manifests/{}", victim.tag))).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::ACCEPTED, "tag delete {repo}:{}", victim.tag);
            images.retain(|p| p.tag != victim.tag);
            self.counts.tag_deletes.fetch_add(1, Ordering::Relaxed);
        } else {
            let r = self.http.delete(self.url(&format!("/v2/{repo}/manifests/{}", victim.manifest))).send();
            assert_eq!(r.await.unwrap().status(), StatusCode::ACCEPTED, "manifest delete {repo}@{}", victim.manifest);
            images.retain(|p| p.manifest != victim.manifest);
            self.counts.manifest_deletes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Pulls an image by tag and every blob of it, verifying each digest.
    async fn pull(&self, image: &Pushed) {
        let r = self.http.get(self.url(&format!("/v2/{}/manifests/{}", image.repo, image.tag)));
        let r = r.header("Accept", OCI_MANIFEST).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "pull {}:{}", image.repo, image.tag);
        let bytes = r.bytes().await.unwrap();
        assert_eq!(Digest::sha256_of(&bytes), image.manifest, "{}:{} is the pushed manifest", image.repo, image.tag);
        for d in &image.blobs {
            let r = self.http.get(self.url(&format!("/v2/{}/blobs/{d}", image.repo))).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "blob {d} of {}:{} LOST", image.repo, image.tag);
            assert_eq!(&Digest::sha256_of(&r.bytes().await.unwrap()), d, "blob {d} of {}:{}", image.repo, image.tag);
        }
    }
}

/// Every digest a link or an Image references, read from the metadata store independently of the collector.
async fn referenced(meta: &dyn MetadataStore) -> HashSet<Digest> {
    let mut out = HashSet::new();
    for prefix in ["links/", keys::IMAGES] {
        let mut after: Option<String> = None;
        loop {
            let page = meta.list(prefix, after.as_deref(), 1000).await.unwrap();
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (key, v) in page {
                out.insert(keys::digest_of_key(&key).unwrap());
                if prefix == keys::IMAGES {
                    let image: Value = serde_json::from_slice(&v.value).unwrap();
                    if let Some(c) = image["dockerImageConfig"].as_str() {
                        out.insert(c.parse().unwrap());
                    }
                    for l in image["dockerImageLayers"].as_array().into_iter().flatten() {
                        out.insert(l["name"].as_str().unwrap().parse().unwrap());
                    }
                }
            }
        }
    }
    out
}

async fn stress(reg: TestRegistry, backend: &str) {
    let started = Instant::now();
    let world = Arc::new(World {
        url: reg.url(),
        http: Client::builder().pool_max_idle_per_host(64).build().unwrap(),
        repos: (0..REPOS).map(|_| Mutex::new(Vec::new())).collect(),
        shared: (0..SHARED_LAYERS).map(|i| content(&format!("shared-{i}"), 1024 + 256 * i)).collect(),
        counts: Counts::default(),
        junk: Default::default(),
        used: Default::default(),
    });
    let mut pushers = Vec::new();
    for p in 0..PUSHERS {
        let world = world.clone();
        pushers.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (p as u64 + 1));
            for i in 0..IMAGES_PER_PUSHER {
                world.push(p, i, &mut rng).await;
            }
        }));
    }
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut others = Vec::new();
    for k in 0..4 {
        let (world, done) = (world.clone(), done.clone());
        others.push(tokio::spawn(async move {
            let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (k as u64 + 11));
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                if k < 2 {
                    world.tag(n * 2 + k, &mut rng).await;
                } else {
                    world.delete(n * 2 + k, &mut rng).await;
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(if k < 2 { 20 } else { 100 })).await;
            }
        }));
    }
    for p in pushers {
        p.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    for o in others {
        o.await.unwrap();
    }
    let load = started.elapsed();

    // Everything acknowledged and not deleted pulls completely.
    let expected: Vec<Pushed> = {
        let mut all = Vec::new();
        for r in &world.repos {
            all.extend(r.lock().await.iter().cloned());
        }
        all
    };
    // After the grace period the background sweeps have removed every blob nothing references; a final sweep
    // through the library reports what was left to do (nothing, or the last few seconds' garbage).
    tokio::time::sleep(GRACE + INTERVAL * 3).await;
    let collector = reg.registry().collector();
    let options = registry::gc::SweepOptions { grace: GRACE, ..Default::default() };
    let mut last = collector.sweep(&options).await.unwrap();
    let mut final_freed = (last.deleted.len(), last.bytes_freed);
    // (The background sweeps go on meanwhile: what one of them is deleting right now counts as waiting here. They
    // run at the idle scheduling policy, so on a machine busy with other work they may take a while to finish.)
    let deadline = Instant::now() + Duration::from_secs(30);
    while last.unreferenced > last.deleted.len() && Instant::now() < deadline {
        tokio::time::sleep(GRACE / 2).await;
        last = collector.sweep(&options).await.unwrap();
        final_freed = (final_freed.0 + last.deleted.len(), final_freed.1 + last.bytes_freed);
    }
    assert_eq!(last.unreferenced, last.deleted.len(), "{last:?}");

    let meta = reg.registry().meta.clone();
    let refs = referenced(&*meta).await;
    let stored: Vec<Digest> = reg
        .registry()
        .blobs
        .list_content()
        .try_filter_map(|o| async move {
            Ok(match o.name {
                ContentName::Blob(d) => Some(d),
                ContentName::Uploaded(_) => None,
            })
        })
        .try_collect()
        .await
        .unwrap();
    let locations = reg.registry().blobs.list_locations().await.unwrap();
    let stored: HashSet<Digest> = stored.into_iter().chain(locations.into_iter().map(|(d, _, _)| d)).collect();
    let unreferenced: Vec<&Digest> = stored.iter().filter(|d| !refs.contains(d)).collect();
    assert!(unreferenced.is_empty(), "{} blobs stored that nothing references: {unreferenced:?}", unreferenced.len());
    let junk_only: Vec<(Digest, u64)> = {
        let used = world.used.lock().unwrap();
        world.junk.lock().unwrap().iter().filter(|(d, _)| !used.contains(d)).map(|(d, s)| (d.clone(), *s)).collect()
    };
    for (d, _) in &junk_only {
        assert!(!stored.contains(d), "junk {d} was never collected");
    }
    // Every acknowledged image that was not deleted pulls completely after all those sweeps.
    for image in &expected {
        world.pull(image).await;
    }

    let c = &world.counts;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let by_kind: BTreeMap<&str, usize> = last.deleted.iter().fold(BTreeMap::new(), |mut m, f| {
        *m.entry(f.kind.as_str()).or_default() += 1;
        m
    });
    eprintln!(
        "gc stress on {backend}: {} images pushed by {PUSHERS} pushers, {} more tags; deleted: {} tags, {} manifests, \
         {} streams; {} junk uploads ({} bytes), {} distinct junk-only blobs ({} bytes) all swept; {} upload retries after \
         losing to a sweep, {} pushes again after a stream delete; {} images verified (every digest), nothing lost; {} blobs left stored, all referenced; \
         final sweep freed {} items ({} bytes, {by_kind:?}); load phase {load:?}, total {:?}",
        get(&c.images),
        get(&c.tags),
        get(&c.tag_deletes),
        get(&c.manifest_deletes),
        get(&c.stream_deletes),
        get(&c.junk),
        get(&c.junk_bytes),
        junk_only.len(),
        junk_only.iter().map(|(_, s)| s).sum::<u64>(),
        get(&c.upload_retries),
        get(&c.push_retries),
        expected.len(),
        stored.len(),
        final_freed.0,
        final_freed.1,
        started.elapsed(),
    );
    assert_eq!(get(&c.images), (PUSHERS * IMAGES_PER_PUSHER) as u64);
    tokio::task::block_in_place(|| drop(reg));
}

/// The two runs one after the other: each is a load test of its own.
static SERIAL: Mutex<()> = Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_under_load_on_filesystem_and_redb() {
    let _serial = SERIAL.lock().await;
    let reg = TestRegistry::builder().with_gc(INTERVAL, GRACE).start();
    stress(reg, "filesystem+redb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_under_load_on_s3_and_etcd() {
    let _serial = SERIAL.lock().await;
    let Some(etcd) = EtcdServer::start() else { return };
    let Some(s3) = S3Server::start() else { return };
    let storage = Storage {
        blobs: Blobs::S3(s3.config(BUCKET, Some("gc-stress"))),
        metadata: Metadata::Etcd(etcd.config("/gc-stress/")),
    };
    let reg = TestRegistry::builder().with_storage(storage).with_gc(INTERVAL, GRACE).start();
    stress(reg, "s3+etcd").await;
}
