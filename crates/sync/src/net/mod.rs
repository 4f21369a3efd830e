//! The sockets: TCP, UDP and Unix, each with the three modes.

mod stream;
mod tcp;
mod udp;
#[cfg(unix)]
mod unix;

pub use tcp::{create_connection, Incoming, TcpListener, TcpStream};
pub use udp::UdpSocket;
#[cfg(unix)]
pub use unix::{UnixDatagram, UnixListener, UnixStream};

/// Implements the mode methods, `try_clone`, `take_error`, descriptor access,
/// [`Selectable`], the private `from_std` and `From<$std>` for a socket type
/// with fields `handle: Handle<$std>` and `mode: ModeCell`.
///
/// `$std` is the std socket type wrapped; `$make` is doctest code that binds
/// `sock` to a new socket of the type.
macro_rules! socket_common {
    ($ty:ident, $std:ty, $make:literal) => {
        impl $ty {
            /// Wraps `sock` in `mode`, putting its descriptor in non-blocking
            /// mode (R11).
            ///
            /// # Errors
            ///
            /// The OS error of `set_nonblocking`, unlike `From`, which logs it.
            fn from_std(sock: $std, mode: $crate::Mode) -> std::io::Result<$ty> {
                sock.set_nonblocking(true)?;
                Ok($ty {
                    handle: $crate::driver::Handle::new(sock),
                    mode: $crate::mode::ModeCell::new(mode),
                })
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
                "# Examples\n\n```\nuse std::time::Duration;\n# fn main() -> std::io::Result<()> {\n",
                $make, "\nsock.set_timeout(Some(Duration::from_secs(1)))?;\n",
                "let clone = sock.try_clone()?;\n",
                "assert_eq!(clone.timeout(), Some(Duration::from_secs(1)));\n",
                "clone.set_blocking(false)?;\n",
                "assert_eq!(sock.timeout(), Some(Duration::from_secs(1)));\n",
                "# Ok(())\n# }\n```\n\n# Errors\n\n",
                "The OS error duplicating the descriptor (for example `EMFILE`).")]
            pub fn try_clone(&self) -> std::io::Result<$ty> {
                Ok($ty {
                    handle: self.handle.duplicate(<$std>::try_clone)?,
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

        /// Wraps a std socket (for example one made with socket2 to set
        /// options first, such as a listener's backlog), putting its
        /// descriptor in non-blocking mode (R11); the new socket has the
        /// default timeout's mode (R7).
        ///
        /// # Panics
        ///
        /// Never; if the descriptor cannot be made non-blocking (it is not a
        /// socket), later calls fail with the OS error instead.
        impl From<$std> for $ty {
            fn from(sock: $std) -> $ty {
                if let Err(e) = sock.set_nonblocking(true) {
                    log::debug!(
                        "set_nonblocking on a converted {} failed: {e}",
                        stringify!($ty)
                    );
                }
                $ty {
                    handle: $crate::driver::Handle::new(sock),
                    mode: $crate::mode::ModeCell::new($crate::mode::default_mode()),
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
