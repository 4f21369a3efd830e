//! The serving layer allocates nothing per message in steady state: a
//! counting allocator counts what the server's thread allocates while a
//! client exchanges a thousand messages, after a warm-up.
//!
//! In a binary of its own: it installs a global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ontime::serve::{Config, Conn, Context, Input, Server, Service};

struct Counting;

thread_local! {
    /// Set on the server's thread only.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed on to `System` unchanged; the counter is
// only a side effect.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTED.try_with(Cell::get).unwrap_or(false) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTED.try_with(Cell::get).unwrap_or(false) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Echo, counting the server thread's allocations from `started` on.
struct Echo;

impl Service for Echo {
    type Conn = ();
    type Timer = ();
    type Message = ();

    fn started(&mut self, _: &mut Context<'_, Self>) {
        COUNTED.with(|c| c.set(true));
    }

    fn connected(&mut self, _: &mut Conn<'_, Self>) {}

    fn received(&mut self, conn: &mut Conn<'_, Self>, _: &mut (), input: &mut Input<'_>) {
        conn.write(input.bytes());
        input.consume(input.len());
    }
}

/// `rounds` ping-pongs of a 64-byte message on `client`.
fn ping_pong(client: &mut TcpStream, rounds: usize) {
    let message = [7u8; 64];
    let mut back = [0u8; 64];
    for _ in 0..rounds {
        client.write_all(&message).unwrap();
        client.read_exact(&mut back).unwrap();
        assert_eq!(back, message);
    }
}

fn allocations_per_round_trip(config: Config) -> u64 {
    let mut server = Server::new(config);
    let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let shutdown = server.shutdown_handle();
    let running = std::thread::spawn(move || server.run(|_| Echo));
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_nodelay(true).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Warm-up: the pool, the read buffer and the reactor's tables reach
    // their steady sizes. The server thread allocates meanwhile (the
    // connection's buffers, the pool), which shows the counter counts.
    let start = ALLOCATIONS.load(Ordering::Relaxed);
    ping_pong(&mut client, 200);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    assert!(before > start, "the counter saw no allocation at all");
    ping_pong(&mut client, 1000);
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    drop(client);
    shutdown.shutdown();
    running.join().unwrap().unwrap();
    after - before
}

/// One test, so that no other server thread counts meanwhile.
#[test]
fn no_allocation_per_message_in_steady_state() {
    let allocations = allocations_per_round_trip(Config::new());
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in 1000 round trips"
    );

    // With an idle timeout each message moves the connection's idle
    // deadline; the timer is re-armed only when it fires, which it does not
    // within the test.
    let config = Config::new().idle_timeout(Some(Duration::from_secs(60)));
    let allocations = allocations_per_round_trip(config);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in 1000 round trips, with an idle timeout"
    );
}
