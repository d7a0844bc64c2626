"""The write path of the Khala store, as functions of its pieces: a batch checked
against its trader and ``as_of``, sorted into what changes (with its audit rows),
embedded and written to the backend page by page; a record with an update's changes; and
which audit rows left pending by a failed write actually landed (read from the
backend)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from chromadb.errors import ChromaError
from pydantic import ValidationError

from backend.embeddings import Embedder, Vectors
from backend.errors import LookAheadError, StoreError, TenantScopeError
from backend.storage._audit import AuditRow, PendingRow
from backend.storage._backend import VectorBackend
from backend.storage._codec import checked_ts, record_from_chroma, record_to_meta, trusted_record
from backend.storage._tenancy import TraderCollections
from backend.storage.models import MemoryRecord
from backend.types import to_utc

__all__ = [
    "check_batch",
    "delete_rows",
    "embed_records",
    "landed_rows",
    "merged_record",
    "plan_upsert",
    "same",
    "stored_vectors",
    "write_rows",
]

_WRITE_ERRORS = (ChromaError, ValueError, TypeError, StoreError)
"""A backend write's failures (the chroma backend raises :class:`StoreError` for chroma's):
each drops what the backend keeps in process for the collection, and is said with the
trader."""


def same(a: Any, b: Any) -> bool:
    """Content equality with floats equal to 1e-12 relative: chromadb returns about one
    metadata float in nine one ulp off what was written (its float parsing is not
    correctly rounded), which must not turn an identical re-upsert into an UPDATE; a bool
    equals only a bool (``True`` for ``1`` had been dropped as unchanged)."""
    if isinstance(a, bool) or isinstance(b, bool):  # True == 1 to Python, not to chroma
        return type(a) is type(b) and a == b
    if isinstance(a, float) and isinstance(b, float):
        return a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def check_batch(trader_id: str, records: Sequence[MemoryRecord], as_of: datetime) -> None:
    """Raises :class:`TenantScopeError` (a record of another trader, duplicate ids) and
    :class:`LookAheadError` (``created_at`` after ``as_of``, a naive ``as_of``)."""
    as_of_ts = checked_ts(as_of)
    seen: set[str] = set()
    for r in records:
        if r.trader_id != trader_id:
            raise TenantScopeError(f"record {r.id!r} belongs to {r.trader_id!r}, not {trader_id!r}")
        if r.id in seen:
            raise TenantScopeError(f"record id {r.id!r} appears twice in one batch")
        if r.created_at.timestamp() > as_of_ts:
            raise LookAheadError(
                f"record {r.id!r} created_at {r.created_at.isoformat()} is after as_of "
                f"{to_utc(as_of).isoformat()}"
            )
        seen.add(r.id)


def plan_upsert(
    trader_id: str,
    records: Sequence[MemoryRecord],
    existing: Mapping[str, tuple[str, dict[str, Any]]],
    stored_vectors: Callable[[list[str]], Mapping[str, np.ndarray]],
) -> tuple[list[MemoryRecord], list[MemoryRecord], list[AuditRow]]:
    """``(changed, relabelled, audit rows)`` of a batch given the ``existing`` stored rows
    (id -> (text, metadata)): records identical to the stored ones are left out (one
    that brings an embedding only when the stored vector is that one as well:
    ``stored_vectors(ids)``, read for those only; a new vector with the same text had
    been dropped as unchanged); one whose text did not change and that brings no
    embedding is relabelled (its metadata rewritten); the others are (re-)embedded and
    written."""
    olds = {r.id: trusted_record(r.id, *existing[r.id]) for r in records if r.id in existing}
    same_content = {
        r.id
        for r in records
        if (old := olds.get(r.id)) is not None and same(old.content(), r.content())
    }
    brought = [r for r in records if r.id in same_content and r.embedding is not None]
    vectors = stored_vectors([r.id for r in brought]) if brought else {}
    for r in brought:
        held = vectors.get(r.id)
        new = np.asarray(r.embedding, dtype=np.float32)
        new = new / max(float(np.linalg.norm(new)), 1e-12)
        if held is None or held.shape != new.shape or not np.allclose(held, new, atol=1e-6):
            same_content.discard(r.id)
    changed: list[MemoryRecord] = []
    relabelled: list[MemoryRecord] = []
    rows: list[AuditRow] = []
    for r in records:
        if r.id in same_content:
            continue
        old = olds.get(r.id)
        if old is not None and old.text == r.text and r.embedding is None:
            relabelled.append(r)
        else:
            changed.append(r)
        if old is None:
            rows.append((trader_id, r.id, "ADD", None, r.content()))
        else:
            rows.append((trader_id, r.id, "UPDATE", old.content(), r.content()))
    return changed, relabelled, rows


def stored_vectors(
    backend: VectorBackend, name: str
) -> Callable[[list[str]], dict[str, np.ndarray]]:
    """What :func:`plan_upsert` reads the stored vectors of ids with (from the backend)."""

    def read(ids: list[str]) -> dict[str, np.ndarray]:
        rows = backend.rows(name, ids, embeddings=True)
        return {rid: vec for rid, (_, _, vec) in rows.items() if vec is not None}

    return read


def embed_records(embedder: Embedder, records: list[MemoryRecord]) -> Vectors:
    """Given embeddings (normalised) or one batched embedding call for the rest."""
    out = np.empty((len(records), embedder.dim), dtype=np.float32)
    todo: list[int] = []
    for i, r in enumerate(records):
        if r.embedding is not None:
            vec = np.asarray(r.embedding, dtype=np.float32)
            norm = float(np.linalg.norm(vec)) if np.all(np.isfinite(vec)) else 0.0
            if vec.shape != (embedder.dim,) or not norm > 1e-6:  # a zero vector: no direction
                raise StoreError(
                    f"record {r.id!r}: embedding must be {embedder.dim} finite floats, not all 0"
                )
            out[i] = vec / norm
        else:
            todo.append(i)
    if todo:
        out[todo] = embedder.embed([records[i].text for i in todo])
    return out


def write_rows(
    backend: VectorBackend,
    name: str,
    trader_id: str,
    changed: list[MemoryRecord],
    relabelled: list[MemoryRecord],
    vectors: Vectors,
) -> None:
    """Upsert ``changed`` (with their ``vectors``), then rewrite the metadata of
    ``relabelled``, in pages of ``backend.max_batch``. Raises :class:`StoreError` on a
    backend failure (what the backend keeps in process for ``name`` is dropped)."""
    step = backend.max_batch
    try:
        for i in range(0, len(changed), step):
            part = changed[i : i + step]
            backend.upsert(
                name,
                [r.id for r in part],
                vectors[i : i + step],
                [r.text for r in part],
                [record_to_meta(r) for r in part],
            )
        for i in range(0, len(relabelled), step):
            part = relabelled[i : i + step]
            backend.update(name, [r.id for r in part], [record_to_meta(r) for r in part])
    except _WRITE_ERRORS as exc:
        backend.forget(name)
        raise StoreError(f"trader {trader_id}: {backend.kind} write failed: {exc}") from None


def delete_rows(backend: VectorBackend, name: str, trader_id: str, ids: list[str]) -> None:
    """Delete ``ids`` of collection ``name``. Raises :class:`StoreError` on a backend
    failure (what the backend keeps in process for ``name`` is dropped)."""
    try:
        backend.delete(name, ids)
    except _WRITE_ERRORS as exc:
        backend.forget(name)
        raise StoreError(f"trader {trader_id}: {backend.kind} delete failed: {exc}") from None


def merged_record(
    old: MemoryRecord,
    *,
    text: str | None,
    importance: float | None,
    metadata: dict[str, Any] | None,
) -> MemoryRecord:
    """``old`` with a new text, importance or metadata (merged into the old), validated.
    Raises :class:`StoreError` for invalid values (naming the field)."""
    changes: dict[str, Any] = {}
    if text is not None:
        changes["text"] = text
    if importance is not None:
        changes["importance"] = importance
    if metadata is not None:
        changes["metadata"] = {**old.metadata, **metadata}
    try:
        return MemoryRecord.model_validate({**old.content(), **changes})
    except ValidationError as exc:
        first = exc.errors(include_input=False)[0]
        raise StoreError(
            f"record {old.id!r}: {'.'.join(map(str, first['loc']))}: {first['msg']}"
        ) from None


def landed_rows(
    backend: VectorBackend, collections: TraderCollections, rows: Sequence[PendingRow]
) -> list[bool]:
    """For audit rows written ahead of a backend write that failed or was cut by a
    crash: whether the backend holds each mutation (a delete: the id is gone; an add
    or update: the record has exactly the new content). Reads the backend itself."""
    found: dict[tuple[str, str], MemoryRecord] = {}
    for trader_id in {r.trader_id for r in rows}:
        name = collections.open(trader_id, create=False)
        if name is None:
            continue
        ids = list(dict.fromkeys(r.record_id for r in rows if r.trader_id == trader_id))
        for rid, (text, meta, _) in backend.rows(name, ids).items():
            found[(trader_id, rid)] = record_from_chroma(rid, text, meta)
    verdict = []
    for row in rows:
        record = found.get((row.trader_id, row.record_id))
        if row.event == "DELETE" or row.new is None:
            verdict.append(record is None)
        else:
            verdict.append(record is not None and same(record.content(), row.new))
    return verdict
