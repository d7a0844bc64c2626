"""The typed models of the Khala vector layer (one per concept, defined only here)."""

from __future__ import annotations

import hashlib
import math
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, Field, field_validator

from backend.types import FrozenModel, to_utc

__all__ = [
    "TEXT_MAX_CHARS",
    "AuditEvent",
    "MemoryRecord",
    "MetadataValue",
    "Provenance",
    "SearchHit",
    "SearchMethod",
    "UpsertResult",
    "stable_id",
]

MetadataValue = str | int | float | bool
"""What chromadb can store and filter on: a scalar."""
SearchMethod = Literal["dense", "bm25", "hybrid"]
TRADER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,127}$"
TEXT_MAX_CHARS = 200_000
"""The longest text of one record (:class:`MemoryRecord`)."""


def stable_id(*parts: object) -> str:
    """A deterministic 32-hex-char id from ``parts`` (sha256), for idempotent upserts."""
    joined = "\x1f".join(str(p) for p in parts)
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:32]


KIND_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
"""What a record's ``kind`` may be: lowercase letters, digits and ``_``, a letter first."""


class MemoryRecord(FrozenModel):
    """One memory in the Khala layer, owned by exactly one trader.

    - ``id``: caller-chosen and stable (upserting the same id again updates, never duplicates);
      unique within a trader, not globally.
    - ``created_at``: when the memory became known (UTC); searches with ``as_of`` earlier
      than this never see it.
    - ``kind``: the tier or type (``persona``, ``working``, ``episodic``, ``news``, ...).
    - ``importance``: 0..1, used by retrieval scoring in the hierarchical memory.
    - ``metadata``: free scalar fields; keys 1-64 chars, floats finite.
    - ``embedding``: the unit vector, present when given on write or asked for on read.
    """

    id: str = Field(min_length=1, max_length=256)
    trader_id: str = Field(pattern=TRADER_ID_PATTERN)
    text: str = Field(min_length=1, max_length=TEXT_MAX_CHARS)
    created_at: AwareDatetime
    kind: str = Field(pattern=KIND_PATTERN)
    importance: float = Field(default=0.5, ge=0.0, le=1.0)
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    embedding: list[float] | None = Field(default=None, repr=False)

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return to_utc(value)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text must not be blank")
        return value

    @field_validator("metadata")
    @classmethod
    def _scalars(cls, value: dict[str, MetadataValue]) -> dict[str, MetadataValue]:
        for key, item in value.items():
            if not 1 <= len(key) <= 64:
                raise ValueError(f"metadata key {key[:70]!r}: 1-64 characters")
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"metadata key {key!r}: float must be finite")
            if isinstance(item, int) and not -(2**63) <= item < 2**63:  # chroma: a float
                raise ValueError(f"metadata key {key!r}: integer outside the int64 range")
        return value

    def content(self) -> dict[str, Any]:
        """Everything but the embedding, JSON-ready (what the audit trail stores)."""
        return self.model_dump(mode="json", exclude={"embedding"})


class UpsertResult(FrozenModel):
    """Counts of one batched upsert: new ids, changed ids, ids already identical."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0


class Provenance(FrozenModel):
    """Where a hit came from: which store, collection and retrievers, with their ranks."""

    store: Literal["khala"] = "khala"
    collection: str
    method: SearchMethod
    dense_rank: int | None = None
    """1-based rank in the dense retriever's list, if it was retrieved there."""
    dense_similarity: float | None = None
    bm25_rank: int | None = None
    bm25_score: float | None = None
    """Raw BM25 score (Robertson & Zaragoza 2009, bm25s "lucene" variant), unbounded >= 0."""


class SearchHit(FrozenModel):
    """One search result.

    ``similarity`` is in [0, 1], higher is closer:
    - dense: ``(1 + cos) / 2`` from chromadb's cosine distance ``d = 1 - cos``, i.e. ``1 - d/2``;
    - bm25: the BM25 score divided by the best score of this query;
    - hybrid: the reciprocal-rank-fusion score divided by its maximum ``2 / (k + 1)``.
    """

    record: MemoryRecord
    similarity: float = Field(ge=0.0, le=1.0)
    rank: int = Field(ge=1)
    provenance: Provenance


class AuditEvent(FrozenModel):
    """One mutation in the SQLite audit trail (mem0's history table, adapted)."""

    seq: int
    trader_id: str
    record_id: str
    event: Literal["ADD", "UPDATE", "DELETE"]
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    as_of: datetime
