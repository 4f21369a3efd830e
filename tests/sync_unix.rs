//! `ontime::sync`'s Unix sockets over real socket files and pairs: the three
//! modes on accept, connect, receive and send; end of file; `send_all` and
//! `read_exact` with one deadline; shutdown waking a waiter; `SIGPIPE`;
//! datagrams; and the default timeout.
//!
//! Timing follows the bounds of the contract in ontime-sync's crate docs: a
//! deadline is never early (`elapsed >= T - 10 ms`) and late by at most
//! `max(1 s, T)`; "promptly" is 250 ms; waits that must succeed get 10 s;
//! every test runs under a watchdog and every loop is bounded. Tests that change process-wide state (the default
//! timeout, `SIGPIPE`'s disposition) run in a child process, so that they
//! cannot disturb the others. Socket files live under the temporary
//! directory with the process id and a counter in their names, and are
//! removed when the test ends.

#![cfg(unix)]

use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use ontime::sync::{self, Mode, UnixDatagram, UnixListener, UnixStream};
use socket2::{Domain, SockAddr, SockRef, Socket, Type};

mod common;

use common::{
    assert_prompt, assert_times_out, assert_waiting, expect_kind_promptly, in_child, timed,
    watchdog, MUST_SUCCEED, WATCHDOG,
};

/// The timeout under test.
const T: Duration = Duration::from_millis(300);
/// Set in a child process to the name of the test it runs.
const CHILD_ENV: &str = "ONTIME_SYNC_UNIX_CHILD";
/// Upper bound on the iterations of a fill loop.
const FILL_LIMIT: usize = 100_000;

const MODES: [Mode; 3] = [Mode::Blocking, Mode::NonBlocking, Mode::Timeout(T)];

// ---- Helpers -----------------------------------------------------------

/// A socket path unique to this process and call, removed on drop.
struct TempPath(PathBuf);

impl TempPath {
    fn new(tag: &str) -> TempPath {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("ontime-sync-{}-{n}-{tag}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        TempPath(path)
    }
}

impl AsRef<Path> for TempPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A listener, a client connected to it and the accepted server side.
fn connected(tag: &str) -> (TempPath, UnixListener, UnixStream, UnixStream) {
    let path = TempPath::new(tag);
    let listener = UnixListener::bind(&path).unwrap();
    let client = UnixStream::connect(&path).unwrap();
    let (server, _) = listener.accept().unwrap();
    (path, listener, client, server)
}

/// Reads every datagram queued on `receiver` (made non-blocking), until the
/// queue is empty and `done` is true; returns whether one read `wanted`.
fn drain(receiver: &UnixDatagram, wanted: &[u8], done: impl Fn() -> bool) -> bool {
    receiver.set_blocking(false).unwrap();
    let mut buf = [0; 64];
    let mut seen = false;
    for _ in 0..FILL_LIMIT {
        match receiver.recv(&mut buf) {
            Ok(n) => seen |= &buf[..n] == wanted,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if done() {
                    return seen;
                }
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("draining: {e:?}"),
        }
    }
    panic!("draining never finished");
}

/// Calls `attempt` (a non-blocking connect or send) until it would block,
/// at most `limit` times, and returns what the calls before it returned.
/// The call that would block must fail with `WouldBlock`, promptly; `what`
/// names the queue that fills.
#[track_caller]
fn fill_until_would_block<R>(
    limit: usize,
    what: &str,
    mut attempt: impl FnMut() -> io::Result<R>,
) -> Vec<R> {
    let mut filled = Vec::new();
    for _ in 0..limit {
        let (result, elapsed) = timed(&mut attempt);
        match result {
            Ok(value) => filled.push(value),
            Err(e) => {
                assert_prompt(elapsed, &format!("the attempt that found {what} full"));
                assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e:?}");
                return filled;
            }
        }
    }
    panic!("{what} never filled in {limit} attempts");
}

/// The datagram a blocked send delivers once its receiver drains.
const LAST: &[u8] = b"last";

/// Runs `send` of [`LAST`] (a blocking `call` to a full `peer`) on a thread
/// of its own, lets it block, then drains `receiver`. Checks that the send
/// returned the whole datagram, not before the drain began but promptly
/// after, and that the datagram arrived.
///
/// `waiting` is the socket the send waits on for readiness: the drain
/// begins once the send is seen waiting on it. `None` for a send that
/// retries with a backoff instead (an unconnected `send_to`): its pauses
/// are waits on no socket, which nothing shows, so it is given 100 ms to
/// block.
#[track_caller]
fn blocked_send_completes_after_drain(
    receiver: &UnixDatagram,
    call: &str,
    peer: &str,
    waiting: Option<&UnixDatagram>,
    send: impl FnOnce(&'static [u8]) -> io::Result<usize> + Send,
) {
    let (drained, result, last) = thread::scope(|s| {
        let blocked = s.spawn(move || send(LAST).map(|n| (n, Instant::now())));
        match waiting {
            Some(sock) => assert_waiting(sock, 1, &format!("the blocking {call} to a full {peer}")),
            None => thread::sleep(Duration::from_millis(100)),
        }
        let drained = Instant::now();
        let last = drain(receiver, LAST, || blocked.is_finished());
        (drained, blocked.join().unwrap(), last)
    });
    let (n, sent) = result.unwrap();
    assert_eq!(n, LAST.len());
    assert!(
        sent >= drained,
        "the blocking {call} to a full {peer} returned before the drain began"
    );
    assert_prompt(
        sent.saturating_duration_since(drained),
        &format!("the {call} after the {peer} drained"),
    );
    assert!(
        last || drain(receiver, LAST, || true),
        "the datagram sent last was lost"
    );
}

// ---- Streams: connect, accept ----------------------------------------------

#[test]
fn stream_pair_echo() {
    watchdog(WATCHDOG, || {
        let (client, server) = UnixStream::pair().unwrap();
        assert_eq!(client.mode(), Mode::Blocking);
        let echo = thread::spawn(move || {
            let mut buf = [0; 64];
            loop {
                let n = server.recv(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                server.send_all(&buf[..n]).unwrap();
            }
        });
        client.set_timeout(Some(MUST_SUCCEED)).unwrap();
        for message in [&b"ping"[..], b"a longer message", b"x"] {
            (&client).write_all(message).unwrap();
            let mut back = vec![0; message.len()];
            (&client).read_exact(&mut back).unwrap();
            assert_eq!(back, message);
        }
        client.shutdown(Shutdown::Write).unwrap();
        echo.join().unwrap();
        let mut buf = [0; 4];
        assert_eq!(client.recv(&mut buf).unwrap(), 0);
    });
}

#[test]
fn connect_to_a_listener_and_exchange() {
    watchdog(WATCHDOG, || {
        let (path, listener, client, server) = connected("exchange");
        assert_eq!(
            listener.local_addr().unwrap().as_pathname(),
            Some(path.as_ref())
        );
        assert_eq!(
            client.peer_addr().unwrap().as_pathname(),
            Some(path.as_ref())
        );
        assert!(client.local_addr().unwrap().is_unnamed());
        assert_eq!(client.mode(), Mode::Blocking);
        assert_eq!(server.mode(), Mode::Blocking);

        client.send_all(b"hello").unwrap();
        let mut buf = [0; 5];
        server.recv_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        server.send_all(b"world").unwrap();
        client.recv_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"world");
        assert!(client.take_error().unwrap().is_none());
        assert!(listener.take_error().unwrap().is_none());
    });
}

#[test]
fn connect_to_a_missing_path_is_not_found_and_to_a_stale_one_refused() {
    watchdog(WATCHDOG, || {
        let missing = TempPath::new("missing");
        let start = Instant::now();
        let e = UnixStream::connect(&missing).unwrap_err();
        assert_prompt(start.elapsed(), "connect to a missing path");
        assert!(
            matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused),
            "{e:?}"
        );

        // A socket file whose listener is gone.
        let stale = TempPath::new("stale");
        drop(UnixListener::bind(&stale).unwrap());
        expect_kind_promptly(
            ErrorKind::ConnectionRefused,
            "connect to a stale path",
            || UnixStream::connect(&stale),
        );
    });
}

#[test]
fn non_blocking_accept_with_nothing_pending_would_block_promptly() {
    watchdog(WATCHDOG, || {
        let path = TempPath::new("accept-nb");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_blocking(false).unwrap();
        expect_kind_promptly(ErrorKind::WouldBlock, "accept", || listener.accept());

        // With a client pending it accepts, and the stream is blocking (R8).
        let _client = UnixStream::connect(&path).unwrap();
        let (server, addr) = listener.accept().unwrap();
        assert!(addr.is_unnamed());
        assert_eq!(server.mode(), Mode::Blocking);
    });
}

#[test]
fn accept_in_timeout_mode_times_out_then_still_accepts() {
    watchdog(WATCHDOG, || {
        let path = TempPath::new("accept-timeout");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_timeout(Some(T)).unwrap();
        assert_times_out(T, || listener.accept());

        let _client = UnixStream::connect(&path).unwrap();
        let start = Instant::now();
        let (server, _) = listener.accept().unwrap();
        assert_prompt(start.elapsed(), "accept of a pending client");
        assert_eq!(
            server.mode(),
            Mode::Blocking,
            "the accepted stream inherited the listener's mode"
        );
    });
}

#[test]
fn blocking_accept_returns_when_a_client_arrives() {
    watchdog(WATCHDOG, || {
        let path = TempPath::new("accept-blocking");
        let listener = UnixListener::bind(&path).unwrap();
        assert_eq!(listener.mode(), Mode::Blocking);
        thread::scope(|s| {
            let client = s.spawn(|| {
                // The client comes while the listener waits.
                assert_waiting(&listener, 1, "blocking accept");
                let client = UnixStream::connect(&path).unwrap();
                client.send_all(b"hi").unwrap();
                client
            });
            let start = Instant::now();
            let server = listener.incoming().next().unwrap().unwrap();
            assert!(start.elapsed() <= MUST_SUCCEED);
            let mut buf = [0; 2];
            server.recv_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"hi");
            drop(client.join().unwrap());
        });
    });
}

#[test]
fn listener_try_clone_copies_the_mode() {
    watchdog(WATCHDOG, || {
        let path = TempPath::new("listener-clone");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_timeout(Some(T)).unwrap();
        let clone = listener.try_clone().unwrap();
        assert_eq!(clone.mode(), Mode::Timeout(T));
        clone.set_blocking(false).unwrap();
        assert_eq!(listener.mode(), Mode::Timeout(T));
        let e = clone.accept().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e:?}");
    });
}

// ---- Streams: receive, send ----------------------------------------------

#[test]
fn non_blocking_recv_with_nothing_to_read_would_block() {
    watchdog(WATCHDOG, || {
        let (a, _b) = UnixStream::pair().unwrap();
        a.set_blocking(false).unwrap();
        expect_kind_promptly(ErrorKind::WouldBlock, "recv", || a.recv(&mut [0; 8]));
        let e = a.peek(&mut [0; 8]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e:?}");
    });
}

#[test]
fn recv_times_out_then_is_still_usable() {
    watchdog(WATCHDOG, || {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_timeout(Some(T)).unwrap();
        let mut buf = [0; 16];
        assert_times_out(T, || a.recv(&mut buf));

        // Partial data comes back at once, however little.
        b.send_all(b"abc").unwrap();
        let start = Instant::now();
        let n = a.recv(&mut buf).unwrap();
        assert_prompt(start.elapsed(), "recv of queued data");
        assert_eq!(&buf[..n], b"abc");
    });
}

#[test]
fn zero_length_recv_returns_at_once_in_every_mode() {
    watchdog(WATCHDOG, || {
        let (a, _b) = UnixStream::pair().unwrap();
        for mode in MODES {
            a.set_mode(mode).unwrap();
            let start = Instant::now();
            assert_eq!(a.recv(&mut []).unwrap(), 0, "{mode:?}");
            assert_eq!((&a).read(&mut []).unwrap(), 0, "{mode:?}");
            assert_eq!(a.peek(&mut []).unwrap(), 0, "{mode:?}");
            assert_prompt(start.elapsed(), "a zero-length recv");
        }
    });
}

#[test]
fn peek_does_not_consume() {
    watchdog(WATCHDOG, || {
        let (a, b) = UnixStream::pair().unwrap();
        b.send_all(b"peeked").unwrap();
        let mut buf = [0; 16];
        assert_eq!(a.peek(&mut buf).unwrap(), 6);
        assert_eq!(&buf[..6], b"peeked");
        assert_eq!(a.recv(&mut buf).unwrap(), 6);
        assert_eq!(&buf[..6], b"peeked");
        a.set_timeout(Some(T)).unwrap();
        assert_times_out(T, || a.peek(&mut buf));
    });
}

#[test]
fn peer_close_gives_eof_promptly_in_every_mode() {
    watchdog(WATCHDOG, || {
        for mode in MODES {
            let (a, b) = UnixStream::pair().unwrap();
            a.set_mode(mode).unwrap();
            drop(b);
            let start = Instant::now();
            assert_eq!(a.recv(&mut [0; 8]).unwrap(), 0, "{mode:?}");
            assert_prompt(start.elapsed(), "recv after the peer closed");
        }

        // And a call already waiting when the peer closes wakes up.
        for mode in [Mode::Blocking, Mode::Timeout(MUST_SUCCEED)] {
            let (a, b) = UnixStream::pair().unwrap();
            a.set_mode(mode).unwrap();
            let (closed, (n, returned)) = thread::scope(|s| {
                let reader = s.spawn(|| {
                    let n = a.recv(&mut [0; 8]);
                    (n.unwrap(), Instant::now())
                });
                assert_waiting(&a, 1, &format!("recv in {mode:?}"));
                let closed = Instant::now();
                drop(b);
                (closed, reader.join().unwrap())
            });
            assert_eq!(n, 0, "{mode:?}");
            assert!(
                returned >= closed,
                "recv in {mode:?} returned before the peer closed"
            );
            assert_prompt(
                returned.saturating_duration_since(closed),
                "a waiting recv after the peer closed",
            );
        }
    });
}

#[test]
fn send_all_to_a_peer_that_never_reads_times_out() {
    watchdog(WATCHDOG, || {
        let (a, _b) = UnixStream::pair().unwrap();
        SockRef::from(&a).set_send_buffer_size(64 * 1024).unwrap();
        a.set_timeout(Some(T)).unwrap();
        let big = vec![7u8; 16 << 20];
        assert_times_out(T, || a.send_all(&big));

        // The same through `Write::write_all`, and a single send.
        assert_times_out(T, || (&a).write_all(&big));
        assert_times_out(T, || a.send(&big));

        a.set_blocking(false).unwrap();
        expect_kind_promptly(
            ErrorKind::WouldBlock,
            "a non-blocking send to a full buffer",
            || a.send(&big),
        );
    });
}

#[test]
fn send_all_to_a_reading_peer_arrives_whole_and_in_order() {
    watchdog(WATCHDOG, || {
        let (a, b) = UnixStream::pair().unwrap();
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let sender = thread::spawn(move || {
            a.set_timeout(Some(MUST_SUCCEED)).unwrap();
            a.send_all(&data).unwrap();
        });
        b.set_timeout(Some(MUST_SUCCEED)).unwrap();
        let mut got = vec![0; expected.len()];
        b.recv_exact(&mut got).unwrap();
        assert!(got == expected, "the data arrived changed");
        sender.join().unwrap();
    });
}

#[test]
fn send_after_shutdown_write_is_broken_pipe_without_sigpipe() {
    watchdog(WATCHDOG, || {
        in_child(
            CHILD_ENV,
            "send_after_shutdown_write_is_broken_pipe_without_sigpipe",
            || {
                // SAFETY: restoring the default disposition of SIGPIPE is a plain
                // `signal(2)` call; this child process runs this one test only.
                let previous = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
                assert_ne!(previous, libc::SIG_ERR);

                let (a, b) = UnixStream::pair().unwrap();
                a.shutdown(Shutdown::Write).unwrap();
                for mode in MODES {
                    a.set_mode(mode).unwrap();
                    let e = a.send(b"x").unwrap_err();
                    assert_eq!(e.kind(), ErrorKind::BrokenPipe, "{mode:?}: {e:?}");
                    let e = a.send_all(b"xyz").unwrap_err();
                    assert_eq!(e.kind(), ErrorKind::BrokenPipe, "{mode:?}: {e:?}");
                    let e = (&a).write(b"x").unwrap_err();
                    assert_eq!(e.kind(), ErrorKind::BrokenPipe, "{mode:?}: {e:?}");
                }

                // A peer that is gone.
                drop(a);
                let (c, d) = UnixStream::pair().unwrap();
                drop(d);
                let e = c.send_all(b"x").unwrap_err();
                assert_eq!(e.kind(), ErrorKind::BrokenPipe, "{e:?}");
                drop(b);

                // A datagram socket shut down for writing.
                let (dgram, _peer) = UnixDatagram::pair().unwrap();
                dgram.shutdown(Shutdown::Write).unwrap();
                let e = dgram.send(b"x").unwrap_err();
                assert_eq!(e.kind(), ErrorKind::BrokenPipe, "{e:?}");
            },
        );
    });
}

#[test]
fn read_exact_gathers_chunks_within_one_deadline() {
    watchdog(WATCHDOG, || {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_timeout(Some(MUST_SUCCEED)).unwrap();
        thread::scope(|s| {
            s.spawn(|| {
                for chunk in [b"ab", b"cd", b"ef", b"gh"] {
                    // The chunks come apart, each once read_exact waits (for
                    // the first, surely; for the others, the count may still
                    // be the previous wait's).
                    assert_waiting(&a, 1, "read_exact");
                    thread::sleep(Duration::from_millis(50));
                    b.send_all(chunk).unwrap();
                }
            });
            let mut buf = [0; 8];
            (&a).read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"abcdefgh");
        });
    });
}

#[test]
fn read_exact_has_one_deadline_for_the_whole_call() {
    watchdog(WATCHDOG, || {
        let (a, b) = UnixStream::pair().unwrap();
        let t = Duration::from_millis(400);
        let started = Arc::new(Barrier::new(2));
        // Each chunk comes well within `t` of the last, but all four take
        // longer than `t` (R3).
        let writer = thread::spawn({
            let started = Arc::clone(&started);
            move || {
                started.wait();
                for chunk in [b"ab", b"cd", b"ef", b"gh"] {
                    thread::sleep(Duration::from_millis(150));
                    if b.send_all(chunk).is_err() {
                        break;
                    }
                }
            }
        });
        a.set_timeout(Some(t)).unwrap();
        started.wait();
        assert_times_out(t, || a.recv_exact(&mut [0; 8]));
        writer.join().unwrap();
    });
}

#[test]
fn read_exact_short_then_close_is_unexpected_eof() {
    watchdog(WATCHDOG, || {
        for mode in [Mode::Blocking, Mode::Timeout(MUST_SUCCEED)] {
            let (a, b) = UnixStream::pair().unwrap();
            a.set_mode(mode).unwrap();
            // Queued before the call: it reads these, then waits for the
            // rest, and the close comes during that wait.
            b.send_all(b"abc").unwrap();
            let mut buf = [0; 8];
            let (result, elapsed) = thread::scope(|s| {
                s.spawn(|| {
                    assert_waiting(&a, 1, &format!("read_exact in {mode:?}"));
                    drop(b);
                });
                timed(|| (&a).read_exact(&mut buf))
            });
            let e = result.unwrap_err();
            assert!(elapsed <= MUST_SUCCEED);
            assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "{mode:?}: {e:?}");
            assert_eq!(&buf[..3], b"abc");
        }
    });
}

#[test]
fn shutdown_read_from_another_thread_wakes_a_blocked_recv() {
    watchdog(WATCHDOG, || {
        for mode in [Mode::Blocking, Mode::Timeout(MUST_SUCCEED)] {
            let (a, _b) = UnixStream::pair().unwrap();
            a.set_mode(mode).unwrap();
            let a = Arc::new(a);
            let reader = thread::spawn({
                let a = Arc::clone(&a);
                move || {
                    let n = a.recv(&mut [0; 8]);
                    (n.unwrap(), Instant::now())
                }
            });
            assert_waiting(&*a, 1, &format!("recv in {mode:?}"));
            let shut = Instant::now();
            a.shutdown(Shutdown::Read).unwrap();
            let (n, returned) = reader.join().unwrap();
            assert_eq!(n, 0, "{mode:?}");
            assert!(
                returned >= shut,
                "recv in {mode:?} returned before shutdown(Read)"
            );
            assert_prompt(
                returned.saturating_duration_since(shut),
                "the recv woken by shutdown",
            );
        }
    });
}

#[test]
fn stream_try_clone_copies_the_mode_then_is_independent() {
    watchdog(WATCHDOG, || {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_timeout(Some(T)).unwrap();
        let clone = a.try_clone().unwrap();
        assert_eq!(clone.mode(), Mode::Timeout(T));
        clone.set_blocking(false).unwrap();
        assert_eq!(a.mode(), Mode::Timeout(T));

        expect_kind_promptly(
            ErrorKind::WouldBlock,
            "the non-blocking clone's recv",
            || clone.recv(&mut [0; 8]),
        );
        assert_times_out(T, || a.recv(&mut [0; 8]));

        b.send_all(b"both").unwrap();
        let mut buf = [0; 4];
        clone.set_timeout(Some(MUST_SUCCEED)).unwrap();
        clone.recv_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"both");
    });
}

// ---- Connect to a full accept queue ------------------------------------------

#[test]
fn connect_to_a_full_accept_queue_follows_the_mode() {
    watchdog(WATCHDOG, || {
        in_child(
            CHILD_ENV,
            "connect_to_a_full_accept_queue_follows_the_mode",
            || {
                let path = TempPath::new("backlog");
                let socket = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
                socket.bind(&SockAddr::unix(&path).unwrap()).unwrap();
                socket.listen(0).unwrap();
                let listener = UnixListener::from(std::os::unix::net::UnixListener::from(socket));

                // Non-blocking: fill the queue until a connect would block.
                sync::set_default_timeout(Some(Duration::ZERO));
                let fillers =
                    fill_until_would_block(16, "the accept queue", || UnixStream::connect(&path));

                // Timeout mode: the connect waits, then times out.
                sync::set_default_timeout(Some(T));
                assert_times_out(T, || UnixStream::connect(&path));

                // Blocking: the connect completes once the listener makes room.
                sync::set_default_timeout(None);
                let started = Arc::new(Barrier::new(2));
                let connector = thread::spawn({
                    let started = Arc::clone(&started);
                    let path = path.0.clone();
                    move || {
                        started.wait();
                        UnixStream::connect(path).map(|stream| (stream, Instant::now()))
                    }
                });
                started.wait();
                thread::sleep(Duration::from_millis(200));
                let accepted = Instant::now();
                listener.set_timeout(Some(MUST_SUCCEED)).unwrap();
                let _room = listener.accept().unwrap();
                let (stream, connected) = connector.join().unwrap().unwrap();
                assert_eq!(stream.mode(), Mode::Blocking);
                assert!(
                    connected >= accepted,
                    "the blocking connect to a full queue returned before the accept made room"
                );
                // The backoff caps each pause at 64 ms.
                assert_prompt(
                    connected.saturating_duration_since(accepted),
                    "the connect after the accept",
                );
                assert!(!fillers.is_empty());
            },
        );
    });
}

// ---- Datagrams ---------------------------------------------------------------

#[test]
fn datagram_pair_round_trip() {
    watchdog(WATCHDOG, || {
        let (a, b) = UnixDatagram::pair().unwrap();
        assert_eq!(a.mode(), Mode::Blocking);
        assert_eq!(a.send(b"one").unwrap(), 3);
        assert_eq!(a.send(b"two!").unwrap(), 4);
        let mut buf = [0; 16];
        assert_eq!(b.peek(&mut buf).unwrap(), 3);
        assert_eq!(b.recv(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"one");
        let (n, from) = b.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"two!");
        assert!(from.is_unnamed());
        assert!(a.peer_addr().is_ok());
    });
}

#[test]
fn datagram_bind_send_to_recv_from_with_addresses() {
    watchdog(WATCHDOG, || {
        let (server_path, client_path) =
            (TempPath::new("dgram-server"), TempPath::new("dgram-client"));
        let server = UnixDatagram::bind(&server_path).unwrap();
        let client = UnixDatagram::bind(&client_path).unwrap();
        server.set_timeout(Some(MUST_SUCCEED)).unwrap();
        client.set_timeout(Some(MUST_SUCCEED)).unwrap();
        assert_eq!(
            server.local_addr().unwrap().as_pathname(),
            Some(server_path.as_ref())
        );

        assert_eq!(client.send_to(b"ping", &server_path).unwrap(), 4);
        let mut buf = [0; 16];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(from.as_pathname(), Some(client_path.as_ref()));

        server
            .send_to(b"pong", from.as_pathname().unwrap())
            .unwrap();
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"pong");
        assert_eq!(from.as_pathname(), Some(server_path.as_ref()));

        // Connected: send and recv.
        let unbound = UnixDatagram::unbound().unwrap();
        unbound.connect(&server_path).unwrap();
        assert_eq!(
            unbound.peer_addr().unwrap().as_pathname(),
            Some(server_path.as_ref())
        );
        unbound.send(b"hello").unwrap();
        assert_eq!(server.recv(&mut buf).unwrap(), 5);

        // Nobody there.
        let e = client
            .send_to(b"x", TempPath::new("dgram-missing"))
            .unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused),
            "{e:?}"
        );
    });
}

#[test]
fn datagram_recv_follows_the_mode() {
    watchdog(WATCHDOG, || {
        let (a, b) = UnixDatagram::pair().unwrap();
        let mut buf = [0; 16];

        a.set_blocking(false).unwrap();
        expect_kind_promptly(ErrorKind::WouldBlock, "recv_from", || a.recv_from(&mut buf));

        a.set_timeout(Some(T)).unwrap();
        assert_times_out(T, || a.recv(&mut buf));
        assert_times_out(T, || a.recv_from(&mut buf));

        // Zero-length receives neither wait nor consume.
        for mode in MODES {
            a.set_mode(mode).unwrap();
            let start = Instant::now();
            assert_eq!(a.recv(&mut []).unwrap(), 0);
            assert_prompt(start.elapsed(), "a zero-length recv");
        }
        b.send(b"kept").unwrap();
        assert_eq!(a.recv(&mut []).unwrap(), 0);
        a.set_timeout(Some(MUST_SUCCEED)).unwrap();
        assert_eq!(a.recv(&mut buf).unwrap(), 4);

        // Blocking: a datagram sent later arrives.
        a.set_blocking(true).unwrap();
        thread::scope(|s| {
            s.spawn(|| {
                assert_waiting(&a, 1, "blocking recv");
                b.send(b"later").unwrap();
            });
            let n = a.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"later");
        });
    });
}

#[test]
fn datagram_send_to_a_full_receiver_waits_for_room() {
    watchdog(WATCHDOG, || {
        let path = TempPath::new("dgram-full");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let sender = UnixDatagram::unbound().unwrap();
        sender.set_blocking(false).unwrap();
        fill_until_would_block(FILL_LIMIT, "the receiver's queue", || {
            sender.send_to(b"filler", &path)
        });

        sender.set_timeout(Some(T)).unwrap();
        assert_times_out(T, || sender.send_to(b"late", &path));

        // Blocking: the send completes once the receiver drains.
        sender.set_blocking(true).unwrap();
        let target = path.0.clone();
        blocked_send_completes_after_drain(&receiver, "send_to", "receiver", None, move |last| {
            sender.send_to(last, target)
        });
    });
}

#[test]
fn datagram_send_to_a_full_connected_peer_follows_the_mode() {
    watchdog(WATCHDOG, || {
        let (a, b) = UnixDatagram::pair().unwrap();
        a.set_blocking(false).unwrap();
        fill_until_would_block(FILL_LIMIT, "the peer's queue", || a.send(b"filler"));

        a.set_timeout(Some(T)).unwrap();
        assert_times_out(T, || a.send(b"late"));

        a.set_blocking(true).unwrap();
        // A socketpair's sends are limited by the sender's buffer, which
        // counts as having room again only once mostly drained: the helper
        // drains it all.
        blocked_send_completes_after_drain(&b, "send", "peer", Some(&a), |last| a.send(last));
    });
}

#[test]
fn datagram_shutdown_wakes_a_blocked_recv() {
    watchdog(WATCHDOG, || {
        for mode in [Mode::Blocking, Mode::Timeout(MUST_SUCCEED)] {
            let (a, _b) = UnixDatagram::pair().unwrap();
            a.set_mode(mode).unwrap();
            // The shutdown goes through a clone: it is the same socket.
            let clone = a.try_clone().unwrap();
            let (shut, (received, returned)) = thread::scope(|s| {
                let reader = s.spawn(|| {
                    let received = a.recv_from(&mut [0; 8]);
                    (received, Instant::now())
                });
                assert_waiting(&a, 1, &format!("recv_from in {mode:?}"));
                let shut = Instant::now();
                clone.shutdown(Shutdown::Read).unwrap();
                (shut, reader.join().unwrap())
            });
            let (n, from) = received.unwrap();
            assert_eq!(n, 0, "{mode:?}");
            assert!(from.is_unnamed());
            assert!(
                returned >= shut,
                "recv_from in {mode:?} returned before shutdown(Read)"
            );
            assert_prompt(
                returned.saturating_duration_since(shut),
                "the recv woken by shutdown",
            );

            // Later calls return at once too, except in non-blocking mode,
            // where the OS's answer stands.
            let start = Instant::now();
            assert_eq!(a.recv(&mut [0; 8]).unwrap(), 0);
            assert_eq!(a.peek(&mut [0; 8]).unwrap(), 0);
            assert_prompt(start.elapsed(), "recv after shutdown");
            a.set_blocking(false).unwrap();
            let e = a.recv(&mut [0; 8]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e:?}");
        }
    });
}

#[test]
fn datagram_try_clone_copies_the_mode() {
    watchdog(WATCHDOG, || {
        let sock = UnixDatagram::unbound().unwrap();
        assert!(sock.local_addr().unwrap().is_unnamed());
        sock.set_timeout(Some(T)).unwrap();
        let clone = sock.try_clone().unwrap();
        assert_eq!(clone.mode(), Mode::Timeout(T));
        clone.set_blocking(false).unwrap();
        assert_eq!(sock.mode(), Mode::Timeout(T));
        assert!(sock.take_error().unwrap().is_none());
        let e = sock.peer_addr().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotConnected, "{e:?}");
    });
}

// ---- The default timeout -------------------------------------------------------

#[test]
fn new_unix_sockets_take_the_default_timeout() {
    watchdog(WATCHDOG, || {
        in_child(
            CHILD_ENV,
            "new_unix_sockets_take_the_default_timeout",
            || {
                let path = TempPath::new("default");
                let listener = UnixListener::bind(&path).unwrap();
                assert_eq!(listener.mode(), Mode::Blocking);

                let ten = Duration::from_secs(10);
                sync::set_default_timeout(Some(ten));
                let client = UnixStream::connect(&path).unwrap();
                assert_eq!(client.timeout(), Some(ten));
                let (server, _) = listener.accept().unwrap();
                assert_eq!(
                    server.timeout(),
                    Some(ten),
                    "accept ignores the default (R8)"
                );
                assert_eq!(
                    listener.mode(),
                    Mode::Blocking,
                    "an older listener changed mode"
                );
                let (a, b) = UnixStream::pair().unwrap();
                assert_eq!((a.timeout(), b.timeout()), (Some(ten), Some(ten)));
                let (std_a, _std_b) = std::os::unix::net::UnixStream::pair().unwrap();
                assert_eq!(UnixStream::from(std_a).timeout(), Some(ten));
                assert_eq!(UnixDatagram::unbound().unwrap().timeout(), Some(ten));
                let (c, _d) = UnixDatagram::pair().unwrap();
                assert_eq!(c.timeout(), Some(ten));
                let other = TempPath::new("default-listener");
                assert_eq!(UnixListener::bind(&other).unwrap().timeout(), Some(ten));

                // A listener in timeout mode, a default of zero: the accepted
                // stream is non-blocking (R8).
                listener.set_timeout(Some(T)).unwrap();
                sync::set_default_timeout(Some(Duration::ZERO));
                let _client2 = UnixStream::connect(&path).unwrap();
                let (server2, _) = listener.accept().unwrap();
                assert!(!server2.is_blocking());
                expect_kind_promptly(ErrorKind::WouldBlock, "recv under a zero default", || {
                    server2.recv(&mut [0; 4])
                });

                sync::set_default_timeout(None);
                assert_eq!(UnixStream::pair().unwrap().0.mode(), Mode::Blocking);
            },
        );
    });
}
