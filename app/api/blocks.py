"""The internal answer as content blocks, for the front APIs that speak in blocks.

Anthropic Messages and OpenAI Responses both describe an answer as an ordered list of blocks
(reasoning, text, tool calls), each opened, filled and closed in turn. The answer is gathered in the
providers' one accumulator (`shape.Answer`: a `chat.completion` with `Answer.from_completion`, the
stream of `app.events` here); this module turns the stream into block events once and serves the
answer (`serve`), so each front only renders blocks in its own words. The few request fields both
fronts read alike (token limit, sampling, ids) and the usage they report are here too.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from flask import Response, g

from app.api.render import json_response, served_headers, services
from app.errors import InvalidRequest
from app.events import Heartbeat, StreamEvent, StreamFailed
from app.gateway import StreamAnswer, request_length
from app.providers.shape import Answer, Block

Redact = Callable[[str], str]  # the app's Redactor: no key or token in an error message a front writes


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


# Streamed answers: the blocks' lifecycle (of the first choice, the one a front renders), then the
# whole answer.
@dataclass(frozen=True, slots=True)
class BlockOpened:
    index: int
    block: Block


@dataclass(frozen=True, slots=True)
class BlockDelta:
    index: int
    block: Block
    text: str


@dataclass(frozen=True, slots=True)
class BlockClosed:
    index: int
    block: Block


@dataclass(frozen=True, slots=True)
class Finished:
    answer: Answer


BlockEvent = BlockOpened | BlockDelta | BlockClosed | Finished | Heartbeat | StreamFailed
# A front's renderers: a whole answer (and the input estimate) as its JSON body; a stream of block
# events (with the serving model's name, the input estimate and the redactor) as its SSE bytes.
RenderWhole = Callable[[Answer, int], dict[str, Any]]
RenderStream = Callable[[Iterator[BlockEvent], str, int, Redact], Iterator[bytes]]


def serve(
    chat: dict[str, Any], ignored_tools: list[str], whole: RenderWhole, stream: RenderStream
) -> Response:
    """Route a front's chat request and answer in its words: JSON, or SSE when `chat` streams."""
    estimate = estimate_input_tokens(chat)
    state = services()
    answer = state.gateway.chat(chat, g.trace)
    if isinstance(answer, StreamAnswer):
        name = answer.model.name
        events = stream(fold_stream(answer.events, name), name, estimate, state.redactor)
        headers = served_headers(answer, stream=True, ignored_tools=ignored_tools)
        return Response(events, mimetype="text/event-stream", headers=headers)
    body = whole(Answer.from_completion(answer.body), estimate)
    return json_response(body, headers=served_headers(answer, ignored_tools=ignored_tools))


# --- request fields both fronts share --------------------------------------------------------
def copy_limits(body: dict[str, Any], limit_field: str, chat: dict[str, Any]) -> None:
    """The answer's token limit (named `limit_field` by the front) and the sampling fields."""
    limit = body.get(limit_field)
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise InvalidRequest(f"'{limit_field}' must be a positive integer", param=limit_field)
        chat["max_tokens"] = limit
    for name in ("temperature", "top_p"):
        if isinstance(body.get(name), int | float) and not isinstance(body.get(name), bool):
            chat[name] = body[name]


def new_id(prefix: str) -> str:
    """An id as the front's API writes them: `msg_…`, `resp_…`, `fc_…`."""
    return f"{prefix}_{secrets.token_hex(12)}"


# --- answers ---------------------------------------------------------------------------------
def usage_from(raw: Any) -> Usage | None:
    """OpenAI's `usage` object (prompt/completion tokens and their details) as a Usage."""
    if not isinstance(raw, dict):
        return None
    details = raw.get("completion_tokens_details")
    prompt_details = raw.get("prompt_tokens_details")
    return Usage(
        input_tokens=_count(raw.get("prompt_tokens")),
        output_tokens=_count(raw.get("completion_tokens")),
        reasoning_tokens=_count(details.get("reasoning_tokens")) if isinstance(details, dict) else 0,
        cached_tokens=_count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0,
    )


def estimate_input_tokens(chat: dict[str, Any]) -> int:
    """About four characters a token, over a chat request's messages and its tools' schemas."""
    chars = request_length(chat["messages"]) + len(orjson.dumps(chat.get("tools") or []))
    return max(1, (chars + 3) // 4)


def usage_or_estimate(answer: Answer, input_estimate: int) -> Usage:
    """The upstream's usage, or an estimate (four characters a token) when it reported none."""
    usage = usage_from(answer.usage)
    if usage is not None:
        return usage
    output = sum(len(b.text) for b in answer.choice().blocks)
    return Usage(input_tokens=input_estimate, output_tokens=(output + 3) // 4)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


class _Folder:
    """Turns chunks into block events: one block is open at a time, the last one opened; a piece that
    starts a new block (a change of kind, or another tool call) closes the open one."""

    def __init__(self, model: str) -> None:
        self.answer = Answer(model=model)
        self.blocks = self.answer.choice().blocks
        self.opened = 0  # blocks opened so far: the open one is the last of them
        self.open: Block | None = None

    def chunk(self, chunk: dict[str, Any]) -> Iterator[BlockEvent]:
        for choice, block, text in self.answer.add_chunk(chunk):
            if choice != 0:
                continue
            if self.opened < len(self.blocks) and block is self.blocks[self.opened]:
                yield from self.close_open()
                self.open = block
                self.opened += 1
                yield BlockOpened(self.opened - 1, block)
            if text and block is self.open:  # a late piece of an earlier call only lands in the whole answer
                yield BlockDelta(self.opened - 1, block, text)

    def close_open(self) -> Iterator[BlockEvent]:
        if self.open is not None:
            yield BlockClosed(self.opened - 1, self.open)
            self.open = None


def fold_stream(events: Iterable[StreamEvent], model: str) -> Iterator[BlockEvent]:
    """The gateway's stream events as block events. Heartbeats pass through; the stream ends with
    `Finished(answer)` when complete, or with the `StreamFailed` (the open block left open)."""
    folder = _Folder(model)
    try:
        for event in events:
            if isinstance(event, dict):
                yield from folder.chunk(event)
            elif isinstance(event, StreamFailed):
                yield event
                return
            else:
                yield event
        yield from folder.close_open()
        yield Finished(folder.answer)
    finally:
        close(events)


def close(events: Iterable[Any]) -> None:
    """Close a stream of events now, not when it is garbage: closing the gateway's frees its upstream."""
    closer = getattr(events, "close", None)
    if closer is not None:
        closer()
