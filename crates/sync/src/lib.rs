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
//! # Implementation
//!
//! Descriptors are always non-blocking. A call tries the system call first
//! (if data is there, a read costs one system call); on `WouldBlock` it
//! waits in the process's one `ontime_core::Reactor`: its interest is a
//! readiness registration and its deadline a timer in the reactor's wheel.
//! The waiting thread drives the reactor itself when no other thread does
//! (leader/follower); others park with their own deadline until the leader
//! wakes them, and a leader that is done hands the role on. There is no
//! `poll(2)` per call, no thread per socket and no busy waiting.

#![forbid(unsafe_code)]

mod driver;
mod io;
mod mode;
mod net;
mod select;

pub use crate::mode::{default_timeout, set_default_timeout, Mode};
pub use crate::net::{create_connection, Incoming, TcpListener, TcpStream, UdpSocket};
#[cfg(unix)]
pub use crate::net::{UnixDatagram, UnixListener, UnixStream};
pub use crate::select::{select, SelectHandle, Selectable, Selected};
