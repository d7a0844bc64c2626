"""chromadb's own default embedding function (which downloads a model) is never used."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from chromadb.api.types import DefaultEmbeddingFunction
from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2

from backend.storage import MemoryRecord
from tests.conftest import StoreFactory

AS_OF = datetime(2022, 6, 13, tzinfo=UTC)


def test_store_never_invokes_chroma_default_embedding(
    make_durable_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    used: list[str] = []

    def spy(name: str):  # type: ignore[no-untyped-def]
        def record(self, input):  # type: ignore[no-untyped-def]  # chroma checks this signature
            used.append(name)
            raise AssertionError(f"chromadb's {name} was invoked")

        return record

    # A spy on chroma's own embedding functions (not a mock of the store: it stays real).
    monkeypatch.setattr(DefaultEmbeddingFunction, "__call__", spy("DefaultEmbeddingFunction"))
    monkeypatch.setattr(ONNXMiniLM_L6_V2, "__call__", spy("ONNXMiniLM_L6_V2.__call__"))

    store = make_durable_store()
    records = [
        MemoryRecord(
            id=f"n{i}",
            trader_id="t1",
            text=f"headline {i} about bitcoin",
            created_at=AS_OF,
            kind="news",
        )
        for i in range(5)
    ]
    store.upsert("t1", records, as_of=AS_OF)
    store.update("t1", "n1", as_of=AS_OF, text="rewritten headline about ether")
    for method in ("dense", "bm25", "hybrid"):
        assert store.search("t1", "bitcoin", as_of=AS_OF, method=method)  # type: ignore[arg-type]
    store.get("t1", ["n1"], as_of=AS_OF, include_embeddings=True)
    store.delete("t1", ["n2"], as_of=AS_OF)
    assert store.count("t1") == 4
    assert used == []

    # Control: the spy does catch chroma's default when a caller forgets to pass vectors.
    control = store._backend.client.get_or_create_collection(  # type: ignore[attr-defined]
        "spy-control-" + store.collection_name("t1")[-8:]
    )
    with pytest.raises(Exception, match="was invoked"):
        control.add(ids=["x"], documents=["needs an embedding"])
    assert used
