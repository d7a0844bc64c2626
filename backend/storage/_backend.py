"""The vector backend under the Khala store: one small abstract base, one subclass per kind.

:class:`~backend.storage.KhalaStore` keeps what is ours — tenant scoping, the ``as_of``
fence, the audit trail, hybrid fusion — and asks a :class:`VectorBackend` for rows,
top-k dense and BM25 answers of one collection (one trader). The shape follows mem0's
``vector_stores/base.py`` (a small base per backend kind, picked by a lazy factory:
:func:`backend.storage.open_store`) and freqtrade's data handlers (one subclass per
format, chosen by config).

Two backends, chosen by ``store.backend``:

- ``chroma`` (:mod:`backend.storage._chroma_backend`): durable, chromadb's
  ``PersistentClient`` (``store.mode: embedded``) or ``HttpClient`` (``server``); every
  write the store acknowledges is in chroma.
- ``memory`` (:mod:`backend.storage._memory_backend`): throwaway runs (backtests, evals,
  benchmarks): rows in process memory, exact numpy cosine search, BM25 by bm25s, nothing
  on disk.

Rows cross this boundary in chroma's shape: ``(id, text, metadata)`` where the metadata
is :func:`backend.storage._codec.record_to_meta`'s flat dict (``created_at_ts`` epoch
seconds, user keys under ``u.``), and unit ``float32`` vectors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from backend.storage._lexical import Filter, Row

__all__ = ["StoredRow", "VectorBackend"]

StoredRow = tuple[str, dict[str, Any], np.ndarray | None]
"""``(text, metadata, unit vector or None)`` of one stored row."""


class VectorBackend(ABC):
    """Collections of rows with unit vectors, keyed by collection name (module doc).

    Implementations are thread-safe. Errors of the underlying store are raised as
    :class:`~backend.errors.StoreError` (of :meth:`upsert`, :meth:`update` and
    :meth:`delete` too, whose caller settles the audit trail first and then drops what
    the backend keeps in process: :meth:`forget`); a backend without one may let
    ``ValueError`` or ``TypeError`` through from a write.
    """

    kind: ClassVar[str]
    shared: ClassVar[bool]
    """Whether another process can write the same collections (reads then validate what
    the backend keeps in process against the audit trail's change counter)."""
    max_batch: int
    """Rows per call the backend accepts (the store pages its writes by it)."""

    @abstractmethod
    def open(self, name: str, *, create: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The metadata of collection ``name``; a missing collection is created with
        ``create`` as its metadata, or ``None`` is returned when ``create`` is ``None``."""

    @abstractmethod
    def collections(self, prefix: str) -> dict[str, dict[str, Any]]:
        """``{name: metadata}`` of the collections whose name starts with ``prefix``."""

    @abstractmethod
    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        texts: Sequence[str],
        metas: Sequence[dict[str, Any]],
    ) -> None:
        """Insert or replace rows (``vectors``: ``(len(ids), dim)`` unit float32)."""

    @abstractmethod
    def update(self, name: str, ids: Sequence[str], metas: Sequence[dict[str, Any]]) -> None:
        """Replace the metadata of existing rows, keeping text and vector."""

    @abstractmethod
    def delete(self, name: str, ids: Sequence[str]) -> None:
        """Delete rows by id (unknown ids are ignored)."""

    @abstractmethod
    def rows(
        self, name: str, ids: Sequence[str], *, embeddings: bool = False
    ) -> dict[str, StoredRow]:
        """``{id: (text, metadata, vector or None)}`` of the ids that exist; vectors only
        with ``embeddings``. Always what the store holds now (for the chroma backend: read
        from chroma, never from a cache), so the audit trail's crash check can use it."""

    @abstractmethod
    def lookup(self, name: str, ids: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """``{id: (text, metadata)}`` of the ids that exist, from what the backend keeps
        in process where it has it (call :meth:`validate` first on a shared backend)."""

    @abstractmethod
    def scan(
        self, name: str, *, where: Filter, as_of_ts: float
    ) -> list[tuple[str, str, dict[str, Any]]]:
        """Every ``(id, text, metadata)`` created at or before ``as_of_ts`` matching
        ``where`` (any order)."""

    @abstractmethod
    def count(self, name: str, *, as_of_ts: float | None) -> int:
        """Rows of ``name`` (created at or before ``as_of_ts`` if given)."""

    @abstractmethod
    def dense(
        self, name: str, vec: np.ndarray, *, n: int, where: Filter, as_of_ts: float
    ) -> list[Row]:
        """The top ``n`` ``(id, text, metadata, similarity)`` by cosine among rows created
        at or before ``as_of_ts`` matching ``where``, nearest first; similarity
        ``1 - cosine distance / 2`` in [0, 1]."""

    @abstractmethod
    def lexical(
        self, name: str, query: str, *, n: int, where: Filter, as_of_ts: float
    ) -> list[Row]:
        """The top ``n`` ``(id, text, metadata, bm25 score > 0)`` for ``query``, best first
        (ties by id), among rows created at or before ``as_of_ts`` matching ``where``."""

    def validate(self, name: str, stamp: int) -> None:  # noqa: B027 - optional hook
        """Drop what the backend keeps in process for ``name`` unless it reflects change
        count ``stamp`` of the audit trail (shared backends; a no-op otherwise)."""

    def written(self, name: str, stamp: int) -> None:  # noqa: B027 - optional hook
        """This process wrote ``name`` (already reflected in process) and its write moved
        the audit trail's change count to ``stamp``: what is kept in process is current at
        ``stamp`` only if it was current at ``stamp - 1`` (nobody else wrote in between)."""

    def forget(self, name: str) -> None:  # noqa: B027
        """A write to ``name`` failed: drop what the backend keeps in process for it."""
