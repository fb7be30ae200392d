//! Issue 17: blob pulls while another process loads the machine, and the targets (points 3 and 4).
//!
//! The load is a parallel push: a second process (this executable re-run with the hidden `--push-load` flag) pushes
//! a 64 MiB blob to the same server in a loop, monolithic, for as long as the pulls run (the same blob each time:
//! the server still receives, stages and hashes every byte, and the disk does not fill up). It is pinned to the
//! servers' core, so the server pays for the push it handles and shares its core with the loader's own work, which
//! is the same client code and the same bytes for both servers. The pulling client keeps its own core, so the figure
//! stays the server's. Ours and the peer are measured alternately, pair by pair, like every other row.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context};

use crate::client::Client;
use crate::content::Contents;
use crate::report::{Cost, Report, Sample, Target, Unit, Verdict};
use crate::servers::Kind;
use crate::workloads::{progress, size_label, sync_disks, Bench, Live, GIB, MIB};

/// Size of the blobs the loader pushes.
const LOAD_BLOB: u64 = 64 * MIB;
/// The repository the loader pushes into.
const LOAD_REPO: &str = "bench/load";
/// How long the loader runs before the pulls are timed (its content hashed, its first push under way).
const LOAD_WARMUP: Duration = Duration::from_millis(1500);
/// Least ratio ours/peer under load (issue 17, point 4).
const MIN_RATIO: f64 = 1.2;
/// Largest extra CPU per request of a registry JWT over an API token (issue 17, point 3).
const MAX_JWT_EXTRA: f64 = 0.10;

/// The row's label for a blob of `size`.
pub fn label(size: u64) -> String {
    format!("pull {} under load (a parallel 64 MiB push loop)", size_label(size))
}

/// The environment variable that hands the loader its token (not on its command line).
const TOKEN_ENV: &str = "BENCH_LOAD_TOKEN";

/// The loader process: pushes a [`LOAD_BLOB`]-byte blob to `base` again and again until killed.
pub async fn push_load(base: &str) -> anyhow::Result<()> {
    let token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
    let client = Client::new("loader", base, token)?;
    // The same blob every time: the server still receives, stages and hashes all of it, and the disk does not fill.
    let blob = Contents::new(&[LOAD_BLOB]).blob(LOAD_BLOB, 17);
    loop {
        client.push_monolithic(LOAD_REPO, &blob).await?;
    }
}

/// A running loader, killed (by its pid) on drop.
struct Loader(Child);

impl Loader {
    fn start(bench: &Bench, l: &Live) -> anyhow::Result<Loader> {
        let exe = std::env::current_exe().context("finding this executable for the loader")?;
        let mut cmd = match &bench.tools.taskset {
            Some(taskset) => {
                let mut c = Command::new(taskset);
                c.arg("-c").arg(bench.tools.server_core.to_string()).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        let child = cmd
            .arg("--push-load")
            .arg(&l.server.base)
            .env(TOKEN_ENV, l.server.token.as_deref().unwrap_or(""))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the loader")?;
        Ok(Loader(child))
    }

    /// Fails when the loader already exited (it refused or crashed): the pulls were not under load.
    fn check_running(&mut self) -> anyhow::Result<()> {
        match self.0.try_wait()? {
            None => Ok(()),
            Some(status) => anyhow::bail!("the loader exited early ({status})"),
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Bench {
    /// The largest pull blob, pulled while the loader pushes to the same server.
    pub async fn pull_under_load(&self, report: &mut Report) -> anyhow::Result<()> {
        eprintln!("== blob pull under load");
        let live = self.start_both().await?;
        let size = *self.plan.pull_sizes.last().context("no pull size")?;
        let mut digests = Vec::new();
        for l in &live {
            let blob = self.contents.blob(size, self.next());
            l.client.push_monolithic("bench/pull", &blob).await?;
            let p = l.client.pull("bench/pull", &blob.digest, true).await?;
            ensure!(p.bytes == size, "{} served {} bytes of {size}", l.kind().name(), p.bytes);
            digests.push(blob.digest);
        }
        let label = label(size);
        let count = if size <= 64 * MIB { 8 } else { 4 };
        for _ in 0..self.plan.pairs {
            for (l, digest) in live.iter().zip(&digests) {
                sync_disks();
                let mut loader = Loader::start(self, l)?;
                tokio::time::sleep(LOAD_WARMUP).await;
                loader.check_running()?;
                let (_, wall, cpu) = l
                    .measure(async {
                        for _ in 0..count {
                            let p = l.client.pull("bench/pull", digest, false).await?;
                            ensure!(p.bytes == size, "short pull: {} of {size}", p.bytes);
                        }
                        Ok(())
                    })
                    .await
                    .with_context(|| format!("{label} on {}", l.kind().name()))?;
                loader.check_running()?;
                drop(loader);
                let bytes = size * count as u64;
                let sample = Sample { value: Live::mib(bytes) / wall, cpu_seconds: cpu, work: bytes as f64 / GIB };
                report.add(&label, Unit::MibPerSec, Cost::PerGib, l.kind(), sample);
            }
        }
        progress(report, &label);
        Ok(())
    }
}

/// Issue 17's targets that this run measured: a registry JWT read costs at most 10% more CPU than an API-token
/// one (ours, manifest GET c=16), and pulls under load stay at least 1.2× the peer's.
pub fn targets(report: &Report, pull_sizes: &[u64]) -> Vec<Target> {
    let mut out = Vec::new();
    let jwt_what = "registry-JWT manifest GET c=16 CPU/request ≤ 1.10× the API token's";
    let (api, jwt) = (crate::workloads::JWT_PEER_LABEL, crate::workloads::JWT_LABEL);
    let ops = |label: &str| report.get(label).and_then(|r| r.median(Kind::Ours));
    if let (Some(a), Some(j)) = (report.get(api), report.get(jwt)) {
        // Sample i of each row is one pair of interleaved slices (see `Bench::interleaved_gets`).
        let extra = crate::overhead::cpu_ratios(&j.ours, &a.ours);
        out.push(match crate::report::median(extra.clone()) {
            Some(x) => Target {
                what: jwt_what,
                verdict: if x <= 1.0 + MAX_JWT_EXTRA { Verdict::Met } else { Verdict::Missed },
                detail: format!(
                    "×{x:.3} (median of {} per-slice-pair ratios of server CPU per request, {}); {:.1} vs {:.1} µs \
                     per request, {:.0} vs {:.0} ops/s (row medians)",
                    extra.len(),
                    crate::overhead::spread(&extra),
                    j.cpu(Kind::Ours).unwrap_or(f64::NAN) * 1e3,
                    a.cpu(Kind::Ours).unwrap_or(f64::NAN) * 1e3,
                    ops(jwt).unwrap_or(f64::NAN),
                    ops(api).unwrap_or(f64::NAN)
                ),
            },
            None => Target { what: jwt_what, verdict: Verdict::NotMeasured, detail: format!("{api} not measured") },
        });
    }
    if let Some(row) = pull_sizes.last().and_then(|&s| report.get(&label(s))) {
        let what = "pull under load ≥ 1.2× the peer's";
        out.push(match (row.median(Kind::Ours), row.median(Kind::Peer)) {
            (Some(o), Some(p)) if p > 0.0 => Target {
                what,
                verdict: if o >= p * MIN_RATIO { Verdict::Met } else { Verdict::Missed },
                detail: format!("{o:.0} vs {p:.0} MiB/s, ×{:.2} ({})", o / p, row.label),
            },
            _ => Target { what, verdict: Verdict::NotMeasured, detail: "the peer was not measured".into() },
        });
    }
    out
}
