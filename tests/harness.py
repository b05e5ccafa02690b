"""Test harness: the app in this process (`InProcessProxy`, for logic), or the real app under
gunicorn, configured only through env vars (DESIGN.md), where the process matters.

    with InProcessProxy({"models": [...]}, env={"AI_PROXY_API_KEYS": "test-key"}) as proxy:
        proxy.openai("test-key").chat.completions.create(model="SMALL", messages=[...])
        proxy.clock.advance(60)           # the router's time: quota windows, cooldowns, breakers
        assert proxy.sleeps == []         # the gateway's retry waits, recorded instead of slept

    with GunicornServer({"models": [...]}, env={"AI_PROXY_API_KEYS": "test-key"}) as server:
        client = openai_client(server)
        client.chat.completions.create(model="SMALL", messages=[...])
        assert "sk-" not in server.log_text()

Each server runs in its own session (process group), which is always killed on `stop()` and at exit.
Inherited `AI_PROXY_*`, `REDIS_URL`, `PORT`, `HOST`, `WEB_CONCURRENCY` are dropped from the
environment so a developer's shell cannot change a test; pass what a test needs via `env`.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import httpx
import openai
import yaml

from tests.builders import FakeClock, parsed

REPO_ROOT = Path(__file__).resolve().parent.parent
_SCRUBBED = {"REDIS_URL", "PORT", "HOST", "WEB_CONCURRENCY"}
_live: set[GunicornServer] = set()


class ServerStartError(RuntimeError):
    """gunicorn exited or never answered the health check; the message ends with its log tail."""


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """os.environ without the app's own variables, plus `extra` (a None value unsets a name)."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED and not k.startswith("AI_PROXY_")}
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class GunicornServer:
    """`python -m gunicorn -c <gunicorn_conf> <app_module>` in `cwd`, bound to 127.0.0.1:<port>.

    `config_yaml` is YAML text or a dict, written to a file named by `AI_PROXY_CONFIG` (None: unset).
    Nothing runs until `start()` (or `with`). Output goes to `workdir/gunicorn.log` (a private temp
    dir, removed on stop, when `workdir` is None); Prometheus' multiprocess files to
    `workdir/prometheus` unless `env` names a `PROMETHEUS_MULTIPROC_DIR` (None: let gunicorn.conf.py
    make its own). Leaving `with` kills the server (`kill()`): a test of shutdown calls `stop()`.
    """

    def __init__(
        self,
        config_yaml: str | Mapping[str, Any] | None,
        env: Mapping[str, str | None] | None = None,
        workers: int = 1,
        threads: int | None = None,
        port: int | None = None,
        *,
        cwd: Path | str = REPO_ROOT,
        app_module: str = "wsgi:app",
        gunicorn_conf: str = "gunicorn.conf.py",
        workdir: Path | None = None,
        startup_timeout: float = 15.0,
        health_path: str = "/health",
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.url + "/v1"
        self.workers = workers
        self.cwd = Path(cwd)
        self.command = [sys.executable, "-m", "gunicorn", "-c", gunicorn_conf, app_module]
        self.startup_timeout = startup_timeout
        self.health_path = health_path
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="ai-proxy-e2e-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "gunicorn.log"
        self.config_path: Path | None = None
        settings: dict[str, str | None] = {
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "WEB_CONCURRENCY": str(workers),
            "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / "prometheus"),
        }
        if threads is not None:
            settings["AI_PROXY_THREADS"] = str(threads)
        if config_yaml is not None:
            self.config_path = self.workdir / "config.yaml"
            text = (
                config_yaml
                if isinstance(config_yaml, str)
                else yaml.safe_dump(dict(config_yaml), sort_keys=False)
            )
            self.config_path.write_text(text)
            settings["AI_PROXY_CONFIG"] = str(self.config_path)
        self.env = child_env({**settings, **(env or {})})
        self._proc: subprocess.Popen[bytes] | None = None
        self._final_log: str | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start gunicorn and wait for `health_path` to answer 200 and for every worker to exist."""
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _live.add(self)
        deadline = time.monotonic() + self.startup_timeout
        while not self._healthy():
            self._check_alive_before(deadline, f"GET {self.health_path} answered 200")
            time.sleep(0.05)
        while len(self.pids()) < 1 + self.workers:
            self._check_alive_before(deadline, f"{self.workers} worker(s) were running")
            time.sleep(0.05)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Send `sig` to the master, wait up to `timeout` s, then SIGKILL the whole process group.

        Returns the master's exit code (negative: killed by that signal); None if never started.
        """
        proc = self._proc
        if proc is None:
            return None
        members = self.pids()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
                proc.wait(5)
        self._kill_group()
        _wait_gone(members, 5)  # a SIGKILLed process takes a moment to die on a busy machine
        _live.discard(self)
        if self._own_workdir and self.workdir.exists():
            self._final_log = self.log_text()
            shutil.rmtree(self.workdir, ignore_errors=True)
        return proc.returncode

    def kill(self) -> int | None:
        """SIGKILL the whole process group at once: the quick end of a test that is done with the
        server (a graceful stop waits for idle keep-alive connections, seconds per server)."""
        return self.stop(signal.SIGKILL, timeout=5)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.kill()
            raise

    def __exit__(self, *exc: object) -> None:
        self.kill()

    # -- inspection -----------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("server not started")
        return self._proc.pid

    def pids(self) -> list[int]:
        """The master and its live children (the workers), master first; [] once it is gone."""
        if self._proc is None or self._proc.poll() is not None:
            return []
        return [self.pid, *_children(self.pid)]

    def log_text(self) -> str:
        """Everything gunicorn and the app wrote to stdout/stderr so far."""
        if self._final_log is not None:
            return self._final_log
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, pattern: str, timeout: float = 5.0) -> re.Match[str]:
        """Wait until the log matches the regex `pattern`; raise TimeoutError with the tail otherwise."""
        deadline = time.monotonic() + timeout
        while (match := re.search(pattern, self.log_text())) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no log line matched {pattern!r} in {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)
        return match

    # -- internals ------------------------------------------------------------------------------

    def _healthy(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
        try:
            conn.request("GET", self.health_path)
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _check_alive_before(self, deadline: float, waiting_for: str) -> None:
        assert self._proc is not None
        code = self._proc.poll()
        if code is None and time.monotonic() < deadline:
            return
        reason = f"exited with {code}" if code is not None else f"timed out after {self.startup_timeout}s"
        self.stop(signal.SIGKILL)
        raise ServerStartError(
            f"gunicorn ({' '.join(self.command[2:])} in {self.cwd}) {reason} before {waiting_for}; "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


def _wait_gone(pids: list[int], timeout: float) -> None:
    """Wait until none of `pids` runs any more (gone, or a zombie), at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _children(pid: int) -> list[int]:
    """Direct children of `pid`, read from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return sorted(found)


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_live):
        server._kill_group()


def run_cli(
    *args: str,
    env: Mapping[str, str | None] | None = None,
    cwd: Path | str = REPO_ROOT,
    timeout: float = 30.0,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m app *args` in `cwd` with `child_env(env)`; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=cwd,
        env=child_env(env),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def openai_client(server: Any, api_key: str = "test-key", **kwargs: Any) -> openai.OpenAI:
    """An `openai.OpenAI` for `server` (anything with `.base_url`, or a URL): no retries, 10 s timeout."""
    base_url = server if isinstance(server, str) else server.base_url
    kwargs.setdefault("timeout", 10.0)
    kwargs.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=base_url, api_key=api_key, **kwargs)


class LogCapture(logging.Handler):
    """Every line the `ai_proxy` loggers write, formatted as the app formats them."""

    def __init__(self, formatter: logging.Formatter | None) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter or logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))

    def text(self) -> str:
        return "\n".join(self.lines)


class InProcessProxy:
    """The app that `create_app` builds from `config_yaml` (a mapping) and `env`, in this process.

    `client` is Flask's test client; `openai(key)` an `openai.OpenAI` that talks to the app through
    httpx's WSGI transport (streams are read lazily, as over a socket). The router runs on `clock`
    (a `FakeClock` at the real time of day unless given), and the gateway's retry waits are recorded
    in `sleeps` and advance the clock instead of sleeping. `log` holds the app's log lines.
    """

    def __init__(
        self,
        config_yaml: Mapping[str, Any],
        env: Mapping[str, str] | None = None,
        *,
        clock: FakeClock | None = None,
    ) -> None:
        from app import create_app

        self.config = parsed(config_yaml, env)
        self.clock = clock or FakeClock(time.time())
        self.sleeps: list[float] = []
        self.app = create_app(self.config, clock=self.clock, sleep=self._sleep)
        self.app.testing = True
        self.client = self.app.test_client()
        # The app's log lines go to `log` instead of stderr (formatted the same way).
        logger = logging.getLogger("ai_proxy")
        self.log = LogCapture(logger.handlers[0].formatter if logger.handlers else None)
        for handler in list(logger.handlers):
            for log_filter in handler.filters:  # the redaction of every line
                self.log.addFilter(log_filter)
            logger.removeHandler(handler)
            handler.close()
        logger.addHandler(self.log)
        self._http_clients: list[httpx.Client] = []

    @property
    def services(self) -> Any:
        return self.app.extensions["ai_proxy"]

    def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(seconds)

    def openai(self, api_key: str = "test-key", **kwargs: Any) -> openai.OpenAI:
        """An `openai.OpenAI` bound to this app: no retries, no network."""
        wsgi = httpx.Client(transport=httpx.WSGITransport(app=self.app), base_url="http://proxy.test")
        self._http_clients.append(wsgi)
        kwargs.setdefault("max_retries", 0)
        return openai.OpenAI(base_url="http://proxy.test/v1", api_key=api_key, http_client=wsgi, **kwargs)

    def close(self) -> None:
        logging.getLogger("ai_proxy").removeHandler(self.log)
        for transport in self._http_clients:
            transport.close()
        self.services.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
