//! The TCP part of the sync facade's contract (the contract in ontime-sync's
//! crate docs: rules R1-R14 and what the tests check), over real sockets on
//! 127.0.0.1.
//!
//! This binary never changes the process-wide default timeout, so every
//! socket here starts blocking; `tests/sync_default_timeout.rs` covers the
//! default. Timing follows the contract's bounds for a noisy 2-core machine:
//! a deadline never fires early (`T - 10 ms`), lateness is bounded loosely
//! (`T + max(1 s, T)`), "promptly" is 250 ms, and waits that must succeed get
//! 10 s. Every test body runs under a 60 s watchdog.

use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use ontime_sync::{create_connection, select, Mode, TcpListener, TcpStream};

mod common;

use common::tcp::{full_accept_queue, pair, refused_addr, small_buffer_pair, SMALL_BUFFER};

use common::{
    assert_prompt, assert_timed_out, assert_times_out, assert_waiting, expect_kind,
    expect_kind_promptly, expect_timed_out, in_child, is_child, run_child, timed, watchdog,
    MUST_SUCCEED, PROMPTLY, WATCHDOG,
};

/// The timeout under test in most timing tests.
const T: Duration = Duration::from_millis(300);
/// The most chunks a fill loop sends before giving up (64 MiB of 64 KiB
/// chunks, far more than the shrunk buffers hold).
const FILL_LIMIT: usize = 1024;

// ---------------------------------------------------------------------------
// Sockets

/// How many IPv4 TCP sockets of this network namespace are in `SYN_SENT`
/// towards `port` (from `/proc/net/tcp`).
fn syn_sent_to(port: u16) -> usize {
    const SYN_SENT: &str = "02";
    let table = fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields
                .get(2)
                .and_then(|remote| remote.rsplit(':').next())
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            fields.get(3) == Some(&SYN_SENT) && remote_port == Some(port)
        })
        .count()
}

/// Whether the descriptor has `O_NONBLOCK` set.
fn fd_is_nonblocking(fd: RawFd) -> bool {
    // SAFETY: F_GETFL only reads the status flags of a descriptor that the
    // caller's socket keeps open for the duration of the call.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert!(
        flags >= 0,
        "fcntl(F_GETFL) failed: {}",
        io::Error::last_os_error()
    );
    flags & libc::O_NONBLOCK != 0
}

/// The CPU time (user + system) the calling thread has used so far.
fn thread_cpu_time() -> Duration {
    // SAFETY: rusage is plain data, for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage for the call to fill.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed: {}", io::Error::last_os_error());
    let micros = |tv: libc::timeval| {
        Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
    };
    micros(usage.ru_utime) + micros(usage.ru_stime)
}

/// Sends chunks in the stream's current mode until a send fails, at most
/// [`FILL_LIMIT`] times. Returns the failure, how long that last call took,
/// and how many bytes were sent before it.
fn fill(stream: &TcpStream) -> (io::Error, Duration, usize) {
    let chunk = vec![0x5a; SMALL_BUFFER];
    let mut sent = 0;
    for _ in 0..FILL_LIMIT {
        let (result, elapsed) = timed(|| stream.send(&chunk));
        match result {
            Ok(n) => sent += n,
            Err(e) => return (e, elapsed, sent),
        }
    }
    panic!("{sent} bytes sent to a peer that never reads and the buffers are still not full");
}

/// Set in a child process to the name of the test it runs, for tests that
/// must have the process to themselves.
const CHILD_ENV: &str = "ONTIME_SYNC_TCP_CHILD";

/// The three modes, with a timeout mode of [`T`].
fn modes() -> [Mode; 3] {
    [Mode::Blocking, Mode::NonBlocking, Mode::Timeout(T)]
}

// ---------------------------------------------------------------------------
// Modes (R1)

#[test]
fn new_sockets_without_a_default_are_blocking() {
    watchdog(WATCHDOG, || {
        assert_eq!(ontime_sync::default_timeout(), None);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let std_client = std::net::TcpStream::connect(std_listener.local_addr().unwrap()).unwrap();
        let converted_listener = TcpListener::from(std_listener);
        let converted = TcpStream::from(std_client);
        let streams = [
            ("connected", &client),
            ("accepted", &accepted),
            ("converted", &converted),
        ];
        for (what, stream) in streams {
            assert_eq!(stream.timeout(), None, "{what} stream");
            assert!(stream.is_blocking(), "{what} stream");
            assert_eq!(stream.mode(), Mode::Blocking, "{what} stream");
        }
        for (what, listener) in [("bound", &listener), ("converted", &converted_listener)] {
            assert_eq!(listener.timeout(), None, "{what} listener");
            assert!(listener.is_blocking(), "{what} listener");
            assert_eq!(listener.mode(), Mode::Blocking, "{what} listener");
        }
    });
}

/// One way of setting a mode.
#[derive(Clone, Copy, Debug)]
enum Setter {
    Timeout(Option<Duration>),
    Blocking(bool),
    Mode(Mode),
}

impl Setter {
    /// The mode rule R1 says the setter gives.
    fn expected(self) -> Mode {
        match self {
            Setter::Timeout(None) | Setter::Blocking(true) => Mode::Blocking,
            Setter::Timeout(Some(d)) if d.is_zero() => Mode::NonBlocking,
            Setter::Timeout(Some(d)) => Mode::Timeout(d),
            Setter::Blocking(false) => Mode::NonBlocking,
            Setter::Mode(mode) => mode,
        }
    }
}

/// The mode methods, which the socket types share.
trait Moded {
    fn apply(&self, setter: Setter) -> io::Result<()>;
    /// `(mode(), timeout(), is_blocking())`.
    fn observe(&self) -> (Mode, Option<Duration>, bool);
}

macro_rules! impl_moded {
    ($($ty:ty),*) => {$(
        impl Moded for $ty {
            fn apply(&self, setter: Setter) -> io::Result<()> {
                match setter {
                    Setter::Timeout(timeout) => self.set_timeout(timeout),
                    Setter::Blocking(blocking) => self.set_blocking(blocking),
                    Setter::Mode(mode) => self.set_mode(mode),
                }
            }
            fn observe(&self) -> (Mode, Option<Duration>, bool) {
                (self.mode(), self.timeout(), self.is_blocking())
            }
        }
    )*};
}

impl_moded!(TcpStream, TcpListener);

/// Applies every sequence of three setters and checks R1 after each step.
fn check_setters(sock: &dyn Moded, what: &str) {
    let setters = [
        Setter::Timeout(None),
        Setter::Timeout(Some(Duration::ZERO)),
        Setter::Timeout(Some(T)),
        Setter::Blocking(true),
        Setter::Blocking(false),
        Setter::Mode(Mode::Blocking),
        Setter::Mode(Mode::NonBlocking),
        Setter::Mode(Mode::Timeout(Duration::from_secs(1))),
    ];
    for first in setters {
        for second in setters {
            for third in setters {
                for setter in [first, second, third] {
                    sock.apply(setter)
                        .unwrap_or_else(|e| panic!("{what}: {setter:?} failed: {e}"));
                    let mode = setter.expected();
                    let timeout = match mode {
                        Mode::Blocking => None,
                        Mode::NonBlocking => Some(Duration::ZERO),
                        Mode::Timeout(d) => Some(d),
                    };
                    let blocking = mode != Mode::NonBlocking;
                    assert_eq!(
                        sock.observe(),
                        (mode, timeout, blocking),
                        "{what}: after {first:?}, {second:?}, {third:?} (at {setter:?})"
                    );
                }
            }
        }
    }
}

#[test]
fn mode_setters_round_trip_in_every_order() {
    watchdog(WATCHDOG, || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (client, _server) = pair();
        check_setters(&client, "stream");
        check_setters(&listener, "listener");
    });
}

#[test]
fn one_nanosecond_is_timeout_mode_and_times_out() {
    watchdog(WATCHDOG, || {
        let one = Duration::from_nanos(1);
        let (client, _server) = pair();
        client.set_timeout(Some(one)).unwrap();
        assert_eq!(client.mode(), Mode::Timeout(one));
        assert_eq!(client.timeout(), Some(one));
        assert!(client.is_blocking(), "timeout mode counts as blocking");
        let (result, elapsed) = timed(|| client.recv(&mut [0; 16]));
        expect_timed_out(result);
        assert_prompt(elapsed, "recv with a 1 ns timeout");

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_timeout(Some(one)).unwrap();
        let (result, elapsed) = timed(|| listener.accept());
        expect_timed_out(result);
        assert_prompt(elapsed, "accept with a 1 ns timeout");
    });
}

/// The facade stores `Duration::MAX` saturated at about 584 years and waits
/// as if blocking.
#[test]
fn duration_max_waits_as_blocking() {
    watchdog(WATCHDOG, || {
        let five_hundred_years = Duration::from_secs(500 * 365 * 24 * 3600);
        let (client, server) = pair();
        client.set_timeout(Some(Duration::MAX)).unwrap();
        match client.mode() {
            Mode::Timeout(d) => assert!(d >= five_hundred_years, "stored as {d:?}"),
            mode => panic!("Duration::MAX gave {mode:?}"),
        }
        assert!(client.is_blocking());
        thread::scope(|s| {
            s.spawn(|| {
                // The data arrives while the call waits.
                assert_waiting(&client, 1, "recv with a timeout of Duration::MAX");
                server.send_all(b"late").unwrap();
            });
            let mut buf = [0; 16];
            let (n, elapsed) = timed(|| client.recv(&mut buf).unwrap());
            assert_eq!(&buf[..n], b"late");
            assert!(elapsed <= MUST_SUCCEED, "took {elapsed:?}");
        });

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_timeout(Some(Duration::MAX)).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        listener.accept().unwrap();
    });
}

#[test]
fn data_queued_before_a_mode_change_is_still_read() {
    watchdog(WATCHDOG, || {
        let (client, server) = pair();
        // A second handle, with its own mode, to wait until data is queued.
        let probe = client.try_clone().unwrap();
        probe.set_timeout(Some(MUST_SUCCEED)).unwrap();
        let changes = [
            (Mode::Blocking, Mode::NonBlocking),
            (Mode::NonBlocking, Mode::Timeout(T)),
            (Mode::Timeout(T), Mode::Blocking),
            (Mode::Blocking, Mode::Timeout(T)),
            (Mode::Timeout(T), Mode::NonBlocking),
            (Mode::NonBlocking, Mode::Blocking),
        ];
        for (round, (before, after)) in changes.into_iter().enumerate() {
            client.set_mode(before).unwrap();
            let message = [b'a' + round as u8; 5];
            server.send_all(&message).unwrap();
            let mut peeked = [0; 5];
            assert_eq!(probe.peek(&mut peeked).unwrap(), 5);
            client.set_mode(after).unwrap();
            let mut buf = [0; 16];
            let (n, elapsed) = timed(|| client.recv(&mut buf).unwrap());
            assert_eq!(
                &buf[..n],
                &message,
                "queued in {before:?}, read in {after:?}"
            );
            assert_prompt(elapsed, "recv of queued data");
        }
    });
}

// ---------------------------------------------------------------------------
// Accept

#[test]
fn nonblocking_accept_with_nothing_pending_would_block_promptly() {
    watchdog(WATCHDOG, || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_blocking(false).unwrap();
        expect_kind_promptly(ErrorKind::WouldBlock, "non-blocking accept", || {
            listener.accept()
        });
    });
}

#[test]
fn timeout_accept_times_out_at_t() {
    watchdog(WATCHDOG, || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_timeout(Some(T)).unwrap();
        assert_times_out(T, || listener.accept());
    });
}

#[test]
fn blocking_accept_returns_when_a_client_arrives() {
    watchdog(WATCHDOG, || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(listener.is_blocking());
        thread::scope(|s| {
            let client = s.spawn(|| {
                // The client arrives while the accept waits.
                assert_waiting(&listener, 1, "blocking accept");
                std::net::TcpStream::connect(addr).unwrap()
            });
            let (result, elapsed) = timed(|| listener.accept());
            let (accepted, peer) = result.unwrap();
            let client = client.join().unwrap();
            assert_eq!(peer, client.local_addr().unwrap());
            assert_eq!(accepted.peer_addr().unwrap(), peer);
            assert!(elapsed <= MUST_SUCCEED, "took {elapsed:?}");
        });
    });
}

#[test]
fn listener_that_timed_out_still_accepts() {
    watchdog(WATCHDOG, || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_timeout(Some(T)).unwrap();
        expect_timed_out(listener.accept());

        // A client already waiting, in the same mode.
        let first = std::net::TcpStream::connect(addr).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer, first.local_addr().unwrap());

        // A client that arrives during a wait.
        listener.set_timeout(Some(MUST_SUCCEED)).unwrap();
        thread::scope(|s| {
            let client = s.spawn(|| {
                assert_waiting(&listener, 1, "accept after a timeout");
                std::net::TcpStream::connect(addr).unwrap()
            });
            let (_, peer) = listener.accept().unwrap();
            assert_eq!(peer, client.join().unwrap().local_addr().unwrap());
        });

        // And it still times out afterwards.
        listener.set_timeout(Some(T)).unwrap();
        assert_times_out(T, || listener.accept());
    });
}

/// R8 with no default timeout; the rest of its matrix is in
/// `tests/sync_default_timeout.rs`.
#[test]
fn accepted_streams_are_blocking_whatever_the_listener_mode() {
    watchdog(WATCHDOG, || {
        for mode in modes() {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_mode(mode).unwrap();
            let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let ready = select(&[&listener], &[], Some(MUST_SUCCEED)).unwrap();
            assert_eq!(ready.readable, vec![0], "listener in {mode:?}");
            let (accepted, _) = listener.accept().unwrap();
            assert_eq!(
                accepted.mode(),
                Mode::Blocking,
                "accepted from a listener in {mode:?}"
            );
            assert_eq!(
                listener.mode(),
                mode,
                "accepting changed the listener's mode"
            );
        }
    });
}

// ---------------------------------------------------------------------------
// Connect (R9, R10)

#[test]
fn refused_connect_is_connection_refused_promptly() {
    watchdog(WATCHDOG, || {
        let addr = refused_addr();
        expect_kind_promptly(
            ErrorKind::ConnectionRefused,
            "connect to a refused port",
            || TcpStream::connect(addr),
        );
        for timeout in [None, Some(T), Some(MUST_SUCCEED)] {
            expect_kind_promptly(
                ErrorKind::ConnectionRefused,
                &format!("create_connection to a refused port, timeout {timeout:?}"),
                || create_connection(addr, timeout),
            );
        }
    });
}

#[test]
fn connect_to_a_full_accept_queue_times_out_at_t() {
    watchdog(WATCHDOG, || {
        let Some((listener, _filler)) = full_accept_queue() else {
            return;
        };
        let addr = listener.local_addr().unwrap();
        assert_times_out(T, || create_connection(addr, Some(T)));
    });
}

#[test]
fn timed_out_connect_leaves_nothing_half_open() {
    watchdog(WATCHDOG, || {
        let Some((listener, _filler)) = full_accept_queue() else {
            return;
        };
        let addr = listener.local_addr().unwrap();
        let timeout = Duration::from_millis(500);
        assert_eq!(syn_sent_to(addr.port()), 0);
        thread::scope(|s| {
            let attempt = s.spawn(move || create_connection(addr, Some(timeout)));
            // The check below can see a half-open attempt: it sees this one.
            let start = Instant::now();
            let mut seen = false;
            while !attempt.is_finished() && start.elapsed() < MUST_SUCCEED {
                if syn_sent_to(addr.port()) > 0 {
                    seen = true;
                    break;
                }
                thread::sleep(Duration::from_millis(2));
            }
            expect_timed_out(attempt.join().unwrap());
            assert!(
                seen,
                "no SYN_SENT socket towards port {} was seen during the connect",
                addr.port()
            );
        });
        // Closing may go through the reactor's thread: allow it a moment.
        let closed = Instant::now();
        while syn_sent_to(addr.port()) > 0 {
            assert!(
                closed.elapsed() <= PROMPTLY,
                "a SYN_SENT socket towards port {} outlived the timed-out connect by {PROMPTLY:?}",
                addr.port()
            );
            thread::sleep(Duration::from_millis(5));
        }
    });
}

#[test]
fn create_connection_skips_a_refused_address() {
    watchdog(WATCHDOG, || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let live = listener.local_addr().unwrap();
        for timeout in [None, Some(MUST_SUCCEED)] {
            let addrs = [refused_addr(), live];
            let stream = create_connection(&addrs[..], timeout).unwrap();
            assert_eq!(stream.peer_addr().unwrap(), live);
            assert_eq!(
                stream.timeout(),
                timeout,
                "the stream's mode is the given timeout"
            );
            let (accepted, _) = listener.accept().unwrap();
            assert_eq!(accepted.peer_addr().unwrap(), stream.local_addr().unwrap());
        }
        // With every address refused, the last error comes back.
        let addrs = [refused_addr(), refused_addr()];
        expect_kind(
            create_connection(&addrs[..], Some(T)),
            ErrorKind::ConnectionRefused,
        );
    });
}

// ---------------------------------------------------------------------------
// Receive

#[test]
fn blocking_recv_returns_data_when_it_arrives() {
    watchdog(WATCHDOG, || {
        let (client, server) = pair();
        thread::scope(|s| {
            s.spawn(|| {
                assert_waiting(&client, 1, "blocking recv");
                server.send_all(b"hello").unwrap();
            });
            let mut buf = [0; 16];
            let (n, elapsed) = timed(|| client.recv(&mut buf).unwrap());
            assert_eq!(&buf[..n], b"hello");
            assert!(elapsed <= MUST_SUCCEED, "took {elapsed:?}");
        });
    });
}

#[test]
fn nonblocking_recv_without_data_would_block_promptly() {
    watchdog(WATCHDOG, || {
        let (client, _server) = pair();
        client.set_blocking(false).unwrap();
        expect_kind_promptly(ErrorKind::WouldBlock, "non-blocking recv", || {
            client.recv(&mut [0; 16])
        });
        expect_kind_promptly(ErrorKind::WouldBlock, "non-blocking read", || {
            (&client).read(&mut [0; 16])
        });
    });
}

#[test]
fn timeout_recv_times_out_at_t() {
    watchdog(WATCHDOG, || {
        let (client, _server) = pair();
        client.set_timeout(Some(T)).unwrap();
        assert_times_out(T, || client.recv(&mut [0; 16]));
        assert_times_out(T, || (&client).read(&mut [0; 16]));
    });
}

#[test]
fn timeout_recv_returns_partial_data_at_once() {
    watchdog(WATCHDOG, || {
        let (client, server) = pair();
        client.set_timeout(Some(MUST_SUCCEED)).unwrap();
        thread::scope(|s| {
            let sender = s.spawn(|| {
                assert_waiting(&client, 1, "recv in timeout mode");
                // Lateness counts from the send.
                let sending = Instant::now();
                server.send_all(b"abc").unwrap();
                sending
            });
            let mut buf = [0; 100];
            let n = client.recv(&mut buf).unwrap();
            let returned = Instant::now();
            let sending = sender.join().unwrap();
            assert_eq!(&buf[..n], b"abc");
            assert!(
                returned >= sending,
                "recv returned before the 3 bytes were sent"
            );
            assert_prompt(returned - sending, "recv of 3 bytes after they were sent");
        });
        // Data already queued comes back at once too.
        server.send_all(b"de").unwrap();
        assert_eq!(client.peek(&mut [0; 2]).unwrap(), 2);
        let mut buf = [0; 100];
        let (n, elapsed) = timed(|| client.recv(&mut buf).unwrap());
        assert_eq!(&buf[..n], b"de");
        assert_prompt(elapsed, "recv of queued data");
    });
}

#[test]
fn socket_that_timed_out_is_still_usable() {
    watchdog(WATCHDOG, || {
        let (client, server) = pair();
        client.set_timeout(Some(T)).unwrap();
        expect_timed_out(client.recv(&mut [0; 16]));
        thread::scope(|s| {
            client.set_timeout(Some(MUST_SUCCEED)).unwrap();
            s.spawn(|| {
                assert_waiting(&client, 1, "recv after a timeout");
                server.send_all(b"again").unwrap();
            });
            let mut buf = [0; 16];
            let n = client.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"again");
        });
        // Both directions still work, and it still times out.
        client.send_all(b"reply").unwrap();
        let mut buf = [0; 5];
        server.recv_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"reply");
        client.set_timeout(Some(T)).unwrap();
        assert_times_out(T, || client.recv(&mut [0; 16]));
    });
}

#[test]
fn peer_fin_gives_eof_promptly_in_every_mode() {
    watchdog(WATCHDOG, || {
        // The FIN comes while a call waits.
        for mode in [Mode::Blocking, Mode::Timeout(MUST_SUCCEED)] {
            let (client, server) = pair();
            client.set_mode(mode).unwrap();
            thread::scope(|s| {
                let reader = s.spawn(|| {
                    let result = client.recv(&mut [0; 16]);
                    (result, Instant::now())
                });
                assert_waiting(&client, 1, &format!("recv in {mode:?}"));
                let fin = Instant::now();
                server.shutdown(Shutdown::Write).unwrap();
                let (result, returned) = reader.join().unwrap();
                assert_eq!(result.unwrap(), 0, "in {mode:?}");
                assert!(returned >= fin, "recv in {mode:?} returned before the FIN");
                assert_prompt(returned - fin, &format!("recv in {mode:?} after the FIN"));
            });
        }
        // The FIN is already there.
        for mode in modes() {
            let (client, server) = pair();
            server.shutdown(Shutdown::Write).unwrap();
            let ready = select(&[&client], &[], Some(MUST_SUCCEED)).unwrap();
            assert_eq!(ready.readable, vec![0]);
            client.set_mode(mode).unwrap();
            for _ in 0..2 {
                let (result, elapsed) = timed(|| client.recv(&mut [0; 16]));
                assert_eq!(result.unwrap(), 0, "in {mode:?}");
                assert_prompt(elapsed, &format!("recv in {mode:?} at end of file"));
            }
        }
    });
}

#[test]
fn zero_length_read_returns_at_once_in_every_mode() {
    watchdog(WATCHDOG, || {
        let (client, _server) = pair();
        for mode in modes() {
            client.set_mode(mode).unwrap();
            let (result, elapsed) = timed(|| client.recv(&mut []));
            assert_eq!(result.unwrap(), 0, "recv in {mode:?}");
            assert_prompt(elapsed, &format!("recv in {mode:?}"));
            let (result, elapsed) = timed(|| (&client).read(&mut []));
            assert_eq!(result.unwrap(), 0, "read in {mode:?}");
            assert_prompt(elapsed, &format!("read in {mode:?}"));
            let (result, elapsed) = timed(|| client.peek(&mut []));
            assert_eq!(result.unwrap(), 0, "peek in {mode:?}");
            assert_prompt(elapsed, &format!("peek in {mode:?}"));
            let (result, elapsed) = timed(|| (&client).read_exact(&mut []));
            result.unwrap();
            assert_prompt(elapsed, &format!("read_exact in {mode:?}"));
        }
    });
}

// ---------------------------------------------------------------------------
// Send

#[test]
fn nonblocking_send_to_a_peer_that_never_reads_would_block() {
    watchdog(WATCHDOG, || {
        let (client, _server) = small_buffer_pair();
        client.set_blocking(false).unwrap();
        let (e, elapsed, sent) = fill(&client);
        assert_eq!(e.kind(), ErrorKind::WouldBlock, "after {sent} bytes: {e:?}");
        assert!(sent > 0);
        assert_prompt(elapsed, "the send that found the buffers full");
    });
}

#[test]
fn timeout_send_with_a_full_buffer_times_out_at_t() {
    watchdog(WATCHDOG, || {
        let (client, _server) = small_buffer_pair();
        client.set_timeout(Some(T)).unwrap();
        let (e, elapsed, sent) = fill(&client);
        expect_timed_out::<()>(Err(e));
        assert!(sent > 0);
        assert_timed_out(elapsed, T);
    });
}

#[test]
fn send_all_to_a_peer_that_never_reads_times_out_at_t() {
    watchdog(WATCHDOG, || {
        let (client, _server) = small_buffer_pair();
        client.set_timeout(Some(T)).unwrap();
        let data = vec![1; 16 << 20];
        assert_times_out(T, || client.send_all(&data));
        assert_times_out(T, || (&client).write_all(&data));
    });
}

/// R3: a peer that reads a little at a time keeps `send_all` making progress,
/// but the one deadline still ends it at ~T.
#[test]
fn send_all_keeps_one_deadline_while_the_peer_reads_slowly() {
    watchdog(WATCHDOG, || {
        let (client, server) = small_buffer_pair();
        let timeout = Duration::from_millis(400);
        client.set_timeout(Some(timeout)).unwrap();
        server.set_timeout(Some(MUST_SUCCEED)).unwrap();
        let stop = AtomicBool::new(false);
        thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut buf = vec![0; SMALL_BUFFER];
                let mut read = 0;
                for _ in 0..FILL_LIMIT {
                    thread::sleep(Duration::from_millis(100));
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    match server.recv(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => read += n,
                    }
                }
                read
            });
            let data = vec![2; 16 << 20];
            let (result, elapsed) = timed(|| client.send_all(&data));
            stop.store(true, Ordering::Release);
            let read = reader.join().unwrap();
            expect_timed_out(result);
            assert_timed_out(elapsed, timeout);
            assert!(
                read > 0,
                "the peer read nothing, so the test did not show progress"
            );
        });
    });
}

/// The byte at offset `i` of a stream that shows loss, duplication and
/// reordering (251 is prime, so no chunk size lines up with it).
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

#[test]
fn send_all_of_16_mib_arrives_whole_and_in_order() {
    watchdog(WATCHDOG, || {
        const LEN: usize = 16 << 20;
        let data: Vec<u8> = (0..LEN).map(pattern).collect();
        for mode in [Mode::Blocking, Mode::Timeout(MUST_SUCCEED)] {
            let (client, server) = pair();
            client.set_mode(mode).unwrap();
            server.set_timeout(Some(MUST_SUCCEED)).unwrap();
            thread::scope(|s| {
                let reader = s.spawn(|| {
                    let mut received = Vec::with_capacity(LEN);
                    let mut buf = vec![0; 256 * 1024];
                    // Bounded: each round either ends or adds at least a byte.
                    while received.len() <= LEN {
                        match server.recv(&mut buf).unwrap() {
                            0 => break,
                            n => received.extend_from_slice(&buf[..n]),
                        }
                    }
                    received
                });
                client.send_all(&data).unwrap();
                client.shutdown(Shutdown::Write).unwrap();
                let received = reader.join().unwrap();
                assert_eq!(received.len(), LEN, "in {mode:?}");
                if let Some(at) = received
                    .iter()
                    .enumerate()
                    .position(|(i, &b)| b != pattern(i))
                {
                    panic!(
                        "in {mode:?}: byte {at} is {} instead of {}",
                        received[at],
                        pattern(at)
                    );
                }
            });
        }
    });
}

/// The environment variable under which this binary, run again as a child,
/// restores the default `SIGPIPE` action before sending to a shut-down socket.
const SIGPIPE_CHILD: &str = "ONTIME_SYNC_TEST_SIGPIPE_CHILD";

#[test]
fn send_after_shutdown_write_is_broken_pipe_without_sigpipe() {
    let name = "send_after_shutdown_write_is_broken_pipe_without_sigpipe";
    let child = is_child(SIGPIPE_CHILD, name);
    if child {
        // Rust programs ignore SIGPIPE; a C or Python host would not, so the
        // facade must not rely on it.
        // SAFETY: setting a signal's disposition to its default has no
        // preconditions; this process runs only this test.
        let previous = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        assert_ne!(previous, libc::SIG_ERR);
    }
    watchdog(WATCHDOG, || {
        for mode in modes() {
            let (client, _server) = pair();
            client.set_mode(mode).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            expect_kind_promptly(ErrorKind::BrokenPipe, &format!("send in {mode:?}"), || {
                client.send(b"x")
            });
            expect_kind(client.send_all(b"xyz"), ErrorKind::BrokenPipe);
            expect_kind((&client).write_all(b"xyz"), ErrorKind::BrokenPipe);
        }
    });
    if child {
        return;
    }
    // Run this same test in a child process with SIGPIPE's default action.
    run_child(SIGPIPE_CHILD, name);
}

// ---------------------------------------------------------------------------
// read_exact (R3)

#[test]
fn read_exact_with_fin_after_three_bytes_is_unexpected_eof() {
    watchdog(WATCHDOG, || {
        for mode in [Mode::Blocking, Mode::Timeout(MUST_SUCCEED)] {
            let (client, server) = pair();
            client.set_mode(mode).unwrap();
            server.send_all(b"abc").unwrap();
            server.shutdown(Shutdown::Write).unwrap();
            let mut buf = [0; 8];
            expect_kind_promptly(
                ErrorKind::UnexpectedEof,
                &format!("read_exact in {mode:?}"),
                || (&client).read_exact(&mut buf),
            );
            assert_eq!(
                &buf[..3],
                b"abc",
                "the bytes received before the FIN are in the buffer"
            );
        }
    });
}

#[test]
fn read_exact_gathers_eight_bytes_sent_in_four_chunks() {
    watchdog(WATCHDOG, || {
        for mode in [Mode::Blocking, Mode::Timeout(MUST_SUCCEED)] {
            let (client, server) = pair();
            server.set_nodelay(true).unwrap();
            client.set_mode(mode).unwrap();
            thread::scope(|s| {
                s.spawn(|| {
                    for chunk in [b"01", b"23", b"45", b"67"] {
                        // The chunks come apart, each once read_exact waits
                        // (for the first, surely; for the others, the count
                        // may still be the previous wait's).
                        assert_waiting(&client, 1, &format!("read_exact in {mode:?}"));
                        thread::sleep(Duration::from_millis(50));
                        server.send_all(chunk).unwrap();
                    }
                });
                let mut buf = [0; 8];
                let (result, elapsed) = timed(|| (&client).read_exact(&mut buf));
                result.unwrap_or_else(|e| panic!("in {mode:?}: {e:?}"));
                assert_eq!(&buf, b"01234567");
                assert!(elapsed < MUST_SUCCEED, "took {elapsed:?}");
            });
        }
    });
}

/// R3: partial progress does not extend `read_exact`'s deadline. The peer
/// sends one byte every T/3, so 8 bytes would take 8T/3; a deadline renewed
/// per read would let the call succeed.
#[test]
fn read_exact_deadline_is_not_extended_by_partial_progress() {
    watchdog(WATCHDOG, || {
        let (client, server) = pair();
        server.set_nodelay(true).unwrap();
        client.set_timeout(Some(T)).unwrap();
        thread::scope(|s| {
            s.spawn(|| {
                for byte in 0..8u8 {
                    thread::sleep(T / 3);
                    if server.send(&[byte]).is_err() {
                        break;
                    }
                }
            });
            let mut buf = [0; 8];
            assert_times_out(T, || (&client).read_exact(&mut buf));
        });
    });
}

// ---------------------------------------------------------------------------
// R4: the mode is read at call entry

#[test]
fn mode_change_does_not_affect_a_waiting_call() {
    watchdog(WATCHDOG, || {
        // A blocking call keeps waiting when the mode becomes a short timeout.
        let (client, server) = pair();
        thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut buf = [0; 16];
                let n = client.recv(&mut buf);
                n.map(|n| buf[..n].to_vec())
            });
            assert_waiting(&client, 1, "blocking recv");
            client.set_timeout(Some(Duration::from_millis(50))).unwrap();
            // Well past the new timeout, had the waiting call taken it.
            thread::sleep(Duration::from_millis(300));
            server.send_all(b"late").unwrap();
            let data = reader.join().unwrap();
            assert_eq!(
                data.unwrap(),
                b"late",
                "the waiting blocking call must still get the data"
            );
        });
        // Later calls use the new mode.
        assert_times_out(Duration::from_millis(50), || client.recv(&mut [0; 16]));

        // A call in timeout mode keeps its deadline when the mode becomes
        // blocking. The timeout is long enough that the call is surely still
        // waiting when this thread sees it wait.
        let timeout = Duration::from_secs(1);
        let (client, _server) = pair();
        client.set_timeout(Some(timeout)).unwrap();
        thread::scope(|s| {
            let reader = s.spawn(|| timed(|| client.recv(&mut [0; 16])));
            assert_waiting(&client, 1, "recv in timeout mode");
            client.set_blocking(true).unwrap();
            let (result, elapsed) = reader.join().unwrap();
            expect_timed_out(result);
            assert_timed_out(elapsed, timeout);
        });
        assert_eq!(client.mode(), Mode::Blocking);
    });
}

// ---------------------------------------------------------------------------
// R11: clones and the descriptor

#[test]
fn try_clone_copies_the_mode_then_modes_are_independent() {
    watchdog(WATCHDOG, || {
        let (client, server) = pair();
        client.set_timeout(Some(T)).unwrap();
        let clone = client.try_clone().unwrap();
        assert_eq!(clone.mode(), Mode::Timeout(T));

        clone.set_blocking(false).unwrap();
        assert_eq!(
            client.mode(),
            Mode::Timeout(T),
            "changing the clone changed the original"
        );
        assert!(fd_is_nonblocking(client.as_raw_fd()));
        assert!(fd_is_nonblocking(clone.as_raw_fd()));
        expect_kind_promptly(
            ErrorKind::WouldBlock,
            "recv on the non-blocking clone",
            || clone.recv(&mut [0; 16]),
        );
        assert_times_out(T, || client.recv(&mut [0; 16]));

        client.set_blocking(false).unwrap();
        clone.set_timeout(Some(T)).unwrap();
        assert_eq!(
            clone.mode(),
            Mode::Timeout(T),
            "changing the original changed the clone"
        );
        expect_kind_promptly(ErrorKind::WouldBlock, "recv on the original", || {
            client.recv(&mut [0; 16])
        });
        assert_times_out(T, || clone.recv(&mut [0; 16]));

        // Both handles reach the same connection.
        server.send_all(b"shared").unwrap();
        clone.set_timeout(Some(MUST_SUCCEED)).unwrap();
        let mut buf = [0; 6];
        clone.recv_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"shared");

        // Listeners too.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_timeout(Some(T)).unwrap();
        let listener_clone = listener.try_clone().unwrap();
        assert_eq!(listener_clone.mode(), Mode::Timeout(T));
        listener_clone.set_blocking(false).unwrap();
        assert_eq!(listener.mode(), Mode::Timeout(T));
        expect_kind_promptly(
            ErrorKind::WouldBlock,
            "accept on the non-blocking clone",
            || listener_clone.accept(),
        );
    });
}

#[test]
fn descriptor_is_non_blocking_in_every_mode() {
    watchdog(WATCHDOG, || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let clone = client.try_clone().unwrap();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let std_client = std::net::TcpStream::connect(std_listener.local_addr().unwrap()).unwrap();
        assert!(
            !fd_is_nonblocking(std_client.as_raw_fd()),
            "std's stream starts blocking"
        );
        let converted = TcpStream::from(std_client);
        let converted_listener = TcpListener::from(std_listener);
        let streams = [
            ("connected", &client),
            ("accepted", &accepted),
            ("clone", &clone),
            ("converted", &converted),
        ];
        for mode in modes() {
            for (what, stream) in streams {
                stream.set_mode(mode).unwrap();
                assert!(
                    fd_is_nonblocking(stream.as_raw_fd()),
                    "{what} stream in {mode:?}"
                );
            }
            for (what, listener) in [("bound", &listener), ("converted", &converted_listener)] {
                listener.set_mode(mode).unwrap();
                assert!(
                    fd_is_nonblocking(listener.as_raw_fd()),
                    "{what} listener in {mode:?}"
                );
            }
        }
        // Also after a call that waited.
        client.set_timeout(Some(T)).unwrap();
        expect_timed_out(client.recv(&mut [0; 1]));
        client.set_blocking(true).unwrap();
        assert!(fd_is_nonblocking(client.as_raw_fd()));
    });
}

// ---------------------------------------------------------------------------
// R13: shutdown wakes waiters

#[test]
fn shutdown_wakes_a_blocked_recv() {
    watchdog(WATCHDOG, || {
        for how in [Shutdown::Read, Shutdown::Both] {
            for mode in [Mode::Blocking, Mode::Timeout(MUST_SUCCEED)] {
                let (client, _server) = pair();
                client.set_mode(mode).unwrap();
                thread::scope(|s| {
                    let reader = s.spawn(|| {
                        let result = client.recv(&mut [0; 16]);
                        (result, Instant::now())
                    });
                    assert_waiting(&client, 1, &format!("recv in {mode:?}"));
                    let shutdown = Instant::now();
                    client.shutdown(how).unwrap();
                    let (result, returned) = reader.join().unwrap();
                    assert!(
                        returned >= shutdown,
                        "recv in {mode:?} returned before shutdown({how:?})"
                    );
                    assert_eq!(
                        result.unwrap(),
                        0,
                        "recv in {mode:?} after shutdown({how:?})"
                    );
                    assert_prompt(
                        returned - shutdown,
                        &format!("recv in {mode:?} after shutdown({how:?})"),
                    );
                });
            }
        }
    });
}

#[test]
fn shutdown_wakes_a_blocked_send() {
    watchdog(WATCHDOG, || {
        for how in [Shutdown::Write, Shutdown::Both] {
            let (client, _server) = small_buffer_pair();
            assert!(client.is_blocking());
            thread::scope(|s| {
                let writer = s.spawn(|| {
                    // Blocking sends to a peer that never reads: the buffers
                    // fill within a few calls, then one waits.
                    let (e, _, _) = fill(&client);
                    (Err::<(), _>(e), Instant::now())
                });
                assert_waiting(&client, 1, "a blocking send to a full buffer");
                let shutdown = Instant::now();
                client.shutdown(how).unwrap();
                let (result, returned) = writer.join().unwrap();
                assert!(
                    returned >= shutdown,
                    "send returned before shutdown({how:?}): {result:?}"
                );
                expect_kind(result, ErrorKind::BrokenPipe);
                assert_prompt(
                    returned - shutdown,
                    &format!("the blocked send after shutdown({how:?})"),
                );
            });
        }
    });
}

// ---------------------------------------------------------------------------
// Many threads at once

#[test]
fn fifty_threads_with_different_timeouts_time_out_on_time() {
    watchdog(WATCHDOG, || {
        const THREADS: u64 = 50;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let pairs: Vec<(TcpStream, TcpStream)> = (0..THREADS)
            .map(|_| {
                let client = TcpStream::connect(addr).unwrap();
                (client, listener.accept().unwrap().0)
            })
            .collect();
        let barrier = Barrier::new(pairs.len());
        thread::scope(|s| {
            let waiters: Vec<_> = pairs
                .iter()
                .zip(0..)
                .map(|((client, _), i)| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        let timeout = Duration::from_millis(200 + i * 300 / THREADS);
                        client.set_timeout(Some(timeout)).unwrap();
                        barrier.wait();
                        let (result, elapsed) = timed(|| client.recv(&mut [0; 16]));
                        (timeout, result, elapsed)
                    })
                })
                .collect();
            for (i, waiter) in waiters.into_iter().enumerate() {
                let (timeout, result, elapsed) = waiter.join().unwrap();
                let e = expect_kind(result, ErrorKind::TimedOut);
                assert_eq!(e.raw_os_error(), None, "thread {i}");
                assert_timed_out(elapsed, timeout);
            }
        });
    });
}

#[test]
fn eight_threads_blocked_on_one_socket_all_return() {
    watchdog(WATCHDOG, || {
        const THREADS: u8 = 8;
        let (client, server) = pair();
        server.set_nodelay(true).unwrap();
        assert!(client.is_blocking());
        thread::scope(|s| {
            let (got_tx, got_rx) = mpsc::channel();
            for _ in 0..THREADS {
                let (client, got_tx) = (&client, got_tx.clone());
                s.spawn(move || {
                    let mut byte = [0; 1];
                    let result = client.recv(&mut byte).map(|n| (n, byte[0]));
                    got_tx.send(result).unwrap();
                });
            }
            assert_waiting(&client, THREADS.into(), "blocking recvs on one socket");
            for message in 0..THREADS {
                server.send_all(&[message]).unwrap();
            }
            let mut bytes: Vec<u8> = (0..THREADS)
                .map(|i| {
                    let result = got_rx.recv_timeout(MUST_SUCCEED).unwrap_or_else(|_| {
                        panic!("only {i} of {THREADS} blocked threads returned")
                    });
                    let (n, byte) = result.unwrap();
                    assert_eq!(n, 1);
                    byte
                })
                .collect();
            bytes.sort_unstable();
            assert_eq!(bytes, (0..THREADS).collect::<Vec<_>>());
        });
    });
}

#[test]
fn some_threads_get_data_while_others_time_out() {
    watchdog(WATCHDOG, || {
        const PAIRS: usize = 20;
        // The odd threads time out after `timeout`; the even ones get data
        // while they wait, in timeout mode too, but with a timeout that must
        // not expire before it.
        let timeout = Duration::from_millis(400);
        let pairs: Vec<(TcpStream, TcpStream)> = (0..PAIRS).map(|_| pair()).collect();
        let barrier = Barrier::new(PAIRS + 1);
        thread::scope(|s| {
            let waiters: Vec<_> = pairs
                .iter()
                .enumerate()
                .map(|(i, (client, _))| {
                    let barrier = &barrier;
                    let wait = if i % 2 == 0 { MUST_SUCCEED } else { timeout };
                    s.spawn(move || {
                        client.set_timeout(Some(wait)).unwrap();
                        barrier.wait();
                        let (result, elapsed) = timed(|| client.recv(&mut [0; 16]));
                        (result, elapsed, Instant::now())
                    })
                })
                .collect();
            barrier.wait();
            // Only the even threads: an odd one may already have timed out.
            for (i, (client, _)) in pairs.iter().enumerate().step_by(2) {
                assert_waiting(client, 1, &format!("thread {i}'s recv"));
            }
            let sent: Vec<Instant> = pairs
                .iter()
                .step_by(2)
                .map(|(_, server)| {
                    let sending = Instant::now();
                    server.send_all(b"x").unwrap();
                    sending
                })
                .collect();
            for (i, waiter) in waiters.into_iter().enumerate() {
                let (result, elapsed, returned) = waiter.join().unwrap();
                if i % 2 == 0 {
                    let n =
                        result.unwrap_or_else(|e| panic!("thread {i} should have got data: {e:?}"));
                    assert_eq!(n, 1);
                    assert!(elapsed < MUST_SUCCEED, "thread {i} took {elapsed:?}");
                    let sending = sent[i / 2];
                    assert!(
                        returned >= sending,
                        "thread {i} returned before its data was sent"
                    );
                    assert_prompt(
                        returned - sending,
                        &format!("thread {i}'s recv after its data was sent"),
                    );
                } else {
                    expect_timed_out(result);
                    assert_timed_out(elapsed, timeout);
                }
            }
        });
    });
}

// ---------------------------------------------------------------------------
// select

#[test]
fn select_nonblocking_listener_is_readable_after_a_client_connects() {
    watchdog(WATCHDOG, || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_blocking(false).unwrap();
        assert!(select(&[&listener], &[], Some(Duration::ZERO))
            .unwrap()
            .is_empty());
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let ready = select(&[&listener], &[], Some(MUST_SUCCEED)).unwrap();
        assert_eq!(ready.readable, vec![0]);
        assert!(ready.writable.is_empty());
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
    });
}

#[test]
fn select_stream_is_readable_when_data_arrives() {
    watchdog(WATCHDOG, || {
        let (quiet, _quiet_server) = pair();
        let (client, server) = pair();
        client.set_blocking(false).unwrap();
        thread::scope(|s| {
            s.spawn(|| {
                assert_waiting(&client, 1, "select");
                server.send_all(b"ping").unwrap();
            });
            let ready = select(&[&quiet, &client], &[], Some(MUST_SUCCEED)).unwrap();
            assert_eq!(ready.readable, vec![1], "only the second stream got data");
            let mut buf = [0; 16];
            let n = client.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"ping");
        });
    });
}

#[test]
fn select_connected_stream_is_writable_at_once() {
    watchdog(WATCHDOG, || {
        let (client, _server) = pair();
        let (quiet, _quiet_server) = pair();
        let (ready, elapsed) = timed(|| select(&[&quiet], &[&client], Some(MUST_SUCCEED)).unwrap());
        assert!(ready.readable.is_empty());
        assert_eq!(ready.writable, vec![0]);
        assert_prompt(elapsed, "select for a writable stream");
    });
}

#[test]
fn select_with_nothing_ready_times_out_at_t() {
    watchdog(WATCHDOG, || {
        let (client, _server) = pair();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (ready, elapsed) = timed(|| select(&[&client, &listener], &[], Some(T)).unwrap());
        assert!(ready.is_empty(), "{ready:?}");
        assert_timed_out(elapsed, T);
    });
}

#[test]
fn select_with_zero_timeout_returns_promptly() {
    watchdog(WATCHDOG, || {
        let (client, _server) = pair();
        let (ready, elapsed) = timed(|| select(&[&client], &[], Some(Duration::ZERO)).unwrap());
        assert!(ready.is_empty(), "{ready:?}");
        assert_prompt(elapsed, "select with a zero timeout");
        // Again, now that the stream is known to the reactor.
        let (ready, elapsed) = timed(|| select(&[&client], &[], Some(Duration::ZERO)).unwrap());
        assert!(ready.is_empty(), "{ready:?}");
        assert_prompt(elapsed, "select with a zero timeout, again");
    });
}

// ---------------------------------------------------------------------------
// R6: no busy waiting

/// A thread blocked for a second sleeps: a spin check, not a benchmark. Two
/// threads wait at once, one in timeout mode and one blocking, each in its
/// own reactor. The body runs in a child process, so that the process's CPU
/// time is theirs alone.
#[test]
fn blocked_threads_use_little_cpu() {
    watchdog(WATCHDOG, || {
        in_child(CHILD_ENV, "blocked_threads_use_little_cpu", || {
            let wait = Duration::from_secs(1);
            let budget = Duration::from_millis(100);
            let (timing_out, _quiet_server) = pair();
            timing_out.set_timeout(Some(wait)).unwrap();
            let (blocking, server) = pair();
            thread::scope(|s| {
                let timeout_waiter = s.spawn(|| {
                    let before = thread_cpu_time();
                    let (result, elapsed) = timed(|| timing_out.recv(&mut [0; 16]));
                    let cpu = thread_cpu_time() - before;
                    expect_timed_out(result);
                    assert_timed_out(elapsed, wait);
                    cpu
                });
                let blocking_waiter = s.spawn(|| {
                    let before = thread_cpu_time();
                    let n = blocking.recv(&mut [0; 16]).unwrap();
                    let cpu = thread_cpu_time() - before;
                    assert_eq!(n, 4);
                    cpu
                });
                // Both wait, then the blocked one stays blocked for `wait`.
                assert_waiting(&timing_out, 1, "recv in timeout mode");
                assert_waiting(&blocking, 1, "blocking recv");
                thread::sleep(wait);
                server.send_all(b"wake").unwrap();
                let cpu = timeout_waiter.join().unwrap();
                assert!(
                    cpu < budget,
                    "a thread waiting {wait:?} in timeout mode used {cpu:?} of CPU"
                );
                let cpu = blocking_waiter.join().unwrap();
                assert!(
                    cpu < budget,
                    "a thread blocked for {wait:?} used {cpu:?} of CPU"
                );
            });
        });
    });
}
