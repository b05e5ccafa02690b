"""Smoke test of the benchmark (bench/, not run by pytest): it imports, its config is valid, the
asyncio fake answers and streams, and a report renders. The benchmark itself: `bash bench/run`."""

from __future__ import annotations

import tempfile
from pathlib import Path

from app.config import parse_config
from bench import client, load, payloads, procs, report
from bench.__main__ import CHAT, bench_config


def test_bench_config_is_a_valid_proxy_config() -> None:
    config = parse_config(bench_config(8001, 8002), {})
    names = {m.name for m in config.enabled_models}
    assert {"bench/fast", "bench/stream", "bench/burst", "bench/unlimited", "bench/last"} <= names
    assert [m.name for m in config.models if m.group == "SPENT"][-1] == "bench/last"


def test_fake_upstream_answers_json_and_streams() -> None:
    port = procs.free_port()
    with tempfile.TemporaryDirectory() as tmp:
        fake = procs.start_fake(port, Path(tmp) / "fake.log")
        try:
            plain = client.Target(port, CHAT, payloads.request_body("x"))
            assert plain.once() > 0
            stream = client.Target(port, f"{CHAT}?chunks=3&delay_ms=1", payloads.request_body("x", True))
            got = stream.stream_once()
            assert len(got.arrivals) == 3 + 3  # content chunks, finish, usage, [DONE]
            assert got.first_byte is not None and got.total >= got.first_byte
        finally:
            procs.stop(fake)


def test_wrk_script_and_report_render() -> None:
    script = load.SCRIPT.format(body='{"a":1}', auth="")
    assert 'wrk.body = [==[{"a":1}]==]' in script and "latency:percentile(99)" in script
    machine = {
        "cpu": "cpu",
        "cores": 2,
        "memory_gib": 1,
        "os": "os",
        "kernel": "k",
        "python": "3.11",
        "nginx": "nginx",
        "wrk": "wrk",
        "redis": "redis",
        "load_avg_at_start": [0, 0, 0],
        "date": "today",
    }
    scenario = {
        "sequential": {
            "direct": {"p50_ms": 0.1, "p99_ms": 0.2},
            "proxied": {"p50_ms": 0.9, "p99_ms": 1.4},
            "added_p50_ms": 0.8,
            "added_p99_ms": 1.2,
        },
        "c64": {
            "direct": {"rps": 1, "p50_ms": 1, "p99_ms": 2},
            "proxied": {"rps": 1},
            "cpu_ms_per_request": 1.2,
        },
        "startup_median_s": 0.4,
        "rss_idle": {"master": 50, "workers": [43], "workers_max": 43},
    }
    text = report.render({"machine": machine, "scenarios": {"memory": scenario}})
    assert "| **added** sequential p50 / p99 (ms) |  | **0.800 / 1.200** |" in text
    assert "| CPU per proxied request at c64 (memory) | ≤ 1 ms | 1.2 ms | **MISSED** by 0.200 ms |" in text
    assert "| added latency p50, sequential (memory) | ≤ 1 ms | 0.8 ms | met |" in text


def test_pool_routing_bench_spreads_over_every_model_and_key() -> None:
    from bench import pools

    config = pools.pool_config("memory")
    assert len(config.enabled_models) == 20 and {len(m.keys) for m in config.models} == {50}
    result = pools.measure("memory", 5)
    assert set(result) == {
        "concrete p50 (ms)",
        "group p50 (ms)",
        "group - concrete (ms)",
        "group / concrete",
        "group, 250 slots resting, p50 (ms)",
    }
    assert result["group p50 (ms)"] > 0 and result["concrete p50 (ms)"] > 0
