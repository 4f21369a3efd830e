//! Python's three socket modes (blocking, non-blocking and timeout) for
//! Rust programs, on the ontime reactor.
//!
//! Every socket here has a [`Mode`]:
//!
//! | mode | set with | a call that cannot finish now |
//! |---|---|---|
//! | blocking | `set_timeout(None)`, `set_blocking(true)` | waits as long as it takes |
//! | non-blocking | `set_timeout(Some(Duration::ZERO))`, `set_blocking(false)` | fails at once with `WouldBlock` |
//! | timeout | `set_timeout(Some(d))` | waits at most `d`, then fails with `TimedOut` ("timed out") |
//!
//! New sockets start in the mode of the process-wide default timeout
//! ([`set_default_timeout`], initially `None`: blocking), as in Python.
//! `send_all`/`write_all` and `recv_exact`/`read_exact` keep ONE deadline for
//! the whole call.
//!
//! # Examples
//!
//! ```
//! use std::io::{Read, Write};
//! use std::time::Duration;
//! use ontime_sync::{create_connection, TcpListener};
//!
//! # fn main() -> std::io::Result<()> {
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let client = create_connection(listener.local_addr()?, Some(Duration::from_millis(200)))?;
//! let (server, _) = listener.accept()?;
//!
//! // Nothing was sent: timeout mode gives up after 200 ms.
//! let mut buf = [0; 16];
//! let err = (&client).read(&mut buf).unwrap_err();
//! assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
//!
//! // The socket is still usable.
//! (&server).write_all(b"hello")?;
//! let n = (&client).read(&mut buf)?;
//! assert_eq!(&buf[..n], b"hello");
//! # Ok(())
//! # }
//! ```
//!
//! # The contract
//!
//! This is the behaviour the crate promises, and what its tests check. It
//! follows the "Notes on socket timeouts" of Python's `socket` module
//! (blocking, non-blocking and timeout modes) and CPython's implementation
//! of them, adapted to Rust's conventions. Where Python leaves a behaviour to
//! the operating system, the contract fixes it. The rules are numbered R1 to
//! R14; the tests and the items' own docs cite them by number.
//!
//! ## Public surface
//!
//! The names are part of the contract. The root crate re-exports this one as
//! `ontime::sync`.
//!
//! | Python | ontime-sync |
//! |---|---|
//! | `socket.setdefaulttimeout(t)` / `getdefaulttimeout()` | [`set_default_timeout`]`(Option<Duration>)` / [`default_timeout`]`() -> Option<Duration>` |
//! | `socket.create_connection(addr, timeout)` | [`create_connection`]`(addr: impl ToSocketAddrs, timeout: Option<Duration>) -> io::Result<TcpStream>` |
//! | `sock.settimeout(t)` / `gettimeout()` | [`set_timeout`](TcpStream::set_timeout)`(&self, Option<Duration>) -> io::Result<()>` / [`timeout`](TcpStream::timeout)`(&self) -> Option<Duration>` |
//! | `sock.setblocking(b)` / `getblocking()` | [`set_blocking`](TcpStream::set_blocking)`(&self, bool) -> io::Result<()>` / [`is_blocking`](TcpStream::is_blocking)`(&self) -> bool` |
//! | (the three modes) | [`Mode`]` { Blocking, NonBlocking, Timeout(Duration) }`, [`mode`](TcpStream::mode)`(&self) -> Mode`, [`set_mode`](TcpStream::set_mode)`(&self, Mode) -> io::Result<()>` |
//! | `recv`, `send`, `sendall` | [`recv`](TcpStream::recv), [`send`](TcpStream::send), [`send_all`](TcpStream::send_all), and [`recv_exact`](TcpStream::recv_exact); plus `std::io::Read`/`Write` for `T` and `&T` (stream types) |
//! | `accept()` | [`TcpListener::accept`]`(&self) -> io::Result<(TcpStream, SocketAddr)>`, [`UnixListener::accept`] |
//! | `recvfrom`, `sendto` | [`UdpSocket::recv_from`], [`UdpSocket::send_to`], and [`connect`](UdpSocket::connect)/[`recv`](UdpSocket::recv)/[`send`](UdpSocket::send); the same on [`UnixDatagram`] |
//! | `shutdown(how)` | [`shutdown`](TcpStream::shutdown)`(&self, std::net::Shutdown)` on [`TcpStream`], [`UnixStream`] and [`UnixDatagram`] |
//! | `dup()` | [`try_clone`](TcpStream::try_clone)`(&self)` |
//! | `select.select` on sockets | [`select`](fn@select)`(read, write, timeout) -> io::Result<Selected>` over any of this crate's sockets ([`Selectable`]), waiting in the same reactor |
//!
//! The types are [`TcpStream`] ([`connect`](TcpStream::connect)),
//! [`TcpListener`] ([`bind`](TcpListener::bind)), [`UdpSocket`]
//! ([`bind`](UdpSocket::bind)) and, on Unix, [`UnixStream`]
//! ([`connect`](UnixStream::connect), [`pair`](UnixStream::pair)),
//! [`UnixListener`] ([`bind`](UnixListener::bind)) and [`UnixDatagram`]
//! ([`bind`](UnixDatagram::bind), [`unbound`](UnixDatagram::unbound),
//! [`pair`](UnixDatagram::pair)). All of them carry the mode methods above,
//! [`try_clone`](TcpStream::try_clone),
//! [`take_error`](TcpStream::take_error), `AsRawFd`/`AsFd` and a `From`
//! conversion from the std type they wrap. The usual std accessors exist
//! where std has them: `local_addr`, `peer_addr`,
//! [`set_nodelay`](TcpStream::set_nodelay), `peek` (and
//! [`UdpSocket::peek_from`]), and a few socket options.
//!
//! ## Rules
//!
//! - **R1 Modes.** [`set_timeout(None)`](TcpStream::set_timeout) is blocking
//!   mode, `set_timeout(Some(Duration::ZERO))` non-blocking mode, and
//!   `set_timeout(Some(d))` with `d > 0` timeout mode, however small `d` is
//!   (1 ns is timeout mode, and times out at once with `TimedOut`).
//!   [`set_blocking(true)`](TcpStream::set_blocking) is `set_timeout(None)`
//!   and `set_blocking(false)` is `set_timeout(Some(Duration::ZERO))`;
//!   [`set_mode`](TcpStream::set_mode) with `Mode::Timeout(Duration::ZERO)`
//!   stores [`Mode::NonBlocking`] too. [`is_blocking`](TcpStream::is_blocking)
//!   is false only in non-blocking mode: timeout mode counts as blocking, as
//!   in Python's `getblocking`. Unlike std's `set_read_timeout`, a zero
//!   timeout is not an error: it is Python's non-blocking mode. The setters
//!   never fail today; their `Result` mirrors Python and std.
//!
//!   A timeout too long to represent is not rejected and never panics: a
//!   timeout above `u64::MAX - 1` nanoseconds (about 584 years), such as
//!   `Duration::MAX`, is stored as that many nanoseconds, so
//!   [`timeout`](TcpStream::timeout) and [`mode`](TcpStream::mode) report
//!   about 584 years rather than the value set, and the calls wait as if
//!   blocking. The same holds for [`set_default_timeout`].
//! - **R2 Errors.** In non-blocking mode "not now" is the OS's own `EAGAIN`,
//!   [`ErrorKind::WouldBlock`](std::io::ErrorKind::WouldBlock), returned
//!   unchanged. In timeout mode the expiry of the deadline is an error of kind
//!   [`ErrorKind::TimedOut`](std::io::ErrorKind::TimedOut) with no OS error
//!   code (`raw_os_error()` is `None`) and the message "timed out", never
//!   `WouldBlock`. OS errors pass through unchanged in every mode
//!   (`ConnectionRefused`, `ConnectionReset`, `BrokenPipe`, `NotConnected`,
//!   and end of file as `Ok(0)`); none is turned into `TimedOut` or
//!   `WouldBlock`. A wait itself fails only with an error of the reactor
//!   (creating it, polling, registering the socket), passed on as it is. Two
//!   documented cases differ: a non-blocking TCP connect returns a stream that
//!   is still connecting rather than an error (R9), and a [`UnixDatagram`]
//!   shut down for reading answers a blocking or timeout-mode receive with 0,
//!   as a blocking receive in the kernel does, where the OS reports `EAGAIN`
//!   to a non-blocking one (R13).
//! - **R3 One deadline per call.** A call in timeout mode computes its
//!   deadline once, when it starts, from the mode it reads then (R4). Retries
//!   after interrupted system calls and waits (`EINTR`, signals), spurious
//!   readiness, readiness taken by another thread, or partial progress use
//!   what remains of that same deadline. [`send_all`](TcpStream::send_all)
//!   (and `write_all`) and [`recv_exact`](TcpStream::recv_exact) (and
//!   `read_exact`) have ONE deadline for the whole call, as Python's `sendall`
//!   since 3.5, not one per chunk; when it passes part-way, how much was sent
//!   or received is lost to the caller. Name resolution is not part of the
//!   call's time: [`UdpSocket::send_to`] resolves its address before its
//!   deadline starts (as CPython's `sendto` does), and [`create_connection`]
//!   gives each address its own deadline (R9).
//! - **R4 Mode is read at call entry.** Changing a socket's mode, from any
//!   thread, affects the calls that start afterwards only, never a call
//!   already waiting: a blocked call stays blocked, and a call in timeout
//!   mode keeps its deadline.
//! - **R5 Signals.** A signal that interrupts a wait neither surfaces as
//!   [`ErrorKind::Interrupted`](std::io::ErrorKind::Interrupted) nor extends
//!   the deadline: an `Interrupted` system call is tried again, an interrupted
//!   poll of the reactor counts as a turn with no events, and a parked thread
//!   parks again until its deadline, which is a fixed instant. This holds
//!   for signal handlers installed without `SA_RESTART` too.
//! - **R6 No busy waiting.** A call that waits sleeps in the reactor: the
//!   thread that drives it blocks in the poll until an event or the next
//!   timer, the others park until they are woken or their deadline passes. A
//!   thread blocked for a second uses next to no CPU (the tests allow
//!   100 ms). The two Unix operations that retry with a backoff (R14) wake at
//!   most every 64 ms.
//! - **R7 Default timeout.** [`set_default_timeout`] and [`default_timeout`]
//!   are process-wide; the default is initially `None` (blocking). It is
//!   applied when a socket is created: by [`TcpStream::connect`],
//!   [`TcpListener::bind`], [`UdpSocket::bind`], [`UnixStream::connect`] and
//!   [`UnixStream::pair`], [`UnixListener::bind`], [`UnixDatagram::bind`],
//!   [`UnixDatagram::unbound`] and [`UnixDatagram::pair`], the `From`
//!   conversions from std's types, and to every accepted stream (R8).
//!   Sockets made earlier keep their mode, and a
//!   [`try_clone`](TcpStream::try_clone) copies its original's mode, not the
//!   default (R11). A default of zero makes new sockets non-blocking.
//! - **R8 Accept inheritance.** The stream [`TcpListener::accept`] or
//!   [`UnixListener::accept`] returns is in the default timeout's mode,
//!   whatever the listener's mode: with no default it is blocking, even when
//!   the listener is non-blocking or in timeout mode. (Python leaves the
//!   non-blocking-listener case to the OS; this contract fixes it.)
//! - **R9 create_connection.** [`create_connection`] resolves `addr`, then
//!   tries each address in order with `timeout` for each attempt (a deadline
//!   per attempt), and returns the first stream that connects, in the mode
//!   `timeout` gives; if none connects, it returns the last attempt's error
//!   (`InvalidInput` if `addr` resolves to no address).
//!   [`TcpStream::connect(addr)`](TcpStream::connect) is
//!   `create_connection(addr, default_timeout())`, and
//!   [`UnixStream::connect`] likewise connects in the default timeout's mode.
//!   With a zero timeout (non-blocking) a TCP connect is only started: the
//!   first address whose connect does not fail at once is returned, possibly
//!   still connecting; wait for it to become writable with [`select()`] and
//!   check [`take_error`](TcpStream::take_error). (Python's
//!   `create_connection` fails with `BlockingIOError` there instead.)
//! - **R10 Connect.** A refused connect fails with `ConnectionRefused` as
//!   soon as the OS reports it, in blocking and in timeout mode, never with
//!   `TimedOut`. A connect that times out leaves nothing half-open behind it:
//!   its socket is deregistered and closed at once, or by the thread driving
//!   the reactor when another thread does, so no `SYN_SENT` socket outlives
//!   it (the tests allow 250 ms for the close). A [`UnixStream::connect`] to
//!   a listener whose accept queue is full fails with `WouldBlock` in
//!   non-blocking mode; in blocking and timeout mode it is retried with a
//!   backoff (R14) until it connects or the timeout passes, so it notices
//!   room in the queue up to 64 ms late.
//! - **R11 Clones.** [`try_clone`](TcpStream::try_clone) (Python's `dup`)
//!   copies the current mode; afterwards the two modes are independent. The
//!   OS descriptor is always in non-blocking mode underneath, whatever the
//!   [`Mode`] (it is made so when the socket is created or converted from
//!   std's type), so a mode never leaks between handles through a shared
//!   descriptor: the pitfall the Python note warns about. Users of `AsRawFd`
//!   and `AsFd` see a non-blocking descriptor and must not change its flags.
//! - **R12 Zero-length reads.** [`recv`](TcpStream::recv), `read`,
//!   [`peek`](TcpStream::peek) and [`recv_exact`](TcpStream::recv_exact)
//!   into an empty buffer return `Ok(0)` (or `Ok(())`) at once in every mode,
//!   without waiting and without touching the socket, on every type,
//!   datagram sockets included (where a zero-length receive would consume a
//!   queued datagram). [`UdpSocket::recv_from`], [`UdpSocket::peek_from`] and
//!   [`UnixDatagram::recv_from`] are the exception, as CPython's `recvfrom`:
//!   the sender's address is only known from a datagram, so with an empty
//!   buffer they wait for one as any other call does.
//! - **R13 Shutdown wakes waiters.** [`shutdown`](TcpStream::shutdown) from
//!   another thread (on a [`TcpStream`], [`UnixStream`] or [`UnixDatagram`])
//!   wakes every call blocked on that socket, through any of its
//!   [`try_clone`](TcpStream::try_clone) handles, whatever the OS answers.
//!   The woken calls try again and see what the OS reports: a receive after
//!   `shutdown(Read)` gets `Ok(0)` (on a [`UnixDatagram`] in blocking and
//!   timeout mode the crate returns it, as a blocking receive in the kernel
//!   would: the OS answers a non-blocking one with `EAGAIN`, and no event
//!   follows), a send after `shutdown(Write)` fails with `BrokenPipe`
//!   (never raising `SIGPIPE` on Linux, where the sends of stream and Unix
//!   sockets pass `MSG_NOSIGNAL`; elsewhere a process that does not ignore
//!   `SIGPIPE` gets it, though Rust binaries ignore it by default). A
//!   call that still cannot go on waits again, within its same deadline.
//!   [`UdpSocket`] and the listeners have no `shutdown`, as in std.
//! - **R14 Same reactor.** The waits are readiness registrations plus
//!   deadline timers in an `ontime_core::Reactor` and its timer wheel: the
//!   waiting thread's own, each turned by its thread (see
//!   [Implementation](#implementation)). A socket is registered in a
//!   thread's reactor on the thread's first wait on it; there is no
//!   `poll(2)` or `select(2)` per call and no helper thread per socket, and
//!   [`select()`] waits in the same reactors. Two Unix
//!   operations have no readiness event to announce that they can go on: a
//!   [`UnixStream::connect`] to a listener whose accept queue is full, and a
//!   [`UnixDatagram::send_to`] to a receiver whose queue is full. They are
//!   retried with a capped exponential backoff (1 ms doubling to 64 ms),
//!   each pause a wait on a timer alone in the same reactor.
//!
//! ## Timing bounds
//!
//! The tests run on a noisy 2-core machine and hold the crate to these
//! bounds:
//!
//! - Timeouts under test are 300 ms (within 200 to 500 ms).
//! - A deadline never fires early. The contract allows `elapsed >= T - 10 ms`;
//!   the tests check `elapsed >= T` strictly, measured from before the call,
//!   as the deadline is computed after that and the reactor's wheel rounds
//!   deadlines up.
//! - Lateness is bounded loosely: `elapsed <= T + max(1 s, T)`.
//! - "Promptly" (`WouldBlock`, a refused connect, end of file, a zero-length
//!   read, a 1 ns timeout) is at most 250 ms.
//! - Waits that must succeed get 10 s; each test runs under a 60 s watchdog,
//!   and a test run again in a child process under a 30 s limit.
//! - Fill loops (send until the buffer is full) are bounded in iterations; the
//!   TCP ones shrink `SO_SNDBUF` and `SO_RCVBUF` to 64 KiB before connecting.
//!
//! A real connect timeout needs no outside address: Linux drops a SYN when a
//! listener's accept queue is full (with the default
//! `net.ipv4.tcp_abort_on_overflow = 0`) and the client retransmits only
//! after about a second. So the tests listen with backlog 0, open one filler
//! connection that nobody accepts, and then connect with a timeout below
//! 1 s, which times out at the timeout. Where `tcp_abort_on_overflow` is 1
//! the connect is refused instead, and those tests are skipped with a
//! message. They never use a private or public address as a black hole.
//!
//! ## What the tests check
//!
//! - `tests/sync_tcp.rs`: the modes and their setters in every order (R1),
//!   1 ns and `Duration::MAX` timeouts, data queued before a mode change;
//!   accept, connect (refused, a full accept queue, nothing left half-open,
//!   skipping a refused address), receive and send in each mode; `send_all`
//!   and `read_exact` with one deadline (R3); the mode read at call entry
//!   (R4); clones and the non-blocking descriptor (R11); zero-length reads
//!   (R12); shutdown waking a blocked receive or send (R13); many threads
//!   timing out on time; [`select()`]; and little CPU while blocked (R6).
//! - `tests/sync_udp.rs`: the three modes on `recv_from` and `recv`, round
//!   trips with addresses, `connect`, clones, zero-length receives that keep
//!   the datagram, `peek`, options and the default timeout.
//! - `tests/sync_unix.rs`: the same for Unix streams and datagrams, plus the
//!   connect to a full accept queue and the `send_to` to a full receiver
//!   (R10, R14), `SIGPIPE`, and shutdown waking a datagram receive (R13).
//! - `tests/sync_default_timeout.rs`: the default timeout (R7): initially
//!   `None`, shown on new streams, listeners and UDP sockets but not older
//!   ones, zero making new sockets non-blocking, reset to `None`; an
//!   explicit [`create_connection`] timeout overriding it (R9); and the
//!   accept matrix of R8 (listener blocking, non-blocking or in timeout mode,
//!   by default none, zero or 20 s).
//! - `tests/sync_signals.rs`: signals delivered every 10 ms to threads
//!   waiting in timeout mode (the one driving the reactor and parked ones)
//!   and in blocking mode neither surface nor extend the deadline (R5).
//!
//! # Implementation
//!
//! Descriptors are always non-blocking. A call tries the system call first
//! (if data is there, a read costs one system call); on `WouldBlock` it
//! waits in its thread's own `ontime_core::Reactor`: its interest is a
//! readiness registration and its deadline a timer in that reactor's
//! wheel, and the thread turns the reactor until the socket moves or the
//! timer fires. The kernel wakes each waiting thread directly; no thread
//! wakes another. A stream read that returns fewer bytes than asked
//! emptied the socket, so the next read waits without trying first, until
//! a readiness event comes (never once the peer's FIN or an error has been
//! seen, after which a read may return at once with no event). There is no
//! `poll(2)` per call, no thread per socket and no busy waiting. (The two
//! Unix operations that no readiness event announces wait on a timer alone,
//! in the same wheel: see R14.)
//!
//! ## Descriptors
//!
//! - **One per thread that has waited**: its reactor's poller (an epoll
//!   instance on Linux), made at the thread's first wait and closed when
//!   the thread exits. Sockets stay registered in it until they close, the
//!   thread exits, or (for a socket another thread's reactor has too) an
//!   event for it comes while the thread waits on other sockets: a
//!   connection handed around a pool is left to the thread that has it
//!   now, so that its events do not wake every thread it went through.
//! - **Two for the process**: a spare reactor (poller and waker), made at
//!   the process's first wait. A thread that cannot make its own reactor
//!   (the process is out of descriptors) waits in the spare one instead of
//!   failing with `EMFILE`, as does a wait whose socket cannot be
//!   registered in the thread's reactor; the spare's thread is started
//!   only then.
//! - **None per handle**: [`try_clone`](TcpStream::try_clone) shares the
//!   descriptor.

#![forbid(unsafe_code)]

mod driver;
mod io;
mod mode;
mod net;
mod select;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;

pub use crate::mode::{default_timeout, set_default_timeout, Mode};
pub use crate::net::{create_connection, Incoming, TcpListener, TcpStream, UdpSocket};
#[cfg(unix)]
pub use crate::net::{UnixDatagram, UnixListener, UnixStream};
pub use crate::select::{select, SelectHandle, Selectable, Selected};
