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

/// Implements the mode methods, descriptor access and [`Selectable`] for a
/// socket type with fields `handle: Handle<_>` and `mode: ModeCell`.
///
/// `$make` is doctest code that binds `sock` to a new socket of the type.
macro_rules! socket_common {
    ($ty:ident, $make:literal) => {
        impl $ty {
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

            /// The deadline of a call starting now (rule R3).
            fn deadline(&self) -> $crate::mode::Deadline {
                self.mode.get().deadline()
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
