"""Choose a model for each request, reserve its quota, and learn from how the call went.

The router knows nothing of provider formats or Flask. Quota, cooldowns, last use and a mirror of
each breaker live in the storage, read and taken in one atomic step per request; pybreaker counts
failures and decides when a breaker opens or closes.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pybreaker import CircuitBreaker, CircuitBreakerError

from app.config import BreakerConfig, ModelConfig, RoutingConfig, alias_target
from app.errors import (
    InvalidRequest,
    ModelNotFound,
    ProxyError,
    RateLimited,
    ServiceUnavailable,
    UpstreamAuthError,
    UpstreamTimeout,
)
from app.routing.limits import US, ModelPlan, go_duration, parse_duration, plan_for, tightest, to_us
from app.routing.storage import (
    BREAKER_OPEN,
    COOLING,
    REQUESTS_SPENT,
    TOKENS_SPENT,
    TRIAL_BUSY,
    ModelState,
    Pick,
    Refusal,
    Storage,
)

MAX_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class Reservation:
    model: ModelConfig
    id: str
    tokens: int  # the reserved estimate
    trial: bool = False  # the half-open breaker's single trial request
    failing: bool = False  # the model had failures since its last success


def _is_fault(error: BaseException) -> bool:
    """Does this error say the upstream is unwell? A client's bad request or a 429 says it is alive."""
    return isinstance(error, ProxyError) and error.retryable and not isinstance(error, RateLimited)


class Router:
    def __init__(
        self,
        models: Iterable[ModelConfig],
        storage: Storage,
        routing: RoutingConfig,
        breaker: BreakerConfig,
        clock: Callable[[], float] = time.time,
        aliases: Sequence[tuple[str, str]] = (),
    ) -> None:
        enabled = [m for m in models if m.enabled]
        self._aliases = tuple(aliases)
        self._storage = storage
        self._clock = clock
        self._cooldown = routing.cooldown_seconds
        self._reset_us = to_us(breaker.reset_timeout)
        self._models = {m.name: m for m in enabled}
        self._plans = {m.name: plan_for(m) for m in enabled}
        groups: dict[tuple[str, str], list[ModelConfig]] = {}
        for m in sorted(enabled, key=lambda m: m.priority):
            if m.group:
                groups.setdefault((m.group, m.kind), []).append(m)
        self._groups = {key: tuple(members) for key, members in groups.items()}
        self._breakers = {
            m.name: CircuitBreaker(
                fail_max=breaker.fail_max,
                reset_timeout=breaker.reset_timeout,
                state_storage=storage.breaker_storage(m.name),
                name=m.name,
            )
            for m in enabled
        }
        self._id_prefix = os.urandom(4).hex() + "-"
        self._ids = itertools.count(1)
        # Per model, its tightest request window as of this process's last reservation:
        # (limit, remaining, reset time), so ratelimit_headers costs no storage round trip.
        self._seen: dict[str, tuple[int, int, int]] = {}

    def resolve(self, name: str, kind: str) -> list[ModelConfig]:
        """A concrete model by its exact name, or the enabled models of a group (any case); else
        the target of the first alias that matches the name (an exact name always wins)."""
        candidates = self._exact(name, kind)
        if candidates is None and name not in self._models:
            target = alias_target(self._aliases, name)
            candidates = self._exact(target, kind) if target is not None else None
        if not candidates:
            raise ModelNotFound(f"The model '{name}' does not exist")
        return candidates

    def _exact(self, name: str, kind: str) -> list[ModelConfig] | None:
        model = self._models.get(name)
        if model is not None:
            return [model] if model.kind == kind else None
        group = self._groups.get((name.upper(), kind))
        return list(group) if group else None

    def acquire(
        self,
        candidates: Sequence[ModelConfig],
        *,
        length: int,
        tokens: int,
        exclude: Collection[str] = (),
    ) -> Reservation:
        """Reserve one request and `tokens` on the best candidate that can take them."""
        now = self._now()
        rid = f"{self._id_prefix}{os.getpid()}-{next(self._ids)}"  # unique in forked workers too
        plans: list[ModelPlan] = []
        tried: list[bool] = []
        misfits: list[tuple[str, bool]] = []
        for model in candidates:
            plan = self._plans.get(model.name)
            if plan is None:
                misfits.append((f"{model.name}: not an enabled model", False))
                continue
            misfit = _misfit(model, plan, length, tokens)
            if misfit is not None:
                misfits.append(misfit)
                continue
            plans.append(plan)
            tried.append(model.name in exclude)
        pick = self._storage.reserve(plans, tried, tokens, now, rid, self._reset_us) if plans else Pick()
        if pick.index < 0:
            raise _refusal(plans, pick.refusals, misfits)
        name = plans[pick.index].name
        if pick.hint is not None:
            limit, remaining, wait = pick.hint
            self._seen[name] = (limit, remaining, now + wait)
        if pick.trial:
            self._breakers[name].half_open()
        return Reservation(self._models[name], rid, tokens, pick.trial, pick.failing)

    def succeeded(self, res: Reservation, headers: Mapping[str, str], used_tokens: int | None) -> None:
        """Settle tokens to the real usage and follow the upstream's own rate-limit hints."""
        plan = self._plans[res.model.name]
        now = self._now()
        if used_tokens is not None and used_tokens != res.tokens and plan.counts_tokens:
            self._storage.settle(plan, res.id, res.tokens, used_tokens)
        hint = _upstream_rest(headers)
        if hint is not None:
            seconds, reason = hint
            until = now + to_us(self._cooldown if seconds is None else seconds)
            self._storage.report(plan.name, now, rest_until=until, reason=reason)
        if res.trial or res.failing:
            self._feed_breaker(res, None, now)

    def failed(self, res: Reservation, error: ProxyError) -> None:
        """Rest the model after a 429 or a fault; faults also count towards its breaker."""
        plan = self._plans[res.model.name]
        now = self._now()
        fault = _is_fault(error)
        if not fault and res.tokens and plan.counts_tokens:  # refused, so nothing was used
            self._storage.settle(plan, res.id, res.tokens, 0)
        rest, reason = 0.0, ""
        if isinstance(error, RateLimited):
            rest, reason = error.retry_after or self._cooldown, "upstream 429"
        elif fault:
            rest, reason = self._cooldown, _fault_reason(error)
        self._storage.report(
            plan.name,
            now,
            rest_until=now + to_us(rest) if rest > 0 else 0,
            reason=reason,
            error=error.message[:MAX_ERROR_CHARS],
            failing=True if fault else None,
        )
        if fault or res.trial or res.failing:
            self._feed_breaker(res, error if fault else None, now)

    def ratelimit_headers(self, model: ModelConfig) -> dict[str, str]:
        """OpenAI-style headers for the request window with the fewest requests left."""
        plan = self._plans.get(model.name)
        if plan is None or not plan.counts_requests:
            return {}
        now = self._now()
        seen = self._seen.get(model.name)
        if seen is None:  # not reserved by this process yet: ask the storage
            try:
                state = self._storage.inspect([plan], now)[0]
            except ServiceUnavailable:  # the headers are advisory; never fail an answer for them
                return {}
            limit, remaining, wait = _tightest(plan, state, now)
            seen = (limit, remaining, now + wait)
        limit, remaining, reset_at = seen
        return {
            "x-ratelimit-limit-requests": str(limit),
            "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-reset-requests": go_duration((reset_at - now) / US),
        }

    def snapshot(self) -> list[dict[str, Any]]:
        """Every enabled model's windows, cooldown, breaker and last error, for GET /v1/quota."""
        now = self._now()
        plans = list(self._plans.values())
        states = self._storage.inspect(plans, now)
        return [self._describe(plan, state, now) for plan, state in zip(plans, states, strict=True)]

    def _feed_breaker(self, res: Reservation, fault: ProxyError | None, now: int) -> None:
        """Tell pybreaker how the call went (it opens or closes the breaker) and mirror the result
        in the storage, which acquire reads."""
        name = res.model.name
        tripped = False
        try:
            with self._breakers[name].calling():
                if fault is not None:
                    raise fault
        except CircuitBreakerError:  # opened now, or already open
            tripped = fault is not None
        except ProxyError:
            pass
        if tripped or (res.trial and fault is not None):
            self._storage.set_breaker(name, now + self._reset_us)
        elif res.trial:
            self._storage.set_breaker(name, 0)
        elif fault is None:
            self._storage.report(name, now, failing=False)

    def _describe(self, plan: ModelPlan, state: ModelState, now: int) -> dict[str, Any]:
        model = self._models[plan.name]
        windows = []
        for span, usage in zip(plan.spans, state.spans, strict=True):
            reset = span.wait(usage.oldest, now, span.bounds(now)[1]) if usage.count else 0
            for window, limit, used in (
                (span.requests_window, span.requests, usage.count),
                (span.tokens_window, span.tokens, usage.tokens),
            ):
                if limit:
                    windows.append(
                        {
                            "window": window,
                            "limit": limit,
                            "used": used,
                            "remaining": max(limit - used, 0),
                            "reset_seconds": round(max(reset, 0) / US, 3),
                        }
                    )
        limits: dict[str, Any] = {w["window"]: w["limit"] for w in windows}
        if model.max_request_length:
            limits["max_request_length"] = model.max_request_length
        if model.day_resets_at:
            limits["day_resets_at"] = f"{model.day_resets_at} {model.timezone}"
        cooling = state.cool_until > now
        return {
            "name": model.name,
            "provider": model.provider,
            "group": model.group,
            "kind": model.kind,
            "priority": model.priority,
            "limits": limits,
            "windows": windows,
            "cooldown_until": state.cool_until / US if cooling else None,
            "cooldown_reason": state.cool_reason if cooling else None,
            "breaker": _breaker_state(state.breaker_until, now),
            "last_error": {"message": state.error, "at": state.error_at / US} if state.error else None,
            "last_used": state.last_used / US if state.last_used else None,
        }

    def _now(self) -> int:
        return round(self._clock() * US)


def _misfit(model: ModelConfig, plan: ModelPlan, length: int, tokens: int) -> tuple[str, bool] | None:
    """Why this candidate can never take this request: (reason, is it the request's size)."""
    if model.max_request_length and length > model.max_request_length:
        return f"{model.name}: request longer than max_request_length {model.max_request_length}", True
    for span in plan.spans:
        if span.tokens and tokens > span.tokens:
            return (
                f"{model.name}: request needs ~{tokens} tokens, over {span.tokens_window} {span.tokens}",
                True,
            )
    return None


def _refusal(
    plans: Sequence[ModelPlan], refusals: Sequence[Refusal], misfits: Sequence[tuple[str, bool]]
) -> ProxyError:
    """The most useful error when no candidate can serve, listing each one and why."""
    reasons = [text for text, _ in misfits]
    waits: list[int] = []
    codes: set[str] = set()
    for refusal in refusals:
        plan = plans[refusal.index]
        reasons.append(f"{plan.name}: {_explain(plan, refusal)}")
        if refusal.wait > 0:
            waits.append(refusal.wait)
            codes.add(refusal.code)
    detail = "; ".join(reasons) or "no candidate models"
    retry_after = float(max(1, math.ceil(min(waits) / US))) if waits else None
    if codes - {BREAKER_OPEN, TRIAL_BUSY}:
        return RateLimited(f"No model has quota left for this request: {detail}", retry_after=retry_after)
    if codes:
        return ServiceUnavailable(f"Every candidate model is failing: {detail}", retry_after=retry_after)
    if misfits and not refusals and all(size for _, size in misfits):
        return InvalidRequest(
            f"The request is too large for every candidate model: {detail}", code="context_length_exceeded"
        )
    return ServiceUnavailable(f"No model left to try: {detail}")


def _explain(plan: ModelPlan, refusal: Refusal) -> str:
    wait = go_duration(refusal.wait / US)
    if refusal.code in (REQUESTS_SPENT, TOKENS_SPENT):
        span = next(s for s in plan.spans if s.id == refusal.detail)
        window = span.requests_window if refusal.code == REQUESTS_SPENT else span.tokens_window
        return f"{window} spent (resets in {wait})"
    if refusal.code == COOLING:
        return f"cooling down {wait} after {refusal.detail}"
    if refusal.code == BREAKER_OPEN:
        return f"circuit breaker open after repeated failures (retry in {wait})"
    if refusal.code == TRIAL_BUSY:
        return "circuit breaker half-open, its trial request is in flight"
    return "already tried"


def _fault_reason(error: ProxyError) -> str:
    if isinstance(error, UpstreamAuthError):
        return "upstream auth error"
    if isinstance(error, UpstreamTimeout):
        return "upstream timeout"
    return f"upstream error {error.status}"


def _upstream_rest(headers: Mapping[str, str]) -> tuple[float | None, str] | None:
    """(seconds, reason) when the upstream says a quota is spent (x-ratelimit-remaining-*: 0);
    seconds is None if it did not say when it resets."""
    hints = {key.lower(): value for key, value in headers.items() if key[:12].lower() == "x-ratelimit-"}
    if not hints:
        return None
    found = None
    for what in ("requests", "tokens"):
        if hints.get(f"x-ratelimit-remaining-{what}", "").strip() != "0":
            continue
        seconds = parse_duration(hints.get(f"x-ratelimit-reset-{what}", ""))
        if found is None or (seconds is not None and (found[0] is None or seconds > found[0])):
            found = (seconds, f"upstream reported its {what} quota spent")
    return found


def _tightest(plan: ModelPlan, state: ModelState, now: int) -> tuple[int, int, int]:
    result = tightest(plan.spans, [s.count for s in state.spans], [s.oldest for s in state.spans], now)
    assert result is not None  # the plan counts requests
    return result


def _breaker_state(breaker_until: int, now: int) -> str:
    if not breaker_until:
        return "closed"
    return "open" if breaker_until > now else "half-open"
