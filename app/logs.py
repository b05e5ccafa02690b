"""Logging: one line per request, text or JSON (AI_PROXY_LOG_FORMAT), never secrets or bodies."""

from __future__ import annotations

import logging
import sys
import time

import orjson

# Fields the access log attaches to its records (see app.api.hooks).
FIELDS = (
    "request_id",
    "method",
    "path",
    "status",
    "model",
    "served",
    "attempts",
    "fallbacks",
    "upstream_ms",
    "first_token_ms",
    "total_ms",
    "stream_error",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [
            f"{name}={record.__dict__[name]}"
            for name in FIELDS[3:]
            if record.__dict__.get(name) is not None and name != "status"
        ]
        if "request_id" in record.__dict__:
            extras.append(f"request_id={record.__dict__['request_id']}")
        return f"{line} {' '.join(extras)}" if extras else line


def setup_logging(level: str, fmt: str) -> None:
    """Configure the `ai_proxy` loggers once per process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("ai_proxy")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # urllib3 logs full URLs at DEBUG, and some providers' URLs could carry secrets.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
