//! The operating-system calls the comparison needs: CPU affinity, CPU time
//! (this process's from `getrusage`, a child's from `/proc`), the
//! descriptor limit, this process's open descriptors and threads, and a
//! server child process that never outlives a run.

use std::io;
use std::time::Duration;

#[path = "../common/sys.rs"]
mod shared;

use shared::process_cpu;
pub(crate) use shared::{allowed_cpus, output_within, pin, raise_nofile, Server};

/// User plus system CPU time of this process, all threads, from
/// `getrusage(RUSAGE_SELF)` (microsecond resolution).
pub(crate) fn self_cpu() -> Duration {
    // SAFETY: `rusage` is plain data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// Entries of a `/proc/self` directory (`fd`, `task`). The directory's own
/// descriptor, open while it is read, is among the `fd` entries: every
/// count has it, so differences do not.
fn proc_entries(dir: &str) -> io::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(format!("/proc/self/{dir}"))? {
        entry?;
        n += 1;
    }
    Ok(n)
}

/// Descriptors this process has open now.
pub(crate) fn open_fds() -> io::Result<usize> {
    proc_entries("fd")
}

/// Threads of this process now, main thread included.
pub(crate) fn thread_count() -> io::Result<usize> {
    proc_entries("task")
}

/// [`open_fds`] once it has stopped changing (two reads `SETTLE_STEP`
/// apart agree, within `SETTLE_LIMIT`): a socket of the run before may
/// still be closing, and counted, it would be charged to this run.
pub(crate) fn settled_fds() -> io::Result<usize> {
    const SETTLE_STEP: Duration = Duration::from_millis(10);
    const SETTLE_LIMIT: usize = 100;
    let mut last = open_fds()?;
    for _ in 0..SETTLE_LIMIT {
        std::thread::sleep(SETTLE_STEP);
        let now = open_fds()?;
        if now == last {
            break;
        }
        last = now;
    }
    Ok(last)
}

impl Server {
    /// CPU time the server has used so far; zero if `/proc` cannot tell.
    pub(crate) fn cpu(&self) -> Duration {
        process_cpu(self.pid()).unwrap_or_default()
    }
}

/// The kernel release, for the report.
pub(crate) fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}
