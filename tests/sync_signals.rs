//! Rule R5 of the contract in ontime-sync's crate docs: a signal that
//! interrupts a wait neither surfaces as `Interrupted` nor extends the
//! deadline.
//!
//! Its own test binary: it installs a process-wide `SIGUSR1` handler without
//! `SA_RESTART`, so that every system call the signal lands in really
//! returns `EINTR`.

mod common;

use std::cell::Cell;
use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Barrier, Once};
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_timed_out, assert_timed_out_error, watchdog, WATCHDOG};
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

/// Sends `SIGUSR1` to each of `targets` every 10 ms until `stop` is set.
fn pester(targets: Vec<Tid>, stop: Arc<AtomicBool>) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let mut sent = 0;
        // Bounded: at most 30 s of pestering whatever the test does.
        for _ in 0..3000 {
            if stop.load(Ordering::Acquire) {
                break;
            }
            for tid in &targets {
                // SAFETY: the target threads outlive the pestering: each
                // waits on a barrier that the test passes only after
                // setting `stop` and joining us.
                unsafe { libc::pthread_kill(tid.0, libc::SIGUSR1) };
                sent += 1;
            }
            thread::sleep(Duration::from_millis(10));
        }
        sent
    })
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
    install_handler();
    watchdog(WATCHDOG, || {
        let t = Duration::from_millis(300);
        // Three waiters at once, so that both the thread leading the reactor
        // and parked followers are interrupted.
        let pairs: Vec<_> = (0..3).map(|_| pair(Some(t))).collect();
        let (tids_tx, tids_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let go_rx = Arc::new(std::sync::Mutex::new(go_rx));
        // Passed once the pestering has stopped: no signal is sent to a
        // thread that has exited.
        let release = Arc::new(Barrier::new(4));
        let waiters: Vec<_> = pairs
            .into_iter()
            .map(|(client, server)| {
                let tids_tx = tids_tx.clone();
                let go_rx = Arc::clone(&go_rx);
                let release = Arc::clone(&release);
                thread::spawn(move || {
                    tids_tx.send(current_tid()).unwrap();
                    go_rx.lock().unwrap().recv().unwrap();
                    let before = delivered_here();
                    let start = Instant::now();
                    let result = (&client).read(&mut [0; 16]);
                    let elapsed = start.elapsed();
                    let delivered = delivered_here() - before;
                    release.wait();
                    (result, elapsed, delivered, client, server)
                })
            })
            .collect();
        let tids: Vec<Tid> = (0..3).map(|_| tids_rx.recv().unwrap()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let pesterer = pester(tids, Arc::clone(&stop));
        for _ in 0..3 {
            go_tx.send(()).unwrap();
        }
        // The waits end on their own (they time out); then stop pestering
        // before letting the waiters exit.
        thread::sleep(t);
        stop.store(true, Ordering::Release);
        let sent = pesterer.join().unwrap();
        release.wait();
        let outcomes: Vec<_> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
        for (i, (result, elapsed, delivered, _client, _server)) in outcomes.into_iter().enumerate()
        {
            let e = result.expect_err("nothing was sent, yet the read returned");
            assert_ne!(e.kind(), ErrorKind::Interrupted, "a signal surfaced");
            assert_timed_out_error(&e);
            assert_timed_out(elapsed, t);
            assert!(
                delivered > 0,
                "no signal reached waiter {i} during its wait ({sent} sent), the test proved nothing"
            );
        }
    });
}

#[test]
fn signals_do_not_interrupt_a_blocking_wait() {
    install_handler();
    watchdog(WATCHDOG, || {
        let (client, server) = pair(None);
        let (tid_tx, tid_rx) = mpsc::channel();
        let release = Arc::new(Barrier::new(2));
        let reader_release = Arc::clone(&release);
        let reader = thread::spawn(move || {
            tid_tx.send(current_tid()).unwrap();
            let mut buf = [0; 16];
            let before = delivered_here();
            let n = (&client).read(&mut buf);
            let delivered = delivered_here() - before;
            // Stay alive until the pestering has stopped.
            reader_release.wait();
            (n, buf, delivered, client)
        });
        let tid = tid_rx.recv().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let pesterer = pester(vec![tid], Arc::clone(&stop));
        // Let the reader be interrupted for a while before the data comes.
        thread::sleep(Duration::from_millis(200));
        (&server).write_all(b"hello").unwrap();
        // The read returns once the data is there; the barrier waits for it.
        thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::Release);
        pesterer.join().unwrap();
        release.wait();
        let (n, buf, delivered, _client) = reader.join().unwrap();
        let n = n.expect("a blocking read interrupted by signals must not fail");
        assert_eq!(&buf[..n], b"hello");
        assert!(
            delivered > 0,
            "no signal reached the reader during its read, the test proved nothing"
        );
    });
}
