"""Logging: one line per request, text or JSON (AI_PROXY_LOG_FORMAT), never secrets or bodies."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable

import orjson

# Fields the access log attaches to its records (see app.api.hooks).
FIELDS = (
    "request_id",
    "method",
    "path",
    "status",
    "client",
    "model",
    "served",
    "key",  # the served model's key as `#N` (a key pool), never its value
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


class BatchingHandler(logging.StreamHandler):
    """Formats a record in the thread that logs it; one background thread per process writes the
    lines in batches, at most `INTERVAL` seconds later. A WARNING or worse is written at once, after
    the lines queued before it.

    With a plain StreamHandler every access line takes the handler lock and makes a write(2) in the
    request thread; with 32 threads in a worker, the lock handoffs and the GIL convoy around each
    write cost ~0.15 ms of CPU per request under load, about a tenth of the whole. Lines still queued
    are written at exit (logging.shutdown flushes every handler); a SIGKILL loses at most `INTERVAL`.
    """

    def __init__(self, stream=None) -> None:
        super().__init__(stream)
        self._pending: collections.deque[str] = collections.deque()
        _batching.add(self)

    def handle(self, record: logging.LogRecord) -> bool | logging.LogRecord:
        rv = self.filter(record)
        if rv:  # no handler lock: formatting is per record, and deque.append is atomic
            self.emit(record)
        return rv

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._pending.append(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING:
            self.flush()
        elif not _writer.running:
            _writer.start()

    def flush(self) -> None:
        with self.lock:
            pending = self._pending
            lines = [pending.popleft() for _ in range(len(pending))]
            if self.stream is None:
                return
            if lines:
                self.stream.write("".join(lines))
            if hasattr(self.stream, "flush"):
                self.stream.flush()


INTERVAL = 0.05
_batching: weakref.WeakSet[BatchingHandler] = weakref.WeakSet()


class _Writer:
    """The thread that writes every BatchingHandler's queued lines, one per process."""

    def __init__(self) -> None:
        self.running = False
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            self.running = True
        threading.Thread(target=self._run, name="ai-proxy-log", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(INTERVAL)
            for handler in list(_batching):
                if handler._pending:  # a broken stream must not end the writer
                    with contextlib.suppress(Exception):
                        handler.flush()

    def forked(self) -> None:
        """In a new child: the parent writes what it had queued; the child starts its own writer."""
        self._lock = threading.Lock()
        self.running = False
        for handler in list(_batching):
            handler._pending.clear()


_writer = _Writer()
os.register_at_fork(after_in_child=_writer.forked)


class RedactingFilter(logging.Filter):
    """Redacts every record it passes, at every level: the message with its arguments, the
    exception text and the stack. A record is formatted here once; handlers reuse the result."""

    def __init__(self, redact: Callable[[str], str]) -> None:
        super().__init__()
        self.redact = redact
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format: the handler reports it (handleError), not the caller
            return True
        record.msg, record.args = self.redact(message), None
        stream_error = record.__dict__.get("stream_error")  # the access line's one free-text field
        if isinstance(stream_error, str):
            record.stream_error = self.redact(stream_error)
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


# gunicorn logs on these directly: a filter on the logger survives its handlers being replaced (HUP).
GUNICORN_LOGGERS = ("gunicorn.error", "gunicorn.access")


def setup_logging(level: str, fmt: str, redact: Callable[[str], str] | None = None) -> None:
    """Configure the `ai_proxy` loggers once per process; with `redact`, every line of ours, of
    gunicorn and of any library logging through the root handlers is redacted with it."""
    handler = BatchingHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("ai_proxy")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if redact is not None:
        redacting = RedactingFilter(redact)
        handler.addFilter(redacting)
        targets: list[logging.Filterer] = [logging.getLogger(name) for name in GUNICORN_LOGGERS]
        targets += logging.getLogger().handlers
        for name in GUNICORN_LOGGERS:
            targets += logging.getLogger(name).handlers
        for target in targets:  # replace the filter of an earlier setup (a new config, a test)
            for old in [f for f in target.filters if isinstance(f, RedactingFilter)]:
                target.removeFilter(old)
            target.addFilter(redacting)
    # urllib3 logs full URLs at DEBUG, and some providers' URLs could carry secrets.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
