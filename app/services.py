"""Everything a running proxy holds, built once from the configuration and stored on the app."""

from __future__ import annotations

import time
from dataclasses import dataclass

from app.config import Config
from app.gateway import Gateway
from app.http import SessionPool
from app.providers import Provider, build_provider
from app.routing import Router, Storage, create_storage


@dataclass(slots=True)
class Services:
    config: Config
    sessions: SessionPool
    storage: Storage
    router: Router
    providers: dict[str, Provider]
    gateway: Gateway
    started_at: float

    def close(self) -> None:
        for provider in self.providers.values():
            provider.close()
        self.sessions.close()


def build_services(config: Config, previous: Services | None = None) -> Services:
    """Sessions, storage, router, one provider per enabled model, and the gateway over them.

    On a reload, `previous` lends its storage (quota counts live there, even in memory) and its
    sessions when their settings did not change; it is not closed, as in-flight answers still use it.
    """
    keep = previous is not None and previous.config.storage == config.storage
    storage = previous.storage if keep else create_storage(config.storage, namespace="ai-proxy")
    keep = previous is not None and previous.config.http == config.http
    sessions = previous.sessions if keep else SessionPool(config.http)
    router = Router(config.models, storage, config.routing, config.breaker, clock=time.time)
    providers = {m.name: build_provider(m, sessions, config.http) for m in config.enabled_models}
    gateway = Gateway(config, router, providers)
    return Services(config, sessions, storage, router, providers, gateway, time.time())
