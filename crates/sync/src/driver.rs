//! The driver: one `ontime_core::Reactor` shared by every blocking thread,
//! driven by whichever of them is waiting (leader/follower).
//!
//! A thread whose call must wait first tries to take the reactor lock. If it
//! gets it, it is the *leader*: it files its wait directly and turns the
//! reactor until its own wait is settled, waking the other waiters whose
//! sockets become ready or whose deadlines pass on the way. If another thread
//! leads, it is a *follower*: it posts its wait to the leader through the
//! reactor's `Remote` and parks with its own deadline, so its timeout never
//! depends on the leader's progress. A leader that is done hands the role to
//! a waiting follower (the "baton"), so no waiter is stranded without a
//! thread polling for it.
//!
//! Lost wake-ups are prevented by readiness *ticks*: each source counts the
//! readiness events seen per direction. A caller reads the tick before it
//! tries its operation and sends it with its wait; the leader settles a wait
//! at once if the tick has moved since. A follower re-reads the tick after
//! posting, which covers an event dispatched between its try and the leader
//! draining the queue. That is why a wait on an already-registered source
//! needs no wake-up of the leader at all: the event it waits for wakes it.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError, Weak};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use ontime_core::unix::FdSource;
use ontime_core::{
    AsSource, Builder, Direction, Handler, Interest, Reactor, Ready, Remote, TimerId, Token,
};
use slab::Slab;
use socket2::SockRef;

use crate::mode::Deadline;

/// Readiness bookkeeping of one socket, shared by its handles and the driver.
#[derive(Debug)]
pub(crate) struct Source {
    /// Readiness events seen, by [`Direction::index`]: bumped by the leader
    /// on each event, and by `shutdown` to wake waiters.
    ticks: [AtomicU64; 2],
    /// The tick each direction was at when a call last got `WouldBlock`:
    /// the socket is known ready while its tick is past this.
    blocked: [AtomicU64; 2],
    /// The reactor token, or `UNREGISTERED`. Written by the leader only.
    token: AtomicUsize,
    /// Set before the first wait is posted: from then on the socket may be
    /// registered, and closing it must go through the driver.
    engaged: AtomicBool,
    /// Calls waiting on this socket right now.
    waiting: AtomicUsize,
}

const UNREGISTERED: usize = usize::MAX;

impl Source {
    pub(crate) fn new() -> Source {
        Source {
            ticks: [AtomicU64::new(0), AtomicU64::new(0)],
            blocked: [AtomicU64::new(0), AtomicU64::new(0)],
            token: AtomicUsize::new(UNREGISTERED),
            engaged: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
        }
    }

    /// The readiness tick in `direction`: read it *before* trying an
    /// operation, and pass it to [`wait`].
    pub(crate) fn tick(&self, direction: Direction) -> u64 {
        self.ticks[direction.index()].load(Ordering::Acquire)
    }

    /// Records that a call tried at `tick` got `WouldBlock`.
    pub(crate) fn set_blocked(&self, direction: Direction, tick: u64) {
        self.blocked[direction.index()].store(tick, Ordering::Release);
    }

    /// Whether `tick`, read from [`tick`](Source::tick), shows the reactor
    /// saw the socket become ready in `direction` since a call last got
    /// `WouldBlock` (see [`crate::select`]).
    ///
    /// The caller passes the tick it read rather than this reading it again,
    /// so that it can wait on that same tick: an event between two reads
    /// would otherwise be seen by neither.
    pub(crate) fn ready_at(&self, direction: Direction, tick: u64) -> bool {
        self.is_registered() && tick != self.blocked[direction.index()].load(Ordering::Acquire)
    }

    fn bump(&self, direction: Direction) {
        self.ticks[direction.index()].fetch_add(1, Ordering::AcqRel);
    }

    /// How many calls are waiting on this socket right now.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    pub(crate) fn is_registered(&self) -> bool {
        self.token.load(Ordering::Acquire) != UNREGISTERED
    }
}

/// A socket as the driver sees it: its readiness state and its descriptor.
pub(crate) trait Registered: Send + Sync + 'static {
    fn source(&self) -> &Source;
    fn raw_fd(&self) -> RawFd;
}

/// A socket together with its [`Source`]. The driver keeps an `Arc` of it
/// while the socket is registered, so the descriptor stays open until it has
/// been deregistered, however the handles were dropped.
#[derive(Debug)]
pub(crate) struct Io<S> {
    pub(crate) sock: S,
    pub(crate) source: Source,
    /// Every handle made from this socket by `try_clone`, this one included.
    kin: Arc<Kin>,
}

/// The descriptors of one socket (`try_clone` duplicates): a shutdown through
/// any of them must wake calls waiting on all of them, and for some sockets
/// (a Unix datagram socket shut down for reading) the OS reports nothing.
#[derive(Default)]
struct Kin {
    members: Mutex<Vec<Weak<dyn Registered>>>,
    /// Set by a successful `shutdown(Read)` or `shutdown(Both)` through any
    /// member, before the waiters are woken. Linux answers a non-blocking
    /// receive on a Unix datagram socket shut down for reading with `EAGAIN`
    /// for ever, but a blocking one with 0, and no readiness event follows
    /// the `EAGAIN`: its waiting receives check this to return 0 as the
    /// blocking kernel call would (R13).
    read_shut: AtomicBool,
}

impl std::fmt::Debug for Kin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kin").finish_non_exhaustive()
    }
}

impl Kin {
    fn members(&self) -> MutexGuard<'_, Vec<Weak<dyn Registered>>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn join(&self, member: Weak<dyn Registered>) {
        let mut members = self.members();
        members.retain(|m| m.strong_count() > 0);
        members.push(member);
    }
}

impl<S: AsRawFd + Send + Sync + 'static> Registered for Io<S> {
    fn source(&self) -> &Source {
        &self.source
    }
    fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// One socket handle's share of an [`Io`]: when it is dropped, the driver
/// deregisters the socket before its descriptor is closed.
#[derive(Debug)]
pub(crate) struct Handle<S: AsRawFd + Send + Sync + 'static> {
    io: Arc<Io<S>>,
}

impl<S: AsRawFd + Send + Sync + 'static> Handle<S> {
    /// Wraps a socket that is already in non-blocking mode.
    pub(crate) fn new(sock: S) -> Handle<S> {
        Handle::with_kin(sock, Arc::default())
    }

    fn with_kin(sock: S, kin: Arc<Kin>) -> Handle<S> {
        let io = Arc::new(Io {
            sock,
            source: Source::new(),
            kin,
        });
        let member: Arc<dyn Registered> = io.clone();
        io.kin.join(Arc::downgrade(&member));
        Handle { io }
    }

    /// A handle to a duplicate of the socket, made by `dup` (std's
    /// `try_clone`, which keeps the descriptor non-blocking). It has its own
    /// registration; a shutdown through either wakes both.
    ///
    /// # Errors
    ///
    /// The OS error duplicating the descriptor.
    pub(crate) fn duplicate(&self, dup: impl FnOnce(&S) -> io::Result<S>) -> io::Result<Handle<S>> {
        let sock = dup(&self.io.sock)?;
        Ok(Handle::with_kin(sock, Arc::clone(&self.io.kin)))
    }

    pub(crate) fn io(&self) -> &Arc<Io<S>> {
        &self.io
    }

    /// Whether the socket was shut down for reading through this handle or
    /// any of its duplicates (see [`shutdown_and_wake`](Handle::shutdown_and_wake)).
    pub(crate) fn is_read_shut(&self) -> bool {
        self.io.kin.read_shut.load(Ordering::Acquire)
    }

    /// Wakes every call waiting on this socket, through any of its
    /// duplicates (used by `shutdown`, R13).
    fn kick(&self) {
        let members: Vec<Arc<dyn Registered>> = self
            .io
            .kin
            .members()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for member in members {
            let source = member.source();
            // Waits not yet filed see the moved ticks and settle at once.
            source.bump(Direction::Read);
            source.bump(Direction::Write);
            if source.engaged.load(Ordering::Acquire) {
                if let Some(driver) = DRIVER.get() {
                    driver.submit(Request::Kick(member));
                }
            }
        }
    }
}

impl<S: AsRawFd + AsFd + Send + Sync + 'static> Handle<S> {
    /// `shutdown(2)`, then wakes the calls blocked on the socket through any
    /// of its duplicates, whatever the result (R13). A successful shutdown of
    /// the read side is recorded first (see [`is_read_shut`](Handle::is_read_shut)),
    /// so that the woken calls see it.
    ///
    /// Not named `shutdown`: that would hide the socket's own, reached
    /// through `Deref`.
    ///
    /// # Errors
    ///
    /// The OS error unchanged (for example `NotConnected`).
    pub(crate) fn shutdown_and_wake(&self, how: Shutdown) -> io::Result<()> {
        let result = SockRef::from(&self.io.sock).shutdown(how);
        if result.is_ok() && matches!(how, Shutdown::Read | Shutdown::Both) {
            self.io.kin.read_shut.store(true, Ordering::Release);
        }
        self.kick();
        result
    }
}

impl<S: AsRawFd + Send + Sync + 'static> std::ops::Deref for Handle<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.io.sock
    }
}

impl<S: AsRawFd + Send + Sync + 'static> Drop for Handle<S> {
    fn drop(&mut self) {
        if self.io.source.engaged.load(Ordering::Acquire) {
            if let Some(driver) = DRIVER.get() {
                driver.submit(Request::Close(self.io.clone()));
            }
        }
    }
}

/// A thread's pending wait.
#[derive(Debug)]
pub(crate) struct Waiter {
    /// One of `WAITING`, `READY`, `TIMED_OUT`, `FAILED`; leaves `WAITING` once.
    state: AtomicU8,
    /// With `FAILED`: the error registering the socket.
    error: Mutex<Option<io::Error>>,
    /// Set when a finished leader asked this thread to take over.
    baton: AtomicBool,
    thread: Thread,
}

const WAITING: u8 = 0;
const READY: u8 = 1;
const TIMED_OUT: u8 = 2;
const FAILED: u8 = 3;

impl Waiter {
    fn new() -> Waiter {
        Waiter {
            state: AtomicU8::new(WAITING),
            error: Mutex::new(None),
            baton: AtomicBool::new(false),
            thread: thread::current(),
        }
    }

    fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    fn is_waiting(&self) -> bool {
        self.state() == WAITING
    }

    /// Settles the wait, if it is still open, and wakes its thread.
    fn settle(&self, to: u8) -> bool {
        let settled = self
            .state
            .compare_exchange(WAITING, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if settled {
            self.thread.unpark();
        }
        settled
    }

    fn outcome(&self) -> io::Result<Outcome> {
        match self.state() {
            READY => Ok(Outcome::Ready),
            TIMED_OUT => Ok(Outcome::TimedOut),
            FAILED => Err(self
                .error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_else(|| io::Error::other("registering the socket failed"))),
            state => unreachable!("outcome of an open wait (state {state})"),
        }
    }
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A readiness event came (or the socket was shut down): try again.
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

/// What threads ask of the leader.
pub(crate) enum Request {
    Wait {
        targets: Vec<Target>,
        deadline: Option<Instant>,
        waiter: Arc<Waiter>,
    },
    /// Wake every waiter of a socket.
    Kick(Arc<dyn Registered>),
    /// Deregister a socket whose last handle is gone.
    Close(Arc<dyn Registered>),
}

/// The leader's state: the reactor and its handler.
struct Core {
    reactor: Reactor<Dispatch>,
    dispatch: Dispatch,
}

/// The handler. It keeps no tables: who waits for which socket lives in
/// each registration's state (an [`Entry`]), and which wait a deadline
/// timer is for in the timer's value.
#[derive(Debug)]
struct Dispatch;

/// A registered socket: the state its registration carries.
struct Entry {
    /// The descriptor, as the reactor's source. The `io` next to it keeps it
    /// open until the registration is gone.
    fd: FdSource,
    io: Arc<dyn Registered>,
    /// Open waits, by [`Direction::index`].
    waits: [Vec<Pending>; 2],
}

impl AsSource for Entry {
    fn source(&mut self) -> &mut dyn ontime_core::Source {
        &mut self.fd
    }
}

struct Pending {
    waiter: Arc<Waiter>,
    /// The wait's deadline timer, to free when the wait is settled by
    /// anything else. Once it has fired the id is stale, and cancelling it
    /// touches nothing.
    timer: Option<TimerId>,
}

/// Files a wait: settles it at once if a target's tick has moved, else
/// registers the targets as needed and lists the wait under each, with a
/// timer for its deadline.
fn file(
    reactor: &mut Reactor<Dispatch>,
    targets: &[Target],
    deadline: Option<Instant>,
    waiter: &Arc<Waiter>,
) {
    if !waiter.is_waiting() {
        // Settled by its own thread already (its deadline passed).
        return;
    }
    // First settle at once if any target moved; only then register.
    for target in targets {
        if target.io.source().tick(target.direction) != target.tick {
            waiter.settle(READY);
            return;
        }
    }
    let timer = deadline.map(|deadline| reactor.timer_at(deadline, Arc::clone(waiter)));
    for target in targets {
        let token = match register(reactor, &target.io) {
            Ok(token) => token,
            Err(e) => {
                log::debug!("registering fd {} failed: {e}", target.io.raw_fd());
                *waiter.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                waiter.settle(FAILED);
                break;
            }
        };
        // Waits are filed outside any handler call about a socket, so no
        // state is lent now.
        let entry = reactor
            .state_mut(token)
            .expect("a registered token has its entry");
        let waits = &mut entry.waits[target.direction.index()];
        // Waits settled since they were filed (by their own deadline or
        // recheck) leave the list here; their timers go too, now rather
        // than when they fire. Rarely any, so rarely an allocation.
        let mut stale = Vec::new();
        let mut i = 0;
        while i < waits.len() {
            if waits[i].waiter.is_waiting() {
                i += 1;
            } else {
                stale.extend(waits.swap_remove(i).timer);
            }
        }
        waits.push(Pending {
            waiter: Arc::clone(waiter),
            timer,
        });
        for stale in stale {
            reactor.cancel_timer(stale);
        }
        // A shutdown on another thread moves the ticks without the lock;
        // its Kick request would wake this wait later anyway, but
        // settling now saves the round trip.
        if target.io.source().tick(target.direction) != target.tick {
            waiter.settle(READY);
            break;
        }
    }
    if !waiter.is_waiting() {
        if let Some(timer) = timer {
            reactor.cancel_timer(timer);
        }
    }
}

/// The socket's token, registering it first if it is not registered.
fn register(reactor: &mut Reactor<Dispatch>, io: &Arc<dyn Registered>) -> io::Result<Token> {
    let source = io.source();
    let token = source.token.load(Ordering::Acquire);
    if token != UNREGISTERED {
        return Ok(Token(token));
    }
    let entry = Entry {
        fd: FdSource(io.raw_fd()),
        io: Arc::clone(io),
        waits: [Vec::new(), Vec::new()],
    };
    let token = reactor.register(entry, Interest::READABLE | Interest::WRITABLE)?;
    source.token.store(token.0, Ordering::Release);
    Ok(token)
}

/// Settles the waits and frees their timers.
fn wake(reactor: &mut Reactor<Dispatch>, waits: impl IntoIterator<Item = Pending>) {
    for pending in waits {
        pending.waiter.settle(READY);
        // Whoever settled the wait (this, the follower's own recheck or
        // its own deadline), its timer is of no use any more: free it
        // now rather than when it fires, which may be hours away. A timer
        // that already fired has a stale id, which cancels nothing.
        if let Some(timer) = pending.timer {
            reactor.cancel_timer(timer);
        }
    }
}

/// Wakes every wait on `token`, in both directions (for a `Kick`, so the
/// state is not lent).
fn wake_all(reactor: &mut Reactor<Dispatch>, token: Token) {
    let Some(entry) = reactor.state_mut(token) else {
        return;
    };
    let [read, write] = std::mem::take(&mut entry.waits);
    wake(reactor, read.into_iter().chain(write));
}

/// Deregisters a socket whose last handle is gone. No call can be
/// waiting on it any more (a waiting call holds a handle), and a wait
/// request still queued for it belongs to a settled waiter, which
/// [`file`](fn@file) skips: nothing can register it again.
fn close(reactor: &mut Reactor<Dispatch>, io: &Arc<dyn Registered>) {
    let source = io.source();
    let token = source.token.swap(UNREGISTERED, Ordering::AcqRel);
    if token == UNREGISTERED {
        return;
    }
    let token = Token(token);
    // Taken first: a failed deregistration drops the entry, and its waits'
    // timers must be freed all the same.
    let waits = reactor
        .state_mut(token)
        .map(|entry| std::mem::take(&mut entry.waits));
    let entry = match reactor.deregister(token) {
        Ok(entry) => entry,
        Err(e) => {
            log::debug!("deregistering fd {} failed: {e}", io.raw_fd());
            None
        }
    };
    if let Some([read, write]) = waits {
        wake(reactor, read.into_iter().chain(write));
    }
    // Dropping the entry drops the driver's Arc: the descriptor closes
    // now if no handle is left.
    drop(entry);
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
        for direction in [Direction::Read, Direction::Write] {
            if ready.settles(direction) {
                entry.io.source().bump(direction);
                wake(reactor, entry.waits[direction.index()].drain(..));
            }
        }
    }

    fn timer(&mut self, _: &mut Reactor<Dispatch>, _: TimerId, waiter: &mut Arc<Waiter>) {
        waiter.settle(TIMED_OUT);
    }

    fn message(&mut self, reactor: &mut Reactor<Dispatch>, request: Request) {
        match request {
            Request::Wait {
                targets,
                deadline,
                waiter,
            } => file(reactor, &targets, deadline, &waiter),
            Request::Kick(io) => {
                let token = io.source().token.load(Ordering::Acquire);
                if token != UNREGISTERED {
                    wake_all(reactor, Token(token));
                }
            }
            Request::Close(io) => close(reactor, &io),
        }
    }
}

/// The process's one driver.
static DRIVER: OnceLock<Driver> = OnceLock::new();

struct Driver {
    /// Whoever holds this lock leads: it alone turns the reactor.
    core: Mutex<Core>,
    remote: Remote<Request>,
    /// Threads parked in a wait that may be asked to lead.
    followers: Mutex<Slab<Arc<Waiter>>>,
}

impl Driver {
    fn get() -> io::Result<&'static Driver> {
        if let Some(driver) = DRIVER.get() {
            return Ok(driver);
        }
        let reactor = Builder::new().messages_per_turn(1024).build::<Dispatch>()?;
        let remote = reactor.remote();
        let driver = Driver {
            core: Mutex::new(Core {
                reactor,
                dispatch: Dispatch,
            }),
            remote,
            followers: Mutex::new(Slab::new()),
        };
        // Two threads may race here; the loser's reactor is simply dropped.
        let _ = DRIVER.set(driver);
        Ok(DRIVER.get().expect("driver was just set"))
    }

    fn try_lead(&self) -> Option<MutexGuard<'_, Core>> {
        match self.core.try_lock() {
            Ok(core) => Some(core),
            // Known weakness: a panic inside `Dispatch` (a broken invariant)
            // leaves the reactor refusing every later turn, so from then on
            // every wait that must lead fails with an error. Taking the
            // poisoned lock at least lets followers see that error rather
            // than hang.
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    fn followers(&self) -> MutexGuard<'_, Slab<Arc<Waiter>>> {
        self.followers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a request now if no one leads, else hands it to the leader.
    fn submit(&self, request: Request) {
        if let Some(mut core) = self.try_lead() {
            let Core { reactor, dispatch } = &mut *core;
            dispatch.message(reactor, request);
            drop(core);
            self.after_lead();
            return;
        }
        if let Err(e) = self.remote.send(request) {
            log::warn!("the sync driver's reactor is gone: {e}");
            return;
        }
        // Pairs with the fence in `after_lead`: either the leader sees the
        // message after unlocking, or this try_lock sees the lock free.
        fence(Ordering::SeqCst);
        if let Some(mut core) = self.try_lead() {
            turn_now(&mut core);
            drop(core);
            self.after_lead();
        }
    }

    /// Leads until `waiter` is settled.
    fn lead(&self, mut core: MutexGuard<'_, Core>, waiter: &Waiter) -> io::Result<()> {
        let mut result = Ok(());
        while waiter.is_waiting() {
            let Core { reactor, dispatch } = &mut *core;
            if let Err(e) = reactor.turn(dispatch, None) {
                // Never leave the wait open: it would linger in the lists.
                waiter.settle(READY);
                result = Err(e);
                break;
            }
        }
        drop(core);
        self.after_lead();
        result
    }

    /// After unlocking: hand the lead to a follower that still waits, and
    /// handle requests that arrived while this thread held the lock.
    fn after_lead(&self) {
        fence(Ordering::SeqCst);
        loop {
            if self.pass_baton() {
                return;
            }
            if self.remote.pending() == 0 {
                return;
            }
            match self.try_lead() {
                Some(mut core) => turn_now(&mut core),
                // The holder will do this same check when it lets go.
                None => return,
            }
            fence(Ordering::SeqCst);
        }
    }

    /// Wakes one waiting follower to lead. Returns whether there was one.
    fn pass_baton(&self) -> bool {
        let followers = self.followers();
        match followers.iter().find(|(_, waiter)| waiter.is_waiting()) {
            Some((_, waiter)) => {
                waiter.baton.store(true, Ordering::Release);
                waiter.thread.unpark();
                true
            }
            None => false,
        }
    }

    /// Follows: posts the wait, parks, leads if the lock comes free.
    fn follow(
        &self,
        request: Request,
        waiter: &Arc<Waiter>,
        deadline: Option<Instant>,
        recheck: &dyn Fn() -> bool,
    ) -> io::Result<()> {
        let key = self.followers().insert(Arc::clone(waiter));
        let wake_leader = match &request {
            Request::Wait { targets, .. } => targets.iter().any(|t| !t.io.source().is_registered()),
            _ => true,
        };
        let sent = if wake_leader {
            self.remote.send(request)
        } else {
            self.remote.post(request)
        };
        let mut result = match sent {
            Ok(()) => Ok(()),
            Err(_) => Err(io::Error::other("the sync driver's reactor is gone")),
        };
        fence(Ordering::SeqCst);
        if result.is_ok() && recheck() {
            // A readiness event was dispatched between the try and the post.
            waiter.settle(READY);
        }
        while result.is_ok() && waiter.is_waiting() {
            waiter.baton.store(false, Ordering::Release);
            if let Some(core) = self.try_lead() {
                result = self.lead(core, waiter);
                break;
            }
            match deadline {
                None => thread::park(),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        waiter.settle(TIMED_OUT);
                        break;
                    }
                    thread::park_timeout(deadline - now);
                }
            }
        }
        self.followers().remove(key);
        if waiter.baton.load(Ordering::Acquire) {
            // Asked to lead but leaving: do what a leader does on leaving,
            // which hands the lead on or, with no follower left, handles the
            // queued requests itself (a `Close` among them would otherwise
            // wait for the next thread that waits, its descriptor open).
            self.after_lead();
        }
        if result.is_err() {
            // The reactor is gone: never return with the wait still open.
            waiter.settle(READY);
        }
        result
    }
}

/// Turns the reactor without blocking, to handle what is queued. A poll
/// error is only logged: the waits it concerns have their own deadlines,
/// and the next leader polls again.
fn turn_now(core: &mut Core) {
    let Core { reactor, dispatch } = core;
    if let Err(e) = reactor.turn(dispatch, Some(Duration::ZERO)) {
        log::warn!("the sync driver's poll failed: {e}");
    }
}

/// Waits until one of `targets` is ready, the deadline passes, or the socket
/// is shut down. The caller read each target's tick before trying its
/// operation; the wait settles at once if a tick has moved since.
///
/// # Errors
///
/// Any error creating the driver's reactor, polling, or registering a socket.
pub(crate) fn wait(targets: &[Target], deadline: Deadline) -> io::Result<Outcome> {
    let deadline = match deadline {
        Deadline::Now => return Ok(Outcome::TimedOut),
        Deadline::At(at) => {
            if Instant::now() >= at {
                return Ok(Outcome::TimedOut);
            }
            Some(at)
        }
        Deadline::Never => None,
    };
    let driver = Driver::get()?;
    for target in targets {
        target.io.source().engaged.store(true, Ordering::Release);
        target.io.source().waiting.fetch_add(1, Ordering::SeqCst);
    }
    let outcome = wait_in(driver, targets, deadline);
    for target in targets {
        target.io.source().waiting.fetch_sub(1, Ordering::SeqCst);
    }
    outcome
}

fn wait_in(
    driver: &'static Driver,
    targets: &[Target],
    deadline: Option<Instant>,
) -> io::Result<Outcome> {
    let waiter = Arc::new(Waiter::new());
    if let Some(mut core) = driver.try_lead() {
        file(&mut core.reactor, targets, deadline, &waiter);
        driver.lead(core, &waiter)?;
        return waiter.outcome();
    }
    // The leader needs its own copy; the caller's stays here for the recheck.
    let request = Request::Wait {
        targets: targets.to_vec(),
        deadline,
        waiter: Arc::clone(&waiter),
    };
    let moved = || {
        targets
            .iter()
            .any(|t| t.io.source().tick(t.direction) != t.tick)
    };
    driver.follow(request, &waiter, deadline, &moved)?;
    waiter.outcome()
}
