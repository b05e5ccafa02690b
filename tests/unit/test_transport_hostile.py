"""HttpProvider over the transport, in-process, against the hostile upstream (tests/fakes/hostile.py):
every bad behaviour ends with a typed error, within a wide multiple of its bound, in bounded memory."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Iterator

import pytest

from app.config import HttpConfig, ModelConfig
from app.errors import ProxyError, UpstreamError, UpstreamTimeout
from app.http import SessionPool
from app.providers.openai import OpenAICompatible
from tests.fakes.hostile import HostileServer
from tests.fakes.server import Behavior, FakeServer

HTTP = HttpConfig(
    connect_timeout=1,
    read_timeout=1,
    stream_idle_timeout=1,
    stream_max_seconds=2,
    max_response_bytes=1024 * 1024,
    max_sse_line_bytes=256 * 1024,
)
BODY = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
MEMORY_BOUND = 24 * 1024 * 1024  # 24x the cap; without caps these modes hold 100-500 MB


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    with HostileServer() as server:
        yield server


@pytest.fixture(scope="module")
def sessions() -> Iterator[SessionPool]:
    pool = SessionPool(HTTP)
    yield pool
    pool.close()


def provider(hostile: HostileServer, sessions: SessionPool, mode: str) -> OpenAICompatible:
    url = f"{hostile.url}/{mode}/openai/v1/chat/completions"
    return OpenAICompatible(
        ModelConfig(name="m", provider="openai", url=url, upstream_model="m"), sessions, HTTP
    )


def outcome(model: OpenAICompatible, stream: bool) -> tuple[ProxyError, int, float, int]:
    """(the error raised, chunks received before it, seconds taken, peak traced bytes)."""
    tracemalloc.start()
    start = time.monotonic()
    chunks = 0
    try:
        if stream:
            answer = model.stream(BODY)
            try:
                for _ in answer:
                    chunks += 1
            finally:
                answer.close()
        else:
            model.complete(BODY)
    except ProxyError as exc:
        error = exc
    else:
        pytest.fail("the hostile upstream's answer was accepted")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return error, chunks, time.monotonic() - start, peak


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("mode", ["slow-headers", "slow-body", "comments"])
def test_a_trickle_is_cut_by_its_deadline(hostile, sessions, mode: str, stream: bool) -> None:
    error, chunks, took, _ = outcome(provider(hostile, sessions, mode), stream)
    assert type(error) is UpstreamTimeout and error.status == 504
    bound = "http.stream_idle_timeout (1 s)" if stream else "http.read_timeout (1 s)"
    assert bound in error.message and "127.0.0.1" not in error.message
    assert chunks == 0
    assert took < 10 * 1  # the trickle itself would go on for minutes


def test_data_events_then_silence_time_out_after_the_events(hostile, sessions) -> None:
    error, chunks, took, _ = outcome(provider(hostile, sessions, "silence"), stream=True)
    assert type(error) is UpstreamTimeout and "without a data event" in error.message
    assert chunks == 3
    assert took < 10 * 1


def test_a_stream_that_never_ends_is_cut_at_stream_max_seconds(hostile, sessions) -> None:
    error, chunks, took, _ = outcome(provider(hostile, sessions, "endless"), stream=True)
    assert type(error) is UpstreamTimeout and "http.stream_max_seconds (2 s)" in error.message
    assert chunks >= 3  # data kept coming (4 a second): the idle deadline never fired
    assert took < 10 * 2


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("mode", ["huge", "gzip-bomb", "long-line"])
def test_an_oversized_answer_is_refused_in_bounded_memory(hostile, sessions, mode: str, stream: bool) -> None:
    error, _, took, peak = outcome(provider(hostile, sessions, mode), stream)
    assert type(error) is UpstreamError and error.status == 502
    assert "http.max_response_bytes (1048576 bytes)" in error.message or (
        stream and "http.max_sse_line_bytes (262144 bytes)" in error.message
    )
    assert peak < MEMORY_BOUND
    assert took < 10 * 1


def test_one_unterminated_line_stops_at_the_line_cap(hostile, sessions) -> None:
    error, chunks, _, _ = outcome(provider(hostile, sessions, "long-line"), stream=True)
    assert type(error) is UpstreamError and "http.max_sse_line_bytes (262144 bytes)" in error.message
    assert chunks == 0


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_reset_mid_body_is_an_upstream_error(hostile, sessions, stream: bool) -> None:
    error, _, took, _ = outcome(provider(hostile, sessions, "reset"), stream)
    assert type(error) is UpstreamError and "broke off" in error.message
    assert took < 10 * 1


def test_finished_calls_keep_their_connection_past_their_deadline() -> None:
    """A deadline that expires after its call finished must not shut the connection the next call
    took from the pool: after many short calls past their deadlines, the connection still works."""
    fake = FakeServer()
    fake.add_route("chat", "POST", "/", Behavior(json={"ok": True}))
    quick = HttpConfig(connect_timeout=1, read_timeout=0.5)
    pool = SessionPool(quick)
    try:
        with fake:
            transport = pool.transport("openai")
            for _ in range(3):
                answer = transport.post(
                    fake.url + "/v1", data=b"{}", headers={}, stream=False, model_name="m"
                )
                assert answer.read() == b'{"ok": true}'
                time.sleep(0.6)  # past the finished call's deadline
            assert len({r.client_port for r in fake.requests}) == 1
    finally:
        pool.close()
