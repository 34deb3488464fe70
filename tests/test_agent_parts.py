"""The agent's parts without the kernel: redaction, key lines, the polling
source against real processes and sockets, the metrics exposition."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from bpfwatch.agent.config import parse
from bpfwatch.agent.metrics import AgentCollector
from bpfwatch.agent.poll import PollSource
from bpfwatch.agent.redact import Redactor
from bpfwatch.agent.toml_lines import key_lines, line_of
from bpfwatch.events.types import expand_types
from bpfwatch.filters import Filter
from bpfwatch.schema import event_schema


def test_redaction() -> None:
    r = Redactor(parse("").redaction)
    argv = ["mysql", "--password", "hunter2", "-u", "root", "--token=abc", "PASSWORD=xyz",
            "https://bob:s3cret@example.com/x", "api_key:K1", "--passwordless", "plain"]
    assert r.argv(argv) == ["mysql", "--password", "[REDACTED]", "-u", "root", "--token=[REDACTED]",
                            "PASSWORD=[REDACTED]", "https://bob:[REDACTED]@example.com/x", "api_key:[REDACTED]",
                            "--passwordless", "plain"]
    ev = [{"type": "process.exec", "argv": ["x", "--secret", "s"]}, {"type": "file.open", "path": "/p"}]
    r(ev)
    assert ev[0]["argv"] == ["x", "--secret", "[REDACTED]"] and r.redacted == 2
    off = Redactor(parse("[redaction]\nenabled = false\n").redaction)
    ev = [{"type": "process.exec", "argv": ["--password", "p"]}]
    off(ev)
    assert ev[0]["argv"] == ["--password", "p"]
    custom = Redactor(parse('[redaction]\npatterns = ["sk-[A-Za-z0-9]+"]\nflags = []\nsecret_options = false\n'
                            'replacement = "***"\n')
                      .redaction)
    assert custom.argv(["curl", "-H", "Authorization: Bearer sk-abc123", "--password", "x"]) == \
        ["curl", "-H", "Authorization: Bearer ***", "--password", "x"]


def test_key_lines() -> None:
    text = '# c\n[a.b]\nx = 1\n"q.k" = 2\n[[arr]]\ny = """\nz = 3\n"""\n[c]\nd.e = 4\n'
    lines = key_lines(text)
    assert lines[("a", "b")] == 2 and lines[("a", "b", "x")] == 3 and lines[("a", "b", "q.k")] == 4
    assert lines[("arr", "y")] == 6 and ("arr", "z") not in lines  # inside a multi-line string
    assert lines[("c", "d", "e")] == 10
    assert line_of(lines, ("a", "b", "nope")) == 2


def test_poll_source_sees_processes_forks_and_connections() -> None:
    types = expand_types(None)
    src = PollSource(types, Filter(), interval=0.1).start()
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    code = ("import os, socket, time\n"
            f"c = socket.create_connection(('127.0.0.1', {port}))\n"
            "time.sleep(0.4); c.close(); time.sleep(0.3)\n"
            "if os.fork() == 0:\n    time.sleep(0.4); os._exit(0)\n"
            "os.wait()\n")
    child = subprocess.Popen([sys.executable, "-c", code])
    conn, _ = srv.accept()
    events = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        events += src.poll()
        if child.poll() is not None and any(e["type"] == "process.exit" and e["pid"] == child.pid for e in events):
            break
    conn.close()
    srv.close()
    src.close()
    mine = [e for e in events if e["pid"] == child.pid]
    kinds = [e["type"] for e in mine]
    assert kinds[0] == "process.exec" and kinds[-1] == "process.exit"
    assert "process.fork" in kinds and "network.connect" in kinds and "network.close" in kinds
    fork = next(e for e in mine if e["type"] == "process.fork")
    assert any(e["type"] == "process.exit" and e["pid"] == fork["child_pid"] for e in events)
    connect = next(e for e in mine if e["type"] == "network.connect")
    assert (connect["remote_port"], connect["protocol"], connect["latency_ns"]) == (port, "tcp", None)
    close = next(e for e in mine if e["type"] == "network.close")
    assert close["closed_by"] == "local" and close["bytes_sent"] is None and close["bytes_exact"] is False
    validator = jsonschema.Draft202012Validator(event_schema())
    for e in mine:
        assert e["source"] == "poll"
        assert not list(validator.iter_errors(e)), e


def test_metrics_exposition() -> None:
    snap = {"uptime": 1.5, "events": {("process.exec", "process"): 7}, "lost": {"process": 2},
            "modes": {"process": "ebpf", "network": "poll"}, "rings": {"events": (1024, 4096)},
            "programs": [{"name": "bw_proc_exec", "sensor": "process", "run_cnt": 9, "run_time_ns": 4500}],
            "bpf_stats": True, "process_cache": 12,
            "capture": {"events_written": 7, "bytes_written": 700, "rotations": 1, "segments": 1, "disk_bytes": 90,
                        "write_errors": 0, "compress_errors": 0, "held": 0, "dropped": 0, "failing": False},
            "reloads": {"ok": 1}, "redacted": 3}
    reg = CollectorRegistry()
    reg.register(AgentCollector(lambda: snap))  # type: ignore[arg-type]
    text = generate_latest(reg).decode()
    for line in ('bpfwatch_events_total{sensor="process",type="process.exec"} 7.0',
                 'bpfwatch_events_lost_total{sensor="process"} 2.0',
                 'bpfwatch_sensor_mode{mode="poll",sensor="network"} 1.0',
                 'bpfwatch_ring_buffer_fill_ratio{ring="events"} 0.25',
                 'bpfwatch_bpf_program_runs_total{program="bw_proc_exec",sensor="process"} 9.0',
                 'bpfwatch_bpf_program_run_seconds_total{program="bw_proc_exec",sensor="process"} 4.5e-06',
                 "bpfwatch_capture_rotations_total 1.0", "bpfwatch_process_cache_entries 12.0",
                 'bpfwatch_config_reloads_total{result="ok"} 1.0', "bpfwatch_redacted_events_total 3.0"):
        assert line in text, line


REDACT_CASES = [
    (["x", "--PASSWORD", "s3"], ["x", "--PASSWORD", "[REDACTED]"]),
    (["x", "--db-password", "s3"], ["x", "--db-password", "[REDACTED]"]),
    (["x", "--Api-Key=s3"], ["x", "--Api-Key=[REDACTED]"]),
    (["mysql", "-p", "s3"], ["mysql", "-p", "[REDACTED]"]),
    (["/usr/bin/mysql", "-ps3", "db"], ["/usr/bin/mysql", "-p[REDACTED]", "db"]),
    (["sshpass", "-p", "s3", "ssh", "h"], ["sshpass", "-p", "[REDACTED]", "ssh", "h"]),
    (["curl", "-H", "Authorization: Bearer s3.x"], ["curl", "-H", "Authorization: Bearer [REDACTED]"]),
    (["sh", "-c", "mysql --password s3 -e 'x'; curl -H 'Authorization: Bearer s3' https://u:s3@h/"],
     ["sh", "-c", "mysql --password [REDACTED] -e 'x'; curl -H 'Authorization: Bearer [REDACTED]' "
      "https://u:[REDACTED]@h/"]),
    # what is not a secret stays as it was
    (["ssh", "-p", "22", "h"], ["ssh", "-p", "22", "h"]),
    (["mkdir", "-p", "/tmp/a"], ["mkdir", "-p", "/tmp/a"]),
    (["x", "--password-file", "/run/s"], ["x", "--password-file", "/run/s"]),
    (["git", "commit", "-m", "rotate the token"], ["git", "commit", "-m", "rotate the token"]),
]


@pytest.mark.parametrize("argv, expected", REDACT_CASES)
def test_redaction_closes_the_known_gaps(argv, expected) -> None:
    from bpfwatch.agent.redact import Redactor

    assert Redactor().argv(argv) == expected


_WORDS = ["mysql", "/usr/bin/mysql", "sshpass", "ssh", "sh", "-c", "-p", "-ps3", "-p22", "--password",
          "--password=abc", "--db-password", "--DB-Password=x", "--passwordless", "--password-file", "--api-key",
          "--access-key=1", "--auth-token", "token=abc", "PASSWORD=xyz", "https://bob:s3@example.com/x",
          "Authorization: Bearer abc", "bearer abc", "mysql --password x", "plain", "-", "--", "=", "-O2",
          "x.c", "-o", "rotate the token"]


class _Forgetful(dict):  # a memo that never remembers
    def __setitem__(self, key: object, value: object) -> None:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_WORDS) | st.text(max_size=12), max_size=8), max_size=12),
       st.sampled_from([2, 4096]))
def test_redaction_remembers_only_what_changes_nothing(argvs, memo_size) -> None:
    """A long-lived Redactor (its memo of clean words and judged options
    filled, and emptied when full) redacts every command line exactly as one
    that remembers nothing, and counts the same; no word it changed is kept."""
    import bpfwatch.agent.redact as redact

    cfg = parse("").redaction
    keep, redact.MEMO_SIZE = redact.MEMO_SIZE, memo_size
    try:
        live, bare = Redactor(cfg), Redactor(cfg)
        bare._clean, bare._flag_is_secret = _Forgetful(), _Forgetful()
        for argv in argvs:
            assert live.argv(argv) == bare.argv(argv)
            assert all(live.scrub(w) == w for w in live._clean)
        assert live.redacted == bare.redacted
        assert len(live._clean) <= memo_size + 1
    finally:
        redact.MEMO_SIZE = keep


def test_diagnose_redacts_by_default(tmp_path) -> None:
    from bpfwatch.diagnose import Settings, run

    cmd = {"id": "c", "command": "echo token=s3cr3t; echo --password hunter2"}
    res = run({"commands": [cmd]}, Settings(state_dir=str(tmp_path)))
    assert "s3cr3t" not in res["commands"][0]["stdout"] and "hunter2" not in res["commands"][0]["stdout"]
    res = run({"commands": [cmd]}, Settings(state_dir=str(tmp_path), redact=False))
    assert "s3cr3t" in res["commands"][0]["stdout"]
