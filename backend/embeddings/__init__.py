"""Embedding functions: text to L2-normalised float32 vectors.

- :class:`MiniLMEmbedder` — the default: all-MiniLM-L6-v2 on onnxruntime, offline, no torch.
- :class:`OpenAIEmbedder` — any OpenAI-compatible embeddings endpoint.
- :class:`HashingEmbedder` — deterministic and fast, for unit tests only.
- :class:`CachedEmbedder` — any of them behind a persistent vector cache (diskcache).

:func:`build_embedder` is the factory used at the composition root; optional providers
are imported lazily so the default path never imports ``openai``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backend.embeddings._base import Embedder, Vectors, l2_normalise
from backend.embeddings._hashing import HashingEmbedder

if TYPE_CHECKING:
    from backend.config import EmbeddingSettings
    from backend.embeddings._cache import CachedEmbedder
    from backend.embeddings._minilm import MiniLMEmbedder, ModelFiles
    from backend.embeddings._openai import OpenAIEmbedder

__all__ = [
    "CachedEmbedder",
    "Embedder",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "ModelFiles",
    "OpenAIEmbedder",
    "Vectors",
    "build_embedder",
    "l2_normalise",
]


def __getattr__(name: str) -> object:
    if name in {"MiniLMEmbedder", "ModelFiles"}:
        from backend.embeddings import _minilm

        return getattr(_minilm, name)
    if name == "CachedEmbedder":
        from backend.embeddings import _cache

        return _cache.CachedEmbedder
    if name == "OpenAIEmbedder":
        from backend.embeddings import _openai

        return _openai.OpenAIEmbedder
    raise AttributeError(name)


def build_embedder(settings: EmbeddingSettings) -> Embedder:
    """Build the configured embedder, behind the persistent vector cache when
    ``settings.cache_dir`` is set (not for ``hashing``, which is cheaper than a lookup).

    Raises :class:`backend.errors.EmbeddingModelError` (minilm: a model file missing or
    failing its checksum) or :class:`backend.errors.ConfigError` (openai: no API key).
    """
    if settings.provider == "hashing":
        return HashingEmbedder()
    inner = _build_model(settings)
    if settings.cache_dir is None:
        return inner
    from backend.embeddings._cache import CachedEmbedder

    return CachedEmbedder(inner, settings.cache_dir, size_limit_mb=settings.cache_size_mb)


def _build_model(settings: EmbeddingSettings) -> Embedder:
    if settings.provider == "openai":
        import openai

        from backend.embeddings._openai import OpenAIEmbedder
        from backend.errors import ConfigError

        if settings.api_key is None:
            raise ConfigError(
                "embedding.api_key: required for provider 'openai' "
                "(set SENTINEL_EMBEDDING__API_KEY)"
            )
        client = openai.OpenAI(
            api_key=settings.api_key.get_secret_value(),
            base_url=settings.openai_base_url,
            timeout=settings.timeout_s,
        )
        return OpenAIEmbedder(
            client,
            model=settings.openai_model,
            dimensions=settings.openai_dimensions,
            batch_size=settings.batch_size,
            breaker_failures=settings.breaker_failures,
            breaker_cooldown_s=settings.breaker_cooldown_s,
        )
    from backend.embeddings._minilm import MiniLMEmbedder, ModelFiles

    files = ModelFiles.from_dir(settings.model_dir) if settings.model_dir is not None else None
    return MiniLMEmbedder(
        files,
        batch_size=settings.batch_size,
        batch_tokens=settings.batch_tokens,
        max_length=settings.max_length,
        threads=settings.threads,
    )
