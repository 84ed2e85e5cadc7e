"""Logging: one line per event, plain text by default, JSON when LOG_FORMAT=json."""

from __future__ import annotations

import json
import logging
import sys

from flask import Flask

# Attributes every LogRecord has; anything else was passed in ``extra=`` and is worth printing.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JSONFormatter(logging.Formatter):
    """Render a record as one JSON object per line, with its ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON."""
        payload = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    """Plain text with the job fields appended as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one readable line."""
        line = super().format(record)
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and v is not None}
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in sorted(extras.items()))
        return line


def configure_logging(app: Flask) -> None:
    """Send the backhaul loggers to stderr in the configured format."""
    handler = logging.StreamHandler(sys.stderr)
    if app.config["LOG_FORMAT"] == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("backhaul", "webapp", "jobs"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
