"""The command line under generated hostile input (hypothesis): every command
answers a bad value with one line on stderr and exit 1 or 2, never a
traceback, never a hang; a trace stuck on a full pipe still stops on SIGINT;
an unprivileged user gets one-line errors too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from conftest import BPFWATCH, ROOT, wait_programs

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
EXAMPLES = int(os.environ.get("BPFWATCH_FUZZ_EXAMPLES", "40"))
TIMEOUT = 20.0
# no shrinking: each example is a process; the failing argv is printed as it is
PHASES = [Phase.explicit, Phase.reuse, Phase.generate]


def check(argv: list[str], stdin: bytes = b"", timeout: float = TIMEOUT, user: int | None = None) -> int:
    """Runs bpfwatch; fails on a traceback, an internal error, a hang or an
    error that is not one line. Returns the exit status."""
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user is not None else []
    try:
        p = subprocess.run([*prefix, *BPFWATCH, *argv], input=stdin, capture_output=True, timeout=timeout, env=ENV,
                           cwd="/")
    except subprocess.TimeoutExpired:
        raise AssertionError(f"hang: bpfwatch {argv!r} ran longer than {timeout} s") from None
    err = p.stderr.decode(errors="replace")
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
    if p.returncode not in (0, 1, 2):
        raise AssertionError(f"bpfwatch {argv!r}: exit {p.returncode}: {err}")
    if p.returncode and p.stdout.startswith(b'{"error"'):
        assert "error" in json.loads(p.stdout), (argv, p.stdout)  # diagnose answers in JSON
    elif p.returncode:
        lines = [ln for ln in err.splitlines() if ln.startswith("bpfwatch:") and "warning" not in ln]
        assert lines, (argv, err)
    return p.returncode


NUMBERS = st.sampled_from(["0", "-1", "1e400", "nan", "inf", "-inf", "99999999999999999999999", "0x10", "1.5",
                           "²", "", " ", "1e-400", "4294967296", "65536", "18446744073709551616"])
PATHS = st.sampled_from(["/nonexistent/x", "/tmp", "/dev/full", "/dev/zero", "/proc/nope", "/etc/passwd",
                         "relative", "", "/proc/self/mem"])
TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"), max_size=20)


@st.composite
def trace_argv(draw) -> list[str]:
    opts = draw(st.lists(st.sampled_from([
        ("--pid", NUMBERS), ("--follow", NUMBERS), ("--uid", NUMBERS | TEXT), ("--comm", TEXT),
        ("--dns-port", NUMBERS), ("--udp-idle", NUMBERS), ("--max-delay", NUMBERS), ("--ring-size", NUMBERS),
        ("--wakeup-bytes", NUMBERS), ("--allow", TEXT), ("--deny", TEXT), ("--path", PATHS | TEXT),
        ("-o", PATHS), ("--rules", PATHS), ("--format", TEXT), ("-t", TEXT)]), min_size=1, max_size=3))
    argv = ["trace", "-d", "0.3"]
    for name, values in opts:
        argv += [name, draw(values)]
    return argv


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow], phases=PHASES,
          report_multiple_bugs=True)
@given(argv=trace_argv())
def test_trace_options(argv) -> None:
    check(argv)


@st.composite
def offline_argv(draw) -> list[str]:
    """Commands that load nothing: capture, config, report, diagnose, map, run's option checks."""
    which = draw(st.sampled_from(["capture", "config", "report", "diagnose", "map", "run"]))
    if which == "capture":
        argv = ["capture", draw(st.sampled_from(["read", "info", "verify"])), draw(PATHS | TEXT)]
        for opt in draw(st.lists(st.sampled_from(["--since", "--until", "--pid", "-u", "--allow", "-t"]),
                                 max_size=2)):
            argv += [opt, draw(NUMBERS | TEXT)]
        return argv
    if which == "config":
        return ["config", "check", draw(PATHS | TEXT)]
    if which == "report":
        return ["report", draw(PATHS), "-o", draw(PATHS | st.just("/tmp/bw-fuzz.png"))]
    if which == "diagnose":
        return ["diagnose", "--state-dir", draw(PATHS), "--max-duration", draw(NUMBERS), "--request", "-"]
    if which == "map":
        return ["map", draw(st.sampled_from(["get", "set", "show", "dump"])), draw(NUMBERS | PATHS | TEXT),
                draw(NUMBERS | TEXT), draw(NUMBERS | TEXT)][: draw(st.integers(2, 5))]
    return ["run", draw(st.sampled_from(["-d", "--top", "--interval", "--max-procs", "--kill-after", "--timeline",
                                         "--json"])), draw(NUMBERS | PATHS), "--", "/bin/true"]


@settings(max_examples=EXAMPLES * 2, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=PHASES, report_multiple_bugs=True)
@given(argv=offline_argv(), stdin=st.binary(max_size=64))
def test_offline_commands(argv, stdin) -> None:
    check(argv, stdin)


def test_trace_stuck_on_a_full_pipe_stops_on_sigint() -> None:
    """Nobody reads trace's stdout: once the pipe is full every write blocks,
    and one SIGINT still ends it, with every program released."""
    r, w = os.pipe()
    p = subprocess.Popen([*BPFWATCH, "trace", "--format", "json", "process.*", "file.open"], stdout=w,
                         stderr=subprocess.PIPE, env=ENV)
    os.close(w)
    try:
        assert p.stderr is not None
        p.stderr.readline()  # ready
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # events until the 64 KiB pipe is full
            subprocess.run(["/bin/ls", "/usr/lib"], stdout=subprocess.DEVNULL, check=False)
            if "pipe" in Path(f"/proc/{p.pid}/wchan").read_text():
                break
        else:
            pytest.fail("the pipe never filled")
        p.send_signal(signal.SIGINT)
        p.wait(timeout=10)
        assert p.returncode == 130
        assert "Traceback" not in p.stderr.read().decode()
    finally:
        if p.poll() is None:
            p.kill()
        os.close(r)
    assert wait_programs("bw_", loaded=False)


@pytest.fixture
def root_only(tmp_path: Path) -> Path:
    from bpfwatch.capture.writer import CaptureWriter
    from test_capture import capture_config, events

    d = tmp_path / "cap"
    w = CaptureWriter(capture_config(d)).open()
    w.write(events(5))
    w.close()
    tmp_path.chmod(0o755)
    return d


def test_unprivileged_user_gets_one_line_errors(root_only: Path, tmp_path: Path) -> None:
    nobody = 65534
    for argv in (["capture", "read", str(root_only)], ["capture", "info", str(root_only)],
                 ["capture", "verify", str(root_only)], ["trace", "-d", "0.2"], ["map", "list"]):
        assert check(argv, user=nobody) in (1, 2), argv
    body = json.dumps({"commands": [{"id": "a", "command": "true"}]}).encode()
    p = subprocess.run(["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups", *BPFWATCH,
                        "diagnose", "--state-dir", str(root_only), "--request", "-"], input=body,
                       capture_output=True, timeout=30, env={**ENV, "HOME": "/nonexistent"}, cwd="/")
    assert p.returncode in (1, 2) and b"Traceback" not in p.stderr
    assert "error" in json.loads(p.stdout)
    assert sys.executable


def test_trace_stopped_while_its_reader_stopped_reading_exits() -> None:
    """SIGTERM to a trace whose reader holds the pipe but reads nothing (a
    benchmark waiting for it to exit): the last events do not hold the exit."""
    p = subprocess.Popen([*BPFWATCH, "trace", "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=ENV)
    try:
        assert p.stderr is not None
        p.stderr.readline()
        for _ in range(300):
            subprocess.run(["/bin/ls", "/usr/lib"], stdout=subprocess.DEVNULL, check=False)
        p.terminate()
        p.wait(timeout=10)
        assert p.returncode in (0, 130)
    finally:
        if p.poll() is None:
            p.kill()
    assert wait_programs("bw_", loaded=False)
