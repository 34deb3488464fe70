"""Parsers for protocol payloads captured by sensors. They never trust input."""
