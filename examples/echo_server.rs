//! A TCP echo server on ontime's serving layer: the protocol is one
//! callback, and `ontime::serve` does the rest.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release --example echo_server -- --addr 127.0.0.1:7000 --idle-timeout-ms 5000
//! ```
//!
//! and talk to it with `nc 127.0.0.1 7000`. The first line it prints is
//! `listening on HOST:PORT`, with the port actually bound (so `--addr
//! 127.0.0.1:0` picks a free one). Ctrl-C (SIGINT) or SIGTERM shuts it down
//! gracefully: it stops accepting, lets each connection send what it still
//! owes (for at most 5 s), logs what it served on stderr and exits with 0;
//! a second signal exits at once. `RUST_LOG=debug` shows every connection
//! and why it closed, `RUST_LOG=warn` only the trouble.
//!
//! What the layer gives it, which `examples/echo_reactor.rs` (the same echo
//! on the bare reactor, and the baseline for what the layer costs) writes
//! by hand:
//!
//! - Backpressure: above 64 KiB of unsent echo the connection is not read
//!   until its output drains to 16 KiB, so a peer that sends but does not
//!   read cannot grow the server.
//! - Idle timeouts (`--idle-timeout-ms`), fairness between busy
//!   connections, and a listen backlog of 1024.
//! - Running out of descriptors (`EMFILE` and the like): accepting pauses,
//!   with one warning, until a connection closes or a short back-off
//!   passes, without spinning.
//! - `--max-connections`: past it a connection is accepted and closed at
//!   once, so clients fail fast instead of waiting in the backlog.
//! - `--threads`: one reactor per thread, each with its own listener on the
//!   same port (`SO_REUSEPORT`), the kernel spreading connections.
//! - The graceful shutdown, started here from a thread that waits for the
//!   signals (the signal handler itself only records them).

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use ontime::serve::{Config, Conn, Input, Server, Service};

mod common;

use common::{Arg, Error, Parser};

const USAGE: &str = "\
usage: echo_server [--addr HOST:PORT] [--idle-timeout-ms N] [--threads N] [--max-connections N]

  --addr HOST:PORT       address to listen on (default 127.0.0.1:7000;
                         port 0 picks a free port)
  --idle-timeout-ms N    close a connection that makes no progress for N ms
                         (default 0: never)
  --threads N            reactors to run, one per thread, sharing the port
                         (default 1)
  --max-connections N    most connections each thread keeps open; more are
                         accepted and closed at once (default: no limit)
  -h, --help             print this help

SIGINT or SIGTERM shuts the server down gracefully; a second one exits at once.";

/// Most threads `--threads` accepts.
const MAX_THREADS: usize = 1024;

/// The echo protocol: every byte that arrives goes back, as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Service for Echo {
    type Conn = ();
    type Timer = ();
    type Message = ();

    fn connected(&mut self, _: &mut Conn<'_, Self>) {}

    fn received(&mut self, conn: &mut Conn<'_, Self>, _: &mut (), input: &mut Input<'_>) {
        // Goes out at the end of this dispatch, with the echo of every
        // other read of the same event, in one write.
        conn.write(input.bytes());
        input.consume(input.len());
    }
}

fn main() -> ExitCode {
    // The shutdown and its totals are part of what the example shows, so
    // show them unless RUST_LOG says otherwise.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    common::main("echo_server", USAGE, Options::parse, serve)
}

/// Binds, announces the address, serves until a signal, and logs the
/// totals.
fn serve(options: &Options) -> io::Result<()> {
    let mut config = Config::new()
        .idle_timeout(options.idle_timeout)
        .threads(options.threads);
    if let Some(n) = options.max_connections {
        config = config.max_connections(n);
    }
    let mut server = Server::new(config);
    let addr = server
        .listen(options.addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", options.addr)))?;
    common::serve_until_signal(server, addr, |server| server.run(|_thread| Echo))?;
    Ok(())
}

/// The command line.
#[derive(Debug)]
struct Options {
    addr: SocketAddr,
    idle_timeout: Option<Duration>,
    threads: usize,
    /// Per thread; `None`: no limit but the descriptors.
    max_connections: Option<usize>,
}

impl Options {
    /// Parses the command line; `Ok(None)` for `--help`.
    fn parse(parser: &mut Parser) -> Result<Option<Options>, Error> {
        let mut options = Options {
            addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
            idle_timeout: None,
            threads: 1,
            max_connections: None,
        };
        while let Some(arg) = parser.next()? {
            match arg {
                Arg::Short('h') | Arg::Long("help") => return Ok(None),
                Arg::Long("addr") => options.addr = common::socket_addr(parser, "--addr")?,
                Arg::Long("idle-timeout-ms") => {
                    options.idle_timeout = common::timeout(parser, "--idle-timeout-ms")?;
                }
                Arg::Long("threads") => {
                    options.threads = common::positive_up_to(parser, "--threads", MAX_THREADS)?;
                }
                Arg::Long("max-connections") => {
                    let n = common::positive(parser, "--max-connections")?;
                    options.max_connections = Some(n);
                }
                _ => return Err(arg.unexpected()),
            }
        }
        Ok(Some(options))
    }
}
