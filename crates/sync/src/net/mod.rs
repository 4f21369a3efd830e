//! The sockets: TCP, UDP and Unix, each with the three modes.

mod incoming;
mod stream;
mod tcp;
mod udp;
#[cfg(unix)]
mod unix;

pub use incoming::Incoming;
pub use tcp::{create_connection, TcpListener, TcpStream};
pub use udp::UdpSocket;
#[cfg(unix)]
pub use unix::{UnixDatagram, UnixListener, UnixStream};

/// Implements the mode methods, `try_clone`, `take_error`, descriptor access,
/// [`Selectable`], `from_std`, the private `with_mode` and `From<$std>` for a
/// socket type with fields `handle: Handle<$std>` and `mode: ModeCell`.
///
/// `$std` is the std socket type wrapped; `$make` is doctest code that binds
/// `sock` to a new socket of the type, `$make_std` doctest code that binds
/// `std_sock` to a new socket of the std type.
macro_rules! socket_common {
    ($ty:ident, $std:ty, $make:literal, $make_std:literal) => {
        impl $ty {
            /// Wraps `sock` in `mode`, putting its descriptor in non-blocking
            /// mode (R11).
            ///
            /// # Errors
            ///
            /// The OS error of `set_nonblocking`.
            fn with_mode(sock: $std, mode: $crate::Mode) -> std::io::Result<$ty> {
                sock.set_nonblocking(true)?;
                Ok($ty {
                    handle: $crate::driver::Handle::new(sock),
                    mode: $crate::mode::ModeCell::new(mode),
                })
            }

            #[doc = concat!("Wraps a std `", stringify!($std), "` (for example one made with socket2 to\n",
                "set options first, such as a listener's backlog), putting its descriptor in\n",
                "non-blocking mode (R11); the new socket has the default timeout's mode (R7).\n\n",
                "This is the `From` conversion with its one failure returned instead of\n",
                "raised as a panic (see the `From` impl).\n\n",
                "# Examples\n\n```\n# fn main() -> std::io::Result<()> {\n",
                $make_std, "\nlet sock = ontime_sync::", stringify!($ty), "::from_std(std_sock)?;\n",
                "assert_eq!(sock.timeout(), ontime_sync::default_timeout());\n",
                "# Ok(())\n# }\n```\n\n# Errors\n\n",
                "The OS error of making the descriptor non-blocking (`ioctl(FIONBIO)` on\n",
                "Linux): in practice only `EBADF`, for a descriptor that is not open, or the\n",
                "error of a sandbox that forbids the call. `sock` is closed then.")]
            pub fn from_std(sock: $std) -> std::io::Result<$ty> {
                $ty::with_mode(sock, $crate::mode::default_mode())
            }

            #[doc = concat!("Sets the mode as Python's `settimeout` (rule R1): `None` is blocking, zero is\n",
                "non-blocking, anything else is timeout mode. It applies to calls that start\n",
                "afterwards, never to a call already waiting (R4).\n\n",
                "Unlike std's `set_read_timeout`, a zero timeout is not an error.\n\n",
                "# Examples\n\n```\nuse std::time::Duration;\n# fn main() -> std::io::Result<()> {\n",
                $make, "\nsock.set_timeout(Some(Duration::from_millis(300)))?;\n",
                "assert_eq!(sock.timeout(), Some(Duration::from_millis(300)));\n",
                "sock.set_timeout(Some(Duration::ZERO))?;\nassert!(!sock.is_blocking());\n",
                "# Ok(())\n# }\n```\n\n# Errors\n\nNone today; the `Result` mirrors Python and std.")]
            pub fn set_timeout(&self, timeout: Option<std::time::Duration>) -> std::io::Result<()> {
                self.set_mode($crate::Mode::from_timeout(timeout))
            }

            /// The timeout as Python's `gettimeout`: `None` when blocking,
            /// zero when non-blocking.
            pub fn timeout(&self) -> Option<std::time::Duration> {
                self.mode().timeout()
            }

            /// `set_blocking(true)` is `set_timeout(None)`;
            /// `set_blocking(false)` is `set_timeout(Some(Duration::ZERO))`.
            ///
            /// # Errors
            ///
            /// None today; the `Result` mirrors Python and std.
            pub fn set_blocking(&self, blocking: bool) -> std::io::Result<()> {
                self.set_mode(if blocking {
                    $crate::Mode::Blocking
                } else {
                    $crate::Mode::NonBlocking
                })
            }

            /// Whether the socket is not in non-blocking mode (timeout mode
            /// counts as blocking, as in Python's `getblocking`).
            pub fn is_blocking(&self) -> bool {
                self.mode() != $crate::Mode::NonBlocking
            }

            /// The socket's [`Mode`]($crate::Mode).
            pub fn mode(&self) -> $crate::Mode {
                self.mode.get()
            }

            /// Sets the socket's [`Mode`]($crate::Mode). The descriptor itself
            /// always stays non-blocking (rule R11).
            ///
            /// # Errors
            ///
            /// None today; the `Result` mirrors std's setters.
            pub fn set_mode(&self, mode: $crate::Mode) -> std::io::Result<()> {
                self.mode.set(mode);
                Ok(())
            }

            #[doc = concat!("A new handle to the same socket, as Python's `dup`: it starts in this\n",
                "handle's mode; afterwards the two modes are independent (R11). Where the\n",
                "type has a `shutdown`, one through either handle wakes the calls waiting\n",
                "on both (R13).\n\n",
                "Unlike `dup` and std's `try_clone`, the handles share one descriptor\n",
                "(`as_raw_fd` gives the same number), which closes when the last handle\n",
                "is dropped: a clone costs no descriptor, and the socket has one\n",
                "registration per waiting thread however many handles it has.\n\n",
                "# Examples\n\n```\nuse std::time::Duration;\n# fn main() -> std::io::Result<()> {\n",
                $make, "\nsock.set_timeout(Some(Duration::from_secs(1)))?;\n",
                "let clone = sock.try_clone()?;\n",
                "assert_eq!(clone.timeout(), Some(Duration::from_secs(1)));\n",
                "clone.set_blocking(false)?;\n",
                "assert_eq!(sock.timeout(), Some(Duration::from_secs(1)));\n",
                "# Ok(())\n# }\n```\n\n# Errors\n\n",
                "None: sharing the descriptor cannot fail. The `Result` mirrors std.")]
            pub fn try_clone(&self) -> std::io::Result<$ty> {
                Ok($ty {
                    handle: self.handle.share(),
                    mode: $crate::mode::ModeCell::new(self.mode()),
                })
            }

            #[doc = concat!("Takes the socket's pending error (`SO_ERROR`), clearing it: for example,\n",
                "on a UDP socket, the `ConnectionRefused` of an earlier datagram to a\n",
                "closed port.\n\n",
                "# Examples\n\n```\n# fn main() -> std::io::Result<()> {\n",
                $make, "\nassert!(sock.take_error()?.is_none());\n",
                "# Ok(())\n# }\n```\n\n# Errors\n\nThe OS error of the query itself.")]
            pub fn take_error(&self) -> std::io::Result<Option<std::io::Error>> {
                self.handle.take_error()
            }

            /// The deadline of a call starting now (rule R3).
            fn deadline(&self) -> $crate::mode::Deadline {
                self.mode.get().deadline()
            }
        }

        #[doc = concat!("Wraps a std socket as [`", stringify!($ty), "::from_std`] does: the descriptor is\n",
            "made non-blocking (R11) and the new socket has the default timeout's mode (R7).\n\n",
            "# Panics\n\n",
            "If the descriptor cannot be made non-blocking. In practice that happens only\n",
            "for a descriptor that is not open (a broken I/O-safety invariant of whoever\n",
            "made the std socket), or under a sandbox that forbids the call. Use\n",
            "[`", stringify!($ty), "::from_std`] to get that error instead.\n\n",
            "Why a panic rather than a log line: a socket whose descriptor stayed blocking\n",
            "would break the modes without a word. A non-blocking call would block, a\n",
            "timeout would never fire, and a clone's mode would leak through the shared\n",
            "descriptor (R1, R2, R11). A `From` cannot return an error, so it refuses to\n",
            "return such a socket.")]
        impl From<$std> for $ty {
            fn from(sock: $std) -> $ty {
                match $ty::from_std(sock) {
                    Ok(sock) => sock,
                    Err(e) => panic!(
                        "converting a std socket to ontime_sync::{}: \
                         cannot make its descriptor non-blocking: {e}",
                        stringify!($ty)
                    ),
                }
            }
        }

        /// The descriptor is always in non-blocking mode, whatever the
        /// socket's [`Mode`]($crate::Mode): the modes are implemented above
        /// it (rule R11). Do not change its flags.
        impl std::os::fd::AsRawFd for $ty {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                self.handle.as_raw_fd()
            }
        }

        /// The descriptor is always in non-blocking mode (rule R11).
        impl std::os::fd::AsFd for $ty {
            fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                self.handle.as_fd()
            }
        }

        impl $crate::select::Selectable for $ty {
            fn select_handle(&self) -> $crate::select::SelectHandle {
                $crate::select::SelectHandle::new(self.handle.io().clone())
            }
        }

        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("fd", &std::os::fd::AsRawFd::as_raw_fd(self))
                    .field("mode", &self.mode())
                    .finish()
            }
        }
    };
}

pub(crate) use socket_common;

/// Implements `Read` and `Write` for `$ty` and `&$ty` through its `recv`,
/// `send`, `recv_exact` and `send_all`.
macro_rules! stream_read_write {
    ($ty:ident) => {
        $crate::net::stream_read_write!(@impls $ty);
        $crate::net::stream_read_write!(@impls &$ty);
    };
    (@impls $ty:ty) => {
        impl std::io::Read for $ty {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.recv(buf)
            }
            /// One deadline for the whole call (rule R3).
            fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
                self.recv_exact(buf)
            }
        }

        impl std::io::Write for $ty {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.send(buf)
            }
            /// One deadline for the whole call (rule R3).
            fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
                self.send_all(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
    };
}

pub(crate) use stream_read_write;

/// Implements what the stream sockets (`TcpStream`, `UnixStream`) share:
/// `recv`, `peek`, `recv_exact`, `send`, `send_all`, `shutdown`,
/// `local_addr` and `peer_addr`, through the functions of `net/stream.rs`,
/// and `Read`/`Write` (through `stream_read_write!`).
///
/// `$pair` is doctest code that binds `a` and `b` to the two ends of a
/// connection of the type. The address accessors return `$addr` and take
/// their doc comments from the invocation, since what an address is differs
/// between the families.
macro_rules! stream_common {
    (
        $ty:ident,
        addr: $addr:ty,
        pair: $pair:literal,
        $(#[$local:meta])* fn local_addr;
        $(#[$peer:meta])* fn peer_addr;
    ) => {
        $crate::net::stream_read_write!($ty);

        impl $ty {
            #[doc = concat!("Receives into `buf`, as Python's `recv`. Returns 0 at end of file, and\n",
                "at once for an empty `buf` in every mode, without touching the socket (R12).\n",
                "In timeout mode, whatever data has arrived is returned at once, however\n",
                "little.\n\n",
                "# Examples\n\n```\n# fn main() -> std::io::Result<()> {\n",
                $pair, "\na.send_all(b\"hi\")?;\ndrop(a);\n",
                "let mut buf = [0; 8];\n",
                "assert_eq!(b.recv(&mut [])?, 0); // at once, the data stays queued\n",
                "assert_eq!(b.recv(&mut buf)?, 2);\n",
                "assert_eq!(b.recv(&mut buf)?, 0); // end of file\n",
                "# Ok(())\n# }\n```\n\n# Errors\n\n",
                "`WouldBlock` (non-blocking, nothing to read), `TimedOut` (timeout\n",
                "mode, nothing arrived in time), or the OS error unchanged (for example\n",
                "`ConnectionReset`).")]
            pub fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
                $crate::net::stream::recv(&self.handle, self.deadline(), buf)
            }

            #[doc = concat!("Receives into `buf` without taking the data from the queue (`recv` with\n",
                "`MSG_PEEK`). An empty `buf` returns `Ok(0)` at once (R12); otherwise the call\n",
                "waits as [`recv`](", stringify!($ty), "::recv) does.\n\n",
                "# Examples\n\n```\n# fn main() -> std::io::Result<()> {\n",
                $pair, "\na.send_all(b\"hi\")?;\n",
                "let mut buf = [0; 2];\n",
                "assert_eq!(b.peek(&mut buf)?, 2);\n",
                "assert_eq!(b.recv(&mut buf)?, 2);\n",
                "assert_eq!(&buf, b\"hi\");\n",
                "# Ok(())\n# }\n```\n\n# Errors\n\n",
                "As [`recv`](", stringify!($ty), "::recv).")]
            pub fn peek(&self, buf: &mut [u8]) -> std::io::Result<usize> {
                $crate::net::stream::peek(&self.handle, self.deadline(), buf)
            }

            #[doc = concat!("Fills `buf` entirely, within ONE deadline for the whole call (R3); also\n",
                "`read_exact`. An empty `buf` returns `Ok(())` at once (R12).\n\n",
                "# Examples\n\n```\n# fn main() -> std::io::Result<()> {\n",
                $pair, "\na.send_all(b\"abc\")?;\ndrop(a);\n",
                "let mut buf = [0; 4];\n",
                "let err = b.recv_exact(&mut buf).unwrap_err();\n",
                "assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);\n",
                "# Ok(())\n# }\n```\n\n# Errors\n\n",
                "`UnexpectedEof` if the peer closes first; otherwise as\n",
                "[`recv`](", stringify!($ty), "::recv), including `TimedOut` when the one deadline\n",
                "passes part-way. On error, the bytes already received are in `buf` but their\n",
                "count is lost, as with std's `read_exact`.")]
            pub fn recv_exact(&self, buf: &mut [u8]) -> std::io::Result<()> {
                $crate::net::stream::recv_exact(&self.handle, self.deadline(), buf)
            }

            #[doc = concat!("Sends some of `buf`, as Python's `send`; returns how much was sent. The\n",
                "send passes `MSG_NOSIGNAL` (on every system that has it: Linux, the BSDs;\n",
                "not Apple's), so a send to a closed peer fails with `BrokenPipe` instead\n",
                "of raising `SIGPIPE`.\n\n",
                "# Examples\n\n```\nuse std::net::Shutdown;\n\n# fn main() -> std::io::Result<()> {\n",
                $pair, "\nassert_eq!(a.send(b\"hi\")?, 2);\n",
                "a.shutdown(Shutdown::Write)?;\n",
                "assert_eq!(a.send(b\"hi\").unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);\n",
                "# Ok(())\n# }\n```\n\n# Errors\n\n",
                "`WouldBlock` (non-blocking, send buffer full), `TimedOut` (timeout mode,\n",
                "no room in time), or the OS error unchanged (`BrokenPipe` after a local\n",
                "`shutdown(Write)`; `BrokenPipe` or `ConnectionReset` once the peer is gone).")]
            pub fn send(&self, buf: &[u8]) -> std::io::Result<usize> {
                $crate::net::stream::send(&self.handle, self.deadline(), buf)
            }

            #[doc = concat!("Sends all of `buf`, within ONE deadline for the whole call, as Python's\n",
                "`sendall` (R3); also `write_all`.\n\n",
                "# Examples\n\n```\n# fn main() -> std::io::Result<()> {\n",
                $pair, "\na.send_all(b\"hello\")?;\n",
                "let mut buf = [0; 5];\n",
                "b.recv_exact(&mut buf)?;\n",
                "assert_eq!(&buf, b\"hello\");\n",
                "# Ok(())\n# }\n```\n\n# Errors\n\n",
                "As [`send`](", stringify!($ty), "::send), including `TimedOut` when the one deadline\n",
                "passes part-way; after an error, how much was sent is unknown (as in Python).")]
            pub fn send_all(&self, buf: &[u8]) -> std::io::Result<()> {
                $crate::net::stream::send_all(&self.handle, self.deadline(), buf)
            }

            #[doc = concat!("Shuts down the read side, the write side, or both. Calls blocked on this\n",
                "socket in other threads, through this handle or any\n",
                "[`try_clone`](", stringify!($ty), "::try_clone) of it, wake up and see the result\n",
                "(R13): a receive gets `Ok(0)` after `shutdown(Read)`, a send fails with\n",
                "`BrokenPipe` after `shutdown(Write)`.\n\n",
                "# Examples\n\n```\nuse std::net::Shutdown;\n\n# fn main() -> std::io::Result<()> {\n",
                $pair, "\na.shutdown(Shutdown::Read)?;\n",
                "let mut buf = [0; 8];\n",
                "assert_eq!(a.recv(&mut buf)?, 0);\n",
                "# Ok(())\n# }\n```\n\n# Errors\n\n",
                "The OS error unchanged (for example `NotConnected`).")]
            pub fn shutdown(&self, how: std::net::Shutdown) -> std::io::Result<()> {
                self.handle.shutdown_and_wake(how)
            }

            $(#[$local])*
            pub fn local_addr(&self) -> std::io::Result<$addr> {
                self.handle.local_addr()
            }

            $(#[$peer])*
            pub fn peer_addr(&self) -> std::io::Result<$addr> {
                self.handle.peer_addr()
            }
        }
    };
}

pub(crate) use stream_common;
