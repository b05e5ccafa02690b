"""POST /v1/audio/transcriptions: OpenAI's multipart transcription API over `kind: transcription` models.

The upload is parsed by Werkzeug as it arrives (spooled to a temporary file beyond a small size) and
handed to the provider as a stream, so it is never held twice in memory. `server.max_audio_bytes`
bounds the file: a 413 beyond it (the form may add a little for its other fields).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Blueprint, Response, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from app.api.render import served_headers, services
from app.errors import InvalidRequest, RequestTooLarge
from app.providers.transcription import FORMATS, Upload

bp = Blueprint("audio", __name__)

FORM_ALLOWANCE = 64 * 1024  # the other form fields and the multipart framing


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(f"The audio file is larger than the limit of {limit} bytes")


def read_form(limit: int) -> tuple[Upload, dict[str, Any]]:
    """The uploaded file and the form's fields, validated."""
    if not request.mimetype.startswith("multipart/form-data"):
        raise InvalidRequest("Send the audio as multipart/form-data with a 'file' field", param="file")
    if request.content_length is not None and request.content_length > limit + FORM_ALLOWANCE:
        raise _too_large(limit)
    request.max_content_length = limit + FORM_ALLOWANCE
    try:
        files, form = request.files, request.form
    except RequestEntityTooLarge:
        raise _too_large(limit) from None
    upload = files.get("file")
    if upload is None or not upload.filename:
        raise InvalidRequest("'file' is required: the audio file to transcribe", param="file")
    stream = upload.stream
    size = stream.seek(0, os.SEEK_END)
    if size > limit:
        raise _too_large(limit)
    if size == 0:
        raise InvalidRequest("'file' is empty", param="file")
    body: dict[str, Any] = {
        k: form[k] for k in ("model", "language", "prompt", "response_format") if form.get(k)
    }
    if not body.get("model"):
        raise InvalidRequest("'model' is required", param="model")
    if body.get("response_format", "json") not in FORMATS:
        raise InvalidRequest(
            f"'response_format' must be one of {', '.join(FORMATS)}", param="response_format"
        )
    if form.get("temperature"):
        try:
            body["temperature"] = float(form["temperature"])
        except ValueError:
            raise InvalidRequest("'temperature' must be a number", param="temperature") from None
        if not 0 <= body["temperature"] <= 1:
            raise InvalidRequest("'temperature' must be from 0 to 1", param="temperature")
    content_type = upload.mimetype or "application/octet-stream"
    return Upload(stream, upload.filename, content_type, size), body


@bp.post("/v1/audio/transcriptions")
@bp.post("/audio/transcriptions")
def transcriptions() -> Response:
    upload, body = read_form(services().config.server.max_audio_bytes)
    answer = services().gateway.transcribe(upload, body, g.trace)
    transcript = answer.transcript
    return Response(transcript.content, content_type=transcript.content_type, headers=served_headers(answer))
