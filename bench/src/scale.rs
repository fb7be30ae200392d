//! The scale workloads of `bench`: tags list and catalog at growing counts, growth of the store while pushing,
//! and memory under a mixed load. Another `impl` of [`Bench`] beside the transfer workloads in
//! [`crate::workloads`]; called by main.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};

use crate::report::{quantile_ms, Cost, Report, Sample, Unit};
use crate::servers::Kind;
use crate::workloads::{for_each, growth_repo, progress, size_label, sync_disks, Bench, Image, Live};

impl Bench {
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
        let big_cached = format!("page cache held by the {} pushed blob, right after", size_label(self.plan.big_push));
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
                if let Some(bytes) = l.server.page_cache_of(&blob.digest, self.plan.big_push)? {
                    report.add(&big_cached, Unit::Mib, Cost::None, kind, s(mib(bytes)));
                }

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
        progress(report, &big_cached);
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
