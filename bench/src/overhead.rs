//! The metrics overhead group (issue 12): manifest GET by tag at c=16 on two fresh servers of the same build, one
//! as `tributary serve` starts by default (metrics on: every request counted and timed, every store call timed)
//! and one started with `--metrics false`. The "ours" column holds metrics on, the "peer" column metrics off, so
//! the ratio is the throughput kept with metrics on. Target: at least 95%.
//!
//! The effect (about 1% of the server's instructions) is smaller than the drift of a shared machine over a few
//! seconds, so each pair is measured in [`SLICES`] short slices per server, strictly interleaved in the order on,
//! off, off, on, … (each server is measured as often first as second, and both see the same moments of the
//! machine's load), and the target is judged on the median of the per-pair ratios, not on the ratio of the two
//! columns' medians: of server CPU per request, the capacity kept (see [`target`]), with throughput alongside.

use std::time::Duration;

use crate::report::{median, Report, Sample, Target, Verdict};
use crate::servers::{Kind, Storage};
use crate::workloads::{progress_ops, Bench, Image, OpsRun};

/// The row's label.
pub const LABEL: &str = "manifest GET c=16, metrics on [peer: same build, metrics off]";

/// Least share of the metrics-off throughput the metrics-on server must keep.
const MIN_RATIO: f64 = 0.95;

/// Measured slices per server per pair (an even number: the order on, off, off, on repeats). Short slices spread
/// a burst of the machine's other load over both servers.
const SLICES: usize = 8;

impl Bench {
    pub async fn metrics_overhead(&self, report: &mut Report) -> anyhow::Result<()> {
        eprintln!("== metrics overhead");
        let on = self.start_with_args(Kind::Ours, &Storage::default(), &[]).await?;
        let off = self.start_with_args(Kind::Ours, &Storage::default(), &["--metrics", "false"]).await?;
        // The flag took effect: /metrics answers on one and is not routed on the other.
        anyhow::ensure!(on.client.status_of("/metrics").await? == 200, "metrics on: /metrics does not answer 200");
        anyhow::ensure!(off.client.status_of("/metrics").await? == 404, "metrics off: /metrics is still served");
        let servers = [(&on, Kind::Ours), (&off, Kind::Peer)];
        for (l, _) in servers {
            Image::seed(&l.client, "bench/app").await?;
            let client = &l.client;
            self.ops_warm_up(16, |_| async move { client.get_manifest("bench/app", "v1").await.map(|_| ()) }).await?;
        }
        let slice = Duration::from_secs_f64(self.plan.manifest_secs / SLICES as f64);
        for _ in 0..self.plan.pairs {
            let mut runs = [OpsRun::default(), OpsRun::default()];
            let cpu_before = servers.map(|(l, _)| l.server.cpu_seconds());
            for i in 0..2 * SLICES {
                let which = [0, 1, 1, 0][i % 4];
                let client = &servers[which].0.client;
                let op = |_: u64| async move { client.get_manifest("bench/app", "v1").await.map(|_| ()) };
                runs[which].merge(self.ops_run(servers[which].0, 16, slice, op).await?);
            }
            // Server CPU is read around the whole pair (the other server's slices are idle time for each): the
            // counter ticks every 10 ms, and two readings per server err less than eight.
            for (((l, kind), run), before) in servers.into_iter().zip(&mut runs).zip(cpu_before) {
                run.cpu = l.server.cpu_seconds() - before;
                run.record(report, kind, LABEL);
            }
        }
        progress_ops(report, LABEL);
        Ok(())
    }
}

/// The overhead target, when the group ran. Judged on capacity: the server CPU per request with metrics off over
/// that with metrics on (median of the per-pair ratios), the throughput a saturated server keeps. On a quiet
/// machine the server saturates its core and the throughput ratio agrees; when other load shares the machine the
/// server gets less of its core and its throughput follows that load, while its CPU per request still measures
/// its own cost. The throughput ratios are shown alongside.
pub fn target(report: &Report) -> Option<Target> {
    let row = report.get(LABEL)?;
    let what = "manifest GET c=16 with metrics on ≥ 95% of metrics off (same build)";
    let pairs: Vec<_> = row.ours.iter().zip(&row.peer).filter(|(on, off)| on.value > 0.0 && off.value > 0.0).collect();
    let per_request = |s: &Sample| s.cpu_seconds / s.work;
    let capacity: Vec<f64> = pairs
        .iter()
        .filter(|(on, _)| on.cpu_seconds > 0.0)
        .map(|(on, off)| per_request(off) / per_request(on))
        .collect();
    let throughput: Vec<f64> = pairs.iter().map(|(on, off)| on.value / off.value).collect();
    Some(match median(capacity.clone()) {
        Some(kept) => Target {
            what,
            verdict: if kept >= MIN_RATIO { Verdict::Met } else { Verdict::Missed },
            detail: format!(
                "capacity kept {:.1}% (judged: median of {} per-pair server CPU per request off/on, {}); throughput \
                 on/off {:.1}% (median of per-pair ratios, {})",
                100.0 * kept,
                capacity.len(),
                spread(&capacity),
                100.0 * median(throughput.clone()).unwrap_or(f64::NAN),
                spread(&throughput),
            ),
        },
        None => Target { what, verdict: Verdict::NotMeasured, detail: format!("{LABEL} not measured") },
    })
}

/// `min–max` of ratios, as percentages.
fn spread(ratios: &[f64]) -> String {
    let (lo, hi) = ratios.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    format!("{:.1}–{:.1}%", 100.0 * lo, 100.0 * hi)
}
