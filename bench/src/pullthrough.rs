//! The pull-through workloads (issue 6 with issue 5): a third server, Debian's `docker-registry`, plays the
//! upstream and holds one image with a big layer. Tributary imports the image (`imagestreamimports`); the peer
//! runs as distribution's pull-through cache of the same upstream (`proxy.remoteurl`). Each pair starts both
//! fresh, so the first blob GET is a real miss: first byte and total time of the miss, then of a hit; then the
//! upstream is frozen (`SIGSTOP`) and a GET of the manifest by tag shows whether the cached tag still answers.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use serde_json::json;

use crate::client::{Client, OCI_MANIFEST};
use crate::report::{Cost, Report, Sample, Unit};
use crate::servers::{Kind, PeerRole, Server};
use crate::workloads::{size_label, Bench, Live};

/// How long a GET of the cached tag may take with the upstream frozen before it counts as hanging.
const FROZEN_LIMIT: Duration = Duration::from_secs(5);

const UPSTREAM_REPO: &str = "lib/big";
const OURS_REPO: &str = "bench/pt";

impl Bench {
    pub async fn pullthrough(&self, report: &mut Report) -> anyhow::Result<()> {
        let size = *self.plan.pull_sizes.last().context("no pull size")?;
        eprintln!("== pull-through ({} blob)", size_label(size));
        let upstream = Server::start_as(&self.tools, Kind::Peer, &self.scratch, PeerRole::Upstream)?;
        let up = Client::new("upstream", &upstream.base, None)?;
        let blob = self.contents.blob(size, 0x0b16);
        up.push_monolithic(UPSTREAM_REPO, &blob).await?;
        let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "config": {}}))?;
        let config_len = config.len();
        let config_digest = up.push_bytes(UPSTREAM_REPO, Bytes::from(config)).await?;
        let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_len},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob.digest, "size": size}]});
        up.put_manifest(UPSTREAM_REPO, "1", Bytes::from(serde_json::to_vec(&manifest)?)).await?;
        let upstream_host = upstream.base.trim_start_matches("http://").to_owned();
        let label = |what: &str| format!("pull-through {} {what}", size_label(size));
        let mut upstream_gets = Vec::new();
        for _ in 0..self.plan.pairs {
            for &kind in self.kinds() {
                let before = upstream.requests_for(&format!("/blobs/{}", blob.digest));
                let live = match kind {
                    Kind::Ours => {
                        let l = self.start(kind).await?;
                        l.client.import("bench", "pt", "1", &format!("{upstream_host}/{UPSTREAM_REPO}:1")).await?;
                        l
                    }
                    Kind::Peer => {
                        let server =
                            Server::start_as(&self.tools, kind, &self.scratch, PeerRole::Proxy(upstream.base.clone()))?;
                        let client = Client::new(kind.name(), &server.base, None)?;
                        Live { server, client }
                    }
                };
                let repo = if kind == Kind::Ours { OURS_REPO } else { UPSTREAM_REPO };
                let tag = "1";
                // The proxy learns the image through its manifest, as a client's pull would start.
                live.client.get_manifest(repo, tag).await.with_context(|| format!("manifest on {}", kind.name()))?;
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
                upstream.freeze(true)?;
                let frozen = live.client.time_manifest(repo, tag, FROZEN_LIMIT).await;
                upstream.freeze(false)?;
                let sample = Sample { value: frozen.as_secs_f64() * 1e3, cpu_seconds: 0.0, work: 0.0 };
                report.add("pull-through cached tag, upstream frozen", Unit::Millis, Cost::None, kind, sample);
            }
        }
        for what in ["miss: first byte", "miss: total", "hit: first byte", "hit: total"] {
            crate::workloads::progress(report, &label(what));
        }
        crate::workloads::progress(report, "pull-through cached tag, upstream frozen");
        let gets: Vec<String> = upstream_gets.iter().map(|(k, n)| format!("{} {n}", k.name())).collect();
        eprintln!("  upstream GETs of the blob per miss: {}", gets.join(", "));
        report.meta.insert("pull-through upstream GETs per miss".into(), json!(gets));
        Ok(())
    }
}
