//! Medians over rounds, ratios against ontime, the goals, and the markdown
//! and CSV output of the three kinds of case: echo, idle connections and
//! system calls.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

#[path = "../common/stats.rs"]
mod stats;

pub(crate) use stats::{median, show};

/// The peer every ratio is taken against.
const ONTIME: &str = "ontime";

/// Every run of one case: `samples[round][peer]`, `None` for a failed run.
#[derive(Debug)]
pub(crate) struct Runs<S> {
    pub(crate) peers: Vec<&'static str>,
    samples: Vec<Vec<Option<S>>>,
}

impl<S: Clone> Runs<S> {
    pub(crate) fn new(peers: Vec<&'static str>) -> Runs<S> {
        Runs {
            peers,
            samples: Vec::new(),
        }
    }

    pub(crate) fn record(&mut self, round: usize, peer: usize, sample: Option<S>) {
        while self.samples.len() <= round {
            self.samples.push(vec![None; self.peers.len()]);
        }
        self.samples[round][peer] = sample;
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.peers.iter().position(|&p| p == name)
    }

    /// The median over rounds of `f` of peer `peer`'s samples.
    fn of(&self, peer: usize, f: impl Fn(&S) -> f64) -> f64 {
        median(
            self.samples
                .iter()
                .filter_map(|round| round[peer].as_ref())
                .map(f)
                .collect(),
        )
    }

    /// The median over rounds of `f(ontime's sample, peer's sample)`, over
    /// the rounds where both ran; NaN without ontime.
    fn against_ontime(&self, peer: usize, f: impl Fn(&S, &S) -> f64) -> f64 {
        let Some(ontime) = self.index(ONTIME) else {
            return f64::NAN;
        };
        median(
            self.samples
                .iter()
                .filter_map(|round| Some(f(round[ontime].as_ref()?, round[peer].as_ref()?)))
                .collect(),
        )
    }

    /// " (2/3 runs)" if some runs of `peer` failed.
    fn runs_note(&self, peer: usize) -> String {
        let ran = self
            .samples
            .iter()
            .filter(|round| round[peer].is_some())
            .count();
        if ran < self.samples.len() {
            format!(" ({ran}/{} runs)", self.samples.len())
        } else {
            String::new()
        }
    }

    fn rounds(&self) -> impl Iterator<Item = (usize, &'static str, &S)> + '_ {
        self.samples
            .iter()
            .enumerate()
            .flat_map(move |(round, samples)| {
                self.peers
                    .iter()
                    .zip(samples)
                    .filter_map(move |(&peer, s)| Some((round + 1, peer, s.as_ref()?)))
            })
    }
}

/// What one echo run of one peer measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) rt_per_s: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    /// Server CPU time (user + system) per round trip; NaN if unknown.
    pub(crate) cpu_us_per_rt: f64,
    /// The user part of it (in clock ticks, so coarser).
    pub(crate) user_us_per_rt: f64,
    /// The share of the pinned CPUs' time that went to other processes
    /// during the counting window.
    pub(crate) foreign: f64,
}

/// Every run of one echo case (message size x connections).
#[derive(Debug)]
pub(crate) struct Case {
    pub(crate) msg: usize,
    pub(crate) conns: usize,
    pub(crate) runs: Runs<Sample>,
}

impl Case {
    pub(crate) fn new(msg: usize, conns: usize, peers: Vec<&'static str>) -> Case {
        Case {
            msg,
            conns,
            runs: Runs::new(peers),
        }
    }
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
    /// A run whose foreign share passed this was made again ...
    pub(crate) foreign_limit: f64,
    /// ... at most this many times, keeping the least disturbed sample.
    pub(crate) retries: usize,
    /// How many runs were made again.
    pub(crate) retried: usize,
}

fn size(bytes: usize) -> String {
    if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

fn header(out: &mut String, title: &str, settings: &Settings) {
    let _ = writeln!(out, "# {title}\n");
    let _ = writeln!(
        out,
        "Closed-loop ping-pong over loopback; {:.1} s warm-up, then {:.1} s counted per run; \
         peers interleaved for {} rounds; medians over rounds. {}. A run in which more than \
         {:.0}% of those CPUs' time went to other processes was made again (at most {} times, \
         the least disturbed kept): {} runs made again. Total {:.0} s.\n",
        settings.warmup,
        settings.secs,
        settings.rounds,
        settings.pinning,
        settings.foreign_limit * 100.0,
        settings.retries,
        settings.retried,
        settings.took
    );
}

/// The echo cases as a markdown document.
pub(crate) fn markdown(cases: &[Case], settings: &Settings) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "Echo: ontime's serving layer vs the raw reactor, mio, tokio current-thread, std threads",
        settings,
    );
    let _ = writeln!(
        out,
        "`ontime` is the `echo_server` example (the serving layer), `reactor` the `echo_reactor` \
         example (the same echo on the raw reactor: what the layer costs), `mio` a hand-written \
         mio loop (the floor). The in-binary peers read into {} bytes; the layer's read size is \
         its own default. Server CPU is the time the server process spent on the CPU during the \
         counting window (`/proc/<pid>/task/*/schedstat`), per round trip; `of it user` is its \
         user-space part (`/proc/<pid>/stat`, sampled per 10 ms clock tick, so coarse over one \
         run); the rest is the kernel's. `foreign %` is the share of the two pinned CPUs' time \
         that went to other processes during the counting window.\n",
        settings.buffer
    );
    if !cases.iter().any(|case| case.runs.index(ONTIME).is_some()) {
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
        "| peer | msg size | conns | rt/s | p50 us | p99 us | server CPU us/req | of it user | ontime / peer (rt/s) | peer / ontime CPU | foreign % |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for case in cases {
        let runs = &case.runs;
        for (peer, name) in runs.peers.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {name}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                runs.runs_note(peer),
                size(case.msg),
                case.conns,
                show(runs.of(peer, |s| s.rt_per_s), 0),
                show(runs.of(peer, |s| s.p50_us), 1),
                show(runs.of(peer, |s| s.p99_us), 1),
                show(runs.of(peer, |s| s.cpu_us_per_rt), 2),
                show(runs.of(peer, |s| s.user_us_per_rt), 2),
                show(runs.against_ontime(peer, |o, p| o.rt_per_s / p.rt_per_s), 3),
                show(
                    runs.against_ontime(peer, |o, p| p.cpu_us_per_rt / o.cpu_us_per_rt),
                    3
                ),
                show(runs.of(peer, |s| s.foreign * 100.0), 1),
            );
        }
    }
    out
}

/// One goal and whether the run met it.
#[derive(Debug)]
pub(crate) struct Goal {
    what: String,
    measured: f64,
    target: f64,
    /// `true`: the measured value must be at least the target; `false`: at
    /// most.
    at_least: bool,
}

impl Goal {
    fn verdict(&self) -> &'static str {
        if !self.measured.is_finite() {
            "not measured"
        } else if (self.at_least && self.measured >= self.target)
            || (!self.at_least && self.measured <= self.target)
        {
            "met"
        } else {
            "MISSED"
        }
    }
}

/// The goals of the serving layer, from the echo cases with `many`
/// connections and the idle case.
pub(crate) fn goals(cases: &[Case], many: usize, idle: Option<&IdleCase>) -> Vec<Goal> {
    let mut goals = Vec::new();
    for case in cases.iter().filter(|case| case.conns == many) {
        let runs = &case.runs;
        let at = format!("{} x {} conns", size(case.msg), case.conns);
        let ratio = |peer: &str, f: &dyn Fn(&Sample, &Sample) -> f64| {
            runs.index(peer)
                .map_or(f64::NAN, |peer| runs.against_ontime(peer, f))
        };
        goals.push(Goal {
            what: format!("ontime / reactor rt/s, {at}"),
            measured: ratio("reactor", &|o, p| o.rt_per_s / p.rt_per_s),
            target: 0.98,
            at_least: true,
        });
        goals.push(Goal {
            what: format!("ontime / tokio rt/s, {at}"),
            measured: ratio("tokio", &|o, p| o.rt_per_s / p.rt_per_s),
            target: 1.05,
            at_least: true,
        });
        goals.push(Goal {
            what: format!("ontime / tokio server CPU per rt, {at}"),
            measured: ratio("tokio", &|o, p| o.cpu_us_per_rt / p.cpu_us_per_rt),
            target: 0.95,
            at_least: false,
        });
    }
    if let Some(idle) = idle {
        let measured = idle
            .runs
            .index(ONTIME)
            .map_or(f64::NAN, |peer| idle.runs.of(peer, |s| s.per_conn_open()));
        goals.push(Goal {
            what: format!("ontime RSS per idle connection (B), {} open", idle.conns),
            measured,
            target: 256.0,
            at_least: false,
        });
    }
    goals
}

/// The goals as a markdown section; empty if none was measured.
pub(crate) fn goals_markdown(goals: &[Goal]) -> String {
    if goals.is_empty() {
        return String::new();
    }
    let mut out =
        String::from("## Goals\n\n| goal | measured | target | verdict |\n|---|---:|---:|---|\n");
    for goal in goals {
        let _ = writeln!(
            out,
            "| {} | {} | {} {} | {} |",
            goal.what,
            show(goal.measured, 3),
            if goal.at_least { ">=" } else { "<=" },
            goal.target,
            goal.verdict()
        );
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

/// The echo summary as CSV.
pub(crate) fn summary_csv(cases: &[Case]) -> String {
    let mut out = String::from(
        "peer,msg_bytes,conns,runs,rt_per_s,p50_us,p99_us,server_cpu_us_per_req,server_user_us_per_req,ontime_over_peer_rt,peer_over_ontime_cpu\n",
    );
    for case in cases {
        let runs = &case.runs;
        for (peer, name) in runs.peers.iter().enumerate() {
            let ran = runs.rounds().filter(|&(_, p, _)| p == *name).count();
            let _ = writeln!(
                out,
                "{name},{},{},{ran},{},{},{},{},{},{},{}",
                case.msg,
                case.conns,
                field(runs.of(peer, |s| s.rt_per_s), 1),
                field(runs.of(peer, |s| s.p50_us), 2),
                field(runs.of(peer, |s| s.p99_us), 2),
                field(runs.of(peer, |s| s.cpu_us_per_rt), 4),
                field(runs.of(peer, |s| s.user_us_per_rt), 4),
                field(runs.against_ontime(peer, |o, p| o.rt_per_s / p.rt_per_s), 4),
                field(
                    runs.against_ontime(peer, |o, p| p.cpu_us_per_rt / o.cpu_us_per_rt),
                    4
                )
            );
        }
    }
    out
}

/// Every successful echo run as CSV.
pub(crate) fn rounds_csv(cases: &[Case]) -> String {
    let mut out =
        String::from("msg_bytes,conns,round,peer,rt_per_s,p50_us,p99_us,server_cpu_us_per_req,server_user_us_per_req,foreign\n");
    for case in cases {
        for (round, peer, s) in case.runs.rounds() {
            let _ = writeln!(
                out,
                "{},{},{round},{peer},{},{},{},{},{},{}",
                case.msg,
                case.conns,
                field(s.rt_per_s, 1),
                field(s.p50_us, 2),
                field(s.p99_us, 2),
                field(s.cpu_us_per_rt, 4),
                field(s.user_us_per_rt, 4),
                field(s.foreign, 4)
            );
        }
    }
    out
}

/// What one idle run of one peer measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdleSample {
    pub(crate) conns: usize,
    pub(crate) rss_before: u64,
    pub(crate) rss_open: u64,
    pub(crate) rss_after: u64,
    pub(crate) open_s: f64,
    pub(crate) closed: usize,
    /// The active connections' ping-pong.
    pub(crate) active: Sample,
}

impl IdleSample {
    /// (RSS with every connection open - RSS before the first) / conns.
    pub(crate) fn per_conn_open(&self) -> f64 {
        (self.rss_open as f64 - self.rss_before as f64) / self.conns as f64
    }

    /// The same after the active connections' counting window.
    pub(crate) fn per_conn_after(&self) -> f64 {
        (self.rss_after as f64 - self.rss_before as f64) / self.conns as f64
    }
}

/// Every run of the idle case.
#[derive(Debug)]
pub(crate) struct IdleCase {
    pub(crate) conns: usize,
    pub(crate) active: usize,
    pub(crate) msg: usize,
    /// Per peer, what its idle deadline is, for the report.
    pub(crate) deadlines: Vec<&'static str>,
    pub(crate) runs: Runs<IdleSample>,
}

const MIB: f64 = 1024.0 * 1024.0;

/// The idle case as a markdown document.
pub(crate) fn idle_markdown(case: &IdleCase, settings: &Settings) -> String {
    let mut out = String::new();
    header(
        &mut out,
        &format!(
            "Idle connections: {} open with idle deadlines, {} active",
            case.conns, case.active
        ),
        settings,
    );
    let _ = writeln!(
        out,
        "Each server holds {} connections, opened in batches and each answered once (so the \
         server has accepted every one and armed its deadline); then {} of them run the closed \
         loop with {} messages while the rest sit idle. RSS is `VmRSS` of \
         `/proc/<pid>/status`; `B/conn` is (RSS with all open - RSS before the first connect) / \
         connections, once all are open and again after the counting window. rt/s, latency and \
         server CPU are the active connections'. `closed` counts connections the server had \
         closed by a final message on every one (0 expected: no deadline is due within a run). \
         Ratios against ontime are medians of per-round ratios.\n",
        case.conns,
        case.active,
        size(case.msg)
    );
    let _ = writeln!(
        out,
        "| peer | idle deadline | RSS before MiB | RSS open MiB | B/conn open | B/conn after | open s | active rt/s | p50 us | p99 us | server CPU us/req | closed | ontime / peer (rt/s) | peer / ontime (B/conn) | foreign % |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let runs = &case.runs;
    for (peer, name) in runs.peers.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {name}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            runs.runs_note(peer),
            case.deadlines[peer],
            show(runs.of(peer, |s| s.rss_before as f64 / MIB), 1),
            show(runs.of(peer, |s| s.rss_open as f64 / MIB), 1),
            show(runs.of(peer, IdleSample::per_conn_open), 0),
            show(runs.of(peer, IdleSample::per_conn_after), 0),
            show(runs.of(peer, |s| s.open_s), 2),
            show(runs.of(peer, |s| s.active.rt_per_s), 0),
            show(runs.of(peer, |s| s.active.p50_us), 1),
            show(runs.of(peer, |s| s.active.p99_us), 1),
            show(runs.of(peer, |s| s.active.cpu_us_per_rt), 2),
            show(runs.of(peer, |s| s.closed as f64), 0),
            show(
                runs.against_ontime(peer, |o, p| o.active.rt_per_s / p.active.rt_per_s),
                3
            ),
            show(
                runs.against_ontime(peer, |o, p| p.per_conn_open() / o.per_conn_open()),
                3
            ),
            show(runs.of(peer, |s| s.active.foreign * 100.0), 1),
        );
    }
    out
}

/// Every successful idle run as CSV.
pub(crate) fn idle_csv(case: &IdleCase) -> String {
    let mut out = String::from(
        "round,peer,conns,active,msg_bytes,rss_before,rss_open,rss_after,bytes_per_conn_open,bytes_per_conn_after,open_s,closed,rt_per_s,p50_us,p99_us,server_cpu_us_per_req,foreign\n",
    );
    for (round, peer, s) in case.runs.rounds() {
        let _ = writeln!(
            out,
            "{round},{peer},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            case.conns,
            case.active,
            case.msg,
            s.rss_before,
            s.rss_open,
            s.rss_after,
            field(s.per_conn_open(), 1),
            field(s.per_conn_after(), 1),
            field(s.open_s, 3),
            s.closed,
            field(s.active.rt_per_s, 1),
            field(s.active.p50_us, 2),
            field(s.active.p99_us, 2),
            field(s.active.cpu_us_per_rt, 4),
            field(s.active.foreign, 4)
        );
    }
    out
}

/// One run's system-call counts for a server.
#[derive(Debug, Clone)]
pub(crate) struct SyscallSample {
    pub(crate) round_trips: u64,
    pub(crate) rt_per_s: f64,
    /// Calls by system-call name (`read`, `epoll_wait`), over the whole
    /// client run.
    pub(crate) counts: BTreeMap<String, u64>,
}

impl SyscallSample {
    fn per_rt(&self, name: &str) -> f64 {
        self.counts.get(name).copied().unwrap_or(0) as f64 / self.round_trips.max(1) as f64
    }

    fn total_per_rt(&self) -> f64 {
        self.counts.values().sum::<u64>() as f64 / self.round_trips.max(1) as f64
    }
}

/// Every run of one system-call case.
#[derive(Debug)]
pub(crate) struct SyscallCase {
    pub(crate) msg: usize,
    pub(crate) conns: usize,
    pub(crate) runs: Runs<SyscallSample>,
}

/// The system-call cases as a markdown document; `tool` says how they
/// were counted.
pub(crate) fn syscalls_markdown(cases: &[SyscallCase], tool: &str, settings: &Settings) -> String {
    let mut out = String::new();
    header(&mut out, "System calls per round trip", settings);
    let _ = writeln!(
        out,
        "Counted with {tool} on the server process over the whole client run (connects \
         included, no warm-up), divided by the round trips of that run; medians over rounds. \
         Only calls made at least once per 200 round trips by some peer are listed; `other` is \
         every call not counted by name, and `total` all of them. Read with care: a server that is idle sooner polls more often, so server \
         CPU per round trip (in the echo table) comes first and this says where it goes.\n"
    );
    for case in cases {
        let runs = &case.runs;
        let _ = writeln!(out, "### {} x {} conns\n", size(case.msg), case.conns);
        let _ = write!(out, "| syscall / rt |");
        for (peer, name) in runs.peers.iter().enumerate() {
            let _ = write!(out, " {name}{} |", runs.runs_note(peer));
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "|---|{}", "---:|".repeat(runs.peers.len()));
        let names: BTreeSet<&str> = runs
            .rounds()
            .flat_map(|(_, _, s)| s.counts.keys().map(String::as_str))
            .collect();
        let mut rows: Vec<(&str, Vec<f64>)> = names
            .into_iter()
            .map(|name| {
                let values = (0..runs.peers.len())
                    .map(|peer| runs.of(peer, |s| s.per_rt(name)))
                    .collect();
                (name, values)
            })
            .filter(|(_, values): &(&str, Vec<f64>)| values.iter().any(|&v| v >= 0.005))
            .collect();
        rows.sort_by(|a, b| {
            let max = |v: &[f64]| {
                v.iter()
                    .copied()
                    .filter(|x| x.is_finite())
                    .fold(0.0, f64::max)
            };
            max(&b.1).total_cmp(&max(&a.1)).then(a.0.cmp(b.0))
        });
        for (name, values) in rows {
            let _ = write!(out, "| {name} |");
            for value in values {
                let _ = write!(out, " {} |", show(value, 3));
            }
            let _ = writeln!(out);
        }
        let _ = write!(out, "| **total** |");
        for peer in 0..runs.peers.len() {
            let _ = write!(
                out,
                " **{}** |",
                show(runs.of(peer, SyscallSample::total_per_rt), 3)
            );
        }
        let _ = writeln!(out);
        let _ = write!(out, "| rt/s while counted |");
        for peer in 0..runs.peers.len() {
            let _ = write!(out, " {} |", show(runs.of(peer, |s| s.rt_per_s), 0));
        }
        let _ = writeln!(out, "\n");
    }
    out
}

/// Every system-call run as CSV, one line per call name.
pub(crate) fn syscalls_csv(cases: &[SyscallCase]) -> String {
    let mut out = String::from("msg_bytes,conns,round,peer,round_trips,syscall,calls,per_rt\n");
    for case in cases {
        for (round, peer, s) in case.runs.rounds() {
            for (name, calls) in &s.counts {
                let _ = writeln!(
                    out,
                    "{},{},{round},{peer},{},{name},{calls},{}",
                    case.msg,
                    case.conns,
                    s.round_trips,
                    field(s.per_rt(name), 4)
                );
            }
        }
    }
    out
}
