"""Processes the benchmark starts (nginx, the fake, gunicorn) and what it reads about them from /proc."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> list[int]:
    """Live direct children of `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return sorted(found)


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all their threads), in seconds."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return ticks / CLK_TCK


def rss_mib(pid: int) -> float:
    with contextlib.suppress(OSError):
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20
    return 0.0


def threads(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.01)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Stop a process the benchmark started (its own process group), by its pid only."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def start_fake(port: int, log: Path, query: str = "") -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.fake", "--port", str(port), "--query", query],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_port(port)
    return proc


NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      default_type application/json;
      return 200 '{body}';
    }}
  }}
}}
"""


def nginx_binary() -> str | None:
    for candidate in ("nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        path = candidate if "/" in candidate else _which(candidate)
        if path and os.access(path, os.X_OK):
            return path
    return None


def _which(name: str) -> str | None:
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        path = os.path.join(folder, name)
        if os.access(path, os.X_OK):
            return path
    return None


def start_nginx(port: int, workdir: Path, body: bytes) -> subprocess.Popen[bytes]:
    """nginx answering every request with `body` (static JSON) on 127.0.0.1:`port`."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx not found; bench/run installs it (apt-get install nginx-light)")
    text = body.decode()
    assert "'" not in text and "$" not in text and "\\" not in text, "body must be nginx-quotable"
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=workdir, port=port, body=text))
    with open(workdir / "nginx.log", "ab") as out:
        proc = subprocess.Popen(
            [binary, "-p", str(workdir), "-c", str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_port(port)
    return proc


class Gunicorn:
    """`gunicorn -c gunicorn.conf.py wsgi:app` as shipped, configured only through the environment."""

    def __init__(
        self,
        config: Path,
        port: int,
        env: Mapping[str, str],
        log: Path,
        workers: int,
        app_dir: Path = REPO,
        app: str = "wsgi:app",
    ) -> None:
        self.app_dir = app_dir
        self.app = app
        self.port = port
        self.workers = workers
        self.log = log
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AI_PROXY_")},
            "AI_PROXY_CONFIG": str(config),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WEB_CONCURRENCY": str(workers),
            **env,
        }
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0

    def start(self, timeout: float = 30.0) -> Gunicorn:
        """Start it and time it to the first 200 from GET /health."""
        gunicorn = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", self.app]
        with open(self.log, "ab") as out:
            started = time.perf_counter()
            self.proc = subprocess.Popen(
                gunicorn,
                cwd=self.app_dir,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-3000:]
                self.stop()
                raise RuntimeError(f"gunicorn did not become healthy; log tail:\n{tail}")
            time.sleep(0.005)
        self.startup_s = time.perf_counter() - started
        while len(self.pids()) < 1 + self.workers:
            time.sleep(0.01)
        return self

    def _healthy(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
        try:
            conn.request("GET", "/health")
            status = conn.getresponse().status
            return status == 200 or (self.app != "wsgi:app" and status < 500)  # bench.floor: any answer
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def pids(self) -> list[int]:
        if self.proc is None or self.proc.poll() is not None:
            return []
        return [self.proc.pid, *children(self.proc.pid)]

    def worker_pids(self) -> list[int]:
        return self.pids()[1:]

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pids())

    def rss(self) -> tuple[float, list[float]]:
        """(master RSS, [each worker's RSS]) in MiB."""
        pids = self.pids()
        return rss_mib(pids[0]), [rss_mib(p) for p in pids[1:]]

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
