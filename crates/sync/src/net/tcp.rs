//! `TcpStream`, `TcpListener` and `create_connection`.

use std::io;
use std::net::{self, Shutdown, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use ontime_core::Direction;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::driver::Handle;
use crate::io::retry;
use crate::mode::{default_mode, Deadline, ModeCell};
use crate::net::stream;
use crate::net::{socket_common, stream_read_write};
use crate::Mode;

/// A TCP connection with Python's three modes.
///
/// Every call reads the socket's [`Mode`] when it starts: blocking calls wait
/// as long as it takes, non-blocking calls fail at once with `WouldBlock`,
/// and calls in timeout mode fail with `TimedOut` ("timed out") when the
/// timeout passes. Waiting happens in the shared ontime reactor; the
/// descriptor itself is always non-blocking.
///
/// Any number of threads may use one stream at once through `&TcpStream`
/// (which implements `Read` and `Write`).
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use std::time::Duration;
/// use ontime_sync::{create_connection, TcpListener};
///
/// # fn main() -> std::io::Result<()> {
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let mut client = create_connection(listener.local_addr()?, Some(Duration::from_secs(5)))?;
/// let (mut server, _) = listener.accept()?;
/// client.write_all(b"ping")?;
/// let mut buf = [0; 4];
/// server.read_exact(&mut buf)?;
/// assert_eq!(&buf, b"ping");
/// # Ok(())
/// # }
/// ```
pub struct TcpStream {
    handle: Handle<net::TcpStream>,
    mode: ModeCell,
}

socket_common!(
    TcpStream,
    net::TcpStream,
    "let listener = std::net::TcpListener::bind(\"127.0.0.1:0\")?;\nlet sock = ontime_sync::TcpStream::connect(listener.local_addr()?)?;"
);
stream_read_write!(TcpStream);

/// Connects to `addr` as Python's `socket.create_connection` (rule R9).
///
/// Each address `addr` resolves to is tried in order, with `timeout` for each
/// attempt; the first that connects is returned, in the mode `timeout`
/// gives (see [`Mode::from_timeout`]). If none connects, the last error is
/// returned.
///
/// In timeout mode a refused connection fails at once with
/// `ConnectionRefused`, not `TimedOut`, and an attempt that times out closes
/// its socket, leaving nothing half-open (R10). With a zero timeout
/// (non-blocking) the connection is only started: the first address whose
/// connect does not fail at once is returned, possibly still connecting;
/// wait for it with [`select`](crate::select) for writing.
///
/// # Errors
///
/// The last attempt's error: `TimedOut` ("timed out"), `ConnectionRefused`
/// and other OS errors unchanged, or `InvalidInput` if `addr` resolves to no
/// address.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// # fn main() -> std::io::Result<()> {
/// let listener = ontime_sync::TcpListener::bind("127.0.0.1:0")?;
/// let stream = ontime_sync::create_connection(listener.local_addr()?, Some(Duration::from_secs(1)))?;
/// assert_eq!(stream.timeout(), Some(Duration::from_secs(1)));
/// # Ok(())
/// # }
/// ```
pub fn create_connection<A: ToSocketAddrs>(
    addr: A,
    timeout: Option<Duration>,
) -> io::Result<TcpStream> {
    let mode = Mode::from_timeout(timeout);
    let mut last = None;
    for addr in addr.to_socket_addrs()? {
        match TcpStream::connect_one(addr, mode) {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                log::debug!("connect to {addr} failed: {e}");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any addresses",
        )
    }))
}

impl TcpStream {
    /// Connects with the default timeout: `create_connection(addr,
    /// default_timeout())`.
    ///
    /// # Errors
    ///
    /// As [`create_connection`].
    pub fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        create_connection(addr, default_mode().timeout())
    }

    fn connect_one(addr: SocketAddr, mode: Mode) -> io::Result<TcpStream> {
        let deadline = mode.deadline();
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        let conn = TcpStream::from_std(net::TcpStream::from(socket), mode)?;
        match SockRef::from(&*conn.handle).connect(&addr.into()) {
            Ok(()) => return Ok(conn),
            // Only EINPROGRESS means "connecting in the background". A TCP
            // connect's EAGAIN is a shortage (of ports or routes), and
            // waiting for the socket to become writable would wait for a
            // connect that never started.
            Err(e) if e.raw_os_error() == Some(stream::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        if deadline == Deadline::Now {
            return Ok(conn);
        }
        stream::finish_connect(&conn.handle, deadline)?;
        Ok(conn)
    }

    /// Receives into `buf`, as Python's `recv`. Returns 0 at end of file, and
    /// at once for an empty `buf` in every mode (R12). In timeout mode,
    /// whatever data has arrived is returned at once, however little.
    ///
    /// # Errors
    ///
    /// `WouldBlock` (non-blocking, nothing to read), `TimedOut` (timeout
    /// mode, nothing arrived in time), or the OS error unchanged.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        stream::recv(&self.handle, self.deadline(), buf)
    }

    /// Receives into `buf` without taking the data from the queue.
    ///
    /// # Errors
    ///
    /// As [`recv`](TcpStream::recv).
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        retry(&self.handle, Direction::Read, self.deadline(), |sock| {
            sock.peek(buf)
        })
    }

    /// Fills `buf` entirely, within ONE deadline for the whole call (R3).
    ///
    /// # Errors
    ///
    /// `UnexpectedEof` if the peer closes first; otherwise as
    /// [`recv`](TcpStream::recv). On error, the bytes already received are
    /// in `buf` but their count is lost, as with std's `read_exact`.
    pub fn recv_exact(&self, buf: &mut [u8]) -> io::Result<()> {
        stream::recv_exact(&self.handle, self.deadline(), buf)
    }

    /// Sends some of `buf`, as Python's `send`; returns how much was sent.
    ///
    /// # Errors
    ///
    /// `WouldBlock`, `TimedOut`, or the OS error unchanged (`BrokenPipe`
    /// after a local `shutdown(Write)`; the process never gets `SIGPIPE`).
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        stream::send(&self.handle, self.deadline(), buf)
    }

    /// Sends all of `buf`, within ONE deadline for the whole call, as
    /// Python's `sendall` (R3).
    ///
    /// # Errors
    ///
    /// As [`send`](TcpStream::send); after an error, how much was sent is
    /// unknown (as in Python).
    pub fn send_all(&self, buf: &[u8]) -> io::Result<()> {
        stream::send_all(&self.handle, self.deadline(), buf)
    }

    /// Shuts down the read side, the write side, or both. Calls blocked on
    /// this socket in other threads wake up and see the result (R13).
    ///
    /// # Errors
    ///
    /// The OS error unchanged (for example `NotConnected`).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.handle.shutdown_and_wake(how)
    }

    /// The local address.
    ///
    /// # Errors
    ///
    /// The OS error unchanged.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.handle.local_addr()
    }

    /// The peer's address.
    ///
    /// # Errors
    ///
    /// `NotConnected`, or another OS error unchanged.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.handle.peer_addr()
    }

    /// Sets `TCP_NODELAY`.
    ///
    /// # Errors
    ///
    /// The OS error unchanged.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.handle.set_nodelay(nodelay)
    }

    /// Whether `TCP_NODELAY` is set.
    ///
    /// # Errors
    ///
    /// The OS error unchanged.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.handle.nodelay()
    }

    /// Sets the IP time-to-live.
    ///
    /// # Errors
    ///
    /// The OS error unchanged.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.handle.set_ttl(ttl)
    }
}

/// A TCP listening socket with Python's three modes.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ontime_sync::TcpListener;
///
/// # fn main() -> std::io::Result<()> {
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// listener.set_timeout(Some(Duration::from_millis(20)))?;
/// let err = listener.accept().unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
/// # Ok(())
/// # }
/// ```
pub struct TcpListener {
    handle: Handle<net::TcpListener>,
    mode: ModeCell,
}

socket_common!(
    TcpListener,
    net::TcpListener,
    "let sock = ontime_sync::TcpListener::bind(\"127.0.0.1:0\")?;"
);

impl TcpListener {
    /// Binds to `addr` (trying each resolved address in turn) and listens,
    /// with `SO_REUSEADDR` as std does; the listener has the default
    /// timeout's mode (R7).
    ///
    /// # Errors
    ///
    /// The last address's OS error (for example `AddrInUse`), or
    /// `InvalidInput` if `addr` resolves to no address.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        let mut last = None;
        for addr in addr.to_socket_addrs()? {
            match TcpListener::bind_one(addr) {
                Ok(listener) => return Ok(listener),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "could not resolve to any addresses",
            )
        }))
    }

    fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        TcpListener::from_std(net::TcpListener::from(socket), default_mode())
    }

    /// Accepts a connection, as Python's `accept`. The new stream's mode is
    /// the default timeout's mode, whatever the listener's (R8).
    ///
    /// # Errors
    ///
    /// `WouldBlock` (non-blocking, none pending), `TimedOut` (timeout mode),
    /// or the OS error unchanged (for example `EMFILE`).
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, addr) = retry(&self.handle, Direction::Read, self.deadline(), |sock| {
            sock.accept()
        })?;
        Ok((TcpStream::from_std(stream, default_mode())?, addr))
    }

    /// An iterator over accepted connections, each as [`accept`](TcpListener::accept).
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The local address.
    ///
    /// # Errors
    ///
    /// The OS error unchanged.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.handle.local_addr()
    }
}

/// The iterator of [`TcpListener::incoming`]. It never ends: each item is
/// one accept's result.
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;
    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        Some(self.listener.accept().map(|(stream, _)| stream))
    }
}
