"""The one storage interface behind quotas, cooldowns, last-used times and breaker state.

Three kinds of record: a model (its breaker mirror, fault cooldown, failing flag, last error), a
slot (one key of one model: its windows, its own rest, its last use) and a key (a key value's rest,
shared by every slot that uses that value in any model). All times are integer microseconds since
the epoch (see limits.py). Two implementations share one test suite: MemoryStorage (one process)
and RedisStorage (every worker and replica).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from pybreaker import CircuitBreakerStorage

from app.routing.limits import ModelPlan, Span

# Why a candidate was refused (Refusal.code).
COOLING = "cool"  # detail: the reason the model rests
BREAKER_OPEN = "open"
TRIAL_BUSY = "trial"  # half-open, its one trial request is in flight
REQUESTS_SPENT = "req"  # detail: the span id
TOKENS_SPENT = "tok"  # detail: the span id
TRIED = "tried"  # eligible, but excluded by the caller
SLOT_REST = "slot"  # detail: "class|reason" of the slot's own rest
KEY_REST = "key"  # detail: "class|reason" of the rest of the key value (auth, credit)
KEY_TRIAL = "ktrial"  # the key's auth rest is over and its one trial request is in flight


@dataclass(frozen=True, slots=True)
class SlotPlan:
    """One key of one model, as the storage sees it: ids only, never the key's value."""

    model: ModelPlan
    id: str  # the slot's record
    key: str  # the key value's record, shared by every slot with that value
    priority: int = field(init=False)  # the model's, copied: read for every slot on the hot path
    spans: tuple[Span, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "priority", self.model.priority)
        object.__setattr__(self, "spans", self.model.spans)


@dataclass(frozen=True, slots=True, eq=False)
class Pool:
    """One model's slots in key order, as reserve() takes them: built once per model and passed
    again on every request, so that a storage can keep the slots indexed by last use instead of
    ranking them all per request. A slot id belongs to one model."""

    slots: tuple[SlotPlan, ...]
    model: ModelPlan = field(init=False)
    ids: tuple[str, ...] = field(init=False)  # the slots' ids, in key order
    keys: tuple[str, ...] = field(init=False)  # the slots' key records, in key order
    fingerprint: str = field(init=False)  # names these ids and keys in this order, for an index

    def __post_init__(self) -> None:
        if not self.slots or any(s.model is not self.slots[0].model for s in self.slots):
            raise ValueError("a pool is one model's slots, at least one")
        ids, keys = tuple(s.id for s in self.slots), tuple(s.key for s in self.slots)
        digest = hashlib.sha256("\n".join((*ids, "", *keys)).encode()).hexdigest()[:16]
        object.__setattr__(self, "model", self.slots[0].model)
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "fingerprint", digest)


@dataclass(frozen=True, slots=True)
class ClientPlan:
    """A client's own windows, reserved in the same atomic step as a slot's (see Storage.reserve)."""

    id: str  # the client's name
    spans: tuple[Span, ...]
    counts_tokens: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "counts_tokens", any(s.tokens for s in self.spans))


class UsageRow(NamedTuple):
    """One client's use of one model on one UTC day ("YYYY-MM-DD")."""

    day: str
    client: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int


class Refusal(NamedTuple):
    index: int  # into the slots of the pools passed to reserve(), one after another
    code: str
    wait: int  # microseconds until the model may serve again (0 for TRIED)
    detail: str


@dataclass(slots=True)
class Pick:
    """reserve()'s answer: the chosen plan's index (-1 if none) or why each candidate was refused."""

    index: int = -1
    trial: bool = False  # the half-open breaker's single trial request
    key_trial: bool = False  # the trial request of a key whose auth rest is over
    failing: bool = False  # failures were reported since the model's last success
    hint: tuple[int, int, int] | None = None  # tightest request window: (limit, remaining, wait)
    refusals: list[Refusal] = field(default_factory=list)
    client_refusal: Refusal | None = None  # the client's own window refused (index -1): nothing taken


class SpanUsage(NamedTuple):
    count: int
    tokens: int
    oldest: int  # time of the oldest counted entry, 0 if none


class Rest(NamedTuple):
    until: int
    kind: str  # a cooldown class
    reason: str


NO_REST = Rest(0, "", "")


@dataclass(slots=True)
class SlotState:
    spans: list[SpanUsage]  # aligned with plan.spans
    cool_until: int = 0  # the model's own (fault) cooldown
    cool_reason: str = ""
    breaker_until: int = 0  # 0: closed; in the future: open; past: half-open
    last_used: int = 0  # the slot's
    error: str = ""  # the model's last error
    error_at: int = 0
    slot_rest: Rest = NO_REST
    key_rest: Rest = NO_REST  # kept after `until` while an auth key awaits its trial


class Storage(ABC):
    @abstractmethod
    def reserve(
        self,
        pools: Sequence[Pool],
        tried: Collection[int],
        tokens: int,
        now: int,
        rid: str,
        lease: int,
        client: ClientPlan | None = None,
    ) -> Pick:
        """Atomically pick the best eligible slot of the pools (lowest priority, then least
        recently used, then first given) and take one request and `tokens` in every window of it,
        stamping it used. Slots are numbered through the pools one after another (Pick.index,
        Refusal.index, `tried`). A model whose breaker rest is over gets one trial request, and so
        does a key whose auth rest is over, each holding off others for `lease`. Tried slots are
        only evaluated, for the refusal reasons; when no slot can serve, every slot is refused.

        With `client`, its windows are checked first and taken (as entry `rid`) in the same step as
        the slot's: a spent client window refuses with `client_refusal`, no slot able to serve
        refuses as usual, and either way neither the client nor any slot is charged."""

    @abstractmethod
    def settle(self, slot: SlotPlan, rid: str, reserved: int, used: int) -> None:
        """Replace a reservation's token estimate with the real usage, wherever it still counts."""

    @abstractmethod
    def settle_client(self, client: ClientPlan, rid: str, reserved: int, used: int) -> None:
        """settle() for the client's entry `rid`."""

    @abstractmethod
    def record_usage(self, row: UsageRow, keep_days: int) -> None:
        """Add a row's counts to its (day, client, model); days older than `keep_days` may go."""

    @abstractmethod
    def usage(self, days: Sequence[str]) -> list[UsageRow]:
        """Every (day, client, model) with counts, for the given days."""

    @abstractmethod
    def report(
        self,
        name: str,
        now: int,
        *,
        rest_until: int = 0,
        reason: str = "",
        error: str = "",
        failing: bool | None = None,
    ) -> None:
        """Record a model's outcome: rest the model until `rest_until` (never shortening a rest),
        note the error text, set or clear the failing flag (None leaves it)."""

    @abstractmethod
    def rest(self, slot: SlotPlan, now: int, rest: Rest, *, whole_key: bool) -> None:
        """Rest the slot, or with `whole_key` its key value in every model, never shortening a rest.
        Resting a key ends its trial lease."""

    @abstractmethod
    def restore_key(self, slot: SlotPlan) -> None:
        """The key's trial request succeeded: its rest ends."""

    @abstractmethod
    def set_breaker(self, name: str, open_until: int) -> None:
        """Mirror the breaker for the hot path: open until `open_until`, or 0 for closed (which also
        clears the failing flag). Either way any trial lease ends."""

    @abstractmethod
    def inspect(self, slots: Sequence[SlotPlan], now: int) -> list[SlotState]:
        """Current usage and status of each slot."""

    @abstractmethod
    def breaker_storage(self, name: str) -> CircuitBreakerStorage:
        """Where pybreaker keeps the named model's failure count and state."""
