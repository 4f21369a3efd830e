//! Timers: a hierarchical timer wheel that counts in ticks, and the clock that
//! maps [`Instant`](std::time::Instant)s to ticks.
//!
//! The [`Wheel`] never reads the clock: callers advance it with a tick number.
//! That keeps it deterministic (tests drive it with a virtual clock) and lets
//! the [`Reactor`](crate::Reactor) decide when time moves. [`Clock`] does the
//! conversion, rounding deadlines *up* so that a timer can never fire early.

mod clock;
mod level;
mod wheel;

pub use clock::Clock;
pub use wheel::{TimerKey, Wheel};
