"""Deployment files: Procfile and .python-version for buildpacks, the Dockerfile's essentials, the
nginx example's streaming settings, and gunicorn reading $PORT / WEB_CONCURRENCY."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.harness import REPO_ROOT, child_env


def test_procfile_runs_gunicorn_with_the_shipped_config():
    lines = (REPO_ROOT / "Procfile").read_text().splitlines()
    assert lines == ["web: gunicorn -c gunicorn.conf.py wsgi:app"]


def test_python_version_matches_the_project():
    version = (REPO_ROOT / ".python-version").read_text().strip()
    assert version == "3.11"
    assert f"python:{version}-slim" in (REPO_ROOT / "Dockerfile").read_text()


def _print_config(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--print-config", "wsgi:app"],
        cwd=REPO_ROOT,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_gunicorn_takes_port_and_threads_from_the_platform():
    done = _print_config(PORT="5123", WEB_CONCURRENCY="1", AI_PROXY_THREADS="12")
    assert done.returncode == 0, done.stderr
    settings = dict(re.findall(r"^(\w+)\s+= (.*)$", done.stdout, re.M))
    assert settings["bind"] == "['0.0.0.0:5123']"
    assert settings["workers"] == "1" and settings["threads"] == "12"
    assert settings["worker_class"] == "app.worker.ThreadWorker" and settings["preload_app"] == "True"


def test_several_workers_with_memory_storage_are_refused_at_start():
    done = _print_config(PORT="5123", WEB_CONCURRENCY="3")
    assert done.returncode == 2
    assert "WEB_CONCURRENCY=3" in done.stderr and "redis://" in done.stderr
    assert "Traceback" not in done.stderr


def test_dockerfile_is_slim_non_root_with_healthcheck():
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/health", text, re.M)
    assert 'CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]' in text
    assert "requirements-dev" not in text


def test_nginx_example_streams_and_keeps_connections():
    text = (REPO_ROOT / "deploy" / "nginx.conf").read_text()
    for directive in (
        "proxy_buffering off;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "keepalive 32;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
    ):
        assert directive in text, directive
    read_timeout = int(re.search(r"proxy_read_timeout (\d+)s;", text).group(1))
    assert read_timeout >= 120
