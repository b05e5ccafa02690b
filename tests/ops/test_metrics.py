"""GET /metrics: Prometheus text, summed over several gunicorn workers, quota and breakers read from the
router at scrape time, protected by the client keys unless `server.metrics_public`."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.config import parse_config
from app.gateway import Trace
from app.metrics import Metrics
from tests.fakes.openai import FakeOpenAI
from tests.harness import InProcessProxy, free_port
from tests.ops.conftest import CLIENT_KEY, FAST_ENV, chat_body, config, get, model, stream, wait_until

CHAT = "chat.chat_completions"


def scrape(port: int, key: str | None = CLIENT_KEY) -> dict[tuple[str, tuple], float]:
    status, headers, body = get(port, "/metrics", key=key)
    assert status == 200, body
    return parse_samples(headers["Content-Type"], body)


def parse_samples(content_type: str, body: bytes) -> dict[tuple[str, tuple], float]:
    assert content_type.startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def requests_count(samples, model_name: str, status: str = "200") -> float:
    return value(
        samples, "ai_proxy_requests_total", endpoint=CHAT, model=model_name, provider="openai", status=status
    )


@pytest.mark.e2e
def test_metrics_sum_every_worker_and_read_shared_quota(gunicorn_server, redis_url, tmp_path):
    prom_dir = tmp_path / "prom"
    with FakeOpenAI() as fake:
        fake.set_default("chat", fake.reply(content=["a", "b", "c"], chunk_delay=0.05))
        refused = f"http://127.0.0.1:{free_port()}/v1/chat/completions"
        cfg = config(
            model(refused, "fake/down", priority=1),
            model(fake.chat_url, "fake/up", priority=2),
            routing={"cooldown_seconds": 300},
        )
        env = {**FAST_ENV, "AI_PROXY_STORAGE": redis_url, "PROMETHEUS_MULTIPROC_DIR": str(prom_dir)}
        server = gunicorn_server(cfg, env=env, workers=2)
        workers = server.pids()[1:]
        assert len(workers) == 2

        # 1 request falls back from the refused model; then 24 more, 8 at a time over new connections.
        assert stream(server.port, chat_body("SMALL")).status == 200
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: stream(server.port, chat_body("SMALL")), range(24)))
        assert all(r.status == 200 and r.datas[-1] == "[DONE]" for r in results)
        # Both workers served some of them: each wrote its own counter file.
        files = {p.name for p in prom_dir.glob("counter_*.db")}
        assert {f"counter_{pid}.db" for pid in workers} <= files, files

        def served_everywhere():
            return all(requests_count(scrape(server.port), "fake/up") == 25 for _ in range(6))

        # The access hook runs when the response is closed, just after the client saw [DONE].
        assert wait_until(served_everywhere, 15)
        samples = scrape(server.port)
        assert value(samples, "ai_proxy_fallbacks_total", requested="SMALL") == 1
        assert (
            value(samples, "ai_proxy_upstream_attempts_total", model="fake/up", provider="openai") == 26
        )  # + fallback
        assert (
            value(samples, "ai_proxy_upstream_latency_seconds_count", model="fake/up", provider="openai")
            == 25
        )
        assert (
            value(samples, "ai_proxy_time_to_first_token_seconds_count", model="fake/up", provider="openai")
            == 25
        )
        assert (
            value(
                samples,
                "ai_proxy_time_to_first_token_seconds_bucket",
                model="fake/up",
                provider="openai",
                le="+Inf",
            )
            == 25
        )
        # Quota from the shared (Redis) storage: 25 requests on fake/up, 1 on fake/down.
        assert value(samples, "ai_proxy_quota_limit", model="fake/up", window="requests_per_minute") == 1000
        assert value(samples, "ai_proxy_quota_used", model="fake/up", window="requests_per_minute") == 25
        assert value(samples, "ai_proxy_quota_left", model="fake/up", window="requests_per_minute") == 975
        assert value(samples, "ai_proxy_quota_used", model="fake/down", window="requests_per_minute") == 1
        assert 250 < value(samples, "ai_proxy_cooldown_seconds", model="fake/down") <= 300
        assert value(samples, "ai_proxy_cooldown_seconds", model="fake/up") == 0
        assert value(samples, "ai_proxy_breaker_state", model="fake/up", state="closed") == 1
        assert value(samples, "ai_proxy_breaker_state", model="fake/up", state="open") == 0

        # A worker that dies keeps its counts; gunicorn's child_exit hook tidies its live files.
        os.kill(workers[0], signal.SIGKILL)
        assert wait_until(lambda: len(server.pids()) == 3 and workers[0] not in server.pids(), 20)
        assert all(requests_count(scrape(server.port), "fake/up") == 25 for _ in range(4))


def app_scrape(proxy: InProcessProxy, key: str | None = CLIENT_KEY) -> dict[tuple[str, tuple], float]:
    answer = proxy.client.get("/metrics", headers={"Authorization": f"Bearer {key}"} if key else {})
    assert answer.status_code == 200, answer.get_data()
    return parse_samples(answer.headers["Content-Type"], answer.get_data())


def test_metrics_need_a_client_key_unless_public(in_process, fake_openai, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    private = in_process(config(model(fake_openai.chat_url, "fake/up")), env=FAST_ENV)
    missing = private.client.get("/metrics")
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert private.client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert "ai_proxy_quota_limit" in str(app_scrape(private))

    public_cfg = config(model(fake_openai.chat_url, "fake/up"), server={"metrics_public": True})
    public = in_process(public_cfg, env=FAST_ENV)
    samples = app_scrape(public, key=None)
    assert value(samples, "ai_proxy_quota_limit", model="fake/up", window="requests_per_minute") == 1000
    assert public.client.get("/v1/quota").status_code == 401  # only /metrics became public


@pytest.mark.e2e
def test_the_made_up_metrics_dir_is_removed_on_exit(gunicorn_server, fake_openai):
    env = {**FAST_ENV, "PROMETHEUS_MULTIPROC_DIR": None}  # no dir given: gunicorn.conf.py makes one
    server = gunicorn_server(config(model(fake_openai.chat_url, "fake/up")), env=env)
    assert stream(server.port, chat_body("fake/up")).status == 200
    # The worker maps its metric files: that is where the dir made by gunicorn.conf.py shows.
    maps = Path(f"/proc/{server.pids()[1]}/maps").read_text()
    made = {Path(line.split()[-1]).parent for line in maps.splitlines() if line.endswith(".db")}
    assert len(made) == 1, made
    (made_dir,) = made
    assert made_dir.name.startswith("ai-proxy-metrics-") and list(made_dir.glob("*.db"))
    server.stop()
    assert not made_dir.exists()


# -- in process (no gunicorn) -------------------------------------------------------------------


def _metrics(monkeypatch) -> Metrics:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    cfg = parse_config(config(model("http://127.0.0.1:9/v1/chat/completions", "fake/up")), {})
    snapshot = [
        {
            "name": "fake/up",
            "windows": [{"window": "requests_per_minute", "limit": 10, "used": 4, "remaining": 6}],
            "cooldown_until": time.time() + 30,
            "breaker": "half-open",
        }
    ]
    return Metrics(cfg, lambda: snapshot)


def test_client_chosen_names_do_not_become_labels(monkeypatch):
    metrics = _metrics(monkeypatch)
    for asked in ("SMALL", "x" * 50, "fake/up"):
        metrics.observe(
            CHAT, 200, Trace(asked=asked, served="fake/up", provider="openai", attempts=2, fallbacks=1)
        )
    text = metrics.render().decode()
    assert 'ai_proxy_fallbacks_total{requested="SMALL"} 1.0' in text
    assert 'ai_proxy_fallbacks_total{requested="other"} 1.0' in text
    assert 'ai_proxy_fallbacks_total{requested="fake/up"} 1.0' in text
    assert "x" * 50 not in text
    assert 'ai_proxy_breaker_state{model="fake/up",state="half-open"} 1.0' in text
    assert 'ai_proxy_quota_left{model="fake/up",window="requests_per_minute"} 6.0' in text


def test_observe_is_cheap(monkeypatch):
    """The hot-path cost: bound children, a few increments (CPU time, with a generous bound)."""
    metrics = _metrics(monkeypatch)
    trace = Trace(
        asked="SMALL", served="fake/up", provider="openai", attempts=1, upstream_ms=120.0, first_token_ms=80.0
    )
    metrics.observe(CHAT, 200, trace)
    rounds = 20_000
    # This thread's CPU time, not the wall clock: other processes keeping the cores busy do not count.
    started = time.thread_time()
    for _ in range(rounds):
        metrics.observe(CHAT, 200, trace)
    per_call_us = (time.thread_time() - started) / rounds * 1e6
    print(f"Metrics.observe: {per_call_us:.2f} µs per request (in process)")
    assert per_call_us < 50
