"""The real coding agents, offline: Claude Code (`claude -p`, Anthropic Messages) and Codex CLI
(`codex exec`, OpenAI Responses) against gunicorn over a fake upstream that scripts a tool call and
then an answer. Each must run the tool, print the answer and exit 0. `.ci/run` installs both from
npm (pinned); without them these tests skip and say how to install them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clients.agent_upstream import FINAL_ANSWER, AgentScript
from tests.fakes.openai import FakeOpenAI
from tests.harness import GunicornServer, child_env

pytestmark = pytest.mark.e2e

CLIENT_KEY = "agents-client-key-91b7"
UPSTREAM_KEY = "sk-fake-upstream-key"
PROBE = "PROBE-CONTENT-7731"
PINNED = json.loads((Path(__file__).with_name("package.json")).read_text())["dependencies"]
RUN_SECONDS = 120


def agent_binary(name: str, package: str) -> str:
    """The CLI from AI_PROXY_AGENTS_BIN (where .ci/run installs tests/clients/package.json) or PATH,
    else a skip that says how to install it."""
    folder = os.environ.get("AI_PROXY_AGENTS_BIN")
    found = shutil.which(name, path=folder) if folder else None
    found = found or shutil.which(name)
    if found is None:
        pytest.skip(
            f"{name} is not installed: `npm install {package}@{PINNED[package]}`, its bin on PATH or in "
            "AI_PROXY_AGENTS_BIN (.ci/run does this)"
        )
    return found


@pytest.fixture
def claude() -> str:
    return agent_binary("claude", "@anthropic-ai/claude-code")


@pytest.fixture
def codex() -> str:
    return agent_binary("codex", "@openai/codex")


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=UPSTREAM_KEY) as fake:
        yield fake


@pytest.fixture
def proxy(upstream: FakeOpenAI, tmp_path: Path) -> Iterator[GunicornServer]:
    model = {"name": "fake/coder", "provider": "openai", "url": upstream.chat_url, "token": UPSTREAM_KEY}
    config = {
        "models": [{**model, "model_size": "BIG"}],
        "aliases": {"claude-*": "BIG", "gpt-*": "BIG"},
        "http": {"connect_timeout": 2, "read_timeout": 30, "stream_idle_timeout": 30},
    }
    env = {"AI_PROXY_API_KEYS": CLIENT_KEY}
    with GunicornServer(config, env=env, threads=8, workdir=tmp_path / "proxy") as server:
        yield server


def workspace(tmp_path: Path) -> Path:
    """A project folder with the file the scripted tool call reads, and a home of its own."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "probe.txt").write_text(f"{PROBE}\n")
    (tmp_path / "home").mkdir()
    return project


def run(command: list[str], cwd: Path, env: dict[str, str | None]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command,
        cwd=cwd,
        env=child_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
        check=False,
    )
    print(f"$ {' '.join(command)}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr[-4000:]}")
    return result


def test_claude_code_runs_a_tool_and_answers(claude, upstream, proxy, tmp_path):
    project = workspace(tmp_path)
    script = AgentScript(upstream, {"Read": {"file_path": str(project / "probe.txt")}})
    upstream.set_default("chat", script)
    env = {
        "HOME": str(tmp_path / "home"),
        "ANTHROPIC_BASE_URL": proxy.url,
        "ANTHROPIC_API_KEY": CLIENT_KEY,  # sent as x-api-key
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    result = run([claude, "-p", "What does probe.txt say?", "--allowedTools", "Read"], project, env)
    assert result.returncode == 0
    assert FINAL_ANSWER in result.stdout
    assert script.called == ["Read"] and any(PROBE in text for text in script.results)
    assert CLIENT_KEY not in proxy.log_text() and UPSTREAM_KEY not in proxy.log_text()


CODEX_CONFIG = """\
model = "gpt-5.1-codex"
model_provider = "ai-proxy"
check_for_update_on_startup = false

[analytics]
enabled = false

[model_providers.ai-proxy]
name = "ai-proxy"
base_url = "{base_url}"
env_key = "AI_PROXY_TEST_KEY"
wire_api = "responses"
"""


def test_codex_runs_a_tool_and_answers(codex, upstream, proxy, tmp_path):
    project = workspace(tmp_path)
    command = {"command": "cat probe.txt", "cmd": "cat probe.txt", "workdir": str(project)}
    script = AgentScript(upstream, {name: command for name in ("shell_command", "exec_command", "shell")})
    upstream.set_default("chat", script)
    codex_home = tmp_path / "codex-home"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(CODEX_CONFIG.format(base_url=proxy.base_url))
    env = {"HOME": str(tmp_path / "home"), "CODEX_HOME": str(codex_home), "AI_PROXY_TEST_KEY": CLIENT_KEY}
    prompt = "What does probe.txt say?"
    flags = ["--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox"]
    result = run([codex, "exec", *flags, prompt], project, env)
    assert result.returncode == 0
    assert FINAL_ANSWER in result.stdout
    assert len(script.called) == 1 and any(PROBE in text for text in script.results)
    assert CLIENT_KEY not in proxy.log_text() and UPSTREAM_KEY not in proxy.log_text()
