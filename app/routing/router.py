"""Choose a model and one of its keys for each request, reserve its quota, and learn from how the
call went.

The router knows nothing of provider formats or Flask. Every (model, key) is a slot with its own
windows, rest and last use; quota, rests, last use and a mirror of each model's breaker live in the
storage, read and taken in one atomic step per request; pybreaker counts failures and decides when
a breaker opens or closes. Why a key failed comes from the adapter as a Cooldown (class, duration).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pybreaker import CircuitBreaker, CircuitBreakerError

from app.config import BreakerConfig, ModelConfig, RoutingConfig, alias_target, unavailable_message
from app.errors import (
    ClientQuotaExceeded,
    InvalidRequest,
    ModelNotFound,
    ProxyError,
    RateLimited,
    ServiceUnavailable,
    UpstreamAuthError,
    UpstreamTimeout,
)
from app.routing.cooldown import AUTH, DAILY, RATE, UNAVAILABLE, WHOLE_KEY, Cooldown
from app.routing.limits import (
    US,
    DayClock,
    ModelPlan,
    go_duration,
    parse_duration,
    plan_for,
    tightest,
    to_us,
)
from app.routing.storage import (
    BREAKER_OPEN,
    COOLING,
    KEY_REST,
    KEY_TRIAL,
    REQUESTS_SPENT,
    SLOT_REST,
    TOKENS_SPENT,
    TRIAL_BUSY,
    ClientPlan,
    Pick,
    Pool,
    Refusal,
    Rest,
    Settlement,
    SlotPlan,
    SlotState,
    Storage,
    UsageRow,
)

log = logging.getLogger("ai_proxy.routing")

MAX_ERROR_CHARS = 500
MAX_REASON_CHARS = 200
# No single request reports more tokens than this (the largest context windows are a few million):
# a bigger number is an upstream's bug or a hostile answer, and must not wreck a window.
MAX_TOKENS = 10_000_000
MAX_REST_SECONDS = 7 * 86400  # the longest rest an upstream's own reset time may impose
FAILING_KINDS = frozenset((AUTH, UNAVAILABLE, "credit"))  # no quota will come back by waiting


def valid_tokens(value: object) -> int | None:
    """A token count fit for a window: a non-negative integer, at most MAX_TOKENS; None when the
    value is not a count at all (negative, fractional, not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    if value < 0:
        return None
    return min(int(value), MAX_TOKENS)


@dataclass(frozen=True, slots=True)
class Reservation:
    model: ModelConfig  # the model, its `token` set to the key this request uses
    id: str
    tokens: int  # the reserved estimate
    trial: bool = False  # the half-open breaker's single trial request
    failing: bool = False  # the model had failures since its last success
    key_label: str = "#1"  # the key's only name in logs, metrics and /v1/quota
    key: str = field(default="", repr=False)  # the key's value, for the upstream call only
    key_trial: bool = False  # the one trial request of a key back from an auth rest
    client: ClientCharge | None = None  # the client's windows this request was charged in

    @property
    def slot(self) -> str:
        """This model and key, as `acquire(exclude=...)` takes it to move on to the next key."""
        return f"{self.model.name}{self.key_label}"


@dataclass(frozen=True, slots=True)
class ClientCharge:
    """One client request in its client's windows: charged once, however many models it tries."""

    plan: ClientPlan
    id: str
    tokens: int


@dataclass(frozen=True, slots=True)
class _Slot:
    plan: SlotPlan
    model: ModelConfig  # with `token` set to this slot's key
    label: str  # "#N", N the key's 1-based position in the model's pool
    name: str  # shown in refusals: the model's name, plus the label when it has several keys


def key_id(key: str) -> str:
    """The storage's name for a key value, shared by every model using it; never shown to anyone."""
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def _slots_of(model: ModelConfig, plan: ModelPlan) -> tuple[_Slot, ...]:
    keys = model.keys or (model.token,)
    slots = []
    for number, key in enumerate(keys, 1):
        label = f"#{number}"
        own = key_id(key) if key else f"n{number}"  # keyless slots share nothing
        slot_id = f"{model.name}#{own}"
        slots.append(
            _Slot(
                plan=SlotPlan(plan, slot_id, own if key else slot_id),
                model=model if key == model.token else replace(model, token=key),
                label=label,
                name=f"{model.name}{label}" if len(keys) > 1 else model.name,
            )
        )
    return tuple(slots)


def _day_name(number: int) -> str:
    """A UTC day (days since the epoch) as "YYYY-MM-DD"."""
    return time.strftime("%Y-%m-%d", time.gmtime(number * 86400))


def _cooldown_of(error: ProxyError) -> Cooldown | None:
    """The class an adapter gave the failure; else what the error's type says about the key."""
    given = getattr(error, "cooldown", None)
    if isinstance(given, Cooldown):
        return given
    if isinstance(error, RateLimited):
        return Cooldown(RATE, error.retry_after, "upstream 429")
    if isinstance(error, UpstreamAuthError):
        return Cooldown(AUTH, None, "upstream rejected the key")
    return None


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
        usage_days: int = 35,
        aliases: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._configured = tuple(models)  # disabled ones too, to say why a name is not served
        enabled = [m for m in self._configured if m.enabled]
        self._aliases = tuple(aliases)
        self._storage = storage
        self._clock = clock
        self._usage_days = usage_days
        self._routing = routing
        self._cooldown = routing.cooldown_seconds
        self._reset_us = to_us(breaker.reset_timeout)
        self._models = {m.name: m for m in enabled}
        self._plans = {m.name: plan_for(m) for m in enabled}
        self._slots = {m.name: _slots_of(m, self._plans[m.name]) for m in enabled}
        self._pools = {name: Pool(tuple(s.plan for s in slots)) for name, slots in self._slots.items()}
        self._by_label = {(name, s.label): s for name, slots in self._slots.items() for s in slots}
        self._days = {m.name: DayClock(m.day_resets_at, m.timezone) for m in enabled if m.day_resets_at}
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
        # Per model, the tightest request window of the key it last reserved in this process:
        # (limit, remaining, reset time), so ratelimit_headers costs no storage round trip.
        self._seen: dict[str, tuple[int, int, int]] = {}
        self._settle_failures = 0
        self._settle_lock = threading.Lock()
        self._today = (-1, "")  # (UTC day number, "YYYY-MM-DD"): formatted once a day

    @property
    def settle_failures(self) -> int:
        """Outcomes (usage, rests, breaker results) the storage failed to record."""
        return self._settle_failures

    def resolve(self, name: str, kind: str) -> list[ModelConfig]:
        """A concrete model by its exact name, or the enabled models of a group (any case); else
        the target of the first alias that matches the name (an exact name always wins)."""
        candidates = self._exact(name, kind)
        target = None
        if candidates is None and name not in self._models:
            target = alias_target(self._aliases, name)
            candidates = self._exact(target, kind) if target is not None else None
        if not candidates:
            why = unavailable_message(self._configured, target or name, kind)
            raise ModelNotFound(f"'{name}' is an alias of '{target}'. {why}" if target else why)
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
        client: ClientPlan | None = None,
        charged: ClientCharge | None = None,
    ) -> Reservation:
        """Reserve one request and `tokens` on the best key of the best candidate that can take
        them. `exclude` names models (all their keys) or slots (`Reservation.slot`) already tried.
        With `client`, its windows are taken in the same atomic step (ClientQuotaExceeded when
        one is spent, and then no model is charged); a fallback passes the earlier `charged`
        instead, so that one client request counts once."""
        now = self._now()
        tokens = valid_tokens(tokens) or 0
        rid = f"{self._id_prefix}{os.getpid()}-{next(self._ids)}"  # unique in forked workers too
        owners: list[_Slot] = []  # the slots of the pools, one after another
        pools: list[Pool] = []
        tried: set[int] = set()
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
            slots = self._slots[model.name]
            if exclude:
                whole, first = model.name in exclude, len(owners)
                tried.update(
                    first + n for n, s in enumerate(slots) if whole or f"{model.name}{s.label}" in exclude
                )
            owners += slots
            pools.append(self._pools[model.name])
        if charged is not None or client is None or not pools:
            client = None
        pick = Pick()
        if pools:
            pick = self._storage.reserve(pools, tried, tokens, now, rid, self._reset_us, client)
        if pick.client_refusal is not None and client is not None:
            raise _client_refusal(client, pick.client_refusal)
        if pick.index < 0:
            raise _refusal(owners, pick.refusals, misfits)
        if client is not None:
            charged = ClientCharge(client, rid, tokens)
        slot = owners[pick.index]
        name = slot.model.name
        if pick.hint is not None:
            limit, remaining, wait = pick.hint
            self._seen[name] = (limit, remaining, now + wait)
        if pick.trial:
            self._breakers[name].half_open()
        return Reservation(
            slot.model,
            rid,
            tokens,
            pick.trial,
            pick.failing,
            key_label=slot.label,
            key=slot.model.token,
            key_trial=pick.key_trial,
            client=charged,
        )

    def succeeded(
        self,
        res: Reservation,
        headers: Mapping[str, str],
        used_tokens: object,
        *,
        client: str | None = None,
        usage: Mapping[str, Any] | None = None,
    ) -> None:
        """Settle tokens to the real usage and follow the upstream's own rate-limit hints. With
        `client`, the answer also counts in that client's usage (see record_usage), in the same
        storage step as the settle. Best effort: the answer is already made, so a storage failure
        is logged and counted."""
        with self._best_effort(res, "success"):
            row = self._usage_row(client, res.model.name, usage) if client is not None else None
            self._succeeded(res, headers, valid_tokens(used_tokens), row)

    def failed(self, res: Reservation, error: ProxyError) -> None:
        """Rest the key after a failure that is the key's (the error's Cooldown, a 429, an auth
        error); rest the model after a fault, which also counts towards its breaker. Best effort,
        like succeeded: the caller's own error decides what the client gets."""
        with self._best_effort(res, "failure"):
            self._failed(res, error)

    def _best_effort(self, res: Reservation, outcome: str) -> contextlib.AbstractContextManager[None]:
        what = "record the %s of %s key=%s (%s) in the quota storage"
        return self._counted(what, outcome, res.model.name, res.key_label, res.id)

    @contextlib.contextmanager
    def _counted(self, what: str, *args: object) -> Iterator[None]:
        """A storage failure inside is counted and logged as "could not <what % args>: <why>"."""
        try:
            yield
        except ServiceUnavailable as exc:
            with self._settle_lock:
                self._settle_failures += 1
            log.warning(f"could not {what}: %s", *args, exc.message)

    def _succeeded(
        self, res: Reservation, headers: Mapping[str, str], used_tokens: int | None, usage: UsageRow | None
    ) -> None:
        slot = self._by_label[res.model.name, res.key_label]
        now = self._now()
        settlements = []
        if used_tokens is not None and used_tokens != res.tokens and slot.plan.model.counts_tokens:
            settlements.append(Settlement(slot.plan, res.id, res.tokens, used_tokens))
        charge = res.client
        if (
            charge is not None
            and charge.plan.counts_tokens
            and used_tokens is not None
            and used_tokens != charge.tokens
        ):
            settlements.append(Settlement(charge.plan, charge.id, charge.tokens, used_tokens))
        if settlements or usage is not None:
            self._storage.settle(settlements, usage, self._usage_days)
        hint = _upstream_rest(headers)
        if hint is not None:
            seconds, reason = hint
            self._rest(slot, Cooldown(RATE, seconds, reason), now)
        if res.key_trial:
            self._storage.restore_key(slot.plan)
        if res.trial or res.failing:
            self._feed_breaker(res, None, now)

    def refund_client(self, charge: ClientCharge) -> None:
        """The client request failed without an answer: its tokens return to its windows (the
        request still counts). Best effort."""
        if not charge.plan.counts_tokens or not charge.tokens:
            return
        with self._counted("refund client %s (%s)", charge.plan.id, charge.id):
            self._storage.settle([Settlement(charge.plan, charge.id, charge.tokens, 0)])

    def record_usage(self, client: str, model: str, usage: Mapping[str, Any] | None) -> None:
        """Count one answered request of `client` on `model` today (UTC), with the prompt and
        completion tokens the upstream reported. Best effort: the answer is already made."""
        with self._counted("record the usage of client %s on %s", client, model):
            self._storage.record_usage(self._usage_row(client, model, usage), self._usage_days)

    def _usage_row(self, client: str, model: str, usage: Mapping[str, Any] | None) -> UsageRow:
        usage = usage or {}
        today, cached = int(self._clock() // 86400), self._today
        if cached[0] != today:
            cached = self._today = (today, _day_name(today))
        day = cached[1]
        prompt = valid_tokens(usage.get("prompt_tokens")) or 0
        completion = valid_tokens(usage.get("completion_tokens")) or 0
        return UsageRow(day, client, model, 1, prompt, completion)

    def usage(self, days: int) -> list[UsageRow]:
        """Usage rows of the last `days` UTC days (today included), newest day first."""
        today = int(self._clock() // 86400)
        names = [_day_name(today - n) for n in range(max(days, 1))]
        rows = self._storage.usage(names)
        return sorted(rows, key=lambda r: (names.index(r.day), r.client, r.model))

    def _failed(self, res: Reservation, error: ProxyError) -> None:
        slot = self._by_label[res.model.name, res.key_label]
        now = self._now()
        cooldown = _cooldown_of(error)
        fault = cooldown is None and _is_fault(error)
        if not fault and res.tokens and slot.plan.model.counts_tokens:  # refused, so nothing was used
            self._storage.settle([Settlement(slot.plan, res.id, res.tokens, 0)])
        if cooldown is not None:
            self._rest(slot, cooldown, now)
        if res.key_trial and not fault and (cooldown is None or cooldown.kind not in WHOLE_KEY):
            self._storage.restore_key(slot.plan)  # the upstream took the key; the failure was another
        self._storage.report(
            res.model.name,
            now,
            rest_until=now + to_us(self._cooldown) if fault and self._cooldown > 0 else 0,
            reason=_fault_reason(error) if fault else "",
            error=error.message[:MAX_ERROR_CHARS],
            failing=True if fault else None,
        )
        if fault or res.trial or res.failing:
            self._feed_breaker(res, error if fault else None, now)

    def _rest(self, slot: _Slot, cooldown: Cooldown, now: int) -> None:
        seconds = self._rest_seconds(slot.model.name, cooldown, now)
        if seconds <= 0:
            return
        reason = (cooldown.reason or cooldown.kind)[:MAX_REASON_CHARS]
        rest = Rest(now + to_us(seconds), cooldown.kind, reason)
        self._storage.rest(slot.plan, now, rest, whole_key=cooldown.kind in WHOLE_KEY)

    def _rest_seconds(self, name: str, cooldown: Cooldown, now: int) -> float:
        """How long a class rests: the reset the upstream named (rate, daily), else the config's."""
        kind, given = cooldown.kind, cooldown.seconds
        if kind in (RATE, DAILY) and given and math.isfinite(given):
            return min(max(given, 0.0), MAX_REST_SECONDS)
        if kind == RATE:
            return self._cooldown
        if kind == DAILY:
            day = self._days.get(name)
            return (day.bounds(now)[1] - now) / US if day else 86400.0
        if kind == UNAVAILABLE:
            return self._routing.unavailable_seconds
        if kind == AUTH:
            return self._routing.auth_retry_seconds
        return self._routing.credit_retry_seconds

    def ratelimit_headers(self, model: ModelConfig) -> dict[str, str]:
        """OpenAI-style headers for the request window with the fewest requests left (of the key
        this process last reserved, or of the model's key with the most left)."""
        plan = self._plans.get(model.name)
        if plan is None or not plan.counts_requests:
            return {}
        now = self._now()
        seen = self._seen.get(model.name)
        if seen is None:  # not reserved by this process yet: ask the storage
            slots = self._slots[model.name]
            try:
                states = self._storage.inspect([s.plan for s in slots], now)
            except ServiceUnavailable:  # the headers are advisory; never fail an answer for them
                return {}
            limit, remaining, wait = max(
                (_tightest(plan, state, now) for state in states), key=lambda t: t[1]
            )
            seen = (limit, remaining, now + wait)
        limit, remaining, reset_at = seen
        return {
            "x-ratelimit-limit-requests": str(limit),
            "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-reset-requests": go_duration((reset_at - now) / US),
        }

    def snapshot(self) -> list[dict[str, Any]]:
        """Every enabled model's windows, cooldown, breaker, last error and keys (each as `#N`
        with its own windows and cooldown, never its value), for GET /v1/quota."""
        now = self._now()
        slots = [s for model_slots in self._slots.values() for s in model_slots]
        states = iter(self._storage.inspect([s.plan for s in slots], now))
        return [
            self._describe(name, [(s, next(states)) for s in model_slots], now)
            for name, model_slots in self._slots.items()
        ]

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

    def _describe(self, name: str, slots: list[tuple[_Slot, SlotState]], now: int) -> dict[str, Any]:
        model = self._models[name]
        plan = self._plans[name]
        keys = []
        for slot, state in slots:
            rest = _current_rest(state, now)
            keys.append(
                {
                    "key": slot.label,
                    "windows": _windows(plan, state, now),
                    "cooldown": (
                        {"class": rest.kind, "until": rest.until / US, "reason": rest.reason}
                        if rest
                        else None
                    ),
                    "last_used": state.last_used / US if state.last_used else None,
                }
            )
        windows = _pooled(keys)
        limits: dict[str, Any] = {w["window"]: w["limit"] for w in keys[0]["windows"]}
        if model.max_request_length:
            limits["max_request_length"] = model.max_request_length
        if model.day_resets_at:
            limits["day_resets_at"] = f"{model.day_resets_at} {model.timezone}"
        first = slots[0][1]  # the model's own fields are the same in every slot's state
        cool_until, cool_reason = first.cool_until, first.cool_reason
        if cool_until <= now and all(k["cooldown"] for k in keys):  # every key rests: so does the model
            soonest = min((k["cooldown"] for k in keys), key=lambda c: c["until"])
            cool_until, cool_reason = to_us(soonest["until"]), soonest["reason"]
        cooling = cool_until > now
        used = [s.last_used for _, s in slots if s.last_used]
        return {
            "name": model.name,
            "provider": model.provider,
            "group": model.group,
            "kind": model.kind,
            "priority": model.priority,
            "limits": limits,  # per key
            "windows": windows,  # the whole pool's
            "cooldown_until": cool_until / US if cooling else None,
            "cooldown_reason": cool_reason if cooling else None,
            "breaker": _breaker_state(first.breaker_until, now),
            "last_error": {"message": first.error, "at": first.error_at / US} if first.error else None,
            "last_used": max(used) / US if used else None,
            "keys": keys,
        }

    def _now(self) -> int:
        return round(self._clock() * US)


def _current_rest(state: SlotState, now: int) -> Rest | None:
    """The rest that keeps a slot out longest now; an auth key past its rest, awaiting its trial,
    still shows its rest."""
    rests = [r for r in (state.slot_rest, state.key_rest) if r.until > now]
    if rests:
        return max(rests, key=lambda r: r.until)
    if state.key_rest.kind == AUTH:
        return state.key_rest
    return None


def _windows(plan: ModelPlan, state: SlotState, now: int) -> list[dict[str, Any]]:
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
    return windows


def _pooled(keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pool's windows: limits, use and what is left summed over its keys; the reset is the
    soonest at which any key that has used the window gets capacity back."""
    if len(keys) == 1:
        return keys[0]["windows"]
    pooled = []
    for column in zip(*(k["windows"] for k in keys), strict=True):
        resets = [w["reset_seconds"] for w in column if w["used"]]
        pooled.append(
            {
                "window": column[0]["window"],
                "limit": sum(w["limit"] for w in column),
                "used": sum(w["used"] for w in column),
                "remaining": sum(w["remaining"] for w in column),
                "reset_seconds": min(resets) if resets else 0,
            }
        )
    return pooled


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
    slots: Sequence[_Slot], refusals: Sequence[Refusal], misfits: Sequence[tuple[str, bool]]
) -> ProxyError:
    """The most useful error when no candidate can serve, listing each slot and why: 429 when
    waiting brings quota back, 503 when every candidate is failing or its keys are out of use."""
    reasons = [text for text, _ in misfits]
    waits: list[int] = []
    quota = failing = False
    for refusal in refusals:
        slot = slots[refusal.index]
        reasons.append(f"{slot.name}: {_explain(slot.plan.model, refusal)}")
        if refusal.wait > 0:
            waits.append(refusal.wait)
            if refusal.code in (BREAKER_OPEN, TRIAL_BUSY, KEY_TRIAL) or (
                refusal.code in (SLOT_REST, KEY_REST) and refusal.detail.split("|")[0] in FAILING_KINDS
            ):
                failing = True
            else:
                quota = True
    detail = "; ".join(reasons) or "no candidate models"
    retry_after = float(max(1, math.ceil(min(waits) / US))) if waits else None
    if quota:
        return RateLimited(f"No model has quota left for this request: {detail}", retry_after=retry_after)
    if failing:
        return ServiceUnavailable(f"Every candidate model is failing: {detail}", retry_after=retry_after)
    if misfits and not refusals and all(size for _, size in misfits):
        return InvalidRequest(
            f"The request is too large for every candidate model: {detail}", code="context_length_exceeded"
        )
    return ServiceUnavailable(f"No model left to try: {detail}")


def _client_refusal(client: ClientPlan, refusal: Refusal) -> ClientQuotaExceeded:
    span = next(s for s in client.spans if s.id == refusal.detail)
    window = span.requests_window if refusal.code == REQUESTS_SPENT else span.tokens_window
    limit = span.requests if refusal.code == REQUESTS_SPENT else span.tokens
    wait = max(refusal.wait, 0) / US
    return ClientQuotaExceeded(
        f"This key's {window} ({limit}) is spent; it resets in {go_duration(wait)}",
        retry_after=float(max(1, math.ceil(wait))),
    )


def _explain(plan: ModelPlan, refusal: Refusal) -> str:
    wait = go_duration(refusal.wait / US)
    if refusal.code in (REQUESTS_SPENT, TOKENS_SPENT):
        span = next(s for s in plan.spans if s.id == refusal.detail)
        window = span.requests_window if refusal.code == REQUESTS_SPENT else span.tokens_window
        return f"{window} spent (resets in {wait})"
    if refusal.code == COOLING:
        return f"cooling down {wait} after {refusal.detail}"
    if refusal.code in (SLOT_REST, KEY_REST):
        kind, _, reason = refusal.detail.partition("|")
        return f"cooling down {wait} after {reason}" + ("" if kind == RATE else f" ({kind})")
    if refusal.code == BREAKER_OPEN:
        return f"circuit breaker open after repeated failures (retry in {wait})"
    if refusal.code == TRIAL_BUSY:
        return "circuit breaker half-open, its trial request is in flight"
    if refusal.code == KEY_TRIAL:
        return "key back from an auth rest, its trial request is in flight"
    return "already tried"


def _fault_reason(error: ProxyError) -> str:
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


def _tightest(plan: ModelPlan, state: SlotState, now: int) -> tuple[int, int, int]:
    result = tightest(plan.spans, [s.count for s in state.spans], [s.oldest for s in state.spans], now)
    assert result is not None  # the plan counts requests
    return result


def _breaker_state(breaker_until: int, now: int) -> str:
    if not breaker_until:
        return "closed"
    return "open" if breaker_until > now else "half-open"
