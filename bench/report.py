"""The benchmark's results as a Markdown table, plus the issue's targets marked met or missed.

.venv/bin/python -m bench.report results.json     # re-render a saved run
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def finish(
    results: dict[str, Any], started: float, path: Path | None, render: Callable[[dict[str, Any]], str]
) -> None:
    """A run's end: its wall time, its numbers in `path` (JSON) when given, its table on stdout."""
    results["wall_s"] = round(time.monotonic() - started, 1)
    if path:
        path.write_text(json.dumps(results, indent=2) + "\n")
    print(render(results))


TITLES = {"memory": "memory, 1 worker", "redis": "Redis, 1 worker", "redis-2w": "Redis, 2 workers"}

# (label, scenario, getter, limit, unit): a target is met when the value is at most the limit.
TARGETS: list[tuple[str, str, Callable[[dict[str, Any]], float], float, str]] = [
    (
        "added latency p50, sequential (memory)",
        "memory",
        lambda s: s["sequential"]["added_p50_ms"],
        1.0,
        "ms",
    ),
    (
        "added latency p99, sequential (memory)",
        "memory",
        lambda s: s["sequential"]["added_p99_ms"],
        3.0,
        "ms",
    ),
    ("added latency p50, sequential (Redis)", "redis", lambda s: s["sequential"]["added_p50_ms"], 1.5, "ms"),
    (
        "CPU per proxied request at c64 (memory)",
        "memory",
        lambda s: s["c64"]["cpu_ms_per_request"],
        1.0,
        "ms",
    ),
    ("CPU per proxied request at c64 (Redis)", "redis", lambda s: s["c64"]["cpu_ms_per_request"], 1.0, "ms"),
    (
        "stream TTFB overhead (memory)",
        "memory",
        lambda s: s["stream"]["spaced"]["added_ttfb_p50_ms"],
        2.0,
        "ms",
    ),
    ("start-up to first /health (median of runs)", "memory", lambda s: s["startup_median_s"], 1.5, "s"),
    ("idle RSS per worker (memory)", "memory", lambda s: s["rss_idle"]["workers_max"], 80.0, "MiB"),
    (
        "idle RSS per worker (Redis, 2 workers)",
        "redis-2w",
        lambda s: s["rss_idle"]["workers_max"],
        80.0,
        "MiB",
    ),
    ("RSS growth 10k -> 100k requests", "memory", lambda s: s["rss_growth_10k_to_100k_pct"], 10.0, "%"),
]


def _get(data: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _pair(a: Any, b: Any, digits: int = 2) -> str:
    if a is None or b is None:
        return "-"
    return f"{a:.{digits}f} / {b:.{digits}f}"


def _num(value: Any, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def render(results: dict[str, Any]) -> str:
    scenarios: dict[str, dict[str, Any]] = results["scenarios"]
    names = list(scenarios)
    first = scenarios[names[0]]
    m = results["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, kernel {m['kernel']}, "
        f"Python {m['python']}; {m['nginx']}; {m['wrk'].split(' [')[0]}; {m['redis'].split(' sha')[0]}; "
        f"load average at start {m['load_avg_at_start']}; {m['date']}; "
        f"whole run {results.get('wall_s', '?')} s.",
        "",
    ]
    ceilings = results.get("ceilings")
    if ceilings:
        lines += [
            "Fake upstreams' own ceiling (wrk, 64 connections, no proxy): nginx static JSON "
            f"{ceilings['nginx']['rps']:,} req/s, asyncio fake {ceilings['fake']['rps']:,} req/s.",
            "",
        ]
    header = "| | direct | " + " | ".join(TITLES.get(n, n) for n in names) + " |"
    lines += [header, "|---" * (2 + len(names)) + "|"]

    def row(label: str, direct: str, cell: Callable[[dict[str, Any]], str]) -> None:
        lines.append(f"| {label} | {direct} | " + " | ".join(cell(scenarios[n]) for n in names) + " |")

    def seq(s: dict[str, Any], kind: str) -> str:
        return _pair(_get(s, "sequential", kind, "p50_ms"), _get(s, "sequential", kind, "p99_ms"), 3)

    row("sequential p50 / p99 (ms)", seq(first, "direct"), lambda s: seq(s, "proxied"))
    row(
        "**added** sequential p50 / p99 (ms)",
        "",
        lambda s: (
            "**"
            + _pair(_get(s, "sequential", "added_p50_ms"), _get(s, "sequential", "added_p99_ms"), 3)
            + "**"
            if _get(s, "sequential")
            else "-"
        ),
    )
    for c in ("c16", "c64"):
        conns = c[1:]
        row(
            f"{conns} connections: req/s",
            _num(_get(first, c, "direct", "rps"), "{:,}"),
            lambda s, c=c: _num(_get(s, c, "proxied", "rps"), "{:,}"),
        )
        row(
            f"{conns} connections: p50 / p99 (ms)",
            _pair(_get(first, c, "direct", "p50_ms"), _get(first, c, "direct", "p99_ms")),
            lambda s, c=c: _pair(_get(s, c, "proxied", "p50_ms"), _get(s, c, "proxied", "p99_ms")),
        )
    row(
        "**CPU per request** at 64 connections, master + workers (ms)",
        "",
        lambda s: "**" + _num(_get(s, "c64", "cpu_ms_per_request"), "{:.3f}") + "**",
    )
    row("CPU cores busy at 64 connections", "", lambda s: _num(_get(s, "c64", "cpu_cores_busy")))
    spaced = _get(first, "stream", "spaced") or {}
    chunks, delay = _get(first, "stream", "chunks"), _get(first, "stream", "delay_ms")
    row(
        f"stream, {chunks} chunks {delay} ms apart: TTFB p50 (ms)",
        _num(_get(spaced, "direct", "ttfb_p50_ms"), "{:.3f}"),
        lambda s: _num(_get(s, "stream", "spaced", "proxied", "ttfb_p50_ms"), "{:.3f}"),
    )
    row(
        "**added** stream TTFB p50 (ms)",
        "",
        lambda s: (
            "**" + _num(_get(s, "stream", "spaced", "added_ttfb_p50_ms"), "{:.3f}") + "**"
            if _get(s, "stream")
            else "-"
        ),
    )
    row(
        "stream total p50 (ms)",
        _num(_get(spaced, "direct", "total_p50_ms")),
        lambda s: _num(_get(s, "stream", "spaced", "proxied", "total_p50_ms")),
    )
    row(
        "stream events that arrived in a read of their own (%)",
        _num(_get(spaced, "direct", "separate_pct"), "{:.1f}"),
        lambda s: _num(_get(s, "stream", "spaced", "proxied", "separate_pct"), "{:.1f}"),
    )
    burst = _get(first, "stream", "burst") or {}
    row(
        f"stream, {chunks} chunks back to back: total p50 (ms)",
        _num(_get(burst, "direct", "total_p50_ms")),
        lambda s: _num(_get(s, "stream", "burst", "proxied", "total_p50_ms")),
    )
    row(
        "group request that skips 3 spent models: p50 (ms)",
        "",
        lambda s: _num(_get(s, "group", "group", "p50_ms"), "{:.3f}"),
    )
    row(
        "routing cost: group p50 - concrete-model p50 (ms)",
        "",
        lambda s: _num(_get(s, "group", "routing_cost_p50_ms"), "{:.3f}"),
    )
    row("start-up to first /health (s)", "", lambda s: _num(s.get("startup_s"), "{:.2f}"))
    row(
        "start-up to first /health, median of runs (s)",
        "",
        lambda s: _num(s.get("startup_median_s"), "{:.2f}") if "startup_runs_s" in s else "-",
    )

    def mem(s: dict[str, Any], key: str) -> str:
        r = s.get(key)
        if not r:
            return "-"
        return f"{r['master']:.0f} / " + ", ".join(f"{w:.0f}" for w in r["workers"])

    row("RSS idle: master / worker(s) (MiB)", "", lambda s: mem(s, "rss_idle"))
    row("RSS after the load above (MiB)", "", lambda s: mem(s, "rss_after_load"))
    row(
        "worker RSS after 10k / 100k requests (MiB)",
        "",
        lambda s: _pair(_get(s, "rss_after_10k", "workers_max"), _get(s, "rss_after_100k", "workers_max"), 1),
    )

    floor = results.get("floor")
    if floor:
        lines += [
            "",
            "The stack's floor, same gunicorn.conf.py (bench/floor.py: no auth, routing, quota, metrics or "
            "logging):",
            "",
            "| app | added sequential p50 (ms) | 64 connections: req/s | CPU per request (ms) |",
            "|---|---|---|---|",
        ]
        for name, label in (
            ("static", "gunicorn + Flask, fixed answer"),
            ("upstream", "gunicorn + Flask + one urllib3 call to the fake"),
        ):
            f = floor.get(name) or {}
            lines.append(
                f"| {label} | {_num(f.get('added_p50_ms'), '{:.3f}')} | {_num(f.get('c64_rps'), '{:,}')} | "
                f"{_num(f.get('c64_cpu_ms_per_request'), '{:.3f}')} |"
            )
    lines += ["", "| target | limit | measured | |", "|---|---|---|---|"]
    for label, scenario, getter, limit, unit in TARGETS:
        data = scenarios.get(scenario)
        try:
            value = getter(data) if data else None
        except (KeyError, TypeError):
            value = None
        if value is None:
            lines.append(f"| {label} | ≤ {limit:g} {unit} | not run | |")
            continue
        over = f"{value - limit:.3f}" if unit in ("ms", "s") else f"{value - limit:.1f}"
        verdict = "met" if value <= limit else f"**MISSED** by {over} {unit}"
        lines.append(f"| {label} | ≤ {limit:g} {unit} | {value:g} {unit} | {verdict} |")
    return "\n".join(lines)


def median_of(runs: list[Any]) -> Any:
    """Each number replaced by its median over the runs (the lower middle one for an even count; the
    same shape; other values from the first run)."""
    first = runs[0]
    if isinstance(first, bool) or not runs:
        return first
    if isinstance(first, int | float) and all(isinstance(r, int | float) for r in runs):
        return statistics.median_low(runs)  # an observed value, also for an even number of runs
    if isinstance(first, dict):
        return {k: median_of([r[k] for r in runs if isinstance(r, dict) and k in r]) for k in first}
    if isinstance(first, list) and all(isinstance(r, list) and len(r) == len(first) for r in runs):
        return [median_of([r[i] for r in runs]) for i in range(len(first))]
    return first


if __name__ == "__main__":
    loaded = [json.loads(Path(name).read_text()) for name in sys.argv[1:]]
    merged = median_of(loaded)
    if len(loaded) > 1:
        merged["machine"]["date"] += f"; median of {len(loaded)} runs"
        merged["machine"]["load_avg_at_start"] = [r["machine"]["load_avg_at_start"][0] for r in loaded]
    print(render(merged))
