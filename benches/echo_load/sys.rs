//! The few operating-system calls the comparison needs: CPU affinity, a
//! process's CPU time from `/proc`, a server child process that is always
//! killed, and a command run with a time limit.

use std::io;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../common/sys.rs"]
mod shared;

pub(crate) use shared::{allowed_cpus, pin, process_cpu, Server};

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
