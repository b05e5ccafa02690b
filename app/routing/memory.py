"""In-process storage: one lock around plain Python state; for a single worker."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

from pybreaker import STATE_CLOSED, CircuitBreakerStorage, CircuitMemoryStorage

from app.routing.limits import ModelPlan, tightest
from app.routing.storage import (
    BREAKER_OPEN,
    COOLING,
    REQUESTS_SPENT,
    TOKENS_SPENT,
    TRIAL_BUSY,
    TRIED,
    ModelState,
    Pick,
    Refusal,
    SpanUsage,
    Storage,
)

# An entry is [time, tokens, reservation id, number of windows still counting it].
Entry = list


class _Window:
    """Entries still counted by one window, oldest first, and their token sum."""

    __slots__ = ("cursor", "entries", "tokens")

    def __init__(self) -> None:
        self.entries: deque[Entry] = deque()
        self.cursor = 0  # entries at or before it have left
        self.tokens = 0


class _Model:
    __slots__ = (
        "breaker_until",
        "cool_reason",
        "cool_until",
        "error",
        "error_at",
        "failing",
        "last_used",
        "trial_until",
        "windows",
    )

    def __init__(self) -> None:
        self.windows: dict[str, _Window] = {}
        self.cool_until = 0
        self.cool_reason = ""
        self.breaker_until = 0
        self.trial_until = 0
        self.last_used = 0
        self.failing = False
        self.error = ""
        self.error_at = 0


class MemoryStorage(Storage):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, _Model] = {}
        self._entries: dict[str, Entry] = {}
        self._breakers: dict[str, CircuitMemoryStorage] = {}
        self._now = 0  # latest time seen: a clock stepping back must not unsort the logs

    def reserve(
        self,
        plans: Sequence[ModelPlan],
        tried: Sequence[bool],
        tokens: int,
        now: int,
        rid: str,
        lease: int,
    ) -> Pick:
        with self._lock:
            now = self._now = max(now, self._now)
            refusals = []
            best, best_key = -1, (0, 0)
            for index, plan in enumerate(plans):
                model = self._model(plan.name)
                refusal = self._check(model, plan, index, tokens, now)
                if refusal is None and tried[index]:
                    refusal = Refusal(index, TRIED, 0, "")
                if refusal is not None:
                    refusals.append(refusal)
                elif best < 0 or (plan.priority, model.last_used) < best_key:
                    best, best_key = index, (plan.priority, model.last_used)
            if best < 0:
                return Pick(refusals=refusals)
            return self._take(plans[best], best, tokens, now, rid, lease)

    def _check(self, model: _Model, plan: ModelPlan, index: int, tokens: int, now: int) -> Refusal | None:
        blocks: list[tuple[int, str, str]] = []  # (wait, code, detail); a breaker block comes first
        if model.breaker_until:
            if model.breaker_until > now:
                blocks.append((model.breaker_until - now, BREAKER_OPEN, ""))
            elif model.trial_until > now:
                blocks.append((model.trial_until - now, TRIAL_BUSY, ""))
        if model.cool_until > now:
            blocks.append((model.cool_until - now, COOLING, model.cool_reason))
        for span in plan.spans:
            floor, reset = span.bounds(now)
            window = self._advance(model, span.id, floor)
            count = len(window.entries)
            if span.requests and count >= span.requests:
                oldest = window.entries[count - span.requests][0]
                blocks.append((span.wait(oldest, now, reset), REQUESTS_SPENT, span.id))
            if span.tokens and window.tokens + tokens > span.tokens:
                oldest = _freeing(window, window.tokens + tokens - span.tokens)
                blocks.append((span.wait(oldest, now, reset), TOKENS_SPENT, span.id))
        if not blocks:
            return None
        first = blocks[0]
        wait = max(block[0] for block in blocks)
        if first[1] in (BREAKER_OPEN, TRIAL_BUSY):
            return Refusal(index, first[1], wait, first[2])
        binding = next(block for block in blocks if block[0] == wait)
        return Refusal(index, binding[1], wait, binding[2])

    def _take(self, plan: ModelPlan, index: int, tokens: int, now: int, rid: str, lease: int) -> Pick:
        model = self._models[plan.name]
        pick = Pick(index=index, failing=model.failing)
        if plan.spans:
            entry = [now, tokens, rid, len(plan.spans)]
            self._entries[rid] = entry
            windows = [model.windows[span.id] for span in plan.spans]
            for window in windows:
                window.entries.append(entry)
                window.tokens += tokens
            if plan.counts_requests:
                counts = [len(w.entries) for w in windows]
                pick.hint = tightest(plan.spans, counts, [w.entries[0][0] for w in windows], now)
        model.last_used = now
        if model.breaker_until:  # eligible with a breaker rest over: the half-open trial
            pick.trial = True
            model.trial_until = now + lease
        return pick

    def _advance(self, model: _Model, span_id: str, floor: int) -> _Window:
        """Bring a window up to `floor`: entries at or before it stop counting."""
        window = model.windows.get(span_id)
        if window is None:
            window = model.windows[span_id] = _Window()
        if floor > window.cursor:
            entries = window.entries
            while entries and entries[0][0] <= floor:
                entry = entries.popleft()
                window.tokens -= entry[1]
                entry[3] -= 1
                if not entry[3]:
                    del self._entries[entry[2]]
            window.cursor = floor
        return window

    def settle(self, plan: ModelPlan, rid: str, reserved: int, used: int) -> None:
        with self._lock:
            entry = self._entries.get(rid)
            if entry is None:  # no window counts it any more
                return
            used = max(used, 0)  # a window's sum never goes negative, whatever the caller says
            delta, entry[1] = used - entry[1], used
            model = self._models[plan.name]
            for span in plan.spans:
                window = model.windows[span.id]
                if entry[0] > window.cursor:
                    window.tokens += delta

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
        with self._lock:
            model = self._model(name)
            if rest_until > model.cool_until:
                model.cool_until, model.cool_reason = rest_until, reason
            if error:
                model.error, model.error_at = error, now
            if failing is not None:
                model.failing = failing

    def set_breaker(self, name: str, open_until: int) -> None:
        with self._lock:
            model = self._model(name)
            model.breaker_until, model.trial_until = open_until, 0
            if not open_until:
                model.failing = False

    def inspect(self, plans: Sequence[ModelPlan], now: int) -> list[ModelState]:
        with self._lock:
            return [self._state(plan, now) for plan in plans]

    def _state(self, plan: ModelPlan, now: int) -> ModelState:
        model = self._model(plan.name)
        spans = []
        for span in plan.spans:
            window = self._advance(model, span.id, span.bounds(now)[0])
            oldest = window.entries[0][0] if window.entries else 0
            spans.append(SpanUsage(len(window.entries), window.tokens, oldest))
        return ModelState(
            spans=spans,
            cool_until=model.cool_until,
            cool_reason=model.cool_reason,
            breaker_until=model.breaker_until,
            last_used=model.last_used,
            error=model.error,
            error_at=model.error_at,
        )

    def breaker_storage(self, name: str) -> CircuitBreakerStorage:
        with self._lock:
            return self._breakers.setdefault(name, CircuitMemoryStorage(STATE_CLOSED))

    def _model(self, name: str) -> _Model:
        model = self._models.get(name)
        if model is None:
            model = self._models[name] = _Model()
        return model


def _freeing(window: _Window, excess: int) -> int:
    """Time of the entry whose departure frees `excess` tokens in the window."""
    oldest = 0
    for entry in window.entries:
        oldest = entry[0]
        excess -= entry[1]
        if excess <= 0:
            break
    return oldest
