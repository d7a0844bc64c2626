"""The Khala vector layer: trader-scoped memory records over a vector backend, audited.

Design:
- **Tenant scoping by construction.** Each trader has its own collection
  (``<prefix>-<sha256(trader_id)[:32]>``, cosine space), so no query, id or filter can
  reach another trader's vectors. Every record also carries ``trader_id`` in its
  metadata and results are checked against it.
- **Time is an argument.** Writes and reads carry a UTC ``as_of``; a write may not
  contain records created after it (:class:`LookAheadError`) and a read never returns
  records created after it.
- **Dense, BM25 and hybrid search.** The backend answers dense (cosine) and BM25 top-k;
  hybrid is reciprocal-rank fusion of both (Cormack et al., SIGIR 2009), done here.
- **Nothing half-written, nothing unaudited.** A batch is validated and embedded first;
  its audit rows are committed ahead of the backend write and confirmed after it (a
  write cut by a crash is settled when the store is next opened, :mod:`._audit`;
  ``tests/reliability/test_crash_safety.py``). Writes of one process are serialised.
- **One store, two backends** (:mod:`._backend`): ``chroma`` (durable, embedded or a
  server; what the backend keeps in process is validated against the audit trail's
  per-trader change count before every read, so another process's writes are seen) and
  ``memory`` (throwaway runs: exact search in process, nothing on disk).

Embeddings are always computed by the given :class:`~backend.embeddings.Embedder` and
passed to the backend explicitly; chroma's own default embedding function is never used.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
from chromadb.api.models.Collection import Collection
from chromadb.errors import ChromaError
from pydantic import ValidationError

from backend.embeddings import Embedder, Vectors
from backend.errors import EmbeddingMismatchError, LookAheadError, StoreError, TenantScopeError
from backend.storage._audit import AuditLog, AuditRow, PendingRow
from backend.storage._backend import VectorBackend
from backend.storage._chroma_backend import ChromaBackend
from backend.storage._codec import (
    assemble_hits,
    checked_ts,
    rank_ids,
    rank_records,
    record_from_chroma,
    record_to_meta,
    trusted_record,
)
from backend.storage._lexical import USER_PREFIX, Filter, FilterSpec, Row
from backend.storage.models import (
    TRADER_ID_PATTERN,
    AuditEvent,
    MemoryRecord,
    SearchHit,
    SearchMethod,
    UpsertResult,
)
from backend.types import to_utc

__all__ = ["KhalaStore"]

_TRADER_RE = re.compile(TRADER_ID_PATTERN)
_WRITE_ERRORS = (ChromaError, ValueError, TypeError)


def _check_trader(trader_id: str) -> str:
    if not isinstance(trader_id, str) or not _TRADER_RE.match(trader_id):
        raise TenantScopeError(f"invalid trader_id {str(trader_id)[:40]!r}")
    return trader_id


def _same(a: Any, b: Any) -> bool:
    """Content equality with floats equal to 1e-12 relative: chromadb returns about one
    metadata float in nine one ulp off what was written (its float parsing is not
    correctly rounded), which must not turn an identical re-upsert into an UPDATE."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


class KhalaStore:
    """Trader-scoped memory store over a :class:`VectorBackend` (module doc).

    Build the backend, embedder and audit log at the composition root and pass them in
    (see :func:`backend.storage.open_store`). All methods are thread-safe.
    """

    def __init__(
        self,
        backend: VectorBackend,
        embedder: Embedder,
        audit: AuditLog,
        *,
        collection_prefix: str = "khala",
        rrf_k: int = 60,
        hybrid_fanout: int = 4,
    ) -> None:
        self._backend = backend
        self._embedder = embedder
        self._audit = audit
        self._prefix = collection_prefix
        self._rrf_k = rrf_k
        self._fanout = hybrid_fanout
        self._opened: set[str] = set()
        self.recovered = audit.recover(self._landed)
        """``(confirmed, dropped)`` audit rows a crashed writer had left pending."""

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    @property
    def backend(self) -> str:
        """The backend kind: ``chroma`` or ``memory``."""
        return self._backend.kind

    def collection_name(self, trader_id: str) -> str:
        """The collection of ``trader_id`` (a hash: any trader id is a valid name)."""
        digest = hashlib.sha256(_check_trader(trader_id).encode()).hexdigest()[:32]
        return f"{self._prefix}-{digest}"

    def collection(self, trader_id: str) -> Collection:
        """The trader's chroma collection, created on first use (``chroma`` backend only:
        for benchmarks against the bare chromadb floor). Raises :class:`StoreError` on
        the ``memory`` backend."""
        if not isinstance(self._backend, ChromaBackend):
            raise StoreError("the memory backend has no chroma collection")
        name = self._open(trader_id, create=True)
        assert name is not None
        return self._backend.collection(name)

    def _open(self, trader_id: str, *, create: bool) -> str | None:
        """The trader's collection name, opened (and created if ``create``; reads never
        create). Raises :class:`TenantScopeError`, :class:`EmbeddingMismatchError`."""
        name = self.collection_name(trader_id)
        if name in self._opened:
            return name
        wanted = {
            "trader_id": trader_id,
            "embedding_model": self._embedder.model_id,
            "embedding_dim": self._embedder.dim,
        }
        meta = self._backend.open(name, create=wanted if create else None)
        if meta is None:
            return None
        if meta.get("trader_id") != trader_id:
            raise TenantScopeError(f"collection {name} belongs to another trader")
        if (meta.get("embedding_model"), meta.get("embedding_dim")) != (
            self._embedder.model_id,
            self._embedder.dim,
        ):
            raise EmbeddingMismatchError(
                f"trader {trader_id}: memories were embedded with "
                f"{meta.get('embedding_model')} ({meta.get('embedding_dim')}-d), "
                f"not {self._embedder.model_id} ({self._embedder.dim}-d)"
            )
        self._opened.add(name)
        return name

    def _reading(self, trader_id: str, *, create: bool = False) -> str | None:
        """:meth:`_open`, then (shared backends) the in-process rows validated against the
        audit trail's change count: another process's writes are seen."""
        name = self._open(trader_id, create=create)
        if name is not None and self._backend.shared:
            self._backend.validate(name, self._audit.changes(trader_id))
        return name

    # ------------------------------------------------------------------ writes

    def upsert(
        self,
        trader_id: str,
        records: Sequence[MemoryRecord],
        *,
        as_of: datetime,
    ) -> UpsertResult:
        """Add or replace ``records`` of ``trader_id`` (batched, idempotent by id).

        Records identical to what is stored are left alone; a record whose text did not
        change keeps its stored embedding and only its metadata is rewritten (chroma's
        ``update``: ~0.5 ms per record, vs ~6-10 ms for an ``upsert`` of an existing id,
        which re-links the HNSW graph; measured). Records may bring their own
        ``embedding`` (``dim`` floats, normalised here); the rest are embedded in one batch.

        Raises :class:`TenantScopeError` (a record of another trader, duplicate ids),
        :class:`LookAheadError` (``created_at`` after ``as_of``), :class:`StoreError`.
        Either the whole batch is written and audited, or nothing is.
        """
        as_of_ts = checked_ts(as_of)
        seen: set[str] = set()
        for r in records:
            if r.trader_id != trader_id:
                raise TenantScopeError(
                    f"record {r.id!r} belongs to {r.trader_id!r}, not {trader_id!r}"
                )
            if r.id in seen:
                raise TenantScopeError(f"record id {r.id!r} appears twice in one batch")
            if r.created_at.timestamp() > as_of_ts:
                raise LookAheadError(
                    f"record {r.id!r} created_at {r.created_at.isoformat()} is after as_of "
                    f"{to_utc(as_of).isoformat()}"
                )
            seen.add(r.id)
        name = self._reading(trader_id, create=True)
        assert name is not None
        if not records:
            return UpsertResult()
        existing = self._backend.lookup(name, [r.id for r in records])
        changed: list[MemoryRecord] = []
        relabelled: list[MemoryRecord] = []
        rows: list[AuditRow] = []
        for r in records:
            found = existing.get(r.id)
            old = trusted_record(r.id, found[0], found[1]) if found is not None else None
            if old is not None and _same(old.content(), r.content()):
                continue
            if old is not None and old.text == r.text and r.embedding is None:
                relabelled.append(r)
            else:
                changed.append(r)
            if old is None:
                rows.append((trader_id, r.id, "ADD", None, r.content()))
            else:
                rows.append((trader_id, r.id, "UPDATE", old.content(), r.content()))
        unchanged = len(records) - len(rows)
        if not rows:
            return UpsertResult(unchanged=unchanged)
        vectors = self._vectors_for(changed)
        step = self._backend.max_batch
        with self._audit.transaction(as_of=as_of, landed=self._landed) as audit:
            audit.record(rows)
            try:
                for i in range(0, len(changed), step):
                    part = changed[i : i + step]
                    self._backend.upsert(
                        name,
                        [r.id for r in part],
                        vectors[i : i + step],
                        [r.text for r in part],
                        [record_to_meta(r) for r in part],
                    )
                for i in range(0, len(relabelled), step):
                    part = relabelled[i : i + step]
                    self._backend.update(
                        name, [r.id for r in part], [record_to_meta(r) for r in part]
                    )
            except _WRITE_ERRORS as exc:
                self._backend.forget(name)
                raise StoreError(
                    f"trader {trader_id}: {self.backend} write failed: {exc}"
                ) from None
        self._backend.written(name, audit.changes[trader_id])
        added = sum(1 for row in rows if row[2] == "ADD")
        return UpsertResult(added=added, updated=len(rows) - added, unchanged=unchanged)

    def _vectors_for(self, records: list[MemoryRecord]) -> Vectors:
        """Given embeddings (normalised) or one batched embedding call for the rest."""
        out = np.empty((len(records), self._embedder.dim), dtype=np.float32)
        todo: list[int] = []
        for i, r in enumerate(records):
            if r.embedding is not None:
                vec = np.asarray(r.embedding, dtype=np.float32)
                if vec.shape != (self._embedder.dim,) or not np.all(np.isfinite(vec)):
                    raise StoreError(
                        f"record {r.id!r}: embedding must be {self._embedder.dim} finite floats"
                    )
                out[i] = vec / max(float(np.linalg.norm(vec)), 1e-12)
            else:
                todo.append(i)
        if todo:
            out[todo] = self._embedder.embed([records[i].text for i in todo])
        return out

    def update(
        self,
        trader_id: str,
        record_id: str,
        *,
        as_of: datetime,
        text: str | None = None,
        importance: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> MemoryRecord:
        """Change one record's text, importance (0..1) or metadata (merged into the old).

        Raises :class:`StoreError` if the record does not exist (or is after ``as_of``),
        or for invalid values (naming the field).
        """
        found = self.get(trader_id, [record_id], as_of=as_of)
        if not found:
            raise StoreError(
                f"trader {trader_id}: no record {record_id!r} as of {as_of.isoformat()}"
            )
        old = found[0]
        changes: dict[str, Any] = {}
        if text is not None:
            changes["text"] = text
        if importance is not None:
            changes["importance"] = importance
        if metadata is not None:
            changes["metadata"] = {**old.metadata, **metadata}
        try:
            new = MemoryRecord.model_validate({**old.content(), **changes})
        except ValidationError as exc:
            first = exc.errors(include_input=False)[0]
            raise StoreError(
                f"record {record_id!r}: {'.'.join(map(str, first['loc']))}: {first['msg']}"
            ) from None
        self.upsert(trader_id, [new], as_of=as_of)
        return new

    def delete(self, trader_id: str, ids: Sequence[str], *, as_of: datetime) -> int:
        """Delete records by id (those visible at ``as_of``); returns how many were deleted."""
        visible = self.get(trader_id, ids, as_of=as_of)
        if not visible:
            return 0
        name = self.collection_name(trader_id)
        with self._audit.transaction(as_of=as_of, landed=self._landed) as audit:
            audit.record([(trader_id, r.id, "DELETE", r.content(), None) for r in visible])
            try:
                self._backend.delete(name, [r.id for r in visible])
            except _WRITE_ERRORS as exc:
                self._backend.forget(name)
                raise StoreError(
                    f"trader {trader_id}: {self.backend} delete failed: {exc}"
                ) from None
        self._backend.written(name, audit.changes[trader_id])
        return len(visible)

    def _landed(self, rows: Sequence[PendingRow]) -> list[bool]:
        """For audit rows written ahead of a backend write that failed or was cut by a
        crash: whether the backend holds each mutation (a delete: the id is gone; an add
        or update: the record has exactly the new content). Reads the backend itself."""
        found: dict[tuple[str, str], MemoryRecord] = {}
        for trader_id in {r.trader_id for r in rows}:
            name = self._open(trader_id, create=False)
            if name is None:
                continue
            ids = list(dict.fromkeys(r.record_id for r in rows if r.trader_id == trader_id))
            for rid, (text, meta, _) in self._backend.rows(name, ids).items():
                found[(trader_id, rid)] = record_from_chroma(rid, text, meta)
        verdict = []
        for row in rows:
            record = found.get((row.trader_id, row.record_id))
            if row.event == "DELETE" or row.new is None:
                verdict.append(record is None)
            else:
                verdict.append(record is not None and _same(record.content(), row.new))
        return verdict

    # ------------------------------------------------------------------- reads

    def get(
        self,
        trader_id: str,
        ids: Sequence[str],
        *,
        as_of: datetime,
        include_embeddings: bool = False,
    ) -> list[MemoryRecord]:
        """Records of ``trader_id`` with these ids created at or before ``as_of``, in id order
        given; unknown ids are skipped."""
        as_of_ts = checked_ts(as_of)
        name = self._reading(trader_id)
        if name is None:
            return []
        unique = list(dict.fromkeys(ids))
        if include_embeddings:
            stored = self._backend.rows(name, unique, embeddings=True)
        else:
            stored = {
                rid: (t, m, None) for rid, (t, m) in self._backend.lookup(name, unique).items()
            }
        found = {
            rid: record_from_chroma(rid, text, meta, vec)
            for rid, (text, meta, vec) in stored.items()
            if meta.get("trader_id") == trader_id and float(meta["created_at_ts"]) <= as_of_ts
        }
        return [found[i] for i in unique if i in found]

    def scan(
        self,
        trader_id: str,
        *,
        as_of: datetime,
        filters: FilterSpec | None = None,
        limit: int | None = None,
    ) -> list[MemoryRecord]:
        """All records of ``trader_id`` created at or before ``as_of`` that match ``filters``
        (same keys as :meth:`search`), oldest first (ties by id); at most ``limit``, the
        newest ones if limited. For listing a tier (e.g. every persona version); use
        :meth:`search` for relevance."""
        where = Filter.build(filters)
        as_of_ts = checked_ts(as_of)
        name = self._reading(trader_id)
        if name is None:
            return []
        records = sorted(
            (  # rows were validated when written (trusted_record: 10 vs 18 us a row, measured)
                trusted_record(rid, text, meta)
                for rid, text, meta in self._backend.scan(name, where=where, as_of_ts=as_of_ts)
                if meta.get("trader_id") == trader_id
            ),
            key=lambda r: (r.created_at, r.id),
        )
        return records[-limit:] if limit is not None and limit > 0 else records

    def scan_metadata(
        self,
        trader_id: str,
        *,
        as_of: datetime,
        filters: FilterSpec | None = None,
    ) -> list[tuple[str, float, dict[str, Any]]]:
        """:meth:`scan` as ``(record id, created_at epoch seconds, free metadata)``, in no
        particular order and without building records: for a caller that orders a tier's
        rows itself (building 663 records was ~16 ms of a 52 ms conversation recall,
        measured). Same arguments and errors as :meth:`scan`."""
        where = Filter.build(filters)
        as_of_ts = checked_ts(as_of)
        name = self._reading(trader_id)
        if name is None:
            return []
        cut = len(USER_PREFIX)
        return [
            (
                rid,
                float(meta["created_at_ts"]),
                {k[cut:]: v for k, v in meta.items() if k.startswith(USER_PREFIX)},
            )
            for rid, _, meta in self._backend.scan(name, where=where, as_of_ts=as_of_ts)
            if meta.get("trader_id") == trader_id
        ]

    def count(self, trader_id: str, *, as_of: datetime | None = None) -> int:
        """Number of records of ``trader_id`` (created at or before ``as_of`` if given)."""
        name = self._open(trader_id, create=False)
        if name is None:
            return 0
        as_of_ts = None if as_of is None else checked_ts(as_of)
        return self._backend.count(name, as_of_ts=as_of_ts)

    def traders(self) -> list[str]:
        """Trader ids that have a collection in this store's prefix."""
        found = self._backend.collections(self._prefix + "-")
        return sorted(str(meta.get("trader_id")) for meta in found.values() if meta)

    def drop_all(self) -> int:
        """Delete every collection of this store's prefix (a throwaway store at its end);
        returns how many. The audit trail is kept. Raises :class:`StoreError`."""
        names = list(self._backend.collections(self._prefix + "-"))
        for name in names:
            self._backend.drop(name)
        self._opened.clear()
        return len(names)

    def changes(self, trader_id: str) -> int:
        """How many writes of ``trader_id``'s records were confirmed so far, by any process
        sharing this store's audit trail (one SQLite primary-key read, ~3 us): an
        in-process cache derived from the trader's records is current while it is
        unchanged."""
        return self._audit.changes(_check_trader(trader_id))

    def change_seq(self, trader_id: str, *, id_prefix: str) -> int:
        """A counter of confirmed writes of ``trader_id``'s records whose id starts with
        ``id_prefix`` (the newest audit ``seq``; 0 before the first), by any process sharing
        this store's audit trail (the same ``store.path``/``audit_path``). It changes
        whenever such a record is added, updated or deleted: an in-process cache of them
        is valid while it is unchanged."""
        return self._audit.last_change(_check_trader(trader_id), id_prefix)

    def history(self, trader_id: str, record_id: str | None = None) -> list[AuditEvent]:
        """Audit events of the trader (or one record), oldest first."""
        return self._audit.history(_check_trader(trader_id), record_id)

    def close(self) -> None:
        """Close the audit trail (the backends need no closing: every acknowledged write
        is already in the backend)."""
        self._audit.close()

    # ------------------------------------------------------------------ search

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
        (naive ``as_of``), :class:`StoreError` (bad arguments, backend failure).
        """
        found = self._candidates(trader_id, query, as_of, top_k, method, filters, min_importance)
        if found is None:
            return []
        name, dense, lexical = found
        return assemble_hits(name, method, _records(dense), _records(lexical), top_k, self._rrf_k)

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
        return rank_records(method, _records(dense), _records(lexical), top_k, self._rrf_k)

    def search_ids(
        self,
        trader_id: str,
        query: str | Sequence[float] | np.ndarray,
        *,
        as_of: datetime,
        top_k: int = 10,
        method: SearchMethod = "hybrid",
        filters: FilterSpec | None = None,
        min_importance: float | None = None,
    ) -> list[tuple[str, float]]:
        """:meth:`search` as ``(record id, similarity)`` pairs, no record built: for a
        ranker that only needs ids (building the records of 7 searches of 100 hits was
        ~30% of a conversation recall, measured). Same arguments and errors."""
        found = self._candidates(trader_id, query, as_of, top_k, method, filters, min_importance)
        if found is None:
            return []
        _, dense, lexical = found
        return rank_ids(
            method,
            [(row[0], row[3]) for row in dense],
            [(row[0], row[3]) for row in lexical],
            top_k,
            self._rrf_k,
        )

    def _candidates(
        self,
        trader_id: str,
        query: str | Sequence[float] | np.ndarray,
        as_of: datetime,
        top_k: int,
        method: SearchMethod,
        filters: FilterSpec | None,
        min_importance: float | None,
    ) -> tuple[str, list[Row], list[Row]] | None:
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
        name = self._reading(trader_id)
        if name is None:
            return None
        n = top_k if method != "hybrid" else top_k * self._fanout
        dense: list[Row] = []
        lexical: list[Row] = []
        if method in ("dense", "hybrid"):
            vec = (
                self._embedder.embed_one(query)
                if isinstance(query, str)
                else np.asarray(query, dtype=np.float32)
            )
            if vec.shape != (self._embedder.dim,) or not np.all(np.isfinite(vec)):
                raise StoreError(f"query vector must be {self._embedder.dim} finite floats")
            dense = self._backend.dense(name, vec, n=n, where=where, as_of_ts=as_of_ts)
        if method in ("bm25", "hybrid"):
            lexical = self._backend.lexical(name, str(query), n=n, where=where, as_of_ts=as_of_ts)
        owned = [r for r in dense if r[2].get("trader_id") == trader_id]
        return name, owned, [r for r in lexical if r[2].get("trader_id") == trader_id]


def _records(rows: list[Row]) -> list[tuple[MemoryRecord, float]]:
    return [(trusted_record(rid, text, meta), score) for rid, text, meta, score in rows]
