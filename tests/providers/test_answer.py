"""The one answer accumulator (`shape.Answer`): what adapters fill is what the fronts gather back."""

from __future__ import annotations

from app.providers.shape import REASONING, TEXT, TOOL_CALL, Answer, tool_call, usage

SIGNATURE = {"extra_content": {"google": {"thought_signature": "sig"}}}


def adapter_answer() -> Answer:
    answer = Answer("chatcmpl-1", "served/model", 1700000000)
    first = answer.choice()
    first.add_reasoning("Think")
    first.add_reasoning("ing")
    first.add_text("Hello")
    first.add_tool_call(tool_call("get_weather", {"city": "Paris"}, "call_1", **SIGNATURE))
    first.add_text(" again")
    first.finish_reason = "tool_calls"
    answer.choice(1).add_text("Second choice")
    answer.usage = usage(12, 5, cached=2)
    return answer


def test_a_completion_gathers_back_to_the_same_answer() -> None:
    body = adapter_answer().body()
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello again",
        "reasoning_content": "Thinking",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                **SIGNATURE,
            }
        ],
    }
    gathered = Answer.from_completion(body)
    assert gathered.body() == body
    blocks = [(b.kind, b.text) for b in gathered.choice().blocks]
    assert blocks == [
        (REASONING, "Thinking"),
        (TEXT, "Hello again"),
        (TOOL_CALL, '{"city":"Paris"}'),
    ]


def test_chunks_gather_in_order_and_join_tool_call_pieces() -> None:
    answer = Answer(model="m")
    first_call = {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}}
    chunks = [
        {"choices": [{"index": 0, "delta": {"reasoning": "Hm"}}]},  # OpenRouter's name for it
        {"choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo", "tool_calls": [first_call]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "function": {"name": "g"}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}], "model": "served"},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}},
    ]
    pieces = [[(i, b.kind, text) for i, b, text in answer.add_chunk(chunk)] for chunk in chunks]
    assert pieces == [
        [(0, REASONING, "Hm")],
        [(0, TEXT, "Hel")],
        [(0, TEXT, "lo"), (0, TOOL_CALL, "")],
        [(0, TOOL_CALL, "")],
        [(0, TOOL_CALL, "{}")],  # a late piece of the first call
        [],
        [],
    ]
    output = answer.choice()
    assert [b.kind for b in output.blocks] == [REASONING, TEXT, TOOL_CALL, TOOL_CALL]
    assert output.message()["content"] == "Hello" and output.finish_reason == "tool_calls"
    first, second = output.tool_calls
    assert first["id"] == "call_a" and first["function"] == {"name": "f", "arguments": "{}"}
    assert second["id"].startswith("call_") and second["function"] == {"name": "g", "arguments": ""}
    assert answer.model == "served" and answer.usage["total_tokens"] == 7
