"""Sber GigaChat through the official `gigachat` SDK (sync client, v1 chat contract).

Pure translations (no I/O): `build_chat` (OpenAI request -> GigaChat `Chat` dict), `parse_completion`
(answer -> chat.completion), `stream_chunk` / `translate_stream` (stream chunks -> OpenAI chunks) and
`map_error` (SDK / httpx exception -> ProxyError). `GigaChat` holds ONE SDK client per model, shared
by every thread: the SDK fetches the OAuth token once under its lock, refreshes it 60 s before expiry
and, on a 401, re-authenticates once and retries the call.

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
import contextlib
import json
import logging
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from itertools import chain
from typing import Any

import httpx
import pydantic
from gigachat import GigaChatSyncClient
from gigachat.exceptions import GigaChatException, ResponseError
from gigachat.models.chat import Chat
from gigachat.settings import AUTH_URL

from app.config import HttpConfig, ModelConfig
from app.errors import (
    InvalidRequest,
    ProxyError,
    RateLimited,
    UpstreamAuthError,
    UpstreamError,
    UpstreamTimeout,
)
from app.http import SessionPool
from app.providers.base import ChunkStream, Completion, Provider, error_for_status, retry_after_seconds
from app.routing.cooldown import AUTH, CREDIT, UNAVAILABLE, Cooldown

log = logging.getLogger("ai_proxy.providers.gigachat")

DEFAULT_SCOPE = "GIGACHAT_API_PERS"
EVENT_STREAM = "text/event-stream"
MIN_TEMPERATURE = 1e-6  # GigaChat wants temperature > 0; this is greedy for every practical purpose
REASONING_EFFORTS = ("low", "medium", "high")
FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "function_call": "tool_calls",
    "blacklist": "content_filter",
}
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DUMP = {"mode": "json", "by_alias": True, "exclude_none": True, "exclude": {"x_headers"}}


# --- OpenAI request -> GigaChat Chat -----------------------------------------------------------


def sdk_credentials(token: str) -> str:
    """The SDK's `credentials` (base64 authorization key) from `client_id:client_secret` or the key."""
    token = token.strip()
    if token.lower().startswith("basic "):
        token = token[6:].strip()
    if ":" in token:  # base64 has no ':', so this is the raw id:secret pair
        return base64.b64encode(token.encode()).decode()
    return token


def build_chat(body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
    """The GigaChat v1 `Chat` payload (a dict for `Chat.model_validate`) for an OpenAI request.

    Function definitions travel in `additional_fields`, which the SDK merges into the JSON as they
    are: its own `Function` model drops JSON Schema keywords and rejects valid schemas.
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list", param="messages")
    chat: dict[str, Any] = {"model": upstream_model, "messages": build_messages(messages)}

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
        chat["additional_fields"] = {"functions": functions}
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
        name = (choice.get("function") or {}).get("name") if "function" in choice else choice.get("name")
        if name:
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


def new_id(prefix: str = "chatcmpl-") -> str:
    return prefix + uuid.uuid4().hex


def map_finish_reason(reason: str | None, model_name: str) -> str | None:
    if reason is None:
        return None
    if reason == "error":
        raise UpstreamError(f"Upstream for model {model_name} failed while generating the answer")
    return FINISH_REASONS.get(reason, "stop")


def map_usage(usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    out = {
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "completion_tokens": int(usage.get("completion_tokens") or 0),
        "total_tokens": int(usage.get("total_tokens") or 0),
    }
    cached = usage.get("precached_prompt_tokens")
    if isinstance(cached, int):
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def tool_call(function_call: dict[str, Any], state_id: str | None) -> dict[str, Any]:
    """GigaChat `function_call` (arguments object) -> one OpenAI tool call (arguments string)."""
    arguments = function_call.get("arguments")
    return {
        "id": state_id or new_id("call_"),
        "type": "function",
        "function": {
            "name": function_call.get("name") or "",
            "arguments": json.dumps(arguments if arguments is not None else {}, ensure_ascii=False),
        },
    }


def parse_completion(data: Any, model_name: str) -> dict[str, Any]:
    """A GigaChat v1 answer (JSON shape) -> an OpenAI chat.completion."""
    choices_in = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices_in, list) or not choices_in:
        raise UpstreamError(f"Upstream for model {model_name} sent an answer without choices")
    choices = []
    for position, choice in enumerate(choices_in):
        message = choice.get("message") or {}
        out: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
        function_call = message.get("function_call")
        if isinstance(function_call, dict):
            out["content"] = message.get("content") or None
            out["tool_calls"] = [tool_call(function_call, message.get("functions_state_id"))]
        if message.get("reasoning_content"):
            out["reasoning_content"] = message["reasoning_content"]
        choices.append(
            {
                "index": choice.get("index", position),
                "message": out,
                "finish_reason": map_finish_reason(choice.get("finish_reason"), model_name) or "stop",
                "logprobs": None,
            }
        )
    answer: dict[str, Any] = {
        "id": new_id(),
        "object": "chat.completion",
        "created": int(data.get("created") or time.time()),
        "model": data.get("model") or "",
        "choices": choices,
    }
    usage = map_usage(data.get("usage"))
    if usage is not None:
        answer["usage"] = usage
    return answer


def stream_chunk(
    chunk: dict[str, Any], stream_id: str, started: set[int], model_name: str
) -> dict[str, Any] | None:
    """One GigaChat stream chunk -> an OpenAI chunk (None when nothing in it is for the client).

    `started` holds the choice indexes that already got their `role: assistant` delta. Built-in tools'
    `function_in_progress` progress texts are not passed on.
    """
    choices = []
    for choice in chunk.get("choices") or ():
        index = choice.get("index", 0)
        delta = choice.get("delta") or {}
        finish = map_finish_reason(choice.get("finish_reason"), model_name)
        role = delta.get("role")
        out: dict[str, Any] = {}
        if role in (None, "assistant"):
            function_call = delta.get("function_call")
            content = delta.get("content")
            if index not in started:
                started.add(index)
                out["role"] = "assistant"
                if not isinstance(function_call, dict):
                    out["content"] = content or ""
            if content and "content" not in out:
                out["content"] = content
            if delta.get("reasoning_content"):
                out["reasoning_content"] = delta["reasoning_content"]
            if isinstance(function_call, dict):
                call = tool_call(function_call, delta.get("functions_state_id"))
                out["tool_calls"] = [{"index": 0, **call}]
        if not out and finish is None:
            continue
        choices.append({"index": index, "delta": out, "finish_reason": finish, "logprobs": None})
    if not choices:
        return None
    return {
        "id": stream_id,
        "object": "chat.completion.chunk",
        "created": int(chunk.get("created") or time.time()),
        "model": chunk.get("model") or "",
        "choices": choices,
    }


def translate_stream(chunks: Iterable[dict[str, Any]], model_name: str) -> Iterator[dict[str, Any]]:
    """GigaChat stream chunks (JSON shape) -> OpenAI chunks, ending with a usage chunk.

    The SDK swallows `data: [DONE]`, so the end marker is a finish_reason: a stream that ends without
    one raises UpstreamError.
    """
    stream_id = new_id()
    started: set[int] = set()
    finished = False
    usage = None
    created, model = 0, ""
    for chunk in chunks:
        created, model = chunk.get("created") or created, chunk.get("model") or model
        if chunk.get("usage"):
            usage = map_usage(chunk["usage"])
        out = stream_chunk(chunk, stream_id, started, model_name)
        if out is None:
            continue
        if any(c["finish_reason"] for c in out["choices"]):
            finished = True
        yield out
    if not finished:
        raise UpstreamError(f"Upstream stream for model {model_name} ended before it was complete")
    if usage is not None:
        yield {
            "id": stream_id,
            "object": "chat.completion.chunk",
            "created": int(created or time.time()),
            "model": model,
            "choices": [],
            "usage": usage,
        }


# --- errors -------------------------------------------------------------------------------------


def error_message(content: bytes | None) -> str:
    """`message` of GigaChat's `{"status"|"code": ..., "message": ...}` error bodies."""
    if not content:
        return ""
    try:
        data = json.loads(content)
    except ValueError:
        return content[:300].decode("utf-8", "replace").strip()
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])
    return ""


def map_error(
    exc: BaseException, model_name: str, auth_url: str = "", secrets: Iterable[str] = ()
) -> ProxyError:
    """An SDK / httpx / parsing exception -> our error, its text free of URLs and credentials."""
    if isinstance(exc, ProxyError):
        return exc
    if isinstance(exc, ResponseError):
        status = exc.status_code
        message = _redact(error_message(exc.content), secrets)
        headers: Mapping[str, str] = exc.headers if exc.headers is not None else {}
        if auth_url and _same_url(exc.url, auth_url) and status != 429 and status < 500:
            log.warning(
                "GigaChat OAuth refused model %s's credentials: HTTP %s %s", model_name, status, message
            )
            refused = UpstreamAuthError(f"The proxy's credentials for model {model_name} were rejected")
            refused.cooldown = Cooldown(AUTH, None, f"GigaChat OAuth {status}: credentials rejected")
            return refused
        if status == 402:
            spent = RateLimited(f"Model {model_name} has used up its token package upstream")
            spent.cooldown = Cooldown(CREDIT, None, "upstream 402: the token package is used up")
            return spent
        if status == 404:
            return UpstreamError(
                f"Upstream for model {model_name} does not know it: {message or 'not found'}"
            )
        if status == 429:
            return RateLimited(
                f"Model {model_name} is rate limited upstream" + (f": {message}" if message else ""),
                retry_after=retry_after_seconds(headers),
            )
        if status in (401, 403):
            log.warning("GigaChat rejected the token of model %s: HTTP %s %s", model_name, status, message)
        if status == 403:  # the token is good (401 otherwise) but its scope does not cover this model
            denied = Cooldown(UNAVAILABLE, None, "upstream 403: this key's scope does not cover the model")
            return error_for_status(status, message, model_name, headers, cooldown=denied)
        return error_for_status(status, message, model_name, headers)
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"Upstream for model {model_name} timed out")
    if isinstance(exc, httpx.HTTPError | httpx.StreamError | OSError):
        return UpstreamError(f"Could not talk to the upstream of model {model_name}")
    if isinstance(exc, pydantic.ValidationError | ValueError):
        return UpstreamError(f"Upstream for model {model_name} sent an unreadable answer")
    if isinstance(exc, GigaChatException):
        return UpstreamError(f"Upstream for model {model_name} failed")
    return UpstreamError(f"Upstream for model {model_name} failed unexpectedly")


def _same_url(got: Any, expected: str) -> bool:
    try:
        return httpx.URL(str(got)).copy_with(query=None, fragment=None) == httpx.URL(expected)
    except (httpx.InvalidURL, TypeError, ValueError):
        return False


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "***")
    return text


UPSTREAM_ERRORS = (
    GigaChatException,
    httpx.HTTPError,
    httpx.StreamError,
    pydantic.ValidationError,
    ValueError,
    OSError,
)


# --- transport: the SDK on our own httpx clients ------------------------------------------------


class _SharedClient(GigaChatSyncClient):
    """The SDK's sync client, used by every thread, with two changes.

    - It runs on httpx clients we build (connect/read/stream-idle timeouts, TLS, proxy, hooks).
    - A 401 resets the cached token only if it is still the token this thread sent: the SDK's own
      reset is unlocked and unconditional, so N threads failing together would wipe each other's fresh
      tokens (N OAuth calls) and could read a token half-reset.
    """

    def __init__(self, *, api: httpx.Client, auth: httpx.Client, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._client_instance = api
        self._auth_client_instance = auth
        self._sent = threading.local()

    @property
    def token(self) -> str | None:
        current = self._access_token  # read once: another thread may reset it
        value = current.access_token if current is not None else None
        self._sent.token = value
        return value

    def _reset_token(self) -> None:
        with self._sync_token_lock:
            current = self._access_token
            if current is not None and current.access_token == getattr(self._sent, "token", None):
                self._access_token = None


class _Guard(httpx.SyncByteStream):
    """Wraps a streamed response body so another thread can abort a blocked read safely.

    `abort` shuts the socket down (which wakes a `recv` blocked in another thread) unless the body
    was already closed — after which the connection may be back in the pool serving someone else.
    """

    def __init__(self, inner: httpx.SyncByteStream, response: httpx.Response) -> None:
        self._inner = inner
        self._response = response
        self._lock = threading.Lock()
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self._inner

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._inner.close()

    def abort(self) -> None:
        with self._lock:
            if self._closed:
                return
            network = self._response.extensions.get("network_stream")
            sock = network.get_extra_info("socket") if network is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class _Call:
    """What one call saw on the wire (set for the calling thread while the SDK runs)."""

    __slots__ = ("aborted", "guard", "response", "streaming")

    def __init__(self, streaming: bool) -> None:
        self.streaming = streaming
        self.response: httpx.Response | None = None
        self.guard: _Guard | None = None
        self.aborted = False

    def seen(self, response: httpx.Response) -> None:
        self.response = response
        if self.streaming:
            self.guard = _Guard(response.stream, response)  # type: ignore[arg-type]
            response.stream = self.guard

    def abort(self) -> None:
        self.aborted = True
        if self.guard is not None:
            self.guard.abort()


def _verify(model: ModelConfig, http: HttpConfig) -> Any:
    """httpx `verify`: the model's verify_ssl_certs (False or a CA bundle), else the global setting."""
    verify: bool | str = model.verify_ssl_certs
    if verify is True:
        verify = http.verify
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return bool(verify)


class GigaChat(Provider):
    """One configured GigaChat model: an SDK client created at start and shared by all threads."""

    def __init__(self, model: ModelConfig, sessions: SessionPool, http: HttpConfig) -> None:
        super().__init__(model, sessions, http)
        self._local = threading.local()
        plain = httpx.Timeout(http.read_timeout, connect=http.connect_timeout)
        streaming = httpx.Timeout(http.stream_idle_timeout, connect=http.connect_timeout)
        self._timeouts = (plain.as_dict(), streaming.as_dict())
        common: dict[str, Any] = {
            "verify": _verify(model, http),
            "proxy": http.proxy or None,
            "limits": httpx.Limits(max_connections=None, max_keepalive_connections=http.pool_maxsize),
        }
        api = httpx.Client(
            base_url=model.url.rstrip("/"),
            timeout=plain,
            headers=dict(model.headers),
            event_hooks={"request": [self._on_request], "response": [self._on_response]},
            **common,
        )
        auth = httpx.Client(timeout=plain, **common)
        self.auth_url = model.auth_url or AUTH_URL
        self._secrets = tuple(s for s in {model.token, sdk_credentials(model.token)} if s)
        self._sdk = _SharedClient(
            api=api,
            auth=auth,
            base_url=model.url.rstrip("/"),
            auth_url=self.auth_url,
            credentials=sdk_credentials(model.token),
            scope=model.scope or DEFAULT_SCOPE,
            model=model.upstream_model,
            timeout=http.read_timeout,
            max_retries=0,  # the router retries and falls back
            # explicit empties, so stray GIGACHAT_* environment variables cannot change the auth mode
            access_token="",
            user="",
            password="",
        )

    # --- httpx hooks (run in the calling thread) ----------------------------------------------
    def _on_request(self, request: httpx.Request) -> None:
        streaming = EVENT_STREAM in request.headers.get("accept", "")
        request.extensions["timeout"] = self._timeouts[1 if streaming else 0]

    def _on_response(self, response: httpx.Response) -> None:
        call: _Call | None = getattr(self._local, "call", None)
        if call is not None:
            call.seen(response)

    # --- Provider -----------------------------------------------------------------------------
    def _chat(self, body: dict[str, Any]) -> Chat:
        payload = build_chat(body, self.model.upstream_model)
        try:
            return Chat.model_validate(payload)
        except pydantic.ValidationError as exc:
            where = ".".join(str(p) for p in exc.errors()[0]["loc"]) if exc.errors() else ""
            raise InvalidRequest(
                f"Request not expressible for GigaChat ({where})", param="messages"
            ) from None

    def _error(self, exc: BaseException) -> ProxyError:
        return map_error(exc, self.model.name, self.auth_url, self._secrets)

    def complete(self, body: dict[str, Any]) -> Completion:
        chat = self._chat(body)
        call = self._local.call = _Call(streaming=False)
        try:
            answer = self._sdk.chat(chat)
        except UPSTREAM_ERRORS as exc:
            raise self._error(exc) from None
        finally:
            self._local.call = None
        data = answer.model_dump(**_DUMP)
        headers = call.response.headers if call.response is not None else {}
        return Completion(parse_completion(data, self.model.name), headers)

    def stream(self, body: dict[str, Any]) -> ChunkStream:
        """Opens the stream and reads up to its first chunk, so that auth, HTTP and connection errors
        raise here (the SDK checks the status inside its generator)."""
        chat = self._chat(body)
        call = self._local.call = _Call(streaming=True)
        upstream = self._sdk.stream(chat)
        try:
            first = next(upstream)
        except StopIteration:
            raise UpstreamError(
                f"Upstream stream for model {self.model.name} ended before it began"
            ) from None
        except UPSTREAM_ERRORS as exc:
            upstream.close()
            raise self._error(exc) from None
        finally:
            self._local.call = None
        chunks = self._relay(chain((first,), upstream), upstream, call)
        headers = call.response.headers if call.response is not None else {}
        return ChunkStream(chunks, headers, lambda: self._close_stream(chunks, call))

    def _relay(self, raw: Iterator[Any], upstream: Iterator[Any], call: _Call) -> Iterator[dict[str, Any]]:
        try:
            yield from translate_stream((c.model_dump(**_DUMP) for c in raw), self.model.name)
        except Exception as exc:
            if call.aborted:  # closed by the client: the read we broke off is no error
                return
            if isinstance(exc, UPSTREAM_ERRORS):
                raise self._error(exc) from None
            raise
        finally:
            upstream.close()  # type: ignore[attr-defined]

    @staticmethod
    def _close_stream(chunks: Iterator[dict[str, Any]], call: _Call) -> None:
        """Close from the consuming thread, or abort a read blocked in another thread."""
        try:
            chunks.close()  # type: ignore[attr-defined]
        except ValueError:  # "generator already executing": another thread is reading it
            call.abort()

    def close(self) -> None:
        self._sdk.close()


__all__ = [
    "GigaChat",
    "build_chat",
    "build_functions",
    "build_messages",
    "function_call_for",
    "map_error",
    "map_usage",
    "parse_completion",
    "sdk_credentials",
    "stream_chunk",
    "translate_stream",
]
