"""A diagnostic request, validated field by field: a bad one is answered with
a JSON error that names the field."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from bpfwatch.diagnose.capabilities import CAPABILITIES
from bpfwatch.errors import BpfwatchError
from bpfwatch.limits import MAX_PID

DEFAULT_DURATION = 15
MAX_DURATION = 300
DEFAULT_COMMAND_TIMEOUT = 30.0
MAX_COMMANDS = 20
MAX_COMMAND_LEN = 4096
DEFAULT_EVENTS_PER_CAPABILITY = 200
FILTER_KEYS = ("pid", "comm", "path")


class RequestError(BpfwatchError):
    """A bad request; `field` is the JSON path of the offending field."""

    exit_code = 2

    def __init__(self, field_: str, message: str) -> None:
        super().__init__(f"{field_}: {message}")
        self.field = field_
        self.message = message

    def as_json(self) -> dict[str, Any]:
        return {"error": {"field": self.field, "message": self.message}}


@dataclass
class Command:
    id: str
    command: str
    description: str = ""
    timeout: float = DEFAULT_COMMAND_TIMEOUT


@dataclass
class Request:
    reasoning: str = ""
    commands: list[Command] = field(default_factory=list)
    capabilities: list[str] = field(default_factory=list)
    duration: float = DEFAULT_DURATION
    filters: dict[str, str] = field(default_factory=dict)
    max_events: int = DEFAULT_EVENTS_PER_CAPABILITY

    def as_dict(self) -> dict[str, Any]:
        return {"reasoning": self.reasoning,
                "commands": [{"id": c.id, "command": c.command, "description": c.description,
                              "timeout_seconds": c.timeout} for c in self.commands],
                "ebpf_capabilities": self.capabilities, "ebpf_duration_seconds": self.duration,
                "ebpf_filters": self.filters, "max_events_per_capability": self.max_events}


MAX_TEXT = 64 * 1024
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _text(value: Any, name: str, *, empty: bool = True, nul: bool = True, limit: int = MAX_TEXT) -> str:
    """A string a session can store and answer with: UTF-8 (no lone
    surrogates), bounded, and without NUL where a command or filter goes."""
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise RequestError(name, "expected a non-empty string" if not empty else "expected a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(name, "not valid Unicode (a lone surrogate)") from None
    if not nul and "\0" in value:
        raise RequestError(name, "contains a NUL character")
    if len(value) > limit:
        raise RequestError(name, f"longer than {limit} characters")
    return value


def _num(value: Any, name: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(name, f"expected a number, got {json.dumps(value)}")
    if not lo <= value <= hi:
        raise RequestError(name, f"{value} is out of range ({lo:g} to {hi:g})")
    return float(value)


def parse(doc: Any, max_duration: int = MAX_DURATION) -> Request:
    """A Request from parsed JSON; RequestError names the first bad field."""
    if not isinstance(doc, dict):
        raise RequestError("$", "the request must be a JSON object")
    known = {"reasoning", "commands", "ebpf_capabilities", "ebpf_duration_seconds", "ebpf_filters",
             "max_events_per_capability", "response_type"}
    for key in doc:
        if key not in known:
            raise RequestError(key, f"unknown field (known: {', '.join(sorted(known))})")
    req = Request()
    req.reasoning = _text(doc.get("reasoning", ""), "reasoning")
    cmds = doc.get("commands", [])
    if not isinstance(cmds, list):
        raise RequestError("commands", "expected a list of {id, command, description}")
    if len(cmds) > MAX_COMMANDS:
        raise RequestError("commands", f"{len(cmds)} commands, at most {MAX_COMMANDS}")
    seen = set()
    for i, c in enumerate(cmds):
        where = f"commands[{i}]"
        if not isinstance(c, dict):
            raise RequestError(where, "expected an object {id, command, description}")
        for key in c:
            if key not in ("id", "command", "description", "timeout_seconds"):
                raise RequestError(f"{where}.{key}", "unknown field (id, command, description, timeout_seconds)")
        cid = _text(c.get("id"), f"{where}.id", empty=False, nul=False, limit=64)
        if not _ID.match(cid):
            # it names the command's files in the session folder: one id, one file
            raise RequestError(f"{where}.id", "use 1 to 64 letters, digits, '_', '.' or '-' (not first)")
        if cid in seen:
            raise RequestError(f"{where}.id", f"'{cid}' is used twice")
        seen.add(cid)
        text = _text(c.get("command"), f"{where}.command", empty=False, nul=False, limit=MAX_COMMAND_LEN)
        desc = _text(c.get("description", ""), f"{where}.description")
        timeout = _num(c.get("timeout_seconds", DEFAULT_COMMAND_TIMEOUT), f"{where}.timeout_seconds", 0.1,
                       max_duration)
        req.commands.append(Command(cid, text, desc, timeout))
    capabilities = doc.get("ebpf_capabilities", [])
    if not isinstance(capabilities, list) or not all(isinstance(x, str) for x in capabilities):
        raise RequestError("ebpf_capabilities", "expected a list of capability names")
    for i, name in enumerate(capabilities):
        if name not in CAPABILITIES:
            raise RequestError(f"ebpf_capabilities[{i}]",
                               f"unknown capability '{name}' (known: {', '.join(CAPABILITIES)})")
    req.capabilities = list(dict.fromkeys(capabilities))
    if not req.capabilities and not req.commands:
        raise RequestError("ebpf_capabilities", "nothing to do: give capabilities, commands or both")
    if "ebpf_duration_seconds" in doc:
        req.duration = _num(doc["ebpf_duration_seconds"], "ebpf_duration_seconds", 1, max_duration)
    req.max_events = int(_num(doc.get("max_events_per_capability", DEFAULT_EVENTS_PER_CAPABILITY),
                              "max_events_per_capability", 0, 100000))
    filters = doc.get("ebpf_filters", {})
    if not isinstance(filters, dict):
        raise RequestError("ebpf_filters", "expected an object like {\"pid\": \"1234\", \"comm\": \"nginx\"}")
    for key, value in filters.items():
        where = f"ebpf_filters.{key}"
        if key not in FILTER_KEYS:
            raise RequestError(where, f"unknown filter (known: {', '.join(FILTER_KEYS)})")
        if isinstance(value, int) and not isinstance(value, bool) and key == "pid":
            value = str(value)
        value = _text(value, where, empty=False, nul=False, limit=4096)
        if key == "pid" and not (value.isascii() and value.isdigit() and 0 < int(value) <= MAX_PID):
            raise RequestError(where, f"'{value}' is not a process id")
        if key == "path" and not value.startswith("/"):
            raise RequestError(where, f"'{value}' is not an absolute path")
        if key == "comm" and len(value) > 64:
            raise RequestError(where, "longer than a process name can be")
        req.filters[key] = value
    return req


MAX_REQUEST_BYTES = 1 << 20


def parse_text(text: str | bytes, max_duration: int = MAX_DURATION) -> Request:
    """A Request from JSON text (bytes must be UTF-8)."""
    if isinstance(text, bytes):
        if len(text) > MAX_REQUEST_BYTES:
            raise RequestError("$", f"larger than {MAX_REQUEST_BYTES >> 20} MiB")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RequestError("$", f"not UTF-8 text (byte {e.start}): send the request as UTF-8 JSON") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise RequestError("$", f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise RequestError("$", "nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise RequestError("$", f"malformed JSON: {e}") from None
    return parse(doc, max_duration)
