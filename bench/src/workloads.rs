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
pub(crate) const NAMESPACES: [&str; 21] = [
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
            s if s <= 64 * MIB && !self.quick => 8,
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
pub(crate) async fn closed_loop<F, Fut>(
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
pub(crate) async fn for_each<F, Fut>(range: std::ops::Range<usize>, concurrency: usize, op: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    futures::stream::iter(range).map(op).buffer_unordered(concurrency).try_for_each(|()| async { Ok(()) }).await
}

/// The `i`-th repository of the growth group, spread over ten namespaces.
pub(crate) fn growth_repo(i: usize) -> String {
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
        self.start_with_args(kind, storage, &[]).await
    }

    /// [`Bench::start_on`], with more `tributary serve` flags for ours.
    pub async fn start_with_args(&self, kind: Kind, storage: &Storage, ours_extra: &[&str]) -> anyhow::Result<Live> {
        let server = Server::start_with_args(&self.tools, kind, &self.scratch, PeerRole::Plain, storage, ours_extra)?;
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

    pub(crate) async fn start_both(&self) -> anyhow::Result<Vec<Live>> {
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
        // access control, so it has no such path), interleaved slice by slice with the same reads presenting the
        // API token on the same server (after the PUT rows above), so that both credentials meet the same server
        // state and the same moments of the machine's load: the issue-17 comparison is like for like, judged on
        // the per-slice ratios (one server's CPU per request swings by ±15% between slices on this machine kind).
        if let Some(l) = live.iter().find(|l| l.kind() == Kind::Ours) {
            let jwt = l.client.with_registry_token("repository:bench/app:pull").await?;
            let sides = [(l, &l.client, Kind::Ours, JWT_PEER_LABEL), (l, &jwt, Kind::Ours, JWT_LABEL)];
            self.interleaved_gets(report, sides).await?;
            progress_ops(report, JWT_PEER_LABEL);
            progress_ops(report, JWT_LABEL);
        }
        Ok(())
    }

    /// Drives `op` closed-loop at concurrency `c` on `l` (a short warm-up, then `manifest_secs` measured) and adds
    /// the run's ops/s with its CPU cost, p50 and p99 under `label`.
    pub(crate) async fn ops_sample<F, Fut>(
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
        self.ops_warm_up(c, op).await?;
        let run = self.ops_run(l, c, Duration::from_secs_f64(self.plan.manifest_secs), op).await?;
        run.record(report, kind, label);
        Ok(())
    }

    /// Drives `op` closed-loop at concurrency `c` for a short untimed while (before measuring a fresh server).
    pub async fn ops_warm_up<F, Fut>(&self, c: usize, op: F) -> anyhow::Result<()>
    where
        F: Fn(u64) -> Fut + Copy,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let warm = Duration::from_secs_f64((self.plan.manifest_secs / 4.0).min(0.3));
        closed_loop(c, warm, &self.seq, op).await.map(|_| ())
    }

    /// Drives `op` closed-loop at concurrency `c` on `l` for `dur`, measured.
    pub async fn ops_run<F, Fut>(&self, l: &Live, c: usize, dur: Duration, op: F) -> anyhow::Result<OpsRun>
    where
        F: Fn(u64) -> Fut + Copy,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let ((latencies, wall), _, cpu) = l.measure(closed_loop(c, dur, &self.seq, op)).await?;
        Ok(OpsRun { latencies, wall, cpu })
    }
}

/// Measured closed-loop requests on one server: their latencies (sorted), wall and server CPU seconds.
#[derive(Debug, Default)]
pub struct OpsRun {
    pub latencies: Vec<Duration>,
    pub wall: f64,
    pub cpu: f64,
}

impl OpsRun {
    /// Adds the ops/s with its CPU cost, p50 and p99 under `label` in `kind`'s column.
    pub fn record(&self, report: &mut Report, kind: Kind, label: &str) {
        let n = self.latencies.len() as f64;
        let s = |value| Sample { value, cpu_seconds: self.cpu, work: n / 1000.0 };
        report.add(label, Unit::OpsPerSec, Cost::PerKiloRequest, kind, s(n / self.wall));
        report.add(&format!("{label} p50"), Unit::Millis, Cost::None, kind, s(quantile_ms(&self.latencies, 0.5)));
        report.add(&format!("{label} p99"), Unit::Millis, Cost::None, kind, s(quantile_ms(&self.latencies, 0.99)));
    }
}

/// Manifest GETs (c=16, ours) presenting a registry JWT.
pub const JWT_LABEL: &str = "manifest GET c=16, registry JWT";
/// The same reads presenting the API token, interleaved with [`JWT_LABEL`]'s samples (issue 17's comparison).
pub const JWT_PEER_LABEL: &str = "manifest GET c=16, API token, alternated with the JWT row";
