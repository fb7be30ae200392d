//! The workloads of issue 6. Each group starts both registries on fresh data directories, prepares what it needs
//! untimed, then measures the two alternately (ours, peer, ours, peer …) and records one [`Sample`] per server
//! per pair in the [`Report`]. Server CPU comes from `/proc` around each timed section; memory from `VmRSS` and
//! `VmHWM`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde_json::json;

use crate::client::{Client, OCI_MANIFEST};
use crate::content::{random_bytes, Contents};
use crate::report::{quantile_ms, Cost, Report, Sample, Unit};
use crate::servers::{Kind, PeerRole, Server, Storage, Tools};

pub const MIB: u64 = 1 << 20;
/// Every namespace a workload pushes into.
const NAMESPACES: [&str; 21] = [
    "bench", "cat0", "cat1", "cat2", "cat3", "cat4", "cat5", "cat6", "cat7", "cat8", "cat9", "grow0", "grow1", "grow2",
    "grow3", "grow4", "grow5", "grow6", "grow7", "grow8", "grow9",
];
pub const GIB: f64 = (1u64 << 30) as f64;

/// Sizes, counts and durations of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub quick: bool,
    pub pairs: usize,
    pub push_sizes: Vec<u64>,
    pub pull_sizes: Vec<u64>,
    pub concurrencies: Vec<usize>,
    pub manifest_secs: f64,
    pub tags: usize,
    pub catalog_sizes: Vec<usize>,
    pub list_requests: usize,
    pub mixed_secs: f64,
    pub mixed_blob: u64,
    pub big_push: u64,
    /// Tag and repository counts of the growth group, in increasing order.
    pub growth_sizes: Vec<usize>,
    /// The peer is populated only up to this count (it takes minutes per 10,000 PUTs).
    pub growth_peer_cap: usize,
    /// Manifest GETs per latency sample in the growth group.
    pub growth_requests: usize,
}

impl Plan {
    pub fn new(quick: bool, pairs: Option<usize>) -> Plan {
        if quick {
            Plan {
                quick,
                pairs: pairs.unwrap_or(3),
                push_sizes: vec![MIB, 64 * MIB],
                pull_sizes: vec![64 * MIB],
                concurrencies: vec![1, 16, 64],
                manifest_secs: 0.25,
                tags: 500,
                catalog_sizes: vec![100, 500],
                list_requests: 10,
                mixed_secs: 1.0,
                mixed_blob: 16 * MIB,
                big_push: 256 * MIB,
                growth_sizes: vec![10, 100, 1_000],
                growth_peer_cap: 1_000,
                growth_requests: 200,
            }
        } else {
            Plan {
                quick,
                pairs: pairs.unwrap_or(3),
                push_sizes: vec![MIB, 64 * MIB, 512 * MIB],
                pull_sizes: vec![64 * MIB, 512 * MIB],
                concurrencies: vec![1, 16, 64],
                manifest_secs: 2.0,
                tags: 10_000,
                catalog_sizes: vec![1_000, 10_000],
                list_requests: 20,
                mixed_secs: 4.0,
                mixed_blob: 64 * MIB,
                big_push: 1 << 30,
                growth_sizes: vec![10, 100, 1_000, 10_000, 100_000],
                growth_peer_cap: 10_000,
                growth_requests: 1_000,
            }
        }
    }

    /// Every blob size the run pushes, for [`Contents::new`].
    pub fn sizes(&self) -> Vec<u64> {
        let mut s = self.push_sizes.clone();
        s.extend(&self.pull_sizes);
        s.extend([self.mixed_blob, self.big_push]);
        s
    }

    /// Pushes per timed sample: enough bytes that one sample is not a few milliseconds.
    fn pushes_per_sample(&self, size: u64) -> usize {
        match size {
            s if s <= MIB && self.quick => 16,
            s if s <= MIB => 32,
            s if s <= 64 * MIB && !self.quick => 2,
            _ => 1,
        }
    }

    fn pulls_per_sample(&self, size: u64) -> usize {
        match size {
            s if s <= 64 * MIB => 8,
            _ => 2,
        }
    }
}

pub fn size_label(size: u64) -> String {
    if size >= 1 << 30 && size & ((1 << 30) - 1) == 0 {
        format!("{} GiB", size >> 30)
    } else {
        format!("{} MiB", size / MIB)
    }
}

/// Shared by every workload: the machine, the plan, the blob contents and a source of unique numbers.
pub struct Bench {
    pub tools: Tools,
    pub plan: Plan,
    pub contents: Contents,
    /// Where every server's directory goes; removed by the caller at the end.
    pub scratch: std::path::PathBuf,
    /// Skip the peer (for profiling Tributary alone).
    pub ours_only: bool,
    seq: AtomicU64,
}

/// A running server and a client for it.
pub struct Live {
    pub server: Server,
    pub client: Client,
}

impl Live {
    pub fn kind(&self) -> Kind {
        self.server.kind
    }

    /// Runs `fut`, returning its output, wall seconds and server CPU seconds.
    pub async fn measure<T>(&self, fut: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<(T, f64, f64)> {
        let cpu = self.server.cpu_seconds();
        let start = Instant::now();
        let out = fut.await?;
        let wall = start.elapsed().as_secs_f64();
        Ok((out, wall, self.server.cpu_seconds() - cpu))
    }

    pub fn mib(bytes: u64) -> f64 {
        bytes as f64 / MIB as f64
    }
}

/// A tiny image already in a repository: config and one layer.
#[derive(Clone)]
pub struct Image {
    config: (String, usize),
    layer: (String, usize),
}

impl Image {
    /// Its manifest; a distinct `seq` makes a distinct manifest (a new image, not a retag).
    pub fn manifest(&self, seq: Option<u64>) -> Bytes {
        let mut m = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": self.config.0, "size": self.config.1},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": self.layer.0, "size": self.layer.1}],
        });
        if let Some(seq) = seq {
            m["annotations"] = json!({"org.opencontainers.image.revision": seq.to_string()});
        }
        Bytes::from(serde_json::to_vec(&m).unwrap_or_default())
    }

    /// Pushes a config and a layer to `repo` and tags the image `v1`.
    pub async fn seed(client: &Client, repo: &str) -> anyhow::Result<Image> {
        let layer = Bytes::from(random_bytes(42, 2048));
        let layer_digest = client.push_bytes(repo, layer.clone()).await?;
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }))?;
        let config_len = config.len();
        let config_digest = client.push_bytes(repo, Bytes::from(config)).await?;
        let image = Image { config: (config_digest, config_len), layer: (layer_digest, layer.len()) };
        client.put_manifest(repo, "v1", image.manifest(None)).await?;
        Ok(image)
    }

    /// Makes the image's blobs available in `repo` by cross-repository mount.
    pub async fn mount(&self, client: &Client, repo: &str, from: &str) -> anyhow::Result<()> {
        client.mount(repo, from, &self.config.0).await?;
        client.mount(repo, from, &self.layer.0).await
    }
}

/// Prints the ops/s, p50 and p99 rows of `label` as measured so far.
pub fn progress_ops(report: &Report, label: &str) {
    progress(report, label);
    progress(report, &format!("{label} p50"));
    progress(report, &format!("{label} p99"));
}

/// Runs `op(seq)` from `concurrency` workers until `duration` has passed. Returns sorted latencies and the wall time.
async fn closed_loop<F, Fut>(
    concurrency: usize,
    duration: Duration,
    seq: &AtomicU64,
    op: F,
) -> anyhow::Result<(Vec<Duration>, f64)>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let start = Instant::now();
    let deadline = start + duration;
    let op = &op;
    let workers = (0..concurrency).map(|_| async move {
        let mut lat = Vec::new();
        while Instant::now() < deadline {
            let s = seq.fetch_add(1, Ordering::Relaxed);
            let t = Instant::now();
            op(s).await?;
            lat.push(t.elapsed());
        }
        Ok::<_, anyhow::Error>(lat)
    });
    let all = futures::future::try_join_all(workers).await?;
    let wall = start.elapsed().as_secs_f64();
    let mut lat: Vec<Duration> = all.into_iter().flatten().collect();
    lat.sort_unstable();
    Ok((lat, wall))
}

/// Runs `op(i)` for `i` in `range`, `concurrency` at a time.
async fn for_each<F, Fut>(range: std::ops::Range<usize>, concurrency: usize, op: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    futures::stream::iter(range).map(op).buffer_unordered(concurrency).try_for_each(|()| async { Ok(()) }).await
}

/// The `i`-th repository of the growth group, spread over ten namespaces.
fn growth_repo(i: usize) -> String {
    format!("grow{}/r{i:06}", i % 10)
}

/// Flushes dirty pages so one server's writeback does not land in the other's measurement.
pub fn sync_disks() {
    let _ = std::process::Command::new("sync").status();
}

pub fn progress(report: &Report, label: &str) {
    if let Some(row) = report.get(label) {
        let f = |k| row.median(k).map_or("-".into(), |v| format!("{v:.3}"));
        eprintln!("  {label:<48} ours {:>12}  peer {:>12}  {}", f(Kind::Ours), f(Kind::Peer), row.unit.label());
    }
}

impl Bench {
    pub fn new(tools: Tools, plan: Plan, scratch: std::path::PathBuf, ours_only: bool) -> Bench {
        let contents = Contents::new(&plan.sizes());
        Bench { tools, plan, contents, scratch, ours_only, seq: AtomicU64::new(1) }
    }

    pub fn next(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Starts a server; on ours, creates the namespaces the workloads push into (untimed).
    pub async fn start(&self, kind: Kind) -> anyhow::Result<Live> {
        self.start_on(kind, &Storage::default()).await
    }

    /// [`Bench::start`] on the given storage.
    pub async fn start_on(&self, kind: Kind, storage: &Storage) -> anyhow::Result<Live> {
        let server = Server::start_on(&self.tools, kind, &self.scratch, PeerRole::Plain, storage)?;
        let client = Client::new(kind.name(), &server.base, server.token.clone())?;
        if kind == Kind::Ours {
            for ns in NAMESPACES {
                client.create_namespace(ns).await?;
            }
        }
        Ok(Live { server, client })
    }

    /// The servers a run compares: ours then the peer, or ours alone with `--ours-only`.
    pub fn kinds(&self) -> &'static [Kind] {
        if self.ours_only {
            &Kind::BOTH[..1]
        } else {
            &Kind::BOTH
        }
    }

    async fn start_both(&self) -> anyhow::Result<Vec<Live>> {
        let mut live = Vec::new();
        for &kind in self.kinds() {
            live.push(self.start(kind).await?);
        }
        Ok(live)
    }

    /// Blob pushes: monolithic (`POST` then `PUT ?digest=`) and chunked (8 MiB and 1 MiB `PATCH`es).
    pub async fn push(&self, report: &mut Report) -> anyhow::Result<()> {
        eprintln!("== blob push");
        let live = self.start_both().await?;
        let modes: [(Option<u64>, &str); 3] =
            [(None, "monolithic"), (Some(8 * MIB), "chunked 8 MiB"), (Some(MIB), "chunked 1 MiB")];
        for &size in &self.plan.push_sizes {
            for (chunk, mode) in modes {
                let label = format!("push {} {mode}", size_label(size));
                let count = self.plan.pushes_per_sample(size);
                for _ in 0..self.plan.pairs {
                    for l in &live {
                        sync_disks();
                        let blobs: Vec<_> = (0..count).map(|_| self.contents.blob(size, self.next())).collect();
                        let (_, wall, cpu) = l
                            .measure(async {
                                for blob in &blobs {
                                    match chunk {
                                        None => l.client.push_monolithic("bench/push", blob).await?,
                                        Some(c) => {
                                            l.client.push_chunked("bench/push", blob, c).await?;
                                        }
                                    }
                                }
                                Ok(())
                            })
                            .await
                            .with_context(|| format!("{label} on {}", l.kind().name()))?;
                        let bytes = size * count as u64;
                        let sample =
                            Sample { value: Live::mib(bytes) / wall, cpu_seconds: cpu, work: bytes as f64 / GIB };
                        report.add(&label, Unit::MibPerSec, Cost::PerGib, l.kind(), sample);
                    }
                }
                progress(report, &label);
            }
        }
        Ok(())
    }

    /// Blob pulls and time to first byte. Each blob is pulled once with its digest checked before timing.
    pub async fn pull(&self, report: &mut Report) -> anyhow::Result<()> {
        eprintln!("== blob pull");
        let live = self.start_both().await?;
        let mut digests = Vec::new();
        for l in &live {
            let mut mine = Vec::new();
            for &size in &self.plan.pull_sizes {
                let blob = self.contents.blob(size, self.next());
                l.client.push_monolithic("bench/pull", &blob).await?;
                let p = l.client.pull("bench/pull", &blob.digest, true).await?;
                ensure!(p.bytes == size, "{} served {} bytes of {size}", l.kind().name(), p.bytes);
                mine.push(blob.digest);
            }
            digests.push(mine);
        }
        sync_disks();
        let ttfb_label = format!("pull time to first byte ({} blob)", size_label(self.plan.pull_sizes[0]));
        for (i, &size) in self.plan.pull_sizes.iter().enumerate() {
            let label = format!("pull {}", size_label(size));
            let count = self.plan.pulls_per_sample(size);
            for _ in 0..self.plan.pairs {
                for (l, digests) in live.iter().zip(&digests) {
                    let digest = &digests[i];
                    let (firsts, wall, cpu) = l
                        .measure(async {
                            let mut firsts = Vec::new();
                            for _ in 0..count {
                                let p = l.client.pull("bench/pull", digest, false).await?;
                                ensure!(p.bytes == size, "short pull: {} of {size}", p.bytes);
                                firsts.push(p.first_byte);
                            }
                            Ok(firsts)
                        })
                        .await?;
                    let bytes = size * count as u64;
                    let sample = Sample { value: Live::mib(bytes) / wall, cpu_seconds: cpu, work: bytes as f64 / GIB };
                    report.add(&label, Unit::MibPerSec, Cost::PerGib, l.kind(), sample);
                    if i == 0 {
                        let mut f = firsts;
                        f.sort_unstable();
                        let sample = Sample { value: quantile_ms(&f, 0.5), cpu_seconds: 0.0, work: 0.0 };
                        report.add(&ttfb_label, Unit::Millis, Cost::None, l.kind(), sample);
                    }
                }
            }
            progress(report, &label);
        }
        progress(report, &ttfb_label);
        Ok(())
    }

    /// Manifest GET by tag and PUT of new tags (each a new image) at each concurrency.
    pub async fn manifests(&self, report: &mut Report) -> anyhow::Result<()> {
        eprintln!("== manifests");
        let live = self.start_both().await?;
        let mut images = Vec::new();
        for l in &live {
            let image = Image::seed(&l.client, "bench/app").await?;
            image.mount(&l.client, "bench/put", "bench/app").await?;
            images.push(image);
        }
        for put in [false, true] {
            let op_name = if put { "PUT" } else { "GET" };
            for &c in &self.plan.concurrencies {
                let label = format!("manifest {op_name} c={c}");
                for _ in 0..self.plan.pairs {
                    for (l, image) in live.iter().zip(&images) {
                        let op = |seq: u64| {
                            let client = &l.client;
                            async move {
                                if put {
                                    client
                                        .put_manifest("bench/put", &format!("t{seq}"), image.manifest(Some(seq)))
                                        .await
                                } else {
                                    client.get_manifest("bench/app", "v1").await.map(|_| ())
                                }
                            }
                        };
                        self.ops_sample(report, l, &label, c, op).await?;
                    }
                }
                progress_ops(report, &label);
            }
        }
        // Reads the way docker, podman and skopeo make them, with a registry JWT (ours only: the peer runs without
        // access control, so it has no such path).
        if let Some(l) = live.iter().find(|l| l.kind() == Kind::Ours) {
            let client = l.client.with_registry_token("repository:bench/app:pull").await?;
            let label = "manifest GET c=16, registry JWT";
            for _ in 0..self.plan.pairs {
                let op = |_: u64| {
                    let client = &client;
                    async move { client.get_manifest("bench/app", "v1").await.map(|_| ()) }
                };
                self.ops_sample(report, l, label, 16, op).await?;
            }
            progress_ops(report, label);
        }
        Ok(())
    }

    /// Drives `op` closed-loop at concurrency `c` on `l` (a short warm-up, then `manifest_secs` measured) and adds
    /// the run's ops/s with its CPU cost, p50 and p99 under `label`.
    async fn ops_sample<F, Fut>(
        &self,
        report: &mut Report,
        l: &Live,
        label: &str,
        c: usize,
        op: F,
    ) -> anyhow::Result<()>
    where
        F: Fn(u64) -> Fut + Copy,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        self.ops_sample_as(report, l, l.kind(), label, c, op).await
    }

    /// [`Bench::ops_sample`], recording the samples in `kind`'s column (a row comparing two of ours).
    pub async fn ops_sample_as<F, Fut>(
        &self,
        report: &mut Report,
        l: &Live,
        kind: Kind,
        label: &str,
        c: usize,
        op: F,
    ) -> anyhow::Result<()>
    where
        F: Fn(u64) -> Fut + Copy,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let dur = Duration::from_secs_f64(self.plan.manifest_secs);
        let warm = Duration::from_secs_f64((self.plan.manifest_secs / 4.0).min(0.3));
        closed_loop(c, warm, &self.seq, op).await?;
        let ((lat, wall), _, cpu) = l.measure(closed_loop(c, dur, &self.seq, op)).await?;
        let n = lat.len() as f64;
        let s = |value| Sample { value, cpu_seconds: cpu, work: n / 1000.0 };
        report.add(label, Unit::OpsPerSec, Cost::PerKiloRequest, kind, s(n / wall));
        report.add(&format!("{label} p50"), Unit::Millis, Cost::None, kind, s(quantile_ms(&lat, 0.5)));
        report.add(&format!("{label} p99"), Unit::Millis, Cost::None, kind, s(quantile_ms(&lat, 0.99)));
        Ok(())
    }

    /// Tags list with many tags; catalog first page and full walk at growing repository counts.
    pub async fn lists(&self, report: &mut Report, tags: bool, catalog: bool) -> anyhow::Result<()> {
        eprintln!("== tags list and catalog");
        let live = self.start_both().await?;
        let mut images = Vec::new();
        for l in &live {
            images.push(Image::seed(&l.client, "bench/app").await?);
        }
        let n = self.plan.list_requests;
        if tags {
            let label = format!("tags list, {} tags, p50", self.plan.tags);
            for (l, image) in live.iter().zip(&images) {
                image.mount(&l.client, "bench/tags", "bench/app").await?;
                let manifest = image.manifest(None);
                let start = Instant::now();
                for_each(0..self.plan.tags, 16, |i| {
                    let manifest = manifest.clone();
                    async move { l.client.put_manifest("bench/tags", &format!("t{i:05}"), manifest).await }
                })
                .await?;
                let secs = start.elapsed().as_secs_f64();
                eprintln!(
                    "  populated {} tags on {} in {secs:.1} s ({:.0} PUT/s at c=16)",
                    self.plan.tags,
                    l.kind().name(),
                    self.plan.tags as f64 / secs
                );
            }
            for _ in 0..self.plan.pairs {
                for l in &live {
                    for _ in 0..2 {
                        l.client.tags("bench/tags").await?;
                    }
                    let (lat, _, cpu) = l
                        .measure(async {
                            let mut lat = Vec::new();
                            for _ in 0..n {
                                let t = Instant::now();
                                let got = l.client.tags("bench/tags").await?;
                                lat.push(t.elapsed());
                                ensure!(got == self.plan.tags, "tags list has {got} tags");
                            }
                            lat.sort_unstable();
                            Ok(lat)
                        })
                        .await?;
                    let sample = Sample { value: quantile_ms(&lat, 0.5), cpu_seconds: cpu, work: n as f64 / 1000.0 };
                    report.add(&label, Unit::Millis, Cost::PerKiloRequest, l.kind(), sample);
                }
            }
            progress(report, &label);
        }
        if !catalog {
            return Ok(());
        }
        let mut have = 0;
        for &target in &self.plan.catalog_sizes {
            for (l, image) in live.iter().zip(&images) {
                let start = Instant::now();
                for_each(have..target, 16, |i| async move {
                    let repo = format!("cat{}/r{i:05}", i % 10);
                    image.mount(&l.client, &repo, "bench/app").await?;
                    l.client.put_manifest(&repo, "v1", image.manifest(None)).await
                })
                .await?;
                eprintln!(
                    "  populated {target} repositories on {} in {:.1} s",
                    l.kind().name(),
                    start.elapsed().as_secs_f64()
                );
            }
            have = target;
            let first = format!("catalog first page (n=100), {target} repos, p50");
            let walk = format!("catalog full walk (n=100), {target} repos");
            let per_page = format!("catalog walk per page, {target} repos");
            for _ in 0..self.plan.pairs {
                for l in &live {
                    l.client.catalog_page("/v2/_catalog?n=100").await?;
                    let (lat, _, cpu) = l
                        .measure(async {
                            let mut lat = Vec::new();
                            for _ in 0..n {
                                let t = Instant::now();
                                let (names, _) = l.client.catalog_page("/v2/_catalog?n=100").await?;
                                lat.push(t.elapsed());
                                ensure!(names.len() == 100, "first page has {} names", names.len());
                            }
                            lat.sort_unstable();
                            Ok(lat)
                        })
                        .await?;
                    let s = Sample { value: quantile_ms(&lat, 0.5), cpu_seconds: cpu, work: n as f64 / 1000.0 };
                    report.add(&first, Unit::Millis, Cost::PerKiloRequest, l.kind(), s);
                    // Whole walks, repeated until 200 ms have passed so CPU ticks (10 ms) resolve.
                    let ((walks, pages), wall, cpu) = l
                        .measure(async {
                            let start = Instant::now();
                            let (mut walks, mut pages) = (0usize, 0usize);
                            while walks == 0 || start.elapsed() < Duration::from_millis(200) {
                                let mut names = 0usize;
                                let mut next = Some("/v2/_catalog?n=100".to_owned());
                                while let Some(loc) = next {
                                    let (page, more) = l.client.catalog_page(&loc).await?;
                                    names += page.len();
                                    pages += 1;
                                    next = more;
                                }
                                ensure!(names >= target, "catalog walk found {names} of {target}+ repositories");
                                walks += 1;
                            }
                            Ok((walks, pages))
                        })
                        .await
                        .with_context(|| format!("catalog walk on {}", l.kind().name()))?;
                    let kreq = pages as f64 / 1000.0;
                    let s = Sample { value: wall * 1e3 / walks as f64, cpu_seconds: cpu, work: kreq };
                    report.add(&walk, Unit::Millis, Cost::PerKiloRequest, l.kind(), s);
                    let s = Sample { value: wall * 1e3 / pages as f64, cpu_seconds: cpu, work: kreq };
                    report.add(&per_page, Unit::Millis, Cost::PerKiloRequest, l.kind(), s);
                }
            }
            progress(report, &first);
            progress(report, &walk);
            progress(report, &per_page);
        }
        Ok(())
    }

    /// Growth (issue 6, item 4): one stream grows to each of the plan's tag counts and the registry to as many
    /// repositories, populated through the API at c=32 (a retag per tag; a mount of two blobs and a manifest PUT per
    /// repository). At each size: manifest GET latency by tag in the big stream and in random repositories (c=1),
    /// and the server's RSS. The peer stops at [`Plan::growth_peer_cap`]. Returns a note for the header.
    pub async fn growth(&self, report: &mut Report) -> anyhow::Result<String> {
        eprintln!("== growth");
        let live = self.start_both().await?;
        let mut images = Vec::new();
        for l in &live {
            let image = Image::seed(&l.client, "bench/app").await?;
            image.mount(&l.client, "bench/growth", "bench/app").await?;
            images.push(image);
        }
        let n = self.plan.growth_requests;
        let mut have = 0;
        for &size in &self.plan.growth_sizes {
            for (l, image) in live.iter().zip(&images) {
                if l.kind() == Kind::Peer && size > self.plan.growth_peer_cap {
                    continue;
                }
                let manifest = image.manifest(None);
                let start = Instant::now();
                for_each(have..size, 32, |i| {
                    let manifest = manifest.clone();
                    async move { l.client.put_manifest("bench/growth", &format!("g{i:06}"), manifest).await }
                })
                .await?;
                let tags_secs = start.elapsed().as_secs_f64();
                let start = Instant::now();
                for_each(have..size, 32, |i| async move {
                    let repo = growth_repo(i);
                    image.mount(&l.client, &repo, "bench/app").await?;
                    l.client.put_manifest(&repo, "v1", image.manifest(None)).await
                })
                .await?;
                eprintln!(
                    "  populated {size} tags and {size} repositories on {} ({} new of each: {:.1} s and {:.1} s)",
                    l.kind().name(),
                    size - have,
                    tags_secs,
                    start.elapsed().as_secs_f64()
                );
            }
            have = size;
            let by_tag = format!("growth: GET by tag, {size} tags");
            let in_repo = format!("growth: GET in a repo, {size} repos");
            let rss = format!("growth: RSS, {size} tags + {size} repos");
            for _ in 0..self.plan.pairs {
                for l in &live {
                    if l.kind() == Kind::Peer && size > self.plan.growth_peer_cap {
                        continue;
                    }
                    let base = self.next() as usize;
                    for (label, in_repos) in [(&by_tag, false), (&in_repo, true)] {
                        let (lat, _, cpu) = l
                            .measure(async {
                                let mut lat = Vec::with_capacity(n);
                                for k in 0..n {
                                    // Spread over the whole population (a stride coprime with the sizes).
                                    let i = (base + k).wrapping_mul(7_919) % size;
                                    let t = Instant::now();
                                    if in_repos {
                                        l.client.get_manifest(&growth_repo(i), "v1").await?;
                                    } else {
                                        l.client.get_manifest("bench/growth", &format!("g{i:06}")).await?;
                                    }
                                    lat.push(t.elapsed());
                                }
                                lat.sort_unstable();
                                Ok(lat)
                            })
                            .await?;
                        let work = n as f64 / 1000.0;
                        for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
                            let sample = Sample { value: quantile_ms(&lat, q), cpu_seconds: cpu, work };
                            report.add(
                                &format!("{label} {name}"),
                                Unit::Millis,
                                Cost::PerKiloRequest,
                                l.kind(),
                                sample,
                            );
                        }
                    }
                    let sample = Sample { value: Live::mib(l.server.rss()), cpu_seconds: 0.0, work: 0.0 };
                    report.add(&rss, Unit::Mib, Cost::None, l.kind(), sample);
                }
            }
            progress(report, &format!("{by_tag} p50"));
            progress(report, &format!("{in_repo} p50"));
            progress(report, &rss);
        }
        Ok(format!(
            "growth: the peer is populated up to {} tags and repositories only (distribution 2.8 writes each manifest \
             PUT as several small files; 100,000 would take it about a quarter of an hour); ours up to {}",
            self.plan.growth_peer_cap,
            self.plan.growth_sizes.last().copied().unwrap_or_default()
        ))
    }

    /// Idle RSS of a fresh server, its peak during one big monolithic push, and its peak under a mixed load.
    /// Each pair starts both servers afresh, ours first.
    pub async fn memory(&self, report: &mut Report) -> anyhow::Result<bool> {
        eprintln!("== memory");
        let big = format!("peak RSS during {} push", size_label(self.plan.big_push));
        let big_above = format!("peak RSS during {} push, above idle", size_label(self.plan.big_push));
        let mut reset_works = true;
        for _ in 0..self.plan.pairs {
            for &kind in self.kinds() {
                let l = self.start(kind).await?;
                l.client.tags("bench/none").await.ok();
                tokio::time::sleep(Duration::from_millis(500)).await;
                let idle = l.server.rss();
                let mib = |b: u64| Live::mib(b);
                let s = |value| Sample { value, cpu_seconds: 0.0, work: 0.0 };
                report.add("idle RSS", Unit::Mib, Cost::None, kind, s(mib(idle)));

                reset_works &= l.server.reset_peak();
                let blob = self.contents.blob(self.plan.big_push, self.next());
                l.client.push_monolithic("bench/big", &blob).await?;
                let peak = l.server.peak_rss();
                report.add(&big, Unit::Mib, Cost::None, kind, s(mib(peak)));
                report.add(&big_above, Unit::Mib, Cost::None, kind, s(mib(peak.saturating_sub(idle))));

                let image = Image::seed(&l.client, "bench/app").await?;
                let pull = self.contents.blob(self.plan.mixed_blob, self.next());
                l.client.push_monolithic("bench/pull", &pull).await?;
                sync_disks();
                reset_works &= l.server.reset_peak();
                self.mixed(&l, &image, &pull.digest).await?;
                report.add("peak RSS, mixed load", Unit::Mib, Cost::None, kind, s(mib(l.server.peak_rss())));
            }
        }
        progress(report, "idle RSS");
        progress(report, &big_above);
        progress(report, "peak RSS, mixed load");
        Ok(reset_works)
    }

    /// For `mixed_secs`: 2 pushers, 2 pullers, 8 manifest readers, 2 manifest writers, 1 tags lister.
    async fn mixed(&self, l: &Live, image: &Image, pull: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs_f64(self.plan.mixed_secs);
        let c = &l.client;
        let until = |op: &'static str| async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                match op {
                    "push" => {
                        c.push_monolithic("bench/mixed", &self.contents.blob(self.plan.mixed_blob, self.next())).await?
                    }
                    "pull" => {
                        c.pull("bench/pull", pull, false).await?;
                    }
                    "get" => {
                        c.get_manifest("bench/app", "v1").await?;
                    }
                    "put" => {
                        let seq = self.next();
                        c.put_manifest("bench/app", &format!("m{seq}"), image.manifest(Some(seq))).await?
                    }
                    _ => {
                        c.tags("bench/app").await?;
                    }
                }
                n += 1;
            }
            Ok::<_, anyhow::Error>(n)
        };
        let mut tasks = Vec::new();
        for (op, count) in [("push", 2), ("pull", 2), ("get", 8), ("put", 2), ("tags", 1)] {
            for _ in 0..count {
                tasks.push(until(op));
            }
        }
        futures::future::try_join_all(tasks).await?;
        Ok(())
    }
}
