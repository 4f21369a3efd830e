//! The ping-pong clients: `ontime::sync` in timeout mode, std with socket
//! timeouts, and CPython's `socket` in timeout mode; one connection at a
//! time (latency) or many threads at once (throughput: cases b and e, the
//! latter with CPython too, and f, a pool of threads sharing connections).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{self, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ontime::sync;

use crate::sys::{self, Server};

/// The timeout of every client: long enough never to fire in a healthy run.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);
/// Stack of a client thread.
const THREAD_STACK: usize = 128 * 1024;
/// Most round trips one thread of a throughput run makes, whatever the clock says.
const MAX_RTTS_PER_THREAD: u64 = 100_000_000;
/// Longest a CPython run may take.
const PYTHON_LIMIT: Duration = Duration::from_secs(300);

/// The Rust clients under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Client {
    /// `ontime::sync::TcpStream` from `create_connection(addr, Some(TIMEOUT))`:
    /// `send_all` + `recv_exact`.
    Facade,
    /// `std::net::TcpStream` with read and write timeouts: `write_all` +
    /// `read_exact`.
    Std,
}

impl Client {
    pub(crate) const ALL: [Client; 2] = [Client::Facade, Client::Std];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Client::Facade => "ontime::sync, timeout 5 s",
            Client::Std => "std::net, read timeout 5 s",
        }
    }

    /// Connects with TCP_NODELAY, in the client's timeout mode.
    pub(crate) fn connect(self, addr: SocketAddr) -> io::Result<Conn> {
        match self {
            Client::Facade => {
                let stream = sync::create_connection(addr, Some(TIMEOUT))?;
                stream.set_nodelay(true)?;
                Ok(Conn::Facade(stream))
            }
            Client::Std => {
                let stream = net::TcpStream::connect_timeout(&addr, TIMEOUT)?;
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(TIMEOUT))?;
                // Python's settimeout covers sends too; SO_SNDTIMEO costs
                // nothing per call.
                stream.set_write_timeout(Some(TIMEOUT))?;
                Ok(Conn::Std(stream))
            }
        }
    }
}

/// A connected client. A `match` per round trip rather than a trait object:
/// the branch is always the same one, and nothing is boxed.
#[derive(Debug)]
pub(crate) enum Conn {
    Facade(sync::TcpStream),
    Std(net::TcpStream),
}

impl Conn {
    /// Sends `request` whole and waits for `reply.len()` bytes back.
    #[inline]
    pub(crate) fn round_trip(&mut self, request: &[u8], reply: &mut [u8]) -> io::Result<()> {
        match self {
            Conn::Facade(stream) => {
                stream.send_all(request)?;
                stream.recv_exact(reply)
            }
            Conn::Std(stream) => {
                stream.write_all(request)?;
                stream.read_exact(reply)
            }
        }
    }

    /// Warm-up round trips, each checked to echo its request.
    fn warm_up(&mut self, request: &[u8], reply: &mut [u8], count: u64) -> io::Result<()> {
        for _ in 0..count {
            self.round_trip(request, reply)?;
            if reply != request {
                return Err(io::Error::other("the reply is not the request"));
            }
        }
        Ok(())
    }
}

/// A payload that is not all zeros.
pub(crate) fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

/// The result of one latency run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Latency {
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) rtts_per_sec: f64,
    /// Client CPU time per round trip.
    pub(crate) client_cpu: Duration,
    /// Server CPU time per round trip (`/proc`, clock-tick resolution).
    pub(crate) server_cpu: Duration,
}

fn histogram() -> Histogram<u64> {
    // 1 ns to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

fn per_rtt(total: Duration, rtts: u64) -> Duration {
    total / u32::try_from(rtts.max(1)).unwrap_or(u32::MAX)
}

/// One connection: `warmup` round trips, then `count` timed ones.
pub(crate) fn one_connection(
    client: Client,
    server: &Server,
    size: usize,
    warmup: u64,
    count: u64,
) -> io::Result<Latency> {
    let mut conn = client.connect(server.addr)?;
    let request = payload(size);
    let mut reply = vec![0u8; size];
    conn.warm_up(&request, &mut reply, warmup)?;

    let mut hist = histogram();
    let server_before = server.cpu();
    let cpu_before = sys::self_cpu();
    let started = Instant::now();
    for _ in 0..count {
        let t0 = Instant::now();
        conn.round_trip(&request, &mut reply)?;
        hist.saturating_record(t0.elapsed().as_nanos() as u64);
    }
    let wall = started.elapsed();
    let cpu = sys::self_cpu().saturating_sub(cpu_before);
    let server_cpu = server.cpu().saturating_sub(server_before);
    Ok(Latency {
        p50: Duration::from_nanos(hist.value_at_quantile(0.50)),
        p99: Duration::from_nanos(hist.value_at_quantile(0.99)),
        rtts_per_sec: count as f64 / wall.as_secs_f64(),
        client_cpu: per_rtt(cpu, count),
        server_cpu: per_rtt(server_cpu, count),
    })
}

/// One connection from CPython: `benches/py_pingpong.py`, run with
/// `python`, which inherits this thread's CPU affinity.
pub(crate) fn python(
    python: &Path,
    script: &str,
    server: &Server,
    size: usize,
    warmup: u64,
    count: u64,
) -> io::Result<Latency> {
    let mut command = Command::new(python);
    command
        .arg("-c")
        .arg(script)
        .arg(server.addr.ip().to_string())
        .arg(server.addr.port().to_string())
        .arg(warmup.to_string())
        .arg(count.to_string())
        .arg(size.to_string())
        .arg(TIMEOUT.as_secs_f64().to_string());
    let server_before = server.cpu();
    let out = sys::output_within(command, PYTHON_LIMIT)?;
    let server_cpu = server.cpu().saturating_sub(server_before);

    let mut lines = out.lines();
    let cpu_ns: u64 = lines
        .next()
        .and_then(|l| l.strip_prefix("cpu_ns "))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other("no cpu_ns line from the CPython client"))?;
    let mut hist = histogram();
    let mut total = Duration::ZERO;
    for line in lines {
        let ns: u64 = line
            .parse()
            .map_err(|_| io::Error::other(format!("bad latency line from CPython: {line:?}")))?;
        hist.saturating_record(ns);
        total += Duration::from_nanos(ns);
    }
    if hist.len() != count {
        return Err(io::Error::other(format!(
            "CPython reported {} round trips, expected {count}",
            hist.len()
        )));
    }
    Ok(Latency {
        p50: Duration::from_nanos(hist.value_at_quantile(0.50)),
        p99: Duration::from_nanos(hist.value_at_quantile(0.99)),
        // Round trips back to back, so their sum is the counted wall time.
        rtts_per_sec: count as f64 / total.as_secs_f64(),
        client_cpu: per_rtt(Duration::from_nanos(cpu_ns), count),
        // The warm-up is included here: it is a small share of the run.
        server_cpu: per_rtt(server_cpu, count + warmup),
    })
}

/// The result of one throughput run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Throughput {
    pub(crate) rtts_per_sec: f64,
    pub(crate) client_cpu: Duration,
    pub(crate) server_cpu: Duration,
    /// Client threads of the run (one connection each, or a pool's workers).
    pub(crate) clients: usize,
    /// Descriptors the client process had open at the middle of the counted
    /// window, minus those it had before the run's sockets were opened,
    /// minus one per connection: what the client side adds beyond its
    /// sockets. `None` if `/proc` could not tell.
    pub(crate) extra_fds: Option<i64>,
    /// Threads of the client process at the middle of the window, minus
    /// those it had before the run: the client threads plus any the client
    /// side starts on its own. `None` if `/proc` could not tell.
    pub(crate) added_threads: Option<i64>,
}

/// What the client process had open, and how many threads it ran, at one
/// moment; `None` where `/proc` could not tell.
#[derive(Clone, Copy, Debug)]
struct Census {
    fds: Option<usize>,
    threads: Option<usize>,
}

impl Census {
    /// Before a run: descriptors once they have stopped changing.
    fn before() -> Census {
        Census {
            fds: sys::settled_fds().ok(),
            threads: sys::thread_count().ok(),
        }
    }

    fn now() -> Census {
        Census {
            fds: sys::open_fds().ok(),
            threads: sys::thread_count().ok(),
        }
    }

    /// `(extra_fds, added_threads)` of [`Throughput`], from this census at
    /// the middle of the window, `before` the run, and its `connections`.
    fn added(self, before: Census, connections: usize) -> (Option<i64>, Option<i64>) {
        let diff = |mid: Option<usize>, before: Option<usize>| Some(mid? as i64 - before? as i64);
        (
            diff(self.fds, before.fds).map(|d| d - connections as i64),
            diff(self.threads, before.threads),
        )
    }
}

/// A round-trip counter alone on its cache line, so that threads counting
/// do not slow each other down.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Counter(AtomicU64);

/// Who uses which connection in a throughput run.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Shape {
    /// Each thread has its own connection (cases b and e).
    Own { threads: usize },
    /// `workers` threads share `connections` connections through one queue:
    /// a worker takes the connection at its head, makes one round trip and
    /// puts it back at its tail, so that each connection goes from thread
    /// to thread as in a pool (case f).
    Pool { workers: usize, connections: usize },
}

impl Shape {
    pub(crate) fn threads(self) -> usize {
        match self {
            Shape::Own { threads } => threads,
            Shape::Pool { workers, .. } => workers,
        }
    }

    pub(crate) fn connections(self) -> usize {
        match self {
            Shape::Own { threads } => threads,
            Shape::Pool { connections, .. } => connections,
        }
    }
}

/// The connections of a pool, waiting for a worker.
#[derive(Debug)]
struct Queue {
    inner: Mutex<Queued>,
    ready: Condvar,
}

#[derive(Debug)]
struct Queued {
    conns: VecDeque<Conn>,
    /// Workers waiting for a connection: `put` wakes one only if there is
    /// one (std's `notify_one` is a system call whether or not anyone
    /// waits, which would add one to every round trip).
    waiting: usize,
}

impl Queue {
    /// The connection at the head, waiting for one to come back if none
    /// is in; `None` once `stop` is set.
    fn take(&self, stop: &AtomicBool) -> Option<Conn> {
        let mut queued = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            if let Some(conn) = queued.conns.pop_front() {
                return Some(conn);
            }
            // Bounded, so that a worker waiting here sees `stop`.
            queued.waiting += 1;
            queued = self
                .ready
                .wait_timeout(queued, Duration::from_millis(10))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            queued.waiting -= 1;
        }
    }

    fn put(&self, conn: Conn) {
        let mut queued = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        queued.conns.push_back(conn);
        let wake = queued.waiting > 0;
        drop(queued);
        if wake {
            self.ready.notify_one();
        }
    }
}

/// What one thread of a throughput run works on.
enum Work {
    Own(Conn),
    Pool(Arc<Queue>),
}

impl Work {
    /// One round trip; false once `stop` is set.
    fn round_trip(
        &mut self,
        request: &[u8],
        reply: &mut [u8],
        stop: &AtomicBool,
    ) -> io::Result<bool> {
        if stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        match self {
            Work::Own(conn) => conn.round_trip(request, reply)?,
            Work::Pool(queue) => {
                let Some(mut conn) = queue.take(stop) else {
                    return Ok(false);
                };
                let result = conn.round_trip(request, reply);
                queue.put(conn);
                result?;
            }
        }
        Ok(true)
    }
}

/// The threads and connections of `shape` ping-pong at once for `warmup`
/// and then `window`; counts the round trips of the window, and takes a
/// census of descriptors and threads at its middle (cases b, e and f).
pub(crate) fn many_connections(
    client: Client,
    server: &Server,
    size: usize,
    shape: Shape,
    warmup: Duration,
    window: Duration,
) -> io::Result<Throughput> {
    let threads = shape.threads();
    let before = Census::before();
    // Connect first, so that no thread is still connecting while others count.
    let conns = (0..shape.connections())
        .map(|_| client.connect(server.addr))
        .collect::<io::Result<Vec<_>>>()?;
    let mut works: Vec<Work> = match shape {
        Shape::Own { .. } => conns.into_iter().map(Work::Own).collect(),
        Shape::Pool { .. } => {
            let queue = Arc::new(Queue {
                inner: Mutex::new(Queued {
                    conns: conns.into(),
                    waiting: 0,
                }),
                ready: Condvar::new(),
            });
            (0..threads)
                .map(|_| Work::Pool(Arc::clone(&queue)))
                .collect()
        }
    };
    let counters: Arc<Vec<Counter>> = Arc::new((0..threads).map(|_| Counter::default()).collect());
    let stop = Arc::new(AtomicBool::new(false));
    // A gate rather than a barrier: if a thread cannot be started, dropping
    // the write guard still lets the others go (to see `stop` and end).
    let gate = Arc::new(RwLock::new(()));
    let closed = gate.write().unwrap_or_else(|e| e.into_inner());
    let mut handles = Vec::with_capacity(threads);
    for (i, mut work) in works.drain(..).enumerate() {
        let thread_counters = Arc::clone(&counters);
        let thread_stop = Arc::clone(&stop);
        let thread_gate = Arc::clone(&gate);
        let handle = thread::Builder::new()
            .name(format!("client {i}"))
            .stack_size(THREAD_STACK)
            .spawn(move || -> io::Result<()> {
                let request = payload(size);
                let mut reply = vec![0u8; size];
                // In the thread that uses it (a pool's: one of them), and
                // checked to echo its request.
                work.round_trip(&request, &mut reply, &thread_stop)?;
                if reply != request {
                    return Err(io::Error::other("the reply is not the request"));
                }
                drop(thread_gate.read().unwrap_or_else(|e| e.into_inner()));
                let counter = &thread_counters[i].0;
                for _ in 0..MAX_RTTS_PER_THREAD {
                    if !work.round_trip(&request, &mut reply, &thread_stop)? {
                        break;
                    }
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            });
        match handle {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                // Let the threads already started go: they see `stop` and end.
                stop.store(true, Ordering::Relaxed);
                drop(closed);
                for handle in handles {
                    let _ = handle.join();
                }
                return Err(e);
            }
        }
    }
    let count = || {
        counters
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    drop(closed);
    thread::sleep(warmup);
    let (rtts_before, cpu_before, server_before, t0) =
        (count(), sys::self_cpu(), server.cpu(), Instant::now());
    // The census is read inside the window, so its (small) CPU cost counts.
    let half = window / 2;
    thread::sleep(half);
    let mid = Census::now();
    thread::sleep(window.saturating_sub(t0.elapsed()));
    let (rtts_after, cpu_after, server_after, elapsed) =
        (count(), sys::self_cpu(), server.cpu(), t0.elapsed());
    stop.store(true, Ordering::Relaxed);
    let mut failure = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some(io::Error::other("a client thread panicked")),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let rtts = rtts_after - rtts_before;
    let (extra_fds, added_threads) = mid.added(before, shape.connections());
    Ok(Throughput {
        rtts_per_sec: rtts as f64 / elapsed.as_secs_f64(),
        client_cpu: per_rtt(cpu_after.saturating_sub(cpu_before), rtts),
        server_cpu: per_rtt(server_after.saturating_sub(server_before), rtts),
        clients: threads,
        extra_fds,
        added_threads,
    })
}

/// Case e's CPython peer: `benches/py_pingpong.py crowd`, run with
/// `python`, does in its own process what [`many_connections`] does here,
/// `threads` threads of the `threading` module, and reports the same
/// measures (its CPU time from `resource.getrusage`, the server's from
/// `/proc/<pid>/stat`, its census from its own `/proc/self`).
pub(crate) fn python_crowd(
    python: &Path,
    script: &str,
    server: &Server,
    size: usize,
    threads: usize,
    warmup: Duration,
    window: Duration,
) -> io::Result<Throughput> {
    let mut command = Command::new(python);
    command
        .arg("-c")
        .arg(script)
        .arg("crowd")
        .arg(server.addr.ip().to_string())
        .arg(server.addr.port().to_string())
        .arg(threads.to_string())
        .arg(warmup.as_secs_f64().to_string())
        .arg(window.as_secs_f64().to_string())
        .arg(size.to_string())
        .arg(TIMEOUT.as_secs_f64().to_string())
        .arg(server.pid().to_string());
    let out = sys::output_within(command, PYTHON_LIMIT)?;
    let field = |key: &str| -> io::Result<i64> {
        out.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| io::Error::other(format!("no {key} line from the CPython client")))
    };
    let rtts = field("rtts")?.max(0) as u64;
    let window_ns = field("window_ns")?.max(1) as u64;
    let nanos =
        |key: &str| -> io::Result<Duration> { Ok(Duration::from_nanos(field(key)?.max(0) as u64)) };
    // A census line is -1 where the script's `/proc` could not tell.
    let census = |key: &str| field(key).ok().filter(|&v| v >= 0);
    let diff = |mid: &str, before: &str| Some(census(mid)? - census(before)?);
    Ok(Throughput {
        rtts_per_sec: rtts as f64 / Duration::from_nanos(window_ns).as_secs_f64(),
        client_cpu: per_rtt(nanos("cpu_ns")?, rtts),
        server_cpu: per_rtt(nanos("server_cpu_ns")?, rtts),
        clients: threads,
        extra_fds: diff("fds_mid", "fds_before").map(|d| d - threads as i64),
        added_threads: diff("threads_mid", "threads_before"),
    })
}
