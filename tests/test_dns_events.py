"""The DNS sensor against a real DNS server on loopback and real clients
(dig; glibc's resolver via getent, configured in a private mount namespace)."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import struct
import subprocess

import pytest

import bpfwatch
from bpfwatch import libbpf as L
from bpfwatch.protocols import dns
from conftest import collect
from dnsserver import DnsServer, answer

ME = os.getpid()


def _dig(server, name, qtype, *opts):
    if not shutil.which("dig"):
        pytest.skip("dig is not installed (bind9-dnsutils)")
    subprocess.run(["dig", f"@{server.addr}", "-p", str(server.port), "+tries=1", "+time=3", *opts, name, qtype],
                   check=True, stdout=subprocess.DEVNULL)


def _client(ev):
    """The events of the asking side (the test's DnsServer answers in this
    process, so its server-side events are here too)."""
    return [e for e in ev if e["role"] == "client"]


def _responses(m, n, role="client"):
    return collect(m, lambda ev: len([e for e in ev if e["type"] == "dns.response" and e["role"] == role]) >= n)


@pytest.mark.kernel
@pytest.mark.parametrize("name, qtype, rcode, addresses, chain", [
    ("a.test", "A", "NOERROR", ["10.1.2.3"], []),
    ("a.test", "AAAA", "NOERROR", ["2001:db8::3"], []),
    ("alias.test", "A", "NOERROR", ["10.1.2.3"], ["a.test"]),
    ("missing.test", "A", "NXDOMAIN", [], []),
])
def test_dig(name, qtype, rcode, addresses, chain):
    with DnsServer() as server, bpfwatch.Monitor(follow=ME, types=["dns.*"]) as m:
        _dig(server, name, qtype)
        ev = _client(_responses(m, 1))
    (q,) = [e for e in ev if e["type"] == "dns.query"]
    (r,) = [e for e in ev if e["type"] == "dns.response"]
    assert (q["name"], q["qtype"]) == (name, qtype)
    assert q["exe"].endswith("/dig")  # comm is the sending thread's name (isc-net-0000)
    assert q["server_addr"] == server.addr and q["server_port"] == 53
    assert (r["name"], r["qtype"], r["id"]) == (name, qtype, q["id"])
    assert r["rcode"] == rcode and r["addresses"] == addresses and r["cname_chain"] == chain
    assert 0 < r["latency_ns"] < 3_000_000_000
    assert r["pid"] == q["pid"] and r["exe"] and r["exe"].endswith("dig")


@pytest.mark.kernel
def test_glibc_resolver_sends_a_and_aaaa_together(tmp_path):
    if not shutil.which("unshare"):
        pytest.skip("unshare (util-linux) is not installed")
    with DnsServer() as server, bpfwatch.Monitor(follow=ME, types=["dns.*"]) as m:
        conf = tmp_path / "resolv.conf"
        conf.write_text(f"nameserver {server.addr}\noptions attempts:1 timeout:3\n")
        nss = tmp_path / "nsswitch.conf"
        nss.write_text("hosts: dns\n")
        # a private mount namespace: the machine's resolv.conf is never touched
        script = (f"mount --bind {conf} /etc/resolv.conf && mount --bind {nss} /etc/nsswitch.conf && "
                  "exec getent ahosts alias.test")
        out = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                             capture_output=True, text=True, check=True).stdout
        ev = _client(_responses(m, 2))
    assert "10.1.2.3" in out and "2001:db8::3" in out
    queries = [e for e in ev if e["type"] == "dns.query"]
    assert {q["qtype"] for q in queries} == {"A", "AAAA"}
    assert all(q["comm"] == "getent" for q in queries)
    responses = {e["qtype"]: e for e in ev if e["type"] == "dns.response"}
    assert responses["A"]["addresses"] == ["10.1.2.3"] and responses["AAAA"]["addresses"] == ["2001:db8::3"]
    assert responses["A"]["cname_chain"] == ["a.test"]
    assert all(r["latency_ns"] is not None for r in responses.values())


@pytest.mark.smoke_vm
@pytest.mark.kernel
def test_malformed_message_is_reported_not_fatal():
    with DnsServer() as server, bpfwatch.Monitor(follow=ME, types=["dns.*"]) as m:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"\x12\x34garbage", (server.addr, 53))
        s.close()
        ev = collect(m, lambda ev: {e["role"] for e in ev if e["type"] == "dns.malformed"} == {"client", "server"})
    bad = {e["role"]: e for e in ev if e["type"] == "dns.malformed"}
    assert bad["client"]["direction"] == "sent" and bad["client"]["length"] == 9 and bad["client"]["reason"]
    assert bad["server"]["direction"] == "received" and bad["server"]["length"] == 9


@pytest.mark.kernel
def test_name_filter():
    with DnsServer() as server, bpfwatch.Monitor(follow=ME, types=["dns.*"], dns_names=["alias.*"]) as m:
        _dig(server, "a.test", "A")
        _dig(server, "alias.test", "A")
        ev = _responses(m, 1)
    assert ev and {e["name"] for e in ev} == {"alias.test"}


@pytest.mark.kernel
def test_dns_events_match_schema():
    import jsonschema

    from bpfwatch.schema import event_schema

    validator = jsonschema.Draft202012Validator(event_schema())
    with DnsServer() as server, bpfwatch.Monitor(follow=ME, types=["dns.*"]) as m:
        _dig(server, "alias.test", "A")
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"\x00", (server.addr, 53))
        s.close()
        ev = collect(m, lambda ev: {"dns.response", "dns.malformed"} <= {e["type"] for e in ev})
    for e in ev:
        validator.validate(e)


@pytest.mark.skipif(not L.kernel_has_tracepoint("sock_send_length"),
                    reason="DNS over TCP needs the sock_send_length tracepoint (not in this kernel; docs/kernels.md)")
@pytest.mark.kernel
def test_dns_over_tcp():
    """dig +tcp: length-prefixed messages on a stream, reassembled per socket;
    the server answers with the length and the message in two iovecs."""
    with DnsServer() as server, bpfwatch.Monitor(follow=ME, types=["dns.*"]) as m:
        _dig(server, "alias.test", "A", "+tcp")
        ev = collect(m, lambda ev: {(e["type"], e["role"]) for e in ev} >= {
            ("dns.query", "client"), ("dns.response", "client"), ("dns.query", "server"), ("dns.response", "server")})
    assert not [e for e in ev if e["type"] == "dns.malformed"]
    (q,) = [e for e in _client(ev) if e["type"] == "dns.query"]
    (r,) = [e for e in _client(ev) if e["type"] == "dns.response"]
    assert q["protocol"] == r["protocol"] == "tcp" and q["exe"].endswith("/dig")
    assert (q["name"], q["qtype"], r["id"]) == ("alias.test", "A", q["id"])
    assert r["addresses"] == ["10.1.2.3"] and r["cname_chain"] == ["a.test"]
    assert q["server_addr"] == server.addr and q["server_port"] == server.port
    assert 0 < r["latency_ns"] < 3_000_000_000


@pytest.mark.kernel
def test_server_side_dns_is_reported_as_such():
    """A resolver on this host: the query it received and the answer it sent,
    role "server", with the asking client's address and the time it took."""
    with DnsServer() as server, bpfwatch.Monitor(follow=ME, types=["dns.*"]) as m:
        _dig(server, "a.test", "AAAA")
        ev = _responses(m, 1, role="server")
    srv = [e for e in ev if e["role"] == "server"]
    (q,) = [e for e in srv if e["type"] == "dns.query"]
    (r,) = [e for e in srv if e["type"] == "dns.response"]
    assert q["pid"] == r["pid"] == ME and q["protocol"] == "udp"
    assert q["server_addr"] == server.addr and q["server_port"] == server.port
    (cq,) = [e for e in _client(ev) if e["type"] == "dns.query"]
    assert q["client_port"] == cq["client_port"] == cq["local_port"] and q["client_addr"].startswith("127.")
    assert r["addresses"] == ["2001:db8::3"] and r["id"] == q["id"] == cq["id"]
    assert r["latency_ns"] is not None and 0 <= r["latency_ns"] < 3_000_000_000


def test_tcp_stream_reassembly_with_pieces_and_gaps():
    from bpfwatch.sensors.dns import TcpStream

    msgs = [answer(_query(n, 1)) for n in ("a.test", "alias.test", "missing.test")]
    wire = b"".join(struct.pack("!H", len(x)) + x for x in msgs)
    for cut in range(1, len(wire)):  # any split into two pieces
        st = TcpStream()
        got = st.feed(wire[:cut], cut) + st.feed(wire[cut:], len(wire) - cut)
        assert [g for g, _ in got] == msgs
    # the middle message captured only in part: it comes out cut short, the next one whole
    first = struct.pack("!H", len(msgs[0])) + msgs[0]
    second = struct.pack("!H", len(msgs[1])) + msgs[1]
    st = TcpStream()
    got = st.feed(first + second[:10], len(first) + len(second))
    got += st.feed(struct.pack("!H", len(msgs[2])) + msgs[2], len(msgs[2]) + 2)
    assert [g for g, _ in got] == [msgs[0], msgs[1][:8], msgs[2]]
    assert [n for _, n in got] == [len(m) for m in msgs]


def _query(name: str, qtype: int) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)


def test_parser_reads_compressed_answers():
    msg = dns.parse(answer(_query("alias.test", 1)))
    assert msg.response and msg.rcode == "NOERROR" and msg.questions == [("alias.test", "A")]
    assert [(a.type, a.data) for a in msg.answers] == [("CNAME", "a.test"), ("A", "10.1.2.3")]


def test_parser_fuzz_never_crashes():
    """Random mutations of real messages: DnsError or a message, nothing else."""
    rng = random.Random(1234)
    seeds = [answer(_query(n, t)) for n in ("a.test", "alias.test", "missing.test") for t in (1, 28)]
    seeds += [_query("a.test", 1), b"", b"\xc0\x0c" * 10]
    for _ in range(20000):
        buf = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            op = rng.random()
            if op < 0.5 and buf:
                buf[rng.randrange(len(buf))] = rng.randrange(256)
            elif op < 0.75:
                buf = buf[: rng.randrange(len(buf) + 1)]
            else:
                buf += bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        with contextlib.suppress(dns.DnsError):
            dns.parse(bytes(buf))


def test_pointer_loop_is_an_error():
    loop = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c"  # points at itself
    with pytest.raises(dns.DnsError):
        dns.parse(loop)
