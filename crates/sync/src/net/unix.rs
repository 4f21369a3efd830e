//! `UnixStream`, `UnixListener` and `UnixDatagram`.
//!
//! Two Unix operations report "not now" without any readiness event to
//! announce "now": a connect to a listener whose accept queue is full (the
//! event that would end it belongs to the listener), and a `send_to` from an
//! unconnected datagram socket to a receiver whose queue is full. They are
//! retried with a capped exponential backoff, sleeping in the reactor (see
//! [`retry_with_backoff`]); everything else waits for readiness as TCP does.

use std::io;
use std::net::Shutdown;
use std::os::unix::net::{self, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use ontime_core::Direction;
use socket2::{Domain, SockAddr, SockRef, Socket, Type};

use crate::driver::{self, Handle};
use crate::io::retry;
use crate::mode::{default_mode, timed_out, Deadline, ModeCell};
use crate::net::stream;
use crate::net::{socket_common, stream_common, Incoming};
use crate::Mode;

/// The first pause of [`retry_with_backoff`]; each next pause doubles.
const BACKOFF_FIRST: Duration = Duration::from_millis(1);
/// The longest pause of [`retry_with_backoff`]: how late, at most, a waiting
/// connect or `send_to` notices that it can go on.
const BACKOFF_MAX: Duration = Duration::from_millis(64);

/// Runs `op` until it does not report `WouldBlock`, sleeping in the reactor
/// between tries (1 ms, doubling up to 64 ms) until `deadline`.
///
/// For the operations no readiness event announces (see the module docs).
/// Each pause is a wait with no targets, which settles only on its deadline:
/// a timer in the same reactor wheel, no helper thread (R14). The last pause
/// ends at `deadline` exactly, and one more try is made there.
///
/// # Errors
///
/// `WouldBlock` at once for `Deadline::Now`; `TimedOut` ("timed out") once
/// `deadline` passes; otherwise `op`'s error unchanged (`Interrupted` is
/// retried, R5).
fn retry_with_backoff<R>(
    deadline: Deadline,
    mut op: impl FnMut() -> io::Result<R>,
) -> io::Result<R> {
    let mut backoff = BACKOFF_FIRST;
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let now = Instant::now();
                let until = match deadline {
                    Deadline::Now => return Err(e),
                    Deadline::At(at) if now >= at => return Err(timed_out()),
                    Deadline::At(at) => at.min(now + backoff),
                    Deadline::Never => now + backoff,
                };
                driver::wait(&[], Deadline::At(until))?;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

/// A Unix stream connection with Python's three modes.
///
/// Every call reads the socket's [`Mode`] when it starts: blocking calls wait
/// as long as it takes, non-blocking calls fail at once with `WouldBlock`,
/// and calls in timeout mode fail with `TimedOut` ("timed out") when the
/// timeout passes. Waiting happens in the shared ontime reactor; the
/// descriptor itself is always non-blocking. Sends never raise `SIGPIPE`
/// where the system has `MSG_NOSIGNAL` (Linux, the BSDs; not Apple's): a
/// send to a closed peer fails with `BrokenPipe`.
///
/// Any number of threads may use one stream at once through `&UnixStream`
/// (which implements `Read` and `Write`).
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use ontime_sync::UnixStream;
///
/// # fn main() -> std::io::Result<()> {
/// let (mut a, mut b) = UnixStream::pair()?;
/// a.write_all(b"ping")?;
/// let mut buf = [0; 4];
/// b.read_exact(&mut buf)?;
/// assert_eq!(&buf, b"ping");
/// # Ok(())
/// # }
/// ```
pub struct UnixStream {
    handle: Handle<net::UnixStream>,
    mode: ModeCell,
}

socket_common!(
    UnixStream,
    net::UnixStream,
    "let (sock, _peer) = ontime_sync::UnixStream::pair()?;",
    "let (std_sock, _peer) = std::os::unix::net::UnixStream::pair()?;"
);
stream_common! {
    UnixStream,
    addr: SocketAddr,
    pair: "let (a, b) = ontime_sync::UnixStream::pair()?;",
    /// The local address: unnamed for a stream made by
    /// [`connect`](UnixStream::connect) or [`pair`](UnixStream::pair), the
    /// listener's path for an accepted one.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let (a, _b) = ontime_sync::UnixStream::pair()?;
    /// assert!(a.local_addr()?.is_unnamed());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The OS error unchanged.
    fn local_addr;
    /// The peer's address: the listener's path for a stream made by
    /// [`connect`](UnixStream::connect), the client's address for an
    /// accepted one (unnamed unless the client bound one), unnamed for a
    /// [`pair`](UnixStream::pair).
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_sync::{UnixListener, UnixStream};
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let path = std::env::temp_dir().join(format!("ontime-doc-unix-peer-{}.sock", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// let listener = UnixListener::bind(&path)?;
    /// let client = UnixStream::connect(&path)?;
    /// assert_eq!(client.peer_addr()?.as_pathname(), Some(path.as_path()));
    /// std::fs::remove_file(&path)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The OS error unchanged (for example `NotConnected`).
    fn peer_addr;
}

impl UnixStream {
    /// Connects to the listener at `path`, in the default timeout's mode: the
    /// connect itself waits as that mode says, and the new stream has that
    /// mode (R7, as `TcpStream::connect` in R9).
    ///
    /// A connect to a listener whose accept queue is full cannot complete
    /// now, and no readiness event on the connecting socket would say when it
    /// can (the room appears on the listener). In non-blocking mode it fails
    /// with `WouldBlock`; in blocking and timeout mode it is retried with a
    /// capped exponential backoff (1 ms doubling to 64 ms) sleeping in the
    /// reactor, until it connects or the timeout passes. So a waiting
    /// connect notices room in the queue up to 64 ms late.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_sync::{UnixListener, UnixStream};
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let path = std::env::temp_dir().join(format!("ontime-doc-unix-connect-{}.sock", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// let listener = UnixListener::bind(&path)?;
    /// let client = UnixStream::connect(&path)?;
    /// let (server, _) = listener.accept()?;
    /// client.send_all(b"hi")?;
    /// let mut buf = [0; 2];
    /// server.recv_exact(&mut buf)?;
    /// assert_eq!(&buf, b"hi");
    /// std::fs::remove_file(&path)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// `NotFound` (no such path), `ConnectionRefused` (nobody listens
    /// there), `WouldBlock` (non-blocking, queue full), `TimedOut` ("timed
    /// out"), `InvalidInput` (path too long), or another OS error unchanged.
    pub fn connect<P: AsRef<Path>>(path: P) -> io::Result<UnixStream> {
        UnixStream::connect_mode(path.as_ref(), default_mode())
    }

    fn connect_mode(path: &Path, mode: Mode) -> io::Result<UnixStream> {
        let deadline = mode.deadline();
        let addr = SockAddr::unix(path)?;
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        let conn = UnixStream::with_mode(net::UnixStream::from(socket), mode)?;
        let in_progress = retry_with_backoff(deadline, || {
            match SockRef::from(&*conn.handle).connect(&addr) {
                Ok(()) => Ok(false),
                Err(e) if stream::is_in_progress(&e) => Ok(true),
                Err(e) => Err(e),
            }
        })?;
        if in_progress && deadline != Deadline::Now {
            stream::finish_connect(&conn.handle, deadline)?;
        }
        Ok(conn)
    }

    /// A connected pair of streams, both in the default timeout's mode (R7).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let (a, b) = ontime_sync::UnixStream::pair()?;
    /// a.send(b"x")?;
    /// let mut buf = [0; 1];
    /// assert_eq!(b.recv(&mut buf)?, 1);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The OS error unchanged (for example `EMFILE`).
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = net::UnixStream::pair()?;
        let mode = default_mode();
        Ok((
            UnixStream::with_mode(a, mode)?,
            UnixStream::with_mode(b, mode)?,
        ))
    }
}

/// A Unix listening socket with Python's three modes.
///
/// Dropping the listener does not remove its path from the file system (as
/// with std): remove it yourself.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ontime_sync::UnixListener;
///
/// # fn main() -> std::io::Result<()> {
/// let path = std::env::temp_dir().join(format!("ontime-doc-unix-listener-{}.sock", std::process::id()));
/// # let _ = std::fs::remove_file(&path);
/// let listener = UnixListener::bind(&path)?;
/// listener.set_timeout(Some(Duration::from_millis(20)))?;
/// let err = listener.accept().unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
/// std::fs::remove_file(&path)?;
/// # Ok(())
/// # }
/// ```
pub struct UnixListener {
    handle: Handle<net::UnixListener>,
    mode: ModeCell,
}

socket_common!(
    UnixListener,
    net::UnixListener,
    "let path = std::env::temp_dir().join(format!(\"ontime-doc-unix-modes-{}.sock\", std::process::id()));\n# let _ = std::fs::remove_file(&path);\nlet sock = ontime_sync::UnixListener::bind(&path)?;\n# std::fs::remove_file(&path)?;",
    "let path = std::env::temp_dir().join(format!(\"ontime-doc-unix-from-std-{}.sock\", std::process::id()));\n# let _ = std::fs::remove_file(&path);\nlet std_sock = std::os::unix::net::UnixListener::bind(&path)?;\n# std::fs::remove_file(&path)?;"
);

impl UnixListener {
    /// Binds to `path` and listens; the listener has the default timeout's
    /// mode (R7).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let path = std::env::temp_dir().join(format!("ontime-doc-unix-bind-{}.sock", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// let listener = ontime_sync::UnixListener::bind(&path)?;
    /// assert_eq!(listener.local_addr()?.as_pathname(), Some(path.as_path()));
    /// std::fs::remove_file(&path)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// `AddrInUse` if `path` exists, `InvalidInput` if it is too long, or
    /// another OS error unchanged.
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixListener> {
        UnixListener::with_mode(net::UnixListener::bind(path)?, default_mode())
    }

    /// Accepts a connection, as Python's `accept`. The new stream's mode is
    /// the default timeout's mode, whatever the listener's (R8).
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_sync::{UnixListener, UnixStream};
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let path = std::env::temp_dir().join(format!("ontime-doc-unix-accept-{}.sock", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// let listener = UnixListener::bind(&path)?;
    /// let _client = UnixStream::connect(&path)?;
    /// let (server, _addr) = listener.accept()?;
    /// assert!(server.is_blocking());
    /// std::fs::remove_file(&path)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// `WouldBlock` (non-blocking, none pending), `TimedOut` (timeout mode),
    /// or the OS error unchanged (for example `EMFILE`).
    pub fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let (stream, addr) = retry(&self.handle, Direction::Read, self.deadline(), |sock| {
            sock.accept()
        })?;
        Ok((UnixStream::with_mode(stream, default_mode())?, addr))
    }

    /// An endless iterator over accepted connections, each as
    /// [`accept`](UnixListener::accept) without the address (see
    /// [`Incoming`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_sync::{Incoming, UnixListener, UnixStream};
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let path = std::env::temp_dir().join(format!("ontime-doc-unix-incoming-{}.sock", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// let listener = UnixListener::bind(&path)?;
    /// let _client = UnixStream::connect(&path)?;
    /// let mut incoming: Incoming<'_, UnixListener> = listener.incoming();
    /// let server = incoming.next().expect("never ends")?;
    /// assert!(server.is_blocking());
    /// std::fs::remove_file(&path)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn incoming(&self) -> Incoming<'_, UnixListener> {
        Incoming::new(self)
    }

    /// The local address: the path bound to.
    ///
    /// # Errors
    ///
    /// The OS error unchanged.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.handle.local_addr()
    }
}

/// A Unix datagram socket with Python's three modes.
///
/// Sends never raise `SIGPIPE` where the system has `MSG_NOSIGNAL` (Linux,
/// the BSDs; not Apple's).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ontime_sync::UnixDatagram;
///
/// # fn main() -> std::io::Result<()> {
/// let (a, b) = UnixDatagram::pair()?;
/// b.set_timeout(Some(Duration::from_millis(20)))?;
/// let mut buf = [0; 8];
/// assert_eq!(b.recv(&mut buf).unwrap_err().kind(), std::io::ErrorKind::TimedOut);
/// a.send(b"hi")?;
/// assert_eq!(b.recv(&mut buf)?, 2);
/// # Ok(())
/// # }
/// ```
pub struct UnixDatagram {
    handle: Handle<net::UnixDatagram>,
    mode: ModeCell,
}

socket_common!(
    UnixDatagram,
    net::UnixDatagram,
    "let sock = ontime_sync::UnixDatagram::unbound()?;",
    "let std_sock = std::os::unix::net::UnixDatagram::unbound()?;"
);

impl UnixDatagram {
    /// A datagram socket bound to `path`, in the default timeout's mode (R7).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let path = std::env::temp_dir().join(format!("ontime-doc-unix-dgram-{}.sock", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// let sock = ontime_sync::UnixDatagram::bind(&path)?;
    /// assert_eq!(sock.local_addr()?.as_pathname(), Some(path.as_path()));
    /// std::fs::remove_file(&path)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// `AddrInUse` if `path` exists, `InvalidInput` if it is too long, or
    /// another OS error unchanged.
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixDatagram> {
        UnixDatagram::with_mode(net::UnixDatagram::bind(path)?, default_mode())
    }

    /// A datagram socket bound to no address, in the default timeout's mode
    /// (R7).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let sock = ontime_sync::UnixDatagram::unbound()?;
    /// assert!(sock.local_addr()?.is_unnamed());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The OS error unchanged.
    pub fn unbound() -> io::Result<UnixDatagram> {
        UnixDatagram::with_mode(net::UnixDatagram::unbound()?, default_mode())
    }

    /// A pair of datagram sockets connected to each other, both in the
    /// default timeout's mode (R7).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let (a, b) = ontime_sync::UnixDatagram::pair()?;
    /// a.send(b"hi")?;
    /// let mut buf = [0; 8];
    /// assert_eq!(b.recv(&mut buf)?, 2);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The OS error unchanged.
    pub fn pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
        let (a, b) = net::UnixDatagram::pair()?;
        let mode = default_mode();
        Ok((
            UnixDatagram::with_mode(a, mode)?,
            UnixDatagram::with_mode(b, mode)?,
        ))
    }

    /// Runs the receive `op` through [`retry`]. Once the socket is shut down
    /// for reading, a call that may wait and finds nothing queued returns
    /// `shut()` (what a blocking receive in the kernel returns) instead of
    /// waiting for a datagram that cannot come; a non-blocking call gets the
    /// OS's `WouldBlock` unchanged.
    fn receive<R>(
        &self,
        shut: impl Fn() -> io::Result<R>,
        mut op: impl FnMut(&net::UnixDatagram) -> io::Result<R>,
    ) -> io::Result<R> {
        let deadline = self.deadline();
        retry(&self.handle, Direction::Read, deadline, |sock| {
            match op(sock) {
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        && deadline != Deadline::Now
                        && self.handle.is_read_shut() =>
                {
                    shut()
                }
                result => result,
            }
        })
    }

    /// Sets the default destination to the socket bound at `path`, and
    /// limits receiving to datagrams from it. Completes at once in every
    /// mode.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let path = std::env::temp_dir().join(format!("ontime-doc-unix-dgram-connect-{}.sock", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// let server = ontime_sync::UnixDatagram::bind(&path)?;
    /// let client = ontime_sync::UnixDatagram::unbound()?;
    /// client.connect(&path)?;
    /// client.send(b"hi")?;
    /// let mut buf = [0; 8];
    /// assert_eq!(server.recv(&mut buf)?, 2);
    /// std::fs::remove_file(&path)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// `NotFound` (no such path), `ConnectionRefused` (no socket bound
    /// there), or another OS error unchanged.
    pub fn connect<P: AsRef<Path>>(&self, path: P) -> io::Result<()> {
        self.handle.connect(path)
    }

    /// Sends `buf` as one datagram to the socket bound at `path`; returns
    /// how many bytes were sent.
    ///
    /// A receiver whose queue is full makes the send wait, but no readiness
    /// event on this socket says when it drains (unless this socket is
    /// connected to it; then prefer [`send`](UnixDatagram::send)). So in
    /// blocking and timeout mode the send is retried with a capped
    /// exponential backoff (1 ms doubling to 64 ms) sleeping in the reactor,
    /// as [`UnixStream::connect`] is.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let path = std::env::temp_dir().join(format!("ontime-doc-unix-send-to-{}.sock", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// let server = ontime_sync::UnixDatagram::bind(&path)?;
    /// let client = ontime_sync::UnixDatagram::unbound()?;
    /// assert_eq!(client.send_to(b"hi", &path)?, 2);
    /// let mut buf = [0; 8];
    /// assert_eq!(server.recv_from(&mut buf)?.0, 2);
    /// std::fs::remove_file(&path)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// `NotFound`, `ConnectionRefused`, `WouldBlock` (non-blocking, queue
    /// full), `TimedOut`, `InvalidInput` (path too long), or another OS error
    /// unchanged.
    pub fn send_to<P: AsRef<Path>>(&self, buf: &[u8], path: P) -> io::Result<usize> {
        let addr = SockAddr::unix(path)?;
        let deadline = self.deadline();
        retry_with_backoff(deadline, || {
            stream::send_to_no_signal(&*self.handle, buf, &addr)
        })
    }

    /// Receives one datagram into `buf`, and its sender's address (unnamed
    /// if the sender is not bound). A datagram longer than `buf` is cut to
    /// fit and the rest is lost.
    ///
    /// # An empty `buf`
    ///
    /// Unlike [`recv`](UnixDatagram::recv), an empty `buf` is not answered
    /// at once (rule R12 names this exception), as with
    /// [`UdpSocket::recv_from`](crate::UdpSocket::recv_from): a sender is
    /// only known from a datagram, so the call makes the system call as
    /// CPython's `recvfrom(0)` and std's `recv_from(&mut [])` do. It waits
    /// for a datagram as any other call does (`WouldBlock` in non-blocking
    /// mode with nothing queued, `TimedOut` in timeout mode), then consumes
    /// it, payload and all, and returns `(0, sender)`.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let (a, b) = ontime_sync::UnixDatagram::pair()?;
    /// a.send(b"hi")?;
    /// let mut buf = [0; 8];
    /// let (n, _from) = b.recv_from(&mut buf)?;
    /// assert_eq!(n, 2);
    ///
    /// // An empty buffer waits for a datagram and consumes it.
    /// a.send(b"lost")?;
    /// assert_eq!(b.recv_from(&mut [])?.0, 0);
    /// b.set_blocking(false)?;
    /// let err = b.recv_from(&mut buf).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// `WouldBlock` (non-blocking, nothing queued), `TimedOut` (timeout
    /// mode), or the OS error unchanged. After a local `shutdown(Read)` with
    /// nothing queued, a blocking or timeout-mode call returns `(0, unnamed)`
    /// at once, as a blocking receive in the kernel does (and not a
    /// `TimedOut` after waiting for a datagram that cannot come).
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        // The unnamed address, as the kernel reports no sender.
        let shut = || Ok((0, SocketAddr::from_pathname("")?));
        self.receive(shut, |sock| sock.recv_from(buf))
    }

    /// Receives one datagram into `buf`. An empty `buf` returns `Ok(0)` at
    /// once in every mode (R12), without touching the socket, as CPython's
    /// `recv(0)` does: a zero-length receive would otherwise consume, and
    /// lose, a queued datagram. (Not so
    /// [`recv_from`](UnixDatagram::recv_from), which must report a sender.)
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let (a, b) = ontime_sync::UnixDatagram::pair()?;
    /// a.send(b"hi")?;
    /// assert_eq!(b.recv(&mut [])?, 0);
    /// let mut buf = [0; 8];
    /// assert_eq!(b.recv(&mut buf)?, 2);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`recv_from`](UnixDatagram::recv_from).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.receive(|| Ok(0), |sock| sock.recv(buf))
    }

    /// Receives one datagram into `buf` without taking it from the queue
    /// (`recv` with `MSG_PEEK`). An empty `buf` returns `Ok(0)` at once (R12),
    /// without touching the socket.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let (a, b) = ontime_sync::UnixDatagram::pair()?;
    /// a.send(b"hi")?;
    /// let mut buf = [0; 8];
    /// assert_eq!(b.peek(&mut buf)?, 2);
    /// assert_eq!(b.recv(&mut buf)?, 2);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`recv_from`](UnixDatagram::recv_from).
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.receive(|| Ok(0), |sock| stream::peek_once(sock, buf))
    }

    /// Sends `buf` as one datagram to the connected peer; returns how many
    /// bytes were sent. A peer whose queue is full makes it wait for
    /// readiness, which the OS announces for a connected socket.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let (a, _b) = ontime_sync::UnixDatagram::pair()?;
    /// assert_eq!(a.send(b"hi")?, 2);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// `WouldBlock`, `TimedOut`, or the OS error unchanged: `NotConnected`
    /// without a [`connect`](UnixDatagram::connect), `ConnectionRefused`
    /// once the peer is gone, `BrokenPipe` after a local `shutdown(Write)`.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        retry(&self.handle, Direction::Write, self.deadline(), |sock| {
            stream::send_no_signal(sock, buf)
        })
    }

    /// Shuts down receiving, sending, or both. Calls blocked on this socket
    /// in other threads wake up and see the result (R13): a receive with
    /// nothing queued returns 0 (in blocking and timeout mode; see
    /// [`recv_from`](UnixDatagram::recv_from)), a send fails with
    /// `BrokenPipe`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::Shutdown;
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let (a, _b) = ontime_sync::UnixDatagram::pair()?;
    /// a.shutdown(Shutdown::Read)?;
    /// assert_eq!(a.recv(&mut [0; 8])?, 0);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The OS error unchanged.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.handle.shutdown_and_wake(how)
    }

    /// The local address (unnamed if not bound).
    ///
    /// # Errors
    ///
    /// The OS error unchanged.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.handle.local_addr()
    }

    /// The connected peer's address.
    ///
    /// # Errors
    ///
    /// `NotConnected` before a [`connect`](UnixDatagram::connect), or
    /// another OS error unchanged.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.handle.peer_addr()
    }
}
