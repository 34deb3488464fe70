"""bpfwatch top: the model's arithmetic, `--once --json` against a controlled
workload, and the full-screen view in a real terminal (tmux at 80x24 and
200x50): marked processes appear with their counts, sorting changes the
order, the drill-down shows their events, and the terminal is left as it was."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bpfwatch.top.keys import split_keys
from bpfwatch.top.model import TopModel
from bpfwatch.top.screen import layout, rate_text
from conftest import BPFWATCH, ROOT
from terminal import Terminal

# A marked process: names itself, then every 50 ms opens a file `opens` times,
# fails to open a missing one `fails` times and writes `write` bytes.
WORKLOAD = r"""
import ctypes, os, sys, time
name, opens, fails, write, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)
open(path, "w").close()
print("ready", flush=True)
blob = b"x" * max(write, 1)
while True:
    for _ in range(opens):
        os.close(os.open(path, os.O_RDONLY))
    for _ in range(fails):
        try:
            os.open(path + ".missing", os.O_RDONLY)
        except FileNotFoundError:
            pass
    if write:
        fd = os.open(path + ".out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, blob)
        os.close(fd)
    time.sleep(0.05)
"""


class Marked:
    def __init__(self, tmp: Path, name: str, opens: int, fails: int, write: int) -> None:
        self.name = name
        self.path = str(tmp / f"{name}.data")
        self.proc = subprocess.Popen([sys.executable, "-c", WORKLOAD, name, str(opens), str(fails), str(write),
                                      self.path], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"
        self.pid = self.proc.pid

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def marked(tmp_path: Path) -> Any:
    started: list[Marked] = []

    def start(name: str, opens: int, fails: int = 0, write: int = 0) -> Marked:
        m = Marked(tmp_path, name, opens, fails, write)
        started.append(m)
        return m

    yield start
    for m in started:
        m.stop()


# -- pieces that need no kernel ------------------------------------------------------------

def test_rate_text_fits_six_columns() -> None:
    for v in (0, 0.4, 7.5, 99, 999, 1000, 9999, 10_500, 999_999, 1e6, 5e8, 1e12, 1e15):
        for is_bytes in (False, True):
            assert len(rate_text(v, is_bytes)) <= 6, (v, is_bytes)
    assert rate_text(1536, True) == "1.5K" and rate_text(1500, False) == "1.5k"


@pytest.mark.parametrize("width", [80, 100, 132, 200])
@pytest.mark.parametrize("group", ["process", "command", "cgroup"])
@pytest.mark.parametrize("syscalls", [False, True])
def test_layout_fills_the_width_exactly(width: int, group: str, syscalls: bool) -> None:
    lay = layout(group, width, syscalls)
    used = lay.key_w + (lay.user_w + 1 if lay.user_w else 0) + (lay.comm_w + 1 if lay.comm_w else 0) \
        + len(lay.columns) * 7
    assert used <= width
    assert {"opens", "read", "write", "execs", "fails"} <= set(lay.columns)
    assert ("syscalls" in lay.columns) == syscalls


def test_keys_from_terminal_bytes() -> None:
    assert split_keys(b"q\x1b[A\x1b[B\r/x\x7f\x1b\x1b[15~<") == ["q", "up", "down", "enter", "/", "x", "backspace",
                                                              "esc", "<"]


def test_model_rates_from_events_and_live_totals() -> None:
    m = TopModel("process")
    m.set_live({10: {"read": 1000}})
    m.refresh()
    m.rows.clear()  # the baseline: what was there before is not a rate
    ev = {"pid": 10, "comm": "a", "uid": 0, "user": "root", "ppid": 1, "cgroup_id": 5, "exe": "/bin/a", "ts": 1}
    m.add([{**ev, "type": "file.open", "ret": 3}, {**ev, "type": "file.open", "ret": -2},
           {**ev, "type": "process.exec", "pid": 11, "ppid": 10}])
    m.set_live({10: {"read": 5000}})  # 4000 more read on a file still open
    m.add([{**ev, "type": "file.io", "read_bytes": 6000, "write_bytes": 0}])  # it closed at 6000
    m.set_live({})
    time.sleep(0.01)
    m.refresh()
    row = m.rows[10]
    dt_rates = row.rates
    scale = dt_rates["opens"] / 2  # rates are per second: compare counts through one scale
    assert dt_rates["fails"] == pytest.approx(scale)
    assert dt_rates["execs"] == pytest.approx(scale)  # the exec is the parent's (10) doing
    assert dt_rates["read"] == pytest.approx(5000 * scale)  # 6000 closed + 0 live - 1000 seen before
    m.regroup("command")
    m.add([{**ev, "type": "file.open", "ret": 3}, {**ev, "pid": 12, "type": "file.open", "ret": 3}])
    m.refresh()
    assert m.rows["a"].pids == {10, 12}


# -- against the kernel --------------------------------------------------------------------

def top_once(*args: str, timeout: float = 60) -> dict[str, Any]:
    out = subprocess.run([*BPFWATCH, "top", "--once", "--json", *args], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.kernel
def test_once_json_counts_a_marked_process(marked: Any) -> None:
    m = marked("bwtoponce", opens=6, fails=3, write=32768)
    doc = top_once("-i", "2", "--filter", "comm=bwtoponce")
    assert doc["group"] == "process" and doc["lost"] == 0 and doc["interval_s"] >= 2
    rows = {r["pid"]: r for r in doc["rows"]}
    assert set(rows) == {m.pid}, doc
    r = rows[m.pid]
    assert r["comm"] == "bwtoponce" and r["user"] == "root"
    # per 50 ms tick: 6 + 3 + 1 opens (3 of them failing), one 32 KiB write: compare the
    # ratios, which do not depend on how fast a busy machine runs the loop
    ticks = r["failed_calls_per_s"] / 3
    assert ticks > 2, r
    assert r["opens_per_s"] == pytest.approx(10 * ticks, rel=0.15)
    assert r["write_bytes_per_s"] == pytest.approx(32768 * ticks, rel=0.15)
    assert r["execs_per_s"] == 0 and r["connections_per_s"] == 0


@pytest.mark.kernel
def test_once_json_groups_by_command_and_counts_syscalls(marked: Any) -> None:
    a, b = marked("bwtopgrp", opens=2), marked("bwtopgrp", opens=2)
    doc = top_once("-i", "1.5", "-g", "command", "--syscalls", "--filter", "comm=bwtopgrp")
    assert doc["syscalls_counted"] is True
    (row,) = doc["rows"]
    assert row["comm"] == "bwtopgrp" and set(row["pids"]) == {a.pid, b.pid}
    # every open is an openat and a close, plus the sleep: at least 2 syscalls per open
    assert row["syscalls_per_s"] >= 2 * row["opens_per_s"] > 0


@pytest.mark.kernel
def test_once_table_and_errors(marked: Any) -> None:
    marked("bwtoptext", opens=4)
    out = subprocess.run([*BPFWATCH, "top", "--once", "-i", "1", "--filter", "comm=bwtoptext"], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    head, *rows = out.stdout.splitlines()[1:]
    assert head.split()[:2] == ["PID", "USER"] and "OPEN/s" in head
    assert any("bwtoptext" in r for r in rows)
    for args, needle in ((["top"], "needs a terminal"), (["top", "--json"], "--json needs --once"),
                         (["top", "--once", "--sort", "nope"], "--sort nope"),
                         (["top", "--once", "--filter", "comm"], "expected KEY=VALUE")):
        bad = subprocess.run([*BPFWATCH, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert bad.returncode != 0 and needle in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1


def _row(screen: str, name: str) -> list[str] | None:
    for line in screen.splitlines():
        if name in line:
            return line.split()
    return None


def _order(screen: str, *names: str) -> list[str]:
    found = [(screen.index(n), n) for n in names if n in screen]
    return [n for _, n in sorted(found)]


@pytest.mark.kernel
def test_top_in_a_terminal_80x24(marked: Any) -> None:
    a = marked("bwtopA", opens=20)                  # many opens, nothing written
    b = marked("bwtopB", opens=1, write=256 << 10)  # few opens, 5 MiB/s written
    with Terminal([*BPFWATCH, "top"], 80, 24, cwd=ROOT) as term:
        term.wait(lambda s: "OPEN/s" in s, what="the table")
        screen = term.screen()
        assert all(len(line) <= 80 for line in screen.splitlines())
        assert "q quit" in screen.splitlines()[-1]
        term.type("/")
        term.type("comm=bwtop*")
        term.keys("Enter")
        screen = term.wait(lambda s: "bwtopA" in s and "bwtopB" in s and "filter: comm=bwtop*" in s,
                           what="both marked processes")
        # sorted by opens: A first; A's OPEN/s (third column at 80: PID COMM EXEC/s OPEN/s) is busy
        assert _order(screen, "bwtopA", "bwtopB") == ["bwtopA", "bwtopB"]
        row = _row(screen, "bwtopA")
        assert row is not None and row[0] == str(a.pid)
        assert float(row[3].rstrip("k")) > 0
        term.keys(">", ">")  # opens -> read -> write
        screen = term.wait(lambda s: "sort WR/s" in s and _order(s, "bwtopA", "bwtopB") == ["bwtopB", "bwtopA"],
                           what="the rows sorted by bytes written")
        term.keys("Home", "Enter")  # the first row: B
        screen = term.wait(lambda s: f"PID {b.pid}" in s and "OPEN" in s and "/bwtopB.data" in s,
                           what="B's drill-down with its opens")
        assert "parents:" in screen and f"bwtopB({b.pid})" in screen
        term.keys("Escape")
        term.wait(lambda s: "OPEN/s" in s, what="the table again")
        term.keys("q")
        screen = term.wait(lambda s: "EXITED" in s, what="top's exit")
        assert "EXITED 0" in screen and "OPEN/s" not in screen  # the alternate screen is gone
        assert "\nicanon" in "\n" + screen.split("EXITED 0", 1)[1].strip()  # the terminal's mode is back


@pytest.mark.kernel
def test_top_in_a_terminal_200x50_groups_and_ctrl_c(marked: Any) -> None:
    m = marked("bwtopwide", opens=5, fails=5)
    exe = os.path.realpath(sys.executable)
    with Terminal([*BPFWATCH, "top", "--filter", "comm=bwtopwide"], 200, 50, cwd=ROOT) as term:
        screen = term.wait(lambda s: _row(s, str(m.pid)) is not None, what="the marked process")
        head = next(line for line in screen.splitlines() if line.split()[:1] == ["PID"])
        assert "USER" in head and "COMM  EXE" in head and "DNS/s" in head
        assert exe in screen and str(m.pid) in screen
        colored = term.screen(escapes=True)
        assert re.search(r"\x1b\[[0-9;]*3[1-7]m", colored), "failures are shown in red"
        term.keys("g")
        screen = term.wait(lambda s: "by command" in s and "COMMAND" in s, what="the command grouping")
        term.keys("g")
        term.wait(lambda s: "by cgroup" in s and "CGROUP" in s, what="the cgroup grouping")
        term.keys("p")
        term.wait(lambda s: "PAUSED" in s, what="the pause mark")
        term.keys("C-c")
        screen = term.wait(lambda s: "EXITED" in s, what="top's exit on Ctrl-C")
        assert "EXITED 0" in screen and "\nicanon" in "\n" + screen.split("EXITED 0", 1)[1].strip()


@pytest.mark.kernel
def test_top_follows_no_color(marked: Any) -> None:
    marked("bwtopnc", opens=5, fails=5)
    with Terminal([*BPFWATCH, "top", "--filter", "comm=bwtopnc"], 100, 24, env={"NO_COLOR": "1"},
                  cwd=ROOT) as term:
        term.wait(lambda s: re.search(r"\d+ +root +bwtopnc.* [1-9]", s) is not None,
                  what="the marked process with counts")
        time.sleep(1.2)
        colored = term.screen(escapes=True)
        assert not re.search(r"\x1b\[[0-9;]*(3[0-7]|38;|9[0-7])m", colored), colored
        term.keys("q")
        term.wait(lambda s: "EXITED 0" in s, what="top's exit")
