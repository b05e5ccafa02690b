"""Prometheus metrics: per-request counters and histograms, and quota/breaker gauges read at scrape time.

Request metrics are fed once per request from the access-log hook (app.api.hooks). Under gunicorn
they live in prometheus-client's multiprocess files (PROMETHEUS_MULTIPROC_DIR, set up by
gunicorn.conf.py) so that a scrape answered by any worker sums every worker; without that variable
(tests, a plain Flask run) they stay in this process. Quota and breaker state are not counted here:
they are read from `router.snapshot()` when /metrics is scraped, so with Redis storage every worker
and replica reports the same shared numbers.

The per-request cost is a dict lookup for pre-bound label children plus a few increments.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE

if TYPE_CHECKING:
    from app.config import Config
    from app.gateway import Trace

__all__ = ["CONTENT_TYPE", "Metrics", "QuotaCollector"]

# Upstream calls take from ~100 ms (a short answer) to minutes (a long stream).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
NONE = "none"
OTHER = "other"
BREAKER_STATES = ("closed", "half-open", "open")


class Metrics:
    """The proxy's metric families, with the label children each request needs bound on first use."""

    def __init__(
        self,
        config: Config,
        snapshot: Callable[[], Iterable[Mapping[str, Any]]],
        settle_failures: Callable[[], int] = lambda: 0,
    ) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        own = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "ai_proxy_requests",
            "Client requests by endpoint, the concrete model that served, its provider and HTTP status",
            ("endpoint", "model", "provider", "status"),
            registry=own,
        )
        self._upstream = Histogram(
            "ai_proxy_upstream_latency_seconds",
            "Time spent in upstream calls for one client request (all attempts; a stream until its end)",
            ("model", "provider"),
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self._first_token = Histogram(
            "ai_proxy_time_to_first_token_seconds",
            "Streams: time from the first upstream call to the first content sent to the client",
            ("model", "provider"),
            buckets=FIRST_TOKEN_BUCKETS,
            registry=own,
        )
        self._attempts = Counter(
            "ai_proxy_upstream_attempts",
            "Upstream calls made (first tries, retries and fallbacks) by the model that served last",
            ("model", "provider"),
            registry=own,
        )
        self._fallbacks = Counter(
            "ai_proxy_fallbacks",
            "Requests that fell back from one model to another, by the name the client asked for",
            ("requested",),
            registry=own,
        )
        self._stream_errors = Counter(
            "ai_proxy_stream_errors",
            "Streams that ended with an error event after content had been sent",
            ("model", "provider"),
            registry=own,
        )
        # Per client (by its configured name, never its key): bounded by the config.
        self._client_requests = Counter(
            "ai_proxy_client_requests",
            "Client requests by client name and HTTP status",
            ("client", "status"),
            registry=own,
        )
        self._client_tokens = Counter(
            "ai_proxy_client_tokens",
            "Tokens the upstreams reported for a client's requests, by type (prompt, completion)",
            ("client", "type"),
            registry=own,
        )
        self._client_children: dict[tuple[str, int], tuple[Any, Any, Any]] = {}
        # The router counts outcomes its storage failed to record (the client kept its answer);
        # each request's close adds what that count grew by since the last one.
        self._settle_failures = Counter(
            "ai_proxy_settle_failures",
            "Finished requests whose outcome (usage, rest, breaker result) the storage failed to record",
            registry=own,
        )
        self._settle_count = settle_failures
        self._settle_seen = 0
        self._settle_lock = threading.Lock()
        # Client-chosen names become label values only when they are configured ones (bounded).
        names = {m.name for m in config.models} | {m.group for m in config.models if m.group}
        self._known = frozenset(names)
        self._request_children: dict[tuple[str | None, str, str, int], Any] = {}
        self._model_children: dict[str, tuple[Any, Any, Any, Any]] = {}
        self._fallback_children: dict[str, Any] = {}

        scrape = CollectorRegistry(auto_describe=False)
        if self.multiprocess:
            from prometheus_client.multiprocess import MultiProcessCollector

            MultiProcessCollector(scrape)
        else:
            scrape.register(own)
        scrape.register(QuotaCollector(snapshot))
        self._scrape = scrape

    # --- hot path ------------------------------------------------------------------------------
    def observe(self, endpoint: str | None, status: int, trace: Trace) -> None:
        """Count one finished request (called when its response is closed)."""
        served = trace.served
        key = (endpoint, served, trace.provider, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children.setdefault(
                key,
                self._requests.labels(endpoint or NONE, served or NONE, trace.provider or NONE, str(status)),
            )
        child.inc()
        if self._settle_count() != self._settle_seen:
            self._count_settle_failures()
        if trace.client is not None:
            self._observe_client(trace.client.name, status, trace.usage)
        if not trace.attempts:
            return
        upstream, first_token, attempts, stream_errors = self._for_model(served, trace.provider)
        upstream.observe(trace.upstream_ms / 1000.0)
        attempts.inc(trace.attempts)
        if trace.first_token_ms is not None:
            first_token.observe(trace.first_token_ms / 1000.0)
        if trace.stream_error is not None:
            stream_errors.inc()
        if trace.fallbacks:
            self._fallback_child(trace.asked).inc(trace.fallbacks)

    def _count_settle_failures(self) -> None:
        with self._settle_lock:
            count = self._settle_count()
            if count > self._settle_seen:
                self._settle_failures.inc(count - self._settle_seen)
            self._settle_seen = count

    def _observe_client(self, name: str, status: int, usage: Mapping[str, Any] | None) -> None:
        children = self._client_children.get((name, status))
        if children is None:
            children = self._client_children.setdefault(
                (name, status),
                (
                    self._client_requests.labels(name, str(status)),
                    self._client_tokens.labels(name, "prompt"),
                    self._client_tokens.labels(name, "completion"),
                ),
            )
        children[0].inc()
        if usage:
            for child, field_name in ((children[1], "prompt_tokens"), (children[2], "completion_tokens")):
                count = usage.get(field_name)
                if isinstance(count, int) and not isinstance(count, bool) and count > 0:
                    child.inc(count)

    def _for_model(self, model: str, provider: str) -> tuple[Any, Any, Any, Any]:
        children = self._model_children.get(model)
        if children is None:
            labels = (model or NONE, provider or NONE)
            children = self._model_children.setdefault(
                model,
                (
                    self._upstream.labels(*labels),
                    self._first_token.labels(*labels),
                    self._attempts.labels(*labels),
                    self._stream_errors.labels(*labels),
                ),
            )
        return children

    def _fallback_child(self, asked: str) -> Any:
        child = self._fallback_children.get(asked)
        if child is None:
            label = asked if asked in self._known else OTHER
            child = self._fallback_children.setdefault(asked, self._fallbacks.labels(label))
        return child

    # --- scrape ----------------------------------------------------------------------------------
    def render(self) -> bytes:
        """Everything in Prometheus' text format (every worker's counters, quota read now)."""
        return generate_latest(self._scrape)


class QuotaCollector:
    """Quota, cooldown and breaker gauges from `router.snapshot()` (the /v1/quota data), read at
    scrape time. Windows are named as in the config: requests_per_minute, tokens_per_day, ...
    Each key of a model has its own windows and rest, labelled by its name `#N` (never its value)."""

    def __init__(self, snapshot: Callable[[], Iterable[Mapping[str, Any]]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ("model", "window")
        limit = GaugeMetricFamily(
            "ai_proxy_quota_limit", "Configured limit per model and window", labels=labels
        )
        used = GaugeMetricFamily("ai_proxy_quota_used", "Quota used in the current window", labels=labels)
        left = GaugeMetricFamily("ai_proxy_quota_left", "Quota left in the current window", labels=labels)
        cooldown = GaugeMetricFamily(
            "ai_proxy_cooldown_seconds",
            "Seconds until a resting model is tried again (0: not resting)",
            labels=("model",),
        )
        breaker = GaugeMetricFamily(
            "ai_proxy_breaker_state",
            "Circuit breaker per model: 1 for its current state (closed, half-open, open), else 0",
            labels=("model", "state"),
        )
        key_labels = ("model", "key", "window")
        key_used = GaugeMetricFamily(
            "ai_proxy_key_quota_used",
            "Quota used in the current window, per key of a model",
            labels=key_labels,
        )
        key_left = GaugeMetricFamily(
            "ai_proxy_key_quota_left",
            "Quota left in the current window, per key of a model",
            labels=key_labels,
        )
        key_cooldown = GaugeMetricFamily(
            "ai_proxy_key_cooldown_seconds",
            "Seconds until a resting key is tried again for a model, by why it rests (0 and class"
            ' "none": not resting)',
            labels=("model", "key", "class"),
        )
        now = time.time()
        for entry in self._snapshot():
            name = entry["name"]
            for window in entry["windows"]:
                key = (name, window["window"])
                limit.add_metric(key, window["limit"])
                used.add_metric(key, window["used"])
                left.add_metric(key, window["remaining"])
            until = entry.get("cooldown_until")
            cooldown.add_metric((name,), max(until - now, 0.0) if until else 0.0)
            state = entry.get("breaker")
            for option in BREAKER_STATES:
                breaker.add_metric((name, option), 1.0 if option == state else 0.0)
            for key in entry.get("keys") or ():
                label = key["key"]
                for window in key["windows"]:
                    key_used.add_metric((name, label, window["window"]), window["used"])
                    key_left.add_metric((name, label, window["window"]), window["remaining"])
                rest = key.get("cooldown")
                seconds = max(rest["until"] - now, 0.0) if rest else 0.0
                key_cooldown.add_metric((name, label, rest["class"] if rest else NONE), seconds)
        yield from (limit, used, left, cooldown, breaker, key_used, key_left, key_cooldown)
