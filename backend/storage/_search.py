"""The search side of the Khala store (:class:`~backend.storage.KhalaStore` inherits it):
dense, BM25 and hybrid (RRF) top-k of one trader's memories as of a time.

Dense search is exact and in process over the store's mirror for a store that is its
data's only writer (``exact_search_max``), otherwise chroma's HNSW with the filtering
done in process when it can be (:meth:`SearchMixin._dense`); BM25 runs on the mirror;
hybrid is reciprocal-rank fusion of both (Cormack et al., SIGIR 2009).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
from chromadb.api.models.Collection import Collection

from backend.embeddings import Embedder
from backend.errors import StoreError
from backend.storage._chroma_io import ChromaIO
from backend.storage._codec import (
    assemble_hits,
    checked_ts,
    meta_ts,
    rank_records,
    record_to_meta,
    trusted_record,
)
from backend.storage._lexical import Filter, FilterSpec, LexicalIndex, Row
from backend.storage.models import MemoryRecord, SearchHit, SearchMethod

__all__ = ["SearchMixin"]

QUERY_CACHE_SIZE = 4096
RECORD_CACHE_SIZE = 100_000


class SearchMixin:
    """Search methods of :class:`~backend.storage.KhalaStore` (module doc); the store
    provides the state declared here."""

    _embedder: Embedder
    _exact_max: int
    _fanout: int
    _rrf_k: int
    _lock: threading.RLock
    _io: ChromaIO
    _query_cache: OrderedDict[str, np.ndarray]
    _records: dict[str, tuple[dict[str, Any], str, MemoryRecord]]

    def _open(self, trader_id: str, *, create: bool) -> Collection | None:
        raise NotImplementedError

    def _lex(self, trader_id: str) -> LexicalIndex:
        raise NotImplementedError

    def search(
        self,
        trader_id: str,
        query: str | Sequence[float] | np.ndarray,
        *,
        as_of: datetime,
        top_k: int = 10,
        method: SearchMethod = "hybrid",
        filters: FilterSpec | None = None,
        min_importance: float | None = None,
    ) -> list[SearchHit]:
        """Top ``top_k`` memories of ``trader_id`` for ``query``, created at or before ``as_of``.

        ``query`` is text, or a vector for ``dense`` only. ``filters`` narrow by ``kind``
        and free metadata keys (equality, or any-of for a list); ``min_importance`` keeps
        records with importance >= it. Results are ordered best first; see
        :class:`SearchHit` for the meaning of ``similarity``.

        Raises :class:`TenantScopeError` (reserved filter keys), :class:`LookAheadError`
        (naive ``as_of``), :class:`StoreError` (bad arguments, chroma failure).
        """
        found = self._candidates(trader_id, query, as_of, top_k, method, filters, min_importance)
        if found is None:
            return []
        name, dense, lexical = found
        return assemble_hits(name, method, dense, lexical, top_k, self._rrf_k)

    def search_scored(
        self,
        trader_id: str,
        query: str | Sequence[float] | np.ndarray,
        *,
        as_of: datetime,
        top_k: int = 10,
        method: SearchMethod = "hybrid",
        filters: FilterSpec | None = None,
        min_importance: float | None = None,
    ) -> list[tuple[MemoryRecord, float]]:
        """:meth:`search` as ``(record, similarity)`` pairs, without the provenance: the
        same records, order and similarities, for callers that re-rank a candidate pool
        every bar (building ~50 validated :class:`SearchHit` per recall was ~15% of it,
        measured). Same arguments and errors as :meth:`search`."""
        found = self._candidates(trader_id, query, as_of, top_k, method, filters, min_importance)
        if found is None:
            return []
        _, dense, lexical = found
        return rank_records(method, dense, lexical, top_k, self._rrf_k)

    def _candidates(
        self,
        trader_id: str,
        query: str | Sequence[float] | np.ndarray,
        as_of: datetime,
        top_k: int,
        method: SearchMethod,
        filters: FilterSpec | None,
        min_importance: float | None,
    ) -> tuple[str, list[tuple[MemoryRecord, float]], list[tuple[MemoryRecord, float]]] | None:
        """``(collection name, dense list, bm25 list)`` of a search; ``None`` when the
        trader has no collection (see :meth:`search`)."""
        if not 1 <= top_k <= 1000:
            raise StoreError(f"top_k must be in 1..1000, got {top_k}")
        if method not in ("dense", "bm25", "hybrid"):
            raise StoreError(f"unknown search method {method!r}")
        where = Filter.build(filters, min_importance=min_importance)
        as_of_ts = checked_ts(as_of)
        if not isinstance(query, str) and method != "dense":
            raise StoreError(f"{method} search needs a text query")
        col = self._open(trader_id, create=False)
        if col is None:
            return None
        fetch = top_k if method != "hybrid" else top_k * self._fanout
        dense: list[tuple[MemoryRecord, float]] = []
        lexical: list[tuple[MemoryRecord, float]] = []
        if method in ("dense", "hybrid"):
            vec = (
                self._query_vector(query)
                if isinstance(query, str)
                else np.asarray(query, dtype=np.float32)
            )
            dense = self._dense(col, trader_id, vec, fetch, where, as_of_ts)
        if method in ("bm25", "hybrid"):
            found = self._lex(trader_id).search(
                str(query), top_k=fetch, as_of_ts=as_of_ts, where=where
            )
            lexical = [
                (self._row_record(rid, text, meta), score)
                for rid, score, text, meta in found
                if meta.get("trader_id") == trader_id
            ]
        return col.name, dense, lexical

    def _query_vector(self, text: str) -> np.ndarray:
        """The query's embedding, from a small LRU cache: decision loops ask the same
        bucketed situation texts again and again (``MarketSnapshot.situation``)."""
        with self._lock:
            vec = self._query_cache.get(text)
            if vec is not None:
                self._query_cache.move_to_end(text)
                return vec
        vec = self._embedder.embed_one(text)
        vec.setflags(write=False)
        with self._lock:
            self._query_cache[text] = vec
            if len(self._query_cache) > QUERY_CACHE_SIZE:
                self._query_cache.popitem(last=False)
        return vec

    def _dense(
        self,
        col: Collection,
        trader_id: str,
        vec: np.ndarray,
        n: int,
        where: Filter,
        as_of_ts: float,
    ) -> list[tuple[MemoryRecord, float]]:
        """Exact top-``n`` allowed records, cheaply in the common case.

        chromadb's ``where`` pre-filter costs ~10-30 ms at 10k records (measured, it
        materialises the allowed set), and fetching metadata ~70 us per row. So first ask
        chroma for the unfiltered top ``probe`` ids and distances only, take the rows from
        the in-process mirror and filter here: if at least ``n`` survive they are exactly
        the top ``n`` allowed records (every record outside the probe is farther than
        every one inside), and if the collection has fewer than ``probe`` records, all
        were seen. Only otherwise is chroma's filtered query run.
        """
        if vec.shape != (self._embedder.dim,) or not np.all(np.isfinite(vec)):
            raise StoreError(f"query vector must be {self._embedder.dim} finite floats")
        mirror = self._lex(trader_id)
        if 0 < mirror.size <= self._exact_max:
            exact = mirror.dense(vec, top_k=n, as_of_ts=as_of_ts, where=where)
            if exact is not None:
                return [
                    (self._row_record(rid, doc, meta), sim)
                    for rid, doc, meta, sim in exact
                    if meta.get("trader_id") == trader_id
                ]
        probe = min(max(3 * n, 50), 1000)
        found = self._io.query(col, trader_id, vec, probe, None, include_rows=False)
        rows = self._with_rows(col, trader_id, found)
        hits = [row for row in rows if meta_ts(row[2]) <= as_of_ts and where.matches(row[2])]
        if len(hits) < n and len(found) == probe:
            chroma_where = where.to_chroma(as_of_ts=as_of_ts)
            rows = self._io.query(col, trader_id, vec, n, chroma_where, include_rows=True)
            hits = [row for row in rows if meta_ts(row[2]) <= as_of_ts]
        return [(self._row_record(rid, doc, meta), sim) for rid, doc, meta, sim in hits[:n]]

    def _row_record(self, rid: str, text: str, meta: dict[str, Any]) -> MemoryRecord:
        """The hit record of a mirror row, built once per version of the row: the mirror
        keeps one metadata dict per write, so identity tells a row unchanged (a decision
        loop meets the same candidates bar after bar)."""
        cached = self._records.get(rid)
        if cached is not None and cached[0] is meta and cached[1] is text:
            return cached[2]
        record = trusted_record(rid, text, meta)
        if len(self._records) >= RECORD_CACHE_SIZE:
            self._records.clear()
        self._records[rid] = (meta, text, record)
        return record

    def _with_rows(self, col: Collection, trader_id: str, found: list[Row]) -> list[Row]:
        """Fill text and metadata of ``(id, _, _, similarity)`` rows from the mirror (rows a
        other process wrote are fetched from chroma and mirrored); other traders' dropped."""
        mirror = self._lex(trader_id)
        known = mirror.lookup(rid for rid, *_ in found)
        missing = [rid for rid, *_ in found if rid not in known]
        if missing:
            fetched = self._io.fetch(col, missing, embeddings=False)
            mirror.put(
                (rid, rec.text, rec.created_at.timestamp(), record_to_meta(rec))
                for rid, (rec, _) in fetched.items()
            )
            known.update(mirror.lookup(missing))
        return [
            (rid, known[rid][0], known[rid][2], sim)
            for rid, _, _, sim in found
            if rid in known and known[rid][2].get("trader_id") == trader_id
        ]
