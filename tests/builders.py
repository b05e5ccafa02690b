"""Model and config builders shared by every test: entries as the YAML file holds them, whole configs,
and the parsed `Config` / `ModelConfig` the app works with.

    cfg = config(model(fake.chat_url, "fake/a"), model(fake.chat_url, "fake/b", priority=2),
                 retry={"max_attempts": 1})
    proxy = InProcessProxy(cfg, env={"AI_PROXY_API_KEYS": CLIENT_KEY})   # tests/harness.py
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.config import Config, ModelConfig, parse_config

UPSTREAM_KEY = "sk-fake-upstream-key"
CLIENT_KEY = "test-client-key-0123456789"


def model(
    url: str,
    name: str,
    *,
    provider: str = "openai",
    token: str = UPSTREAM_KEY,
    group: str | None = "SMALL",
    priority: int = 1,
    **fields: Any,
) -> dict[str, Any]:
    """One model entry of config.yaml (a chat model at `url`); `group=None` leaves it out of groups.
    Any other field (`requests_per_minute=2`, `reasoning="split"`, ...) is passed as given."""
    entry: dict[str, Any] = {"name": name, "provider": provider, "url": url, "token": token}
    if group is not None:
        entry["model_size"] = group
    entry["priority"] = priority
    entry.update(fields)
    return entry


def config(*models: Mapping[str, Any], **sections: Any) -> dict[str, Any]:
    """A config.yaml mapping with these models and sections (`http={...}`, `retry={...}`, ...)."""
    return {"models": [dict(m) for m in models], **sections}


def parsed(raw: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
    """`raw` validated and frozen exactly as the app loads config.yaml, with `env` as the environment."""
    return parse_config(dict(raw), dict(env or {}), source="test config")


def model_config(name: str = "groq/a", **fields: Any) -> ModelConfig:
    """A `ModelConfig` built directly (no validation), for units that take one: the provider is the
    name's prefix, the URL one that never resolves."""
    provider = fields.pop("provider", name.split("/")[0] if "/" in name else "openai")
    fields.setdefault("url", "https://upstream.invalid/v1/chat/completions")
    fields.setdefault("upstream_model", name.split("/")[-1])
    fields.setdefault("token", "sk-secret-test-token")
    return ModelConfig(name=name, provider=provider, **fields)


class FakeClock:
    """An injectable `time.time`: stands still until a test (or an injected sleep) advances it."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
