"""The command line and start-up behaviour: check-config, --version, bad configs, workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import __version__
from tests.harness import GunicornServer, ServerStartError, run_cli

ROOT = Path(__file__).resolve().parents[2]


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"ai-proxy {__version__}"


def test_check_config_on_shipped_file_passes_with_no_keys() -> None:
    result = run_cli("check-config", str(ROOT / "config.yaml"))
    assert result.returncode == 0, result.stderr
    assert "groq/llama-3.3-70b-versatile" in result.stdout
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert rows["groq/llama-3.3-70b-versatile"].endswith("disabled: set GROQ_API_KEY")
    assert rows["gemini/gemini-2.5-flash"].endswith("disabled: set GEMINI_API_KEY")
    assert "0 of 11 models and 0 of 3 groups enabled; set GROQ_API_KEY, GEMINI_API_KEY, " in result.stdout
    assert "Traceback" not in result.stderr


def test_check_config_counts_enabled_models() -> None:
    result = run_cli("check-config", str(ROOT / "config.yaml"), env={"GROQ_API_KEY": "gk-test-secret"})
    assert result.returncode == 0
    summary = next(line for line in result.stdout.splitlines() if "models and" in line)
    assert "2 of 11 models and 2 of 3 groups enabled; set GEMINI_API_KEY, " in summary
    assert "GROQ_API_KEY" not in summary  # it is set
    assert "groups enabled: BIG, SMALL" in result.stdout
    assert "gk-test-secret" not in result.stdout + result.stderr


def test_check_config_finds_the_shipped_file_from_any_directory(tmp_path: Path) -> None:
    result = run_cli("check-config", cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert f"{ROOT / 'config.yaml'}: 0 of 11 models" in result.stdout


def test_check_config_uses_ai_proxy_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "models:\n  - {name: m1, provider: openai, url: 'http://127.0.0.1:9/v1/chat/completions'}\n"
    )
    result = run_cli("check-config", env={"AI_PROXY_CONFIG": str(path)})
    assert result.returncode == 0 and "m1" in result.stdout


def test_check_config_bad_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("models:\n  - {name: m1, provider: together, url: 'http://x'}\n")
    result = run_cli("check-config", str(path))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(path) in lines[0] and "m1" in lines[0] and "provider" in lines[0]


def test_bad_config_fails_at_start_with_one_clear_line(tmp_path: Path) -> None:
    server = GunicornServer(
        "models:\n  - {name: m1, provider: openai, url: 'http://x', requests_per_minute: many}\n",
        workdir=tmp_path / "srv",
        startup_timeout=10,
    )
    with pytest.raises(ServerStartError):
        server.start()
    log = server.log_text()
    assert "configuration error" in log and "m1" in log and "requests_per_minute" in log
    assert "Traceback" not in log


def test_memory_storage_with_several_workers_is_refused(tmp_path: Path) -> None:
    server = GunicornServer("models: []\n", workers=2, workdir=tmp_path / "srv", startup_timeout=10)
    with pytest.raises(ServerStartError):
        server.start()
    log = server.log_text()
    assert "WEB_CONCURRENCY=2" in log and "redis" in log.lower()
    assert "Traceback" not in log


def test_unreachable_redis_fails_at_start_with_one_clear_line(tmp_path: Path) -> None:
    server = GunicornServer(
        "models: []\n",
        env={"AI_PROXY_STORAGE": "redis://:secret-password@127.0.0.1:1/0"},
        workdir=tmp_path / "srv",
        startup_timeout=10,
    )
    with pytest.raises(ServerStartError):
        server.start()
    log = server.log_text()
    assert "configuration error" in log and "127.0.0.1:1" in log
    assert "secret-password" not in log and "Traceback" not in log
