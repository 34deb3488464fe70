"""`bpfwatch trace` and `doctor` as a user runs them: real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jsonschema
import pytest

from bpfwatch.schema import event_schema
from conftest import BPFWATCH, IN_VM, wait_programs

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def run_cli(*args, timeout=60, **kw):
    return subprocess.run([*BPFWATCH, *args], capture_output=True, text=True, timeout=timeout, env=ENV, **kw)


def one_line_error(proc):
    """Exit status non-zero, a single stderr line, no traceback."""
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("bpfwatch: ")
    return lines[0]


@pytest.mark.parametrize("args, needle", [
    (["trace", "--pid", "abc"], "'abc' is not a process id"),
    (["trace", "--pid", "-3"], "-3 is out of range (1 to 4194304)"),
    (["trace", "--pid", "4194304"], "no process with pid 4194304"),
    (["trace", "--follow", "0"], "0 is out of range (1 to 4194304)"),
    (["trace", "--comm", "re:(unclosed"], "bad regex"),
    (["trace", "--comm", "a-name-longer-than-15"], "at most 15 bytes"),
    (["trace", "--uid", "no-such-user-here"], "no user named"),
    (["trace", "bogus.event"], "unknown event type 'bogus.event'"),
    (["trace", "--ring-size", "3000"], "power of two"),
    (["trace", "--ring-size", "lots"], "is not a size"),
    (["trace", "--ring-size", "64K", "--wakeup-bytes", "1M"], "more than a quarter of the ring buffer"),
    (["trace", "--pid", "99999999999999999999"], "out of range (1 to 4194304)"),
    (["trace", "--uid", "99999999999999999999"], "out of range (0 to 4294967294)"),
    (["trace", "--udp-idle", "nan"], "not a finite number of seconds"),
    (["trace", "-d", "inf"], "not a finite number of seconds"),
    (["capture", "read", "/tmp", "--since", "inf"], "is not a time"),
    (["trace", "--duration", "-1"], "must be positive, not -1"),
    (["trace", "--format", "xml"], "invalid choice"),
    (["trace", "--no-such-option"], "unrecognized arguments"),
    (["trace", "--allow", "prot=443"], "unknown key 'prot'"),
    (["trace", "--deny", "addr=10.0.0.0/33"], "not an address or CIDR"),
    (["trace", "--allow", "port"], "expected KEY=VALUE"),
    (["trace", "--path", "relative"], "must be an absolute path"),
    (["trace", "--deny", "type=process.*", "--deny", "type=file.*,network.*,dns.*"], "no event type"),
    (["no-such-command"], "invalid choice"),
])
def test_bad_input_one_line(args, needle):
    proc = run_cli(*args)
    line = one_line_error(proc)
    assert needle in line
    assert proc.returncode == 2


@pytest.mark.kernel
def test_trace_json_to_file_validates_against_schema(tmp_path, no_leaks):
    out = tmp_path / "events.jsonl"
    trace = subprocess.Popen([*BPFWATCH, "trace", "--follow", str(os.getpid()), "-o", str(out),
                              "--duration", "3"], stderr=subprocess.PIPE, text=True, env=ENV)
    ready = trace.stderr.readline()  # loaded: nothing from now on is missed, however slow the start
    assert ready.startswith("bpfwatch: ready"), ready
    subprocess.run([sys.executable, "-c", "import os; os.fork() or os._exit(4)"], check=True)
    subprocess.run(["/bin/echo", "hello", "wörld"], check=True, stdout=subprocess.DEVNULL)
    _, err = trace.communicate(timeout=30)
    assert trace.returncode == 0, err
    events = [json.loads(line) for line in out.read_text().splitlines()]
    validator = jsonschema.Draft202012Validator(event_schema())
    for ev in events:
        validator.validate(ev)
    kinds = {e["type"] for e in events}
    assert {"process.exec", "process.fork", "process.exit"} <= kinds
    assert any(e["type"] == "process.exec" and e["argv"] == ["/bin/echo", "hello", "wörld"] for e in events)
    assert any(e["type"] == "process.exit" and e["exit_code"] == 4 for e in events)
    assert f"bpfwatch: {len(events)} events, 0 lost" in err
    # trace is a child of the followed process, yet none of its own activity shows
    assert not [e for e in events if e["pid"] == trace.pid and e["type"] != "process.exec"]


@pytest.mark.kernel
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_ends_cleanly_with_summary(sig, no_leaks):
    trace = subprocess.Popen([*BPFWATCH, "trace", "--format", "json"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=ENV)
    first = trace.stderr.readline()
    assert first.startswith("bpfwatch: ready"), first
    subprocess.run(["/bin/true"], check=True)  # once ready, nothing is missed
    trace.send_signal(sig)
    out, err = trace.communicate(timeout=20)
    assert trace.returncode == 0, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("bpfwatch: ") and " lost" in err
    assert any(json.loads(line)["comm"] == "true" for line in out.splitlines())


@pytest.mark.kernel
def test_sigkill_leaves_nothing_loaded():
    trace = subprocess.Popen([*BPFWATCH, "trace", "--format", "json"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=ENV)
    assert wait_programs("bw_proc", loaded=True)
    trace.kill()
    trace.wait()
    assert wait_programs("bw_proc", loaded=False, timeout=5)


@pytest.mark.kernel
def test_reader_going_away_is_not_an_error(no_leaks):
    # `bpfwatch trace | head -1`: stdout closes under us
    trace = subprocess.Popen([*BPFWATCH, "trace", "--format", "json", "--follow", str(os.getpid())],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    assert trace.stderr.readline().startswith(b"bpfwatch: ready")
    trace.stdout.close()
    for _ in range(5):
        subprocess.run(["/bin/true"], check=True)
    time.sleep(0.5)
    trace.send_signal(signal.SIGTERM)
    _, err = trace.communicate(timeout=20)
    assert b"Traceback" not in err
    assert trace.returncode == 0


@pytest.mark.kernel
def test_exit_with_parent(tmp_path, no_leaks):
    """The parent that started `trace --exit-with-parent` is killed: trace
    stops cleanly, keeps what it wrote, and releases its programs."""
    out = tmp_path / "ev.jsonl"
    pidfile = tmp_path / "pid"
    launcher = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen({BPFWATCH!r} + ['trace', '--exit-with-parent', '-o', {str(out)!r}],"
        f" stderr=open({str(tmp_path / 'err')!r}, 'w'))\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", launcher], env=ENV, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "ready" not in _read(tmp_path / "err"):
        time.sleep(0.05)
    child_pid = int(pidfile.read_text())
    subprocess.run(["/bin/true"], check=True)
    time.sleep(0.3)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child_pid):
        time.sleep(0.05)
    assert not _alive(child_pid)
    assert out.stat().st_size > 0  # what it captured before is kept


def _read(path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """Running (an exited child of a dead parent is a zombie until reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_missing_libbpf_is_one_line():
    env = {**ENV, "BPFWATCH_LIBBPF": "/nonexistent/libbpf.so.1"}
    proc = subprocess.run([*BPFWATCH, "trace"], capture_output=True, text=True, timeout=60, env=env)
    line = one_line_error(proc)
    assert proc.returncode == 2
    assert "libbpf cannot be loaded" in line and "apt-get install libbpf1" in line


def _setpriv() -> str:
    path = shutil.which("setpriv")
    if not path:
        pytest.skip("setpriv (util-linux) is not installed")
    return path


def test_missing_capabilities_named_with_remedies():
    drop = "-bpf,-perfmon,-sys_admin"
    proc = subprocess.run([_setpriv(), f"--inh-caps={drop}", f"--bounding-set={drop}", *BPFWATCH, "trace"],
                          capture_output=True, text=True, timeout=60, env=ENV)
    line = one_line_error(proc)
    assert proc.returncode == 2
    assert "CAP_BPF" in line and "CAP_PERFMON" in line
    assert "sudo" in line and "setcap" in line and "AmbientCapabilities" in line


@pytest.mark.smoke_vm
@pytest.mark.kernel
def test_doctor_json_reports_this_kernel():
    proc = run_cli("doctor", "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["can_run"] is True
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["program tp_btf"]["status"] == "ok"
    assert checks["program raw_tp"]["status"] == "ok"
    assert checks["map ringbuf"]["status"] == "ok"
    assert checks["btf"]["status"] == "ok"
    for tp in ("sched_process_exec", "task_newtask", "sched_process_exit", "sys_exit", "inet_sock_set_state"):
        assert checks[f"tracepoint {tp}"]["status"] == "ok"
    for c in doc["checks"]:
        assert "ulimit -l'?" not in c["detail"]  # libbpf's hint is wrong on this kernel
        if c["status"] != "ok" and c["name"].startswith("program "):
            assert c["detail"] and c["remedy"], c
    from bpfwatch.doctor import kernel

    if kernel.config_value("CONFIG_KPROBES") == "n":
        assert "CONFIG_KPROBES" in checks["program kprobe"]["detail"]
    if IN_VM:  # a distribution kernel (make test-kernel): kprobes, trampolines and the BPF LSM all work
        for kind in ("kprobe", "fentry", "fexit", "lsm"):
            assert checks[f"program {kind}"]["status"] == "ok", checks[f"program {kind}"]
    assert wait_programs("bw_probe", loaded=False, timeout=5)


def test_doctor_without_privileges_says_it_cannot_run():
    drop = "-bpf,-perfmon,-sys_admin"
    proc = subprocess.run([_setpriv(), f"--inh-caps={drop}", f"--bounding-set={drop}", *BPFWATCH, "doctor",
                           "--json"], capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["can_run"] is False
    (priv,) = [c for c in doc["checks"] if c["name"] == "privileges"]
    assert priv["status"] == "fail" and "CAP_BPF" in priv["detail"]
