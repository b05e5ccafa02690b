"""Client keys in-process over a fake OpenAI upstream: their own windows, allowed models, the
filtered model list, admin-only endpoints, x-api-key, key_sha256, and /v1/usage numbers equal to
the usage the upstream reported."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from tests.api.conftest import CLIENT_KEY, LogCapture, Proxy, sse_lines
from tests.fakes.openai import FakeOpenAI

UPSTREAM_KEY = "sk-fake-upstream-key"
ALICE_KEY = "alice-key-7f3a9c2e51"
BOB_KEY = "bob-key-0d4e8b6a13"
CAROL_KEY = "carol-key-93b1e07c4d"


def models(fake: FakeOpenAI) -> list[dict[str, Any]]:
    def one(name: str, size: str) -> dict[str, Any]:
        return {
            "name": name,
            "provider": "openai",
            "url": fake.chat_url,
            "token": UPSTREAM_KEY,
            "model_size": size,
        }

    return [one("openai/small-a", "SMALL"), one("openai/small-b", "SMALL"), one("openai/big", "BIG")]


def config(fake: FakeOpenAI, *clients: dict[str, Any], **server: Any) -> dict[str, Any]:
    return {
        "models": models(fake),
        "clients": list(clients),
        "server": {"heartbeat_seconds": 5, **server},
        "http": {"connect_timeout": 2, "read_timeout": 10},
    }


def alice(**fields: Any) -> dict[str, Any]:
    return {"name": "alice", "key": ALICE_KEY, **fields}


def bob(**fields: Any) -> dict[str, Any]:
    return {"name": "bob", "key": BOB_KEY, **fields}


def chat(model: str = "SMALL", stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    return body


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def post(proxy: Proxy, key: str, body: dict[str, Any]):
    """The whole answer, closed (which writes its access line and counts it in the metrics)."""
    answer = proxy.client.post("/v1/chat/completions", json=body, headers=bearer(key))
    answer.get_data()
    answer.close()
    return answer


def test_a_clients_window_is_a_429_naming_it_and_other_clients_go_on(proxy, fake_openai) -> None:
    p = proxy(config(fake_openai, alice(requests_per_minute=3), bob()))
    assert [post(p, ALICE_KEY, chat()).status_code for _ in range(3)] == [200, 200, 200]
    refused = post(p, ALICE_KEY, chat())
    assert refused.status_code == 429
    error = refused.get_json()["error"]
    assert error["code"] == "client_quota_exceeded"
    assert "requests_per_minute (3)" in error["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert len(fake_openai.chat_requests) == 3  # the refused request reached no upstream
    assert post(p, BOB_KEY, chat()).status_code == 200  # bob's own (absent) limits
    assert post(p, CLIENT_KEY, chat()).status_code == 200  # server.api_keys: unlimited admins


def test_a_clients_token_window_settles_to_the_reported_usage(proxy, fake_openai) -> None:
    p = proxy(config(fake_openai, alice(tokens_per_minute=1000)))
    body = {**chat(), "max_tokens": 700}  # reserves ~700, the upstream reports 30
    for _ in range(4):
        fake_openai.push_chat(prompt_tokens=20, completion_tokens=10)
        assert post(p, ALICE_KEY, body).status_code == 200
    # Without settling, the second request would already have been refused.
    fake_openai.push_chat(prompt_tokens=20, completion_tokens=10)
    assert post(p, ALICE_KEY, {**chat(), "max_tokens": 950}).status_code == 429


def test_models_outside_the_list_are_403_and_not_listed(proxy, fake_openai) -> None:
    p = proxy(config(fake_openai, alice(models=["small"]), bob(models=["openai/big", "openai/small-*"])))
    assert post(p, ALICE_KEY, chat("SMALL")).status_code == 200
    assert post(p, ALICE_KEY, chat("openai/small-b")).status_code == 200  # a member of its group
    denied = post(p, ALICE_KEY, chat("openai/big"))
    assert denied.status_code == 403
    assert denied.get_json()["error"]["code"] == "model_not_allowed"
    assert post(p, ALICE_KEY, chat("BIG")).status_code == 403
    assert len(fake_openai.chat_requests) == 2
    listed = {m["id"] for m in p.client.get("/v1/models", headers=bearer(ALICE_KEY)).get_json()["data"]}
    assert listed == {"openai/small-a", "openai/small-b", "SMALL"}
    listed = {m["id"] for m in p.client.get("/v1/models", headers=bearer(BOB_KEY)).get_json()["data"]}
    assert listed == {"openai/small-a", "openai/small-b", "openai/big", "SMALL", "BIG"}
    assert post(p, BOB_KEY, chat("BIG")).status_code == 200
    everything = {m["id"] for m in p.client.get("/v1/models", headers=bearer(CLIENT_KEY)).get_json()["data"]}
    assert everything == {"openai/small-a", "openai/small-b", "openai/big", "SMALL", "BIG"}


def test_a_group_asked_by_a_client_allowed_only_some_members_uses_those(proxy, fake_openai) -> None:
    p = proxy(config(fake_openai, alice(models=["openai/small-b"])))
    for _ in range(3):
        answer = post(p, ALICE_KEY, chat("SMALL"))
        assert answer.status_code == 200
        assert answer.headers["X-AI-Proxy-Model"] == "openai/small-b"


def test_x_api_key_and_key_sha256_identify_clients(proxy, fake_openai) -> None:
    digest = hashlib.sha256(CAROL_KEY.encode()).hexdigest()
    p = proxy(
        config(fake_openai, alice(requests_per_minute=1), {"name": "carol", "key_sha256": digest.upper()})
    )
    assert (
        p.client.post("/v1/chat/completions", json=chat(), headers={"x-api-key": ALICE_KEY}).status_code
        == 200
    )
    # The same client, whichever header: its window is spent.
    assert p.client.post("/v1/chat/completions", json=chat(), headers=bearer(ALICE_KEY)).status_code == 429
    assert post(p, CAROL_KEY, chat()).status_code == 200
    assert (
        p.client.post("/v1/chat/completions", json=chat(), headers={"x-api-key": CAROL_KEY}).status_code
        == 200
    )
    for headers in (bearer(digest), {"x-api-key": "wrong"}, {}, bearer(CAROL_KEY + "x")):
        denied = p.client.post("/v1/chat/completions", json=chat(), headers=headers)
        assert denied.status_code == 401
        assert denied.headers["WWW-Authenticate"] == "Bearer"
        assert CAROL_KEY not in denied.get_data(as_text=True)


def test_admin_only_endpoints(proxy, fake_openai) -> None:
    p = proxy(config(fake_openai, alice(), bob(admin=True)))
    for path in ("/v1/quota", "/metrics", "/status/disabled"):
        denied = p.client.get(path, headers=bearer(ALICE_KEY))
        assert denied.status_code == 403, path
        assert denied.get_json()["error"]["type"] == "permission_error"
        assert p.client.get(path, headers=bearer(BOB_KEY)).status_code == 200
        assert p.client.get(path, headers=bearer(CLIENT_KEY)).status_code == 200
    public = proxy(config(fake_openai, alice(), metrics_public=True))
    assert public.client.get("/metrics").status_code == 200
    assert public.client.get("/v1/quota", headers=bearer(ALICE_KEY)).status_code == 403


def reported_usage(answer) -> dict[str, int]:
    if answer.mimetype == "text/event-stream":
        chunks = [json.loads(b[6:]) for b in sse_lines(answer.get_data()) if b.startswith(b"data: {")]
        return next(c["usage"] for c in chunks if c.get("usage"))
    return answer.get_json()["usage"]


def test_usage_per_client_day_and_model_equals_what_the_upstream_reported(proxy, fake_openai) -> None:
    p = proxy(config(fake_openai, alice(), bob()))
    expected: dict[tuple[str, str], list[int]] = {}
    plan = [
        (ALICE_KEY, "alice", "openai/small-a", False, 11, 5),
        (ALICE_KEY, "alice", "openai/small-a", True, 13, 7),
        (ALICE_KEY, "alice", "openai/big", False, 17, 3),
        (BOB_KEY, "bob", "openai/big", True, 19, 2),
    ]
    for key, name, model, stream, prompt, completion in plan:
        fake_openai.push_chat(prompt_tokens=prompt, completion_tokens=completion)
        body = {**chat(model, stream), "stream_options": {"include_usage": True}} if stream else chat(model)
        answer = post(p, key, body)
        assert answer.status_code == 200
        usage = reported_usage(answer)
        row = expected.setdefault((name, model), [0, 0, 0])
        row[0] += 1
        row[1] += usage["prompt_tokens"]
        row[2] += usage["completion_tokens"]
    assert expected[("alice", "openai/small-a")] == [2, 24, 12]  # the fake's numbers came through

    def rows(key: str, query: str = "") -> dict[tuple[str, str], list[int]]:
        answer = p.client.get(f"/v1/usage?days=2{query}", headers=bearer(key))
        assert answer.status_code == 200
        data = answer.get_json()["data"]
        assert len({r["date"] for r in data}) == 1
        return {
            (r["client"], r["model"]): [r["requests"], r["prompt_tokens"], r["completion_tokens"]]
            for r in data
        }

    assert rows(CLIENT_KEY) == expected  # an admin sees everyone
    assert rows(ALICE_KEY) == {k: v for k, v in expected.items() if k[0] == "alice"}
    assert rows(BOB_KEY) == {k: v for k, v in expected.items() if k[0] == "bob"}
    assert rows(CLIENT_KEY, "&client=bob") == {k: v for k, v in expected.items() if k[0] == "bob"}
    assert p.client.get("/v1/usage?client=bob", headers=bearer(ALICE_KEY)).status_code == 403
    for bad in ("0", "36", "x"):
        answer = p.client.get(f"/v1/usage?days={bad}", headers=bearer(ALICE_KEY))
        assert answer.status_code == 400
        assert answer.get_json()["error"]["param"] == "days"


def test_usage_survives_a_restart_with_redis(proxy, fake_openai, redis_url) -> None:
    raw = {**config(fake_openai, alice()), "storage": redis_url}
    fake_openai.push_chat(prompt_tokens=8, completion_tokens=4)
    assert post(proxy(raw), ALICE_KEY, chat()).status_code == 200
    again = proxy(raw)  # a new process over the same Redis
    data = again.client.get("/v1/usage?days=1", headers=bearer(ALICE_KEY)).get_json()["data"]
    assert [(r["client"], r["requests"], r["prompt_tokens"], r["completion_tokens"]) for r in data] == [
        ("alice", 1, 8, 4)
    ]


def test_logs_and_metrics_name_the_client_never_its_key(proxy, fake_openai) -> None:
    p = proxy(config(fake_openai, alice(requests_per_minute=1), bob(admin=True)))
    logs = LogCapture()
    fake_openai.push_chat(prompt_tokens=6, completion_tokens=2)
    assert post(p, ALICE_KEY, chat()).status_code == 200
    assert post(p, ALICE_KEY, chat()).status_code == 429
    text = logs.text()
    access = [line for line in text.splitlines() if " ai_proxy.access: POST /v1/chat/completions" in line]
    assert len(access) == 2 and all(" client=alice " in line for line in access), text
    assert ALICE_KEY not in text
    metrics = p.client.get("/metrics", headers=bearer(BOB_KEY)).get_data(as_text=True)
    assert 'ai_proxy_client_requests_total{client="alice",status="200"} 1.0' in metrics
    assert 'ai_proxy_client_requests_total{client="alice",status="429"} 1.0' in metrics
    assert 'ai_proxy_client_tokens_total{client="alice",type="prompt"} 6.0' in metrics
    assert ALICE_KEY not in metrics and BOB_KEY not in metrics


def test_an_open_proxy_serves_everyone_as_an_unlimited_admin(proxy, fake_openai) -> None:
    p = proxy(config(fake_openai), AI_PROXY_API_KEYS="")
    assert p.client.post("/v1/chat/completions", json=chat()).status_code == 200
    assert p.client.get("/v1/quota").status_code == 200
    data = p.client.get("/v1/usage").get_json()["data"]
    assert [(r["client"], r["requests"]) for r in data] == [("anonymous", 1)]


@pytest.mark.parametrize("stream", [False, True])
def test_a_failed_request_gives_its_client_tokens_back(proxy, fake_openai, stream) -> None:
    raw = {**config(fake_openai, alice(tokens_per_minute=1000)), "retry": {"max_attempts": 1}}
    raw["routing"] = {"cooldown_seconds": 0}
    p = proxy(raw)
    body = {**chat("openai/big", stream), "max_tokens": 900}
    fake_openai.push_error("server_error")
    assert post(p, ALICE_KEY, body).status_code == 502
    fake_openai.push_chat(prompt_tokens=5, completion_tokens=5)
    assert post(p, ALICE_KEY, body).status_code == 200  # 900 fit again: the failure was refunded
