"""Everything a running proxy holds, built once from the configuration and stored on the app."""

from __future__ import annotations

import time
from dataclasses import dataclass

from app.config import Config
from app.gateway import Gateway
from app.http import SessionPool
from app.providers import Provider, build_provider
from app.routing import Router, create_storage


@dataclass(slots=True)
class Services:
    config: Config
    sessions: SessionPool
    router: Router
    providers: dict[str, Provider]
    gateway: Gateway
    started_at: float

    def close(self) -> None:
        for provider in self.providers.values():
            provider.close()
        self.sessions.close()


def build_services(config: Config) -> Services:
    """Sessions, storage, router, one provider per enabled model, and the gateway over them."""
    sessions = SessionPool(config.http)
    storage = create_storage(config.storage, namespace="ai-proxy")
    router = Router(
        config.models, storage, config.routing, config.breaker, clock=time.time, aliases=config.aliases
    )
    providers = {m.name: build_provider(m, sessions, config.http) for m in config.enabled_models}
    gateway = Gateway(config, router, providers)
    return Services(config, sessions, router, providers, gateway, time.time())
