"""diagnose and MCP callers as adversaries: requests that are malformed in
every way a generator finds (answered with a JSON error, never a traceback,
and leaving no session behind), commands that detach, outlive their timeout
or print gigabytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfwatch.diagnose import RequestError, Settings, parse_text, run
from conftest import BPFWATCH

pytestmark = pytest.mark.kernel


def _procs_with(marker: str) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if marker in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                    out.append(int(pid))
            except OSError:
                pass
    return out


def test_command_that_detaches_dies_at_its_timeout(tmp_path: Path) -> None:
    started = time.monotonic()
    res = run({"commands": [{"id": "d", "command": "setsid sleep 25.123 & sleep 100.123", "timeout_seconds": 2}]},
              Settings(state_dir=str(tmp_path)))
    assert time.monotonic() - started < 8
    (cmd,) = res["commands"]
    assert cmd["timed_out"] and cmd["exit_code"] is None
    assert not _procs_with("sleep 25.123") and not _procs_with("sleep 100.123")


def test_what_a_command_leaves_running_ends_with_the_session(tmp_path: Path) -> None:
    res = run({"commands": [{"id": "bg", "command": "setsid sleep 30.456 >/dev/null 2>&1 & echo started"}]},
              Settings(state_dir=str(tmp_path)))
    (cmd,) = res["commands"]
    assert cmd["exit_code"] == 0 and cmd["stdout"] == "started\n"
    assert not _procs_with("sleep 30.456")
    assert any("left running were killed" in e for e in res["errors"]), res["errors"]


def test_a_command_printing_a_lot_is_bounded(tmp_path: Path) -> None:
    body = json.dumps({"commands": [{"id": "big", "command": "head -c 400000000 /dev/zero"}]})
    # in a fresh process, so its children's peak RSS is diagnose's alone
    probe = ("import resource, subprocess, sys\n"
             "p = subprocess.run(sys.argv[1:], input=sys.stdin.buffer.read(), capture_output=True)\n"
             "sys.stdout.buffer.write(p.stdout)\n"
             "sys.stderr.write(f'{p.returncode} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n')\n")
    p = subprocess.run([sys.executable, "-c", probe, *BPFWATCH, "diagnose", "--state-dir", str(tmp_path),
                        "--request", "-"], input=body, capture_output=True, text=True, timeout=120)
    code, peak_kib = map(int, p.stderr.split()[-2:])
    assert code == 0, p.stderr
    (cmd,) = json.loads(p.stdout)["commands"]
    assert cmd["stdout_bytes"] == 400_000_000 and cmd["stdout_truncated"] and len(cmd["stdout"]) == 16 * 1024
    assert peak_kib < 150 * 1024, f"diagnose used {peak_kib} KiB"
    (kept,) = list(tmp_path.glob("*/command-big.stdout"))
    assert kept.stat().st_size == 16 << 20


HOSTILE = [
    ("deep nesting", b'{"reasoning": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "$"),
    ("not UTF-8", b'{"reasoning": "\xff\xfe", "commands": []}', "$"),
    ("UTF-16", '{"ebpf_capabilities": ["process_trace"]}'.encode("utf-16"), "$"),
    ("lone surrogate", b'{"reasoning": "\\ud800", "ebpf_capabilities": ["process_trace"]}', "reasoning"),
    ("5000 digits", b'{"ebpf_duration_seconds": ' + b"9" * 5000 + b"}", "$"),
    ("superscript pid", '{"ebpf_capabilities": ["process_trace"], "ebpf_filters": {"pid": "²"}}'.encode(),
     "ebpf_filters.pid"),
    ("NUL in a command", b'{"commands": [{"id": "a", "command": "echo a\\u0000b"}]}', "commands[0].command"),
    ("long id", ('{"commands": [{"id": "' + "x" * 300 + '", "command": "touch /tmp/bw-long-id-ran"}]}').encode(),
     "commands[0].id"),
    ("slash in id", b'{"commands": [{"id": "a/b", "command": "true"}]}', "commands[0].id"),
    ("bad comm regex", b'{"ebpf_capabilities": ["process_trace"], "ebpf_filters": {"comm": "re:("}}',
     "ebpf_filters"),
    ("nan duration", b'{"ebpf_capabilities": ["process_trace"], "ebpf_duration_seconds": NaN}',
     "ebpf_duration_seconds"),
]


@pytest.mark.parametrize("what, body, field", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_request_is_a_json_error_and_leaves_nothing(tmp_path: Path, what: str, body: bytes,
                                                             field: str) -> None:
    state = tmp_path / "state"
    p = subprocess.run([*BPFWATCH, "diagnose", "--state-dir", str(state), "--request", "-"], input=body,
                       capture_output=True, timeout=60)
    assert p.returncode == 2 and b"Traceback" not in p.stderr, p.stderr
    err = json.loads(p.stdout)["error"]
    assert err["field"] == field, err
    assert not state.exists() or not any(state.iterdir()), "a rejected request left a session folder"
    assert not Path("/tmp/bw-long-id-ran").exists()


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                   max_size=4), max_leaves=20)
_fields = st.fixed_dictionaries({}, optional={
    "reasoning": _json, "commands": st.lists(st.fixed_dictionaries({}, optional={
        "id": _json | st.text(max_size=80), "command": _json | st.just("true"), "description": _json,
        "timeout_seconds": _json}), max_size=3) | _json,
    "ebpf_capabilities": st.lists(st.sampled_from(["process_trace", "bogus", ""]) | _json, max_size=3) | _json,
    "ebpf_duration_seconds": _json, "ebpf_filters": st.dictionaries(
        st.sampled_from(["pid", "comm", "path", "x"]), _json | st.text(max_size=20), max_size=3) | _json,
    "max_events_per_capability": _json, "extra": _json})


@settings(max_examples=int(os.environ.get("BPFWATCH_FUZZ_EXAMPLES", "300")), deadline=None)
@given(doc=_fields, mangle=st.sampled_from(["json", "bytes", "text"]), noise=st.binary(max_size=40))
def test_generated_requests_parse_or_fail_cleanly(doc, mangle, noise) -> None:
    """Whatever the caller sends, parsing ends in a Request or a RequestError
    naming a field; nothing else escapes."""
    raw = json.dumps(doc).encode()
    if mangle == "bytes":
        raw = raw[: len(raw) // 2] + noise + raw[len(raw) // 2:]
    try:
        req = parse_text(raw if mangle != "text" else raw.decode())
    except RequestError as e:
        assert e.field and isinstance(e.message, str)
        json.dumps(e.as_json())
        return
    json.dumps(req.as_dict())  # whatever was accepted can be stored and answered
    assert all(c.id.isascii() and "/" not in c.id for c in req.commands)


def test_generated_requests_through_the_cli(tmp_path: Path) -> None:
    """A sample of malformed requests through the real command: one JSON
    line on stdout, exit 2, no traceback."""
    bodies = [b"", b"null", b"[]", b"{", b'{"commands": 5}', b'{"ebpf_capabilities": [1]}', b"\x00" * 10,
              b'{"ebpf_filters": {"path": "rel"}, "ebpf_capabilities": ["file_trace"]}']
    for body in bodies:
        p = subprocess.run([*BPFWATCH, "diagnose", "--state-dir", str(tmp_path), "--request", "-"], input=body,
                           capture_output=True, timeout=60)
        assert p.returncode == 2 and b"Traceback" not in p.stderr, (body, p.stderr)
        assert "error" in json.loads(p.stdout)
    assert sys.executable
