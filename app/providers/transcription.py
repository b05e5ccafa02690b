"""Transcription models (`kind: transcription`): OpenAI-compatible urls and Workers AI whisper.

- `openai` (a compatible `…/audio/transcriptions` url: Groq whisper, OpenAI): OpenAI's multipart form
  as the client sent it (`model` set to the upstream id); the answer passes through in the format
  asked for (json, text, verbose_json, srt, vtt).
- `cloudflare` (`@cf/openai/whisper*` at `{url}/{model}`): the audio bytes as the body (`whisper`,
  `whisper-tiny-en`), or `{"audio": base64, ...}` for `whisper-large-v3-turbo`, which takes only JSON
  (the one case that holds the audio in memory, as base64). The answer `result.{text, words, vtt}` is
  rendered in the format asked for.

The upload is never read into memory for the multipart and raw shapes: `Upload` streams the file
(Werkzeug has spooled it to disk when large) from its start on every call, so a retry or a fallback
sends it again, with a Content-Length. It goes through the shared transport (app.http), like every
other call: the whole call within `http.read_timeout`, the answer within `http.max_response_bytes`,
transport failures mapped in the one place.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

import orjson

from app.config import HttpConfig, ModelConfig
from app.errors import InvalidRequest
from app.http import SessionPool
from app.providers import cloudflare, transcribes_openai
from app.providers.base import MAX_ERROR_BODY, ChunkStream, Completion, Provider, Transcript
from app.providers.shape import (
    TRANSLATION_ERRORS,
    error_for_status,
    expect,
    malformed,
    openai_error_message,
)

READ_SIZE = 64 * 1024
FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
FORM_FIELDS = ("language", "prompt", "response_format", "temperature")
TURBO = "whisper-large-v3-turbo"


@dataclass(slots=True)
class Upload:
    """The client's audio file: a seekable stream, its name, type and size in bytes."""

    stream: IO[bytes]
    filename: str
    content_type: str
    size: int

    def chunks(self) -> Iterator[bytes]:
        self.stream.seek(0)
        while chunk := self.stream.read(READ_SIZE):
            yield chunk

    def read_all(self) -> bytes:
        self.stream.seek(0)
        return self.stream.read()


class StreamedBody:
    """A request body requests sends as it iterates, with a known length (so a Content-Length)."""

    def __init__(self, parts: list[bytes | Upload]) -> None:
        self.parts = parts

    def __len__(self) -> int:
        return sum(part.size if isinstance(part, Upload) else len(part) for part in self.parts)

    def __iter__(self) -> Iterator[bytes]:
        for part in self.parts:
            if isinstance(part, Upload):
                yield from part.chunks()
            else:
                yield part


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")


def multipart(fields: Mapping[str, str], upload: Upload, boundary: str) -> tuple[StreamedBody, str]:
    """OpenAI's transcription form: the text fields, then `file`; (body, its Content-Type)."""
    parts: list[bytes | Upload] = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    parts.append(
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{_quoted(upload.filename)}"\r\nContent-Type: {upload.content_type}\r\n\r\n'
        ).encode()
    )
    parts.append(upload)
    parts.append(f"\r\n--{boundary}--\r\n".encode())
    return StreamedBody(parts), f"multipart/form-data; boundary={boundary}"


def form_fields(body: Mapping[str, Any], upstream_model: str) -> dict[str, str]:
    fields = {"model": upstream_model}
    fields.update({k: str(body[k]) for k in FORM_FIELDS if body.get(k) not in (None, "")})
    return fields


# --- Workers AI answers -> OpenAI's formats (pure) ------------------------------------------


def _timestamp(seconds: float, comma: bool) -> str:
    millis = round(max(seconds, 0.0) * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{',' if comma else '.'}{millis:03d}"


def segments(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One segment per Workers AI `segments` entry, else one for the whole text over its words."""
    found = result.get("segments")
    if isinstance(found, list) and found:
        return [
            {
                "id": i,
                "start": float(s["start"]),
                "end": float(s["end"]),
                "text": expect(s["text"], str, "text"),
            }
            for i, s in enumerate(found)
        ]
    words = result.get("words") if isinstance(result.get("words"), list) else []
    end = float(words[-1]["end"]) if words else 0.0
    start = float(words[0]["start"]) if words else 0.0
    return [{"id": 0, "start": start, "end": end, "text": expect(result.get("text"), str, "text")}]


def render(result: Mapping[str, Any], response_format: str, language: str | None) -> tuple[bytes, str]:
    """A Workers AI whisper `result` in OpenAI's `response_format`: (body, content type)."""
    text = expect(result.get("text"), str, "text")
    if response_format == "text":
        return text.encode(), "text/plain; charset=utf-8"
    if response_format == "json":
        return orjson.dumps({"text": text}), "application/json"
    parts = segments(result)
    if response_format == "verbose_json":
        info = result.get("transcription_info") if isinstance(result.get("transcription_info"), dict) else {}
        answer = {
            "task": "transcribe",
            "language": info.get("language") or language or "",
            "duration": float(info.get("duration") or (parts[-1]["end"] if parts else 0.0)),
            "text": text,
            "segments": parts,
        }
        return orjson.dumps(answer), "application/json"
    if response_format == "vtt":
        if isinstance(result.get("vtt"), str) and result["vtt"]:
            return result["vtt"].encode(), "text/vtt; charset=utf-8"
        cues = [
            f"{_timestamp(p['start'], False)} --> {_timestamp(p['end'], False)}\n{p['text'].strip()}"
            for p in parts
        ]
        return ("WEBVTT\n\n" + "\n\n".join(cues) + "\n").encode(), "text/vtt; charset=utf-8"
    cues = [
        f"{i + 1}\n{_timestamp(p['start'], True)} --> {_timestamp(p['end'], True)}\n{p['text'].strip()}"
        for i, p in enumerate(parts)
    ]
    return ("\n\n".join(cues) + "\n").encode(), "text/plain; charset=utf-8"


def check_openai_answer(content: bytes, response_format: str) -> None:
    """A JSON format's answer must be a JSON object with `text` (the others are text as they are)."""
    if response_format in ("json", "verbose_json"):
        expect(expect(orjson.loads(content), dict, "answer").get("text"), str, "text")


# --- the adapter ----------------------------------------------------------------------------


class TranscriptionProvider(Provider):
    """Any transcription model; the wire shape is fixed at start from the model's provider and URL."""

    def __init__(self, model: ModelConfig, sessions: SessionPool, http: HttpConfig) -> None:
        super().__init__(model, sessions, http)
        self.transport = sessions.transport(model.provider)
        self.openai = transcribes_openai(model.provider, model.url)
        self.url = model.url if self.openai else cloudflare.run_url(model)
        self._auth = {**model.headers}
        if model.token:
            self._auth["Authorization"] = f"Bearer {model.token}"

    def complete(self, body: dict[str, Any]) -> Completion:
        raise InvalidRequest(f"Model {self.model.name} is a transcription model, not chat", param="model")

    def stream(self, body: dict[str, Any]) -> ChunkStream:
        raise InvalidRequest(f"Model {self.model.name} is a transcription model, not chat", param="model")

    def transcribe(self, audio: Upload, body: dict[str, Any]) -> Transcript:
        response_format = str(body.get("response_format") or "json")
        if self.openai:
            data, content_type = multipart(
                form_fields(body, self.model.upstream_model), audio, f"ai-proxy-{uuid.uuid4().hex}"
            )
            return self._openai(data, content_type, response_format)
        return self._cloudflare(audio, body, response_format)

    def _openai(self, data: StreamedBody, content_type: str, response_format: str) -> Transcript:
        content, headers, upstream_type = self._post(data, {"Content-Type": content_type})
        try:
            check_openai_answer(content, response_format)
        except TRANSLATION_ERRORS as exc:  # the error boundary: never a 500, never the body
            raise malformed(self.model.name, cause=exc) from None
        fallback = "application/json" if response_format in ("json", "verbose_json") else "text/plain"
        return Transcript(content, upstream_type or fallback, headers)

    def _cloudflare(self, audio: Upload, body: Mapping[str, Any], response_format: str) -> Transcript:
        if self.model.upstream_model.endswith(TURBO):
            payload: dict[str, Any] = {"audio": base64.b64encode(audio.read_all()).decode("ascii")}
            if body.get("language"):
                payload["language"] = body["language"]
            if body.get("prompt"):
                payload["initial_prompt"] = body["prompt"]
            content, headers, _ = self._post(orjson.dumps(payload), {"Content-Type": "application/json"})
        else:
            content, headers, _ = self._post(
                StreamedBody([audio]), {"Content-Type": audio.content_type or "application/octet-stream"}
            )
        try:
            result = cloudflare.envelope_result(orjson.loads(content), self.model.name)
            rendered, content_type = render(result, response_format, body.get("language"))
        except TRANSLATION_ERRORS as exc:  # the error boundary: never a 500, never the body
            raise malformed(self.model.name, cause=exc) from None
        return Transcript(rendered, content_type, headers)

    def _post(
        self, data: bytes | StreamedBody, headers: Mapping[str, str]
    ) -> tuple[bytes, Mapping[str, str], str]:
        """POST `data` (bytes, or a StreamedBody sent as it is read); (body, headers, content type)."""
        name = self.model.name
        response = self.transport.post(
            self.url, data=data, headers={**self._auth, **headers}, stream=False, model_name=name
        )
        if response.status_code >= 400:
            status, head = response.status_code, response.error_body(MAX_ERROR_BODY)
            if self.openai:
                raise error_for_status(status, openai_error_message(head), name, response.headers)
            raise cloudflare.parse_error(status, head, response.headers, name)
        return response.read(), response.headers, response.headers.get("Content-Type", "")
