"""Fake OpenAI-compatible upstream (OpenAI, Groq, OpenRouter flavors) and its payload builders.

Payloads follow shared/provider-formats/01-openai.md, 02-groq.md and 03-openrouter.md. The builders
(`chat_completion`, `stream_events`, `error_body`, `error_response`, `images_body`, ...) are plain
functions so unit tests can reuse the exact bytes without a server::

    with FakeOpenAI(api_key="sk-up", flavor="groq") as fake:
        fake.push_chat(content=["Hel", "lo"], chunk_delay=0.2)
        fake.push_error("rate_limit", retry_after=3)
        ...  # point the proxy at fake.chat_url
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .server import DEFAULT_STALL_SECONDS, Behavior, FakeServer, Recorded, Route, sse, sse_comment

__all__ = [
    "DEFAULT_MODEL",
    "TINY_PNG",
    "ChatReply",
    "ErrorKind",
    "FakeOpenAI",
    "Flavor",
    "KeyPoolFake",
    "chat_completion",
    "error_body",
    "error_response",
    "go_duration",
    "images_body",
    "ratelimit_headers",
    "stream_events",
    "tiny_png",
    "tool_call",
    "usage_body",
]

Flavor = Literal["openai", "groq", "openrouter"]
ErrorKind = Literal[
    "invalid_request",
    "context_length_exceeded",
    "content_policy",
    "missing_api_key",
    "invalid_api_key",
    "insufficient_credits",
    "forbidden",
    "model_not_found",
    "request_too_large",
    "rate_limit",
    "daily_limit",
    "insufficient_quota",
    "upstream_rate_limit",
    "upstream_quota",
    "server_error",
    "bad_gateway",
    "overloaded",
]

DEFAULT_MODEL = "gpt-4o-mini"
FIXED_CREATED = 1755137921
FINGERPRINT = "fp_fake34a54111"
OPENROUTER_USER = "user_2zAklG7HDLZgAMY7y5rgO0dYwwN"
CHAT_PATHS: dict[Flavor, str] = {
    "openai": "/v1/chat/completions",
    "groq": "/openai/v1/chat/completions",
    "openrouter": "/api/v1/chat/completions",
}
ERROR_STATUS: dict[str, int] = {
    "invalid_request": 400,
    "context_length_exceeded": 400,
    "content_policy": 400,
    "missing_api_key": 401,
    "invalid_api_key": 401,
    "insufficient_credits": 402,
    "forbidden": 403,
    "model_not_found": 404,
    "request_too_large": 413,
    "rate_limit": 429,
    "daily_limit": 429,
    "insufficient_quota": 429,
    "upstream_rate_limit": 429,
    "upstream_quota": 429,
    "server_error": 500,
    "bad_gateway": 502,
    "overloaded": 503,
}

_ids = itertools.count(1)


# -- small helpers -------------------------------------------------------------------------------


def go_duration(seconds: float) -> str:
    """Format like Go's time.Duration, as OpenAI/Groq reset headers do: 6ms, 8.64s, 2m59.56s, 6m0s."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{hours}h" if hours else ""
    if hours or minutes:
        text += f"{minutes}m"
    return text + f"{secs:.3f}".rstrip("0").rstrip(".") + "s"


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def ratelimit_headers(
    *,
    limit_requests: int = 10000,
    remaining_requests: int = 9999,
    reset_requests: str = "8.64s",
    limit_tokens: int = 200000,
    remaining_tokens: int = 199981,
    reset_tokens: str = "6ms",
) -> dict[str, str]:
    """The `x-ratelimit-*` set OpenAI and Groq send (on Groq: requests = per day, tokens = per minute)."""
    return {
        "x-ratelimit-limit-requests": str(limit_requests),
        "x-ratelimit-limit-tokens": str(limit_tokens),
        "x-ratelimit-remaining-requests": str(remaining_requests),
        "x-ratelimit-remaining-tokens": str(remaining_tokens),
        "x-ratelimit-reset-requests": reset_requests,
        "x-ratelimit-reset-tokens": reset_tokens,
    }


GROQ_RATELIMIT = ratelimit_headers(
    limit_requests=14400,
    remaining_requests=14370,
    reset_requests="2m59.56s",
    limit_tokens=18000,
    remaining_tokens=17997,
    reset_tokens="7.66s",
)


def tool_call(name: str, arguments: str | dict[str, Any] = "{}", id: str | None = None) -> dict[str, Any]:
    """A `tool_calls` item; dict arguments are JSON-encoded (the wire carries a string)."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    call: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": args}}
    if id is not None:
        call["id"] = id
    return call


def _normalise_calls(calls: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": c.get("id") or f"call_fake{i}", **c} for i, c in enumerate(calls)]


def _split(content: str | Sequence[str]) -> list[str]:
    """Stream pieces: a list is used as is, a string is cut before each word."""
    return list(content) if not isinstance(content, str) else re.findall(r"\s*\S+", content)


def _fragments(text: str, size: int = 8) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _completion_id(flavor: Flavor, n: int, created: int) -> str:
    return f"gen-{created}-fake{n:06d}" if flavor == "openrouter" else f"chatcmpl-fake{n:06d}"


def usage_body(prompt_tokens: int, completion_tokens: int, flavor: Flavor = "openai") -> dict[str, Any]:
    """`usage` as each flavor reports it (Groq: with timings; OpenRouter: with cost)."""
    total = prompt_tokens + completion_tokens
    if flavor == "groq":
        return {
            "queue_time": 0.019005437,
            "prompt_tokens": prompt_tokens,
            "prompt_time": 0.058400983,
            "completion_tokens": completion_tokens,
            "completion_time": 0.06,
            "total_tokens": total,
            "total_time": 0.118400983,
        }
    if flavor == "openrouter":
        prompt_cost, completion_cost = prompt_tokens * 1.5e-7, completion_tokens * 6e-7
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": total,
            "cost": prompt_cost + completion_cost,
            "is_byok": False,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "cost_details": {
                "upstream_inference_cost": None,
                "upstream_inference_prompt_cost": prompt_cost,
                "upstream_inference_completions_cost": completion_cost,
            },
            "completion_tokens_details": {"reasoning_tokens": 0, "image_tokens": 0},
        }
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": total,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _default_completion_tokens(pieces: list[str], calls: list[dict[str, Any]]) -> int:
    args = sum(len(c["function"]["arguments"]) for c in calls)
    return max(1, len(pieces) + args // 4)


# -- chat payloads -------------------------------------------------------------------------------


def chat_completion(
    model: str = DEFAULT_MODEL,
    content: str | Sequence[str] = "Hello!",
    *,
    flavor: Flavor = "openai",
    tool_calls: Sequence[dict[str, Any]] | None = None,
    finish_reason: str | None = None,
    prompt_tokens: int = 10,
    completion_tokens: int | None = None,
    id: str | None = None,
    created: int = FIXED_CREATED,
    request_id: str = "req_fake000001",
) -> dict[str, Any]:
    """A non-streaming `chat.completion` object exactly as the flavor sends it."""
    calls = _normalise_calls(tool_calls or [])
    pieces = _split(content)
    text = None if calls else "".join(pieces)
    finish = finish_reason or ("tool_calls" if calls else "stop")
    done = completion_tokens if completion_tokens is not None else _default_completion_tokens(pieces, calls)
    usage = usage_body(prompt_tokens, done, flavor)
    cid = id or _completion_id(flavor, 1, created)
    if flavor == "groq":
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = calls
        return {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": usage,
            "usage_breakdown": None,
            "system_fingerprint": FINGERPRINT,
            "x_groq": {"id": request_id},
            "service_tier": "on_demand",
        }
    if flavor == "openrouter":
        message = {"role": "assistant", "content": text, "refusal": None, "reasoning": None}
        if calls:
            message["tool_calls"] = calls
        choice = {
            "logprobs": None,
            "finish_reason": finish,
            "native_finish_reason": finish,
            "index": 0,
            "message": message,
        }
        return {
            "id": cid,
            "provider": "OpenAI",
            "model": model,
            "object": "chat.completion",
            "created": created,
            "choices": [choice],
            "system_fingerprint": FINGERPRINT,
            "usage": usage,
        }
    message = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = calls
    message.update(refusal=None, annotations=[])
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }


def _stream_error(flavor: Flavor, base: dict[str, Any]) -> dict[str, Any]:
    """The mid-stream error event each flavor sends inside a 200 stream."""
    if flavor == "openrouter":
        error = {"code": "server_error", "message": "Provider disconnected unexpectedly"}
        choice = {"index": 0, "delta": {"content": ""}, "finish_reason": "error"}
        return {**base, "error": error, "choices": [choice]}
    if flavor == "groq":
        return {"error": {"message": "Service Unavailable", "type": "internal_server_error"}}
    return {"error": error_body("server_error")["error"]}


def stream_events(
    model: str = DEFAULT_MODEL,
    content: str | Sequence[str] = "Hello!",
    *,
    flavor: Flavor = "openai",
    tool_calls: Sequence[dict[str, Any]] | None = None,
    include_usage: bool = False,
    obfuscation: bool = True,
    finish_reason: str | None = None,
    prompt_tokens: int = 10,
    completion_tokens: int | None = None,
    id: str | None = None,
    created: int = FIXED_CREATED,
    request_id: str = "req_fake000001",
    error_after: int | None = None,
    processing_comments: int = 2,
) -> list[bytes]:
    """Every SSE event of a streamed answer, `data: [DONE]` included, as raw bytes.

    openai: role chunk, content/tool-call deltas, finish chunk, a `choices: []` usage chunk only with
    `include_usage`, each with `obfuscation` unless disabled. groq: `x_groq.id` on the first chunk,
    `x_groq.usage` on the finish chunk, whole tool calls in one delta, never a usage chunk.
    openrouter: `processing_comments` `: OPENROUTER PROCESSING` lines first, role on every delta, and
    always a usage chunk with cost. `error_after=N` replaces the rest of the stream after N content
    pieces with the flavor's mid-stream error event (no `[DONE]`).
    """
    calls = _normalise_calls(tool_calls or [])
    pieces = _split(content)
    finish = finish_reason or ("tool_calls" if calls else "stop")
    done = completion_tokens if completion_tokens is not None else _default_completion_tokens(pieces, calls)
    usage = usage_body(prompt_tokens, done, flavor)
    cid = id or _completion_id(flavor, 1, created)
    deltas: list[dict[str, Any]] = []  # choice deltas after the role chunk
    for i, call in enumerate(calls):
        header = {"index": i, "id": call["id"], "type": call["type"]}
        if flavor == "groq":
            deltas.append({"tool_calls": [{**header, "function": call["function"]}]})
            continue
        deltas.append(
            {"tool_calls": [{**header, "function": {"name": call["function"]["name"], "arguments": ""}}]}
        )
        deltas += [
            {"tool_calls": [{"index": i, "function": {"arguments": frag}}]}
            for frag in _fragments(call["function"]["arguments"])
        ]
    content_deltas = [] if calls else [{"content": p} for p in pieces]
    if error_after is not None:
        content_deltas = content_deltas[:error_after]

    if flavor == "openrouter":
        base = {
            "id": cid,
            "provider": "OpenAI",
            "model": model,
            "object": "chat.completion.chunk",
            "created": created,
        }

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            choice = {
                "index": 0,
                "delta": {"role": "assistant", **delta},
                "finish_reason": finish_reason,
                "native_finish_reason": finish_reason,
                "logprobs": None,
            }
            return {**base, "choices": [choice], "system_fingerprint": FINGERPRINT}

        events = [sse_comment("OPENROUTER PROCESSING")] * processing_comments
        body = [{"content": None, **d} for d in deltas] if calls else content_deltas
        events += [sse(chunk(d)) for d in body]
        if error_after is not None:
            return [*events, sse(_stream_error(flavor, base))]
        events.append(sse(chunk({"content": ""}, finish)))
        events.append(sse({**base, "choices": [], "usage": usage}))
        return [*events, sse("[DONE]")]

    base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
    if flavor == "openai":
        base |= {"service_tier": "default", "system_fingerprint": FINGERPRINT}
    else:
        base["system_fingerprint"] = FINGERPRINT
    counter = itertools.count()

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        out = {**base, "choices": [choice], **extra}
        if flavor == "openai":
            out["usage"] = None
            if obfuscation:
                out["obfuscation"] = _obfuscation(next(counter))
        return out

    role: dict[str, Any] = {"role": "assistant", "content": None if calls else ""}
    if flavor == "openai":
        if calls:  # OpenAI puts the first tool-call header in the role chunk
            role["tool_calls"] = deltas.pop(0)["tool_calls"]
        role["refusal"] = None
    first_extra = {"x_groq": {"id": request_id}} if flavor == "groq" else {}
    events = [sse(chunk(role, **first_extra))]
    events += [sse(chunk(d)) for d in (deltas if calls else content_deltas)]
    if error_after is not None:
        return [*events, sse(_stream_error(flavor, base))]
    if flavor == "groq":
        events.append(sse(chunk({}, finish, x_groq={"id": request_id, "usage": usage})))
    else:
        events.append(sse(chunk({}, finish)))
        if include_usage:
            tail: dict[str, Any] = {**base, "choices": [], "usage": usage}
            if obfuscation:
                tail["obfuscation"] = _obfuscation(next(counter))
            events.append(sse(tail))
    return [*events, sse("[DONE]")]


def _obfuscation(n: int) -> str:
    """Deterministic stand-in for OpenAI's random `obfuscation` padding."""
    return "AAatV4uApf9IQaNg"[: 3 + n % 12]


# -- errors --------------------------------------------------------------------------------------

_OPENAI_ERRORS: dict[str, tuple[str, str, str | None, str | None]] = {
    # kind: (message, type, param, code)
    "invalid_request": (
        "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array"
        " instead.",
        "invalid_request_error",
        "messages",
        "empty_array",
    ),
    "context_length_exceeded": (
        "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000"
        " tokens. Please reduce the length of the messages.",
        "invalid_request_error",
        "messages",
        "context_length_exceeded",
    ),
    "content_policy": (
        "Your request was rejected as a result of our safety system. Your prompt may contain text that is"
        " not allowed by our safety system.",
        "invalid_request_error",
        None,
        "content_policy_violation",
    ),
    "missing_api_key": (
        "You didn't provide an API key. You need to provide your API key in an Authorization header using"
        " Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username)"
        " if you're accessing the API from your browser and are prompted for a username and password. You"
        " can obtain an API key from https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        None,
        None,
    ),
    "invalid_api_key": (
        "Incorrect API key provided: {api_key}. You can find your API key at"
        " https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        None,
        "invalid_api_key",
    ),
    "forbidden": (
        "Country, region, or territory not supported",
        "request_forbidden",
        None,
        "unsupported_country_region_territory",
    ),
    "model_not_found": (
        "The model `{model}` does not exist or you do not have access to it.",
        "invalid_request_error",
        None,
        "model_not_found",
    ),
    "rate_limit": (
        "Rate limit reached for {model} in organization org-AbC123 on requests per min (RPM): Limit 3, Used"
        " 3, Requested 1. Please try again in {retry_after}s. Visit"
        " https://platform.openai.com/account/rate-limits to learn more.",
        "requests",
        None,
        "rate_limit_exceeded",
    ),
    "insufficient_quota": (
        "You exceeded your current quota, please check your plan and billing details. For more information"
        " on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
        "insufficient_quota",
        None,
        "insufficient_quota",
    ),
    "server_error": (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
        None,
    ),
    "overloaded": ("The engine is currently overloaded, please try again later.", "server_error", None, None),
}

_GROQ_ERRORS: dict[str, tuple[str, str, str | None]] = {
    # kind: (message, type, code); Groq omits `param`
    "invalid_request": ("'messages' : minimum number of items is 1", "invalid_request_error", None),
    "context_length_exceeded": (
        "Please reduce the length of the messages or completion.",
        "invalid_request_error",
        "context_length_exceeded",
    ),
    "missing_api_key": ("Invalid API Key", "invalid_request_error", "invalid_api_key"),
    "invalid_api_key": ("Invalid API Key", "invalid_request_error", "invalid_api_key"),
    "forbidden": ("Forbidden", "permission_error", None),
    "model_not_found": (
        "The model `{model}` does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    "request_too_large": (
        "Request too large for model `{model}` in organization `org_01jy16rk1yffks8jdsmfn4s7rj` service tier"
        " `on_demand` on tokens per minute (TPM): Limit 6000, Requested 15041, please reduce your message"
        " size and try again. Need more tokens? Upgrade to Dev Tier today at"
        " https://console.groq.com/settings/billing",
        "tokens",
        "rate_limit_exceeded",
    ),
    "rate_limit": (
        "Rate limit reached for model `{model}` in organization `org_01kfyrtjdmf3k81g2yd2rdaf00` service tier"
        " `on_demand` on tokens per minute (TPM): Limit 6000, Used 4093, Requested 3531. Please try again in"
        " {retry_after}s. Need more tokens? Upgrade to Dev Tier today at https://console.groq.com/settings/billing",
        "tokens",
        "rate_limit_exceeded",
    ),
    "daily_limit": (
        "Rate limit reached for model `{model}` in organization `org_01kfyrtjdmf3k81g2yd2rdaf00` service tier"
        " `on_demand` on requests per day (RPD): Limit 14400, Used 14400, Requested 1. Please try again in"
        " {retry_after}s. Need more tokens? Upgrade to Dev Tier today at https://console.groq.com/settings/billing",
        "requests",
        "rate_limit_exceeded",
    ),
    "server_error": ("Internal Server Error", "internal_server_error", None),
    "bad_gateway": ("Bad Gateway", "internal_server_error", None),
    "overloaded": ("Service Unavailable", "internal_server_error", None),
}

_OPENROUTER_ERRORS: dict[str, tuple[str, dict[str, Any] | None, bool]] = {
    # kind: (message, metadata, with user_id)
    "invalid_request": ('Input required: specify "prompt" or "messages"', None, True),
    "context_length_exceeded": (
        "This endpoint's maximum context length is 131072 tokens. However, you requested about 140000"
        ' tokens. Please reduce the length of either one, or use the "middle-out" transform to compress'
        " your prompt automatically.",
        None,
        True,
    ),
    "missing_api_key": ("No auth credentials found", None, False),
    "invalid_api_key": ("User not found.", None, False),
    "insufficient_credits": (
        "This request requires more credits, or fewer max_tokens. You requested up to 4096 tokens, but can"
        " only afford 1820. To increase, visit https://openrouter.ai/settings/credits and upgrade to a paid"
        " account",
        None,
        True,
    ),
    "forbidden": (
        '{model} requires moderation on OpenAI. Your input was flagged for "harassment". No credits were'
        " charged.",
        {
            "reasons": ["harassment"],
            "flagged_input": "...",
            "provider_name": "OpenAI",
            "model_slug": "{model}",
        },
        False,
    ),
    "model_not_found": ("No endpoints found for {model}.", None, True),
    "rate_limit": (
        "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day",
        {
            "headers": {
                "X-RateLimit-Limit": "50",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": "1741305600000",
            },
            "provider_name": None,
        },
        True,
    ),
    "daily_limit": (
        "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day",
        {
            "headers": {
                "X-RateLimit-Limit": "50",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": "{reset_ms}",
            },
            "provider_name": None,
        },
        True,
    ),
    "upstream_rate_limit": (
        "Provider returned error",
        {
            "raw": "{model} is temporarily rate-limited upstream. Please retry shortly, or add your own key"
            " to accumulate your rate limits: https://openrouter.ai/settings/integrations",
            "provider_name": "Google AI Studio",
        },
        True,
    ),
    # The provider's own 429 passed through in `raw`: here Google AI Studio's per-day quota of the
    # key OpenRouter holds there, which says nothing of this OpenRouter key's day.
    "upstream_quota": (
        "Provider returned error",
        {
            "raw": '{{"error": {{"code": 429, "message": "You exceeded your current quota, please check your'
            " plan and billing details. Quota exceeded for metric: generativelanguage.googleapis.com/"
            "generate_content_free_tier_requests, limit: 200, model: gemini-2.0-flash-exp\\nPlease retry in"
            ' 38s.", "status": "RESOURCE_EXHAUSTED", "details": [{{"@type": "type.googleapis.com/'
            'google.rpc.QuotaFailure", "violations": [{{"quotaId": "GenerateRequestsPerDayPerProjectPerModel-'
            'FreeTier", "quotaValue": "200"}}]}}]}}}}',
            "provider_name": "Google AI Studio",
        },
        True,
    ),
    "server_error": ("Internal Server Error", None, False),
    "bad_gateway": (
        "Provider returned error",
        {"raw": "upstream connect error", "provider_name": "DeepInfra"},
        False,
    ),
    "overloaded": ("No allowed providers are available for the selected model.", None, False),
}


def _fill(value: Any, fields: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**fields)
    if isinstance(value, dict):
        return {k: _fill(v, fields) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, fields) for v in value]
    return value


def error_body(
    kind: ErrorKind,
    *,
    flavor: Flavor = "openai",
    model: str = DEFAULT_MODEL,
    api_key: str = "sk-abc12***************************************wxyz",
    retry_after: float = 20,
    message: str | None = None,
) -> dict[str, Any]:
    """The JSON error body `flavor` sends for `kind` (raises ValueError if that flavor has no such error).

    `model`, `api_key` (shown masked, as OpenAI does) and `retry_after` fill the message templates;
    `message` replaces the message outright.
    """
    fields = {
        "model": model,
        "api_key": _mask(api_key),
        "retry_after": _seconds(retry_after),
        "reset_ms": str(int((time.time() + retry_after) * 1000)),
    }
    if flavor == "openrouter":
        if kind not in _OPENROUTER_ERRORS:
            raise ValueError(f"openrouter has no {kind!r} error")
        text, metadata, with_user = _OPENROUTER_ERRORS[kind]
        error: dict[str, Any] = {"message": message or text.format(**fields), "code": ERROR_STATUS[kind]}
        if metadata is not None:
            error["metadata"] = _fill(metadata, fields)
        return {"error": error, "user_id": OPENROUTER_USER} if with_user else {"error": error}
    if flavor == "groq":
        if kind not in _GROQ_ERRORS:
            raise ValueError(f"groq has no {kind!r} error")
        text, type_, code = _GROQ_ERRORS[kind]
        error = {"message": message or text.format(**fields), "type": type_}
        if code is not None:
            error["code"] = code
        return {"error": error}
    if kind == "bad_gateway":  # what OpenAI's edge answers
        return {
            "error": {
                "code": 502,
                "message": message or "Bad gateway.",
                "param": None,
                "type": "cf_bad_gateway",
            }
        }
    if kind not in _OPENAI_ERRORS:
        raise ValueError(f"openai has no {kind!r} error")
    text, type_, param, code = _OPENAI_ERRORS[kind]
    return {
        "error": {"message": message or text.format(**fields), "type": type_, "param": param, "code": code}
    }


def _mask(key: str) -> str:
    if "*" in key or len(key) <= 12:
        return key
    return key[:8] + "*" * (len(key) - 12) + key[-4:]


def error_response(
    kind: ErrorKind,
    *,
    flavor: Flavor = "openai",
    model: str = DEFAULT_MODEL,
    api_key: str = "sk-abc12***************************************wxyz",
    retry_after: float | None = None,
    message: str | None = None,
    headers: dict[str, str] | None = None,
) -> Behavior:
    """A complete error answer: status, the flavor's headers and `error_body`.

    Rate limits carry `retry-after` (default 20 s; OpenRouter's only when given) and the flavor's
    rate-limit headers with nothing remaining.
    """
    is_rate_limit = kind in ("rate_limit", "daily_limit", "upstream_rate_limit", "upstream_quota")
    wait = retry_after if retry_after is not None else 20
    out: dict[str, str] = {"x-request-id": f"req_fake{next(_ids):06d}"}
    if flavor == "openrouter":
        if kind == "rate_limit":
            out |= {
                "X-RateLimit-Limit": "50",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": "1741305600000",
            }
        if retry_after is not None:
            out["retry-after"] = _seconds(retry_after)
    elif is_rate_limit or retry_after is not None:
        out["retry-after"] = _seconds(wait)
        if is_rate_limit:
            out |= ratelimit_headers(remaining_requests=0, reset_requests=go_duration(wait))
    body = error_body(kind, flavor=flavor, model=model, api_key=api_key, retry_after=wait, message=message)
    return Behavior(status=ERROR_STATUS[kind], headers=out | (headers or {}), json=body)


# -- images --------------------------------------------------------------------------------------


def tiny_png(rgb: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    """A valid 1x1 PNG of one colour."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" + bytes(rgb))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


TINY_PNG = tiny_png()


def images_body(
    model: str = "dall-e-3",
    *,
    n: int = 1,
    response_format: str = "b64_json",
    image_url: str = "https://images.invalid/img-fake.png",
    prompt: str = "a red fox in snow",
    created: int = FIXED_CREATED,
    png: bytes = TINY_PNG,
) -> dict[str, Any]:
    """An `/images/generations` answer; gpt-image-* models always answer base64 with usage."""
    b64 = base64.b64encode(png).decode()
    if model.startswith("gpt-image"):
        return {
            "created": created,
            "background": "opaque",
            "output_format": "png",
            "quality": "high",
            "size": "1024x1024",
            "data": [{"b64_json": b64} for _ in range(n)],
            "usage": {
                "input_tokens": 12,
                "input_tokens_details": {"image_tokens": 0, "text_tokens": 12},
                "output_tokens": 4160,
                "total_tokens": 4172,
            },
        }
    key, value = ("b64_json", b64) if response_format == "b64_json" else ("url", image_url)
    return {
        "created": created,
        "data": [{key: value, "revised_prompt": f"A vivid image: {prompt}"} for _ in range(n)],
    }


# -- the server ----------------------------------------------------------------------------------


@dataclass
class ChatReply:
    """How the fake answers one chat request; called with the request, it renders a `Behavior`.

    It echoes the requested `model`, streams when the request says `stream: true` (honouring
    `stream_options.include_usage` / `include_obfuscation`), and with `auto_tool_calls` calls the
    request's first tool. `content` may be a list of exact stream pieces. Timing and fault fields are
    passed to `Behavior` (`drop_after` and `stall_after` count SSE events, comments included).
    """

    flavor: Flavor = "openai"
    content: str | list[str] = "Hello!"
    tool_calls: list[dict[str, Any]] | None = None
    auto_tool_calls: bool = False
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    chunk_delay: float = 0.0
    drop_after: int | None = None
    stall_after: int | None = None
    stall_for: float = DEFAULT_STALL_SECONDS
    error_after: int | None = None
    processing_comments: int = 2

    def __call__(self, req: Recorded) -> Behavior:
        body = req.json if isinstance(req.json, dict) else {}
        model = body.get("model") or DEFAULT_MODEL
        calls = self.tool_calls
        if calls is None and self.auto_tool_calls and body.get("tools"):
            calls = [tool_call(body["tools"][0]["function"]["name"], "{}")]
        n, created = next(_ids), int(time.time())
        request_id = f"req_fake{n:06d}"
        common = {
            "flavor": self.flavor,
            "tool_calls": calls,
            "finish_reason": self.finish_reason,
            "prompt_tokens": _prompt_tokens(body) if self.prompt_tokens is None else self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "id": _completion_id(self.flavor, n, created),
            "created": created,
            "request_id": request_id,
        }
        timing = {
            "delay": self.delay,
            "drop_after": self.drop_after,
            "stall_after": self.stall_after,
            "stall_for": self.stall_for,
        }
        headers = _success_headers(self.flavor, request_id, str(common["id"])) | self.headers
        if not body.get("stream"):
            return Behavior(headers=headers, json=chat_completion(model, self.content, **common), **timing)
        options = body.get("stream_options") or {}
        events = stream_events(
            model,
            self.content,
            include_usage=bool(options.get("include_usage")),
            obfuscation=options.get("include_obfuscation") is not False,
            error_after=self.error_after,
            processing_comments=self.processing_comments,
            **common,
        )
        return Behavior(headers=headers, events=events, chunk_delay=self.chunk_delay, **timing)


def _prompt_tokens(body: dict[str, Any]) -> int:
    """A deterministic stand-in for the tokenizer: about four characters per token."""
    return max(1, len(json.dumps(body.get("messages", ""))) // 4)


def _success_headers(flavor: Flavor, request_id: str, completion_id: str) -> dict[str, str]:
    if flavor == "openrouter":
        return {"x-generation-id": completion_id}
    if flavor == "groq":
        return {"x-request-id": request_id, **GROQ_RATELIMIT}
    return {
        "x-request-id": request_id,
        "openai-organization": "org-fake",
        "openai-processing-ms": "42",
        "openai-version": "2020-10-01",
        **ratelimit_headers(),
    }


class FakeOpenAI(FakeServer):
    """OpenAI-compatible upstream. Routes: `chat` (POST any path ending `/chat/completions`), `images`
    (POST `.../images/generations`), `models` (GET `.../models`), `files` (GET `/files/...`: the PNG
    that `url` image answers point at). With `api_key` set, every route but `files` wants
    `Authorization: Bearer <api_key>` and answers the flavor's 401 otherwise; chat requests without a
    `model` or a non-empty `messages` list get the flavor's 400.
    """

    def __init__(
        self,
        api_key: str | None = "sk-fake-upstream-key",
        *,
        flavor: Flavor = "openai",
        content: str | list[str] = "Hello!",
        auto_tool_calls: bool = False,
        models: Sequence[str] = ("gpt-4o-mini", "gpt-4o", "dall-e-3", "gpt-image-1"),
        port: int = 0,
    ) -> None:
        super().__init__(port)
        self.api_key = api_key
        self.flavor: Flavor = flavor
        self.models = list(models)
        prefix = CHAT_PATHS[flavor].removesuffix("/chat/completions")
        self.chat_url = self.url + CHAT_PATHS[flavor]
        self.base_url = self.url + prefix
        self.images_url = f"{self.base_url}/images/generations"
        self.default_reply = ChatReply(flavor=flavor, content=content, auto_tool_calls=auto_tool_calls)
        self.add_route("chat", "POST", re.compile(r".*/chat/completions"), self.default_reply)
        self.add_route("images", "POST", re.compile(r".*/images/generations"), self._images)
        self.add_route("models", "GET", re.compile(r".*/models"), self._models)
        self.add_route(
            "files", "GET", "/files/", Behavior(headers={"Content-Type": "image/png"}, body=TINY_PNG)
        )

    def reply(self, **overrides: Any) -> ChatReply:
        """The default chat reply with some fields changed."""
        return replace(self.default_reply, **overrides)

    def push_chat(self, **overrides: Any) -> None:
        """Answer the next chat request with `reply(**overrides)`."""
        self.push("chat", self.reply(**overrides))

    def push_error(self, kind: ErrorKind, route: str = "chat", **kwargs: Any) -> None:
        """Answer the next request on `route` with this flavor's `error_response(kind, **kwargs)`."""
        self.push(route, error_response(kind, flavor=self.flavor, **kwargs))

    @property
    def chat_requests(self) -> list[Recorded]:
        return self.requests_for("chat")

    def before(self, req: Recorded, route: Route) -> Behavior | None:
        if route.name == "files":
            return None
        if self.api_key is not None:
            auth = req.headers.get("Authorization", "")
            if not auth:
                return error_response("missing_api_key", flavor=self.flavor)
            if auth != f"Bearer {self.api_key}":
                return error_response(
                    "invalid_api_key", flavor=self.flavor, api_key=auth.removeprefix("Bearer ")
                )
        if route.name == "chat":
            body = req.json if isinstance(req.json, dict) else {}
            messages = body.get("messages")
            if not (body.get("model") and isinstance(messages, list) and messages):
                return error_response("invalid_request", flavor=self.flavor)
        return None

    def _images(self, req: Recorded) -> Behavior:
        body = req.json if isinstance(req.json, dict) else {}
        answer = images_body(
            body.get("model") or "dall-e-3",
            n=int(body.get("n") or 1),
            response_format=body.get("response_format") or "url",
            image_url=f"{self.url}/files/img-fake.png",
            prompt=str(body.get("prompt", "")),
            created=int(time.time()),
        )
        return Behavior(headers={"x-request-id": f"req_fake{next(_ids):06d}"}, json=answer)

    def _models(self, req: Recorded) -> Behavior:
        data = [
            {"id": m, "object": "model", "created": 1686935002, "owned_by": "system"} for m in self.models
        ]
        return Behavior(json={"object": "list", "data": data})


class KeyPoolFake(FakeOpenAI):
    """An OpenAI-compatible upstream that keeps each key's own quota, as real providers do: a key in
    `keys` may make `requests_per_minute` chat requests in any 60 s (one more gets the flavor's 429),
    any other key gets the 401, and a key with a model in `no_access` gets the 404 `model_not_found`
    for it. `calls[key]` counts every chat request a key made, `refusals[key, status]` its errors."""

    def __init__(
        self,
        keys: Sequence[str],
        *,
        requests_per_minute: int,
        no_access: dict[str, Sequence[str]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(api_key=None, **kwargs)
        self.keys = set(keys)
        self.requests_per_minute = requests_per_minute
        self.no_access = {key: set(models) for key, models in (no_access or {}).items()}
        self.calls: Counter[str] = Counter()
        self.refusals: Counter[tuple[str, int]] = Counter()
        self._admitted: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def before(self, req: Recorded, route: Route) -> Behavior | None:
        answer = super().before(req, route)
        if answer is not None or route.name != "chat":
            return answer
        key = req.headers.get("Authorization", "").removeprefix("Bearer ")
        model = req.json["model"]
        now = time.monotonic()
        with self._lock:
            self.calls[key] += 1
            admitted = [t for t in self._admitted.get(key, ()) if t > now - 60]
            if key not in self.keys:
                answer = error_response("invalid_api_key", flavor=self.flavor, api_key=key)
            elif model in self.no_access.get(key, ()):
                answer = error_response("model_not_found", flavor=self.flavor, model=model)
            elif len(admitted) >= self.requests_per_minute:
                wait = 60 - (now - admitted[0])
                answer = error_response("rate_limit", flavor=self.flavor, retry_after=wait)
            else:
                admitted.append(now)
            self._admitted[key] = admitted
            if answer is not None:
                self.refusals[key, answer.status] += 1
        return answer
