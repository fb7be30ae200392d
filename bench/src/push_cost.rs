//! The push cost targets of issue 17, point 2: the server spends at most 1.2 CPU-seconds per GiB pushed (64 MiB and
//! 512 MiB monolithic, 512 MiB in 8 MiB chunks, filesystem backend), read from the `push` group's rows (their CPU
//! column, the server's user+system time per GiB). Pure bookkeeping over the [`Report`].

use crate::report::{Report, Target, Verdict};
use crate::servers::Kind;

/// Most server CPU-seconds a GiB of push may cost.
const MAX_CPU_PER_GIB: f64 = 1.2;

/// The rows the target is judged on, with what each says.
const ROWS: [(&str, &str); 3] = [
    ("push 64 MiB monolithic", "push 64 MiB monolithic ≤ 1.2 CPU-s/GiB"),
    ("push 512 MiB monolithic", "push 512 MiB monolithic ≤ 1.2 CPU-s/GiB"),
    ("push 512 MiB chunked 8 MiB", "push 512 MiB chunked 8 MiB ≤ 1.2 CPU-s/GiB"),
];

/// Whether the push group ran (then the targets are printed).
pub fn measured(report: &Report) -> bool {
    ROWS.iter().any(|(label, _)| report.get(label).is_some())
}

/// Our median CPU per GiB on each of the push rows, against the target.
pub fn targets(report: &Report) -> Vec<Target> {
    ROWS.iter()
        .map(|&(label, what)| match report.get(label).and_then(|row| row.cpu(Kind::Ours)) {
            Some(cpu) => Target {
                what,
                verdict: if cpu <= MAX_CPU_PER_GIB { Verdict::Met } else { Verdict::Missed },
                detail: format!("{cpu:.2} CPU-s/GiB (target ≤ {MAX_CPU_PER_GIB}; {label})"),
            },
            None => Target { what, verdict: Verdict::NotMeasured, detail: format!("{label} not measured in this run") },
        })
        .collect()
}
