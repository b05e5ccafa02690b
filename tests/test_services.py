"""The secrets a running proxy redacts are every secret of its config."""

from __future__ import annotations

import base64

from app.config import parse_config
from app.services import config_secrets


def test_config_secrets_cover_tokens_keys_headers_and_urls() -> None:
    raw = {
        "models": [
            {"name": "a/m", "provider": "openai", "url": "http://127.0.0.1:9/v1/chat/completions",
             "token": "sk-token-aaaa", "headers": {"X-Api-Key": "hdr-secret-1", "HTTP-Referer": "https://me"}},
            {"name": "giga/m", "provider": "gigachat", "url": "http://127.0.0.1:9/api/v1",
             "token": "client-id-1:client-secret-2"},
        ],
        "server": {"api_keys": ["client-key-3"]},
        "http": {"proxy": "http://user:proxy-pass-4@127.0.0.1:3128"},
    }  # fmt: skip
    secrets = set(config_secrets(parse_config(raw, {"AI_PROXY_API_KEYS": "env-key-5,env-key-6"})))
    basic = base64.b64encode(b"client-id-1:client-secret-2").decode()
    expected = {"sk-token-aaaa", "hdr-secret-1", "client-id-1:client-secret-2", "client-secret-2", basic}
    assert expected | {"env-key-5", "env-key-6", "proxy-pass-4"} <= secrets
    assert "https://me" not in secrets and "client-key-3" not in secrets  # the environment's keys win
