//! [`Mode`], the per-socket mode cell, and the process-wide default timeout.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The three modes of a socket, as in Python's `socket` module.
///
/// | mode | a call that cannot finish now | Python |
/// |---|---|---|
/// | `Blocking` | waits as long as it takes | `settimeout(None)` |
/// | `NonBlocking` | fails at once with `WouldBlock` | `settimeout(0)` / `setblocking(False)` |
/// | `Timeout(d)` | waits at most `d`, then fails with `TimedOut` | `settimeout(d)` |
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ontime_sync::Mode;
///
/// assert_eq!(Mode::from_timeout(None), Mode::Blocking);
/// assert_eq!(Mode::from_timeout(Some(Duration::ZERO)), Mode::NonBlocking);
/// let five = Duration::from_secs(5);
/// assert_eq!(Mode::from_timeout(Some(five)), Mode::Timeout(five));
/// assert_eq!(Mode::Timeout(five).timeout(), Some(five));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Calls wait until they can complete.
    Blocking,
    /// Calls fail with [`WouldBlock`](io::ErrorKind::WouldBlock) instead of waiting.
    NonBlocking,
    /// Calls wait at most this long, then fail with
    /// [`TimedOut`](io::ErrorKind::TimedOut). A zero timeout set through
    /// [`set_mode`](crate::TcpStream::set_mode) is stored as `NonBlocking`,
    /// as `set_timeout(Some(Duration::ZERO))` is (R1).
    Timeout(Duration),
}

impl Mode {
    /// The mode Python's `settimeout(timeout)` gives (rule R1): `None` is
    /// blocking, zero is non-blocking, anything else is timeout mode.
    pub fn from_timeout(timeout: Option<Duration>) -> Mode {
        match timeout {
            None => Mode::Blocking,
            Some(d) if d.is_zero() => Mode::NonBlocking,
            Some(d) => Mode::Timeout(d),
        }
    }

    /// The timeout Python's `gettimeout()` would return: `None` when
    /// blocking, zero when non-blocking.
    pub fn timeout(self) -> Option<Duration> {
        match self {
            Mode::Blocking => None,
            Mode::NonBlocking => Some(Duration::ZERO),
            Mode::Timeout(d) => Some(d),
        }
    }

    /// The deadline of a call that starts now in this mode (rule R3: computed
    /// once, at entry).
    pub(crate) fn deadline(self) -> Deadline {
        match self {
            Mode::Blocking => Deadline::Never,
            Mode::NonBlocking => Deadline::Now,
            // A timeout too long to add to now waits as if blocking.
            Mode::Timeout(d) => Instant::now()
                .checked_add(d)
                .map_or(Deadline::Never, Deadline::At),
        }
    }

    /// Encodes the mode in a `u64`: `u64::MAX` is blocking, 0 non-blocking,
    /// anything else a timeout in nanoseconds.
    fn encode(self) -> u64 {
        match self {
            Mode::Blocking => BLOCKING,
            // A zero timeout is non-blocking mode, whichever way it was set (R1).
            Mode::NonBlocking => 0,
            Mode::Timeout(d) if d.is_zero() => 0,
            // Saturates at MAX_NANOS (about 584 years): such a timeout waits
            // as if blocking either way.
            Mode::Timeout(d) => u64::try_from(d.as_nanos())
                .unwrap_or(MAX_NANOS)
                .clamp(1, MAX_NANOS),
        }
    }

    fn decode(bits: u64) -> Mode {
        match bits {
            BLOCKING => Mode::Blocking,
            0 => Mode::NonBlocking,
            nanos => Mode::Timeout(Duration::from_nanos(nanos)),
        }
    }
}

const BLOCKING: u64 = u64::MAX;
const MAX_NANOS: u64 = u64::MAX - 1;

/// When a call gives up waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Deadline {
    /// Non-blocking: never wait.
    Now,
    /// Timeout mode: wait until this instant.
    At(Instant),
    /// Blocking: wait as long as it takes.
    Never,
}

/// A socket's mode, readable and settable through `&self` from any thread.
///
/// A mode longer than about 584 years is stored as 584 years: it waits as if
/// blocking, and [`timeout`](crate::TcpStream::timeout) reports 584 years.
#[derive(Debug)]
pub(crate) struct ModeCell(AtomicU64);

impl ModeCell {
    pub(crate) fn new(mode: Mode) -> ModeCell {
        ModeCell(AtomicU64::new(mode.encode()))
    }

    pub(crate) fn get(&self) -> Mode {
        Mode::decode(self.0.load(Ordering::Relaxed))
    }

    pub(crate) fn set(&self, mode: Mode) {
        self.0.store(mode.encode(), Ordering::Relaxed);
    }
}

/// The process-wide default timeout, encoded as in [`Mode::encode`].
static DEFAULT: AtomicU64 = AtomicU64::new(BLOCKING);

/// Sets the timeout that new sockets start with, as Python's
/// `socket.setdefaulttimeout` (rule R7).
///
/// It applies to sockets created afterwards (by `connect`, `bind`, `accept`
/// and conversions from std's types), not to existing ones. `None`, the
/// initial value, makes new sockets blocking; zero makes them non-blocking.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// ontime_sync::set_default_timeout(Some(Duration::from_secs(10)));
/// assert_eq!(ontime_sync::default_timeout(), Some(Duration::from_secs(10)));
/// ontime_sync::set_default_timeout(None);
/// ```
pub fn set_default_timeout(timeout: Option<Duration>) {
    DEFAULT.store(Mode::from_timeout(timeout).encode(), Ordering::Relaxed);
}

/// The timeout new sockets start with: see [`set_default_timeout`].
pub fn default_timeout() -> Option<Duration> {
    default_mode().timeout()
}

/// The mode new sockets start with.
pub(crate) fn default_mode() -> Mode {
    Mode::decode(DEFAULT.load(Ordering::Relaxed))
}

/// The error of a call in timeout mode whose deadline passed (rule R2): kind
/// `TimedOut`, no OS error, message "timed out".
pub(crate) fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "timed out")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip_through_the_cell() {
        let table = [
            Mode::Blocking,
            Mode::NonBlocking,
            Mode::Timeout(Duration::from_nanos(1)),
            Mode::Timeout(Duration::from_millis(300)),
            Mode::Timeout(Duration::from_secs(1 << 30)),
        ];
        for mode in table {
            let cell = ModeCell::new(Mode::Blocking);
            cell.set(mode);
            assert_eq!(cell.get(), mode);
        }
    }

    #[test]
    fn zero_timeout_mode_is_non_blocking() {
        let cell = ModeCell::new(Mode::Timeout(Duration::ZERO));
        assert_eq!(cell.get(), Mode::NonBlocking);
    }

    /// "Saturates": a timeout of `MAX_NANOS` nanoseconds or more is stored as
    /// exactly `MAX_NANOS`, never as the blocking code `u64::MAX` (which
    /// `Duration::from_nanos(u64::MAX)` would encode to unclamped) and never
    /// wrapped, whether set at creation or later; one nanosecond below the
    /// limit is kept as it is. "Waits as blocking": the saturated mode's
    /// deadline is `MAX_NANOS` (about 584 years) after the call's entry, or
    /// `Never` where `Instant` cannot hold that instant; a timeout too long
    /// to add to now at all, such as `Duration::MAX` unstored, is `Never`.
    #[test]
    fn huge_timeout_saturates_and_waits_as_blocking() {
        let limit = Duration::from_nanos(MAX_NANOS);
        let saturated = Mode::Timeout(limit);
        let below = Duration::from_nanos(MAX_NANOS - 1);
        let table = [
            (below, Mode::Timeout(below)),
            (limit, saturated),
            (Duration::from_nanos(u64::MAX), saturated),
            (
                Duration::from_nanos(u64::MAX) + Duration::from_nanos(1),
                saturated,
            ),
            (Duration::from_secs(u64::MAX), saturated),
            (Duration::MAX, saturated),
        ];
        for (timeout, stored) in table {
            let mode = Mode::Timeout(timeout);
            assert_eq!(ModeCell::new(mode).get(), stored, "new({timeout:?})");
            let cell = ModeCell::new(Mode::NonBlocking);
            cell.set(mode);
            assert_eq!(cell.get(), stored, "set({timeout:?})");
            assert_eq!(cell.get().timeout(), stored.timeout(), "{timeout:?}");
        }

        let before = Instant::now();
        let deadline = ModeCell::new(Mode::Timeout(Duration::MAX)).get().deadline();
        let after = Instant::now();
        match (deadline, before.checked_add(limit)) {
            (Deadline::At(at), Some(earliest)) => {
                let latest = after.checked_add(limit);
                assert!(
                    at >= earliest && latest.is_none_or(|latest| at <= latest),
                    "deadline {at:?} is not {limit:?} after entry (between {before:?} and {after:?})"
                );
            }
            (Deadline::Never, None) => {}
            (deadline, earliest) => panic!(
                "a saturated timeout's deadline is {deadline:?}; now + {limit:?} is {earliest:?}"
            ),
        }
        assert_eq!(Mode::Timeout(Duration::MAX).deadline(), Deadline::Never);
    }

    #[test]
    fn from_timeout_follows_python() {
        assert_eq!(Mode::from_timeout(None), Mode::Blocking);
        assert_eq!(Mode::from_timeout(Some(Duration::ZERO)), Mode::NonBlocking);
        let ns = Duration::from_nanos(1);
        assert_eq!(Mode::from_timeout(Some(ns)), Mode::Timeout(ns));
        for mode in [Mode::Blocking, Mode::NonBlocking, Mode::Timeout(ns)] {
            assert_eq!(Mode::from_timeout(mode.timeout()), mode);
        }
    }
}
