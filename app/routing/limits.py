"""A model's quota windows, precomputed from its config, plus duration and calendar-day math.

Times are integer microseconds since the epoch: exact arithmetic at window boundaries and the same
numbers in Python and in Redis' Lua (whose doubles hold such integers exactly).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from types import MappingProxyType
from zoneinfo import ZoneInfo

from app.config import ModelConfig

US = 1_000_000
DEFAULT_COMPLETION_TOKENS = 256


def to_us(seconds: float) -> int:
    return round(seconds * US)


def estimate_tokens(messages_chars: int, max_tokens: int | None) -> int:
    """Tokens to reserve before the call: about 4 characters a token, plus the completion budget."""
    completion = max_tokens if max_tokens and max_tokens > 0 else DEFAULT_COMPLETION_TOKENS
    return (max(messages_chars, 0) + 3) // 4 + completion


def go_duration(seconds: float) -> str:
    """Whole seconds (rounded up) the way Go prints a duration: "12s", "1m30s", "1h0m0s"."""
    total = max(0, math.ceil(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


_UNITS = MappingProxyType(
    {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}
)
_PART = r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|μs|ns|h|m|s)"
_DURATION = re.compile(f"(?:{_PART})+")
_PARTS = re.compile(_PART)


def parse_duration(text: str) -> float | None:
    """Seconds from a Go-style duration ("8.64s", "6m0s", "1h2m3s", "120ms") or plain seconds."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        if not _DURATION.fullmatch(text):
            return None
        return sum(float(number) * _UNITS[unit] for number, unit in _PARTS.findall(text))
    return value if math.isfinite(value) and value >= 0 else None


class DayClock:
    """Calendar days that start at HH:MM in a time zone; the current day is cached."""

    __slots__ = ("_at", "_day", "_tz")

    def __init__(self, resets_at: str, timezone: str) -> None:
        hour, minute = resets_at.split(":")
        self._at = time(int(hour), int(minute))
        self._tz = ZoneInfo(timezone)
        self._day = (0, 0)

    def bounds(self, now: int) -> tuple[int, int]:
        """(start, end) of the day holding `now`, in microseconds."""
        day = self._day
        if not day[0] <= now < day[1]:
            day = self._day = self._compute(now)
        return day

    def _compute(self, now: int) -> tuple[int, int]:
        today = datetime.fromtimestamp(now / US, self._tz).date()
        start = self._at_date(today)
        if start > now:
            today -= timedelta(days=1)
            start = self._at_date(today)
        return start, self._at_date(today + timedelta(days=1))

    def _at_date(self, day: date) -> int:
        return to_us(datetime.combine(day, self._at, self._tz).timestamp())


@dataclass(frozen=True, slots=True)
class Span:
    """One window length of a model ("m", "h", "d") with its request and token limits (0 = none)."""

    id: str
    length: int  # microseconds; unused when `day` is set
    requests: int
    tokens: int
    requests_window: str
    tokens_window: str
    day: DayClock | None = None

    def bounds(self, now: int) -> tuple[int, int]:
        """(floor, reset): entries at or before floor are out of the window; reset is the calendar
        boundary for a day that resets on the clock, else 0 (rolling)."""
        if self.day is None:
            return now - self.length, 0
        start, end = self.day.bounds(now)
        return start - 1, end

    def wait(self, oldest: int, now: int, reset: int) -> int:
        """Microseconds until the entry made at `oldest` no longer counts."""
        return (reset or oldest + self.length) - now


@dataclass(frozen=True, slots=True)
class ModelPlan:
    """What the storage needs to route one model: its name, priority and windows."""

    name: str
    priority: int
    spans: tuple[Span, ...]
    counts_tokens: bool
    counts_requests: bool


def plan_for(model: ModelConfig) -> ModelPlan:
    day = DayClock(model.day_resets_at, model.timezone) if model.day_resets_at else None
    m = model
    candidates = (
        Span(
            "m",
            60 * US,
            m.requests_per_minute,
            m.tokens_per_minute,
            "requests_per_minute",
            "tokens_per_minute",
        ),
        Span("h", 3600 * US, m.requests_per_hour, 0, "requests_per_hour", ""),
        Span(
            "d", 86400 * US, m.requests_per_day, m.tokens_per_day, "requests_per_day", "tokens_per_day", day
        ),
    )
    spans = tuple(s for s in candidates if s.requests > 0 or s.tokens > 0)
    return ModelPlan(
        name=model.name,
        priority=model.priority,
        spans=spans,
        counts_tokens=any(s.tokens for s in spans),
        counts_requests=any(s.requests for s in spans),
    )


def tightest(
    spans: Sequence[Span], counts: Sequence[int], oldest: Sequence[int], now: int
) -> tuple[int, int, int] | None:
    """(limit, remaining, wait) of the request window with the fewest requests left; on a tie the
    longer window. `oldest` is each window's oldest counted entry (ignored when its count is 0)."""
    best: tuple[int, int, int] | None = None
    for span, count, first in zip(spans, counts, oldest, strict=True):
        if not span.requests:
            continue
        remaining = max(span.requests - count, 0)
        if best is None or remaining <= best[1]:
            wait = span.wait(first, now, span.bounds(now)[1]) if count else 0
            best = (span.requests, remaining, max(wait, 0))
    return best


def client_spans(
    requests_per_minute: int,
    requests_per_hour: int,
    requests_per_day: int,
    tokens_per_minute: int,
    tokens_per_day: int,
) -> tuple[Span, ...]:
    """A client's windows: rolling minute, hour and day, like a model's without `day_resets_at`."""
    candidates = (
        Span(
            "m", 60 * US, requests_per_minute, tokens_per_minute, "requests_per_minute", "tokens_per_minute"
        ),
        Span("h", 3600 * US, requests_per_hour, 0, "requests_per_hour", ""),
        Span("d", 86400 * US, requests_per_day, tokens_per_day, "requests_per_day", "tokens_per_day"),
    )
    return tuple(s for s in candidates if s.requests > 0 or s.tokens > 0)
