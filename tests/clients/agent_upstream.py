"""A fake upstream that scripts an agent's turn: call one of the agent's tools, then answer.

Coding agents send side requests too (titles, summaries, quota probes), so the script is decided by
each request's content rather than by order: a request whose conversation already holds a tool
result gets the final answer; one that offers the chosen tool gets a call to it; any other gets a
short plain answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tests.fakes.openai import FakeOpenAI, tool_call
from tests.fakes.server import Behavior, Recorded

FINAL_ANSWER = "The probe file says PROBE-CONTENT-7731."


def tool_arguments(tool: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Arguments for a function tool: each required parameter from `values` by its name."""
    parameters = tool.get("function", {}).get("parameters") or {}
    required = parameters.get("required") or []
    return {name: values[name] for name in required if name in values}


class AgentScript:
    """Responder for FakeOpenAI's chat route: `tools` maps tool names the agent may offer to the
    values of their arguments; the first offered one is called."""

    def __init__(self, fake: FakeOpenAI, tools: dict[str, dict[str, Any]]) -> None:
        self.fake = fake
        self.tools = tools
        self.called: list[str] = []  # the tool names the script called
        self.results: list[str] = []  # the tool results the agent sent back

    def __call__(self, req: Recorded) -> Behavior:
        body = req.json if isinstance(req.json, dict) else {}
        messages = body.get("messages") or []
        results = [m for m in messages if isinstance(m, dict) and m.get("role") == "tool"]
        if results:
            self.results += [_text(m.get("content")) for m in results]
            return self.fake.reply(content=FINAL_ANSWER)(req)
        offered = {t.get("function", {}).get("name"): t for t in body.get("tools") or ()}
        for name, values in self.tools.items():
            if name in offered:
                self.called.append(name)
                arguments = tool_arguments(offered[name], values)
                return self.fake.reply(tool_calls=[tool_call(name, arguments, id="call_probe_1")])(req)
        return self.fake.reply(content="ok")(req)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Iterable):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""
