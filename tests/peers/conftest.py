"""The differential suite: real workloads under bpfwatch and, in the same run,
under the peer tool that is authoritative for a field (docs/fidelity.md).
`make test-peers` runs all of it with the larger workloads; `make test` runs
the fast subset. Each comparison adds a row to the agreement table printed at
the end (and written to build/peers.json)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import REQUIRE_BPF, ROOT

FULL = os.environ.get("BPFWATCH_PEERS_FULL") == "1"
TABLE: list[dict[str, object]] = []


def record(peer: str, field: str, workload: str, agree: int, differ: int, accepted: int = 0) -> None:
    """One row of the agreement table: items compared, how many agreed, how
    many differed for a reason listed in docs/fidelity.md."""
    TABLE.append({"peer": peer, "field": field, "workload": workload, "agree": agree, "differ": differ,
                  "accepted": accepted})


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TABLE:
        return
    tr = terminalreporter
    tr.section("bpfwatch against its peers")
    tr.write_line(f"{'peer':<12} {'field':<22} {'workload':<16} {'agree':>7} {'accepted':>8} {'differ':>7}")
    for r in TABLE:
        tr.write_line(f"{r['peer']:<12} {r['field']:<22} {r['workload']:<16} {r['agree']:>7} "
                      f"{r['accepted']:>8} {r['differ']:>7}")
    out = ROOT / "build" / "peers.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(TABLE, indent=1) + "\n")


def ensure_tracefs() -> None:
    """libbpf-tools attach tp/ tracepoints: they need tracefs."""
    if not os.path.exists("/sys/kernel/tracing/events"):
        subprocess.run(["mount", "-t", "tracefs", "tracefs", "/sys/kernel/tracing"], check=False)


def need(tool: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}") else None)
    if path is None:
        msg = f"{tool} is not installed (scripts/setup-system.sh --test installs the peers)"
        if REQUIRE_BPF:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@contextmanager
def peer(tool: str, *args: str) -> Iterator[list[str]]:
    """Runs a libbpf-tools program until the block ends; yields the list its
    output lines land in (filled at the end). It is attached once its header
    is out (line-buffered through stdbuf)."""
    ensure_tracefs()
    exe = need(tool)
    lines: list[str] = []
    proc = subprocess.Popen(["stdbuf", "-oL", exe, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="surrogateescape")
    try:
        header = proc.stdout.readline()  # type: ignore[union-attr]
        if not header:
            raise AssertionError(f"{tool} did not start: {proc.stderr.read()}")  # type: ignore[union-attr]
        # read while it runs: a full pipe would stall it and make it drop events
        reader = threading.Thread(target=lambda: lines.extend(ln.rstrip("\n") for ln in proc.stdout))
        reader.start()
        yield lines
        time.sleep(0.3)  # its last records
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        if "reader" in locals():
            reader.join()
        # a peer that lost events says so on stderr: its side of the table is short
        lost = [ln for ln in err.splitlines() if "lost" in ln.lower()]
        assert not lost, f"{tool}: {lost[:3]}"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
