from __future__ import annotations

import numpy as np

from backend.config import EmbeddingSettings
from backend.embeddings import HashingEmbedder, build_embedder


def test_hashing_is_deterministic_normalised_and_lexical() -> None:
    emb = build_embedder(EmbeddingSettings(provider="hashing"))
    assert isinstance(emb, HashingEmbedder)
    a, b, c = emb.embed(["bitcoin crash", "bitcoin crash today", "ether merge"])
    np.testing.assert_array_equal(a, HashingEmbedder().embed_one("bitcoin crash"))
    assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-6
    assert float(a @ b) > float(a @ c)
