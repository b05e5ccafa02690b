"""ai-proxy: one OpenAI-compatible endpoint in front of many free-tier LLM providers."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from flask import Flask

    from app.config import Config


def create_app(config: Config | None = None) -> Flask:
    """The app factory: build every service from `config` (default: load it) and register the API.

    Imports are local so that `app.__version__` and the CLI stay cheap to import.
    """
    import logging

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
    redactor = Redactor(config_secrets(config))
    setup_logging(config.log_level, config.log_format, redactor)
    log = logging.getLogger("ai_proxy")
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
    app.extensions["ai_proxy"] = build_services(config, redactor)
    api.register(app)
    if not config.server.api_keys:
        log.warning(
            "NO CLIENT API KEYS CONFIGURED: the proxy is open to anyone who can reach it. "
            "Set AI_PROXY_API_KEYS or server.api_keys."
        )
    enabled = len(config.enabled_models)
    log.info("config %s: %d models enabled, storage %s", config.source, enabled, _storage_label(config))
    return app


def _storage_label(config: Config) -> str:
    return "memory" if config.storage == "memory" else "redis"
