//! What the stream sockets (TCP and Unix) share: receiving, sending with one
//! deadline per call, and finishing a non-blocking connect. (Shutdown is the
//! driver's `Handle::shutdown_and_wake`, shared with datagram sockets.)

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd};

use ontime_core::Direction;
use socket2::SockRef;

use crate::driver::Handle;
use crate::io::{retry, retry_all};
use crate::mode::Deadline;

/// `EINPROGRESS`: a non-blocking connect that goes on in the background
/// (`io::ErrorKind::InProgress` is not stable yet).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) const EINPROGRESS: i32 = 115;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) const EINPROGRESS: i32 = 36;

/// `MSG_NOSIGNAL`, passed to every stream send: a send to a closed peer or
/// after `shutdown(Write)` fails with `BrokenPipe` instead of raising
/// `SIGPIPE`. std passes it for TCP, but socket2's `send` passes no flags
/// and older std releases write to a `UnixStream` with `write(2)`.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) const SEND_FLAGS: std::ffi::c_int = 0x4000;
/// Other systems spell `MSG_NOSIGNAL` differently or not at all; there a
/// send to a closed peer raises `SIGPIPE` unless the process ignores it (as
/// Rust's runtime does by default in binaries).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) const SEND_FLAGS: std::ffi::c_int = 0;

/// One send that never raises `SIGPIPE` (see [`SEND_FLAGS`]).
pub(crate) fn send_no_signal(sock: &impl AsFd, buf: &[u8]) -> io::Result<usize> {
    SockRef::from(sock).send_with_flags(buf, SEND_FLAGS)
}

/// `recv`: 0 at end of file, and at once for an empty `buf` (R12).
pub(crate) fn recv<S>(handle: &Handle<S>, deadline: Deadline, buf: &mut [u8]) -> io::Result<usize>
where
    S: AsRawFd + Send + Sync + 'static,
    for<'a> &'a S: Read,
{
    if buf.is_empty() {
        return Ok(0);
    }
    retry(handle, Direction::Read, deadline, |mut sock| sock.read(buf))
}

/// `recv_exact`: fills `buf` within one deadline (R3).
pub(crate) fn recv_exact<S>(
    handle: &Handle<S>,
    deadline: Deadline,
    buf: &mut [u8],
) -> io::Result<()>
where
    S: AsRawFd + Send + Sync + 'static,
    for<'a> &'a S: Read,
{
    let len = buf.len();
    retry_all(
        handle,
        Direction::Read,
        deadline,
        len,
        eof_before_exact,
        |mut sock, done| sock.read(&mut buf[done..]),
    )
}

/// `send`: some of `buf`.
pub(crate) fn send<S>(handle: &Handle<S>, deadline: Deadline, buf: &[u8]) -> io::Result<usize>
where
    S: AsRawFd + AsFd + Send + Sync + 'static,
{
    retry(handle, Direction::Write, deadline, |sock| {
        send_no_signal(sock, buf)
    })
}

/// `send_all`: all of `buf` within one deadline (R3).
pub(crate) fn send_all<S>(handle: &Handle<S>, deadline: Deadline, buf: &[u8]) -> io::Result<()>
where
    S: AsRawFd + AsFd + Send + Sync + 'static,
{
    retry_all(
        handle,
        Direction::Write,
        deadline,
        buf.len(),
        wrote_zero,
        |sock, done| send_no_signal(sock, &buf[done..]),
    )
}

/// Waits, until `deadline`, for a connect that returned [`EINPROGRESS`] to
/// finish: `Ok` once connected, the connect's own error (for example
/// `ConnectionRefused`) if it failed.
pub(crate) fn finish_connect<S>(handle: &Handle<S>, deadline: Deadline) -> io::Result<()>
where
    S: AsRawFd + AsFd + Send + Sync + 'static,
{
    retry(handle, Direction::Write, deadline, |sock| {
        let sock = SockRef::from(sock);
        if let Some(e) = sock.take_error()? {
            return Err(e);
        }
        match sock.peer_addr() {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                Err(io::ErrorKind::WouldBlock.into())
            }
            Err(e) => Err(e),
        }
    })
}

/// `UnexpectedEof` for `recv_exact` when the peer closes first.
fn eof_before_exact() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "failed to fill whole buffer")
}

/// `WriteZero` for `send_all` when the socket accepts nothing.
fn wrote_zero() -> io::Error {
    io::Error::new(io::ErrorKind::WriteZero, "failed to write whole buffer")
}
