"""Deterministic workloads for the profiler's tests and benchmarks, run as
`python workloads.py NAME [ARG]`, each limited by one resource."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time


def cpu(n: int = 6_000_000) -> None:
    total = 0
    for i in range(n):
        total += i * i
    print(total % 7)


def fsync(path: str, rounds: int = 3000) -> None:
    block = b"x" * 4096
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(rounds):
            os.write(fd, block)
            os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(path)


def network(megabytes: int = 16, pace_ms: int = 20) -> None:
    """Sends to a slow peer: the receiver takes at most 1 MiB every pace_ms,
    so the sender spends its time blocked on a full socket. The peer, not
    this machine's CPU, is the limit, which holds on a loaded machine too
    (a bulk copy over loopback is as much CPU work as waiting)."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    chunk = b"\0" * 65536
    total = megabytes << 20

    def sink() -> None:
        conn, _ = srv.accept()
        got = 0
        while got < total:
            data = conn.recv(1 << 20)
            if not data:
                break
            got += len(data)
            time.sleep(pace_ms / 1000)
        conn.close()

    t = threading.Thread(target=sink)
    t.start()
    with socket.create_connection(("127.0.0.1", port)) as c:
        sent = 0
        while sent < total:
            c.sendall(chunk)
            sent += len(chunk)
    t.join()
    srv.close()


def memory(rounds: int = 8, megabytes: int = 256) -> None:
    for _ in range(rounds):
        buf = b"\1" * (megabytes << 20)  # fresh pages, every one touched
        del buf


def syscalls(getppid: int = 20000, stats: int = 10000, path: str = "/etc/hostname") -> None:
    for _ in range(getppid):
        os.getppid()
    for _ in range(stats):
        os.stat(path)


if __name__ == "__main__":
    name, *args = sys.argv[1:]
    fn = globals()[name]
    fn(*[a if not a.isdigit() else int(a) for a in args])
