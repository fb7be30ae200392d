//! The `gc` group (issue 11, point 7): a Tributary server on a store seeded through the library with 10,000 and
//! 100,000 linked blobs of which 1% are linked by nothing (`--quick`: 2,000 and 10,000), then: the wall time and
//! server CPU of one deleting sweep asked for through the admin API (`POST /apis/tributary.dev/v1/gc`, grace 0,
//! so the garbage goes in that sweep), and manifest GET p99 at c=16 while sweeps run back to back against the same
//! without a sweep (target: within 2×). Only the group's runner in `main` calls it.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use names::{Digest, RepositoryName};
use storage_backends::{keys, paths, MetadataStore, RedbStore, Txn};

use crate::client::Client;
use crate::report::{Cost, Report, Sample, Unit};
use crate::servers::{Kind, PeerRole, Server, Storage};
use crate::workloads::{progress, progress_ops, Bench, Image, Live};

/// Blobs seeded per store, by mode.
fn sizes(quick: bool) -> [usize; 2] {
    if quick {
        [2_000, 10_000]
    } else {
        [10_000, 100_000]
    }
}

/// Bytes of each seeded blob.
const BLOB_BYTES: usize = 256;

/// Writes `n` blobs straight into `<data>/blobs` (the content-addressed layout, unsynced: seeding is not measured)
/// and links all but every hundredth into one of 100 repositories in `<data>/metadata.redb`. Returns the garbage
/// count and bytes.
async fn seed(data: &Path, n: usize) -> anyhow::Result<(usize, u64)> {
    std::fs::create_dir_all(data)?;
    let meta = RedbStore::open(&data.join("metadata.redb"))?;
    let root = data.join("blobs");
    let repos: Vec<RepositoryName> = (0..100).map(|i| format!("bench/seed{i}").parse()).collect::<Result<_, _>>()?;
    let mut dirs = HashSet::new();
    let (mut garbage, mut garbage_bytes) = (0, 0);
    let mut txn = Txn::new();
    for i in 0..n {
        let mut body = format!("gc bench blob {i:08} ").into_bytes();
        body.resize(BLOB_BYTES, b'.');
        let d = Digest::sha256_of(&body);
        let path = root.join(paths::blob(&d).as_ref());
        let dir = path.parent().context("blob path")?.to_path_buf();
        if dirs.insert(dir.clone()) {
            std::fs::create_dir_all(&dir)?;
        }
        std::fs::write(&path, &body)?;
        if i % 100 == 99 {
            garbage += 1;
            garbage_bytes += body.len() as u64;
            continue;
        }
        txn = txn.put(keys::blob_link(&repos[i % 100], &d), format!("{{\"size\":{BLOB_BYTES}}}").into_bytes());
        if txn.writes() >= 100 {
            meta.commit(std::mem::take(&mut txn).lazy()).await?;
        }
    }
    meta.commit(txn).await?;
    Ok((garbage, garbage_bytes))
}

/// One sweep through the admin API; the answer's (items freed, bytes freed).
async fn sweep(client: &Client, confirm: bool) -> anyhow::Result<(u64, u64)> {
    let body = serde_json::json!({"confirm": confirm, "graceSeconds": 0});
    let answer = client.admin_post("/apis/tributary.dev/v1/gc", body).await?;
    let items = answer["deleted"].as_array().map_or(0, |a| a.len() as u64);
    Ok((items, answer["bytesFreed"].as_u64().unwrap_or(0)))
}

impl Bench {
    pub async fn gc(&self, report: &mut Report) -> anyhow::Result<()> {
        for n in sizes(self.plan.quick) {
            eprintln!("== gc: {n} blobs, 1% garbage");
            let dir = Server::new_dir(Kind::Ours, &self.scratch)?;
            let seeding = Instant::now();
            let (garbage, garbage_bytes) = seed(&dir.join("data"), n).await?;
            eprintln!("   seeded in {:.1} s", seeding.elapsed().as_secs_f64());
            let server = Server::start_in(&self.tools, Kind::Ours, dir, PeerRole::Plain, &Storage::default(), &[])?;
            let client = Client::new(Kind::Ours.name(), &server.base, server.token.clone())?;
            client.create_namespace("bench").await?;
            let l = Live { server, client };
            let image = Image::seed(&l.client, "bench/app").await?;
            drop(image);

            let label = format!("gc sweep, {n} blobs, 1% garbage (wall)");
            let cpu_label = format!("gc sweep, {n} blobs, 1% garbage (server CPU)");
            let ((freed, bytes), wall, cpu) = l.measure(sweep(&l.client, true)).await?;
            anyhow::ensure!(
                freed as usize == garbage && bytes == garbage_bytes,
                "the sweep freed {freed} items ({bytes} bytes), the garbage was {garbage} ({garbage_bytes} bytes)"
            );
            let one = |value| Sample { value, cpu_seconds: cpu, work: 0.0 };
            report.add(&label, Unit::Millis, Cost::None, Kind::Ours, one(wall * 1000.0));
            report.add(&cpu_label, Unit::Millis, Cost::None, Kind::Ours, one(cpu * 1000.0));
            progress(report, &label);
            progress(report, &cpu_label);
            // A dry run, timed too: the mark and the inventory alone (what every sweep without garbage costs).
            let (_, wall, cpu) = l.measure(sweep(&l.client, false)).await?;
            let dry = format!("gc dry-run sweep, {n} blobs (wall)");
            report.add(
                &dry,
                Unit::Millis,
                Cost::None,
                Kind::Ours,
                Sample { value: wall * 1000.0, cpu_seconds: cpu, work: 0.0 },
            );
            progress(report, &dry);

            // Manifest GET p99 at c=16: without a sweep (the peer column), then while sweeps run back to back.
            let get = format!("gc: manifest GET c=16, {n} blobs [peer: ours without a sweep]");
            for _ in 0..self.plan.pairs {
                let op = |_: u64| {
                    let client = &l.client;
                    async move { client.get_manifest("bench/app", "v1").await.map(|_| ()) }
                };
                self.ops_sample_as(report, &l, Kind::Peer, &get, 16, op).await?;
                let sweeping = AtomicBool::new(true);
                let sweeps = async {
                    let mut count = 0u32;
                    while sweeping.load(Ordering::Relaxed) {
                        sweep(&l.client, true).await?;
                        count += 1;
                    }
                    Ok::<_, anyhow::Error>(count)
                };
                let measured = async {
                    let r = self.ops_sample_as(report, &l, Kind::Ours, &get, 16, op).await;
                    sweeping.store(false, Ordering::Relaxed);
                    r
                };
                let (count, measured) = futures::join!(sweeps, measured);
                measured?;
                eprintln!("   {} sweeps ran during the measurement", count?);
            }
            progress_ops(report, &get);
        }
        Ok(())
    }
}

/// The target line: manifest GET p99 during sweeps over without, per store size.
pub fn target(report: &Report) -> String {
    let mut out = String::new();
    for quick in [false, true] {
        for n in sizes(quick) {
            let Some(row) = report.get(&format!("gc: manifest GET c=16, {n} blobs [peer: ours without a sweep] p99"))
            else {
                continue;
            };
            if let (Some(during), Some(without)) = (row.median(Kind::Ours), row.median(Kind::Peer)) {
                let ratio = during / without;
                let verdict = if ratio <= 2.0 { "met" } else { "NOT met" };
                out.push_str(&format!(
                    "  {n} blobs: p99 {during:.2} ms during sweeps vs {without:.2} ms without: {ratio:.2}x ({verdict})\n"
                ));
            }
        }
    }
    out
}
