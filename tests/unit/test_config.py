"""Config loading: good files, substitution, disabled models, the Go format, and one-line errors."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from app.config import ConfigError, load_config, parse_config, substitute

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_substitution_with_defaults() -> None:
    env = {"A": "1", "EMPTY": ""}
    assert substitute("${A}-${B:-two}-${EMPTY:-three}-${MISSING}", env) == "1-two-three-"


def test_full_model_and_sections(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        server: {api_keys: [k1, "${EXTRA_KEY}"], heartbeat_seconds: 2}
        http: {connect_timeout: 1.5, verify: /etc/ca.pem, proxy: "${PROXY:-}"}
        routing: {max_attempts: 2}
        models:
          - name: groq/llama-3.3-70b-versatile
            provider: groq
            url: ${GROQ_URL:-https://api.groq.com/openai/v1/chat/completions}
            token: ${GROQ_API_KEY}
            priority: 1
            requests_per_minute: 30
            requests_per_day: "1000"
            tokens_per_minute: 12000
            max_request_length: 128000
            model_size: big
        """,
    )
    config = load_config(path, {"GROQ_API_KEY": "gk-test", "EXTRA_KEY": "k2"})
    (model,) = config.models
    assert model.upstream_model == "llama-3.3-70b-versatile"
    assert model.url == "https://api.groq.com/openai/v1/chat/completions"
    assert model.token == "gk-test" and model.enabled
    assert (model.requests_per_minute, model.requests_per_day, model.requests_per_hour) == (30, 1000, 0)
    assert model.group == "BIG"
    assert config.server.api_keys == ("k1", "k2")
    assert config.server.heartbeat_seconds == 2.0
    assert config.http.connect_timeout == 1.5 and config.http.verify == "/etc/ca.pem"
    assert config.routing.max_attempts == 2 and config.routing.cooldown_seconds == 30.0
    assert "gk-test" not in repr(model)


def test_empty_secret_disables_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(
        tmp_path,
        """
        models:
          - {name: a, provider: openai, url: "http://x/v1/chat/completions", token: "${NOPE}"}
          - {name: b, provider: openai, url: "http://x/v1/chat/completions"}
        """,
    )
    with caplog.at_level(logging.WARNING, logger="ai_proxy.config"):
        config = load_config(path, {})
    assert [m.name for m in config.enabled_models] == ["b"]
    assert config.disabled_models == ("a",)
    warnings = [r for r in caplog.records if "disabled" in r.getMessage()]
    assert len(warnings) == 1 and "a" in warnings[0].getMessage()


def test_go_format_loads_unchanged(tmp_path: Path) -> None:
    """A config from the original Go ai-proxy: flat model list, extra fields we don't use ignored."""
    path = write(
        tmp_path,
        """
        models:
          - name: "openrouter/deepseek/deepseek-r1:free"
            provider: "openrouter"
            priority: 2
            requests_per_minute: 20
            requests_per_hour: 200
            requests_per_day: 50
            url: "https://openrouter.ai/api/v1/chat/completions"
            token: "or-test"
            max_request_length: 160000
            model_size: "BIG"
          - name: "cloudflare/cf/meta/llama-3.1-8b-instruct"
            provider: "cloudflare"
            priority: 3
            requests_per_minute: 100
            requests_per_hour: 1000
            requests_per_day: 1000
            url: "https://api.cloudflare.com/client/v4/accounts/acc/ai/run"
            token: "cf-test"
            max_request_length: 8000
            model_size: "SMALL"
            http_client_config: {timeout: 30}
        """,
    )
    config = load_config(path, {})
    router_model, cf_model = config.models
    assert router_model.upstream_model == "deepseek/deepseek-r1:free"
    assert cf_model.upstream_model == "@cf/meta/llama-3.1-8b-instruct"
    assert [m.group for m in config.models] == ["BIG", "SMALL"]


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        ("{name: m, provider: together, url: 'http://x'}", "model 'm': field 'provider': unknown provider"),
        ("{name: m, provider: openai}", "model 'm': field 'url': required"),
        ("{name: m, provider: openai, url: 'http://x', requests_per_minute: lots}", "'requests_per_minute'"),
        ("{name: m, provider: openai, url: 'http://x', requests_per_day: -1}", "must not be negative"),
        ("{name: m, provider: openai, url: 'http://x', kind: video}", "field 'kind'"),
        ("{name: m, provider: gemini, url: 'http://x', kind: image}", "image models need provider"),
        ("{name: m, provider: openai, url: 'ftp://x'}", "field 'url'"),
        ("{provider: openai, url: 'http://x'}", "model #1: field 'name'"),
        ("{name: m, provider: gemini, url: 'http://x', day_resets_at: '25:00'}", "day_resets_at"),
    ],
)
def test_bad_model_is_one_clear_line(tmp_path: Path, model: str, needle: str) -> None:
    path = write(tmp_path, f"models:\n  - {model}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    message = str(info.value)
    assert needle in message
    assert str(path) in message
    assert "\n" not in message


def test_unknown_provider_names_the_accepted_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  - {name: m, provider: together, url: 'http://x'}\n")
    with pytest.raises(ConfigError, match="openai, groq, openrouter, gemini, cloudflare, cohere, gigachat"):
        load_config(path, {})


def test_duplicate_names_and_group_clash() -> None:
    dup = {"models": [{"name": "m", "provider": "openai", "url": "http://x"}] * 2}
    with pytest.raises(ConfigError, match="duplicate"):
        parse_config(dup, {})
    clash = {
        "models": [
            {"name": "small", "provider": "openai", "url": "http://x"},
            {"name": "b", "provider": "openai", "url": "http://x", "model_size": "SMALL"},
        ]
    }
    with pytest.raises(ConfigError, match="clashes with the group"):
        parse_config(clash, {})


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  - name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d"):
        load_config(path, {})


def test_environment_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "storage: memory\nretry: {max_attempts: 2}\nmodels: []\n")
    env = {
        "AI_PROXY_API_KEYS": "one, two,",
        "REDIS_URL": "redis://127.0.0.1:6379/3",
        "AI_PROXY_RETRY_MAX_ATTEMPTS": "7",
        "AI_PROXY_RETRY_BASE_DELAY": "0.5",
        "AI_PROXY_LOG_FORMAT": "JSON",
        "AI_PROXY_LOG_LEVEL": "debug",
    }
    config = load_config(path, env)
    assert config.server.api_keys == ("one", "two")
    assert config.storage == "redis://127.0.0.1:6379/3"
    assert (config.retry.max_attempts, config.retry.base_delay) == (7, 0.5)
    assert (config.log_format, config.log_level) == ("json", "DEBUG")
    assert load_config(path, {**env, "AI_PROXY_STORAGE": "memory"}).storage == "memory"


def test_bad_storage_and_env_values(tmp_path: Path) -> None:
    path = write(tmp_path, "storage: postgres://x\nmodels: []\n")
    with pytest.raises(ConfigError, match="field 'storage'"):
        load_config(path, {})
    ok = write(tmp_path, "models: []\n")
    with pytest.raises(ConfigError, match="AI_PROXY_RETRY_MAX_ATTEMPTS"):
        load_config(ok, {"AI_PROXY_RETRY_MAX_ATTEMPTS": "many"})


def test_config_path_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.config import PACKAGED_CONFIG, resolve_config_path

    monkeypatch.chdir(tmp_path)
    assert resolve_config_path(None, {}) == PACKAGED_CONFIG
    (tmp_path / "config.yaml").write_text("models: []\n")
    assert resolve_config_path(None, {}) == tmp_path / "config.yaml"
    assert resolve_config_path(None, {"AI_PROXY_CONFIG": "/x.yaml"}) == Path("/x.yaml")


def test_shipped_config_is_valid_with_no_keys() -> None:
    config = load_config(ROOT / "config.yaml", {})
    providers = {m.provider for m in config.models}
    assert providers == {"openai", "groq", "openrouter", "gemini", "cloudflare", "cohere", "gigachat"}
    assert config.enabled_models == ()
    assert any(m.kind == "image" for m in config.models)
