//! An HTTP/1.1 server on ontime's serving layer: keep-alive, pipelining,
//! request bodies (`Content-Length` and chunked), `100-continue`, and the
//! limits that keep hostile clients cheap. httparse parses request heads;
//! the framing rules, the limits and the responses are here.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release --example http_server -- --addr 127.0.0.1:8080
//! ```
//!
//! and try `curl -v http://127.0.0.1:8080/plaintext`, or
//! `curl --data-binary @file http://127.0.0.1:8080/echo`. The first line it
//! prints is `listening on HOST:PORT`, with the port actually bound. SIGINT
//! or SIGTERM stop accepting, finish the requests in flight and close idle
//! keep-alive connections.
//!
//! Routes: `GET /` and `GET /plaintext` answer `Hello, World!`
//! (`text/plain`); `POST /echo` answers with the request body; `HEAD` of a
//! GET route sends the headers only; another method on a known path is
//! 405 with `Allow`; any other path is 404.
//!
//! Hostile clients get a status and a close, and cost bounded memory: the
//! whole head must arrive within `--header-timeout-ms` however slowly it
//! trickles (408); a head over `--max-header-bytes` is 431 (414 if the
//! request line alone is); a body over `--max-body-bytes` is 413, announced
//! or chunked, without buffering the rest; `Content-Length` with
//! `Transfer-Encoding`, two differing lengths, a bad length, obs-fold lines
//! and bare LFs are 400; a transfer coding other than chunked is 501. After
//! such a status the layer's close lingers: it stops writing and drops what
//! the client still sends for a moment, so that the client reads the status
//! instead of a reset.

#[path = "http/date.rs"]
mod date;
#[path = "http/request.rs"]
pub(crate) mod request;

use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use ontime::serve::{Config, Conn, Context, Expired, Input, Report, Server, Service};
use ontime::TimerId;

use self::request::{BodyKind, Dechunk, Head, Limits, Method, Route};

mod common;

const USAGE: &str = "\
usage: http_server [--addr HOST:PORT] [--threads N] [--header-timeout-ms N]
                   [--idle-timeout-ms N] [--max-header-bytes N] [--max-body-bytes N]
                   [--max-connections N]

  --addr HOST:PORT         address to listen on (default 127.0.0.1:8080;
                           port 0 picks a free port)
  --threads N              reactors, one per thread, sharing the port
                           (SO_REUSEPORT; default 1)
  --header-timeout-ms N    the whole request head must arrive within N ms
                           of its first byte (default 10000)
  --idle-timeout-ms N      close a keep-alive connection idle for N ms
                           (default 60000; 0: never)
  --max-header-bytes N     largest request head (default 8192)
  --max-body-bytes N       largest request body (default 1048576)
  --max-connections N      most connections open at once (default: no limit)
  -h, --help               print this help

SIGINT or SIGTERM shuts the server down gracefully.";

/// The server's settings, from its flags.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) addr: SocketAddr,
    pub(crate) threads: usize,
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_body_bytes: usize,
    pub(crate) max_connections: Option<usize>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            threads: 1,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(60)),
            max_header_bytes: 8 << 10,
            max_body_bytes: 1 << 20,
            max_connections: None,
        }
    }
}

impl Options {
    fn parse(parser: &mut common::Parser) -> Result<Option<Options>, common::Error> {
        use common::Arg;
        let mut options = Options::default();
        while let Some(arg) = parser.next()? {
            match arg {
                Arg::Short('h') | Arg::Long("help") => return Ok(None),
                Arg::Long("addr") => options.addr = common::socket_addr(parser, "--addr")?,
                Arg::Long("threads") => {
                    options.threads = common::positive_up_to(parser, "--threads", 1024)?
                }
                Arg::Long("header-timeout-ms") => {
                    options.header_timeout =
                        Duration::from_millis(common::positive(parser, "--header-timeout-ms")?)
                }
                Arg::Long("idle-timeout-ms") => {
                    options.idle_timeout = common::timeout(parser, "--idle-timeout-ms")?
                }
                Arg::Long("max-header-bytes") => {
                    options.max_header_bytes = common::positive(parser, "--max-header-bytes")?
                }
                Arg::Long("max-body-bytes") => {
                    options.max_body_bytes = common::positive(parser, "--max-body-bytes")?
                }
                Arg::Long("max-connections") => {
                    options.max_connections = Some(common::positive(parser, "--max-connections")?)
                }
                _ => return Err(arg.unexpected()),
            }
        }
        Ok(Some(options))
    }

    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_head: self.max_header_bytes,
            max_body: self.max_body_bytes,
        }
    }

    /// The serving layer's configuration for these options.
    pub(crate) fn config(&self) -> Config {
        // The input holds a head, or a `Content-Length` body until it is
        // all there (a chunked body is decoded as it arrives, and only a
        // partial line of it is held).
        let max_input = self
            .max_header_bytes
            .saturating_add(self.max_body_bytes)
            .saturating_add(64 << 10);
        let mut config = Config::new()
            .threads(self.threads)
            .idle_timeout(self.idle_timeout)
            .max_input(max_input);
        if let Some(n) = self.max_connections {
            config = config.max_connections(n);
        }
        config
    }
}

/// One connection's state: where it is in its current request.
#[derive(Debug, Default)]
pub(crate) enum Client {
    /// Between requests, or reading a head.
    #[default]
    Idle,
    /// The first byte of a head arrived; the head deadline is armed.
    Head,
    /// The head is in; a `Content-Length` body of this many bytes is
    /// awaited, whole, in the input.
    Body(Box<Head>, usize),
    /// The head is in; a chunked body is decoded as it arrives.
    Chunked(Box<(Head, Dechunk, Vec<u8>)>),
}

/// The HTTP service.
#[derive(Debug)]
pub(crate) struct Http {
    options: Options,
    limits: Limits,
    /// The `Date` header's value, formatted once a second.
    date: [u8; 29],
    /// What a connection over `--max-connections` is told, with the date.
    refusal: Vec<u8>,
}

impl Http {
    pub(crate) fn new(options: Options) -> Http {
        let mut http = Http {
            limits: options.limits(),
            options,
            date: [b' '; 29],
            refusal: Vec::new(),
        };
        http.tick();
        http
    }

    /// The once-a-second work: the date, and the refusal that carries it.
    fn tick(&mut self) {
        self.date = date::imf_fixdate(SystemTime::now());
        self.refusal.clear();
        self.refusal
            .extend_from_slice(b"HTTP/1.1 503 Service Unavailable\r\nServer: ontime\r\nDate: ");
        self.refusal.extend_from_slice(&self.date);
        self.refusal
            .extend_from_slice(b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    }

    /// Status line and the headers every response has.
    fn head(
        &self,
        conn: &mut Conn<'_, Http>,
        status: &str,
        content_type: &str,
        length: usize,
        connection: Option<&str>,
    ) {
        let mut buf = Vec::with_capacity(160);
        buf.extend_from_slice(b"HTTP/1.1 ");
        buf.extend_from_slice(status.as_bytes());
        buf.extend_from_slice(b"\r\nServer: ontime\r\nDate: ");
        buf.extend_from_slice(&self.date);
        buf.extend_from_slice(b"\r\nContent-Type: ");
        buf.extend_from_slice(content_type.as_bytes());
        buf.extend_from_slice(b"\r\nContent-Length: ");
        let _ = write!(buf, "{length}");
        if let Some(connection) = connection {
            buf.extend_from_slice(b"\r\nConnection: ");
            buf.extend_from_slice(connection.as_bytes());
        }
        buf.extend_from_slice(b"\r\n\r\n");
        conn.write(&buf);
    }

    /// The plaintext response, the hot path: no formatting but the
    /// cached date.
    fn hello(&self, conn: &mut Conn<'_, Http>, body: bool, connection: Option<&str>) {
        conn.write(
            b"HTTP/1.1 200 OK\r\nServer: ontime\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nDate: ",
        );
        conn.write(&self.date);
        if let Some(connection) = connection {
            conn.write(b"\r\nConnection: ");
            conn.write(connection.as_bytes());
        }
        conn.write(b"\r\n\r\n");
        if body {
            conn.write(b"Hello, World!");
        }
    }

    fn respond(&mut self, conn: &mut Conn<'_, Http>, head: &Head, body: &[u8]) -> bool {
        let keep_alive = head.keep_alive && !conn.is_draining();
        let connection = match (keep_alive, head.minor) {
            (false, _) => Some("close"),
            (true, 0) => Some("keep-alive"),
            (true, _) => None,
        };
        match (head.route, head.method) {
            (Route::Hello, Method::Get) => self.hello(conn, true, connection),
            (Route::Hello, Method::Head) => self.hello(conn, false, connection),
            (Route::Echo, Method::Post) => {
                self.head(
                    conn,
                    "200 OK",
                    "application/octet-stream",
                    body.len(),
                    connection,
                );
                conn.write(body);
            }
            (Route::Hello, _) | (Route::Echo, _) => {
                let allow = if head.route == Route::Hello {
                    "GET, HEAD"
                } else {
                    "POST"
                };
                let text = b"Method Not Allowed\n";
                let mut buf = Vec::new();
                let _ = write!(
                    buf,
                    "HTTP/1.1 405 Method Not Allowed\r\nServer: ontime\r\nDate: {}\r\nAllow: {allow}\r\n\
                     Content-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n",
                    String::from_utf8_lossy(&self.date),
                    text.len(),
                    connection.map(|c| format!("Connection: {c}\r\n")).unwrap_or_default()
                );
                conn.write(&buf);
                if head.method != Method::Head {
                    conn.write(text);
                }
            }
            (Route::Unknown, method) => {
                let text = b"Not Found\n";
                self.head(conn, "404 Not Found", "text/plain", text.len(), connection);
                if method != Method::Head {
                    conn.write(text);
                }
            }
        }
        keep_alive
    }

    /// Answers a whole request; the connection is ready for the next one,
    /// or closes after the answer.
    fn finish(&mut self, conn: &mut Conn<'_, Http>, client: &mut Client, head: &Head, body: &[u8]) {
        *client = Client::Idle;
        if !self.respond(conn, head, body) {
            conn.close_when_flushed();
        }
    }

    /// A status for a request that cannot be served, then a close. The
    /// layer's close lingers: it shuts down writing and drops what the
    /// client still sends for a moment, so the client reads the status
    /// rather than a reset.
    fn reject(&mut self, conn: &mut Conn<'_, Http>, status: &str) {
        let text = format!("{status}\n");
        self.head(conn, status, "text/plain", text.len(), Some("close"));
        conn.write(text.as_bytes());
        conn.close_when_flushed();
    }
}

impl Service for Http {
    type Conn = Client;
    /// The once-a-second `Date` refresh.
    type Timer = ();
    type Message = ();

    fn started(&mut self, cx: &mut Context<'_, Self>) {
        cx.interval(Duration::from_secs(1), ());
    }

    fn connected(&mut self, _: &mut Conn<'_, Self>) -> Client {
        Client::default()
    }

    fn received(&mut self, conn: &mut Conn<'_, Self>, client: &mut Client, input: &mut Input<'_>) {
        while !input.is_empty() && !conn.is_closing() {
            match client {
                Client::Idle | Client::Head => {
                    if matches!(client, Client::Idle) {
                        // The first byte of a request: its whole head must
                        // arrive within the header timeout, however slowly.
                        *client = Client::Head;
                        conn.set_timeout(self.options.header_timeout);
                    }
                    let head = match request::parse_head(input.bytes(), self.limits) {
                        Ok(Some(head)) => head,
                        Ok(None) => return,
                        Err(status) => return self.reject(conn, status.line()),
                    };
                    conn.clear_deadline();
                    input.consume(head.len);
                    let body = head.body;
                    if head.expect_continue && body != BodyKind::Length(0) {
                        conn.write(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                    *client = match body {
                        BodyKind::Length(0) => {
                            self.finish(conn, client, &head, &[]);
                            continue;
                        }
                        BodyKind::Length(n) => Client::Body(Box::new(head), n),
                        BodyKind::Chunked => {
                            Client::Chunked(Box::new((head, Dechunk::default(), Vec::new())))
                        }
                    };
                }
                Client::Body(head, n) => {
                    // The layer keeps the partial body; nothing is copied
                    // until it is all there.
                    if input.len() < *n {
                        return;
                    }
                    let (head, n) = (std::mem::take(head), *n);
                    let body = &input.bytes()[..n];
                    self.finish(conn, client, &head, body);
                    input.consume(n);
                }
                Client::Chunked(chunked) => {
                    let (head, dechunk, body) = &mut **chunked;
                    match dechunk.feed(input.bytes(), body, self.limits.max_body) {
                        Ok((used, done)) => {
                            input.consume(used);
                            if !done {
                                return;
                            }
                            let (head, body) = (std::mem::take(head), std::mem::take(body));
                            self.finish(conn, client, &head, &body);
                        }
                        Err(status) => return self.reject(conn, status.line()),
                    }
                }
            }
        }
    }

    fn expired(&mut self, conn: &mut Conn<'_, Self>, client: &mut Client, which: Expired) {
        if which == Expired::Deadline && matches!(client, Client::Head) {
            log::debug!("{:?}: the request head took too long", conn.id());
            self.reject(conn, "408 Request Timeout");
        } else {
            conn.close();
        }
    }

    fn is_idle(&self, client: &Client) -> bool {
        matches!(client, Client::Idle)
    }

    fn refusal(&self) -> &[u8] {
        &self.refusal
    }

    fn input_full(&mut self, conn: &mut Conn<'_, Self>, _: &mut Client) {
        let text = "413 Content Too Large\n";
        self.head(
            conn,
            "413 Content Too Large",
            "text/plain",
            text.len(),
            Some("close"),
        );
        conn.write(text.as_bytes());
    }

    fn timer(&mut self, _: &mut Context<'_, Self>, _: TimerId, _: &mut ()) {
        self.tick();
    }
}

/// Binds `options.addr`; returns the server and the address bound.
pub(crate) fn bind(options: &Options) -> io::Result<(Server, SocketAddr)> {
    let mut server = Server::new(options.config());
    let addr = server.listen(options.addr)?;
    Ok((server, addr))
}

/// Runs a bound server until it is shut down.
pub(crate) fn run(server: Server, options: &Options) -> io::Result<Report> {
    server.run(|_| Http::new(options.clone()))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    common::main("http_server", USAGE, Options::parse, |options: &Options| {
        let (server, addr) = bind(options)?;
        common::serve_until_signal(server, addr, |server| run(server, options))?;
        Ok::<(), io::Error>(())
    })
}
