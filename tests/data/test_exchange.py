"""ccxt against a real loopback HTTP server that answers like Binance, from real candles."""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ccxt
import pandas as pd
import pytest

from backend.data import (
    download_ohlcv,
    fills_from_ccxt_trades,
    load_ohlcv,
    make_exchange,
    point_exchange_at,
)
from backend.data.exchange import perp_direction
from backend.errors import ExchangeError

from .binance_server import BinanceLoopbackServer, start_binance_server


@pytest.fixture(scope="module")
def btc_1h(shared_data: Path) -> pd.DataFrame:
    return load_ohlcv(shared_data / "market" / "binance", "BTC/USDT", "1h").frame


@pytest.fixture
def binance(binance_loopback: str) -> ccxt.Exchange:
    return make_exchange("binance", api_base_url=binance_loopback, timeout_ms=5_000)


@pytest.fixture
def tiny_server(tmp_path: Path) -> Iterator[BinanceLoopbackServer]:
    """A server of its own (so faults do not leak), on a 3-candle generated file."""
    path = tmp_path / "BTC_USDT-1h.csv.gz"
    lines = [
        "date,open,high,low,close,volume",
        "2024-01-01T00:00:00Z,100,110,95,105,1",
        "2024-01-01T01:00:00Z,105,106,101,102,3",
        "2024-01-01T02:00:00Z,102,104,100,103,0",
    ]
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    server, _ = start_binance_server(path)
    assert isinstance(server, BinanceLoopbackServer)
    yield server
    server.shutdown()
    server.server_close()


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_make_exchange() -> None:
    exchange = make_exchange("binance", timeout_ms=1234)
    assert exchange.enableRateLimit is True
    assert exchange.timeout == 1234
    assert exchange.urls["api"]["public"] == "https://api.binance.com/api/v3"
    with pytest.raises(ExchangeError, match="unknown exchange id"):
        make_exchange("not-an-exchange")


def test_point_exchange_at_rewrites_every_api_url() -> None:
    exchange = make_exchange("binance")
    originals = exchange.urls["api"]
    point_exchange_at(exchange, "http://127.0.0.1:9/")
    api = exchange.urls["api"]
    assert api["public"] == "http://127.0.0.1:9/api/v3"
    assert api["fapiPublic"] == "http://127.0.0.1:9/fapi/v1"
    assert set(api) == set(originals)
    assert all(url.startswith("http://127.0.0.1:9/") for url in api.values())
    assert exchange.urls["www"] == "https://www.binance.com"  # only the API moves
    proxied = make_exchange("binance", api_base_url="https://proxy.local/binance")
    assert proxied.urls["api"]["sapi"] == "https://proxy.local/binance/sapi/v1"
    # nested dicts (another exchange's layout) are rewritten too
    nested = make_exchange("gate")
    point_exchange_at(nested, "http://localhost:8080")
    public = nested.urls["api"]["public"]
    assert isinstance(public, dict) and public["spot"] == "http://localhost:8080/api/v4"
    assert all(v.startswith("http://localhost:8080/") for v in public.values())
    with pytest.raises(ExchangeError, match="base URL"):
        point_exchange_at(exchange, "127.0.0.1:9")


def test_load_markets_through_the_loopback(binance: ccxt.Exchange) -> None:
    markets = binance.load_markets()
    assert list(markets) == ["BTC/USDT"]
    assert markets["BTC/USDT"]["spot"] is True and markets["BTC/USDT"]["id"] == "BTCUSDT"


def test_download_pages_and_equals_the_file(
    binance: ccxt.Exchange, btc_1h: pd.DataFrame, binance_loopback: str
) -> None:
    frame = download_ohlcv(
        binance, "BTC/USDT", "1h", since=utc(2024, 1, 1), until=utc(2024, 3, 1), limit=500
    )
    expected = btc_1h.loc["2024-01-01":"2024-02-29 23:00"]
    assert len(expected) == 1440
    pd.testing.assert_frame_equal(frame, expected)


def test_download_makes_several_requests(tiny_server: BinanceLoopbackServer) -> None:
    exchange = make_exchange("binance", api_base_url=tiny_server.base_url)
    frame = download_ohlcv(
        exchange, "BTC/USDT", "1h", since=utc(2024, 1, 1), until=utc(2024, 1, 2), limit=1
    )
    assert len(frame) == 3
    klines = [r for r in tiny_server.requests if r.startswith("/api/v3/klines")]
    assert len(klines) == 4  # three one-candle pages, then an empty page ends the loop
    assert "startTime=1704067200000" in klines[0] and "startTime=1704070800000" in klines[1]


def test_an_error_page_mid_download_is_an_error_when_the_range_must_be_complete(
    tiny_server: BinanceLoopbackServer,
) -> None:
    """A reviewer's finding: an HTML page (status 200) for the second page read as the end
    of the data: ``data download`` wrote a month less and exited 0. With ``complete``
    (what the CLI asks) an empty page where closed candles were due is an error; without
    it (paper trading, which says when steps get no new candle) the download ends."""
    exchange = make_exchange("binance", api_base_url=tiny_server.base_url)
    window = {"since": utc(2024, 1, 1), "until": utc(2024, 1, 1, 3), "limit": 1}
    tiny_server.html_klines = {2}
    with pytest.raises(ExchangeError, match="no candles from 2024-01-01T01:00:00"):
        download_ohlcv(exchange, "BTC/USDT", "1h", complete=True, **window)  # type: ignore[arg-type]
    tiny_server.requests.clear()
    assert len(download_ohlcv(exchange, "BTC/USDT", "1h", **window)) == 1  # type: ignore[arg-type]
    tiny_server.requests.clear()
    tiny_server.html_klines = set()
    whole = download_ohlcv(exchange, "BTC/USDT", "1h", complete=True, **window)  # type: ignore[arg-type]
    assert len(whole) == 3
    # the last candle may come a moment after its close: one candle due is not refused
    tiny_server.requests.clear()
    tiny_server.html_klines = {3}
    late = {**window, "until": utc(2024, 1, 1, 3)}
    assert len(download_ohlcv(exchange, "BTC/USDT", "1h", complete=True, **late)) == 2  # type: ignore[arg-type]


def test_until_mid_candle_excludes_the_unclosed_candle(
    binance: ccxt.Exchange, btc_1h: pd.DataFrame
) -> None:
    frame = download_ohlcv(
        binance, "BTC/USDT", "1h", since=utc(2024, 1, 1), until=utc(2024, 1, 1, 5, 30)
    )
    assert frame.index[-1] == pd.Timestamp("2024-01-01T04:00Z")  # 05:00 closes at 06:00
    assert len(frame) == 5
    on_boundary = download_ohlcv(
        binance, "BTC/USDT", "1h", since=utc(2024, 1, 1), until=utc(2024, 1, 1, 5)
    )
    pd.testing.assert_frame_equal(on_boundary, frame)
    unaligned_since = download_ohlcv(
        binance, "BTC/USDT", "1h", since=utc(2024, 1, 1, 0, 1), until=utc(2024, 1, 1, 3)
    )
    assert [t.hour for t in unaligned_since.index] == [1, 2]
    pd.testing.assert_frame_equal(
        unaligned_since, btc_1h.loc["2024-01-01 01:00":"2024-01-01 02:00"]
    )


def test_download_across_a_real_gap_does_not_fill_it(
    binance: ccxt.Exchange, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="backend.data"):
        frame = download_ohlcv(
            binance, "BTC/USDT", "1h", since=utc(2020, 11, 30, 3), until=utc(2020, 11, 30, 9)
        )
    assert pd.Timestamp("2020-11-30T06:00Z") not in frame.index
    assert len(frame) == 5
    assert any("1 missing 1h candle(s)" in r.getMessage() for r in caplog.records)


def test_empty_range(binance: ccxt.Exchange) -> None:
    frame = download_ohlcv(binance, "BTC/USDT", "1h", since=utc(2030, 1, 1), until=utc(2030, 2, 1))
    assert frame.empty and list(frame.columns) == ["open", "high", "low", "close", "volume"]
    assert str(frame.index.dtype) == "datetime64[ns, UTC]"
    with pytest.raises(ValueError, match="timezone-aware"):
        download_ohlcv(binance, "BTC/USDT", "1h", since=datetime(2024, 1, 1), until=utc(2024, 2, 1))


@pytest.mark.parametrize("status", [500, 429])
def test_http_errors_become_exchange_errors(
    tiny_server: BinanceLoopbackServer, status: int
) -> None:
    exchange = make_exchange("binance", api_base_url=tiny_server.base_url)
    exchange.load_markets()
    tiny_server.fault_status = status
    with pytest.raises(ExchangeError, match="BTC/USDT") as caught:
        download_ohlcv(exchange, "BTC/USDT", "1h", since=utc(2024, 1, 1), until=utc(2024, 1, 2))
    assert isinstance(caught.value.__cause__, ccxt.BaseError)
    assert len(str(caught.value)) < 400


def test_unreachable_and_unknown_symbol(tiny_server: BinanceLoopbackServer) -> None:
    exchange = make_exchange("binance", api_base_url=tiny_server.base_url)
    with pytest.raises(ExchangeError, match="ETH/USDT"):
        download_ohlcv(exchange, "ETH/USDT", "1h", since=utc(2024, 1, 1), until=utc(2024, 1, 2))
    dead = make_exchange("binance", api_base_url="http://127.0.0.1:9", timeout_ms=1_000)
    with pytest.raises(ExchangeError, match="BTC/USDT"):
        download_ohlcv(dead, "BTC/USDT", "1h", since=utc(2024, 1, 1), until=utc(2024, 1, 2))


# --- fills from ccxt unified trades (produced by ccxt's own parsers, no network) -------------

BINANCE_MY_TRADE = {
    "symbol": "BTCUSDT",
    "id": 28457,
    "orderId": 100234,
    "orderListId": -1,
    "price": "42000.10",
    "qty": "0.01500000",
    "quoteQty": "630.0015",
    "commission": "0.63000150",
    "commissionAsset": "USDT",
    "time": 1704067200123,
    "isBuyer": True,
    "isMaker": False,
    "isBestMatch": True,
}
HYPERLIQUID_FILL = {
    "closedPnl": "0.19343",
    "coin": "ETH",
    "crossed": False,
    "dir": "Close Long",
    "fee": "0.050062",
    "feeToken": "USDC",
    "hash": "0x09d77c96791e98b5775a04092584ab010d009445119c71e4005c0d634ea322bc",
    "oid": 3929354691,
    "px": "2381.1",
    "side": "A",
    "startPosition": "0.0841",
    "sz": "0.0841",
    "tid": 128423918764978,
    "time": 1704262888911,
}


def test_fills_from_binance_trades(binance: ccxt.Exchange) -> None:
    binance.load_markets()
    trades: list[dict[str, Any]] = binance.parse_trades(
        [BINANCE_MY_TRADE], binance.market("BTC/USDT")
    )
    (fill,) = fills_from_ccxt_trades(trades, trader_id="acct-1", source="binance")
    assert fill.id == "28457" and fill.order == "100234"
    assert fill.timestamp == 1704067200123
    assert fill.datetime == utc(2024, 1, 1) + timedelta(milliseconds=123)
    assert (fill.symbol, fill.side, fill.market_type) == ("BTC/USDT", "buy", "spot")
    assert (fill.price, fill.amount, fill.cost) == (42000.1, 0.015, 630.0015)
    assert (fill.fee_cost, fill.fee_currency, fill.taker_or_maker) == (0.6300015, "USDT", "taker")
    assert (fill.direction, fill.raw_direction, fill.realized_pnl) == ("buy", "buy", None)
    assert (fill.trader_id, fill.source) == ("acct-1", "binance")


def test_fills_from_hyperliquid_trades() -> None:
    trade = ccxt.hyperliquid().parse_trade(HYPERLIQUID_FILL)
    (fill,) = fills_from_ccxt_trades([trade], trader_id="0xabc", source="hyperliquid")
    assert (fill.symbol, fill.market_type, fill.side) == ("ETH/USDC:USDC", "perp", "sell")
    assert (fill.direction, fill.raw_direction) == ("close_long", "Close Long")
    assert (fill.realized_pnl, fill.start_position) == (0.19343, 0.0841)
    assert fill.tx_hash == HYPERLIQUID_FILL["hash"] and fill.taker_or_maker == "maker"
    assert fill.cost == pytest.approx(2381.1 * 0.0841)


def test_fills_from_trades_without_ids_get_stable_ids() -> None:
    trade = dict(ccxt.hyperliquid().parse_trade(HYPERLIQUID_FILL), id=None)
    first = fills_from_ccxt_trades([trade, trade], trader_id="0xabc", source="hl")
    again = fills_from_ccxt_trades([trade, trade], trader_id="0xabc", source="hl")
    assert [f.id for f in first] == [f.id for f in again]
    assert first[0].id != first[1].id


def test_bad_trades_raise_exchange_error() -> None:
    trade = ccxt.hyperliquid().parse_trade(HYPERLIQUID_FILL)
    with pytest.raises(ExchangeError, match=r"trade 1 .*price"):
        fills_from_ccxt_trades([trade, dict(trade, price=-1.0)], trader_id="x", source="hl")
    with pytest.raises(ExchangeError, match="trade 0"):
        fills_from_ccxt_trades([dict(trade, timestamp=None)], trader_id="x", source="hl")
    with pytest.raises(ExchangeError, match="side"):
        fills_from_ccxt_trades([dict(trade, side="long")], trader_id="x", source="hl")


def test_perp_trades_without_a_position_direction_are_opens_closes_and_flips() -> None:
    """A reviewer's finding: a Binance-futures sell that opened a short (ccxt's unified
    trade has no Hyperliquid ``dir``) read as a spot sale, a closing fill, so the
    persona's long share was 1.0 for a short seller and its win rate 0. Trades given out
    of time order are read in time order."""

    def trade(i: int, side: str, amount: float, pnl: float) -> dict[str, Any]:
        return {
            "id": str(i), "order": f"o{i}", "timestamp": 1735689600000 + i * 3_600_000,
            "symbol": "BTC/USDT:USDT", "side": side, "price": 100.0, "amount": amount,
            "cost": 100.0 * amount, "fee": {"cost": 0.04, "currency": "USDT"},
            "takerOrMaker": "taker", "info": {"realizedPnl": str(pnl)},
        }  # fmt: skip

    trades = [
        trade(2, "buy", 0.4, 4.0),
        trade(1, "sell", 1.0, 0.0),
        trade(3, "buy", 1.6, 6.0),
        trade(4, "sell", 0.2, 1.0),
        trade(5, "sell", 1.0, -2.0),
    ]
    fills = fills_from_ccxt_trades(trades, trader_id="t", source="binanceusdm")
    assert [f.direction for f in fills] == [
        "open_short", "close_short", "flip_short_to_long", "close_long", "flip_long_to_short",
    ]  # fmt: skip
    assert [f.start_position for f in fills] == pytest.approx([0.0, -1.0, -0.6, 1.0, 0.8])
    assert perp_direction(0.0, "sell", 1.0) == "open_short"
    # hedge mode: the position side says it; from a flat book, realised PnL is a close
    hedge = [dict(trade(1, "sell", 1.0, 0.0), info={"positionSide": "LONG"}),
             dict(trade(2, "sell", 1.0, 0.0), info={"positionSide": "SHORT"})]  # fmt: skip
    got = fills_from_ccxt_trades(hedge, trader_id="t", source="binanceusdm")
    assert [f.direction for f in got] == ["close_long", "open_short"]
    (held,) = fills_from_ccxt_trades([trade(1, "sell", 0.5, 3.0)], trader_id="t", source="b")
    assert (held.direction, held.start_position) == ("close_long", 0.5)
    assert perp_direction(2.0, "buy", 1.0) == "open_long"
    spot = fills_from_ccxt_trades(
        [dict(trades[1], symbol="BTC/USDT")], trader_id="t", source="binance"
    )
    assert spot[0].direction == "sell"  # a spot sale stays one


def test_a_trade_time_beyond_2261_is_an_exchange_error() -> None:
    """A second reader's: a year-3001 timestamp passed and failed later as an internal
    OutOfBoundsDatetime; 1e20 was a raw OverflowError."""
    trade = ccxt.hyperliquid().parse_trade(HYPERLIQUID_FILL)
    for bad in (32_535_215_999_000, 10**20):
        with pytest.raises(ExchangeError, match=r"trade 0 .*out of range"):
            fills_from_ccxt_trades([dict(trade, timestamp=bad)], trader_id="x", source="hl")
