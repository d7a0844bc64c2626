"""Build the chromadb client and the Khala store from :class:`backend.config.StoreSettings`."""

from __future__ import annotations

import chromadb
from chromadb.api import ClientAPI
from chromadb.config import Settings as ChromaSettings

from backend.config import StoreSettings
from backend.embeddings import Embedder
from backend.errors import StoreError
from backend.storage._audit import AuditLog
from backend.storage.khala_integration import KhalaStore

__all__ = ["make_chroma_client", "open_store"]


def make_chroma_client(settings: StoreSettings) -> ClientAPI:
    """``PersistentClient(settings.path)`` (embedded), ``HttpClient(host, port)`` (server)
    or ``EphemeralClient()`` (ephemeral, in process memory).

    Telemetry is off. Raises :class:`StoreError` if the path is unusable or the server
    does not answer its heartbeat.
    """
    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    try:
        if settings.mode == "server":
            client = chromadb.HttpClient(
                host=settings.host, port=settings.port, ssl=settings.ssl, settings=chroma_settings
            )
            client.heartbeat()
            return client
        if settings.mode == "ephemeral":
            return chromadb.EphemeralClient(settings=chroma_settings)
        settings.path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(settings.path), settings=chroma_settings)
    except StoreError:
        raise
    except Exception as exc:  # chromadb raises many unrelated types (httpx, OSError, Rust)
        where = (
            f"chroma server {settings.host}:{settings.port}"
            if settings.mode == "server"
            else f"chroma path {settings.path}"
        )
        raise StoreError(f"{where}: {type(exc).__name__}: {exc}") from None


def open_store(settings: StoreSettings, embedder: Embedder) -> KhalaStore:
    """Composition-root helper: client + audit trail + store, as configured."""
    return KhalaStore(
        make_chroma_client(settings),
        embedder,
        AuditLog(settings.resolved_audit_path, durable=settings.mode != "ephemeral"),
        collection_prefix=settings.collection_prefix,
        rrf_k=settings.rrf_k,
        hybrid_fanout=settings.hybrid_fanout,
        hnsw={
            "ef_search": settings.hnsw_ef_search,
            "ef_construction": settings.hnsw_ef_construction,
            **(
                {"sync_threshold": settings.hnsw_sync_threshold}
                if settings.hnsw_sync_threshold
                else {}
            ),
        },
        exact_search_max=settings.exact_search_max,
        bm25_stemmer=settings.bm25_stemmer,
        write_coalesce=settings.write_coalesce,
    )
