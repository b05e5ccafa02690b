"""What the benchmark sends and what the fake upstreams answer: small, realistic OpenAI bodies."""

from __future__ import annotations

import orjson

COMPLETION = {
    "id": "chatcmpl-bench0123456789",
    "object": "chat.completion",
    "created": 1764000000,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hello! I am a benchmark answer of a realistic length: a sentence or two of text, "
                "as a short chat completion would carry.",
                "refusal": None,
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 24, "completion_tokens": 31, "total_tokens": 55},
    "system_fingerprint": "fp_bench",
}
COMPLETION_BYTES = orjson.dumps(COMPLETION)


def request_body(model: str, stream: bool = False) -> bytes:
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello in one sentence, please, and nothing else."},
        ],
        "temperature": 0.2,
        "max_tokens": 64,
    }
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


def _chunk(delta: dict, finish: str | None = None) -> bytes:
    payload = {
        "id": "chatcmpl-bench0123456789",
        "object": "chat.completion.chunk",
        "created": 1764000000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_events(chunks: int) -> list[bytes]:
    """A stream of `chunks` content chunks (the first also carries the role), a finish chunk, a usage
    chunk and [DONE]: one bytes object per SSE event."""
    events = [_chunk({"role": "assistant", "content": "tok0 "})]
    events += [_chunk({"content": f"tok{i} "}) for i in range(1, chunks)]
    events.append(_chunk({}, "stop"))
    usage = {
        "id": "chatcmpl-bench0123456789",
        "object": "chat.completion.chunk",
        "created": 1764000000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [],
        "usage": {"prompt_tokens": 24, "completion_tokens": chunks, "total_tokens": 24 + chunks},
    }
    events.append(b"data: " + orjson.dumps(usage) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events
