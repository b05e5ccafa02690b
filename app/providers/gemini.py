"""Google Gemini (AI Studio) native REST API: `:generateContent` and `:streamGenerateContent?alt=sse`.

Pure translations OpenAI <-> Gemini at module level; `Gemini` binds them to the shared transport.
The API key travels only in the `x-goog-api-key` header: URLs end up in logs and exception texts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from app.config import HttpConfig, ModelConfig
from app.errors import InvalidRequest, ProxyError, UpstreamError
from app.http import SessionPool
from app.providers.base import HttpProvider, UpstreamRequest
from app.providers.shape import (
    Answer,
    ChunkWriter,
    Output,
    count,
    error_for_status,
    expect,
    incomplete_stream,
    json_format,
    max_tokens,
    openai_error_message,
    optional_text,
    seconds_until_midnight,
    tool_call,
    usage,
)
from app.routing.cooldown import AUTH, DAILY, RATE, UNAVAILABLE, Cooldown
from app.sse import SSEEvent

# Gemini 3 rejects a replayed function call without its thought signature; Google documents this value
# for calls whose signature was lost (a client that drops `extra_content`).
DUMMY_THOUGHT_SIGNATURE = "skip_thought_signature_validator"

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    **dict.fromkeys(
        (
            "SAFETY",
            "RECITATION",
            "LANGUAGE",
            "BLOCKLIST",
            "PROHIBITED_CONTENT",
            "SPII",
            "IMAGE_SAFETY",
            "IMAGE_PROHIBITED_CONTENT",
            "IMAGE_RECITATION",
        ),
        "content_filter",
    ),
}  # anything else (OTHER, MALFORMED_FUNCTION_CALL, ...) ends the answer as "stop"

GENERATION_FIELDS = (
    ("temperature", "temperature"),
    ("top_p", "topP"),
    ("top_k", "topK"),
    ("n", "candidateCount"),
    ("seed", "seed"),
    ("presence_penalty", "presencePenalty"),
    ("frequency_penalty", "frequencyPenalty"),
)
TOOL_CHOICE_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}

# Gemini's OpenAPI-subset `Schema` (for `parameters` / `responseSchema`); anything richer goes
# through `parametersJsonSchema` / `responseJsonSchema`, which take full JSON Schema.
OPENAPI_SCHEMA_KEYS = frozenset(
    (
        "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems",
        "properties", "required", "minProperties", "maxProperties", "minLength", "maxLength",
        "pattern", "example", "anyOf", "propertyOrdering", "default", "items", "minimum", "maximum",
    )
)  # fmt: skip
OPENAPI_TYPES = frozenset(("string", "number", "integer", "boolean", "array", "object"))

_RETRY_IN = re.compile(r"retry in ([0-9.]+)s", re.IGNORECASE)
_LIMIT_ZERO = re.compile(r"\blimit: 0\b")  # "Quota exceeded for metric: ..., limit: 0, model: ..."


# --- request ----------------------------------------------------------------------------------


def to_gemini_request(
    body: Mapping[str, Any], *, thought_signature_fallback: str | None = None
) -> dict[str, Any]:
    """OpenAI chat request -> Gemini `GenerateContentRequest`. Raises InvalidRequest.

    `thought_signature_fallback` is set on replayed function calls that came back without one.
    """
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}  # tool_call id -> function name, for the tool results
    for i, message in enumerate(body.get("messages") or ()):
        where = f"messages[{i}]"
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_parts(message.get("content"), where))
            continue
        if role == "user":
            parts = _user_parts(message.get("content"), where)
        elif role == "assistant":
            parts = _model_parts(message, where, call_names, thought_signature_fallback)
        elif role in ("tool", "function"):  # "function": the legacy form, named by the message
            parts = [_function_response(message, where, call_names)]
        else:
            raise InvalidRequest(f"Unsupported message role {role!r}", param=f"{where}.role")
        if not parts:
            continue
        gemini_role = "model" if role == "assistant" else "user"
        if contents and contents[-1]["role"] == gemini_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": gemini_role, "parts": parts})

    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    tools = body.get("tools")
    if tools:
        request["tools"] = [{"functionDeclarations": [_declaration(t, i) for i, t in enumerate(tools)]}]
        if body.get("tool_choice") is not None:
            request["toolConfig"] = {"functionCallingConfig": _calling_config(body["tool_choice"])}
    config = _generation_config(body)
    if config:
        request["generationConfig"] = config
    return request


def _text_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"text": content}]
    parts = []
    for j, part in enumerate(content):
        if part["type"] != "text":
            raise InvalidRequest("Only text parts are accepted here", param=f"{where}.content[{j}]")
        if part.get("text"):
            parts.append({"text": part["text"]})
    return parts


def _user_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return _text_parts(content, where)
    parts = []
    for j, part in enumerate(content):
        param = f"{where}.content[{j}]"
        kind = part["type"]
        if kind == "text":
            if part.get("text"):
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            parts.append(_inline_data(url, f"{param}.image_url.url"))
        elif kind == "input_audio":
            audio = part.get("input_audio")
            if not isinstance(audio, dict) or not audio.get("data"):
                raise InvalidRequest("input_audio needs base64 data", param=f"{param}.input_audio.data")
            mime = f"audio/{audio.get('format') or 'wav'}"
            parts.append({"inlineData": {"mimeType": mime, "data": audio["data"]}})
        elif kind == "file" and isinstance(part.get("file"), dict) and part["file"].get("file_data"):
            parts.append(_inline_data(part["file"]["file_data"], f"{param}.file.file_data"))
        else:
            raise InvalidRequest(
                f"Content part type {kind!r} is not supported for Gemini models", param=param
            )
    return parts


def _inline_data(url: Any, param: str) -> dict[str, Any]:
    """A `data:<mime>;base64,<data>` URL -> an inlineData part; Gemini cannot fetch arbitrary URLs."""
    header, comma, data = url.partition(",") if isinstance(url, str) else ("", "", "")
    mime = header[5:].split(";", 1)[0] if header.startswith("data:") else ""
    if not comma or not mime or not header.endswith(";base64"):
        raise InvalidRequest(
            "Gemini models take images and files only as base64 data URLs (data:image/png;base64,...)",
            param=param,
        )
    return {"inlineData": {"mimeType": mime, "data": data}}


def _model_parts(
    message: Mapping[str, Any], where: str, call_names: dict[str, str], signature_fallback: str | None
) -> list[dict[str, Any]]:
    parts = _text_parts(message.get("content"), where)
    calls = []
    tool_calls = list(message.get("tool_calls") or ())
    if isinstance(message.get("function_call"), dict):  # legacy single call
        tool_calls.append({"function": message["function_call"]})
    for k, call in enumerate(tool_calls):
        param = f"{where}.tool_calls[{k}]"
        function = call["function"]
        if not function["name"]:
            raise InvalidRequest("A tool call needs a function name", param=param)
        call_names[call.get("id") or ""] = function["name"]
        part: dict[str, Any] = {
            "functionCall": {"name": function["name"], "args": _arguments(function.get("arguments"), param)}
        }
        signature = ((call.get("extra_content") or {}).get("google") or {}).get("thought_signature")
        if signature:
            part["thoughtSignature"] = signature
        calls.append(part)
    if calls and signature_fallback and not any("thoughtSignature" in p for p in calls):
        calls[0]["thoughtSignature"] = signature_fallback
    return parts + calls


def _arguments(raw: Any, param: str) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if not raw:
        return {}
    try:
        args = orjson.loads(raw)
    except orjson.JSONDecodeError:
        args = None
    if not isinstance(args, dict):
        raise InvalidRequest("Tool call arguments must be a JSON object", param=f"{param}.function.arguments")
    return args


def _function_response(message: Mapping[str, Any], where: str, call_names: dict[str, str]) -> dict[str, Any]:
    """A tool result -> functionResponse; Gemini wants the function's name and an object response."""
    call_id = message.get("tool_call_id")
    name = call_names.get(call_id or "") or message.get("name")
    if not name:
        raise InvalidRequest(
            f"tool_call_id {call_id!r} matches no tool call of an earlier assistant message",
            param=f"{where}.tool_call_id",
        )
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p["text"] for p in content if p["type"] == "text")
    try:
        value = orjson.loads(content) if isinstance(content, str) else content
    except orjson.JSONDecodeError:
        value = content
    return {
        "functionResponse": {
            "name": name,
            "response": value if isinstance(value, dict) else {"result": value},
        }
    }


def _declaration(tool: Any, i: int) -> dict[str, Any]:
    function = tool["function"] if tool.get("type", "function") == "function" else None
    if function is None or not function["name"]:
        raise InvalidRequest("Gemini models take only function tools with a name", param=f"tools[{i}]")
    declaration = {"name": function["name"]}
    if function.get("description"):
        declaration["description"] = function["description"]
    parameters = function.get("parameters")
    if parameters is not None and (parameters.get("properties") or parameters.get("type") != "object"):
        declaration.update(_schema(parameters, "parameters", "parametersJsonSchema"))
    return declaration


def _schema(schema: dict[str, Any], openapi_key: str, json_schema_key: str) -> dict[str, Any]:
    return {openapi_key if _is_openapi_schema(schema) else json_schema_key: schema}


def _is_openapi_schema(schema: Any) -> bool:
    """Whether a JSON Schema fits Gemini's OpenAPI subset (works on every model version)."""
    if not isinstance(schema, dict) or not schema.keys() <= OPENAPI_SCHEMA_KEYS:
        return False
    kind = schema.get("type")
    if kind is None and "anyOf" not in schema:
        return False
    if kind is not None and not (isinstance(kind, str) and kind.lower() in OPENAPI_TYPES):
        return False
    if not all(isinstance(v, str) for v in schema.get("enum", ())):
        return False
    properties = schema.get("properties", {})
    if not isinstance(properties, dict) or (kind == "object" and not properties):
        return False
    children = [*properties.values(), *(schema.get("anyOf") or ())]
    if "items" in schema:
        children.append(schema["items"])
    return all(_is_openapi_schema(child) for child in children)


def _calling_config(choice: Any) -> dict[str, Any]:
    if isinstance(choice, str) and choice in TOOL_CHOICE_MODES:
        return {"mode": TOOL_CHOICE_MODES[choice]}
    if isinstance(choice, dict):
        return {"mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}
    raise InvalidRequest("tool_choice must be auto, none, required or a named function", param="tool_choice")


def _generation_config(body: Mapping[str, Any]) -> dict[str, Any]:
    config = {dst: body[src] for src, dst in GENERATION_FIELDS if body.get(src) is not None}
    if max_tokens(body) is not None:
        config["maxOutputTokens"] = max_tokens(body)
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    kind, schema = json_format(body)
    if kind:
        config["responseMimeType"] = "application/json"
    if schema is not None:
        config.update(_schema(schema, "responseSchema", "responseJsonSchema"))
    return config


# --- response ---------------------------------------------------------------------------------


def from_gemini_response(data: Any, model_name: str) -> dict[str, Any]:
    """Gemini `GenerateContentResponse` -> OpenAI chat.completion. Raises ProxyError."""
    _raise_for_answer(data, model_name)
    candidates = data.get("candidates")
    if not candidates:
        raise UpstreamError(f"Upstream for model {model_name} sent an answer without candidates")
    answer = Answer(_completion_id(data), optional_text(data.get("modelVersion"), "modelVersion"))
    for i, candidate in enumerate(candidates):
        output = answer.choice(candidate.get("index", i))
        _read_parts(candidate, output)
        output.finish_reason = _finish_reason(candidate.get("finishReason"), bool(output.calls))
    answer.usage = _usage(data.get("usageMetadata"))
    return answer.body()


def _raise_for_answer(data: Mapping[str, Any], model_name: str) -> None:
    """A 200 answer can still carry an error (mid-stream) or a prompt blocked by safety filters."""
    error = data.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        raise _api_error(code if isinstance(code, int) and code >= 400 else 502, error, {}, model_name)
    block = (data.get("promptFeedback") or {}).get("blockReason")
    if block and not data.get("candidates"):
        raise InvalidRequest(
            f"The prompt was blocked by the safety filters of model {model_name} ({block})",
            code="content_filter",
        )


def _read_parts(candidate: Mapping[str, Any], output: Output) -> None:
    """A candidate's parts -> answer text, thought text and OpenAI tool calls of `output`."""
    for part in (candidate.get("content") or {}).get("parts") or ():
        if "functionCall" in part:
            output.add_tool_call(_tool_call(part))
        elif part.get("thought"):
            output.add_reasoning(part.get("text"))
        else:
            output.add_text(part.get("text"))


def _tool_call(part: Mapping[str, Any]) -> dict[str, Any]:
    """A functionCall part -> an OpenAI tool call; its thought signature rides along as Google's
    OpenAI-compatible endpoint carries it (`extra_content.google.thought_signature`)."""
    call = part["functionCall"]
    signature = part.get("thoughtSignature")
    extra = {"extra_content": {"google": {"thought_signature": signature}}} if signature else {}
    return tool_call(call.get("name"), expect(call.get("args") or {}, dict, "args"), call.get("id"), **extra)


def _finish_reason(reason: str | None, has_calls: bool) -> str | None:
    """Gemini says STOP after function calls too; OpenAI clients expect "tool_calls"."""
    if not reason:
        return None
    mapped = FINISH_REASONS.get(reason, "stop")
    return "tool_calls" if has_calls and mapped == "stop" else mapped


def _completion_id(data: Mapping[str, Any]) -> str | None:
    response_id = optional_text(data.get("responseId"), "responseId")
    return f"chatcmpl-{response_id}" if response_id else None


def _usage(meta: Any) -> dict[str, Any] | None:
    """usageMetadata -> OpenAI usage; thought tokens count as completion (reasoning) tokens."""
    if not isinstance(meta, dict):
        return None
    thoughts = meta.get("thoughtsTokenCount")
    return usage(
        count(meta.get("promptTokenCount")) + count(meta.get("toolUsePromptTokenCount")),
        count(meta.get("candidatesTokenCount")) + count(thoughts),
        cached=meta.get("cachedContentTokenCount"),
        reasoning=thoughts,
        total=meta.get("totalTokenCount"),
    )


# --- stream -----------------------------------------------------------------------------------


def gemini_stream_to_chunks(events: Iterable[SSEEvent], model_name: str) -> Iterator[dict[str, Any]]:
    """Gemini SSE events -> OpenAI chunks, then one usage chunk.

    Gemini has no end marker: the stream is complete when every candidate has sent a finishReason.
    """
    writer: ChunkWriter | None = None
    call_counts: dict[int, int] = {}  # candidate -> tool calls sent so far (OpenAI's tool_call index)
    counts = None
    for event in events:
        data = orjson.loads(event.data)
        _raise_for_answer(data, model_name)
        if writer is None:
            model = optional_text(data.get("modelVersion"), "modelVersion")
            writer = ChunkWriter(_completion_id(data), model)
        counts = _usage(data.get("usageMetadata")) or counts
        for i, candidate in enumerate(data.get("candidates") or ()):
            index = expect(candidate.get("index", i), int, "candidate index")
            output = Output()
            _read_parts(candidate, output)
            delta: dict[str, Any] = {}
            if output.text:
                delta["content"] = output.text
            if output.reasoning:
                delta["reasoning_content"] = output.reasoning
            calls = output.tool_calls
            if calls:
                first = call_counts.get(index, 0)
                delta["tool_calls"] = [{"index": first + k, **call} for k, call in enumerate(calls)]
                call_counts[index] = first + len(calls)
            reason = _finish_reason(candidate.get("finishReason"), index in call_counts)
            if delta or reason:
                yield writer.delta(delta, reason, index)
    if writer is None or not writer.complete:
        raise incomplete_stream(model_name)
    if counts:
        yield writer.usage(counts)


# --- errors -----------------------------------------------------------------------------------


def gemini_error(
    status: int, body: bytes, headers: Mapping[str, str], model_name: str, now: float | None = None
) -> ProxyError:
    """Gemini's `{"error": {code, message, status, details[]}}` (also list-wrapped) -> our error."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, list) and data:
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return error_for_status(status, openai_error_message(body), model_name, headers)
    return _api_error(status, error, headers, model_name, now)


def _api_error(
    status: int,
    error: Mapping[str, Any],
    headers: Mapping[str, str],
    model_name: str,
    now: float | None = None,
) -> ProxyError:
    message = str(error.get("message") or "")
    details = [d for d in error.get("details") or () if isinstance(d, dict)]
    if any(str(d.get("reason", "")).startswith("API_KEY_") for d in details):
        status = 401  # Gemini answers a bad or blocked key with 400 INVALID_ARGUMENT
    elif error.get("status") == "FAILED_PRECONDITION":
        # e.g. "User location is not supported": the proxy's problem, another model may serve
        return UpstreamError(f"Upstream for model {model_name} refused to serve: {message}")
    cooldown = key_cooldown(status, details, message, now)
    retry_after = cooldown.seconds if cooldown is not None and status == 429 else None
    return error_for_status(status, message, model_name, headers, retry_after=retry_after, cooldown=cooldown)


def key_cooldown(
    status: int, details: list[dict[str, Any]], message: str, now: float | None = None
) -> Cooldown | None:
    """The key's cooldown class from a Gemini error (`status` already 401 for an API_KEY_* reason):
    a QuotaFailure with `limit: 0` means this key's project may not use the model, a `PerDay` quota
    id the day's quota (until Pacific midnight), any other 429 a rate (RetryInfo's delay)."""
    if status in (401, 403):
        return Cooldown(AUTH, None, f"upstream {status}: API key invalid, blocked or missing")
    if status != 429:
        return None
    violations = [v for d in details for v in d.get("violations") or () if isinstance(v, dict)]
    if _LIMIT_ZERO.search(message) or any(str(v.get("quotaValue")) == "0" for v in violations):
        return Cooldown(UNAVAILABLE, None, "upstream 429 with limit 0: no quota for this model on this key")
    if any("PerDay" in str(v.get("quotaId", "")) for v in violations):
        reset = seconds_until_midnight(_pacific(), now)
        return Cooldown(DAILY, reset, "upstream 429: the day's quota is spent")
    return Cooldown(RATE, _retry_after(details, message), "upstream 429: rate limited")


def _retry_after(details: list[dict[str, Any]], message: str) -> float | None:
    """Seconds to wait: RetryInfo's `retryDelay` ("14s", "1.5s"), else "Please retry in 14.9s." in
    the message (a daily quota's wait is decided in key_cooldown: RetryInfo is useless there)."""
    for detail in details:
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(float(delay[:-1]), 0.0)
            except ValueError:
                pass
    match = _RETRY_IN.search(message)
    return float(match.group(1)) if match else None


def _pacific() -> tzinfo:
    """Gemini's daily quotas reset at midnight Pacific time."""
    try:
        return ZoneInfo("America/Los_Angeles")
    except ZoneInfoNotFoundError:  # no tz database: standard time is close enough
        return timezone(timedelta(hours=-8))


# --- adapter ----------------------------------------------------------------------------------


def model_url(model: ModelConfig) -> str:
    """The model's own url, `{url}/{model}`, to which a method (`:generateContent`, …) is added."""
    return f"{model.url.rstrip('/')}/{model.upstream_model.removeprefix('models/')}"


def key_headers(model: ModelConfig) -> dict[str, str]:
    """JSON request headers with the model's extra headers and its key in `x-goog-api-key`."""
    headers = {"Content-Type": "application/json", **model.headers}
    if model.token:
        headers["x-goog-api-key"] = model.token
    return headers


class Gemini(HttpProvider):
    """A Gemini model on AI Studio; `url` is the `.../v1beta/models` base."""

    def __init__(self, model: ModelConfig, sessions: SessionPool, http: HttpConfig) -> None:
        super().__init__(model, sessions, http)
        base = model_url(model)
        self._url = f"{base}:generateContent"
        self._stream_url = f"{base}:streamGenerateContent?alt=sse"
        self._headers = key_headers(model)
        self._stream_headers = {**self._headers, "Accept": "text/event-stream"}
        upstream = model.upstream_model.removeprefix("models/")
        self._signature_fallback = DUMMY_THOUGHT_SIGNATURE if upstream.startswith("gemini-3") else None

    def build_request(self, body: dict[str, Any], stream: bool) -> UpstreamRequest:
        payload = to_gemini_request(body, thought_signature_fallback=self._signature_fallback)
        if stream:
            return UpstreamRequest(self._stream_url, orjson.dumps(payload), self._stream_headers)
        return UpstreamRequest(self._url, orjson.dumps(payload), self._headers)

    def parse_response(self, data: Any) -> dict[str, Any]:
        return from_gemini_response(data, self.model.name)

    def parse_stream(self, events: Iterable[SSEEvent]) -> Iterator[dict[str, Any]]:
        return gemini_stream_to_chunks(events, self.model.name)

    def parse_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProxyError:
        return gemini_error(status, body, headers, self.model.name)
