//! The hierarchical timer wheel.

/// A key to a timer in a [`Wheel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerKey {
    index: u32,
    generation: u32,
}

/// A hierarchical hashed timer wheel.
#[derive(Debug)]
pub struct Wheel<T> {
    _p: Vec<T>,
}

impl<T> Default for Wheel<T> {
    fn default() -> Self {
        Wheel::new()
    }
}

impl<T> Wheel<T> {
    /// An empty wheel at tick 0.
    pub fn new() -> Wheel<T> {
        Wheel::with_elapsed(0)
    }
    /// An empty wheel that starts at tick `now`.
    pub fn with_elapsed(now: u64) -> Wheel<T> {
        let _ = now;
        todo!()
    }
    /// The tick the wheel has advanced to.
    pub fn elapsed(&self) -> u64 {
        todo!()
    }
    /// Number of resident timers.
    pub fn len(&self) -> usize {
        todo!()
    }
    /// Whether no timer is resident.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Adds a timer that fires at tick `when`.
    pub fn insert(&mut self, when: u64, value: T) -> TimerKey {
        let _ = (when, value);
        todo!()
    }
    /// Removes a timer.
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        let _ = key;
        todo!()
    }
    /// Moves a timer.
    pub fn reset(&mut self, key: TimerKey, when: u64) -> bool {
        let _ = (key, when);
        todo!()
    }
    /// The tick at which a timer fires.
    pub fn deadline(&self, key: TimerKey) -> Option<u64> {
        let _ = key;
        todo!()
    }
    /// The value of a timer.
    pub fn get(&self, key: TimerKey) -> Option<&T> {
        let _ = key;
        todo!()
    }
    /// The value of a timer.
    pub fn get_mut(&mut self, key: TimerKey) -> Option<&mut T> {
        let _ = key;
        todo!()
    }
    /// The earliest tick at which [`advance`](Wheel::advance) has work to do.
    pub fn next_expiration(&self) -> Option<u64> {
        todo!()
    }
    /// Fires every timer due at `now`.
    pub fn advance(&mut self, now: u64, fired: &mut Vec<(TimerKey, T)>) {
        let _ = (now, fired);
        todo!()
    }
}
