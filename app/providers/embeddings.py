"""Embedding models (`kind: embedding`): one adapter, a wire shape per provider, chosen once at start.

Every provider's embedding translation lives here, as pure functions beside each other, rather than in
the chat modules: each is a dozen lines, they share the transport, the answer checks and the text-only
rule, and the chat modules stay about chat.

- `openai` (a compatible `…/embeddings` url: OpenAI, Hugging Face router, Together, Mistral, Jina,
  Workers AI's `/ai/v1/embeddings`): `{model, input, encoding_format: "float", dimensions?, user?}`;
  token arrays pass through. Answer `data[].{index, embedding}`, `usage.prompt_tokens`.
- `gemini`: `{url}/{model}:batchEmbedContents`, the key in `x-goog-api-key`; one request per text with
  `taskType` (the model's `task_type`) and `outputDimensionality`. Answer `embeddings[].values`.
- `cohere`: the v2 `…/v2/embed` url; `{model, texts, input_type (the model's, default
  search_document), embedding_types: ["float"], output_dimension?}`. Answer `embeddings.float`,
  `meta.billed_units.input_tokens`.
- `cloudflare`: `{url}/{model}` with `{"text": [...]}` (`@cf/baai/bge-*`); answer `result.data`.
  These models have one size: `dimensions` is refused.
- `gigachat`: `{url}/embeddings` with `{"model", "input": [texts]}` (what the SDK's `embeddings` call
  sends), through the chat adapter's OAuth token and error handling; no `dimensions`. Answer
  `data[].{index, embedding, usage}`.

Upstreams are always asked for floats; the front API encodes base64 itself. The gateway splits the
inputs into batches (`batch_size`) and calls `embed` once per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from app.config import HttpConfig, ModelConfig
from app.errors import InvalidRequest, ProxyError
from app.http import SessionPool
from app.providers import OPENAI_EMBEDDINGS, cloudflare, embedding_batch, embedding_shape, gemini
from app.providers.base import (
    MAX_ERROR_BODY,
    ChunkStream,
    Completion,
    Embeddings,
    Provider,
    UpstreamRequest,
    bearer_headers,
)
from app.providers.gigachat import GigaChat
from app.providers.shape import (
    TRANSLATION_ERRORS,
    MalformedAnswer,
    answer_error,
    error_for_status,
    expect,
    malformed,
    openai_error_message,
)

DEFAULT_COHERE_INPUT_TYPE = "search_document"

# --- requests (pure) ------------------------------------------------------------------------


def texts(inputs: Sequence[Any], model: ModelConfig) -> list[str]:
    """The inputs as strings; token arrays are refused by upstreams that take text only."""
    if not all(isinstance(item, str) for item in inputs):
        raise InvalidRequest(
            f"Model {model.name} takes text only: give 'input' as a string or a list of strings",
            param="input",
        )
    return list(inputs)


def openai_request(inputs: Sequence[Any], body: Mapping[str, Any], model: ModelConfig) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": model.upstream_model,
        "input": list(inputs),
        "encoding_format": "float",
    }
    for key in ("dimensions", "user"):
        if body.get(key) is not None:
            payload[key] = body[key]
    return payload


def gemini_request(inputs: Sequence[Any], body: Mapping[str, Any], model: ModelConfig) -> dict[str, Any]:
    name = f"models/{model.upstream_model.removeprefix('models/')}"
    extra: dict[str, Any] = {}
    if model.task_type:
        extra["taskType"] = model.task_type
    if body.get("dimensions") is not None:
        extra["outputDimensionality"] = body["dimensions"]
    return {
        "requests": [
            {"model": name, "content": {"parts": [{"text": text}]}, **extra} for text in texts(inputs, model)
        ]
    }


def cohere_request(inputs: Sequence[Any], body: Mapping[str, Any], model: ModelConfig) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": model.upstream_model,
        "texts": texts(inputs, model),
        "input_type": model.input_type or DEFAULT_COHERE_INPUT_TYPE,
        "embedding_types": ["float"],
    }
    if body.get("dimensions") is not None:
        payload["output_dimension"] = body["dimensions"]
    return payload


def refuse_dimensions(body: Mapping[str, Any], model: ModelConfig) -> None:
    """For models that make vectors of one size only."""
    if body.get("dimensions") is not None:
        raise InvalidRequest(
            f"Model {model.name} makes vectors of one size: 'dimensions' is not supported", param="dimensions"
        )


def cloudflare_request(inputs: Sequence[Any], body: Mapping[str, Any], model: ModelConfig) -> dict[str, Any]:
    refuse_dimensions(body, model)
    return {"text": texts(inputs, model)}


# --- answers (pure): (vectors in input order, prompt tokens or None) ------------------------


def vector(value: Any) -> list[float]:
    values = expect(value, list, "embedding")
    if not values:
        raise MalformedAnswer("an embedding is empty")
    for number in values:
        expect(number, (int, float), "embedding value")
    return values


def _tokens(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def openai_answer(data: Any, model_name: str) -> tuple[list[list[float]], int | None]:
    if isinstance(data, dict) and data.get("error"):
        raise answer_error(data["error"], model_name)
    items = expect(expect(data, dict, "answer").get("data"), list, "data")
    ordered: dict[int, list[float]] = {}
    for position, item in enumerate(items):
        expect(item, dict, "data[]")
        index = item.get("index", position)
        ordered[expect(index, int, "index")] = vector(item.get("embedding"))
    if sorted(ordered) != list(range(len(items))):
        raise MalformedAnswer("the embedding indexes are not 0..n-1")
    usage = data.get("usage")
    return [ordered[i] for i in range(len(items))], _tokens(
        usage.get("prompt_tokens") if isinstance(usage, dict) else None
    )


def gemini_answer(data: Any, model_name: str) -> tuple[list[list[float]], int | None]:
    items = expect(expect(data, dict, "answer").get("embeddings"), list, "embeddings")
    return [vector(expect(item, dict, "embeddings[]").get("values")) for item in items], None


def cohere_answer(data: Any, model_name: str) -> tuple[list[list[float]], int | None]:
    embeddings = expect(expect(data, dict, "answer").get("embeddings"), dict, "embeddings")
    vectors = [vector(item) for item in expect(embeddings.get("float"), list, "embeddings.float")]
    meta = data.get("meta")
    billed = meta.get("billed_units") if isinstance(meta, dict) else None
    return vectors, _tokens(billed.get("input_tokens") if isinstance(billed, dict) else None)


def cloudflare_answer(data: Any, model_name: str) -> tuple[list[list[float]], int | None]:
    result = cloudflare.envelope_result(data, model_name)
    return [vector(item) for item in expect(result.get("data"), list, "result.data")], None


Build = Callable[[Sequence[Any], Mapping[str, Any], ModelConfig], dict[str, Any]]
Parse = Callable[[Any, str], tuple[list[list[float]], int | None]]
SHAPES: dict[str, tuple[Build, Parse]] = {
    OPENAI_EMBEDDINGS: (openai_request, openai_answer),
    "gemini": (gemini_request, gemini_answer),
    "cohere": (cohere_request, cohere_answer),
    "cloudflare": (cloudflare_request, cloudflare_answer),
}


def checked_answer(
    parse: Parse, content: bytes, inputs: int, model_name: str
) -> tuple[list[list[float]], int | None]:
    """`parse` of the answer body, one vector per input; the error boundary: never a 500, never the body."""
    try:
        vectors, tokens = parse(orjson.loads(content), model_name)
        if len(vectors) != inputs:
            raise MalformedAnswer("the answer has a different number of embeddings than inputs")
    except TRANSLATION_ERRORS as exc:
        raise malformed(model_name, cause=exc) from None
    return vectors, tokens


def parse_error(
    shape: str, status: int, body: bytes, headers: Mapping[str, str], model_name: str
) -> ProxyError:
    if shape == "gemini":
        return gemini.gemini_error(status, body, headers, model_name)
    if shape == "cloudflare":
        return cloudflare.parse_error(status, body, headers, model_name)
    return error_for_status(status, openai_error_message(body), model_name, headers)


def endpoint(model: ModelConfig, shape: str) -> str:
    if shape == "gemini":
        return f"{gemini.model_url(model)}:batchEmbedContents"
    if shape == "cloudflare":
        return cloudflare.run_url(model)
    return model.url


def request_headers(model: ModelConfig, shape: str) -> dict[str, str]:
    return gemini.key_headers(model) if shape == "gemini" else bearer_headers(model)[0]


# --- the adapter ----------------------------------------------------------------------------


class EmbeddingProvider(Provider):
    """Any embedding model; the wire shape is fixed at start from the model's provider and URL."""

    def __init__(self, model: ModelConfig, sessions: SessionPool, http: HttpConfig) -> None:
        super().__init__(model, sessions, http)
        self.transport = sessions.transport(model.provider)
        self.shape = embedding_shape(model.provider, model.url) or OPENAI_EMBEDDINGS
        self.batch_size = model.max_batch or embedding_batch(model.provider, model.url)
        self.takes_tokens = self.shape == OPENAI_EMBEDDINGS
        self._build, self._parse = SHAPES[self.shape]
        self._url = endpoint(model, self.shape)
        self._headers = request_headers(model, self.shape)

    def complete(self, body: dict[str, Any]) -> Completion:
        raise InvalidRequest(
            f"Model {self.model.name} is an embedding model, not a chat model", param="model"
        )

    def stream(self, body: dict[str, Any]) -> ChunkStream:
        raise InvalidRequest(
            f"Model {self.model.name} is an embedding model, not a chat model", param="model"
        )

    def embed(self, inputs: list[Any], body: dict[str, Any]) -> Embeddings:
        payload = orjson.dumps(self._build(inputs, body, self.model))
        name = self.model.name
        response = self.transport.post(
            self._url, data=payload, headers=self._headers, stream=False, model_name=name
        )
        with response:
            if response.status_code >= 400:
                head = response.error_body(MAX_ERROR_BODY)
                raise parse_error(self.shape, response.status_code, head, response.headers, name)
            content = response.read()
        vectors, tokens = checked_answer(self._parse, content, len(inputs), name)
        return Embeddings(vectors, tokens, response.headers)


def gigachat_answer(data: Any, model_name: str) -> tuple[list[list[float]], int | None]:
    """GigaChat's `/embeddings` answer: `data[].{index, embedding, usage.prompt_tokens}`."""
    items = expect(expect(data, dict, "answer").get("data"), list, "data")
    vectors, _ = openai_answer({"data": items}, model_name)
    counts = [(item.get("usage") or {}).get("prompt_tokens") for item in items]
    return vectors, sum(counts) if all(isinstance(c, int) for c in counts) else None


class GigaChatEmbeddings(GigaChat):
    """A GigaChat embedding model: the chat adapter's OAuth token, 401 refresh, errors and redaction,
    another endpoint (`{url}/embeddings`, `{"model", "input": [texts]}`)."""

    def __init__(self, model: ModelConfig, sessions: SessionPool, http: HttpConfig) -> None:
        super().__init__(model, sessions, http)
        self.embeddings_url = model.url.rstrip("/") + "/embeddings"

    def complete(self, body: dict[str, Any]) -> Completion:
        raise InvalidRequest(f"Model {self.model.name} is an embedding model, not chat", param="model")

    def stream(self, body: dict[str, Any]) -> ChunkStream:
        raise InvalidRequest(f"Model {self.model.name} is an embedding model, not chat", param="model")

    def embed(self, inputs: list[Any], body: dict[str, Any]) -> Embeddings:
        refuse_dimensions(body, self.model)
        payload = orjson.dumps({"model": self.model.upstream_model, "input": texts(inputs, self.model)})
        try:
            request = UpstreamRequest(
                self.embeddings_url, payload, {**self._headers, "Authorization": f"Bearer {self.token.get()}"}
            )
            with self._post(request, stream=False) as response:
                if response.status_code >= 400:
                    head = response.error_body(MAX_ERROR_BODY)
                    raise self.parse_error(response.status_code, head, response.headers)
                content, answer_headers = response.read(), response.headers
        except ProxyError as exc:
            raise self._redacted(exc) from None
        vectors, tokens = checked_answer(gigachat_answer, content, len(inputs), self.model.name)
        return Embeddings(vectors, tokens, answer_headers)
