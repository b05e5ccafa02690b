"""The internal answer as content blocks, for the front APIs that speak in blocks.

Anthropic Messages and OpenAI Responses both describe an answer as an ordered list of blocks
(reasoning, text, tool calls), each opened, filled and closed in turn. This module folds the
gateway's answer, a whole `chat.completion` or the stream of `app.events`, into those blocks once,
so each front only renders them in its own words. The few request fields both fronts read alike
(token limit, sampling, ids) are here too.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.errors import InvalidRequest
from app.events import Heartbeat, StreamEvent, StreamFailed
from app.gateway import request_length

REASONING, TEXT, TOOL_CALL = "reasoning", "text", "tool_call"
Redact = Callable[[str], str]  # the app's Redactor: no key or token in an error message a front writes


@dataclass(slots=True)
class Block:
    kind: str  # REASONING, TEXT or TOOL_CALL
    text: str = ""  # the text, the reasoning, or a tool call's arguments (JSON text)
    call_id: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class Answer:
    """A whole answer: its blocks in order, why it ended (OpenAI's finish_reason) and its usage."""

    model: str
    blocks: list[Block] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None


# Streamed answers: the blocks' lifecycle, then the whole answer.
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
    if answer.usage is not None:
        return answer.usage
    output = sum(len(b.text) for b in answer.blocks)
    return Usage(input_tokens=input_estimate, output_tokens=(output + 3) // 4)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _reasoning_of(container: dict[str, Any]) -> str:
    """Reasoning text as providers put it: `reasoning_content`, or OpenRouter's `reasoning`."""
    for key in ("reasoning_content", "reasoning"):
        value = container.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def answer_from_completion(body: dict[str, Any]) -> Answer:
    """The first choice of a `chat.completion` as blocks: reasoning, text, then tool calls."""
    answer = Answer(model=str(body.get("model") or ""), usage=usage_from(body.get("usage")))
    choices = body.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    reasoning = _reasoning_of(message)
    if reasoning:
        answer.blocks.append(Block(REASONING, reasoning))
    content = message.get("content")
    if isinstance(content, list):  # a few providers answer with parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if isinstance(content, str) and content:
        answer.blocks.append(Block(TEXT, content))
    for n, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        arguments = function.get("arguments")
        answer.blocks.append(
            Block(
                TOOL_CALL,
                arguments if isinstance(arguments, str) else "",
                call_id=str(call.get("id") or f"call_{n}"),
                name=str(function.get("name") or ""),
            )
        )
    answer.finish_reason = choice.get("finish_reason")
    return answer


class _Folder:
    """Turns chunk deltas into block events: one block is open at a time; a change of kind (or of
    tool call) closes it and opens the next."""

    def __init__(self, model: str) -> None:
        self.answer = Answer(model=model)
        self.open: Block | None = None
        self.calls: dict[int, Block] = {}  # by the upstream's tool call index
        self._ids = itertools.count()

    def chunk(self, chunk: dict[str, Any]) -> Iterator[BlockEvent]:
        if chunk.get("model"):
            self.answer.model = str(chunk["model"])
        if isinstance(chunk.get("usage"), dict):
            self.answer.usage = usage_from(chunk["usage"])
        choices = chunk.get("choices") or ()
        choice = choices[0] if choices and isinstance(choices[0], dict) else None
        if choice is None:
            return
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        reasoning = _reasoning_of(delta)
        if reasoning:
            yield from self._text(REASONING, reasoning)
        content = delta.get("content")
        if isinstance(content, str) and content:
            yield from self._text(TEXT, content)
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                yield from self._tool_call(call)
        if choice.get("finish_reason"):
            self.answer.finish_reason = choice["finish_reason"]

    def _text(self, kind: str, text: str) -> Iterator[BlockEvent]:
        if self.open is None or self.open.kind != kind:
            yield from self.close_open()
            yield from self._start(Block(kind))
        block = self.open
        assert block is not None
        block.text += text
        yield BlockDelta(len(self.answer.blocks) - 1, block, text)

    def _tool_call(self, call: dict[str, Any]) -> Iterator[BlockEvent]:
        index = call.get("index", len(self.calls))
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        arguments = function.get("arguments")
        block = self.calls.get(index)
        if block is None:
            yield from self.close_open()
            block = self.calls[index] = Block(
                TOOL_CALL,
                call_id=str(call.get("id") or f"call_{next(self._ids)}"),
                name=str(function.get("name") or ""),
            )
            yield from self._start(block)
        if isinstance(arguments, str) and arguments:
            block.text += arguments
            if block is self.open:  # a late piece of an earlier call only lands in the whole answer
                yield BlockDelta(len(self.answer.blocks) - 1, block, arguments)

    def _start(self, block: Block) -> Iterator[BlockEvent]:
        self.answer.blocks.append(block)
        self.open = block
        yield BlockOpened(len(self.answer.blocks) - 1, block)

    def close_open(self) -> Iterator[BlockEvent]:
        if self.open is not None:
            yield BlockClosed(len(self.answer.blocks) - 1, self.open)
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
