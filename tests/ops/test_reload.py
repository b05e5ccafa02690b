"""SIGHUP to the gunicorn master reloads config.yaml inside the running worker: added and removed
models take effect, memory-storage quota counts survive, a broken file is logged in one line while the
old config keeps serving, and a stream running meanwhile ends complete."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from typing import Any

import pytest
import yaml

from tests.harness import GunicornServer
from tests.ops.conftest import FAST_ENV, chat_body, config, get, model, stream

pytestmark = pytest.mark.e2e


def quota_used(port: int, name: str) -> int:
    status, _, body = get(port, "/v1/quota")
    assert status == 200, body
    entry = next(m for m in json.loads(body)["data"] if m["name"] == name)
    return next(w["used"] for w in entry["windows"] if w["window"] == "requests_per_minute")


def served_models(port: int) -> set[str]:
    status, _, body = get(port, "/v1/models")
    assert status == 200
    return {m["id"] for m in json.loads(body)["data"]}


def rewrite(server: GunicornServer, text: str | dict[str, Any]) -> None:
    assert server.config_path is not None
    server.config_path.write_text(text if isinstance(text, str) else yaml.safe_dump(text, sort_keys=False))


def hang_up(server: GunicornServer, done: str, occurrences: int = 1) -> int:
    """HUP the master; wait until the log written since has `occurrences` lines matching `done`.
    Returns where that part of the log starts."""
    start = len(server.log_text())
    os.kill(server.pid, signal.SIGHUP)
    deadline = time.monotonic() + 15
    while len(re.findall(done, server.log_text()[start:])) < occurrences:
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.05)
    return start


def test_sighup_reloads_models_keeps_memory_counts_and_survives_a_broken_file(gunicorn_server, fake_openai):
    one = model(fake_openai.chat_url, "fake/one")
    two = model(fake_openai.chat_url, "fake/two", group="BIG")
    server = gunicorn_server(config(one), env=FAST_ENV)  # memory storage, one worker
    pids = server.pids()
    for _ in range(3):
        assert stream(server.port, chat_body("fake/one")).status == 200
    assert quota_used(server.port, "fake/one") == 3
    assert stream(server.port, chat_body("fake/two")).status == 404

    # A slow stream is running while the config is reloaded: it must end complete.
    fake_openai.push_chat(content=[f"part{i} " for i in range(8)], chunk_delay=0.25)
    running: dict[str, Any] = {}
    body = chat_body("fake/one")
    thread = threading.Thread(target=lambda: running.update(result=stream(server.port, body)))
    thread.start()
    deadline = time.monotonic() + 10
    while len(fake_openai.chat_requests) < 4:  # the upstream has the stream's request
        assert time.monotonic() < deadline
        time.sleep(0.02)

    rewrite(server, config(one, two))
    start = hang_up(server, r"config reloaded from", occurrences=2)  # the master, then the worker
    assert "fake/two" in served_models(server.port)
    answer = stream(server.port, chat_body("fake/two"))
    assert answer.status == 200 and answer.headers["X-AI-Proxy-Model"] == "fake/two"
    assert stream(server.port, chat_body("big")).status == 200  # its new group too
    thread.join(15)
    result = running["result"]
    assert result.status == 200 and result.complete and not result.errors
    assert result.datas[-1] == "[DONE]" and result.content == "".join(f"part{i} " for i in range(8))
    assert quota_used(server.port, "fake/one") == 4  # counted before the reload: kept
    assert "Traceback" not in server.log_text()[start:]

    # A broken file: one line, and the running config keeps serving.
    rewrite(server, "models:\n  - {name: fake/three, provider: together, url: 'http://x'}\n")
    start = hang_up(server, r"config reload failed")
    time.sleep(0.3)  # let any further (wrong) lines arrive
    log = server.log_text()[start:]
    (failure,) = [line for line in log.splitlines() if "reload" in line]
    assert "fake/three" in failure and "field 'provider'" in failure and str(server.config_path) in failure
    assert "Traceback" not in log
    assert stream(server.port, chat_body("fake/two")).status == 200
    assert quota_used(server.port, "fake/one") == 4

    # Removing a model: it is gone after the next HUP, and the worker was never replaced.
    rewrite(server, config(two))
    hang_up(server, r"config reloaded from", occurrences=2)
    missing = stream(server.port, chat_body("fake/one"))
    assert missing.status == 404 and "fake/one" in missing.content + json.dumps(missing.datas)
    assert served_models(server.port) == {"fake/two", "BIG"}
    assert server.pids() == pids


def test_sighup_reaches_every_worker_and_redis_keeps_the_counts(gunicorn_server, fake_openai, redis_url):
    one = model(fake_openai.chat_url, "fake/one")
    server = gunicorn_server(config(one), env={**FAST_ENV, "REDIS_URL": redis_url}, workers=2)
    workers = set(server.pids()[1:])
    for _ in range(4):
        assert stream(server.port, chat_body("fake/one")).status == 200
    rewrite(server, config(one, model(fake_openai.chat_url, "fake/two")))
    start = hang_up(server, r"config reloaded from", occurrences=3)  # the master and both workers
    reloaded = {
        int(pid)
        for pid in re.findall(r"config reloaded from \S+ in process (\d+)", server.log_text()[start:])
    }
    assert reloaded == {server.pid, *workers}
    for _ in range(4):  # whichever worker answers serves the new model
        assert stream(server.port, chat_body("fake/two")).status == 200
    assert quota_used(server.port, "fake/one") == 4 and quota_used(server.port, "fake/two") == 4
    assert set(server.pids()[1:]) == workers
