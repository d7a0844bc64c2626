"""Data models of the market/trade/news inputs (the only place they are defined).

* :class:`Gap` - a hole in an OHLCV series (candles the exchange never produced).
* :class:`Fill` - one execution, shaped like ccxt's unified trade structure
  (``fetch_my_trades``) plus the trader and position context the memory needs.
* :class:`Headline` - one news headline.
* :class:`OHLCVFrame` - a validated candle frame and what loading it found/repaired.

All pydantic models are frozen and reject unknown fields. Every datetime is timezone-aware
UTC; every integer timestamp is milliseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import AwareDatetime, Field, field_validator, model_validator

from backend.types import FrozenModel

__all__ = [
    "Direction",
    "Fill",
    "Gap",
    "Headline",
    "MarketType",
    "OHLCVFrame",
]

Direction = Literal[
    "open_long",
    "close_long",
    "open_short",
    "close_short",
    "buy",
    "sell",
    "flip_long_to_short",
    "flip_short_to_long",
    "other",
]
"""What a fill did to the position (perps: open/close/flip; spot: buy/sell)."""

MarketType = Literal["perp", "spot"]


def _require_utc(value: datetime) -> datetime:
    offset = value.utcoffset()
    if offset is None or offset != timedelta(0):
        raise ValueError(f"datetime must be UTC, got offset {offset}")
    return value


class Gap(FrozenModel):
    """Candles missing from an OHLCV series; detected and reported, never filled.

    ``start`` is the open time of the last candle before the hole, ``end`` the open time of
    the first candle after it (both aware UTC), ``missing`` the number of candles absent in
    between (``(end - start) / timeframe - 1``, at least 1).
    """

    start: AwareDatetime
    end: AwareDatetime
    missing: int = Field(ge=1)

    _utc = field_validator("start", "end")(_require_utc)

    @model_validator(mode="after")
    def _ordered(self) -> Gap:
        if self.end <= self.start:
            raise ValueError("gap end must be after its start")
        return self


class Fill(FrozenModel):
    """One execution (a partial or complete fill of an order).

    Field names follow ccxt's unified trade structure (``id``, ``order``, ``timestamp``,
    ``datetime``, ``symbol``, ``side``, ``price``, ``amount``, ``cost``, ``takerOrMaker``;
    ccxt's ``fee`` dict is flattened into ``fee_cost``/``fee_currency``). Units: ``price`` in
    quote currency per base unit, ``amount`` in base units (> 0, unsigned), ``cost`` and
    ``realized_pnl`` in quote currency (``cost`` as reported by the source, ~ ``price *
    amount``), ``fee_cost`` in ``fee_currency`` (as ccxt: the quote, or the base when the
    fee is taken from the coin bought, as on a Hyperliquid spot buy), ``timestamp`` in ms
    UTC. ``start_position`` is the signed position
    in base units before the fill (negative = short). ``trader_id`` is the account (for
    Hyperliquid the full ``0x`` address). Symbols are ccxt-style: ``BTC/USDC:USDC`` for a
    USDC-settled perp, ``BTC/USDT`` for spot; Hyperliquid spot pair ids stay ``@107``.
    """

    id: str = Field(min_length=1)
    order: str | None
    timestamp: int = Field(ge=0)
    datetime: AwareDatetime
    symbol: str = Field(min_length=1)
    side: Literal["buy", "sell"]
    price: float = Field(gt=0, allow_inf_nan=False)
    amount: float = Field(gt=0, allow_inf_nan=False)
    cost: float = Field(allow_inf_nan=False)
    fee_cost: float = Field(allow_inf_nan=False)
    fee_currency: str | None
    taker_or_maker: Literal["taker", "maker"] | None
    trader_id: str = Field(min_length=1)
    realized_pnl: float | None = Field(allow_inf_nan=False)
    direction: Direction
    raw_direction: str
    start_position: float | None = Field(allow_inf_nan=False)
    market_type: MarketType
    source: str = Field(min_length=1)
    tx_hash: str | None

    _utc = field_validator("datetime")(_require_utc)

    @model_validator(mode="after")
    def _timestamp_matches_datetime(self) -> Fill:
        if round(self.datetime.timestamp() * 1000) != self.timestamp:
            raise ValueError("timestamp (ms) and datetime disagree")
        return self


class Headline(FrozenModel):
    """A news headline.

    ``id`` is a stable hash of the row's content (same file -> same ids), ``published_at``
    aware UTC, ``source`` the publisher (e.g. ``CoinTelegraph``), ``subject`` the publisher's
    section (e.g. ``bitcoin``), ``url`` ``None`` when the source row had none.
    """

    id: str = Field(min_length=1)
    published_at: AwareDatetime
    source: str
    subject: str
    title: str
    url: str | None

    _utc = field_validator("published_at")(_require_utc)


@dataclass(frozen=True)
class OHLCVFrame:
    """A validated OHLCV series for one pair and timeframe.

    ``frame``: index ``date`` (UTC ``DatetimeIndex`` of candle OPEN times, strictly
    increasing), float64 columns ``open, high, low, close`` (quote currency) and ``volume``
    (base currency). ``gaps``: holes in the series (not filled). ``repairs``: human-readable
    notes of the safe repairs applied while loading (sorting, exact duplicates dropped).
    ``source``: the file it was read from.
    """

    pair: str
    timeframe: str
    frame: pd.DataFrame
    gaps: tuple[Gap, ...]
    repairs: tuple[str, ...]
    source: Path

    @property
    def missing_candles(self) -> int:
        """Total number of candles missing across all gaps."""
        return sum(gap.missing for gap in self.gaps)
