//! The reactor over real loopback sockets: readiness, I/O deadlines, timers,
//! remotes, fairness, token reuse, and the echo server example under
//! descriptor exhaustion.
//!
//! Timing follows the house bounds: a deadline is never early (asserted
//! strictly, since the wheel rounds deadlines up), and is late by at most
//! `max(1 s, T)`; waits that must succeed get 10 s; every test runs under a
//! watchdog and every loop is bounded.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ontime::net::{TcpListener, TcpStream};
use ontime::{Direction, Handler, Interest, Reactor, Ready, TimerId, Token};

// The example's server, so that the descriptor-exhaustion test exercises the
// very code the example runs.
#[allow(dead_code, unreachable_pub)]
#[path = "../examples/echo_server.rs"]
mod echo_server;

use echo_server::EchoServer;

mod common;

use common::{assert_not_late, watchdog, MUST_SUCCEED, PROMPTLY, WATCHDOG};

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

/// Reads until `WouldBlock`; returns the number of bytes read.
fn drain(stream: &mut TcpStream) -> usize {
    let mut buf = [0; 4096];
    let mut total = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return total,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Everything a handler can be told, as recorded by [`Recorder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Ready(Token, Ready),
    TimedOut(Token, Direction),
    Timer(TimerId),
    Message(u32),
    Woken,
}

/// A handler that records what it is told and when.
#[derive(Debug, Default)]
struct Recorder {
    events: Vec<(Instant, Event)>,
}

impl Recorder {
    fn push(&mut self, event: Event) {
        self.events.push((Instant::now(), event));
    }

    fn events(&self) -> Vec<Event> {
        self.events.iter().map(|&(_, event)| event).collect()
    }
}

impl Handler<u32> for Recorder {
    fn ready(&mut self, _: &mut Reactor<u32>, token: Token, ready: Ready) {
        self.push(Event::Ready(token, ready));
    }
    fn timed_out(&mut self, _: &mut Reactor<u32>, token: Token, direction: Direction) {
        self.push(Event::TimedOut(token, direction));
    }
    fn timer(&mut self, _: &mut Reactor<u32>, timer: TimerId) {
        self.push(Event::Timer(timer));
    }
    fn message(&mut self, _: &mut Reactor<u32>, message: u32) {
        self.push(Event::Message(message));
    }
    fn woken(&mut self, _: &mut Reactor<u32>) {
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
    struct Echo {
        listener: TcpListener,
        listener_token: Token,
        conns: HashMap<Token, TcpStream>,
        closed: usize,
    }

    impl Handler for Echo {
        fn ready(&mut self, reactor: &mut Reactor, token: Token, _: Ready) {
            if token == self.listener_token {
                while let Ok((mut stream, _)) = self.listener.accept() {
                    let token = reactor.register(&mut stream, Interest::READABLE).unwrap();
                    self.conns.insert(token, stream);
                }
                return;
            }
            let stream = self.conns.get_mut(&token).unwrap();
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
            let mut stream = self.conns.remove(&token).unwrap();
            reactor.deregister(&mut stream, token).unwrap();
            self.closed += 1;
        }
    }

    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        let mut listener = TcpListener::bind(localhost()).unwrap();
        let addr = listener.local_addr().unwrap();
        let listener_token = reactor.register(&mut listener, Interest::READABLE).unwrap();
        let mut echo = Echo {
            listener,
            listener_token,
            conns: HashMap::new(),
            closed: 0,
        };

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
    });
}

/// Two sources ready in one batch: the handler deregisters the second while
/// handling the first and registers a new source. The second's event in the
/// batch is dropped, and the new source is not told of it.
#[test]
fn released_token_is_not_reused_within_a_batch() {
    struct Batch {
        streams: HashMap<Token, TcpStream>,
        spare: Option<TcpStream>,
        seen: Vec<Token>,
        released: Option<Token>,
        replacement: Option<Token>,
    }

    impl Handler for Batch {
        fn ready(&mut self, reactor: &mut Reactor, token: Token, _: Ready) {
            self.seen.push(token);
            if self.released.is_some() {
                return;
            }
            let other = *self.streams.keys().find(|&&t| t != token).unwrap();
            let mut stream = self.streams.remove(&other).unwrap();
            reactor.deregister(&mut stream, other).unwrap();
            self.released = Some(other);

            let mut spare = self.spare.take().unwrap();
            let new = reactor.register(&mut spare, Interest::READABLE).unwrap();
            self.streams.insert(new, spare);
            self.replacement = Some(new);
        }
    }

    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        let (_c1, mut s1) = readable_pair(b"1");
        let (_c2, mut s2) = readable_pair(b"2");
        // Readable too: if it inherited the released token's event, that
        // event would look legitimate.
        let (_c3, s3) = readable_pair(b"3");
        let t1 = reactor.register(&mut s1, Interest::READABLE).unwrap();
        let t2 = reactor.register(&mut s2, Interest::READABLE).unwrap();
        let mut batch = Batch {
            streams: HashMap::from([(t1, s1), (t2, s2)]),
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
        assert!(
            !batch.seen.contains(&replacement),
            "the new source got a stale event"
        );
        assert_ne!(
            replacement, released,
            "a token released during a batch is not reused in that batch"
        );

        // The new source's own readiness arrives on a later turn, under its
        // own token.
        let calls = reactor.turn(&mut batch, Some(MUST_SUCCEED)).unwrap();
        assert_eq!(calls, 1);
        assert_eq!(batch.seen.last(), Some(&replacement));
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
        fn ready(&mut self, reactor: &mut Reactor, token: Token, ready: Ready) {
            if self.seen.is_empty() {
                reactor.requeue(token, ready);
            }
            self.seen.push((token, ready));
        }
    }

    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        let (_client, mut server) = readable_pair(b"x");
        let token = reactor.register(&mut server, Interest::READABLE).unwrap();
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

/// A turn started from inside a handler is refused with `Other`.
#[test]
fn turn_inside_a_handler_is_an_error() {
    struct Nested {
        result: Option<io::Result<usize>>,
    }

    impl Handler for Nested {
        fn ready(&mut self, reactor: &mut Reactor, _: Token, _: Ready) {
            let mut inner = Nested { result: None };
            self.result = Some(reactor.turn(&mut inner, Some(Duration::ZERO)));
        }
    }

    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        let (_client, mut server) = readable_pair(b"x");
        reactor.register(&mut server, Interest::READABLE).unwrap();
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
        fn ready(&mut self, _: &mut Reactor, _: Token, _: Ready) {}
        fn timer(&mut self, reactor: &mut Reactor, _: TimerId) {
            let mut inner = Nested { result: None };
            self.result = Some(reactor.turn(&mut inner, Some(Duration::ZERO)));
        }
    }

    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        reactor.timer_after(Duration::ZERO);
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
        let mut reactor = Reactor::<u32>::new().unwrap();
        let (_c1, mut first) = loopback_pair();
        let (_c2, mut second) = loopback_pair();
        let token = reactor.register(&mut first, Interest::READABLE).unwrap();
        reactor.requeue(token, Ready::READABLE);
        reactor.deregister(&mut first, token).unwrap();
        let reused = reactor.register(&mut second, Interest::READABLE).unwrap();
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

/// `stop` ends `run`; a program that turns the reactor itself is not left
/// with turns that never wait.
#[test]
fn stop_does_not_make_later_turns_spin() {
    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::<u32>::new().unwrap();
        let mut recorder = Recorder::default();
        reactor.stop();
        reactor.turn(&mut recorder, Some(Duration::ZERO)).unwrap();

        let wait = Duration::from_millis(100);
        let start = Instant::now();
        reactor.turn(&mut recorder, Some(wait)).unwrap();
        assert_not_early(start.elapsed(), wait);
    });
}

/// Operations on a token that is not registered fail with `NotFound`.
#[test]
fn unknown_token_is_not_found() {
    let mut reactor: Reactor = Reactor::new().unwrap();
    let (_client, mut server) = loopback_pair();

    let unknown = Token(42);
    let err = reactor.deregister(&mut server, unknown).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    let err = reactor
        .reregister(&mut server, unknown, Interest::READABLE)
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    let err = reactor
        .set_timeout(unknown, Direction::Read, Duration::from_secs(1))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");

    // A token that was registered once is unknown after deregistration.
    let token = reactor.register(&mut server, Interest::READABLE).unwrap();
    reactor.deregister(&mut server, token).unwrap();
    let err = reactor.deregister(&mut server, token).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    assert_eq!(reactor.sources(), 0);
}

// ---- I/O deadlines ---------------------------------------------------------

/// A read deadline on a connection nobody writes to fires, never early.
#[test]
fn read_deadline_is_never_early() {
    watchdog(WATCHDOG, || {
        for timeout in [Duration::from_millis(200), Duration::from_millis(300)] {
            let mut reactor = Reactor::new().unwrap();
            let (_client, mut server) = loopback_pair();
            let token = reactor.register(&mut server, Interest::READABLE).unwrap();
            let mut recorder = Recorder::default();

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

    struct Active {
        client: std::net::TcpStream,
        server: TcpStream,
        token: Token,
        ticker: TimerId,
        sends: u32,
        received: usize,
        timed_out: u32,
    }

    impl Handler for Active {
        fn ready(&mut self, reactor: &mut Reactor, _: Token, ready: Ready) {
            assert!(ready.is_readable());
            self.received += drain(&mut self.server);
            // Waiting again: bound the wait.
            reactor
                .set_timeout(self.token, Direction::Read, TIMEOUT)
                .unwrap();
        }
        fn timed_out(&mut self, _: &mut Reactor, _: Token, _: Direction) {
            self.timed_out += 1;
        }
        fn timer(&mut self, reactor: &mut Reactor, timer: TimerId) {
            assert_eq!(timer, self.ticker);
            self.client.write_all(b".").unwrap();
            self.sends += 1;
            if self.sends == SENDS {
                reactor.cancel_timer(timer);
            }
        }
    }

    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        let (client, mut server) = loopback_pair();
        let token = reactor.register(&mut server, Interest::READABLE).unwrap();
        reactor
            .set_timeout(token, Direction::Read, TIMEOUT)
            .unwrap();
        let ticker = reactor.interval(PERIOD);
        let mut active = Active {
            client,
            server,
            token,
            ticker,
            sends: 0,
            received: 0,
            timed_out: 0,
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
        let (_client, mut server) = loopback_pair();
        let token = reactor.register(&mut server, Interest::READABLE).unwrap();
        let mut recorder = Recorder::default();

        for round in 0..5 {
            recorder.events.clear();
            let timer = reactor.timer_after(Duration::ZERO);
            let passed = Instant::now();
            reactor
                .set_deadline(token, Direction::Read, Some(passed))
                .unwrap();

            let calls = reactor.turn(&mut recorder, None).unwrap();
            assert_eq!(calls, 2, "round {round}: {:?}", recorder.events());
            let events = recorder.events();
            assert!(
                events.contains(&Event::Timer(timer)),
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
#[test]
fn timers_are_never_early() {
    watchdog(WATCHDOG, || {
        let seed = Instant::now().elapsed().as_nanos() as u64 | 1;
        let mut rng = XorShift(seed ^ 0x9e37_79b9_7f4a_7c15);
        let mut reactor = Reactor::new().unwrap();
        let mut recorder = Recorder::default();

        // For each timer, the earliest instant it may fire at.
        let mut earliest = HashMap::new();
        for i in 0..300 {
            let delay = Duration::from_micros(rng.next() % 30_001);
            let (id, not_before) = if i % 2 == 0 {
                let at = Instant::now() + delay;
                (reactor.timer_at(at), at)
            } else {
                let now = Instant::now();
                (reactor.timer_after(delay), now + delay)
            };
            earliest.insert(id, not_before);
        }

        for _ in 0..10_000 {
            if recorder.events.len() >= earliest.len() {
                break;
            }
            reactor.turn(&mut recorder, None).unwrap();
        }
        assert_eq!(
            recorder.events.len(),
            earliest.len(),
            "seed {seed}: every timer fired once"
        );
        let mut fired = HashMap::new();
        for &(at, event) in &recorder.events {
            let Event::Timer(id) = event else {
                panic!("seed {seed}: unexpected {event:?}");
            };
            assert!(
                fired.insert(id, at).is_none(),
                "seed {seed}: {id:?} fired twice"
            );
            let not_before = earliest[&id];
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
#[test]
fn interval_repeats_until_cancelled() {
    const PERIOD: Duration = Duration::from_millis(20);
    const FIRINGS: u32 = 5;

    struct Ticks {
        start: Instant,
        at: Vec<Duration>,
        cancelled: Option<bool>,
    }

    impl Handler for Ticks {
        fn ready(&mut self, _: &mut Reactor, _: Token, _: Ready) {}
        fn timer(&mut self, reactor: &mut Reactor, timer: TimerId) {
            self.at.push(self.start.elapsed());
            if self.at.len() == FIRINGS as usize {
                self.cancelled = Some(reactor.cancel_timer(timer));
            }
        }
    }

    watchdog(WATCHDOG, || {
        let mut reactor = Reactor::new().unwrap();
        let mut ticks = Ticks {
            start: Instant::now(),
            at: Vec::new(),
            cancelled: None,
        };
        let interval = reactor.interval(PERIOD);
        for _ in 0..1000 {
            if ticks.cancelled.is_some() {
                break;
            }
            reactor.turn(&mut ticks, None).unwrap();
        }
        assert_eq!(ticks.cancelled, Some(true), "cancelling a live interval");
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

        let fired = reactor.timer_after(Duration::ZERO);
        assert_eq!(reactor.turn(&mut recorder, None).unwrap(), 1);
        assert_eq!(recorder.events(), [Event::Timer(fired)]);
        assert!(!reactor.cancel_timer(fired), "a fired timer is stale");

        let cancelled = reactor.timer_after(Duration::from_secs(60));
        assert!(reactor.cancel_timer(cancelled));
        assert!(!reactor.cancel_timer(cancelled), "cancelled twice");
        assert!(
            !reactor.reset_timer(cancelled, Instant::now()),
            "reset of a stale timer"
        );

        // A new timer may take the old one's place; the stale ids do not
        // reach it.
        let fresh = reactor.timer_after(Duration::ZERO);
        assert!(!reactor.cancel_timer(fired));
        assert!(!reactor.cancel_timer(cancelled));
        recorder.events.clear();
        assert_eq!(reactor.turn(&mut recorder, None).unwrap(), 1);
        assert_eq!(recorder.events(), [Event::Timer(fresh)]);
    });
}

// ---- Remotes -----------------------------------------------------------------

/// Runs a reactor with nothing to do but wait for `poke`, called from another
/// thread; returns what the handler saw.
fn run_until_poked(poke: impl FnOnce(&ontime::Remote<u32>) + Send + 'static) -> Vec<Event> {
    struct StopOnAnything(Recorder);

    impl Handler<u32> for StopOnAnything {
        fn ready(&mut self, reactor: &mut Reactor<u32>, token: Token, ready: Ready) {
            self.0.ready(reactor, token, ready);
        }
        fn message(&mut self, reactor: &mut Reactor<u32>, message: u32) {
            self.0.message(reactor, message);
            reactor.stop();
        }
        fn woken(&mut self, reactor: &mut Reactor<u32>) {
            self.0.woken(reactor);
            reactor.stop();
        }
    }

    watchdog(WATCHDOG, move || {
        let mut reactor = Reactor::<u32>::new().unwrap();
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
    let reactor = Reactor::<u32>::new().unwrap();
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
        let mut reactor = Reactor::builder()
            .messages_per_turn(4)
            .build::<u32>()
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
