"""Everything a running proxy holds, built once from the configuration and stored on the app."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from app.clients import Clients
from app.config import Config
from app.gateway import Gateway
from app.http import SessionPool
from app.providers import Provider, build_provider
from app.redact import Redactor
from app.routing import Router, Storage, create_storage

SECRET_HEADER_WORDS = ("auth", "key", "token", "secret", "cookie", "signature")


@dataclass(slots=True)
class Services:
    config: Config
    sessions: SessionPool
    storage: Storage
    router: Router
    providers: dict[str, Provider]
    gateway: Gateway
    started_at: float
    redactor: Redactor
    clients: Clients

    def close(self) -> None:
        for provider in self.providers.values():
            provider.close()
        self.sessions.close()


def config_secrets(config: Config) -> Iterator[str]:
    """Every secret the config holds: each model's token or keys (GigaChat's `id:secret` also as its secret
    part and as the Basic value sent), secret-looking model headers, client keys, and the passwords
    in the storage and proxy URLs."""
    for model in config.models:
        for token in model.keys or (model.token,):  # every key of a pool
            yield token
            if ":" in token:
                yield token.partition(":")[2]
                yield base64.b64encode(token.encode()).decode()
        for name, value in model.headers.items():
            if any(word in name.lower() for word in SECRET_HEADER_WORDS):
                yield value
    yield from config.server.api_keys
    yield from (client.key for client in config.clients if client.key)
    for url in (config.storage, config.http.proxy):
        if "@" in url:
            yield urlsplit(url).password or ""


def build_providers(config: Config, sessions: SessionPool) -> dict[str, Provider]:
    """One provider per key of each enabled model (adapters hold their key in their headers or SDK
    client): the first key's under the model's name, each further key's under its slot (`name#2`, ...),
    as `Reservation.slot` names it."""
    providers: dict[str, Provider] = {}
    for model in config.enabled_models:
        providers[model.name] = build_provider(model, sessions, config.http)
        for number, key in enumerate(model.keys[1:], 2):
            keyed = replace(model, token=key)
            providers[f"{model.name}#{number}"] = build_provider(keyed, sessions, config.http)
    return providers


def build_services(
    config: Config,
    redactor: Redactor | None = None,
    previous: Services | None = None,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Services:
    """Sessions, storage, router, one provider per enabled model, and the gateway over them;
    `redactor` (default: one over `config_secrets`) is shared with the log filter. `clock` (the
    router's quota and cooldown time) and `sleep` (the gateway's retry waits) are injectable so
    that tests can drive time instead of waiting for it.

    On a reload, `previous` lends its storage (quota counts live there, even in memory) and its
    sessions when their settings did not change; it is not closed, as in-flight answers still use it.
    """
    redactor = redactor if redactor is not None else Redactor(config_secrets(config))
    same_storage = previous is not None and previous.config.storage == config.storage
    storage = previous.storage if same_storage else create_storage(config.storage, namespace="ai-proxy")
    same_http = previous is not None and previous.config.http == config.http
    sessions = previous.sessions if same_http else SessionPool(config.http)
    router = Router(
        config.models,
        storage,
        config.routing,
        config.breaker,
        clock=clock,
        usage_days=config.server.usage_days,
        aliases=config.aliases,
    )
    providers = build_providers(config, sessions)
    gateway = Gateway(config, router, providers, redactor=redactor, sleep=sleep)
    clients = Clients(config.clients)
    return Services(config, sessions, storage, router, providers, gateway, clock(), redactor, clients)
