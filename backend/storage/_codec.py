"""Conversions between :class:`MemoryRecord` and chroma rows, and result assembly."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from backend.errors import LookAheadError
from backend.storage._lexical import USER_PREFIX, rrf_fuse
from backend.storage.models import MemoryRecord, Provenance, SearchHit, SearchMethod
from backend.types import to_utc

__all__ = [
    "assemble_hits",
    "checked_ts",
    "meta_ts",
    "rank_ids",
    "rank_records",
    "record_from_chroma",
    "record_to_meta",
    "trusted_record",
]


def checked_ts(as_of: datetime) -> float:
    """``as_of`` as epoch seconds (UTC). Raises :class:`LookAheadError` for a naive or
    non-datetime value: every read and write of the store is fenced by an aware time."""
    try:
        return to_utc(as_of).timestamp()
    except (ValueError, AttributeError):
        raise LookAheadError("as_of must be a timezone-aware UTC datetime") from None


def meta_ts(meta: Mapping[str, Any]) -> float:
    """``created_at`` of a chroma row as epoch seconds (UTC)."""
    return float(meta["created_at_ts"])


def record_to_meta(record: MemoryRecord) -> dict[str, Any]:
    meta: dict[str, Any] = {USER_PREFIX + k: v for k, v in record.metadata.items()}
    meta.update(
        trader_id=record.trader_id,
        kind=record.kind,
        importance=float(record.importance),
        created_at_ts=record.created_at.timestamp(),
        created_at=record.created_at.isoformat(),
    )
    return meta


def record_from_chroma(rid: str, text: str, meta: dict[str, Any], emb: Any = None) -> MemoryRecord:
    return MemoryRecord(
        id=rid,
        trader_id=meta["trader_id"],
        text=text,
        created_at=datetime.fromisoformat(meta["created_at"]),
        kind=meta["kind"],
        importance=meta["importance"],
        metadata={k[len(USER_PREFIX) :]: v for k, v in meta.items() if k.startswith(USER_PREFIX)},
        embedding=[float(x) for x in emb] if emb is not None else None,
    )


def trusted_record(rid: str, text: str, meta: Mapping[str, Any]) -> MemoryRecord:
    """:func:`record_from_chroma` without pydantic validation, for search hits: every
    row was validated when written (measured: validation was ~40% of a 50-candidate
    episodic recall). Rows read for a write (get, scan) stay validated."""
    return MemoryRecord.model_construct(
        id=rid,
        trader_id=meta["trader_id"],
        text=text,
        created_at=datetime.fromisoformat(meta["created_at"]),
        kind=meta["kind"],
        importance=float(meta["importance"]),
        metadata={k[len(USER_PREFIX) :]: v for k, v in meta.items() if k.startswith(USER_PREFIX)},
        embedding=None,
    )


def rank_ids(
    method: SearchMethod,
    dense: list[tuple[str, float]],
    lexical: list[tuple[str, float]],
    top_k: int,
    rrf_k: int,
) -> list[tuple[str, float]]:
    """The top ``top_k`` ``(id, similarity in [0, 1])`` of a search, best first: dense
    similarity, BM25 score / the best score, or the RRF score / its maximum
    ``2 / (k + 1)`` (see :class:`SearchHit`)."""
    if method == "dense":
        return dense[:top_k]
    if method == "bm25":
        best = lexical[0][1] if lexical else 1.0
        return [(rid, score / best) for rid, score in lexical[:top_k]]
    fused = rrf_fuse([[rid for rid, _ in dense], [rid for rid, _ in lexical]], k=rrf_k)
    ceiling = 2.0 / (rrf_k + 1)
    return [(rid, min(1.0, s / ceiling)) for rid, s in fused[:top_k]]


def rank_records(
    method: SearchMethod,
    dense: list[tuple[MemoryRecord, float]],
    lexical: list[tuple[MemoryRecord, float]],
    top_k: int,
    rrf_k: int,
) -> list[tuple[MemoryRecord, float]]:
    """:func:`rank_ids` of records."""
    records = {r.id: r for r, _ in lexical} | {r.id: r for r, _ in dense}
    ranked = rank_ids(
        method, [(r.id, s) for r, s in dense], [(r.id, s) for r, s in lexical], top_k, rrf_k
    )
    return [(records[rid], s) for rid, s in ranked]


def assemble_hits(
    collection: str,
    method: SearchMethod,
    dense: list[tuple[MemoryRecord, float]],
    lexical: list[tuple[MemoryRecord, float]],
    top_k: int,
    rrf_k: int,
) -> list[SearchHit]:
    """Rank, normalise similarity to [0, 1] and attach provenance (see :class:`SearchHit`)."""
    dense_rank = {r.id: (i + 1, sim) for i, (r, sim) in enumerate(dense)}
    lex_rank = {r.id: (i + 1, score) for i, (r, score) in enumerate(lexical)}
    hits = []
    for rank, (record, sim) in enumerate(
        rank_records(method, dense, lexical, top_k, rrf_k), start=1
    ):
        rid = record.id
        d, lx = dense_rank.get(rid), lex_rank.get(rid)
        hits.append(
            SearchHit(
                record=record,
                similarity=sim,
                rank=rank,
                provenance=Provenance(
                    collection=collection,
                    method=method,
                    dense_rank=d[0] if d else None,
                    dense_similarity=d[1] if d else None,
                    bm25_rank=lx[0] if lx else None,
                    bm25_score=lx[1] if lx else None,
                ),
            )
        )
    return hits
