"""Fake Gemini upstream (AI Studio native REST) and its payload builders.

Payloads follow shared/provider-formats/04-gemini.md: `GenerateContentResponse` bodies pretty-printed
as Google sends them, SSE events framed with CRLF and Google's `": "` / `","` separators, no `[DONE]`,
and the `google.rpc.Status` error envelope (a bad key is a 400, a 429 carries RetryInfo). The builders
are plain functions so unit tests can reuse the exact shapes without a server::

    with FakeGemini() as fake:
        fake.push_stream(["Sure, here", " you go"], chunk_delay=0.2)
        fake.push_error("rate_limit", retry_delay="1.5s")
        ...  # point the proxy at fake.base_url
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal

from .server import Behavior, FakeServer, Recorded, Route

__all__ = [
    "API_KEY",
    "DEFAULT_MODEL",
    "ErrorKind",
    "FakeGemini",
    "blocked_response",
    "error_body",
    "error_response",
    "function_call",
    "generate_response",
    "sse_event",
    "stream_events",
    "usage_metadata",
]

API_KEY = "test-gemini-key-not-real"
DEFAULT_MODEL = "gemini-2.0-flash"
RESPONSE_ID = "ibRCaOfLGfuQ1PIPqNma8Aw"
JSON_TYPE = "application/json; charset=UTF-8"

ErrorKind = Literal[
    "bad_key", "missing_key", "invalid_argument", "not_found", "rate_limit", "internal", "unavailable"
]

# Fields the real API accepts; it rejects any other with 400 "Unknown name" (so do we).
REQUEST_FIELDS = {
    "contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings",
    "cachedContent",
}  # fmt: skip
GENERATION_FIELDS = {
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "candidateCount",
    "maxOutputTokens", "temperature", "topP", "topK", "seed", "presencePenalty", "frequencyPenalty",
    "responseLogprobs", "logprobs", "thinkingConfig", "responseModalities", "mediaResolution",
}  # fmt: skip
PART_FIELDS = {
    "text", "inlineData", "fileData", "functionCall", "functionResponse", "thought", "thoughtSignature",
}  # fmt: skip


# -- payload builders ----------------------------------------------------------------------------


def usage_metadata(prompt: int = 10, candidates: int | None = 9, thoughts: int = 0) -> dict[str, Any]:
    """`usageMetadata`; `candidates=None` is the prompt-only form of interim stream chunks."""
    meta: dict[str, Any] = {"promptTokenCount": prompt}
    if candidates is not None:
        meta["candidatesTokenCount"] = candidates
    meta["totalTokenCount"] = prompt + (candidates or 0) + thoughts
    meta["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if candidates is not None:
        meta["candidatesTokensDetails"] = [{"modality": "TEXT", "tokenCount": candidates}]
    if thoughts:
        meta["thoughtsTokenCount"] = thoughts
    return meta


def function_call(
    name: str, args: dict[str, Any] | None = None, signature: str | None = None
) -> dict[str, Any]:
    """A `functionCall` part (args is an object on the wire), optionally with a thought signature."""
    part: dict[str, Any] = {"functionCall": {"name": name, "args": args or {}}}
    if signature:
        part["thoughtSignature"] = signature
    return part


def _parts(content: str | Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"text": content}] if isinstance(content, str) else list(content)


def generate_response(
    content: str | Sequence[dict[str, Any]] = "Hello! How can I help you today?",
    *,
    finish_reason: str | None = "STOP",
    usage: dict[str, Any] | None = None,
    model: str = DEFAULT_MODEL,
    response_id: str = RESPONSE_ID,
    candidates: int = 1,
) -> dict[str, Any]:
    """A `GenerateContentResponse`: text (a str) or explicit parts; `candidates` copies for `n`."""
    candidate: dict[str, Any] = {"content": {"parts": _parts(content), "role": "model"}}
    if finish_reason:
        candidate["finishReason"] = finish_reason
        candidate["avgLogprobs"] = -0.0412
    listed = [candidate] if candidates == 1 else [{**candidate, "index": i} for i in range(candidates)]
    return {
        "candidates": listed,
        "usageMetadata": usage_metadata() if usage is None else usage,
        "modelVersion": model,
        "responseId": response_id,
    }


def blocked_response(reason: str = "SAFETY") -> dict[str, Any]:
    """A prompt blocked by safety filters: HTTP 200, no candidates, `promptFeedback.blockReason`."""
    return {
        "promptFeedback": {
            "blockReason": reason,
            "safetyRatings": [
                {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
                {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "HIGH"},
                {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "NEGLIGIBLE"},
            ],
        },
        "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
        "modelVersion": DEFAULT_MODEL,
        "responseId": RESPONSE_ID,
    }


def sse_event(data: Any) -> bytes:
    """One event as Google frames it: `data: ` + JSON with `": "` separators + CRLF CRLF."""
    return b"data: " + json.dumps(data, separators=(",", ": ")).encode() + b"\r\n\r\n"


def stream_events(
    pieces: Sequence[str | Sequence[dict[str, Any]]] = ("Sure, here", " you go:\n\nEnglish: potato"),
    *,
    finish_reason: str | None = "STOP",
    prompt_tokens: int = 10,
    candidates_tokens: int = 24,
    thoughts_tokens: int = 0,
    model: str = DEFAULT_MODEL,
    response_id: str = RESPONSE_ID,
) -> list[bytes]:
    """A `streamGenerateContent?alt=sse` body: one event per piece (text or parts); interim events
    carry prompt-only usage, the last one `finishReason` and full usage. `finish_reason=None` gives
    a stream cut off before its end."""
    events = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1 and finish_reason is not None
        candidate: dict[str, Any] = {"content": {"parts": _parts(piece), "role": "model"}}
        if last:
            candidate["finishReason"] = finish_reason
        usage = (
            usage_metadata(prompt_tokens, candidates_tokens, thoughts_tokens)
            if last
            else usage_metadata(prompt_tokens, None)
        )
        events.append(
            sse_event(
                {
                    "candidates": [candidate],
                    "usageMetadata": usage,
                    "modelVersion": model,
                    "responseId": response_id,
                }
            )
        )
    return events


_BAD_KEY_MESSAGE = "API key not valid. Please pass a valid API key."
_QUOTA_METRIC = "generativelanguage.googleapis.com/generate_content_free_tier_requests"
_QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more information "
    "on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your current "
    "usage, head to: https://ai.dev/rate-limit. \n* Quota exceeded for metric: "
    f"{_QUOTA_METRIC}, limit: {{limit}}, model: {{model}}\n"
    "Please retry in 14.925851614s."
)
_ERRORS: dict[str, tuple[int, str, str]] = {
    "bad_key": (400, "INVALID_ARGUMENT", _BAD_KEY_MESSAGE),
    "missing_key": (
        403,
        "PERMISSION_DENIED",
        "Method doesn't allow unregistered callers (callers without established identity). "
        "Please use API Key or other form of API consumer identity to call this API.",
    ),
    "invalid_argument": (
        400,
        "INVALID_ARGUMENT",
        "* GenerateContentRequest.contents: contents is not specified\n",
    ),
    "not_found": (
        404,
        "NOT_FOUND",
        "models/{model} is not found for API version v1beta, or is not supported for generateContent. "
        "Call ListModels to see the list of available models and their supported methods.",
    ),
    "rate_limit": (429, "RESOURCE_EXHAUSTED", _QUOTA_MESSAGE),
    "internal": (
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    "unavailable": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
}


def error_body(
    kind: ErrorKind,
    *,
    model: str = DEFAULT_MODEL,
    message: str | None = None,
    retry_delay: str | None = "14s",
    daily: bool = False,
    limit: int = 10,
) -> dict[str, Any]:
    """The `google.rpc.Status` envelope of one error kind; a 429 lists QuotaFailure and RetryInfo
    (`retry_delay=None` leaves RetryInfo out; `daily` names the per-day quota; `limit=0` is what a
    project whose free tier does not include the model gets)."""
    code, status, text = _ERRORS[kind]
    text = text.format(model=model, limit=limit)
    error: dict[str, Any] = {"code": code, "message": message or text, "status": status}
    if kind == "bad_key":
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": text},
        ]
    elif kind == "rate_limit":
        period = "Day" if daily else "Minute"
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [
                    {
                        "description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                    }
                ],
            },
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": _QUOTA_METRIC,
                        "quotaId": f"GenerateRequestsPer{period}PerProjectPerModel-FreeTier",
                        "quotaDimensions": {"location": "global", "model": model},
                        "quotaValue": str(limit),
                    }
                ],
            },
        ]
        if retry_delay is not None:
            error["details"].append(
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
            )
    return {"error": error}


def error_response(kind: ErrorKind, **kwargs: Any) -> Behavior:
    """The HTTP answer of `error_body(kind, **kwargs)`, pretty-printed like Google's."""
    body = error_body(kind, **kwargs)
    return Behavior(
        status=body["error"]["code"],
        headers={"Content-Type": JSON_TYPE},
        body=json.dumps(body, indent=2).encode(),
    )


def _json_answer(data: Any) -> Behavior:
    return Behavior(headers={"Content-Type": JSON_TYPE}, body=json.dumps(data, indent=2).encode())


def _invalid(message: str) -> Behavior:
    return error_response("invalid_argument", message=message)


# -- the server ----------------------------------------------------------------------------------


class FakeGemini(FakeServer):
    """Gemini native upstream. Routes: `generate` (POST `/v1beta/models/{model}:generateContent`) and
    `stream` (POST `...:streamGenerateContent`; SSE with `alt=sse`, else one JSON array as the real
    API does). Every request needs the key (`x-goog-api-key`, or `?key=` which Google also accepts):
    none is a 403, a wrong one the 400 API_KEY_INVALID. Bodies with unknown fields, empty `contents`,
    roles other than user/model, or parts of an unknown kind get Google's 400 INVALID_ARGUMENT.
    """

    def __init__(
        self,
        api_key: str = API_KEY,
        *,
        content: str = "Hello! How can I help you today?",
        pieces: Sequence[str] = ("Sure, here", " you go:\n\nEnglish: potato", "\nGerman: Kartoffel\n"),
        chunk_delay: float = 0.0,
        port: int = 0,
    ) -> None:
        super().__init__(port)
        self.api_key = api_key
        self.base_url = f"{self.url}/v1beta/models"
        model = r"/v1beta/models/(?P<model>[^/:]+)"
        self.add_route(
            "generate",
            "POST",
            re.compile(model + ":generateContent"),
            lambda req: _json_answer(generate_response(content, model=req.params["model"])),
        )
        self.add_route(
            "stream",
            "POST",
            re.compile(model + ":streamGenerateContent"),
            lambda req: self.stream_answer(req, pieces, chunk_delay=chunk_delay),
        )

    def push_generate(self, content: str | Sequence[dict[str, Any]] = "Hello!", **kwargs: Any) -> None:
        """Answer the next generateContent with `generate_response(content, **kwargs)`."""
        self.push("generate", _json_answer(generate_response(content, **kwargs)))

    def push_blocked(self, route: str = "generate", reason: str = "SAFETY") -> None:
        """Answer the next request on `route` with a prompt blocked by safety filters."""
        if route == "generate":
            self.push(route, _json_answer(blocked_response(reason)))
        else:
            self.push(route, Behavior(events=[sse_event(blocked_response(reason))]))

    def push_stream(
        self, pieces: Sequence[str | Sequence[dict[str, Any]]], *, chunk_delay: float = 0.0, **kwargs: Any
    ) -> None:
        """Answer the next stream with `stream_answer(pieces, ...)`, flushing each event."""
        self.push("stream", lambda req: self.stream_answer(req, pieces, chunk_delay=chunk_delay, **kwargs))

    def push_error(self, kind: ErrorKind, route: str = "generate", **kwargs: Any) -> None:
        """Answer the next request on `route` with `error_response(kind, **kwargs)`."""
        self.push(route, error_response(kind, **kwargs))

    @staticmethod
    def stream_answer(
        req: Recorded,
        pieces: Sequence[str | Sequence[dict[str, Any]]],
        *,
        chunk_delay: float = 0.0,
        delay: float = 0.0,
        drop_after: int | None = None,
        **kwargs: Any,
    ) -> Behavior:
        """`stream_events(pieces, **kwargs)` as SSE (`alt=sse`) or the documented JSON array;
        `delay` before the headers, `chunk_delay` between events, `drop_after` N events cut the line."""
        events = stream_events(pieces, model=req.params["model"], **kwargs)
        if req.query.get("alt") != "sse":
            array = [json.loads(e.removeprefix(b"data: ")) for e in events]
            return Behavior(delay=delay, headers={"Content-Type": JSON_TYPE}, body=json.dumps(array).encode())
        return Behavior(
            delay=delay,
            headers={"Content-Type": "text/event-stream"},
            events=events,
            chunk_delay=chunk_delay,
            drop_after=drop_after,
        )

    def before(self, req: Recorded, route: Route) -> Behavior | None:
        key = req.headers.get("x-goog-api-key") or req.query.get("key")
        if not key:
            return error_response("missing_key")
        if key != self.api_key:
            return error_response("bad_key")
        return _validate(req.json, req.params.get("model", ""))


def _validate(body: Any, model: str) -> Behavior | None:
    """Google's 400 for the request mistakes an adapter could make."""
    if not isinstance(body, dict):
        return _invalid("Invalid JSON payload received.")
    unknown = sorted(set(body) - REQUEST_FIELDS) or sorted(
        set(body.get("generationConfig") or {}) - GENERATION_FIELDS
    )
    if unknown:
        return _invalid(f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.')
    contents = body.get("contents")
    if not contents:
        return _invalid("* GenerateContentRequest.contents: contents is not specified\n")
    for i, content in enumerate(contents):
        if content.get("role") not in ("user", "model"):
            return _invalid(f"* GenerateContentRequest.contents[{i}].role: must be user or model\n")
        parts = content.get("parts")
        if not parts:
            return _invalid(
                f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.\n"
            )
        for part in parts:
            if not part or not set(part) <= PART_FIELDS:
                return _invalid(
                    f"* GenerateContentRequest.contents[{i}].parts: unknown part {sorted(part)}\n"
                )
    return None
