import pytest

from app.providers.reasoning import ReasoningStream, split_reasoning, split_text


def test_split_text() -> None:
    assert split_text("  <think>\nhmm\n</think>\n\nAnswer") == ("hmm", "Answer")
    assert split_text("No thinking <think>x</think>") == (None, "No thinking <think>x</think>")
    assert split_text("<think>never closed") == ("never closed", "")


@pytest.mark.parametrize(("mode", "reasoning"), [("split", "plan"), ("strip", None)])
def test_completion_modes(mode: str, reasoning: str | None) -> None:
    answer = {"choices": [{"message": {"role": "assistant", "content": "<think>plan</think>Done"}}]}
    split_reasoning(answer, mode)
    message = answer["choices"][0]["message"]
    assert message["content"] == "Done"
    assert message.get("reasoning_content") == reasoning


def run_stream(pieces: list[str], mode: str = "split") -> tuple[str, str]:
    stream = ReasoningStream(mode)
    content = reasoning = ""
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        chunk = {
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": "stop" if last else None}]
        }
        stream.process(chunk)
        delta = chunk["choices"][0]["delta"]
        content += delta.get("content") or ""
        reasoning += delta.get("reasoning_content") or ""
    return reasoning, content


@pytest.mark.parametrize("size", [1, 2, 3, 5, 100])
def test_stream_split_at_any_boundary(size: int) -> None:
    text = "<think>step one</think>\nThe answer is 4."
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    assert run_stream(pieces) == ("step one", "The answer is 4.")
    assert run_stream(pieces, "strip") == ("", "The answer is 4.")


def test_stream_without_think_passes_through_and_flushes_partial() -> None:
    assert run_stream(["Hello", " world"]) == ("", "Hello world")
    assert run_stream(["<thi"]) == ("", "<thi")
