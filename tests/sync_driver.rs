//! The driver's own correctness (`crates/sync/src/driver.rs`), beyond the
//! contract's rules: the descriptors it spends (one per waiting thread, two
//! for the spare reactor, none per handle), the fallback to the spare
//! reactor when a thread cannot make its own or register a socket in it,
//! the spare reactor's paths,
//! a zero-timeout `select` on a socket new to the reactor, the containment
//! of a panic in a dispatch, a socket handed from thread to thread, and a
//! seeded stress of the hand-offs between
//! reactors (sockets in many reactors, closed while registered, their
//! descriptor numbers and tokens reused, shutdowns racing waits).
//!
//! Loopback only. Timing follows the contract's bounds for a noisy 2-core
//! machine: a deadline never fires early (strictly: `elapsed >= T`), is late
//! by at most `max(1 s, T)`, "promptly" is 250 ms, and waits that must
//! succeed get 10 s. Every test body runs under a 60 s watchdog; the tests
//! that count descriptors or change `RLIMIT_NOFILE` run in a child process
//! of their own, so that other tests' threads and sockets do not disturb
//! them.

use std::fs::{self, File};
use std::io::{self, ErrorKind, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use ontime_sync::testing::{
    fail_registrations, panic_in_dispatch, panic_pending, reactors, stall_spare_after_filing,
    use_spare_reactor,
};
use ontime_sync::{select, Mode, Selectable, Selected, TcpStream};

mod common;

use common::{
    assert_prompt, assert_timed_out, assert_timed_out_error, assert_times_out, assert_waiting,
    eventually, expect_kind, in_child, timed, watchdog, MUST_SUCCEED, WATCHDOG,
};

/// The timeout under test in most timing tests.
const T: Duration = Duration::from_millis(300);
/// Marks the child process that runs one test of this binary.
const CHILD_ENV: &str = "ONTIME_SYNC_DRIVER_CHILD";

// ---------------------------------------------------------------------------
// Sockets

/// A listener on loopback, made by std: making and accepting connections
/// with it never waits in a reactor.
fn listener() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind")
}

/// A connected std pair `(client, server)`: a blocking connect and accept,
/// with no reactor involved.
fn std_pair_on(listener: &std::net::TcpListener) -> (std::net::TcpStream, std::net::TcpStream) {
    let client =
        std::net::TcpStream::connect(listener.local_addr().expect("local_addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    (client, server)
}

/// A connected facade pair `(client, server)`, both blocking, made without
/// any wait: the sockets are new to every reactor.
fn pair_on(listener: &std::net::TcpListener) -> (TcpStream, TcpStream) {
    let (client, server) = std_pair_on(listener);
    (TcpStream::from(client), TcpStream::from(server))
}

fn pair() -> (TcpStream, TcpStream) {
    pair_on(&listener())
}

/// A facade pair whose client has `data` queued: sent, and seen to have
/// arrived (a blocking std `peek`) before the client is wrapped, so that the
/// client is new to every reactor and has data waiting.
fn queued_pair_on(listener: &std::net::TcpListener, data: &[u8]) -> (TcpStream, TcpStream) {
    let (client, mut server) = std_pair_on(listener);
    server.write_all(data).expect("write");
    assert_eq!(client.peek(&mut [0; 1]).expect("peek"), 1);
    (TcpStream::from(client), TcpStream::from(server))
}

/// Receives exactly `want.len()` bytes on `sock` (in timeout mode, within
/// [`MUST_SUCCEED`]) and checks them.
#[track_caller]
fn expect_bytes(sock: &TcpStream, want: &[u8]) {
    sock.set_timeout(Some(MUST_SUCCEED)).unwrap();
    let mut got = vec![0; want.len()];
    sock.recv_exact(&mut got).expect("recv_exact");
    assert_eq!(got, want);
}

/// One ping-pong over `(local, echo)` where `echo` is served by
/// [`echo_thread`]: proves that the calls on another socket work.
#[track_caller]
fn ping(local: &TcpStream, what: &[u8]) {
    local.send_all(what).expect("ping send");
    expect_bytes(local, what);
}

/// Echoes everything received on `sock` until end of file, in blocking
/// mode, waiting in the spare reactor if `spare`.
fn echo_thread(sock: &TcpStream, spare: bool) {
    use_spare_reactor(spare);
    sock.set_timeout(None).unwrap();
    let mut buf = [0; 256];
    loop {
        match sock.recv(&mut buf) {
            Ok(0) => return,
            Ok(n) => sock.send_all(&buf[..n]).expect("echo"),
            Err(e) => panic!("echo thread: {e:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Process-wide state, for the tests that run in a child process

/// Open descriptors of this process. Reading the directory opens one
/// descriptor itself, the same in every count, so only differences matter.
fn open_descriptors() -> usize {
    fs::read_dir("/proc/self/fd")
        .expect("reading /proc/self/fd")
        .count()
}

/// What the open descriptors are, by kind (`socket`, `anon_inode:[eventpoll]`,
/// ...), for the failure messages.
fn descriptor_kinds() -> String {
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for entry in fs::read_dir("/proc/self/fd")
        .expect("reading /proc/self/fd")
        .filter_map(Result::ok)
    {
        let target = fs::read_link(entry.path())
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_else(|e| format!("? ({e})"));
        let kind = match target.find(":[") {
            Some(at) if target.starts_with("socket") || target.starts_with("pipe") => {
                target[..at].to_owned()
            }
            _ => target,
        };
        *kinds.entry(kind).or_default() += 1;
    }
    format!("{kinds:?}")
}

/// Asserts that [`open_descriptors`] is `want`, polling for up to
/// [`MUST_SUCCEED`] for it to settle there: a thread counted as waiting
/// (the driver counts a call before it reaches the reactor) may make its
/// reactor a moment later. A wrong steady count fails, naming `what` and
/// the kinds of descriptors open.
#[track_caller]
fn assert_descriptors(want: usize, what: &str) {
    let start = Instant::now();
    loop {
        let count = open_descriptors();
        if count == want {
            return;
        }
        if start.elapsed() > MUST_SUCCEED {
            panic!(
                "{what}: {count} descriptors open, not {want}: {}",
                descriptor_kinds()
            );
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// How many epoll instances (reactors' pollers) are open.
fn epolls() -> usize {
    fs::read_dir("/proc/self/fd")
        .expect("reading /proc/self/fd")
        .filter_map(Result::ok)
        .filter(|entry| {
            fs::read_link(entry.path())
                .is_ok_and(|target| target.as_os_str() == "anon_inode:[eventpoll]")
        })
        .count()
}

/// One `send(2)` on `sock`'s descriptor, without the driver: the thread
/// that counts descriptors must not wait anywhere (see
/// `first_call_on_a_new_socket_tries_before_waiting` for why a facade
/// `send` on a new socket would).
fn send_bypassing_the_driver(sock: &TcpStream, data: &[u8]) {
    let sent = socket2::SockRef::from(sock).send(data).expect("send");
    assert_eq!(sent, data.len());
}

/// Whether the spare reactor's thread runs: its name, "ontime-sync spare
/// reactor", as the kernel keeps it (15 bytes).
fn spare_thread_runs() -> bool {
    fs::read_dir("/proc/self/task")
        .expect("reading /proc/self/task")
        .filter_map(Result::ok)
        .filter_map(|task| fs::read_to_string(task.path().join("comm")).ok())
        .any(|comm| comm.trim_end() == "ontime-sync spa")
}

/// Voluntary context switches of the calling thread so far: each time it
/// slept (waited in the kernel), preemptions not counted.
fn voluntary_switches() -> i64 {
    // SAFETY: `getrusage` writes the usage into the zeroed struct passed,
    // which lives for the call.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", io::Error::last_os_error());
    usage.ru_nvcsw
}

fn nofile_limit() -> libc::rlimit {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes the limit into the struct passed, which
    // lives for the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0, "getrlimit: {}", io::Error::last_os_error());
    limit
}

fn set_nofile_limit(limit: &libc::rlimit) {
    // SAFETY: `setrlimit` only reads the struct passed.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, limit) };
    assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
}

/// Puts `RLIMIT_NOFILE` back as it was when dropped, even when the test
/// fails (so that the failure can be reported).
struct RestoreLimit(libc::rlimit);

impl Drop for RestoreLimit {
    fn drop(&mut self) {
        // SAFETY: as in `set_nofile_limit`; a failure here cannot be helped.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.0) };
    }
}

fn is_emfile(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EMFILE)
}

// ---------------------------------------------------------------------------
// 1. Descriptors

/// One descriptor per waiting thread (its reactor's epoll instance, made at
/// its first wait, closed at its exit), two for the process (the spare
/// reactor's epoll and eventfd, made at the process's first wait), none per
/// handle: the figures of the crate docs' "Descriptors" section and of
/// `driver.rs` (`Local::new`: "One descriptor: the poller. No waker";
/// `Spare::get`: "Two descriptors (poller and waker) for the whole
/// process"). The spare's thread is started only when a thread needs the
/// spare, and no thread here does.
#[test]
fn descriptors_one_per_waiting_thread_and_two_for_the_spare() {
    const NAME: &str = "descriptors_one_per_waiting_thread_and_two_for_the_spare";
    const N: usize = 16;
    watchdog(WATCHDOG, || {
        in_child(CHILD_ENV, NAME, || {
            // Nothing has waited in this process yet.
            let base = open_descriptors();
            let listener = listener();
            let pairs: Vec<(TcpStream, TcpStream)> = (0..N).map(|_| pair_on(&listener)).collect();
            drop(listener);
            let sockets = base + 2 * N;
            assert_descriptors(sockets, "the sockets alone");

            // `try_clone` shares the descriptor.
            let clones: Vec<TcpStream> = pairs
                .iter()
                .map(|(client, _)| client.try_clone().expect("try_clone"))
                .collect();
            assert_descriptors(sockets, "try_clone adds no descriptor");
            for ((client, _), clone) in pairs.iter().zip(&clones) {
                assert_eq!(clone.as_raw_fd(), client.as_raw_fd());
            }

            // Two waves of N threads, each blocked in a timeout-mode recv on
            // its own socket (half of them through the clone). The second
            // wave waits on sockets still registered in the first wave's
            // reactors, which are gone.
            let spare = 2;
            for wave in 0..2 {
                thread::scope(|s| {
                    let waiters: Vec<_> = (0..N)
                        .map(|i| {
                            let sock = if i % 2 == 0 { &pairs[i].0 } else { &clones[i] };
                            s.spawn(move || {
                                sock.set_timeout(Some(4 * MUST_SUCCEED)).unwrap();
                                let mut buf = [0; 8];
                                let n = sock.recv(&mut buf).expect("recv");
                                assert_eq!(&buf[..n], &[wave as u8]);
                            })
                        })
                        .collect();
                    for (i, (client, _)) in pairs.iter().enumerate() {
                        assert_waiting(client, 1, &format!("wave {wave}: recv {i}"));
                    }
                    assert_descriptors(
                        sockets + N + spare,
                        &format!(
                            "wave {wave}: {N} threads waiting: one epoll each, plus the \
                             spare's epoll and eventfd"
                        ),
                    );
                    assert!(!spare_thread_runs(), "no thread needed the spare");
                    for (_, server) in &pairs {
                        send_bypassing_the_driver(server, &[wave as u8]);
                    }
                    for waiter in waiters {
                        waiter.join().expect("waiting thread");
                    }
                });
                assert_descriptors(
                    sockets + spare,
                    &format!("wave {wave}: the threads exited, their reactors closed"),
                );
            }

            // One thread waiting on all N sockets at once has one reactor.
            thread::scope(|s| {
                let clients: Vec<&TcpStream> = pairs.iter().map(|(client, _)| client).collect();
                let selecting = s.spawn(move || {
                    let read: Vec<&dyn Selectable> =
                        clients.iter().map(|c| *c as &dyn Selectable).collect();
                    select(&read, &[], Some(4 * MUST_SUCCEED)).expect("select")
                });
                for (client, _) in &pairs {
                    assert_waiting(client, 1, "select over all the sockets");
                }
                assert_descriptors(
                    sockets + 1 + spare,
                    "a thread waiting on all the sockets has one reactor",
                );
                send_bypassing_the_driver(&pairs[N - 1].1, b"x");
                let selected = selecting.join().expect("selecting thread");
                assert_eq!(selected.readable, vec![N - 1]);
            });
            assert_descriptors(sockets + spare, "the selecting thread exited");

            // Closing sockets registered in dead reactors costs nothing.
            drop(clones);
            assert_descriptors(sockets + spare, "the clones held no descriptor");
            drop(pairs);
            assert_descriptors(base + spare, "only the spare is left");
        });
    });
}

/// The first call on a new socket tries its system call before anything
/// else: a new socket is never taken for drained (`Source::new` records
/// no drained tick), so a recv with data queued and a send with room to
/// spare, which never need to wait, cost the thread no reactor and no
/// registration.
#[test]
fn first_call_on_a_new_socket_tries_before_waiting() {
    const NAME: &str = "first_call_on_a_new_socket_tries_before_waiting";
    watchdog(WATCHDOG, || {
        in_child(CHILD_ENV, NAME, || {
            let listener = listener();
            // Make the spare reactor first (the process's first wait), in a
            // thread whose own reactor goes with it. Joined with `join`,
            // which returns after the thread's thread-locals (its reactor)
            // are gone; a scope may end before that.
            let (idle, idle_server) = pair_on(&listener);
            thread::spawn(move || {
                select(&[&idle], &[], Some(Duration::ZERO)).expect("select");
                drop(idle_server);
            })
            .join()
            .expect("the first wait");
            let before = epolls();
            thread::scope(|s| {
                s.spawn(|| {
                    let (queued, _server) = queued_pair_on(&listener, b"data");
                    let mut buf = [0; 16];
                    assert_eq!(queued.recv(&mut buf).expect("recv"), 4);
                    let (client, _server) = pair_on(&listener);
                    client.send_all(b"room to spare").expect("send_all");
                    assert_eq!(
                        epolls(),
                        before,
                        "calls that could finish at once made this thread a reactor: {}",
                        descriptor_kinds()
                    );
                });
            });
        });
    });
}

// ---------------------------------------------------------------------------
// 2. Out of descriptors: the spare reactor

/// A thread that cannot make its own reactor (`EMFILE`) waits in the spare
/// one, made at the process's first wait, instead of failing: a timeout
/// expires with `TimedOut` at ~T, a blocking recv gets data sent later, and
/// `select` works, all in a thread that has no reactor.
#[test]
fn out_of_descriptors_a_new_thread_waits_in_the_spare_reactor() {
    const NAME: &str = "out_of_descriptors_a_new_thread_waits_in_the_spare_reactor";
    watchdog(WATCHDOG, || {
        in_child(CHILD_ENV, NAME, || {
            let fillers = listener();
            let (client, server) = pair();
            // The process's first wait: it makes the spare reactor (and
            // this thread's own), but not the spare's thread.
            let looked = select(&[&client], &[], Some(Duration::ZERO)).expect("select");
            assert!(looked.is_empty(), "nothing was sent");
            assert!(
                !spare_thread_runs(),
                "the spare's thread starts on first use"
            );

            let restore = RestoreLimit(nofile_limit());
            let mut lowered = nofile_limit();
            let open = open_descriptors() as libc::rlim_t;
            assert!(open + 8 < lowered.rlim_cur, "the limit is already low");
            lowered.rlim_cur = open + 8;
            set_nofile_limit(&lowered);

            // Fill the table: connect and accept until one fails.
            let mut held = Vec::new();
            let mut full = false;
            for _ in 0..1000 {
                match std::net::TcpStream::connect(fillers.local_addr().unwrap()) {
                    Ok(stream) => held.push(stream),
                    Err(e) if is_emfile(&e) => {
                        full = true;
                        break;
                    }
                    Err(e) => panic!("connect: {e:?}"),
                }
                match fillers.accept() {
                    Ok((stream, _)) => held.push(stream),
                    Err(e) if is_emfile(&e) => {
                        full = true;
                        break;
                    }
                    Err(e) => panic!("accept: {e:?}"),
                }
            }
            assert!(full, "no EMFILE after {} descriptors", held.len());
            let e = File::open("/dev/null").expect_err("the table is full");
            assert!(is_emfile(&e), "{e:?}");

            let client = &client;
            thread::scope(|s| {
                let (step, stepped) = mpsc::channel();
                let fresh = s.spawn(move || {
                    // A new thread: it has no reactor and cannot make one.
                    let e = File::open("/dev/null").expect_err("still full");
                    assert!(is_emfile(&e), "{e:?}");

                    client.set_timeout(Some(T)).unwrap();
                    assert_times_out(T, || client.recv(&mut [0; 16]));

                    let (selected, elapsed) = timed(|| select(&[client], &[], Some(T)));
                    assert!(selected.expect("select").is_empty());
                    assert_timed_out(elapsed, T);

                    // Blocking: the main thread sends once this waits.
                    client.set_timeout(None).unwrap();
                    step.send("recv").unwrap();
                    let mut buf = [0; 16];
                    let n = client.recv(&mut buf).expect("blocking recv");
                    assert_eq!(&buf[..n], b"late");

                    // A blocking select, woken by data sent once it waits.
                    step.send("select").unwrap();
                    let selected = select(&[client], &[], None).expect("select");
                    assert_eq!(selected.readable, vec![0]);
                    // Zero timeout: the data is still there.
                    let (selected, elapsed) =
                        timed(|| select(&[client], &[], Some(Duration::ZERO)));
                    assert_eq!(selected.expect("select").readable, vec![0]);
                    assert_prompt(elapsed, "zero-timeout select in the spare reactor");
                    let n = client.recv(&mut buf).expect("recv");
                    assert_eq!(&buf[..n], b"more");
                });
                assert_eq!(stepped.recv().unwrap(), "recv");
                assert_waiting(client, 1, "blocking recv without a reactor");
                server.send_all(b"late").unwrap();
                assert_eq!(stepped.recv().unwrap(), "select");
                assert_waiting(client, 1, "blocking select without a reactor");
                server.send_all(b"more").unwrap();
                fresh.join().expect("the thread without a reactor");
            });

            drop(restore);
            drop(held);
            assert!(
                spare_thread_runs(),
                "the thread without a reactor used the spare"
            );
            // And a thread that can have a reactor again has its own.
            thread::scope(|s| {
                s.spawn(|| {
                    client.set_timeout(Some(T)).unwrap();
                    assert_times_out(T, || client.recv(&mut [0; 16]));
                });
            });
        });
    });
}

/// A thread with a reactor of its own that cannot register a socket in it
/// (`epoll_ctl` failing, as past `max_user_watches`) waits on that socket
/// in the spare reactor, and its other sockets stay in its own.
#[test]
fn a_socket_the_own_reactor_cannot_register_waits_in_the_spare() {
    const NAME: &str = "a_socket_the_own_reactor_cannot_register_waits_in_the_spare";
    watchdog(WATCHDOG, || {
        in_child(CHILD_ENV, NAME, || {
            let (client, server) = pair();
            let (other, other_server) = pair();
            let (client, other) = (&client, &other);
            thread::scope(|s| {
                let (step, stepped) = mpsc::channel();
                let waiter = s.spawn(move || {
                    // This thread's reactor exists and holds `other`.
                    other.set_timeout(Some(T)).unwrap();
                    assert_times_out(T, || other.recv(&mut [0; 16]));
                    assert!(
                        !spare_thread_runs(),
                        "the spare's thread starts on first use"
                    );

                    fail_registrations(client, 1);
                    client.set_timeout(None).unwrap();
                    step.send(()).unwrap();
                    let mut buf = [0; 16];
                    let n = client.recv(&mut buf).expect("blocking recv");
                    assert_eq!(&buf[..n], b"late");
                    assert!(spare_thread_runs(), "the wait went to the spare");

                    // The socket registers here at its next wait; the other
                    // one is still in this thread's reactor.
                    client.set_timeout(Some(T)).unwrap();
                    assert_times_out(T, || client.recv(&mut [0; 16]));
                    expect_bytes(other, b"other");
                });
                stepped.recv().unwrap();
                assert_waiting(client, 1, "blocking recv in the spare");
                server.send_all(b"late").unwrap();
                other_server.send_all(b"other").unwrap();
                waiter.join().expect("the waiting thread");
            });
        });
    });
}

/// A socket neither the thread's reactor nor the spare can register fails
/// the wait at once with the OS's error, not at its deadline or never; the
/// next wait, once a registration works, is an ordinary one.
#[test]
fn a_socket_no_reactor_can_register_fails_the_wait_with_the_error() {
    watchdog(WATCHDOG, || {
        let (client, server) = pair();
        for mode in [Some(T), None] {
            client.set_timeout(mode).unwrap();
            fail_registrations(&client, 2);
            let (result, elapsed) = timed(|| client.recv(&mut [0; 16]));
            let e = result.expect_err("no reactor could wait");
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{mode:?}: {e:?}");
            assert_prompt(elapsed, "a failed registration");
        }
        client.set_timeout(Some(T)).unwrap();
        assert_times_out(T, || client.recv(&mut [0; 16]));
        server.send_all(b"after").unwrap();
        expect_bytes(&client, b"after");
    });
}

// ---------------------------------------------------------------------------
// 3. The spare reactor's paths (`use_spare_reactor`)

/// Runs `f` on a thread of its own whose waits go to the spare reactor,
/// and passes its panic on.
fn on_spare<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    thread::scope(|s| {
        s.spawn(|| {
            use_spare_reactor(true);
            f()
        })
        .join()
        .unwrap_or_else(|payload| panic::resume_unwind(payload))
    })
}

/// Spawns `f` twice: on a thread waiting in the spare reactor and on one
/// waiting in its own.
fn spare_and_own<'scope>(
    s: &'scope thread::Scope<'scope, '_>,
    f: impl Fn() + Send + Clone + 'scope,
) -> [thread::ScopedJoinHandle<'scope, ()>; 2] {
    let g = f.clone();
    [
        s.spawn(move || {
            use_spare_reactor(true);
            f()
        }),
        s.spawn(g),
    ]
}

/// Joins both, passing a panic on.
fn join_both(handles: [thread::ScopedJoinHandle<'_, ()>; 2]) {
    for handle in handles {
        handle
            .join()
            .unwrap_or_else(|payload| panic::resume_unwind(payload));
    }
}

#[test]
fn spare_blocking_recv_returns_data_arriving_later() {
    watchdog(WATCHDOG, || {
        let (client, server) = pair();
        thread::scope(|s| {
            let receiver = s.spawn(|| {
                use_spare_reactor(true);
                let mut buf = [0; 16];
                let n = client.recv(&mut buf).expect("recv");
                buf[..n].to_vec()
            });
            assert_waiting(&client, 1, "blocking recv in the spare");
            server.send_all(b"hello").unwrap();
            assert_eq!(receiver.join().unwrap(), b"hello");
        });
        // The spare saw the socket once; a second wait there works too.
        thread::scope(|s| {
            let receiver = s.spawn(|| {
                use_spare_reactor(true);
                expect_bytes(&client, b"again");
            });
            assert_waiting(&client, 1, "second recv in the spare");
            server.send_all(b"again").unwrap();
            receiver.join().unwrap();
        });
    });
}

#[test]
fn spare_timeout_expires_at_t_never_early() {
    watchdog(WATCHDOG, || {
        let (client, _server) = pair();
        on_spare(|| {
            client.set_timeout(Some(T)).unwrap();
            assert_times_out(T, || client.recv(&mut [0; 16]));
            // Again, now that the socket is registered in the spare.
            assert_times_out(T, || client.recv(&mut [0; 16]));
            let (selected, elapsed) = timed(|| select(&[&client], &[], Some(T)));
            assert!(selected.expect("select").is_empty());
            assert_timed_out(elapsed, T);
            // A short timeout is never early either.
            for ms in [1, 2, 5, 20] {
                let t = Duration::from_millis(ms);
                client.set_timeout(Some(t)).unwrap();
                assert_times_out(t, || client.recv(&mut [0; 16]));
            }
        });
    });
}

/// R13 in the spare reactor: a shutdown from another thread wakes a
/// blocked recv, through another handle too.
#[test]
fn spare_shutdown_from_another_thread_wakes_a_blocked_recv() {
    watchdog(WATCHDOG, || {
        for how in [Shutdown::Read, Shutdown::Both] {
            let (client, _server) = pair();
            let other = client.try_clone().unwrap();
            thread::scope(|s| {
                let receiver = s.spawn(|| {
                    use_spare_reactor(true);
                    timed(|| client.recv(&mut [0; 16]))
                });
                assert_waiting(&client, 1, "blocking recv in the spare");
                let shut = Instant::now();
                other.shutdown(how).expect("shutdown");
                let (result, _) = receiver.join().unwrap();
                assert_eq!(result.expect("recv after shutdown"), 0, "{how:?}");
                assert_prompt(shut.elapsed(), "waking after the shutdown");
            });
        }
    });
}

/// A zero-timeout select in the spare reactor does not wait, and takes in
/// the readiness of a socket new to that reactor on its first look.
/// The spare reactor's thread, held up after filing a wait until past the
/// wait's deadline, still polls the socket it has just registered before
/// the deadline may end the wait: a socket ready all along is reported,
/// not timed out.
#[test]
fn spare_held_up_past_a_deadline_polls_new_registrations_first() {
    watchdog(WATCHDOG, || {
        let listener = listener();
        for timeout in [Duration::from_millis(1), Duration::from_micros(50)] {
            let (queued, _server) = queued_pair_on(&listener, b"data");
            stall_spare_after_filing(&queued, timeout * 5);
            let selected = on_spare(|| select(&[&queued], &[], Some(timeout))).expect("select");
            assert_eq!(
                selected.readable,
                vec![0],
                "timeout {timeout:?}: data queued before the select"
            );
            // And a deadline that ends a wait with nothing ready still does.
            let (idle, _idle_server) = pair_on(&listener);
            stall_spare_after_filing(&idle, timeout * 5);
            let (selected, elapsed) = timed(|| on_spare(|| select(&[&idle], &[], Some(timeout))));
            assert!(selected.expect("select").is_empty());
            assert_timed_out(elapsed, timeout);
        }
    });
}

#[test]
fn spare_zero_timeout_select_looks_once_without_waiting() {
    watchdog(WATCHDOG, || {
        let listener = listener();
        on_spare(|| {
            for round in 0..20 {
                let (queued, _server) = queued_pair_on(&listener, b"q");
                let (selected, elapsed) = timed(|| select(&[&queued], &[], Some(Duration::ZERO)));
                assert_eq!(
                    selected.expect("select").readable,
                    vec![0],
                    "round {round}: queued data on a socket new to the spare"
                );
                assert_prompt(elapsed, "zero-timeout select (queued data)");

                let (idle, _idle_server) = pair_on(&listener);
                let (selected, elapsed) =
                    timed(|| select(&[&idle], &[&idle], Some(Duration::ZERO)));
                assert_eq!(
                    selected.expect("select"),
                    Selected {
                        readable: vec![],
                        writable: vec![0]
                    },
                    "round {round}: a new idle socket is writable, not readable"
                );
                assert_prompt(elapsed, "zero-timeout select (idle)");

                // Drained (a short read): nothing to report any more.
                let mut buf = [0; 16];
                assert_eq!(queued.recv(&mut buf).expect("recv"), 1);
                let (selected, elapsed) = timed(|| select(&[&queued], &[], Some(Duration::ZERO)));
                assert!(selected.expect("select").is_empty(), "round {round}");
                assert_prompt(elapsed, "zero-timeout select (drained)");
            }
        });
    });
}

/// One socket waited on at once by a thread in the spare reactor and a
/// thread in its own: every event reaches both.
#[test]
fn spare_and_own_reactor_waiting_on_one_socket_both_wake() {
    watchdog(WATCHDOG, || {
        let (client, server) = pair();
        let client = &client;
        thread::scope(|s| {
            // Both select, blocking; one byte wakes both.
            let selects = spare_and_own(s, move || {
                let selected = select(&[client], &[], None).expect("select");
                assert_eq!(selected.readable, vec![0]);
            });
            assert_waiting(client, 2, "two selects");
            server.send_all(b"x").unwrap();
            join_both(selects);
            expect_bytes(client, b"x");

            // Both recv one byte, blocking; two bytes in one send wake both.
            client.set_timeout(None).unwrap();
            let (tx, rx) = mpsc::channel();
            let recvs = spare_and_own(s, move || {
                let mut byte = [0; 1];
                assert_eq!(client.recv(&mut byte).expect("recv"), 1);
                tx.send(byte[0]).unwrap();
            });
            assert_waiting(client, 2, "two recvs");
            server.send_all(b"ab").unwrap();
            join_both(recvs);
            let mut got: Vec<u8> = rx.try_iter().collect();
            got.sort_unstable();
            assert_eq!(got, b"ab");

            // Both recv, blocking; a shutdown from a third thread wakes both.
            let recvs = spare_and_own(s, move || {
                assert_eq!(client.recv(&mut [0; 8]).expect("recv"), 0);
            });
            assert_waiting(client, 2, "two recvs before the shutdown");
            client.shutdown(Shutdown::Read).unwrap();
            join_both(recvs);
        });
    });
}

// ---------------------------------------------------------------------------
// 4. Zero-timeout select in a thread's own reactor

/// A zero timeout looks once, with a poll that does not block: it reports
/// the data queued on a socket new to the reactor (here, in a thread whose
/// reactor is made by this very call) on the first call, and it never
/// sleeps: 100 calls on fresh idle sockets make fewer than 50 voluntary
/// context switches, where a wait for a first readiness (the old 1 ms)
/// made one each. Counted rather than timed, so that a loaded machine's
/// preemptions (involuntary switches) do not count; the margin is for the
/// rare sleep on a kernel lock that another test's thread holds.
#[test]
fn own_zero_timeout_select_reports_new_sockets_and_does_not_sleep() {
    watchdog(WATCHDOG, || {
        let listener = listener();
        // This thread has not waited yet.
        let (queued, _server) = queued_pair_on(&listener, b"queued");
        let (selected, elapsed) = timed(|| select(&[&queued], &[], Some(Duration::ZERO)));
        assert_eq!(selected.expect("select").readable, vec![0]);
        assert_prompt(elapsed, "first zero-timeout select");

        // A listener with a connection pending is readable at first look too.
        let (pending, _client) = {
            let std_listener = self::listener();
            let client = std::net::TcpStream::connect(std_listener.local_addr().unwrap()).unwrap();
            (ontime_sync::TcpListener::from(std_listener), client)
        };
        let selected = select(&[&pending], &[], Some(Duration::ZERO)).expect("select");
        assert_eq!(selected.readable, vec![0], "a pending connection");

        let mut slept = 0;
        for i in 0..100 {
            let (idle, _idle_server) = pair_on(&listener);
            let before = voluntary_switches();
            let (selected, elapsed) = timed(|| select(&[&idle], &[], Some(Duration::ZERO)));
            slept += voluntary_switches() - before;
            assert!(
                selected.expect("select").is_empty(),
                "call {i}: nothing sent"
            );
            assert_prompt(elapsed, "zero-timeout select on an idle socket");
            // The fresh socket is writable at first look.
            let selected = select(&[], &[&idle], Some(Duration::ZERO)).expect("select");
            assert_eq!(selected.writable, vec![0], "call {i}");
        }
        assert!(
            slept < 50,
            "100 zero-timeout selects slept {slept} times: they wait"
        );

        // For comparison, a 1 ms timeout does wait, and is never early.
        let (idle, _idle_server) = pair_on(&listener);
        for _ in 0..10 {
            let t = Duration::from_millis(1);
            let (selected, elapsed) = timed(|| select(&[&idle], &[], Some(t)));
            assert!(selected.expect("select").is_empty());
            assert_timed_out(elapsed, t);
        }
    });
}

/// A select with `timeout` on a socket new to the reactor, with data
/// queued, reports it readable and writable.
#[track_caller]
fn assert_first_look_reports_ready(
    listener: &std::net::TcpListener,
    timeout: Duration,
    what: &str,
) {
    let (queued, _server) = queued_pair_on(listener, b"q");
    let selected = select(&[&queued], &[&queued], Some(timeout)).expect("select");
    assert_eq!(
        selected,
        Selected {
            readable: vec![0],
            writable: vec![0]
        },
        "a ready socket new to the {what}, timeout {timeout:?}"
    );
}

/// A deadline that has already passed when a wait starts still gets one
/// look in a thread's own reactor (its timer is due, so the turn polls
/// without blocking, and the poll's events come before the timers): a
/// select with a 1 ns timeout reports a ready socket new to the reactor,
/// as a zero timeout does.
#[test]
fn own_select_whose_deadline_has_passed_still_looks_once() {
    watchdog(WATCHDOG, || {
        let listener = listener();
        let tiny = Duration::from_nanos(1);
        for _ in 0..20 {
            assert_first_look_reports_ready(&listener, tiny, "own reactor");
            let (idle, _idle_server) = pair_on(&listener);
            let (selected, elapsed) = timed(|| select(&[&idle], &[], Some(tiny)));
            assert!(selected.expect("select").is_empty());
            assert_timed_out(elapsed, tiny);
        }
    });
}

/// In the spare reactor, a wait filed after its deadline (or so near it
/// that its timer could fire in the same turn) still gets one poll before
/// it times out, which reports a socket new to the spare that is ready: a
/// select with a 1 ns timeout on a ready socket reports it, as a zero
/// timeout and the own reactor
/// (`own_select_whose_deadline_has_passed_still_looks_once`) do.
#[test]
fn spare_select_whose_deadline_has_passed_still_looks_once() {
    watchdog(WATCHDOG, || {
        let listener = listener();
        let tiny = Duration::from_nanos(1);
        on_spare(|| {
            assert_first_look_reports_ready(&listener, tiny, "spare reactor");
            // A recv that skips its try (the socket was found drained at
            // this tick) and waits with a deadline about to pass: the data
            // that came meanwhile is seen by the look, not timed out.
            let (drained, server) = pair_on(&listener);
            drained.set_blocking(false).unwrap();
            let e = drained.recv(&mut [0; 16]).expect_err("nothing sent yet");
            assert_eq!(e.kind(), ErrorKind::WouldBlock);
            server.send_all(b"data").unwrap();
            drained.set_timeout(Some(Duration::from_micros(1))).unwrap();
            let n = drained
                .recv(&mut [0; 16])
                .expect("recv with data queued, 1 us timeout");
            assert_eq!(n, 4);
        });
    });
}

// ---------------------------------------------------------------------------
// 5. Panics in a dispatch

/// The payload of the panic `panic_in_dispatch` injects.
const INJECTED: &str = "injected by ontime_sync::testing::panic_in_dispatch";

/// Makes the panics `panic_in_dispatch` injects print one line instead of
/// the default hook's message and backtrace (symbolising a backtrace of
/// this debug binary can take longer than "promptly" on a loaded machine,
/// and the driver catches the panic anyway). Every other panic goes to the
/// hook that was there before, so other tests' failures read as usual.
fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() == Some(&INJECTED) {
                eprintln!("(a panic injected by panic_in_dispatch, caught by the driver)");
            } else {
                previous(info);
            }
        }));
    });
}

/// The error of a wait whose dispatch panicked (`driver.rs`, `contain`):
/// kind `Other`, naming the panic.
#[track_caller]
fn assert_panic_error<R: std::fmt::Debug>(result: io::Result<R>) {
    let e = expect_kind(result, ErrorKind::Other);
    let text = e.to_string();
    assert!(
        text.contains("dispatching a wait panicked") && text.contains("panic_in_dispatch"),
        "{text}"
    );
}

/// In a thread's own reactor: the readiness event that panics fails the
/// call waiting for it (`Err` of kind `Other` naming the panic, as soon as
/// the event comes), and only that call: the same thread's next calls work
/// (its timers, data sent afterwards), and so do other threads' calls on
/// other sockets, during and after.
#[test]
fn own_reactor_panic_fails_only_the_waiting_call() {
    quiet_injected_panics();
    watchdog(WATCHDOG, || {
        let (client, server) = pair();
        let (local, remote) = pair();
        thread::scope(|s| {
            let echo = s.spawn(|| echo_thread(&remote, false));
            ping(&local, b"before");

            let (step, stepped) = mpsc::channel();
            let (go, gone) = mpsc::channel::<()>();
            let client = &client;
            let victim = s.spawn(move || {
                // Register the socket in this thread's reactor, and take in
                // its first events (it is writable).
                client.set_timeout(Some(T)).unwrap();
                assert_times_out(T, || client.recv(&mut [0; 16]));
                step.send(()).unwrap();

                panic_in_dispatch(client);
                client.set_timeout(None).unwrap();
                assert_panic_error(client.recv(&mut [0; 16]));
                step.send(()).unwrap();

                // The next call: the data of the failed call may be taken
                // at once (it should: see `own_reactor_panic_loses_no_readiness`),
                // else the reactor's timer ends it at ~T.
                client.set_timeout(Some(T)).unwrap();
                let mut buf = [0; 16];
                let (result, elapsed) = timed(|| client.recv(&mut buf));
                let mut all = Vec::new();
                match result {
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                    Err(e) => {
                        assert_timed_out_error(&e);
                        assert_timed_out(elapsed, T);
                    }
                }
                step.send(()).unwrap();
                gone.recv().unwrap();
                // Data sent afterwards arrives, after the earlier data.
                client.set_timeout(Some(MUST_SUCCEED)).unwrap();
                for _ in 0..4 {
                    if all.len() >= 4 {
                        break;
                    }
                    let n = client.recv(&mut buf).expect("recv after the panic");
                    assert!(n > 0, "end of file");
                    all.extend_from_slice(&buf[..n]);
                }
                assert_eq!(all, b"p1p2");
            });
            stepped.recv().unwrap();
            assert_waiting(client, 1, "armed recv");
            let sent = Instant::now();
            server.send_all(b"p1").unwrap();
            stepped.recv().unwrap();
            assert_prompt(sent.elapsed(), "the failed call");
            ping(&local, b"during");
            stepped.recv().unwrap();
            server.send_all(b"p2").unwrap();
            go.send(()).unwrap();
            victim.join().expect("the thread that panicked");
            ping(&local, b"after");
            drop(local);
            echo.join().unwrap();
        });
    });
}

/// A readiness event whose dispatch panics is not lost: the ticks move all
/// the same, so the next call tries again rather than skip its try and
/// wait for an edge the poller has already delivered. The data queued
/// before the panic is received at once.
#[test]
fn own_reactor_panic_loses_no_readiness() {
    quiet_injected_panics();
    watchdog(WATCHDOG, || {
        let (client, server) = pair();
        let client = &client;
        thread::scope(|s| {
            let (step, stepped) = mpsc::channel();
            let victim = s.spawn(move || {
                client.set_timeout(Some(T)).unwrap();
                assert_times_out(T, || client.recv(&mut [0; 16]));
                step.send(()).unwrap();
                panic_in_dispatch(client);
                client.set_timeout(None).unwrap();
                assert_panic_error(client.recv(&mut [0; 16]));
                // "p1" is queued: the next call must get it at once.
                client.set_timeout(Some(T)).unwrap();
                let (result, elapsed) = timed(|| client.recv(&mut [0; 16]));
                let n = result.expect("the data queued before the panic");
                assert_eq!(n, 2);
                assert_prompt(elapsed, "recv of queued data");
            });
            stepped.recv().unwrap();
            assert_waiting(client, 1, "armed recv");
            server.send_all(b"p1").unwrap();
            victim.join().unwrap_or_else(|p| panic::resume_unwind(p));
        });
    });
}

/// In a thread's own reactor, a panic in the dispatch of an event for one
/// socket fails only a wait on that socket: the thread's wait on another
/// socket goes on (a panic costs at most the calls waiting on it).
#[test]
fn own_reactor_panic_about_one_socket_spares_a_wait_on_another() {
    quiet_injected_panics();
    watchdog(WATCHDOG, || {
        let (a, a_peer) = pair();
        let (b, b_peer) = pair();
        thread::scope(|s| {
            let victim = s.spawn(|| {
                // Register `a` in this thread's reactor.
                a.set_timeout(Some(T)).unwrap();
                assert_times_out(T, || a.recv(&mut [0; 16]));
                panic_in_dispatch(&a);
                b.set_timeout(Some(MUST_SUCCEED)).unwrap();
                let mut buf = [0; 16];
                let n = b.recv(&mut buf).expect("recv on b, unrelated to the panic");
                assert_eq!(&buf[..n], b"for b");
            });
            assert_waiting(&b, 1, "recv on b");
            // An event on `a`, in the thread's reactor, while it waits on `b`.
            a_peer.send_all(b"for a").unwrap();
            // Its dispatch panics while the recv on `b` still waits (it
            // should); then end that wait.
            assert!(
                eventually(MUST_SUCCEED, || !panic_pending(&a)),
                "the event on `a` was never dispatched"
            );
            assert_waiting(&b, 1, "recv on b, after the panic about a");
            b_peer.send_all(b"for b").unwrap();
            victim.join().unwrap_or_else(|p| panic::resume_unwind(p));
        });
    });
}

/// In the spare reactor: the filing of the wait panics, which fails that
/// call at once (`Err` of kind `Other` naming the panic); the spare goes on
/// serving the same thread (data, a timeout) and other threads (other
/// sockets, in the spare and in their own reactors), during and after.
#[test]
fn spare_reactor_panic_fails_only_the_waiting_call() {
    quiet_injected_panics();
    watchdog(WATCHDOG, || {
        let (client, server) = pair();
        let (spare_local, spare_remote) = pair();
        let (own_local, own_remote) = pair();
        thread::scope(|s| {
            let spare_echo = s.spawn(|| echo_thread(&spare_remote, true));
            let own_echo = s.spawn(|| echo_thread(&own_remote, false));
            ping(&spare_local, b"before");
            ping(&own_local, b"before");
            assert_waiting(&spare_remote, 1, "the echo in the spare");

            let (step, stepped) = mpsc::channel();
            let client = &client;
            let victim = s.spawn(move || {
                use_spare_reactor(true);
                // Register the socket in the spare first.
                client.set_timeout(Some(T)).unwrap();
                assert_times_out(T, || client.recv(&mut [0; 16]));

                panic_in_dispatch(client);
                client.set_timeout(None).unwrap();
                let (result, elapsed) = timed(|| client.recv(&mut [0; 16]));
                assert_panic_error(result);
                assert_prompt(elapsed, "the failed filing");
                step.send(()).unwrap();

                // The next calls work: data sent once this waits...
                let mut buf = [0; 16];
                let n = client.recv(&mut buf).expect("recv after the panic");
                assert_eq!(&buf[..n], b"s1");
                // ... and a timeout.
                client.set_timeout(Some(T)).unwrap();
                assert_times_out(T, || client.recv(&mut [0; 16]));
            });
            stepped.recv().unwrap();
            // The echo was waiting in the spare while the filing panicked.
            ping(&spare_local, b"during");
            ping(&own_local, b"during");
            assert_waiting(client, 1, "recv after the panic");
            server.send_all(b"s1").unwrap();
            victim.join().expect("the thread whose wait panicked");
            ping(&spare_local, b"after");
            ping(&own_local, b"after");
            drop(spare_local);
            drop(own_local);
            spare_echo.join().unwrap();
            own_echo.join().unwrap();
        });
    });
}

/// The spare reactor's side of `own_reactor_panic_loses_no_readiness`:
/// the panic in `Dispatch::ready` fails the waits listed there (here, a
/// select), and the event is not lost: the next recv gets the data queued
/// before.
#[test]
fn spare_reactor_panic_loses_no_readiness() {
    quiet_injected_panics();
    watchdog(WATCHDOG, || {
        let (client, server) = pair();
        let (other, _other_server) = pair();
        let client = &client;
        thread::scope(|s| {
            let (step, stepped) = mpsc::channel();
            let selector = s.spawn(move || {
                use_spare_reactor(true);
                client.set_timeout(Some(T)).unwrap();
                // Registers the socket in the spare, and marks it drained.
                assert_times_out(T, || client.recv(&mut [0; 16]));
                // Another wait, filed before the hook is armed.
                step.send(()).unwrap();
                select(&[client], &[], Some(MUST_SUCCEED))
            });
            stepped.recv().unwrap();
            assert_waiting(client, 1, "select in the spare");
            // The spare handles its requests in order: once a later one is
            // done, the select is filed.
            on_spare(|| select(&[&other], &[], Some(Duration::ZERO)).expect("select"));
            panic_in_dispatch(client);
            server.send_all(b"p1").unwrap();
            // The event's dispatch panicked: it failed the select.
            assert_panic_error(selector.join().unwrap());
            on_spare(|| {
                client.set_timeout(Some(T)).unwrap();
                let (result, elapsed) = timed(|| client.recv(&mut [0; 16]));
                assert_eq!(result.expect("the data queued before the panic"), 2);
                assert_prompt(elapsed, "recv of queued data");
            });
        });
    });
}

/// A socket closed while it is registered in two reactors (a thread's own,
/// idle, and the spare), whose descriptor number a new socket takes at
/// once, while the old token is still registered in both (each forgets it
/// at its next turn): the new socket gets a registration of its own in
/// each, its events reach its own waits, and the old registration's token,
/// once forgotten and reused, carries nothing stale.
#[test]
fn closed_sockets_numbers_and_tokens_reused_while_forgets_are_pending() {
    const ROUNDS: usize = 30;
    watchdog(WATCHDOG, || {
        let listener = listener();
        let t = Duration::from_millis(20);
        thread::scope(|s| {
            let mut hands = Vec::new();
            let mut acks = Vec::new();
            for spare in [false, true] {
                let (hand, take) = mpsc::channel::<Arc<(TcpStream, TcpStream)>>();
                let (ack, acked) = mpsc::channel::<()>();
                hands.push(hand);
                acks.push(acked);
                s.spawn(move || {
                    use_spare_reactor(spare);
                    for pair in take {
                        let mine = pair.0.try_clone().unwrap();
                        // Registers the socket here; nothing is queued.
                        mine.set_timeout(Some(t)).unwrap();
                        assert_times_out(t, || mine.recv(&mut [0; 8]));
                        ack.send(()).unwrap();
                        // Then waits for the byte the main thread sends.
                        let selected = select(&[&mine], &[], Some(MUST_SUCCEED)).expect("select");
                        assert_eq!(selected.readable, vec![0], "spare: {spare}");
                        drop(mine);
                        drop(pair);
                        ack.send(()).unwrap();
                    }
                });
            }
            let mut reused = 0;
            let mut last_fd = None;
            for round in 0..ROUNDS {
                let (client, server) = pair_on(&listener);
                if last_fd == Some(client.as_raw_fd()) {
                    reused += 1;
                }
                last_fd = Some(client.as_raw_fd());
                let pair = Arc::new((client, server));
                for hand in &hands {
                    hand.send(Arc::clone(&pair)).unwrap();
                }
                for acked in &acks {
                    acked.recv().unwrap();
                }
                assert_waiting(&pair.0, 2, &format!("round {round}: two selects"));
                pair.1.send_all(&[round as u8]).unwrap();
                for acked in &acks {
                    acked.recv().unwrap();
                }
                expect_bytes(&pair.0, &[round as u8]);
                // The last handle: the descriptor closes now, and both
                // reactors are posted the token to forget.
                drop(Arc::into_inner(pair).expect("the helpers let go"));
            }
            drop(hands);
            eprintln!("descriptor numbers reused at once in {reused} of {ROUNDS} rounds");
            assert!(
                reused > 0,
                "no descriptor number was reused: the test showed nothing"
            );
        });
    });
}

// ---------------------------------------------------------------------------
// 6. Sockets that move between threads

/// A socket handed from one thread to another (a connection passed around
/// a pool) is in both reactors until an event for it reaches the first one
/// while that thread waits on something else: then the first leaves it to
/// the second, so that its events stop waking the first thread. A socket
/// only one reactor has stays there, waited on or not. The first thread
/// can take the socket back, with nothing lost meanwhile.
#[test]
fn a_socket_handed_to_another_thread_leaves_the_first_ones_reactor() {
    watchdog(WATCHDOG, || {
        let (moved, moved_server) = pair();
        let (kept, kept_server) = pair();
        let (busy, busy_server) = pair();
        let (moved, kept, busy) = (&moved, &kept, &busy);
        thread::scope(|s| {
            let (step, stepped) = mpsc::channel();
            let (go, gone) = mpsc::channel::<()>();
            let first = s.spawn(move || {
                expect_bytes(moved, b"first");
                expect_bytes(kept, b"kept");
                step.send("registered").unwrap();
                gone.recv().unwrap();
                // Waiting on `busy` while `moved` and `kept` get data.
                expect_bytes(busy, b"busy");
                step.send("woken").unwrap();
                gone.recv().unwrap();
                // Back to `moved`: registered again, data sent before and after.
                expect_bytes(moved, b"backagain");
                expect_bytes(kept, b"still");
            });
            // Each recv waits before its data comes, so that it registers.
            assert_waiting(moved, 1, "the first thread's recv");
            moved_server.send_all(b"first").unwrap();
            assert_waiting(kept, 1, "the first thread's recv on `kept`");
            kept_server.send_all(b"kept").unwrap();
            assert_eq!(stepped.recv().unwrap(), "registered");
            assert_eq!(reactors(moved), 1);
            assert_eq!(reactors(kept), 1);

            // A second thread takes `moved` and keeps waiting on it.
            let (read, was_read) = mpsc::channel();
            let (release, released) = mpsc::channel::<()>();
            let second = s.spawn(move || {
                expect_bytes(moved, b"second");
                expect_bytes(moved, b"ping");
                read.send(()).unwrap();
                // Alive, with its reactor, until the counts are checked.
                released.recv().unwrap();
            });
            assert_waiting(moved, 1, "the second thread's recv");
            // Counted as waiting just before it registers.
            assert!(
                eventually(MUST_SUCCEED, || reactors(moved) == 2),
                "`moved` is in {} reactors, not both threads'",
                reactors(moved)
            );
            moved_server.send_all(b"second").unwrap();

            go.send(()).unwrap();
            assert_waiting(busy, 1, "the first thread's recv on another socket");
            kept_server.send_all(b"still").unwrap();
            moved_server.send_all(b"ping").unwrap();
            was_read.recv().unwrap();
            assert!(
                eventually(MUST_SUCCEED, || reactors(moved) == 1),
                "`moved` is in {} reactors after an event reached the first",
                reactors(moved)
            );
            assert_eq!(reactors(kept), 1, "only the first thread had `kept`");
            release.send(()).unwrap();
            second.join().expect("the second thread");
            busy_server.send_all(b"busy").unwrap();
            assert_eq!(stepped.recv().unwrap(), "woken");

            moved_server.send_all(b"back").unwrap();
            go.send(()).unwrap();
            assert_waiting(moved, 1, "the first thread's recv on `moved` again");
            moved_server.send_all(b"again").unwrap();
            first.join().expect("the first thread");
        });
    });
}

// ---------------------------------------------------------------------------
// 7. Stress of the hand-offs

/// A small seeded generator (xorshift64*), so that a failing run's choices
/// can be replayed with `ONTIME_SYNC_DRIVER_SEED` (thread timing is not).
#[derive(Clone, Debug)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        // splitmix64 of the seed, never zero.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        XorShift((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn micros(&mut self, below: u64) -> Duration {
        Duration::from_micros(self.below(below))
    }
}

const WORKERS: usize = 16;
const LINKS: usize = WORKERS / 2;
const DECOYS: usize = 6;
const MIN_ROUNDS: usize = 5;
const MAX_ROUNDS: usize = 400;
const STRESS_BUDGET: Duration = Duration::from_secs(5);

/// One connection of a round: its pinger sends messages that its ponger
/// echoes; with `shutdown`, the ponger answers the last message by shutting
/// the pinger's socket down instead.
#[derive(Debug)]
struct Link {
    client: TcpStream,
    server: TcpStream,
    pinger: usize,
    ponger: usize,
    lens: Vec<usize>,
    shutdown: Option<Shutdown>,
}

#[derive(Debug)]
struct Round {
    number: usize,
    links: Vec<Link>,
}

/// A socket pair that every worker selects on now and then, and that the
/// coordinator closes and replaces while the workers wait elsewhere.
#[derive(Debug)]
struct Decoy {
    client: TcpStream,
    server: TcpStream,
    /// Data is queued on the client, and nobody reads it.
    queued: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    messages: usize,
    expired: usize,
    in_time: usize,
    would_block: usize,
    shutdowns: usize,
    decoy_selects: usize,
}

impl Stats {
    fn add(&mut self, other: &Stats) {
        self.messages += other.messages;
        self.expired += other.expired;
        self.in_time += other.in_time;
        self.would_block += other.would_block;
        self.shutdowns += other.shutdowns;
        self.decoy_selects += other.decoy_selects;
    }
}

/// Byte `k` of message `j` on link `i` of round `r`: position-dependent,
/// so that a byte lost, repeated or out of order shows.
fn byte(r: usize, i: usize, j: usize, k: usize) -> u8 {
    (r.wrapping_mul(7) ^ i.wrapping_mul(13) ^ j.wrapping_mul(29)).wrapping_add(k) as u8
}

fn make_decoys(listener: &std::net::TcpListener, rng: &mut XorShift) -> Vec<Decoy> {
    (0..DECOYS)
        .map(|_| {
            let queued = rng.chance(50);
            let (client, server) = if queued {
                queued_pair_on(listener, b"d")
            } else {
                pair_on(listener)
            };
            Decoy {
                client,
                server,
                queued,
            }
        })
        .collect()
}

fn make_round(number: usize, listener: &std::net::TcpListener, rng: &mut XorShift) -> Round {
    let mut order: Vec<usize> = (0..WORKERS).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let links = (0..LINKS)
        .map(|i| {
            let (client, server) = pair_on(listener);
            Link {
                client,
                server,
                pinger: order[2 * i],
                ponger: order[2 * i + 1],
                lens: (0..1 + rng.below(6))
                    .map(|_| 1 + rng.below(64) as usize)
                    .collect(),
                shutdown: match rng.below(8) {
                    0 => Some(Shutdown::Read),
                    1 => Some(Shutdown::Both),
                    _ => None,
                },
            }
        })
        .collect();
    Round { number, links }
}

/// A short pause: nothing, a yield, or a sleep below `max_micros`.
fn pause(rng: &mut XorShift, max_micros: u64) {
    match rng.below(3) {
        0 => {}
        1 => thread::yield_now(),
        _ => thread::sleep(rng.micros(max_micros)),
    }
}

/// A short timeout, 1 to 20 ms.
fn short_timeout(rng: &mut XorShift) -> Duration {
    Duration::from_micros(1000 + rng.below(19_000))
}

/// Selects on a random part of the decoys, with a zero or a short timeout:
/// registers them in this thread's reactor (so each is in many reactors).
/// A decoy with data queued or a writable server end makes the result
/// non-empty (a tick has moved, or the look takes in the present readiness;
/// `select` returns what is ready at its first look that finds anything,
/// so not every queued decoy need be in it), a decoy with none queued is
/// never reported readable, and an empty result is never early.
fn look_at_decoys(decoys: &RwLock<Vec<Decoy>>, spare: bool, rng: &mut XorShift, stats: &mut Stats) {
    let decoys = decoys.read().unwrap_or_else(PoisonError::into_inner);
    let mut read: Vec<&dyn Selectable> = Vec::new();
    let mut queued = Vec::new();
    let mut write: Vec<&dyn Selectable> = Vec::new();
    for decoy in decoys.iter() {
        if rng.chance(50) {
            read.push(&decoy.client);
            queued.push(decoy.queued);
        }
        if rng.chance(15) {
            write.push(&decoy.server);
        }
    }
    if read.is_empty() && write.is_empty() {
        read.push(&decoys[0].client);
        queued.push(decoys[0].queued);
    }
    let timeout = if rng.chance(50) {
        Duration::ZERO
    } else {
        Duration::from_micros(200 + rng.below(3000))
    };
    let (selected, elapsed) = timed(|| select(&read, &write, Some(timeout)));
    let selected = selected.expect("select on decoys");
    for &p in &selected.readable {
        assert!(
            queued[p],
            "a decoy with nothing queued was reported readable"
        );
    }
    if queued.contains(&true) || !write.is_empty() {
        assert!(
            !selected.is_empty(),
            "decoys ready (queued {queued:?}, {} writable) were not reported \
                 (timeout {timeout:?}, after {elapsed:?}, {} reactor)",
            write.len(),
            if spare { "spare" } else { "own" }
        );
    } else {
        assert!(selected.is_empty());
        assert!(
            elapsed >= timeout,
            "select timed out early: {elapsed:?} < {timeout:?}"
        );
    }
    stats.decoy_selects += 1;
}

/// The pinger's side of message `msg`.
fn ping_side(link: &Link, msg: &[u8], last: bool, rng: &mut XorShift, stats: &mut Stats) {
    let client = &link.client;
    client
        .set_mode(if rng.chance(50) {
            Mode::Blocking
        } else {
            Mode::Timeout(MUST_SUCCEED)
        })
        .unwrap();
    client.send_all(msg).expect("pinger: send_all");
    let start = Instant::now();
    let mut buf = vec![0; msg.len().max(16)];
    if last && link.shutdown.is_some() {
        for _ in 0..10_000 {
            assert!(
                start.elapsed() < MUST_SUCCEED,
                "the shutdown did not end the pinger's recv"
            );
            let long = rng.chance(40);
            let t = if long {
                MUST_SUCCEED
            } else {
                short_timeout(rng)
            };
            client.set_mode(Mode::Timeout(t)).unwrap();
            let (result, elapsed) = timed(|| client.recv(&mut buf));
            match result {
                Ok(0) => {
                    stats.shutdowns += 1;
                    return;
                }
                Ok(n) => panic!("pinger: {n} bytes after the last message"),
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    assert!(!long, "a shutdown did not wake a recv within {t:?}");
                    assert_timed_out_error(&e);
                    assert!(elapsed >= t, "early: {elapsed:?} < {t:?}");
                    stats.expired += 1;
                }
                Err(e) => panic!("pinger after a shutdown: {e:?}"),
            }
        }
        panic!("pinger: no end of file in 10000 tries");
    }
    let mut got = 0;
    for _ in 0..10_000 {
        if got == msg.len() {
            break;
        }
        assert!(
            start.elapsed() < MUST_SUCCEED,
            "pinger: no echo within {MUST_SUCCEED:?}"
        );
        let t = short_timeout(rng);
        let mode = match rng.below(10) {
            0..=5 => Mode::Timeout(t),
            6..=7 => Mode::Blocking,
            _ => Mode::NonBlocking,
        };
        client.set_mode(mode).unwrap();
        let (result, elapsed) = timed(|| client.recv(&mut buf[got..msg.len()]));
        match result {
            Ok(0) => panic!("pinger: end of file before the echo"),
            Ok(n) => {
                got += n;
                if mode != Mode::Blocking {
                    stats.in_time += 1;
                }
            }
            Err(e) if e.kind() == ErrorKind::TimedOut && mode == Mode::Timeout(t) => {
                assert_timed_out_error(&e);
                assert!(elapsed >= t, "early: {elapsed:?} < {t:?}");
                stats.expired += 1;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && mode == Mode::NonBlocking => {
                stats.would_block += 1;
                thread::yield_now();
            }
            Err(e) => panic!("pinger in {mode:?}: {e:?}"),
        }
    }
    assert_eq!(got, msg.len(), "pinger: the echo never completed");
    assert_eq!(
        &buf[..got],
        msg,
        "the echo came back changed or out of order"
    );
    stats.messages += 1;
}

/// The ponger's side of message `msg`.
fn pong_side(link: &Link, msg: &[u8], last: bool, rng: &mut XorShift) {
    let server = &link.server;
    server
        .set_mode(if rng.chance(50) {
            Mode::Blocking
        } else {
            Mode::Timeout(MUST_SUCCEED)
        })
        .unwrap();
    let mut buf = vec![0; msg.len()];
    server.recv_exact(&mut buf).expect("ponger: recv_exact");
    assert_eq!(buf, msg, "a message arrived changed or out of order");
    if let (true, Some(how)) = (last, link.shutdown) {
        // Sometimes at once, racing the pinger's wait as it starts.
        pause(rng, 3000);
        link.client
            .shutdown(how)
            .expect("shutting the pinger's socket down");
        return;
    }
    pause(rng, 15_000);
    server.send_all(&buf).expect("ponger: echo");
}

/// Worker `w`'s part in `round`.
fn play(
    w: usize,
    spare: bool,
    round: &Round,
    decoys: &RwLock<Vec<Decoy>>,
    rng: &mut XorShift,
    stats: &mut Stats,
) {
    let (i, link) = round
        .links
        .iter()
        .enumerate()
        .find(|(_, link)| link.pinger == w || link.ponger == w)
        .expect("every worker has a part");
    for (j, &len) in link.lens.iter().enumerate() {
        if rng.chance(30) {
            look_at_decoys(decoys, spare, rng, stats);
        }
        let last = j + 1 == link.lens.len();
        let msg: Vec<u8> = (0..len).map(|k| byte(round.number, i, j, k)).collect();
        if link.pinger == w {
            ping_side(link, &msg, last, rng, stats);
        } else {
            pong_side(link, &msg, last, rng);
        }
    }
    if rng.chance(50) {
        look_at_decoys(decoys, spare, rng, stats);
    }
}

/// After the rounds: this thread's calls still work, in its reactor (own or
/// spare) that has seen hundreds of sockets come and go. (A listener of its
/// own: the workers check at the same time.)
fn health_check() {
    let (client, server) = pair();
    let t = Duration::from_millis(50);
    client.set_timeout(Some(t)).unwrap();
    assert_times_out(t, || client.recv(&mut [0; 8]));
    server.send_all(b"health").unwrap();
    expect_bytes(&client, b"health");
    client.set_blocking(false).unwrap();
    expect_kind(client.recv(&mut [0; 8]), ErrorKind::WouldBlock);
    let selected = select(&[&client], &[], Some(Duration::ZERO)).expect("select");
    assert!(selected.is_empty(), "drained");
    server.send_all(b"!").unwrap();
    let selected = select(&[&client], &[], Some(MUST_SUCCEED)).expect("select");
    assert_eq!(selected.readable, vec![0]);
    assert_eq!(client.recv(&mut [0; 8]).expect("recv"), 1);
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

type Report = (usize, Result<Stats, String>);

/// A worker: plays each round it is sent, then checks its health when the
/// rounds end. Even workers wait in their own reactors, odd ones in the
/// spare.
fn worker(
    w: usize,
    seed: u64,
    rounds: mpsc::Receiver<Arc<Round>>,
    decoys: Arc<RwLock<Vec<Decoy>>>,
    done: mpsc::Sender<Report>,
) {
    let spare = w % 2 == 1;
    use_spare_reactor(spare);
    let mut rng = XorShift::new(seed ^ (w as u64 + 1).wrapping_mul(0x9e37_79b9));
    while let Ok(round) = rounds.recv() {
        let mut stats = Stats::default();
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            play(w, spare, &round, &decoys, &mut rng, &mut stats);
        }));
        // The last worker to let go closes the round's sockets, which are
        // still registered in the other workers' reactors.
        drop(round);
        let report = result.map(|()| stats).map_err(panic_message);
        if done.send((w, report)).is_err() {
            return;
        }
    }
    let result = panic::catch_unwind(AssertUnwindSafe(health_check));
    let _ = done.send((w, result.map(|()| Stats::default()).map_err(panic_message)));
}

/// K threads, half in the spare reactor, ping-pong on shared connections
/// with random timeouts (some expire, some do not) and modes, while: a
/// ponger shuts its pinger's socket down from its own thread instead of
/// answering (sometimes at once, racing the wait's start); every worker
/// selects now and then on shared decoy sockets, so that each is
/// registered in many reactors, own and spare; the coordinator closes and
/// replaces the decoys while the workers wait elsewhere (Forgets posted to
/// reactors mid-turn, their descriptor numbers reused at once, while the
/// old tokens are still registered); and each round's connections are
/// closed by whichever worker lets go last, then new ones made, reusing
/// descriptor numbers and tokens. Checked: no call hangs (each round within
/// 20 s, the whole under the watchdog), no deadline fires early, every byte
/// arrives in order on every connection that is not shut down, a decoy
/// with nothing queued is never reported readable, a ready decoy always is,
/// and every thread's calls work at the end.
#[test]
fn stress_of_the_hand_offs_between_reactors() {
    watchdog(WATCHDOG, || {
        let seed = std::env::var("ONTIME_SYNC_DRIVER_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x0dd5_eed5_2024_u64);
        eprintln!("stress seed: {seed} (set ONTIME_SYNC_DRIVER_SEED to replay the choices)");
        let mut rng = XorShift::new(seed);
        // Only this thread makes connections on it.
        let listener = listener();
        let decoys = Arc::new(RwLock::new(make_decoys(&listener, &mut rng)));
        let (done, reports) = mpsc::channel::<Report>();
        let mut senders = Vec::new();
        let mut workers = Vec::new();
        for w in 0..WORKERS {
            let (tx, rx) = mpsc::channel();
            senders.push(tx);
            let decoys = Arc::clone(&decoys);
            let done = done.clone();
            let kind = if w % 2 == 1 { "spare" } else { "own" };
            workers.push(
                thread::Builder::new()
                    .name(format!("stress-{w}-{kind}"))
                    .spawn(move || worker(w, seed, rx, decoys, done))
                    .expect("spawning a worker"),
            );
        }
        drop(done);

        let start = Instant::now();
        let mut total = Stats::default();
        let mut rounds = 0;
        let mut replaced = 0;
        while rounds < MAX_ROUNDS && (rounds < MIN_ROUNDS || start.elapsed() < STRESS_BUDGET) {
            let round = Arc::new(make_round(rounds, &listener, &mut rng));
            for tx in &senders {
                tx.send(Arc::clone(&round)).expect("a worker is gone");
            }
            drop(round);
            let round_start = Instant::now();
            let mut finished = 0;
            while finished < WORKERS {
                match reports.recv_timeout(rng.micros(4000)) {
                    Ok((_, Ok(stats))) => {
                        finished += 1;
                        total.add(&stats);
                    }
                    Ok((w, Err(message))) => panic!("worker {w}, round {rounds}: {message}"),
                    Err(RecvTimeoutError::Timeout) => {
                        assert!(
                            round_start.elapsed() < 2 * MUST_SUCCEED,
                            "round {rounds} hung: {finished} of {WORKERS} workers done"
                        );
                        if rng.chance(50) {
                            // Close them all first, so that the new ones
                            // take their descriptor numbers.
                            let mut decoys = decoys.write().unwrap_or_else(PoisonError::into_inner);
                            decoys.clear();
                            decoys.extend(make_decoys(&listener, &mut rng));
                            replaced += 1;
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => panic!("every worker is gone"),
                }
            }
            rounds += 1;
        }
        drop(senders);
        for _ in 0..WORKERS {
            match reports.recv_timeout(2 * MUST_SUCCEED) {
                Ok((_, Ok(_))) => {}
                Ok((w, Err(message))) => panic!("worker {w}, health check: {message}"),
                Err(e) => panic!("a health check hung: {e:?}"),
            }
        }
        for worker in workers {
            worker.join().expect("worker");
        }
        eprintln!(
            "stress: {rounds} rounds in {:?}, {replaced} decoy replacements, {total:?}",
            start.elapsed()
        );
        assert!(total.messages > 0, "{total:?}");
        assert!(total.expired > 0, "no timeout expired: {total:?}");
        assert!(total.in_time > 0, "no timed recv got data: {total:?}");
        assert!(total.shutdowns > 0, "no shutdown: {total:?}");
        assert!(total.decoy_selects > 0, "{total:?}");
        assert!(replaced > 0, "the decoys were never replaced");
    });
}
