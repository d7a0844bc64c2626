"""Big wins and losses of a trader's own closing trades (causal quantile of earlier trades)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from backend.config import DetectorSettings
from backend.data.models import Fill
from backend.memory._events import DetectedEvent, severity

__all__ = ["MIN_TRADE_HISTORY", "count_closing_trades", "detect_trade_events"]

MIN_TRADE_HISTORY = 20
"""Closing trades of a trader before :func:`detect_trade_events` judges one big."""

_MINUTE_MS = 60_000
"""Fills of one order share a minute: the Hyperliquid export stamps fills to the minute,
an exchange's API to the millisecond."""


@dataclass
class _Trade:
    fills: list[Fill]
    pnl: float = 0.0
    amount: float = 0.0
    notional: float = 0.0


def _quantile(ordered: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of a sorted, non-empty list."""
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def detect_trade_events(
    fills: Sequence[Fill],
    *,
    settings: DetectorSettings,
    trader_id: str | None = None,
    min_history: int = MIN_TRADE_HISTORY,
) -> list[DetectedEvent]:
    """The trader's big wins and losses among closing fills, oldest first.

    Fills of one (trader, symbol, minute, side) with non-zero realised PnL are one closing
    trade (one order is often several fills); sums use ``math.fsum``, so results never
    depend on other traders' fills. A trade is big when ``|PnL|`` is at or above the
    ``settings.big_trade_quantile`` quantile (linear interpolation) of the same trader's
    strictly earlier closing trades, once there are at least ``min_history`` of them
    (trades of the same minute only see earlier minutes). ``trader_id`` keeps only that
    trader's fills (else every trader, each with its own quantile). Severity
    ``s(|pnl| / quantile)``, +0.1 for a loss, at most 1. PnL in the fill's quote currency.
    """
    per_trader = _closing_trades(fills, trader_id)
    out: list[DetectedEvent] = []
    for items in per_trader.values():
        items.sort(key=_minute)  # stable: file order within a minute
        seen: list[float] = []
        i = 0
        while i < len(items):
            minute = _minute(items[i])
            j = i
            while j < len(items) and _minute(items[j]) == minute:
                j += 1
            block = items[i:j]
            if len(seen) >= min_history:
                q = _quantile(seen, settings.big_trade_quantile)
                out.extend(
                    _trade_event(t, q, len(seen), settings) for t in block if abs(t.pnl) >= q
                )
            for t in block:
                bisect.insort(seen, abs(t.pnl))
            i = j
    out.sort(key=lambda e: e.at)
    return out


def _closing_trades(fills: Sequence[Fill], trader_id: str | None) -> dict[str, list[_Trade]]:
    """Per trader, the closing trades of :func:`detect_trade_events` (its doc)."""
    trades: dict[tuple[str, str, int, str], _Trade] = {}
    for f in fills:
        if f.realized_pnl in (None, 0.0) or (trader_id is not None and f.trader_id != trader_id):
            continue
        key = (f.trader_id, f.symbol, f.timestamp // _MINUTE_MS, f.side)
        trades.setdefault(key, _Trade([])).fills.append(f)
    per_trader: dict[str, list[_Trade]] = {}
    for (trader, _, _, _), trade in trades.items():
        trade.pnl = math.fsum(f.realized_pnl or 0.0 for f in trade.fills)
        trade.amount = math.fsum(f.amount for f in trade.fills)
        trade.notional = math.fsum(f.price * f.amount for f in trade.fills)
        if trade.pnl != 0.0:
            per_trader.setdefault(trader, []).append(trade)
    return per_trader


def count_closing_trades(fills: Sequence[Fill], *, trader_id: str) -> int:
    """How many closing trades :func:`detect_trade_events` sees of ``trader_id`` (fills
    of one symbol, minute and side with realised PnL): below its ``min_history`` it
    judges none, and a replay says so rather than "0 big wins"."""
    return len(_closing_trades(fills, trader_id).get(trader_id, []))


def _minute(trade: _Trade) -> int:
    return trade.fills[0].timestamp // _MINUTE_MS


def _trade_event(trade: _Trade, q: float, n_prev: int, settings: DetectorSettings) -> DetectedEvent:
    first = trade.fills[0]
    last = max(trade.fills, key=lambda f: f.timestamp)  # the trade is known at its last fill
    pnl, symbol = trade.pnl, first.symbol
    quote = symbol.split("/")[-1].split(":")[0] if "/" in symbol else "quote"
    sev = severity(abs(pnl) / q) + (0.1 if pnl < 0 else 0.0) if q > 0 else 1.0
    word = "Big win" if pnl > 0 else "Big loss"
    return DetectedEvent(
        event_type="big_win" if pnl > 0 else "big_loss",
        symbol=symbol,
        at=last.datetime,
        severity=min(1.0, sev),
        reason=f"{word}: {first.direction.replace('_', ' ')} {trade.amount:g} {symbol} "
        f"(notional {trade.notional:,.2f} {quote}), realised PnL {pnl:+,.2f} {quote}, "
        f"|PnL| >= the {settings.big_trade_quantile:.0%} quantile {q:,.2f} of {n_prev} "
        "earlier closing trades",
        state={
            "pnl": pnl,
            "quantile_pnl": q,
            "notional": trade.notional,
            "amount": trade.amount,
            "earlier_trades": float(n_prev),
        },
        sources=tuple(f.id for f in trade.fills),
        key=first.side,
    )
