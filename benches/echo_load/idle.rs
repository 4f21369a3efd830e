//! The idle case: thousands of connections held open against one server,
//! each with an idle deadline armed in the server, a few of them active.
//!
//! One run: read the server's `VmRSS`; open the connections in batches of
//! [`BATCH`], each batch sending one message and getting its echo before
//! the next opens (so the server has accepted, served and armed a deadline
//! for every one, and the listen backlog never overflows); read `VmRSS`
//! again; run the closed loop on the first `active` connections (warm-up,
//! then the counting window) while the rest sit idle; read `VmRSS` a third
//! time; and send one more message on every connection, to check that the
//! server closed none of them early.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Poll, Token};

use crate::load::{self, Conn, Measured};
use crate::sys;

/// Connections opened at once: under the smallest listen backlog of the
/// servers (128: mio's and tokio's `bind`, like std's), so that the accept
/// queue never overflows. An overflow drops the handshake's last ACK, and
/// the client's retry comes a second later.
const BATCH: usize = 100;

/// Longest opening all the connections may take.
const OPEN_LIMIT: Duration = Duration::from_secs(60);

/// Longest the final check may take.
const CHECK_LIMIT: Duration = Duration::from_secs(20);

/// What one idle run asks of the generator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdleLoad {
    /// Connections held open, active ones included.
    pub(crate) conns: usize,
    /// How many of them do ping-pong.
    pub(crate) active: usize,
    pub(crate) msg: usize,
    pub(crate) warmup: Duration,
    pub(crate) count: Duration,
}

/// What one idle run measured.
#[derive(Debug)]
pub(crate) struct IdleMeasured {
    /// The server's `VmRSS` before the first connection, in bytes.
    pub(crate) rss_before: u64,
    /// With every connection open and answered once.
    pub(crate) rss_open: u64,
    /// After the active connections' counting window.
    pub(crate) rss_after: u64,
    /// How long opening (and answering once) all connections took.
    pub(crate) open_time: Duration,
    /// Connections the server had closed by the final check (should be 0).
    pub(crate) closed: usize,
    /// The active connections' ping-pong.
    pub(crate) active: Measured,
}

/// One idle run against the server at `addr`, process `pid`; `window` as
/// in [`load::run`].
pub(crate) fn run(
    addr: SocketAddr,
    pid: u32,
    load: IdleLoad,
    window: impl FnMut(bool),
) -> io::Result<IdleMeasured> {
    let rss_before = sys::vm_rss(pid)?;
    let mut poll = Poll::new()?;
    let mut conns: Vec<Conn> = Vec::with_capacity(load.conns);
    let opening = Instant::now();
    while conns.len() < load.conns {
        let base = conns.len();
        let batch = BATCH.min(load.conns - base);
        for i in base..base + batch {
            conns.push(Conn::open(&poll, addr, Token(i))?);
        }
        let left = OPEN_LIMIT.saturating_sub(opening.elapsed());
        let closed = load::exchange(&mut poll, &mut conns[base..], base, load.msg, left)?;
        if closed > 0 {
            return Err(io::Error::other(format!(
                "the server closed {closed} of connections {base}..{} as they opened",
                base + batch
            )));
        }
    }
    let open_time = opening.elapsed();
    let rss_open = sys::vm_rss(pid)?;

    let active = load.active.clamp(1, conns.len());
    let measured = load::ping_pong(
        &mut poll,
        &mut conns[..active],
        load.msg,
        load.warmup,
        load.count,
        window,
    )?;
    let rss_after = sys::vm_rss(pid)?;

    let closed = load::exchange(&mut poll, &mut conns, 0, load.msg, CHECK_LIMIT)?;
    Ok(IdleMeasured {
        rss_before,
        rss_open,
        rss_after,
        open_time,
        closed,
        active: measured,
    })
}
