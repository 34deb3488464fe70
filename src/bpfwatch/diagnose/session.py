"""A diagnostic session: the requested traces and commands run in parallel for
the requested time, stored under the state directory (one 0700 folder per
session, removed after the retention time), answered as one bounded JSON
document. The Python API behind `bpfwatch diagnose` and the MCP server:

    from bpfwatch.diagnose import run
    result = run({"ebpf_capabilities": ["process_trace"], "ebpf_duration_seconds": 5})
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bpfwatch.agent.redact import Redactor
from bpfwatch.diagnose import capabilities as C
from bpfwatch.diagnose.commands import CommandRunner
from bpfwatch.diagnose.perf import PerfSampler
from bpfwatch.diagnose.request import MAX_DURATION, Request, RequestError, parse
from bpfwatch.diagnose.summary import Collector
from bpfwatch.errors import BpfwatchError, UsageError
from bpfwatch.events.text import dumps

DEFAULT_RETENTION = 3600.0
CAP_TYPES = {"process_trace": ["process.*"], "network_trace": ["network.connect", "network.accept",
                                                                 "network.close", "network.udp", "dns.query",
                                                                 "dns.response"],
             "file_trace": ["file.*"], "security_event": ["security.*"]}


def default_state_dir() -> str:
    env = os.environ.get("BPFWATCH_STATE_DIR")
    if env:
        return os.path.join(env, "diagnose")
    if os.geteuid() == 0:
        return "/var/lib/bpfwatch/diagnose"
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "bpfwatch", "diagnose")


@dataclass
class Settings:
    state_dir: str = ""
    retention: float = DEFAULT_RETENTION
    max_duration: int = MAX_DURATION
    allow_commands: bool = True  # False: requests may trace, not run shell commands
    redact: bool = True          # secrets in argv and command output are replaced (results go to models)

    def __post_init__(self) -> None:
        self.state_dir = self.state_dir or default_state_dir()


def _new_dir(settings: Settings) -> tuple[str, Path]:
    root = Path(settings.state_dir)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    sid = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)
    path = root / sid
    path.mkdir(mode=0o700)
    os.chmod(path, 0o700)  # whatever the umask
    return sid, path


def _write_json(path: Path, doc: Any) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))


def _monitor_for(req: Request) -> Any:
    from bpfwatch.monitor import Monitor

    types = [t for cap in req.capabilities for t in CAP_TYPES.get(cap, [])]
    count = "syscall_trace" in req.capabilities
    if not types and not count:
        return None
    f = req.filters
    follow = [int(f["pid"])] if "pid" in f else None
    try:
        return Monitor(types=types or ["process.exec"], follow=follow, comm=f.get("comm"),
                       paths=[f["path"]] if "path" in f and "file_trace" in req.capabilities else None,
                       syscall_counts=count, include_self=False)
    except UsageError as e:
        if "no process with pid" in str(e):
            raise RequestError("ebpf_filters.pid", f"no process with pid {f['pid']}") from None
        raise RequestError("ebpf_filters", str(e)) from None


def run(doc: dict[str, Any] | Request, settings: Settings | None = None) -> dict[str, Any]:
    """Runs one diagnostic request; raises RequestError for a bad request."""
    settings = settings or Settings()
    req = doc if isinstance(doc, Request) else parse(doc, settings.max_duration)
    if req.commands and not settings.allow_commands:
        raise RequestError("commands", "running commands is disabled here (--no-commands): send traces only")
    status = C.probe() if any(c != "performance" for c in req.capabilities) else {}
    ebpf_caps = [c for c in req.capabilities if c != "performance"]
    unavailable = {c: status[c]["reason"] for c in ebpf_caps if not status[c]["available"]}
    errors: list[str] = []
    collector = Collector(req.capabilities, req.max_events)
    redactor = Redactor() if settings.redact else None
    monitor = None
    if ebpf_caps and not unavailable:
        monitor = _monitor_for(req)  # a filter it rejects is a bad request: no session folder for it
    clean(settings)
    sid, folder = _new_dir(settings)
    _write_json(folder / "request.json", req.as_dict())
    started_wall = time.time()
    commands: CommandRunner | None = None
    try:
        if monitor is not None:
            try:
                monitor.start()
            except BpfwatchError as e:
                unavailable = {c: str(e) for c in ebpf_caps}
                monitor = None
        perf = None
        if "performance" in req.capabilities:
            perf = PerfSampler(1.0 if req.duration >= 2 else req.duration / 2,
                               pid=int(req.filters["pid"]) if "pid" in req.filters else None,
                               comm=req.filters.get("comm"), exclude={os.getpid()})
            perf.start()
        commands = CommandRunner(req, folder, sid)
        commands.start()
        deadline = time.monotonic() + req.duration if req.capabilities else time.monotonic()
        with open(os.open(folder / "events.jsonl", os.O_WRONLY | os.O_CREAT, 0o600), "wb") as log:
            while time.monotonic() < deadline:
                if monitor is not None:
                    _take(monitor.poll(min(0.2, max(deadline - time.monotonic(), 0))), collector, log, redactor)
                else:
                    time.sleep(min(0.2, max(deadline - time.monotonic(), 0)))
            syscalls: list[dict[str, Any]] = []
            lost: dict[str, int] = {}
            if monitor is not None:
                monitor.stop()
                _take(monitor.poll(0), collector, log, redactor)
                syscalls = monitor.syscall_counts()
                lost = monitor.lost()
                if sum(lost.values()):
                    errors.append(f"{sum(lost.values())} events were lost (the ring buffer was full): narrow the "
                                  "filters or the capabilities")
                dropped = monitor.syscall_counts_dropped()
                if dropped:
                    errors.append(f"{dropped} syscalls were not counted: more than 65536 process/syscall pairs")
                end_ns = time.time_ns()
                uid_of = _uid_lookup()
                _take([{"ts": end_ns, "type": "syscall.count", "pid": r["pid"], "comm": r["comm"],
                        "uid": uid_of(r["pid"]), "data": {k: r[k] for k in ("syscall", "category", "count", "errors",
                                                                         "total_ns", "max_ns")}}
                       for r in syscalls], collector, log)
            if perf is not None:
                _take(perf.stop(), collector, log)
        cmd_results = commands.join()
        if redactor is not None:
            for r in cmd_results:
                r["stdout"], r["stderr"] = redactor.text(r["stdout"]), redactor.text(r["stderr"])
        errors.extend(commands.notes)
    finally:
        if commands is not None:
            commands.kill_all()  # on any way out, nothing a command started outlives the session
        if monitor is not None:
            monitor.close()
    ebpf = collector.events()
    for c in req.capabilities:
        ebpf[c] = {"available": c not in unavailable, "reason": unavailable.get(c), **ebpf[c]}
    result = {
        "session": sid, "session_dir": str(folder), "started_at": started_wall, "ended_at": time.time(),
        "duration_s": req.duration, "request": req.as_dict(),
        "host": {"hostname": socket.gethostname(), "kernel": os.uname().release},
        "commands": cmd_results, "ebpf": ebpf, "summary": collector.summary(syscalls, lost), "errors": errors,
        "expires_at": started_wall + settings.retention,
    }
    _write_json(folder / "result.json", result)
    return result


def _uid_lookup() -> Any:
    """uid of a pid from /proc (-1 once it is gone), each pid read once; one
    per session, since pids are reused."""
    @functools.cache
    def uid_of(pid: int) -> int:
        try:
            return os.stat(f"/proc/{pid}").st_uid
        except OSError:
            return -1
    return uid_of


def _take(events: list[dict[str, Any]], collector: Collector, log: Any, redactor: Redactor | None = None) -> None:
    if redactor is not None:
        redactor(events)
    for ev in events:
        if collector.add(ev):
            log.write(dumps(ev, option=orjson.OPT_APPEND_NEWLINE))


# -- stored sessions --------------------------------------------------------------

def sessions(settings: Settings | None = None) -> list[dict[str, Any]]:
    settings = settings or Settings()
    root = Path(settings.state_dir)
    out = []
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        if not d.is_dir():
            continue
        created = d.stat().st_mtime
        info: dict[str, Any] = {"session": d.name, "dir": str(d), "created_at": created,
                                "expires_at": created + settings.retention, "complete": (d / "result.json").exists()}
        req = d / "request.json"
        if req.exists():
            try:
                r = orjson.loads(req.read_bytes())
                info["capabilities"] = r.get("ebpf_capabilities")
                info["commands"] = len(r.get("commands") or [])
            except orjson.JSONDecodeError:
                pass
        out.append(info)
    return out


def show(session: str, settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or Settings()
    if "/" in session or session.startswith("."):
        raise UsageError(f"'{session}' is not a session id")
    path = Path(settings.state_dir) / session / "result.json"
    if not path.exists():
        raise UsageError(f"no session {session} in {settings.state_dir} (see 'bpfwatch diagnose list')")
    return orjson.loads(path.read_bytes())


def clean(settings: Settings | None = None, everything: bool = False) -> list[str]:
    """Removes sessions older than the retention time (or all of them)."""
    settings = settings or Settings()
    now = time.time()
    removed = []
    for s in sessions(settings):
        if everything or s["expires_at"] <= now:
            shutil.rmtree(s["dir"], ignore_errors=True)
            removed.append(s["session"])
    return removed
