//! The one server every client talks to: std's blocking, thread-per-
//! connection echo server, run as `sync_pingpong serve` in a child process.
//!
//! It echoes whatever it reads and never sends on its own, so the same
//! server also holds the idle connections of the timeout-accuracy case.
//! One thread per connection, each with a small stack, and the descriptor
//! limit raised as far as the hard limit lets it ([`SERVER_NOFILE`]): the
//! crowd case holds hundreds of connections at once, the timeout case a
//! thousand.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// Longest a server process lives, in case nothing kills it.
const LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Back-off after an accept error that retrying at once would repeat.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Stack of a connection thread: one small buffer and a loop.
const CONN_STACK: usize = 64 * 1024;
/// Size of one read: more than any message of the comparison.
const READ_CHUNK: usize = 4096;
/// Descriptors the server asks for: well above the connections any case
/// opens at once (`SYNC_IDLE` and `SYNC_CROWD` are at most 20000 and 4096).
/// The bench raises its own limit before starting the server, which
/// inherits it; this covers `sync_pingpong serve` run by hand.
const SERVER_NOFILE: u64 = 32 * 1024;
/// Below this limit the server warns: the default cases need about 1000.
const NOFILE_LOW: u64 = 4096;

/// Binds `127.0.0.1:0`, prints `listening on ADDR`, and serves until
/// killed (or [`LIFETIME`] passes).
pub(crate) fn serve() -> io::Result<()> {
    match crate::sys::raise_nofile(SERVER_NOFILE) {
        Ok(limit) if limit < NOFILE_LOW => {
            eprintln!(
                "sync_pingpong serve: RLIMIT_NOFILE is {limit} (the hard limit): \
                 the crowd and timeout cases may run out of descriptors"
            );
        }
        Ok(_) => {}
        Err(e) => eprintln!("sync_pingpong serve: cannot raise RLIMIT_NOFILE: {e}"),
    }
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    // The timeout case connects a thousand clients back to back.
    socket.listen(4096)?;
    let listener = TcpListener::from(socket);
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {}", listener.local_addr()?)?;
    stdout.flush()?;
    drop(stdout);

    thread::spawn(|| {
        thread::sleep(LIFETIME);
        eprintln!("sync_pingpong serve: lived {LIFETIME:?}, exiting");
        std::process::exit(1);
    });
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let spawned = thread::Builder::new()
                    .stack_size(CONN_STACK)
                    .spawn(move || echo(stream));
                if let Err(e) = spawned {
                    eprintln!("sync_pingpong serve: cannot start a thread: {e}");
                    thread::sleep(ACCEPT_BACKOFF);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                eprintln!("sync_pingpong serve: accept: {e}");
                thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}

/// Echoes until the peer closes or the connection fails.
fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = [0u8; READ_CHUNK];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
