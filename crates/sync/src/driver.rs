//! The driver: the reactors that blocking calls wait in.
//!
//! # A reactor per waiting thread
//!
//! Every thread that waits has an `ontime_core::Reactor` of its own, made
//! at its first wait and dropped when the thread exits. A wait registers
//! its sockets in the calling thread's reactor (once: a socket stays
//! registered there until it closes, the thread exits, or it moves on to
//! another thread, below), puts its
//! deadline in that reactor's timer wheel, and turns the reactor until a
//! socket it waits for moves or the deadline passes. So the kernel wakes
//! each waiting thread directly, from wherever the packet arrived; no
//! thread wakes another, and no lock is shared on the way.
//!
//! A socket waited on by several threads is registered in each of their
//! reactors, and every readiness event reaches all of them. When one
//! reaches a reactor whose thread is waiting on other sockets, and another
//! reactor has the socket too, the socket has moved on (a connection
//! handed around a pool, say): that reactor deregisters it, so that its
//! events stop waking a thread that no longer uses it, and registers it
//! again if its thread waits on it later. A socket only one reactor has
//! stays there, waited on or not. `try_clone` shares the socket rather
//! than duplicating its descriptor, so a socket has one [`Source`] however
//! many handles it has.
//!
//! # Ticks
//!
//! Each socket counts, per direction, the readiness events any reactor has
//! seen (its *tick*). A call reads the tick before it tries its operation
//! and waits on that tick: the wait is over as soon as the tick moves,
//! whichever thread's reactor saw the event. An event that came between
//! the try and the wait is therefore never lost: either some reactor has
//! dispatched it (the tick moved) or it is still queued in the poller of
//! every reactor the socket is registered in, the caller's included (a
//! registration made now reports the socket's present state).
//!
//! A call that learns the socket is drained (`WouldBlock`, or a short read
//! on a stream) records the tick it read; until the tick moves, the next
//! call skips the try that is bound to fail and waits at once. Once a
//! reactor has seen the peer's FIN or an error on a socket, a read may
//! return at once with no readiness event to come, so that socket is never
//! skipped again (the core's short-read rule and its caveat).
//!
//! # Closing
//!
//! A reactor keeps only a weak reference to each socket. When the last
//! handle is dropped the descriptor closes at once, which removes it from
//! every poller, and each reactor it was registered in is posted its token
//! to forget at its next turn ([`Reactor::forget`], no system call).
//!
//! # The spare reactor
//!
//! A thread that cannot have a reactor of its own (the process is out of
//! descriptors) waits in a shared one, made at the process's first wait
//! so that it exists when descriptors run out, and driven by a thread of
//! its own started when first needed. Its waits are posted to it, and it
//! wakes their threads when they are settled; their deadlines are timers
//! in its wheel. A wait is filed between two polls, so a timer that fires
//! in the turn that filed its wait (the thread was held up) only ends the
//! wait after the next poll, which takes in the sockets filed with it.
//!
//! # Panics
//!
//! Every handler method runs its body under `catch_unwind`: a panic there
//! (a bug) fails the waits it concerns with an error and leaves the
//! reactor usable, so it costs at most the calls that were waiting on it.

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
#[cfg(feature = "testing")]
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::{self, Thread};
use std::time::Duration;

use ontime_core::unix::FdSource;
use ontime_core::{
    AsSource, Builder, Direction, Handler, Interest, Reactor, Ready, Remote, TimerId, Token,
};
use socket2::SockRef;

use crate::mode::Deadline;

/// Readiness bookkeeping of one socket, shared by its handles and the
/// reactors it is registered in.
#[derive(Debug)]
pub(crate) struct Source {
    /// Readiness events seen, by [`Direction::index`]: bumped by every
    /// reactor on each event, and by `shutdown`.
    ticks: [AtomicU64; 2],
    /// One more than the tick each direction was at when a call last
    /// learned the socket was drained (`WouldBlock`, or a short read on a
    /// stream); 0 if no call has yet.
    blocked: [AtomicU64; 2],
    /// Sticky: a reactor saw the peer's FIN or an error. A read may then
    /// return at once with no event to announce it, so the socket is never
    /// taken for drained again.
    closed: AtomicBool,
    /// Set by a successful `shutdown(Read)` or `shutdown(Both)`, before
    /// the ticks move. Linux answers a non-blocking receive on a Unix
    /// datagram socket shut down for reading with `EAGAIN` for ever, but a
    /// blocking one with 0: its waiting receives check this to return 0 as
    /// the blocking kernel call would (R13).
    read_shut: AtomicBool,
    /// Calls waiting on this socket right now, for the test hooks only: two
    /// atomic writes per wait that nothing else reads.
    #[cfg(feature = "testing")]
    waiting: AtomicUsize,
    /// The id of a reactor the socket is registered in (0: none yet; the
    /// first, or a later one once the first is gone), readable without the
    /// lock: a socket is mostly waited on by one thread, whose waits then
    /// take no lock.
    first_home: AtomicU64,
    /// The reactors the socket is registered in, with its token in each.
    homes: Mutex<Vec<Homed>>,
    /// Test hook: the next dispatch of an event for this socket panics.
    #[cfg(feature = "testing")]
    pub(crate) panic_next: AtomicBool,
    /// Test hook: how many of the socket's next registrations fail.
    #[cfg(feature = "testing")]
    pub(crate) failing_registrations: AtomicUsize,
    /// Test hook: how long, in microseconds, the spare reactor's thread
    /// stalls after it next files a wait on this socket.
    #[cfg(feature = "testing")]
    pub(crate) stall_after_filing: AtomicU64,
}

impl Source {
    pub(crate) fn new() -> Source {
        Source {
            ticks: [AtomicU64::new(0), AtomicU64::new(0)],
            blocked: [AtomicU64::new(0), AtomicU64::new(0)],
            closed: AtomicBool::new(false),
            read_shut: AtomicBool::new(false),
            #[cfg(feature = "testing")]
            waiting: AtomicUsize::new(0),
            first_home: AtomicU64::new(0),
            homes: Mutex::new(Vec::new()),
            #[cfg(feature = "testing")]
            panic_next: AtomicBool::new(false),
            #[cfg(feature = "testing")]
            failing_registrations: AtomicUsize::new(0),
            #[cfg(feature = "testing")]
            stall_after_filing: AtomicU64::new(0),
        }
    }

    /// The readiness tick in `direction`: read it *before* trying an
    /// operation, and wait on it.
    pub(crate) fn tick(&self, direction: Direction) -> u64 {
        self.ticks[direction.index()].load(Ordering::Acquire)
    }

    /// Records that a call tried at `tick` found the socket drained.
    pub(crate) fn set_blocked(&self, direction: Direction, tick: u64) {
        self.blocked[direction.index()].store(tick.wrapping_add(1), Ordering::Release);
    }

    /// Whether a try at `tick` is bound to fail: the socket was found
    /// drained at this very tick, and no FIN or error has been seen. Never
    /// before a first call has found it so: that one tries first.
    pub(crate) fn is_drained(&self, direction: Direction, tick: u64) -> bool {
        tick.wrapping_add(1) == self.blocked[direction.index()].load(Ordering::Acquire)
            && !self.closed.load(Ordering::Acquire)
    }

    /// Whether `tick`, read from [`tick`](Source::tick), shows a reactor saw
    /// the socket become ready in `direction` since a call last found it
    /// drained (see [`crate::select`]).
    ///
    /// The caller passes the tick it read rather than this reading it again,
    /// so that it can wait on that same tick: an event between two reads
    /// would otherwise be seen by neither.
    pub(crate) fn ready_at(&self, direction: Direction, tick: u64) -> bool {
        match self.blocked[direction.index()].load(Ordering::Acquire) {
            // Never found drained: ready once any event came.
            0 => tick != 0,
            blocked => tick.wrapping_add(1) != blocked,
        }
    }

    /// How many calls are waiting on this socket right now.
    #[cfg(feature = "testing")]
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    fn bump(&self, direction: Direction) {
        self.ticks[direction.index()].fetch_add(1, Ordering::AcqRel);
    }

    /// Takes in a readiness event: the sticky flag first, then the ticks.
    fn note(&self, ready: Ready) {
        #[cfg(feature = "testing")]
        if self.panic_next.load(Ordering::Relaxed) && self.panic_next.swap(false, Ordering::AcqRel)
        {
            panic!("injected by ontime_sync::testing::panic_in_dispatch");
        }
        if ready.is_read_closed() || ready.is_error() {
            self.closed.store(true, Ordering::Release);
        }
        for direction in [Direction::Read, Direction::Write] {
            if ready.settles(direction) {
                self.bump(direction);
            }
        }
    }

    /// [`note`](Source::note) under [`contain`]. If it panics, the ticks
    /// move all the same, so that the event is not lost: every call on the
    /// socket tries again rather than wait for an edge that has come.
    fn note_contained(&self, ready: Ready) -> io::Result<()> {
        contain(|| self.note(ready)).inspect_err(|_| {
            self.bump(Direction::Read);
            self.bump(Direction::Write);
        })
    }

    fn homes(&self) -> MutexGuard<'_, Vec<Homed>> {
        // Nothing panics while holding this lock but an allocation failure
        // in `push`, after which the list is still consistent.
        self.homes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many live reactors the socket is registered in.
    #[cfg(feature = "testing")]
    pub(crate) fn reactors(&self) -> usize {
        self.homes().iter().filter(|h| h.lives()).count()
    }

    /// Takes `home` off the socket's reactors if another live one has the
    /// socket too; whether it did. The caller then deregisters it there.
    fn leave_if_shared(&self, home: &Home) -> bool {
        let mut homes = self.homes();
        homes.retain(Homed::lives);
        if homes.len() < 2 {
            return false;
        }
        homes.retain(|h| h.id != home.id);
        if self.first_home.load(Ordering::Acquire) == home.id {
            // Another reactor the socket stays in (the list holds only live
            // ones, and a reader that sees its id finds it registered).
            self.first_home.store(homes[0].id, Ordering::Release);
        }
        true
    }
}

impl Drop for Source {
    /// Runs after the socket's descriptor closed (the socket is the field
    /// before the source in [`Io`]): each reactor that had it forgets its
    /// token at its next turn.
    fn drop(&mut self) {
        let homes = std::mem::take(self.homes.get_mut().unwrap_or_else(|e| e.into_inner()));
        for homed in homes {
            if let Some(home) = homed.home.upgrade() {
                home.forget(homed.token);
            }
        }
    }
}

/// A socket as the driver sees it: its readiness state and its descriptor.
pub(crate) trait Registered: Send + Sync + 'static {
    fn source(&self) -> &Source;
    fn raw_fd(&self) -> RawFd;
}

/// A socket together with its [`Source`]. The field order matters: the
/// descriptor closes before the source tells the reactors to forget it.
#[derive(Debug)]
pub(crate) struct Io<S> {
    pub(crate) sock: S,
    pub(crate) source: Source,
}

impl<S: AsRawFd + Send + Sync + 'static> Registered for Io<S> {
    fn source(&self) -> &Source {
        &self.source
    }
    fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// One handle to a socket. Handles made by `try_clone` share the socket;
/// its descriptor closes when the last of them is dropped.
#[derive(Debug)]
pub(crate) struct Handle<S: AsRawFd + Send + Sync + 'static> {
    io: Arc<Io<S>>,
}

impl<S: AsRawFd + Send + Sync + 'static> Handle<S> {
    /// Wraps a socket that is already in non-blocking mode.
    pub(crate) fn new(sock: S) -> Handle<S> {
        Handle {
            io: Arc::new(Io {
                sock,
                source: Source::new(),
            }),
        }
    }

    /// Another handle to the same socket (`try_clone`). It shares the
    /// descriptor, so it costs none, cannot fail, and a shutdown through
    /// either handle wakes the calls waiting through both.
    pub(crate) fn share(&self) -> Handle<S> {
        Handle {
            io: Arc::clone(&self.io),
        }
    }

    pub(crate) fn io(&self) -> &Arc<Io<S>> {
        &self.io
    }

    /// Whether the socket was shut down for reading through any handle.
    pub(crate) fn is_read_shut(&self) -> bool {
        self.io.source.read_shut.load(Ordering::Acquire)
    }
}

impl<S: AsRawFd + AsFd + Send + Sync + 'static> Handle<S> {
    /// `shutdown(2)`, then moves the socket's ticks, whatever the result
    /// (R13). The kernel itself wakes every poller the socket is in (its
    /// state change is a readiness event), which wakes the calls waiting
    /// on it in any thread; the ticks settle at once the waits about to
    /// begin. A successful shutdown of the read side is recorded first
    /// (see [`is_read_shut`](Handle::is_read_shut)), so that the woken calls
    /// see it.
    ///
    /// Not named `shutdown`: that would hide the socket's own, reached
    /// through `Deref`.
    ///
    /// # Errors
    ///
    /// The OS error unchanged (for example `NotConnected`).
    pub(crate) fn shutdown_and_wake(&self, how: Shutdown) -> io::Result<()> {
        let source = &self.io.source;
        let result = SockRef::from(&self.io.sock).shutdown(how);
        if result.is_ok() && matches!(how, Shutdown::Read | Shutdown::Both) {
            source.read_shut.store(true, Ordering::Release);
        }
        source.bump(Direction::Read);
        source.bump(Direction::Write);
        result
    }
}

impl<S: AsRawFd + Send + Sync + 'static> std::ops::Deref for Handle<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.io.sock
    }
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A target's tick moved (readiness, or a shutdown): try again.
    Ready,
    /// The deadline passed.
    TimedOut,
}

/// One socket and direction a wait is for, with the tick read before the try.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) io: Arc<dyn Registered>,
    pub(crate) direction: Direction,
    pub(crate) tick: u64,
}

fn moved(targets: &[Target]) -> bool {
    targets
        .iter()
        .any(|t| t.io.source().tick(t.direction) != t.tick)
}

/// A reactor as the sockets registered in it see it: its id, and where to
/// post the tokens to forget.
struct Home {
    /// Unique in the process, never 0.
    id: u64,
    inbox: Inbox,
}

enum Inbox {
    Own(Remote<Token>),
    Spare(Remote<Request>),
}

impl Home {
    fn new(inbox: Inbox) -> Arc<Home> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Arc::new(Home {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            inbox,
        })
    }

    /// Has the reactor forget `token` at its next turn, without waking it.
    /// A reactor already gone forgot everything.
    fn forget(&self, token: Token) {
        let _ = match &self.inbox {
            Inbox::Own(remote) => remote.post(token).map_err(drop),
            Inbox::Spare(remote) => remote.post(Request::Forget(token)).map_err(drop),
        };
    }
}

/// One reactor a socket is registered in, as the socket lists it: by id
/// (the one identity of a reactor, also the fast path's), with a weak
/// reference to post it the token to forget.
#[derive(Debug)]
struct Homed {
    id: u64,
    home: Weak<Home>,
    token: Token,
}

impl Homed {
    fn lives(&self) -> bool {
        self.home.strong_count() > 0
    }
}

/// What a registration carries: the descriptor, and a weak reference to
/// the socket (a reactor never keeps a socket open).
struct Entry {
    fd: FdSource,
    io: Weak<dyn Registered>,
    /// Waits filed in the spare reactor, by [`Direction::index`]; always
    /// empty in a thread's own reactor, whose one wait is its thread's.
    waits: [Vec<Pending>; 2],
}

impl AsSource for Entry {
    fn source(&mut self) -> &mut dyn ontime_core::Source {
        &mut self.fd
    }
}

/// The socket's token in `reactor`, registering it first if it is not
/// registered there yet. A new registration reports the socket's present
/// readiness at the reactor's next poll.
fn register<H: Handler<State = Entry>>(
    reactor: &mut Reactor<H>,
    home: &Arc<Home>,
    io: &Arc<dyn Registered>,
) -> io::Result<Token> {
    let source = io.source();
    let mut homes = source.homes();
    if let Some(homed) = homes.iter().find(|h| h.id == home.id) {
        return Ok(homed.token);
    }
    homes.retain(Homed::lives);
    #[cfg(feature = "testing")]
    if source
        .failing_registrations
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
    {
        // What `epoll_ctl` says past `max_user_watches`.
        return Err(rustix::io::Errno::NOSPC.into());
    }
    let entry = Entry {
        fd: FdSource(io.raw_fd()),
        io: Arc::downgrade(io),
        waits: [Vec::new(), Vec::new()],
    };
    let token = reactor.register(entry, Interest::READABLE | Interest::WRITABLE)?;
    homes.push(Homed {
        id: home.id,
        home: Arc::downgrade(home),
        token,
    });
    // The fast path's reactor: the first, or this one once the first is
    // gone (its thread exited, or it left the socket), so that a socket
    // outliving its first waiter's thread keeps a lock-free check. Set
    // after the push: a reader that sees this id finds the registration
    // made. The list holds live reactors only, after the `retain`.
    let first = source.first_home.load(Ordering::Acquire);
    if !homes.iter().any(|h| h.id == first) {
        source.first_home.store(home.id, Ordering::Release);
    }
    Ok(token)
}

/// Whether the socket is registered in the reactor `home`, without the
/// lock when it is the socket's [`first_home`](Source::first_home) (ids
/// never repeat, so a dead reactor's id matches no live one).
fn is_registered_in(io: &dyn Registered, home: &Home) -> bool {
    io.source().first_home.load(Ordering::Acquire) == home.id
}

/// Runs a handler's body, turning a panic into an error for the waits it
/// concerns, so that it never unwinds through the reactor (which would
/// refuse every later turn).
fn contain(body: impl FnOnce()) -> io::Result<()> {
    panic::catch_unwind(AssertUnwindSafe(body)).map_err(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        log::error!("ontime-sync: dispatching a wait panicked: {what}");
        io::Error::other(format!("ontime-sync: dispatching a wait panicked: {what}"))
    })
}

// ---------------------------------------------------------------------------
// A thread's own reactor.

/// The handler of a thread's own reactor. The thread's one wait checks its
/// ticks after every turn, so this only moves ticks, records how the turn
/// ended, and leaves sockets that have moved on to another thread.
struct Own {
    /// The wait's deadline timer fired.
    timed_out: bool,
    /// A dispatch panicked during the wait, with the source it was about
    /// (by address, only to compare with the wait's targets).
    failure: Option<(*const Source, io::Error)>,
    /// The sockets of the running wait (by address, only to compare).
    targets: Vec<*const Source>,
    /// This reactor, as the sockets registered in it see it.
    home: Arc<Home>,
    /// Sockets deregistered during this turn, kept open until the reactor
    /// has told the OS (as the handler returns).
    leaving: Vec<Arc<dyn Registered>>,
}

impl Handler for Own {
    type State = Entry;
    type Timer = ();
    type Message = Token;

    fn ready(&mut self, reactor: &mut Reactor<Own>, token: Token, entry: &mut Entry, ready: Ready) {
        let Some(io) = entry.io.upgrade() else {
            return;
        };
        let source = io.source();
        if let Err(e) = source.note_contained(ready) {
            self.failure = Some((std::ptr::from_ref(source), e));
        }
        // An event for a socket this thread is not waiting on, which
        // another reactor has too: the socket has moved on to another
        // thread (a connection handed around a pool, say). Leave it to
        // that one, or every event would wake this thread as well. The
        // next wait here registers it again.
        if self.targets.contains(&std::ptr::from_ref(source)) {
            return;
        }
        let (home, leaving) = (&self.home, &mut self.leaving);
        // A panic here leaves the socket registered: a spurious wake or two.
        let _ = contain(|| {
            if source.leave_if_shared(home) {
                // Lent to this call: deregistered from the OS as it
                // returns, with the descriptor kept open until then.
                let _ = reactor.deregister(token);
                leaving.push(Arc::clone(&io));
            }
        });
    }

    fn timer(&mut self, _: &mut Reactor<Own>, _: TimerId, _: &mut ()) {
        // The only timer is the running wait's: each wait frees its own.
        self.timed_out = true;
    }

    fn message(&mut self, reactor: &mut Reactor<Own>, token: Token) {
        // The socket closed: the OS forgot it with its descriptor.
        let _ = reactor.forget(token);
    }
}

/// A thread's own reactor and its handler.
struct Local {
    reactor: Reactor<Own>,
    own: Own,
}

/// Readiness events one poll of a thread's reactor takes: a thread waits
/// for one socket, or a few with `select`.
const OWN_EVENTS: usize = 64;

/// The tick of the driver's timer wheels: a deadline fires no earlier than
/// asked and, on an idle machine, less than a tick plus the scheduler's
/// wake-up latency late.
const TICK: Duration = Duration::from_micros(100);

impl Local {
    /// One descriptor: the poller. No waker, since no other thread ever
    /// needs to interrupt this one's wait.
    fn new() -> io::Result<Local> {
        let reactor = Builder::new()
            .tick(TICK)
            .waker(false)
            .events_capacity(OWN_EVENTS)
            .build::<Own>()?;
        let home = Home::new(Inbox::Own(reactor.remote()));
        Ok(Local {
            reactor,
            own: Own {
                timed_out: false,
                failure: None,
                targets: Vec::new(),
                home,
                leaving: Vec::new(),
            },
        })
    }

    /// Waits in this thread's reactor. The second value says whether the
    /// reactor failed and must be replaced. `None` if a socket could not be
    /// registered here (`ENOMEM`, say): the wait is the spare reactor's.
    fn wait(
        &mut self,
        targets: &[Target],
        deadline: Deadline,
    ) -> Option<(io::Result<Outcome>, bool)> {
        for target in targets {
            if is_registered_in(&*target.io, &self.own.home) {
                continue;
            }
            if let Err(e) = register(&mut self.reactor, &self.own.home, &target.io) {
                log::debug!(
                    "registering fd {} in this thread's reactor failed ({e}): the spare one",
                    target.io.raw_fd()
                );
                return None;
            }
        }
        let Local { reactor, own } = self;
        own.timed_out = false;
        own.failure = None;
        own.targets.clear();
        own.targets
            .extend(targets.iter().map(|t| std::ptr::from_ref(t.io.source())));
        let (timer, max_wait) = match deadline {
            Deadline::At(at) => (Some(reactor.timer_at(at, ())), None),
            Deadline::Never => (None, None),
            // One look: a poll that does not block.
            Deadline::Now => (None, Some(Duration::ZERO)),
        };
        let mut looked = false;
        let (result, broken) = loop {
            // A panic about one of this wait's sockets fails it (the ticks
            // moved too, so later calls lose nothing); one about another
            // socket is that socket's calls' business.
            if let Some((source, e)) = own.failure.take() {
                if targets.iter().any(|t| std::ptr::eq(t.io.source(), source)) {
                    break (Err(e), false);
                }
            }
            if moved(targets) {
                break (Ok(Outcome::Ready), false);
            }
            if own.timed_out || (looked && max_wait.is_some()) {
                break (Ok(Outcome::TimedOut), false);
            }
            // An interrupted poll is a turn with no events: the deadline
            // stays where it is (R5).
            let turned = reactor.turn(own, max_wait);
            own.leaving.clear();
            if let Err(e) = turned {
                break (Err(e), true);
            }
            looked = true;
        };
        if let Some(timer) = timer {
            if !own.timed_out {
                reactor.cancel_timer(timer);
            }
        }
        Some((result, broken))
    }
}

thread_local! {
    /// This thread's reactor, made at its first wait.
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// Waits in this thread's own reactor; `None` if the thread cannot have one
/// (out of descriptors, or its thread-locals are being destroyed) or cannot
/// register a socket in it.
fn wait_own(targets: &[Target], deadline: Deadline) -> Option<io::Result<Outcome>> {
    #[cfg(feature = "testing")]
    if crate::testing::uses_spare() {
        return None;
    }
    LOCAL
        .try_with(|cell| {
            let mut slot = cell.try_borrow_mut().ok()?;
            if slot.is_none() {
                // Make the spare while descriptors are still to be had.
                if let Err(e) = Spare::get() {
                    log::debug!("making the spare reactor failed: {e}");
                }
                match Local::new() {
                    Ok(local) => *slot = Some(local),
                    Err(e) => {
                        log::debug!("no reactor of its own for this thread ({e}): the spare one");
                        return None;
                    }
                }
            }
            let local = slot.as_mut().expect("made just above");
            let (result, broken) = local.wait(targets, deadline)?;
            if broken {
                *slot = None;
            }
            Some(result)
        })
        .ok()
        .flatten()
}

// ---------------------------------------------------------------------------
// The spare reactor.

/// A thread's wait filed in the spare reactor.
#[derive(Debug)]
struct Waiter {
    /// One of `WAITING`, `READY`, `TIMED_OUT`, `FAILED`; leaves `WAITING` once.
    state: AtomicU8,
    /// With `FAILED`: why.
    error: Mutex<Option<io::Error>>,
    thread: Thread,
    /// The spare reactor's turn that filed the wait (only its thread
    /// touches this).
    filed: AtomicU64,
}

const WAITING: u8 = 0;
const READY: u8 = 1;
const TIMED_OUT: u8 = 2;
const FAILED: u8 = 3;

impl Waiter {
    fn is_waiting(&self) -> bool {
        self.state.load(Ordering::Acquire) == WAITING
    }

    /// Settles the wait, if it is still open, and wakes its thread.
    fn settle(&self, to: u8) {
        if self
            .state
            .compare_exchange(WAITING, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.thread.unpark();
        }
    }

    fn fail(&self, error: io::Error) {
        if self.is_waiting() {
            *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
            self.settle(FAILED);
        }
    }

    fn outcome(&self) -> io::Result<Outcome> {
        match self.state.load(Ordering::Acquire) {
            READY => Ok(Outcome::Ready),
            TIMED_OUT => Ok(Outcome::TimedOut),
            _ => Err(self
                .error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_else(|| io::Error::other("ontime-sync: the wait failed"))),
        }
    }
}

/// A wait listed under a socket in the spare reactor.
struct Pending {
    waiter: Arc<Waiter>,
    /// The wait's deadline timer, freed when anything else settles the
    /// wait. Once it has fired the id is stale, and cancelling it touches
    /// nothing.
    timer: Option<TimerId>,
}

/// What threads post to the spare reactor.
enum Request {
    Wait {
        targets: Vec<Target>,
        deadline: Deadline,
        waiter: Arc<Waiter>,
    },
    /// The end of a wait whose deadline is now or has passed, posted by the
    /// reactor to itself so that it comes after one more poll.
    Expire(Arc<Waiter>),
    /// A socket closed.
    Forget(Token),
}

/// The spare reactor's handler.
struct Dispatch {
    home: Arc<Home>,
    /// Turns ended so far.
    turn: u64,
}

impl Dispatch {
    /// Files a wait: settles it at once if a target's tick has moved,
    /// else lists it under each target, with a timer for its deadline.
    fn file(
        &self,
        reactor: &mut Reactor<Dispatch>,
        targets: &[Target],
        deadline: Deadline,
        waiter: &Arc<Waiter>,
    ) {
        if moved(targets) {
            waiter.settle(READY);
            return;
        }
        waiter.filed.store(self.turn, Ordering::Relaxed);
        let timer = match deadline {
            // If it fires in this very turn, before a poll has taken in the
            // sockets registered now, it only asks for an `Expire`.
            Deadline::At(at) => Some(reactor.timer_at(at, Arc::clone(waiter))),
            Deadline::Never => None,
            // A zero timeout: after one more poll.
            Deadline::Now => {
                let _ = reactor.remote().post(Request::Expire(Arc::clone(waiter)));
                None
            }
        };
        for target in targets {
            let token = match register(reactor, &self.home, &target.io) {
                Ok(token) => token,
                Err(e) => {
                    log::debug!("registering fd {} failed: {e}", target.io.raw_fd());
                    waiter.fail(e);
                    break;
                }
            };
            let entry = reactor
                .state_mut(token)
                .expect("waits are filed outside any handler call about a socket");
            let waits = &mut entry.waits[target.direction.index()];
            // Waits settled since they were filed (by their deadline) leave
            // the list here.
            waits.retain(|pending| pending.waiter.is_waiting());
            waits.push(Pending {
                waiter: Arc::clone(waiter),
                timer,
            });
        }
        if !waiter.is_waiting() {
            if let Some(timer) = timer {
                reactor.cancel_timer(timer);
            }
        }
        #[cfg(feature = "testing")]
        for target in targets {
            let micros = target
                .io
                .source()
                .stall_after_filing
                .swap(0, Ordering::AcqRel);
            if micros > 0 {
                thread::sleep(Duration::from_micros(micros));
            }
        }
    }
}

/// Settles the waits and frees their timers.
fn settle_all(reactor: &mut Reactor<Dispatch>, waits: Vec<Pending>, failure: Option<&io::Error>) {
    for pending in waits {
        match failure {
            None => pending.waiter.settle(READY),
            Some(e) => pending.waiter.fail(io::Error::new(e.kind(), e.to_string())),
        }
        if let Some(timer) = pending.timer {
            reactor.cancel_timer(timer);
        }
    }
}

impl Handler for Dispatch {
    type State = Entry;
    type Timer = Arc<Waiter>;
    type Message = Request;

    fn ready(
        &mut self,
        reactor: &mut Reactor<Dispatch>,
        _: Token,
        entry: &mut Entry,
        ready: Ready,
    ) {
        let noted = match entry.io.upgrade() {
            Some(io) => io.source().note_contained(ready),
            None => Ok(()),
        };
        for direction in [Direction::Read, Direction::Write] {
            if ready.settles(direction) || noted.is_err() {
                let waits = std::mem::take(&mut entry.waits[direction.index()]);
                settle_all(reactor, waits, noted.as_ref().err());
            }
        }
    }

    fn timer(&mut self, reactor: &mut Reactor<Dispatch>, _: TimerId, waiter: &mut Arc<Waiter>) {
        if waiter.filed.load(Ordering::Relaxed) == self.turn {
            // Filed in this turn (the thread was held up between the post
            // and now): the sockets registered then have not been polled
            // yet, and one of them may be ready. After one more poll.
            let _ = reactor.remote().post(Request::Expire(Arc::clone(waiter)));
        } else {
            waiter.settle(TIMED_OUT);
        }
    }

    fn turn_end(&mut self, _: &mut Reactor<Dispatch>) {
        self.turn += 1;
    }

    fn message(&mut self, reactor: &mut Reactor<Dispatch>, request: Request) {
        match request {
            Request::Wait {
                targets,
                deadline,
                waiter,
            } => {
                if let Err(e) = contain(|| {
                    #[cfg(feature = "testing")]
                    for target in &targets {
                        if target.io.source().panic_next.swap(false, Ordering::AcqRel) {
                            panic!("injected by ontime_sync::testing::panic_in_dispatch");
                        }
                    }
                    self.file(reactor, &targets, deadline, &waiter);
                }) {
                    waiter.fail(e);
                }
            }
            Request::Expire(waiter) => waiter.settle(TIMED_OUT),
            // No wait is open on a closed socket (a waiting call holds a
            // handle): its lists hold settled waits only.
            Request::Forget(token) => drop(reactor.forget(token)),
        }
    }
}

/// The spare reactor, shared by the threads that cannot have their own.
struct Spare {
    remote: Remote<Request>,
    /// The reactor until its thread takes it.
    parked: Mutex<Option<(Reactor<Dispatch>, Dispatch)>>,
}

/// The spare reactor, once made.
static SPARE: OnceLock<Spare> = OnceLock::new();
/// Held while making it, so that two threads do not both spend descriptors.
static SPARE_MAKING: Mutex<()> = Mutex::new(());

impl Spare {
    /// The spare reactor, made now if it does not exist yet. Two descriptors (poller and waker) for the whole process.
    fn get() -> io::Result<&'static Spare> {
        if let Some(spare) = SPARE.get() {
            return Ok(spare);
        }
        let _making = SPARE_MAKING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(spare) = SPARE.get() {
            return Ok(spare);
        }
        let reactor = Builder::new()
            .tick(TICK)
            .messages_per_turn(1024)
            .build::<Dispatch>()?;
        let remote = reactor.remote();
        let dispatch = Dispatch {
            home: Home::new(Inbox::Spare(reactor.remote())),
            turn: 0,
        };
        let spare = Spare {
            remote,
            parked: Mutex::new(Some((reactor, dispatch))),
        };
        Ok(SPARE.get_or_init(|| spare))
    }

    /// Starts the reactor's thread, unless it runs already.
    fn start(&self) -> io::Result<()> {
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        let Some((reactor, dispatch)) = parked.take() else {
            return Ok(());
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = thread::Builder::new()
            .name("ontime-sync spare reactor".to_owned())
            .spawn(move || {
                let (mut reactor, mut dispatch) = rx.recv().expect("sent after the spawn");
                run_spare(&mut reactor, &mut dispatch);
            });
        match spawned {
            Ok(_) => {
                tx.send((reactor, dispatch))
                    .expect("the thread waits for it");
                Ok(())
            }
            Err(e) => {
                *parked = Some((reactor, dispatch));
                Err(e)
            }
        }
    }

    fn wait(&self, targets: &[Target], deadline: Deadline) -> io::Result<Outcome> {
        self.start()?;
        let waiter = Arc::new(Waiter {
            state: AtomicU8::new(WAITING),
            error: Mutex::new(None),
            thread: thread::current(),
            filed: AtomicU64::new(0),
        });
        let request = Request::Wait {
            targets: targets.to_vec(),
            deadline,
            waiter: Arc::clone(&waiter),
        };
        if self.remote.send(request).is_err() {
            return Err(io::Error::other("ontime-sync: the spare reactor is gone"));
        }
        // The deadline is the reactor's timer: it settles the wait.
        while waiter.is_waiting() {
            thread::park();
        }
        waiter.outcome()
    }
}

/// The spare reactor's thread: turns it for ever. Handler panics are
/// contained in the handler; a failed poll is logged and retried after a
/// pause, so that a persistent error cannot spin.
fn run_spare(reactor: &mut Reactor<Dispatch>, dispatch: &mut Dispatch) {
    loop {
        if let Err(e) = reactor.turn(dispatch, None) {
            log::error!("ontime-sync: the spare reactor's poll failed: {e}");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

// ---------------------------------------------------------------------------

/// Counts a call as waiting on its targets while it lives (for the test
/// hooks).
#[cfg(feature = "testing")]
struct Waiting<'a>(&'a [Target]);

#[cfg(feature = "testing")]
impl<'a> Waiting<'a> {
    fn new(targets: &'a [Target]) -> Waiting<'a> {
        for target in targets {
            target.io.source().waiting.fetch_add(1, Ordering::AcqRel);
        }
        Waiting(targets)
    }
}

#[cfg(feature = "testing")]
impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        for target in self.0 {
            target.io.source().waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Waits until one of `targets` moves (readiness, or a shutdown) or the
/// deadline passes. The caller read each target's tick before trying its
/// operation; the wait settles at once if a tick has moved since.
/// `Deadline::Now` looks once: it takes in the readiness the OS has
/// without blocking (for `select` with a zero timeout).
///
/// # Errors
///
/// Any error polling or registering a socket, or of a dispatch that
/// panicked; with no reactor of its own and no spare one, the error making
/// the spare one.
pub(crate) fn wait(targets: &[Target], deadline: Deadline) -> io::Result<Outcome> {
    // A deadline already past needs no check here: its timer is due, and
    // the reactor fires it in the next turn without blocking.
    #[cfg(feature = "testing")]
    let _waiting = Waiting::new(targets);
    if let Some(result) = wait_own(targets, deadline) {
        return result;
    }
    Spare::get()?.wait(targets, deadline)
}
