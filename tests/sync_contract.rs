//! Regression tests of the sync facade's contract (the contract in
//! ontime-sync's crate docs, rules R1-R14) that the driver must keep passing
//! through its redesign: a mode change under a waiting call (R4),
//! non-blocking accept and connect finished with `select`,
//! `create_connection` over unreachable addresses (R9), non-blocking
//! `send_all` and `recv_exact` (R2, R3), the end of file in every mode, a
//! connected UDP socket's refused error, and `shutdown` of a socket that
//! never connected. Where an OS error passes through (R2), the tests check
//! its raw errno as well as its kind: `WouldBlock` is the OS's `EAGAIN`.
//!
//! Over real sockets on 127.0.0.1, Linux only (TCP states and the
//! full-accept-queue recipe are Linux's). This binary never changes the
//! process-wide default timeout, except in a child process, so every socket
//! here starts blocking. Timing follows the contract's bounds: never early,
//! late by at most `max(1 s, T)`, "promptly" within 250 ms, 10 s for waits
//! that must succeed; every test body runs under a 60 s watchdog and every
//! loop is bounded.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use ontime_sync::{create_connection, select, Mode, TcpListener, TcpStream, UdpSocket};
use socket2::{Domain, Protocol, Socket, Type};

mod common;

use common::tcp::{full_accept_queue, pair, refused_addr, small_buffer_pair};

use common::{
    assert_prompt, assert_timed_out, assert_times_out, assert_waiting, expect_kind,
    expect_kind_promptly, expect_timed_out, in_child, timed, watchdog, MUST_SUCCEED, WATCHDOG,
};

/// The timeout under test in timing tests.
const T: Duration = Duration::from_millis(300);
/// More than the shrunk buffers of both ends hold together, so a `send_all`
/// of it to a peer that does not read cannot finish.
const MORE_THAN_BUFFERED: usize = 16 << 20;
/// Set in a child process to the name of the test it runs, for tests that
/// change the process-wide default timeout.
const CHILD_ENV: &str = "ONTIME_SYNC_CONTRACT_CHILD";

// ---------------------------------------------------------------------------
// Sockets

/// The TCP state of `stream` (`tcpi_state` of `TCP_INFO`).
fn tcp_state(stream: &TcpStream) -> u8 {
    // SAFETY: tcp_info is plain data, for which all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is writable for `len` bytes, and the descriptor stays
    // open for the call, `stream` being borrowed.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", io::Error::last_os_error());
    info.tcpi_state
}

/// Waits until `stream` has received its peer's FIN (it is in `CLOSE_WAIT`),
/// so that everything the peer sent before it is queued too. No event of
/// the facade says so (data alone makes the stream readable), hence a
/// bounded poll of the kernel's state.
fn wait_for_peer_fin(stream: &TcpStream) {
    const TCP_CLOSE_WAIT: u8 = 8;
    let start = Instant::now();
    loop {
        let state = tcp_state(stream);
        if state == TCP_CLOSE_WAIT {
            return;
        }
        assert!(
            start.elapsed() <= MUST_SUCCEED,
            "the peer's FIN did not arrive within {MUST_SUCCEED:?} (TCP state {state})"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until `sock` is readable, which must happen within [`MUST_SUCCEED`].
#[track_caller]
fn wait_readable(sock: &dyn ontime_sync::Selectable, what: &str) {
    let ready = select(&[sock], &[], Some(MUST_SUCCEED)).expect("select");
    assert_eq!(
        ready.readable,
        vec![0],
        "{what} did not become readable within {MUST_SUCCEED:?}"
    );
}

// ---------------------------------------------------------------------------
// Errors

/// Asserts that `result` failed with the OS error `errno`, of kind `kind`,
/// passed through unchanged (R2); returns the error.
#[track_caller]
fn expect_os_error<R: std::fmt::Debug>(
    result: io::Result<R>,
    kind: ErrorKind,
    errno: i32,
) -> io::Error {
    let e = expect_kind(result, kind);
    assert_eq!(
        e.raw_os_error(),
        Some(errno),
        "expected the OS's errno {errno} ({}), got {e:?}",
        io::Error::from_raw_os_error(errno)
    );
    e
}

/// Runs `call` and asserts that it failed with the OS error `errno` of kind
/// `kind` ([`expect_os_error`]) without waiting ([`assert_prompt`]).
#[track_caller]
fn expect_os_error_promptly<R: std::fmt::Debug>(
    kind: ErrorKind,
    errno: i32,
    what: &str,
    call: impl FnOnce() -> io::Result<R>,
) -> io::Error {
    let (result, elapsed) = timed(call);
    let e = expect_os_error(result, kind, errno);
    assert_prompt(elapsed, what);
    e
}

/// Runs `call` and asserts that it is "not now" in non-blocking mode: the
/// OS's own `EAGAIN`, promptly (R2).
#[track_caller]
fn expect_would_block<R: std::fmt::Debug>(what: &str, call: impl FnOnce() -> io::Result<R>) {
    expect_os_error_promptly(ErrorKind::WouldBlock, libc::EAGAIN, what, call);
}

// ---------------------------------------------------------------------------
// R4: a mode change from another thread leaves a waiting call alone

/// A call in timeout mode that waits while another thread makes the socket
/// non-blocking keeps its deadline: `TimedOut` at ~T, not `WouldBlock` at
/// once. Later calls are non-blocking.
#[test]
fn mode_change_to_non_blocking_leaves_a_waiting_timed_call_to_time_out() {
    watchdog(WATCHDOG, || {
        let (client, _server) = pair();
        client.set_timeout(Some(T)).unwrap();
        thread::scope(|s| {
            let reader = s.spawn(|| timed(|| client.recv(&mut [0; 16])));
            assert_waiting(&client, 1, "recv in timeout mode");
            client.set_blocking(false).unwrap();
            let (result, elapsed) = reader.join().unwrap();
            expect_timed_out(result);
            assert_timed_out(elapsed, T);
        });
        assert_eq!(client.mode(), Mode::NonBlocking);
        expect_would_block("recv after the change", || client.recv(&mut [0; 16]));
    });
}

/// As above, but the waiting call is woken once with still nothing to read:
/// `shutdown(Write)` wakes every call blocked on the socket (R13), and the
/// call, trying again, must go on waiting within its own deadline rather
/// than take up the socket's new mode.
#[test]
fn mode_change_to_non_blocking_holds_across_a_wake_up_of_the_waiting_call() {
    watchdog(WATCHDOG, || {
        let (client, _server) = pair();
        client.set_timeout(Some(T)).unwrap();
        thread::scope(|s| {
            let reader = s.spawn(|| timed(|| client.recv(&mut [0; 16])));
            assert_waiting(&client, 1, "recv in timeout mode");
            client.set_blocking(false).unwrap();
            // The read side stays open and empty: the woken call finds
            // nothing to read and must wait again.
            client.shutdown(Shutdown::Write).unwrap();
            let (result, elapsed) = reader.join().unwrap();
            expect_timed_out(result);
            assert_timed_out(elapsed, T);
        });
        expect_would_block("recv after the change", || client.recv(&mut [0; 16]));
    });
}

/// A call in timeout mode that waits while the socket is made non-blocking
/// still returns the data that arrives within its deadline.
#[test]
fn mode_change_to_non_blocking_lets_a_waiting_timed_call_get_its_data() {
    watchdog(WATCHDOG, || {
        let (client, server) = pair();
        client.set_timeout(Some(MUST_SUCCEED)).unwrap();
        thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut buf = [0; 16];
                client.recv(&mut buf).map(|n| buf[..n].to_vec())
            });
            assert_waiting(&client, 1, "recv in timeout mode");
            client.set_blocking(false).unwrap();
            server.send_all(b"data").unwrap();
            let data = reader.join().unwrap();
            assert_eq!(
                data.expect("the waiting call must get the data, whatever the new mode"),
                b"data"
            );
        });
        expect_would_block("recv after the change", || client.recv(&mut [0; 16]));
    });
}

// ---------------------------------------------------------------------------
// Accept

/// A non-blocking listener: `WouldBlock` (EAGAIN) with nothing pending;
/// once `select` reports it readable, `accept` succeeds, and the accepted
/// stream is blocking, as there is no default timeout (R8).
#[test]
fn non_blocking_accept_would_block_then_accepts_once_select_reports_it() {
    watchdog(WATCHDOG, || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_blocking(false).unwrap();
        expect_would_block("accept with nothing pending", || listener.accept());

        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        wait_readable(&listener, "the listener with a client pending");
        let (accepted, peer) = listener.accept().expect("accept after select");
        assert_eq!(peer, client.local_addr().unwrap());
        assert_eq!(accepted.peer_addr().unwrap(), client.local_addr().unwrap());
        assert_eq!(accepted.mode(), Mode::Blocking);

        expect_would_block("accept with nothing pending again", || listener.accept());
    });
}

// ---------------------------------------------------------------------------
// Connect (R9, R10)

/// Checks a non-blocking connect to a port where nothing listens, made by
/// `connect`: either it fails at once with `ConnectionRefused`, or it returns
/// a non-blocking stream still connecting, which `select` reports writable
/// and whose `take_error` is then the refusal (ECONNREFUSED), once. Such a
/// stream never connected: `shutdown` is `NotConnected` (ENOTCONN).
fn check_non_blocking_connect_is_refused(connect: impl FnOnce() -> io::Result<TcpStream>) {
    let (result, elapsed) = timed(connect);
    assert_prompt(elapsed, "a non-blocking connect");
    let stream = match result {
        Ok(stream) => stream,
        Err(e) => {
            expect_os_error::<()>(Err(e), ErrorKind::ConnectionRefused, libc::ECONNREFUSED);
            return;
        }
    };
    assert_eq!(stream.mode(), Mode::NonBlocking);
    let ready = select(&[], &[&stream], Some(MUST_SUCCEED)).unwrap();
    assert_eq!(
        ready.writable,
        vec![0],
        "the refused connect never became writable within {MUST_SUCCEED:?}"
    );
    let error = stream
        .take_error()
        .unwrap()
        .expect("a refused connect leaves its error pending");
    expect_os_error::<()>(Err(error), ErrorKind::ConnectionRefused, libc::ECONNREFUSED);
    assert!(
        stream.take_error().unwrap().is_none(),
        "take_error clears the error"
    );
    expect_os_error_promptly(
        ErrorKind::NotConnected,
        libc::ENOTCONN,
        "shutdown after a refused connect",
        || stream.shutdown(Shutdown::Both),
    );
}

#[test]
fn non_blocking_connect_to_a_closed_port_is_refused_through_take_error() {
    watchdog(WATCHDOG, || {
        let addr = refused_addr();
        check_non_blocking_connect_is_refused(|| create_connection(addr, Some(Duration::ZERO)));
    });
}

/// The same through `TcpStream::connect` with a default timeout of zero
/// (R9: `connect` is `create_connection` with the default), in a child
/// process as the default is process-wide.
#[test]
fn connect_with_a_zero_default_to_a_closed_port_is_refused_through_take_error() {
    let name = "connect_with_a_zero_default_to_a_closed_port_is_refused_through_take_error";
    in_child(CHILD_ENV, name, || {
        watchdog(WATCHDOG, || {
            ontime_sync::set_default_timeout(Some(Duration::ZERO));
            let addr = refused_addr();
            check_non_blocking_connect_is_refused(|| TcpStream::connect(addr));
        });
    });
}

/// The control of the test above: a non-blocking connect to a listener
/// becomes writable with no error pending, and is connected.
#[test]
fn non_blocking_connect_to_a_listener_becomes_writable_without_error() {
    watchdog(WATCHDOG, || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (stream, elapsed) = timed(|| create_connection(addr, Some(Duration::ZERO)));
        assert_prompt(elapsed, "a non-blocking connect");
        let stream = stream.expect("a non-blocking connect to a listener");
        assert_eq!(stream.mode(), Mode::NonBlocking);
        let ready = select(&[], &[&stream], Some(MUST_SUCCEED)).unwrap();
        assert_eq!(ready.writable, vec![0]);
        assert!(stream.take_error().unwrap().is_none());
        assert_eq!(stream.peer_addr().unwrap(), addr);
        let (accepted, _) = listener.accept().unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), stream.local_addr().unwrap());
    });
}

/// R9: each address gets its own timeout, so two unreachable ones take two
/// timeouts (never less), and the error is the last attempt's.
#[test]
fn create_connection_over_two_unreachable_addresses_times_out_per_attempt() {
    watchdog(WATCHDOG, || {
        let Some((first, _first_filler)) = full_accept_queue() else {
            return;
        };
        let Some((second, _second_filler)) = full_accept_queue() else {
            return;
        };
        let addrs = [first.local_addr().unwrap(), second.local_addr().unwrap()];
        let (result, elapsed) = timed(|| create_connection(&addrs[..], Some(T)));
        expect_timed_out(result);
        // Both deadlines are computed after the clock starts, each never
        // early: 2T, strictly (the contract allows 2 x 10 ms less).
        assert_timed_out(elapsed, 2 * T);
    });
}

/// R9: the error is the LAST attempt's, whatever the earlier ones were: a
/// timed-out address then a refused one is `ConnectionRefused` (after one
/// timeout), a refused one then a timed-out one is `TimedOut`.
#[test]
fn create_connection_returns_the_last_attempts_error() {
    watchdog(WATCHDOG, || {
        let Some((unreachable, _filler)) = full_accept_queue() else {
            return;
        };
        let unreachable = unreachable.local_addr().unwrap();

        let addrs = [unreachable, refused_addr()];
        let (result, elapsed) = timed(|| create_connection(&addrs[..], Some(T)));
        expect_os_error(result, ErrorKind::ConnectionRefused, libc::ECONNREFUSED);
        assert_timed_out(elapsed, T);

        let addrs = [refused_addr(), unreachable];
        assert_times_out(T, || create_connection(&addrs[..], Some(T)));
    });
}

// ---------------------------------------------------------------------------
// send_all (R2, R3)

/// A non-blocking `send_all` to a peer that does not read sends what fits,
/// then reports `WouldBlock` (EAGAIN) at once; so do later sends.
#[test]
fn non_blocking_send_all_to_a_peer_that_does_not_read_would_block_promptly() {
    watchdog(WATCHDOG, || {
        let (client, _server) = small_buffer_pair();
        client.set_blocking(false).unwrap();
        let data = vec![7; MORE_THAN_BUFFERED];
        expect_would_block("send_all that fills the buffers", || client.send_all(&data));
        expect_would_block("send_all into full buffers", || client.send_all(&data));
        expect_would_block("write_all into full buffers", || (&client).write_all(&data));
        expect_would_block("send into full buffers", || client.send(&data));
    });
}

// ---------------------------------------------------------------------------
// recv_exact / read_exact (R2, R3)

/// Non-blocking `recv_exact` and `read_exact` with nothing queued:
/// `WouldBlock` (EAGAIN) at once.
#[test]
fn non_blocking_recv_exact_without_data_would_block() {
    watchdog(WATCHDOG, || {
        let (client, _server) = pair();
        client.set_blocking(false).unwrap();
        let mut buf = [0; 8];
        expect_would_block("recv_exact with nothing queued", || {
            client.recv_exact(&mut buf)
        });
        expect_would_block("read_exact with nothing queued", || {
            (&client).read_exact(&mut buf)
        });
    });
}

/// Non-blocking `recv_exact` and `read_exact` with 2 of 8 bytes queued:
/// `WouldBlock` (EAGAIN) at once, not a short success nor a wait; the bytes
/// taken are in the buffer (their count is lost, as the docs say).
#[test]
fn non_blocking_recv_exact_with_partial_data_would_block() {
    watchdog(WATCHDOG, || {
        let (client, server) = pair();
        server.set_nodelay(true).unwrap();
        client.set_blocking(false).unwrap();

        server.send_all(b"ab").unwrap();
        wait_readable(&client, "the client with 2 bytes sent");
        let mut buf = [0; 8];
        expect_would_block("recv_exact with 2 of 8 bytes", || {
            client.recv_exact(&mut buf)
        });
        assert_eq!(&buf[..2], b"ab");

        server.send_all(b"cd").unwrap();
        wait_readable(&client, "the client with 2 more bytes sent");
        let mut buf = [0; 8];
        expect_would_block("read_exact with 2 of 8 bytes", || {
            (&client).read_exact(&mut buf)
        });
        assert_eq!(&buf[..2], b"cd");
    });
}

/// 3 bytes then FIN, all queued before the call: `recv_exact` and
/// `read_exact` of 8 bytes are `UnexpectedEof` at once in every mode
/// (non-blocking included: the end of file is not "not now").
#[test]
fn recv_exact_with_three_bytes_then_fin_is_unexpected_eof_in_every_mode() {
    watchdog(WATCHDOG, || {
        for mode in [Mode::Blocking, Mode::NonBlocking, Mode::Timeout(T)] {
            for read_exact in [false, true] {
                let what = format!("read_exact: {read_exact}, in {mode:?}");
                let (client, server) = pair();
                client.set_mode(mode).unwrap();
                server.send_all(b"abc").unwrap();
                server.shutdown(Shutdown::Write).unwrap();
                wait_for_peer_fin(&client);
                let mut buf = [0; 8];
                expect_kind_promptly(ErrorKind::UnexpectedEof, &what, || {
                    if read_exact {
                        (&client).read_exact(&mut buf)
                    } else {
                        client.recv_exact(&mut buf)
                    }
                });
                assert_eq!(&buf[..3], b"abc", "{what}");
            }
        }
    });
}

/// 3 bytes then FIN arriving while `read_exact` of 8 bytes waits, in the
/// modes that wait: `UnexpectedEof` promptly once the FIN is sent.
#[test]
fn read_exact_waiting_when_three_bytes_then_fin_arrive_is_unexpected_eof() {
    watchdog(WATCHDOG, || {
        for mode in [Mode::Blocking, Mode::Timeout(MUST_SUCCEED)] {
            let (client, server) = pair();
            client.set_mode(mode).unwrap();
            thread::scope(|s| {
                let reader = s.spawn(|| {
                    let mut buf = [0; 8];
                    (&client).read_exact(&mut buf).map(|()| buf)
                });
                assert_waiting(&client, 1, &format!("read_exact in {mode:?}"));
                server.send_all(b"abc").unwrap();
                server.shutdown(Shutdown::Write).unwrap();
                let sent = Instant::now();
                let result = reader.join().unwrap();
                expect_kind(result, ErrorKind::UnexpectedEof);
                assert_prompt(sent.elapsed(), &format!("read_exact in {mode:?} after FIN"));
            });
        }
    });
}

// ---------------------------------------------------------------------------
// UDP

/// An address on 127.0.0.1 where no UDP socket is.
fn closed_udp_addr() -> SocketAddr {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.local_addr().expect("local_addr")
}

/// A connected UDP socket that sent to a closed port gets the port
/// unreachable back as `ConnectionRefused` (ECONNREFUSED) on its next
/// receive, in every mode, once: the receive after it waits as usual, and in
/// timeout mode times out at ~T.
#[test]
fn connected_udp_to_a_closed_port_is_refused_once_then_times_out() {
    watchdog(WATCHDOG, || {
        for mode in [
            Mode::Blocking,
            Mode::NonBlocking,
            Mode::Timeout(MUST_SUCCEED),
        ] {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.connect(closed_udp_addr()).unwrap();
            sock.set_mode(mode).unwrap();
            sock.send(b"anyone?").unwrap();
            if mode == Mode::NonBlocking {
                // The ICMP error makes the socket readable when it arrives.
                wait_readable(&sock, "a UDP socket whose datagram was refused");
            }
            let start = Instant::now();
            expect_os_error(
                sock.recv(&mut [0; 16]),
                ErrorKind::ConnectionRefused,
                libc::ECONNREFUSED,
            );
            // On loopback the error is back within moments of the send.
            assert_prompt(start.elapsed(), &format!("the refused recv in {mode:?}"));
            assert!(
                sock.take_error().unwrap().is_none(),
                "in {mode:?}: the error was reported, and cleared"
            );
            sock.set_timeout(Some(T)).unwrap();
            assert_times_out(T, || sock.recv(&mut [0; 16]));
        }
    });
}

// ---------------------------------------------------------------------------
// Shutdown

/// `shutdown` of a TCP socket that never connected (made with socket2 and
/// converted) is the OS's `NotConnected` (ENOTCONN), unchanged, at once, in
/// every mode and every direction (R2). (A socket whose connect was refused
/// is checked in the non-blocking connect tests.)
#[test]
fn shutdown_of_a_never_connected_socket_is_not_connected() {
    watchdog(WATCHDOG, || {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        let stream = TcpStream::from(std::net::TcpStream::from(socket));
        for mode in [Mode::Blocking, Mode::NonBlocking, Mode::Timeout(T)] {
            stream.set_mode(mode).unwrap();
            for how in [Shutdown::Read, Shutdown::Write, Shutdown::Both] {
                expect_os_error_promptly(
                    ErrorKind::NotConnected,
                    libc::ENOTCONN,
                    &format!("shutdown({how:?}) in {mode:?}"),
                    || stream.shutdown(how),
                );
            }
        }
    });
}
