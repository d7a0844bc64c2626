"""Optional BM25 stemming of the Khala store (store.bm25_stemmer, PyStemmer)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backend.config import StoreSettings
from backend.embeddings import HashingEmbedder
from backend.errors import StoreError
from backend.storage import MemoryRecord, open_store
from backend.storage._lexical import make_stemmer

T = datetime(2024, 1, 1, tzinfo=UTC)


def _store(tmp_path: Path, stemmer: str | None):  # type: ignore[no-untyped-def]
    return open_store(
        StoreSettings(
            backend="memory",
            path=tmp_path,
            collection_prefix="s" + os.urandom(4).hex(),
            bm25_stemmer=stemmer,
        ),
        HashingEmbedder(),
    )


@pytest.mark.parametrize(("stemmer", "found"), [("english", ["a"]), (None, [])])
def test_stemming_matches_word_forms(tmp_path: Path, stemmer: str | None, found: list[str]) -> None:
    store = _store(tmp_path, stemmer)
    try:
        store.upsert(
            "t",
            [
                MemoryRecord(
                    id="a", trader_id="t", text="She painted lakes", created_at=T, kind="n"
                ),
                MemoryRecord(id="b", trader_id="t", text="He runs daily", created_at=T, kind="n"),
            ],
            as_of=T,
        )
        hits = store.search("t", "painting a lake", as_of=T, method="bm25")
        assert [h.record.id for h in hits] == found
    finally:
        store.close()


def test_unknown_language_is_a_store_error() -> None:
    assert make_stemmer(None) is None
    stem = make_stemmer("english")
    assert stem is not None and stem(["painting", "lakes"]) == ["paint", "lake"]
    with pytest.raises(StoreError, match="klingon"):
        make_stemmer("klingon")
