//! A blocking echo client written with `ontime::sync`: it connects with
//! Python's `create_connection` and a timeout, then either echoes the lines
//! of stdin or times a series of pings.
//!
//! Run the server in one terminal and the client in another:
//!
//! ```text
//! cargo run --release --example sync_echo_server
//! cargo run --release --example sync_echo_client                 # type lines; Ctrl-D ends
//! cargo run --release --example sync_echo_client -- --count 10   # 10 pings of 64 bytes
//! ```
//!
//! Options: `--addr HOST:PORT` (default 127.0.0.1:7001), `--timeout-ms N`
//! (default 5000; it bounds the connect and each exchange), `--count N` and
//! `--size B` (default 64) for pings; `--help` lists them.
//! The first ping also pays for the thread's first wait: creating its
//! reactor (and the process's spare one) and registering the socket.
//!
//! What it shows: every call is written as blocking code, and the socket's
//! timeout mode turns a server that is not there into `ConnectionRefused`
//! at once, and one that accepts but never answers into
//! `ErrorKind::TimedOut` ("timed out") after the timeout. The client then
//! says which, and exits with status 1 (2 for a bad command line). Try it:
//! run the client with no server, or against `nc -l 127.0.0.1 7001`, which
//! accepts and never answers.

use std::io::{self, BufRead, ErrorKind, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ontime::sync::{create_connection, TcpStream};

mod common;

use common::{Arg, Error, Parser};

const USAGE: &str = "\
usage: sync_echo_client [--addr HOST:PORT] [--timeout-ms N] [--count N [--size B]]

  --addr HOST:PORT   server to connect to (default 127.0.0.1:7001)
  --timeout-ms N     timeout of the connect and of each exchange, in ms
                     (default 5000; 0: wait as long as it takes)
  --count N          send N pings and time their round trips, instead of
                     echoing the lines of stdin
  --size B           bytes per ping (default 64)
  -h, --help         print this help";

/// Most pings one run may send, so that a typo cannot run for hours.
const MAX_COUNT: u64 = 10_000_000;
/// Largest ping.
const MAX_SIZE: usize = 64 * 1024 * 1024;

fn main() -> ExitCode {
    env_logger::init();
    common::main("sync_echo_client", USAGE, Config::parse, run)
}

/// The command line.
#[derive(Debug)]
struct Config {
    addr: String,
    /// `None`: blocking mode.
    timeout: Option<Duration>,
    /// `Some`: ping mode.
    count: Option<u64>,
    size: usize,
}

impl Config {
    /// Parses the command line; `Ok(None)` for `--help`.
    fn parse(parser: &mut Parser) -> Result<Option<Config>, Error> {
        let mut config = Config {
            addr: String::from("127.0.0.1:7001"),
            timeout: Some(Duration::from_millis(5000)),
            count: None,
            size: 64,
        };
        while let Some(arg) = parser.next()? {
            match arg {
                Arg::Short('h') | Arg::Long("help") => return Ok(None),
                // Resolved by `create_connection`, which tries each address.
                Arg::Long("addr") => config.addr = common::string(parser)?,
                // A zero timeout would be Python's non-blocking mode, which
                // this client has no use for: 0 means "never".
                Arg::Long("timeout-ms") => {
                    config.timeout = common::timeout(parser, "--timeout-ms")?
                }
                Arg::Long("count") => {
                    config.count = Some(common::positive_up_to(parser, "--count", MAX_COUNT)?);
                }
                Arg::Long("size") => {
                    config.size = common::positive_up_to(parser, "--size", MAX_SIZE)?
                }
                _ => return Err(arg.unexpected()),
            }
        }
        Ok(Some(config))
    }

    fn timeout_text(&self) -> String {
        self.timeout
            .map_or_else(|| "ever".to_string(), |t| format!("{} ms", t.as_millis()))
    }
}

/// Connects and runs the chosen mode; the error says what went wrong where.
fn run(config: &Config) -> Result<(), String> {
    let stream =
        create_connection(config.addr.as_str(), config.timeout).map_err(|e| match e.kind() {
            ErrorKind::TimedOut => format!(
                "connecting to {}: timed out after {} (is the address right?)",
                config.addr,
                config.timeout_text()
            ),
            ErrorKind::ConnectionRefused => format!(
                "connecting to {}: connection refused (is the server running?)",
                config.addr
            ),
            _ => format!("connecting to {}: {e}", config.addr),
        })?;
    let peer = stream
        .peer_addr()
        .map_or_else(|_| config.addr.clone(), |a| a.to_string());
    // Small requests answered at once: send each as soon as it is written.
    stream
        .set_nodelay(true)
        .map_err(|e| format!("TCP_NODELAY: {e}"))?;
    let exchange_failed = |what: &str, e: io::Error| match e.kind() {
        ErrorKind::TimedOut => format!(
            "{what} {peer}: timed out after {} (the server accepted but does not answer)",
            config.timeout_text()
        ),
        ErrorKind::UnexpectedEof => format!("{what} {peer}: the server closed the connection"),
        _ => format!("{what} {peer}: {e}"),
    };
    match config.count {
        Some(count) => ping(&stream, count, config.size, &exchange_failed),
        None => echo_stdin(&stream, &exchange_failed),
    }
}

/// Sends each line of stdin and prints the reply.
fn echo_stdin(
    stream: &TcpStream,
    failed: &dyn Fn(&str, io::Error) -> String,
) -> Result<(), String> {
    let stdin = io::stdin().lock();
    let mut stdout = io::stdout().lock();
    let mut reply = Vec::new();
    // One exchange per line; ends with stdin.
    for line in stdin.lines() {
        let mut line = line.map_err(|e| format!("reading stdin: {e}"))?;
        line.push('\n');
        stream
            .send_all(line.as_bytes())
            .map_err(|e| failed("sending to", e))?;
        // An echo server answers with the same bytes: wait for all of them,
        // within one timeout for the whole reply.
        reply.resize(line.len(), 0);
        stream
            .recv_exact(&mut reply)
            .map_err(|e| failed("waiting for", e))?;
        stdout
            .write_all(&reply)
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("writing stdout: {e}"))?;
    }
    Ok(())
}

/// Sends `count` pings of `size` bytes one after the other and prints each
/// round-trip time, then the percentiles.
fn ping(
    stream: &TcpStream,
    count: u64,
    size: usize,
    failed: &dyn Fn(&str, io::Error) -> String,
) -> Result<(), String> {
    let mut stdout = io::stdout().lock();
    let mut out = |text: String| {
        // A closed stdout (piped into `head`) is not worth a panic.
        let _ = writeln!(stdout, "{text}");
    };
    let mut request = vec![0u8; size];
    let mut reply = vec![0u8; size];
    let mut rtts = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(1 << 20));
    let started = Instant::now();
    for seq in 0..count {
        // Vary the payload so that a reply from an earlier ping would show.
        for (i, byte) in request.iter_mut().enumerate() {
            *byte = (seq as usize).wrapping_add(i) as u8;
        }
        let t0 = Instant::now();
        stream
            .send_all(&request)
            .map_err(|e| failed("sending to", e))?;
        stream
            .recv_exact(&mut reply)
            .map_err(|e| failed("waiting for", e))?;
        let rtt = t0.elapsed();
        if reply != request {
            return Err(format!("ping {seq}: the reply is not the request"));
        }
        rtts.push(rtt);
        out(format!(
            "ping {seq}: {size} bytes, rtt {:.1} us",
            micros(rtt)
        ));
    }
    let total = started.elapsed();
    rtts.sort_unstable();
    out(format!(
        "{count} pings of {size} bytes in {:.3} s: min {:.1} us, p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        total.as_secs_f64(),
        micros(rtts[0]),
        micros(percentile(&rtts, 50.0)),
        micros(percentile(&rtts, 99.0)),
        micros(rtts[rtts.len() - 1]),
    ));
    Ok(())
}

/// The `p`th percentile of sorted, non-empty `values` (nearest rank).
fn percentile(values: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
