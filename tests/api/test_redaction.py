"""Canary keys never leave the proxy: upstreams that echo the key (OpenAI's `Authorization` bearer,
Gemini's `x-goog-api-key`) in 400/404/422/429/5xx bodies, plain and streamed, and after content;
every answer body and header, /v1/quota, /metrics and the log at DEBUG are checked."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.api.conftest import LogCapture, Proxy
from tests.fakes.gemini import FakeGemini
from tests.fakes.openai import FakeOpenAI
from tests.fakes.server import Behavior, Recorded, sse

OPENAI_KEY = "sk-canary-openai-3f9a1c7e5b2d"
GEMINI_KEY = "canary-gemini-key-8e4d2a6c1f0b"
CLIENT_KEY = "canary-client-key-4b7e9d1a2c3f"
CANARIES = (OPENAI_KEY, GEMINI_KEY, CLIENT_KEY)
STATUSES = (400, 404, 422, 429, 500, 503)


def echo(status: int, header: str) -> Any:
    """An error answer that quotes the request's credential header, raw and as part of the text."""

    def answer(req: Recorded) -> Behavior:
        value = req.headers.get(header, "")
        message = f"Invalid credentials: {header}: {value} (key {value.removeprefix('Bearer ')})"
        error = {"message": message, "type": "invalid_request_error", "code": status, "status": "ERROR"}
        return Behavior(status=status, json={"error": error}, headers={"x-echo": "1"})

    return answer


@pytest.fixture
def upstreams():
    with FakeOpenAI(api_key=OPENAI_KEY) as openai, FakeGemini(api_key=GEMINI_KEY) as gemini:
        yield openai, gemini


@pytest.fixture
def app(proxy, upstreams) -> Proxy:
    openai, gemini = upstreams
    raw = {
        "models": [
            {"name": "canary/openai", "provider": "openai", "url": openai.chat_url, "token": OPENAI_KEY},
            {
                "name": "gemini/gemini-2.0-flash",
                "provider": "gemini",
                "url": gemini.base_url,
                "token": GEMINI_KEY,
            },
        ],
        "retry": {"max_attempts": 1},
        "server": {"metrics_public": False},
    }
    return proxy(raw, AI_PROXY_API_KEYS=CLIENT_KEY, AI_PROXY_LOG_LEVEL="DEBUG")


@pytest.fixture
def logs(app: Proxy) -> LogCapture:
    return LogCapture()


def assert_clean(text: str) -> None:
    for canary in CANARIES:
        assert canary not in text


def assert_response_clean(response) -> None:
    assert_clean(response.get_data(as_text=True))
    assert_clean(str(dict(response.headers)))


def ask(app: Proxy, model: str, stream: bool):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    response = app.client.post(
        "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {CLIENT_KEY}"}
    )
    response.get_data()
    response.close()  # a stream's access line is written when it closes
    return response


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("status", STATUSES)
def test_echoed_keys_are_redacted_everywhere(app: Proxy, upstreams, logs, status: int, stream: bool) -> None:
    openai, gemini = upstreams
    openai.push("chat", echo(status, "Authorization"))
    gemini.push("stream" if stream else "generate", echo(status, "x-goog-api-key"))
    for model in ("canary/openai", "gemini/gemini-2.0-flash"):
        response = ask(app, model, stream)
        assert response.status_code >= 400, response.data  # the failure happened before any content
        assert_response_clean(response)
        assert "[redacted]" in response.json["error"]["message"]
    # the echo really reached the upstream side: the fakes saw the keys
    assert openai.chat_requests[-1].headers["Authorization"] == f"Bearer {OPENAI_KEY}"
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    quota = app.client.get("/v1/quota", headers=auth)
    errors = [e["last_error"]["message"] for e in quota.json["data"] if e["last_error"]]
    assert len(errors) == 2 and all("[redacted]" in e for e in errors)
    assert_response_clean(quota)
    metrics = app.client.get("/metrics", headers=auth)
    assert metrics.status_code == 200 and b"ai_proxy_requests" in metrics.data
    assert_response_clean(metrics)
    log = logs.text()
    assert "model canary/openai failed: " in log and "[redacted]" in log  # the echo was logged, redacted
    assert_clean(log)


def test_key_echoed_inside_a_stream_after_content(app: Proxy, upstreams, logs) -> None:
    openai, _ = upstreams

    def answer(req: Recorded) -> Behavior:
        role = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        first = {**role, "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}
        error = {"error": {"message": f"token {req.headers['Authorization']} was revoked", "type": "x"}}
        return Behavior(events=[sse(first), sse(error)])

    openai.push("chat", answer)
    response = ask(app, "canary/openai", stream=True)
    assert response.status_code == 200
    assert b'"content":"Hi"' in response.data and b"[redacted]" in response.data
    assert response.data.endswith(b"data: [DONE]\n\n")
    assert_response_clean(response)
    log = logs.text()
    assert "stream_error=" in log
    assert_clean(log)


def test_log_filter_redacts_every_level_args_and_tracebacks(app: Proxy, logs, caplog) -> None:
    logger = logging.getLogger("ai_proxy.test")
    logger.debug("debug %s", OPENAI_KEY)
    logger.info("Authorization: Bearer %s", "some-other-bearer-value")
    logging.getLogger("ai_proxy.access").info(
        "POST /v1/chat/completions 200", extra={"stream_error": OPENAI_KEY}
    )
    try:
        raise ValueError(f"bad key {GEMINI_KEY}")
    except ValueError:
        logger.exception("failed with %r", {"key": CLIENT_KEY})
    log = logs.text()
    assert (
        log.count("[redacted]") >= 5
        and "stream_error=[redacted]" in log
        and "ValueError" in log
        and "Traceback" in log
    )
    assert_clean(log)
    assert "some-other-bearer-value" not in log
    # gunicorn logs on its own loggers: the filter sits on them as well
    with caplog.at_level(logging.INFO, logger="gunicorn.error"):
        logging.getLogger("gunicorn.error").warning("Invalid request from ip=1: %s", OPENAI_KEY)
    assert caplog.records and all(OPENAI_KEY not in r.getMessage() for r in caplog.records)
