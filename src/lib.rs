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
//! A timer, and a read deadline on a connection nobody writes to:
//!
//! ```
//! use std::io;
//! use std::time::{Duration, Instant};
//!
//! use ontime::net::TcpListener;
//! use ontime::{Direction, Handler, Interest, Reactor, Ready, TimerId, Token};
//!
//! struct Log {
//!     start: Instant,
//!     timer: Option<Duration>,
//!     timed_out: Option<Duration>,
//! }
//!
//! impl Handler for Log {
//!     fn ready(&mut self, _: &mut Reactor, _: Token, _: Ready) {}
//!
//!     fn timer(&mut self, _: &mut Reactor, _: TimerId) {
//!         self.timer = Some(self.start.elapsed());
//!     }
//!
//!     fn timed_out(&mut self, reactor: &mut Reactor, _: Token, _: Direction) {
//!         self.timed_out = Some(self.start.elapsed());
//!         reactor.stop();
//!     }
//! }
//!
//! # fn main() -> io::Result<()> {
//! let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
//! let _client = std::net::TcpStream::connect(listener.local_addr()?)?;
//! let mut server = loop {
//!     match listener.accept() {
//!         Ok((stream, _)) => break stream,
//!         Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
//!         Err(e) => return Err(e),
//!     }
//! };
//!
//! let mut reactor = Reactor::new()?;
//! let token = reactor.register(&mut server, Interest::READABLE)?;
//! let mut log = Log { start: Instant::now(), timer: None, timed_out: None };
//! reactor.timer_after(Duration::from_millis(10));
//! reactor.set_timeout(token, Direction::Read, Duration::from_millis(50))?;
//! reactor.run(&mut log)?;
//!
//! assert!(log.timer.unwrap() >= Duration::from_millis(10));
//! assert!(log.timed_out.unwrap() >= Duration::from_millis(50));
//! # Ok(())
//! # }
//! ```

pub use ontime_core::*;

pub use ontime_sync as sync;

/// The README's examples, compiled as doctests so they cannot drift.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
