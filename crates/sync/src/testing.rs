//! Hooks for tests: how to know that a call is really waiting, rather than
//! sleeping and hoping. Built only with the `testing` feature; not part of
//! the crate's API.

use std::time::{Duration, Instant};

use crate::Selectable;

/// How many calls are waiting on `sock` right now: they tried, found the
/// socket not ready, and are between filing their wait and being woken.
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
