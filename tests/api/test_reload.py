"""ReloadingApp in-process: a reload swaps in the new models over the same storage (memory counts
kept), and a broken file changes nothing but one log line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml
from werkzeug.test import Client

from app import announce, create_app
from app.config import load_config
from app.reload import ReloadingApp
from tests.api.conftest import flush_logs

CLIENT_KEY = "reload-client-key-1f2e"
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


def model(url: str, name: str) -> dict:
    return {
        "name": name,
        "provider": "openai",
        "url": url,
        "token": "sk-fake-upstream-key",
        "requests_per_minute": 50,
    }


def chat(client: Client, name: str) -> int:
    body = {"model": name, "messages": [{"role": "user", "content": "hi"}]}
    return client.post("/v1/chat/completions", json=body, headers=AUTH).status_code


@pytest.fixture
def restore_logging():
    root = logging.getLogger("ai_proxy")
    saved = root.handlers[:], root.propagate, root.level
    yield
    root.handlers[:], root.propagate, root.level = saved


def test_reload_swaps_models_keeps_counts_and_refuses_a_broken_file(
    tmp_path: Path, fake_openai, capsys, restore_logging
) -> None:
    path = tmp_path / "config.yaml"
    write = lambda *models: path.write_text(yaml.safe_dump({"models": list(models)}))  # noqa: E731
    write(model(fake_openai.chat_url, "fake/one"))
    live = ReloadingApp(lambda: load_config(path, {"AI_PROXY_API_KEYS": CLIENT_KEY}), create_app, announce)
    client = Client(live)
    first = live.current
    assert [chat(client, "fake/one") for _ in range(3)] == [200] * 3
    assert chat(client, "fake/two") == 404

    write(model(fake_openai.chat_url, "fake/one"), model(fake_openai.chat_url, "fake/two"))
    assert live.reload() is True
    assert live.current is not first
    assert live.current.extensions["ai_proxy"].storage is first.extensions["ai_proxy"].storage
    assert chat(client, "fake/two") == 200
    quota = json.loads(client.get("/v1/quota", headers=AUTH).data)["data"]
    used = {m["name"]: m["windows"][0]["used"] for m in quota}
    assert used == {"fake/one": 3, "fake/two": 1}  # the three before the reload still count

    flush_logs()
    capsys.readouterr()
    serving = live.current
    path.write_text("models: [unclosed\n")
    assert live.reload() is False
    assert live.current is serving and chat(client, "fake/two") == 200
    flush_logs()
    lines = [line for line in capsys.readouterr().err.splitlines() if "reload" in line]
    assert len(lines) == 1 and "config reload failed" in lines[0] and "invalid YAML" in lines[0]

    write(model(fake_openai.chat_url, "fake/two"))
    assert live.reload(quiet=True) is True
    assert chat(client, "fake/one") == 404 and chat(client, "fake/two") == 200
    flush_logs()
    log = capsys.readouterr().err
    assert "config reloaded from" in log and "models and" not in log  # quiet: the master said it
