"""Internal stream events for front tests, built from the fake OpenAI upstream's exact chunks."""

from __future__ import annotations

from typing import Any

import orjson

from app.sse import iter_sse
from tests.fakes.openai import stream_events


def upstream_chunks(**kwargs: Any) -> list[dict[str, Any]]:
    """The chunks a provider adapter yields for `stream_events(**kwargs)` (usage chunk included)."""
    kwargs.setdefault("include_usage", True)
    events = iter_sse(stream_events(**kwargs))
    return [orjson.loads(e.data) for e in events if e.data != b"[DONE]"]


def reasoning_chunk(text: str) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"reasoning_content": text}}],
    }


def sse_events(raw: bytes) -> list[tuple[str, Any]]:
    """(event name, parsed data) of a front's stream; comments dropped."""
    return [(e.event, orjson.loads(e.data)) for e in iter_sse([raw]) if e.data != b"[DONE]"]
