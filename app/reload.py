"""The WSGI app gunicorn serves: the current Flask app, rebuilt from the config file on SIGHUP.

A reload builds a whole new Flask app from the file (new and removed models, keys, limits) over the
running app's storage, so quota counts survive it, memory storage included, and swaps it in at once.
Requests already running finish on the app they started with; a broken file leaves the running app
serving and is logged in one line. gunicorn.conf.py wires SIGHUP to `reload` in the master and in
each worker (see there).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from app.config import Config

log = logging.getLogger("ai_proxy.reload")


class ReloadingApp:
    """A WSGI callable that hands each request to the current app; `reload()` replaces that app."""

    def __init__(
        self,
        load: Callable[[], Config],
        build: Callable[..., Flask],
        announce: Callable[[Config], None],
    ) -> None:
        self._load = load  # reads the file (and .env) again; raises ConfigError
        self._build = build  # create_app(config, previous=services)
        self._announce = announce  # the start-up summary lines
        self._lock = threading.Lock()
        self.current: Flask = build(load())

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return self.current(environ, start_response)

    def reload(self, quiet: bool = False) -> bool:
        """Load the config again and swap in an app built from it; False (logged in one line, the
        running app kept) when the file is broken. `quiet` leaves out the per-model warnings and the
        summary, which the gunicorn master has already logged for the same file."""
        from app.config import ConfigError

        config_log = logging.getLogger("ai_proxy.config")
        with self._lock:
            previous = self.current.extensions["ai_proxy"]
            config_log.disabled = quiet
            try:
                app = self._build(self._load(), previous=previous)
            except ConfigError as exc:
                log.error("config reload failed, the running config keeps serving: %s", exc)
                return False
            except Exception as exc:  # e.g. an adapter that cannot start: never take a worker down
                log.error("config reload failed (%s), the running config keeps serving", type(exc).__name__)
                return False
            finally:
                config_log.disabled = False
            self.current = app
        config = app.extensions["ai_proxy"].config
        if not quiet:
            self._announce(config)
        log.info("config reloaded from %s in process %d", config.source, os.getpid())
        return True
