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
    from app.providers.base import (
        ChunkStream,
        Completion,
        Embeddings,
        Image,
        ImageResult,
        Provider,
        Transcript,
    )

CHAT, IMAGE, EMBEDDING, TRANSCRIPTION = "chat", "image", "embedding", "transcription"
KINDS = (CHAT, IMAGE, EMBEDDING, TRANSCRIPTION)  # what a model may serve (`kind:`); each front API serves one

OPENAI_CHAT = "app.providers.openai:OpenAICompatible"
IMAGES = "app.providers.images:ImageProvider"
EMBEDDINGS = "app.providers.embeddings:EmbeddingProvider"
GIGACHAT_EMBEDDINGS = "app.providers.embeddings:GigaChatEmbeddings"  # through the SDK
TRANSCRIPTIONS = "app.providers.transcription:TranscriptionProvider"
# Image wire shapes (app.providers.images): OpenAI Images, Workers AI text-to-image, raw bytes.
OPENAI_IMAGES, CLOUDFLARE_IMAGES, RAW_IMAGES = "openai", "cloudflare", "raw"
CHAT_COMPLETIONS, IMAGE_GENERATIONS = "/chat/completions", "/images/generations"
EMBEDDINGS_PATH, TRANSCRIPTIONS_PATH = "/embeddings", "/audio/transcriptions"
# Embedding wire shapes (app.providers.embeddings): OpenAI's, or the provider's own (named after it).
OPENAI_EMBEDDINGS = "openai"
OPENAI_BATCH = 2048  # inputs per call of OpenAI's embeddings API


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
    # Inputs per call of its own embeddings API (0: it has none); compatible urls use OPENAI_BATCH.
    embedding_batch: int = 0
    own_transcription: bool = False  # its own url also transcribes (Workers AI whisper)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds it serves: its own API's, and any kind through an OpenAI-compatible url."""
        if self.compatible_urls:
            return KINDS
        own = (IMAGE,) * bool(self.image_shape) + (EMBEDDING,) * bool(self.embedding_batch)
        return (CHAT, *own, *(TRANSCRIPTION,) * self.own_transcription)


def _openai_like(name: str) -> ProviderSpec:
    return ProviderSpec(name, "the full chat URL (…/chat/completions)", OPENAI_CHAT, RAW_IMAGES)


SPECS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        _openai_like("openai"),
        _openai_like("groq"),
        _openai_like("openrouter"),
        ProviderSpec(
            "gemini", "the models base, …/v1beta/models", "app.providers.gemini:Gemini", embedding_batch=100
        ),
        ProviderSpec(
            "cloudflare",
            "…/accounts/{account_id}/ai/run",
            "app.providers.cloudflare:Cloudflare",
            CLOUDFLARE_IMAGES,
            model_prefix="@",
            embedding_batch=100,
            own_transcription=True,
        ),
        ProviderSpec(
            "cohere",
            "the v2 chat URL, …/v2/chat (embeddings: …/v2/embed)",
            "app.providers.cohere:Cohere",
            embedding_batch=96,
        ),
        ProviderSpec(
            "gigachat",
            "the API base, …/api/v1",
            "app.providers.gigachat:GigaChat",
            compatible_urls=False,
            embedding_batch=100,
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


def embedding_shape(provider: str, url: str) -> str | None:
    """The wire shape an embedding model of `provider` at `url` speaks: OPENAI_EMBEDDINGS for a
    compatible `…/embeddings` url, else the provider's own (its name); None: none the proxy speaks."""
    found = SPECS.get(provider)
    if found is None:
        return None
    if found.compatible_urls and _path_ends(url, EMBEDDINGS_PATH):
        return OPENAI_EMBEDDINGS
    return found.name if found.embedding_batch else None


def embedding_batch(provider: str, url: str) -> int:
    """Inputs per upstream call for an embedding model (a model's `max_batch` overrides it)."""
    shape = embedding_shape(provider, url)
    return OPENAI_BATCH if shape == OPENAI_EMBEDDINGS else SPECS[provider].embedding_batch


def transcribes_openai(provider: str, url: str) -> bool:
    """A transcription model at an OpenAI-compatible `…/audio/transcriptions` url (else its own API)."""
    found = SPECS.get(provider)
    return found is not None and found.compatible_urls and _path_ends(url, TRANSCRIPTIONS_PATH)


def kind_problem(provider: str, kind: str, url: str) -> str | None:
    """Why `provider` cannot serve `kind` at `url` (for the config error), or None when it can."""
    found = SPECS[provider]
    if kind == IMAGE and (kind not in found.kinds or image_shape(provider, url) is None):
        able = [s.name for s in SPECS.values() if s.image_shape]
        return f"image models need provider {', '.join(able)} or an OpenAI-compatible {IMAGE_GENERATIONS} url"
    if kind == EMBEDDING and (kind not in found.kinds or embedding_shape(provider, url) is None):
        able = [s.name for s in SPECS.values() if s.embedding_batch]
        return (
            f"embedding models need provider {', '.join(able)} or an OpenAI-compatible {EMBEDDINGS_PATH} url"
        )
    own = found.own_transcription
    if kind == TRANSCRIPTION and not (own or transcribes_openai(provider, url)):
        able = [s.name for s in SPECS.values() if s.own_transcription]
        return (
            f"transcription models need provider {', '.join(able)} or an OpenAI-compatible "
            f"{TRANSCRIPTIONS_PATH} url"
        )
    return None


def adapter_path(model: ModelConfig) -> str:
    """Image models get the image adapter; a compatible `/chat/completions` URL the OpenAI path."""
    if model.kind == IMAGE:
        return IMAGES
    if model.kind == EMBEDDING:
        return GIGACHAT_EMBEDDINGS if model.provider == "gigachat" else EMBEDDINGS
    if model.kind == TRANSCRIPTION:
        return TRANSCRIPTIONS
    found = SPECS[model.provider]
    if found.compatible_urls and _path_ends(model.url, CHAT_COMPLETIONS):
        return OPENAI_CHAT
    return found.chat_adapter


def build_provider(model: ModelConfig, sessions: SessionPool, http: HttpConfig) -> Provider:
    module_name, _, class_name = adapter_path(model).partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(model, sessions, http)


_ADAPTER_TYPES = frozenset(
    {"ChunkStream", "Completion", "Embeddings", "Image", "ImageResult", "Provider", "Transcript"}
)


def __getattr__(name: str) -> Any:
    """`from app.providers import Provider` still works, without importing the transport up front."""
    if name in _ADAPTER_TYPES:
        return getattr(importlib.import_module("app.providers.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EMBEDDING",
    "KINDS",
    "SPECS",
    "TRANSCRIPTION",
    "ChunkStream",
    "Completion",
    "Embeddings",
    "Image",
    "ImageResult",
    "Provider",
    "ProviderSpec",
    "Transcript",
    "adapter_path",
    "build_provider",
    "embedding_batch",
    "embedding_shape",
    "image_shape",
    "kind_problem",
    "names",
    "spec",
    "transcribes_openai",
]
