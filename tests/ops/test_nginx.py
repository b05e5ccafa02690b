"""deploy/nginx.conf in front of gunicorn: a real nginx on a loopback port, and a stream that arrives
chunk by chunk through it (the first chunk before the upstream even sent the last)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import REPO_ROOT, free_port
from tests.ops.conftest import FAST_ENV, chat_body, config, get, model, stream

pytestmark = pytest.mark.e2e

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).is_file()), None)
SITE = REPO_ROOT / "deploy" / "nginx.conf"


def nginx_config(prefix: Path, listen: int, upstream: int) -> Path:
    """A complete nginx.conf around deploy/nginx.conf: temp prefix, loopback ports, no daemon."""
    site = SITE.read_text()
    site, upstreams = re.subn(r"server 127\.0\.0\.1:8080;", f"server 127.0.0.1:{upstream};", site)
    site, listens = re.subn(r"listen 80;", f"listen 127.0.0.1:{listen};", site)
    assert upstreams == 1 and listens == 1, "deploy/nginx.conf changed shape: update this test"
    temp = "\n".join(
        f"    {name}_temp_path {prefix / name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = f"""
daemon off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix / "access.log"};
{temp}
{site}
}}
"""
    path = prefix / "nginx.conf"
    path.write_text(text)
    return path


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[int], int]]:
    """start(gunicorn_port) -> the port nginx listens on; stopped at teardown."""
    if NGINX is None:
        pytest.skip("nginx not installed (Debian: apt-get install -y nginx-light)")
    procs: list[subprocess.Popen[bytes]] = []

    def start(upstream: int) -> int:
        prefix = tmp_path / "nginx"
        prefix.mkdir()
        port = free_port()
        conf = nginx_config(prefix, port, upstream)
        check = subprocess.run(
            [NGINX, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stderr
        proc = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(conf)], stderr=subprocess.PIPE)
        procs.append(proc)
        deadline = time.monotonic() + 10
        while True:
            try:
                if get(port, "/health", key=None, timeout=1)[0] == 200:
                    return port
            except OSError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "nginx exited"
            assert time.monotonic() < deadline, "nginx did not answer"
            time.sleep(0.05)

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_stream_arrives_chunk_by_chunk_through_nginx(gunicorn_server, fake_openai, nginx):
    server = gunicorn_server(config(model(fake_openai.chat_url, "fake/up")), env=FAST_ENV)
    port = nginx(server.port)
    pieces = [f" part{i}" for i in range(6)]
    fake_openai.push_chat(content=pieces, chunk_delay=0.3)
    result = stream(port, chat_body("fake/up"))
    assert result.status == 200 and result.errors == [] and result.datas[-1] == "[DONE]"
    assert result.content == "".join(pieces)
    upstream = fake_openai.chat_requests[-1]
    # Order, not a time bound: the first piece was through nginx before the upstream sent its last
    # event (0.3 s apart each); a buffering proxy would hand everything over after the last.
    assert len(upstream.sent_at) >= len(pieces) + 2
    first, last_sent = result.first_content_at(), upstream.sent_at[-1]
    assert first < last_sent, (first, upstream.sent_at)
    arrivals = sorted({e.at for e in result.events if isinstance(e.data, dict)})
    assert len(arrivals) >= 5  # not one buffered lump


def test_nginx_passes_request_ids_and_errors(gunicorn_server, fake_openai, nginx):
    server = gunicorn_server(config(model(fake_openai.chat_url, "fake/up")), env=FAST_ENV)
    port = nginx(server.port)
    status, headers, body = get(port, "/v1/models", key="wrong")
    assert status == 401 and b"authentication_error" in body
    assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-ID"])  # nginx's $request_id
    result = stream(port, {**chat_body("fake/up"), "stream": False})
    assert result.status == 200 and result.headers["X-AI-Proxy-Model"] == "fake/up"
