"""Capacity of one real gunicorn worker (gthread): a request whose client hung up while it waited in
the worker's queue is never sent upstream, and clients that trickle their request a byte a second do
not hold up anyone else with the default settings. The logic behind both is tested in process
(tests/api/test_client_gone.py, tests/gateway/test_capacity.py)."""

from __future__ import annotations

import http.client
import json
import re
import resource
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from statistics import median

import pytest

from tests.fakes.server import Recorded
from tests.harness import REPO_ROOT, child_env
from tests.ops.conftest import CLIENT_KEY, FAST_ENV, chat_body, config, get, model, stream

pytestmark = pytest.mark.e2e


def chat(port: int, text: str, timeout: float = 20.0) -> int:
    """A plain chat request; its status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        body = json.dumps({**chat_body("fake/capacity", text), "stream": False})
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {CLIENT_KEY}"}
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def request_head(length: int) -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {CLIENT_KEY}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def sent_text(req: Recorded) -> str:
    return req.json["messages"][0]["content"]


# A body larger than gunicorn's first read (8 KiB) is still in the socket when the app starts: the
# client's leaving shows only once the body has been read.
@pytest.mark.parametrize("padding", [0, 60_000], ids=["small", "64k-body"])
def test_a_request_whose_client_left_while_queued_is_not_sent_and_spends_no_quota(
    gunicorn_server, fake_openai, padding
):
    release = threading.Event()
    reply = fake_openai.reply(content=["Hello", "!"])

    def answer(req: Recorded):
        if sent_text(req) == "occupy":  # the two streams that hold both threads until released
            release.wait(30)
        return reply(req)

    fake_openai.set_default("chat", answer)
    entry = model(fake_openai.chat_url, "fake/capacity")
    server = gunicorn_server(config(entry), env=FAST_ENV, threads=2)
    with ThreadPoolExecutor(3) as pool:
        busy = [pool.submit(stream, server.port, chat_body("fake/capacity", "occupy")) for _ in range(2)]
        fake_openai.wait_for_requests(2, timeout=20)
        # Both threads are taken: this request waits in the queue, and its client gives up meanwhile.
        gone = {**chat_body("fake/capacity", "gone"), "stream": False, "user": "x" * padding}
        body = json.dumps(gone).encode()
        with socket.create_connection(("127.0.0.1", server.port)) as leaving:
            leaving.sendall(request_head(len(body)) + body)
        staying = pool.submit(chat, server.port, "stay")  # the control: queued too, but it waits
        release.set()
        assert [done.result(timeout=30).status for done in busy] == [200, 200]
        assert staying.result(timeout=30) == 200
    server.wait_for_log(r"POST /v1/chat/completions 499", timeout=15)
    assert sorted(sent_text(r) for r in fake_openai.chat_requests) == ["occupy", "occupy", "stay"]
    status, _, quota = get(server.port, "/v1/quota")
    assert status == 200
    windows = json.loads(quota)["data"][0]["windows"]
    assert next(w["used"] for w in windows if w["window"] == "requests_per_minute") == 3
    status, _, metrics = get(server.port, "/metrics")
    assert status == 200
    assert re.search(r'ai_proxy_requests_total\{[^}]*status="499"\} 1\.0', metrics.decode())


def test_fifty_trickling_clients_do_not_hold_up_a_normal_request(gunicorn_server, fake_openai):
    server = gunicorn_server(config(model(fake_openai.chat_url, "fake/capacity")), env=FAST_ENV)  # defaults

    def latency() -> float:
        started = time.monotonic()
        assert chat(server.port, "hi") == 200
        return time.monotonic() - started

    reference = median(latency() for _ in range(5))
    # 25 send their headers a byte a second, 25 their body (gunicorn gives each a thread meanwhile).
    tricklers = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(50)]
    for sock in tricklers[:25]:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\nX-Slow: ")
    for sock in tricklers[25:]:
        sock.sendall(request_head(1000) + b"{")
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(1.0):
            for sock in tricklers:
                sock.sendall(b"a" if sock in tricklers[:25] else b" ")

    trickling = threading.Thread(target=trickle, daemon=True)
    trickling.start()
    try:
        time.sleep(2.5)  # every trickler has been taken up by the worker and is sending
        with_tricklers = median(latency() for _ in range(5))
        for sock in tricklers:  # all 50 still open, none answered: they still hold their threads
            with pytest.raises(BlockingIOError):
                sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    finally:
        stop.set()
        trickling.join()
        for sock in tricklers:
            sock.close()
    # The target is 100 ms more at most; a wide bound against the reference of this run.
    assert with_tricklers < 5 * reference + 1.0, (reference, with_tricklers)


SIZING = """
import resource, runpy, types
conf = runpy.run_path("gunicorn.conf.py")
warnings = []
log = types.SimpleNamespace(warning=lambda text, *args: warnings.append(text % args))
conf["when_ready"](types.SimpleNamespace(log=log, cfg=types.SimpleNamespace(preload_app=False)))
print(conf["threads"], conf["worker_connections"], resource.getrlimit(resource.RLIMIT_NOFILE)[0])
print(*warnings)
"""


def sizing(soft: int, hard: int) -> tuple[list[int], str]:
    """The default threads, worker_connections and open-file limit as gunicorn.conf.py leaves them in a
    process that starts with these limits; the start-up warning, if any."""

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    done = subprocess.run(
        [sys.executable, "-c", SIZING],
        cwd=REPO_ROOT,
        env=child_env(),
        preexec_fn=limits,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    numbers, warning = done.stdout.split("\n")[:2]
    return [int(n) for n in numbers.split()], warning


def test_defaults_size_for_1500_streams_and_raise_the_open_file_limit():
    needed = 3000 + 2 * 1500 + 256
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    (threads, connections, limit), warning = sizing(1024, top)
    assert (threads, connections, limit) == (1500, 3000, top)
    assert (warning == "") == (top == needed), warning
    # A hard limit too low for the defaults: raised as far as it goes, and said at start.
    (_, _, limit), warning = sizing(1024, 2000)
    assert limit == 2000
    assert "open-file limit (ulimit -n) is 2000" in warning and str(needed) in warning
