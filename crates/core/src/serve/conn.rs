//! What a service holds while it handles an event: `Context` (the server),
//! `Conn` (the server and one connection) and `Input`, and the per-connection
//! record behind them.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown as Direction, SocketAddr};
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use crate::net::{TcpStream, UnixStream};
use crate::reactor::Reactor;
use crate::remote::Remote;
use crate::timers::TimerId;

use super::layer::{Alarm, ConnEntry, Entry, Layer, Shared};
use super::stats::{Close, Stats};
use super::Service;

/// Names a connection of one reactor, for as long as it is open: the ids of
/// closed connections are never reused by that reactor (a slot number plus
/// a serial number of accepts).
///
/// # Examples
///
/// ```
/// use ontime_core::serve::ConnId;
///
/// fn subscribers_of(_: &str) -> Vec<ConnId> { Vec::new() }
/// assert!(subscribers_of("news").is_empty());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) index: u32,
    pub(crate) serial: u64,
}

impl ConnId {
    /// The serial number of this connection among the ones its reactor
    /// accepted (the first is 1).
    pub fn serial(&self) -> u64 {
        self.serial
    }
}

/// The unconsumed input of a connection: what it kept from earlier reads
/// followed by what just arrived. The service parses from
/// [`bytes`](Input::bytes) and [`consume`](Input::consume)s each whole frame
/// it handled; whatever it leaves stays for the next call, so a frame split
/// over several reads is seen whole once its last byte arrives.
pub struct Input<'a> {
    data: &'a [u8],
    consumed: usize,
    closed: bool,
}

impl<'a> Input<'a> {
    pub(crate) fn new(data: &'a [u8], closed: bool) -> Input<'a> {
        Input {
            data,
            consumed: 0,
            closed,
        }
    }

    /// The bytes not consumed yet. The slice borrows the input, not `self`,
    /// so it may be held across [`consume`](Input::consume).
    pub fn bytes(&self) -> &'a [u8] {
        &self.data[self.consumed..]
    }

    /// Marks the first `n` bytes of [`bytes`](Input::bytes) as handled.
    ///
    /// # Panics
    ///
    /// If `n` is more than [`len`](Input::len).
    pub fn consume(&mut self, n: usize) {
        assert!(
            n <= self.len(),
            "consume({n}) with {} bytes of input",
            self.len()
        );
        self.consumed += n;
    }

    /// How many bytes are not consumed yet.
    pub fn len(&self) -> usize {
        self.data.len() - self.consumed
    }

    /// Whether every byte is consumed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the peer closed its side after these bytes: no more input
    /// will come. A frame still incomplete now never will be.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub(crate) fn consumed(&self) -> usize {
        self.consumed
    }
}

impl fmt::Debug for Input<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Input")
            .field("len", &self.len())
            .field("closed", &self.closed)
            .finish()
    }
}

/// The address of a connection's peer.
#[derive(Debug, Clone)]
pub enum PeerAddr {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A Unix-domain peer (usually unnamed).
    Unix(std::os::unix::net::SocketAddr),
}

/// The server, as a service's callbacks reach it: the reactor's timers and
/// [`Remote`], the other connections, the counters and the shutdown.
///
/// A [`Conn`] is a `Context` plus the connection its callback is about, and
/// dereferences to it.
pub struct Context<'a, S: Service> {
    pub(crate) reactor: &'a mut Reactor<Layer<S>>,
    pub(crate) shared: &'a mut Shared,
}

impl<'a, S: Service> Context<'a, S> {
    /// Starts a one-shot timer: at `deadline` (never earlier)
    /// [`Service::timer`] is handed `value`.
    pub fn timer_at(&mut self, deadline: Instant, value: S::Timer) -> TimerId {
        self.reactor.timer_at(deadline, Alarm::User(value))
    }

    /// Starts a one-shot timer `delay` from now.
    pub fn timer_after(&mut self, delay: Duration, value: S::Timer) -> TimerId {
        self.reactor.timer_after(delay, Alarm::User(value))
    }

    /// Starts a timer that fires every `period`, keeping `value` between
    /// firings, until cancelled.
    ///
    /// # Panics
    ///
    /// If `period` is zero.
    pub fn interval(&mut self, period: Duration, value: S::Timer) -> TimerId {
        self.reactor.interval(period, Alarm::User(value))
    }

    /// Cancels a pending timer (its value is dropped); `false` if it already
    /// fired or was cancelled.
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        self.reactor.cancel_timer(timer)
    }

    /// Moves a pending timer to `deadline`; `false` if it already fired or
    /// was cancelled.
    pub fn reset_timer(&mut self, timer: TimerId, deadline: Instant) -> bool {
        self.reactor.reset_timer(timer, deadline)
    }

    /// When a pending timer fires (the instant of its tick).
    pub fn timer_deadline(&self, timer: TimerId) -> Option<Instant> {
        self.reactor.timer_deadline(timer)
    }

    /// A handle other threads use to send [`Service::message`]s to this
    /// reactor's service.
    pub fn remote(&self) -> Remote<S::Message> {
        self.reactor.remote()
    }

    /// This reactor's counters so far.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Which of the server's threads this is, from 0.
    pub fn thread(&self) -> usize {
        self.shared.thread
    }

    /// Whether a graceful shutdown has begun: no more connections are
    /// accepted, and each one closes as soon as it holds no unconsumed
    /// input and no unsent output and the service calls it idle
    /// ([`Service::is_idle`]). A protocol with a way to say so (HTTP's
    /// `Connection: close`) says it in its next reply.
    pub fn is_draining(&self) -> bool {
        self.shared.draining
    }

    /// Begins the graceful shutdown of the whole server, every thread (as
    /// [`Shutdown::shutdown`](super::Shutdown::shutdown)).
    pub fn shutdown(&self) {
        self.shared.shutdown.shutdown();
    }

    /// Appends `bytes` to the output of another connection; it goes out at
    /// the end of the reactor's turn, with whatever else that connection
    /// was sent meanwhile, in one write. Returns `false` if `id` is closed
    /// or closing.
    ///
    /// The connection a [`Conn`] is for is reached through that `Conn`
    /// ([`Conn::write_to`] takes either); a plain `Context` returns `false`
    /// for it. The target's [`Config::max_output`](super::Config::max_output)
    /// applies: a target that does not read is closed past it.
    pub fn write_to(&mut self, id: ConnId, bytes: &[u8]) -> bool {
        let Some(core) = core_of(self.reactor, id) else {
            return false;
        };
        if core.is_closing() {
            return false;
        }
        let shared = &mut *self.shared;
        core.bufs(&mut shared.pool).output.extend_from_slice(bytes);
        mark_dirty(&mut shared.dirty, core, id);
        true
    }

    /// Closes another connection at the end of the reactor's turn,
    /// discarding output it has not sent ([`Close::Service`]). Returns
    /// `false` if `id` is closed or closing (or is the connection of the
    /// [`Conn`] at hand: use [`Conn::close`]).
    pub fn disconnect(&mut self, id: ConnId) -> bool {
        let Some(core) = core_of(self.reactor, id) else {
            return false;
        };
        if core.is_closing() {
            return false;
        }
        core.close_now(Close::Service);
        mark_dirty(&mut self.shared.dirty, core, id);
        true
    }

    /// The state of another open connection (`None` for the [`Conn`] at
    /// hand, whose state its callback has).
    pub fn state_of(&mut self, id: ConnId) -> Option<&mut S::Conn> {
        entry_of(self.reactor, id)?.state.as_mut()
    }

    /// How many bytes another connection has not sent yet (`None` as for
    /// [`state_of`](Context::state_of)).
    pub fn pending_output(&mut self, id: ConnId) -> Option<usize> {
        core_of(self.reactor, id).map(|core| core.pending())
    }
}

/// The open connection `id` names (not the one whose state is lent now).
fn entry_of<S: Service>(
    reactor: &mut Reactor<Layer<S>>,
    id: ConnId,
) -> Option<&mut ConnEntry<S::Conn>> {
    match reactor.state_mut(crate::Token(id.index as usize))? {
        Entry::Conn(entry) if entry.core.serial == id.serial => Some(entry),
        _ => None,
    }
}

fn core_of<S: Service>(reactor: &mut Reactor<Layer<S>>, id: ConnId) -> Option<&mut ConnCore> {
    entry_of(reactor, id).map(|entry| &mut entry.core)
}

pub(crate) fn mark_dirty(dirty: &mut Vec<ConnId>, core: &mut ConnCore, id: ConnId) {
    if !core.flags.has(Flags::DIRTY) {
        core.flags.set(Flags::DIRTY);
        dirty.push(id);
    }
}

impl<S: Service> fmt::Debug for Context<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("thread", &self.shared.thread)
            .field("draining", &self.shared.draining)
            .finish_non_exhaustive()
    }
}

/// The server and one of its connections, as a service's callbacks about
/// that connection get them. Replies written here go out at the end of the
/// reactor's turn, with the rest of the turn's, in one write. Every [`Context`] method is
/// reached through it too.
pub struct Conn<'a, S: Service> {
    pub(crate) cx: Context<'a, S>,
    pub(crate) id: ConnId,
    pub(crate) core: &'a mut ConnCore,
    /// What a close during this callback is counted as: the deadline that
    /// passed, for [`Service::expired`]; otherwise [`Close::Service`].
    pub(crate) cause: Close,
}

impl<'a, S: Service> Conn<'a, S> {
    /// This connection's id, by which other callbacks reach it.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Appends `bytes` to this connection's output. Nothing is written
    /// after [`close`](Conn::close).
    pub fn write(&mut self, bytes: &[u8]) {
        if !self.core.flags.has(Flags::CLOSE_NOW) {
            let shared = &mut *self.cx.shared;
            self.core
                .bufs(&mut shared.pool)
                .output
                .extend_from_slice(bytes);
        }
    }

    /// [`Context::write_to`], for any connection including this one.
    pub fn write_to(&mut self, id: ConnId, bytes: &[u8]) -> bool {
        if id == self.id {
            if self.core.is_closing() {
                return false;
            }
            self.write(bytes);
            return true;
        }
        self.cx.write_to(id, bytes)
    }

    /// How many bytes of output are not sent yet, this callback's included.
    pub fn pending_output(&self) -> usize {
        self.core.pending()
    }

    /// Whether the connection is closing ([`close`](Conn::close) or
    /// [`close_when_flushed`](Conn::close_when_flushed) was called, or the
    /// layer is closing it): a service stops handling its input then.
    pub fn is_closing(&self) -> bool {
        self.core.is_closing()
    }

    /// Closes the connection as the callback returns, discarding output not
    /// sent yet.
    pub fn close(&mut self) {
        self.core.close_now(self.cause);
    }

    /// Stops handing input to the service, and closes the connection once
    /// every byte of output is sent (a last reply, then close). The close
    /// lingers ([`Config::linger`](super::Config::linger)): writing is shut
    /// down and whatever the peer still sends is dropped until it closes
    /// too or the linger passes, so that the peer reads the last reply
    /// rather than a reset.
    pub fn close_when_flushed(&mut self) {
        self.core.close_flushed(self.cause);
    }

    /// Shuts down the writing side once every byte of output is sent, so
    /// the peer reads end of file; reading goes on until the peer closes
    /// too.
    pub fn shutdown_write(&mut self) {
        self.core.flags.set(Flags::SHUT_WRITE);
    }

    /// Sets this connection's deadline: at `deadline` (never earlier)
    /// [`Service::expired`] is called with [`Expired::Deadline`](super::Expired::Deadline),
    /// unless it is moved or [`clear`](Conn::clear_deadline)ed first. One
    /// deadline per connection, on the reactor's wheel (an HTTP server
    /// bounds the time a request head may take to arrive with it).
    pub fn set_deadline(&mut self, deadline: Instant) {
        let token = self.id.index;
        match self.core.deadline {
            Some(timer) if self.cx.reactor.reset_timer(timer, deadline) => {}
            _ => {
                self.core.deadline =
                    Some(self.cx.reactor.timer_at(deadline, Alarm::Deadline(token)))
            }
        }
    }

    /// [`set_deadline`](Conn::set_deadline) `timeout` from now.
    pub fn set_timeout(&mut self, timeout: Duration) {
        let deadline = Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(30 * 365 * 86_400));
        self.set_deadline(deadline);
    }

    /// Disarms this connection's deadline.
    pub fn clear_deadline(&mut self) {
        if let Some(timer) = self.core.deadline.take() {
            self.cx.reactor.cancel_timer(timer);
        }
    }

    /// When this connection's deadline fires, if one is set.
    pub fn deadline(&self) -> Option<Instant> {
        self.core
            .deadline
            .and_then(|timer| self.cx.reactor.timer_deadline(timer))
    }

    /// Changes this connection's idle timeout (`None`: never idle out),
    /// counted from its last progress in either direction.
    pub fn set_idle_timeout(&mut self, timeout: Option<Duration>) {
        let ms = timeout.map_or(0, |t| t.as_millis().clamp(1, u32::MAX as u128) as u32);
        self.core.idle_ms = ms;
        if ms == 0 {
            if let Some(timer) = self.core.idle.take() {
                self.cx.reactor.cancel_timer(timer);
            }
            return;
        }
        let now = self.cx.shared.now();
        self.core.progress = now;
        let at = self.cx.shared.instant(now + u64::from(ms) * 1_000_000);
        match self.core.idle {
            Some(timer) if self.cx.reactor.reset_timer(timer, at) => {}
            _ => self.core.idle = Some(self.cx.reactor.timer_at(at, Alarm::Idle(self.id.index))),
        }
    }

    /// The peer's address.
    ///
    /// # Errors
    ///
    /// Any error of `getpeername` (`NotConnected` once the peer is gone).
    pub fn peer_addr(&self) -> io::Result<PeerAddr> {
        match &self.core.stream {
            Stream::Tcp(stream) => stream.peer_addr().map(PeerAddr::Tcp),
            Stream::Unix(stream) => stream.peer_addr().map(PeerAddr::Unix),
        }
    }
}

impl<S: Service> Write for Conn<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Conn::write(self, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a, S: Service> Deref for Conn<'a, S> {
    type Target = Context<'a, S>;

    fn deref(&self) -> &Context<'a, S> {
        &self.cx
    }
}

impl<S: Service> DerefMut for Conn<'_, S> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.cx
    }
}

impl<S: Service> fmt::Debug for Conn<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("pending_output", &self.core.pending())
            .finish_non_exhaustive()
    }
}

// ---- The record behind a connection ------------------------------------

/// A connected stream.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => stream.read(buf),
            Stream::Unix(stream) => stream.read(buf),
        }
    }

    pub(crate) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => stream.write(buf),
            Stream::Unix(stream) => stream.write(buf),
        }
    }

    /// Sets `SO_SNDBUF` and `SO_RCVBUF` where asked.
    pub(crate) fn set_buffer_sizes(
        &self,
        (send, recv): (Option<usize>, Option<usize>),
    ) -> io::Result<()> {
        if send.is_none() && recv.is_none() {
            return Ok(());
        }
        let socket = match self {
            Stream::Tcp(stream) => socket2::SockRef::from(stream),
            Stream::Unix(stream) => socket2::SockRef::from(stream),
        };
        if let Some(n) = send {
            socket.set_send_buffer_size(n)?;
        }
        if let Some(n) = recv {
            socket.set_recv_buffer_size(n)?;
        }
        Ok(())
    }

    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(stream) => stream.shutdown(Direction::Write),
            Stream::Unix(stream) => stream.shutdown(Direction::Write),
        }
    }
}

/// A connection's buffers, held only while it has unconsumed input or
/// unsent output, and otherwise back in the reactor's pool.
#[derive(Debug, Default)]
pub(crate) struct Bufs {
    pub(crate) input: Vec<u8>,
    pub(crate) output: Vec<u8>,
    /// Invariant: `sent <= output.len()`; `output[sent..]` is unsent.
    pub(crate) sent: usize,
}

/// The flags of a connection, in one word.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Flags(u16);

impl Flags {
    /// The kernel reported it readable, and no read since proved it drained.
    pub(crate) const READABLE: u16 = 1;
    /// No write since the last writable edge was short.
    pub(crate) const WRITABLE: u16 = 1 << 1;
    /// Above the high water mark: not reading until the output drains.
    pub(crate) const PAUSED: u16 = 1 << 2;
    /// The peer sent end of file.
    pub(crate) const EOF: u16 = 1 << 3;
    /// Close as this dispatch ends, output discarded.
    pub(crate) const CLOSE_NOW: u16 = 1 << 4;
    /// Close once the output is flushed; read no more.
    pub(crate) const CLOSE_FLUSHED: u16 = 1 << 5;
    /// Shut down writing once the output is flushed.
    pub(crate) const SHUT_WRITE: u16 = 1 << 6;
    /// Writing is shut down.
    pub(crate) const WRITE_SHUT: u16 = 1 << 7;
    /// Listed in `Shared::dirty`.
    pub(crate) const DIRTY: u16 = 1 << 8;
    /// A write was short: tell the service when the output drains.
    pub(crate) const BACKLOGGED: u16 = 1 << 9;
    /// Closed: every later event is ignored.
    pub(crate) const CLOSED: u16 = 1 << 10;
    /// Closing after its last output: writing is shut down, and what
    /// arrives is read and dropped until end of file or the linger
    /// deadline (in `deadline`), so the peer reads the last reply rather
    /// than a reset.
    pub(crate) const LINGERING: u16 = 1 << 11;

    pub(crate) fn has(self, flag: u16) -> bool {
        self.0 & flag != 0
    }

    pub(crate) fn set(&mut self, flag: u16) {
        self.0 |= flag;
    }

    pub(crate) fn clear(&mut self, flag: u16) {
        self.0 &= !flag;
    }
}

/// What the layer keeps for one connection besides the service's state.
/// Kept small: an idle connection holds only this, its reactor
/// registration and its idle timer.
#[derive(Debug)]
pub(crate) struct ConnCore {
    pub(crate) stream: Stream,
    pub(crate) serial: u64,
    /// `None` while the connection holds no buffered bytes.
    pub(crate) bufs: Option<Box<Bufs>>,
    /// The idle timer, if an idle timeout is set.
    pub(crate) idle: Option<TimerId>,
    /// The service's deadline.
    pub(crate) deadline: Option<TimerId>,
    /// When the connection last moved bytes, in nanoseconds of the layer's
    /// clock (`Shared::now`); read only when the idle timer fires.
    pub(crate) progress: u64,
    /// The idle timeout in milliseconds; 0 for none.
    pub(crate) idle_ms: u32,
    pub(crate) flags: Flags,
    /// Why the connection is to close, once `CLOSE_NOW` or `CLOSE_FLUSHED`
    /// is set.
    pub(crate) reason: Close,
}

impl ConnCore {
    pub(crate) fn new(stream: Stream, serial: u64) -> ConnCore {
        let mut flags = Flags::default();
        // A new connection can take output at once.
        flags.set(Flags::WRITABLE);
        ConnCore {
            stream,
            serial,
            bufs: None,
            idle: None,
            deadline: None,
            progress: 0,
            idle_ms: 0,
            flags,
            reason: Close::Service,
        }
    }

    /// The connection's buffers, taken from the pool if it held none.
    pub(crate) fn bufs(&mut self, pool: &mut Pool) -> &mut Bufs {
        self.bufs
            .get_or_insert_with(|| pool.pop().unwrap_or_default())
    }

    /// Gives the buffers back to the pool if both are empty.
    pub(crate) fn release_bufs(&mut self, pool: &mut Pool) {
        let empty = match &self.bufs {
            Some(bufs) => bufs.input.is_empty() && bufs.output.is_empty(),
            None => false,
        };
        if empty {
            if let Some(bufs) = self.bufs.take() {
                recycle(pool, bufs);
            }
        }
    }

    pub(crate) fn pending(&self) -> usize {
        self.bufs.as_ref().map_or(0, |b| b.output.len() - b.sent)
    }

    pub(crate) fn input_len(&self) -> usize {
        self.bufs.as_ref().map_or(0, |b| b.input.len())
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.flags
            .has(Flags::CLOSE_NOW | Flags::CLOSE_FLUSHED | Flags::CLOSED)
    }

    pub(crate) fn close_now(&mut self, reason: Close) {
        if !self.flags.has(Flags::CLOSE_NOW) {
            if !self.flags.has(Flags::CLOSE_FLUSHED) {
                self.reason = reason;
            }
            self.flags.set(Flags::CLOSE_NOW);
        }
    }

    pub(crate) fn close_flushed(&mut self, reason: Close) {
        if !self.is_closing() {
            self.reason = reason;
            self.flags.set(Flags::CLOSE_FLUSHED);
        }
    }
}

/// Free buffers. Boxed: a connection holds its `Bufs` through one pointer
/// (an idle connection pays 8 bytes for it), and moving one between the
/// pool and a connection moves the pointer, not the buffers.
#[allow(clippy::vec_box)]
pub(crate) type Pool = Vec<Box<Bufs>>;

/// The most buffers the pool keeps, and the largest it keeps: bigger ones
/// are freed, so one large reply does not pin its memory.
const POOL_BUFS: usize = 256;
const POOL_CAPACITY: usize = 256 << 10;

pub(crate) fn recycle(pool: &mut Pool, mut bufs: Box<Bufs>) {
    if pool.len() >= POOL_BUFS {
        return;
    }
    if bufs.input.capacity() > POOL_CAPACITY {
        bufs.input = Vec::new();
    }
    if bufs.output.capacity() > POOL_CAPACITY {
        bufs.output = Vec::new();
    }
    bufs.input.clear();
    bufs.output.clear();
    bufs.sent = 0;
    pool.push(bufs);
}
