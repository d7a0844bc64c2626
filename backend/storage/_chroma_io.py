"""The Khala store's calls to chroma collections: rows by id, top-k queries and writes,
paged by chroma's max batch size, chroma's errors turned into :class:`StoreError`, and
writes held and sent in batches for a throwaway store (``write_coalesce``, see
:mod:`backend.storage._pending`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from chromadb.api.models.Collection import Collection
from chromadb.errors import ChromaError

from backend.embeddings import Vectors
from backend.errors import StoreError
from backend.storage._codec import record_from_chroma
from backend.storage._lexical import Row
from backend.storage._pending import PendingWrites
from backend.storage.models import MemoryRecord

__all__ = ["ChromaIO"]


class ChromaIO:
    """Chroma I/O of one store (module doc). ``coalesce``: hold writes and send them
    ``coalesce`` records at a time (0 = write through); ``lock``: the store's lock, held
    around the held writes; ``on_lost(trader_id)``: called when chroma refuses held
    writes (the store drops that trader's mirror, to rebuild it from chroma)."""

    def __init__(
        self,
        *,
        max_batch: int,
        coalesce: int,
        lock: threading.RLock,
        on_lost: Callable[[str], None],
    ) -> None:
        self.max_batch = max_batch
        self.coalesce = coalesce
        self._lock = lock
        self._on_lost = on_lost
        self._pending: dict[str, PendingWrites] = {}
        """Collection name -> writes held for it."""

    def send(
        self,
        col: Collection,
        changed: list[MemoryRecord],
        vectors: Vectors,
        metas: list[dict[str, Any]],
        relabelled: list[MemoryRecord],
        relabel_metas: list[dict[str, Any]],
    ) -> None:
        """Write an upsert's rows: ``changed`` with their vectors (chroma ``upsert``) and
        ``relabelled`` (same text: metadata-only ``update``, ``None`` removes a key); or
        hold them, first sending what earlier writes left held if that reached
        ``coalesce`` records — unless this write only relabels held upserts (it is then
        folded into them: the outcomes of just-written episodes cost no chroma call).
        Chroma's exceptions propagate (the store turns them into :class:`StoreError`)."""
        if self.coalesce > 0:
            with self._lock:
                pending = self._pending.setdefault(col.name, PendingWrites())
                folds = not changed and pending.holds_upserts(r.id for r in relabelled)
                if len(pending) >= self.coalesce and not folds:
                    pending.drain(col, max_batch=self.max_batch)
                pending.upsert([r.id for r in changed], vectors, [r.text for r in changed], metas)
                pending.update([r.id for r in relabelled], relabel_metas)
            return
        for start in range(0, len(changed), self.max_batch):
            end = start + self.max_batch
            col.upsert(
                ids=[r.id for r in changed[start:end]],
                embeddings=vectors[start:end],
                documents=[r.text for r in changed[start:end]],
                metadatas=metas[start:end],  # type: ignore[arg-type]
            )
        for start in range(0, len(relabelled), self.max_batch):
            end = start + self.max_batch
            col.update(
                ids=[r.id for r in relabelled[start:end]],
                metadatas=relabel_metas[start:end],  # type: ignore[arg-type]
            )

    def drain(self, col: Collection) -> None:
        """Send the writes held for ``col`` before chroma itself is read or changed
        otherwise. Raises :class:`StoreError` if chroma refuses them: they are then lost,
        and ``on_lost`` is called with the collection's trader."""
        with self._lock:
            pending = self._pending.get(col.name)
            if not pending:
                return
            held = len(pending)
            try:
                pending.drain(col, max_batch=self.max_batch)
            except (ChromaError, ValueError, TypeError) as exc:
                trader_id = str((col.metadata or {}).get("trader_id", ""))
                self._on_lost(trader_id)
                raise StoreError(
                    f"trader {trader_id}: chroma refused {held} coalesced writes: {exc}"
                ) from None

    def holds(self, col: Collection) -> bool:
        """Whether writes are held for ``col``."""
        with self._lock:
            return bool(self._pending.get(col.name))

    def discard(self, name: str | None = None) -> None:
        """Forget the writes held for collection ``name`` (all if ``None``): it failed or
        was dropped."""
        with self._lock:
            if name is None:
                self._pending.clear()
            else:
                self._pending.pop(name, None)

    def fetch(
        self, col: Collection, ids: list[str], *, embeddings: bool
    ) -> dict[str, tuple[MemoryRecord, Any]]:
        """Rows by id as ``{id: (record, stored embedding or None)}`` (held writes sent
        first). Raises :class:`StoreError`."""
        self.drain(col)
        out: dict[str, tuple[MemoryRecord, Any]] = {}
        include = ["documents", "metadatas"] + (["embeddings"] if embeddings else [])
        for start in range(0, len(ids), self.max_batch):
            try:
                page = col.get(ids=ids[start : start + self.max_batch], include=include)  # type: ignore[arg-type]
            except ChromaError as exc:
                raise StoreError(f"chroma get from {col.name} failed: {exc}") from None
            embs = page["embeddings"] if embeddings and page["embeddings"] is not None else None
            for i, (rid, doc, meta) in enumerate(
                zip(page["ids"], page["documents"] or [], page["metadatas"] or [], strict=True)
            ):
                out[rid] = (
                    record_from_chroma(rid, doc, dict(meta)),
                    None if embs is None else embs[i],
                )
        return out

    def query(
        self,
        col: Collection,
        trader_id: str,
        vec: np.ndarray,
        n: int,
        where: dict[str, Any] | None,
        *,
        include_rows: bool,
    ) -> list[Row]:
        """One chroma top-``n`` query: ``(id, text, chroma metadata, similarity in [0, 1])``,
        nearest first (held writes sent first); without ``include_rows`` text and metadata
        are left empty (and the trader check is the caller's). Raises :class:`StoreError`."""
        self.drain(col)
        include = ["distances", "metadatas", "documents"] if include_rows else ["distances"]
        try:
            res = col.query(
                query_embeddings=vec[None, :],
                n_results=n,
                where=where,
                include=include,  # type: ignore[arg-type]
            )
        except ChromaError as exc:
            raise StoreError(f"trader {trader_id}: chroma query failed: {exc}") from None
        ids = res["ids"][0]
        dists = (res["distances"] or [[]])[0]
        metas = (res["metadatas"] or [[{}] * len(ids)])[0] if include_rows else [{}] * len(ids)
        docs = (res["documents"] or [[""] * len(ids)])[0] if include_rows else [""] * len(ids)
        out = []
        for rid, dist, meta, doc in zip(ids, dists, metas, docs, strict=True):
            if include_rows and meta.get("trader_id") != trader_id:
                continue
            sim = min(1.0, max(0.0, 1.0 - float(dist) / 2.0))
            out.append((rid, doc, dict(meta), sim))
        return out
