"""Deterministic decision makers and synthetic candles for the backtest tests (tests only)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from backend.backtest.models import BarContext, Decision, DecisionRecord, TradeRecord
from backend.data import OHLCVFrame

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def synthetic_ohlcv(
    prices: Sequence[tuple[float, float]],
    *,
    start: datetime = T0,
    step: timedelta = timedelta(hours=1),
    skip: Sequence[int] = (),
    pair: str = "BTC/USDT",
    timeframe: str = "1h",
) -> OHLCVFrame:
    """Candles from (open, close) pairs, one ``step`` apart; ``skip``: grid slots left out
    (gaps). high = max + 1, low = min - 1, volume = 1."""
    times, rows = [], []
    slot = 0
    for open_, close in prices:
        while slot in skip:
            slot += 1
        times.append(start + slot * step)
        rows.append((open_, max(open_, close) + 1, min(open_, close) - 1, close, 1.0))
        slot += 1
    index = pd.DatetimeIndex(times, name="date").tz_convert("UTC")
    frame = pd.DataFrame(rows, index=index, columns=["open", "high", "low", "close", "volume"])
    return OHLCVFrame(
        pair=pair,
        timeframe=timeframe,
        frame=frame.astype("float64"),
        gaps=(),
        repairs=(),
        source=Path("synthetic.csv"),
    )


def record(ctx: BarContext, decision: Decision, **extra: Any) -> DecisionRecord:
    return DecisionRecord(
        as_of=ctx.as_of,
        symbol=ctx.symbol,
        decision=decision,
        proposed=decision,
        episode_id=f"ep-{ctx.index}",
        **extra,
    )


class ScriptedMaker:
    """Answers the decision scripted for a bar index (hold otherwise); logs every call."""

    def __init__(self, script: dict[int, Decision]) -> None:
        self.script = script
        self.contexts: list[BarContext] = []
        self.closed: list[TradeRecord] = []
        self.calls: list[tuple[str, datetime]] = []

    def on_bar(self, bar: BarContext) -> DecisionRecord:
        self.contexts.append(bar)
        self.calls.append(("bar", bar.as_of))
        decision = self.script.get(bar.index, Decision.hold("scripted hold"))
        return record(bar, decision)

    def on_trade_closed(self, trade: TradeRecord) -> None:
        self.closed.append(trade)
        self.calls.append(("trade", trade.exit_time))


class SmaCrossMaker:
    """Long when SMA(fast) > SMA(slow) of the closes it has been GIVEN, else short or flat.

    It keeps its own history, so it can only know what the engine passed it."""

    def __init__(self, *, fast: int = 12, slow: int = 48, size: float = 1.0) -> None:
        self.fast, self.slow, self.size = fast, slow, size
        self.closes: list[float] = []
        self.contexts: list[BarContext] = []
        self.closed: list[TradeRecord] = []

    def on_bar(self, bar: BarContext) -> DecisionRecord:
        self.contexts.append(bar)
        self.closes.append(bar.close)
        if len(self.closes) < self.slow:
            return record(bar, Decision.hold("warm-up"))
        fast = sum(self.closes[-self.fast :]) / self.fast
        slow = sum(self.closes[-self.slow :]) / self.slow
        if fast > slow:
            decision = Decision(action="buy", size=self.size, rationale=f"{fast:.2f}>{slow:.2f}")
        else:
            decision = Decision(action="sell", size=self.size / 2, rationale="fast<=slow")
        violations = ["max_exposure"] if bar.index % 97 == 0 else []
        return record(
            bar,
            decision,
            violations=violations,
            memory_ids=[f"m{bar.index % 5}"],
            prompt_tokens=100 + bar.index % 7,
            retrieval_ms=1.5,
        )

    def on_trade_closed(self, trade: TradeRecord) -> None:
        self.closed.append(trade)

    def salient_events(self) -> list[tuple[datetime, str]]:
        return [(c.as_of, "big move") for c in self.contexts[:: max(1, len(self.contexts) // 3)]]

    def persona_timeline(self) -> pd.DataFrame:
        times = [c.as_of for c in self.contexts[:: max(1, len(self.contexts) // 4)]]
        return pd.DataFrame({"as_of": times, "risk_appetite": [0.2 * i for i in range(len(times))]})
