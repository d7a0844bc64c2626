"""Small builders for synthetic fills."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from backend.data import Fill
from backend.data.models import Direction

T0 = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)


def fill(
    n: int,
    *,
    hours: float,
    side: Literal["buy", "sell"],
    amount: float,
    price: float = 100.0,
    direction: Direction,
    start: float | None,
    pnl: float = 0.0,
    symbol: str = "BTC/USDC:USDC",
    trader: str = "trader-1",
    order: str | None = None,
) -> Fill:
    """Fill number ``n`` at ``T0 + hours``; cost = price * amount."""
    at = T0 + timedelta(hours=hours)
    return Fill(
        id=f"f{n:04d}",
        order=order or f"o{n:04d}",
        timestamp=round(at.timestamp() * 1000),
        datetime=at,
        symbol=symbol,
        side=side,
        price=price,
        amount=amount,
        cost=price * amount,
        fee_cost=0.01,
        fee_currency="USDC",
        taker_or_maker="taker",
        trader_id=trader,
        realized_pnl=pnl,
        direction=direction,
        raw_direction=direction,
        start_position=start,
        market_type="spot" if symbol.startswith("@") else "perp",
        source="test",
        tx_hash=None,
    )
