"""The Khala vector layer: trader-scoped memory records on chromadb, with an audit trail.

Design:
- **Tenant scoping by construction.** Each trader has its own chroma collection
  (``<prefix>-<sha256(trader_id)[:32]>``, cosine space, created with get-or-create),
  so no query, id or filter can reach another trader's vectors. Every record also
  carries ``trader_id`` in its metadata and results are checked against it.
- **Time is an argument.** Writes and reads carry a UTC ``as_of``; a write may not
  contain records created after it (:class:`LookAheadError`) and a read never returns
  records created after it (chroma ``where created_at_ts <= as_of``).
- **Dense, BM25 and hybrid search.** Dense is chroma's HNSW top-k; BM25 (bm25s) runs on an
  in-process mirror of the trader's texts; hybrid is reciprocal-rank fusion of both.
- **Nothing half-written, nothing unaudited.** A batch is validated and embedded first;
  its audit rows are committed ahead of the chroma write and confirmed after it (a write
  cut by a crash is settled when the store is next opened, :mod:`backend.storage._audit`;
  ``tests/reliability/test_crash_safety.py``). Writes of one process are serialised.

Embeddings are always computed by the given :class:`~backend.embeddings.Embedder` and
passed to chroma explicitly; chroma's own default embedding function is never used.

The store is split in private modules: the search side (:mod:`backend.storage._search`,
inherited), the calls to chroma and the writes a throwaway store holds
(:mod:`backend.storage._chroma_io`, :mod:`backend.storage._pending`), the BM25 mirror
(:mod:`backend.storage._lexical`) and the row codec (:mod:`backend.storage._codec`).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from chromadb.errors import ChromaError, NotFoundError
from pydantic import ValidationError

from backend.embeddings import Embedder, Vectors
from backend.errors import EmbeddingMismatchError, LookAheadError, StoreError, TenantScopeError
from backend.storage._audit import AuditLog, AuditRow, PendingRow
from backend.storage._chroma_io import ChromaIO
from backend.storage._codec import checked_ts, meta_ts, record_from_chroma, record_to_meta
from backend.storage._lexical import Filter, FilterSpec, LexicalIndex, make_stemmer
from backend.storage._search import SearchMixin
from backend.storage.models import (
    TRADER_ID_PATTERN,
    AuditEvent,
    MemoryRecord,
    UpsertResult,
    to_utc,
)

__all__ = ["KhalaStore"]


_TRADER_RE = __import__("re").compile(TRADER_ID_PATTERN)


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


def _replacing(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """Metadata for chroma's merging ``update``: ``new`` plus ``None`` (= delete) for
    every key of ``old`` that ``new`` no longer has."""
    return {**{key: None for key in old if key not in new}, **new}


class KhalaStore(SearchMixin):
    """Trader-scoped memory store over a chromadb client (embedded or server).

    Build the client, embedder and audit log at the composition root and pass them in
    (see :func:`backend.storage.open_store`). All methods are thread-safe.
    """

    def __init__(
        self,
        client: ClientAPI,
        embedder: Embedder,
        audit: AuditLog,
        *,
        collection_prefix: str = "khala",
        rrf_k: int = 60,
        hybrid_fanout: int = 4,
        hnsw: dict[str, int] | None = None,
        exact_search_max: int = 0,
        bm25_stemmer: str | None = None,
        write_coalesce: int = 0,
    ) -> None:
        """``exact_search_max``: dense search runs exact cosine in process (no chroma
        query) for traders with at most this many records — only for a store that is the
        only writer of its collections (a throwaway backtest store): records another
        process writes are not seen. 0 (default) = always chroma's HNSW.
        ``bm25_stemmer``: Snowball language of BM25 stemming (``"english"``), or ``None``.
        ``write_coalesce``: hold writes and send them to chroma ``write_coalesce`` records
        at a time (:mod:`backend.storage._pending`); needs ``exact_search_max > 0`` (reads
        served in process) and suits only an ephemeral store: held writes die with the
        process (the audit trail records a write when the store accepts it, held or
        not). 0 (default) = every write goes to chroma at once.

        Raises :class:`StoreError` for ``write_coalesce > 0`` without ``exact_search_max``.
        """
        if write_coalesce > 0 and exact_search_max <= 0:
            raise StoreError("write_coalesce needs exact_search_max > 0 (reads in process)")
        self._stemmer = make_stemmer(bm25_stemmer)
        self._client = client
        self._exact_max = exact_search_max
        self._embedder = embedder
        self._audit = audit
        self._prefix = collection_prefix
        self._rrf_k = rrf_k
        self._fanout = hybrid_fanout
        self._hnsw = {"space": "cosine", **(hnsw or {})}
        self._collections: dict[str, Collection] = {}
        self._lexical: dict[str, LexicalIndex] = {}
        self._lock = threading.RLock()
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._records: dict[str, tuple[dict[str, Any], str, MemoryRecord]] = {}
        self._max_batch = int(client.get_max_batch_size())
        self._io = ChromaIO(
            max_batch=self._max_batch,
            coalesce=write_coalesce,
            lock=self._lock,
            on_lost=self._drop_mirror,
        )
        self.recovered = audit.recover(self._landed)
        """``(confirmed, dropped)`` audit rows a crashed writer had left pending."""

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    def collection_name(self, trader_id: str) -> str:
        """The chroma collection of ``trader_id`` (a hash: any trader id is a valid name)."""
        digest = hashlib.sha256(_check_trader(trader_id).encode()).hexdigest()[:32]
        return f"{self._prefix}-{digest}"

    def collection(self, trader_id: str) -> Collection:
        """The trader's chroma collection, created on first use (get-or-create, cosine).

        Raises :class:`EmbeddingMismatchError` if it was built with another embedding model.
        """
        col = self._open(trader_id, create=True)
        assert col is not None
        return col

    def _open(self, trader_id: str, *, create: bool) -> Collection | None:
        """The trader's collection; ``None`` if it does not exist and ``create`` is false
        (reads never create collections)."""
        with self._lock:
            col = self._collections.get(trader_id)
            if col is not None:
                return col
            name = self.collection_name(trader_id)
            wanted = {
                "trader_id": trader_id,
                "embedding_model": self._embedder.model_id,
                "embedding_dim": self._embedder.dim,
            }
            try:
                try:
                    col = self._client.get_collection(name, embedding_function=None)
                except NotFoundError:
                    if not create:
                        return None
                    col = self._client.get_or_create_collection(
                        name,
                        embedding_function=None,
                        configuration={"hnsw": self._hnsw},  # type: ignore[arg-type]
                        metadata=wanted,
                    )
            except ChromaError as exc:
                raise StoreError(f"chroma collection {name}: {exc}") from None
            meta = dict(col.metadata or {})
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
            self._collections[trader_id] = col
            return col

    def _lex(self, trader_id: str) -> LexicalIndex:
        with self._lock:
            index = self._lexical.get(trader_id)
            if index is None:
                index = LexicalIndex(stemmer=self._stemmer)
                col = self._open(trader_id, create=False)
                if col is not None:
                    self._io.drain(col)
                total = col.count() if col is not None else 0
                exact = 0 < total <= self._exact_max
                include = ["documents", "metadatas"] + (["embeddings"] if exact else [])
                for offset in range(0, total, self._max_batch):
                    page = col.get(  # type: ignore[union-attr]
                        include=include,  # type: ignore[arg-type]
                        limit=self._max_batch,
                        offset=offset,
                    )
                    embs = page["embeddings"] if exact else None
                    index.put(
                        [
                            (rid, doc, meta_ts(meta), dict(meta))
                            for rid, doc, meta in zip(
                                page["ids"],
                                page["documents"] or [],
                                page["metadatas"] or [],
                                strict=True,
                            )
                        ],
                        None if embs is None else [np.asarray(e, dtype=np.float32) for e in embs],
                    )
                self._lexical[trader_id] = index
            return index

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
        change keeps its stored embedding and is written with chroma's metadata-only
        ``update`` (measured ~0.5 ms per record, vs ~6-10 ms for an ``upsert`` of an
        existing id, which re-links the HNSW graph). Records may bring their own
        ``embedding`` (``dim`` floats, unit length); the rest are embedded in one batch.

        Raises :class:`TenantScopeError` (a record of another trader, duplicate ids),
        :class:`LookAheadError` (``created_at`` after ``as_of``), :class:`StoreError`.
        Either the whole batch is written and audited, or nothing is.
        """
        col = self.collection(trader_id)
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
        if not records:
            return UpsertResult()
        existing = self._stored(trader_id, col, [r.id for r in records])
        changed: list[MemoryRecord] = []
        relabelled: list[tuple[MemoryRecord, dict[str, Any]]] = []
        rows: list[AuditRow] = []
        unchanged = 0
        for r in records:
            old = existing.get(r.id)
            if old is not None and _same(old[0].content(), r.content()):
                unchanged += 1
                continue
            if old is not None and old[0].text == r.text and r.embedding is None:
                relabelled.append((r, record_to_meta(old[0])))
            else:
                changed.append(r)
            rows.append(
                (
                    trader_id,
                    r.id,
                    "UPDATE" if old else "ADD",
                    old[0].content() if old else None,
                    r.content(),
                )
            )
        if not rows:
            return UpsertResult(unchanged=unchanged)
        vectors = self._vectors_for(changed)
        metas = [record_to_meta(r) for r in changed]
        relabel_metas = [_replacing(record_to_meta(r), old) for r, old in relabelled]
        with self._audit.transaction(as_of=as_of, landed=self._landed) as audit:
            audit.record(rows)
            try:
                self._io.send(
                    col, changed, vectors, metas, [r for r, _ in relabelled], relabel_metas
                )
            except (ChromaError, ValueError, TypeError) as exc:
                self._forget_mirror(trader_id)
                raise StoreError(f"trader {trader_id}: chroma upsert failed: {exc}") from None
            mirror = self._lex(trader_id)  # inside the write: the mirror follows chroma's order
            mirror.put(  # new vectors; relabelled rows keep theirs
                [
                    (r.id, r.text, m["created_at_ts"], m)
                    for r, m in zip(changed, metas, strict=True)
                ],
                list(vectors),
            )
            mirror.put(
                (r.id, r.text, r.created_at.timestamp(), record_to_meta(r)) for r, _ in relabelled
            )
        added = sum(1 for row in rows if row[2] == "ADD")
        return UpsertResult(added=added, updated=len(rows) - added, unchanged=unchanged)

    def _stored(
        self, trader_id: str, col: Collection, ids: list[str]
    ) -> dict[str, tuple[MemoryRecord, None]]:
        """:meth:`_fetch` without embeddings; a store that is its data's only writer
        (``exact_search_max > 0``) reads the rows from its mirror, which holds every row
        (~2 ms per chroma ``get`` call saved, 175 calls in a month of 1h bars)."""
        if self._exact_max <= 0:
            return self._io.fetch(col, ids, embeddings=False)
        return {
            rid: (record_from_chroma(rid, text, dict(meta)), None)
            for rid, (text, _, meta) in self._lex(trader_id).lookup(ids).items()
        }

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
        ``pydantic.ValidationError``-derived :class:`StoreError` for invalid values.
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
        col = self.collection(trader_id)
        self._io.drain(col)
        with self._audit.transaction(as_of=as_of, landed=self._landed) as audit:
            audit.record([(trader_id, r.id, "DELETE", r.content(), None) for r in visible])
            try:
                col.delete(ids=[r.id for r in visible])
            except ChromaError as exc:
                self._forget_mirror(trader_id)
                raise StoreError(f"trader {trader_id}: chroma delete failed: {exc}") from None
            self._lex(trader_id).remove(r.id for r in visible)
        return len(visible)

    def _drop_mirror(self, trader_id: str) -> None:
        """Drop the trader's in-process mirror (rebuilt from chroma on next use)."""
        with self._lock:
            self._lexical.pop(trader_id, None)

    def _forget_mirror(self, trader_id: str) -> None:
        """Drop the trader's in-process mirror after a failed write (rebuilt from chroma),
        and any writes held for it (they failed with it)."""
        self._drop_mirror(trader_id)
        self._io.discard(self.collection_name(trader_id))

    def _landed(self, rows: Sequence[PendingRow]) -> list[bool]:
        """For audit rows written ahead of a chroma write that failed or was cut by a
        crash: whether chroma holds each mutation (a delete: the id is gone; an add or
        update: the record has exactly the new content)."""
        found: dict[tuple[str, str], MemoryRecord] = {}
        for trader_id in {r.trader_id for r in rows}:
            col = self._open(trader_id, create=False)
            if col is None:
                continue
            ids = list(dict.fromkeys(r.record_id for r in rows if r.trader_id == trader_id))
            for rid, (stored, _) in self._io.fetch(col, ids, embeddings=False).items():
                found[(trader_id, rid)] = stored
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
        col = self._open(trader_id, create=False)
        if col is None:
            return []
        unique = list(dict.fromkeys(ids))
        stored: dict[str, tuple[MemoryRecord, Any]] = (
            self._io.fetch(col, unique, embeddings=True)
            if include_embeddings
            else self._stored(trader_id, col, unique)
        )
        found = {
            rid: rec.model_copy(update={"embedding": [float(x) for x in emb]})
            if emb is not None
            else rec
            for rid, (rec, emb) in stored.items()
            if rec.trader_id == trader_id and rec.created_at.timestamp() <= as_of_ts
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
        col = self._open(trader_id, create=False)
        if col is None:
            return []
        self._io.drain(col)
        try:
            page = col.get(
                where=where.to_chroma(as_of_ts=checked_ts(as_of)),
                include=["documents", "metadatas"],
            )
        except ChromaError as exc:
            raise StoreError(f"trader {trader_id}: chroma get failed: {exc}") from None
        records = sorted(
            (
                record_from_chroma(rid, doc, dict(meta))
                for rid, doc, meta in zip(
                    page["ids"], page["documents"] or [], page["metadatas"] or [], strict=True
                )
                if meta.get("trader_id") == trader_id
            ),
            key=lambda r: (r.created_at, r.id),
        )
        return records[-limit:] if limit is not None and limit > 0 else records

    def count(self, trader_id: str, *, as_of: datetime | None = None) -> int:
        """Number of records of ``trader_id`` (created at or before ``as_of`` if given)."""
        col = self._open(trader_id, create=False)
        if col is None:
            return 0
        self._io.drain(col)
        if as_of is None:
            return int(col.count())
        page = col.get(where={"created_at_ts": {"$lte": checked_ts(as_of)}}, include=[])  # type: ignore[dict-item]
        return len(page["ids"])

    def traders(self) -> list[str]:
        """Trader ids that have a collection in this store's prefix."""
        out = []
        for col in self._client.list_collections():
            if col.name.startswith(self._prefix + "-") and col.metadata:
                out.append(str(col.metadata.get("trader_id")))
        return sorted(out)

    def drop_all(self) -> int:
        """Delete every collection of this store's prefix (a throwaway store at its end);
        returns how many. The audit trail is kept. Raises :class:`StoreError`."""
        with self._lock:
            try:
                names = [
                    col.name
                    for col in self._client.list_collections()
                    if col.name.startswith(self._prefix + "-")
                ]
                for name in names:
                    self._client.delete_collection(name)
            except ChromaError as exc:
                raise StoreError(f"dropping the {self._prefix} collections: {exc}") from None
            self._collections.clear()
            self._lexical.clear()
            self._io.discard()  # held writes of dropped collections: nothing to send
            return len(names)

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
        """Send any writes still held (``write_coalesce``), then close the audit trail
        (chroma clients need no closing)."""
        with self._lock:
            held = [col for col in self._collections.values() if self._io.holds(col)]
        try:
            for col in held:
                self._io.drain(col)
        finally:
            self._audit.close()
