//! Timeout accuracy under load: many threads, each blocked in `recv` on its
//! own idle connection with its own timeout, all at once.

use std::io::{self, ErrorKind, Read};
use std::net::{self, SocketAddr};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use ontime::sync;

use crate::clients::Client;

/// Stack of a waiting thread: one `recv` into a small buffer.
const THREAD_STACK: usize = 64 * 1024;

/// xorshift64 (Marsaglia 2003): a fixed seed gives both clients the same
/// timeouts, run after run.
#[derive(Debug)]
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// `n` timeouts drawn uniformly from `low..=high`, to the microsecond.
pub(crate) fn random_timeouts(n: usize, low: Duration, high: Duration, seed: u64) -> Vec<Duration> {
    let mut rng = XorShift::new(seed);
    let (low, high) = (low.as_micros() as u64, high.as_micros() as u64);
    (0..n)
        .map(|_| Duration::from_micros(low + rng.next() % (high - low + 1)))
        .collect()
}

/// Every wait of one run.
#[derive(Debug, Default)]
pub(crate) struct Accuracy {
    /// `elapsed - timeout` of the waits that ended on time or late.
    pub(crate) lateness: Vec<Duration>,
    /// `timeout - elapsed` of the waits that ended early (must be none).
    pub(crate) early: Vec<Duration>,
    /// Waits that ended some other way (data, EOF, another error).
    pub(crate) errors: Vec<String>,
}

impl Accuracy {
    pub(crate) fn merge(&mut self, other: Accuracy) {
        self.lateness.extend(other.lateness);
        self.early.extend(other.early);
        self.errors.extend(other.errors);
    }
}

/// A connection whose `recv` waits for at most its timeout.
enum Idle {
    Facade(sync::TcpStream),
    Std(net::TcpStream),
}

impl Idle {
    fn connect(client: Client, addr: SocketAddr, timeout: Duration) -> io::Result<Idle> {
        match client {
            Client::Facade => Ok(Idle::Facade(sync::create_connection(addr, Some(timeout))?)),
            Client::Std => {
                let stream = net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
                stream.set_read_timeout(Some(timeout))?;
                Ok(Idle::Std(stream))
            }
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Idle::Facade(stream) => stream.recv(buf),
            Idle::Std(stream) => stream.read(buf),
        }
    }
}

/// One thread per timeout, each blocked in `recv` on its own connection to
/// the echo server (which, sent nothing, sends nothing), all started
/// together. The facade must fail with `TimedOut`; std with `WouldBlock`
/// (`EAGAIN` from `SO_RCVTIMEO`) or `TimedOut`.
pub(crate) fn accuracy(
    client: Client,
    addr: SocketAddr,
    timeouts: &[Duration],
) -> io::Result<Accuracy> {
    let conns = timeouts
        .iter()
        .map(|&timeout| Idle::connect(client, addr, timeout))
        .collect::<io::Result<Vec<_>>>()?;
    // A gate rather than a barrier: if a thread cannot be started, dropping
    // the write guard still lets the others go (and time out) rather than hang.
    let gate = Arc::new(RwLock::new(()));
    let closed = gate.write().unwrap_or_else(|e| e.into_inner());
    let mut handles = Vec::with_capacity(timeouts.len());
    for (mut conn, &timeout) in conns.into_iter().zip(timeouts) {
        let gate = Arc::clone(&gate);
        let spawned = thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let mut buf = [0u8; 64];
                drop(gate.read().unwrap_or_else(|e| e.into_inner()));
                let t0 = Instant::now();
                let result = conn.recv(&mut buf);
                (timeout, t0.elapsed(), result)
            });
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                drop(closed);
                for handle in handles {
                    let _ = handle.join();
                }
                return Err(e);
            }
        }
    }
    drop(closed);
    let mut out = Accuracy::default();
    for handle in handles {
        let (timeout, elapsed, result) = handle
            .join()
            .map_err(|_| io::Error::other("a waiting thread panicked"))?;
        match result {
            Err(e)
                if e.kind() == ErrorKind::TimedOut
                    || (client == Client::Std && e.kind() == ErrorKind::WouldBlock) =>
            {
                match elapsed.checked_sub(timeout) {
                    Some(late) => out.lateness.push(late),
                    None => out.early.push(timeout - elapsed),
                }
            }
            Err(e) => out.errors.push(format!("{:?}: {e}", e.kind())),
            Ok(n) => out.errors.push(format!("recv returned {n} bytes")),
        }
    }
    Ok(out)
}
