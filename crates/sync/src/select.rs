//! [`select`]: Python's `select.select` over facade sockets, on the reactor.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use ontime_core::Direction;

use crate::driver::{self, Outcome, Registered, Target};
use crate::Mode;

/// A socket that [`select`] can watch: every socket type of this crate.
pub trait Selectable {
    /// The socket's handle in the reactor. Only this crate's sockets have one.
    fn select_handle(&self) -> SelectHandle;
}

/// A socket's handle in the reactor, for [`select`]; it has no public
/// constructor.
pub struct SelectHandle {
    io: Arc<dyn Registered>,
}

impl SelectHandle {
    pub(crate) fn new(io: Arc<dyn Registered>) -> SelectHandle {
        SelectHandle { io }
    }

    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) fn io(&self) -> &Arc<dyn Registered> {
        &self.io
    }
}

impl std::fmt::Debug for SelectHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelectHandle")
            .field("fd", &self.io.raw_fd())
            .finish()
    }
}

/// Which of the sockets given to [`select`] are ready, by position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selected {
    /// Positions in `read` of the sockets ready to read (or accept).
    pub readable: Vec<usize>,
    /// Positions in `write` of the sockets ready to write.
    pub writable: Vec<usize>,
}

impl Selected {
    /// Whether no socket is ready (the timeout passed).
    pub fn is_empty(&self) -> bool {
        self.readable.is_empty() && self.writable.is_empty()
    }
}

/// Waits until one of the `read` sockets is readable or one of the `write`
/// sockets is writable, as Python's `select.select(read, write, [], timeout)`.
///
/// `timeout` follows the modes: `None` waits as long as it takes, zero only
/// looks, anything else waits at most that long. An empty [`Selected`] means
/// the timeout passed. The wait is a registration in the same reactor that
/// the sockets' own calls use, not a `select(2)`.
///
/// A socket counts as ready once the reactor has seen it become ready since
/// a call on it last reported `WouldBlock`. As with `select(2)`, readiness
/// can be stale by the time the caller acts (another thread may read first,
/// or the data may have been read without reaching `WouldBlock`), so use
/// non-blocking mode and expect the occasional `WouldBlock`. A zero timeout
/// never waits: it takes in what readiness the OS has, registering the
/// sockets new to the reactor, with one poll that does not block.
///
/// # Errors
///
/// Any error of the reactor (creating it, polling, registering a socket).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ontime_sync::{select, TcpListener, TcpStream};
///
/// # fn main() -> std::io::Result<()> {
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// listener.set_blocking(false)?;
/// let _client = TcpStream::connect(listener.local_addr()?)?;
/// let ready = select(&[&listener], &[], Some(Duration::from_secs(5)))?;
/// assert_eq!(ready.readable, vec![0]);
/// let (_conn, _) = listener.accept()?;
/// # Ok(())
/// # }
/// ```
pub fn select(
    read: &[&dyn Selectable],
    write: &[&dyn Selectable],
    timeout: Option<Duration>,
) -> io::Result<Selected> {
    let deadline = Mode::from_timeout(timeout).deadline();
    let mut targets: Vec<Target> = read
        .iter()
        .map(|s| (s, Direction::Read))
        .chain(write.iter().map(|s| (s, Direction::Write)))
        .map(|(s, direction)| Target {
            io: s.select_handle().io,
            direction,
            tick: 0,
        })
        .collect();
    loop {
        let mut selected = Selected::default();
        for (position, target) in targets.iter_mut().enumerate() {
            // One read of the tick, both to report and to wait on.
            let source = target.io.source();
            target.tick = source.tick(target.direction);
            if source.ready_at(target.direction, target.tick) {
                match target.direction {
                    Direction::Read => selected.readable.push(position),
                    Direction::Write => selected.writable.push(position - read.len()),
                }
            }
        }
        if !selected.is_empty() {
            return Ok(selected);
        }
        if driver::wait(&targets, deadline)? == Outcome::TimedOut {
            return Ok(Selected::default());
        }
    }
}
