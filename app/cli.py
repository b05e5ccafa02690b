"""Command line: `python -m app serve|check-config|--version`, and the WSGI app builder."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from app import __version__

if TYPE_CHECKING:
    from app.config import ClientConfig

ROOT = Path(__file__).resolve().parent.parent
CONFIG_HELP = "config file (default: $AI_PROXY_CONFIG, else the config.yaml at the top of the repository)"


def _load(path: str | None = None):
    """.env first (it never overrides the real environment), then the config file."""
    from dotenv import load_dotenv

    from app.config import load_config

    load_dotenv(override=False)
    return load_config(path)


def check_workers(config, environ=os.environ) -> None:
    """Memory storage is per process: several workers would each grant the whole quota."""
    from app.config import ConfigError

    workers = environ.get("WEB_CONCURRENCY", "1").strip() or "1"
    if config.storage == "memory" and workers.isdigit() and int(workers) > 1:
        raise ConfigError(
            f"{config.source}: field 'storage': memory storage with WEB_CONCURRENCY={workers} would "
            "multiply every quota by the worker count; set AI_PROXY_STORAGE or REDIS_URL to a "
            "redis:// URL, or run one worker"
        )


def load_for_gunicorn():
    """The config, refused when memory storage would run in several workers."""
    config = _load()
    check_workers(config)
    return config


def app_or_exit():
    """The WSGI app for gunicorn (reloads on SIGHUP); a bad configuration exits with one clear line,
    no traceback."""
    from app import announce, create_app
    from app.config import ConfigError
    from app.reload import ReloadingApp

    try:
        return ReloadingApp(load_for_gunicorn, create_app, announce)
    except ConfigError as exc:
        print(f"ai-proxy: configuration error: {exc}", file=sys.stderr, flush=True)
        os._exit(2)  # gunicorn would print a traceback for SystemExit raised while loading


def check_config(path: str | None) -> int:
    from app.config import ConfigError

    try:
        config = _load(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from app.providers import adapter_path

    rows = [("MODEL", "PROVIDER", "API", "KIND", "GROUP", "PRIO", "RPM/RPH/RPD", "TPM/TPD", "STATUS")]
    for m in config.models:
        rows.append(
            (
                m.name,
                m.provider,
                adapter_path(m).partition(":")[0].rpartition(".")[2],  # which adapter its url takes
                m.kind,
                m.group or "-",
                str(m.priority),
                windows(m.requests_per_minute, m.requests_per_hour, m.requests_per_day),
                windows(m.tokens_per_minute, m.tokens_per_day),
                "enabled" if m.enabled else f"disabled: {m.enable_hint}",
            )
        )
    print_table(rows)
    groups = sorted({m.group for m in config.enabled_models if m.group})
    print(f"\n{config.summary()}")
    print(f"groups enabled: {', '.join(groups) or 'none'}; storage: {config.storage_label}")
    print()
    if config.clients:
        print_table(client_rows(config.clients))
    else:
        print("clients: none; the API is open to anyone who can reach it")
    return 0


def client_rows(clients: Sequence[ClientConfig]) -> list[tuple[str, ...]]:
    """The client table: each client's name, models, limits and kind of key (never the key)."""
    rows = [("CLIENT", "MODELS", "RPM/RPH/RPD", "TPM/TPD", "ADMIN", "KEY")]
    for c in clients:
        rows.append(
            (
                c.name,
                ",".join(c.models) or "all",
                windows(c.requests_per_minute, c.requests_per_hour, c.requests_per_day),
                windows(c.tokens_per_minute, c.tokens_per_day),
                "yes" if c.admin else "no",
                "key_sha256" if c.key_sha256 else "key",
            )
        )
    return rows


def windows(*limits: int) -> str:
    """Limits per window as `30/-/1000` (`-`: no limit)."""
    return "/".join(str(limit or "-") for limit in limits)


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Rows as columns padded to their widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def serve(config_path: str | None, port: int | None) -> int:
    """Run gunicorn with the shipped settings (replaces this process)."""
    env = dict(os.environ)
    if config_path:
        env["AI_PROXY_CONFIG"] = str(Path(config_path).resolve())
    if port is not None:
        env["PORT"] = str(port)
    args = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "--chdir", str(ROOT)]
    os.execve(sys.executable, [*args, "wsgi:app"], env)
    return 0  # pragma: no cover


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description="ai-proxy: one OpenAI endpoint.")
    parser.add_argument("--version", action="version", version=f"ai-proxy {__version__}")
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("serve", help="serve the API with gunicorn")
    run.add_argument("--config", help=CONFIG_HELP)
    run.add_argument("--port", type=int, help="port (default: $PORT or 8080)")
    check = commands.add_parser("check-config", help="validate a config and print its model table")
    check.add_argument("path", nargs="?", help=CONFIG_HELP)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.config, args.port)
    if args.command == "check-config":
        return check_config(args.path)
    parser.print_help()
    return 2
