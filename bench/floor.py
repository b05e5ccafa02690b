"""The floor of the stack, for scale: two tiny Flask apps run under the same gunicorn settings
(gunicorn.conf.py) as the proxy.

- `static`: reads the request body and returns a fixed JSON answer (gunicorn gthread + Flask);
- `upstream`: parses the body, POSTs it with a urllib3 pool to the same nginx fake as the proxy, and
  returns the parsed answer re-serialised: what any proxy on this stack must do, without auth,
  routing, quota, metrics, logging or error mapping.

    BENCH_UPSTREAM_PORT=... gunicorn -c gunicorn.conf.py bench.floor:upstream
"""

from __future__ import annotations

import os

import orjson
import urllib3
from flask import Flask, Response, request

from bench.payloads import COMPLETION_BYTES

CHAT = "/v1/chat/completions"
static = Flask("floor_static")
upstream = Flask("floor_upstream")
_pool = urllib3.HTTPConnectionPool(
    "127.0.0.1", int(os.environ.get("BENCH_UPSTREAM_PORT", "9")), maxsize=64, retries=False
)


@static.post(CHAT)
def answer() -> Response:
    request.get_data(cache=False)
    return Response(COMPLETION_BYTES, mimetype="application/json")


@upstream.post(CHAT)
def relay() -> Response:
    body = orjson.loads(request.get_data(cache=False))
    got = _pool.urlopen("POST", CHAT, body=orjson.dumps(body), headers={"Content-Type": "application/json"})
    return Response(orjson.dumps(orjson.loads(got.data)), mimetype="application/json")
