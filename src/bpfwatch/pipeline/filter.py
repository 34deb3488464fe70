"""Filters: parsed once, split into what the kernel does and what Python does.

Exact comm names, pid sets (with descendants), a single uid and event types
go to the kernel; comm globs/regexes and several uids are checked here.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

from bpfwatch.errors import UsageError

_GLOB_CHARS = set("*?[")


@dataclass(slots=True)
class CommMatch:
    exact: set[str] = field(default_factory=set)
    patterns: list[re.Pattern[str]] = field(default_factory=list)

    @property
    def kernel_only(self) -> bool:
        return not self.patterns


def parse_comm(values: list[str]) -> CommMatch:
    """`name` exact (in kernel), `nginx*` glob, `re:^py(thon)?` or `/regex/`."""
    m = CommMatch()
    for v in values:
        if not v:
            raise UsageError("empty --comm value")
        if v.startswith("re:") or (len(v) > 1 and v.startswith("/") and v.endswith("/")):
            src = v[3:] if v.startswith("re:") else v[1:-1]
            try:
                m.patterns.append(re.compile(src))
            except re.error as e:
                raise UsageError(f"bad regex '{src}' in --comm: {e}") from None
        elif _GLOB_CHARS & set(v):
            m.patterns.append(re.compile(fnmatch.translate(v)))
        else:
            if len(v.encode()) > 15:
                raise UsageError(f"--comm '{v}': process names are at most 15 bytes (the kernel's comm)")
            m.exact.add(v)
    return m


class EventFilter:
    """The part of the filters the kernel cannot do."""

    def __init__(self, comm: CommMatch | None = None, uids: set[int] | None = None,
                 types: set[str] | None = None) -> None:
        self.comm = comm if comm and comm.patterns else None
        self.uids = uids if uids and len(uids) > 1 else None
        self.types = types

    @property
    def active(self) -> bool:
        return self.comm is not None or self.uids is not None or self.types is not None

    def match(self, ev: dict[str, Any]) -> bool:
        if self.types is not None and ev["type"] not in self.types:
            return False
        if self.uids is not None and ev["uid"] not in self.uids:
            return False
        if self.comm is not None:
            c = ev["comm"]
            if c not in self.comm.exact and not any(p.search(c) for p in self.comm.patterns):
                return False
        return True

    def __call__(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self.active:
            return events
        return [e for e in events if self.match(e)]
