"""LoCoMo conversations go into the memory through the product (``record_messages``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from backend.compose import MemorySystem
from backend.eval.locomo_data import load_locomo
from backend.eval.locomo_memory import ingest_conversation
from backend.memory.conversation import MESSAGE_KIND, SESSION_KIND, WINDOW_KIND

END = datetime(2030, 1, 1, tzinfo=UTC)


def test_ingestion_records_every_turn_as_a_message_with_its_dialog_id(
    locomo_file: Path, locomo_system: MemorySystem
) -> None:
    (conv,) = load_locomo(locomo_file).conversations
    stats = ingest_conversation(locomo_system.toolkit, conv)
    assert (stats.turns, stats.sessions) == (9, 3)
    store = locomo_system.store
    messages = store.scan("fx-1", as_of=END, filters={"kind": MESSAGE_KIND})
    ids = sorted(str(r.metadata["message_id"]) for r in messages)
    assert ids == sorted(t.dia_id for t in conv.turns)
    photo = next(r for r in messages if r.metadata["message_id"] == "D1:4")
    assert photo.text.endswith("[shares a photo of a dog on a beach]")
    assert photo.created_at == conv.sessions[1] and photo.metadata["speaker"] == "Ben"
    assert len(store.scan("fx-1", as_of=END, filters={"kind": WINDOW_KIND})) == 9
    assert len(store.scan("fx-1", as_of=END, filters={"kind": SESSION_KIND})) == 3


def test_the_product_recall_returns_dialog_ids_fenced_by_as_of(
    locomo_file: Path, locomo_system: MemorySystem
) -> None:
    (conv,) = load_locomo(locomo_file).conversations
    ingest_conversation(locomo_system.toolkit, conv)
    found = locomo_system.toolkit.recall(
        "fx-1", "Who plays the violin?", symbol=None, as_of=END, tiers=("working",), top_k=3
    )
    said = [h["message_id"] for h in found["hits"] if h["tier"] == "conversation"]
    assert "D2:3" in said  # "learning the violin"
    assert 0 < found["context"]["tokens"] <= 1500
    early = locomo_system.toolkit.recall(
        "fx-1", "violin", symbol=None, as_of=conv.sessions[1], tiers=("working",), top_k=25
    )
    assert {h["message_id"] for h in early["hits"] if h["tier"] == "conversation"} <= {
        t.dia_id for t in conv.turns if t.session == 1
    }
