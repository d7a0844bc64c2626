"""The Khala vector layer: trader-scoped memories over one vector backend, chosen by
``store.backend``: ``chroma`` (durable: embedded ``PersistentClient`` or a chroma server)
or ``memory`` (throwaway runs: in process, nothing on disk).

Public API::

    from backend.storage import KhalaStore, MemoryRecord, open_store
    store = open_store(settings.store, build_embedder(settings.embedding))
    store.upsert("trader-1", [MemoryRecord(...)], as_of=now)
    hits = store.search("trader-1", "exchange halts withdrawals", as_of=now, method="hybrid")
"""

from backend.storage._audit import AuditLog
from backend.storage._client import make_chroma_client, open_store
from backend.storage.khala_integration import KhalaStore
from backend.storage.models import (
    KIND_PATTERN,
    AuditEvent,
    MemoryRecord,
    MetadataValue,
    Provenance,
    SearchHit,
    SearchMethod,
    UpsertResult,
    stable_id,
)

__all__ = [
    "KIND_PATTERN",
    "AuditEvent",
    "AuditLog",
    "KhalaStore",
    "MemoryRecord",
    "MetadataValue",
    "Provenance",
    "SearchHit",
    "SearchMethod",
    "UpsertResult",
    "make_chroma_client",
    "open_store",
    "stable_id",
]
