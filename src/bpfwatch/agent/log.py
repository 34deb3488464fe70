"""The agent's log: `2026-11-22T10:00:00.123Z INFO message key=value` on
standard error (journald adds its own stamp under systemd), or one JSON object
per line. Levels are the ones operators grep for: DEBUG INFO WARN ERROR."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import orjson

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
_NAMES = {logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARN", logging.ERROR: "ERROR",
          logging.CRITICAL: "ERROR"}
LOGGER = "bpfwatch.agent"


def _stamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return getattr(record, "fields", None) or {}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        return f"{_stamp(record.created)} {_NAMES[record.levelno]} {record.getMessage()}" + (
            f" {extra}" if extra else "")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": _stamp(record.created), "level": _NAMES[record.levelno], "msg": record.getMessage(),
               **_fields(record)}
        return orjson.dumps(doc, default=str).decode()


def setup(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> logging.Logger:
    """(Re)configures the agent logger; safe to call again on reload."""
    logger = logging.getLogger(LOGGER)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(LEVELS[level])
    return logger


def get() -> logging.Logger:
    return logging.getLogger(LOGGER)


def kv(**fields: Any) -> dict[str, Any]:
    """`log.info("...", extra=kv(sensor="file"))`: structured fields."""
    return {"fields": fields}
