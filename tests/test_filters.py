"""Filter parsing and the Python half of filtering (no kernel needed)."""

from __future__ import annotations

import pytest

from bpfwatch.cli.options import parse_size
from bpfwatch.errors import UsageError
from bpfwatch.events.types import expand_types
from bpfwatch.filters import Filter, TextMatch, parse_assignments
from bpfwatch.sensors.process import decode_wait_status


def test_text_match_kinds():
    m = TextMatch("comm", ["bash", "py*", "re:^node$", "/^go/"])
    assert m.exact == {"bash"} and len(m.patterns) == 3
    assert m("bash") and m("python3") and m("node") and m("gofmt") and not m("nodejs") and not m(None)


@pytest.mark.parametrize("allow, needle", [
    ({"comm": ["re:("]}, "bad regex"),
    ({"comm": ["/[/"]}, "bad regex"),
    ({"comm": [""]}, "empty value"),
    ({"comm": ["x" * 16]}, "at most 15 bytes"),
    ({"nope": [1]}, "unknown key 'nope'"),
    ({"addr": ["10.0.0.0/33"]}, "not an address or CIDR"),
    ({"port": ["70000"]}, "not within 1-65535"),
    ({"port": ["http"]}, "not a port"),
    ({"path": ["relative/dir"]}, "must be an absolute path"),
    ({"uid": ["no-such-user-here"]}, "no user named"),
    ({"container": ["xyz"]}, "not a container id"),
    ({"container": ["0123456789ab"]}, "no cgroup names container"),
    ({"type": ["file.nope"]}, "unknown event type"),
    ({"failed_only": ["maybe"]}, "not true or false"),
    ({"cgroup": ["²"]}, "no cgroup at"),  # str.isdigit() takes '²', int() does not
])
def test_bad_filters_name_the_problem(allow, needle):
    with pytest.raises(UsageError, match=needle):
        Filter(allow)


def test_deny_only_keys():
    with pytest.raises(UsageError, match="'follow' only allows"):
        Filter(deny={"follow": [1]})


BASE = {"type": "process.exec", "pid": 10, "ppid": 1, "uid": 1000, "comm": "python3",
        "exe": "/usr/bin/python3.11", "cgroup_id": 7}


def test_allow_and_deny_deny_wins():
    f = Filter({"comm": ["py*"], "uid": [0, 1000]}, {"exe": ["re:python3\\.11$"]})
    assert not f.match(BASE)  # allowed by comm and uid, denied by exe
    assert f.match({**BASE, "exe": "/usr/bin/python3.12"})
    assert not f.match({**BASE, "comm": "bash", "exe": "/bin/bash"})
    assert not f.match({**BASE, "uid": 7, "exe": "/x"})


def test_sensor_keys_apply_to_their_events_only():
    f = Filter({"port": ["443"], "path": ["/etc"]}, {"addr": ["10.0.0.0/8"]})
    net = {**BASE, "type": "network.connect", "local_port": 5555, "remote_port": 443,
           "local_addr": "192.168.1.2", "remote_addr": "1.1.1.1"}
    assert f.match(net)
    assert not f.match({**net, "remote_port": 80})
    assert not f.match({**net, "remote_addr": "10.2.3.4"})
    assert f.match({**BASE, "type": "file.open", "path": "/etc/passwd"})
    assert not f.match({**BASE, "type": "file.open", "path": "/etcetera"})
    assert f.match(BASE)  # a process event has no port or path to judge


def test_port_ranges_and_cidr():
    f = Filter({"port": ["8000-8100"], "addr": ["::1", "127.0.0.0/8"]})
    ev = {**BASE, "type": "network.udp", "local_port": 8050, "remote_port": 1, "local_addr": "127.0.0.1",
          "remote_addr": "127.0.0.1"}
    assert f.match(ev) and not f.match({**ev, "local_port": 9000})


def test_dns_name_glob():
    f = Filter({"dns_name": ["*.example.com"]})
    ev = {**BASE, "type": "dns.query", "name": "www.example.com"}
    assert f.match(ev) and not f.match({**ev, "name": "example.org"})


def test_cli_assignments():
    assert parse_assignments(["comm=a,b", "port=1", "comm=c"], "allow") == {"comm": ["a", "b", "c"], "port": ["1"]}
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_assignments(["comm"], "allow")


def test_types():
    every = expand_types(None)
    assert {"process.exec", "process.fork", "process.exit", "file.open", "file.io"} <= every
    assert expand_types(["process.exec,process.exit"]) == {"process.exec", "process.exit"}
    assert expand_types(["process.*"]) == {"process.exec", "process.fork", "process.exit"}
    assert expand_types(["file"]) == {t for t in every if t.startswith("file.")}
    with pytest.raises(UsageError, match="unknown event type"):
        expand_types(["file.nope"])


@pytest.mark.parametrize("text, n", [("16MB", 16 << 20), ("16M", 16 << 20), ("256k", 256 << 10),
                                     ("4096", 4096), ("1GiB", 1 << 30)])
def test_sizes(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("status, expect", [
    (0, (0, None, False)), (1 << 8, (1, None, False)), (255 << 8, (255, None, False)),
    (9, (None, 9, False)), (11 | 0x80, (None, 11, True)),
])
def test_wait_status(status, expect):
    assert decode_wait_status(status) == expect
