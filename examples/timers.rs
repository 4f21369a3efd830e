//! Timers and deadlines on the ontime reactor, one of each, with the time
//! each one took.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example timers
//! ```
//!
//! It shows a one-shot timer, a zero-delay timer (it fires on the very next
//! turn, without waiting for a tick), an interval cancelled after a few
//! firings, a timer moved to a later deadline, a read deadline on a loopback
//! connection nobody writes to, and a thread waking the loop and sending it
//! messages through a `Remote`. Each timer carries a value saying what it
//! is for (the interval's also counts its firings), so the handler matches
//! on it rather than comparing ids. It exits by itself in about a second.
//! `RUST_LOG=trace` shows each poll and how long it waited.

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use ontime::net::TcpStream;
use ontime::{Direction, Handler, Interest, Reactor, Ready, TimerId, Token};

mod common;

use common::{Arg, Error, Parser};

const USAGE: &str = "\
usage: timers

  Runs one timer and deadline of each kind and prints when each fired;
  exits by itself in about a second. It takes no options.

  -h, --help    print this help";

const ONE_SHOT: Duration = Duration::from_millis(100);
const PERIOD: Duration = Duration::from_millis(150);
const INTERVAL_FIRINGS: u32 = 4;
const RESET_FROM: Duration = Duration::from_millis(200);
const RESET_TO: Duration = Duration::from_millis(700);
const READ_TIMEOUT: Duration = Duration::from_millis(250);
const REMOTE_AFTER: Duration = Duration::from_millis(400);
/// When the demo ends, whatever happened.
const END: Duration = Duration::from_millis(1000);

/// What each timer is for: the value it carries.
enum Tick {
    OneShot,
    Zero,
    Interval {
        /// How many times it has fired so far.
        fired: u32,
    },
    Reset,
    End,
}

struct Demo {
    start: Instant,
    /// The turn being dispatched (1 for the first).
    turn: u32,
    done: bool,
}

impl Demo {
    fn say(&self, what: &str) {
        let ms = self.start.elapsed().as_secs_f64() * 1e3;
        println!("[{ms:7.1} ms, turn {:2}] {what}", self.turn);
    }
}

impl Handler for Demo {
    type State = TcpStream;
    type Timer = Tick;
    type Message = String;

    fn ready(&mut self, _: &mut Reactor<Demo>, token: Token, _: &mut TcpStream, ready: Ready) {
        self.say(&format!("{token:?} is {ready:?}"));
    }

    fn timed_out(
        &mut self,
        _: &mut Reactor<Demo>,
        token: Token,
        _: &mut TcpStream,
        direction: Direction,
    ) {
        self.say(&format!(
            "{token:?}: nothing to read within {READ_TIMEOUT:?}: {direction:?} deadline passed"
        ));
    }

    fn timer(&mut self, reactor: &mut Reactor<Demo>, timer: TimerId, tick: &mut Tick) {
        match tick {
            Tick::Zero => self.say("zero-delay timer fired"),
            Tick::OneShot => self.say(&format!("one-shot timer fired (asked for {ONE_SHOT:?})")),
            Tick::Interval { fired } => {
                // The count lives in the interval's value, kept across firings.
                *fired += 1;
                self.say(&format!("interval fired, {fired} of {INTERVAL_FIRINGS}"));
                if *fired == INTERVAL_FIRINGS {
                    let cancelled = reactor.cancel_timer(timer);
                    self.say(&format!("interval cancelled: {cancelled}"));
                }
            }
            Tick::Reset => self.say(&format!(
                "reset timer fired (started for {RESET_FROM:?}, moved to {RESET_TO:?})"
            )),
            Tick::End => {
                self.say("done");
                self.done = true;
            }
        }
    }

    fn message(&mut self, _: &mut Reactor<Demo>, message: String) {
        self.say(&format!("message from the thread: {message:?}"));
    }

    fn woken(&mut self, _: &mut Reactor<Demo>) {
        self.say("woken by the thread");
    }
}

fn main() -> ExitCode {
    env_logger::init();
    common::main("timers", USAGE, parse, |_| run())
}

/// There is nothing to parse but `--help` (`Ok(None)`).
fn parse(parser: &mut Parser) -> Result<Option<()>, Error> {
    if let Some(arg) = parser.next()? {
        return match arg {
            Arg::Short('h') | Arg::Long("help") => Ok(None),
            _ => Err(arg.unexpected()),
        };
    }
    Ok(Some(()))
}

fn run() -> io::Result<()> {
    let mut reactor = Reactor::<Demo>::new()?;
    let start = Instant::now();

    reactor.timer_after(ONE_SHOT, Tick::OneShot);
    reactor.timer_after(Duration::ZERO, Tick::Zero);
    reactor.interval(PERIOD, Tick::Interval { fired: 0 });
    let reset = reactor.timer_after(RESET_FROM, Tick::Reset);
    let moved = reactor.reset_timer(reset, start + RESET_TO);
    assert!(moved, "a timer that has not fired can be moved");
    reactor.timer_at(start + END, Tick::End);

    // A connection whose peer never writes: the read deadline passes.
    let (_client, server) = loopback_pair()?;
    let token = reactor.register(server, Interest::READABLE)?;
    reactor.set_timeout(token, Direction::Read, READ_TIMEOUT)?;

    // Another thread reaches the loop through a `Remote`: wake it, then send
    // it messages (each send wakes it too).
    let remote = reactor.remote();
    let thread = thread::spawn(move || {
        thread::sleep(REMOTE_AFTER);
        remote.wake().expect("the reactor is running");
        for n in 1..=3 {
            if remote.send(format!("hello #{n}")).is_err() {
                break;
            }
        }
    });

    let mut demo = Demo {
        start,
        turn: 0,
        done: false,
    };
    demo.say("started; turning");
    // `run` would do; turning by hand lets the output number the turns.
    while !demo.done {
        demo.turn += 1;
        reactor.turn(&mut demo, None)?;
    }
    thread.join().expect("the thread does not panic");
    reactor.deregister(token)?;
    Ok(())
}

/// A connected pair of loopback sockets.
fn loopback_pair() -> io::Result<(std::net::TcpStream, TcpStream)> {
    let listener = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let client = std::net::TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    server.set_nonblocking(true)?;
    Ok((client, TcpStream::from_std(server)))
}
