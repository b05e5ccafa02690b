"""First run under gunicorn: the README's serve line on the shipped config with no keys set says what
to set (404 messages, one summary line at start after the per-model warnings) and shows no secret."""

from __future__ import annotations

import json
import re
from pathlib import Path

import openai
import pytest

from app.config import load_config
from tests.harness import REPO_ROOT, GunicornServer, openai_client

pytestmark = pytest.mark.e2e

SHIPPED = REPO_ROOT / "config.yaml"
CLIENT_KEY = "client-key-canary-5d1e"
SECRET = "upstream-secret-canary-93ab"


def test_every_model_disabled_under_gunicorn_from_another_directory(tmp_path: Path) -> None:
    """The README's serve line on the shipped config with no keys, started outside the repository."""
    needed = sorted({v for m in load_config(SHIPPED, {}).models for v in m.missing_env})
    env = {name: "" for name in needed}  # empty beats a developer's .env (it never overrides)
    env |= {"PYTHONPATH": str(REPO_ROOT), "AI_PROXY_API_KEYS": CLIENT_KEY, "CLOUDFLARE_ACCOUNT_ID": SECRET}
    server = GunicornServer(
        None,
        env=env,
        cwd=tmp_path,
        gunicorn_conf=str(REPO_ROOT / "gunicorn.conf.py"),
        workdir=tmp_path / "srv",
    )
    with server:
        client = openai_client(server, api_key=CLIENT_KEY)
        with pytest.raises(openai.NotFoundError) as small:
            client.chat.completions.create(model="SMALL", messages=[{"role": "user", "content": "hi"}])
        message = small.value.body["message"]
        assert small.value.body["code"] == "model_not_found"
        assert message.startswith(
            "The group 'SMALL' has no enabled model: set GROQ_API_KEY or GEMINI_API_KEY or "
        )
        with pytest.raises(openai.NotFoundError) as one:
            client.chat.completions.create(
                model="groq/llama-3.1-8b-instant", messages=[{"role": "user", "content": "hi"}]
            )
        assert (
            one.value.body["message"] == "The model 'groq/llama-3.1-8b-instant' is disabled: set GROQ_API_KEY"
        )
        with pytest.raises(openai.NotFoundError) as unknown:
            client.chat.completions.create(model="no-such", messages=[{"role": "user", "content": "hi"}])
        assert "no model is enabled yet: set GROQ_API_KEY or " in unknown.value.body["message"]
        with pytest.raises(openai.NotFoundError) as alias:  # the shipped aliases: Codex asks for gpt-*
            client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}])
        assert alias.value.body["message"].startswith(
            "'gpt-5' is an alias of 'BIG'. The group 'BIG' has no enabled model: set GROQ_API_KEY or "
        )
        assert client.models.list().data == []
        log = server.log_text()
    lines = log.splitlines()
    summary = [i for i, line in enumerate(lines) if "models and" in line]
    needs = re.compile(r"model \S+ disabled: its (token|keys) needs?")
    warnings = [i for i, line in enumerate(lines) if needs.search(line)]
    assert len(summary) == 1 and len(warnings) == 11 and summary[0] > max(warnings)
    assert (
        f"{SHIPPED}: 0 of 11 models and 0 of 3 groups enabled; set {', '.join(needed)}"[:60]
        in lines[summary[0]]
    )
    for name in needed:
        assert name in lines[summary[0]]
    everything = log + message + json.dumps(unknown.value.body)
    assert SECRET not in everything and CLIENT_KEY not in everything
