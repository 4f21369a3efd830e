//! The process-wide default timeout of the sync facade (rules R7, R8 and R9
//! of the contract in ontime-sync's crate docs) for TCP.
//!
//! The default is global, so this is its own test binary and its tests run
//! one at a time: each takes [`SERIAL`] and puts the default back to `None`
//! when it ends, even when it fails.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use ontime_sync::{
    create_connection, default_timeout, select, set_default_timeout, Mode, TcpListener, TcpStream,
};

mod common;

use common::{assert_times_out, expect_kind_promptly, watchdog, MUST_SUCCEED, WATCHDOG};

/// The timeout under test in timing checks.
const T: Duration = Duration::from_millis(300);

/// Taken by every test: the default timeout is shared by the whole process.
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds [`SERIAL`] and resets the default timeout to `None` when dropped,
/// including on panic. Checks that the default is `None` on entry.
struct DefaultGuard {
    _serial: MutexGuard<'static, ()>,
}

impl DefaultGuard {
    fn take() -> DefaultGuard {
        // A test that failed while holding the lock has reset the default.
        let guard = DefaultGuard {
            _serial: SERIAL.lock().unwrap_or_else(|e| e.into_inner()),
        };
        assert_eq!(
            default_timeout(),
            None,
            "a previous test left a default behind"
        );
        guard
    }
}

impl Drop for DefaultGuard {
    fn drop(&mut self) {
        set_default_timeout(None);
    }
}

/// Runs a test body on its own thread, one test at a time, with the default
/// reset afterwards; fails the test if it takes longer than [`WATCHDOG`].
fn serial_test(body: impl FnOnce() + Send + 'static) {
    let _guard = DefaultGuard::take();
    watchdog(WATCHDOG, body);
}

/// A listener made with no default timeout, so blocking.
fn blocking_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Waits until `listener` has a connection to accept.
#[track_caller]
fn wait_acceptable(listener: &TcpListener) {
    let ready = select(&[listener], &[], Some(MUST_SUCCEED)).unwrap();
    assert_eq!(
        ready.readable,
        vec![0],
        "no connection became acceptable within {MUST_SUCCEED:?}"
    );
}

#[test]
fn default_is_none_and_new_sockets_block() {
    serial_test(|| {
        assert_eq!(default_timeout(), None);
        let (listener, addr) = blocking_listener();
        let client = TcpStream::connect(addr).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        for (what, mode) in [
            ("listener", listener.mode()),
            ("client", client.mode()),
            ("accepted", accepted.mode()),
        ] {
            assert_eq!(mode, Mode::Blocking, "{what}");
        }
    });
}

#[test]
fn ten_second_default_shows_on_new_sockets_not_older_ones() {
    serial_test(|| {
        let ten = Duration::from_secs(10);
        let (old_listener, addr) = blocking_listener();
        let old_client = TcpStream::connect(addr).unwrap();
        let (old_accepted, _) = old_listener.accept().unwrap();

        set_default_timeout(Some(ten));
        assert_eq!(default_timeout(), Some(ten));

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let std_client = std::net::TcpStream::connect(std_listener.local_addr().unwrap()).unwrap();
        let converted = TcpStream::from(std_client);
        let converted_listener = TcpListener::from(std_listener);
        // Accepted from a listener that predates the default: still the default's.
        let late_client = std::net::TcpStream::connect(addr).unwrap();
        let (accepted_from_old, peer) = old_listener.accept().unwrap();
        assert_eq!(peer, late_client.local_addr().unwrap());

        let new = [
            ("bound listener", listener.timeout()),
            ("converted listener", converted_listener.timeout()),
            ("connected stream", client.timeout()),
            ("accepted stream", accepted.timeout()),
            (
                "accepted from an older listener",
                accepted_from_old.timeout(),
            ),
            ("converted stream", converted.timeout()),
        ];
        for (what, timeout) in new {
            assert_eq!(timeout, Some(ten), "{what}");
        }
        let old = [
            ("older listener", old_listener.mode()),
            ("older client", old_client.mode()),
            ("older accepted stream", old_accepted.mode()),
            // A clone copies its original's mode, not the default (R11).
            (
                "clone of an older stream",
                old_client.try_clone().unwrap().mode(),
            ),
        ];
        for (what, mode) in old {
            assert_eq!(mode, Mode::Blocking, "{what}");
        }
    });
}

#[test]
fn zero_default_makes_new_sockets_non_blocking() {
    serial_test(|| {
        set_default_timeout(Some(Duration::ZERO));
        assert_eq!(default_timeout(), Some(Duration::ZERO));

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(listener.mode(), Mode::NonBlocking);
        assert!(!listener.is_blocking());
        expect_kind_promptly(ErrorKind::WouldBlock, "accept under a zero default", || {
            listener.accept()
        });

        // With a zero default, connect only starts the connection.
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert_eq!(client.mode(), Mode::NonBlocking);
        assert!(!client.is_blocking());
        let ready = select(&[], &[&client], Some(MUST_SUCCEED)).unwrap();
        assert_eq!(
            ready.writable,
            vec![0],
            "the connection did not complete within {MUST_SUCCEED:?}"
        );
        assert_eq!(client.take_error().unwrap().map(|e| e.kind()), None);
        assert_eq!(client.peer_addr().unwrap(), listener.local_addr().unwrap());

        wait_acceptable(&listener);
        let (accepted, _) = listener.accept().unwrap();
        assert_eq!(accepted.mode(), Mode::NonBlocking);
        expect_kind_promptly(ErrorKind::WouldBlock, "recv under a zero default", || {
            accepted.recv(&mut [0; 16])
        });

        let converted = TcpListener::from(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
        assert_eq!(converted.mode(), Mode::NonBlocking);
    });
}

#[test]
fn resetting_the_default_to_none_restores_blocking() {
    serial_test(|| {
        for default in [Some(Duration::from_secs(10)), Some(Duration::ZERO)] {
            set_default_timeout(default);
            set_default_timeout(None);
            assert_eq!(default_timeout(), None);
            let (listener, addr) = blocking_listener();
            assert_eq!(listener.mode(), Mode::Blocking, "after {default:?}");
            let client = TcpStream::connect(addr).unwrap();
            assert_eq!(client.mode(), Mode::Blocking, "after {default:?}");
            let (accepted, _) = listener.accept().unwrap();
            assert_eq!(accepted.mode(), Mode::Blocking, "after {default:?}");
        }
    });
}

#[test]
fn create_connection_with_an_explicit_timeout_overrides_the_default() {
    serial_test(|| {
        let (listener, addr) = blocking_listener();
        for default in [Some(Duration::from_secs(10)), Some(Duration::ZERO)] {
            set_default_timeout(default);
            for timeout in [Some(T), None, Some(Duration::from_secs(20))] {
                let client = create_connection(addr, timeout).unwrap();
                assert_eq!(client.timeout(), timeout, "default {default:?}");
                let (_accepted, _) = listener.accept().unwrap();
            }
            // The explicit timeout is what a call waits, not the default.
            let client = create_connection(addr, Some(T)).unwrap();
            let (_accepted, _) = listener.accept().unwrap();
            assert_times_out(T, || client.recv(&mut [0; 16]));
        }
        // A zero timeout over a 10 s default: non-blocking.
        set_default_timeout(Some(Duration::from_secs(10)));
        let client = create_connection(addr, Some(Duration::ZERO)).unwrap();
        assert_eq!(client.mode(), Mode::NonBlocking);
    });
}

/// R8: the accepted stream's mode is the default's, whatever the listener's.
#[test]
fn accepted_streams_take_the_default_whatever_the_listener_mode() {
    serial_test(|| {
        let listener_modes = [Mode::Blocking, Mode::NonBlocking, Mode::Timeout(T)];
        let defaults = [None, Some(Duration::ZERO), Some(Duration::from_secs(20))];
        for listener_mode in listener_modes {
            for default in defaults {
                set_default_timeout(None);
                let (listener, addr) = blocking_listener();
                listener.set_mode(listener_mode).unwrap();
                set_default_timeout(default);
                // The client is already there, so every listener mode accepts.
                let _client = std::net::TcpStream::connect(addr).unwrap();
                wait_acceptable(&listener);
                let (accepted, _) = listener.accept().unwrap_or_else(|e| {
                    panic!("listener {listener_mode:?}, default {default:?}: {e:?}")
                });
                assert_eq!(
                    accepted.mode(),
                    Mode::from_timeout(default),
                    "listener {listener_mode:?}, default {default:?}"
                );
                assert_eq!(
                    listener.mode(),
                    listener_mode,
                    "the default changed an existing listener"
                );
            }
        }
    });
}
