//! `UdpSocket`.

use std::io;
use std::net::{self, SocketAddr, ToSocketAddrs};

use ontime_core::Direction;

use crate::driver::Handle;
use crate::io::retry;
use crate::mode::{default_mode, ModeCell};
use crate::net::socket_common;

/// A UDP socket with Python's three modes.
///
/// Every call reads the socket's [`Mode`](crate::Mode) when it starts:
/// blocking calls wait as long as it takes, non-blocking calls fail at once
/// with `WouldBlock`, and calls in timeout mode fail with `TimedOut` ("timed
/// out") when the timeout passes. Waiting happens in the shared ontime
/// reactor; the descriptor itself is always non-blocking.
///
/// Any number of threads may use one socket at once through `&UdpSocket`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ontime_sync::UdpSocket;
///
/// # fn main() -> std::io::Result<()> {
/// let a = UdpSocket::bind("127.0.0.1:0")?;
/// let b = UdpSocket::bind("127.0.0.1:0")?;
/// b.set_timeout(Some(Duration::from_secs(5)))?;
///
/// a.send_to(b"ping", b.local_addr()?)?;
/// let mut buf = [0; 16];
/// let (n, from) = b.recv_from(&mut buf)?;
/// assert_eq!(&buf[..n], b"ping");
/// assert_eq!(from, a.local_addr()?);
/// # Ok(())
/// # }
/// ```
pub struct UdpSocket {
    handle: Handle<net::UdpSocket>,
    mode: ModeCell,
}

socket_common!(
    UdpSocket,
    net::UdpSocket,
    "let sock = ontime_sync::UdpSocket::bind(\"127.0.0.1:0\")?;",
    "let std_sock = std::net::UdpSocket::bind(\"127.0.0.1:0\")?;"
);

impl UdpSocket {
    /// Binds to `addr`, trying each resolved address in turn as std does; the
    /// socket has the default timeout's mode (R7).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let sock = ontime_sync::UdpSocket::bind("127.0.0.1:0")?;
    /// assert_ne!(sock.local_addr()?.port(), 0);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The last address's OS error (for example `AddrInUse`), or
    /// `InvalidInput` if `addr` resolves to no address.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<UdpSocket> {
        UdpSocket::with_mode(net::UdpSocket::bind(addr)?, default_mode())
    }

    /// Sets the socket's default destination, and limits [`recv`](UdpSocket::recv)
    /// to datagrams from it. This completes at once for UDP, in every mode:
    /// nothing is sent.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let a = ontime_sync::UdpSocket::bind("127.0.0.1:0")?;
    /// let b = ontime_sync::UdpSocket::bind("127.0.0.1:0")?;
    /// a.connect(b.local_addr()?)?;
    /// assert_eq!(a.peer_addr()?, b.local_addr()?);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The last address's OS error, or `InvalidInput` if `addr` resolves to
    /// no address.
    pub fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        self.handle.connect(addr)
    }

    /// Receives one datagram into `buf`, as Python's `recvfrom`; returns its
    /// length and its sender. A datagram longer than `buf` is cut to fit and
    /// the rest is lost.
    ///
    /// # An empty `buf`
    ///
    /// Unlike [`recv`](UdpSocket::recv), an empty `buf` is not answered at
    /// once (rule R12 names this exception). `recv_from` must return a
    /// sender, and only a datagram carries one, so there is nothing it could
    /// return without receiving. It makes the system call as CPython's
    /// `recvfrom(0)` and std's `recv_from(&mut [])` do: it waits for a
    /// datagram as any other call does (`WouldBlock` in non-blocking mode
    /// with nothing queued, `TimedOut` in timeout mode), then consumes it,
    /// payload and all, and returns `(0, sender)`. To look at the next
    /// sender without losing the datagram, use
    /// [`peek_from`](UdpSocket::peek_from). (`recv` and `peek` return
    /// `Ok(0)` for an empty `buf` without a system call, as CPython's
    /// `recv(0)` does, and so keep the datagram queued.)
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let a = ontime_sync::UdpSocket::bind("127.0.0.1:0")?;
    /// let b = ontime_sync::UdpSocket::bind("127.0.0.1:0")?;
    /// a.send_to(b"hi", b.local_addr()?)?;
    /// let mut buf = [0; 8];
    /// assert_eq!(b.recv_from(&mut buf)?, (2, a.local_addr()?));
    ///
    /// // An empty buffer waits for a datagram and consumes it.
    /// a.send_to(b"lost", b.local_addr()?)?;
    /// assert_eq!(b.recv_from(&mut [])?, (0, a.local_addr()?));
    /// b.set_blocking(false)?;
    /// let err = b.recv_from(&mut buf).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// `WouldBlock` (non-blocking, nothing queued), `TimedOut` (timeout mode,
    /// nothing arrived in time), or the OS error unchanged (for example
    /// `ConnectionRefused` after an earlier send to a closed port).
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        retry(&self.handle, Direction::Read, self.deadline(), |sock| {
            sock.recv_from(buf)
        })
    }

    /// Receives one datagram into `buf` and its sender, without taking it
    /// from the queue.
    ///
    /// An empty `buf` is not answered at once, for the reason given at
    /// [`recv_from`](UdpSocket::recv_from): it waits for a datagram as
    /// `recv_from` does, then returns `(0, sender)` and leaves the datagram
    /// queued, which makes it the way to learn the next sender without
    /// receiving anything.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let a = ontime_sync::UdpSocket::bind("127.0.0.1:0")?;
    /// let b = ontime_sync::UdpSocket::bind("127.0.0.1:0")?;
    /// a.send_to(b"hi", b.local_addr()?)?;
    /// assert_eq!(b.peek_from(&mut [])?, (0, a.local_addr()?));
    /// let mut buf = [0; 8];
    /// assert_eq!(b.peek_from(&mut buf)?, (2, a.local_addr()?));
    /// assert_eq!(b.recv_from(&mut buf)?, (2, a.local_addr()?));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`recv_from`](UdpSocket::recv_from).
    pub fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        retry(&self.handle, Direction::Read, self.deadline(), |sock| {
            sock.peek_from(buf)
        })
    }

    /// Sends `buf` as one datagram to `addr`, as Python's `sendto`; returns
    /// how many bytes were sent.
    ///
    /// `addr` is resolved once, before any wait, and the datagram goes to the
    /// first address it resolves to (as std does).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let a = ontime_sync::UdpSocket::bind("127.0.0.1:0")?;
    /// let b = ontime_sync::UdpSocket::bind("127.0.0.1:0")?;
    /// assert_eq!(a.send_to(b"hi", b.local_addr()?)?, 2);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `addr` resolves to no address, or resolution's own
    /// error; `WouldBlock` (non-blocking, send buffer full), `TimedOut`
    /// (timeout mode), or the OS error unchanged (for example `EMSGSIZE` for
    /// a datagram too long for the protocol).
    pub fn send_to<A: ToSocketAddrs>(&self, buf: &[u8], addr: A) -> io::Result<usize> {
        let addr = addr.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no addresses to send data to")
        })?;
        retry(&self.handle, Direction::Write, self.deadline(), |sock| {
            sock.send_to(buf, addr)
        })
    }

    /// Receives one datagram from the connected peer into `buf`, as Python's
    /// `recv` on a connected socket; a datagram longer than `buf` is cut to
    /// fit and the rest is lost. An empty datagram gives `Ok(0)`.
    ///
    /// An empty `buf` returns `Ok(0)` at once in every mode (R12) without
    /// touching the socket, as CPython's `recv(0)` does: a zero-length
    /// receive would otherwise consume, and lose, a queued datagram. (Not so
    /// [`recv_from`](UdpSocket::recv_from), which must report a sender.)
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let a = ontime_sync::UdpSocket::bind("127.0.0.1:0")?;
    /// let b = ontime_sync::UdpSocket::bind("127.0.0.1:0")?;
    /// a.connect(b.local_addr()?)?;
    /// b.connect(a.local_addr()?)?;
    /// a.send(b"hi")?;
    /// let mut buf = [0; 8];
    /// assert_eq!(b.recv(&mut buf)?, 2);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`recv_from`](UdpSocket::recv_from).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        retry(&self.handle, Direction::Read, self.deadline(), |sock| {
            sock.recv(buf)
        })
    }

    /// Receives one datagram from the connected peer into `buf` without
    /// taking it from the queue. An empty `buf` returns `Ok(0)` at once (R12),
    /// without touching the socket.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let a = ontime_sync::UdpSocket::bind("127.0.0.1:0")?;
    /// let b = ontime_sync::UdpSocket::bind("127.0.0.1:0")?;
    /// b.connect(a.local_addr()?)?;
    /// a.send_to(b"hi", b.local_addr()?)?;
    /// let mut buf = [0; 8];
    /// assert_eq!(b.peek(&mut buf)?, 2);
    /// assert_eq!(b.recv(&mut buf)?, 2);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`recv_from`](UdpSocket::recv_from).
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        retry(&self.handle, Direction::Read, self.deadline(), |sock| {
            sock.peek(buf)
        })
    }

    /// Sends `buf` as one datagram to the connected peer, as Python's `send`
    /// on a connected socket; returns how many bytes were sent.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let a = ontime_sync::UdpSocket::bind("127.0.0.1:0")?;
    /// let b = ontime_sync::UdpSocket::bind("127.0.0.1:0")?;
    /// a.connect(b.local_addr()?)?;
    /// assert_eq!(a.send(b"hi")?, 2);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// `WouldBlock`, `TimedOut`, or the OS error unchanged: `EDESTADDRREQ`
    /// on Linux without a [`connect`](UdpSocket::connect), `ConnectionRefused`
    /// after an earlier datagram to a closed port.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        retry(&self.handle, Direction::Write, self.deadline(), |sock| {
            sock.send(buf)
        })
    }

    /// The local address.
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
    /// `NotConnected` before a [`connect`](UdpSocket::connect), or another OS
    /// error unchanged.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.handle.peer_addr()
    }

    /// Sets `SO_BROADCAST`: whether datagrams may go to a broadcast address.
    ///
    /// # Errors
    ///
    /// The OS error unchanged.
    pub fn set_broadcast(&self, broadcast: bool) -> io::Result<()> {
        self.handle.set_broadcast(broadcast)
    }

    /// Whether `SO_BROADCAST` is set.
    ///
    /// # Errors
    ///
    /// The OS error unchanged.
    pub fn broadcast(&self) -> io::Result<bool> {
        self.handle.broadcast()
    }

    /// Sets the IP time-to-live of outgoing datagrams.
    ///
    /// # Errors
    ///
    /// The OS error unchanged (for example `InvalidInput` for a TTL over 255).
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.handle.set_ttl(ttl)
    }

    /// The IP time-to-live of outgoing datagrams.
    ///
    /// # Errors
    ///
    /// The OS error unchanged.
    pub fn ttl(&self) -> io::Result<u32> {
        self.handle.ttl()
    }
}
