"""The data models: frozen, strict, UTC-only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pydantic
import pytest

import backend.data as data
from backend.data import Fill, Gap, Headline

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def fill_kwargs(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "f1",
        "order": "o1",
        "timestamp": 1704067200000,
        "datetime": T0,
        "symbol": "BTC/USDC:USDC",
        "side": "buy",
        "price": 42000.0,
        "amount": 0.5,
        "cost": 21000.0,
        "fee_cost": 1.2,
        "fee_currency": "USDC",
        "taker_or_maker": "taker",
        "trader_id": "0xabc",
        "realized_pnl": None,
        "direction": "open_long",
        "raw_direction": "Open Long",
        "start_position": 0.0,
        "market_type": "perp",
        "source": "test",
        "tx_hash": None,
    }
    return base | changes


def test_fill_is_frozen_and_strict() -> None:
    fill = Fill(**fill_kwargs())
    with pytest.raises(pydantic.ValidationError):
        fill.price = 1.0  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="extra"):
        Fill(**fill_kwargs(leverage=3))


@pytest.mark.parametrize(
    "changes",
    [
        {"price": 0.0},
        {"amount": -1.0},
        {"side": "long"},
        {"direction": "open"},
        {"market_type": "future"},
        {"datetime": datetime(2024, 1, 1)},  # naive
        {"datetime": datetime(2024, 1, 1, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))},
        {"timestamp": 1704067200001},  # disagrees with datetime
        {"price": float("nan")},
    ],
)
def test_fill_rejects(changes: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        Fill(**fill_kwargs(**changes))


def test_gap_and_headline() -> None:
    gap = Gap(start=T0, end=T0 + timedelta(hours=3), missing=2)
    assert gap.missing == 2
    with pytest.raises(pydantic.ValidationError):
        Gap(start=T0, end=T0, missing=1)
    with pytest.raises(pydantic.ValidationError):
        Gap(start=T0, end=T0 + timedelta(hours=2), missing=0)
    headline = Headline(id="h", published_at=T0, source="s", subject="b", title="t", url=None)
    with pytest.raises(pydantic.ValidationError):
        Headline(**headline.model_dump() | {"published_at": datetime(2024, 1, 1)})


def test_public_api_is_exported() -> None:
    for name in data.__all__:
        assert hasattr(data, name), name
    assert {"load_ohlcv", "download_ohlcv", "load_hyperliquid_fills", "load_headlines"} <= set(
        data.__all__
    )
