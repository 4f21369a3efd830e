//! The few operating-system calls the comparison needs: CPU affinity, a
//! process's CPU time from `/proc`, and a child process that is always
//! killed.

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

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

/// Pins the thread (or process main thread) `tid` to `cpu`; `0` is the
/// calling thread.
pub(crate) fn pin(tid: libc::pid_t, cpu: usize) -> io::Result<()> {
    // SAFETY: `cpu_set_t` is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the caller's `cpu` comes from `allowed_cpus`, below `CPU_SETSIZE`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Pins every thread of process `pid` to `cpu`. Threads the process starts
/// later inherit the affinity of the thread that starts them.
pub(crate) fn pin_process(pid: u32, cpu: usize) -> io::Result<()> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))?;
    for task in tasks {
        let name = task?.file_name();
        if let Some(tid) = name.to_str().and_then(|s| s.parse::<libc::pid_t>().ok()) {
            // A thread may exit between the listing and the call.
            match pin(tid, cpu) {
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                other => other?,
            }
        }
    }
    Ok(())
}

/// User plus system CPU time of process `pid` (all its threads), from
/// fields 14 and 15 of `/proc/<pid>/stat`.
pub(crate) fn cpu_time(pid: u32) -> io::Result<Duration> {
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

/// A server process under test. Dropping it kills the process and reaps
/// it, so no server outlives its run, even when the run panics.
#[derive(Debug)]
pub(crate) struct Server {
    child: Reaped,
    /// Kept open so that a server that logs to stdout never blocks on a
    /// full pipe; what it writes after the first line is never read.
    _stdout: BufReader<ChildStdout>,
    pub(crate) addr: SocketAddr,
}

impl Server {
    /// Starts `command`, pins it to `cpu` and waits at most `wait` for its
    /// first stdout line, `listening on ADDR`.
    ///
    /// The child is also asked to die with this process (`PR_SET_PDEATHSIG`),
    /// which covers an orchestrator killed by a signal, where no `Drop` runs.
    pub(crate) fn start(
        mut command: Command,
        cpu: Option<usize>,
        wait: Duration,
    ) -> io::Result<Server> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: the closure runs between fork and exec and calls only
        // `prctl`, which is async-signal-safe; it allocates nothing.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // From here on, every early return kills and reaps the child.
        let mut child = Reaped(command.spawn()?);
        if let Some(cpu) = cpu {
            pin_process(child.0.id(), cpu)?;
        }
        let stdout = child.0.stdout.take().expect("stdout is piped");
        let (addr, stdout) = read_listening(stdout, wait)?;
        if let Some(cpu) = cpu {
            // Threads started before the first pin (a runtime's, say).
            pin_process(child.0.id(), cpu)?;
        }
        Ok(Server {
            child,
            _stdout: stdout,
            addr,
        })
    }

    /// The process id, for `/proc`.
    pub(crate) fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Whether the process is still running.
    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.0.try_wait(), Ok(None))
    }
}

/// A child process that is killed and reaped when dropped.
#[derive(Debug)]
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads the first line of a server's stdout, bounded by `wait`, on a
/// short-lived thread so that a silent server cannot hang the run.
fn read_listening(
    stdout: ChildStdout,
    wait: Duration,
) -> io::Result<(SocketAddr, BufReader<ChildStdout>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let result = reader.read_line(&mut line).map(|_| (line, reader));
        let _ = tx.send(result);
    });
    let (line, reader) = rx
        .recv_timeout(wait)
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "server printed no line in time"))??;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| io::Error::other(format!("unexpected first line from server: {line:?}")))?;
    Ok((addr, reader))
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
