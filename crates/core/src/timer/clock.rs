//! Conversion between `Instant` and wheel ticks.
//!
//! Tick `n` is the instant `origin + n * tick`. Deadlines round *up* to a
//! tick and the current time rounds *down*, so a timer filed at
//! `deadline_to_tick(d)` and fired once `now_tick(now)` has reached that tick
//! never fires early: `ceil((d - origin) / tick) <= floor((now - origin) /
//! tick)` implies `d <= now`. This holds for every `now` at or after `origin`
//! and every deadline less than 2^64 ticks after it (about 584 million years
//! at 1 ms). Only a deadline beyond that saturates to `u64::MAX` and may fire
//! once `now` is beyond it too.
//!
//! All arithmetic is done in `u128` nanoseconds, which holds any
//! [`Duration`] and any product of a tick count and a tick length that the
//! code forms without overflow.

use std::time::{Duration, Instant};

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Maps [`Instant`]s to wheel ticks and back.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use ontime_core::timer::Clock;
///
/// let origin = Instant::now();
/// let clock = Clock::with_origin(origin, Duration::from_millis(1));
///
/// // A deadline half way through tick 2 is filed at tick 3...
/// let deadline = origin + Duration::from_micros(2_500);
/// assert_eq!(clock.deadline_to_tick(deadline), 3);
/// // ...which is reached only once 3 ms have fully passed.
/// assert_eq!(clock.now_tick(origin + Duration::from_micros(2_999)), 2);
/// assert_eq!(clock.now_tick(origin + Duration::from_millis(3)), 3);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The instant of tick 0.
    origin: Instant,
    /// Invariant: not zero.
    tick: Duration,
}

impl Clock {
    /// A clock whose tick 0 is now.
    ///
    /// # Panics
    ///
    /// Panics if `tick` is zero.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use ontime_core::timer::Clock;
    ///
    /// let clock = Clock::new(Duration::from_millis(1));
    /// assert!(clock.now_tick(Instant::now()) < 1_000);
    /// ```
    pub fn new(tick: Duration) -> Clock {
        Clock::with_origin(Instant::now(), tick)
    }

    /// A clock whose tick 0 is `origin`.
    ///
    /// # Panics
    ///
    /// Panics if `tick` is zero.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use ontime_core::timer::Clock;
    ///
    /// let origin = Instant::now();
    /// let clock = Clock::with_origin(origin, Duration::from_millis(10));
    /// assert_eq!(clock.tick_to_instant(3), Some(origin + Duration::from_millis(30)));
    /// ```
    pub fn with_origin(origin: Instant, tick: Duration) -> Clock {
        assert!(!tick.is_zero(), "Clock tick must not be zero");
        Clock { origin, tick }
    }

    /// The length of one tick.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ontime_core::timer::Clock;
    ///
    /// let clock = Clock::new(Duration::from_millis(1));
    /// assert_eq!(clock.tick(), Duration::from_millis(1));
    /// ```
    pub fn tick(&self) -> Duration {
        self.tick
    }

    /// The first tick at or after `deadline`: `ceil((deadline - origin) /
    /// tick)`. A deadline before the origin gives 0; one more than
    /// `u64::MAX` ticks away gives `u64::MAX`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use ontime_core::timer::Clock;
    ///
    /// let origin = Instant::now();
    /// let clock = Clock::with_origin(origin, Duration::from_millis(1));
    /// assert_eq!(clock.deadline_to_tick(origin), 0);
    /// assert_eq!(clock.deadline_to_tick(origin + Duration::from_nanos(1)), 1);
    /// assert_eq!(clock.deadline_to_tick(origin + Duration::from_millis(1)), 1);
    /// ```
    pub fn deadline_to_tick(&self, deadline: Instant) -> u64 {
        let Some(since) = deadline.checked_duration_since(self.origin) else {
            return 0;
        };
        let ticks = since.as_nanos().div_ceil(self.tick.as_nanos());
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }

    /// The last tick that has fully passed at `now`: `floor((now - origin) /
    /// tick)`. An instant before the origin gives 0; one more than
    /// `u64::MAX` ticks away gives `u64::MAX`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use ontime_core::timer::Clock;
    ///
    /// let origin = Instant::now();
    /// let clock = Clock::with_origin(origin, Duration::from_millis(1));
    /// assert_eq!(clock.now_tick(origin + Duration::from_micros(999)), 0);
    /// assert_eq!(clock.now_tick(origin + Duration::from_millis(1)), 1);
    /// ```
    pub fn now_tick(&self, now: Instant) -> u64 {
        let Some(since) = now.checked_duration_since(self.origin) else {
            return 0;
        };
        let ticks = since.as_nanos() / self.tick.as_nanos();
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }

    /// The instant at which `tick` begins, `origin + tick * self.tick()`, or
    /// `None` if that is not representable as an [`Instant`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use ontime_core::timer::Clock;
    ///
    /// let origin = Instant::now();
    /// let clock = Clock::with_origin(origin, Duration::from_millis(1));
    /// assert_eq!(clock.tick_to_instant(0), Some(origin));
    /// assert_eq!(clock.tick_to_instant(2), Some(origin + Duration::from_millis(2)));
    /// let long = Clock::with_origin(origin, Duration::MAX);
    /// assert_eq!(long.tick_to_instant(u64::MAX), None);
    /// ```
    pub fn tick_to_instant(&self, tick: u64) -> Option<Instant> {
        let nanos = self.tick.as_nanos().checked_mul(u128::from(tick))?;
        let secs = u64::try_from(nanos / NANOS_PER_SEC).ok()?;
        // The remainder is below 10^9 and fits a u32.
        let sub = (nanos % NANOS_PER_SEC) as u32;
        self.origin.checked_add(Duration::new(secs, sub))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(n: u64) -> Duration {
        Duration::from_nanos(n)
    }

    /// A clock whose origin has room before it.
    fn clock(tick: Duration) -> (Clock, Instant) {
        let origin = Instant::now() + Duration::from_secs(3600);
        (Clock::with_origin(origin, tick), origin)
    }

    #[test]
    fn rounding_table() {
        let ms = Duration::from_millis(1);
        // (tick, offset from origin, deadline_to_tick (up), now_tick (down))
        let table: &[(Duration, Duration, u64, u64)] = &[
            (ms, ns(0), 0, 0),
            (ms, ns(1), 1, 0),
            (ms, ns(999_999), 1, 0),
            (ms, ms, 1, 1),
            (ms, ns(1_000_001), 2, 1),
            (ms, ms * 63, 63, 63),
            (ms, ms * 64 - ns(1), 64, 63),
            (ms, ms * 64, 64, 64),
            (ms, ms * 64 + ns(1), 65, 64),
            (ns(1), ns(12_345), 12_345, 12_345),
            (ns(3), ns(7), 3, 2),
            (ns(3), ns(9), 3, 3),
            (Duration::from_secs(1), Duration::from_secs(10), 10, 10),
            (
                Duration::from_secs(1),
                Duration::from_millis(10_001),
                11,
                10,
            ),
            (Duration::MAX, ns(1), 1, 0),
        ];
        for &(tick, offset, up, down) in table {
            let (clock, origin) = clock(tick);
            let at = origin + offset;
            assert_eq!(clock.deadline_to_tick(at), up, "{tick:?} {offset:?}");
            assert_eq!(clock.now_tick(at), down, "{tick:?} {offset:?}");
        }
    }

    #[test]
    fn before_origin_is_tick_zero() {
        let (clock, origin) = clock(Duration::from_millis(1));
        for back in [ns(1), Duration::from_millis(5), Duration::from_secs(60)] {
            assert_eq!(clock.deadline_to_tick(origin - back), 0);
            assert_eq!(clock.now_tick(origin - back), 0);
        }
    }

    #[test]
    fn saturates_at_u64_max() {
        let (clock, origin) = clock(ns(1));
        // u64::MAX nanoseconds are about 584 years.
        let max = origin + ns(u64::MAX);
        assert_eq!(clock.deadline_to_tick(max), u64::MAX);
        assert_eq!(clock.now_tick(max), u64::MAX);
        assert_eq!(clock.now_tick(max - ns(1)), u64::MAX - 1);
        if let Some(beyond) = max.checked_add(Duration::from_secs(1_000 * 365 * 86_400)) {
            assert_eq!(clock.deadline_to_tick(beyond), u64::MAX);
            assert_eq!(clock.now_tick(beyond), u64::MAX);
        }
        assert_eq!(clock.tick_to_instant(u64::MAX), Some(max));
    }

    #[test]
    fn tick_to_instant_table() {
        let ms = Duration::from_millis(1);
        let (clock, origin) = clock(ms);
        for n in [0, 1, 63, 64, 4096, 1 << 36] {
            let at = clock.tick_to_instant(n).unwrap();
            assert_eq!(at, origin + Duration::from_millis(n), "{n}");
            // A tick's start maps back to the same tick, both ways.
            assert_eq!(clock.now_tick(at), n);
            assert_eq!(clock.deadline_to_tick(at), n);
        }
        // Overflow of the multiplication, then of the instant.
        assert_eq!(
            Clock::with_origin(origin, Duration::MAX).tick_to_instant(u64::MAX),
            None
        );
        assert_eq!(
            Clock::with_origin(origin, Duration::MAX).tick_to_instant(2),
            None
        );
        // u64::MAX seconds do not fit an `Instant` (i64 seconds on Unix).
        let second = Clock::with_origin(origin, Duration::from_secs(1));
        assert_eq!(second.tick_to_instant(u64::MAX), None);
    }

    #[test]
    #[should_panic(expected = "tick must not be zero")]
    fn zero_tick_panics() {
        let _ = Clock::new(Duration::ZERO);
    }

    /// The property the wheel relies on: a timer filed at
    /// `deadline_to_tick(d)` and fired once `now_tick(now)` reaches it never
    /// fires before `d`.
    #[test]
    fn never_early() {
        for tick in [
            ns(1),
            ns(3),
            ns(999),
            Duration::from_millis(1),
            Duration::from_millis(7),
        ] {
            let (clock, origin) = clock(tick);
            for d in (0..2_000u64).map(|i| i * 7_919 % 30_000_000) {
                let deadline = origin + ns(d);
                let filed = clock.deadline_to_tick(deadline);
                // The first `now` (in ns steps near the boundary) at which
                // the timer fires is not before the deadline, and is less
                // than one tick after it.
                let fire_at = clock.tick_to_instant(filed).unwrap();
                assert!(clock.now_tick(fire_at) >= filed);
                assert!(fire_at >= deadline, "{tick:?} {d}");
                assert!(fire_at - deadline < tick, "{tick:?} {d}");
                if let Some(just_before) = fire_at.checked_sub(ns(1)) {
                    if just_before >= origin {
                        assert!(clock.now_tick(just_before) < filed, "{tick:?} {d}");
                    }
                }
            }
        }
    }
}
