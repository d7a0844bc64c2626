"""Child process of ``test_khala_integration``'s cross-process test: one record of trader
``alice`` written by another process (a fork of the session's ``forker``:
``CALL tests.storage.store_writer:main SETTINGS_JSON ID AS_OF TEXT``)."""

from __future__ import annotations

from datetime import datetime

from backend.config import StoreSettings
from backend.embeddings import HashingEmbedder
from backend.storage import MemoryRecord, open_store


def main(settings: str, record_id: str, at: str, text: str) -> None:
    store = open_store(StoreSettings.model_validate_json(settings), HashingEmbedder())
    try:
        as_of = datetime.fromisoformat(at)
        record = MemoryRecord(
            id=record_id, trader_id="alice", text=text, created_at=as_of, kind="news"
        )
        store.upsert("alice", [record], as_of=as_of)
    finally:
        store.close()
