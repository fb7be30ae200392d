//! The metrics overhead group (issue 12): manifest GET by tag at c=16 on two fresh servers of the same build, one
//! as `tributary serve` starts by default (metrics on: every request counted and timed, every store call timed)
//! and one started with `--metrics false`, measured alternately pair by pair. The "ours" column holds metrics on,
//! the "peer" column metrics off, so the ratio is the throughput kept with metrics on. Target: at least 95%.

use crate::report::{Report, Target, Verdict};
use crate::servers::{Kind, Storage};
use crate::workloads::{progress_ops, Bench, Image};

/// The row's label.
pub const LABEL: &str = "manifest GET c=16, metrics on [peer: same build, metrics off]";

/// Least share of the metrics-off throughput the metrics-on server must keep.
const MIN_RATIO: f64 = 0.95;

impl Bench {
    pub async fn metrics_overhead(&self, report: &mut Report) -> anyhow::Result<()> {
        eprintln!("== metrics overhead");
        let on = self.start_with_args(Kind::Ours, &Storage::default(), &[]).await?;
        let off = self.start_with_args(Kind::Ours, &Storage::default(), &["--metrics", "false"]).await?;
        // The flag took effect: /metrics answers on one and is not routed on the other.
        anyhow::ensure!(on.client.status_of("/metrics").await? == 200, "metrics on: /metrics does not answer 200");
        anyhow::ensure!(off.client.status_of("/metrics").await? == 404, "metrics off: /metrics is still served");
        for l in [&on, &off] {
            Image::seed(&l.client, "bench/app").await?;
        }
        for _ in 0..self.plan.pairs {
            for (l, column) in [(&on, Kind::Ours), (&off, Kind::Peer)] {
                let op = |_: u64| {
                    let client = &l.client;
                    async move { client.get_manifest("bench/app", "v1").await.map(|_| ()) }
                };
                self.ops_sample_as(report, l, column, LABEL, 16, op).await?;
            }
        }
        progress_ops(report, LABEL);
        Ok(())
    }
}

/// The overhead target, when the group ran.
pub fn target(report: &Report) -> Option<Target> {
    let row = report.get(LABEL)?;
    let what = "manifest GET c=16 with metrics on ≥ 95% of metrics off (same build)";
    Some(match (row.median(Kind::Ours), row.median(Kind::Peer)) {
        (Some(on), Some(off)) if off > 0.0 => Target {
            what,
            verdict: if on >= off * MIN_RATIO { Verdict::Met } else { Verdict::Missed },
            detail: format!("{on:.0} vs {off:.0} ops/s, {:.1}%", 100.0 * on / off),
        },
        _ => Target { what, verdict: Verdict::NotMeasured, detail: format!("{LABEL} not measured") },
    })
}
