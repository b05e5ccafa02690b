"""A/B: two checkouts of ai-proxy against the same fake upstream, measured in the same run.

    git archive HEAD~1 | (mkdir -p /tmp/base && tar -x -C /tmp/base)
    .venv/bin/python -m bench.ab /tmp/base [NEW_DIR, default: this checkout] [--rounds 3]

Both run as shipped (gunicorn.conf.py, one worker, memory storage, the bench config). Sequential
requests are interleaved block by block between the direct call, A and B; the wrk runs alternate
A, B, A, B ... and report the median. This is how each optimisation's gain in docs/PERFORMANCE.md was
measured.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from statistics import median

from bench import client, load, payloads, procs
from bench.__main__ import CHAT, CLIENT_KEY, STREAM_CHUNKS, start_upstreams


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab")
    parser.add_argument("a", type=Path, help="checkout A (the baseline)")
    parser.add_argument("b", type=Path, nargs="?", default=procs.REPO, help="checkout B (default: this one)")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per checkout and concurrency")
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=3000, help="sequential requests per target")
    parser.add_argument("--storage", default="memory")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ai-proxy-ab-"))
    nginx, fake, nginx_port, fake_port, config = start_upstreams(work)
    env = {"AI_PROXY_API_KEYS": CLIENT_KEY}
    if args.storage != "memory":
        env["AI_PROXY_STORAGE"] = args.storage
    servers: dict[str, procs.Gunicorn] = {}
    try:
        for name, where in (("A", args.a), ("B", args.b)):
            port = procs.free_port()
            servers[name] = procs.Gunicorn(config, port, env, work / f"{name}.log", 1, app_dir=where).start()
        body = payloads.request_body("bench/fast")
        targets = {"direct": client.Target(nginx_port, CHAT, body)}
        targets.update({n: client.Target(s.port, CHAT, body, CLIENT_KEY) for n, s in servers.items()})
        times = client.interleaved(targets, args.requests, warmup=300)
        p50 = {n: 1000 * client.percentile(t, 50) for n, t in times.items()}
        p99 = {n: 1000 * client.percentile(t, 99) for n, t in times.items()}
        print(f"sequential ({args.requests} each, interleaved): p50 / p99 ms")
        for n in times:
            added = "" if n == "direct" else f"   added p50 {p50[n] - p50['direct']:.3f}"
            print(f"  {n:7} {p50[n]:.3f} / {p99[n]:.3f}{added}")
        stream_body = payloads.request_body("bench/stream", True)
        ttfb: dict[str, list[float]] = {n: [] for n in servers}
        direct_ttfb: list[float] = []
        path = f"{CHAT}?chunks={STREAM_CHUNKS}&delay_ms=1"
        direct = client.Target(fake_port, path, payloads.request_body("x", True))
        streamers = {n: client.Target(s.port, CHAT, stream_body, CLIENT_KEY) for n, s in servers.items()}
        for i in range(25):
            got = direct.stream_once()
            if i >= 5:
                direct_ttfb.append(got.first_byte or 0.0)
            for n, t in streamers.items():
                got = t.stream_once()
                if i >= 5:
                    ttfb[n].append(got.first_byte or 0.0)
        d = 1000 * median(direct_ttfb)
        print(
            "stream TTFB p50 ms (added over direct "
            + f"{d:.3f}): "
            + ", ".join(f"{n} {1000 * median(v) - d:.3f}" for n, v in ttfb.items())
        )
        for conns in (16, 64):
            rows: dict[str, list[tuple[float, float, float, float]]] = {n: [] for n in servers}
            for _ in range(args.rounds):
                for n, s in servers.items():
                    before = s.cpu_seconds()
                    r = load.run_wrk(
                        f"http://127.0.0.1:{s.port}{CHAT}",
                        body,
                        work,
                        connections=conns,
                        seconds=args.seconds,
                        key=CLIENT_KEY,
                    )
                    cpu = (s.cpu_seconds() - before) * 1000.0 / max(r.requests, 1)
                    rows[n].append((r.rps, r.p50_ms, r.p99_ms, cpu))
            print(f"c{conns} (median of {args.rounds}): req/s, p50 ms, p99 ms, CPU ms/request")
            for n, runs in rows.items():
                cols = [median(r[i] for r in runs) for i in range(4)]
                print(f"  {n}  {cols[0]:8.0f} {cols[1]:8.2f} {cols[2]:8.2f} {cols[3]:8.3f}")
    finally:
        for s in servers.values():
            s.stop()
        procs.stop(nginx)
        procs.stop(fake)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
