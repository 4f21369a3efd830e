//! A single-threaded event loop on [mio] with a hierarchical timer wheel and
//! deadlines on I/O.
//!
//! A [`Reactor`] owns one `mio::Poll`, a slab of registrations, a timer
//! [`Wheel`](timer::Wheel) and a waker. A program registers non-blocking
//! sources (the sockets in [`net`], or any [`Source`]) each with a state of
//! its own, then turns the reactor; a [`Handler`] is told of readiness (with
//! the registration's state), of I/O deadlines that passed, of timers that
//! fired (with the timer's value), and of messages from other threads
//! ([`Remote`]).
//!
//! Timeout mode lives here: a non-blocking descriptor plus a deadline in the
//! wheel. [`Reactor::set_deadline`] bounds how long a source may take to
//! become ready in one direction; readiness disarms the deadline, expiry
//! calls [`Handler::timed_out`].
//!
//! # Examples
//!
//! An echo server that closes connections idle for more than five seconds.
//! It keeps the reactor's rules: it reads and writes until `WouldBlock`,
//! keeps what the peer is not ready to take, and takes an accept error other
//! than `WouldBlock` as a reason to try again later, since the listener
//! reports no new edge for connections already queued.
//!
//! ```no_run
//! use std::io::{self, Read, Write};
//! use std::time::Duration;
//!
//! use ontime_core::net::{TcpListener, TcpStream};
//! use ontime_core::{AsSource, Direction, Handler, Interest, Reactor, Ready, Source, Token};
//!
//! const IDLE: Duration = Duration::from_secs(5);
//!
//! enum Entry {
//!     Listener(TcpListener),
//!     Conn { stream: TcpStream, unsent: Vec<u8> },
//! }
//!
//! impl AsSource for Entry {
//!     fn source(&mut self) -> &mut dyn Source {
//!         match self {
//!             Entry::Listener(listener) => listener,
//!             Entry::Conn { stream, .. } => stream,
//!         }
//!     }
//! }
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     type State = Entry;
//!     type Timer = Token; // a listener to retry
//!     type Message = ();
//!
//!     fn ready(&mut self, reactor: &mut Reactor<Echo>, token: Token, entry: &mut Entry, _: Ready) {
//!         match entry {
//!             Entry::Listener(listener) => accept(reactor, token, listener),
//!             Entry::Conn { stream, unsent } => {
//!                 if echo(stream, unsent).is_err() {
//!                     let _ = reactor.deregister(token); // end of file or error
//!                 } else {
//!                     // About to wait again: bound the wait.
//!                     let _ = reactor.set_timeout(token, Direction::Read, IDLE);
//!                 }
//!             }
//!         }
//!     }
//!
//!     fn timed_out(&mut self, reactor: &mut Reactor<Echo>, token: Token, _: &mut Entry, _: Direction) {
//!         let _ = reactor.deregister(token);
//!     }
//!
//!     fn timer(&mut self, reactor: &mut Reactor<Echo>, _: ontime_core::TimerId, listener: &mut Token) {
//!         reactor.requeue(*listener, Ready::READABLE);
//!     }
//! }
//!
//! fn accept(reactor: &mut Reactor<Echo>, token: Token, listener: &mut TcpListener) {
//!     loop {
//!         match listener.accept() {
//!             Ok((stream, _)) => {
//!                 let conn = Entry::Conn { stream, unsent: Vec::new() };
//!                 let Ok(conn) = reactor.register(conn, Interest::READABLE | Interest::WRITABLE) else {
//!                     continue;
//!                 };
//!                 let _ = reactor.set_timeout(conn, Direction::Read, IDLE);
//!             }
//!             Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
//!             Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
//!             Err(_) => {
//!                 // Out of descriptors, say: no edge comes for the queued
//!                 // connections, so look again soon.
//!                 reactor.timer_after(Duration::from_millis(50), token);
//!                 return;
//!             }
//!         }
//!     }
//! }
//!
//! /// Echoes until the stream would block; `Err` to close it.
//! fn echo(stream: &mut TcpStream, unsent: &mut Vec<u8>) -> io::Result<()> {
//!     let mut buf = [0; 4096];
//!     loop {
//!         while !unsent.is_empty() {
//!             match stream.write(unsent) {
//!                 Ok(n) => drop(unsent.drain(..n)),
//!                 Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
//!                 Err(e) => return Err(e),
//!             }
//!         }
//!         match stream.read(&mut buf) {
//!             Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
//!             Ok(n) => unsent.extend_from_slice(&buf[..n]),
//!             Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
//!             Err(e) => return Err(e),
//!         }
//!     }
//! }
//!
//! fn main() -> io::Result<()> {
//!     let mut reactor = Reactor::new()?;
//!     let listener = TcpListener::bind("127.0.0.1:7000".parse().unwrap())?;
//!     reactor.register(Entry::Listener(listener), Interest::READABLE)?;
//!     reactor.run(&mut Echo)
//! }
//! ```
//!
//! # Implementation
//!
//! One thread owns the reactor; nothing on the dispatch path takes a lock.
//! Registrations and their states live in a slab indexed by token; a state
//! is lent to the handler for each call about it. Timers and I/O deadlines
//! live in a hierarchical hashed wheel (Varghese & Lauck) of 6 levels of 64
//! slots with occupied bitmaps, counting 1 ms ticks by default: insert,
//! cancel and reset are O(1), the next expiry is found with a few bit scans,
//! and deadlines round up to a tick so nothing fires early. The poll timeout
//! comes from the wheel; a deadline that has already passed makes it zero.
//! Other threads reach the loop through a [`Remote`]: a queue plus the mio
//! waker, drained a bounded number of messages per turn.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod handler;
mod reactor;
mod ready;
mod remote;
mod sync;
pub mod timer;
mod timers;

pub mod serve;

pub use crate::handler::{AsSource, Handler};
pub use crate::reactor::{Builder, Reactor};
pub use crate::ready::{Direction, Ready};
pub use crate::remote::{Remote, SendError};
pub use crate::timers::TimerId;

pub use mio::event::Source;
pub use mio::{Interest, Token};

/// Non-blocking sockets to register with a [`Reactor`] (mio's).
pub mod net {
    pub use mio::net::*;
}

/// Registering raw file descriptors (pipes, and sockets made elsewhere).
#[cfg(unix)]
pub mod unix {
    use std::io;
    use std::os::fd::RawFd;

    use mio::{Interest, Registry, Token};

    pub use mio::unix::{pipe, SourceFd};

    /// A raw file descriptor as a registration's state (or part of one):
    /// an owned [`SourceFd`].
    ///
    /// It does not own the descriptor: whoever does must keep it open until
    /// the registration is gone, as for any source.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::fd::AsRawFd;
    /// use ontime_core::unix::FdSource;
    /// use ontime_core::{Handler, Interest, Reactor};
    ///
    /// struct Fds;
    /// impl Handler for Fds {
    ///     type State = FdSource;
    ///     type Timer = ();
    ///     type Message = ();
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// socket.set_nonblocking(true)?;
    /// let mut reactor: Reactor<Fds> = Reactor::new()?;
    /// let token = reactor.register(FdSource(socket.as_raw_fd()), Interest::READABLE)?;
    /// reactor.deregister(token)?;
    /// # Ok(())
    /// # }
    /// ```
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct FdSource(pub RawFd);

    impl crate::Source for FdSource {
        fn register(
            &mut self,
            registry: &Registry,
            token: Token,
            interests: Interest,
        ) -> io::Result<()> {
            SourceFd(&self.0).register(registry, token, interests)
        }

        fn reregister(
            &mut self,
            registry: &Registry,
            token: Token,
            interests: Interest,
        ) -> io::Result<()> {
            SourceFd(&self.0).reregister(registry, token, interests)
        }

        fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
            SourceFd(&self.0).deregister(registry)
        }
    }
}
