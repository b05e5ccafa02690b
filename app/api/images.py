"""POST /v1/images/generations (OpenAI Images) and the legacy POST /image (raw bytes)."""

from __future__ import annotations

import base64
import time
from typing import Any

from flask import Blueprint, Response, g

from app.api.chat import parse_json_object
from app.api.render import json_response, services
from app.errors import InvalidRequest

bp = Blueprint("images", __name__)


def validate_image(body: dict[str, Any]) -> None:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest("'prompt' is required and must be a non-empty string", param="prompt")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest("'model' must be a string", param="model")
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
        raise InvalidRequest("'n' must be an integer from 1 to 10", param="n")
    fmt = body.get("response_format", "b64_json")
    if fmt not in (None, "b64_json", "url"):
        raise InvalidRequest("'response_format' must be 'b64_json' or 'url'", param="response_format")


@bp.post("/v1/images/generations")
@bp.post("/images/generations")
def generations() -> Response:
    body = parse_json_object()
    validate_image(body)
    answer = services().gateway.image(body, g.trace)
    as_url = body.get("response_format") == "url"
    data = []
    for image in answer.result.images:
        encoded = base64.b64encode(image.data).decode("ascii")
        item: dict[str, Any] = (
            {"url": f"data:{image.content_type};base64,{encoded}"} if as_url else {"b64_json": encoded}
        )
        if image.revised_prompt:
            item["revised_prompt"] = image.revised_prompt
        data.append(item)
    headers = {**answer.headers, "X-AI-Proxy-Model": answer.model.name}
    return json_response({"created": int(time.time()), "data": data}, headers=headers)


@bp.post("/image")
def legacy_image() -> Response:
    body = parse_json_object()
    validate_image(body)
    answer = services().gateway.image({**body, "n": 1}, g.trace)
    image = answer.result.images[0]
    headers = {**answer.headers, "X-AI-Proxy-Model": answer.model.name}
    return Response(image.data, mimetype=image.content_type, headers=headers)
