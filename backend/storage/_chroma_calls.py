"""chromadb calls of :class:`~backend.storage._chroma_backend.ChromaBackend`: what a
failed call raises and becomes (:data:`FAULTS`, :func:`fault`), a collection opened or
created (:func:`opened`) and the decoding of answers (:func:`got`, :func:`read_all`,
:func:`similarities`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from chromadb.api.types import GetResult, QueryResult
from chromadb.errors import ChromaError, NotFoundError

from backend.errors import StoreError
from backend.storage._codec import meta_ts
from backend.storage._lexical import LexicalIndex, Stemmer

__all__ = ["FAULTS", "fault", "got", "opened", "read_all", "similarities"]

FAULTS: tuple[type[Exception], ...] = (Exception,)
"""What a chroma call raises when chroma fails: its own errors, an ``HttpClient``'s httpx
errors when its server is gone (``ConnectError``, ``ReadTimeout``: a raw
``httpx.ConnectError`` had ended a paper run as an internal error), the bare
``Exception`` chromadb raises for an HTTP error whose body names no chroma error (a
proxy's 503 while the server restarts), the OS's. Anything raised inside a chromadb
call is chroma's failure; each becomes a :class:`StoreError` naming the call
(:func:`fault`)."""


def fault(what: str, exc: Exception) -> StoreError:
    """The :class:`StoreError` of a failed chroma call ``what`` (a :class:`StoreError`
    raised inside it, e.g. by
    :meth:`~backend.storage._chroma_backend.ChromaBackend.collection`, is kept as it is)."""
    if isinstance(exc, StoreError):
        return exc
    said = str(exc) if isinstance(exc, ChromaError) else f"{type(exc).__name__}: {exc}"
    return StoreError(f"chroma {what} failed: {said}")


def got(page: GetResult) -> list[tuple[str, str, dict[str, Any]]]:
    """``(id, document, metadata)`` of each row of a ``Collection.get`` answer (its
    metadata copied: chroma's mapping is not ours to keep)."""
    return [
        (rid, doc, dict(meta))
        for rid, doc, meta in zip(
            page["ids"], page["documents"] or [], page["metadatas"] or [], strict=True
        )
    ]


def read_all(col: Collection, *, max_batch: int, stemmer: Stemmer | None) -> LexicalIndex:
    """Every row of ``col`` (text and metadata, no vectors) in a new BM25 index, read in
    pages of ``max_batch`` rows (chroma's own bound on one call). Raises what chroma
    raises (:data:`FAULTS`)."""
    mirror = LexicalIndex(stemmer=stemmer)
    total = col.count()
    for offset in range(0, total, max_batch):
        page = col.get(include=["documents", "metadatas"], limit=max_batch, offset=offset)
        mirror.put((rid, doc, meta_ts(meta), meta) for rid, doc, meta in got(page))
    return mirror


def opened(
    client: ClientAPI, name: str, *, create: Mapping[str, Any] | None, hnsw: Mapping[str, Any]
) -> Collection | None:
    """The collection ``name``; when it does not exist, None if ``create`` is None, else
    a new one with metadata ``create`` and chroma's HNSW configuration ``hnsw``. Never
    chroma's default embedding function (it downloads a model). Raises what chroma
    raises (:data:`FAULTS`)."""
    try:
        return client.get_collection(name, embedding_function=None)
    except NotFoundError:
        if create is None:
            return None
    return client.get_or_create_collection(
        name,
        embedding_function=None,
        configuration={"hnsw": dict(hnsw)},  # type: ignore[arg-type]
        metadata=dict(create),
    )


def similarities(res: QueryResult) -> list[tuple[str, float]]:
    """``(id, cosine similarity in [0, 1])`` of a one-query ``Collection.query`` answer
    (chroma's cosine distance ``d`` is in [0, 2]: similarity ``1 - d / 2``, clipped)."""
    dists = (res["distances"] or [[]])[0]
    return [
        (rid, min(1.0, max(0.0, 1.0 - float(d) / 2.0)))
        for rid, d in zip(res["ids"][0], dists, strict=True)
    ]
