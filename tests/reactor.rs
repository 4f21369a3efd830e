//! The reactor over real loopback sockets: readiness, the state each
//! registration carries and the value each timer carries, I/O deadlines,
//! timers, remotes, stopping, fairness, token reuse, and the echo server
//! example under descriptor exhaustion.
//!
//! Timing follows the house bounds: a deadline is never early (asserted
//! strictly, since the wheel rounds deadlines up), and is late by at most
//! `max(1 s, T)`; waits that must succeed get 10 s; every test runs under a
//! watchdog and every loop is bounded.

use std::cell::Cell;
use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use ontime::net::{TcpListener, TcpStream};
use ontime::{
    AsSource, Builder, Direction, Handler, Interest, Reactor, Ready, Source, TimerId, Token,
};

// The example's server, so that the descriptor-exhaustion test exercises the
// very code the example runs.
#[allow(dead_code, unreachable_pub)]
#[path = "../examples/echo_reactor.rs"]
mod echo_server;

use echo_server::EchoServer;

mod common;

use common::{
    assert_not_late, assert_prompt, expect_kind, timed, watchdog, MUST_SUCCEED, PROMPTLY, WATCHDOG,
};

// ---- Shared by the tests ------------------------------------------------

/// A deadline `deadline` after the start never fires before it. The wheel
/// rounds deadlines up to a tick, so this holds strictly.
fn assert_not_early(elapsed: Duration, deadline: Duration) {
    assert!(
        elapsed >= deadline,
        "fired early: after {elapsed:?}, the deadline was {deadline:?}"
    );
}

/// Never early (strictly), and late by at most `max(1 s, deadline)`.
fn assert_timed_out(elapsed: Duration, deadline: Duration) {
    assert_not_early(elapsed, deadline);
    assert_not_late(elapsed, deadline);
}

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A connected loopback pair: a blocking std client and a non-blocking
/// server side ready to register.
fn loopback_pair() -> (std::net::TcpStream, TcpStream) {
    let (client, server) = blocking_pair();
    server.set_nonblocking(true).unwrap();
    (client, TcpStream::from_std(server))
}

/// A connected loopback pair, both sides blocking, with read and write
/// timeouts so that no test can hang on them.
fn blocking_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind(localhost()).unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    for stream in [&client, &server] {
        stream.set_read_timeout(Some(MUST_SUCCEED)).unwrap();
        stream.set_write_timeout(Some(MUST_SUCCEED)).unwrap();
    }
    (client, server)
}

/// A pair whose server side already has `data` waiting to be read.
fn readable_pair(data: &[u8]) -> (std::net::TcpStream, TcpStream) {
    let (mut client, server) = blocking_pair();
    client.write_all(data).unwrap();
    // A blocking peek returns once the bytes have arrived, so the source is
    // readable when it is registered.
    let mut byte = [0];
    assert_eq!(server.peek(&mut byte).unwrap(), 1);
    server.set_nonblocking(true).unwrap();
    (client, TcpStream::from_std(server))
}

/// A client connected to `addr`, with timeouts.
fn connect(addr: SocketAddr) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect_timeout(&addr, MUST_SUCCEED).unwrap();
    stream.set_read_timeout(Some(MUST_SUCCEED)).unwrap();
    stream.set_write_timeout(Some(MUST_SUCCEED)).unwrap();
    stream
}

/// A client connected to `addr` with 64 KiB socket buffers, so that filling
/// them takes little.
fn connect_small_buffers(addr: SocketAddr) -> std::net::TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_send_buffer_size(64 * 1024).unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket.connect_timeout(&addr.into(), MUST_SUCCEED).unwrap();
    let stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(MUST_SUCCEED)).unwrap();
    stream.set_write_timeout(Some(MUST_SUCCEED)).unwrap();
    stream
}

/// Writes `message` and reads it back.
fn echo_once(stream: &mut std::net::TcpStream, message: &[u8]) {
    stream.write_all(message).unwrap();
    let mut back = vec![0; message.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, message);
}

/// Reads until `WouldBlock` or end of file; returns what was read.
fn read_available(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = [0; 4096];
    let mut data = Vec::new();
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return data,
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return data,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Reads until `WouldBlock`; returns the number of bytes read.
fn drain(stream: &mut TcpStream) -> usize {
    read_available(stream).len()
}

/// Turns `reactor` until `done` holds for the handler, for at most
/// [`MUST_SUCCEED`]; returns whether it came to hold.
fn turn_until<H: Handler>(
    reactor: &mut Reactor<H>,
    handler: &mut H,
    mut done: impl FnMut(&H) -> bool,
) -> bool {
    let give_up = Instant::now() + MUST_SUCCEED;
    // Each turn waits until something happens or the time is up; the count
    // only bounds a reactor that would spin.
    for _ in 0..100_000 {
        if done(handler) {
            return true;
        }
        let left = give_up.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        reactor.turn(handler, Some(left)).unwrap();
    }
    done(handler)
}

/// Set when the value that holds it is dropped: how a test sees that the
/// reactor dropped a registration's state or a timer's value, and when.
#[derive(Debug)]
struct DropFlag(Rc<Cell<bool>>);

impl DropFlag {
    /// A flag, and the handle that tells whether it was dropped.
    fn new() -> (DropFlag, Rc<Cell<bool>>) {
        let dropped = Rc::new(Cell::new(false));
        (DropFlag(Rc::clone(&dropped)), dropped)
    }
}

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

/// A registration's state for the tests of states: a stream, a name, a count
/// handlers change, and a flag set when the reactor drops it.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    name: &'static str,
    hits: u32,
    _flag: DropFlag,
}

impl Conn {
    /// A state for `stream`, and the handle that tells whether it was
    /// dropped.
    fn new(stream: TcpStream, name: &'static str) -> (Conn, Rc<Cell<bool>>) {
        let (flag, dropped) = DropFlag::new();
        let conn = Conn {
            stream,
            name,
            hits: 0,
            _flag: flag,
        };
        (conn, dropped)
    }
}

impl AsSource for Conn {
    fn source(&mut self) -> &mut dyn Source {
        &mut self.stream
    }
}

/// Everything a handler can be told, as recorded by [`Recorder`]; a timer
/// is recorded with its id and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event<T = u32> {
    Ready(Token, Ready),
    TimedOut(Token, Direction),
    Timer(TimerId, T),
    Message(u32),
    Woken,
}

/// A handler that records what it is told and when. Its registrations are
/// streams, its timers carry a `T`, its messages are numbers.
#[derive(Debug)]
struct Recorder<T = u32> {
    events: Vec<(Instant, Event<T>)>,
}

impl<T> Default for Recorder<T> {
    fn default() -> Recorder<T> {
        Recorder { events: Vec::new() }
    }
}

impl<T: Clone> Recorder<T> {
    fn push(&mut self, event: Event<T>) {
        self.events.push((Instant::now(), event));
    }

    fn events(&self) -> Vec<Event<T>> {
        self.events.iter().map(|(_, event)| event.clone()).collect()
    }
}

impl<T: Clone> Handler for Recorder<T> {
    type State = TcpStream;
    type Timer = T;
    type Message = u32;

    fn ready(&mut self, _: &mut Reactor<Self>, token: Token, _: &mut TcpStream, ready: Ready) {
        self.push(Event::Ready(token, ready));
    }
    fn timed_out(
        &mut self,
        _: &mut Reactor<Self>,
        token: Token,
        _: &mut TcpStream,
        direction: Direction,
    ) {
        self.push(Event::TimedOut(token, direction));
    }
    fn timer(&mut self, _: &mut Reactor<Self>, timer: TimerId, value: &mut T) {
        self.push(Event::Timer(timer, value.clone()));
    }
    fn message(&mut self, _: &mut Reactor<Self>, message: u32) {
        self.push(Event::Message(message));
    }
    fn woken(&mut self, _: &mut Reactor<Self>) {
        self.push(Event::Woken);
    }
}

/// A tiny pseudo-random generator (xorshift64*), so the test needs no
/// dependency and a failure can be replayed from the printed seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

// ---- Readiness -----------------------------------------------------------

/// An echo handler on the reactor; the client checks the round trip.
#[test]
fn echo_round_trip() {
    /// A registration: the listener, or one of its connections.
    enum Entry {
        Listener(TcpListener),
        Conn(TcpStream),
    }

    impl AsSource for Entry {
        fn source(&mut self) -> &mut dyn Source {
            match self {
                Entry::Listener(listener) => listener,
                Entry::Conn(stream) => stream,
            }
        }
    }

    struct Echo {
        closed: usize,
    }

    impl Handler for Echo {
        type State = Entry;
        type Timer = ();
        type Message = ();

        fn ready(
            &mut self,
            reactor: &mut Reactor<Echo>,
            token: Token,
            entry: &mut Entry,
            _: Ready,
        ) {
            let stream = match entry {
                Entry::Listener(listener) => {
                    while let Ok((stream, _)) = listener.accept() {
                        reactor
                            .register(Entry::Conn(stream), Interest::READABLE)
                            .unwrap();
                    }
                    return;
                }
                Entry::Conn(stream) => stream,
            };
            let mut buf = [0; 4096];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    // The client waits for each echo before it sends more, so
                    // these small writes never block.
                    Ok(n) => stream.write_all(&buf[..n]).unwrap(),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) => panic!("read: {e}"),
                }
            }
            let given_back = reactor.deregister(token).unwrap();
            assert!(
                given_back.is_none(),
                "the state is lent to this call: nothing to give back"
            );
            self.closed += 1;
        }
    }

    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        let listener = TcpListener::bind(localhost()).unwrap();
        let addr = listener.local_addr().unwrap();
        let listener_token = reactor
            .register(Entry::Listener(listener), Interest::READABLE)
            .unwrap();
        let mut echo = Echo { closed: 0 };

        let client = thread::spawn(move || {
            let mut stream = connect(addr);
            for i in 0..100u32 {
                let message: Vec<u8> = (0..1000).map(|j| (i * 7 + j) as u8).collect();
                echo_once(&mut stream, &message);
            }
            stream.shutdown(Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty(), "nothing more after the last echo");
        });

        let give_up = Instant::now() + MUST_SUCCEED;
        while echo.closed == 0 && Instant::now() < give_up {
            reactor
                .turn(&mut echo, Some(Duration::from_millis(100)))
                .unwrap();
        }
        client.join().unwrap();
        assert_eq!(echo.closed, 1, "the server saw the client close");
        assert_eq!(reactor.sources(), 1, "only the listener is left");
        assert!(
            matches!(reactor.state(listener_token), Some(Entry::Listener(_))),
            "the listener keeps its state"
        );
    });
}

/// Two sources ready in one batch: the handler deregisters the second while
/// handling the first and registers a new source. The second's state is
/// given back, its event in the batch is dropped, and the new source is not
/// told of it.
#[test]
fn released_token_is_not_reused_within_a_batch() {
    /// One of the pair knows the other's token; the spare knows none.
    struct Peer {
        stream: TcpStream,
        other: Option<Token>,
    }

    impl AsSource for Peer {
        fn source(&mut self) -> &mut dyn Source {
            &mut self.stream
        }
    }

    struct Batch {
        spare: Option<TcpStream>,
        /// Each call: the token, and what its state's stream held.
        seen: Vec<(Token, Vec<u8>)>,
        released: Option<Token>,
        replacement: Option<Token>,
    }

    impl Handler for Batch {
        type State = Peer;
        type Timer = ();
        type Message = ();

        fn ready(&mut self, reactor: &mut Reactor<Batch>, token: Token, peer: &mut Peer, _: Ready) {
            self.seen.push((token, read_available(&mut peer.stream)));
            if self.released.is_some() {
                return;
            }
            let other = peer.other.expect("the first event is for one of the pair");
            let other_peer = reactor
                .deregister(other)
                .unwrap()
                .expect("a state not lent is given back");
            assert_eq!(other_peer.other, Some(token), "the pair name each other");
            self.released = Some(other);

            let spare = self.spare.take().unwrap();
            let new = reactor
                .register(
                    Peer {
                        stream: spare,
                        other: None,
                    },
                    Interest::READABLE,
                )
                .unwrap();
            self.replacement = Some(new);
        }
    }

    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::<Batch>::new().unwrap();
        let (_c1, s1) = readable_pair(b"1");
        let (_c2, s2) = readable_pair(b"2");
        // Readable too: if it inherited the released token's event, that
        // event would look legitimate.
        let (_c3, s3) = readable_pair(b"3");
        let t1 = reactor
            .register(
                Peer {
                    stream: s1,
                    other: None,
                },
                Interest::READABLE,
            )
            .unwrap();
        let t2 = reactor
            .register(
                Peer {
                    stream: s2,
                    other: Some(t1),
                },
                Interest::READABLE,
            )
            .unwrap();
        reactor.state_mut(t1).unwrap().other = Some(t2);
        let mut batch = Batch {
            spare: Some(s3),
            seen: Vec::new(),
            released: None,
            replacement: None,
        };

        let calls = reactor.turn(&mut batch, Some(MUST_SUCCEED)).unwrap();
        let released = batch.released.expect("a source was ready");
        let replacement = batch.replacement.unwrap();
        assert_eq!(
            calls, 1,
            "the released token's event is dropped: saw {:?}",
            batch.seen
        );
        assert_eq!(batch.seen.len(), 1);
        let (first, data) = &batch.seen[0];
        let expected: &[u8] = if *first == t1 { b"1" } else { b"2" };
        assert_eq!(data, expected, "the event came with its own state");
        assert!(
            !batch.seen.iter().any(|(token, _)| *token == replacement),
            "the new source got a stale event"
        );
        assert_ne!(
            replacement, released,
            "a token released during a batch is not reused in that batch"
        );

        // The new source's own readiness arrives on a later turn, under its
        // own token and with its own state.
        let calls = reactor.turn(&mut batch, Some(MUST_SUCCEED)).unwrap();
        assert_eq!(calls, 1);
        assert_eq!(batch.seen.last(), Some(&(replacement, b"3".to_vec())));
    });
}

/// Readiness requeued by the handler is delivered again on the next turn,
/// which does not block.
#[test]
fn requeue_delivers_again_next_turn() {
    struct Requeue {
        seen: Vec<(Token, Ready)>,
    }

    impl Handler for Requeue {
        type State = TcpStream;
        type Timer = ();
        type Message = ();

        fn ready(
            &mut self,
            reactor: &mut Reactor<Self>,
            token: Token,
            _: &mut TcpStream,
            ready: Ready,
        ) {
            if self.seen.is_empty() {
                reactor.requeue(token, ready);
            }
            self.seen.push((token, ready));
        }
    }

    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        let (_client, server) = readable_pair(b"x");
        let token = reactor.register(server, Interest::READABLE).unwrap();
        let mut handler = Requeue { seen: Vec::new() };

        assert_eq!(reactor.turn(&mut handler, Some(MUST_SUCCEED)).unwrap(), 1);
        let first = handler.seen[0];
        assert_eq!(first.0, token);
        assert!(first.1.is_readable());

        let start = Instant::now();
        assert_eq!(reactor.turn(&mut handler, Some(MUST_SUCCEED)).unwrap(), 1);
        assert!(
            start.elapsed() <= PROMPTLY,
            "a turn with requeued readiness does not wait"
        );
        assert_eq!(handler.seen[1], first, "the same readiness, again");

        // Requeued once only: nothing more.
        assert_eq!(
            reactor
                .turn(&mut handler, Some(Duration::from_millis(50)))
                .unwrap(),
            0
        );
        assert_eq!(handler.seen.len(), 2);
    });
}

/// `READ_CLOSED`, once seen, comes with every later event of the
/// registration: with readiness the handler requeued without it, and with a
/// real event the OS reports without it (a `WRITABLE` event of a source
/// registered for writing only, for which epoll reports nothing of the read
/// side).
#[test]
fn read_closed_is_kept_in_later_events() {
    struct Sticky {
        seen: Vec<Ready>,
        requeued: bool,
    }

    impl Handler for Sticky {
        type State = TcpStream;
        type Timer = ();
        type Message = ();

        fn ready(
            &mut self,
            reactor: &mut Reactor<Self>,
            token: Token,
            _: &mut TcpStream,
            ready: Ready,
        ) {
            // Deliberately no read: the data and the FIN stay queued, so
            // whatever the events say is all the handler knows.
            self.seen.push(ready);
            if ready.is_read_closed() && !self.requeued {
                reactor.requeue(token, Ready::READABLE);
                self.requeued = true;
            }
        }
    }

    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        let (mut client, server) = loopback_pair();
        let token = reactor.register(server, Interest::READABLE).unwrap();
        client.write_all(b"last words").unwrap();
        client.shutdown(Shutdown::Write).unwrap();

        let mut sticky = Sticky {
            seen: Vec::new(),
            requeued: false,
        };
        assert!(
            turn_until(&mut reactor, &mut sticky, |s| s.requeued),
            "the peer's shutdown was never reported: {:?}",
            sticky.seen
        );
        let closed_at = sticky.seen.len();

        // The requeued delivery: asked for as READABLE alone.
        let (calls, elapsed) = timed(|| reactor.turn(&mut sticky, Some(MUST_SUCCEED)).unwrap());
        assert_prompt(elapsed, "a turn with requeued readiness");
        assert_eq!(calls, 1, "{:?}", sticky.seen);
        assert_eq!(
            sticky.seen[closed_at],
            Ready::READABLE | Ready::READ_CLOSED,
            "the requeued readiness carries the flag seen before"
        );

        // A real event after it: writable, with no word of the read side from
        // the OS.
        reactor.reregister(token, Interest::WRITABLE).unwrap();
        assert!(
            turn_until(&mut reactor, &mut sticky, |s| s.seen.len() > closed_at + 1),
            "no event after asking for WRITABLE"
        );
        let later = sticky.seen[closed_at + 1];
        assert!(later.is_writable(), "{later:?}");
        #[cfg(target_os = "linux")]
        assert!(
            !later.is_readable(),
            "epoll reports no read side for a source registered for writing: {later:?}"
        );
        assert!(
            later.is_read_closed(),
            "a later event carries READ_CLOSED: {later:?}"
        );
        assert_eq!(sticky.seen.len(), closed_at + 2, "{:?}", sticky.seen);
    });
}

/// A turn started from inside a handler is refused with `Other`.
#[test]
fn turn_inside_a_handler_is_an_error() {
    struct Nested {
        result: Option<io::Result<usize>>,
    }

    impl Handler for Nested {
        type State = TcpStream;
        type Timer = ();
        type Message = ();

        fn ready(&mut self, reactor: &mut Reactor<Self>, _: Token, _: &mut TcpStream, _: Ready) {
            let mut inner = Nested { result: None };
            self.result = Some(reactor.turn(&mut inner, Some(Duration::ZERO)));
        }
    }

    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        let (_client, server) = readable_pair(b"x");
        reactor.register(server, Interest::READABLE).unwrap();
        let mut handler = Nested { result: None };
        assert_eq!(reactor.turn(&mut handler, Some(MUST_SUCCEED)).unwrap(), 1);
        let err = handler.result.take().expect("the handler ran").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Other, "{err}");
        // The reactor still turns afterwards.
        reactor.turn(&mut handler, Some(Duration::ZERO)).unwrap();
    });
}

/// A turn started from a timer callback is refused too: the handler is
/// running, whatever told it.
#[test]
fn turn_inside_a_timer_callback_is_an_error() {
    struct Nested {
        result: Option<io::Result<usize>>,
    }

    impl Handler for Nested {
        type State = ();
        type Timer = ();
        type Message = ();

        fn timer(&mut self, reactor: &mut Reactor<Self>, _: TimerId, _: &mut ()) {
            let mut inner = Nested { result: None };
            self.result = Some(reactor.turn(&mut inner, Some(Duration::ZERO)));
        }
    }

    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        reactor.timer_after(Duration::ZERO, ());
        let mut handler = Nested { result: None };
        assert_eq!(reactor.turn(&mut handler, Some(MUST_SUCCEED)).unwrap(), 1);
        let result = handler.result.take().expect("the handler ran");
        let err = result.expect_err("a nested turn from a timer callback was allowed");
        assert_eq!(err.kind(), io::ErrorKind::Other, "{err}");
    });
}

/// Readiness requeued for a token that is then deregistered is dropped,
/// even when the token has a new owner by the time it would be delivered.
#[test]
fn requeued_readiness_does_not_reach_the_next_owner() {
    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::<Recorder>::new().unwrap();
        let (_c1, first) = loopback_pair();
        let (_c2, second) = loopback_pair();
        let first_addr = first.local_addr().unwrap();
        let token = reactor.register(first, Interest::READABLE).unwrap();
        reactor.requeue(token, Ready::READABLE);
        let first = reactor
            .deregister(token)
            .unwrap()
            .expect("not lent: given back");
        assert_eq!(first.local_addr().unwrap(), first_addr);
        let reused = reactor.register(second, Interest::READABLE).unwrap();
        // Outside a dispatch batch a token is free at once: without reuse the
        // test would prove nothing.
        assert_eq!(reused, token, "the token was not reused");

        let mut recorder = Recorder::default();
        reactor
            .turn(&mut recorder, Some(Duration::from_millis(50)))
            .unwrap();
        assert!(
            !recorder
                .events()
                .contains(&Event::Ready(reused, Ready::READABLE)),
            "{reused:?} was told of readiness requeued for its previous owner"
        );
        // The new owner has nothing to read: no event of any kind.
        assert!(
            recorder.events().is_empty(),
            "unexpected events: {:?}",
            recorder.events()
        );
    });
}

/// Operations on a token that is not registered fail with `NotFound`.
#[test]
fn unknown_token_is_not_found() {
    let mut reactor: Reactor<Recorder> = Reactor::new().unwrap();
    let (_client, server) = loopback_pair();

    let unknown = Token(42);
    let err = reactor.deregister(unknown).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    let err = reactor.reregister(unknown, Interest::READABLE).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    let err = reactor
        .set_timeout(unknown, Direction::Read, Duration::from_secs(1))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    assert!(reactor.state(unknown).is_none());
    assert!(reactor.state_mut(unknown).is_none());

    // A token that was registered once is unknown after deregistration.
    let token = reactor.register(server, Interest::READABLE).unwrap();
    assert!(reactor.deregister(token).unwrap().is_some());
    let err = reactor.deregister(token).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    assert!(reactor.state(token).is_none());
    assert_eq!(reactor.sources(), 0);
}

// ---- States ----------------------------------------------------------------

/// During a call about a token, that token's state is lent to the call:
/// `state_mut` gives `None` for it and `Some` for the others; after the
/// turn the state is back, with the call's changes.
#[test]
fn state_is_lent_to_the_call_about_it() {
    /// What the call found: its own state through the reactor, mutably and
    /// not, and the other's name.
    type Inside = (Token, bool, bool, Option<&'static str>);

    struct Lent {
        other: Token,
        inside: Vec<Inside>,
    }

    impl Handler for Lent {
        type State = Conn;
        type Timer = ();
        type Message = ();

        fn ready(&mut self, reactor: &mut Reactor<Lent>, token: Token, conn: &mut Conn, _: Ready) {
            let own_mut = reactor.state_mut(token).is_none();
            let own = reactor.state(token).is_none();
            let other = reactor.state_mut(self.other).map(|other| {
                other.hits += 10;
                other.name
            });
            conn.hits += 1;
            self.inside.push((token, own_mut, own, other));
        }
    }

    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        let (_c1, ready) = readable_pair(b"x");
        let (_c2, quiet) = loopback_pair();
        let (ready, ready_dropped) = Conn::new(ready, "ready");
        let (quiet, quiet_dropped) = Conn::new(quiet, "quiet");
        let ready = reactor.register(ready, Interest::READABLE).unwrap();
        let quiet = reactor.register(quiet, Interest::READABLE).unwrap();
        let mut lent = Lent {
            other: quiet,
            inside: Vec::new(),
        };

        assert_eq!(reactor.turn(&mut lent, Some(MUST_SUCCEED)).unwrap(), 1);
        assert_eq!(
            lent.inside,
            [(ready, true, true, Some("quiet"))],
            "(token, own state_mut is None, own state is None, the other's name)"
        );
        let back = reactor
            .state(ready)
            .expect("the state is back after the turn");
        assert_eq!(
            (back.name, back.hits),
            ("ready", 1),
            "the call's change kept"
        );
        let other = reactor.state(quiet).unwrap();
        assert_eq!(
            (other.name, other.hits),
            ("quiet", 10),
            "the change made through state_mut kept"
        );
        reactor.state_mut(ready).unwrap().hits += 1;
        assert_eq!(reactor.state(ready).unwrap().hits, 2);
        assert!(!ready_dropped.get() && !quiet_dropped.get());
    });
}

/// `deregister` from the call about its own token returns `Ok(None)`; the
/// state is dropped as the call returns (not before: the call still uses
/// it), the source count drops by one, and nothing more reaches the token,
/// not even once a new source has it.
#[test]
fn deregister_in_its_own_callback_drops_the_state_as_the_call_returns() {
    /// What the call that deregistered saw.
    #[derive(Debug, PartialEq)]
    struct Inside {
        given_back_none: bool,
        dropped_during_the_call: bool,
        sources: usize,
        data: Vec<u8>,
    }

    struct Closer {
        old: Option<Rc<Cell<bool>>>,
        inside: Option<Inside>,
        /// Each call after that: the token, its state's name, what it held.
        seen: Vec<(Token, &'static str, Vec<u8>)>,
    }

    impl Handler for Closer {
        type State = Conn;
        type Timer = ();
        type Message = ();

        fn ready(
            &mut self,
            reactor: &mut Reactor<Closer>,
            token: Token,
            conn: &mut Conn,
            _: Ready,
        ) {
            if conn.name != "old" {
                self.seen
                    .push((token, conn.name, read_available(&mut conn.stream)));
                return;
            }
            let result = reactor.deregister(token);
            let dropped = self.old.as_ref().expect("the flag is set up").get();
            self.inside = Some(Inside {
                given_back_none: matches!(result, Ok(None)),
                dropped_during_the_call: dropped,
                sources: reactor.sources(),
                // The lent state is still whole until the call returns.
                data: read_available(&mut conn.stream),
            });
        }
    }

    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        let (mut old_client, old) = readable_pair(b"old");
        // A second descriptor of the old socket, kept open: the OS keeps a
        // registration while any descriptor of the socket is open, so only
        // the reactor's deregistration keeps the socket's later events from
        // the token's next owner.
        let _old_dup = socket2::SockRef::from(&old).try_clone().unwrap();
        let (_other_client, other) = loopback_pair();
        let (old, old_dropped) = Conn::new(old, "old");
        let (other, _) = Conn::new(other, "other");
        let token = reactor.register(old, Interest::READABLE).unwrap();
        let other = reactor.register(other, Interest::READABLE).unwrap();
        let before = reactor.sources();
        let mut closer = Closer {
            old: Some(Rc::clone(&old_dropped)),
            inside: None,
            seen: Vec::new(),
        };

        assert_eq!(reactor.turn(&mut closer, Some(MUST_SUCCEED)).unwrap(), 1);
        assert_eq!(
            closer.inside,
            Some(Inside {
                given_back_none: true,
                dropped_during_the_call: false,
                sources: before - 1,
                data: b"old".to_vec(),
            })
        );
        assert!(
            old_dropped.get(),
            "the state is dropped once the call returned"
        );
        assert_eq!(reactor.sources(), before - 1);
        assert!(reactor.state(token).is_none());
        assert!(
            reactor.state(other).is_some(),
            "the other source is untouched"
        );
        let err = reactor.deregister(token).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");

        // The old peer writes on; a new source takes the token.
        let _ = old_client.write_all(b"late");
        let (_new_client, new) = readable_pair(b"new");
        let (new, _) = Conn::new(new, "new");
        let reused = reactor.register(new, Interest::READABLE).unwrap();
        assert_eq!(reused, token, "the token was not reused");
        assert!(
            turn_until(&mut reactor, &mut closer, |c| !c.seen.is_empty()),
            "the new source's own event never came"
        );
        // Anything stray would come within this wait.
        reactor
            .turn(&mut closer, Some(Duration::from_millis(100)))
            .unwrap();
        assert_eq!(
            closer.seen,
            [(token, "new", b"new".to_vec())],
            "the token's new owner gets its own events only"
        );
    });
}

/// `deregister` outside any call gives the state back, whole and
/// deregistered from the OS (so that it can be registered again).
#[test]
fn deregister_outside_a_callback_gives_the_state_back() {
    struct Idle;

    impl Handler for Idle {
        type State = Conn;
        type Timer = ();
        type Message = ();
    }

    watchdog(WATCHDOG, || {
        let mut reactor: Reactor<Idle> = Reactor::new().unwrap();
        let (_client, server) = loopback_pair();
        let addr = server.local_addr().unwrap();
        let (conn, dropped) = Conn::new(server, "mine");
        let token = reactor.register(conn, Interest::READABLE).unwrap();
        reactor.state_mut(token).unwrap().hits = 3;

        let conn = reactor
            .deregister(token)
            .unwrap()
            .expect("not lent: given back");
        assert_eq!((conn.name, conn.hits), ("mine", 3));
        assert_eq!(conn.stream.local_addr().unwrap(), addr);
        assert!(!dropped.get(), "given back, not dropped");
        assert_eq!(reactor.sources(), 0);
        assert!(reactor.state(token).is_none());

        // Registering a source twice fails with the OS: this succeeds only
        // because the first registration is gone.
        let again = reactor.register(conn, Interest::READABLE).unwrap();
        let conn = reactor.deregister(again).unwrap().unwrap();
        drop(conn);
        assert!(dropped.get());
    });
}

/// `reregister` from the call about its own token takes effect as the call
/// returns: a source registered for reading only, widened to writing in its
/// first event, is told it is writable on a later turn.
#[test]
fn reregister_in_its_own_callback_takes_effect() {
    struct Widen {
        seen: Vec<Ready>,
        result: Option<io::Result<()>>,
    }

    impl Handler for Widen {
        type State = TcpStream;
        type Timer = ();
        type Message = ();

        fn ready(
            &mut self,
            reactor: &mut Reactor<Self>,
            token: Token,
            _: &mut TcpStream,
            ready: Ready,
        ) {
            self.seen.push(ready);
            if self.result.is_none() {
                self.result =
                    Some(reactor.reregister(token, Interest::READABLE | Interest::WRITABLE));
            }
        }
    }

    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        let (_client, server) = readable_pair(b"x");
        reactor.register(server, Interest::READABLE).unwrap();
        let mut widen = Widen {
            seen: Vec::new(),
            result: None,
        };

        assert_eq!(reactor.turn(&mut widen, Some(MUST_SUCCEED)).unwrap(), 1);
        assert!(widen.result.take().expect("the handler ran").is_ok());
        assert!(
            !widen.seen[0].is_writable(),
            "registered for reading only: {:?}",
            widen.seen[0]
        );
        widen.result = Some(Ok(()));
        assert!(
            turn_until(&mut reactor, &mut widen, |w| w.seen.len() > 1),
            "no event after the new interest"
        );
        assert!(
            widen.seen[1].is_writable(),
            "the new interest took effect: {:?}",
            widen.seen
        );
    });
}

// ---- I/O deadlines ---------------------------------------------------------

/// A read deadline on a connection nobody writes to fires, never early.
#[test]
fn read_deadline_is_never_early() {
    watchdog(WATCHDOG, || {
        for timeout in [Duration::from_millis(200), Duration::from_millis(300)] {
            let mut reactor = Reactor::new().unwrap();
            let (_client, server) = loopback_pair();
            let token = reactor.register(server, Interest::READABLE).unwrap();
            let mut recorder = Recorder::<u32>::default();

            let start = Instant::now();
            reactor
                .set_timeout(token, Direction::Read, timeout)
                .unwrap();
            let armed = reactor.deadline(token, Direction::Read).expect("armed");
            assert!(
                armed >= start + timeout,
                "the armed tick is at or after the deadline"
            );

            for _ in 0..100 {
                if !recorder.events.is_empty() {
                    break;
                }
                reactor.turn(&mut recorder, Some(MUST_SUCCEED)).unwrap();
            }
            assert_eq!(recorder.events(), [Event::TimedOut(token, Direction::Read)]);
            assert_timed_out(recorder.events[0].0 - start, timeout);
            assert_eq!(
                reactor.deadline(token, Direction::Read),
                None,
                "it is disarmed"
            );
            assert_eq!(reactor.resident_timers(), 0);
        }
    });
}

/// A read deadline pushed back by every arrival of data never fires.
#[test]
fn deadline_pushed_back_by_activity_never_fires() {
    // The activity lasts twice the timeout, so a deadline that is not pushed
    // back would fire; a send may come up to 950 ms late before the test
    // fails for lack of activity (house bound: 1 s).
    const TIMEOUT: Duration = Duration::from_millis(1000);
    const PERIOD: Duration = Duration::from_millis(50);
    const SENDS: u32 = 40;

    /// The ticker's value: the client end it writes to, and its count.
    struct Sender {
        client: std::net::TcpStream,
        sends: u32,
    }

    struct Active {
        token: Token,
        ticker: TimerId,
        received: usize,
        timed_out: u32,
        cancelled: Option<bool>,
    }

    impl Handler for Active {
        type State = TcpStream;
        type Timer = Sender;
        type Message = ();

        fn ready(
            &mut self,
            reactor: &mut Reactor<Self>,
            token: Token,
            server: &mut TcpStream,
            ready: Ready,
        ) {
            assert_eq!(token, self.token);
            assert!(ready.is_readable());
            self.received += drain(server);
            // Waiting again: bound the wait.
            reactor
                .set_timeout(token, Direction::Read, TIMEOUT)
                .unwrap();
        }
        fn timed_out(&mut self, _: &mut Reactor<Self>, _: Token, _: &mut TcpStream, _: Direction) {
            self.timed_out += 1;
        }
        fn timer(&mut self, reactor: &mut Reactor<Self>, timer: TimerId, sender: &mut Sender) {
            assert_eq!(timer, self.ticker);
            sender.client.write_all(b".").unwrap();
            sender.sends += 1;
            if sender.sends == SENDS {
                self.cancelled = Some(reactor.cancel_timer(timer));
            }
        }
    }

    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        let (client, server) = loopback_pair();
        let token = reactor.register(server, Interest::READABLE).unwrap();
        reactor
            .set_timeout(token, Direction::Read, TIMEOUT)
            .unwrap();
        let ticker = reactor.interval(PERIOD, Sender { client, sends: 0 });
        let mut active = Active {
            token,
            ticker,
            received: 0,
            timed_out: 0,
            cancelled: None,
        };

        // Each turn handles at least one event; 10 per send is plenty.
        for _ in 0..SENDS * 10 {
            if active.received == SENDS as usize {
                break;
            }
            reactor.turn(&mut active, Some(MUST_SUCCEED)).unwrap();
        }
        assert_eq!(active.received, SENDS as usize);
        assert_eq!(
            active.timed_out, 0,
            "activity kept pushing the deadline back"
        );
        assert_eq!(
            active.cancelled,
            Some(true),
            "the ticker counted in its value"
        );
        // The deadline is armed again, for the silence that follows.
        assert!(reactor.deadline(token, Direction::Read).is_some());
    });
}

/// A zero-delay timer and an already-passed deadline fire on the very next
/// turn, which does not wait for a tick (`turn(h, None)` would otherwise
/// block for ever: nothing else is going on).
#[test]
fn zero_delay_and_passed_deadline_fire_on_the_next_turn() {
    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        let (_client, server) = loopback_pair();
        let token = reactor.register(server, Interest::READABLE).unwrap();
        let mut recorder = Recorder::default();

        for round in 0..5 {
            recorder.events.clear();
            let timer = reactor.timer_after(Duration::ZERO, round);
            let passed = Instant::now();
            reactor
                .set_deadline(token, Direction::Read, Some(passed))
                .unwrap();

            let calls = reactor.turn(&mut recorder, None).unwrap();
            assert_eq!(calls, 2, "round {round}: {:?}", recorder.events());
            let events = recorder.events();
            assert!(
                events.contains(&Event::Timer(timer, round)),
                "round {round}: {events:?}"
            );
            assert!(
                events.contains(&Event::TimedOut(token, Direction::Read)),
                "round {round}: {events:?}"
            );
            assert_eq!(reactor.resident_timers(), 0);
            // Let the clock move on, so that later rounds start with the
            // wheel behind the present.
            thread::sleep(Duration::from_millis(3));
        }
    });
}

// ---- Timers ----------------------------------------------------------------

/// Many timers with random delays of 0-30 ms: each fires once, none early.
/// Each timer's value is the earliest instant it may fire at.
#[test]
fn timers_are_never_early() {
    const TIMERS: usize = 300;

    watchdog(WATCHDOG, || {
        let seed = Instant::now().elapsed().as_nanos() as u64 | 1;
        let mut rng = XorShift(seed ^ 0x9e37_79b9_7f4a_7c15);
        let mut reactor = Reactor::new().unwrap();
        let mut recorder = Recorder::<Instant>::default();

        let mut ids = HashSet::new();
        for i in 0..TIMERS {
            let delay = Duration::from_micros(rng.next() % 30_001);
            let id = if i % 2 == 0 {
                let at = Instant::now() + delay;
                reactor.timer_at(at, at)
            } else {
                let now = Instant::now();
                reactor.timer_after(delay, now + delay)
            };
            ids.insert(id);
        }
        assert_eq!(ids.len(), TIMERS, "seed {seed}: ids are distinct");

        for _ in 0..10_000 {
            if recorder.events.len() >= TIMERS {
                break;
            }
            reactor.turn(&mut recorder, None).unwrap();
        }
        assert_eq!(
            recorder.events.len(),
            TIMERS,
            "seed {seed}: every timer fired once"
        );
        let mut fired = HashSet::new();
        for &(at, event) in &recorder.events {
            let Event::Timer(id, not_before) = event else {
                panic!("seed {seed}: unexpected {event:?}");
            };
            assert!(ids.contains(&id), "seed {seed}: unknown {id:?}");
            assert!(fired.insert(id), "seed {seed}: {id:?} fired twice");
            assert!(
                at >= not_before,
                "seed {seed}: {id:?} fired {:?} early",
                not_before - at
            );
            assert_not_late(at - not_before, Duration::ZERO);
        }
        assert_eq!(reactor.resident_timers(), 0);
    });
}

/// An interval fires every period, never early, and stops once cancelled.
/// It counts its firings in its value.
#[test]
fn interval_repeats_until_cancelled() {
    const PERIOD: Duration = Duration::from_millis(20);
    const FIRINGS: u32 = 5;

    struct Ticks {
        start: Instant,
        at: Vec<Duration>,
        counts: Vec<u32>,
        cancelled: Option<bool>,
    }

    impl Handler for Ticks {
        type State = ();
        type Timer = u32;
        type Message = ();

        fn timer(&mut self, reactor: &mut Reactor<Self>, timer: TimerId, fired: &mut u32) {
            self.at.push(self.start.elapsed());
            *fired += 1;
            self.counts.push(*fired);
            if *fired == FIRINGS {
                self.cancelled = Some(reactor.cancel_timer(timer));
            }
        }
    }

    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        let mut ticks = Ticks {
            start: Instant::now(),
            at: Vec::new(),
            counts: Vec::new(),
            cancelled: None,
        };
        let interval = reactor.interval(PERIOD, 0);
        for _ in 0..1000 {
            if ticks.cancelled.is_some() {
                break;
            }
            reactor.turn(&mut ticks, None).unwrap();
        }
        assert_eq!(ticks.cancelled, Some(true), "cancelling a live interval");
        assert_eq!(ticks.counts, (1..=FIRINGS).collect::<Vec<_>>());
        for (k, &at) in ticks.at.iter().enumerate() {
            // Each deadline is one period after the previous one, so the
            // k-th firing (from 1) is at least k periods after the start.
            assert_not_early(at, PERIOD * (k as u32 + 1));
        }

        // Nothing more fires.
        let quiet = Instant::now() + PERIOD * 5;
        while Instant::now() < quiet {
            reactor.turn(&mut ticks, Some(PERIOD)).unwrap();
        }
        assert_eq!(ticks.at.len(), FIRINGS as usize);
        assert_eq!(reactor.resident_timers(), 0);
        assert!(!reactor.cancel_timer(interval), "already cancelled");
    });
}

/// Cancelling a timer that fired, or was cancelled, returns false and leaves
/// other timers (even one reusing its slot) alone.
#[test]
fn cancel_of_a_stale_timer_is_false() {
    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        let mut recorder = Recorder::default();

        let fired = reactor.timer_after(Duration::ZERO, 1);
        assert_eq!(reactor.turn(&mut recorder, None).unwrap(), 1);
        assert_eq!(recorder.events(), [Event::Timer(fired, 1)]);
        assert!(!reactor.cancel_timer(fired), "a fired timer is stale");
        assert_eq!(reactor.timer_deadline(fired), None);

        let cancelled = reactor.timer_after(Duration::from_secs(60), 2);
        assert!(reactor.cancel_timer(cancelled));
        assert!(!reactor.cancel_timer(cancelled), "cancelled twice");
        assert!(
            !reactor.reset_timer(cancelled, Instant::now()),
            "reset of a stale timer"
        );

        // A new timer may take the old one's place; the stale ids do not
        // reach it.
        let fresh = reactor.timer_after(Duration::ZERO, 3);
        assert!(!reactor.cancel_timer(fired));
        assert!(!reactor.cancel_timer(cancelled));
        recorder.events.clear();
        assert_eq!(reactor.turn(&mut recorder, None).unwrap(), 1);
        assert_eq!(recorder.events(), [Event::Timer(fresh, 3)]);
    });
}

// ---- Timer values ----------------------------------------------------------

/// A timer's value for the tests of values: a name, the count of its
/// firings (kept by the handler), and a flag set when the reactor drops it.
#[derive(Debug)]
struct Probe {
    name: &'static str,
    fired: u32,
    _flag: DropFlag,
}

impl Probe {
    /// A value named `name`, and the handle that tells whether it was
    /// dropped.
    fn new(name: &'static str) -> (Probe, Rc<Cell<bool>>) {
        let (flag, dropped) = DropFlag::new();
        let probe = Probe {
            name,
            fired: 0,
            _flag: flag,
        };
        (probe, dropped)
    }
}

/// One call of [`Probes::timer`]: when, which timer, its value's name, and
/// its count after the call.
type Fired = (Instant, TimerId, &'static str, u32);

/// Counts each firing in the timer's value; cancels a timer that reaches
/// `cancel_at`; when the timer named "mover" fires, resets `target` to
/// `delay` from then.
#[derive(Default)]
struct Probes {
    calls: Vec<Fired>,
    cancel_at: Option<u32>,
    cancelled: Option<bool>,
    target: Option<(TimerId, Duration)>,
    /// What `reset_timer` returned, and the deadline it was given.
    moved: Option<(bool, Instant)>,
}

impl Handler for Probes {
    type State = ();
    type Timer = Probe;
    type Message = ();

    fn timer(&mut self, reactor: &mut Reactor<Self>, id: TimerId, probe: &mut Probe) {
        probe.fired += 1;
        self.calls
            .push((Instant::now(), id, probe.name, probe.fired));
        if Some(probe.fired) == self.cancel_at {
            self.cancelled = Some(reactor.cancel_timer(id));
        }
        if probe.name == "mover" {
            if let Some((target, delay)) = self.target {
                let at = Instant::now() + delay;
                self.moved = Some((reactor.reset_timer(target, at), at));
            }
        }
    }
}

impl Probes {
    /// The calls without their instants.
    fn fired(&self) -> Vec<(TimerId, &'static str, u32)> {
        self.calls
            .iter()
            .map(|&(_, id, name, count)| (id, name, count))
            .collect()
    }
}

/// A one-shot timer's value is handed to the handler once, then dropped.
#[test]
fn one_shot_timer_value_is_handed_once_then_dropped() {
    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        let mut probes = Probes::default();
        let (probe, dropped) = Probe::new("once");
        let id = reactor.timer_after(Duration::ZERO, probe);
        assert!(!dropped.get(), "kept while pending");

        assert_eq!(reactor.turn(&mut probes, None).unwrap(), 1);
        assert_eq!(probes.fired(), [(id, "once", 1)]);
        assert!(dropped.get(), "dropped once handed over");
        assert_eq!(reactor.timer_deadline(id), None);
        assert!(!reactor.cancel_timer(id));

        assert_eq!(
            reactor
                .turn(&mut probes, Some(Duration::from_millis(50)))
                .unwrap(),
            0
        );
        assert_eq!(probes.calls.len(), 1, "handed once");
    });
}

/// An interval hands the same value, as the handler left it, to each
/// firing; cancelling it drops the value.
#[test]
fn interval_value_persists_across_firings() {
    const PERIOD: Duration = Duration::from_millis(5);
    const FIRINGS: usize = 4;

    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        let mut probes = Probes::default();
        let (probe, dropped) = Probe::new("tick");
        let id = reactor.interval(PERIOD, probe);

        assert!(
            turn_until(&mut reactor, &mut probes, |p| p.calls.len() >= FIRINGS),
            "the interval fired {} times",
            probes.calls.len()
        );
        let expected: Vec<_> = (1..=FIRINGS as u32).map(|n| (id, "tick", n)).collect();
        assert_eq!(probes.fired(), expected, "the count grows in the value");
        assert!(!dropped.get(), "kept between firings");
        assert!(reactor.timer_deadline(id).is_some());

        assert!(reactor.cancel_timer(id));
        assert!(dropped.get(), "cancelling drops the value");
        assert_eq!(reactor.resident_timers(), 0);
    });
}

/// An interval that cancels itself in its own callback: its value is
/// dropped as the call returns, and it never fires again.
#[test]
fn interval_cancelling_itself_drops_its_value() {
    const PERIOD: Duration = Duration::from_millis(5);

    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        let mut probes = Probes {
            cancel_at: Some(3),
            ..Probes::default()
        };
        let (probe, dropped) = Probe::new("self");
        let id = reactor.interval(PERIOD, probe);

        assert!(
            turn_until(&mut reactor, &mut probes, |p| p.cancelled.is_some()),
            "the interval fired {} times",
            probes.calls.len()
        );
        assert_eq!(probes.cancelled, Some(true), "cancelled while live");
        assert!(dropped.get(), "the value went with the timer");
        assert_eq!(reactor.resident_timers(), 0);
        assert_eq!(reactor.timer_deadline(id), None);

        let quiet = Instant::now() + PERIOD * 10;
        while Instant::now() < quiet {
            reactor.turn(&mut probes, Some(PERIOD)).unwrap();
        }
        assert_eq!(
            probes.fired(),
            [(id, "self", 1), (id, "self", 2), (id, "self", 3)],
            "never fired again"
        );
        assert!(!reactor.cancel_timer(id));
    });
}

/// A timer moved from another timer's callback keeps its id and its value,
/// and fires at its new deadline, never before.
#[test]
fn timer_reset_in_another_timers_callback_keeps_its_value() {
    const DELAY: Duration = Duration::from_millis(20);

    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        let (far, far_dropped) = Probe::new("far");
        let far = reactor.timer_after(Duration::from_secs(60), far);
        let (mover, mover_dropped) = Probe::new("mover");
        let mover = reactor.timer_after(Duration::ZERO, mover);
        let mut probes = Probes {
            target: Some((far, DELAY)),
            ..Probes::default()
        };

        assert_eq!(reactor.turn(&mut probes, None).unwrap(), 1);
        assert_eq!(probes.fired(), [(mover, "mover", 1)]);
        let (moved, at) = probes.moved.expect("the mover fired");
        assert!(moved, "reset of a pending timer");
        assert!(mover_dropped.get());
        assert!(!far_dropped.get(), "moving a timer keeps its value");
        let deadline = reactor.timer_deadline(far).expect("still pending");
        assert!(deadline >= at, "moved to {at:?}, fires at {deadline:?}");

        assert!(
            turn_until(&mut reactor, &mut probes, |p| p.calls.len() >= 2),
            "the moved timer never fired"
        );
        let (fired_at, id, name, count) = probes.calls[1];
        assert_eq!((id, name, count), (far, "far", 1), "its own value, unfired");
        assert!(
            fired_at >= at,
            "fired {:?} before its new deadline",
            at - fired_at
        );
        assert_not_late(fired_at - at, Duration::ZERO);
        assert!(far_dropped.get(), "dropped once fired");
        assert_eq!(probes.calls.len(), 2);
    });
}

// ---- Stopping ----------------------------------------------------------------

/// Records each timer by name, and stops `run` when a timer whose value says
/// so fires.
#[derive(Default)]
struct Stopper {
    fired: Vec<(Instant, &'static str)>,
}

impl Handler for Stopper {
    type State = ();
    /// A name, and whether to stop.
    type Timer = (&'static str, bool);
    type Message = ();

    fn timer(
        &mut self,
        reactor: &mut Reactor<Self>,
        _: TimerId,
        &mut (name, stop): &mut Self::Timer,
    ) {
        self.fired.push((Instant::now(), name));
        if stop {
            reactor.stop();
        }
    }
}

impl Stopper {
    fn names(&self) -> Vec<&'static str> {
        self.fired.iter().map(|&(_, name)| name).collect()
    }
}

/// After a stop was consumed, `run` waits for work: here a 20 ms timer that
/// stops it, which it must not outrun.
fn assert_run_waits_for_work(reactor: &mut Reactor<Stopper>, stopper: &mut Stopper) {
    const DELAY: Duration = Duration::from_millis(20);
    let before = stopper.fired.len();
    let start = Instant::now();
    reactor.timer_after(DELAY, ("stop", true));
    reactor.run(stopper).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(
        stopper.names().last(),
        Some(&"stop"),
        "run returned before its work: {:?}",
        stopper.names()
    );
    assert!(stopper.fired.len() > before);
    assert_timed_out(elapsed, DELAY);
    assert!(!reactor.is_stopping(), "the stop was consumed");
}

/// `Reactor::stop` before `run` makes it return at once, without a turn
/// (a due timer does not fire), instead of waiting for a 10 s timer; the
/// stop is consumed, so the next `run` waits for its work.
#[test]
fn stop_before_run_returns_at_once_and_is_consumed() {
    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        let mut stopper = Stopper::default();
        reactor.timer_after(Duration::ZERO, ("due", false));
        let far = reactor.timer_after(Duration::from_secs(10), ("far", true));
        reactor.stop();
        assert!(reactor.is_stopping());

        let (result, elapsed) = timed(|| reactor.run(&mut stopper));
        result.unwrap();
        assert_prompt(elapsed, "run after a stop");
        assert_eq!(stopper.names(), Vec::<&str>::new(), "no turn");
        assert!(!reactor.is_stopping(), "the stop was consumed");

        assert_run_waits_for_work(&mut reactor, &mut stopper);
        assert_eq!(stopper.names(), ["due", "stop"]);
        assert!(reactor.timer_deadline(far).is_some(), "still pending");
    });
}

/// `Remote::stop` before `run` makes it return at once, without a turn, and
/// is consumed like `Reactor::stop`. Received by a hand-driven turn, it is
/// kept (`is_stopping`) until a `run` returns because of it, and does not
/// make the turns after it spin.
#[test]
fn remote_stop_before_run_returns_at_once_and_is_consumed() {
    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        let remote = reactor.remote();
        let mut stopper = Stopper::default();
        reactor.timer_after(Duration::ZERO, ("due", false));
        let far = reactor.timer_after(Duration::from_secs(10), ("far", true));
        remote.stop().unwrap();

        let (result, elapsed) = timed(|| reactor.run(&mut stopper));
        result.unwrap();
        assert_prompt(elapsed, "run after a remote stop");
        assert_eq!(stopper.names(), Vec::<&str>::new(), "no turn");
        assert!(!reactor.is_stopping());

        // The wake-up the stop left behind does not end the next run.
        assert_run_waits_for_work(&mut reactor, &mut stopper);
        assert_eq!(stopper.names(), ["due", "stop"]);

        // A stop a hand-driven turn receives stays pending.
        remote.stop().unwrap();
        let (calls, elapsed) = timed(|| reactor.turn(&mut stopper, Some(MUST_SUCCEED)).unwrap());
        assert_prompt(elapsed, "a turn woken by a stop");
        assert_eq!(calls, 0);
        assert!(reactor.is_stopping(), "received, kept for run");
        let wait = Duration::from_millis(100);
        let (calls, elapsed) = timed(|| reactor.turn(&mut stopper, Some(wait)).unwrap());
        assert_eq!(calls, 0);
        assert_not_early(elapsed, wait);
        assert!(reactor.is_stopping());
        let (result, elapsed) = timed(|| reactor.run(&mut stopper));
        result.unwrap();
        assert_prompt(elapsed, "run after a received stop");
        assert!(!reactor.is_stopping());
        assert!(reactor.timer_deadline(far).is_some(), "still pending");
    });
}

/// `stop` ends `run`; a program that turns the reactor itself is not left
/// with turns that never wait.
#[test]
fn stop_does_not_make_later_turns_spin() {
    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::<Recorder>::new().unwrap();
        let mut recorder = Recorder::default();
        reactor.stop();
        reactor.turn(&mut recorder, Some(Duration::ZERO)).unwrap();

        let wait = Duration::from_millis(100);
        let start = Instant::now();
        reactor.turn(&mut recorder, Some(wait)).unwrap();
        assert_not_early(start.elapsed(), wait);
        assert!(reactor.is_stopping(), "turns leave the stop for run");
        assert!(recorder.events().is_empty());
    });
}

// ---- Remotes -----------------------------------------------------------------

/// Runs a reactor with nothing to do but wait for `poke`, called from another
/// thread; returns what the handler saw.
fn run_until_poked(poke: impl FnOnce(&ontime::Remote<u32>) + Send + 'static) -> Vec<Event> {
    struct StopOnAnything(Recorder);

    impl Handler for StopOnAnything {
        type State = TcpStream;
        type Timer = u32;
        type Message = u32;

        fn ready(&mut self, _: &mut Reactor<Self>, token: Token, _: &mut TcpStream, ready: Ready) {
            self.0.push(Event::Ready(token, ready));
        }
        fn message(&mut self, reactor: &mut Reactor<Self>, message: u32) {
            self.0.push(Event::Message(message));
            reactor.stop();
        }
        fn woken(&mut self, reactor: &mut Reactor<Self>) {
            self.0.push(Event::Woken);
            reactor.stop();
        }
    }

    watchdog(WATCHDOG, move || {
        let mut reactor = Reactor::<StopOnAnything>::new().unwrap();
        let remote = reactor.remote();
        let poker = thread::spawn(move || {
            // Not needed for correctness (a poke before `run` works too); it
            // makes it likely that the loop is parked in the poll.
            thread::sleep(Duration::from_millis(50));
            poke(&remote);
        });
        let mut handler = StopOnAnything(Recorder::default());
        reactor.run(&mut handler).unwrap();
        poker.join().unwrap();
        handler.0.events()
    })
}

#[test]
fn remote_wake_unblocks_run() {
    let events = run_until_poked(|remote| remote.wake().unwrap());
    assert_eq!(events, [Event::Woken]);
}

#[test]
fn remote_send_unblocks_run() {
    let events = run_until_poked(|remote| remote.send(7).unwrap());
    assert_eq!(events, [Event::Message(7)]);
}

#[test]
fn remote_stop_unblocks_run() {
    let events = run_until_poked(|remote| remote.stop().unwrap());
    assert_eq!(events, []);
}

/// A sender that is gone, and a reactor that is gone.
#[test]
fn send_to_a_dropped_reactor_fails() {
    let reactor = Reactor::<Recorder>::new().unwrap();
    let remote = reactor.remote();
    drop(reactor);
    assert_eq!(remote.send(1), Err(ontime::SendError(1)));
    assert_eq!(remote.post(2), Err(ontime::SendError(2)));
}

/// No more than `messages_per_turn` messages are handled per turn; the rest
/// wait for the next turns, in order, without blocking them.
#[test]
fn messages_per_turn_bounds_each_turn() {
    watchdog(WATCHDOG, || {
        let mut reactor = Builder::new()
            .messages_per_turn(4)
            .build::<Recorder>()
            .unwrap();
        let remote = reactor.remote();
        for n in 0..10 {
            remote.send(n).unwrap();
        }
        let mut recorder = Recorder::default();
        let mut per_turn = Vec::new();
        for _ in 0..4 {
            let start = Instant::now();
            per_turn.push(reactor.turn(&mut recorder, Some(MUST_SUCCEED)).unwrap());
            assert!(
                start.elapsed() <= PROMPTLY,
                "waiting messages make the turn prompt"
            );
            if remote.pending() == 0 {
                break;
            }
        }
        assert_eq!(per_turn, [4, 4, 2]);
        let expected: Vec<Event> = (0..10).map(Event::Message).collect();
        assert_eq!(recorder.events(), expected);
    });
}

/// Several threads send at once while the reactor runs: every message
/// arrives exactly once, each thread's in the order it sent them, and the
/// run ends once the last has arrived.
#[test]
fn remote_burst_from_several_threads_arrives_once_in_order() {
    const THREADS: usize = 4;
    const SENDS: u32 = 1000;

    struct Inbox {
        /// By thread: the number of the next message expected.
        next: Vec<u32>,
        /// Messages that came out of order: (thread, number, expected).
        out_of_order: Vec<(usize, u32, u32)>,
        received: usize,
        gave_up: bool,
    }

    impl Handler for Inbox {
        type State = ();
        type Timer = ();
        /// The sending thread, and the message's number in its sequence.
        type Message = (usize, u32);

        fn message(&mut self, reactor: &mut Reactor<Self>, (thread, n): (usize, u32)) {
            if self.next[thread] != n {
                self.out_of_order.push((thread, n, self.next[thread]));
            }
            self.next[thread] = n + 1;
            self.received += 1;
            if self.received == THREADS * SENDS as usize {
                reactor.stop();
            }
        }
        fn timer(&mut self, reactor: &mut Reactor<Self>, _: TimerId, _: &mut ()) {
            self.gave_up = true;
            reactor.stop();
        }
    }

    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        let start = Arc::new(Barrier::new(THREADS + 1));
        let senders: Vec<_> = (0..THREADS)
            .map(|thread| {
                let remote = reactor.remote();
                let start = Arc::clone(&start);
                thread::spawn(move || {
                    start.wait();
                    for n in 0..SENDS {
                        remote
                            .send((thread, n))
                            .unwrap_or_else(|_| panic!("thread {thread}: send {n} failed"));
                    }
                })
            })
            .collect();
        // A bound of its own, so that a lost message fails with a message
        // rather than by the watchdog.
        let give_up = reactor.timer_after(MUST_SUCCEED, ());
        let mut inbox = Inbox {
            next: vec![0; THREADS],
            out_of_order: Vec::new(),
            received: 0,
            gave_up: false,
        };
        start.wait();
        reactor.run(&mut inbox).unwrap();
        for sender in senders {
            sender.join().unwrap();
        }

        assert!(
            !inbox.gave_up,
            "{} of {} messages arrived within {MUST_SUCCEED:?}",
            inbox.received,
            THREADS * SENDS as usize
        );
        assert_eq!(inbox.out_of_order, [], "(thread, number, expected)");
        assert_eq!(inbox.next, [SENDS; THREADS], "each thread's every message");
        assert_eq!(
            inbox.received,
            THREADS * SENDS as usize,
            "each exactly once"
        );
        assert_eq!(reactor.remote().pending(), 0);
        assert!(reactor.cancel_timer(give_up));
    });
}

// ---- Building ----------------------------------------------------------------

/// A zero tick is refused with `InvalidInput`; the smallest other one is
/// not.
#[test]
fn zero_tick_is_invalid_input() {
    let result = Builder::new().tick(Duration::ZERO).build::<Recorder>();
    let err = expect_kind(result, io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("tick"), "{err}");
    Builder::new()
        .tick(Duration::from_nanos(1))
        .build::<Recorder>()
        .unwrap();
}

// ---- The echo server example -----------------------------------------------

/// Starts the example's server on a free port in a thread.
fn start_echo_server(
    idle: Option<Duration>,
) -> (SocketAddr, ontime::Remote<()>, thread::JoinHandle<()>) {
    let mut server = EchoServer::new(localhost(), idle).unwrap();
    let addr = server.local_addr().unwrap();
    let remote = server.remote();
    let thread = thread::spawn(move || server.run().unwrap());
    (addr, remote, thread)
}

/// A large transfer comes back byte for byte while the client sends and
/// receives at once.
#[test]
fn echo_server_round_trip() {
    watchdog(WATCHDOG, || {
        let (addr, remote, server) = start_echo_server(None);
        let stream = connect(addr);
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
        let len = data.len();

        let mut writer = stream.try_clone().unwrap();
        let sender = thread::spawn(move || {
            writer.write_all(&data).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
            data
        });
        let mut back = Vec::with_capacity(len);
        (&stream).read_to_end(&mut back).unwrap();
        let data = sender.join().unwrap();
        assert_eq!(back.len(), len);
        assert!(back == data, "the echo differs from what was sent");

        remote.stop().unwrap();
        server.join().unwrap();
    });
}

/// A burst of connections larger than std's and mio's default backlog (128)
/// is queued by the kernel while the server is busy, and then served: no
/// connect waits for a dropped SYN to be sent again.
#[test]
fn echo_server_queues_a_burst_of_connections() {
    // The kernel caps any backlog at net.core.somaxconn (128 before Linux
    // 5.4); the queue holds one more than the backlog.
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(128);
    if somaxconn <= 128 {
        eprintln!(
            "skipped: net.core.somaxconn is {somaxconn}, so no backlog can queue more than \
             the default's 129 connections"
        );
        return;
    }
    let burst = 300.min(somaxconn + 1);

    watchdog(WATCHDOG, move || {
        // Not running yet: nothing accepts while the burst arrives, so with
        // too small a backlog a SYN is dropped on every retry and that
        // connect times out, however long it is given.
        let mut server = EchoServer::new(localhost(), None).unwrap();
        let addr = server.local_addr().unwrap();
        let clients: Vec<std::net::TcpStream> = (0..burst)
            .map(|i| {
                std::net::TcpStream::connect_timeout(&addr, MUST_SUCCEED)
                    .unwrap_or_else(|e| panic!("connect {i} of {burst}: {e}"))
            })
            .collect();

        let remote = server.remote();
        let thread = thread::spawn(move || server.run().unwrap());
        for (i, mut client) in clients.into_iter().enumerate() {
            client.set_read_timeout(Some(MUST_SUCCEED)).unwrap();
            client.set_write_timeout(Some(MUST_SUCCEED)).unwrap();
            echo_once(&mut client, format!("client {i}").as_bytes());
        }
        remote.stop().unwrap();
        thread.join().unwrap();
    });
}

/// A message followed at once by the client's shutdown comes back, and then
/// the server closes: the read that takes the last bytes may also take the
/// FIN, and the server must still see the end of the stream.
#[test]
fn echo_server_sees_eof_right_after_data() {
    const CLIENTS: usize = 200;

    watchdog(WATCHDOG, || {
        let (addr, remote, server) = start_echo_server(None);
        for i in 0..CLIENTS {
            let message = format!("message {i} then FIN");
            let mut stream = connect(addr);
            stream.write_all(message.as_bytes()).unwrap();
            stream.shutdown(Shutdown::Write).unwrap();
            let mut back = Vec::new();
            // Times out (MUST_SUCCEED) if the server never sees the FIN.
            stream
                .read_to_end(&mut back)
                .unwrap_or_else(|e| panic!("client {i}: {e}"));
            assert_eq!(back, message.as_bytes(), "client {i}");
        }
        remote.stop().unwrap();
        server.join().unwrap();
    });
}

/// A peer that sends but does not read is not read from without bound; once
/// it reads, everything comes back.
#[test]
fn echo_server_applies_backpressure() {
    const CHUNK: usize = 64 * 1024;
    const MAX_CHUNKS: usize = 1024; // 64 MiB

    watchdog(WATCHDOG, || {
        let (addr, remote, server) = start_echo_server(None);
        let stream = connect_small_buffers(addr);
        stream
            .set_write_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let pattern = |i: usize| (i % 253) as u8;

        let mut sent = 0;
        for _ in 0..MAX_CHUNKS {
            let chunk: Vec<u8> = (sent..sent + CHUNK).map(pattern).collect();
            match (&stream).write(&chunk) {
                Ok(n) => sent += n,
                // Stuck for a whole second: the server stopped reading.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => panic!("write: {e}"),
            }
        }
        assert!(
            sent < MAX_CHUNKS * CHUNK,
            "the server kept reading from a peer that does not read ({sent} bytes)"
        );
        // Tighter: what the server may hold is its pending buffer plus what
        // the kernel buffers on the way, at most the autotuning maximums
        // for the server's socket and the client's small buffers (doubled
        // by the kernel), plus the chunk being written.
        let tcp_max = |name: &str| -> Option<usize> {
            std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
                .ok()?
                .split_whitespace()
                .nth(2)?
                .parse()
                .ok()
        };
        if let (Some(rmem), Some(wmem)) = (tcp_max("tcp_rmem"), tcp_max("tcp_wmem")) {
            let limit = 64 * 1024 + rmem + wmem + 4 * 128 * 1024 + CHUNK;
            assert!(
                sent <= limit,
                "the server read {sent} bytes from a peer that does not read, more \
                 than its 64 KiB plus the kernel's buffers ({limit} bytes)"
            );
        }

        // Now read: everything sent comes back, and the server keeps serving.
        stream.set_write_timeout(Some(MUST_SUCCEED)).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        (&stream).read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), sent);
        assert!(
            back.iter().enumerate().all(|(i, &b)| b == pattern(i)),
            "the echo differs"
        );

        remote.stop().unwrap();
        server.join().unwrap();
    });
}

/// An idle connection is closed after the idle timeout, never before, while
/// an active one is served on.
#[test]
fn echo_server_closes_idle_connections() {
    const IDLE: Duration = Duration::from_millis(300);

    watchdog(WATCHDOG, || {
        let (addr, remote, server) = start_echo_server(Some(IDLE));
        let start = Instant::now();
        let mut idle = connect(addr);
        let mut active = connect(addr);

        let idle_side = thread::spawn(move || {
            let mut buf = [0; 1];
            let n = idle.read(&mut buf).unwrap();
            (n, start.elapsed())
        });

        // Keep the other connection busy for three idle periods.
        let busy_until = Instant::now() + IDLE * 3;
        let mut rounds = 0;
        while Instant::now() < busy_until && rounds < 1000 {
            echo_once(&mut active, b"ping");
            thread::sleep(IDLE / 6);
            rounds += 1;
        }
        let (n, elapsed) = idle_side.join().unwrap();
        assert_eq!(n, 0, "the idle connection is closed");
        assert_timed_out(elapsed, IDLE);

        echo_once(&mut active, b"still here");
        remote.stop().unwrap();
        server.join().unwrap();
    });
}

// ---- Descriptor exhaustion ---------------------------------------------------

/// Set in the child process of the descriptor-exhaustion test.
const EMFILE_CHILD: &str = "ONTIME_EMFILE_CHILD";
/// The child's descriptor limit.
const CHILD_NOFILE: usize = 64;
/// The log line the server writes when it pauses accepting.
const PAUSED: &str = "accepting paused";

/// The echo server under a descriptor limit, flooded with more connections
/// than it can accept: it keeps serving the ones it has, does not spin while
/// it cannot accept, and accepts again once descriptors are free.
///
/// The server runs in a child process (this test binary, run again with
/// [`EMFILE_CHILD`] set) so that its lowered limit touches nothing else.
#[test]
fn echo_server_backs_off_when_out_of_descriptors() {
    if std::env::var_os(EMFILE_CHILD).is_some() {
        emfile_child();
    }
    watchdog(WATCHDOG, emfile_parent);
}

/// Kills the child when the test ends, passed or failed.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn emfile_child() -> ! {
    let limit = CHILD_NOFILE as libc::rlim_t;
    let mut rlimit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rlimit` is a valid, writable `struct rlimit`.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rlimit) },
        0
    );
    rlimit.rlim_cur = limit.min(rlimit.rlim_max);
    // SAFETY: `rlimit` is a valid `struct rlimit`; lowering the soft limit
    // only affects this process.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) }, 0);

    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Info)
        .target(env_logger::Target::Stderr)
        .init();
    let mut server = EchoServer::new(localhost(), None).unwrap();
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {}", server.local_addr().unwrap()).unwrap();
    stdout.flush().unwrap();
    drop(stdout);
    server.run().unwrap();
    std::process::exit(0);
}

fn emfile_parent() {
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args([
            "--exact",
            "echo_server_backs_off_when_out_of_descriptors",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(EMFILE_CHILD, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let pid = child.0.id();

    // Lines from the child, tagged with the stream they came from.
    let (lines_tx, lines) = mpsc::channel::<(bool, String)>();
    let stdout = child.0.stdout.take().unwrap();
    let stderr = child.0.stderr.take().unwrap();
    for (is_stdout, pipe) in [
        (true, Box::new(stdout) as Box<dyn Read + Send>),
        (false, Box::new(stderr)),
    ] {
        let lines_tx = lines_tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send((is_stdout, line)).is_err() {
                    break;
                }
            }
        });
    }
    drop(lines_tx);
    let mut log = Vec::new();
    let mut wait_for = |what: &str, stdout: bool| -> String {
        let give_up = Instant::now() + MUST_SUCCEED;
        loop {
            let left = give_up.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok((is_stdout, line)) => {
                    if !is_stdout {
                        log.push(line.clone());
                    }
                    if is_stdout == stdout && line.contains(what) {
                        return line;
                    }
                }
                Err(e) => panic!("waiting for {what:?} from the child: {e}; its log: {log:#?}"),
            }
        }
    };

    let line = wait_for("listening on ", true);
    let addr: SocketAddr = line
        .split("listening on ")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // Twice as many connections as the child has descriptors: the kernel
    // completes them all (the backlog is far larger), the child cannot
    // accept them all.
    let mut clients: Vec<_> = (0..2 * CHILD_NOFILE).map(|_| connect(addr)).collect();
    let paused = wait_for(PAUSED, false);
    assert!(paused.contains("WARN"), "{paused}");

    // The connections it did accept are served.
    echo_once(&mut clients[0], b"served while saturated");

    // It waits without spinning: well under a third of a core.
    let before = cpu_time(pid);
    let wall = Instant::now();
    thread::sleep(Duration::from_secs(1));
    let used = cpu_time(pid) - before;
    let wall = wall.elapsed();
    assert!(
        used.as_secs_f64() < 0.3 * wall.as_secs_f64(),
        "the saturated server used {used:?} of CPU in {wall:?}"
    );
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the server is still running"
    );

    // Free the descriptors: the server closes its side of each, accepts the
    // rest of the backlog, and serves a newcomer.
    drop(clients);
    let mut newcomer = connect(addr);
    echo_once(&mut newcomer, b"accepting again");
    let _ = wait_for("accepting again", false);

    // One warning for the whole episode. Stop the child first, so that its
    // log is finite, then read it to the end: lines still on their way
    // count too.
    let _ = child.0.kill();
    let _ = child.0.wait();
    let give_up = Instant::now() + MUST_SUCCEED;
    for _ in 0..1_000_000 {
        let left = give_up.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok((false, line)) => log.push(line),
            Ok((true, _)) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("the dead child's output did not end; its log: {log:#?}")
            }
        }
    }
    let warnings = log.iter().filter(|line| line.contains(PAUSED)).count();
    assert_eq!(warnings, 1, "{log:#?}");
}

/// User plus system CPU time of process `pid`, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14 and stime 15.
    let after_name = &stat[stat.rfind(')').unwrap() + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields[11].parse().unwrap();
    let stime: u64 = fields[12].parse().unwrap();
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(ticks_per_second > 0);
    Duration::from_secs_f64((utime + stime) as f64 / ticks_per_second as f64)
}
