//! `Ready` and `Direction`: what a handler is told about a source.

use std::fmt;
use std::ops::{BitAnd, BitOr, BitOrAssign};

/// The readiness of a source, as delivered to [`Handler::ready`](crate::Handler::ready).
///
/// Readiness is edge-triggered: it is reported when it *changes*. A handler
/// that is told a source is readable must read until the operation returns
/// [`WouldBlock`](std::io::ErrorKind::WouldBlock), or ask to be called again
/// with [`Reactor::requeue`](crate::Reactor::requeue); otherwise it will not
/// hear of that source again until new data arrives.
///
/// # Examples
///
/// ```
/// use ontime_core::Ready;
///
/// let ready = Ready::READABLE | Ready::READ_CLOSED;
/// assert!(ready.is_readable());
/// assert!(ready.is_read_closed());
/// assert!(!ready.is_writable());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Ready(u8);

impl Ready {
    /// No readiness.
    pub const EMPTY: Ready = Ready(0);
    /// The source can be read from.
    pub const READABLE: Ready = Ready(1);
    /// The source can be written to.
    pub const WRITABLE: Ready = Ready(1 << 1);
    /// The peer closed its write side (a read returns end of file).
    pub const READ_CLOSED: Ready = Ready(1 << 2);
    /// The write side is closed (a write fails).
    pub const WRITE_CLOSED: Ready = Ready(1 << 3);
    /// The source has a pending error (see `take_error` on the socket).
    pub const ERROR: Ready = Ready(1 << 4);

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Whether a read would make progress.
    pub const fn is_readable(self) -> bool {
        self.0 & Ready::READABLE.0 != 0
    }
    /// Whether a write would make progress.
    pub const fn is_writable(self) -> bool {
        self.0 & Ready::WRITABLE.0 != 0
    }
    /// Whether the peer closed its write side.
    pub const fn is_read_closed(self) -> bool {
        self.0 & Ready::READ_CLOSED.0 != 0
    }
    /// Whether the write side is closed.
    pub const fn is_write_closed(self) -> bool {
        self.0 & Ready::WRITE_CLOSED.0 != 0
    }
    /// Whether the source has a pending error.
    pub const fn is_error(self) -> bool {
        self.0 & Ready::ERROR.0 != 0
    }
    /// The flags of both.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::Ready;
    ///
    /// const CLOSING: Ready = Ready::READ_CLOSED.union(Ready::ERROR);
    /// assert!(CLOSING.is_error() && CLOSING.is_read_closed());
    /// ```
    pub const fn union(self, other: Ready) -> Ready {
        Ready(self.0 | other.0)
    }
    /// The flags set in both.
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::Ready;
    ///
    /// let ready = Ready::READABLE | Ready::READ_CLOSED;
    /// assert_eq!(ready.intersection(Ready::READ_CLOSED | Ready::ERROR), Ready::READ_CLOSED);
    /// ```
    pub const fn intersection(self, other: Ready) -> Ready {
        Ready(self.0 & other.0)
    }
    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: Ready) -> bool {
        self.0 & other.0 == other.0
    }
    /// Whether this readiness ends a wait in `direction`: the matching
    /// readiness, that side closed, or an error. It is what disarms an I/O
    /// deadline in that direction (see
    /// [`Reactor::set_deadline`](crate::Reactor::set_deadline)).
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::{Direction, Ready};
    ///
    /// assert!(Ready::READ_CLOSED.settles(Direction::Read));
    /// assert!(Ready::ERROR.settles(Direction::Write));
    /// assert!(!Ready::WRITABLE.settles(Direction::Read));
    /// ```
    pub const fn settles(self, direction: Direction) -> bool {
        let mask = match direction {
            Direction::Read => Ready::READABLE.0 | Ready::READ_CLOSED.0 | Ready::ERROR.0,
            Direction::Write => Ready::WRITABLE.0 | Ready::WRITE_CLOSED.0 | Ready::ERROR.0,
        };
        self.0 & mask != 0
    }

    pub(crate) fn from_event(event: &mio::event::Event) -> Ready {
        let mut ready = Ready::EMPTY;
        if event.is_readable() {
            ready |= Ready::READABLE;
        }
        if event.is_writable() {
            ready |= Ready::WRITABLE;
        }
        if event.is_read_closed() {
            ready |= Ready::READ_CLOSED;
        }
        if event.is_write_closed() {
            ready |= Ready::WRITE_CLOSED;
        }
        if event.is_error() {
            ready |= Ready::ERROR;
        }
        ready
    }
}

impl BitOr for Ready {
    type Output = Ready;
    fn bitor(self, rhs: Ready) -> Ready {
        self.union(rhs)
    }
}

impl BitOrAssign for Ready {
    fn bitor_assign(&mut self, rhs: Ready) {
        *self = self.union(rhs);
    }
}

impl BitAnd for Ready {
    type Output = Ready;
    fn bitand(self, rhs: Ready) -> Ready {
        self.intersection(rhs)
    }
}

impl fmt::Debug for Ready {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Ready::READABLE, "READABLE"),
            (Ready::WRITABLE, "WRITABLE"),
            (Ready::READ_CLOSED, "READ_CLOSED"),
            (Ready::WRITE_CLOSED, "WRITE_CLOSED"),
            (Ready::ERROR, "ERROR"),
        ];
        let mut first = true;
        for (flag, name) in names {
            if self.contains(flag) {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("EMPTY")?;
        }
        Ok(())
    }
}

/// One direction of a source: what an I/O deadline bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Waiting to read (or accept).
    Read,
    /// Waiting to write (or for a connect to finish).
    Write,
}

impl Direction {
    /// 0 for `Read`, 1 for `Write`: an index for arrays kept per direction
    /// (a registration's two deadlines, a socket's two readiness counts).
    ///
    /// # Examples
    ///
    /// ```
    /// use ontime_core::Direction;
    ///
    /// let mut waiting = [0u32; 2];
    /// waiting[Direction::Write.index()] += 1;
    /// assert_eq!(waiting, [0, 1]);
    /// ```
    pub const fn index(self) -> usize {
        match self {
            Direction::Read => 0,
            Direction::Write => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settles_matches_direction() {
        let table = [
            (Ready::READABLE, true, false),
            (Ready::READ_CLOSED, true, false),
            (Ready::WRITABLE, false, true),
            (Ready::WRITE_CLOSED, false, true),
            (Ready::ERROR, true, true),
            (Ready::EMPTY, false, false),
        ];
        for (ready, read, write) in table {
            assert_eq!(ready.settles(Direction::Read), read, "{ready:?} read");
            assert_eq!(ready.settles(Direction::Write), write, "{ready:?} write");
        }
    }

    #[test]
    fn debug_lists_flags() {
        assert_eq!(
            format!("{:?}", Ready::READABLE | Ready::ERROR),
            "READABLE | ERROR"
        );
        assert_eq!(format!("{:?}", Ready::EMPTY), "EMPTY");
    }
}
