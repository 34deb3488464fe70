"""The differential suite: real workloads under bpfwatch and, in the same run,
under the peer tool that is authoritative for a field (docs/fidelity.md).
`make test-peers` runs all of it with the larger workloads; `make test` runs
the fast subset. Each comparison adds a row to the agreement table printed at
the end (and written to build/peers.json)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
    tr.write_line(f"{'peer':<12} {'field':<36} {'workload':<16} {'agree':>7} {'accepted':>8} {'differ':>7}")
    for r in TABLE:
        tr.write_line(f"{r['peer']:<12} {r['field']:<36} {r['workload']:<16} {r['agree']:>7} "
                      f"{r['accepted']:>8} {r['differ']:>7}")
    out = ROOT / "build" / "peers.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(TABLE, indent=1) + "\n")


def ensure_tracefs() -> None:
    """libbpf-tools attach tp/ tracepoints: they need tracefs. Debian's build
    also asks debugfs (/sys/kernel/debug/tracing) whether a tracepoint
    exists; without it opensnoop silently leaves open(2) untraced."""
    if not os.path.exists("/sys/kernel/tracing/events"):
        subprocess.run(["mount", "-t", "tracefs", "tracefs", "/sys/kernel/tracing"], check=False)
    if not os.path.exists("/sys/kernel/debug/tracing/events"):
        subprocess.run(["mount", "-t", "debugfs", "debugfs", "/sys/kernel/debug"], check=False)


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
    errors: list[str] = []
    proc = subprocess.Popen(["stdbuf", "-oL", exe, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="surrogateescape")
    # read both pipes while it runs: a full pipe would stall it and make it
    # drop events; one reader each, so nothing is read twice or lost
    readers = [threading.Thread(target=lambda: errors.extend(proc.stderr))]  # type: ignore[arg-type]
    readers[0].start()
    try:
        header = proc.stdout.readline()  # type: ignore[union-attr]
        if not header:
            proc.wait(timeout=20)
            readers[0].join()
            raise AssertionError(f"{tool} did not start: {''.join(errors)}")
        readers.append(threading.Thread(target=lambda: lines.extend(ln.rstrip("\n") for ln in proc.stdout)))
        readers[1].start()
        yield lines
        time.sleep(0.3)  # its last records
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        for r in readers:
            r.join()
    # a peer that lost events says so on stderr: its side of the table is short
    lost = [ln for ln in errors if "lost" in ln.lower()]
    assert not lost, f"{tool}: {lost[:3]}"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


# ---- auditd -----------------------------------------------------------------------------------------

AUDITD_CONF = """local_events = yes
write_logs = yes
log_file = {log}
log_format = RAW
flush = INCREMENTAL_ASYNC
freq = 20
max_log_file = 200
num_logs = 2
max_log_file_action = IGNORE
space_left = 2
space_left_action = IGNORE
admin_space_left = 1
admin_space_left_action = IGNORE
disk_full_action = IGNORE
disk_error_action = IGNORE
name_format = NONE
"""


def _audit_status() -> dict[str, int]:
    out = subprocess.run([need("auditctl"), "-s"], capture_output=True, text=True, check=True).stdout
    return {k: int(v) for k, v in (ln.split()[:2] for ln in out.splitlines() if len(ln.split()) >= 2)
            if v.lstrip("-").isdigit()}


def _audit_value(v: str) -> bytes | None:
    """A field as auditd writes it: "quoted", hex when it holds odd bytes, (null)."""
    if v.startswith('"'):
        return v[1:-1].encode("utf-8", "surrogateescape")
    if v == "(null)":
        return None
    try:
        return bytes.fromhex(v)
    except ValueError:
        return v.encode()


_AUDIT_LINE = re.compile(r"type=(\w+) msg=audit\([\d.]+:(\d+)\): (.*)")
_AUDIT_KV = re.compile(r'([\w\[\]]+)=("[^"]*"|\S+)')


def parse_audit_execs(text: str, key: str) -> list[dict[str, Any]]:
    """The successful execs of rule `key` in a raw audit log: pid, ppid,
    exe, cwd, argv (bytes), serial."""
    by_serial: dict[int, dict[str, dict[str, str]]] = {}
    for line in text.splitlines():
        m = _AUDIT_LINE.match(line.split("\x1d", 1)[0])  # ENRICHED logs add fields after 0x1d
        if m is None:
            continue
        kind, serial, rest = m.group(1), int(m.group(2)), m.group(3)
        by_serial.setdefault(serial, {})[kind] = dict(_AUDIT_KV.findall(rest))
    execs = []
    for serial, recs in sorted(by_serial.items()):
        sc, ex = recs.get("SYSCALL"), recs.get("EXECVE")
        if sc is None or ex is None or _audit_value(sc.get("key", "")) != key.encode() or sc.get("success") != "yes":
            continue
        argv = []
        for i in range(int(ex["argc"])):
            if f"a{i}" in ex:
                argv.append(_audit_value(ex[f"a{i}"]) or b"")
            else:  # a long argument comes in pieces: a3_len=... a3[0]=... a3[1]=...
                pieces, j = [], 0
                while f"a{i}[{j}]" in ex:
                    pieces.append(_audit_value(ex[f"a{i}[{j}]"]) or b"")
                    j += 1
                argv.append(b"".join(pieces))
        cwd = recs.get("CWD", {}).get("cwd")
        execs.append({"serial": serial, "pid": int(sc["pid"]), "ppid": int(sc["ppid"]),
                      "exe": _audit_value(sc["exe"]), "cwd": _audit_value(cwd) if cwd else None, "argv": argv})
    return execs


@contextmanager
def audit_execs(workdir: Path) -> Iterator[list[dict[str, Any]]]:
    """Records every successful execve/execveat with the audit subsystem
    until the block ends; yields the list the execs land in (filled at the
    end, see parse_audit_execs). With no audit daemon running (PID 1 is not
    systemd here) one is started by hand with a private config and log, and
    the kernel's audit settings are put back afterwards."""
    auditctl = need("auditctl")
    before = _audit_status()
    key = f"bwpeer{os.getpid()}"
    rule = ["always,exit", "-F", "arch=b64", "-S", "execve,execveat", "-F", "success=1", "-k", key]
    daemon, log = None, workdir / "audit" / "audit.log"
    if not before.get("pid"):
        conf_dir = log.parent
        conf_dir.mkdir(mode=0o700)
        conf = conf_dir / "auditd.conf"
        conf.write_text(AUDITD_CONF.format(log=log))
        conf.chmod(0o600)
        daemon = subprocess.Popen([need("auditd"), "-n", "-c", str(conf_dir)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while not _audit_status().get("pid"):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"auditd did not start: {daemon.stderr.read() if daemon.stderr else ''}")
            time.sleep(0.05)
    execs: list[dict[str, Any]] = []
    try:
        subprocess.run([auditctl, "-e", "1"], check=True, capture_output=True)
        subprocess.run([auditctl, "-b", "16384"], check=True, capture_output=True)
        # first in the list: the first rule that matches names the record (-k)
        subprocess.run([auditctl, "-A", *rule], check=True, capture_output=True)
        lost = _audit_status().get("lost", 0)
        yield execs
        time.sleep(0.3)
        assert _audit_status().get("lost", 0) == lost, "the audit subsystem lost records: its side is short"
    finally:
        subprocess.run([auditctl, "-d", *rule], check=False, capture_output=True)
        subprocess.run([auditctl, "-b", str(before.get("backlog_limit", 64))], check=False, capture_output=True)
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=20)
            text = log.read_text(errors="surrogateescape") if log.exists() else ""
        else:
            text = subprocess.run([need("ausearch"), "-k", key, "--raw"], capture_output=True, text=True,
                                  errors="surrogateescape").stdout
        subprocess.run([auditctl, "-e", str(before.get("enabled", 0))], check=False, capture_output=True)
    execs.extend(parse_audit_execs(text, key))
