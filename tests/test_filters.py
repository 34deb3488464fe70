"""Filter parsing and the Python half of filtering (no kernel needed)."""

from __future__ import annotations

import pytest

from bpfwatch.cli.options import parse_size
from bpfwatch.errors import UsageError
from bpfwatch.events.types import expand_types
from bpfwatch.pipeline.filter import EventFilter, parse_comm
from bpfwatch.sensors.process import decode_wait_status


def test_comm_kinds():
    m = parse_comm(["bash", "py*", "re:^node$", "/^go/"])
    assert m.exact == {"bash"}
    assert len(m.patterns) == 3
    assert not m.kernel_only
    assert parse_comm(["bash", "sh"]).kernel_only


@pytest.mark.parametrize("bad", ["re:(", "/[/", "", "x" * 16])
def test_bad_comm(bad):
    with pytest.raises(UsageError):
        parse_comm([bad])


def test_event_filter_python_side():
    f = EventFilter(comm=parse_comm(["py*"]), uids={0, 1000})
    ev = {"type": "process.exec", "uid": 1000, "comm": "python3"}
    assert f.match(ev)
    assert not f.match({**ev, "comm": "bash"})
    assert not f.match({**ev, "uid": 7})


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
