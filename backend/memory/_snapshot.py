"""Build a :class:`MarketSnapshot` from one bar of precomputed features (shared helper)."""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timedelta

from backend.errors import LookAheadError
from backend.memory._features import FeatureRow
from backend.memory._news import FearGreedIndex, HeadlineIndex, state_topics
from backend.memory.models import MarketSnapshot
from backend.types import to_utc

__all__ = ["build_snapshot", "candle_source"]


def candle_source(symbol: str, timeframe: str, open_time: datetime) -> str:
    """Source id of a candle: ``candle:BTC/USDT:1h:2022-05-09T05:00Z`` (its open time)."""
    return f"candle:{symbol}:{timeframe}:{open_time:%Y-%m-%dT%H:%M}Z"


def _finite(value: float, default: float) -> float:
    return value if math.isfinite(value) else default


def build_snapshot(
    *,
    trader_id: str,
    symbol: str,
    timeframe: str,
    row: FeatureRow,
    as_of: datetime | None = None,
    headlines: HeadlineIndex | None = None,
    fear_greed: FearGreedIndex | None = None,
    news_window: timedelta,
    max_headlines: int = 5,
) -> MarketSnapshot:
    """The market context of ``symbol`` at ``as_of`` (default: the bar's close time).

    Uses the features of ``row`` (a bar that closed at or before ``as_of``), headlines
    published in ``(as_of - news_window, as_of]`` (newest first, at most
    ``max_headlines``) and the Fear & Greed value known at ``as_of``. Topics: the news
    topics of those headlines, most frequent first, then the market-state tags
    (:func:`backend.memory._news.state_topics`). Missing history (NaN) becomes neutral
    values: vol 0, drawdown 0, volume shock 1.

    Raises :class:`LookAheadError` if ``as_of`` is before the bar's close.
    """
    moment = row.as_of if as_of is None else to_utc(as_of)
    if moment < row.as_of:
        raise LookAheadError(
            f"{symbol}: bar closing {row.as_of.isoformat()} is not known at {moment.isoformat()}"
        )
    values = row.values
    fg = fear_greed.at(moment) if fear_greed is not None else None
    titles: list[str] = []
    news_topics: Counter[str] = Counter()
    if headlines is not None:
        span = headlines.span(moment - news_window, moment)
        for i in reversed(span):
            news_topics.update(headlines.topics[i])
            if len(titles) < max_headlines:
                titles.append(headlines.headlines[i].title)
    realized_vol = max(0.0, _finite(values["rv_short"], 0.0))
    drawdown = min(0.0, _finite(values["drawdown"], 0.0))
    volume_shock = max(0.0, _finite(values["volume_shock"], 1.0))
    topics = [t for t, _ in news_topics.most_common()]
    topics += state_topics(
        regime=row.regime,
        realized_vol=realized_vol,
        vol_ratio=values["vol_ratio"],
        drawdown=drawdown,
        ret_bar=values["ret_bar"],
        volume_shock=volume_shock,
        fear_greed=fg,
    )
    return MarketSnapshot(
        trader_id=trader_id,
        symbol=symbol,
        timeframe=timeframe,
        as_of=moment,
        close=values["close"],
        returns=dict(row.returns),
        realized_vol=realized_vol,
        regime=row.regime,
        drawdown=drawdown,
        volume_shock=volume_shock,
        fear_greed=fg,
        headlines=titles,
        topics=topics,
    )
