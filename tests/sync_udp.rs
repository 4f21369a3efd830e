//! `ontime::sync::UdpSocket` over real loopback sockets: the three modes on
//! `recv_from`/`recv`, round trips with addresses, `connect`, clones,
//! zero-length receives, `peek`, and the default timeout.
//!
//! Timing follows the bounds of the contract in ontime-sync's crate docs: a
//! deadline is never early (`elapsed >= T - 10 ms`) and late by at most
//! `max(1 s, T)`; "promptly" is 250 ms; waits that must succeed get 10 s;
//! every test runs under a watchdog and every loop is bounded. A test that changes the process-wide default
//! timeout runs in a child process, so that it cannot disturb the others.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use ontime::sync::{self, Mode, UdpSocket};

mod common;

use common::{
    assert_prompt, assert_timed_out_error, assert_times_out, assert_waiting, expect_kind_promptly,
    in_child, watchdog, MUST_SUCCEED, WATCHDOG,
};

/// The timeout under test.
const T: Duration = Duration::from_millis(300);
/// Set in a child process to the name of the test it runs.
const CHILD_ENV: &str = "ONTIME_SYNC_UDP_CHILD";

// ---- Helpers -----------------------------------------------------------

fn bind() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

/// Two sockets connected to each other.
fn connected_pair() -> (UdpSocket, UdpSocket) {
    let (a, b) = (bind(), bind());
    a.connect(b.local_addr().unwrap()).unwrap();
    b.connect(a.local_addr().unwrap()).unwrap();
    (a, b)
}

// ---- Modes -------------------------------------------------------------

#[test]
fn non_blocking_recv_from_with_nothing_queued_would_block_promptly() {
    watchdog(WATCHDOG, || {
        let (sock, _peer) = connected_pair();
        sock.set_blocking(false).unwrap();
        let mut buf = [0; 16];

        expect_kind_promptly(ErrorKind::WouldBlock, "recv_from", || {
            sock.recv_from(&mut buf)
        });

        expect_kind_promptly(ErrorKind::WouldBlock, "recv", || sock.recv(&mut buf));

        let e = sock.peek_from(&mut buf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e:?}");
    });
}

#[test]
fn recv_from_in_timeout_mode_times_out_then_still_works() {
    watchdog(WATCHDOG, || {
        let (sock, peer) = connected_pair();
        sock.set_timeout(Some(T)).unwrap();
        let mut buf = [0; 16];

        assert_times_out(T, || sock.recv_from(&mut buf));

        assert_times_out(T, || sock.recv(&mut buf));

        // Still usable: a datagram queued now is returned at once.
        peer.send(b"late").unwrap();
        let start = Instant::now();
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        assert_prompt(start.elapsed(), "recv_from of a queued datagram");
        assert_eq!(&buf[..n], b"late");
        assert_eq!(from, peer.local_addr().unwrap());
    });
}

#[test]
fn tiny_timeout_times_out_rather_than_would_block() {
    watchdog(WATCHDOG, || {
        let sock = bind();
        sock.set_timeout(Some(Duration::from_nanos(1))).unwrap();
        assert_eq!(sock.mode(), Mode::Timeout(Duration::from_nanos(1)));
        let e = sock.recv_from(&mut [0; 4]).unwrap_err();
        assert_timed_out_error(&e);
    });
}

#[test]
fn blocking_recv_from_returns_a_datagram_sent_later() {
    watchdog(WATCHDOG, || {
        let sock = bind();
        assert_eq!(sock.mode(), Mode::Blocking);
        let to = sock.local_addr().unwrap();
        thread::scope(|s| {
            let sender = s.spawn(|| {
                let from = bind();
                // The datagram comes while the receiver waits.
                assert_waiting(&sock, 1, "blocking recv_from");
                from.send_to(b"later", to).unwrap();
                from.local_addr().unwrap()
            });
            let mut buf = [0; 16];
            let start = Instant::now();
            let (n, from) = sock.recv_from(&mut buf).unwrap();
            assert!(start.elapsed() <= MUST_SUCCEED);
            assert_eq!(&buf[..n], b"later");
            assert_eq!(from, sender.join().unwrap());
        });
    });
}

// ---- Round trips ---------------------------------------------------------

#[test]
fn send_to_and_recv_from_round_trip_with_addresses() {
    watchdog(WATCHDOG, || {
        let (a, b) = (bind(), bind());
        b.set_timeout(Some(MUST_SUCCEED)).unwrap();
        a.set_timeout(Some(MUST_SUCCEED)).unwrap();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());

        assert_eq!(a.send_to(b"ping", b_addr).unwrap(), 4);
        let mut buf = [0; 16];
        let (n, from) = b.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"ping"[..], a_addr));

        // A name that resolves, answered to the sender's address.
        assert_eq!(b.send_to(b"pong", ("127.0.0.1", a_addr.port())).unwrap(), 4);
        let (n, from) = a.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"pong"[..], b_addr));

        // A datagram longer than the buffer is cut to fit.
        a.send_to(b"0123456789", b_addr).unwrap();
        let mut short = [0; 4];
        assert_eq!(b.recv_from(&mut short).unwrap(), (4, a_addr));
        assert_eq!(&short, b"0123");
    });
}

#[test]
fn send_to_an_address_list_with_nothing_in_it_is_invalid_input() {
    watchdog(WATCHDOG, || {
        let sock = bind();
        let none: &[SocketAddr] = &[];
        let e = sock.send_to(b"x", none).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e:?}");
    });
}

#[test]
fn connect_then_send_and_recv() {
    watchdog(WATCHDOG, || {
        let (a, b) = connected_pair();
        b.set_timeout(Some(MUST_SUCCEED)).unwrap();
        assert_eq!(a.peer_addr().unwrap(), b.local_addr().unwrap());
        assert_eq!(b.peer_addr().unwrap(), a.local_addr().unwrap());

        assert_eq!(a.send(b"hello").unwrap(), 5);
        let mut buf = [0; 16];
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");

        // An empty datagram is a datagram: recv gives Ok(0) for it.
        assert_eq!(a.send(b"").unwrap(), 0);
        assert_eq!(b.recv(&mut buf).unwrap(), 0);

        // A connected socket ignores datagrams from others.
        let stranger = bind();
        stranger.send_to(b"noise", b.local_addr().unwrap()).unwrap();
        a.send(b"signal").unwrap();
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"signal");
    });
}

#[test]
fn unconnected_socket_has_no_peer() {
    watchdog(WATCHDOG, || {
        let sock = bind();
        let e = sock.peer_addr().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotConnected, "{e:?}");
        assert!(sock.send(b"x").is_err());
    });
}

// ---- Clones, zero-length receives, peek ----------------------------------

#[test]
fn try_clone_copies_the_mode_then_is_independent() {
    watchdog(WATCHDOG, || {
        let (a, peer) = connected_pair();
        a.set_timeout(Some(T)).unwrap();
        let clone = a.try_clone().unwrap();
        assert_eq!(clone.mode(), Mode::Timeout(T));
        assert_eq!(clone.local_addr().unwrap(), a.local_addr().unwrap());

        clone.set_blocking(false).unwrap();
        assert_eq!(a.mode(), Mode::Timeout(T));
        assert!(!clone.is_blocking());

        // The shared descriptor does not carry the mode across (R11).
        let mut buf = [0; 16];
        expect_kind_promptly(
            ErrorKind::WouldBlock,
            "the non-blocking clone's recv",
            || clone.recv(&mut buf),
        );
        assert_times_out(T, || a.recv(&mut buf));

        // Either handle reads the one queue.
        peer.send(b"shared").unwrap();
        a.set_timeout(Some(MUST_SUCCEED)).unwrap();
        let n = a.peek(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"shared");
        let n = clone.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"shared");
    });
}

#[test]
fn zero_length_recv_returns_at_once_and_keeps_the_datagram() {
    watchdog(WATCHDOG, || {
        let (a, b) = connected_pair();
        let modes = [Mode::Blocking, Mode::NonBlocking, Mode::Timeout(T)];
        for mode in modes {
            b.set_mode(mode).unwrap();
            // Nothing queued: still no wait.
            let start = Instant::now();
            assert_eq!(b.recv(&mut []).unwrap(), 0, "{mode:?}");
            assert_eq!(b.peek(&mut []).unwrap(), 0, "{mode:?}");
            assert_prompt(start.elapsed(), "a zero-length recv with nothing queued");
        }
        a.send(b"kept").unwrap();
        b.set_timeout(Some(MUST_SUCCEED)).unwrap();
        // Wait until the datagram is queued, without consuming it.
        assert_eq!(b.peek(&mut [0; 16]).unwrap(), 4);
        for mode in modes {
            b.set_mode(mode).unwrap();
            let start = Instant::now();
            assert_eq!(b.recv(&mut []).unwrap(), 0, "{mode:?}");
            assert_prompt(start.elapsed(), "a zero-length recv with a datagram queued");
        }
        b.set_timeout(Some(MUST_SUCCEED)).unwrap();
        let mut buf = [0; 16];
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            b"kept",
            "a zero-length recv consumed the datagram"
        );
    });
}

#[test]
fn peek_does_not_consume() {
    watchdog(WATCHDOG, || {
        let (a, b) = connected_pair();
        b.set_timeout(Some(MUST_SUCCEED)).unwrap();
        a.send(b"first").unwrap();
        a.send(b"second").unwrap();
        let a_addr = a.local_addr().unwrap();
        let mut buf = [0; 16];

        assert_eq!(b.peek(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"first");
        assert_eq!(b.peek_from(&mut buf).unwrap(), (5, a_addr));
        assert_eq!(b.recv_from(&mut buf).unwrap(), (5, a_addr));
        assert_eq!(&buf[..5], b"first");
        assert_eq!(b.peek_from(&mut buf).unwrap(), (6, a_addr));
        assert_eq!(b.recv(&mut buf).unwrap(), 6);
        assert_eq!(&buf[..6], b"second");

        // Peek waits like recv in timeout mode.
        b.set_timeout(Some(T)).unwrap();
        assert_times_out(T, || b.peek(&mut buf));
    });
}

// ---- Options and the default timeout -------------------------------------

#[test]
fn options_round_trip() {
    watchdog(WATCHDOG, || {
        let sock = bind();
        sock.set_broadcast(true).unwrap();
        assert!(sock.broadcast().unwrap());
        sock.set_broadcast(false).unwrap();
        assert!(!sock.broadcast().unwrap());
        sock.set_ttl(17).unwrap();
        assert_eq!(sock.ttl().unwrap(), 17);
        assert!(sock.take_error().unwrap().is_none());
        assert!(format!("{sock:?}").contains("UdpSocket"));
    });
}

#[test]
fn new_sockets_take_the_default_timeout() {
    watchdog(WATCHDOG, || {
        in_child(CHILD_ENV, "new_sockets_take_the_default_timeout", || {
            let before = bind();
            assert_eq!(before.mode(), Mode::Blocking);

            let ten = Duration::from_secs(10);
            sync::set_default_timeout(Some(ten));
            assert_eq!(bind().timeout(), Some(ten));
            let std_sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            assert_eq!(UdpSocket::from(std_sock).timeout(), Some(ten));
            assert_eq!(
                before.mode(),
                Mode::Blocking,
                "an older socket changed mode"
            );
            // A clone copies its original's mode, not the default.
            assert_eq!(before.try_clone().unwrap().mode(), Mode::Blocking);

            sync::set_default_timeout(Some(Duration::ZERO));
            let sock = bind();
            assert!(!sock.is_blocking());
            expect_kind_promptly(
                ErrorKind::WouldBlock,
                "recv_from under a zero default",
                || sock.recv_from(&mut [0; 4]),
            );

            sync::set_default_timeout(None);
            assert_eq!(bind().mode(), Mode::Blocking);
        });
    });
}
