"""A fake Sber GigaChat: OAuth (`/api/v2/oauth`) and the v1 chat API over HTTP, speaking the shapes
recorded in /work/shared/provider-formats/07-gigachat.md (the official `gigachat` SDK talks to it too).

    with FakeGigaChat() as fake:
        model = fake.model_config()            # url/auth_url point here, token "cid:secret"
        fake.push("chat", fake.answer(fake.completion(function_call={...})))
        fake.revoke()                          # the current token now gets 401 "Token has expired"
        fake.push("chat", fake.echoing_error(400))  # an error that repeats the credential it was sent
        fake.oauth_requests, fake.chat_requests

OAuth checks Basic credentials, the RqUID header and the scope, and issues `tok-N-...` tokens with
`expires_at` in milliseconds, `token_ttl` seconds ahead. The chat route answers 401 to unknown, expired
or revoked bearer tokens before any scripted answer; by default it answers `reply` (JSON) or streams
`stream_pieces` with `chunk_delay` seconds between SSE events, each flushed on its own.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from app.config import ModelConfig
from tests.fakes.server import Behavior, FakeServer, Recorded, Route

MODEL_VERSION = "GigaChat:2.0.28.2"
SCOPES = ("GIGACHAT_API_PERS", "GIGACHAT_API_B2B", "GIGACHAT_API_CORP")


class FakeGigaChat(FakeServer):
    def __init__(
        self,
        client_id: str = "cid",
        client_secret: str = "secret",
        token_ttl: float = 30 * 60,
        scope: str = "GIGACHAT_API_PERS",
    ) -> None:
        super().__init__()
        self.client_id, self.client_secret = client_id, client_secret
        self.authorization_key = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self.scope = scope
        self.token_ttl = token_ttl
        self.reply = "Привет! Чем могу помочь?"
        self.stream_pieces = ["При", "вет", "!"]
        self.chunk_delay = 0.0
        self.reject_all_tokens = False
        self._lock = threading.Lock()
        self._tokens: dict[str, int] = {}  # access token -> expires_at (ms)
        self._revoked: set[str] = set()
        self._issued = 0
        self.add_route("oauth", "POST", "/api/v2/oauth", self._oauth)
        self.add_route("chat", "POST", "/api/v1/chat/completions", self._chat)
        self.add_route("models", "GET", "/api/v1/models", self._models)

    # --- for tests ------------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"{self.url}/api/v1"

    @property
    def auth_url(self) -> str:
        return f"{self.url}/api/v2/oauth"

    def model_config(self, name: str = "gigachat/GigaChat-2", **overrides: Any) -> ModelConfig:
        values: dict[str, Any] = {
            "name": name,
            "provider": "gigachat",
            "url": self.api_url,
            "upstream_model": "GigaChat-2",
            "token": f"{self.client_id}:{self.client_secret}",
            "auth_url": self.auth_url,
            "scope": self.scope,
            "verify_ssl_certs": False,
        }
        values.update(overrides)
        return ModelConfig(**values)

    @property
    def oauth_requests(self) -> list[Recorded]:
        return self.requests_for("oauth")

    @property
    def chat_requests(self) -> list[Recorded]:
        return self.requests_for("chat")

    @property
    def issued_tokens(self) -> list[str]:
        with self._lock:
            return list(self._tokens)

    def revoke(self, token: str | None = None) -> None:
        """Reject `token` (default: every token issued so far) with 401 "Token has expired"."""
        with self._lock:
            self._revoked.update([token] if token else self._tokens)

    # --- answer builders (shapes from 07-gigachat.md) ---------------------------------------------
    @staticmethod
    def usage(prompt: int = 17, completion: int = 3, cached: int = 0) -> dict[str, int]:
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "precached_prompt_tokens": cached,
        }

    @classmethod
    def completion(
        cls,
        content: str = "",
        function_call: dict[str, Any] | None = None,
        state_id: str | None = None,
        finish_reason: str | None = None,
        usage: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"content": content, "role": "assistant"}
        if function_call is not None:
            message["function_call"] = function_call
            message["functions_state_id"] = state_id or str(uuid.uuid4())
        return {
            "choices": [
                {
                    "message": message,
                    "index": 0,
                    "finish_reason": finish_reason or ("function_call" if function_call else "stop"),
                }
            ],
            "created": int(time.time()),
            "model": MODEL_VERSION,
            "object": "chat.completion",
            "usage": usage or cls.usage(),
        }

    @classmethod
    def stream_events(
        cls,
        pieces: list[str],
        function_call: dict[str, Any] | None = None,
        state_id: str | None = None,
        finish_reason: str | None = None,
        usage: dict[str, int] | None = None,
        done: bool = True,
    ) -> list[bytes]:
        """`data:` events: pieces (role on the first), then "" with finish_reason and usage, then [DONE].
        A function call arrives whole in the last data event."""
        created = int(time.time())

        def chunk(delta: dict[str, Any], **extra: Any) -> dict[str, Any]:
            choice = {"delta": delta, "index": 0, **extra}
            return {
                "choices": [choice],
                "created": created,
                "model": MODEL_VERSION,
                "object": "chat.completion",
            }

        events = [
            chunk({"content": piece, **({"role": "assistant"} if i == 0 else {})})
            for i, piece in enumerate(pieces)
        ]
        last_delta: dict[str, Any] = {"content": ""}
        if function_call is not None:
            last_delta.update(
                role="assistant",
                function_call=function_call,
                functions_state_id=state_id or str(uuid.uuid4()),
            )
        last = chunk(
            last_delta, finish_reason=finish_reason or ("function_call" if function_call else "stop")
        )
        last["usage"] = usage or cls.usage(completion=max(len(pieces), 1))
        events.append(last)
        out = [_data(e) for e in events]
        if done:
            out.append(b"data: [DONE]\n\n")
        return out

    @staticmethod
    def answer(data: Any, status: int = 200, headers: dict[str, str] | None = None, **kw: Any) -> Behavior:
        """A JSON answer as GigaChat sends it: raw UTF-8, charset, request/session ids."""
        return Behavior(
            status=status,
            body=json.dumps(data, ensure_ascii=False).encode(),
            headers={"Content-Type": "application/json; charset=utf-8", **_ids(), **(headers or {})},
            **kw,
        )

    @staticmethod
    def error(status: int, message: str, headers: dict[str, str] | None = None, **kw: Any) -> Behavior:
        """An API error body: {"status": ..., "message": ...}."""
        body = {"status": status, "message": message}
        return FakeGigaChat.answer(body, status=status, headers=headers, **kw)

    @classmethod
    def echoing_error(cls, status: int) -> Callable[[Recorded], Behavior]:
        """An error whose message repeats the request's credential, bare and as its header, as a
        careless upstream might (the OAuth route's Basic key or the chat route's access token)."""

        def respond(req: Recorded) -> Behavior:
            header = req.headers.get("Authorization", "")
            return cls.error(status, f"rejected {header.partition(' ')[2]} (Authorization: {header})")

        return respond

    def echoing_stream_failure(self) -> Callable[[Recorded], Behavior]:
        """A stream that starts, then reports an error event repeating the access token."""

        def respond(req: Recorded) -> Behavior:
            token = req.headers.get("Authorization", "").partition(" ")[2]
            first = self.stream_events(["a"], done=False)[0]
            return self.sse([first, _data({"status": 500, "message": f"session of {token} lost"})])

        return respond

    def sse(self, events: list[bytes], **kw: Any) -> Behavior:
        kw.setdefault("chunk_delay", self.chunk_delay)
        return Behavior(events=events, headers={"Content-Type": "text/event-stream", **_ids()}, **kw)

    # --- routes ----------------------------------------------------------------------------------
    def before(self, req: Recorded, route: Route) -> Behavior | None:
        if route.name == "oauth":
            return self._check_oauth(req)
        auth = req.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        with self._lock:
            expires_at = self._tokens.get(token)
            revoked = token in self._revoked
        if expires_at is None:
            return self.error(401, "Unauthorized")
        if revoked or self.reject_all_tokens or expires_at <= time.time() * 1000:
            return self.error(401, "Token has expired")
        return None

    def _check_oauth(self, req: Recorded) -> Behavior | None:
        auth = req.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return self.answer({"code": 4, "message": "Can't decode 'Authorization' header"}, 401)
        if not req.headers.get("RqUID"):
            return self.answer({"code": 400, "message": "RqUID header is required"}, 400)  # body inferred
        form = dict(
            pair.split("=", 1) for pair in req.body.decode("utf-8", "replace").split("&") if "=" in pair
        )
        scope = form.get("scope", "")
        if not scope:
            return self.answer({"code": 5, "message": "scope is empty"}, 400)
        if scope not in SCOPES:
            return self.answer({"code": 1, "message": "scope data format invalid"}, 400)
        if auth[len("Basic ") :] != self.authorization_key:
            return self.answer({"code": 6, "message": "credentials doesn't match db data"}, 401)
        if scope != self.scope:
            return self.answer({"code": 7, "message": "scope from db not fully includes consumed scope"}, 401)
        return None

    def _oauth(self, req: Recorded) -> Behavior:
        with self._lock:
            self._issued += 1
            token = f"tok-{self._issued}-{uuid.uuid4().hex}"
            expires_at = int((time.time() + self.token_ttl) * 1000)
            self._tokens[token] = expires_at
        return self.answer({"access_token": token, "expires_at": expires_at})

    def _chat(self, req: Recorded) -> Behavior:
        body = req.json if isinstance(req.json, dict) else {}
        if not body.get("model"):
            return self.error(400, "model is required")
        if body.get("stream"):
            return self.sse(self.stream_events(self.stream_pieces))
        return self.answer(self.completion(self.reply))

    def _models(self, req: Recorded) -> Behavior:
        return self.answer(
            {
                "object": "list",
                "data": [
                    {"id": "GigaChat", "object": "model", "owned_by": "salutedevices", "type": "chat"},
                    {"id": "GigaChat-2", "object": "model", "owned_by": "salutedevices", "type": "chat"},
                    {"id": "GigaChat-2-Max", "object": "model", "owned_by": "salutedevices", "type": "chat"},
                    {"id": "Embeddings", "object": "model", "owned_by": "salutedevices", "type": "embedder"},
                ],
            }
        )


def _data(obj: Any) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def _ids() -> dict[str, str]:
    return {"X-Request-Id": str(uuid.uuid4()), "X-Session-Id": str(uuid.uuid4())}
