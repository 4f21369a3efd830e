//! The hierarchical timer wheel.
//!
//! # Design
//!
//! This is scheme 7 of G. Varghese and T. Lauck, "Hashed and Hierarchical
//! Timing Wheels: Data Structures for the Efficient Implementation of a Timer
//! Facility" (SOSP 1987; IEEE/ACM Transactions on Networking 5(6), 1997): a
//! tick number is read as base-64 digits, and a timer is filed at the level of
//! the highest digit in which its deadline differs from the wheel's current
//! tick, in the slot named by that digit of the deadline. When the wheel
//! reaches a slot, the slot's timers are either due (they fire) or are
//! re-filed ("cascaded") into a strictly lower level, where the next digit
//! decides. Six levels of 64 slots span 2^36 ticks; a deadline further away
//! waits on a *far* list that is re-filed each time the wheel enters a new
//! 2^36-tick epoch, and a deadline that has already passed goes on a *due*
//! list that the next [`Wheel::advance`] fires.
//!
//! Each level keeps a `u64` bitmap of its non-empty slots, so the next slot
//! with work is found with a rotate and a `trailing_zeros` per level and empty
//! slots are never visited.
//!
//! Timers live in one arena (`Vec<Node<T>>`) owned by the wheel. Each slot is
//! an intrusive doubly-linked list threaded through the arena by `u32`
//! indices, so insert, cancel and reset are O(1) and allocate nothing once the
//! arena has grown. Vacant nodes form a free list. A node carries a
//! generation that is bumped each time it is freed; a [`TimerKey`] holds the
//! generation it was issued with, so a stale key never reaches a newer timer
//! that reuses its node.
//!
//! A node is 32 bytes for a value of up to 8 bytes: whether it is vacant is
//! kept in a niche of its location field rather than in an `Option` around
//! the value. Two nodes then share each 64-byte cache line, and the random
//! access that dominates cancel at a million timers touches fewer lines.
//!
//! The wheel works purely in `u64` ticks and never reads a clock; see
//! [`Clock`](super::Clock) for the mapping to [`Instant`](std::time::Instant).

use std::fmt;
use std::mem;
use std::num::NonZeroU16;

use super::level::{self, Level, LEVELS, NIL, SLOTS, SPAN_BITS};

/// Ticks in one epoch, the range that the levels cover: 64^6 = 2^36, about
/// 2.2 years at a 1 ms tick.
const EPOCH: u64 = 1 << SPAN_BITS;

/// Location of a timer on the due list. Values below it encode
/// `level * 64 + slot`.
const LOC_DUE: u16 = (LEVELS * SLOTS) as u16;
/// Location of a timer on the far list.
const LOC_FAR: u16 = LOC_DUE + 1;

/// A key to a timer in a [`Wheel`].
///
/// Returned by [`Wheel::insert`] and handed back by [`Wheel::advance`] with
/// the value of each timer that fired. A key stays valid until its timer
/// fires or is cancelled; after that every operation with it is a no-op
/// (`None` or `false`), even once the wheel reuses the timer's storage.
///
/// # Examples
///
/// ```
/// use ontime_core::timer::Wheel;
///
/// let mut wheel = Wheel::new();
/// let key = wheel.insert(10, "ten");
/// assert_eq!(wheel.cancel(key), Some("ten"));
/// // The key is stale now, even after its storage is reused.
/// let other = wheel.insert(20, "twenty");
/// assert_eq!(wheel.cancel(key), None);
/// assert_eq!(wheel.get(other), Some(&"twenty"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerKey {
    index: u32,
    generation: u32,
}

/// One arena entry: a resident timer, or a vacant node on the free list.
///
/// 32 bytes for `T = u64`: rustc stores the variant in the niche of
/// [`Loc`], so vacancy costs no space of its own.
enum Node<T> {
    Resident(Timer<T>),
    Vacant {
        /// As in [`Timer::generation`].
        generation: u32,
        /// The next vacant node of the free list, or `NIL`.
        next_free: u32,
    },
}

/// A resident timer and its links.
struct Timer<T> {
    /// The exact deadline tick.
    when: u64,
    value: T,
    /// Previous node of the same list, or `NIL` for the list head.
    prev: u32,
    /// Next node of the same list, or `NIL`.
    next: u32,
    /// Bumped on every free, kept while vacant.
    ///
    /// Invariant: a key `{index, generation}` designates this node iff the
    /// node is resident and `generation` equals this field. Never wraps: a
    /// node whose generation reaches `u32::MAX` is retired when freed.
    generation: u32,
    /// The list holding the timer.
    loc: Loc,
}

/// The list holding a timer: `level * 64 + slot`, [`LOC_DUE`] or
/// [`LOC_FAR`], stored plus one so that zero is free for [`Node`]'s variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc(NonZeroU16);

impl Loc {
    #[inline]
    fn new(loc: u16) -> Loc {
        debug_assert!(loc <= LOC_FAR, "location {loc} out of range");
        Loc(NonZeroU16::MIN.saturating_add(loc))
    }

    #[inline]
    fn get(self) -> u16 {
        self.0.get() - 1
    }
}

/// A hierarchical hashed timer wheel (Varghese & Lauck) of 6 levels x 64
/// slots, counting in `u64` ticks.
///
/// Insert, cancel and reset are O(1), and
/// [`next_expiration`](Wheel::next_expiration) is O(levels).
/// [`advance`](Wheel::advance) costs O(levels) per non-empty slot it reaches
/// plus O(1) per timer there; a timer moves down at most once per level
/// (timers more than 2^36 ticks ahead are looked at again each time the wheel
/// enters a new 2^36-tick epoch). The wheel never reads a clock: the caller
/// says what tick it is. Any `u64` deadline is accepted, from a tick already
/// passed (fires on the next `advance`) to `u64::MAX`, and a timer never
/// fires before its deadline.
///
/// Memory: one 32-byte node per timer for a `T` of up to 8 bytes (`u64`, a
/// token), in an arena that grows like a `Vec` and is reused after cancel or
/// fire, plus about 1.6 KiB of slot heads.
///
/// # Examples
///
/// ```
/// use ontime_core::timer::Wheel;
///
/// let mut wheel = Wheel::new();
/// let a = wheel.insert(5, 'a');
/// let _b = wheel.insert(70, 'b');
///
/// let mut fired = Vec::new();
/// wheel.advance(4, &mut fired);
/// assert!(fired.is_empty());
///
/// wheel.advance(70, &mut fired);
/// let mut values: Vec<char> = fired.iter().map(|&(_, v)| v).collect();
/// values.sort();
/// assert_eq!(values, ['a', 'b']);
/// assert_eq!(fired.iter().find(|&&(_, v)| v == 'a').unwrap().0, a);
/// assert!(wheel.is_empty());
/// ```
pub struct Wheel<T> {
    /// The tick the wheel has advanced to.
    ///
    /// Invariant: never decreases. Every timer in slot `s` of level `l` has a
    /// `when` that agrees with `elapsed` in all digits above `l` and whose
    /// digit `l` is `s`, with `s` greater than digit `l` of `elapsed`; so
    /// `elapsed < when` and the slot starts after `elapsed`.
    elapsed: u64,
    /// The six levels, finest first.
    levels: [Level; LEVELS],
    /// Head of the list of timers whose deadline has passed.
    ///
    /// Invariant: every timer on it has `when <= elapsed`.
    due: u32,
    /// Head of the list of timers beyond the levels' span.
    ///
    /// Invariant: every timer on it has `when` in a later 2^36-tick epoch
    /// than `elapsed` (`when >> 36 > elapsed >> 36`), hence `when > elapsed`.
    far: u32,
    /// The arena. Indices are `u32`, `NIL` excluded.
    nodes: Vec<Node<T>>,
    /// Head of the free list of vacant nodes, threaded through `next`.
    free: u32,
    /// Invariant: the number of resident nodes.
    len: usize,
}

/// The slot that [`Wheel::advance`] must visit next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NextSlot {
    /// A slot of one of the levels.
    Level {
        level: usize,
        slot: usize,
        start: u64,
    },
    /// The far list, due at the next epoch boundary `start`.
    Far { start: u64 },
}

impl NextSlot {
    fn start(self) -> u64 {
        match self {
            NextSlot::Level { start, .. } | NextSlot::Far { start } => start,
        }
    }
}

impl<T> Default for Wheel<T> {
    fn default() -> Self {
        Wheel::new()
    }
}

impl<T> fmt::Debug for Wheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wheel")
            .field("elapsed", &self.elapsed)
            .field("len", &self.len)
            .field("capacity", &self.nodes.capacity())
            .field("next_expiration", &self.next_expiration())
            .finish_non_exhaustive()
    }
}

impl<T> Wheel<T> {
    /// An empty wheel at tick 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::timer::Wheel;
    ///
    /// let wheel: Wheel<()> = Wheel::new();
    /// assert_eq!(wheel.elapsed(), 0);
    /// assert!(wheel.is_empty());
    /// ```
    pub fn new() -> Wheel<T> {
        Wheel::with_elapsed(0)
    }

    /// An empty wheel that starts at tick `now`.
    ///
    /// Any `now` is allowed, `u64::MAX` included; there, every timer is due at
    /// once.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::timer::Wheel;
    ///
    /// let mut wheel = Wheel::with_elapsed(1_000);
    /// assert_eq!(wheel.elapsed(), 1_000);
    /// wheel.insert(1_001, ());
    /// assert_eq!(wheel.next_expiration(), Some(1_001));
    /// ```
    pub fn with_elapsed(now: u64) -> Wheel<T> {
        const EMPTY: Level = Level::new();
        Wheel {
            elapsed: now,
            levels: [EMPTY; LEVELS],
            due: NIL,
            far: NIL,
            nodes: Vec::new(),
            free: NIL,
            len: 0,
        }
    }

    /// The tick the wheel has advanced to.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::timer::Wheel;
    ///
    /// let mut wheel: Wheel<()> = Wheel::new();
    /// wheel.advance(42, &mut Vec::new());
    /// assert_eq!(wheel.elapsed(), 42);
    /// ```
    pub fn elapsed(&self) -> u64 {
        self.elapsed
    }

    /// Number of resident timers.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::timer::Wheel;
    ///
    /// let mut wheel = Wheel::new();
    /// let key = wheel.insert(3, ());
    /// assert_eq!(wheel.len(), 1);
    /// wheel.cancel(key);
    /// assert_eq!(wheel.len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no timer is resident.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::timer::Wheel;
    ///
    /// let mut wheel = Wheel::new();
    /// assert!(wheel.is_empty());
    /// wheel.insert(3, ());
    /// assert!(!wheel.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of timers the arena holds without reallocating.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::timer::Wheel;
    ///
    /// let mut wheel: Wheel<u64> = Wheel::new();
    /// wheel.reserve(100);
    /// assert!(wheel.capacity() >= 100);
    /// ```
    pub fn capacity(&self) -> usize {
        self.nodes.capacity()
    }

    /// Reserves arena room for at least `additional` more timers than are
    /// resident now, so that inserting them does not reallocate.
    ///
    /// # Panics
    ///
    /// Panics if the new capacity overflows `usize` or the allocation fails,
    /// like [`Vec::reserve`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::timer::Wheel;
    ///
    /// let mut wheel: Wheel<u64> = Wheel::new();
    /// wheel.reserve(1_000);
    /// let capacity = wheel.capacity();
    /// for i in 0..1_000 {
    ///     wheel.insert(i, i);
    /// }
    /// assert_eq!(wheel.capacity(), capacity);
    /// ```
    pub fn reserve(&mut self, additional: usize) {
        // Vacant nodes on the free list are reused before the arena grows.
        let vacant = self.nodes.len() - self.len;
        self.nodes.reserve(additional.saturating_sub(vacant));
    }

    /// Bytes of heap the wheel holds for its arena: capacity times the size
    /// of one node. The slot heads (about 1.6 KiB) live inline in the
    /// `Wheel` itself.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::timer::Wheel;
    ///
    /// let mut wheel: Wheel<u64> = Wheel::new();
    /// wheel.reserve(1_000);
    /// assert!(wheel.heap_bytes() <= wheel.capacity() * 40);
    /// ```
    pub fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * mem::size_of::<Node<T>>()
    }

    /// Adds a timer that fires at tick `when`, in O(1).
    ///
    /// A `when` at or before [`elapsed`](Wheel::elapsed) is due at once: the
    /// next [`advance`](Wheel::advance) fires it, whatever tick it is given.
    ///
    /// # Panics
    ///
    /// Panics if the arena would exceed `u32::MAX` nodes (that many timers
    /// take 160 GiB for `T = u64`), or if growing the arena fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::timer::Wheel;
    ///
    /// let mut wheel = Wheel::with_elapsed(100);
    /// let key = wheel.insert(150, "later");
    /// assert_eq!(wheel.deadline(key), Some(150));
    ///
    /// // Already passed: due now.
    /// wheel.insert(90, "late");
    /// assert_eq!(wheel.next_expiration(), Some(100));
    /// ```
    pub fn insert(&mut self, when: u64, value: T) -> TimerKey {
        let loc = self.locate(when);
        // The node is written with its links in place, rather than written
        // and then linked: insert is the hottest path of all.
        let head = self.head(loc);
        let key = self.alloc(when, value, loc, head);
        self.push_front(key.index, loc, head);
        self.len += 1;
        key
    }

    /// Removes a timer in O(1) and returns its value, or `None` if `key` is
    /// stale (the timer fired or was cancelled).
    ///
    /// The timer's node is freed at once for reuse.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::timer::Wheel;
    ///
    /// let mut wheel = Wheel::new();
    /// let key = wheel.insert(10, 'x');
    /// assert_eq!(wheel.cancel(key), Some('x'));
    /// assert_eq!(wheel.cancel(key), None);
    /// ```
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        let index = self.resolve(key)?;
        self.unlink(index);
        self.len -= 1;
        Some(self.release(index))
    }

    /// Moves a timer to fire at tick `when` instead, in O(1), keeping its
    /// key. Returns `false` (and does nothing) if `key` is stale.
    ///
    /// As with [`insert`](Wheel::insert), a `when` at or before
    /// [`elapsed`](Wheel::elapsed) makes the timer due at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::timer::Wheel;
    ///
    /// let mut wheel = Wheel::new();
    /// let key = wheel.insert(10, ());
    /// assert!(wheel.reset(key, 500));
    /// assert_eq!(wheel.deadline(key), Some(500));
    ///
    /// let mut fired = Vec::new();
    /// wheel.advance(499, &mut fired);
    /// assert!(fired.is_empty());
    /// wheel.advance(500, &mut fired);
    /// assert_eq!(fired, [(key, ())]);
    /// assert!(!wheel.reset(key, 600));
    /// ```
    pub fn reset(&mut self, key: TimerKey, when: u64) -> bool {
        let Some(index) = self.resolve(key) else {
            return false;
        };
        let loc = self.locate(when);
        let timer = self.timer_mut(index);
        timer.when = when;
        // Same list: the node may stay where it is.
        if timer.loc.get() != loc {
            self.unlink(index);
            self.link(index, loc);
        }
        true
    }

    /// The tick at which a timer fires, exactly as last set, or `None` if
    /// `key` is stale.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::timer::Wheel;
    ///
    /// let mut wheel = Wheel::new();
    /// let key = wheel.insert(u64::MAX, ());
    /// assert_eq!(wheel.deadline(key), Some(u64::MAX));
    /// ```
    pub fn deadline(&self, key: TimerKey) -> Option<u64> {
        let index = self.resolve(key)?;
        Some(self.timer(index).when)
    }

    /// The value of a timer, or `None` if `key` is stale.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::timer::Wheel;
    ///
    /// let mut wheel = Wheel::new();
    /// let key = wheel.insert(1, "one");
    /// assert_eq!(wheel.get(key), Some(&"one"));
    /// ```
    pub fn get(&self, key: TimerKey) -> Option<&T> {
        let index = self.resolve(key)?;
        Some(&self.timer(index).value)
    }

    /// The value of a timer, mutably, or `None` if `key` is stale.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::timer::Wheel;
    ///
    /// let mut wheel = Wheel::new();
    /// let key = wheel.insert(1, 10);
    /// *wheel.get_mut(key).unwrap() += 1;
    /// assert_eq!(wheel.get(key), Some(&11));
    /// ```
    pub fn get_mut(&mut self, key: TimerKey) -> Option<&mut T> {
        let index = self.resolve(key)?;
        Some(&mut self.timer_mut(index).value)
    }

    /// The earliest tick at which [`advance`](Wheel::advance) has work to do,
    /// or `None` if the wheel is empty. O(levels).
    ///
    /// This is [`elapsed`](Wheel::elapsed) if a timer is due already;
    /// otherwise the first tick of the earliest non-empty slot, which may be
    /// a point where timers only move to a lower level: it is never later
    /// than the earliest deadline, and may be earlier. A caller sleeps until
    /// this tick, advances, and asks again.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::timer::Wheel;
    ///
    /// let mut wheel = Wheel::new();
    /// assert_eq!(wheel.next_expiration(), None);
    /// wheel.insert(10, ());
    /// assert_eq!(wheel.next_expiration(), Some(10));
    ///
    /// // 100 lives at level 1 in the slot starting at 64.
    /// let mut wheel = Wheel::new();
    /// wheel.insert(100, ());
    /// assert_eq!(wheel.next_expiration(), Some(64));
    /// ```
    pub fn next_expiration(&self) -> Option<u64> {
        if self.due != NIL {
            return Some(self.elapsed);
        }
        self.next_slot().map(NextSlot::start)
    }

    /// Moves the wheel to tick `now` and fires every timer whose deadline is
    /// at or before it, appending `(key, value)` pairs to `fired`.
    ///
    /// `fired` is not cleared; reusing one buffer across calls keeps
    /// `advance` free of allocation. A `now` before
    /// [`elapsed`](Wheel::elapsed) is taken as `elapsed` (time does not run
    /// backwards): only timers already due fire. A timer never fires before
    /// its deadline and fires exactly once, whether the wheel is advanced one
    /// tick at a time or in one step to `u64::MAX`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::timer::Wheel;
    ///
    /// let mut wheel = Wheel::new();
    /// for when in [1, 100, 10_000, 1 << 40] {
    ///     wheel.insert(when, when);
    /// }
    /// let mut fired = Vec::new();
    /// wheel.advance(10_000, &mut fired);
    /// let mut whens: Vec<u64> = fired.iter().map(|&(_, when)| when).collect();
    /// whens.sort();
    /// assert_eq!(whens, [1, 100, 10_000]);
    ///
    /// fired.clear();
    /// wheel.advance(u64::MAX, &mut fired);
    /// assert_eq!(fired.len(), 1);
    /// assert_eq!(fired[0].1, 1 << 40);
    /// ```
    pub fn advance(&mut self, now: u64, fired: &mut Vec<(TimerKey, T)>) {
        let mut cur = mem::replace(&mut self.due, NIL);
        while cur != NIL {
            let next = self.timer(cur).next;
            debug_assert!(
                self.timer(cur).when <= self.elapsed,
                "due timer {cur} at {} after elapsed {}",
                self.timer(cur).when,
                self.elapsed
            );
            self.fire(cur, fired);
            cur = next;
        }
        if now <= self.elapsed {
            // Every slot starts after `elapsed`: nothing else can be due.
            return;
        }

        while let Some(next) = self.next_slot() {
            if next.start() > now {
                break;
            }
            let head = match next {
                NextSlot::Level { level, slot, start } => {
                    debug_assert!(
                        start > self.elapsed,
                        "slot {slot} of level {level} starts at {start}, not after elapsed {}",
                        self.elapsed
                    );
                    self.elapsed = start;
                    self.levels[level].take(slot)
                }
                NextSlot::Far { start } => {
                    // The levels are empty (the far list comes last), so
                    // skipping whole epochs that hold nothing is safe: jump to
                    // the epoch of `now` rather than re-filing the far list
                    // once per epoch on the way.
                    debug_assert!(
                        self.levels.iter().all(Level::is_empty),
                        "far list visited before the levels emptied"
                    );
                    self.elapsed = start.max(now & !(EPOCH - 1));
                    mem::replace(&mut self.far, NIL)
                }
            };
            self.refile(head, next, now, fired);
        }
        self.elapsed = now;
    }

    /// Fires or re-files every node of a detached list that was filed at
    /// `from`, with `elapsed` already set to the slot's start.
    fn refile(&mut self, mut cur: u32, from: NextSlot, now: u64, fired: &mut Vec<(TimerKey, T)>) {
        while cur != NIL {
            let timer = self.timer(cur);
            let (next, when) = (timer.next, timer.when);
            if let NextSlot::Level { level, start, .. } = from {
                debug_assert!(
                    when >= start && when - start < 1 << (level::SLOT_BITS * (level as u32 + 1)),
                    "timer {cur} at {when} filed in level {level} slot starting at {start}"
                );
            }
            if when <= now {
                self.fire(cur, fired);
            } else {
                let loc = self.locate(when);
                debug_assert!(
                    match from {
                        NextSlot::Level { level, .. } => (loc as usize) < level * SLOTS,
                        NextSlot::Far { .. } => loc != LOC_DUE,
                    },
                    "timer {cur} at {when} re-filed from {from:?} to location {loc}"
                );
                self.link(cur, loc);
            }
            cur = next;
        }
    }

    /// The earliest slot (or the far list) holding timers, due list aside.
    fn next_slot(&self) -> Option<NextSlot> {
        // Slots of a lower level all start before any slot of a higher level
        // (they lie within the current block of the higher level), so the
        // first non-empty level has the earliest slot.
        for (level, lvl) in self.levels.iter().enumerate() {
            let digit = level::slot_of(self.elapsed, level);
            if let Some(slot) = lvl.next_occupied(digit) {
                debug_assert!(
                    slot > digit,
                    "level {level} slot {slot} occupied at or before digit {digit} of elapsed {}",
                    self.elapsed
                );
                let start = level::slot_start(self.elapsed, level, slot);
                return Some(NextSlot::Level { level, slot, start });
            }
        }
        if self.far == NIL {
            return None;
        }
        let start = self.epoch_end();
        debug_assert!(
            start.is_some(),
            "far list non-empty in the last epoch, elapsed {}",
            self.elapsed
        );
        start.map(|start| NextSlot::Far { start })
    }

    /// The first tick of the epoch after the one `elapsed` is in, or `None`
    /// in the last epoch.
    fn epoch_end(&self) -> Option<u64> {
        (self.elapsed | (EPOCH - 1)).checked_add(1)
    }

    /// Where a timer due at `when` belongs now.
    #[inline]
    fn locate(&self, when: u64) -> u16 {
        if when <= self.elapsed {
            return LOC_DUE;
        }
        match level::level_for(self.elapsed, when) {
            Some(level) => (level * SLOTS + level::slot_of(when, level)) as u16,
            None => LOC_FAR,
        }
    }

    /// The index behind a live key.
    #[inline(always)]
    fn resolve(&self, key: TimerKey) -> Option<u32> {
        match self.nodes.get(key.index as usize)? {
            Node::Resident(timer) if timer.generation == key.generation => Some(key.index),
            _ => None,
        }
    }

    /// The resident timer at `index`.
    ///
    /// # Panics
    ///
    /// If the node is vacant, which would be a broken invariant: callers
    /// only pass indices from a resolved key or from a list.
    #[inline(always)]
    fn timer(&self, index: u32) -> &Timer<T> {
        match &self.nodes[index as usize] {
            Node::Resident(timer) => timer,
            Node::Vacant { .. } => vacant(index),
        }
    }

    /// [`timer`](Wheel::timer), mutably.
    #[inline(always)]
    fn timer_mut(&mut self, index: u32) -> &mut Timer<T> {
        match &mut self.nodes[index as usize] {
            Node::Resident(timer) => timer,
            Node::Vacant { .. } => vacant(index),
        }
    }

    /// Takes a vacant node (or grows the arena) for a new timer filed at
    /// `loc` in front of `next`, and returns its key. The list itself is not
    /// updated yet: see [`push_front`](Wheel::push_front).
    #[inline]
    fn alloc(&mut self, when: u64, value: T, loc: u16, next: u32) -> TimerKey {
        let index = self.free;
        if index == NIL {
            let index = self.nodes.len();
            assert!(
                index < NIL as usize,
                "timer wheel full: {index} nodes in the arena"
            );
            self.nodes.push(Node::Vacant {
                generation: 0,
                next_free: NIL,
            });
            return self.occupy(index as u32, 0, when, value, loc, next);
        }
        let Node::Vacant {
            generation,
            next_free,
        } = self.nodes[index as usize]
        else {
            resident(index)
        };
        self.free = next_free;
        self.occupy(index, generation, when, value, loc, next)
    }

    /// Makes the vacant node at `index`, already off the free list, resident.
    #[inline(always)]
    fn occupy(
        &mut self,
        index: u32,
        generation: u32,
        when: u64,
        value: T,
        loc: u16,
        next: u32,
    ) -> TimerKey {
        self.nodes[index as usize] = Node::Resident(Timer {
            when,
            value,
            prev: NIL,
            next,
            generation,
            loc: Loc::new(loc),
        });
        TimerKey { index, generation }
    }

    /// Frees an unlinked node, returning its value. The generation moves on so
    /// that keys to it go stale; a node whose generation is exhausted is
    /// retired instead of reused.
    #[inline(always)]
    fn release(&mut self, index: u32) -> T {
        // A node whose generation reaches the last value is retired, so no
        // key is ever issued with generation u32::MAX.
        let generation = self.timer(index).generation + 1;
        let reuse = generation < u32::MAX;
        let freed = Node::Vacant {
            generation,
            next_free: if reuse { self.free } else { NIL },
        };
        if reuse {
            self.free = index;
        }
        match mem::replace(&mut self.nodes[index as usize], freed) {
            Node::Resident(timer) => timer.value,
            Node::Vacant { .. } => vacant(index),
        }
    }

    /// Unlinks and frees a node and reports it as fired.
    fn fire(&mut self, index: u32, fired: &mut Vec<(TimerKey, T)>) {
        let generation = self.timer(index).generation;
        let value = self.release(index);
        self.len -= 1;
        fired.push((TimerKey { index, generation }, value));
    }

    #[inline]
    fn head(&self, loc: u16) -> u32 {
        match loc {
            LOC_DUE => self.due,
            LOC_FAR => self.far,
            _ => {
                let loc = loc as usize;
                self.levels[loc / SLOTS].head(loc % SLOTS)
            }
        }
    }

    #[inline]
    fn set_head(&mut self, loc: u16, index: u32) {
        match loc {
            LOC_DUE => self.due = index,
            LOC_FAR => self.far = index,
            _ => {
                let loc = loc as usize;
                self.levels[loc / SLOTS].set_head(loc % SLOTS, index);
            }
        }
    }

    /// Pushes a node on the front of the list at `loc`.
    #[inline(always)]
    fn link(&mut self, index: u32, loc: u16) {
        debug_assert!(
            loc == self.locate(self.timer(index).when),
            "timer {index} at {} linked at {loc}, elapsed {}",
            self.timer(index).when,
            self.elapsed
        );
        let head = self.head(loc);
        let timer = self.timer_mut(index);
        timer.prev = NIL;
        timer.next = head;
        timer.loc = Loc::new(loc);
        self.push_front(index, loc, head);
    }

    /// Makes `index`, whose own links already say `prev = NIL, next = head`,
    /// the new head of the list at `loc`.
    #[inline(always)]
    fn push_front(&mut self, index: u32, loc: u16, head: u32) {
        debug_assert_eq!(self.head(loc), head, "list {loc} head moved");
        if head != NIL {
            self.timer_mut(head).prev = index;
        }
        self.set_head(loc, index);
    }

    /// Takes a node out of its list, clearing the slot's bit if it empties.
    #[inline(always)]
    fn unlink(&mut self, index: u32) {
        let timer = self.timer(index);
        let (prev, next, loc) = (timer.prev, timer.next, timer.loc.get());
        if prev == NIL {
            debug_assert_eq!(
                self.head(loc),
                index,
                "node {index} without prev is not a head"
            );
            self.set_head(loc, next);
        } else {
            self.timer_mut(prev).next = next;
        }
        if next != NIL {
            self.timer_mut(next).prev = prev;
        }
    }

    /// Walks every list and checks the invariants documented on the fields.
    #[cfg(test)]
    fn check_invariants(&self) {
        let mut seen = vec![false; self.nodes.len()];
        let mut resident = 0;
        let mut walk = |loc: u16, head: u32| {
            let mut prev = NIL;
            let mut cur = head;
            while cur != NIL {
                let Node::Resident(timer) = &self.nodes[cur as usize] else {
                    panic!("node {cur} linked but vacant");
                };
                assert!(!seen[cur as usize], "node {cur} on two lists");
                seen[cur as usize] = true;
                assert_eq!(timer.prev, prev, "node {cur} prev link");
                assert_eq!(timer.loc.get(), loc, "node {cur} location");
                assert_eq!(
                    self.locate(timer.when),
                    loc,
                    "node {cur} at {} misfiled",
                    timer.when
                );
                resident += 1;
                prev = cur;
                cur = timer.next;
            }
        };
        walk(LOC_DUE, self.due);
        walk(LOC_FAR, self.far);
        for (l, lvl) in self.levels.iter().enumerate() {
            for s in 0..SLOTS {
                let head = lvl.head(s);
                assert_eq!(
                    lvl.occupied() & (1 << s) != 0,
                    head != NIL,
                    "bitmap of level {l} slot {s}"
                );
                walk((l * SLOTS + s) as u16, head);
            }
        }
        assert_eq!(resident, self.len, "len");
        let mut cur = self.free;
        while cur != NIL {
            let Node::Vacant { next_free, .. } = self.nodes[cur as usize] else {
                panic!("free node {cur} resident");
            };
            assert!(!seen[cur as usize], "free node {cur} also linked");
            seen[cur as usize] = true;
            cur = next_free;
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if !seen[i] {
                assert!(
                    matches!(
                        node,
                        Node::Vacant {
                            generation: u32::MAX,
                            ..
                        }
                    ),
                    "node {i} lost"
                );
            }
        }
    }
}

/// A broken invariant: the node at `index` was expected to be resident.
/// Out of line, so that the accessors stay small enough to inline.
#[cold]
#[inline(never)]
fn vacant(index: u32) -> ! {
    unreachable!("node {index} is vacant")
}

/// A broken invariant: the free list holds a resident node.
#[cold]
#[inline(never)]
fn resident(index: u32) -> ! {
    unreachable!("free list node {index} is resident")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    const E: u64 = EPOCH;

    #[test]
    fn node_is_32_bytes_for_8_byte_values() {
        assert_eq!(mem::size_of::<Node<u64>>(), 32);
        assert_eq!(mem::size_of::<Node<u32>>(), 32);
        assert_eq!(mem::size_of::<Node<()>>(), 24);
    }

    /// Advances through `steps` and returns the first `now` at which the
    /// single timer of `wheel` fired, checking it fires once and never early.
    fn fire_tick(wheel: &mut Wheel<u64>, when: u64, steps: impl IntoIterator<Item = u64>) -> u64 {
        let mut fired = Vec::new();
        let mut at = None;
        for now in steps {
            wheel.advance(now, &mut fired);
            wheel.check_invariants();
            if let Some(next) = wheel.next_expiration() {
                assert!(
                    next <= when.max(wheel.elapsed()),
                    "next {next} after {when}"
                );
            }
            if !fired.is_empty() {
                assert_eq!(fired.len(), 1);
                assert_eq!(fired[0].1, when);
                assert!(when <= now, "fired at {now}, early for {when}");
                assert!(at.is_none(), "fired twice");
                at = Some(now);
                fired.clear();
            }
        }
        at.expect("timer lost")
    }

    /// Starts and offsets of a table: (start, when) pairs around every level
    /// edge and the far end of the span, from several starting points.
    fn boundary_cases() -> Vec<(u64, u64)> {
        let mut starts = vec![0, 1, 63, 64, 4095, 4096, E - 3, E, E + 1, u64::MAX - E - 5];
        for epochs in [2, 3, 7, 1 << 20, (1 << 28) - 1] {
            starts.push(epochs * E - 3);
        }
        let mut offsets = vec![];
        for bits in (6..=36).step_by(6) {
            let edge = 1u64 << bits;
            offsets.extend([edge - 1, edge, edge + 1]);
        }
        offsets.extend([1, 2, 62, 63, 64, 65, 2 * E, 2 * E + 1, 5 * E - 1]);
        let mut cases = vec![];
        for &start in &starts {
            for &offset in &offsets {
                if let Some(when) = start.checked_add(offset) {
                    cases.push((start, when));
                }
                // Deadlines on absolute edges too, not only relative ones.
                let absolute = (start | (offset - 1)).checked_add(1);
                if let Some(when) = absolute.filter(|&w| w > start) {
                    cases.push((start, when));
                }
            }
        }
        for start in [u64::MAX - 3, u64::MAX - 1] {
            cases.push((start, u64::MAX));
            cases.push((start, start + 1));
        }
        cases
    }

    #[test]
    fn boundaries_fire_exactly_at_when_in_one_step() {
        for (start, when) in boundary_cases() {
            let mut wheel = Wheel::with_elapsed(start);
            wheel.insert(when, when);
            wheel.check_invariants();
            let at = fire_tick(&mut wheel, when, [when - 1, when]);
            assert_eq!(at, when, "start {start}");
            // One big step past the deadline.
            let mut wheel = Wheel::with_elapsed(start);
            wheel.insert(when, when);
            let at = fire_tick(&mut wheel, when, [u64::MAX]);
            assert_eq!(at, u64::MAX, "start {start} when {when}");
        }
    }

    #[test]
    fn boundaries_fire_exactly_at_when_following_next_expiration() {
        for (start, when) in boundary_cases() {
            if when - start > 8 * E {
                continue; // One step per epoch: too many epochs.
            }
            let mut wheel = Wheel::with_elapsed(start);
            wheel.insert(when, when);
            let mut steps = vec![];
            let mut fired = Vec::new();
            while let Some(next) = wheel.next_expiration() {
                assert!(next <= when, "start {start}: next {next} after {when}");
                assert!(
                    next > wheel.elapsed(),
                    "start {start}: next {next} not ahead"
                );
                // Stop one tick short of each cascade point first.
                wheel.advance(next - 1, &mut fired);
                assert!(fired.is_empty());
                wheel.advance(next, &mut fired);
                wheel.check_invariants();
                steps.push(next);
                assert!(
                    steps.len() <= 2 * LEVELS + 16,
                    "start {start} when {when}: {steps:?}"
                );
            }
            assert_eq!(fired.len(), 1, "start {start} when {when}");
            assert_eq!(steps.last(), Some(&when), "start {start}");
        }
    }

    #[test]
    fn small_steps_across_level_and_epoch_edges() {
        // (start, when, stride)
        let table: &[(u64, u64, u64)] = &[
            (0, 63, 1),
            (0, 64, 1),
            (0, 65, 1),
            (60, 4096, 1),
            (4000, 4097, 1),
            (E - 3, E - 1, 1),
            (E - 3, E, 1),
            (E - 3, E + 1, 1),
            (E - 3, E + 64, 1),
            (E - 3, E + 4097, 1),
            (E - 100, 2 * E + 3, 1 << 20),
            (3 * E - 3, 3 * E + 2, 1),
            (5 * E - 3, 7 * E + 99, 1 << 24),
            (u64::MAX - 200, u64::MAX, 1),
            (u64::MAX - 5 * E, u64::MAX, 1 << 30),
        ];
        for &(start, when, stride) in table {
            let mut wheel = Wheel::with_elapsed(start);
            wheel.insert(when, when);
            let mut steps = vec![];
            let mut now = start;
            while now < when {
                now = now.saturating_add(stride);
                steps.push(now);
            }
            let at = fire_tick(&mut wheel, when, steps);
            assert!(
                at >= when && at - when < stride,
                "start {start} when {when}: at {at}"
            );
            if stride == 1 {
                assert_eq!(at, when);
            }
        }
    }

    #[test]
    fn far_list_refiled_and_fired_at_when() {
        // Several far timers in different epochs, stepping through epoch
        // edges in small steps around them and in one big step.
        let whens = [E, E + 1, 2 * E - 1, 2 * E, 2 * E + 4096, 5 * E + 7];
        let mut wheel = Wheel::with_elapsed(E - 3);
        for &when in &whens {
            wheel.insert(when, when);
        }
        assert_eq!(wheel.next_expiration(), Some(E));
        let mut fired = Vec::new();
        for &when in &whens {
            for now in when - 2..=when {
                wheel.advance(now, &mut fired);
                wheel.check_invariants();
                if now < when {
                    assert!(fired.is_empty(), "{when} early at {now}");
                }
            }
            assert_eq!(fired.len(), 1, "{when}");
            assert_eq!(fired.pop().unwrap().1, when);
        }
        assert!(wheel.is_empty());

        let mut wheel = Wheel::with_elapsed(E - 3);
        for &when in &whens {
            wheel.insert(when, when);
        }
        wheel.advance(5 * E + 6, &mut fired);
        assert_eq!(fired.len(), whens.len() - 1);
        assert_eq!(wheel.next_expiration(), Some(5 * E + 7));
        fired.clear();
        wheel.advance(5 * E + 7, &mut fired);
        assert_eq!(fired.len(), 1);
    }

    #[test]
    fn due_now_inserts() {
        let mut wheel = Wheel::with_elapsed(1_000);
        let at = wheel.insert(1_000, 1);
        let before = wheel.insert(3, 2);
        let zero = wheel.insert(0, 3);
        let later = wheel.insert(1_001, 4);
        assert_eq!(wheel.next_expiration(), Some(1_000));
        wheel.check_invariants();
        let mut fired = Vec::new();
        // Even a `now` in the past fires what is already due, and only that.
        wheel.advance(10, &mut fired);
        assert_eq!(wheel.elapsed(), 1_000);
        let keys: BTreeSet<_> = fired.iter().map(|&(k, v)| (v, k.index)).collect();
        assert_eq!(
            keys,
            [(1, at.index), (2, before.index), (3, zero.index)].into()
        );
        assert_eq!(wheel.next_expiration(), Some(1_001));
        fired.clear();
        wheel.advance(1_001, &mut fired);
        assert_eq!(fired, [(later, 4)]);

        let mut wheel = Wheel::with_elapsed(u64::MAX);
        let key = wheel.insert(u64::MAX, 9);
        assert_eq!(wheel.next_expiration(), Some(u64::MAX));
        let mut fired = Vec::new();
        wheel.advance(u64::MAX, &mut fired);
        assert_eq!(fired, [(key, 9)]);
        assert_eq!(wheel.next_expiration(), None);
    }

    #[test]
    fn reset_earlier_later_same_slot() {
        // (initial, reset to, elapsed when resetting)
        let table: &[(u64, u64)] = &[
            (100, 101),       // Same slot (level 1, slot 1): fast path.
            (100, 100),       // Same deadline.
            (100, 5),         // Earlier, lower level.
            (100, 5_000),     // Later, higher level.
            (100, 0),         // Due now.
            (100, E + 5),     // To the far list.
            (E + 5, E + 6),   // Far to far.
            (E + 5, 70),      // Far to a level.
            (0, 0),           // Due to due.
            (0, 64),          // Due to a level.
            (u64::MAX, 4095), // Far end to a level edge.
        ];
        for &(first, second) in table {
            let mut wheel = Wheel::new();
            let other = wheel.insert(first, 0);
            let key = wheel.insert(first, 1);
            assert!(wheel.reset(key, second));
            wheel.check_invariants();
            assert_eq!(wheel.deadline(key), Some(second));
            let mut fired = Vec::new();
            let mut last = 0;
            for now in [second.saturating_sub(1), second, first] {
                wheel.advance(now, &mut fired);
                for &(k, v) in &fired {
                    let when = if v == 1 { second } else { first };
                    assert!(
                        when <= now.max(last),
                        "{first}->{second}: {v} early at {now}"
                    );
                    if v == 1 {
                        assert_eq!(k, key);
                    } else {
                        assert_eq!(k, other);
                    }
                }
                last = wheel.elapsed();
            }
            let mut values: Vec<_> = fired.iter().map(|&(_, v)| v).collect();
            values.sort();
            assert_eq!(values, [0, 1], "{first}->{second}");
            assert!(!wheel.reset(key, 1), "reset of a fired timer");
        }
    }

    #[test]
    fn stale_keys_never_reach_a_reused_node() {
        let mut wheel = Wheel::new();
        let old = wheel.insert(10, 'a');
        assert_eq!(wheel.cancel(old), Some('a'));
        let new = wheel.insert(20, 'b');
        assert_eq!(new.index, old.index, "node reused");
        assert_ne!(new.generation, old.generation);
        assert_eq!(wheel.cancel(old), None);
        assert!(!wheel.reset(old, 5));
        assert_eq!(wheel.get(old), None);
        assert_eq!(wheel.get_mut(old), None);
        assert_eq!(wheel.deadline(old), None);
        assert_eq!(wheel.deadline(new), Some(20));

        // A fired key is stale too.
        let mut fired = Vec::new();
        wheel.advance(20, &mut fired);
        assert_eq!(fired, [(new, 'b')]);
        let newer = wheel.insert(30, 'c');
        assert_eq!(newer.index, new.index);
        assert_eq!(wheel.cancel(new), None);
        assert_eq!(wheel.get(newer), Some(&'c'));

        // Out-of-range index.
        let bogus = TimerKey {
            index: 99,
            generation: 0,
        };
        assert_eq!(wheel.cancel(bogus), None);
    }

    #[test]
    fn exhausted_generation_retires_the_node() {
        let mut wheel = Wheel::new();
        let key = wheel.insert(1, ());
        wheel.timer_mut(key.index).generation = u32::MAX - 1;
        let key = TimerKey {
            index: key.index,
            generation: u32::MAX - 1,
        };
        wheel.cancel(key);
        // Freeing at generation u32::MAX - 1 retires the node: no key is
        // ever issued at generation u32::MAX.
        assert!(matches!(
            wheel.nodes[key.index as usize],
            Node::Vacant {
                generation: u32::MAX,
                next_free: NIL
            }
        ));
        let fresh = wheel.insert(1, ());
        assert_ne!(fresh.index, key.index, "retired node reused");
        assert_eq!(wheel.cancel(key), None);
        wheel.check_invariants();
    }

    #[test]
    fn cancel_clears_the_occupied_bit() {
        let mut wheel = Wheel::new();
        let a = wheel.insert(100, ());
        let b = wheel.insert(101, ());
        assert_eq!(wheel.levels[1].occupied(), 1 << 1);
        wheel.cancel(a);
        assert_eq!(wheel.levels[1].occupied(), 1 << 1);
        wheel.cancel(b);
        assert_eq!(wheel.levels[1].occupied(), 0);
        assert_eq!(wheel.next_expiration(), None);
        wheel.check_invariants();
    }

    #[test]
    fn next_expiration_table() {
        // (elapsed, deadlines, next expiration)
        let table: &[(u64, &[u64], Option<u64>)] = &[
            (0, &[], None),
            (0, &[1], Some(1)),
            (0, &[63], Some(63)),
            (0, &[64], Some(64)),
            (0, &[127, 64 * 5 + 3], Some(64)),
            (0, &[4095], Some(4032)),
            (0, &[4096], Some(4096)),
            (10, &[4096, 11], Some(11)),
            (0, &[E - 1], Some(63 << 30)),
            (0, &[E], Some(E)),
            (0, &[u64::MAX], Some(E)),
            (E - 3, &[E + 1], Some(E)),
            (5 * E + 1, &[u64::MAX, 5 * E + 2], Some(5 * E + 2)),
            (100, &[100], Some(100)),
            (u64::MAX - 1, &[u64::MAX], Some(u64::MAX)),
        ];
        for &(elapsed, whens, next) in table {
            let mut wheel = Wheel::with_elapsed(elapsed);
            for &when in whens {
                wheel.insert(when, ());
            }
            assert_eq!(wheel.next_expiration(), next, "{elapsed} {whens:?}");
        }
    }

    #[test]
    fn fired_buffer_is_reused() {
        let mut wheel = Wheel::new();
        let mut fired = Vec::with_capacity(8);
        let ptr = fired.as_ptr();
        for round in 0..100u64 {
            for i in 0..8 {
                wheel.insert(round * 10 + i, i);
            }
            fired.clear();
            wheel.advance(round * 10 + 9, &mut fired);
            assert_eq!(fired.len(), 8);
        }
        assert_eq!(fired.as_ptr(), ptr);
        assert_eq!(wheel.capacity(), 8);
    }

    // ----- model test -----

    /// A deadline, relative to the wheel's tick where it matters.
    #[derive(Debug, Clone)]
    enum When {
        Past(u64),
        Near(u64),
        /// The next multiple of 64^k, plus a delta.
        Edge(u32, i64),
        /// `k` epochs ahead, plus an offset.
        Far(u64, u64),
        Abs(u64),
        Max,
    }

    #[derive(Debug, Clone)]
    enum Step {
        Small(u64),
        Edge(u32, i64),
        Huge(u64),
        Back(u64),
        NextExpiration(bool),
        Max,
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(When),
        Cancel(usize),
        CancelStale(usize),
        Reset(usize, When),
        Advance(Step),
    }

    fn edge(elapsed: u64, k: u32, delta: i64) -> u64 {
        let bits = 6 * k;
        let next = ((elapsed >> bits) + 1).saturating_mul(1 << bits);
        next.saturating_add_signed(delta)
    }

    fn resolve_when(when: &When, elapsed: u64) -> u64 {
        match *when {
            When::Past(d) => elapsed.saturating_sub(d),
            When::Near(d) => elapsed.saturating_add(d),
            When::Edge(k, delta) => edge(elapsed, k, delta),
            When::Far(k, d) => elapsed.saturating_add(k * E + d),
            When::Abs(t) => t,
            When::Max => u64::MAX,
        }
    }

    fn when_strategy() -> impl Strategy<Value = When> {
        prop_oneof![
            1 => (0u64..100).prop_map(When::Past),
            6 => (0u64..300).prop_map(When::Near),
            6 => (1u32..=6, -2i64..=2).prop_map(|(k, d)| When::Edge(k, d)),
            2 => (1u64..4, 0u64..E).prop_map(|(k, d)| When::Far(k, d)),
            1 => any::<u64>().prop_map(When::Abs),
            1 => Just(When::Max),
        ]
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        let step = prop_oneof![
            60 => (0u64..200).prop_map(Step::Small),
            30 => (1u32..=6, -2i64..=2).prop_map(|(k, d)| Step::Edge(k, d)),
            10 => (0u64..(1 << 40)).prop_map(Step::Huge),
            10 => (0u64..100).prop_map(Step::Back),
            30 => any::<bool>().prop_map(Step::NextExpiration),
            // Rare: after it every timer is due at once.
            1 => Just(Step::Max),
        ];
        prop_oneof![
            5 => when_strategy().prop_map(Op::Insert),
            2 => any::<usize>().prop_map(Op::Cancel),
            1 => any::<usize>().prop_map(Op::CancelStale),
            2 => (any::<usize>(), when_strategy()).prop_map(|(i, w)| Op::Reset(i, w)),
            4 => step.prop_map(Op::Advance),
        ]
    }

    fn start_strategy() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            Just(E - 3),
            (1u64..1 << 20).prop_map(|k| k * E - 3),
            Just(u64::MAX - E - 100),
            Just(u64::MAX - 300),
            any::<u64>(),
        ]
    }

    /// Runs `ops` on a wheel and on a `BTreeMap<(when, id), key>` oracle.
    fn run_model(start: u64, ops: &[Op]) -> Result<(), TestCaseError> {
        let mut wheel = Wheel::with_elapsed(start);
        let mut oracle: BTreeMap<(u64, u64), TimerKey> = BTreeMap::new();
        let mut live: BTreeMap<u64, u64> = BTreeMap::new(); // id -> when
        let mut stale: Vec<TimerKey> = vec![];
        let mut next_id = 0u64;
        let mut fired = Vec::new();
        for op in ops {
            let elapsed = wheel.elapsed();
            match op {
                Op::Insert(when) => {
                    let when = resolve_when(when, elapsed);
                    let key = wheel.insert(when, next_id);
                    oracle.insert((when, next_id), key);
                    live.insert(next_id, when);
                    next_id += 1;
                }
                Op::Cancel(i) | Op::Reset(i, _) if !live.is_empty() => {
                    let (&id, &when) = live.iter().nth(i % live.len()).unwrap();
                    let key = oracle[&(when, id)];
                    if let Op::Reset(_, new) = op {
                        let new = resolve_when(new, elapsed);
                        prop_assert!(wheel.reset(key, new));
                        oracle.remove(&(when, id));
                        oracle.insert((new, id), key);
                        live.insert(id, new);
                        prop_assert_eq!(wheel.deadline(key), Some(new));
                    } else {
                        prop_assert_eq!(wheel.cancel(key), Some(id));
                        oracle.remove(&(when, id));
                        live.remove(&id);
                        stale.push(key);
                    }
                }
                Op::Cancel(_) | Op::Reset(..) => {}
                Op::CancelStale(i) => {
                    if !stale.is_empty() {
                        let key = stale[i % stale.len()];
                        prop_assert_eq!(wheel.cancel(key), None);
                        prop_assert!(!wheel.reset(key, 0));
                        prop_assert_eq!(wheel.get(key), None);
                    }
                }
                Op::Advance(step) => {
                    let now = match *step {
                        Step::Small(d) => elapsed.saturating_add(d),
                        Step::Edge(k, d) => edge(elapsed, k, d),
                        Step::Huge(d) => elapsed.saturating_add(d),
                        Step::Back(d) => elapsed.saturating_sub(d),
                        Step::NextExpiration(minus_one) => match wheel.next_expiration() {
                            Some(t) if minus_one => t.saturating_sub(1),
                            Some(t) => t,
                            None => elapsed,
                        },
                        Step::Max => u64::MAX,
                    };
                    let effective = now.max(elapsed);
                    fired.clear();
                    wheel.advance(now, &mut fired);
                    prop_assert_eq!(wheel.elapsed(), effective);
                    let mut got: Vec<u64> = fired.iter().map(|&(_, id)| id).collect();
                    got.sort_unstable();
                    let before = got.len();
                    got.dedup();
                    prop_assert_eq!(before, got.len(), "fired twice");
                    for &(key, id) in &fired {
                        let when = live[&id];
                        prop_assert!(when <= effective, "{} early: {} > {}", id, when, effective);
                        prop_assert_eq!(oracle.remove(&(when, id)), Some(key));
                        live.remove(&id);
                        stale.push(key);
                    }
                    // Never lost: nothing left in the oracle is due.
                    if let Some((&(when, id), _)) = oracle.iter().next() {
                        prop_assert!(
                            when > effective,
                            "{} lost: due {} <= {}",
                            id,
                            when,
                            effective
                        );
                    }
                }
            }
            wheel.check_invariants();
            prop_assert_eq!(wheel.len(), oracle.len());
            let next = wheel.next_expiration();
            match oracle.keys().next() {
                None => prop_assert_eq!(next, None),
                Some(&(min, _)) => {
                    let next = next.expect("non-empty wheel without next expiration");
                    prop_assert!(next >= wheel.elapsed());
                    prop_assert!(
                        next <= min.max(wheel.elapsed()),
                        "next expiration {} later than deadline {}",
                        next,
                        min
                    );
                }
            }
        }
        // Drain: everything left fires by u64::MAX.
        fired.clear();
        wheel.advance(u64::MAX, &mut fired);
        prop_assert_eq!(fired.len(), oracle.len());
        prop_assert!(wheel.is_empty());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn wheel_matches_btreemap_oracle(
            start in start_strategy(),
            ops in proptest::collection::vec(op_strategy(), 1..300),
        ) {
            run_model(start, &ops)?;
        }
    }
}
