"""The one storage interface behind quotas, cooldowns, last-used times and breaker state.

All times are integer microseconds since the epoch (see limits.py). Two implementations share one
test suite: MemoryStorage (one process) and RedisStorage (every worker and replica).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from pybreaker import CircuitBreakerStorage

from app.routing.limits import ModelPlan

# Why a candidate was refused (Refusal.code).
COOLING = "cool"  # detail: the reason the model rests
BREAKER_OPEN = "open"
TRIAL_BUSY = "trial"  # half-open, its one trial request is in flight
REQUESTS_SPENT = "req"  # detail: the span id
TOKENS_SPENT = "tok"  # detail: the span id
TRIED = "tried"  # eligible, but excluded by the caller


class Refusal(NamedTuple):
    index: int  # into the plans passed to reserve()
    code: str
    wait: int  # microseconds until the model may serve again (0 for TRIED)
    detail: str


@dataclass(slots=True)
class Pick:
    """reserve()'s answer: the chosen plan's index (-1 if none) or why each candidate was refused."""

    index: int = -1
    trial: bool = False  # the half-open breaker's single trial request
    failing: bool = False  # failures were reported since the model's last success
    hint: tuple[int, int, int] | None = None  # tightest request window: (limit, remaining, wait)
    refusals: list[Refusal] = field(default_factory=list)


class SpanUsage(NamedTuple):
    count: int
    tokens: int
    oldest: int  # time of the oldest counted entry, 0 if none


@dataclass(slots=True)
class ModelState:
    spans: list[SpanUsage]  # aligned with plan.spans
    cool_until: int = 0
    cool_reason: str = ""
    breaker_until: int = 0  # 0: closed; in the future: open; past: half-open
    last_used: int = 0
    error: str = ""
    error_at: int = 0


class Storage(ABC):
    @abstractmethod
    def reserve(
        self,
        plans: Sequence[ModelPlan],
        tried: Sequence[bool],
        tokens: int,
        now: int,
        rid: str,
        lease: int,
    ) -> Pick:
        """Atomically pick the best eligible plan (lowest priority, then least recently used) and
        take one request and `tokens` in every window of it, stamping it used. A plan whose breaker
        rest is over gets one trial request, holding off others for `lease`. Tried plans are only
        evaluated, for the refusal reasons."""

    @abstractmethod
    def settle(self, plan: ModelPlan, rid: str, reserved: int, used: int) -> None:
        """Replace a reservation's token estimate with the real usage, wherever it still counts."""

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
        """Record an outcome: rest the model until `rest_until` (never shortening a rest), note the
        error text, set or clear the failing flag (None leaves it)."""

    @abstractmethod
    def set_breaker(self, name: str, open_until: int) -> None:
        """Mirror the breaker for the hot path: open until `open_until`, or 0 for closed (which also
        clears the failing flag). Either way any trial lease ends."""

    @abstractmethod
    def inspect(self, plans: Sequence[ModelPlan], now: int) -> list[ModelState]:
        """Current usage and status of each plan."""

    @abstractmethod
    def breaker_storage(self, name: str) -> CircuitBreakerStorage:
        """Where pybreaker keeps the named model's failure count and state."""
