//! The S3 and etcd group (issue "scale-out", point 8), run with `--s3` or `--only s3`. On one moto S3 server and
//! one etcd, started for each phase: blob push and pull with ours on S3+etcd next to distribution 2.8's S3 driver
//! on the same server, next to moto's own multipart put and GET through object_store (the ceiling both share), and
//! next to ours on the filesystem+redb (one replica either way); the finish of a chunked upload (its closing `PUT`)
//! against blob size, next to moto's own CompleteMultipartUpload; manifest GET and PUT with etcd metadata; and
//! peak RSS above idle during a big push to S3. A row whose label ends in `[peer: …]` holds that in the peer column.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context};

use crate::report::{Cost, Report, Sample, Target, Unit, Verdict};
use crate::servers::{Kind, Storage};
use crate::stores::{self, Helper, BUCKET};
use crate::workloads::{progress, progress_ops, size_label, sync_disks, Bench, Image, Live, GIB, MIB};

/// Part size of every multipart upload in the group: ours (its default), distribution's `chunksize`, moto's own.
const PART: u64 = 8 * MIB;
/// PATCH size of the chunked pushes (one part per PATCH).
const CHUNK: u64 = 8 * MIB;

/// A moto and an etcd for one phase, and object_store's client on moto.
struct Shared {
    moto: Helper,
    etcd: Helper,
    raw: Arc<object_store::aws::AmazonS3>,
}

/// The binaries of the group, found before it starts.
pub struct Bins {
    moto: PathBuf,
    etcd: PathBuf,
}

impl Bins {
    /// moto (`$TRIBUTARY_MOTO_BIN` or `moto_server`) and etcd (`$TRIBUTARY_ETCD_BIN` or `etcd`), or what is missing.
    pub fn find() -> anyhow::Result<Bins> {
        let moto = stores::find("TRIBUTARY_MOTO_BIN", "moto_server");
        let etcd = stores::find("TRIBUTARY_ETCD_BIN", "etcd");
        match (moto, etcd) {
            (Some(moto), Some(etcd)) => Ok(Bins { moto, etcd }),
            (m, e) => anyhow::bail!(
                "the s3 group needs {}",
                [
                    m.is_none().then_some("moto_server (`pip install 'moto[server]'`, or TRIBUTARY_MOTO_BIN)"),
                    e.is_none().then_some("etcd (`apt-get install etcd-server`, or TRIBUTARY_ETCD_BIN)")
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" and ")
            ),
        }
    }

    /// moto's and etcd's versions, for the header (moto's from the Python package beside `moto_server`).
    pub fn versions(&self) -> String {
        let v = |bin: &PathBuf, args: &[&str]| {
            std::process::Command::new(bin)
                .args(args)
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .and_then(|s| s.lines().next().map(str::to_owned))
                .unwrap_or_default()
        };
        let python = self.moto.with_file_name("python");
        let moto = v(&python, &["-c", "import moto; print(moto.__version__)"]);
        format!("s3 group: moto {moto} ({}), {}", self.moto.display(), v(&self.etcd, &["--version"]))
    }
}

/// Copies the last sample of `from` (and its p50 and p99 rows) in `kind`'s column to `to`.
fn copy_ops(report: &mut Report, from: &str, to: &str, kind: Kind) {
    for suffix in ["", " p50", " p99"] {
        let (f, t) = (format!("{from}{suffix}"), format!("{to}{suffix}"));
        let Some(row) = report.get(&f) else { continue };
        let (unit, cost) = (row.unit, row.cost);
        if let Some(&s) = row.samples(kind).last() {
            report.add(&t, unit, cost, kind, s);
        }
    }
}

fn throughput(bytes: u64, wall: f64, cpu: f64) -> Sample {
    Sample { value: Live::mib(bytes) / wall, cpu_seconds: cpu, work: bytes as f64 / GIB }
}

/// A figure of moto's own (no server CPU of ours or the peer's to count).
fn plain(value: f64) -> Sample {
    Sample { value, cpu_seconds: 0.0, work: 0.0 }
}

impl Bench {
    /// Blob sizes of the group and the size of the memory push.
    fn s3_sizes(&self) -> (Vec<u64>, u64) {
        if self.plan.quick {
            (vec![64 * MIB], 256 * MIB)
        } else {
            (vec![64 * MIB, 512 * MIB], 1 << 30)
        }
    }

    async fn shared(&self, bins: &Bins) -> anyhow::Result<Shared> {
        let moto = stores::moto(&self.tools, &bins.moto, &self.scratch).await?;
        let etcd = stores::etcd(&self.tools, &bins.etcd, &self.scratch).await?;
        let raw = stores::raw_client(&moto.endpoint)?;
        Ok(Shared { moto, etcd, raw })
    }

    /// Storage on the phase's moto (under a fresh prefix), with etcd metadata (under a fresh prefix) if `etcd`.
    fn remote(&self, sh: &Shared, s3: bool, etcd: bool) -> Storage {
        let n = self.next();
        Storage {
            s3: s3.then(|| (sh.moto.endpoint.clone(), BUCKET.to_owned(), format!("r{n}"))),
            etcd: etcd.then(|| (sh.etcd.endpoint.clone(), format!("/r{n}/"))),
            redirect: false,
            admin_token: etcd.then(crate::servers::new_token),
        }
    }

    /// The whole group: blobs of each size, manifests, memory, each phase on its own moto and etcd.
    pub async fn s3(&self, report: &mut Report, bins: &Bins) -> anyhow::Result<()> {
        let (sizes, big) = self.s3_sizes();
        for &size in &sizes {
            eprintln!("== S3: blobs of {}", size_label(size));
            self.s3_blobs(report, bins, size).await?;
        }
        eprintln!("== etcd: manifests");
        self.s3_manifests(report, bins).await?;
        eprintln!("== S3: memory");
        self.s3_memory(report, bins, big).await
    }

    /// Push (monolithic and chunked), finish and pull of `size` blobs: ours on S3+etcd, the peer on S3, moto's
    /// own put and get, and ours on filesystem+redb, alternated within each pair.
    async fn s3_blobs(&self, report: &mut Report, bins: &Bins, size: u64) -> anyhow::Result<()> {
        let sh = self.shared(bins).await?;
        let on_s3 = self.remote(&sh, true, true);
        let ours = self.start_on(Kind::Ours, &on_s3).await?;
        // A second replica of ours on the same stores that redirects blob GETs to presigned S3 URLs.
        let redirecting = self.start_on(Kind::Ours, &Storage { redirect: true, ..on_s3 }).await?;
        let peer = match self.ours_only {
            true => None,
            false => Some(self.start_on(Kind::Peer, &self.remote(&sh, true, false)).await?),
        };
        let local = self.start(Kind::Ours).await?;
        let s = size_label(size);
        let push = format!("S3 push {s} monolithic");
        let vs_put1 = format!("S3 push {s} monolithic [peer: moto's own put, 1 part in flight]");
        let vs_put4 = format!("S3 push {s} monolithic [peer: moto's own put, 4 parts in flight]");
        let replica_push = format!("replica push {s} monolithic, S3+etcd [peer: ours on fs+redb]");
        let chunked = format!("S3 push {s} chunked 8 MiB");
        let finish = format!("S3 finish (closing PUT), {s} chunked");
        let vs_complete = format!("S3 finish, {s} [peer: moto's own CompleteMultipartUpload]");
        let count = if size <= 64 * MIB && !self.plan.quick { 2 } else { 1 };
        // Ours on S3+etcd, the peer on S3, ours on fs+redb.
        let servers: Vec<&Live> = [Some(&ours), peer.as_ref(), Some(&local)].into_iter().flatten().collect();
        let mut pulls: Vec<String> = vec![String::new(); servers.len()];
        let mut raw_key = String::new();
        for _ in 0..self.plan.pairs {
            for (i, l) in servers.iter().enumerate() {
                sync_disks();
                let blobs: Vec<_> = (0..count).map(|_| self.contents.blob(size, self.next())).collect();
                let (_, wall, cpu) = l
                    .measure(async {
                        for blob in &blobs {
                            l.client.push_monolithic("bench/s3", blob).await?;
                        }
                        Ok(())
                    })
                    .await
                    .with_context(|| format!("{push} on {}", l.kind().name()))?;
                let sample = throughput(size * count as u64, wall, cpu);
                pulls[i] = blobs[0].digest.clone();
                match (i, l.kind()) {
                    (0, _) => {
                        for label in [&push, &vs_put1, &vs_put4, &replica_push] {
                            report.add(label, Unit::MibPerSec, Cost::PerGib, Kind::Ours, sample);
                        }
                    }
                    (_, Kind::Peer) => report.add(&push, Unit::MibPerSec, Cost::PerGib, Kind::Peer, sample),
                    _ => report.add(&replica_push, Unit::MibPerSec, Cost::PerGib, Kind::Peer, sample),
                }
            }
            for in_flight in [1, 4] {
                let blob = self.contents.blob(size, self.next());
                let key = format!("raw/{}", self.next());
                let put = stores::raw_put(&sh.raw, &key, &blob, PART, in_flight).await.context("moto's own put")?;
                let label = if in_flight == 1 { &vs_put1 } else { &vs_put4 };
                report.add(label, Unit::MibPerSec, Cost::PerGib, Kind::Peer, plain(Live::mib(size) / put.total));
                if in_flight == 1 {
                    report.add(&vs_complete, Unit::Millis, Cost::None, Kind::Peer, plain(put.complete * 1e3));
                }
                if !raw_key.is_empty() {
                    object_store::ObjectStoreExt::delete(&*sh.raw, &raw_key.as_str().into()).await?;
                }
                raw_key = key;
            }
            for l in [Some(&ours), peer.as_ref()].into_iter().flatten() {
                let blob = self.contents.blob(size, self.next());
                let ((_, closing), wall, cpu) = l
                    .measure(l.client.push_chunked_timed("bench/s3", &blob, CHUNK))
                    .await
                    .with_context(|| format!("{chunked} on {}", l.kind().name()))?;
                report.add(&chunked, Unit::MibPerSec, Cost::PerGib, l.kind(), throughput(size, wall, cpu));
                let ms = plain(closing.as_secs_f64() * 1e3);
                report.add(&finish, Unit::Millis, Cost::None, l.kind(), ms);
                if l.kind() == Kind::Ours {
                    report.add(&vs_complete, Unit::Millis, Cost::None, Kind::Ours, ms);
                }
            }
        }
        for label in [&push, &vs_put1, &vs_put4, &replica_push, &chunked, &finish, &vs_complete] {
            progress(report, label);
        }
        self.s3_pulls(report, &sh, (&servers, &redirecting), (&pulls, &raw_key), size).await
    }

    /// Pulls of the blobs pushed by [`Bench::s3_blobs`] (each checked once, untimed) and moto's own GET.
    async fn s3_pulls(
        &self,
        report: &mut Report,
        sh: &Shared,
        (servers, redirecting): (&[&Live], &Live),
        (digests, raw_key): (&[String], &str),
        size: u64,
    ) -> anyhow::Result<()> {
        let s = size_label(size);
        let pull = format!("S3 pull {s}");
        let vs_get = format!("S3 pull {s} [peer: moto's own GET]");
        let redirected = format!("S3 pull {s} via 307 to a presigned URL [peer: moto's own GET]");
        let replica = format!("replica pull {s}, S3+etcd [peer: ours on fs+redb]");
        let ttfb = format!("S3 pull {s}, time to first byte");
        for (l, digest) in servers.iter().zip(digests) {
            let p = l.client.pull("bench/s3", digest, true).await?;
            ensure!(p.bytes == size, "{} served {} bytes of {size}", l.kind().name(), p.bytes);
        }
        let count = if size <= 64 * MIB { 8 } else { 2 };
        for _ in 0..self.plan.pairs {
            for (i, (l, digest)) in servers.iter().zip(digests).enumerate() {
                let (firsts, wall, cpu) = l
                    .measure(async {
                        let mut firsts = Vec::new();
                        for _ in 0..count {
                            let p = l.client.pull("bench/s3", digest, false).await?;
                            ensure!(p.bytes == size, "short pull: {} of {size}", p.bytes);
                            firsts.push(p.first_byte);
                        }
                        Ok(firsts)
                    })
                    .await?;
                let sample = throughput(size * count, wall, cpu);
                let first = plain(crate::report::quantile_ms(&sorted(firsts), 0.5));
                match (i, l.kind()) {
                    (0, _) => {
                        for label in [&pull, &vs_get, &replica] {
                            report.add(label, Unit::MibPerSec, Cost::PerGib, Kind::Ours, sample);
                        }
                        report.add(&ttfb, Unit::Millis, Cost::None, Kind::Ours, first);
                    }
                    (_, Kind::Peer) => {
                        report.add(&pull, Unit::MibPerSec, Cost::PerGib, Kind::Peer, sample);
                        report.add(&ttfb, Unit::Millis, Cost::None, Kind::Peer, first);
                    }
                    _ => report.add(&replica, Unit::MibPerSec, Cost::PerGib, Kind::Peer, sample),
                }
            }
            let (_, wall, cpu) = redirecting
                .measure(async {
                    for _ in 0..count {
                        let p = redirecting.client.pull("bench/s3", &digests[0], false).await?;
                        ensure!(p.bytes == size, "short pull: {} of {size}", p.bytes);
                    }
                    Ok(())
                })
                .await?;
            report.add(&redirected, Unit::MibPerSec, Cost::PerGib, Kind::Ours, throughput(size * count, wall, cpu));
            let start = std::time::Instant::now();
            for _ in 0..count {
                let got = stores::raw_get(&sh.raw, raw_key).await?;
                ensure!(got == size, "moto served {got} bytes of {size}");
            }
            let wall = start.elapsed().as_secs_f64();
            let moto = plain(Live::mib(size * count) / wall);
            report.add(&vs_get, Unit::MibPerSec, Cost::PerGib, Kind::Peer, moto);
            report.add(&redirected, Unit::MibPerSec, Cost::PerGib, Kind::Peer, moto);
        }
        for label in [&pull, &vs_get, &redirected, &replica, &ttfb] {
            progress(report, label);
        }
        Ok(())
    }

    /// Manifest GET and PUT at c=16: ours with etcd metadata (blobs on the filesystem, and on S3) next to ours on
    /// redb, and next to distribution on the filesystem for reference.
    async fn s3_manifests(&self, report: &mut Report, bins: &Bins) -> anyhow::Result<()> {
        let sh = self.shared(bins).await?;
        let fs_etcd = self.start_on(Kind::Ours, &self.remote(&sh, false, true)).await?;
        let s3_etcd = self.start_on(Kind::Ours, &self.remote(&sh, true, true)).await?;
        let fs_redb = self.start(Kind::Ours).await?;
        let peer = match self.ours_only {
            true => None,
            false => Some(self.start(Kind::Peer).await?),
        };
        let all: Vec<&Live> =
            [Some(&fs_etcd), Some(&s3_etcd), Some(&fs_redb), peer.as_ref()].into_iter().flatten().collect();
        let mut images = Vec::new();
        for l in &all {
            let image = Image::seed(&l.client, "bench/app").await?;
            image.mount(&l.client, "bench/put", "bench/app").await?;
            images.push(image);
        }
        let c = 16;
        for put in [false, true] {
            let op = if put { "PUT" } else { "GET" };
            let etcd = format!("etcd manifest {op} c={c}, fs+etcd [peer: ours on fs+redb]");
            let replica = format!("replica manifest {op} c={c}, S3+etcd [peer: ours on fs+redb]");
            let reference = format!("etcd manifest {op} c={c}, fs+etcd [peer: distribution on fs]");
            for _ in 0..self.plan.pairs {
                for (i, (l, image)) in all.iter().zip(&images).enumerate() {
                    let op = |seq: u64| {
                        let client = &l.client;
                        async move {
                            if put {
                                client.put_manifest("bench/put", &format!("t{seq}"), image.manifest(Some(seq))).await
                            } else {
                                client.get_manifest("bench/app", "v1").await.map(|_| ())
                            }
                        }
                    };
                    match i {
                        0 => {
                            self.ops_sample_as(report, l, Kind::Ours, &etcd, c, op).await?;
                            copy_ops(report, &etcd, &reference, Kind::Ours);
                        }
                        1 => self.ops_sample_as(report, l, Kind::Ours, &replica, c, op).await?,
                        2 => {
                            self.ops_sample_as(report, l, Kind::Peer, &etcd, c, op).await?;
                            copy_ops(report, &etcd, &replica, Kind::Peer);
                        }
                        _ => self.ops_sample_as(report, l, Kind::Peer, &reference, c, op).await?,
                    }
                }
            }
            for label in [&etcd, &replica, &reference] {
                progress_ops(report, label);
            }
        }
        Ok(())
    }

    /// Idle RSS and peak RSS during one `big` monolithic push to S3 (ours on S3+etcd, the peer on S3), each pair on
    /// freshly started servers.
    async fn s3_memory(&self, report: &mut Report, bins: &Bins, big: u64) -> anyhow::Result<()> {
        let sh = self.shared(bins).await?;
        let s = size_label(big);
        let idle_label = "S3 idle RSS";
        let peak_label = format!("S3 peak RSS during {s} push");
        let above_label = format!("S3 peak RSS during {s} push, above idle");
        let push_label = format!("S3 push {s} monolithic");
        for _ in 0..self.plan.pairs {
            for &kind in self.kinds() {
                let l = self.start_on(kind, &self.remote(&sh, true, kind == Kind::Ours)).await?;
                l.client.tags("bench/none").await.ok();
                tokio::time::sleep(Duration::from_millis(500)).await;
                let idle = l.server.rss();
                ensure!(l.server.reset_peak(), "/proc/{}/clear_refs refused: no peak RSS to measure", l.server.pid);
                let blob = self.contents.blob(big, self.next());
                let (_, wall, cpu) = l.measure(l.client.push_monolithic("bench/big", &blob)).await?;
                let peak = l.server.peak_rss();
                report.add(idle_label, Unit::Mib, Cost::None, kind, plain(Live::mib(idle)));
                report.add(&peak_label, Unit::Mib, Cost::None, kind, plain(Live::mib(peak)));
                report.add(&above_label, Unit::Mib, Cost::None, kind, plain(Live::mib(peak.saturating_sub(idle))));
                report.add(&push_label, Unit::MibPerSec, Cost::PerGib, kind, throughput(big, wall, cpu));
            }
        }
        for label in [idle_label, &peak_label, &above_label, &push_label] {
            progress(report, label);
        }
        Ok(())
    }
}

fn sorted(mut v: Vec<Duration>) -> Vec<Duration> {
    v.sort_unstable();
    v
}

/// The median over the pairs of a run of ours' sample `i` of `label` divided by the S3 server's own figure
/// measured in the same pair (`own(i)`), and the per-pair ratios as text. moto's speed drifts over a run by
/// ±20% (it keeps every object in memory, and shares the cores with the registries), so each of ours is set
/// against moto's own measured next to it, as the metrics-overhead row judges per-sample ratios.
fn paired(r: &Report, label: &str, own: impl Fn(usize) -> Option<f64>) -> Option<(f64, String)> {
    let ours = &r.get(label)?.ours;
    let ratios: Vec<f64> = ours.iter().enumerate().filter_map(|(i, s)| Some(s.value / own(i)?)).collect();
    let text = ratios.iter().map(|x| format!("{:.0}%", 100.0 * x)).collect::<Vec<_>>().join(", ");
    Some((crate::report::median(ratios)?, text))
}

/// The point-8 targets, judged on the medians of the group's rows (rows the run did not make are n/a); ours
/// against moto's own speed on per-pair ratios ([`paired`]).
pub fn targets(r: &Report) -> Vec<Target> {
    let med = |label: &str, kind| r.get(label).and_then(|row| row.median(kind));
    let na =
        |what, label: &str| Target { what, verdict: Verdict::NotMeasured, detail: format!("{label}: not measured") };
    let judge = |what, ok: bool, detail: String| Target {
        what,
        verdict: if ok { Verdict::Met } else { Verdict::Missed },
        detail,
    };
    let mut t = Vec::new();
    for (s, w1, w2, w3) in [
        (
            "64 MiB",
            "S3 push 64 MiB ≥ 1.3× distribution on the same S3",
            "S3 push 64 MiB ≥ 85% of moto's own put",
            "S3 pull 64 MiB ≥ 85% of moto's own GET",
        ),
        (
            "512 MiB",
            "S3 push 512 MiB ≥ 1.3× distribution on the same S3",
            "S3 push 512 MiB ≥ 85% of moto's own put",
            "S3 pull 512 MiB ≥ 85% of moto's own GET",
        ),
    ] {
        let push = format!("S3 push {s} monolithic");
        t.push(match (med(&push, Kind::Ours), med(&push, Kind::Peer)) {
            (Some(o), Some(p)) => judge(w1, o >= 1.3 * p, format!("{o:.0} vs {p:.0} MiB/s, ×{:.2}", o / p)),
            _ => na(w1, &push),
        });
        let v1 = format!("{push} [peer: moto's own put, 1 part in flight]");
        let v4 = format!("{push} [peer: moto's own put, 4 parts in flight]");
        // Each pair's push through ours against moto's best own put measured right after it (the faster of one
        // and four parts in flight).
        let ceilings = |i: usize| [&v1, &v4].iter().filter_map(|l| Some(r.get(l)?.peer.get(i)?.value)).reduce(f64::max);
        t.push(match (med(&push, Kind::Ours), paired(r, &push, ceilings)) {
            (Some(o), Some((ratio, ratios))) => judge(
                w2,
                ratio >= 0.85,
                format!(
                    "{o:.0} MiB/s; {:.0}% of moto's best own put in the same pair (median of {ratios})",
                    100.0 * ratio
                ),
            ),
            _ => na(w2, &v1),
        });
        let get = format!("S3 pull {s} [peer: moto's own GET]");
        let own_get = |i: usize| Some(r.get(&get)?.peer.get(i)?.value);
        t.push(match (med(&get, Kind::Ours), med(&get, Kind::Peer), paired(r, &get, own_get)) {
            (Some(o), Some(c), Some((ratio, ratios))) => judge(
                w3,
                ratio >= 0.85,
                format!(
                    "{o:.0} vs {c:.0} MiB/s; {:.0}% of moto's own GET in the same pair (median of {ratios})",
                    100.0 * ratio
                ),
            ),
            _ => na(w3, &get),
        });
    }
    // Finishing completes the multipart upload and copies nothing, so its cost is the S3 server's completion. On
    // AWS that is flat; moto concatenates the parts and grows with the size. The target is therefore judged
    // against the server's own CompleteMultipartUpload, measured in the same run: flat (×1.5) when the server is,
    // and otherwise no slower than the server's own completion at either size (+20%).
    let what = "S3 finish (closing PUT) takes the same time at 64 MiB and 512 MiB, or no more than the server's own completion";
    let (a, b) = ("S3 finish (closing PUT), 64 MiB chunked", "S3 finish (closing PUT), 512 MiB chunked");
    let (ca, cb) = (
        "S3 finish, 64 MiB [peer: moto's own CompleteMultipartUpload]",
        "S3 finish, 512 MiB [peer: moto's own CompleteMultipartUpload]",
    );
    t.push(match (med(a, Kind::Ours), med(b, Kind::Ours), med(ca, Kind::Peer), med(cb, Kind::Peer)) {
        (Some(x), Some(y), Some(mx), Some(my)) => {
            let flat = y <= 1.5 * x;
            let as_server = x <= 1.2 * mx && y <= 1.2 * my;
            judge(
                what,
                flat || as_server,
                format!(
                    "ours {x:.1} → {y:.1} ms (×{:.2}); moto's own completion {mx:.1} → {my:.1} ms (×{:.2})",
                    y / x,
                    my / mx
                ),
            )
        }
        _ => na(what, b),
    });
    for (what, label) in [
        (
            "manifest GET c=16 with etcd metadata ≥ 20,000/s (fs+etcd)",
            "etcd manifest GET c=16, fs+etcd [peer: ours on fs+redb]",
        ),
        (
            "manifest GET c=16 with etcd metadata ≥ 20,000/s (S3+etcd)",
            "replica manifest GET c=16, S3+etcd [peer: ours on fs+redb]",
        ),
    ] {
        t.push(match med(label, Kind::Ours) {
            Some(v) => judge(what, v >= 20_000.0, format!("{v:.0} ops/s")),
            None => na(what, label),
        });
    }
    let what = "peak RSS during a 1 GiB push to S3 ≤ 64 MiB above idle";
    let label = "S3 peak RSS during 1 GiB push, above idle";
    t.push(match med(label, Kind::Ours) {
        Some(v) => judge(what, v <= 64.0, format!("{v:.1} MiB")),
        None => na(what, label),
    });
    t
}
