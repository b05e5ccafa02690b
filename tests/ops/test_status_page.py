"""GET /status in headless Chromium: the page renders every model's quota from /v1/quota, asks for a
key when auth is on, and the run leaves a screenshot in test-artifacts/."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import free_port
from tests.ops.conftest import FAST_ENV, UPSTREAM_KEY, chat_body, config, model, stream

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install -y chromium)"
)


def chromium(url: str, tmp_path: Path, *extra: str, budget_ms: int = 4000) -> str:
    assert CHROMIUM is not None
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        f"--virtual-time-budget={budget_ms}",
        *extra,
        url,
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_status_page_is_public_and_self_contained(in_process, fake_openai):
    proxy = in_process(config(model(fake_openai.chat_url, "fake/up")), env=FAST_ENV)
    answer = proxy.client.get("/status")
    headers = answer.headers
    assert answer.status_code == 200 and headers["Content-Type"].startswith("text/html")
    page = answer.get_data(as_text=True)
    assert "/v1/quota" in page and "sessionStorage" in page
    # No external assets: nothing is loaded from another origin.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "default-src 'none'" in headers["Content-Security-Policy"]


@needs_chromium
def test_status_page_renders_models_in_chromium(gunicorn_server, fake_openai, tmp_path, artifacts):
    refused = f"http://127.0.0.1:{free_port()}/v1/chat/completions"
    cfg = config(
        model(
            fake_openai.chat_url,
            "groq/llama-3.3-70b-versatile",
            group="BIG",
            requests_per_hour=300,
            tokens_per_minute=6000,
        ),
        model(fake_openai.chat_url, "gemini/gemini-2.5-flash", requests_per_day=250),
        model(refused, "openrouter/deepseek/deepseek-r1:free", priority=0, requests_per_day=50),
        model(fake_openai.chat_url, "cohere/command-a", token="${COHERE_API_KEY}"),  # disabled
        {  # a key pool: the fake knows only the first key, so the second rests (auth) after one call
            **{
                k: v
                for k, v in model(fake_openai.chat_url, "groq/pooled", group="POOL").items()
                if k != "token"
            },
            "keys": [UPSTREAM_KEY, "sk-status-page-unknown-key"],
        },
        routing={"cooldown_seconds": 120},
    )
    # No client keys: the page can read /v1/quota straight away.
    env = {k: v for k, v in FAST_ENV.items() if k != "AI_PROXY_API_KEYS"}
    server = gunicorn_server(cfg, env={**env, "COHERE_API_KEY": ""})
    for _ in range(7):
        assert stream(server.port, chat_body("BIG"), key="").status == 200
    for _ in range(3):
        assert stream(server.port, chat_body("SMALL"), key="").status == 200  # the first one falls back
    for _ in range(2):
        assert stream(server.port, chat_body("POOL"), key="").status == 200  # key #2 fails over to #1

    dom = chromium(f"{server.url}/status", tmp_path, "--dump-dom")
    for name in (
        "groq/llama-3.3-70b-versatile",
        "gemini/gemini-2.5-flash",
        "openrouter/deepseek/deepseek-r1:free",
    ):
        assert f'data-model="{name}"' in dom, dom[:3000]
    assert 'aria-valuenow="7"' in dom  # groq's requests this minute, as a bar
    assert "cooling down" in dom  # the refused model rests
    assert "Could not connect to the upstream" in dom  # and its error is listed
    assert not re.search(r"id=\"updated\">needs a client key<", dom)
    assert 'data-client="anonymous"' in dom  # the per-client usage table (an open proxy: one client)
    # The disabled model: greyed out, with the variable that would enable it.
    card = re.search(r'<article class="model disabled" data-model="cohere/command-a".*?</article>', dom, re.S)
    assert card and "Disabled: set COHERE_API_KEY" in card.group(0), dom[:3000]
    assert len(re.findall(r'class="model disabled"', dom)) == 1
    # The pool lists its keys by name, the rejected one resting as `auth`, and never a key's value.
    assert 'data-key="#1"' in dom and re.search(r'data-key="#2">#2: resting \(auth\)', dom), dom[:3000]
    assert "sk-status-page-unknown-key" not in dom

    shot = artifacts / "status-page.png"
    shot.unlink(missing_ok=True)
    chromium(f"{server.url}/status", tmp_path, f"--screenshot={shot}", "--window-size=1280,900")
    assert shot.is_file() and shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_chromium
def test_status_page_asks_for_the_key_when_auth_is_on(gunicorn_server, fake_openai, tmp_path, artifacts):
    server = gunicorn_server(config(model(fake_openai.chat_url, "fake/up")), env=FAST_ENV)
    dom = chromium(f"{server.url}/status", tmp_path, "--dump-dom")
    assert re.search(r"id=\"updated\">needs a client key<", dom), dom[-3000:]
    assert 'data-model="fake/up"' not in dom  # nothing shown without the key
    chromium(
        f"{server.url}/status",
        tmp_path,
        f"--screenshot={artifacts / 'status-page-key.png'}",
        "--window-size=900,500",
    )
