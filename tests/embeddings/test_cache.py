"""The persistent embedding cache (diskcache) in front of a real embedder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from backend.config import EmbeddingSettings
from backend.embeddings import (
    CachedEmbedder,
    Embedder,
    HashingEmbedder,
    MiniLMEmbedder,
    build_embedder,
)


class Counting(HashingEmbedder):
    """The hashing embedder, counting the texts it really embeds."""

    def __init__(self, model_id: str = "hashing-test") -> None:
        super().__init__()
        self.model_id = model_id
        self.calls: list[list[str]] = []

    def _embed(self, texts: list[str]):  # type: ignore[no-untyped-def]
        self.calls.append(list(texts))
        return super()._embed(texts)


def test_misses_are_embedded_once_in_one_call_and_survive_a_restart(tmp_path: Path) -> None:
    inner = Counting()
    cached = CachedEmbedder(inner, tmp_path / "cache")
    first = cached.embed(["btc crash", "eth merge", "btc crash"])
    assert inner.calls == [["btc crash", "eth merge"]]  # one call, duplicates once
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_array_equal(
        first, HashingEmbedder().embed(["btc crash", "eth merge", "btc crash"])
    )
    again = cached.embed(["eth merge", "sol outage"])
    assert inner.calls[-1] == ["sol outage"]
    np.testing.assert_array_equal(again[0], first[1])
    assert (cached.hits, cached.misses) == (1, 4)
    cached.close()
    reopened_inner = Counting()
    reopened = CachedEmbedder(reopened_inner, tmp_path / "cache")
    np.testing.assert_array_equal(reopened.embed(["btc crash", "sol outage"])[1], again[1])
    assert reopened_inner.calls == []  # everything came from disk
    assert (reopened.model_id, reopened.dim) == (inner.model_id, inner.dim)


def test_models_never_share_vectors(tmp_path: Path) -> None:
    one, other = Counting("model-a"), Counting("model-b")
    CachedEmbedder(one, tmp_path / "c").embed(["same text"])
    CachedEmbedder(other, tmp_path / "c").embed(["same text"])
    assert other.calls == [["same text"]]


def test_a_minilm_cut_shorter_is_another_model(tmp_path: Path, minilm: Embedder) -> None:
    """Vectors made at another ``max_length`` differ: they never come from the cache."""
    text = "BTC/USDT fell 8% in an hour after a large holder moved coins to an exchange " * 3
    short = MiniLMEmbedder(max_length=16)
    assert short.model_id == "all-MiniLM-L6-v2@max_length=16" != minilm.model_id
    CachedEmbedder(minilm, tmp_path / "c").embed([text])
    cached = CachedEmbedder(short, tmp_path / "c")
    np.testing.assert_allclose(cached.embed([text]), short.embed([text]), atol=1e-6)
    assert cached.hits == 0
    assert float(short.embed([text])[0] @ minilm.embed([text])[0]) < 0.95


def test_cached_minilm_vectors_are_the_model_s_own(tmp_path: Path, minilm: Embedder) -> None:
    texts = ["BTC/USDT trend down, high volatility", "Celsius pauses withdrawals"]
    cached = CachedEmbedder(minilm, tmp_path / "c")
    cold = cached.embed(texts)
    warm = cached.embed(texts)
    np.testing.assert_array_equal(cold, warm)
    np.testing.assert_allclose(warm, minilm.embed(texts), atol=1e-6)
    assert cached.hits == 2


def test_build_embedder_wraps_the_model_only_when_configured(tmp_path: Path) -> None:
    settings = EmbeddingSettings(cache_dir=tmp_path / "c")
    built = build_embedder(settings)
    assert isinstance(built, CachedEmbedder) and built.model_id == built.inner.model_id
    plain = build_embedder(settings.model_copy(update={"cache_dir": None}))
    assert not isinstance(plain, CachedEmbedder)
    assert isinstance(build_embedder(EmbeddingSettings(provider="hashing")), HashingEmbedder)
