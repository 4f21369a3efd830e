//! Hooks for tests: how to know that a call is really waiting rather than
//! sleeping and hoping, a way into the spare reactor without running out
//! of descriptors, a panic injected where a bug would panic, a failed
//! registration without exhausting the kernel's, and a stall of the spare
//! reactor's thread at the worst moment. Built only
//! with the `testing` feature; not part of the crate's API.

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::Selectable;

/// How many calls are waiting on `sock` right now: they are between
/// deciding to wait and being woken.
pub fn waiters(sock: &dyn Selectable) -> usize {
    sock.select_handle().io().source().waiting()
}

/// Waits until at least `n` calls wait on `sock`; false if that does not
/// happen within `limit`.
pub fn wait_for_waiters(sock: &dyn Selectable, n: usize, limit: Duration) -> bool {
    let start = Instant::now();
    while waiters(sock) < n {
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// How many reactors `sock` is registered in: those of the threads that
/// waited on it and have not left it to another, and the spare one.
pub fn reactors(sock: &dyn Selectable) -> usize {
    sock.select_handle().io().source().reactors()
}

thread_local! {
    static USE_SPARE: Cell<bool> = const { Cell::new(false) };
}

/// Makes this thread's waits use the process's spare reactor, as a thread
/// that could not have a reactor of its own does.
pub fn use_spare_reactor(on: bool) {
    USE_SPARE.with(|cell| cell.set(on));
}

pub(crate) fn uses_spare() -> bool {
    USE_SPARE.try_with(Cell::get).unwrap_or(false)
}

/// Makes the next dispatch about `sock` panic, as a broken invariant
/// would: the readiness event in this thread's reactor, or the filing of a
/// wait in the spare reactor.
pub fn panic_in_dispatch(sock: &dyn Selectable) {
    sock.select_handle()
        .io()
        .source()
        .panic_next
        .store(true, Ordering::Release);
}

/// Whether a panic asked for by [`panic_in_dispatch`] on `sock` is still
/// to come (false once it has been raised).
pub fn panic_pending(sock: &dyn Selectable) -> bool {
    sock.select_handle()
        .io()
        .source()
        .panic_next
        .load(Ordering::Acquire)
}

/// Makes the next `n` registrations of `sock` in a reactor fail with
/// `ENOSPC`, as `epoll_ctl` does once a user has `max_user_watches` of them:
/// the first in the waiting thread's reactor, the second (if `n` is 2) in
/// the spare one.
pub fn fail_registrations(sock: &dyn Selectable, n: usize) {
    sock.select_handle()
        .io()
        .source()
        .failing_registrations
        .store(n, Ordering::Release);
}

/// Makes the spare reactor's thread stall for `by` right after it next
/// files a wait on `sock` (after registering it and arming the deadline's
/// timer, before polling), as a thread the scheduler holds up would.
pub fn stall_spare_after_filing(sock: &dyn Selectable, by: Duration) {
    sock.select_handle().io().source().stall_after_filing.store(
        u64::try_from(by.as_micros()).unwrap_or(u64::MAX),
        Ordering::Release,
    );
}
