//! The serving layer (`ontime::serve`) over real loopback TCP and Unix
//! sockets: framing across reads, the input and output limits,
//! backpressure, `max_connections`, descriptor exhaustion, idle timeouts and
//! service deadlines, half-closed and reset peers, fan-out, graceful
//! shutdown, threads, Unix listeners, timers and remotes.
//!
//! Every test runs one server on a background thread with [`Probe`], a
//! small line protocol that reports what the layer told it on a channel
//! ([`Event`]), and talks to it with std sockets that have read timeouts.
//!
//! Timing follows the house bounds: a deadline is never early, asserted
//! strictly from an instant taken before the client's last action (the
//! server's clock starts later), and late by at most `max(1 s, T)`; waits
//! that must succeed get 10 s; every test runs under a watchdog and every
//! loop is bounded in count and in time.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown as Direction, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ontime::serve::{
    Close, Config, Conn, ConnId, Context, Expired, Input, PeerAddr, Report, Server, Service,
    Shutdown, Stats,
};
use ontime::{Remote, TimerId};
use proptest::collection::vec;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use socket2::{Domain, Socket, Type};

mod common;

use common::{assert_not_late, assert_timed_out, in_child, watchdog, MUST_SUCCEED, WATCHDOG};

// ---- The probe: a line protocol that reports what the layer does -----------

/// A connection, as the tests name it: its thread and its serial there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Who {
    thread: usize,
    serial: u64,
}

/// What the probe saw, in the order it saw it.
#[derive(Debug, Clone)]
enum Event {
    /// A `received` call ended: the bytes of this connection seen so far,
    /// and its unsent output at that moment.
    Progress {
        who: Who,
        total: usize,
        /// Unsent output as the call began (left from earlier reads).
        before: usize,
        pending: usize,
    },
    InputFull {
        who: Who,
    },
    Expired {
        who: Who,
        which: Expired,
    },
    Closed {
        who: Who,
        reason: Close,
        /// The most output the connection held unsent at the end of a
        /// `received` call.
        max_pending: usize,
        at: Instant,
    },
    /// The layer broke a promise the probe can check on its own (the
    /// leftovers of a partial frame not handed back, say).
    Violation(String),
}

/// What the tests send the probe from other threads.
#[derive(Debug)]
enum Msg {
    /// Written to every open connection as `msg <text>`.
    Broadcast(String),
    /// Asks for this reactor's counters.
    Stats(mpsc::Sender<Stats>),
    /// Asks how much output the connection of this serial has unsent,
    /// between dispatches (after the layer flushed what it could).
    Pending(u64, mpsc::Sender<Option<usize>>),
}

#[derive(Debug, Clone, Default)]
struct Options {
    /// On a deadline, write `expired <which>` and close once it is sent,
    /// instead of the default close.
    polite_expiry: bool,
    /// On an idle timeout, write `still there?` and keep the connection
    /// open (takes precedence over `polite_expiry` for idleness).
    keep_idle: bool,
    /// The last message of a refused connection.
    refusal: &'static [u8],
}

/// The protocol: one command per line, one reply line per command (except
/// `big`, whose reply is its payload, and `quit`).
///
/// | command | reply |
/// |---|---|
/// | `id` | `id <thread> <serial>` |
/// | `thread` | `thread <n>` |
/// | `peer` | `peer tcp` or `peer unix` |
/// | `draining?` | `draining <bool>` |
/// | `timeout <ms>` / `deadline <ms>` | `armed` (`set_timeout` / `set_deadline`) |
/// | `clear` | `cleared` (`clear_deadline`) |
/// | `idle <ms>` / `idle off` | `idle set` (`set_idle_timeout`) |
/// | `big <n> <tag>` | `<tag> ` and `n` times `x` |
/// | `sub` | `subscribed` |
/// | `pub <text>` | `published <k>`; each other subscriber gets `<text>` |
/// | `timer <ms> <value>` | `timer set`; later `timer <value>` |
/// | `quit` | `bye`, then close |
/// | anything else | `ok <line>` |
///
/// A partial last line when the peer closes is answered `partial <bytes>`.
struct Probe {
    thread: usize,
    options: Options,
    events: mpsc::Sender<Event>,
    started: mpsc::Sender<(usize, Remote<Msg>)>,
    conns: Vec<ConnId>,
    subscribers: Vec<ConnId>,
}

/// The probe's state of one connection.
#[derive(Debug, Default)]
struct Peer {
    /// What the last `received` call left unconsumed: the layer must hand
    /// it back first.
    kept: Vec<u8>,
    total: usize,
    max_pending: usize,
}

impl Probe {
    fn who(&self, id: ConnId) -> Who {
        Who {
            thread: self.thread,
            serial: id.serial(),
        }
    }

    fn event(&self, event: Event) {
        // The test may be gone already (a failed one); nothing to tell then.
        let _ = self.events.send(event);
    }

    /// Handles one line.
    fn command(&mut self, conn: &mut Conn<'_, Self>, line: &str) {
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        let reply = match verb {
            "quit" => {
                conn.write(b"bye\n");
                conn.close_when_flushed();
                return;
            }
            "id" => format!("id {} {}", conn.thread(), conn.id().serial()),
            "thread" => format!("thread {}", conn.thread()),
            "peer" => match conn.peer_addr() {
                Ok(PeerAddr::Tcp(_)) => "peer tcp".to_owned(),
                Ok(PeerAddr::Unix(_)) => "peer unix".to_owned(),
                Err(e) => format!("peer error {e}"),
            },
            "draining?" => format!("draining {}", conn.is_draining()),
            "timeout" | "deadline" | "idle" | "timer" => {
                let (ms, value) = rest.split_once(' ').unwrap_or((rest, ""));
                match (verb, ms) {
                    ("idle", "off") => {
                        conn.set_idle_timeout(None);
                        "idle set".to_owned()
                    }
                    _ => match ms.parse::<u64>().map(Duration::from_millis) {
                        Ok(t) if verb == "timeout" => {
                            conn.set_timeout(t);
                            "armed".to_owned()
                        }
                        Ok(t) if verb == "deadline" => {
                            conn.set_deadline(Instant::now() + t);
                            "armed".to_owned()
                        }
                        Ok(t) if verb == "idle" => {
                            conn.set_idle_timeout(Some(t));
                            "idle set".to_owned()
                        }
                        Ok(t) => {
                            let id = conn.id();
                            conn.timer_after(t, (id, value.to_owned()));
                            "timer set".to_owned()
                        }
                        Err(_) => format!("bad {line}"),
                    },
                }
            }
            "clear" => {
                conn.clear_deadline();
                "cleared".to_owned()
            }
            "big" => {
                let (n, tag) = rest.split_once(' ').unwrap_or((rest, ""));
                match n.parse::<usize>() {
                    Ok(n) => {
                        conn.write(tag.as_bytes());
                        conn.write(b" ");
                        conn.write(&vec![b'x'; n]);
                        conn.write(b"\n");
                        return;
                    }
                    Err(_) => format!("bad {line}"),
                }
            }
            "sub" => {
                self.subscribers.push(conn.id());
                "subscribed".to_owned()
            }
            "pub" => {
                let message = format!("{rest}\n");
                let mut delivered = 0;
                for sub in self.subscribers.clone() {
                    if sub != conn.id() && conn.write_to(sub, message.as_bytes()) {
                        delivered += 1;
                    }
                }
                format!("published {delivered}")
            }
            _ => format!("ok {line}"),
        };
        conn.write(reply.as_bytes());
        conn.write(b"\n");
    }
}

impl Service for Probe {
    type Conn = Peer;
    type Timer = (ConnId, String);
    type Message = Msg;

    fn started(&mut self, cx: &mut Context<'_, Self>) {
        let _ = self.started.send((cx.thread(), cx.remote()));
    }

    fn connected(&mut self, conn: &mut Conn<'_, Self>) -> Peer {
        self.conns.push(conn.id());
        Peer::default()
    }

    fn received(&mut self, conn: &mut Conn<'_, Self>, peer: &mut Peer, input: &mut Input<'_>) {
        let who = self.who(conn.id());
        let before = conn.pending_output();
        let bytes = input.bytes();
        if !bytes.starts_with(&peer.kept) {
            self.event(Event::Violation(format!(
                "{who:?}: the input {:?} does not start with the {:?} left unconsumed",
                String::from_utf8_lossy(bytes),
                String::from_utf8_lossy(&peer.kept),
            )));
        }
        peer.total += bytes.len().saturating_sub(peer.kept.len());
        // After `quit` the connection is closing: the rest is not handled.
        while !conn.is_closing() {
            let Some(end) = input.bytes().iter().position(|&b| b == b'\n') else {
                break;
            };
            let line = String::from_utf8_lossy(&input.bytes()[..end]).into_owned();
            input.consume(end + 1);
            self.command(conn, &line);
        }
        if !conn.is_closing() && input.is_closed() && !input.is_empty() {
            conn.write(b"partial ");
            conn.write(input.bytes());
            conn.write(b"\n");
            input.consume(input.len());
        }
        peer.kept = input.bytes().to_vec();
        let pending = conn.pending_output();
        peer.max_pending = peer.max_pending.max(pending);
        self.event(Event::Progress {
            who,
            total: peer.total,
            before,
            pending,
        });
    }

    fn expired(&mut self, conn: &mut Conn<'_, Self>, _: &mut Peer, which: Expired) {
        self.event(Event::Expired {
            who: self.who(conn.id()),
            which,
        });
        if self.options.keep_idle && which == Expired::Idle {
            conn.write(b"still there?\n");
        } else if self.options.polite_expiry {
            conn.write(format!("expired {which:?}\n").as_bytes());
            conn.close_when_flushed();
        } else {
            conn.close();
        }
    }

    fn input_full(&mut self, conn: &mut Conn<'_, Self>, _: &mut Peer) {
        self.event(Event::InputFull {
            who: self.who(conn.id()),
        });
        conn.write(b"too long\n");
    }

    fn closed(&mut self, _: &mut Context<'_, Self>, id: ConnId, peer: &mut Peer, reason: Close) {
        self.conns.retain(|&c| c != id);
        self.subscribers.retain(|&c| c != id);
        self.event(Event::Closed {
            who: self.who(id),
            reason,
            max_pending: peer.max_pending,
            at: Instant::now(),
        });
    }

    fn refusal(&self) -> &[u8] {
        self.options.refusal
    }

    fn timer(&mut self, cx: &mut Context<'_, Self>, _: TimerId, value: &mut (ConnId, String)) {
        let (id, value) = value;
        if !cx.write_to(*id, format!("timer {value}\n").as_bytes()) {
            self.event(Event::Violation(format!(
                "timer {value}: its connection is gone"
            )));
        }
    }

    fn message(&mut self, cx: &mut Context<'_, Self>, message: Msg) {
        match message {
            Msg::Broadcast(text) => {
                for id in self.conns.clone() {
                    cx.write_to(id, format!("msg {text}\n").as_bytes());
                }
            }
            Msg::Stats(reply) => {
                let _ = reply.send(cx.stats().clone());
            }
            Msg::Pending(serial, reply) => {
                let id = self.conns.iter().find(|id| id.serial() == serial);
                let _ = reply.send(id.and_then(|&id| cx.pending_output(id)));
            }
        }
    }
}

// ---- Running a server -----------------------------------------------------

/// Where a test server listens.
enum Bind<'a> {
    Tcp,
    Unix(&'a Path),
}

/// A server running [`Probe`] on a background thread, and what it reported.
struct Harness {
    addr: Option<SocketAddr>,
    shutdown: Shutdown,
    running: Option<JoinHandle<io::Result<Report>>>,
    /// What `run` returned, once it has.
    report: Option<Report>,
    events: mpsc::Receiver<Event>,
    log: Vec<Event>,
    remotes: Vec<Remote<Msg>>,
}

fn start(config: Config, options: Options) -> Harness {
    start_on(config, options, 1, Bind::Tcp)
}

fn start_on(config: Config, options: Options, threads: usize, bind: Bind<'_>) -> Harness {
    let mut server = Server::new(config.threads(threads));
    let addr = match bind {
        Bind::Tcp => Some(
            server
                .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
                .expect("listening on loopback"),
        ),
        Bind::Unix(path) => {
            server.listen_unix(path).expect("listening on a Unix path");
            None
        }
    };
    let shutdown = server.shutdown_handle();
    let (events_tx, events) = mpsc::channel();
    let (started_tx, started) = mpsc::channel();
    let running = thread::Builder::new()
        .name("serve".to_owned())
        .spawn(move || {
            server.run(move |thread| Probe {
                thread,
                options: options.clone(),
                events: events_tx.clone(),
                started: started_tx.clone(),
                conns: Vec::new(),
                subscribers: Vec::new(),
            })
        })
        .expect("spawning the server");
    let mut remotes: Vec<Option<Remote<Msg>>> = (0..threads).map(|_| None).collect();
    for _ in 0..threads {
        let (thread, remote) = started
            .recv_timeout(MUST_SUCCEED)
            .expect("every server thread starts");
        remotes[thread] = Some(remote);
    }
    Harness {
        addr,
        shutdown,
        running: Some(running),
        report: None,
        events,
        log: Vec::new(),
        remotes: remotes
            .into_iter()
            .map(|r| r.expect("one per thread"))
            .collect(),
    }
}

impl Harness {
    fn addr(&self) -> SocketAddr {
        self.addr.expect("a TCP server")
    }

    fn connect(&self) -> Client {
        Client::connect(self.addr())
    }

    /// The first event (seen before or arriving within [`MUST_SUCCEED`])
    /// that `matches`.
    fn wait(&mut self, what: &str, matches: impl Fn(&Event) -> bool) -> Event {
        if let Some(event) = self.log.iter().find(|e| matches(e)) {
            return event.clone();
        }
        let give_up = Instant::now() + MUST_SUCCEED;
        loop {
            let left = give_up.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    self.log.push(event.clone());
                    if matches(&event) {
                        return event;
                    }
                }
                Err(e) => panic!("waiting for {what}: {e}; {}", self.recent()),
            }
        }
    }

    /// The end of the log, for failure messages.
    fn recent(&self) -> String {
        let from = self.log.len().saturating_sub(20);
        format!("the last events: {:#?}", &self.log[from..])
    }

    /// Moves every event that arrived so far into the log.
    fn collect(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.log.push(event);
        }
    }

    /// Waits until the server has seen `total` bytes of `who`.
    fn progress(&mut self, who: Who, total: usize) -> (usize, usize) {
        match self.wait(
            &format!("{total} bytes of {who:?}"),
            |e| matches!(e, Event::Progress { who: w, total: t, .. } if *w == who && *t >= total),
        ) {
            Event::Progress { total, pending, .. } => (total, pending),
            _ => unreachable!(),
        }
    }

    /// Waits until `who` is closed: its reason and its largest unsent output.
    fn closed(&mut self, who: Who) -> (Close, usize) {
        match self.wait(
            &format!("{who:?} to close"),
            |e| matches!(e, Event::Closed { who: w, .. } if *w == who),
        ) {
            Event::Closed {
                reason,
                max_pending,
                ..
            } => (reason, max_pending),
            _ => unreachable!(),
        }
    }

    /// When `who` was closed (waiting until it is).
    fn closed_at(&mut self, who: Who) -> Instant {
        match self.wait(
            &format!("{who:?} to close"),
            |e| matches!(e, Event::Closed { who: w, .. } if *w == who),
        ) {
            Event::Closed { at, .. } => at,
            _ => unreachable!(),
        }
    }

    /// Whether `who` was closed, as far as the events so far tell.
    fn is_closed(&mut self, who: Who) -> bool {
        self.collect();
        self.log
            .iter()
            .any(|e| matches!(e, Event::Closed { who: w, .. } if *w == who))
    }

    /// A thread's counters now, asked through its remote.
    fn stats(&self, thread: usize) -> Stats {
        let (reply, stats) = mpsc::channel();
        self.remotes[thread]
            .send(Msg::Stats(reply))
            .expect("the server is running");
        stats
            .recv_timeout(MUST_SUCCEED)
            .expect("the server answers a remote message")
    }

    /// The unsent output of `who` between dispatches.
    fn pending(&self, who: Who) -> Option<usize> {
        let (reply, pending) = mpsc::channel();
        self.remotes[who.thread]
            .send(Msg::Pending(who.serial, reply))
            .expect("the server is running");
        pending
            .recv_timeout(MUST_SUCCEED)
            .expect("the server answers a remote message")
    }

    /// Shuts the server down (if that has not begun) and returns its
    /// report; fails the test if the probe saw the layer break a promise.
    fn finish(mut self) -> Report {
        self.shutdown.shutdown();
        let report = self.join();
        self.collect();
        let violations: Vec<&str> = self
            .log
            .iter()
            .filter_map(|e| match e {
                Event::Violation(what) => Some(what.as_str()),
                _ => None,
            })
            .collect();
        assert!(violations.is_empty(), "{violations:#?}");
        report
    }

    /// Waits (bounded) for `run` to return, and returns its report.
    fn join(&mut self) -> Report {
        let Some(running) = self.running.take() else {
            return self.report.clone().expect("joined before");
        };
        let give_up = Instant::now() + MUST_SUCCEED;
        while !running.is_finished() {
            assert!(
                Instant::now() < give_up,
                "the server did not return within {MUST_SUCCEED:?} of its shutdown"
            );
            thread::sleep(Duration::from_millis(5));
        }
        let report = match running.join() {
            Ok(result) => result.expect("the server ran without an error"),
            Err(panic) => std::panic::resume_unwind(panic),
        };
        self.report = Some(report.clone());
        report
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // A failed test leaves no server running.
        self.shutdown.shutdown();
    }
}

// ---- Clients -------------------------------------------------------------

/// The blocking streams the tests use as clients.
trait Stream: Read + Write {
    fn set_timeouts(&self, timeout: Duration);
    fn nonblocking(&self, on: bool);
    fn shut_write(&self);
}

impl Stream for TcpStream {
    fn set_timeouts(&self, timeout: Duration) {
        self.set_read_timeout(Some(timeout)).unwrap();
        self.set_write_timeout(Some(timeout)).unwrap();
        self.set_nodelay(true).unwrap();
    }
    fn nonblocking(&self, on: bool) {
        self.set_nonblocking(on).unwrap();
    }
    fn shut_write(&self) {
        self.shutdown(Direction::Write).unwrap();
    }
}

impl Stream for UnixStream {
    fn set_timeouts(&self, timeout: Duration) {
        self.set_read_timeout(Some(timeout)).unwrap();
        self.set_write_timeout(Some(timeout)).unwrap();
    }
    fn nonblocking(&self, on: bool) {
        self.set_nonblocking(on).unwrap();
    }
    fn shut_write(&self) {
        self.shutdown(Direction::Write).unwrap();
    }
}

/// A client of the line protocol. Reads wait at most [`MUST_SUCCEED`].
struct Client<S: Stream = TcpStream> {
    io: BufReader<S>,
}

impl Client<TcpStream> {
    fn connect(addr: SocketAddr) -> Client {
        Client::new(TcpStream::connect(addr).expect("connecting to the server"))
    }

    /// A client whose receive buffer is small, so that what it does not
    /// read piles up in the server soon.
    fn small_window(addr: SocketAddr) -> Client {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket
            .connect(&addr.into())
            .expect("connecting to the server");
        Client::new(socket.into())
    }

    /// A client that resets the connection when dropped (`SO_LINGER` 0).
    fn resetting(addr: SocketAddr) -> Client {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.set_linger(Some(Duration::ZERO)).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket
            .connect(&addr.into())
            .expect("connecting to the server");
        Client::new(socket.into())
    }
}

impl<S: Stream> Client<S> {
    fn new(stream: S) -> Client<S> {
        stream.set_timeouts(MUST_SUCCEED);
        Client {
            io: BufReader::new(stream),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).expect("sending");
    }

    /// The next line, without its newline; fails on end of file.
    #[track_caller]
    fn line(&mut self) -> String {
        let mut line = String::new();
        match self.io.read_line(&mut line) {
            Ok(0) => panic!("end of file where a line was expected"),
            Ok(_) => {
                assert!(line.ends_with('\n'), "a line cut short: {line:?}");
                line.pop();
                line
            }
            Err(e) => panic!("reading a line: {e}"),
        }
    }

    /// The next line, or `None` at end of file or on a reset.
    fn line_or_closed(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.io.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) if line.ends_with('\n') => {
                line.pop();
                Some(line)
            }
            Ok(_) => None, // a line cut short by the close
            Err(e) if e.kind() == ErrorKind::ConnectionReset => None,
            Err(e) => panic!("reading a line: {e}"),
        }
    }

    #[track_caller]
    fn ask(&mut self, request: &str) -> String {
        self.send(format!("{request}\n").as_bytes());
        self.line()
    }

    /// Which connection this is, by asking the server.
    fn who(&mut self) -> Who {
        let reply = self.ask("id");
        let mut words = reply.split(' ').skip(1).map(|w| w.parse().unwrap());
        match (reply.starts_with("id "), words.next(), words.next()) {
            (true, Some(thread), Some(serial)) => Who {
                thread: thread as usize,
                serial,
            },
            _ => panic!("not an id: {reply:?}"),
        }
    }

    /// Asserts that the server closed the connection cleanly with nothing
    /// more to read.
    #[track_caller]
    fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        match self.io.read_to_end(&mut rest) {
            Ok(_) => assert!(
                rest.is_empty(),
                "expected end of file, got {:?}",
                String::from_utf8_lossy(&rest)
            ),
            Err(e) => panic!("expected end of file, got {e}"),
        }
    }

    /// Whether nothing is there to read right now.
    fn nothing_to_read(&mut self) -> bool {
        if !self.io.buffer().is_empty() {
            return false;
        }
        self.io.get_ref().nonblocking(true);
        let mut byte = [0];
        let result = self.io.get_mut().read(&mut byte);
        self.io.get_ref().nonblocking(false);
        matches!(result, Err(e) if e.kind() == ErrorKind::WouldBlock)
    }

    fn shut_write(&self) {
        self.io.get_ref().shut_write();
    }
}

// ---- Framing ---------------------------------------------------------------

/// The reply of [`Probe`] to a frame that is no command.
fn ok(frame: &str) -> String {
    format!("ok {frame}")
}

/// Sends `stream` (line frames) to the server in the pieces `splits` cut,
/// each reaching the server in a read of its own: after each piece the
/// client waits until the server has seen it, and reads the replies to the
/// frames it completed. A frame still partial is not answered yet. Returns
/// the replies.
fn send_in_pieces(h: &mut Harness, stream: &[u8], splits: &[usize]) -> Vec<String> {
    let mut client = h.connect();
    let who = client.who();
    let mut seen = "id\n".len();
    let mut replies = Vec::new();
    let mut from = 0;
    for &to in splits.iter().chain([&stream.len()]) {
        if to <= from {
            continue;
        }
        client.send(&stream[from..to]);
        seen += to - from;
        let (total, _) = h.progress(who, seen);
        assert_eq!(total, seen, "the server saw more than was sent");
        let complete = stream[..to].iter().filter(|&&b| b == b'\n').count();
        while replies.len() < complete {
            replies.push(client.line());
        }
        assert!(
            client.nothing_to_read(),
            "a reply came for a frame not complete yet (after {to} bytes of {:?})",
            String::from_utf8_lossy(stream)
        );
        from = to;
    }
    client.shut_write();
    client.expect_eof();
    replies
}

#[test]
fn frames_split_at_every_byte_are_answered_like_whole_ones() {
    watchdog(WATCHDOG, || {
        let mut h = start(Config::new(), Options::default());
        let frames = ["one", "two", "", "three and more"];
        let stream: String = frames.iter().map(|f| format!("{f}\n")).collect();
        let expected: Vec<String> = frames.iter().map(|f| ok(f)).collect();

        // All the frames in one write.
        assert_eq!(send_in_pieces(&mut h, stream.as_bytes(), &[]), expected);
        // Every byte on its own: each frame's last byte arrives after the
        // rest, which the server kept.
        let every: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(send_in_pieces(&mut h, stream.as_bytes(), &every), expected);
        // A frame cut just before its newline, then the newline.
        let cut = stream.find('\n').unwrap();
        assert_eq!(send_in_pieces(&mut h, stream.as_bytes(), &[cut]), expected);

        let report = h.finish();
        assert_eq!(report.total.accepted, 3);
        assert_eq!(report.total.closed_peer, 3);
    });
}

#[test]
fn frames_split_anywhere_are_answered_like_whole_ones() {
    watchdog(WATCHDOG, || {
        let h = RefCell::new(start(Config::new(), Options::default()));
        let mut runner = TestRunner::new(ProptestConfig {
            cases: 24,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        // Frames start with `f`, so that none is a command.
        let strategy = (vec("[a-z0-9 ]{0,12}", 1..6), vec(0usize..1000, 0..12));
        runner
            .run(&strategy, |(frames, cuts)| {
                let stream: String = frames.iter().map(|f| format!("f{f}\n")).collect();
                let mut splits: Vec<usize> = cuts.iter().map(|c| 1 + c % stream.len()).collect();
                splits.sort_unstable();
                splits.dedup();
                let expected: Vec<String> = frames.iter().map(|f| ok(&format!("f{f}"))).collect();
                let replies = send_in_pieces(&mut h.borrow_mut(), stream.as_bytes(), &splits);
                proptest::prop_assert_eq!(replies, expected);
                Ok(())
            })
            .unwrap();
        h.into_inner().finish();
    });
}

// ---- Limits ----------------------------------------------------------------

#[test]
fn input_over_max_input_closes_that_connection_only() {
    watchdog(WATCHDOG, || {
        const MAX: usize = 1024;
        let mut h = start(Config::new().max_input(MAX), Options::default());
        let mut other = h.connect();
        assert_eq!(other.ask("before"), ok("before"));

        let mut client = h.connect();
        let who = client.who();
        let mut seen = "id\n".len();
        // Exactly the limit, unconsumed, is allowed.
        let frame = "a".repeat(MAX);
        client.send(frame.as_bytes());
        seen += MAX;
        h.progress(who, seen);
        assert_eq!(client.ask(""), ok(&frame));
        // One byte more is not: the service is told, its reply goes out,
        // then the connection closes.
        client.send("b".repeat(MAX + 1).as_bytes());
        assert_eq!(client.line(), "too long");
        client.expect_eof();
        assert_eq!(h.closed(who).0, Close::InputLimit);
        let told = h
            .log
            .iter()
            .position(|e| matches!(e, Event::InputFull { who: w } if *w == who));
        let closed = h
            .log
            .iter()
            .position(|e| matches!(e, Event::Closed { who: w, .. } if *w == who));
        assert!(
            told.is_some() && told < closed,
            "input_full comes before closed: {}",
            h.recent()
        );

        // Everyone else is still served, old and new.
        assert_eq!(other.ask("after"), ok("after"));
        assert_eq!(h.connect().ask("new"), ok("new"));
        let report = h.finish();
        assert_eq!(report.total.closed_limit, 1);
        assert_eq!(report.total.accepted, 3);
    });
}

/// A client uploading far past `max_input` before it reads (an HTTP client
/// sending a body the server refuses) reads the error reply and then a clean
/// end of file, not a reset: the layer stops reading, sends the reply, shuts
/// down its writing side and drains what still arrives for a while before it
/// closes (nginx's lingering close, which the house style asks the layer to
/// give every service). Closing a socket with unread input makes the kernel
/// send RST, which over a real network also discards the reply still queued.
#[test]
fn input_over_max_input_mid_upload_reads_the_error_then_eof() {
    watchdog(WATCHDOG, || {
        let mut h = start(Config::new().max_input(1024), Options::default());
        let mut client = h.connect();
        let who = client.who();
        // A write error here is the reset this test is about: the reads
        // below report it.
        let _ = client.io.get_mut().write_all(&vec![b'b'; 256 << 10]);
        assert_eq!(client.line_or_closed().as_deref(), Some("too long"));
        let mut rest = Vec::new();
        let end = client.io.read_to_end(&mut rest).map_err(|e| e.kind());
        assert_eq!(
            end,
            Ok(0),
            "after the error reply: {:?}",
            String::from_utf8_lossy(&rest)
        );
        assert_eq!(h.closed(who).0, Close::InputLimit);
        assert_eq!(h.connect().ask("next"), ok("next"));
        h.finish();
    });
}

#[test]
fn a_peer_that_never_reads_holds_bounded_output_while_others_are_served() {
    watchdog(WATCHDOG, || {
        const HIGH: usize = 16 << 10;
        const LOW: usize = 4 << 10;
        const READ: usize = 96;
        const REPLY: usize = 4000;
        /// At most 80 MB of replies asked for, however large the kernel's
        /// socket buffers.
        const MAX_REQUESTS: usize = 20_000;
        // What one read of at most READ bytes, after at most one partial
        // request of 15 bytes kept from the read before, can ask for:
        // (READ + 15) / 16 whole requests, which is READ / 16 rounded up.
        const ONE_READ: usize = READ.div_ceil(16) * (7 + REPLY + 1);
        let config = Config::new().water_marks(HIGH, LOW).read_size(READ);
        let mut h = start(config, Options::default());
        let mut other = h.connect();
        let mut hog = Client::small_window(h.addr());
        let who = hog.who();

        // Requests of 16 bytes each, whose replies are 4 KB; the hog reads
        // none of them for now. Batches of 50 until, between dispatches,
        // more than the high mark is unsent (the kernel's buffers take the
        // first few megabytes): from then on the server must not read it.
        let request = |seq: usize| format!("big {REPLY} {seq:06}\n");
        assert_eq!(request(0).len(), 16);
        let mut sent = "id\n".len();
        let mut requests = 0;
        let mut unsent = 0;
        'fill: while requests < MAX_REQUESTS {
            let batch: String = (requests..requests + 50).map(request).collect();
            hog.send(batch.as_bytes());
            sent += batch.len();
            requests += 50;
            // Either the server reads the whole batch or it stops reading.
            let give_up = Instant::now() + MUST_SUCCEED;
            loop {
                unsent = h.pending(who).expect("the hog is open");
                if unsent > HIGH {
                    break 'fill;
                }
                h.collect();
                let read_all = h.log.iter().any(|e| {
                    matches!(e, Event::Progress { who: w, total, .. } if *w == who && *total >= sent)
                });
                if read_all {
                    break;
                }
                assert!(
                    Instant::now() < give_up,
                    "the server neither read nor paused"
                );
                thread::sleep(Duration::from_millis(1));
            }
        }
        assert!(
            unsent > HIGH,
            "no backpressure after {requests} requests: this test did not exercise it"
        );
        assert!(unsent <= HIGH + ONE_READ, "{unsent} bytes unsent");

        // Another batch, which it must not read now; the others are served
        // meanwhile.
        let batch: String = (requests..requests + 50).map(request).collect();
        hog.send(batch.as_bytes());
        sent += batch.len();
        requests += 50;
        assert_eq!(other.ask("meanwhile"), ok("meanwhile"));
        let unsent = h.pending(who).expect("the hog is open");
        assert!(
            unsent <= HIGH + ONE_READ,
            "{unsent} bytes unsent after another batch"
        );

        // Now the hog reads: every reply comes, in order, none lost.
        let payload = "x".repeat(REPLY);
        for seq in 0..requests {
            let line = hog.line();
            assert!(
                line.len() == 7 + REPLY && line == format!("{seq:06} {payload}"),
                "reply {seq}: {:?}...",
                &line[..line.len().min(20)]
            );
        }
        hog.shut_write();
        hog.expect_eof();
        let (reason, max_pending) = h.closed(who);
        assert_eq!(reason, Close::Peer);
        assert!(
            max_pending <= HIGH + ONE_READ,
            "the hog held up to {max_pending} bytes unsent; the bound is {HIGH} + {ONE_READ}"
        );
        // It was read only while at most the high mark was unsent.
        let over: Vec<usize> = h
            .log
            .iter()
            .filter_map(|e| match e {
                Event::Progress { who: w, before, .. } if *w == who && *before > HIGH => {
                    Some(*before)
                }
                _ => None,
            })
            .collect();
        assert!(over.is_empty(), "read with this much unsent: {over:?}");
        let (total, _) = h.progress(who, sent);
        assert_eq!(total, sent);
        assert_eq!(other.ask("after"), ok("after"));
        let report = h.finish();
        assert_eq!(
            report.total.closed_limit, 0,
            "backpressure, not the output limit"
        );
    });
}

#[test]
fn max_connections_refuses_with_the_refusal_then_eof() {
    watchdog(WATCHDOG, || {
        let options = Options {
            refusal: b"busy, try later\n",
            ..Options::default()
        };
        let mut h = start(Config::new().max_connections(2), options);
        let mut a = h.connect();
        let mut b = h.connect();
        let who_a = a.who();
        b.who();

        let mut refused = h.connect();
        assert_eq!(refused.line(), "busy, try later");
        refused.expect_eof();

        assert_eq!(a.ask("a"), ok("a"));
        assert_eq!(b.ask("b"), ok("b"));
        assert_eq!(h.stats(0).refused, 1);

        // One closes: a new connection is served.
        drop(a);
        assert_eq!(h.closed(who_a).0, Close::Peer);
        let mut d = h.connect();
        assert_eq!(d.ask("d"), ok("d"));
        assert_eq!(b.ask("b again"), ok("b again"));

        let report = h.finish();
        assert_eq!(report.total.accepted, 3);
        assert_eq!(report.total.refused, 1);
        assert_eq!(report.total.open, 0);
    });
}

/// `max_connections` counts the connections of every thread: with one open
/// on each of two threads, a third is refused whichever thread takes it.
#[test]
fn max_connections_counts_every_thread() {
    watchdog(WATCHDOG, || {
        let options = Options {
            refusal: b"busy\n",
            ..Options::default()
        };
        let mut h = start_on(Config::new().max_connections(2), options, 2, Bind::Tcp);
        let mut first = h.connect();
        let first_who = first.who();
        // A second connection on the other thread (each connection picks
        // one at random): at most 100 tries.
        let mut second = None;
        for _ in 0..100 {
            let mut client = h.connect();
            let who = client.who();
            if who.thread != first_who.thread {
                second = Some(client);
                break;
            }
            drop(client);
            h.closed(who);
        }
        let mut second = second.expect("a connection on the other thread");

        for _ in 0..4 {
            let mut refused = h.connect();
            assert_eq!(refused.line(), "busy");
            refused.expect_eof();
        }
        assert_eq!(first.ask("first"), ok("first"));
        assert_eq!(second.ask("second"), ok("second"));

        drop(first);
        h.closed(first_who);
        let mut third = h.connect();
        assert_eq!(third.ask("third"), ok("third"));
        let report = h.finish();
        assert_eq!(report.total.refused, 4);
    });
}

// ---- Out of descriptors ------------------------------------------------------

/// Set in the child processes of the descriptor tests, to the test's name.
const CHILD: &str = "ONTIME_SERVE_CHILD";

/// How a starved server gets a descriptor back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Free {
    /// One of its connections closes.
    Connection,
    /// Something else in the process closes a descriptor: only the accept
    /// back-off can notice.
    Descriptor,
}

/// The server out of descriptors (`EMFILE`, in a child process whose
/// limit is lowered): it does not spin, serves the connections it has, and
/// accepts the connection waiting in the backlog once a connection of its
/// own closes, with no new connection arriving to wake the listener. The
/// back-off is 10 s, so only the close can have resumed accepting.
#[test]
fn out_of_descriptors_accepts_again_when_a_connection_closes() {
    let name = "out_of_descriptors_accepts_again_when_a_connection_closes";
    in_child(CHILD, name, || {
        watchdog(Duration::from_secs(25), || starved(Free::Connection));
    });
}

/// As above, but the descriptor that frees up is not a connection's: the
/// accept back-off (100 ms) retries, without spinning meanwhile.
#[test]
fn out_of_descriptors_retries_after_the_backoff() {
    let name = "out_of_descriptors_retries_after_the_backoff";
    in_child(CHILD, name, || {
        watchdog(Duration::from_secs(25), || starved(Free::Descriptor));
    });
}

/// Counts the layer's warnings, in the child processes only.
struct WarningCounter;

static WARNINGS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl log::Log for WarningCounter {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.level() <= log::Level::Warn && record.target().starts_with("ontime_core") {
            WARNINGS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn flush(&self) {}
}

fn starved(free: Free) {
    log::set_logger(&WarningCounter).expect("the only logger of the child");
    log::set_max_level(log::LevelFilter::Warn);
    let backoff = match free {
        Free::Connection => Duration::from_secs(10),
        Free::Descriptor => Duration::from_millis(100),
    };
    let h = start(Config::new().accept_backoff(backoff), Options::default());
    let mut served: Vec<Client> = (0..4)
        .map(|i| {
            let mut client = h.connect();
            assert_eq!(client.ask(&format!("c{i}")), ok(&format!("c{i}")));
            client
        })
        .collect();

    // A low limit, then every descriptor under it taken, then one freed for
    // the client that will wait.
    let highest = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    set_nofile(highest + 1 + 32);
    let mut ballast = Vec::new();
    for _ in 0..10_000 {
        match File::open("/dev/null") {
            Ok(file) => ballast.push(file),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => panic!("opening /dev/null: {e}"),
        }
    }
    assert!(
        !ballast.is_empty() && File::open("/dev/null").is_err(),
        "the descriptor table is full"
    );
    drop(ballast.pop());
    let mut waiting = Client::connect(h.addr());
    waiting.send(b"hello\n");
    let give_up = Instant::now() + MUST_SUCCEED;
    while h.stats(0).accept_pauses == 0 {
        assert!(
            Instant::now() < give_up,
            "the server never paused accepting"
        );
        thread::sleep(Duration::from_millis(10));
    }

    // Starved for a second: no spinning, and the others are served.
    let cpu_before = cpu_time();
    let wall = Instant::now();
    for (i, client) in served.iter_mut().enumerate() {
        assert_eq!(
            client.ask(&format!("starved {i}")),
            ok(&format!("starved {i}"))
        );
    }
    thread::sleep(Duration::from_secs(1).saturating_sub(wall.elapsed()));
    let cpu = cpu_time() - cpu_before;
    let wall = wall.elapsed();
    assert!(
        cpu.as_secs_f64() < 0.3 * wall.as_secs_f64(),
        "the starved server used {cpu:?} of CPU in {wall:?}"
    );
    let pauses = h.stats(0).accept_pauses;
    let retries = (wall.as_secs_f64() / backoff.as_secs_f64()) as u64;
    assert!(
        pauses <= 3 * retries + 3,
        "{pauses} accept pauses in {wall:?} with a back-off of {backoff:?}"
    );
    assert!(waiting.nothing_to_read(), "served without a descriptor?");

    // A descriptor frees up; no new connection arrives.
    let freed = Instant::now();
    match free {
        Free::Connection => drop(served.pop()),
        Free::Descriptor => drop(ballast.pop()),
    }
    assert_eq!(waiting.line(), ok("hello"));
    let took = freed.elapsed();
    match free {
        // Well before the back-off could have fired.
        Free::Connection => assert!(took < Duration::from_secs(5), "took {took:?}"),
        Free::Descriptor => assert_not_late(took, backoff),
    }
    for client in &mut served {
        assert_eq!(client.ask("after"), ok("after"));
    }

    drop(ballast);
    let report = h.finish();
    assert_eq!(report.total.accepted, 5);
    assert!(report.total.accept_pauses >= 1);
    // One warning for the episode, however many pauses it took.
    assert_eq!(
        WARNINGS.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "warnings for {} accept pauses",
        report.total.accept_pauses
    );
}

/// Lowers this process's soft limit of descriptors.
fn set_nofile(limit: u64) {
    let mut rlimit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rlimit` is a valid, writable `struct rlimit`.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rlimit) },
        0
    );
    rlimit.rlim_cur = (limit as libc::rlim_t).min(rlimit.rlim_max);
    // SAFETY: `rlimit` is a valid `struct rlimit`; lowering the soft limit
    // affects only this process, the child the test runs in.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) }, 0);
}

/// User plus system CPU time of this process, every thread included.
fn cpu_time() -> Duration {
    // SAFETY: `rusage` is plain data, for which all zeros is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `struct rusage`.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

// ---- Idle timeout and deadlines -------------------------------------------

const IDLE: Duration = Duration::from_millis(300);

#[test]
fn idle_connections_close_never_early_and_progress_postpones_it() {
    watchdog(WATCHDOG, || {
        let mut h = start(Config::new().idle_timeout(Some(IDLE)), Options::default());

        // Quiet from the start.
        let start = Instant::now();
        let mut quiet = h.connect();
        quiet.expect_eof();
        assert_timed_out(start.elapsed(), IDLE);

        // One request soon after the connection opened (and its idle timer
        // was armed): the timeout counts from the request.
        let mut once = h.connect();
        thread::sleep(IDLE / 10);
        let start = Instant::now();
        assert_eq!(once.ask("once"), ok("once"));
        once.expect_eof();
        assert_timed_out(start.elapsed(), IDLE);

        // Input every 100 ms keeps it open for twice the timeout; then it
        // closes the timeout after the last.
        let mut chatty = h.connect();
        let who = chatty.who();
        let mut last = Instant::now();
        for i in 0..6 {
            thread::sleep(IDLE / 3);
            last = Instant::now();
            assert_eq!(chatty.ask(&format!("ping {i}")), ok(&format!("ping {i}")));
        }
        chatty.expect_eof();
        assert_timed_out(last.elapsed(), IDLE);
        assert_eq!(h.closed(who).0, Close::Idle);

        // Output is progress too: four timers write at 150..600 ms, and the
        // connection closes no sooner than the timeout after the last.
        let mut listener = h.connect();
        let start = Instant::now();
        listener.send(b"timer 150 a\ntimer 300 b\ntimer 450 c\ntimer 600 d\n");
        for _ in 0..4 {
            assert_eq!(listener.line(), "timer set");
        }
        for value in ["a", "b", "c", "d"] {
            assert_eq!(listener.line(), format!("timer {value}"));
        }
        listener.expect_eof();
        assert_timed_out(start.elapsed(), Duration::from_millis(600) + IDLE);

        let report = h.finish();
        assert_eq!(report.total.closed_idle, 4);
    });
}

#[test]
fn per_connection_idle_timeouts() {
    watchdog(WATCHDOG, || {
        let mut h = start(Config::new().idle_timeout(Some(IDLE)), Options::default());
        // Shorter than the server's.
        let mut short = h.connect();
        let start = Instant::now();
        assert_eq!(short.ask("idle 100"), "idle set");
        short.expect_eof();
        assert_timed_out(start.elapsed(), Duration::from_millis(100));

        // None at all: still open after twice the server's.
        let mut forever = h.connect();
        let who = forever.who();
        assert_eq!(forever.ask("idle off"), "idle set");
        thread::sleep(2 * IDLE);
        assert_eq!(forever.ask("still here"), ok("still here"));
        assert!(!h.is_closed(who));

        let report = h.finish();
        assert_eq!(report.total.closed_idle, 1);
        assert_eq!(report.total.closed_shutdown, 1);
    });
}

/// Reads `ok ping` replies, sending another ping after each, until the
/// server closes the connection; the time from `start` to the close.
/// Bounded: 100 pings 30 ms apart.
fn ping_until_closed(client: &mut Client, start: Instant) -> Duration {
    for _ in 0..100 {
        thread::sleep(Duration::from_millis(30));
        if client.io.get_mut().write_all(b"ping\n").is_err() {
            return start.elapsed();
        }
        match client.line_or_closed() {
            Some(line) => assert_eq!(line, ok("ping")),
            None => return start.elapsed(),
        }
    }
    panic!("still open after 100 pings")
}

#[test]
fn service_deadlines_fire_never_early_and_traffic_does_not_move_them() {
    watchdog(WATCHDOG, || {
        let t = Duration::from_millis(300);
        let mut h = start(Config::new(), Options::default());
        let mut client = h.connect();
        let who = client.who();
        let start = Instant::now();
        assert_eq!(client.ask("timeout 300"), "armed");
        let elapsed = ping_until_closed(&mut client, start);
        assert_timed_out(elapsed, t);
        assert_eq!(h.closed(who).0, Close::Deadline);
        h.wait(
            "the deadline's expiry",
            |e| matches!(e, Event::Expired { who: w, which: Expired::Deadline } if *w == who),
        );
        let report = h.finish();
        assert_eq!(report.total.closed_deadline, 1);
    });
}

#[test]
fn service_deadlines_are_cleared_and_moved() {
    watchdog(WATCHDOG, || {
        let mut h = start(Config::new(), Options::default());

        // Cleared: it never fires.
        let mut cleared = h.connect();
        let who = cleared.who();
        assert_eq!(cleared.ask("timeout 150"), "armed");
        assert_eq!(cleared.ask("clear"), "cleared");
        thread::sleep(Duration::from_millis(450));
        assert_eq!(cleared.ask("still here"), ok("still here"));
        assert!(!h.is_closed(who));

        // Moved earlier (an absolute deadline replacing a far one).
        let mut earlier = h.connect();
        assert_eq!(earlier.ask("timeout 60000"), "armed");
        let start = Instant::now();
        assert_eq!(earlier.ask("deadline 200"), "armed");
        earlier.expect_eof();
        assert_timed_out(start.elapsed(), Duration::from_millis(200));

        // Moved later.
        let mut later = h.connect();
        assert_eq!(later.ask("timeout 100"), "armed");
        let start = Instant::now();
        assert_eq!(later.ask("timeout 500"), "armed");
        later.expect_eof();
        assert_timed_out(start.elapsed(), Duration::from_millis(500));

        // Re-armed after a clear.
        let start = Instant::now();
        assert_eq!(cleared.ask("timeout 100"), "armed");
        cleared.expect_eof();
        assert_timed_out(start.elapsed(), Duration::from_millis(100));
        assert_eq!(h.closed(who).0, Close::Deadline);

        let report = h.finish();
        assert_eq!(report.total.closed_deadline, 3);
    });
}

#[test]
fn an_expired_override_writes_a_last_reply_then_closes() {
    watchdog(WATCHDOG, || {
        let options = Options {
            polite_expiry: true,
            ..Options::default()
        };
        let idle = Duration::from_millis(200);
        let mut h = start(Config::new().idle_timeout(Some(idle)), options);

        let start = Instant::now();
        let mut quiet = h.connect();
        assert_eq!(quiet.line(), "expired Idle");
        quiet.expect_eof();
        assert_timed_out(start.elapsed(), idle);

        let mut client = h.connect();
        let who = client.who();
        assert_eq!(client.ask("idle off"), "idle set");
        let start = Instant::now();
        assert_eq!(client.ask("timeout 150"), "armed");
        assert_eq!(client.line(), "expired Deadline");
        client.expect_eof();
        assert_timed_out(start.elapsed(), Duration::from_millis(150));
        assert_eq!(h.closed(who).0, Close::Deadline);

        let report = h.finish();
        assert_eq!(report.total.closed_idle, 1);
        assert_eq!(report.total.closed_deadline, 1);
    });
}

#[test]
fn an_expired_override_may_keep_the_connection_open() {
    watchdog(WATCHDOG, || {
        let options = Options {
            keep_idle: true,
            ..Options::default()
        };
        let idle = Duration::from_millis(150);
        let mut h = start(Config::new().idle_timeout(Some(idle)), options);
        let start = Instant::now();
        let mut client = h.connect();
        // Each question is the timeout after the one before (its write is
        // progress), so the n-th comes no sooner than n timeouts in.
        for n in 1..=3 {
            assert_eq!(client.line(), "still there?");
            assert_timed_out(start.elapsed(), n * idle);
        }
        let who = client.who();
        assert_eq!(client.ask("quit"), "bye");
        client.expect_eof();
        assert_eq!(h.closed(who).0, Close::Service);
        let report = h.finish();
        assert_eq!(report.total.closed_idle, 0);
    });
}

// ---- Half-closed and reset peers --------------------------------------------

#[test]
fn a_half_closed_client_gets_every_reply_then_eof() {
    watchdog(WATCHDOG, || {
        let mut h = start(Config::new(), Options::default());

        let mut client = h.connect();
        let who = client.who();
        client.send(b"a\nb\nc\npart");
        client.shut_write();
        for reply in [ok("a"), ok("b"), ok("c"), "partial part".to_owned()] {
            assert_eq!(client.line(), reply);
        }
        client.expect_eof();
        assert_eq!(h.closed(who).0, Close::Peer);

        // The service closes after a last reply: what followed is not
        // handled, even the partial frame the end of file completes.
        let mut client = h.connect();
        let who = client.who();
        client.send(b"x\nquit\ny\ntrailing");
        client.shut_write();
        assert_eq!(client.line(), ok("x"));
        assert_eq!(client.line(), "bye");
        client.expect_eof();
        assert_eq!(h.closed(who).0, Close::Service);

        // Replies far past the water marks, still all sent before the close.
        let mut client = h.connect();
        let who = client.who();
        let requests: String = (0..40).map(|i| format!("big 20000 {i:02}\n")).collect();
        client.send(requests.as_bytes());
        client.shut_write();
        let payload = "x".repeat(20000);
        for i in 0..40 {
            assert!(client.line() == format!("{i:02} {payload}"), "reply {i}");
        }
        client.expect_eof();
        assert_eq!(h.closed(who).0, Close::Peer);

        let report = h.finish();
        assert_eq!(report.total.closed_peer, 2);
        assert_eq!(report.total.closed_service, 1);
    });
}

/// The end of file is read while megabytes of replies are still unsent (the
/// high water mark is above them, so reading goes on): they all go out
/// before the close.
#[test]
fn a_half_closed_client_gets_replies_unsent_when_its_eof_is_read() {
    watchdog(WATCHDOG, || {
        let config = Config::new()
            .water_marks(64 << 20, 16 << 20)
            .max_output(64 << 20);
        let mut h = start(config, Options::default());
        let mut client = h.connect();
        let who = client.who();
        let requests: String = (0..40).map(|i| format!("big 400000 {i:02}\n")).collect();
        client.send(requests.as_bytes());
        client.shut_write();
        let payload = "x".repeat(400_000);
        for i in 0..40 {
            assert!(client.line() == format!("{i:02} {payload}"), "reply {i}");
        }
        client.expect_eof();
        let (reason, max_pending) = h.closed(who);
        assert_eq!(reason, Close::Peer);
        assert_eq!(max_pending, 40 * 400_004, "every reply written at once");
        h.finish();
    });
}

#[test]
fn a_reset_peer_is_cleaned_up_and_others_are_served() {
    watchdog(WATCHDOG, || {
        let mut h = start(Config::new(), Options::default());
        let mut other = h.connect();

        // Reset while idle.
        let mut idle = Client::resetting(h.addr());
        let idle_who = idle.who();
        drop(idle);
        let (reason, _) = h.closed(idle_who);
        assert!(
            matches!(reason, Close::Error(_) | Close::Peer),
            "closed for {reason:?}"
        );

        // Reset with megabytes of replies unsent.
        let mut busy = Client::resetting(h.addr());
        let busy_who = busy.who();
        busy.send(b"big 8000000 big\n");
        h.progress(busy_who, "id\n".len() + 16);
        assert!(
            h.pending(busy_who).unwrap() > 0,
            "the reply is not all sent yet"
        );
        drop(busy);
        let (reason, _) = h.closed(busy_who);
        assert!(matches!(reason, Close::Error(_)), "closed for {reason:?}");

        assert_eq!(other.ask("still served"), ok("still served"));
        let report = h.finish();
        assert_eq!(report.total.accepted, 3);
        assert!(report.total.closed_error >= 1);
        assert_eq!(report.total.closed_error + report.total.closed_peer, 2);
    });
}

// ---- Fan-out -----------------------------------------------------------------

#[test]
fn fan_out_delivers_in_order_and_cuts_a_subscriber_that_does_not_read() {
    watchdog(WATCHDOG, || {
        const MAX_OUTPUT: usize = 256 << 10;
        /// At most 64 MB to the slow subscriber, however large the kernel's
        /// socket buffers.
        const MAX_MESSAGES: usize = 4000;
        /// Messages published after the slow subscriber is cut.
        const AFTER: usize = 20;
        /// Messages a fast subscriber may be behind before the publisher
        /// waits: 64 KB, far below the output limit.
        const WINDOW: usize = 4;
        let mut h = start(Config::new().max_output(MAX_OUTPUT), Options::default());
        let message = |seq: usize| format!("m{seq:05} {}", "p".repeat(16 << 10));

        let (acks, acked) = mpsc::channel::<(usize, usize)>();
        let fast: Vec<JoinHandle<usize>> = (0..2)
            .map(|which| {
                let mut client = h.connect();
                assert_eq!(client.ask("sub"), "subscribed");
                let acks = acks.clone();
                thread::spawn(move || {
                    for seq in 0..=MAX_MESSAGES {
                        let line = client.line();
                        if line == "end" {
                            return seq;
                        }
                        assert!(
                            line == message(seq),
                            "subscriber {which}: message {seq} out of order or wrong"
                        );
                        let _ = acks.send((which, seq + 1));
                    }
                    panic!("subscriber {which}: no end")
                })
            })
            .collect();
        let mut slow = Client::small_window(h.addr());
        let slow_who = slow.who();
        assert_eq!(slow.ask("sub"), "subscribed");

        // Publish until the slow subscriber is cut, then some more.
        let mut publisher = h.connect();
        let mut received = [0; 2];
        let mut delivered = Vec::new();
        let mut cut_at = None;
        for seq in 0..MAX_MESSAGES {
            if cut_at.is_none() && h.is_closed(slow_who) {
                cut_at = Some(seq);
            }
            if cut_at.is_some_and(|cut| seq >= cut + AFTER) {
                break;
            }
            while seq - received.iter().min().unwrap() > WINDOW {
                let (which, n) = acked
                    .recv_timeout(MUST_SUCCEED)
                    .expect("the fast subscribers keep reading");
                received[which] = n;
            }
            let reply = publisher.ask(&format!("pub {}", message(seq)));
            let n: usize = reply
                .strip_prefix("published ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("not a pub reply: {reply:?}"));
            delivered.push(n);
        }
        assert!(cut_at.is_some(), "the slow subscriber was never cut");
        assert_eq!(publisher.ask("pub end"), "published 2");
        let published = delivered.len();
        for reader in fast {
            let got = reader
                .join()
                .expect("a fast subscriber got everything in order");
            assert_eq!(got, published);
        }

        assert_eq!(h.closed(slow_who).0, Close::OutputLimit);
        assert_eq!(delivered[0], 3, "three subscribers at first");
        assert_eq!(delivered[published - 1], 2, "the slow one was cut");
        assert!(delivered.windows(2).all(|w| w[0] >= w[1]), "{delivered:?}");
        // The slow one got a prefix, in order, then the close.
        let mut got = 0;
        while let Some(line) = slow.line_or_closed() {
            assert!(line == message(got), "slow subscriber: message {got}");
            got += 1;
            assert!(got <= published);
        }
        assert!(
            got < published,
            "the slow subscriber got everything ({got})"
        );

        let report = h.finish();
        assert_eq!(report.total.closed_limit, 1);
    });
}

// ---- Graceful shutdown ------------------------------------------------------

#[test]
fn shutdown_answers_the_request_in_flight_and_closes_idle_connections_at_once() {
    watchdog(WATCHDOG, || {
        let drain = Duration::from_secs(5);
        let mut h = start(Config::new().drain_timeout(drain), Options::default());
        let addr = h.addr();
        let mut idle = h.connect();
        let idle_who = idle.who();
        let mut busy = h.connect();
        let busy_who = busy.who();
        busy.send(b"drain");
        h.progress(busy_who, "id\n".len() + 5);

        let start = Instant::now();
        h.shutdown.shutdown();
        idle.expect_eof();
        assert!(
            start.elapsed() < drain / 2,
            "the idle connection waited {:?}",
            start.elapsed()
        );
        assert_eq!(h.closed(idle_who).0, Close::Shutdown);
        assert_eq!(
            TcpStream::connect(addr).map(drop).map_err(|e| e.kind()),
            Err(ErrorKind::ConnectionRefused),
            "no more connections once the shutdown began"
        );

        // The rest of the request arrives after the shutdown began.
        assert!(!h.is_closed(busy_who));
        busy.send(b"ing?\n");
        assert_eq!(busy.line(), "draining true");
        busy.expect_eof();
        assert_eq!(h.closed(busy_who).0, Close::Shutdown);

        let report = h.join();
        assert!(
            start.elapsed() < drain / 2,
            "run returned after {:?}",
            start.elapsed()
        );
        assert_eq!(report.total.closed_shutdown, 2);
        assert_eq!(report.total.open, 0);
        h.finish();
    });
}

#[test]
fn shutdown_closes_what_is_left_at_the_drain_timeout() {
    watchdog(WATCHDOG, || {
        let drain = Duration::from_millis(400);
        let mut h = start(Config::new().drain_timeout(drain), Options::default());
        // A partial request that never completes.
        let mut partial = h.connect();
        let partial_who = partial.who();
        partial.send(b"never finished");
        h.progress(partial_who, "id\n".len() + 14);
        // Sixteen megabytes of replies to a peer that does not read: more
        // than the kernel's buffers take.
        let mut busy = Client::small_window(h.addr());
        let busy_who = busy.who();
        busy.send(b"big 16000000 big\n");
        h.progress(busy_who, "id\n".len() + 17);
        assert!(
            h.pending(busy_who).unwrap() > 0,
            "the reply is not all sent"
        );

        let start = Instant::now();
        h.shutdown.shutdown();
        let report = h.join();
        assert_timed_out(start.elapsed(), drain);
        assert_eq!(h.closed(partial_who).0, Close::Shutdown);
        assert_eq!(h.closed(busy_who).0, Close::Shutdown);
        // Both stayed open until the drain timeout.
        for who in [partial_who, busy_who] {
            assert_timed_out(h.closed_at(who) - start, drain);
        }
        partial.expect_eof();
        assert_eq!(report.total.closed_shutdown, 2);
        assert_eq!(report.total.open, 0);
        drop(busy);
        h.finish();
    });
}

#[test]
fn a_server_shut_down_before_it_runs_returns_at_once() {
    watchdog(WATCHDOG, || {
        let mut server = Server::new(Config::new().threads(2));
        let addr = server
            .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
            .unwrap();
        let shutdown = server.shutdown_handle();
        shutdown.shutdown();
        shutdown.shutdown(); // twice is fine
        assert!(shutdown.is_started());
        let (events, _) = mpsc::channel();
        let (started, _) = mpsc::channel();
        let start = Instant::now();
        let report = server
            .run(move |thread| Probe {
                thread,
                options: Options::default(),
                events: events.clone(),
                started: started.clone(),
                conns: Vec::new(),
                subscribers: Vec::new(),
            })
            .expect("run");
        // Well within the drain timeout (5 s): nothing to drain.
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(report.threads.len(), 2);
        assert_eq!(report.total.accepted, 0);
        assert_eq!(
            TcpStream::connect(addr).map(drop).map_err(|e| e.kind()),
            Err(ErrorKind::ConnectionRefused)
        );
    });
}

#[test]
fn two_threads_serve_one_port_and_shut_down_cleanly() {
    watchdog(WATCHDOG, || {
        let h = start_on(Config::new(), Options::default(), 2, Bind::Tcp);
        let mut per_thread = [0u64; 2];
        let mut kept: Vec<(usize, Client)> = Vec::new();
        // Until both threads served some (the kernel picks one for each
        // connection), at least 8, at most 200.
        for i in 0..200 {
            let mut client = h.connect();
            let reply = client.ask("thread");
            let thread: usize = reply
                .strip_prefix("thread ")
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("not a thread: {reply:?}"));
            per_thread[thread] += 1;
            if kept.len() < 8 || !kept.iter().any(|(t, _)| *t == thread) {
                kept.push((thread, client));
            }
            if i >= 7 && per_thread.iter().all(|&n| n > 0) {
                break;
            }
        }
        assert!(per_thread.iter().all(|&n| n > 0), "{per_thread:?}");
        for (_, client) in &mut kept {
            assert_eq!(client.ask("ping"), ok("ping"));
        }
        // A message to thread 1 reaches its connections, and only those.
        let remote = h.remotes[1].clone();
        thread::spawn(move || remote.send(Msg::Broadcast("to thread 1".into())).unwrap())
            .join()
            .unwrap();
        for (thread, client) in &mut kept {
            if *thread == 1 {
                assert_eq!(client.line(), "msg to thread 1");
            }
        }
        for (thread, client) in &mut kept {
            assert_eq!(client.ask("ping"), ok("ping"), "thread {thread}");
        }

        let report = h.finish();
        assert_eq!(report.threads.len(), 2);
        for (thread, stats) in report.threads.iter().enumerate() {
            assert_eq!(stats.accepted, per_thread[thread], "thread {thread}");
            assert_eq!(stats.open, 0, "thread {thread}");
            assert_eq!(stats.closed(), stats.accepted, "thread {thread}");
        }
        assert_eq!(report.total.accepted, per_thread.iter().sum::<u64>());
        assert!(report.total.closed_shutdown >= kept.len() as u64);
        for (_, mut client) in kept {
            client.expect_eof();
        }
    });
}

// ---- Unix listeners, timers, remotes ----------------------------------------

/// A fresh path for a Unix socket, removed when dropped.
struct SocketPath(PathBuf);

impl SocketPath {
    fn new(tag: &str) -> SocketPath {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("ontime-serve-{tag}-{}-{nanos}.sock", std::process::id());
        SocketPath(std::env::temp_dir().join(name))
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_unix_listener_serves() {
    watchdog(WATCHDOG, || {
        let path = SocketPath::new("unix");
        let mut h = start_on(Config::new(), Options::default(), 1, Bind::Unix(&path.0));
        let mut client = Client::new(UnixStream::connect(&path.0).expect("connecting"));
        assert_eq!(client.ask("peer"), "peer unix");
        client.send(b"split ");
        assert_eq!(client.ask("frame"), ok("split frame"));
        let reply = client.ask("id");
        let serial: u64 = reply.rsplit(' ').next().unwrap().parse().unwrap();
        client.shut_write();
        client.expect_eof();
        let who = Who { thread: 0, serial };
        assert_eq!(h.closed(who).0, Close::Peer);

        let report = h.finish();
        assert_eq!(report.total.accepted, 1);
        assert_eq!(report.total.closed_peer, 1);
    });
}

#[test]
fn a_unix_listener_serves_on_two_threads() {
    watchdog(WATCHDOG, || {
        let path = SocketPath::new("unix2");
        let h = start_on(Config::new(), Options::default(), 2, Bind::Unix(&path.0));
        let mut clients: Vec<Client<UnixStream>> = (0..8)
            .map(|_| Client::new(UnixStream::connect(&path.0).expect("connecting")))
            .collect();
        for (i, client) in clients.iter_mut().enumerate() {
            assert_eq!(client.ask(&format!("u{i}")), ok(&format!("u{i}")));
        }
        let report = h.finish();
        assert_eq!(report.threads.len(), 2);
        assert_eq!(report.total.accepted, 8);
        assert_eq!(report.total.closed_shutdown, 8);
        for mut client in clients {
            client.expect_eof();
        }
    });
}

#[test]
fn timers_fire_with_their_values_and_remotes_deliver_messages() {
    watchdog(WATCHDOG, || {
        let h = start(Config::new(), Options::default());
        let mut client = h.connect();
        assert_eq!(client.ask("peer"), "peer tcp");

        let late_start = Instant::now();
        assert_eq!(client.ask("timer 300 late"), "timer set");
        let early_start = Instant::now();
        assert_eq!(client.ask("timer 100 early"), "timer set");
        assert_eq!(client.line(), "timer early");
        assert_timed_out(early_start.elapsed(), Duration::from_millis(100));
        assert_eq!(client.line(), "timer late");
        assert_timed_out(late_start.elapsed(), Duration::from_millis(300));

        // A message from another thread, through the service's remote.
        let remote = h.remotes[0].clone();
        thread::spawn(move || remote.send(Msg::Broadcast("from afar".into())).unwrap())
            .join()
            .unwrap();
        assert_eq!(client.line(), "msg from afar");
        assert_eq!(client.ask("after"), ok("after"));
        h.finish();
    });
}
