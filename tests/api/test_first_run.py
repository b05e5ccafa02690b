"""First run, in-process: a configured model or group with no enabled model says which variables to
set (404 model_not_found), the start-up log ends with one summary line, /status/disabled lists the
disabled models; no answer or log line shows a secret value."""

from __future__ import annotations

import logging

import pytest

from app import create_app
from app.config import parse_config

CLIENT_KEY = "client-key-canary-5d1e"
SECRET = "upstream-secret-canary-93ab"


def chat(client, name: str):
    body = {"model": name, "messages": [{"role": "user", "content": "hi"}]}
    return client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {CLIENT_KEY}"})


@pytest.fixture
def client(capsys: pytest.CaptureFixture[str]):
    raw = {
        "server": {"api_keys": [CLIENT_KEY]},
        "aliases": {"claude-*haiku*": "SMALL", "gpt-4o*": "groq/small", "claude-*": "BIG"},
        "models": [
            {"name": "groq/small", "provider": "groq", "url": "http://127.0.0.1:9/v1/chat/completions",
             "token": "${GROQ_KEY}", "model_size": "SMALL"},
            {"name": "gemini/small", "provider": "gemini", "url": "http://127.0.0.1:9/v1beta/models",
             "token": "${GEMINI_KEY}", "model_size": "SMALL"},
            {"name": "cohere/big", "provider": "cohere", "url": "http://127.0.0.1:9/v2/chat",
             "token": "${COHERE_KEY}", "model_size": "BIG"},
            {"name": "cf/flux", "provider": "cloudflare", "url": "http://127.0.0.1:9/ai/run",
             "token": "${CF_TOKEN}", "model_size": "IMAGE", "kind": "image"},
        ],
    }  # fmt: skip
    root = logging.getLogger("ai_proxy")
    saved = root.handlers[:], root.propagate, root.level
    app = create_app(parse_config(raw, {"COHERE_KEY": SECRET, "GEMINI_KEY": ""}))
    yield app.test_client()
    root.handlers[:], root.propagate, root.level = saved  # its handler writes to this test's capture


def not_found(response) -> str:
    assert response.status_code == 404, response.data
    error = response.get_json()["error"]
    assert error["code"] == "model_not_found" and error["type"] == "invalid_request_error"
    return error["message"]


def test_disabled_model_group_and_kind_name_the_variables(client, capsys) -> None:
    assert not_found(chat(client, "groq/small")) == "The model 'groq/small' is disabled: set GROQ_KEY"
    assert (
        not_found(chat(client, "small"))
        == "The group 'SMALL' has no enabled model: set GROQ_KEY or GEMINI_KEY"
    )
    assert not_found(chat(client, "nope")) == "The model 'nope' does not exist"  # cohere/big is enabled
    image = client.post(
        "/v1/images/generations",
        json={"model": "image", "prompt": "a cat"},
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
    )
    assert not_found(image) == "The group 'IMAGE' has no enabled model: set CF_TOKEN"
    models = client.get("/v1/models", headers={"Authorization": f"Bearer {CLIENT_KEY}"}).get_json()
    assert [m["id"] for m in models["data"]] == [
        "cohere/big",
        "BIG",
        "claude-*",
    ]  # aliases that lead somewhere
    disabled = client.get("/status/disabled", headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    assert [(m["name"], m["reason"]) for m in disabled.get_json()["data"]] == [
        ("groq/small", "set GROQ_KEY"),
        ("gemini/small", "set GEMINI_KEY"),
        ("cf/flux", "set CF_TOKEN"),
    ]
    assert client.get("/status/disabled").status_code == 401  # like /v1/quota: the key is needed
    log = capsys.readouterr().err  # the app's own log (WARNING and up are written at once)
    summary = [line for line in log.splitlines() if "models and" in line]
    assert len(summary) == 1 and summary[0].endswith(
        "config config.yaml: 1 of 4 models and 1 of 3 groups enabled; "
        "set GROQ_KEY, GEMINI_KEY, CF_TOKEN to enable the rest; storage memory"
    )
    everything = log + "".join(
        chat(client, name).get_data(as_text=True) for name in ("groq/small", "small", "cohere/big", "nope")
    )
    assert SECRET not in everything and CLIENT_KEY not in everything


def test_an_alias_of_a_disabled_model_or_group_says_what_it_points_to(client) -> None:
    assert not_found(chat(client, "claude-3-5-haiku-latest")) == (
        "'claude-3-5-haiku-latest' is an alias of 'SMALL'. "
        "The group 'SMALL' has no enabled model: set GROQ_KEY or GEMINI_KEY"
    )
    assert not_found(chat(client, "gpt-4o-mini")) == (
        "'gpt-4o-mini' is an alias of 'groq/small'. The model 'groq/small' is disabled: set GROQ_KEY"
    )
    served = chat(client, "claude-opus-4-8")  # an alias of an enabled group gets past routing
    assert served.status_code != 404 and served.headers["X-AI-Proxy-Model"] == "cohere/big"
    assert SECRET not in served.get_data(as_text=True)
