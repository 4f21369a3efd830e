//! Side-by-side echo comparison: ontime's serving layer (the `echo_server`
//! example) against the same echo on the raw reactor (the `echo_reactor`
//! example: what the layer costs), a hand-written mio loop (the floor),
//! tokio's current-thread runtime and std's thread-per-connection, all
//! driven by one load generator.
//!
//! ```text
//! cargo bench --bench echo_load                  # about 4 minutes
//! ECHO_SECS=1 ECHO_ROUNDS=5 cargo bench --bench echo_load
//! ECHO_CASES=idle10k cargo bench --bench echo_load
//! ECHO_CASES=syscalls cargo bench --bench echo_load
//! ```
//!
//! The second form spends about the same time in more, shorter rounds; it
//! is the better choice on a shared machine whose speed shifts between
//! runs, because one shift then moves the median ratio less.
//!
//! Every server is a child process pinned to one CPU; the load generator is
//! this process, pinned to another. For each case the peers run
//! interleaved, A B C D A B C D, for `ECHO_ROUNDS` rounds (default 3); each
//! run warms up for 0.5 s and then counts for `ECHO_SECS` seconds (default
//! 2). Connections are closed-loop ping-pong: send one message, wait for
//! all of it to come back, send the next. The cases, chosen with
//! `ECHO_CASES` (a comma-separated list, default `echo,idle10k`):
//!
//! - `echo`: 64 B and 1 KiB messages over 50 connections (`ECHO_CONNS`)
//!   and over 1; `SIZExCONNS` (say `1024x200`) is one such case of its own.
//!   The report gives, per peer, the median over rounds of round trips per
//!   second, of p50 and p99 round-trip latency, and of server CPU time per
//!   round trip (`/proc/<pid>/task/*/schedstat`, exact to the nanosecond;
//!   it holds when the generator is the bottleneck), and the median of the
//!   per-round ratios against `ontime`.
//! - `idle10k`: 10,000 connections (`ECHO_IDLE_CONNS`) held open, each
//!   with an idle deadline of 60 s in the server (`--idle-timeout-ms 60000`
//!   for ontime's examples; one `tokio::time::timeout` per read for tokio,
//!   the in-binary peer `tokio-idle`; the mio loop has none and is the
//!   floor), 1% of them (`ECHO_IDLE_ACTIVE`) doing 64-byte ping-pong. The
//!   connections open in batches of 100, each answered once before the
//!   next batch, so the server has accepted and armed every one; a last
//!   message on every connection checks that none was closed early. It
//!   reports the server's RSS per connection ((`VmRSS` with all open -
//!   `VmRSS` before the first connect) / connections) and the active
//!   connections' round trips per second, latency and server CPU. The
//!   bench raises its soft `RLIMIT_NOFILE` to the hard limit, which the
//!   servers inherit, and holds fewer connections (with a note) if that is
//!   too low.
//! - `syscalls` (not in the default): the server's system calls per round
//!   trip at 64 B over 50 connections and over 1, counted with
//!   `perf stat -e raw_syscalls:sys_enter,syscalls:sys_enter_read,... -p PID
//!   -- CLIENT` (the client is this binary: `echo_load load ADDR CONNS MSG
//!   SECS`; the calls an event loop makes one by one, the rest as `other`;
//!   `ECHO_SYSCALLS_ALL=1` counts every `syscalls:sys_enter_*`, which takes
//!   perf some 14 s to set up per run here), or with `strace -c -f -p PID`
//!   where perf cannot count (or with `ECHO_SYSCALLS_TOOL=strace`); the
//!   report says which. With perf, std's thread-per-connection is left
//!   out: perf counts only the threads a process has when it attaches.
//!
//! The machine is shared, so every run also measures its interference:
//! the time the two pinned CPUs were busy (`/proc/stat`) less the server's
//! and the generator's own CPU time, as a share of the CPUs' time (the
//! `foreign %` column). Before each run the bench waits for the CPUs to be
//! quiet (at most 10 s a time, `ECHO_WAIT_QUIET_SECS` in all, default 45);
//! a run with more than `ECHO_MAX_FOREIGN` (default 0.05) is made again, up
//! to `ECHO_RETRIES` times (default 2) and for at most an eighth of the runs
//! of each kind of case, keeping the least disturbed sample. `ECHO_RETRIES=0
//! ECHO_WAIT_QUIET_SECS=0` turns this off.
//!
//! After the cases come the serving layer's goals, each marked met or
//! missed: at 50 connections, ontime at least 0.98x reactor and 1.05x tokio
//! in round trips per second and at most 0.95x tokio's server CPU per round
//! trip; at most 256 bytes of RSS per idle connection.
//!
//! Everything is printed as markdown and written to
//! `<target dir>/ontime-bench/`: `echo.md` (the echo cases and the goals),
//! `echo.csv` (the summary), `echo-rounds.csv` (every run), `echo-idle.md`
//! and `.csv`, `echo-syscalls.md` and `.csv`.
//!
//! The bench builds the two examples with its own profile before it
//! starts; a missing one is left out with a note. The same binary serves
//! the in-binary peers: `echo_load serve mio|tokio|tokio-idle|std`.
//! Without `--bench` (as `cargo test --benches` runs it) it only checks, in
//! about a second, that the generator, the idle case's machinery, the
//! in-binary peers and the output parsers work.
//!
//! More environment: `ECHO_IDLE_MS`: if set, a further peer `ontime-idle`
//! runs the layer's example with `--idle-timeout-ms` of that value in the
//! echo cases, which re-arms the idle deadline on every read.
//! `ECHO_BASELINE=PATH` adds a peer `baseline` that runs the echo server
//! binary at PATH with the same flags as `ontime` (say, the example built
//! from an earlier commit, to measure what a change costs side by side).
//! `ECHO_PEERS=ontime,reactor` runs only the peers named (ratios need
//! `ontime` among them).

#[path = "echo_load/idle.rs"]
mod idle;
#[path = "echo_load/load.rs"]
mod load;
#[path = "echo_load/report.rs"]
mod report;
#[path = "echo_load/servers.rs"]
mod servers;
#[path = "echo_load/sys.rs"]
mod sys;
#[path = "echo_load/syscalls.rs"]
mod syscalls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::idle::IdleLoad;
use crate::load::Load;
use crate::report::{Case, IdleCase, IdleSample, Runs, Sample, SyscallCase, SyscallSample};
use crate::sys::Server;
use crate::syscalls::Tool;

/// How long a server may take to print its address.
const STARTUP: Duration = Duration::from_secs(10);
/// Longest the build of one of ontime's examples may take.
const BUILD_LIMIT: Duration = Duration::from_secs(600);
/// Warm-up before each counting window.
const WARMUP: Duration = Duration::from_millis(500);
/// The idle deadline the idle case asks of every server that has one; no
/// deadline falls due within a run.
const IDLE_TIMEOUT_MS: u64 = 60_000;
/// Message size of the idle and system-call cases.
const SMALL: usize = 64;
/// Most connections the idle case may hold.
const MAX_IDLE_CONNS: usize = 100_000;
/// Descriptors the bench and each server keep beyond the idle case's
/// connections (listeners, pipes, epoll, perf).
const SPARE_FDS: usize = 256;

/// A server under test and how to start it for each case.
#[derive(Debug)]
struct Peer {
    name: &'static str,
    program: PathBuf,
    /// The arguments for the echo and system-call cases.
    args: Vec<String>,
    /// The arguments for the idle case, and what its deadline is; `None`:
    /// not in the idle case.
    idle: Option<(Vec<String>, &'static str)>,
    /// Whether the system-call case counts it with perf, which sees only
    /// the threads a server has when it attaches (strace counts every
    /// peer).
    syscalls: bool,
}

impl Peer {
    fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new(&self.program);
        command.args(args);
        command
    }
}

/// One entry of `ECHO_CASES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CaseKind {
    /// Message size, connections.
    Echo(usize, usize),
    Idle,
    Syscalls,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => {
            let kind = args.get(1).map(String::as_str).unwrap_or("");
            if let Err(e) = servers::serve(kind) {
                eprintln!("echo_load serve {kind}: {e}");
                std::process::exit(1);
            }
            return;
        }
        Some("load") => {
            if let Err(e) = client(&args[1..]) {
                eprintln!("echo_load load: {e}");
                std::process::exit(1);
            }
            return;
        }
        _ => {}
    }
    let result = if args.iter().any(|a| a == "--bench") {
        bench()
    } else {
        smoke()
    };
    if let Err(e) = result {
        eprintln!("echo_load: {e}");
        std::process::exit(1);
    }
}

/// `echo_load load ADDR CONNS MSG SECS`: the generator on its own, counting
/// from the first message (no warm-up), for the system-call case.
fn client(args: &[String]) -> std::io::Result<()> {
    let invalid = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("usage: echo_load load ADDR CONNS MSG SECS ({what})"),
        )
    };
    let [addr, conns, msg, secs] = args else {
        return Err(invalid("four arguments"));
    };
    let addr: SocketAddr = addr.parse().map_err(|_| invalid("ADDR"))?;
    let conns: usize = conns.parse().map_err(|_| invalid("CONNS"))?;
    let msg: usize = msg.parse().map_err(|_| invalid("MSG"))?;
    let secs: f64 = secs.parse().map_err(|_| invalid("SECS"))?;
    let count = Duration::try_from_secs_f64(secs.clamp(0.1, 60.0)).map_err(|_| invalid("SECS"))?;
    let load = Load {
        conns: conns.clamp(1, 5000),
        msg: msg.clamp(1, 1 << 20),
        warmup: Duration::ZERO,
        count,
    };
    let measured = load::run(addr, load, |_| {})?;
    println!(
        "round_trips {} elapsed_s {:.6}",
        measured.round_trips,
        measured.elapsed.as_secs_f64()
    );
    Ok(())
}

/// A quick check that every in-binary peer echoes under the generator, that
/// the idle case's machinery works on a few connections, and that the
/// system-call tools' output parses.
fn smoke() -> std::io::Result<()> {
    let me = std::env::current_exe()?;
    let at = Placement {
        server: None,
        cpus: sys::allowed_cpus(),
    };
    let load = Load {
        conns: 4,
        msg: 1024,
        warmup: Duration::from_millis(20),
        count: Duration::from_millis(100),
    };
    for kind in servers::KINDS {
        let peer = own_peer(&me, kind);
        let sample = run_one(&peer, load, &at)?;
        println!(
            "echo_load smoke: {kind}: {:.0} round trips/s",
            sample.rt_per_s
        );
    }
    let tokio_idle = own_peer(&me, "tokio-idle");
    let idle = IdleLoad {
        conns: 40,
        active: 4,
        msg: SMALL,
        warmup: Duration::from_millis(20),
        count: Duration::from_millis(100),
    };
    let sample = run_idle(&tokio_idle, &tokio_idle.args, idle, &at)?;
    if sample.closed != 0 {
        return Err(std::io::Error::other(format!(
            "tokio-idle closed {} connections early",
            sample.closed
        )));
    }
    println!(
        "echo_load smoke: idle case on tokio-idle: {} connections, {:.0} B each, {:.0} round trips/s on {}; a task's future is {} bytes",
        idle.conns,
        sample.per_conn_open(),
        sample.active.rt_per_s,
        idle.active,
        task_size(servers::echo_with_deadline)
    );
    syscalls::check_parsers()?;
    println!("echo_load: run with `cargo bench --bench echo_load` for the comparison");
    Ok(())
}

/// The size of the future `f` returns: what each `tokio-idle` task holds,
/// its buffer not included.
fn task_size<A, F: std::future::Future>(_: fn(A) -> F) -> usize {
    std::mem::size_of::<F>()
}

fn own_peer(me: &Path, kind: &'static str) -> Peer {
    let args = vec!["serve".to_string(), kind.to_string()];
    let idle = match kind {
        "mio" => Some((args.clone(), "none")),
        "tokio" => Some((
            vec!["serve".to_string(), "tokio-idle".to_string()],
            "60 s: a `tokio::time::timeout` per read",
        )),
        _ => None,
    };
    Peer {
        name: kind,
        program: me.to_path_buf(),
        args,
        idle,
        syscalls: kind != "std",
    }
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value.trim().parse().unwrap_or_else(|_| {
            eprintln!("echo_load: ignoring {name}={value:?}, not a number");
            default
        }),
        Err(_) => default,
    }
}

/// `ECHO_CASES`, in order, without repeats.
fn cases(conns: usize) -> std::io::Result<Vec<CaseKind>> {
    let spec = std::env::var("ECHO_CASES").unwrap_or_else(|_| "echo,idle10k".to_string());
    let mut cases = Vec::new();
    for token in spec.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let more = match token {
            "echo" => vec![
                CaseKind::Echo(64, conns),
                CaseKind::Echo(1024, conns),
                CaseKind::Echo(64, 1),
                CaseKind::Echo(1024, 1),
            ],
            "idle" | "idle10k" => vec![CaseKind::Idle],
            "syscalls" => vec![CaseKind::Syscalls],
            other => {
                let parsed = other.split_once('x').and_then(|(msg, conns)| {
                    Some((msg.parse::<usize>().ok()?, conns.parse::<usize>().ok()?))
                });
                match parsed {
                    Some((msg, conns))
                        if (1..=1 << 20).contains(&msg) && (1..=5000).contains(&conns) =>
                    {
                        vec![CaseKind::Echo(msg, conns)]
                    }
                    _ => {
                        return Err(std::io::Error::other(format!(
                            "ECHO_CASES: {other:?} is none of echo, idle10k, syscalls, SIZExCONNS \
                             (1..=1048576 x 1..=5000)"
                        )))
                    }
                }
            }
        };
        for case in more {
            if !cases.contains(&case) {
                cases.push(case);
            }
        }
    }
    if cases.is_empty() {
        return Err(std::io::Error::other(format!(
            "ECHO_CASES={spec:?} names no case"
        )));
    }
    Ok(cases)
}

fn bench() -> std::io::Result<()> {
    let secs: f64 = env_number("ECHO_SECS", 2.0);
    let count =
        Duration::try_from_secs_f64(secs.clamp(0.1, 60.0)).unwrap_or(Duration::from_secs(2));
    let rounds: usize = env_number("ECHO_ROUNDS", 3usize).clamp(1, 50);
    let conns: usize = env_number("ECHO_CONNS", 50usize).clamp(1, 5000);
    let kinds = cases(conns)?;
    let echo_cases: Vec<(usize, usize)> = kinds
        .iter()
        .filter_map(|kind| match *kind {
            CaseKind::Echo(msg, conns) => Some((msg, conns)),
            _ => None,
        })
        .collect();
    let want_idle = kinds.contains(&CaseKind::Idle);
    let want_syscalls = kinds.contains(&CaseKind::Syscalls);

    // The idle case needs a descriptor per connection here and in the
    // server, which inherits this limit.
    let mut idle_conns: usize = env_number("ECHO_IDLE_CONNS", 10_000usize).clamp(1, MAX_IDLE_CONNS);
    if want_idle {
        let limit = sys::raise_nofile((idle_conns + 4 * SPARE_FDS) as u64)?;
        let fits = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .saturating_sub(SPARE_FDS);
        if fits < idle_conns {
            eprintln!(
                "echo_load: NOTE: RLIMIT_NOFILE allows {limit} descriptors (`ulimit -Hn`); the idle \
                 case holds {fits} connections, not {idle_conns}"
            );
            idle_conns = fits.max(1);
        }
    }
    let idle_active: usize =
        env_number("ECHO_IDLE_ACTIVE", (idle_conns / 100).max(1)).clamp(1, idle_conns);

    let me = std::env::current_exe()?;
    // The bench runs as <target>/<profile>/deps/echo_load-<hash>.
    let profile_dir = me
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| {
            std::io::Error::other("cannot find the target directory from the executable's path")
        })?
        .to_path_buf();
    let target_dir = profile_dir.parent().unwrap_or(&profile_dir).to_path_buf();

    // Built before any pinning, so that the build has every CPU.
    let peers = peers(&me, &profile_dir, &target_dir, idle_conns)?;

    let cpus = sys::allowed_cpus();
    let (server_cpu, load_cpu) = if cpus.len() >= 2 {
        (Some(cpus[0]), Some(cpus[1]))
    } else {
        eprintln!(
            "echo_load: NOTE: only {} CPU(s) available; servers and generator are not pinned and share the CPU",
            cpus.len()
        );
        (None, None)
    };
    let pinning = match (server_cpu, load_cpu) {
        (Some(s), Some(l)) => match sys::pin(0, l) {
            Ok(()) => format!("server on CPU {s}, generator on CPU {l}"),
            Err(e) => {
                eprintln!("echo_load: NOTE: could not pin the generator to CPU {l}: {e}");
                format!("server on CPU {s}, generator unpinned")
            }
        },
        _ => "unpinned".to_string(),
    };
    let at = Placement {
        server: server_cpu,
        cpus: match (server_cpu, load_cpu) {
            (Some(s), Some(l)) => vec![s, l],
            _ => cpus.clone(),
        },
    };
    let mut retried = 0usize;

    let tool = if want_syscalls {
        let tool = Tool::detect();
        if tool.is_none() {
            eprintln!(
                "echo_load: NOTE: neither perf nor strace can count system calls here; \
                 the syscalls case is skipped"
            );
        }
        tool
    } else {
        None
    };
    let syscall_cases: Vec<(usize, usize)> = if tool.is_some() {
        vec![(SMALL, conns), (SMALL, 1)]
    } else {
        Vec::new()
    };

    let per_run = (WARMUP + count + Duration::from_millis(150)).as_secs_f64();
    let echo_runs = echo_cases.len() * rounds * peers.len();
    let idle_peers = peers.iter().filter(|p| p.idle.is_some()).count();
    let idle_runs = if want_idle { rounds * idle_peers } else { 0 };
    let syscall_peers = peers.iter().filter(|p| p.syscalls).count();
    let syscall_runs = syscall_cases.len() * rounds * syscall_peers;
    // Each kind of case has its share of the budgets, so that a busy spell
    // in the first cannot leave the idle case none.
    let wait_total = Duration::from_secs(env_number("ECHO_WAIT_QUIET_SECS", 45u64).min(600));
    let all_runs = (echo_runs + idle_runs).max(1) as u32;
    let retry_for = |runs: usize| Retry {
        limit: env_number("ECHO_MAX_FOREIGN", 0.05f64).clamp(0.0, 1.0),
        retries: env_number("ECHO_RETRIES", 2usize).min(10),
        budget: runs.div_ceil(8),
        wait: wait_total * runs as u32 / all_runs,
        cpus: at.cpus.clone(),
    };
    let mut retry = retry_for(echo_runs);
    // Opening and checking 10k connections takes about a second.
    let idle_extra = 0.5 + idle_conns as f64 / 10_000.0;
    println!(
        "echo_load: {} peers; {echo_runs} echo runs, {idle_runs} idle runs ({idle_conns} conns, {idle_active} active), \
         {syscall_runs} system-call runs; about {:.0} s, and up to an eighth more for runs made again and {:.0} s waiting for quiet CPUs; {pinning}",
        peers.len(),
        echo_runs as f64 * per_run
            + idle_runs as f64 * (per_run + idle_extra)
            + syscall_runs as f64 * (count.as_secs_f64() + 2.5),
        wait_total.as_secs_f64(),
    );

    let out = target_dir.join("ontime-bench");
    std::fs::create_dir_all(&out)?;
    let started = Instant::now();
    let (foreign_limit, retries) = (retry.limit, retry.retries);
    let settings = |took: f64, retried: usize| report::Settings {
        secs: count.as_secs_f64(),
        warmup: WARMUP.as_secs_f64(),
        rounds,
        pinning: pinning.clone(),
        buffer: servers::BUF,
        took,
        foreign_limit,
        retries,
        retried,
    };

    let mut echo_results = Vec::new();
    for &(msg, conns) in &echo_cases {
        let load = Load {
            conns,
            msg,
            warmup: WARMUP,
            count,
        };
        let mut case = Case::new(msg, conns, peers.iter().map(|p| p.name).collect());
        for round in 0..rounds {
            for (index, peer) in peers.iter().enumerate() {
                let label = format!(
                    "{msg:>4} B x {conns:>3} conns, round {}/{rounds}, {:<8}",
                    round + 1,
                    peer.name
                );
                let sample = match least_disturbed(
                    &label,
                    &mut retry,
                    || run_one(peer, load, &at),
                    |s| s.foreign,
                ) {
                    Ok((sample, again)) => {
                        retried += again;
                        println!(
                            "  {label} {:>9.0} rt/s  p50 {:>7.1} us  p99 {:>7.1} us  cpu {:>5.2} us/rt (user {:>5.2})  foreign {:>4.1}%",
                            sample.rt_per_s,
                            sample.p50_us,
                            sample.p99_us,
                            sample.cpu_us_per_rt,
                            sample.user_us_per_rt,
                            sample.foreign * 100.0,
                        );
                        Some(sample)
                    }
                    Err(e) => {
                        eprintln!("  {label} FAILED: {e}");
                        None
                    }
                };
                case.runs.record(round, index, sample);
            }
        }
        echo_results.push(case);
    }
    let echo_took = started.elapsed().as_secs_f64();
    let echo_retried = retried;

    let mut idle_result = None;
    if want_idle && idle_peers > 0 {
        let begun = Instant::now();
        let retried_before = retried;
        retry = retry_for(idle_runs);
        let load = IdleLoad {
            conns: idle_conns,
            active: idle_active,
            msg: SMALL,
            warmup: WARMUP,
            count,
        };
        let idle_peers: Vec<&Peer> = peers.iter().filter(|p| p.idle.is_some()).collect();
        let mut case = IdleCase {
            conns: idle_conns,
            active: idle_active,
            msg: SMALL,
            deadlines: idle_peers
                .iter()
                .map(|p| p.idle.as_ref().map_or("", |(_, d)| *d))
                .collect(),
            runs: Runs::new(idle_peers.iter().map(|p| p.name).collect()),
        };
        for round in 0..rounds {
            for (index, peer) in idle_peers.iter().enumerate() {
                let label = format!(
                    "idle {idle_conns} conns ({idle_active} active), round {}/{rounds}, {:<8}",
                    round + 1,
                    peer.name
                );
                let args = &peer.idle.as_ref().expect("filtered on idle").0;
                let sample = match least_disturbed(
                    &label,
                    &mut retry,
                    || run_idle(peer, args, load, &at),
                    |s| s.active.foreign,
                ) {
                    Ok((s, again)) => {
                        retried += again;
                        println!(
                            "  {label} {:>6.0} B/conn (open) {:>6.0} B/conn (after)  open {:.2} s  {:>8.0} rt/s  p50 {:>7.1} us  p99 {:>7.1} us  cpu {:>5.2} us/rt  closed {}  foreign {:>4.1}%",
                            s.per_conn_open(),
                            s.per_conn_after(),
                            s.open_s,
                            s.active.rt_per_s,
                            s.active.p50_us,
                            s.active.p99_us,
                            s.active.cpu_us_per_rt,
                            s.closed,
                            s.active.foreign * 100.0,
                        );
                        Some(s)
                    }
                    Err(e) => {
                        eprintln!("  {label} FAILED: {e}");
                        None
                    }
                };
                case.runs.record(round, index, sample);
            }
        }
        let markdown = report::idle_markdown(
            &case,
            &settings(begun.elapsed().as_secs_f64(), retried - retried_before),
        );
        println!("\n{markdown}");
        std::fs::write(out.join("echo-idle.md"), &markdown)?;
        std::fs::write(out.join("echo-idle.csv"), report::idle_csv(&case))?;
        println!("echo_load: wrote {}", out.join("echo-idle.md").display());
        idle_result = Some(case);
    }

    if let Some(tool) = tool {
        let begun = Instant::now();
        let scratch = syscalls::scratch(&target_dir)?;
        // strace follows the threads a server starts later; perf does not.
        let counted: Vec<&Peer> = peers
            .iter()
            .filter(|p| p.syscalls || tool == Tool::Strace)
            .collect();
        let mut results = Vec::new();
        for &(msg, conns) in &syscall_cases {
            let mut case = SyscallCase {
                msg,
                conns,
                runs: Runs::new(counted.iter().map(|p| p.name).collect()),
            };
            for round in 0..rounds {
                for (index, peer) in counted.iter().enumerate() {
                    let label = format!(
                        "syscalls {msg:>4} B x {conns:>3} conns, round {}/{rounds}, {:<8}",
                        round + 1,
                        peer.name
                    );
                    let sample = match run_syscalls(
                        peer,
                        tool,
                        conns,
                        msg,
                        count.as_secs_f64(),
                        &at,
                        &scratch,
                    ) {
                        Ok(s) => {
                            let total: u64 = s.counts.values().sum();
                            println!(
                                "  {label} {:>8.0} rt/s  {:.3} calls/rt",
                                s.rt_per_s,
                                total as f64 / s.round_trips.max(1) as f64
                            );
                            Some(s)
                        }
                        Err(e) => {
                            eprintln!("  {label} FAILED: {e}");
                            None
                        }
                    };
                    case.runs.record(round, index, sample);
                }
            }
            results.push(case);
        }
        let markdown = report::syscalls_markdown(
            &results,
            tool.describe(),
            &settings(begun.elapsed().as_secs_f64(), 0),
        );
        println!("\n{markdown}");
        std::fs::write(out.join("echo-syscalls.md"), &markdown)?;
        std::fs::write(
            out.join("echo-syscalls.csv"),
            report::syscalls_csv(&results),
        )?;
        println!(
            "echo_load: wrote {}",
            out.join("echo-syscalls.md").display()
        );
    }

    let goals = report::goals(&echo_results, conns, idle_result.as_ref());
    let goals = report::goals_markdown(&goals);
    if !echo_results.is_empty() {
        let markdown = report::markdown(&echo_results, &settings(echo_took, echo_retried));
        println!("\n{markdown}");
        std::fs::write(out.join("echo.md"), format!("{markdown}\n{goals}"))?;
        std::fs::write(out.join("echo.csv"), report::summary_csv(&echo_results))?;
        std::fs::write(
            out.join("echo-rounds.csv"),
            report::rounds_csv(&echo_results),
        )?;
        println!("echo_load: wrote {}", out.join("echo.md").display());
    }
    if !goals.is_empty() {
        println!("\n{goals}");
    }
    println!(
        "echo_load: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The peers, in report order: ontime's examples (built first), the
/// optional ones, then the in-binary ones; filtered by `ECHO_PEERS`.
fn peers(
    me: &Path,
    profile_dir: &Path,
    target_dir: &Path,
    idle_conns: usize,
) -> std::io::Result<Vec<Peer>> {
    let mut peers = Vec::new();
    let base = || vec!["--addr".to_string(), "127.0.0.1:0".to_string()];
    let with_deadline = |mut args: Vec<String>, ms: u64| {
        args.extend(["--idle-timeout-ms".to_string(), ms.to_string()]);
        args
    };
    let idle_deadline = "60 s: `--idle-timeout-ms 60000`";
    for (name, example) in [("ontime", "echo_server"), ("reactor", "echo_reactor")] {
        let path = match ontime_example(example, profile_dir, target_dir) {
            Ok(path) => path,
            Err(e) => {
                eprintln!(
                    "echo_load: NOTE: ontime's {example} example is missing and could not be built \
                     ({e}); running without peer {name}"
                );
                continue;
            }
        };
        // The layer's example takes `--threads` and `--max-connections`:
        // one thread, like every other peer, and no cap below the idle
        // case's connections. An example without them is run without.
        let help = sys::output_within(
            {
                let mut help = Command::new(&path);
                help.arg("--help");
                help
            },
            STARTUP,
        )
        .unwrap_or_default();
        let mut args = base();
        if help.contains("--threads") {
            args.extend(["--threads".to_string(), "1".to_string()]);
        }
        let mut idle_args = with_deadline(args.clone(), IDLE_TIMEOUT_MS);
        if help.contains("--max-connections") {
            idle_args.extend([
                "--max-connections".to_string(),
                (idle_conns + SPARE_FDS).to_string(),
            ]);
        }
        if name == "ontime" {
            let idle_ms: u64 = env_number("ECHO_IDLE_MS", 0u64);
            peers.push(Peer {
                name,
                program: path.clone(),
                args: args.clone(),
                idle: Some((idle_args, idle_deadline)),
                syscalls: true,
            });
            if idle_ms > 0 {
                peers.push(Peer {
                    name: "ontime-idle",
                    program: path,
                    args: with_deadline(args, idle_ms),
                    idle: None,
                    syscalls: false,
                });
            }
        } else {
            peers.push(Peer {
                name,
                program: path,
                args,
                idle: Some((idle_args, idle_deadline)),
                syscalls: true,
            });
        }
    }
    if let Some(baseline) = std::env::var_os("ECHO_BASELINE") {
        peers.push(Peer {
            name: "baseline",
            program: PathBuf::from(baseline),
            args: base(),
            idle: Some((with_deadline(base(), IDLE_TIMEOUT_MS), idle_deadline)),
            syscalls: true,
        });
    }
    for kind in servers::KINDS {
        peers.push(own_peer(me, kind));
    }

    if let Ok(only) = std::env::var("ECHO_PEERS") {
        let wanted: Vec<&str> = only.split(',').map(str::trim).collect();
        peers.retain(|peer| wanted.contains(&peer.name));
        if peers.is_empty() {
            return Err(std::io::Error::other(format!(
                "ECHO_PEERS={only:?} names no peer"
            )));
        }
    }
    Ok(peers)
}

/// Builds one of ontime's examples with the bench's own profile and
/// target directory, and returns its path.
///
/// The `bench` profile writes to the same directory as `--release` and
/// shares the dependencies `cargo bench` has just built, so this build is
/// incremental; it also keeps the debug info `[profile.bench]` asks for,
/// which `perf` reads.
fn ontime_example(
    example: &str,
    profile_dir: &Path,
    target_dir: &Path,
) -> std::io::Result<PathBuf> {
    let path = profile_dir.join("examples").join(example);
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = manifest_dir.join("examples").join(format!("{example}.rs"));
    if !source.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} does not exist", source.display()),
        ));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--profile",
            "bench",
            "--example",
            example,
            "--manifest-path",
        ])
        .arg(manifest_dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir);
    println!("echo_load: building ontime's {example} example");
    let built = match sys::run_bounded(command, BUILD_LIMIT) {
        Ok(status) if status.success() => true,
        Ok(status) => {
            eprintln!("echo_load: building the {example} example failed ({status})");
            false
        }
        Err(e) => {
            eprintln!("echo_load: could not run cargo to build the {example} example: {e}");
            false
        }
    };
    if !path.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} does not exist", path.display()),
        ));
    }
    if !built {
        eprintln!(
            "echo_load: NOTE: measuring the existing {}, which may be older than the source",
            path.display()
        );
    }
    Ok(path)
}

/// Where the runs happen: the CPU the servers are pinned to, and the CPUs
/// whose interference a run measures (the server's and the generator's,
/// or every CPU allowed when unpinned).
#[derive(Debug, Clone)]
struct Placement {
    server: Option<usize>,
    cpus: Vec<usize>,
}

/// What the generator's window callback samples as the counting window
/// opens and as it closes.
#[derive(Debug, Clone, Copy, Default)]
struct Probe {
    at: Option<Instant>,
    /// The server's CPU time, exact.
    server: Option<Duration>,
    /// The server's user CPU time, in ticks.
    server_user: Option<Duration>,
    /// The non-idle time of the placement's CPUs, in ticks.
    busy: Option<Duration>,
    /// This process's CPU time, exact.
    own: Option<Duration>,
}

impl Probe {
    fn take(pid: u32, cpus: &[usize]) -> Probe {
        Probe {
            at: Some(Instant::now()),
            server: sys::process_cpu(pid).ok(),
            server_user: sys::user_cpu(pid).ok(),
            busy: sys::cpus_busy(cpus).ok(),
            own: sys::process_cpu(std::process::id()).ok(),
        }
    }
}

/// The generator's window callback for server `pid`: a [`Probe`] into
/// `probes[0]` as the counting window opens and `probes[1]` as it closes.
fn cpu_window<'a>(
    pid: u32,
    cpus: &'a [usize],
    probes: &'a mut [Probe; 2],
) -> impl FnMut(bool) + 'a {
    move |opening| probes[usize::from(!opening)] = Probe::take(pid, cpus)
}

fn sample(measured: &load::Measured, probes: &[Probe; 2], cpus: usize) -> Sample {
    let delta = |f: fn(&Probe) -> Option<Duration>| -> Option<f64> {
        Some(f(&probes[1])?.saturating_sub(f(&probes[0])?).as_secs_f64())
    };
    let round_trips = measured.round_trips.max(1) as f64;
    let per_rt = |d: Option<f64>| d.map_or(f64::NAN, |d| d * 1e6 / round_trips);
    let wall = match (probes[0].at, probes[1].at) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => f64::NAN,
    };
    let foreign = match (delta(|p| p.busy), delta(|p| p.server), delta(|p| p.own)) {
        (Some(busy), Some(server), Some(own)) => {
            ((busy - server - own) / (wall * cpus.max(1) as f64)).max(0.0)
        }
        _ => f64::NAN,
    };
    Sample {
        rt_per_s: measured.round_trips as f64 / measured.elapsed.as_secs_f64().max(1e-9),
        p50_us: measured.latency.value_at_quantile(0.50) as f64 / 1e3,
        p99_us: measured.latency.value_at_quantile(0.99) as f64 / 1e3,
        cpu_us_per_rt: per_rt(delta(|p| p.server)),
        user_us_per_rt: per_rt(delta(|p| p.server_user)),
        foreign,
    }
}

/// How much interference a run may suffer before it is run again, and how
/// many times.
#[derive(Debug)]
struct Retry {
    /// Most foreign CPU time, as a fraction of the placement's CPUs.
    limit: f64,
    /// Further attempts of one run at most.
    retries: usize,
    /// Further attempts left for the whole bench, so that a machine busy
    /// throughout costs a bounded share more time, not a multiple.
    budget: usize,
    /// Time left for the whole bench to wait for quiet CPUs before a run.
    wait: Duration,
    /// The CPUs to watch.
    cpus: Vec<usize>,
}

impl Retry {
    /// Waits (within the budget, and at most 10 s) until the CPUs are
    /// quiet.
    fn settle(&mut self) {
        if self.wait.is_zero() {
            return;
        }
        let waited = sys::wait_quiet(
            &self.cpus,
            self.limit,
            self.wait.min(Duration::from_secs(10)),
        );
        self.wait = self.wait.saturating_sub(waited);
    }
}

/// Runs `run` until a sample's interference (`foreign`) is within
/// `retry.limit`, at most `1 + retry.retries` times and while the budget
/// lasts, and keeps the least disturbed sample; also returns how many runs
/// were made again.
fn least_disturbed<S>(
    label: &str,
    retry: &mut Retry,
    mut run: impl FnMut() -> std::io::Result<S>,
    foreign: impl Fn(&S) -> f64,
) -> std::io::Result<(S, usize)> {
    retry.settle();
    let mut best = run()?;
    let mut again = 0;
    while foreign(&best) > retry.limit && again < retry.retries && retry.budget > 0 {
        again += 1;
        retry.budget -= 1;
        eprintln!(
            "  {label} again: {:.0}% of the CPUs went to other processes",
            foreign(&best) * 100.0
        );
        retry.settle();
        let next = run()?;
        if foreign(&next) < foreign(&best) {
            best = next;
        }
    }
    Ok((best, again))
}

/// Starts `peer`, drives it with `load`, and kills it.
fn run_one(peer: &Peer, load: Load, at: &Placement) -> std::io::Result<Sample> {
    let mut server = Server::start(peer.command(&peer.args), at.server, STARTUP)?;
    let mut probes = [Probe::default(); 2];
    let measured = load::run(
        server.addr,
        load,
        cpu_window(server.pid(), &at.cpus, &mut probes),
    )?;
    if !server.alive() {
        return Err(std::io::Error::other("server exited during the run"));
    }
    drop(server);
    Ok(sample(&measured, &probes, at.cpus.len()))
}

/// Starts `peer` with `args`, runs the idle case on it, and kills it.
fn run_idle(
    peer: &Peer,
    args: &[String],
    load: IdleLoad,
    at: &Placement,
) -> std::io::Result<IdleSample> {
    let mut server = Server::start(peer.command(args), at.server, STARTUP)?;
    let pid = server.pid();
    let mut probes = [Probe::default(); 2];
    let measured = idle::run(
        server.addr,
        pid,
        load,
        cpu_window(pid, &at.cpus, &mut probes),
    )?;
    if !server.alive() {
        return Err(std::io::Error::other("server exited during the run"));
    }
    drop(server);
    Ok(IdleSample {
        conns: load.conns,
        rss_before: measured.rss_before,
        rss_open: measured.rss_open,
        rss_after: measured.rss_after,
        open_s: measured.open_time.as_secs_f64(),
        closed: measured.closed,
        active: sample(&measured.active, &probes, at.cpus.len()),
    })
}

/// Starts `peer`, counts its system calls over one client run, and kills
/// it.
fn run_syscalls(
    peer: &Peer,
    tool: Tool,
    conns: usize,
    msg: usize,
    secs: f64,
    at: &Placement,
    scratch: &Path,
) -> std::io::Result<SyscallSample> {
    let mut server = Server::start(peer.command(&peer.args), at.server, STARTUP)?;
    let counted = syscalls::count(tool, server.pid(), server.addr, conns, msg, secs, scratch)?;
    if !server.alive() {
        return Err(std::io::Error::other("server exited during the run"));
    }
    drop(server);
    Ok(SyscallSample {
        round_trips: counted.round_trips,
        rt_per_s: counted.round_trips as f64 / counted.elapsed.as_secs_f64().max(1e-9),
        counts: counted.counts,
    })
}
