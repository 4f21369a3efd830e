#!/usr/bin/env python3
"""http_compare: examples/http_server against nginx, side by side, driven by wrk.

How to run (from the workspace root, as root on Debian for the install step):

    python3 benches/http_compare.py                         # full run: 10 s per run, 3 rounds
    HTTP_SECS=2 HTTP_WARMUP=1 python3 benches/http_compare.py --rounds 1   # quick look
    python3 benches/http_compare.py --only plain,pipeline --secs 5

Flags (each also an environment variable): --secs / HTTP_SECS (seconds per
counted wrk run, default 10), --warmup / HTTP_WARMUP (seconds of uncounted wrk
load on each fresh server before the counted run, default 2; 0: none),
--rounds / HTTP_ROUNDS (default 3), --connections / HTTP_CONNECTIONS (default
100), --depth / HTTP_DEPTH (requests pipelined per connection, default 16),
--only plain,pipeline,threads2, --no-build, --no-install, --keep-tmp. See --help.

What it does:

- Installs what is missing from Debian's packages: `nginx-light` (nginx),
  `wrk`, `apache2-utils` (ab), with `apt-get install -y` of only the missing
  ones (after `apt-get update` when apt has no candidate for one, or when the
  install fails). RUNLEVEL=1 keeps the package's own nginx service from
  starting. Builds `cargo build --release --example http_server`.
- Writes an nginx config into a temp dir: `daemon off;`, `access_log off;`,
  error_log, pid file and the *_temp_path directories in the temp dir,
  `keepalive_requests 1000000000;` (nginx 1.22 has no "unlimited"),
  `keepalive_timeout 75s;`, `listen 127.0.0.1:PORT` on a free port,
  `location / { default_type text/plain; return 200 "Hello, World!"; }`, and
  `user` set to the current user when run as root (so it runs as the current
  user). Started as `nginx -p TMPDIR -e TMPDIR/error.log -c TMPDIR/nginx-N.conf`.
  * one worker: `master_process off;` (one process does everything, and that
    process, pinned to CPU 0, is the one measured);
  * two workers: `master_process on; worker_processes 2;` and
    `listen ... reuseport` (nginx's best setting for several workers, as
    http_server's --threads uses SO_REUSEPORT); CPU is summed over the
    master and both workers.
  nginx's version (`nginx -v`) and wrk's are printed.
- Every server is started fresh for each measurement, on 127.0.0.1 only,
  checked with one `GET /plaintext` (status 200, body `Hello, World!`; the
  response sizes are printed), and an `ab -k` sanity check is run once per
  server at the start (failed and non-2xx counts must be 0).
- Workloads, the same wrk binary and flags against both servers:
  * plain: `http_server --threads 1` and nginx with one worker, both
    `taskset -c 0`; `taskset -c 1 wrk -t1 -cC -dSs --latency URL/plaintext`;
  * pipeline: the same with a Lua script that sends DEPTH GET requests
    concatenated in one write per connection (TechEmpower's pipeline.lua:
    `init` builds DEPTH `wrk.format()` requests, `request` returns them);
  * threads2: `http_server --threads 2` and nginx with 2 workers, the server
    `taskset -c 0,1` and `taskset -c 0,1 wrk -t2` (client and server share
    both cores: see the note printed with the table).
  Within each round, for each workload: ontime then nginx (A B A B).
- Counting: wrk counts every complete response as a request (its
  `complete` counter is bumped per parsed response), so with the pipeline
  script its req/s is already responses per second, not batches; the script
  checks this by comparing wrk's bytes read with requests x the server's
  response size. wrk's latency is recorded once per batch: with pipelining,
  p50/p99 are the time from writing the DEPTH requests to reading the
  DEPTH-th response. p50/p99 come from wrk's own latency histogram (1 us
  buckets), dumped by a Lua `done` hook, with the coordinated-omission
  correction that wrk 4.1 applies before printing undone exactly (see
  raw_latency: with pipelining that correction is wrong by a factor DEPTH and
  makes wrk print p99 = 0); the number of samples is checked against the
  responses counted. wrk's printed (corrected) percentiles are given in a
  second table and in the CSV; `--latency` output is in the logs.
- Server CPU per request: utime+stime from /proc/PID/stat (all threads;
  for nginx summed over its processes), clock-tick resolution, sampled just
  before wrk starts and just after it exits (so the window also holds wrk's
  connects and closes), divided by wrk's request count. "server busy" is that
  CPU time over wrk's run time (100% = one core); "wrk busy" is wrk's own
  CPU (getrusage of the child) over its run time. When wrk is near 100% of
  its core and the server is not, the client is the bottleneck and req/s
  ratios understate the difference: compare CPU per request first. (On
  loopback the sender's system time also pays for the receiver's TCP receive
  path, in softirq: the same rule for both servers.)
- Quietness check: per run, the server's and wrk's run-queue wait
  (/proc/PID/task/*/schedstat), CPU time used on CPU 0 and 1 by other
  processes (/proc/stat minus server and wrk) and hypervisor steal; a pinned
  run where any is over 5% of the window gets a note, and the report gives
  the largest. Repeat a run that has them on a quiet machine.
- The table gives the median over rounds for each figure and, for the ratios,
  the median of the per-round ratios (ontime/nginx).

Output: a markdown table on stdout, also written to target/ontime-bench/http.md,
a bar chart of req/s and CPU per request in target/ontime-bench/http.svg;
every run's figures to target/ontime-bench/http-rounds.csv; wrk output, server
logs and nginx configs under target/ontime-bench/http-logs/. Everything is
bounded: wrk is killed --stall seconds after its duration should have ended
(reported as a hang), servers get 10 s to start and 10 s to stop after SIGTERM
before SIGKILL. Loopback only.
"""

import argparse
import csv
import datetime
import grp
import os
import pwd
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benches", "common"))
from procs import CLK_TCK, env_int, free_port, ontime_revision, proc_cpu  # noqa: E402
OUT_DIR = os.path.join(ROOT, "target", "ontime-bench")
LOG_DIR = os.path.join(OUT_DIR, "http-logs")
HTTP_BIN = os.path.join(ROOT, "target", "release", "examples", "http_server")
SERVER_CPU = "0"
CLIENT_CPU = "1"
BOTH_CPUS = "0,1"
BODY = b"Hello, World!"
SERVERS = ("ontime", "nginx")
WORKLOADS = ("plain", "pipeline", "threads2")

NOTES = []  # odd things seen, printed at the end


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- setup

TOOLS = {"nginx": "nginx-light", "wrk": "wrk", "ab": "apache2-utils"}


def find_tool(name):
    # nginx lives in /usr/sbin, which is not always on a root shell's PATH.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def ensure_tools(allow_install):
    missing = [pkg for tool, pkg in TOOLS.items() if not find_tool(tool)]
    if missing:
        if not allow_install:
            sys.exit(f"missing {', '.join(missing)} (and --no-install)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", RUNLEVEL="1")
        no_candidate = False
        for pkg in missing:
            out = subprocess.run(["apt-cache", "policy", pkg], capture_output=True,
                                 text=True, env=env).stdout
            if "Candidate:" not in out or "Candidate: (none)" in out:
                no_candidate = True
        if no_candidate:
            log("apt-get update (no candidate known for some package)")
            subprocess.run(["apt-get", "update"], env=env, check=True, timeout=600)
        cmd = ["apt-get", "install", "-y", "--no-install-recommends"] + missing
        log("installing: " + " ".join(cmd))
        if subprocess.run(cmd, env=env, timeout=900).returncode != 0:
            log("install failed; apt-get update and again")
            subprocess.run(["apt-get", "update"], env=env, check=True, timeout=600)
            subprocess.run(cmd, env=env, check=True, timeout=900)
        if os.path.exists("/run/nginx.pid"):
            NOTES.append("installing nginx left a system nginx running (/run/nginx.pid); "
                         "it is not ours and was left alone: stop it for a quiet machine")
    still = [t for t in TOOLS if not find_tool(t)]
    if still:
        sys.exit(f"still not found after install: {', '.join(still)}")
    return {t: find_tool(t) for t in TOOLS}


def build_http():
    log("building: cargo build --release --example http_server")
    subprocess.run(["cargo", "build", "--release", "--example", "http_server"],
                   cwd=ROOT, check=True, timeout=3600)


def nginx_version(nginx):
    r = subprocess.run([nginx, "-v"], capture_output=True, text=True)
    return (r.stderr or r.stdout).strip()


def wrk_version(wrk):
    r = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    first = (r.stdout or r.stderr).strip().splitlines()
    return first[0] if first else "unknown"


# ---------------------------------------------------------------- processes


def proc_runq_wait(pid):
    """Seconds the threads of pid spent runnable but waiting for a CPU
    (/proc/PID/task/*/schedstat, second field): other work on its cores."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                pass
    except OSError:
        pass
    return total / 1e9


def cpu_times():
    """{cpu index: (busy seconds, steal seconds)} from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+) (.*)", line)
            if m:
                v = [int(x) for x in m.group(2).split()]
                # user nice system idle iowait irq softirq steal ...
                busy = v[0] + v[1] + v[2] + v[5] + v[6]
                out[int(m.group(1))] = (busy / CLK_TCK, v[7] / CLK_TCK if len(v) > 7 else 0.0)
    return out


def proc_children(pid):
    kids = set()
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.update(int(x) for x in f.read().split())
        return sorted(kids)
    except OSError:
        pass
    for name in os.listdir("/proc"):  # no /proc/PID/task/TID/children: scan ppids
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    data = f.read()
                if int(data[data.rindex(")") + 2:].split()[1]) == pid:
                    kids.add(int(name))
            except (OSError, ValueError, IndexError):
                pass
    return sorted(kids)


def get_plaintext(port, timeout=2.0):
    """One keep-alive GET /plaintext; returns (status, body, raw response bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
        data = b""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if b"\r\n\r\n" in data:
                head, _, rest = data.partition(b"\r\n\r\n")
                m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
                if m and len(rest) >= int(m.group(1)):
                    break
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return (int(m.group(1)) if m else None), body, data


class Server:
    def __init__(self, name, proc, port, logpath, tmpdir=None, multi=False):
        self.name, self.proc, self.port, self.logpath = name, proc, port, logpath
        self.pid = proc.pid
        self.tmpdir, self.multi = tmpdir, multi
        self.workers = []

    def pids(self):
        return [self.pid] + self.workers

    def cpu(self):
        return sum(proc_cpu(p) for p in self.pids())

    def runq_wait(self):
        return sum(proc_runq_wait(p) for p in self.pids())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.pid}) did not exit 10 s after SIGTERM; SIGKILL")
                NOTES.append(f"{self.name} (pid {self.pid}) did not exit 10 s after SIGTERM")
                self.proc.kill()
                self.proc.wait()
        for w in self.workers:  # nginx workers we started: make sure they are gone
            for _ in range(50):
                if not os.path.exists(f"/proc/{w}"):
                    break
                time.sleep(0.1)
            else:
                NOTES.append(f"{self.name} worker {w} outlived its master; SIGKILL")
                try:
                    os.kill(w, signal.SIGKILL)
                except OSError:
                    pass
        rc = self.proc.returncode
        if rc not in (0, -signal.SIGTERM):
            NOTES.append(f"{self.name} exited with status {rc} (log: {self.logpath})")
        if self.tmpdir:  # keep nginx's error log beside our logs
            err = os.path.join(self.tmpdir, "error.log")
            if os.path.exists(err) and os.path.getsize(err):
                with open(err) as f, open(self.logpath, "a") as out:
                    text = f.read()
                    out.write("--- nginx error.log\n" + text)
                if re.search(r"\[(emerg|alert|crit|error)\]", text):
                    NOTES.append(f"nginx error.log has errors (see {self.logpath})")
                os.truncate(err, 0)


NGINX_CONF = """\
# written by benches/http_compare.py
{user}
daemon off;
master_process {master};
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;

events {{
    worker_connections 4096;
    use epoll;
}}

http {{
    access_log off;
    error_log {tmp}/error.log warn;
    server_tokens off;
    keepalive_requests 1000000000;
    keepalive_timeout 75s;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;

    server {{
        listen 127.0.0.1:{port}{reuseport};
        location / {{
            default_type text/plain;
            return 200 "Hello, World!";
        }}
    }}
}}
"""


def nginx_config(tmp, port, workers):
    user = ""
    if os.geteuid() == 0:
        pw = pwd.getpwuid(os.geteuid())
        user = f"user {pw.pw_name} {grp.getgrgid(pw.pw_gid).gr_name};"
    return NGINX_CONF.format(
        user=user, master="off" if workers == 1 else "on", workers=workers, tmp=tmp,
        port=port, reuseport="" if workers == 1 else " reuseport")


def wait_ready(server, deadline=10.0):
    end = time.monotonic() + deadline
    last = None
    while time.monotonic() < end:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode} "
                               f"before answering (log: {server.logpath})")
        try:
            status, body, raw = get_plaintext(server.port)
            if status == 200 and body == BODY:
                return raw
            last = raw[:200]
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise RuntimeError(f"{server.name} did not answer GET /plaintext with 200 "
                       f"{BODY!r} on {server.port} within {deadline} s (last: {last!r})")


def start_server(name, threads, tools, tmp, tag):
    cpus = SERVER_CPU if threads == 1 else BOTH_CPUS
    logpath = os.path.join(LOG_DIR, f"{name}-{tag}.log")
    logf = open(logpath, "w")
    if name == "ontime":
        proc = subprocess.Popen(
            ["taskset", "-c", cpus, HTTP_BIN, "--addr", "127.0.0.1:0",
             "--threads", str(threads)],
            stdout=subprocess.PIPE, stderr=logf, stdin=subprocess.DEVNULL)
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        line = proc.stdout.readline().decode() if ready else ""
        m = re.match(r"listening on 127\.0\.0\.1:(\d+)", line)
        if not m:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"http_server's first line was {line!r}, see {logpath}")
        port = int(m.group(1))
        server = Server(name, proc, port, logpath)
    else:
        port = free_port()
        conf = os.path.join(tmp, f"nginx-{threads}.conf")
        text = nginx_config(tmp, port, threads)
        with open(conf, "w") as f:
            f.write(text)
        with open(os.path.join(LOG_DIR, f"nginx-{threads}.conf"), "w") as f:
            f.write(text)
        proc = subprocess.Popen(
            ["taskset", "-c", cpus, tools["nginx"], "-p", tmp + "/",
             "-e", os.path.join(tmp, "error.log"), "-c", conf],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        server = Server(name, proc, port, logpath, tmpdir=tmp, multi=threads > 1)
    logf.close()
    try:
        raw = wait_ready(server)
        comm = open(f"/proc/{proc.pid}/comm").read().strip()
        if comm == "taskset":
            raise RuntimeError("taskset did not exec the server")
        if server.multi:
            end = time.monotonic() + 5
            while time.monotonic() < end:
                server.workers = proc_children(proc.pid)
                if len(server.workers) >= threads:
                    break
                time.sleep(0.05)
            if len(server.workers) != threads:
                raise RuntimeError(f"nginx master {proc.pid} has children "
                                   f"{server.workers}, expected {threads} workers")
        want = {int(c) for c in cpus.split(",")}
        for p in server.pids():
            aff = os.sched_getaffinity(p)
            if aff != want:
                raise RuntimeError(f"{name} pid {p} affinity is {aff}, expected {want}")
    except Exception:
        server.stop()
        raise
    server.response = raw
    return server


# ---------------------------------------------------------------- wrk

DONE_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "ONTIME-WRK requests=%d bytes=%d duration_us=%d connect=%d read=%d write=%d " ..
    "status=%d timeout=%d p50_us=%d p99_us=%d max_us=%d\\n",
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50.0), latency:percentile(99.0), latency.max))
  -- wrk's histogram as it stands after its own correction (see raw_latency)
  local path = os.getenv("ONTIME_WRK_HIST")
  if path then
    local f = io.open(path, "w")
    f:write(string.format("min %d max %d\\n", latency.min, latency.max))
    for i = 1, #latency do
      local v, c = latency(i)
      f:write(string.format("%d %d\\n", v, c))
    end
    f:close()
  end
end
"""

PIPELINE_LUA = """
-- TechEmpower's pipeline.lua: DEPTH requests in one write per connection.
init = function(args)
  local depth = tonumber(args[1]) or 1
  local r = {}
  for i = 1, depth do
    r[i] = wrk.format()
  end
  req = table.concat(r)
end

request = function()
  return req
end
""" + DONE_LUA


def write_scripts(tmp):
    plain = os.path.join(tmp, "plain.lua")
    pipe = os.path.join(tmp, "pipeline.lua")
    with open(plain, "w") as f:
        f.write(DONE_LUA)
    with open(pipe, "w") as f:
        f.write(PIPELINE_LUA)
    return {"plain": plain, "pipeline": pipe}


DONE_RE = re.compile(
    r"ONTIME-WRK requests=(\d+) bytes=(\d+) duration_us=(\d+) connect=(\d+) read=(\d+) "
    r"write=(\d+) status=(\d+) timeout=(\d+) p50_us=(\d+) p99_us=(\d+) max_us=(\d+)")


def raw_latency(path, runtime_us, complete, connections):
    """wrk 4.1 "corrects" its latency histogram before printing it (and before
    `done` sees it): with e = runtime_us / (complete / connections), integer
    division as in wrk.c, every sample n >= 2e adds synthetic samples at
    n-e, n-2e, ... while they stay above e (stats_correct in stats.c). That
    models an open-loop client with a fixed rate; with pipelining e is
    computed from responses, not batches, so it is DEPTH times too small and
    the synthetic samples can land below the histogram's min, where
    `percentile` never looks: wrk then prints 0 for p90/p99. The correction
    is linear, corrected[m] = sum over k >= 0 of raw[m + k e] for m > e, so
    raw[m] = corrected[m] - corrected[m + e] undoes it exactly. Returns
    (value -> count of the measured samples, e) or (None, reason)."""
    try:
        with open(path) as f:
            lines = f.read().split("\n")
    except OSError as err:
        return None, f"no histogram dump ({err})"
    corrected = {}
    for line in lines[1:]:
        if line:
            v, c = line.split()
            corrected[int(float(v))] = int(float(c))
    per_conn = complete // connections
    if per_conn == 0:
        return corrected, None
    e = runtime_us // per_conn
    raw = {}
    for m, c in corrected.items():
        r = c - corrected.get(m + e, 0) if m > e else c
        if r < 0:
            return None, f"undoing wrk's correction gave {r} samples at {m} us (e = {e} us)"
        if r:
            raw[m] = r
    return raw, e


def percentile(hist, p):
    """wrk's rule: the first value whose cumulative count reaches
    round(p/100 * count + 0.5)."""
    count = sum(hist.values())
    if not count:
        return None
    rank = round(p / 100.0 * count + 0.5)
    total = 0
    for v in sorted(hist):
        total += hist[v]
        if total >= rank:
            return v
    return max(hist)


def run_wrk(tools, server, workload, args, scripts, secs, tag, counted=True):
    """Runs wrk against server; returns a dict of figures, or None if wrk hung
    or printed nothing usable (reason in NOTES)."""
    threads = 2 if workload == "threads2" else 1
    cpus = BOTH_CPUS if workload == "threads2" else CLIENT_CPU
    url = f"http://127.0.0.1:{server.port}/plaintext"
    cmd = ["taskset", "-c", cpus, tools["wrk"], f"-t{threads}", f"-c{args.connections}",
           f"-d{secs}s", "--latency"]
    if workload == "pipeline":
        cmd += ["-s", scripts["pipeline"], url, "--", str(args.depth)]
    else:
        cmd += ["-s", scripts["plain"], url]
    outpath = os.path.join(LOG_DIR, f"wrk-{tag}.out")
    with open(outpath, "w") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        cpu0, wait0, stat0 = server.cpu(), server.runq_wait(), cpu_times()
        t0 = time.monotonic()
        histpath = os.path.join(LOG_DIR, f"wrk-{tag}.hist")
        env = dict(os.environ)
        env.pop("ONTIME_WRK_HIST", None)
        if counted:
            env["ONTIME_WRK_HIST"] = histpath
            if os.path.exists(histpath):
                os.unlink(histpath)
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
        hung = []

        def kill():
            hung.append(True)
            proc.kill()

        timer = threading.Timer(secs + args.stall, kill)
        timer.start()
        wrk_wait = [0.0]
        finished = threading.Event()

        def poll_wait():  # wrk's run-queue wait, last seen before it exits
            while not finished.wait(0.1):
                w = proc_runq_wait(proc.pid)
                if w:
                    wrk_wait[0] = w

        poller = threading.Thread(target=poll_wait, daemon=True)
        poller.start()
        try:
            _, status, ru = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            finished.set()
            poller.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - t0
        cpu1, wait1, stat1 = server.cpu(), server.runq_wait(), cpu_times()
    text = open(outpath).read()
    if hung:
        NOTES.append(f"{tag}: wrk did not finish {args.stall:.0f} s after its {secs} s "
                     f"(hang; killed; see {outpath})")
        return None
    if proc.returncode != 0:
        NOTES.append(f"{tag}: wrk exited with {proc.returncode} (see {outpath})")
    m = DONE_RE.search(text)
    if not m:
        NOTES.append(f"{tag}: no summary line from wrk (see {outpath})")
        return None
    (requests, nbytes, dur_us, e_conn, e_read, e_write, e_status, e_timeout,
     p50, p99, pmax) = map(int, m.groups())
    mrps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    rps = float(mrps.group(1)) if mrps else requests / (dur_us / 1e6)
    server_cpu = cpu1 - cpu0
    depth = args.depth if workload == "pipeline" else 1
    raw_p50 = raw_p99 = samples = None
    if counted:
        raw, e = raw_latency(histpath, dur_us, requests, args.connections)
        if raw is None:
            NOTES.append(f"{tag}: no measured latency: {e}")
        else:
            raw_p50, raw_p99 = percentile(raw, 50.0), percentile(raw, 99.0)
            samples = sum(raw.values())
            # One sample per completed batch: depth x samples responses, plus up to
            # depth-1 responses of each connection's unfinished batch.
            lo = depth * (samples + e_timeout)
            hi = lo + (depth - 1) * args.connections
            if not lo <= requests <= hi:
                NOTES.append(f"{tag}: {samples} latency samples for {requests} responses "
                             f"at depth {depth} (expected {lo}..{hi} responses): the "
                             f"reconstruction or the counting is off")
    res = {
        "rps": rps, "requests": requests, "bytes": nbytes, "duration_s": dur_us / 1e6,
        "p50_us": raw_p50, "p99_us": raw_p99, "max_us": pmax, "samples": samples,
        "wrk_p50_us": p50, "wrk_p99_us": p99,
        "cpu_us_per_req": server_cpu / requests * 1e6 if requests else float("nan"),
        "server_busy": server_cpu / (dur_us / 1e6),
        "wrk_busy": (ru.ru_utime + ru.ru_stime) / (dur_us / 1e6),
        "server_wait": (wait1 - wait0) / (dur_us / 1e6),
        # CPU time spent on CPU 0 by others than the server, on CPU 1 by others
        # than wrk, and the hypervisor's steal on either (threads2: below)
        "other0": ((stat1[0][0] - stat0[0][0]) - server_cpu) / (dur_us / 1e6),
        "other1": ((stat1[1][0] - stat0[1][0]) - (ru.ru_utime + ru.ru_stime)) / (dur_us / 1e6),
        "steal": max(stat1[c][1] - stat0[c][1] for c in (0, 1)) / (dur_us / 1e6),
    }
    if workload == "threads2":  # both on both CPUs: others' CPU over the two together
        both = sum(stat1[c][0] - stat0[c][0] for c in (0, 1))
        other = (both - server_cpu - (ru.ru_utime + ru.ru_stime)) / (dur_us / 1e6)
        res["other0"] = res["other1"] = other
    res.update({
        "wrk_wait": wrk_wait[0] / (dur_us / 1e6),
        "wall_s": wall,
        "errors": {"connect": e_conn, "read": e_read, "write": e_write,
                   "timeout": e_timeout, "non2xx3xx": e_status},
    })
    errs = {k: v for k, v in res["errors"].items() if v}
    if errs:
        NOTES.append(f"{tag}: wrk errors {errs} in {requests} requests (see {outpath})")
    if "Socket errors" in text or "Non-2xx" in text:
        lines = [l.strip() for l in text.splitlines()
                 if "Socket errors" in l or "Non-2xx" in l]
        if not errs:
            NOTES.append(f"{tag}: wrk printed {lines}")
    if counted and workload != "threads2" and max(
            res["server_wait"], res["wrk_wait"], res["other0"], res["other1"],
            res["steal"]) > 0.05:
        NOTES.append(f"{tag}: other work shared the cores: runnable but waiting for a CPU "
                     f"{res['server_wait'] * 100:.0f}% of the window (server), "
                     f"{res['wrk_wait'] * 100:.0f}% (wrk); CPU used by others "
                     f"{res['other0'] * 100:.0f}% of CPU 0, {res['other1'] * 100:.0f}% of "
                     f"CPU 1; steal {res['steal'] * 100:.0f}%")
    # wrk counts responses: bytes read should be requests x response size.
    size = len(server.response)
    if requests and size:
        per = nbytes / requests
        # the Date header and partial responses at the end move it a little
        if abs(per - size) > 2:
            NOTES.append(f"{tag}: {nbytes} bytes for {requests} requests is {per:.1f} B "
                         f"per request, the response is {size} B: the count may not be "
                         f"one per response")
    if server.proc.poll() is not None:
        NOTES.append(f"{tag}: {server.name} died during the run "
                     f"(status {server.proc.returncode}, log {server.logpath})")
    return res


def ab_check(tools, server):
    """`ab -k`: a second client's view that every response is complete and 2xx."""
    url = f"http://127.0.0.1:{server.port}/plaintext"
    cmd = ["taskset", "-c", CLIENT_CPU, tools["ab"], "-k", "-q", "-n", "20000", "-c", "10",
           "-s", "5", url]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        NOTES.append(f"ab -k against {server.name}: no answer in 60 s (hang)")
        return f"{server.name}: hang"
    out = r.stdout

    def field(name):
        m = re.search(rf"^{name}:\s+(\d+)", out, re.M)
        return int(m.group(1)) if m else None

    complete, failed = field("Complete requests"), field("Failed requests")
    keepalive, non2xx = field("Keep-Alive requests"), field("Non-2xx responses") or 0
    summary = (f"{server.name}: {complete} complete, {failed} failed, {non2xx} non-2xx, "
               f"{keepalive} keep-alive")
    if r.returncode != 0 or complete != 20000 or failed or non2xx or keepalive != 20000:
        NOTES.append(f"ab -k -n 20000 -c 10 against {server.name}: {summary} "
                     f"(rc {r.returncode}) {r.stderr.strip()[:300]}")
    return summary


# ---------------------------------------------------------------- report


def mid(xs):
    xs = [x for x in xs if x is not None and x == x]
    return statistics.median(xs) if xs else None


def f_rps(x):
    return "—" if x is None else f"{x:,.0f}"


def f_us(x):
    if x is None:
        return "—"
    return f"{x / 1000:.2f} ms" if x >= 1000 else f"{x:.0f} µs"


def f_ratio(x):
    return "—" if x is None else f"{x:.2f}x"


def f_cpu(x):
    return "—" if x is None else f"{x:.2f}"


def f_pct(x):
    return "—" if x is None else f"{x * 100:.0f}%"


LABEL = {
    "plain": "plain, 1 reactor / 1 worker",
    "pipeline": "pipelined x{depth}, 1 reactor / 1 worker",
    "threads2": "plain, --threads 2 / 2 workers (shared cores)",
}


def table(results, args, rounds_done):
    """results[workload][server] = list of per-round dicts (or None)."""
    out = []
    out.append("| workload | ontime req/s | nginx req/s | ratio req/s | ontime p50 / p99 "
               "| nginx p50 / p99 | ontime µs CPU/req | nginx µs CPU/req | ratio CPU/req "
               "| server busy ontime / nginx | wrk busy ontime / nginx |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for w in WORKLOADS:
        if w not in results:
            continue
        a, b = results[w]["ontime"], results[w]["nginx"]
        pairs = [(x, y) for x, y in zip(a, b) if x and y]
        rps_ratio = mid([x["rps"] / y["rps"] for x, y in pairs if y["rps"]])
        cpu_ratio = mid([x["cpu_us_per_req"] / y["cpu_us_per_req"]
                         for x, y in pairs if y["cpu_us_per_req"]])

        def m(runs, key):
            return mid([r[key] for r in runs if r])

        out.append(
            f"| {LABEL[w].format(depth=args.depth)} | {f_rps(m(a, 'rps'))} "
            f"| {f_rps(m(b, 'rps'))} | {f_ratio(rps_ratio)} "
            f"| {f_us(m(a, 'p50_us'))} / {f_us(m(a, 'p99_us'))} "
            f"| {f_us(m(b, 'p50_us'))} / {f_us(m(b, 'p99_us'))} "
            f"| {f_cpu(m(a, 'cpu_us_per_req'))} | {f_cpu(m(b, 'cpu_us_per_req'))} "
            f"| {f_ratio(cpu_ratio)} "
            f"| {f_pct(m(a, 'server_busy'))} / {f_pct(m(b, 'server_busy'))} "
            f"| {f_pct(m(a, 'wrk_busy'))} / {f_pct(m(b, 'wrk_busy'))} |")
    out.append("")
    out.append("wrk's own printed percentiles (after its coordinated-omission correction, "
               "see below), medians over rounds:")
    out.append("")
    out.append("| workload | ontime p50 / p99 as printed | nginx p50 / p99 as printed |")
    out.append("|---|---:|---:|")
    for w in WORKLOADS:
        if w not in results:
            continue
        a, b = results[w]["ontime"], results[w]["nginx"]
        out.append(
            f"| {LABEL[w].format(depth=args.depth)} "
            f"| {f_us(mid([r['wrk_p50_us'] for r in a if r]))} / "
            f"{f_us(mid([r['wrk_p99_us'] for r in a if r]))} "
            f"| {f_us(mid([r['wrk_p50_us'] for r in b if r]))} / "
            f"{f_us(mid([r['wrk_p99_us'] for r in b if r]))} |")
    return "\n".join(out)


def plot_svg(results, args, path):
    """Two bar charts side by side (median req/s, median µs CPU/req), ontime
    and nginx per workload, as a dependency-free SVG."""
    colors = {"ontime": "#1f77b4", "nginx": "#2ca02c"}
    short = {"plain": "plain", "pipeline": f"pipelined x{args.depth}", "threads2": "2 threads"}
    panels = [("req/s (median)", "rps", lambda v: f"{v / 1000:.0f}k"),
              ("server µs CPU per request (median)", "cpu_us_per_req", lambda v: f"{v:.2f}")]
    ws = [w for w in WORKLOADS if w in results]
    pw, ph, top, bottom, left = 420, 260, 40, 40, 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{pw * 2 + 20}" height="{ph + 30}" '
           f'font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>']
    for i, (title, key, fmt) in enumerate(panels):
        x0 = 10 + i * (pw + 10)
        out.append(f'<text x="{x0 + pw / 2}" y="20" text-anchor="middle" '
                   f'font-weight="bold">{title}</text>')
        vals = {(w, n): mid([r[key] for r in results[w][n] if r]) for w in ws for n in SERVERS}
        vmax = max([v for v in vals.values() if v] or [1])
        group = (pw - left * 2) / max(len(ws), 1)
        bar = group / 3
        base = top + ph - bottom - 20
        out.append(f'<line x1="{x0 + left}" y1="{base}" x2="{x0 + pw - left}" y2="{base}" '
                   f'stroke="black"/>')
        for j, w in enumerate(ws):
            gx = x0 + left + j * group + bar / 2
            for k, n in enumerate(SERVERS):
                v = vals[(w, n)]
                if not v:
                    continue
                h = (base - top - 10) * v / vmax
                bx = gx + k * bar
                out.append(f'<rect x="{bx:.1f}" y="{base - h:.1f}" width="{bar * 0.9:.1f}" '
                           f'height="{h:.1f}" fill="{colors[n]}"/>')
                out.append(f'<text x="{bx + bar * 0.45:.1f}" y="{base - h - 3:.1f}" '
                           f'text-anchor="middle" font-size="10">{fmt(v)}</text>')
            out.append(f'<text x="{gx + bar:.1f}" y="{base + 15}" '
                       f'text-anchor="middle">{short[w]}</text>')
    for k, n in enumerate(SERVERS):
        out.append(f'<rect x="{10 + k * 90}" y="{ph + 8}" width="12" height="12" '
                   f'fill="{colors[n]}"/><text x="{26 + k * 90}" y="{ph + 18}">{n}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


THREADS2_NOTE = """\
On the threads2 row: with 2 cores, wrk's two threads and the server's two
threads (or workers) share both cores, so req/s is bounded by client + server
CPU together. A server that spends less CPU per request leaves more of the
cores to wrk and so shows more req/s: the row measures CPU efficiency under
sharing, plus whatever the scheduler does with four busy threads on two
cores. It cannot show how either server scales with cores (that needs
cores to spare for the client), and its req/s ratio is not comparable with
the pinned rows. Its CPU per request also moves with the sharing: a thread
that waited for a core finds more requests per wakeup and spends less per
request, so it is not comparable with the pinned rows either. It does show
that --threads 2 (and nginx's 2 workers) work under this load, without
errors, and gives a rough CPU-per-request comparison between the two under
the same sharing."""


def main():
    p = argparse.ArgumentParser(
        description="examples/http_server against nginx, driven by wrk",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--secs", type=int, default=env_int("HTTP_SECS", 10),
                   help="seconds per counted wrk run (HTTP_SECS, default 10)")
    p.add_argument("--warmup", type=int, default=env_int("HTTP_WARMUP", 2),
                   help="seconds of uncounted load on each fresh server (HTTP_WARMUP, "
                        "default 2; 0: none)")
    p.add_argument("--rounds", type=int, default=env_int("HTTP_ROUNDS", 3),
                   help="(HTTP_ROUNDS, default 3)")
    p.add_argument("--connections", type=int, default=env_int("HTTP_CONNECTIONS", 100),
                   help="(HTTP_CONNECTIONS, default 100)")
    p.add_argument("--depth", type=int, default=env_int("HTTP_DEPTH", 16),
                   help="requests pipelined per connection (HTTP_DEPTH, default 16)")
    p.add_argument("--only", default=",".join(WORKLOADS),
                   help="comma-separated subset of " + ",".join(WORKLOADS))
    p.add_argument("--stall", type=float, default=30.0,
                   help="seconds past its duration before wrk counts as hung (default 30)")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--no-install", action="store_true")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir")
    args = p.parse_args()
    workloads = [w.strip() for w in args.only.split(",") if w.strip()]
    bad = [w for w in workloads if w not in WORKLOADS]
    if bad or not workloads:
        p.error(f"--only takes {','.join(WORKLOADS)}; got {args.only!r}")
    if args.secs < 1 or args.rounds < 1 or args.depth < 1 or args.connections < 2:
        p.error("--secs, --rounds, --depth must be >= 1 and --connections >= 2")
    if os.cpu_count() is None or not {0, 1} <= os.sched_getaffinity(0):
        sys.exit("needs CPUs 0 and 1 (server on 0, wrk on 1)")

    os.makedirs(LOG_DIR, exist_ok=True)
    tools = ensure_tools(not args.no_install)
    if not args.no_build:
        build_http()
    if not os.access(HTTP_BIN, os.X_OK):
        sys.exit(f"{HTTP_BIN} not built")

    tmp = tempfile.mkdtemp(prefix="ontime-http-")
    scripts = write_scripts(tmp)
    nver, wver, rev = nginx_version(tools["nginx"]), wrk_version(tools["wrk"]), ontime_revision(ROOT)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    log(f"{nver}; {wver}; ontime {rev}; temp dir {tmp}")

    results = {w: {s: [] for s in SERVERS} for w in workloads}
    rows = []
    ab_lines, responses = [], {}
    t_start = time.monotonic()
    try:
        # One-off checks: the response each server sends, and ab -k.
        for name in SERVERS:
            s = start_server(name, 1, tools, tmp, "check")
            try:
                responses[name] = s.response
                ab_lines.append(ab_check(tools, s))
            finally:
                s.stop()
        for r in range(args.rounds):
            for w in workloads:
                threads = 2 if w == "threads2" else 1
                for name in SERVERS:
                    tag = f"{w}-r{r + 1}-{name}"
                    log(f"round {r + 1}/{args.rounds} {w} {name}")
                    try:
                        s = start_server(name, threads, tools, tmp, tag)
                    except (RuntimeError, OSError) as err:
                        NOTES.append(f"{tag}: server did not start: {err}")
                        log(f"  {err}")
                        results[w][name].append(None)
                        continue
                    try:
                        if args.warmup > 0:
                            run_wrk(tools, s, w, args, scripts, args.warmup, tag + "-warmup",
                                    counted=False)
                        res = run_wrk(tools, s, w, args, scripts, args.secs, tag)
                    finally:
                        s.stop()
                    results[w][name].append(res)
                    if res:
                        e = res["errors"]
                        rows.append([r + 1, w, name, f"{res['rps']:.0f}", res["requests"],
                                     res["bytes"], f"{res['duration_s']:.3f}", res["p50_us"],
                                     res["p99_us"], res["max_us"], res["samples"],
                                     res["wrk_p50_us"], res["wrk_p99_us"],
                                     f"{res['cpu_us_per_req']:.3f}",
                                     f"{res['server_busy']:.3f}", f"{res['wrk_busy']:.3f}",
                                     f"{res['server_wait']:.3f}", f"{res['wrk_wait']:.3f}",
                                     f"{res['other0']:.3f}", f"{res['other1']:.3f}",
                                     f"{res['steal']:.3f}",
                                     e["connect"], e["read"], e["write"], e["timeout"],
                                     e["non2xx3xx"], f"{res['wall_s']:.3f}"])
                        log(f"  {res['rps']:,.0f} req/s, p50 {res['p50_us']} µs, p99 "
                            f"{res['p99_us']} µs (wrk printed {res['wrk_p50_us']} / "
                            f"{res['wrk_p99_us']} µs), {res['cpu_us_per_req']:.2f} µs CPU/req, "
                            f"server busy {res['server_busy'] * 100:.0f}%, "
                            f"wrk busy {res['wrk_busy'] * 100:.0f}%, run-queue wait server "
                            f"{res['server_wait'] * 100:.0f}% wrk {res['wrk_wait'] * 100:.0f}%")
    finally:
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    with open(os.path.join(OUT_DIR, "http-rounds.csv"), "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["round", "workload", "server", "rps", "requests", "bytes", "duration_s",
                     "p50_us", "p99_us", "max_us", "latency_samples", "wrk_printed_p50_us",
                     "wrk_printed_p99_us", "server_cpu_us_per_req", "server_busy",
                     "wrk_busy", "server_runq_wait", "wrk_runq_wait", "other_cpu0",
                     "other_cpu1", "steal", "err_connect", "err_read", "err_write", "err_timeout",
                     "non2xx3xx", "wrk_wall_s"])
        wr.writerows(rows)

    def resp_line(name):
        raw = responses.get(name, b"")
        head = raw.partition(b"\r\n\r\n")[0].decode(errors="replace").split("\r\n")
        return f"{name}: {len(raw)} B (" + "; ".join(head) + ")"

    md = []
    md.append("# HTTP keep-alive hello: http_server vs nginx\n")
    md.append(f"{started}, {args.rounds} round(s), {args.secs} s per run after "
              f"{args.warmup} s warm-up on a fresh server, {args.connections} connections, "
              f"GET /plaintext (13-byte body), pipelined depth {args.depth}; "
              f"took {time.monotonic() - t_start:.0f} s.\n")
    md.append(f"- ontime: examples/http_server at {rev}, `--threads 1` (threads2: `--threads 2`)")
    md.append(f"- {nver}: one worker with `master_process off` (one process, measured); "
              f"threads2: `master_process on; worker_processes 2`, `listen ... reuseport`, "
              f"CPU summed over master + workers; access_log off, keepalive_requests "
              f"1000000000, server_tokens off")
    md.append(f"- client: {wver}, `-t1 -c{args.connections}` pinned to CPU {CLIENT_CPU}, "
              f"servers pinned to CPU {SERVER_CPU} (threads2: all on CPUs {BOTH_CPUS}, wrk -t2)")
    md.append("- responses: " + " | ".join(resp_line(n) for n in SERVERS))
    md.append("- ab -k -n 20000 -c 10: " + "; ".join(ab_lines))
    md.append("")
    md.append(table(results, args, args.rounds))
    md.append("")
    md.append("req/s: wrk's Requests/sec (responses per second, also with pipelining); "
              "median over rounds. ratio req/s: median of per-round ontime/nginx. "
              "p50/p99: the latencies wrk measured (its histogram, 1 µs buckets, dumped "
              "in its `done` hook, with wrk 4.1's coordinated-omission correction undone "
              "exactly: that correction assumes a fixed per-connection rate "
              "runtime/(responses/connections), which for pipelining counts responses "
              f"instead of batches, is {args.depth}x too small, and pushes synthetic samples "
              "below the histogram's minimum, where wrk's percentile never looks, so wrk "
              "prints 0 for p90/p99); per request for plain, per batch of "
              f"{args.depth} (write of the batch to its last response) for pipelined; the "
              "sample count is checked against the responses counted. "
              "µs CPU/req: server utime+stime over wrk's run / requests "
              f"(clock ticks of {1e6 / CLK_TCK:.0f} µs); ratio CPU/req: median of per-round "
              "ontime/nginx, lower is better for ontime. busy: CPU time over wall time, "
              "100% = one core; wrk near 100% with the server below means the client is "
              "the bottleneck.")
    pinned = [r for w in results if w != "threads2" for n in SERVERS
              for r in results[w][n] if r]
    if pinned:
        md.append("")
        md.append("Quietness check, pinned runs: the largest share of a window that the server "
                  "was runnable but waiting for CPU 0 was "
                  f"{max(r['server_wait'] for r in pinned) * 100:.1f}%, and wrk for CPU 1 "
                  f"{max(r['wrk_wait'] for r in pinned) * 100:.1f}% (schedstat run-queue "
                  "time; wrk's sampled every 0.1 s); CPU time used by other processes: up to "
                  f"{max(r['other0'] for r in pinned) * 100:.1f}% of CPU 0 and "
                  f"{max(r['other1'] for r in pinned) * 100:.1f}% of CPU 1 (/proc/stat minus "
                  "server and wrk; clock ticks); hypervisor steal up to "
                  f"{max(r['steal'] for r in pinned) * 100:.1f}%. Over a few % means other "
                  "work shared the cores and the run should be repeated on a quiet machine.")
    if "threads2" in results:
        md.append("")
        md.append(THREADS2_NOTE)
    md.append("")
    if NOTES:
        md.append("Notes (odd things seen):\n")
        md.extend(f"- {n}" for n in NOTES)
    else:
        md.append("Notes: no wrk socket errors, no non-2xx/3xx, no hangs, no server died.")
    text = "\n".join(md) + "\n"
    print(text)
    with open(os.path.join(OUT_DIR, "http.md"), "w") as f:
        f.write(text)
    plot_svg(results, args, os.path.join(OUT_DIR, "http.svg"))
    log(f"written: {os.path.join(OUT_DIR, 'http.md')}, http.svg, http-rounds.csv, "
        f"logs in {LOG_DIR}")


if __name__ == "__main__":
    main()
