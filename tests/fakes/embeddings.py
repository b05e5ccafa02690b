"""Embedding endpoints of each provider, on top of its chat fake (same keys, same error envelopes).

- FakeOpenAIEmbeddings: `POST …/embeddings`, OpenAI's request and answer (token arrays too, `dimensions`
  truncates, at most 2048 inputs).
- FakeGeminiEmbeddings: `POST /v1beta/models/{model}:batchEmbedContents`, key in `x-goog-api-key`, at
  most 100 requests, each naming `models/{model}`; `outputDimensionality` truncates.
- FakeCohereEmbeddings: `POST /v2/embed`, at most 96 texts, `input_type` required, `embedding_types`.
- FakeCloudflareEmbeddings: `POST …/ai/run/@cf/baai/bge-*` with `{"text": [...]}`, at most 100 texts.

Each vector is `vector_for(text)`: derived from the text alone, and exact in float32, so a test can
check order and base64 round trips against it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from . import cloudflare as cloudflare_fake
from . import gemini as gemini_fake
from .cloudflare import FakeCloudflare
from .cohere import FakeCohere
from .gemini import FakeGemini
from .gigachat import FakeGigaChat
from .openai import FakeOpenAI
from .server import Behavior, Recorded, Route

__all__ = [
    "BGE",
    "FakeCloudflareEmbeddings",
    "FakeCohereEmbeddings",
    "FakeGeminiEmbeddings",
    "FakeGigaChatEmbeddings",
    "FakeOpenAIEmbeddings",
    "vector_for",
]

BGE = "@cf/baai/bge-small-en-v1.5"
DIMENSIONS = 8


def vector_for(item: Any, dimensions: int = DIMENSIONS) -> list[float]:
    """A vector that depends only on the input: multiples of 1/128 in [-1, 1) (exact in float32)."""
    digest = hashlib.sha256(repr(item).encode()).digest()
    return [(digest[i] - 128) / 128 for i in range(dimensions)]


def _tokens(texts: list[Any]) -> int:
    return sum(len(t) // 4 + 1 if isinstance(t, str) else len(t) for t in texts)


class FakeOpenAIEmbeddings(FakeOpenAI):
    """FakeOpenAI plus route `embeddings` (POST any path ending `/embeddings`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.embeddings_url = f"{self.base_url}/embeddings"
        self.add_route("embeddings", "POST", re.compile(r".*/embeddings"), self.embeddings_answer)

    @staticmethod
    def embeddings_answer(req: Recorded) -> Behavior:
        body = req.json or {}
        inputs = body.get("input")
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs or len(inputs) > 2048 or not body.get("model"):
            return Behavior(
                status=400,
                json={
                    "error": {
                        "message": "'$.input' is invalid.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
            )
        dimensions = body.get("dimensions") or DIMENSIONS
        data = [
            {"object": "embedding", "index": i, "embedding": vector_for(item, dimensions)}
            for i, item in enumerate(inputs)
        ]
        used = _tokens(inputs)
        return Behavior(
            json={
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": used, "total_tokens": used},
            }
        )


class FakeGeminiEmbeddings(FakeGemini):
    """FakeGemini plus route `embed` (POST `/v1beta/models/{model}:batchEmbedContents`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        path = re.compile(r"/v1beta/models/(?P<model>[^/:]+):batchEmbedContents")
        self.add_route("embed", "POST", path, self.embed_answer)

    def before(self, req: Recorded, route: Route) -> Behavior | None:
        if route.name != "embed":
            return super().before(req, route)
        key = req.headers.get("x-goog-api-key") or req.query.get("key")
        if not key:
            return gemini_fake.error_response("missing_key")
        if key != self.api_key:
            return gemini_fake.error_response("bad_key")
        return None

    @staticmethod
    def embed_answer(req: Recorded) -> Behavior:
        requests = (req.json or {}).get("requests")
        wanted = f"models/{req.params['model']}"
        if not isinstance(requests, list) or not requests:
            return _gemini_invalid("* BatchEmbedContentsRequest.requests: contents is not specified")
        if len(requests) > 100:
            return _gemini_invalid(
                "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch"
            )
        vectors = []
        for one in requests:
            if one.get("model") != wanted:
                return _gemini_invalid(f"Model names in the batch must match: {one.get('model')}")
            text = one["content"]["parts"][0]["text"]
            vectors.append({"values": vector_for(text, one.get("outputDimensionality") or DIMENSIONS)})
        return Behavior(json={"embeddings": vectors})


def _gemini_invalid(message: str) -> Behavior:
    return Behavior(
        status=400, json={"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}
    )


class FakeCohereEmbeddings(FakeCohere):
    """FakeCohere plus route `embed` (POST `/v2/embed`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.embed_url = self.url + "/v2/embed"
        self.add_route("embed", "POST", "/v2/embed", self.embed_answer)

    @staticmethod
    def embed_answer(req: Recorded) -> Behavior:
        body = req.json or {}
        texts = body.get("texts")
        if not isinstance(texts, list) or not texts or len(texts) > 96:
            got = len(texts) if isinstance(texts, list) else 0
            return Behavior(
                status=400,
                json={
                    "id": "e1",
                    "message": f"invalid request: total number of texts must be at most 96 - received {got}",
                },
            )
        if body.get("input_type") not in (
            "search_document",
            "search_query",
            "classification",
            "clustering",
            "image",
        ):
            return Behavior(
                status=400,
                json={
                    "id": "e2",
                    "message": "invalid request: valid input_type must be provided with the provided model",
                },
            )
        dimensions = body.get("output_dimension") or DIMENSIONS
        embeddings = {
            kind: [vector_for(t, dimensions) for t in texts]
            for kind in body.get("embedding_types") or ["float"]
        }
        return Behavior(
            json={
                "id": "da6e531f-54c6-4a73-bf92-f60566d8d753",
                "embeddings": embeddings,
                "texts": texts,
                "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": _tokens(texts)}},
                "response_type": "embeddings_by_type",
            }
        )


class FakeCloudflareEmbeddings(FakeCloudflare):
    """FakeCloudflare whose `run` route answers `@cf/baai/bge-*` models with embeddings."""

    def _run(self, req: Recorded) -> Behavior:
        if not req.params.get("model", "").startswith("@cf/baai/bge"):
            return super()._run(req)
        texts = (req.json or {}).get("text")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or len(texts) > 100:
            return Behavior(
                status=400,
                json=cloudflare_fake.error_body(5006, "Error: required properties at '/' are 'text'"),
            )
        data = [vector_for(t) for t in texts]
        return Behavior(
            json={
                "result": {"shape": [len(data), DIMENSIONS], "data": data, "pooling": "mean"},
                "success": True,
                "errors": [],
                "messages": [],
            }
        )


class FakeGigaChatEmbeddings(FakeGigaChat):
    """FakeGigaChat (OAuth, bearer tokens) plus route `embeddings` (POST `/api/v1/embeddings`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_route("embeddings", "POST", "/api/v1/embeddings", self.embeddings_answer)

    @staticmethod
    def embeddings_answer(req: Recorded) -> Behavior:
        body = req.json or {}
        texts = body.get("input")
        if not isinstance(texts, list) or not texts or not body.get("model"):
            return Behavior(status=422, json={"status": 422, "message": "input: field required"})
        data = [
            {
                "object": "embedding",
                "embedding": vector_for(t),
                "index": i,
                "usage": {"prompt_tokens": len(t) // 4 + 1},
            }
            for i, t in enumerate(texts)
        ]
        return Behavior(json={"object": "list", "data": data, "model": body["model"]})
