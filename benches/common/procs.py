"""What the comparison scripts (kv_compare.py, http_compare.py) share: the
revision measured, a process's CPU time and RSS from /proc, a free loopback
port, and integer settings from the environment."""

import os
import socket
import subprocess

CLK_TCK = os.sysconf("SC_CLK_TCK")


def ontime_revision(root):
    """The commit of the workspace at `root`, marked when the code measured
    (examples, crates, src) has uncommitted changes."""
    try:
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--", "examples", "crates", "src"],
            capture_output=True, text=True).stdout.strip()
        return (rev or "unknown") + (" (examples/crates/src modified)" if dirty else "")
    except OSError:
        return "unknown"


def proc_cpu(pid):
    """utime+stime of every thread of pid, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss(pid):
    """Resident set size of pid, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def free_port():
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_int(name, default):
    v = os.environ.get(name)
    return int(v) if v else default
