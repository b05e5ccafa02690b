"""Capacity: how many long streams, slow clients and instances the shipped deployment holds, each
measured against a direct call to the same fake upstream in the same run.

    bash bench/run --capacity [--streams 1000] [--seconds 30] [--ramp 10] [--set AI_PROXY_THREADS=512]
                              [--litellm PYTHON] [--only streams] [--json out.json]

1. streams: N streams of S seconds (a chunk a second) against one gunicorn worker as shipped, opened
   all at once and as a ramp; one in twenty waits three heartbeat intervals for its first chunk;
2. tricklers: normal requests while 50 clients send their headers (then their bodies) a byte a second;
3. instances: 4 gunicorn instances x 2 workers sharing one Redis under a 2,000-request burst: what
   was admitted per model and per client, and the Redis round trips per request (MONITOR);
4. LiteLLM (with --litellm, a Python that has `litellm[proxy]`): scenario 1, at once, through it.
The load comes from bench/swarm.py, an asyncio process of its own. See docs/PERFORMANCE.md;
`python -m bench.capacity run.json` re-renders a run saved with --json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import redis
import yaml

from app.config import ServerConfig
from bench import procs
from bench.__main__ import CHAT, CLIENT_KEY, flush_redis, machine, ms, redis_answers
from bench.client import Target, percentile
from bench.payloads import request_body
from bench.report import finish

CAPPED_KEY = "bench-capped-client-key"
LITELLM_KEY = "sk-bench-litellm-master-key"
MODEL_LIMIT = 100  # requests_per_minute of cap/limited
CLIENT_LIMIT = 60  # requests_per_minute of the client "capped"
INSTANCES = 4
BURST = 2000
TRICKLERS = 50
HEARTBEAT = ServerConfig().heartbeat_seconds
SLOW_LATENCY = 3 * HEARTBEAT + 1  # seconds before a slow stream's first chunk
STREAM_SLACK = 60  # seconds a stream may run late before it counts as an error (timeout)
SCENARIOS = ("streams", "tricklers", "instances", "litellm")
# Sent on every new Redis connection, not part of any request's work.
REDIS_SETUP = {"CLIENT", "HELLO", "SELECT", "PING", "INFO", "SCRIPT"}


def stream_query(seconds: int, slow: bool) -> str:
    """The fake's query for a stream of `seconds`, an event a second (content chunks, then finish,
    usage and [DONE]); a `slow` one waits SLOW_LATENCY before its first chunk, within the same time."""
    if slow:
        chunks = max(1, seconds - round(SLOW_LATENCY) - 2)
        return f"?chunks={chunks}&delay_ms=1000&latency_ms={SLOW_LATENCY * 1000:.0f}"
    return f"?chunks={max(1, seconds - 2)}&delay_ms=1000"


def capacity_config(fake: int, seconds: int) -> dict[str, Any]:
    """Models without limits (`cap/stream`, `cap/slow`, `cap/fast`), one with a per-minute limit
    (`cap/limited`) and a client `capped` with a per-minute limit of its own."""
    base = f"http://127.0.0.1:{fake}{CHAT}"
    common = {"provider": "openai", "token": "sk-bench-upstream"}
    return {
        "models": [
            {"name": "cap/stream", "url": base + stream_query(seconds, False), **common},
            {"name": "cap/slow", "url": base + stream_query(seconds, True), **common},
            {"name": "cap/fast", "url": base, **common},
            {"name": "cap/limited", "url": base, "requests_per_minute": MODEL_LIMIT, **common},
        ],
        "clients": [{"name": "capped", "key": CAPPED_KEY, "requests_per_minute": CLIENT_LIMIT}],
    }


def slow_flags(n: int, slow: int) -> list[bool]:
    """`slow` of `n` streams marked slow, spread evenly."""
    return [i * slow // n != (i + 1) * slow // n for i in range(n)]


def stream_summary(results: list[dict[str, Any]], slow: list[bool]) -> dict[str, Any]:
    """What bench/swarm.py recorded of a set of streams: completions, errors, first-byte times and
    the largest gap between chunks of the ordinary streams, heartbeat gaps of the slow ones."""
    normal = [r for r, s in zip(results, slow, strict=True) if not s]
    waited = [r for r, s in zip(results, slow, strict=True) if s]
    first = [r["first_byte"] for r in normal if r["first_byte"] is not None]
    done = sum(r["done"] for r in results)
    out: dict[str, Any] = {
        "streams": len(results),
        "done": done,
        "errors": len(results) - done,
        "error_kinds": dict(Counter(r["error"] or "no [DONE]" for r in results if not r["done"])),
        "first_byte_p50_ms": ms(percentile(first, 50)),
        "first_byte_p99_ms": ms(percentile(first, 99)),
        "first_byte_max_ms": ms(max(first, default=float("nan"))),
        "no_first_byte": len(normal) - len(first),
        "chunk_gap_p99_ms": ms(percentile([r["gap_content"] for r in normal], 99)),
    }
    if waited:
        out["slow_streams"] = len(waited)
        out["heartbeat_gap_max_s"] = round(max(r["gap_before_content"] for r in waited), 3)
        out["heartbeats_min"] = min(r["heartbeats"] for r in waited)
    return out


def added(direct: dict[str, Any], proxied: dict[str, Any]) -> dict[str, float]:
    return {
        f"added_{key}": round(proxied[key] - direct[key], 3)
        for key in ("first_byte_p50_ms", "first_byte_p99_ms")
    }


MONITOR_LINE = re.compile(r'^[\d.]+ \[(\d+) (\S+)\] "([^"]+)"')


def round_trips(lines: Iterable[str], db: int) -> Counter[str]:
    """Commands clients sent to database `db`, by name, from `redis-cli monitor` lines (the
    commands a script runs inside Redis, `[db lua]`, are not round trips)."""
    found: Counter[str] = Counter()
    for line in lines:
        match = MONITOR_LINE.match(line)
        if match and int(match[1]) == db and match[2] != "lua":
            found[match[3].upper()] += 1
    return found


def request_count(commands: Counter[str]) -> int:
    return sum(n for name, n in commands.items() if name not in REDIS_SETUP)


class Capacity:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.n = args.streams
        self.slow = slow_flags(self.n, max(1, self.n // 20))
        self.overrides = dict(item.split("=", 1) for item in args.set)
        self.dir = Path(tempfile.mkdtemp(prefix="ai-proxy-capacity-"))
        self.fake_port = procs.free_port()
        self.fake = procs.start_fake(self.fake_port, self.dir / "fake.log")
        self.config = self.dir / "config.yaml"
        self.config.write_text(yaml.safe_dump(capacity_config(self.fake_port, args.seconds), sort_keys=False))
        about = {k: v for k, v in machine().items() if k not in ("nginx", "wrk")}
        self.results: dict[str, Any] = {"machine": about, "overrides": self.overrides}

    def close(self) -> None:
        procs.stop(self.fake)
        if not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    def gunicorn(self, name: str, workers: int = 1, storage: str = "memory") -> procs.Gunicorn:
        env = {"AI_PROXY_API_KEYS": CLIENT_KEY, "AI_PROXY_STORAGE": storage, **self.overrides}
        log = self.dir / f"gunicorn-{name}.log"
        return procs.Gunicorn(self.config, procs.free_port(), env, log, workers).start()

    def swarm(self, name: str, job: dict[str, Any], watch: Sequence[int] = ()) -> tuple[dict[str, Any], dict]:
        """Run a bench/swarm.py job; meanwhile sample the RSS and threads of the `watch` pids."""
        out, err = self.dir / f"swarm-{name}.json", self.dir / f"swarm-{name}.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = start_swarm(job, stdout, stderr)
        peak = {"rss_mib": 0.0, "threads": 0}
        try:
            while proc.poll() is None:
                if watch:
                    peak["rss_mib"] = max(peak["rss_mib"], sum(procs.rss_mib(p) for p in watch))
                    peak["threads"] = max(peak["threads"], sum(procs.threads(p) for p in watch))
                time.sleep(0.25)
        finally:
            procs.stop(proc)
        if proc.returncode:
            raise RuntimeError(f"swarm {name} failed: {err.read_text()[-2000:]}")
        return json.loads(out.read_text()), peak

    def warm_up(self, spec: dict[str, Any]) -> None:
        """One plain request (its first costs imports and connections), then a moment of quiet."""
        answer, _ = self.swarm("warm-up", {"kind": "requests", "requests": [spec]})
        if answer["requests"][0][0] != 200:
            raise RuntimeError(f"warm-up request failed: {answer['requests'][0]}")
        time.sleep(1)

    @contextlib.contextmanager
    def trickling(self, port: int, part: str) -> Iterator[None]:
        """TRICKLERS clients sending their request `part` a byte a second, all started, while inside."""
        job = {"kind": "trickle", "part": part, "count": TRICKLERS, "request": proxied_spec(port, "cap/fast")}
        proc = start_swarm(job, subprocess.PIPE)
        assert proc.stdout is not None
        try:
            if not select.select([proc.stdout], [], [], 30)[0] or proc.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"{TRICKLERS} tricklers did not start")
            time.sleep(2)  # each has sent a few bytes: the server has taken them in
            yield
        finally:
            procs.stop(proc)

    # --- 1. streams ---------------------------------------------------------------------------
    def stream_job(
        self, port: int, ramp: float, models: tuple[str, str] | None, key: str = CLIENT_KEY
    ) -> dict[str, Any]:
        """N streams to the fake directly (`models` None) or through a proxy asking for `models`
        (ordinary, slow), opened over `ramp` seconds."""
        streams = []
        for i, slow in enumerate(self.slow):
            if models is None:
                spec = direct_spec(self.fake_port, CHAT + stream_query(self.args.seconds, slow), True)
            else:
                spec = proxied_spec(port, models[slow], stream=True, key=key)
            streams.append({**spec, "start": ramp * i / self.n})
        return {"kind": "streams", "streams": streams, "timeout": self.args.seconds + STREAM_SLACK}

    def streams(self) -> None:
        found: dict[str, Any] = {"streams": self.n, "seconds": self.args.seconds, "heartbeat_s": HEARTBEAT}
        for mode, ramp in (("at_once", 0.0), ("ramp", float(self.args.ramp))):
            direct, _ = self.swarm(f"direct-{mode}", self.stream_job(self.fake_port, ramp, None))
            row: dict[str, Any] = {"direct": stream_summary(direct["streams"], self.slow)}
            row["swarm_cpu_s"] = direct["cpu_seconds"]
            server = self.gunicorn(f"streams-{mode}")
            try:
                self.warm_up(proxied_spec(server.port, "cap/stream"))
                worker = server.worker_pids()[0]
                idle, cpu = procs.rss_mib(worker), procs.cpu_seconds([worker])
                job = self.stream_job(server.port, ramp, ("cap/stream", "cap/slow"))
                proxied, peak = self.swarm(f"proxied-{mode}", job, [worker])
                row["proxied"] = stream_summary(proxied["streams"], self.slow)
                row["proxied"].update(worker_usage(idle, peak, procs.cpu_seconds([worker]) - cpu, self.n))
            finally:
                server.stop()
            row["added"] = added(row["direct"], row["proxied"])
            found[mode] = row
            self.log(f"streams {mode}: {json.dumps(row)}")
        self.results["streams"] = found

    # --- 2. tricklers -------------------------------------------------------------------------
    def tricklers(self) -> None:
        server = self.gunicorn("tricklers")
        found: dict[str, Any] = {"tricklers": TRICKLERS}
        try:
            for part in ("none", "headers", "body"):
                with contextlib.nullcontext() if part == "none" else self.trickling(server.port, part):
                    found[part] = sample_requests(self.fake_port, server.port)
                self.log(f"tricklers {part}: {found[part]}")
        finally:
            server.stop()
        for part in ("headers", "body"):
            found[f"added_by_{part}_p99_ms"] = round(
                found[part]["proxied"]["p99_ms"] - found["none"]["proxied"]["p99_ms"], 3
            )
        self.results["tricklers"] = found

    # --- 3. instances -------------------------------------------------------------------------
    def instances(self) -> None:
        url = self.args.redis
        if not redis_answers(url):
            self.log(f"instances: skipped, no Redis at {url}")
            return
        flush_redis(url)
        db = redis.Redis.from_url(url).connection_pool.connection_kwargs.get("db", 0)
        servers = [self.gunicorn(f"instance-{i}", 2, url) for i in range(INSTANCES)]
        try:
            asks = [(CLIENT_KEY, "cap/limited")] * (BURST // 2)
            asks += [(CAPPED_KEY, "cap/limited"), (CAPPED_KEY, "cap/fast")] * (BURST // 4)
            random.Random(15).shuffle(asks)
            requests = [
                proxied_spec(servers[i % INSTANCES].port, model, key=key)
                for i, (key, model) in enumerate(asks)
            ]
            with self.monitor(db) as burst_trips:
                result, _ = self.swarm("burst", {"kind": "requests", "requests": requests})
            probes = {}
            for name, model in (("admitted", "cap/fast"), ("refused", "cap/limited")):
                probe = {"kind": "requests", "requests": [proxied_spec(servers[0].port, model)]}
                with self.monitor(db) as trips:
                    answer, _ = self.swarm(f"probe-{name}", probe)
                probes[name] = {"answer": answer["requests"][0][:2], "redis_commands": dict(trips)}
        finally:
            for server in servers:
                server.stop()
            flush_redis(url)
        found = admitted(asks, result["requests"])
        found.update(instances=INSTANCES, workers_each=2, burst=BURST, probes=probes)
        found["redis_commands_in_burst"] = dict(burst_trips)
        found["redis_round_trips_per_request"] = round(request_count(burst_trips) / BURST, 3)
        self.results["instances"] = found
        self.log(f"instances: {json.dumps(found)}")

    @contextlib.contextmanager
    def monitor(self, db: int) -> Iterator[Counter[str]]:
        """The commands sent to database `db` while inside (`redis-cli monitor`), counted on exit."""
        log = self.dir / "monitor.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["redis-cli", "-u", self.args.redis, "monitor"], stdout=out, start_new_session=True
            )
        found: Counter[str] = Counter()
        try:
            while b"OK" not in log.read_bytes():
                time.sleep(0.02)
            yield found
            time.sleep(0.5)  # the last commands reach the monitor
        finally:
            procs.stop(proc)
        found.update(round_trips(log.read_text(errors="replace").splitlines(), db))

    # --- 4. LiteLLM ---------------------------------------------------------------------------
    def litellm(self) -> None:
        python = self.args.litellm
        check = [python, "-c", "import litellm.proxy.proxy_server"] if python else None
        if not check or subprocess.run(check, capture_output=True, env=LITELLM_ENV).returncode:
            self.log(
                "LiteLLM: skipped (give --litellm PYTHON, a venv with it: python3 -m venv /tmp/litellm "
                "&& /tmp/litellm/bin/pip install 'litellm[proxy]')"
            )
            return
        fake_port, port = procs.free_port(), procs.free_port()
        fake = procs.start_fake(
            fake_port, self.dir / "fake-litellm.log", stream_query(self.args.seconds, False)[1:]
        )
        config = self.dir / "litellm.yaml"
        config.write_text(yaml.safe_dump(litellm_config(fake_port)))
        command = [str(Path(python).parent / "litellm"), "--config", str(config), "--host", "127.0.0.1"]
        with open(self.dir / "litellm.log", "ab") as out:
            proc = subprocess.Popen(
                [*command, "--port", str(port), "--num_workers", "1"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=LITELLM_ENV,
                start_new_session=True,
            )
        try:
            started = time.monotonic()
            while proc.poll() is None and time.monotonic() - started < 180:
                with contextlib.suppress(RuntimeError):
                    procs.wait_port(port, timeout=1)
                    break
            if proc.poll() is not None:
                raise RuntimeError(f"LiteLLM did not start: see {self.dir / 'litellm.log'} (--keep)")
            startup = time.monotonic() - started
            self.warm_up(proxied_spec(port, "cap/stream", key=LITELLM_KEY))
            pids = [proc.pid, *procs.children(proc.pid)]
            idle, cpu = sum(procs.rss_mib(p) for p in pids), procs.cpu_seconds(pids)
            job = self.stream_job(port, 0.0, ("cap/stream", "cap/stream"), LITELLM_KEY)  # no slow ones
            result, peak = self.swarm("litellm", job, pids)
            row = stream_summary(result["streams"], [False] * self.n)
            row.update(worker_usage(idle, peak, procs.cpu_seconds(pids) - cpu, self.n))
            row["startup_s"] = round(startup, 1)
            direct = self.results.get("streams", {}).get("at_once", {}).get("direct")
            found = {"version": package_version(python), "proxied": row}
            if direct:
                found["added"] = added(direct, row)
        finally:
            procs.stop(proc)
            procs.stop(fake)
        self.results["litellm"] = found
        self.log(f"litellm: {json.dumps(found)}")


def start_swarm(job: dict[str, Any], stdout: Any, stderr: Any = None) -> subprocess.Popen[bytes]:
    """bench/swarm.py in a process (and session) of its own, working on `job`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.swarm"],
        cwd=procs.REPO,
        stdin=subprocess.PIPE,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(job).encode())
    proc.stdin.close()
    return proc


LITELLM_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("AI_PROXY_")},
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price list from the internet
    "LITELLM_TELEMETRY": "False",
}


def litellm_config(fake_port: int) -> dict[str, Any]:
    params = {
        "model": "openai/gpt-4o-mini",
        "api_base": f"http://127.0.0.1:{fake_port}/v1",
        "api_key": "sk-x",
    }
    return {
        "model_list": [{"model_name": "cap/stream", "litellm_params": params}],
        "litellm_settings": {"telemetry": False, "drop_params": True},
        "general_settings": {"master_key": LITELLM_KEY},
    }


def package_version(python: str) -> str:
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True).stdout.strip()


def direct_spec(port: int, path: str, stream: bool = False) -> dict[str, Any]:
    return {"port": port, "path": path, "body": request_body("x", stream).decode(), "key": ""}


def proxied_spec(port: int, model: str, *, stream: bool = False, key: str = CLIENT_KEY) -> dict[str, Any]:
    return {"port": port, "path": CHAT, "body": request_body(model, stream).decode(), "key": key}


def worker_usage(idle: float, peak: dict[str, Any], cpu: float, streams: int) -> dict[str, Any]:
    return {
        "rss_idle_mib": round(idle, 1),
        "rss_peak_mib": round(peak["rss_mib"], 1),
        "mib_per_stream": round((peak["rss_mib"] - idle) / streams, 3),
        "threads_peak": peak["threads"],
        "cpu_s": round(cpu, 2),
    }


def admitted(asks: list[tuple[str, str]], answers: list[list[Any]]) -> dict[str, Any]:
    """Admitted (200) per model and per client key, and the other answers by status and code."""
    per_model: Counter[str] = Counter()
    per_client: Counter[str] = Counter()
    others: Counter[str] = Counter()
    for (key, model), (status, code, _) in zip(asks, answers, strict=True):
        if status == 200:
            per_model[model] += 1
            per_client["capped" if key == CAPPED_KEY else "admin"] += 1
        else:
            others[f"{status} {code}".strip()] += 1
    return {
        "admitted_per_model": dict(per_model),
        "admitted_per_client": dict(per_client),
        "refused": dict(others),
        "limits": {"cap/limited": MODEL_LIMIT, "capped": CLIENT_LIMIT},
        "exact": per_model["cap/limited"] == MODEL_LIMIT and per_client["capped"] == CLIENT_LIMIT,
    }


def sample_requests(fake: int, port: int, count: int = 200, seconds: float = 15.0) -> dict[str, Any]:
    """Normal requests, direct and through the proxy alternately, `count` each or for `seconds`;
    one that takes longer than 5 s counts as timed out."""
    targets = {
        "direct": Target(fake, CHAT, request_body("x"), timeout=5),
        "proxied": Target(port, CHAT, request_body("cap/fast"), CLIENT_KEY, timeout=5),
    }
    times: dict[str, list[float]] = {name: [] for name in targets}
    timeouts = Counter[str]()
    deadline = time.monotonic() + seconds
    while len(times["proxied"]) < count and time.monotonic() < deadline:
        for name, target in targets.items():
            try:
                times[name].append(target.once())
            except OSError:
                times[name].append(5.0)
                timeouts[name] += 1
                target.close()
    for target in targets.values():
        target.close()
    return {
        name: {
            "p50_ms": ms(percentile(v, 50)),
            "p99_ms": ms(percentile(v, 99)),
            "n": len(v),
            "timeouts": timeouts[name],
        }
        for name, v in times.items()
    }


# --- report ---------------------------------------------------------------------------------------
FIRST = ("first_byte_p50_ms", "first_byte_p99_ms")
ADDED = ("added_first_byte_p50_ms", "added_first_byte_p99_ms")


def _cell(row: dict[str, Any] | None, *keys: str) -> str:
    """`row[a] / row[b] ...`, or "-" without a row."""
    return " / ".join(f"{row[k]:,}" for k in keys) if row else "-"


def _first_byte(row: dict[str, Any] | None) -> str:
    missing = row.get("no_first_byte") if row else 0
    return _cell(row, *FIRST) + (f" ({missing:,} got no byte)" if missing else "")


def stream_rows(title: str, row: dict[str, Any], litellm: dict[str, Any] | None) -> list[list[str]]:
    direct, proxied = row["direct"], row["proxied"]
    other, more = (litellm["proxied"], litellm.get("added")) if litellm else (None, None)
    each, served = (direct, proxied, other), (proxied, other)
    usage = ("rss_idle_mib", "rss_peak_mib", "mib_per_stream")
    return [
        [f"{title}: completed with [DONE] / errors", *(_cell(r, "done", "errors") for r in each)],
        ["first byte p50 / p99 (ms)", *(_first_byte(r) for r in each)],
        ["**added** first byte p50 / p99 (ms)", "", *(_cell(r, *ADDED) for r in (row["added"], more))],
        ["largest gap between chunks, p99 of streams (ms)", *(_cell(r, "chunk_gap_p99_ms") for r in each)],
        ["server RSS idle / peak / per open stream (MiB)", "", *(_cell(r, *usage) for r in served)],
        ["server threads at peak / CPU seconds", "", *(_cell(r, "threads_peak", "cpu_s") for r in served)],
    ]


def render(results: dict[str, Any]) -> str:
    """The capacity run as Markdown: one table of figures, one of the issue's targets."""
    rows: list[list[str]] = []
    targets: list[tuple[str, str, Any, bool]] = []
    streams, litellm = results.get("streams"), results.get("litellm")
    if streams:
        n = streams["streams"]
        title = f"{n:,} streams of {streams['seconds']} s opened at once"
        rows += stream_rows(title, streams["at_once"], litellm)
        rows += stream_rows(f"the same opened over {results['ramp_s']} s", streams["ramp"], None)
        for mode in ("at_once", "ramp"):
            got, more, label = streams[mode]["proxied"], streams[mode]["added"], mode.replace("_", " ")
            beat, per_stream = got["heartbeat_gap_max_s"], got["mib_per_stream"]
            title = f"{label}: {got['slow_streams']} wait {SLOW_LATENCY:g} s; largest gap (s)"
            rows.append([title, "", f"{beat} (heartbeat every {HEARTBEAT:g})", ""])
            targets += [
                (
                    f"{n:,} streams ({label}) complete, 0 errors",
                    f"{n:,}",
                    f"{got['done']:,}",
                    got["errors"] == 0,
                ),
                (f"added first-byte p99 ({label}), ms", "≤ 50", more[ADDED[1]], more[ADDED[1]] <= 50),
                (f"worker RSS per open stream ({label}), MiB", "≤ 1", per_stream, per_stream <= 1),
                (f"heartbeat gap ({label}), s", f"≤ {HEARTBEAT + 1:g}", beat, beat <= HEARTBEAT + 1),
            ]
    elif litellm:
        title = f"{litellm['proxied']['streams']:,} streams opened at once"
        rows += stream_rows(title, {"direct": None, "proxied": None, "added": None}, litellm)
    trick = results.get("tricklers")
    if trick:
        for part, label in (("none", "nobody trickling"), ("headers", "headers"), ("body", "bodies")):
            got = trick[part]
            late = f" ({got['proxied']['timeouts']} over 5 s)" if got["proxied"]["timeouts"] else ""
            who = label if part == "none" else f"{TRICKLERS} clients trickle {label}"
            direct, proxied = (_cell(got[kind], "p50_ms", "p99_ms") for kind in ("direct", "proxied"))
            rows.append([f"normal request p50 / p99 (ms), {who}", direct, proxied + late, ""])
        for part in ("headers", "body"):
            value = trick[f"added_by_{part}_p99_ms"]
            targets.append(
                (f"{TRICKLERS} clients trickle {part}: added p99, ms", "≤ 100", value, value <= 100)
            )
    inst = results.get("instances")
    if inst:
        got = (inst["admitted_per_model"].get("cap/limited", 0), inst["admitted_per_client"].get("capped", 0))
        title = f"{INSTANCES} instances x 2 workers, {BURST:,}-request burst: admitted model / client"
        rows.append([title, "", f"{got[0]} / {got[1]} (limits {MODEL_LIMIT} / {CLIENT_LIMIT})", ""])
        trips = {name: sum(p["redis_commands"].values()) for name, p in inst["probes"].items()}
        burst = inst["redis_round_trips_per_request"]
        title = "Redis round trips: per request in the burst / one admitted / one refused"
        rows.append([title, "", f"{burst} / {trips['admitted']} / {trips['refused']}", ""])
        limits = f"{MODEL_LIMIT} / {CLIENT_LIMIT}"
        targets.append(("admitted: model / client", limits, f"{got[0]} / {got[1]}", inst["exact"]))
        targets.append(("Redis round trips of a reservation", "1", trips["refused"], trips["refused"] == 1))
    version = f" {litellm['version']}" if litellm else ""
    lines = [f"| | direct | ai-proxy | LiteLLM{version} |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    lines += ["", "| target | limit | measured | |", "|---|---|---|---|"]
    lines += [f"| {t} | {limit} | {got} | {'met' if ok else '**MISSED**'} |" for t, limit, got, ok in targets]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    started = time.monotonic()
    run = Capacity(args)
    run.results["ramp_s"] = args.ramp
    try:
        for name in args.only or SCENARIOS:
            getattr(run, name)()
    finally:
        run.close()
    finish(run.results, started, args.json, render)
    return 0


if __name__ == "__main__":  # re-render a saved run: python -m bench.capacity run.json
    print(render(json.loads(Path(sys.argv[1]).read_text())))
