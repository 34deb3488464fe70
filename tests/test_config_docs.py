"""docs/config.md documents every key of every section the agent accepts."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import get_type_hints

from bpfwatch.agent.config import AgentConfig

DOC = (Path(__file__).resolve().parent.parent / "docs" / "config.md").read_text()


def _sections(cls: type, path: tuple[str, ...] = ()) -> list[tuple[str, list[str]]]:
    out = []
    plain = [f.name for f in dataclasses.fields(cls)
             if not f.metadata.get("section") and not f.metadata.get("internal")]
    if plain:
        out.append((".".join(path), plain))
    for f in dataclasses.fields(cls):
        if f.metadata.get("section"):
            out += _sections(get_type_hints(cls)[f.name], (*path, f.name))
    return out


def test_every_key_is_documented():
    missing = []
    for section, keys in _sections(AgentConfig):
        head = f"## `[{section}]`"
        assert head in DOC, f"docs/config.md has no {head}"
        body = DOC.split(head, 1)[1].split("\n## ", 1)[0]
        missing += [f"{section}.{k}" for k in keys if f"| `{k}` |" not in body]
    assert not missing, f"undocumented keys: {missing}"
