//! `Incoming`: the iterator of both listeners' `incoming`.

use std::io;

use crate::net::{TcpListener, TcpStream};
#[cfg(unix)]
use crate::net::{UnixListener, UnixStream};

/// The iterator of [`TcpListener::incoming`] and
/// [`UnixListener::incoming`]: each item is one
/// [`accept`](TcpListener::accept)'s result, the stream without its address,
/// in the listener's mode. It never ends: in non-blocking or timeout mode an
/// item is the `WouldBlock` or `TimedOut` error, and the next one tries
/// again.
///
/// One type serves both listeners (std has one per module), so that the
/// crate's flat namespace needs one name: `L` is the listener, and
/// `Incoming<'a>` alone is TCP's.
///
/// # Examples
///
/// ```
/// use ontime_sync::{Incoming, TcpListener, TcpStream};
///
/// # fn main() -> std::io::Result<()> {
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let _client = TcpStream::connect(listener.local_addr()?)?;
/// let mut incoming: Incoming<'_> = listener.incoming();
/// let server = incoming.next().expect("never ends")?;
/// assert!(server.is_blocking());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Incoming<'a, L = TcpListener> {
    listener: &'a L,
}

impl<'a, L> Incoming<'a, L> {
    pub(crate) fn new(listener: &'a L) -> Incoming<'a, L> {
        Incoming { listener }
    }
}

impl Iterator for Incoming<'_, TcpListener> {
    type Item = io::Result<TcpStream>;
    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        Some(self.listener.accept().map(|(stream, _)| stream))
    }
}

#[cfg(unix)]
impl Iterator for Incoming<'_, UnixListener> {
    type Item = io::Result<UnixStream>;
    fn next(&mut self) -> Option<io::Result<UnixStream>> {
        Some(self.listener.accept().map(|(stream, _)| stream))
    }
}
