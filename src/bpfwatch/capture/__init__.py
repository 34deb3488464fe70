"""Capture directories: rotating JSON lines segments plus an index.json
manifest (writer), and reading them back with filters (reader)."""
