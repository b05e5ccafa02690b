"""In-process storage: one lock around plain Python state; for a single worker."""

from __future__ import annotations

import bisect
import heapq
import itertools
import threading
from collections import deque
from collections.abc import Collection, Sequence
from datetime import date, timedelta

from pybreaker import STATE_CLOSED, CircuitBreakerStorage, CircuitMemoryStorage

from app.routing.cooldown import AUTH
from app.routing.limits import Span, tightest
from app.routing.storage import (
    BREAKER_OPEN,
    COOLING,
    KEY_REST,
    KEY_TRIAL,
    NO_REST,
    REQUESTS_SPENT,
    SLOT_REST,
    TOKENS_SPENT,
    TRIAL_BUSY,
    TRIED,
    ClientPlan,
    Pick,
    Pool,
    Refusal,
    Rest,
    SlotPlan,
    SlotState,
    SpanUsage,
    Storage,
    UsageRow,
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
    __slots__ = ("breaker_until", "cool_reason", "cool_until", "error", "error_at", "failing", "trial_until")

    def __init__(self) -> None:
        self.cool_until = 0
        self.cool_reason = ""
        self.breaker_until = 0
        self.trial_until = 0
        self.failing = False
        self.error = ""
        self.error_at = 0


class _Slot:
    __slots__ = ("last_used", "rest", "windows")

    def __init__(self) -> None:
        self.windows: dict[str, _Window] = {}
        self.rest = NO_REST
        self.last_used = 0


class _Key:
    __slots__ = ("rest", "trial_until")

    def __init__(self) -> None:
        self.rest = NO_REST  # an auth rest stays after `until` until a trial decides
        self.trial_until = 0


class _Index:
    """One model's slots by last use: `order` holds their positions in the pool, sorted by (last
    use, position), the order in which reserve() looks at them. Only a reservation changes a last
    use, to the latest time the storage has seen, so it moves one position to the end.

    A slot found resting on its own is parked (out of `order`) until its rest ends: such a rest is
    never shortened, so it could not have served before, and a reservation does not look at it again
    and again while it stays the least recently used."""

    __slots__ = ("ids", "order", "parked", "records")

    def __init__(self, ids: tuple[str, ...], records: list[_Slot]) -> None:
        self.ids = ids
        self.records = records
        self.order = sorted(range(len(records)), key=lambda position: records[position].last_used)
        self.parked: list[tuple[int, int]] = []  # a heap of (rest end, position)

    def park(self, position: int, until: int) -> None:
        self.order.remove(position)
        heapq.heappush(self.parked, (until, position))

    def unpark(self, now: int) -> None:
        """Slots whose rest is over go back to their place in `order`."""
        records = self.records
        while self.parked and self.parked[0][0] <= now:
            position = heapq.heappop(self.parked)[1]
            bisect.insort(self.order, position, key=lambda p: (records[p].last_used, p))

    def used(self, position: int, now: int) -> None:
        """The slot at `position` was stamped used at `now`, no earlier than any other."""
        order, records = self.order, self.records
        order.remove(position)
        at = len(order)
        while at and order[at - 1] > position and records[order[at - 1]].last_used == now:
            at -= 1  # used in the same microsecond: the first in the pool ranks first
        order.insert(at, position)


class MemoryStorage(Storage):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, _Model] = {}
        self._slots: dict[str, _Slot] = {}
        self._indexes: dict[str, _Index] = {}  # per model name
        self._keys: dict[str, _Key] = {}
        self._entries: dict[str, Entry] = {}
        self._clients: dict[str, _Slot] = {}  # a client's windows (its rest and last use unused)
        self._client_entries: dict[str, Entry] = {}
        self._usage: dict[tuple[str, str, str], list[int]] = {}
        self._usage_pruned = ""  # the day whose old rows were last dropped
        self._breakers: dict[str, CircuitMemoryStorage] = {}
        self._now = 0  # latest time seen: a clock stepping back must not unsort the logs

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
        with self._lock:
            now = self._now = max(now, self._now)
            account = None
            if client is not None and client.spans:
                account = self._clients.get(client.id) or self._clients.setdefault(client.id, _Slot())
                blocks = self._span_blocks(account, client.spans, tokens, now, self._client_entries)
                if blocks:
                    wait, code, detail = max(blocks)
                    return Pick(client_refusal=Refusal(-1, code, wait, detail))
            # Walk the slots best first, merging the pools' indexes (each its slots by last use),
            # and stop at the first that can serve: a request looks at a few slots, not all.
            indexes = [self._index(pool) for pool in pools]
            offsets = list(itertools.accumulate([len(pool.ids) for pool in pools], initial=0))
            heads = []  # per pool still walked: (priority, last use, slot number, pool, rank)
            for n, index in enumerate(indexes):
                if index.parked and index.parked[0][0] <= now:
                    index.unpark(now)
                if index.order:
                    position = index.order[0]
                    last_used = index.records[position].last_used
                    heads.append((pools[n].model.priority, last_used, offsets[n] + position, n, 0))
            heapq.heapify(heads)
            refusals: dict[int, Refusal] = {}
            resting: dict[tuple[int, int], tuple[_Index, int, int]] = {}  # to park after the walk
            while heads:
                priority, _, number, n, rank = heads[0]
                pool, index = pools[n], indexes[n]
                if self._model_blocks(self._model(pool.model.name), now):
                    heapq.heappop(heads)  # none of its slots can serve: each is refused below
                    continue
                position = number - offsets[n]
                record = index.records[position]
                refusal = self._check(pool.slots[position], record, number, tokens, now)
                if refusal is None and number in tried:
                    refusal = Refusal(number, TRIED, 0, "")
                if refusal is None:
                    if account is not None and client is not None:
                        entry = [now, tokens, rid, len(client.spans)]
                        _add(account, client.spans, entry, self._client_entries)
                    _park(resting)
                    return self._take(pool, index, position, number, tokens, now, rid, lease)
                refusals[number] = refusal
                if record.rest.until > now:
                    resting[id(index), position] = (index, position, record.rest.until)
                rank += 1
                if rank == len(index.order):
                    heapq.heappop(heads)
                    continue
                position = index.order[rank]
                last_used = index.records[position].last_used
                heapq.heapreplace(heads, (priority, last_used, offsets[n] + position, n, rank))
            _park(resting)
            return Pick(refusals=self._refusals(pools, indexes, offsets, refusals, tokens, now))

    def _refusals(
        self,
        pools: Sequence[Pool],
        indexes: list[_Index],
        offsets: list[int],
        known: dict[int, Refusal],
        tokens: int,
        now: int,
    ) -> list[Refusal]:
        """Why each slot cannot serve, in order, when none can: those looked at already are
        `known`; those of a blocked model, and parked ones, were left and are checked now."""
        refusals = []
        for n, pool in enumerate(pools):
            records = indexes[n].records
            for position, plan in enumerate(pool.slots):
                number = offsets[n] + position
                refusal = known.get(number) or self._check(plan, records[position], number, tokens, now)
                refusals.append(refusal or Refusal(number, TRIED, 0, ""))
        return refusals

    def _index(self, pool: Pool) -> _Index:
        """The model's index, built again when the pool given is not the one it was built for."""
        name = pool.model.name
        index = self._indexes.get(name)
        if index is None or (index.ids is not pool.ids and index.ids != pool.ids):
            index = self._indexes[name] = _Index(pool.ids, [self._slot(id_) for id_ in pool.ids])
        return index

    @staticmethod
    def _model_blocks(model: _Model, now: int) -> list[tuple[int, str, str]]:
        """(wait, code, detail) of what keeps every slot of the model out; a breaker block first."""
        blocks = []
        if model.breaker_until:
            if model.breaker_until > now:
                blocks.append((model.breaker_until - now, BREAKER_OPEN, ""))
            elif model.trial_until > now:
                blocks.append((model.trial_until - now, TRIAL_BUSY, ""))
        if model.cool_until > now:
            blocks.append((model.cool_until - now, COOLING, model.cool_reason))
        return blocks

    def _check(self, plan: SlotPlan, slot: _Slot, index: int, tokens: int, now: int) -> Refusal | None:
        blocks = self._model_blocks(self._model(plan.model.name), now)  # (wait, code, detail)
        key = self._key(plan.key)
        if key.rest.until > now:
            blocks.append((key.rest.until - now, KEY_REST, f"{key.rest.kind}|{key.rest.reason}"))
        elif key.rest.kind == AUTH and key.trial_until > now:
            blocks.append((key.trial_until - now, KEY_TRIAL, ""))
        if slot.rest.until > now:
            blocks.append((slot.rest.until - now, SLOT_REST, f"{slot.rest.kind}|{slot.rest.reason}"))
        blocks += self._span_blocks(slot, plan.spans, tokens, now, self._entries)
        if not blocks:
            return None
        first = blocks[0]
        wait = max(block[0] for block in blocks)
        if first[1] in (BREAKER_OPEN, TRIAL_BUSY):
            return Refusal(index, first[1], wait, first[2])
        binding = next(block for block in blocks if block[0] == wait)
        return Refusal(index, binding[1], wait, binding[2])

    def _span_blocks(
        self, slot: _Slot, spans: Sequence[Span], tokens: int, now: int, entries: dict[str, Entry]
    ) -> list[tuple[int, str, str]]:
        """(wait, code, span id) for each window that cannot take one more request and `tokens`."""
        blocks = []
        for span in spans:
            floor, reset = span.bounds(now)
            window = self._advance(slot, span.id, floor, entries)
            count = len(window.entries)
            if span.requests and count >= span.requests:
                oldest = window.entries[count - span.requests][0]
                blocks.append((span.wait(oldest, now, reset), REQUESTS_SPENT, span.id))
            if span.tokens and window.tokens + tokens > span.tokens:
                oldest = _freeing(window, window.tokens + tokens - span.tokens)
                blocks.append((span.wait(oldest, now, reset), TOKENS_SPENT, span.id))
        return blocks

    def _take(
        self,
        pool: Pool,
        index: _Index,
        position: int,
        number: int,
        tokens: int,
        now: int,
        rid: str,
        lease: int,
    ) -> Pick:
        plan = pool.slots[position]
        model = self._models[plan.model.name]
        slot = index.records[position]
        pick = Pick(index=number, failing=model.failing)
        if plan.spans:
            windows = _add(slot, plan.spans, [now, tokens, rid, len(plan.spans)], self._entries)
            if plan.model.counts_requests:
                counts = [len(w.entries) for w in windows]
                pick.hint = tightest(plan.spans, counts, [w.entries[0][0] for w in windows], now)
        slot.last_used = now
        index.used(position, now)
        if model.breaker_until:  # eligible with a breaker rest over: the half-open trial
            pick.trial = True
            model.trial_until = now + lease
        key = self._keys[plan.key]
        if key.rest.kind == AUTH:  # eligible with an auth rest over: the key's trial
            pick.key_trial = True
            key.trial_until = now + lease
        return pick

    def _advance(self, slot: _Slot, span_id: str, floor: int, entries_by_id: dict[str, Entry]) -> _Window:
        """Bring a window up to `floor`: entries at or before it stop counting."""
        window = slot.windows.get(span_id)
        if window is None:
            window = slot.windows[span_id] = _Window()
        if floor > window.cursor:
            entries = window.entries
            while entries and entries[0][0] <= floor:
                entry = entries.popleft()
                window.tokens -= entry[1]
                entry[3] -= 1
                if not entry[3]:
                    del entries_by_id[entry[2]]
            window.cursor = floor
        return window

    def settle(self, slot: SlotPlan, rid: str, reserved: int, used: int) -> None:
        with self._lock:
            _settle(self._slots.get(slot.id), slot.spans, self._entries.get(rid), used)

    def settle_client(self, client: ClientPlan, rid: str, reserved: int, used: int) -> None:
        with self._lock:
            _settle(self._clients.get(client.id), client.spans, self._client_entries.get(rid), used)

    def record_usage(self, row: UsageRow, keep_days: int) -> None:
        with self._lock:
            counts = self._usage.setdefault((row.day, row.client, row.model), [0, 0, 0])
            counts[0] += row.requests
            counts[1] += row.prompt_tokens
            counts[2] += row.completion_tokens
            if row.day != self._usage_pruned:  # once a day, not on every request
                self._usage_pruned = row.day
                oldest = (date.fromisoformat(row.day) - timedelta(days=max(keep_days, 1) - 1)).isoformat()
                for key in [key for key in self._usage if key[0] < oldest]:
                    del self._usage[key]

    def usage(self, days: Sequence[str]) -> list[UsageRow]:
        wanted = set(days)
        with self._lock:
            return [UsageRow(*key, *counts) for key, counts in self._usage.items() if key[0] in wanted]

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

    def rest(self, slot: SlotPlan, now: int, rest: Rest, *, whole_key: bool) -> None:
        with self._lock:
            if whole_key:
                key = self._key(slot.key)
                if rest.until > key.rest.until:
                    key.rest, key.trial_until = rest, 0
            else:
                record = self._slot(slot.id)
                if rest.until > record.rest.until:
                    record.rest = rest

    def restore_key(self, slot: SlotPlan) -> None:
        with self._lock:
            key = self._key(slot.key)
            key.rest, key.trial_until = NO_REST, 0

    def set_breaker(self, name: str, open_until: int) -> None:
        with self._lock:
            model = self._model(name)
            model.breaker_until, model.trial_until = open_until, 0
            if not open_until:
                model.failing = False

    def inspect(self, slots: Sequence[SlotPlan], now: int) -> list[SlotState]:
        with self._lock:
            return [self._state(plan, now) for plan in slots]

    def _state(self, plan: SlotPlan, now: int) -> SlotState:
        model = self._model(plan.model.name)
        slot = self._slot(plan.id)
        spans = []
        for span in plan.spans:
            window = self._advance(slot, span.id, span.bounds(now)[0], self._entries)
            oldest = window.entries[0][0] if window.entries else 0
            spans.append(SpanUsage(len(window.entries), window.tokens, oldest))
        return SlotState(
            spans=spans,
            cool_until=model.cool_until,
            cool_reason=model.cool_reason,
            breaker_until=model.breaker_until,
            last_used=slot.last_used,
            error=model.error,
            error_at=model.error_at,
            slot_rest=slot.rest,
            key_rest=self._key(plan.key).rest,
        )

    def breaker_storage(self, name: str) -> CircuitBreakerStorage:
        with self._lock:
            return self._breakers.setdefault(name, CircuitMemoryStorage(STATE_CLOSED))

    def _model(self, name: str) -> _Model:
        model = self._models.get(name)
        if model is None:
            model = self._models[name] = _Model()
        return model

    def _slot(self, id_: str) -> _Slot:
        slot = self._slots.get(id_)
        if slot is None:
            slot = self._slots[id_] = _Slot()
        return slot

    def _key(self, id_: str) -> _Key:
        key = self._keys.get(id_)
        if key is None:
            key = self._keys[id_] = _Key()
        return key


def _park(resting: dict[tuple[int, int], tuple[_Index, int, int]]) -> None:
    """Park the slots a walk found resting on their own (after it: the walk reads `order`)."""
    for index, position, until in resting.values():
        index.park(position, until)


def _add(slot: _Slot, spans: Sequence[Span], entry: Entry, entries_by_id: dict[str, Entry]) -> list[_Window]:
    """Count a new entry in each of the slot's windows (brought up to date by the check before)."""
    entries_by_id[entry[2]] = entry
    windows = [slot.windows[span.id] for span in spans]
    for window in windows:
        window.entries.append(entry)
        window.tokens += entry[1]
    return windows


def _settle(slot: _Slot | None, spans: Sequence[Span], entry: Entry | None, used: int) -> None:
    """Replace an entry's tokens with `used` in every window that still counts it."""
    if slot is None or entry is None:  # no window counts it any more
        return
    used = max(used, 0)  # a window's sum never goes negative, whatever the caller says
    delta, entry[1] = used - entry[1], used
    for span in spans:
        window = slot.windows[span.id]
        if entry[0] > window.cursor:
            window.tokens += delta


def _freeing(window: _Window, excess: int) -> int:
    """Time of the entry whose departure frees `excess` tokens in the window."""
    oldest = 0
    for entry in window.entries:
        oldest = entry[0]
        excess -= entry[1]
        if excess <= 0:
            break
    return oldest
