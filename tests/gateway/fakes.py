"""In-process fakes for the gateway's own logic: a scripted provider and chunk builders.

The wire formats are the adapters' business (tested against fake upstreams); here a provider is
a script of what it returns or raises, so that the gateway's retries, fallbacks, events and error
boundary can be driven step by step without a clock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from app.config import HttpConfig, ModelConfig
from app.providers import ChunkStream, Completion, Provider


def chunk(content: str | None = None, *, role: bool = False, finish: str | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
    if content is not None:
        delta["content"] = content
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "up",
        "choices": [choice],
    }


def usage_chunk(total: int = 12) -> dict[str, Any]:
    usage = {"prompt_tokens": 5, "completion_tokens": total - 5, "total_tokens": total}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "up",
        "choices": [],
        "usage": usage,
    }


def answer(text: str = "Hello!") -> dict[str, Any]:
    message = {"role": "assistant", "content": text}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "up",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


WORDS = [chunk(role=True), chunk("Hel"), chunk("lo"), chunk(finish="stop"), usage_chunk()]


@dataclass
class Step:
    """One scripted call: raise `error` at once, else answer `body` (plain) or stream `chunks`, where an
    exception among them is raised at that point and a threading.Event is waited for (the upstream
    is silent until the test sets it), a threading.Barrier too (until that many streams are there; a
    broken one is raised). `gate`: the call waits for it before answering."""

    chunks: list[Any] = field(default_factory=lambda: list(WORDS))
    body: Any = None
    error: BaseException | None = None
    gate: threading.Event | None = None


class ScriptedProvider(Provider):
    """A provider that plays its steps in order (the last one repeats) and records what happened."""

    def __init__(self, model: ModelConfig, *steps: Step) -> None:
        self.model = model
        self.http = HttpConfig()
        self.steps = list(steps) or [Step()]
        self.calls = 0
        self.closed = threading.Event()

    def _next(self) -> Step:
        step = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        if step.gate is not None:
            step.gate.wait(30)
        if step.error is not None:
            raise step.error
        return step

    def complete(self, body: dict[str, Any]) -> Completion:
        step = self._next()
        return Completion(step.body if step.body is not None else answer(), {})

    def stream(self, body: dict[str, Any]) -> ChunkStream:
        step = self._next()

        def chunks() -> Iterator[dict[str, Any]]:
            for item in step.chunks:
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, threading.Event):
                    item.wait(30)
                    continue
                if isinstance(item, threading.Barrier):
                    item.wait()
                    continue
                yield dict(item)

        return ChunkStream(chunks(), {}, self.closed.set)
