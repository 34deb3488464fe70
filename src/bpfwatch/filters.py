"""The filter language, shared by `trace`, the Python API and the agent config.

A filter is an allow list and a deny list, each a mapping KEY -> values.
An event passes when it matches every allow key (any of that key's values)
and no deny entry (any key, any value): deny wins. See docs/filters.md.

Parsing happens once, up front: a bad key, value, regex or CIDR is a
UsageError naming the key. The cheap predicates are also handed to the
kernel (see KernelPlan); Python evaluates the whole filter on what comes out.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import pwd
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bpfwatch import limits
from bpfwatch.errors import UsageError
from bpfwatch.mounts import cgroup2_root

COMM_MAX = 15
_GLOB = set("*?[")
_CONTAINER_ID = re.compile(r"^[0-9a-f]{12,64}$")

KEYS = {
    "pid": "process ids (their threads included)",
    "ppid": "parent process ids",
    "follow": "process ids and all their descendants (allow only; tracked in the kernel)",
    "uid": "user ids or user names",
    "user": "user names (same as uid)",
    "comm": "task names: exact, glob (py*) or regex (re:^py)",
    "exe": "executable paths: exact, glob (/usr/bin/*) or regex (re:...)",
    "cgroup": "cgroup v2 ids, or cgroup paths (the cgroup and everything below it)",
    "container": "container ids (12-64 hex digits) found in cgroup paths",
    "path": "absolute path prefixes of file events",
    "port": "local or remote ports of network events, or ranges (8000-8100)",
    "addr": "local or remote addresses or CIDRs of network events (10.0.0.0/8, ::1)",
    "dns_name": "DNS names: exact or glob (*.example.com)",
    "type": "event types or globs (file.*)",
    "failed_only": "only failed file operations (true/false; allow only)",
}


class TextMatch:
    """exact | glob | re:regex | /regex/"""

    def __init__(self, key: str, values: Iterable[str]) -> None:
        self.exact: set[str] = set()
        self.patterns: list[re.Pattern[str]] = []
        for v in values:
            if not v:
                raise UsageError(f"filter {key}: empty value")
            if v.startswith("re:") or (len(v) > 1 and v.startswith("/") and v.endswith("/") and key != "exe"):
                src = v[3:] if v.startswith("re:") else v[1:-1]
                try:
                    self.patterns.append(re.compile(src))
                except re.error as e:
                    raise UsageError(f"filter {key}: bad regex '{src}': {e}") from None
            elif _GLOB & set(v):
                self.patterns.append(re.compile(fnmatch.translate(v)))
            else:
                self.exact.add(v)

    def __call__(self, value: str | None) -> bool:
        if value is None:
            return False
        return value in self.exact or any(p.search(value) for p in self.patterns)


def _ints(key: str, values: Iterable[Any]) -> set[int]:
    """Process ids: a value out of range is an error here, not an
    OverflowError where it meets the kernel."""
    return {limits.pid(f"filter {key}", str(v).strip() if isinstance(v, str) else v) for v in values}


def _uids(key: str, values: Iterable[Any]) -> set[int]:
    out = set()
    for v in values:
        if isinstance(v, int) or limits.decimal(str(v).strip()):
            out.add(limits.ident(f"filter {key}", str(v).strip()))
            continue
        try:
            out.add(pwd.getpwnam(str(v)).pw_uid)
        except (KeyError, ValueError):  # ValueError: a NUL in the name
            raise UsageError(f"filter {key}: no user named {str(v)!r}") from None
    return out


def _ports(key: str, values: Iterable[Any]) -> list[tuple[int, int]]:
    out = []
    for v in values:
        lo, _, hi = str(v).partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise UsageError(f"filter {key}: '{v}' is not a port or a range like 8000-8100") from None
        if not (0 < a <= b < 65536):
            raise UsageError(f"filter {key}: '{v}' is not within 1-65535")
        out.append((a, b))
    return out


def _networks(key: str, values: Iterable[Any]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = []
    for v in values:
        try:
            out.append(ipaddress.ip_network(str(v), strict=False))
        except ValueError:
            raise UsageError(f"filter {key}: '{v}' is not an address or CIDR") from None
    return out


def _prefixes(key: str, values: Iterable[Any]) -> list[str]:
    out = []
    for v in values:
        v = str(v)
        if not v.startswith("/"):
            raise UsageError(f"filter {key}: '{v}' must be an absolute path")
        out.append(v.rstrip("/") or "/")
    return out


def cgroup_ids_under(path: str) -> set[int]:
    """Ids of a cgroup v2 directory and every cgroup below it."""
    root = cgroup2_root()
    if root is None:
        raise UsageError("filter cgroup: no cgroup v2 hierarchy is mounted")
    full = path if path.startswith(root) else os.path.join(root, path.lstrip("/"))
    if not os.path.isdir(full):
        raise UsageError(f"filter cgroup: no cgroup at {full}")
    ids = {os.stat(full).st_ino}
    for dirpath, dirnames, _ in os.walk(full):
        ids.update(os.stat(os.path.join(dirpath, d)).st_ino for d in dirnames)
    return ids


def container_cgroups(cid: str) -> set[int]:
    """Ids of the cgroups whose path names the container (and those below)."""
    root = cgroup2_root()
    ids: set[int] = set()
    if root is None:
        return ids
    for dirpath, dirnames, _ in os.walk(root):
        for d in dirnames:
            if cid in d:
                ids |= cgroup_ids_under(os.path.join(dirpath, d))
                dirnames.remove(d)
    return ids


@dataclass(slots=True)
class Rules:
    """One parsed list (allow or deny)."""

    pids: set[int] = field(default_factory=set)
    ppids: set[int] = field(default_factory=set)
    follow: set[int] = field(default_factory=set)
    uids: set[int] = field(default_factory=set)
    comm: TextMatch | None = None
    exe: TextMatch | None = None
    cgroups: set[int] = field(default_factory=set)
    cgroup_given: bool = False
    paths: list[str] = field(default_factory=list)
    ports: list[tuple[int, int]] = field(default_factory=list)
    addrs: list[Any] = field(default_factory=list)
    dns_names: TextMatch | None = None
    types: list[str] = field(default_factory=list)
    failed_only: bool = False
    keys: set[str] = field(default_factory=set)

    @classmethod
    def parse(cls, spec: Mapping[str, Any], which: str) -> Rules:
        r = cls()
        for key, raw in spec.items():
            if key not in KEYS:
                raise UsageError(f"{which} filter: unknown key '{key}' (known: {', '.join(KEYS)})")
            values = list(raw) if isinstance(raw, list | tuple | set) else [raw]
            if not values:
                continue
            r.keys.add(key)
            where = f"{which}.{key}"
            if key == "pid":
                r.pids |= _ints(where, values)
            elif key == "ppid":
                r.ppids |= _ints(where, values)
            elif key == "follow":
                if which == "deny":
                    raise UsageError("deny filter: 'follow' only allows (deny the pids instead)")
                r.follow |= _ints(where, values)
            elif key in ("uid", "user"):
                r.uids |= _uids(where, values)
            elif key == "comm":
                r.comm = TextMatch(where, [str(v) for v in values])
                for v in r.comm.exact:
                    if len(v.encode()) > COMM_MAX:
                        raise UsageError(f"filter {where}: '{v}' is too long: task names are at most "
                                         f"{COMM_MAX} bytes")
            elif key == "exe":
                r.exe = TextMatch(where, [str(v) for v in values])
            elif key == "cgroup":
                r.cgroup_given = True
                for v in values:
                    r.cgroups |= {int(v)} if limits.decimal(str(v)) else cgroup_ids_under(str(v))
            elif key == "container":
                r.cgroup_given = True
                for v in values:
                    cid = str(v).lower()
                    if not _CONTAINER_ID.match(cid):
                        raise UsageError(f"filter {where}: '{v}' is not a container id (12-64 hex digits)")
                    found = container_cgroups(cid)
                    if not found:
                        raise UsageError(f"filter {where}: no cgroup names container {cid}")
                    r.cgroups |= found
            elif key == "path":
                r.paths += _prefixes(where, values)
            elif key == "port":
                r.ports += _ports(where, values)
            elif key == "addr":
                r.addrs += _networks(where, values)
            elif key == "dns_name":
                r.dns_names = TextMatch(where, [str(v).rstrip(".") for v in values])
            elif key == "type":
                from bpfwatch.events.types import expand_types

                r.types += sorted(expand_types([str(v) for v in values]))
            elif key == "failed_only":
                if which == "deny":
                    raise UsageError("deny filter: 'failed_only' only allows")
                r.failed_only = _bool(where, values[0])
        return r

    # -- matching (one predicate per key; a key absent from the event never matches) --

    def _port_hit(self, ev: dict[str, Any]) -> bool:
        ports = [ev.get(k) for k in ("local_port", "remote_port", "server_port")]
        return any(p is not None and a <= p <= b for p in ports for a, b in self.ports)

    def _addr_hit(self, ev: dict[str, Any]) -> bool:
        for k in ("local_addr", "remote_addr", "server_addr"):
            v = ev.get(k)
            if v is None:
                continue
            ip = ipaddress.ip_address(v)
            if any(ip.version == n.version and ip in n for n in self.addrs):
                return True
        return False

    def _path_hit(self, ev: dict[str, Any]) -> bool:
        paths = [ev.get("path"), ev.get("new_path")]
        return any(p is not None and (p == q or p.startswith(q.rstrip("/") + "/")) for p in paths
                   for q in self.paths)

    def predicates(self) -> list[tuple[str, Any]]:
        """(key, test(event) -> bool) for each key this list uses (follow excepted:
        the kernel does descendants)."""
        tests: list[tuple[str, Any]] = []
        if self.pids and not self.follow:  # with follow, the kernel's tracked set is the scope
            tests.append(("pid", lambda e: e["pid"] in self.pids))
        if self.ppids:
            tests.append(("ppid", lambda e: e["ppid"] in self.ppids))
        if self.uids:
            tests.append(("uid", lambda e: e["uid"] in self.uids))
        if self.comm:
            tests.append(("comm", lambda e: self.comm(e["comm"])))
        if self.exe:
            tests.append(("exe", lambda e: self.exe(e["exe"])))
        if self.cgroup_given:
            tests.append(("cgroup", lambda e: e["cgroup_id"] in self.cgroups))
        if self.paths:
            tests.append(("path", lambda e: not e["type"].startswith("file.") or self._path_hit(e)))
        if self.ports:
            tests.append(("port", lambda e: not _is_net(e) or self._port_hit(e)))
        if self.addrs:
            tests.append(("addr", lambda e: not _is_net(e) or self._addr_hit(e)))
        if self.dns_names:
            tests.append(("dns_name", lambda e: not e["type"].startswith("dns.") or self.dns_names(e.get("name"))))
        if self.types:
            types = set(self.types)
            tests.append(("type", lambda e: e["type"] in types))
        if self.failed_only:
            tests.append(("failed_only", lambda e: not e["type"].startswith("file.") or e["type"] == "file.io"
                          or e.get("error") is not None))
        return tests


def _is_net(ev: dict[str, Any]) -> bool:
    return ev["type"].startswith(("network.", "dns."))


def _bool(key: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"filter {key}: '{v}' is not true or false")


def parse_assignments(items: Iterable[str], which: str) -> dict[str, list[str]]:
    """CLI form: ['comm=nginx,sshd', 'port=443'] -> {'comm': [...], 'port': [...]}"""
    out: dict[str, list[str]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"--{which} '{item}': expected KEY=VALUE (keys: {', '.join(KEYS)})")
        out.setdefault(key.strip(), []).extend(v.strip() for v in value.split(","))
    return out


class Filter:
    """Allow and deny lists, parsed; `match(event)` is the whole filter."""

    def __init__(self, allow: Mapping[str, Any] | None = None, deny: Mapping[str, Any] | None = None) -> None:
        self.allow = Rules.parse(allow or {}, "allow")
        self.deny = Rules.parse(deny or {}, "deny")
        self._allow = self.allow.predicates()
        # deny wins: an event matching any deny key is dropped; keys that do not
        # apply to an event type (a port on a file event) do not deny it
        self._deny = [(k, t) for k, t in self.deny.predicates() if k not in ("path", "port", "addr", "dns_name",
                                                                          "type")]
        self._deny_scoped = self._deny_scoped_tests()

    def _deny_scoped_tests(self) -> list[Any]:
        d = self.deny
        tests: list[Any] = []
        if d.paths:
            tests.append(lambda e: e["type"].startswith("file.") and d._path_hit(e))
        if d.ports:
            tests.append(lambda e: _is_net(e) and d._port_hit(e))
        if d.addrs:
            tests.append(lambda e: _is_net(e) and d._addr_hit(e))
        if d.dns_names:
            tests.append(lambda e: e["type"].startswith("dns.") and d.dns_names(e.get("name")))
        if d.types:
            types = set(d.types)
            tests.append(lambda e: e["type"] in types)
        return tests

    @property
    def active(self) -> bool:
        return bool(self._allow or self._deny or self._deny_scoped)

    def match(self, ev: dict[str, Any]) -> bool:
        for _, test in self._allow:
            if not test(ev):
                return False
        for _, test in self._deny:
            if test(ev):
                return False
        return not any(test(ev) for test in self._deny_scoped)

    def __call__(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self.active:
            return events
        return [e for e in events if self.match(e)]
