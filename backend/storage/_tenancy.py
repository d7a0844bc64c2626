"""Tenant scoping of the Khala store: a valid trader id, the trader's collection name (a
hash of the id under the store's prefix), the checks a trader's collection is opened with
(its owner and its embedding model), and the store's opened collections
(:class:`TraderCollections`)."""

from __future__ import annotations

import hashlib
import re

from backend.embeddings import Embedder
from backend.errors import EmbeddingMismatchError, TenantScopeError
from backend.storage._audit import AuditLog
from backend.storage._backend import VectorBackend
from backend.storage.models import TRADER_ID_PATTERN

__all__ = ["TraderCollections", "check_trader", "open_collection", "trader_collection"]

_TRADER_RE = re.compile(TRADER_ID_PATTERN)


def check_trader(trader_id: str) -> str:
    """``trader_id`` itself if it is a valid trader id; raises :class:`TenantScopeError`."""
    if not isinstance(trader_id, str) or not _TRADER_RE.fullmatch(trader_id):
        raise TenantScopeError(f"invalid trader_id {str(trader_id)[:40]!r}")
    return trader_id


def trader_collection(prefix: str, trader_id: str) -> str:
    """The collection of ``trader_id`` under ``prefix`` (a hash: any trader id is a valid
    name). Raises :class:`TenantScopeError` for an invalid trader id."""
    digest = hashlib.sha256(check_trader(trader_id).encode()).hexdigest()[:32]
    return f"{prefix}-{digest}"


def open_collection(
    backend: VectorBackend, embedder: Embedder, name: str, trader_id: str, *, create: bool
) -> bool:
    """Open the collection ``name`` of ``trader_id`` (created if ``create``, with the
    trader and the embedding model as its metadata); False when it does not exist (and
    ``create`` is false). Raises :class:`TenantScopeError` (the collection belongs to
    another trader), :class:`EmbeddingMismatchError` (embedded with another model)."""
    wanted = {
        "trader_id": trader_id,
        "embedding_model": embedder.model_id,
        "embedding_dim": embedder.dim,
    }
    meta = backend.open(name, create=wanted if create else None)
    if meta is None:
        return False
    if meta.get("trader_id") != trader_id:
        raise TenantScopeError(f"collection {name} belongs to another trader")
    if (meta.get("embedding_model"), meta.get("embedding_dim")) != (
        embedder.model_id,
        embedder.dim,
    ):
        raise EmbeddingMismatchError(
            f"trader {trader_id}: memories were embedded with "
            f"{meta.get('embedding_model')} ({meta.get('embedding_dim')}-d), "
            f"not {embedder.model_id} ({embedder.dim}-d)"
        )
    return True


class TraderCollections:
    """The collections of one store's traders (``<prefix>-<hash>``), opened and checked
    at every use (:func:`open_collection`; the backend keeps the handles)."""

    def __init__(
        self, backend: VectorBackend, embedder: Embedder, audit: AuditLog, prefix: str
    ) -> None:
        self._backend = backend
        self._embedder = embedder
        self._audit = audit
        self._prefix = prefix

    def name(self, trader_id: str) -> str:
        """The collection of ``trader_id`` (:func:`trader_collection`)."""
        return trader_collection(self._prefix, trader_id)

    def open(self, trader_id: str, *, create: bool) -> str | None:
        """The trader's collection name, opened (and created if ``create``; reads never
        create). Raises :class:`TenantScopeError`, :class:`EmbeddingMismatchError`."""
        name = self.name(trader_id)
        # no set of opened names here: the backend keeps its collection handles (an open
        # known to it costs ~1 us), so the checks run on every call
        if not open_collection(self._backend, self._embedder, name, trader_id, create=create):
            return None
        return name

    def reading(self, trader_id: str, *, create: bool = False) -> str | None:
        """:meth:`open`, then (shared backends) the in-process rows validated against the
        audit trail's change count: another process's writes are seen."""
        name = self.open(trader_id, create=create)
        if name is not None and self._backend.shared:
            self._backend.validate(name, self._audit.changes(trader_id))
        return name
