"""`keys:` on a model: the pool the router makes one slot of each key from."""

from __future__ import annotations

import logging

import pytest

from app.config import ConfigError, RoutingConfig, parse_config

BASE = {"name": "groq/a", "provider": "groq", "url": "https://api.groq.com/openai/v1/chat/completions"}


def parse(environ: dict[str, str] | None = None, **fields):
    return parse_config({"models": [{**BASE, **fields}]}, environ or {}).models[0]


def test_variables_and_comma_separated_elements_expand() -> None:
    env = {"ONE": "k-one", "MORE": " k-two, k-three ,k-four"}
    m = parse(env, keys=["${ONE}", "${MORE}", "k-five"])
    assert m.keys == ("k-one", "k-two", "k-three", "k-four", "k-five")
    assert m.token == "k-one" and m.enabled


def test_a_single_string_is_split_too() -> None:
    assert parse({"ALL": "a,b"}, keys="${ALL}").keys == ("a", "b")


def test_empty_and_repeated_keys_are_dropped_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    env = {"ONE": "k-one", "EMPTY": "", "BOTH": "k-two,,k-one"}
    with caplog.at_level(logging.WARNING, logger="ai_proxy.config"):
        m = parse(env, keys=["${ONE}", "${EMPTY}", "${UNSET}", "${BOTH}", None])
    assert m.keys == ("k-one", "k-two") and m.enabled
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["model groq/a: 4 empty and 1 repeated entries dropped from its keys, 2 left"]
    assert not any("k-" in text for text in warnings)


def test_disabled_only_when_no_key_is_left(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ai_proxy.config"):
        m = parse({"EMPTY": ""}, keys=["${EMPTY}", "${UNSET}"])
    assert not m.enabled and m.keys == ()
    assert [r.getMessage() for r in caplog.records] == [
        "model groq/a disabled: its keys need EMPTY (every element resolves to empty)"
    ]


def test_token_is_a_pool_of_one() -> None:
    m = parse(token="sk-single")
    assert (m.token, m.keys) == ("sk-single", ("sk-single",))


def test_token_and_keys_together_is_an_error_naming_the_model() -> None:
    with pytest.raises(ConfigError, match=r"model 'groq/a': field 'keys': give either 'token' or 'keys'"):
        parse(token="t", keys=["k"])


@pytest.mark.parametrize("bad", [{"a": 1}, 5, [["nested"]]])
def test_keys_must_be_a_list_of_strings(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"model 'groq/a': field 'keys'"):
        parse(keys=bad)


def test_key_values_stay_out_of_the_repr() -> None:
    assert "k-secret" not in repr(parse(keys=["k-secret", "k-secret-2"]))


def test_routing_rest_durations() -> None:
    assert RoutingConfig() == RoutingConfig(
        unavailable_seconds=21600, auth_retry_seconds=3600, credit_retry_seconds=86400
    )
    raw = {"routing": {"unavailable_seconds": 60, "auth_retry_seconds": "120", "credit_retry_seconds": 1.5}}
    routing = parse_config(raw, {}).routing
    assert (routing.unavailable_seconds, routing.auth_retry_seconds, routing.credit_retry_seconds) == (
        60,
        120,
        1.5,
    )


def test_every_key_of_a_pool_is_a_secret_to_redact() -> None:
    from app.services import config_secrets

    config = parse_config({"models": [{**BASE, "keys": ["${POOL}"]}]}, {"POOL": "k-one,k-two,k-three"})
    assert {"k-one", "k-two", "k-three"} <= set(config_secrets(config))
