"""OHLCV loading on the real shared Binance files."""

from __future__ import annotations

import gzip
import logging
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from backend.data import OHLCVFrame, find_gaps, load_ohlcv, timeframe_seconds

PAIRS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
ROWS = {"1h": 43_803, "4h": 10_955, "1d": 1_825}  # from shared/data/README.md


def _raw_lines(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()


@pytest.fixture(scope="module")
def binance_dir(shared_data: Path) -> Path:
    return shared_data / "market" / "binance"


@pytest.fixture(scope="module")
def btc_1h(binance_dir: Path) -> OHLCVFrame:
    return load_ohlcv(binance_dir, "BTC/USDT", "1h")


def test_btc_1h_loads_every_row_and_reports_the_real_gaps(
    btc_1h: OHLCVFrame, binance_dir: Path
) -> None:
    lines = _raw_lines(binance_dir / "BTC_USDT-1h.csv.gz")
    rows = len(lines) - 1
    first = datetime.fromisoformat(lines[1].split(",")[0])
    last = datetime.fromisoformat(lines[-1].split(",")[0])
    expected_missing = int((last - first).total_seconds() // 3600) + 1 - rows

    assert rows == 43_803
    assert len(btc_1h.frame) == rows
    assert expected_missing == 20  # README: the 1h files miss 20 hours
    assert sum(gap.missing for gap in btc_1h.gaps) == expected_missing
    assert btc_1h.missing_candles == expected_missing
    assert btc_1h.repairs == ()
    # gaps are reported, never filled: no invented candle inside any gap
    for gap in btc_1h.gaps:
        inside = btc_1h.frame.loc[gap.start : gap.end]
        assert list(inside.index) == [pd.Timestamp(gap.start), pd.Timestamp(gap.end)]


def test_loaded_frame_has_the_canonical_shape(btc_1h: OHLCVFrame) -> None:
    frame = btc_1h.frame
    assert isinstance(frame.index, pd.DatetimeIndex)
    assert frame.index.name == "date"
    assert str(frame.index.tz) == "UTC"
    assert frame.index.is_monotonic_increasing and frame.index.is_unique
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
    assert all(dtype == "float64" for dtype in frame.dtypes)
    first = frame.iloc[0]
    assert frame.index[0] == pd.Timestamp("2020-09-20T00:00:00Z")
    assert (first["open"], first["high"], first["low"], first["close"]) == (
        11080.64,
        11080.64,
        11042.7,
        11056.0,
    )
    assert first["volume"] == 1168.906046
    assert btc_1h.pair == "BTC/USDT" and btc_1h.timeframe == "1h"
    assert btc_1h.source.name == "BTC_USDT-1h.csv.gz"


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("timeframe", sorted(ROWS))
def test_every_shared_file_loads(binance_dir: Path, pair: str, timeframe: str) -> None:
    loaded = load_ohlcv(binance_dir, pair, timeframe)
    assert len(loaded.frame) == ROWS[timeframe]
    span = loaded.frame.index[-1] - loaded.frame.index[0]
    expected_missing = (
        int(span.total_seconds()) // timeframe_seconds(timeframe) + 1 - ROWS[timeframe]
    )
    assert loaded.missing_candles == expected_missing
    assert find_gaps(loaded.frame, timeframe) == list(loaded.gaps)


def test_gaps_are_logged_at_info(binance_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="backend.data"):
        loaded = load_ohlcv(binance_dir, "ETH/USDT", "1h")
    messages = [r.getMessage() for r in caplog.records if r.name == "backend.data"]
    assert any("20 missing 1h candle(s)" in m and "not filled" in m for m in messages)
    assert loaded.gaps[0].start == datetime(2020, 11, 30, 5, tzinfo=UTC)
