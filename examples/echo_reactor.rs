//! A TCP echo server written straight on the ontime reactor, with an idle
//! timeout per connection: the lowest-level example of embedding the
//! reactor (`Reactor`, `Handler`, registrations, timers, deadlines), with
//! nothing between the program and the event loop.
//!
//! It is also the baseline that shows what the serving layer costs:
//! `examples/echo_server.rs` is the same echo on `ontime::serve`, with the
//! same flags and the same behaviour, the layer doing what this file does by
//! hand. Put the same load on both to see the difference.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release --example echo_reactor -- --addr 127.0.0.1:7000 --idle-timeout-ms 5000
//! ```
//!
//! and talk to it with `nc 127.0.0.1 7000`. The first line it prints is
//! `listening on HOST:PORT`, with the port actually bound (so `--addr
//! 127.0.0.1:0` picks a free one). It serves until it is killed (it has no
//! graceful shutdown: Ctrl-C ends it at once). `RUST_LOG=debug` shows the
//! reactor at work.
//!
//! What it shows:
//!
//! - No tables: the listener and each connection are the state of their
//!   registration ([`Entry`]), which the reactor keeps and lends to every
//!   event about it; the back-off timer carries what it is for ([`Alarm`]).
//! - Edge-triggered readiness: each connection is read until it is drained,
//!   but at most [`READS_PER_EVENT`] times per event; the rest is requeued
//!   with [`Reactor::requeue`] so that one busy peer cannot starve the others.
//!   A short read counts as drained (one system call fewer per message), but
//!   not once an event has reported the peer's shutdown or an error: see
//!   [`serve`].
//! - Backpressure: bytes that could not be written back wait in a bounded
//!   buffer, and a connection whose peer does not read is not read from
//!   either once the buffer is full. Each connection is registered for
//!   `READABLE | WRITABLE` once: a backpressure episode costs no
//!   re-registration, and a `WRITABLE` edge with nothing to write costs no
//!   system call.
//! - Idle timeouts as I/O deadlines: after every `WouldBlock` the deadline in
//!   that direction is armed again; readiness disarms it on its own; a
//!   connection that makes no progress for the whole timeout is closed.
//! - A listen backlog of [`BACKLOG`] rather than mio's and std's 128, so that
//!   a burst of connects is queued, not dropped, while the server is busy.
//! - Running out of descriptors: on `EMFILE` (and `ENFILE`, `ENOBUFS`,
//!   `ENOMEM`) the server stops accepting, warns once, and tries again when a
//!   connection closes or a short back-off timer fires, without spinning.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use ontime::net::{TcpListener, TcpStream};
use ontime::{
    AsSource, Direction, Handler, Interest, Reactor, Ready, Remote, Source, TimerId, Token,
};

mod common;

use common::{Arg, Error, Parser};

/// Reads per readiness event before the connection yields to the others.
const READS_PER_EVENT: usize = 16;
/// Accepts per readiness event before the listener yields to the connections.
const ACCEPTS_PER_EVENT: usize = 64;
/// Size of one read.
const READ_CHUNK: usize = 16 * 1024;
/// Most bytes a connection may have waiting to be written back. A peer that
/// sends but does not read is not read from past this point.
const MAX_PENDING: usize = 64 * 1024;
/// How long to wait before accepting again after running out of descriptors
/// or memory, unless a connection closes first.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Connections the kernel queues for `accept`. mio's `TcpListener::bind`
/// asks for 128, like std; a burst beyond that (a client pool starting up)
/// would see SYNs dropped and connects delayed by a second or more. The
/// kernel caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 1024;

const USAGE: &str = "\
usage: echo_reactor [--addr HOST:PORT] [--idle-timeout-ms N]

  --addr HOST:PORT       address to listen on (default 127.0.0.1:7000;
                         port 0 picks a free port)
  --idle-timeout-ms N    close a connection that makes no progress for N ms
                         (default 0: never)
  -h, --help             print this help";

fn main() -> ExitCode {
    env_logger::init();
    common::main("echo_reactor", USAGE, Config::parse, listen_and_serve)
}

fn listen_and_serve(config: &Config) -> io::Result<()> {
    let mut server = EchoServer::new(config.addr, config.idle_timeout)?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {}", server.local_addr()?)?;
    stdout.flush()?;
    drop(stdout);
    server.run()
}

/// The command line.
#[derive(Debug)]
struct Config {
    addr: SocketAddr,
    idle_timeout: Option<Duration>,
}

impl Config {
    /// Parses the command line; `Ok(None)` for `--help`.
    fn parse(parser: &mut Parser) -> Result<Option<Config>, Error> {
        let mut config = Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
            idle_timeout: None,
        };
        while let Some(arg) = parser.next()? {
            match arg {
                Arg::Short('h') | Arg::Long("help") => return Ok(None),
                Arg::Long("addr") => config.addr = common::socket_addr(parser, "--addr")?,
                Arg::Long("idle-timeout-ms") => {
                    config.idle_timeout = common::timeout(parser, "--idle-timeout-ms")?;
                }
                _ => return Err(arg.unexpected()),
            }
        }
        Ok(Some(config))
    }
}

/// A TCP echo server: a reactor, with the listener registered, and the
/// handler that serves it.
#[derive(Debug)]
pub struct EchoServer {
    reactor: Reactor<Echo>,
    echo: Echo,
}

impl EchoServer {
    /// Binds `addr` and prepares to serve it. With `idle_timeout`, a
    /// connection that makes no progress for that long is closed.
    ///
    /// # Errors
    ///
    /// Any error creating the reactor or binding the listener.
    pub fn new(addr: SocketAddr, idle_timeout: Option<Duration>) -> io::Result<EchoServer> {
        let mut reactor = Reactor::new()?;
        let listener = reactor.register(Entry::Listener(listen(addr)?), Interest::READABLE)?;
        let echo = Echo {
            listener,
            idle_timeout,
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            backoff: None,
            saturated: false,
        };
        Ok(EchoServer { reactor, echo })
    }

    /// The address the listener is bound to.
    ///
    /// # Errors
    ///
    /// Any error from the OS.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self.reactor.state(self.echo.listener) {
            Some(Entry::Listener(listener)) => listener.local_addr(),
            // Lent only while the server runs, which takes `&mut self`.
            _ => unreachable!("the listener stays registered while the server lives"),
        }
    }

    /// A handle to stop the server from another thread.
    pub fn remote(&self) -> Remote<()> {
        self.reactor.remote()
    }

    /// Serves until stopped through [`remote`](EchoServer::remote).
    ///
    /// # Errors
    ///
    /// Any error polling the OS.
    pub fn run(&mut self) -> io::Result<()> {
        self.reactor.run(&mut self.echo)
    }
}

/// A non-blocking listener on `addr` with a backlog of [`BACKLOG`].
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};

    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As mio's `bind` does: a restarted server can bind at once.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// What a registration holds: the reactor keeps it with the registration
/// and lends it to each event about it, so the server needs no table of
/// its own.
#[derive(Debug)]
enum Entry {
    Listener(TcpListener),
    Conn(Connection),
}

impl AsSource for Entry {
    fn source(&mut self) -> &mut dyn Source {
        match self {
            Entry::Listener(listener) => listener,
            Entry::Conn(conn) => &mut conn.stream,
        }
    }
}

/// One client.
#[derive(Debug)]
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    /// Bytes read but not yet written back.
    ///
    /// Invariant: `pending.len() <= MAX_PENDING`; between events, with an
    /// idle timeout, the write deadline is armed exactly while it is not
    /// empty.
    pending: Vec<u8>,
    /// Reading stopped because `pending` was full, before the socket was
    /// drained: what it still holds raises no new edge, so the next event
    /// reads whatever its readiness (typically the `WRITABLE` one that
    /// makes room).
    paused: bool,
    /// The peer has shut down its side; close once `pending` is written.
    read_closed: bool,
}

/// What a timer is for: the value it carries.
#[derive(Debug)]
enum Alarm {
    /// Accepting was paused for want of descriptors or memory: try again.
    ResumeAccepting,
}

/// What to do with a connection after an event.
enum Next {
    Keep,
    Close,
}

/// The handler: what the listener and the connections share.
#[derive(Debug)]
struct Echo {
    listener: Token,
    idle_timeout: Option<Duration>,
    buf: Box<[u8]>,
    /// The back-off timer, while accepting is paused: cancelled when a
    /// connection closes, since that frees a descriptor.
    backoff: Option<TimerId>,
    /// Accepting ran out of descriptors or memory and the backlog has not
    /// been drained since; the warning is logged once per such episode.
    saturated: bool,
}

impl Handler for Echo {
    type State = Entry;
    type Timer = Alarm;
    type Message = ();

    fn ready(
        &mut self,
        reactor: &mut Reactor<Echo>,
        token: Token,
        entry: &mut Entry,
        ready: Ready,
    ) {
        let conn = match entry {
            Entry::Listener(listener) => {
                if self.backoff.is_none() {
                    self.accept(reactor, token, listener);
                }
                return;
            }
            Entry::Conn(conn) => conn,
        };
        let idle = self.idle_timeout;
        match serve(reactor, token, conn, ready, &mut self.buf, idle) {
            Ok(Next::Keep) => {}
            Ok(Next::Close) => self.close(reactor, token, conn),
            Err(e) => {
                if is_disconnect(&e) {
                    log::debug!("{}: {e}", conn.peer);
                } else {
                    log::warn!("{}: {e} ({ready:?})", conn.peer);
                }
                self.close(reactor, token, conn);
            }
        }
    }

    fn timed_out(
        &mut self,
        reactor: &mut Reactor<Echo>,
        token: Token,
        entry: &mut Entry,
        direction: Direction,
    ) {
        if let Entry::Conn(conn) = entry {
            log::debug!("{}: idle ({direction:?}), closing", conn.peer);
            self.close(reactor, token, conn);
        }
    }

    fn timer(&mut self, reactor: &mut Reactor<Echo>, _: TimerId, alarm: &mut Alarm) {
        match alarm {
            Alarm::ResumeAccepting => {
                self.backoff = None;
                // Accept where the listener is at hand: in an event of its
                // own, on the next turn (which does not wait).
                reactor.requeue(self.listener, Ready::READABLE);
            }
        }
    }
}

impl Echo {
    /// Accepts until the backlog is empty, the per-event budget is spent, or
    /// the process runs out of descriptors.
    fn accept(&mut self, reactor: &mut Reactor<Echo>, token: Token, listener: &mut TcpListener) {
        for _ in 0..ACCEPTS_PER_EVENT {
            match listener.accept() {
                Ok((stream, peer)) => self.open(reactor, stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.saturated {
                        log::info!("accepting again");
                        self.saturated = false;
                    }
                    return;
                }
                // The connection went away while it waited in the backlog.
                Err(e) if is_disconnect(&e) || e.kind() == io::ErrorKind::Interrupted => {
                    log::debug!("accept: {e}");
                }
                Err(e) => {
                    // Out of descriptors or memory (or something unforeseen):
                    // the pending connection stays in the backlog and the
                    // listener will not be reported readable again for it, so
                    // retry on a timer rather than in a loop.
                    if !self.saturated {
                        log::warn!(
                            "accept: {e}; accepting paused until a connection closes (retrying every {} ms)",
                            ACCEPT_BACKOFF.as_millis()
                        );
                        self.saturated = true;
                    } else {
                        log::debug!("accept: {e}");
                    }
                    self.backoff =
                        Some(reactor.timer_after(ACCEPT_BACKOFF, Alarm::ResumeAccepting));
                    return;
                }
            }
        }
        // More may be waiting: come back after the others had their turn.
        reactor.requeue(token, Ready::READABLE);
    }

    fn open(&mut self, reactor: &mut Reactor<Echo>, stream: TcpStream, peer: SocketAddr) {
        let conn = Connection {
            stream,
            peer,
            pending: Vec::new(),
            paused: false,
            read_closed: false,
        };
        // Both directions, once: edge-triggered, so `WRITABLE` is reported
        // when the socket takes data again after a write would block, and
        // backpressure needs no re-registration.
        let token =
            match reactor.register(Entry::Conn(conn), Interest::READABLE | Interest::WRITABLE) {
                Ok(token) => token,
                Err(e) => {
                    log::warn!("{peer}: register: {e}");
                    return;
                }
            };
        if let Some(idle) = self.idle_timeout {
            // A client that connects and says nothing is idle too.
            reactor
                .set_timeout(token, Direction::Read, idle)
                .expect("the token was just registered");
        }
        log::debug!("{peer}: connected as {token:?}");
    }

    /// Closes the connection whose event is being handled: the reactor
    /// drops it, closing its socket, as the call returns.
    fn close(&mut self, reactor: &mut Reactor<Echo>, token: Token, conn: &Connection) {
        if let Err(e) = reactor.deregister(token) {
            log::debug!("{}: deregister: {e}", conn.peer);
        }
        log::debug!("{}: closed", conn.peer);
        // A descriptor is being freed: if accepting is paused, try on the
        // next turn rather than when the back-off timer fires.
        if let Some(timer) = self.backoff.take() {
            reactor.cancel_timer(timer);
            reactor.requeue(self.listener, Ready::READABLE);
        }
    }
}

/// Handles one event of a connection: writes back what is pending, reads
/// and echoes what arrived, and arranges for the next event.
///
/// A read shorter than asked means the socket is drained: with
/// edge-triggered readiness, whatever arrives after that read brings a new
/// event. A FIN does too, but a short read can *consume* the FIN that
/// arrived with the last data, and nothing will arrive after it. So once an
/// event reports the peer's shutdown (`READ_CLOSED`) or an error, reading
/// goes on until `0` or `WouldBlock`. The event at hand always tells: the
/// reactor keeps those two flags in every later event of the registration,
/// requeued ones included.
fn serve(
    reactor: &mut Reactor<Echo>,
    token: Token,
    conn: &mut Connection,
    ready: Ready,
    buf: &mut [u8],
    idle: Option<Duration>,
) -> io::Result<Next> {
    // Read if there is something to read: what this event reports, or what
    // reading left behind when the buffer filled up. A `WRITABLE` edge with
    // nothing pending thus costs no system call.
    let read = ready.settles(Direction::Read) || conn.paused;
    conn.paused = false;
    let closing = ready.is_read_closed() || ready.is_error();

    flush(reactor, token, conn, idle)?;

    let mut reads = 0;
    while read && !conn.read_closed {
        // Backpressure: with the buffer full, stop reading until the peer
        // reads; the WRITABLE event that follows resumes here.
        let room = MAX_PENDING - conn.pending.len();
        if room == 0 {
            conn.paused = true;
            break;
        }
        if reads == READS_PER_EVENT {
            reactor.requeue(token, Ready::READABLE);
            break;
        }
        reads += 1;
        let len = room.min(buf.len());
        match conn.stream.read(&mut buf[..len]) {
            Ok(0) => conn.read_closed = true,
            Ok(n) => {
                let mut data = &buf[..n];
                if conn.pending.is_empty() {
                    let written = write_some(&mut conn.stream, data)?;
                    data = &data[written..];
                    if !data.is_empty() {
                        arm(reactor, token, Direction::Write, idle);
                    }
                }
                conn.pending.extend_from_slice(data);
                if n < len && !closing {
                    // Drained: more data brings a new event.
                    arm(reactor, token, Direction::Read, idle);
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                arm(reactor, token, Direction::Read, idle);
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    debug_assert!(
        conn.pending.len() <= MAX_PENDING,
        "{} bytes pending, more than {MAX_PENDING}",
        conn.pending.len()
    );

    if conn.read_closed && conn.pending.is_empty() {
        return Ok(Next::Close);
    }
    Ok(Next::Keep)
}

/// Writes as much of `conn.pending` as the socket takes; nothing, and no
/// system call, if nothing is pending.
fn flush(
    reactor: &mut Reactor<Echo>,
    token: Token,
    conn: &mut Connection,
    idle: Option<Duration>,
) -> io::Result<()> {
    if conn.pending.is_empty() {
        return Ok(());
    }
    let written = write_some(&mut conn.stream, &conn.pending)?;
    conn.pending.drain(..written);
    if conn.pending.is_empty() {
        // Nothing left to write: nothing to wait for in that direction
        // (this event may have been a READABLE one, which leaves the write
        // deadline armed).
        if idle.is_some() {
            reactor
                .set_deadline(token, Direction::Write, None)
                .expect("a connection being served is registered");
        }
    } else {
        arm(reactor, token, Direction::Write, idle);
    }
    Ok(())
}

/// Writes `data` until it is all written or the socket would block; returns
/// how much was written.
fn write_some(stream: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < data.len() {
        match stream.write(&data[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Arms the idle deadline in `direction`, now that the connection waits in
/// that direction.
fn arm(reactor: &mut Reactor<Echo>, token: Token, direction: Direction, idle: Option<Duration>) {
    if let Some(idle) = idle {
        reactor
            .set_timeout(token, direction, idle)
            .expect("a connection being served is registered");
    }
}

/// Whether `e` means the peer went away, which is routine for a server.
fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::TimedOut
            | io::ErrorKind::UnexpectedEof
    )
}
