//! The few operating-system calls the comparison needs: CPU affinity, a
//! process's CPU time and resident memory from `/proc`, the descriptor
//! limit, a server child process that is always killed, and a command run
//! with a time limit.

use std::io;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../common/sys.rs"]
mod shared;

pub(crate) use shared::{allowed_cpus, output_within, pin, raise_nofile, with_watchdog, Server};

/// CPU time process `pid` has used so far, all its threads, in nanoseconds
/// where the kernel can tell.
///
/// The sum over `/proc/<pid>/task/*/schedstat` (time on the CPU, in ns) is
/// exact, where `/proc/<pid>/stat` counts clock ticks of 10 ms, 0.5% of a
/// 2 s window; that falls back on `stat` where `schedstat` is missing. A
/// thread that exits inside the window takes its time along, which none of
/// the servers does.
pub(crate) fn process_cpu(pid: u32) -> io::Result<Duration> {
    match schedstat_cpu(pid) {
        Ok(cpu) => Ok(cpu),
        Err(_) => shared::process_cpu(pid),
    }
}

fn schedstat_cpu(pid: u32) -> io::Result<Duration> {
    let mut total = 0u64;
    let mut tasks = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread may exit between the listing and the read.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let ns: u64 = text
            .split_whitespace()
            .next()
            .and_then(|field| field.parse().ok())
            .ok_or_else(|| io::Error::other(format!("malformed {}", path.display())))?;
        total += ns;
        tasks += 1;
    }
    if tasks == 0 {
        return Err(io::Error::other("no task has a schedstat"));
    }
    Ok(Duration::from_nanos(total))
}

/// User CPU time of process `pid`, all its threads: field 14 of
/// `/proc/<pid>/stat`, in clock ticks (10 ms; 0.5% of a 2 s window).
pub(crate) fn user_cpu(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces, so
    // count fields from the last ')': field 3 is the first after it.
    let ticks: u64 = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().nth(11))
        .and_then(|field| field.parse().ok())
        .ok_or_else(|| io::Error::other("malformed /proc stat"))?;
    Ok(ticks_to_duration(ticks))
}

/// Time `cpus` spent not idle (user, nice, system, irq, softirq and steal,
/// from `/proc/stat`), in clock ticks. With the CPU time of the server and
/// of the generator taken away, what is left went to other processes (or,
/// as steal, to the host): the interference a run suffered.
pub(crate) fn cpus_busy(cpus: &[usize]) -> io::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let mut ticks = 0u64;
    for line in stat.lines() {
        let mut fields = line.split_whitespace();
        let Some(cpu) = fields
            .next()
            .and_then(|name| name.strip_prefix("cpu"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if !cpus.contains(&cpu) {
            continue;
        }
        let values: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal guest guest_nice;
        // guest time is already part of user.
        for index in [0, 1, 2, 5, 6, 7] {
            ticks += values.get(index).copied().unwrap_or(0);
        }
    }
    Ok(ticks_to_duration(ticks))
}

/// Waits, at most `max`, until `cpus` are all but idle: less than `limit`
/// of their time busy over a sample of 200 ms. Returns how long it waited.
/// Called between runs, when no process of the bench is running, so that
/// a run starts on quiet CPUs.
pub(crate) fn wait_quiet(cpus: &[usize], limit: f64, max: Duration) -> Duration {
    const SAMPLE: Duration = Duration::from_millis(200);
    let start = Instant::now();
    loop {
        let Ok(before) = cpus_busy(cpus) else {
            return start.elapsed();
        };
        std::thread::sleep(SAMPLE);
        let Ok(after) = cpus_busy(cpus) else {
            return start.elapsed();
        };
        let busy = after.saturating_sub(before).as_secs_f64()
            / (SAMPLE.as_secs_f64() * cpus.len().max(1) as f64);
        if busy < limit || start.elapsed() >= max {
            return start.elapsed();
        }
    }
}

fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: `sysconf` only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / hz)
}

/// Resident memory of process `pid` in bytes: `VmRSS` of
/// `/proc/<pid>/status`.
pub(crate) fn vm_rss(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| io::Error::other(format!("no VmRSS in /proc/{pid}/status")))
}

/// Runs `command` to completion, killing it after `limit`.
pub(crate) fn run_bounded(
    mut command: Command,
    limit: Duration,
) -> io::Result<std::process::ExitStatus> {
    let mut child = command.spawn()?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "command ran too long",
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
