"""The embedding translations, pure: requests per wire shape, answers, and the registry's rules."""

from __future__ import annotations

import base64
import struct

import pytest

from app import providers
from app.api.embeddings import base64_vector, parse_inputs
from app.config import ModelConfig
from app.errors import InvalidRequest
from app.providers import embeddings
from app.providers.shape import MalformedAnswer


def model(**extra: object) -> ModelConfig:
    values = {"name": "m", "provider": "openai", "url": "https://x/v1/embeddings", "upstream_model": "up"}
    return ModelConfig(**{**values, "kind": "embedding", **extra})  # type: ignore[arg-type]


def test_openai_request_passes_tokens_dimensions_and_user() -> None:
    body = {"dimensions": 64, "user": "u", "encoding_format": "base64"}
    payload = embeddings.openai_request([[1, 2], "b"], body, model())
    assert payload == {
        "model": "up",
        "input": [[1, 2], "b"],
        "encoding_format": "float",
        "dimensions": 64,
        "user": "u",
    }


def test_gemini_request_one_entry_per_text() -> None:
    payload = embeddings.gemini_request(
        ["a", "b"], {"dimensions": 256}, model(upstream_model="models/gemini-embedding-001", task_type="X")
    )
    assert payload["requests"] == [
        {
            "model": "models/gemini-embedding-001",
            "content": {"parts": [{"text": t}]},
            "taskType": "X",
            "outputDimensionality": 256,
        }
        for t in ("a", "b")
    ]
    plain = embeddings.gemini_request(["a"], {}, model(upstream_model="text-embedding-004"))
    assert plain["requests"][0] == {
        "model": "models/text-embedding-004",
        "content": {"parts": [{"text": "a"}]},
    }


def test_cohere_request_input_type_default_and_configured() -> None:
    assert embeddings.cohere_request(["a"], {}, model())["input_type"] == "search_document"
    payload = embeddings.cohere_request(["a"], {"dimensions": 512}, model(input_type="search_query"))
    assert payload == {
        "model": "up",
        "texts": ["a"],
        "input_type": "search_query",
        "embedding_types": ["float"],
        "output_dimension": 512,
    }


def test_cloudflare_request_and_dimensions() -> None:
    assert embeddings.cloudflare_request(["a", "b"], {}, model()) == {"text": ["a", "b"]}
    with pytest.raises(InvalidRequest):
        embeddings.cloudflare_request(["a"], {"dimensions": 3}, model())


@pytest.mark.parametrize(
    "build", [embeddings.gemini_request, embeddings.cohere_request, embeddings.cloudflare_request]
)
def test_text_only_shapes_refuse_token_arrays(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequest, match="text only"):
        build([[1, 2, 3]], {}, model())


def test_openai_answer_is_put_in_index_order() -> None:
    data = {
        "data": [{"index": 1, "embedding": [0.5]}, {"index": 0, "embedding": [0.25]}],
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
    assert embeddings.openai_answer(data, "m") == ([[0.25], [0.5]], 7)
    with pytest.raises(MalformedAnswer):
        embeddings.openai_answer({"data": [{"index": 3, "embedding": [1.0]}]}, "m")
    with pytest.raises(MalformedAnswer):
        embeddings.openai_answer({"data": [{"index": 0, "embedding": ["x"]}]}, "m")


def test_native_answers() -> None:
    assert embeddings.gemini_answer({"embeddings": [{"values": [1, 2]}]}, "m") == ([[1, 2]], None)
    cohere = {"embeddings": {"float": [[0.5]]}, "meta": {"billed_units": {"input_tokens": 3}}}
    assert embeddings.cohere_answer(cohere, "m") == ([[0.5]], 3)
    cloudflare = {"result": {"shape": [1, 2], "data": [[0.1, 0.2]]}, "success": True}
    assert embeddings.cloudflare_answer(cloudflare, "m") == ([[0.1, 0.2]], None)
    with pytest.raises(MalformedAnswer):
        embeddings.gemini_answer({"embeddings": [{"values": []}]}, "m")


def test_gigachat_answer_sums_usage() -> None:
    data = {
        "data": [
            {"index": 1, "embedding": [0.5], "usage": {"prompt_tokens": 2}},
            {"index": 0, "embedding": [0.25], "usage": {"prompt_tokens": 3}},
        ]
    }
    assert embeddings.gigachat_answer(data, "m") == ([[0.25], [0.5]], 5)
    data["data"][0]["usage"] = None
    assert embeddings.gigachat_answer(data, "m")[1] is None


def test_base64_vector_is_little_endian_float32() -> None:
    raw = base64.b64decode(base64_vector([0.5, -1.0, 0.25]))
    assert raw == struct.pack("<3f", 0.5, -1.0, 0.25)


def test_parse_inputs() -> None:
    assert parse_inputs("a") == ["a"]
    assert parse_inputs([1, 2]) == [[1, 2]]
    assert parse_inputs([[1], [2, 3]]) == [[1], [2, 3]]
    for bad in (None, [], [""], [[]], [True], ["a", 1], {"a": 1}):
        with pytest.raises(InvalidRequest):
            parse_inputs(bad)


def test_registry_shapes_and_batches() -> None:
    assert providers.embedding_shape("openai", "https://x/v1/embeddings") == "openai"
    assert providers.embedding_shape("cloudflare", "https://x/ai/v1/embeddings") == "openai"
    assert providers.embedding_shape("cloudflare", "https://x/ai/run") == "cloudflare"
    assert providers.embedding_shape("groq", "https://x/v1/chat/completions") is None
    assert [providers.embedding_batch(p, "https://x/base") for p in ("gemini", "cohere", "cloudflare")] == [
        100,
        96,
        100,
    ]
    assert providers.kind_problem("gigachat", "embedding", "https://x/api/v1") is None
    assert providers.kind_problem("gigachat", "image", "https://x/api/v1") is not None
    assert providers.kind_problem("gigachat", "transcription", "https://x/api/v1") is not None
    assert providers.adapter_path(model(provider="gigachat")) == providers.GIGACHAT_EMBEDDINGS
    assert providers.kind_problem("groq", "transcription", "https://x/openai/v1/audio/transcriptions") is None
    assert providers.kind_problem("groq", "transcription", "https://x/openai/v1/chat/completions") is not None
    assert providers.kind_problem("cloudflare", "transcription", "https://x/ai/run") is None
