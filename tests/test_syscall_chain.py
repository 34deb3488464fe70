"""Sensors that hook the same tracepoint run as one program there (a chain of
tail calls, sensors/chain.py): the kernel attaches one program per hook, and
every sensor in the chain still sees every call."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys

import pytest

import bpfwatch
from bpfwatch import libbpf as L
from bpfwatch.errors import BpfwatchError
from bpfwatch.sensors import chain
from conftest import collect
from dnsserver import DnsServer

pytestmark = pytest.mark.kernel
ME = os.getpid()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWO_ON_EXIT = os.path.join(ROOT, "build", "testbpf", "chain_two.bpf.o")


def attached_hooks(program_ids: set[int]) -> dict[str, int]:
    """Tracepoint name -> links the kernel holds for `program_ids`."""
    out = subprocess.run([shutil.which("bpftool") or "/usr/sbin/bpftool", "-j", "link", "show"],
                         capture_output=True, text=True, check=True).stdout
    hooks: dict[str, int] = {}
    for link in json.loads(out):
        if link.get("prog_id") in program_ids and "tp_name" in link:
            hooks[link["tp_name"]] = hooks.get(link["tp_name"], 0) + 1
    return hooks


def dns_query(name: str) -> bytes:
    return struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + b"".join(
        bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)


@pytest.mark.smoke_vm
def test_one_program_per_hook_and_every_sensor_in_the_chain_sees_its_calls(tmp_path):
    srv = socket.create_server(("127.0.0.1", 0))
    data = tmp_path / "data"
    with DnsServer() as dns, bpfwatch.Monitor(follow=ME, types=["process.*", "file.*", "network.*", "dns.*",
                                                                 "security.*"]) as m:
        ours = {p.fd: p for s in m.sensors for p in s.obj.programs() if p.fd >= 0}
        ids = {L.prog_info(fd)["id"]: p for fd, p in ours.items()}
        hooks = attached_hooks(set(ids))
        # every chained hook that has programs: one link, whatever the number of sensors on it
        for hook, progs in m.chains.order.items():
            if progs:
                assert hooks.get(hook) == 1, (hook, hooks)
        assert len(m.chains.order["sys_exit"]) >= 4  # file, network, dns, security
        assert len(m.chains.order["sys_enter"]) >= 2  # file (close), security
        # the program arrays hold the rest of each chain, in order
        owner = m.sensors[0].obj
        for hook, progs in m.chains.order.items():
            arr = owner.map(f"bw_chain_{hook}")
            for slot, prog in enumerate(progs[1:], start=1):
                held = arr.lookup(slot.to_bytes(4, "little"))
                assert held is not None and int.from_bytes(held[:4], "little") == L.prog_info(prog.fd)["id"]

        # one call for each sensor in the sys_exit and sys_enter chains
        with open(data, "w") as f:  # file.open (sys_exit) and, at close, file.io (sys_enter)
            f.write("x" * 100)
        client = socket.create_connection(srv.getsockname())  # network: connect, and accept at sys_exit
        conn, _ = srv.accept()
        client.sendall(b"y" * 4321)  # sock_send_length: exact bytes at close
        assert conn.recv(65536)
        client.close()
        conn.close()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # dns at sys_exit
        udp.sendto(dns_query("a.test"), (dns.addr, dns.port))
        udp.recv(512)
        udp.close()
        # security: a refused setuid, at sys_enter (args, credentials) and sys_exit (result)
        subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                        "import os\ntry:\n    os.setuid(0)\nexcept PermissionError:\n    pass"], check=True)

        def seen(ev):
            types = {e["type"] for e in ev}
            setuid = [e for e in ev if e["type"].startswith("security.") and e.get("syscall") == "setuid"]
            io = [e for e in ev if e["type"] == "file.io" and e["path"] == str(data)]
            closes = [e for e in ev if e["type"] == "network.close" and e["bytes_sent"] == 4321]
            return ({"network.connect", "network.accept", "dns.query", "dns.response"} <= types
                    and bool(setuid) and bool(io) and bool(closes))

        ev = collect(m, seen, timeout=15)
    srv.close()
    assert seen(ev), sorted({e["type"] for e in ev})
    assert [e for e in ev if e["type"] == "file.open" and e["path"] == str(data)]
    (io,) = [e for e in ev if e["type"] == "file.io" and e["path"] == str(data)]
    assert io["writes"] == 1 and io["write_bytes"] == 100 and io["closed"]
    (q,) = [e for e in ev if e["type"] == "dns.query" and e["pid"] == ME and e["role"] == "client"]
    assert q["name"] == "a.test"
    (finding,) = [e for e in ev if e["type"].startswith("security.") and e.get("syscall") == "setuid"]
    assert finding["outcome"] == "failed"


def test_a_sensor_loaded_alone_is_not_chained():
    """Outside a Monitor the successor slot stays past the end: the tail call
    does nothing, and the program attaches by itself."""
    from bpfwatch.sensors.file import FileOptions, FileSensor

    with FileSensor(FileOptions()) as s:
        progs = {p.name: p for p in s.obj.programs() if p.fd >= 0}
        hooks = attached_hooks({L.prog_info(p.fd)["id"] for p in progs.values()})
    assert hooks.get("sys_exit") == 1 and hooks.get("sys_enter") == 1


def test_two_programs_of_one_object_on_one_hook_are_refused():
    """One successor slot per object and hook: such an object cannot be chained."""
    with L.BpfObject(TWO_ON_EXIT) as obj, pytest.raises(BpfwatchError, match="2 programs on sys_exit"):
        chain.plan([obj])


def test_objects_without_the_chain_are_left_alone():
    with L.BpfObject(os.path.join(ROOT, "build", "testbpf", "floor.bpf.o")) as obj:
        chains = chain.plan([obj])
        assert all(not progs for progs in chains.order.values())
        assert all(p.autoattach for p in obj.programs())


def test_chain_is_built_in_sensor_order():
    """The sensors' programs run in the Monitor's order of sensors; only the first is attached."""
    with bpfwatch.Monitor(follow=ME, types=["file.*", "network.*", "dns.*"]) as m:
        progs = m.chains.order["sys_exit"]
        objs = [p.obj for p in progs]
        assert [s.obj for s in m.sensors if s.obj in objs] == objs and len(objs) >= 3
        assert [p.autoattach for p in progs] == [True] + [False] * (len(progs) - 1)
        assert m.chains.heads["sys_exit"] == progs[0].name
