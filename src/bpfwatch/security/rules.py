"""Security rules: ids, severities, path lists and exceptions, loaded from a
TOML file over documented defaults. The sensor turns kernel facts into
findings; the rules say which findings are reported and how loud."""

from __future__ import annotations

import fnmatch
import os
import posixpath
import pwd
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from bpfwatch.errors import UsageError
from bpfwatch.textfile import read_small

SEVERITIES = ("info", "low", "medium", "high", "critical")

# rule id -> (event type, default severity, what it detects)
RULES: dict[str, tuple[str, str, str]] = {
    "privilege_escalation": ("security.privilege_escalation", "high",
                             "a non-root process became root (setuid-family syscall, capset or a setuid exec)"),
    "credential_change": ("security.credential_change", "info",
                          "a process changed its user, group or capabilities, without becoming root"),
    "ptrace_attach": ("security.ptrace", "medium", "ptrace attach or seize to another process"),
    "process_vm_write": ("security.process_vm_write", "high", "process_vm_writev into another process"),
    "exec_world_writable": ("security.suspicious_exec", "medium",
                            "exec of a binary from a world-writable directory (/tmp, /dev/shm, /var/tmp, ...)"),
    "exec_deleted": ("security.suspicious_exec", "high", "exec of a deleted file"),
    "exec_memfd": ("security.suspicious_exec", "high", "exec of a memfd (fileless execution)"),
    "sensitive_file_write": ("security.sensitive_file", "high",
                             "write, rename, unlink, chmod, chown or truncate of a sensitive file"),
    "bpf_load": ("security.bpf_load", "medium", "a BPF program was loaded by another process"),
    "mount": ("security.mount", "medium", "a filesystem was mounted"),
    "umount": ("security.mount", "low", "a filesystem was unmounted"),
    "setns": ("security.namespace", "low", "a process joined another namespace (setns)"),
    "unshare": ("security.namespace", "low", "a process created new namespaces (unshare)"),
    "module_load": ("security.module", "high", "a kernel module load or unload was attempted"),
    "sysctl_write": ("security.sysctl_write", "medium", "a kernel parameter under /proc/sys/kernel was written"),
}
EVENT_TYPES = sorted({t for t, _s, _d in RULES.values()})

SENSITIVE_PATHS = [
    "/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow", "/etc/sudoers", "/etc/sudoers.d/*",
    "/root/.ssh/authorized_keys*", "/home/*/.ssh/authorized_keys*", "/etc/crontab", "/etc/cron.d/*",
    "/etc/cron.hourly/*", "/etc/cron.daily/*", "/etc/cron.weekly/*", "/etc/cron.monthly/*",
    "/var/spool/cron/*", "/var/spool/cron/crontabs/*", "/etc/systemd/system/*", "/etc/systemd/system/*/*",
    "/lib/systemd/system/*", "/usr/lib/systemd/system/*", "/etc/ld.so.preload",
]
SYSCTL_PATHS = ["/proc/sys/kernel/*"]
PREFIXES_MAX = 16  # the file sensor's in-kernel prefix table


@dataclass(slots=True)
class Exception_:
    """A finding is dropped when every given field matches."""

    exe: str | None = None
    comm: str | None = None
    user: str | None = None
    path: str | None = None

    def matches(self, event: dict[str, Any]) -> bool:
        checks = [(self.exe, event.get("exe")), (self.comm, event.get("comm")), (self.path, event.get("path"))]
        for pattern, value in checks:
            if pattern is not None and (value is None or not fnmatch.fnmatchcase(value, pattern)):
                return False
        if self.user is not None:
            uid = event.get("uid")
            name = event.get("user")
            if self.user not in (str(uid), name) and not (name is None and _uid_of(self.user) == uid):
                return False
        return True


def _uid_of(user: str) -> int | None:
    try:
        return pwd.getpwnam(user).pw_uid
    except (KeyError, ValueError):  # ValueError: a NUL in the name
        return None


@dataclass
class Rule:
    id: str
    enabled: bool = True
    severity: str = "medium"
    paths: list[str] = field(default_factory=list)
    exceptions: list[Exception_] = field(default_factory=list)

    @property
    def event_type(self) -> str:
        return RULES[self.id][0]

    def excepted(self, event: dict[str, Any]) -> bool:
        return any(x.matches(event) for x in self.exceptions)

    def path_matcher(self) -> re.Pattern[str]:
        """One compiled pattern for all the rule's path globs (matched per
        file event: one regex instead of a glob each)."""
        return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in self.paths) or "(?!)")


class RuleSet:
    def __init__(self, rules: dict[str, Rule], source: str = "defaults") -> None:
        self.rules = rules
        self.source = source

    def __eq__(self, other: object) -> bool:  # equal rules: a reload keeps the loaded programs
        return isinstance(other, RuleSet) and self.rules == other.rules

    __hash__ = None  # type: ignore[assignment]

    def __getitem__(self, rule_id: str) -> Rule:
        return self.rules[rule_id]

    def on(self, rule_id: str) -> bool:
        return self.rules[rule_id].enabled

    def enabled_types(self) -> set[str]:
        return {r.event_type for r in self.rules.values() if r.enabled}

    def file_rules(self) -> list[Rule]:
        return [self.rules[r] for r in ("sensitive_file_write", "sysctl_write") if self.rules[r].enabled]

    def file_prefixes(self) -> list[str]:
        """Absolute prefixes that cover every file rule's paths, at most
        PREFIXES_MAX, for the file sensor's in-kernel filter."""
        literal = set()
        for rule in self.file_rules():
            for p in rule.paths:
                cut = min((i for i, c in enumerate(p) if c in "*?["), default=len(p))
                literal.add(p[:cut] or "/")
        return collapse_prefixes(sorted(literal), PREFIXES_MAX)


def collapse_prefixes(prefixes: list[str], limit: int) -> list[str]:
    """Drops prefixes covered by others; while too many, replaces the longest
    by its directory."""
    items = set(prefixes)
    while True:
        kept = sorted(p for p in items if not any(q != p and p.startswith(q) for q in items))
        if len(kept) <= limit:
            return kept
        longest = max(kept, key=len)
        items = set(kept) - {longest}
        parent = posixpath.dirname(longest.rstrip("/"))
        items.add(parent if parent.endswith("/") else parent + "/")


def default_rules() -> RuleSet:
    rules = {rid: Rule(rid, severity=sev) for rid, (_t, sev, _d) in RULES.items()}
    rules["sensitive_file_write"].paths = list(SENSITIVE_PATHS)
    rules["sysctl_write"].paths = list(SYSCTL_PATHS)
    return RuleSet(rules)


def _bad(where: str, msg: str) -> UsageError:
    return UsageError(f"{where}: {msg}")


def parse_rules(doc: dict[str, Any], where: str = "rules") -> RuleSet:
    """Rules from a parsed TOML document: `[rules.<id>]` tables with enabled,
    severity, paths (file rules; `extend_paths` adds to the defaults) and
    exceptions (a list of {exe, comm, user, path} globs)."""
    rs = default_rules()
    unknown_top = set(doc) - {"rules"}
    if unknown_top:
        raise _bad(where, f"unknown key '{sorted(unknown_top)[0]}' (only [rules.<id>] tables)")
    for rid, table in (doc.get("rules") or {}).items():
        key = f"rules.{rid}"
        if rid not in RULES:
            raise _bad(where, f"{key}: unknown rule (known: {', '.join(RULES)})")
        if not isinstance(table, dict):
            raise _bad(where, f"{key}: expected a table")
        rule = rs.rules[rid]
        for k, v in table.items():
            if k == "enabled":
                if not isinstance(v, bool):
                    raise _bad(where, f"{key}.enabled: expected true or false")
                rule.enabled = v
            elif k == "severity":
                if v not in SEVERITIES:
                    raise _bad(where, f"{key}.severity: '{v}' is not one of {', '.join(SEVERITIES)}")
                rule.severity = v
            elif k in ("paths", "extend_paths"):
                if rid not in ("sensitive_file_write", "sysctl_write"):
                    raise _bad(where, f"{key}.{k}: only file rules take paths")
                if not isinstance(v, list) or not all(isinstance(p, str) and p.startswith("/") for p in v):
                    raise _bad(where, f"{key}.{k}: expected a list of absolute paths (globs allowed)")
                rule.paths = list(v) if k == "paths" else rule.paths + list(v)
            elif k == "exceptions":
                rule.exceptions = _exceptions(v, f"{where}: {key}.exceptions")
            else:
                raise _bad(where, f"{key}: unknown key '{k}' (enabled, severity, paths, extend_paths, "
                                  "exceptions)")
    return rs


def _exceptions(value: Any, where: str) -> list[Exception_]:
    if not isinstance(value, list):
        raise UsageError(f"{where}: expected a list of tables like {{exe = \"/usr/bin/sudo\"}}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not item:
            raise UsageError(f"{where}[{i}]: expected a table with exe, comm, user or path")
        bad = set(item) - {"exe", "comm", "user", "path"}
        if bad:
            raise UsageError(f"{where}[{i}]: unknown key '{sorted(bad)[0]}' (exe, comm, user, path)")
        if not all(isinstance(v, (str, int)) for v in item.values()):
            raise UsageError(f"{where}[{i}]: values must be strings")
        out.append(Exception_(**{k: str(v) for k, v in item.items()}))
    return out


def load_rules(path: str | None) -> RuleSet:
    """The rules file (TOML), or the defaults when path is None."""
    if not path:
        return default_rules()
    raw = read_small(path, "rules file")
    try:
        doc = tomllib.loads(raw.decode())
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: not valid TOML: {e}") from None
    except RecursionError:
        raise UsageError(f"{path}: nested too deeply") from None
    rs = parse_rules(doc, os.path.basename(path))
    rs.source = path
    return rs
