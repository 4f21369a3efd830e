//! `Handler`, what the embedding program implements, and `AsSource`, how a
//! registration's state leads to its source.

use mio::event::Source;
use mio::Token;

use crate::reactor::Reactor;
use crate::ready::{Direction, Ready};
use crate::timers::TimerId;

/// What the embedding program is told. Implement the methods for the events
/// you use; every one defaults to doing nothing.
///
/// The three associated types are what the reactor carries for the program,
/// so that it needs no tables of its own:
///
/// - [`State`](Handler::State): one per registration. The reactor keeps it
///   with the registration, hands it to [`ready`](Handler::ready) and
///   [`timed_out`](Handler::timed_out) with each event, and gives it back
///   from [`Reactor::deregister`]. It usually owns the source itself (a
///   connection struct holding its `TcpStream`, or an enum of listener and
///   connection), which is why [`Reactor::register`] asks for
///   [`AsSource`].
/// - [`Timer`](Handler::Timer): one value per timer, handed to
///   [`timer`](Handler::timer) when it fires, so that the handler knows what
///   the timer is for without comparing ids.
/// - [`Message`](Handler::Message): what other threads send through a
///   [`Remote`](crate::Remote).
///
/// Every method gets the reactor, so a handler can register and deregister
/// sources, reach other registrations' state ([`Reactor::state_mut`]), move
/// deadlines and start timers while it handles an event. The state of the
/// registration an event is for is lent to the method for its duration, so
/// [`Reactor::state_mut`] gives `None` for that one token meanwhile.
///
/// # Fairness
///
/// Readiness is edge-triggered: a source reported readable is not reported
/// again until new data arrives. A handler that wants to cap the work it does
/// for one source per turn (say, 16 requests) and let others run calls
/// [`Reactor::requeue`] with the readiness it has not finished; it is then
/// called again for that source on the next turn, after every other source
/// that was ready.
///
/// # When a stream is drained
///
/// After an edge, read until the socket is drained: until `WouldBlock`, or
/// (one system call fewer per message) until a read returns less than asked
/// for, since on epoll and kqueue anything that arrives after that read
/// raises a new edge. One exception: the read that takes the last bytes may
/// also take the peer's FIN, after which nothing arrives and no edge comes;
/// so when the event reports [`READ_CLOSED`](Ready::READ_CLOSED) or
/// [`ERROR`](Ready::ERROR), read on until `0` or `WouldBlock`. The reactor
/// keeps those two flags in every later event of the registration, requeued
/// ones included, so the event at hand always tells.
///
/// # Examples
///
/// A handler with a state per connection and a value per timer:
///
/// ```
/// use std::time::Duration;
/// use ontime_core::net::TcpStream;
/// use ontime_core::{Handler, Reactor, Ready, TimerId, Token};
///
/// struct Conn {
///     stream: TcpStream,
///     requests: u64,
/// }
///
/// enum Tick {
///     Stats,
///     Shutdown,
/// }
///
/// struct Server;
///
/// impl Handler for Server {
///     type State = Conn;
///     type Timer = Tick;
///     type Message = ();
///
///     fn ready(&mut self, _: &mut Reactor<Self>, _: Token, conn: &mut Conn, _: Ready) {
///         conn.requests += 1; // ... and read from conn.stream
///     }
///
///     fn timer(&mut self, reactor: &mut Reactor<Self>, _: TimerId, tick: &mut Tick) {
///         match tick {
///             Tick::Stats => println!("{} connections", reactor.sources()),
///             Tick::Shutdown => reactor.stop(),
///         }
///     }
/// }
///
/// # fn main() -> std::io::Result<()> {
/// let mut reactor = Reactor::new()?;
/// reactor.interval(Duration::from_millis(5), Tick::Stats);
/// reactor.timer_after(Duration::from_millis(20), Tick::Shutdown);
/// reactor.run(&mut Server)?;
/// # Ok(())
/// # }
/// ```
pub trait Handler: Sized {
    /// What each registration carries: see the trait's docs.
    type State;
    /// What each timer carries.
    type Timer;
    /// What other threads send.
    type Message;

    /// A registered source is ready. `state` is the registration's.
    fn ready(
        &mut self,
        reactor: &mut Reactor<Self>,
        token: Token,
        state: &mut Self::State,
        ready: Ready,
    ) {
        let _ = (reactor, token, state, ready);
    }

    /// An I/O deadline set with [`Reactor::set_deadline`] passed before the
    /// source became ready in `direction`. The deadline is disarmed.
    fn timed_out(
        &mut self,
        reactor: &mut Reactor<Self>,
        token: Token,
        state: &mut Self::State,
        direction: Direction,
    ) {
        let _ = (reactor, token, state, direction);
    }

    /// A timer started with [`Reactor::timer_at`], [`Reactor::timer_after`]
    /// or [`Reactor::interval`] fired. A one-shot timer's value is dropped
    /// when this returns; an interval keeps its value, changes included, for
    /// its next firing.
    fn timer(&mut self, reactor: &mut Reactor<Self>, timer: TimerId, value: &mut Self::Timer) {
        let _ = (reactor, timer, value);
    }

    /// A message sent through a [`Remote`](crate::Remote).
    fn message(&mut self, reactor: &mut Reactor<Self>, message: Self::Message) {
        let _ = (reactor, message);
    }

    /// [`Remote::wake`](crate::Remote::wake) was called (once per turn,
    /// however many calls).
    fn woken(&mut self, reactor: &mut Reactor<Self>) {
        let _ = reactor;
    }

    /// The turn is over: its I/O events, requeued readiness, messages and
    /// timers have all been handled, and the reactor is about to poll
    /// again. The place for work batched over a turn: a server that
    /// answers every connection read in this turn with one write each,
    /// after all of them were read (Redis's `beforeSleep`), sends its
    /// replies in bursts that its clients then read in fewer wake-ups.
    fn turn_end(&mut self, reactor: &mut Reactor<Self>) {
        let _ = reactor;
    }
}

/// How the reactor reaches the source in a registration's state, to
/// register it, change its interest and deregister it.
///
/// Implemented for the sockets in [`net`](crate::net), for
/// [`FdSource`](crate::unix::FdSource) and the pipe ends on Unix, and for
/// `Box<T>`. A state that holds its source implements it in one line:
///
/// ```
/// use ontime_core::net::TcpStream;
/// use ontime_core::{AsSource, Source};
///
/// struct Conn {
///     stream: TcpStream,
///     requests: u64,
/// }
///
/// impl AsSource for Conn {
///     fn source(&mut self) -> &mut dyn Source {
///         &mut self.stream
///     }
/// }
/// ```
pub trait AsSource {
    /// The source to register.
    fn source(&mut self) -> &mut dyn Source;
}

impl<T: AsSource + ?Sized> AsSource for Box<T> {
    fn source(&mut self) -> &mut dyn Source {
        (**self).source()
    }
}

macro_rules! as_source {
    ($($(#[$attr:meta])* $ty:ty),* $(,)?) => {$(
        $(#[$attr])*
        impl AsSource for $ty {
            fn source(&mut self) -> &mut dyn Source {
                self
            }
        }
    )*};
}

as_source!(
    mio::net::TcpListener,
    mio::net::TcpStream,
    mio::net::UdpSocket,
    #[cfg(unix)]
    mio::net::UnixListener,
    #[cfg(unix)]
    mio::net::UnixStream,
    #[cfg(unix)]
    mio::net::UnixDatagram,
    #[cfg(unix)]
    mio::unix::pipe::Receiver,
    #[cfg(unix)]
    mio::unix::pipe::Sender,
    #[cfg(unix)]
    crate::unix::FdSource,
);
