"""The JSON Schema every output follows (events.schema.json)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).with_name("events.schema.json")


@lru_cache(maxsize=1)
def event_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())
