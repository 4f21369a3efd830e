//! The one load generator that drives every server: closed-loop
//! connections on a single edge-triggered `mio::Poll`, each sending one
//! message, waiting for all of it to come back, and sending the next.
//!
//! [`run`] is one echo run (connect, warm up, count); the idle case builds
//! on the pieces: [`Conn::open`], [`exchange`] (one message on each of a
//! set of connections) and [`ping_pong`] (the closed loop on the first few
//! of them while the rest sit idle).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// What one run asks of the generator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    pub(crate) conns: usize,
    pub(crate) msg: usize,
    pub(crate) warmup: Duration,
    pub(crate) count: Duration,
}

/// What one run measured over its counting window.
#[derive(Debug)]
pub(crate) struct Measured {
    pub(crate) round_trips: u64,
    pub(crate) elapsed: Duration,
    /// Round-trip latency in nanoseconds.
    pub(crate) latency: Histogram<u64>,
}

/// Longest the generator waits for any progress before it calls the server
/// stuck.
const STALL: Duration = Duration::from_secs(5);

/// One client connection, registered with the generator's `Poll` under the
/// token of its index.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    /// Bytes of the current message written so far.
    sent: usize,
    /// Bytes of the current echo read so far.
    got: usize,
    /// When the current message was first written.
    started: Instant,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            sent: 0,
            got: 0,
            started: Instant::now(),
        }
    }

    /// Starts a non-blocking connect to `addr` and registers it as `token`.
    /// A message sent before the handshake completes waits for the
    /// `WRITABLE` edge that completes it (`send` sees `WouldBlock` until
    /// then).
    ///
    /// Closing it sends a reset (`SO_LINGER` 0), so that thousands of
    /// connections per run leave no `TIME_WAIT` behind to use up the
    /// ephemeral ports of the next.
    pub(crate) fn open(poll: &Poll, addr: SocketAddr, token: Token) -> io::Result<Conn> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
        poll.registry()
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Conn::new(stream))
    }
}

/// Connects, warms up, then counts round trips for `load.count`.
///
/// `window` is called with `true` as the counting window opens and `false`
/// as it closes, so the caller can sample the server's CPU time at the same
/// instants.
pub(crate) fn run(addr: SocketAddr, load: Load, window: impl FnMut(bool)) -> io::Result<Measured> {
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(load.conns);
    for i in 0..load.conns {
        let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(stream);
        poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        conns.push(Conn::new(stream));
    }
    ping_pong(
        &mut poll,
        &mut conns,
        load.msg,
        load.warmup,
        load.count,
        window,
    )
}

/// The closed loop on `conns` (tokens `0..conns.len()`) with messages of
/// `msg` bytes: warms up for `warmup`, then counts for `count`. Events for
/// other tokens registered with `poll` (idle connections) are ignored.
pub(crate) fn ping_pong(
    poll: &mut Poll,
    conns: &mut [Conn],
    msg: usize,
    warmup: Duration,
    count: Duration,
    mut window: impl FnMut(bool),
) -> io::Result<Measured> {
    let message = message(msg);
    // One buffer for every connection: the bytes at each offset are the
    // same in every message, so partial reads of different connections
    // cannot mix up the comparison.
    let mut echo = vec![0u8; msg];
    let mut events = Events::with_capacity(conns.len().clamp(1, 1024) * 2);

    let mut latency =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds");
    let start = Instant::now();
    let count_from = start + warmup;
    let count_until = count_from + count;
    let mut counting = false;
    let mut opened = start;
    let mut round_trips = 0u64;
    let mut last_progress = start;

    // Every connection sends its first message; from then on each is driven
    // by its readiness events.
    for conn in conns.iter_mut() {
        conn.sent = 0;
        conn.got = 0;
        conn.started = Instant::now();
        send(conn, &message)?;
    }

    loop {
        let now = Instant::now();
        if !counting && now >= count_from {
            counting = true;
            opened = now;
            round_trips = 0;
            latency.reset();
            window(true);
        }
        if now >= count_until {
            window(false);
            // Wait for the echoes in flight, so that the connections are
            // quiet (and reusable) when this returns.
            settle(poll, conns, &message, &mut echo)?;
            return Ok(Measured {
                round_trips,
                elapsed: now.duration_since(opened),
                latency,
            });
        }
        if now.duration_since(last_progress) > STALL {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no echo for 5 s: server stuck",
            ));
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for event in events.iter() {
            let Some(conn) = conns.get_mut(event.token().0) else {
                continue;
            };
            if !advance(conn, &message, &mut echo)? {
                continue;
            }
            let done = Instant::now();
            if counting {
                round_trips += 1;
                let ns =
                    u64::try_from(done.duration_since(conn.started).as_nanos()).unwrap_or(u64::MAX);
                latency.saturating_record(ns.max(1));
            }
            last_progress = done;
            conn.got = 0;
            conn.sent = 0;
            conn.started = done;
            send(conn, &message)?;
        }
    }
}

/// Reads the echoes still owed on `conns` after the counting window, so
/// that none is left half-read.
fn settle(poll: &mut Poll, conns: &mut [Conn], message: &[u8], echo: &mut [u8]) -> io::Result<()> {
    let mut owed: usize = conns.iter().filter(|c| c.sent > 0 || c.got > 0).count();
    let mut done = vec![false; conns.len()];
    for (conn, done) in conns.iter_mut().zip(&mut done) {
        *done = conn.sent == 0 && conn.got == 0;
    }
    let mut events = Events::with_capacity(1024);
    let deadline = Instant::now() + STALL;
    while owed > 0 {
        if Instant::now() >= deadline {
            let stuck: Vec<String> = conns
                .iter()
                .zip(&done)
                .enumerate()
                .filter(|(_, (_, done))| !**done)
                .take(5)
                .map(|(i, (c, _))| format!("#{i}: sent {} got {}", c.sent, c.got))
                .collect();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{owed} echoes in flight did not come back within 5 s ({})",
                    stuck.join(", ")
                ),
            ));
        }
        // Bytes may have arrived before the loop stopped reacting to them,
        // so try every owing connection first, then wait for edges.
        for (conn, done) in conns.iter_mut().zip(&mut done) {
            if !*done && advance(conn, message, echo)? {
                *done = true;
                owed -= 1;
                conn.sent = 0;
                conn.got = 0;
            }
        }
        if owed > 0 {
            poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        }
    }
    Ok(())
}

/// Sends one message on every connection of `conns` (whose tokens are
/// `base..base + conns.len()`) and waits, at most `limit`, until each has
/// its echo back or was closed by the server. Returns how many the server
/// closed (end of stream or reset); any other error, or a connection still
/// owing its echo at `limit`, is an error.
///
/// This is how the idle case opens its connections (in batches, each
/// answered before the next, so the server has accepted every one) and
/// checks at the end that none was closed under it.
pub(crate) fn exchange(
    poll: &mut Poll,
    conns: &mut [Conn],
    base: usize,
    msg: usize,
    limit: Duration,
) -> io::Result<usize> {
    let message = message(msg);
    let mut echo = vec![0u8; msg];
    let mut events = Events::with_capacity(1024);
    let mut done = vec![false; conns.len()];
    let mut left = conns.len();
    let mut closed = 0;
    for (conn, done) in conns.iter_mut().zip(&mut done) {
        conn.sent = 0;
        conn.got = 0;
        if let Err(e) = send(conn, &message) {
            if !is_closed(&e) {
                return Err(e);
            }
            *done = true;
            left -= 1;
            closed += 1;
        }
    }
    let deadline = Instant::now() + limit;
    while left > 0 {
        let now = Instant::now();
        if now >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{left} of {} connections got no echo within {limit:?}",
                    conns.len()
                ),
            ));
        }
        poll.poll(
            &mut events,
            Some((deadline - now).min(Duration::from_millis(50))),
        )?;
        for event in events.iter() {
            let Some(index) = event.token().0.checked_sub(base) else {
                continue;
            };
            let (Some(conn), Some(done)) = (conns.get_mut(index), done.get_mut(index)) else {
                continue;
            };
            if *done {
                continue;
            }
            match advance(conn, &message, &mut echo) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) if is_closed(&e) => closed += 1,
                Err(e) => return Err(e),
            }
            *done = true;
            left -= 1;
            conn.sent = 0;
            conn.got = 0;
        }
    }
    Ok(closed)
}

/// Whether `e` says the server closed the connection.
fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
    )
}

/// The message every connection sends.
fn message(msg: usize) -> Vec<u8> {
    (0..msg).map(|i| (i % 251) as u8).collect()
}

/// Sends what is left of the current message and reads what is owed of its
/// echo; `Ok(true)` once the whole echo is back (and checked).
fn advance(conn: &mut Conn, message: &[u8], echo: &mut [u8]) -> io::Result<bool> {
    if conn.sent < message.len() {
        send(conn, message)?;
        if conn.sent < message.len() {
            return Ok(false);
        }
    }
    // Read only the bytes still owed: with one message in flight nothing
    // else can arrive, so a full read needs no second `read` to see
    // `WouldBlock`.
    while conn.got < message.len() {
        match conn.stream.read(&mut echo[conn.got..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => conn.got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if echo != message {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "echo differs from message",
        ));
    }
    Ok(true)
}

/// Writes what the socket takes of the rest of `message`.
fn send(conn: &mut Conn, message: &[u8]) -> io::Result<()> {
    while conn.sent < message.len() {
        match conn.stream.write(&message[conn.sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => conn.sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
