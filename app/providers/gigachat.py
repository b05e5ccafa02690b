"""Sber GigaChat's v1 chat API over the shared transport, with an OAuth token cache of our own.

Why not the official `gigachat` SDK (0.2.3, the newest release): its client cannot be shared by the
worker's threads through its public interface. After a 401 it drops the cached token unconditionally
and outside its lock, so N requests failing together wipe each other's fresh tokens (up to N OAuth
calls), and its `token` property can read a token another thread is resetting; the only fixes go
through its private `_reset_token` / `_access_token`. Its transport is closed too: one timeout for
plain calls and streams, no proxy setting, no bound on an answer's size and no public way to wake a
stream read blocked in another thread. So GigaChat is spoken here like every other upstream, through
`app/http.py` (same pools, timeouts, caps, TLS and proxy settings), and `AccessToken` does what the
SDK's token handling did, thread-safely: one OAuth call however many threads need a token, a new one
60 s before expiry, and after a 401 one refresh (only if the rejected token is still the current one,
so 20 concurrent 401s cause exactly one) and one retry.

Pure translations (no I/O): `build_payload` (OpenAI request -> GigaChat v1 chat), `parse_completion`
(answer -> chat.completion), `parse_chunks` (SSE events -> OpenAI chunks), `parse_token` (OAuth answer)
and `error_message`. Any exception while translating an answer or an event becomes a retryable
UpstreamError naming the model; every error message and log line is redacted of the credentials and
of the access tokens the provider holds.

What is translated:
  - messages: system/developer (leading ones merged into the one system message GigaChat allows
    first; later ones become user messages), user, assistant (text parts joined), assistant
    `tool_calls` -> assistant `function_call` (one per message: parallel calls are split into
    call/result pairs), `tool` -> `function` role named after its call, result wrapped into a JSON
    object when it is not one; legacy `functions` / `function_call` / `function` role too;
  - `tools` -> `functions` (JSON Schema sent verbatim), `tool_choice` auto/none/named -> `function_call`
    ("required" becomes the named function when there is exactly one tool, else auto);
  - `temperature` (0 becomes a tiny positive value), `top_p`, `max_tokens` / `max_completion_tokens`,
    `n`, `repetition_penalty`, `reasoning_effort` (low/medium/high), `response_format` json_schema;
  - answers: content, `reasoning_content`, `function_call` -> one `tool_calls` entry whose id is
    GigaChat's `functions_state_id` (echoed back on the next turn), usage with cached tokens,
    finish reasons stop/length/function_call->tool_calls/blacklist->content_filter; `error` fails.
Not translated: image/audio/file content parts (400), `stop`, `logprobs`, `seed`, penalties other
than repetition_penalty, `response_format` json_object, `parallel_tool_calls`, `user`.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import orjson

from app.config import HttpConfig, ModelConfig
from app.errors import InvalidRequest, ProxyError, RateLimited, UpstreamAuthError, UpstreamError
from app.http import SessionPool, send
from app.providers.base import (
    MAX_ERROR_BODY,
    ChunkStream,
    Completion,
    HttpProvider,
    UpstreamRequest,
    error_for_status,
)
from app.redact import redact
from app.sse import SSEEvent

log = logging.getLogger("ai_proxy.providers.gigachat")

AUTH_URL = "https://ngw.devices.sberbank.ru:9443/api/v2/oauth"
DEFAULT_SCOPE = "GIGACHAT_API_PERS"
REFRESH_AHEAD = 60.0  # seconds before expiry when a token is replaced (as the SDK does)
MIN_TEMPERATURE = 1e-6  # GigaChat wants temperature > 0; this is greedy for every practical purpose
REASONING_EFFORTS = ("low", "medium", "high")
FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "function_call": "tool_calls",
    "blacklist": "content_filter",
}
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


# --- OpenAI request -> GigaChat -----------------------------------------------------------------


def authorization_key(token: str) -> str:
    """GigaChat's base64 authorization key, from `client_id:client_secret` or from the key itself."""
    token = token.strip()
    if token.lower().startswith("basic "):
        token = token[6:].strip()
    if ":" in token:  # base64 has no ':', so this is the raw id:secret pair
        return base64.b64encode(token.encode()).decode()
    return token


def build_payload(body: dict[str, Any], upstream_model: str, stream: bool) -> dict[str, Any]:
    """The GigaChat v1 chat request for an OpenAI request (function schemas are sent verbatim)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list", param="messages")
    chat: dict[str, Any] = {"model": upstream_model, "messages": build_messages(messages)}
    if stream:
        chat["stream"] = True

    temperature = _number(body, "temperature")
    if temperature is not None:
        chat["temperature"] = max(temperature, MIN_TEMPERATURE)
    for name in ("top_p", "repetition_penalty"):
        value = _number(body, name)
        if value is not None:
            chat[name] = value
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise InvalidRequest("'max_tokens' must be a positive integer", param="max_tokens")
        chat["max_tokens"] = max_tokens
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        chat["n"] = n
    effort = body.get("reasoning_effort")
    if effort in REASONING_EFFORTS:
        chat["reasoning_effort"] = effort
    response_format = _response_format(body.get("response_format"))
    if response_format is not None:
        chat["response_format"] = response_format

    functions = build_functions(body)
    if functions:
        chat["functions"] = functions
        choice = body.get("tool_choice", body.get("function_call"))
        chat["function_call"] = function_call_for(choice, functions)
    return chat


def build_messages(messages: list[Any]) -> list[dict[str, Any]]:
    """OpenAI messages -> GigaChat messages (see the module docstring for the rules)."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}  # tool_call id -> function name
    held: dict[str, dict[str, Any]] = {}  # 2nd+ parallel calls, emitted right before their results
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(f"messages[{index}] must be an object", param="messages")
        role = message.get("role")
        if role in ("system", "developer"):
            text = _text(message.get("content"), index)
            if out:
                out.append({"role": "user", "content": text})
            else:
                system.append(text)
        elif role == "user":
            out.append({"role": "user", "content": _text(message.get("content"), index)})
        elif role == "assistant":
            text = _text(message.get("content"), index)
            calls = _assistant_calls(message, index)
            if not calls:
                out.append({"role": "assistant", "content": text})
                continue
            for position, (call_id, name, arguments) in enumerate(calls):
                call_names[call_id] = name
                item: dict[str, Any] = {
                    "role": "assistant",
                    "content": text if position == 0 else "",
                    "function_call": {"name": name, "arguments": arguments},
                }
                if _UUID.fullmatch(call_id):
                    item["functions_state_id"] = call_id
                if position == 0:
                    out.append(item)
                else:
                    held[call_id] = item
        elif role in ("tool", "function"):
            call_id = str(message.get("tool_call_id") or "")
            if call_id in held:
                out.append(held.pop(call_id))
            name = message.get("name") if role == "function" else None
            name = name or call_names.get(call_id) or message.get("name")
            if not name:
                raise InvalidRequest(
                    f"messages[{index}]: a tool result must answer a tool call of an earlier message",
                    param="messages",
                )
            content = _function_result(_text(message.get("content"), index))
            out.append({"role": "function", "name": str(name), "content": content})
        else:
            raise InvalidRequest(f"messages[{index}]: unsupported role {role!r}", param="messages")
    out.extend(held.values())  # calls never answered: keep them, in order
    if system:
        out.insert(0, {"role": "system", "content": "\n\n".join(system)})
    return out


def build_functions(body: dict[str, Any]) -> list[dict[str, Any]]:
    """OpenAI `tools` (or legacy `functions`) -> GigaChat function definitions."""
    definitions: list[Any] = []
    tools = body.get("tools")
    if isinstance(tools, list):
        definitions = [
            t.get("function") for t in tools if isinstance(t, dict) and t.get("type") == "function"
        ]
    elif isinstance(body.get("functions"), list):
        definitions = body["functions"]
    out = []
    for definition in definitions:
        if not isinstance(definition, dict) or not definition.get("name"):
            raise InvalidRequest("every function tool needs a name", param="tools")
        function: dict[str, Any] = {"name": definition["name"]}
        if definition.get("description"):
            function["description"] = definition["description"]
        parameters = definition.get("parameters")
        function["parameters"] = (
            parameters if isinstance(parameters, dict) else {"type": "object", "properties": {}}
        )
        for extra in ("few_shot_examples", "return_parameters"):  # GigaChat's own, if a client sends them
            if definition.get(extra):
                function[extra] = definition[extra]
        out.append(function)
    return out


def function_call_for(choice: Any, functions: list[dict[str, Any]]) -> str | dict[str, str]:
    """OpenAI `tool_choice` -> GigaChat `function_call` ("auto", "none" or {"name": ...})."""
    if choice in (None, "auto"):
        return "auto"
    if choice == "none":
        return "none"
    if choice == "required":
        return {"name": functions[0]["name"]} if len(functions) == 1 else "auto"
    if isinstance(choice, dict):
        function = choice.get("function", choice)
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            if not any(f["name"] == name for f in functions):
                raise InvalidRequest(f"tool_choice names an unknown function {name!r}", param="tool_choice")
            return {"name": str(name)}
    raise InvalidRequest("unsupported tool_choice", param="tool_choice")


def _assistant_calls(message: dict[str, Any], index: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(id, name, arguments object) of an assistant message's tool calls (or legacy function_call)."""
    raw: list[tuple[str, Any]] = []
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        for call in tool_calls:
            if isinstance(call, dict):
                raw.append((str(call.get("id") or ""), call.get("function")))
    elif isinstance(message.get("function_call"), dict):
        raw.append(("", message["function_call"]))
    calls = []
    for call_id, function in raw:
        if not isinstance(function, dict) or not function.get("name"):
            raise InvalidRequest(f"messages[{index}]: a tool call needs a function name", param="messages")
        calls.append((call_id, str(function["name"]), _arguments(function.get("arguments"), index)))
    return calls


def _arguments(value: Any, index: int) -> dict[str, Any]:
    """OpenAI's JSON-string arguments -> GigaChat's arguments object."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise InvalidRequest(
            f"messages[{index}]: tool call arguments must be a JSON object", param="messages"
        )
    return parsed


def _function_result(text: str) -> str:
    """GigaChat wants a function result as a serialised JSON object: wrap anything else."""
    try:
        parsed = json.loads(text)
    except ValueError:
        return json.dumps({"result": text}, ensure_ascii=False)
    if isinstance(parsed, dict):
        return text
    return json.dumps({"result": parsed}, ensure_ascii=False)


def _text(content: Any, index: int) -> str:
    """A message's text: a string, or its text parts joined; other parts are refused."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") in ("text", "refusal"):
                texts.append(str(part.get("text") or part.get("refusal") or ""))
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise InvalidRequest(
                    f"messages[{index}]: GigaChat models here accept text only, not {kind!r} parts",
                    param="messages",
                )
        return "".join(texts)
    raise InvalidRequest(f"messages[{index}]: content must be a string or a list of parts", param="messages")


def _number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"'{name}' must be a number", param=name)
    return float(value)


def _response_format(value: Any) -> dict[str, Any] | None:
    """OpenAI json_schema response_format -> GigaChat's (beta) one; other kinds are not sent."""
    if not isinstance(value, dict) or value.get("type") != "json_schema":
        return None
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        return None
    out: dict[str, Any] = {"type": "json_schema", "schema": spec["schema"]}
    if isinstance(spec.get("strict"), bool):
        out["strict"] = spec["strict"]
    return out


# --- GigaChat answer -> OpenAI ------------------------------------------------------------------


class Malformed(ValueError):
    """A field of an upstream answer is missing or of the wrong type (names the field)."""


def _get(obj: Mapping[str, Any], name: str, kind: type | tuple[type, ...], required: bool = False) -> Any:
    """`obj[name]` when it is a `kind` (bool is no int); None when absent and not `required`."""
    value = obj.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        raise Malformed(name)
    return value


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def new_id(prefix: str = "chatcmpl-") -> str:
    return prefix + uuid.uuid4().hex


def map_finish_reason(reason: Any, model_name: str) -> str | None:
    if reason is None:
        return None
    if not isinstance(reason, str):
        raise Malformed("finish_reason")
    if reason == "error":
        raise UpstreamError(f"Upstream for model {model_name} failed while generating the answer")
    return FINISH_REASONS.get(reason, "stop")


def map_usage(usage: Any) -> dict[str, Any] | None:
    """GigaChat usage -> OpenAI usage; counts must be non-negative integers."""
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise Malformed("usage")
    counts = {}
    for name in ("prompt_tokens", "completion_tokens", "total_tokens", "precached_prompt_tokens"):
        value = _get(usage, name, int)
        if value is not None and value < 0:
            raise Malformed(f"usage.{name}")
        counts[name] = value
    prompt, completion = counts["prompt_tokens"] or 0, counts["completion_tokens"] or 0
    total = counts["total_tokens"]
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion if total is None else total,
    }
    if counts["precached_prompt_tokens"] is not None:
        out["prompt_tokens_details"] = {"cached_tokens": counts["precached_prompt_tokens"]}
    return out


def tool_call(function_call: dict[str, Any], state_id: Any) -> dict[str, Any]:
    """GigaChat `function_call` (arguments object) -> one OpenAI tool call (arguments string)."""
    name = _get(function_call, "name", str, required=True)
    arguments = _get(function_call, "arguments", (dict, str))
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
    if state_id is not None and not isinstance(state_id, str):
        raise Malformed("functions_state_id")
    return {
        "id": state_id or new_id("call_"),
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def _message_fields(message: dict[str, Any], first: bool) -> dict[str, Any]:
    """The OpenAI fields of a GigaChat message or delta: content, reasoning, one tool call."""
    out: dict[str, Any] = {}
    content = _get(message, "content", str)
    function_call = _get(message, "function_call", dict)
    if function_call is not None:
        out["content"] = content or None
        out["tool_calls"] = [tool_call(function_call, message.get("functions_state_id"))]
    elif content or first:
        out["content"] = content or ""
    reasoning = _get(message, "reasoning_content", str)
    if reasoning:
        out["reasoning_content"] = reasoning
    return out


def _created(data: dict[str, Any]) -> int:
    created = _get(data, "created", (int, float))
    return int(created) if created else int(time.time())


def _upstream_failure(data: dict[str, Any], model_name: str, what: str) -> UpstreamError | None:
    """GigaChat's error shape (`{"status"|"code": ..., "message": ...}`) inside a 200, if it is one."""
    message = data.get("message")
    if "choices" in data or not isinstance(message, str):
        return None
    return UpstreamError(f"Upstream {what} for model {model_name} failed: {message[:300]}")


def parse_completion(data: Any, model_name: str) -> dict[str, Any]:
    """A GigaChat v1 answer -> an OpenAI chat.completion. Raises Malformed on a bad shape."""
    if not isinstance(data, dict):
        raise Malformed("answer")
    failure = _upstream_failure(data, model_name, "answer")
    if failure is not None:
        raise failure
    choices_in = _get(data, "choices", list, required=True)
    if not choices_in:
        raise UpstreamError(f"Upstream for model {model_name} sent an answer without choices")
    choices = []
    for position, choice in enumerate(choices_in):
        if not isinstance(choice, dict):
            raise Malformed("choices[]")
        message = _get(choice, "message", dict, required=True)
        index = _get(choice, "index", int)
        fields = _message_fields(message, first=True)
        choices.append(
            {
                "index": position if index is None else index,
                "message": {"role": "assistant", **fields},
                "finish_reason": map_finish_reason(choice.get("finish_reason"), model_name) or "stop",
                "logprobs": None,
            }
        )
    answer: dict[str, Any] = {
        "id": new_id(),
        "object": "chat.completion",
        "created": _created(data),
        "model": _get(data, "model", str) or "",
        "choices": choices,
    }
    usage = map_usage(data.get("usage"))
    if usage is not None:
        answer["usage"] = usage
    return answer


class StreamTranslator:
    """GigaChat stream chunks -> OpenAI chunks, for one stream (ids, role on each choice's first
    delta, completeness). Built-in tools' `function_in_progress` progress texts are not passed on."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.id = new_id()
        self.started: set[int] = set()
        self.finished: set[int] = set()
        self.usage: dict[str, Any] | None = None
        self.created = 0
        self.model = ""

    def chunk(self, data: Any) -> dict[str, Any] | None:
        """One upstream chunk -> an OpenAI chunk, or None when nothing in it is for the client."""
        if not isinstance(data, dict):
            raise Malformed("event")
        failure = _upstream_failure(data, self.model_name, "stream")
        if failure is not None:
            raise failure
        self.created = _created(data)
        self.model = _get(data, "model", str) or self.model
        usage = map_usage(data.get("usage"))
        if usage is not None:
            self.usage = usage
        choices = []
        for choice in _get(data, "choices", list, required=True):
            if not isinstance(choice, dict):
                raise Malformed("choices[]")
            index = _get(choice, "index", int) or 0
            delta = _get(choice, "delta", dict) or {}
            finish = map_finish_reason(choice.get("finish_reason"), self.model_name)
            out: dict[str, Any] = {}
            if _get(delta, "role", str) in (None, "assistant"):
                out = _message_fields(delta, first=index not in self.started)
                if index not in self.started:
                    self.started.add(index)
                    out = {"role": "assistant", **out}
                if out.get("content") is None and "tool_calls" in out:
                    del out["content"]
                if "tool_calls" in out:
                    out["tool_calls"] = [{"index": 0, **out["tool_calls"][0]}]
            if finish is not None:
                self.finished.add(index)
            if out or finish is not None:
                choices.append({"index": index, "delta": out, "finish_reason": finish, "logprobs": None})
        if not choices:
            return None
        return self._chunk(choices)

    def end(self) -> Iterator[dict[str, Any]]:
        """The usage chunk, once the stream ended; UpstreamError if a choice never finished."""
        if not self.finished or not self.started <= self.finished:
            raise UpstreamError(f"Upstream stream for model {self.model_name} ended before it was complete")
        if self.usage is not None:
            yield {**self._chunk([]), "usage": self.usage}

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created or int(time.time()),
            "model": self.model,
            "choices": choices,
        }


def parse_chunks(events: Iterable[SSEEvent], model_name: str) -> Iterator[dict[str, Any]]:
    """GigaChat's `data:` events -> OpenAI chunks, ending with the usage chunk.

    Reading `events` may raise transport errors, which pass through; anything that goes wrong while
    translating an event is an UpstreamError naming the model."""
    translator = StreamTranslator(model_name)
    for event in events:
        if event.data == b"[DONE]":
            break
        try:
            out = translator.chunk(orjson.loads(event.data))
        except ProxyError:
            raise
        except Exception as exc:  # the error boundary: no raw exception leaves a translation
            raise malformed(model_name, exc, "stream event") from None
        if out is not None:
            yield out
    yield from translator.end()


def malformed(model_name: str, exc: BaseException, what: str = "answer") -> UpstreamError:
    """The typed error for an answer or event that could not be translated."""
    where = f" ({exc})" if isinstance(exc, Malformed) else ""
    return UpstreamError(f"Upstream for model {model_name} sent a malformed {what}{where}")


def parse_token(data: Any) -> tuple[str, float]:
    """GigaChat's OAuth answer `{"access_token", "expires_at"}` -> (token, expiry as Unix seconds).

    `expires_at` is in milliseconds; a value too small for that is read as seconds."""
    if not isinstance(data, dict):
        raise Malformed("OAuth answer")
    token = _get(data, "access_token", str, required=True)
    expires_at = _get(data, "expires_at", (int, float), required=True)
    if not token:
        raise Malformed("access_token")
    return token, expires_at / 1000.0 if expires_at > 1e11 else float(expires_at)


def error_message(content: bytes) -> str:
    """`message` of GigaChat's `{"status"|"code": ..., "message": ...}` error bodies."""
    if not content:
        return ""
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        return content[:300].decode("utf-8", "replace").strip()
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return data["message"][:300]
    return ""


# --- OAuth token and transport ------------------------------------------------------------------


class AccessToken:
    """One OAuth access token shared by every thread: fetched once however many threads ask, replaced
    `refresh_ahead` seconds before it expires, and dropped after a 401 only if it is still the one
    the rejected request sent (so a burst of 401s causes one new token, not one per request).

    Threads that waited while a fetch failed get that failure instead of trying again one after the
    other: an OAuth outage costs a burst one timeout, not one per thread."""

    def __init__(
        self,
        fetch: Callable[[], tuple[str, float]],
        clock: Callable[[], float] = time.time,
        refresh_ahead: float = REFRESH_AHEAD,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._refresh_ahead = refresh_ahead
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self._attempts = 0  # fetches tried so far
        self._failure: ProxyError | None = None  # how the last one failed, if it did
        self.recent: tuple[str, ...] = ()  # the current and the previous token, for redaction

    def get(self) -> str:
        attempts = self._attempts
        with self._lock:
            if self._token is not None and self._expires_at - self._refresh_ahead > self._clock():
                return self._token
            if self._failure is not None and self._attempts != attempts:
                raise copy.copy(self._failure) from None  # failed while this thread waited
            self._attempts += 1
            try:
                self._token, self._expires_at = self._fetch()
            except ProxyError as exc:
                self._token, self._failure = None, exc
                raise
            self._failure = None
            self.recent = (self._token, *self.recent[:1])
            return self._token

    def reject(self, token: str) -> None:
        """The upstream refused `token`: the next `get` fetches a new one, unless one already did."""
        with self._lock:
            if self._token == token:
                self._token = None


class GigaChat(HttpProvider):
    """One configured GigaChat model; its access token is shared by every thread."""

    def __init__(self, model: ModelConfig, sessions: SessionPool, http: HttpConfig) -> None:
        super().__init__(model, sessions, http)
        verify = model.verify_ssl_certs
        self.session = sessions.get(model.provider, None if verify is True else verify)
        self.url = model.url.rstrip("/") + "/chat/completions"
        self.auth_url = model.auth_url or AUTH_URL
        self.scope = model.scope or DEFAULT_SCOPE
        self._key = authorization_key(model.token)
        self.token = AccessToken(self.fetch_token)
        self._headers = {"Content-Type": "application/json", "Accept": "application/json", **model.headers}
        self._stream_headers = {**self._headers, "Accept": "text/event-stream", "Cache-Control": "no-store"}

    def secrets(self) -> tuple[str, ...]:
        """What must never appear in an error or a log line: credentials and recent access tokens."""
        return (self.model.token, self._key, *self.token.recent)

    def _redacted(self, exc: ProxyError) -> ProxyError:
        exc.message = redact(exc.message, self.secrets())
        exc.args = (exc.message,)
        return exc

    # --- OAuth ----------------------------------------------------------------------------------
    def fetch_token(self) -> tuple[str, float]:
        """A new access token from the OAuth endpoint: (token, expiry as Unix seconds)."""
        response = send(
            self.session,
            self.auth_url,
            data=f"scope={self.scope}".encode(),
            headers={
                "Authorization": f"Basic {self._key}",
                "RqUID": str(uuid.uuid4()),
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
            timeout=self._timeout,
            stream=False,
            model_name=self.model.name,
        )
        status, name = response.status_code, self.model.name
        if status >= 400:
            message = redact(error_message(response.content[:MAX_ERROR_BODY]), self.secrets())
            if status != 429 and status < 500:
                log.warning("GigaChat OAuth refused the credentials of %s: HTTP %s %s", name, status, message)
                raise UpstreamAuthError(f"The proxy's credentials for model {name} were rejected")
            raise error_for_status(status, message, name, response.headers)
        try:
            return parse_token(orjson.loads(response.content))
        except ValueError as exc:
            raise malformed(name, exc, "OAuth answer") from None

    # --- HttpProvider hooks ---------------------------------------------------------------------
    def build_request(self, body: dict[str, Any], stream: bool) -> UpstreamRequest:
        payload = orjson.dumps(build_payload(body, self.model.upstream_model, stream))
        headers = self._stream_headers if stream else self._headers
        return UpstreamRequest(self.url, payload, {**headers, "Authorization": f"Bearer {self.token.get()}"})

    def _post(self, request: UpstreamRequest, *, stream: bool) -> Any:
        """POST; after a 401, retry once with a new token (GigaChat's tokens live 30 minutes)."""
        response = super()._post(request, stream=stream)
        if response.status_code != 401:
            return response
        response.close()
        self.token.reject(request.headers["Authorization"].removeprefix("Bearer "))
        log.info("GigaChat rejected the access token of model %s: fetching a new one", self.model.name)
        retry = {**request.headers, "Authorization": f"Bearer {self.token.get()}"}
        return super()._post(UpstreamRequest(request.url, request.payload, retry), stream=stream)

    def parse_response(self, data: Any) -> dict[str, Any]:
        try:
            return parse_completion(data, self.model.name)
        except ProxyError:
            raise
        except Exception as exc:  # the error boundary: no raw exception leaves a translation
            raise malformed(self.model.name, exc) from None

    def parse_stream(self, events: Iterable[SSEEvent]) -> Iterator[dict[str, Any]]:
        return parse_chunks(events, self.model.name)

    def parse_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProxyError:
        message = redact(error_message(body), self.secrets())
        name = self.model.name
        if status in (401, 403):
            log.warning("GigaChat rejected the token of model %s: HTTP %s %s", name, status, message)
        if status == 402:
            return RateLimited(f"Model {name} has used up its token package upstream")
        if status == 404:
            return UpstreamError(f"Upstream for model {name} does not know it: {message or 'not found'}")
        return error_for_status(status, message, name, headers)

    # --- Provider: every error that leaves is redacted ------------------------------------------
    def complete(self, body: dict[str, Any]) -> Completion:
        try:
            return super().complete(body)
        except ProxyError as exc:
            raise self._redacted(exc) from None

    def stream(self, body: dict[str, Any]) -> ChunkStream:
        try:
            opened = super().stream(body)
        except ProxyError as exc:
            raise self._redacted(exc) from None
        return ChunkStream(self._redacting(iter(opened)), opened.headers, opened.close)

    def _redacting(self, chunks: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        try:
            yield from chunks
        except ProxyError as exc:
            raise self._redacted(exc) from None
        except Exception as exc:  # e.g. a read that another thread's close() broke off mid-way
            log.debug("GigaChat stream of model %s broke off: %s", self.model.name, type(exc).__name__)
            raise UpstreamError(f"Upstream stream for model {self.model.name} broke off") from None


__all__ = [
    "AccessToken",
    "GigaChat",
    "StreamTranslator",
    "authorization_key",
    "build_functions",
    "build_messages",
    "build_payload",
    "error_message",
    "function_call_for",
    "map_usage",
    "parse_chunks",
    "parse_completion",
    "parse_token",
]
