//! What the stream sockets (TCP and Unix) share: receiving, peeking,
//! sending with one deadline per call, and finishing a non-blocking connect,
//! behind the methods that `stream_common!` (in `net/mod.rs`) gives both
//! stream types. (Shutdown is the driver's `Handle::shutdown_and_wake`,
//! shared with datagram sockets.) The single system calls that std and
//! socket2 leave out (`send` with `MSG_NOSIGNAL`, `recv` with `MSG_PEEK` on
//! any family) live here too, through rustix's safe wrappers, and serve the
//! Unix datagram socket as well.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd};

use ontime_core::Direction;
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};
use socket2::SockRef;

use crate::driver::Handle;
use crate::io::{retry, retry_all, retry_read};
use crate::mode::Deadline;

/// Whether `e` is `EINPROGRESS`: a non-blocking connect that goes on in the
/// background (`io::ErrorKind::InProgress` is not stable yet).
pub(crate) fn is_in_progress(e: &io::Error) -> bool {
    e.raw_os_error() == Some(Errno::INPROGRESS.raw_os_error())
}

/// `MSG_NOSIGNAL`, passed to every stream send and every Unix datagram
/// send: a send to a closed peer or after `shutdown(Write)` fails with
/// `BrokenPipe` instead of raising `SIGPIPE`. std's own writes pass it for
/// TCP, but older std releases write to a `UnixStream` with `write(2)`, so
/// the crate makes every send itself, with the flag. The systems left out
/// here are those rustix (and the OS) define no `MSG_NOSIGNAL` for.
#[cfg(not(any(target_vendor = "apple", target_os = "redox", target_os = "vita")))]
pub(crate) const NO_SIGNAL: SendFlags = SendFlags::NOSIGNAL;
/// Apple's systems (and Redox, Vita) have no `MSG_NOSIGNAL` (Apple's have
/// the `SO_NOSIGPIPE` socket option instead); there a send to a closed peer
/// raises `SIGPIPE` unless the process ignores it (as Rust's runtime does by
/// default in binaries).
#[cfg(any(target_vendor = "apple", target_os = "redox", target_os = "vita"))]
pub(crate) const NO_SIGNAL: SendFlags = SendFlags::empty();

/// One send that never raises `SIGPIPE` (see [`NO_SIGNAL`]).
pub(crate) fn send_no_signal(sock: &impl AsFd, buf: &[u8]) -> io::Result<usize> {
    Ok(rustix::net::send(sock, buf, NO_SIGNAL)?)
}

/// One `sendto` to `addr` that never raises `SIGPIPE` (see [`NO_SIGNAL`]).
///
/// Through socket2 rather than rustix: socket2's `SockAddr::unix` rejects a
/// path too long for `sun_path` with `InvalidInput`, as std does, where
/// rustix's address reports `ENAMETOOLONG`.
pub(crate) fn send_to_no_signal(
    sock: &impl AsFd,
    buf: &[u8],
    addr: &socket2::SockAddr,
) -> io::Result<usize> {
    // `MSG_NOSIGNAL` is a small positive flag on every system (0x4000 on
    // Linux), so the cast to socket2's `c_int` keeps its value.
    let flags = NO_SIGNAL.bits() as std::ffi::c_int;
    SockRef::from(sock).send_to_with_flags(buf, addr, flags)
}

/// One `recv(MSG_PEEK)`: receives into `buf` without taking the data from
/// the queue. It works on any socket family, so it serves the Unix sockets,
/// whose std `peek` is unstable, and the TCP stream alike; rustix's `recv`
/// takes an initialised buffer, so no `unsafe` is needed (the crate forbids
/// it) and no duplicate descriptor either.
pub(crate) fn peek_once(sock: &impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    let (n, _) = rustix::net::recv(sock, buf, RecvFlags::PEEK)?;
    Ok(n)
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
    retry_read(handle, deadline, buf.len(), |mut sock| sock.read(buf))
}

/// `peek`: as [`recv`], but the data stays queued; at once for an empty
/// `buf` (R12).
pub(crate) fn peek<S>(handle: &Handle<S>, deadline: Deadline, buf: &mut [u8]) -> io::Result<usize>
where
    S: AsRawFd + AsFd + Send + Sync + 'static,
{
    if buf.is_empty() {
        return Ok(0);
    }
    retry(handle, Direction::Read, deadline, |sock| {
        peek_once(sock, buf)
    })
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

/// Waits, until `deadline`, for a connect that returned `EINPROGRESS` (see
/// [`is_in_progress`]) to finish: `Ok` once connected, the connect's own
/// error (for example `ConnectionRefused`) if it failed.
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
