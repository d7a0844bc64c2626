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

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

import numpy as np
from chromadb.api.models.Collection import Collection

from backend.embeddings import Embedder
from backend.errors import StoreError
from backend.storage._audit import AuditLog, PendingRow
from backend.storage._backend import VectorBackend
from backend.storage._chroma_backend import ChromaBackend
from backend.storage._codec import assemble_hits, checked_ts, rank_ids, rank_records
from backend.storage._lexical import Filter, FilterSpec, Row
from backend.storage._reads import (
    fetch_candidates,
    ids_of,
    records_by_id,
    records_of,
    scan_metadata,
    scan_records,
    search_filter,
)
from backend.storage._tenancy import TraderCollections, check_trader
from backend.storage._writes import (
    check_batch,
    delete_rows,
    embed_records,
    landed_rows,
    merged_record,
    plan_upsert,
    stored_vectors,
    write_rows,
)
from backend.storage.models import AuditEvent, MemoryRecord, SearchHit, SearchMethod, UpsertResult

__all__ = ["KhalaStore"]


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
        self._collections = TraderCollections(backend, embedder, audit, collection_prefix)
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
        return self._collections.name(trader_id)

    def collection(self, trader_id: str) -> Collection:
        """The trader's chroma collection, created on first use (``chroma`` backend only:
        for benchmarks against the bare chromadb floor). Raises :class:`StoreError` on
        the ``memory`` backend."""
        if not isinstance(self._backend, ChromaBackend):
            raise StoreError("the memory backend has no chroma collection")
        name = self._collections.open(trader_id, create=True)
        assert name is not None
        return self._backend.collection(name)

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
        Either the whole batch is written and audited, or nothing is. Holds the writer
        lock (:meth:`writer_lock`) from its read of the stored rows to its write.
        """
        check_batch(trader_id, records, as_of)
        # Read, plan and write under the writer lock: two writers (threads or processes)
        # that planned against the same stored row had both logged "old: <that row>", and
        # one had skipped its write as unchanged after the other's had landed.
        with self._audit.writer_lock():
            name = self._collections.reading(trader_id, create=True)
            assert name is not None
            if not records:
                return UpsertResult()
            existing = self._backend.lookup(name, [r.id for r in records])
            changed, relabelled, rows = plan_upsert(
                trader_id, records, existing, stored_vectors(self._backend, name)
            )
            unchanged = len(records) - len(rows)
            if not rows:
                return UpsertResult(unchanged=unchanged)
            vectors = embed_records(self._embedder, changed)
            with self._audit.transaction(as_of=as_of, landed=self._landed) as audit:
                audit.record(rows)
                write_rows(self._backend, name, trader_id, changed, relabelled, vectors)
            self._backend.written(name, audit.changes[trader_id])
        added = sum(1 for row in rows if row[2] == "ADD")
        return UpsertResult(added=added, updated=len(rows) - added, unchanged=unchanged)

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
        with self._audit.writer_lock():  # a read-modify-write (:meth:`upsert`)
            found = self.get(trader_id, [record_id], as_of=as_of)
            if not found:
                raise StoreError(
                    f"trader {trader_id}: no record {record_id!r} as of {as_of.isoformat()}"
                )
            new = merged_record(found[0], text=text, importance=importance, metadata=metadata)
            self.upsert(trader_id, [new], as_of=as_of)
        return new

    def delete(self, trader_id: str, ids: Sequence[str], *, as_of: datetime) -> int:
        """Delete records by id (those visible at ``as_of``); returns how many were deleted."""
        with self._audit.writer_lock():  # a read-then-write (:meth:`upsert`)
            visible = self.get(trader_id, ids, as_of=as_of)
            if not visible:
                return 0
            name = self.collection_name(trader_id)
            with self._audit.transaction(as_of=as_of, landed=self._landed) as audit:
                audit.record([(trader_id, r.id, "DELETE", r.content(), None) for r in visible])
                delete_rows(self._backend, name, trader_id, [r.id for r in visible])
            self._backend.written(name, audit.changes[trader_id])
        return len(visible)

    def _landed(self, rows: Sequence[PendingRow]) -> list[bool]:
        """For audit rows written ahead of a backend write that failed or was cut by a
        crash: whether the backend holds each mutation (a delete: the id is gone; an add
        or update: the record has exactly the new content). Reads the backend itself."""
        return landed_rows(self._backend, self._collections, rows)

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
        name = self._collections.reading(trader_id)
        if name is None:
            return []
        return records_by_id(
            self._backend, name, trader_id, ids, as_of_ts, embeddings=include_embeddings
        )

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
        name = self._collections.reading(trader_id)
        if name is None:
            return []
        return scan_records(self._backend, name, trader_id, where, as_of_ts, limit)

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
        name = self._collections.reading(trader_id)
        if name is None:
            return []
        return scan_metadata(self._backend, name, trader_id, where, as_of_ts)

    def count(self, trader_id: str, *, as_of: datetime | None = None) -> int:
        """Number of records of ``trader_id`` (created at or before ``as_of`` if given)."""
        name = self._collections.open(trader_id, create=False)
        if name is None:
            return 0
        as_of_ts = None if as_of is None else checked_ts(as_of)
        return self._backend.count(name, as_of_ts=as_of_ts)

    def traders(self) -> list[str]:
        """Trader ids that have a collection in this store's prefix."""
        found = self._backend.collections(self._prefix + "-")
        return sorted(str(meta.get("trader_id")) for meta in found.values() if meta)

    def writer_lock(self) -> AbstractContextManager[None]:
        """The store's writer lock, across processes (:meth:`AuditLog.writer_lock`): for
        a read-decide-write that must not interleave with another process's."""
        return self._audit.writer_lock()

    def changes(self, trader_id: str) -> int:
        """How many writes of ``trader_id``'s records were confirmed so far, by any process
        sharing this store's audit trail (one SQLite primary-key read and a stat of the
        trail file, ~5 us): an in-process cache derived from the trader's records is
        current while it is unchanged."""
        return self._audit.changes(check_trader(trader_id))

    def changed_since(self, trader_id: str, cursor: int | None) -> tuple[int, list[str]]:
        """``(next cursor, ids)``: ``trader_id``'s records written by any process after
        ``cursor`` (costs those writes: :meth:`AuditLog.changed_since`); ``None``: no ids,
        the cursor to take *before* reading what an in-process index is built from. Rows a
        crashed process left pending are settled first (as when a store opens), so a
        long-running reader's cursor is not held by them until it restarts."""
        tid = check_trader(trader_id)
        if self._audit.orphaned(tid):  # it would hold the cursor until a store opens
            confirmed, dropped = self._audit.recover(self._landed)
            self.recovered = (self.recovered[0] + confirmed, self.recovered[1] + dropped)
        if cursor is None:
            return self._audit.change_cursor(tid), []
        return self._audit.changed_since(tid, cursor)

    def change_seq(self, trader_id: str, *, id_prefix: str) -> int:
        """A counter of confirmed writes of ``trader_id``'s records whose id starts with
        ``id_prefix`` (the newest audit ``seq``; 0 before the first), by any process sharing
        this store's audit trail (the same ``store.path``/``audit_path``). It changes
        whenever such a record is added, updated or deleted: an in-process cache of them
        is valid while it is unchanged."""
        return self._audit.last_change(check_trader(trader_id), id_prefix)

    def last_written(self, trader_id: str) -> datetime | None:
        """The latest ``as_of`` of any write of ``trader_id``'s records, by any process
        sharing the audit trail (None: never written)."""
        return self._audit.last_written(check_trader(trader_id))

    def history(self, trader_id: str, record_id: str | None = None) -> list[AuditEvent]:
        """Audit events of the trader (or one record), oldest first."""
        return self._audit.history(check_trader(trader_id), record_id)

    def close(self) -> None:
        """Close the audit trail (the backends need no closing: every acknowledged write
        is already in the backend)."""
        self._audit.close()

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
        bm25_corpus: Sequence[str] | None = None,
    ) -> list[SearchHit]:
        """Top ``top_k`` memories of ``trader_id`` for ``query``, created at or before ``as_of``.

        ``query`` is text, or a vector for ``dense`` only. ``filters`` narrow by ``kind``
        and free metadata keys (equality, or any-of for a list); ``min_importance`` keeps
        records with importance >= it. BM25 scores with the statistics (IDF, mean
        length) of the rows created by ``as_of`` of the kinds ``bm25_corpus`` names
        (default: those ``filters`` allows, else every kind). Results are ordered best first; see
        :class:`SearchHit` for the meaning of ``similarity``. ``as_of`` fences a record by
        its creation time: a record updated since is returned, and filtered on its
        importance, as last written (an episode's later outcomes; read episodes through
        :class:`~backend.memory.episodic.EpisodicMemory`, which replays them as of).

        Raises :class:`TenantScopeError` (reserved filter keys), :class:`LookAheadError`
        (naive ``as_of``), :class:`StoreError` (bad arguments, backend failure).
        """
        found = self._candidates(
            trader_id, query, as_of, top_k, method, filters, min_importance, bm25_corpus
        )
        if found is None:
            return []
        name, dense, lexical = found
        return assemble_hits(
            name, method, records_of(dense), records_of(lexical), top_k, self._rrf_k
        )

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
        bm25_corpus: Sequence[str] | None = None,
    ) -> list[tuple[MemoryRecord, float]]:
        """:meth:`search` as ``(record, similarity)`` pairs, without the provenance: the
        same records, order and similarities, for callers that re-rank a candidate pool
        every bar (building ~50 validated :class:`SearchHit` per recall was ~15% of it,
        measured). Same arguments and errors as :meth:`search`."""
        found = self._candidates(
            trader_id, query, as_of, top_k, method, filters, min_importance, bm25_corpus
        )
        if found is None:
            return []
        _, dense, lexical = found
        return rank_records(method, records_of(dense), records_of(lexical), top_k, self._rrf_k)

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
        bm25_corpus: Sequence[str] | None = None,
    ) -> list[tuple[str, float]]:
        """:meth:`search` as ``(record id, similarity)`` pairs, no record built: for a
        ranker that only needs ids (building the records of 7 searches of 100 hits was
        ~30% of a conversation recall, measured). Same arguments and errors."""
        found = self._candidates(
            trader_id, query, as_of, top_k, method, filters, min_importance, bm25_corpus
        )
        if found is None:
            return []
        _, dense, lexical = found
        return rank_ids(method, ids_of(dense), ids_of(lexical), top_k, self._rrf_k)

    def _candidates(
        self,
        trader_id: str,
        query: str | Sequence[float] | np.ndarray,
        as_of: datetime,
        top_k: int,
        method: SearchMethod,
        filters: FilterSpec | None,
        min_importance: float | None,
        bm25_corpus: Sequence[str] | None,
    ) -> tuple[str, list[Row], list[Row]] | None:
        """``(collection name, dense list, bm25 list)`` of a search; ``None`` when the
        trader has no collection (see :meth:`search`)."""
        where, as_of_ts = search_filter(
            query, as_of, top_k, method, filters, min_importance, bm25_corpus
        )
        name = self._collections.reading(trader_id)
        if name is None:
            return None
        n = top_k if method != "hybrid" else top_k * self._fanout
        dense, lexical = fetch_candidates(
            self._backend, self._embedder, name, trader_id, query, method, n, where, as_of_ts
        )
        return name, dense, lexical
