//! The operating-system calls both comparisons need: CPU affinity, a
//! process's CPU time from `/proc`, the descriptor limit, a server child
//! process that never outlives a run, and a command run with a time limit.

use std::io::{self, BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// The CPUs this process may run on, in ascending order.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable `cpu_set_t` of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below `CPU_SETSIZE`, the capacity of `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Pins the thread `tid` to `cpu`; `0` is the calling thread. Threads it
/// starts later, and processes it forks, inherit the affinity.
///
/// Allocates nothing, so it may run between fork and exec.
pub(crate) fn pin(tid: libc::pid_t, cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: `cpu_set_t` is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` was checked to be below `CPU_SETSIZE`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// User plus system CPU time of process `pid` (all its threads), from
/// fields 14 and 15 of `/proc/<pid>/stat`, in clock ticks (usually 10 ms).
pub(crate) fn process_cpu(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces, so
    // count fields from the last ')': field 3 is the first after it.
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| io::Error::other("malformed /proc stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let parse = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other("malformed /proc stat"))
    };
    // fields[0] is field 3, so field 14 is fields[11].
    let ticks = parse(11)? + parse(12)?;
    // SAFETY: `sysconf` only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Ok(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / hz,
    ))
}

/// The server under test, a child process. Dropping it kills and reaps the
/// process, so no server outlives its run, even when the run panics.
#[derive(Debug)]
pub(crate) struct Server {
    child: Child,
    /// Kept open so that the server never gets `EPIPE` on stdout; what it
    /// writes after the first line is never read.
    _stdout: BufReader<ChildStdout>,
    pub(crate) addr: SocketAddr,
}

impl Server {
    /// Starts `command` pinned to `cpu` and waits at most `wait` for its
    /// first stdout line, `listening on ADDR`.
    ///
    /// The child is pinned before it runs, so every thread it starts
    /// inherits the affinity. It is also asked to die with this process
    /// (`PR_SET_PDEATHSIG`), which covers a bench killed by a signal, where
    /// no `Drop` runs.
    pub(crate) fn start(
        mut command: Command,
        cpu: Option<usize>,
        wait: Duration,
    ) -> io::Result<Server> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: the closure runs between fork and exec and makes only the
        // system calls `prctl` and `sched_setaffinity` (through `pin`),
        // which are async-signal-safe; it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(cpu) = cpu.filter(|&cpu| cpu < libc::CPU_SETSIZE as usize) {
                    pin(0, cpu)?;
                }
                Ok(())
            });
        }
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        match read_listening(stdout, child.id(), wait) {
            Ok((addr, stdout)) => Ok(Server {
                child,
                _stdout: stdout,
                addr,
            }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// The process id, for `/proc`.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the first line, `listening on ADDR`, within `wait`; a watchdog
/// kills the (not yet reaped) child `pid` if it takes longer, which ends
/// the read.
fn read_listening(
    stdout: ChildStdout,
    pid: u32,
    wait: Duration,
) -> io::Result<(SocketAddr, BufReader<ChildStdout>)> {
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    let read = with_watchdog(pid, wait, || reader.read_line(&mut line));
    read?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| {
            io::Error::other(format!("unexpected first line from the server: {line:?}"))
        })?;
    Ok((addr, reader))
}

/// Runs `f` (which waits on child `pid`'s output); if it has not returned
/// after `limit`, kills the child so that its pipes close and `f` returns.
///
/// The child must not have been reaped yet, so its pid cannot have been
/// reused by another process when the watchdog fires.
pub(crate) fn with_watchdog<T>(pid: u32, limit: Duration, f: impl FnOnce() -> T) -> T {
    let (done, fired) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = fired.recv_timeout(limit) {
            eprintln!(
                "{}: child {pid} took longer than {limit:?}; killing it",
                env!("CARGO_CRATE_NAME")
            );
            // SAFETY: `kill` only sends a signal; the pid is our unreaped child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    });
    let result = f();
    drop(done);
    let _ = watchdog.join();
    result
}

/// Runs `command` within `limit` and returns its stdout; a failure is an
/// error. Its stderr goes to the bench's.
pub(crate) fn output_within(mut command: Command, limit: Duration) -> io::Result<String> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = command.spawn()?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut text = String::new();
    let read = with_watchdog(child.id(), limit, || stdout.read_to_string(&mut text));
    let status = child.wait()?;
    read?;
    if !status.success() {
        return Err(io::Error::other(format!("{command:?} failed: {status}")));
    }
    Ok(text)
}

/// Raises the soft limit on open descriptors to at least `want`, or to the
/// hard limit if that is lower, and returns the soft limit in force
/// afterwards. Server processes started later inherit it.
pub(crate) fn raise_nofile(want: u64) -> io::Result<u64> {
    // SAFETY: `rlimit` is plain data; all-zero is a valid value.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `limit` is a valid, writable `rlimit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur >= want as libc::rlim_t {
        return Ok(limit.rlim_cur as u64);
    }
    limit.rlim_cur = limit.rlim_max.min(want as libc::rlim_t);
    // SAFETY: `limit` is a valid `rlimit`; the soft limit is within the hard one.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit.rlim_cur as u64)
}
