"""Diagnostic sessions (`bpfwatch diagnose`), `bpfwatch capabilities`, and the
MCP server driven by the official SDK's own client in a real subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BPFWATCH, ROOT


def bw(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BPFWATCH, *args], capture_output=True, text=True, input=stdin, timeout=timeout,
                          cwd=ROOT)


@pytest.mark.kernel
def test_request_with_two_commands_and_three_capabilities(tmp_path: Path, no_leaks):
    marker = tmp_path / "written-by-command"
    req = {
        "reasoning": "is the web config readable, and what touches it?",
        "commands": [
            {"id": "read", "command": "cat /etc/hostname", "description": "read a config file"},
            {"id": "write", "command": f"echo hello > {marker}; ls /nonexistent-bw", "description": "write one"},
        ],
        "ebpf_capabilities": ["process_trace", "file_trace", "syscall_trace"],
        "ebpf_duration_seconds": 3,
        "ebpf_filters": {},
    }
    (tmp_path / "req.json").write_text(json.dumps(req))
    state = tmp_path / "state"
    proc = bw("diagnose", "--request", str(tmp_path / "req.json"), "--state-dir", str(state))
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    cmds = {c["id"]: c for c in res["commands"]}
    assert cmds["read"]["exit_code"] == 0 and cmds["read"]["stdout"] == Path("/etc/hostname").read_text()
    assert cmds["write"]["exit_code"] == 2 and "nonexistent-bw" in cmds["write"]["stderr"]
    assert marker.read_text() == "hello\n"
    ebpf = res["ebpf"]
    assert set(ebpf) == {"process_trace", "file_trace", "syscall_trace"}
    assert all(v["available"] for v in ebpf.values())
    execs = [e for e in ebpf["process_trace"]["events"] if e["event_type"] == "process.exec"]
    cat = [e for e in execs if e["process_name"] == "cat"]
    assert cat and cat[0]["data"]["argv"] == ["cat", "/etc/hostname"]
    assert set(cat[0]) == {"timestamp", "event_type", "process_id", "process_name", "user_id", "data"}
    opens = [e for e in ebpf["file_trace"]["events"] if e["event_type"] == "file.open"]
    assert any(e["process_name"] == "cat" and e["data"]["path"] == "/etc/hostname" for e in opens)
    assert any(e["data"]["path"] == str(marker) and "O_CREAT" in e["data"]["flags"] for e in opens)
    counts = [e for e in ebpf["syscall_trace"]["events"] if e["process_name"] == "cat"]
    by_name = {e["data"]["syscall"]: e["data"] for e in counts}
    assert by_name["read"]["count"] >= 1 and by_name["openat"]["count"] >= 1
    summary = res["summary"]
    assert summary["lost_events"]["total"] == 0 and res["errors"] == []
    assert {"top_processes", "top_syscalls", "files", "counts", "top_executables"} <= set(summary)
    ops = [sum(v for k, v in f.items() if k not in ("path", "read_bytes", "write_bytes")) for f in summary["files"]]
    assert ops and ops == sorted(ops, reverse=True)
    assert summary["counts"]["process_trace"]["by_type"]["process.exec"] >= 2
    # the session is kept, private, and listed
    folder = Path(res["session_dir"])
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert {"request.json", "result.json", "events.jsonl", "command-read.stdout"} <= set(os.listdir(folder))
    listed = json.loads(bw("diagnose", "list", "--json", "--state-dir", str(state)).stdout)["sessions"]
    assert [s["session"] for s in listed] == [res["session"]]
    shown = json.loads(bw("diagnose", "show", res["session"], "--state-dir", str(state)).stdout)
    assert shown["session"] == res["session"] and shown["commands"] == res["commands"]


@pytest.mark.kernel
def test_events_are_capped_with_counts_of_what_was_left_out(tmp_path: Path, no_leaks):
    req = {"commands": [{"id": "many", "command": "for i in 1 2 3 4 5 6 7 8 9 10; do /bin/true; done",
                         "description": "ten execs"}],
           "ebpf_capabilities": ["process_trace"], "ebpf_duration_seconds": 2, "max_events_per_capability": 5}
    proc = bw("diagnose", "--request", "-", "--state-dir", str(tmp_path), stdin=json.dumps(req))
    res = json.loads(proc.stdout)
    pt = res["ebpf"]["process_trace"]
    assert len(pt["events"]) == 5 and pt["event_count"] >= 30
    assert pt["events_omitted"] == pt["event_count"] - 5


@pytest.mark.parametrize("request_text,field,phrase", [
    ('{"ebpf_capabilities": ["gpu_trace"]}', "ebpf_capabilities[0]", "unknown capability 'gpu_trace'"),
    ('{"ebpf_capabilities": ["process_trace"], "ebpf_duration_seconds": 301}', "ebpf_duration_seconds",
     "301 is out of range (1 to 300)"),
    ('{"ebpf_capabilities": ["process_trace"], "ebpf_filters": {"pid": "abc"}}', "ebpf_filters.pid",
     "'abc' is not a process id"),
    ('{"ebpf_capabilities": ["process_trace"], "ebpf_filters": {"container": "x"}}', "ebpf_filters.container",
     "unknown filter"),
    ('{"commands": [{"id": "a"}]}', "commands[0].command", "expected a non-empty string"),
    ('{"ebpf_capabilities": ["process_trace"], "surprise": 1}', "surprise", "unknown field"),
    ('{"ebpf_capabilities": [', "$", "malformed JSON"),
])
def test_bad_requests_get_a_json_error_naming_the_field(tmp_path: Path, request_text, field, phrase):
    proc = bw("diagnose", "--request", "-", "--state-dir", str(tmp_path), stdin=request_text)
    assert proc.returncode == 2
    err = json.loads(proc.stdout)["error"]
    assert err["field"] == field and phrase in err["message"], err
    assert not list(tmp_path.iterdir())  # nothing was started


def test_commands_can_be_refused(tmp_path: Path):
    proc = bw("diagnose", "--request", "-", "--no-commands", "--state-dir", str(tmp_path),
              stdin='{"commands": [{"id": "x", "command": "id", "description": "who"}]}')
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["error"] == {
        "field": "commands", "message": "running commands is disabled here (--no-commands): send traces only"}


def test_max_duration_is_configurable(tmp_path: Path):
    proc = bw("diagnose", "--request", "-", "--max-duration", "10", "--state-dir", str(tmp_path),
              stdin='{"ebpf_capabilities": ["performance"], "ebpf_duration_seconds": 11}')
    assert json.loads(proc.stdout)["error"]["message"] == "11 is out of range (1 to 10)"


def test_expired_sessions_are_removed(tmp_path: Path):
    old = tmp_path / "20200101T000000Z-aaaaaa"
    old.mkdir(mode=0o700)
    (old / "request.json").write_text("{}")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    young = tmp_path / "20990101T000000Z-bbbbbb"
    young.mkdir(mode=0o700)
    out = bw("diagnose", "clean", "--state-dir", str(tmp_path))
    assert out.stdout.strip() == "removed 1 session(s)"
    assert not old.exists() and young.exists()
    assert bw("diagnose", "clean", "--all", "--state-dir", str(tmp_path)).stdout.strip() == "removed 1 session(s)"
    missing = bw("diagnose", "show", "nope", "--state-dir", str(tmp_path))
    assert missing.returncode == 2 and "no session nope" in missing.stderr


def test_performance_and_commands_without_ebpf(tmp_path: Path):
    req = {"commands": [{"id": "spin", "command": f"{sys.executable} -c 'sum(range(30_000_000))'",
                         "description": "burn CPU"}],
           "ebpf_capabilities": ["performance"], "ebpf_duration_seconds": 2}
    res = json.loads(bw("diagnose", "--request", "-", "--state-dir", str(tmp_path), stdin=json.dumps(req)).stdout)
    perf = res["ebpf"]["performance"]
    assert perf["available"] and perf["event_count"] >= 2
    assert res["summary"]["top_cpu"] and "host" in res["summary"]
    assert any(e["event_type"] == "perf.sample" and "cpu_percent" in e["data"] for e in perf["events"])


@pytest.mark.kernel
def test_capabilities_json_and_prompt():
    doc = json.loads(bw("capabilities", "--json").stdout)
    caps = doc["capabilities"]
    assert set(caps) == {"process_trace", "network_trace", "file_trace", "syscall_trace", "performance",
                         "security_event"}
    assert all(c["available"] for c in caps.values())
    prompt = bw("capabilities", "--prompt").stdout
    assert prompt.startswith("eBPF diagnostics available on this host")
    assert "- security_event:" in prompt and '"ebpf_duration_seconds": N (1-300)' in prompt
    assert len(prompt) < 3000


def test_capabilities_explain_what_is_missing_without_privilege():
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                           *BPFWATCH, "capabilities", "--json"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "HOME": "/tmp"}, timeout=60)
    caps = json.loads(proc.stdout)["capabilities"]
    assert caps["performance"]["available"]
    assert not caps["process_trace"]["available"]
    assert "CAP_BPF" in caps["process_trace"]["reason"]


@pytest.mark.kernel
def test_mcp_round_trip_with_the_sdk_client(tmp_path: Path, no_leaks):
    from mcp import Client, StdioServerParameters

    async def session() -> dict:
        params = StdioServerParameters(command=sys.executable,
                                       args=["-m", "bpfwatch.cli.main", "mcp", "--state-dir", str(tmp_path)],
                                       cwd=str(ROOT))
        out: dict = {}
        async with Client(params) as client:
            out["tools"] = sorted(t.name for t in (await client.list_tools()).tools)
            out["caps"] = (await client.call_tool("capabilities", {})).structured_content
            out["doctor"] = (await client.call_tool("doctor", {})).structured_content
            spawner = subprocess.Popen(["sh", "-c", "sleep 1; /bin/echo bw-mcp-probe >/dev/null"])
            out["trace"] = (await client.call_tool("trace", {"capabilities": ["process_trace"],
                                                             "duration_seconds": 3})).structured_content
            spawner.wait()
            out["diagnose"] = (await client.call_tool("diagnose", {"request": {
                "commands": [{"id": "u", "command": "uname -r", "description": "kernel"}],
                "ebpf_capabilities": ["syscall_trace"], "ebpf_duration_seconds": 1,
                "ebpf_filters": {"comm": "uname"}}})).structured_content
            out["bad"] = (await client.call_tool("diagnose", {"request": {"ebpf_duration_seconds": 5}})
                          ).structured_content
            out["profile"] = (await client.call_tool("profile_command", {"command": ["/bin/ls", "/"]})
                              ).structured_content
        return out

    out = asyncio.run(asyncio.wait_for(session(), 180))
    assert out["tools"] == ["capabilities", "diagnose", "doctor", "profile_command", "trace"]
    assert out["caps"]["capabilities"]["process_trace"]["available"]
    assert out["doctor"]["can_run"] is True
    execs = [e for e in out["trace"]["ebpf"]["process_trace"]["events"] if e["event_type"] == "process.exec"]
    assert any(e["data"].get("argv") == ["/bin/echo", "bw-mcp-probe"] for e in execs)
    d = out["diagnose"]
    assert d["commands"][0]["stdout"].strip() == os.uname().release
    assert any(e["data"]["syscall"] == "uname" for e in d["ebpf"]["syscall_trace"]["events"])
    assert out["bad"]["error"]["field"] == "ebpf_capabilities"
    assert out["profile"]["exit_code"] == 0 and out["profile"]["command"][0] == "/bin/ls"

