"""One-connection ping-pong from CPython's socket module in timeout mode.

Run by `cargo bench --bench sync_pingpong` as the CPython peer of its
one-connection case; by hand:

    python3 benches/py_pingpong.py HOST PORT WARMUP COUNT SIZE TIMEOUT_S

It connects to an echo server, sets TCP_NODELAY and `settimeout(TIMEOUT_S)`,
does WARMUP round trips, then COUNT counted ones: `sendall` of SIZE bytes,
then `recv` until SIZE bytes are back. It prints `cpu_ns N` (user + system
CPU time of this process over the counted round trips), then one line per
counted round trip with its latency in nanoseconds. Percentiles are left to
the caller, so that every peer goes through the same histogram.
"""

import resource
import socket
import sys
import time


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


def main():
    if len(sys.argv) != 7:
        sys.exit(__doc__)
    host, port = sys.argv[1], int(sys.argv[2])
    warmup, count, size = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    timeout = float(sys.argv[6])

    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(timeout)
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


if __name__ == "__main__":
    main()
