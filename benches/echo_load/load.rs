//! The one load generator that drives every server: `conns` closed-loop
//! connections on a single edge-triggered `mio::Poll`, each sending one
//! message, waiting for all of it to come back, and sending the next.

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

struct Conn {
    stream: TcpStream,
    /// Bytes of the current message written so far.
    sent: usize,
    /// Bytes of the current echo read so far.
    got: usize,
    /// When the current message was first written.
    started: Instant,
}

/// Connects, warms up, then counts round trips for `load.count`.
///
/// `window` is called with `true` as the counting window opens and `false`
/// as it closes, so the caller can sample the server's CPU time at the same
/// instants.
pub(crate) fn run(
    addr: SocketAddr,
    load: Load,
    mut window: impl FnMut(bool),
) -> io::Result<Measured> {
    let message: Vec<u8> = (0..load.msg).map(|i| (i % 251) as u8).collect();
    let mut echo = vec![0u8; load.msg];
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(load.conns.max(1) * 2);
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
        conns.push(Conn {
            stream,
            sent: 0,
            got: 0,
            started: Instant::now(),
        });
    }

    let mut latency =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds");
    let start = Instant::now();
    let count_from = start + load.warmup;
    let count_until = count_from + load.count;
    let mut counting = false;
    let mut opened = start;
    let mut round_trips = 0u64;
    let mut last_progress = start;

    // Every connection sends its first message; from then on each is driven
    // by its readiness events.
    for conn in &mut conns {
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
            let conn = &mut conns[event.token().0];
            if conn.sent < message.len() {
                send(conn, &message)?;
                if conn.sent < message.len() {
                    continue;
                }
            }
            // Read only the bytes still owed: with one message in flight
            // nothing else can arrive, so a full read needs no second
            // `read` to see `WouldBlock`.
            while conn.got < message.len() {
                match conn.stream.read(&mut echo[conn.got..]) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => conn.got += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if conn.got == message.len() {
                if echo != message {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "echo differs from message",
                    ));
                }
                let done = Instant::now();
                if counting {
                    round_trips += 1;
                    let ns = u64::try_from(done.duration_since(conn.started).as_nanos())
                        .unwrap_or(u64::MAX);
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
