"""Coalesced chroma writes of a throwaway store (``store.write_coalesce``), on real chromadb."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from backend.config import StoreSettings
from backend.embeddings import HashingEmbedder
from backend.errors import StoreError
from backend.storage import KhalaStore, MemoryRecord, make_chroma_client, open_store
from backend.storage._audit import AuditLog
from backend.storage._pending import PendingWrites

T0 = datetime(2022, 5, 1, tzinfo=UTC)
LATER = T0 + timedelta(days=365)


def rec(i: int, **kw: object) -> MemoryRecord:
    fields: dict[str, object] = {
        "id": f"r{i}",
        "trader_id": "alice",
        "text": f"episode {i}: bitcoin {'crashes' if i % 2 else 'rallies'} on day {i}",
        "created_at": T0 + timedelta(days=i),
        "kind": "episodic",
        "importance": 0.5,
        "metadata": {"symbol": "BTC/USDT"},
    }
    fields.update(kw)
    return MemoryRecord(**fields)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KhalaStore]:
    settings = StoreSettings(
        mode="ephemeral",
        path=tmp_path / "khala",
        collection_prefix="t" + os.urandom(4).hex(),
        exact_search_max=1000,
        write_coalesce=5,
    )
    opened = open_store(settings, HashingEmbedder())
    yield opened
    opened.drop_all()
    opened.close()


def in_chroma(store: KhalaStore) -> dict[str, dict[str, object]]:
    """What chroma itself holds (the collection read directly, not through the store)."""
    page = store.collection("alice").get(include=["metadatas"])
    return {rid: dict(meta) for rid, meta in zip(page["ids"], page["metadatas"] or [], strict=True)}


def test_writes_are_held_until_the_threshold_and_served_meanwhile(store: KhalaStore) -> None:
    store.upsert("alice", [rec(0), rec(1)], as_of=LATER)
    assert in_chroma(store) == {}  # held: not sent yet
    assert [r.id for r in store.get("alice", ["r1", "r0"], as_of=LATER)] == ["r1", "r0"]
    hits = store.search("alice", rec(1).text, as_of=LATER, method="dense", top_k=1)
    assert hits[0].record.id == "r1"  # the in-process mirror already has them
    store.upsert("alice", [rec(i) for i in range(2, 5)], as_of=LATER)  # 5 held
    assert in_chroma(store) == {}  # held until the next write
    store.upsert("alice", [rec(5)], as_of=LATER)  # sends the 5 held first, holds r5
    assert sorted(in_chroma(store)) == [f"r{i}" for i in range(5)]


def test_relabels_of_held_records_fold_in_past_the_threshold(store: KhalaStore) -> None:
    """The outcomes of just-written episodes (a metadata-only write of held records)
    cost no chroma call: they fold into the held upserts even past ``write_coalesce``."""
    store.upsert("alice", [rec(i) for i in range(6)], as_of=LATER)  # 6 held (>= 5)
    store.upsert("alice", [rec(i, importance=0.9) for i in range(6)], as_of=LATER)
    assert in_chroma(store) == {}  # folded, nothing sent
    store.upsert("alice", [rec(6)], as_of=LATER)  # a new record: the 6 are sent first
    held = in_chroma(store)
    assert sorted(held) == [f"r{i}" for i in range(6)]
    assert {meta["importance"] for meta in held.values()} == {0.9}


def test_reads_of_chroma_itself_send_what_is_held_first(store: KhalaStore) -> None:
    store.upsert("alice", [rec(0), rec(1)], as_of=LATER)
    assert store.count("alice") == 2  # count asks chroma: the held writes go first
    assert sorted(in_chroma(store)) == ["r0", "r1"]
    store.upsert("alice", [rec(2)], as_of=LATER)
    assert [r.id for r in store.scan("alice", as_of=LATER)] == ["r0", "r1", "r2"]
    store.upsert("alice", [rec(3)], as_of=LATER)
    got = store.get("alice", ["r3"], as_of=LATER, include_embeddings=True)
    assert got[0].embedding is not None  # embeddings come from chroma: sent first
    store.upsert("alice", [rec(4)], as_of=LATER)
    assert store.delete("alice", ["r4"], as_of=LATER) == 1
    assert "r4" not in in_chroma(store) and store.count("alice") == 4


def test_a_relabel_of_a_held_record_is_folded_into_its_upsert(store: KhalaStore) -> None:
    store.upsert("alice", [rec(0)], as_of=LATER)
    # same text: a metadata-only update, folded into the held upsert (one row, new labels)
    store.upsert("alice", [rec(0, importance=0.9, metadata={"note": "x"})], as_of=LATER)
    store.upsert("alice", [rec(0, importance=0.7, metadata={})], as_of=LATER)  # note removed
    [stored] = store.scan("alice", as_of=LATER)
    assert stored.importance == 0.7 and stored.metadata == {}
    # updates of a record already in chroma merge like chroma's update
    store.upsert("alice", [rec(0, importance=0.2, metadata={"a": 1})], as_of=LATER)
    store.upsert("alice", [rec(0, importance=0.3, metadata={"a": 1, "b": 2})], as_of=LATER)
    [stored] = store.scan("alice", as_of=LATER)
    assert stored.importance == 0.3 and stored.metadata == {"a": 1, "b": 2}
    assert [e.event for e in store.history("alice", "r0")] == ["ADD"] + ["UPDATE"] * 4


def test_close_sends_what_is_held_and_drop_discards_it(tmp_path: Path) -> None:
    settings = StoreSettings(
        mode="ephemeral",
        path=tmp_path / "khala",
        collection_prefix="closecheck",
        exact_search_max=1000,
        write_coalesce=100,
    )
    store = open_store(settings, HashingEmbedder())
    store.upsert("alice", [rec(0), rec(1)], as_of=LATER)
    col = store.collection("alice")
    assert col.count() == 0
    store.close()
    assert col.count() == 2  # sent at close: nothing acknowledged is lost while alive
    other = open_store(
        settings.model_copy(update={"collection_prefix": "dropcheck"}), HashingEmbedder()
    )
    other.upsert("alice", [rec(0)], as_of=LATER)
    assert other.drop_all() == 1
    other.close()  # nothing left to send: the collection is gone
    store.drop_all()


def test_only_a_throwaway_store_may_coalesce(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="write_coalesce needs mode 'ephemeral'"):
        StoreSettings(mode="embedded", path=tmp_path, exact_search_max=10, write_coalesce=8)
    with pytest.raises(ValidationError, match="exact_search_max"):
        StoreSettings(mode="ephemeral", path=tmp_path, write_coalesce=8)
    settings = StoreSettings(mode="ephemeral", path=tmp_path, collection_prefix="nocoalesce")
    with pytest.raises(StoreError, match="exact_search_max"):
        KhalaStore(
            make_chroma_client(settings),
            HashingEmbedder(),
            AuditLog(tmp_path / "audit.sqlite3", durable=False),
            write_coalesce=4,
        )


def test_pending_writes_keep_the_last_write_of_each_id() -> None:
    pending = PendingWrites()
    vec = np.ones((2, 3), dtype=np.float32)
    pending.upsert(["a", "b"], vec, ["A", "B"], [{"x": 1, "y": 2}, {"x": 1}])
    pending.update(["a"], [{"y": None, "z": 3}])  # folded: y removed, z added
    pending.update(["c"], [{"x": 1, "y": 2}])
    pending.update(["c"], [{"y": None}])  # merged as chroma merges: None removes later
    pending.upsert(["c"], vec[:1], ["C"], [{"x": 5}])  # a new upsert replaces the update
    assert len(pending) == 3
    assert pending._upserts["a"][2] == {"x": 1, "z": 3}
    assert pending._upserts["c"][1:] == ("C", {"x": 5}) and "c" not in pending._updates
    pending.update(["d"], [{"x": 1, "y": 2}])
    pending.update(["d"], [{"y": None}])
    assert pending._updates["d"] == {"x": 1, "y": None}
