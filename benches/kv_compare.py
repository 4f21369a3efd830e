#!/usr/bin/env python3
"""kv_compare: examples/kv_server against a real redis-server, side by side.

How to run (from the workspace root, as root on Debian for the install step):

    python3 benches/kv_compare.py                  # full run: -n 1000000, 3 rounds
    KV_N=100000 KV_KEYS=200000 python3 benches/kv_compare.py --rounds 1   # quick look
    python3 benches/kv_compare.py --only throughput --n 200000

Flags (some also as environment variables): --n / KV_N (requests per
redis-benchmark test, default 1000000), --rounds / KV_ROUNDS (default 3),
--keys / KV_KEYS (keys for the memory and expiry tests, default 1000000),
--ttl-ms / KV_TTL_MS (default 1000), --expiry-timeout / KV_EXPIRY_TIMEOUT
(seconds, default 60), --only throughput,memory,expiry, --out NAME, --no-build,
--no-install. See --help.

What it does:

- Installs redis-server and redis-benchmark from Debian's packages
  (`apt-get install -y redis-server redis-tools`, after `apt-get update` if
  needed) when they are not on PATH, and builds
  `cargo build --release --example kv_server`.
- Every server is started fresh for each measurement, pinned to CPU 0
  (`taskset -c 0`), on 127.0.0.1 only: `kv_server --addr 127.0.0.1:0` and
  `redis-server --save '' --appendonly no --port P --bind 127.0.0.1` (its
  version from `redis-server --version` is printed). The load generator
  (redis-benchmark, or this script's own loader and poller) is pinned to
  CPU 1. Servers alternate A B A B within each round, for --rounds rounds.

1. Throughput: `redis-benchmark -t ping,set,get,incr,mset,lpush,lpop,hset,lrange_100
   -n N -c 50 --csv`, without and with `-P 16`, the same binary and flags
   against both servers. req/s per test is redis-benchmark's own figure; the
   table gives the median over rounds for each server and the median of the
   per-round ratios kv/redis. Server CPU per request is utime+stime of the
   server process (/proc/PID/stat, all threads, clock-tick resolution) over
   each test's window, divided by N: the windows are cut when redis-benchmark
   prints each test's CSV line (its stdout is line-buffered with stdbuf), so
   LRANGE_100 is not charged for the LPUSH that redis-benchmark runs before
   it ("LPUSH (needed to benchmark LRANGE)", reported as its own row).
   Before each run the server is fresh (empty). redis-benchmark's own CPU per
   request is given too (when the client is the bottleneck, as it is on 2
   cores, req/s says little and server CPU per request is the figure).
   Noise: the machine may be shared, so the CPU time that other processes
   took on CPU 0 and CPU 1 (/proc/stat less the server's, redis-benchmark's
   and this script's) is measured per test; a test where it passes --noise
   (10%) of either CPU is re-run (only the noisy tests, with those they
   depend on, on a fresh server) up to --retries (2) times, the quietest
   attempt is kept, and the table says how many rounds were quiet.
2. Memory per key: this script writes SET key:<i> <100-byte value> for
   i in 0..KEYS, pipelined (one writer thread, one reader thread checking
   that every reply is +OK), then checks DBSIZE == KEYS. Bytes per key =
   (VmRSS after - VmRSS before, from /proc/PID/status) / KEYS.
3. Expiry: the same load with `SET key:<i> <value> PX TTL` on a fresh server,
   then DBSIZE and VmRSS are polled every 10 ms. Times are given from the last
   key's deadline (end of load + TTL): until DBSIZE reaches 0, until RSS is
   back within 10% of what the load added ("RSS 90% back"), and the last time
   RSS fell by more than 1% of that growth ("RSS stopped falling", once it has
   been flat for --flat (10) s after DBSIZE reached 0). Polling gives up
   --expiry-timeout seconds after the last deadline ("not within 60 s").
   The time series go to target/ontime-bench/kv-expiry-SERVER-ROUND.csv (OUT-...).
   With a TTL shorter than the load takes, keys set first expire during the
   load ("DBSIZE after load" < KEYS); --ttl-ms 10000 has them all resident.

Output: markdown tables on stdout, also written to target/ontime-bench/kv.md
(--out NAME: NAME.md); every round's figures to target/ontime-bench/kv-rounds.csv
(NAME-rounds.csv); logs of servers
and of redis-benchmark's stderr under target/ontime-bench/kv-logs/.
Everything is bounded: redis-benchmark is killed after --stall seconds
without output (reported as a hang), loads and polls have deadlines.
"""

import argparse
import csv
import datetime
import hashlib
import io
import os
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benches", "common"))
from procs import CLK_TCK, env_int, free_port, ontime_revision, proc_cpu, proc_rss  # noqa: E402
OUT_DIR = os.path.join(ROOT, "target", "ontime-bench")
LOG_DIR = os.path.join(OUT_DIR, "kv-logs")
KV_BUILT = os.path.join(ROOT, "target", "release", "examples", "kv_server")
# A private copy, so that a rebuild by someone else during the run does not
# mix two versions of the server in one table.
KV_BIN = os.path.join(ROOT, "target", "ontime-bench", "kv-logs", "kv_server")
TESTS = "ping,set,get,incr,mset,lpush,lpop,hset,lrange_100"
SERVER_CPU = "0"
CLIENT_CPU = "1"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- setup


def ensure_redis(allow_install):
    if shutil.which("redis-server") and shutil.which("redis-benchmark"):
        return
    if not allow_install:
        sys.exit("redis-server or redis-benchmark not on PATH (and --no-install)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", RUNLEVEL="1")
    cmd = ["apt-get", "install", "-y", "redis-server", "redis-tools"]
    log("installing: " + " ".join(cmd))
    if subprocess.run(cmd, env=env).returncode != 0:
        log("install failed; apt-get update first")
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(cmd, env=env, check=True)
    if not (shutil.which("redis-server") and shutil.which("redis-benchmark")):
        sys.exit("redis-server/redis-benchmark still not on PATH after install")


def build_kv():
    log("building: cargo build --release --example kv_server")
    subprocess.run(
        ["cargo", "build", "--release", "--example", "kv_server"], cwd=ROOT, check=True
    )


def redis_version():
    return subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True
    ).stdout.strip()


# ---------------------------------------------------------------- processes


def cpu_busy():
    """Busy jiffies (all but idle and iowait) of CPU 0 and CPU 1, from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+) (.*)", line)
            if m and m.group(1) in (SERVER_CPU, CLIENT_CPU):
                v = [int(x) for x in m.group(2).split()]
                out[m.group(1)] = (sum(v[:8]) - v[3] - v[4]) / CLK_TCK
    return out


def wait_quiet(max_wait, what):
    """Waits (at most max_wait s) until CPUs 0 and 1 are both under 10% busy
    over 0.5 s; returns the busy fractions seen last."""
    end = time.monotonic() + max_wait
    while True:
        a = cpu_busy()
        time.sleep(0.5)
        b = cpu_busy()
        frac = {c: (b[c] - a[c]) / 0.5 for c in b}
        if all(f < 0.10 for f in frac.values()):
            return frac
        if time.monotonic() >= end:
            NOTES.append(f"{what}: CPUs not quiet after {max_wait:g} s of waiting "
                         f"(busy CPU0 {frac[SERVER_CPU]:.0%}, CPU1 {frac[CLIENT_CPU]:.0%}); ran anyway")
            return frac
        time.sleep(1.0)


class Server:
    def __init__(self, name, proc, port, logpath):
        self.name, self.proc, self.port, self.logpath = name, proc, port, logpath
        self.pid = proc.pid

    def cpu(self):
        return proc_cpu(self.pid)

    def rss(self):
        return proc_rss(self.pid)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.pid}) did not exit 10 s after SIGTERM; SIGKILL")
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        if rc not in (0, -signal.SIGTERM):
            NOTES.append(f"{self.name} exited with status {rc} (log: {self.logpath})")


NOTES = []  # odd things seen, printed at the end
INTERFERENCE = []  # (run, share of CPU0 and of CPU1 used by other processes)
QUIET_WAIT = [30.0]


def args_quiet_wait():
    return QUIET_WAIT[0]


def wait_ping(port, name, deadline=10.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with Resp(port, timeout=1) as c:
                if c.call("PING") == "PONG":
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not answer PING on {port} within {deadline} s")


def start_server(name, tag):
    logpath = os.path.join(LOG_DIR, f"{name}-{tag}.log")
    logf = open(logpath, "w")
    if name == "kv":
        proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, KV_BIN, "--addr", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=logf, stdin=subprocess.DEVNULL,
        )
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        line = proc.stdout.readline().decode() if ready else ""
        m = re.match(r"listening on 127\.0\.0\.1:(\d+)", line)
        if not m:
            proc.kill()
            raise RuntimeError(f"kv_server's first line was {line!r}, see {logpath}")
        port = int(m.group(1))
    else:
        port = free_port()
        proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, "redis-server", "--save", "", "--appendonly", "no",
             "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no"],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    logf.close()
    server = Server(name, proc, port, logpath)
    try:
        wait_ping(port, name)
        comm = open(f"/proc/{proc.pid}/comm").read().strip()
        if comm == "taskset":
            raise RuntimeError("taskset did not exec the server")
        aff = os.sched_getaffinity(proc.pid)
        if aff != {int(SERVER_CPU)}:
            raise RuntimeError(f"{name} affinity is {aff}")
    except Exception:
        server.stop()
        raise
    return server


# ---------------------------------------------------------------- RESP


class Resp:
    """A minimal blocking RESP2 client."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile("rb")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass

    def call(self, *args):
        self.sock.sendall(encode(args))
        return self.read()

    def read(self):
        line = self.f.readline()
        if not line.endswith(b"\r\n"):
            raise OSError(f"connection closed or bad line: {line!r}")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise OSError(f"bad reply line {line!r}")


class RespError(str):
    pass


def encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def build_load(keys, value_size, ttl_ms=None, batch=1000):
    """SET key:<i> <value> [PX ttl] for i in 0..keys, in batches of bytes."""
    value = (b"v" * value_size)[:value_size]
    head = b"*5\r\n$3\r\nSET\r\n" if ttl_ms else b"*3\r\n$3\r\nSET\r\n"
    tail = b"$%d\r\n%s\r\n" % (value_size, value)
    if ttl_ms:
        t = str(ttl_ms).encode()
        tail += b"$2\r\nPX\r\n$%d\r\n%s\r\n" % (len(t), t)
    batches = []
    for start in range(0, keys, batch):
        parts = []
        for i in range(start, min(keys, start + batch)):
            k = b"key:%d" % i
            parts.append(b"%s$%d\r\n%s\r\n%s" % (head, len(k), k, tail))
        batches.append(b"".join(parts))
    return batches


def load(port, batches, keys, deadline_s=300):
    """Sends every batch on one connection (writer thread) while reading the
    replies (this thread). Returns (seconds, errors: list of distinct replies
    other than +OK with counts)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=deadline_s)
    expected = 5 * keys
    got = []
    received = 0
    werr = []

    def writer():
        try:
            for b in batches:
                sock.sendall(b)
        except OSError as e:
            werr.append(e)

    t0 = time.monotonic()
    w = threading.Thread(target=writer, daemon=True)
    w.start()
    lines = 0
    tail = b""
    try:
        while lines < keys:
            if time.monotonic() - t0 > deadline_s:
                raise RuntimeError(f"load did not finish in {deadline_s} s ({lines} replies)")
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError(f"server closed the connection after {lines} replies")
            got.append(chunk)
            received += len(chunk)
            lines += chunk.count(b"\n")
        elapsed = time.monotonic() - t0
    finally:
        w.join(timeout=5)
        sock.close()
    if werr:
        raise RuntimeError(f"writer: {werr[0]}")
    data = b"".join(got)
    errors = {}
    if received != expected or data != b"+OK\r\n" * keys:
        for line in data.split(b"\r\n"):
            if line and line != b"+OK":
                errors[line[:120]] = errors.get(line[:120], 0) + 1
        if received != expected and not errors:
            errors[b"(reply bytes %d, expected %d)" % (received, expected)] = 1
    return elapsed, errors


# ---------------------------------------------------------------- 1. throughput


def snapshot(server, client_pid):
    """(time, server CPU s, client CPU s, this script's CPU s, busy s of CPU0, CPU1)."""
    try:
        client = proc_cpu(client_pid)
    except (OSError, ValueError):
        client = None
    t = os.times()
    busy = cpu_busy()
    return (time.monotonic(), server.cpu(), client, t.user + t.system,
            busy[SERVER_CPU], busy[CLIENT_CPU])


def foreign(a, b):
    """Shares of CPU0 and CPU1 that other processes used between snapshots."""
    wall = max(b[0] - a[0], 1e-3)
    f0 = (b[4] - a[4] - (b[1] - a[1])) / wall
    client = (b[2] - a[2]) if (a[2] is not None and b[2] is not None) else 0.0
    f1 = (b[5] - a[5] - client - (b[3] - a[3])) / wall
    return max(f0, 0.0), max(f1, 0.0)


def run_benchmark(server, n, clients, pipeline, tests, stall_s, tag):
    """Runs redis-benchmark against server; returns {test: (rps, p50, p99,
    server_cpu_seconds, foreign0, foreign1)} and a list of problems."""
    cmd = ["stdbuf", "-oL", "taskset", "-c", CLIENT_CPU, "redis-benchmark",
           "-h", "127.0.0.1", "-p", str(server.port), "-t", tests, "-n", str(n),
           "-c", str(clients), "--csv"]
    if pipeline > 1:
        cmd += ["-P", str(pipeline)]
    errpath = os.path.join(LOG_DIR, f"redis-benchmark-{tag}.stderr")
    errf = open(errpath, "w")
    wait_quiet(args_quiet_wait(), f"redis-benchmark {tag}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, stdin=subprocess.DEVNULL)
    prev = snapshot(server, proc.pid)
    first = prev
    results, problems = {}, []
    try:
        read_results(proc, server, results, problems, prev, stall_s)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        errf.close()
    prev = results.pop("__last__")
    f0, f1 = foreign(first, prev)
    INTERFERENCE.append((tag, f0, f1))
    if proc.returncode not in (0, -signal.SIGKILL):
        problems.append(f"redis-benchmark exited with {proc.returncode}")
    err = open(errpath).read().strip()
    if err:
        problems.append("redis-benchmark stderr: " + " | ".join(err.splitlines()[:5]))
    return results, problems


def read_results(proc, server, results, problems, prev, stall_s):
    """Reads redis-benchmark's CSV lines as they come, cutting a CPU window at each."""
    fd = proc.stdout.fileno()
    header = None
    buf = b""
    last_line = time.monotonic()
    while True:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                last_line = time.monotonic()
                now = snapshot(server, proc.pid)
                row = next(csv.reader([line.decode(errors="replace")]))
                if header is None and row and row[0] == "test":
                    header = row
                    continue
                if len(row) >= 2:
                    try:
                        rps = float(row[1])
                    except ValueError:
                        problems.append(f"unparsed line {line!r}")
                        continue
                    rec = dict(zip(header or [], row))
                    f0, f1 = foreign(prev, now)
                    results[row[0]] = (rps, rec.get("p50_latency_ms"), rec.get("p99_latency_ms"),
                                       now[1] - prev[1], f0, f1,
                                       None if now[2] is None or prev[2] is None
                                       else now[2] - prev[2])
                    prev = now
        elif time.monotonic() - last_line > stall_s:
            problems.append(
                f"HANG: no output for {stall_s:g} s after {list(results) or 'start'}; killed "
                f"(server alive: {server.alive()})")
            proc.kill()
            break
        if not server.alive():
            problems.append(f"server died (status {server.proc.poll()}) after {list(results)}")
            proc.kill()
            break
    results["__last__"] = prev


def retry_tests(bad):
    """redis-benchmark -t names that re-run the tests named bad (CSV names),
    each with the tests it depends on (GET reads SET's key, LPOP pops LPUSH's
    list; LRANGE_100 runs its own LPUSH first)."""
    names = []
    for t in bad:
        base = t.split(" ")[0].lower()
        if t.startswith("LPUSH (needed"):
            base = "lrange_100"
        for n in {"get": ["set", "get"], "lpop": ["lpush", "lpop"],
                  "rpop": ["rpush", "rpop"]}.get(base, [base]):
            if n not in names:
                names.append(n)
    return ",".join(names)


def noisy(res, limit):
    """Tests of one run during which other processes used more than limit of a CPU."""
    return [t for t, v in res.items() if v[4] > limit or v[5] > limit]


def throughput(args, rounds_csv):
    modes = [1, args.pipeline]
    per = {}  # (mode, server) -> list of dicts per round
    order = []
    seen_problems = set()
    for r in range(args.rounds):
        for mode in modes:
            for name in ("kv", "redis"):
                # Per test, the attempt during which other processes used the least
                # CPU; a run is repeated (fresh server) while some test is noisy in all.
                res, bad = {}, []
                for attempt in range(args.retries + 1):
                    tag = f"P{mode}-r{r + 1}-{name}" + (f"-try{attempt + 1}" if attempt else "")
                    log(f"[throughput] round {r + 1}/{args.rounds} -P {mode} {name}"
                        + (f" (retry {attempt} of the noisy tests: {retry_tests(bad)})"
                           if attempt else ""))
                    server = start_server(name, tag)
                    try:
                        tests = args.tests if attempt == 0 else retry_tests(bad)
                        got, problems = run_benchmark(server, args.n, args.clients, mode,
                                                      tests, args.stall, tag)
                    finally:
                        server.stop()
                    for p in problems:
                        key = (mode, name, re.sub(r"\d", "", p))
                        log("  " + p)
                        if key not in seen_problems:
                            seen_problems.add(key)
                            NOTES.append(f"throughput -P {mode} round {r + 1} {name}: {p}")
                    for test, v in got.items():
                        log(f"  {test:40s} {v[0]:12.0f} req/s  cpu {v[3] / args.n * 1e6:6.2f} us/req"
                            f"  others CPU0 {v[4]:4.0%} CPU1 {v[5]:4.0%}")
                        if test not in res or max(v[4:6]) < max(res[test][4:6]):
                            res[test] = v
                    bad = noisy(res, args.noise)
                    if not bad:
                        break
                if bad:
                    NOTES.append(f"throughput -P {mode} round {r + 1} {name}: still noisy after "
                                 f"{args.retries} retries (others > {args.noise:.0%} of a CPU) "
                                 f"in: {', '.join(bad)}")
                per.setdefault((mode, name), []).append(res)
                for test, (rps, p50, p99, cpu, f0, f1, ccpu) in res.items():
                    if test not in order:
                        order.append(test)
                    rounds_csv.append(("throughput", f"P{mode}", r + 1, name, test, dict(
                        rps=rps, p50_ms=p50, p99_ms=p99, cpu_us_per_req=cpu / args.n * 1e6,
                        client_cpu_us_per_req=None if ccpu is None else ccpu / args.n * 1e6,
                        others_cpu0=round(f0, 3), others_cpu1=round(f1, 3))))
    tables = []
    for mode in modes:
        lines = [
            f"### redis-benchmark -c {args.clients} -n {args.n}"
            + (f" -P {mode}" if mode > 1 else " (no pipelining)"),
            "",
            "| test | kv req/s | redis req/s | kv/redis | kv CPU µs/req | redis CPU µs/req | client CPU µs/req kv/redis | kv p50/p99 ms | redis p50/p99 ms | quiet rounds kv/redis |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        kv_rounds, rd_rounds = per.get((mode, "kv"), []), per.get((mode, "redis"), [])
        for test in order:
            ratios, kvr, rdr, kvc, rdc, kvl, rdl = [], [], [], [], [], [], []
            for a, b in zip(kv_rounds, rd_rounds):
                if test in a and test in b and b[test][0] > 0:
                    ratios.append(a[test][0] / b[test][0])
            for res, rl, cl, ll in ((kv_rounds, kvr, kvc, kvl), (rd_rounds, rdr, rdc, rdl)):
                for x in res:
                    if test in x:
                        rl.append(x[test][0])
                        cl.append(x[test][3] / args.n * 1e6)
                        ll.append((x[test][0], f"{x[test][1]}/{x[test][2]}"))
            lines.append(
                f"| {test} | {fmt_med(kvr, '{:,.0f}')} | {fmt_med(rdr, '{:,.0f}')} | "
                f"{fmt_med(ratios, '{:.2f}x')} | {fmt_med(kvc, '{:.2f}')} | {fmt_med(rdc, '{:.2f}')} | "
                f"{client_cpu(kv_rounds, test, args)}/{client_cpu(rd_rounds, test, args)} | "
                f"{mid(kvl)} | {mid(rdl)} | {quiet(kv_rounds, test, args)}/{quiet(rd_rounds, test, args)} |")
        tables.append("\n".join(lines))
    return tables


def client_cpu(rounds, test, args):
    """Median redis-benchmark CPU per request (µs) over rounds."""
    xs = [x[test][6] / args.n * 1e6 for x in rounds if test in x and x[test][6] is not None]
    return f"{statistics.median(xs):.2f}" if xs else "—"


def quiet(rounds, test, args):
    """How many rounds ran test with other processes under --noise of each CPU."""
    xs = [x[test] for x in rounds if test in x]
    return f"{sum(1 for v in xs if v[4] <= args.noise and v[5] <= args.noise)}"


def fmt_med(xs, f):
    if not xs:
        return "—"
    s = f.format(statistics.median(xs))
    if len(xs) > 1:
        s += f" ({f.format(min(xs)).rstrip('x')}–{f.format(max(xs))})"
    return s


def mid(xs):
    """The latency pair of the round with the median req/s."""
    return sorted(xs)[len(xs) // 2][1] if xs else "—"


# ---------------------------------------------------------------- 2. memory


def memory(args, rounds_csv):
    log(f"[memory] building {args.keys} SETs of {args.value_size}-byte values")
    batches = build_load(args.keys, args.value_size)
    per = {"kv": [], "redis": []}
    for r in range(args.rounds):
        for name in ("kv", "redis"):
            tag = f"mem-r{r + 1}-{name}"
            wait_quiet(args.quiet_wait, f"memory {tag}")
            server = start_server(name, tag)
            try:
                with Resp(server.port) as c:
                    c.call("PING")
                    time.sleep(0.2)
                    before = server.rss()
                    secs, errors = load(server.port, batches, args.keys)
                    dbsize = c.call("DBSIZE")
                    time.sleep(0.5)
                    after = server.rss()
                    info = c.call("INFO", "memory")
            finally:
                server.stop()
            if errors:
                NOTES.append(f"memory round {r + 1} {name}: non-OK replies: "
                             + ", ".join(f"{k!r} x{v}" for k, v in errors.items()))
            if dbsize != args.keys:
                NOTES.append(f"memory round {r + 1} {name}: DBSIZE {dbsize!r}, expected {args.keys}")
            used = None
            if isinstance(info, bytes):
                m = re.search(rb"used_memory:(\d+)", info)
                used = int(m.group(1)) if m else None
            per_key = (after - before) / args.keys
            per[name].append((before, after, per_key, dbsize, secs, used))
            rounds_csv.append(("memory", "", r + 1, name, "", dict(
                bytes_per_key=per_key, rss_before=before, rss_after=after, dbsize=dbsize,
                load_s=secs)))
            log(f"  round {r + 1} {name}: DBSIZE {dbsize}, RSS {mib(before)} -> {mib(after)} MiB, "
                f"{per_key:.1f} B/key, load {secs:.2f} s ({args.keys / secs:,.0f} SET/s)")
    lines = [
        f"### Memory: {args.keys:,} keys (SET key:<i> <{args.value_size} B>), RSS delta per key",
        "",
        "| server | DBSIZE | RSS before MiB | RSS after MiB | bytes/key | load SET/s (pipelined) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("kv", "redis"):
        rs = per[name]
        if not rs:
            continue
        lines.append(
            f"| {label(name)} | {', '.join(str(x[3]) for x in rs)} | "
            f"{fmt_med([mib(x[0]) for x in rs], '{:.1f}')} | {fmt_med([mib(x[1]) for x in rs], '{:.1f}')} | "
            f"{fmt_med([x[2] for x in rs], '{:.1f}')} | {fmt_med([args.keys / x[4] for x in rs], '{:,.0f}')} |")
    if per["kv"] and per["redis"]:
        ratios = [a[2] / b[2] for a, b in zip(per["kv"], per["redis"]) if b[2] > 0]
        lines.append("")
        lines.append(f"kv/redis bytes per key: {fmt_med(ratios, '{:.2f}x')} (median of per-round ratios)."
                     + (f" redis INFO used_memory after load: {mib(per['redis'][0][5]):.1f} MiB."
                        if per["redis"][0][5] else ""))
    return "\n".join(lines)


def mib(b):
    return b / (1 << 20)


def label(name):
    return "kv_server" if name == "kv" else "redis-server"


# ---------------------------------------------------------------- 3. expiry


def expiry_one(args, name, r, batches):
    tag = f"exp-r{r + 1}-{name}"
    wait_quiet(args.quiet_wait, f"expiry {tag}")
    server = start_server(name, tag)
    samples = []
    try:
        with Resp(server.port) as c:
            c.call("PING")
            time.sleep(0.2)
            base = server.rss()
            t_load0 = time.monotonic()
            secs, errors = load(server.port, batches, args.keys)
            t_end = time.monotonic()
            dbsize_after = c.call("DBSIZE")
            rss_after = server.rss()
            last_deadline = t_load0 + secs + args.ttl_ms / 1000.0
            t_stop = last_deadline + args.expiry_timeout
            peak = rss_after
            t_db0 = t_rss90 = None
            last_fall_t, last_fall_rss = None, rss_after
            busy0, cpu0, w0 = cpu_busy()[SERVER_CPU], server.cpu(), time.monotonic()
            while True:
                now = time.monotonic()
                db = c.call("DBSIZE")
                rss = server.rss()
                samples.append((now - last_deadline, db, rss))
                peak = max(peak, rss)
                growth = max(peak - base, 1)
                if rss < last_fall_rss - 0.01 * growth:
                    last_fall_t, last_fall_rss = now, rss
                if db == 0 and t_db0 is None:
                    t_db0 = now
                if t_rss90 is None and rss - base <= 0.1 * growth and now > last_deadline:
                    t_rss90 = now
                if t_db0 is not None and (t_rss90 is not None or
                                          now - max(last_fall_t or t_end, t_db0) >= args.flat):
                    break
                if now >= t_stop:
                    break
                time.sleep(0.01)
            end_db, end_rss, t_poll_end = db, rss, now
            others0 = ((cpu_busy()[SERVER_CPU] - busy0 - (server.cpu() - cpu0))
                       / max(time.monotonic() - w0, 1e-3))
    finally:
        server.stop()
    with open(os.path.join(OUT_DIR, f"{args.out}-expiry-{name}-r{r + 1}.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seconds_after_last_deadline", "dbsize", "rss_bytes"])
        for s in samples:
            w.writerow([f"{s[0]:.3f}", s[1], s[2]])
    if errors:
        NOTES.append(f"expiry round {r + 1} {name}: non-OK replies: "
                     + ", ".join(f"{k!r} x{v}" for k, v in errors.items()))

    def rel(t):
        return None if t is None else t - last_deadline

    return dict(base=base, rss_after=rss_after, peak=peak, load=secs, dbsize_after=dbsize_after,
                db0=rel(t_db0), rss90=rel(t_rss90), flat=rel(last_fall_t), end_db=end_db,
                end_rss=end_rss, samples=len(samples), others0=max(others0, 0.0),
                poll_end=rel(t_poll_end))


def expiry(args, rounds_csv):
    log(f"[expiry] building {args.keys} SET ... PX {args.ttl_ms}")
    batches = build_load(args.keys, args.value_size, ttl_ms=args.ttl_ms)
    per = {"kv": [], "redis": []}
    for r in range(args.expiry_rounds):
        for name in ("kv", "redis"):
            log(f"[expiry] round {r + 1}/{args.expiry_rounds} {name}")
            e = expiry_one(args, name, r, batches)
            per[name].append(e)
            rounds_csv.append(("expiry", "", r + 1, name, "", {
                k: e[k] for k in ("load", "dbsize_after", "db0", "rss90", "flat", "base", "peak",
                                  "end_rss", "end_db")}))
            log(f"  load {e['load']:.2f} s, DBSIZE after load {e['dbsize_after']}, "
                f"RSS {mib(e['base']):.1f} -> peak {mib(e['peak']):.1f} -> end {mib(e['end_rss']):.1f} MiB; "
                f"DBSIZE 0 at {tfmt(e['db0'], args, e)}, RSS 90% back at {tfmt(e['rss90'], args, e)}, "
                f"last fall at {ffmt(e['flat'])}, end DBSIZE {e['end_db']}, "
                f"others on CPU0 {e['others0']:.0%}")
    lines = [
        f"### Expiry: {args.keys:,} keys SET with PX {args.ttl_ms}, "
        f"polled every 10 ms (times from the last key's deadline = end of load + {args.ttl_ms} ms)",
        "",
        "| server | load s | DBSIZE after load | DBSIZE → 0 | RSS 90% back | RSS stopped falling | RSS base → peak → end MiB | peak bytes/key | others on CPU0 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("kv", "redis"):
        for i, e in enumerate(per[name]):
            lines.append(
                f"| {label(name)} r{i + 1} | {e['load']:.2f} | {e['dbsize_after']} | {tfmt(e['db0'], args, e)} | "
                f"{tfmt(e['rss90'], args, e)} | {ffmt(e['flat'])} | "
                f"{mib(e['base']):.1f} → {mib(e['peak']):.1f} → {mib(e['end_rss']):.1f} | "
                f"{(e['peak'] - e['base']) / args.keys:.0f} | {e['others0']:.0%} |")
    lines.append("")
    lines.append(
        "\"RSS 90% back\": RSS within 10% of the load's growth above the pre-load RSS. "
        "\"RSS stopped falling\": the last time RSS fell by more than 1% of that growth "
        f"(polling stops {args.flat:g} s after that once DBSIZE is 0, or at the RSS 90% mark, "
        f"or {args.expiry_timeout:g} s after the last deadline). "
        "Negative times: before the last deadline (keys set early in the load expire during it). "
        "Peak bytes/key: (peak RSS - pre-load RSS) / keys, keys with a TTL. "
        "Others on CPU0: the share of CPU 0 that processes other than the server used while polling.")
    return "\n".join(lines)


def ffmt(t):
    return "never fell" if t is None else f"{t:+.2f} s"


def tfmt(t, args, e):
    if t is not None:
        return f"{t:+.2f} s"
    if e["poll_end"] >= args.expiry_timeout - 0.05:
        return f"not within {args.expiry_timeout:g} s"
    return f"not by {e['poll_end']:+.1f} s (end of polling)"


# ---------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(
        description="kv_server vs redis-server: throughput, memory per key, expiry",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--n", type=int, default=env_int("KV_N", 1_000_000),
                   help="requests per redis-benchmark test (KV_N)")
    p.add_argument("--rounds", type=int, default=env_int("KV_ROUNDS", 3), help="(KV_ROUNDS)")
    p.add_argument("--expiry-rounds", type=int, default=None,
                   help="rounds of the expiry test (default: --rounds)")
    p.add_argument("--keys", type=int, default=env_int("KV_KEYS", 1_000_000), help="(KV_KEYS)")
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--ttl-ms", type=int, default=env_int("KV_TTL_MS", 1000), help="(KV_TTL_MS)")
    p.add_argument("--expiry-timeout", type=float,
                   default=float(env_int("KV_EXPIRY_TIMEOUT", 60)), help="seconds (KV_EXPIRY_TIMEOUT)")
    p.add_argument("--flat", type=float, default=10.0,
                   help="expiry: stop polling once DBSIZE is 0 and RSS has not fallen for this long")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--pipeline", type=int, default=16)
    p.add_argument("--tests", default=TESTS)
    p.add_argument("--stall", type=float, default=60.0,
                   help="kill redis-benchmark after this many seconds without a result line")
    p.add_argument("--quiet-wait", type=float, default=30.0,
                   help="before each run, wait at most this long for CPUs 0 and 1 to be idle")
    p.add_argument("--noise", type=float, default=0.10,
                   help="a test is noisy when other processes used more than this share of CPU 0 or 1")
    p.add_argument("--retries", type=int, default=2,
                   help="re-run a noisy redis-benchmark run at most this many times")
    p.add_argument("--only", default="throughput,memory,expiry")
    p.add_argument("--out", default="kv",
                   help="write target/ontime-bench/OUT.md and OUT-rounds.csv (default kv)")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--no-install", action="store_true")
    args = p.parse_args()
    if args.expiry_rounds is None:
        args.expiry_rounds = args.rounds
    parts = set(args.only.split(","))
    QUIET_WAIT[0] = args.quiet_wait
    # The stall limit must cover the slowest plausible test at -c 50.
    args.stall = max(args.stall, args.n / 20_000)

    ensure_redis(not args.no_install)
    if not args.no_build:
        build_kv()
    if not os.path.exists(KV_BUILT):
        sys.exit(f"{KV_BUILT} missing")
    os.makedirs(LOG_DIR, exist_ok=True)
    shutil.copy2(KV_BUILT, KV_BIN + ".tmp")
    os.replace(KV_BIN + ".tmp", KV_BIN)
    with open(KV_BIN, "rb") as f:
        kv_sha = hashlib.sha256(f.read()).hexdigest()[:12]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("kv_compare: SIGTERM"))
    # This script (loader, poller) runs on the client's CPU.
    os.sched_setaffinity(0, {int(CLIENT_CPU)})

    rversion = redis_version()
    bversion = subprocess.run(["redis-benchmark", "--version"], capture_output=True,
                              text=True).stdout.strip()
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    cmdline = "python3 benches/kv_compare.py " + " ".join(sys.argv[1:])
    env_set = " ".join(f"{k}={os.environ[k]}" for k in ("KV_N", "KV_ROUNDS", "KV_KEYS", "KV_TTL_MS",
                                                         "KV_EXPIRY_TIMEOUT") if k in os.environ)
    head = [
        "## kv_server vs redis-server",
        "",
        f"- run {started}: `{(env_set + ' ') if env_set else ''}{cmdline.strip()}`",
        f"- kv_server: examples/kv_server at {ontime_revision(ROOT)}, release build (sha256 {kv_sha}…)",
        f"- redis-server: `{rversion}`, `--save '' --appendonly no`",
        f"- load generator: `{bversion}`; servers on CPU 0, client on CPU 1 (taskset); "
        f"{args.rounds} interleaved rounds (kv, redis, kv, redis, ...), each server fresh per run",
        f"- machine: {os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.2f}",
    ]
    rounds_csv = []
    sections = []
    if "throughput" in parts:
        sections += throughput(args, rounds_csv)
    if "memory" in parts:
        sections.append(memory(args, rounds_csv))
    if "expiry" in parts:
        sections.append(expiry(args, rounds_csv))
    notes = ["### Notes", ""] + [f"- {n}" for n in NOTES] if NOTES else ["### Notes", "", "- none"]
    head.append(f"- load average at end {os.getloadavg()[0]:.2f}")
    if INTERFERENCE:
        f0 = [x[1] for x in INTERFERENCE]
        f1 = [x[2] for x in INTERFERENCE]
        head.append(f"- other processes' share of CPU0 / CPU1 during the redis-benchmark runs: "
                    f"median {statistics.median(f0):.1%} / {statistics.median(f1):.1%}, "
                    f"max {max(f0):.1%} / {max(f1):.1%} (from /proc/stat less the server's, "
                    f"the client's and this script's CPU time)")
    text = "\n".join(head) + "\n\n" + "\n\n".join(sections) + "\n\n" + "\n".join(notes) + "\n"
    text += ("\nFigures: median over rounds (min–max in parentheses); the ratio is the median of "
             "per-round ratios. CPU µs/req: server utime+stime over the test's window / requests "
             f"(clock tick {1000 / CLK_TCK:g} ms); client CPU: redis-benchmark's, the same way. "
             "p50/p99: redis-benchmark's, from the round with the median req/s. Quiet rounds: "
             f"rounds in which other processes used at most {args.noise:.0%} of CPU 0 and of CPU 1 "
             "during the test (a noisy test is re-run on a fresh server, up to --retries times, "
             "and the quietest attempt kept).\n")
    print(text)
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, args.out + ".md"), "w") as f:
        f.write(text)
    with open(os.path.join(OUT_DIR, args.out + "-rounds.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["part", "mode", "round", "server", "test", "metric", "value"])
        for part, mode, rnd, server, test, metrics in rounds_csv:
            for k, v in metrics.items():
                w.writerow([part, mode, rnd, server, test, k, v])


if __name__ == "__main__":
    main()
