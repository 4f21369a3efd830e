//! TCP sockets the facade's tests share: a pair, a pair with small
//! buffers, an address that refuses, and a listener whose accept queue is
//! full.

use std::fs;
use std::net::SocketAddr;

use ontime::sync::{select, TcpListener, TcpStream};
use socket2::{Domain, Protocol, Socket, Type};

use super::MUST_SUCCEED;

/// A connected pair `(client, server)` made by the facade; with no default
/// timeout both are blocking.
pub(crate) fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("local_addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    (client, server)
}

/// `SO_SNDBUF` and `SO_RCVBUF` of [`small_buffer_pair`], the contract's
/// bound for fill loops.
pub(crate) const SMALL_BUFFER: usize = 64 * 1024;

/// A connected pair whose send and receive buffers are shrunk to
/// [`SMALL_BUFFER`] before connecting, so that the buffers fill quickly.
/// Both streams are blocking.
pub(crate) fn small_buffer_pair() -> (TcpStream, TcpStream) {
    let shrunk = || {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        socket
            .set_recv_buffer_size(SMALL_BUFFER)
            .expect("SO_RCVBUF");
        socket
            .set_send_buffer_size(SMALL_BUFFER)
            .expect("SO_SNDBUF");
        socket
    };
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let listen = shrunk();
    listen.bind(&any.into()).expect("bind");
    listen.listen(16).expect("listen");
    let listener = TcpListener::from(std::net::TcpListener::from(listen));
    let connect = shrunk();
    // A blocking connect, as std's.
    connect
        .connect(&listener.local_addr().expect("local_addr").into())
        .expect("connect");
    let client = TcpStream::from(std::net::TcpStream::from(connect));
    let (server, _) = listener.accept().expect("accept");
    (client, server)
}

/// An address on 127.0.0.1 where no TCP listener is: a port the OS just gave
/// out and took back.
pub(crate) fn refused_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local_addr")
}

/// A listener whose accept queue is full, with the filler connection that
/// fills it ("a real connect timeout on loopback only" in the contract):
/// backlog 0 and one connection nobody accepts, so Linux drops the next SYN
/// and a connect to it times out. `None`, after saying so, where the kernel
/// refuses such connects instead (`tcp_abort_on_overflow` is 1).
pub(crate) fn full_accept_queue() -> Option<(TcpListener, std::net::TcpStream)> {
    let abort = fs::read_to_string("/proc/sys/net/ipv4/tcp_abort_on_overflow").unwrap_or_default();
    if abort.trim() == "1" {
        eprintln!("skipped: net.ipv4.tcp_abort_on_overflow is 1, so a full accept queue refuses instead of dropping SYNs");
        return None;
    }
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let listen = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    listen.bind(&any.into()).expect("bind");
    listen.listen(0).expect("listen");
    let listener = TcpListener::from(std::net::TcpListener::from(listen));
    let filler = std::net::TcpStream::connect(listener.local_addr().expect("local_addr"))
        .expect("filler connect");
    // The filler counts against the backlog once it sits in the accept queue.
    let ready = select(&[&listener], &[], Some(MUST_SUCCEED)).expect("select");
    assert_eq!(
        ready.readable,
        vec![0],
        "the filler connection never reached the accept queue"
    );
    Some((listener, filler))
}
