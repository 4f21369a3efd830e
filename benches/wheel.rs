//! Timer micro-benchmarks: ontime's [`Wheel`] side by side with tokio's
//! timer (`tokio::time::Sleep`), tokio-util's `DelayQueue` and a
//! `std::collections::BinaryHeap` with lazy cancellation.
//!
//! ```text
//! cargo bench --bench wheel                     # about 2 minutes
//! cargo bench --bench wheel -- churn_1m         # one group (the summary still runs)
//! WHEEL_ROUNDS=0 cargo bench --bench wheel      # criterion groups only
//! ```
//!
//! Workloads (ticks are milliseconds for the tokio peers):
//!
//! - `insert_cancel_pair`: insert one timer 1 s ahead and cancel it at once,
//!   with 64 other timers resident (all earlier, so the pair is never the
//!   next to fire).
//! - `churn_10k`, `churn_1m`: N timers resident at random deadlines in
//!   [1 s, 1 s + 2^20 ms); one iteration cancels a random resident timer and
//!   inserts a new one at a random deadline, keeping N constant. The random
//!   sequence (a xorshift) is generated before measuring and is the same for
//!   every peer.
//! - `expiry`: N = 100 000 timers spread evenly over 200 ticks, fired in one
//!   turn; criterion's time is per batch, the summary reports per timer.
//!
//! What is measured for each peer:
//!
//! - `ontime`: `Wheel::insert` + `Wheel::cancel`; `ontime_reset` uses
//!   `Wheel::reset` instead for churn. Expiry: one `Wheel::advance` to the
//!   last tick (`ontime_stepped`: one `advance` per tick), fired timers
//!   collected in a reused `Vec`.
//! - `tokio_sleep`: pair = `sleep_until` + one poll with a no-op waker (which
//!   registers the timer in the driver's wheel, taking the driver lock) +
//!   drop (which deregisters it). Churn = `Sleep::reset` on a registered
//!   sleep: tokio moves the entry at once for an earlier deadline, but for a
//!   later one only records it (one CAS) and moves the entry when its old
//!   slot comes due, so about half of tokio's churn work is deferred past
//!   the measurement. Expiry = the driver turn
//!   (`block_on(yield_now())`) that fires the N registered sleeps (waking
//!   no-op wakers); the sleeps are not polled afterwards.
//! - `tokio_sleep_new` (churn only): tokio's cancel + insert, that is, a new
//!   registered `Sleep` (boxed, polled once) in place of the old one, whose
//!   drop deregisters it.
//! - `delay_queue`: `insert_at` + `remove` (churn: `remove` + `insert_at`;
//!   `delay_queue_reset`: `reset_at`). Expiry = draining `poll_expired` with
//!   a no-op waker after the deadlines passed and the driver caught up
//!   (DelayQueue allocates and registers a fresh `Sleep` after each item,
//!   which is part of its cost).
//!
//! Like for like, in churn: `ontime` (cancel + insert) against
//! `tokio_sleep_new` and `delay_queue`; `ontime_reset` against `tokio_sleep`
//! and `delay_queue_reset`. The summary gives the ratio to both of ontime's
//! operations.
//! - `binary_heap`: a min-heap of `(when, slot, generation)` over a slot
//!   table with a free list; cancel bumps the slot's generation (lazy
//!   deletion) and compacts the heap with `retain` once dead entries
//!   outnumber live ones, so the heap stays within 2x of the resident count.
//!
//! The run starts with a memory report (bytes per resident timer at 1M
//! timers, from allocation sizes and from the RSS delta in
//! `/proc/self/statm`) and ends with an interleaved side-by-side summary,
//! `WHEEL_ROUNDS` rounds (default 3) of every peer in turn on every
//! workload, printed as a markdown table of median ns per op and median of
//! the per-round ratios ontime / peer, and written to
//! `<target dir>/ontime-bench/wheel.md`. The process is pinned to one CPU.
//!
//! Without `--bench` (as `cargo test --benches` runs it) sizes shrink so that
//! the whole file checks its workloads in a few seconds.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::future::Future;
use std::hint::black_box;
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use ontime_core::timer::{TimerKey, Wheel};
use tokio::runtime::Runtime;
use tokio::time::{sleep_until, Instant, Sleep};
use tokio_util::time::{delay_queue, DelayQueue};

#[path = "common/stats.rs"]
mod stats;

use stats::{median, show};

/// Sizes of one run; smaller without `--bench`.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Resident timers of the big churn case (and of the memory report).
    big: usize,
    /// Timers fired per expiry batch.
    expiry: usize,
    /// Ticks the expiry batch is spread over.
    expiry_ticks: u64,
    /// Operations per peer per round in the summary.
    ops: usize,
    /// Rounds of the summary.
    rounds: usize,
}

impl Sizes {
    fn new(bench: bool) -> Sizes {
        let rounds = std::env::var("WHEEL_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(3);
        if bench {
            Sizes {
                big: 1_000_000,
                expiry: 100_000,
                expiry_ticks: 200,
                ops: 400_000,
                rounds,
            }
        } else {
            Sizes {
                big: 10_000,
                expiry: 1_000,
                expiry_ticks: 20,
                ops: 1_000,
                rounds: rounds.min(1),
            }
        }
    }
}

/// Deadlines of the churn cases: [CHURN_MIN, CHURN_MIN + 2^20) ticks.
const CHURN_MIN: u64 = 1_000;
const CHURN_SPAN: u64 = 1 << 20;
/// Length of the pre-generated churn sequence (a power of two).
const SEQ_LEN: usize = 1 << 16;
/// Timers resident during the insert/cancel pair, and the pair's deadline.
const PAIR_RESIDENT: usize = 64;
const PAIR_WHEN: u64 = 1_000;

/// Marsaglia's xorshift64: enough randomness for deadlines and slots.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// Random deadlines of the churn cases.
fn churn_whens(rng: &mut XorShift, n: usize) -> Vec<u64> {
    (0..n).map(|_| CHURN_MIN + rng.below(CHURN_SPAN)).collect()
}

/// The churn sequence: (slot to cancel, deadline of the new timer).
fn churn_sequence(rng: &mut XorShift, resident: usize) -> Vec<(usize, u64)> {
    (0..SEQ_LEN)
        .map(|_| {
            let slot = rng.below(resident as u64) as usize;
            (slot, CHURN_MIN + rng.below(CHURN_SPAN))
        })
        .collect()
}

/// Expiry deadlines: `n` timers spread evenly over ticks `1..=ticks`, in a
/// shuffled order.
fn expiry_whens(rng: &mut XorShift, n: usize, ticks: u64) -> Vec<u64> {
    let mut whens: Vec<u64> = (0..n as u64).map(|i| 1 + i % ticks).collect();
    for i in (1..whens.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        whens.swap(i, j);
    }
    whens
}

/// A waker that does nothing, made once (`Waker::noop` needs Rust 1.85,
/// above the declared rust-version).
static NOOP_WAKER: LazyLock<Waker> = LazyLock::new(|| {
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    Waker::from(Arc::new(Noop))
});

/// Polls a future once with a no-op waker.
fn poll_once<F: Future + ?Sized>(f: Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(&NOOP_WAKER))
}

/// One timer implementation under test.
trait Peer {
    /// Inserts a timer at `when` and cancels it at once.
    fn pair(&mut self, when: u64);
    /// Makes `whens.len()` timers resident; timer `i` is at `whens[i]`.
    fn fill(&mut self, whens: &[u64]);
    /// Cancels resident timer `slot` and inserts a new one at `when` in its
    /// place.
    fn churn(&mut self, slot: usize, when: u64);
    /// Inserts an expiry batch (not measured).
    fn load(&mut self, whens: &[u64], rt: &Runtime);
    /// Fires the whole batch (measured).
    fn expire(&mut self, rt: &Runtime);
    /// Timers fired by the last `expire`, checked after it (not measured).
    fn fired(&mut self) -> usize;
}

// ----- ontime -----

/// ontime's wheel, one tick per millisecond.
struct Ontime {
    wheel: Wheel<u64>,
    keys: Vec<TimerKey>,
    fired: Vec<(TimerKey, u64)>,
    /// Churn with `reset` rather than cancel + insert.
    reset: bool,
    /// Expire one tick at a time rather than in one step.
    stepped: bool,
    /// Last tick of the loaded expiry batch.
    until: u64,
}

impl Ontime {
    fn new() -> Ontime {
        Ontime {
            wheel: Wheel::new(),
            keys: Vec::new(),
            fired: Vec::new(),
            reset: false,
            stepped: false,
            until: 0,
        }
    }
}

impl Peer for Ontime {
    fn pair(&mut self, when: u64) {
        let key = self.wheel.insert(when, when);
        black_box(self.wheel.cancel(key));
    }

    fn fill(&mut self, whens: &[u64]) {
        self.keys = whens
            .iter()
            .map(|&when| self.wheel.insert(when, when))
            .collect();
    }

    fn churn(&mut self, slot: usize, when: u64) {
        let key = &mut self.keys[slot];
        if self.reset {
            self.wheel.reset(*key, when);
        } else {
            black_box(self.wheel.cancel(*key));
            *key = self.wheel.insert(when, when);
        }
    }

    fn load(&mut self, whens: &[u64], _: &Runtime) {
        let base = self.wheel.elapsed();
        for &when in whens {
            self.wheel.insert(base + when, when);
        }
        self.until = base + whens.iter().max().copied().unwrap_or(0);
        self.fired.clear();
    }

    fn expire(&mut self, _: &Runtime) {
        if self.stepped {
            for now in self.wheel.elapsed() + 1..=self.until {
                self.wheel.advance(now, &mut self.fired);
            }
        } else {
            self.wheel.advance(self.until, &mut self.fired);
        }
    }

    fn fired(&mut self) -> usize {
        self.fired.len()
    }
}

// ----- BinaryHeap -----

/// A slot of the heap peer's table.
struct HeapSlot {
    /// Bumped when the timer in the slot is cancelled or fires.
    generation: u32,
    live: bool,
    value: u64,
}

/// A binary min-heap of deadlines with lazy cancellation: the usual way to
/// build timers on `BinaryHeap`.
struct Heap {
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    slots: Vec<HeapSlot>,
    free: Vec<u32>,
    /// Heap entries whose timer was cancelled.
    dead: usize,
    now: u64,
    keys: Vec<(u32, u32)>,
    fired: Vec<((u32, u32), u64)>,
    until: u64,
}

impl Heap {
    fn new() -> Heap {
        Heap {
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            dead: 0,
            now: 0,
            keys: Vec::new(),
            fired: Vec::new(),
            until: 0,
        }
    }

    fn insert(&mut self, when: u64, value: u64) -> (u32, u32) {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(HeapSlot {
                    generation: 0,
                    live: false,
                    value: 0,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.live = true;
        slot.value = value;
        self.heap.push(Reverse((when, index, slot.generation)));
        (index, slot.generation)
    }

    fn cancel(&mut self, (index, generation): (u32, u32)) -> Option<u64> {
        let slot = &mut self.slots[index as usize];
        if !slot.live || slot.generation != generation {
            return None;
        }
        slot.live = false;
        slot.generation = slot.generation.wrapping_add(1);
        let value = slot.value;
        self.free.push(index);
        self.dead += 1;
        // Keep the heap within 2x of the live timers: amortised O(1).
        if self.dead > 64 && self.dead > self.heap.len() / 2 {
            let slots = &self.slots;
            self.heap
                .retain(|&Reverse((_, i, g))| slots[i as usize].generation == g);
            self.dead = 0;
        }
        Some(value)
    }

    fn advance(&mut self, now: u64) {
        while let Some(&Reverse((when, index, generation))) = self.heap.peek() {
            if when > now {
                break;
            }
            self.heap.pop();
            let slot = &mut self.slots[index as usize];
            if slot.live && slot.generation == generation {
                slot.live = false;
                slot.generation = slot.generation.wrapping_add(1);
                self.free.push(index);
                self.fired.push(((index, generation), slot.value));
            } else {
                self.dead -= 1;
            }
        }
        self.now = now;
    }
}

impl Peer for Heap {
    fn pair(&mut self, when: u64) {
        let key = self.insert(when, when);
        black_box(self.cancel(key));
    }

    fn fill(&mut self, whens: &[u64]) {
        self.keys = whens.iter().map(|&when| self.insert(when, when)).collect();
    }

    fn churn(&mut self, slot: usize, when: u64) {
        let key = self.keys[slot];
        black_box(self.cancel(key));
        self.keys[slot] = self.insert(when, when);
    }

    fn load(&mut self, whens: &[u64], _: &Runtime) {
        let base = self.now;
        for &when in whens {
            self.insert(base + when, when);
        }
        self.until = base + whens.iter().max().copied().unwrap_or(0);
        self.fired.clear();
    }

    fn expire(&mut self, _: &Runtime) {
        self.advance(self.until);
    }

    fn fired(&mut self) -> usize {
        self.fired.len()
    }
}

// ----- tokio::time::Sleep -----

/// tokio's own timer: one `Sleep` per timer, registered in the current-thread
/// runtime's time driver.
struct TokioSleep {
    base: Instant,
    sleeps: Vec<Pin<Box<Sleep>>>,
    /// Churn with a new `Sleep` rather than `Sleep::reset`.
    replace: bool,
}

impl TokioSleep {
    fn new() -> TokioSleep {
        TokioSleep {
            base: Instant::now(),
            sleeps: Vec::new(),
            replace: false,
        }
    }

    fn at(&self, when: u64) -> Instant {
        self.base + Duration::from_millis(when)
    }

    /// A sleep registered in the driver's wheel.
    fn registered(&self, when: u64) -> Pin<Box<Sleep>> {
        let mut sleep = Box::pin(sleep_until(self.at(when)));
        let _ = poll_once(sleep.as_mut());
        sleep
    }
}

impl Peer for TokioSleep {
    fn pair(&mut self, when: u64) {
        let mut sleep = pin!(sleep_until(self.at(when)));
        let _ = black_box(poll_once(sleep.as_mut()));
    }

    fn fill(&mut self, whens: &[u64]) {
        self.base = Instant::now();
        self.sleeps = whens.iter().map(|&when| self.registered(when)).collect();
    }

    fn churn(&mut self, slot: usize, when: u64) {
        if self.replace {
            // The old sleep is dropped (and deregistered) by the assignment.
            self.sleeps[slot] = self.registered(when);
        } else {
            let at = self.at(when);
            self.sleeps[slot].as_mut().reset(at);
        }
    }

    fn load(&mut self, whens: &[u64], rt: &Runtime) {
        // Let the driver catch up first so that the batch goes into its
        // wheel rather than firing on registration.
        rt.block_on(tokio::task::yield_now());
        self.base = Instant::now();
        self.sleeps = whens.iter().map(|&when| self.registered(when)).collect();
        let last = whens.iter().max().copied().unwrap_or(0);
        std::thread::sleep(self.at(last + 2).saturating_duration_since(Instant::now()));
    }

    fn expire(&mut self, rt: &Runtime) {
        // One turn of the current-thread scheduler parks the driver with a
        // zero timeout and then fires every expired entry.
        rt.block_on(tokio::task::yield_now());
    }

    fn fired(&mut self) -> usize {
        let n = self.sleeps.iter().filter(|s| s.is_elapsed()).count();
        self.sleeps.clear();
        n
    }
}

// ----- tokio_util::time::DelayQueue -----

/// tokio-util's `DelayQueue`: its own wheel, plus one tokio `Sleep` for the
/// earliest deadline.
struct DelayQ {
    base: Instant,
    queue: DelayQueue<u64>,
    keys: Vec<delay_queue::Key>,
    fired: usize,
    /// Churn with `reset_at` rather than remove + insert.
    reset: bool,
}

impl DelayQ {
    fn new() -> DelayQ {
        DelayQ {
            base: Instant::now(),
            queue: DelayQueue::new(),
            keys: Vec::new(),
            fired: 0,
            reset: false,
        }
    }

    fn at(&self, when: u64) -> Instant {
        self.base + Duration::from_millis(when)
    }
}

impl Peer for DelayQ {
    fn pair(&mut self, when: u64) {
        let key = self.queue.insert_at(when, self.at(when));
        black_box(self.queue.remove(&key));
    }

    fn fill(&mut self, whens: &[u64]) {
        self.base = Instant::now();
        self.queue = DelayQueue::new();
        self.keys = whens
            .iter()
            .map(|&when| self.queue.insert_at(when, self.at(when)))
            .collect();
        // Register the queue's own Sleep, as a consumer task would.
        let _ = self
            .queue
            .poll_expired(&mut Context::from_waker(&NOOP_WAKER));
    }

    fn churn(&mut self, slot: usize, when: u64) {
        let at = self.at(when);
        if self.reset {
            self.queue.reset_at(&self.keys[slot], at);
        } else {
            black_box(self.queue.remove(&self.keys[slot]));
            self.keys[slot] = self.queue.insert_at(when, at);
        }
    }

    fn load(&mut self, whens: &[u64], rt: &Runtime) {
        self.queue = DelayQueue::new();
        self.base = Instant::now();
        for &when in whens {
            self.queue.insert_at(when, self.at(when));
        }
        let last = whens.iter().max().copied().unwrap_or(0);
        std::thread::sleep(self.at(last + 2).saturating_duration_since(Instant::now()));
        // The driver catches up, so the queue's Sleeps fire on registration.
        rt.block_on(tokio::task::yield_now());
        self.fired = 0;
    }

    fn expire(&mut self, rt: &Runtime) {
        let mut cx = Context::from_waker(&NOOP_WAKER);
        loop {
            match self.queue.poll_expired(&mut cx) {
                Poll::Ready(Some(expired)) => {
                    black_box(expired.into_inner());
                    self.fired += 1;
                }
                Poll::Ready(None) => break,
                // Only if the driver has not seen the deadline yet.
                Poll::Pending => rt.block_on(tokio::task::yield_now()),
            }
        }
    }

    fn fired(&mut self) -> usize {
        self.fired
    }
}

// ----- criterion groups -----

type Group<'a> = BenchmarkGroup<'a, criterion::measurement::WallTime>;

fn bench_pair<P: Peer>(group: &mut Group<'_>, name: &str, mut peer: P) {
    let whens: Vec<u64> = (1..=PAIR_RESIDENT as u64).map(|i| i * 7).collect();
    peer.fill(&whens);
    group.bench_function(name, |b| b.iter(|| peer.pair(black_box(PAIR_WHEN))));
}

fn bench_churn<P: Peer>(
    group: &mut Group<'_>,
    name: &str,
    mut peer: P,
    whens: &[u64],
    seq: &[(usize, u64)],
) {
    peer.fill(whens);
    let mut i = 0;
    group.bench_function(name, |b| {
        b.iter(|| {
            let (slot, when) = seq[i & (SEQ_LEN - 1)];
            i += 1;
            peer.churn(slot, when);
        })
    });
}

fn bench_expiry<P: Peer>(
    group: &mut Group<'_>,
    name: &str,
    mut peer: P,
    whens: &[u64],
    rt: &Runtime,
) {
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                peer.load(whens, rt);
                let start = std::time::Instant::now();
                peer.expire(rt);
                total += start.elapsed();
                assert_eq!(peer.fired(), whens.len(), "{name}: timers lost");
            }
            total
        })
    });
}

fn ontime_reset() -> Ontime {
    Ontime {
        reset: true,
        ..Ontime::new()
    }
}

fn ontime_stepped() -> Ontime {
    Ontime {
        stepped: true,
        ..Ontime::new()
    }
}

fn tokio_sleep_new() -> TokioSleep {
    TokioSleep {
        replace: true,
        ..TokioSleep::new()
    }
}

fn delay_queue_reset() -> DelayQ {
    DelayQ {
        reset: true,
        ..DelayQ::new()
    }
}

fn criterion_groups(c: &mut Criterion, sizes: Sizes, rt: &Runtime) {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);

    let mut group = c.benchmark_group("insert_cancel_pair");
    group
        .warm_up_time(Duration::from_millis(1000))
        .measurement_time(Duration::from_millis(3000))
        .sample_size(50);
    bench_pair(&mut group, "ontime", Ontime::new());
    bench_pair(&mut group, "tokio_sleep", TokioSleep::new());
    bench_pair(&mut group, "delay_queue", DelayQ::new());
    bench_pair(&mut group, "binary_heap", Heap::new());
    group.finish();

    for (label, n) in [("churn_10k", 10_000), ("churn_1m", sizes.big)] {
        let whens = churn_whens(&mut rng, n);
        let seq = churn_sequence(&mut rng, n);
        let mut group = c.benchmark_group(label);
        group
            .warm_up_time(Duration::from_millis(1000))
            .measurement_time(Duration::from_millis(3000))
            .sample_size(30);
        bench_churn(&mut group, "ontime", Ontime::new(), &whens, &seq);
        bench_churn(&mut group, "ontime_reset", ontime_reset(), &whens, &seq);
        bench_churn(&mut group, "tokio_sleep", TokioSleep::new(), &whens, &seq);
        bench_churn(
            &mut group,
            "tokio_sleep_new",
            tokio_sleep_new(),
            &whens,
            &seq,
        );
        bench_churn(&mut group, "delay_queue", DelayQ::new(), &whens, &seq);
        bench_churn(
            &mut group,
            "delay_queue_reset",
            delay_queue_reset(),
            &whens,
            &seq,
        );
        bench_churn(&mut group, "binary_heap", Heap::new(), &whens, &seq);
        group.finish();
    }

    let whens = expiry_whens(&mut rng, sizes.expiry, sizes.expiry_ticks);
    // Flat sampling with a short target: each tokio batch waits 200 ms of
    // real time for its deadlines, so criterion runs them once per sample
    // (and says it could not fit 10 samples in the target time).
    let mut group = c.benchmark_group("expiry");
    group
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(500))
        .sample_size(10)
        .throughput(Throughput::Elements(whens.len() as u64));
    bench_expiry(&mut group, "ontime", Ontime::new(), &whens, rt);
    bench_expiry(&mut group, "ontime_stepped", ontime_stepped(), &whens, rt);
    bench_expiry(&mut group, "tokio_sleep", TokioSleep::new(), &whens, rt);
    bench_expiry(&mut group, "delay_queue", DelayQ::new(), &whens, rt);
    bench_expiry(&mut group, "binary_heap", Heap::new(), &whens, rt);
    group.finish();
}

// ----- memory -----

/// Resident set size of this process, from `/proc/self/statm`.
fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * usize::try_from(page).ok()?)
}

/// Returns freed heap memory to the OS so that the next RSS delta starts
/// from a clean baseline.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory held by the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Touches every page of `v`'s spare capacity, so that filling it later
/// adds nothing to the RSS.
fn prefault<T>(v: &mut Vec<T>) {
    for slot in v.spare_capacity_mut() {
        *slot = MaybeUninit::zeroed();
    }
    black_box(v.as_mut_ptr());
}

/// Bytes of RSS per timer that `build(n)` adds while its result is alive.
fn rss_per_timer<T>(n: usize, build: impl FnOnce(usize) -> T) -> (Option<f64>, T) {
    trim();
    let before = rss_bytes();
    let made = build(n);
    let after = rss_bytes();
    let per = before
        .zip(after)
        .map(|(b, a)| a.saturating_sub(b) as f64 / n as f64);
    (per, made)
}

fn fmt_bytes(b: Option<f64>) -> String {
    show(b.unwrap_or(f64::NAN), 1)
}

/// Prints bytes per resident timer at `n` timers for every peer and returns
/// the markdown table. The handles the caller keeps (keys, the boxes' pointers)
/// are allocated and touched before the baseline, so only the timer
/// structure counts.
fn memory_report(n: usize, rt: &Runtime) -> String {
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let whens = churn_whens(&mut rng, n);
    let mut out = format!(
        "### Bytes per resident timer at {n} timers\n\n\
         | peer | bytes/timer (allocation) | bytes/timer (RSS delta) |\n|---|---|---|\n"
    );

    let mut keys = Vec::with_capacity(n);
    prefault(&mut keys);
    let (rss, wheel) = rss_per_timer(n, |n| {
        let mut wheel = Wheel::<u64>::new();
        for &when in &whens[..n] {
            keys.push(wheel.insert(when, when));
        }
        wheel
    });
    let alloc = (wheel.heap_bytes() + std::mem::size_of::<Wheel<u64>>()) as f64 / n as f64;
    let _ = writeln!(
        out,
        "| ontime Wheel<u64> | {alloc:.1} (arena capacity {}) | {} |",
        wheel.capacity(),
        fmt_bytes(rss)
    );
    drop((wheel, keys));

    let mut heap = Heap::new();
    heap.keys.reserve(n);
    prefault(&mut heap.keys);
    let (rss, mut heap) = rss_per_timer(n, |n| {
        for &when in &whens[..n] {
            let key = heap.insert(when, when);
            heap.keys.push(key);
        }
        heap
    });
    heap.keys = Vec::new();
    let alloc = (heap.heap.capacity() * std::mem::size_of::<Reverse<(u64, u32, u32)>>()
        + heap.slots.capacity() * std::mem::size_of::<HeapSlot>()) as f64
        / n as f64;
    let _ = writeln!(
        out,
        "| BinaryHeap + slot table | {alloc:.1} | {} |",
        fmt_bytes(rss)
    );
    drop(heap);

    let mut queue = DelayQ::new();
    queue.keys.reserve(n);
    prefault(&mut queue.keys);
    let (rss, queue) = rss_per_timer(n, |n| {
        for &when in &whens[..n] {
            let at = queue.at(when);
            let key = queue.queue.insert_at(when, at);
            queue.keys.push(key);
        }
        queue
    });
    let _ = writeln!(
        out,
        "| tokio-util DelayQueue<u64> | n/a | {} |",
        fmt_bytes(rss)
    );
    drop(queue);

    let mut sleeps = TokioSleep::new();
    sleeps.sleeps.reserve(n);
    prefault(&mut sleeps.sleeps);
    let (rss, sleeps) = rss_per_timer(n, |n| {
        for &when in &whens[..n] {
            let sleep = sleeps.registered(when);
            sleeps.sleeps.push(sleep);
        }
        sleeps
    });
    let alloc = std::mem::size_of::<Sleep>();
    let _ = writeln!(out, "| tokio Sleep (boxed, registered) | {alloc} (size_of Sleep, before malloc overhead) | {} |", fmt_bytes(rss));
    drop(sleeps);
    // Deregistered timers leave the driver; one turn tidies up.
    rt.block_on(tokio::task::yield_now());
    trim();

    out
}

// ----- interleaved summary -----

/// ns per op of `ops` calls of `f`, after a warm-up of a tenth as many.
fn time_ops(ops: usize, mut f: impl FnMut(usize)) -> f64 {
    for i in 0..ops / 10 {
        f(i);
    }
    let start = std::time::Instant::now();
    for i in 0..ops {
        f(i);
    }
    start.elapsed().as_nanos() as f64 / ops as f64
}

/// Runs one round of one peer and returns ns per op.
type Runner<'a> = Box<dyn FnMut() -> f64 + 'a>;

/// One workload of the summary: a name and, per peer, a closure giving ns
/// per op for one round.
struct Row<'a> {
    workload: &'static str,
    peers: Vec<(&'static str, Runner<'a>)>,
}

fn pair_row(ops: usize) -> Row<'static> {
    fn peer<P: Peer + 'static>(mut p: P, ops: usize) -> Box<dyn FnMut() -> f64> {
        let whens: Vec<u64> = (1..=PAIR_RESIDENT as u64).map(|i| i * 7).collect();
        p.fill(&whens);
        Box::new(move || time_ops(ops, |_| p.pair(black_box(PAIR_WHEN))))
    }
    Row {
        workload: "insert_cancel_pair",
        peers: vec![
            ("ontime", peer(Ontime::new(), ops)),
            ("tokio_sleep", peer(TokioSleep::new(), ops)),
            ("delay_queue", peer(DelayQ::new(), ops)),
            ("binary_heap", peer(Heap::new(), ops)),
        ],
    }
}

fn churn_row(workload: &'static str, n: usize, ops: usize, rng: &mut XorShift) -> Row<'static> {
    fn peer<P: Peer + 'static>(
        mut p: P,
        ops: usize,
        whens: &[u64],
        seq: &Rc<Vec<(usize, u64)>>,
    ) -> Box<dyn FnMut() -> f64> {
        p.fill(whens);
        let seq = seq.clone();
        let mut i = 0;
        Box::new(move || {
            time_ops(ops, |_| {
                let (slot, when) = seq[i & (SEQ_LEN - 1)];
                i += 1;
                p.churn(slot, when);
            })
        })
    }
    let whens = churn_whens(rng, n);
    let seq = Rc::new(churn_sequence(rng, n));
    Row {
        workload,
        peers: vec![
            ("ontime", peer(Ontime::new(), ops, &whens, &seq)),
            ("ontime_reset", peer(ontime_reset(), ops, &whens, &seq)),
            ("tokio_sleep", peer(TokioSleep::new(), ops, &whens, &seq)),
            (
                "tokio_sleep_new",
                peer(tokio_sleep_new(), ops, &whens, &seq),
            ),
            ("delay_queue", peer(DelayQ::new(), ops, &whens, &seq)),
            (
                "delay_queue_reset",
                peer(delay_queue_reset(), ops, &whens, &seq),
            ),
            ("binary_heap", peer(Heap::new(), ops, &whens, &seq)),
        ],
    }
}

fn expiry_row<'a>(whens: &'a [u64], rt: &'a Runtime) -> Row<'a> {
    let peer = |mut p: Box<dyn Peer>| -> Box<dyn FnMut() -> f64 + 'a> {
        Box::new(move || {
            p.load(whens, rt);
            let start = std::time::Instant::now();
            p.expire(rt);
            let ns = start.elapsed().as_nanos() as f64 / whens.len() as f64;
            assert_eq!(p.fired(), whens.len(), "timers lost");
            ns
        })
    };
    Row {
        workload: "expiry (per timer)",
        peers: vec![
            ("ontime", peer(Box::new(Ontime::new()))),
            ("ontime_stepped", peer(Box::new(ontime_stepped()))),
            ("tokio_sleep", peer(Box::new(TokioSleep::new()))),
            ("delay_queue", peer(Box::new(DelayQ::new()))),
            ("binary_heap", peer(Box::new(Heap::new()))),
        ],
    }
}

/// Runs every row's peers in turn, A B C A B C, for `rounds` rounds and
/// returns the markdown report.
fn summary(sizes: Sizes, rt: &Runtime) -> String {
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    let expiry = expiry_whens(&mut rng, sizes.expiry, sizes.expiry_ticks);
    let mut rows = [
        pair_row(sizes.ops),
        churn_row("churn_10k", 10_000, sizes.ops, &mut rng),
        churn_row("churn_1m", sizes.big, sizes.ops, &mut rng),
        expiry_row(&expiry, rt),
    ];
    // results[row][peer][round]
    let mut results: Vec<Vec<Vec<f64>>> = rows
        .iter()
        .map(|r| vec![Vec::new(); r.peers.len()])
        .collect();
    for _ in 0..sizes.rounds {
        for (row, result) in rows.iter_mut().zip(&mut results) {
            for ((_, run), times) in row.peers.iter_mut().zip(result.iter_mut()) {
                times.push(run());
            }
        }
    }

    let mut out = format!(
        "### Timer operations, ns per op (median of {} interleaved rounds)\n\n\
         Ratio = ontime / peer (and, for churn, ontime_reset / peer), median of the per-round \
         ratios; below 1 means ontime is faster. Like for like: `ontime` with `tokio_sleep_new` \
         and `delay_queue`, `ontime_reset` with `tokio_sleep` and `delay_queue_reset`.\n\
         Churn: {} ops per round; `churn_1m` holds {} timers; expiry fires {} timers over {} ticks.\n\n\
         | workload | peer | ns/op | ontime / peer | ontime_reset / peer |\n|---|---|---|---|---|\n",
        sizes.rounds, sizes.ops, sizes.big, sizes.expiry, sizes.expiry_ticks
    );
    // The median over rounds of `ours[round] / theirs[round]`.
    let ratio = |ours: &[f64], theirs: &[f64]| {
        median(ours.iter().zip(theirs).map(|(o, p)| o / p).collect())
    };
    for (row, result) in rows.iter().zip(&results) {
        let ontime = &result[0];
        let reset = row
            .peers
            .iter()
            .position(|(name, _)| *name == "ontime_reset")
            .map(|i| &result[i]);
        for ((name, _), times) in row.peers.iter().zip(result) {
            let by_reset = reset.map_or_else(String::new, |r| format!("{:.3}", ratio(r, times)));
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {:.3} | {} |",
                row.workload,
                name,
                median(times.clone()),
                ratio(ontime, times),
                by_reset
            );
        }
    }
    out
}

/// Pins this process to one CPU, so that caches and frequency stay put.
fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_setaffinity
    // reads it and changes only this thread's affinity.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), Into::into)
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let sizes = Sizes::new(bench);
    pin_to_cpu(0);

    // Every tokio timer op needs the runtime's context; the whole run is
    // inside it. The driver only turns inside `block_on`, so resident
    // timers never fire while a churn loop runs.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
    let _enter = rt.enter();

    let memory = memory_report(sizes.big, &rt);
    println!("\n{memory}");

    let mut c = Criterion::default().configure_from_args();
    criterion_groups(&mut c, sizes, &rt);
    c.final_summary();

    if sizes.rounds > 0 {
        let table = summary(sizes, &rt);
        println!("\n{table}\n{memory}");
        if bench {
            let dir = target_dir().join("ontime-bench");
            let written = std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(dir.join("wheel.md"), format!("{table}\n{memory}")));
            match written {
                Ok(()) => println!("written to {}", dir.join("wheel.md").display()),
                Err(e) => eprintln!("could not write {}: {e}", dir.display()),
            }
        }
    }
}
