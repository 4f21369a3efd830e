//! `Config`: the limits and sizes of a server, with their defaults.

use std::time::Duration;

use crate::reactor::Builder;

/// The limits, sizes and timeouts of a [`Server`](super::Server). Every
/// setting has a default fit for a small-request server; set the ones your
/// protocol needs.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ontime_core::serve::Config;
///
/// let config = Config::new()
///     .max_connections(10_000)
///     .idle_timeout(Some(Duration::from_secs(300)))
///     .max_input(64 << 20)
///     .threads(1);
/// # drop(config);
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) backlog: u32,
    pub(crate) reuse_port: bool,
    pub(crate) nodelay: bool,
    pub(crate) threads: usize,
    pub(crate) accepts_per_event: usize,
    pub(crate) accept_backoff: Duration,
    pub(crate) max_connections: usize,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) read_size: usize,
    pub(crate) reads_per_event: usize,
    pub(crate) max_input: usize,
    pub(crate) high_water: usize,
    pub(crate) low_water: usize,
    pub(crate) max_output: usize,
    pub(crate) drain_timeout: Duration,
    pub(crate) linger: Duration,
    pub(crate) socket_buffers: (Option<usize>, Option<usize>),
    pub(crate) reactor: Builder,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            backlog: 1024,
            reuse_port: false,
            nodelay: true,
            threads: 1,
            accepts_per_event: 64,
            accept_backoff: Duration::from_millis(100),
            max_connections: usize::MAX,
            idle_timeout: None,
            read_size: 64 << 10,
            reads_per_event: 8,
            max_input: 1 << 20,
            high_water: 64 << 10,
            low_water: 16 << 10,
            max_output: 16 << 20,
            drain_timeout: Duration::from_secs(5),
            linger: Duration::from_secs(2),
            socket_buffers: (None, None),
            reactor: Builder::new(),
        }
    }
}

impl Config {
    /// The defaults, as listed on each setting.
    pub fn new() -> Config {
        Config::default()
    }

    /// The listen backlog (default 1024; the kernel caps it at
    /// `net.core.somaxconn`).
    pub fn backlog(mut self, backlog: u32) -> Config {
        self.backlog = backlog;
        self
    }

    /// Sets `SO_REUSEPORT` on TCP listeners even with one thread, so that
    /// other processes may bind the same address (default off; with more
    /// than one [`thread`](Config::threads) it is always on).
    pub fn reuse_port(mut self, on: bool) -> Config {
        self.reuse_port = on;
        self
    }

    /// Sets `TCP_NODELAY` on accepted TCP connections (default on: replies
    /// go out as they are written, which is what request-response
    /// protocols want).
    pub fn nodelay(mut self, on: bool) -> Config {
        self.nodelay = on;
        self
    }

    /// How many reactors to run, one per thread, each with its own
    /// listeners on the same addresses (default 1: the reactor runs on the
    /// thread that calls [`Server::run`](super::Server::run)). With more
    /// than one, TCP listeners use `SO_REUSEPORT`, so the kernel spreads
    /// new connections over the threads.
    ///
    /// # Panics
    ///
    /// If `threads` is zero.
    pub fn threads(mut self, threads: usize) -> Config {
        assert!(threads > 0, "a server needs at least one thread");
        self.threads = threads;
        self
    }

    /// How many connections one listener event accepts before the listener
    /// waits for the next turn, so that a flood of connections cannot starve
    /// the open ones (default 64).
    pub fn accepts_per_event(mut self, n: usize) -> Config {
        self.accepts_per_event = n.max(1);
        self
    }

    /// How long accepting pauses after the process runs out of descriptors
    /// or memory (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`), unless a
    /// connection closes first (default 100 ms).
    pub fn accept_backoff(mut self, backoff: Duration) -> Config {
        self.accept_backoff = backoff;
        self
    }

    /// How many connections the server keeps open, over all its threads
    /// (default: no limit but the descriptors). A connection beyond it is accepted, sent
    /// [`Service::refusal`](super::Service::refusal) and closed at once, so
    /// that clients fail fast rather than wait in the backlog.
    pub fn max_connections(mut self, n: usize) -> Config {
        self.max_connections = n;
        self
    }

    /// Closes a connection after nothing moved in either direction for
    /// this long (default `None`: never). A service may change it per
    /// connection ([`Conn::set_idle_timeout`](super::Conn::set_idle_timeout)).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Config {
        self.idle_timeout = timeout;
        self
    }

    /// How many bytes one read asks for (default 64 KiB). Reads go into one
    /// buffer per reactor; a connection keeps only what its service left
    /// unconsumed.
    pub fn read_size(mut self, bytes: usize) -> Config {
        self.read_size = bytes.max(1);
        self
    }

    /// How many reads one readiness event of a connection makes before
    /// the connection waits for the next turn, so that one busy peer cannot
    /// starve the others (default 8).
    pub fn reads_per_event(mut self, n: usize) -> Config {
        self.reads_per_event = n.max(1);
        self
    }

    /// The most input a connection may hold unconsumed (default 1 MiB).
    /// Past it the service is told ([`Service::input_full`](super::Service::input_full))
    /// and the connection closes once its output is flushed.
    pub fn max_input(mut self, bytes: usize) -> Config {
        self.max_input = bytes;
        self
    }

    /// Output water marks (defaults 64 KiB and 16 KiB). Above `high`
    /// unsent bytes the layer stops reading the connection, until its output
    /// drains to `low` or below; a peer that never reads holds at most
    /// `high` plus the replies to one read.
    ///
    /// # Panics
    ///
    /// If `low` is above `high`.
    pub fn water_marks(mut self, high: usize, low: usize) -> Config {
        assert!(
            low <= high,
            "the low water mark {low} is above the high {high}"
        );
        self.high_water = high;
        self.low_water = low;
        self
    }

    /// The most output a connection may hold unsent (default 16 MiB): past
    /// it the connection is closed ([`Close::OutputLimit`](super::Close::OutputLimit)).
    /// Backpressure keeps a connection's own replies near the high water
    /// mark; this bounds what others write to it ([`Context::write_to`](super::Context::write_to)),
    /// so a subscriber that does not read is cut off instead of growing the
    /// server.
    pub fn max_output(mut self, bytes: usize) -> Config {
        self.max_output = bytes;
        self
    }

    /// How long a graceful shutdown lets open connections finish before it
    /// closes them (default 5 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Config {
        self.drain_timeout = timeout;
        self
    }

    /// How long a connection closed after its last reply
    /// ([`Conn::close_when_flushed`](super::Conn::close_when_flushed), an
    /// input over the limit) keeps reading and dropping what its peer still
    /// sends, with writing shut down, before it closes (default 2 s; zero
    /// closes at once). Closing a socket with unread input makes the kernel
    /// send a reset, which can destroy the last reply before the peer
    /// reads it; nginx's `lingering_close` is the same idea.
    pub fn linger(mut self, linger: Duration) -> Config {
        self.linger = linger;
        self
    }

    /// `SO_SNDBUF` and `SO_RCVBUF` for accepted connections (default: the
    /// kernel's, which on Linux grow to megabytes). The water marks and
    /// [`max_output`](Config::max_output) count the bytes the layer holds;
    /// the kernel's buffers come on top, so a server that must bound a slow
    /// peer's cost tightly sets the send buffer too.
    pub fn socket_buffers(mut self, send: Option<usize>, recv: Option<usize>) -> Config {
        self.socket_buffers = (send, recv);
        self
    }

    /// The settings of each thread's reactor (tick, events per poll,
    /// messages per turn).
    pub fn reactor(mut self, builder: Builder) -> Config {
        self.reactor = builder;
        self
    }
}
