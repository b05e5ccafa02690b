"""Why a key rests, as a provider adapter decides it; the router only reads the class and duration.

An adapter attaches one to the error it raises (`error.cooldown = Cooldown(...)`); the router never
looks into provider bodies.
"""

from __future__ import annotations

from dataclasses import dataclass

RATE = "rate"  # a per-minute/hour limit: that slot, until the reset named
DAILY = "daily"  # the day's quota is spent: that slot, until the reset named or the day's end
UNAVAILABLE = "unavailable"  # this key may not use this model: that slot, routing.unavailable_seconds
AUTH = "auth"  # the key is invalid or revoked: every slot of the key, then a trial request
CREDIT = "credit"  # out of credit: every slot of the key, routing.credit_retry_seconds
CLASSES = (RATE, DAILY, UNAVAILABLE, AUTH, CREDIT)
WHOLE_KEY = frozenset((AUTH, CREDIT))  # classes that rest the key value in every model


@dataclass(frozen=True, slots=True)
class Cooldown:
    """`seconds` is the reset the upstream named (used by `rate` and `daily`), or None."""

    kind: str
    seconds: float | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        if self.kind not in CLASSES:
            raise ValueError(f"unknown cooldown class {self.kind!r}; one of {', '.join(CLASSES)}")
