//! System calls per round trip: counts a server's system calls over one
//! fixed client run, with `perf` where it works and `strace` otherwise.
//!
//! With perf it is `perf stat -e raw_syscalls:sys_enter,syscalls:sys_enter_read,... -p PID
//! -- CLIENT`, which counts exactly over the client's run; the client is
//! this binary again, `echo_load load ADDR CONNS MSG SECS`, the same
//! generator as every other case. The events are the total
//! (`raw_syscalls:sys_enter`) and the calls in [`CALLS`], which an event
//! loop makes, so `other` in the report is whatever else there was. All
//! 360-odd `syscalls:sys_enter_*` take perf about 14 s to set up per run
//! here, against under 2 s for these; `ECHO_SYSCALLS_ALL=1` asks for all
//! of them anyway. perf counts the threads the server has when it
//! attaches, so a server that starts a thread per connection (std) is not
//! counted here.
//!
//! The fallback, `strace -c -f -p PID` started before the client and
//! interrupted after it, follows new threads but stops the server at every
//! call: its counts per round trip still say where the calls go, but the
//! server's batching (events per `epoll_wait`) is not what it is untraced.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::sys;

/// The calls counted one by one: I/O, polling, accepting, timers, locks
/// and memory.
const CALLS: &[&str] = &[
    "read",
    "write",
    "recvfrom",
    "sendto",
    "readv",
    "writev",
    "recvmsg",
    "sendmsg",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_ctl",
    "poll",
    "ppoll",
    "accept",
    "accept4",
    "close",
    "shutdown",
    "setsockopt",
    "getsockopt",
    "getsockname",
    "getpeername",
    "fcntl",
    "ioctl",
    "futex",
    "sched_yield",
    "nanosleep",
    "clock_nanosleep",
    "clock_gettime",
    "timerfd_settime",
    "eventfd2",
    "rt_sigprocmask",
    "mmap",
    "munmap",
    "mprotect",
    "madvise",
    "mremap",
    "brk",
];

/// The name the report gives calls not in [`CALLS`].
pub(crate) const OTHER: &str = "other";

/// How the calls are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tool {
    Perf,
    Strace,
}

impl Tool {
    /// Finds a tool that works here: perf if it can count a system-call
    /// tracepoint (it needs `perf_event_paranoid` low enough, or root, and
    /// tracefs), else strace if it runs. `ECHO_SYSCALLS_TOOL=perf` or
    /// `strace` tries only that one.
    pub(crate) fn detect() -> Option<Tool> {
        let only = std::env::var("ECHO_SYSCALLS_TOOL").ok();
        let wanted = |name: &str| only.as_deref().is_none_or(|only| only == name);
        let works = |mut command: Command| {
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            matches!(sys::run_bounded(command, Duration::from_secs(20)), Ok(s) if s.success())
        };
        let mut perf = Command::new("perf");
        perf.args([
            "stat",
            "-x",
            ",",
            "-e",
            "syscalls:sys_enter_write",
            "--",
            "true",
        ]);
        if wanted("perf") && works(perf) {
            return Some(Tool::Perf);
        }
        let mut strace = Command::new("strace");
        strace.args(["-c", "-o", "/dev/null", "--", "true"]);
        (wanted("strace") && works(strace)).then_some(Tool::Strace)
    }

    /// How the report names it.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Tool::Perf => {
                "`perf stat -e raw_syscalls:sys_enter,syscalls:sys_enter_{read,write,recvfrom,...} -p PID -- CLIENT`"
            }
            Tool::Strace => {
                "`strace -c -f -p PID` (not perf, which was not usable or not asked for; strace stops the server at every call, so its batching differs)"
            }
        }
    }
}

/// What one counted client run gave.
#[derive(Debug)]
pub(crate) struct Counted {
    pub(crate) round_trips: u64,
    pub(crate) elapsed: Duration,
    /// Calls by name, `read` for `syscalls:sys_enter_read`, and [`OTHER`]
    /// for the rest; they add up to every call the server made.
    pub(crate) counts: BTreeMap<String, u64>,
}

/// Counts the system calls of server `pid` while this binary, as a
/// client, drives `addr` with `conns` connections of `msg`-byte messages
/// for `secs`. `scratch` is a directory for the tool's output.
pub(crate) fn count(
    tool: Tool,
    pid: u32,
    addr: SocketAddr,
    conns: usize,
    msg: usize,
    secs: f64,
    scratch: &Path,
) -> io::Result<Counted> {
    let me = std::env::current_exe()?;
    let out = scratch.join(format!("syscalls-{pid}.txt"));
    let client_args = [
        "load".to_string(),
        addr.to_string(),
        conns.to_string(),
        msg.to_string(),
        secs.to_string(),
    ];
    let limit = Duration::from_secs_f64(secs + 30.0);
    let (stdout, text) = match tool {
        Tool::Perf => {
            let events = if std::env::var_os("ECHO_SYSCALLS_ALL").is_some() {
                "raw_syscalls:sys_enter,syscalls:sys_enter_*".to_string()
            } else {
                std::iter::once("raw_syscalls:sys_enter".to_string())
                    .chain(
                        CALLS
                            .iter()
                            .map(|call| format!("syscalls:sys_enter_{call}")),
                    )
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let mut perf = Command::new("perf");
            perf.args(["stat", "-x", ",", "-o"])
                .arg(&out)
                .args(["-e", &events, "-p", &pid.to_string(), "--"])
                .arg(&me)
                .args(&client_args);
            let stdout = sys::output_within(perf, limit)?;
            (stdout, std::fs::read_to_string(&out)?)
        }
        Tool::Strace => {
            let mut strace = Command::new("strace");
            strace
                .args(["-c", "-f", "-q", "-o"])
                .arg(&out)
                .args(["-p", &pid.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut tracer = strace.spawn()?;
            // strace prints nothing when attached with -q; give it time.
            std::thread::sleep(Duration::from_millis(500));
            let mut client = Command::new(&me);
            client.args(&client_args);
            let stdout = sys::output_within(client, limit);
            // SAFETY: `kill` only sends a signal; the pid is our unreaped child.
            unsafe { libc::kill(tracer.id() as libc::pid_t, libc::SIGINT) };
            let status = sys::with_watchdog(tracer.id(), Duration::from_secs(10), || tracer.wait());
            status?;
            (stdout?, std::fs::read_to_string(&out)?)
        }
    };
    let _ = std::fs::remove_file(&out);
    let (round_trips, elapsed) = parse_client(&stdout)?;
    let counts = match tool {
        Tool::Perf => parse_perf(&text),
        Tool::Strace => parse_strace(&text),
    };
    if counts.is_empty() {
        return Err(io::Error::other(format!(
            "no system-call counts in the output of {tool:?}:\n{text}"
        )));
    }
    Ok(Counted {
        round_trips,
        elapsed,
        counts,
    })
}

/// The client's one line: `round_trips N elapsed_s S`.
fn parse_client(stdout: &str) -> io::Result<(u64, Duration)> {
    let line = stdout
        .lines()
        .find(|line| line.starts_with("round_trips "))
        .ok_or_else(|| io::Error::other(format!("no result from the client: {stdout:?}")))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    match fields[..] {
        ["round_trips", n, "elapsed_s", s] => {
            let n = n.parse().map_err(io::Error::other)?;
            let s: f64 = s.parse().map_err(io::Error::other)?;
            Ok((n, Duration::from_secs_f64(s.max(0.0))))
        }
        _ => Err(io::Error::other(format!(
            "malformed client result {line:?}"
        ))),
    }
}

/// `perf stat -x ,` lines: `COUNT,UNIT,EVENT,...`; `<not counted>` and
/// comments are skipped. The total (`raw_syscalls:sys_enter`) less the
/// calls counted one by one is [`OTHER`].
fn parse_perf(text: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    let mut total = None;
    for line in text.lines() {
        let mut fields = line.split(',');
        let (Some(count), Some(_unit), Some(event)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Ok(count) = count.trim().parse::<u64>() else {
            continue;
        };
        let event = event.trim();
        if event == "raw_syscalls:sys_enter" {
            total = Some(count);
        } else if let Some(name) = event.strip_prefix("syscalls:sys_enter_") {
            if count > 0 {
                *counts.entry(name.to_string()).or_insert(0) += count;
            }
        }
    }
    if let Some(total) = total {
        let named: u64 = counts.values().sum();
        if total > named {
            counts.insert(OTHER.to_string(), total - named);
        }
    }
    counts
}

/// `strace -c` table rows: `% time, seconds, usecs/call, calls, [errors,]
/// syscall`; the header, rules and the `total` row are skipped.
fn parse_strace(text: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 5 || fields[0].starts_with('%') || fields[0].starts_with('-') {
            continue;
        }
        let name = fields[fields.len() - 1];
        if name == "total" {
            continue;
        }
        if let Ok(calls) = fields[3].parse::<u64>() {
            *counts.entry(name.to_string()).or_insert(0) += calls;
        }
    }
    counts
}

/// The scratch directory for the tools' output.
pub(crate) fn scratch(target_dir: &Path) -> io::Result<PathBuf> {
    let dir = target_dir.join("ontime-bench").join("tmp");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Checks the two parsers on samples of their tools' output (called from
/// the smoke run).
pub(crate) fn check_parsers() -> io::Result<()> {
    let perf = "# started on Mon\n\n1240,,raw_syscalls:sys_enter,1,100.00,,\n1234,,syscalls:sys_enter_read,100.00,,\n0,,syscalls:sys_enter_open,100.00,,\n<not counted>,,syscalls:sys_enter_x,0,,\n";
    let strace = "% time     seconds  usecs/call     calls    errors syscall\n\
                  ------ ----------- ----------- --------- --------- ----------------\n \
                  60.00    0.000060          30         2           read\n \
                  40.00    0.000040          10         4         1 epoll_wait\n\
                  ------ ----------- ----------- --------- --------- ----------------\n\
                  100.00    0.000100          16         6         1 total\n";
    let want_perf = BTreeMap::from([("read".to_string(), 1234), (OTHER.to_string(), 6)]);
    let want_strace = BTreeMap::from([("read".to_string(), 2), ("epoll_wait".to_string(), 4)]);
    if parse_perf(perf) != want_perf || parse_strace(strace) != want_strace {
        return Err(io::Error::other(format!(
            "parsers: perf {:?}, strace {:?}",
            parse_perf(perf),
            parse_strace(strace)
        )));
    }
    Ok(())
}
