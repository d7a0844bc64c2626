"""A minimal bar loop that drives a :class:`~backend.backtest.models.DecisionMaker`.

For the decision-loop tests only; the backtest engine
(``backend.backtest.engine``) is the real one (costs, metrics, reports). Rules: the
decision taken at the close of bar ``t`` is filled at the open of bar ``t + 1`` at that
price, with ``fee_rate`` of the traded notional; exposure changes smaller than
``min_trade_fraction`` of equity are not traded; a reduced or flipped position emits a
:class:`TradeRecord` for the closed quantity (``entry_decision`` = the episode id of the
decision that opened it) before the next bar is decided.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pandas as pd

from backend.backtest.models import (
    BarContext,
    Decision,
    DecisionMaker,
    DecisionRecord,
    PositionState,
    TradeRecord,
)
from backend.data import OHLCVFrame
from backend.data.ohlcv import timeframe_seconds

__all__ = ["LoopResult", "drive"]


@dataclass
class LoopResult:
    """What :func:`drive` produced: every decision record, the trades, the final equity."""

    records: list[DecisionRecord] = field(default_factory=list)
    trades: list[TradeRecord] = field(default_factory=list)
    equity: float = 0.0


@dataclass
class _Book:
    cash: float
    qty: float = 0.0
    entry_price: float | None = None
    entry_time: datetime | None = None
    entry_decision: str | None = None

    def equity(self, price: float) -> float:
        return self.cash + self.qty * price


def _target(decision: Decision, exposure: float) -> float:
    return {"buy": decision.size, "sell": -decision.size, "close": 0.0}.get(
        decision.action, exposure
    )


def _fill(
    book: _Book,
    decision: Decision,
    episode_id: str | None,
    *,
    symbol: str,
    price: float,
    at: datetime,
    fee_rate: float,
    min_trade: float,
) -> TradeRecord | None:
    equity = book.equity(price)
    exposure = book.qty * price / equity
    target = _target(decision, exposure)
    if abs(target - exposure) < max(min_trade, 1e-12):
        return None
    new_qty = target * equity / price
    trade = None
    closing = book.qty != 0 and (new_qty * book.qty <= 0 or abs(new_qty) < abs(book.qty))
    if closing and book.entry_price is not None and book.entry_time is not None:
        closed = book.qty if new_qty * book.qty <= 0 else book.qty - new_qty
        fees = abs(closed) * price * fee_rate
        pnl = closed * (price - book.entry_price) - fees
        trade = TradeRecord(
            symbol=symbol,
            side="long" if closed > 0 else "short",
            entry_time=book.entry_time,
            exit_time=at,
            entry_price=book.entry_price,
            exit_price=price,
            quantity=abs(closed),
            pnl=pnl,
            return_pct=pnl / (abs(closed) * book.entry_price),
            fees=fees,
            entry_decision=book.entry_decision,
            closes_position=new_qty * book.qty <= 0,  # flat or flipped: the position's last row
        )
    book.cash -= (new_qty - book.qty) * price + abs(new_qty - book.qty) * price * fee_rate
    if new_qty == 0:
        book.entry_price = book.entry_time = book.entry_decision = None
    elif book.qty == 0 or new_qty * book.qty < 0:
        book.entry_price, book.entry_time, book.entry_decision = price, at, episode_id
    book.qty = new_qty
    return trade


def drive(
    maker: DecisionMaker,
    ohlcv: OHLCVFrame,
    *,
    trader_id: str,
    start: datetime | None = None,
    end: datetime | None = None,
    initial_equity: float = 10_000.0,
    fee_rate: float = 0.001,
    min_trade_fraction: float = 0.02,
) -> LoopResult:
    """Feed the bars of ``ohlcv`` whose CLOSE time is in ``[start, end]`` to ``maker``
    (module doc for the fill rules). Stops early if equity is exhausted."""
    frame = ohlcv.frame
    step = timedelta(seconds=timeframe_seconds(ohlcv.timeframe))
    opens = list(pd.DatetimeIndex(frame.index).to_pydatetime())
    values = frame[["open", "high", "low", "close", "volume"]].to_numpy(dtype=float)
    book = _Book(cash=initial_equity)
    out = LoopResult()
    pending: tuple[Decision, str | None] | None = None
    index = 0
    for opened, (o, h, lo, c, v) in zip(opens, values.tolist(), strict=True):
        as_of = opened + step
        if (start is not None and as_of < start) or (end is not None and as_of > end):
            continue
        if pending is not None:
            trade = _fill(
                book,
                pending[0],
                pending[1],
                symbol=ohlcv.pair,
                price=o,
                at=opened,
                fee_rate=fee_rate,
                min_trade=min_trade_fraction,
            )
            if trade is not None:
                out.trades.append(trade)
                maker.on_trade_closed(trade)
        equity = book.equity(c)
        if equity <= 0:
            break
        bar = BarContext(
            trader_id=trader_id,
            symbol=ohlcv.pair,
            timeframe=ohlcv.timeframe,
            index=index,
            as_of=as_of,
            open=o,
            high=h,
            low=lo,
            close=c,
            volume=v,
            position=PositionState(
                quantity=book.qty,
                entry_price=book.entry_price,
                equity=equity,
                exposure=book.qty * c / equity,
            ),
        )
        record = maker.on_bar(bar)
        out.records.append(record)
        pending = (record.decision, record.episode_id)
        out.equity = equity
        index += 1
    return out
