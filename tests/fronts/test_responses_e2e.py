"""OpenAI Responses end to end: the official `openai` SDK, gunicorn, a fake OpenAI upstream."""

from __future__ import annotations

import json

import openai
import pytest
from pydantic import BaseModel

from tests.fakes.openai import FakeOpenAI, tool_call
from tests.fronts.conftest import CLIENT_KEY
from tests.harness import GunicornServer, openai_client

pytestmark = pytest.mark.e2e

SHELL = {
    "type": "function",
    "name": "shell",
    "description": "Run a command",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
}


@pytest.fixture
def client(front_server: GunicornServer) -> openai.OpenAI:
    return openai_client(front_server, api_key=CLIENT_KEY)


def test_create(client, fake: FakeOpenAI):
    fake.push_chat(content="Hello from upstream", prompt_tokens=30, completion_tokens=4)
    raw = client.responses.with_raw_response.create(
        model="fake/small-a", instructions="Be kind.", input="Say hello", store=False
    )
    response = raw.parse()
    assert response.status == "completed" and response.object == "response"
    assert response.output_text == "Hello from upstream"
    assert response.model == "fake/small-a" and response.id.startswith("resp_")
    assert response.usage.input_tokens == 30 and response.usage.total_tokens == 34
    assert raw.headers["X-AI-Proxy-Model"] == "fake/small-a"
    sent = fake.chat_requests[-1].json["messages"]
    assert sent == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Say hello"}]


def test_stream(client, fake: FakeOpenAI):
    fake.push_chat(content=["Hel", "lo", " world"], prompt_tokens=12, completion_tokens=3)
    with client.responses.stream(model="fake/small-a", input="hi") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 3
    assert final.output_text == "Hello world" and final.usage.output_tokens == 3


def test_function_tool_round_trip(client, fake: FakeOpenAI):
    fake.push_chat(tool_calls=[tool_call("shell", {"cmd": "ls"}, id="call_r1")])
    first = client.responses.create(model="gpt-5.1-codex", input="List the files", tools=[SHELL])
    assert first.model == "fake/big"  # by the alias gpt-* -> BIG
    call = next(item for item in first.output if item.type == "function_call")
    assert (call.call_id, call.name, json.loads(call.arguments)) == ("call_r1", "shell", {"cmd": "ls"})

    fake.push_chat(content="There is one file: a.txt")
    history = [
        {"role": "user", "content": "List the files"},
        *[item.model_dump(exclude_none=True) for item in first.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": "a.txt"},
    ]
    second = client.responses.create(model="SMALL", input=history, tools=[SHELL])
    assert second.output_text == "There is one file: a.txt"
    sent = fake.chat_requests[-1].json["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "call_r1"
    assert sent[2] == {"role": "tool", "tool_call_id": "call_r1", "content": "a.txt"}


def test_streamed_function_call(client, fake: FakeOpenAI):
    fake.push_chat(tool_calls=[tool_call("shell", {"cmd": "cat README.md"}, id="call_r2")])
    with client.responses.stream(model="fake/small-a", input="Read it", tools=[SHELL]) as stream:
        final = stream.get_final_response()
    call = final.output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"cmd": "cat README.md"}


class Point(BaseModel):
    x: int
    y: int


def test_structured_output(client, fake: FakeOpenAI):
    fake.push_chat(content='{"x": 3, "y": 4}')
    parsed = client.responses.parse(model="fake/small-a", input="A point", text_format=Point)
    assert parsed.output_parsed == Point(x=3, y=4)
    sent = fake.chat_requests[-1].json
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"]["properties"].keys() == {"x", "y"}


def test_builtin_tools_are_ignored_with_a_warning(client, fake: FakeOpenAI):
    fake.push_chat(content="No search here")
    raw = client.responses.with_raw_response.create(
        model="fake/small-a", input="news?", tools=[{"type": "web_search"}, SHELL]
    )
    assert "web_search" in raw.headers["X-AI-Proxy-Warning"]
    assert [t["function"]["name"] for t in fake.chat_requests[-1].json["tools"]] == ["shell"]


def test_previous_response_id_is_a_clear_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="fake/small-a", input="again", previous_response_id="resp_123")
    assert caught.value.body["param"] == "previous_response_id"
    assert "whole conversation" in caught.value.body["message"]


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="x")


def test_failure_mid_stream_is_response_failed(client, fake: FakeOpenAI):
    fake.push_chat(content=["one", " two", " three"], error_after=2)
    with client.responses.stream(model="fake/small-a", input="count") as stream:
        events = list(stream)
    kinds = [event.type for event in events]
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds
    assert events[-1].response.status == "failed" and events[-1].response.error.message
    numbers = [event.sequence_number for event in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
