"""Edges of HTTP the proxy answers itself, always in OpenAI's error shape: doubled slashes, chunked
bodies over the limit or unreadable, unknown paths and methods, internal errors."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from tests.api.conftest import Proxy
from tests.fakes.openai import FakeOpenAI

LIMIT = 2000


@pytest.fixture
def app(proxy, fake_openai: FakeOpenAI) -> Proxy:
    model = {
        "name": "fake/a",
        "provider": "openai",
        "url": fake_openai.chat_url,
        "token": "sk-fake-upstream-key",
    }
    return proxy({"models": [model], "server": {"max_body_bytes": LIMIT}})


def body_of(size: int) -> bytes:
    base = {"model": "fake/a", "messages": [{"role": "user", "content": ""}]}
    padding = size - len(json.dumps(base).encode())
    base["messages"][0]["content"] = "x" * padding
    data = json.dumps(base).encode()
    assert len(data) == size
    return data


def post_chunked(app: Proxy, stream: Any):
    """A body without Content-Length, as a WSGI server hands over a chunked one."""
    return app.client.post(
        "/v1/chat/completions",
        input_stream=stream,
        headers={**app.auth, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def assert_openai_error(response, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.mimetype == "application/json"
    error = response.json["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert b"Traceback" not in response.data and b"<html" not in response.data.lower()
    return error


@pytest.mark.parametrize("path", ["/v1//chat/completions", "/v1/chat//completions", "/v1///chat/completions"])
def test_doubled_slashes_are_served(app: Proxy, path: str) -> None:
    response = app.post(path, {"model": "fake/a", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200
    assert response.json["choices"][0]["message"]["content"] == "Hello!"


def test_doubled_slashes_on_get(app: Proxy) -> None:
    assert app.get("/v1//models").status_code == 200


def test_chunked_body_at_the_limit_is_read(app: Proxy) -> None:
    response = post_chunked(app, io.BytesIO(body_of(LIMIT)))
    assert response.status_code == 200, response.data


def test_chunked_body_over_the_limit_is_413(app: Proxy, fake_openai: FakeOpenAI) -> None:
    error = assert_openai_error(post_chunked(app, io.BytesIO(body_of(LIMIT + 1))), 413)
    assert error["type"] == "invalid_request_error" and str(LIMIT) in error["message"]
    assert fake_openai.chat_requests == []


def test_body_with_content_length_over_the_limit_is_413(app: Proxy) -> None:
    response = app.client.post(
        "/v1/chat/completions",
        data=body_of(LIMIT + 1),
        headers={**app.auth, "Content-Type": "application/json"},
    )
    assert_openai_error(response, 413)


class BrokenChunks(io.RawIOBase):
    """A WSGI input whose server-side parser fails, as gunicorn's does on a bad chunk size."""

    class ParseError(Exception):
        pass

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:  # werkzeug's test client measures the input
        return 0

    def read(self, size: int = -1) -> bytes:
        raise self.ParseError("Invalid chunk size: 'zz'")


def test_unreadable_chunked_body_is_400(app: Proxy) -> None:
    error = assert_openai_error(post_chunked(app, BrokenChunks()), 400)
    assert error["type"] == "invalid_request_error" and "chunked" in error["message"]


def test_unknown_paths_and_methods_are_json(app: Proxy) -> None:
    assert assert_openai_error(app.get("/v1/nothing"), 404)["code"] == "not_found"
    assert assert_openai_error(app.get("/v1/chat/completions"), 405)["code"] == "method_not_allowed"


def test_internal_error_is_a_json_500_without_details(app: Proxy) -> None:
    class Broken:
        def chat(self, body: Any, trace: Any) -> Any:
            raise RuntimeError("secret internals")

    app.services.gateway = Broken()
    error = assert_openai_error(app.post("/v1/chat/completions", json.loads(body_of(200))), 500)
    assert "secret internals" not in error["message"]
