"""Routing: choose a model with quota, reserve it atomically, learn from outcomes."""

from __future__ import annotations

import re

from app.config import CLUSTER_SCHEMES, ConfigError
from app.routing.cooldown import Cooldown
from app.routing.limits import estimate_tokens
from app.routing.memory import MemoryStorage
from app.routing.redis_storage import STORAGE_ERRORS, RedisClusterStorage, RedisStorage
from app.routing.router import ClientCharge, Reservation, Router
from app.routing.storage import ClientPlan, Storage, UsageRow

__all__ = [
    "ClientCharge",
    "ClientPlan",
    "Cooldown",
    "MemoryStorage",
    "RedisClusterStorage",
    "RedisStorage",
    "Reservation",
    "Router",
    "Storage",
    "UsageRow",
    "create_storage",
    "estimate_tokens",
]


def create_storage(url: str, namespace: str = "ai-proxy") -> Storage:
    """`memory`, or a Redis URL (a server, or with `redis+cluster://` any node of a cluster) that
    must answer now (else ConfigError, one line, no password)."""
    if url == "memory":
        return MemoryStorage()
    where = re.sub(r"//[^/@]*@", "//***@", url.split("?")[0])
    kind = RedisClusterStorage if url.partition("://")[0] in CLUSTER_SCHEMES else RedisStorage
    try:
        storage = kind.from_url(url, namespace)
        storage.ping()
    except (*STORAGE_ERRORS, ValueError, TypeError) as exc:  # TypeError: an option redis-py lacks
        reason = " ".join(str(exc).split())
        raise ConfigError(f"storage: Redis not reachable at {where}: {reason}") from None
    return storage
