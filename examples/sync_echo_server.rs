//! A blocking, thread-per-connection TCP echo server written with
//! `ontime::sync`, in timeout mode: a client that sends nothing for the
//! timeout is dropped, the others are served on.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release --example sync_echo_server -- --addr 127.0.0.1:7001 --timeout-ms 30000
//! ```
//!
//! and talk to it with `cargo run --example sync_echo_client` (or
//! `nc 127.0.0.1 7001`). The first line it prints is `listening on
//! HOST:PORT`, with the port actually bound (so `--addr 127.0.0.1:0` picks a
//! free one). Log lines go to stderr; `RUST_LOG=debug` shows every
//! connection, `RUST_LOG=warn` only the trouble.
//!
//! What it shows:
//!
//! - Python's timeout mode on plain blocking code: each connection's thread
//!   calls `recv` and `send_all` as if they were blocking, and the timeout
//!   turns a silent peer into `ErrorKind::TimedOut` ("timed out") instead of
//!   a thread stuck forever. The waits sleep in the shared ontime reactor.
//! - A bounded number of threads: past `--max-conns` live connections a new
//!   one is accepted and closed at once, with a log line, so a flood of
//!   clients cannot exhaust threads or memory.
//! - An accept loop that survives its errors: a connection reset before it
//!   was accepted is skipped; running out of descriptors or memory
//!   (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) or failing to start a thread
//!   backs off for [`ACCEPT_BACKOFF`] and tries again, without spinning.

use std::io::{self, ErrorKind, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use ontime::sync::{TcpListener, TcpStream};

mod common;

use common::{Arg, Error, Parser};

/// How long to wait before accepting again after an error that more
/// accepting would only repeat (out of descriptors, memory or threads).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Size of one read.
const READ_CHUNK: usize = 16 * 1024;
/// Stack of a connection thread: it holds one read buffer on the heap and
/// little else, so std's 2 MiB default would only cost address space.
const CONN_STACK: usize = 128 * 1024;

const USAGE: &str = "\
usage: sync_echo_server [--addr HOST:PORT] [--timeout-ms N] [--max-conns N]

  --addr HOST:PORT   address to listen on (default 127.0.0.1:7001;
                     port 0 picks a free port)
  --timeout-ms N     drop a connection that sends nothing (or does not read
                     what is echoed) for N ms (default 30000; 0: never)
  --max-conns N      most connections served at once; more are accepted
                     and closed at once (default 1024)
  -h, --help         print this help";

fn main() -> ExitCode {
    // Log lines are part of what the example shows, so show them unless
    // RUST_LOG says otherwise.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    common::main("sync_echo_server", USAGE, Config::parse, serve)
}

/// The command line.
#[derive(Debug)]
struct Config {
    addr: SocketAddr,
    /// `None`: connections are blocking and never dropped for silence.
    timeout: Option<Duration>,
    max_conns: usize,
}

impl Config {
    /// Parses the command line; `Ok(None)` for `--help`.
    fn parse(parser: &mut Parser) -> Result<Option<Config>, Error> {
        let mut config = Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 7001)),
            timeout: Some(Duration::from_millis(30_000)),
            max_conns: 1024,
        };
        while let Some(arg) = parser.next()? {
            match arg {
                Arg::Short('h') | Arg::Long("help") => return Ok(None),
                Arg::Long("addr") => config.addr = common::socket_addr(parser, "--addr")?,
                // In Python's terms a zero timeout would be non-blocking
                // mode, which a thread per connection has no use for: 0
                // means "never" here.
                Arg::Long("timeout-ms") => {
                    config.timeout = common::timeout(parser, "--timeout-ms")?
                }
                Arg::Long("max-conns") => {
                    config.max_conns = common::positive(parser, "--max-conns")?;
                }
                _ => return Err(arg.unexpected()),
            }
        }
        Ok(Some(config))
    }
}

/// Binds, announces the address and accepts until the process is killed.
fn serve(config: &Config) -> io::Result<()> {
    // The listener is blocking (no default timeout is set): accept waits
    // for the next client however long it takes.
    let listener = TcpListener::bind(config.addr)?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {}", listener.local_addr()?)?;
    stdout.flush()?;
    drop(stdout);
    log::info!(
        "timeout {}, at most {} connections",
        config
            .timeout
            .map_or_else(|| "none".to_string(), |t| format!("{} ms", t.as_millis())),
        config.max_conns
    );

    let live = Arc::new(AtomicUsize::new(0));
    // Whether accepting is failing for want of resources; warned about
    // once, not every back-off.
    let mut saturated = false;
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => {
                if saturated {
                    log::info!("accepting again");
                    saturated = false;
                }
                accepted
            }
            // The peer gave up while it waited in the backlog, or a signal
            // came: nothing to wait for, take the next one.
            Err(e) if is_disconnect(&e) || e.kind() == ErrorKind::Interrupted => {
                log::debug!("accept: {e}");
                continue;
            }
            Err(e) => {
                // Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS,
                // ENOMEM) or something unforeseen: accepting again at once
                // would only fail again, so back off rather than spin.
                if saturated {
                    log::debug!("accept: {e}");
                } else {
                    log::warn!(
                        "accept: {e}; retrying every {} ms",
                        ACCEPT_BACKOFF.as_millis()
                    );
                    saturated = true;
                }
                thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        };
        // Only this thread increments, so the check cannot race past the
        // bound; connection threads only decrement.
        if live.load(Ordering::Acquire) >= config.max_conns {
            log::warn!(
                "{peer}: {} connections already, closing this one",
                config.max_conns
            );
            continue;
        }
        if let Err(e) = stream.set_timeout(config.timeout) {
            log::warn!("{peer}: cannot set the timeout: {e}; closing");
            continue;
        }
        live.fetch_add(1, Ordering::AcqRel);
        let guard = Live(Arc::clone(&live));
        let timeout = config.timeout;
        let spawned = thread::Builder::new()
            .name(format!("conn {peer}"))
            .stack_size(CONN_STACK)
            .spawn(move || {
                let _guard = guard;
                echo(&stream, peer, timeout);
            });
        if let Err(e) = spawned {
            // The closure (with the stream and the guard) was dropped: the
            // connection is closed and its slot given back.
            log::warn!(
                "{peer}: cannot start a thread: {e}; closing it, accepting again in {} ms",
                ACCEPT_BACKOFF.as_millis()
            );
            thread::sleep(ACCEPT_BACKOFF);
        }
    }
}

/// Whether `e` means the peer went away, which is routine for a server.
fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

/// Gives a connection's slot back when its thread ends, however it ends.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Echoes until the peer closes, falls silent for the timeout, or fails.
fn echo(stream: &TcpStream, peer: SocketAddr, timeout: Option<Duration>) {
    log::debug!("{peer}: connected");
    // Echoes are small and answered at once: do not hold them back.
    if let Err(e) = stream.set_nodelay(true) {
        log::debug!("{peer}: TCP_NODELAY: {e}");
    }
    let mut buf = vec![0; READ_CHUNK];
    let mut echoed = 0u64;
    let ms = timeout.map_or(0, |t| t.as_millis());
    loop {
        let n = match stream.recv(&mut buf) {
            Ok(0) => {
                log::debug!("{peer}: closed by the peer after {echoed} bytes");
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::TimedOut => {
                log::info!(
                    "{peer}: sent nothing for {ms} ms, dropping it ({e}, {echoed} bytes echoed)"
                );
                return;
            }
            Err(e) => {
                log::info!("{peer}: receive failed: {e}; closing after {echoed} bytes");
                return;
            }
        };
        // One deadline for the whole echo (Python's sendall): a peer that
        // stops reading is dropped after the timeout too.
        match stream.send_all(&buf[..n]) {
            Ok(()) => echoed += n as u64,
            Err(e) if e.kind() == ErrorKind::TimedOut => {
                log::info!(
                    "{peer}: took no echo for {ms} ms, dropping it ({e}, {echoed} bytes echoed)"
                );
                return;
            }
            Err(e) => {
                log::info!("{peer}: send failed: {e}; closing after {echoed} bytes");
                return;
            }
        }
    }
}
