"""POST /v1/embeddings: OpenAI's Embeddings API over `kind: embedding` models."""

from __future__ import annotations

import base64
import struct
from typing import Any

from flask import Blueprint, Response, g

from app.api.chat import parse_json_object
from app.api.render import json_response, served_headers, services
from app.errors import InvalidRequest

bp = Blueprint("embeddings", __name__)

MAX_INPUTS = 2048  # OpenAI's own limit on one request's inputs
ENCODINGS = ("float", "base64")


def _is_tokens(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)
    )


def parse_inputs(value: Any) -> list[Any]:
    """OpenAI's `input` as a list of inputs: a string, a list of strings, a token array (a list of
    integers) or a list of token arrays. Empty inputs are refused, as OpenAI does."""
    if isinstance(value, str) or _is_tokens(value):
        value = [value]
    if not isinstance(value, list) or not value:
        raise InvalidRequest(
            "'input' is required: a string, a list of strings, or a list of token arrays", param="input"
        )
    if len(value) > MAX_INPUTS:
        raise InvalidRequest(f"'input' may hold at most {MAX_INPUTS} items", param="input")
    for item in value:
        if isinstance(item, str) and item:
            continue
        if not _is_tokens(item):
            raise InvalidRequest(
                "every item of 'input' must be a non-empty string or a non-empty array of token ids",
                param="input",
            )
    return value


def validate_embeddings(body: dict[str, Any]) -> list[Any]:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model")
    if body.get("encoding_format", "float") not in (*ENCODINGS, None):
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1
    ):
        raise InvalidRequest("'dimensions' must be a positive integer", param="dimensions")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise InvalidRequest("'user' must be a string", param="user")
    return parse_inputs(body.get("input"))


def base64_vector(vector: list[float]) -> str:
    """OpenAI's base64 encoding: the little-endian float32 bytes of the vector."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


@bp.post("/v1/embeddings")
@bp.post("/embeddings")
def embeddings() -> Response:
    body = parse_json_object()
    inputs = validate_embeddings(body)
    answer = services().gateway.embed(inputs, body, g.trace)
    encode = base64_vector if body.get("encoding_format") == "base64" else list
    data = [
        {"object": "embedding", "index": index, "embedding": encode(vector)}
        for index, vector in enumerate(answer.vectors)
    ]
    usage = {"prompt_tokens": answer.prompt_tokens, "total_tokens": answer.prompt_tokens}
    payload = {"object": "list", "data": data, "model": answer.model.name, "usage": usage}
    return json_response(payload, headers=served_headers(answer))
