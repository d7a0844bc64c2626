"""Property: whatever the bytes, a loader returns or raises DataError, nothing else."""

from __future__ import annotations

import gzip
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.data import (
    load_fear_greed,
    load_headlines,
    load_hyperliquid_fills,
    read_ohlcv_file,
)
from backend.errors import DataError

OHLCV = (
    b"date,open,high,low,close,volume\n"
    b"2024-01-01T00:00:00Z,100,110,95,105,12.5\n"
    b"2024-01-01T01:00:00Z,105,106,101,102,3\n"
    b"2024-01-01T03:00:00Z,102,104,100,103,0\n"
)
FILLS = (
    b"Account,Coin,Execution Price,Size Tokens,Size USD,Side,Timestamp IST,Start Position,"
    b"Direction,Closed PnL,Transaction Hash,Order ID,Crossed,Fee,Trade ID,Timestamp\n"
    b"0xa,@107,7.97,986.87,7872.16,BUY,02-12-2024 22:50,0,Buy,0,0xec,52017706630,TRUE,0.34,"
    b"8.95E+14,1.73E+12\n"
    b"0xa,BTC,95000,0.01,950,SELL,03-12-2024 01:05,0.02,Close Long,3,0xed,52017706631,FALSE,"
    b"0.1,8.95E+14,1.73E+12\n"
)
HEADLINES = (
    b'date,source,subject,title,url\n5-7-2022 04:24,CryptoNews,bitcoin,"Up, again",https://x/1\n'
    b"4-7-2022 23:00,CoinTelegraph,nft,Down,https://x/2\n"
)
FEAR_GREED = (
    b"timestamp,value,classification,date\n1517463000,30,Fear,2018-02-01\n"
    b"1517549400,15,Extreme Fear,2018-02-02\n"
)


def _ohlcv(path: Path) -> Any:
    return read_ohlcv_file(path, pair="BTC/USDT", timeframe="1h")


CASES: list[tuple[str, bytes, Callable[[Path], Any]]] = [
    ("x.csv", OHLCV, _ohlcv),
    ("x.csv.gz", gzip.compress(OHLCV), _ohlcv),
    ("f.csv", FILLS, load_hyperliquid_fills),
    ("h.csv", HEADLINES, load_headlines),
    ("g.csv", FEAR_GREED, load_fear_greed),
]


@st.composite
def damaged(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if action == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[pos:]
        elif action == "insert":
            data[pos:pos] = draw(
                st.sampled_from([b",", b"\n", b'"', b"\x00", b"nan", b"-", b"\xc3"])
            )
        else:
            del data[pos]
    return bytes(data)


@pytest.mark.parametrize(("name", "original", "loader"), CASES, ids=[c[0] for c in CASES])
def test_only_data_errors_escape(name: str, original: bytes, loader: Callable[[Path], Any]) -> None:
    loader_works_on_original(name, original, loader)

    @settings(
        max_examples=150,
        database=None,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(damaged(original))
    def check(data: bytes) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            try:
                loader(path)
            except DataError as err:
                assert err.path == str(path) or (err.path or "").startswith(str(path))

    check()


def loader_works_on_original(name: str, original: bytes, loader: Callable[[Path], Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(original)
        loader(path)
