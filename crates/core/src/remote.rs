//! `Remote`: the one way other threads reach a reactor.
//!
//! # The hand-off
//!
//! Everything a remote asks of the reactor (a message, a wake, a stop) is
//! recorded under one mutex, together with a `notified` flag that says the
//! reactor's `mio::Waker` (an eventfd on Linux) has been or is about to be
//! written since the reactor last looked. Whether to write the waker is
//! decided under that lock: the request that finds `notified` clear sets it
//! and writes the waker after unlocking; every later request until the
//! reactor looks again only queues. The reactor clears `notified` under the
//! same lock as it takes what is queued, so each request is either taken by
//! that look or finds the flag clear, or finds it set by a request whose
//! waker write comes after that look and so wakes the next poll. A burst of
//! sends costs one wake-up, and no request is left behind a sleeping loop.
//!
//! An atomic count of queued messages lets the reactor skip the lock on
//! turns where its waker did not fire and nothing is queued. It is only a
//! hint: a message it misses comes with a waker write of its own (or is a
//! [`Remote::post`], which promises no wake-up).
//!
//! The protocol is model-checked with loom (`RUSTFLAGS="--cfg loom"`, see
//! the tests at the bottom of this file).

use std::collections::VecDeque;
use std::error::Error;
use std::fmt;
use std::io;
use std::sync::Arc;

use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::{Mutex, MutexGuard};

/// What writes the reactor's waker: `mio::Waker`, or a model in tests.
pub(crate) trait Wake {
    fn wake(&self) -> io::Result<()>;
}

impl Wake for mio::Waker {
    fn wake(&self) -> io::Result<()> {
        mio::Waker::wake(self)
    }
}

/// A reactor built without a waker ([`Builder::waker`](crate::Builder::waker))
/// has nothing to write: what remotes queue waits for its next turn.
impl Wake for Option<mio::Waker> {
    fn wake(&self) -> io::Result<()> {
        match self {
            Some(waker) => waker.wake(),
            None => Ok(()),
        }
    }
}

/// State shared by a reactor and its remotes.
pub(crate) struct Shared<M, W = Option<mio::Waker>> {
    inner: Mutex<Inner<M>>,
    /// Number of queued messages, readable without the lock. Written under
    /// the lock; a hint for the reactor (see the module docs).
    pending: AtomicUsize,
    waker: W,
}

struct Inner<M> {
    /// The messages, each with its number: the order of queueing, so that a
    /// sender can find its own message again (numbers never repeat: at a
    /// billion messages a second a `u64` lasts 584 years).
    queue: VecDeque<(u64, M)>,
    /// The number of the next message queued.
    next: u64,
    /// Whether the waker has been (or is about to be) written since the
    /// reactor last took what is queued.
    notified: bool,
    /// Set by [`Remote::wake`]; the handler's `woken` runs once per turn.
    woken: bool,
    /// Set by [`Remote::stop`].
    stop: bool,
    /// Set when the reactor is dropped: requests fail from then on.
    closed: bool,
}

/// What one look at the shared state found, besides messages.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flags {
    pub(crate) woken: bool,
    pub(crate) stop: bool,
}

impl<M, W: Wake> Shared<M, W> {
    pub(crate) fn new(waker: W) -> Shared<M, W> {
        Shared {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                next: 0,
                notified: false,
                woken: false,
                stop: false,
                closed: false,
            }),
            pending: AtomicUsize::new(0),
            waker,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<M>> {
        // Nothing panics while holding this lock but an allocation failure
        // in `push_back`, after which the queue is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `message`; with `wake`, makes sure the reactor will wake up
    /// for it.
    pub(crate) fn send(&self, message: M, wake: bool) -> Result<(), SendError<M>> {
        let (number, write) = {
            let mut inner = self.lock();
            // Checked under the lock that `close` takes: a message is either
            // refused or queued before the reactor let go of the queue.
            if inner.closed {
                return Err(SendError(message));
            }
            let number = inner.next;
            inner.next += 1;
            inner.queue.push_back((number, message));
            self.pending.store(inner.queue.len(), Ordering::Release);
            let write = wake && !std::mem::replace(&mut inner.notified, true);
            (number, write)
        };
        if !write {
            return Ok(());
        }
        if self.waker.wake().is_ok() {
            return Ok(());
        }
        // The waker failed (an eventfd: only a broken descriptor can do
        // this). Let the next request try it again, and take back this
        // sender's own message, unless the reactor already took it.
        let mut inner = self.lock();
        inner.notified = false;
        let Ok(index) = inner.queue.binary_search_by_key(&number, |&(n, _)| n) else {
            return Ok(());
        };
        let taken = inner.queue.remove(index);
        self.pending.store(inner.queue.len(), Ordering::Release);
        match taken {
            Some((_, message)) => Err(SendError(message)),
            None => unreachable!("message {number} found at {index} but not removed"),
        }
    }

    /// Sets a flag ([`Remote::wake`], [`Remote::stop`]) and wakes the reactor.
    fn flag(&self, set: impl FnOnce(&mut Inner<M>)) -> io::Result<()> {
        let write = {
            let mut inner = self.lock();
            if inner.closed {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the reactor is gone",
                ));
            }
            set(&mut inner);
            !std::mem::replace(&mut inner.notified, true)
        };
        if write {
            if let Err(e) = self.waker.wake() {
                self.lock().notified = false;
                return Err(e);
            }
        }
        Ok(())
    }

    pub(crate) fn wake(&self) -> io::Result<()> {
        self.flag(|inner| inner.woken = true)
    }

    pub(crate) fn stop(&self) -> io::Result<()> {
        self.flag(|inner| inner.stop = true)
    }

    /// The hint: whether messages may be waiting.
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire) > 0
    }

    /// Number of messages queued (a hint, see [`has_pending`](Shared::has_pending)).
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Takes a stop asked for and not yet taken.
    pub(crate) fn take_stop(&self) -> bool {
        std::mem::take(&mut self.lock().stop)
    }

    /// The reactor's look: clears `notified`, takes the flags and moves up to
    /// `max` messages into `out`. Call it when the waker fired, or when
    /// [`has_pending`](Shared::has_pending) says messages wait.
    pub(crate) fn collect(&self, out: &mut VecDeque<M>, max: usize) -> Flags {
        let mut inner = self.lock();
        inner.notified = false;
        let flags = Flags {
            woken: std::mem::take(&mut inner.woken),
            stop: std::mem::take(&mut inner.stop),
        };
        let n = inner.queue.len().min(max);
        out.extend(inner.queue.drain(..n).map(|(_, message)| message));
        self.pending.store(inner.queue.len(), Ordering::Release);
        flags
    }

    /// Called when the reactor is dropped: refuses every later request and
    /// drops what is queued.
    pub(crate) fn close(&self) {
        let dropped = {
            let mut inner = self.lock();
            inner.closed = true;
            self.pending.store(0, Ordering::Release);
            std::mem::take(&mut inner.queue)
        };
        // Messages are dropped outside the lock: their destructors may do
        // anything, including send to another reactor.
        drop(dropped);
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// A handle that reaches a [`Reactor`](crate::Reactor) from any thread: it
/// hands the reactor messages, wakes it, and stops it.
///
/// `Remote` is `Send + Sync + Clone` when the message type is `Send`. Messages
/// arrive at [`Handler::message`](crate::Handler::message) in the order they
/// were queued, at most
/// [`messages_per_turn`](crate::Builder::messages_per_turn) per turn.
///
/// # Examples
///
/// ```
/// use ontime_core::{Handler, Reactor};
///
/// struct Sum(u64);
///
/// impl Handler for Sum {
///     type State = ();
///     type Timer = ();
///     type Message = u64;
///
///     fn message(&mut self, reactor: &mut Reactor<Sum>, n: u64) {
///         self.0 += n;
///         if n == 0 {
///             reactor.stop();
///         }
///     }
/// }
///
/// # fn main() -> std::io::Result<()> {
/// let mut reactor = Reactor::new()?;
/// let remote = reactor.remote();
/// let producer = std::thread::spawn(move || {
///     for n in [1, 2, 3, 0] {
///         remote.send(n).unwrap();
///     }
/// });
/// let mut sum = Sum(0);
/// reactor.run(&mut sum)?;
/// producer.join().unwrap();
/// assert_eq!(sum.0, 6);
/// # Ok(())
/// # }
/// ```
pub struct Remote<M> {
    shared: Arc<Shared<M>>,
}

impl<M> Remote<M> {
    pub(crate) fn new(shared: Arc<Shared<M>>) -> Remote<M> {
        Remote { shared }
    }

    /// Sends a message and wakes the reactor so it handles it promptly.
    ///
    /// However many threads send at once, the reactor's waker is written
    /// once until the reactor has looked at the queue.
    ///
    /// # Errors
    ///
    /// [`SendError`] holding the message if the reactor has been dropped, or
    /// if writing its waker failed; the message is then not queued. Messages
    /// other threads queued meanwhile stay queued, and the next `send` tries
    /// the waker again.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::{Handler, Reactor};
    ///
    /// struct Inbox(Vec<&'static str>);
    ///
    /// impl Handler for Inbox {
    ///     type State = ();
    ///     type Timer = ();
    ///     type Message = &'static str;
    ///
    ///     fn message(&mut self, _: &mut Reactor<Inbox>, message: &'static str) {
    ///         self.0.push(message);
    ///     }
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor = Reactor::new()?;
    /// let remote = reactor.remote();
    /// std::thread::spawn(move || remote.send("hello").unwrap()).join().unwrap();
    /// let mut inbox = Inbox(Vec::new());
    /// reactor.turn(&mut inbox, None)?; // the send woke it: no wait
    /// assert_eq!(inbox.0, ["hello"]);
    ///
    /// drop(reactor);
    /// # let remote = { let r: Reactor<Inbox> = Reactor::new()?; r.remote() };
    /// assert!(remote.send("too late").is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn send(&self, message: M) -> Result<(), SendError<M>> {
        self.shared.send(message, true)
    }

    /// Queues a message without waking the reactor.
    ///
    /// The message is handled at the reactor's next turn, whenever something
    /// else wakes it. Use this when the sender knows the loop will wake soon
    /// for another reason (an event it is waiting for); it saves a system
    /// call per message.
    ///
    /// # Errors
    ///
    /// [`SendError`] holding the message if the reactor has been dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::{Handler, Reactor};
    /// use std::time::Duration;
    ///
    /// struct Count(usize);
    ///
    /// impl Handler for Count {
    ///     type State = ();
    ///     type Timer = ();
    ///     type Message = ();
    ///
    ///     fn message(&mut self, _: &mut Reactor<Count>, _: ()) {
    ///         self.0 += 1;
    ///     }
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor = Reactor::new()?;
    /// reactor.remote().post(()).unwrap();
    /// let mut count = Count(0);
    /// // Queued messages make the turn's wait zero.
    /// reactor.turn(&mut count, Some(Duration::from_secs(10)))?;
    /// assert_eq!(count.0, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn post(&self, message: M) -> Result<(), SendError<M>> {
        self.shared.send(message, false)
    }

    /// Wakes the reactor: its current or next turn returns promptly and the
    /// handler's [`woken`](crate::Handler::woken) runs once, however many
    /// wakes were coalesced.
    ///
    /// # Errors
    ///
    /// `NotConnected` if the reactor has been dropped; any error writing the
    /// waker.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::{Handler, Reactor};
    ///
    /// struct Woken(bool);
    ///
    /// impl Handler for Woken {
    ///     type State = ();
    ///     type Timer = ();
    ///     type Message = ();
    ///
    ///     fn woken(&mut self, reactor: &mut Reactor<Woken>) {
    ///         self.0 = true;
    ///         reactor.stop();
    ///     }
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor = Reactor::new()?;
    /// let remote = reactor.remote();
    /// std::thread::spawn(move || remote.wake().unwrap());
    /// let mut woken = Woken(false);
    /// reactor.run(&mut woken)?;
    /// assert!(woken.0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn wake(&self) -> io::Result<()> {
        self.shared.wake()
    }

    /// Asks the reactor to stop: [`Reactor::run`](crate::Reactor::run)
    /// returns after the turn in progress, or at once if it is not running
    /// yet; the same as [`Reactor::stop`](crate::Reactor::stop).
    ///
    /// # Errors
    ///
    /// `NotConnected` if the reactor has been dropped; any error writing the
    /// waker.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::{Handler, Reactor};
    ///
    /// struct Idle;
    ///
    /// impl Handler for Idle {
    ///     type State = ();
    ///     type Timer = ();
    ///     type Message = ();
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let mut reactor = Reactor::new()?;
    /// let remote = reactor.remote();
    /// std::thread::spawn(move || remote.stop().unwrap());
    /// reactor.run(&mut Idle)?; // returns once the stop arrives
    /// # Ok(())
    /// # }
    /// ```
    pub fn stop(&self) -> io::Result<()> {
        self.shared.stop()
    }

    /// Number of messages queued but not yet handled.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::{Handler, Reactor};
    ///
    /// struct Idle;
    ///
    /// impl Handler for Idle {
    ///     type State = ();
    ///     type Timer = ();
    ///     type Message = u8;
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let reactor: Reactor<Idle> = Reactor::new()?;
    /// let remote = reactor.remote();
    /// remote.post(1).unwrap();
    /// remote.post(2).unwrap();
    /// assert_eq!(remote.pending(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn pending(&self) -> usize {
        self.shared.pending()
    }
}

impl<M> Clone for Remote<M> {
    fn clone(&self) -> Remote<M> {
        Remote {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<M> fmt::Debug for Remote<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("pending", &self.pending())
            .field("closed", &self.shared.is_closed())
            .finish()
    }
}

/// The error of [`Remote::send`] and [`Remote::post`]: the reactor is gone
/// or could not be woken, and the message is handed back.
#[derive(PartialEq, Eq)]
pub struct SendError<M>(pub M);

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the reactor is gone or could not be woken")
    }
}

impl<M> Error for SendError<M> {}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// A waker that counts its writes and fails while told to.
    #[derive(Default)]
    struct Model {
        writes: AtomicUsize,
        fail: AtomicBool,
    }

    impl Wake for Model {
        fn wake(&self) -> io::Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(io::Error::other("waker broken"));
            }
            self.writes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn shared() -> Shared<u32, Model> {
        Shared::new(Model::default())
    }

    #[test]
    fn a_burst_of_sends_writes_the_waker_once() {
        let shared = shared();
        for n in 0..10 {
            shared.send(n, true).unwrap();
        }
        assert_eq!(shared.waker.writes.load(Ordering::SeqCst), 1);
        let mut out = VecDeque::new();
        shared.collect(&mut out, usize::MAX);
        assert_eq!(out, (0..10).collect::<Vec<_>>());
        shared.send(10, true).unwrap();
        assert_eq!(
            shared.waker.writes.load(Ordering::SeqCst),
            2,
            "looked: wake again"
        );
    }

    #[test]
    fn a_failed_wake_takes_back_the_senders_own_message() {
        let shared = shared();
        // Another sender's message is queued behind the one that finds the
        // waker broken; the broken send must hand back its own.
        shared.send(1, false).unwrap();
        shared.waker.fail.store(true, Ordering::SeqCst);
        assert_eq!(shared.send(2, true), Err(SendError(2)));
        shared.send(3, false).unwrap();
        // The flag was cleared: the next send writes the waker again.
        shared.waker.fail.store(false, Ordering::SeqCst);
        shared.send(4, true).unwrap();
        assert_eq!(shared.waker.writes.load(Ordering::SeqCst), 1);
        let mut out = VecDeque::new();
        shared.collect(&mut out, usize::MAX);
        assert_eq!(out, [1, 3, 4]);
    }

    #[test]
    fn a_failed_wake_after_the_reactor_took_the_message_is_success() {
        let shared = shared();
        shared.send(1, true).unwrap();
        let mut out = VecDeque::new();
        shared.collect(&mut out, usize::MAX);
        // Found by number even after messages before it were taken.
        shared.send(2, false).unwrap();
        shared.waker.fail.store(true, Ordering::SeqCst);
        assert_eq!(shared.send(3, true), Err(SendError(3)));
        shared.collect(&mut out, usize::MAX);
        assert_eq!(out, [1, 2]);
    }

    #[test]
    fn a_failed_wake_or_stop_leaves_the_next_one_free_to_write() {
        let shared = shared();
        shared.waker.fail.store(true, Ordering::SeqCst);
        assert!(shared.wake().is_err());
        shared.waker.fail.store(false, Ordering::SeqCst);
        shared.stop().unwrap();
        assert_eq!(shared.waker.writes.load(Ordering::SeqCst), 1);
        let flags = shared.collect(&mut VecDeque::new(), 1);
        assert_eq!(
            flags,
            Flags {
                woken: true,
                stop: true
            }
        );
    }

    #[test]
    fn collect_is_bounded_and_keeps_the_rest() {
        let shared = shared();
        for n in 0..5 {
            shared.send(n, true).unwrap();
        }
        let mut out = VecDeque::new();
        shared.collect(&mut out, 2);
        assert_eq!(out, [0, 1]);
        assert_eq!(shared.pending(), 3);
        assert!(shared.has_pending());
    }

    #[test]
    fn closed_refuses_everything() {
        let shared = shared();
        shared.send(1, true).unwrap();
        shared.close();
        assert_eq!(shared.pending(), 0);
        assert_eq!(shared.send(2, true), Err(SendError(2)));
        assert_eq!(
            shared.wake().unwrap_err().kind(),
            io::ErrorKind::NotConnected
        );
        assert!(shared.stop().is_err());
    }
}

/// Model checks of the hand-off: `RUSTFLAGS="--cfg loom" cargo test -p
/// ontime-core --release --lib remote`. Each explores every interleaving of
/// a few senders and one reactor look.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Arc;
    use loom::thread;

    /// The eventfd: writes add up until a poll consumes them.
    #[derive(Default)]
    struct Model {
        armed: AtomicUsize,
        fail: AtomicBool,
    }

    impl Wake for Model {
        fn wake(&self) -> io::Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(io::Error::other("waker broken"));
            }
            self.armed.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    impl Model {
        /// A poll: whether the waker fired, consuming it.
        fn poll(&self) -> bool {
            self.armed.swap(0, Ordering::SeqCst) > 0
        }
    }

    /// One turn of the reactor as `Reactor::turn` does it.
    fn turn(shared: &Shared<u32, Model>, out: &mut VecDeque<u32>, max: usize) -> Flags {
        let fired = shared.waker.poll();
        if fired || shared.has_pending() {
            shared.collect(out, max)
        } else {
            Flags::default()
        }
    }

    /// The liveness property: after every thread is done, what is still
    /// queued or flagged has a waker write armed for it, so a reactor that
    /// now sleeps is woken.
    fn assert_no_lost_wakeup(shared: &Shared<u32, Model>) {
        let inner = shared.lock();
        let owed = !inner.queue.is_empty() || inner.woken || inner.stop;
        if owed {
            assert!(
                shared.waker.armed.load(Ordering::SeqCst) > 0,
                "{} queued, woken {}, stop {}, and no wake-up armed",
                inner.queue.len(),
                inner.woken,
                inner.stop
            );
        }
    }

    #[test]
    fn no_wakeup_is_lost_between_two_senders_and_a_turn() {
        loom::model(|| {
            let shared = Arc::new(Shared::new(Model::default()));
            let senders: Vec<_> = [1, 2]
                .into_iter()
                .map(|n| {
                    let shared = Arc::clone(&shared);
                    thread::spawn(move || shared.send(n, true).unwrap())
                })
                .collect();
            let mut out = VecDeque::new();
            turn(&shared, &mut out, usize::MAX);
            for sender in senders {
                sender.join().unwrap();
            }
            assert_no_lost_wakeup(&shared);
            // And a reactor that was woken gets everything.
            turn(&shared, &mut out, usize::MAX);
            let mut got: Vec<u32> = out.into_iter().collect();
            got.sort();
            assert_eq!(got, [1, 2]);
        });
    }

    #[test]
    fn no_wakeup_is_lost_for_wake_and_stop() {
        loom::model(|| {
            let shared = Arc::new(Shared::new(Model::default()));
            let a = {
                let shared = Arc::clone(&shared);
                thread::spawn(move || shared.wake().unwrap())
            };
            let b = {
                let shared = Arc::clone(&shared);
                thread::spawn(move || shared.send(7, true).unwrap())
            };
            let mut out = VecDeque::new();
            let first = turn(&shared, &mut out, usize::MAX);
            a.join().unwrap();
            b.join().unwrap();
            assert_no_lost_wakeup(&shared);
            let second = turn(&shared, &mut out, usize::MAX);
            assert!(first.woken || second.woken);
            assert_eq!(out, [7]);
        });
    }

    /// The interleaving the earlier protocol (a `notified` flag cleared with
    /// a Release store, the queue length read with an Acquire load) lost: a
    /// turn consumes the waker of an earlier wake, clears the flag and reads
    /// a stale length while a sender, seeing the flag still set, skips the
    /// waker.
    #[test]
    fn a_send_racing_the_turn_after_a_wake_is_not_lost() {
        loom::model(|| {
            let shared = Arc::new(Shared::new(Model::default()));
            shared.wake().unwrap();
            let sender = {
                let shared = Arc::clone(&shared);
                thread::spawn(move || shared.send(1, true).unwrap())
            };
            let mut out = VecDeque::new();
            turn(&shared, &mut out, usize::MAX);
            sender.join().unwrap();
            assert_no_lost_wakeup(&shared);
        });
    }

    #[test]
    fn a_failed_wake_hands_back_only_the_senders_message() {
        loom::model(|| {
            let shared = Arc::new(Shared::new(Model::default()));
            shared.waker.fail.store(true, Ordering::SeqCst);
            let senders: Vec<_> = [1, 2]
                .into_iter()
                .map(|n| {
                    let shared = Arc::clone(&shared);
                    thread::spawn(move || (n, shared.send(n, true)))
                })
                .collect();
            let mut out = VecDeque::new();
            turn(&shared, &mut out, usize::MAX);
            let mut returned = Vec::new();
            for sender in senders {
                let (n, result) = sender.join().unwrap();
                if let Err(SendError(m)) = result {
                    assert_eq!(m, n, "a sender got another's message back");
                    returned.push(m);
                }
            }
            // Repaired waker: whatever is still queued goes out with the
            // next request, which must write the waker.
            shared.waker.fail.store(false, Ordering::SeqCst);
            shared.send(3, true).unwrap();
            assert_no_lost_wakeup(&shared);
            turn(&shared, &mut out, usize::MAX);
            let mut all: Vec<u32> = out.into_iter().chain(returned).collect();
            all.sort();
            assert_eq!(all, [1, 2, 3], "each message exactly once");
        });
    }
}
