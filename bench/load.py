"""Load under concurrency with wrk (a compiled load generator: a Python one would be the bottleneck on
two cores), POSTing the benchmark's chat body through a Lua script."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
{auth}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


@dataclass
class LoadResult:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def run_wrk(
    url: str,
    body: bytes,
    workdir: Path,
    *,
    connections: int,
    seconds: float,
    threads: int = 2,
    key: str = "",
) -> LoadResult:
    """`connections` keep-alive connections for `seconds` (whole seconds: wrk's resolution)."""
    auth = f'wrk.headers["Authorization"] = "Bearer {key}"' if key else ""
    script = workdir / f"post-{connections}.lua"
    script.write_text(SCRIPT.format(body=body.decode(), auth=auth))
    threads = min(threads, connections)
    command = [
        wrk_binary() or "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith('{"requests"')), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")
    data = json.loads(line)
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return LoadResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=errors,
        p50_ms=data["p50_us"] / 1000.0,
        p90_ms=data["p90_us"] / 1000.0,
        p99_ms=data["p99_us"] / 1000.0,
        max_ms=data["max_us"] / 1000.0,
    )
