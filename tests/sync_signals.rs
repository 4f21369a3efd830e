//! Rule R5: a signal that interrupts a wait neither surfaces as
//! `Interrupted` nor extends the deadline.
//!
//! Its own test binary: it installs a process-wide `SIGUSR1` handler without
//! `SA_RESTART`, so that every system call the signal lands in really
//! returns `EINTR`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Once};
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_timed_out, assert_timed_out_error, watchdog, WATCHDOG};
use ontime::sync::{create_connection, TcpListener, TcpStream};

/// Signals delivered to the handler so far (to show the test really
/// interrupted something).
static DELIVERED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    DELIVERED.fetch_add(1, Ordering::Relaxed);
}

fn install_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: a zeroed `sigaction` is a valid empty value; the handler
        // only touches an atomic, which is async-signal-safe; no
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
                // SAFETY: the target threads outlive the pestering: the
                // test joins them only after setting `stop` and joining us.
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
        let waiters: Vec<_> = pairs
            .into_iter()
            .map(|(client, server)| {
                let tids_tx = tids_tx.clone();
                let go_rx = Arc::clone(&go_rx);
                thread::spawn(move || {
                    tids_tx.send(current_tid()).unwrap();
                    go_rx.lock().unwrap().recv().unwrap();
                    let start = Instant::now();
                    let result = (&client).read(&mut [0; 16]);
                    (result, start.elapsed(), client, server)
                })
            })
            .collect();
        let tids: Vec<Tid> = (0..3).map(|_| tids_rx.recv().unwrap()).collect();
        let before = DELIVERED.load(Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let pesterer = pester(tids, Arc::clone(&stop));
        for _ in 0..3 {
            go_tx.send(()).unwrap();
        }
        let outcomes: Vec<_> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
        stop.store(true, Ordering::Release);
        let sent = pesterer.join().unwrap();
        for (result, elapsed, _client, _server) in outcomes {
            let e = result.expect_err("nothing was sent, yet the read returned");
            assert_ne!(e.kind(), ErrorKind::Interrupted, "a signal surfaced");
            assert_timed_out_error(&e);
            assert_timed_out(elapsed, t);
        }
        let delivered = DELIVERED.load(Ordering::Relaxed) - before;
        assert!(
            sent > 0 && delivered > 0,
            "no signal was delivered ({sent} sent), the test proved nothing"
        );
    });
}

#[test]
fn signals_do_not_interrupt_a_blocking_wait() {
    install_handler();
    watchdog(WATCHDOG, || {
        let (client, server) = pair(None);
        let (tid_tx, tid_rx) = mpsc::channel();
        let reader = thread::spawn(move || {
            tid_tx.send(current_tid()).unwrap();
            let mut buf = [0; 16];
            let n = (&client).read(&mut buf);
            (n, buf, client)
        });
        let tid = tid_rx.recv().unwrap();
        let before = DELIVERED.load(Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let pesterer = pester(vec![tid], Arc::clone(&stop));
        // Let the reader be interrupted for a while before the data comes.
        thread::sleep(Duration::from_millis(200));
        (&server).write_all(b"hello").unwrap();
        let (n, buf, _client) = reader.join().unwrap();
        stop.store(true, Ordering::Release);
        pesterer.join().unwrap();
        let n = n.expect("a blocking read interrupted by signals must not fail");
        assert_eq!(&buf[..n], b"hello");
        assert!(
            DELIVERED.load(Ordering::Relaxed) > before,
            "no signal was delivered, the test proved nothing"
        );
    });
}
