"""The event model: one schema for every output (docs/events.md)."""

from bpfwatch.events.types import EVENT_TYPES, expand_types

__all__ = ["EVENT_TYPES", "expand_types"]
