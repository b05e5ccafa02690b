"""Config loading: good files, substitution, disabled models, the Go format, and one-line errors."""

from __future__ import annotations

import logging
import re
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
    assert config.models[0].missing_env == ("NOPE",) and config.models[1].missing_env == ()
    warnings = [r for r in caplog.records if "disabled" in r.getMessage()]
    assert len(warnings) == 1 and "model a disabled" in warnings[0].getMessage()
    assert "NOPE" in warnings[0].getMessage()


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
    """AI_PROXY_CONFIG, else the config.yaml at the top of the repository, whatever the working dir."""
    from app.config import resolve_config_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("models: []\n")  # a stray file in the cwd is not read
    assert resolve_config_path(None, {}) == ROOT / "config.yaml"
    assert resolve_config_path(None, {"AI_PROXY_CONFIG": "/x.yaml"}) == Path("/x.yaml")
    assert resolve_config_path("/y.yaml", {"AI_PROXY_CONFIG": "/x.yaml"}) == Path("/y.yaml")
    assert not (ROOT / "app" / "config.yaml").exists()  # the shipped file exists once


def test_shipped_config_is_valid_with_no_keys() -> None:
    config = load_config(ROOT / "config.yaml", {})
    providers = {m.provider for m in config.models}
    assert providers == {"openai", "groq", "openrouter", "gemini", "cloudflare", "cohere", "gigachat"}
    assert config.enabled_models == ()
    assert any(m.kind == "image" for m in config.models)


# --- which variables enable what (first run) --------------------------------------------------

FIRST_RUN = {
    "models": [
        {"name": "groq/small", "provider": "groq", "url": "http://x/v1/chat/completions",
         "token": "${GROQ_API_KEY}", "model_size": "SMALL"},
        {"name": "gemini/small", "provider": "gemini", "url": "http://x/v1beta/models",
         "token": "${GEMINI_API_KEY}", "model_size": "SMALL"},
        {"name": "giga/big", "provider": "gigachat", "url": "http://x/api/v1",
         "token": "${GIGA_ID}:${GIGA_SECRET}", "model_size": "BIG"},
        {"name": "local/big", "provider": "openai", "url": "http://x/v1/chat/completions",
         "token": "${LOCAL_KEY:-none}", "model_size": "BIG"},
        {"name": "off/big", "provider": "openai", "url": "http://x/v1/chat/completions",
         "token": "${OFF_KEY}", "model_size": "BIG", "enabled": False},
    ]
}  # fmt: skip


def test_disabled_models_record_the_variables_their_token_needs() -> None:
    config = parse_config(FIRST_RUN, {"GIGA_ID": "id-value", "GEMINI_API_KEY": "  "})
    needs = {m.name: m.missing_env for m in config.models}
    assert needs == {
        "groq/small": ("GROQ_API_KEY",),
        "gemini/small": ("GEMINI_API_KEY",),
        "giga/big": ("GIGA_SECRET",),  # one half of "id:secret" unset is no token
        "local/big": (),  # the default fills it
        "off/big": (),  # disabled by the config itself, not by a variable
    }
    assert [m.name for m in config.enabled_models] == ["local/big"]
    assert config.models[2].enable_hint == "set GIGA_SECRET"
    assert config.models[4].enable_hint == "check enabled, token and keys in the config"
    assert config.models[3].enable_hint == ""


def test_a_key_pool_needs_any_one_of_its_variables() -> None:
    pool = {"name": "p", "provider": "groq", "url": "http://x/v1/chat/completions"}
    config = parse_config(
        {"models": [{**pool, "keys": ["${K1}", "${K2}"]}, {**pool, "name": "q", "keys": "${K3}, ${K4}"}]},
        {"K4": "k4-value"},
    )
    off, on = config.models
    assert (off.enabled, off.missing_env, off.enable_hint) == (False, ("K1",), "set K1")
    assert (on.enabled, on.missing_env) == (True, ())


def test_summary_counts_models_and_groups_and_names_the_variables() -> None:
    config = parse_config(FIRST_RUN, {"GIGA_ID": "id-value"}, source="c.yaml")
    assert config.summary() == (
        "c.yaml: 1 of 5 models and 1 of 2 groups enabled; "
        "set GROQ_API_KEY, GEMINI_API_KEY, GIGA_SECRET to enable the rest"
    )
    every = parse_config(
        FIRST_RUN, {"GROQ_API_KEY": "g", "GEMINI_API_KEY": "m", "GIGA_ID": "i", "GIGA_SECRET": "s"}
    )
    assert every.summary().endswith(": 4 of 5 models and 2 of 2 groups enabled")


def test_not_found_messages_say_what_to_set_and_never_a_value() -> None:
    from app.config import unavailable_message

    secret = "id-value-secret"
    config = parse_config(FIRST_RUN, {"GIGA_ID": secret})
    models = config.models
    assert (
        unavailable_message(models, "groq/small", "chat")
        == "The model 'groq/small' is disabled: set GROQ_API_KEY"
    )
    assert unavailable_message(models, "small", "chat") == (
        "The group 'SMALL' has no enabled model: set GROQ_API_KEY or GEMINI_API_KEY"
    )
    assert (
        unavailable_message(models, "giga/big", "chat") == "The model 'giga/big' is disabled: set GIGA_SECRET"
    )
    assert unavailable_message(models, "off/big", "chat") == (
        "The model 'off/big' is disabled: check enabled, token and keys in the config"
    )
    # an unknown name, and a known model asked for the wrong kind, still do not exist
    assert unavailable_message(models, "gpt-4o", "chat") == "The model 'gpt-4o' does not exist"
    assert unavailable_message(models, "groq/small", "image") == "The model 'groq/small' does not exist"
    for name in ("groq/small", "SMALL", "giga/big", "BIG", "nope"):
        assert secret not in unavailable_message(models, name, "chat")


def test_when_every_model_is_disabled_even_an_unknown_name_says_what_to_set() -> None:
    from app.config import unavailable_message

    shipped = load_config(ROOT / "config.yaml", {})
    message = unavailable_message(shipped.models, "gpt-4o", "chat")
    assert message.startswith(
        "The model 'gpt-4o' does not exist; no model is enabled yet: set GROQ_API_KEY or "
    )
    assert "GEMINI_API_KEY" in message
    assert unavailable_message(shipped.models, "SMALL", "chat").startswith(
        "The group 'SMALL' has no enabled model: set GROQ_API_KEY or GEMINI_API_KEY or "
    )


# --- the provider registry --------------------------------------------------------------------


def test_the_registry_is_what_validation_accepts() -> None:
    from app import providers

    assert providers.names() == ("openai", "groq", "openrouter", "gemini", "cloudflare", "cohere", "gigachat")
    image_providers = []
    for name in providers.names():  # every provider serves chat at its own url; some serve images
        model = {"name": f"{name}/m", "provider": name, "url": "https://x/base"}
        assert parse_config({"models": [model]}, {}).models[0].provider == name
        try:
            parse_config({"models": [{**model, "kind": "image"}]}, {})
            image_providers.append(name)
        except ConfigError as exc:
            assert "field 'kind': image models need provider openai, groq, openrouter, cloudflare" in str(exc)
    assert image_providers == ["openai", "groq", "openrouter", "cloudflare"]
    with pytest.raises(ConfigError, match="field 'url': required: for provider gemini, the models base"):
        parse_config({"models": [{"name": "m", "provider": "gemini"}]}, {})


OPENAI, IMAGES = "app.providers.openai:OpenAICompatible", "app.providers.images:ImageProvider"


@pytest.mark.parametrize(
    ("provider", "url", "kind", "adapter"),
    [
        ("groq", "https://api.groq.com/openai/v1/chat/completions", "chat", OPENAI),
        ("gemini", "https://g/v1beta/models", "chat", "app.providers.gemini:Gemini"),
        ("gemini", "https://g/v1beta/openai/chat/completions", "chat", OPENAI),
        ("cloudflare", "https://c/accounts/a/ai/run", "chat", "app.providers.cloudflare:Cloudflare"),
        ("cloudflare", "https://c/accounts/a/ai/v1/chat/completions/", "chat", OPENAI),
        ("cohere", "https://api.cohere.com/v2/chat", "chat", "app.providers.cohere:Cohere"),
        ("cohere", "https://api.cohere.com/compatibility/v1/chat/completions", "chat", OPENAI),
        ("gigachat", "https://giga/api/v1/chat/completions", "chat", "app.providers.gigachat:GigaChat"),
        ("cloudflare", "https://c/accounts/a/ai/run", "image", IMAGES),
        ("gemini", "https://g/v1beta/openai/images/generations", "image", IMAGES),
    ],
)  # fmt: skip
def test_the_url_rule_picks_the_adapter(provider: str, url: str, kind: str, adapter: str) -> None:
    from app.providers import adapter_path

    model = parse_config(
        {"models": [{"name": "m", "provider": provider, "url": url, "kind": kind}]}, {}
    ).models[0]
    assert adapter_path(model) == adapter


def test_image_shapes_come_from_the_registry() -> None:
    from app.providers import image_shape

    assert image_shape("together-like", "https://x/v1/images/generations") is None  # unknown provider
    assert image_shape("gemini", "https://x/v1/images/generations") == "openai"
    assert image_shape("groq", "https://router.huggingface.co/hf-inference/models/x") == "raw"
    assert image_shape("cloudflare", "https://c/accounts/a/ai/run") == "cloudflare"
    assert image_shape("gemini", "https://g/v1beta/models") is None
    assert image_shape("gigachat", "https://giga/v1/images/generations") is None  # the SDK only


def test_the_registry_and_config_import_no_transport() -> None:
    """The CLI reads the config: importing it must not pull in requests, Flask or an adapter."""
    import subprocess
    import sys

    heavy = "('requests', 'flask', 'gigachat', 'urllib3', 'app.providers.')"
    code = f"import sys, app.config; print(sorted(m for m in sys.modules if m.startswith({heavy})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]"


def test_the_image_ships_the_config_where_the_app_looks_for_it() -> None:
    """The Dockerfile puts config.yaml next to app/, where SHIPPED_CONFIG points from app/config.py."""
    from app.config import SHIPPED_CONFIG

    dockerfile = (ROOT / "Dockerfile").read_text()
    copies = re.findall(r"^COPY (.+) (\S+)$", dockerfile, re.M)
    assert ("app", "./app") in copies
    assert any("config.yaml" in sources.split() and target == "./" for sources, target in copies)
    assert SHIPPED_CONFIG == ROOT / "config.yaml" and SHIPPED_CONFIG.parent == (ROOT / "app").parent
