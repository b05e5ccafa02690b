"""The `clients:` section: server.api_keys as unlimited admins, one-line errors, keys as secrets."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from app import cli
from app.clients import Clients
from app.config import ConfigError, parse_config
from app.services import config_secrets

DIGEST = hashlib.sha256(b"carol-key").hexdigest()


def parse(clients: Any, **environ: str):
    return parse_config({"models": [], "clients": clients}, environ, source="c.yaml")


def test_api_keys_are_unlimited_admins_before_the_clients() -> None:
    config = parse(
        [{"name": "alice", "key": "${ALICE}", "models": "SMALL", "requests_per_minute": "5"}],
        AI_PROXY_API_KEYS="k1, k2",
        ALICE="alice-key",
    )
    admin1, admin2, alice = config.clients
    assert (admin1.name, admin1.key, admin1.admin, admin1.requests_per_minute) == ("admin#1", "k1", True, 0)
    assert admin2.name == "admin#2"
    assert (alice.key, alice.models, alice.requests_per_minute, alice.admin) == (
        "alice-key",
        ("SMALL",),
        5,
        False,
    )
    secrets = set(config_secrets(config))
    assert {"k1", "k2", "alice-key"} <= secrets
    assert "alice-key" not in repr(config)


def test_key_sha256_is_matched_by_digest_in_any_case() -> None:
    config = parse([{"name": "carol", "key_sha256": DIGEST.upper()}])
    clients = Clients(config.clients)
    found = clients.identify("carol-key")
    assert found is not None and found.name == "carol"
    assert clients.identify(DIGEST) is None
    assert clients.identify("carol-key ") is None


def test_a_client_whose_key_resolves_to_empty_is_left_out() -> None:
    assert parse([{"name": "dave", "key": "${UNSET_KEY}"}]).clients == ()


@pytest.mark.parametrize(
    ("clients", "message"),
    [
        ([{"name": "a", "key": "x"}, {"name": "a", "key": "y"}], "client 'a': field 'name': duplicate"),
        ([{"name": "a", "key": "x", "key_sha256": DIGEST}], "client 'a': field 'key': give either"),
        ([{"name": "a", "key_sha256": "abc"}], "client 'a': field 'key_sha256': must be 64 hex"),
        ([{"name": "a", "key_sha256": "g" * 64}], "client 'a': field 'key_sha256': must be 64 hex"),
        ([{"name": "a"}], "client 'a': field 'key': required"),
        ([{"name": "a", "key": "x"}, {"name": "b", "key": "x"}], "client 'b': field 'key': another client's"),
        ([{"name": "a", "key": "x", "requests_per_day": -1}], "client 'a': field 'requests_per_day'"),
        ([{"name": "a", "key": "x", "tokens_per_day": "many"}], "client 'a': field 'tokens_per_day'"),
        ([{"name": "a", "key": "x", "models": [1]}], "client 'a': field 'models'"),
        ([{"name": "a", "key": "x", "admin": "maybe"}], "client 'a': field 'admin'"),
        ([{"name": "a", "key": "x", "rpm": 3}], "client 'a': field 'rpm': unknown field"),
        ([{"key": "x"}], "client #1: field 'name'"),
        ({"name": "a"}, "field 'clients': must be a list"),
    ],
)
def test_bad_clients_are_one_line_errors_without_the_key(clients: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(clients)
    text = str(caught.value)
    assert message in text and text.startswith("c.yaml: ")
    assert "\n" not in text
    assert "'x'" not in text and DIGEST not in text


def test_the_admin_key_of_an_environment_clashes_with_a_client_key() -> None:
    with pytest.raises(ConfigError, match="client 'alice': field 'key'"):
        parse([{"name": "alice", "key": "k1"}], AI_PROXY_API_KEYS="k1")


CHECKED = {
    "models": [{"name": "m1", "provider": "openai", "url": "http://127.0.0.1:9/v1/chat/completions"}],
    "clients": [
        {
            "name": "alice",
            "key": "${ALICE_KEY}",
            "models": ["SMALL", "gemini/*"],
            "requests_per_minute": 10,
            "requests_per_day": 200,
            "tokens_per_day": 100000,
        },
        {"name": "carol", "key_sha256": DIGEST, "admin": True},
    ],
}


def test_check_config_lists_the_clients_and_their_limits_never_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(CHECKED))
    monkeypatch.setenv("ALICE_KEY", "alice-secret-key")
    monkeypatch.setenv("AI_PROXY_API_KEYS", "admin-secret-key")
    assert cli.main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["CLIENT"] == ["CLIENT", "MODELS", "RPM/RPH/RPD", "TPM/TPD", "ADMIN", "KEY"]
    assert rows["admin#1"] == ["admin#1", "all", "-/-/-", "-/-", "yes", "key"]
    assert rows["alice"] == ["alice", "SMALL,gemini/*", "10/-/200", "-/100000", "no", "key"]
    assert rows["carol"] == ["carol", "all", "-/-/-", "-/-", "yes", "key_sha256"]
    for secret in ("alice-secret-key", "admin-secret-key", DIGEST):
        assert secret not in out


def test_check_config_says_when_no_client_key_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("models: []\n")
    monkeypatch.delenv("AI_PROXY_API_KEYS", raising=False)
    assert cli.main(["check-config", str(path)]) == 0
    assert "clients: none; the API is open to anyone" in capsys.readouterr().out
