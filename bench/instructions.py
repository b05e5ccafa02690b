"""Instructions per proxied request, counted by valgrind: a figure load on a shared machine does not move.

    .venv/bin/python -m bench.instructions /tmp/base [NEW_DIR, default: this checkout] [--requests 100]

Each checkout serves the bench's `bench/fast` request in one process, through its whole WSGI app (the
bench config and client key, nginx as the upstream, the access log at INFO), under `valgrind
--tool=callgrind`: once `--base` requests and once `--base` + `--requests`, each after a warm-up; the
difference over `--requests` is one request's instructions (start-up and warm-up cancel out). Slow:
about a minute per checkout.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WARMUP = 50


def serve(tree: str, requests: int) -> None:
    """In the child, under valgrind: `requests` answered requests after the warm-up."""
    os.chdir(tree)
    sys.path.insert(0, tree)
    from wsgi import app  # the checkout's own app, configured by the environment

    body = Path(os.environ["BENCH_BODY"]).read_bytes()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/v1/chat/completions",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": f"Bearer {os.environ['AI_PROXY_API_KEYS']}",
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
    }
    statuses: list[str] = []

    def start_response(status: str, headers: object, exc_info: object = None) -> None:
        statuses.append(status)

    for _ in range(WARMUP + requests):
        answer = app({**environ, "wsgi.input": io.BytesIO(body)}, start_response)
        for _ in answer:
            pass
        answer.close()  # the access line and metrics are written here
        if not statuses.pop().startswith("200"):
            raise SystemExit("the proxy did not answer 200")


def main(argv: list[str] | None = None) -> int:
    from bench import payloads, procs
    from bench.__main__ import CLIENT_KEY, start_upstreams

    parser = argparse.ArgumentParser(prog="python -m bench.instructions")
    parser.add_argument("a", type=Path, help="checkout A (the baseline)")
    parser.add_argument("b", type=Path, nargs="?", default=procs.REPO, help="checkout B (default: this one)")
    parser.add_argument("--requests", type=int, default=100, help="requests counted per checkout")
    parser.add_argument("--base", type=int, default=20, help="requests of the run subtracted")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind not found: apt-get install valgrind")
    work = Path(tempfile.mkdtemp(prefix="ai-proxy-instructions-"))
    nginx, fake, _, _, config = start_upstreams(work)
    (work / "body.json").write_bytes(payloads.request_body("bench/fast"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_PROXY_")}
    env.update(
        AI_PROXY_CONFIG=str(config),
        AI_PROXY_API_KEYS=CLIENT_KEY,
        AI_PROXY_LOG_LEVEL="INFO",
        BENCH_BODY=str(work / "body.json"),
    )

    def counted(tree: Path, requests: int) -> int:
        child = [sys.executable, __file__, "serve", str(tree), str(requests)]
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *child],
            env=env,
            capture_output=True,
            text=True,
        )
        found = re.search(r"Collected : (\d+)", run.stderr)
        if run.returncode or found is None:
            raise SystemExit(f"{tree}: the run failed:\n{run.stderr[-2000:]}")
        return int(found.group(1))

    try:
        for name, tree in (("A", args.a), ("B", args.b)):
            per_request = (
                counted(tree, args.base + args.requests) - counted(tree, args.base)
            ) / args.requests
            print(f"{name} {tree}: {per_request / 1000:,.1f} k instructions per request", flush=True)
    finally:
        procs.stop(nginx)
        procs.stop(fake)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(main())
