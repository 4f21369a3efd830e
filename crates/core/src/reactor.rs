//! The reactor: one `mio::Poll`, a slab of registrations, a timer wheel and a
//! waker, turned by one thread.
//!
//! A turn is: compute the poll timeout from the wheel (zero if anything is
//! already due), poll, dispatch I/O events (readiness disarms the matching
//! I/O deadline), dispatch requeued readiness, drain a bounded batch of
//! messages, then fire every timer that is due. I/O goes before timers so
//! that data arriving in the same turn as its deadline wins.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::ready::{Direction, Ready};
use crate::remote::{Remote, Shared};
use crate::timer::{Clock, TimerKey, Wheel};

/// The token of the reactor's own waker; never handed out.
const WAKER: Token = Token(usize::MAX);

/// Default length of one wheel tick.
const DEFAULT_TICK: Duration = Duration::from_millis(1);
/// Default capacity of the `Events` buffer.
const DEFAULT_EVENTS: usize = 1024;
/// Default number of messages handled per turn.
const DEFAULT_MESSAGES_PER_TURN: usize = 256;

/// What the embedding program is told. Implement the methods for the events
/// you use; all but [`ready`](Handler::ready) default to doing nothing.
///
/// Every method gets the reactor, so a handler can register and deregister
/// sources, move deadlines and start timers while it handles an event.
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
/// so once an event for the source has reported
/// [`READ_CLOSED`](Ready::READ_CLOSED) or [`ERROR`](Ready::ERROR), read on
/// until `0` or `WouldBlock`. Remember that in the connection's state: a
/// requeued event carries only what the handler passed to `requeue`.
/// `examples/echo_server.rs` does exactly this.
pub trait Handler<M = ()> {
    /// A registered source is ready.
    fn ready(&mut self, reactor: &mut Reactor<M>, token: Token, ready: Ready);

    /// An I/O deadline set with [`Reactor::set_deadline`] passed before the
    /// source became ready in `direction`. The deadline is disarmed.
    fn timed_out(&mut self, reactor: &mut Reactor<M>, token: Token, direction: Direction) {
        let _ = (reactor, token, direction);
    }

    /// A timer started with [`Reactor::timer_at`], [`Reactor::timer_after`] or
    /// [`Reactor::interval`] fired.
    fn timer(&mut self, reactor: &mut Reactor<M>, timer: TimerId) {
        let _ = (reactor, timer);
    }

    /// A message sent through a [`Remote`].
    fn message(&mut self, reactor: &mut Reactor<M>, message: M) {
        let _ = (reactor, message);
    }

    /// [`Remote::wake`] was called (once per turn, however many calls).
    fn woken(&mut self, reactor: &mut Reactor<M>) {
        let _ = reactor;
    }
}

/// Names a timer started on a [`Reactor`]. A stale id (of a timer that fired
/// or was cancelled) never touches another timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: u32,
    serial: u32,
}

/// What the wheel holds for each resident timer.
///
/// Eight bytes, so that a wheel node is 32 (see `timer::wheel`): hence a
/// `u32` token, which [`Reactor::register`] guarantees is enough.
#[derive(Debug)]
enum Expiry {
    /// The I/O deadline of a registration, by `Token.0`.
    Io { token: u32, direction: Direction },
    /// A user timer: index into `Reactor::timers`.
    Timer(u32),
}

const _: () = assert!(std::mem::size_of::<Expiry>() == 8);

/// One registered source.
#[derive(Debug)]
struct Registration {
    /// The armed read and write deadlines, by [`Direction::index`].
    ///
    /// Invariant: a key here names a live wheel entry whose value is
    /// `Expiry::Io` for this token and direction.
    deadlines: [Option<TimerKey>; 2],
    /// Deregistered during the current dispatch batch; the slot is freed when
    /// the batch ends, so a stale event in the batch cannot reach a new owner.
    released: bool,
}

/// One user timer.
#[derive(Debug)]
struct UserTimer {
    key: TimerKey,
    serial: u32,
    /// For an interval, its period.
    period: Option<Duration>,
    /// The instant it is due, for intervals to schedule the next one.
    deadline: Instant,
}

/// Configures a [`Reactor`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ontime_core::Reactor;
///
/// # fn main() -> std::io::Result<()> {
/// let reactor: Reactor = Reactor::builder()
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
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            tick: DEFAULT_TICK,
            events: DEFAULT_EVENTS,
            messages_per_turn: DEFAULT_MESSAGES_PER_TURN,
        }
    }
}

impl Builder {
    /// The default settings (the same as [`Reactor::builder`]).
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Length of one tick of the timer wheel (default 1 ms). Deadlines are
    /// rounded up to a tick: a timer fires no earlier than asked and, on an
    /// idle machine, less than a tick plus the scheduler's wake-up latency
    /// late.
    ///
    /// # Panics
    ///
    /// [`build`](Builder::build) panics if the tick is zero.
    pub fn tick(mut self, tick: Duration) -> Builder {
        self.tick = tick;
        self
    }

    /// How many I/O events one poll can return (default 1024).
    pub fn events_capacity(mut self, capacity: usize) -> Builder {
        self.events = capacity.max(1);
        self
    }

    /// How many [`Remote`] messages one turn handles at most (default 256),
    /// so that one producer cannot starve I/O.
    pub fn messages_per_turn(mut self, n: usize) -> Builder {
        self.messages_per_turn = n.max(1);
        self
    }

    /// Creates the reactor.
    ///
    /// # Errors
    ///
    /// Any error creating the OS poller or its waker (for example `EMFILE`).
    ///
    /// # Panics
    ///
    /// If the tick is zero.
    pub fn build<M>(self) -> io::Result<Reactor<M>> {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let now = Instant::now();
        Ok(Reactor {
            poll,
            events: Some(Events::with_capacity(self.events)),
            registrations: Slab::new(),
            released: Vec::new(),
            dispatching: false,
            wheel: Wheel::new(),
            clock: Clock::with_origin(now, self.tick),
            fired: Vec::new(),
            timers: Slab::new(),
            next_serial: 0,
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
/// timers from a hierarchical timer wheel, and messages from other threads.
///
/// `M` is the type of the messages other threads send through a [`Remote`].
///
/// # Examples
///
/// A timer and a stop:
///
/// ```
/// use std::time::{Duration, Instant};
/// use ontime_core::{Handler, Reactor, Ready, TimerId, Token};
///
/// struct Once(Option<Instant>);
///
/// impl Handler for Once {
///     fn ready(&mut self, _: &mut Reactor, _: Token, _: Ready) {}
///     fn timer(&mut self, reactor: &mut Reactor, _: TimerId) {
///         self.0 = Some(Instant::now());
///         reactor.stop();
///     }
/// }
///
/// # fn main() -> std::io::Result<()> {
/// let mut reactor = Reactor::new()?;
/// let start = Instant::now();
/// reactor.timer_after(Duration::from_millis(20));
/// let mut handler = Once(None);
/// reactor.run(&mut handler)?;
/// assert!(handler.0.unwrap() - start >= Duration::from_millis(20));
/// # Ok(())
/// # }
/// ```
pub struct Reactor<M = ()> {
    poll: Poll,
    /// `None` only while a turn dispatches (a nested turn is refused).
    events: Option<Events>,
    registrations: Slab<Registration>,
    /// Tokens deregistered during the current batch, freed when it ends.
    released: Vec<usize>,
    dispatching: bool,
    wheel: Wheel<Expiry>,
    clock: Clock,
    /// Reused buffer for the timers one advance fires.
    fired: Vec<(TimerKey, Expiry)>,
    timers: Slab<UserTimer>,
    next_serial: u32,
    /// Readiness to deliver again on the next turn.
    requeued: Vec<(Token, Ready)>,
    /// Reused buffer the requeued readiness is swapped into while dispatching.
    requeue_batch: Vec<(Token, Ready)>,
    /// Reused buffer for the messages one turn handles.
    inbox: VecDeque<M>,
    shared: Arc<Shared<M>>,
    messages_per_turn: usize,
    stopping: bool,
}

impl Reactor {
    /// A [`Builder`] to configure a reactor; [`Builder::build`] makes a
    /// reactor of any message type.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl<M> Reactor<M> {
    /// A reactor with the default settings (see [`Builder`]).
    ///
    /// # Errors
    ///
    /// Any error creating the OS poller or its waker.
    pub fn new() -> io::Result<Reactor<M>> {
        Builder::default().build()
    }

    /// A handle for other threads: see [`Remote`].
    pub fn remote(&self) -> Remote<M> {
        Remote::new(Arc::clone(&self.shared))
    }

    /// The clock that maps instants to wheel ticks.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Number of registered sources.
    pub fn sources(&self) -> usize {
        self.registrations.len() - self.released.len()
    }

    /// Number of timers and I/O deadlines in the wheel.
    pub fn resident_timers(&self) -> usize {
        self.wheel.len()
    }

    // ---- Registration -------------------------------------------------

    /// Registers a source for `interest` and returns its token.
    ///
    /// Tokens are small integers (slab indices), reused after
    /// [`deregister`](Reactor::deregister): a program can index its own
    /// `Vec` or slab of connections with `token.0`. A token released while
    /// the handler runs is not reused before the current batch of events has
    /// been dispatched, so a stale event never reaches the token's next owner.
    ///
    /// Deregister a source before dropping it.
    ///
    /// # Errors
    ///
    /// Any error from the OS registering the source.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::{net::TcpListener, Interest, Reactor};
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor: Reactor = Reactor::new()?;
    /// let mut listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
    /// let token = reactor.register(&mut listener, Interest::READABLE)?;
    /// reactor.deregister(&mut listener, token)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn register<S>(&mut self, source: &mut S, interest: Interest) -> io::Result<Token>
    where
        S: Source + ?Sized,
    {
        let entry = self.registrations.vacant_entry();
        // Wheel entries name a registration by a `u32`.
        if u32::try_from(entry.key()).is_err() {
            return Err(io::Error::other("more than u32::MAX registrations"));
        }
        let token = Token(entry.key());
        self.poll.registry().register(source, token, interest)?;
        entry.insert(Registration {
            deadlines: [None, None],
            released: false,
        });
        log::debug!("register {token:?} for {interest:?}");
        Ok(token)
    }

    /// Changes the interest of a registered source.
    ///
    /// # Errors
    ///
    /// `NotFound` if `token` is not registered; any error from the OS.
    pub fn reregister<S>(
        &mut self,
        source: &mut S,
        token: Token,
        interest: Interest,
    ) -> io::Result<()>
    where
        S: Source + ?Sized,
    {
        self.live(token)?;
        self.poll.registry().reregister(source, token, interest)
    }

    /// Deregisters a source, disarms its deadlines and releases its token.
    ///
    /// The token is released even if the OS reports an error (the source is
    /// then most likely closed already), and the error is returned.
    ///
    /// # Errors
    ///
    /// `NotFound` if `token` is not registered; any error from the OS.
    pub fn deregister<S>(&mut self, source: &mut S, token: Token) -> io::Result<()>
    where
        S: Source + ?Sized,
    {
        self.live(token)?;
        let result = self.poll.registry().deregister(source);
        self.release(token);
        log::debug!("deregister {token:?}");
        result
    }

    fn live(&self, token: Token) -> io::Result<&Registration> {
        match self.registrations.get(token.0) {
            Some(registration) if !registration.released => Ok(registration),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{token:?} is not registered with this reactor"),
            )),
        }
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

    // ---- I/O deadlines ------------------------------------------------

    /// Arms, moves or (with `None`) disarms the deadline of `token` in
    /// `direction`.
    ///
    /// This is timeout mode in the core: a non-blocking source plus a
    /// deadline. Arm it after an operation in that direction returned
    /// `WouldBlock`. If the source becomes ready in that direction first
    /// (readable, read side closed or error, for reads; likewise for writes),
    /// the deadline is disarmed before [`Handler::ready`] runs. Otherwise
    /// [`Handler::timed_out`] runs, no earlier than `deadline`.
    ///
    /// A deadline that has already passed fires on the next turn, without
    /// waiting for a tick. Arming, moving and disarming are O(1) and do not
    /// allocate once the wheel has grown to the number of resident timers.
    ///
    /// # Errors
    ///
    /// `NotFound` if `token` is not registered.
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

    /// [`set_deadline`](Reactor::set_deadline) to `timeout` from now.
    ///
    /// # Errors
    ///
    /// `NotFound` if `token` is not registered.
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
    /// tick it will fire at (at or after the deadline that was set).
    pub fn deadline(&self, token: Token, direction: Direction) -> Option<Instant> {
        let registration = self.live(token).ok()?;
        let key = registration.deadlines[direction.index()]?;
        self.clock.tick_to_instant(self.wheel.deadline(key)?)
    }

    // ---- Timers -------------------------------------------------------

    /// Starts a one-shot timer that fires at `deadline` (never earlier).
    /// A deadline that has already passed fires on the next turn.
    pub fn timer_at(&mut self, deadline: Instant) -> TimerId {
        self.start_timer(deadline, None)
    }

    /// Starts a one-shot timer that fires after `delay`. A zero delay fires
    /// on the next turn, without waiting for a tick.
    pub fn timer_after(&mut self, delay: Duration) -> TimerId {
        let deadline = deadline_after(delay);
        let tick = self.tick_after(delay, deadline);
        self.start_timer_at_tick(tick, deadline, None)
    }

    /// Starts a repeating timer that first fires one `period` from now, then
    /// every `period` after its previous deadline. If the loop fell behind by
    /// more than a period, the next deadline is one period from now: missed
    /// firings are skipped, not delivered in a burst.
    ///
    /// # Panics
    ///
    /// If `period` is zero.
    pub fn interval(&mut self, period: Duration) -> TimerId {
        assert!(
            !period.is_zero(),
            "Reactor::interval: the period must not be zero"
        );
        self.start_timer(deadline_after(period), Some(period))
    }

    /// Cancels a timer. Returns whether it was still pending (a stale id
    /// returns `false` and touches nothing).
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        match self.user_timer(timer) {
            Some(entry) => {
                let key = entry.key;
                self.wheel.cancel(key);
                self.timers.remove(timer.index as usize);
                true
            }
            None => false,
        }
    }

    /// Moves a pending timer to `deadline`. Returns whether it was pending.
    pub fn reset_timer(&mut self, timer: TimerId, deadline: Instant) -> bool {
        let tick = self.tick_for(deadline);
        match self.timers.get_mut(timer.index as usize) {
            Some(entry) if entry.serial == timer.serial => {
                entry.deadline = deadline;
                self.wheel.reset(entry.key, tick)
            }
            _ => false,
        }
    }

    fn user_timer(&self, timer: TimerId) -> Option<&UserTimer> {
        self.timers
            .get(timer.index as usize)
            .filter(|entry| entry.serial == timer.serial)
    }

    fn start_timer(&mut self, deadline: Instant, period: Option<Duration>) -> TimerId {
        let tick = self.tick_for(deadline);
        self.start_timer_at_tick(tick, deadline, period)
    }

    fn start_timer_at_tick(
        &mut self,
        tick: u64,
        deadline: Instant,
        period: Option<Duration>,
    ) -> TimerId {
        let entry = self.timers.vacant_entry();
        let index = u32::try_from(entry.key()).expect("more than u32::MAX timers");
        let serial = self.next_serial;
        self.next_serial = self.next_serial.wrapping_add(1);
        let key = self.wheel.insert(tick, Expiry::Timer(index));
        entry.insert(UserTimer {
            key,
            serial,
            period,
            deadline,
        });
        TimerId { index, serial }
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
    /// amount, then requeue what is left. Requeued readiness for a token that
    /// is deregistered before it is delivered is dropped.
    pub fn requeue(&mut self, token: Token, ready: Ready) {
        self.requeued.push((token, ready));
    }

    /// Makes [`run`](Reactor::run) return after the turn in progress. A
    /// program that drives [`turn`](Reactor::turn) itself checks
    /// [`is_stopping`](Reactor::is_stopping).
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// Whether [`stop`](Reactor::stop) or [`Remote::stop`] asked the loop to
    /// stop (cleared when [`run`](Reactor::run) starts).
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    // ---- Turning ------------------------------------------------------

    /// Runs turns until [`stop`](Reactor::stop) or [`Remote::stop`].
    ///
    /// # Errors
    ///
    /// The first error polling the OS (an interrupted poll is retried, not
    /// returned).
    pub fn run<H>(&mut self, handler: &mut H) -> io::Result<()>
    where
        H: Handler<M> + ?Sized,
    {
        log::debug!("run: start");
        // A stop() from an earlier hand-driven turn is not for this run.
        self.stopping = false;
        let result = loop {
            if let Err(e) = self.turn(handler, None) {
                break Err(e);
            }
            if self.stopping {
                break Ok(());
            }
        };
        self.stopping = false;
        log::debug!("run: stop");
        result
    }

    /// Runs one turn: waits for I/O, messages or the next timer, for at most
    /// `max_wait` (`None`: as long as needed), then dispatches everything
    /// that is ready. Returns how many callbacks the handler received.
    ///
    /// A program that runs its own loop calls this repeatedly. The wait is
    /// zero if a timer is already due, readiness was requeued, or messages
    /// are waiting; otherwise it ends at the next timer's tick, rounded so
    /// the timer neither fires early nor makes the loop spin.
    ///
    /// # Errors
    ///
    /// Any error polling the OS other than `Interrupted` (an interrupted poll
    /// is a turn with no I/O events). `Other` if called from inside a
    /// handler, or after a handler panicked (the reactor is then poisoned).
    pub fn turn<H>(&mut self, handler: &mut H, max_wait: Option<Duration>) -> io::Result<usize>
    where
        H: Handler<M> + ?Sized,
    {
        if self.dispatching {
            return Err(io::Error::other(
                "Reactor::turn called from inside a handler, or after a handler panicked",
            ));
        }
        // Readiness requeued before this turn; what handlers requeue during
        // it goes to `self.requeued` and waits for the next turn.
        std::mem::swap(&mut self.requeued, &mut self.requeue_batch);
        let timeout = if self.requeue_batch.is_empty() {
            self.poll_timeout(max_wait)
        } else {
            Some(Duration::ZERO)
        };
        log::trace!("poll for {timeout:?}");
        let mut events = self
            .events
            .take()
            .expect("events are only taken during a turn");
        match self.poll.poll(&mut events, timeout) {
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
        for event in events.iter() {
            let token = event.token();
            if token == WAKER {
                self.shared.clear_notified();
                continue;
            }
            let ready = Ready::from_event(event);
            log::trace!("{token:?} {ready:?}");
            if self.settle(token, ready) {
                handler.ready(self, token, ready);
                calls += 1;
            }
        }
        self.events = Some(events);

        let mut batch = std::mem::take(&mut self.requeue_batch);
        for (token, ready) in batch.drain(..) {
            if self.settle(token, ready) {
                handler.ready(self, token, ready);
                calls += 1;
            }
        }
        self.requeue_batch = batch;

        if self.shared.take_stop() {
            self.stopping = true;
        }
        if self.shared.take_woken() {
            handler.woken(self);
            calls += 1;
        }
        self.shared
            .drain_into(&mut self.inbox, self.messages_per_turn);
        while let Some(message) = self.inbox.pop_front() {
            handler.message(self, message);
            calls += 1;
        }

        calls += self.fire_timers(handler);
        self.dispatching = false;
        for index in self.released.drain(..) {
            self.registrations.remove(index);
        }
        Ok(calls)
    }

    /// Disarms the deadlines that `ready` settles and says whether the event
    /// is for a live registration.
    fn settle(&mut self, token: Token, ready: Ready) -> bool {
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
        true
    }

    fn fire_timers<H>(&mut self, handler: &mut H) -> usize
    where
        H: Handler<M> + ?Sized,
    {
        if self.wheel.is_empty() {
            return 0;
        }
        let now = Instant::now();
        let mut fired = std::mem::take(&mut self.fired);
        self.wheel.advance(self.clock.now_tick(now), &mut fired);
        let mut calls = 0;
        for (key, expiry) in fired.drain(..) {
            match expiry {
                Expiry::Io { token, direction } => {
                    let token = token as usize;
                    let Some(registration) = self.registrations.get_mut(token) else {
                        continue;
                    };
                    let slot = &mut registration.deadlines[direction.index()];
                    if *slot != Some(key) {
                        continue;
                    }
                    *slot = None;
                    log::debug!("{:?} timed out ({direction:?})", Token(token));
                    handler.timed_out(self, Token(token), direction);
                    calls += 1;
                }
                Expiry::Timer(index) => {
                    let Some(entry) = self.timers.get_mut(index as usize) else {
                        continue;
                    };
                    if entry.key != key {
                        continue;
                    }
                    let id = TimerId {
                        index,
                        serial: entry.serial,
                    };
                    match entry.period {
                        Some(period) => {
                            let next = match entry.deadline.checked_add(period) {
                                Some(next) if next > now => next,
                                _ => deadline_after(period),
                            };
                            entry.deadline = next;
                            let tick = self.clock.deadline_to_tick(next);
                            entry.key = self.wheel.insert(tick, Expiry::Timer(index));
                        }
                        None => {
                            self.timers.remove(index as usize);
                        }
                    }
                    log::debug!("{id:?} fired");
                    handler.timer(self, id);
                    calls += 1;
                }
            }
        }
        self.fired = fired;
        calls
    }

    /// How long the next poll may block (requeued readiness is the
    /// caller's to check: it makes the timeout zero too).
    fn poll_timeout(&self, max_wait: Option<Duration>) -> Option<Duration> {
        if self.shared.has_pending() {
            return Some(Duration::ZERO);
        }
        let until_timer = self.wheel.next_expiration().map(|tick| {
            if tick <= self.wheel.elapsed() {
                return Duration::ZERO;
            }
            match self.clock.tick_to_instant(tick) {
                // mio rounds a timeout up to whole milliseconds, and the poll
                // starts after `now` was read, so it cannot return before the
                // tick's instant; then `now_tick` has reached the tick.
                Some(at) => at.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            }
        });
        match (until_timer, max_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl<M> Drop for Reactor<M> {
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl<M> fmt::Debug for Reactor<M> {
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

/// `now + timeout`; a timeout too large to represent (such as
/// `Duration::MAX`) becomes about 30 years, which no process outlives and
/// every platform can represent.
fn deadline_after(timeout: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(timeout.min(FAR)).unwrap_or(now)
}
