"""The committed JSON Schema is what scripts/make_schema.py generates, and
covers every event type bpfwatch can emit."""

from __future__ import annotations

import importlib.util

from bpfwatch.events.types import EVENT_TYPES
from bpfwatch.schema import SCHEMA_PATH, event_schema
from conftest import ROOT


def _generator():
    spec = importlib.util.spec_from_file_location("make_schema", ROOT / "scripts/make_schema.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_schema_is_generated():
    assert SCHEMA_PATH.read_text() == _generator().render(), "run scripts/make_schema.py"


def test_every_event_type_has_a_schema():
    assert set(event_schema()["properties"]["type"]["enum"]) == set(EVENT_TYPES)
