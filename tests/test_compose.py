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


def test_an_exchange_gets_the_key_only_where_it_belongs(monkeypatch: pytest.MonkeyPatch) -> None:
    """``compose.build_exchange``: the environment's key and secret go to the configured
    exchange only (a binance key never to kucoin), and not at all for public data."""
    from backend.compose import build_exchange
    from backend.config import load_settings

    monkeypatch.setenv("SENTINEL_EXCHANGE__API_KEY", "k")
    monkeypatch.setenv("SENTINEL_EXCHANGE__SECRET", "s")
    settings = load_settings()
    own = build_exchange(settings, api_url="http://127.0.0.1:9")
    assert (own.id, own.apiKey, own.secret) == (settings.exchange.id, "k", "s")
    assert "127.0.0.1:9" in str(own.urls["api"])
    other = build_exchange(settings, "kucoin")
    assert not other.apiKey and not other.secret
    public = build_exchange(settings, credentials=False)
    assert not public.apiKey and not public.secret
