"""Coalesced chroma writes of a throwaway store (``StoreSettings.write_coalesce``).

A chroma write call costs ~6-10 ms on this machine whatever its size, plus ~1.5 ms per
record (chromadb 1.5, in process, measured), and a decision loop writes a few records
at a time: 85 calls for 191 records in a month of BTC/USDT 1h bars, over a second of a
four-second backtest. A store that is the only reader and writer of its data (an
ephemeral run store, which serves every read from its in-process mirror) can hold its
writes here and send them in one ``upsert`` and one ``update`` call once
``write_coalesce`` records are held (at the next write: ``ChromaIO.send``): replayed, the
month's writes took 0.54-0.87 s instead of 1.31-1.77 s; in the loop, 4 calls instead
of 87. Any read that goes to chroma itself sends the pending writes first
(``ChromaIO.drain``), so chroma never answers from stale data.

Coalescing keeps the last write of each id: an ``update`` (metadata only) of an id whose
``upsert`` is pending is folded into that upsert; a new ``upsert`` replaces a pending
``update``; two ``update`` calls merge like chroma merges them (a ``None`` value removes
the key).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from chromadb.api.models.Collection import Collection

__all__ = ["PendingWrites"]


class PendingWrites:
    """The writes of one collection not yet sent to chroma (module doc). Not thread-safe:
    the store calls it under its lock."""

    def __init__(self) -> None:
        self._upserts: dict[str, tuple[np.ndarray, str, dict[str, Any]]] = {}
        self._updates: dict[str, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._upserts) + len(self._updates)

    def upsert(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        documents: Sequence[str],
        metadatas: Sequence[dict[str, Any]],
    ) -> None:
        """Hold an upsert of ``ids`` (``vectors``: one unit vector per id)."""
        for rid, vec, doc, meta in zip(ids, vectors, documents, metadatas, strict=True):
            self._updates.pop(rid, None)
            self._upserts[rid] = (vec, doc, meta)

    def update(self, ids: Sequence[str], metadatas: Sequence[dict[str, Any]]) -> None:
        """Hold a metadata-only update of ``ids`` (chroma semantics: ``None`` removes a key)."""
        for rid, meta in zip(ids, metadatas, strict=True):
            pending = self._upserts.get(rid)
            if pending is not None:
                merged = {k: v for k, v in {**pending[2], **meta}.items() if v is not None}
                self._upserts[rid] = (pending[0], pending[1], merged)
            else:
                self._updates[rid] = {**self._updates.get(rid, {}), **meta}

    def holds_upserts(self, ids: Iterable[str]) -> bool:
        """Whether an upsert of every one of ``ids`` is held."""
        return all(rid in self._upserts for rid in ids)

    def drain(self, col: Collection, *, max_batch: int) -> int:
        """Send everything held to ``col`` (upserts, then updates, in pages of
        ``max_batch``) and forget it; returns how many records were written. Chroma's
        exceptions propagate (the caller turns them into ``StoreError``); what was held is
        forgotten either way."""
        upserts, self._upserts = self._upserts, {}
        updates, self._updates = self._updates, {}
        ids = list(upserts)
        for start in range(0, len(ids), max_batch):
            page = ids[start : start + max_batch]
            col.upsert(
                ids=page,
                embeddings=np.stack([upserts[rid][0] for rid in page]),
                documents=[upserts[rid][1] for rid in page],
                metadatas=[upserts[rid][2] for rid in page],
            )
        changed = list(updates)
        for start in range(0, len(changed), max_batch):
            page = changed[start : start + max_batch]
            col.update(ids=page, metadatas=[updates[rid] for rid in page])
        return len(ids) + len(changed)
