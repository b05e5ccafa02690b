"""Fake Cloudflare Workers AI upstream: native `/ai/run/{model}`, the AI Gateway's `…/workers-ai/{model}`
and the account's OpenAI-compatible `/ai/v1/chat/completions`, with their payload builders.

Shapes follow shared/provider-formats/05-cloudflare-workers-ai.md. The builders are plain functions so
unit tests parse the very bytes the server sends::

    with FakeCloudflare(gateway_token="gw-secret") as fake:
        fake.push_stream(["Hel", "lo"], chunk_delay=0.2)
        fake.push_error("daily_limit")
        ...  # point the proxy at fake.run_url or fake.gateway_url
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any

from . import openai as openai_fake
from .server import Behavior, FakeServer, Recorded, Route, sse

__all__ = [
    "ACCOUNT_ID",
    "API_TOKEN",
    "ERRORS",
    "MODEL",
    "FakeCloudflare",
    "chat_answer",
    "envelope",
    "error_body",
    "gateway_error_body",
    "openai_stream_events",
    "stream_events",
    "tool_answer",
]

ACCOUNT_ID = "023e105f4ecef8ad9ca31a8372d0c353"
API_TOKEN = "cf-fake-upstream-token"
GATEWAY_ID = "default"
MODEL = "@cf/meta/llama-3.1-8b-instruct"
RUN_PATH = re.compile(r"/client/v4/accounts/(?P<account>[^/]+)/ai/run/(?P<model>@.+)")
GATEWAY_PATH = re.compile(r"/v1/(?P<account>[^/]+)/(?P<gateway>[^/]+)/workers-ai/(?P<model>@.+)")
COMPAT_PATH = re.compile(r"/client/v4/accounts/(?P<account>[^/]+)/ai/v1/chat/completions")
PADDING = "abcdefghijklmnopqrstuvwxyz0123456789abcdefghij"
CLOUDFLARE_IS = "Cloudflare is a global network that provides security, performance and reliability services."
# kind -> (status, code, message) as documented
ERRORS: dict[str, tuple[int, int, str]] = {
    "auth": (401, 10000, "Authentication error"),
    "forbidden": (403, 10000, "Authentication error"),
    "daily_limit": (
        429,
        4006,
        "you have used up your daily free allocation of 10,000 neurons, please upgrade to Cloudflare's "
        "Workers Paid plan if you would like to continue usage.",
    ),
    "account_limited": (
        429,
        3036,
        "Account limited: you have used up your daily free allocation of 10,000 neurons.",
    ),
    "capacity": (429, 3040, "Capacity temporarily exceeded, please try again."),
    "model_rate_limit": (429, 3021, "Too many requests"),
    "bad_input": (
        400,
        5006,
        "Error: oneOf at '/' not met, 0 matches: required properties at '/' are 'prompt'",
    ),
    "no_such_model": (400, 5007, "No such model @cf/foo/bar or task"),
    "internal": (500, 8005, "Internal server error"),
    "capacity_500": (500, 3040, "Internal server error"),
}

_rays = itertools.count(1)


def _headers() -> dict[str, str]:
    n = next(_rays)
    return {"cf-ray": f"8f3a1c{n:010x}-AMS", "cf-ai-req-id": f"0b7c9a1e-0000-4000-8000-{n:012d}"}


def envelope(result: Any) -> dict[str, Any]:
    return {"result": result, "success": True, "errors": [], "messages": []}


def _usage(prompt: int, completion: int, **extra: Any) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        **extra,
    }


def chat_answer(
    text: str = CLOUDFLARE_IS,
    usage: tuple[int, int] = (30, 45),
) -> dict[str, Any]:
    return envelope({"response": text, "tool_calls": [], "usage": _usage(*usage)})


def tool_answer(
    calls: Sequence[tuple[str, dict[str, Any]]] = (("get_weather", {"location": "Paris"}),),
) -> dict[str, Any]:
    """A native function-calling answer: `{name, arguments: {…}}` calls, no text."""
    result = {
        "response": None,
        "tool_calls": [{"name": name, "arguments": arguments} for name, arguments in calls],
        "usage": _usage(120, 18),
    }
    return envelope(result)


def stream_events(
    pieces: Sequence[str] = ("Hello", "!", " How", " can", " I", " help", "?"),
    usage: tuple[int, int] = (755, 7),
) -> list[bytes]:
    """The documented native stream: padded `response` events, an empty one, the usage one, [DONE]."""
    events = [sse({"response": p, "p": PADDING[: 8 + 7 * i % 39]}) for i, p in enumerate(pieces)]
    events.append(sse({"response": ""}))
    events.append(sse({"response": "", "usage": _usage(*usage)}))
    return [*events, sse("[DONE]")]


def openai_stream_events(
    pieces: Sequence[str] = ("Hi",), model: str = "@cf/google/gemma-3-12b-it"
) -> list[bytes]:
    """What newer models stream on the same native endpoint: OpenAI chunks with per-chunk incremental
    usage and padding, then the cumulative `response` usage event and [DONE]."""
    base = {"created": 1791402526, "id": "f962191d3d2f47418286b60056319eb5", "model": model}
    base["object"] = "chat.completion.chunk"
    events = []
    for i, piece in enumerate(pieces):
        delta = {"content": piece, "reasoning_content": None}
        if i == 0:
            delta["role"] = "assistant"
        choice = {"delta": delta, "finish_reason": None, "index": 0, "logprobs": None}
        usage = _usage(147 if i == 0 else 0, 1)
        events.append(sse({"choices": [choice], **base, "p": PADDING[: 9 + i], "usage": usage}))
    last = {"delta": {"content": "", "reasoning_content": None}, "finish_reason": "stop", "index": 0}
    events.append(
        sse({"choices": [{**last, "logprobs": None}], **base, "p": "sxm6dki9", "usage": _usage(0, 1)})
    )
    final = _usage(147, len(pieces) + 1, prompt_tokens_details={"cached_tokens": 0}, neurons=0.2)
    events.append(sse({"response": "", "usage": final}))
    return [*events, sse("[DONE]")]


def error_body(code: int, message: str) -> dict[str, Any]:
    return {"result": None, "success": False, "errors": [{"code": code, "message": message}], "messages": []}


def gateway_error_body(code: int = 2009, message: str = "Unauthorized") -> dict[str, Any]:
    """What the AI Gateway itself answers (note `error`, not `errors`)."""
    return {"success": False, "result": [], "messages": [], "error": [{"code": code, "message": message}]}


class FakeCloudflare(FakeServer):
    """Workers AI on 127.0.0.1. Routes: `run` (`/client/v4/accounts/{id}/ai/run/@…`), `gateway`
    (`/v1/{id}/{gateway}/workers-ai/@…`) and `compat` (`/client/v4/accounts/{id}/ai/v1/chat/completions`).

    Every route wants `Authorization: Bearer <api_token>` (401 envelope, code 10000, otherwise); with
    `gateway_token` set the gateway route also wants `cf-aig-authorization: Bearer <gateway_token>`.
    By default `run`/`gateway` answer the documented text answer, or its stream when asked.
    """

    def __init__(self, api_token: str = API_TOKEN, gateway_token: str | None = None) -> None:
        super().__init__()
        self.api_token = api_token
        self.gateway_token = gateway_token
        self.run_url = f"{self.url}/client/v4/accounts/{ACCOUNT_ID}/ai/run"
        self.gateway_url = f"{self.url}/v1/{ACCOUNT_ID}/{GATEWAY_ID}/workers-ai"
        self.compat_url = f"{self.url}/client/v4/accounts/{ACCOUNT_ID}/ai/v1/chat/completions"
        self.add_route("run", "POST", RUN_PATH, self._run)
        self.add_route("gateway", "POST", GATEWAY_PATH, self._run)
        self.add_route("compat", "POST", COMPAT_PATH, self._compat)

    def before(self, req: Recorded, route: Route) -> Behavior | None:
        gateway_auth = f"Bearer {self.gateway_token}"
        if (
            route.name == "gateway"
            and self.gateway_token
            and req.headers.get("cf-aig-authorization") != gateway_auth
        ):
            return Behavior(status=401, json=gateway_error_body())
        if req.headers.get("Authorization") != f"Bearer {self.api_token}":
            return Behavior(status=401, json=error_body(10000, "Authentication error"))
        return None

    def _run(self, req: Recorded) -> Behavior:
        if (req.json or {}).get("stream"):
            return self.stream_behavior(stream_events())
        return Behavior(json=chat_answer(), headers=_headers())

    @staticmethod
    def _compat(req: Recorded) -> Behavior:
        body = req.json or {}
        model = body.get("model", MODEL)
        if body.get("stream"):
            return Behavior(events=openai_fake.stream_events(model, "Hello there!", include_usage=True))
        return Behavior(json=openai_fake.chat_completion(model, "Cloudflare is ..."), headers=_headers())

    # -- scripting ------------------------------------------------------------------------------

    @staticmethod
    def stream_behavior(events: list[bytes], **kwargs: Any) -> Behavior:
        return Behavior(events=events, headers={"Content-Type": "text/event-stream", **_headers()}, **kwargs)

    def push_answer(self, answer: dict[str, Any] | None = None, route: str = "run", **kwargs: Any) -> None:
        self.push(route, Behavior(json=answer or chat_answer(), headers=_headers(), **kwargs))

    def push_stream(
        self, events: Sequence[bytes] | Sequence[str] = (), route: str = "run", **kwargs: Any
    ) -> None:
        """Stream `events` (raw events, or text pieces for `stream_events`); kwargs go to Behavior."""
        raw = list(events) if events and isinstance(events[0], bytes) else stream_events(events or ("Hi",))
        self.push(route, self.stream_behavior(raw, **kwargs))

    def push_error(self, kind: str, route: str = "run", headers: dict[str, str] | None = None) -> None:
        status, code, message = ERRORS[kind]
        self.push(route, Behavior(status=status, json=error_body(code, message), headers=headers or {}))
