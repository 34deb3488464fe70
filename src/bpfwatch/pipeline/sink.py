"""Sinks: JSON lines (machines) and an aligned, coloured table (people)."""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import time
from typing import IO, Any, BinaryIO, TextIO

from bpfwatch.errors import BpfwatchError
from bpfwatch.events.text import display, dumps_lines


class JsonLinesSink:
    """One JSON object per line; written in batches, flushed per batch."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.count = 0

    def write(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        buf, _ = dumps_lines(events)
        self.stream.write(buf)
        self.stream.flush()
        self.count += len(events)

    def close(self) -> None:
        self.stream.flush()


_GREEN, _CYAN, _YELLOW, _BLUE, _MAGENTA = "\x1b[32m", "\x1b[36m", "\x1b[33m", "\x1b[34m", "\x1b[35m"
_RED = "\x1b[31m"
_DIM = "\x1b[2m"
_BOLD = "\x1b[1m"
_RESET = "\x1b[0m"
_FAMILY_COLORS = {"process": _GREEN, "file": _BLUE, "network": _CYAN, "dns": _MAGENTA, "security": _RED}
_LABEL = {"process.exec": "EXEC", "process.exec_failed": "EXECFAIL", "process.fork": "FORK", "process.exit": "EXIT",
          "file.io": "IO",
          "network.connect": "CONNECT", "network.accept": "ACCEPT", "network.close": "CLOSE",
          "network.state": "TCP", "network.udp": "UDP", "dns.query": "QUERY", "dns.response": "ANSWER",
          "dns.malformed": "DNS?", "security.privilege_escalation": "PRIVESC", "security.credential_change": "CREDS",
          "security.ptrace": "PTRACE", "security.process_vm_write": "VMWRITE", "security.suspicious_exec": "SUSPEXEC",
          "security.sensitive_file": "SENSFILE", "security.bpf_load": "BPFLOAD", "security.mount": "MOUNT",
          "security.namespace": "NS", "security.module": "MODULE", "security.sysctl_write": "SYSCTL"}


def use_color(stream: TextIO) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.1f}ms" if ns < 10_000_000_000 else f"{ns / 1e9:.1f}s"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def _peer(ev: dict[str, Any]) -> str:
    remote = ev["remote_addr"]
    remote = f"[{remote}]" if ":" in remote else remote
    return f"{ev['local_port']} -> {remote}:{ev['remote_port']}"


def failed(ev: dict[str, Any]) -> bool:
    t = ev["type"]
    if t == "process.exit":
        return bool(ev["signal"] or ev["exit_code"])
    if t == "process.exec_failed":
        return True
    if t == "network.connect":
        return ev["result"] != "established"
    if t == "dns.response":
        return ev["rcode"] != "NOERROR"
    return bool(ev.get("error")) or t == "dns.malformed"


def details(ev: dict[str, Any]) -> str:
    t = ev["type"]
    if t == "process.exec":
        argv = " ".join(shlex.quote(a) for a in ev["argv"]) or (ev["exe"] or "")
        if ev["argv_truncated"]:
            argv += f" …(+{ev['argv_omitted_args']} args, {ev['argv_omitted_bytes']} bytes)"
        return f"{ev['exe'] or '?'}  {argv}"
    if t == "process.exec_failed":
        argv = " ".join(shlex.quote(a) for a in ev["argv"])
        return f"{ev['filename']}  {ev['error']}  {argv}"
    if t == "process.fork":
        kind = "thread" if ev["thread"] else "child"
        return f"{kind} {ev['child_pid'] if not ev['thread'] else ev['child_tid']}"
    if t == "process.exit":
        how = (f"signal {ev['signal_name']}" + (" (core dumped)" if ev["core_dumped"] else "")
               if ev["signal"] else f"code {ev['exit_code']}")
        return f"{how}  after {_ms(ev['duration_ns'])}"
    if t == "file.io":
        parts = ([f"read {_size(ev['read_bytes'])} in {ev['reads']}"] if ev["reads"] else []) + \
                ([f"wrote {_size(ev['write_bytes'])} in {ev['writes']}"] if ev["writes"] else [])
        return f"{ev['path']}  {', '.join(parts)}"
    if t.startswith("file."):
        extra = ev.get("new_path") or ev.get("target")
        text = f"{ev['path']}" + (f" -> {extra}" if extra else "")
        if t == "file.open":
            text += f"  {'|'.join(ev['flags'])}"
        elif "mode" in ev and ev["mode"] is not None:
            text += f"  {ev['mode']:o}"
        return text + (f"  {ev['error']}" if ev["error"] else "")
    if t == "network.connect":
        return f"{ev['protocol']} {_peer(ev)}  {ev['result']}  {_ms(ev['latency_ns'])}"
    if t == "network.close":
        return (f"{ev['protocol']} {_peer(ev)}  sent {_size(ev['bytes_sent'])} received "
                f"{_size(ev['bytes_received'])} in {_ms(ev['duration_ns'])}, closed by {ev['closed_by'] or '?'}")
    if t == "network.state":
        return f"{ev['protocol']} {_peer(ev)}  {ev['old_state']} -> {ev['new_state']}"
    if t == "network.udp":
        if ev["phase"] == "start":
            return f"udp {_peer(ev)}  new flow"
        return (f"udp {_peer(ev)}  ended: sent {_size(ev['bytes_sent'])} in {ev['packets_sent']}, "
                f"received {_size(ev['bytes_received'])} in {ev['packets_received']}")
    if t.startswith("network."):
        return f"{ev['protocol']} {_peer(ev)}"
    if t == "dns.query":
        return f"{ev['name']} {ev['qtype']}  -> {ev['server_addr']}"
    if t == "dns.response":
        answers = ", ".join(ev["cname_chain"] + ev["addresses"]) or "-"
        latency = f"  {_ms(ev['latency_ns'])}" if ev["latency_ns"] is not None else ""
        return f"{ev['name']} {ev['qtype']}  {ev['rcode']}  {answers}{latency}"
    if t == "dns.malformed":
        return f"{ev['direction']} {ev['length']} bytes: {ev['reason']}"
    if t.startswith("security."):
        return f"[{ev['severity'].upper()}] {ev['rule']}: {ev['description']}"
    return ""


def _cut(s: str, width: int) -> str:
    """s in at most width characters: cut in the middle, so the start (a
    path's directory, a peer) and the end (a file name, a result) both show."""
    if width <= 0 or len(s) <= width:
        return s
    if width < 8:
        return s[: width - 1] + "…"
    head = width // 3
    return s[:head] + "…" + s[len(s) - (width - head - 1):]


class TableSink:
    """Events as aligned lines. On a terminal the lines fit its width: below
    120 columns PPID and USER give way to DETAILS, and DETAILS is cut to the
    width with an ellipsis (`wide` keeps all of it, as files and pipes do)."""

    WIDE_FROM = 120

    def __init__(self, stream: TextIO, color: bool | None = None, width: int | None = None) -> None:
        self.stream = stream
        self.color = use_color(stream) if color is None else color
        self.width = width  # None: no limit
        self.count = 0
        self._header_done = False
        self.narrow = width is not None and width < self.WIDE_FROM

    @classmethod
    def for_stream(cls, stream: TextIO, wide: bool = False) -> TableSink:
        """A table for `stream`, as wide as the terminal it is (unless wide)."""
        width = None
        if not wide and stream.isatty():
            try:
                width = os.get_terminal_size(stream.fileno()).columns
            except OSError:
                width = None
        return cls(stream, width=width)

    @property
    def header(self) -> str:
        if self.narrow:
            return f"{'TIME':<12} {'EVENT':<8} {'PID':>7} {'COMM':<12} DETAILS"
        return f"{'TIME':<15} {'EVENT':<8} {'PID':>7} {'PPID':>7} {'USER':<10} {'COMM':<16} DETAILS"

    def write(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        out = []
        if not self._header_done:
            out.append((_BOLD + self.header + _RESET) if self.color else self.header)
            self._header_done = True
        narrow, width = self.narrow, self.width
        for ev in events:
            sec, ns = divmod(ev["ts"], 1_000_000_000)
            clock = time.strftime("%H:%M:%S", time.localtime(sec))
            label = _LABEL.get(ev["type"]) or ev["type"].split(".", 1)[1].upper()
            if narrow:
                clock += f".{ns // 1_000_000:03d}"
                line = f"{clock:<12} {label:<8} {ev['pid']:>7} {display(ev['comm'])[:12]:<12} "
            else:
                clock += f".{ns // 1000:06d}"
                user = ev["user"] or str(ev["uid"])
                line = (f"{clock:<15} {label:<8} {ev['pid']:>7} {ev['ppid']:>7} {display(user)[:10]:<10} "
                        f"{display(ev['comm'])[:16]:<16} ")
            detail = display(details(ev))
            if width is not None:
                detail = _cut(detail, width - len(line) - 1)  # the last column stays empty: no wrap
            line += detail
            if self.color:
                color = _RED if failed(ev) else _FAMILY_COLORS.get(ev["type"].split(".", 1)[0], "")
                line = f"{_DIM}{clock}{_RESET} {color}{line[len(clock) + 1:]}{_RESET}"
            out.append(line)
        self.stream.write("\n".join(out) + "\n")
        self.stream.flush()
        self.count += len(events)

    def close(self) -> None:
        self.stream.flush()


def open_file(path: str, mode: str) -> IO[Any]:
    """A file the user named for output, or a one-line error saying why not."""
    try:
        return open(path, mode)
    except OSError as e:
        raise BpfwatchError(f"cannot write {path}: {e.strerror}") from None


def open_output(path: str | None) -> BinaryIO:
    if path is None or path == "-":
        return sys.stdout.buffer
    return open_file(path, "ab")


def discard_stdout() -> None:
    """Points stdout at /dev/null: its reader is gone or stopped reading, and
    what is still buffered for it must not block or fail the exit."""
    fd = sys.stdout.fileno()
    # blocking again first: the description may be shared (a pipeline's other
    # members keep it), and only ours may have made it non-blocking
    with contextlib.suppress(OSError):
        os.set_blocking(fd, True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
