//! The Redis-protocol key-value server example (`examples/kv_server.rs`)
//! over real loopback sockets, spoken to as Redis clients speak to it: RESP2
//! over `std::net::TcpStream`, read back with the small reply reader below.
//!
//! What is checked: every command's happy path and its error replies, spelled
//! as Redis 7 spells them; pipelining; inline (telnet) requests and their
//! quoting; binary-safe values; expiry on the timer wheel; pub/sub fan-out,
//! the subscribed mode and the cut of a subscriber that does not read;
//! protocol errors (a reply, then the close); the request limits; the idle
//! timeout; the client limit; 500 clients at once; QUIT.
//!
//! Timing follows the house bounds: a deadline (a key's TTL, the idle
//! timeout) is never early, asserted strictly from an instant taken before
//! the request that set it; it is late by at most `max(1 s, T)`. Every test
//! runs under the watchdog and every loop is bounded in count and time.
//!
//! The tests of plain protocol can be pointed at a real Redis, to check that
//! they encode its behaviour:
//!
//! ```text
//! redis-server --port 6399 --bind 127.0.0.1 --save '' --appendonly no &
//! KV_TEST_REDIS=127.0.0.1:6399 cargo test --test kv_server -- --test-threads=1
//! ```
//!
//! Tests that need the server's own options (limits, timeouts) or that check
//! what the example deliberately does differently (`COMMAND`, `CONFIG GET`)
//! run only against the example.

// The example's server, so that these tests exercise the very code the
// example runs.
#[allow(dead_code, unreachable_pub)]
#[path = "../examples/kv_server.rs"]
mod kv_server;

mod common;

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ontime::serve::{Report, Shutdown};

use common::{assert_not_late, eventually, in_child, watchdog, MUST_SUCCEED, WATCHDOG};
use kv_server::Options;

// ---- RESP2 replies ------------------------------------------------------

/// One RESP2 reply.
#[derive(Clone, PartialEq, Eq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    /// `None` is the null bulk string, `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `None` is the null array, `*-1`.
    Array(Option<Vec<Reply>>),
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Simple(s) => write!(f, "+{s:?}"),
            Reply::Error(s) => write!(f, "-{s:?}"),
            Reply::Int(n) => write!(f, ":{n}"),
            Reply::Bulk(None) => write!(f, "nil"),
            Reply::Bulk(Some(b)) if b.len() > 200 => {
                write!(f, "${}b\"{}...\"", b.len(), b[..200].escape_ascii())
            }
            Reply::Bulk(Some(b)) => write!(f, "b\"{}\"", b.escape_ascii()),
            Reply::Array(None) => write!(f, "*nil"),
            Reply::Array(Some(items)) => f.debug_list().entries(items).finish(),
        }
    }
}

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

fn simple(s: &str) -> Reply {
    Reply::Simple(s.into())
}

fn err(s: &str) -> Reply {
    Reply::Error(s.into())
}

fn int(n: i64) -> Reply {
    Reply::Int(n)
}

fn bulk(b: impl AsRef<[u8]>) -> Reply {
    Reply::Bulk(Some(b.as_ref().to_vec()))
}

fn nil() -> Reply {
    Reply::Bulk(None)
}

fn array(items: Vec<Reply>) -> Reply {
    Reply::Array(Some(items))
}

fn bulks(items: &[&str]) -> Reply {
    array(items.iter().map(bulk).collect())
}

fn wrong_arity(command: &str) -> Reply {
    err(&format!(
        "ERR wrong number of arguments for '{command}' command"
    ))
}

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";

fn malformed(what: String) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, what)
}

/// One line without its CRLF; `UnexpectedEof` if the stream ends first.
fn read_line(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(io::Error::new(ErrorKind::UnexpectedEof, "closed"));
    }
    match line.strip_suffix(b"\r\n") {
        Some(stripped) => Ok(stripped.to_vec()),
        None => Err(malformed(format!(
            "a line without CRLF: b\"{}\"",
            line.escape_ascii()
        ))),
    }
}

fn number(digits: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed(format!("not a number: b\"{}\"", digits.escape_ascii())))
}

/// Reads one RESP2 reply.
fn read_reply(r: &mut impl BufRead) -> io::Result<Reply> {
    let line = read_line(r)?;
    let Some((&kind, rest)) = line.split_first() else {
        return Err(malformed("an empty line".into()));
    };
    let text = || {
        String::from_utf8(rest.to_vec())
            .map_err(|_| malformed(format!("not UTF-8: b\"{}\"", rest.escape_ascii())))
    };
    match kind {
        b'+' => Ok(Reply::Simple(text()?)),
        b'-' => Ok(Reply::Error(text()?)),
        b':' => Ok(Reply::Int(number(rest)?)),
        b'$' => {
            let n = number(rest)?;
            if n < 0 {
                return Ok(Reply::Bulk(None));
            }
            if n > 1 << 30 {
                return Err(malformed(format!("a bulk string of {n} bytes")));
            }
            let mut bytes = vec![0; n as usize + 2];
            r.read_exact(&mut bytes)?;
            if !bytes.ends_with(b"\r\n") {
                return Err(malformed("a bulk string without CRLF".into()));
            }
            bytes.truncate(n as usize);
            Ok(Reply::Bulk(Some(bytes)))
        }
        b'*' => {
            let n = number(rest)?;
            if n < 0 {
                return Ok(Reply::Array(None));
            }
            let items = (0..n).map(|_| read_reply(r)).collect::<io::Result<_>>()?;
            Ok(Reply::Array(Some(items)))
        }
        _ => Err(malformed(format!(
            "not a RESP2 reply: b\"{}\"",
            line.escape_ascii()
        ))),
    }
}

/// A request as clients send it: a multibulk of bulk strings.
fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[test]
fn the_reply_reader_reads_every_kind() {
    let input =
        b"+OK\r\n-ERR x y\r\n:-42\r\n$-1\r\n$0\r\n\r\n$4\r\na\r\nb\r\n*-1\r\n*2\r\n*0\r\n:1\r\n";
    let mut r = &input[..];
    let mut replies = Vec::new();
    for _ in 0..8 {
        replies.push(read_reply(&mut r).unwrap());
    }
    assert_eq!(
        replies,
        [
            ok(),
            err("ERR x y"),
            int(-42),
            nil(),
            bulk(""),
            bulk("a\r\nb"),
            Reply::Array(None),
            array(vec![array(vec![]), int(1)]),
        ]
    );
    let e = read_reply(&mut r).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
    assert_eq!(
        encode(&["GET", "k"]),
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".to_vec()
    );
}

// ---- A client -----------------------------------------------------------

/// A connection to the server, with a read timeout so that a missing reply
/// fails the test instead of hanging it.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connecting to the server");
        Client::on(stream)
    }

    fn on(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(MUST_SUCCEED)).unwrap();
        stream.set_write_timeout(Some(MUST_SUCCEED)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    #[track_caller]
    fn send(&mut self, bytes: &[u8]) {
        self.reader
            .get_mut()
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("sending {} bytes: {e}", bytes.len()));
    }

    fn try_read(&mut self) -> io::Result<Reply> {
        read_reply(&mut self.reader)
    }

    #[track_caller]
    fn read(&mut self) -> Reply {
        self.try_read()
            .unwrap_or_else(|e| panic!("reading a reply: {e}"))
    }

    /// Sends one request and reads its reply.
    #[track_caller]
    fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        self.send(&encode(args));
        self.read()
    }

    /// Asserts that the server closes the connection with nothing more to
    /// say: end of stream, or a reset. The client closes too, so that the
    /// server's lingering close ends now rather than after its linger.
    #[track_caller]
    fn expect_closed(mut self) {
        let rest = self.read_to_close();
        assert!(
            rest.is_empty(),
            "expected the close, got b\"{}\"",
            rest.escape_ascii()
        );
    }

    /// Everything until the server closes the connection.
    #[track_caller]
    fn read_to_close(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        let mut buf = [0; 16 << 10];
        let start = Instant::now();
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return rest,
                Ok(n) => rest.extend_from_slice(&buf[..n]),
                Err(e) if is_reset(&e) => return rest,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!(
                    "waiting for the close after {:?}: {e}; read b\"{}\"",
                    start.elapsed(),
                    rest.escape_ascii()
                ),
            }
        }
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

// ---- The server ---------------------------------------------------------

/// The example's server on its own thread, or a real Redis named by
/// `KV_TEST_REDIS`. Dropping it shuts the example's server down (and leaves
/// its thread, so that a failing test is not held up by it); `stop` shuts it
/// down and waits for its report.
struct Kv {
    addr: SocketAddr,
    shutdown: Option<Shutdown>,
    thread: Option<JoinHandle<io::Result<Report>>>,
}

impl Kv {
    fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    fn is_real_redis(&self) -> bool {
        self.shutdown.is_none()
    }

    /// Shuts the server down and returns its report (`None` for a real
    /// Redis, which is left running).
    fn stop(mut self) -> Option<Report> {
        let shutdown = self.shutdown.take()?;
        shutdown.shutdown();
        let thread = self.thread.take().expect("a running server has a thread");
        let report = thread.join().expect("the server thread panicked");
        Some(report.expect("the server failed"))
    }
}

impl Drop for Kv {
    fn drop(&mut self) {
        if let Some(shutdown) = &self.shutdown {
            shutdown.shutdown();
        }
    }
}

/// The example's defaults, on a port of the OS's choosing on loopback.
fn options() -> Options {
    Options {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Options::default()
    }
}

/// The example's server with `options`.
fn start(options: Options) -> Kv {
    let (server, addr) = kv_server::bind(&options).expect("binding 127.0.0.1:0");
    let shutdown = server.shutdown_handle();
    let thread = thread::Builder::new()
        .name("kv_server".into())
        .spawn(move || kv_server::run(server, &options, addr))
        .expect("spawning the server");
    Kv {
        addr,
        shutdown: Some(shutdown),
        thread: Some(thread),
    }
}

/// For the tests of plain protocol: the example's server with its
/// defaults, or the real Redis at `KV_TEST_REDIS` (emptied first).
fn start_default() -> Kv {
    match std::env::var("KV_TEST_REDIS") {
        Ok(addr) => {
            let kv = Kv {
                addr: addr.parse().expect("KV_TEST_REDIS is HOST:PORT"),
                shutdown: None,
                thread: None,
            };
            assert_eq!(kv.client().cmd(&["FLUSHALL"]), ok());
            kv
        }
        Err(_) => start(options()),
    }
}

/// The value of `field` in the text of an INFO reply.
fn info_field(info: &Reply, field: &str) -> Option<String> {
    let Reply::Bulk(Some(text)) = info else {
        panic!("INFO replied {info:?}");
    };
    let text = String::from_utf8_lossy(text);
    let prefix = format!("{field}:");
    text.split("\r\n")
        .find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
}

fn info_number(client: &mut Client, field: &str) -> u64 {
    let info = client.cmd(&["INFO"]);
    info_field(&info, field)
        .unwrap_or_else(|| panic!("INFO has no {field}: {info:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("INFO's {field} is not a number: {info:?}"))
}

/// Sends each request in turn on `c` and compares its reply; returns every
/// mismatch, so that a table test reports all of them at once.
fn mismatches(c: &mut Client, cases: &[(&[&str], Reply)]) -> Vec<String> {
    let mut failures = Vec::new();
    for (args, expected) in cases {
        let got = c.cmd(args);
        if &got != expected {
            failures.push(format!("{args:?}: expected {expected:?}, got {got:?}"));
        }
    }
    failures
}

#[track_caller]
fn assert_none(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---- Connection and server commands ---------------------------------------

#[test]
fn ping_echo_and_case_insensitive_names() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        assert_eq!(c.cmd(&["PING"]), simple("PONG"));
        assert_eq!(c.cmd(&["pInG"]), simple("PONG"));
        assert_eq!(c.cmd(&["PING", "hello world"]), bulk("hello world"));
        assert_eq!(c.cmd(&["PING", "a", "b"]), wrong_arity("ping"));
        assert_eq!(c.cmd(&["ECHO", "x y"]), bulk("x y"));
        assert_eq!(c.cmd(&["echo", ""]), bulk(""));
        assert_eq!(c.cmd(&["ECHO"]), wrong_arity("echo"));
        assert_eq!(c.cmd(&["ECHO", "a", "b"]), wrong_arity("echo"));
        drop(c);
        kv.stop();
    });
}

#[test]
fn unknown_commands_are_spelled_as_redis_7() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        assert_eq!(
            c.cmd(&["FOO", "a", "b"]),
            err("ERR unknown command 'FOO', with args beginning with: 'a' 'b' ")
        );
        assert_eq!(
            c.cmd(&["foo"]),
            err("ERR unknown command 'foo', with args beginning with: ")
        );
        // Longer than any command name.
        let long = "x".repeat(40);
        assert_eq!(
            c.cmd(&[long.as_str(), "1"]),
            err(&format!(
                "ERR unknown command '{long}', with args beginning with: '1' "
            ))
        );
        // The connection goes on.
        assert_eq!(c.cmd(&["PING"]), simple("PONG"));
        drop(c);
        kv.stop();
    });
}

#[test]
fn every_command_checks_its_arity() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        let cases: &[(&[&str], &str)] = &[
            (&["ECHO"], "echo"),
            (&["SET", "k"], "set"),
            (&["SET"], "set"),
            (&["GET"], "get"),
            (&["GeT", "a", "b"], "get"),
            (&["GETDEL"], "getdel"),
            (&["DEL"], "del"),
            (&["EXISTS"], "exists"),
            (&["INCR"], "incr"),
            (&["INCR", "a", "b"], "incr"),
            (&["INCRBY", "k"], "incrby"),
            (&["DECR"], "decr"),
            (&["DECRBY", "k"], "decrby"),
            (&["APPEND", "k"], "append"),
            (&["STRLEN"], "strlen"),
            (&["MGET"], "mget"),
            (&["MSET", "k"], "mset"),
            (&["MSET", "a", "1", "b"], "mset"),
            (&["EXPIRE", "k"], "expire"),
            (&["PEXPIRE", "k"], "pexpire"),
            (&["TTL"], "ttl"),
            (&["PTTL"], "pttl"),
            (&["PERSIST"], "persist"),
            (&["TYPE"], "type"),
            (&["DBSIZE", "x"], "dbsize"),
            (&["SELECT"], "select"),
            (&["LPUSH", "k"], "lpush"),
            (&["RPUSH", "k"], "rpush"),
            (&["LPOP"], "lpop"),
            (&["LPOP", "k", "1", "2"], "lpop"),
            (&["RPOP"], "rpop"),
            (&["RPOP", "k", "1", "2"], "rpop"),
            (&["LLEN"], "llen"),
            (&["LRANGE", "k", "0"], "lrange"),
            (&["HSET", "h", "f"], "hset"),
            (&["HSET", "h", "f", "v", "g"], "hset"),
            (&["HGET", "h"], "hget"),
            (&["HDEL", "h"], "hdel"),
            (&["HGETALL"], "hgetall"),
            (&["HLEN"], "hlen"),
            (&["HINCRBY", "h", "f"], "hincrby"),
            (&["SUBSCRIBE"], "subscribe"),
            (&["PUBLISH", "ch"], "publish"),
            (&["CONFIG"], "config"),
            (&["CONFIG", "GET"], "config|get"),
            (&["CLIENT"], "client"),
        ];
        let cases: Vec<(&[&str], Reply)> = cases
            .iter()
            .map(|&(args, name)| (args, wrong_arity(name)))
            .collect();
        assert_none(&mismatches(&mut c, &cases));
        // Nothing of the failed requests happened.
        assert_eq!(c.cmd(&["DBSIZE"]), int(0));
        drop(c);
        kv.stop();
    });
}

#[test]
fn select_accepts_only_database_0() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        assert_eq!(c.cmd(&["SELECT", "0"]), ok());
        if kv.is_real_redis() {
            // Redis has 16 databases; the example has one.
            assert_eq!(
                c.cmd(&["SELECT", "16"]),
                err("ERR DB index is out of range")
            );
        } else {
            assert_eq!(c.cmd(&["SELECT", "1"]), err("ERR DB index is out of range"));
        }
        assert_eq!(c.cmd(&["SELECT", "x"]), err(NOT_INTEGER));
        drop(c);
        kv.stop();
    });
}

#[test]
fn dbsize_flushdb_and_flushall() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        assert_eq!(c.cmd(&["DBSIZE"]), int(0));
        assert_eq!(c.cmd(&["MSET", "a", "1", "b", "2", "c", "3"]), ok());
        assert_eq!(c.cmd(&["RPUSH", "l", "x"]), int(1));
        assert_eq!(c.cmd(&["HSET", "h", "f", "v"]), int(1));
        assert_eq!(c.cmd(&["DBSIZE"]), int(5));
        assert_eq!(c.cmd(&["FLUSHDB"]), ok());
        assert_eq!(c.cmd(&["DBSIZE"]), int(0));
        assert_eq!(c.cmd(&["GET", "a"]), nil());
        assert_eq!(c.cmd(&["SET", "a", "1"]), ok());
        assert_eq!(c.cmd(&["FLUSHALL", "ASYNC"]), ok());
        assert_eq!(c.cmd(&["DBSIZE"]), int(0));
        assert_eq!(c.cmd(&["SET", "a", "1"]), ok());
        assert_eq!(c.cmd(&["FLUSHDB", "sync"]), ok());
        assert_eq!(c.cmd(&["FLUSHDB", "later"]), err(SYNTAX));
        assert_eq!(c.cmd(&["FLUSHALL", "SYNC", "ASYNC"]), err(SYNTAX));
        drop(c);
        kv.stop();
    });
}

#[test]
fn info_has_the_server_and_stats_sections() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        let info = c.cmd(&["INFO"]);
        let Reply::Bulk(Some(text)) = &info else {
            panic!("INFO replied {info:?}");
        };
        let text = String::from_utf8_lossy(text).into_owned();
        assert!(text.contains("# Server\r\n"), "{text}");
        assert!(text.contains("# Stats\r\n"), "{text}");
        assert!(info_field(&info, "redis_version").is_some(), "{text}");
        assert_eq!(
            info_field(&info, "tcp_port"),
            Some(kv.addr.port().to_string()),
            "{text}"
        );
        for field in [
            "total_connections_received",
            "total_commands_processed",
            "expired_keys",
        ] {
            let value = info_field(&info, field).unwrap_or_else(|| panic!("no {field}: {text}"));
            assert!(value.parse::<u64>().is_ok(), "{field}:{value}");
        }
        // One section when one is asked for.
        let server = c.cmd(&["INFO", "server"]);
        let Reply::Bulk(Some(server)) = server else {
            panic!("INFO server replied {server:?}");
        };
        let server = String::from_utf8_lossy(&server);
        assert!(server.contains("# Server\r\n"), "{server}");
        assert!(!server.contains("# Stats"), "{server}");
        let stats = c.cmd(&["info", "STATS"]);
        let Reply::Bulk(Some(stats)) = stats else {
            panic!("INFO stats replied {stats:?}");
        };
        let stats = String::from_utf8_lossy(&stats);
        assert!(stats.contains("# Stats\r\n"), "{stats}");
        assert!(!stats.contains("# Server"), "{stats}");
        // The counters count.
        let before = info_number(&mut c, "total_commands_processed");
        for _ in 0..10 {
            c.cmd(&["PING"]);
        }
        let after = info_number(&mut c, "total_commands_processed");
        assert!(after >= before + 10, "{before} then {after}");
        drop(c);
        kv.stop();
    });
}

#[test]
fn config_client_and_command_answer_what_clients_ask_at_startup() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        assert_eq!(
            c.cmd(&["CONFIG", "GET", "no-such-parameter"]),
            array(vec![])
        );
        assert_eq!(c.cmd(&["CLIENT", "SETNAME", "tester"]), ok());
        assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), bulk("tester"));
        assert_eq!(
            c.cmd(&["CLIENT", "SETNAME", "two words"]),
            err("ERR Client names cannot contain spaces, newlines or special characters.")
        );
        if !kv.is_real_redis() {
            // Redis 7.2's SETINFO, which redis-py sends on connecting.
            assert_eq!(c.cmd(&["CLIENT", "SETINFO", "lib-name", "x"]), ok());
            assert_eq!(c.cmd(&["CLIENT", "SETINFO", "LIB-VER", "1.0"]), ok());
            // Where Redis lists its commands, the example says none.
            assert_eq!(c.cmd(&["COMMAND"]), array(vec![]));
            assert_eq!(c.cmd(&["COMMAND", "DOCS"]), array(vec![]));
            // No persistence, said the way redis-benchmark checks for it.
            assert_eq!(
                c.cmd(&["CONFIG", "GET", "save"]),
                array(vec![bulk("save"), bulk("")])
            );
            assert_eq!(
                c.cmd(&["CONFIG", "GET", "appendonly"]),
                array(vec![bulk("appendonly"), bulk("no")])
            );
        }
        drop(c);
        kv.stop();
    });
}

#[test]
fn client_subcommand_errors_are_spelled_as_redis_7() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        let arity = |sub: &str| {
            err(&format!(
                "ERR wrong number of arguments for 'client|{sub}' command"
            ))
        };
        let cases: &[(&[&str], Reply)] = &[
            (
                &["CLIENT", "BOGUS"],
                err("ERR unknown subcommand 'BOGUS'. Try CLIENT HELP."),
            ),
            (&["CLIENT", "SETNAME"], arity("setname")),
            (&["CLIENT", "SETNAME", "a", "b"], arity("setname")),
            (&["CLIENT", "GETNAME", "x"], arity("getname")),
            (&["CLIENT", "ID", "x"], arity("id")),
            (
                &["CONFIG", "BOGUS"],
                err("ERR unknown subcommand 'BOGUS'. Try CONFIG HELP."),
            ),
        ];
        assert_none(&mismatches(&mut c, cases));
        drop(c);
        kv.stop();
    });
}

/// HELLO, which clients send first: redis-py 8 sends `HELLO 3` on every
/// connection by default and gives up on an error reply; with `protocol=2`
/// it sends none. Redis answers `HELLO 2` with the handshake as a RESP2
/// array of fields and values.
#[test]
fn hello_2_answers_the_handshake() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        let reply = c.cmd(&["HELLO", "2"]);
        let Reply::Array(Some(items)) = &reply else {
            panic!("HELLO 2 replied {reply:?}");
        };
        let field = |name: &str| {
            items
                .chunks(2)
                .find(|pair| pair[0] == bulk(name))
                .map(|pair| pair[1].clone())
        };
        assert_eq!(field("server"), Some(bulk("redis")), "{reply:?}");
        assert_eq!(field("proto"), Some(int(2)), "{reply:?}");
        assert_eq!(field("mode"), Some(bulk("standalone")), "{reply:?}");
        assert!(
            matches!(field("version"), Some(Reply::Bulk(Some(_)))),
            "{reply:?}"
        );
        // Still RESP2 afterwards.
        assert_eq!(c.cmd(&["GET", "k"]), nil());
        drop(c);
        kv.stop();
    });
}

#[test]
fn quit_replies_ok_and_closes_without_answering_what_follows() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        c.send(b"PING\r\n*1\r\n$4\r\nQUIT\r\nPING\r\n");
        assert_eq!(c.read(), simple("PONG"));
        assert_eq!(c.read(), ok());
        c.expect_closed();
        // The server goes on.
        assert_eq!(kv.client().cmd(&["PING"]), simple("PONG"));
        kv.stop();
    });
}

// ---- Strings --------------------------------------------------------------

#[test]
fn set_and_get() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        assert_eq!(c.cmd(&["GET", "k"]), nil());
        assert_eq!(c.cmd(&["SET", "k", "v"]), ok());
        assert_eq!(c.cmd(&["GET", "k"]), bulk("v"));
        assert_eq!(c.cmd(&["SET", "k", ""]), ok());
        assert_eq!(c.cmd(&["GET", "k"]), bulk(""));
        assert_eq!(c.cmd(&["set", "k", "w"]), ok());
        assert_eq!(c.cmd(&["GET", "k"]), bulk("w"));
        // Keys are case sensitive.
        assert_eq!(c.cmd(&["GET", "K"]), nil());
        // NX and XX.
        assert_eq!(c.cmd(&["SET", "k", "x", "NX"]), nil());
        assert_eq!(c.cmd(&["GET", "k"]), bulk("w"));
        assert_eq!(c.cmd(&["SET", "n", "1", "nx"]), ok());
        assert_eq!(c.cmd(&["SET", "absent", "1", "XX"]), nil());
        assert_eq!(c.cmd(&["EXISTS", "absent"]), int(0));
        assert_eq!(c.cmd(&["SET", "k", "y", "XX"]), ok());
        assert_eq!(c.cmd(&["GET", "k"]), bulk("y"));
        // GET: the old value.
        assert_eq!(c.cmd(&["SET", "k", "z", "GET"]), bulk("y"));
        assert_eq!(c.cmd(&["GET", "k"]), bulk("z"));
        assert_eq!(c.cmd(&["SET", "new", "1", "GET"]), nil());
        assert_eq!(c.cmd(&["GET", "new"]), bulk("1"));
        // NX with GET (Redis 7): the old value, and nothing set.
        assert_eq!(c.cmd(&["SET", "k", "q", "NX", "GET"]), bulk("z"));
        assert_eq!(c.cmd(&["GET", "k"]), bulk("z"));
        assert_eq!(c.cmd(&["SET", "absent", "1", "XX", "GET"]), nil());
        assert_eq!(c.cmd(&["EXISTS", "absent"]), int(0));
        // SET replaces a value of another type.
        assert_eq!(c.cmd(&["RPUSH", "l", "a"]), int(1));
        assert_eq!(c.cmd(&["SET", "l", "s"]), ok());
        assert_eq!(c.cmd(&["TYPE", "l"]), simple("string"));
        drop(c);
        kv.stop();
    });
}

#[test]
fn set_rejects_bad_options() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        let invalid = || err("ERR invalid expire time in 'set' command");
        let syntax = || err(SYNTAX);
        let cases: &[(&[&str], Reply)] = &[
            (&["SET", "k", "v", "NX", "XX"], syntax()),
            (&["SET", "k", "v", "XX", "NX"], syntax()),
            (&["SET", "k", "v", "EX"], syntax()),
            (&["SET", "k", "v", "PX"], syntax()),
            (&["SET", "k", "v", "EX", "10", "PX", "10"], syntax()),
            (&["SET", "k", "v", "EX", "10", "KEEPTTL"], syntax()),
            (&["SET", "k", "v", "KEEPTTL", "PX", "10"], syntax()),
            (&["SET", "k", "v", "BOGUS"], syntax()),
            (&["SET", "k", "v", "EX", "abc"], err(NOT_INTEGER)),
            (&["SET", "k", "v", "PX", "1.5"], err(NOT_INTEGER)),
            (&["SET", "k", "v", "EX", "0"], invalid()),
            (&["SET", "k", "v", "EX", "-1"], invalid()),
            (&["SET", "k", "v", "PX", "0"], invalid()),
            (&["SET", "k", "v", "PX", "-100"], invalid()),
            (&["SET", "k", "v", "EX", "9223372036854775807"], invalid()),
            (&["SET", "k", "v", "PX", "9223372036854775807"], invalid()),
        ];
        assert_none(&mismatches(&mut c, cases));
        // None of them set anything.
        assert_eq!(c.cmd(&["EXISTS", "k"]), int(0));
        // GET on a key of another type fails and sets nothing.
        assert_eq!(c.cmd(&["RPUSH", "l", "a"]), int(1));
        assert_eq!(c.cmd(&["SET", "l", "v", "GET"]), err(WRONGTYPE));
        assert_eq!(c.cmd(&["TYPE", "l"]), simple("list"));
        drop(c);
        kv.stop();
    });
}

/// Redis takes TTLs up to `i64::MAX` milliseconds from now: a TTL of a
/// hundred billion seconds (3,000 years) is set and reported.
#[test]
fn ttls_far_in_the_future_are_taken() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        let far = "100000000000";
        let cases: &[(&[&str], Reply)] = &[
            (&["SET", "k", "v", "EX", "3153600000"], ok()),
            (&["TTL", "k"], int(3_153_600_000)),
            (&["SET", "k", "v", "EX", far], ok()),
            (&["TTL", "k"], int(100_000_000_000)),
            (&["SET", "j", "v"], ok()),
            (&["EXPIRE", "j", far], int(1)),
            (&["TTL", "j"], int(100_000_000_000)),
            (&["PEXPIRE", "j", "100000000000000"], int(1)),
            (&["TTL", "j"], int(100_000_000_000)),
        ];
        assert_none(&mismatches(&mut c, cases));
        assert_eq!(c.cmd(&["PING"]), simple("PONG"));
        drop(c);
        kv.stop();
    });
}

/// Redis takes an option given twice (the last EX wins), where the two
/// options together are not a contradiction.
#[test]
fn set_takes_a_repeated_option() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        let cases: &[(&[&str], Reply)] = &[
            (&["SET", "k", "v", "NX", "NX"], ok()),
            (&["SET", "k", "w", "GET", "GET"], bulk("v")),
            (&["SET", "k", "v", "EX", "1", "EX", "100"], ok()),
            (&["TTL", "k"], int(100)),
            (&["SET", "k", "v", "PX", "1", "PX", "100000"], ok()),
            (&["TTL", "k"], int(100)),
            (&["SET", "k", "v", "KEEPTTL", "KEEPTTL"], ok()),
            (&["TTL", "k"], int(100)),
        ];
        assert_none(&mismatches(&mut c, cases));
        drop(c);
        kv.stop();
    });
}

#[test]
fn getdel_del_and_exists() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        assert_eq!(c.cmd(&["GETDEL", "k"]), nil());
        assert_eq!(c.cmd(&["SET", "k", "v"]), ok());
        assert_eq!(c.cmd(&["GETDEL", "k"]), bulk("v"));
        assert_eq!(c.cmd(&["GET", "k"]), nil());
        assert_eq!(c.cmd(&["RPUSH", "l", "a"]), int(1));
        assert_eq!(c.cmd(&["GETDEL", "l"]), err(WRONGTYPE));
        assert_eq!(c.cmd(&["MSET", "a", "1", "b", "2"]), ok());
        // EXISTS counts a key as often as it is named; DEL deletes it once.
        assert_eq!(c.cmd(&["EXISTS", "a", "b", "l", "nope", "a"]), int(4));
        assert_eq!(c.cmd(&["DEL", "a", "a", "nope", "l"]), int(2));
        assert_eq!(c.cmd(&["EXISTS", "a", "l"]), int(0));
        assert_eq!(c.cmd(&["DEL", "a"]), int(0));
        assert_eq!(c.cmd(&["EXISTS", "b"]), int(1));
        drop(c);
        kv.stop();
    });
}

#[test]
fn incr_decr_and_their_errors() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        assert_eq!(c.cmd(&["INCR", "n"]), int(1));
        assert_eq!(c.cmd(&["INCR", "n"]), int(2));
        assert_eq!(c.cmd(&["INCRBY", "n", "40"]), int(42));
        assert_eq!(c.cmd(&["DECR", "n"]), int(41));
        assert_eq!(c.cmd(&["DECRBY", "n", "50"]), int(-9));
        assert_eq!(c.cmd(&["INCRBY", "n", "-1"]), int(-10));
        assert_eq!(c.cmd(&["GET", "n"]), bulk("-10"));
        assert_eq!(c.cmd(&["DECR", "m"]), int(-1));
        assert_eq!(c.cmd(&["DECRBY", "o", "-5"]), int(5));
        // A stored number, as text.
        assert_eq!(c.cmd(&["SET", "s", "100"]), ok());
        assert_eq!(c.cmd(&["INCR", "s"]), int(101));
        // Not numbers, as Redis's string2ll sees them.
        for bad in [
            "abc",
            "",
            " 1",
            "1 ",
            "01",
            "+1",
            "1.5",
            "9223372036854775808",
        ] {
            assert_eq!(c.cmd(&["SET", "bad", bad]), ok());
            assert_eq!(c.cmd(&["INCR", "bad"]), err(NOT_INTEGER), "{bad:?}");
            assert_eq!(c.cmd(&["GET", "bad"]), bulk(bad));
        }
        assert_eq!(c.cmd(&["INCRBY", "n", "x"]), err(NOT_INTEGER));
        assert_eq!(c.cmd(&["DECRBY", "n", "1.0"]), err(NOT_INTEGER));
        // Overflow, both ways.
        assert_eq!(c.cmd(&["SET", "max", "9223372036854775807"]), ok());
        assert_eq!(
            c.cmd(&["INCR", "max"]),
            err("ERR increment or decrement would overflow")
        );
        assert_eq!(c.cmd(&["SET", "min", "-9223372036854775808"]), ok());
        assert_eq!(
            c.cmd(&["DECR", "min"]),
            err("ERR increment or decrement would overflow")
        );
        assert_eq!(
            c.cmd(&["DECRBY", "n", "-9223372036854775808"]),
            err("ERR decrement would overflow")
        );
        assert_eq!(c.cmd(&["GET", "max"]), bulk("9223372036854775807"));
        assert_eq!(c.cmd(&["RPUSH", "l", "1"]), int(1));
        assert_eq!(c.cmd(&["INCR", "l"]), err(WRONGTYPE));
        assert_eq!(c.cmd(&["DECRBY", "l", "1"]), err(WRONGTYPE));
        drop(c);
        kv.stop();
    });
}

#[test]
fn append_strlen_mget_and_mset() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        assert_eq!(c.cmd(&["STRLEN", "k"]), int(0));
        assert_eq!(c.cmd(&["APPEND", "k", "Hello"]), int(5));
        assert_eq!(c.cmd(&["APPEND", "k", ", world"]), int(12));
        assert_eq!(c.cmd(&["GET", "k"]), bulk("Hello, world"));
        assert_eq!(c.cmd(&["STRLEN", "k"]), int(12));
        assert_eq!(c.cmd(&["APPEND", "k", ""]), int(12));
        assert_eq!(c.cmd(&["MSET", "a", "1", "b", "2", "a", "3"]), ok());
        assert_eq!(c.cmd(&["RPUSH", "l", "x"]), int(1));
        // A key of another type reads as nil in MGET.
        assert_eq!(
            c.cmd(&["MGET", "a", "b", "nope", "l", "k"]),
            array(vec![
                bulk("3"),
                bulk("2"),
                nil(),
                nil(),
                bulk("Hello, world")
            ])
        );
        assert_eq!(c.cmd(&["APPEND", "l", "x"]), err(WRONGTYPE));
        assert_eq!(c.cmd(&["STRLEN", "l"]), err(WRONGTYPE));
        // MSET replaces a value of another type.
        assert_eq!(c.cmd(&["MSET", "l", "s"]), ok());
        assert_eq!(c.cmd(&["GET", "l"]), bulk("s"));
        drop(c);
        kv.stop();
    });
}

#[test]
fn type_names_each_kind() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        assert_eq!(c.cmd(&["SET", "s", "v"]), ok());
        assert_eq!(c.cmd(&["LPUSH", "l", "v"]), int(1));
        assert_eq!(c.cmd(&["HSET", "h", "f", "v"]), int(1));
        assert_eq!(c.cmd(&["TYPE", "s"]), simple("string"));
        assert_eq!(c.cmd(&["TYPE", "l"]), simple("list"));
        assert_eq!(c.cmd(&["TYPE", "h"]), simple("hash"));
        assert_eq!(c.cmd(&["TYPE", "nope"]), simple("none"));
        drop(c);
        kv.stop();
    });
}

// ---- Lists and hashes -------------------------------------------------------

#[test]
fn lists_push_pop_and_range() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        assert_eq!(c.cmd(&["LPUSH", "l", "a", "b", "c"]), int(3));
        assert_eq!(c.cmd(&["RPUSH", "l", "d", "e"]), int(5));
        assert_eq!(c.cmd(&["LLEN", "l"]), int(5));
        assert_eq!(
            c.cmd(&["LRANGE", "l", "0", "-1"]),
            bulks(&["c", "b", "a", "d", "e"])
        );
        let ranges: &[(&str, &str, &[&str])] = &[
            ("0", "0", &["c"]),
            ("1", "2", &["b", "a"]),
            ("-2", "-1", &["d", "e"]),
            ("-100", "100", &["c", "b", "a", "d", "e"]),
            ("3", "1", &[]),
            ("5", "10", &[]),
            ("-1", "-2", &[]),
            ("0", "-100", &[]),
            ("4", "4", &["e"]),
        ];
        for (start, stop, items) in ranges {
            assert_eq!(
                c.cmd(&["LRANGE", "l", start, stop]),
                bulks(items),
                "LRANGE {start} {stop}"
            );
        }
        assert_eq!(c.cmd(&["LRANGE", "l", "a", "1"]), err(NOT_INTEGER));
        assert_eq!(c.cmd(&["LRANGE", "l", "0", "1.5"]), err(NOT_INTEGER));
        assert_eq!(c.cmd(&["LRANGE", "nope", "0", "-1"]), array(vec![]));
        assert_eq!(c.cmd(&["LPOP", "l"]), bulk("c"));
        assert_eq!(c.cmd(&["RPOP", "l"]), bulk("e"));
        assert_eq!(c.cmd(&["LPOP", "l", "2"]), bulks(&["b", "a"]));
        assert_eq!(c.cmd(&["RPUSH", "l", "x", "y"]), int(3));
        assert_eq!(c.cmd(&["RPOP", "l", "2"]), bulks(&["y", "x"]));
        // Popping the last item deletes the list.
        assert_eq!(c.cmd(&["LPOP", "l", "10"]), bulks(&["d"]));
        assert_eq!(c.cmd(&["EXISTS", "l"]), int(0));
        assert_eq!(c.cmd(&["LLEN", "l"]), int(0));
        assert_eq!(c.cmd(&["LPOP", "l"]), nil());
        assert_eq!(c.cmd(&["RPOP", "l"]), nil());
        assert_eq!(c.cmd(&["LPOP", "l", "1"]), Reply::Array(None));
        assert_eq!(
            c.cmd(&["LPOP", "l", "-1"]),
            err("ERR value is out of range, must be positive")
        );
        assert_eq!(
            c.cmd(&["RPOP", "l", "x"]),
            err("ERR value is out of range, must be positive")
        );
        assert_eq!(c.cmd(&["RPUSH", "one", "x"]), int(1));
        assert_eq!(c.cmd(&["RPOP", "one"]), bulk("x"));
        assert_eq!(c.cmd(&["TYPE", "one"]), simple("none"));
        // The wrong type.
        assert_eq!(c.cmd(&["SET", "s", "v"]), ok());
        for args in [
            &["LPUSH", "s", "x"][..],
            &["RPUSH", "s", "x"],
            &["LPOP", "s"],
            &["RPOP", "s", "1"],
            &["LLEN", "s"],
            &["LRANGE", "s", "0", "-1"],
        ] {
            assert_eq!(c.cmd(args), err(WRONGTYPE), "{args:?}");
        }
        assert_eq!(c.cmd(&["GET", "s"]), bulk("v"));
        drop(c);
        kv.stop();
    });
}

#[test]
fn lpop_with_a_count_of_zero() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        assert_eq!(c.cmd(&["RPUSH", "l", "a"]), int(1));
        assert_eq!(c.cmd(&["LPOP", "l", "0"]), array(vec![]));
        assert_eq!(c.cmd(&["LLEN", "l"]), int(1));
        drop(c);
        kv.stop();
    });
}

/// The pairs of an HGETALL reply, in any order (Redis does not promise one).
fn pairs(reply: Reply) -> BTreeSet<(Vec<u8>, Vec<u8>)> {
    let Reply::Array(Some(items)) = reply else {
        panic!("HGETALL replied {reply:?}");
    };
    assert!(items.len() % 2 == 0, "{items:?}");
    items
        .chunks(2)
        .map(|pair| match pair {
            [Reply::Bulk(Some(f)), Reply::Bulk(Some(v))] => (f.clone(), v.clone()),
            _ => panic!("not a field and a value: {pair:?}"),
        })
        .collect()
}

fn pairs_of(items: &[(&str, &str)]) -> BTreeSet<(Vec<u8>, Vec<u8>)> {
    items
        .iter()
        .map(|(f, v)| (f.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

#[test]
fn hashes_set_get_delete_and_count() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        assert_eq!(c.cmd(&["HSET", "h", "a", "1", "b", "2"]), int(2));
        assert_eq!(c.cmd(&["HSET", "h", "a", "3", "c", "4"]), int(1));
        assert_eq!(c.cmd(&["HGET", "h", "a"]), bulk("3"));
        assert_eq!(c.cmd(&["HGET", "h", "z"]), nil());
        assert_eq!(c.cmd(&["HGET", "nope", "a"]), nil());
        assert_eq!(c.cmd(&["HLEN", "h"]), int(3));
        assert_eq!(c.cmd(&["HLEN", "nope"]), int(0));
        assert_eq!(
            pairs(c.cmd(&["HGETALL", "h"])),
            pairs_of(&[("a", "3"), ("b", "2"), ("c", "4")])
        );
        assert_eq!(c.cmd(&["HGETALL", "nope"]), array(vec![]));
        assert_eq!(c.cmd(&["HDEL", "h", "a", "z", "a"]), int(1));
        assert_eq!(c.cmd(&["HDEL", "nope", "a"]), int(0));
        assert_eq!(c.cmd(&["HLEN", "h"]), int(2));
        // HINCRBY.
        assert_eq!(c.cmd(&["HINCRBY", "h", "n", "5"]), int(5));
        assert_eq!(c.cmd(&["HINCRBY", "h", "n", "-10"]), int(-5));
        assert_eq!(c.cmd(&["HGET", "h", "n"]), bulk("-5"));
        assert_eq!(c.cmd(&["HINCRBY", "new", "f", "7"]), int(7));
        assert_eq!(c.cmd(&["HINCRBY", "h", "n", "x"]), err(NOT_INTEGER));
        assert_eq!(c.cmd(&["HSET", "h", "s", "hello"]), int(1));
        assert_eq!(
            c.cmd(&["HINCRBY", "h", "s", "1"]),
            err("ERR hash value is not an integer")
        );
        assert_eq!(c.cmd(&["HSET", "h", "max", "9223372036854775807"]), int(1));
        assert_eq!(
            c.cmd(&["HINCRBY", "h", "max", "1"]),
            err("ERR increment or decrement would overflow")
        );
        // Deleting the last field deletes the hash.
        assert_eq!(c.cmd(&["HDEL", "h", "b", "c", "n", "s", "max"]), int(5));
        assert_eq!(c.cmd(&["EXISTS", "h"]), int(0));
        assert_eq!(c.cmd(&["HGETALL", "h"]), array(vec![]));
        // The wrong type.
        assert_eq!(c.cmd(&["SET", "s", "v"]), ok());
        assert_eq!(c.cmd(&["RPUSH", "l", "v"]), int(1));
        for args in [
            &["HSET", "s", "f", "v"][..],
            &["HGET", "s", "f"],
            &["HDEL", "l", "f"],
            &["HGETALL", "s"],
            &["HLEN", "l"],
            &["HINCRBY", "s", "f", "1"],
        ] {
            assert_eq!(c.cmd(args), err(WRONGTYPE), "{args:?}");
        }
        assert_eq!(c.cmd(&["HSET", "h2", "f", "v"]), int(1));
        for args in [
            &["GET", "h2"][..],
            &["LPUSH", "h2", "x"],
            &["INCR", "h2"],
            &["APPEND", "h2", "x"],
        ] {
            assert_eq!(c.cmd(args), err(WRONGTYPE), "{args:?}");
        }
        drop(c);
        kv.stop();
    });
}

// ---- Expiry -----------------------------------------------------------------

#[test]
fn ttl_pttl_expire_and_persist_values() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        assert_eq!(c.cmd(&["TTL", "nope"]), int(-2));
        assert_eq!(c.cmd(&["PTTL", "nope"]), int(-2));
        assert_eq!(c.cmd(&["SET", "k", "v"]), ok());
        assert_eq!(c.cmd(&["TTL", "k"]), int(-1));
        assert_eq!(c.cmd(&["PTTL", "k"]), int(-1));
        assert_eq!(c.cmd(&["SET", "k", "v", "EX", "100"]), ok());
        assert_eq!(c.cmd(&["TTL", "k"]), int(100));
        let Reply::Int(pttl) = c.cmd(&["PTTL", "k"]) else {
            panic!("PTTL is not an integer");
        };
        assert!((99_000..=100_000).contains(&pttl), "PTTL {pttl}");
        assert_eq!(c.cmd(&["EXPIRE", "k", "50"]), int(1));
        assert_eq!(c.cmd(&["TTL", "k"]), int(50));
        assert_eq!(c.cmd(&["PEXPIRE", "k", "20000"]), int(1));
        assert_eq!(c.cmd(&["TTL", "k"]), int(20));
        assert_eq!(c.cmd(&["SET", "p", "v", "PX", "1500"]), ok());
        let Reply::Int(ttl) = c.cmd(&["TTL", "p"]) else {
            panic!("TTL is not an integer");
        };
        // Rounded to the nearest second, as Redis does.
        assert!(ttl == 1 || ttl == 2, "TTL {ttl} of 1.5 s");
        // PERSIST.
        assert_eq!(c.cmd(&["PERSIST", "k"]), int(1));
        assert_eq!(c.cmd(&["TTL", "k"]), int(-1));
        assert_eq!(c.cmd(&["PERSIST", "k"]), int(0));
        assert_eq!(c.cmd(&["PERSIST", "nope"]), int(0));
        // EXPIRE on nothing, and its errors.
        assert_eq!(c.cmd(&["EXPIRE", "nope", "10"]), int(0));
        assert_eq!(c.cmd(&["EXPIRE", "k", "ten"]), err(NOT_INTEGER));
        assert_eq!(c.cmd(&["PEXPIRE", "k", "1.5"]), err(NOT_INTEGER));
        assert_eq!(
            c.cmd(&["EXPIRE", "k", "10", "sometimes"]),
            err("ERR Unsupported option sometimes")
        );
        assert_eq!(
            c.cmd(&["EXPIRE", "k", "10", "NX", "XX"]),
            err("ERR NX and XX, GT or LT options at the same time are not compatible")
        );
        assert_eq!(
            c.cmd(&["EXPIRE", "k", "10", "GT", "LT"]),
            err("ERR GT and LT options at the same time are not compatible")
        );
        assert_eq!(
            c.cmd(&["EXPIRE", "k", "9223372036854775807"]),
            err("ERR invalid expire time in 'expire' command")
        );
        assert_eq!(c.cmd(&["TTL", "k"]), int(-1));
        // NX, XX, GT, LT (Redis 7); no TTL counts as forever.
        assert_eq!(c.cmd(&["EXPIRE", "k", "100", "XX"]), int(0));
        assert_eq!(c.cmd(&["EXPIRE", "k", "100", "GT"]), int(0));
        assert_eq!(c.cmd(&["EXPIRE", "k", "100", "NX"]), int(1));
        assert_eq!(c.cmd(&["EXPIRE", "k", "200", "NX"]), int(0));
        assert_eq!(c.cmd(&["EXPIRE", "k", "50", "GT"]), int(0));
        assert_eq!(c.cmd(&["EXPIRE", "k", "200", "GT"]), int(1));
        assert_eq!(c.cmd(&["EXPIRE", "k", "300", "LT"]), int(0));
        assert_eq!(c.cmd(&["EXPIRE", "k", "150", "lt"]), int(1));
        assert_eq!(c.cmd(&["EXPIRE", "k", "120", "XX"]), int(1));
        assert_eq!(c.cmd(&["TTL", "k"]), int(120));
        // SET without a TTL drops the TTL; MSET too.
        assert_eq!(c.cmd(&["SET", "k", "w"]), ok());
        assert_eq!(c.cmd(&["TTL", "k"]), int(-1));
        assert_eq!(c.cmd(&["SET", "m", "v", "EX", "100"]), ok());
        assert_eq!(c.cmd(&["MSET", "m", "w"]), ok());
        assert_eq!(c.cmd(&["TTL", "m"]), int(-1));
        // KEEPTTL keeps it; INCR, APPEND and the collections keep theirs.
        assert_eq!(c.cmd(&["SET", "k", "v", "EX", "100"]), ok());
        assert_eq!(c.cmd(&["SET", "k", "w", "KEEPTTL"]), ok());
        assert_eq!(c.cmd(&["TTL", "k"]), int(100));
        assert_eq!(c.cmd(&["SET", "n", "1", "EX", "100"]), ok());
        assert_eq!(c.cmd(&["INCR", "n"]), int(2));
        assert_eq!(c.cmd(&["APPEND", "n", "0"]), int(2));
        assert_eq!(c.cmd(&["TTL", "n"]), int(100));
        assert_eq!(c.cmd(&["RPUSH", "l", "a", "b"]), int(2));
        assert_eq!(c.cmd(&["EXPIRE", "l", "100"]), int(1));
        assert_eq!(c.cmd(&["RPUSH", "l", "c"]), int(3));
        assert_eq!(c.cmd(&["LPOP", "l"]), bulk("a"));
        assert_eq!(c.cmd(&["TTL", "l"]), int(100));
        // SET EX replaces the TTL.
        assert_eq!(c.cmd(&["SET", "k", "v", "EX", "30"]), ok());
        assert_eq!(c.cmd(&["TTL", "k"]), int(30));
        drop(c);
        kv.stop();
    });
}

#[test]
fn expire_zero_or_negative_deletes_at_once() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        assert_eq!(c.cmd(&["MSET", "a", "1", "b", "2", "c", "3"]), ok());
        assert_eq!(c.cmd(&["EXPIRE", "a", "0"]), int(1));
        assert_eq!(c.cmd(&["EXPIRE", "b", "-5"]), int(1));
        assert_eq!(c.cmd(&["PEXPIRE", "c", "-1"]), int(1));
        assert_eq!(c.cmd(&["EXISTS", "a", "b", "c"]), int(0));
        assert_eq!(c.cmd(&["DBSIZE"]), int(0));
        assert_eq!(c.cmd(&["TTL", "a"]), int(-2));
        assert_eq!(c.cmd(&["EXPIRE", "a", "0"]), int(0));
        // A list and a hash go the same way.
        assert_eq!(c.cmd(&["RPUSH", "l", "x"]), int(1));
        assert_eq!(c.cmd(&["HSET", "h", "f", "v"]), int(1));
        assert_eq!(c.cmd(&["EXPIRE", "l", "0"]), int(1));
        assert_eq!(c.cmd(&["PEXPIRE", "h", "0"]), int(1));
        assert_eq!(c.cmd(&["DBSIZE"]), int(0));
        drop(c);
        kv.stop();
    });
}

/// A key with a TTL of `t`, set after `start`: reads see it until a reply
/// that is sent no earlier than `start + t` and, after its deadline, never
/// again; DBSIZE drops without a read, soon after.
#[test]
fn a_key_expires_never_early_and_soon_after() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        let t = Duration::from_millis(300);
        let start = Instant::now();
        assert_eq!(c.cmd(&["SET", "read", "v", "PX", "300"]), ok());
        assert_eq!(c.cmd(&["SET", "unread", "v", "PX", "300"]), ok());
        // The deadlines are at most `t` after this instant.
        let set = Instant::now();
        let Reply::Int(pttl) = c.cmd(&["PTTL", "read"]) else {
            panic!("PTTL is not an integer");
        };
        assert!(pttl > 0 && pttl <= 300, "PTTL {pttl}");

        // Reads: present, then gone, never present after the deadline.
        let mut gone = None;
        for _ in 0..10_000 {
            let sent = Instant::now();
            let reply = c.cmd(&["GET", "read"]);
            let received = Instant::now();
            if reply == nil() {
                gone = Some(received);
                break;
            }
            assert_eq!(reply, bulk("v"));
            // Redis itself checks `now > deadline` on a millisecond clock
            // cached per event loop turn, so it may serve a key a
            // millisecond or so late; the example must not.
            let slack = if kv.is_real_redis() {
                Duration::from_millis(5)
            } else {
                Duration::ZERO
            };
            assert!(
                sent < set + t + slack,
                "read after its deadline: sent {:?} after the SET's reply, TTL {t:?}",
                sent - set
            );
            if start.elapsed() > t + t.max(Duration::from_secs(1)) {
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
        let gone = gone.expect("the key was never gone");
        let elapsed = gone - start;
        assert!(elapsed >= t, "expired early: after {elapsed:?}, TTL {t:?}");
        assert_not_late(elapsed, t);
        assert_eq!(c.cmd(&["GET", "read"]), nil());
        assert_eq!(c.cmd(&["TTL", "read"]), int(-2));

        // The unread key: DBSIZE reads no key, so only the timer removes it.
        let mut dropped = None;
        let bounded = eventually(t + t.max(Duration::from_secs(1)) + t, || {
            let reply = c.cmd(&["DBSIZE"]);
            if reply == int(0) {
                dropped = Some(Instant::now());
                return true;
            }
            assert_eq!(reply, int(1));
            false
        });
        assert!(bounded, "the unread key was not removed");
        let elapsed = dropped.unwrap() - start;
        assert!(elapsed >= t, "removed early: after {elapsed:?}, TTL {t:?}");
        assert_not_late(elapsed, t);
        drop(c);
        kv.stop();
    });
}

/// SET with a TTL replaces the old TTL's deadline, in both directions.
#[test]
fn set_ex_overrides_an_earlier_ttl() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        let t = Duration::from_millis(400);
        assert_eq!(c.cmd(&["SET", "k", "v", "PX", "100"]), ok());
        let start = Instant::now();
        assert_eq!(c.cmd(&["SET", "k", "w", "PX", "400"]), ok());
        let mut gone = None;
        let bounded = eventually(t + t.max(Duration::from_secs(1)), || {
            let reply = c.cmd(&["GET", "k"]);
            if reply == nil() {
                gone = Some(Instant::now());
                return true;
            }
            assert_eq!(reply, bulk("w"));
            false
        });
        assert!(bounded, "the key never expired");
        let elapsed = gone.unwrap() - start;
        assert!(
            elapsed >= t,
            "expired after {elapsed:?}, before its new TTL {t:?}"
        );
        assert_not_late(elapsed, t);
        drop(c);
        kv.stop();
    });
}

/// Every way a key loses or replaces its TTL cancels the old one: after the
/// old deadline has passed (and two keys whose TTL stays are gone, by their
/// timers), the others are all still there.
#[test]
fn a_ttl_removed_or_replaced_never_fires() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        let px = ["PX", "200"];
        let script: &[&[&str]] = &[
            // Survive:
            &["SET", "a", "v", px[0], px[1]],
            &["SET", "a", "v"],
            &["SET", "b", "v", px[0], px[1]],
            &["PERSIST", "b"],
            &["SET", "c", "v", px[0], px[1]],
            &["SET", "c", "v", "PX", "60000"],
            &["SET", "d", "v", px[0], px[1]],
            &["DEL", "d"],
            &["SET", "d", "v"],
            &["SET", "e", "v", px[0], px[1]],
            &["GETDEL", "e"],
            &["SET", "e", "v"],
            &["RPUSH", "g", "x"],
            &["PEXPIRE", "g", px[1]],
            &["RPOP", "g"],
            &["RPUSH", "g", "y"],
            &["HSET", "h", "f", "v"],
            &["PEXPIRE", "h", px[1]],
            &["HDEL", "h", "f"],
            &["HSET", "h", "f", "v"],
            &["SET", "i", "v", px[0], px[1]],
            &["MSET", "i", "v"],
            &["SET", "m", "v", px[0], px[1]],
            &["EXPIRE", "m", "100"],
            &["SET", "n", "v", px[0], px[1]],
            &["PEXPIRE", "n", "60000", "GT"],
            &["SET", "o", "v", px[0], px[1]],
            &["SET", "o", "w", "GET"],
            // Expire:
            &["SET", "j", "v", px[0], px[1]],
            &["SET", "j", "w", "KEEPTTL"],
            &["SET", "k", "1", px[0], px[1]],
            &["INCR", "k"],
        ];
        for args in script {
            let reply = c.cmd(args);
            assert!(!matches!(reply, Reply::Error(_)), "{args:?}: {reply:?}");
        }
        let survivors = ["a", "b", "c", "d", "e", "g", "h", "i", "m", "n", "o"];
        let t = Duration::from_millis(200);
        let bounded = eventually(t + Duration::from_secs(2), || {
            c.cmd(&["DBSIZE"]) == int(survivors.len() as i64)
        });
        assert!(
            bounded,
            "DBSIZE is {:?}, not {}",
            c.cmd(&["DBSIZE"]),
            survivors.len()
        );
        // The old timers were due no later than those of j and k: give the
        // wheel a few more ticks to show any that should not fire.
        thread::sleep(Duration::from_millis(100));
        assert_eq!(c.cmd(&["DBSIZE"]), int(survivors.len() as i64));
        for key in survivors {
            assert_eq!(c.cmd(&["EXISTS", key]), int(1), "{key} is gone");
        }
        assert_eq!(c.cmd(&["EXISTS", "j", "k"]), int(0));
        assert_eq!(c.cmd(&["TTL", "c"]), int(60));
        assert_eq!(c.cmd(&["TTL", "a"]), int(-1));
        drop(c);
        kv.stop();
    });
}

#[test]
fn flushall_cancels_every_ttl() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        assert_eq!(c.cmd(&["SET", "k", "v", "PX", "100"]), ok());
        assert_eq!(c.cmd(&["SET", "l", "v", "PX", "100"]), ok());
        assert_eq!(c.cmd(&["FLUSHALL"]), ok());
        assert_eq!(c.cmd(&["SET", "k", "w"]), ok());
        assert_eq!(c.cmd(&["SET", "l", "w", "PX", "60000"]), ok());
        thread::sleep(Duration::from_millis(300));
        assert_eq!(c.cmd(&["MGET", "k", "l"]), bulks(&["w", "w"]));
        assert_eq!(c.cmd(&["DBSIZE"]), int(2));
        drop(c);
        kv.stop();
    });
}

#[test]
fn many_keys_expire_by_their_timers() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        let n = 500;
        let start = Instant::now();
        // One pipelined write: TTLs from 100 to 349 ms.
        let mut requests = Vec::new();
        for i in 0..n {
            let ttl = (100 + i % 250).to_string();
            requests.extend(encode(&["SET", &format!("key:{i}"), "v", "PX", &ttl]));
        }
        c.send(&requests);
        for _ in 0..n {
            assert_eq!(c.read(), ok());
        }
        let reply = c.cmd(&["DBSIZE"]);
        if start.elapsed() < Duration::from_millis(100) {
            assert_eq!(reply, int(n as i64), "keys gone before their TTL");
        }
        let t = Duration::from_millis(349);
        let bounded = eventually(t + t.max(Duration::from_secs(1)), || {
            c.cmd(&["DBSIZE"]) == int(0)
        });
        assert!(
            bounded,
            "DBSIZE is {:?} after {:?}",
            c.cmd(&["DBSIZE"]),
            start.elapsed()
        );
        assert!(start.elapsed() >= t, "all gone after {:?}", start.elapsed());
        if !kv.is_real_redis() {
            assert_eq!(info_number(&mut c, "expired_keys"), n as u64);
        }
        drop(c);
        kv.stop();
    });
}

// ---- Pipelining, inline requests, binary values ---------------------------------

#[test]
fn a_hundred_pipelined_requests_are_answered_in_order() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        let mut requests = Vec::new();
        let mut expected = Vec::new();
        for i in 0..100 {
            match i % 4 {
                0 => {
                    requests.extend(encode(&["INCR", "n"]));
                    expected.push(int(i / 4 + 1));
                }
                1 => {
                    requests.extend(encode(&["SET", &format!("k{i}"), &format!("v{i}")]));
                    expected.push(ok());
                }
                2 => {
                    requests.extend(encode(&["GET", &format!("k{}", i - 1)]));
                    expected.push(bulk(format!("v{}", i - 1)));
                }
                _ => {
                    requests.extend(encode(&["ECHO", &i.to_string()]));
                    expected.push(bulk(i.to_string()));
                }
            }
        }
        c.send(&requests);
        let replies: Vec<Reply> = (0..100).map(|_| c.read()).collect();
        assert_eq!(replies, expected);
        drop(c);
        kv.stop();
    });
}

/// Ten thousand requests in one stream, written while the replies are read,
/// so that neither side's buffers decide the outcome.
#[test]
fn a_long_pipeline_is_answered_in_order() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        let n = 10_000;
        let mut requests = Vec::new();
        for _ in 0..n {
            requests.extend(encode(&["INCR", "n"]));
        }
        let mut writer = c.stream().try_clone().unwrap();
        let writing = thread::spawn(move || writer.write_all(&requests));
        for i in 1..=n {
            assert_eq!(c.read(), int(i));
        }
        writing.join().unwrap().unwrap();
        assert_eq!(c.cmd(&["GET", "n"]), bulk(n.to_string()));
        drop(c);
        kv.stop();
    });
}

/// A pipeline that arrives a few bytes at a time, cut anywhere: inside a
/// length, between CR and LF, inside a value.
#[test]
fn requests_split_across_reads_are_reassembled() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        let mut requests = Vec::new();
        for i in 0..20 {
            requests.extend(encode(&["SET", &format!("key{i}"), &"x".repeat(i * 10)]));
        }
        requests.extend(b"PING\r\n");
        requests.extend(encode(&["MGET", "key0", "key19"]));
        for chunk in requests.chunks(7) {
            c.send(chunk);
            thread::sleep(Duration::from_micros(500));
        }
        for _ in 0..20 {
            assert_eq!(c.read(), ok());
        }
        assert_eq!(c.read(), simple("PONG"));
        assert_eq!(c.read(), bulks(&["", &"x".repeat(190)]));
        drop(c);
        kv.stop();
    });
}

#[test]
fn inline_requests_as_typed_into_telnet() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        c.send(b"PING\r\n");
        assert_eq!(c.read(), simple("PONG"));
        // A bare LF ends a line too; blank lines are skipped.
        c.send(b"ping\n\r\n\n   \r\nECHO hi\n");
        assert_eq!(c.read(), simple("PONG"));
        assert_eq!(c.read(), bulk("hi"));
        c.send(b"  SET   k   \"hello world\"  \r\nGET k\r\n");
        assert_eq!(c.read(), ok());
        assert_eq!(c.read(), bulk("hello world"));
        let cases: &[(&[u8], &[u8])] = &[
            (b"\"a\\x41\\n\\\"b\"", b"aA\n\"b"),
            (b"\"\\r\\t\\b\\a\\\\\"", b"\r\t\x08\x07\\"),
            (b"\"\\x00\\xff\\xZZ\"", b"\x00\xffxZZ"),
            (b"'it\\'s'", b"it's"),
            (b"'\\n'", b"\\n"),
            (b"\"\"", b""),
            (b"''", b""),
            (b"\"with 'single' inside\"", b"with 'single' inside"),
        ];
        for (quoted, value) in cases {
            let mut line = b"SET k ".to_vec();
            line.extend_from_slice(quoted);
            line.extend_from_slice(b"\r\n");
            c.send(&line);
            assert_eq!(c.read(), ok(), "SET k {}", quoted.escape_ascii());
            assert_eq!(
                c.cmd(&["GET", "k"]),
                bulk(value),
                "SET k {}",
                quoted.escape_ascii()
            );
        }
        // Tabs separate arguments; inline and multibulk mix in one write.
        let mut mixed = b"ECHO\tx\r\n".to_vec();
        mixed.extend(encode(&["ECHO", "y"]));
        mixed.extend(b"ECHO z\r\n");
        c.send(&mixed);
        assert_eq!(c.read(), bulk("x"));
        assert_eq!(c.read(), bulk("y"));
        assert_eq!(c.read(), bulk("z"));
        c.send(b"NOSUCH a 'b c'\r\n");
        assert_eq!(
            c.read(),
            err("ERR unknown command 'NOSUCH', with args beginning with: 'a' 'b c' ")
        );
        c.send(b"GET\r\n");
        assert_eq!(c.read(), wrong_arity("get"));
        drop(c);
        kv.stop();
    });
}

/// As Redis's `sdssplitargs`: a quote inside an unquoted argument opens a
/// quoted part of that argument, which must end the argument when it closes.
#[test]
fn inline_quotes_may_start_inside_an_argument() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        let mut failures = Vec::new();
        for (line, expected) in [
            (&b"ECHO a\"b\"\r\n"[..], bulk("ab")),
            (b"ECHO a'b c'\r\n", bulk("ab c")),
            (b"ECHO x\"\\x41\"\r\n", bulk("xA")),
        ] {
            c.send(line);
            let got = c.read();
            if got != expected {
                failures.push(format!(
                    "{}: expected {expected:?}, got {got:?}",
                    line.escape_ascii()
                ));
            }
        }
        assert_none(&failures);
        c.send(b"ECHO a\"b c\"d\r\n");
        assert_eq!(
            c.read(),
            err("ERR Protocol error: unbalanced quotes in request")
        );
        c.expect_closed();
        kv.stop();
    });
}

/// Every byte value, CR LF and NUL included, in keys, values, list items,
/// hash fields, echoes and messages.
#[test]
fn values_are_binary_safe() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut c = kv.client();
        let mut value: Vec<u8> = (0..=255u8).collect();
        value.extend_from_slice(b"\r\n$3\r\nfoo\r\n*1\r\n\0\r\n");
        let key: &[u8] = b"k\0e\r\ny";
        assert_eq!(c.cmd(&[&b"SET"[..], key, &value]), ok());
        assert_eq!(c.cmd(&[&b"GET"[..], key]), bulk(&value));
        assert_eq!(c.cmd(&[&b"STRLEN"[..], key]), int(value.len() as i64));
        assert_eq!(c.cmd(&[&b"GET"[..], b"k\0e"]), nil());
        assert_eq!(
            c.cmd(&[&b"APPEND"[..], key, b"\0\r\n"]),
            int(value.len() as i64 + 3)
        );
        let mut appended = value.clone();
        appended.extend_from_slice(b"\0\r\n");
        assert_eq!(c.cmd(&[&b"GETDEL"[..], key]), bulk(&appended));
        assert_eq!(c.cmd(&[&b"ECHO"[..], &value]), bulk(&value));
        assert_eq!(
            c.cmd(&[&b"MSET"[..], b"\r\n", &value, b"\0", b"\0\0"]),
            ok()
        );
        assert_eq!(
            c.cmd(&[&b"MGET"[..], b"\r\n", b"\0"]),
            array(vec![bulk(&value), bulk(b"\0\0")])
        );
        assert_eq!(c.cmd(&[&b"RPUSH"[..], b"l", &value, b"\r\n"]), int(2));
        assert_eq!(
            c.cmd(&["LRANGE", "l", "0", "-1"]),
            array(vec![bulk(&value), bulk(b"\r\n")])
        );
        assert_eq!(c.cmd(&[&b"HSET"[..], b"h", b"\0f\r\n", &value]), int(1));
        assert_eq!(c.cmd(&[&b"HGET"[..], b"h", b"\0f\r\n"]), bulk(&value));
        // A megabyte of every byte value.
        let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 % 256) as u8).collect();
        assert_eq!(c.cmd(&[&b"SET"[..], b"big", &big]), ok());
        assert_eq!(c.cmd(&["GET", "big"]), bulk(&big));
        // Through pub/sub.
        let mut sub = kv.client();
        assert_eq!(
            sub.cmd(&[&b"SUBSCRIBE"[..], b"\0ch\r\n"]),
            array(vec![bulk("subscribe"), bulk(b"\0ch\r\n"), int(1)])
        );
        assert_eq!(c.cmd(&[&b"PUBLISH"[..], b"\0ch\r\n", &value]), int(1));
        assert_eq!(
            sub.read(),
            array(vec![bulk("message"), bulk(b"\0ch\r\n"), bulk(&value)])
        );
        drop((c, sub));
        kv.stop();
    });
}

// ---- Pub/sub ------------------------------------------------------------------

fn subscribed(channel: &str, count: i64) -> Reply {
    array(vec![bulk("subscribe"), bulk(channel), int(count)])
}

fn unsubscribed(channel: Option<&str>, count: i64) -> Reply {
    array(vec![
        bulk("unsubscribe"),
        channel.map_or(nil(), bulk),
        int(count),
    ])
}

fn message(channel: &str, payload: impl AsRef<[u8]>) -> Reply {
    array(vec![bulk("message"), bulk(channel), bulk(payload)])
}

#[test]
fn published_messages_reach_every_subscriber_in_order() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut s1 = kv.client();
        let mut s2 = kv.client();
        let mut s3 = kv.client();
        let mut p = kv.client();
        s1.send(&encode(&["SUBSCRIBE", "a", "b"]));
        assert_eq!(s1.read(), subscribed("a", 1));
        assert_eq!(s1.read(), subscribed("b", 2));
        assert_eq!(s2.cmd(&["SUBSCRIBE", "a"]), subscribed("a", 1));
        s3.send(&encode(&["SUBSCRIBE", "a", "a"]));
        assert_eq!(s3.read(), subscribed("a", 1));
        // Subscribing twice counts once.
        assert_eq!(s3.read(), subscribed("a", 1));
        let n = 200;
        for i in 0..n {
            assert_eq!(p.cmd(&["PUBLISH", "a", &format!("m{i}")]), int(3));
        }
        assert_eq!(p.cmd(&["PUBLISH", "b", "only s1"]), int(1));
        assert_eq!(p.cmd(&["PUBLISH", "nobody", "x"]), int(0));
        // Pipelined publishes fan out in order too.
        let mut batch = Vec::new();
        for i in n..2 * n {
            batch.extend(encode(&["PUBLISH", "a", &format!("m{i}")]));
        }
        p.send(&batch);
        for _ in n..2 * n {
            assert_eq!(p.read(), int(3));
        }
        for (name, s) in [("s1", &mut s1), ("s2", &mut s2), ("s3", &mut s3)] {
            for i in 0..n {
                assert_eq!(s.read(), message("a", format!("m{i}")), "{name}");
            }
            if name == "s1" {
                assert_eq!(s.read(), message("b", "only s1"));
            }
            for i in n..2 * n {
                assert_eq!(s.read(), message("a", format!("m{i}")), "{name}");
            }
        }
        // A subscriber that leaves is no longer counted.
        drop(s3);
        let bounded = eventually(MUST_SUCCEED, || p.cmd(&["PUBLISH", "a", "late"]) == int(2));
        assert!(bounded, "the closed subscriber is still counted");
        drop((s1, s2, p));
        kv.stop();
    });
}

#[test]
fn subscribed_mode_allows_only_subscribe_unsubscribe_ping_and_quit() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut s = kv.client();
        let mut p = kv.client();
        assert_eq!(s.cmd(&["SUBSCRIBE", "ch"]), subscribed("ch", 1));
        for (args, name) in [
            (&["GET", "k"][..], "get"),
            (&["SET", "k", "v"], "set"),
            (&["PUBLISH", "ch", "x"], "publish"),
            (&["DBSIZE"], "dbsize"),
        ] {
            assert_eq!(
                s.cmd(args),
                err(&format!(
                    "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / \
                     PING / QUIT / RESET are allowed in this context"
                )),
                "{args:?}"
            );
        }
        assert_eq!(p.cmd(&["EXISTS", "k"]), int(0));
        assert_eq!(s.cmd(&["PING"]), bulks(&["pong", ""]));
        assert_eq!(s.cmd(&["PING", "hi"]), bulks(&["pong", "hi"]));
        assert_eq!(s.cmd(&["SUBSCRIBE", "other"]), subscribed("other", 2));
        // Unsubscribing from a channel not subscribed to still replies.
        assert_eq!(
            s.cmd(&["UNSUBSCRIBE", "never"]),
            unsubscribed(Some("never"), 2)
        );
        assert_eq!(
            s.cmd(&["UNSUBSCRIBE", "other"]),
            unsubscribed(Some("other"), 1)
        );
        assert_eq!(p.cmd(&["PUBLISH", "other", "x"]), int(0));
        assert_eq!(p.cmd(&["PUBLISH", "ch", "x"]), int(1));
        assert_eq!(s.read(), message("ch", "x"));
        // UNSUBSCRIBE with no channel leaves them all, and ends the mode.
        assert_eq!(s.cmd(&["UNSUBSCRIBE"]), unsubscribed(Some("ch"), 0));
        assert_eq!(s.cmd(&["PING"]), simple("PONG"));
        assert_eq!(s.cmd(&["GET", "k"]), nil());
        assert_eq!(s.cmd(&["UNSUBSCRIBE"]), unsubscribed(None, 0));
        assert_eq!(p.cmd(&["PUBLISH", "ch", "x"]), int(0));
        // QUIT is allowed.
        assert_eq!(s.cmd(&["SUBSCRIBE", "a"]), subscribed("a", 1));
        assert_eq!(s.cmd(&["QUIT"]), ok());
        s.expect_closed();
        let bounded = eventually(MUST_SUCCEED, || p.cmd(&["PUBLISH", "a", "x"]) == int(0));
        assert!(bounded, "a subscriber that quit is still counted");
        drop(p);
        kv.stop();
    });
}

/// UNSUBSCRIBE without channels leaves each, and each reply counts the
/// subscriptions left, down to zero.
#[test]
fn unsubscribe_from_all_counts_down_to_zero() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let mut s = kv.client();
        s.send(&encode(&["SUBSCRIBE", "a", "b", "c"]));
        for (i, channel) in ["a", "b", "c"].into_iter().enumerate() {
            assert_eq!(s.read(), subscribed(channel, i as i64 + 1));
        }
        s.send(&encode(&["UNSUBSCRIBE"]));
        let mut left = BTreeSet::new();
        let mut counts = Vec::new();
        for _ in 0..3 {
            let reply = s.read();
            match &reply {
                Reply::Array(Some(items)) if items.len() == 3 => {
                    assert_eq!(items[0], bulk("unsubscribe"), "{reply:?}");
                    left.insert(format!("{:?}", items[1]));
                    counts.push(items[2].clone());
                }
                _ => panic!("UNSUBSCRIBE replied {reply:?}"),
            }
        }
        assert_eq!(left.len(), 3, "{left:?}");
        assert_eq!(counts, [int(2), int(1), int(0)]);
        assert_eq!(s.cmd(&["PING"]), simple("PONG"));
        drop(s);
        kv.stop();
    });
}

/// A subscriber that does not read is cut off once its unsent output passes
/// the limit, never before; the others get every message, in order.
#[test]
fn a_subscriber_that_does_not_read_is_cut_at_the_output_limit() {
    watchdog(WATCHDOG, || {
        let limit = 256 << 10;
        let kv = start(Options {
            output_limit: limit,
            ..options()
        });
        // A small receive buffer, so that the kernel holds little for it.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&kv.addr.into()).unwrap();
        let mut slow = Client::on(socket.into());
        assert_eq!(slow.cmd(&["SUBSCRIBE", "ch"]), subscribed("ch", 1));
        let mut fast = kv.client();
        assert_eq!(fast.cmd(&["SUBSCRIBE", "ch"]), subscribed("ch", 1));

        let payload = |i: usize| {
            let mut m = format!("{i:08}:").into_bytes();
            m.resize(4096, b'.');
            m
        };
        let frame_len = encode(&[&b"message"[..], b"ch", &payload(0)]).len();
        let reading = thread::spawn(move || {
            // Every message, in order, up to the last.
            let mut got = 0;
            let start = Instant::now();
            loop {
                let reply = fast.read();
                if reply == message("ch", "end") {
                    return got;
                }
                assert_eq!(reply, message("ch", payload(got)), "fast, #{got}");
                got += 1;
                assert!(start.elapsed() < WATCHDOG, "fast subscriber: too slow");
            }
        });

        let mut p = kv.client();
        let max = 5_000; // 20 MB, far past the limit and the kernel's buffers
        let mut both = 0; // messages counted for both subscribers
        let mut sent = 0;
        let mut cut = false;
        for i in 0..max {
            let reply = p.cmd(&[&b"PUBLISH"[..], b"ch", &payload(i)]);
            sent += 1;
            match reply {
                Reply::Int(2) if !cut => both += 1,
                Reply::Int(1) => cut = true,
                other => panic!("PUBLISH #{i} replied {other:?} (cut: {cut})"),
            }
            if cut && sent >= both + 10 {
                break;
            }
        }
        assert!(
            cut,
            "a subscriber that does not read was never cut ({sent} sent)"
        );
        // Cut only past the limit: it was sent more than the limit.
        assert!(
            (both + 1) * frame_len > limit,
            "cut after {both} messages of {frame_len} bytes, below the limit {limit}"
        );
        assert_eq!(p.cmd(&["PUBLISH", "ch", "end"]), int(1));
        assert_eq!(reading.join().unwrap(), sent);

        // What the slow one gets is the messages in order, then the close.
        let rest = slow.read_to_close();
        let mut r = &rest[..];
        let mut got = 0;
        while let Ok(reply) = read_reply(&mut r) {
            assert_eq!(reply, message("ch", payload(got)), "slow, #{got}");
            got += 1;
        }
        assert!(
            got <= both + 1,
            "slow got {got}, only {both} were counted for it"
        );

        let info = p.cmd(&["INFO", "stats"]);
        assert_eq!(
            info_field(&info, "closed_at_limits").as_deref(),
            Some("1"),
            "{info:?}"
        );
        drop(p);
        kv.stop();
    });
}

// ---- Protocol errors and limits ---------------------------------------------------

/// Malformed input gets `-ERR Protocol error: ...` and the close; what came
/// before it in the same write is answered first.
#[test]
fn protocol_errors_reply_then_close() {
    watchdog(WATCHDOG, || {
        let kv = start_default();
        let long_inline = "a".repeat(70_000);
        let long_count = format!("*{}", "1".repeat(70_000));
        let long_bulk = format!("*1\r\n${}", "1".repeat(70_000));
        let cases: &[(&[u8], &str)] = &[
            (b"*abc\r\n", "invalid multibulk length"),
            (b"*1x\r\n", "invalid multibulk length"),
            (b"*2147483648\r\n", "invalid multibulk length"),
            (b"*1\r\nfoo\r\n", "expected '$', got 'f'"),
            (b"*1\r\n+PING\r\n", "expected '$', got '+'"),
            (b"*2\r\n$4\r\nECHO\r\n:1\r\n", "expected '$', got ':'"),
            (b"*2\r\n$4\r\nECHO\r\nx\r\n", "expected '$', got 'x'"),
            (b"*1\r\n$abc\r\n", "invalid bulk length"),
            (b"*1\r\n$-1\r\n", "invalid bulk length"),
            (b"*1\r\n$2000000000\r\n", "invalid bulk length"),
            (b"SET k \"abc\r\n", "unbalanced quotes in request"),
            (b"SET k 'abc\r\n", "unbalanced quotes in request"),
            (b"ECHO \"a\"b\r\n", "unbalanced quotes in request"),
            (long_inline.as_bytes(), "too big inline request"),
            (long_count.as_bytes(), "too big mbulk count string"),
            (long_bulk.as_bytes(), "too big bulk count string"),
        ];
        let mut failures = Vec::new();
        for (input, error) in cases {
            let mut c = kv.client();
            let mut bytes = b"PING\r\n".to_vec();
            bytes.extend_from_slice(input);
            c.send(&bytes);
            let what = String::from_utf8_lossy(&input[..input.len().min(40)]).into_owned();
            assert_eq!(c.read(), simple("PONG"), "{what:?}");
            let expected = err(&format!("ERR Protocol error: {error}"));
            match c.try_read() {
                Ok(got) if got == expected => {}
                got => failures.push(format!("{what:?}: expected {expected:?}, got {got:?}")),
            }
            let rest = c.read_to_close();
            if !rest.is_empty() {
                failures.push(format!(
                    "{what:?}: more after the error: b\"{}\"",
                    rest.escape_ascii()
                ));
            }
        }
        assert_none(&failures);
        // The server goes on.
        assert_eq!(kv.client().cmd(&["PING"]), simple("PONG"));
        kv.stop();
    });
}

/// Redis's cap of 1,048,576 arguments: a request at the cap is served, one
/// past it is a protocol error.
#[test]
fn the_argument_count_is_capped() {
    watchdog(WATCHDOG, || {
        let kv = start(options());
        let mut c = kv.client();
        c.send(b"*1048577\r\n");
        assert_eq!(
            c.read(),
            err("ERR Protocol error: invalid multibulk length")
        );
        c.expect_closed();
        // At the cap: a request of 1,048,576 empty arguments, all read (its
        // name is empty, so it is an unknown command).
        let mut c = kv.client();
        let count = 1 << 20;
        let mut request = format!("*{count}\r\n").into_bytes();
        for _ in 0..count {
            request.extend_from_slice(b"$0\r\n\r\n");
        }
        request.extend(encode(&["PING"]));
        let mut writer = c.stream().try_clone().unwrap();
        let writing = thread::spawn(move || writer.write_all(&request));
        let reply = c.read();
        let Reply::Error(e) = &reply else {
            panic!("{reply:?}");
        };
        assert!(
            e.starts_with("ERR unknown command '', with args beginning with: '' '' "),
            "{e}"
        );
        assert_eq!(c.read(), simple("PONG"));
        writing.join().unwrap().unwrap();
        drop(c);
        kv.stop();
    });
}

#[test]
fn a_bulk_string_over_max_request_bytes_is_a_protocol_error() {
    watchdog(WATCHDOG, || {
        let kv = start(Options {
            max_request_bytes: 1000,
            ..options()
        });
        let mut c = kv.client();
        let at_limit = "x".repeat(1000);
        assert_eq!(c.cmd(&["SET", "k", &at_limit]), ok());
        assert_eq!(c.cmd(&["STRLEN", "k"]), int(1000));
        c.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1001\r\n");
        assert_eq!(c.read(), err("ERR Protocol error: invalid bulk length"));
        c.expect_closed();
        assert_eq!(kv.client().cmd(&["STRLEN", "k"]), int(1000));
        kv.stop();
    });
}

/// This process's resident and virtual memory, in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
    };
    (field("VmRSS:"), field("VmSize:"))
}

/// A bulk length the server will not take is refused before anything is
/// allocated for it, and one it will take grows the server only by the bytes
/// that arrive. The server runs in this process, so the process's memory is
/// its memory; the test runs in a child process of its own, so that other
/// tests' allocations do not count.
#[test]
fn a_huge_bulk_length_is_refused_without_allocating() {
    in_child(
        "KV_SERVER_TEST_CHILD",
        "a_huge_bulk_length_is_refused_without_allocating",
        || {
            watchdog(WATCHDOG, || {
                // Room for 1.5 GB requests: a 1.2 GB announcement is legal.
                let kv = start(Options {
                    max_request_bytes: 1_500_000_000,
                    ..options()
                });
                let mut warm = kv.client();
                assert_eq!(warm.cmd(&["PING"]), simple("PONG"));
                let (rss, vm) = memory();

                let mut refused = kv.client();
                refused.send(b"*1\r\n$2000000000\r\n");
                assert_eq!(
                    refused.read(),
                    err("ERR Protocol error: invalid bulk length")
                );
                refused.expect_closed();

                let mut announced = kv.client();
                announced.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1200000000\r\n");
                announced.send(&vec![b'x'; 100_000]);
                // A request on another connection is answered after the
                // server has handled what arrived before it (one thread).
                assert_eq!(warm.cmd(&["PING"]), simple("PONG"));
                thread::sleep(Duration::from_millis(50));
                assert_eq!(warm.cmd(&["PING"]), simple("PONG"));
                let (rss2, vm2) = memory();
                let mib = |b: u64| b as f64 / f64::from(1 << 20);
                assert!(
                    rss2 < rss + (64 << 20),
                    "resident memory grew from {:.1} to {:.1} MiB",
                    mib(rss),
                    mib(rss2)
                );
                assert!(
                    vm2 < vm + (1 << 30),
                    "virtual memory grew from {:.1} to {:.1} MiB: the announced length was reserved",
                    mib(vm),
                    mib(vm2)
                );
                drop((warm, announced));
                kv.stop();
            })
        },
    );
}

// ---- Connections ----------------------------------------------------------------

/// An idle client is closed after the idle timeout, never before; one that
/// keeps talking is not, nor is a subscriber.
#[test]
fn idle_clients_are_closed_never_early() {
    watchdog(WATCHDOG, || {
        let t = Duration::from_millis(300);
        let kv = start(Options {
            idle_timeout: Some(t),
            ..options()
        });
        let addr = kv.addr;
        let quiet = thread::spawn(move || {
            let start = Instant::now();
            let mut c = Client::connect(addr);
            assert_eq!(c.cmd(&["PING"]), simple("PONG"));
            c.expect_closed();
            start.elapsed()
        });
        let silent = thread::spawn(move || {
            // Connected, never a byte.
            let start = Instant::now();
            let c = Client::connect(addr);
            c.expect_closed();
            start.elapsed()
        });
        let after_request = thread::spawn(move || {
            let mut c = Client::connect(addr);
            assert_eq!(c.cmd(&["SET", "k", "v"]), ok());
            thread::sleep(Duration::from_millis(100));
            // Idle from this request on.
            let start = Instant::now();
            assert_eq!(c.cmd(&["GET", "k"]), bulk("v"));
            c.expect_closed();
            start.elapsed()
        });
        let busy = thread::spawn(move || {
            let mut c = Client::connect(addr);
            for _ in 0..18 {
                assert_eq!(c.cmd(&["PING"]), simple("PONG"));
                thread::sleep(t / 6);
            }
        });
        let subscriber = thread::spawn(move || {
            let mut c = Client::connect(addr);
            assert_eq!(c.cmd(&["SUBSCRIBE", "ch"]), subscribed("ch", 1));
            thread::sleep(t * 3);
            assert_eq!(c.cmd(&["PING"]), bulks(&["pong", ""]));
            // Unsubscribed, it is an ordinary client again.
            let start = Instant::now();
            assert_eq!(c.cmd(&["UNSUBSCRIBE"]), unsubscribed(Some("ch"), 0));
            c.expect_closed();
            start.elapsed()
        });
        for (name, thread) in [
            ("quiet", quiet),
            ("silent", silent),
            ("after a request", after_request),
            ("unsubscribed", subscriber),
        ] {
            let elapsed = thread.join().unwrap();
            assert!(
                elapsed >= t,
                "{name}: closed after {elapsed:?}, idle timeout {t:?}"
            );
            assert_not_late(elapsed, t);
        }
        busy.join().unwrap();
        let report = kv.stop().unwrap();
        assert_eq!(report.total.closed_idle, 4, "{report:?}");
    });
}

#[test]
fn clients_past_max_clients_are_refused() {
    watchdog(WATCHDOG, || {
        let kv = start(Options {
            max_clients: 3,
            ..options()
        });
        let mut clients: Vec<Client> = (0..3).map(|_| kv.client()).collect();
        for c in &mut clients {
            assert_eq!(c.cmd(&["PING"]), simple("PONG"));
        }
        let mut extra = kv.client();
        assert_eq!(extra.read(), err("ERR max number of clients reached"));
        extra.expect_closed();
        // Those served go on.
        assert_eq!(clients[2].cmd(&["SET", "k", "v"]), ok());
        // One leaves: a new one is served (once the server has seen it go).
        drop(clients.remove(0));
        let mut served = None;
        let bounded = eventually(MUST_SUCCEED, || {
            let mut c = kv.client();
            c.send(&encode(&["GET", "k"]));
            match c.try_read() {
                Ok(reply) if reply == bulk("v") => {
                    served = Some(c);
                    true
                }
                Ok(reply) => {
                    assert_eq!(reply, err("ERR max number of clients reached"));
                    false
                }
                Err(e) if is_reset(&e) || e.kind() == ErrorKind::UnexpectedEof => false,
                Err(e) => panic!("{e}"),
            }
        });
        assert!(bounded, "no client was served after one left");
        let mut served = served.unwrap();
        assert!(info_number(&mut served, "rejected_connections") >= 1);
        drop((clients, served));
        let report = kv.stop().unwrap();
        assert!(report.total.refused >= 1, "{report:?}");
    });
}

/// 500 clients connected at once, each served in turn while all are open.
#[test]
fn five_hundred_concurrent_clients_are_served() {
    watchdog(WATCHDOG, || {
        let kv = start(options());
        let addr = kv.addr;
        let (threads, per_thread) = (5, 100);
        let connected = Arc::new(Barrier::new(threads + 1));
        let written = Arc::new(Barrier::new(threads + 1));
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let connected = Arc::clone(&connected);
                let written = Arc::clone(&written);
                thread::spawn(move || {
                    let mut clients: Vec<Client> =
                        (0..per_thread).map(|_| Client::connect(addr)).collect();
                    connected.wait();
                    // Every client sends before any reads.
                    for (i, c) in clients.iter_mut().enumerate() {
                        let key = format!("client:{t}:{i}");
                        c.send(&encode(&["SET", &key, &key]));
                        c.send(&encode(&["INCR", "total"]));
                    }
                    for c in &mut clients {
                        assert_eq!(c.read(), ok());
                        assert!(matches!(c.read(), Reply::Int(1..)));
                    }
                    written.wait();
                    for (i, c) in clients.iter_mut().enumerate() {
                        let key = format!("client:{t}:{i}");
                        assert_eq!(c.cmd(&["GET", &key]), bulk(&key));
                    }
                    clients.len()
                })
            })
            .collect();
        connected.wait();
        written.wait();
        let mut c = kv.client();
        assert_eq!(info_number(&mut c, "connected_clients"), 501);
        assert_eq!(c.cmd(&["GET", "total"]), bulk("500"));
        assert_eq!(c.cmd(&["DBSIZE"]), int(501));
        let served: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
        assert_eq!(served, 500);
        drop(c);
        let report = kv.stop().unwrap();
        assert_eq!(report.total.accepted, 501, "{report:?}");
        assert_eq!(report.total.refused, 0, "{report:?}");
    });
}

/// A graceful shutdown lets a connected client's pending reply out, then
/// the run returns its report.
#[test]
fn shutdown_ends_the_run_with_a_report() {
    watchdog(WATCHDOG, || {
        let kv = start(options());
        let mut c = kv.client();
        assert_eq!(c.cmd(&["SET", "k", "v"]), ok());
        let report = kv.stop().unwrap();
        assert_eq!(report.total.accepted, 1, "{report:?}");
        c.expect_closed();
    });
}
