"""`aliases:` (exact names win, first glob wins), GET /v1/models with aliases and GET /v1/models/{id}."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from app import create_app
from app.config import BreakerConfig, ConfigError, RoutingConfig, alias_target, parse_config
from app.errors import ModelNotFound
from app.routing import MemoryStorage, Router
from tests.fakes.openai import FakeOpenAI

KEY = "alias-client-key"


def raw_config(url: str = "http://127.0.0.1:9/v1/chat/completions", **extra: Any) -> dict[str, Any]:
    def model(name: str, group: str) -> dict[str, Any]:
        return {"name": name, "provider": "openai", "url": url, "token": "sk-up", "model_size": group}

    return {
        "models": [model("groq/llama-3.1-8b", "SMALL"), model("big/one", "BIG"), model("claude-special", "")],
        "aliases": {"claude-*haiku*": "SMALL", "claude-*": "BIG", "gpt-5*": "groq/llama-3.1-8b"},
        "server": {"api_keys": [KEY]},
        **extra,
    }


def test_aliases_keep_file_order():
    config = parse_config(raw_config(), {})
    assert config.aliases == (
        ("claude-*haiku*", "SMALL"),
        ("claude-*", "BIG"),
        ("gpt-5*", "groq/llama-3.1-8b"),
    )
    assert alias_target(config.aliases, "claude-3-5-haiku-latest") == "SMALL"  # first match wins
    assert alias_target(config.aliases, "Claude-Opus-4-8") == "BIG"  # any case
    assert alias_target(config.aliases, "gemini-pro") is None


@pytest.mark.parametrize(
    ("aliases", "message"),
    [
        ({"claude-*": "HUGE"}, "alias 'claude-*': target 'HUGE' is neither a model nor a group"),
        ({"claude-*": ""}, "alias 'claude-*': target must be a model or group name"),
        (["claude-*"], "field 'aliases': must be a mapping"),
    ],
)
def test_bad_aliases_are_config_errors(aliases, message):
    with pytest.raises(ConfigError, match=r"^cfg\.yaml: ") as caught:
        parse_config(raw_config(aliases=aliases), {}, source="cfg.yaml")
    assert message in str(caught.value)


def router_for(raw: dict[str, Any]) -> Router:
    config = parse_config(raw, {})
    return Router(config.models, MemoryStorage(), RoutingConfig(), BreakerConfig(), aliases=config.aliases)


def names(models) -> list[str]:
    return [m.name for m in models]


def test_resolve_exact_names_win_over_aliases():
    router = router_for(raw_config())
    assert names(router.resolve("claude-special", "chat")) == ["claude-special"]  # a model, not "claude-*"
    assert names(router.resolve("claude-opus-4-8", "chat")) == ["big/one"]
    assert names(router.resolve("claude-haiku-4-5", "chat")) == ["groq/llama-3.1-8b"]
    assert names(router.resolve("gpt-5.1-codex", "chat")) == ["groq/llama-3.1-8b"]
    assert names(router.resolve("small", "chat")) == ["groq/llama-3.1-8b"]
    with pytest.raises(ModelNotFound):
        router.resolve("mistral-large", "chat")


def test_an_alias_matching_a_group_name_does_not_shadow_it():
    router = router_for(raw_config(aliases={"*": "BIG"}))
    assert names(router.resolve("SMALL", "chat")) == ["groq/llama-3.1-8b"]
    assert names(router.resolve("anything", "chat")) == ["big/one"]


def test_an_alias_to_a_disabled_model_is_not_found():
    raw = raw_config(aliases={"gpt-*": "off/model"})
    raw["models"].append(
        {"name": "off/model", "provider": "openai", "url": "http://127.0.0.1:9/x", "token": "${UNSET_KEY}"}
    )
    router = router_for(raw)
    assert "off/model" in [m.name for m in parse_config(raw, {}).models]
    with pytest.raises(ModelNotFound):
        router.resolve("gpt-4o", "chat")


@pytest.fixture
def alias_upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="sk-up") as server:
        yield server


@pytest.fixture
def client(alias_upstream: FakeOpenAI):
    app = create_app(parse_config(raw_config(alias_upstream.chat_url), {}))
    return app.test_client()


AUTH = {"Authorization": f"Bearer {KEY}"}


def test_models_list_has_the_aliases(client):
    ids = [m["id"] for m in client.get("/v1/models", headers=AUTH).get_json()["data"]]
    groups_and_aliases = ["BIG", "SMALL", "claude-*haiku*", "claude-*", "gpt-5*"]
    assert ids == ["groq/llama-3.1-8b", "big/one", "claude-special", *groups_and_aliases]


@pytest.mark.parametrize(
    ("model_id", "owner"),
    [("groq/llama-3.1-8b", "openai"), ("small", "ai-proxy"), ("claude-opus-4-8", "ai-proxy")],
)
def test_get_one_model(client, model_id, owner):
    answer = client.get(f"/v1/models/{model_id}", headers=AUTH)
    assert answer.status_code == 200
    assert answer.get_json() == {
        "id": model_id,
        "object": "model",
        "created": answer.get_json()["created"],
        "owned_by": owner,
    }
    assert client.get(f"/models/{model_id}", headers=AUTH).get_json()["id"] == model_id


def test_get_unknown_model_is_a_404(client):
    answer = client.get("/v1/models/acme/nothing", headers=AUTH)
    assert answer.status_code == 404
    assert answer.get_json()["error"]["code"] == "model_not_found"
    assert client.get("/v1/models/groq/llama-3.1-8b").status_code == 401


def test_chat_through_an_alias_names_the_model_that_served(client, alias_upstream: FakeOpenAI):
    body = {"model": "claude-opus-4-8", "messages": [{"role": "user", "content": "hi"}]}
    answer = client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["model"] == "big/one" and answer.headers["X-AI-Proxy-Model"] == "big/one"
    assert alias_upstream.chat_requests[-1].json["model"] == "big/one"


def test_get_one_model_follows_a_clients_allow_list(alias_upstream: FakeOpenAI):
    raw = raw_config(alias_upstream.chat_url)
    raw["clients"] = [{"name": "bob", "key": "bob-key-123456", "models": ["SMALL"]}]
    client = create_app(parse_config(raw, {})).test_client()
    bob = {"x-api-key": "bob-key-123456"}
    assert client.get("/v1/models/claude-haiku-4-5", headers=bob).status_code == 200  # alias -> SMALL
    assert client.get("/v1/models/small", headers=bob).status_code == 200
    assert client.get("/v1/models/big/one", headers=bob).status_code == 404
    assert client.get("/v1/models/big/one", headers=AUTH).status_code == 200  # the admin key sees all
    listed = [m["id"] for m in client.get("/v1/models", headers=bob).get_json()["data"]]
    assert "big/one" not in listed and "SMALL" in listed
