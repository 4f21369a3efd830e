//! Medians over rounds, ratios against ontime, and the markdown and CSV
//! output.

use std::fmt::Write as _;

#[path = "../common/stats.rs"]
mod stats;

pub(crate) use stats::{median, show};

/// What one run of one peer measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) rt_per_s: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    /// Server CPU time (user + system) per round trip; NaN if unknown.
    pub(crate) cpu_us_per_rt: f64,
}

/// Every run of one case (message size x connections).
#[derive(Debug)]
pub(crate) struct Case {
    msg: usize,
    conns: usize,
    peers: Vec<&'static str>,
    /// `samples[round][peer]`, `None` for a failed run.
    samples: Vec<Vec<Option<Sample>>>,
}

/// How the runs were made, for the report's header.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) secs: f64,
    pub(crate) warmup: f64,
    pub(crate) rounds: usize,
    pub(crate) pinning: String,
    pub(crate) buffer: usize,
    pub(crate) took: f64,
}

/// One row of the summary.
struct Row {
    peer: &'static str,
    rt_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_rt: f64,
    /// Median over rounds of ontime's rt/s divided by this peer's.
    speed_ratio: f64,
    /// Median over rounds of this peer's CPU per round trip divided by
    /// ontime's: above 1, ontime spends less.
    cpu_ratio: f64,
    runs: usize,
}

impl Case {
    pub(crate) fn new(msg: usize, conns: usize, peers: Vec<&'static str>) -> Case {
        Case {
            msg,
            conns,
            peers,
            samples: Vec::new(),
        }
    }

    pub(crate) fn record(&mut self, round: usize, peer: usize, sample: Option<Sample>) {
        while self.samples.len() <= round {
            self.samples.push(vec![None; self.peers.len()]);
        }
        self.samples[round][peer] = sample;
    }

    fn rows(&self) -> Vec<Row> {
        let ontime = self.peers.iter().position(|&p| p == "ontime");
        (0..self.peers.len())
            .map(|peer| {
                let of = |f: fn(&Sample) -> f64| -> f64 {
                    median(
                        self.samples
                            .iter()
                            .filter_map(|round| round[peer].as_ref())
                            .map(f)
                            .collect(),
                    )
                };
                let ratio = |f: &dyn Fn(&Sample, &Sample) -> f64| -> f64 {
                    let Some(ontime) = ontime else {
                        return f64::NAN;
                    };
                    median(
                        self.samples
                            .iter()
                            .filter_map(|round| {
                                Some(f(round[ontime].as_ref()?, round[peer].as_ref()?))
                            })
                            .collect(),
                    )
                };
                Row {
                    peer: self.peers[peer],
                    rt_per_s: of(|s| s.rt_per_s),
                    p50_us: of(|s| s.p50_us),
                    p99_us: of(|s| s.p99_us),
                    cpu_us_per_rt: of(|s| s.cpu_us_per_rt),
                    speed_ratio: ratio(&|o, p| o.rt_per_s / p.rt_per_s),
                    cpu_ratio: ratio(&|o, p| p.cpu_us_per_rt / o.cpu_us_per_rt),
                    runs: self
                        .samples
                        .iter()
                        .filter(|round| round[peer].is_some())
                        .count(),
                }
            })
            .collect()
    }
}

fn size(bytes: usize) -> String {
    if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// The summary as a markdown document.
pub(crate) fn markdown(cases: &[Case], settings: &Settings) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Echo: ontime vs mio, tokio current-thread, std threads\n"
    );
    let _ = writeln!(
        out,
        "Closed-loop ping-pong over loopback; {:.1} s warm-up, then {:.1} s counted per run; \
         peers interleaved for {} rounds; medians over rounds. {}. Read buffer {} bytes for every peer. \
         Total {:.0} s.\n",
        settings.warmup,
        settings.secs,
        settings.rounds,
        settings.pinning,
        settings.buffer,
        settings.took
    );
    if !cases.iter().any(|case| case.peers.contains(&"ontime")) {
        let _ = writeln!(
            out,
            "**ontime's `echo_server` example was not measured (missing, or left out by \
             `ECHO_PEERS`): the ratios are n/a.**\n"
        );
    }
    let _ = writeln!(
        out,
        "`ontime / peer` is the median over rounds of ontime's rt/s divided by the peer's (above 1: \
         ontime faster); `peer / ontime CPU` is the median of the peer's server CPU per round trip \
         divided by ontime's (above 1: ontime cheaper).\n"
    );
    let _ = writeln!(
        out,
        "| peer | msg size | conns | rt/s | p50 us | p99 us | server CPU us/req | ontime / peer (rt/s) | peer / ontime CPU |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for case in cases {
        for row in case.rows() {
            let runs = if row.runs < case.samples.len() {
                format!(" ({}/{} runs)", row.runs, case.samples.len())
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "| {}{} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.peer,
                runs,
                size(case.msg),
                case.conns,
                show(row.rt_per_s, 0),
                show(row.p50_us, 1),
                show(row.p99_us, 1),
                show(row.cpu_us_per_rt, 2),
                show(row.speed_ratio, 3),
                show(row.cpu_ratio, 3),
            );
        }
    }
    out
}

/// A CSV field: the number, or empty if it is not finite.
fn field(value: f64, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else {
        String::new()
    }
}

/// The summary as CSV.
pub(crate) fn summary_csv(cases: &[Case]) -> String {
    let mut out = String::from(
        "peer,msg_bytes,conns,runs,rt_per_s,p50_us,p99_us,server_cpu_us_per_req,ontime_over_peer_rt,peer_over_ontime_cpu\n",
    );
    for case in cases {
        for row in case.rows() {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{}",
                row.peer,
                case.msg,
                case.conns,
                row.runs,
                field(row.rt_per_s, 1),
                field(row.p50_us, 2),
                field(row.p99_us, 2),
                field(row.cpu_us_per_rt, 4),
                field(row.speed_ratio, 4),
                field(row.cpu_ratio, 4)
            );
        }
    }
    out
}

/// Every run as CSV, failed runs included with empty values.
pub(crate) fn rounds_csv(cases: &[Case]) -> String {
    let mut out =
        String::from("msg_bytes,conns,round,peer,rt_per_s,p50_us,p99_us,server_cpu_us_per_req\n");
    for case in cases {
        for (round, samples) in case.samples.iter().enumerate() {
            for (peer, sample) in case.peers.iter().zip(samples) {
                let _ = match sample {
                    Some(s) => writeln!(
                        out,
                        "{},{},{},{},{},{},{},{}",
                        case.msg,
                        case.conns,
                        round + 1,
                        peer,
                        field(s.rt_per_s, 1),
                        field(s.p50_us, 2),
                        field(s.p99_us, 2),
                        field(s.cpu_us_per_rt, 4)
                    ),
                    None => writeln!(
                        out,
                        "{},{},{},{},,,,",
                        case.msg,
                        case.conns,
                        round + 1,
                        peer
                    ),
                };
            }
        }
    }
    out
}
