"""Fake Cohere upstream: the v2 Chat API and the Compatibility API, and their payload builders.

Shapes follow shared/provider-formats/06-cohere.md. The builders are plain functions so unit tests
parse the very bytes the server sends::

    with FakeCohere() as fake:
        fake.push_stream(["Hel", "lo"], chunk_delay=0.2)
        fake.push_error("trial_rate_limit")
        ...  # point the proxy at fake.chat_url (or fake.compat_url)
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from typing import Any

from . import openai as openai_fake
from .server import Behavior, FakeServer, Recorded, Route, sse

__all__ = [
    "API_KEY",
    "ERRORS",
    "TRIAL_HEADERS",
    "FakeCohere",
    "chat_answer",
    "error_body",
    "stream_events",
    "tool_answer",
    "tool_stream_events",
    "usage",
]

API_KEY = "co-fake-upstream-key"
CHAT_PATH = "/v2/chat"
COMPAT_PATH = "/compatibility/v1/chat/completions"
# What a trial key gets on every successful answer (absent on 429s and on production keys).
TRIAL_HEADERS = {
    "x-endpoint-monthly-call-limit": "1000",
    "x-trial-endpoint-call-limit": "20",
    "x-trial-endpoint-call-remaining": "19",
    "x-debug-trace-id": "b0aae57a1bc79ddfcba999e6897f9d06",
    "access-control-expose-headers": "X-Debug-Trace-ID",
    "server": "envoy",
}
TRIAL_MESSAGE = (
    "You are using a Trial key, which is limited to 20 API calls / minute. You can continue to use the "
    "Trial key for free or upgrade to a Production key with higher rate limits at "
    "'https://dashboard.cohere.com/api-keys'. Contact us on 'https://discord.gg/XW44jPfYJu' or email us "
    "at support@cohere.com with any questions"
)
# kind -> (status, message) as documented
ERRORS: dict[str, tuple[int, str]] = {
    "invalid_api_token": (401, "invalid api token"),
    "trial_rate_limit": (429, TRIAL_MESSAGE),
    "trial_monthly_limit": (429, TRIAL_MESSAGE.replace("20 API calls / minute", "1000 API calls / month")),
    "rate_limit": (429, "You are past the per minute request limit, please wait and try again later."),
    "bad_request": (
        400,
        "invalid request: this model is not supported with '/v1/chat', please use '/v2/chat' instead.",
    ),
    "invalid_tool_generation": (422, "your request resulted in an invalid tool generation"),
    "server_error": (
        500,
        "internal server error, this has been reported to our developers. id 7f3a0c2b9d1e",
    ),
    "unavailable": (503, "service unavailable"),
    "gateway_timeout": (504, "gateway timeout"),
}

_ids = itertools.count(1)


def _id() -> str:
    return str(uuid.UUID(int=next(_ids)))


def usage(
    billed: tuple[int, int] = (5, 9), tokens: tuple[int, int] = (71, 9), cached: int = 0
) -> dict[str, Any]:
    """`usage`: billed units and raw tokens as (input, output)."""
    return {
        "billed_units": {"input_tokens": billed[0], "output_tokens": billed[1]},
        "tokens": {"input_tokens": tokens[0], "output_tokens": tokens[1]},
        "cached_tokens": cached,
    }


def chat_answer(
    text: str = "Hello! How can I help you today?",
    finish_reason: str = "COMPLETE",
    answer_usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": _id(),
        "message": {"role": "assistant", "content": [{"type": "text", "text": text}]},
        "finish_reason": finish_reason,
        "usage": answer_usage or usage(),
    }


def tool_answer(
    calls: Sequence[tuple[str, str]] = (("get_weather", '{"location":"Paris"}'),),
    tool_plan: str = "I will look up the weather in Paris.",
) -> dict[str, Any]:
    """A TOOL_CALL answer; `calls` are (name, JSON-string arguments)."""
    return {
        "id": _id(),
        "message": {
            "role": "assistant",
            "tool_plan": tool_plan,
            "tool_calls": [
                {
                    "id": f"{name}_1byjy32y4hv{i}",
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
                for i, (name, arguments) in enumerate(calls)
            ],
        },
        "finish_reason": "TOOL_CALL",
        "usage": usage((37, 28), (912, 61)),
    }


def _start() -> bytes:
    message = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}
    return sse({"id": _id(), "type": "message-start", "delta": {"message": message}}, "message-start")


def _end(finish_reason: str, end_usage: dict[str, Any]) -> list[bytes]:
    delta = {"finish_reason": finish_reason, "usage": end_usage}
    return [sse({"type": "message-end", "delta": delta}, "message-end"), sse("[DONE]")]


def stream_events(
    pieces: Sequence[str] = ("Hello", " there!"),
    finish_reason: str = "COMPLETE",
    end_usage: dict[str, Any] | None = None,
) -> list[bytes]:
    """The documented text stream: message-start, content-start/deltas/end, message-end, [DONE]."""
    events = [
        _start(),
        sse(
            {
                "type": "content-start",
                "index": 0,
                "delta": {"message": {"content": {"type": "text", "text": ""}}},
            },
            "content-start",
        ),
    ]
    for piece in pieces:
        delta = {"message": {"content": {"text": piece}}}
        events.append(sse({"type": "content-delta", "index": 0, "delta": delta}, "content-delta"))
    events.append(sse({"type": "content-end", "index": 0}, "content-end"))
    return events + _end(finish_reason, end_usage or usage((5, 3), (70, 3)))


def tool_stream_events(
    calls: Sequence[tuple[str, Sequence[str]]] = (("get_weather", ('{\n    "', 'location": "Paris"\n}')),),
    tool_plan: str = "I will check the weather.",
) -> list[bytes]:
    """The documented tool-call stream; `calls` are (name, argument fragments)."""
    events = [_start()]
    plan = {"message": {"tool_plan": tool_plan}}
    events.append(sse({"type": "tool-plan-delta", "delta": plan}, "tool-plan-delta"))
    for index, (name, fragments) in enumerate(calls):
        call = {
            "id": f"{name}_3v76fs3zjrg{index}",
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        start = {"type": "tool-call-start", "index": index, "delta": {"message": {"tool_calls": call}}}
        events.append(sse(start, "tool-call-start"))
        for fragment in fragments:
            delta = {"message": {"tool_calls": {"function": {"arguments": fragment}}}}
            events.append(sse({"type": "tool-call-delta", "index": index, "delta": delta}, "tool-call-delta"))
        events.append(sse({"type": "tool-call-end", "index": index}, "tool-call-end"))
    return events + _end("TOOL_CALL", usage((50, 26), (793, 61), cached=176))


def error_body(message: str) -> dict[str, Any]:
    return {"id": _id(), "message": message}


class FakeCohere(FakeServer):
    """Cohere on 127.0.0.1: `POST /v2/chat` and `POST /compatibility/v1/chat/completions`.

    Both check `Authorization: Bearer <api_key>`. By default /v2/chat answers the documented text
    answer (or stream, when the request says `stream: true`) with the trial-key headers, and the
    Compatibility API answers OpenAI's shapes.
    """

    def __init__(self, api_key: str = API_KEY) -> None:
        super().__init__()
        self.api_key = api_key
        self.chat_url = self.url + CHAT_PATH
        self.compat_url = self.url + COMPAT_PATH
        self.add_route("chat", "POST", CHAT_PATH, self._chat)
        self.add_route("compat", "POST", COMPAT_PATH, self._compat)

    def before(self, req: Recorded, route: Route) -> Behavior | None:
        if req.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        if route.name == "compat":
            return openai_fake.error_response("invalid_api_key")
        return Behavior(status=401, json=error_body("invalid api token"))

    @staticmethod
    def _chat(req: Recorded) -> Behavior:
        if (req.json or {}).get("stream"):
            return Behavior(events=stream_events(), headers=dict(TRIAL_HEADERS))
        return Behavior(json=chat_answer(), headers=dict(TRIAL_HEADERS))

    @staticmethod
    def _compat(req: Recorded) -> Behavior:
        body = req.json or {}
        model = body.get("model", "command-a-03-2025")
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = openai_fake.stream_events(model, "Hello there!", include_usage=include_usage)
            return Behavior(events=events)
        return Behavior(json=openai_fake.chat_completion(model, "Recursive loops, unraveling."))

    # -- scripting ------------------------------------------------------------------------------

    def push_answer(self, answer: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.push("chat", Behavior(json=answer or chat_answer(), headers=dict(TRIAL_HEADERS), **kwargs))

    def push_stream(self, events: Sequence[bytes] | Sequence[str] = (), **kwargs: Any) -> None:
        """Stream `events` (raw events, or text pieces for `stream_events`); kwargs go to Behavior."""
        raw = list(events) if events and isinstance(events[0], bytes) else stream_events(events or ("Hi",))
        self.push("chat", Behavior(events=raw, headers=dict(TRIAL_HEADERS), **kwargs))

    def push_error(self, kind: str, headers: dict[str, str] | None = None) -> None:
        status, message = ERRORS[kind]
        self.push("chat", Behavior(status=status, json=error_body(message), headers=headers or {}))
