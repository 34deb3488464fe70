"""The polling fallback's socket listing (bpfwatch/sockdiag.py) against its
peer, psutil.net_connections, on sockets the test makes itself; and the
polling source built on it, with TIME_WAIT left to the kernel."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfwatch import sockdiag
from bpfwatch.agent.poll import _SCANNED_TCP, PollSource
from bpfwatch.filters import Filter

SCANNED = ("ESTABLISHED", "LISTEN", "FIN_WAIT1", "FIN_WAIT2", "CLOSE_WAIT", "LAST_ACK", "CLOSING")


def _keyed(conns, made):
    """(family, type, local, remote) -> (status, pid) of the sockets in
    `made` (other sockets of this process may be changing state meanwhile)."""
    ours = {(int(m.family), int(m.type), m.getsockname()[:2], _peer(m)) for m in made}
    out = {}
    for c in conns:
        local = (c.laddr.ip, c.laddr.port) if c.laddr else ()
        remote = (c.raddr.ip, c.raddr.port) if c.raddr else ()
        key = (int(c.family), int(c.type), local, remote)
        if key in ours:
            out[key] = (c.status, c.pid)
    return out


def _peer(s):
    try:
        return s.getpeername()[:2]
    except OSError:
        return ()


def _wait_state(diag, key, states, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = diag.tcp_states([key]).get(key)
        if got in states:
            return got
        time.sleep(0.01)
    raise AssertionError(f"{key} never reached {states}")


@pytest.fixture
def diag():
    with sockdiag.Sockets() as d:
        assert d.available, "NETLINK_SOCK_DIAG is missing on this kernel"
        yield d


def test_listing_agrees_with_psutil_on_every_kind_of_socket(diag):
    """Listening, established (both ends), half-closed (FIN_WAIT2 and
    CLOSE_WAIT), IPv6, and UDP connected and not: the same sockets, states and
    owner as psutil reads from /proc/net."""
    made = []
    srv = socket.create_server(("127.0.0.1", 0))
    srv6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
    made += [srv, srv6]
    for s in (srv, srv6):
        c = socket.create_connection(s.getsockname()[:2])
        a, _ = s.accept()
        made += [c, a]
    half = socket.create_connection(srv.getsockname())
    half_peer, _ = srv.accept()
    half.shutdown(socket.SHUT_WR)  # half: FIN_WAIT2, its peer: CLOSE_WAIT
    made += [half, half_peer]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.connect(("127.0.0.1", 9))
    u2 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    u2.bind(("::1", 0))
    made += [u, u2]
    try:
        _wait_state(diag, (socket.AF_INET, *half.getsockname(), *half.getpeername()), {"FIN_WAIT2"})
        ours = diag.dump(sockdiag.state_mask(*SCANNED))
        owners = sockdiag.socket_owners({c.inode for c in ours})
        mine = _keyed([c._replace(pid=owners.get(c.inode)) for c in ours], made)
        peer = _keyed([c for c in psutil.net_connections("inet") if c.status in (*SCANNED, "NONE")], made)
        assert mine == peer
        assert len(mine) == len(made)
        assert {pid for _, pid in mine.values()} == {os.getpid()}
        assert {v[0] for v in mine.values()} >= {"LISTEN", "ESTABLISHED", "FIN_WAIT2", "CLOSE_WAIT", "NONE"}
    finally:
        for s in made:
            s.close()


def test_time_wait_is_left_in_the_kernel_but_found_when_asked(diag):
    """The scan's dump leaves TIME_WAIT out (psutil lists it); asking for the
    connection by its addresses finds it in TIME_WAIT."""
    srv = socket.create_server(("127.0.0.1", 0))
    c = socket.create_connection(srv.getsockname())
    a, _ = srv.accept()
    key = (socket.AF_INET, *c.getsockname(), *c.getpeername())
    c.close()  # the client closes first: it ends in TIME_WAIT
    time.sleep(0.05)
    a.close()
    try:
        assert _wait_state(diag, key, {"TIME_WAIT"}) == "TIME_WAIT"
        listed = {(x.laddr, x.raddr) for x in diag.dump(_SCANNED_TCP)}
        assert ((key[1], key[2]), (key[3], key[4])) not in listed
        assert any(x.status == "TIME_WAIT" and x.laddr == key[1:3] and x.raddr == key[3:]
                   for x in psutil.net_connections("tcp4"))
        assert diag.tcp_states([(socket.AF_INET, "127.0.0.1", 1, "127.0.0.1", 2)]) == {}
    finally:
        srv.close()


def _poll_until(src, want, timeout=10.0):
    events = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events += src.poll(0.05)
        if want(events):
            return events
    raise AssertionError(f"not seen in {timeout}s: {[e['type'] for e in events]}")


@pytest.mark.parametrize("diagnostics", [True, False], ids=["sock_diag", "psutil"])
def test_poll_source_says_who_closed_first(diagnostics):
    """A connection the scan saw established, closed by this side first: its
    close says closed_by local, though its socket sits in TIME_WAIT, which the
    scan no longer lists. The same with the psutil path (a kernel without
    socket diagnostics)."""
    src = PollSource({"network.connect", "network.accept", "network.close"}, Filter(), interval=0.05,
                     include_self=True).start()
    try:
        if not diagnostics:
            src._diag.available = False
        srv = socket.create_server(("127.0.0.1", 0))
        c = socket.create_connection(srv.getsockname())
        a, _ = srv.accept()
        port = c.getsockname()[1]
        mine = lambda evs: [e for e in evs if port in (e.get("local_port"), e.get("remote_port"))]  # noqa: E731
        seen = _poll_until(src, lambda evs: {"network.connect", "network.accept"} <= {e["type"] for e in mine(evs)})
        connect = next(e for e in mine(seen) if e["type"] == "network.connect")
        assert connect["pid"] == os.getpid() and connect["remote_port"] == srv.getsockname()[1]
        c.close()
        time.sleep(0.05)
        a.close()
        closes = _poll_until(src, lambda evs: len([e for e in mine(evs) if e["type"] == "network.close"]) == 2)
        by_side = {e["local_port"]: e for e in mine(closes) if e["type"] == "network.close"}
        assert by_side[port]["closed_by"] == "local"
        assert by_side[port]["role"] == "client" and by_side[srv.getsockname()[1]]["role"] == "server"
        srv.close()
    finally:
        src.close()
    assert src._diag is None  # its netlink socket is closed


class _Replies:
    """A socket whose replies are the given datagrams (then a timeout)."""

    def __init__(self, datagrams):
        self.datagrams = list(datagrams)

    def send(self, data):
        return len(data)

    def recv_into(self, buf):
        if not self.datagrams:
            raise TimeoutError("no reply")
        d = self.datagrams.pop(0)[: len(buf)]
        buf[: len(d)] = d
        return len(d)

    def close(self):
        pass


# a socket record with any field values, or any bytes at all
_socket_body = st.builds(lambda fam, state, rest: struct.pack("=BB", fam, state) + rest,
                         st.sampled_from([2, 10, 0, 1, 255]), st.integers(0, 255), st.binary(min_size=70, max_size=90))
_msg = st.builds(lambda t, body, pad: struct.pack("=IHHII", max(0, 16 + len(body) + pad), t, 0, 1, 0) + body,
                 st.sampled_from([2, 3, 20, 7]), st.one_of(_socket_body, st.binary(max_size=120)),
                 st.integers(-20, 8))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_msg, max_size=4).map(b"".join), max_size=4), st.booleans())
def test_hostile_replies_give_sockets_or_an_oserror(datagrams, dump):
    """Whatever the netlink replies hold, reading them gives sockets or an
    OSError (which turns the scan over to psutil), never another exception
    and never a wait without end."""
    d = sockdiag.Sockets()
    d._sock, d._buf = _Replies(datagrams), bytearray(1 << 17)  # type: ignore[assignment]
    out = []
    with contextlib.suppress(OSError):
        d._receive(socket.SOCK_STREAM, socket.IPPROTO_TCP, out, dump=dump)
    assert all(isinstance(c, sockdiag.Conn) for c in out)


def test_replies_left_by_a_failed_query_are_passed_over():
    """A lookup that timed out midway leaves its replies queued: the next
    dump must not take them for its own (an ENOENT there would turn polling
    over to psutil for good)."""
    def nl(mtype, seq, body):
        return struct.pack("=IHHII", 16 + len(body), mtype, 0, seq, 0) + body

    stale = nl(sockdiag.NLMSG_ERROR, 3, struct.pack("=i", -2) + bytes(16))
    sock = struct.pack("=BBBB2s2s16s16sIIIIIIII", socket.AF_INET, 1, 0, 0, (40000).to_bytes(2, "big"),
                       (80).to_bytes(2, "big"), socket.inet_aton("10.0.0.1").ljust(16, b"\0"),
                       socket.inet_aton("10.0.0.2").ljust(16, b"\0"), 0, 0, 0, 0, 0, 0, 0, 1000)
    d = sockdiag.Sockets()
    current = nl(sockdiag.SOCK_DIAG_BY_FAMILY, 5, sock) + nl(sockdiag.NLMSG_DONE, 5, bytes(4))
    d._sock, d._buf = _Replies([stale, current]), bytearray(1 << 17)  # type: ignore[assignment]
    out = []
    d._receive(socket.SOCK_STREAM, socket.IPPROTO_TCP, out, dump=True, since=5)
    assert [(c.laddr, c.raddr, c.status, c.inode) for c in out] == [
        (("10.0.0.1", 40000), ("10.0.0.2", 80), "ESTABLISHED", 1000)]
