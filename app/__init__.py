"""ai-proxy: one OpenAI-compatible endpoint in front of many free-tier LLM providers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from flask import Flask

    from app.config import Config
    from app.services import Services


def create_app(config: Config | None = None, previous: Services | None = None, **services: Any) -> Flask:
    """The app factory: build every service from `config` (default: load it) and register the API.

    `previous` is the running app's services on a reload: their storage (and so the quota counts)
    carries over. `services` go to `build_services` (an injected `clock` or `sleep`, for tests).
    Imports are local so that `app.__version__` and the CLI stay cheap to import.
    """
    from flask import Flask

    from app import api
    from app.config import load_config
    from app.logs import setup_logging
    from app.redact import Redactor
    from app.services import build_services, config_secrets

    if config is None:
        from dotenv import load_dotenv

        load_dotenv(override=False)
        config = load_config()
    if previous is None:
        redactor = Redactor(config_secrets(config))
    else:  # the same one, which the log filter holds: answers still running on the old config
        redactor = previous.redactor  # may log its secrets, or an access token learned meanwhile
        redactor.add(*config_secrets(config))
    logs = (config.log_level, config.log_format)
    if previous is None or logs != (previous.config.log_level, previous.config.log_format):
        setup_logging(*logs, redactor)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
    app.extensions["ai_proxy"] = build_services(config, redactor, previous, **services)
    api.register(app)
    if previous is None:
        announce(config)
    return app


def announce(config: Config) -> None:
    """The start-up lines: an open proxy is loud, then what is enabled and what would enable the rest
    (after the config's per-model warnings)."""
    import logging

    log = logging.getLogger("ai_proxy")
    if not config.clients:
        log.warning(
            "NO CLIENT API KEYS CONFIGURED: the proxy is open to anyone who can reach it. "
            "Set AI_PROXY_API_KEYS, server.api_keys or clients."
        )
    level = logging.WARNING if config.disabled_models else logging.INFO
    log.log(level, "config %s; storage %s", config.summary(), config.storage_label)
