//! `TcpStream`, `TcpListener` and `create_connection`.

use std::io;
use std::net::{self, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use ontime_core::Direction;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::driver::Handle;
use crate::io::retry;
use crate::mode::{default_mode, Deadline, ModeCell};
use crate::net::stream;
use crate::net::{socket_common, stream_common, Incoming};
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
    "let listener = std::net::TcpListener::bind(\"127.0.0.1:0\")?;\nlet sock = ontime_sync::TcpStream::connect(listener.local_addr()?)?;",
    "let listener = std::net::TcpListener::bind(\"127.0.0.1:0\")?;\nlet std_sock = std::net::TcpStream::connect(listener.local_addr()?)?;"
);
stream_common! {
    TcpStream,
    addr: SocketAddr,
    pair: "let listener = ontime_sync::TcpListener::bind(\"127.0.0.1:0\")?;\nlet a = ontime_sync::TcpStream::connect(listener.local_addr()?)?;\nlet (b, _) = listener.accept()?;",
    /// The local address.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let listener = ontime_sync::TcpListener::bind("127.0.0.1:0")?;
    /// let client = ontime_sync::TcpStream::connect(listener.local_addr()?)?;
    /// let (server, _) = listener.accept()?;
    /// assert_eq!(server.local_addr()?, listener.local_addr()?);
    /// assert_eq!(client.local_addr()?, server.peer_addr()?);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The OS error unchanged.
    fn local_addr;
    /// The peer's address.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let listener = ontime_sync::TcpListener::bind("127.0.0.1:0")?;
    /// let client = ontime_sync::TcpStream::connect(listener.local_addr()?)?;
    /// assert_eq!(client.peer_addr()?, listener.local_addr()?);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// `NotConnected` (for example while a non-blocking connect is still
    /// going on), or another OS error unchanged.
    fn peer_addr;
}

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
        let conn = TcpStream::with_mode(net::TcpStream::from(socket), mode)?;
        match SockRef::from(&*conn.handle).connect(&addr.into()) {
            Ok(()) => return Ok(conn),
            // Only EINPROGRESS means "connecting in the background". A TCP
            // connect's EAGAIN is a shortage (of ports or routes), and
            // waiting for the socket to become writable would wait for a
            // connect that never started.
            Err(e) if stream::is_in_progress(&e) => {}
            Err(e) => return Err(e),
        }
        if deadline == Deadline::Now {
            return Ok(conn);
        }
        stream::finish_connect(&conn.handle, deadline)?;
        Ok(conn)
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
    "let sock = ontime_sync::TcpListener::bind(\"127.0.0.1:0\")?;",
    "let std_sock = std::net::TcpListener::bind(\"127.0.0.1:0\")?;"
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
        TcpListener::with_mode(net::TcpListener::from(socket), default_mode())
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
        Ok((TcpStream::with_mode(stream, default_mode())?, addr))
    }

    /// An endless iterator over accepted connections, each as
    /// [`accept`](TcpListener::accept) without the address (see [`Incoming`]).
    pub fn incoming(&self) -> Incoming<'_, TcpListener> {
        Incoming::new(self)
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
