//! The retry loop of socket calls: try the call; on `WouldBlock`, wait for
//! readiness until the call's deadline; try again.
//!
//! Every socket operation whose "now" a readiness event announces goes
//! through [`retry`] (and [`retry_all`], which loops over it for the calls
//! that must handle a whole buffer). The deadline is computed once by the
//! caller, at entry (rule R3), so spurious wake-ups, signals and partial
//! progress never extend it.
//!
//! Two other loops retry, each for a reason of its own:
//!
//! - `retry_with_backoff` in `net/unix.rs`, for the two Unix operations that
//!   no readiness event on their own socket announces (a connect to a full
//!   accept queue, a `send_to` to a full receiver): there is nothing to wait
//!   for but time, so it sleeps in the reactor with a capped backoff.
//! - the loop of [`select`](fn@crate::select), which waits for any of several
//!   sockets and directions at once and reports readiness instead of
//!   running an operation.
//!
//! All three share the deadlines of [`Deadline`] and the waits of the
//! driver.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use ontime_core::Direction;

use crate::driver::{self, Handle, Outcome, Registered, Target};
use crate::mode::{timed_out, Deadline};

/// Runs `op` on `handle` until it does not report `WouldBlock`, waiting for
/// readiness in `direction` in between, until `deadline`.
///
/// - `Deadline::Now` (non-blocking): one try; `WouldBlock` is returned as is.
/// - `Deadline::At` (timeout mode): `TimedOut` ("timed out") once the
///   deadline passes with the call still unable to complete.
/// - `Deadline::Never` (blocking): waits as long as it takes.
///
/// `Interrupted` from the system call is retried (rule R5). Every other
/// result, success or OS error, is returned untouched (rule R2).
pub(crate) fn retry<S, R>(
    handle: &Handle<S>,
    direction: Direction,
    deadline: Deadline,
    op: impl FnMut(&S) -> io::Result<R>,
) -> io::Result<R>
where
    S: AsRawFd + Send + Sync + 'static,
{
    retry_noting(handle, direction, deadline, op, |_| false)
}

/// [`retry`] for a stream read into `len` bytes: a read that returns
/// fewer (but some) bytes emptied the socket's receive queue, so the next
/// read waits without trying first, until a readiness event moves the
/// tick. A read of 0 (end of file) is not taken for drained: no event
/// would follow it.
pub(crate) fn retry_read<S>(
    handle: &Handle<S>,
    deadline: Deadline,
    len: usize,
    op: impl FnMut(&S) -> io::Result<usize>,
) -> io::Result<usize>
where
    S: AsRawFd + Send + Sync + 'static,
{
    retry_noting(handle, Direction::Read, deadline, op, |&n| n > 0 && n < len)
}

/// The one retry loop. `drained` says whether a successful result shows
/// the socket drained in `direction`.
fn retry_noting<S, R>(
    handle: &Handle<S>,
    direction: Direction,
    deadline: Deadline,
    mut op: impl FnMut(&S) -> io::Result<R>,
    drained: impl Fn(&R) -> bool,
) -> io::Result<R>
where
    S: AsRawFd + Send + Sync + 'static,
{
    let io = handle.io();
    loop {
        // Read before the try: a readiness event after it moves the tick.
        let tick = io.source.tick(direction);
        // Known drained at this tick, the try would fail: wait first (never
        // in non-blocking mode, which must try).
        if deadline == Deadline::Now || !io.source.is_drained(direction, tick) {
            match op(&io.sock) {
                Ok(r) => {
                    if drained(&r) {
                        io.source.set_blocked(direction, tick);
                    }
                    return Ok(r);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    io.source.set_blocked(direction, tick);
                    if deadline == Deadline::Now {
                        return Err(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        let io: Arc<dyn Registered> = io.clone();
        let target = [Target {
            io,
            direction,
            tick,
        }];
        if driver::wait(&target, deadline)? == Outcome::TimedOut {
            return Err(timed_out());
        }
    }
}

/// Calls `op` with ever smaller remainders of `len` bytes until all are
/// done, within ONE deadline for the whole call (Python's `sendall` since
/// 3.5; also `read_exact`). `op` returns how many bytes it handled, 0 for
/// end of file. It is for streams: a read short of the rest is taken for
/// drained, as in [`retry_read`].
///
/// # Errors
///
/// `eof` if `op` returns 0 before `len` bytes are done; otherwise as
/// [`retry`], including `TimedOut` when the one deadline passes part-way
/// (the bytes already handled are then lost to the caller, as in Python).
pub(crate) fn retry_all<S>(
    handle: &Handle<S>,
    direction: Direction,
    deadline: Deadline,
    len: usize,
    eof: fn() -> io::Error,
    mut op: impl FnMut(&S, usize) -> io::Result<usize>,
) -> io::Result<()>
where
    S: AsRawFd + Send + Sync + 'static,
{
    let mut done = 0;
    while done < len {
        // A stream read short of the rest emptied the receive queue.
        let drained = |&n: &usize| direction == Direction::Read && n > 0 && n < len - done;
        match retry_noting(handle, direction, deadline, |sock| op(sock, done), drained)? {
            0 => return Err(eof()),
            n => done += n,
        }
    }
    Ok(())
}
