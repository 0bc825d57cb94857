"""The node's log output: ``[server] log_format`` = ``"text"`` (one readable line a record)
or ``"json"`` (one JSON object a line, for a log shipper).

A JSON line always has ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger`` and
``message`` (the %-formatted text); a traceback adds ``exception``. Any field the code passes
with ``extra=`` (``log.info("...", extra={"room": room.id, "call_id": ...})``) becomes a
field of its own, so a shipper can filter on the room or the Call-ID without parsing the
message. Values JSON cannot carry are written as their ``str()``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
from typing import TextIO

__all__ = ["LOG_FORMATS", "JsonFormatter", "TEXT_FORMAT", "configure_logging"]

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# What every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",  # Python 3.12 adds it to every record
}
_RESERVED = ("time", "level", "logger", "message", "exception")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = _dt.datetime.fromtimestamp(record.created, _dt.UTC)
        data: dict[str, object] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                # an extra named like a core field must not overwrite it
                data[f"extra_{key}" if key in _RESERVED else key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exception"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: str = "text", stream: TextIO | None = None) -> None:
    """The root logger as ``[server] log_level`` and ``log_format`` say, writing to stderr."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings too become records (one JSON line each)
