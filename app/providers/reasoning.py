"""`<think>…</think>` at the start of an answer goes to `reasoning_content` (split) or away (strip)."""

from __future__ import annotations

from typing import Any

OPEN, CLOSE = "<think>", "</think>"


def split_text(text: str) -> tuple[str | None, str]:
    """(reasoning, content) of a whole answer; reasoning is None when it has no leading think block."""
    stripped = text.lstrip()
    if not stripped.startswith(OPEN):
        return None, text
    end = stripped.find(CLOSE)
    if end < 0:
        return stripped[len(OPEN) :].strip(), ""
    return stripped[len(OPEN) : end].strip(), stripped[end + len(CLOSE) :].lstrip()


def split_reasoning(answer: dict[str, Any], mode: str) -> None:
    """Apply the model's reasoning mode to a chat.completion in place."""
    for choice in answer.get("choices") or ():
        message = choice.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            continue
        reasoning, content = split_text(message["content"])
        if reasoning is None:
            continue
        message["content"] = content
        if mode == "split":
            message["reasoning_content"] = reasoning


class ReasoningStream:
    """The same for a stream: a small state machine per choice, holding back partial tags."""

    __slots__ = ("_choices", "_mode")

    def __init__(self, mode: str) -> None:
        self._mode = mode
        self._choices: dict[int, _ChoiceState] = {}

    def process(self, chunk: dict[str, Any]) -> None:
        """Rewrite one chunk's deltas in place."""
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            state = self._choices.get(choice.get("index", 0))
            if state is None:
                state = self._choices[choice.get("index", 0)] = _ChoiceState()
            text = delta.get("content")
            if isinstance(text, str) and text and (not state.done or state.trim):
                reasoning, content = state.feed(text)
                delta["content"] = content
                if reasoning and self._mode == "split":
                    delta["reasoning_content"] = reasoning
            if choice.get("finish_reason") and state.pending:
                reasoning, content = state.flush()
                delta["content"] = (delta.get("content") or "") + content
                if reasoning and self._mode == "split":
                    delta["reasoning_content"] = (delta.get("reasoning_content") or "") + reasoning


class _ChoiceState:
    __slots__ = ("done", "inside", "pending", "trim")

    def __init__(self) -> None:
        self.pending = ""  # text held back until we know which side of a tag it belongs to
        self.inside = False
        self.done = False
        self.trim = False  # after </think>: drop whitespace until the answer starts

    def feed(self, text: str) -> tuple[str, str]:
        """(reasoning, content) that can be released after seeing `text`."""
        if self.trim:
            text = text.lstrip()
            self.trim = not text
            return "", text
        buffer = self.pending + text
        self.pending = ""
        if not self.inside:
            head = buffer.lstrip()
            if not head or (len(head) < len(OPEN) and OPEN.startswith(head)):
                self.pending = buffer
                return "", ""
            if not head.startswith(OPEN):
                self.done = True
                return "", buffer
            self.inside = True
            buffer = head[len(OPEN) :].lstrip()
        end = buffer.find(CLOSE)
        if end >= 0:
            self.inside, self.done = False, True
            rest = buffer[end + len(CLOSE) :].lstrip()
            self.trim = not rest
            return buffer[:end], rest
        keep = _partial_suffix(buffer, CLOSE)
        if keep:
            self.pending = buffer[-keep:]
            buffer = buffer[:-keep]
        return buffer, ""

    def flush(self) -> tuple[str, str]:
        pending, self.pending = self.pending, ""
        self.done = True
        return (pending, "") if self.inside else ("", pending)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that could begin `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0
