"""The internal stream of events between the gateway and the front APIs.

The gateway's stream answer is an iterator of:
- `dict`: an OpenAI `chat.completion.chunk` whose `model` names the concrete model that served; the
  last one before the end is the usage chunk (`choices: []`, `usage`) whenever the upstream reported
  usage, whether or not the client asked for it (each front API decides what to show);
- `HEARTBEAT`: nothing has arrived for `server.heartbeat_seconds`; a front API writes its keep-alive;
- `StreamFailed`: the stream cannot go on; always the last event. Before it, nothing else is owed.
The iterator ending without a `StreamFailed` means the answer is complete. Front APIs (chat, Anthropic
Messages, Responses) turn these into their own bytes; the gateway never writes bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from app.errors import ProxyError


class Heartbeat:
    """The upstream is silent: a front API writes its keep-alive (SSE comment, `event: ping`, ...)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "HEARTBEAT"


HEARTBEAT: Final = Heartbeat()


@dataclass(frozen=True, slots=True)
class StreamFailed:
    """The stream ended with an error (after content, or when no model could open it)."""

    error: ProxyError


StreamEvent = dict[str, Any] | Heartbeat | StreamFailed
