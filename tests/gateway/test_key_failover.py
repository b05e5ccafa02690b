"""Key pools in the gateway, in-process: a failure that is the key's moves to the same model's next key
before any other member; each key is called with its own provider; max_attempts counts upstream calls."""

from __future__ import annotations

from typing import Any

import pytest

from app.config import parse_config
from app.errors import ProxyError, RateLimited, UpstreamAuthError, UpstreamError
from app.gateway import Gateway, Trace
from app.http import SessionPool
from app.redact import Redactor
from app.routing import Cooldown, Router, create_storage
from app.services import build_providers
from tests.gateway.fakes import ScriptedProvider, Step

KEYS = ["sk-key-one-aaaa", "sk-key-two-bbbb", "sk-key-three-cccc"]


def entry(name: str, priority: int, keys: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "provider": "openai",
        "url": "http://127.0.0.1:9/v1/chat/completions",
        "keys": keys,
        "priority": priority,
        "model_size": "SMALL",
    }


def keyed(error: Exception, kind: str) -> Exception:
    error.cooldown = Cooldown(kind, None, f"test {kind}")
    return error


def step_name(slot: str) -> str:
    """`fake/a#2` -> `fake_a_2`, the keyword its steps are given under."""
    return slot.replace("/", "_").replace("#", "_")


class Rig:
    """Group SMALL: `fake/a` (three keys, first by priority), then `fake/b` (one key); one scripted
    provider per slot, as build_providers names them."""

    def __init__(self, max_attempts: int = 5, b_priority: int = 2, **steps: list[Step]) -> None:
        raw = {
            "models": [entry("fake/a", 1, KEYS), entry("fake/b", b_priority, ["sk-key-b-dddd"])],
            "retry": {"max_attempts": 3, "base_delay": 0, "max_delay": 0},
            "routing": {"max_attempts": max_attempts, "cooldown_seconds": 30},
            "server": {"heartbeat_seconds": 0},
        }
        self.config = parse_config(raw, {})
        self.router = Router(
            self.config.models, create_storage("memory"), self.config.routing, self.config.breaker
        )
        models = {m.name: m for m in self.config.models}
        slots = ["fake/a", "fake/a#2", "fake/a#3", "fake/b"]
        self.providers = {
            slot: ScriptedProvider(models[slot.split("#")[0]], *steps.get(step_name(slot), []))
            for slot in slots
        }
        self.gateway = Gateway(
            self.config, self.router, self.providers, redactor=Redactor(KEYS), sleep=lambda s: None
        )
        self.trace = Trace()

    def chat(self, model: str = "SMALL") -> Any:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": False}
        self.trace = Trace()  # one per request, as the web layer makes it
        return self.gateway.chat(body, self.trace)

    def calls(self) -> list[int]:
        return [p.calls for p in self.providers.values()]


def test_build_providers_gives_each_key_its_own_provider() -> None:
    config = parse_config({"models": [entry("fake/a", 1, KEYS)]}, {})
    sessions = SessionPool(config.http)
    try:
        providers = build_providers(config, sessions)
    finally:
        sessions.close()
    assert list(providers) == ["fake/a", "fake/a#2", "fake/a#3"]
    assert [p.model.token for p in providers.values()] == KEYS
    sent = [
        p.build_request({"model": "a", "messages": []}, False).headers["Authorization"]
        for p in providers.values()
    ]
    assert sent == [f"Bearer {key}" for key in KEYS]


def test_a_key_failure_in_a_group_moves_to_the_same_models_next_key_first() -> None:
    """fake/b has the same priority and was used before fake/a's other keys: least recently used
    alone would pick it, but the failed key's model keeps the request."""
    rig = Rig(b_priority=1, fake_a=[Step(), Step(error=keyed(UpstreamAuthError("revoked"), "auth"))])
    for name in ("fake/a", "fake/b", "fake/a", "fake/a"):  # last use: a#1, then b, then a#2, a#3
        rig.chat(name)
    assert rig.calls() == [1, 1, 1, 1]
    answer = rig.chat()
    assert answer.model.name == "fake/a" and rig.trace.key == "#2"
    assert rig.calls() == [2, 2, 1, 1], "fake/b is not asked while fake/a has keys"


def test_a_concrete_model_moves_through_its_keys_without_waiting() -> None:
    rate = Step(error=keyed(RateLimited("slow down", retry_after=1), "rate"))
    rig = Rig(fake_a=[rate], fake_a_2=[Step(error=keyed(RateLimited("no", retry_after=1), "rate"))])
    answer = rig.chat("fake/a")
    assert answer.model.name == "fake/a" and rig.trace.key == "#3"
    assert rig.calls() == [1, 1, 1, 0]


def test_a_fault_that_is_not_the_keys_leaves_the_model() -> None:
    rig = Rig(fake_a=[Step(error=UpstreamError("500"))])
    answer = rig.chat()
    assert answer.model.name == "fake/b"
    assert rig.calls() == [1, 0, 0, 1], "a 5xx says the model is unwell: its other keys are not tried"


def test_max_attempts_counts_upstream_calls() -> None:
    refuse = [Step(error=keyed(UpstreamAuthError("revoked"), "auth"))]
    rig = Rig(max_attempts=2, fake_a=refuse, fake_a_2=refuse)
    with pytest.raises(ProxyError) as info:
        rig.chat()
    assert rig.calls() == [1, 1, 0, 0], "fake/b is not called: two upstream calls were allowed"
    assert "fake/a#1" in info.value.message and "fake/a#2" in info.value.message
