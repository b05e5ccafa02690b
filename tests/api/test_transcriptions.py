"""POST /v1/audio/transcriptions in-process, driven by the official `openai` SDK over httpx's WSGI
transport, against a Groq-style OpenAI-compatible fake and Workers AI whisper, with a WAV the test makes."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from app.providers.transcription import StreamedBody, Upload, render
from tests.api.conftest import Proxy, openai_sdk
from tests.fakes import cloudflare as cf_fake
from tests.fakes.hostile import HostileServer
from tests.fakes.transcription import (
    WHISPER,
    WHISPER_TURBO,
    FakeCloudflareWhisper,
    FakeOpenAITranscription,
    parse_form,
    wav,
)

UPSTREAM_KEY = "gsk-fake-upstream-key"
AUDIO = wav()


@pytest.fixture
def groq() -> Iterator[FakeOpenAITranscription]:
    with FakeOpenAITranscription(api_key=UPSTREAM_KEY) as fake:
        yield fake


@pytest.fixture
def cloudflare() -> Iterator[FakeCloudflareWhisper]:
    with FakeCloudflareWhisper() as fake:
        yield fake


def config(groq: FakeOpenAITranscription, cloudflare: FakeCloudflareWhisper, **server: Any) -> dict[str, Any]:
    def model(name: str, provider: str, url: str, token: str, upstream: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "provider": provider, "url": url, "token": token, "upstream_model": upstream,
                "kind": "transcription", **extra}  # fmt: skip

    return {
        "models": [
            model("groq/whisper", "groq", groq.transcriptions_url, UPSTREAM_KEY, "whisper-large-v3-turbo"),
            model("cf/whisper", "cloudflare", cloudflare.run_url, cf_fake.API_TOKEN, WHISPER),
            model("cf/turbo", "cloudflare", cloudflare.run_url, cf_fake.API_TOKEN, WHISPER_TURBO),
            model(
                "a/w", "groq", groq.transcriptions_url, UPSTREAM_KEY, "whisper-large-v3", model_size="VOICE"
            ),
            model(
                "b/w", "groq", groq.transcriptions_url, UPSTREAM_KEY, "whisper-large-v3", model_size="VOICE"
            ),
            {"name": "chat", "provider": "groq", "url": groq.chat_url, "token": UPSTREAM_KEY},
        ],
        "retry": {"max_attempts": 1},
        "routing": {"cooldown_seconds": 0},
        "server": server,
    }


@pytest.fixture
def app_proxy(
    proxy: Callable[..., Proxy], groq: FakeOpenAITranscription, cloudflare: FakeCloudflareWhisper
) -> Proxy:
    return proxy(config(groq, cloudflare))


@pytest.fixture
def client(app_proxy: Proxy) -> Iterator[openai.OpenAI]:
    with openai_sdk(app_proxy) as sdk:
        yield sdk


def test_groq_json(client: openai.OpenAI, groq: FakeOpenAITranscription) -> None:
    answer = client.audio.transcriptions.create(
        model="groq/whisper",
        file=("note.wav", AUDIO, "audio/wav"),
        language="en",
        prompt="Hi",
        temperature=0.2,
    )
    assert answer.text == f"heard {len(AUDIO)} bytes"
    sent = groq.requests_for("transcriptions")[0]
    fields, files = parse_form(sent)
    assert fields == {
        "model": "whisper-large-v3-turbo",
        "language": "en",
        "prompt": "Hi",
        "temperature": "0.2",
    }
    assert files["file"] == ("note.wav", "audio/wav", AUDIO)
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert int(sent.headers["Content-Length"]) == len(sent.body)  # streamed with a length, not chunked


def test_counts_in_the_clients_usage(app_proxy: Proxy, client: openai.OpenAI) -> None:
    for _ in range(2):
        client.audio.transcriptions.create(model="groq/whisper", file=("note.wav", AUDIO, "audio/wav"))
    usage = app_proxy.client.get("/v1/usage", headers=app_proxy.auth).get_json()["data"]
    assert [(r["model"], r["requests"], r["prompt_tokens"]) for r in usage] == [("groq/whisper", 2, 0)]


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt"])
def test_groq_text_formats_pass_through(client: openai.OpenAI, fmt: str) -> None:
    answer = client.audio.transcriptions.create(
        model="groq/whisper", file=("a.wav", AUDIO), response_format=fmt
    )
    assert f"heard {len(AUDIO)} bytes" in answer
    assert answer.startswith("WEBVTT") == (fmt == "vtt")


def test_cloudflare_whisper_gets_the_raw_audio(
    client: openai.OpenAI, cloudflare: FakeCloudflareWhisper
) -> None:
    answer = client.audio.transcriptions.create(model="cf/whisper", file=("a.wav", AUDIO, "audio/wav"))
    assert answer.text == f"heard {len(AUDIO)} bytes"
    assert cloudflare.requests_for("run")[0].body == AUDIO
    verbose = client.audio.transcriptions.create(
        model="cf/whisper", file=("a.wav", AUDIO), response_format="verbose_json", language="en"
    )
    assert verbose.text == answer.text and verbose.language == "en"
    vtt = client.audio.transcriptions.create(model="cf/whisper", file=("a.wav", AUDIO), response_format="vtt")
    assert vtt.startswith("WEBVTT")


def test_cloudflare_turbo_takes_base64_json(client: openai.OpenAI, cloudflare: FakeCloudflareWhisper) -> None:
    srt = client.audio.transcriptions.create(
        model="cf/turbo", file=("a.wav", AUDIO), response_format="srt", language="de"
    )
    assert srt.startswith("1\n00:00:00,000 --> 00:00:00,300\n")
    assert cloudflare.requests_for("run")[0].json["language"] == "de"


def test_group_falls_back_and_resends_the_whole_file(
    client: openai.OpenAI, groq: FakeOpenAITranscription
) -> None:
    groq.push_error("server_error", route="transcriptions")
    answer = client.audio.transcriptions.create(model="VOICE", file=("a.wav", AUDIO))
    assert answer.text == f"heard {len(AUDIO)} bytes"
    sent = groq.requests_for("transcriptions")
    assert len(sent) == 2
    assert parse_form(sent[0])[1]["file"][2] == parse_form(sent[1])[1]["file"][2] == AUDIO


def test_too_large_is_413(
    proxy: Callable[..., Proxy], groq: FakeOpenAITranscription, cloudflare: FakeCloudflareWhisper
) -> None:
    app = proxy(config(groq, cloudflare, max_audio_bytes=len(AUDIO) - 1))
    data = {"model": "groq/whisper", "file": (io.BytesIO(AUDIO), "a.wav")}
    answer = app.client.post(
        "/v1/audio/transcriptions", data=data, headers=app.auth, content_type="multipart/form-data"
    )
    assert answer.status_code == 413
    assert answer.get_json()["error"]["code"] == "request_too_large"
    just = proxy(config(groq, cloudflare, max_audio_bytes=len(AUDIO)))
    data = {"model": "groq/whisper", "file": (io.BytesIO(AUDIO), "a.wav")}
    ok = just.client.post(
        "/v1/audio/transcriptions", data=data, headers=just.auth, content_type="multipart/form-data"
    )
    assert ok.status_code == 200
    assert len(groq.requests_for("transcriptions")) == 1


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ({"model": "groq/whisper"}, "file"),
        ({"file": (io.BytesIO(b"RIFF"), "a.wav")}, "model"),
        (
            {"model": "groq/whisper", "file": (io.BytesIO(b"RIFF"), "a.wav"), "response_format": "mp3"},
            "response_format",
        ),
        (
            {"model": "groq/whisper", "file": (io.BytesIO(b"RIFF"), "a.wav"), "temperature": "hot"},
            "temperature",
        ),
        ({"model": "chat", "file": (io.BytesIO(b"RIFF"), "a.wav")}, "model"),
    ],
)
def test_bad_requests(
    app_proxy: Proxy, groq: FakeOpenAITranscription, data: dict[str, Any], param: str
) -> None:
    answer = app_proxy.client.post(
        "/v1/audio/transcriptions", data=data, headers=app_proxy.auth, content_type="multipart/form-data"
    )
    assert answer.status_code == 400
    assert answer.get_json()["error"]["param"] == param
    assert groq.requests == []


def test_streamed_body_rereads_the_file() -> None:
    upload = Upload(io.BytesIO(b"x" * 200_000), "a.wav", "audio/wav", 200_000)
    body = StreamedBody([b"head", upload, b"tail"])
    assert len(body) == 200_008
    first = list(body)
    assert len(first) > 3  # the file goes in pieces, never as one block
    assert b"".join(first) == b"head" + b"x" * 200_000 + b"tail" == b"".join(body)


def test_render_formats() -> None:
    result = {
        "text": "hello world",
        "words": [{"word": "hello", "start": 0, "end": 0.5}, {"word": "world", "start": 0.5, "end": 61.25}],
    }
    assert render(result, "text", None) == (b"hello world", "text/plain; charset=utf-8")
    srt, _ = render(result, "srt", None)
    assert srt == b"1\n00:00:00,000 --> 00:01:01,250\nhello world\n"
    vtt, _ = render(result, "vtt", None)
    assert vtt == b"WEBVTT\n\n00:00:00.000 --> 00:01:01.250\nhello world\n"


def test_audio_limit_not_body_limit_applies(
    proxy: Callable[..., Proxy], groq: FakeOpenAITranscription, cloudflare: FakeCloudflareWhisper
) -> None:
    app = proxy(config(groq, cloudflare, max_body_bytes=1024))  # JSON bodies: 1 KiB; audio: the default
    data = {"model": "groq/whisper", "file": (io.BytesIO(AUDIO), "a.wav")}
    answer = app.client.post(
        "/v1/audio/transcriptions", data=data, headers=app.auth, content_type="multipart/form-data"
    )
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["text"] == f"heard {len(AUDIO)} bytes"


def test_unreachable_upstream_is_502(
    proxy: Callable[..., Proxy], groq: FakeOpenAITranscription, cloudflare: FakeCloudflareWhisper
) -> None:
    raw = config(groq, cloudflare)
    raw["models"][0]["url"] = "http://127.0.0.1:9/v1/audio/transcriptions"  # the discard port: refused
    app = proxy(raw)
    data = {"model": "groq/whisper", "file": (io.BytesIO(AUDIO), "a.wav")}
    answer = app.client.post(
        "/v1/audio/transcriptions", data=data, headers=app.auth, content_type="multipart/form-data"
    )
    assert answer.status_code == 502
    assert "groq/whisper" in answer.get_json()["error"]["message"]
    assert "127.0.0.1" not in answer.get_json()["error"]["message"]


@pytest.mark.parametrize(
    ("mode", "status", "bound"),
    [
        ("slow-headers", 504, "http.read_timeout (2 s)"),
        ("slow-body", 504, "http.read_timeout (2 s)"),
        ("huge", 502, "http.max_response_bytes (1048576 bytes)"),
    ],
)
def test_a_hostile_upstream_meets_the_transport_bounds(
    proxy: Callable[..., Proxy],
    groq: FakeOpenAITranscription,
    cloudflare: FakeCloudflareWhisper,
    mode: str,
    status: int,
    bound: str,
) -> None:
    """A byte a second never trips a socket timeout: the whole answer's deadline must end the call;
    and an endless answer stops at the cap."""
    raw = config(groq, cloudflare)
    raw["http"] = {"read_timeout": 2, "max_response_bytes": 1024 * 1024}
    with ThreadPoolExecutor(1) as pool, HostileServer() as hostile:  # the server stops first
        raw["models"][0]["url"] = f"{hostile.url}/{mode}/openai/v1/audio/transcriptions"
        app = proxy(raw)
        data = {"model": "groq/whisper", "file": (io.BytesIO(AUDIO), "a.wav")}
        call = pool.submit(
            app.client.post,
            "/v1/audio/transcriptions",
            data=data,
            headers=app.auth,
            content_type="multipart/form-data",
        )
        answer = call.result(timeout=30)  # the trickle itself would go on for hours
    assert answer.status_code == status
    message = answer.get_json()["error"]["message"]
    assert "groq/whisper" in message and bound in message
    assert "127.0.0.1" not in message and UPSTREAM_KEY not in message
    assert hostile.requests == {mode: 1}
