//! The peers ontime is compared with, each an echo server that this same
//! binary runs as a child process: `echo_load serve KIND`.
//!
//! `mio`, `tokio` and `std` are the echo peers; `tokio-idle` is the idle
//! case's tokio peer, the same runtime with an idle deadline per
//! connection ([`tokio_idle`]).
//!
//! Each binds `127.0.0.1:0`, prints `listening on ADDR` as its first line,
//! and exits on its own after `LIFETIME`, in case the orchestrator could not
//! kill it. All use a read buffer of `BUF` bytes and leave Nagle's
//! algorithm on for accepted sockets, like ontime's example. (It makes no
//! difference here: each message is answered with one write, and the
//! previous answer has always been acknowledged by then.)

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// Size of the read buffer every peer echoes through.
pub(crate) const BUF: usize = 16 * 1024;

/// Longest a server process lives; one run is a few seconds.
const LIFETIME: Duration = Duration::from_secs(120);

/// The peers, by the name used on the command line and in the report.
pub(crate) const KINDS: [&str; 3] = ["mio", "tokio", "std"];

/// How long `tokio-idle` lets a connection sit idle before closing it: the
/// same as the `--idle-timeout-ms` the idle case gives ontime's examples.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the server named `kind`; returns only on error.
pub(crate) fn serve(kind: &str) -> io::Result<()> {
    std::thread::spawn(|| {
        std::thread::sleep(LIFETIME);
        eprintln!("echo_load server: lifetime of {LIFETIME:?} reached, exiting");
        std::process::exit(0);
    });
    match kind {
        "mio" => mio_loop(),
        "tokio" => tokio_current_thread(),
        "tokio-idle" => tokio_idle(),
        "std" => std_threads(),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unknown server kind {other:?}"),
        )),
    }
}

fn announce(addr: SocketAddr) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()
}

/// The floor: one edge-triggered `mio::Poll`, a `Slab` of connections,
/// read until drained and write each chunk straight back.
///
/// "Drained" follows the same rule as ontime's example, so that the two
/// differ only in the reactor: a short read means drained (as in tokio),
/// until an event has reported the peer's shutdown or an error; from then on,
/// read until `WouldBlock` or the end of the stream.
fn mio_loop() -> io::Result<()> {
    use mio::net::{TcpListener, TcpStream};
    use mio::{Events, Interest, Poll, Token};

    const LISTENER: Token = Token(usize::MAX);

    struct Conn {
        stream: TcpStream,
        /// Bytes read but not yet written back (the peer's receive window
        /// was full); reading stops until they are written.
        unsent: Vec<u8>,
        /// An event reported the peer's shutdown or an error: a short read
        /// may have taken the FIN, so it no longer means drained.
        peer_closed: bool,
    }

    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut listener = TcpListener::bind("127.0.0.1:0".parse().expect("valid address"))?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: slab::Slab<Conn> = slab::Slab::new();
    let mut buf = vec![0u8; BUF];
    announce(listener.local_addr()?)?;

    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let entry = conns.vacant_entry();
                            poll.registry().register(
                                &mut stream,
                                Token(entry.key()),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            entry.insert(Conn {
                                stream,
                                unsent: Vec::new(),
                                peer_closed: false,
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            let key = event.token().0;
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            conn.peer_closed |= event.is_read_closed() || event.is_error();
            if echo(conn, &mut buf).is_err() {
                let mut conn = conns.remove(key);
                let _ = poll.registry().deregister(&mut conn.stream);
            }
        }
    }

    /// Flushes what is unsent, then echoes until the socket has nothing to
    /// read. `Err` closes the connection (end of stream included).
    fn echo(conn: &mut Conn, buf: &mut [u8]) -> io::Result<()> {
        if !conn.unsent.is_empty() {
            let n = write_some(&mut conn.stream, &conn.unsent)?;
            conn.unsent.drain(..n);
            if !conn.unsent.is_empty() {
                return Ok(());
            }
        }
        loop {
            let n = match conn.stream.read(buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let written = write_some(&mut conn.stream, &buf[..n])?;
            if written < n {
                conn.unsent.extend_from_slice(&buf[written..n]);
                return Ok(());
            }
            if n < buf.len() && !conn.peer_closed {
                return Ok(());
            }
        }
    }

    /// Writes as much of `data` as the socket takes now.
    fn write_some(stream: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < data.len() {
            match stream.write(&data[done..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

/// tokio's current-thread runtime, one task per connection.
fn tokio_current_thread() -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        announce(listener.local_addr()?)?;
        loop {
            let (mut stream, _) = listener.accept().await?;
            tokio::spawn(async move {
                let mut buf = vec![0u8; BUF];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    })
}

/// tokio's current-thread runtime, one task per connection, and one
/// `tokio::time::timeout` of [`IDLE_TIMEOUT`] around each wait for input
/// (and each wait to write the rest of an echo): the tokio way to give
/// every connection an idle deadline.
///
/// Its best setting for many idle connections: the task waits with
/// `readable()` and reads with `try_read` into a buffer that lives only
/// between two `await`s, so the buffer is on the runtime's stack, not in
/// each task; an idle connection costs its task, its timer entry and its
/// registration, as in ontime's layer (whose reads go into one buffer per
/// reactor). A task that kept a `BUF`-byte `Vec` across `read().await`
/// would hold at least a page of it for as long as it lives.
fn tokio_idle() -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        announce(listener.local_addr()?)?;
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(echo_with_deadline(stream));
        }
    })
}

/// Echoes `stream` until it closes, errs or sits idle for [`IDLE_TIMEOUT`].
pub(crate) async fn echo_with_deadline(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    use tokio::time::timeout;

    loop {
        match timeout(IDLE_TIMEOUT, stream.readable()).await {
            Ok(Ok(())) => {}
            // Idle for the whole timeout, or an error: close.
            Err(_) | Ok(Err(_)) => return,
        }
        // No `await` while `buf` lives, so it is not part of the task.
        let rest = {
            let mut buf = [0u8; BUF];
            match stream.try_read(&mut buf) {
                Ok(0) => return,
                Ok(n) => match stream.try_write(&buf[..n]) {
                    Ok(written) if written == n => None,
                    Ok(written) => Some(buf[written..n].to_vec()),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(buf[..n].to_vec()),
                    Err(_) => return,
                },
                // A spurious wake-up: `readable` waits again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                Err(_) => return,
            }
        };
        if let Some(rest) = rest {
            match timeout(IDLE_TIMEOUT, stream.write_all(&rest)).await {
                Ok(Ok(())) => {}
                Err(_) | Ok(Err(_)) => return,
            }
        }
    }
}

/// Blocking std sockets, one thread per connection.
fn std_threads() -> io::Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    announce(listener.local_addr()?)?;
    loop {
        let (mut stream, _) = listener.accept()?;
        std::thread::spawn(move || {
            let mut buf = vec![0u8; BUF];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}
