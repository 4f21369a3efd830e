//! The reactor: one `mio::Poll`, a slab of registrations with their states,
//! a timer wheel and a waker, turned by one thread.
//!
//! A turn is: compute the poll timeout from the wheel (zero if anything is
//! already due), poll, dispatch I/O events (readiness disarms the matching
//! I/O deadline), dispatch requeued readiness, take what remotes sent, then
//! fire every timer that is due. I/O goes before timers so that data
//! arriving in the same turn as its deadline wins.
//!
//! A registration's state is lent to the handler for the duration of each
//! call about it: taken out of its slab entry, then put back. Registration
//! changes the handler asks for meanwhile (a new interest, deregistering)
//! need the source inside that state, so they are carried out as the call
//! returns, before anything else is dispatched.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::handler::{AsSource, Handler};
use crate::ready::{Direction, Ready};
use crate::remote::{Remote, Shared};
use crate::timer::{Clock, TimerKey, Wheel};
use crate::timers::{Interval, TimerId, Timers, UserTimer};

/// The token of the reactor's own waker; never handed out.
const WAKER: Token = Token(usize::MAX);

/// Default length of one wheel tick.
const DEFAULT_TICK: Duration = Duration::from_millis(1);
/// Default capacity of the `Events` buffer.
const DEFAULT_EVENTS: usize = 1024;
/// Default number of messages handled per turn.
const DEFAULT_MESSAGES_PER_TURN: usize = 256;

/// The readiness flags a registration keeps once seen: after them a short
/// read no longer proves a stream drained (see [`Handler`]).
const STICKY: Ready = Ready::READ_CLOSED.union(Ready::ERROR);

/// What the wheel holds for each resident timer.
///
/// Eight bytes, so that a wheel node is 32 (see `timer::wheel`): hence a
/// `u32` token, which [`Reactor::register`] guarantees is enough, and a
/// `u32` index into the user timers, whose values live there.
#[derive(Debug)]
enum Expiry {
    /// The I/O deadline of a registration, by `Token.0`.
    Io { token: u32, direction: Direction },
    /// A user timer, by its index in `Reactor::timers`.
    Timer(u32),
}

const _: () = assert!(std::mem::size_of::<Expiry>() == 8);

/// One registered source and its state.
#[derive(Debug)]
struct Registration<S> {
    /// `None` while lent to the handler.
    state: Option<S>,
    /// The armed read and write deadlines, by [`Direction::index`].
    ///
    /// Invariant: a key here names a live wheel entry whose value is
    /// `Expiry::Io` for this token and direction.
    deadlines: [Option<TimerKey>; 2],
    /// The [`STICKY`] flags seen so far; added to every later event.
    sticky: Ready,
    /// An interest asked for while the state was lent, to apply when it
    /// comes back.
    interest: Option<Interest>,
    /// Deregistered during the current dispatch batch; the slot is freed when
    /// the batch ends, so a stale event in the batch cannot reach a new owner.
    /// If the state was lent meanwhile, its source is deregistered from the
    /// OS when it comes back.
    released: bool,
}

/// Configures a [`Reactor`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ontime_core::{Builder, Handler, Reactor};
///
/// struct Idle;
/// impl Handler for Idle {
///     type State = ();
///     type Timer = ();
///     type Message = ();
/// }
///
/// # fn main() -> std::io::Result<()> {
/// let reactor: Reactor<Idle> = Builder::new()
///     .tick(Duration::from_millis(1))
///     .events_capacity(256)
///     .messages_per_turn(64)
///     .build()?;
/// # drop(reactor);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    tick: Duration,
    events: usize,
    messages_per_turn: usize,
    waker: bool,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            tick: DEFAULT_TICK,
            events: DEFAULT_EVENTS,
            messages_per_turn: DEFAULT_MESSAGES_PER_TURN,
            waker: true,
        }
    }
}

impl Builder {
    /// The default settings.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Length of one tick of the timer wheel (default 1 ms). Deadlines are
    /// rounded up to a tick: a timer fires no earlier than asked and, on an
    /// idle machine, less than a tick plus the scheduler's wake-up latency
    /// late. [`build`](Builder::build) refuses a zero tick.
    pub fn tick(mut self, tick: Duration) -> Builder {
        self.tick = tick;
        self
    }

    /// How many I/O events one poll can return (default 1024; at least 1).
    pub fn events_capacity(mut self, capacity: usize) -> Builder {
        self.events = capacity.max(1);
        self
    }

    /// How many [`Remote`] messages one turn handles at most (default 256;
    /// at least 1), so that one producer cannot starve I/O.
    pub fn messages_per_turn(mut self, n: usize) -> Builder {
        self.messages_per_turn = n.max(1);
        self
    }

    /// Whether the reactor has a waker (default `true`): on Linux an
    /// eventfd, one descriptor besides the poller's own.
    ///
    /// Without one, [`Remote::send`] queues as [`Remote::post`] does, and
    /// [`Remote::wake`] and [`Remote::stop`] are recorded but do not
    /// interrupt a poll: a reactor blocked in a turn sees them when that
    /// turn returns for another reason, and a turn that starts with
    /// messages queued does not block. For a reactor that only its own
    /// thread needs to reach, at one descriptor per reactor.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ontime_core::{Builder, Handler, Reactor};
    ///
    /// struct Count(usize);
    /// impl Handler for Count {
    ///     type State = ();
    ///     type Timer = ();
    ///     type Message = ();
    ///     fn message(&mut self, _: &mut Reactor<Count>, _: ()) {
    ///         self.0 += 1;
    ///     }
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor = Builder::new().waker(false).build::<Count>()?;
    /// reactor.remote().send(()).unwrap();
    /// let mut count = Count(0);
    /// // The queued message makes the wait zero; it is handled in this turn.
    /// reactor.turn(&mut count, Some(Duration::from_secs(10)))?;
    /// assert_eq!(count.0, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn waker(mut self, waker: bool) -> Builder {
        self.waker = waker;
        self
    }

    /// Creates the reactor.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if the tick is zero; any error creating the OS poller
    /// or its waker (for example `EMFILE`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::ErrorKind;
    /// use std::time::Duration;
    /// use ontime_core::{Builder, Handler, Reactor};
    ///
    /// struct Idle;
    /// impl Handler for Idle {
    ///     type State = ();
    ///     type Timer = ();
    ///     type Message = ();
    /// }
    ///
    /// let err = Builder::new().tick(Duration::ZERO).build::<Idle>().unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidInput);
    /// ```
    pub fn build<H: Handler>(self) -> io::Result<Reactor<H>> {
        if self.tick.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the tick of a reactor's timer wheel must not be zero",
            ));
        }
        let poll = Poll::new()?;
        let waker = if self.waker {
            Some(mio::Waker::new(poll.registry(), WAKER)?)
        } else {
            None
        };
        let now = Instant::now();
        Ok(Reactor {
            poll,
            events: Some(Events::with_capacity(self.events)),
            registrations: Slab::new(),
            released: Vec::new(),
            dispatching: false,
            source_of: None,
            wheel: Wheel::new(),
            clock: Clock::with_origin(now, self.tick),
            fired: Vec::new(),
            timers: Timers::new(),
            requeued: Vec::new(),
            requeue_batch: Vec::new(),
            inbox: VecDeque::new(),
            shared: Arc::new(Shared::new(waker)),
            messages_per_turn: self.messages_per_turn,
            stopping: false,
        })
    }
}

/// A single-threaded event loop: I/O readiness from mio, I/O deadlines and
/// timers from a hierarchical timer wheel, and messages from other threads,
/// delivered to the [`Handler`] `H` with the state each registration and
/// timer carries.
///
/// # Examples
///
/// A timer and a stop:
///
/// ```
/// use std::time::{Duration, Instant};
/// use ontime_core::{Handler, Reactor, TimerId};
///
/// struct Once(Option<Instant>);
///
/// impl Handler for Once {
///     type State = ();
///     type Timer = ();
///     type Message = ();
///
///     fn timer(&mut self, reactor: &mut Reactor<Once>, _: TimerId, _: &mut ()) {
///         self.0 = Some(Instant::now());
///         reactor.stop();
///     }
/// }
///
/// # fn main() -> std::io::Result<()> {
/// let mut reactor = Reactor::new()?;
/// let start = Instant::now();
/// reactor.timer_after(Duration::from_millis(20), ());
/// let mut handler = Once(None);
/// reactor.run(&mut handler)?;
/// assert!(handler.0.unwrap() - start >= Duration::from_millis(20));
/// # Ok(())
/// # }
/// ```
pub struct Reactor<H: Handler> {
    poll: Poll,
    /// `None` only while a turn dispatches (a nested turn is refused).
    events: Option<Events>,
    registrations: Slab<Registration<H::State>>,
    /// Tokens deregistered during the current batch, freed when it ends.
    released: Vec<usize>,
    dispatching: bool,
    /// How to reach the source in a state: set by the first `register`,
    /// which is the only place that knows `H::State: AsSource`. Used for
    /// the registration changes made while a state was lent.
    source_of: Option<fn(&mut H::State) -> &mut dyn Source>,
    wheel: Wheel<Expiry>,
    clock: Clock,
    /// Reused buffer for the timers one advance fires.
    fired: Vec<(TimerKey, Expiry)>,
    timers: Timers<H::Timer>,
    /// Readiness to deliver again on the next turn.
    requeued: Vec<(Token, Ready)>,
    /// Reused buffer the requeued readiness is swapped into while dispatching.
    requeue_batch: Vec<(Token, Ready)>,
    /// Reused buffer for the messages one turn handles.
    inbox: VecDeque<H::Message>,
    shared: Arc<Shared<H::Message>>,
    messages_per_turn: usize,
    /// A stop asked for with [`Reactor::stop`] or taken from a remote, not
    /// yet consumed by [`Reactor::run`].
    stopping: bool,
}

impl<H: Handler> Reactor<H> {
    /// A reactor with the default settings (see [`Builder`]).
    ///
    /// # Errors
    ///
    /// Any error creating the OS poller or its waker (for example `EMFILE`).
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::{Handler, Reactor};
    ///
    /// struct Idle;
    /// impl Handler for Idle {
    ///     type State = ();
    ///     type Timer = ();
    ///     type Message = ();
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let reactor: Reactor<Idle> = Reactor::new()?;
    /// assert_eq!(reactor.sources(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn new() -> io::Result<Reactor<H>> {
        Builder::default().build()
    }

    /// A handle for other threads: see [`Remote`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::{Handler, Reactor};
    ///
    /// struct Idle;
    /// impl Handler for Idle {
    ///     type State = ();
    ///     type Timer = ();
    ///     type Message = String;
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let reactor: Reactor<Idle> = Reactor::new()?;
    /// let remote = reactor.remote();
    /// std::thread::spawn(move || remote.send("hi".to_string()).unwrap()).join().unwrap();
    /// assert_eq!(reactor.remote().pending(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn remote(&self) -> Remote<H::Message> {
        Remote::new(Arc::clone(&self.shared))
    }

    /// Number of registered sources.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ontime_core::{Handler, Reactor};
    /// # struct Idle;
    /// # impl Handler for Idle {
    /// #     type State = ontime_core::net::UdpSocket;
    /// #     type Timer = ();
    /// #     type Message = ();
    /// # }
    /// # fn main() -> std::io::Result<()> {
    /// use ontime_core::{net::UdpSocket, Interest};
    ///
    /// let mut reactor: Reactor<Idle> = Reactor::new()?;
    /// let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
    /// reactor.register(socket, Interest::READABLE)?;
    /// assert_eq!(reactor.sources(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn sources(&self) -> usize {
        self.registrations.len() - self.released.len()
    }

    /// Number of timers and armed I/O deadlines in the wheel.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ontime_core::{Handler, Reactor};
    /// # struct Idle;
    /// # impl Handler for Idle {
    /// #     type State = ontime_core::net::UdpSocket;
    /// #     type Timer = ();
    /// #     type Message = ();
    /// # }
    /// # fn main() -> std::io::Result<()> {
    /// use std::time::Duration;
    ///
    /// let mut reactor: Reactor<Idle> = Reactor::new()?;
    /// let timer = reactor.timer_after(Duration::from_secs(1), ());
    /// assert_eq!(reactor.resident_timers(), 1);
    /// reactor.cancel_timer(timer);
    /// assert_eq!(reactor.resident_timers(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn resident_timers(&self) -> usize {
        self.wheel.len()
    }

    // ---- Registration -------------------------------------------------

    /// Registers the source in `state` for `interest` and keeps `state`
    /// with the registration; returns its token.
    ///
    /// Events for the source reach [`Handler::ready`] with the state.
    /// Tokens are small integers (slab indices), reused after
    /// [`deregister`](Reactor::deregister); a token released while the
    /// handler runs is not reused before the current batch of events has
    /// been dispatched, so a stale event never reaches the token's next owner.
    ///
    /// # Errors
    ///
    /// Any error from the OS registering the source (the state is dropped);
    /// `Other` past `u32::MAX` registrations.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::net::TcpListener;
    /// use ontime_core::{Handler, Interest, Reactor};
    ///
    /// struct Server;
    /// impl Handler for Server {
    ///     type State = TcpListener;
    ///     type Timer = ();
    ///     type Message = ();
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor: Reactor<Server> = Reactor::new()?;
    /// let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
    /// let token = reactor.register(listener, Interest::READABLE)?;
    /// assert_eq!(reactor.sources(), 1);
    /// let listener = reactor.deregister(token)?.expect("not lent: given back");
    /// assert!(listener.local_addr().is_ok());
    /// assert_eq!(reactor.sources(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn register(&mut self, mut state: H::State, interest: Interest) -> io::Result<Token>
    where
        H::State: AsSource,
    {
        self.source_of = Some(<H::State as AsSource>::source);
        let entry = self.registrations.vacant_entry();
        // Wheel entries name a registration by a `u32`.
        if u32::try_from(entry.key()).is_err() {
            return Err(io::Error::other("more than u32::MAX registrations"));
        }
        let token = Token(entry.key());
        self.poll
            .registry()
            .register(state.source(), token, interest)?;
        entry.insert(Registration {
            state: Some(state),
            deadlines: [None, None],
            sticky: Ready::EMPTY,
            interest: None,
            released: false,
        });
        log::debug!("register {token:?} for {interest:?}");
        Ok(token)
    }

    /// Changes the interest of a registered source.
    ///
    /// Called from a handler method about this same token (whose state is
    /// lent to it), the change is made as that method returns, before any
    /// other event is dispatched; an OS error then is logged and reported
    /// to the handler as [`Ready::ERROR`] on the next turn.
    ///
    /// # Errors
    ///
    /// `NotFound` if `token` is not registered; any error from the OS.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::net::UdpSocket;
    /// use ontime_core::{Handler, Interest, Reactor};
    ///
    /// struct Peer;
    /// impl Handler for Peer {
    ///     type State = UdpSocket;
    ///     type Timer = ();
    ///     type Message = ();
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor: Reactor<Peer> = Reactor::new()?;
    /// let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
    /// let token = reactor.register(socket, Interest::READABLE)?;
    /// reactor.reregister(token, Interest::READABLE | Interest::WRITABLE)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn reregister(&mut self, token: Token, interest: Interest) -> io::Result<()> {
        let registration = live_in(&mut self.registrations, token)?;
        match registration.state.as_mut() {
            Some(state) => {
                let source_of = self.source_of.expect("a registered state has a source");
                self.poll
                    .registry()
                    .reregister(source_of(state), token, interest)
            }
            // Lent: applied when it comes back (see `lend`).
            None => {
                registration.interest = Some(interest);
                Ok(())
            }
        }
    }

    /// Deregisters a source, disarms its deadlines, drops readiness requeued
    /// for it and releases its token; returns its state.
    ///
    /// Called from a handler method about this same token, the state is the
    /// one lent to that method: `Ok(None)` is returned, and the source is
    /// deregistered from the OS and the state dropped as the method returns.
    /// The token is released even if the OS reports an error (the source is
    /// then most likely closed already).
    ///
    /// # Errors
    ///
    /// `NotFound` if `token` is not registered; any error from the OS (the
    /// registration is released all the same, and its state dropped).
    ///
    /// # Examples
    ///
    /// ```
    /// # use ontime_core::{Handler, Reactor};
    /// # struct Idle;
    /// # impl Handler for Idle {
    /// #     type State = ontime_core::net::UdpSocket;
    /// #     type Timer = ();
    /// #     type Message = ();
    /// # }
    /// # fn main() -> std::io::Result<()> {
    /// use std::io::ErrorKind;
    /// use ontime_core::{net::UdpSocket, Interest};
    ///
    /// let mut reactor: Reactor<Idle> = Reactor::new()?;
    /// let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
    /// let token = reactor.register(socket, Interest::READABLE)?;
    /// let socket = reactor.deregister(token)?.unwrap(); // the state comes back
    /// assert!(socket.local_addr().is_ok());
    /// let err = reactor.deregister(token).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::NotFound);
    /// # Ok(())
    /// # }
    /// ```
    pub fn deregister(&mut self, token: Token) -> io::Result<Option<H::State>> {
        let registration = self.live_mut(token)?;
        let state = registration.state.take();
        let result = match state {
            Some(mut state) => {
                let source_of = self.source_of.expect("a registered state has a source");
                self.poll
                    .registry()
                    .deregister(source_of(&mut state))
                    .map(|()| Some(state))
            }
            None => Ok(None),
        };
        self.release(token);
        log::debug!("deregister {token:?}");
        result
    }

    /// Removes a registration without telling the OS, for a source whose
    /// descriptor is already closed: the OS dropped the registration when
    /// the descriptor closed, and [`deregister`](Reactor::deregister)
    /// would reach whatever file now has that descriptor's number, which
    /// may be another source of this very reactor. Returns the state, or
    /// `None` if it is lent to the handler method running now.
    ///
    /// A source whose open file outlives the descriptor (a `dup` of it, a
    /// forked child) stays in the OS's interest list; its events then carry
    /// the forgotten token, which this reactor ignores, or a later
    /// registration's, which gets spurious readiness. Deregister instead
    /// whenever the descriptor is still open.
    ///
    /// # Errors
    ///
    /// `NotFound` if `token` is not registered.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::unix::{pipe, FdSource};
    /// use ontime_core::{Handler, Interest, Reactor};
    /// use std::os::fd::AsRawFd;
    ///
    /// struct Fd;
    /// impl Handler for Fd {
    ///     type State = FdSource;
    ///     type Timer = ();
    ///     type Message = ();
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor: Reactor<Fd> = Reactor::new()?;
    /// let (sender, receiver) = pipe::new()?;
    /// let token = reactor.register(FdSource(receiver.as_raw_fd()), Interest::READABLE)?;
    /// drop((sender, receiver)); // closed: the OS forgot it already
    /// assert!(reactor.forget(token)?.is_some());
    /// assert_eq!(reactor.sources(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn forget(&mut self, token: Token) -> io::Result<Option<H::State>> {
        let registration = self.live_mut(token)?;
        let state = registration.state.take();
        self.release(token);
        log::debug!("forget {token:?}");
        Ok(state)
    }

    /// The state of a registration, or `None` if `token` is not registered
    /// or its state is lent to the handler method running now.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::unix::pipe;
    /// use ontime_core::{Handler, Interest, Reactor};
    ///
    /// struct Pipe;
    /// impl Handler for Pipe {
    ///     type State = pipe::Receiver;
    ///     type Timer = ();
    ///     type Message = ();
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor: Reactor<Pipe> = Reactor::new()?;
    /// let (_sender, receiver) = pipe::new()?;
    /// let token = reactor.register(receiver, Interest::READABLE)?;
    /// assert!(reactor.state(token).is_some());
    /// # Ok(())
    /// # }
    /// ```
    pub fn state(&self, token: Token) -> Option<&H::State> {
        self.live(token).ok()?.state.as_ref()
    }

    /// The state of a registration, mutably; `None` as for
    /// [`state`](Reactor::state). A handler reaches other registrations'
    /// state this way while it handles one (a broadcast to every
    /// subscriber, say).
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::net::UdpSocket;
    /// use ontime_core::{AsSource, Handler, Interest, Reactor, Source};
    ///
    /// struct Peer {
    ///     socket: UdpSocket,
    ///     sent: u64,
    /// }
    /// impl AsSource for Peer {
    ///     fn source(&mut self) -> &mut dyn Source {
    ///         &mut self.socket
    ///     }
    /// }
    /// struct Peers;
    /// impl Handler for Peers {
    ///     type State = Peer;
    ///     type Timer = ();
    ///     type Message = ();
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor: Reactor<Peers> = Reactor::new()?;
    /// let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
    /// let token = reactor.register(Peer { socket, sent: 0 }, Interest::READABLE)?;
    /// reactor.state_mut(token).unwrap().sent += 1;
    /// assert_eq!(reactor.state(token).unwrap().sent, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn state_mut(&mut self, token: Token) -> Option<&mut H::State> {
        self.live_mut(token).ok()?.state.as_mut()
    }

    /// Lends the state of `token` to `call` together with the reactor, as a
    /// handler method is lent the state of the registration its event is
    /// for; `None` if `token` is not registered or its state is lent
    /// already.
    ///
    /// This is how code that runs outside an event about `token` (a timer,
    /// a message, an event about another registration) works on that
    /// registration's state while it still uses the reactor: to start
    /// timers, to move deadlines, to deregister it. As with a handler
    /// method, [`reregister`](Reactor::reregister) and
    /// [`deregister`](Reactor::deregister) of `token` itself are carried out
    /// as `call` returns (and `deregister` then gives back no state: it is
    /// dropped when `call` returns).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ontime_core::net::UdpSocket;
    /// use ontime_core::{Handler, Interest, Reactor};
    ///
    /// struct Peers;
    /// impl Handler for Peers {
    ///     type State = UdpSocket;
    ///     type Timer = ();
    ///     type Message = ();
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor: Reactor<Peers> = Reactor::new()?;
    /// let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
    /// let token = reactor.register(socket, Interest::READABLE)?;
    /// let port = reactor.with_state(token, |reactor, socket| {
    ///     reactor.timer_after(Duration::from_secs(1), ());
    ///     assert!(reactor.state(token).is_none(), "lent to this closure");
    ///     socket.local_addr().map(|addr| addr.port())
    /// });
    /// assert!(matches!(port, Some(Ok(p)) if p != 0));
    /// assert_eq!(reactor.resident_timers(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_state<R>(
        &mut self,
        token: Token,
        call: impl FnOnce(&mut Reactor<H>, &mut H::State) -> R,
    ) -> Option<R> {
        self.lend(token, call)
    }

    /// The tokens of every live registration, in no particular order (a
    /// server closing every connection, say). The list is a copy: the
    /// registrations may change while it is walked.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::net::UdpSocket;
    /// use ontime_core::{Handler, Interest, Reactor};
    ///
    /// struct Peers;
    /// impl Handler for Peers {
    ///     type State = UdpSocket;
    ///     type Timer = ();
    ///     type Message = ();
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor: Reactor<Peers> = Reactor::new()?;
    /// let a = reactor.register(UdpSocket::bind("127.0.0.1:0".parse().unwrap())?, Interest::READABLE)?;
    /// let b = reactor.register(UdpSocket::bind("127.0.0.1:0".parse().unwrap())?, Interest::READABLE)?;
    /// let mut tokens = reactor.tokens();
    /// tokens.sort();
    /// assert_eq!(tokens, vec![a, b]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn tokens(&self) -> Vec<Token> {
        self.registrations
            .iter()
            .filter(|(_, registration)| !registration.released)
            .map(|(index, _)| Token(index))
            .collect()
    }

    fn live(&self, token: Token) -> io::Result<&Registration<H::State>> {
        match self.registrations.get(token.0) {
            Some(registration) if !registration.released => Ok(registration),
            _ => Err(not_registered(token)),
        }
    }

    fn live_mut(&mut self, token: Token) -> io::Result<&mut Registration<H::State>> {
        live_in(&mut self.registrations, token)
    }

    fn release(&mut self, token: Token) {
        let registration = &mut self.registrations[token.0];
        for key in registration.deadlines.iter_mut().filter_map(Option::take) {
            self.wheel.cancel(key);
        }
        // Requeued readiness must not outlive the registration: the token
        // may have a new owner by the next turn.
        self.requeued.retain(|(requeued, _)| *requeued != token);
        if self.dispatching {
            registration.released = true;
            self.released.push(token.0);
        } else {
            self.registrations.remove(token.0);
        }
    }

    /// Lends the state of `token` to `call` and puts it back, carrying out
    /// the registration changes asked for meanwhile. `None` if `call` did
    /// not run (the token is not live, or its state is lent already).
    fn lend<R>(
        &mut self,
        token: Token,
        call: impl FnOnce(&mut Reactor<H>, &mut H::State) -> R,
    ) -> Option<R> {
        let mut state = self
            .registrations
            .get_mut(token.0)
            .filter(|registration| !registration.released)
            .and_then(|registration| registration.state.take())?;
        let result = call(self, &mut state);
        // Still in the slab: a released slot is freed only when the batch
        // ends, and `call` cannot end it.
        let registration = &mut self.registrations[token.0];
        if registration.released {
            if let Some(source_of) = self.source_of {
                if let Err(e) = self.poll.registry().deregister(source_of(&mut state)) {
                    log::debug!("deregister {token:?}: {e}");
                }
            }
            return Some(result);
        }
        if let Some(interest) = registration.interest.take() {
            if let Some(source_of) = self.source_of {
                if let Err(e) =
                    self.poll
                        .registry()
                        .reregister(source_of(&mut state), token, interest)
                {
                    log::warn!("reregister {token:?} for {interest:?}: {e}");
                    self.requeued.push((token, Ready::ERROR));
                }
            }
        }
        registration.state = Some(state);
        Some(result)
    }

    // ---- I/O deadlines ------------------------------------------------

    /// Arms, moves or (with `None`) disarms the deadline of `token` in
    /// `direction`.
    ///
    /// This is timeout mode in the core: a non-blocking source plus a
    /// deadline. Arm it after an operation in that direction returned
    /// `WouldBlock`. If the source becomes ready in that direction first
    /// (readable, read side closed or error, for reads; likewise for writes:
    /// see [`Ready::settles`]), the deadline is disarmed before
    /// [`Handler::ready`] runs. Otherwise [`Handler::timed_out`] runs, no
    /// earlier than `deadline`.
    ///
    /// A deadline that has already passed fires on the next turn, without
    /// waiting for a tick. Arming, moving and disarming are O(1) and do not
    /// allocate once the wheel has grown to the number of resident timers.
    ///
    /// # Errors
    ///
    /// `NotFound` if `token` is not registered.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use ontime_core::net::UdpSocket;
    /// use ontime_core::{Direction, Handler, Interest, Reactor, Token};
    ///
    /// struct Quiet(bool);
    /// impl Handler for Quiet {
    ///     type State = UdpSocket;
    ///     type Timer = ();
    ///     type Message = ();
    ///     fn timed_out(&mut self, r: &mut Reactor<Self>, _: Token, _: &mut UdpSocket, _: Direction) {
    ///         self.0 = true;
    ///         r.stop();
    ///     }
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor = Reactor::new()?;
    /// let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
    /// let token = reactor.register(socket, Interest::READABLE)?;
    /// let deadline = Instant::now() + Duration::from_millis(20);
    /// reactor.set_deadline(token, Direction::Read, Some(deadline))?;
    /// assert_eq!(reactor.resident_timers(), 1);
    /// let mut quiet = Quiet(false);
    /// reactor.run(&mut quiet)?; // nothing arrives: the deadline passes
    /// assert!(quiet.0 && Instant::now() >= deadline);
    /// assert_eq!(reactor.resident_timers(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_deadline(
        &mut self,
        token: Token,
        direction: Direction,
        deadline: Option<Instant>,
    ) -> io::Result<()> {
        self.live(token)?;
        match deadline {
            Some(deadline) => {
                let tick = self.tick_for(deadline);
                self.arm(token, direction, tick);
            }
            None => {
                let slot = &mut self.registrations[token.0].deadlines[direction.index()];
                if let Some(key) = slot.take() {
                    self.wheel.cancel(key);
                }
            }
        }
        Ok(())
    }

    /// Arms or moves the deadline of a live `token` to wheel tick `tick`.
    fn arm(&mut self, token: Token, direction: Direction, tick: u64) {
        let slot = &mut self.registrations[token.0].deadlines[direction.index()];
        match *slot {
            Some(key) => {
                self.wheel.reset(key, tick);
            }
            None => {
                *slot = Some(self.wheel.insert(
                    tick,
                    Expiry::Io {
                        // Registered tokens fit: see `register`.
                        token: token.0 as u32,
                        direction,
                    },
                ));
            }
        }
    }

    /// [`set_deadline`](Reactor::set_deadline) to `timeout` from now. A zero
    /// timeout fires on the next turn; one too large for an `Instant` (such
    /// as `Duration::MAX`) is taken as about 30 years.
    ///
    /// # Errors
    ///
    /// `NotFound` if `token` is not registered.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use ontime_core::net::UdpSocket;
    /// use ontime_core::{Direction, Handler, Interest, Reactor};
    ///
    /// struct Idle;
    /// impl Handler for Idle {
    ///     type State = UdpSocket;
    ///     type Timer = ();
    ///     type Message = ();
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor: Reactor<Idle> = Reactor::new()?;
    /// let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
    /// let token = reactor.register(socket, Interest::READABLE)?;
    /// let before = Instant::now();
    /// reactor.set_timeout(token, Direction::Read, Duration::from_secs(5))?;
    /// let armed = reactor.deadline(token, Direction::Read).unwrap();
    /// assert!(armed >= before + Duration::from_secs(5));
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_timeout(
        &mut self,
        token: Token,
        direction: Direction,
        timeout: Duration,
    ) -> io::Result<()> {
        self.live(token)?;
        let tick = self.tick_after(timeout, deadline_after(timeout));
        self.arm(token, direction, tick);
        Ok(())
    }

    /// The armed deadline of `token` in `direction`, as the instant of the
    /// tick it will fire at (at or after the deadline that was set), or
    /// `None` if none is armed or `token` is not registered.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ontime_core::{Handler, Reactor};
    /// # struct Idle;
    /// # impl Handler for Idle {
    /// #     type State = ontime_core::net::UdpSocket;
    /// #     type Timer = ();
    /// #     type Message = ();
    /// # }
    /// # fn main() -> std::io::Result<()> {
    /// use std::time::{Duration, Instant};
    /// use ontime_core::{net::UdpSocket, Direction, Interest};
    ///
    /// let mut reactor: Reactor<Idle> = Reactor::new()?;
    /// let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
    /// let token = reactor.register(socket, Interest::READABLE)?;
    /// assert_eq!(reactor.deadline(token, Direction::Read), None);
    /// let at = Instant::now() + Duration::from_millis(1500);
    /// reactor.set_deadline(token, Direction::Read, Some(at))?;
    /// // The instant of the tick it fires at: never before the deadline.
    /// assert!(reactor.deadline(token, Direction::Read).unwrap() >= at);
    /// # Ok(())
    /// # }
    /// ```
    pub fn deadline(&self, token: Token, direction: Direction) -> Option<Instant> {
        let registration = self.live(token).ok()?;
        let key = registration.deadlines[direction.index()]?;
        self.clock.tick_to_instant(self.wheel.deadline(key)?)
    }

    // ---- Timers -------------------------------------------------------

    /// Starts a one-shot timer that fires at `deadline` (never earlier) and
    /// hands `value` to [`Handler::timer`]. A deadline that has already
    /// passed fires on the next turn.
    ///
    /// # Panics
    ///
    /// If `u32::MAX` timers are pending at once (hundreds of GiB of them).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use ontime_core::{Handler, Reactor, TimerId};
    ///
    /// struct Alarm(Vec<(&'static str, Instant)>);
    /// impl Handler for Alarm {
    ///     type State = ();
    ///     type Timer = &'static str;
    ///     type Message = ();
    ///     fn timer(&mut self, r: &mut Reactor<Self>, _: TimerId, name: &mut &'static str) {
    ///         self.0.push((*name, Instant::now()));
    ///         r.stop();
    ///     }
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor = Reactor::new()?;
    /// let at = Instant::now() + Duration::from_millis(10);
    /// reactor.timer_at(at, "wake up");
    /// let mut alarm = Alarm(Vec::new());
    /// reactor.run(&mut alarm)?;
    /// assert_eq!(alarm.0[0].0, "wake up");
    /// assert!(alarm.0[0].1 >= at);
    /// # Ok(())
    /// # }
    /// ```
    pub fn timer_at(&mut self, deadline: Instant, value: H::Timer) -> TimerId {
        let tick = self.tick_for(deadline);
        self.start_timer(tick, value, None)
    }

    /// Starts a one-shot timer that fires after `delay` and hands `value` to
    /// [`Handler::timer`]. A zero delay fires on the next turn, without
    /// waiting for a tick.
    ///
    /// # Panics
    ///
    /// As [`timer_at`](Reactor::timer_at).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ontime_core::{Handler, Reactor, TimerId};
    ///
    /// struct Count(u32);
    /// impl Handler for Count {
    ///     type State = ();
    ///     type Timer = u32;
    ///     type Message = ();
    ///     fn timer(&mut self, _: &mut Reactor<Self>, _: TimerId, n: &mut u32) {
    ///         self.0 += *n;
    ///     }
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor = Reactor::new()?;
    /// reactor.timer_after(Duration::ZERO, 2);
    /// let mut count = Count(0);
    /// reactor.turn(&mut count, None)?; // due at once: no wait
    /// assert_eq!(count.0, 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn timer_after(&mut self, delay: Duration, value: H::Timer) -> TimerId {
        let tick = self.tick_after(delay, deadline_after(delay));
        self.start_timer(tick, value, None)
    }

    /// Starts a repeating timer that first fires one `period` from now, then
    /// every `period` after its previous deadline, handing the same `value`
    /// (as the handler left it) to each [`Handler::timer`] call. If the loop
    /// fell behind by more than a period, the next deadline is one period
    /// from now: missed firings are skipped, not delivered in a burst.
    ///
    /// # Panics
    ///
    /// If `period` is zero (an interval that is always due would starve
    /// everything else), or as [`timer_at`](Reactor::timer_at).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ontime_core::{Handler, Reactor, TimerId};
    ///
    /// struct Ticks;
    /// impl Handler for Ticks {
    ///     type State = ();
    ///     type Timer = u32;
    ///     type Message = ();
    ///     fn timer(&mut self, r: &mut Reactor<Self>, id: TimerId, fired: &mut u32) {
    ///         *fired += 1; // the count lives in the timer
    ///         if *fired == 3 {
    ///             r.cancel_timer(id);
    ///             r.stop();
    ///         }
    ///     }
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor = Reactor::new()?;
    /// reactor.interval(Duration::from_millis(5), 0);
    /// reactor.run(&mut Ticks)?;
    /// assert_eq!(reactor.resident_timers(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn interval(&mut self, period: Duration, value: H::Timer) -> TimerId {
        assert!(
            !period.is_zero(),
            "Reactor::interval: the period must not be zero"
        );
        let deadline = deadline_after(period);
        let tick = self.tick_for(deadline);
        self.start_timer(tick, value, Some(Box::new(Interval { period, deadline })))
    }

    /// Cancels a timer and drops its value. Returns whether it was still
    /// pending; a stale id returns `false` and touches nothing. An interval
    /// may cancel itself from its own [`Handler::timer`] call.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ontime_core::{Handler, Reactor};
    ///
    /// struct Idle;
    /// impl Handler for Idle {
    ///     type State = ();
    ///     type Timer = ();
    ///     type Message = ();
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor: Reactor<Idle> = Reactor::new()?;
    /// let id = reactor.timer_after(Duration::from_secs(60), ());
    /// assert!(reactor.cancel_timer(id));
    /// assert!(!reactor.cancel_timer(id));
    /// assert_eq!(reactor.resident_timers(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        match self.timers.remove(timer) {
            Some(entry) => {
                self.wheel.cancel(entry.key);
                true
            }
            None => false,
        }
    }

    /// Moves a pending timer to `deadline`, keeping its id and value (for an
    /// interval, the period then counts from `deadline`). Returns whether it
    /// was pending.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use ontime_core::{Handler, Reactor};
    ///
    /// struct Idle;
    /// impl Handler for Idle {
    ///     type State = ();
    ///     type Timer = ();
    ///     type Message = ();
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor: Reactor<Idle> = Reactor::new()?;
    /// let id = reactor.timer_after(Duration::from_secs(1), ());
    /// let later = Instant::now() + Duration::from_secs(60);
    /// assert!(reactor.reset_timer(id, later));
    /// assert!(reactor.timer_deadline(id).unwrap() >= later);
    /// # Ok(())
    /// # }
    /// ```
    pub fn reset_timer(&mut self, timer: TimerId, deadline: Instant) -> bool {
        let tick = self.tick_for(deadline);
        match self.timers.get_mut(timer) {
            Some(entry) => {
                if let Some(interval) = entry.interval.as_mut() {
                    interval.deadline = deadline;
                }
                self.wheel.reset(entry.key, tick)
            }
            None => false,
        }
    }

    /// When a pending timer fires: the instant of its tick, at or after the
    /// deadline it was given. `None` for a stale id.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ontime_core::{Handler, Reactor};
    /// # struct Idle;
    /// # impl Handler for Idle {
    /// #     type State = ontime_core::net::UdpSocket;
    /// #     type Timer = ();
    /// #     type Message = ();
    /// # }
    /// # fn main() -> std::io::Result<()> {
    /// use std::time::{Duration, Instant};
    ///
    /// let mut reactor: Reactor<Idle> = Reactor::new()?;
    /// let at = Instant::now() + Duration::from_millis(2500);
    /// let timer = reactor.timer_at(at, ());
    /// assert!(reactor.timer_deadline(timer).unwrap() >= at);
    /// reactor.cancel_timer(timer);
    /// assert_eq!(reactor.timer_deadline(timer), None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn timer_deadline(&self, timer: TimerId) -> Option<Instant> {
        let entry = self.timers.get(timer)?;
        self.clock.tick_to_instant(self.wheel.deadline(entry.key)?)
    }

    /// The value of a pending timer, or `None` for a stale id or while the
    /// value is lent to the timer's own [`Handler::timer`] call.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ontime_core::{Handler, Reactor};
    ///
    /// struct Idle;
    /// impl Handler for Idle {
    ///     type State = ();
    ///     type Timer = Vec<u8>;
    ///     type Message = ();
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor: Reactor<Idle> = Reactor::new()?;
    /// let id = reactor.timer_after(Duration::from_secs(60), b"key".to_vec());
    /// assert_eq!(reactor.timer_value(id).unwrap(), b"key");
    /// reactor.timer_value_mut(id).unwrap().push(b'2');
    /// assert_eq!(reactor.timer_value(id).unwrap(), b"key2");
    /// # Ok(())
    /// # }
    /// ```
    pub fn timer_value(&self, timer: TimerId) -> Option<&H::Timer> {
        self.timers.get(timer)?.value.as_ref()
    }

    /// The value of a pending timer, mutably; `None` as for
    /// [`timer_value`](Reactor::timer_value).
    ///
    /// # Examples
    ///
    /// See [`timer_value`](Reactor::timer_value).
    pub fn timer_value_mut(&mut self, timer: TimerId) -> Option<&mut H::Timer> {
        self.timers.get_mut(timer)?.value.as_mut()
    }

    fn start_timer(
        &mut self,
        tick: u64,
        value: H::Timer,
        interval: Option<Box<Interval>>,
    ) -> TimerId {
        let index = self.timers.next_index();
        let key = self.wheel.insert(tick, Expiry::Timer(index));
        self.timers.insert(UserTimer {
            key,
            value: Some(value),
            interval,
        })
    }

    /// The wheel tick for `deadline`, which the caller computed as `timeout`
    /// from now: a zero timeout is due at once, anything else rounds up.
    /// Saves the clock read of [`tick_for`](Reactor::tick_for).
    fn tick_after(&self, timeout: Duration, deadline: Instant) -> u64 {
        if timeout.is_zero() {
            self.wheel.elapsed()
        } else {
            self.clock.deadline_to_tick(deadline)
        }
    }

    /// The wheel tick for `deadline`: the tick the wheel is at if the
    /// deadline has passed (so it fires on the next turn), else the first
    /// tick at or after it.
    fn tick_for(&self, deadline: Instant) -> u64 {
        if deadline <= Instant::now() {
            self.wheel.elapsed()
        } else {
            self.clock.deadline_to_tick(deadline)
        }
    }

    // ---- Fairness and stopping -----------------------------------------

    /// Delivers `ready` for `token` to the handler again on the next turn,
    /// after the events that turn polls. The next turn does not block.
    ///
    /// This is how a handler caps the work it does per event: do a bounded
    /// amount, then requeue what is left. The registration's sticky flags
    /// ([`Ready::READ_CLOSED`], [`Ready::ERROR`]) are added on delivery.
    /// Requeued readiness for a token that is deregistered before it is
    /// delivered is dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ontime_core::net::UdpSocket;
    /// use ontime_core::{Handler, Interest, Reactor, Ready, Token};
    ///
    /// struct Slow(u32);
    /// impl Handler for Slow {
    ///     type State = UdpSocket;
    ///     type Timer = ();
    ///     type Message = ();
    ///     fn ready(&mut self, r: &mut Reactor<Self>, token: Token, _: &mut UdpSocket, ready: Ready) {
    ///         self.0 += 1;
    ///         if self.0 < 3 {
    ///             r.requeue(token, ready); // more to do: come back next turn
    ///         }
    ///     }
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor = Reactor::new()?;
    /// let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
    /// let token = reactor.register(socket, Interest::READABLE)?;
    /// reactor.requeue(token, Ready::READABLE);
    /// let mut slow = Slow(0);
    /// for _ in 0..3 {
    ///     reactor.turn(&mut slow, Some(Duration::from_secs(10)))?; // never waits
    /// }
    /// assert_eq!(slow.0, 3);
    /// # Ok(())
    /// # }
    /// ```
    pub fn requeue(&mut self, token: Token, ready: Ready) {
        self.requeued.push((token, ready));
    }

    /// Asks [`run`](Reactor::run) to return: after the turn in progress if
    /// it is running, or at once, without a turn, if it is not running yet.
    /// The same as [`Remote::stop`]: a stop is kept until a `run` returns
    /// because of it. A program that drives [`turn`](Reactor::turn) itself
    /// checks [`is_stopping`](Reactor::is_stopping).
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::{Handler, Reactor};
    ///
    /// struct Idle;
    /// impl Handler for Idle {
    ///     type State = ();
    ///     type Timer = ();
    ///     type Message = ();
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor = Reactor::new()?;
    /// reactor.stop();
    /// assert!(reactor.is_stopping());
    /// reactor.run(&mut Idle)?; // returns at once
    /// assert!(!reactor.is_stopping());
    /// # Ok(())
    /// # }
    /// ```
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// Whether a stop is pending: asked for with [`stop`](Reactor::stop),
    /// or with [`Remote::stop`] and received by a turn (the turn its
    /// wake-up ends), and not yet consumed by a `run` that returned because
    /// of it. Reads no shared state: cheap enough for every turn.
    ///
    /// # Examples
    ///
    /// A loop of its own, which stops when asked to:
    ///
    /// ```
    /// use std::time::Duration;
    /// use ontime_core::{Handler, Reactor, TimerId};
    ///
    /// struct Countdown(u32);
    /// impl Handler for Countdown {
    ///     type State = ();
    ///     type Timer = ();
    ///     type Message = ();
    ///     fn timer(&mut self, r: &mut Reactor<Self>, _: TimerId, _: &mut ()) {
    ///         self.0 -= 1;
    ///         if self.0 == 0 {
    ///             r.stop();
    ///         }
    ///     }
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor = Reactor::new()?;
    /// reactor.interval(Duration::from_millis(2), ());
    /// let mut countdown = Countdown(3);
    /// while !reactor.is_stopping() {
    ///     reactor.turn(&mut countdown, None)?;
    /// }
    /// assert_eq!(countdown.0, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    // ---- Turning ------------------------------------------------------

    /// Runs turns until a stop is asked for ([`stop`](Reactor::stop),
    /// [`Remote::stop`]), then consumes it and returns. A stop asked for
    /// before the call makes it return at once.
    ///
    /// # Errors
    ///
    /// The first error polling the OS (an interrupted poll is retried, not
    /// returned), or the errors of [`turn`](Reactor::turn). The stop, if
    /// one was asked for, stays pending.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ontime_core::{Handler, Reactor, TimerId};
    ///
    /// struct StopAt(u32);
    /// impl Handler for StopAt {
    ///     type State = ();
    ///     type Timer = u32;
    ///     type Message = ();
    ///     fn timer(&mut self, r: &mut Reactor<Self>, _: TimerId, n: &mut u32) {
    ///         if *n == self.0 {
    ///             r.stop();
    ///         }
    ///     }
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor = Reactor::new()?;
    /// reactor.timer_after(Duration::from_millis(1), 1);
    /// reactor.timer_after(Duration::from_millis(2), 2);
    /// reactor.timer_after(Duration::from_secs(60), 3);
    /// reactor.run(&mut StopAt(2))?;
    /// assert_eq!(reactor.resident_timers(), 1, "the third is still pending");
    /// # Ok(())
    /// # }
    /// ```
    pub fn run(&mut self, handler: &mut H) -> io::Result<()> {
        log::debug!("run: start");
        // A remote's stop is otherwise taken by the turn its wake-up ends.
        self.stopping |= self.shared.take_stop();
        while !self.stopping {
            self.turn(handler, None)?;
        }
        self.stopping = false;
        log::debug!("run: stop");
        Ok(())
    }

    /// Runs one turn: waits for I/O, messages or the next timer, for at most
    /// `max_wait` (`None`: as long as needed), then dispatches everything
    /// that is ready. Returns how many callbacks the handler received.
    ///
    /// A program that runs its own loop calls this repeatedly. The wait is
    /// zero if a timer is already due, readiness was requeued, or messages
    /// are waiting; otherwise it ends at the next timer's tick, so the timer
    /// never fires early. The OS poll counts whole milliseconds, so a wait
    /// for a timer more than 2 ms away stops short of it (a turn with no
    /// callbacks) and the next turn waits out the rest with nanosecond
    /// resolution where the system has `ppoll` (Linux, Android, FreeBSD):
    /// the timer is then late by less than a tick plus the scheduler's
    /// wake-up latency, however far away it was set.
    ///
    /// # Errors
    ///
    /// Any error polling the OS other than `Interrupted` (an interrupted poll
    /// is a turn with no I/O events). `Other` if called from inside a
    /// handler, or after a handler panicked (the reactor is then poisoned).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ontime_core::{Handler, Reactor};
    ///
    /// struct Idle;
    /// impl Handler for Idle {
    ///     type State = ();
    ///     type Timer = ();
    ///     type Message = ();
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor = Reactor::new()?;
    /// // Nothing registered, no timers: waits the whole 10 ms, calls nothing.
    /// assert_eq!(reactor.turn(&mut Idle, Some(Duration::from_millis(10)))?, 0);
    /// reactor.timer_after(Duration::ZERO, ());
    /// assert_eq!(reactor.turn(&mut Idle, None)?, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn turn(&mut self, handler: &mut H, max_wait: Option<Duration>) -> io::Result<usize> {
        if self.dispatching {
            return Err(io::Error::other(
                "Reactor::turn called from inside a handler, or after a handler panicked",
            ));
        }
        // Readiness requeued before this turn; what handlers requeue during
        // it goes to `self.requeued` and waits for the next turn.
        std::mem::swap(&mut self.requeued, &mut self.requeue_batch);
        let wait = if self.requeue_batch.is_empty() {
            self.poll_timeout(max_wait)
        } else {
            Wait::Poll(Some(Duration::ZERO))
        };
        log::trace!("poll: {wait:?}");
        let mut events = self
            .events
            .take()
            .expect("events are only taken during a turn");
        let polled = match wait {
            Wait::Poll(timeout) => self.poll.poll(&mut events, timeout),
            Wait::Precise(timeout) => precise::wait(&self.poll, timeout)
                .and_then(|()| self.poll.poll(&mut events, Some(Duration::ZERO))),
        };
        match polled {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => events.clear(),
            Err(e) => {
                self.events = Some(events);
                // Put the requeued readiness back for the next turn.
                std::mem::swap(&mut self.requeued, &mut self.requeue_batch);
                log::debug!("poll failed: {e}");
                return Err(e);
            }
        }

        // Until the end of the turn: tokens released now are freed only at
        // the end, and a nested turn is refused. A handler that panics
        // leaves this set, so the reactor refuses to turn again rather than
        // run with a half-dispatched batch.
        self.dispatching = true;
        let mut calls = 0;
        let mut woken = false;
        for event in events.iter() {
            let token = event.token();
            if token == WAKER {
                woken = true;
                continue;
            }
            let ready = Ready::from_event(event);
            log::trace!("{token:?} {ready:?}");
            calls += usize::from(self.dispatch(handler, token, ready));
        }
        self.events = Some(events);

        let mut batch = std::mem::take(&mut self.requeue_batch);
        for (token, ready) in batch.drain(..) {
            calls += usize::from(self.dispatch(handler, token, ready));
        }
        self.requeue_batch = batch;

        if woken || self.shared.has_pending() {
            let flags = self.shared.collect(&mut self.inbox, self.messages_per_turn);
            self.stopping |= flags.stop;
            if flags.woken {
                handler.woken(self);
                calls += 1;
            }
            while let Some(message) = self.inbox.pop_front() {
                handler.message(self, message);
                calls += 1;
            }
        }

        calls += self.fire_timers(handler);
        handler.turn_end(self);
        self.dispatching = false;
        for index in self.released.drain(..) {
            self.registrations.remove(index);
        }
        Ok(calls)
    }

    /// Delivers one readiness event: disarms the deadlines it settles, adds
    /// the sticky flags, and lends the state to the handler. Returns whether
    /// the event was for a live registration.
    fn dispatch(&mut self, handler: &mut H, token: Token, ready: Ready) -> bool {
        let Some(registration) = self.registrations.get_mut(token.0) else {
            return false;
        };
        if registration.released {
            return false;
        }
        for direction in [Direction::Read, Direction::Write] {
            if ready.settles(direction) {
                if let Some(key) = registration.deadlines[direction.index()].take() {
                    self.wheel.cancel(key);
                }
            }
        }
        registration.sticky |= ready & STICKY;
        let ready = ready | registration.sticky;
        self.lend(token, |reactor, state| {
            handler.ready(reactor, token, state, ready);
        })
        .is_some()
    }

    fn fire_timers(&mut self, handler: &mut H) -> usize {
        if self.wheel.is_empty() {
            return 0;
        }
        let now = Instant::now();
        let mut fired = std::mem::take(&mut self.fired);
        self.wheel.advance(self.clock.now_tick(now), &mut fired);
        let mut calls = 0;
        for (key, expiry) in fired.drain(..) {
            calls += usize::from(match expiry {
                Expiry::Io { token, direction } => {
                    self.fire_deadline(handler, key, token, direction)
                }
                Expiry::Timer(index) => self.fire_timer(handler, key, index, now),
            });
        }
        self.fired = fired;
        calls
    }

    /// Delivers an I/O deadline that passed, unless it was disarmed or
    /// moved since the wheel fired it.
    fn fire_deadline(
        &mut self,
        handler: &mut H,
        key: TimerKey,
        token: u32,
        direction: Direction,
    ) -> bool {
        let token = Token(token as usize);
        let Some(registration) = self.registrations.get_mut(token.0) else {
            return false;
        };
        let slot = &mut registration.deadlines[direction.index()];
        if *slot != Some(key) {
            return false;
        }
        *slot = None;
        log::debug!("{token:?} timed out ({direction:?})");
        self.lend(token, |reactor, state| {
            handler.timed_out(reactor, token, state, direction);
        })
        .is_some()
    }

    /// Delivers a user timer, unless it was cancelled since the wheel fired
    /// it; an interval is filed again first, so that its handler may cancel
    /// or move it.
    fn fire_timer(&mut self, handler: &mut H, key: TimerKey, index: u32, now: Instant) -> bool {
        let Some((id, entry)) = self.timers.by_key(index, key) else {
            return false;
        };
        log::debug!("{id:?} fired");
        let Some(interval) = entry.interval.as_mut() else {
            let entry = self.timers.remove(id).expect("the timer was just found");
            let mut value = entry.value.expect("a one-shot timer's value is never lent");
            handler.timer(self, id, &mut value);
            return true;
        };
        let next = match interval.deadline.checked_add(interval.period) {
            Some(next) if next > now => next,
            _ => deadline_after(interval.period),
        };
        interval.deadline = next;
        entry.key = self
            .wheel
            .insert(self.clock.deadline_to_tick(next), Expiry::Timer(index));
        let Some(mut value) = entry.value.take() else {
            return false;
        };
        handler.timer(self, id, &mut value);
        // Cancelled by the handler: the value goes with it.
        if let Some(entry) = self.timers.get_mut(id) {
            entry.value = Some(value);
        }
        true
    }

    /// How the next poll waits (requeued readiness is the caller's to
    /// check: it makes the timeout zero too).
    ///
    /// The OS poll counts its timeout in whole milliseconds (mio rounds it
    /// up), and the kernel lets a long one run late by 0.1 %. So a wait
    /// for a timer stops short of it by a margin that covers both, and the
    /// last stretch, under [`PRECISE`], is a wait with nanosecond
    /// resolution (see [`precise`]): a timer fires within a tick of its
    /// deadline plus the scheduler's wake-up latency, however far away
    /// it was set.
    fn poll_timeout(&self, max_wait: Option<Duration>) -> Wait {
        if self.shared.has_pending() {
            return Wait::Poll(Some(Duration::ZERO));
        }
        let until_timer = self.wheel.next_expiration().map(|tick| {
            if tick <= self.wheel.elapsed() {
                return Duration::ZERO;
            }
            match self.clock.tick_to_instant(tick) {
                // The poll starts after `now` was read, so it cannot
                // return before the tick's instant; then `now_tick` has
                // reached the tick.
                Some(at) => at.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            }
        });
        match (until_timer, max_wait) {
            (Some(timer), Some(max)) if max < timer => Wait::Poll(Some(max)),
            (Some(timer), _) => {
                if timer.is_zero() || !precise::SUPPORTED {
                    Wait::Poll(Some(timer))
                } else if timer <= PRECISE {
                    Wait::Precise(timer)
                } else {
                    // Wake before the timer, at most one coarse poll early.
                    let margin = Duration::from_millis(1) + timer / 512;
                    Wait::Poll(Some(timer.saturating_sub(margin).max(PRECISE / 2)))
                }
            }
            (None, max) => Wait::Poll(max),
        }
    }
}

/// How a turn waits for events.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// The OS poll, with its millisecond timeout (`None`: no timeout).
    Poll(Option<Duration>),
    /// A wait for the poller to become readable, with nanosecond resolution,
    /// then a poll that does not block.
    Precise(Duration),
}

/// The stretch before a timer that is waited with nanosecond resolution.
const PRECISE: Duration = Duration::from_millis(2);

/// A wait on the poller with the resolution its own poll lacks.
mod precise {
    use std::io;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use mio::Poll;

    /// Whether this system has one; elsewhere timers keep the poll's
    /// millisecond resolution.
    pub(super) const SUPPORTED: bool = cfg!(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd"
    ));

    /// Waits until the poller has an event to report or `timeout` passes:
    /// `ppoll(2)` on the poller's own descriptor (an epoll instance is
    /// readable while its ready list is not empty), whose timeout has
    /// nanosecond resolution and, being short, next to no slack.
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    #[allow(unsafe_code)]
    pub(super) fn wait(poll: &Poll, timeout: Duration) -> io::Result<()> {
        let mut fd = libc::pollfd {
            fd: poll.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout = libc::timespec {
            // At most `PRECISE`: both fit.
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: `fd` is one valid `pollfd` (its descriptor is the poller,
        // open as long as `poll` is borrowed) and `timeout` a valid
        // `timespec`, both alive across the call; a null signal mask keeps
        // the thread's own.
        let n = unsafe { libc::ppoll(&mut fd, 1, &timeout, std::ptr::null()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    pub(super) fn wait(_: &Poll, _: Duration) -> io::Result<()> {
        unreachable!("never chosen where not SUPPORTED")
    }
}

impl<H: Handler> Drop for Reactor<H> {
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl<H: Handler> fmt::Debug for Reactor<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor")
            .field("sources", &self.sources())
            .field("timers", &self.timers.len())
            .field("resident_timers", &self.wheel.len())
            .field("tick", &self.clock.tick())
            .field("requeued", &self.requeued.len())
            .finish_non_exhaustive()
    }
}

/// The live registration of `token`, borrowing only the slab (so that the
/// caller may use the reactor's other fields meanwhile).
fn live_in<S>(
    registrations: &mut Slab<Registration<S>>,
    token: Token,
) -> io::Result<&mut Registration<S>> {
    match registrations.get_mut(token.0) {
        Some(registration) if !registration.released => Ok(registration),
        _ => Err(not_registered(token)),
    }
}

fn not_registered(token: Token) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{token:?} is not registered with this reactor"),
    )
}

/// `now + timeout`; a timeout too large to represent (such as
/// `Duration::MAX`) becomes about 30 years, which no process outlives and
/// every platform can represent.
fn deadline_after(timeout: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(timeout.min(FAR)).unwrap_or(now)
}
