//! Figures and their presentation: raw samples per workload and server, the side-by-side table (median, ratio
//! ours/peer, min–max, server CPU cost), the issue-6 target check, and the optional JSON dump. Pure bookkeeping:
//! nothing here talks to a server.

use std::fmt::Write as _;

use crate::servers::Kind;

/// What a row's figure measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Unit {
    #[serde(rename = "MiB/s")]
    MibPerSec,
    #[serde(rename = "ops/s")]
    OpsPerSec,
    #[serde(rename = "ms")]
    Millis,
    #[serde(rename = "MiB")]
    Mib,
}

impl Unit {
    pub fn label(self) -> &'static str {
        match self {
            Unit::MibPerSec => "MiB/s",
            Unit::OpsPerSec => "ops/s",
            Unit::Millis => "ms",
            Unit::Mib => "MiB",
        }
    }

    fn format(self, v: f64) -> String {
        match self {
            Unit::MibPerSec | Unit::OpsPerSec => format!("{v:.0}"),
            Unit::Mib => format!("{v:.1}"),
            Unit::Millis if v < 10.0 => format!("{v:.3}"),
            Unit::Millis if v < 1000.0 => format!("{v:.1}"),
            Unit::Millis => format!("{v:.0}"),
        }
    }
}

/// How server CPU time is normalised for a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Cost {
    /// CPU-seconds per GiB moved.
    PerGib,
    /// CPU-seconds per 1,000 requests.
    PerKiloRequest,
    None,
}

/// One measurement of one server.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sample {
    pub value: f64,
    /// Server user+system CPU seconds spent during the measurement.
    pub cpu_seconds: f64,
    /// GiB moved or thousands of requests made, matching the row's [`Cost`].
    pub work: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub id: String,
    pub label: String,
    pub unit: Unit,
    pub cost: Cost,
    pub ours: Vec<Sample>,
    pub peer: Vec<Sample>,
    /// Shown instead of figures (a workload that cannot run, or was not run).
    pub note: Option<String>,
}

impl Row {
    pub fn samples(&self, kind: Kind) -> &[Sample] {
        match kind {
            Kind::Ours => &self.ours,
            Kind::Peer => &self.peer,
        }
    }

    pub fn median(&self, kind: Kind) -> Option<f64> {
        median(self.samples(kind).iter().map(|s| s.value).collect())
    }

    /// Median server CPU-seconds per unit of work ([`Cost`]), when the row has a cost.
    pub fn cpu(&self, kind: Kind) -> Option<f64> {
        if self.cost == Cost::None {
            return None;
        }
        median(self.samples(kind).iter().filter(|s| s.work > 0.0).map(|s| s.cpu_seconds / s.work).collect())
    }

    fn range(&self, kind: Kind) -> String {
        let v: Vec<f64> = self.samples(kind).iter().map(|s| s.value).collect();
        match (v.iter().copied().reduce(f64::min), v.iter().copied().reduce(f64::max)) {
            (Some(a), Some(b)) => format!("{}–{}", self.unit.format(a), self.unit.format(b)),
            _ => "-".into(),
        }
    }
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// The `q` quantile (0..=1) of latencies, in milliseconds.
pub fn quantile_ms(sorted: &[std::time::Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// Everything measured in a run.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub meta: serde_json::Map<String, serde_json::Value>,
    pub rows: Vec<Row>,
}

impl Report {
    fn row_mut(&mut self, id: &str, label: &str, unit: Unit, cost: Cost) -> &mut Row {
        if let Some(i) = self.rows.iter().position(|r| r.id == id) {
            return &mut self.rows[i];
        }
        self.rows.push(Row {
            id: id.to_owned(),
            label: label.to_owned(),
            unit,
            cost,
            ours: Vec::new(),
            peer: Vec::new(),
            note: None,
        });
        self.rows.last_mut().unwrap_or_else(|| unreachable!())
    }

    /// Records a sample; `label` names the row the first time `id` is seen. The id is the label unless given.
    pub fn add(&mut self, label: &str, unit: Unit, cost: Cost, kind: Kind, sample: Sample) {
        let row = self.row_mut(label, label, unit, cost);
        match kind {
            Kind::Ours => row.ours.push(sample),
            Kind::Peer => row.peer.push(sample),
        }
    }

    /// A row with no figures, only a note.
    pub fn note(&mut self, label: &str, unit: Unit, note: &str) {
        let row = self.row_mut(label, label, unit, Cost::None);
        if row.ours.is_empty() && row.peer.is_empty() {
            row.note = Some(note.to_owned());
        }
    }

    pub fn get(&self, label: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.id == label && (!r.ours.is_empty() || !r.peer.is_empty()))
    }

    /// The side-by-side table.
    pub fn table(&self) -> String {
        let header = [
            "workload",
            "unit",
            "ours",
            "peer",
            "ours/peer",
            "ours min–max",
            "peer min–max",
            "ours CPU",
            "peer CPU",
            "n",
        ];
        let mut lines: Vec<Vec<String>> = Vec::new();
        for r in &self.rows {
            if let Some(note) = &r.note {
                lines.push(vec![r.label.clone(), r.unit.label().into(), note.clone()]);
                continue;
            }
            let (o, p) = (r.median(Kind::Ours), r.median(Kind::Peer));
            let fmt = |v: Option<f64>| v.map_or("-".into(), |v| r.unit.format(v));
            let ratio = match (o, p) {
                (Some(o), Some(p)) if p != 0.0 => format!("{:.2}", o / p),
                _ => "-".into(),
            };
            let cpu = |k| {
                r.cpu(k).map_or("-".into(), |c| match r.cost {
                    Cost::PerGib => format!("{c:.2} s/GiB"),
                    Cost::PerKiloRequest => format!("{c:.3} s/kreq"),
                    Cost::None => "-".into(),
                })
            };
            lines.push(vec![
                r.label.clone(),
                r.unit.label().into(),
                fmt(o),
                fmt(p),
                ratio,
                r.range(Kind::Ours),
                r.range(Kind::Peer),
                cpu(Kind::Ours),
                cpu(Kind::Peer),
                format!("{}+{}", r.ours.len(), r.peer.len()),
            ]);
        }
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for l in &lines {
            if l.len() == header.len() {
                for (w, c) in widths.iter_mut().zip(l) {
                    *w = (*w).max(c.chars().count());
                }
            } else {
                widths[0] = widths[0].max(l[0].chars().count());
            }
        }
        let mut out = String::new();
        let cell = |out: &mut String, s: &str, w: usize, left: bool| {
            let pad = w.saturating_sub(s.chars().count());
            if left {
                let _ = write!(out, "{s}{}  ", " ".repeat(pad));
            } else {
                let _ = write!(out, "{}{s}  ", " ".repeat(pad));
            }
        };
        for (i, h) in header.iter().enumerate() {
            cell(&mut out, h, widths[i], i < 2);
        }
        out = out.trim_end().to_owned();
        out.push('\n');
        out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
        out.push('\n');
        for l in &lines {
            let mut line = String::new();
            if l.len() == header.len() {
                for (i, c) in l.iter().enumerate() {
                    cell(&mut line, c, widths[i], i < 2);
                }
            } else {
                cell(&mut line, &l[0], widths[0], true);
                cell(&mut line, &l[1], widths[1], true);
                line.push_str(&l[2]);
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// One issue-6 target and how the run compares.
pub struct Target {
    pub what: &'static str,
    pub verdict: Verdict,
    pub detail: String,
}

pub enum Verdict {
    Met,
    Missed,
    NotMeasured,
}

impl Verdict {
    fn label(&self) -> &'static str {
        match self {
            Verdict::Met => "MET",
            Verdict::Missed => "MISSED",
            Verdict::NotMeasured => "n/a",
        }
    }
}

/// Compares our medians with the targets.
pub fn targets(r: &Report, big_push_label: &str, tags_label: &str, catalog: Option<(&str, &str)>) -> Vec<Target> {
    let ours = |label: &str| r.get(label).and_then(|row| row.median(Kind::Ours));
    let at_least = |what, label: &str, min: f64, unit: &str| match ours(label) {
        Some(v) => Target {
            what,
            verdict: if v >= min { Verdict::Met } else { Verdict::Missed },
            detail: format!("{v:.1} {unit} (target ≥ {min} {unit}; {label})"),
        },
        None => Target { what, verdict: Verdict::NotMeasured, detail: format!("{label} not measured in this run") },
    };
    let at_most = |what, label: &str, max: f64, unit: &str| match ours(label) {
        Some(v) => Target {
            what,
            verdict: if v <= max { Verdict::Met } else { Verdict::Missed },
            detail: format!("{v:.2} {unit} (target ≤ {max} {unit}; {label})"),
        },
        None => Target { what, verdict: Verdict::NotMeasured, detail: format!("{label} not measured in this run") },
    };
    let mut t = vec![
        at_least("blob push 512 MiB monolithic ≥ 400 MiB/s", "push 512 MiB monolithic", 400.0, "MiB/s"),
        at_least("blob push 512 MiB chunked 8 MiB ≥ 300 MiB/s", "push 512 MiB chunked 8 MiB", 300.0, "MiB/s"),
        at_least("blob pull 512 MiB ≥ 2 GiB/s", "pull 512 MiB", 2048.0, "MiB/s"),
        at_least("manifest GET by tag c=16 ≥ 20,000/s", "manifest GET c=16", 20_000.0, "ops/s"),
        at_least("manifest PUT c=16 ≥ 2,500/s (durable)", "manifest PUT c=16", 2_500.0, "ops/s"),
        at_most("tags list of 10,000 tags p50 ≤ 5 ms", tags_label, 5.0, "ms"),
    ];
    t.push(match catalog.and_then(|(small, big)| Some((ours(small)?, ours(big)?, small, big))) {
        Some((a, b, small, big)) => Target {
            what: "catalog page costs the same at 1,000 and 10,000 repositories",
            verdict: if b <= a * 1.5 + 0.05 { Verdict::Met } else { Verdict::Missed },
            detail: format!("{a:.3} ms vs {b:.3} ms per page, ×{:.2} ({small} → {big}; allowed ×1.5)", b / a),
        },
        None => Target {
            what: "catalog page costs the same at 1,000 and 10,000 repositories",
            verdict: Verdict::NotMeasured,
            detail: "catalog walks not measured in this run".into(),
        },
    });
    t.push(at_most("pull-through hit first byte ≤ 2 ms", "pull-through 512 MiB hit: first byte", 2.0, "ms"));
    t.push(at_most(
        "pull-through cached tag < 50 ms with the upstream frozen",
        "pull-through cached tag, upstream frozen",
        50.0,
        "ms",
    ));
    t.push(at_most("idle RSS ≤ 16 MiB", "idle RSS", 16.0, "MiB"));
    t.push(at_most("peak RSS under a mixed load ≤ 48 MiB", "peak RSS, mixed load", 48.0, "MiB"));
    t.push(at_most("peak RSS during a 1 GiB push ≤ 64 MiB above idle", big_push_label, 64.0, "MiB"));
    t
}

pub fn print_targets(targets: &[Target]) -> String {
    let mut out = String::new();
    for t in targets {
        let _ = writeln!(out, "  [{:^6}] {:<70} {}", t.verdict.label(), t.what, t.detail);
    }
    out
}
