"""`bpfwatch mcp`: the Model Context Protocol over stdio (the official `mcp`
SDK), so that an AI agent can ask this host what it can trace, check it,
trace it for a while, profile a command, or run a full diagnostic request.

Every tool answers with JSON; bad input gets {"error": {"field", "message"}}.
Nothing but the protocol is written to stdout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from typing import Any

from bpfwatch.events.text import loads

INSTRUCTIONS = (
    "bpfwatch sees what processes on this Linux host really do, from the kernel (eBPF). Call "
    "`capabilities` first: it says what can be traced here and how to ask. `trace` records events for a "
    "few seconds; `diagnose` also runs shell commands in parallel; `profile_command` profiles one command "
    "(syscalls, CPU, I/O, network, verdict); `doctor` explains what does not work and why."
)


def build_server(state_dir: str = "", max_duration: int = 300, allow_commands: bool = True,
                 fleet: Any = None, fleet_prefix: str = "bpfwatch") -> Any:
    from mcp.server.mcpserver import MCPServer

    from bpfwatch import __version__
    from bpfwatch.diagnose import RequestError, Settings, run
    from bpfwatch.diagnose.capabilities import probe, prompt_text
    from bpfwatch.diagnose.request import parse as parse_request

    settings = Settings(state_dir, max_duration=max_duration, allow_commands=allow_commands)
    server = MCPServer("bpfwatch", instructions=INSTRUCTIONS, version=__version__)

    @server.tool()
    def capabilities() -> dict[str, Any]:
        """What this host can trace right now (each capability: available, reason, description, event types,
        filters), and a ready-made text describing them."""
        status = probe()
        return {"capabilities": status, "max_duration_seconds": max_duration,
                "prompt": prompt_text(status, max_duration)}

    @server.tool()
    def doctor() -> dict[str, Any]:
        """Can bpfwatch run here: kernel, BTF, privileges, program types, each with its remedy."""
        from bpfwatch.doctor.report import can_run, run_checks

        checks = run_checks(probe_features=True)
        return {"can_run": can_run(checks), "checks": [c.as_dict() for c in checks]}

    @server.tool()
    def trace(capabilities: list[str], duration_seconds: float = 10, filters: dict[str, str] | None = None,
              max_events_per_capability: int = 200) -> dict[str, Any]:
        """Trace for duration_seconds with the given capabilities (process_trace, network_trace, file_trace,
        syscall_trace, performance, security_event) and optional filters {pid, comm, path}. Returns per
        capability a capped list of events and a summary."""
        request = {"ebpf_capabilities": capabilities, "ebpf_duration_seconds": duration_seconds,
                   "ebpf_filters": filters or {}, "max_events_per_capability": max_events_per_capability}
        try:
            return run(request, settings)
        except RequestError as e:
            return e.as_json()

    @server.tool()
    def diagnose(request: dict[str, Any]) -> dict[str, Any]:
        """A full diagnostic request: {reasoning, commands: [{id, command, description}], ebpf_capabilities,
        ebpf_duration_seconds, ebpf_filters}. Commands run in parallel with the traces; each returns its
        exit code, stdout and stderr."""
        try:
            return run(request, settings)
        except RequestError as e:
            return e.as_json()

    @server.tool()
    def profile_command(command: list[str], timeout_seconds: float = 120) -> dict[str, Any]:
        """Run one command (argv list) under the profiler (`bpfwatch run`): exact syscall counts and times,
        CPU, memory, I/O, network, child processes, and a verdict on what bounds it."""
        if not allow_commands:
            return {"error": {"field": "command", "message": "running commands is disabled here (--no-commands)"}}
        if not command or not all(isinstance(a, str) and a for a in command):
            return {"error": {"field": "command", "message": "expected a non-empty list of arguments"}}
        if not 0 < timeout_seconds <= 3600:
            return {"error": {"field": "timeout_seconds", "message": "out of range (0 to 3600)"}}
        if any("\0" in a for a in command):
            return {"error": {"field": "command", "message": "an argument contains a NUL character"}}
        fd, out = tempfile.mkstemp(prefix="bw-profile-", suffix=".json")
        os.close(fd)
        try:
            # -d ends the command like timeout(1) (SIGTERM, then SIGKILL) and the
            # profile still comes back; its output is not the answer: discarded,
            # so a command printing gigabytes costs nothing here
            with tempfile.TemporaryFile() as err:
                subprocess.run([sys.executable, "-m", "bpfwatch.cli.main", "run", "--quiet", "--json", out,
                                "-d", f"{timeout_seconds:g}", "--kill-after", "2", "--", *command],
                               stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                               timeout=timeout_seconds + 30)
                err.seek(0, os.SEEK_END)
                err.seek(max(0, err.tell() - 4096))
                tail = err.read().decode("utf-8", "replace").strip()
            with open(out, "rb") as f:
                data = f.read()
            if not data:
                return {"error": {"field": "command", "message": tail or "the profiler failed"}}
            doc = loads(data)
            if doc.get("stopped_by") == "duration":
                doc["note"] = f"the command ran longer than {timeout_seconds:g} s and was ended (signals_sent)"
            return doc
        except subprocess.TimeoutExpired:
            return {"error": {"field": "timeout_seconds", "message": f"the profiler did not finish within "
                                                                     f"{timeout_seconds + 30:g} s"}}
        finally:
            os.unlink(out)

    if fleet is not None:
        @server.tool()
        def fleet_diagnose(hosts: str, request: dict[str, Any], timeout_seconds: float = 0) -> dict[str, Any]:
            """Send one diagnostic request (the same as `diagnose`) to every fleet host whose name matches
            `hosts` (a glob such as 'web-*'), in parallel, and gather the answers: per host a status
            (answered, refused, failed, timed out, unreachable) and its result. Each agent applies its own
            policy (it may refuse fleet requests, or commands). `fleet_hosts` lists the hosts."""
            from bpfwatch.errors import BpfwatchError
            from bpfwatch.fleet.remote import diagnose as fleet_send

            try:
                req = parse_request(request, max_duration)
            except RequestError as e:
                return e.as_json()
            timeout = timeout_seconds or req.duration + 30
            if not 0 < timeout <= 86400:
                return {"error": {"field": "timeout_seconds", "message": "out of range (0 to 86400)"}}
            try:
                return fleet_send(fleet, hosts, req.as_dict(), timeout, fleet_prefix)
            except BpfwatchError as e:
                return {"error": {"field": "hosts", "message": str(e)}}

        @server.tool()
        def fleet_hosts() -> dict[str, Any]:
            """The fleet's hosts from their agents' heartbeats: last seen, mode, lag, lost events, and whether
            each accepts fleet diagnose requests."""
            from bpfwatch.errors import BpfwatchError
            from bpfwatch.fleet.remote import hosts as fleet_list

            try:
                return {"hosts": fleet_list(fleet)}
            except BpfwatchError as e:
                return {"error": {"field": "fleet", "message": str(e)}}

    return server


def serve(state_dir: str = "", max_duration: int = 300, allow_commands: bool = True, fleet: Any = None,
          fleet_prefix: str = "bpfwatch") -> None:
    build_server(state_dir, max_duration, allow_commands, fleet, fleet_prefix).run("stdio")
