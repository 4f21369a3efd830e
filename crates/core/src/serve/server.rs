//! `Server`: binding listeners, running one reactor per thread, and the
//! `Shutdown` handle.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::net::{TcpListener, UnixListener};
use crate::reactor::Reactor;

use super::config::Config;
use super::layer::{Layer, Listener, Shared};
use super::stats::Stats;
use super::Service;

/// A server: its [`Config`], its listeners, and the threads that run it.
///
/// Bind with [`listen`](Server::listen) (TCP) or
/// [`listen_unix`](Server::listen_unix), then [`run`](Server::run) it with a
/// factory that makes each thread's [`Service`]. See the
/// [module docs](super) for a complete server.
#[derive(Debug)]
pub struct Server {
    config: Config,
    /// One list per thread; every thread has a listener for each address.
    listeners: Vec<Vec<Listener>>,
    shutdown: Shutdown,
}

impl Server {
    /// A server with `config` and no listeners yet.
    pub fn new(config: Config) -> Server {
        let threads = config.threads;
        Server {
            config,
            listeners: (0..threads).map(|_| Vec::new()).collect(),
            shutdown: Shutdown::new(),
        }
    }

    /// Listens on a TCP address, with `SO_REUSEADDR`, the configured
    /// backlog, and `SO_REUSEPORT` when there is more than one thread (each
    /// thread has a listener of its own, and the kernel spreads connections
    /// over them) or [`Config::reuse_port`] asks for it. Returns the address
    /// bound (its port is chosen by the OS if `addr`'s is 0).
    ///
    /// Without [`Config::reuse_port`], an address another socket listens on
    /// fails with `AddrInUse`, threads or not: the threads' shared port is
    /// first bound once without `SO_REUSEPORT`, to check.
    ///
    /// # Errors
    ///
    /// Any error creating, binding or listening on the socket
    /// (`AddrInUse`, `PermissionDenied`, ...).
    pub fn listen(&mut self, addr: SocketAddr) -> io::Result<SocketAddr> {
        let reuse_port = self.config.reuse_port || self.config.threads > 1;
        let mut bound = addr;
        if reuse_port && !self.config.reuse_port {
            // The threads share the port with `SO_REUSEPORT`, which would
            // also let them join another server's group on that port; a
            // first bind without it fails with `AddrInUse` instead, as one
            // thread would. (It also picks the port for a port of 0.)
            let probe = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
            probe.set_reuse_address(true)?;
            probe.bind(&addr.into())?;
            bound = probe
                .local_addr()?
                .as_socket()
                .ok_or_else(|| io::Error::other("a TCP socket without an address"))?;
        }
        for (i, listeners) in self.listeners.iter_mut().enumerate() {
            let socket = Socket::new(Domain::for_address(bound), Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            if reuse_port {
                socket.set_reuse_port(true)?;
            }
            socket.bind(&bound.into())?;
            socket.listen(self.config.backlog.min(i32::MAX as u32) as i32)?;
            socket.set_nonblocking(true)?;
            if i == 0 {
                bound = socket
                    .local_addr()?
                    .as_socket()
                    .ok_or_else(|| io::Error::other("a TCP listener without an address"))?;
            }
            let listener = TcpListener::from_std(socket.into());
            listeners.push(Listener::Tcp(listener));
        }
        log::debug!("listening on {bound}");
        Ok(bound)
    }

    /// Listens on a Unix-domain stream socket at `path`, which must not
    /// exist. With more than one thread, the threads share the one socket.
    ///
    /// # Errors
    ///
    /// Any error creating, binding or listening (`AddrInUse` if `path`
    /// exists).
    pub fn listen_unix(&mut self, path: impl AsRef<Path>) -> io::Result<()> {
        let path = path.as_ref();
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.bind(&SockAddr::unix(path)?)?;
        socket.listen(self.config.backlog.min(i32::MAX as u32) as i32)?;
        socket.set_nonblocking(true)?;
        let listener: std::os::unix::net::UnixListener = socket.into();
        let last = self.listeners.len() - 1;
        for listeners in &mut self.listeners[..last] {
            listeners.push(Listener::Unix(UnixListener::from_std(
                listener.try_clone()?,
            )));
        }
        self.listeners[last].push(Listener::Unix(UnixListener::from_std(listener)));
        log::debug!("listening on {}", path.display());
        Ok(())
    }

    /// A handle that shuts the server down gracefully, from any thread (a
    /// signal-watching one, say).
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Runs the server until it is shut down: one reactor per configured
    /// thread, each with a service from `factory(thread_index)`. With one
    /// thread (the default) the reactor runs on the calling thread. Returns
    /// once every thread is done, with their counters.
    ///
    /// # Errors
    ///
    /// The first error a thread met: creating its reactor, registering its
    /// listeners, or polling. A thread's error shuts the others down.
    ///
    /// # Panics
    ///
    /// If a service panics, once every thread is done.
    pub fn run<S, F>(self, factory: F) -> io::Result<Report>
    where
        S: Service,
        F: Fn(usize) -> S + Sync,
    {
        let Server {
            config,
            listeners,
            shutdown,
        } = self;
        let open = Arc::new(AtomicUsize::new(0));
        let run_one = |thread: usize, listeners: Vec<Listener>| {
            // A thread that fails or panics takes the others down with it,
            // so that `run` returns.
            let guard = ShutdownOnDrop(&shutdown);
            let result = run_thread(&config, &shutdown, thread, listeners, &factory, &open);
            if result.is_ok() {
                std::mem::forget(guard);
            }
            result
        };
        let mut listeners = listeners.into_iter().enumerate();
        let (_, first) = listeners.next().expect("at least one thread");
        let results: Vec<io::Result<Stats>> = std::thread::scope(|scope| {
            let handles: Vec<_> = listeners
                .map(|(thread, listeners)| {
                    let run_one = &run_one;
                    std::thread::Builder::new()
                        .name(format!("ontime-serve-{thread}"))
                        .spawn_scoped(scope, move || run_one(thread, listeners))
                })
                .collect();
            let mut results = vec![run_one(0, first)];
            for handle in handles {
                match handle {
                    Ok(handle) => match handle.join() {
                        Ok(result) => results.push(result),
                        Err(panic) => std::panic::resume_unwind(panic),
                    },
                    Err(e) => {
                        shutdown.shutdown();
                        results.push(Err(e));
                    }
                }
            }
            results
        });
        let mut report = Report {
            total: Stats::default(),
            threads: Vec::with_capacity(results.len()),
        };
        for result in results {
            let stats = result?;
            report.total += &stats;
            report.threads.push(stats);
        }
        Ok(report)
    }
}

/// Shuts the server down when dropped: when a thread's run ends in an
/// error or a panic.
struct ShutdownOnDrop<'a>(&'a Shutdown);

impl Drop for ShutdownOnDrop<'_> {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

fn run_thread<S: Service>(
    config: &Config,
    shutdown: &Shutdown,
    thread: usize,
    listeners: Vec<Listener>,
    factory: &(impl Fn(usize) -> S + Sync),
    open: &Arc<AtomicUsize>,
) -> io::Result<Stats> {
    let mut reactor: Reactor<Layer<S>> = config.reactor.clone().build()?;
    let remote = reactor.remote();
    shutdown.add(Box::new(move || {
        // A reactor that is gone needs no wake-up.
        let _ = remote.wake();
    }));
    let mut layer = Layer {
        service: factory(thread),
        shared: Shared::new(config.clone(), thread, shutdown.clone(), Arc::clone(open)),
    };
    layer.start(&mut reactor, listeners)?;
    reactor.run(&mut layer)?;
    log::debug!("thread {thread}: done");
    Ok(layer.shared.stats)
}

/// What a server counted, summed and per thread; [`Server::run`] returns
/// it.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Report {
    /// The sum over every thread.
    pub total: Stats,
    /// Each thread's counters, by thread index.
    pub threads: Vec<Stats>,
}

type Waker = Box<dyn Fn() + Send + Sync>;

/// Shuts a [`Server`] down gracefully, from any thread: every thread stops
/// accepting (its listeners close), closes each connection as soon as it
/// holds no unconsumed input and no unsent output, and after
/// [`Config::drain_timeout`] closes what is left; then
/// [`Server::run`] returns.
///
/// `Send + Sync + Clone`; cheap to clone. Calling it more than once, or
/// before the server runs, is fine (a server shut down before it starts
/// returns at once).
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<ShutdownInner>,
}

struct ShutdownInner {
    started: AtomicBool,
    /// One per running reactor.
    wakers: Mutex<Vec<Waker>>,
}

impl Shutdown {
    fn new() -> Shutdown {
        Shutdown {
            inner: Arc::new(ShutdownInner {
                started: AtomicBool::new(false),
                wakers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Begins the graceful shutdown.
    pub fn shutdown(&self) {
        self.inner.started.store(true, Ordering::SeqCst);
        let wakers = self.inner.wakers.lock().unwrap_or_else(|e| e.into_inner());
        for wake in wakers.iter() {
            wake();
        }
    }

    /// Whether the shutdown has begun.
    pub fn is_started(&self) -> bool {
        self.inner.started.load(Ordering::SeqCst)
    }

    /// Adds a reactor's wake-up. A reactor registers before it starts and
    /// checks [`is_started`](Shutdown::is_started) after: under the lock,
    /// either it sees the flag or the shutdown sees its waker.
    fn add(&self, wake: Waker) {
        self.inner
            .wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(wake);
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("started", &self.is_started())
            .finish_non_exhaustive()
    }
}
