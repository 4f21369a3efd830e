//! Side-by-side echo comparison: ontime's `echo_server` example against a
//! hand-written mio loop (the floor), tokio's current-thread runtime and
//! std's thread-per-connection, all driven by one load generator.
//!
//! ```text
//! cargo bench --bench echo_load                  # about 2 minutes
//! ECHO_SECS=1 ECHO_ROUNDS=7 cargo bench --bench echo_load
//! ```
//!
//! The second form spends about the same time in more, shorter rounds; it
//! is the better choice on a shared machine whose speed shifts between
//! runs, because one shift then moves the median ratio less.
//!
//! Every server is a child process pinned to one CPU; the load generator is
//! this process, pinned to another. For each case (message size x number of
//! connections) the peers run interleaved, A B C D A B C D, for
//! `ECHO_ROUNDS` rounds (default 3); each run warms up for 0.5 s and then
//! counts for `ECHO_SECS` seconds (default 2). Connections are closed-loop
//! ping-pong: send one message, wait for all of it to come back, send the
//! next. The report gives, per peer, the median over rounds of round trips
//! per second, of p50 and p99 round-trip latency, and of server CPU time per
//! round trip (from `/proc/<pid>/stat`, which holds when the generator is
//! the bottleneck), and the median of the per-round ratios against ontime.
//! It is printed as markdown and written to
//! `<target dir>/ontime-bench/echo.md`, with `echo.csv` (the summary) and
//! `echo-rounds.csv` (every run).
//!
//! The same binary serves the peers: `echo_load serve mio|tokio|std`.
//! Without `--bench` (as `cargo test --benches` runs it) it only checks, in
//! well under a second per peer, that the generator and the in-binary peers
//! work.
//!
//! Environment: `ECHO_SECS` (counting seconds per run), `ECHO_ROUNDS`,
//! `ECHO_CONNS` (connections of the many-connection cases, default 50), and
//! `ECHO_IDLE_MS`: if set, a further peer `ontime-idle` runs the example
//! with `--idle-timeout-ms` of that value, which re-arms an I/O deadline in
//! the timer wheel on every `WouldBlock`. `ECHO_BASELINE=PATH` adds a peer
//! `baseline` that runs the echo server binary at PATH with the same flags
//! as `ontime` (say, the example built from an earlier commit, to measure
//! what a change costs side by side). `ECHO_PEERS=ontime,mio` runs only
//! the peers named (ratios need `ontime` among them).

#[path = "echo_load/load.rs"]
mod load;
#[path = "echo_load/report.rs"]
mod report;
#[path = "echo_load/servers.rs"]
mod servers;
#[path = "echo_load/sys.rs"]
mod sys;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::load::Load;
use crate::report::{Case, Sample};
use crate::sys::Server;

/// How long a server may take to print its address.
const STARTUP: Duration = Duration::from_secs(10);
/// Longest the build of ontime's example may take.
const BUILD_LIMIT: Duration = Duration::from_secs(600);
/// Warm-up before each counting window.
const WARMUP: Duration = Duration::from_millis(500);

/// A server under test and how to start it.
#[derive(Debug)]
struct Peer {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
}

impl Peer {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        command
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        let kind = args.get(1).map(String::as_str).unwrap_or("");
        if let Err(e) = servers::serve(kind) {
            eprintln!("echo_load serve {kind}: {e}");
            std::process::exit(1);
        }
        return;
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

/// A quick check that every in-binary peer echoes under the generator.
fn smoke() -> std::io::Result<()> {
    let me = std::env::current_exe()?;
    let load = Load {
        conns: 4,
        msg: 1024,
        warmup: Duration::from_millis(20),
        count: Duration::from_millis(100),
    };
    for kind in servers::KINDS {
        let peer = own_peer(&me, kind);
        let sample = run_one(&peer, load, None)?;
        println!(
            "echo_load smoke: {kind}: {:.0} round trips/s",
            sample.rt_per_s
        );
    }
    println!("echo_load: run with `cargo bench --bench echo_load` for the comparison");
    Ok(())
}

fn own_peer(me: &Path, kind: &'static str) -> Peer {
    Peer {
        name: kind,
        program: me.to_path_buf(),
        args: vec!["serve".into(), kind.into()],
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

fn bench() -> std::io::Result<()> {
    let secs: f64 = env_number("ECHO_SECS", 2.0);
    let count =
        Duration::try_from_secs_f64(secs.clamp(0.1, 60.0)).unwrap_or(Duration::from_secs(2));
    let rounds: usize = env_number("ECHO_ROUNDS", 3usize).clamp(1, 50);
    let conns: usize = env_number("ECHO_CONNS", 50usize).clamp(1, 5000);

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
    let mut peers = Vec::new();
    let idle_ms: u64 = env_number("ECHO_IDLE_MS", 0u64);
    match ontime_example(&profile_dir, &target_dir) {
        Ok(path) => {
            peers.push(Peer {
                name: "ontime",
                program: path.clone(),
                args: vec!["--addr".into(), "127.0.0.1:0".into()],
            });
            if idle_ms > 0 {
                peers.push(Peer {
                    name: "ontime-idle",
                    program: path,
                    args: vec![
                        "--addr".into(),
                        "127.0.0.1:0".into(),
                        "--idle-timeout-ms".into(),
                        idle_ms.to_string(),
                    ],
                });
            }
        }
        Err(e) => eprintln!(
            "echo_load: NOTE: ontime's echo_server example is missing and could not be built ({e}); \
             running the other peers only"
        ),
    }
    if let Some(baseline) = std::env::var_os("ECHO_BASELINE") {
        peers.push(Peer {
            name: "baseline",
            program: PathBuf::from(baseline),
            args: vec!["--addr".into(), "127.0.0.1:0".into()],
        });
    }
    for kind in servers::KINDS {
        peers.push(own_peer(&me, kind));
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

    let cases = [(64, conns), (1024, conns), (64, 1), (1024, 1)];
    let runs = cases.len() * rounds * peers.len();
    let per_run = WARMUP + count + Duration::from_millis(150);
    println!(
        "echo_load: {} peers x {} cases x {rounds} rounds = {runs} runs, about {:.0} s; {pinning}",
        peers.len(),
        cases.len(),
        (per_run * runs as u32).as_secs_f64()
    );

    let started = Instant::now();
    let mut results = Vec::new();
    for (msg, conns) in cases {
        let load = Load {
            conns,
            msg,
            warmup: WARMUP,
            count,
        };
        let mut case = Case::new(msg, conns, peers.iter().map(|p| p.name).collect());
        for round in 0..rounds {
            for (index, peer) in peers.iter().enumerate() {
                let sample = match run_one(peer, load, server_cpu) {
                    Ok(sample) => {
                        println!(
                            "  {msg:>4} B x {conns:>3} conns, round {}/{rounds}, {:<6} {:>9.0} rt/s  p50 {:>7.1} us  p99 {:>7.1} us  cpu {:>5.2} us/rt",
                            round + 1,
                            peer.name,
                            sample.rt_per_s,
                            sample.p50_us,
                            sample.p99_us,
                            sample.cpu_us_per_rt,
                        );
                        Some(sample)
                    }
                    Err(e) => {
                        eprintln!(
                            "  {msg:>4} B x {conns:>3} conns, round {}/{rounds}, {}: FAILED: {e}",
                            round + 1,
                            peer.name
                        );
                        None
                    }
                };
                case.record(round, index, sample);
            }
        }
        results.push(case);
    }

    let settings = report::Settings {
        secs: count.as_secs_f64(),
        warmup: WARMUP.as_secs_f64(),
        rounds,
        pinning,
        buffer: servers::BUF,
        took: started.elapsed().as_secs_f64(),
    };
    let markdown = report::markdown(&results, &settings);
    println!("\n{markdown}");
    let out = target_dir.join("ontime-bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("echo.md"), &markdown)?;
    std::fs::write(out.join("echo.csv"), report::summary_csv(&results))?;
    std::fs::write(out.join("echo-rounds.csv"), report::rounds_csv(&results))?;
    println!("echo_load: wrote {}", out.join("echo.md").display());
    Ok(())
}

/// Builds ontime's `echo_server` example with the bench's own profile and
/// target directory, and returns its path.
///
/// The `bench` profile writes to the same directory as `--release` and
/// shares the dependencies `cargo bench` has just built, so this build is
/// incremental; it also keeps the debug info `[profile.bench]` asks for,
/// which `perf` reads.
fn ontime_example(profile_dir: &Path, target_dir: &Path) -> std::io::Result<PathBuf> {
    let path = profile_dir.join("examples").join("echo_server");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--profile",
            "bench",
            "--example",
            "echo_server",
            "--manifest-path",
        ])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", target_dir);
    println!("echo_load: building ontime's echo_server example");
    let built = match sys::run_bounded(command, BUILD_LIMIT) {
        Ok(status) if status.success() => true,
        Ok(status) => {
            eprintln!("echo_load: building the example failed ({status})");
            false
        }
        Err(e) => {
            eprintln!("echo_load: could not run cargo to build the example: {e}");
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

/// Starts `peer`, drives it with `load`, and kills it.
fn run_one(peer: &Peer, load: Load, cpu: Option<usize>) -> std::io::Result<Sample> {
    let mut server = Server::start(peer.command(), cpu, STARTUP)?;
    let pid = server.pid();
    let mut cpu_start = None;
    let mut cpu_end = None;
    let measured = load::run(server.addr, load, |opening| {
        let now = sys::process_cpu(pid).ok();
        if opening {
            cpu_start = now;
        } else {
            cpu_end = now;
        }
    })?;
    if !server.alive() {
        return Err(std::io::Error::other("server exited during the run"));
    }
    drop(server);
    let round_trips = measured.round_trips.max(1) as f64;
    let cpu_us_per_rt = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64() * 1e6 / round_trips,
        _ => f64::NAN,
    };
    Ok(Sample {
        rt_per_s: measured.round_trips as f64 / measured.elapsed.as_secs_f64().max(1e-9),
        p50_us: measured.latency.value_at_quantile(0.50) as f64 / 1e3,
        p99_us: measured.latency.value_at_quantile(0.99) as f64 / 1e3,
        cpu_us_per_rt,
    })
}
