//! The HTTP/1.1 server example (`examples/http_server.rs`) over real
//! loopback sockets, spoken to byte by byte: keep-alive, pipelining,
//! HTTP/1.0, the routes, request bodies (`Content-Length` and chunked),
//! `100-continue`, the `Date` header, hostile clients (Slowloris, oversized
//! heads and bodies, request smuggling shapes, malformed requests, a client
//! that never reads), many clients, `max_connections`, threads and graceful
//! shutdown; and the framing function (`examples/http/request.rs`) under
//! proptest.
//!
//! Each test runs the example's own server (its `bind` and `run`) on a
//! background thread and talks to it with std sockets that have read
//! timeouts, through a small response reader ([`Client`]) that also checks
//! what every response must carry: `Content-Length`, a valid and current
//! `Date`, `Server: ontime`, CRLF line ends.
//!
//! Timing follows the house bounds: a deadline is never early, asserted
//! strictly from an instant taken before the client's first byte (the
//! server's clock starts later), and late by at most `max(1 s, T)`; waits
//! that must succeed get 10 s; every test runs under a watchdog and every
//! loop is bounded in count and in time. Nothing here asserts speed.

// The example's server, so that these tests exercise the very code the
// example runs. (Included as a module, the example must name its own
// modules as `self::`, not `crate::`, which is this test's root.)
#[allow(dead_code, unreachable_pub)]
#[path = "../examples/http_server.rs"]
mod http_server;

mod common;

use std::collections::BTreeSet;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown as Direction, SocketAddr, TcpStream};
use std::sync::{mpsc, Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ontime::serve::{Report, Shutdown};
use proptest::collection::vec;
use proptest::prelude::{any, prop_oneof, Just, Strategy};
use proptest::sample::Index;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};

use common::{assert_timed_out, watchdog, MUST_SUCCEED, WATCHDOG};
use http_server::{bind, request, run, Options};
use request::{BodyKind, Framed, Head, Limits, Method, Route};

// ---- The server ---------------------------------------------------------------

/// The example's server, bound to a free loopback port and running on a
/// thread of its own. Dropping it starts the shutdown (so that a failed
/// test does not leave it running); [`stop`](TestServer::stop) also waits
/// for `run` to return.
struct TestServer {
    addr: SocketAddr,
    shutdown: Shutdown,
    running: Option<JoinHandle<io::Result<Report>>>,
}

impl TestServer {
    fn start(options: Options) -> TestServer {
        let options = Options {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..options
        };
        let (server, addr) = bind(&options).expect("binding the HTTP server");
        let shutdown = server.shutdown_handle();
        let running = thread::Builder::new()
            .name("http-server".to_owned())
            .spawn(move || run(server, &options))
            .expect("spawning the server thread");
        TestServer {
            addr,
            shutdown,
            running: Some(running),
        }
    }

    /// The example's defaults.
    fn with_defaults() -> TestServer {
        TestServer::start(Options::default())
    }

    fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Shuts the server down and returns its report.
    fn stop(mut self) -> Report {
        self.shutdown.shutdown();
        self.join()
    }

    /// Waits (at most [`MUST_SUCCEED`]) for `run` to return, and returns
    /// its report.
    #[track_caller]
    fn join(&mut self) -> Report {
        let running = self.running.take().expect("joined once");
        let start = Instant::now();
        while !running.is_finished() {
            assert!(
                start.elapsed() < MUST_SUCCEED,
                "run did not return within {MUST_SUCCEED:?} of the shutdown"
            );
            thread::sleep(Duration::from_millis(10));
        }
        running
            .join()
            .expect("the server thread panicked")
            .expect("run failed")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.shutdown();
    }
}

// ---- Speaking HTTP ------------------------------------------------------------

/// A response as read off the wire.
#[derive(Debug)]
struct Response {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// The value of the header `name`, which must appear at most once.
    #[track_caller]
    fn header(&self, name: &str) -> Option<&str> {
        let mut values = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str());
        let first = values.next();
        assert!(
            values.next().is_none(),
            "{name} appears more than once in {self:?}"
        );
        first
    }

    /// Whether the response says `Connection: close`.
    fn closes(&self) -> bool {
        self.has_token("connection", "close")
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.header(name).is_some_and(|value| {
            value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    }

    /// The comma-separated tokens of `Allow`.
    fn allow(&self) -> BTreeSet<String> {
        self.header("allow")
            .unwrap_or_default()
            .split(',')
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect()
    }
}

/// A client connection with a read timeout and a buffer of bytes read but
/// not yet parsed into a response.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connecting to the HTTP server");
        Client::from_stream(stream)
    }

    fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(MUST_SUCCEED)).unwrap();
        stream.set_write_timeout(Some(MUST_SUCCEED)).unwrap();
        // Each write its own segment, so that a request written in parts
        // arrives in parts.
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    #[track_caller]
    fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.stream.write_all(bytes) {
            panic!("sending {}: {e}", show(bytes));
        }
    }

    /// Reads once more into the buffer; `Ok(0)` at end of file.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0; 16 << 10];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn fill_for(&mut self, what: &str) -> Result<usize, String> {
        self.fill().map_err(|e| {
            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
                format!(
                    "no {what} within the read timeout; read so far: {}",
                    show(&self.buf)
                )
            } else {
                format!("reading the {what}: {e}; read so far: {}", show(&self.buf))
            }
        })
    }

    /// The next response (a `100 Continue` included), to a request with
    /// `method`: a HEAD response has no body whatever its `Content-Length`.
    fn read_response(&mut self, method: &str) -> Result<Response, String> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.fill_for("response head")? == 0 {
                return Err(format!(
                    "the connection closed before a whole response head; read: {}",
                    show(&self.buf)
                ));
            }
        };
        let head: Vec<u8> = self.buf.drain(..end).collect();
        let mut response = parse_response_head(&head)?;
        if response.status < 200 {
            return Ok(response);
        }
        check_common_headers(&response)?;
        let length: usize = response
            .header("content-length")
            .unwrap_or_default()
            .parse()
            .map_err(|_| format!("a bad Content-Length in {response:?}"))?;
        if method != "HEAD" {
            while self.buf.len() < length {
                if self.fill_for("response body")? == 0 {
                    return Err(format!(
                        "the connection closed after {} of {length} body bytes of {response:?}",
                        self.buf.len()
                    ));
                }
            }
            response.body = self.buf.drain(..length).collect();
        }
        Ok(response)
    }

    /// The next response to a GET (or POST).
    #[track_caller]
    fn response(&mut self) -> Response {
        self.response_to("GET")
    }

    #[track_caller]
    fn response_to(&mut self, method: &str) -> Response {
        self.read_response(method).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The server closes the connection now: no more bytes, then end of file.
    fn read_closed(&mut self) -> Result<(), String> {
        if !self.buf.is_empty() {
            return Err(format!(
                "bytes after the last response: {}",
                show(&self.buf)
            ));
        }
        match self.fill() {
            Ok(0) => Ok(()),
            Ok(_) => Err(format!(
                "expected the connection to close, got more: {}",
                show(&self.buf)
            )),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(
                "the connection stayed open (no end of file within the read timeout)".to_owned(),
            ),
            Err(e) => Err(format!("expected end of file, got {e}")),
        }
    }

    #[track_caller]
    fn expect_closed(&mut self) {
        self.read_closed().unwrap_or_else(|e| panic!("{e}"));
    }

    /// As [`expect_closed`](Client::expect_closed), but a reset is as good
    /// as an end of file: for a client that sent bytes the server will not
    /// read.
    #[track_caller]
    fn expect_closed_or_reset(&mut self) {
        match self.read_closed() {
            Ok(()) => {}
            Err(e) if e.contains("reset") => {}
            Err(e) => panic!("{e}"),
        }
    }

    /// Nothing arrives for `quiet`.
    #[track_caller]
    fn expect_silence(&mut self, quiet: Duration) {
        self.stream.set_read_timeout(Some(quiet)).unwrap();
        let result = self.fill();
        self.stream.set_read_timeout(Some(MUST_SUCCEED)).unwrap();
        match result {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Ok(0) => panic!("the connection closed; expected it to stay quiet and open"),
            Ok(_) => panic!("expected nothing yet, got {}", show(&self.buf)),
            Err(e) => panic!("expected nothing yet, got {e}"),
        }
    }

    /// `GET /` on this connection, answered with the hello response.
    #[track_caller]
    fn get_hello(&mut self) {
        self.send(&get("/"));
        let response = self.response();
        assert_hello(&response, "GET /");
    }
}

/// The status line and headers of a response head (CRLF CRLF included).
fn parse_response_head(head: &[u8]) -> Result<Response, String> {
    let text = std::str::from_utf8(head)
        .map_err(|_| format!("a response head that is not UTF-8: {}", show(head)))?;
    let lines: Vec<&str> = text
        .strip_suffix("\r\n\r\n")
        .ok_or_else(|| format!("a response head without CRLF CRLF: {}", show(head)))?
        .split("\r\n")
        .collect();
    if lines.iter().any(|line| line.contains(['\r', '\n'])) {
        return Err(format!(
            "a bare CR or LF in the response head {}",
            show(head)
        ));
    }
    let status_line = lines[0];
    let rest = status_line
        .strip_prefix("HTTP/1.1 ")
        .ok_or_else(|| format!("a bad status line {status_line:?}"))?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("a bad status line {status_line:?}"));
    }
    let mut headers = Vec::new();
    for line in &lines[1..] {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("a header line without a colon: {line:?}"))?;
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(format!("a bad header name in {line:?}"));
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    Ok(Response {
        status: code.parse().expect("three digits"),
        reason: reason.to_owned(),
        headers,
        body: Vec::new(),
    })
}

/// What every final response carries: `Server: ontime`, a current
/// IMF-fixdate `Date`, and a `Content-Length`.
fn check_common_headers(response: &Response) -> Result<(), String> {
    let count = |name: &str| {
        response
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    };
    for name in ["server", "date", "content-length"] {
        if count(name) != 1 {
            return Err(format!(
                "{name} appears {} times in {response:?}",
                count(name)
            ));
        }
    }
    if response.header("server") != Some("ontime") {
        return Err(format!("not `Server: ontime`: {response:?}"));
    }
    let date = response.header("date").unwrap_or_default();
    let Some(secs) = parse_imf_fixdate(date) else {
        return Err(format!("Date {date:?} is not an IMF-fixdate: {response:?}"));
    };
    // Formatted once a second on a timer: a little stale, never ahead
    // (allowing a second for the clock's granularity); loose for a noisy
    // machine.
    let now = unix_now();
    if secs > now + 1 || secs + 10 < now {
        return Err(format!("Date {date:?} is not now ({now} s): {response:?}"));
    }
    let length = response.header("content-length").unwrap_or_default();
    if length.is_empty() || !length.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("a bad Content-Length {length:?}: {response:?}"));
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Bytes for a message: escaped, and cut short if long.
fn show(bytes: &[u8]) -> String {
    let shown = bytes.escape_ascii().to_string();
    if shown.len() > 400 {
        format!("b\"{}\"... ({} bytes)", &shown[..400], bytes.len())
    } else {
        format!("b\"{shown}\"")
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

fn post_echo(body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

fn post_chunked(path: &str, encoded: &[u8]) -> Vec<u8> {
    let mut request =
        format!("POST {path} HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    request.extend_from_slice(encoded);
    request
}

#[track_caller]
fn assert_hello(response: &Response, what: &str) {
    assert_eq!(response.status, 200, "{what}: {response:?}");
    assert_eq!(response.reason, "OK", "{what}: {response:?}");
    assert_eq!(response.body, b"Hello, World!", "{what}: {response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("text/plain"),
        "{what}: {response:?}"
    );
    assert_eq!(
        response.header("content-length"),
        Some("13"),
        "{what}: {response:?}"
    );
}

#[track_caller]
fn assert_echo(response: &Response, body: &[u8], what: &str) {
    assert_eq!(response.status, 200, "{what}: {response:?}");
    assert!(
        response.body == body,
        "{what}: echoed {} bytes ({}), sent {} ({})",
        response.body.len(),
        show(&response.body),
        body.len(),
        show(body)
    );
}

/// A small deterministic generator, for the sizes of writes.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

// ---- Dates -----------------------------------------------------------------

const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`; the example has the inverse, written separately).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The seconds since the epoch an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37
/// GMT`, RFC 9110 section 5.6.7) names, or `None` if `text` is not one: the
/// layout exactly, a real date, and the weekday that date fell on.
fn parse_imf_fixdate(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 29
        || &b[3..5] != b", "
        || b[7] != b' '
        || b[11] != b' '
        || b[16] != b' '
        || b[19] != b':'
        || b[22] != b':'
        || &b[25..] != b" GMT"
    {
        return None;
    }
    let number = |at: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(at)?;
        if digits.bytes().all(|c| c.is_ascii_digit()) {
            digits.parse().ok()
        } else {
            None
        }
    };
    let day = number(5..7)?;
    let month = MONTHS.iter().position(|m| *m == &text[8..11])? as i64 + 1;
    let year = number(12..16)?;
    let (hour, minute, second) = (number(17..19)?, number(20..22)?, number(23..25)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if day < 1 || day > month_days[month as usize - 1] || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if WEEKDAYS[days.rem_euclid(7) as usize] != &text[..3] {
        return None;
    }
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
}

// ---- Routes, keep-alive, pipelining -----------------------------------------

#[test]
fn the_options_default_to_the_documented_values() {
    let options = Options::default();
    assert_eq!(options.header_timeout, Duration::from_secs(10));
    assert_eq!(options.idle_timeout, Some(Duration::from_secs(60)));
    assert_eq!(options.max_header_bytes, 8 << 10);
    assert_eq!(options.max_body_bytes, 1 << 20);
    assert_eq!(options.max_connections, None);
    assert_eq!(options.threads, 1);
}

#[test]
fn get_root_and_plaintext_say_hello() {
    watchdog(WATCHDOG, || {
        let server = TestServer::with_defaults();
        let mut client = server.connect();
        for path in ["/", "/plaintext", "/?q=1", "/plaintext?a=b&c"] {
            client.send(&get(path));
            let response = client.response();
            assert_hello(&response, path);
            assert!(!response.closes(), "GET {path}: {response:?}");
        }
        drop(client);
        server.stop();
    });
}

#[test]
fn keep_alive_is_the_default_in_http11() {
    watchdog(WATCHDOG, || {
        let server = TestServer::with_defaults();
        let mut client = server.connect();
        for i in 0..100 {
            let body = format!("request {i}");
            client.send(&post_echo(body.as_bytes()));
            let response = client.response();
            assert_echo(&response, body.as_bytes(), &body);
            // No `Connection: close`: HTTP/1.1 keeps the connection by
            // default (and needs no `keep-alive` token to say so).
            assert!(!response.closes(), "{body}: {response:?}");
            client.get_hello();
        }
        drop(client);
        let report = server.stop();
        assert_eq!(report.total.accepted, 1, "one connection for every request");
    });
}

/// What a request must be answered with: its method, the status and the
/// body.
type Expected = (&'static str, u16, Vec<u8>);

/// Sixteen requests of every route and kind, and what each is answered.
fn mixed_batch() -> (Vec<u8>, Vec<Expected>) {
    let mut batch = Vec::new();
    let mut expected = Vec::new();
    for i in 0..16 {
        match i % 4 {
            0 => {
                batch.extend_from_slice(&get("/"));
                expected.push(("GET", 200, b"Hello, World!".to_vec()));
            }
            1 => {
                let body = format!("body of request {i}").into_bytes();
                batch.extend_from_slice(&post_echo(&body));
                expected.push(("POST", 200, body));
            }
            2 => {
                batch.extend_from_slice(b"HEAD /plaintext HTTP/1.1\r\nHost: test\r\n\r\n");
                expected.push(("HEAD", 200, Vec::new()));
            }
            _ => {
                // Fifteen bytes: one chunk of size f.
                let encoded = format!("f\r\nchunked body {i:02}\r\n0\r\n\r\n");
                batch.extend_from_slice(&post_chunked("/echo", encoded.as_bytes()));
                expected.push(("POST", 200, format!("chunked body {i:02}").into_bytes()));
            }
        }
    }
    (batch, expected)
}

#[track_caller]
fn read_batch(client: &mut Client, expected: &[Expected]) {
    for (i, (method, status, body)) in expected.iter().enumerate() {
        let response = client.response_to(method);
        assert_eq!(response.status, *status, "response {i}: {response:?}");
        assert!(
            response.body == *body,
            "response {i} out of order or wrong: {response:?}, expected body {}",
            show(body)
        );
    }
}

#[test]
fn sixteen_pipelined_requests_are_answered_in_order() {
    watchdog(WATCHDOG, || {
        let server = TestServer::with_defaults();
        let mut client = server.connect();
        let (batch, expected) = mixed_batch();
        client.send(&batch);
        read_batch(&mut client, &expected);
        // Nothing more, and the connection still serves.
        client.expect_silence(Duration::from_millis(100));
        client.get_hello();
        drop(client);
        server.stop();
    });
}

#[test]
fn pipelined_requests_split_at_every_kind_of_boundary_are_answered_in_order() {
    watchdog(WATCHDOG, || {
        let server = TestServer::with_defaults();
        let mut client = server.connect();
        let (batch, expected) = mixed_batch();
        let mut sizes = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut at = 0;
        // At most one write per byte of the batch.
        while at < batch.len() {
            let n = (1 + sizes.below(7)).min(batch.len() - at);
            client.send(&batch[at..at + n]);
            at += n;
        }
        read_batch(&mut client, &expected);
        client.get_hello();
        drop(client);
        server.stop();
    });
}

#[test]
fn a_thousand_pipelined_requests_in_one_write_are_answered_in_order() {
    watchdog(WATCHDOG, || {
        let server = TestServer::with_defaults();
        let mut client = server.connect();
        let mut batch = Vec::new();
        for i in 0..1000 {
            if i % 2 == 0 {
                batch.extend_from_slice(&get("/plaintext"));
            } else {
                batch.extend_from_slice(&post_echo(format!("n{i}").as_bytes()));
            }
        }
        client.send(&batch);
        for i in 0..1000 {
            let response = client.response();
            if i % 2 == 0 {
                assert_hello(&response, &format!("response {i}"));
            } else {
                assert_echo(
                    &response,
                    format!("n{i}").as_bytes(),
                    &format!("response {i}"),
                );
            }
        }
        client.get_hello();
        drop(client);
        server.stop();
    });
}

#[test]
fn http10_closes_unless_it_asks_for_keep_alive() {
    watchdog(WATCHDOG, || {
        let server = TestServer::with_defaults();

        let mut plain = server.connect();
        plain.send(b"GET / HTTP/1.0\r\n\r\n");
        let response = plain.response();
        assert_hello(&response, "HTTP/1.0 GET /");
        assert!(
            response.closes(),
            "HTTP/1.0 without keep-alive: {response:?}"
        );
        plain.expect_closed();

        let mut kept = server.connect();
        let requests: [(&[u8], &str, &[u8]); 3] = [
            (
                b"GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                "GET",
                b"Hello, World!",
            ),
            (
                b"POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 4\r\n\r\nabcd",
                "POST",
                b"abcd",
            ),
            (
                b"HEAD / HTTP/1.0\r\nHost: x\r\nConnection: Keep-Alive\r\n\r\n",
                "HEAD",
                b"",
            ),
        ];
        for (request, method, body) in requests {
            kept.send(request);
            let response = kept.response_to(method);
            assert_eq!(response.status, 200, "{}: {response:?}", show(request));
            assert_eq!(response.body, body, "{}: {response:?}", show(request));
            assert!(
                response.has_token("connection", "keep-alive") && !response.closes(),
                "HTTP/1.0 with keep-alive must be told it is kept: {} got {response:?}",
                show(request)
            );
        }
        // The last one without keep-alive closes.
        kept.send(b"GET / HTTP/1.0\r\n\r\n");
        let response = kept.response();
        assert_hello(&response, "HTTP/1.0 GET / after keep-alive ones");
        assert!(response.closes(), "{response:?}");
        kept.expect_closed();

        server.stop();
    });
}

#[test]
fn connection_close_is_honoured() {
    watchdog(WATCHDOG, || {
        let server = TestServer::with_defaults();

        for header in ["close", "Close", "keep-alive, close", "foo, CLOSE"] {
            let mut client = server.connect();
            client.send(
                format!("GET / HTTP/1.1\r\nHost: test\r\nConnection: {header}\r\n\r\n").as_bytes(),
            );
            let response = client.response();
            assert_hello(&response, header);
            assert!(response.closes(), "Connection: {header}: {response:?}");
            client.expect_closed();
        }

        // Pipelined: what follows the request that says close is not
        // answered.
        let mut client = server.connect();
        let mut batch = get("/");
        batch.extend_from_slice(
            b"GET /plaintext HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
        );
        batch.extend_from_slice(&get("/"));
        client.send(&batch);
        let first = client.response();
        assert_hello(&first, "first");
        assert!(!first.closes(), "{first:?}");
        let second = client.response();
        assert_hello(&second, "second");
        assert!(second.closes(), "{second:?}");
        client.expect_closed_or_reset();

        // A POST that says close: its body is read, echoed, then close.
        let mut client = server.connect();
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: 3\r\n\r\nxyz",
        );
        let response = client.response();
        assert_echo(&response, b"xyz", "POST with close");
        assert!(response.closes(), "{response:?}");
        client.expect_closed();

        server.stop();
    });
}

#[test]
fn head_sends_the_headers_only() {
    watchdog(WATCHDOG, || {
        let server = TestServer::with_defaults();
        let mut client = server.connect();
        for path in ["/", "/plaintext"] {
            client.send(format!("HEAD {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
            let response = client.response_to("HEAD");
            assert_eq!(response.status, 200, "HEAD {path}: {response:?}");
            assert_eq!(
                response.header("content-length"),
                Some("13"),
                "{response:?}"
            );
            assert_eq!(response.header("content-type"), Some("text/plain"));
            // The next response starts right after the head: no body was
            // sent (the reader would stumble on one).
            client.get_hello();
        }
        client.send(b"HEAD /nowhere HTTP/1.1\r\nHost: test\r\n\r\n");
        let response = client.response_to("HEAD");
        assert_eq!(response.status, 404, "{response:?}");
        client.get_hello();
        client.send(b"HEAD /echo HTTP/1.1\r\nHost: test\r\n\r\n");
        let response = client.response_to("HEAD");
        assert_eq!(response.status, 405, "HEAD /echo: {response:?}");
        assert_eq!(response.allow(), BTreeSet::from(["POST".to_owned()]));
        client.get_hello();
        drop(client);
        server.stop();
    });
}

#[test]
fn any_other_path_is_404() {
    watchdog(WATCHDOG, || {
        let server = TestServer::with_defaults();
        let mut client = server.connect();
        for path in [
            "/nope",
            "/plaintext/",
            "/plaintextx",
            "/PLAINTEXT",
            "/echo/",
            "//",
            "/index.html",
        ] {
            client.send(&get(path));
            let response = client.response();
            assert_eq!(response.status, 404, "GET {path}: {response:?}");
            assert!(!response.body.is_empty(), "GET {path}: {response:?}");
            assert!(
                !response.closes(),
                "a 404 keeps the connection: {response:?}"
            );
        }
        // A POST elsewhere: its body is read past, and the next request on
        // the connection is framed right.
        client.send(
            b"POST /elsewhere HTTP/1.1\r\nHost: test\r\nContent-Length: 22\r\n\r\nGET /smuggled HTTP/1.1",
        );
        let response = client.response();
        assert_eq!(response.status, 404, "{response:?}");
        client.get_hello();
        drop(client);
        server.stop();
    });
}

#[test]
fn another_method_on_a_known_path_is_405_with_allow() {
    watchdog(WATCHDOG, || {
        let server = TestServer::with_defaults();
        let mut client = server.connect();
        let get_head = BTreeSet::from(["GET".to_owned(), "HEAD".to_owned()]);
        let post = BTreeSet::from(["POST".to_owned()]);
        let cases: [(&[u8], &BTreeSet<String>); 6] = [
            (
                b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello",
                &get_head,
            ),
            (
                b"PUT /plaintext HTTP/1.1\r\nHost: test\r\nContent-Length: 1\r\n\r\nx",
                &get_head,
            ),
            (b"DELETE / HTTP/1.1\r\nHost: test\r\n\r\n", &get_head),
            (b"GET /echo HTTP/1.1\r\nHost: test\r\n\r\n", &post),
            (
                b"PUT /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\nab",
                &post,
            ),
            (b"OPTIONS /echo HTTP/1.1\r\nHost: test\r\n\r\n", &post),
        ];
        for (request, allow) in cases {
            client.send(request);
            let response = client.response();
            assert_eq!(response.status, 405, "{}: {response:?}", show(request));
            assert_eq!(&response.allow(), allow, "{}: {response:?}", show(request));
            assert!(
                !response.closes(),
                "a 405 keeps the connection: {response:?}"
            );
            client.get_hello();
        }
        drop(client);
        server.stop();
    });
}

// ---- Request bodies ---------------------------------------------------------

#[test]
fn post_echo_with_content_length() {
    watchdog(WATCHDOG, || {
        let server = TestServer::with_defaults();
        let mut client = server.connect();
        let all_bytes: Vec<u8> = (0..=255).collect();
        let large: Vec<u8> = (0..64 << 10).map(|i: u32| (i % 251) as u8).collect();
        let max: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 253) as u8).collect();
        for body in [
            &b""[..],
            b"hello",
            b"\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            &all_bytes,
            &large,
            &max,
        ] {
            client.send(&post_echo(body));
            let response = client.response();
            assert_echo(&response, body, &format!("a {}-byte body", body.len()));
        }
        // No Content-Length in HTTP/1.1: no body.
        client.send(b"POST /echo HTTP/1.1\r\nHost: test\r\n\r\n");
        assert_echo(&client.response(), b"", "no Content-Length");
        // The same length twice is one length.
        client.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc");
        assert_echo(&client.response(), b"abc", "Content-Length twice, equal");
        // A body in parts.
        client.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\n01");
        client.send(b"2345");
        client.send(b"6789");
        assert_echo(&client.response(), b"0123456789", "a body in three writes");
        drop(client);
        server.stop();
    });
}

#[test]
fn post_echo_with_a_chunked_body() {
    watchdog(WATCHDOG, || {
        let server = TestServer::with_defaults();
        let mut client = server.connect();
        let cases: [(&[u8], &[u8]); 7] = [
            (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
            // Chunk extensions, a quoted one included.
            (
                b"5;name=value\r\nhello\r\n1;a;b=\"c d\"\r\n!\r\n0;last\r\n\r\n",
                b"hello!",
            ),
            // Trailer fields.
            (
                b"5\r\nhello\r\n0\r\nX-Trailer: yes\r\nOther: 1\r\n\r\n",
                b"hello",
            ),
            // Upper and lower case hex, leading zeros.
            (
                b"A\r\n0123456789\r\na\r\nabcdefghij\r\n0005\r\nvwxyz\r\n000\r\n\r\n",
                b"0123456789abcdefghijvwxyz",
            ),
            (b"0\r\n\r\n", b""),
            // CRLFs inside chunk data are data.
            (b"4\r\n\r\n\r\n\r\n0\r\n\r\n", b"\r\n\r\n"),
            (b"1\r\n0\r\n1\r\n\n\r\n0\r\n\r\n", b"0\n"),
        ];
        for (encoded, decoded) in cases {
            client.send(&post_chunked("/echo", encoded));
            let response = client.response();
            assert_echo(&response, decoded, &show(encoded));
            assert!(!response.closes(), "{response:?}");
        }
        // The coding's name in any case; followed at once by another
        // request, which is framed right after the last chunk.
        let mut batch =
            b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                .to_vec();
        batch.extend_from_slice(&get("/"));
        client.send(&batch);
        assert_echo(&client.response(), b"abc", "Transfer-Encoding: Chunked");
        assert_hello(&client.response(), "GET after a chunked POST");

        // Large, in 4 KiB chunks; and exactly the body limit in 64 KiB ones.
        for (total, chunk) in [(256 << 10, 4 << 10), (1 << 20, 64 << 10)] {
            let body: Vec<u8> = (0..total).map(|i: usize| (i % 249) as u8).collect();
            let mut encoded = Vec::new();
            for part in body.chunks(chunk) {
                encoded.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                encoded.extend_from_slice(part);
                encoded.extend_from_slice(b"\r\n");
            }
            encoded.extend_from_slice(b"0\r\n\r\n");
            client.send(&post_chunked("/echo", &encoded));
            assert_echo(&client.response(), &body, &format!("{total} bytes chunked"));
        }

        // A chunked body written three bytes at a time.
        let encoded = b"7;x=y\r\npartial\r\n1\r\n \r\n6\r\nwrites\r\n0\r\nT: 1\r\n\r\n";
        let request = post_chunked("/echo", encoded);
        for piece in request.chunks(3) {
            client.send(piece);
        }
        assert_echo(&client.response(), b"partial writes", "three bytes a write");
        drop(client);
        server.stop();
    });
}

#[test]
fn expect_100_continue_is_answered_before_the_body_is_sent() {
    watchdog(WATCHDOG, || {
        let server = TestServer::with_defaults();
        let mut client = server.connect();

        // Content-Length: the 100 comes while the body is unsent.
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
        );
        let interim = client.response();
        assert_eq!(
            (interim.status, interim.reason.as_str()),
            (100, "Continue"),
            "{interim:?}"
        );
        assert!(
            client.buf.is_empty(),
            "more than the 100: {}",
            show(&client.buf)
        );
        client.send(b"hello world");
        assert_echo(&client.response(), b"hello world", "after the 100");

        // Chunked, and the name and value in another case.
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nexpect: 100-Continue\r\n\r\n",
        );
        assert_eq!(client.response().status, 100);
        client.send(b"4\r\nwiki\r\n0\r\n\r\n");
        assert_echo(&client.response(), b"wiki", "chunked after the 100");

        // One 100 per request: a body in two parts gets no second one; the
        // next request gets its own.
        for round in 0..2 {
            client.send(
                b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
            );
            assert_eq!(client.response().status, 100, "round {round}");
            client.send(b"ab");
            client.expect_silence(Duration::from_millis(100));
            client.send(b"cd");
            // The next thing read is the final response, not a second 100.
            assert_echo(&client.response(), b"abcd", &format!("round {round}"));
        }
        drop(client);

        // A body the server will refuse: 413 at once, no 100, so that the
        // client never sends it.
        let mut client = server.connect();
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 2000000\r\nExpect: 100-continue\r\n\r\n",
        );
        let response = client.response();
        assert_eq!(response.status, 413, "{response:?}");
        assert!(response.closes(), "{response:?}");
        client.expect_closed();

        server.stop();
    });
}

#[test]
fn a_half_closed_client_still_gets_its_responses() {
    watchdog(WATCHDOG, || {
        let server = TestServer::with_defaults();
        let mut client = server.connect();
        let mut batch = get("/");
        batch.extend_from_slice(&post_echo(b"last words"));
        client.send(&batch);
        client.stream.shutdown(Direction::Write).unwrap();
        assert_hello(&client.response(), "before the FIN");
        assert_echo(&client.response(), b"last words", "before the FIN");
        client.expect_closed();
        server.stop();
    });
}

#[test]
fn header_values_may_carry_obs_text() {
    watchdog(WATCHDOG, || {
        // RFC 9110 section 5.5: a field value may hold obs-text (bytes
        // 0x80 to 0xFF), which a recipient treats as opaque data; old
        // clients send Latin-1 there.
        let server = TestServer::with_defaults();
        let mut client = server.connect();
        for request in [
            &b"GET / HTTP/1.1\r\nHost: test\r\nUser-Agent: caf\xc3\xa9/1.0\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: test\r\nUser-Agent: caf\xe9/1.0\r\n\r\n",
        ] {
            client.send(request);
            let response = client
                .read_response("GET")
                .unwrap_or_else(|e| panic!("{}: {e}", show(request)));
            assert_eq!(response.status, 200, "{}: {response:?}", show(request));
        }
        drop(client);
        server.stop();
    });
}

#[test]
fn a_chunked_body_within_the_limit_is_served_however_small_its_chunks() {
    watchdog(WATCHDOG, || {
        // 48 KiB in one-byte chunks: six bytes on the wire for each byte
        // of body, under a body limit of 64 KiB.
        let server = TestServer::start(Options {
            max_body_bytes: 64 << 10,
            ..Options::default()
        });
        let body: Vec<u8> = (0..48 << 10).map(|i: u32| b'a' + (i % 26) as u8).collect();
        let mut encoded = Vec::new();
        for &byte in &body {
            encoded.extend_from_slice(b"1\r\n");
            encoded.push(byte);
            encoded.extend_from_slice(b"\r\n");
        }
        encoded.extend_from_slice(b"0\r\n\r\n");
        let request = post_chunked("/echo", &encoded);
        let mut client = server.connect();
        let mut writer = client.stream.try_clone().unwrap();
        // Written by another thread: the server may answer before it has
        // read it all.
        let writing = thread::spawn(move || writer.write_all(&request).map_err(|e| e.to_string()));
        let outcome = client.read_response("POST");
        let written = writing.join().unwrap();
        match outcome {
            Ok(response) => assert_echo(
                &response,
                &body,
                &format!(
                    "a {} KiB body in {} bytes of one-byte chunks (writing: {written:?})",
                    body.len() >> 10,
                    encoded.len()
                ),
            ),
            Err(e) => panic!(
                "a {} KiB body in {} bytes of one-byte chunks, limit 64 KiB: {e} (writing: {written:?})",
                body.len() >> 10,
                encoded.len()
            ),
        }
        drop(client);
        server.stop();
    });
}

// ---- Hostile and malformed requests --------------------------------------------

/// Each case is sent on a fresh connection, and must be answered with one
/// of its statuses, say `Connection: close`, and then close (nothing of
/// what follows in the bytes is answered). `normal` is served before and
/// after each. Returns every case that failed, with what it got.
fn rejections(
    server: &TestServer,
    normal: &mut Client,
    cases: &[(&str, Vec<u8>, &[u16])],
) -> Vec<String> {
    let mut failures = Vec::new();
    for (what, request, statuses) in cases {
        normal.get_hello();
        let mut client = server.connect();
        client
            .stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.send(request);
        let outcome = client.read_response("GET").and_then(|response| {
            if !statuses.contains(&response.status) {
                return Err(format!("expected status {statuses:?}, got {response:?}"));
            }
            if !response.closes() {
                return Err(format!("no `Connection: close` in {response:?}"));
            }
            client.read_closed()
        });
        if let Err(e) = outcome {
            failures.push(format!("{what}: sent {}: {e}", show(request)));
        }
        normal.get_hello();
    }
    failures
}

fn request(head_lines: &str, body: &str) -> Vec<u8> {
    format!("{head_lines}\r\n{body}").into_bytes()
}

#[test]
fn request_smuggling_shapes_are_refused() {
    watchdog(WATCHDOG, || {
        let server = TestServer::with_defaults();
        let mut normal = server.connect();
        let post = "POST /echo HTTP/1.1\r\nHost: test\r\n";
        let smuggled = "GET /smuggled HTTP/1.1\r\nHost: test\r\n\r\n";
        let chunked_post =
            |body: &str| request(&format!("{post}Transfer-Encoding: chunked\r\n"), body);
        let with_length =
            |value: &str| request(&format!("{post}Content-Length: {value}\r\n"), "abc");
        let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
            (
                "Content-Length and Transfer-Encoding",
                request(
                    &format!("{post}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n"),
                    &format!("0\r\n\r\n{smuggled}"),
                ),
                &[400],
            ),
            (
                "Transfer-Encoding and Content-Length",
                request(
                    &format!("{post}Transfer-Encoding: chunked\r\nContent-Length: 40\r\n"),
                    &format!("0\r\n\r\n{smuggled}"),
                ),
                &[400],
            ),
            (
                "two differing Content-Lengths",
                request(
                    &format!("{post}Content-Length: 3\r\nContent-Length: 4\r\n"),
                    "abcd",
                ),
                &[400],
            ),
            ("a Content-Length list", with_length("3, 3"), &[400]),
            ("a non-numeric Content-Length", with_length("abc"), &[400]),
            ("a negative Content-Length", with_length("-3"), &[400]),
            ("a signed Content-Length", with_length("+3"), &[400]),
            ("a hex Content-Length", with_length("0x3"), &[400]),
            ("an empty Content-Length", with_length(""), &[400]),
            (
                "a Content-Length with a space inside",
                with_length("1 2"),
                &[400],
            ),
            (
                "a Content-Length beyond any integer",
                with_length("99999999999999999999999999"),
                &[400, 413],
            ),
            (
                "Transfer-Encoding gzip",
                request(&format!("{post}Transfer-Encoding: gzip\r\n"), "abc"),
                &[400, 501],
            ),
            (
                "Transfer-Encoding gzip, chunked",
                request(
                    &format!("{post}Transfer-Encoding: gzip, chunked\r\n"),
                    "0\r\n\r\n",
                ),
                &[400, 501],
            ),
            (
                "Transfer-Encoding chunked, gzip",
                request(
                    &format!("{post}Transfer-Encoding: chunked, gzip\r\n"),
                    "0\r\n\r\n",
                ),
                &[400, 501],
            ),
            (
                "Transfer-Encoding chunked twice",
                request(
                    &format!("{post}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
                    "0\r\n\r\n",
                ),
                &[400, 501],
            ),
            (
                "Transfer-Encoding identity",
                request(&format!("{post}Transfer-Encoding: identity\r\n"), "abc"),
                &[400, 501],
            ),
            (
                "Transfer-Encoding xchunked",
                request(
                    &format!("{post}Transfer-Encoding: xchunked\r\n"),
                    "0\r\n\r\n",
                ),
                &[400, 501],
            ),
            (
                "Transfer-Encoding in HTTP/1.0",
                request(
                    "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n",
                    "0\r\n\r\n",
                ),
                &[400],
            ),
            (
                "an obs-fold line",
                request("GET / HTTP/1.1\r\nHost: test\r\nX-Folded: a\r\n b\r\n", ""),
                &[400],
            ),
            (
                "an obs-fold line with a tab",
                request("GET / HTTP/1.1\r\nHost: test\r\nX-Folded: a\r\n\tb\r\n", ""),
                &[400],
            ),
            (
                "an obs-fold Content-Length",
                request(&format!("{post}Content-Length: 1\r\n 0\r\n"), "0123456789"),
                &[400],
            ),
            (
                "an obs-fold first header",
                request("GET / HTTP/1.1\r\n Host: test\r\n", ""),
                &[400],
            ),
            (
                "bare LFs throughout",
                b"GET / HTTP/1.1\nHost: test\n\n".to_vec(),
                &[400],
            ),
            (
                "a bare LF ending the head",
                b"GET / HTTP/1.1\r\nHost: test\r\n\n".to_vec(),
                &[400],
            ),
            (
                "a bare LF ending a header",
                b"GET / HTTP/1.1\r\nHost: test\nX-After: 1\r\n\r\n".to_vec(),
                &[400],
            ),
            (
                "a bare LF ending the request line",
                b"GET / HTTP/1.1\nHost: test\r\n\r\n".to_vec(),
                &[400],
            ),
            (
                "a bare CR in a header line",
                b"GET / HTTP/1.1\r\nHost: test\rX-After: 1\r\n\r\n".to_vec(),
                &[400],
            ),
            (
                "whitespace before a header's colon",
                request(&format!("{post}Content-Length : 3\r\n"), "abc"),
                &[400],
            ),
            (
                "a bare LF after a chunk size",
                chunked_post("3\nabc\r\n0\r\n\r\n"),
                &[400],
            ),
            (
                "a bare LF after chunk data",
                chunked_post("3\r\nabc\n0\r\n\r\n"),
                &[400],
            ),
            (
                "a bare LF ending the chunked body",
                chunked_post("0\r\n\n"),
                &[400],
            ),
            (
                "a bare LF ending a trailer",
                chunked_post("0\r\nX: 1\n\r\n"),
                &[400],
            ),
            (
                "a non-hex chunk size",
                chunked_post("g\r\nabc\r\n0\r\n\r\n"),
                &[400],
            ),
            (
                "a negative chunk size",
                chunked_post("-3\r\nabc\r\n0\r\n\r\n"),
                &[400],
            ),
            (
                "a 0x chunk size",
                chunked_post("0x3\r\nabc\r\n0\r\n\r\n"),
                &[400],
            ),
            (
                "an empty chunk size",
                chunked_post("\r\nabc\r\n0\r\n\r\n"),
                &[400],
            ),
            (
                "a chunk longer than its size",
                chunked_post("3\r\nabcd\r\n0\r\n\r\n"),
                &[400],
            ),
            (
                "a chunk shorter than its size",
                chunked_post("5\r\nabc\r\n0\r\n\r\n\r\n"),
                &[400],
            ),
        ];
        let failures = rejections(&server, &mut normal, &cases);
        assert!(
            failures.is_empty(),
            "{} of {} smuggling shapes mishandled:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
        drop(normal);
        server.stop();
    });
}

#[test]
fn malformed_requests_unsupported_versions_and_long_uris_are_refused() {
    watchdog(WATCHDOG, || {
        let server = TestServer::with_defaults();
        let mut normal = server.connect();
        let long_target = format!("/{}", "a".repeat(9000));
        let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
            ("no version (HTTP/0.9)", b"GET /\r\n\r\n".to_vec(), &[400]),
            (
                "two spaces",
                b"GET  / HTTP/1.1\r\nHost: test\r\n\r\n".to_vec(),
                &[400],
            ),
            (
                "a fourth word",
                b"GET / HTTP/1.1 x\r\nHost: test\r\n\r\n".to_vec(),
                &[400],
            ),
            (
                "a space in the target",
                b"GET /a b HTTP/1.1\r\nHost: test\r\n\r\n".to_vec(),
                &[400],
            ),
            (
                "a word between target and version",
                b"GET / x HTTP/1.1\r\nHost: test\r\n\r\n".to_vec(),
                &[400],
            ),
            (
                "a lower-case version",
                b"GET / http/1.1\r\nHost: test\r\n\r\n".to_vec(),
                &[400],
            ),
            (
                "a garbled version",
                b"GET / HTTP/1.x\r\nHost: test\r\n\r\n".to_vec(),
                &[400],
            ),
            (
                "a control byte in the target",
                b"GET /\x01 HTTP/1.1\r\nHost: test\r\n\r\n".to_vec(),
                &[400],
            ),
            (
                "a bad byte in the method",
                b"G(T / HTTP/1.1\r\nHost: test\r\n\r\n".to_vec(),
                &[400],
            ),
            (
                "a header without a colon",
                b"GET / HTTP/1.1\r\nHost test\r\n\r\n".to_vec(),
                &[400],
            ),
            (
                "an empty header name",
                b"GET / HTTP/1.1\r\nHost: test\r\n: x\r\n\r\n".to_vec(),
                &[400],
            ),
            (
                "a bad byte in a header name",
                b"GET / HTTP/1.1\r\nHo(st: test\r\n\r\n".to_vec(),
                &[400],
            ),
            (
                "a NUL in a header value",
                b"GET / HTTP/1.1\r\nHost: test\r\nX: a\0b\r\n\r\n".to_vec(),
                &[400],
            ),
            (
                "HTTP/1.1 without Host",
                b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                &[400],
            ),
            (
                "two Hosts",
                b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
                &[400],
            ),
            (
                "a leading bare LF",
                b"\nGET / HTTP/1.1\r\nHost: test\r\n\r\n".to_vec(),
                &[400],
            ),
            (
                "HTTP/2.0",
                b"GET / HTTP/2.0\r\nHost: test\r\n\r\n".to_vec(),
                &[505],
            ),
            (
                "HTTP/3.0",
                b"GET / HTTP/3.0\r\nHost: test\r\n\r\n".to_vec(),
                &[505],
            ),
            (
                "HTTP/9.9",
                b"GET / HTTP/9.9\r\nHost: test\r\n\r\n".to_vec(),
                &[505],
            ),
            (
                "a URI over the head limit",
                format!("GET {long_target} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes(),
                &[414],
            ),
            (
                "a URI over the head limit, its line unfinished",
                format!("GET {long_target}").into_bytes(),
                &[414],
            ),
        ];
        let failures = rejections(&server, &mut normal, &cases);
        assert!(
            failures.is_empty(),
            "{} of {} malformed requests mishandled:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
        drop(normal);
        server.stop();
    });
}

/// A GET whose head is exactly `len` bytes, padded in a header.
fn head_of_length(len: usize) -> Vec<u8> {
    let bare = "GET / HTTP/1.1\r\nHost: test\r\nX-Pad: \r\n\r\n".len();
    let pad = "p".repeat(len - bare);
    format!("GET / HTTP/1.1\r\nHost: test\r\nX-Pad: {pad}\r\n\r\n").into_bytes()
}

#[test]
fn a_head_over_max_header_bytes_is_431() {
    watchdog(WATCHDOG, || {
        let server = TestServer::with_defaults();
        let mut normal = server.connect();

        // Exactly the limit is fine; with the request line at the limit too.
        let at_limit = head_of_length(8192);
        assert_eq!(at_limit.len(), 8192);
        normal.send(&at_limit);
        assert_hello(&normal.response(), "a head of exactly 8192 bytes");
        let line = "GET /? HTTP/1.1\r\nHost: test\r\n\r\n".len();
        let long_query = format!(
            "GET /?{} HTTP/1.1\r\nHost: test\r\n\r\n",
            "q".repeat(8192 - line)
        );
        assert_eq!(long_query.len(), 8192);
        normal.send(long_query.as_bytes());
        assert_hello(&normal.response(), "a request line filling the head limit");

        let many: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
        let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
            ("a head of 8193 bytes", head_of_length(8193), &[431]),
            ("a head of 16 KiB", head_of_length(16 << 10), &[431]),
            (
                "a head of 16 KiB, unfinished",
                head_of_length(16 << 10)[..(16 << 10) - 4].to_vec(),
                &[431],
            ),
            (
                "a hundred header fields",
                format!("GET / HTTP/1.1\r\nHost: test\r\n{many}\r\n").into_bytes(),
                &[431, 400],
            ),
        ];
        let failures = rejections(&server, &mut normal, &cases);
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        drop(normal);
        server.stop();
    });
}

#[test]
fn a_body_over_max_body_bytes_is_413_before_it_is_sent() {
    watchdog(WATCHDOG, || {
        let server = TestServer::start(Options {
            max_body_bytes: 1024,
            ..Options::default()
        });
        let mut normal = server.connect();

        // At the limit, announced and chunked: served.
        let body = vec![b'b'; 1024];
        normal.send(&post_echo(&body));
        assert_echo(&normal.response(), &body, "1024 bytes announced");
        let mut encoded = b"400\r\n".to_vec();
        encoded.extend_from_slice(&body);
        encoded.extend_from_slice(b"\r\n0\r\n\r\n");
        normal.send(&post_chunked("/echo", &encoded));
        assert_echo(&normal.response(), &body, "1024 bytes chunked");

        // Over it: the status comes with only the head (or the size line)
        // sent, so the server neither waits for the rest nor reads it.
        let over_second = format!("200\r\n{}\r\n201\r\n", "s".repeat(512));
        let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
            (
                "Content-Length one over",
                b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 1025\r\n\r\n".to_vec(),
                &[413],
            ),
            (
                "Content-Length of a GiB",
                b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 1073741824\r\n\r\n".to_vec(),
                &[413],
            ),
            ("one chunk over", post_chunked("/echo", b"401\r\n"), &[413]),
            (
                "the second chunk over",
                post_chunked("/echo", over_second.as_bytes()),
                &[413],
            ),
            (
                "a chunk size of 2^64 - 1",
                post_chunked("/echo", b"ffffffffffffffff\r\n"),
                &[413, 400],
            ),
            (
                "a chunk size of 17 hex digits",
                post_chunked("/echo", b"10000000000000000\r\n"),
                &[413, 400],
            ),
        ];
        let failures = rejections(&server, &mut normal, &cases);
        assert!(failures.is_empty(), "{}", failures.join("\n"));

        // A client that sends the refused body anyway still reads the 413
        // (the lingering close), not a reset.
        let mut client = server.connect();
        client.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 1048576\r\n\r\n");
        let mut writer = client.stream.try_clone().unwrap();
        let uploading = thread::spawn(move || {
            let piece = [b'u'; 8 << 10];
            // 256 KiB at most; the server may close before it is all sent.
            for _ in 0..32 {
                if writer.write_all(&piece).is_err() {
                    break;
                }
            }
        });
        let response = client.response();
        assert_eq!(response.status, 413, "{response:?}");
        assert!(response.closes(), "{response:?}");
        client.expect_closed();
        uploading.join().unwrap();

        // Pipelined: what comes before the refused request is answered,
        // then the 413, then the close.
        let mut client = server.connect();
        let mut batch = get("/");
        batch.extend_from_slice(
            b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 1025\r\n\r\n",
        );
        batch.extend_from_slice(&get("/"));
        client.send(&batch);
        assert_hello(&client.response(), "before the refused request");
        let response = client.response();
        assert_eq!(response.status, 413, "{response:?}");
        client.expect_closed();
        normal.get_hello();
        drop(normal);
        server.stop();
    });
}

/// What came of a trickled request: the response, how long after the
/// request's first byte it had arrived (measured from before that byte was
/// written), and whether the connection then closed.
type Trickled = (Response, Duration, Result<(), String>);

/// What a reader of a trickled request saw: the response, when it had
/// arrived, and whether the connection then closed.
type Arrival = (Result<Response, String>, Instant, Result<(), String>);

/// Writes `head` to each of `clients` one byte every 100 ms, then `a`s (at
/// most 60 bytes in all), until each has a response; `between` runs after
/// each round of bytes.
fn trickle_many(clients: &mut [Client], head: &[u8], mut between: impl FnMut()) -> Vec<Trickled> {
    let (done, finished) = mpsc::channel();
    let readers: Vec<JoinHandle<()>> = clients
        .iter()
        .enumerate()
        .map(|(i, client)| {
            assert!(client.buf.is_empty());
            let mut reader = Client::from_stream(client.stream.try_clone().unwrap());
            let done = done.clone();
            thread::spawn(move || {
                let response = reader.read_response("GET");
                let at = Instant::now();
                let closed = reader.read_closed();
                let _ = done.send((i, response, at, closed));
            })
        })
        .collect();
    let bytes: Vec<u8> = head
        .iter()
        .copied()
        .chain(std::iter::repeat(b'a'))
        .take(60)
        .collect();
    let mut starts: Vec<Option<Instant>> = vec![None; clients.len()];
    let mut outcomes: Vec<Option<Arrival>> = (0..clients.len()).map(|_| None).collect();
    let mut remaining = clients.len();
    for &byte in &bytes {
        while let Ok((i, response, at, closed)) = finished.try_recv() {
            outcomes[i] = Some((response, at, closed));
            remaining -= 1;
        }
        if remaining == 0 {
            break;
        }
        for (i, client) in clients.iter_mut().enumerate() {
            if outcomes[i].is_none() {
                starts[i].get_or_insert_with(Instant::now);
                // An error is the server closing after its answer, which
                // the reader reads.
                let _ = client.stream.write_all(&[byte]);
            }
        }
        between();
        thread::sleep(Duration::from_millis(100));
    }
    while remaining > 0 {
        let (i, response, at, closed) = finished
            .recv_timeout(MUST_SUCCEED)
            .expect("a response to every trickled request");
        outcomes[i] = Some((response, at, closed));
        remaining -= 1;
    }
    for reader in readers {
        reader.join().unwrap();
    }
    outcomes
        .into_iter()
        .zip(starts)
        .enumerate()
        .map(|(i, (outcome, start))| {
            let (response, at, closed) = outcome.expect("every outcome is in");
            let response = response.unwrap_or_else(|e| panic!("trickled request {i}: {e}"));
            let start = start.expect("every client sent a byte");
            (response, at.duration_since(start), closed)
        })
        .collect()
}

/// [`trickle_many`] for one client.
fn trickle(client: &mut Client, head: &[u8], between: impl FnMut()) -> Trickled {
    trickle_many(std::slice::from_mut(client), head, between)
        .pop()
        .expect("one outcome")
}

#[test]
fn slowloris_gets_408_after_the_header_timeout_however_slowly_the_head_trickles() {
    watchdog(WATCHDOG, || {
        let timeout = Duration::from_secs(1);
        let server = TestServer::start(Options {
            header_timeout: timeout,
            ..Options::default()
        });
        let mut normal = server.connect();
        normal.get_hello();
        let mut slow = server.connect();
        let mut served = 0;
        let (response, elapsed, closed) = trickle(
            &mut slow,
            b"GET / HTTP/1.1\r\nHost: test\r\nX-Slow: ",
            || {
                // Everyone else is served meanwhile.
                normal.get_hello();
                served += 1;
            },
        );
        assert_eq!(response.status, 408, "{response:?}");
        assert!(response.closes(), "{response:?}");
        closed.unwrap_or_else(|e| panic!("after the 408: {e}"));
        // A byte every 100 ms did not extend the deadline: from the first
        // byte, never early, and not much late.
        assert_timed_out(elapsed, timeout);
        assert!(
            served >= 5,
            "the other client was served {served} times meanwhile"
        );
        normal.get_hello();
        drop(normal);
        server.stop();
    });
}

#[test]
fn the_header_timeout_runs_per_request_from_its_first_byte() {
    watchdog(WATCHDOG, || {
        let timeout = Duration::from_secs(1);
        let server = TestServer::start(Options {
            header_timeout: timeout,
            ..Options::default()
        });
        let mut client = server.connect();
        client.get_hello();
        // Idle between requests for longer than the header timeout: not a
        // slow head.
        thread::sleep(timeout + Duration::from_millis(500));
        client.get_hello();
        // A head in two parts within the timeout is served.
        client.send(b"GET / HTTP/1.1\r\nHo");
        thread::sleep(timeout / 2);
        client.send(b"st: test\r\n\r\n");
        assert_hello(&client.response(), "a head in two parts");
        // Idle again, then a slow head on the same connection: its own
        // deadline, from its own first byte.
        thread::sleep(timeout / 2);
        let (response, elapsed, closed) = trickle(&mut client, b"GET / HTTP/1.1\r\n", || {});
        assert_eq!(response.status, 408, "{response:?}");
        closed.unwrap_or_else(|e| panic!("after the 408: {e}"));
        assert_timed_out(elapsed, timeout);
        server.stop();
    });
}

#[test]
fn fifty_slow_clients_each_get_408_from_their_own_first_byte() {
    watchdog(WATCHDOG, || {
        let timeout = Duration::from_secs(1);
        let server = TestServer::start(Options {
            header_timeout: timeout,
            ..Options::default()
        });
        let mut normal = server.connect();
        let mut slow: Vec<Client> = (0..50).map(|_| server.connect()).collect();
        let outcomes = trickle_many(
            &mut slow,
            b"POST /echo HTTP/1.1\r\nHost: test\r\nX-Slow: ",
            || {
                normal.get_hello();
            },
        );
        for (i, (response, elapsed, closed)) in outcomes.into_iter().enumerate() {
            assert_eq!(response.status, 408, "slow client {i}: {response:?}");
            closed.unwrap_or_else(|e| panic!("slow client {i}, after the 408: {e}"));
            assert_timed_out(elapsed, timeout);
        }
        normal.get_hello();
        drop(normal);
        server.stop();
    });
}

#[test]
fn an_idle_keep_alive_connection_closes_after_the_idle_timeout() {
    watchdog(WATCHDOG, || {
        let idle = Duration::from_secs(1);
        let server = TestServer::start(Options {
            idle_timeout: Some(idle),
            ..Options::default()
        });
        let mut client = server.connect();
        // From before the request: the server's last progress (writing
        // the response) comes later.
        let start = Instant::now();
        client.get_hello();
        client.expect_closed();
        assert_timed_out(start.elapsed(), idle);
        let mut other = server.connect();
        other.get_hello();
        drop(other);
        let report = server.stop();
        assert!(report.total.closed_idle >= 1, "{report:?}");
    });
}

#[test]
fn a_client_that_never_reads_is_held_to_bounded_memory_then_closed() {
    watchdog(WATCHDOG, || {
        let idle = Duration::from_secs(1);
        let server = TestServer::start(Options {
            idle_timeout: Some(idle),
            ..Options::default()
        });
        let mut normal = server.connect();
        normal.get_hello();

        let hog = TcpStream::connect(server.addr).unwrap();
        hog.set_nonblocking(true).unwrap();
        let block = get("/").repeat(1024);
        // The kernel buffers both ways plus the server's output above its
        // high water mark are a few MiB; the server must stop reading long
        // before this.
        let limit = 64 << 20;
        let start = Instant::now();
        let mut written = 0;
        let mut stalled: Option<Instant> = None;
        let mut closed = false;
        while stalled.is_none_or(|since| since.elapsed() < Duration::from_millis(500)) {
            assert!(
                written < limit,
                "the server took {written} bytes of requests from a client that reads nothing"
            );
            assert!(
                start.elapsed() < MUST_SUCCEED,
                "still writing after {MUST_SUCCEED:?}"
            );
            match (&hog).write(&block[written % block.len()..]) {
                Ok(n) => {
                    written += n;
                    stalled = None;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    stalled.get_or_insert_with(Instant::now);
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e)
                    if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) =>
                {
                    closed = true;
                    break;
                }
                Err(e) => panic!("writing requests: {e}"),
            }
        }
        // Pushed back: everyone else is still served.
        normal.get_hello();
        // Then the server gives up on it: the idle timeout, as nothing
        // moves.
        let wait = Instant::now();
        while !closed {
            assert!(
                wait.elapsed() < MUST_SUCCEED,
                "a client that reads nothing was not closed within {MUST_SUCCEED:?}"
            );
            match (&hog).write(b"G") {
                Ok(_) => thread::sleep(Duration::from_millis(20)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(20))
                }
                Err(e)
                    if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) =>
                {
                    closed = true;
                }
                Err(e) => panic!("waiting for the close: {e}"),
            }
        }
        normal.get_hello();
        drop(normal);
        let report = server.stop();
        assert!(report.total.closed_idle >= 1, "{report:?}");
    });
}

// ---- Many clients, threads, limits, shutdown ----------------------------------

#[test]
fn five_hundred_concurrent_keep_alive_clients_are_all_served() {
    watchdog(WATCHDOG, || {
        const THREADS: usize = 5;
        const EACH: usize = 100;
        const ROUNDS: usize = 3;
        let server = TestServer::with_defaults();
        let addr = server.addr;
        let barrier = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let barrier = Arc::clone(&barrier);
                thread::spawn(move || {
                    let mut clients: Vec<Client> =
                        (0..EACH).map(|_| Client::connect(addr)).collect();
                    // All 500 are open at once from here on.
                    barrier.wait();
                    let mut served = 0;
                    for round in 0..ROUNDS {
                        for (i, client) in clients.iter_mut().enumerate() {
                            client.send(&post_echo(format!("{t}/{i}/{round}").as_bytes()));
                        }
                        for (i, client) in clients.iter_mut().enumerate() {
                            let body = format!("{t}/{i}/{round}");
                            assert_echo(&client.response(), body.as_bytes(), &body);
                            served += 1;
                        }
                    }
                    served
                })
            })
            .collect();
        let served: usize = threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .sum();
        assert_eq!(served, THREADS * EACH * ROUNDS);
        let report = server.stop();
        assert_eq!(report.total.accepted, (THREADS * EACH) as u64, "{report:?}");
    });
}

#[test]
fn two_threads_share_the_port() {
    watchdog(WATCHDOG, || {
        let server = TestServer::start(Options {
            threads: 2,
            ..Options::default()
        });
        let mut clients: Vec<Client> = (0..32).map(|_| server.connect()).collect();
        for client in &mut clients {
            client.get_hello();
            client.send(&post_echo(b"two"));
            assert_echo(&client.response(), b"two", "two threads");
        }
        let report = server.stop();
        assert_eq!(report.threads.len(), 2, "{report:?}");
        assert_eq!(report.total.accepted, 32, "{report:?}");
        // The kernel spreads connections by their addresses: 32 all on one
        // thread has a chance of 2^-31.
        for (thread, stats) in report.threads.iter().enumerate() {
            assert!(
                stats.accepted >= 1,
                "thread {thread} accepted none: {report:?}"
            );
        }
        // The idle keep-alive connections were closed by the shutdown.
        for client in &mut clients {
            client.expect_closed();
        }
    });
}

#[test]
fn max_connections_is_enforced() {
    watchdog(WATCHDOG, || {
        let server = TestServer::start(Options {
            max_connections: Some(2),
            ..Options::default()
        });
        let mut first = server.connect();
        first.get_hello();
        let mut second = server.connect();
        second.get_hello();
        // The third is not served: closed at once, or told 503.
        let mut third = server.connect();
        match third.fill() {
            Ok(0) => {}
            Ok(_) => {
                let response = third.read_response("GET").unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(response.status, 503, "{response:?}");
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("a connection over max_connections: {e}"),
        }
        // Once one closes, another is served.
        drop(first);
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < MUST_SUCCEED,
                "no connection served after one closed"
            );
            let mut next = server.connect();
            next.stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            next.send(&get("/"));
            // Refused (503, or closed) until the server has seen the first
            // one close: try again.
            match next.read_response("GET") {
                Ok(response) if response.status == 503 => {}
                Ok(response) => {
                    assert_hello(&response, "after one closed");
                    break;
                }
                Err(_) => {}
            }
            thread::sleep(Duration::from_millis(20));
        }
        second.get_hello();
        drop(second);
        let report = server.stop();
        assert!(report.total.refused >= 1, "{report:?}");
    });
}

#[test]
fn graceful_shutdown_finishes_requests_in_flight_and_closes_idle_ones() {
    watchdog(WATCHDOG, || {
        let mut server = TestServer::with_defaults();
        let mut idle = server.connect();
        idle.get_hello();
        // In flight: its head is in, its body is not (the 100 says the
        // server has the head).
        let mut busy = server.connect();
        busy.send(
            b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        );
        assert_eq!(busy.response().status, 100);

        // A large response under way, its body unread.
        let mut big = server.connect();
        let large: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 241) as u8).collect();
        big.send(&post_echo(&large));
        let mut first = [0; 1];
        big.stream.read_exact(&mut first).unwrap();
        big.buf.extend_from_slice(&first);

        server.shutdown.shutdown();
        // The idle keep-alive connection is closed...
        idle.expect_closed();
        // ...no new ones are accepted...
        match TcpStream::connect(server.addr) {
            Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}"),
            Ok(stream) => {
                let mut late = Client::from_stream(stream);
                late.send(&get("/"));
                panic!(
                    "a connection accepted after the shutdown began: {:?}",
                    late.read_response("GET")
                );
            }
        }
        // ...and the request in flight is finished, told that the
        // connection closes, and then closed.
        busy.send(b"hello");
        let response = busy.response();
        assert_echo(&response, b"hello", "the request in flight");
        assert!(response.closes(), "{response:?}");
        busy.expect_closed();
        // ...and so is the response under way, then the connection closes.
        assert_echo(&big.response(), &large, "the response under way");
        big.expect_closed();

        let report = server.join();
        assert_eq!(report.total.accepted, 3, "{report:?}");
        assert!(report.total.closed_shutdown >= 1, "{report:?}");
    });
}

#[test]
fn date_is_a_current_imf_fixdate_that_changes_every_second() {
    assert_eq!(parse_imf_fixdate("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
    assert_eq!(
        parse_imf_fixdate("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(784_111_777)
    );
    assert_eq!(
        parse_imf_fixdate("Tue, 29 Feb 2000 00:00:00 GMT"),
        Some(951_782_400)
    );
    for bad in [
        "Mon, 06 Nov 1994 08:49:37 GMT",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Wed, 29 Feb 1900 00:00:00 GMT",
        "Sun, 06 Nov 1994 24:49:37 GMT",
    ] {
        assert_eq!(parse_imf_fixdate(bad), None, "{bad:?}");
    }

    watchdog(WATCHDOG, || {
        let server = TestServer::with_defaults();
        let mut client = server.connect();
        let mut date = || {
            client.send(&get("/"));
            let response = client.response();
            // `Client` checked it is an IMF-fixdate and current.
            let date = response.header("date").expect("a Date").to_owned();
            (parse_imf_fixdate(&date).expect("an IMF-fixdate"), date)
        };
        let (first, first_text) = date();
        thread::sleep(Duration::from_millis(1100));
        let (mut later, mut later_text) = date();
        if later == first {
            // Loose, for a late timer on a noisy machine: it changes within
            // two periods.
            thread::sleep(Duration::from_millis(1100));
            (later, later_text) = date();
        }
        assert!(
            later > first,
            "Date did not advance over 2.2 s: {first_text:?} then {later_text:?}"
        );
        drop(client);
        server.stop();
    });
}

// ---- Framing, as a pure function ------------------------------------------------

/// What framing a stream came to: the requests (head, body, length), and
/// how the rest ended (`NeedHead`, `NeedBody` or `Reject`) with how many
/// bytes were left unframed (0 after a `Reject`: the server drops them).
#[derive(Debug, PartialEq)]
struct Outcome {
    requests: Vec<(Head, Vec<u8>, usize)>,
    end: Framed,
    left: usize,
}

/// What `frame` may report for `input` under `limits`, whatever the bytes.
fn check_bounds(input: &[u8], framed: &Framed, limits: Limits) -> Result<(), String> {
    let head_ok =
        |head: &Head| head.len > 0 && head.len <= limits.max_head && head.len <= input.len();
    match framed {
        Framed::NeedHead if input.len() >= limits.max_head => Err(format!(
            "NeedHead with {} bytes and no head, max_head {}",
            input.len(),
            limits.max_head
        )),
        Framed::NeedHead | Framed::Reject(_) => Ok(()),
        Framed::NeedBody(head) => {
            if !head_ok(head) {
                return Err(format!("NeedBody with a head of {} bytes", head.len));
            }
            match head.body {
                BodyKind::Length(n) if n > limits.max_body => Err(format!(
                    "NeedBody for {n} bytes, max_body {}",
                    limits.max_body
                )),
                BodyKind::Length(n) if input.len() >= head.len + n => {
                    Err(format!("NeedBody for {n} bytes with them all there"))
                }
                _ => Ok(()),
            }
        }
        Framed::Request(head, body, len) => {
            if !head_ok(head) {
                return Err(format!("a request with a head of {} bytes", head.len));
            }
            if body.len() > limits.max_body {
                return Err(format!(
                    "a body of {} bytes, max_body {}",
                    body.len(),
                    limits.max_body
                ));
            }
            if *len > input.len() || *len < head.len + body.len() {
                return Err(format!(
                    "a request of {len} bytes (head {}, body {}) from {} bytes",
                    head.len,
                    body.len(),
                    input.len()
                ));
            }
            if let BodyKind::Length(n) = head.body {
                if n != body.len() || *len != head.len + n {
                    return Err(format!(
                        "Content-Length {n}, body {}, len {len}",
                        body.len()
                    ));
                }
            }
            Ok(())
        }
    }
}

/// Frames `pieces` as the server does: append each to what is left,
/// frame and consume whole requests until the framing needs more bytes or
/// rejects them. Checks [`check_bounds`] on every call, and that a head
/// reported while its body is missing is the head of the request framed
/// later.
fn frame_pieces(pieces: &[&[u8]], limits: Limits) -> Result<Outcome, String> {
    let mut buf: Vec<u8> = Vec::new();
    let mut requests = Vec::new();
    let mut waiting: Option<Head> = None;
    let mut end = Framed::NeedHead;
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let framed = request::frame(&buf, limits);
            check_bounds(&buf, &framed, limits)
                .map_err(|e| format!("{e}; framing {}", show(&buf)))?;
            match framed {
                Framed::Request(head, body, len) => {
                    if let Some(waited) = waiting.take() {
                        if waited != head {
                            return Err(format!(
                                "NeedBody said {waited:?}, the request has {head:?}"
                            ));
                        }
                    }
                    buf.drain(..len);
                    requests.push((head, body, len));
                }
                Framed::NeedBody(ref head) => {
                    waiting = Some(head.clone());
                    end = framed;
                    break;
                }
                Framed::NeedHead => {
                    waiting = None;
                    end = framed;
                    break;
                }
                Framed::Reject(_) => {
                    return Ok(Outcome {
                        requests,
                        end: framed,
                        left: 0,
                    })
                }
            }
        }
    }
    Ok(Outcome {
        requests,
        end,
        left: buf.len(),
    })
}

/// `stream` cut at `cuts` (indexes into it, in any order).
fn split_at<'a>(stream: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
    at.push(0);
    at.push(stream.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| &stream[w[0]..w[1]]).collect()
}

/// One request of a generated stream, what framing must make of it.
#[derive(Debug, Clone)]
struct Generated {
    bytes: Vec<u8>,
    head: Head,
    body: Vec<u8>,
}

#[derive(Debug, Clone)]
enum GenBody {
    None,
    Length(Vec<u8>),
    /// Chunks (data, extension, leading zeros, upper-case hex), trailers.
    Chunked(Vec<(Vec<u8>, String, usize, bool)>, Vec<(String, String)>),
}

fn gen_body() -> impl Strategy<Value = GenBody> {
    let extension = prop_oneof![
        Just(String::new()),
        "[a-z]{1,5}".prop_map(|n| format!(";{n}")),
        ("[a-z]{1,5}", "[a-z0-9]{0,5}").prop_map(|(n, v)| format!(";{n}={v}")),
        "[a-z ;=]{0,6}".prop_map(|v| format!(";q=\"{v}\"")),
    ];
    let chunk = (vec(any::<u8>(), 1..40), extension, 0..3usize, any::<bool>());
    let trailer = ("X-[A-Za-z0-9-]{1,8}", "[!-~][ -~]{0,10}");
    prop_oneof![
        Just(GenBody::None),
        vec(any::<u8>(), 0..120).prop_map(GenBody::Length),
        (vec(chunk, 0..5), vec(trailer, 0..3)).prop_map(|(c, t)| GenBody::Chunked(c, t)),
    ]
}

fn gen_request() -> impl Strategy<Value = Generated> {
    (
        0..3usize,
        0..5usize,
        any::<bool>(),
        0..3usize,
        any::<bool>(),
        0..3usize,
        vec(("X-[A-Za-z0-9-]{1,10}", "[!-~]([ -~]{0,18}[!-~])?"), 0..4),
        gen_body(),
    )
        .prop_map(
            |(method, path, http10, connection, expect, style, extra, body)| {
                build_request(method, path, http10, connection, expect, style, extra, body)
            },
        )
}

/// A header name in one of three spellings.
fn spell(name: &str, style: usize) -> String {
    match style {
        0 => name.to_owned(),
        1 => name.to_ascii_lowercase(),
        _ => name.to_ascii_uppercase(),
    }
}

#[allow(clippy::too_many_arguments)]
fn build_request(
    method: usize,
    path: usize,
    http10: bool,
    connection: usize,
    expect: bool,
    style: usize,
    extra: Vec<(String, String)>,
    body: GenBody,
) -> Generated {
    let (method_text, method) = [
        ("GET", Method::Get),
        ("HEAD", Method::Head),
        ("POST", Method::Post),
    ][method];
    let (path, route) = [
        ("/", Route::Hello),
        ("/plaintext?x=1", Route::Hello),
        ("/echo", Route::Echo),
        ("/nowhere", Route::Unknown),
        ("/echo/deeper#frag", Route::Unknown),
    ][path];
    // Chunked needs HTTP/1.1.
    let minor = if http10 && !matches!(body, GenBody::Chunked(..)) {
        0
    } else {
        1
    };
    let mut head = format!(
        "{method_text} {path} HTTP/1.{minor}\r\n{}: test\r\n",
        spell("Host", style)
    );
    for (name, value) in &extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let (connection_value, keep_alive) = match connection {
        0 => (None, minor == 1),
        1 => (Some("close"), false),
        _ => (Some("keep-alive"), true),
    };
    if let Some(value) = connection_value {
        head.push_str(&format!("{}: {value}\r\n", spell("Connection", style)));
    }
    if expect {
        head.push_str(&format!("{}: 100-continue\r\n", spell("Expect", style)));
    }
    let mut encoded = Vec::new();
    let (kind, decoded) = match body {
        GenBody::None => (BodyKind::Length(0), Vec::new()),
        GenBody::Length(bytes) => {
            head.push_str(&format!(
                "{}:  {} \r\n",
                spell("Content-Length", style),
                bytes.len()
            ));
            encoded.extend_from_slice(&bytes);
            (BodyKind::Length(bytes.len()), bytes)
        }
        GenBody::Chunked(chunks, trailers) => {
            head.push_str(&format!(
                "{}: chunked\r\n",
                spell("Transfer-Encoding", style)
            ));
            let mut decoded = Vec::new();
            for (data, extension, zeros, upper) in &chunks {
                let size = if *upper {
                    format!("{:X}", data.len())
                } else {
                    format!("{:x}", data.len())
                };
                encoded.extend_from_slice(
                    format!("{}{size}{extension}\r\n", "0".repeat(*zeros)).as_bytes(),
                );
                encoded.extend_from_slice(data);
                encoded.extend_from_slice(b"\r\n");
                decoded.extend_from_slice(data);
            }
            encoded.extend_from_slice(b"0\r\n");
            for (name, value) in &trailers {
                encoded.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            }
            encoded.extend_from_slice(b"\r\n");
            (BodyKind::Chunked, decoded)
        }
    };
    head.push_str("\r\n");
    let expected = Head {
        method,
        route,
        minor,
        keep_alive,
        expect_continue: expect && minor == 1,
        len: head.len(),
        body: kind,
    };
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&encoded);
    Generated {
        bytes,
        head: expected,
        body: decoded,
    }
}

const SERVER_LIMITS: Limits = Limits {
    max_head: 8 << 10,
    max_body: 1 << 20,
};

#[test]
fn framing_valid_requests_does_not_depend_on_how_they_are_split() {
    watchdog(WATCHDOG, || {
        let mut runner = TestRunner::new(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        let strategy = (vec(gen_request(), 1..6), vec(any::<Index>(), 0..24));
        runner
            .run(&strategy, |(requests, cuts)| {
                let stream: Vec<u8> = requests.iter().flat_map(|r| r.bytes.clone()).collect();
                let expected: Vec<(Head, Vec<u8>, usize)> = requests
                    .iter()
                    .map(|r| (r.head.clone(), r.body.clone(), r.bytes.len()))
                    .collect();
                let whole = frame_pieces(&[&stream], SERVER_LIMITS).map_err(TestCaseError::fail)?;
                let want = Outcome {
                    requests: expected,
                    end: Framed::NeedHead,
                    left: 0,
                };
                if whole != want {
                    return Err(TestCaseError::fail(format!(
                        "the whole stream {}\nframed as {whole:?}\nnot {want:?}",
                        show(&stream)
                    )));
                }
                let pieces = split_at(&stream, &cuts);
                let split = frame_pieces(&pieces, SERVER_LIMITS).map_err(TestCaseError::fail)?;
                if split != whole {
                    return Err(TestCaseError::fail(format!(
                        "split into {} pieces at {:?}, {}\nframed as {split:?}\nwhole: {whole:?}",
                        pieces.len(),
                        pieces.iter().map(|p| p.len()).collect::<Vec<_>>(),
                        show(&stream)
                    )));
                }
                Ok(())
            })
            .unwrap();
    });
}

/// Frames `pieces` the way the server's `received` does, as bytes arrive:
/// a head by `parse_head` (consumed at once), then a `Content-Length` body
/// once it is all there, or a chunked body fed to one `Dechunk` piece by
/// piece, keeping only the bytes it did not use. Returns each request's
/// head and body, or the status of a rejection.
fn serve_pieces(pieces: &[&[u8]], limits: Limits) -> Result<Vec<(Head, Vec<u8>)>, request::Status> {
    enum Phase {
        Idle,
        Body(Head, usize),
        Chunked(Head, request::Dechunk, Vec<u8>),
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut phase = Phase::Idle;
    let mut requests = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match &mut phase {
                Phase::Idle => match request::parse_head(&buf, limits)? {
                    None => break,
                    Some(head) => {
                        buf.drain(..head.len);
                        phase = match head.body {
                            BodyKind::Length(0) => {
                                requests.push((head, Vec::new()));
                                Phase::Idle
                            }
                            BodyKind::Length(n) => Phase::Body(head, n),
                            BodyKind::Chunked => {
                                Phase::Chunked(head, request::Dechunk::default(), Vec::new())
                            }
                        };
                    }
                },
                Phase::Body(head, n) => {
                    if buf.len() < *n {
                        break;
                    }
                    let body: Vec<u8> = buf.drain(..*n).collect();
                    requests.push((head.clone(), body));
                    phase = Phase::Idle;
                }
                Phase::Chunked(head, dechunk, body) => {
                    let (used, done) = dechunk.feed(&buf, body, limits.max_body)?;
                    buf.drain(..used);
                    if !done {
                        break;
                    }
                    requests.push((head.clone(), std::mem::take(body)));
                    phase = Phase::Idle;
                }
            }
        }
    }
    Ok(requests)
}

/// The server's incremental framing, however the stream is split, finds
/// the requests the one-shot `frame` finds in the whole stream.
#[test]
fn incremental_framing_matches_framing_the_whole_stream() {
    watchdog(WATCHDOG, || {
        let mut runner = TestRunner::new(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        let strategy = (vec(gen_request(), 1..6), vec(any::<Index>(), 0..24));
        runner
            .run(&strategy, |(requests, cuts)| {
                let stream: Vec<u8> = requests.iter().flat_map(|r| r.bytes.clone()).collect();
                let whole = frame_pieces(&[&stream], SERVER_LIMITS).map_err(TestCaseError::fail)?;
                let want: Vec<(Head, Vec<u8>)> = whole
                    .requests
                    .iter()
                    .map(|(head, body, _)| (head.clone(), body.clone()))
                    .collect();
                let pieces = split_at(&stream, &cuts);
                let got = serve_pieces(&pieces, SERVER_LIMITS)
                    .map_err(|status| TestCaseError::fail(format!("rejected: {status:?}")))?;
                if got != want {
                    return Err(TestCaseError::fail(format!(
                        "split into {:?}, {}\nserved {got:?}\nwhole: {want:?}",
                        pieces.iter().map(|p| p.len()).collect::<Vec<_>>(),
                        show(&stream)
                    )));
                }
                Ok(())
            })
            .unwrap();
    });
}

/// Bytes that look like HTTP often enough to reach past the request line:
/// pieces of requests, line ends right and wrong, and noise.
fn http_ish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"GET / HTTP/1.1\r\n".to_vec()),
        Just(b"POST /echo HTTP/1.1\r\n".to_vec()),
        Just(b"HEAD /plaintext HTTP/1.0\r\n".to_vec()),
        Just(b"GET / HTTP/2.0\r\n".to_vec()),
        Just(b"Host: a\r\n".to_vec()),
        Just(b"Content-Length: 5\r\n".to_vec()),
        Just(b"Content-Length: 0\r\n".to_vec()),
        Just(b"Content-Length: 999999999999999999999\r\n".to_vec()),
        Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
        Just(b"Transfer-Encoding: gzip\r\n".to_vec()),
        Just(b"Connection: close\r\n".to_vec()),
        Just(b"Expect: 100-continue\r\n".to_vec()),
        Just(b"X: y\r\n".to_vec()),
        Just(b" folded\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"5\r\nhello\r\n".to_vec()),
        Just(b"3;ext=1\r\nabc\r\n".to_vec()),
        Just(b"ffffffffffffffff\r\n".to_vec()),
        Just(b"0\r\n\r\n".to_vec()),
        Just(b"0\r\nT: 1\r\n\r\n".to_vec()),
        vec(any::<u8>(), 0..8),
        "[ -~]{0,12}".prop_map(String::into_bytes),
    ];
    vec(piece, 0..40).prop_map(|pieces| {
        let mut bytes = pieces.concat();
        // Short enough that no partial line reaches the framing's
        // line-length thresholds (1024 and 8192 bytes), which the test
        // below covers.
        bytes.truncate(1000);
        bytes
    })
}

#[test]
fn framing_arbitrary_bytes_never_panics_and_stays_within_the_limits() {
    watchdog(WATCHDOG, || {
        let mut runner = TestRunner::new(ProptestConfig {
            cases: 1024,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        let bytes = prop_oneof![vec(any::<u8>(), 0..1000), http_ish()];
        let strategy = (bytes, 1..600usize, 0..300usize, vec(any::<Index>(), 0..12));
        runner
            .run(&strategy, |(input, max_head, max_body, cuts)| {
                let limits = Limits { max_head, max_body };
                // Any prefix, as a server sees it, within the bounds.
                for end in 0..=input.len() {
                    let framed = request::frame(&input[..end], limits);
                    check_bounds(&input[..end], &framed, limits).map_err(|e| {
                        TestCaseError::fail(format!("{e}; framing {}", show(&input[..end])))
                    })?;
                }
                // And split anyhow, it frames as the whole.
                let whole = frame_pieces(&[&input], limits).map_err(TestCaseError::fail)?;
                let split =
                    frame_pieces(&split_at(&input, &cuts), limits).map_err(TestCaseError::fail)?;
                if split != whole {
                    return Err(TestCaseError::fail(format!(
                        "{} split at {cuts:?} framed as {split:?}, whole as {whole:?}",
                        show(&input)
                    )));
                }
                Ok(())
            })
            .unwrap();
    });
}

#[test]
fn framing_long_chunk_lines_does_not_depend_on_how_they_are_split() {
    let head = "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n";
    let cases = [
        (
            "a chunk extension of 1500 bytes",
            format!("{head}5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(1500)),
        ),
        (
            "a trailer field of 9000 bytes",
            format!(
                "{head}5\r\nhello\r\n0\r\nX-Long: {}\r\n\r\n",
                "t".repeat(9000)
            ),
        ),
    ];
    let mut failures = Vec::new();
    for (what, stream) in &cases {
        let stream = stream.as_bytes();
        let whole = frame_pieces(&[stream], SERVER_LIMITS).unwrap();
        // Cut well inside the long line, as TCP may.
        let cut = head.len() + 1200;
        let split = frame_pieces(&[&stream[..cut], &stream[cut..]], SERVER_LIMITS).unwrap();
        let cut_late = stream.len() - 100;
        let split_late =
            frame_pieces(&[&stream[..cut_late], &stream[cut_late..]], SERVER_LIMITS).unwrap();
        let summary = |outcome: &Outcome| match &outcome.end {
            Framed::Reject(status) => status.line().to_owned(),
            _ if outcome.requests.len() == 1 => "the request, framed".to_owned(),
            end => format!("{end:?}"),
        };
        if split != whole || split_late != whole {
            failures.push(format!(
                "{what}: whole: {}; cut at {cut}: {}; cut at {cut_late}: {}",
                summary(&whole),
                summary(&split),
                summary(&split_late)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "framing depends on the split:\n{}",
        failures.join("\n")
    );
}
