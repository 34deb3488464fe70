"""Writes src/bpfwatch/schema/events.schema.json (run after changing an event's
fields; tests/test_schema.py fails while the committed file differs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "src/bpfwatch/schema/events.schema.json"

U32 = {"type": "integer", "minimum": 0, "maximum": 4294967295}
U64 = {"type": "integer", "minimum": 0}
NSTR = {"type": ["string", "null"]}
NINT = {"type": ["integer", "null"]}
BOOL = {"type": "boolean"}
# null only from the polling fallback (source: poll), which cannot see these
NU32 = {"type": ["integer", "null"], "minimum": 0, "maximum": 4294967295}
NU64 = {"type": ["integer", "null"], "minimum": 0}

COMMON = {
    "ts": {"type": "integer", "description": "nanoseconds since the Unix epoch"},
    "time": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$",
             "description": "ts as ISO-8601 UTC"},
    "type": {"type": "string"},
    "source": {"enum": ["ebpf", "procfs", "poll"],
               "description": "ebpf: seen by the kernel; procfs: the start-up snapshot; poll: /proc polling"},
    "pid": {**U32, "description": "process id (tgid) in the initial pid namespace"},
    "tid": {**U32, "description": "thread id"},
    "ppid": {**U32, "description": "parent process id"},
    "uid": {**U32, "description": "real user id"},
    "user": {**NSTR, "description": "user name of uid, when it has one"},
    "comm": {"type": "string", "maxLength": 15, "description": "the kernel's task name (15 bytes)"},
    "exe": {**NSTR, "description": "absolute path of the executable"},
    "cgroup_id": {**U64, "description": "cgroup v2 id (the inode of its directory)"},
    "exec_id": {**NSTR, "description": "stable id of the process image (see docs/events.md)"},
}

U16 = {"type": "integer", "minimum": 0, "maximum": 65535}
ROLE = {"enum": ["client", "server", "listener", None]}
SOCKET = {"protocol": {"enum": ["tcp", "udp"]}, "family": {"enum": ["ipv4", "ipv6"]},
          "local_addr": {"type": "string"}, "local_port": U16, "remote_addr": {"type": "string"},
          "remote_port": U16}
DNS_PEER = {"protocol": {"enum": ["udp", "tcp"]}, "family": {"enum": ["ipv4", "ipv6"]},
            "role": {"enum": ["client", "server"], "description": "server: this host answered (a resolver here)"},
            "server_addr": {"type": "string"}, "server_port": U16,
            "client_addr": {"type": "string"}, "client_port": U16, "local_port": U16}

FILE_RESULT = {"path": NSTR, "syscall": {"type": "string"}, "ret": {"type": "integer"},
               "error": {**NSTR, "description": "errno name when the call failed"}}
OPTIONAL = {"path_truncated": BOOL}

TYPES: dict[str, dict[str, object]] = {
    "process.exec": {
        "gid": U32, "euid": U32, "egid": U32, "loginuid": NINT,
        "argv": {"type": "array", "items": {"type": "string"}},
        "argc": U32, "argv_truncated": BOOL, "argv_omitted_args": U32, "argv_omitted_bytes": U32,
        "filename": {**NSTR, "description": "the path execve was given, as given (relative, or a PATH entry)"},
        "interpreter": {**NSTR, "description": "the interpreter a script's #! line named; null for a binary"},
        "exe_memfd": {**BOOL, "description": "exe is an anonymous memory file (memfd_create), not a path"},
        "cwd": NSTR, "tty": NSTR, "ns_pid": NINT, "pidns": NINT, "start_boot_ns": U64,
        "parent": {"type": "object", "required": ["pid", "comm", "exe", "exec_id"],
                   "additionalProperties": False,
                   "properties": {"pid": U32, "comm": NSTR, "exe": NSTR, "exec_id": NSTR}},
    },
    "process.exec_failed": {
        "filename": NSTR, "argv": {"type": "array", "items": {"type": "string"}}, "argv_truncated": BOOL,
        "cwd": NSTR, "ret": {"type": "integer", "maximum": -1}, "error": {"type": "string"},
        "syscall": {"enum": ["execve", "execveat"]}, "dirfd": NINT, "empty_path": BOOL,
    },
    "process.fork": {
        "child_pid": U32, "child_tid": U32, "thread": BOOL,
        "clone_flags": {"type": "array", "items": {"type": "string", "pattern": "^CLONE_[A-Z_]+$"}},
        "child_start_boot_ns": U64, "child_exec_id": NSTR,
    },
    "process.exit": {
        "exit_code": {"type": ["integer", "null"], "minimum": 0, "maximum": 255},
        "signal": {"type": ["integer", "null"], "minimum": 1, "maximum": 127},
        "signal_name": NSTR, "core_dumped": BOOL, "status": NU32, "thread": BOOL,
        "duration_ns": U64, "start_boot_ns": U64, "user_time_ns": U64, "system_time_ns": U64,
    },
    "file.open": {**FILE_RESULT, "flags": {"type": "array", "items": {"type": "string", "pattern": "^O_"}},
                  "mode": NINT, "fd": NINT},
    "file.unlink": FILE_RESULT,
    "file.rmdir": FILE_RESULT,
    "file.mkdir": {**FILE_RESULT, "mode": U32},
    "file.chmod": {**FILE_RESULT, "mode": U32},
    "file.chown": {**FILE_RESULT, "owner_uid": NINT, "owner_gid": NINT},
    "file.truncate": {**FILE_RESULT, "length": {"type": "integer"}},
    "file.rename": {**FILE_RESULT, "new_path": NSTR},
    "file.link": {**FILE_RESULT, "new_path": NSTR},
    "file.symlink": {**FILE_RESULT, "target": NSTR},
    "file.io": {"path": NSTR, "reads": U64, "writes": U64, "read_bytes": U64, "write_bytes": U64,
                "duration_ns": U64, "closed": BOOL},
    "network.connect": {**SOCKET, "result": {"enum": ["established", "refused", "timeout", "unreachable",
                                                      "reset", "error"]},
                        "error": NSTR, "latency_ns": NU64},
    "network.accept": SOCKET,
    "network.close": {**SOCKET, "bytes_sent": NU64, "bytes_received": NU64, "bytes_exact": BOOL,
                      "duration_ns": U64, "closed_by": {"enum": ["local", "remote", None]},
                      "retransmits": NU32, "segs_in": NU32, "segs_out": NU32, "role": ROLE},
    "network.state": {**SOCKET, "old_state": {"type": "string"}, "new_state": {"type": "string"}, "role": ROLE},
    "network.udp": {**SOCKET, "phase": {"enum": ["start", "end"]}, "bytes_sent": NU64, "bytes_received": NU64,
                    "packets_sent": NU64, "packets_received": NU64, "duration_ns": U64},
    "dns.query": {**DNS_PEER, "id": U16, "name": NSTR, "qtype": NSTR,
                  "questions": {"type": "array", "items": {"type": "object", "required": ["name", "type"]}}},
    "dns.response": {**DNS_PEER, "id": U16, "name": NSTR, "qtype": NSTR, "rcode": {"type": "string"},
                     "truncated": BOOL, "authoritative": BOOL,
                     "answers": {"type": "array", "items": {"type": "object",
                                                            "required": ["name", "type", "ttl", "data"]}},
                     "addresses": {"type": "array", "items": {"type": "string"}},
                     "cname_chain": {"type": "array", "items": {"type": "string"}},
                     "latency_ns": NINT},
    "dns.malformed": {**DNS_PEER, "direction": {"enum": ["sent", "received"]}, "length": U32, "captured": U32,
                      "reason": {"type": "string"}},
}
# every security.* event: which rule found what, how serious, and the evidence
SECURITY = {
    "rule": {"type": "string", "description": "the rule id (docs/security.md)"},
    "severity": {"enum": ["info", "low", "medium", "high", "critical"]},
    "description": {"type": "string", "description": "one line for a person"},
    "syscall": NSTR, "ret": NINT, "error": NSTR,
    "outcome": {"enum": ["succeeded", "failed", None]},
    "evidence": {"type": "object", "description": "the facts behind the finding (per rule)"},
}
for _name in ("privilege_escalation", "credential_change", "ptrace", "process_vm_write", "suspicious_exec",
              "sensitive_file", "bpf_load", "mount", "namespace", "module", "sysctl_write"):
    TYPES[f"security.{_name}"] = SECURITY


def variant(name: str, fields: dict[str, object]) -> dict[str, object]:
    extra = OPTIONAL if name.startswith("file.") and name != "file.io" else {}
    if name == "process.exec":
        extra = {"paths_truncated": BOOL}  # present, and true, when exe/cwd/parent exe was cut
    return {"if": {"properties": {"type": {"const": name}}},
            "then": {"properties": {**{k: True for k in COMMON}, **fields, **extra},
                     "required": list(fields), "additionalProperties": False}}


def schema() -> dict[str, object]:
    common = {**COMMON, "type": {"enum": sorted(TYPES)}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://bpfwatch.dev/schema/events.schema.json",
        "title": "bpfwatch event",
        "description": "One event as written by every bpfwatch output (JSON lines, API). See docs/events.md.",
        "type": "object",
        "properties": common,
        "required": list(COMMON),
        "allOf": [variant(n, f) for n, f in TYPES.items()],
    }


def render() -> str:
    return json.dumps(schema(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
