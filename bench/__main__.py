"""One command, one machine, one run: the fake upstream called directly and through ai-proxy.

    bash bench/run                  # installs nginx/wrk when missing, then this
    .venv/bin/python -m bench [--quick] [--json out.json] [--no-redis] [--no-soak]
    .venv/bin/python -m bench --capacity [--streams N --seconds S]   # bench/capacity.py

Every proxied number is paired with a direct call to the same fake, measured in the same run (the
sequential ones interleaved block by block), because the machine is shared and absolute numbers
drift. See docs/PERFORMANCE.md for what each row means.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from statistics import median
from typing import Any, NamedTuple

import yaml

from bench import client, load, payloads, procs
from bench.client import Target, percentile

CLIENT_KEY = "bench-client-key"
UPSTREAM_KEY = "sk-bench-upstream"
CHAT = "/v1/chat/completions"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
STREAM_CHUNKS = 100
STREAM_DELAY_MS = 1


def bench_config(nginx: int, fake: int) -> dict[str, Any]:
    """The models: `bench/fast` (static JSON from nginx, its quota counted), `bench/stream` and
    `bench/burst` (100-chunk SSE from the fake, 1 ms apart / back to back), `bench/unlimited` (no
    windows: the leak soak) and the SPENT group, whose three preferred members are spent first."""
    json_url = f"http://127.0.0.1:{nginx}{CHAT}"
    sse = f"http://127.0.0.1:{fake}{CHAT}?chunks={STREAM_CHUNKS}"
    common = {"provider": "openai", "token": UPSTREAM_KEY}
    models = [
        {"name": "bench/fast", "url": json_url, "requests_per_minute": 1_000_000_000, **common},
        {"name": "bench/unlimited", "url": json_url, **common},
        {"name": "bench/stream", "url": f"{sse}&delay_ms={STREAM_DELAY_MS}", **common},
        {"name": "bench/burst", "url": f"{sse}&delay_ms=0", **common},
    ]
    for i in (1, 2, 3):
        models.append(
            {
                "name": f"bench/spent-{i}",
                "url": json_url,
                "priority": 1,
                "requests_per_day": 1,
                "model_size": "SPENT",
                **common,
            }
        )
    models.append(
        {
            "name": "bench/last",
            "url": json_url,
            "priority": 2,
            "requests_per_minute": 1_000_000_000,
            "model_size": "SPENT",
            **common,
        }
    )
    return {"models": models}


class Upstreams(NamedTuple):
    nginx: subprocess.Popen
    fake: subprocess.Popen
    nginx_port: int
    fake_port: int
    config: Path


def start_upstreams(work: Path) -> Upstreams:
    """nginx (the static answer) and the fake on free ports, and a config.yaml of bench_config over
    them in `work`: what the A/B commands start before each checkout's gunicorn."""
    nginx_port, fake_port = procs.free_port(), procs.free_port()
    nginx = procs.start_nginx(nginx_port, work, payloads.COMPLETION_BYTES)
    fake = procs.start_fake(fake_port, work / "fake.log")
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(bench_config(nginx_port, fake_port), sort_keys=False))
    return Upstreams(nginx, fake, nginx_port, fake_port, config)


def ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.dir = Path(tempfile.mkdtemp(prefix="ai-proxy-bench-"))
        self.nginx_port = procs.free_port()
        self.fake_port = procs.free_port()
        self.results: dict[str, Any] = {"machine": machine(), "scenarios": {}}
        self.nginx = procs.start_nginx(self.nginx_port, self.dir, payloads.COMPLETION_BYTES)
        self.fake = procs.start_fake(self.fake_port, self.dir / "fake.log")
        self.config = self.dir / "config.yaml"
        self.config.write_text(yaml.safe_dump(bench_config(self.nginx_port, self.fake_port), sort_keys=False))

    def close(self) -> None:
        procs.stop(self.nginx)
        procs.stop(self.fake)
        if not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    # --- the fakes' own ceilings ----------------------------------------------------------------
    def ceilings(self) -> None:
        seconds = 2 if self.quick else 4
        body = payloads.request_body("gpt-4o-mini")
        found = {}
        for name, port in (("nginx", self.nginx_port), ("fake", self.fake_port)):
            result = load.run_wrk(
                f"http://127.0.0.1:{port}{CHAT}", body, self.dir, connections=64, seconds=seconds
            )
            found[name] = {"rps": round(result.rps), "p50_ms": result.p50_ms, "p99_ms": result.p99_ms}
            self.log(f"ceiling {name}: {result.rps:,.0f} req/s at 64 connections")
        self.results["ceilings"] = found

    def floor(self) -> None:
        """bench.floor's two apps under gunicorn.conf.py: what gunicorn + Flask cost, and gunicorn +
        Flask + one urllib3 call to the same fake, without any of the proxy's own work."""
        found: dict[str, Any] = {}
        body = payloads.request_body("bench/fast")
        for name in ("static", "upstream"):
            port = procs.free_port()
            env = {"BENCH_UPSTREAM_PORT": str(self.nginx_port)}
            server = procs.Gunicorn(
                self.config, port, env, self.dir / f"floor-{name}.log", 1, app=f"bench.floor:{name}"
            )
            server.start()
            try:
                targets = {"direct": Target(self.nginx_port, CHAT, body), name: Target(port, CHAT, body)}
                times = client.interleaved(targets, 1000, warmup=200)
                before = server.cpu_seconds()
                result = load.run_wrk(
                    f"http://127.0.0.1:{port}{CHAT}", body, self.dir, connections=64, seconds=6
                )
                cpu = server.cpu_seconds() - before
            finally:
                server.stop()
            found[name] = {
                "added_p50_ms": ms(percentile(times[name], 50) - percentile(times["direct"], 50)),
                "c64_rps": round(result.rps),
                "c64_cpu_ms_per_request": round(cpu * 1000.0 / max(result.requests, 1), 3),
            }
            self.log(f"floor {name}: {found[name]}")
        self.results["floor"] = found

    def startups(self, runs: int = 5) -> None:
        """Start-up to the first 200 from GET /health, `runs` times (memory storage, as shipped)."""
        times = []
        for i in range(runs):
            server = procs.Gunicorn(
                self.config, procs.free_port(), {"AI_PROXY_API_KEYS": CLIENT_KEY}, self.dir / f"up-{i}.log", 1
            )
            server.start()
            times.append(server.startup_s)
            server.stop()
        self.results["scenarios"]["memory"]["startup_runs_s"] = [round(t, 3) for t in times]
        self.results["scenarios"]["memory"]["startup_median_s"] = round(median(times), 3)
        self.log(f"start-up to /health, {runs} runs: median {median(times):.3f} s")

    # --- one proxy configuration -----------------------------------------------------------------
    def scenario(self, name: str, storage: str, workers: int, *, full: bool) -> None:
        out: dict[str, Any] = {"storage": storage.split("/")[0].rstrip(":"), "workers": workers}
        self.results["scenarios"][name] = out
        env = {"AI_PROXY_API_KEYS": CLIENT_KEY}
        if storage != "memory":
            flush_redis(storage)
            env["AI_PROXY_STORAGE"] = storage
        port = procs.free_port()
        server = procs.Gunicorn(self.config, port, env, self.dir / f"gunicorn-{name}.log", workers)
        self.log(f"{name}: starting gunicorn ({workers} worker(s), storage {out['storage']})")
        server.start()
        try:
            out["startup_s"] = round(server.startup_s, 3)
            time.sleep(0.5)
            out["rss_idle"] = rss(server)
            self.log(f"{name}: up in {server.startup_s:.3f}s, idle RSS {out['rss_idle']}")
            for i in (1, 2, 3):  # spend the SPENT group's preferred members
                Target(port, CHAT, payloads.request_body(f"bench/spent-{i}"), CLIENT_KEY).once()
            if full:
                self.sequential(port, out)
                self.group(port, out)
                self.streams(port, out)
            self.concurrency(server, port, out)
            out["rss_after_load"] = rss(server)
        finally:
            server.stop()
            if storage != "memory":
                flush_redis(storage)

    def sequential(self, port: int, out: dict[str, Any]) -> None:
        total = 1000 if self.quick else 3000
        body = payloads.request_body("bench/fast")
        targets = {
            "direct": Target(self.nginx_port, CHAT, body),
            "proxied": Target(port, CHAT, body, CLIENT_KEY),
        }
        times = client.interleaved(targets, total, warmup=300)
        for t in targets.values():
            t.close()
        seq = {
            kind: {"p50_ms": ms(percentile(v, 50)), "p99_ms": ms(percentile(v, 99)), "n": len(v)}
            for kind, v in times.items()
        }
        seq["added_p50_ms"] = round(seq["proxied"]["p50_ms"] - seq["direct"]["p50_ms"], 3)
        seq["added_p99_ms"] = round(seq["proxied"]["p99_ms"] - seq["direct"]["p99_ms"], 3)
        out["sequential"] = seq
        self.log(f"sequential: added p50 {seq['added_p50_ms']} ms, p99 {seq['added_p99_ms']} ms")

    def group(self, port: int, out: dict[str, Any]) -> None:
        total = 500 if self.quick else 1500
        targets = {
            "concrete": Target(port, CHAT, payloads.request_body("bench/fast"), CLIENT_KEY),
            "group": Target(port, CHAT, payloads.request_body("SPENT"), CLIENT_KEY),
        }
        times = client.interleaved(targets, total, warmup=100)
        for t in targets.values():
            t.close()
        result = {
            kind: {"p50_ms": ms(percentile(v, 50)), "p99_ms": ms(percentile(v, 99))}
            for kind, v in times.items()
        }
        result["routing_cost_p50_ms"] = round(result["group"]["p50_ms"] - result["concrete"]["p50_ms"], 3)
        out["group"] = result
        self.log(f"group skipping 3 spent models: +{result['routing_cost_p50_ms']} ms over a concrete model")

    def streams(self, port: int, out: dict[str, Any]) -> None:
        n = 10 if self.quick else 30
        result: dict[str, Any] = {"chunks": STREAM_CHUNKS, "delay_ms": STREAM_DELAY_MS}
        for model in ("bench/stream", "bench/burst"):
            direct = Target(
                self.fake_port,
                f"{CHAT}?chunks={STREAM_CHUNKS}&delay_ms="
                + (str(STREAM_DELAY_MS) if model == "bench/stream" else "0"),
                payloads.request_body("x", True),
            )
            proxied = Target(port, CHAT, payloads.request_body(model, True), CLIENT_KEY)
            runs: dict[str, list[client.Stream]] = {"direct": [], "proxied": []}
            for i in range(n + 3):
                for kind, target in (("direct", direct), ("proxied", proxied)):
                    got = target.stream_once()
                    if i >= 3:  # warm-up
                        runs[kind].append(got)
            direct.close()
            proxied.close()
            row: dict[str, Any] = {}
            for kind, streams in runs.items():
                events = sum(len(s.arrivals) for s in streams)
                row[kind] = {
                    "ttfb_p50_ms": ms(median(s.first_byte or 0.0 for s in streams)),
                    "total_p50_ms": ms(median(s.total for s in streams)),
                    "events": events // len(streams),
                    "separate_pct": round(
                        100 * sum(s.reads_with_events for s in streams) / max(events, 1), 1
                    ),
                }
            row["added_ttfb_p50_ms"] = round(row["proxied"]["ttfb_p50_ms"] - row["direct"]["ttfb_p50_ms"], 3)
            row["added_total_p50_ms"] = round(
                row["proxied"]["total_p50_ms"] - row["direct"]["total_p50_ms"], 3
            )
            result["spaced" if model == "bench/stream" else "burst"] = row
        out["stream"] = result
        spaced = result["spaced"]
        self.log(
            f"stream: TTFB +{spaced['added_ttfb_p50_ms']} ms, total +{spaced['added_total_p50_ms']} ms, "
            f"{spaced['proxied']['separate_pct']}% of events in their own read"
        )

    def concurrency(self, server: procs.Gunicorn, port: int, out: dict[str, Any]) -> None:
        seconds = 3 if self.quick else 8
        body = payloads.request_body("bench/fast")
        for conns in (16, 64):
            direct = load.run_wrk(
                f"http://127.0.0.1:{self.nginx_port}{CHAT}",
                body,
                self.dir,
                connections=conns,
                seconds=max(2, seconds // 2),
            )
            before = server.cpu_seconds()
            proxied = load.run_wrk(
                f"http://127.0.0.1:{port}{CHAT}",
                body,
                self.dir,
                connections=conns,
                seconds=seconds,
                key=CLIENT_KEY,
            )
            cpu = server.cpu_seconds() - before
            row = {
                "direct": result_row(direct),
                "proxied": result_row(proxied),
                "cpu_ms_per_request": round(cpu * 1000.0 / max(proxied.requests, 1), 3),
                "cpu_cores_busy": round(cpu / proxied.seconds, 2),
            }
            out[f"c{conns}"] = row
            self.log(
                f"c{conns}: {proxied.rps:,.0f} req/s p50 {proxied.p50_ms} ms p99 {proxied.p99_ms} ms, "
                f"{row['cpu_ms_per_request']} ms CPU/request, errors {proxied.errors}"
            )

    def leak(self) -> None:
        """A fresh server (memory storage, as shipped): RSS after 10,000 and after 100,000 requests at
        64 connections, to a model without quota windows (a window's log holds one entry per request
        in it, by design, so a model with a per-minute window grows until its first minute is over)."""
        out = self.results["scenarios"]["memory"]
        port = procs.free_port()
        server = procs.Gunicorn(
            self.config, port, {"AI_PROXY_API_KEYS": CLIENT_KEY}, self.dir / "gunicorn-leak.log", 1
        )
        server.start()
        try:
            done = self.soak(server, port, out, 10_000, "rss_after_10k")
            self.soak(server, port, out, 100_000 - done, "rss_after_100k")
        finally:
            server.stop()
        growth = out["rss_after_100k"]["workers_max"] / out["rss_after_10k"]["workers_max"] - 1
        out["rss_growth_10k_to_100k_pct"] = round(100 * growth, 1)

    def soak(self, server: procs.Gunicorn, port: int, out: dict[str, Any], count: int, key: str) -> int:
        """At least `count` requests at 64 connections (wrk runs for a time, so the rate measured in a
        first short run sets the length of the next), then the RSS."""
        body = payloads.request_body("bench/unlimited")
        done, rate = 0, 0.0
        while done < count:
            seconds = 3 if not rate else max(1, math.ceil((count - done) / rate))
            result = load.run_wrk(
                f"http://127.0.0.1:{port}{CHAT}",
                body,
                self.dir,
                connections=64,
                seconds=seconds,
                key=CLIENT_KEY,
            )
            if result.errors:
                raise RuntimeError(f"soak: {result.errors} errors")
            done += result.requests
            rate = result.rps
        out[key] = rss(server)
        self.log(f"soak: +{done} requests, RSS {out[key]}")
        return done


def result_row(result: load.LoadResult) -> dict[str, Any]:
    row = asdict(result)
    row["rps"] = round(result.rps)
    if result.errors:
        row["errors"] = result.errors
    return row


def rss(server: procs.Gunicorn) -> dict[str, Any]:
    master, workers = server.rss()
    return {
        "master": round(master, 1),
        "workers": [round(w, 1) for w in workers],
        "workers_max": round(max(workers), 1),
        "total": round(master + sum(workers), 1),
    }


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url, socket_connect_timeout=1).flushdb()


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]

    def version(command: list[str]) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=5)
        except OSError:
            return "missing"
        return (done.stdout + done.stderr).strip().splitlines()[0]

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem) / 2**20, 1),
        "kernel": platform.release(),
        "os": platform.freedesktop_os_release().get("PRETTY_NAME", "")
        if hasattr(platform, "freedesktop_os_release")
        else "",
        "python": platform.python_version(),
        "nginx": version([procs.nginx_binary() or "nginx", "-v"]),
        "wrk": version(["wrk", "-v"]),
        "redis": version(["redis-server", "--version"]),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="ai-proxy benchmark")
    parser.add_argument("--quick", action="store_true", help="fewer requests and shorter runs (a smoke run)")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis-storage scenarios")
    parser.add_argument("--no-soak", action="store_true", help="skip the 100,000-request leak soak")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (configs, logs)")
    capacity = parser.add_argument_group("capacity (bench/capacity.py)")
    capacity.add_argument("--capacity", action="store_true", help="run the capacity scenarios instead")
    capacity.add_argument("--streams", type=int, default=1000, help="concurrent streams (default 1000)")
    capacity.add_argument("--seconds", type=int, default=30, help="length of each stream (default 30)")
    capacity.add_argument("--ramp", type=int, default=10, help="seconds over which the ramp opens them")
    capacity.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="server env")
    capacity.add_argument("--litellm", help="a Python with litellm[proxy] installed: compare with it")
    capacity.add_argument("--only", action="append", choices=("streams", "tricklers", "instances", "litellm"))
    capacity.add_argument("--redis", default=REDIS_URL, help="Redis for the instances (flushed)")
    args = parser.parse_args(argv)
    if args.capacity:
        from bench import capacity as capacity_run

        signal.signal(signal.SIGTERM, _interrupted)
        return capacity_run.main(args)
    if load.wrk_binary() is None or procs.nginx_binary() is None:
        print("bench needs nginx and wrk: run `bash bench/run`, which installs them", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupted)  # so that every server started is stopped
    started = time.monotonic()
    run = Run(args)
    try:
        run.ceilings()
        run.scenario("memory", "memory", 1, full=True)
        run.startups(3 if args.quick else 5)
        if not args.quick:
            run.floor()
        if not args.no_soak and not args.quick:
            run.leak()
        if not args.no_redis and not redis_answers(REDIS_URL):
            print(f"bench: no Redis at {REDIS_URL}: skipping the Redis scenarios", file=sys.stderr)
        elif not args.no_redis:
            run.scenario("redis", REDIS_URL, 1, full=True)
            run.scenario("redis-2w", REDIS_URL, 2, full=False)
    finally:
        run.close()
    from bench.report import finish, render

    finish(run.results, started, args.json, render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
