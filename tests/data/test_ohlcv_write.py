"""OHLCV file names, lookup, and write -> read round trips in every format."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from backend.data import (
    OHLCV_FORMATS,
    find_ohlcv_file,
    load_ohlcv,
    ohlcv_filename,
    write_ohlcv,
)
from backend.errors import DataError


@pytest.fixture(scope="module")
def sample(shared_data: Path) -> pd.DataFrame:
    """A real slice with a real gap in it (2020-11-30 06:00 is missing)."""
    loaded = load_ohlcv(shared_data / "market" / "binance", "BTC/USDT", "1h")
    return loaded.frame.loc["2020-11-29":"2020-12-01"]


def test_filenames() -> None:
    assert ohlcv_filename("BTC/USDT", "1h") == "BTC_USDT-1h.csv.gz"
    assert ohlcv_filename("ETH/USDT", "4h", "feather") == "ETH_USDT-4h.feather"
    assert ohlcv_filename("BTC/USDT:USDT", "1d", "parquet") == "BTC_USDT_USDT-1d.parquet"
    assert OHLCV_FORMATS == ("csv.gz", "csv", "feather", "parquet", "json.gz", "json")
    with pytest.raises(DataError, match="format"):
        ohlcv_filename("BTC/USDT", "1h", "hdf5")
    with pytest.raises(DataError, match="timeframe"):
        ohlcv_filename("BTC/USDT", "1hour")
    with pytest.raises(DataError, match="pair"):
        ohlcv_filename(" ", "1h")


@pytest.mark.parametrize("fmt", OHLCV_FORMATS)
def test_round_trip(tmp_path: Path, sample: pd.DataFrame, fmt: str) -> None:
    path = write_ohlcv(sample, tmp_path / "data", "BTC/USDT", "1h", fmt=fmt)
    assert path == tmp_path / "data" / f"BTC_USDT-1h.{fmt}"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left
    loaded = load_ohlcv(tmp_path / "data", "BTC/USDT", "1h")
    pd.testing.assert_frame_equal(loaded.frame, sample)
    assert [g.missing for g in loaded.gaps] == [1]  # the real gap survives, unfilled
    assert loaded.source == path


def test_csv_is_written_like_the_shared_files(
    tmp_path: Path, sample: pd.DataFrame, shared_data: Path
) -> None:
    path = write_ohlcv(sample, tmp_path, "BTC/USDT", "1h")
    written = gzip.decompress(path.read_bytes()).decode().splitlines()
    original = gzip.decompress(
        (shared_data / "market" / "binance" / "BTC_USDT-1h.csv.gz").read_bytes()
    ).decode()
    assert written[0] == "date,open,high,low,close,volume"
    assert written[1].startswith("2020-11-29T00:00:00Z,")
    assert all(line in original for line in written)  # byte-identical rows
    again = write_ohlcv(sample, tmp_path, "BTC/USDT", "1h")
    assert again.read_bytes() == path.read_bytes()  # deterministic (gzip mtime 0)


def test_write_accepts_an_ohlcv_frame_and_a_date_column(
    tmp_path: Path, sample: pd.DataFrame
) -> None:
    write_ohlcv(sample, tmp_path, "BTC/USDT", "1h", fmt="csv")
    loaded = load_ohlcv(tmp_path, "BTC/USDT", "1h")
    write_ohlcv(loaded, tmp_path / "b", "BTC/USDT", "1h", fmt="csv")
    write_ohlcv(sample.reset_index(), tmp_path / "c", "BTC/USDT", "1h", fmt="csv")
    assert (tmp_path / "b" / "BTC_USDT-1h.csv").read_bytes() == (
        tmp_path / "c" / "BTC_USDT-1h.csv"
    ).read_bytes()


def test_write_rejects_invalid_frames(tmp_path: Path, sample: pd.DataFrame) -> None:
    bad = sample.copy()
    bad.loc[bad.index[3], "high"] = 1.0
    with pytest.raises(DataError, match="high") as caught:
        write_ohlcv(bad, tmp_path, "BTC/USDT", "1h")
    assert caught.value.row == 5 and caught.value.field == "high"
    with pytest.raises(DataError, match="volume"):
        write_ohlcv(sample.drop(columns="volume"), tmp_path, "BTC/USDT", "1h")
    with pytest.raises(DataError, match="no candles"):
        write_ohlcv(sample.iloc[:0], tmp_path, "BTC/USDT", "1h")
    assert not list(tmp_path.iterdir())


def test_write_replaces_atomically(tmp_path: Path, sample: pd.DataFrame) -> None:
    path = write_ohlcv(sample, tmp_path, "BTC/USDT", "1h")
    before = path.stat().st_ino
    write_ohlcv(sample.iloc[:10], tmp_path, "BTC/USDT", "1h")
    assert path.stat().st_ino != before  # a new file renamed over the old one
    assert len(load_ohlcv(tmp_path, "BTC/USDT", "1h").frame) == 10


def test_find_file_errors(tmp_path: Path, sample: pd.DataFrame) -> None:
    with pytest.raises(DataError) as caught:
        find_ohlcv_file(tmp_path, "BTC/USDT", "1h")
    message = str(caught.value)
    for fmt in OHLCV_FORMATS:
        assert f"BTC_USDT-1h.{fmt}" in message
    assert caught.value.path == str(tmp_path)
    write_ohlcv(sample, tmp_path, "BTC/USDT", "1h", fmt="csv")
    assert find_ohlcv_file(tmp_path, "BTC/USDT", "1h").name == "BTC_USDT-1h.csv"
    write_ohlcv(sample, tmp_path, "BTC/USDT", "1h", fmt="parquet")
    with pytest.raises(DataError, match="several"):
        find_ohlcv_file(tmp_path, "BTC/USDT", "1h")
