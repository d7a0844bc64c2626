"""Persona refresh from ccxt ``fetch_my_trades`` against the loopback Binance: the account's
trades are real fills (the BTC trader's Hyperliquid BTC fills, served as BTCUSDT trades in
Binance's wire format); paging, the cursor, idempotence."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from backend.data import Fill, load_hyperliquid_fills, make_exchange
from backend.service.jobs import persona_refresh
from backend.service.persona_refresh import fetch_ccxt_fills
from tests.data.binance_server import BinanceLoopbackServer, start_binance_server
from tests.service.conftest import ConfigFactory

TRADER = "0x513b8629fe877bb581bf244e326a047b249c4ff1"
N = 320


@pytest.fixture(scope="module")
def btc_fills(shared_data: Path) -> list[Fill]:
    fills = load_hyperliquid_fills(shared_data / "trades" / "hyperliquid_fills.csv")
    return [f for f in fills if f.trader_id == TRADER and f.symbol == "BTC/USDC:USDC"][:N]


@pytest.fixture
def account(
    shared_data: Path, btc_fills: list[Fill]
) -> Iterator[tuple[BinanceLoopbackServer, str]]:
    server, url = start_binance_server(shared_data / "market" / "binance" / "BTC_USDT-1h.csv.gz")
    assert isinstance(server, BinanceLoopbackServer)
    server.my_trades = [
        {
            "symbol": "BTCUSDT",
            "id": i + 1,
            "orderId": int(f.order or i),
            "price": f"{f.price:.8f}",
            "qty": f"{f.amount:.8f}",
            "quoteQty": f"{f.cost:.8f}",
            "commission": f"{f.fee_cost:.8f}",
            "commissionAsset": "USDT",
            "time": f.timestamp,
            "isBuyer": f.side == "buy",
            "isMaker": f.taker_or_maker == "maker",
            "isBestMatch": True,
        }
        for i, f in enumerate(btc_fills)
    ]
    try:
        yield server, url
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_pages_through_every_trade(
    account: tuple[BinanceLoopbackServer, str], btc_fills: list[Fill]
) -> None:
    server, url = account
    exchange = make_exchange("binance", api_base_url=url)
    exchange.apiKey, exchange.secret = "key", "secret"
    until = btc_fills[-1].datetime
    fills = fetch_ccxt_fills(
        exchange, trader_id=TRADER, symbols=["BTC/USDT"], since_ms=None, until=until, limit=100
    )
    assert [f.timestamp for f in fills] == [f.timestamp for f in btc_fills]
    assert len({f.id for f in fills}) == N
    assert {f.symbol for f in fills} == {"BTC/USDT"} and fills[0].source == "binance"
    pages = [r for r in server.requests if r.startswith("/api/v3/myTrades")]
    assert len(pages) >= N // 100
    early = fetch_ccxt_fills(
        exchange,
        trader_id=TRADER,
        symbols=["BTC/USDT"],
        since_ms=btc_fills[100].timestamp,
        until=btc_fills[199].datetime,
    )
    assert early and early[0].timestamp == btc_fills[100].timestamp
    assert early[-1].timestamp == btc_fills[199].timestamp


def test_ccxt_refresh_moves_its_cursor_and_adds_nothing_twice(
    make_config: ConfigFactory,
    account: tuple[BinanceLoopbackServer, str],
    btc_fills: list[Fill],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, url = account
    monkeypatch.setenv("SENTINEL_EXCHANGE__API_KEY", "key")
    monkeypatch.setenv("SENTINEL_EXCHANGE__SECRET", "secret")
    job = {"trader_id": TRADER, "source": "ccxt", "symbols": ["BTC/USDT"]}
    config = str(
        make_config("ccxt", exchange={"api_base_url": url}, scheduler={"persona_refresh": [job]})
    )
    middle = btc_fills[N // 2].datetime
    first = persona_refresh(config, TRADER, middle.isoformat())["result"]
    seen = sum(f.datetime <= middle for f in btc_fills)
    assert first["source"] == "ccxt:binance" and first["fills_read"] == seen
    assert first["version_after"] >= 1 and first["cursor_ms"] == btc_fills[seen - 1].timestamp

    server.requests.clear()
    end = (btc_fills[-1].datetime + timedelta(hours=1)).isoformat()
    second = persona_refresh(config, TRADER, end)["result"]
    calls = [r for r in server.requests if r.startswith("/api/v3/myTrades")]
    assert f"startTime={first['cursor_ms']}" in calls[0]  # from the cursor, not from zero
    assert second["fills_new"] == N - seen
    assert second["version_after"] > second["version_before"]
    again = persona_refresh(config, TRADER, end)["result"]
    assert again["fills_new"] == 0 and again["version_after"] == second["version_after"]
