"""Key pools at the web edge, in-process: the access log names the key that served (`key=#N`),
/metrics has each key's windows and rest by `#N`, /v1/quota redacts each key's rest reason, and no
part of a key's value appears in any of them."""

from __future__ import annotations

import logging
import re

import pytest

from app.api.openapi import load_spec
from app.errors import UpstreamAuthError
from app.logs import JsonFormatter, TextFormatter
from app.routing import Cooldown
from tests.api.conftest import Proxy
from tests.fakes.openai import KeyPoolFake

GOOD = ["sk-pool-good-one-1a2b3c", "sk-pool-good-two-4d5e6f"]
BAD = "sk-pool-revoked-7a8b9c"
CHAT = {"model": "openai/pooled", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def pooled(proxy) -> tuple[Proxy, KeyPoolFake]:
    with KeyPoolFake(GOOD, requests_per_minute=5) as fake:
        raw = {
            "models": [
                {
                    "name": "openai/pooled",
                    "provider": "openai",
                    "url": fake.chat_url,
                    "keys": [BAD, *GOOD],
                    "requests_per_minute": 5,
                }
            ],
            "retry": {"max_attempts": 1},
            "server": {"metrics_public": False, "heartbeat_seconds": 0},
        }
        yield proxy(raw, AI_PROXY_LOG_FORMAT="text"), fake


def test_access_log_names_the_key_that_served(pooled, caplog) -> None:
    app, fake = pooled
    caplog.set_level(logging.INFO, logger="ai_proxy")
    served = [app.post("/v1/chat/completions", CHAT) for _ in range(3)]
    for response in served:
        response.close()  # the access line is written when the response is closed
    assert [r.status_code for r in served] == [200, 200, 200]
    assert fake.calls[BAD] == 1
    access = [r for r in caplog.records if r.name == "ai_proxy.access"]
    assert [r.key for r in access] == ["#2", "#3", "#2"]
    assert access[0].attempts == 2, "the revoked key's call and the next key's"
    lines = [TextFormatter().format(r) for r in access] + [JsonFormatter().format(r) for r in access]
    assert "key=#2" in lines[0] and '"key":"#2"' in lines[3]
    for key in [BAD, *GOOD]:
        assert not any(key in line for line in lines)
        assert key not in caplog.text


def test_metrics_show_each_key_by_its_name(pooled) -> None:
    app, _ = pooled
    for _ in range(3):
        assert app.post("/v1/chat/completions", CHAT).status_code == 200
    text = app.get("/metrics").get_data(as_text=True)
    used = 'ai_proxy_key_quota_used{key="#%d",model="openai/pooled",window="requests_per_minute"} %s'
    assert used % (1, "1.0") in text  # the revoked key's one call is counted in its window
    assert used % (2, "2.0") in text and used % (3, "1.0") in text
    rest = re.search(
        r'ai_proxy_key_cooldown_seconds\{class="auth",key="#1",model="openai/pooled"\} (\S+)', text
    )
    assert rest is not None and 3500 < float(rest.group(1)) <= 3600
    assert 'ai_proxy_key_cooldown_seconds{class="none",key="#2",model="openai/pooled"} 0.0' in text
    for key in [BAD, *GOOD]:
        assert key not in text


def test_quota_redacts_each_keys_rest_reason(pooled) -> None:
    app, _ = pooled
    router = app.services.router
    models = router.resolve("openai/pooled", "chat")
    reservation = router.acquire(models, length=2, tokens=0)
    failure = UpstreamAuthError("rejected")
    failure.cooldown = Cooldown("auth", None, f"upstream said: invalid key {reservation.key}")  # an echo
    router.failed(reservation, failure)
    data = app.get("/v1/quota").get_json()["data"][0]
    rested = next(k for k in data["keys"] if k["key"] == reservation.key_label)
    assert rested["cooldown"]["class"] == "auth"
    assert rested["cooldown"]["reason"] == "upstream said: invalid key [redacted]"
    body = app.get("/v1/quota").get_data(as_text=True)
    for key in [BAD, *GOOD]:
        assert key not in body


def test_quota_answer_matches_the_openapi_description(pooled) -> None:
    app, _ = pooled
    assert app.post("/v1/chat/completions", CHAT).status_code == 200  # key #1 rests (auth), #2 served
    schemas = load_spec()["components"]["schemas"]
    entry = app.get("/v1/quota").get_json()["data"][0]
    assert set(schemas["ModelQuota"]["required"]) <= set(entry)
    for key in entry["keys"]:
        assert set(schemas["KeyQuota"]["required"]) <= set(key) <= set(schemas["KeyQuota"]["properties"])
        assert re.fullmatch(schemas["KeyQuota"]["properties"]["key"]["pattern"], key["key"])
        for window in key["windows"]:
            assert set(window) == set(schemas["QuotaWindow"]["properties"])
    rest = entry["keys"][0]["cooldown"]
    assert set(rest) == set(schemas["KeyCooldown"]["properties"])
    assert rest["class"] in schemas["KeyCooldown"]["properties"]["class"]["enum"]
