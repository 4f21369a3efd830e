//! What the command-line examples share: the shape of `main` (help, usage
//! errors, failures and their exit codes) and reading flag values with
//! [`lexopt`], each error naming the flag.
//!
//! lexopt does the lexing (`--flag value`, `--flag=value`, `-h`, `--` and
//! the errors for an unknown flag, a missing value or a stray argument);
//! what is left here is turning a value into the type an example wants,
//! with a message that says which flag was wrong and what it should be.

// Each example uses the part it needs.
#![allow(dead_code)]

use std::fmt::Display;
use std::io::{self, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::str::FromStr;
use std::thread;
use std::time::Duration;

use lexopt::ValueExt;
pub(crate) use lexopt::{Arg, Error, Parser};
use ontime::serve::{Report, Server, Shutdown};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Runs an example named `name`: parses the arguments after the program
/// name with `parse` and hands the result to `run`.
///
/// `parse` returns `Ok(None)` for `--help`, which prints `usage` and
/// succeeds. A bad command line prints the message, the first line of
/// `usage` and exits with 2; an error from `run` exits with 1.
pub(crate) fn main<C, E: Display>(
    name: &str,
    usage: &str,
    parse: impl FnOnce(&mut Parser) -> Result<Option<C>, Error>,
    run: impl FnOnce(&C) -> Result<(), E>,
) -> ExitCode {
    match parse(&mut Parser::from_env()) {
        Ok(Some(config)) => match run(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{name}: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(None) => {
            // A closed stdout (`--help | head -1`) is not worth a panic.
            let _ = writeln!(io::stdout(), "{usage}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "{name}: {e}\n{}\n(see --help)",
                usage.lines().next().unwrap_or_default()
            );
            ExitCode::from(2)
        }
    }
}

/// The value of the flag `parser` just returned, as text (lexopt's error
/// if it is missing or not UTF-8).
pub(crate) fn string(parser: &mut Parser) -> Result<String, Error> {
    parser.value()?.string()
}

/// The value of `flag`, the flag `parser` just returned, as a `T` for which
/// `ok` holds; the error says the value is not `what`.
pub(crate) fn parse<T: FromStr>(
    parser: &mut Parser,
    flag: &str,
    what: &str,
    ok: impl FnOnce(&T) -> bool,
) -> Result<T, Error> {
    let text = string(parser)?;
    text.parse()
        .ok()
        .filter(ok)
        .ok_or_else(|| format!("{flag}: {text:?} is not {what}").into())
}

/// The value of `flag` as a positive number.
pub(crate) fn positive<T>(parser: &mut Parser, flag: &str) -> Result<T, Error>
where
    T: FromStr + PartialOrd + From<u8>,
{
    parse(parser, flag, "a positive number", |n: &T| *n >= T::from(1))
}

/// The value of `flag` as a number in `1..=max`.
pub(crate) fn positive_up_to<T>(parser: &mut Parser, flag: &str, max: T) -> Result<T, Error>
where
    T: FromStr + PartialOrd + From<u8> + Display,
{
    let what = format!("in 1..={max}");
    parse(parser, flag, &what, |n: &T| (T::from(1)..=max).contains(n))
}

/// The value of `flag` as a number of milliseconds.
pub(crate) fn millis(parser: &mut Parser, flag: &str) -> Result<u64, Error> {
    parse(parser, flag, "a number of milliseconds", |_| true)
}

/// The value of `flag` as a timeout in milliseconds, where 0 means none
/// (wait as long as it takes).
pub(crate) fn timeout(parser: &mut Parser, flag: &str) -> Result<Option<Duration>, Error> {
    let ms = millis(parser, flag)?;
    Ok((ms > 0).then(|| Duration::from_millis(ms)))
}

/// The value of `flag` as an address to listen on: `HOST:PORT`, the host
/// resolved now (the first address it has).
pub(crate) fn socket_addr(parser: &mut Parser, flag: &str) -> Result<SocketAddr, Error> {
    let text = string(parser)?;
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| format!("{flag}: {text:?}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{flag}: {text:?} has no address").into())
}

// ---- The example servers ------------------------------------------------

/// What the example servers share once bound: a signal watch that turns
/// SIGINT and SIGTERM into a graceful shutdown (set up before the address
/// is announced, since whoever reads the address may signal at once), the
/// `listening on HOST:PORT` line, `run`, and the totals.
pub(crate) fn serve_until_signal(
    server: Server,
    addr: SocketAddr,
    run: impl FnOnce(Server) -> io::Result<Report>,
) -> io::Result<Report> {
    let signals = SignalWatch::start(server.shutdown_handle())?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {addr}")?;
    stdout.flush()?;
    drop(stdout);
    let report = run(server);
    signals.stop();
    let report = report?;
    log_totals(&report);
    Ok(report)
}

/// One line for what the server did, then one per thread at debug level.
pub(crate) fn log_totals(report: &Report) {
    let t = &report.total;
    log::info!(
        "served {} connections ({} refused): {} bytes in, {} out; closed by the peer {}, idle {}, \
         on errors {}, at limits {}, by the shutdown {}; accepting paused {} times",
        t.accepted,
        t.refused,
        t.bytes_in,
        t.bytes_out,
        t.closed_peer,
        t.closed_idle,
        t.closed_error,
        t.closed_limit,
        t.closed_shutdown,
        t.accept_pauses,
    );
    if report.threads.len() > 1 {
        for (thread, stats) in report.threads.iter().enumerate() {
            log::debug!("thread {thread}: {stats:?}");
        }
    }
}

/// The thread that turns SIGINT and SIGTERM into a graceful shutdown.
///
/// signal-hook's handler only records a signal and wakes this thread,
/// which may then do anything: the first signal starts the shutdown, a
/// second one (the shutdown takes too long) exits at once.
struct SignalWatch {
    handle: signal_hook::iterator::Handle,
    thread: thread::JoinHandle<()>,
}

impl SignalWatch {
    fn start(shutdown: Shutdown) -> io::Result<SignalWatch> {
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        let handle = signals.handle();
        let thread = thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut signals = signals.forever();
                if let Some(signal) = signals.next() {
                    log::info!("{}: shutting down", signal_name(signal));
                    shutdown.shutdown();
                }
                if let Some(signal) = signals.next() {
                    log::warn!("{}: a second signal, exiting at once", signal_name(signal));
                    std::process::exit(128 + signal);
                }
            })?;
        Ok(SignalWatch { handle, thread })
    }

    /// Ends the watch: the signals get their default action back.
    fn stop(self) {
        self.handle.close();
        // The thread only logs and calls `shutdown`, which do not panic.
        let _ = self.thread.join();
    }
}

fn signal_name(signal: i32) -> &'static str {
    signal_hook::low_level::signal_name(signal).unwrap_or("a signal")
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;

    /// What a small example's command line holds.
    #[derive(Debug, Default, PartialEq)]
    struct Seen {
        addr: Option<SocketAddr>,
        name: Option<String>,
        size: Option<usize>,
        count: Option<u64>,
        timeout: Option<Option<Duration>>,
    }

    /// Parses `args` as an example with those four flags would.
    fn parse_args(args: &[&str]) -> Result<Option<Seen>, String> {
        let mut parser = Parser::from_args(args);
        let mut seen = Seen::default();
        let mut next = || -> Result<Option<Seen>, Error> {
            while let Some(arg) = parser.next()? {
                match arg {
                    Arg::Short('h') | Arg::Long("help") => return Ok(None),
                    Arg::Long("addr") => seen.addr = Some(socket_addr(&mut parser, "--addr")?),
                    Arg::Long("name") => seen.name = Some(string(&mut parser)?),
                    Arg::Long("size") => {
                        seen.size = Some(positive_up_to(&mut parser, "--size", 64)?)
                    }
                    Arg::Long("count") => seen.count = Some(positive(&mut parser, "--count")?),
                    Arg::Long("timeout-ms") => {
                        seen.timeout = Some(timeout(&mut parser, "--timeout-ms")?)
                    }
                    _ => return Err(arg.unexpected()),
                }
            }
            Ok(Some(std::mem::take(&mut seen)))
        };
        next().map_err(|e| e.to_string())
    }

    #[test]
    fn values_follow_or_come_after_equals() {
        let seen = parse_args(&[
            "--addr",
            "127.0.0.1:0",
            "--timeout-ms=250",
            "--size",
            "64",
            "--count=7",
        ]);
        assert_eq!(
            seen,
            Ok(Some(Seen {
                addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
                size: Some(64),
                count: Some(7),
                timeout: Some(Some(Duration::from_millis(250))),
                ..Seen::default()
            }))
        );
    }

    #[test]
    fn help_wins() {
        assert_eq!(parse_args(&["--size", "3", "-h"]), Ok(None));
        assert_eq!(parse_args(&["--help", "--bogus"]), Ok(None));
    }

    #[test]
    fn zero_means_no_timeout() {
        let seen = parse_args(&["--timeout-ms", "0"]).unwrap().unwrap();
        assert_eq!(seen.timeout, Some(None));
    }

    #[test]
    fn bad_values_are_named() {
        for (args, message) in [
            (&["--size=0"][..], r#"--size: "0" is not in 1..=64"#),
            (&["--size", "65"], r#"--size: "65" is not in 1..=64"#),
            (
                &["--count", "0"],
                r#"--count: "0" is not a positive number"#,
            ),
            (
                &["--timeout-ms", "x"],
                r#"--timeout-ms: "x" is not a number of milliseconds"#,
            ),
            (
                &["--timeout-ms", "-5"],
                r#"--timeout-ms: "-5" is not a number of milliseconds"#,
            ),
            (&["--addr"], "missing argument for option '--addr'"),
            (&["--bogus"], "invalid option '--bogus'"),
            (&["-x"], "invalid option '-x'"),
            (&["stray"], r#"unexpected argument "stray""#),
        ] {
            assert_eq!(parse_args(args), Err(message.to_string()), "{args:?}");
        }
    }

    #[test]
    fn an_address_that_does_not_parse_is_named() {
        let e = parse_args(&["--addr", "nowhere"]).unwrap_err();
        assert!(e.starts_with(r#"--addr: "nowhere": "#), "{e}");
    }

    #[test]
    fn an_equals_sign_in_a_value_is_kept() {
        let seen = parse_args(&["--name", "a=b"]).unwrap().unwrap();
        assert_eq!(seen.name.as_deref(), Some("a=b"));
        let seen = parse_args(&["--name=y=z"]).unwrap().unwrap();
        assert_eq!(seen.name.as_deref(), Some("y=z"));
    }
}
