"""The network sensor on the real kernel, on loopback only."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

import bpfwatch
from conftest import collect

pytestmark = pytest.mark.kernel
ME = os.getpid()


def _exchange(family: int, host: str, up: int, down: int) -> tuple[int, int]:
    """A client sends `up` bytes, the server answers `down` bytes; returns the ports."""
    srv = socket.socket(family)
    srv.bind((host, 0))
    srv.listen()
    port = srv.getsockname()[1]

    def serve() -> None:
        c, _ = srv.accept()
        got = 0
        while chunk := c.recv(65536):
            got += len(chunk)
        assert got == up
        c.sendall(b"s" * down)
        c.close()

    t = threading.Thread(target=serve)
    t.start()
    cl = socket.create_connection((host, port))
    cport = cl.getsockname()[1]
    cl.sendall(b"c" * up)
    cl.shutdown(socket.SHUT_WR)
    got = 0
    while chunk := cl.recv(65536):
        got += len(chunk)
    assert got == down
    cl.close()
    t.join()
    srv.close()
    return port, cport


def _wait_closes(m, n):
    return collect(m, lambda ev: len([e for e in ev if e["type"] == "network.close"]) >= n)


@pytest.mark.smoke_vm
@pytest.mark.parametrize("up, down", [(1_234_567, 98_765), (12_345, 777)])
@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_tcp_exact_bytes_both_sides(family, host, up, down):
    with bpfwatch.Monitor(follow=ME, types=["network.*"]) as m:
        sport, cport = _exchange(family, host, up, down)
        ev = _wait_closes(m, 2)
    fam = "ipv4" if family == socket.AF_INET else "ipv6"
    (conn,) = [e for e in ev if e["type"] == "network.connect"]
    assert conn["result"] == "established" and conn["error"] is None
    assert (conn["local_port"], conn["remote_port"], conn["remote_addr"]) == (cport, sport, host)
    assert conn["family"] == fam and conn["protocol"] == "tcp" and conn["latency_ns"] > 0
    (acc,) = [e for e in ev if e["type"] == "network.accept"]
    assert (acc["local_port"], acc["remote_port"]) == (sport, cport) and acc["pid"] == ME
    closes = {e["role"]: e for e in ev if e["type"] == "network.close"}
    client, server = closes["client"], closes["server"]
    assert (client["bytes_sent"], client["bytes_received"]) == (up, down)
    assert (server["bytes_sent"], server["bytes_received"]) == (down, up)
    assert client["bytes_exact"] and server["bytes_exact"]
    assert client["closed_by"] == "local" and server["closed_by"] == "remote"
    assert client["local_port"] == cport and server["local_port"] == sport
    assert client["duration_ns"] > 0 and client["retransmits"] >= 0  # loopback may retransmit (TLP)
    states = [(e["old_state"], e["new_state"]) for e in ev if e["type"] == "network.state"]
    assert ("SYN_SENT", "ESTABLISHED") in states and ("ESTABLISHED", "FIN_WAIT1") in states


def test_refused_connect():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]  # bound, not listening: connects are refused
        with bpfwatch.Monitor(follow=ME, types=["network.connect"]) as m:
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", free))
            ev = collect(m, lambda ev: bool(ev))
    (conn,) = ev
    assert conn["result"] == "refused" and conn["error"] == "ECONNREFUSED" and conn["remote_port"] == free


def test_connect_attributed_to_child_process():
    code = "import socket, sys; s = socket.socket(); s.connect(('127.0.0.1', int(sys.argv[1]))); s.close()"
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    with bpfwatch.Monitor(follow=ME, types=["network.connect", "network.accept"]) as m:
        p = subprocess.Popen([sys.executable, "-c", code, str(srv.getsockname()[1])])
        c, _ = srv.accept()
        p.wait()
        c.close()
        ev = collect(m, lambda ev: len(ev) >= 2)
    srv.close()
    (conn,) = [e for e in ev if e["type"] == "network.connect"]
    (acc,) = [e for e in ev if e["type"] == "network.accept"]
    assert conn["pid"] == p.pid and conn["exe"] == os.path.realpath(sys.executable)
    assert acc["pid"] == ME


def test_udp_flow_start_and_end_with_exact_counts():
    with bpfwatch.Monitor(follow=ME, types=["network.udp"], udp_idle=0.5) as m:
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        for n in (10, 20, 30):
            a.sendto(b"u" * n, b.getsockname())
        for _ in range(3):
            data, peer = b.recvfrom(100)
            b.sendto(data[:5], peer)
        for _ in range(3):
            a.recvfrom(100)
        ev = collect(m, lambda ev: len([e for e in ev if e["phase"] == "end"]) >= 2, timeout=10)
        a.close()
        b.close()
    ends = {e["local_port"]: e for e in ev if e["phase"] == "end"}
    starts = [e for e in ev if e["phase"] == "start"]
    assert len(starts) == 2 and len(ends) == 2
    sender = next(e for e in ends.values() if e["bytes_sent"] == 60)
    assert (sender["packets_sent"], sender["bytes_received"], sender["packets_received"]) == (3, 15, 3)
    receiver = next(e for e in ends.values() if e is not sender)
    assert (receiver["bytes_received"], receiver["packets_received"], receiver["bytes_sent"]) == (60, 3, 15)
    assert sender["remote_port"] == receiver["local_port"] and sender["protocol"] == "udp"


def test_udp_flows_end_when_the_process_exits():
    code = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "[s.sendto(b'x' * 7, ('127.0.0.1', 9)) for _ in range(4)]")
    with bpfwatch.Monitor(follow=ME, types=["network.udp"]) as m:  # default idle: 30 s
        p = subprocess.Popen([sys.executable, "-c", code])
        p.wait()
        ev = collect(m, lambda ev: any(e["phase"] == "end" for e in ev))
    (end,) = [e for e in ev if e["phase"] == "end"]
    assert end["pid"] == p.pid and end["bytes_sent"] == 28 and end["packets_sent"] == 4
    assert end["remote_port"] == 9


def test_network_events_match_schema():
    import jsonschema

    from bpfwatch.schema import event_schema

    validator = jsonschema.Draft202012Validator(event_schema())
    with bpfwatch.Monitor(follow=ME, types=["network.*"], udp_idle=0.2) as m:
        _exchange(socket.AF_INET, "127.0.0.1", 10, 10)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.sendto(b"x", ("127.0.0.1", 9))
        u.close()
        time.sleep(0.5)
        ev = collect(m, lambda ev: {"network.close", "network.udp"} <= {e["type"] for e in ev})
    for e in ev:
        validator.validate(e)
