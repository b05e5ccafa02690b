"""Tests of the e2e harness against a throwaway WSGI app (the real wsgi.py is not needed)."""

from __future__ import annotations

import contextlib
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import yaml

from tests.harness import GunicornServer, ServerStartError, openai_client, run_cli

pytestmark = pytest.mark.e2e

TOY_WSGI = """
import json, os, sys, time
print("toy app booting", flush=True)

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/env":
        names = ("HOST", "PORT", "WEB_CONCURRENCY", "AI_PROXY_THREADS", "AI_PROXY_API_KEYS", "EXTRA", "HOME")
        body = json.dumps({k: os.environ.get(k) for k in names}).encode()
    elif path == "/config":
        with open(os.environ["AI_PROXY_CONFIG"], "rb") as f:
            body = f.read()
    elif path == "/sleep":
        time.sleep(30)
        body = b"late"
    else:
        body = b"ok"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
"""

TOY_CONF = """
import os
bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8080')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
threads = int(os.environ.get("AI_PROXY_THREADS", "2"))
worker_class = "gthread"
graceful_timeout = 30
"""


@pytest.fixture
def toy_dir(tmp_path: Path) -> Path:
    root = tmp_path / "toy"
    (root / "app").mkdir(parents=True)
    (root / "wsgi.py").write_text(TOY_WSGI)
    (root / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    (root / "gunicorn.conf.py").write_text(TOY_CONF)
    (root / "app" / "__init__.py").write_text("")
    (root / "app" / "__main__.py").write_text(
        textwrap.dedent("""
            import os, sys
            print("cli", *sys.argv[1:], os.environ.get("EXTRA"), os.environ.get("AI_PROXY_STORAGE"))
            sys.exit(3)
        """)
    )
    return root


def test_serves_with_env_contract(toy_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI_PROXY_API_KEYS", "leaked-from-shell")
    config = {"models": [{"name": "groq/llama", "provider": "groq"}]}
    with GunicornServer(config, env={"EXTRA": "x", "HOME": None}, workers=2, threads=4, cwd=toy_dir) as srv:
        env = requests.get(f"{srv.url}/env", timeout=5).json()
        assert env == {
            "HOST": "127.0.0.1",
            "PORT": str(srv.port),
            "WEB_CONCURRENCY": "2",
            "AI_PROXY_THREADS": "4",
            "AI_PROXY_API_KEYS": None,
            "EXTRA": "x",
            "HOME": None,
        }
        assert yaml.safe_load(requests.get(f"{srv.url}/config", timeout=5).text) == config
        pids = srv.pids()
        assert len(pids) == 3 and pids[0] == srv.pid
        assert "toy app booting" in srv.log_text()
        assert srv.base_url == srv.url + "/v1"
        assert srv.stop() == 0
    assert srv.pids() == []
    assert not any(_alive(pid) for pid in pids)
    assert "toy app booting" in srv.log_text()  # kept after the temp dir is gone


def test_start_failure_raises_with_log_tail(toy_dir: Path) -> None:
    started = time.monotonic()
    server = GunicornServer("models: []\n", cwd=toy_dir, app_module="broken:app")
    with pytest.raises(ServerStartError, match="boom at import"):
        server.start()
    assert time.monotonic() - started < 15
    assert server.pids() == []


def test_stop_kills_the_group_when_shutdown_hangs(toy_dir: Path) -> None:
    srv = GunicornServer(None, cwd=toy_dir).start()
    pids = srv.pids()
    hung = threading.Thread(target=_swallow, args=(f"{srv.url}/sleep",), daemon=True)
    hung.start()
    time.sleep(0.2)  # let the request reach the worker
    started = time.monotonic()
    assert srv.stop(timeout=0.5) == -9
    assert time.monotonic() - started < 10  # the hung request would take 30 s
    assert not any(_alive(pid) for pid in pids)


def test_factory_fixture_and_openai_client(
    toy_dir: Path, gunicorn_server: Callable[..., GunicornServer]
) -> None:
    srv = gunicorn_server({"models": []}, cwd=toy_dir)
    assert requests.get(f"{srv.url}/health", timeout=5).text == "ok"
    assert srv.log_path.parent.parent.name.startswith("test_factory_fixture")
    client = openai_client(srv)
    assert str(client.base_url) == srv.base_url + "/" and client.max_retries == 0
    srv.wait_for_log("toy app booting", timeout=1)
    with pytest.raises(TimeoutError):
        srv.wait_for_log("never printed", timeout=0.1)


def test_run_cli(toy_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI_PROXY_STORAGE", "redis://from-shell")
    done = run_cli("check-config", "x.yaml", env={"EXTRA": "y"}, cwd=toy_dir)
    assert done.returncode == 3
    assert done.stdout.strip() == "cli check-config x.yaml y None"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _swallow(url: str) -> None:
    with contextlib.suppress(requests.RequestException):
        requests.get(url, timeout=10)


def test_marks_and_redis_fixture(redis_url: str, request: pytest.FixtureRequest) -> None:
    import redis

    assert request.node.get_closest_marker("redis") is not None
    client = redis.Redis.from_url(redis_url)
    assert client.dbsize() == 0  # flushed before the test
    client.set("ai-proxy-harness-check", "1")
    client.close()
