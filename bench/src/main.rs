//! `bench`: Tributary side by side with CNCF distribution 2.8 (issue 6). Checks what it needs (it builds and
//! installs nothing), pins itself and the servers to different cores, runs the workload groups, prints the table
//! and the target check, and optionally saves every raw sample as JSON.
//!
//! `cargo build --release -p registry --bin tributary && cargo run --release -p bench -- [--quick]`

mod client;
mod content;
mod gc;
mod overhead;
mod pullthrough;
mod push_cost;
mod report;
mod s3;
mod scale;
mod servers;
mod stores;
mod underload;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use report::{Report, Unit};
use servers::Tools;
use workloads::{Bench, Plan};

#[derive(Parser)]
#[command(name = "bench", about = "Benchmark Tributary against distribution 2.8, side by side")]
struct Args {
    /// Small sizes and short runs: about a minute.
    #[arg(long)]
    quick: bool,
    /// Only these workload groups (comma-separated): push, pull, pullthrough, manifest, tags, catalog, memory,
    /// growth, metrics, s3, gc.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Pairs of alternated measurements (ours, peer) per workload [default: 3].
    #[arg(long)]
    pairs: Option<usize>,
    /// Measure Tributary alone (no peer, no ratios): quicker turns while profiling.
    #[arg(long)]
    ours_only: bool,
    /// Also run the S3 and etcd group (moto and etcd on loopback; `--only s3` runs it alone).
    #[arg(long)]
    s3: bool,
    /// Save the plan and every raw sample to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Internal: push fresh blobs to this registry URL until killed (the load of the pull-under-load row).
    #[arg(long, hide = true)]
    push_load: Option<String>,
}

const GROUPS: [&str; 11] =
    ["push", "pull", "pullthrough", "manifest", "tags", "catalog", "memory", "growth", "metrics", "s3", "gc"];

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(base) = &args.push_load {
        return match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => match rt.block_on(underload::push_load(base)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("bench loader: {e:#}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("bench loader: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(bad) = args.only.iter().find(|g| !GROUPS.contains(&g.as_str())) {
        eprintln!("bench: unknown workload {bad:?}; choose from {}", GROUPS.join(", "));
        return ExitCode::from(2);
    }
    let tools = match Tools::find(!args.ours_only) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("bench: cannot run: {e:#}");
            return ExitCode::from(2);
        }
    };
    let pinned = match tools.pin_client() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench: could not pin the client ({e:#}); running unpinned");
            false
        }
    };
    let runtime = if pinned {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let scratch = match tempfile::Builder::new().prefix("tributary-bench-").tempdir() {
        Ok(d) => d.keep(),
        Err(e) => {
            eprintln!("bench: creating a scratch directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(args, tools, pinned, scratch.clone()));
    match result {
        Ok(()) => {
            remove_in_background(&scratch);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: {e:#}");
            // The servers' logs (`*/server.log`) say what went wrong on their side.
            eprintln!("kept {} for the servers' logs", scratch.display());
            ExitCode::FAILURE
        }
    }
}

/// Removes the servers' directories without waiting: with many synced files on a disk mounted with `discard`
/// this takes minutes.
fn remove_in_background(scratch: &std::path::Path) {
    let rm = std::process::Command::new("rm")
        .arg("-rf")
        .arg(scratch)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match rm {
        Ok(child) => eprintln!("removing {} in the background (pid {})", scratch.display(), child.id()),
        Err(e) => eprintln!("could not remove {}: {e}", scratch.display()),
    }
}

/// Awaits a workload group and says how long it took.
async fn timed<T>(group: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let start = Instant::now();
    let out = group.await?;
    eprintln!("   ({:.1} s)", start.elapsed().as_secs_f64());
    Ok(out)
}

fn version(bin: &std::path::Path, arg: &str) -> String {
    std::process::Command::new(bin)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

async fn run(args: Args, tools: Tools, pinned: bool, scratch: PathBuf) -> anyhow::Result<()> {
    // The S3 group runs only when asked for (--s3 or --only s3); the others by default.
    // The S3 and gc groups run only when asked for (they start their own servers and seed large stores).
    let wants = |g: &str| {
        if g == "s3" || g == "gc" {
            args.s3 || args.only.iter().any(|o| o == g)
        } else {
            args.only.is_empty() || args.only.iter().any(|o| o == g)
        }
    };
    // Groups outside issue 6 (s3, metrics, gc) print their own targets only.
    let only_side_groups = !args.only.is_empty() && args.only.iter().all(|o| o == "s3" || o == "metrics" || o == "gc");
    let s3_bins = if wants("s3") { Some(s3::Bins::find()?) } else { None };
    let plan = Plan::new(args.quick, args.pairs);
    anyhow::ensure!(plan.pairs >= 1, "--pairs must be at least 1");
    let started = Instant::now();
    let modified = std::fs::metadata(&tools.tributary)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map_or("?".into(), |age| format!("built {} min ago", age.as_secs() / 60));
    let mut report = Report::default();
    let mut header = vec![
        format!("ours: {} ({modified})", tools.tributary.display()),
        format!("peer: {} ({})", tools.peer.display(), version(&tools.peer, "--version")),
        if pinned {
            format!("pinning: servers on core {}, client on core {} (taskset)", tools.server_core, tools.client_core)
        } else {
            "pinning: none (needs taskset and two cores)".to_owned()
        },
        format!(
            "mode: {}, {} pairs per workload, alternated ours/peer; both servers log at warn, peer without access log",
            if plan.quick { "--quick" } else { "full" },
            plan.pairs
        ),
    ];
    if let Some(bins) = &s3_bins {
        header.push(bins.versions());
        header.push(
            "s3 group: one moto and one etcd per phase, on every core; ours on S3 keeps metadata on etcd; the peer on \
             S3 is distribution's s3 driver on the same moto (chunksize 8 MiB like ours, redirect disabled so blobs go \
             through it as through ours); a label ending in [peer: …] holds that in the peer column"
                .into(),
        );
    }
    for h in &header {
        eprintln!("{h}");
    }
    eprintln!("hashing blob contents for sizes {:?} MiB …", plan.sizes().iter().map(|s| s >> 20).collect::<Vec<_>>());
    let bench = Bench::new(tools, plan, scratch, args.ours_only);
    let plan = bench.plan.clone();

    if wants("push") {
        timed(bench.push(&mut report)).await?;
    }
    if plan.quick && wants("push") {
        for mode in ["monolithic", "chunked 8 MiB", "chunked 1 MiB"] {
            report.note(&format!("push 512 MiB {mode}"), Unit::MibPerSec, "skipped (--quick)");
        }
    }
    if wants("pull") {
        timed(bench.pull(&mut report)).await?;
        timed(bench.pull_under_load(&mut report)).await?;
    }
    if plan.quick && wants("pull") {
        report.note("pull 512 MiB", Unit::MibPerSec, "skipped (--quick)");
    }
    if wants("pullthrough") {
        timed(bench.pullthrough(&mut report)).await?;
    }
    if wants("manifest") {
        timed(bench.manifests(&mut report)).await?;
    }
    if wants("tags") || wants("catalog") {
        timed(bench.lists(&mut report, wants("tags"), wants("catalog"))).await?;
    }
    if wants("memory") && !timed(bench.memory(&mut report)).await? {
        header.push("note: /proc/PID/clear_refs refused; peak RSS figures are since server start".into());
    }
    if wants("growth") {
        let note = timed(bench.growth(&mut report)).await?;
        if !args.ours_only {
            header.push(note);
        }
    }
    if wants("metrics") {
        timed(bench.metrics_overhead(&mut report)).await?;
    }
    if let Some(bins) = &s3_bins {
        timed(bench.s3(&mut report, bins)).await?;
    }
    if wants("gc") {
        timed(bench.gc(&mut report)).await?;
    }

    // Targets are judged at the issue's sizes only; --quick rows at smaller sizes do not count.
    let targets = report::targets(
        &report,
        "peak RSS during 1 GiB push, above idle",
        "tags list, 10000 tags, p50",
        Some(("catalog walk per page, 1000 repos", "catalog walk per page, 10000 repos")),
    );

    println!();
    for h in &header {
        println!("{h}");
    }
    println!("ratio = ours/peer of the medians (higher is better for MiB/s and ops/s, lower for ms and MiB);");
    println!("CPU = server user+system CPU-seconds per GiB moved or per 1,000 requests (median over samples)");
    println!();
    print!("{}", report.table());
    println!();
    if !only_side_groups {
        println!(
            "issue-6 targets (ours){}:",
            if plan.quick { ", at the issue's sizes, which --quick does not run" } else { "" }
        );
        print!("{}", report::print_targets(&targets));
        println!();
    }
    if wants("pullthrough") && !args.ours_only {
        println!(
            "issue-17 pull-through targets (ours vs peer){}:",
            if plan.quick { ", at 64 and 512 MiB, which --quick does not both run" } else { "" }
        );
        print!("{}", report::print_targets(&pullthrough::targets(&report)));
        println!();
    }
    let mut issue17 = if push_cost::measured(&report) { push_cost::targets(&report) } else { Vec::new() };
    issue17.extend(underload::targets(&report, &plan.pull_sizes));
    if !issue17.is_empty() {
        println!("issue-17 targets:");
        print!("{}", report::print_targets(&issue17));
        println!();
    }
    if let Some(t) = overhead::target(&report) {
        println!("issue-12 metrics overhead target:");
        print!("{}", report::print_targets(&[t]));
        println!();
    }
    if s3_bins.is_some() {
        println!("scale-out point-8 targets (ours){}:", if plan.quick { ", --quick runs 64 MiB only" } else { "" });
        print!("{}", report::print_targets(&s3::targets(&report)));
        println!();
    }
    if wants("gc") {
        println!("issue-11 gc target (ours): manifest GET p99 during sweeps within 2x of without");
        print!("{}", gc::target(&report));
        println!();
    }
    println!("total time {:.0} s", started.elapsed().as_secs_f64());

    if let Some(path) = &args.json {
        report.meta.insert("header".into(), serde_json::to_value(&header)?);
        report.meta.insert("plan".into(), serde_json::to_value(&plan)?);
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
        eprintln!("raw figures saved to {}", path.display());
    }
    Ok(())
}
