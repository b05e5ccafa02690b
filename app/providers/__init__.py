"""Provider adapters, one small module each; `build_provider` picks the one a model needs."""

from __future__ import annotations

import importlib

from app.config import HttpConfig, ModelConfig
from app.http import SessionPool
from app.providers.base import ChunkStream, Completion, Image, ImageResult, Provider

# provider name -> "module:Class" of its native adapter (imported only when a model needs it)
NATIVE = {
    "openai": "app.providers.openai:OpenAICompatible",
    "groq": "app.providers.openai:OpenAICompatible",
    "openrouter": "app.providers.openai:OpenAICompatible",
    "gemini": "app.providers.gemini:Gemini",
    "cloudflare": "app.providers.cloudflare:Cloudflare",
    "cohere": "app.providers.cohere:Cohere",
    "gigachat": "app.providers.gigachat:GigaChat",
}
OPENAI_PATH = NATIVE["openai"]


def adapter_path(model: ModelConfig) -> str:
    """Image models get the image adapter; a compatible `/chat/completions` URL the OpenAI path."""
    if model.kind == "image":
        return "app.providers.images:ImageProvider"
    if model.provider != "gigachat" and model.url.rstrip("/").endswith("/chat/completions"):
        return OPENAI_PATH
    return NATIVE[model.provider]


def build_provider(model: ModelConfig, sessions: SessionPool, http: HttpConfig) -> Provider:
    module_name, _, class_name = adapter_path(model).partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(model, sessions, http)


__all__ = [
    "ChunkStream",
    "Completion",
    "Image",
    "ImageResult",
    "Provider",
    "build_provider",
]
