//! Conversion between `Instant` and wheel ticks.

use std::time::{Duration, Instant};

/// Maps [`Instant`]s to wheel ticks and back.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    tick: Duration,
}

impl Clock {
    /// A clock whose tick 0 is now.
    pub fn new(tick: Duration) -> Clock {
        Clock::with_origin(Instant::now(), tick)
    }
    /// A clock whose tick 0 is `origin`.
    pub fn with_origin(origin: Instant, tick: Duration) -> Clock {
        let _ = (origin, tick);
        todo!()
    }
    /// The length of one tick.
    pub fn tick(&self) -> Duration {
        todo!()
    }
    /// The tick at or after `deadline` (rounds up, saturating).
    pub fn deadline_to_tick(&self, deadline: Instant) -> u64 {
        let _ = deadline;
        todo!()
    }
    /// The last tick that has fully passed at `now` (rounds down).
    pub fn now_tick(&self, now: Instant) -> u64 {
        let _ = now;
        todo!()
    }
    /// The instant at which `tick` begins, or `None` if not representable.
    pub fn tick_to_instant(&self, tick: u64) -> Option<Instant> {
        let _ = tick;
        todo!()
    }
}
