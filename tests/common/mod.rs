//! What the integration tests share: the watchdog, the timing bounds, the
//! checks on errors, and running one test again in a child process.
//!
//! The bounds are those of the contract in ontime-sync's crate docs: a
//! deadline is never early (`elapsed >= T - 10 ms`) and late by at most
//! `max(1 s, T)`; "promptly" is 250 ms; waits that must succeed get 10 s.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub(crate) mod tcp;

use std::io::{self, ErrorKind, Read};
use std::panic;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Longest any single test may take.
pub(crate) const WATCHDOG: Duration = Duration::from_secs(60);
/// Longest a wait that must succeed may take.
pub(crate) const MUST_SUCCEED: Duration = Duration::from_secs(10);
/// "Promptly", for calls that should not wait at all.
pub(crate) const PROMPTLY: Duration = Duration::from_millis(250);
/// Longest a test run again in a child process may take before it is
/// killed; below [`WATCHDOG`], so that the child never outlives its test.
pub(crate) const CHILD_LIMIT: Duration = Duration::from_secs(30);

/// Polls `done` every few milliseconds until it holds, for at most
/// `limit`; returns whether it held.
pub(crate) fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    for _ in 0..100_000 {
        if done() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        thread::sleep(Duration::from_millis(2));
    }
    false
}

// ---- Running a test --------------------------------------------------------

/// Runs `f` on its own thread (named after the test's) and fails the test
/// if it takes longer than `limit`. A panic in `f` is passed on; otherwise
/// `f`'s value is returned.
pub(crate) fn watchdog<R, F>(limit: Duration, f: F) -> R
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    let (done, finished) = mpsc::channel();
    let body = thread::Builder::new()
        .name(thread::current().name().unwrap_or("test").to_owned())
        .spawn(move || {
            let value = f();
            let _ = done.send(());
            value
        })
        .expect("spawning the test body");
    match finished.recv_timeout(limit) {
        Ok(()) | Err(RecvTimeoutError::Disconnected) => match body.join() {
            Ok(value) => value,
            Err(payload) => panic::resume_unwind(payload),
        },
        Err(RecvTimeoutError::Timeout) => {
            panic!("watchdog: the test took longer than {limit:?}")
        }
    }
}

/// Runs `body` in a child process that runs only the test `name`, and checks
/// that the child passed. In that child, marked by the environment variable
/// `env` set to `name`, it runs `body` directly. For tests that change
/// process-wide state.
pub(crate) fn in_child(env: &str, name: &str, body: impl FnOnce()) {
    if is_child(env, name) {
        body();
    } else {
        run_child(env, name);
    }
}

/// Whether this process is the child [`run_child`] started for the test
/// `name`.
pub(crate) fn is_child(env: &str, name: &str) -> bool {
    std::env::var(env).as_deref() == Ok(name)
}

/// Runs this test binary again, with `env` set to `name`, to run only the
/// test `name`; checks that the child was not killed by a signal, passed,
/// and ran the test. A child that takes longer than [`CHILD_LIMIT`] is
/// killed and fails the test.
pub(crate) fn run_child(env: &str, name: &str) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new(exe)
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(env, name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the test binary again");
    // Read both pipes while waiting, so that a chatty child cannot block.
    let stdout = read_all(child.stdout.take().expect("stdout is piped"));
    let stderr = read_all(child.stderr.take().expect("stderr is piped"));
    let status = wait_within(&mut child, CHILD_LIMIT);
    let stdout = stdout.join().expect("reading the child's stdout");
    let stderr = stderr.join().expect("reading the child's stderr");
    let Some(status) = status else {
        panic!("child running {name} did not finish within {CHILD_LIMIT:?}:\n{stdout}\n{stderr}");
    };
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            None,
            "child running {name} was killed:\n{stdout}\n{stderr}"
        );
    }
    assert!(
        status.success() && stdout.contains("1 passed"),
        "child running {name} failed ({status}):\n{stdout}\n{stderr}"
    );
}

/// Reads `pipe` to its end on a thread of its own.
fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits at most `limit` for `child` to exit; kills and reaps it and
/// returns `None` if it does not.
fn wait_within(child: &mut std::process::Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            return Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

// ---- Timing ----------------------------------------------------------------

/// Runs `f` and measures it.
pub(crate) fn timed<R>(f: impl FnOnce() -> R) -> (R, Duration) {
    let start = Instant::now();
    let result = f();
    (result, start.elapsed())
}

/// A call in timeout mode with timeout `t` ended after `elapsed`: never
/// early, strictly, and at most `max(1 s, t)` late.
///
/// Strict because it can be: `elapsed` is measured from before the call
/// (see [`timed`]), the call computes its deadline after that, and the
/// reactor's wheel rounds deadlines up. The contract's 10 ms of slack would
/// hide a deadline rounded down.
#[track_caller]
pub(crate) fn assert_timed_out(elapsed: Duration, t: Duration) {
    assert!(
        elapsed >= t,
        "timed out early: after {elapsed:?}, the timeout was {t:?}"
    );
    assert_not_late(elapsed, t);
}

/// Something due after `t` happened after `elapsed`: at most `max(1 s, t)`
/// late, a loose bound for a noisy machine.
#[track_caller]
pub(crate) fn assert_not_late(elapsed: Duration, t: Duration) {
    let late = t + t.max(Duration::from_secs(1));
    assert!(
        elapsed <= late,
        "late: after {elapsed:?}, the deadline was {t:?} (limit {late:?})"
    );
}

/// Runs `call`, a call in timeout mode with timeout `t`, and asserts that it
/// timed out ([`expect_timed_out`]) after `t`, never early
/// ([`assert_timed_out`]).
#[track_caller]
pub(crate) fn assert_times_out<R: std::fmt::Debug>(
    t: Duration,
    call: impl FnOnce() -> io::Result<R>,
) {
    let (result, elapsed) = timed(call);
    expect_timed_out(result);
    assert_timed_out(elapsed, t);
}

/// `what` took `elapsed`, and should not have waited at all.
#[track_caller]
pub(crate) fn assert_prompt(elapsed: Duration, what: &str) {
    assert!(
        elapsed <= PROMPTLY,
        "{what} took {elapsed:?}, not promptly (bound {PROMPTLY:?})"
    );
}

// ---- Errors ----------------------------------------------------------------

/// Asserts that `result` failed with `kind`, and returns the error.
#[track_caller]
pub(crate) fn expect_kind<R: std::fmt::Debug>(result: io::Result<R>, kind: ErrorKind) -> io::Error {
    match result {
        Ok(value) => panic!("expected {kind:?}, got Ok({value:?})"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "expected {kind:?}, got {e:?}");
            e
        }
    }
}

/// Runs `call` and asserts that it failed with `kind` ([`expect_kind`]) and
/// did not wait ([`assert_prompt`] with `what`); returns the error.
#[track_caller]
pub(crate) fn expect_kind_promptly<R: std::fmt::Debug>(
    kind: ErrorKind,
    what: &str,
    call: impl FnOnce() -> io::Result<R>,
) -> io::Error {
    let (result, elapsed) = timed(call);
    let e = expect_kind(result, kind);
    assert_prompt(elapsed, what);
    e
}

/// The error of a call in timeout mode whose deadline passed (R2):
/// `TimedOut`, no OS error (so never `WouldBlock`), message "timed out".
#[track_caller]
pub(crate) fn assert_timed_out_error(e: &io::Error) {
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e:?}");
    assert_eq!(
        e.raw_os_error(),
        None,
        "a deadline is not an OS error: {e:?}"
    );
    assert_eq!(e.to_string(), "timed out");
}

/// Asserts that `result` is the expiry of a deadline in timeout mode; see
/// [`assert_timed_out_error`].
#[track_caller]
pub(crate) fn expect_timed_out<R: std::fmt::Debug>(result: io::Result<R>) {
    assert_timed_out_error(&expect_kind(result, ErrorKind::TimedOut));
}

// ---- Waiting calls ---------------------------------------------------------

/// Waits until at least `n` calls wait on `sock` (they tried, got
/// `WouldBlock`, and are blocked in the driver), and fails the test, naming
/// `what`, if they do not within [`MUST_SUCCEED`]. For tests that act on a
/// socket while another thread's call waits on it: instead of sleeping and
/// hoping that the call has started waiting, this knows it.
///
/// The count is per socket: handles made by `try_clone` share it.
#[track_caller]
pub(crate) fn assert_waiting(sock: &dyn ontime_sync::Selectable, n: usize, what: &str) {
    assert!(
        ontime_sync::testing::wait_for_waiters(sock, n, MUST_SUCCEED),
        "{what}: {} of {n} calls waiting after {MUST_SUCCEED:?}",
        ontime_sync::testing::waiters(sock)
    );
}
