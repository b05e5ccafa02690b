"""The capacity benchmark's pure helpers (bench/capacity.py, bench/swarm.py); the benchmark itself
runs with `bash bench/run --capacity`, never under pytest."""

from __future__ import annotations

import asyncio

from app.config import parse_config
from bench import capacity, procs, swarm
from bench.__main__ import CHAT


def test_capacity_config_is_valid_and_limits_the_model_and_the_client() -> None:
    config = parse_config(capacity.capacity_config(8001, 30), {})
    limited = next(m for m in config.models if m.name == "cap/limited")
    assert limited.requests_per_minute == capacity.MODEL_LIMIT
    assert [c.requests_per_minute for c in config.clients if c.name == "capped"] == [capacity.CLIENT_LIMIT]
    slow = next(m for m in config.models if m.name == "cap/slow")
    assert f"latency_ms={capacity.SLOW_LATENCY * 1000:.0f}" in slow.url


def test_event_lines_strip_headers_and_chunk_framing_and_keep_the_partial_rest() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw = head + b"d\r\n: keep-alive\n\n\r\n1f\r\ndata: {}\n\ndata: [DO"
    events, rest = swarm.event_lines(raw)
    assert events == [b": keep-alive", b"data: {}"]
    assert rest == b"data: [DO"


def test_slow_flags_spread_exactly_the_slow_count() -> None:
    flags = capacity.slow_flags(1000, 50)
    assert sum(flags) == 50 and flags.index(True) < 40 and not all(flags[:100])


def test_stream_summary_counts_done_errors_and_heartbeat_gaps() -> None:
    def record(first: float, done: bool = True, **extra: object) -> dict[str, object]:
        base = {"first_byte": first, "done": done, "error": "", "gap_content": 1.0}
        return {**base, "gap_before_content": first, "heartbeats": 0, **extra}

    results = [record(0.010), record(0.020), record(0.5, False, error="timeout")]
    results.append(record(5.0, gap_before_content=5.2, heartbeats=3))
    summary = capacity.stream_summary(results, [False, False, False, True])
    assert (summary["done"], summary["errors"], summary["error_kinds"]) == (3, 1, {"timeout": 1})
    assert summary["first_byte_p50_ms"] == 20.0 and summary["first_byte_p99_ms"] == 500.0
    assert summary["heartbeat_gap_max_s"] == 5.2 and summary["heartbeats_min"] == 3


def test_round_trips_count_client_commands_of_one_db_only() -> None:
    lines = [
        "OK",
        '1764412345.000001 [3 127.0.0.1:5000] "EVALSHA" "abc" "2" "k1" "k2"',
        '1764412345.000002 [3 lua] "INCR" "k1"',
        '1764412345.000003 [4 127.0.0.1:5001] "EVALSHA" "abc"',
        '1764412345.000004 [3 127.0.0.1:5000] "select" "3"',
    ]
    found = capacity.round_trips(lines, 3)
    assert found == {"EVALSHA": 1, "SELECT": 1}
    assert capacity.request_count(found) == 1


def test_admitted_counts_per_model_and_client_against_the_limits() -> None:
    asks = [(capacity.CAPPED_KEY, "cap/fast")] * capacity.CLIENT_LIMIT
    asks += [("admin-key", "cap/limited")] * (capacity.MODEL_LIMIT + 1)
    answers = [[200, "", 0.001]] * (len(asks) - 1) + [[429, "rate_limit_exceeded", 0.001]]
    found = capacity.admitted(asks, answers)
    assert found["exact"] is True
    assert found["refused"] == {"429 rate_limit_exceeded": 1}
    assert found["admitted_per_client"] == {"capped": capacity.CLIENT_LIMIT, "admin": capacity.MODEL_LIMIT}


def test_swarm_streams_and_requests_against_the_fake(tmp_path) -> None:
    port = procs.free_port()
    fake = procs.start_fake(port, tmp_path / "fake.log")
    try:
        stream = capacity.direct_spec(port, f"{CHAT}?chunks=3&delay_ms=20", stream=True)
        job = {"kind": "streams", "streams": [stream, {**stream, "start": 0.05}], "timeout": 10}
        got = asyncio.run(swarm.run(job))["streams"]
        assert [r["done"] for r in got] == [True, True] and not any(r["error"] for r in got)
        assert all(0 < r["first_byte"] <= r["first_content"] for r in got)
        assert [r["heartbeats"] for r in got] == [0, 0]
        plain = asyncio.run(swarm.run({"kind": "requests", "requests": [capacity.direct_spec(port, CHAT)]}))
        assert [answer[:2] for answer in plain["requests"]] == [[200, ""]]
    finally:
        procs.stop(fake)
