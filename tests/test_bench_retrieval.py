"""scripts/bench_retrieval.py on a small real store: the numbers it reports, and reuse."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_small_store_is_measured_then_reused(shared_data: Path, tmp_path: Path) -> None:
    bench = load_script("bench_retrieval")
    root = tmp_path / "n60"
    first = bench.measure(root, 60, data_dir=shared_data, n_queries=3, reuse=True)
    manifest = json.loads((root / "manifest.json").read_text())
    assert first["n"] == 60 and not first["ingest_reused"]
    assert first["store_records"] > 60  # the episodes plus the persona's records
    assert first["ingest_memories_per_s"] == manifest["ingest_memories_per_s"] > 0
    assert first["disk_bytes_per_memory"] > 1000  # vectors, text, metadata, audit trail
    assert first["queries"] == 3 and first["top_k"] == 5 and first["peak_rss_mb"] > 100
    for name in ("parallel", "sequential", "floor", "floor_distances", "episodic"):
        assert 0 < first[f"{name}_p50_ms"] <= first[f"{name}_p95_ms"]
    assert first["ratio_p95"] == round(first["parallel_p95_ms"] / first["floor_p95_ms"], 2)
    assert 0 <= first["filtered_fallback_share"] <= 1
    again = bench.measure(root, 60, data_dir=shared_data, n_queries=2, reuse=True)
    assert again["ingest_reused"] and again["store_records"] == first["store_records"]
    assert again["ingest_s"] == first["ingest_s"]


def test_episodes_are_real_evenly_spaced_and_unique(shared_data: Path) -> None:
    bench = load_script("bench_retrieval")
    from backend.config import load_settings

    episodes = bench.build_episodes(500, load_settings(), *bench.market(shared_data))
    assert len({e.id for e in episodes}) == 500
    assert {e.symbol for e in episodes} == {"BTC/USDT", "ETH/USDT", "SOL/USDT"}
    times = [e.occurred_at for e in episodes]
    assert times == sorted(times) and times[0].year == 2020 and times[-1].year == 2025
    assert {e.event_type for e in episodes} - {"context"}  # detected events are in the pool


@pytest.mark.slow
def test_an_interrupted_build_is_resumed(shared_data: Path, tmp_path: Path) -> None:
    """A store without manifest (a build cut short) is continued with --reuse: what is
    stored stays, the rest is added, and the ingest numbers cover the added part only."""
    bench = load_script("bench_retrieval")
    from backend.config import load_settings
    from backend.embeddings import build_embedder
    from backend.memory import EpisodicMemory
    from backend.storage import open_store

    settings = load_settings()
    root = tmp_path / "n40"
    root.mkdir()
    episodes = bench.build_episodes(40, settings, *bench.market(shared_data))
    embedder = build_embedder(settings.embedding.model_copy(update={"cache_dir": None}))
    store = open_store(bench._store_settings(root), embedder)
    EpisodicMemory(store, settings=settings.memory).add(
        episodes[:15], as_of=max(e.occurred_at for e in episodes)
    )
    store.close()
    out = bench.measure(root, 40, data_dir=shared_data, n_queries=2, reuse=True)
    assert out["ingest_resumed_from"] == 15 and not out["ingest_reused"]
    assert out["store_records"] > 40  # all 40 episodes plus the persona's records
    assert json.loads((root / "manifest.json").read_text())["resumed_from"] == 15


def test_the_store_keeps_the_configured_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only where the store lives is the benchmark's: an override of the configured store
    settings (here the hybrid fan-out) reaches the measured store."""
    monkeypatch.setenv("SENTINEL_STORE__HYBRID_FANOUT", "9")
    bench = load_script("bench_retrieval")
    store = bench._store_settings(tmp_path)
    assert store.hybrid_fanout == 9
    assert (store.backend, store.mode) == ("chroma", "embedded")
    assert (store.path, store.audit_path) == (tmp_path / "khala", tmp_path / "audit.sqlite3")
