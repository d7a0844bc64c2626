"""Sections of the Khala vector layer: the store (``store``) and its embeddings (``embedding``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from backend.config._section import _Section


class StoreSettings(_Section):
    """Where the Khala vector layer keeps its data (see ``backend.storage``)."""

    backend: Literal["chroma", "memory"] = "chroma"
    """``chroma``: durable chromadb collections (``mode``); every write the store
    acknowledges is in chroma, and other processes sharing ``path`` (or the server and
    ``audit_path``) see it. ``memory``: a throwaway store in process memory (backtests
    without ``--store-path``, evaluations, benchmarks): exact dense search, BM25, nothing
    on disk, gone with the process. See ``backend.storage._backend``."""
    mode: Literal["embedded", "server"] = "embedded"
    """Of the ``chroma`` backend: ``embedded`` = chromadb ``PersistentClient`` at
    ``path``; ``server`` = ``HttpClient`` to ``host:port`` (the processes of a machine
    sharing a server share its audit trail too: ``audit_path``)."""
    path: Path = Path(".sentinel/khala")
    """Directory of the embedded chroma data (and of the audit trail by default)."""
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    ssl: bool = False
    audit_path: Path | None = None
    """SQLite audit trail of every mutation: its per-trader change counts validate each
    process's caches, and its lock file orders the writers. Default: embedded,
    ``<path>/khala_audit.sqlite3``; server, ``~/.sentinel/audit/<host>-<port>-<prefix>.sqlite3``
    (one file for every process of this machine on that server, whatever its working
    directory: under ``path``, a relative path, two processes started in two directories
    kept two trails, and neither saw the other's writes). Processes on other machines keep
    their own trail and do not see each other's writes in their caches."""
    collection_prefix: str = Field(default="khala", pattern=r"^[a-z][a-z0-9]{1,30}$")
    rrf_k: int = Field(default=60, ge=1, le=1000)
    """Reciprocal-rank-fusion constant k (Cormack et al., SIGIR 2009: k = 60)."""
    hybrid_fanout: int = Field(default=4, ge=1, le=50)
    """Hybrid search fuses the top ``top_k * hybrid_fanout`` of each retriever."""
    hnsw_ef_search: int = Field(default=500, ge=10, le=10_000)
    """HNSW search breadth of new collections; higher = better recall, slower queries
    (dense search is approximate nearest-neighbour search). 500, not chroma's 100, so
    that a recall of a trader's conversation on a durable store gives the same top 10 in
    (almost) every process: of the 105 LoCoMo conv-30 questions (a collection of ~1,500
    records), 6 differed between two processes with 100; with 500, 0 and 1 in two stores
    (three seeds each).
    It costs ~0.5 ms per dense query at 10,000 episodes (``bench_retrieval.py``: store
    dense p95 3.4 vs 2.9 ms), measured 2026-12-06. Existing collections keep the value
    they were created with."""
    hnsw_ef_construction: int = Field(default=100, ge=10, le=10_000)
    bm25_stemmer: str | None = Field(default="english", pattern=r"^[a-z]{2,20}$")
    """Snowball stemming of BM25 tokens (PyStemmer language, ``english`` = Porter2), or
    ``None`` (plain lower-cased words). Chosen on LoCoMo's tuning conversations (conv-26,
    30, 41): conversation recall@10 0.810 unstemmed, 0.822 stemmed (docs/benchmarks.md)."""

    @property
    def location(self) -> str:
        """Where the store is, as messages name it: ``chroma server HOST:PORT``,
        ``chroma path PATH`` or ``the in-process memory backend``."""
        if self.backend == "memory":
            return "the in-process memory backend"
        if self.mode == "server":
            return f"chroma server {self.host}:{self.port}"
        return f"chroma path {self.path}"

    @property
    def resolved_audit_path(self) -> Path:
        if self.audit_path is not None:
            return self.audit_path
        return self.local_file("audit", "khala_audit.sqlite3")

    def local_file(self, folder: str, name: str) -> Path:
        """Where a file this machine keeps beside the store goes by default: ``path /
        name`` for an embedded store; for a chroma server
        ``~/.sentinel/<folder>/<host>-<port>-<prefix>.sqlite3``, one file per machine,
        server and prefix, whatever the working directory (``path`` is relative by
        default). An older release's file under ``path`` is not read (falling back to
        it where it exists would split the processes of one machine again, by working
        directory); its history stays there, and a working window lost this way refills
        from the next bars. A loopback ``host`` (``localhost``, ``127.x``, ``::1``) is
        ``127.0.0.1``: two processes of one machine naming the server differently kept
        two trails, and each overwrote the other's persona versions (a reviewer's)."""
        if self.backend == "chroma" and self.mode == "server":
            host = self.host.lower().strip("[]")
            if host in ("localhost", "::1") or host.startswith("127."):
                host = "127.0.0.1"
            served = f"{host}-{self.port}-{self.collection_prefix}.sqlite3"
            return Path.home() / ".sentinel" / folder / served
        return self.path / name


class EmbeddingSettings(_Section):
    """Which embedding function turns memory text into vectors."""

    provider: Literal["minilm", "openai", "hashing"] = "minilm"
    """``minilm`` (offline ONNX, default), ``openai`` (any compatible endpoint),
    ``hashing`` (deterministic, for unit tests only)."""
    model_dir: Path | None = None
    """Directory holding ``model.onnx`` and ``tokenizer.json``; default: the pinned packages."""
    batch_size: int = Field(default=64, ge=1, le=2048)
    """Most texts per embedding call (MiniLM: per onnxruntime batch; OpenAI: per request)."""
    batch_tokens: int = Field(default=512, ge=1, le=1_000_000)
    """MiniLM only: most padded tokens (rows x width) per onnxruntime batch; long texts in
    small batches run faster on a CPU (2 cores: 56.6 vs 36.6 texts/s of 133 tokens at 512
    tokens vs 64 texts a batch; docs/benchmarks.md, "Token-budget batches")."""
    max_length: int = Field(default=256, ge=8, le=512)
    """Tokens per text before truncation (all-MiniLM-L6-v2 was trained with 256)."""
    threads: int | None = Field(default=None, ge=1, le=256)
    """onnxruntime intra-op threads; ``None`` lets onnxruntime use every core."""
    openai_model: str = "text-embedding-3-small"
    openai_base_url: str | None = None
    openai_dimensions: int = Field(default=1536, ge=8, le=8192)
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    breaker_failures: int = Field(default=3, ge=0, le=100)
    """``openai`` only: after this many requests in a row failed at the endpoint
    (unreachable, timed out, HTTP 408/429/5xx), embedding fails at once, without a
    request, for ``breaker_cooldown_s``; then one request tries again (pybreaker,
    :mod:`backend.endpoint`). 0 = never. A dead endpoint had cost each bar of a backtest
    the openai client's retries: a month of 1h bars still ran after 32 min (26 s now)."""
    breaker_cooldown_s: float = Field(default=300.0, gt=0, le=86_400)
    """How long the breaker stays open before one request tries the endpoint again."""
    api_key: SecretStr | None = None
    """Environment only: ``SENTINEL_EMBEDDING__API_KEY``."""
    cache_dir: Path | None = Path(".sentinel/embedding-cache")
    """On-disk cache of computed vectors keyed by (model id, text) (diskcache); re-runs of
    a backtest or an evaluation embed nothing twice. ``None`` disables it."""
    cache_size_mb: int = Field(default=1024, ge=1, le=1_000_000)
    """Cache size limit (least recently stored vectors are culled beyond it)."""
