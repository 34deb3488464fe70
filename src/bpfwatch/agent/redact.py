"""Redaction of secrets in command lines before any output sees them.

Each argument runs through the patterns (the first group, or the whole match,
is replaced); an argument that follows a listed flag (`--password hunter2`) is
replaced whole; `--password=hunter2` keeps the flag and loses the value."""

from __future__ import annotations

import re
from typing import Any

from bpfwatch.agent.config import RedactionConfig


class Redactor:
    def __init__(self, cfg: RedactionConfig) -> None:
        self.enabled = cfg.enabled
        self.patterns = [re.compile(p) for p in cfg.patterns]
        self.flags = set(cfg.flags)
        self.replacement = cfg.replacement
        self.redacted = 0  # arguments changed (a metric)

    def _sub(self, m: re.Match[str]) -> str:
        if m.re.groups:
            start, end = m.span(1) if m.group(1) is not None else m.span()
            whole = m.group(0)
            return whole[:start - m.start()] + self.replacement + whole[end - m.start():]
        return self.replacement

    def argv(self, argv: list[str]) -> list[str]:
        out, changed, secret_next = [], False, False
        for arg in argv:
            if secret_next:
                out.append(self.replacement)
                changed, secret_next = True, False
                continue
            flag, eq, _ = arg.partition("=")
            if flag in self.flags:
                if eq:
                    out.append(f"{flag}={self.replacement}")
                    changed = True
                else:
                    out.append(arg)
                    secret_next = True
                continue
            new = arg
            for p in self.patterns:
                new = p.sub(self._sub, new)
            changed |= new != arg
            out.append(new)
        if changed:
            self.redacted += 1
        return out

    def __call__(self, events: list[dict[str, Any]]) -> None:
        if not self.enabled:
            return
        for ev in events:
            argv = ev.get("argv")
            if argv:
                ev["argv"] = self.argv(argv)
