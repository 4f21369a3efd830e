//! An in-memory key-value server that speaks the Redis protocol (RESP2), on
//! ontime's serving layer: `redis-cli`, `redis-benchmark` and the Redis
//! client libraries talk to it as to Redis.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release --example kv_server -- --addr 127.0.0.1:6380
//! ```
//!
//! and talk to it with `redis-cli -p 6380`. The first line it prints is
//! `listening on HOST:PORT`, with the port actually bound (`--addr
//! 127.0.0.1:0` picks a free one). SIGINT or SIGTERM shut it down
//! gracefully. `RUST_LOG=debug` shows the serving layer at work.
//!
//! What it shows:
//!
//! - A protocol and nothing else: listeners, buffers, pipelining (every
//!   reply to one read goes out in one write), backpressure, idle timeouts,
//!   the client limit and the shutdown are the layer's.
//! - Requests are parsed incrementally and never trusted: a bulk length is
//!   checked against `--max-request-bytes` before anything else, and the
//!   input grows only with bytes that arrived (see `kv/resp.rs`).
//! - Expiry on the timer wheel: every key with a TTL holds a timer that
//!   removes it at its deadline, so the memory of an expired key is freed
//!   within a tick or so, where Redis frees it lazily or when a sampling
//!   cycle finds it. A read never sees a key after its deadline.
//! - Pub/sub by writing to other connections (`Conn::write_to`); a
//!   subscriber that does not read is disconnected when its output passes
//!   `--pubsub-output-limit`, instead of growing the server.

#[path = "kv/commands.rs"]
mod commands;
#[path = "kv/resp.rs"]
mod resp;
#[path = "kv/store.rs"]
mod store;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ontime::serve::{Close, Config, Conn, ConnId, Context, Input, Report, Server, Service};
use ontime::TimerId;

use self::resp::{Args, Out, Parsed, Parser, Reply};
use self::store::Store;

mod common;

const USAGE: &str = "\
usage: kv_server [--addr HOST:PORT] [--max-request-bytes N] [--idle-timeout-ms N]
                 [--max-clients N] [--pubsub-output-limit N]

  --addr HOST:PORT           address to listen on (default 127.0.0.1:6380;
                             port 0 picks a free port)
  --max-request-bytes N      largest request, and largest bulk string in one,
                             in bytes (default 64 MiB)
  --idle-timeout-ms N        close a client idle for N ms, as Redis's
                             `timeout` (default 0: never; subscribers exempt)
  --max-clients N            most clients at once; more are told
                             `-ERR max number of clients reached` (default 10000)
  --pubsub-output-limit N    disconnect a client whose unsent output passes
                             N bytes (default 32 MiB)
  -h, --help                 print this help

SIGINT or SIGTERM shuts the server down gracefully.";

/// The server's settings, from its flags.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) addr: SocketAddr,
    pub(crate) max_request_bytes: usize,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_clients: usize,
    pub(crate) output_limit: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            addr: SocketAddr::from(([127, 0, 0, 1], 6380)),
            max_request_bytes: 64 << 20,
            idle_timeout: None,
            max_clients: 10_000,
            output_limit: 32 << 20,
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
                Arg::Long("max-request-bytes") => {
                    options.max_request_bytes = common::positive(parser, "--max-request-bytes")?
                }
                Arg::Long("idle-timeout-ms") => {
                    options.idle_timeout = common::timeout(parser, "--idle-timeout-ms")?
                }
                Arg::Long("max-clients") => {
                    options.max_clients = common::positive(parser, "--max-clients")?
                }
                Arg::Long("pubsub-output-limit") => {
                    options.output_limit = common::positive(parser, "--pubsub-output-limit")?
                }
                _ => return Err(arg.unexpected()),
            }
        }
        Ok(Some(options))
    }

    /// The serving layer's configuration for these options.
    pub(crate) fn config(&self) -> Config {
        // A request may be held whole while it arrives: the largest one,
        // plus room for the `*N` and `$N` lines around its arguments.
        let max_input = self.max_request_bytes.saturating_add(64 << 10);
        Config::new()
            .max_connections(self.max_clients)
            .idle_timeout(self.idle_timeout)
            .max_input(max_input)
            .max_output(self.output_limit)
            .read_size(16 << 10)
    }
}

/// One client's state.
#[derive(Debug, Default)]
pub(crate) struct Client {
    parser: Parser,
    /// The channels subscribed to, in subscription order.
    subscribed: Vec<Box<[u8]>>,
    name: Option<Box<[u8]>>,
    /// Speaks RESP3 (after `HELLO 3`).
    resp3: bool,
    /// Inside MULTI: the commands queued for EXEC.
    multi: Option<Box<Multi>>,
}

/// A transaction being queued.
#[derive(Debug, Default)]
pub(crate) struct Multi {
    queued: Vec<Vec<Box<[u8]>>>,
    bytes: usize,
    /// A queued command was refused: EXEC aborts.
    failed: bool,
}

impl Client {
    fn subscriptions(&self) -> usize {
        self.subscribed.len()
    }

    /// Adds `channel`; `false` if already subscribed.
    fn subscribe(&mut self, channel: &[u8]) -> bool {
        if self.subscribed.iter().any(|c| &**c == channel) {
            return false;
        }
        self.subscribed.push(channel.into());
        true
    }

    fn unsubscribe(&mut self, channel: &[u8]) {
        self.subscribed.retain(|c| &**c != channel);
    }

    fn take_subscriptions(&mut self) -> Vec<Box<[u8]>> {
        std::mem::take(&mut self.subscribed)
    }
}

/// The key-value service: the store, the channels, and counters for INFO.
#[derive(Debug)]
pub(crate) struct Kv {
    options: Options,
    store: Store,
    /// Subscribers by channel.
    channels: HashMap<Box<[u8]>, Vec<ConnId>>,
    /// The arguments of the request being run, and a reused reply buffer.
    args: Args,
    out: Vec<u8>,
    /// Reused buffers for the message PUBLISH fans out, in RESP2 and RESP3.
    frames: [Vec<u8>; 2],
    started: Instant,
    commands: u64,
    published: u64,
    port: u16,
}

impl Kv {
    pub(crate) fn new(options: Options, port: u16) -> Kv {
        Kv {
            options,
            store: Store::new(),
            channels: HashMap::new(),
            args: Args::default(),
            out: Vec::new(),
            frames: [Vec::new(), Vec::new()],
            started: Instant::now(),
            commands: 0,
            published: 0,
            port,
        }
    }

    /// Removes `id` from `channel`'s subscribers.
    fn leave(&mut self, channel: &[u8], id: ConnId) {
        if let Some(subscribers) = self.channels.get_mut(channel) {
            subscribers.retain(|&s| s != id);
            if subscribers.is_empty() {
                self.channels.remove(channel);
            }
        }
    }

    /// One request, parsed into `self.args` from `input`.
    fn run(&mut self, conn: &mut Conn<'_, Kv>, client: &mut Client, input: &[u8]) {
        self.commands += 1;
        let args = std::mem::take(&mut self.args);
        let mut out = Out {
            buf: std::mem::take(&mut self.out),
            resp3: client.resp3,
        };
        self.transact(conn, client, input, &args, &mut out);
        conn.write(&out.buf);
        out.buf.clear();
        self.out = out.buf;
        self.args = args;
    }

    /// MULTI, EXEC and DISCARD, and queueing inside a transaction; any
    /// other command runs at once.
    fn transact(
        &mut self,
        conn: &mut Conn<'_, Kv>,
        client: &mut Client,
        input: &[u8],
        args: &Args,
        out: &mut Out,
    ) {
        let mut buf = [0u8; 16];
        let name = commands::lowercase(args.get(input, 0), &mut buf).unwrap_or_default();
        match name {
            b"multi" => {
                if client.multi.is_some() {
                    out.error("ERR MULTI calls can not be nested");
                } else if args.len() != 1 {
                    out.error("ERR wrong number of arguments for 'multi' command");
                } else {
                    client.multi = Some(Box::default());
                    out.ok();
                }
                return;
            }
            b"exec" | b"discard" => {
                let Some(multi) = client.multi.take() else {
                    let upper = if name == b"exec" { "EXEC" } else { "DISCARD" };
                    return out.error(&format!("ERR {upper} without MULTI"));
                };
                if name == b"discard" {
                    return out.ok();
                }
                if multi.failed {
                    return out
                        .error("EXECABORT Transaction discarded because of previous errors.");
                }
                out.array(multi.queued.len());
                let mut queued = Args::default();
                for command in &multi.queued {
                    queued.set_owned(command);
                    self.execute(conn, client, &[], &queued, out);
                }
                return;
            }
            _ => {}
        }
        if let Some(multi) = client.multi.as_mut() {
            if name != b"quit" {
                let mut check = Out::default();
                if let Err(()) = Self::check(
                    client_subscribed(&client.subscribed),
                    input,
                    args,
                    &mut check.buf,
                ) {
                    out.put(&check.buf);
                    multi.failed = true;
                    return;
                }
                let size: usize = (0..args.len()).map(|i| args.get(input, i).len()).sum();
                multi.bytes += size;
                if multi.bytes > self.options.max_request_bytes {
                    out.error("ERR transaction too big: discarded");
                    multi.failed = true;
                    return;
                }
                multi.queued.push(args.to_owned(input));
                return out.simple("QUEUED");
            }
        }
        self.execute(conn, client, input, args, out);
    }

    /// Whether a request names a command with the right arity, allowed in
    /// the client's mode; the error reply if not.
    fn check(subscribed: bool, input: &[u8], args: &Args, out: &mut Vec<u8>) -> Result<(), ()> {
        let mut buf = [0u8; 16];
        let Some(name) = commands::lowercase(args.get(input, 0), &mut buf) else {
            out.error(&commands::unknown(input, args));
            return Err(());
        };
        match commands::arity(name) {
            None => {
                out.error(&commands::unknown(input, args));
                Err(())
            }
            Some(arity)
                if (arity > 0 && args.len() != arity as usize)
                    || (arity < 0 && args.len() < (-arity) as usize) =>
            {
                out.error(&format!(
                    "ERR wrong number of arguments for '{}' command",
                    String::from_utf8_lossy(name)
                ));
                Err(())
            }
            Some(_) if subscribed && !commands::allowed_subscribed(name) => {
                out.error(&commands::sanitized(format!(
                    "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / \
                     PING / QUIT / RESET are allowed in this context",
                    String::from_utf8_lossy(name)
                )));
                Err(())
            }
            Some(_) => Ok(()),
        }
    }

    /// Checks and runs one command.
    fn execute(
        &mut self,
        conn: &mut Conn<'_, Kv>,
        client: &mut Client,
        input: &[u8],
        args: &Args,
        out: &mut Out,
    ) {
        if Self::check(
            client_subscribed(&client.subscribed),
            input,
            args,
            &mut out.buf,
        )
        .is_err()
        {
            return;
        }
        let mut buf = [0u8; 16];
        let name = commands::lowercase(args.get(input, 0), &mut buf).unwrap_or_default();
        commands::execute(self, conn, client, name, input, args, out);
    }

    fn info(&self, conn: &Conn<'_, Kv>, input: &[u8], args: &Args, out: &mut Out) {
        let wanted = |section: &str| {
            args.len() < 2
                || (1..args.len()).any(|i| {
                    let arg = args.get(input, i);
                    arg.eq_ignore_ascii_case(section.as_bytes())
                        || arg.eq_ignore_ascii_case(b"all")
                        || arg.eq_ignore_ascii_case(b"everything")
                        || arg.eq_ignore_ascii_case(b"default")
                })
        };
        let stats = conn.stats();
        let uptime = self.started.elapsed().as_secs();
        let mut text = String::new();
        use std::fmt::Write as _;
        if wanted("server") {
            let _ = write!(
                text,
                "# Server\r\nredis_version:7.0.0\r\nontime_kv_version:{}\r\nredis_mode:standalone\r\n\
                 os:{}\r\narch_bits:{}\r\nprocess_id:{}\r\ntcp_port:{}\r\n\
                 uptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\n\r\n",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                usize::BITS,
                std::process::id(),
                self.port,
                uptime / 86_400,
            );
        }
        if wanted("clients") {
            let _ = write!(
                text,
                "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n\r\n",
                stats.open, self.options.max_clients
            );
        }
        if wanted("stats") {
            let _ = write!(
                text,
                "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
                 total_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\n\
                 rejected_connections:{}\r\nexpired_keys:{}\r\npubsub_channels:{}\r\n\
                 total_published:{}\r\nclosed_by_peer:{}\r\nclosed_on_error:{}\r\n\
                 closed_idle:{}\r\nclosed_at_limits:{}\r\nclosed_by_server:{}\r\n\
                 accept_pauses:{}\r\n\r\n",
                stats.accepted + stats.refused,
                self.commands,
                stats.bytes_in,
                stats.bytes_out,
                stats.refused,
                self.store.expired,
                self.channels.len(),
                self.published,
                stats.closed_peer,
                stats.closed_error,
                stats.closed_idle,
                stats.closed_limit,
                stats.closed_service,
                stats.accept_pauses,
            );
        }
        if wanted("keyspace") {
            let _ = write!(text, "# Keyspace\r\n");
            if self.store.len() > 0 {
                let _ = write!(
                    text,
                    "db0:keys={},expires={},avg_ttl=0\r\n",
                    self.store.len(),
                    self.store.volatile()
                );
            }
        }
        out.bulk(text.as_bytes());
    }
}

fn client_subscribed(subscribed: &[Box<[u8]>]) -> bool {
    !subscribed.is_empty()
}

impl Service for Kv {
    type Conn = Client;
    /// The key whose TTL this timer is, or `None` for the once-a-second
    /// housekeeping (the niche of the box makes the two the size of one).
    type Timer = Option<Box<[u8]>>;
    type Message = ();

    fn connected(&mut self, _: &mut Conn<'_, Self>) -> Client {
        Client::default()
    }

    fn received(&mut self, conn: &mut Conn<'_, Self>, client: &mut Client, input: &mut Input<'_>) {
        loop {
            let bytes = input.bytes();
            let max_bulk = self.options.max_request_bytes;
            match client.parser.parse(bytes, max_bulk, &mut self.args) {
                Parsed::Request(n) => {
                    self.run(conn, client, &bytes[..n]);
                    input.consume(n);
                    if conn.is_closing() {
                        return;
                    }
                }
                Parsed::Empty(n) => input.consume(n),
                Parsed::Incomplete => return,
                Parsed::Error(message) => {
                    log::debug!("{:?}: protocol error: {message}", conn.id());
                    let mut out = Vec::new();
                    out.error(&commands::sanitized(format!(
                        "ERR Protocol error: {message}"
                    )));
                    conn.write(&out);
                    conn.close_when_flushed();
                    return;
                }
            }
        }
    }

    fn input_full(&mut self, conn: &mut Conn<'_, Self>, _: &mut Client) {
        conn.write(b"-ERR Protocol error: request too big\r\n");
    }

    fn closed(
        &mut self,
        _: &mut Context<'_, Self>,
        id: ConnId,
        client: &mut Client,
        reason: Close,
    ) {
        log::debug!("{id:?} closed: {reason:?}");
        for channel in client.take_subscriptions() {
            self.leave(&channel, id);
        }
    }

    fn refusal(&self) -> &[u8] {
        b"-ERR max number of clients reached\r\n"
    }

    fn started(&mut self, cx: &mut Context<'_, Self>) {
        cx.interval(Duration::from_secs(1), None);
    }

    fn timer(&mut self, _: &mut Context<'_, Self>, id: TimerId, key: &mut Option<Box<[u8]>>) {
        match key {
            Some(key) => self.store.expire(key, id),
            None => {
                // After many keys went (expired or deleted), the table
                // shrinks and the allocator gives its free pages back, so
                // the memory of expired keys really leaves the process.
                if self.store.shrink_if_sparse() {
                    release_free_memory();
                }
            }
        }
    }
}

/// Asks the allocator to return its free memory to the OS. glibc's malloc
/// keeps freed small blocks for reuse and returns pages only from the top
/// of its heap; `malloc_trim` releases the free pages inside it too.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    // SAFETY: malloc_trim takes no pointers and only walks glibc's own
    // heap, under its own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

/// Binds `options.addr`; returns the server and the address bound.
pub(crate) fn bind(options: &Options) -> io::Result<(Server, SocketAddr)> {
    let mut server = Server::new(options.config());
    let addr = server.listen(options.addr)?;
    Ok((server, addr))
}

/// Runs a bound server until it is shut down.
pub(crate) fn run(server: Server, options: &Options, addr: SocketAddr) -> io::Result<Report> {
    server.run(|_| Kv::new(options.clone(), addr.port()))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    common::main("kv_server", USAGE, Options::parse, |options: &Options| {
        let (server, addr) = bind(options)?;
        common::serve_until_signal(server, addr, |server| run(server, options, addr))?;
        Ok::<(), io::Error>(())
    })
}
