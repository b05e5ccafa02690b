"""Provider adapters, one small module each, and the registry that says which provider serves what.

The registry is the one place that knows the providers: config validation, `check-config`, the
default upstream ids and the url rules (which adapter, which image shape) ask it. Adding a provider
is its adapter module plus one `ProviderSpec` below. The registry imports nothing heavy (the CLI
reads it through the config): an adapter module is imported only when a model needs it, and the
adapter types below are re-exported on first use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.config import HttpConfig, ModelConfig
    from app.http import SessionPool
    from app.providers.base import ChunkStream, Completion, Image, ImageResult, Provider

CHAT, IMAGE = "chat", "image"
KINDS = (CHAT, IMAGE)  # what a model may serve (`kind:`); each front API serves one

OPENAI_CHAT = "app.providers.openai:OpenAICompatible"
IMAGES = "app.providers.images:ImageProvider"
# Image wire shapes (app.providers.images): OpenAI Images, Workers AI text-to-image, raw bytes.
OPENAI_IMAGES, CLOUDFLARE_IMAGES, RAW_IMAGES = "openai", "cloudflare", "raw"
CHAT_COMPLETIONS, IMAGE_GENERATIONS = "/chat/completions", "/images/generations"


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One provider: its name, the adapter for its chat models, and the rule for its `url` field."""

    name: str
    url: str  # what `url` holds (said when it is missing)
    chat_adapter: str  # "module:Class", imported only when a model needs it
    # How its own `url` makes images (one of the shapes above); None: it has no image API.
    image_shape: str | None = None
    # A url ending /chat/completions or /images/generations speaks OpenAI's API (the OpenAI path).
    compatible_urls: bool = True
    model_prefix: str = ""  # before the default upstream model id (Workers AI ids start with "@")

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds its own API serves (any provider with compatible urls also serves OpenAI images)."""
        return KINDS if self.image_shape or self.compatible_urls else (CHAT,)


def _openai_like(name: str) -> ProviderSpec:
    return ProviderSpec(name, "the full chat URL (…/chat/completions)", OPENAI_CHAT, RAW_IMAGES)


SPECS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        _openai_like("openai"),
        _openai_like("groq"),
        _openai_like("openrouter"),
        ProviderSpec("gemini", "the models base, …/v1beta/models", "app.providers.gemini:Gemini"),
        ProviderSpec(
            "cloudflare",
            "…/accounts/{account_id}/ai/run",
            "app.providers.cloudflare:Cloudflare",
            CLOUDFLARE_IMAGES,
            model_prefix="@",
        ),
        ProviderSpec("cohere", "the v2 chat URL, …/v2/chat", "app.providers.cohere:Cohere"),
        ProviderSpec(
            "gigachat", "the API base, …/api/v1", "app.providers.gigachat:GigaChat", compatible_urls=False
        ),
    )
}


def names() -> tuple[str, ...]:
    return tuple(SPECS)


def spec(provider: str) -> ProviderSpec | None:
    return SPECS.get(provider)


def _path_ends(url: str, suffix: str) -> bool:
    return url.split("?", 1)[0].rstrip("/").endswith(suffix)


def image_shape(provider: str, url: str) -> str | None:
    """The wire shape an image model of `provider` at `url` speaks; None: none the proxy can speak."""
    found = SPECS.get(provider)
    if found is None:
        return None
    if found.compatible_urls and _path_ends(url, IMAGE_GENERATIONS):
        return OPENAI_IMAGES
    return found.image_shape


def kind_problem(provider: str, kind: str, url: str) -> str | None:
    """Why `provider` cannot serve `kind` at `url` (for the config error), or None when it can."""
    if kind not in SPECS[provider].kinds or (kind == IMAGE and image_shape(provider, url) is None):
        able = [s.name for s in SPECS.values() if s.image_shape]
        return f"image models need provider {', '.join(able)} or an OpenAI-compatible {IMAGE_GENERATIONS} url"
    return None


def adapter_path(model: ModelConfig) -> str:
    """Image models get the image adapter; a compatible `/chat/completions` URL the OpenAI path."""
    if model.kind == IMAGE:
        return IMAGES
    found = SPECS[model.provider]
    if found.compatible_urls and _path_ends(model.url, CHAT_COMPLETIONS):
        return OPENAI_CHAT
    return found.chat_adapter


def build_provider(model: ModelConfig, sessions: SessionPool, http: HttpConfig) -> Provider:
    module_name, _, class_name = adapter_path(model).partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(model, sessions, http)


_ADAPTER_TYPES = frozenset({"ChunkStream", "Completion", "Image", "ImageResult", "Provider"})


def __getattr__(name: str) -> Any:
    """`from app.providers import Provider` still works, without importing the transport up front."""
    if name in _ADAPTER_TYPES:
        return getattr(importlib.import_module("app.providers.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "KINDS",
    "SPECS",
    "ChunkStream",
    "Completion",
    "Image",
    "ImageResult",
    "Provider",
    "ProviderSpec",
    "adapter_path",
    "build_provider",
    "image_shape",
    "kind_problem",
    "names",
    "spec",
]
