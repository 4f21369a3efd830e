//! One level of the wheel: 64 slots and an occupied bitmap.
//!
//! A level only knows list heads; the nodes themselves live in the wheel's
//! arena. Keeping the bitmap beside the heads lets the wheel find the next
//! occupied slot with one rotate and one `trailing_zeros`, without looking at
//! empty slots.

/// Bits of a tick consumed by one level: each level is one base-64 digit.
pub(super) const SLOT_BITS: u32 = 6;

/// Slots per level. 64 makes the occupied set fit exactly in one `u64`.
pub(super) const SLOTS: usize = 1 << SLOT_BITS;

/// Number of levels. Six levels of 64 slots span 64^6 = 2^36 ticks, about
/// 2.2 years at a 1 ms tick; deadlines further out wait on the wheel's far
/// list until the wheel reaches their 2^36-tick epoch.
pub(super) const LEVELS: usize = 6;

/// Bits of a tick covered by all levels together: 6 x 6 = 36.
pub(super) const SPAN_BITS: u32 = SLOT_BITS * LEVELS as u32;

/// The "no node" index for list links and slot heads.
pub(super) const NIL: u32 = u32::MAX;

/// The digit of `tick` that selects a slot at `level`.
#[inline]
pub(super) fn slot_of(tick: u64, level: usize) -> usize {
    debug_assert!(level < LEVELS, "level {level} out of range");
    ((tick >> (SLOT_BITS * level as u32)) & (SLOTS as u64 - 1)) as usize
}

/// The level at which a timer due at `when` is filed when the wheel stands at
/// `elapsed`: the highest base-64 digit in which the two differ. `None` when
/// they differ above the span (bit 36 or higher), i.e. `when` lies in another
/// 2^36-tick epoch.
///
/// Requires `when != elapsed`.
#[inline]
pub(super) fn level_for(elapsed: u64, when: u64) -> Option<usize> {
    debug_assert!(
        when != elapsed,
        "level_for needs distinct ticks, both are {when}"
    );
    // `diff` is non-zero, so `leading_zeros() <= 63` and `bit` is 0..=63.
    let diff = elapsed ^ when;
    let bit = 63 - diff.leading_zeros();
    let level = (bit / SLOT_BITS) as usize;
    (level < LEVELS).then_some(level)
}

/// The first tick covered by `slot` of `level` while the wheel stands at
/// `elapsed`: `elapsed` with the digits of `level` and below replaced by
/// `slot`. It never overflows: the result shares every bit above the level
/// with `elapsed`.
#[inline]
pub(super) fn slot_start(elapsed: u64, level: usize, slot: usize) -> u64 {
    debug_assert!(
        level < LEVELS && slot < SLOTS,
        "level {level} / slot {slot} out of range"
    );
    let shift = SLOT_BITS * level as u32;
    // `shift + SLOT_BITS <= 36`, so neither shift can overflow.
    let block = !((1u64 << (shift + SLOT_BITS)) - 1);
    (elapsed & block) | ((slot as u64) << shift)
}

/// One level: a list head per slot and the set of non-empty slots.
#[derive(Debug, Clone)]
pub(super) struct Level {
    /// Bit `s` is set iff slot `s` holds at least one timer.
    ///
    /// Invariant: `occupied & (1 << s) != 0` iff `heads[s] != NIL`.
    occupied: u64,
    /// Index in the wheel's arena of the first node of each slot's list.
    heads: [u32; SLOTS],
}

impl Level {
    /// An empty level.
    pub(super) const fn new() -> Level {
        Level {
            occupied: 0,
            heads: [NIL; SLOTS],
        }
    }

    /// Whether no slot holds a timer.
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.occupied == 0
    }

    /// The occupied bitmap.
    #[cfg(test)]
    pub(super) fn occupied(&self) -> u64 {
        self.occupied
    }

    /// The first node of `slot`, or [`NIL`].
    #[inline]
    pub(super) fn head(&self, slot: usize) -> u32 {
        self.heads[slot]
    }

    /// Makes `index` the first node of `slot`, keeping the bitmap in step.
    #[inline]
    pub(super) fn set_head(&mut self, slot: usize, index: u32) {
        self.heads[slot] = index;
        if index == NIL {
            self.occupied &= !(1 << slot);
        } else {
            self.occupied |= 1 << slot;
        }
    }

    /// Detaches the whole list of `slot` and returns its first node (or
    /// [`NIL`]). The slot is empty afterwards.
    #[inline]
    pub(super) fn take(&mut self, slot: usize) -> u32 {
        let head = self.heads[slot];
        self.heads[slot] = NIL;
        self.occupied &= !(1 << slot);
        head
    }

    /// The first occupied slot at or after `from`, counting upward and
    /// wrapping past 63 to 0, or `None` if the level is empty. Costs one
    /// rotate and one `trailing_zeros`, whatever the number of empty slots.
    #[inline]
    pub(super) fn next_occupied(&self, from: usize) -> Option<usize> {
        if self.occupied == 0 {
            return None;
        }
        debug_assert!(from < SLOTS, "slot {from} out of range");
        let rotated = self.occupied.rotate_right(from as u32);
        Some((from + rotated.trailing_zeros() as usize) % SLOTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_span_two_to_the_36() {
        assert_eq!(SLOTS, 64);
        assert_eq!(SPAN_BITS, 36);
        assert_eq!((SLOTS as u64).pow(LEVELS as u32), 1 << 36);
    }

    #[test]
    fn level_for_table() {
        // (elapsed, when, level)
        let table: &[(u64, u64, Option<usize>)] = &[
            (0, 1, Some(0)),
            (0, 62, Some(0)),
            (0, 63, Some(0)),
            (0, 64, Some(1)),
            (0, 65, Some(1)),
            (63, 64, Some(1)),
            (64, 127, Some(0)),
            (0, 4095, Some(1)),
            (0, 4096, Some(2)),
            (4095, 4096, Some(2)),
            (0, (1 << 18) - 1, Some(2)),
            (0, 1 << 18, Some(3)),
            (0, (1 << 24) - 1, Some(3)),
            (0, 1 << 24, Some(4)),
            (0, (1 << 30) - 1, Some(4)),
            (0, 1 << 30, Some(5)),
            (0, (1 << 36) - 1, Some(5)),
            (0, 1 << 36, None),
            (0, (1 << 36) + 1, None),
            ((1 << 36) - 3, 1 << 36, None),
            ((1 << 36) - 3, (1 << 36) - 1, Some(0)),
            (1 << 36, (1 << 36) + 1, Some(0)),
            (0, u64::MAX, None),
            (u64::MAX - 1, u64::MAX, Some(0)),
            (u64::MAX - 64, u64::MAX, Some(1)),
            (!((1 << 36) - 1), u64::MAX, Some(5)),
            (1 << 63, u64::MAX, None),
        ];
        for &(elapsed, when, level) in table {
            assert_eq!(
                level_for(elapsed, when),
                level,
                "elapsed {elapsed} when {when}"
            );
        }
    }

    #[test]
    fn slot_of_and_slot_start_table() {
        // (elapsed, level, slot, start)
        let table: &[(u64, usize, usize, u64)] = &[
            (0, 0, 1, 1),
            (0, 0, 63, 63),
            (0, 1, 1, 64),
            (0, 1, 63, 4032),
            (0, 2, 1, 4096),
            (100, 0, 101 % 64, 101),
            (4095, 1, 63, 4032),
            (5000, 0, 63, 5000 / 64 * 64 + 63),
            ((1 << 36) - 3, 0, 63, (1 << 36) - 1),
            ((1 << 36) - 3, 5, 63, 63 << 30),
            (u64::MAX - 1, 0, 63, u64::MAX),
            (u64::MAX, 5, 63, !((1 << 30) - 1)),
        ];
        for &(elapsed, level, slot, start) in table {
            assert_eq!(
                slot_start(elapsed, level, slot),
                start,
                "{elapsed} {level} {slot}"
            );
            assert_eq!(slot_of(start, level), slot, "{elapsed} {level} {slot}");
        }
        assert_eq!(slot_of(u64::MAX, 5), 63);
        assert_eq!(slot_of(64, 0), 0);
        assert_eq!(slot_of(64, 1), 1);
        assert_eq!(slot_of(4095, 1), 63);
        assert_eq!(slot_of(4096, 1), 0);
    }

    #[test]
    fn bitmap_follows_heads() {
        let mut level = Level::new();
        assert!(level.is_empty());
        assert_eq!(level.next_occupied(0), None);
        level.set_head(5, 7);
        level.set_head(63, 9);
        assert_eq!(level.occupied(), (1 << 5) | (1 << 63));
        // (from, next)
        for &(from, next) in &[(0, 5), (4, 5), (5, 5), (6, 63), (63, 63)] {
            assert_eq!(level.next_occupied(from), Some(next), "from {from}");
        }
        assert_eq!(level.take(63), 9);
        // Wraps around past 63 to the lower slot.
        assert_eq!(level.next_occupied(6), Some(5));
        assert_eq!(level.head(63), NIL);
        level.set_head(5, NIL);
        assert!(level.is_empty());
        assert_eq!(level.take(5), NIL);
    }
}
