"""Ping-pong from CPython's socket module in timeout mode.

Run by `cargo bench --bench sync_pingpong` as the CPython peer of its
one-connection case (c) and of its crowd case (e); by hand:

    python3 benches/py_pingpong.py HOST PORT WARMUP COUNT SIZE TIMEOUT_S
    python3 benches/py_pingpong.py crowd HOST PORT THREADS WARMUP_S WINDOW_S SIZE TIMEOUT_S SERVER_PID

Every connection sets TCP_NODELAY and `settimeout(TIMEOUT_S)`; a round trip
is `sendall` of SIZE bytes, then `recv` until SIZE bytes are back.

One connection: WARMUP round trips, then COUNT counted ones. It prints
`cpu_ns N` (user + system CPU time of this process over the counted round
trips), then one line per counted round trip with its latency in
nanoseconds. Percentiles are left to the caller, so that every peer goes
through the same histogram.

crowd: THREADS threads (`threading`), each with its own connection, all
connected before any starts; each checks one echo, then all ping-pong at once
for WARMUP_S seconds, then WINDOW_S counted. It prints `key value` lines:
`rtts` (round trips in the window), `window_ns`, `cpu_ns` (this process over
the window), `server_cpu_ns` (process SERVER_PID over the window, from
/proc/SERVER_PID/stat, in clock ticks), and a census of /proc/self:
`fds_before`/`threads_before` (before the sockets were opened) and
`fds_mid`/`threads_mid` (at the middle of the window); -1 where /proc cannot
tell.
"""

import os
import resource
import socket
import sys
import threading
import time

# Stack of a crowd thread: one recv into a small buffer.
CROWD_STACK = 256 * 1024


def exchange(sock, request, size):
    """One round trip: send all of `request`, receive exactly `size` bytes."""
    sock.sendall(request)
    reply = b""
    while len(reply) < size:
        chunk = sock.recv(size - len(reply))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        reply += chunk
    return reply


def cpu_ns():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return int((usage.ru_utime + usage.ru_stime) * 1e9)


def connect(host, port, timeout):
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(timeout)
    return sock


def one_connection(args):
    host, port = args[0], int(args[1])
    warmup, count, size = int(args[2]), int(args[3]), int(args[4])
    timeout = float(args[5])

    sock = connect(host, port, timeout)
    request = bytes(i % 251 for i in range(size))

    for _ in range(warmup):
        if exchange(sock, request, size) != request:
            raise ValueError("the reply is not the request")

    latencies = [0] * count
    clock = time.perf_counter_ns
    cpu_before = cpu_ns()
    for i in range(count):
        t0 = clock()
        exchange(sock, request, size)
        latencies[i] = clock() - t0
    cpu_after = cpu_ns()
    sock.close()

    out = [f"cpu_ns {cpu_after - cpu_before}"]
    out.extend(map(str, latencies))
    sys.stdout.write("\n".join(out) + "\n")


def proc_entries(name):
    """Entries of /proc/self/NAME (`fd`, `task`), or -1."""
    try:
        return len(os.listdir(f"/proc/self/{name}"))
    except OSError:
        return -1


def process_cpu_ns(pid):
    """User + system CPU time of process `pid` from /proc, or 0."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0
    # The command name may hold spaces: count fields after the last ')'.
    fields = stat[stat.rfind(")") + 1:].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def crowd(args):
    host, port = args[0], int(args[1])
    threads = int(args[2])
    warmup, window = float(args[3]), float(args[4])
    size, timeout, server_pid = int(args[5]), float(args[6]), int(args[7])

    fds_before, threads_before = proc_entries("fd"), proc_entries("task")
    socks = [connect(host, port, timeout) for _ in range(threads)]
    request = bytes(i % 251 for i in range(size))
    counts = [0] * threads
    stop = False
    errors = []
    gate = threading.Barrier(threads + 1)

    def client(i):
        sock = socks[i]
        try:
            if exchange(sock, request, size) != request:
                raise ValueError("the reply is not the request")
        except Exception as e:
            errors.append(e)
            gate.abort()
            return
        try:
            gate.wait()
        except threading.BrokenBarrierError:
            return
        try:
            while not stop:
                exchange(sock, request, size)
                counts[i] += 1
        except Exception as e:
            errors.append(e)

    threading.stack_size(CROWD_STACK)
    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    try:
        gate.wait()
    except threading.BrokenBarrierError:
        pass
    if not errors:
        time.sleep(warmup)
        rtts_before, cpu_before = sum(counts), cpu_ns()
        server_before, t0 = process_cpu_ns(server_pid), time.perf_counter_ns()
        time.sleep(window / 2)
        fds_mid, threads_mid = proc_entries("fd"), proc_entries("task")
        time.sleep(max(0.0, window - (time.perf_counter_ns() - t0) / 1e9))
        rtts_after, cpu_after = sum(counts), cpu_ns()
        server_after, t1 = process_cpu_ns(server_pid), time.perf_counter_ns()
    stop = True
    for worker in workers:
        worker.join()
    for sock in socks:
        sock.close()
    if errors:
        raise RuntimeError(f"{len(errors)} client thread(s) failed, first: {errors[0]!r}")

    out = {
        "rtts": rtts_after - rtts_before,
        "window_ns": t1 - t0,
        "cpu_ns": cpu_after - cpu_before,
        "server_cpu_ns": server_after - server_before,
        "fds_before": fds_before,
        "fds_mid": fds_mid,
        "threads_before": threads_before,
        "threads_mid": threads_mid,
    }
    sys.stdout.write("".join(f"{k} {v}\n" for k, v in out.items()))


def main():
    args = sys.argv[1:]
    if len(args) == 9 and args[0] == "crowd":
        crowd(args[1:])
    elif len(args) == 6:
        one_connection(args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
