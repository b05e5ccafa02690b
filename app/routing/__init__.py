"""Routing: choose a model with quota, reserve it atomically, learn from outcomes."""

from __future__ import annotations

import re

from redis.exceptions import RedisError

from app.config import ConfigError
from app.routing.cooldown import Cooldown
from app.routing.limits import estimate_tokens
from app.routing.memory import MemoryStorage
from app.routing.redis_storage import RedisStorage
from app.routing.router import ClientCharge, Reservation, Router
from app.routing.storage import ClientPlan, Storage, UsageRow

__all__ = [
    "ClientCharge",
    "ClientPlan",
    "Cooldown",
    "MemoryStorage",
    "RedisStorage",
    "Reservation",
    "Router",
    "Storage",
    "UsageRow",
    "create_storage",
    "estimate_tokens",
]


def create_storage(url: str, namespace: str = "ai-proxy") -> Storage:
    """`memory`, or a Redis URL that must answer now (else ConfigError, one line, no password)."""
    if url == "memory":
        return MemoryStorage()
    where = re.sub(r"//[^/@]*@", "//***@", url)
    try:
        storage = RedisStorage.from_url(url, namespace)
        storage.ping()
    except (RedisError, ValueError) as exc:
        raise ConfigError(f"storage: Redis not reachable at {where}: {exc}") from None
    return storage
