//! An event loop on [mio](https://docs.rs/mio) with a hierarchical timer
//! wheel and deadlines on I/O, and Python's three socket modes for blocking
//! programs.
//!
//! This crate gathers the workspace under one name:
//!
//! - the reactor of `ontime-core`, re-exported at the top level: a
//!   [`Reactor`] turns non-blocking sources, I/O deadlines
//!   ([`Reactor::set_deadline`]), timers ([`Reactor::timer_after`],
//!   [`Reactor::interval`]) and messages from other threads ([`Remote`]) into
//!   calls on a [`Handler`];
//! - [`sync`] (`ontime-sync`): blocking, non-blocking and timeout modes for
//!   sockets, built on that reactor.
//!
//! # Examples
//!
//! A timer, and a read deadline on a connection nobody writes to. The
//! reactor keeps the connection as its registration's state and the
//! timer's value with the timer, and hands each back with its event:
//!
//! ```
//! use std::io;
//! use std::time::{Duration, Instant};
//!
//! use ontime::net::{TcpListener, TcpStream};
//! use ontime::{Direction, Handler, Interest, Reactor, TimerId, Token};
//!
//! struct Log {
//!     start: Instant,
//!     timer: Option<(&'static str, Duration)>,
//!     timed_out: Option<Duration>,
//! }
//!
//! impl Handler for Log {
//!     type State = TcpStream;
//!     type Timer = &'static str;
//!     type Message = ();
//!
//!     fn timer(&mut self, _: &mut Reactor<Log>, _: TimerId, name: &mut &'static str) {
//!         self.timer = Some((*name, self.start.elapsed()));
//!     }
//!
//!     fn timed_out(
//!         &mut self,
//!         reactor: &mut Reactor<Log>,
//!         _: Token,
//!         _: &mut TcpStream,
//!         _: Direction,
//!     ) {
//!         self.timed_out = Some(self.start.elapsed());
//!         reactor.stop();
//!     }
//! }
//!
//! # fn main() -> io::Result<()> {
//! let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
//! let _client = std::net::TcpStream::connect(listener.local_addr()?)?;
//! let server = loop {
//!     match listener.accept() {
//!         Ok((stream, _)) => break stream,
//!         Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
//!         Err(e) => return Err(e),
//!     }
//! };
//!
//! let mut reactor = Reactor::new()?;
//! let token = reactor.register(server, Interest::READABLE)?;
//! let mut log = Log { start: Instant::now(), timer: None, timed_out: None };
//! reactor.timer_after(Duration::from_millis(10), "ten");
//! reactor.set_timeout(token, Direction::Read, Duration::from_millis(50))?;
//! reactor.run(&mut log)?;
//!
//! let (name, elapsed) = log.timer.unwrap();
//! assert!(name == "ten" && elapsed >= Duration::from_millis(10));
//! assert!(log.timed_out.unwrap() >= Duration::from_millis(50));
//! assert!(reactor.deregister(token)?.is_some(), "the stream comes back");
//! # Ok(())
//! # }
//! ```

pub use ontime_core::*;

pub use ontime_sync as sync;

/// The README's examples, compiled as doctests so they cannot drift.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
