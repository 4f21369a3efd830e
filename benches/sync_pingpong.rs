//! Blocking ping-pong clients side by side: `ontime::sync` in timeout mode
//! against `std::net` with socket timeouts and CPython's `socket` in
//! timeout mode, all against one std echo server; the accuracy of many
//! timeouts at once; and how wake-ups scale when the waiting threads
//! outnumber the cores many times over.
//!
//! ```text
//! cargo bench --bench sync_pingpong                      # about 4 minutes
//! SYNC_ROUNDS=3 SYNC_RTTS=5000 SYNC_SECS=1 cargo bench --bench sync_pingpong
//! SYNC_PARTS=d cargo bench --bench sync_pingpong         # only the timeouts
//! SYNC_PARTS=e SYNC_CROWD=64,512,2048 cargo bench --bench sync_pingpong
//! SYNC_PARTS=f SYNC_POOL=16x256 cargo bench --bench sync_pingpong
//! ```
//!
//! The server is std's blocking thread-per-connection echo server, run as a
//! child process (`sync_pingpong serve`, this same binary) pinned to the
//! first allowed CPU; every client runs in this process (or, for CPython, a
//! child of it) pinned to the second. Both sides set `TCP_NODELAY`. The
//! cases:
//!
//! - **a.** One connection, 64-byte messages: `SYNC_WARMUP` round trips
//!   (default 2000), then `SYNC_RTTS` (default 20000) timed one by one into
//!   an HDR histogram. The facade (`create_connection` with a 5 s timeout;
//!   `send_all` + `recv_exact`) and std (`set_read_timeout(5 s)`;
//!   `write_all` + `read_exact`) alternate for `SYNC_ROUNDS` rounds
//!   (default 7); the report gives per peer the median over rounds of p50
//!   and p99, and the median of the per-round ratios facade / std.
//! - **b.** `SYNC_THREADS` (default 64) client threads, each with its own
//!   connection, ping-pong at once: 0.5 s warm-up, then `SYNC_SECS`
//!   (default 2) seconds counted; aggregate round trips per second and
//!   client CPU per round trip, rounds interleaved as in a, the median of
//!   the per-round ratios facade / std. At the middle of the counted window
//!   a census of the client process: its threads and open descriptors
//!   (`/proc/self/task`, `/proc/self/fd`) beyond those it had before the
//!   run's sockets were opened, the descriptors also less one per
//!   connection. So for std they are the client threads and 0; for the
//!   facade, the descriptors and threads its driver adds (its one-time
//!   ones in the run that creates it), reported per waiting thread.
//! - **c.** CPython (`benches/py_pingpong.py`, `settimeout(5)`, `sendall` and
//!   a `recv` loop) as a third peer in the rounds of a; skipped with a
//!   message if `python3` (or `SYNC_PYTHON`) cannot be run.
//! - **d.** `SYNC_IDLE` (default 1000) threads each blocked in `recv` on its
//!   own idle connection, with timeouts drawn from 50-500 ms by a seeded
//!   xorshift; lateness (elapsed - timeout) percentiles and the count that
//!   fired early, which must be zero. Facade and std alternate for
//!   `SYNC_IDLE_ROUNDS` rounds (default 3), samples pooled.
//! - **e.** A crowd: case b's run (same code, census included) for each
//!   thread count of `SYNC_CROWD`, a comma-separated list (default
//!   `64,512`; 512 threads on the one client CPU), with CPython as a third
//!   peer (`benches/py_pingpong.py crowd`: as many `threading` threads, each
//!   with its own connection, the same warm-up and window, its census from
//!   its own `/proc/self`; skipped with a message if it cannot be run).
//!   Per size, `SYNC_ROUNDS` rounds interleaved facade, std, CPython; the
//!   median of the per-round ratios facade / std and CPython / facade; and,
//!   from the smallest size to the largest, how each peer's round trips per
//!   second, CPU per round trip and descriptors per thread change.
//! - **f.** A pool: `SYNC_POOL` (default `32x64`) worker threads share that
//!   many connections through one queue; a worker takes the connection at
//!   its head, makes one round trip and puts it back at the tail, so each
//!   connection goes from thread to thread. Case b's warm-up, window,
//!   census (per worker) and rounds, facade against std. It measures what
//!   a socket waited on by one thread after another costs the facade,
//!   whose reactors are per thread.
//!
//! Client CPU time per round trip comes from `getrusage(RUSAGE_SELF)` around
//! the counted part; server CPU time from `/proc/<pid>/stat` (clock ticks,
//! so coarse for short runs). The report is printed as markdown and written
//! to `<target dir>/ontime-bench/sync.md`.
//!
//! `SYNC_PARTS` (default `abcdef`) picks the cases (c runs inside the rounds
//! of a, so it brings a with it). `SYNC_PYTHON` (default `python3`) is the
//! CPython of cases c and e. The descriptor limit is raised for the largest
//! of `SYNC_IDLE`, `SYNC_THREADS` and `SYNC_CROWD` (four per connection,
//! plus spare), before the server starts, so that it inherits it; the
//! server's connection threads have 64 KiB stacks. Without `--bench` (as
//! `cargo test --benches` runs it) every case runs once, tiny (case e with
//! 8 threads and a 0.1 s window), as a check that the clients and the
//! server work, and no report is written; only `SYNC_PARTS` and
//! `SYNC_PYTHON` are read then.

#[path = "sync_pingpong/clients.rs"]
mod clients;
#[path = "sync_pingpong/report.rs"]
mod report;
#[path = "sync_pingpong/server.rs"]
mod server;
#[path = "sync_pingpong/sys.rs"]
mod sys;
#[path = "sync_pingpong/timeouts.rs"]
mod timeouts;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use crate::clients::{Client, Shape};
use crate::report::{
    AccuracyRows, LatencyRounds, Results, Setup, ThroughputCase, ThroughputRounds,
};
use crate::sys::Server;
use crate::timeouts::Accuracy;

/// The CPython client, run with `python3 -c`.
const PY_SCRIPT: &str = include_str!("py_pingpong.py");
/// Message size of every ping-pong.
const SIZE: usize = 64;
/// How long the server may take to print its address.
const STARTUP: Duration = Duration::from_secs(10);
/// Seed of the timeouts of case d (each round adds its number).
const SEED: u64 = 0x9E37_79B9_7F4A_7C15;
/// Range of the timeouts of case d.
const IDLE_LOW: Duration = Duration::from_millis(50);
const IDLE_HIGH: Duration = Duration::from_millis(500);
/// Warm-up of each throughput run.
const MANY_WARMUP: Duration = Duration::from_millis(500);
/// Descriptors wanted per connection open at once, and besides.
const NOFILE_PER_CONNECTION: u64 = 4;
const NOFILE_SPARE: u64 = 256;
/// The CPython peer's name in the reports.
const PY_NAME: &str = "CPython socket, settimeout(5)";

/// What to run, from the environment.
#[derive(Debug)]
struct Settings {
    rounds: usize,
    warmup: u64,
    rtts: u64,
    threads: usize,
    crowd: Vec<usize>,
    /// Case f: workers, connections.
    pool: (usize, usize),
    window: Duration,
    many_warmup: Duration,
    idle: usize,
    idle_rounds: usize,
    parts: String,
    python: PathBuf,
}

impl Settings {
    fn from_env(full: bool) -> Result<Settings, String> {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
            match std::env::var(name) {
                Ok(text) => text
                    .trim()
                    .parse()
                    .map_err(|_| format!("{name}={text:?} is not valid")),
                Err(_) => Ok(default),
            }
        }
        /// A comma-separated list of counts, each kept once, ascending.
        fn list(name: &str, default: &[usize]) -> Result<Vec<usize>, String> {
            let mut values = match std::env::var(name) {
                Ok(text) => text
                    .split(',')
                    .map(|v| v.trim().parse::<usize>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| {
                        format!("{name}={text:?} is not a comma-separated list of counts")
                    })?,
                Err(_) => default.to_vec(),
            };
            values.sort_unstable();
            values.dedup();
            if values.is_empty() {
                return Err(format!("{name} is empty"));
            }
            Ok(values)
        }
        /// `WORKERSxCONNECTIONS`.
        fn pool(name: &str, default: (usize, usize)) -> Result<(usize, usize), String> {
            let Ok(text) = std::env::var(name) else {
                return Ok(default);
            };
            let parsed = text.trim().split_once('x').and_then(|(w, c)| {
                Some((
                    w.trim().parse::<usize>().ok()?,
                    c.trim().parse::<usize>().ok()?,
                ))
            });
            parsed.ok_or_else(|| format!("{name}={text:?} is not WORKERSxCONNECTIONS"))
        }
        let settings = if full {
            Settings {
                rounds: var("SYNC_ROUNDS", 7)?,
                warmup: var("SYNC_WARMUP", 2000)?,
                rtts: var("SYNC_RTTS", 20_000)?,
                threads: var("SYNC_THREADS", 64)?,
                crowd: list("SYNC_CROWD", &[64, 512])?,
                pool: pool("SYNC_POOL", (32, 64))?,
                window: Duration::from_secs_f64(var("SYNC_SECS", 2.0)?),
                many_warmup: MANY_WARMUP,
                idle: var("SYNC_IDLE", 1000)?,
                idle_rounds: var("SYNC_IDLE_ROUNDS", 3)?,
                parts: var("SYNC_PARTS", "abcdef".to_string())?,
                python: var("SYNC_PYTHON", PathBuf::from("python3"))?,
            }
        } else {
            // A check that everything works, not a measurement.
            Settings {
                rounds: 1,
                warmup: 20,
                rtts: 200,
                threads: 4,
                crowd: vec![8],
                pool: (2, 4),
                window: Duration::from_millis(100),
                many_warmup: Duration::from_millis(20),
                idle: 20,
                idle_rounds: 1,
                parts: var("SYNC_PARTS", "abcdef".to_string())?,
                python: var("SYNC_PYTHON", PathBuf::from("python3"))?,
            }
        };
        let bounded = |name: &str, value: u64, max: u64| {
            if value == 0 || value > max {
                Err(format!("{name}={value} is not in 1..={max}"))
            } else {
                Ok(())
            }
        };
        bounded("SYNC_ROUNDS", settings.rounds as u64, 101)?;
        bounded("SYNC_RTTS", settings.rtts, 10_000_000)?;
        bounded("SYNC_THREADS", settings.threads as u64, 4096)?;
        for &crowd in &settings.crowd {
            bounded("SYNC_CROWD", crowd as u64, 4096)?;
        }
        bounded("SYNC_POOL workers", settings.pool.0 as u64, 4096)?;
        bounded("SYNC_POOL connections", settings.pool.1 as u64, 4096)?;
        bounded("SYNC_IDLE", settings.idle as u64, 20_000)?;
        bounded("SYNC_IDLE_ROUNDS", settings.idle_rounds as u64, 101)?;
        if settings.warmup > 10_000_000 {
            return Err("SYNC_WARMUP is above 10000000".into());
        }
        if !(0.01..=600.0).contains(&settings.window.as_secs_f64()) {
            return Err("SYNC_SECS is not in 0.01..=600".into());
        }
        if let Some(c) = settings.parts.chars().find(|c| !"abcdef".contains(*c)) {
            return Err(format!(
                "SYNC_PARTS: unknown case {c:?} (use letters of abcdef)"
            ));
        }
        Ok(settings)
    }

    fn runs(&self, part: char) -> bool {
        self.parts.contains(part)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        return match server::serve() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sync_pingpong serve: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let full = args.iter().any(|a| a == "--bench");
    let settings = match Settings::from_env(full) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("sync_pingpong: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&settings, full) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sync_pingpong: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(settings: &Settings, full: bool) -> std::io::Result<()> {
    let started = Instant::now();
    let mut setup = Vec::new();

    let cpus = sys::allowed_cpus();
    let (server_cpu, client_cpu) = match cpus.as_slice() {
        [server, client, ..] => (Some(*server), Some(*client)),
        _ => (None, None),
    };
    match client_cpu {
        // Pinned before any thread or child starts, so all inherit it.
        Some(cpu) => {
            sys::pin(0, cpu)?;
            setup.push(format!(
                "Server pinned to CPU {}, clients (this process's threads, CPython) to CPU {cpu}; {} CPUs allowed.",
                server_cpu.unwrap_or(0),
                cpus.len()
            ));
        }
        None => setup.push(format!("Not pinned: only {} CPU allowed.", cpus.len())),
    }
    // The most connections open at once, in this process and in the server
    // (which inherits the limit); the spare factor covers what a client side
    // adds per connection (the census of cases b and e says how much).
    let crowd = settings.crowd.iter().copied().max().unwrap_or(0);
    let most = settings
        .idle
        .max(settings.threads)
        .max(crowd)
        .max(settings.pool.1) as u64;
    let want = NOFILE_PER_CONNECTION * most + NOFILE_SPARE;
    match sys::raise_nofile(want) {
        Ok(limit) if limit < want => setup.push(format!(
            "RLIMIT_NOFILE is {limit}, below the {want} wanted: cases d and e may fail."
        )),
        Ok(_) => {}
        Err(e) => setup.push(format!("Could not raise RLIMIT_NOFILE: {e}.")),
    }
    setup.push(format!(
        "Kernel {}; {}.",
        sys::kernel(),
        if full {
            "full run"
        } else {
            "quick check (no --bench)"
        }
    ));

    let mut command = Command::new(std::env::current_exe()?);
    command.arg("serve");
    let mut server = Server::start(command, server_cpu, STARTUP)?;
    setup.push(format!(
        "Server: std thread-per-connection blocking echo (`sync_pingpong serve`, pid {}), TCP_NODELAY, on {}.",
        server.pid(),
        server.addr
    ));

    let mut results = Results::default();

    // CPython is looked for once, for the cases that run it.
    let python = if settings.runs('c') || settings.runs('e') {
        match python_version(&settings.python) {
            Ok(version) => {
                setup.push(format!(
                    "CPython {version} (`{}`).",
                    settings.python.display()
                ));
                Ok(settings.python.as_path())
            }
            Err(e) => {
                let note = format!("`{}` could not be run ({e})", settings.python.display());
                eprintln!("sync_pingpong: {note}");
                Err(note)
            }
        }
    } else {
        Err("not asked for".to_string())
    };

    let python = python.as_ref().map(|p| *p).map_err(String::as_str);
    if settings.runs('a') || settings.runs('c') {
        latency_case(settings, &server, python, &mut results);
    }
    if settings.runs('b') {
        throughput_case(settings, &server, &mut results);
    }
    if settings.runs('d') {
        accuracy_case(settings, &server, &mut results);
    }
    if settings.runs('e') {
        crowd_case(settings, &server, python, &mut results);
    }
    if settings.runs('f') {
        pool_case(settings, &server, &mut results);
    }
    if !server.alive() {
        setup.push(
            "**The server process died during the run: results after that are errors.**".into(),
        );
    }
    drop(server);

    setup.push(format!(
        "Whole run: {:.0} s.",
        started.elapsed().as_secs_f64()
    ));
    let (markdown, warnings) = report::markdown(&Setup { lines: setup }, &results);
    println!("\n{markdown}");
    if full {
        let path = write_report(&markdown)?;
        println!("written to {}", path.display());
    } else {
        // A check must not overwrite the report of a real run.
        println!("quick check: report not written (run `cargo bench --bench sync_pingpong`)");
    }
    for warning in &warnings {
        eprintln!("sync_pingpong: WARNING: {warning}");
    }
    Ok(())
}

/// Cases a and c: one connection per run, rounds interleaved. `python` is
/// CPython's path, or why it cannot be run.
fn latency_case(
    settings: &Settings,
    server: &Server,
    python: Result<&Path, &str>,
    results: &mut Results,
) {
    // CPython is compared with the facade in the same rounds, so case c
    // brings case a with it.
    let mut peers: Vec<LatencyRounds> = Client::ALL
        .iter()
        .map(|client| LatencyRounds {
            name: client.name().to_string(),
            runs: Vec::new(),
        })
        .collect();
    let python = if settings.runs('c') {
        match python {
            Ok(python) => {
                results.python_note = Some(
                    "Its latencies are measured inside the interpreter with \
                     `time.perf_counter_ns`, its CPU time with `resource.getrusage`; server CPU \
                     includes its warm-up."
                        .to_string(),
                );
                peers.push(LatencyRounds {
                    name: PY_NAME.to_string(),
                    runs: Vec::new(),
                });
                Some(python)
            }
            Err(note) => {
                results.python_note = Some(format!("{note}; case c skipped."));
                None
            }
        }
    } else {
        None
    };
    eprintln!(
        "case a{}: 1 connection, {SIZE} B, {} round trips after {} warm-up, {} rounds",
        if python.is_some() { "+c" } else { "" },
        settings.rtts,
        settings.warmup,
        settings.rounds
    );
    for round in 0..settings.rounds {
        for (peer, client) in peers.iter_mut().zip(Client::ALL) {
            let run = clients::one_connection(client, server, SIZE, settings.warmup, settings.rtts);
            log_latency(round, &peer.name, &run);
            peer.runs.push(run.ok());
        }
        if let (Some(python), Some(peer)) = (python, peers.get_mut(Client::ALL.len())) {
            let run = clients::python(
                python,
                PY_SCRIPT,
                server,
                SIZE,
                settings.warmup,
                settings.rtts,
            );
            log_latency(round, &peer.name, &run);
            peer.runs.push(run.ok());
        }
    }
    results.latency_head = format!(
        "One connection, {SIZE}-byte messages, {} round trips per run after {} warm-up, \
         {} rounds interleaved (facade, std{}); medians over rounds.",
        settings.rtts,
        settings.warmup,
        settings.rounds,
        if python.is_some() { ", CPython" } else { "" }
    );
    results.latency = peers;
}

fn log_latency(round: usize, name: &str, run: &std::io::Result<clients::Latency>) {
    match run {
        Ok(l) => eprintln!(
            "  round {round} {name:<32} p50 {:>7.1} us  p99 {:>7.1} us  {:>8.0} rt/s  cpu {:>5.2} us/rt",
            l.p50.as_secs_f64() * 1e6,
            l.p99.as_secs_f64() * 1e6,
            l.rtts_per_sec,
            l.client_cpu.as_secs_f64() * 1e6
        ),
        Err(e) => eprintln!("  round {round} {name:<32} FAILED: {e}"),
    }
}

/// Cases b, e and f: the threads and connections of `shape` at once;
/// facade, std and (if `python`, which runs only the shape of one
/// connection per thread) CPython in turn, rounds interleaved.
fn throughput_rounds(
    settings: &Settings,
    server: &Server,
    case: char,
    shape: Shape,
    python: Option<&Path>,
) -> ThroughputCase {
    let threads = shape.threads();
    let shared = matches!(shape, Shape::Pool { .. }).then(|| shape.connections());
    eprintln!(
        "case {case}: {threads} threads, {} connections, {SIZE} B, {:?} warm-up + {:?} counted, {} rounds",
        shape.connections(),
        settings.many_warmup,
        settings.window,
        settings.rounds
    );
    let mut peers: Vec<ThroughputRounds> = Client::ALL
        .iter()
        .map(|c| c.name())
        .chain(python.map(|_| PY_NAME))
        .map(|name| ThroughputRounds {
            name: name.to_string(),
            runs: Vec::new(),
        })
        .collect();
    for round in 0..settings.rounds {
        for (peer, client) in peers.iter_mut().zip(Client::ALL) {
            let run = clients::many_connections(
                client,
                server,
                SIZE,
                shape,
                settings.many_warmup,
                settings.window,
            );
            log_throughput(round, &peer.name, &run);
            peer.runs.push(run.ok());
        }
        if let (Some(python), Some(peer)) = (python, peers.get_mut(Client::ALL.len())) {
            let run = clients::python_crowd(
                python,
                PY_SCRIPT,
                server,
                SIZE,
                threads,
                settings.many_warmup,
                settings.window,
            );
            log_throughput(round, &peer.name, &run);
            peer.runs.push(run.ok());
        }
    }
    ThroughputCase {
        threads,
        shared,
        peers,
    }
}

fn log_throughput(round: usize, name: &str, run: &std::io::Result<clients::Throughput>) {
    let show = |v: Option<i64>| v.map_or("?".to_string(), |v| format!("{v:+}"));
    match run {
        Ok(t) => eprintln!(
            "  round {round} {name:<32} {:>9.0} rt/s  cpu {:>5.2} us/rt  {} threads  {} fds beyond sockets",
            t.rtts_per_sec,
            t.client_cpu.as_secs_f64() * 1e6,
            show(t.added_threads),
            show(t.extra_fds)
        ),
        Err(e) => eprintln!("  round {round} {name:<32} FAILED: {e}"),
    }
}

/// What cases b and e say of how they count.
fn throughput_head(settings: &Settings, threads: &str, peers: &str) -> String {
    format!(
        "{threads} client threads, each with its own connection, {SIZE}-byte closed-loop \
         ping-pong, all at once; {} s warm-up then {} s counted per run; {} rounds \
         interleaved ({peers}); medians over rounds. Census at the middle of the counted window: \
         the client process's threads and open descriptors (`/proc/self/task`, `/proc/self/fd`) \
         minus those before the run's sockets were opened; \"descriptors beyond sockets\" \
         subtracts one per connection too, so it is what the client side adds on its own (0 for \
         std; for the facade, what its driver adds, including its one-time descriptors in the \
         run that creates it, which the median over rounds outvotes).",
        settings.many_warmup.as_secs_f64(),
        settings.window.as_secs_f64(),
        settings.rounds
    )
}

/// Case b: many threads at once, rounds interleaved.
fn throughput_case(settings: &Settings, server: &Server, results: &mut Results) {
    let shape = Shape::Own {
        threads: settings.threads,
    };
    let case = throughput_rounds(settings, server, 'b', shape, None);
    results.throughput_head =
        throughput_head(settings, &settings.threads.to_string(), "facade, std");
    results.throughput = Some(case);
}

/// Case e: case b's run with each crowd size in turn, CPython too if it
/// can be run.
fn crowd_case(
    settings: &Settings,
    server: &Server,
    python: Result<&Path, &str>,
    results: &mut Results,
) {
    let sizes = settings
        .crowd
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", then ");
    results.crowd_python_note = Some(match python {
        Ok(_) => "CPython runs the same pattern in its own process (`py_pingpong.py crowd`: \
             `threading` threads, `settimeout(5)`, `sendall` and a `recv` loop), its CPU time \
             from `resource.getrusage`, the server's from `/proc/<pid>/stat` over its window, \
             its census from its own `/proc/self`."
            .to_string(),
        Err(note) => format!("CPython skipped: {note}."),
    });
    results.crowd_head = throughput_head(
        settings,
        &sizes,
        if python.is_ok() {
            "facade, std, CPython"
        } else {
            "facade, std"
        },
    );
    for &threads in &settings.crowd {
        let case = throughput_rounds(settings, server, 'e', Shape::Own { threads }, python.ok());
        results.crowd.push(case);
    }
}

/// Case f: a pool of threads sharing connections, rounds interleaved.
fn pool_case(settings: &Settings, server: &Server, results: &mut Results) {
    let (workers, connections) = settings.pool;
    let shape = Shape::Pool {
        workers,
        connections,
    };
    let case = throughput_rounds(settings, server, 'f', shape, None);
    results.pool_head = format!(
        "{workers} worker threads share {connections} connections through one queue (a \
         worker takes the connection at its head, makes one {SIZE}-byte round trip, puts it \
         back at the tail), so each connection is waited on by one thread after another; \
         {} s warm-up then {} s counted per run; {} rounds interleaved (facade, std); medians \
         over rounds. The census is case b's, per worker thread.",
        settings.many_warmup.as_secs_f64(),
        settings.window.as_secs_f64(),
        settings.rounds
    );
    results.pool = Some(case);
}

/// Case d: many timeouts at once.
fn accuracy_case(settings: &Settings, server: &Server, results: &mut Results) {
    eprintln!(
        "case d: {} idle connections, timeouts {:?}..={:?}, {} rounds",
        settings.idle, IDLE_LOW, IDLE_HIGH, settings.idle_rounds
    );
    let mut rows: Vec<AccuracyRows> = Client::ALL
        .iter()
        .map(|client| AccuracyRows {
            name: match client {
                Client::Facade => "ontime::sync recv, timeout mode",
                Client::Std => "std::net read, set_read_timeout",
            }
            .to_string(),
            waits: Accuracy::default(),
        })
        .collect();
    for round in 0..settings.idle_rounds {
        let timeouts =
            timeouts::random_timeouts(settings.idle, IDLE_LOW, IDLE_HIGH, SEED + round as u64);
        for (row, client) in rows.iter_mut().zip(Client::ALL) {
            match timeouts::accuracy(client, server.addr, &timeouts) {
                Ok(waits) => {
                    let worst = waits.lateness.iter().max().copied().unwrap_or_default();
                    eprintln!(
                        "  round {round} {:<32} {} on time or late (max {:.3} ms late), {} early, {} other",
                        row.name,
                        waits.lateness.len(),
                        worst.as_secs_f64() * 1e3,
                        waits.early.len(),
                        waits.errors.len()
                    );
                    row.waits.merge(waits);
                }
                Err(e) => {
                    eprintln!("  round {round} {:<32} FAILED: {e}", row.name);
                    row.waits.errors.push(format!("run failed: {e}"));
                }
            }
        }
    }
    results.accuracy_head = format!(
        "{} threads, each blocked in one `recv` on its own idle connection to the echo server, \
         all released together; timeouts uniform in {}-{} ms (xorshift64, seed {SEED:#x} + round); \
         {} rounds interleaved, samples pooled. Lateness = elapsed - timeout, measured around the \
         call; \"early\" = elapsed < timeout.",
        settings.idle,
        IDLE_LOW.as_millis(),
        IDLE_HIGH.as_millis(),
        settings.idle_rounds
    );
    results.accuracy = rows;
}

/// The version of `python`, or why it cannot be run.
fn python_version(python: &Path) -> std::io::Result<String> {
    let mut command = Command::new(python);
    command.args(["-c", "import platform; print(platform.python_version())"]);
    Ok(sys::output_within(command, Duration::from_secs(30))?
        .trim()
        .to_string())
}

/// Writes the report to `<target dir>/ontime-bench/sync.md`.
fn write_report(markdown: &str) -> std::io::Result<PathBuf> {
    // The bench runs as <target>/<profile>/deps/sync_pingpong-<hash>.
    let exe = std::env::current_exe()?;
    let target = exe.ancestors().nth(3).ok_or_else(|| {
        std::io::Error::other("cannot find the target directory from the executable's path")
    })?;
    let dir = target.join("ontime-bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("sync.md");
    std::fs::write(&path, markdown)?;
    Ok(path)
}
