//! A single-threaded event loop on [mio] with a hierarchical timer wheel and
//! deadlines on I/O.
//!
//! A [`Reactor`] owns one `mio::Poll`, a slab of registrations, a timer
//! [`Wheel`](timer::Wheel) and a waker. A program registers non-blocking
//! sources (the sockets in [`net`], or any [`Source`]), then turns the
//! reactor; a [`Handler`] is told of readiness, of I/O deadlines that passed,
//! of timers that fired, and of messages from other threads ([`Remote`]).
//!
//! Timeout mode lives here: a non-blocking descriptor plus a deadline in the
//! wheel. [`Reactor::set_deadline`] bounds how long a source may take to
//! become ready in one direction; readiness disarms the deadline, expiry
//! calls [`Handler::timed_out`].
//!
//! # Examples
//!
//! An echo server that closes connections idle for more than five seconds:
//!
//! ```no_run
//! use std::collections::HashMap;
//! use std::io::{self, Read, Write};
//! use std::time::Duration;
//!
//! use ontime_core::net::{TcpListener, TcpStream};
//! use ontime_core::{Direction, Handler, Interest, Reactor, Ready, Token};
//!
//! const IDLE: Duration = Duration::from_secs(5);
//!
//! struct Echo {
//!     listener: TcpListener,
//!     listener_token: Token,
//!     conns: HashMap<Token, TcpStream>,
//! }
//!
//! impl Handler for Echo {
//!     fn ready(&mut self, reactor: &mut Reactor, token: Token, _: Ready) {
//!         if token == self.listener_token {
//!             while let Ok((mut stream, _)) = self.listener.accept() {
//!                 let token = reactor.register(&mut stream, Interest::READABLE).unwrap();
//!                 reactor.set_timeout(token, Direction::Read, IDLE).unwrap();
//!                 self.conns.insert(token, stream);
//!             }
//!             return;
//!         }
//!         let stream = self.conns.get_mut(&token).unwrap();
//!         let mut buf = [0; 4096];
//!         loop {
//!             match stream.read(&mut buf) {
//!                 Ok(0) => break,
//!                 Ok(n) => {
//!                     let _ = stream.write_all(&buf[..n]);
//!                 }
//!                 Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
//!                     // Waiting again: bound the wait.
//!                     reactor.set_timeout(token, Direction::Read, IDLE).unwrap();
//!                     return;
//!                 }
//!                 Err(_) => break,
//!             }
//!         }
//!         self.close(reactor, token);
//!     }
//!
//!     fn timed_out(&mut self, reactor: &mut Reactor, token: Token, _: Direction) {
//!         self.close(reactor, token);
//!     }
//! }
//!
//! impl Echo {
//!     fn close(&mut self, reactor: &mut Reactor, token: Token) {
//!         if let Some(mut stream) = self.conns.remove(&token) {
//!             let _ = reactor.deregister(&mut stream, token);
//!         }
//!     }
//! }
//!
//! fn main() -> io::Result<()> {
//!     let mut reactor = Reactor::new()?;
//!     let mut listener = TcpListener::bind("127.0.0.1:7000".parse().unwrap())?;
//!     let listener_token = reactor.register(&mut listener, Interest::READABLE)?;
//!     let mut echo = Echo { listener, listener_token, conns: HashMap::new() };
//!     reactor.run(&mut echo)
//! }
//! ```
//!
//! # Implementation
//!
//! One thread owns the reactor; nothing on the dispatch path takes a lock.
//! Registrations live in a slab indexed by token. Timers and I/O deadlines
//! live in a hierarchical hashed wheel (Varghese & Lauck) of 6 levels of 64
//! slots with occupied bitmaps, counting 1 ms ticks by default: insert,
//! cancel and reset are O(1), the next expiry is found with a few bit scans,
//! and deadlines round up to a tick so nothing fires early. The poll timeout
//! comes from the wheel; a deadline that has already passed makes it zero.
//! Other threads reach the loop through a [`Remote`]: a queue plus the mio
//! waker, drained a bounded number of messages per turn.

#![warn(missing_docs)]

mod reactor;
mod ready;
mod remote;
pub mod timer;

pub use crate::reactor::{Builder, Handler, Reactor, TimerId};
pub use crate::ready::{Direction, Ready};
pub use crate::remote::{Remote, SendError};

pub use mio::event::Source;
pub use mio::{Interest, Token};

/// Non-blocking sockets to register with a [`Reactor`] (mio's).
pub mod net {
    pub use mio::net::*;
}

/// Registering raw file descriptors (pipes, and sockets made elsewhere).
#[cfg(unix)]
pub mod unix {
    pub use mio::unix::{pipe, SourceFd};
}
