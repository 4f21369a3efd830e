//! A serving layer on the reactor: listeners, buffered connections,
//! backpressure, deadlines, limits, threads and graceful shutdown, so that a
//! server is its protocol and little else.
//!
//! A server author writes a [`Service`]: a per-connection state of its own
//! type and callbacks for what happens to a connection (connected, bytes
//! arrived, output drained, a deadline passed, closed), plus timers and
//! messages from other threads. The layer does the rest:
//!
//! - **Listeners**: TCP (`SO_REUSEADDR`, a backlog of 1024, `SO_REUSEPORT`
//!   with threads) and Unix stream; a bounded number of accepts per event.
//!   Out of descriptors or memory (`EMFILE`, `ENFILE`, `ENOBUFS`,
//!   `ENOMEM`), accepting pauses until a connection closes or a short
//!   back-off passes, with one warning per episode, and never spins.
//!   Beyond [`Config::max_connections`] a connection is sent the service's
//!   [`refusal`](Service::refusal) and closed at once.
//! - **Input**: every read goes into one buffer per reactor. The service
//!   parses from [`Input`] and consumes whole frames; only the leftovers of
//!   a partial frame stay with the connection, so an idle connection holds
//!   no buffer. Input beyond [`Config::max_input`] closes the connection.
//! - **Output**: a connection's replies of one turn of the reactor go out
//!   together at the end of the turn, in one write, after every ready
//!   connection was read (as Redis's `beforeSleep`). Above the high water mark the layer stops reading
//!   the connection until its output drains to the low mark; sockets are
//!   registered readable and writable once (edge-triggered), so this costs
//!   no system call. [`Config::max_output`] bounds what a connection that
//!   does not read may hold.
//! - **Deadlines** on the reactor's wheel, never early: an idle timeout,
//!   and one deadline per connection that the service sets and clears.
//! - **Threads**: one reactor per thread, each with its own listener on the
//!   same port; the default of one runs on the calling thread.
//! - **Graceful shutdown** ([`Shutdown`]), **counters** ([`Stats`]) and
//!   `log` records (debug for accept pauses, refusals and closes with their
//!   reason; trace per event).
//!
//! The layer is built only on the reactor's public API (`Reactor`,
//! `Handler`, timers, `Remote`), like any other program on it.
//!
//! # Examples
//!
//! A line protocol: each line comes back in capitals, `quit` says goodbye
//! and closes, and connections idle for a minute are closed.
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use std::time::Duration;
//!
//! use ontime_core::serve::{Config, Conn, Input, Server, Service};
//!
//! struct Shout;
//!
//! impl Service for Shout {
//!     type Conn = u64; // lines answered on this connection
//!     type Timer = ();
//!     type Message = ();
//!
//!     fn connected(&mut self, _: &mut Conn<'_, Self>) -> u64 {
//!         0
//!     }
//!
//!     fn received(&mut self, conn: &mut Conn<'_, Self>, lines: &mut u64, input: &mut Input<'_>) {
//!         // Every whole line; a partial one stays in `input` for later.
//!         while let Some(end) = input.bytes().iter().position(|&b| b == b'\n') {
//!             let line = &input.bytes()[..end];
//!             if line == b"quit" {
//!                 conn.write(format!("bye after {lines} lines\n").as_bytes());
//!                 conn.close_when_flushed();
//!                 return;
//!             }
//!             conn.write(&line.to_ascii_uppercase());
//!             conn.write(b"\n");
//!             *lines += 1;
//!             input.consume(end + 1);
//!         }
//!     }
//! }
//!
//! # fn main() -> std::io::Result<()> {
//! let config = Config::new().idle_timeout(Some(Duration::from_secs(60)));
//! let mut server = Server::new(config);
//! let addr = server.listen("127.0.0.1:0".parse().unwrap())?;
//! let shutdown = server.shutdown_handle();
//! let running = std::thread::spawn(move || server.run(|_thread| Shout));
//!
//! let mut client = std::net::TcpStream::connect(addr)?;
//! client.write_all(b"hello\nwor")?; // the second line in two parts
//! client.write_all(b"ld\nquit\n")?;
//! let mut replies = String::new();
//! let mut reader = BufReader::new(&client);
//! for _ in 0..3 {
//!     reader.read_line(&mut replies)?;
//! }
//! assert_eq!(replies, "HELLO\nWORLD\nbye after 2 lines\n");
//!
//! shutdown.shutdown();
//! let report = running.join().unwrap()?;
//! assert_eq!(report.total.accepted, 1);
//! # Ok(())
//! # }
//! ```

mod config;
mod conn;
mod layer;
mod server;
mod stats;

pub use self::config::Config;
pub use self::conn::{Conn, ConnId, Context, Input, PeerAddr};
pub use self::server::{Report, Server, Shutdown};
pub use self::stats::{Close, Stats};

use crate::timers::TimerId;

/// Which deadline of a connection passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Nothing moved in either direction for the idle timeout.
    Idle,
    /// The deadline the service set ([`Conn::set_deadline`]).
    Deadline,
}

/// A protocol: what a server does with its connections. Only
/// [`connected`](Service::connected) and [`received`](Service::received)
/// must be written; the other callbacks default to what most protocols
/// want.
///
/// One service runs on each of the server's threads (made by the factory
/// handed to [`Server::run`]), and each callback runs on that thread's
/// reactor, one at a time, so a service needs no locks for its own data.
pub trait Service: Sized {
    /// What each connection carries (a parser's progress, a subscription
    /// list, a name).
    type Conn;
    /// What each of the service's timers carries.
    type Timer;
    /// What other threads send (through [`Context::remote`]).
    type Message: Send + 'static;

    /// The reactor started: the place to start the service's own timers.
    fn started(&mut self, cx: &mut Context<'_, Self>) {
        let _ = cx;
    }

    /// A connection was accepted; returns its state. Output written now (a
    /// greeting) goes out as it returns.
    fn connected(&mut self, conn: &mut Conn<'_, Self>) -> Self::Conn;

    /// Input arrived. Parse from `input`, consume what was handled, and
    /// write replies to `conn`: every reply written here (and in the other
    /// calls of the same turn of the reactor) goes out in one write at the
    /// end of the turn, after every other ready connection was read.
    /// What is left unconsumed is kept for the next call, which comes when
    /// more bytes arrive (or with [`Input::is_closed`] if the peer closes).
    fn received(
        &mut self,
        conn: &mut Conn<'_, Self>,
        state: &mut Self::Conn,
        input: &mut Input<'_>,
    );

    /// Output that could not be sent at once has now all been sent (the
    /// place to write the next part of a long reply).
    fn drained(&mut self, conn: &mut Conn<'_, Self>, state: &mut Self::Conn) {
        let _ = (conn, state);
    }

    /// A deadline of the connection passed (never early). By default the
    /// connection is closed at once ([`Close::Idle`] or
    /// [`Close::Deadline`]); a service may instead write a last reply and
    /// [`close_when_flushed`](Conn::close_when_flushed), or keep it open.
    fn expired(&mut self, conn: &mut Conn<'_, Self>, state: &mut Self::Conn, which: Expired) {
        let _ = (state, which);
        conn.close();
    }

    /// The connection's unconsumed input passed [`Config::max_input`]; it
    /// is closed once the output written now (an error reply) is sent, and
    /// its input is dropped.
    fn input_full(&mut self, conn: &mut Conn<'_, Self>, state: &mut Self::Conn) {
        let _ = (conn, state);
    }

    /// The connection closed, for `reason`; its state is dropped when this
    /// returns.
    fn closed(
        &mut self,
        cx: &mut Context<'_, Self>,
        id: ConnId,
        state: &mut Self::Conn,
        reason: Close,
    ) {
        let _ = (cx, id, state, reason);
    }

    /// Whether a connection that holds no unconsumed input and no unsent
    /// output is between requests (the default: yes). A graceful shutdown
    /// closes such connections at once and lets the others finish; a
    /// service that consumes a request's head before its body has arrived
    /// says no for it until the request is answered.
    fn is_idle(&self, state: &Self::Conn) -> bool {
        let _ = state;
        true
    }

    /// The last message of a connection refused because
    /// [`Config::max_connections`] are open (default: none).
    fn refusal(&self) -> &[u8] {
        &[]
    }

    /// A timer the service started fired.
    fn timer(&mut self, cx: &mut Context<'_, Self>, id: TimerId, value: &mut Self::Timer) {
        let _ = (cx, id, value);
    }

    /// Another thread sent a message.
    fn message(&mut self, cx: &mut Context<'_, Self>, message: Self::Message) {
        let _ = (cx, message);
    }
}
