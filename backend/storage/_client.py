"""Build the Khala store from :class:`backend.config.StoreSettings`: the lazy factory that
picks the vector backend by ``store.backend`` (mem0's ``VectorStoreFactory`` shape)."""

from __future__ import annotations

import filelock
from chromadb.api import ClientAPI

from backend.config import StoreSettings
from backend.embeddings import Embedder
from backend.errors import StoreError
from backend.storage._audit import AuditLog
from backend.storage._backend import VectorBackend
from backend.storage._lexical import make_stemmer
from backend.storage.khala_integration import KhalaStore

__all__ = ["make_backend", "make_chroma_client", "open_store"]


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
        where = (
            f"chroma server {settings.host}:{settings.port}"
            if settings.mode == "server"
            else f"chroma path {settings.path}"
        )
        raise StoreError(f"{where}: {type(exc).__name__}: {exc}") from None


def make_backend(settings: StoreSettings) -> VectorBackend:
    """The :class:`~backend.storage._backend.VectorBackend` ``settings.backend`` names.
    Raises :class:`StoreError` (chroma unreachable, unknown stemmer language)."""
    stemmer = make_stemmer(settings.bm25_stemmer)
    if settings.backend == "memory":
        from backend.storage._memory_backend import MemoryBackend

        return MemoryBackend(stemmer=stemmer)
    from backend.storage._chroma_backend import ChromaBackend

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


def open_store(settings: StoreSettings, embedder: Embedder) -> KhalaStore:
    """Composition-root helper: backend + audit trail + store, as configured. The
    ``memory`` backend keeps its audit trail in process memory too (nothing on disk)."""
    backend = make_backend(settings)
    audit_path = settings.resolved_audit_path if backend.kind == "chroma" else None
    return KhalaStore(
        backend,
        embedder,
        AuditLog(audit_path),
        collection_prefix=settings.collection_prefix,
        rrf_k=settings.rrf_k,
        hybrid_fanout=settings.hybrid_fanout,
    )
