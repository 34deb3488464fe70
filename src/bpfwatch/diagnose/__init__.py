"""Time-limited diagnostic traces requested as JSON (by a person or an AI
agent) and answered as one bounded JSON document."""

from __future__ import annotations

from bpfwatch.diagnose.request import RequestError, parse, parse_text
from bpfwatch.diagnose.session import Settings, clean, run, sessions, show

__all__ = ["RequestError", "Settings", "clean", "parse", "parse_text", "run", "sessions", "show"]
