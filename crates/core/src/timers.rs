//! The reactor's user timers: their values, their intervals, and ids that
//! never name another timer.
//!
//! A timer's wheel entry holds only its index here (so that a wheel node
//! stays 32 bytes, see `timer::wheel`); the value and, for an interval, its
//! period live in this arena. Each slot has a generation, bumped when its
//! timer ends; a [`TimerId`] carries the generation it was issued with. A
//! slot whose generation reaches `u32::MAX` is retired instead of reused, so
//! an id, however old, never matches a later timer: the same scheme as the
//! wheel's keys.

use std::time::{Duration, Instant};

use crate::timer::TimerKey;

/// Names a timer started on a [`Reactor`](crate::Reactor).
///
/// A stale id (of a timer that fired or was cancelled) never touches
/// another timer, however many timers came after it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ontime_core::{Handler, Reactor};
///
/// struct Idle;
/// impl Handler for Idle {
///     type State = ();
///     type Timer = &'static str;
///     type Message = ();
/// }
///
/// # fn main() -> std::io::Result<()> {
/// let mut reactor: Reactor<Idle> = Reactor::new()?;
/// let id = reactor.timer_after(Duration::from_secs(60), "minute");
/// assert!(reactor.cancel_timer(id));
/// let next = reactor.timer_after(Duration::from_secs(60), "next");
/// assert!(!reactor.cancel_timer(id), "stale: touches nothing");
/// assert!(reactor.timer_deadline(next).is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: u32,
    generation: u32,
}

/// One user timer.
#[derive(Debug)]
pub(crate) struct UserTimer<T> {
    /// Its wheel entry.
    pub(crate) key: TimerKey,
    /// `None` while the handler holds it (an interval firing).
    pub(crate) value: Option<T>,
    /// For an interval: its period and current deadline. Boxed: intervals
    /// are few, and one-shot timers stay small.
    pub(crate) interval: Option<Box<Interval>>,
}

#[derive(Debug)]
pub(crate) struct Interval {
    pub(crate) period: Duration,
    /// The instant it is due, for the next deadline to follow from it.
    pub(crate) deadline: Instant,
}

#[derive(Debug)]
enum Slot<T> {
    Live {
        timer: UserTimer<T>,
        /// Invariant: an id `{index, generation}` names this timer iff this
        /// equals its generation.
        generation: u32,
    },
    Vacant {
        /// The generation the next timer here gets.
        generation: u32,
        /// The next vacant slot, or `NIL`.
        next_free: u32,
    },
    /// Generation exhausted: never used again.
    Retired,
}

const NIL: u32 = u32::MAX;

/// The arena of user timers.
#[derive(Debug)]
pub(crate) struct Timers<T> {
    slots: Vec<Slot<T>>,
    free: u32,
    len: usize,
}

impl<T> Timers<T> {
    pub(crate) fn new() -> Timers<T> {
        Timers {
            slots: Vec::new(),
            free: NIL,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The index the next [`insert`](Timers::insert) uses: the wheel entry
    /// is made first, with it.
    ///
    /// # Panics
    ///
    /// If `u32::MAX` timers are pending at once (hundreds of GiB of them).
    pub(crate) fn next_index(&self) -> u32 {
        if self.free != NIL {
            return self.free;
        }
        let index = self.slots.len();
        assert!(
            index < NIL as usize,
            "more than {} timers pending at once",
            NIL - 1
        );
        index as u32
    }

    /// Stores a timer at [`next_index`](Timers::next_index).
    pub(crate) fn insert(&mut self, timer: UserTimer<T>) -> TimerId {
        let index = self.next_index();
        let generation = match self.slots.get(index as usize) {
            Some(&Slot::Vacant {
                generation,
                next_free,
            }) => {
                self.free = next_free;
                generation
            }
            Some(_) => unreachable!("free timer slot {index} is in use"),
            None => {
                self.slots.push(Slot::Retired);
                0
            }
        };
        self.slots[index as usize] = Slot::Live { timer, generation };
        self.len += 1;
        TimerId { index, generation }
    }

    /// The timer `id` names, if it is live.
    pub(crate) fn get_mut(&mut self, id: TimerId) -> Option<&mut UserTimer<T>> {
        match self.slots.get_mut(id.index as usize)? {
            Slot::Live { timer, generation } if *generation == id.generation => Some(timer),
            _ => None,
        }
    }

    pub(crate) fn get(&self, id: TimerId) -> Option<&UserTimer<T>> {
        match self.slots.get(id.index as usize)? {
            Slot::Live { timer, generation } if *generation == id.generation => Some(timer),
            _ => None,
        }
    }

    /// The live timer at `index` whose wheel entry is `key`, with its id:
    /// how a wheel expiry finds its timer.
    pub(crate) fn by_key(
        &mut self,
        index: u32,
        key: TimerKey,
    ) -> Option<(TimerId, &mut UserTimer<T>)> {
        match self.slots.get_mut(index as usize)? {
            Slot::Live { timer, generation } if timer.key == key => Some((
                TimerId {
                    index,
                    generation: *generation,
                },
                timer,
            )),
            _ => None,
        }
    }

    /// Ends the timer `id` names and returns it; its slot's generation moves
    /// on, so `id` goes stale.
    pub(crate) fn remove(&mut self, id: TimerId) -> Option<UserTimer<T>> {
        self.get(id)?;
        let next = id.generation.wrapping_add(1);
        let freed = if next == u32::MAX {
            Slot::Retired
        } else {
            Slot::Vacant {
                generation: next,
                next_free: self.free,
            }
        };
        if next != u32::MAX {
            self.free = id.index;
        }
        self.len -= 1;
        match std::mem::replace(&mut self.slots[id.index as usize], freed) {
            Slot::Live { timer, .. } => Some(timer),
            _ => unreachable!("timer {id:?} was live"),
        }
    }

    /// Ages a vacant slot as if `by` timers had come and gone in it.
    #[cfg(test)]
    pub(crate) fn age(&mut self, index: u32, by: u32) {
        match &mut self.slots[index as usize] {
            Slot::Vacant { generation, .. } => {
                *generation = generation.saturating_add(by).min(u32::MAX - 1)
            }
            _ => panic!("slot {index} is not vacant"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timer::Wheel;

    fn timer(wheel: &mut Wheel<()>, value: u32) -> UserTimer<u32> {
        UserTimer {
            key: wheel.insert(1, ()),
            value: Some(value),
            interval: None,
        }
    }

    #[test]
    fn a_stale_id_never_names_a_later_timer() {
        let mut wheel = Wheel::new();
        let mut timers = Timers::new();
        let first = timers.insert(timer(&mut wheel, 1));
        assert!(timers.remove(first).is_some());
        // As if four billion timers had used the slot since: the slot is
        // about to come back round to the first id's generation.
        timers.age(first.index, u32::MAX);
        let mut ids = Vec::new();
        for value in 0..3 {
            let id = timers.insert(timer(&mut wheel, value));
            ids.push(id);
            assert!(timers.get(first).is_none(), "{first:?} names {id:?}");
            timers.remove(id);
        }
        // The slot retired rather than wrapped: new timers go elsewhere.
        assert!(ids.iter().skip(1).all(|id| id.index != first.index));
        for id in &ids {
            assert!(timers.get(*id).is_none());
        }
        let fresh = timers.insert(timer(&mut wheel, 9));
        assert_ne!(fresh.index, first.index);
        assert!(timers.remove(first).is_none());
        assert_eq!(timers.len(), 1);
    }

    /// A regression guard: with the wheel's 32-byte node, a reactor timer
    /// with an 8-byte value costs 72 bytes.
    #[test]
    fn a_slot_is_40_bytes_for_an_8_byte_value() {
        assert_eq!(std::mem::size_of::<Slot<u64>>(), 40);
        assert_eq!(std::mem::size_of::<Slot<std::sync::Arc<u8>>>(), 32);
    }

    #[test]
    fn slots_are_reused_with_a_new_generation() {
        let mut wheel = Wheel::new();
        let mut timers = Timers::new();
        let a = timers.insert(timer(&mut wheel, 1));
        timers.remove(a);
        let b = timers.insert(timer(&mut wheel, 2));
        assert_eq!(a.index, b.index);
        assert_ne!(a, b);
        assert!(timers.get(a).is_none());
        assert_eq!(timers.get(b).unwrap().value, Some(2));
    }
}
