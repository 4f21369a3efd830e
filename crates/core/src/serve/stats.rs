//! Why connections close, and the counters a server keeps.

use std::io;
use std::ops::AddAssign;

/// Why a connection closed, as [`Service::closed`](super::Service::closed)
/// is told and the [`Stats`] count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Close {
    /// The peer closed its side (end of file), and every reply to what it
    /// sent went out first.
    Peer,
    /// A read or write failed: a reset peer (`ConnectionReset`), a broken
    /// pipe, any other error of the socket.
    Error(io::ErrorKind),
    /// Nothing moved in either direction for the idle timeout.
    Idle,
    /// The deadline the service set passed.
    Deadline,
    /// The input buffer passed [`Config::max_input`](super::Config::max_input).
    InputLimit,
    /// The output buffer passed [`Config::max_output`](super::Config::max_output).
    OutputLimit,
    /// The service closed it.
    Service,
    /// The server shut down.
    Shutdown,
}

/// What one reactor of a server counted; [`Report`](super::Report) sums
/// them over the threads.
///
/// # Examples
///
/// ```
/// use ontime_core::serve::Stats;
///
/// let mut total = Stats::default();
/// let mut one = Stats::default();
/// one.accepted = 3;
/// one.closed_peer = 2;
/// total += &one;
/// total += &one;
/// assert_eq!((total.accepted, total.closed()), (6, 4));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections accepted and served (refused ones are not counted).
    pub accepted: u64,
    /// Connections refused because [`Config::max_connections`](super::Config::max_connections)
    /// were open.
    pub refused: u64,
    /// Connections open now on this reactor (the server's
    /// [`max_connections`](super::Config::max_connections) counts those of
    /// every thread).
    pub open: u64,
    /// Closed by the peer ([`Close::Peer`]).
    pub closed_peer: u64,
    /// Closed on an error ([`Close::Error`]).
    pub closed_error: u64,
    /// Closed idle ([`Close::Idle`]).
    pub closed_idle: u64,
    /// Closed at the service's deadline ([`Close::Deadline`]).
    pub closed_deadline: u64,
    /// Closed at a buffer limit ([`Close::InputLimit`], [`Close::OutputLimit`]).
    pub closed_limit: u64,
    /// Closed by the service ([`Close::Service`]).
    pub closed_service: u64,
    /// Closed by the shutdown ([`Close::Shutdown`]).
    pub closed_shutdown: u64,
    /// Bytes read from connections.
    pub bytes_in: u64,
    /// Bytes written to connections (refusal messages included).
    pub bytes_out: u64,
    /// Times accepting paused because descriptors or memory ran out.
    pub accept_pauses: u64,
}

impl Stats {
    /// Connections closed, for every reason.
    pub fn closed(&self) -> u64 {
        self.closed_peer
            + self.closed_error
            + self.closed_idle
            + self.closed_deadline
            + self.closed_limit
            + self.closed_service
            + self.closed_shutdown
    }

    pub(crate) fn count_close(&mut self, reason: Close) {
        self.open -= 1;
        let counter = match reason {
            Close::Peer => &mut self.closed_peer,
            Close::Error(_) => &mut self.closed_error,
            Close::Idle => &mut self.closed_idle,
            Close::Deadline => &mut self.closed_deadline,
            Close::InputLimit | Close::OutputLimit => &mut self.closed_limit,
            Close::Service => &mut self.closed_service,
            Close::Shutdown => &mut self.closed_shutdown,
        };
        *counter += 1;
    }
}

impl AddAssign<&Stats> for Stats {
    fn add_assign(&mut self, other: &Stats) {
        self.accepted += other.accepted;
        self.refused += other.refused;
        self.open += other.open;
        self.closed_peer += other.closed_peer;
        self.closed_error += other.closed_error;
        self.closed_idle += other.closed_idle;
        self.closed_deadline += other.closed_deadline;
        self.closed_limit += other.closed_limit;
        self.closed_service += other.closed_service;
        self.closed_shutdown += other.closed_shutdown;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.accept_pauses += other.accept_pauses;
    }
}
