"""Client keys: who is calling, which models it may use, and its own quota windows.

Flask-free: the web layer passes the key it read, the gateway asks `allowed` and hands `plan` to the
router, which reserves the client's windows in the same atomic step as a model's.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from app.config import ClientConfig, ModelConfig
from app.errors import ModelNotAllowed
from app.routing.limits import client_spans
from app.routing.storage import ClientPlan

ANONYMOUS = "anonymous"  # the one client of a proxy with no keys configured


@dataclass(frozen=True, slots=True)
class Client:
    name: str  # the only way a client is shown: logs, metrics, /v1/usage
    admin: bool = False
    patterns: tuple[str, ...] = ()  # lowercase names, groups, aliases or globs; empty: every model
    plan: ClientPlan | None = None  # None: no windows of its own
    digest: bytes = field(default=b"", repr=False)  # sha256 of its key

    def may_ask(self, name: str) -> bool:
        """Does the name the client asked for match its list?"""
        if not self.patterns:
            return True
        low = name.lower()
        return any(fnmatchcase(low, pattern) for pattern in self.patterns)

    def allowed(self, asked: str, candidates: Sequence[ModelConfig]) -> list[ModelConfig]:
        """The candidates this client may use: all of them when the name it asked for is on its
        list, else those whose name or group is; none is a 403 model_not_allowed."""
        if self.may_ask(asked):
            return list(candidates)
        mine = [m for m in candidates if self.may_ask(m.name) or (m.group and self.may_ask(m.group))]
        if not mine:
            shown = asked or "(any model)"
            raise ModelNotAllowed(f"This key may not use the model '{shown}'", param="model")
        return mine


def client_from(config: ClientConfig) -> Client:
    spans = client_spans(
        config.requests_per_minute,
        config.requests_per_hour,
        config.requests_per_day,
        config.tokens_per_minute,
        config.tokens_per_day,
    )
    digest = bytes.fromhex(config.key_sha256) if config.key_sha256 else _sha256(config.key)
    return Client(
        name=config.name,
        admin=config.admin,
        patterns=tuple(p.lower() for p in config.models),
        plan=ClientPlan(config.name, spans) if spans else None,
        digest=digest,
    )


class Clients:
    """Every configured client; with none, the proxy is open and everyone is an anonymous admin."""

    def __init__(self, configs: Iterable[ClientConfig]) -> None:
        self._clients = tuple(client_from(c) for c in configs)
        self.open = not self._clients
        self.anonymous = Client(ANONYMOUS, admin=True)
        self._known: dict[str, Client] = {}  # keys that identified a client: at most one per client

    def __iter__(self):
        return iter(self._clients)

    def identify(self, key: str) -> Client | None:
        """The client whose key this is, or None. The key's sha256 is compared with every client's
        digest in constant time (no early exit), so neither timing nor a `key_sha256` config tells
        anything about a key. A key that identified a client before is found in a dict instead (no
        hashing, no comparisons): a lookup that compares strings only when their hashes (salted
        at start-up) are equal, so it tells nothing about a key that is not exactly right."""
        found = self._known.get(key)
        if found is not None:
            return found
        given = _sha256(key)
        for client in self._clients:
            if hmac.compare_digest(given, client.digest) and found is None:
                found = client
        if found is not None and len(self._known) < len(self._clients):
            self._known[key] = found
        return found


def _sha256(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()
