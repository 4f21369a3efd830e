//! The reactor handler behind a server: accepting, reading into the shared
//! buffer, dispatching to the service, writing once per turn,
//! backpressure, deadlines, closing and draining. It uses only the reactor's
//! public API.

use std::io;
use std::mem;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::handler::{AsSource, Handler};
use crate::net::{TcpListener, UnixListener};
use crate::reactor::Reactor;
use crate::ready::Ready;
use crate::timers::TimerId;
use crate::{Interest, Source, Token};

use super::config::Config;
use super::conn::{
    mark_dirty, recycle, Conn, ConnCore, ConnId, Context, Flags, Input, Pool, Stream,
};
use super::server::Shutdown;
use super::stats::{Close, Stats};
use super::{Expired, Service};

/// A listening socket.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(listener) => listener.accept().map(|(s, _)| Stream::Tcp(s)),
            Listener::Unix(listener) => listener.accept().map(|(s, _)| Stream::Unix(s)),
        }
    }
}

impl Listening {
    /// The listener's address, for the log.
    fn name(&self) -> String {
        let addr = match &self.listener {
            Listener::Tcp(listener) => listener.local_addr().map(|a| a.to_string()),
            Listener::Unix(listener) => listener.local_addr().map(|a| match a.as_pathname() {
                Some(path) => path.display().to_string(),
                None => "unnamed".to_string(),
            }),
        };
        addr.unwrap_or_else(|e| format!("listener ({e})"))
    }
}

/// A listener and its pause.
#[derive(Debug)]
pub(crate) struct Listening {
    listener: Listener,
    /// Out of descriptors or memory: not accepting until a connection
    /// closes or `backoff` fires.
    paused: bool,
    backoff: Option<TimerId>,
}

/// A connection: the layer's record and the service's state (`None` only
/// until [`Service::connected`] returns it).
#[derive(Debug)]
pub(crate) struct ConnEntry<T> {
    pub(crate) core: ConnCore,
    pub(crate) state: Option<T>,
}

/// What a registration of the layer's reactor carries.
#[derive(Debug)]
pub(crate) enum Entry<T> {
    Listener(Box<Listening>),
    Conn(ConnEntry<T>),
}

impl<T> AsSource for Entry<T> {
    fn source(&mut self) -> &mut dyn Source {
        match self {
            Entry::Listener(listening) => match &mut listening.listener {
                Listener::Tcp(listener) => listener,
                Listener::Unix(listener) => listener,
            },
            Entry::Conn(entry) => match &mut entry.core.stream {
                Stream::Tcp(stream) => stream,
                Stream::Unix(stream) => stream,
            },
        }
    }
}

/// What the layer's timers carry: registrations by `Token.0`.
#[derive(Debug)]
pub(crate) enum Alarm<T> {
    Idle(u32),
    Deadline(u32),
    Backoff(u32),
    Drain,
    User(T),
}

/// What every part of the layer shares on one reactor, apart from the
/// service.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) thread: usize,
    pub(crate) stats: Stats,
    pub(crate) shutdown: Shutdown,
    pub(crate) draining: bool,
    /// Connections open on every thread of the server, for
    /// `max_connections`.
    open: Arc<AtomicUsize>,
    /// Every read goes here first; a connection keeps only its leftovers.
    read_buf: Vec<u8>,
    /// Buffers of connections that hold none now.
    pub(crate) pool: Pool,
    /// Connections with output to send (or closed from outside their own
    /// dispatch), settled at the end of the turn.
    pub(crate) dirty: Vec<ConnId>,
    /// Set while the end of the turn settles `dirty`: settling then writes.
    flushing: bool,
    listeners: Vec<Token>,
    /// How many of `listeners` are paused: a close looks at them only then.
    paused: usize,
    serial: u64,
    /// Out of descriptors: warned once, until an accept succeeds again.
    starved: bool,
    epoch: Instant,
}

impl Shared {
    pub(crate) fn new(
        config: Config,
        thread: usize,
        shutdown: Shutdown,
        open: Arc<AtomicUsize>,
    ) -> Shared {
        Shared {
            open,
            read_buf: vec![0; config.read_size],
            config,
            thread,
            stats: Stats::default(),
            shutdown,
            draining: false,
            pool: Vec::new(),
            dirty: Vec::new(),
            flushing: false,
            listeners: Vec::new(),
            paused: 0,
            serial: 0,
            starved: false,
            epoch: Instant::now(),
        }
    }

    /// Nanoseconds since the layer started.
    pub(crate) fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    pub(crate) fn instant(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }
}

/// The reactor handler: the service and what the layer shares.
#[derive(Debug)]
pub(crate) struct Layer<S> {
    pub(crate) service: S,
    pub(crate) shared: Shared,
}

impl<S: Service> Handler for Layer<S> {
    type State = Entry<S::Conn>;
    type Timer = Alarm<S::Timer>;
    type Message = S::Message;

    fn ready(
        &mut self,
        reactor: &mut Reactor<Self>,
        token: Token,
        entry: &mut Entry<S::Conn>,
        ready: Ready,
    ) {
        match entry {
            Entry::Listener(listening) => self.accept(reactor, token, listening),
            Entry::Conn(entry) => {
                log::trace!("{token:?} {ready:?}");
                self.on_ready(reactor, token, entry, ready);
            }
        }
    }

    fn timer(&mut self, reactor: &mut Reactor<Self>, id: TimerId, alarm: &mut Alarm<S::Timer>) {
        match alarm {
            Alarm::Idle(index) => self.conn_timer(reactor, *index, id, Expired::Idle),
            Alarm::Deadline(index) => self.conn_timer(reactor, *index, id, Expired::Deadline),
            Alarm::Backoff(index) => {
                let token = Token(*index as usize);
                reactor.with_state(token, |reactor, entry| {
                    if let Entry::Listener(listening) = entry {
                        if listening.backoff == Some(id) {
                            listening.backoff = None;
                            self.shared.paused -= usize::from(resume(reactor, token, listening));
                        }
                    }
                });
            }
            Alarm::Drain => self.end_drain(reactor),
            Alarm::User(value) => {
                let mut cx = Context {
                    reactor: &mut *reactor,
                    shared: &mut self.shared,
                };
                self.service.timer(&mut cx, id, value);
            }
        }
    }

    fn message(&mut self, reactor: &mut Reactor<Self>, message: S::Message) {
        let mut cx = Context {
            reactor: &mut *reactor,
            shared: &mut self.shared,
        };
        self.service.message(&mut cx, message);
    }

    fn woken(&mut self, reactor: &mut Reactor<Self>) {
        if self.shared.shutdown.is_started() {
            self.begin_drain(reactor);
        }
    }

    /// Every connection with output from this turn sends it now: one write
    /// each, after every connection that was ready has been read.
    fn turn_end(&mut self, reactor: &mut Reactor<Self>) {
        self.flush_dirty(reactor);
    }
}

/// Whether an accept error means the process ran out of descriptors or
/// memory: accepting again at once would fail again.
fn is_starved(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Whether an accept error is about one connection only (aborted in the
/// backlog, or a network error Linux reports through `accept`): skip it.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::NetworkDown
    ) || e.raw_os_error() == Some(libc::EPROTO)
        || is_linux_network_error(e)
}

/// Linux passes the network errors of a pending connection on through
/// `accept(2)`, which its man page says to treat like `EAGAIN`.
#[cfg(target_os = "linux")]
fn is_linux_network_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENONET | libc::ENOPROTOOPT | libc::EHOSTDOWN | libc::EOPNOTSUPP)
    )
}

#[cfg(not(target_os = "linux"))]
fn is_linux_network_error(_: &io::Error) -> bool {
    false
}

/// Lets a paused listener accept again, on the next turn; returns whether
/// it was paused.
fn resume<S: Service>(
    reactor: &mut Reactor<Layer<S>>,
    token: Token,
    listening: &mut Listening,
) -> bool {
    if !listening.paused {
        return false;
    }
    listening.paused = false;
    if let Some(timer) = listening.backoff.take() {
        reactor.cancel_timer(timer);
    }
    log::debug!("{token:?} accepting again");
    reactor.requeue(token, Ready::READABLE);
    true
}

impl<S: Service> Layer<S> {
    /// Registers the listeners, tells the service it started, and drains at
    /// once if the shutdown began before this thread did.
    pub(crate) fn start(
        &mut self,
        reactor: &mut Reactor<Self>,
        listeners: Vec<Listener>,
    ) -> io::Result<()> {
        for listener in listeners {
            let listening = Listening {
                listener,
                paused: false,
                backoff: None,
            };
            let token =
                reactor.register(Entry::Listener(Box::new(listening)), Interest::READABLE)?;
            self.shared.listeners.push(token);
        }
        let mut cx = Context {
            reactor: &mut *reactor,
            shared: &mut self.shared,
        };
        self.service.started(&mut cx);
        // Before the first turn, which might wait for an event.
        self.flush_dirty(reactor);
        if self.shared.shutdown.is_started() {
            self.begin_drain(reactor);
        }
        Ok(())
    }

    // ---- Accepting ----------------------------------------------------

    fn accept(&mut self, reactor: &mut Reactor<Self>, token: Token, listening: &mut Listening) {
        if listening.paused || self.shared.draining {
            return;
        }
        for _ in 0..self.shared.config.accepts_per_event {
            match listening.listener.accept() {
                Ok(stream) => {
                    if self.shared.open.load(Ordering::Relaxed)
                        >= self.shared.config.max_connections
                    {
                        self.refuse(stream);
                    } else {
                        self.open(reactor, stream);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The backlog is drained: an episode of running out ends.
                    if self.shared.starved {
                        self.shared.starved = false;
                        log::info!("{} accepting again", listening.name());
                    }
                    return;
                }
                Err(e) if is_transient(&e) => {
                    log::debug!("{} accept: {e} (skipped)", listening.name());
                }
                Err(e) => {
                    self.shared.stats.accept_pauses += 1;
                    let backoff = self.shared.config.accept_backoff;
                    let name = listening.name();
                    if !is_starved(&e) {
                        log::warn!("{name} accept failed: {e}; pausing for {backoff:?}");
                    } else if !self.shared.starved {
                        self.shared.starved = true;
                        log::warn!(
                            "{name} accept: {e}; pausing until a connection closes \
                             or {backoff:?} pass (warned once until the backlog is drained)"
                        );
                    } else {
                        log::debug!("{name} accept: {e}; pausing again");
                    }
                    listening.paused = true;
                    self.shared.paused += 1;
                    listening.backoff =
                        Some(reactor.timer_after(backoff, Alarm::Backoff(token.0 as u32)));
                    return;
                }
            }
        }
        // More may be waiting: after everyone else.
        reactor.requeue(token, Ready::READABLE);
    }

    /// A connection beyond `max_connections`: its last message, then close.
    fn refuse(&mut self, mut stream: Stream) {
        self.shared.stats.refused += 1;
        let message = self.service.refusal();
        log::debug!(
            "refused a connection: {} open (max_connections)",
            self.shared.open.load(Ordering::Relaxed)
        );
        if !message.is_empty() {
            if let Ok(n) = stream.write(message) {
                self.shared.stats.bytes_out += n as u64;
            }
        }
        // FIN after the message, rather than nothing at all.
        let _ = stream.shutdown_write();
    }

    fn open(&mut self, reactor: &mut Reactor<Self>, stream: Stream) {
        if let (Stream::Tcp(stream), true) = (&stream, self.shared.config.nodelay) {
            if let Err(e) = stream.set_nodelay(true) {
                log::debug!("TCP_NODELAY: {e}");
            }
        }
        if let Err(e) = stream.set_buffer_sizes(self.shared.config.socket_buffers) {
            log::debug!("socket buffer sizes: {e}");
        }
        self.shared.serial += 1;
        let core = ConnCore::new(stream, self.shared.serial);
        let entry = Entry::Conn(ConnEntry { core, state: None });
        // Edge-triggered, both directions, once: backpressure then costs no
        // system call, only a flag.
        let token = match reactor.register(entry, Interest::READABLE | Interest::WRITABLE) {
            Ok(token) => token,
            Err(e) => {
                log::warn!("registering a new connection: {e}");
                return;
            }
        };
        self.shared.stats.accepted += 1;
        self.shared.stats.open += 1;
        self.shared.open.fetch_add(1, Ordering::Relaxed);
        reactor.with_state(token, |reactor, entry| {
            let Entry::Conn(entry) = entry else {
                unreachable!("just registered as a connection")
            };
            let id = Self::id(token, &entry.core);
            log::debug!("{id:?} connected");
            if let Some(idle) = self.shared.config.idle_timeout {
                let ms = idle.as_millis().clamp(1, u32::MAX as u128) as u32;
                entry.core.idle_ms = ms;
                entry.core.progress = self.shared.now();
                entry.core.idle = Some(reactor.timer_after(
                    Duration::from_millis(u64::from(ms)),
                    Alarm::Idle(token.0 as u32),
                ));
            }
            let mut conn = Conn {
                cx: Context {
                    reactor: &mut *reactor,
                    shared: &mut self.shared,
                },
                id,
                core: &mut entry.core,
                cause: Close::Service,
            };
            entry.state = Some(self.service.connected(&mut conn));
            self.settle(reactor, token, entry);
        });
    }

    // ---- One connection -----------------------------------------------

    fn id(token: Token, core: &ConnCore) -> ConnId {
        ConnId {
            index: token.0 as u32,
            serial: core.serial,
        }
    }

    /// Runs `call` with the connection as a [`Conn`] and its state.
    fn call<R>(
        &mut self,
        reactor: &mut Reactor<Self>,
        token: Token,
        entry: &mut ConnEntry<S::Conn>,
        cause: Close,
        call: impl FnOnce(&mut S, &mut Conn<'_, S>, &mut S::Conn) -> R,
    ) -> R {
        let id = Self::id(token, &entry.core);
        let mut conn = Conn {
            cx: Context {
                reactor,
                shared: &mut self.shared,
            },
            id,
            core: &mut entry.core,
            cause,
        };
        let state = entry
            .state
            .as_mut()
            .expect("a connection's state is set once connected");
        call(&mut self.service, &mut conn, state)
    }

    fn on_ready(
        &mut self,
        reactor: &mut Reactor<Self>,
        token: Token,
        entry: &mut ConnEntry<S::Conn>,
        ready: Ready,
    ) {
        let flags = &mut entry.core.flags;
        if flags.has(Flags::CLOSED) {
            return;
        }
        if ready.is_writable() || ready.is_write_closed() || ready.is_error() {
            flags.set(Flags::WRITABLE);
        }
        if ready.is_readable() || ready.is_read_closed() || ready.is_error() {
            flags.set(Flags::READABLE);
        }
        // Output first: sending it may lift the backpressure that stops
        // reading, in time for this event's read.
        if entry.core.pending() > 0 {
            self.flush(token, entry);
            self.water(reactor, token, entry);
        }
        self.read(reactor, token, entry, ready);
        self.settle(reactor, token, entry);
    }

    /// Whether to read now: the socket may hold bytes, and the connection
    /// takes input (not paused, not closing), or is lingering, when what
    /// arrives is read and dropped.
    fn can_read(core: &ConnCore) -> bool {
        let flags = core.flags;
        if !flags.has(Flags::READABLE) || flags.has(Flags::EOF | Flags::CLOSE_NOW | Flags::CLOSED) {
            return false;
        }
        flags.has(Flags::LINGERING) || !flags.has(Flags::PAUSED | Flags::CLOSE_FLUSHED)
    }

    /// Reads until the socket is drained or the budget is spent,
    /// dispatching each read to the service (or, lingering, dropping it).
    fn read(
        &mut self,
        reactor: &mut Reactor<Self>,
        token: Token,
        entry: &mut ConnEntry<S::Conn>,
        ready: Ready,
    ) {
        let lingering = entry.core.flags.has(Flags::LINGERING);
        // After a FIN or an error a short read no longer proves the socket
        // drained: read on until 0 or WouldBlock (see `Handler`).
        let short_read_drains = !(ready.is_read_closed() || ready.is_error());
        let mut buf = mem::take(&mut self.shared.read_buf);
        let mut reads = 0;
        while Self::can_read(&entry.core) {
            if reads == self.shared.config.reads_per_event {
                reactor.requeue(token, Ready::READABLE);
                break;
            }
            reads += 1;
            match entry.core.stream.read(&mut buf) {
                Ok(0) => {
                    entry.core.flags.set(Flags::EOF);
                    entry.core.flags.clear(Flags::READABLE);
                    log::trace!("{token:?} end of file");
                    if !lingering && entry.core.input_len() > 0 {
                        self.deliver(reactor, token, entry, &[], true);
                    }
                }
                Ok(n) => {
                    self.shared.stats.bytes_in += n as u64;
                    if n < buf.len() && short_read_drains {
                        entry.core.flags.clear(Flags::READABLE);
                    }
                    if lingering {
                        continue;
                    }
                    if entry.core.idle_ms != 0 {
                        entry.core.progress = self.shared.now();
                    }
                    self.deliver(reactor, token, entry, &buf[..n], false);
                    // Replies past the high mark: stop reading and send.
                    if entry.core.pending() > self.shared.config.high_water {
                        self.flush(token, entry);
                        self.water(reactor, token, entry);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    entry.core.flags.clear(Flags::READABLE);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("{:?} read: {e}", Self::id(token, &entry.core));
                    entry.core.close_now(Close::Error(e.kind()));
                }
            }
        }
        self.shared.read_buf = buf;
    }

    /// Hands `data` (after the connection's leftovers) to the service and
    /// keeps what it did not consume.
    fn deliver(
        &mut self,
        reactor: &mut Reactor<Self>,
        token: Token,
        entry: &mut ConnEntry<S::Conn>,
        data: &[u8],
        closed: bool,
    ) {
        let mut leftovers = match entry.core.bufs.as_mut() {
            Some(bufs) if !bufs.input.is_empty() => mem::take(&mut bufs.input),
            _ => Vec::new(),
        };
        let kept = if leftovers.is_empty() {
            let consumed = self.call(
                reactor,
                token,
                entry,
                Close::Service,
                |service, conn, state| {
                    let mut input = Input::new(data, closed);
                    service.received(conn, state, &mut input);
                    input.consumed()
                },
            );
            let rest = &data[consumed..];
            if !rest.is_empty() {
                entry
                    .core
                    .bufs(&mut self.shared.pool)
                    .input
                    .extend_from_slice(rest);
            }
            rest.len()
        } else {
            leftovers.extend_from_slice(data);
            let consumed = self.call(
                reactor,
                token,
                entry,
                Close::Service,
                |service, conn, state| {
                    let mut input = Input::new(&leftovers, closed);
                    service.received(conn, state, &mut input);
                    input.consumed()
                },
            );
            leftovers.drain(..consumed);
            let kept = leftovers.len();
            // Back where it was taken from (an empty Vec was left there).
            entry.core.bufs(&mut self.shared.pool).input = leftovers;
            kept
        };
        if kept > self.shared.config.max_input && !entry.core.is_closing() {
            log::debug!(
                "{:?} input over the limit: {kept} bytes unconsumed",
                Self::id(token, &entry.core)
            );
            self.call(
                reactor,
                token,
                entry,
                Close::InputLimit,
                |service, conn, state| {
                    service.input_full(conn, state);
                    conn.close_when_flushed();
                },
            );
            if let Some(bufs) = entry.core.bufs.as_mut() {
                bufs.input = Vec::new();
            }
        }
    }

    /// One write of the unsent output, if the socket may take it.
    fn flush(&mut self, token: Token, entry: &mut ConnEntry<S::Conn>) {
        let core = &mut entry.core;
        if core.flags.has(Flags::CLOSE_NOW | Flags::CLOSED) || !core.flags.has(Flags::WRITABLE) {
            return;
        }
        let Some(bufs) = core.bufs.as_mut() else {
            return;
        };
        while bufs.sent < bufs.output.len() {
            match core.stream.write(&bufs.output[bufs.sent..]) {
                Ok(n) => {
                    self.shared.stats.bytes_out += n as u64;
                    bufs.sent += n;
                    if core.idle_ms != 0 {
                        core.progress = self.shared.now();
                    }
                    if bufs.sent < bufs.output.len() {
                        // The socket is full: the next writable edge says
                        // when it takes more.
                        core.flags.clear(Flags::WRITABLE);
                        core.flags.set(Flags::BACKLOGGED);
                    }
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    core.flags.clear(Flags::WRITABLE);
                    core.flags.set(Flags::BACKLOGGED);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("{:?} write: {e}", Self::id(token, core));
                    core.close_now(Close::Error(e.kind()));
                    return;
                }
            }
        }
        if bufs.sent == bufs.output.len() {
            bufs.output.clear();
            bufs.sent = 0;
        } else if bufs.sent > bufs.output.len() / 2 {
            // Compact now and then, not on every short write.
            bufs.output.drain(..bufs.sent);
            bufs.sent = 0;
        }
    }

    /// Backpressure by the water marks.
    fn water(&mut self, reactor: &mut Reactor<Self>, token: Token, entry: &mut ConnEntry<S::Conn>) {
        let pending = entry.core.pending();
        let flags = &mut entry.core.flags;
        if pending > self.shared.config.high_water {
            if !flags.has(Flags::PAUSED) {
                log::trace!("{token:?} paused: {pending} bytes unsent");
                flags.set(Flags::PAUSED);
            }
        } else if pending <= self.shared.config.low_water && flags.has(Flags::PAUSED) {
            log::trace!("{token:?} resumed");
            flags.clear(Flags::PAUSED);
            if flags.has(Flags::READABLE) {
                // What arrived while paused raised no new edge.
                reactor.requeue(token, Ready::READABLE);
            }
        }
    }

    /// After anything happened to a connection: send, apply backpressure,
    /// tell the service its output drained, and close it if it is due.
    fn settle(
        &mut self,
        reactor: &mut Reactor<Self>,
        token: Token,
        entry: &mut ConnEntry<S::Conn>,
    ) {
        if entry.core.flags.has(Flags::CLOSED) {
            return;
        }
        let mut refills = 0;
        loop {
            if entry.core.flags.has(Flags::CLOSE_NOW) {
                let reason = entry.core.reason;
                return self.close(reactor, token, entry, reason);
            }
            if !self.shared.flushing
                && entry.core.pending() > 0
                && entry.core.flags.has(Flags::WRITABLE)
            {
                // Written at the end of the turn, with every other reply of
                // the turn (see `turn_end`).
                let id = Self::id(token, &entry.core);
                mark_dirty(&mut self.shared.dirty, &mut entry.core, id);
                return;
            }
            self.flush(token, entry);
            if entry.core.flags.has(Flags::CLOSE_NOW) {
                continue;
            }
            let pending = entry.core.pending();
            if pending > self.shared.config.max_output {
                log::debug!(
                    "{:?} output over the limit: {pending} bytes unsent",
                    Self::id(token, &entry.core)
                );
                return self.close(reactor, token, entry, Close::OutputLimit);
            }
            self.water(reactor, token, entry);
            if pending > 0 {
                break;
            }
            // Everything is sent.
            if entry.core.flags.has(Flags::BACKLOGGED) && !entry.core.is_closing() {
                entry.core.flags.clear(Flags::BACKLOGGED);
                if refills == 16 {
                    // A service that refills on every drain: let others run.
                    entry.core.flags.set(Flags::BACKLOGGED);
                    reactor.requeue(token, Ready::WRITABLE);
                    break;
                }
                refills += 1;
                self.call(
                    reactor,
                    token,
                    entry,
                    Close::Service,
                    |service, conn, state| {
                        service.drained(conn, state);
                    },
                );
                if entry.core.pending() > 0 {
                    // Its refill: drained again once that is sent.
                    entry.core.flags.set(Flags::BACKLOGGED);
                    continue;
                }
            }
            let flags = entry.core.flags;
            if flags.has(Flags::CLOSE_FLUSHED) {
                let linger = self.shared.config.linger;
                if flags.has(Flags::EOF) || linger.is_zero() {
                    let reason = entry.core.reason;
                    return self.close(reactor, token, entry, reason);
                }
                if !flags.has(Flags::LINGERING) {
                    self.linger(reactor, token, entry, linger);
                }
                break;
            }
            if flags.has(Flags::SHUT_WRITE) && !flags.has(Flags::WRITE_SHUT) {
                entry.core.flags.set(Flags::WRITE_SHUT);
                if let Err(e) = entry.core.stream.shutdown_write() {
                    log::debug!("{token:?} shutdown: {e}");
                }
            }
            if flags.has(Flags::EOF) {
                return self.close(reactor, token, entry, Close::Peer);
            }
            let between_requests = entry
                .state
                .as_ref()
                .is_some_and(|state| self.service.is_idle(state));
            if self.shared.draining && entry.core.input_len() == 0 && between_requests {
                return self.close(reactor, token, entry, Close::Shutdown);
            }
            break;
        }
        entry.core.release_bufs(&mut self.shared.pool);
    }

    /// Begins a lingering close: writing shut down, input dropped until
    /// end of file or `linger` passes. Closing at once with unread input
    /// would make the kernel answer with a reset, which can destroy the
    /// last reply before the peer reads it.
    fn linger(
        &mut self,
        reactor: &mut Reactor<Self>,
        token: Token,
        entry: &mut ConnEntry<S::Conn>,
        linger: Duration,
    ) {
        let core = &mut entry.core;
        core.flags.set(Flags::LINGERING);
        if !core.flags.has(Flags::WRITE_SHUT) {
            core.flags.set(Flags::WRITE_SHUT);
            if let Err(e) = core.stream.shutdown_write() {
                log::debug!("{token:?} shutdown: {e}");
            }
        }
        // The service's deadline no longer matters; the slot bounds the
        // linger instead.
        if let Some(timer) = core.deadline.take() {
            reactor.cancel_timer(timer);
        }
        core.deadline = Some(reactor.timer_after(linger, Alarm::Deadline(token.0 as u32)));
        if let Some(bufs) = core.bufs.as_mut() {
            bufs.input = Vec::new();
        }
        if core.flags.has(Flags::READABLE) {
            reactor.requeue(token, Ready::READABLE);
        }
    }

    fn conn_timer(&mut self, reactor: &mut Reactor<Self>, index: u32, id: TimerId, which: Expired) {
        let token = Token(index as usize);
        reactor.with_state(token, |reactor, entry| {
            if let Entry::Conn(entry) = entry {
                self.on_timer(reactor, token, entry, id, which);
            }
        });
    }

    fn on_timer(
        &mut self,
        reactor: &mut Reactor<Self>,
        token: Token,
        entry: &mut ConnEntry<S::Conn>,
        timer: TimerId,
        which: Expired,
    ) {
        if entry.core.flags.has(Flags::LINGERING) {
            if which == Expired::Deadline && entry.core.deadline == Some(timer) {
                entry.core.deadline = None;
                let reason = entry.core.reason;
                self.close(reactor, token, entry, reason);
            }
            return;
        }
        if entry.core.is_closing() {
            return;
        }
        match which {
            Expired::Idle => {
                if entry.core.idle != Some(timer) {
                    return;
                }
                entry.core.idle = None;
                let idle = u64::from(entry.core.idle_ms) * 1_000_000;
                let now = self.shared.now();
                let quiet = now.saturating_sub(entry.core.progress);
                if quiet < idle {
                    // Progress since the timer was set: wait for the rest.
                    let at = self.shared.instant(entry.core.progress + idle);
                    entry.core.idle = Some(reactor.timer_at(at, Alarm::Idle(token.0 as u32)));
                    return;
                }
                log::debug!(
                    "{:?} idle for {:?}",
                    Self::id(token, &entry.core),
                    Duration::from_nanos(quiet)
                );
                self.call(
                    reactor,
                    token,
                    entry,
                    Close::Idle,
                    |service, conn, state| {
                        service.expired(conn, state, Expired::Idle);
                    },
                );
                if !entry.core.is_closing() && entry.core.idle.is_none() && entry.core.idle_ms != 0
                {
                    // Kept open: idle from now.
                    entry.core.progress = self.shared.now();
                    let delay = Duration::from_millis(u64::from(entry.core.idle_ms));
                    entry.core.idle = Some(reactor.timer_after(delay, Alarm::Idle(token.0 as u32)));
                }
            }
            Expired::Deadline => {
                if entry.core.deadline != Some(timer) {
                    return;
                }
                entry.core.deadline = None;
                log::debug!("{:?} deadline passed", Self::id(token, &entry.core));
                self.call(
                    reactor,
                    token,
                    entry,
                    Close::Deadline,
                    |service, conn, state| {
                        service.expired(conn, state, Expired::Deadline);
                    },
                );
            }
        }
        self.settle(reactor, token, entry);
    }

    /// Closes a connection: timers, counters, the service's last word, the
    /// registration; and lets a paused listener accept again.
    fn close(
        &mut self,
        reactor: &mut Reactor<Self>,
        token: Token,
        entry: &mut ConnEntry<S::Conn>,
        reason: Close,
    ) {
        let core = &mut entry.core;
        core.flags.set(Flags::CLOSED);
        for timer in [core.idle.take(), core.deadline.take()]
            .into_iter()
            .flatten()
        {
            reactor.cancel_timer(timer);
        }
        if let Some(bufs) = core.bufs.take() {
            recycle(&mut self.shared.pool, bufs);
        }
        let id = Self::id(token, core);
        self.shared.stats.count_close(reason);
        self.shared.open.fetch_sub(1, Ordering::Relaxed);
        log::debug!("{id:?} closed: {reason:?}");
        if let Some(state) = entry.state.as_mut() {
            let mut cx = Context {
                reactor: &mut *reactor,
                shared: &mut self.shared,
            };
            self.service.closed(&mut cx, id, state, reason);
        }
        // The state goes when the reactor gets it back, closing the socket.
        if let Err(e) = reactor.deregister(token) {
            log::debug!("{id:?} deregister: {e}");
        }
        // A descriptor is free: a listener out of them may accept again.
        if self.shared.paused > 0 {
            for &listener in &self.shared.listeners {
                reactor.with_state(listener, |reactor, entry| {
                    if let Entry::Listener(listening) = entry {
                        self.shared.paused -= usize::from(resume(reactor, listener, listening));
                    }
                });
            }
        }
        if self.shared.draining && self.shared.stats.open == 0 {
            log::debug!("drained: every connection is closed");
            reactor.stop();
        }
    }

    /// Settles every connection listed as dirty: with output to send, or
    /// closed from another's callback. Settling writes now.
    fn flush_dirty(&mut self, reactor: &mut Reactor<Self>) {
        self.shared.flushing = true;
        while let Some(id) = self.shared.dirty.pop() {
            let token = Token(id.index as usize);
            reactor.with_state(token, |reactor, entry| {
                if let Entry::Conn(entry) = entry {
                    if entry.core.serial == id.serial {
                        entry.core.flags.clear(Flags::DIRTY);
                        self.settle(reactor, token, entry);
                    }
                }
            });
        }
        self.shared.flushing = false;
    }

    // ---- Shutdown -----------------------------------------------------

    fn begin_drain(&mut self, reactor: &mut Reactor<Self>) {
        if self.shared.draining {
            return;
        }
        self.shared.draining = true;
        log::debug!(
            "thread {}: shutting down, {} connections open",
            self.shared.thread,
            self.shared.stats.open
        );
        for token in mem::take(&mut self.shared.listeners) {
            if let Err(e) = reactor.deregister(token) {
                log::debug!("{token:?} deregister: {e}");
            }
        }
        reactor.timer_after(self.shared.config.drain_timeout, Alarm::Drain);
        for token in reactor.tokens() {
            reactor.with_state(token, |reactor, entry| {
                if let Entry::Conn(entry) = entry {
                    self.settle(reactor, token, entry);
                }
            });
        }
        if self.shared.stats.open == 0 {
            reactor.stop();
        }
    }

    fn end_drain(&mut self, reactor: &mut Reactor<Self>) {
        log::debug!(
            "thread {}: drain timeout, closing {} connections",
            self.shared.thread,
            self.shared.stats.open
        );
        for token in reactor.tokens() {
            reactor.with_state(token, |reactor, entry| {
                if let Entry::Conn(entry) = entry {
                    if !entry.core.flags.has(Flags::CLOSED) {
                        self.close(reactor, token, entry, Close::Shutdown);
                    }
                }
            });
        }
        reactor.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an idle connection costs in user space is its registration
    /// (this entry plus the reactor's bookkeeping) and its idle timer (the
    /// wheel node plus the timer arena slot, with this alarm as the value);
    /// the budget for all of it is 256 bytes.
    #[test]
    fn an_idle_connection_stays_small() {
        assert!(
            std::mem::size_of::<Entry<()>>() <= 88,
            "Entry<()> is {} bytes",
            std::mem::size_of::<Entry<()>>()
        );
        assert_eq!(std::mem::size_of::<Alarm<()>>(), 8);
        assert_eq!(
            std::mem::size_of::<Option<Box<super::super::conn::Bufs>>>(),
            8
        );
    }
}
