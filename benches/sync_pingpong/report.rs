//! Medians over rounds, ratios, and the markdown report.

use std::fmt::Write as _;
use std::time::Duration;

#[path = "../common/stats.rs"]
mod stats;

pub(crate) use stats::{median, show};

use crate::clients::{Latency, Throughput};
use crate::timeouts::Accuracy;

/// The goals the facade is held to, against std.
pub(crate) const GOAL_P50: f64 = 1.15;
pub(crate) const GOAL_P99: f64 = 1.30;
pub(crate) const GOAL_THROUGHPUT: f64 = 0.90;

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ratio(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.3}x")
    } else {
        "n/a".to_string()
    }
}

fn verdict(met: bool, value: f64) -> &'static str {
    if !value.is_finite() {
        "n/a"
    } else if met {
        "met"
    } else {
        "**missed**"
    }
}

/// Per-round results of one peer of a latency case; `None` for a failed run.
#[derive(Debug)]
pub(crate) struct LatencyRounds {
    pub(crate) name: String,
    pub(crate) runs: Vec<Option<Latency>>,
}

impl LatencyRounds {
    fn median_of(&self, f: impl Fn(&Latency) -> f64) -> f64 {
        median(self.runs.iter().flatten().map(f).collect())
    }

    /// Per-round ratios `self / base` of `f`, rounds where both ran.
    fn ratios(&self, base: &LatencyRounds, f: impl Fn(&Latency) -> f64) -> Vec<f64> {
        self.runs
            .iter()
            .zip(&base.runs)
            .filter_map(|(a, b)| Some(f(a.as_ref()?) / f(b.as_ref()?)))
            .collect()
    }

    fn row(&self, out: &mut String) {
        let ok = self.runs.iter().flatten().count();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {}/{} |",
            self.name,
            show(self.median_of(|l| micros(l.p50)), 1),
            show(self.median_of(|l| micros(l.p99)), 1),
            show(self.median_of(|l| l.rtts_per_sec), 0),
            show(self.median_of(|l| micros(l.client_cpu)), 2),
            show(self.median_of(|l| micros(l.server_cpu)), 2),
            ok,
            self.runs.len(),
        );
    }
}

/// Per-round results of one peer of a throughput case.
#[derive(Debug)]
pub(crate) struct ThroughputRounds {
    pub(crate) name: String,
    pub(crate) runs: Vec<Option<Throughput>>,
}

impl ThroughputRounds {
    fn median_of(&self, f: impl Fn(&Throughput) -> f64) -> f64 {
        median(self.runs.iter().flatten().map(f).collect())
    }

    /// Per-round ratios `self / base` of `f`, rounds where both ran.
    fn ratios(&self, base: &ThroughputRounds, f: impl Fn(&Throughput) -> f64) -> Vec<f64> {
        self.runs
            .iter()
            .zip(&base.runs)
            .filter_map(|(a, b)| Some(f(a.as_ref()?) / f(b.as_ref()?)))
            .collect()
    }

    /// A census count over rounds: the median, with the range when the
    /// rounds disagree.
    fn census(&self, f: impl Fn(&Throughput) -> Option<i64>) -> String {
        let values: Vec<i64> = self.runs.iter().flatten().filter_map(f).collect();
        let (Some(lo), Some(hi)) = (values.iter().min(), values.iter().max()) else {
            return "n/a".to_string();
        };
        let m = show(median(values.iter().map(|&v| v as f64).collect()), 1);
        let m = m.strip_suffix(".0").unwrap_or(&m).to_string();
        if lo == hi {
            m
        } else {
            format!("{m} ({lo} to {hi})")
        }
    }

    /// Median over rounds of the descriptors beyond sockets per client thread.
    fn fds_per_thread(&self) -> f64 {
        median(
            self.runs
                .iter()
                .flatten()
                .filter_map(|t| Some(t.extra_fds? as f64 / t.clients.max(1) as f64))
                .collect(),
        )
    }

    fn failed(&self) -> usize {
        self.runs.iter().filter(|r| r.is_none()).count()
    }
}

/// One throughput case: its client thread count and its peers, facade and
/// std first, then CPython if it ran.
#[derive(Debug)]
pub(crate) struct ThroughputCase {
    pub(crate) threads: usize,
    /// A pool's connections, which its threads share (case f).
    pub(crate) shared: Option<usize>,
    pub(crate) peers: Vec<ThroughputRounds>,
}

/// The table of cases b and e: a row per case and peer.
fn throughput_table(out: &mut String, cases: &[ThroughputCase]) {
    let _ = writeln!(
        out,
        "| client threads | client | round trips/s | client CPU us/rt | server CPU us/rt | \
         process threads added | descriptors beyond sockets | per waiting thread | runs |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for case in cases {
        for peer in &case.peers {
            let _ = writeln!(
                out,
                "| {}{} | {} | {} | {} | {} | {} | {} | {} | {}/{} |",
                case.threads,
                case.shared
                    .map_or(String::new(), |n| format!(" sharing {n} connections")),
                peer.name,
                show(peer.median_of(|t| t.rtts_per_sec), 0),
                show(peer.median_of(|t| micros(t.client_cpu)), 2),
                show(peer.median_of(|t| micros(t.server_cpu)), 2),
                peer.census(|t| t.added_threads),
                peer.census(|t| t.extra_fds),
                show(peer.fds_per_thread(), 3),
                peer.runs.iter().flatten().count(),
                peer.runs.len()
            );
        }
    }
}

/// The loud warnings of a throughput case: failed runs, and a std census
/// that is not zero (something else opened or closed descriptors meanwhile).
fn throughput_warnings(label: &str, case: &ThroughputCase, warnings: &mut Vec<String>) {
    for peer in &case.peers {
        let failed = peer.failed();
        if failed > 0 {
            warnings.push(format!(
                "case {label}, {} threads: {failed} run(s) of {} failed",
                case.threads, peer.name
            ));
        }
    }
    if let Some(std) = case.peers.get(1) {
        let off: Vec<i64> = std
            .runs
            .iter()
            .flatten()
            .filter_map(|t| t.extra_fds)
            .filter(|&d| d != 0)
            .collect();
        if !off.is_empty() {
            warnings.push(format!(
                "case {label}, {} threads: std's descriptors beyond sockets were {off:?}, not 0: \
                 the census was disturbed",
                case.threads
            ));
        }
    }
}

/// A throughput case's table, then facade / std: round trips per second
/// (against `goal`, if it has one) and client CPU per round trip.
fn versus_std(
    out: &mut String,
    label: &str,
    case: &ThroughputCase,
    goal: Option<f64>,
    warnings: &mut Vec<String>,
) {
    throughput_table(out, std::slice::from_ref(case));
    throughput_warnings(label, case, warnings);
    let [facade, std, ..] = case.peers.as_slice() else {
        return;
    };
    let tput = facade.ratios(std, |t| t.rtts_per_sec);
    let cpu = facade.ratios(std, |t| t.client_cpu.as_secs_f64());
    let m = median(tput.clone());
    let _ = writeln!(
        out,
        "\n| facade / std (median of per-round ratios) | value | goal | |\n|---|---:|---:|---|"
    );
    let _ = match goal {
        Some(goal) => writeln!(
            out,
            "| round trips/s | {} | >= {goal:.2}x | {} |",
            ratio(m),
            verdict(m >= goal, m)
        ),
        None => writeln!(out, "| round trips/s | {} | | |", ratio(m)),
    };
    let _ = writeln!(
        out,
        "| client CPU per round trip | {} | | |",
        ratio(median(cpu.clone()))
    );
    let _ = writeln!(
        out,
        "\nPer round, facade / std: round trips/s [{}]; client CPU [{}].\n",
        list(&tput),
        list(&cpu)
    );
}

/// Pooled waits of one peer of the timeout case.
#[derive(Debug)]
pub(crate) struct AccuracyRows {
    pub(crate) name: String,
    pub(crate) waits: Accuracy,
}

/// The `p`th percentile of sorted, non-empty `values` (nearest rank).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What the run was, for the report's head.
#[derive(Debug)]
pub(crate) struct Setup {
    pub(crate) lines: Vec<String>,
}

/// Everything measured.
#[derive(Debug, Default)]
pub(crate) struct Results {
    /// Case a (and c): facade, std, then CPython if it ran.
    pub(crate) latency: Vec<LatencyRounds>,
    pub(crate) latency_head: String,
    pub(crate) python_note: Option<String>,
    /// Case b: facade, std.
    pub(crate) throughput: Option<ThroughputCase>,
    pub(crate) throughput_head: String,
    /// Case f: facade, std.
    pub(crate) pool: Option<ThroughputCase>,
    pub(crate) pool_head: String,
    /// Case d: facade, std.
    pub(crate) accuracy: Vec<AccuracyRows>,
    pub(crate) accuracy_head: String,
    /// Case e, one per crowd size, ascending: facade, std, then CPython if
    /// it ran.
    pub(crate) crowd: Vec<ThroughputCase>,
    pub(crate) crowd_head: String,
    pub(crate) crowd_python_note: Option<String>,
}

fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.3}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The report as markdown. Also returns the loud warnings (early timeouts,
/// failed runs) so the caller can repeat them at the end of the output.
pub(crate) fn markdown(setup: &Setup, results: &Results) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut warnings = Vec::new();
    let _ = writeln!(
        out,
        "# ontime::sync ping-pong against std::net and CPython\n"
    );
    for line in &setup.lines {
        let _ = writeln!(out, "- {line}");
    }
    let _ = writeln!(out);

    if let [facade, std, rest @ ..] = results.latency.as_slice() {
        let _ = writeln!(
            out,
            "## a. One connection, 64-byte ping-pong\n\n{}\n",
            results.latency_head
        );
        let _ = writeln!(
            out,
            "| client | p50 us | p99 us | round trips/s | client CPU us/rt | server CPU us/rt | runs |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        facade.row(&mut out);
        std.row(&mut out);
        let p50 = facade.ratios(std, |l| l.p50.as_secs_f64());
        let p99 = facade.ratios(std, |l| l.p99.as_secs_f64());
        let cpu = facade.ratios(std, |l| l.client_cpu.as_secs_f64());
        let (m50, m99) = (median(p50.clone()), median(p99.clone()));
        let _ = writeln!(
            out,
            "\n| facade / std (median of per-round ratios) | value | goal | |\n|---|---:|---:|---|"
        );
        let _ = writeln!(
            out,
            "| p50 | {} | <= {GOAL_P50:.2}x | {} |",
            ratio(m50),
            verdict(m50 <= GOAL_P50, m50)
        );
        let _ = writeln!(
            out,
            "| p99 | {} | <= {GOAL_P99:.2}x | {} |",
            ratio(m99),
            verdict(m99 <= GOAL_P99, m99)
        );
        let _ = writeln!(
            out,
            "| client CPU per round trip | {} | | |",
            ratio(median(cpu.clone()))
        );
        let _ = writeln!(
            out,
            "\nPer round, facade / std: p50 [{}]; p99 [{}]; client CPU [{}].\n",
            list(&p50),
            list(&p99),
            list(&cpu)
        );

        let _ = writeln!(
            out,
            "## c. CPython's socket in timeout mode, same connection pattern\n"
        );
        match rest.first() {
            Some(python) => {
                let _ = writeln!(
                    out,
                    "Run as a third peer inside the rounds of case a (A B C A B C ...), with the same server.\n"
                );
                let _ = writeln!(
                    out,
                    "| client | p50 us | p99 us | round trips/s | client CPU us/rt | server CPU us/rt | runs |\n|---|---:|---:|---:|---:|---:|---:|"
                );
                python.row(&mut out);
                facade.row(&mut out);
                let p50 = python.ratios(facade, |l| l.p50.as_secs_f64());
                let p99 = python.ratios(facade, |l| l.p99.as_secs_f64());
                let _ = writeln!(
                    out,
                    "\n| CPython / facade (median of per-round ratios) | value |\n|---|---:|\n| p50 | {} |\n| p99 | {} |\n",
                    ratio(median(p50)),
                    ratio(median(p99))
                );
                if let Some(note) = &results.python_note {
                    let _ = writeln!(out, "{note}\n");
                }
            }
            None => {
                let _ = writeln!(
                    out,
                    "Skipped: {}\n",
                    results.python_note.as_deref().unwrap_or("not run")
                );
            }
        }
        for peer in &results.latency {
            let failed = peer.runs.iter().filter(|r| r.is_none()).count();
            if failed > 0 {
                warnings.push(format!("case a/c: {failed} run(s) of {} failed", peer.name));
            }
        }
    }

    if let Some(case) = &results.throughput {
        let _ = writeln!(
            out,
            "## b. Many connections at once, 64-byte ping-pong\n\n{}\n",
            results.throughput_head
        );
        versus_std(&mut out, "b", case, Some(GOAL_THROUGHPUT), &mut warnings);
    }

    if let Some(case) = &results.pool {
        let _ = writeln!(
            out,
            "## f. A pool: threads taking turns on shared connections, 64-byte ping-pong\n\n{}\n",
            results.pool_head
        );
        versus_std(&mut out, "f", case, None, &mut warnings);
    }

    if !results.accuracy.is_empty() {
        let _ = writeln!(
            out,
            "## d. Timeout accuracy under load\n\n{}\n",
            results.accuracy_head
        );
        let _ = writeln!(
            out,
            "| client | waits | p50 late ms | p99 late ms | max late ms | early | other outcomes |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        for row in &results.accuracy {
            let mut late = row.waits.lateness.clone();
            late.sort_unstable();
            let ms = |d: Duration| show(d.as_secs_f64() * 1e3, 3);
            let (p50, p99, max) = match late.last() {
                Some(&max) => (
                    ms(percentile(&late, 50.0)),
                    ms(percentile(&late, 99.0)),
                    ms(max),
                ),
                None => ("n/a".into(), "n/a".into(), "n/a".into()),
            };
            let early = row.waits.early.len();
            let _ = writeln!(
                out,
                "| {} | {} | {p50} | {p99} | {max} | {}{} | {} |",
                row.name,
                late.len() + early,
                early,
                if early > 0 { " **EARLY**" } else { "" },
                row.waits.errors.len()
            );
            if early > 0 {
                let worst = row.waits.early.iter().max().copied().unwrap_or_default();
                warnings.push(format!(
                    "case d: {early} timeout(s) of {} fired EARLY (worst {:.3} ms before the deadline)",
                    row.name,
                    worst.as_secs_f64() * 1e3
                ));
            }
            if let Some(first) = row.waits.errors.first() {
                warnings.push(format!(
                    "case d: {} wait(s) of {} ended other than by timing out (first: {first})",
                    row.waits.errors.len(),
                    row.name
                ));
            }
        }
        let _ = writeln!(out);
    }

    if !results.crowd.is_empty() {
        crowd_section(&mut out, results, &mut warnings);
    }

    if !warnings.is_empty() {
        let _ = writeln!(out, "## Warnings\n");
        for warning in &warnings {
            let _ = writeln!(out, "- **{warning}**");
        }
        let _ = writeln!(out);
    }
    (out, warnings)
}

/// Case e: the table of every crowd size, the ratios per size, and how each
/// peer's throughput and CPU per round trip change from the smallest crowd
/// to the largest.
fn crowd_section(out: &mut String, results: &Results, warnings: &mut Vec<String>) {
    let _ = writeln!(
        out,
        "## e. A crowd: threads far outnumbering the cores, 64-byte ping-pong\n\n{}\n",
        results.crowd_head
    );
    throughput_table(out, &results.crowd);
    for case in &results.crowd {
        throughput_warnings("e", case, warnings);
    }
    let python = results.crowd.iter().any(|c| c.peers.len() > 2);
    let _ = writeln!(
        out,
        "\n| client threads | round trips/s, facade / std | client CPU/rt, facade / std |{}\n|---:|---:|---:|{}",
        if python {
            " round trips/s, CPython / facade | client CPU/rt, CPython / facade |"
        } else {
            ""
        },
        if python { "---:|---:|" } else { "" }
    );
    let mut per_round = Vec::new();
    for case in &results.crowd {
        let [facade, std, rest @ ..] = case.peers.as_slice() else {
            continue;
        };
        let tput = facade.ratios(std, |t| t.rtts_per_sec);
        let cpu = facade.ratios(std, |t| t.client_cpu.as_secs_f64());
        let _ = write!(
            out,
            "| {} | {} | {} |",
            case.threads,
            ratio(median(tput.clone())),
            ratio(median(cpu.clone()))
        );
        let mut line = format!(
            "{} threads, facade / std: round trips/s [{}]; client CPU [{}]",
            case.threads,
            list(&tput),
            list(&cpu)
        );
        if python {
            match rest.first() {
                Some(py) => {
                    let py_tput = py.ratios(facade, |t| t.rtts_per_sec);
                    let py_cpu = py.ratios(facade, |t| t.client_cpu.as_secs_f64());
                    let _ = write!(
                        out,
                        " {} | {} |",
                        ratio(median(py_tput.clone())),
                        ratio(median(py_cpu.clone()))
                    );
                    let _ = write!(
                        line,
                        "; CPython / facade: round trips/s [{}]; client CPU [{}]",
                        list(&py_tput),
                        list(&py_cpu)
                    );
                }
                None => {
                    let _ = write!(out, " n/a | n/a |");
                }
            }
        }
        let _ = writeln!(out);
        per_round.push(line);
    }
    let _ = writeln!(out, "\nPer round (the ratios above are their medians):\n");
    for line in &per_round {
        let _ = writeln!(out, "- {line}.");
    }
    let _ = writeln!(out);

    if let (Some(small), Some(large)) = (results.crowd.first(), results.crowd.last()) {
        if large.threads > small.threads {
            let _ = writeln!(
                out,
                "From {} to {} threads ({}x as many waiting threads), large / small, medians:\n\n\
                 | client | round trips/s | client CPU/rt | descriptors beyond sockets per thread |\n\
                 |---|---:|---:|---:|",
                small.threads,
                large.threads,
                show(large.threads as f64 / small.threads as f64, 0)
            );
            for (s, l) in small.peers.iter().zip(&large.peers) {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} -> {} |",
                    s.name,
                    ratio(l.median_of(|t| t.rtts_per_sec) / s.median_of(|t| t.rtts_per_sec)),
                    ratio(
                        l.median_of(|t| micros(t.client_cpu))
                            / s.median_of(|t| micros(t.client_cpu))
                    ),
                    show(s.fds_per_thread(), 3),
                    show(l.fds_per_thread(), 3)
                );
            }
            let _ = writeln!(out);
        }
    }
    if let Some(note) = &results.crowd_python_note {
        let _ = writeln!(out, "{note}\n");
    }
}
