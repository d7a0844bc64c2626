"""Build the Khala store from :class:`backend.config.StoreSettings`: the lazy factory that
picks the vector backend by ``store.backend`` (mem0's ``VectorStoreFactory`` shape)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import filelock
from chromadb.api import ClientAPI

from backend.config import StoreSettings
from backend.embeddings import Embedder
from backend.errors import ConfigError, DataError, SentinelError, StoreError
from backend.files import write_text_atomic
from backend.storage._audit import AuditLog
from backend.storage._backend import VectorBackend
from backend.storage._chroma_backend import ChromaBackend
from backend.storage._lexical import make_stemmer
from backend.storage.khala_integration import KhalaStore

__all__ = [
    "TRAIL_MARKER",
    "check_audit_trail",
    "make_backend",
    "make_chroma_client",
    "open_store",
]


def make_chroma_client(settings: StoreSettings) -> ClientAPI:
    """``PersistentClient(settings.path)`` (``mode: embedded``) or ``HttpClient(host,
    port)`` (``mode: server``), telemetry off. Raises :class:`StoreError` if the path is
    unusable or the server does not answer its heartbeat."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    try:
        if settings.mode == "server":
            client = chromadb.HttpClient(
                host=settings.host, port=settings.port, ssl=settings.ssl, settings=chroma_settings
            )
            client.heartbeat()
            return client
        settings.path.mkdir(parents=True, exist_ok=True)
        # two processes opening a new store at once race in chroma's schema migration
        # ("table collections already exists"): one opens it at a time
        with filelock.FileLock(settings.path / ".open.lock", timeout=120):
            return chromadb.PersistentClient(path=str(settings.path), settings=chroma_settings)
    except Exception as exc:  # chromadb raises many unrelated types (httpx, OSError, Rust)
        raise StoreError(f"{settings.location}: {type(exc).__name__}: {exc}") from None


def make_backend(settings: StoreSettings) -> VectorBackend:
    """The :class:`~backend.storage._backend.VectorBackend` ``settings.backend`` names.
    Raises :class:`StoreError` (chroma unreachable, unknown stemmer language)."""
    stemmer = make_stemmer(settings.bm25_stemmer)
    if settings.backend == "memory":
        from backend.storage._memory_backend import MemoryBackend

        return MemoryBackend(stemmer=stemmer)
    return ChromaBackend(
        make_chroma_client(settings),
        hnsw={
            "ef_search": settings.hnsw_ef_search,
            "ef_construction": settings.hnsw_ef_construction,
        },
        stemmer=stemmer,
        # an embedded chroma's index misses other processes' writes until reopened
        reopen=(lambda: make_chroma_client(settings)) if settings.mode == "embedded" else None,
    )


TRAIL_MARKER = ".audit_trail"
"""File in an embedded chroma directory naming the audit trail its writers keep."""


def check_audit_trail(settings: StoreSettings) -> None:
    """An embedded chroma directory has ONE audit trail: its per-trader change counts are
    what every process's caches are validated against, so a process keeping a second
    trail never sees the others' writes (a reviewer's script: a run directory opened
    with ``--store-path DIR`` and the same ``DIR/khala`` set as ``store.path`` kept
    ``DIR/audit.db`` and ``DIR/khala/khala_audit.sqlite3``; the second process's BM25,
    dense search and ``get`` missed the first's record). ``<path>/.audit_trail`` names
    the trail: relative to the chroma directory when it is beside or under it (a run
    directory copied or moved whole keeps opening), else absolute. The first process to
    open the directory writes it, and so does one that finds it empty or naming a trail
    that is gone (moved or deleted); a process that would keep another trail gets a
    :class:`ConfigError` naming both. Call it under the directory's open lock, with the
    trail created before the lock is let go (:func:`open_store`): another process then
    never reads a marker half-written, nor one naming a trail not made yet. A chroma
    server's trail is per machine (``store.audit_path``); it is not checked."""
    home = settings.path.resolve()
    trail = settings.resolved_audit_path.resolve()
    named = os.path.relpath(trail, home) if trail.is_relative_to(home.parent) else str(trail)
    marker = settings.path / TRAIL_MARKER
    try:
        written = marker.read_text(encoding="utf-8").strip() if marker.is_file() else ""
        kept = (home / written).resolve() if written else None
        if kept is None or (kept != trail and not kept.exists()):
            write_text_atomic(marker, named + "\n", what="audit trail marker")
            return
    except (OSError, DataError) as exc:
        raise StoreError(f"{marker}: {type(exc).__name__}: {exc}") from None
    if kept != trail:
        raise ConfigError(
            f"the memory store at {settings.path} keeps its audit trail at {kept}, and this "
            f"process would keep another at {trail} (its caches would miss the other "
            f"writers): open the run directory with --store-path, or set store.audit_path "
            f"to {kept}"
        )


def check_server_trail(backend: ChromaBackend, settings: StoreSettings) -> None:
    """A chroma server's memory (one ``collection_prefix``) has ONE audit trail, as an
    embedded store's has (:func:`check_audit_trail`): the per-trader change counts every
    process's caches are validated against, the writer lock that orders persona versions.
    Two trails on one server (two machines, or two ``store.audit_path`` on one) lost
    half the bans two writers wrote (same-numbered persona versions overwrote each other)
    and served a persona version behind, with no word (a reviewer's script: 12 of 24
    bans kept). The server's ``<prefix>.trail`` collection names the machine and trail
    of its writers; a process that would keep another gets a :class:`ConfigError`,
    unless the named trail is on this machine and gone (then this one takes its place).
    Raises :class:`StoreError` when the server cannot be asked."""
    here = socket.gethostname()
    trail = str(settings.resolved_audit_path.resolve())
    ours = {"host": here, "trail": trail}
    name = f"{settings.collection_prefix}.trail"
    held = backend.open(name, create=ours) or {}
    if held.get("host") == here and held.get("trail") == trail:
        return
    if held.get("host") == here and not Path(str(held.get("trail"))).exists():
        backend.set_metadata(name, ours)
        return
    raise ConfigError(
        f"the chroma server {settings.host}:{settings.port} (prefix "
        f"{settings.collection_prefix}) is written with the audit trail "
        f"{held.get('trail')} on {held.get('host')}, and this process would keep another "
        f"({trail} on {here}): the caches of each would miss the other's writes. Run the "
        "writers of a server's memory on one machine with one store.audit_path"
    )


def open_store(settings: StoreSettings, embedder: Embedder) -> KhalaStore:
    """Composition-root helper: backend + audit trail + store, as configured. The
    ``memory`` backend keeps its audit trail in process memory too (nothing on disk).
    Raises :class:`ConfigError` when the store keeps another audit trail
    (:func:`check_audit_trail`, :func:`check_server_trail`)."""
    backend = make_backend(settings)
    if backend.kind == "chroma" and settings.mode == "embedded":
        with filelock.FileLock(settings.path / ".open.lock", timeout=120):
            check_audit_trail(settings)
            audit = AuditLog(settings.resolved_audit_path)
    elif isinstance(backend, ChromaBackend):  # a server
        audit = AuditLog(settings.resolved_audit_path)  # first: a trail that exists is ours
        try:
            check_server_trail(backend, settings)
        except SentinelError:
            audit.close()
            raise
    else:
        audit = AuditLog(None)
    return KhalaStore(
        backend,
        embedder,
        audit,
        collection_prefix=settings.collection_prefix,
        rrf_k=settings.rrf_k,
        hybrid_fanout=settings.hybrid_fanout,
    )
