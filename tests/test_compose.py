"""The composition root: what build_memory_system wires for each store backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.compose import build_memory_system
from backend.config import MemorySettings, StoreSettings, load_settings
from backend.data import load_ohlcv
from backend.embeddings import HashingEmbedder
from backend.memory import compute_features


@pytest.mark.parametrize("backend", ["chroma", "memory"])
def test_working_windows_persist_only_for_a_store_that_survives(
    backend: str, tmp_path: Path, shared_data: Path
) -> None:
    """A durable (chroma) store's working windows go to SQLite (a restart resumes them); a
    throwaway (memory) store's stay in memory: no file is written."""
    ohlcv = load_ohlcv(shared_data / "market" / "binance", "BTC/USDT", "1d")
    features = compute_features(ohlcv)
    state = tmp_path / "working.sqlite3"
    settings = load_settings().model_copy(
        update={
            "store": StoreSettings(backend=backend, path=tmp_path / "khala"),  # type: ignore[arg-type]
            "memory": MemorySettings(
                working_state_path=state, working_window=4, consolidate_batch=2
            ),
        }
    )
    with build_memory_system(settings, embedder=HashingEmbedder()) as system:
        for i in range(100, 110):  # overflows the 4-bar window: consolidation runs too
            system.working.observe_bar("alice", features, i)
        assert len(system.working.current("alice", "BTC/USDT", as_of=features.row(109).as_of)) <= 4
    assert state.exists() is (backend == "chroma")
    assert (tmp_path / "khala").exists() is (backend == "chroma")
