//! The pull-through workloads (issue 6 with issue 5; issue 17 point 1): a third server, Debian's
//! `docker-registry`, plays the upstream and holds one image per pull size with one big layer. Tributary imports
//! the image (`imagestreamimports`); the peer runs as distribution's pull-through cache of the same upstream
//! (`proxy.remoteurl`). Each pair starts both fresh, so the first blob GET is a real miss: first byte and total
//! time of the miss, then of a hit; then (at the largest size) the upstream is frozen (`SIGSTOP`) and a GET of the
//! manifest by tag shows whether the cached tag still answers. Issue 17's targets compare the misses with the
//! peer's ([`targets`]).

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use serde_json::json;

use crate::client::{Client, OCI_MANIFEST};
use crate::report::{Cost, Report, Sample, Target, Unit, Verdict};
use crate::servers::{Kind, PeerRole, Server};
use crate::workloads::{size_label, Bench, Live};

/// How long a GET of the cached tag may take with the upstream frozen before it counts as hanging.
const FROZEN_LIMIT: Duration = Duration::from_secs(5);

const UPSTREAM_REPO: &str = "lib/big";
const OURS_STREAM: &str = "pt";

/// The sizes issue 17 judges the misses at, and its targets there (first byte, total).
const TARGET_SIZES: [u64; 2] = [64 << 20, 512 << 20];
const TARGETS: [[&str; 2]; 2] = [
    ["pull-through miss 64 MiB first byte ≤ distribution's", "pull-through miss 64 MiB total ≤ distribution's"],
    ["pull-through miss 512 MiB first byte ≤ distribution's", "pull-through miss 512 MiB total ≤ distribution's"],
];

fn label(size: u64, what: &str) -> String {
    format!("pull-through {} {what}", size_label(size))
}

impl Bench {
    pub async fn pullthrough(&self, report: &mut Report) -> anyhow::Result<()> {
        let sizes = self.plan.pull_sizes.clone();
        let largest = *sizes.last().context("no pull size")?;
        let upstream = Server::start_as(&self.tools, Kind::Peer, &self.scratch, PeerRole::Upstream)?;
        for size in sizes {
            self.pullthrough_of(report, &upstream, size, size == largest).await?;
        }
        Ok(())
    }

    /// The misses and hits of one blob of `size`, the last pull size (`frozen`) with the frozen-upstream GET.
    async fn pullthrough_of(
        &self,
        report: &mut Report,
        upstream: &Server,
        size: u64,
        frozen: bool,
    ) -> anyhow::Result<()> {
        eprintln!("== pull-through ({} blob)", size_label(size));
        let up = Client::new("upstream", &upstream.base, None)?;
        let blob = self.contents.blob(size, 0x0b16);
        let tag = format!("{}m", size >> 20);
        let ours_repo = format!("bench/{OURS_STREAM}{tag}");
        up.push_monolithic(UPSTREAM_REPO, &blob).await?;
        let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "config": {}}))?;
        let config_len = config.len();
        let config_digest = up.push_bytes(UPSTREAM_REPO, Bytes::from(config)).await?;
        let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_len},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob.digest, "size": size}]});
        up.put_manifest(UPSTREAM_REPO, &tag, Bytes::from(serde_json::to_vec(&manifest)?)).await?;
        let upstream_host = upstream.base.trim_start_matches("http://").to_owned();
        let label = |what: &str| label(size, what);
        let mut upstream_gets = Vec::new();
        for _ in 0..self.plan.pairs {
            for &kind in self.kinds() {
                let before = upstream.requests_for(&format!("/blobs/{}", blob.digest));
                let live = match kind {
                    Kind::Ours => {
                        let l = self.start(kind).await?;
                        let stream = format!("{OURS_STREAM}{tag}");
                        l.client
                            .import("bench", &stream, &tag, &format!("{upstream_host}/{UPSTREAM_REPO}:{tag}"))
                            .await?;
                        l
                    }
                    Kind::Peer => {
                        let server =
                            Server::start_as(&self.tools, kind, &self.scratch, PeerRole::Proxy(upstream.base.clone()))?;
                        let client = Client::new(kind.name(), &server.base, None)?;
                        Live { server, client }
                    }
                };
                let repo = if kind == Kind::Ours { ours_repo.as_str() } else { UPSTREAM_REPO };
                // The proxy learns the image through its manifest, as a client's pull would start.
                live.client.get_manifest(repo, &tag).await.with_context(|| format!("manifest on {}", kind.name()))?;
                for (what, hit) in [("miss", false), ("hit", true)] {
                    let (pull, wall, cpu) = live
                        .measure(live.client.pull(repo, &blob.digest, false))
                        .await
                        .with_context(|| format!("pull-through {what} on {}", kind.name()))?;
                    anyhow::ensure!(pull.bytes == size, "{} served {} of {size} bytes", kind.name(), pull.bytes);
                    let work = size as f64 / (1u64 << 30) as f64;
                    let first = Sample { value: pull.first_byte.as_secs_f64() * 1e3, cpu_seconds: cpu, work };
                    report.add(&label(&format!("{what}: first byte")), Unit::Millis, Cost::None, kind, first);
                    let total = Sample { value: wall * 1e3, cpu_seconds: cpu, work };
                    report.add(&label(&format!("{what}: total")), Unit::Millis, Cost::PerGib, kind, total);
                    if !hit {
                        upstream_gets.push((kind, upstream.requests_for(&format!("/blobs/{}", blob.digest)) - before));
                    }
                }
                if frozen {
                    upstream.freeze(true)?;
                    let took = live.client.time_manifest(repo, &tag, FROZEN_LIMIT).await;
                    upstream.freeze(false)?;
                    let sample = Sample { value: took.as_secs_f64() * 1e3, cpu_seconds: 0.0, work: 0.0 };
                    report.add("pull-through cached tag, upstream frozen", Unit::Millis, Cost::None, kind, sample);
                }
            }
        }
        for what in ["miss: first byte", "miss: total", "hit: first byte", "hit: total"] {
            crate::workloads::progress(report, &label(what));
        }
        if frozen {
            crate::workloads::progress(report, "pull-through cached tag, upstream frozen");
        }
        let gets: Vec<String> = upstream_gets.iter().map(|(k, n)| format!("{} {n}", k.name())).collect();
        eprintln!("  upstream GETs of the blob per miss: {}", gets.join(", "));
        report.meta.insert(format!("pull-through {} upstream GETs per miss", size_label(size)), json!(gets));
        let ours: Vec<usize> = upstream_gets.iter().filter(|(k, _)| *k == Kind::Ours).map(|(_, n)| *n).collect();
        report.meta.insert(gets_key(size), json!(ours));
        Ok(())
    }
}

/// Where [`targets`] finds our upstream GETs per miss at `size`.
fn gets_key(size: u64) -> String {
    format!("pull-through {} upstream GETs per miss, ours", size_label(size))
}

/// Issue 17 point 1: a pull-through miss at least as fast as distribution's on the same upstream, first byte and
/// total, at 64 MiB and 512 MiB; and one upstream fetch of the blob per miss.
pub fn targets(report: &Report) -> Vec<Target> {
    let med = |label: &str, kind| report.get(label).and_then(|row| row.median(kind));
    let mut t = Vec::new();
    for (size, whats) in TARGET_SIZES.into_iter().zip(TARGETS) {
        for (what, part) in whats.into_iter().zip(["miss: first byte", "miss: total"]) {
            let row = label(size, part);
            t.push(match (med(&row, Kind::Ours), med(&row, Kind::Peer)) {
                (Some(o), Some(p)) => Target {
                    what,
                    verdict: if o <= p { Verdict::Met } else { Verdict::Missed },
                    detail: format!("{o:.1} vs {p:.1} ms, ×{:.2} ({row})", o / p),
                },
                _ => Target { what, verdict: Verdict::NotMeasured, detail: format!("{row}: not measured") },
            });
        }
    }
    let what = "pull-through: one upstream GET of the blob per miss (ours)";
    let gets: Option<Vec<u64>> = TARGET_SIZES
        .iter()
        .map(|&s| report.meta.get(&gets_key(s)).and_then(|v| serde_json::from_value::<Vec<u64>>(v.clone()).ok()))
        .collect::<Option<Vec<_>>>()
        .map(|v| v.concat());
    t.push(match gets {
        Some(v) if !v.is_empty() => Target {
            what,
            verdict: if v.iter().all(|&n| n == 1) { Verdict::Met } else { Verdict::Missed },
            detail: format!("GETs per miss: {v:?}"),
        },
        _ => Target { what, verdict: Verdict::NotMeasured, detail: "misses not measured at 64 and 512 MiB".into() },
    });
    t
}
