"""Transcription upstreams: OpenAI-compatible `…/audio/transcriptions` (Groq's answers) and Workers AI
`@cf/openai/whisper*` (the audio bytes as the body, or `{"audio": base64}` for large-v3-turbo).

The transcript says how many audio bytes arrived ("heard N bytes"), so a test can check that the
whole upload reached the upstream; `Recorded.body` keeps what was sent.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import io
import math
import re
import struct
import wave
from typing import Any

from .cloudflare import FakeCloudflare
from .openai import FakeOpenAI
from .server import Behavior, Recorded

__all__ = [
    "WHISPER",
    "WHISPER_TURBO",
    "FakeCloudflareWhisper",
    "FakeOpenAITranscription",
    "parse_form",
    "wav",
]

WHISPER = "@cf/openai/whisper"
WHISPER_TURBO = "@cf/openai/whisper-large-v3-turbo"


def wav(seconds: float = 0.5, rate: int = 16000) -> bytes:
    """A mono 16-bit WAV of a 440 Hz tone."""
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
        for i in range(int(seconds * rate))
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(frames)
    return out.getvalue()


def parse_form(req: Recorded) -> tuple[dict[str, str], dict[str, tuple[str, str, bytes]]]:
    """A multipart/form-data request: (text fields, files as (filename, content type, bytes))."""
    head = f"Content-Type: {req.headers.get('Content-Type', '')}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + req.body)
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, str, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files[name] = (part.get_filename(), part.get_content_type(), payload)
        else:
            fields[name] = payload.decode()
    return fields, files


class FakeOpenAITranscription(FakeOpenAI):
    """FakeOpenAI plus route `transcriptions` (POST any path ending `/audio/transcriptions`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.transcriptions_url = f"{self.base_url}/audio/transcriptions"
        self.add_route("transcriptions", "POST", re.compile(r".*/audio/transcriptions"), self.transcribe)

    @staticmethod
    def transcribe(req: Recorded) -> Behavior:
        fields, files = parse_form(req)
        if "file" not in files or not fields.get("model"):
            return Behavior(
                status=400,
                json={"error": {"message": "file and model are required", "type": "invalid_request_error"}},
            )
        text = f"heard {len(files['file'][2])} bytes"
        response_format = fields.get("response_format", "json")
        if response_format == "text":
            return Behavior(body=text.encode(), headers={"Content-Type": "text/plain; charset=utf-8"})
        if response_format in ("srt", "vtt"):
            cue = (
                "00:00:00,000 --> 00:00:00,500"
                if response_format == "srt"
                else "00:00:00.000 --> 00:00:00.500"
            )
            body = f"1\n{cue}\n{text}\n" if response_format == "srt" else f"WEBVTT\n\n{cue}\n{text}\n"
            return Behavior(body=body.encode(), headers={"Content-Type": "text/plain; charset=utf-8"})
        answer: dict[str, Any] = {"text": text, "x_groq": {"id": "req_01fake"}}
        if response_format == "verbose_json":
            answer.update(
                task="transcribe", language=fields.get("language", "english"), duration=0.5, segments=[]
            )
        return Behavior(json=answer)


class FakeCloudflareWhisper(FakeCloudflare):
    """FakeCloudflare whose `run` route transcribes `@cf/openai/whisper*` models."""

    def _run(self, req: Recorded) -> Behavior:
        model = req.params.get("model", "")
        if not model.startswith(WHISPER):
            return super()._run(req)
        audio = base64.b64decode(req.json["audio"]) if model == WHISPER_TURBO else req.body
        if not audio:
            return Behavior(
                status=400, json={"success": False, "errors": [{"code": 5006, "message": "no audio"}]}
            )
        text = f"heard {len(audio)} bytes"
        words = [{"word": w, "start": 0.1 * i, "end": 0.1 * i + 0.1} for i, w in enumerate(text.split())]
        result: dict[str, Any] = {"text": text, "word_count": len(words), "words": words}
        if model != WHISPER_TURBO:
            result["vtt"] = f"WEBVTT\n\n00:00.000 --> 00:00.300\n{text}\n"
        return Behavior(json={"result": result, "success": True, "errors": [], "messages": []})
