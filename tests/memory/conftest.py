"""Real-data fixtures of the memory tests (loaded once per session, read in place)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from backend.data import (
    Fill,
    OHLCVFrame,
    load_fear_greed,
    load_headlines,
    load_hyperliquid_fills,
    load_ohlcv,
)
from backend.memory._features import FeatureFrame, compute_features
from backend.memory._news import FearGreedIndex, HeadlineIndex


@pytest.fixture(scope="session")
def btc_1h(shared_data: Path) -> OHLCVFrame:
    return load_ohlcv(shared_data / "market" / "binance", "BTC/USDT", "1h")


@pytest.fixture(scope="session")
def btc_features(btc_1h: OHLCVFrame) -> FeatureFrame:
    return compute_features(btc_1h)


@pytest.fixture(scope="session")
def headline_index(shared_data: Path) -> HeadlineIndex:
    return HeadlineIndex.build(load_headlines(shared_data / "news" / "crypto_headlines.csv"))


@pytest.fixture(scope="session")
def fear_greed(shared_data: Path) -> pd.Series:
    return load_fear_greed(shared_data / "trades" / "fear_greed_index.csv")


@pytest.fixture(scope="session")
def fear_greed_index(fear_greed: pd.Series) -> FearGreedIndex:
    return FearGreedIndex.build(fear_greed)


@pytest.fixture(scope="session")
def real_fills(shared_data: Path) -> list[Fill]:
    return load_hyperliquid_fills(shared_data / "trades" / "hyperliquid_fills.csv")
