"""The read path of the Khala store, as functions of its pieces: records by id, scans
(as records, or as bare metadata), and the candidates of a search (its arguments checked
into a backend filter and an ``as_of`` fence, then the dense and BM25 lists fetched, each
kept to the trader's own rows). Ranking and fusion are in :mod:`._codec`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np

from backend.embeddings import Embedder
from backend.errors import StoreError
from backend.storage._backend import VectorBackend
from backend.storage._codec import checked_ts, record_from_chroma, trusted_record
from backend.storage._lexical import USER_PREFIX, Filter, FilterSpec, Row
from backend.storage.models import MemoryRecord, SearchMethod

__all__ = [
    "fetch_candidates",
    "ids_of",
    "records_by_id",
    "records_of",
    "scan_metadata",
    "scan_records",
    "search_filter",
]


def records_by_id(
    backend: VectorBackend,
    name: str,
    trader_id: str,
    ids: Sequence[str],
    as_of_ts: float,
    *,
    embeddings: bool,
) -> list[MemoryRecord]:
    """The records of ``trader_id`` with these ``ids`` in collection ``name`` created at
    or before ``as_of_ts``, in the order of ``ids`` (once each); unknown ids skipped."""
    unique = list(dict.fromkeys(ids))
    if embeddings:
        stored = backend.rows(name, unique, embeddings=True)
    else:
        stored = {rid: (t, m, None) for rid, (t, m) in backend.lookup(name, unique).items()}
    found = {
        rid: record_from_chroma(rid, text, meta, vec)
        for rid, (text, meta, vec) in stored.items()
        if meta.get("trader_id") == trader_id and float(meta["created_at_ts"]) <= as_of_ts
    }
    return [found[i] for i in unique if i in found]


def scan_records(
    backend: VectorBackend,
    name: str,
    trader_id: str,
    where: Filter,
    as_of_ts: float,
    limit: int | None,
) -> list[MemoryRecord]:
    """The records of ``trader_id`` in collection ``name`` created at or before
    ``as_of_ts`` matching ``where``, oldest first (ties by id); the newest ``limit``."""
    records = sorted(
        (  # rows were validated when written (trusted_record: 10 vs 18 us a row, measured)
            trusted_record(rid, text, meta)
            for rid, text, meta in backend.scan(name, where=where, as_of_ts=as_of_ts)
            if meta.get("trader_id") == trader_id
        ),
        key=lambda r: (r.created_at, r.id),
    )
    return records[-limit:] if limit is not None and limit > 0 else records


def scan_metadata(
    backend: VectorBackend, name: str, trader_id: str, where: Filter, as_of_ts: float
) -> list[tuple[str, float, dict[str, Any]]]:
    """:func:`scan_records` as ``(record id, created_at epoch seconds, free metadata)``,
    in no particular order and without building records."""
    cut = len(USER_PREFIX)
    return [
        (
            rid,
            float(meta["created_at_ts"]),
            {k[cut:]: v for k, v in meta.items() if k.startswith(USER_PREFIX)},
        )
        for rid, _, meta in backend.scan(name, where=where, as_of_ts=as_of_ts)
        if meta.get("trader_id") == trader_id
    ]


def search_filter(
    query: str | Sequence[float] | np.ndarray,
    as_of: datetime,
    top_k: int,
    method: SearchMethod,
    filters: FilterSpec | None,
    min_importance: float | None,
    bm25_corpus: Sequence[str] | None = None,
) -> tuple[Filter, float]:
    """The backend filter and the ``as_of`` fence (epoch seconds) of a search, its
    arguments checked (see :meth:`KhalaStore.search`). Raises :class:`StoreError`
    (bad arguments), :class:`TenantScopeError` (reserved filter keys),
    :class:`LookAheadError` (naive ``as_of``)."""
    if not 1 <= top_k <= 1000:
        raise StoreError(f"top_k must be in 1..1000, got {top_k}")
    if method not in ("dense", "bm25", "hybrid"):
        raise StoreError(f"unknown search method {method!r}")
    where = Filter.build(filters, min_importance=min_importance, corpus=bm25_corpus)
    as_of_ts = checked_ts(as_of)
    if not isinstance(query, str) and method != "dense":
        raise StoreError(f"{method} search needs a text query")
    return where, as_of_ts


def fetch_candidates(
    backend: VectorBackend,
    embedder: Embedder,
    name: str,
    trader_id: str,
    query: str | Sequence[float] | np.ndarray,
    method: SearchMethod,
    n: int,
    where: Filter,
    as_of_ts: float,
) -> tuple[list[Row], list[Row]]:
    """``(dense list, bm25 list)`` of the top ``n`` rows of collection ``name`` (the
    lists ``method`` uses; the other is empty), each kept to ``trader_id``'s rows."""
    dense: list[Row] = []
    lexical: list[Row] = []
    if method in ("dense", "hybrid"):
        vec = (
            embedder.embed_one(query)
            if isinstance(query, str)
            else np.asarray(query, dtype=np.float32)
        )
        norm = float(np.linalg.norm(vec)) if np.all(np.isfinite(vec)) else 0.0
        if vec.shape != (embedder.dim,) or not norm > 1e-6:
            raise StoreError(f"query vector must be {embedder.dim} finite floats, not all 0")
        # unit length, as chroma's cosine space takes it: the memory backend's dot
        # product had grown with the vector's length (similarity 1.0 for x10)
        dense = backend.dense(name, vec / norm, n=n, where=where, as_of_ts=as_of_ts)
    if method in ("bm25", "hybrid"):
        lexical = backend.lexical(name, str(query), n=n, where=where, as_of_ts=as_of_ts)
    owned = [r for r in dense if r[2].get("trader_id") == trader_id]
    return owned, [r for r in lexical if r[2].get("trader_id") == trader_id]


def records_of(rows: list[Row]) -> list[tuple[MemoryRecord, float]]:
    """``(record, score)`` of backend rows (not validated again: :func:`trusted_record`)."""
    return [(trusted_record(rid, text, meta), score) for rid, text, meta, score in rows]


def ids_of(rows: list[Row]) -> list[tuple[str, float]]:
    """``(record id, score)`` of backend rows."""
    return [(row[0], row[3]) for row in rows]
