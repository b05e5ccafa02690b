"""deploy/nginx.conf in front of gunicorn: a real nginx on a loopback port, and a stream that arrives
chunk by chunk through it (the first chunk before the upstream even sent the last)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakes.openai import FakeOpenAI
from tests.harness import REPO_ROOT, GunicornServer, free_port
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


@dataclass
class Stack:
    fake: FakeOpenAI
    server: GunicornServer
    port: int  # where nginx listens


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """nginx (deploy/nginx.conf) in front of one gunicorn over a fake OpenAI, for the whole module:
    its tests only add requests."""
    if NGINX is None:
        pytest.skip("nginx not installed (Debian: apt-get install -y nginx-light)")
    prefix = tmp_path_factory.mktemp("nginx")
    with (
        FakeOpenAI() as fake,
        GunicornServer(
            config(model(fake.chat_url, "fake/up")), env=FAST_ENV, workdir=prefix / "gunicorn"
        ) as server,
    ):
        port = free_port()
        conf = nginx_config(prefix, port, server.port)
        check = subprocess.run(
            [NGINX, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stderr
        proc = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(conf)], stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 15
            while not _answers(port):
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "nginx exited"
                assert time.monotonic() < deadline, "nginx did not answer"
                time.sleep(0.05)
            yield Stack(fake, server, port)
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


def _answers(port: int) -> bool:
    try:
        return get(port, "/health", key=None, timeout=1)[0] == 200
    except OSError:
        return False


def test_stream_arrives_chunk_by_chunk_through_nginx(stack: Stack):
    fake_openai, port = stack.fake, stack.port
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


def test_nginx_passes_request_ids_and_errors(stack: Stack):
    port = stack.port
    status, headers, body = get(port, "/v1/models", key="wrong")
    assert status == 401 and b"authentication_error" in body
    assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-ID"])  # nginx's $request_id
    result = stream(port, {**chat_body("fake/up"), "stream": False})
    assert result.status == 200 and result.headers["X-AI-Proxy-Model"] == "fake/up"
