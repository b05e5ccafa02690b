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

Pure translations (no I/O, the OpenAI side from `shape`): `build_payload` (OpenAI request -> GigaChat
v1 chat), `parse_completion` (answer -> chat.completion), `parse_chunks` (SSE events -> OpenAI chunks)
and `parse_token` (OAuth answer). What they cannot translate becomes, at the transport's error
boundary, a retryable UpstreamError naming the model; every error message and log line is redacted of
the credentials and of the access tokens the provider holds.

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
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlencode

import orjson

from app.config import HttpConfig, ModelConfig
from app.errors import InvalidRequest, ProxyError, RateLimited, UpstreamAuthError, UpstreamError
from app.http import SessionPool
from app.providers.base import MAX_ERROR_BODY, ChunkStream, Completion, HttpProvider, UpstreamRequest
from app.providers.shape import (
    TRANSLATION_ERRORS,
    Answer,
    ChunkWriter,
    MalformedAnswer,
    answer_error,
    error_for_status,
    expect,
    incomplete_stream,
    malformed,
    max_tokens,
    openai_error_message,
    optional_text,
    tool_call,
    usage,
)
from app.redact import redact
from app.routing.cooldown import AUTH, CREDIT, UNAVAILABLE, Cooldown
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
    budget = max_tokens(body)
    if budget is not None:
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
            raise InvalidRequest("'max_tokens' must be a positive integer", param="max_tokens")
        chat["max_tokens"] = budget
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
        parsed = orjson.loads(value) if isinstance(value, str) else None
    except orjson.JSONDecodeError:  # also for nesting too deep to parse
        parsed = None
    if not isinstance(parsed, dict):
        raise InvalidRequest(
            f"messages[{index}]: tool call arguments must be a JSON object", param="messages"
        )
    return parsed


def _function_result(text: str) -> str:
    """GigaChat wants a function result as a serialised JSON object: wrap anything else."""
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:  # not JSON (or nested too deep to parse): a text result
        parsed = text
    if isinstance(parsed, dict):
        return text
    return orjson.dumps({"result": parsed}).decode()


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


def optional_count(value: Any, what: str) -> int | None:
    """An optional integer field (an index, a timestamp): None when absent."""
    return None if value is None else expect(value, int, what)


def map_finish_reason(reason: Any, model_name: str) -> str | None:
    if reason is None:
        return None
    if expect(reason, str, "finish_reason") == "error":
        raise UpstreamError(f"Upstream for model {model_name} failed while generating the answer")
    return FINISH_REASONS.get(reason, "stop")


def map_usage(counts: Any) -> dict[str, Any] | None:
    """GigaChat usage (`precached_prompt_tokens` are the cached ones) -> OpenAI usage."""
    if counts is None:
        return None
    expect(counts, dict, "usage")
    return usage(
        counts.get("prompt_tokens"),
        counts.get("completion_tokens"),
        cached=counts.get("precached_prompt_tokens"),
        total=counts.get("total_tokens"),
    )


def function_call(message: dict[str, Any]) -> dict[str, Any] | None:
    """A message's one `function_call` (arguments object) -> an OpenAI tool call whose id is GigaChat's
    `functions_state_id`, which the next turn echoes back."""
    call = message.get("function_call")
    if call is None:
        return None
    expect(call, dict, "function_call")
    arguments = call.get("arguments")
    if arguments is not None:
        expect(arguments, (dict, str), "function_call.arguments")
    name = expect(call.get("name"), str, "function_call.name")
    return tool_call(name, arguments, message.get("functions_state_id"))


def check_failure(data: dict[str, Any], model_name: str) -> None:
    """GigaChat's error body (`{"status": ..., "message": ...}`) inside a 200 raises as that error."""
    if "choices" not in data and "message" in data:
        raise answer_error({"code": data.get("status"), "message": data["message"]}, model_name)


def parse_completion(data: Any, model_name: str) -> dict[str, Any]:
    """A GigaChat v1 answer -> an OpenAI chat.completion (MalformedAnswer on a bad shape)."""
    check_failure(expect(data, dict, "answer"), model_name)
    choices = expect(data.get("choices"), list, "choices")
    if not choices:
        raise MalformedAnswer("the answer has no choices")
    answer = Answer(model=model_name, created=optional_count(data.get("created"), "created"))
    for position, choice in enumerate(choices):
        expect(choice, dict, "choice")
        message = expect(choice.get("message"), dict, "message")
        output = answer.choice(position if choice.get("index") is None else choice["index"])
        output.add_text(message.get("content"))
        output.add_reasoning(message.get("reasoning_content"))
        call = function_call(message)
        if call is not None:
            output.add_tool_call(call)
        output.finish_reason = map_finish_reason(choice.get("finish_reason"), model_name)
    answer.usage = map_usage(data.get("usage"))
    return answer.body()


def parse_chunks(events: Iterable[SSEEvent], model_name: str) -> Iterator[dict[str, Any]]:
    """GigaChat's `data:` events -> OpenAI chunks, ending with the usage chunk (sent with the last
    data event). Built-in tools' `function_in_progress` progress texts are not passed on."""
    writer = ChunkWriter(model=model_name)
    counts = None
    for event in events:
        if event.data == b"[DONE]":
            break
        data = expect(orjson.loads(event.data), dict, "event")
        check_failure(data, model_name)
        counts = map_usage(data.get("usage")) or counts
        choices = [
            _stream_choice(writer, c, model_name) for c in expect(data.get("choices"), list, "choices")
        ]
        choices = [c for c in choices if c is not None]
        if choices:
            yield writer.chunk(choices)
    if not writer.complete:
        raise incomplete_stream(model_name)
    if counts is not None:
        yield writer.usage(counts)


def _stream_choice(writer: ChunkWriter, choice: Any, model_name: str) -> dict[str, Any] | None:
    """One choice of a GigaChat stream chunk -> an OpenAI chunk choice (None: nothing for the client)."""
    expect(choice, dict, "choice")
    index = optional_count(choice.get("index"), "choice index") or 0
    delta = {} if choice.get("delta") is None else expect(choice["delta"], dict, "delta")
    finish = map_finish_reason(choice.get("finish_reason"), model_name)
    out: dict[str, Any] = {}
    if optional_text(delta.get("role"), "role") in ("", "assistant"):
        call = function_call(delta)
        content = optional_text(delta.get("content"), "content")
        if content or (call is None and index not in writer.started):
            out["content"] = content
        reasoning = optional_text(delta.get("reasoning_content"), "reasoning_content")
        if reasoning:
            out["reasoning_content"] = reasoning
        if call is not None:
            out["tool_calls"] = [{"index": 0, **call}]
    if not out and finish is None:
        return None
    return writer.choice(out, finish, index)


def parse_token(data: Any) -> tuple[str, float]:
    """GigaChat's OAuth answer `{"access_token", "expires_at"}` -> (token, expiry as Unix seconds).

    `expires_at` is in milliseconds; a value too small for that is read as seconds."""
    expect(data, dict, "OAuth answer")
    token = expect(data.get("access_token"), str, "access_token")
    expires_at = expect(data.get("expires_at"), (int, float), "expires_at")
    if not token:
        raise MalformedAnswer("the OAuth answer has no token")
    return token, expires_at / 1000.0 if expires_at > 1e11 else float(expires_at)


# --- OAuth token and transport ------------------------------------------------------------------


class AccessToken:
    """One OAuth access token shared by every thread: fetched once however many threads ask, replaced
    `refresh_ahead` seconds before it expires, and dropped after a 401 only if it is still the one
    the rejected request sent (so a burst of 401s causes one new token, not one per request).

    When a fetch fails, a token that has not expired yet goes on serving; otherwise the threads that
    waited meanwhile get that failure instead of trying again one after the other (an OAuth outage
    costs a burst one timeout, not one per thread)."""

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
        self._current: tuple[str, float] | None = None  # (token, expiry), swapped whole
        self._attempts = 0  # fetches tried so far
        self._failure: ProxyError | None = None  # how the last one failed, if it did
        self.recent: tuple[str, ...] = ()  # the current and the previous token, for redaction

    def _usable(self, ahead: float | None = None) -> str | None:
        """The current token if it is good for `ahead` more seconds (default: the refresh margin)."""
        current = self._current
        margin = self._refresh_ahead if ahead is None else ahead
        if current is not None and current[1] - margin > self._clock():
            return current[0]
        return None

    def get(self) -> str:
        attempts = self._attempts
        token = self._usable()  # the common case takes no lock
        if token is not None:
            return token
        with self._lock:
            token = self._usable()
            if token is not None:
                return token
            if self._failure is not None and self._attempts != attempts:  # failed while we waited
                token = self._usable(ahead=0.0)
                if token is None:
                    raise copy.copy(self._failure) from None
                return token
            self._attempts += 1
            try:
                self._current = self._fetch()
            except ProxyError as exc:
                self._failure = exc
                token = self._usable(ahead=0.0)  # not expired yet: it still serves
                if token is None:
                    raise
                return token
            self._failure = None
            token = self._current[0]
            self.recent = (token, *self.recent[:1])
            return token

    def reject(self, token: str) -> None:
        """The upstream refused `token`: the next `get` fetches a new one, unless one already did."""
        with self._lock:
            if self._current is not None and self._current[0] == token:
                self._current = None


class GigaChat(HttpProvider):
    """One configured GigaChat model; its access token is shared by every thread."""

    def __init__(self, model: ModelConfig, sessions: SessionPool, http: HttpConfig) -> None:
        super().__init__(model, sessions, http)
        verify = model.verify_ssl_certs
        self.transport = sessions.transport(model.provider, None if verify is True else verify)
        self.url = model.url.rstrip("/") + "/chat/completions"
        self.auth_url = model.auth_url or AUTH_URL
        self.scope = model.scope or DEFAULT_SCOPE
        self._key = authorization_key(model.token)
        keys = model.keys or (model.token,)  # every key of a pool is a credential to hide
        self._credentials = tuple({form for key in keys for form in (key, authorization_key(key))})
        self.token = AccessToken(self.fetch_token)
        self._headers = {"Content-Type": "application/json", "Accept": "application/json", **model.headers}
        self._stream_headers = {**self._headers, "Accept": "text/event-stream", "Cache-Control": "no-store"}

    def secrets(self) -> tuple[str, ...]:
        """What must never appear in an error or a log line: credentials and recent access tokens."""
        return (*self._credentials, *self.token.recent)

    def _redacted(self, exc: ProxyError) -> ProxyError:
        exc.message = redact(exc.message, self.secrets())
        exc.args = (exc.message,)
        return exc

    # --- OAuth ----------------------------------------------------------------------------------
    def fetch_token(self) -> tuple[str, float]:
        """A new access token from the OAuth endpoint: (token, expiry as Unix seconds)."""
        form = urlencode({"scope": self.scope}).encode()
        headers = {
            "Authorization": f"Basic {self._key}",
            "RqUID": str(uuid.uuid4()),
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        response = super()._post(UpstreamRequest(self.auth_url, form, headers), stream=False)
        status, name = response.status_code, self.model.name
        if status >= 400:
            message = redact(openai_error_message(response.error_body(MAX_ERROR_BODY)), self.secrets())
            if status != 429 and status < 500:
                log.warning("GigaChat OAuth refused the credentials of %s: HTTP %s %s", name, status, message)
                refused = UpstreamAuthError(f"The proxy's credentials for model {name} were rejected")
                refused.cooldown = Cooldown(AUTH, None, f"GigaChat OAuth {status}: credentials rejected")
                raise refused
            raise error_for_status(status, message, name, response.headers)
        try:
            return parse_token(orjson.loads(response.read()))
        except TRANSLATION_ERRORS as exc:
            raise malformed(name, cause=exc) from None

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
        return parse_completion(data, self.model.name)

    def parse_stream(self, events: Iterable[SSEEvent]) -> Iterator[dict[str, Any]]:
        return parse_chunks(events, self.model.name)

    def parse_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProxyError:
        message = redact(openai_error_message(body), self.secrets())
        name = self.model.name
        if status in (401, 403):
            log.warning("GigaChat rejected the token of model %s: HTTP %s %s", name, status, message)
        if status == 402:
            spent = RateLimited(f"Model {name} has used up its token package upstream")
            spent.cooldown = Cooldown(CREDIT, None, "upstream 402: the token package is used up")
            return spent
        if status == 403:  # the token is good (401 otherwise) but its scope does not cover this model
            denied = Cooldown(UNAVAILABLE, None, "upstream 403: this key's scope does not cover the model")
            return error_for_status(status, message, name, headers, cooldown=denied)
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


__all__ = [
    "AccessToken",
    "GigaChat",
    "authorization_key",
    "build_functions",
    "build_messages",
    "build_payload",
    "function_call_for",
    "map_usage",
    "parse_chunks",
    "parse_completion",
    "parse_token",
]
