//! Rule R5 of the contract in ontime-sync's crate docs: a signal that
//! interrupts a wait neither surfaces as `Interrupted` nor extends the
//! deadline.
//!
//! Its own test binary: it installs a process-wide `SIGUSR1` handler without
//! `SA_RESTART`, so that every system call the signal lands in really
//! returns `EINTR`.
//!
//! The signals keep coming, every [`EVERY`], until every call under test
//! has returned, so that a deadline restarted (or pushed back) by a signal
//! shows: such a call would not return while the signals come (until
//! [`PESTER_LIMIT`]), and the contract's bound on how late it may be,
//! `T + max(1 s, T)`, catches it.

mod common;

use common::tcp::{full_accept_queue, small_buffer_pair};

use std::cell::Cell;
use std::io::{self, ErrorKind, Read, Write};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Barrier, Once};
use std::thread;
use std::time::Duration;

use common::{assert_timed_out, assert_timed_out_error, assert_waiting, timed, watchdog, WATCHDOG};
use ontime::sync::{create_connection, TcpListener, TcpStream};

thread_local! {
    /// Signals delivered to this thread so far, to show that a test really
    /// interrupted its own waits (the tests run in parallel, so a count for
    /// the whole process could be the other test's).
    static DELIVERED: Cell<usize> = const { Cell::new(0) };
}

extern "C" fn on_signal(_: libc::c_int) {
    // A const-initialised thread-local without a destructor is a plain
    // thread-local slot: nothing is allocated or locked here.
    DELIVERED.with(|n| n.set(n.get() + 1));
}

fn delivered_here() -> usize {
    DELIVERED.with(Cell::get)
}

fn install_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: a zeroed `sigaction` is a valid empty value; the handler
        // only touches a thread-local counter; no
        // SA_RESTART, so interrupted system calls fail with EINTR.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = 0;
            libc::sigemptyset(&mut action.sa_mask);
            assert_eq!(
                libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
                0,
                "sigaction failed"
            );
        }
    });
}

/// A thread's id for `pthread_kill`.
#[derive(Clone, Copy)]
struct Tid(libc::pthread_t);

// SAFETY: a pthread_t is an opaque id; sending it to another thread is
// what pthread_kill is for.
unsafe impl Send for Tid {}

fn current_tid() -> Tid {
    // SAFETY: pthread_self has no preconditions.
    Tid(unsafe { libc::pthread_self() })
}

/// How often the calls under test get `SIGUSR1`.
const EVERY: Duration = Duration::from_millis(10);
/// How long the signals come at most, whatever the calls do: a call whose
/// deadline restarts on every signal returns only after this (plus its
/// timeout), far past the contract's `T + max(1 s, T)`. Below the watchdog.
const PESTER_LIMIT: Duration = Duration::from_secs(5);
/// The fewest signals a call that waits [`T`] must have got for its test to
/// show anything (about `T / EVERY` come; a loaded machine delays some).
const MIN_DELIVERED: usize = 3;
/// The timeout under test.
const T: Duration = Duration::from_millis(300);

/// Sends `SIGUSR1` to each of `targets` every [`EVERY`] until `stop` is set,
/// for at most [`PESTER_LIMIT`].
fn pester(targets: Vec<Tid>, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        // Bounded by count; each round sleeps at least EVERY.
        for _ in 0..PESTER_LIMIT.as_millis() / EVERY.as_millis() {
            if stop.load(Ordering::Acquire) {
                break;
            }
            for tid in &targets {
                // SAFETY: the target threads outlive the pestering: each
                // waits on a barrier that `under_signals` passes only after
                // setting `stop` and joining us.
                unsafe { libc::pthread_kill(tid.0, libc::SIGUSR1) };
            }
            thread::sleep(EVERY);
        }
    })
}

/// What a call made under signals did.
struct Pestered<R> {
    result: R,
    elapsed: Duration,
    /// Signals its thread got during the call.
    delivered: usize,
}

/// Runs each of `calls` on a thread of its own, all at once, while every one
/// of those threads gets `SIGUSR1` every [`EVERY`], from before the calls
/// start until all of them have returned (or [`PESTER_LIMIT`] has passed);
/// returns what each call did, in order. A panic in a call is passed on.
fn under_signals<R, F>(calls: Vec<F>) -> Vec<Pestered<R>>
where
    R: Send,
    F: FnOnce() -> R + Send,
{
    install_handler();
    let n = calls.len();
    let go = Barrier::new(n + 1);
    // Passed once the pestering has stopped: no signal is sent to a thread
    // that has exited.
    let release = Barrier::new(n + 1);
    let (tids_tx, tids_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    thread::scope(|s| {
        let threads: Vec<_> = calls
            .into_iter()
            .map(|call| {
                let (tids_tx, done_tx) = (tids_tx.clone(), done_tx.clone());
                let (go, release) = (&go, &release);
                s.spawn(move || {
                    tids_tx.send(current_tid()).unwrap();
                    go.wait();
                    let before = delivered_here();
                    let outcome = panic::catch_unwind(AssertUnwindSafe(|| timed(call)));
                    let delivered = delivered_here() - before;
                    done_tx.send(()).unwrap();
                    release.wait();
                    match outcome {
                        Ok((result, elapsed)) => Pestered {
                            result,
                            elapsed,
                            delivered,
                        },
                        Err(payload) => panic::resume_unwind(payload),
                    }
                })
            })
            .collect();
        let tids: Vec<Tid> = (0..n).map(|_| tids_rx.recv().unwrap()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let pesterer = pester(tids, Arc::clone(&stop));
        go.wait();
        // Signals until the last call has returned.
        for _ in 0..n {
            done_rx.recv().unwrap();
        }
        stop.store(true, Ordering::Release);
        pesterer.join().unwrap();
        release.wait();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|p| panic::resume_unwind(p)))
            .collect()
    })
}

/// Checks that a call in timeout mode with timeout `t`, made under signals,
/// timed out (never `Interrupted`), never early and no later than the
/// contract allows, and that signals really reached it.
#[track_caller]
fn check_timed_out_under_signals<R: std::fmt::Debug>(
    what: &str,
    t: Duration,
    outcome: Pestered<io::Result<R>>,
) {
    let e = match outcome.result {
        Ok(value) => panic!("{what}: expected TimedOut, got Ok({value:?})"),
        Err(e) => e,
    };
    assert_ne!(
        e.kind(),
        ErrorKind::Interrupted,
        "{what}: a signal surfaced"
    );
    assert_timed_out_error(&e);
    // The late bound first, for its message; then never early.
    let limit = t + t.max(Duration::from_secs(1));
    assert!(
        outcome.elapsed <= limit,
        "{what}: the signals extended the deadline: returned after {:?}, the timeout was {t:?} (limit {limit:?})",
        outcome.elapsed,
    );
    assert_timed_out(outcome.elapsed, t);
    assert!(
        outcome.delivered >= MIN_DELIVERED,
        "{what}: only {} signals reached the call, the test proved nothing",
        outcome.delivered
    );
}

/// A connected pair: (client, server side).
fn pair(timeout: Option<Duration>) -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = create_connection(listener.local_addr().unwrap(), timeout).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

#[test]
fn signals_neither_interrupt_nor_extend_a_timed_wait() {
    watchdog(WATCHDOG, || {
        // Three waiters at once, each in its own thread's reactor, all
        // interrupted.
        let pairs: Vec<_> = (0..3).map(|_| pair(Some(T))).collect();
        let reads = pairs
            .iter()
            .map(|(client, _server)| move || (&*client).read(&mut [0; 16]))
            .collect();
        for (i, outcome) in under_signals(reads).into_iter().enumerate() {
            check_timed_out_under_signals(&format!("read {i}"), T, outcome);
        }
    });
}

#[test]
fn signals_do_not_interrupt_a_blocking_wait() {
    watchdog(WATCHDOG, || {
        let (client, server) = pair(None);
        thread::scope(|s| {
            s.spawn(|| {
                assert_waiting(&client, 1, "blocking read");
                // Let the signals interrupt the waiting read for a while
                // before the data comes.
                thread::sleep(Duration::from_millis(200));
                (&server).write_all(b"hello").unwrap();
            });
            let read = || {
                let mut buf = [0; 16];
                (&client).read(&mut buf).map(|n| buf[..n].to_vec())
            };
            let outcome = under_signals(vec![read])
                .pop()
                .expect("one call, one outcome");
            let data = outcome
                .result
                .expect("a blocking read interrupted by signals must not fail");
            assert_eq!(data, b"hello");
            assert!(
                outcome.delivered >= MIN_DELIVERED,
                "only {} signals reached the reader during its read, the test proved nothing",
                outcome.delivered
            );
        });
    });
}

/// R3 and R5: `send_all` to a peer that does not read keeps its ONE deadline
/// while signals interrupt its waits.
#[test]
fn signals_neither_interrupt_nor_extend_send_all() {
    watchdog(WATCHDOG, || {
        let (client, _server) = small_buffer_pair();
        client.set_timeout(Some(T)).unwrap();
        // More than both ends' buffers hold: it cannot finish.
        let data = vec![3; 16 << 20];
        let send_all = || client.send_all(&data);
        for outcome in under_signals(vec![send_all]) {
            check_timed_out_under_signals("send_all", T, outcome);
        }
    });
}

/// R5 and R10: a connect to a full accept queue, which only its timeout
/// ends, times out at about its timeout while signals interrupt its wait.
#[test]
fn signals_neither_interrupt_nor_extend_a_timed_connect() {
    watchdog(WATCHDOG, || {
        let Some((listener, _filler)) = full_accept_queue() else {
            return;
        };
        let addr = listener.local_addr().unwrap();
        let connect = || create_connection(addr, Some(T));
        for outcome in under_signals(vec![connect]) {
            check_timed_out_under_signals("connect", T, outcome);
        }
    });
}
