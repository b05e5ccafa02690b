"""Capacity in the gateway: every open stream progresses whatever the number of others (no pool of
stream threads smaller than the streams a worker holds), and a request whose client has gone is
refused before it is routed. The same through gunicorn: tests/ops/test_capacity.py."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from app.config import parse_config
from app.errors import ClientClosedRequest
from app.events import HEARTBEAT, StreamFailed
from app.gateway import Gateway, StreamAnswer, Trace
from app.routing import Router, create_storage
from tests.gateway.fakes import ScriptedProvider, Step, chunk, usage_chunk

# More than the 256 stream threads the gateway once had: the streams beyond them stalled until
# another ended.
STREAMS = 300


def gateway(step: Step, heartbeat: float = 1.0) -> tuple[Gateway, ScriptedProvider, Router]:
    raw = {
        "models": [
            {
                "name": "fake/a",
                "provider": "openai",
                "url": "http://127.0.0.1:9/v1/chat/completions",
                "token": "sk-fake",
                "requests_per_minute": 10 * STREAMS,
            }
        ],
        "server": {"heartbeat_seconds": heartbeat},
    }
    config = parse_config(raw, {})
    router = Router(config.models, create_storage("memory"), config.routing, config.breaker)
    provider = ScriptedProvider(config.models[0], step)
    return Gateway(config, router, {"fake/a": provider}), provider, router


def body(stream: bool = True) -> dict[str, Any]:
    return {"model": "fake/a", "messages": [{"role": "user", "content": "hi"}], "stream": stream}


def test_every_one_of_300_streams_reads_on_while_all_are_open() -> None:
    # Each upstream sends its first content, then goes on only once all 300 streams are at that point
    # together, each read by its own thread: a stream whose reader waited for another stream to end
    # would leave the barrier short until it breaks (then every stream ends in StreamFailed).
    together = threading.Barrier(STREAMS, timeout=60)
    chunks = [chunk(role=True), chunk("Hel"), together, chunk("lo"), chunk(finish="stop"), usage_chunk()]
    gw, provider, _ = gateway(Step(chunks=chunks))

    def client(_: int) -> list[Any]:  # one gunicorn thread: open the stream and relay all of it
        answer = gw.chat(body(), Trace())
        assert isinstance(answer, StreamAnswer)
        return [event for event in answer.events if event is not HEARTBEAT]

    with ThreadPoolExecutor(STREAMS) as clients:
        streams = list(clients.map(client, range(STREAMS)))
    assert not together.broken
    assert provider.calls == STREAMS
    for events in streams:
        assert not any(isinstance(event, StreamFailed) for event in events)
        text = "".join((e["choices"][0]["delta"].get("content") or "") for e in events if e.get("choices"))
        assert text == "Hello"


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_gone_before_routing_is_refused_with_no_upstream_call_and_no_quota(stream: bool) -> None:
    gw, provider, router = gateway(Step())
    gone = Trace(client_gone=lambda: True)
    with pytest.raises(ClientClosedRequest) as refused:
        gw.chat(body(stream), gone)
    assert refused.value.status == 499
    assert provider.calls == 0
    assert router.snapshot()[0]["windows"][0]["used"] == 0
    # The control: a client still there is served, and counted.
    answer = gw.chat(body(stream), Trace(client_gone=lambda: False))
    if isinstance(answer, StreamAnswer):
        list(answer.events)
    assert provider.calls == 1
    assert router.snapshot()[0]["windows"][0]["used"] == 1
