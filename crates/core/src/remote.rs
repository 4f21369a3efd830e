//! `Remote`: the one way other threads reach a reactor.
//!
//! A remote pushes messages onto a mutex-protected queue and writes the
//! reactor's `mio::Waker` (an eventfd on Linux) only when the reactor has not
//! already been told, so a burst of sends costs one wake-up. The reactor
//! drains at most `messages_per_turn` messages a turn, so a busy producer can
//! delay but not starve I/O dispatch. The reactor checks the queue every turn
//! through an atomic count, without taking the lock when it is empty.

use std::collections::VecDeque;
use std::error::Error;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// State shared by a reactor and its remotes.
pub(crate) struct Shared<M> {
    queue: Mutex<VecDeque<M>>,
    /// Number of messages in `queue`, readable without the lock.
    ///
    /// Invariant: equals `queue.len()` whenever the lock is not held.
    pending: AtomicUsize,
    /// Whether the waker has been written since the reactor last cleared it.
    notified: AtomicBool,
    /// Set by [`Remote::wake`]; the handler's `woken` runs once per turn.
    woken: AtomicBool,
    /// Set by [`Remote::stop`].
    stop: AtomicBool,
    /// Set when the reactor is dropped: sends fail from then on.
    closed: AtomicBool,
    waker: mio::Waker,
}

impl<M> Shared<M> {
    pub(crate) fn new(waker: mio::Waker) -> Shared<M> {
        Shared {
            queue: Mutex::new(VecDeque::new()),
            pending: AtomicUsize::new(0),
            notified: AtomicBool::new(false),
            woken: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            waker,
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<M>> {
        // A panic while holding this lock can only come from an allocation
        // failure in push; the queue itself is still consistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `message`, unless the reactor is gone.
    fn push(&self, message: M) -> Result<(), SendError<M>> {
        let mut queue = self.lock();
        // Checked under the lock that `close` takes, so a message is either
        // refused or queued before the reactor let go of the queue.
        if self.closed.load(Ordering::Acquire) {
            return Err(SendError(message));
        }
        queue.push_back(message);
        self.pending.store(queue.len(), Ordering::Release);
        Ok(())
    }

    fn notify(&self) -> io::Result<()> {
        if !self.notified.swap(true, Ordering::AcqRel) {
            self.waker.wake()?;
        }
        Ok(())
    }

    /// Whether messages are waiting.
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire) > 0
    }

    /// Called by the reactor when the waker's event arrives, before draining.
    pub(crate) fn clear_notified(&self) {
        self.notified.store(false, Ordering::Release);
    }

    /// Moves up to `max` messages into `out`.
    pub(crate) fn drain_into(&self, out: &mut VecDeque<M>, max: usize) {
        if !self.has_pending() {
            return;
        }
        let mut queue = self.lock();
        let n = queue.len().min(max);
        out.extend(queue.drain(..n));
        self.pending.store(queue.len(), Ordering::Release);
    }

    pub(crate) fn take_woken(&self) -> bool {
        self.woken.load(Ordering::Relaxed) && self.woken.swap(false, Ordering::AcqRel)
    }

    pub(crate) fn take_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed) && self.stop.swap(false, Ordering::AcqRel)
    }

    pub(crate) fn close(&self) {
        let mut queue = self.lock();
        self.closed.store(true, Ordering::Release);
        queue.clear();
        self.pending.store(0, Ordering::Release);
    }
}

/// A handle that reaches a [`Reactor`](crate::Reactor) from any thread: it
/// hands the reactor messages, wakes it, and stops it.
///
/// `Remote` is `Send + Sync + Clone` when the message type is `Send`. Messages
/// arrive at [`Handler::message`](crate::Handler::message) in the order they
/// were sent, at most
/// [`messages_per_turn`](crate::Builder::messages_per_turn) per turn.
///
/// # Examples
///
/// ```
/// use ontime_core::{Handler, Reactor, Ready, Token};
///
/// struct Sum(u64);
///
/// impl Handler<u64> for Sum {
///     fn ready(&mut self, _: &mut Reactor<u64>, _: Token, _: Ready) {}
///     fn message(&mut self, reactor: &mut Reactor<u64>, n: u64) {
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
    /// # Errors
    ///
    /// [`SendError`] holding the message if the reactor has been dropped, or
    /// if writing its waker failed (the message is then taken back).
    pub fn send(&self, message: M) -> Result<(), SendError<M>> {
        self.shared.push(message)?;
        if self.shared.notify().is_err() {
            // The waker failed (it is an eventfd: only descriptor exhaustion
            // or a closed reactor can do this). Hand the newest message back
            // rather than leave it unseen.
            let mut queue = self.shared.lock();
            let taken = queue.pop_back();
            self.shared.pending.store(queue.len(), Ordering::Release);
            if let Some(message) = taken {
                return Err(SendError(message));
            }
        }
        Ok(())
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
    pub fn post(&self, message: M) -> Result<(), SendError<M>> {
        self.shared.push(message)
    }

    /// Wakes the reactor: its current or next turn returns promptly and the
    /// handler's [`woken`](crate::Handler::woken) runs once, however many
    /// wakes were coalesced.
    ///
    /// # Errors
    ///
    /// Any error writing the waker (see [`mio::Waker::wake`]).
    pub fn wake(&self) -> io::Result<()> {
        self.shared.woken.store(true, Ordering::Release);
        self.shared.notify()
    }

    /// Asks the reactor to stop: [`Reactor::run`](crate::Reactor::run)
    /// returns after the turn in progress.
    ///
    /// # Errors
    ///
    /// Any error writing the waker.
    pub fn stop(&self) -> io::Result<()> {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.notify()
    }

    /// Number of messages sent but not yet handled.
    pub fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::Acquire)
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
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .finish()
    }
}

/// The error of [`Remote::send`] and [`Remote::post`]: the reactor is gone,
/// and the message is handed back.
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
